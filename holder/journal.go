package holder

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
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
	JournalSlotSize = 80
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

// seccompNotif and seccompResp are the kernel's structs (see
// supervisor/notify, whose ABI checks cover them).
type seccompNotif struct {
	id    uint64
	pid   uint32
	flags uint32
	data  [64]byte
}

type seccompResp struct {
	id    uint64
	val   int64
	error int32
	flags uint32
}

// failOne receives one notification on listener fd and fails it with
// errno. The holder reads nothing of it but the id.
func failOne(fd int, errno unix.Errno) {
	var n seccompNotif
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&n))); e != 0 {
		return
	}
	sendErrno(fd, n.id, errno)
}

func sendErrno(fd int, id uint64, errno unix.Errno) {
	r := seccompResp{id: id, error: -int32(errno)}
	unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_SEND, uintptr(unsafe.Pointer(&r)))
}
