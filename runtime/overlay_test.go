package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
)

func TestOverlayData(t *testing.T) {
	got := overlayData([]string{"/l/a,b", "/l/c:d", `/l/e\f`}, "/u", "/w", []string{"index=off", "redirect_dir=on"})
	want := `lowerdir=/l/a\,b:/l/c\:d:/l/e\\f,upperdir=/u,workdir=/w,index=off,redirect_dir=on`
	if got != want {
		t.Errorf("overlayData:\n\tgot  %s\n\twant %s", got, want)
	}
	if got := overlayData([]string{"/a", "/b"}, "", "", nil); got != "lowerdir=/a:/b" {
		t.Errorf("read-only overlayData: %s", got)
	}
}

// layerPaths returns n layer paths below home, each as long as Docker's
// <64 hex>/diff.
func layerPaths(home string, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		out = append(out, filepath.Join(home, fmt.Sprintf("%064x", i), "diff"))
	}
	return out
}

func TestPlanLegacyOverlay(t *testing.T) {
	const home = "/var/lib/docker/overlay2"
	short := overlayMount{Lower: []string{home + "/l/A", home + "/l/B"}, Upper: home + "/x/diff", Work: home + "/x/work",
		Target: home + "/x/merged", Base: home, Links: "/run/c/links"}
	p, err := planLegacyOverlay(short, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if p.cwd != "" || p.links != nil || p.appendLayers || p.data != "lowerdir="+home+"/l/A:"+home+"/l/B,upperdir="+home+"/x/diff,workdir="+home+"/x/work" {
		t.Errorf("short overlay: %+v; want absolute paths", p)
	}

	// Docker's 128 l/ links fit a page relative to the home, not absolute.
	var links []string
	for i := 0; i < 128; i++ {
		links = append(links, fmt.Sprintf("%s/l/%026d", home, i))
	}
	docker := overlayMount{Lower: links, Upper: home + "/" + strings.Repeat("f", 64) + "/diff",
		Work: home + "/" + strings.Repeat("f", 64) + "/work", Other: []string{"index=off"}, Base: home, Links: "/run/c/links"}
	p, err = planLegacyOverlay(docker, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if p.cwd != home || p.links != nil || !strings.HasPrefix(p.data, "lowerdir=l/"+fmt.Sprintf("%026d", 0)+":l/") ||
		!strings.HasSuffix(p.data, ",upperdir="+strings.Repeat("f", 64)+"/diff,workdir="+strings.Repeat("f", 64)+"/work,index=off") || len(p.data) > 4095 {
		t.Errorf("Docker's 128 layers: cwd %q, links %v, %d bytes: %.120s...", p.cwd, p.links, len(p.data), p.data)
	}

	// 120 layers with long paths fit only as symlinks.
	long := overlayMount{Lower: layerPaths(home, 120), Upper: "/elsewhere/up", Work: "/elsewhere/work", Base: home, Links: "/run/c/links"}
	p, err = planLegacyOverlay(long, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if p.cwd != "/run/c/links" || len(p.links) != 122 || p.links["0"] != long.Lower[0] || p.links["119"] != long.Lower[119] ||
		p.links["u"] != "/elsewhere/up" || p.links["w"] != "/elsewhere/work" ||
		!strings.HasPrefix(p.data, "lowerdir=0:1:2:") || !strings.HasSuffix(p.data, ":119,upperdir=u,workdir=w") {
		t.Errorf("120 long layers: cwd %q, %d links, data %q", p.cwd, len(p.links), p.data)
	}

	// Relative paths keep what lies outside the base absolute.
	mixed := overlayMount{Lower: append(layerPaths(home, 50), "/other/layer"), Base: home}
	if p, err := planLegacyOverlay(mixed, 4096); err != nil || p.cwd != home || !strings.HasSuffix(p.data, "/diff:/other/layer") {
		t.Errorf("a layer outside the base: %+v, %v", p, err)
	}

	// Without a links directory, too long is an error that says why.
	noLinks := long
	noLinks.Links = ""
	if _, err := planLegacyOverlay(noLinks, 4096); err == nil || !strings.Contains(err.Error(), "exceed a page") || !strings.Contains(err.Error(), "lowerdir+") {
		t.Errorf("120 long layers without links: %v", err)
	}
	if _, err := planLegacyOverlay(overlayMount{}, 4096); err == nil {
		t.Error("an overlay without layers was planned")
	}
}

// needRoot skips tests that mount.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// engineHome is a driver home with n layers, an upper and a work
// directory, Docker's way: <id>/diff for every layer, and l/<short> links.
type engineHome struct {
	home, id string
	lower    []string // absolute paths of the links, top layer first
	rootfs   string
}

func newEngineHome(t *testing.T, n int) *engineHome {
	t.Helper()
	// On the disk (idmapped mounts need a filesystem that supports them),
	// with a long path, as a data root may be.
	home, err := os.MkdirTemp("/var/tmp", "sysvisor-overlay-test-"+strings.Repeat("x", 40)+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		detachUnder(home)
		os.RemoveAll(home)
	})
	os.Chmod(home, 0o711)
	e := &engineHome{home: home, id: strings.Repeat("c", 64)}
	if err := os.MkdirAll(filepath.Join(home, "l"), 0o700); err != nil {
		t.Fatal(err)
	}
	for i := n - 1; i >= 0; i-- {
		diff := filepath.Join(home, fmt.Sprintf("%064x", i), "diff")
		if err := os.MkdirAll(diff, 0o755); err != nil {
			t.Fatal(err)
		}
		// Every layer adds a file; the bottom one a directory each
		// layer above adds to.
		if err := os.WriteFile(filepath.Join(diff, fmt.Sprintf("layer%d", i)), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
		link := fmt.Sprintf("%026d", i)
		if err := os.Symlink("../"+fmt.Sprintf("%064x", i)+"/diff", filepath.Join(home, "l", link)); err != nil {
			t.Fatal(err)
		}
		e.lower = append(e.lower, filepath.Join(home, "l", link))
	}
	for _, d := range []string{"diff", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(home, e.id, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.rootfs = filepath.Join(home, e.id, "merged")
	return e
}

func (e *engineHome) upper() string { return filepath.Join(e.home, e.id, "diff") }
func (e *engineHome) work() string  { return filepath.Join(e.home, e.id, "work") }

// mountDocker mounts the engine's overlay as Docker does on every kernel:
// mount(2), the links relative to the home when absolute ones exceed a page.
func (e *engineHome) mountDocker(t *testing.T) {
	t.Helper()
	m := overlayMount{Lower: e.lower, Upper: e.upper(), Work: e.work(), Other: []string{"index=off"},
		Target: e.rootfs, Source: "overlay", Base: e.home}
	p, err := planLegacyOverlay(m, unix.Getpagesize())
	if err != nil {
		t.Fatal(err)
	}
	if p.links != nil {
		t.Fatalf("Docker's layout needs no links: %+v", p)
	}
	if err := p.mount(nil); err != nil {
		t.Fatal(err)
	}
}

// mountAppend mounts the engine's overlay with lowerdir+ and the layers'
// long paths, as an engine using the new mount API may.
func (e *engineHome) mountAppend(t *testing.T) {
	t.Helper()
	var lower []string
	for i := len(e.lower) - 1; i >= 0; i-- {
		lower = append([]string{filepath.Join(e.home, fmt.Sprintf("%064x", i), "diff")}, lower...)
	}
	if err := onOwnThread(func() error {
		return fsOverlay(overlayMount{Lower: lower, Upper: e.upper(), Work: e.work(), Target: e.rootfs, Source: "overlay"})
	}); err != nil {
		t.Fatal(err)
	}
}

// checkEngineOverlay checks that the engine's own writable overlay is at
// its path with every layer.
// idmapContainer sets container id up on the engine's rootfs as create
// does (idmapRootfs with a range at base) and returns its directory, its
// overlay's path and the engine's overlay as parsed.
func (e *engineHome) idmapContainer(t *testing.T, id string, base uint32) (string, string, *Overlay) {
	t.Helper()
	dir := filepath.Join(e.home, "run", "containers", id)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	nsfd, err := UsernsFd(base, 65536)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nsfd)
	target := filepath.Join(dir, "rootfs")
	o, err := idmapRootfs(e.rootfs, target, dir, nsfd, base)
	if err != nil {
		t.Fatalf("idmapRootfs: %v", err)
	}
	return dir, target, o
}

func (e *engineHome) checkEngineOverlay(t *testing.T, when string) *MountEntry {
	t.Helper()
	top, err := topMount(e.rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if top == nil || top.FSType != "overlay" || top.Source != "overlay" {
		t.Fatalf("%s: at the engine's path: %+v, want its overlay", when, top)
	}
	o, err := ParseOverlay(top.Super, e.home)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	if o.Upper != e.upper() || len(o.Lower) != len(e.lower) {
		t.Fatalf("%s: engine's path has upper %s and %d layers, want %s and %d", when, o.Upper, len(o.Lower), e.upper(), len(e.lower))
	}
	e.checkLayers(t, e.rootfs, when)
	var st unix.Statfs_t
	if err := unix.Statfs(e.rootfs, &st); err != nil || st.Flags&unix.ST_RDONLY != 0 {
		t.Fatalf("%s: engine's overlay read-only (%v)", when, err)
	}
	return top
}

func (e *engineHome) checkLayers(t *testing.T, dir, what string) {
	t.Helper()
	for _, i := range []int{0, len(e.lower) / 2, len(e.lower) - 1} {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("layer%d", i)))
		if err != nil || string(b) != fmt.Sprint(i) {
			t.Fatalf("%s: layer %d's file: %q, %v", what, i, b, err)
		}
	}
}

// forcedOverlayFallback says whether this process runs with lowerdir+
// forced off; the tests below run once more that way (withFallback).
func forcedOverlayFallback() bool { return kernel.OverlayLowerdirAppend.Forced() }

// withFallback runs the test named again in a child process of the test
// binary with the overlay fallback forced.
func withFallback(t *testing.T) {
	t.Helper()
	if forcedOverlayFallback() {
		return
	}
	t.Run("fallback-forced", func(t *testing.T) {
		cmd := exec.Command(os.Args[0], "-test.run", "^"+t.Name()[:strings.Index(t.Name(), "/")]+"$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), kernel.EnvFallbacks+"=overlay-lowerdir-append")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "lowerdir+ forced off") {
			t.Fatalf("with %s=overlay-lowerdir-append: %v\n%s", kernel.EnvFallbacks, err, out)
		}
		t.Logf("with the fallback forced:\n%s", out)
	})
}

func TestIdmapRootfsManyLayers(t *testing.T) {
	needRoot(t)
	if forcedOverlayFallback() {
		t.Log("lowerdir+ forced off")
	} else if kernel.OverlayLowerdirAppend.Probe() != nil {
		t.Log("this kernel has no lowerdir+: the fallback is the only path")
	}
	for _, tc := range []struct {
		name   string
		layers int
		append bool
	}{
		{"docker-128-relative", 128, false},
		{"lowerdir+-120-long-paths", 120, true},
		{"docker-3", 3, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.append && kernel.OverlayLowerdirAppend.Probe() != nil {
				t.Skip("the engine's overlay needs lowerdir+ here")
			}
			e := newEngineHome(t, tc.layers)
			if tc.append {
				e.mountAppend(t)
			} else {
				e.mountDocker(t)
			}
			before := e.checkEngineOverlay(t, "before")
			const base = 1 << 30
			dir, target, o := e.idmapContainer(t, "c1", base)
			if len(o.Lower) != tc.layers {
				t.Fatalf("parsed %d layers, want %d", len(o.Lower), tc.layers)
			}
			// The container's overlay: every layer, owned by base.
			e.checkLayers(t, target, "container's overlay")
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(target, "layer0"), &st); err != nil || st.Uid != base || st.Gid != base {
				t.Fatalf("container's overlay: layer0 owned by %d:%d (%v), want %d", st.Uid, st.Gid, err, base)
			}
			ours, _ := topMount(target)
			// As the kernel shows it: one lowerdir+ per layer, or the
			// fallback's single lowerdir.
			wantAppend := kernel.OverlayLowerdirAppend.Has()
			if ours == nil || strings.Contains(ours.Super, "lowerdir+=") != wantAppend {
				t.Fatalf("container's overlay %+v, lowerdir+ %v", ours, wantAppend)
			}
			t.Logf("container's overlay: %.200s", ours.Super)
			// The view at the engine's path: read-only, on-disk owners.
			view, _ := topMount(e.rootfs)
			if view == nil || view.Source != viewSource {
				t.Fatalf("engine's path holds %+v, want the view", view)
			}
			e.checkLayers(t, e.rootfs, "view")
			if err := unix.Stat(filepath.Join(e.rootfs, "layer0"), &st); err != nil || st.Uid != 0 {
				t.Fatalf("view: layer0 owned by %d (%v), want 0", st.Uid, err)
			}
			if err := os.WriteFile(filepath.Join(e.rootfs, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
				t.Fatalf("write to the view: %v, want EROFS", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "links.rootfs")); !os.IsNotExist(err) {
				t.Errorf("links left behind: %v", err)
			}
			if err := cleanupMounts(dir); err != nil {
				t.Fatalf("cleanupMounts: %v", err)
			}
			after := e.checkEngineOverlay(t, "after release")
			// Put back as the engine made it: the next create reads it the
			// same way.
			if sameOptions(after.Super) != sameOptions(before.Super) {
				t.Errorf("engine's overlay put back as\n\t%s\nwas\n\t%s", tail(after.Super), tail(before.Super))
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("container directory left: %v", err)
			}
		})
	}
	withFallback(t)
}

func TestCreateFailsAfterEngineDown(t *testing.T) {
	needRoot(t)
	if forcedOverlayFallback() {
		t.Log("lowerdir+ forced off")
	}
	e := newEngineHome(t, 128)
	e.mountDocker(t)
	before := e.checkEngineOverlay(t, "before")
	dir := filepath.Join(e.home, "run", "containers", "c1")
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	nsfd, err := UsernsFd(1<<30, 65536)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nsfd)
	// As the overlay's create failed on 6.1 (EINVAL), with the engine's
	// overlay taken down.
	failAfterEngineDown = func() error {
		if top, _ := topMount(e.rootfs); top != nil {
			t.Errorf("the engine's overlay is still up at the failure point: %+v", top)
		}
		return fmt.Errorf("create overlay: %w", unix.EINVAL)
	}
	defer func() { failAfterEngineDown = func() error { return nil } }()
	_, err = idmapRootfs(e.rootfs, filepath.Join(dir, "rootfs"), dir, nsfd, 1<<30)
	if !errors.Is(err, unix.EINVAL) || strings.Contains(err.Error(), "putting") {
		t.Fatalf("idmapRootfs: %v, want the injected failure alone", err)
	}
	if after := e.checkEngineOverlay(t, "after the failed create"); sameOptions(after.Super) != sameOptions(before.Super) {
		t.Errorf("engine's overlay put back as %s, was %s", tail(after.Super), tail(before.Super))
	}
	// Release after that leaves the engine's overlay alone.
	if err := cleanupMounts(dir); err != nil {
		t.Fatal(err)
	}
	e.checkEngineOverlay(t, "after release")

	// A create that died with the engine's overlay down (killed, say):
	// release puts it back from engine.json.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	top, _ := topMount(e.rootfs)
	o, err := ParseOverlay(top.Super, e.home)
	if err != nil {
		t.Fatal(err)
	}
	o.Source = top.Source
	b, _ := json.Marshal(engineMount{Rootfs: e.rootfs, Overlay: *o})
	if err := os.WriteFile(filepath.Join(dir, engineFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Unmount(e.rootfs, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := cleanupMounts(dir); err != nil {
		t.Fatal(err)
	}
	if after := e.checkEngineOverlay(t, "after release of a killed create"); sameOptions(after.Super) != sameOptions(before.Super) {
		t.Errorf("engine's overlay put back as %s, was %s", tail(after.Super), tail(before.Super))
	}
	withFallback(t)
}

func TestRestoreSurvivesRefusedLowerdirAppend(t *testing.T) {
	needRoot(t)
	// The engine's overlay recorded as lowerdir+ but an option the new
	// mount API refuses for a string value (256 bytes or more): the first
	// attempt fails and the mount(2) form must put the overlay back.
	if kernel.OverlayLowerdirAppend.Probe() != nil {
		t.Skip("needs lowerdir+")
	}
	e := newEngineHome(t, 2)
	e.mountDocker(t)
	top, _ := topMount(e.rootfs)
	o, err := ParseOverlay(top.Super, e.home)
	if err != nil {
		t.Fatal(err)
	}
	o.Append = true
	// fsconfig refuses a value of 256 bytes (EINVAL); mount(2) takes it.
	o.Upper = filepath.Join(e.home, e.id, "diff") + strings.Repeat("/", 256-len(filepath.Join(e.home, e.id, "diff")))
	if err := unix.Unmount(e.rootfs, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := restoreEngineOverlay(o, e.rootfs, dir); err != nil {
		t.Fatalf("restoreEngineOverlay: %v", err)
	}
	e.checkLayers(t, e.rootfs, "restored")
	if after, _ := topMount(e.rootfs); after == nil || strings.Contains(after.Super, "lowerdir+") {
		t.Errorf("restored as %+v; want the mount(2) form", after)
	}
}

// sameOptions drops what the kernel adds by itself: the first mount of a
// new upper directory stores a persistent UUID there and shows uuid=on,
// later mounts find it in the default mode (auto) and show nothing.
func sameOptions(super string) string { return strings.TrimSuffix(super, ",uuid=on") }

// tail is the end of mount options, where they differ.
func tail(s string) string { return s[max(0, len(s)-160):] }

// A read-only bind of a host mount with nosuid, nodev or noexec keeps them:
// in the container's user namespace they are locked, and runc's remount
// with fewer flags fails (containerd's CRI binds each pod's /dev/shm so).
func TestKeepLockedFlags(t *testing.T) {
	var st unix.Statfs_t
	if err := unix.Statfs("/proc", &st); err != nil || st.Flags&(unix.ST_NOSUID|unix.ST_NODEV|unix.ST_NOEXEC) != unix.ST_NOSUID|unix.ST_NODEV|unix.ST_NOEXEC {
		t.Skipf("/proc is not nosuid,nodev,noexec here (%v)", err)
	}
	for _, tc := range []struct{ in, want []string }{
		{[]string{"rbind", "ro"}, []string{"rbind", "ro", "nosuid", "nodev", "noexec"}},
		{[]string{"rbind", "ro", "nodev"}, []string{"rbind", "ro", "nodev", "nosuid", "noexec"}},
		{[]string{"bind", "ro", "suid", "exec"}, []string{"bind", "ro", "nosuid", "nodev", "noexec"}},
		// No remount: runc's bind copies the flags as they are.
		{[]string{"rbind", "rw"}, []string{"rbind", "rw"}},
	} {
		m := specs.Mount{Type: "bind", Source: "/proc", Destination: "/x", Options: slices.Clone(tc.in)}
		keepLockedFlags(&m)
		if !slices.Equal(m.Options, tc.want) {
			t.Errorf("%v: %v, want %v", tc.in, m.Options, tc.want)
		}
	}
	m := specs.Mount{Type: "bind", Source: "/nonexistent", Destination: "/x", Options: []string{"ro"}}
	if keepLockedFlags(&m); !slices.Equal(m.Options, []string{"ro"}) {
		t.Errorf("missing source: %v", m.Options)
	}
}
