package viewfs

import (
	"encoding/binary"
	"time"
)

// The kernel's FUSE ABI, as much of it as the views need
// (include/uapi/linux/fuse.h). Structures are host-endian and packed as the
// header defines them; the sizes below are the header's.

// ourMinor is the protocol minor this server speaks (7.38, the header it
// was written against): the connection uses min(kernel's, ours).
const (
	ourMajor = 7
	ourMinor = 38
	// minMinor is the oldest minor whose structure sizes this server
	// knows (entry_out 128 and attr_out 104 since 7.9, init_out's
	// 24-byte form since 7.13); every supported kernel offers more.
	minMinor = 13
)

const rootID = 1 // FUSE_ROOT_ID

// Opcodes.
const (
	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opSetattr     = 4
	opReadlink    = 5
	opSymlink     = 6
	opMknod       = 8
	opMkdir       = 9
	opUnlink      = 10
	opRmdir       = 11
	opRename      = 12
	opLink        = 13
	opOpen        = 14
	opRead        = 15
	opWrite       = 16
	opStatfs      = 17
	opRelease     = 18
	opFlush       = 25
	opInit        = 26
	opOpendir     = 27
	opReaddir     = 28
	opReleasedir  = 29
	opCreate      = 35
	opInterrupt   = 36
	opDestroy     = 38
	opBatchForget = 42
	opReaddirplus = 44
	opRename2     = 45
	opTmpfile     = 51
	// maxOp bounds the per-opcode counters.
	maxOp = 64
)

// Notification codes (written with unique 0, the code in error).
const (
	notifyInvalEntry = 3
	notifyStore      = 4
)

// Flags.
const (
	initAtomicOTrunc  = 1 << 3
	initParallelDirop = 1 << 18

	fopenDirectIO = 1 << 0

	getattrFH = 1 << 0

	readLockOwner = 1 << 1

	fattrMode = 1 << 0
	fattrUID  = 1 << 1
	fattrGID  = 1 << 2
)

// Sizes.
const (
	inHeaderSize   = 40
	outHeaderSize  = 16
	attrSize       = 88
	entryOutSize   = 40 + attrSize // 128
	attrOutSize    = 16 + attrSize // 104
	openOutSize    = 16
	readInSize     = 40
	writeInSize    = 40
	writeOutSize   = 8
	kstatfsSize    = 80
	initInSize     = 16 // major, minor, max_readahead, flags: all we read
	initOutSize    = 64
	initOut22Size  = 24
	getattrInSize  = 16
	setattrInSize  = 88
	openInSize     = 8
	releaseInSize  = 24
	direntBaseSize = 24
)

var ne = binary.NativeEndian

// inHeader is struct fuse_in_header.
type inHeader struct {
	Len    uint32
	Opcode uint32
	Unique uint64
	NodeID uint64
	UID    uint32
	GID    uint32
	PID    uint32
}

func parseInHeader(b []byte) (inHeader, bool) {
	if len(b) < inHeaderSize {
		return inHeader{}, false
	}
	return inHeader{
		Len:    ne.Uint32(b[0:]),
		Opcode: ne.Uint32(b[4:]),
		Unique: ne.Uint64(b[8:]),
		NodeID: ne.Uint64(b[16:]),
		UID:    ne.Uint32(b[24:]),
		GID:    ne.Uint32(b[28:]),
		PID:    ne.Uint32(b[32:]),
	}, true
}

// attr is struct fuse_attr, filled by the node that answers.
type attr struct {
	Ino, Size   uint64
	Mode, Nlink uint32
	UID, GID    uint32
	Time        time.Time
	Valid       time.Duration // attr_valid of the reply
	EntryValid  time.Duration // entry_valid, for LOOKUP
}

func putAttr(b []byte, a *attr) {
	ne.PutUint64(b[0:], a.Ino)
	ne.PutUint64(b[8:], a.Size)
	ne.PutUint64(b[16:], (a.Size+511)/512) // blocks
	sec, nsec := uint64(a.Time.Unix()), uint32(a.Time.Nanosecond())
	for _, off := range []int{24, 32, 40} { // atime, mtime, ctime
		ne.PutUint64(b[off:], sec)
	}
	for _, off := range []int{48, 52, 56} {
		ne.PutUint32(b[off:], nsec)
	}
	ne.PutUint32(b[60:], a.Mode)
	ne.PutUint32(b[64:], a.Nlink)
	ne.PutUint32(b[68:], a.UID)
	ne.PutUint32(b[72:], a.GID)
	// rdev, blksize (0: the superblock's), flags stay 0.
}

func splitDuration(d time.Duration) (uint64, uint32) {
	return uint64(d / time.Second), uint32(d % time.Second)
}

// entryOut is struct fuse_entry_out. A zero nodeid with a timeout is a
// negative entry the kernel caches.
func entryOut(nodeid uint64, a *attr) []byte {
	b := make([]byte, entryOutSize)
	ne.PutUint64(b[0:], nodeid)
	// generation 0: node ids are never reused on a mount (see nodes.go).
	es, ens := splitDuration(a.EntryValid)
	as, ans := splitDuration(a.Valid)
	ne.PutUint64(b[16:], es)
	ne.PutUint64(b[24:], as)
	ne.PutUint32(b[32:], ens)
	ne.PutUint32(b[36:], ans)
	if nodeid != 0 {
		putAttr(b[40:], a)
	}
	return b
}

// attrOut is struct fuse_attr_out.
func attrOut(a *attr) []byte {
	b := make([]byte, attrOutSize)
	s, ns := splitDuration(a.Valid)
	ne.PutUint64(b[0:], s)
	ne.PutUint32(b[8:], ns)
	putAttr(b[16:], a)
	return b
}

// openOut is struct fuse_open_out.
func openOut(fh uint64, flags uint32) []byte {
	b := make([]byte, openOutSize)
	ne.PutUint64(b[0:], fh)
	ne.PutUint32(b[8:], flags)
	return b
}

// readIn is struct fuse_read_in (also the layout of fuse_write_in's first
// fields, and what READDIR sends).
type readIn struct {
	Fh        uint64
	Offset    uint64
	Size      uint32
	ReadFlags uint32
}

func parseReadIn(b []byte) (readIn, bool) {
	if len(b) < readInSize {
		return readIn{}, false
	}
	return readIn{Fh: ne.Uint64(b[0:]), Offset: ne.Uint64(b[8:]), Size: ne.Uint32(b[16:]), ReadFlags: ne.Uint32(b[20:])}, true
}

// direntType values (DT_DIR, DT_REG).
const (
	dtDir = 4
	dtReg = 8
)

// appendDirent appends one struct fuse_dirent (8-byte aligned) to b if it
// fits in max bytes in all.
func appendDirent(b []byte, max int, ino, off uint64, typ uint32, name string) ([]byte, bool) {
	size := (direntBaseSize + len(name) + 7) &^ 7
	if len(b)+size > max {
		return b, false
	}
	e := make([]byte, size)
	ne.PutUint64(e[0:], ino)
	ne.PutUint64(e[8:], off)
	ne.PutUint32(e[16:], uint32(len(name)))
	ne.PutUint32(e[20:], typ)
	copy(e[24:], name)
	return append(b, e...), true
}

// outHeader is struct fuse_out_header; error is a negative errno.
func outHeader(total int, errno int32, unique uint64) []byte {
	b := make([]byte, outHeaderSize)
	ne.PutUint32(b[0:], uint32(total))
	ne.PutUint32(b[4:], uint32(errno))
	ne.PutUint64(b[8:], unique)
	return b
}

// cstring returns the NUL-terminated name at the start of b.
func cstring(b []byte) (string, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), true
		}
	}
	return "", false
}
