package mountinfo

import (
	"bytes"
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
	// String fields are offsets into the string area after the struct.
	str := func(off uint32) string {
		if int(off) >= len(buf.Str) {
			return ""
		}
		s := buf.Str[off:]
		if j := bytes.IndexByte(s, 0); j >= 0 {
			s = s[:j]
		}
		return string(s)
	}
	ent := Entry{
		ID: int(buf.MntID), Parent: int(buf.MntParentID),
		Major: buf.SbDevMajor, Minor: buf.SbDevMinor,
		FSType: str(buf.FsType),
		Opts:   "rw",
	}
	if buf.Mask&statmountMntRoot != 0 {
		ent.Root = str(buf.MntRoot)
	}
	if buf.Mask&statmountMntPoint != 0 {
		ent.Mountpoint = str(buf.MntPoint)
	}
	if buf.MntAttr&mountAttrRdonly != 0 {
		ent.Opts = "ro"
	}
	for _, a := range []struct {
		bit  uint64
		name string
	}{{unix.MOUNT_ATTR_NOSUID, "nosuid"}, {unix.MOUNT_ATTR_NODEV, "nodev"}, {unix.MOUNT_ATTR_NOEXEC, "noexec"}} {
		if buf.MntAttr&a.bit != 0 {
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
