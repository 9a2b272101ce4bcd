package runtime

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/mountinfo"
)

// UsernsFd returns an fd of a user namespace mapping 0..size-1 to base.., for
// MOUNT_ATTR_IDMAP. The placeholder process is gone when this returns.
//
// The placeholder is a raw clone(CLONE_NEWUSER) that only ever pauses:
// nothing but raw syscalls runs in it, so the Go runtime's state in the
// copy never matters, and no exec is paid (re-executing this binary cost a
// tenth of a container start).
func UsernsFd(base, size uint32) (int, error) {
	pid, err := pausedInNewUserns()
	if err != nil {
		return -1, fmt.Errorf("create user namespace: %w", err)
	}
	defer func() {
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		for {
			if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
				break
			}
		}
	}()
	m := fmt.Sprintf("0 %d %d\n", base, size)
	for _, f := range []struct{ name, data string }{
		{"uid_map", m}, {"setgroups", "deny"}, {"gid_map", m},
	} {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", pid, f.name), []byte(f.data), 0); err != nil {
			return -1, fmt.Errorf("user namespace %s: %w", f.name, err)
		}
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/user", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open user namespace: %w", err)
	}
	return fd, nil
}

//go:norace
func pausedInNewUserns() (int, error) {
	pid, _, errno := unix.RawSyscall6(unix.SYS_CLONE, unix.CLONE_NEWUSER|uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if errno != 0 {
		return -1, errno
	}
	if pid == 0 {
		for {
			unix.RawSyscall(unix.SYS_PAUSE, 0, 0, 0)
		}
	}
	return int(pid), nil
}

// idmapClone attaches an idmapped copy of src at dst (created as a file or
// directory to match src).
//
// The clone would otherwise be a peer of its source: mounts made on the host
// under src would appear in it, and unmounting inside it would propagate back
// and take the host's mounts away (it did: our bind over the engine's rootfs
// path vanished when the layer clones were detached). propagation is
// MS_PRIVATE for clones only sysvisor uses, MS_SLAVE for bind sources, which
// keeps host-to-container propagation the way Docker's default rslave does.
func idmapClone(src, dst string, usernsFd int, recursive bool, propagation uint64) error {
	return idmapCloneAtime(src, dst, usernsFd, recursive, propagation, 0, false)
}

// idmapCloneAtime is idmapClone that also gives the clone the atime mode
// atime (MOUNT_ATTR_* as bindAtime returns it) when setAtime is true.
func idmapCloneAtime(src, dst string, usernsFd int, recursive bool, propagation, atime uint64, setAtime bool) error {
	flags := unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC
	attrFlags := unix.AT_EMPTY_PATH
	if recursive {
		flags |= unix.AT_RECURSIVE
		attrFlags |= unix.AT_RECURSIVE
	}
	tfd, err := unix.OpenTree(unix.AT_FDCWD, src, uint(flags))
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", src, err)
	}
	defer unix.Close(tfd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(usernsFd), Propagation: propagation}
	if setAtime {
		attr.Attr_set |= atime
		attr.Attr_clr |= unix.MOUNT_ATTR__ATIME | unix.MOUNT_ATTR_NODIRATIME
	}
	if err := unix.MountSetattr(tfd, "", uint(attrFlags), &attr); err != nil {
		return fmt.Errorf("idmap %s: %w", src, err)
	}
	if err := makeMountpoint(src, dst); err != nil {
		return err
	}
	if err := unix.MoveMount(tfd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach idmapped %s at %s: %w", src, dst, err)
	}
	return nil
}

// bindAtime is the atime mode, as mount_setattr attributes, that runc's
// remount of a bind mount with these options asks the kernel for; ok is
// false when the options name none (the remount then keeps the source's).
//
// Inside the container's user namespace the kernel locks a mount's atime
// mode (MNT_LOCK_ATIME): runc's remount of a bind to any other mode fails
// with EPERM ("strictatime" on a bind of a relatime filesystem did). The
// clone sysvisor-runc makes on the host, with host privilege, gets the
// requested mode first, so the remount inside asks for what is already
// there, as it does under plain runc. The flags fold as runc's
// parseMountOptions folds them (the last of "noatime"/"atime" wins, ...),
// then combine as the kernel's path_mount combines them: relatime unless
// noatime, strictatime clearing both, nodiratime on top.
func bindAtime(options []string) (attr uint64, ok bool) {
	const (
		noatime = 1 << iota
		nodiratime
		relatime
		strictatime
	)
	var f int
	for _, o := range options {
		switch o {
		case "noatime":
			f |= noatime
		case "atime":
			f &^= noatime
		case "nodiratime":
			f |= nodiratime
		case "diratime":
			f &^= nodiratime
		case "relatime":
			f |= relatime
		case "norelatime":
			f &^= relatime
		case "strictatime":
			f |= strictatime
		case "nostrictatime":
			f &^= strictatime
		}
	}
	if f == 0 {
		return 0, false
	}
	attr = unix.MOUNT_ATTR_RELATIME
	if f&noatime != 0 {
		attr = unix.MOUNT_ATTR_NOATIME
	}
	if f&strictatime != 0 {
		attr = unix.MOUNT_ATTR_STRICTATIME
	}
	if f&nodiratime != 0 {
		attr |= unix.MOUNT_ATTR_NODIRATIME
	}
	return attr, true
}

func makeMountpoint(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return os.MkdirAll(dst, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o711); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// Overlay is an overlayfs mount read from mountinfo.
type Overlay struct {
	Lower []string
	Upper string
	Work  string
	// Other options to keep (index, redirect_dir, metacopy, xino, ...).
	Other []string
	// Source is the mount's source as mountinfo shows it ("overlay").
	Source string `json:",omitempty"`
	Opts   string // the full super options, as the kernel keeps them
	// Base is the directory relative layer paths were resolved against
	// (the driver's home); a remount without lowerdir+ makes them relative
	// to it again, as the engine did to stay within a page.
	Base string `json:",omitempty"`
	// Append: the layers were given one per lowerdir+ option, so the
	// engine that mounted it had that option.
	Append bool `json:",omitempty"`
}

// MountEntry is one line of mountinfo.
type MountEntry struct {
	ID         int
	Mountpoint string
	FSType     string
	Source     string
	Super      string
}

// ReadMountinfo parses /proc/self/mountinfo.
func ReadMountinfo() ([]MountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMountinfo(f)
}

// ParseMountinfo parses mountinfo text (proc(5)). Mountpoint is unescaped;
// Source and Super are as the kernel wrote them.
func ParseMountinfo(r io.Reader) ([]MountEntry, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var out []MountEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || len(f) < sep+4 {
			continue
		}
		var id int
		fmt.Sscanf(f[0], "%d", &id)
		out = append(out, MountEntry{ID: id, Mountpoint: unescapeOctal(f[4]), FSType: f[sep+1], Source: f[sep+2], Super: f[sep+3]})
	}
	return out, nil
}

// unescapeOctal decodes mountinfo's octal escapes.
func unescapeOctal(s string) string { return mountinfo.Unescape(s) }

// ParseOverlay reads overlay options; relative layer paths (engines use them
// when the option string would exceed a page) are resolved against base.
//
// super may be as mountinfo shows it: the kernel writes the option string it
// was given with octal escapes (\040, \054, \134), which are decoded first.
func ParseOverlay(super, base string) (*Overlay, error) {
	super = unescapeOctal(super)
	o := &Overlay{Opts: super, Base: base}
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	for _, opt := range splitOpts(super) {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "lowerdir":
			for _, l := range splitLower(v) {
				o.Lower = append(o.Lower, abs(l))
			}
		case "lowerdir+":
			// Mounts made with fsconfig list one layer per option.
			o.Lower = append(o.Lower, abs(v))
			o.Append = true
		case "upperdir":
			o.Upper = abs(v)
		case "workdir":
			o.Work = abs(v)
		case "index", "redirect_dir", "metacopy", "xino", "volatile", "nfs_export":
			o.Other = append(o.Other, opt)
		}
	}
	if len(o.Lower) == 0 {
		return nil, fmt.Errorf("overlay without lowerdir")
	}
	if (o.Upper == "") != (o.Work == "") {
		return nil, fmt.Errorf("overlay with upperdir but no workdir")
	}
	return o, nil
}

// splitOpts splits on commas not escaped by a backslash.
func splitOpts(s string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s):
			cur.WriteByte(s[i+1])
			i++
		case s[i] == ',':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	return append(out, cur.String())
}

func splitLower(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ":") {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// mountID returns the id of the mount path lives on.
func mountID(path string) (uint64, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_DONT_SYNC|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_MNT_ID, &st); err != nil {
		return 0, err
	}
	return st.Mnt_id, nil
}

// commonDir is the deepest directory containing every path.
func commonDir(paths []string) string {
	if len(paths) == 0 {
		return "/"
	}
	c := filepath.Clean(paths[0])
	for _, p := range paths[1:] {
		p = filepath.Clean(p)
		for c != "/" && p != c && !strings.HasPrefix(p, c+"/") {
			c = filepath.Dir(c)
		}
	}
	return c
}

// secbitNoSetuidFixup keeps capabilities across uid changes (linux/securebits.h).
const secbitNoSetuidFixup = 1 << 2
