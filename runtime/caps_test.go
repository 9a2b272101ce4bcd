package runtime

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// kernelCaps is linux/capability.h, as golang.org/x/sys numbers it.
var kernelCaps = map[string]int{
	"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"CAP_FOWNER": unix.CAP_FOWNER, "CAP_FSETID": unix.CAP_FSETID, "CAP_KILL": unix.CAP_KILL, "CAP_SETGID": unix.CAP_SETGID,
	"CAP_SETUID": unix.CAP_SETUID, "CAP_SETPCAP": unix.CAP_SETPCAP, "CAP_LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
	"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_NET_BROADCAST": unix.CAP_NET_BROADCAST, "CAP_NET_ADMIN": unix.CAP_NET_ADMIN,
	"CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_IPC_LOCK": unix.CAP_IPC_LOCK, "CAP_IPC_OWNER": unix.CAP_IPC_OWNER,
	"CAP_SYS_MODULE": unix.CAP_SYS_MODULE, "CAP_SYS_RAWIO": unix.CAP_SYS_RAWIO, "CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT,
	"CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE, "CAP_SYS_PACCT": unix.CAP_SYS_PACCT, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN,
	"CAP_SYS_BOOT": unix.CAP_SYS_BOOT, "CAP_SYS_NICE": unix.CAP_SYS_NICE, "CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE,
	"CAP_SYS_TIME": unix.CAP_SYS_TIME, "CAP_SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG, "CAP_MKNOD": unix.CAP_MKNOD,
	"CAP_LEASE": unix.CAP_LEASE, "CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE, "CAP_AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL,
	"CAP_SETFCAP": unix.CAP_SETFCAP, "CAP_MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE, "CAP_MAC_ADMIN": unix.CAP_MAC_ADMIN,
	"CAP_SYSLOG": unix.CAP_SYSLOG, "CAP_WAKE_ALARM": unix.CAP_WAKE_ALARM, "CAP_BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND,
	"CAP_AUDIT_READ": unix.CAP_AUDIT_READ, "CAP_PERFMON": unix.CAP_PERFMON, "CAP_BPF": unix.CAP_BPF,
	"CAP_CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

func TestCapsFromMaskNumbering(t *testing.T) {
	if len(kernelCaps) != unix.CAP_LAST_CAP+1 {
		t.Fatalf("test table has %d capabilities, the kernel headers %d", len(kernelCaps), unix.CAP_LAST_CAP+1)
	}
	for name, bit := range kernelCaps {
		if got := CapsFromMask(1 << bit); !slices.Equal(got, []string{name}) {
			t.Errorf("CapsFromMask(1<<%d) = %v, want [%s]", bit, got, name)
		}
	}
}

func TestCapsFromMask(t *testing.T) {
	// Docker's default set.
	var docker uint64
	for _, c := range []int{unix.CAP_CHOWN, unix.CAP_DAC_OVERRIDE, unix.CAP_FSETID, unix.CAP_FOWNER, unix.CAP_MKNOD, unix.CAP_NET_RAW,
		unix.CAP_SETGID, unix.CAP_SETUID, unix.CAP_SETFCAP, unix.CAP_SETPCAP, unix.CAP_NET_BIND_SERVICE, unix.CAP_SYS_CHROOT,
		unix.CAP_KILL, unix.CAP_AUDIT_WRITE} {
		docker |= 1 << c
	}
	tests := []struct {
		name string
		mask uint64
		want []string
	}{
		{"none", 0, nil},
		{"docker default, in number order", docker, []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
			"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_MKNOD",
			"CAP_AUDIT_WRITE", "CAP_SETFCAP"}},
		{"bits this build does not know are ignored", 1<<41 | 1<<63, nil},
		{"first and last known", 1 | 1<<40 | 1<<41, []string{"CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"}},
	}
	for _, tc := range tests {
		if got := CapsFromMask(tc.mask); !slices.Equal(got, tc.want) {
			t.Errorf("%s: CapsFromMask(%#x) = %v, want %v", tc.name, tc.mask, got, tc.want)
		}
	}
	// A host that dropped CAP_SYS_RESOURCE (like a container's bounding set).
	all := CapsFromMask(0x1fffeffffff)
	if len(all) != 40 || slices.Contains(all, "CAP_SYS_RESOURCE") || all[len(all)-1] != "CAP_CHECKPOINT_RESTORE" {
		t.Errorf("CapsFromMask(0x1fffeffffff) = %v", all)
	}
}

func TestHostBoundingSet(t *testing.T) {
	got, err := HostBoundingSet()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			for name, bit := range kernelCaps {
				if (m&(1<<bit) != 0) != slices.Contains(got, name) {
					t.Errorf("%s: in CapBnd %v, in HostBoundingSet %v", name, m&(1<<bit) != 0, slices.Contains(got, name))
				}
			}
			return
		}
	}
	t.Fatal("no CapBnd line")
}
