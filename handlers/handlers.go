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

	"github.com/sysvisor/sysvisor/supervisor/cgroup"
	"github.com/sysvisor/sysvisor/supervisor/notify"
)

// Container is what a handler may know about the caller's container. The
// supervisor's registry implements it; handlers never assume one container.
type Container interface {
	ID() string
	// InitStart is when the container's init started, on CLOCK_BOOTTIME.
	InitStart() time.Duration
	Cgroups() cgroup.Paths
	// MaskedPaths and ReadonlyPaths are the runtime's, from the spec: a
	// procfs or sysfs mounted for the container gets them too.
	MaskedPaths() []string
	ReadonlyPaths() []string
	// SysfsReadOnly: the container's /sys is read-only.
	SysfsReadOnly() bool
	// Protected reports whether a mount signature names one of the mounts
	// the container may not unmount, move or make writable.
	Protected(sig string) bool
	// Protect adds signatures to that set, persistently.
	Protect(sigs []string) error
}

// Request is one trapped syscall.
type Request struct {
	Notif     notify.Notif
	Fd        *notify.Fd
	Container Container
	Log       hclog.Logger
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

// WriteMem copies b into the caller's memory at addr. The memory file is
// opened first and the notification re-validated after, so a recycled pid can
// never receive the data.
//
// /proc/<pid>/mem writes ignore page protections (FOLL_FORCE), so the target
// range is first checked against the caller's mappings: where the kernel's
// own copy_to_user would fail (read-only, PROT_NONE), the answer is EFAULT
// and nothing is written.
func (r *Request) WriteMem(addr uint64, b []byte) error {
	// Opened before openMem validates the notification, so that it names
	// the same process as the memory file.
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", r.Notif.Pid))
	if err != nil {
		return fmt.Errorf("open mappings of pid %d: %w", r.Notif.Pid, err)
	}
	defer maps.Close()
	f, err := r.openMem(os.O_WRONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	if !writable(maps, addr, uint64(len(b))) {
		return unix.EFAULT
	}
	if _, err := f.WriteAt(b, int64(addr)); err != nil {
		return unix.EFAULT
	}
	return nil
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

// writable reports whether [addr, addr+n) lies in writable mappings of the
// process whose /proc/<pid>/maps is open as maps: by PROCMAP_QUERY (Linux
// 6.11+, one lookup per mapping) or else by reading the listing.
func writable(maps *os.File, addr, n uint64) bool { return accessible(maps, addr, n, writeAccess) }

// readable is writable's counterpart for reads: /proc/<pid>/mem reads
// ignore PROT_NONE, where the kernel's copy_from_user fails.
func readable(maps *os.File, addr, n uint64) bool { return accessible(maps, addr, n, readAccess) }

func accessible(maps *os.File, addr, n uint64, a access) bool {
	if ok, err := queryAccess(maps, addr, n, a); err == nil {
		return ok
	}
	if _, err := maps.Seek(0, io.SeekStart); err != nil {
		return false
	}
	ok, err := rangeAccess(maps, addr, n, a)
	return err == nil && ok
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
	return queryAccess(maps, addr, n, writeAccess)
}

func queryAccess(maps *os.File, addr, n uint64, a access) (bool, error) {
	end := addr + n
	if end < addr {
		return false, nil
	}
	rc, err := maps.SyscallConn()
	if err != nil {
		return false, err
	}
	for addr < end {
		q := procmapQuery{Size: uint64(unsafe.Sizeof(procmapQuery{})), QueryAddr: addr}
		var e unix.Errno
		if err := rc.Control(func(fd uintptr) {
			_, _, e = unix.Syscall(unix.SYS_IOCTL, fd, ioctlProcmapQuery, uintptr(unsafe.Pointer(&q)))
		}); err != nil {
			return false, err
		}
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
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", r.Notif.Pid))
	if err != nil {
		return "", fmt.Errorf("open mappings of pid %d: %w", r.Notif.Pid, err)
	}
	defer maps.Close()
	f, err := r.openMem(os.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer f.Close()
	const page = 4096
	var out []byte
	for len(out) <= max {
		// Up to the end of the page: the next page may not be mapped,
		// and the kernel stops at the NUL without touching it.
		n := page - addr%page
		if !readable(maps, addr, n) {
			return "", unix.EFAULT
		}
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, int64(addr)); err != nil {
			return "", unix.EFAULT
		}
		if i := bytes.IndexByte(buf, 0); i >= 0 {
			out = append(out, buf[:i]...)
			if len(out) > max {
				break
			}
			if !r.Valid() {
				return "", notify.ErrGone
			}
			return string(out), nil
		}
		out = append(out, buf...)
		addr += n
	}
	return "", unix.ENAMETOOLONG
}

// ReadMem copies len(b) bytes from the caller's memory at addr into b, then
// re-validates: data read from a process that has since left the syscall is
// discarded.
func (r *Request) ReadMem(addr uint64, b []byte) error {
	f, err := r.openMem(os.O_RDONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		return unix.EFAULT
	}
	if !r.Valid() {
		return notify.ErrGone
	}
	return nil
}

func (r *Request) openMem(flag int) (*os.File, error) {
	if addr0 := r.Notif.Pid; addr0 == 0 {
		return nil, fmt.Errorf("caller not visible in supervisor pid namespace")
	}
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", r.Notif.Pid), flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open memory of pid %d: %w", r.Notif.Pid, err)
	}
	if !r.Valid() {
		f.Close()
		return nil, notify.ErrGone
	}
	return f, nil
}
