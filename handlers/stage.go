package handlers

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
)

// A stage is where sysvisord dresses a filesystem it builds for a
// container (a procfs with the container's masks, a sysfs shadow) before
// anyone can see it: the finished tree is attached at the caller's target
// in one move_mount.
//
// Since Linux 6.15 (kernel.DetachedMounts) mounts can be attached inside a
// detached tree and cloned from it, and the tree is dressed where it is,
// in no namespace at all. Older kernels refuse both (EINVAL: the target
// must be in the caller's mount namespace). There the worker thread enters
// a mount namespace of its own for the call, made from sysvisord's empty
// staging namespace, whose root is a fresh tmpfs holding only what the
// dressing reaches by path (/dev/null, the container's views directory,
// clones of the host's); each tree is attached there, dressed, and cloned
// out detached before the thread leaves. Nothing in that namespace is
// visible to any other process, the container's included, and it goes
// away with the thread's leaving, with every mount in it.
type stage struct {
	native bool
	trees  int
}

// inStage runs build with a stage. views is the container's views
// directory ("" for none), which the dressing reads by path. The thread
// must be locked with its fs context unshared (inCallerFS's detached
// step), in the host's mount namespace, and is there again afterwards.
func inStage(views string, build func(st *stage) error) error {
	return runStage(kernel.DetachedMounts.Has(), views, build)
}

// runStage is inStage with the choice made: native, or the staging
// namespace (tests run both on one kernel).
func runStage(native bool, views string, build func(st *stage) error) error {
	if native {
		return build(&stage{native: true})
	}
	// The host paths, cloned while the thread still sees them: in the
	// staging namespace no host mount can be cloned from.
	var srcs []struct {
		fd  int
		dst string
		dir bool
	}
	defer func() {
		for _, s := range srcs {
			unix.Close(s.fd)
		}
	}()
	clone := func(src string, recursive, dir bool) error {
		flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
		if recursive {
			flags |= unix.AT_RECURSIVE
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, src, flags)
		if err != nil {
			return fmt.Errorf("stage: clone %s: %w", src, err)
		}
		srcs = append(srcs, struct {
			fd  int
			dst string
			dir bool
		}{fd, src, dir})
		return nil
	}
	if err := clone("/dev/null", false, false); err != nil {
		return err
	}
	if views != "" {
		if err := clone(views, true, true); err != nil {
			return err
		}
	}
	base, err := stagingNS()
	if err != nil {
		return err
	}
	if err := openHome(); err != nil {
		return err
	}
	defer func() {
		// Back to the host: the call's namespace has no other user and
		// goes away with its mounts. Should this fail, inCallerFS's
		// goHome tries again and ends sysvisord if it cannot.
		if unix.Setns(home.mnt, unix.CLONE_NEWNS) == nil {
			unix.Fchdir(home.cwd)
		}
	}()
	if err := unix.Setns(base, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("stage: join the staging namespace: %w", err)
	}
	// A namespace for this call: a copy of the staging one, whose root
	// gets a tmpfs of its own so that calls never share a directory.
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("stage: unshare: %w", err)
	}
	root, err := newStageTmpfs()
	if err != nil {
		return err
	}
	err = unix.MoveMount(root, "", unix.AT_FDCWD, "/", unix.MOVE_MOUNT_F_EMPTY_PATH)
	if err == nil {
		err = unix.Fchdir(root)
	}
	unix.Close(root)
	if err == nil {
		err = unix.Chroot(".")
	}
	if err != nil {
		return fmt.Errorf("stage: root: %w", err)
	}
	for _, s := range srcs {
		if err := stageMountpoint(s.dst, s.dir); err != nil {
			return err
		}
		if err := unix.MoveMount(s.fd, "", unix.AT_FDCWD, s.dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return fmt.Errorf("stage: attach %s: %w", s.dst, err)
		}
	}
	return build(&stage{})
}

// stageName names the way trees are staged, for logs and tests.
func stageName(native bool) string {
	if native {
		return "detached"
	}
	return "staging-namespace"
}

// attach makes the detached mount mfd workable: its root as an fd under
// which mounts can be attached and cloned. The stage takes mfd.
func (st *stage) attach(mfd int) (int, error) {
	if st.native {
		return mfd, nil
	}
	defer unix.Close(mfd)
	st.trees++
	dst := fmt.Sprintf("/tree%d", st.trees)
	if err := unix.Mkdir(dst, 0o700); err != nil {
		return -1, fmt.Errorf("stage: %w", err)
	}
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return -1, fmt.Errorf("stage: attach tree: %w", err)
	}
	root, err := unix.Open(dst, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("stage: %w", err)
	}
	return root, nil
}

// detach returns the finished tree whose root is root as a detached mount,
// for the caller to attach. The stage takes root.
func (st *stage) detach(root int) (int, error) {
	if st.native {
		return root, nil
	}
	defer unix.Close(root)
	fd, err := unix.OpenTree(root, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return -1, fmt.Errorf("stage: clone the finished tree: %w", err)
	}
	return fd, nil
}

// stageMountpoint makes p in the stage's tmpfs, a directory or an empty
// file.
func stageMountpoint(p string, dir bool) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	if dir {
		if err := unix.Mkdir(p, 0o700); err != nil {
			return fmt.Errorf("stage: %w", err)
		}
		return nil
	}
	fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	return unix.Close(fd)
}

func newStageTmpfs() (int, error) {
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("stage: fsopen tmpfs: %w", err)
	}
	defer unix.Close(fsfd)
	for k, v := range map[string]string{"source": "sysvisor-stage", "mode": "0700", "size": "64k"} {
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return -1, fmt.Errorf("stage: tmpfs %s: %w", k, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("stage: create tmpfs: %w", err)
	}
	fd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
	if err != nil {
		return -1, fmt.Errorf("stage: fsmount tmpfs: %w", err)
	}
	return fd, nil
}

// stagingNS returns sysvisord's staging mount namespace: made once, private
// from the host's, with nothing in it but an empty tmpfs as its root (a copy
// of the host's tree would keep every host mount of the moment alive, a
// container's overlay among them). Calls copy it, which costs next to
// nothing.
//
// A helper process makes it, not a thread of sysvisord's: a goroutine that
// ends locked to its thread takes the thread with it, except on the main
// thread, which Go keeps, parked, and whose namespaces /proc/self shows.
var stagingNS = sync.OnceValues(func() (int, error) {
	fd, err := makeStagingNS()
	if err != nil {
		return -1, fmt.Errorf("staging namespace: %w", err)
	}
	return fd, nil
})

func makeStagingNS() (int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return -1, err
	}
	defer unix.Close(p[0])
	var keep []*byte
	cstr := func(s string) uintptr {
		b, _ := unix.BytePtrFromString(s) // constants without NUL
		keep = append(keep, b)
		return uintptr(unsafe.Pointer(b))
	}
	a := stagingArgs{
		root: cstr("/"), dot: cstr("."), empty: cstr(""),
		tmpfs: cstr("tmpfs"), mode: cstr("mode"), mode0700: cstr("0700"),
		pipe: uintptr(p[1]),
	}
	pid, errno := forkStaging(&a)
	keepAlive(keep, &a)
	unix.Close(p[1])
	if errno != 0 {
		return -1, fmt.Errorf("fork: %w", errno)
	}
	defer func() {
		unix.Kill(pid, unix.SIGKILL)
		wait(pid)
	}()
	// A zero byte once the namespace is made; the step that failed and
	// its errno otherwise; EOF if the helper died.
	b := make([]byte, 2)
	n, err := unix.Read(p[0], b)
	for err == unix.EINTR {
		n, err = unix.Read(p[0], b)
	}
	switch {
	case err != nil:
		return -1, err
	case n == 0:
		return -1, fmt.Errorf("helper: %v", wait(pid))
	case b[0] != 0:
		return -1, fmt.Errorf("%s: %w", stagingSteps[min(int(b[0]), len(stagingSteps)-1)], unix.Errno(b[1]))
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	return fd, nil
}

// stagingArgs is what the staging helper child uses, prepared before the
// fork: C strings and the pipe it reports on.
type stagingArgs struct {
	root, dot, empty, tmpfs, mode, mode0700 uintptr
	pipe                                    uintptr
	report                                  [2]byte // the child's own copy
}

// forkStaging forks the helper that makes the staging namespace: a private
// copy of the host's mount namespace whose tree is replaced by an empty
// tmpfs (pivot_root onto it, the host's tree detached whole). It writes a
// zero byte when done and waits to be killed; on failure it writes the
// step and the errno and exits. Raw system calls only (nosplit: no stack
// growth, no preemption check can call into the runtime).
//
//go:norace
//go:nosplit
func forkStaging(a *stagingArgs) (int, unix.Errno) {
	pid, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	if pid != 0 {
		return int(pid), 0
	}
	keepOnly(a.pipe, a.pipe)
	fail := uintptr(0)
	if _, _, e = unix.RawSyscall(unix.SYS_UNSHARE, unix.CLONE_NEWNS, 0, 0); e != 0 {
		fail = 1
	} else if _, _, e = unix.RawSyscall6(unix.SYS_MOUNT, 0, a.root, 0, unix.MS_REC|unix.MS_PRIVATE, 0, 0); e != 0 {
		fail = 2
	}
	var fsfd, mfd uintptr
	if fail == 0 {
		if fsfd, _, e = unix.RawSyscall(unix.SYS_FSOPEN, a.tmpfs, unix.FSOPEN_CLOEXEC, 0); e != 0 {
			fail = 3
		} else if _, _, e = unix.RawSyscall6(unix.SYS_FSCONFIG, fsfd, fsconfigSetString, a.mode, a.mode0700, 0, 0); e != 0 {
			fail = 4
		} else if _, _, e = unix.RawSyscall6(unix.SYS_FSCONFIG, fsfd, fsconfigCmdCreate, 0, 0, 0, 0); e != 0 {
			fail = 5
		} else if mfd, _, e = unix.RawSyscall(unix.SYS_FSMOUNT, fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC); e != 0 {
			fail = 6
		}
	}
	if fail == 0 {
		// The tmpfs goes on top of the root, becomes the root, and the
		// host's tree, now stacked on it, is dropped.
		if _, _, e = unix.RawSyscall6(unix.SYS_MOVE_MOUNT, mfd, a.empty, atFdcwd, a.root, unix.MOVE_MOUNT_F_EMPTY_PATH, 0); e != 0 {
			fail = 7
		} else if _, _, e = unix.RawSyscall(unix.SYS_FCHDIR, mfd, 0, 0); e != 0 {
			fail = 8
		} else if _, _, e = unix.RawSyscall(unix.SYS_PIVOT_ROOT, a.dot, a.dot, 0); e != 0 {
			fail = 9
		} else if _, _, e = unix.RawSyscall(unix.SYS_UMOUNT2, a.dot, unix.MNT_DETACH, 0); e != 0 {
			fail = 10
		}
	}
	if fail != 0 {
		a.report[0], a.report[1] = byte(fail), byte(e)
		unix.RawSyscall(unix.SYS_WRITE, a.pipe, uintptr(unsafe.Pointer(&a.report[0])), 2)
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 1, 0, 0)
	}
	unix.RawSyscall(unix.SYS_WRITE, a.pipe, uintptr(unsafe.Pointer(&a.report[0])), 1)
	for {
		unix.RawSyscall(unix.SYS_PAUSE, 0, 0, 0)
	}
}

// stagingSteps name forkStaging's steps by number, for its errors.
var stagingSteps = []string{"", "unshare", "make / private", "fsopen tmpfs", "tmpfs mode", "create tmpfs", "fsmount tmpfs",
	"attach tmpfs on /", "enter tmpfs", "pivot_root", "drop the host's tree", "?"}

// atFdcwd is AT_FDCWD as a raw system call takes it.
const atFdcwd = ^uintptr(99) // -100
