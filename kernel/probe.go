package kernel

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// missing wraps the kernel's answer to a probe that says the feature is not
// there.
func missing(what string, err error) error {
	return fmt.Errorf("%s: %w (%w)", what, err, ErrMissing)
}

func probeProcfsPidNS() error {
	fsfd, err := unix.Fsopen("proc", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen proc: %w", err)
	}
	defer unix.Close(fsfd)
	ns, err := unix.Open("/proc/self/ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(ns)
	// Nothing is created: the context is dropped with the fd.
	if err := unix.FsconfigSetFd(fsfd, "pidns", ns); err != nil {
		return missing("fsconfig pidns", err)
	}
	return nil
}

// newTmpfs returns a detached, empty tmpfs.
func newTmpfs() (int, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen tmpfs: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigSetString(fsfd, "size", "4k"); err != nil {
		return -1, err
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, err
	}
	return unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
}

// probeDetachedMounts attaches a tmpfs inside another detached tmpfs and
// clones the result, as the mount emulation builds a masked procfs. Both
// trees dissolve when their fds close.
func probeDetachedMounts() error {
	outer, err := newTmpfs()
	if err != nil {
		return err
	}
	defer unix.Close(outer)
	inner, err := newTmpfs()
	if err != nil {
		return err
	}
	defer unix.Close(inner)
	if err := unix.Mkdirat(outer, "d", 0o700); err != nil {
		return fmt.Errorf("mkdir in a detached tmpfs: %w", err)
	}
	d, err := unix.Openat(outer, "d", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(d)
	if err := unix.MoveMount(inner, "", d, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
		return missing("move_mount onto a detached tree", err)
	}
	c, err := unix.OpenTree(d, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return missing("open_tree clone inside a detached tree", err)
	}
	unix.Close(c)
	return nil
}

// probeProcmapQuery asks PROCMAP_QUERY about a mapping of this process (the
// page of a global): older kernels answer ENOTTY.
func probeProcmapQuery() error {
	maps, err := unix.Open("/proc/self/maps", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /proc/self/maps: %w", err)
	}
	defer unix.Close(maps)
	// struct procmap_query of linux/fs.h: size, flags, address, then what
	// the kernel fills in.
	var q [13]uint64
	q[0], q[2] = uint64(unsafe.Sizeof(q)), uint64(uintptr(unsafe.Pointer(&probeAnchor)))
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(maps), ioctlProcmapQuery, uintptr(unsafe.Pointer(&q))); e != 0 {
		return missing("ioctl PROCMAP_QUERY", e)
	}
	return nil
}

// probeAnchor is a global whose mapping the PROCMAP_QUERY probe asks about.
var probeAnchor byte

// ioctlProcmapQuery is _IOWR('f', 17, struct procmap_query), 104 bytes.
const ioctlProcmapQuery = 0xc0686611

func probeStatmount() error {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, "/", unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID_UNIQUE, &st); err != nil {
		return fmt.Errorf("statx /: %w", err)
	}
	if st.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		return missing("statx STATX_MNT_ID_UNIQUE", unix.EINVAL)
	}
	// struct mnt_id_req, version 0; a statmount of the root mount's
	// basics fits in the fixed part.
	req := struct {
		Size, Spare uint32
		MntID       uint64
		Param       uint64
	}{Size: 24, MntID: st.Mnt_id, Param: 0x2 /* STATMOUNT_MNT_BASIC */}
	var buf [512]byte
	if _, _, e := unix.Syscall6(sysStatmount, uintptr(unsafe.Pointer(&req)), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0, 0); e != 0 {
		return missing("statmount", e)
	}
	// For listmount, param is the last id already seen: none.
	req.Param = 0
	var ids [1]uint64
	if _, _, e := unix.Syscall6(sysListmount, uintptr(unsafe.Pointer(&req)), uintptr(unsafe.Pointer(&ids[0])), 1, 0, 0, 0); e != 0 {
		return missing("listmount", e)
	}
	return nil
}

const (
	// atFdcwd is AT_FDCWD as a raw system call takes it.
	atFdcwd      = ^uintptr(99) // -100
	sysStatmount = 457
	sysListmount = 458
)

// probeOverlayLowerdirAppend asks overlayfs to add a layer that does not
// exist. A kernel with lowerdir+ looks it up at once (ENOENT). One without
// it refuses the name (EINVAL, 6.5-6.7) or, before overlayfs took the new
// mount API (6.5), keeps the text for the mount that never comes: success
// there means "missing" too.
func probeOverlayLowerdirAppend() error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	err = unix.FsconfigSetString(fsfd, "lowerdir+", "/nonexistent/sysvisor-probe")
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err == nil {
		err = errors.New("accepted unchecked (overlayfs before the new mount API)")
	}
	return missing("fsconfig lowerdir+", err)
}

// probeSyncWakeUp gets a listener from an allow-all filter installed in a
// child process that exits at once, and asks for
// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP on it. A thread of this process would
// not do: when Go schedules the probe on the main thread, that thread
// outlives its goroutine, filter included.
func probeSyncWakeUp() error {
	insns := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
	prog := unix.SockFprog{Len: 1, Filter: &insns[0]}
	pid, err := syncWakeUpChild(&prog)
	runtime.KeepAlive(insns)
	if err != nil {
		return fmt.Errorf("probe process: %w", err)
	}
	ws, err := reap(pid)
	if err != nil {
		return fmt.Errorf("probe process: %w", err)
	}
	switch code := ws.ExitStatus(); {
	case !ws.Exited():
		return fmt.Errorf("probe process: %v", ws)
	case code == 0:
		return nil
	case code == probeNoNewPrivs:
		return errors.New("prctl(PR_SET_NO_NEW_PRIVS) failed")
	case code == probeSeccomp:
		return errors.New("seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER) failed")
	default:
		return missing("SECCOMP_IOCTL_NOTIF_SET_FLAGS", unix.Errno(code))
	}
}

func reap(pid int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err != unix.EINTR {
			return ws, err
		}
	}
}

// Exit codes of the probe children other than an errno.
const (
	probeNoNewPrivs = 251
	probeSeccomp    = 252
)

// syncWakeUpChild forks a child that runs raw system calls only (the Go
// runtime's state in a forked copy is never touched) and exits with 0 or
// what failed.
//
//go:norace
func syncWakeUpChild(prog *unix.SockFprog) (int, error) {
	pid, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	if pid != 0 {
		return int(pid), nil
	}
	if _, _, e := unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, probeNoNewPrivs, 0, 0)
	}
	fd, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(prog)))
	if e != 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, probeSeccomp, 0, 0)
	}
	_, _, e = unix.RawSyscall(unix.SYS_IOCTL, fd, unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
	unix.RawSyscall(unix.SYS_EXIT_GROUP, uintptr(e), 0, 0)
	panic("unreachable")
}

// probePidMaxPerPidNS compares /proc/sys/kernel/pid_max as this process
// looks it up with what a child in a new pid namespace looks up: a
// /proc/sys entry belongs to the looker's namespace, so a kernel that keeps
// pid_max per pid namespace gives the child another inode. Nothing is
// written.
func probePidMaxPerPidNS() error {
	var mine unix.Stat_t
	if err := unix.Stat("/proc/sys/kernel/pid_max", &mine); err != nil {
		return err
	}
	path, err := unix.BytePtrFromString("/proc/sys/kernel/pid_max")
	if err != nil {
		return err
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(p[0])
	var theirs unix.Stat_t
	pid, err := pidMaxChild(path, &theirs, p[1])
	unix.Close(p[1])
	runtime.KeepAlive(path)
	if err != nil {
		return fmt.Errorf("probe process: %w", err)
	}
	buf := make([]byte, unsafe.Sizeof(theirs))
	n, rerr := unix.Read(p[0], buf)
	ws, err := reap(pid)
	if err != nil {
		return fmt.Errorf("probe process: %w", err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		return fmt.Errorf("probe process: %v (errno %d)", ws, ws.ExitStatus())
	}
	if rerr != nil || n != len(buf) {
		return fmt.Errorf("probe process: short answer (%d bytes, %v)", n, rerr)
	}
	theirs = *(*unix.Stat_t)(unsafe.Pointer(&buf[0]))
	if theirs.Ino == mine.Ino && theirs.Dev == mine.Dev {
		return missing("kernel.pid_max", errors.New("one entry for every pid namespace"))
	}
	return nil
}

// pidMaxChild forks a child in a new pid namespace that stats path into its
// own copy of st, writes it to fd and exits with the errno. The child runs
// raw system calls only (nosplit: no stack growth, no preemption check can
// call into the runtime).
//
//go:norace
//go:nosplit
func pidMaxChild(path *byte, st *unix.Stat_t, fd int) (int, error) {
	pid, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.CLONE_NEWPID|unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	if pid != 0 {
		return int(pid), nil
	}
	_, _, e = unix.RawSyscall6(unix.SYS_NEWFSTATAT, atFdcwd, uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(st)), 0, 0, 0)
	if e == 0 {
		_, _, e = unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(st)), unsafe.Sizeof(*st))
	}
	unix.RawSyscall(unix.SYS_EXIT_GROUP, uintptr(e), 0, 0)
	panic("unreachable")
}
