package viewfs

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/holder"
)

// The journal is a memfd that outlives sysvisord (the holder keeps it with
// the /dev/fuse fd), so that requests a worker had read but not answered
// when the process died are answered by its successor: the kernel keeps
// such a request waiting for a reply for as long as the connection lives,
// and nothing else would ever answer it. Its format is private to this
// package and versioned; a successor refuses a version it does not know.
//
// Layout, version 1 (host-endian):
//
//	offset 0     u64  magic "sysvVjnl" (journalMagic)
//	offset 8     u32  version (1)
//	offset 12    u32  slot count (journalSlots)
//	offset 16    u32  slot size (slotSize)
//	offset 20    u32  0
//	offset 24    u64  the next file handle to give out (atomic add): fh
//	                  numbers then never repeat across processes on a
//	                  mount, so a file opened before a restart cannot be
//	                  confused with one opened after it
//	offset 32..  0, up to journalHeader
//	journalHeader + i*slotSize: slot i, a request exactly as read(2) from
//	             /dev/fuse put it there (fuse_in_header first). Its unique
//	             field (slot offset 8) is zeroed before each read and
//	             after the reply is written: non-zero means "read, maybe
//	             not answered". A request answered but not yet zeroed when
//	             the process died is answered again; the kernel refuses
//	             that second reply (ENOENT), which is harmless.
//
// The geometry is part of the version: change a constant, bump it.
const (
	// The holder reads these to fail requests in flight when no
	// sysvisord comes back (holder.FailViewsInFlight).
	journalMagic   = holder.ViewsJournalMagic
	journalVersion = holder.ViewsJournalVersion
	journalHeader  = holder.ViewsJournalHeader
	// journalSlots is twice the workers: a successor's workers find
	// free slots even while its predecessor's in-flight requests still
	// occupy theirs (they are answered after the mount is verified).
	journalSlots = 2 * workers
	// slotSize holds the largest request: the kernel refuses reads into
	// less than max(8192, in_header + write_in + max_write).
	slotSize    = 16 << 10
	journalSize = journalHeader + journalSlots*slotSize
)

type journal struct {
	fd  int
	mem []byte
}

// newJournal creates a fresh journal memfd.
func newJournal() (*journal, error) {
	fd, err := unix.MemfdCreate("sysvisor-views-journal", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	j, err := mapJournal(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	j.format(1)
	return j, nil
}

// mapJournal maps fd, grown to journalSize if smaller.
func mapJournal(fd int) (*journal, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("journal fstat: %w", err)
	}
	if st.Size < journalSize {
		if err := unix.Ftruncate(fd, journalSize); err != nil {
			return nil, fmt.Errorf("journal ftruncate: %w", err)
		}
	}
	mem, err := unix.Mmap(fd, 0, journalSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("journal mmap: %w", err)
	}
	return &journal{fd: fd, mem: mem}, nil
}

// format writes a fresh header (every slot free) whose fh counter starts
// at nextFh.
func (j *journal) format(nextFh uint64) {
	clear(j.mem)
	ne.PutUint64(j.mem[0:], journalMagic)
	ne.PutUint32(j.mem[8:], journalVersion)
	ne.PutUint32(j.mem[12:], journalSlots)
	ne.PutUint32(j.mem[16:], slotSize)
	ne.PutUint64(j.mem[24:], nextFh)
}

var errJournalVersion = errors.New("unknown journal format")

// check validates the header of an adopted journal.
func (j *journal) check() error {
	if m := ne.Uint64(j.mem[0:]); m != journalMagic {
		return fmt.Errorf("%w: magic %#x", errJournalVersion, m)
	}
	if v := ne.Uint32(j.mem[8:]); v != journalVersion {
		return fmt.Errorf("%w: version %d, this sysvisord knows %d", errJournalVersion, v, journalVersion)
	}
	if n, sz := ne.Uint32(j.mem[12:]), ne.Uint32(j.mem[16:]); n != journalSlots || sz != slotSize {
		return fmt.Errorf("%w: %d slots of %d bytes in version %d", errJournalVersion, n, sz, journalVersion)
	}
	return nil
}

// nextFh returns a file handle never given out before on this mount.
func (j *journal) nextFh() uint64 {
	return atomic.AddUint64((*uint64)(unsafe.Pointer(&j.mem[24])), 1)
}

func (j *journal) slot(i int) []byte {
	off := journalHeader + i*slotSize
	return j.mem[off : off+slotSize : off+slotSize]
}

// done marks slot i free: nothing in it awaits a reply.
func (j *journal) done(i int) { ne.PutUint64(j.slot(i)[8:], 0) }

// inFlight lists the slots holding a request that may be unanswered.
func (j *journal) inFlight() []int {
	var out []int
	for i := range journalSlots {
		if ne.Uint64(j.slot(i)[8:]) != 0 {
			out = append(out, i)
		}
	}
	return out
}

// close unmaps the journal and closes its fd.
func (j *journal) close() {
	if j.mem != nil {
		unix.Munmap(j.mem)
		j.mem = nil
	}
	if j.fd >= 0 {
		unix.Close(j.fd)
		j.fd = -1
	}
}

// fhAfterUnknown is where fh numbers start when an adopted journal could
// not be read: far from the small numbers its writer gave out.
func fhAfterUnknown() uint64 { return uint64(time.Now().UnixNano()) }
