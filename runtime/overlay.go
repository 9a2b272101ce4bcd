package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
)

// An overlay is mounted one of two ways. With lowerdir+ (Linux 6.8) the new
// mount API takes one layer per option, any number of them. Without it the
// layers go in one colon-separated lowerdir, and only mount(2) can carry it:
// fsconfig refuses a string value of 256 bytes or more (EINVAL, seen on
// 6.18), and before 6.5 overlayfs took the new API's options as legacy mount
// data anyway, checked only at FSCONFIG_CMD_CREATE. mount(2) data is one
// page, so the layers are named as briefly as it takes, in this order:
// absolute paths; paths relative to the directory the layers share (the
// engine's driver home, or sysvisor's clone of it), as Docker does with its
// l/ links; short symlinks of sysvisor's own. Relative paths are resolved
// from the mounting thread's working directory, so the mount runs on a
// thread of its own whose filesystem context is unshared.

// overlayMount is an overlay to mount.
type overlayMount struct {
	Lower       []string
	Upper, Work string // both or neither
	Other       []string
	Target      string
	RO          bool
	// Source is what mountinfo shows as the mount's source.
	Source string
	// Base is the directory to make layer paths relative to when absolute
	// ones exceed a page ("" for none).
	Base string
	// Links is a directory that may be created to hold one short symlink
	// per layer when relative paths exceed a page too; it is removed once
	// the overlay is mounted ("" for none).
	Links string
}

// overlayPlan is how an overlayMount will be made.
type overlayPlan struct {
	m overlayMount
	// appendLayers: fsconfig with one lowerdir+ per layer.
	appendLayers bool
	// For mount(2): the option string, the working directory its relative
	// paths are resolved from ("" when every path is absolute), and the
	// symlinks (name -> layer) to create there first.
	data  string
	cwd   string
	links map[string]string
}

// planOverlay decides how m is mounted on this kernel.
func planOverlay(m overlayMount) (*overlayPlan, error) {
	if kernel.OverlayLowerdirAppend.Has() {
		return &overlayPlan{m: m, appendLayers: true}, nil
	}
	return planLegacyOverlay(m, unix.Getpagesize())
}

// planLegacyOverlay fits m into mount(2) data of at most page-1 bytes (the
// kernel copies one page and needs the terminating NUL in it). It has no
// side effect: the symlinks are made by mount.
func planLegacyOverlay(m overlayMount, page int) (*overlayPlan, error) {
	if len(m.Lower) == 0 {
		return nil, errors.New("overlay without lower layers")
	}
	limit := page - 1
	data := overlayData(m.Lower, m.Upper, m.Work, m.Other)
	if len(data) <= limit {
		return &overlayPlan{m: m, data: data}, nil
	}
	tried := []string{fmt.Sprintf("absolute paths %d bytes", len(data))}
	if m.Base != "" {
		rel := func(p string) string {
			if p == "" {
				return ""
			}
			if r, ok := relativeTo(m.Base, p); ok {
				return r
			}
			return p
		}
		lower := make([]string, len(m.Lower))
		for i, l := range m.Lower {
			lower[i] = rel(l)
		}
		data = overlayData(lower, rel(m.Upper), rel(m.Work), m.Other)
		if len(data) <= limit {
			return &overlayPlan{m: m, data: data, cwd: m.Base}, nil
		}
		tried = append(tried, fmt.Sprintf("relative to %s %d bytes", m.Base, len(data)))
	}
	if m.Links != "" {
		links := map[string]string{}
		lower := make([]string, len(m.Lower))
		for i, l := range m.Lower {
			lower[i] = strconv.Itoa(i)
			links[lower[i]] = l
		}
		upper, work := m.Upper, m.Work
		if upper != "" {
			upper, work = "u", "w"
			links[upper], links[work] = m.Upper, m.Work
		}
		data = overlayData(lower, upper, work, m.Other)
		if len(data) <= limit {
			return &overlayPlan{m: m, data: data, cwd: m.Links, links: links}, nil
		}
		tried = append(tried, fmt.Sprintf("as symlinks %d bytes", len(data)))
	}
	return nil, fmt.Errorf("overlay of %d layers at %s: its options exceed a page (%d bytes) without lowerdir+ (Linux 6.8): %s",
		len(m.Lower), m.Target, page, strings.Join(tried, ", "))
}

// relativeTo returns p relative to base if p lies at or below it.
func relativeTo(base, p string) (string, bool) {
	r, err := filepath.Rel(base, p)
	if err != nil || r == ".." || strings.HasPrefix(r, "../") {
		return "", false
	}
	return r, true
}

// overlayData is the mount(2) option string. overlayfs splits options at
// unescaped commas and layers at unescaped colons, and takes a backslash as
// the escape in both.
func overlayData(lower []string, upper, work string, other []string) string {
	esc := strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`)
	var b strings.Builder
	b.WriteString("lowerdir=")
	for i, l := range lower {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(esc.Replace(l))
	}
	if upper != "" {
		b.WriteString(",upperdir=" + esc.Replace(upper) + ",workdir=" + esc.Replace(work))
	}
	for _, o := range other {
		b.WriteString("," + o)
	}
	return b.String()
}

// mount makes the overlay on a thread of its own. setup, if not nil, runs
// first on that thread (the idmapped overlay sets the mounter's
// credentials there).
func (p *overlayPlan) mount(setup func() error) error {
	if len(p.links) > 0 {
		if err := makeLinks(p.cwd, p.links); err != nil {
			return err
		}
		defer os.RemoveAll(p.cwd)
	}
	return onOwnThread(func() error {
		if setup != nil {
			if err := setup(); err != nil {
				return err
			}
		}
		if p.appendLayers {
			return fsOverlay(p.m)
		}
		if p.cwd != "" {
			if err := unix.Chdir(p.cwd); err != nil {
				return fmt.Errorf("overlay at %s: chdir %s: %w", p.m.Target, p.cwd, err)
			}
		}
		var flags uintptr
		if p.m.RO {
			flags = unix.MS_RDONLY
		}
		if err := unix.Mount(p.m.Source, p.m.Target, "overlay", flags, p.data); err != nil {
			where := ""
			if p.cwd != "" {
				where = " from " + p.cwd
			}
			return fmt.Errorf("mount overlay at %s (%d layers, %d bytes of options%s): %w", p.m.Target, len(p.m.Lower), len(p.data), where, err)
		}
		return nil
	})
}

// makeLinks creates dir with the given symlinks, replacing what a failed
// earlier attempt left there.
func makeLinks(dir string, links map[string]string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		return err
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			os.RemoveAll(dir)
			return err
		}
	}
	return nil
}

// onOwnThread runs fn on an OS thread that no other goroutine will use:
// the goroutine exits locked, so the Go runtime destroys the thread, and
// the thread's working directory is its own (unshare(CLONE_FS)).
func onOwnThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_FS): %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// fsOverlay mounts with the new mount API, one lowerdir+ per layer.
func fsOverlay(m overlayMount) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return fmt.Errorf("overlay option %s=%s: %w", k, v, err)
		}
		return nil
	}
	if m.Source != "" {
		if err := set("source", m.Source); err != nil {
			return err
		}
	}
	for _, l := range m.Lower {
		if err := set("lowerdir+", l); err != nil {
			return err
		}
	}
	if m.Upper != "" {
		if err := set("upperdir", m.Upper); err != nil {
			return err
		}
		if err := set("workdir", m.Work); err != nil {
			return err
		}
	}
	for _, opt := range m.Other {
		k, v, _ := strings.Cut(opt, "=")
		if err := set(k, v); err != nil {
			return err
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("create overlay at %s (%d layers): %w", m.Target, len(m.Lower), err)
	}
	var attr int
	if m.RO {
		attr = unix.MOUNT_ATTR_RDONLY
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, attr)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, m.Target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("attach overlay at %s: %w", m.Target, err)
	}
	return nil
}

// idmappedOverlay is the container's overlay: equal to o, its layers seen
// through the idmapped clones in layers (on-disk path -> clone), which lie
// under layersDir. dir is the container's directory (for the symlinks).
func idmappedOverlay(o *Overlay, layers map[string]string, layersDir, dir, target string) overlayMount {
	m := overlayMount{Upper: layers[o.Upper], Work: layers[o.Work], Other: o.Other, Target: target,
		Source: "overlay", Base: layersDir, Links: filepath.Join(dir, "links.rootfs")}
	for _, l := range o.Lower {
		m.Lower = append(m.Lower, layers[l])
	}
	return m
}

// mountIdmappedOverlay mounts m, whose layers are idmapped clones, so the
// container's root (host uid base) sees the image as owned by itself while
// the layers on disk keep their owners. The overlay's mounter credentials
// must lie inside the mapping (overlayfs does copy-up and whiteouts with
// them), so the mount is made on a dedicated thread whose filesystem
// uid/gid are base, keeping its capabilities; that thread is never reused.
func mountIdmappedOverlay(p *overlayPlan, base uint32) error {
	return p.mount(func() error {
		if _, _, e := unix.RawSyscall(unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, secbitNoSetuidFixup, 0); e != 0 {
			return fmt.Errorf("set securebits: %w", e)
		}
		// setfs[ug]id report the previous value, never an error: a
		// second call tells whether the first one took.
		unix.RawSyscall(unix.SYS_SETFSGID, uintptr(base), 0, 0)
		unix.RawSyscall(unix.SYS_SETFSUID, uintptr(base), 0, 0)
		g, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, uintptr(base), 0, 0)
		u, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, uintptr(base), 0, 0)
		if uint32(g) != base || uint32(u) != base {
			return fmt.Errorf("setfsuid/setfsgid %d did not take (fsuid %d, fsgid %d)", base, u, g)
		}
		return nil
	})
}

// viewSource is the source of the engine's view in mountinfo: what tells
// release that the mount at the engine's path is sysvisor's.
const viewSource = "sysvisor-view"

// engineViewFSType is the fstype mountinfo gives sysvisord's engine view
// and every bind of it (enginefs.FSType): what replaces our view at the
// engine's path while the container runs. Spelt here, not imported:
// enginefs links go-fuse, whose package init would take file descriptors
// (fd 3 among them, which --preserve-fds hands to runc) and probe the
// kernel at every call the engine makes to sysvisor-runc. A test checks
// that the two agree.
const engineViewFSType = "fuse.sysvisor-engine"

// engineViewMount is a read-only overlay of the container's upper layer
// over its lowers, all as they are on disk, for the engine's rootfs path.
// The engine (docker diff, commit, export, cp out of a running container)
// reads the rootfs through that path and must see on-disk ownership, which
// our idmapped overlay cannot show it: overlayfs mounts are not idmappable.
// Read-only, with no work dir, it shares nothing writable with the
// container's overlay.
func engineViewMount(o *Overlay, path, dir string) overlayMount {
	lower := o.Lower
	if o.Upper != "" {
		lower = append([]string{o.Upper}, o.Lower...)
	}
	var other []string
	for _, opt := range o.Other {
		// Options that only mean something with an upper layer.
		if k, _, _ := strings.Cut(opt, "="); k != "index" && k != "volatile" && k != "nfs_export" {
			other = append(other, opt)
		}
	}
	return overlayMount{Lower: lower, Other: other, Target: path, RO: true, Source: viewSource,
		Base: o.Base, Links: filepath.Join(dir, "links.view")}
}

// engineOverlayMount is the engine's own overlay, to put back at path.
func engineOverlayMount(o *Overlay, path, dir string) overlayMount {
	src := o.Source
	if src == "" || src == "none" {
		src = "overlay"
	}
	base := o.Base
	if base == "" {
		// Recorded before Base was: the driver's home, as ParseOverlay
		// was given it.
		base = filepath.Dir(filepath.Dir(path))
	}
	return overlayMount{Lower: o.Lower, Upper: o.Upper, Work: o.Work, Other: o.Other, Target: path,
		Source: src, Base: base, Links: filepath.Join(dir, "links.engine")}
}

// planEngineOverlay plans the engine's overlay as the engine made it: with
// lowerdir+ if it used that (the kernel has it, whatever is forced), else
// as mount(2) data with the paths relative to its home when absolute ones
// do not fit, which is how Docker made it fit a page. Its mountinfo then
// reads as before, and the next create parses it the same way.
func planEngineOverlay(o *Overlay, path, dir string) (*overlayPlan, error) {
	m := engineOverlayMount(o, path, dir)
	if o.Append && kernel.OverlayLowerdirAppend.Probe() == nil {
		return &overlayPlan{m: m, appendLayers: true}, nil
	}
	return planLegacyOverlay(m, unix.Getpagesize())
}

// restoreEngineOverlay puts the engine's overlay back at path. A failure
// leaves the engine's rootfs empty, so a refused lowerdir+ mount is tried
// again as mount(2) data.
func restoreEngineOverlay(o *Overlay, path, dir string) error {
	p, err := planEngineOverlay(o, path, dir)
	if err != nil {
		return fmt.Errorf("restore engine overlay at %s: %w", path, err)
	}
	err = p.mount(nil)
	if err != nil && p.appendLayers {
		if lp, lerr := planLegacyOverlay(p.m, unix.Getpagesize()); lerr == nil {
			if lerr = lp.mount(nil); lerr == nil {
				return nil
			}
			err = fmt.Errorf("%w; as mount(2) data: %v", err, lerr)
		}
	}
	if err != nil {
		return fmt.Errorf("restore engine overlay at %s: %w", path, err)
	}
	return nil
}
