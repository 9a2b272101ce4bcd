package handlers

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Helper processes born in a container's pid namespace. A thread cannot
// change its own active pid namespace (setns(CLONE_NEWPID) only sets the
// one its children are born in), and some things are only reachable from
// there: the namespace's kernel.pid_max, and a procfs for the namespace on
// kernels whose procfs has no pidns= option (before 6.18). The worker
// thread joins the namespace for its children (joinPID) and forks a helper
// that makes a few raw system calls and sends one fd back.
//
// A helper is a raw fork: nothing but raw system calls runs in it, so the
// Go runtime's state in the copy never matters (as in runtime.UsernsFd). It
// runs with host root's credentials, which no process of the container can
// ptrace, keeps no fd but the ones it needs, and is reaped here, killed
// first if it overstays helperTimeout.

// helperTimeout bounds a helper: a few system calls.
const helperTimeout = 2 * time.Second

// fdMsg is a one-byte message with room for one fd (SCM_RIGHTS), prepared
// before the fork so that the child only stores the fd into its own copy
// and sends it.
type fdMsg struct {
	cmsg, data []byte
	iov        unix.Iovec
	msg        unix.Msghdr
	slot       *int32
}

func newFdMsg() *fdMsg {
	m := &fdMsg{cmsg: make([]byte, unix.CmsgSpace(4)), data: []byte{0}}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&m.cmsg[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SCM_RIGHTS
	h.SetLen(unix.CmsgLen(4))
	m.slot = (*int32)(unsafe.Pointer(&m.cmsg[unix.CmsgLen(0)]))
	m.iov = unix.Iovec{Base: &m.data[0]}
	m.iov.SetLen(1)
	m.msg = unix.Msghdr{Iov: &m.iov, Control: &m.cmsg[0]}
	m.msg.SetIovlen(1)
	m.msg.SetControllen(len(m.cmsg))
	return m
}

// fromHelper runs a helper: fork starts it with the child's end of a
// socketpair and the message to send there, and returns its pid. It
// returns the one fd the child sent, or the errno it exited with.
func fromHelper(fork func(sock int, m *fdMsg) (int, unix.Errno)) (int, error) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socketpair: %w", err)
	}
	defer unix.Close(sp[0])
	m := newFdMsg()
	pid, errno := fork(sp[1], m)
	keepAlive(m)
	unix.Close(sp[1]) // EOF at the parent's end once the child is gone
	if errno != 0 {
		return -1, fmt.Errorf("fork: %w", errno)
	}
	reaped := false
	defer func() {
		if !reaped {
			unix.Kill(pid, unix.SIGKILL)
			wait(pid)
		}
	}()
	tv := unix.NsecToTimeval(helperTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(sp[0], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return -1, err
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	var fds []int
	for {
		_, oobn, _, _, err := unix.Recvmsg(sp[0], buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return -1, err
		}
		if oobn > 0 {
			cms, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err == nil && len(cms) == 1 {
				fds, err = unix.ParseUnixRights(&cms[0])
			}
			if err != nil {
				return -1, fmt.Errorf("answer: %w", err)
			}
		}
		break
	}
	status := wait(pid)
	reaped = true
	if len(fds) == 1 {
		return fds[0], nil
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	if status.Exited() && status.ExitStatus() != 0 {
		return -1, unix.Errno(status.ExitStatus())
	}
	return -1, fmt.Errorf("%v", status)
}

func wait(pid int) unix.WaitStatus {
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
			return ws
		}
	}
}

//go:noinline
func keepAlive(...any) {}

// maxFSOptions bounds the options a helper passes to fsconfig.
const maxFSOptions = 8

// fsArgs is what the filesystem helper child uses, prepared before the
// fork: the type and options as C strings, the mount attributes.
type fsArgs struct {
	fstype     uintptr
	n          int
	keys, vals [maxFSOptions]uintptr
	attrs      uintptr
	sock       uintptr
	m          *fdMsg
}

// newFSInPidNS creates a filesystem (a procfs) from a helper process born
// in the pid namespace the thread has joined for its children (joinPID),
// and returns the detached mount's fd. procfs takes the pid namespace of
// the task that creates its context (fsopen), which is why a helper is
// needed where the pidns= option is not (kernel.ProcfsPidNS). opts are
// key=value options, attrs the MOUNT_ATTR_* of the mount.
func newFSInPidNS(fstype string, opts []string, attrs int) (int, error) {
	if len(opts) > maxFSOptions {
		return -1, unix.EINVAL
	}
	var keep []*byte
	cstr := func(s string) (uintptr, error) {
		p, err := unix.BytePtrFromString(s)
		if err != nil {
			return 0, err
		}
		keep = append(keep, p)
		return uintptr(unsafe.Pointer(p)), nil
	}
	a := fsArgs{n: len(opts), attrs: uintptr(attrs)}
	var err error
	if a.fstype, err = cstr(fstype); err != nil {
		return -1, err
	}
	for i, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		if a.keys[i], err = cstr(k); err != nil {
			return -1, err
		}
		if a.vals[i], err = cstr(v); err != nil {
			return -1, err
		}
	}
	fd, err := fromHelper(func(sock int, m *fdMsg) (int, unix.Errno) {
		a.sock, a.m = uintptr(sock), m
		return forkFS(&a)
	})
	keepAlive(keep, &a)
	if err != nil {
		return -1, fmt.Errorf("%s helper: %w", fstype, err)
	}
	return fd, nil
}

// keepOnly closes every fd of a helper child but lo and hi (lo <= hi; equal
// for one). Raw system calls only, callable from the child.
//
//go:norace
//go:nosplit
func keepOnly(lo, hi uintptr) {
	if lo > 0 {
		unix.RawSyscall(unix.SYS_CLOSE_RANGE, 0, lo-1, 0)
	}
	if hi > lo+1 {
		unix.RawSyscall(unix.SYS_CLOSE_RANGE, lo+1, hi-1, 0)
	}
	unix.RawSyscall(unix.SYS_CLOSE_RANGE, hi+1, 0xffffffff, 0)
}

// fsconfig(2) commands (linux/mount.h).
const (
	fsconfigSetString = 1
	fsconfigCmdCreate = 6
)

// forkFS forks the filesystem helper: fsopen, fsconfig for each option and
// create, fsmount, and the mount fd sent back. Raw system calls only
// (nosplit: no stack growth, no preemption check can call into the
// runtime); the child exits with the errno of the call that failed.
//
//go:norace
//go:nosplit
func forkFS(a *fsArgs) (int, unix.Errno) {
	pid, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	if pid != 0 {
		return int(pid), 0
	}
	keepOnly(a.sock, a.sock) // only the socket stays open in the child
	fsfd, _, e := unix.RawSyscall(unix.SYS_FSOPEN, a.fstype, unix.FSOPEN_CLOEXEC, 0)
	if e != 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, uintptr(e), 0, 0)
	}
	for i := 0; i < a.n && i < len(a.keys); i++ {
		if _, _, e = unix.RawSyscall6(unix.SYS_FSCONFIG, fsfd, fsconfigSetString, a.keys[i], a.vals[i], 0, 0); e != 0 {
			// An option the kernel refuses: EINVAL, as a mount(2) with it.
			unix.RawSyscall(unix.SYS_EXIT_GROUP, uintptr(unix.EINVAL), 0, 0)
		}
	}
	if _, _, e = unix.RawSyscall6(unix.SYS_FSCONFIG, fsfd, fsconfigCmdCreate, 0, 0, 0, 0); e != 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, uintptr(e), 0, 0)
	}
	mfd, _, e := unix.RawSyscall(unix.SYS_FSMOUNT, fsfd, unix.FSMOUNT_CLOEXEC, a.attrs)
	if e != 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, uintptr(e), 0, 0)
	}
	*a.m.slot = int32(mfd)
	_, _, e = unix.RawSyscall(unix.SYS_SENDMSG, a.sock, uintptr(unsafe.Pointer(&a.m.msg)), unix.MSG_NOSIGNAL)
	unix.RawSyscall(unix.SYS_EXIT_GROUP, uintptr(e), 0, 0)
	panic("unreachable")
}
