package e2e

// /sys/devices/virtual/dmi/id/product_uuid, end to end: per container,
// stable across a restart, root's only, reachable through /sys/class/dmi/id,
// and, on a host without DMI (where sysvisord shadows /sys/devices/virtual
// and /sys/class with tmpfs and binds), nothing of the kernel's lost and
// nothing the container may undo.

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

const uuidFile = "/sys/devices/virtual/dmi/id/product_uuid"

const uuidScript = `
f=` + uuidFile + `
echo "uuid $(cat $f)"
echo "class $(cat /sys/class/dmi/id/product_uuid)"
echo "ls $(ls -l $f | awk '{print $1 ":" $3 ":" $4}')"
echo "lo $(readlink -f /sys/class/net/lo)"
echo "lo-address $(cat /sys/class/net/lo/address)"
echo "shadow-mounts $(grep -cE ' /sys/(devices/virtual|class)([/ ])' /proc/self/mountinfo)"
`

func TestProductUUID(t *testing.T) {
	_, hostErr := os.Stat(uuidFile)
	hostDMI := hostErr == nil
	a := startDetached(t, "sysvisor-runc")
	b := startDetached(t, "sysvisor-runc")
	ra, rb := results(t, sh(t, a, uuidScript)), results(t, sh(t, b, uuidScript))
	for _, r := range []map[string]string{ra, rb} {
		if len(r["uuid"]) != 36 || r["class"] != r["uuid"] {
			t.Errorf("product_uuid %q, through /sys/class/dmi/id %q: want one UUID", r["uuid"], r["class"])
		}
		expect(t, r, "ls", "-r--------:root:root")
		expect(t, r, "lo", "/sys/devices/virtual/net/lo")
		expect(t, r, "lo-address", "00:00:00:00:00:00")
	}
	if ra["uuid"] == rb["uuid"] {
		t.Errorf("two containers have product_uuid %s", ra["uuid"])
	}
	if hostDMI {
		if host, _ := os.ReadFile(uuidFile); strings.TrimSpace(string(host)) == ra["uuid"] {
			t.Errorf("the container sees the host's product_uuid")
		}
	} else {
		// Extra mounts per container: the two tmpfs, a bind per entry
		// of the kernel's directories, and the view.
		n, _ := strconv.Atoi(ra["shadow-mounts"])
		t.Logf("host without DMI: %d mounts at or below /sys/devices/virtual and /sys/class", n)
		if n < 4 {
			t.Errorf("%d mounts below /sys/devices/virtual and /sys/class: not shadowed?", n)
		}
	}
	// Only root may read it, as the kernel's (mode 0400).
	if out, err := docker(t, "exec", "-u", "1000", a, "cat", uuidFile); err == nil {
		t.Errorf("uid 1000 reads product_uuid: %q", out)
	}

	// Network devices of the container's namespace stay live, those made
	// later included; a sysfs the container mounts (emulated) has the same
	// product_uuid, and one of a new network namespace its own devices.
	r := results(t, sh(t, a, `
ip link add sv0 type veth peer name sv1 >/dev/null 2>&1
test -e /sys/class/net/sv0/mtu && test -d /sys/devices/virtual/net/sv0 && echo "veth ok" || echo "veth missing"
mkdir -p /mnt/s /mnt/n
mount -t sysfs sysfs /mnt/s && echo "sysfs-uuid $(cat /mnt/s/class/dmi/id/product_uuid)"
unshare -n sh -c 'ip link add sv2 type veth peer name sv3 >/dev/null 2>&1; mount -t sysfs sysfs /mnt/n &&
	echo "netns-uuid $(cat /mnt/n/devices/virtual/dmi/id/product_uuid)"
	echo "netns-devs $(ls /mnt/n/class/net | grep -c sv2):$(ls /mnt/n/class/net | grep -c sv0)"'
`))
	expect(t, r, "veth", "ok")
	expect(t, r, "sysfs-uuid", ra["uuid"])
	expect(t, r, "netns-uuid", ra["uuid"])
	expect(t, r, "netns-devs", "1:0")

	// Nothing of it may be undone from inside: the shadows, the binds in
	// them and the view are protected mounts (on a host with DMI only the
	// view exists, and the other targets are plain sysfs directories).
	targets := []string{uuidFile}
	if !hostDMI {
		targets = append(targets, "/sys/devices/virtual", "/sys/class", "/sys/devices/virtual/net", "/sys/class/net")
	}
	var script strings.Builder
	for _, p := range targets {
		script.WriteString(`
p=` + p + `
umount $p 2>/dev/null && echo "umount $p done" || echo "umount $p refused"
umount -l $p 2>/dev/null && echo "umount-l $p done" || echo "umount-l $p refused"
mount -o remount,rw $p 2>/dev/null && echo "remount-rw $p done" || echo "remount-rw $p refused"
mount -o remount,bind,rw $p 2>/dev/null && echo "bind-rw $p done" || echo "bind-rw $p refused"
`)
	}
	script.WriteString(`
touch /sys/devices/virtual/x 2>/dev/null && echo "create done" || echo "create refused"
echo x 2>/dev/null >` + uuidFile + ` && echo "write done" || echo "write refused"
mkdir -p /mnt/c && mount --rbind /sys/devices/virtual /mnt/c &&
	{ mount -o remount,bind,rw /mnt/c 2>/dev/null && echo "copy-rw done" || echo "copy-rw refused"; }
echo "after $(cat ` + uuidFile + `)"
`)
	r = results(t, sh(t, a, script.String()))
	for _, p := range targets {
		for _, op := range []string{"umount", "umount-l", "remount-rw", "bind-rw"} {
			expect(t, r, op+" "+p, "refused")
		}
	}
	expect(t, r, "create", "refused")
	expect(t, r, "write", "refused")
	expect(t, r, "copy-rw", "refused")
	expect(t, r, "after", ra["uuid"])

	// Stable across a restart (the container's id names it).
	mustDocker(t, "restart", "-t", "1", a)
	expect(t, results(t, sh(t, a, uuidScript)), "uuid", ra["uuid"])

	// The shadows live in the containers' mount namespaces only; after
	// the containers are gone nothing of them is left on the host.
	noHostMounts := func(when string, ids ...string) {
		t.Helper()
		b, _ := os.ReadFile("/proc/self/mountinfo")
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, " - tmpfs sysvisor ") {
				t.Errorf("%s: a shadow on the host: %s", when, l)
			}
			for _, id := range ids {
				if strings.Contains(l, id) {
					t.Errorf("%s: host mount naming %.12s: %s", when, id, l)
				}
			}
		}
	}
	noHostMounts("running")
	mustDocker(t, "rm", "-f", a, b)
	noHostMounts("after docker rm", a, b)
}
