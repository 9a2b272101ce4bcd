package mountinfo

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// statmount(2) and listmount(2) (Linux 6.8+) answer for one mount what
// mountinfo answers for all: rendering the whole table costs far more than
// the few mounts a decision needs. IDs here are the 64-bit unique mount ids
// (STATX_MNT_ID_UNIQUE), never reused.

const (
	sysStatmount = 457
	sysListmount = 458

	statmountSBBasic  = 0x1
	statmountMntBasic = 0x2
	statmountMntRoot  = 0x8
	statmountMntPoint = 0x10
	statmountFSType   = 0x20

	mountAttrRdonly = 0x1
)

// mntIDReq mirrors struct mnt_id_req, version 0 (24 bytes).
type mntIDReq struct {
	Size  uint32
	Spare uint32
	MntID uint64
	Param uint64
}

// statmountBuf mirrors struct statmount's fixed part; strings follow it.
type statmountBuf struct {
	Size           uint32
	MntOpts        uint32
	Mask           uint64
	SbDevMajor     uint32
	SbDevMinor     uint32
	SbMagic        uint64
	SbFlags        uint32
	FsType         uint32
	MntID          uint64
	MntParentID    uint64
	MntIDOld       uint32
	MntParentIDOld uint32
	MntAttr        uint64
	MntPropagation uint64
	MntPeerGroup   uint64
	MntMaster      uint64
	PropagateFrom  uint64
	MntRoot        uint32
	MntPoint       uint32
	Spare          [50]uint64
	Str            [4096]byte
}

// Stat describes mount id in the calling thread's mount namespace. Paths
// are relative to the thread's root. ID and Parent are unique ids.
func Stat(id uint64) (Entry, error) {
	req := mntIDReq{Size: 24, MntID: id, Param: statmountSBBasic | statmountMntBasic | statmountMntRoot | statmountMntPoint | statmountFSType}
	var buf statmountBuf
	_, _, e := unix.Syscall6(sysStatmount, uintptr(unsafe.Pointer(&req)), uintptr(unsafe.Pointer(&buf)), unsafe.Sizeof(buf), 0, 0, 0)
	if e != 0 {
		return Entry{}, e
	}
	ent, err := decodeStatmount(unsafe.Slice((*byte)(unsafe.Pointer(&buf)), unsafe.Sizeof(buf)))
	if err != nil {
		return Entry{}, fmt.Errorf("statmount %d: %w", id, err)
	}
	return ent, nil
}

// strOff is where struct statmount's string area begins.
const strOff = unsafe.Offsetof(statmountBuf{}.Str)

// decodeStatmount reads the struct statmount the kernel wrote into b (native
// byte order). A mount decision rests on it, so a buffer that contradicts
// itself (a size beyond b, an offset beyond the strings, a string without
// its NUL, a field asked for and not answered) is an error, not a guess.
func decodeStatmount(b []byte) (Entry, error) {
	if len(b) < int(strOff) {
		return Entry{}, fmt.Errorf("%d bytes, shorter than the fixed part (%d)", len(b), strOff)
	}
	u32 := func(off uintptr) uint32 { return binary.NativeEndian.Uint32(b[off:]) }
	u64 := func(off uintptr) uint64 { return binary.NativeEndian.Uint64(b[off:]) }
	var sm statmountBuf
	size := u32(unsafe.Offsetof(sm.Size))
	if size < uint32(strOff) || uint64(size) > uint64(len(b)) {
		return Entry{}, fmt.Errorf("size %d outside [%d, %d]", size, strOff, len(b))
	}
	mask := u64(unsafe.Offsetof(sm.Mask))
	if need := uint64(statmountSBBasic | statmountMntBasic | statmountFSType); mask&need != need {
		return Entry{}, fmt.Errorf("mask %#x lacks %#x", mask, need&^mask)
	}
	// String fields are offsets into the string area after the struct,
	// each ending with a NUL within size.
	strs := b[strOff:size]
	str := func(field string, off uintptr) (string, error) {
		o := u32(off)
		if uint64(o) >= uint64(len(strs)) {
			return "", fmt.Errorf("%s offset %d beyond the %d string bytes", field, o, len(strs))
		}
		j := bytes.IndexByte(strs[o:], 0)
		if j < 0 {
			return "", fmt.Errorf("%s at %d has no NUL", field, o)
		}
		return string(strs[o : int(o)+j]), nil
	}
	ent := Entry{
		ID:     int(u64(unsafe.Offsetof(sm.MntID))),
		Parent: int(u64(unsafe.Offsetof(sm.MntParentID))),
		Major:  u32(unsafe.Offsetof(sm.SbDevMajor)),
		Minor:  u32(unsafe.Offsetof(sm.SbDevMinor)),
		Opts:   "rw",
	}
	var err error
	if ent.FSType, err = str("fs_type", unsafe.Offsetof(sm.FsType)); err != nil {
		return Entry{}, err
	}
	if mask&statmountMntRoot != 0 {
		if ent.Root, err = str("mnt_root", unsafe.Offsetof(sm.MntRoot)); err != nil {
			return Entry{}, err
		}
	}
	if mask&statmountMntPoint != 0 {
		if ent.Mountpoint, err = str("mnt_point", unsafe.Offsetof(sm.MntPoint)); err != nil {
			return Entry{}, err
		}
	}
	attr := u64(unsafe.Offsetof(sm.MntAttr))
	if attr&mountAttrRdonly != 0 {
		ent.Opts = "ro"
	}
	for _, a := range []struct {
		bit  uint64
		name string
	}{{unix.MOUNT_ATTR_NOSUID, "nosuid"}, {unix.MOUNT_ATTR_NODEV, "nodev"}, {unix.MOUNT_ATTR_NOEXEC, "noexec"}} {
		if attr&a.bit != 0 {
			ent.Opts += "," + a.name
		}
	}
	return ent, nil
}

// Children lists the unique ids of the mounts below id: listmount lists
// the whole subtree, not only the mounts directly on top.
func Children(id uint64) ([]uint64, error) {
	var out []uint64
	list := make([]uint64, 64)
	last := uint64(0)
	for {
		req := mntIDReq{Size: 24, MntID: id, Param: last}
		n, _, e := unix.Syscall6(sysListmount, uintptr(unsafe.Pointer(&req)), uintptr(unsafe.Pointer(&list[0])), uintptr(len(list)), 0, 0, 0)
		if e != 0 {
			return nil, e
		}
		out = append(out, list[:n]...)
		if int(n) < len(list) {
			return out, nil
		}
		last = list[n-1]
	}
}
