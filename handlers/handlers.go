// Package handlers holds the emulation of each intercepted syscall. The table
// in table.go is the one place that says what happens to a trapped syscall.
package handlers

import (
	"fmt"
	"os"
	"time"

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
func (r *Request) WriteMem(addr uint64, b []byte) error {
	f, err := r.openMem(os.O_WRONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(addr)); err != nil {
		return unix.EFAULT
	}
	return nil
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
