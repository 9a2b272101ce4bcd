package handlers

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/mountinfo"
	"github.com/sysvisor/sysvisor/linux/notify"
)

// Mount emulation. The rules, in the kernel's own order of mount(2) cases:
//
//   - remount (with or without MS_BIND): performed here on the resolved
//     mount; a protected mount that is read-only stays read-only (EPERM).
//   - bind: performed here on resolved fds; a non-recursive bind of a mount
//     with protected children is refused (EINVAL), as the kernel refuses it
//     for locked children, since it would show what they hide.
//   - propagation changes: the kernel's (CONTINUE).
//   - move: performed here; a protected mount cannot move (EPERM).
//   - new procfs and sysfs: built here with the container's masks and
//     read-only paths applied before the tree is attached (the kernel refuses
//     them in a user namespace whose /proc has masks); the masks join the
//     protected set.
//   - any other new mount (tmpfs, overlay, devpts, mqueue, cgroup, ...): the
//     kernel's (CONTINUE), under its user-namespace rules. A new mount only
//     covers what is below it; it cannot reveal anything.
//
// Everything performed here acts on fds resolved once in the caller's root
// and cwd, with arguments copied once, after re-validating the notification.
// CONTINUE is only used where a racing rewrite of the arguments gains the
// caller nothing the kernel would not give it anyway.
//
// The new mount API (fsopen, fspick, open_tree, move_mount, mount_setattr)
// fails with ENOSYS: callers (libmount, systemd, runc) fall back to mount(2),
// which is checked; fsconfig and fsmount need an fd from fsopen/fspick.

// pathMax bounds strings copied from the caller (PATH_MAX without the NUL).
const pathMax = 4095

// dataMax bounds mount data copied from the caller (one page, as the kernel).
const dataMax = 4095

type mountHandler struct{}

type umountHandler struct{}

type enosysHandler struct{}

func (enosysHandler) Handle(*Request) Response { return Fail(unix.ENOSYS) }

func (enosysHandler) Inline() {}

const propagationFlags = unix.MS_SHARED | unix.MS_PRIVATE | unix.MS_SLAVE | unix.MS_UNBINDABLE

// attrFlags are the per-mount flags mount(2) takes for a new mount, but
// the atime mode (see mountAttrs).
var attrFlags = []struct {
	ms   uintptr
	attr uint64
}{
	{unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY},
	{unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID},
	{unix.MS_NODEV, unix.MOUNT_ATTR_NODEV},
	{unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC},
	{unix.MS_NODIRATIME, unix.MOUNT_ATTR_NODIRATIME},
	{unix.MS_NOSYMFOLLOW, unix.MOUNT_ATTR_NOSYMFOLLOW},
}

// mountAttrs translates mount(2) flags as path_mount does. The atime mode is
// one value in fsmount's attributes, which refuses two (EINVAL), where
// mount(2) lets strictatime override noatime.
func mountAttrs(flags uintptr) int {
	var a uint64
	for _, f := range attrFlags {
		if flags&f.ms != 0 {
			a |= f.attr
		}
	}
	switch {
	case flags&unix.MS_STRICTATIME != 0:
		a |= unix.MOUNT_ATTR_STRICTATIME
	case flags&unix.MS_NOATIME != 0:
		a |= unix.MOUNT_ATTR_NOATIME
	}
	return int(a)
}

// errnoOf maps an error to what the caller should see.
func errnoOf(err error) Response {
	var e unix.Errno
	if errors.As(err, &e) {
		return Fail(e)
	}
	if errors.Is(err, notify.ErrGone) {
		return Fail(unix.EINTR) // nobody is waiting for the answer
	}
	return Fail(unix.EPERM)
}

func (mountHandler) Handle(req *Request) Response {
	flags := uintptr(req.Arg(3))
	if flags&unix.MS_MGC_MSK == unix.MS_MGC_VAL {
		flags &^= unix.MS_MGC_MSK // pre-2.4 magic, ignored as the kernel does
	}
	// Every argument is copied, in the kernel's order and by its rules,
	// whatever the operation uses: a bad pointer fails the call as it
	// would without emulation.
	fstype, err := readMountString(req, req.Arg(2))
	if err != nil {
		return errnoOf(err)
	}
	source, err := readMountString(req, req.Arg(0))
	if err != nil {
		return errnoOf(err)
	}
	data, err := readMountData(req, req.Arg(4))
	if err != nil {
		return errnoOf(err)
	}
	target, err := req.ReadString(req.Arg(1), pathMax)
	if err != nil {
		return errnoOf(err)
	}
	log := req.Log.With("target", target, "flags", fmt.Sprintf("%#x", flags))
	switch {
	case flags&(unix.MS_REMOUNT|unix.MS_BIND) != 0 || flags&propagationFlags == 0 && flags&unix.MS_MOVE != 0:
		// handled below
	case flags&propagationFlags != 0:
		return Allow()
	default:
		if stubFS[fstype] && req.Option("stubs") {
			if r, ok := mayMount(req); !ok {
				return r
			}
			err = newStub(req, fstype, target)
			log.Debug("emulated mount", "fstype", fstype, "stub", true, "error", err)
			if err != nil {
				return errnoOf(err)
			}
			return Return(0)
		}
		if fstype != "proc" && fstype != "sysfs" {
			return Allow()
		}
		opt := "procfs"
		if fstype == "sysfs" {
			opt = "sysfs"
		}
		if !req.Option(opt) {
			// The policy turned this emulation off: the kernel decides.
			return Allow()
		}
		if r, ok := mayMount(req); !ok {
			return r
		}
		err = newKernelFS(req, fstype, target, flags, data)
		log.Debug("emulated mount", "fstype", fstype, "error", err)
		if err != nil {
			return errnoOf(err)
		}
		return Return(0)
	}
	if r, ok := mayMount(req); !ok {
		return r
	}
	if flags&(unix.MS_BIND|unix.MS_MOVE) != 0 && flags&unix.MS_REMOUNT == 0 && source == "" {
		return Fail(unix.EINVAL) // as the kernel answers a NULL or empty source
	}
	c := req.Container
	var newLocks []string
	err = inSysctlNS(req, func(fs *callerFS, ns nsSet) error {
		tfd, err := fs.open(target, unix.O_PATH)
		if err != nil {
			return err
		}
		defer unix.Close(tfd)
		if err := fs.needNS(tfd, ns); err != nil {
			return err
		}
		switch {
		case flags&unix.MS_REMOUNT != 0:
			m, root, err := fs.mountOf(tfd)
			if err != nil {
				return err
			}
			if !root {
				return unix.EINVAL
			}
			if fs.locked(m, c) && loosens(m, flags) {
				return unix.EPERM
			}
			return fs.act(req, func() error { return unix.Mount("", fdPath(tfd), "", flags, data) })
		case flags&unix.MS_BIND != 0:
			sfd, err := fs.open(source, unix.O_PATH)
			if err != nil {
				return err
			}
			defer unix.Close(sfd)
			if err := fs.needNS(sfd, ns); err != nil {
				return err
			}
			var sst unix.Statfs_t
			if unix.Fstatfs(sfd, &sst) == nil && sst.Type == unix.NSFS_MAGIC {
				// A namespace file (`ip netns add`, an engine's netns
				// pinning): its mount is the kernel's internal one, in
				// no namespace, with nothing below it to protect.
				return fs.act(req, func() error { return unix.Mount(fdPath(sfd), fdPath(tfd), "", flags, "") })
			}
			if flags&unix.MS_REC == 0 {
				m, _, err := fs.mountOf(sfd)
				if err != nil {
					return err
				}
				dir, err := fs.nsPath(sfd)
				if err != nil {
					return unix.EINVAL
				}
				kids, err := fs.childrenOf(m)
				if err != nil {
					return err
				}
				if hasProtectedBelow(m, kids, dir, c.Protected) {
					return unix.EINVAL
				}
			}
			sm, _, err := fs.mountOf(sfd)
			if err != nil {
				return err
			}
			copyLocked := fs.locked(sm, c)
			if err := fs.act(req, func() error { return unix.Mount(fdPath(sfd), fdPath(tfd), "", flags, "") }); err != nil {
				return err
			}
			// A copy of a protected mount keeps its flags: it may go
			// away, but not become writable or suid. Its superblock and
			// root lie within the protected one's, which locks it
			// (lockCovers) with no signature of its own: a DinD
			// container's inner containers copy the cgroup and storage
			// mounts every time, and their signatures would pile up (the
			// device numbers in them are reused at once, so the collector
			// seldom finds them dead while the inner containers churn).
			// A copy the rule does not cover gets one, as before.
			if copyLocked {
				if top, err := fs.topEntryAt(tfd); err == nil && !lockCovers(c.ProtectedSigs(), top) {
					newLocks = append(newLocks, lockedPrefix+sigOf(top, fs.parentOf(top)))
				}
			}
			return nil
		default: // MS_MOVE
			sfd, err := fs.open(source, unix.O_PATH)
			if err != nil {
				return err
			}
			defer unix.Close(sfd)
			if err := fs.needNS(sfd, ns); err != nil {
				return err
			}
			m, root, err := fs.mountOf(sfd)
			if err != nil {
				return err
			}
			if !root {
				return unix.EINVAL
			}
			if fs.protected(m, c.Protected) {
				return unix.EPERM
			}
			return fs.act(req, func() error { return unix.Mount(fdPath(sfd), fdPath(tfd), "", flags, "") })
		}
	})
	log.Debug("emulated mount", "source", source, "error", err)
	if err != nil {
		return errnoOf(err)
	}
	// Recorded after the thread is gone: host state is never written from
	// inside the caller's root.
	if len(newLocks) > 0 {
		if err := c.Protect(newLocks); err != nil {
			log.Error("cannot record protected mounts", "error", err)
		}
	}
	return Return(0)
}

// errSysctlNS: a path resolved to a sysctl under a procfs, where the kernel
// looks names up in the looking task's network and IPC namespaces; the
// worker thread, in sysvisord's, found the host's entry rather than the
// caller's (a bind of /proc/sys/net/ipv4/conf would show the host's
// interfaces). The call is done again with the caller's joined.
var errSysctlNS = errors.New("a /proc/sys path, resolved outside the caller's namespaces")

// inSysctlNS runs fn in the caller's mount namespace like inCallerFS, and
// again with its network and IPC namespaces joined if fn asks for them
// (errSysctlNS, from needNS): joining costs two setns and their undoing, and
// only paths under /proc/sys need it. (kernel/pid_max is looked up in the
// task's active pid namespace, which a thread cannot join: it resolves to
// the host's entry, owned by host root and read-only in the container.)
func inSysctlNS(req caller, fn func(fs *callerFS, ns nsSet) error) error {
	err := inCallerFS(req, 0, nil, func(fs *callerFS) error { return fn(fs, 0) })
	if errors.Is(err, errSysctlNS) {
		ns := joinNet | joinIPC
		err = inCallerFS(req, ns, nil, func(fs *callerFS) error { return fn(fs, ns) })
	}
	return err
}

// needNS returns errSysctlNS if fd lies under sys/ of a procfs and ns lacks
// the namespaces such a lookup depends on.
func (fs *callerFS) needNS(fd int, ns nsSet) error {
	if ns&(joinNet|joinIPC) == joinNet|joinIPC {
		return nil
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return err
	}
	if st.Type != unix.PROC_SUPER_MAGIC {
		return nil
	}
	// The mount's point and fd's path, both as the thread sees them now:
	// going through fs.mountOf would move the thread to the namespace's
	// root, after which the caller's paths no longer resolve as they must.
	// Where the path cannot be told, the joined retry is the safe side.
	id, _, err := mountinfo.IDOf(fd)
	if err != nil {
		return errSysctlNS
	}
	m, err := fs.mounts.Stat(id)
	if err != nil {
		return errSysctlNS
	}
	p, err := fs.threadPath(fd)
	if err != nil {
		return errSysctlNS
	}
	if mayBeSysctl(&m, p) {
		return errSysctlNS
	}
	return nil
}

// mayBeSysctl reports whether p, a path from the thread's root on the
// procfs mount m, may lie under that procfs's sys/: where p is not below
// m's mount point the answer is yes, the safe side.
func mayBeSysctl(m *mountinfo.Entry, p string) bool {
	if m.Mountpoint != "/" && p != m.Mountpoint && !strings.HasPrefix(p, m.Mountpoint+"/") {
		return true
	}
	rel := path.Join(m.Root, strings.TrimPrefix(p, m.Mountpoint))
	return rel == "/sys" || strings.HasPrefix(rel, "/sys/")
}

// lockedPrefix marks a signature whose mount may be unmounted or moved but
// keeps its flags: a bind copy of a protected mount.
const lockedPrefix = "flags:"

// locked reports whether m's flags may not be loosened: a protected mount,
// or a bind copy of one (by its own signature, or lying within one).
func (fs *callerFS) locked(m *mountinfo.Entry, c Container) bool {
	if lockCovers(c.ProtectedSigs(), m) {
		return true
	}
	p := fs.parentOf(m)
	if p == nil {
		return fs.unknownParent(m)
	}
	sig := sigOf(m, p)
	return c.Protected(sig) || c.Protected(lockedPrefix+sig)
}

// loosens reports whether a remount with flags would clear read-only,
// nosuid, nodev or noexec where m has them.
func loosens(m *mountinfo.Entry, flags uintptr) bool {
	for _, f := range []struct {
		opt string
		ms  uintptr
	}{{"ro", unix.MS_RDONLY}, {"nosuid", unix.MS_NOSUID}, {"nodev", unix.MS_NODEV}, {"noexec", unix.MS_NOEXEC}} {
		if m.HasOpt(f.opt) && flags&f.ms == 0 {
			return true
		}
	}
	return false
}

// topEntryAt returns the topmost mount on fd's dentry: the one a mount
// call just put there.
func (fs *callerFS) topEntryAt(fd int) (*mountinfo.Entry, error) {
	under, _, err := fs.mountOf(fd)
	if err != nil {
		return nil, err
	}
	at, err := fs.nsPath(fd)
	if err != nil {
		return nil, err
	}
	cur := under
	for {
		kids, err := fs.childrenOf(cur)
		if err != nil {
			return nil, err
		}
		var next *mountinfo.Entry
		for i := range kids {
			if kids[i].Mountpoint == at {
				next = &kids[i]
			}
		}
		if next == nil {
			break
		}
		cur = next
	}
	if cur == under {
		return nil, errors.New("no mount on top")
	}
	return cur, nil
}

// readMountString copies a mount(2) fstype or source as the kernel does
// (strndup_user with PATH_MAX): NULL is absent (""), a fault is EFAULT, a
// string without a NUL in its first PATH_MAX bytes EINVAL.
func readMountString(req *Request, addr uint64) (string, error) {
	if addr == 0 {
		return "", nil
	}
	s, err := req.ReadString(addr, pathMax)
	if errors.Is(err, unix.ENAMETOOLONG) {
		return "", unix.EINVAL
	}
	return s, err
}

// readMountData copies mount(2) data as the kernel does
// (copy_mount_options, then path_mount's termination): up to a page, as
// much of it as is readable, EFAULT only if nothing is; the string ends at
// the first NUL or the page's last byte.
func readMountData(req *Request, addr uint64) (string, error) {
	if addr == 0 {
		return "", nil
	}
	maps, err := req.mapsFd()
	if err != nil {
		return "", err
	}
	mem, err := req.memFd(unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	const page = 4096
	buf := make([]byte, page)
	got := 0
	for a := addr; got < page; {
		n := min(page-int(a%page), page-got)
		if !accessible(maps, a, uint64(n), readAccess) {
			break
		}
		if k, err := unix.Pread(mem, buf[got:got+n], int64(a)); err != nil || k != n {
			break
		}
		got += n
		if bytes.IndexByte(buf[got-n:got], 0) >= 0 {
			break
		}
		a += uint64(n)
	}
	if got == 0 {
		return "", unix.EFAULT
	}
	b := buf[:min(got, dataMax)]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if !req.Valid() {
		return "", notify.ErrGone
	}
	return string(b), nil
}

// act runs op from the host's /proc (so self/fd paths resolve) once the
// caller is known to be still waiting.
func (fs *callerFS) act(req caller, op func() error) error {
	if !req.Valid() {
		return notify.ErrGone
	}
	if a, ok := req.(interface{ Acting() }); ok {
		a.Acting()
	}
	if err := unix.Fchdir(fs.proc); err != nil {
		return err
	}
	fs.mounts.Invalidate() // op changes the mounts
	return op()
}

func (umountHandler) Handle(req *Request) Response {
	// umount2 takes an int: the kernel ignores the register's upper half.
	flags := int(int32(req.Arg(1)))
	if flags&^(unix.MNT_FORCE|unix.MNT_DETACH|unix.MNT_EXPIRE|unix.UMOUNT_NOFOLLOW) != 0 {
		return Fail(unix.EINVAL)
	}
	target, err := req.ReadString(req.Arg(0), pathMax)
	if err != nil {
		return errnoOf(err)
	}
	if r, ok := mayMount(req); !ok {
		return r
	}
	c := req.Container
	err = inSysctlNS(req, func(fs *callerFS, ns nsSet) error {
		open := unix.O_PATH
		if flags&unix.UMOUNT_NOFOLLOW != 0 {
			open |= unix.O_NOFOLLOW
		}
		tfd, err := fs.open(target, open)
		if err != nil {
			return err
		}
		defer func() {
			if tfd >= 0 {
				unix.Close(tfd)
			}
		}()
		if err := fs.needNS(tfd, ns); err != nil {
			return err
		}
		// Opened now, while paths still resolve in the caller's root.
		pfd, name := -1, ""
		var st unix.Statx_t // of name in pfd
		statName := func(st *unix.Statx_t) error {
			return unix.Statx(pfd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE|mountinfo.IDMask(), st)
		}
		if flags&unix.MNT_DETACH == 0 {
			var dir string
			dir, name = splitLast(target)
			if name == "" || name == "." || name == ".." {
				return unix.EINVAL
			}
			if pfd, err = fs.open(dir, unix.O_PATH|unix.O_DIRECTORY); err != nil {
				return err
			}
			defer unix.Close(pfd)
			if err := statName(&st); err != nil {
				return err
			}
			if st.Mode&unix.S_IFMT == unix.S_IFLNK && flags&unix.UMOUNT_NOFOLLOW == 0 {
				// Following it again would be a second resolution.
				return unix.EINVAL
			}
		}
		m, root, err := fs.mountOf(tfd)
		if err != nil {
			return err
		}
		if !root {
			return unix.EINVAL
		}
		m, kids, err := fs.lookDown(m)
		if err != nil {
			return err
		}
		if fs.protected(m, c.Protected) {
			if (m.FSType == "proc" || m.FSType == "sysfs") && m.Root == "/" {
				return unix.EBUSY // /proc and /sys themselves, as Sysbox answers
			}
			return unix.EPERM
		}
		if flags&unix.MNT_DETACH == 0 {
			// A procfs or sysfs sysvisord mounted carries masks, which
			// would make a plain umount fail with EBUSY where the caller
			// expects none: it goes with its masks, all at once.
			onlyMasks := len(kids) > 0
			for i := range kids {
				onlyMasks = onlyMasks && c.Protected(sigOf(&kids[i], m))
			}
			if onlyMasks {
				flags |= unix.MNT_DETACH
			}
		}
		if flags&unix.MNT_DETACH != 0 {
			// Lazy: our fd's reference does not matter, and the
			// magic link names exactly the mount checked.
			return fs.act(req, func() error { return unix.Unmount(fdPath(tfd), flags&^unix.UMOUNT_NOFOLLOW) })
		}
		// A plain umount fails while anyone (our fd too) holds the mount,
		// so it goes by name from the pinned parent directory. Whatever is
		// stacked at that point is checked: were the top popped meanwhile,
		// the kernel would unmount the next one down.
		unix.Close(tfd)
		tfd = -1
		// dir was resolved a second time: a symlink on the way, swapped
		// in between, leads elsewhere (to /proc, with "sys" as name).
		// Only where the mount checked is on top may name be unmounted.
		if st.Mnt_id != uint64(m.ID) || st.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
			return unix.EINVAL
		}
		for cur := m; ; {
			p := fs.parentOf(cur)
			if p == nil || p.Mountpoint != cur.Mountpoint {
				break
			}
			if fs.protected(p, c.Protected) {
				return unix.EPERM
			}
			cur = p
		}
		unmount := func() error { return unix.Unmount(fdPath(pfd)+"/"+name, flags|unix.UMOUNT_NOFOLLOW) }
		return fs.act(req, func() error {
			err := unmount()
			// The first umount of a fresh mount under load now and then
			// meets a reference held for an instant: no process held
			// the mount (fd, cwd or root) when looked at right after
			// (TestRestart100, about once in 300 container starts). The
			// caller could only call again; it gets a few tries here,
			// each only while the mount checked is still the one on top.
			for wait := time.Millisecond; errors.Is(err, unix.EBUSY) && wait <= 16*time.Millisecond; wait *= 2 {
				time.Sleep(wait)
				var now unix.Statx_t
				if statName(&now) != nil || now.Mnt_id != st.Mnt_id || now.Attributes&unix.STATX_ATTR_MOUNT_ROOT == 0 {
					break
				}
				err = unmount()
				req.Log.Debug("umount retried after EBUSY", "target", target, "after", wait, "error", err)
			}
			return err
		})
	})
	if errors.Is(err, unix.EINVAL) && req.Replayed() {
		// The previous sysvisord unmounted it and died before
		// answering: the caller's umount did succeed.
		req.Log.Info("umount replayed (after a restart of sysvisord, or restarted by the kernel after a lost answer) found nothing mounted: answered as done", "target", target)
		return Return(0)
	}
	req.Log.Debug("emulated umount", "target", target, "flags", flags, "error", err)
	if err != nil {
		return errnoOf(err)
	}
	return Return(0)
}

// splitLast splits p into the directory to open and its last component,
// ignoring trailing slashes ("/a/b/" is "/a" and "b").
func splitLast(p string) (string, string) {
	p = strings.TrimRight(p, "/")
	i := strings.LastIndexByte(p, '/')
	switch {
	case p == "":
		return "/", ""
	case i < 0:
		return ".", p
	case i == 0:
		return "/", p[1:]
	}
	return p[:i], p[i+1:]
}

// mayMount checks the caller's own right to mount: effective CAP_SYS_ADMIN
// in the user namespace that owns its mount namespace. The supervisor acts
// as host root, so without this an unprivileged user in the container would
// get what the kernel refuses it.
func mayMount(req *Request) (Response, bool) {
	ok, err := hasMountCap(req)
	if err != nil {
		req.Log.Debug("mount permission check failed", "error", err)
		return Fail(unix.EPERM), false
	}
	if !ok {
		return Fail(unix.EPERM), false
	}
	return Response{}, true
}

func hasMountCap(req *Request) (bool, error) { return hasCap(req, unix.CAP_SYS_ADMIN) }

// hasCap reports whether the caller has capability c effective in the user
// namespace that owns its mount namespace: the one whose files and mounts
// an emulated call changes.
func hasCap(req *Request, c uint) (bool, error) {
	pid := req.Pid()
	// capget of another thread: its effective set, without rendering its
	// whole /proc status. A pid reused since the trap would answer for
	// another process; the notification is re-checked before anything is
	// done.
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3, Pid: int32(pid)}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false, fmt.Errorf("capget %d: %w", pid, err)
	}
	capEff := uint64(data[0].Effective) | uint64(data[1].Effective)<<32
	if capEff&(1<<c) == 0 {
		return false, nil
	}
	// The capability counts over the caller's user namespace only: that
	// must own the mount namespace the caller would change.
	mnt, err := req.MntNS()
	if err != nil {
		return false, err
	}
	owner, err := unix.IoctlRetInt(mnt, unix.NS_GET_USERNS)
	if err != nil {
		return false, fmt.Errorf("owner of mount namespace: %w", err)
	}
	defer unix.Close(owner)
	var ownerSt, userSt unix.Stat_t
	if err := unix.Fstat(owner, &ownerSt); err != nil {
		return false, err
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/user", pid), &userSt); err != nil {
		return false, err
	}
	return ownerSt.Ino == userSt.Ino && ownerSt.Dev == userSt.Dev, nil
}
