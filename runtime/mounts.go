package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/statefile"
	"github.com/sysvisor/sysvisor/supervisor/control"
)

// ContainerDir is where the runtime keeps a container's host-side mounts:
// the idmapped rootfs and idmapped bind-mount sources.
func ContainerDir(runDir, id string) string { return filepath.Join(runDir, "containers", id) }

// setupMounts makes the rootfs and bind mounts appear owned by the
// container's root without touching a single file: the rootfs becomes an
// overlay over idmapped layers (or an idmapped bind of a plain directory), and
// each bind source an idmapped clone; an image that runs a container engine
// gets its storage (addStorage). Everything lives under dir, which
// cleanupMounts removes.
func setupMounts(s *specs.Spec, bundle, dir string, base, size uint32, engine bool, log *Logger) error {
	for _, d := range []string{filepath.Dir(filepath.Dir(dir)), filepath.Dir(dir), dir} {
		if err := os.Mkdir(d, 0o711); err != nil && !os.IsExist(err) {
			return err
		}
	}
	nsfd, err := UsernsFd(base, size)
	if err != nil {
		return err
	}
	defer unix.Close(nsfd)
	rootfs := s.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(bundle, rootfs)
	}
	if rootfs, err = filepath.EvalSymlinks(rootfs); err != nil {
		return fmt.Errorf("rootfs %s: %w", s.Root.Path, err)
	}
	target := filepath.Join(dir, "rootfs")
	o, err := idmapRootfs(rootfs, target, dir, nsfd, base)
	if err != nil {
		return fmt.Errorf("rootfs %s: %w", rootfs, err)
	}
	s.Root.Path = target
	for i := range s.Mounts {
		m := &s.Mounts[i]
		if !isBind(m) || !filepath.IsAbs(m.Source) || underAny(m.Source, "/proc", "/sys", "/dev") {
			continue
		}
		st, err := os.Stat(m.Source)
		if err != nil || !(st.IsDir() || st.Mode().IsRegular()) {
			continue
		}
		keepLockedFlags(m)
		dst := filepath.Join(dir, "mounts", fmt.Sprint(i))
		atime, setAtime := bindAtime(m.Options)
		if err := idmapCloneAtime(m.Source, dst, nsfd, slices.Contains(m.Options, "rbind"), unix.MS_SLAVE, atime, setAtime); err != nil {
			// Not every filesystem supports idmapped mounts; the bind still
			// works, with host-root files appearing as nobody inside.
			log.Warnf("bind mount %s -> %s keeps host ownership: %v", m.Source, m.Destination, err)
			os.Remove(dst)
			continue
		}
		m.Source = dst
	}
	if engine {
		addStorage(s, o, dir, nsfd, log)
	}
	return nil
}

// keepLockedFlags adds to a read-only bind's options the nosuid, nodev and
// noexec its source's mount has. In the container's user namespace the
// kernel locks those flags on every mount copied from the host's, and
// runc's read-only remount asks for exactly the options given: without
// them it would clear locked flags, which fails with EPERM. containerd's
// CRI binds each pod's /dev/shm (a nosuid,nodev,noexec tmpfs) that way
// with only "rbind", "ro".
func keepLockedFlags(m *specs.Mount) {
	if !slices.Contains(m.Options, "ro") {
		return
	}
	var st unix.Statfs_t
	if err := unix.Statfs(m.Source, &st); err != nil {
		return
	}
	for _, f := range []struct {
		flag     int64
		opt, neg string
	}{{unix.ST_NOSUID, "nosuid", "suid"}, {unix.ST_NODEV, "nodev", "dev"}, {unix.ST_NOEXEC, "noexec", "exec"}} {
		if st.Flags&f.flag != 0 && !slices.Contains(m.Options, f.opt) {
			m.Options = slices.DeleteFunc(m.Options, func(o string) bool { return o == f.neg })
			m.Options = append(m.Options, f.opt)
		}
	}
}

// dropBindSources detaches the idmapped bind sources once runc's create
// has bound them into the container, whose mount namespace keeps its own
// copies. Left in the host's mount namespace they would pin what is below
// them there: the host could not remove a directory that was a mount point
// under a bind source, for as long as the container lives (critest's
// non-recursive read-only mount; under runc the only copy is in the
// container's namespace, where the kernel lets it go lazily).
func dropBindSources(dir string, log *Logger) {
	mounts := filepath.Join(dir, "mounts")
	if err := detachUnder(mounts); err != nil {
		log.Warnf("bind sources under %s stay mounted until delete: %v", mounts, err)
		return
	}
	// Never RemoveAll: a mount point still there (one that propagated in
	// meanwhile) would take the host's files with it. Mount points are
	// empty directories or empty files; anything else stays.
	entries, _ := os.ReadDir(mounts)
	for _, e := range entries {
		os.Remove(filepath.Join(mounts, e.Name()))
	}
	os.Remove(mounts)
}

func isBind(m *specs.Mount) bool {
	return m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
}

func underAny(p string, dirs ...string) bool {
	p = filepath.Clean(p)
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}

// topMount returns the mount on top at path (the last one mountinfo lists
// there), or nil if nothing is mounted at path.
func topMount(path string) (*MountEntry, error) {
	mounts, err := ReadMountinfo()
	if err != nil {
		return nil, err
	}
	var top *MountEntry
	for i := range mounts {
		if mounts[i].Mountpoint == path {
			top = &mounts[i]
		}
	}
	return top, nil
}

// idmapRootfs mounts the container's rootfs at target and returns the
// engine's overlay it replaced (nil for a plain directory).
func idmapRootfs(rootfs, target, dir string, nsfd int, base uint32) (*Overlay, error) {
	top, err := topMount(rootfs)
	if err != nil {
		return nil, err
	}
	if top == nil || top.FSType != "overlay" {
		// A plain directory (or a filesystem that supports idmapped mounts
		// itself): one idmapped bind.
		if err := idmapClone(rootfs, target, nsfd, true, unix.MS_PRIVATE); err != nil {
			return nil, fmt.Errorf("%w (no per-file fallback: sysvisor never chowns an image)", err)
		}
		return nil, nil
	}
	// Engines that pass relative layer paths mount from the driver's home,
	// which holds <id>/merged.
	o, err := ParseOverlay(top.Super, filepath.Dir(filepath.Dir(rootfs)))
	if err != nil {
		return nil, err
	}
	o.Source = top.Source
	paths := append(slices.Clone(o.Lower), o.Upper, o.Work)
	if o.Upper == "" {
		paths = o.Lower
	}
	layersDir := filepath.Join(dir, "layers")
	layers, err := idmapLayers(paths, layersDir, nsfd)
	defer detachUnder(layersDir)
	if err != nil {
		return nil, err
	}
	// Every mount that follows is planned before the engine's overlay
	// comes down: one that cannot be made on this kernel (too many
	// layers for a page without lowerdir+) fails the create while the
	// engine's rootfs is still intact.
	ours, err := planOverlay(idmappedOverlay(o, layers, layersDir, dir, target))
	if err != nil {
		return nil, err
	}
	view, err := planOverlay(engineViewMount(o, rootfs, dir))
	if err != nil {
		return nil, fmt.Errorf("engine's view at %s: %w", rootfs, err)
	}
	if _, err := planEngineOverlay(o, rootfs, dir); err != nil {
		return nil, fmt.Errorf("the engine's overlay could not be put back: %w", err)
	}
	// Two overlays must not share an upper directory: take the engine's
	// down, put ours up, and leave the engine's path a read-only view of the
	// same layers with on-disk ownership (see engineViewMount); the
	// engine's own unmount at stop still works on it.
	// Recorded first: whatever fails from here on, release puts the
	// engine's overlay back from this file.
	b, err := json.Marshal(engineMount{Rootfs: rootfs, Overlay: *o})
	if err != nil {
		return nil, err
	}
	if err := statefile.Replace(filepath.Join(dir, engineFile), b, 0o600); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Unmount(rootfs, unix.MNT_DETACH); err != nil {
		return nil, fmt.Errorf("unmount engine overlay: %w", err)
	}
	// From here on a failure puts the engine's overlay back at once;
	// release tries again from engine.json if that fails too.
	undo := func(err error) error {
		if rerr := restoreEngineRootfs(dir); rerr != nil {
			return fmt.Errorf("%w (and putting the engine's overlay back failed: %v)", err, rerr)
		}
		return err
	}
	if err := failAfterEngineDown(); err != nil {
		return nil, undo(err)
	}
	if err := mountIdmappedOverlay(ours, base); err != nil {
		return nil, undo(err)
	}
	if err := view.mount(nil); err != nil {
		// Ours goes first: two overlays must not share an upper dir.
		if derr := unix.Unmount(target, unix.MNT_DETACH); derr != nil {
			return nil, fmt.Errorf("engine's view at %s: %w (and unmounting ours failed: %v)", rootfs, err, derr)
		}
		return nil, undo(fmt.Errorf("engine's view at %s: %w", rootfs, err))
	}
	b, err = json.Marshal(engineMount{Rootfs: rootfs, Overlay: *o, ViewUp: true})
	if err != nil {
		return nil, err
	}
	return o, statefile.Replace(filepath.Join(dir, engineFile), b, 0o600)
}

// failAfterEngineDown is a test's way to fail a create at its most fragile
// point: the engine's overlay is down and nothing is up yet.
var failAfterEngineDown = func() error { return nil }

// engineFile records the engine's overlay we replaced, so delete can put it
// back: an engine may reuse its still-mounted rootfs for the next start
// (docker restart does, by reference count) and must find its own overlay
// there, not our read-only view.
const engineFile = "engine.json"

type engineMount struct {
	Rootfs  string  `json:"rootfs"`
	Overlay Overlay `json:"overlay"`
	// ViewUp: our view replaced the engine's overlay (and sysvisord may
	// have replaced the view with its engine view). If the path is empty
	// after that, the engine unmounted it and nothing may come back.
	ViewUp bool `json:"viewUp"`
}

// readEngineMount reads dir's engine.json; nil without one (no overlay was
// replaced).
func readEngineMount(dir string) (*engineMount, error) {
	p := filepath.Join(dir, engineFile)
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var em engineMount
	if err := json.Unmarshal(b, &em); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return &em, nil
}

// engineViewRequest is the request that has sysvisord put its engine view
// at the engine's rootfs path in place of our read-only view, so the engine
// can write into the running container (docker cp): only when that path
// holds our view (an overlay was replaced). dir is the container's
// directory (ContainerDir).
func engineViewRequest(id, dir string, em *engineMount) (control.Request, bool) {
	if em == nil || !em.ViewUp || em.Rootfs == "" {
		return control.Request{}, false
	}
	// sysvisord serves only this path, and compares it as it is spelt.
	rootfs := filepath.Join(dir, "rootfs")
	if abs, err := filepath.Abs(rootfs); err == nil {
		rootfs = abs
	}
	return control.Request{Op: control.OpEngineView, ID: id, Rootfs: rootfs, EnginePath: em.Rootfs}, true
}

// restoreEngineRootfs swaps our view at the engine's rootfs path (the
// read-only one, or sysvisord's bind of its engine view) back for the
// engine's overlay, or puts the engine's overlay back where a create failed
// after taking it down. Only a mount that is our view is replaced: if the
// engine has already unmounted its path after our view went up, or
// something else is there, nothing is done.
func restoreEngineRootfs(dir string) error {
	pem, err := readEngineMount(dir)
	if pem == nil || err != nil {
		return err
	}
	em := *pem
	top, err := topMount(em.Rootfs)
	if err != nil {
		return err
	}
	o := em.Overlay
	switch {
	case top == nil && !em.ViewUp:
		// Create failed between taking the engine's overlay down and
		// putting our view up. The engine still counts it as mounted.
		return restoreEngineOverlay(&o, em.Rootfs, dir)
	case top == nil || !isView(top, &em):
		return nil
	}
	if err := unix.Unmount(em.Rootfs, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount view at %s: %w", em.Rootfs, err)
	}
	return restoreEngineOverlay(&o, em.Rootfs, dir)
}

// isView tells whether top, the mount at the engine's rootfs path, is our
// view: a bind of sysvisord's engine view (which replaced the read-only
// view; live, or dead after sysvisord stopped), or the read-only view,
// marked by its source, or, as views made before the mark were, an overlay
// without upper whose first layer is the engine's upper.
func isView(top *MountEntry, em *engineMount) bool {
	if top.FSType == engineViewFSType {
		return true
	}
	if top.FSType != "overlay" {
		return false
	}
	if top.Source == viewSource {
		return true
	}
	view, err := ParseOverlay(top.Super, filepath.Dir(filepath.Dir(em.Rootfs)))
	return err == nil && view.Upper == "" && em.Overlay.Upper != "" && view.Lower[0] == em.Overlay.Upper
}

// idmapLayers gives every layer path an idmapped view. Layers that share one
// mount (an engine's storage directory) cost a single idmapped clone of their
// common directory, however many layers the image has.
func idmapLayers(paths []string, dir string, nsfd int) (map[string]string, error) {
	out := map[string]string{}
	common := commonDir(paths)
	cid, err := mountID(common)
	same := err == nil
	for _, p := range paths {
		if id, err := mountID(p); err != nil || id != cid {
			same = false
			break
		}
	}
	if same {
		if err := idmapClone(common, dir, nsfd, false, unix.MS_PRIVATE); err != nil {
			return nil, err
		}
		for _, p := range paths {
			rel, _ := filepath.Rel(common, p)
			out[p] = filepath.Join(dir, rel)
		}
		return out, nil
	}
	for i, p := range paths {
		dst := filepath.Join(dir, fmt.Sprint(i))
		if err := idmapClone(p, dst, nsfd, false, unix.MS_PRIVATE); err != nil {
			return nil, err
		}
		out[p] = dst
	}
	return out, nil
}

// detachUnder unmounts every mount at or below dir, deepest first.
func detachUnder(dir string) error {
	mounts, err := ReadMountinfo()
	if err != nil {
		return err
	}
	var mps []string
	for _, m := range mounts {
		if m.Mountpoint == dir || strings.HasPrefix(m.Mountpoint, dir+"/") {
			mps = append(mps, m.Mountpoint)
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	var first error
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && err != unix.EINVAL && first == nil {
			first = fmt.Errorf("unmount %s: %w", mp, err)
		}
	}
	return first
}

// cleanupMounts undoes setupMounts. It removes files only on dir's own
// filesystem: should a mount survive, its contents (an image's layers) are
// never deleted.
func cleanupMounts(dir string) error {
	if _, err := os.Lstat(dir); os.IsNotExist(err) {
		return nil
	}
	// Our overlay goes first: the engine's must not come back while another
	// overlay still uses the same upper directory.
	if err := detachUnder(dir); err != nil {
		return err
	}
	if err := restoreEngineRootfs(dir); err != nil {
		return err
	}
	return removeSameMount(dir)
}

func removeSameMount(dir string) error {
	root, err := mountID(dir)
	if err != nil {
		return err
	}
	var rm func(p string) error
	rm = func(p string) error {
		id, err := mountID(p)
		if err != nil {
			return err
		}
		if id != root {
			return fmt.Errorf("%s is still a mount point; not removing", p)
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if st.IsDir() {
			ents, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			for _, e := range ents {
				if err := rm(filepath.Join(p, e.Name())); err != nil {
					return err
				}
			}
		}
		return os.Remove(p)
	}
	return rm(dir)
}

// viewMountOptions: read-only, and the flags the kernel locks on a mount
// copied into the container's namespaces kept, so runc's read-only remount
// of the bind is allowed.
var viewMountOptions = []string{"bind", "ro", "nosuid", "nodev", "noexec"}

// viewMountType is the type of the view mounts: none. The "bind" option
// makes them binds (runc ignores a bind's type); "bind" as a type is no
// filesystem, and OCI tooling that checks a container's mounts against its
// config.json (runtime-tools' runtimetest) cannot verify such a mount: it
// reports a TODO failure for each, which its harness counts as a failed
// test of the whole container (docs/oci-conformance.md). Untyped, each view
// is checked like any bind: destination and source name.
const viewMountType = ""

// addViews bind-mounts sysvisord's view files (dir/<file>) over the
// container's /<file>; runc applies the spec's mounts in order, so they land
// on the /proc and /sys mounted before them. Views are optional: if any file
// is missing, none is added and the container sees the host's files. A file
// the spec already mounts something on (an LXCFS volume, say) is left to it,
// as is a file under /proc or /sys when the spec mounts no procfs or sysfs
// there.
func addViews(s *specs.Spec, dir string, files []string, log *Logger) {
	if dir == "" || len(files) == 0 {
		return
	}
	taken := map[string]bool{}
	var haveProc, haveSys bool
	for _, m := range s.Mounts {
		d := filepath.Clean(m.Destination)
		taken[d] = true
		haveProc = haveProc || (d == "/proc" && m.Type == "proc")
		haveSys = haveSys || (d == "/sys" && m.Type == "sysfs")
	}
	var add []specs.Mount
	for _, f := range files {
		if f == "" || filepath.IsAbs(f) || filepath.Clean(f) != f || strings.HasPrefix(f, "../") {
			log.Warnf("sysvisord named an invalid view %q; the container sees the host's /proc and /sys files", f)
			return
		}
		src, dst := filepath.Join(dir, f), "/"+f
		st, err := os.Stat(src)
		if err != nil || !st.Mode().IsRegular() {
			log.Warnf("/proc and /sys views unavailable (%s: %v); the container sees the host's files", src, err)
			return
		}
		if taken[dst] || (underAny(dst, "/proc") && !haveProc) || (underAny(dst, "/sys") && !haveSys) {
			continue
		}
		add = append(add, specs.Mount{Destination: dst, Type: viewMountType, Source: src, Options: slices.Clone(viewMountOptions)})
	}
	s.Mounts = append(s.Mounts, add...)
}
