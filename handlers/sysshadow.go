package handlers

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/mountinfo"
	"github.com/sysvisor/sysvisor/linux/notify"
)

// product_uuid where the host has no DMI. The view is a file of the
// container's FUSE views, and a bind needs a target: on a host without DMI
// (most VMs without firmware tables) sysfs has no devices/virtual/dmi, and
// sysfs cannot grow a file. So the directory the file would live in is
// replaced, in the container's sysfs only, by a "shadow": a small read-only
// tmpfs holding one bind per entry of the real directory, taken from the
// same sysfs instance (the same superblock, so the container's network
// devices under net/ stay live, those created later included), plus the
// entries the kernel lacks, on which the views are bound as usual.
//
// Two directories are shadowed: devices/virtual (gains dmi/id/product_uuid)
// and class (gains dmi/id, a symlink to ../../devices/virtual/dmi/id, as the
// kernel makes it): kubelet (cadvisor), kubeadm and systemd read the UUID
// through /sys/class/dmi/id.
//
// The tmpfs is host root's (nobody inside, as sysfs directories show in a
// user namespace), 0755, read-only: the container cannot create anything
// in it even through a read-write copy, since it has no capability over
// host-owned inodes. Where the host has DMI none of this happens: the view
// is one bind over the kernel's file, added by the runtime.

// productUUIDView is the product_uuid view, relative to the views directory.
const productUUIDView = "sys/devices/virtual/dmi/id/product_uuid"

// shadow is a sysfs directory to replace, and what it gains.
type shadow struct {
	// dir is relative to the sysfs root.
	dir string
	// files are empty files to create (paths relative to dir), for view
	// files to be bound on; links are symlinks, name to target.
	files []string
	links [][2]string
}

// dmiShadows are the shadows that make product_uuid appear where sysfs has
// no devices/virtual/dmi.
var dmiShadows = []shadow{
	{dir: "devices/virtual", files: []string{"dmi/id/product_uuid"}},
	{dir: "class", links: [][2]string{{"dmi/id", "../../devices/virtual/dmi/id"}}},
}

// dmiIDShadow makes product_uuid appear where the kernel has DMI but no
// UUID in it: the kernel leaves product_uuid out for an all-zero or
// all-ones UUID, which is what qemu's SMBIOS carries without -uuid.
var dmiIDShadow = shadow{dir: "devices/virtual/dmi/id", files: []string{"product_uuid"}}

// shadowsNeeded returns the shadows a sysfs needs: none when the container
// has no product_uuid view, or the kernel has the file (the view is bound
// on it); dmi/id alone where the kernel has DMI without the file; else the
// class shadow only where class/dmi is absent too. has reports whether a
// path relative to the sysfs root exists.
func shadowsNeeded(haveView bool, has func(string) bool) []shadow {
	if !haveView || has(strings.TrimPrefix(productUUIDView, "sys/")) {
		return nil
	}
	if has("devices/virtual/dmi") {
		if has(dmiIDShadow.dir) {
			return []shadow{dmiIDShadow}
		}
		return nil
	}
	var out []shadow
	for _, s := range dmiShadows {
		if !has(s.dir) {
			continue // nothing to put binds of: no such directory
		}
		if s.dir == "class" && has("class/dmi") {
			continue
		}
		out = append(out, s)
	}
	return out
}

// entryKind says how one entry of a shadowed directory is reproduced.
type entryKind int

const (
	entryBind entryKind = iota // a directory or file: bound from the sysfs
	entryLink                  // a symlink: copied (sysfs links are fixed)
	entrySkip                  // anything else: left out
)

func kindOf(mode os.FileMode) entryKind {
	switch {
	case mode.IsDir(), mode.IsRegular():
		return entryBind
	case mode&os.ModeSymlink != 0:
		return entryLink
	}
	return entrySkip
}

// addedEntries lists the top-level names a shadow adds beyond the kernel's:
// the first component of each file and link. One the kernel has already
// is an error (the shadow is not needed there, or the plan is wrong).
func addedEntries(s shadow, kernel map[string]bool) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, p := range slices.Concat(s.files, linkNames(s.links)) {
		if p == "" || path.IsAbs(p) || path.Clean(p) != p || strings.HasPrefix(p, "../") {
			return nil, fmt.Errorf("invalid entry %q", p)
		}
		top, _, _ := strings.Cut(p, "/")
		if kernel[top] {
			return nil, fmt.Errorf("%s/%s exists in the kernel's sysfs", s.dir, top)
		}
		if !seen[top] {
			seen[top] = true
			out = append(out, top)
		}
	}
	return out, nil
}

func linkNames(links [][2]string) []string {
	out := make([]string, len(links))
	for i, l := range links {
		out[i] = l[0]
	}
	return out
}

// buildShadow builds the shadow of s.dir from the sysfs tree sysRoot, on the
// stage: a tmpfs with a bind of each of the directory's entries (read-only
// if ro) and the added files and links. It returns the tmpfs's root as the
// stage gives it (st.attach: a detached mount, or its root on the staging
// namespace; either moves with one move_mount) and the number of mounts in
// the tree. On error nothing is left: closing the fd of a detached tree
// releases it with its binds, and a staged one goes with the stage.
func buildShadow(st *stage, sysRoot int, s shadow, ro bool) (int, int, error) {
	dfd, err := unix.Openat(sysRoot, s.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("open %s: %w", s.dir, err)
	}
	dir := os.NewFile(uintptr(dfd), s.dir) // owns dfd
	defer dir.Close()
	ents, err := dir.ReadDir(-1)
	if err != nil {
		return -1, 0, fmt.Errorf("list %s: %w", s.dir, err)
	}
	kernel := map[string]bool{}
	for _, e := range ents {
		kernel[e.Name()] = true
	}
	if _, err := addedEntries(s, kernel); err != nil {
		return -1, 0, err
	}
	fsfd, err := unix.Fsopen("tmpfs", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, 0, fmt.Errorf("fsopen tmpfs: %w", err)
	}
	defer unix.Close(fsfd)
	// mode: sysfs directories are 0755; the source names who made it.
	for _, kv := range [][2]string{{"source", "sysvisor"}, {"mode", "0755"}} {
		if err := unix.FsconfigSetString(fsfd, kv[0], kv[1]); err != nil {
			return -1, 0, fmt.Errorf("tmpfs %s: %w", kv[0], err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, 0, fmt.Errorf("create tmpfs: %w", err)
	}
	const attrs = unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC
	raw, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attrs)
	if err != nil {
		return -1, 0, fmt.Errorf("fsmount tmpfs: %w", err)
	}
	mfd, err := st.attach(raw)
	if err != nil {
		return -1, 0, err
	}
	n, err := fillShadow(mfd, dfd, ents, s, ro)
	if err == nil {
		// The tmpfs itself is read-only whatever the sysfs is: nothing
		// may be added next to the kernel's entries.
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err = unix.MountSetattr(mfd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			err = fmt.Errorf("read-only tmpfs: %w", err)
		}
	}
	if err != nil {
		unix.Close(mfd)
		return -1, 0, fmt.Errorf("shadow of %s: %w", s.dir, err)
	}
	return mfd, n + 1, nil
}

// fillShadow reproduces the entries of the sysfs directory dfd in the tmpfs
// mfd and adds s's files and links. It returns the number of binds.
func fillShadow(mfd, dfd int, ents []os.DirEntry, s shadow, ro bool) (int, error) {
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC}
	if ro {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	binds := 0
	for _, e := range ents {
		name := e.Name()
		switch kindOf(e.Type()) {
		case entryLink:
			target, err := readlinkAt(dfd, name)
			if err != nil {
				return binds, err
			}
			if err := unix.Symlinkat(target, mfd, name); err != nil {
				return binds, fmt.Errorf("symlink %s: %w", name, err)
			}
			continue
		case entrySkip:
			continue
		}
		if e.IsDir() {
			if err := mkdirMode(mfd, name, 0o755); err != nil {
				return binds, err
			}
		} else if err := emptyFile(mfd, name, 0o444); err != nil {
			return binds, err
		}
		src, err := unix.OpenTree(dfd, name, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return binds, fmt.Errorf("clone %s: %w", name, err)
		}
		err = unix.MountSetattr(src, "", unix.AT_EMPTY_PATH, &attr)
		if err == nil {
			err = unix.MoveMount(src, "", mfd, name, unix.MOVE_MOUNT_F_EMPTY_PATH)
		}
		unix.Close(src)
		if err != nil {
			return binds, fmt.Errorf("bind %s: %w", name, err)
		}
		binds++
	}
	for _, f := range s.files {
		if err := mkdirAllIn(mfd, path.Dir(f)); err != nil {
			return binds, err
		}
		// The view bound here brings its own mode; this one is the
		// kernel's for the file, should the bind be missing.
		if err := emptyFile(mfd, f, 0o400); err != nil {
			return binds, err
		}
	}
	for _, l := range s.links {
		if err := mkdirAllIn(mfd, path.Dir(l[0])); err != nil {
			return binds, err
		}
		if err := unix.Symlinkat(l[1], mfd, l[0]); err != nil {
			return binds, fmt.Errorf("symlink %s: %w", l[0], err)
		}
	}
	return binds, nil
}

func readlinkAt(dfd int, name string) (string, error) {
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(dfd, name, buf)
	if err != nil {
		return "", fmt.Errorf("readlink %s: %w", name, err)
	}
	if n == len(buf) {
		return "", fmt.Errorf("readlink %s: too long", name)
	}
	return string(buf[:n]), nil
}

// mkdirMode makes a directory with exactly mode, whatever the umask.
func mkdirMode(dirfd int, name string, mode uint32) error {
	if err := unix.Mkdirat(dirfd, name, mode); err != nil {
		return fmt.Errorf("mkdir %s: %w", name, err)
	}
	if err := unix.Fchmodat(dirfd, name, mode, 0); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	return nil
}

func mkdirAllIn(dirfd int, dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	if err := mkdirAllIn(dirfd, path.Dir(dir)); err != nil {
		return err
	}
	var st unix.Stat_t
	if unix.Fstatat(dirfd, dir, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	return mkdirMode(dirfd, dir, 0o755)
}

func emptyFile(dirfd int, name string, mode uint32) error {
	fd, err := unix.Openat(dirfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, mode); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	return nil
}

// existsIn reports whether rel exists in the tree root, without following a
// final symlink.
func existsIn(root int, rel string) bool {
	var st unix.Stat_t
	return unix.Fstatat(root, rel, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// hasView reports whether the views directory serves product_uuid.
func hasView(views string) bool {
	if views == "" {
		return false
	}
	st, err := os.Stat(filepath.Join(views, productUUIDView))
	return err == nil && st.Mode().IsRegular()
}

// shadowIn puts the shadows the detached sysfs tree root needs on it, for
// the container's views (views, may be empty). It runs before the tree's
// masks and views are applied: the masks then cover entries inside the
// shadows as they would the kernel's, and the view lands on the file the
// shadow made for it. It returns the number of mounts added.
func shadowIn(st *stage, root int, views string, ro bool) (int, error) {
	mounts := 0
	for _, s := range shadowsNeeded(hasView(views), func(rel string) bool { return existsIn(root, rel) }) {
		mfd, n, err := buildShadow(st, root, s, ro)
		if err != nil {
			return mounts, err
		}
		err = attachIn(mfd, root, s.dir)
		unix.Close(mfd)
		if err != nil {
			return mounts, fmt.Errorf("attach shadow of %s: %w", s.dir, err)
		}
		mounts += n
	}
	return mounts, nil
}

// attachIn moves the tree mfd (detached, or staged) onto rel inside the
// tree root.
func attachIn(mfd, root int, rel string) error {
	tfd, err := openIn(root, rel)
	if err != nil {
		return err
	}
	if tfd < 0 {
		return unix.ENOENT
	}
	defer unix.Close(tfd)
	return unix.MoveMount(mfd, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}

// dressIn applies the container's masked and read-only paths that lie under
// prefix (e.g. "/sys/") inside the detached tree root, which stands for
// prefix: the runtime's masks, made again on a tree built by sysvisord.
func dressIn(root int, prefix string, masked, readonly []string) error {
	for _, p := range masked {
		if rel, ok := strings.CutPrefix(p, prefix); ok && rel != "" {
			if err := maskIn(root, rel); err != nil {
				return fmt.Errorf("mask %s: %w", p, err)
			}
		}
	}
	for _, p := range readonly {
		if rel, ok := strings.CutPrefix(p, prefix); ok && rel != "" {
			if err := readonlyIn(root, rel); err != nil {
				return fmt.Errorf("read-only %s: %w", p, err)
			}
		}
	}
	return nil
}

// SysfsReport says what PrepareSysfs changed.
type SysfsReport struct {
	// Shadowed are the sysfs directories replaced (relative to /sys);
	// Mounts counts the mounts that added to the container.
	Shadowed []string
	Mounts   int
}

// SysfsState is what PrepareSysfs needs to know of the container's /sys
// from its init's mountinfo: whether it is read-only, and the mountpoints
// below it.
type SysfsState struct {
	ReadOnly bool
	Below    []string
}

// ReadSysfsState reads the container's /sys from its init's mountinfo (the
// kernel's file, not a path the container controls).
func ReadSysfsState(initPid int) (SysfsState, error) {
	ms, err := mountinfo.Read(fmt.Sprintf("/proc/%d/mountinfo", initPid))
	if err != nil {
		return SysfsState{}, err
	}
	var st SysfsState
	for i := range ms {
		switch {
		case ms[i].Mountpoint == "/sys" && ms[i].FSType == "sysfs":
			st.ReadOnly = ms[i].ReadOnly()
		case strings.HasPrefix(ms[i].Mountpoint, "/sys/"):
			st.Below = append(st.Below, ms[i].Mountpoint)
		}
	}
	return st, nil
}

// freeOfMounts reports whether nothing is mounted at or below /sys/<dir>
// but the masks and read-only paths, which a shadow gets again: a shadow
// would hide anything else (a volume the engine put there, say).
func freeOfMounts(dir string, below, masked, readonly []string) bool {
	again := map[string]bool{}
	for _, p := range slices.Concat(masked, readonly) {
		again[path.Clean(p)] = true
	}
	top := "/sys/" + dir
	for _, m := range below {
		if (m == top || strings.HasPrefix(m, top+"/")) && !again[m] {
			return false
		}
	}
	return true
}

// PrepareSysfs makes product_uuid appear in the container's /sys where the
// host has no DMI: it shadows the directories that lack it (see above) with
// trees built, masked and given the views detached, from a sysfs of init's
// network namespace, which is the superblock of the container's /sys; then
// it attaches them in init's mount namespace. Like PrepareProcSys, it runs
// while init waits on runc's exec fifo, before init's mounts are read for
// the protected set, so the shadows are protected like the runtime's mounts.
func PrepareSysfs(p *Process, views string, sys SysfsState, masked, readonly []string) (SysfsReport, error) {
	var rep SysfsReport
	if !hasView(views) {
		return rep, nil
	}
	type built struct {
		s        shadow
		mfd, n   int
		dev, ino uint64
	}
	var trees []built
	defer func() {
		for _, t := range trees {
			unix.Close(t.mfd)
		}
	}()
	var skipped []error
	// In the host's mount namespace, in init's network namespace: the
	// sysfs made there is the same superblock as the container's /sys
	// (checked below), and the host's, not the container's, decides
	// what the tmpfs and its binds are.
	detached := func() error {
		fsfd, err := unix.Fsopen("sysfs", unix.FSOPEN_CLOEXEC)
		if err != nil {
			return fmt.Errorf("fsopen sysfs: %w", err)
		}
		defer unix.Close(fsfd)
		if err := unix.FsconfigCreate(fsfd); err != nil {
			return fmt.Errorf("create sysfs: %w", err)
		}
		raw, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY)
		if err != nil {
			return fmt.Errorf("fsmount sysfs: %w", err)
		}
		return inStage(views, func(stg *stage) error {
			root, err := stg.attach(raw)
			if err != nil {
				return err
			}
			defer unix.Close(root)
			for _, s := range shadowsNeeded(true, func(rel string) bool { return existsIn(root, rel) }) {
				if !freeOfMounts(s.dir, sys.Below, masked, readonly) {
					skipped = append(skipped, fmt.Errorf("/sys/%s has mounts of the engine's below it: not shadowed", s.dir))
					continue
				}
				var st unix.Stat_t
				if err := unix.Fstatat(root, s.dir, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					return fmt.Errorf("stat %s: %w", s.dir, err)
				}
				mfd, n, err := buildShadow(stg, root, s, sys.ReadOnly)
				if err != nil {
					return err
				}
				prefix := "/sys/" + s.dir + "/"
				err = dressIn(mfd, prefix, masked, readonly)
				if err == nil {
					err = viewsIn(mfd, filepath.Join(views, "sys", s.dir), false, false)
					if err != nil {
						err = fmt.Errorf("views in %s: %w", s.dir, err)
					}
				}
				if err != nil {
					unix.Close(mfd)
					return err
				}
				if mfd, err = stg.detach(mfd); err != nil {
					return err
				}
				trees = append(trees, built{s: s, mfd: mfd, n: n, dev: st.Dev, ino: st.Ino})
			}
			return nil
		})
	}
	err := inCallerFS(p, joinNet, detached, func(fs *callerFS) error {
		for _, t := range trees {
			err := attachShadow(fs, p, t.s.dir, t.mfd, t.dev, t.ino, sys.ReadOnly)
			if errors.Is(err, notify.ErrGone) {
				return err
			}
			if err != nil {
				skipped = append(skipped, fmt.Errorf("/sys/%s: %w", t.s.dir, err))
				continue
			}
			rep.Shadowed = append(rep.Shadowed, t.s.dir)
			rep.Mounts += t.n
		}
		return nil
	})
	return rep, errors.Join(append(skipped, err)...)
}

// attachShadow moves the tree mfd onto the container's /sys/<dir>, which
// must be the very directory the tree was built from (same device and
// inode: the container's /sys is the sysfs the binds come from, and nothing
// is mounted over the directory) on a mount as read-only as the binds.
func attachShadow(fs *callerFS, p caller, dir string, mfd int, dev, ino uint64, ro bool) error {
	tfd, err := fs.open("/sys/"+dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	if err := onFS(tfd, unix.SYSFS_MAGIC, "sysfs"); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(tfd, &st); err != nil {
		return err
	}
	if st.Dev != dev || st.Ino != ino {
		return fmt.Errorf("not the sysfs of the container's network namespace (device %d:%d)", unix.Major(st.Dev), unix.Minor(st.Dev))
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(tfd, &sfs); err != nil {
		return err
	}
	if (sfs.Flags&unix.ST_RDONLY != 0) != ro {
		return fmt.Errorf("read-only is %v, mountinfo said %v", sfs.Flags&unix.ST_RDONLY != 0, ro)
	}
	return fs.act(p, func() error {
		return unix.MoveMount(mfd, "", tfd, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
	})
}
