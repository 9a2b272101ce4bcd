package e2e

// /proc/sys in a sysvisor container: net sysctls of the container's network
// namespace reach the kernel (LXC's model: /proc/sys read-only except
// /proc/sys/net), global ones stay the host's and unwritable.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func hostSysctl(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestSysctlNetReachesKernel(t *testing.T) {
	watchHost(t) // the host's ip_forward, panic, ... must not change
	// The opposite of the host's value, so a write that leaked to the
	// host would show.
	want := map[string]string{"0": "1", "1": "0"}[hostSysctl(t, "net/ipv4/ip_forward")]
	out := mustDocker(t, sv("sh", "-c", `
		echo "write $(echo `+want+` > /proc/sys/net/ipv4/ip_forward 2>/dev/null && echo ok || echo refused)"
		echo "read $(cat /proc/sys/net/ipv4/ip_forward)"
		echo "somaxconn $(echo 77 > /proc/sys/net/core/somaxconn 2>/dev/null && cat /proc/sys/net/core/somaxconn)"
		echo "global-net $(echo 4096 > /proc/sys/net/core/rmem_max 2>/dev/null && echo ok || echo refused)"
		echo "core_pattern $(echo /tmp/x > /proc/sys/kernel/core_pattern 2>/dev/null && echo ok || echo refused)"
		echo "nobody $(su nobody -s /bin/sh -c 'echo `+want+` > /proc/sys/net/ipv4/ip_forward' 2>/dev/null && echo ok || echo refused)"
		echo "remount-rw $(mountcall mount - /proc/sys - remount,bind -)"
		echo "remount-rw-sb $(mountcall mount - /proc/sys - remount -)"
		echo "umount-net $(mountcall umount /proc/sys/net 0)"
		echo "nested $(unshare -p -f --mount-proc sh -c 'echo `+want+` > /proc/sys/net/ipv4/ip_forward && echo ok')"
	`)...)
	r := results(t, out)
	expect(t, r, "write", "ok")
	expect(t, r, "read", want)
	expect(t, r, "somaxconn", "77") // netns-ed since Linux 4.x: the kernel's
	expect(t, r, "global-net", "refused")
	expect(t, r, "core_pattern", "refused")
	expect(t, r, "nobody", "refused")
	expect(t, r, "remount-rw", "EPERM")
	expect(t, r, "remount-rw-sb", "EPERM")
	expect(t, r, "umount-net", "EPERM")
	expect(t, r, "nested", "ok")
}

// Sysctls the kernel does not namespace get a value per container: written
// and range-checked like the kernel's, seen by that container only, kept in
// sysvisord's record, never reaching the host.
func TestSysctlPerContainer(t *testing.T) {
	watchHost(t)
	hostPanic := hostSysctl(t, "kernel/panic")
	value := map[bool]string{true: "9", false: "7"}[hostPanic == "7"]
	a := startDetached(t, "sysvisor-runc")
	b := startDetached(t, "sysvisor-runc")
	r := results(t, sh(t, a, `
		echo "sysctl-w $(sysctl -w kernel.panic=`+value+` >/dev/null 2>&1 && echo ok || echo refused)"
		echo "read $(cat /proc/sys/kernel/panic)"
		echo "ls $(ls -l /proc/sys/kernel/panic | awk '{print $1 "/" $3 "/" $4}')"
		echo "abc $(sysctl -w kernel.panic=abc 2>&1 | grep -c 'Invalid argument')"
		echo "too-long $(sysctl -w kernel.panic=000000000000000000000001 2>&1 | grep -c 'Invalid argument')"
		echo "range $( (echo 3 > /proc/sys/kernel/kptr_restrict) 2>&1 | grep -c 'Invalid argument')"
		echo "overflow $( (echo 2147483648 > /proc/sys/kernel/panic) 2>&1 | grep -c 'Invalid argument')"
		echo "after-bad $(cat /proc/sys/kernel/panic)"
		echo "nobody $(su nobody -s /bin/sh -c 'echo 3 > /proc/sys/kernel/panic' 2>&1 | grep -c 'Permission denied')"
		echo "umount $(mountcall umount /proc/sys/kernel/panic 0)"
		echo "nested $(unshare -p -f --mount-proc sh -c 'cat /proc/sys/kernel/panic')"
		echo "uuid $(test "$(cat /proc/sys/kernel/random/uuid)" != "$(cat /proc/sys/kernel/random/uuid)" && echo fresh)"
		echo "conntrack $(echo 1000 > /proc/sys/net/netfilter/nf_conntrack_max && cat /proc/sys/net/netfilter/nf_conntrack_max)"
	`))
	expect(t, r, "sysctl-w", "ok")
	expect(t, r, "read", value)
	expect(t, r, "ls", "-rw-r--r--/root/root")
	expect(t, r, "abc", "1")
	expect(t, r, "too-long", "1")
	expect(t, r, "range", "1")
	expect(t, r, "overflow", "1")
	expect(t, r, "after-bad", value)
	expect(t, r, "nobody", "1")
	expect(t, r, "umount", "EPERM")
	expect(t, r, "nested", value)
	expect(t, r, "uuid", "fresh")
	expect(t, r, "conntrack", "1000")
	if got := sh(t, b, "cat /proc/sys/kernel/panic; cat /proc/sys/net/netfilter/nf_conntrack_max"); got != hostPanic+"\n"+hostSysctl(t, "net/netfilter/nf_conntrack_max") {
		t.Errorf("container B reads %q, want the host's values", got)
	}
	if got := hostSysctl(t, "kernel/panic"); got != hostPanic {
		t.Errorf("host kernel.panic %s, was %s", got, hostPanic)
	}
	// Kept on disk, for a restarted sysvisord.
	rec, err := os.ReadFile(filepath.Join(svDir, "state", "containers", a+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Sysctls map[string]string `json:"sysctls"`
	}
	if err := json.Unmarshal(rec, &f); err != nil || f.Sysctls["kernel/panic"] != value {
		t.Errorf("record's sysctls %v (%v), want kernel/panic=%s", f.Sysctls, err, value)
	}
}
