package mountinfo

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
)

// Table answers, for the calling thread's mount namespace and root, what
// statmount and listmount answer: one mount by id, the mounts on top of one.
// Where the kernel has them (6.8+) it asks them each time. Before that (or
// with the fallback forced) it reads the thread's own mountinfo once and
// answers from that copy until Invalidate: ids are then the old, reusable
// mount ids (STATX_MNT_ID), which stay right for as long as the copy does.
//
// A Table belongs to one locked OS thread: thread-self is the thread that
// asks, and mount points are named from its root, as statmount and
// mountinfo both name them.
type Table struct {
	proc    int // the host's /proc
	native  bool
	byID    map[uint64]*Entry
	kids    map[uint64][]uint64
	callers bool // the thread's root is the caller's (UseCallersView)
}

// NewTable returns a Table that reads mountinfo, when it must, through
// proc, an fd of the host's /proc (the thread's root may show another).
func NewTable(proc int) *Table { return newTable(proc, kernel.Statmount.Has()) }

func newTable(proc int, native bool) *Table { return &Table{proc: proc, native: native} }

// Invalidate drops the copy: the thread changed the mounts, or its root.
func (t *Table) Invalidate() { t.byID, t.kids = nil, nil }

// UseCallersView says the thread has moved its root to the caller's: a
// mount the caller named lies where the namespace's root does not reach
// (between a runtime's pivot_root(".", ".") and its umount of the old root,
// the new root lies under the old one). Mounts are named from there on;
// the parent of the caller's root mount is then beyond the root, and
// unknown.
func (t *Table) UseCallersView() {
	t.Invalidate()
	t.callers = true
}

// CallersView reports whether UseCallersView was called.
func (t *Table) CallersView() bool { return t.callers }

// Stat describes mount id. Where the thread's root does not reach it,
// statmount names no Mountpoint ("") and mountinfo leaves it out (ENOENT).
func (t *Table) Stat(id uint64) (Entry, error) {
	if t.native {
		return Stat(id)
	}
	if err := t.load(); err != nil {
		return Entry{}, err
	}
	e, ok := t.byID[id]
	if !ok {
		// Gone, or not reached from the thread's root: mountinfo leaves
		// those out.
		return Entry{}, unix.ENOENT
	}
	return *e, nil
}

// Children returns the mounts directly on top of id (listmount lists the
// whole subtree below a mount; its other mounts sit on these).
func (t *Table) Children(id uint64) ([]Entry, error) {
	if t.native {
		ids, err := Children(id)
		if err != nil {
			return nil, err
		}
		var out []Entry
		for _, k := range ids {
			e, err := Stat(k)
			if err == unix.ENOENT {
				continue // gone meanwhile: on top of nothing
			}
			if err != nil {
				return nil, err
			}
			if uint64(e.Parent) == id {
				out = append(out, e)
			}
		}
		return out, nil
	}
	if err := t.load(); err != nil {
		return nil, err
	}
	if _, ok := t.byID[id]; !ok {
		return nil, unix.ENOENT
	}
	out := make([]Entry, 0, len(t.kids[id]))
	for _, k := range t.kids[id] {
		out = append(out, *t.byID[k])
	}
	return out, nil
}

func (t *Table) load() error {
	if t.byID != nil {
		return nil
	}
	fd, err := unix.Openat(t.proc, "thread-self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open thread-self/mountinfo: %w", err)
	}
	f := os.NewFile(uintptr(fd), "mountinfo")
	defer f.Close()
	ms, err := Parse(f)
	if err != nil {
		return err
	}
	t.byID = make(map[uint64]*Entry, len(ms))
	t.kids = map[uint64][]uint64{}
	for i := range ms {
		// Entries the same as statmount's: per-mount flags only.
		ms[i].Opts = perMountOpts(ms[i].Opts)
		t.byID[uint64(ms[i].ID)] = &ms[i]
	}
	for i := range ms {
		if ms[i].Parent != ms[i].ID {
			p := uint64(ms[i].Parent)
			t.kids[p] = append(t.kids[p], uint64(ms[i].ID))
		}
	}
	return nil
}

// perMountOpts keeps of mountinfo's per-mount options those Stat reports.
func perMountOpts(opts string) string {
	e := Entry{Opts: opts}
	out := "rw"
	if e.ReadOnly() {
		out = "ro"
	}
	for _, o := range []string{"nosuid", "nodev", "noexec"} {
		if e.HasOpt(o) {
			out += "," + o
		}
	}
	return out
}

// IDOf returns the id of the mount fd lies on, as a Table numbers it, and
// whether fd is that mount's root.
func IDOf(fd int) (uint64, bool, error) {
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, IDMask(), &st); err != nil {
		return 0, false, err
	}
	if st.Mask&uint32(IDMask()) == 0 {
		return 0, false, unix.ENOSYS
	}
	return st.Mnt_id, st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}

// IDMask is the statx mask whose Mnt_id a Table's ids match.
func IDMask() int {
	if kernel.Statmount.Has() {
		return unix.STATX_MNT_ID_UNIQUE
	}
	return unix.STATX_MNT_ID
}
