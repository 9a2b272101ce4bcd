package handlers

import (
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sync"

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
var stagingNS = sync.OnceValues(func() (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread leaves the host's mount namespace for good: never
		// unlocked, it ends with the goroutine.
		goruntime.LockOSThread()
		fd, err := makeStagingNS()
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
})

func makeStagingNS() (int, error) {
	if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
		return -1, fmt.Errorf("staging namespace: unshare: %w", err)
	}
	ns, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("staging namespace: %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(ns)
		return -1, fmt.Errorf("staging namespace: %s: %w", what, err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail("make private", err)
	}
	root, err := newStageTmpfs()
	if err != nil {
		return fail("root", err)
	}
	defer unix.Close(root)
	if err := unix.MoveMount(root, "", unix.AT_FDCWD, "/", unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fail("attach root", err)
	}
	if err := unix.Fchdir(root); err != nil {
		return fail("enter root", err)
	}
	// The tmpfs becomes the root and the host's tree, now stacked on
	// it, is dropped whole.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fail("pivot_root", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fail("drop the host's tree", err)
	}
	return ns, nil
}
