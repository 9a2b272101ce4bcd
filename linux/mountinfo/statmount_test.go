package mountinfo

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
)

// Stat must describe a mount exactly as mountinfo does: signatures taken
// from either must agree.
func TestStatAgreesWithMountinfo(t *testing.T) {
	if err := kernel.Statmount.Probe(); err != nil {
		// Not a failure: Table's fallback is what such a kernel uses
		// (TestTableFallback).
		t.Skipf("kernel lacks statmount: %v", err)
	}
	ms, err := Read("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/", "/proc", "/sys", "/dev"} {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		id, root, err := IDOf(fd)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		if !root {
			t.Errorf("%s: not reported as a mount root", p)
		}
		e, err := Stat(id)
		if err != nil {
			t.Fatalf("statmount %s: %v", p, err)
		}
		var want *Entry
		for i := range ms {
			if ms[i].Mountpoint == p {
				want = &ms[i]
			}
		}
		if want == nil {
			t.Fatalf("%s not in mountinfo", p)
		}
		if e.Mountpoint != want.Mountpoint || e.Root != want.Root || e.Major != want.Major || e.Minor != want.Minor || e.FSType != want.FSType || e.ReadOnly() != want.ReadOnly() {
			t.Errorf("%s: statmount %+v, mountinfo %+v", p, e, *want)
		}
		if _, err := Stat(uint64(e.Parent)); err != nil && p != "/" {
			t.Errorf("%s: parent %d: %v", p, e.Parent, err)
		}
	}
	kids, err := Children(mustID(t, "/"))
	if err != nil {
		t.Fatal(err)
	}
	if len(kids) == 0 {
		t.Error("no mounts on top of /")
	}
}

func mustID(t *testing.T, p string) uint64 {
	fd, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	id, _, err := IDOf(int(fd.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func BenchmarkStat(b *testing.B) {
	fd, _ := unix.Open("/proc", unix.O_PATH, 0)
	id, _, _ := IDOf(fd)
	for i := 0; i < b.N; i++ {
		if _, err := Stat(id); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMountinfo(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, err := Read("/proc/self/mountinfo"); err != nil {
			b.Fatal(err)
		}
	}
}
