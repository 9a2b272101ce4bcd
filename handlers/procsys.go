package handlers

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/notify"
	"github.com/sysvisor/sysvisor/linux/rawfile"
	"github.com/sysvisor/sysvisor/linux/sysctl"
)

// /proc/sys in a system container follows LXC's model: the runtime's
// read-only /proc/sys stays read-only, except /proc/sys/net, which is made
// read-write again. The kernel's own permission checks then decide: the net
// sysctls of the container's network namespace belong to its root and are
// writable by it (inner dockerd writes net.ipv4.ip_forward at start and exits
// on EROFS), the few global ones under net/ belong to host root and are not.
// Sysctls the kernel does not namespace get per-container values from
// sysvisord's views (files under <views>/proc/sys), bound over the kernel's.
//
// runc refuses spec mounts inside /proc other than a fixed list, so these
// mounts are made by sysvisord in the container's mount namespace when
// init's listener is handed over: runc has applied its masks and read-only
// paths by then, and init waits on its exec fifo, so no container code has
// run. The runtime waits for sysvisord to finish before create returns.

// Process names a container process outside any notification: the
// container's init while its listener is handed over. Its pidfd, opened
// first, proves that fds opened later through /proc/<pid> are this
// process's: a pid that was reused belongs to a process the pidfd does not
// name, and signalling the pidfd then fails.
type Process struct {
	pid, pidfd int
	status     []byte
}

// OpenProcess pins pid with a pidfd.
func OpenProcess(pid int) (*Process, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("invalid pid %d", pid)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd of %d: %w", pid, err)
	}
	return &Process{pid: pid, pidfd: fd}, nil
}

// Pid implements caller.
func (p *Process) Pid() int { return p.pid }

// Valid implements caller: the process the pidfd names is alive.
func (p *Process) Valid() bool { return unix.PidfdSendSignal(p.pidfd, 0, nil, 0) == nil }

// StatusField implements caller; the file is read once.
func (p *Process) StatusField(name string) (string, error) {
	if p.status == nil {
		b, err := rawfile.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
		if err != nil {
			return "", err
		}
		if !p.Valid() {
			return "", fmt.Errorf("process %d is gone", p.pid)
		}
		p.status = b
	}
	return statusField(p.status, name, p.pid)
}

// Close releases the pidfd.
func (p *Process) Close() {
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
}

// ProcSysReport says what PrepareProcSys changed.
type ProcSysReport struct {
	// NetWritable: /proc/sys/net was made read-write.
	NetWritable bool
	// Emulated are the files (paths from /, without the slash) now served
	// by the views; Kernel the sysctls left to the kernel because it
	// namespaces them.
	Emulated, Kernel []string
	// Namespaced are the paths under /proc/sys outside net/ (files, or a
	// directory such as fs/mqueue) the kernel keeps per IPC or pid
	// namespace, now read-write binds of the container's own; PidHelper
	// is what the helper process for pid_max cost (0: none was needed).
	Namespaced []string
	PidHelper  time.Duration
}

// PrepareProcSys makes the container's /proc/sys/net read-write and binds
// the writable view files (per-container sysctls under <views>/proc/sys,
// module parameters under <views>/sys) over the kernel's, in the mount
// namespace of the container's init p. views may be
// empty (no views). Every mount is made before the caller reads init's
// mounts for the protected set, so they are protected like the runtime's.
func PrepareProcSys(p *Process, views string) (ProcSysReport, error) {
	var rep ProcSysReport
	sysctls, err := writableViews(views)
	if err != nil {
		return rep, err
	}
	hostNet, err := sameNetNS(p.Pid())
	if err != nil {
		return rep, err
	}
	// One file that cannot be set up costs that file only: the others
	// go on, and every failure is reported.
	var errs []error
	ns := joinNet | joinIPC
	ids, err := callerIDs(p)
	if err != nil {
		errs = append(errs, fmt.Errorf("namespaced sysctls: %w", err))
	}
	pidHelper, err := needPidHelper(p.Pid())
	if err != nil {
		errs = append(errs, fmt.Errorf("kernel.pid_max: %w", err))
	}
	if pidHelper && ids != nil {
		ns |= joinPID
	}
	clones := map[string]int{}
	defer func() {
		for _, fd := range clones {
			unix.Close(fd)
		}
	}()
	// In the host's mount namespace: the view files are not visible from
	// the container's.
	detached := func() error {
		for _, rel := range sysctls {
			fd, err := cloneView(filepath.Join(views, rel), false)
			if err != nil {
				return err
			}
			clones[rel] = fd
		}
		return nil
	}
	// The thread joins init's network and IPC namespaces before any
	// lookup: a sysctl under net/ has one dentry per network namespace,
	// an IPC one per IPC namespace, and a mount on another namespace's
	// would never be seen by the container. For pid_max, a helper process
	// is born in init's pid namespace (joinPID).
	err = inCallerFS(p, ns, detached, func(fs *callerFS) error {
		if !hostNet {
			ok, err := writableNet(fs, p)
			if errors.Is(err, notify.ErrGone) {
				return err
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("/proc/sys/net read-write: %w", err))
			}
			rep.NetWritable = ok
		}
		// Before the views: the walk takes nothing with a mount on it.
		if ids != nil {
			bound, took, err := namespacedSysctls(fs, p, ids, ns&joinPID != 0)
			if errors.Is(err, notify.ErrGone) {
				return err
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("namespaced sysctls read-write: %w", err))
			}
			rep.Namespaced, rep.PidHelper = bound, took
		}
		for _, rel := range sysctls {
			how, err := bindSysctl(fs, p, rel, clones[rel], ns&joinPID != 0)
			if errors.Is(err, notify.ErrGone) {
				return err
			}
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("/%s: %w", rel, err))
			case how == sysctlEmulated:
				rep.Emulated = append(rep.Emulated, rel)
			case how == sysctlKernel:
				rep.Kernel = append(rep.Kernel, rel)
			}
		}
		return nil
	})
	return rep, errors.Join(append(errs, err)...)
}

// writableViews lists the view files the FUSE server makes writable (the
// per-container sysctls and module parameters), relative to views. The
// read-only ones are bound by the runtime through the spec.
func writableViews(views string) ([]string, error) {
	if views == "" {
		return nil, nil
	}
	var out []string
	err := filepath.WalkDir(views, func(p string, d iofs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().Perm()&0o200 == 0 {
			return nil
		}
		rel, err := filepath.Rel(views, p)
		if err != nil {
			return err
		}
		out = append(out, rel)
		return nil
	})
	sort.Strings(out)
	return out, err
}

// sameNetNS reports whether pid shares sysvisord's network namespace
// (--net=host with --allow-unsafe): its /proc/sys/net is the host's and
// stays read-only.
func sameNetNS(pid int) (bool, error) { return sameNS(pid, "net") }

// sameNS reports whether pid shares sysvisord's namespace of kind (a file
// name under /proc/<pid>/ns).
func sameNS(pid int, kind string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &a); err != nil {
		return false, err
	}
	if err := unix.Stat("/proc/self/ns/"+kind, &b); err != nil {
		return false, err
	}
	return a.Ino == b.Ino && a.Dev == b.Dev, nil
}

// cloneView clones a view file of sysvisord's FUSE mount, nosuid, nodev,
// noexec, and read-only unless writable (sysctls are written through).
func cloneView(path string, readOnly bool) (int, error) {
	src, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("clone %s: %w", path, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(src, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		unix.Close(src)
		return -1, fmt.Errorf("attributes of %s: %w", path, err)
	}
	return src, nil
}

// isProcfs checks that fd lies on a procfs: the targets are resolved in the
// container's root, and nothing but its /proc may receive these mounts.
func isProcfs(fd int) error { return onFS(fd, unix.PROC_SUPER_MAGIC, "procfs") }

func onFS(fd int, magic int64, name string) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return err
	}
	if st.Type != magic {
		return fmt.Errorf("not on a %s (filesystem type %#x)", name, st.Type)
	}
	return nil
}

// writableNet puts a read-write bind of the container's /proc/sys/net over
// itself when the mount it lies on is read-only. It reports whether it did.
func writableNet(fs *callerFS, p caller) (bool, error) {
	tfd, err := fs.open("/proc/sys/net", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return false, nil // no procfs at /proc, or a kernel without net sysctls
	}
	if err != nil {
		return false, err
	}
	defer unix.Close(tfd)
	if err := isProcfs(tfd); err != nil {
		return false, err
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(tfd, &st); err != nil {
		return false, err
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return false, nil // already writable: nothing to undo
	}
	return true, rwBindOver(tfd, func(src, target int) error {
		return fs.act(p, func() error { return moveOver(src, target) })
	})
}

// namespacedSysctls makes the sysctls the kernel keeps per IPC namespace
// (and, with pid, per pid namespace) read-write binds of the container's own
// in its /proc/sys; see bindNamespaced.
func namespacedSysctls(fs *callerFS, p caller, ids idRanges, pid bool) ([]string, time.Duration, error) {
	sys, err := fs.open("/proc/sys", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil, 0, nil // no procfs at /proc
	}
	if err != nil {
		return nil, 0, err
	}
	defer unix.Close(sys)
	if err := isProcfs(sys); err != nil {
		return nil, 0, err
	}
	return bindNamespaced(sys, ids, pid, func(src, target int) error {
		return fs.act(p, func() error { return moveOver(src, target) })
	})
}

// rwBindOver mounts a read-write bind of the file or directory fd names on
// top of it, with attach (moveOver, or a wrapper of it). The clone carries
// the read-only flag of the mount it comes from; the thread may clear it
// because the clone belongs to a namespace its user owns (the kernel's own
// rule for the container), and the flag is not locked: runc made the
// read-only mount inside the container's user namespace.
func rwBindOver(fd int, attach func(src, target int) error) error {
	src, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	defer unix.Close(src)
	attr := unix.MountAttr{Attr_clr: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(src, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fmt.Errorf("clear read-only: %w", err)
	}
	return attach(src, fd)
}

// moveOver attaches the detached mount src on top of target.
func moveOver(src, target int) error {
	return unix.MoveMount(src, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}

// kernelNamespaced reports whether the kernel already gives the container
// its own, writable copy of the sysctl fd names: the kernel makes the files
// of a namespaced sysctl owned by the namespace owner's root (host root owns
// the global ones), and leaves read-only those it refuses to namespaced
// writers (nf_conntrack_max outside the initial network namespace).
func kernelNamespaced(fd int) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, fmt.Errorf("not a regular file (mode %#o)", st.Mode)
	}
	return st.Uid != 0 && st.Mode&0o200 != 0, nil
}

// overKernel reports whether the view of the sysctl name (kernel/pid_max)
// stands in for a namespacing the kernel lacks, or is told to ignore
// (kernel.Force): then it covers the kernel's file whoever owns that.
func overKernel(name string) bool {
	s, ok := sysctl.Lookup(name)
	return ok && s.NamespacedBy != nil
}

// How a sysctl view is applied.
const (
	sysctlAbsent   = iota // this kernel has no such file
	sysctlKernel          // the kernel namespaces it: the container's own is the kernel's
	sysctlEmulated        // the view is bound over the kernel's file
)

// bindSysctl binds the view clone src over the container's /<rel> (a
// sysctl under /proc/sys, or a module parameter under /sys), unless the
// kernel namespaces that sysctl or lacks the file. pid: the thread has
// joined the container's pid namespace for its children, and pid_max is
// looked up there (openSysctl).
func bindSysctl(fs *callerFS, p caller, rel string, src int, pid bool) (int, error) {
	var tfd int
	var err error
	if name, ok := strings.CutPrefix(rel, "proc/sys/"); ok {
		var sys int
		if sys, err = fs.open("/proc/sys", unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW); err == nil {
			if err = isProcfs(sys); err == nil {
				tfd, err = openSysctl(sys, name, pid)
			}
			unix.Close(sys)
		}
	} else {
		tfd, err = fs.open("/"+rel, unix.O_PATH|unix.O_NOFOLLOW)
	}
	if errors.Is(err, unix.ENOENT) {
		return sysctlAbsent, nil
	}
	if err != nil {
		return 0, err
	}
	defer unix.Close(tfd)
	if strings.HasPrefix(rel, "proc/") {
		if err := isProcfs(tfd); err != nil {
			return 0, err
		}
		if ns, err := kernelNamespaced(tfd); err != nil || ns && !overKernel(strings.TrimPrefix(rel, "proc/sys/")) {
			return sysctlKernel, err
		}
	} else if err := onFS(tfd, unix.SYSFS_MAGIC, "sysfs"); err != nil {
		return 0, err
	}
	return sysctlEmulated, fs.act(p, func() error {
		return unix.MoveMount(src, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	})
}
