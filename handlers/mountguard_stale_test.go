package handlers

import (
	"fmt"
	"testing"

	"github.com/sysvisor/sysvisor/linux/mountinfo"
)

func TestStaleSignature(t *testing.T) {
	dead := map[string]bool{"0:59": true, "0:77": true}
	alive := func(maj, min uint32) bool { return !dead[fmt.Sprintf("%d:%d", maj, min)] }
	sig := func(e, p mountinfo.Entry) string { return sigOf(&e, &p) }
	procfs := mountinfo.Entry{Major: 0, Minor: 59, Root: "/", Mountpoint: "/proc"}
	cases := []struct {
		name string
		sig  string
		want bool
	}{
		{"mask on a gone procfs", sig(mountinfo.Entry{Major: 0, Minor: 5, Root: "/null", Mountpoint: "/proc/kcore"}, procfs), true},
		{"locked, on a gone procfs", lockedPrefix + sig(mountinfo.Entry{Major: 0, Minor: 5, Root: "/null", Mountpoint: "/proc/kcore"}, procfs), true},
		{"the gone procfs's own bind", sig(mountinfo.Entry{Major: 0, Minor: 59, Root: "/sys", Mountpoint: "/proc/sys"}, mountinfo.Entry{Major: 0, Minor: 22, Root: "/", Mountpoint: "/proc"}), true},
		{"both alive", sig(mountinfo.Entry{Major: 0, Minor: 5, Root: "/null", Mountpoint: "/proc/kcore"}, mountinfo.Entry{Major: 0, Minor: 22, Root: "/", Mountpoint: "/proc"}), false},
		// A path naming a dead device: the real parent (0:22) is alive.
		{"crafted mountpoint", sig(mountinfo.Entry{Major: 0, Minor: 5, Root: "/null", Mountpoint: "/x<0:59/y"}, mountinfo.Entry{Major: 0, Minor: 22, Root: "/", Mountpoint: "/"}), false},
		{"crafted bind root", sig(mountinfo.Entry{Major: 0, Minor: 5, Root: "/a<0:77/b", Mountpoint: "/m"}, mountinfo.Entry{Major: 0, Minor: 22, Root: "/", Mountpoint: "/"}), false},
		// A path naming a live device cannot save one whose parent is gone
		// ... except by keeping it, which is the safe side.
		{"crafted, parent gone", sig(mountinfo.Entry{Major: 0, Minor: 5, Root: "/null", Mountpoint: "/proc/x<0:22/y"}, procfs), false},
		{"malformed", "garbage", false},
		{"no parent part", "0:5/null@/x", false},
		{"overflowing number", "99999999999:1/@/x<0:59/", false},
	}
	for _, c := range cases {
		if got := StaleSignature(c.sig, alive); got != c.want {
			t.Errorf("%s: StaleSignature(%q) = %v, want %v", c.name, c.sig, got, c.want)
		}
	}
}

// A bind copy lies within the mount it copies: same superblock, root at or
// below. lockCovers locks it by that, without a signature of its own.
func TestLockCovers(t *testing.T) {
	sigs := []string{
		"0:29/sysvisor/abc@/sys/fs/cgroup/cpu<0:60/",
		"flags:254:0/var/lib/x/storage@/var/lib/docker<0:58/",
		"0:70/@/dev/shm<0:58/",
		"0:6/null@/proc/kcore<0:61/",
		"0:99/we@ird/dir@/mnt<0:58/", // a root holding '@': cut to "/we"
		"garbage",
		"1:x/@/a<0:1/",
	}
	m := func(maj, min uint32, root string) *mountinfo.Entry {
		return &mountinfo.Entry{Major: maj, Minor: min, Root: root}
	}
	for _, tc := range []struct {
		e    *mountinfo.Entry
		want bool
	}{
		{m(0, 29, "/sysvisor/abc"), true},              // the protected mount itself
		{m(0, 29, "/sysvisor/abc/docker/inner"), true}, // an inner container's bind of its cgroup
		{m(0, 29, "/sysvisor/abcd"), false},            // a sibling, not below
		{m(0, 29, "/sysvisor"), false},                 // above
		{m(0, 30, "/sysvisor/abc"), false},             // another superblock
		{m(254, 0, "/var/lib/x/storage/containers/1/hosts"), true},
		{m(0, 70, "/anything"), true}, // root "/" covers all of the superblock
		{m(0, 6, "/null"), true},
		{m(0, 6, "/zero"), false},
		{m(0, 99, "/we"), true},
		{m(0, 99, "/weird"), false},
	} {
		if got := lockCovers(sigs, tc.e); got != tc.want {
			t.Errorf("lockCovers(%d:%d %s) = %v, want %v", tc.e.Major, tc.e.Minor, tc.e.Root, got, tc.want)
		}
	}
}
