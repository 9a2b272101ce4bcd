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

	"github.com/sysvisor/sysvisor/kernel"
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

// Sysctls the kernel keeps per IPC namespace (kernel.shm*, msg*, sem,
// fs.mqueue.*) and per pid namespace (kernel.pid_max, Linux 6.14+) are the
// container's own: read-write binds of its kernel files, so the kernel's
// range and permission checks decide, and nothing reaches the host or
// another container. Before 6.14 pid_max is a per-container view with the
// kernel's range and permissions, and the same holds.
func TestSysctlNamespacedReachKernel(t *testing.T) {
	watchHost(t) // includes the host's shmmax, pid_max and mqueue msg_max
	a := startDetached(t, "sysvisor-runc")
	b := startDetached(t, "sysvisor-runc")
	const readB = "cat /proc/sys/kernel/shmmax /proc/sys/kernel/pid_max /proc/sys/fs/mqueue/msg_max"
	bBefore := sh(t, b, readB)
	host := map[string]string{}
	for _, k := range []string{"kernel/shmmax", "kernel/pid_max", "fs/mqueue/msg_max"} {
		host[k] = hostSysctl(t, k)
	}
	// Values neither the host nor a fresh namespace has.
	r := results(t, sh(t, a, `
		echo "shmmax $(sysctl -w kernel.shmmax=123456789 >/dev/null 2>&1 && cat /proc/sys/kernel/shmmax)"
		echo "pid_max $(sysctl -w kernel.pid_max=50001 >/dev/null 2>&1 && cat /proc/sys/kernel/pid_max)"
		echo "msg_max $(sysctl -w fs.mqueue.msg_max=21 >/dev/null 2>&1 && cat /proc/sys/fs/mqueue/msg_max)"
		echo "sem $(echo '251 32000 32 129' > /proc/sys/kernel/sem && cut -f4 /proc/sys/kernel/sem)"
		echo "ls $(ls -l /proc/sys/kernel/shmmax | awk '{print $1 "/" $3 "/" $4}')"
		echo "ls-pid_max $(ls -l /proc/sys/kernel/pid_max | awk '{print $1 "/" $3 "/" $4}')"
		echo "pid_max-range $(sysctl -w kernel.pid_max=99999999 2>&1 | grep -c 'Invalid argument')"
		echo "pid_max-after $(cat /proc/sys/kernel/pid_max)"
		echo "nobody-shm $(su nobody -s /bin/sh -c 'echo 5 > /proc/sys/kernel/shmmni' 2>&1 | grep -c 'Permission denied')"
		echo "nobody-pid $(su nobody -s /bin/sh -c 'echo 40000 > /proc/sys/kernel/pid_max' 2>&1 | grep -c 'Permission denied')"
		echo "nobody-mq $(su nobody -s /bin/sh -c 'echo 5 > /proc/sys/fs/mqueue/msg_max' 2>&1 | grep -c 'Permission denied')"
		echo "core_pattern $(echo /tmp/x > /proc/sys/kernel/core_pattern 2>/dev/null && echo ok || echo refused)"
		echo "mounts $(grep -c ' /proc/sys/kernel/shmmax \| /proc/sys/kernel/pid_max \| /proc/sys/fs/mqueue ' /proc/self/mountinfo)"
		echo "umount-pid_max $(mountcall umount /proc/sys/kernel/pid_max 0 | grep -cx ok)"
		echo "umount-shmmax $(mountcall umount /proc/sys/kernel/shmmax detach | grep -cx ok)"
		echo "umount-mqueue $(mountcall umount /proc/sys/fs/mqueue 0 | grep -cx ok)"
		echo "remount-kernel $(mountcall mount - /proc/sys/kernel - remount,bind - | grep -cx ok)"
		echo "remount-sys $(mountcall mount - /proc/sys - remount,bind -)"
		echo "still $(echo 50002 > /proc/sys/kernel/pid_max && echo 123456790 > /proc/sys/kernel/shmmax && cat /proc/sys/kernel/pid_max /proc/sys/kernel/shmmax | tr '\n' ,)"
		echo "nested $(unshare -i -p -f sh -c 'mkdir -p /mnt/p && mountcall mount proc /mnt/p proc 0 - >/dev/null && echo 4242 > /mnt/p/sys/kernel/shmmax && echo 3003 > /mnt/p/sys/kernel/pid_max && cat /mnt/p/sys/kernel/shmmax /mnt/p/sys/kernel/pid_max | tr "\n" ,')"
		echo "after-nested $(cat /proc/sys/kernel/shmmax /proc/sys/kernel/pid_max | tr '\n' ,)"
	`))
	expect(t, r, "shmmax", "123456789")
	expect(t, r, "pid_max", "50001")
	expect(t, r, "msg_max", "21")
	expect(t, r, "sem", "129")
	expect(t, r, "ls", "-rw-r--r--/root/root") // as in any userns container
	expect(t, r, "ls-pid_max", "-rw-r--r--/root/root")
	expect(t, r, "pid_max-range", "1")
	expect(t, r, "pid_max-after", "50001")
	expect(t, r, "nobody-shm", "1")
	expect(t, r, "nobody-pid", "1")
	expect(t, r, "nobody-mq", "1")
	expect(t, r, "core_pattern", "refused") // the rest of kernel/ stays read-only
	expect(t, r, "mounts", "3")
	expect(t, r, "umount-pid_max", "0")
	expect(t, r, "umount-shmmax", "0")
	expect(t, r, "umount-mqueue", "0")
	expect(t, r, "remount-kernel", "0")
	expect(t, r, "remount-sys", "EPERM")
	expect(t, r, "still", "50002,123456790,")
	// A procfs mounted in new IPC and pid namespaces gets their files.
	expect(t, r, "nested", "4242,3003,")
	if kernel.PidMaxPerPidNS.Has() {
		expect(t, r, "after-nested", "123456790,50002,")
	} else {
		// Before Linux 6.14 (or with the fallback forced) pid_max is a
		// per-container view, as kernel.panic is: one value for the
		// whole container, nested pid namespaces included.
		expect(t, r, "after-nested", "123456790,3003,")
	}
	if got := sh(t, b, readB); got != bBefore {
		t.Errorf("container B reads %q, had %q", got, bBefore)
	}
	for k, v := range host {
		if got := hostSysctl(t, k); got != v {
			t.Errorf("host %s %s, was %s", k, got, v)
		}
	}
}
