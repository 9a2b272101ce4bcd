package handlers

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestShadowsNeeded(t *testing.T) {
	tree := func(paths ...string) func(string) bool {
		return func(p string) bool { return slices.Contains(paths, p) }
	}
	dirs := func(ss []shadow) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.dir)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		haveView bool
		has      func(string) bool
		want     []string
	}{
		{"no DMI", true, tree("devices/virtual", "class"), []string{"devices/virtual", "class"}},
		{"no view (views = false)", false, tree("devices/virtual", "class"), nil},
		{"host has DMI: the runtime binds the file", true, tree("devices/virtual", "devices/virtual/dmi", "devices/virtual/dmi/id",
			"devices/virtual/dmi/id/product_uuid", "class", "class/dmi"), nil},
		// qemu without -uuid: SMBIOS has a zero UUID, the kernel no file.
		{"host has DMI without a UUID", true, tree("devices/virtual", "devices/virtual/dmi", "devices/virtual/dmi/id", "class", "class/dmi"),
			[]string{"devices/virtual/dmi/id"}},
		{"class/dmi without devices/virtual/dmi", true, tree("devices/virtual", "class", "class/dmi"), []string{"devices/virtual"}},
		{"masked /sys/class", true, tree("devices/virtual"), []string{"devices/virtual"}},
		{"no devices/virtual", true, tree("class"), []string{"class"}},
	} {
		if got := dirs(shadowsNeeded(tc.haveView, tc.has)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: shadows %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestAddedEntries(t *testing.T) {
	if got, err := addedEntries(dmiIDShadow, map[string]bool{"bios_vendor": true, "power": true, "uevent": true}); err != nil || !slices.Equal(got, []string{"product_uuid"}) {
		t.Errorf("dmi/id adds %v, %v; want [product_uuid]", got, err)
	}
	got, err := addedEntries(dmiShadows[0], map[string]bool{"net": true, "tty": true})
	if err != nil || !slices.Equal(got, []string{"dmi"}) {
		t.Errorf("devices/virtual adds %v, %v; want [dmi]", got, err)
	}
	got, err = addedEntries(dmiShadows[1], map[string]bool{"net": true})
	if err != nil || !slices.Equal(got, []string{"dmi"}) {
		t.Errorf("class adds %v, %v; want [dmi]", got, err)
	}
	if _, err := addedEntries(dmiShadows[0], map[string]bool{"dmi": true}); err == nil {
		t.Error("an entry the kernel has is not refused")
	}
	for _, bad := range []string{"", "/abs", "../up", "a/../b", "a//b"} {
		if _, err := addedEntries(shadow{dir: "x", files: []string{bad}}, nil); err == nil {
			t.Errorf("entry %q accepted", bad)
		}
	}
}

func TestKindOf(t *testing.T) {
	for mode, want := range map[os.FileMode]entryKind{
		os.ModeDir | 0o755:     entryBind,
		0o444:                  entryBind,
		os.ModeSymlink | 0o777: entryLink,
		os.ModeNamedPipe:       entrySkip,
		os.ModeSocket:          entrySkip,
		os.ModeDevice:          entrySkip,
	} {
		if got := kindOf(mode); got != want {
			t.Errorf("kindOf(%v) = %v, want %v", mode, got, want)
		}
	}
}

func TestFreeOfMounts(t *testing.T) {
	masked := []string{"/sys/firmware", "/sys/devices/virtual/powercap"}
	for _, tc := range []struct {
		dir   string
		below []string
		want  bool
	}{
		{"devices/virtual", []string{"/sys/fs/cgroup", "/sys/firmware", "/sys/devices/system/cpu/online"}, true},
		// A mask is made again inside the shadow.
		{"devices/virtual", []string{"/sys/devices/virtual/powercap"}, true},
		// Anything else would be hidden by the shadow.
		{"devices/virtual", []string{"/sys/devices/virtual/net/eth0/x"}, false},
		{"devices/virtual", []string{"/sys/devices/virtual"}, false},
		{"class", []string{"/sys/class/net"}, false},
		// A neighbour with the same prefix is not below.
		{"class", []string{"/sys/classic"}, true},
	} {
		if got := freeOfMounts(tc.dir, tc.below, masked, nil); got != tc.want {
			t.Errorf("freeOfMounts(%s, %v) = %v, want %v", tc.dir, tc.below, got, tc.want)
		}
	}
}

// TestShadowOnRealSysfs builds the shadows on a detached sysfs of the test's
// network namespace, as a sysfs mount of a container gets them, and looks at
// the result the way a container would: where the kernel builds inside
// detached trees, and on the staging namespace older kernels need.
func TestShadowOnRealSysfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (fsopen sysfs, tmpfs, open_tree)")
	}
	if _, err := os.Stat("/sys/devices/virtual/dmi"); err == nil {
		t.Skip("this host has DMI: nothing is shadowed")
	}
	views := t.TempDir()
	uuid := filepath.Join(views, productUUIDView)
	if err := os.MkdirAll(filepath.Dir(uuid), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(uuid, []byte("1234\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	for _, native := range stageModes(t) {
		t.Run(stageName(native), func(t *testing.T) {
			onStage(t, native, views, func(st *stage) error {
				fsfd, err := unix.Fsopen("sysfs", unix.FSOPEN_CLOEXEC)
				if err != nil {
					return err
				}
				defer unix.Close(fsfd)
				if err := unix.FsconfigCreate(fsfd); err != nil {
					return err
				}
				raw, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_RDONLY)
				if err != nil {
					return err
				}
				root, err := st.attach(raw)
				if err != nil {
					return err
				}
				defer unix.Close(root)
				checkShadows(t, st, root, views)
				return nil
			})
		})
	}
}

func checkShadows(t *testing.T, st *stage, root int, views string) {
	kids := func(dir string) int {
		fd, err := unix.Openat(root, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), dir)
		defer f.Close()
		ents, err := f.ReadDir(-1)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range ents {
			if e.IsDir() || e.Type().IsRegular() {
				n++
			}
		}
		return n
	}
	want := kids("devices/virtual") + kids("class") + 2
	n, err := shadowIn(st, root, views, true)
	if err != nil {
		t.Fatal(err)
	}
	if n != want {
		t.Errorf("%d mounts added, want %d (a tmpfs per shadow and a bind per entry)", n, want)
	}
	if err := viewsIn(root, filepath.Join(views, "sys"), false, false); err != nil {
		t.Fatal(err)
	}
	read := func(rel string) string {
		fd, err := unix.Openat(root, rel, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("open %s: %v", rel, err)
		}
		defer unix.Close(fd)
		b := make([]byte, 64)
		k, _ := unix.Read(fd, b)
		return string(b[:max(k, 0)])
	}
	if got := read("devices/virtual/dmi/id/product_uuid"); got != "1234\n" {
		t.Errorf("product_uuid reads %q", got)
	}
	// The kernel's link from class/dmi/id, resolved inside the tree.
	if got := read("class/dmi/id/product_uuid"); got != "1234\n" {
		t.Errorf("class/dmi/id/product_uuid reads %q", got)
	}
	// The kernel's entries are there and live: lo's files, class/net's
	// symlink into devices/virtual.
	if got := read("class/net/lo/address"); !strings.HasPrefix(got, "00:00:00:00:00:00") {
		t.Errorf("class/net/lo/address reads %q", got)
	}
	// Like sysfs: directories 0755 of host root, and nothing may be added.
	var sb unix.Stat_t
	for _, d := range []string{"devices/virtual", "devices/virtual/dmi", "devices/virtual/dmi/id", "class", "class/dmi"} {
		if err := unix.Fstatat(root, d, &sb, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
		if sb.Mode != unix.S_IFDIR|0o755 || sb.Uid != 0 || sb.Gid != 0 {
			t.Errorf("%s: mode %#o owner %d:%d, want a 0755 directory of root", d, sb.Mode, sb.Uid, sb.Gid)
		}
	}
	for _, p := range []string{"devices/virtual/x", "class/dmi/x", "devices/virtual/dmi/id/x"} {
		if err := unix.Mkdirat(root, p, 0o755); err != unix.EROFS {
			t.Errorf("mkdir %s: %v, want EROFS", p, err)
		}
	}
	buf := make([]byte, 64)
	k, err := unix.Readlinkat(root, "class/dmi/id", buf)
	if err != nil || string(buf[:k]) != "../../devices/virtual/dmi/id" {
		t.Errorf("class/dmi/id links to %q, %v", buf[:max(k, 0)], err)
	}
	// A second pass finds dmi and adds nothing.
	if n, err := shadowIn(st, root, views, true); n != 0 || err != nil {
		t.Errorf("second shadowIn: %d mounts, %v", n, err)
	}
}
