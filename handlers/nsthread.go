package handlers

import (
	"errors"
	"fmt"
	"os"
	"path"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/mountinfo"
	"github.com/sysvisor/sysvisor/linux/notify"
)

// caller is the process whose filesystem view inCallerFS enters: the
// trapped task of a notification (*Request), or a container's init at
// registration (*Process).
type caller interface {
	// Pid is the process in sysvisord's pid namespace.
	Pid() int
	// StatusField reads a field of its /proc/<pid>/status.
	StatusField(name string) (string, error)
	// Valid reports that fds opened through /proc/<pid> since the call
	// began still name this process (no pid reuse).
	Valid() bool
}

// callerFS is what a mount handler works with on a thread that has joined
// the caller's mount namespace with the caller's root and cwd: paths
// resolve exactly as they would for the caller, symlinks and ".." included,
// and never outside its root.
//
// A handler first opens every path it needs (open), then asks about the
// mounts those fds lie on (mountOf and friends). The first question moves
// the thread's root to the namespace's root, so that statmount reports
// mountpoints from there, as the container's records are kept; no path is
// opened after that.
type callerFS struct {
	// proc is the host's /proc, for self/fd magic links to resolved fds:
	// the caller's /proc shows another pid namespace.
	proc int
	// nsRoot is the mount namespace's root; root is the caller's root as
	// a path from there.
	nsRoot   int
	root     string
	atNSRoot bool
	// rootFD is the caller's root itself (its /proc/<pid>/root): a root
	// covered by a mount on top of it has no path.
	rootFD int
	// The caller as the host numbers it. Its ids from the host's pid
	// namespace inwards (NStgid, NSpid) and its start time, read from the
	// host's /proc when a path needs them, are enough to find it in
	// whatever procfs its root shows.
	pid int
	// mounts answers statmount's questions, or mountinfo's on kernels
	// without it.
	mounts *mountinfo.Table
}

// open resolves p as the caller would. /proc/self and /proc/thread-self
// would name this thread, which the caller's /proc does not show, so they
// become the caller's own numbers in the pid namespace of the procfs its
// /proc is: runtimes mount on /proc/self/fd/N all the time, and an inner
// runtime does so before its pivot_root, through the outer container's
// /proc, where its pid is not the one its own namespace gives it.
func (c *callerFS) open(p string, flags int) (int, error) {
	if c.atNSRoot {
		return -1, errors.New("path opened after the thread left the caller's root")
	}
	for _, prefix := range []string{"/proc/self", "/proc/thread-self"} {
		rest, ok := strings.CutPrefix(p, prefix)
		if !ok || (rest != "" && rest[0] != '/') {
			continue
		}
		if tgid, tid, ok := c.selfIn("/proc"); ok {
			if prefix == "/proc/self" {
				p = "/proc/" + tgid + rest
			} else {
				p = "/proc/" + tgid + "/task/" + tid + rest
			}
		}
		break
	}
	return unix.Open(p, flags|unix.O_CLOEXEC, 0)
}

// selfIn finds the caller in the procfs at dir: the pid namespace level
// whose number for the caller names, in that procfs, a process with the
// caller's ids from that level inwards and the caller's start time. The
// files are read without crossing mounts or following links, so nothing
// the container mounts over them can answer in the kernel's place. false:
// dir is no procfs, or the caller is not in it (the kernel's "self" would
// not resolve either).
func (c *callerFS) selfIn(dir string) (tgid, tid string, ok bool) {
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", "", false
	}
	defer unix.Close(root)
	var st unix.Statfs_t
	if unix.Fstatfs(root, &st) != nil || st.Type != unix.PROC_SUPER_MAGIC {
		return "", "", false
	}
	// read reads a small file under dirfd; resolve as openat2 takes it.
	read := func(dirfd int, name string, resolve uint64) []byte {
		fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC, Resolve: resolve})
		if err != nil {
			return nil
		}
		defer unix.Close(fd)
		buf := make([]byte, 4096)
		n, _ := unix.Read(fd, buf)
		return buf[:max(n, 0)]
	}
	// In the caller's procfs nothing it mounted may answer for the kernel.
	inRoot := func(name string) []byte {
		return read(root, name, unix.RESOLVE_NO_XDEV|unix.RESOLVE_NO_SYMLINKS|unix.RESOLVE_NO_MAGICLINKS)
	}
	ids := func(status []byte, name string) []string {
		v, _ := statusField(status, name, c.pid)
		return strings.Fields(v)
	}
	status := read(c.proc, fmt.Sprintf("%d/status", c.pid), 0)
	nsTgid, nsTid := ids(status, "NStgid"), ids(status, "NSpid")
	if len(nsTgid) == 0 {
		return "", "", false
	}
	// The process's start time, as the candidate's stat shows it (the
	// trapped thread may not be the process's first).
	start := startTime(string(read(c.proc, nsTgid[0]+"/stat", 0)))
	for k := len(nsTgid) - 1; k >= 0 && k < len(nsTid) && start != ""; k-- {
		n := nsTgid[k]
		if !slices.Equal(ids(inRoot(n+"/status"), "NStgid"), nsTgid[k:]) {
			continue
		}
		if startTime(string(inRoot(n+"/stat"))) != start {
			continue
		}
		return n, nsTid[k], true
	}
	return "", "", false
}

// startTime returns field 22 of /proc/<pid>/stat; the command name (field
// 2) may hold spaces and parentheses, so fields count from its last ')'.
func startTime(stat string) string {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

// threadPath returns where fd lies as a path from the thread's root, as it
// is now.
func (c *callerFS) threadPath(fd int) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(c.proc, fdPath(fd), buf)
	if err != nil {
		return "", err
	}
	p := string(buf[:n])
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%s is not reachable from the thread's root", p)
	}
	return p, nil
}

// nsPath returns where fd lies as a path from the namespace's root.
func (c *callerFS) nsPath(fd int) (string, error) {
	p, err := c.threadPath(fd)
	if err != nil {
		return "", err
	}
	if c.atNSRoot {
		return p, nil
	}
	if c.root == "" {
		return "", errors.New("the caller's root is covered by another mount")
	}
	return path.Join(c.root, p), nil
}

func (c *callerFS) enterNSRoot() error {
	if c.atNSRoot || c.mounts.CallersView() {
		return nil
	}
	if err := unix.Fchdir(c.nsRoot); err != nil {
		return err
	}
	if err := unix.Chroot("."); err != nil {
		return err
	}
	c.atNSRoot = true
	c.mounts.Invalidate() // mountpoints are named from the new root
	return nil
}

// fdPath names fd for syscalls that take paths, relative to proc (the
// thread's cwd is moved there before use).
func fdPath(fd int) string { return fmt.Sprintf("self/fd/%d", fd) }

// nsSet names the caller's namespaces, besides its mount namespace, that a
// worker thread joins.
type nsSet uint8

const (
	// joinNet: sysctls under net/ and sysfs have one dentry per network
	// namespace.
	joinNet nsSet = 1 << iota
	// joinIPC: so do the IPC and mqueue sysctls, per IPC namespace.
	joinIPC
	// joinPID sets the thread's pid namespace for children only (a thread
	// cannot change its own): a helper process it forks is born in the
	// caller's, whose kernel.pid_max only such a process can look up.
	joinPID
)

// inCallerFS runs fn on a fresh OS thread in the caller's mount namespace
// (and those ns names), rooted at the caller's root, in its cwd.
// detached runs before the mount namespace is joined, in the host's (with
// the other namespaces of ns already joined): filesystems built there are not
// subject to the checks the kernel makes on the container's namespace
// (mount_too_revealing), and fn attaches them.
//
// The work runs on the caller's own goroutine, locked to its thread, which
// goHome restores (namespaces, root, cwd, capabilities) before unlocking.
func inCallerFS(req caller, ns nsSet, detached func() error, fn func(*callerFS) error) error {
	pid := req.Pid()
	open := func(p string) (int, error) {
		// Namespace files open read-only; root and cwd are only walked.
		flags := unix.O_RDONLY | unix.O_CLOEXEC
		if p == "root" || p == "cwd" {
			flags = unix.O_PATH | unix.O_CLOEXEC
		}
		fd, err := unix.Openat(hostProc(), fmt.Sprintf("%d/%s", pid, p), flags, 0)
		if err != nil {
			return -1, fmt.Errorf("open /proc/%d/%s: %w", pid, p, err)
		}
		return fd, nil
	}
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	names := []string{"root", "cwd"}
	for _, j := range joins {
		if ns&j.set != 0 {
			names = append(names, j.file)
		}
	}
	byName := map[string]int{}
	if m, ok := req.(interface{ MntNS() (int, error) }); ok {
		// Shared with the permission check, closed with the request.
		fd, err := m.MntNS()
		if err != nil {
			return err
		}
		byName["ns/mnt"] = fd
	} else {
		names = append(names, "ns/mnt")
	}
	for _, n := range names {
		fd, err := open(n)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
		byName[n] = fd
	}
	proc := hostProc()
	if proc < 0 {
		return errors.New("the host's /proc is not open")
	}
	// The fds name the caller only if it is still in the syscall: a pid
	// reused since the trap would be another process.
	if !req.Valid() {
		return notify.ErrGone
	}
	// The work runs on the calling goroutine's own thread, locked to it:
	// handing it to another thread would cost two cross-CPU wake-ups,
	// more than the work itself.
	if err := openHome(); err != nil {
		return fmt.Errorf("worker thread home: %w", err)
	}
	goruntime.LockOSThread()
	defer func() {
		if err := goHome(ns); err != nil {
			// The thread is still in the caller's namespaces and cannot
			// be trusted with anything else; it is not given back.
			// Staying alive on it would risk acting on the host through
			// the container's view, so sysvisord stops here.
			fmt.Fprintf(os.Stderr, "sysvisord: fatal: cannot restore a worker thread: %v\n", err)
			os.Exit(70)
		}
		goruntime.UnlockOSThread()
	}()
	return func() error {
		if err := unshareFS(); err != nil {
			return err
		}
		// With host CAP_SYS_ADMIN still: setns checks it in the
		// thread's own user namespace too.
		for _, j := range joins {
			if ns&j.set == 0 {
				continue
			}
			if err := unix.Setns(byName[j.file], j.flag); err != nil {
				return fmt.Errorf("join %s namespace: %w", j.file, err)
			}
		}
		if detached != nil {
			if err := detached(); err != nil {
				return err
			}
		}
		if err := unix.Setns(byName["ns/mnt"], unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("join mount namespace: %w", err)
		}
		nsRoot, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("namespace root: %w", err)
		}
		defer unix.Close(nsRoot)
		env := &callerFS{proc: proc, nsRoot: nsRoot, rootFD: byName["root"], pid: pid, mounts: mountinfo.NewTable(proc)}
		if err := unix.Fchdir(byName["root"]); err != nil {
			return fmt.Errorf("caller's root: %w", err)
		}
		// unix.Getwd asks the kernel; os.Getwd would first trust $PWD,
		// a host path, looked up inside the container's root.
		if env.root, err = unix.Getwd(); err != nil {
			// Covered by a mount on top of it: between a runtime's
			// pivot_root(".", ".") and its umount of the old root, the
			// caller's root has no path from the namespace's root.
			// Paths still resolve from it; only nsPath cannot answer.
			env.root = ""
		}
		if err := unix.Chroot("."); err != nil {
			return fmt.Errorf("chroot to caller's root: %w", err)
		}
		if err := unix.Fchdir(byName["cwd"]); err != nil {
			return fmt.Errorf("caller's cwd: %w", err)
		}
		if err := dropHostSysAdmin(); err != nil {
			return err
		}
		return fn(env)
	}()
}

// unshareFS gives the thread an fs context of its own, as setns of a mount
// namespace requires. It is done on every operation, never remembered: once
// the thread is unlocked, Go may clone new threads from it with CLONE_FS,
// sharing the context again (remembering it crashed sysvisord in the race
// tests: setns failed, then so did the way back).
func unshareFS() error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare fs: %w", err)
	}
	return nil
}

// joins are the namespaces of an nsSet: the caller's file under
// /proc/<pid>, setns's flag, and the fd of sysvisord's own in home.
var joins = []struct {
	set  nsSet
	file string
	flag int
	home *int
}{
	{joinNet, "ns/net", unix.CLONE_NEWNET, &home.net},
	{joinIPC, "ns/ipc", unix.CLONE_NEWIPC, &home.ipc},
	// The caller's active pid namespace (ns/pid), not its pid_for_children:
	// /proc/sys/kernel/pid_max is looked up in the active one.
	{joinPID, "ns/pid", unix.CLONE_NEWPID, &home.pid},
}

// home is the state a worker thread returns to: the host's mount, network,
// IPC and pid namespaces and the process's cwd, as fds opened once.
var home struct {
	once                    sync.Once
	mnt, net, ipc, pid, cwd int
	err                     error
}

// goHome undoes what inCallerFS did to the thread: capabilities, mount
// namespace (which also resets root and cwd), cwd, the other namespaces in
// ns. The thread keeps the fs context it unshared, equal to the process's
// again. A pid namespace for children left set would also make Go's next
// clone of a thread from this one fail (CLONE_THREAD across pid namespaces
// is EINVAL), though Go clones none from a locked thread.
func goHome(ns nsSet) error {
	if home.err != nil {
		return home.err
	}
	if err := raiseEffective(); err != nil {
		return err
	}
	if err := unix.Setns(home.mnt, unix.CLONE_NEWNS); err != nil {
		return err
	}
	if err := unix.Fchdir(home.cwd); err != nil {
		return err
	}
	for _, j := range joins {
		if ns&j.set != 0 {
			if err := unix.Setns(*j.home, j.flag); err != nil {
				return fmt.Errorf("back to sysvisord's %s namespace: %w", j.file, err)
			}
		}
	}
	return nil
}

// openHome opens the fds goHome returns to. It must run on a thread that
// is still at home: the first emulated operation calls it before it
// leaves.
func openHome() error {
	home.once.Do(func() {
		open := func(p string, flags int) int {
			fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
			if err != nil && home.err == nil {
				home.err = err
			}
			return fd
		}
		home.mnt = open("/proc/self/ns/mnt", unix.O_RDONLY)
		home.net = open("/proc/self/ns/net", unix.O_RDONLY)
		home.ipc = open("/proc/self/ns/ipc", unix.O_RDONLY)
		home.pid = open("/proc/self/ns/pid", unix.O_RDONLY)
		home.cwd = open(".", unix.O_PATH|unix.O_DIRECTORY)
	})
	return home.err
}

// dropHostSysAdmin removes CAP_SYS_ADMIN from this thread's effective and
// permitted sets. What the thread does from then on is checked against the
// caller's namespaces only: as uid 0, the owner of the container's user
// namespace, it keeps every capability in that namespace and its children
// (mounting, unmounting and remounting there work), but has none over the
// host's own. Without this, a superblock remount (MS_REMOUNT without
// MS_BIND) went through with host privilege on filesystems the container
// does not own, the host's behind its bind mounts: options changed on the
// host, a cgroup v1 hierarchy's release_agent set; and MNT_FORCE reached
// host filesystems' umount_begin. The kernel refuses both to the caller
// itself (EPERM).
func dropHostSysAdmin() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	const bit = 1 << unix.CAP_SYS_ADMIN // < 32: in data[0]
	// Effective only: the kernel checks nothing else, and goHome raises it
	// again before the thread runs other goroutines. Only sysvisord's own
	// code runs on the thread meanwhile.
	data[0].Effective &^= bit
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("drop CAP_SYS_ADMIN: %w", err)
	}
	return nil
}

func raiseEffective() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Effective, data[1].Effective = data[0].Permitted, data[1].Permitted
	return unix.Capset(&hdr, &data[0])
}

// mountOf returns the mount fd lies on and whether fd is that mount's root.
func (c *callerFS) mountOf(fd int) (*mountinfo.Entry, bool, error) {
	id, root, err := mountinfo.IDOf(fd)
	if err != nil {
		return nil, false, err
	}
	if err := c.enterNSRoot(); err != nil {
		return nil, false, err
	}
	e, err := c.mounts.Stat(id)
	if (err == unix.ENOENT || err == nil && e.Mountpoint == "") && !c.mounts.CallersView() {
		// Not reached from the namespace's root: the caller's root is
		// covered (see mountinfo.Table.UseCallersView). Named from the
		// caller's root, as the caller sees it.
		if err := c.enterCallersRoot(); err != nil {
			return nil, false, err
		}
		e, err = c.mounts.Stat(id)
	}
	if err != nil {
		return nil, false, fmt.Errorf("statmount %d: %w", id, err)
	}
	return &e, root, nil
}

// enterCallersRoot moves the thread's root to the caller's, for good: no
// path of the caller's is opened after that either.
func (c *callerFS) enterCallersRoot() error {
	if err := unix.Fchdir(c.rootFD); err != nil {
		return fmt.Errorf("caller's root: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot to caller's root: %w", err)
	}
	c.atNSRoot = true
	c.mounts.UseCallersView()
	return nil
}

func (c *callerFS) stat(id uint64) (*mountinfo.Entry, error) {
	if err := c.enterNSRoot(); err != nil {
		return nil, err
	}
	e, err := c.mounts.Stat(id)
	if err != nil {
		return nil, fmt.Errorf("statmount %d: %w", id, err)
	}
	return &e, nil
}

// parentOf returns m's parent, or nil for the namespace's root mount and
// for a parent the thread's root does not reach.
func (c *callerFS) parentOf(m *mountinfo.Entry) *mountinfo.Entry {
	if m.Parent == m.ID {
		return nil
	}
	p, err := c.stat(uint64(m.Parent))
	if err != nil || p.Mountpoint == "" {
		return nil
	}
	return p
}

// childrenOf returns the mounts directly on top of m.
func (c *callerFS) childrenOf(m *mountinfo.Entry) ([]mountinfo.Entry, error) {
	if err := c.enterNSRoot(); err != nil {
		return nil, err
	}
	kids, err := c.mounts.Children(uint64(m.ID))
	if err != nil {
		return nil, fmt.Errorf("listmount %d: %w", m.ID, err)
	}
	return kids, nil
}

// lookDown returns the mount stacked highest on m's root: what the kernel's
// umount acts on (LOOKUP_MOUNTPOINT) where a path ends on a covered mount
// root, as "." does in the cwd a runtime just pivot_root'ed into.
//
// It also returns that mount's children, which the caller needs next.
func (c *callerFS) lookDown(m *mountinfo.Entry) (*mountinfo.Entry, []mountinfo.Entry, error) {
	for depth := 0; depth < 1000; depth++ {
		kids, err := c.childrenOf(m)
		if err != nil {
			return nil, nil, err
		}
		var top *mountinfo.Entry
		for i := range kids {
			if kids[i].Mountpoint == m.Mountpoint {
				top = &kids[i]
			}
		}
		if top == nil {
			return m, kids, nil
		}
		m = top
	}
	return nil, nil, unix.ELOOP
}

// protected reports whether m is one of the container's protected mounts.
func (c *callerFS) protected(m *mountinfo.Entry, isProtected func(string) bool) bool {
	p := c.parentOf(m)
	if p == nil {
		return c.unknownParent(m)
	}
	return isProtected(sigOf(m, p))
}

// unknownParent: m's parent cannot be seen, so neither can its signature.
// Only in the caller's view (mountinfo.Table.Resolve) is that a mount other
// than the namespace's root: the caller's own root mount, which the caller
// chose (it may have chrooted into a protected mount). It counts as
// protected; a runtime between pivot_root and its umount of the old root
// never needs to unmount or move it.
func (c *callerFS) unknownParent(m *mountinfo.Entry) bool {
	return c.mounts.CallersView() && m.Parent != m.ID
}

// hostProc is sysvisord's own /proc, opened once and kept: the host's pid
// namespace never changes under it, and every worker resolves callers'
// files and its own fds through it. -1 if it cannot be opened.
var hostProc = sync.OnceValue(func() int {
	fd, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
})
