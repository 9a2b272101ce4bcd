package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/mountinfo"
	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/enginefs"
	"github.com/sysvisor/sysvisor/supervisor/registry"
)

func TestCheckEngineViewPaths(t *testing.T) {
	const run = "/run/sysvisor"
	rootfs := "/run/sysvisor/containers/c1/rootfs"
	merged := "/var/lib/docker/overlay2/abc/merged"
	tests := []struct {
		name, id, rootfs, engine string
		want                     string // in the error; "" for none
	}{
		{"the container's", "c1", rootfs, merged, ""},
		{"another container's overlay", "c1", "/run/sysvisor/containers/c2/rootfs", merged, "not the container's overlay"},
		{"a path the client picks", "c1", "/", merged, "not the container's overlay"},
		{"unclean rootfs", "c1", "/run/sysvisor/containers/c1/../c1/rootfs", merged, "not the container's overlay"},
		{"rootfs with a slash", "c1", rootfs + "/", merged, "not the container's overlay"},
		{"no rootfs", "c1", "", merged, "not the container's overlay"},
		{"relative engine path", "c1", rootfs, "var/lib/docker/overlay2/abc/merged", "not an absolute, clean path"},
		{"unclean engine path", "c1", rootfs, "/var/lib/docker/overlay2/abc/../abc/merged", "not an absolute, clean path"},
		{"engine path with a slash", "c1", rootfs, merged + "/", "not an absolute, clean path"},
		{"no engine path", "c1", rootfs, "", "not an absolute, clean path"},
		{"engine path /", "c1", rootfs, "/", "not an absolute, clean path"},
		{"engine path in the run dir", "c1", rootfs, "/run/sysvisor/engine", "run directory"},
		{"the container's own overlay", "c1", rootfs, rootfs, "run directory"},
		{"the run dir", "c1", rootfs, run, "run directory"},
		{"a sibling of the run dir", "c1", rootfs, "/run/sysvisor2/x", ""},
		{"id escaping", "..", "/run/sysvisor/containers/../rootfs", merged, "invalid container id"},
		{"id with a slash", "a/b", "/run/sysvisor/containers/a/b/rootfs", merged, "invalid container id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkEngineViewPaths(run, tc.id, tc.rootfs, tc.engine)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	// A run directory given unclean or relative is the same directory.
	if err := checkEngineViewPaths("/run/sysvisor/", "c1", rootfs, merged); err != nil {
		t.Errorf("run dir with a slash: %v", err)
	}
	wd, _ := os.Getwd()
	if err := checkEngineViewPaths("run", "c1", filepath.Join(wd, "run/containers/c1/rootfs"), merged); err != nil {
		t.Errorf("relative run dir: %v", err)
	}
}

func TestTopMountAt(t *testing.T) {
	const p = "/var/lib/docker/overlay2/abc/merged"
	m := func(id, parent int, mp, fstype string) mountinfo.Entry {
		return mountinfo.Entry{ID: id, Parent: parent, Mountpoint: mp, FSType: fstype}
	}
	tests := []struct {
		name   string
		mounts []mountinfo.Entry
		want   int // mount id, 0 for none
	}{
		{"none", []mountinfo.Entry{m(1, 0, "/", "ext4"), m(2, 1, p+"/x", "tmpfs")}, 0},
		{"one", []mountinfo.Entry{m(1, 0, "/", "ext4"), m(2, 1, p, "overlay")}, 2},
		{"stacked", []mountinfo.Entry{m(1, 0, "/", "ext4"), m(2, 1, p, "overlay"), m(3, 2, p, enginefs.FSType)}, 3},
		// Listed before the mount it sits on (moved there later).
		{"stacked, listed first", []mountinfo.Entry{m(1, 0, "/", "ext4"), m(7, 5, p, enginefs.FSType), m(5, 1, p, "overlay")}, 7},
		{"three", []mountinfo.Entry{m(9, 8, p, "c"), m(8, 4, p, "b"), m(4, 1, p, "a")}, 9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := topMountAt(tc.mounts, p)
			switch {
			case tc.want == 0 && got != nil:
				t.Errorf("got mount %d, want none", got.ID)
			case tc.want != 0 && (got == nil || got.ID != tc.want):
				t.Errorf("got %+v, want mount %d", got, tc.want)
			}
		})
	}
}

func TestCheckEngineMount(t *testing.T) {
	const p = "/var/lib/docker/overlay2/abc/merged"
	view := &mountinfo.Entry{FSType: "overlay", Source: "sysvisor-view", Root: "/"}
	bind := &mountinfo.Entry{FSType: enginefs.FSType, Source: enginefs.FSName, Root: "/c1"}
	tests := []struct {
		name     string
		top      *mountinfo.Entry
		bindOnly bool
		want     string
	}{
		{"read-only view", view, false, ""},
		{"bind of this container's", bind, false, ""},
		{"bind at restart", bind, true, ""},
		{"read-only view at restart", view, true, "not a bind of the engine view"},
		{"another container's bind", &mountinfo.Entry{FSType: enginefs.FSType, Root: "/c2"}, false, "not this container's"},
		{"the engine view's root", &mountinfo.Entry{FSType: enginefs.FSType, Root: "/"}, false, "not this container's"},
		{"the engine's overlay", &mountinfo.Entry{FSType: "overlay", Source: "overlay", Root: "/"}, false, "not sysvisor's read-only view"},
		{"the /proc views", &mountinfo.Entry{FSType: "fuse.sysvisor", Source: "sysvisor-views", Root: "/c1"}, false, "not sysvisor's read-only view"},
		{"a view source on another type", &mountinfo.Entry{FSType: "tmpfs", Source: "sysvisor-view"}, false, "not sysvisor's read-only view"},
		{"nothing", nil, false, "nothing is mounted"},
		{"nothing at restart", nil, true, "nothing is mounted"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkEngineMount(tc.top, p, "/c1", tc.bindOnly)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
	if err := checkContainerOverlay(nil, "/r"); err == nil {
		t.Error("no overlay accepted")
	}
	if err := checkContainerOverlay(&mountinfo.Entry{FSType: "tmpfs"}, "/r"); err == nil {
		t.Error("a tmpfs taken for the container's overlay")
	}
	if err := checkContainerOverlay(&mountinfo.Entry{FSType: "overlay"}, "/r"); err != nil {
		t.Errorf("overlay refused: %v", err)
	}
}

// Requests sysvisord refuses before touching anything.
func TestEngineViewRefused(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	rootfs := containerRootfs(e.cfg.RunDir, "c1")
	merged := "/var/lib/docker/overlay2/abc/merged"
	call := func(req control.Request) string {
		t.Helper()
		req.Op = control.OpEngineView
		return s.handleControl(req).Error
	}
	if got := call(control.Request{ID: "c1", Rootfs: rootfs, EnginePath: merged}); !strings.Contains(got, "unavailable") {
		t.Errorf("without the engine view: %q", got)
	}
	s.engineErr = errors.New("no /dev/fuse")
	if got := call(control.Request{ID: "c1", Rootfs: rootfs, EnginePath: merged}); !strings.Contains(got, "unavailable: no /dev/fuse") || !strings.HasPrefix(got, "engine view c1: ") {
		t.Errorf("without the engine view: %q", got)
	}
	for _, tc := range []struct {
		name string
		req  control.Request
		want string
	}{
		{"another path", control.Request{ID: "c1", Rootfs: "/var/lib/docker/overlay2/abc/diff", EnginePath: merged}, "not the container's overlay"},
		{"another container's", control.Request{ID: "c1", Rootfs: containerRootfs(e.cfg.RunDir, "c2"), EnginePath: merged}, "not the container's overlay"},
		{"relative engine path", control.Request{ID: "c1", Rootfs: rootfs, EnginePath: "merged"}, "not an absolute, clean path"},
		{"bad id", control.Request{ID: "../c1", Rootfs: rootfs, EnginePath: merged}, "invalid container id"},
	} {
		if got := call(tc.req); !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// mountTmpfs mounts a tmpfs at dir holding one file, name.
func mountTmpfs(t *testing.T, dir, name string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("sysvisor-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func unmountAll(dir string) {
	for unix.Unmount(dir, unix.MNT_DETACH) == nil {
	}
}

func topAt(t *testing.T, path string) *mountinfo.Entry {
	t.Helper()
	mounts, err := mountinfo.Read("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return topMountAt(mounts, path)
}

// abortFuse ends the FUSE connection of the mount at dir, as the death
// of its server does.
func abortFuse(t *testing.T, dir string) {
	t.Helper()
	top := topAt(t, dir)
	if top == nil {
		t.Fatalf("nothing mounted at %s", dir)
	}
	// fusectl of our own: the host's may not be mounted.
	ctl := t.TempDir()
	if err := unix.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil {
		t.Skipf("fusectl: %v", err)
	}
	defer unix.Unmount(ctl, unix.MNT_DETACH)
	p := filepath.Join(ctl, fmt.Sprint(top.Minor), "abort")
	if err := os.WriteFile(p, []byte("1"), 0o200); err != nil {
		t.Fatalf("abort the FUSE connection: %v", err)
	}
}

func needMountRoot(t *testing.T) {
	t.Helper()
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// The swap replaces the mount at the path, and puts it back when the bind
// fails once it is down.
func TestSwapEngineMount(t *testing.T) {
	needMountRoot(t)
	tmp := t.TempDir()
	path, src := filepath.Join(tmp, "merged"), filepath.Join(tmp, "src")
	mountTmpfs(t, path, "old")
	mountTmpfs(t, src, "new")
	if err := os.Mkdir(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(src, "sub", "served"), nil, 0o644)
	before := topAt(t, path)
	if err := swapEngineMount(filepath.Join(src, "sub"), path); err != nil {
		t.Fatal(err)
	}
	top := topAt(t, path)
	if _, err := os.Stat(filepath.Join(path, "served")); err != nil || top.Root != "/sub" {
		t.Fatalf("after the swap: %+v (%v)", top, err)
	}
	// Replaced, not stacked.
	if top.Parent == before.ID {
		t.Errorf("the old mount is still under the new one")
	}

	failEngineBind = func() error { return unix.EINVAL }
	defer func() { failEngineBind = func() error { return nil } }()
	err := swapEngineMount(src, path)
	if err == nil || !strings.Contains(err.Error(), "previous mount is back") {
		t.Errorf("failed bind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(path, "served")); err != nil {
		t.Errorf("the previous mount is not back: %v", err)
	}
	if got := topAt(t, path); got == nil || got.Root != "/sub" || got.FSType != "tmpfs" {
		t.Errorf("after a failed swap: %+v", got)
	}
	if err := swapEngineMount(filepath.Join(tmp, "missing"), path); err == nil {
		t.Error("a missing directory bound")
	}
}

// The engine view replaces the read-only view, is recorded, is served
// again by a restarted sysvisord over the dead bind, and stops with the
// container's delete.
func TestEngineViewLifecycle(t *testing.T) {
	needMountRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	e := newEnv(t)
	s := e.start(t)
	if r := s.handleControl(control.Request{Op: control.OpCreate, ID: "c1", RuncRoot: e.runcRoot}); r.Error != "" {
		t.Fatal(r.Error)
	}
	c1, _ := s.reg.Get("c1")
	base := c1.Snapshot().Lease.Start

	// The container's overlay, its files owned by host IDs from base,
	// and the runtime's read-only view of the same layers at the
	// engine's path.
	tmp := t.TempDir()
	lower, upper, work := filepath.Join(tmp, "lower"), filepath.Join(tmp, "upper"), filepath.Join(tmp, "work")
	for _, d := range []string{lower, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chown(d, int(base), int(base))
	}
	os.WriteFile(filepath.Join(lower, "etc-file"), []byte("x"), 0o644)
	os.Chown(filepath.Join(lower, "etc-file"), int(base)+5, int(base)+5)
	rootfs := containerRootfs(e.cfg.RunDir, "c1")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("overlay", rootfs, "overlay", 0, "lowerdir="+lower+",upperdir="+upper+",workdir="+work); err != nil {
		t.Skipf("overlay: %v", err)
	}
	t.Cleanup(func() { unmountAll(rootfs) })
	// Stopped last, once nothing is bound from it.
	s.startEngine()
	if s.engine == nil {
		t.Fatalf("engine view: %v", s.engineErr)
	}
	t.Cleanup(s.stopEngine)
	merged := filepath.Join(tmp, "merged")
	os.Mkdir(merged, 0o755)
	if err := unix.Mount(engineViewSource, merged, "overlay", unix.MS_RDONLY, "lowerdir="+upper+":"+lower); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountAll(merged) })
	req := control.Request{Op: control.OpEngineView, ID: "c1", Rootfs: rootfs, EnginePath: merged}
	if r := s.handleControl(req); r.Error != "" {
		t.Fatal(r.Error)
	}
	top := topAt(t, merged)
	if top == nil || top.FSType != enginefs.FSType || top.Root != "/c1" {
		t.Fatalf("engine's path holds %+v", top)
	}
	// Recorded on disk.
	b, _ := os.ReadFile(filepath.Join(e.cfg.StateDir, "containers", "c1.json"))
	var rec registry.Record
	if json.Unmarshal(b, &rec); rec.EngineRootfs != rootfs || rec.EnginePath != merged {
		t.Errorf("record: %s", b)
	}
	// The engine, as host root, writes into the running container with
	// the container's IDs on disk.
	st := func(p string) (unix.Stat_t, error) {
		var st unix.Stat_t
		return st, unix.Lstat(p, &st)
	}
	if err := os.WriteFile(filepath.Join(merged, "copied"), []byte("y"), 0o644); err != nil {
		t.Fatalf("write through the engine's path: %v", err)
	}
	if a, err := st(filepath.Join(upper, "copied")); err != nil || a.Uid != base {
		t.Errorf("copied file on disk: uid %d (%v), want %d", a.Uid, err, base)
	}
	if a, err := st(filepath.Join(merged, "etc-file")); err != nil || a.Uid != 5 {
		t.Errorf("a file of uid 5 through the engine's path: uid %d (%v)", a.Uid, err)
	}
	// Asked again (a retried create): the bind is replaced, not stacked.
	if r := s.handleControl(req); r.Error != "" {
		t.Errorf("again: %s", r.Error)
	}
	// Another container's request cannot take this path.
	if r := s.handleControl(control.Request{Op: control.OpCreate, ID: "c2", RuncRoot: e.runcRoot}); r.Error != "" {
		t.Fatal(r.Error)
	}
	os.MkdirAll(containerRootfs(e.cfg.RunDir, "c2"), 0o755)
	if err := unix.Mount("overlay", containerRootfs(e.cfg.RunDir, "c2"), "overlay", unix.MS_RDONLY, "lowerdir="+lower+":"+work); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountAll(containerRootfs(e.cfg.RunDir, "c2")) })
	if r := s.handleControl(control.Request{Op: control.OpEngineView, ID: "c2", Rootfs: containerRootfs(e.cfg.RunDir, "c2"), EnginePath: merged}); !strings.Contains(r.Error, "not this container's") {
		t.Errorf("c2 over c1's engine view: %q", r.Error)
	}

	// sysvisord killed: the bind goes dead with the connection, and the
	// next sysvisord serves it again.
	abortFuse(t, s.engine.Dir())
	if _, err := os.Stat(filepath.Join(merged, "copied")); !errors.Is(err, unix.ENOTCONN) {
		t.Errorf("the engine view after sysvisord's end: %v, want ENOTCONN", err)
	}
	// A killed sysvisord unmounts nothing: the next finds the dead mount
	// at its directory (where mkdir fails with ENOTCONN) and replaces it.
	s.engine = nil
	s.startEngine()
	if s.engine == nil {
		t.Fatalf("engine view over the dead mount: %v", s.engineErr)
	}
	s.restoreEngineViews()
	if b, err := os.ReadFile(filepath.Join(merged, "copied")); err != nil || string(b) != "y" {
		t.Errorf("after a restart: %q %v", b, err)
	}
	if top := topAt(t, merged); top == nil || top.FSType != enginefs.FSType || top.Root != "/c1" {
		t.Errorf("after a restart the engine's path holds %+v", top)
	}

	// Deleted: no longer served.
	if r := s.handleControl(control.Request{Op: control.OpDelete, ID: "c1"}); r.Error != "" {
		t.Fatal(r.Error)
	}
	if _, err := os.ReadFile(filepath.Join(merged, "copied")); err == nil {
		t.Errorf("still served after delete")
	}
	if r := s.handleControl(req); !strings.Contains(r.Error, "no record") {
		t.Errorf("after delete: %q", r.Error)
	}
}
