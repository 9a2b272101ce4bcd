package holder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/notify"
)

// The seccomp journal is a memfd that sysvisord maps and the holder keeps:
// one slot per listener, into which sysvisord receives each notification
// (struct seccomp_notif, 80 bytes, id first) and whose id it zeroes once the
// answer is sent. A notification whose id is still in its slot after a crash
// was received and maybe not answered: the next sysvisord re-dispatches it
// (the kernel's NOTIF_ID_VALID says whether it still waits), and a holder
// that gives up waiting fails it. The slot's notification is exactly what
// the kernel wrote, so re-dispatching it is the same emulation as before.
//
// Layout: a 64-byte header (JournalMagic, then the format version as a
// native uint32), then JournalSlots slots of JournalSlotSize bytes. The
// pages of unused slots are never touched and cost nothing.
const (
	JournalMagic    = "sysvisor-seccomp-journal"
	JournalVersion  = 1
	JournalSlots    = 1 << 16
	JournalSlotSize = 80 // struct seccomp_notif, notify.Notif (its init checks the size)
	journalHeader   = 64
	JournalSize     = journalHeader + JournalSlots*JournalSlotSize
)

func journalSlotOffset(slot int) int64 {
	return journalHeader + int64(slot)*JournalSlotSize
}

// Journal is a mapped seccomp journal.
type Journal struct {
	fd  int
	mem []byte
}

// CreateJournal makes a new, empty journal.
func CreateJournal() (*Journal, error) {
	fd, err := unix.MemfdCreate("sysvisor-seccomp-journal", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd for the seccomp journal: %w", err)
	}
	if err := unix.Ftruncate(fd, JournalSize); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("size the seccomp journal: %w", err)
	}
	j, err := mapJournal(fd)
	if err != nil {
		return nil, err
	}
	copy(j.mem, JournalMagic)
	binary.NativeEndian.PutUint32(j.mem[32:], JournalVersion)
	return j, nil
}

// OpenJournal maps a journal handed back by the holder (taking fd). It
// refuses one of another format, naming both versions.
func OpenJournal(fd int) (*Journal, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size != JournalSize {
		unix.Close(fd)
		return nil, fmt.Errorf("seccomp journal: size %d, want %d", st.Size, JournalSize)
	}
	j, err := mapJournal(fd)
	if err != nil {
		return nil, err
	}
	if string(j.mem[:len(JournalMagic)]) != JournalMagic {
		j.Close()
		return nil, errors.New("seccomp journal: bad magic")
	}
	if v := binary.NativeEndian.Uint32(j.mem[32:]); v != JournalVersion {
		j.Close()
		return nil, fmt.Errorf("seccomp journal: format version %d, this build reads version %d", v, JournalVersion)
	}
	return j, nil
}

func mapJournal(fd int) (*Journal, error) {
	mem, err := unix.Mmap(fd, 0, JournalSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("map the seccomp journal: %w", err)
	}
	return &Journal{fd: fd, mem: mem}, nil
}

// Fd is the journal's memfd (the journal keeps it; dup to deposit).
func (j *Journal) Fd() int { return j.fd }

// Slot is the memory of one slot: receive a notification into it.
func (j *Journal) Slot(slot int) unsafe.Pointer {
	return unsafe.Pointer(&j.mem[journalSlotOffset(slot)])
}

// Close unmaps the journal and closes its fd.
func (j *Journal) Close() {
	unix.Munmap(j.mem)
	unix.Close(j.fd)
}

func nativeUint64(b []byte) uint64 { return binary.NativeEndian.Uint64(b) }

// failOne receives one notification on listener fd and fails it with
// errno. The holder reads nothing of it but the id.
func failOne(fd int, errno unix.Errno) {
	var n notify.Notif
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&n))); e != 0 {
		return
	}
	sendErrno(fd, n.ID, errno)
}

func sendErrno(fd int, id uint64, errno unix.Errno) {
	r := notify.Resp{ID: id, Error: -int32(errno)}
	unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_SEND, uintptr(unsafe.Pointer(&r)))
}

// The views journal is written by supervisor/viewfs (its journal.go has
// the layout): a header, then slots each holding a FUSE request as read
// from /dev/fuse. The holder reads only what it needs to fail requests that
// would otherwise wait for good: the header's geometry and each slot's
// fuse_in_header (unique at offset 8, the requesting pid at 32).
const (
	ViewsJournalMagic   = 0x6c6e6a5676737973 // "sysvVjnl"
	ViewsJournalVersion = 1
	ViewsJournalHeader  = 4096
)

// FailViewsInFlight answers with errno every request in the views journal
// jfd that may be unanswered and whose requester pick accepts, on the
// FUSE connection ffd, and marks it answered. It returns how many it
// answered. A request answered already gets ENOENT from the kernel, which
// is harmless.
func FailViewsInFlight(ffd, jfd int, errno unix.Errno, pick func(pid uint32) bool) int {
	var hdr [24]byte
	if n, err := unix.Pread(jfd, hdr[:], 0); err != nil || n != len(hdr) {
		return 0
	}
	ne := binary.NativeEndian
	count, size := ne.Uint32(hdr[12:]), ne.Uint32(hdr[16:])
	if ne.Uint64(hdr[0:]) != ViewsJournalMagic || ne.Uint32(hdr[8:]) != ViewsJournalVersion || count > 1024 || size < 64 || size > 1<<20 {
		return 0
	}
	answered := 0
	for i := uint32(0); i < count; i++ {
		off := int64(ViewsJournalHeader) + int64(i)*int64(size)
		var in [40]byte
		if n, err := unix.Pread(jfd, in[:], off); err != nil || n != len(in) {
			return answered
		}
		unique, pid := ne.Uint64(in[8:]), ne.Uint32(in[32:])
		if unique == 0 || !pick(pid) {
			continue
		}
		var out [16]byte // struct fuse_out_header: len, error, unique
		ne.PutUint32(out[0:], 16)
		ne.PutUint32(out[4:], uint32(-int32(errno)))
		ne.PutUint64(out[8:], unique)
		unix.Write(ffd, out[:])
		unix.Pwrite(jfd, make([]byte, 8), off+8)
		answered++
	}
	return answered
}
