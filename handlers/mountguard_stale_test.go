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
