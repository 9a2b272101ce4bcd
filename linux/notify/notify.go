// Package notify speaks the kernel's seccomp user-notification protocol on a
// listener fd: receive, validate, respond. It owns no policy; the caller
// decides what each notification means.
package notify

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Data mirrors struct seccomp_data.
type Data struct {
	Nr                 int32
	Arch               uint32
	InstructionPointer uint64
	Args               [6]uint64
}

// Notif mirrors struct seccomp_notif (80 bytes on every arch).
type Notif struct {
	ID    uint64
	Pid   uint32
	Flags uint32
	Data  Data
}

// FlagActing is set by sysvisord in its own copy of a notification (the
// journal slot it was received into; the kernel always returns Flags 0)
// once a handler starts acting on it: a successor that finds the
// notification still pending after a crash knows the work may be done
// already.
const FlagActing uint32 = 1 << 31

// Resp mirrors struct seccomp_notif_resp (24 bytes).
type Resp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

const flagContinue = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE

func init() {
	// The ABI sizes are fixed by the kernel; a mismatch would corrupt memory
	// in the ioctl, so refuse to run rather than guess.
	if unsafe.Sizeof(Notif{}) != 80 || unsafe.Sizeof(Resp{}) != 24 {
		panic("notify: seccomp struct layout mismatch")
	}
}

// ErrGone means the notification is no longer valid: the target died or was
// interrupted by a signal. It is not an error of the supervisor.
var ErrGone = errors.New("seccomp notification no longer valid")

// Fd is a seccomp listener fd. It is not registered with Go's network
// poller: a Pool waits for many of them in one epoll set, on its own
// threads. Close may race with any other method; the number stays open
// until the last method using it returns.
type Fd struct {
	fd   int
	name string
	// state counts the uses of fd in units of 2 (NewFd's lasts until
	// Close) and has bit 0 set once Close was called; fd is closed when
	// the count drops to zero.
	state atomic.Int64
	// onClose is called once by Close, before the number can be closed
	// (set by the Pool that serves fd, before fd is shared).
	onClose atomic.Pointer[func()]
}

// NewFd takes ownership of a listener fd.
func NewFd(fd int, name string) (*Fd, error) {
	// Non-blocking as every sysvisord has left it (the holder's copies
	// share the flag). NOTIF_RECV does not look at it: see Recv.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set nonblock on %s: %w", name, err)
	}
	n := &Fd{fd: fd, name: name}
	n.state.Store(2) // NewFd's use, until Close
	return n, nil
}

// Name is what NewFd was given.
func (n *Fd) Name() string { return n.name }

// acquire marks fd in use; false once Close was called.
func (n *Fd) acquire() bool {
	for {
		v := n.state.Load()
		if v&1 != 0 {
			return false
		}
		if n.state.CompareAndSwap(v, v+2) {
			return true
		}
	}
}

func (n *Fd) release() {
	if n.state.Add(-2) == 1 {
		unix.Close(n.fd)
	}
}

// SetSyncWakeUp asks the kernel (6.6+) to wake the target on the responder's
// CPU, which cuts round-trip latency when supervisor and target ping-pong.
func (n *Fd) SetSyncWakeUp() error {
	if !n.acquire() {
		return ErrClosed
	}
	defer n.release()
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(n.fd), unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
	if e != 0 {
		return e
	}
	return nil
}

// ErrClosed is returned once the filter has no more users (every task
// that carried it has exited) or the Fd was closed.
var ErrClosed = errors.New("seccomp listener closed")

// Recv receives a notification into req. It blocks while none is
// pending, whatever O_NONBLOCK says: call it only when fd polled readable
// (a notification withdrawn meanwhile leaves the kernel's count up, so
// the call then fails with ErrGone instead of blocking).
//
// req is cleared only once fd is known open: it may be a journal slot
// holding a notification whose answer failed because fd was closed, which
// the next sysvisord must find.
func (n *Fd) Recv(req *Notif) error {
	if !n.acquire() {
		return ErrClosed
	}
	*req = Notif{}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(n.fd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(req)))
	n.release()
	switch e {
	case 0:
		return nil
	case unix.ENOENT, unix.EINTR:
		// The target was interrupted between poll and receive.
		return ErrGone
	}
	return e
}

func (n *Fd) ioctl(op uintptr, arg unsafe.Pointer) error {
	if !n.acquire() {
		return ErrClosed
	}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(n.fd), op, uintptr(arg))
	n.release()
	if e != 0 {
		return e
	}
	return nil
}

// Valid reports whether notification id is still pending. Call it after
// opening anything that names the target by pid (pid reuse) and after every
// read of the target's memory.
func (n *Fd) Valid(id uint64) bool {
	return n.ioctl(unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)) == nil
}

// Continue lets the kernel execute the syscall as if it had not been
// trapped. Only safe where the kernel's own checks are sufficient.
func (n *Fd) Continue(id uint64) error {
	return n.send(&Resp{ID: id, Flags: flagContinue})
}

// Errno fails the syscall with errno (positive).
func (n *Fd) Errno(id uint64, errno unix.Errno) error {
	return n.send(&Resp{ID: id, Error: -int32(errno)})
}

// Return completes the syscall with value val, as if it had run.
func (n *Fd) Return(id uint64, val int64) error {
	return n.send(&Resp{ID: id, Val: val})
}

func (n *Fd) send(r *Resp) error {
	err := n.ioctl(unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(r))
	if errors.Is(err, unix.ENOENT) {
		return ErrGone
	}
	return err
}

// Close releases the fd: methods called from now on fail with ErrClosed,
// and the number is closed when those running return. Only the first
// call does anything.
func (n *Fd) Close() error {
	for {
		v := n.state.Load()
		if v&1 != 0 {
			return nil
		}
		if n.state.CompareAndSwap(v, v|1) {
			break
		}
	}
	if f := n.onClose.Load(); f != nil {
		(*f)()
	}
	n.release() // NewFd's
	return nil
}

// Control runs fn with the raw fd, which stays open until fn returns; it
// fails without calling fn once the Fd is closed.
func (n *Fd) Control(fn func(fd int) error) error {
	if !n.acquire() {
		return ErrClosed
	}
	defer n.release()
	return fn(n.fd)
}
