package supervisor

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/mountinfo"
	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/enginefs"
	"github.com/sysvisor/sysvisor/supervisor/registry"
)

// The engine's rootfs path (…/overlay2/<id>/merged) holds, once the
// runtime has set a container up, a read-only overlay of its layers as
// they are on disk: the engine can read through it (docker cp out, diff,
// export) but not write (docker cp in). sysvisord then puts there a bind
// of its engine view: the container's own overlay, IDs translated to what
// the engine expects (see enginefs).

// engineDirName is the engine view's mount under the run directory.
const engineDirName = "engine"

// engineViewSource is the source of the runtime's read-only view at the
// engine's path in mountinfo (runtime's viewSource): the one mount, with
// a bind of enginefs, that sysvisord replaces there.
const engineViewSource = "sysvisor-view"

// containerRootfs is the container's overlay on the host, as the runtime
// mounts it (runtime.ContainerDir + "rootfs"): the only tree sysvisord
// serves to the engine.
func containerRootfs(runDir, id string) string {
	if abs, err := filepath.Abs(runDir); err == nil {
		runDir = abs
	}
	return filepath.Join(runDir, "containers", id, "rootfs")
}

// checkEngineViewPaths refuses an engine-view request whose paths are not
// the container's: sysvisord, as root, would otherwise serve and mount
// wherever a client says.
func checkEngineViewPaths(runDir, id, rootfs, enginePath string) error {
	if err := registry.ValidID(id); err != nil {
		return err
	}
	if want := containerRootfs(runDir, id); rootfs != want {
		return fmt.Errorf("rootfs %q is not the container's overlay %s (sysvisord serves no other path)", rootfs, want)
	}
	if enginePath == "" || !filepath.IsAbs(enginePath) || filepath.Clean(enginePath) != enginePath || enginePath == "/" {
		return fmt.Errorf("engine path %q is not an absolute, clean path", enginePath)
	}
	// The engine's path never lies in sysvisor's run directory, where the
	// containers' overlays and sysvisord's own mounts are.
	run := filepath.Dir(filepath.Dir(filepath.Dir(rootfs)))
	if enginePath == run || strings.HasPrefix(enginePath, run+"/") {
		return fmt.Errorf("engine path %s lies in sysvisor's run directory %s", enginePath, run)
	}
	return nil
}

// topMountAt returns the topmost mount at path: the one no other mount at
// path sits on (mountinfo's order need not be the stacking order once
// mounts were moved or propagated). Nil when nothing is mounted there.
func topMountAt(mounts []mountinfo.Entry, path string) *mountinfo.Entry {
	var at []*mountinfo.Entry
	for i := range mounts {
		if mounts[i].Mountpoint == path {
			at = append(at, &mounts[i])
		}
	}
	for i := len(at) - 1; i >= 0; i-- {
		covered := false
		for _, o := range at {
			if o != at[i] && o.Parent == at[i].ID {
				covered = true
				break
			}
		}
		if !covered {
			return at[i]
		}
	}
	return nil
}

// checkContainerOverlay tells whether top, the mount at the container's
// rootfs, is its overlay: a container whose overlay is gone has nothing
// to serve.
func checkContainerOverlay(top *mountinfo.Entry, rootfs string) error {
	if top == nil {
		return fmt.Errorf("nothing is mounted at %s (container's overlay gone)", rootfs)
	}
	if top.FSType != "overlay" {
		return fmt.Errorf("%s holds %s, not the container's overlay", rootfs, top.FSType)
	}
	return nil
}

// checkEngineMount tells whether top, the topmost mount at the engine's
// path, is one sysvisord may replace: the runtime's read-only view, or a
// bind of the engine view of this container (root wantRoot on enginefs:
// an earlier answer's, or a dead one a previous sysvisord served). With
// bindOnly, only the latter. Anything else is the engine's or somebody
// else's, and stays.
func checkEngineMount(top *mountinfo.Entry, path, wantRoot string, bindOnly bool) error {
	switch {
	case top == nil:
		return fmt.Errorf("nothing is mounted at %s (the engine unmounted it)", path)
	case top.FSType == enginefs.FSType:
		if top.Root != wantRoot {
			return fmt.Errorf("%s holds the engine view's %s, not this container's %s", path, top.Root, wantRoot)
		}
		return nil
	case bindOnly:
		return fmt.Errorf("%s holds %s %q, not a bind of the engine view", path, top.FSType, top.Source)
	case top.FSType == "overlay" && top.Source == engineViewSource:
		return nil
	}
	return fmt.Errorf("%s holds %s %q, not sysvisor's read-only view: left alone", path, top.FSType, top.Source)
}

// failEngineBind is a test's way to fail the swap at its most fragile
// point: the mount at the engine's path is down and the bind not up.
var failEngineBind = func() error { return nil }

// swapEngineMount replaces the topmost mount at path with a bind of dir.
// Both are taken before anything changes: should the bind fail once the
// old mount is down, the old one goes back. An empty engine path would
// stay empty: the runtime's delete puts the engine's own overlay back
// (from its engine.json) only over a mount it recognizes as sysvisor's,
// and the engine would meanwhile write into the directory under it.
func swapEngineMount(dir, path string) error {
	src, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("clone %s: %w", dir, err)
	}
	defer unix.Close(src)
	old, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("clone the mount at %s: %w", path, err)
	}
	// Closed unattached, the copy of the old mount dissolves.
	defer unix.Close(old)
	if err := unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	err = failEngineBind()
	if err == nil {
		err = unix.MoveMount(src, "", unix.AT_FDCWD, path, unix.MOVE_MOUNT_F_EMPTY_PATH)
	}
	if err != nil {
		if rerr := unix.MoveMount(old, "", unix.AT_FDCWD, path, unix.MOVE_MOUNT_F_EMPTY_PATH); rerr != nil {
			// Nothing is mounted at path now. The runtime's delete
			// does not put the engine's overlay back over nothing
			// (it takes that for the engine's own unmount).
			return fmt.Errorf("bind at %s: %w (and putting the previous mount back failed: %v; the engine's path stays empty)", path, err, rerr)
		}
		return fmt.Errorf("bind at %s: %w (the previous mount is back)", path, err)
	}
	return nil
}

// startEngine mounts the engine view. Without it containers run as
// before: the engine's path keeps the read-only view.
func (s *Server) startEngine() {
	dir := filepath.Join(s.cfg.RunDir, engineDirName)
	eng, err := enginefs.Mount(dir, s.log.Named("engine"))
	if err != nil {
		s.engineErr = fmt.Errorf("mount %s: %w", dir, err)
		s.log.Warn("engine view disabled: the engine's path of a running container stays read-only (docker cp into it fails)", "dir", dir, "error", err)
		return
	}
	s.engine = eng
}

// stopEngine unmounts the engine view at sysvisord's orderly end. No
// holder keeps it: the binds at the engines' paths fail (ENOTCONN) until
// the next sysvisord serves them again (restoreEngineViews).
func (s *Server) stopEngine() {
	s.engineMu.Lock()
	defer s.engineMu.Unlock()
	if s.engine == nil {
		return
	}
	if err := s.engine.Unmount(); err != nil {
		s.log.Warn("unmount the engine view", "dir", s.engine.Dir(), "error", err)
	}
	s.engine, s.engineErr = nil, errors.New("sysvisord is stopping")
}

// engineView answers OpEngineView.
func (s *Server) engineView(req control.Request) control.Response {
	fail := func(err error) control.Response {
		return control.Response{Error: fmt.Errorf("engine view %s: %w", req.ID, err).Error()}
	}
	if err := checkEngineViewPaths(s.cfg.RunDir, req.ID, req.Rootfs, req.EnginePath); err != nil {
		return fail(err)
	}
	s.engineMu.Lock()
	defer s.engineMu.Unlock()
	if s.engine == nil {
		why := s.engineErr
		if why == nil {
			why = errors.New("not mounted")
		}
		return fail(fmt.Errorf("unavailable: %w", why))
	}
	// Under engineMu: a delete that came first has forgotten the record,
	// one that comes later removes what is served here.
	c, ok := s.reg.Get(req.ID)
	if !ok {
		return fail(fmt.Errorf("no record (create the container first): %w", registry.ErrNotFound))
	}
	mounts, err := mountinfo.Read("/proc/self/mountinfo")
	if err != nil {
		return fail(err)
	}
	if err := checkContainerOverlay(topMountAt(mounts, req.Rootfs), req.Rootfs); err != nil {
		return fail(err)
	}
	if err := checkEngineMount(topMountAt(mounts, req.EnginePath), req.EnginePath, "/"+req.ID, false); err != nil {
		return fail(err)
	}
	if err := s.serveEngineView(c.Snapshot(), req.Rootfs, req.EnginePath, true); err != nil {
		return fail(err)
	}
	s.log.Info("engine view served", "container", req.ID, "engine_path", req.EnginePath, "rootfs", req.Rootfs)
	return control.Response{}
}

// serveEngineView serves rootfs, the overlay of rec's container, and binds
// it at path in place of the mount there. With record, the two paths are
// recorded first: a sysvisord that dies from then on is followed by one
// that serves the bind again (a crash before the swap leaves the view at
// path, which the next one leaves alone). s.engineMu held.
func (s *Server) serveEngineView(rec registry.Record, rootfs, path string, record bool) error {
	// The lease's start is the container's root: disk ID 0.
	dir, err := s.engine.Add(rec.ID, rootfs, rec.Lease.Start)
	if err != nil {
		return fmt.Errorf("serve %s: %w", rootfs, err)
	}
	set := func(rootfs, path string) error {
		_, err := s.reg.Update(rec.ID, func(r *registry.Record) { r.EngineRootfs, r.EnginePath = rootfs, path })
		return err
	}
	if record {
		if err := set(rootfs, path); err != nil {
			s.engine.Remove(rec.ID)
			return fmt.Errorf("record: %w", err)
		}
	}
	if err := swapEngineMount(dir, path); err != nil {
		s.engine.Remove(rec.ID)
		if record {
			if cerr := set("", ""); cerr != nil {
				s.log.Warn("engine view: cannot clear the record", "container", rec.ID, "error", cerr)
			}
		}
		return err
	}
	return nil
}

// restoreEngineViews serves again, at sysvisord's start, the engine views
// a previous sysvisord served: their binds at the engines' paths are dead
// (its mount went with it, and enginefs.Mount detached what was left).
// Only a path whose topmost mount is such a bind is touched: the engine
// may have unmounted it meanwhile (container stopped), and the runtime
// may have put the engine's overlay back (container deleted).
func (s *Server) restoreEngineViews() {
	s.engineMu.Lock()
	defer s.engineMu.Unlock()
	var mounts []mountinfo.Entry
	for _, c := range s.reg.List() {
		rec := c.Snapshot()
		if rec.EnginePath == "" {
			continue
		}
		log := s.log.With("container", rec.ID, "engine_path", rec.EnginePath)
		if s.engine == nil {
			log.Warn("engine view not served again: the engine's path fails (ENOTCONN) until the container is recreated", "error", s.engineErr)
			continue
		}
		if err := checkEngineViewPaths(s.cfg.RunDir, rec.ID, rec.EngineRootfs, rec.EnginePath); err != nil {
			// A record of another run directory.
			log.Warn("engine view not served again", "error", err)
			continue
		}
		if mounts == nil {
			var err error
			if mounts, err = mountinfo.Read("/proc/self/mountinfo"); err != nil {
				log.Warn("engine views not served again", "error", err)
				return
			}
		}
		if err := checkContainerOverlay(topMountAt(mounts, rec.EngineRootfs), rec.EngineRootfs); err != nil {
			log.Debug("engine view not served again", "reason", err)
			continue
		}
		if err := checkEngineMount(topMountAt(mounts, rec.EnginePath), rec.EnginePath, "/"+rec.ID, true); err != nil {
			log.Debug("engine view not served again", "reason", err)
			continue
		}
		if err := s.serveEngineView(rec, rec.EngineRootfs, rec.EnginePath, false); err != nil {
			log.Warn("engine view not served again", "error", fmt.Errorf("engine view %s: %w", rec.ID, err))
			continue
		}
		log.Info("engine view served again")
	}
}

// dropEngineView stops serving id's engine view (delete): its bind, if
// still at the engine's path, fails with ESTALE until the runtime puts the
// engine's overlay back.
func (s *Server) dropEngineView(id string) {
	s.engineMu.Lock()
	defer s.engineMu.Unlock()
	if s.engine != nil {
		s.engine.Remove(id)
	}
}
