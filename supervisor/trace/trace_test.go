package trace

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type fakeMem map[uint64]string

func (m fakeMem) ReadString(addr uint64, max int) (string, error) {
	s, ok := m[addr]
	if !ok {
		return "", unix.EFAULT
	}
	if len(s) > max {
		return "", unix.ENAMETOOLONG
	}
	return s, nil
}

func TestDecode(t *testing.T) {
	mem := fakeMem{0x1000: "tmpfs", 0x2000: "/mnt/t", 0x3000: "size=1m", 0x4000: strings.Repeat("x", 300)}
	for _, tc := range []struct {
		syscall string
		args    [6]uint64
		want    string
	}{
		{"mount", [6]uint64{0x1000, 0x2000, 0x1000, unix.MS_NOSUID | unix.MS_NODEV, 0x3000},
			`source="tmpfs", target="/mnt/t", fstype="tmpfs", flags=MS_NOSUID|MS_NODEV, data="size=1m"`},
		{"mount", [6]uint64{0, 0x2000, 0, unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY | 0xc0ed0000, 0},
			`source=NULL, target="/mnt/t", fstype=NULL, flags=MS_MGC_VAL|MS_RDONLY|MS_REMOUNT|MS_BIND, data=NULL`},
		{"umount2", [6]uint64{0x2000, unix.MNT_DETACH}, `target="/mnt/t", flags=MNT_DETACH`},
		{"umount2", [6]uint64{0x9000, 0}, `target=0x9000 (bad address), flags=0`},
		{"umount2", [6]uint64{0x4000, 0}, `target=0x4000 (longer than 256 bytes), flags=0`},
		{"move_mount", [6]uint64{uint64(0xffffff9c), 0x2000, 3, 0x2000, 4}, `from_dfd=AT_FDCWD, from_path="/mnt/t", to_dfd=3, to_path="/mnt/t", flags=0x4`},
		{"sysinfo", [6]uint64{0x7ffd1234}, `info=0x7ffd1234`},
		{"mknod", [6]uint64{0x2000, unix.S_IFCHR | 0o666, unix.Mkdev(1, 3)}, `path="/mnt/t", mode=S_IFCHR|0666, dev=1:3`},
		{"mknodat", [6]uint64{uint64(0xffffff9c), 0x2000, unix.S_IFIFO | 0o600, 0}, `dfd=AT_FDCWD, path="/mnt/t", mode=S_IFIFO|0600, dev=0:0`},
		{"seccomp", [6]uint64{unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, 0x5000}, `op=SECCOMP_SET_MODE_FILTER, flags=0x8, args=0x5000`},
		{"chown", [6]uint64{1, 2, 3, 4, 5, 6}, `0x1, 0x2, 0x3, 0x4, 0x5, 0x6`},
	} {
		if got := Decode(tc.syscall, tc.args, mem); got != tc.want {
			t.Errorf("Decode(%s, %x):\n got %s\nwant %s", tc.syscall, tc.args, got, tc.want)
		}
	}
	if got := Decode("mount", [6]uint64{0x1000}, nil); !strings.HasPrefix(got, "source=0x1000,") {
		t.Errorf("without memory: %s", got)
	}
}

func TestHubFilterAndDrops(t *testing.T) {
	var h Hub
	if h.Active() || h.Wants("a", "mount") {
		t.Fatal("active without subscribers")
	}
	h.Publish(Event{Container: "a"}) // nobody: nothing happens
	all := h.Subscribe(Filter{}, 4)
	mounts := h.Subscribe(Filter{Container: "a", Syscall: "mount"}, 100)
	if !h.Active() || !h.Wants("b", "sysinfo") {
		t.Fatal("subscribers not seen")
	}
	for i := 0; i < 10; i++ {
		h.Publish(Event{Container: "a", Syscall: "mount"})
		h.Publish(Event{Container: "b", Syscall: "mount"})
		h.Publish(Event{Container: "a", Syscall: "sysinfo"})
	}
	if len(mounts.C()) != 10 || mounts.TakeDropped() != 0 {
		t.Errorf("filtered subscriber: %d events, want 10", len(mounts.C()))
	}
	// The unfiltered one has a buffer of 4: the publisher never waited.
	if len(all.C()) != 4 || all.TakeDropped() != 26 || all.TakeDropped() != 0 {
		t.Errorf("slow subscriber: %d buffered", len(all.C()))
	}
	h.Unsubscribe(all)
	if h.Wants("b", "sysinfo") || !h.Wants("a", "mount") {
		t.Error("unsubscribed filter still wanted")
	}
	h.Unsubscribe(mounts)
	h.Unsubscribe(mounts)
	if h.Active() {
		t.Error("active after every unsubscribe")
	}
}

func TestDecodeErrorsAreValues(t *testing.T) {
	// A caller gone mid-read is shown, not fatal.
	got := readString(0x10, memErr{errors.New("seccomp notification no longer valid")})
	if !strings.Contains(got, "no longer valid") {
		t.Errorf("%s", got)
	}
}

type memErr struct{ err error }

func (m memErr) ReadString(uint64, int) (string, error) { return "", m.err }

func BenchmarkInactive(b *testing.B) {
	var h Hub
	for i := 0; i < b.N; i++ {
		if h.Active() {
			b.Fatal("active")
		}
	}
}

// BenchmarkDecodeMount: what a trace subscriber costs per mount call
// (flags, two strings, data), the decoding only.
func BenchmarkDecodeMount(b *testing.B) {
	mem := fakeMem{0x1000: "tmpfs", 0x2000: "/mnt/x", 0x3000: "tmpfs", 0x4000: "size=1m,mode=700"}
	args := [6]uint64{0x1000, 0x2000, 0x3000, 0x1 | 0x2 | 0x400, 0x4000}
	for i := 0; i < b.N; i++ {
		if Decode("mount", args, mem) == "" {
			b.Fatal("empty")
		}
	}
}
