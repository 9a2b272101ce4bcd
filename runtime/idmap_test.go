package runtime

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountinfo(t *testing.T) {
	const mountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
512 29 0:77 / /var/lib/docker/overlay2/9d1c/merged rw,relatime shared:250 master:1 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/AAA:/var/lib/docker/overlay2/l/BBB,upperdir=/var/lib/docker/overlay2/9d1c/diff,workdir=/var/lib/docker/overlay2/9d1c/work
601 22 0:80 / /mnt/with\040space rw - tmpfs tmpfs rw
602 22 0:81 /sub /mnt/back\134slash\011tab rw,nosuid - tmpfs none rw,size=1024k
not a mountinfo line
603 22 0:82 / /mnt/short rw - tmpfs

`
	got, err := ParseMountinfo(strings.NewReader(mountinfo))
	if err != nil {
		t.Fatal(err)
	}
	want := []MountEntry{
		{ID: 22, Mountpoint: "/", FSType: "ext4", Source: "/dev/sda1", Super: "rw,errors=remount-ro"},
		{ID: 31, Mountpoint: "/sys/fs/cgroup", FSType: "tmpfs", Source: "tmpfs", Super: "rw,mode=755"},
		{ID: 35, Mountpoint: "/sys/fs/cgroup/memory", FSType: "cgroup", Source: "cgroup", Super: "rw,memory"},
		{ID: 512, Mountpoint: "/var/lib/docker/overlay2/9d1c/merged", FSType: "overlay", Source: "overlay",
			Super: "rw,lowerdir=/var/lib/docker/overlay2/l/AAA:/var/lib/docker/overlay2/l/BBB,upperdir=/var/lib/docker/overlay2/9d1c/diff,workdir=/var/lib/docker/overlay2/9d1c/work"},
		{ID: 601, Mountpoint: "/mnt/with space", FSType: "tmpfs", Source: "tmpfs", Super: "rw"},
		{ID: 602, Mountpoint: "/mnt/back\\slash\ttab", FSType: "tmpfs", Source: "none", Super: "rw,size=1024k"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseMountinfo:\n\tgot  %+v\n\twant %+v", got, want)
	}
}

func TestReadMountinfo(t *testing.T) {
	ms, err := ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ms, func(m MountEntry) bool { return m.Mountpoint == "/" && m.ID > 0 && m.FSType != "" }) {
		t.Errorf("no root mount in %d entries of /proc/self/mountinfo", len(ms))
	}
}

func TestUnescapeOctal(t *testing.T) {
	tests := map[string]string{
		"/plain":             "/plain",
		`/a\040b`:            "/a b",
		`\134`:               `\`,
		`/x\011y\012z`:       "/x\ty\nz",
		`/lo\040w\134\054er`: `/lo w\,er`,
		`/short\04`:          `/short\04`,
		`/notoctal\9ab`:      `/notoctal\9ab`,
	}
	for in, want := range tests {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseOverlay(t *testing.T) {
	const d = "/var/lib/docker/overlay2"
	tests := []struct {
		name  string
		super string
		base  string
		want  Overlay // Opts is checked separately
	}{
		{
			name:  "docker, absolute layers",
			super: "rw,lowerdir=" + d + "/l/AAA:" + d + "/l/BBB,upperdir=" + d + "/9d1c/diff,workdir=" + d + "/9d1c/work",
			base:  "/elsewhere",
			want:  Overlay{Lower: []string{d + "/l/AAA", d + "/l/BBB"}, Upper: d + "/9d1c/diff", Work: d + "/9d1c/work"},
		},
		{
			name:  "docker, relative layers (option string above a page)",
			super: "rw,lowerdir=l/AAA:l/BBB:l/CCC,upperdir=9d1c/diff,workdir=9d1c/work",
			base:  d,
			want:  Overlay{Lower: []string{d + "/l/AAA", d + "/l/BBB", d + "/l/CCC"}, Upper: d + "/9d1c/diff", Work: d + "/9d1c/work"},
		},
		{
			name:  "relative paths are cleaned",
			super: "lowerdir=../other/l/AAA:./l/BBB,upperdir=9d1c/diff/,workdir=9d1c/work",
			base:  d,
			want:  Overlay{Lower: []string{"/var/lib/docker/other/l/AAA", d + "/l/BBB"}, Upper: d + "/9d1c/diff", Work: d + "/9d1c/work"},
		},
		{
			name:  "read-only, lower layers only",
			super: "ro,lowerdir=/a:/b",
			want:  Overlay{Lower: []string{"/a", "/b"}},
		},
		{
			name:  "options to keep, in order",
			super: "rw,lowerdir=/a,upperdir=/u,workdir=/w,index=off,redirect_dir=on,uuid=on,metacopy=on,xino=off,volatile,nfs_export=off,default_permissions",
			want:  Overlay{Lower: []string{"/a"}, Upper: "/u", Work: "/w", Other: []string{"index=off", "redirect_dir=on", "metacopy=on", "xino=off", "volatile", "nfs_export=off"}},
		},
		{
			name:  "escaped commas, mount(2) data syntax",
			super: `rw,lowerdir=/l/a\,b:/l/c,upperdir=/u\,1,workdir=/w`,
			want:  Overlay{Lower: []string{"/l/a,b", "/l/c"}, Upper: "/u,1", Work: "/w"},
		},
		{
			// As Linux 6.18 shows lowerdir=/x/lo w\,er:/x/m,... in mountinfo.
			name:  "escaped commas and spaces, mountinfo syntax",
			super: `rw,lowerdir=/x/lo\040w\134\054er:/x/m,upperdir=/x/up\134\054per,workdir=/x/wo\040rk,uuid=on`,
			want:  Overlay{Lower: []string{"/x/lo w,er", "/x/m"}, Upper: "/x/up,per", Work: "/x/wo rk"},
		},
		{
			// As Linux 6.18 shows an overlay made with fsconfig lowerdir+.
			name:  "one option per layer",
			super: `ro,lowerdir+=/t/l1,lowerdir+=/t/l\0402,redirect_dir=on`,
			want:  Overlay{Lower: []string{"/t/l1", "/t/l 2"}, Other: []string{"redirect_dir=on"}, Append: true},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseOverlay(tc.super, tc.base)
			if err != nil {
				t.Fatalf("ParseOverlay(%q): %v", tc.super, err)
			}
			o.Opts = "" // TestParseOverlayOpts
			if o.Base != tc.base {
				t.Errorf("Base %q, want %q", o.Base, tc.base)
			}
			o.Base = ""
			if !reflect.DeepEqual(*o, tc.want) {
				t.Errorf("ParseOverlay(%q):\n\tgot  %+v\n\twant %+v", tc.super, *o, tc.want)
			}
		})
	}
}

func TestParseOverlayOpts(t *testing.T) {
	// Opts restores the engine's mount with mount(2): the kernel's option
	// syntax, not mountinfo's octal escapes.
	o, err := ParseOverlay(`rw,lowerdir=/x/lo\040w\134\054er,upperdir=/u,workdir=/w`, "/")
	if err != nil {
		t.Fatal(err)
	}
	if want := `rw,lowerdir=/x/lo w\,er,upperdir=/u,workdir=/w`; o.Opts != want {
		t.Errorf("Opts %q, want %q", o.Opts, want)
	}
	plain := "rw,lowerdir=/a:/b,upperdir=/u,workdir=/w"
	if o, _ := ParseOverlay(plain, "/"); o.Opts != plain {
		t.Errorf("Opts %q, want %q", o.Opts, plain)
	}
}

func TestParseOverlayErrors(t *testing.T) {
	tests := []struct {
		super, msg string
	}{
		{"rw,upperdir=/u,workdir=/w", "without lowerdir"},
		{"rw,lowerdir=,upperdir=/u,workdir=/w", "without lowerdir"},
		{"rw,lowerdir=/a,upperdir=/u", "workdir"},
		{"rw,lowerdir=/a,workdir=/w", "workdir"},
		{"", "without lowerdir"},
	}
	for _, tc := range tests {
		o, err := ParseOverlay(tc.super, "/base")
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseOverlay(%q) = %+v, %v; want an error mentioning %q", tc.super, o, err, tc.msg)
		}
	}
}

func TestSplitOpts(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{""}},
		{"rw", []string{"rw"}},
		{"rw,lowerdir=/a:/b,upperdir=/u", []string{"rw", "lowerdir=/a:/b", "upperdir=/u"}},
		{`lowerdir=/a\,b,x`, []string{"lowerdir=/a,b", "x"}},
		{`a\\,b`, []string{`a\`, "b"}},
		{`a,,b,`, []string{"a", "", "b", ""}},
		{`trailing\`, []string{`trailing\`}},
	}
	for _, tc := range tests {
		if got := splitOpts(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitOpts(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSplitLower(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"/a", []string{"/a"}},
		{"/a:/b:/c", []string{"/a", "/b", "/c"}},
		{"l/A:l/B", []string{"l/A", "l/B"}},
		{":/a::/b:", []string{"/a", "/b"}},
	}
	for _, tc := range tests {
		if got := splitLower(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("splitLower(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestCommonDir(t *testing.T) {
	const d = "/var/lib/docker/overlay2"
	tests := []struct {
		paths []string
		want  string
	}{
		{nil, "/"},
		{[]string{"/a/b/c"}, "/a/b/c"},
		{[]string{"/a/b/c", "/a/b/d"}, "/a/b"},
		{[]string{"/a/b", "/a/b/c"}, "/a/b"},
		{[]string{"/a/b/c", "/a/b"}, "/a/b"},
		{[]string{"/a/bc", "/a/b"}, "/a"}, // a shared string prefix is not a shared directory
		{[]string{"/a/b", "/a/bc"}, "/a"},
		{[]string{"/x/y", "/z"}, "/"},
		{[]string{"/a/b/", "/a/b/c/../d"}, "/a/b"},
		{[]string{"/", "/a"}, "/"},
		{[]string{d + "/l/AAA", d + "/l/BBB", d + "/9d1c/diff", d + "/9d1c/work"}, d},
	}
	for _, tc := range tests {
		if got := commonDir(tc.paths); got != tc.want {
			t.Errorf("commonDir(%q) = %q, want %q", tc.paths, got, tc.want)
		}
	}
}

func TestBindAtime(t *testing.T) {
	tests := []struct {
		opts []string
		want uint64
		ok   bool
	}{
		{nil, 0, false},
		{[]string{"bind", "ro", "nosuid"}, 0, false},
		{[]string{"rbind", "atime", "diratime"}, 0, false}, // clear flags never set: the remount keeps the source's
		{[]string{"bind", "strictatime"}, unix.MOUNT_ATTR_STRICTATIME, true},
		{[]string{"nosuid", "strictatime", "mode=755", "bind"}, unix.MOUNT_ATTR_STRICTATIME, true},
		{[]string{"bind", "noatime"}, unix.MOUNT_ATTR_NOATIME, true},
		{[]string{"bind", "relatime"}, unix.MOUNT_ATTR_RELATIME, true},
		{[]string{"bind", "nodiratime"}, unix.MOUNT_ATTR_RELATIME | unix.MOUNT_ATTR_NODIRATIME, true},
		{[]string{"bind", "noatime", "nodiratime"}, unix.MOUNT_ATTR_NOATIME | unix.MOUNT_ATTR_NODIRATIME, true},
		{[]string{"bind", "noatime", "strictatime"}, unix.MOUNT_ATTR_STRICTATIME, true}, // the kernel: strictatime clears noatime
		{[]string{"bind", "noatime", "atime"}, 0, false},
		{[]string{"bind", "strictatime", "nostrictatime", "noatime"}, unix.MOUNT_ATTR_NOATIME, true},
	}
	for _, tc := range tests {
		got, ok := bindAtime(tc.opts)
		if got != tc.want || ok != tc.ok {
			t.Errorf("bindAtime(%q) = %#x, %v; want %#x, %v", tc.opts, got, ok, tc.want, tc.ok)
		}
	}
}

// mountOpts returns the per-mount options of the mount at path.
func mountOpts(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var opts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 5 && unescapeOctal(fs[4]) == path {
			opts = strings.Split(fs[5], ",")
		}
	}
	if opts == nil {
		t.Fatalf("nothing mounted at %s", path)
	}
	return opts
}

// TestIdmapCloneAtime: a bind mount asking for an atime mode its source
// does not have (the OCI runtime-tools "mounts" validation: "strictatime"
// on a bind of /etc, relatime) failed the create with EPERM: runc remounts
// the bind inside the container's user namespace, where the kernel locks
// the atime mode. The idmapped clone now carries the mode, and the same
// remount, made in a user and mount namespace of its own, succeeds.
func TestIdmapCloneAtime(t *testing.T) {
	needRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare(1)")
	}
	// On the disk: a relatime filesystem that supports idmapped mounts.
	dir, err := os.MkdirTemp("/var/tmp", "sysvisor-atime-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		detachUnder(dir)
		os.RemoveAll(dir)
	})
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if o := mountOpts(t, mountPoint(t, src)); !slices.Contains(o, "relatime") {
		t.Skipf("%s is not relatime (%v)", src, o)
	}
	nsfd, err := UsernsFd(1<<30, 65536)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nsfd)
	remount := func(dst, opt string) error {
		out, err := exec.Command(unshare, "--user", "--map-root-user", "--mount", "--propagation", "private",
			"mount", "-o", "remount,bind,"+opt, dst).CombinedOutput()
		if err != nil {
			return &exec.Error{Name: string(out), Err: err}
		}
		return nil
	}

	// The kernel's side of the bug, on a clone without the mode.
	plain := filepath.Join(dir, "plain")
	if err := idmapClone(src, plain, nsfd, false, unix.MS_PRIVATE); err != nil {
		t.Fatal(err)
	}
	if err := remount(plain, "strictatime"); err == nil {
		t.Fatal("strictatime remount of a relatime bind allowed in a user namespace: the kernel does not lock atime here, the test proves nothing")
	}

	for _, tc := range []struct {
		opt        string
		has, hasnt []string
	}{
		{"strictatime", nil, []string{"relatime", "noatime", "nodiratime"}},
		{"noatime", []string{"noatime"}, []string{"relatime"}},
		{"nodiratime", []string{"relatime", "nodiratime"}, []string{"noatime"}},
	} {
		dst := filepath.Join(dir, tc.opt)
		atime, ok := bindAtime([]string{"bind", "nosuid", tc.opt})
		if !ok {
			t.Fatalf("%s: no atime mode", tc.opt)
		}
		if err := idmapCloneAtime(src, dst, nsfd, false, unix.MS_SLAVE, atime, true); err != nil {
			t.Fatal(err)
		}
		o := mountOpts(t, dst)
		for _, w := range tc.has {
			if !slices.Contains(o, w) {
				t.Errorf("%s: clone options %v, want %s", tc.opt, o, w)
			}
		}
		for _, w := range tc.hasnt {
			if slices.Contains(o, w) {
				t.Errorf("%s: clone options %v, want no %s", tc.opt, o, w)
			}
		}
		if err := remount(dst, "nosuid,"+tc.opt); err != nil {
			t.Errorf("%s: runc's remount of the bind in a user namespace: %v", tc.opt, err)
		}
	}
}

// mountPoint is the mount point of the filesystem holding path.
func mountPoint(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("findmnt", "-no", "TARGET", "--target", path).Output()
	if err != nil {
		t.Skipf("findmnt: %v", err)
	}
	return strings.TrimSpace(string(out))
}
