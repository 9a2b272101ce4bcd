package e2e

// /proc/sys in a sysvisor container: net sysctls of the container's network
// namespace reach the kernel (LXC's model: /proc/sys read-only except
// /proc/sys/net), global ones stay the host's and unwritable.

import (
	"os"
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
