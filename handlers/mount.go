package handlers

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/supervisor/notify"
	"github.com/sysvisor/sysvisor/supervisor/rawfile"
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

const propagationFlags = unix.MS_SHARED | unix.MS_PRIVATE | unix.MS_SLAVE | unix.MS_UNBINDABLE

// attrFlags are the per-mount flags mount(2) takes for a new mount.
var attrFlags = []struct {
	ms   uintptr
	attr uint64
}{
	{unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY},
	{unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID},
	{unix.MS_NODEV, unix.MOUNT_ATTR_NODEV},
	{unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC},
	{unix.MS_NOATIME, unix.MOUNT_ATTR_NOATIME},
	{unix.MS_STRICTATIME, unix.MOUNT_ATTR_STRICTATIME},
	{unix.MS_NODIRATIME, unix.MOUNT_ATTR_NODIRATIME},
}

func mountAttrs(flags uintptr) int {
	var a uint64
	for _, f := range attrFlags {
		if flags&f.ms != 0 {
			a |= f.attr
		}
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
		fstype, err := req.ReadString(req.Arg(2), pathMax)
		if err != nil {
			return errnoOf(err)
		}
		if fstype != "proc" && fstype != "sysfs" {
			return Allow()
		}
		if r, ok := mayMount(req); !ok {
			return r
		}
		data := ""
		if req.Arg(4) != 0 {
			if data, err = req.ReadString(req.Arg(4), dataMax); err != nil {
				return errnoOf(err)
			}
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
	var source, data string
	if flags&(unix.MS_BIND|unix.MS_MOVE) != 0 && flags&unix.MS_REMOUNT == 0 {
		if source, err = req.ReadString(req.Arg(0), pathMax); err != nil {
			return errnoOf(err)
		}
	}
	if flags&unix.MS_REMOUNT != 0 && req.Arg(4) != 0 {
		if data, err = req.ReadString(req.Arg(4), dataMax); err != nil {
			return errnoOf(err)
		}
	}
	c := req.Container
	err = inCallerFS(req, false, nil, func(fs *callerFS) error {
		tfd, err := fs.open(target, unix.O_PATH)
		if err != nil {
			return err
		}
		defer unix.Close(tfd)
		switch {
		case flags&unix.MS_REMOUNT != 0:
			m, root, err := fs.mountOf(tfd)
			if err != nil {
				return err
			}
			if !root {
				return unix.EINVAL
			}
			if flags&unix.MS_RDONLY == 0 && m.ReadOnly() && fs.protected(m, c.Protected) {
				return unix.EPERM
			}
			return fs.act(req, func() error { return unix.Mount("", fdPath(tfd), "", flags, data) })
		case flags&unix.MS_BIND != 0:
			sfd, err := fs.open(source, unix.O_PATH)
			if err != nil {
				return err
			}
			defer unix.Close(sfd)
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
			return fs.act(req, func() error { return unix.Mount(fdPath(sfd), fdPath(tfd), "", flags, "") })
		default: // MS_MOVE
			sfd, err := fs.open(source, unix.O_PATH)
			if err != nil {
				return err
			}
			defer unix.Close(sfd)
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
	return Return(0)
}

// act runs op from the host's /proc (so self/fd paths resolve) once the
// caller is known to be still waiting.
func (fs *callerFS) act(req *Request, op func() error) error {
	if !req.Valid() {
		return notify.ErrGone
	}
	if err := unix.Fchdir(fs.proc); err != nil {
		return err
	}
	return op()
}

func (umountHandler) Handle(req *Request) Response {
	flags := int(req.Arg(1))
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
	err = inCallerFS(req, false, nil, func(fs *callerFS) error {
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
		// Opened now, while paths still resolve in the caller's root.
		pfd, name := -1, ""
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
			var st unix.Stat_t
			if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
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
		if fs.protected(m, c.Protected) {
			if (m.FSType == "proc" || m.FSType == "sysfs") && m.Root == "/" {
				return unix.EBUSY // /proc and /sys themselves, as Sysbox answers
			}
			return unix.EPERM
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
		return fs.act(req, func() error {
			return unix.Unmount(fdPath(pfd)+"/"+name, flags|unix.UMOUNT_NOFOLLOW)
		})
	})
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
	ok, err := hasMountCap(req.Pid())
	if err != nil {
		req.Log.Debug("mount permission check failed", "error", err)
		return Fail(unix.EPERM), false
	}
	if !ok {
		return Fail(unix.EPERM), false
	}
	return Response{}, true
}

func hasMountCap(pid int) (bool, error) {
	b, err := rawfile.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, err
	}
	var capEff uint64
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &capEff); err != nil {
				return false, err
			}
			found = true
		}
	}
	if !found || capEff&(1<<unix.CAP_SYS_ADMIN) == 0 {
		return false, nil
	}
	// The capability counts over the caller's user namespace only: that
	// must own the mount namespace the caller would change.
	mnt, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return false, err
	}
	defer mnt.Close()
	owner, err := unix.IoctlRetInt(int(mnt.Fd()), unix.NS_GET_USERNS)
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
