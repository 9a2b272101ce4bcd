// Package handlers holds the emulation of each intercepted syscall. The table
// in table.go is the one place that says what happens to a trapped syscall.
package handlers

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
	"github.com/sysvisor/sysvisor/linux/cgroup"
	"github.com/sysvisor/sysvisor/linux/notify"
	"github.com/sysvisor/sysvisor/linux/rawfile"
)

// Container is what a handler may know about the caller's container. The
// supervisor's registry implements it; handlers never assume one container.
type Container interface {
	ID() string
	// InitStart is when the container's init started, on CLOCK_BOOTTIME.
	InitStart() time.Duration
	Cgroups() cgroup.Paths
	// CgroupFiles reads the container's cgroup files, kept open.
	CgroupFiles() cgroup.Source
	// MaskedPaths and ReadonlyPaths are the runtime's, from the spec: a
	// procfs or sysfs mounted for the container gets them too.
	MaskedPaths() []string
	ReadonlyPaths() []string
	// SysfsReadOnly: the container's /sys is read-only.
	SysfsReadOnly() bool
	// LoadAvg is the container's 1, 5 and 15 minute load averages, fixed
	// point with 11 fractional bits as the kernel keeps them (sampled by
	// sysvisord; /proc/loadavg shows the same).
	LoadAvg() [3]uint64
	// Views is the directory of the container's /proc and /sys view files
	// (proc/meminfo, ...), bound over a procfs or sysfs mounted for it as
	// the runtime bound them over its own; "" when it has none.
	Views() string
	// Protected reports whether a mount signature names one of the mounts
	// the container may not unmount, move or make writable.
	Protected(sig string) bool
	// ProtectedSigs is that set, to read and not to change.
	ProtectedSigs() []string
	// Protect adds signatures to that set, persistently.
	Protect(sigs []string) error
}

// Request is one trapped syscall.
type Request struct {
	Notif notify.Notif
	// Journal is where the notification was received (the listener's
	// journal slot, kept by the holder across a crash); nil for none.
	Journal   *notify.Notif
	Fd        *notify.Fd
	Container Container
	Log       hclog.Logger
	// Entry is the table entry being served; Options are its emulation
	// options from the container's policy (see Option).
	Entry   *Entry
	Options map[string]bool

	// The caller's memory and mappings, opened at first use and kept for
	// the rest of the request (a mount reads up to four strings); its
	// mount namespace, which the permission check and the namespace
	// worker both need.
	memR, memW, maps, mnt int
	status                []byte
}

// Acting records in the journal that this request is about to change
// something (a mount, a file): if sysvisord dies before answering, its
// successor re-dispatches the notification knowing so (Replayed).
func (r *Request) Acting() {
	if r.Journal != nil {
		r.Journal.Flags |= notify.FlagActing
	}
}

// Replayed reports that a previous sysvisord received this notification
// and began acting on it before it died: a handler whose action is not
// idempotent finds it may be done already.
func (r *Request) Replayed() bool { return r.Notif.Flags&notify.FlagActing != 0 }

// procPath is /proc/<caller's pid>/leaf, built without fmt: the notify
// path opens two of them per call.
func (r *Request) procPath(leaf string) string {
	var b [32]byte
	p := append(b[:0], "/proc/"...)
	p = strconv.AppendUint(p, uint64(r.Notif.Pid), 10)
	return string(append(append(p, '/'), leaf...))
}

// StatusField returns a field of the caller's /proc/<pid>/status, read once
// per request (a mount consults capabilities and pid numbers).
func (r *Request) StatusField(name string) (string, error) {
	if r.status == nil {
		b, err := rawfile.ReadFile(r.procPath("status"))
		if err != nil {
			return "", err
		}
		r.status = b
	}
	return statusField(r.status, name, r.Pid())
}

func statusField(status []byte, name string, pid int) (string, error) {
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, name+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s in /proc/%d/status", name, pid)
}

// Option returns an emulation option from the container's policy, or the
// catalog's default for it.
func (r *Request) Option(name string) bool {
	if v, ok := r.Options[name]; ok {
		return v
	}
	if r.Entry != nil {
		if o, ok := r.Entry.Option(name); ok {
			return o.Default
		}
	}
	return false
}

// Close releases what the request opened. The dispatcher calls it.
func (r *Request) Close() {
	for _, fd := range []int{r.memR, r.memW, r.maps, r.mnt} {
		if fd > 0 {
			unix.Close(fd)
		}
	}
	r.memR, r.memW, r.maps, r.mnt = 0, 0, 0, 0
}

// MntNS returns the caller's mount namespace, opened once per request. The
// fd names the caller's namespace only if the notification is still valid
// after it was opened: users re-check (inCallerFS does before acting).
func (r *Request) MntNS() (int, error) {
	if r.mnt > 0 {
		return r.mnt, nil
	}
	fd, err := unix.Openat(hostProc(), fmt.Sprintf("%d/ns/mnt", r.Notif.Pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /proc/%d/ns/mnt: %w", r.Notif.Pid, err)
	}
	r.mnt = fd
	return fd, nil
}

// Pid is the caller's pid in the supervisor's pid namespace.
func (r *Request) Pid() int { return int(r.Notif.Pid) }

// Arg returns syscall argument i.
func (r *Request) Arg(i int) uint64 { return r.Notif.Data.Args[i] }

// Valid re-checks that the caller is still blocked in this syscall.
func (r *Request) Valid() bool { return r.Fd.Valid(r.Notif.ID) }

// Kind is how a syscall is answered.
type Kind int

const (
	// Continue lets the kernel run the syscall with its own checks.
	Continue Kind = iota
	// Errno fails the syscall.
	Errno
	// Value completes the syscall with a result computed here.
	Value
)

// Response is a handler's decision.
type Response struct {
	Kind  Kind
	Errno unix.Errno
	Val   int64
}

// Fail answers errno.
func Fail(e unix.Errno) Response { return Response{Kind: Errno, Errno: e} }

// Return answers v.
func Return(v int64) Response { return Response{Kind: Value, Val: v} }

// Allow answers CONTINUE.
func Allow() Response { return Response{Kind: Continue} }

func (r Response) String() string {
	switch r.Kind {
	case Continue:
		return "continue"
	case Errno:
		return "errno " + r.Errno.Error()
	default:
		return fmt.Sprintf("return %d", r.Val)
	}
}

// Handler emulates one syscall.
type Handler interface {
	Handle(req *Request) Response
}

// Inline marks a Handler that never blocks: a few system calls on files
// and the caller's memory, no namespace switch, no helper process, no
// lock held by slow work. sysvisord runs it on the notify thread that
// received the notification (no hand-off to a goroutine); any other
// handler runs on a goroutine of its own, holding up only its listener.
type Inline interface {
	Handler
	Inline()
}

// WriteMem copies b into the caller's memory at addr. The memory file is
// opened first and the notification re-validated after, so a recycled pid can
// never receive the data.
//
// /proc/<pid>/mem writes ignore page protections (FOLL_FORCE), so the target
// range is first checked against the caller's mappings: where the kernel's
// own copy_to_user would fail (read-only, PROT_NONE), the answer is EFAULT
// and nothing is written.
func (r *Request) WriteMem(addr uint64, b []byte) error {
	maps, err := r.mapsFd()
	if err != nil {
		return err
	}
	mem, err := r.memFd(unix.O_WRONLY)
	if err != nil {
		return err
	}
	if !accessible(maps, addr, uint64(len(b)), writeAccess) {
		return unix.EFAULT
	}
	if n, err := unix.Pwrite(mem, b, int64(addr)); err != nil || n != len(b) {
		return unix.EFAULT
	}
	return nil
}

// mapsFd opens the caller's /proc/<pid>/maps. It is opened before any
// memory file is validated, so that it names the same process.
func (r *Request) mapsFd() (int, error) {
	if r.maps > 0 {
		return r.maps, nil
	}
	fd, err := rawfile.Open(r.procPath("maps"), unix.O_RDONLY)
	if err != nil {
		return 0, fmt.Errorf("open mappings of pid %d: %w", r.Notif.Pid, err)
	}
	r.maps = fd
	return fd, nil
}

// memFd opens the caller's /proc/<pid>/mem for reading or writing, then
// re-validates the notification: a pid recycled since the trap would be
// another process, and its memory must never be touched.
func (r *Request) memFd(flag int) (int, error) {
	cached := &r.memR
	if flag == unix.O_WRONLY {
		cached = &r.memW
	}
	if *cached > 0 {
		return *cached, nil
	}
	if r.Notif.Pid == 0 {
		return 0, fmt.Errorf("caller not visible in supervisor pid namespace")
	}
	fd, err := rawfile.Open(r.procPath("mem"), flag)
	if err != nil {
		return 0, fmt.Errorf("open memory of pid %d: %w", r.Notif.Pid, err)
	}
	if !r.Valid() {
		unix.Close(fd)
		return 0, notify.ErrGone
	}
	*cached = fd
	return fd, nil
}

// access is a permission a range of the caller's memory must have.
type access struct {
	vmaFlag uint64 // PROCMAP_QUERY_VMA_*
	perm    byte   // the letter in /proc/<pid>/maps
	index   int    // its position in the perms field
}

var (
	readAccess  = access{vmaFlag: 0x1, perm: 'r', index: 0}
	writeAccess = access{vmaFlag: 0x2, perm: 'w', index: 1}
)

// accessible reports whether [addr, addr+n) lies in mappings of the
// process whose /proc/<pid>/maps is open as maps that allow a: by
// PROCMAP_QUERY (kernel.ProcmapQuery, one lookup per mapping) or else by
// reading the listing.
func accessible(maps int, addr, n uint64, a access) bool {
	return accessibleBy(maps, addr, n, a, kernel.ProcmapQuery.Has())
}

func accessibleBy(maps int, addr, n uint64, a access, query bool) bool {
	if query {
		if ok, err := queryAccess(maps, addr, n, a); err == nil {
			return ok
		}
	}
	b, err := readAt0(maps)
	if err != nil {
		return false
	}
	ok, err := rangeAccess(bytes.NewReader(b), addr, n, a)
	return err == nil && ok
}

// readAt0 reads a whole proc file from offset 0 without moving its offset.
func readAt0(fd int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 64*1024)
	for off := int64(0); ; {
		n, err := unix.Pread(fd, buf, off)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
		off += int64(n)
	}
}

// procmapQuery mirrors struct procmap_query of linux/fs.h.
type procmapQuery struct {
	Size, QueryFlags, QueryAddr             uint64
	VmaStart, VmaEnd, VmaFlags, VmaPageSize uint64
	VmaOffset, Inode                        uint64
	DevMajor, DevMinor                      uint32
	VmaNameSize, BuildIDSize                uint32
	VmaNameAddr, BuildIDAddr                uint64
}

const ioctlProcmapQuery = 0xc0686611 // _IOWR('f', 17, struct procmap_query)

// queryWritable answers writable with PROCMAP_QUERY; an error means the
// kernel cannot answer this way.
func queryWritable(maps *os.File, addr, n uint64) (bool, error) {
	return queryAccess(int(maps.Fd()), addr, n, writeAccess)
}

func queryAccess(maps int, addr, n uint64, a access) (bool, error) {
	end := addr + n
	if end < addr {
		return false, nil
	}
	for addr < end {
		q := procmapQuery{Size: uint64(unsafe.Sizeof(procmapQuery{})), QueryAddr: addr}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(maps), ioctlProcmapQuery, uintptr(unsafe.Pointer(&q)))
		switch {
		case e == unix.ENOENT: // no mapping covers addr
			return false, nil
		case e != 0:
			return false, e
		case q.VmaFlags&a.vmaFlag == 0 || q.VmaEnd <= addr:
			return false, nil
		}
		addr = q.VmaEnd
	}
	return true, nil
}

// writableRange reports whether [addr, addr+n) is covered, without gaps, by
// mappings with write permission in a /proc/<pid>/maps listing.
func writableRange(maps io.Reader, addr, n uint64) (bool, error) {
	return rangeAccess(maps, addr, n, writeAccess)
}

func rangeAccess(maps io.Reader, addr, n uint64, a access) (bool, error) {
	end := addr + n
	if end < addr {
		return false, nil
	}
	sc := bufio.NewScanner(maps)
	for addr < end && sc.Scan() {
		// "start-end perms offset dev inode path", addresses in hex.
		rng, rest, _ := strings.Cut(sc.Text(), " ")
		lo, hi, _ := strings.Cut(rng, "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		stop, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || len(rest) < 4 {
			return false, fmt.Errorf("malformed maps line %q", sc.Text())
		}
		if stop <= addr {
			continue
		}
		if start > addr || rest[a.index] != a.perm {
			return false, nil
		}
		addr = stop
	}
	return addr >= end, sc.Err()
}

// ReadString copies a NUL-terminated string of at most max bytes (without
// the NUL) from the caller's memory, once: handlers act on this copy only,
// so a thread rewriting the buffer after the trap changes nothing. Too long
// gives ENAMETOOLONG, unreadable memory EFAULT, as the kernel would.
func (r *Request) ReadString(addr uint64, max int) (string, error) {
	if addr == 0 {
		return "", unix.EFAULT
	}
	maps, err := r.mapsFd()
	if err != nil {
		return "", err
	}
	mem, err := r.memFd(unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	const page = 4096
	var out []byte
	buf := make([]byte, page)
	for len(out) <= max {
		// Up to the end of the page: the next page may not be mapped,
		// and the kernel stops at the NUL without touching it.
		n := page - addr%page
		if !accessible(maps, addr, n, readAccess) {
			return "", unix.EFAULT
		}
		if got, err := unix.Pread(mem, buf[:n], int64(addr)); err != nil || uint64(got) != n {
			return "", unix.EFAULT
		}
		if i := bytes.IndexByte(buf[:n], 0); i >= 0 {
			out = append(out, buf[:i]...)
			if len(out) > max {
				break
			}
			if !r.Valid() {
				return "", notify.ErrGone
			}
			return string(out), nil
		}
		out = append(out, buf[:n]...)
		addr += n
	}
	return "", unix.ENAMETOOLONG
}

// ReadMem copies len(b) bytes from the caller's memory at addr into b, then
// re-validates: data read from a process that has since left the syscall is
// discarded.
func (r *Request) ReadMem(addr uint64, b []byte) error {
	maps, err := r.mapsFd()
	if err != nil {
		return err
	}
	mem, err := r.memFd(unix.O_RDONLY)
	if err != nil {
		return err
	}
	if !accessible(maps, addr, uint64(len(b)), readAccess) {
		return unix.EFAULT
	}
	if n, err := unix.Pread(mem, b, int64(addr)); err != nil || n != len(b) {
		return unix.EFAULT
	}
	if !r.Valid() {
		return notify.ErrGone
	}
	return nil
}
