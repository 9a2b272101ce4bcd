package runtime

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestOwnDevices(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	t.Cleanup(func() { detachUnder(dir) })
	const base, size = 300000, 65536
	mode, far := os.FileMode(0o600), uint32(size)
	s := &specs.Spec{Linux: &specs.Linux{Devices: []specs.LinuxDevice{
		{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: &mode},
		{Path: "/dev/fifo", Type: "p"},
		{Path: "/dev/far", Type: "c", Major: 1, Minor: 3, UID: &far},
		{Path: "/dev/zero", Type: "c", Major: 1, Minor: 5},
	}}}
	if err := ownDevices(s, dir, base, size); err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.Devices) != 1 || s.Linux.Devices[0].Path != "/dev/far" {
		t.Errorf("devices left to runc: %+v, want the one owned outside the range", s.Linux.Devices)
	}
	if len(s.Mounts) != 3 || s.Mounts[0].Destination != "/dev/fuse" || s.Mounts[1].Destination != "/dev/fifo" || s.Mounts[2].Destination != "/dev/zero" {
		t.Fatalf("mounts: %+v", s.Mounts)
	}
	if st, err := os.Stat(s.Mounts[1].Source); err != nil || st.Mode()&os.ModeNamedPipe == 0 || st.Mode().Perm() != 0o666 ||
		st.Sys().(*syscall.Stat_t).Uid != base {
		t.Errorf("the FIFO: %v, %v; want a 0666 FIFO owned by %d", st, err, base)
	}
	s.Mounts = append(s.Mounts[:1], s.Mounts[2:]...) // the char devices, checked below
	for i, want := range []struct {
		perm       os.FileMode
		major, min uint32
	}{{0o600, 10, 229}, {0o666, 1, 5}} {
		m := s.Mounts[i]
		if filepath.Dir(m.Source) != filepath.Join(dir, "devices") || m.Options[0] != "bind" {
			t.Errorf("mount %+v", m)
		}
		st, err := os.Stat(m.Source)
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode()&os.ModeCharDevice == 0 || st.Mode().Perm() != want.perm || sys.Uid != base || sys.Gid != base ||
			unix.Major(sys.Rdev) != want.major || unix.Minor(sys.Rdev) != want.min {
			t.Errorf("%s: mode %v owner %d:%d dev %d:%d, want a char device %d:%d %v owned by %d",
				m.Destination, st.Mode(), sys.Uid, sys.Gid, unix.Major(sys.Rdev), unix.Minor(sys.Rdev), want.major, want.min, want.perm, base)
		}
	}
	// Device nodes work there: the tmpfs is not nodev.
	f, err := os.OpenFile(s.Mounts[1].Source, os.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("open the node: %v", err)
	}
	f.Close()
}
