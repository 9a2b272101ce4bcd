package mountinfo

import (
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
)

// TestTableFallback answers from mountinfo what statmount answers: the same
// mounts, parents and children, named the same, for the paths the mount
// emulation asks about. On a kernel without statmount only the fallback
// runs, against mountinfo read by Read.
func TestTableFallback(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	proc, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(proc)
	fb := newTable(proc, false)
	native := kernel.Statmount.Probe() == nil
	idOf := func(p string, mask int) (uint64, bool) {
		var st unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_STATX_DONT_SYNC, mask, &st); err != nil {
			t.Fatal(err)
		}
		return st.Mnt_id, st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	}
	ms, err := Read("/proc/thread-self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/", "/proc", "/sys", "/dev"} {
		old, root := idOf(p, unix.STATX_MNT_ID)
		if !root {
			t.Fatalf("%s is no mount root", p)
		}
		e, err := fb.Stat(old)
		if err != nil {
			t.Fatalf("fallback stat %s: %v", p, err)
		}
		i := slices.IndexFunc(ms, func(m Entry) bool { return uint64(m.ID) == old })
		if i < 0 || e.Mountpoint != p || ms[i].Mountpoint != p || e.Parent != ms[i].Parent {
			t.Errorf("%s: fallback %+v, mountinfo %+v", p, e, ms[i])
		}
		kids, err := fb.Children(old)
		if err != nil {
			t.Fatal(err)
		}
		var got, want []string
		for _, k := range kids {
			got = append(got, k.Mountpoint)
		}
		for _, m := range ms {
			if m.Parent == int(old) && m.ID != int(old) {
				want = append(want, m.Mountpoint)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: fallback children %v, mountinfo %v", p, got, want)
		}
		if !native {
			continue
		}
		uid, _ := idOf(p, unix.STATX_MNT_ID_UNIQUE)
		n, err := Stat(uid)
		if err != nil {
			t.Fatal(err)
		}
		if n.Mountpoint != e.Mountpoint || n.Root != e.Root || n.Major != e.Major || n.Minor != e.Minor || n.FSType != e.FSType || n.Opts != e.Opts {
			t.Errorf("%s: statmount %+v, fallback %+v", p, n, e)
		}
		nk, err := newTable(proc, true).Children(uid)
		if err != nil {
			t.Fatal(err)
		}
		var ngot []string
		for _, k := range nk {
			ngot = append(ngot, k.Mountpoint)
		}
		slices.Sort(ngot)
		slices.Sort(got)
		if !slices.Equal(ngot, got) {
			t.Errorf("%s: statmount children %v, fallback %v", p, ngot, got)
		}
	}
	if _, err := fb.Stat(1 << 40); err != unix.ENOENT {
		t.Errorf("unknown id: %v, want ENOENT", err)
	}
}
