package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/enginefs"
)

// The runtime spells the engine view's fstype itself (see
// engineViewFSType); it must be enginefs's.
func TestEngineViewFSType(t *testing.T) {
	if engineViewFSType != enginefs.FSType {
		t.Errorf("runtime's engineViewFSType %q, enginefs.FSType %q", engineViewFSType, enginefs.FSType)
	}
}

// Release recognizes sysvisord's bind of the engine view, live or dead,
// as it does the read-only view.
func TestIsViewEngineBind(t *testing.T) {
	em := &engineMount{Rootfs: "/var/lib/docker/overlay2/abc/merged",
		Overlay: Overlay{Lower: []string{"/var/lib/docker/overlay2/l/A"}, Upper: "/var/lib/docker/overlay2/abc/diff"}}
	for _, tc := range []struct {
		name string
		top  MountEntry
		want bool
	}{
		{"engine view bind", MountEntry{FSType: enginefs.FSType, Source: enginefs.FSName, Super: "rw,user_id=0,group_id=0,default_permissions"}, true},
		{"read-only view", MountEntry{FSType: "overlay", Source: viewSource, Super: "ro,lowerdir=/x"}, true},
		{"the engine's overlay", MountEntry{FSType: "overlay", Source: "overlay", Super: "rw,lowerdir=/var/lib/docker/overlay2/l/A,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/w"}, false},
		{"sysvisord's /proc views", MountEntry{FSType: "fuse.sysvisor", Source: "sysvisor-views"}, false},
		{"another FUSE", MountEntry{FSType: "fuse.sshfs", Source: enginefs.FSName}, false},
		{"a bind of the host", MountEntry{FSType: "ext4", Source: "/dev/sda1"}, false},
	} {
		if got := isView(&tc.top, em); got != tc.want {
			t.Errorf("%s: isView %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestEngineViewRequest(t *testing.T) {
	dir := "/run/sysvisor/containers/c1"
	em := &engineMount{Rootfs: "/var/lib/docker/overlay2/abc/merged", ViewUp: true}
	req, ok := engineViewRequest("c1", dir, em)
	want := control.Request{Op: control.OpEngineView, ID: "c1", Rootfs: "/run/sysvisor/containers/c1/rootfs", EnginePath: em.Rootfs}
	if !ok || fmt.Sprintf("%+v", req) != fmt.Sprintf("%+v", want) {
		t.Errorf("request %+v (%v), want %+v", req, ok, want)
	}
	// A relative run directory is sent as sysvisord compares it.
	wd, _ := os.Getwd()
	if req, _ := engineViewRequest("c1", "run/containers/c1", em); req.Rootfs != filepath.Join(wd, "run/containers/c1/rootfs") {
		t.Errorf("relative: rootfs %q", req.Rootfs)
	}
	// No view at the engine's path: a plain directory as rootfs, or a
	// create that never got its view up.
	for name, em := range map[string]*engineMount{
		"no engine.json":     nil,
		"view not up":        {Rootfs: em.Rootfs},
		"no engine's rootfs": {ViewUp: true},
	} {
		if req, ok := engineViewRequest("c1", dir, em); ok {
			t.Errorf("%s: asked %+v", name, req)
		}
	}
}

func TestReadEngineMount(t *testing.T) {
	dir := t.TempDir()
	if em, err := readEngineMount(dir); em != nil || err != nil {
		t.Errorf("without engine.json: %+v, %v", em, err)
	}
	os.WriteFile(filepath.Join(dir, engineFile), []byte(`{"rootfs":"/m","overlay":{},"viewUp":true}`), 0o600)
	if em, err := readEngineMount(dir); err != nil || em == nil || em.Rootfs != "/m" || !em.ViewUp {
		t.Errorf("engine.json: %+v, %v", em, err)
	}
	os.WriteFile(filepath.Join(dir, engineFile), []byte(`{`), 0o600)
	if _, err := readEngineMount(dir); err == nil {
		t.Error("a broken engine.json read")
	}
}

// Release puts the engine's overlay back in place of sysvisord's bind of
// the engine view, live, or dead after sysvisord's end.
func TestReleaseEngineViewBind(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	for _, dead := range []bool{false, true} {
		t.Run(fmt.Sprintf("dead=%v", dead), func(t *testing.T) {
			e := newEngineHome(t, 3)
			e.mountDocker(t)
			before := e.checkEngineOverlay(t, "before")
			const base = 1 << 30
			dir, target, _ := e.idmapContainer(t, "c1", base)
			eng, err := enginefs.Mount(filepath.Join(t.TempDir(), "engine"), hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { eng.Unmount() })
			src, err := eng.Add("c1", target, base)
			if err != nil {
				t.Fatal(err)
			}
			// What sysvisord does on the runtime's request.
			fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			if err := unix.Unmount(e.rootfs, unix.MNT_DETACH); err != nil {
				t.Fatal(err)
			}
			err = unix.MoveMount(fd, "", unix.AT_FDCWD, e.rootfs, unix.MOVE_MOUNT_F_EMPTY_PATH)
			unix.Close(fd)
			if err != nil {
				t.Fatal(err)
			}
			if top, _ := topMount(e.rootfs); top == nil || top.FSType != enginefs.FSType {
				t.Fatalf("engine's path holds %+v", top)
			}
			e.checkLayers(t, e.rootfs, "engine view")
			if dead {
				abortFuse(t, filepath.Dir(src))
				if _, err := os.Stat(filepath.Join(e.rootfs, "layer0")); err == nil {
					t.Fatal("the engine view still served")
				}
			}
			// As release does: our overlay first, then the engine's back.
			if err := cleanupMounts(dir); err != nil {
				t.Fatalf("cleanupMounts: %v", err)
			}
			eng.Remove("c1")
			after := e.checkEngineOverlay(t, "after release")
			if sameOptions(after.Super) != sameOptions(before.Super) {
				t.Errorf("engine's overlay put back as\n\t%s\nwas\n\t%s", tail(after.Super), tail(before.Super))
			}
		})
	}
}

// abortFuse ends the FUSE connection of the mount at dir, as the death of
// its server does.
func abortFuse(t *testing.T, dir string) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	// fusectl of our own: the host's may not be mounted.
	ctl := t.TempDir()
	if err := unix.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil {
		t.Skipf("fusectl: %v", err)
	}
	defer unix.Unmount(ctl, unix.MNT_DETACH)
	p := filepath.Join(ctl, fmt.Sprint(unix.Minor(st.Dev)), "abort")
	if err := os.WriteFile(p, []byte("1"), 0o200); err != nil {
		t.Fatalf("abort the FUSE connection: %v", err)
	}
}
