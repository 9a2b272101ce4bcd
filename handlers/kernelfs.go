package handlers

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
	"github.com/sysvisor/sysvisor/linux/mountinfo"
)

// newKernelFS mounts a fresh procfs (for the caller's pid namespace) or
// sysfs (for its network namespace) at target, on the caller's behalf.
//
// The filesystem is created outside the caller's mount namespace, where the
// kernel's mount_too_revealing check does not apply, and dressed on a stage
// (see stage): first the filesystem, then the container's masks and
// read-only paths inside it. Only the finished tree is attached at the
// caller's target, so no moment exists in which the container could see the
// new mount unmasked.
func newKernelFS(req *Request, fstype, target string, flags uintptr, data string) error {
	c := req.Container
	prefix := "/" + map[string]string{"proc": "proc", "sysfs": "sys"}[fstype] + "/"
	var nsfd int = -1
	if fstype == "proc" {
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/pid", req.Pid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		nsfd = fd
		defer unix.Close(nsfd)
		if ok, err := ownsPidNS(req.Pid(), nsfd); err != nil || !ok {
			return unix.EPERM
		}
	}
	opts, err := kernelFSOptions(fstype, data)
	if err != nil {
		return err
	}
	if fstype == "sysfs" && c.SysfsReadOnly() {
		// The container's own /sys is read-only; a new one is too.
		flags |= unix.MS_RDONLY
	}
	hostNet, err := sameNetNS(req.Pid())
	if err != nil {
		return err
	}
	// A procfs gets what the container's own /proc got at its start, for
	// the caller's namespaces: its network namespace's sys/net, and the
	// sysctls of its IPC namespace and of its pid namespace (the new
	// procfs's) read-write where the kernel namespaces them.
	ns := joinNet
	var ids idRanges
	pidMax, pidHelper := false, false
	if fstype == "proc" {
		ns |= joinIPC
		if ids, err = callerIDs(req); err != nil {
			return err
		}
		if pidMax, err = needPidHelper(req.Pid()); err != nil {
			return err
		}
		// Without the pidns= option only a process born in the caller's
		// pid namespace can create its procfs.
		samePid, err := sameNS(req.Pid(), "pid")
		if err != nil {
			return err
		}
		pidHelper = !samePid && !kernel.ProcfsPidNS.Has()
		if pidMax || pidHelper {
			ns |= joinPID
		}
	}
	mfd := -1
	defer func() {
		if mfd >= 0 {
			unix.Close(mfd)
		}
	}()
	build := func() error {
		raw, err := createKernelFS(fstype, opts, mountAttrs(flags), nsfd, pidHelper)
		if err != nil {
			return err
		}
		// Which kernel paths built it: the fallbacks show here.
		by := "mounter"
		switch {
		case pidHelper:
			by = "pid-namespace-helper"
		case nsfd >= 0 && kernel.ProcfsPidNS.Has():
			by = "pidns-option"
		}
		req.Log.Debug("kernel filesystem created", "fstype", fstype, "created_by", by, "stage", stageName(kernel.DetachedMounts.Has()))
		return inStage(c.Views(), func(st *stage) error {
			root, err := st.attach(raw)
			if err != nil {
				return err
			}
			if err := dressKernelFS(req, st, root, fstype, prefix, flags, hostNet, ids, pidMax); err != nil {
				unix.Close(root)
				return err
			}
			mfd, err = st.detach(root)
			return err
		})
	}
	var sigs []string
	// The network namespace is joined for procfs too: the sysctls under
	// sys/net have one dentry per network namespace, and the views bound
	// over them must be on the caller's. So do the IPC ones per IPC
	// namespace; pid_max needs the helper (joinPID).
	err = inCallerFS(req, ns, build, func(fs *callerFS) error {
		tfd, err := fs.open(target, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(tfd)
		if err := fs.act(req, func() error {
			return unix.MoveMount(mfd, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
		}); err != nil {
			return err
		}
		// The masks just attached are as protected as the runtime's.
		id, _, err := mountinfo.IDOf(mfd)
		if err != nil {
			return err
		}
		m, err := fs.stat(id)
		if err != nil {
			return err
		}
		// Every mount of the tree, not only the top's children: the
		// sysctl views sit on the read-only sys bind, /proc/sys/net's
		// read-write bind too.
		for queue := []*mountinfo.Entry{m}; len(queue) > 0; queue = queue[1:] {
			kids, err := fs.childrenOf(queue[0])
			if err != nil {
				return err
			}
			for i := range kids {
				sigs = append(sigs, sigOf(&kids[i], queue[0]))
				queue = append(queue, &kids[i])
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Recorded from here, not from the thread above: that one resolves
	// paths in the container's root, and host files are never written
	// through a path the container controls.
	if err := c.Protect(sigs); err != nil {
		req.Log.Error("cannot record protected mounts", "error", err)
	}
	return nil
}

// createKernelFS creates the procfs or sysfs, detached. A procfs is for the
// pid namespace nsfd names: through the pidns= option where the kernel has
// it, else from a helper born there (inHelper, the thread having joined it
// for its children), else (the caller shares sysvisord's) as is.
func createKernelFS(fstype string, opts []string, attrs, nsfd int, inHelper bool) (int, error) {
	if inHelper {
		return newFSInPidNS(fstype, opts, attrs)
	}
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen %s: %w", fstype, err)
	}
	defer unix.Close(fsfd)
	if nsfd >= 0 && kernel.ProcfsPidNS.Has() {
		if err := unix.FsconfigSetFd(fsfd, "pidns", nsfd); err != nil {
			return -1, fmt.Errorf("proc pidns: %w", err)
		}
	}
	for _, o := range opts {
		k, v, _ := strings.Cut(o, "=")
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return -1, unix.EINVAL
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("create %s: %w", fstype, err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return -1, fmt.Errorf("fsmount %s: %w", fstype, err)
	}
	return mfd, nil
}

// dressKernelFS gives the new procfs or sysfs whose root is root what the
// container's own got: product_uuid shadows (sysfs), the masks and
// read-only paths, read-write sys/net and namespaced sysctls (procfs), the
// views.
func dressKernelFS(req *Request, st *stage, root int, fstype, prefix string, flags uintptr, hostNet bool, ids idRanges, pidMax bool) error {
	c := req.Container
	if fstype == "sysfs" {
		// product_uuid where the kernel has no DMI, built from this
		// new sysfs (an inner container's network namespace has its
		// own net devices). Before the masks, which then cover what
		// lies inside the shadows. Not a security boundary either:
		// without it the new mount has no product_uuid.
		if n, err := shadowIn(st, root, c.Views(), flags&unix.MS_RDONLY != 0); err != nil {
			req.Log.Warn("new sysfs mount gets no product_uuid", "error", err)
		} else if n > 0 {
			req.Log.Debug("new sysfs mount: devices/virtual and class shadowed for product_uuid", "mounts", n)
		}
	}
	if err := dressIn(root, prefix, c.MaskedPaths(), c.ReadonlyPaths()); err != nil {
		return err
	}
	if fstype == "proc" && !hostNet {
		// LXC's model, as for the container's own /proc: net
		// sysctls are left to the kernel's permission checks.
		if err := writableNetIn(root); err != nil {
			return fmt.Errorf("read-write sys/net: %w", err)
		}
		// Like the views: without them the caller's root
		// cannot write these sysctls, which is no reason to
		// fail the mount.
		if bound, err := namespacedIn(root, ids, pidMax); err != nil {
			req.Log.Warn("new proc mount: namespaced sysctls stay read-only", "error", err, "read_write", bound)
		}
	}
	if dir := c.Views(); dir != "" {
		// Views are not a security boundary: without them the new
		// mount shows the host's figures, which is no reason to fail it.
		if err := viewsIn(root, filepath.Join(dir, strings.Trim(prefix, "/")), fstype == "proc", pidMax); err != nil {
			req.Log.Warn("new "+fstype+" mount gets no /proc and /sys views", "error", err)
		}
	}
	return nil
}

// kernelFSOptions accepts the mount data procfs understands; sysfs takes
// none. Anything else is EINVAL, as the kernel would answer.
func kernelFSOptions(fstype, data string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(data, ",") {
		if o == "" {
			continue
		}
		k, _, _ := strings.Cut(o, "=")
		switch {
		case fstype == "proc" && (k == "hidepid" || k == "gid" || k == "subset"):
			out = append(out, o)
		case o == "rw" || o == "ro" || o == "defaults":
			// flags, which mount(8) sometimes also passes as data
		default:
			return nil, unix.EINVAL
		}
	}
	return out, nil
}

// maskIn hides rel inside the detached tree root: a file behind /dev/null,
// a directory behind an empty read-only tmpfs, as runc masks them.
func maskIn(root int, rel string) error {
	tfd, err := openIn(root, rel)
	if tfd < 0 {
		return err
	}
	defer unix.Close(tfd)
	var st unix.Stat_t
	if err := unix.Fstat(tfd, &st); err != nil {
		return err
	}
	var src int
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
		if err != nil {
			return err
		}
		defer unix.Close(fsfd)
		if err := unix.FsconfigSetString(fsfd, "size", "0"); err != nil {
			return err
		}
		if err := unix.FsconfigCreate(fsfd); err != nil {
			return err
		}
		if src, err = unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY); err != nil {
			return err
		}
	} else if src, err = unix.OpenTree(unix.AT_FDCWD, "/dev/null", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC); err != nil {
		return err
	}
	defer unix.Close(src)
	return unix.MoveMount(src, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}

// viewsIn binds every view file under base (the container's views for this
// filesystem, e.g. <views>/proc) over the same path inside the detached tree
// root, read-only as the runtime binds them over the container's own. The
// writable views (sysctls, module parameters) are bound writable, and in a
// procfs (proc) only over sysctls the kernel does not namespace, as
// PrepareProcSys does; pid: pid_max is looked up from the caller's pid
// namespace (openSysctl).
func viewsIn(root int, base string, proc, pid bool) error {
	return filepath.WalkDir(base, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			if p == base && os.IsNotExist(err) {
				return filepath.SkipAll
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		// Writable views are the per-container sysctls and module
		// parameters; the FUSE server's mode says which.
		info, err := d.Info()
		if err != nil {
			return err
		}
		writable := info.Mode().Perm()&0o200 != 0
		var tfd int
		if name, ok := strings.CutPrefix(rel, "sys/"); ok && proc && writable {
			tfd, err = openSysctlIn(root, name, pid)
		} else {
			tfd, err = openIn(root, rel)
		}
		if tfd < 0 {
			return err // nothing there in this kernel: nothing to cover
		}
		defer unix.Close(tfd)
		if writable && proc && strings.HasPrefix(rel, "sys/") {
			if ns, err := kernelNamespaced(tfd); err != nil || ns && !overKernel(strings.TrimPrefix(rel, "sys/")) {
				return err
			}
		}
		src, err := cloneView(p, !writable)
		if err != nil {
			return err
		}
		defer unix.Close(src)
		return unix.MoveMount(src, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	})
}

// openSysctlIn is openSysctl under sys/ of the detached procfs tree root:
// -1 and no error where the kernel has no such file.
func openSysctlIn(root int, name string, pid bool) (int, error) {
	sys, err := unix.Openat(root, "sys", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == nil {
		defer unix.Close(sys)
		var fd int
		if fd, err = openSysctl(sys, name, pid); err == nil {
			return fd, nil
		}
	}
	if errors.Is(err, unix.ENOENT) {
		return -1, nil
	}
	return -1, err
}

// writableNetIn makes sys/net of a detached procfs tree a read-write bind
// of itself when the read-only paths made it read-only.
func writableNetIn(root int) error {
	tfd, err := openIn(root, "sys/net")
	if tfd < 0 {
		return err
	}
	defer unix.Close(tfd)
	var st unix.Statfs_t
	if err := unix.Fstatfs(tfd, &st); err != nil {
		return err
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return nil
	}
	return rwBindOver(tfd, moveOver)
}

// namespacedIn makes the namespaced sysctls under sys/ of a detached
// procfs tree read-write binds of themselves (bindNamespaced), for the
// namespaces the thread has joined.
func namespacedIn(root int, ids idRanges, pid bool) ([]string, error) {
	// Following mounts: sys is the read-only bind the read-only paths put
	// there; beneath it nothing is crossed.
	sys, err := unix.Openat(root, "sys", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return nil, nil // subset=pid
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(sys)
	if err := isProcfs(sys); err != nil {
		return nil, err
	}
	done, _, err := bindNamespaced(sys, ids, pid, moveOver)
	return done, err
}

// openIn opens rel inside a detached tree without following a final
// symlink. A path the kernel does not have is no error (-1, nil): there is
// nothing to mask.
func openIn(root int, rel string) (int, error) {
	fd, err := unix.Openat(root, rel, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		return -1, nil
	}
	if err != nil {
		return -1, err
	}
	return fd, nil
}

// readonlyIn makes rel inside the detached tree a read-only bind of itself.
func readonlyIn(root int, rel string) error {
	tfd, err := openIn(root, rel)
	if tfd < 0 {
		return err
	}
	defer unix.Close(tfd)
	src, err := unix.OpenTree(tfd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(src, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return err
	}
	return unix.MoveMount(src, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}

// ownsPidNS reports whether the caller's user namespace owns the pid
// namespace (or is an ancestor of its owner): mounting a procfs for it needs
// CAP_SYS_ADMIN there.
func ownsPidNS(pid, pidns int) (bool, error) {
	var user unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/user", pid), &user); err != nil {
		return false, err
	}
	fd, err := unix.IoctlRetInt(pidns, unix.NS_GET_USERNS)
	if err != nil {
		return false, err
	}
	for i := 0; i < 64; i++ {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return false, err
		}
		if st.Ino == user.Ino && st.Dev == user.Dev {
			unix.Close(fd)
			return true, nil
		}
		parent, err := unix.IoctlRetInt(fd, unix.NS_GET_PARENT)
		unix.Close(fd)
		if err != nil {
			return false, nil // reached a namespace the caller cannot see past
		}
		fd = parent
	}
	unix.Close(fd)
	return false, nil
}

// stubFS are kernel filesystems a user namespace may not mount and a
// container has no business seeing, but which init systems mount at boot
// (systemd's sys-kernel-debug.mount and friends fail, and the system is
// "degraded", when the mount does).
var stubFS = map[string]bool{"debugfs": true, "tracefs": true, "configfs": true, "securityfs": true, "pstore": true}

// newStub answers such a mount with an empty, read-only tmpfs at target,
// named after the filesystem asked for: the caller's mount succeeds and
// shows nothing of the host's kernel.
func newStub(req *Request, fstype, target string) error {
	mfd := -1
	defer func() {
		if mfd >= 0 {
			unix.Close(mfd)
		}
	}()
	build := func() error {
		fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
		if err != nil {
			return err
		}
		defer unix.Close(fsfd)
		for k, v := range map[string]string{"source": fstype, "size": "0", "mode": "0755"} {
			if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
				return fmt.Errorf("stub %s %s: %w", fstype, k, err)
			}
		}
		if err := unix.FsconfigCreate(fsfd); err != nil {
			return err
		}
		mfd, err = unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC)
		return err
	}
	return inCallerFS(req, 0, build, func(fs *callerFS) error {
		tfd, err := fs.open(target, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(tfd)
		return fs.act(req, func() error {
			return unix.MoveMount(mfd, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
		})
	})
}
