// Package notify speaks the kernel's seccomp user-notification protocol on a
// listener fd: receive, validate, respond. It owns no policy; the caller
// decides what each notification means.
package notify

import (
	"errors"
	"fmt"
	"os"
	"syscall"
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

// Fd is a seccomp listener fd registered with Go's network poller, so that a
// goroutine waiting for notifications holds no OS thread.
type Fd struct {
	f *os.File
	// rc is f's, made once: os.File.SyscallConn allocates per call and
	// every notification takes three.
	rc syscall.RawConn
	// recv is Receive's callback, made once with its in and out values
	// below: only the one goroutine that receives uses them.
	recv    func(fd uintptr) bool
	recvReq *Notif
	recvErr error
	pfd     [1]unix.PollFd
}

// NewFd takes ownership of a listener fd.
func NewFd(fd int, name string) (*Fd, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set nonblock on %s: %w", name, err)
	}
	n := &Fd{f: os.NewFile(uintptr(fd), name)}
	rc, err := n.f.SyscallConn()
	if err != nil {
		n.f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	n.rc = rc
	n.recv = n.receiveOnce
	return n, nil
}

// SetSyncWakeUp asks the kernel (6.6+) to wake the target on the responder's
// CPU, which cuts round-trip latency when supervisor and target ping-pong.
func (n *Fd) SetSyncWakeUp() error {
	var ierr error
	if err := n.rc.Control(func(fd uintptr) {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
		if e != 0 {
			ierr = e
		}
	}); err != nil {
		return err
	}
	return ierr
}

// ErrClosed is returned by Receive once the filter has no more users (every
// task that carried it has exited) or the Fd was closed.
var ErrClosed = errors.New("seccomp listener closed")

// Receive waits for the next notification. It parks the goroutine in the
// poller; Close from another goroutine wakes it with ErrClosed.
func (n *Fd) Receive(req *Notif) error {
	n.recvReq, n.recvErr = req, nil
	if err := n.rc.Read(n.recv); err != nil {
		return ErrClosed
	}
	return n.recvErr
}

// receiveOnce is Receive's attempt, run by the poller: false waits for the
// next readiness.
func (n *Fd) receiveOnce(fd uintptr) bool {
	// Level check first: the poller is edge-triggered and a RECV on an
	// empty queue would block this OS thread.
	pfd := n.pfd[:]
	pfd[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	if _, e := unix.Poll(pfd, 0); e != nil {
		if e == unix.EINTR {
			return false
		}
		n.recvErr = e
		return true
	}
	if pfd[0].Revents&unix.POLLIN == 0 {
		if pfd[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
			n.recvErr = ErrClosed
			return true
		}
		return false
	}
	*n.recvReq = Notif{}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(n.recvReq)))
	switch e {
	case 0:
	case unix.ENOENT, unix.EINTR:
		// The target was interrupted between poll and receive.
		n.recvErr = ErrGone
	default:
		n.recvErr = e
	}
	return true
}

func (n *Fd) ioctl(op uintptr, arg unsafe.Pointer) error {
	var e unix.Errno
	if err := n.rc.Control(func(fd uintptr) {
		_, _, e = unix.Syscall(unix.SYS_IOCTL, fd, op, uintptr(arg))
	}); err != nil {
		return ErrClosed
	}
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

// Close releases the fd; a goroutine blocked in Receive returns ErrClosed.
func (n *Fd) Close() error { return n.f.Close() }

// Control runs fn with the raw fd, which stays open until fn returns; it
// fails without calling fn once the Fd is closed.
func (n *Fd) Control(fn func(fd int) error) error {
	var ferr error
	if err := n.rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return ErrClosed
	}
	return ferr
}
