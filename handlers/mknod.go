package handlers

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mknodHandler serves mknod(2) and mknodat(2). The kernel lets only the
// host's CAP_MKNOD create device nodes, so a container's root gets EPERM
// for any of them. Tools that build a /dev (debootstrap, MAKEDEV, image
// builds, init scripts) need a handful of harmless ones: for those the
// supervisor binds the host's node over an empty file it creates where
// the caller asked. Every other device stays refused, and what is not a
// device (FIFOs, sockets, regular files) goes to the kernel.
type mknodHandler struct{ at bool }

// allowedDevices are the character devices a container may create, with the
// host node bound in their place. They are safe to share: each reaches
// only the opener's own state (its terminal, its network namespace's tun
// devices, FUSE mounts in its namespaces) or no state at all, and the
// container's devices cgroup still decides who may open them. /dev/console
// is not here: the host's is the host's console.
var allowedDevices = map[[2]uint32]string{
	{1, 3}: "/dev/null", {1, 5}: "/dev/zero", {1, 7}: "/dev/full", {1, 8}: "/dev/random",
	{1, 9}: "/dev/urandom", {5, 0}: "/dev/tty", {10, 200}: "/dev/net/tun", {10, 229}: "/dev/fuse",
}

func (h mknodHandler) Handle(req *Request) Response {
	i := 0
	dirfd := int32(unix.AT_FDCWD)
	if h.at {
		dirfd, i = int32(req.Arg(0)), 1
	}
	mode := uint32(req.Arg(i + 1))
	dev := uint32(req.Arg(i + 2)) // the kernel takes an unsigned int
	typ := mode & unix.S_IFMT
	if typ != unix.S_IFCHR && typ != unix.S_IFBLK {
		// Not a device: the kernel's own rules are the right ones (a
		// racing thread that turns this into a device meets its CAP_MKNOD
		// check).
		return Allow()
	}
	if typ == unix.S_IFCHR && dev == 0 {
		// An overlay whiteout: the kernel allows it in a user namespace
		// where the filesystem does.
		return Allow()
	}
	path, err := req.ReadString(req.Arg(i), pathMax)
	if err != nil {
		return errnoOf(err)
	}
	if path == "" {
		// As the kernel's getname: an empty path names nothing.
		return Fail(unix.ENOENT)
	}
	src, ok := allowedDevices[[2]uint32{unix.Major(uint64(dev)), unix.Minor(uint64(dev))}]
	if typ != unix.S_IFCHR || !ok || !req.Option("devices") {
		return Fail(unix.EPERM)
	}
	if ok, err := hasCap(req, unix.CAP_MKNOD); err != nil || !ok {
		return Fail(unix.EPERM)
	}
	if dirfd != unix.AT_FDCWD && !strings.HasPrefix(path, "/") {
		// The caller's fd, taken from its table through the host's /proc.
		path = fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, path)
	}
	creds, err := fsCreds(req)
	if err != nil {
		return errnoOf(err)
	}
	dfd := -1
	defer func() {
		if dfd >= 0 {
			unix.Close(dfd)
		}
	}()
	clone := func() error {
		// In the host's mount namespace: the host's node, nothing the
		// container can name.
		dfd, err = unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return fmt.Errorf("clone %s: %w", src, err)
		}
		return nil
	}
	err = inCallerFS(req, 0, clone, func(fs *callerFS) error {
		dir, name := splitLast(path)
		if name == "" || name == "." || name == ".." {
			return unix.EEXIST
		}
		pfd, err := fs.open(dir, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(pfd)
		// Created as the caller: its fs IDs (which drops this thread's
		// file capabilities), its umask, the kernel's checks on the
		// directory (permissions, read-only mounts, an existing name).
		nfd, err := creds.create(pfd, name, mode&0o7777)
		if err != nil {
			return err
		}
		defer unix.Close(nfd)
		return unix.MoveMount(dfd, "", nfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	})
	req.Log.Debug("emulated mknod", "path", path, "device", src, "error", err)
	if err != nil {
		return errnoOf(err)
	}
	return Return(0)
}

// callerCreds are the IDs and umask a file is created with on the caller's
// behalf.
type callerCreds struct {
	fsuid, fsgid int
	umask        uint32
}

func fsCreds(req *Request) (callerCreds, error) {
	var c callerCreds
	field := func(name string, i int) (int, error) {
		v, err := req.StatusField(name)
		if err != nil {
			return 0, err
		}
		f := strings.Fields(v)
		if len(f) <= i {
			return 0, fmt.Errorf("status %s: %q", name, v)
		}
		return strconv.Atoi(f[i])
	}
	var err error
	if c.fsuid, err = field("Uid", 3); err != nil {
		return c, err
	}
	if c.fsgid, err = field("Gid", 3); err != nil {
		return c, err
	}
	v, err := req.StatusField("Umask")
	if err != nil {
		return c, err
	}
	u, err := strconv.ParseUint(v, 8, 32)
	if err != nil {
		return c, fmt.Errorf("status Umask %q: %w", v, err)
	}
	c.umask = uint32(u)
	return c, nil
}

// create makes an empty file name in dir as the caller would: with its fs
// IDs on this thread only (goHome puts them back), and its umask. The
// directory's default ACLs are not applied.
func (c callerCreds) create(dir int, name string, perm uint32) (int, error) {
	if err := unix.Setfsgid(c.fsgid); err != nil {
		return -1, err
	}
	if err := unix.Setfsuid(c.fsuid); err != nil {
		return -1, err
	}
	defer func() {
		unix.Setfsuid(0)
		unix.Setfsgid(0)
	}()
	return unix.Openat(dir, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm&^c.umask)
}
