package e2e

// Mount emulation, end to end: what mount(2) and umount2(2) do in a sysvisor
// container (procfs and sysfs with the container's masks, other filesystems
// left to the kernel), what they must never do (undo the runtime's mounts,
// reach the host), and how they fail on bad arguments. The helpers
// mountcall and mountrace (tests/testdata) make the calls and print errno
// names.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sysvisor/sysvisor/kernel"
)

// mnt is one line of a mountinfo file.
type mnt struct {
	id, parent               int
	dev, root, point, opts   string
	fstype, source, superOpt string
}

func (m mnt) ro() bool {
	for _, o := range strings.Split(m.opts, ",") {
		if o == "ro" {
			return true
		}
	}
	return false
}

func parseMountinfo(t *testing.T, s string) []mnt {
	t.Helper()
	var out []mnt
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(l)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+3 {
			t.Fatalf("malformed mountinfo line %q", l)
		}
		m := mnt{dev: f[2], root: f[3], point: f[4], opts: f[5], fstype: f[sep+1], source: f[sep+2]}
		if len(f) > sep+3 {
			m.superOpt = f[sep+3]
		}
		m.id, _ = strconv.Atoi(f[0])
		m.parent, _ = strconv.Atoi(f[1])
		out = append(out, m)
	}
	return out
}

// containerMounts is the mount table of the container's init.
func containerMounts(t *testing.T, id string) []mnt {
	t.Helper()
	return parseMountinfo(t, mustDocker(t, "exec", id, "cat", "/proc/1/mountinfo"))
}

// mountsOutside renders a mount table without the mounts at or under the
// given prefixes (the tests' own scratch mounts), for before/after
// comparisons: ids, options and order included.
func mountsOutside(ms []mnt, prefixes ...string) string {
	var b strings.Builder
next:
	for _, m := range ms {
		for _, p := range prefixes {
			if m.point == p || strings.HasPrefix(m.point, p+"/") {
				continue next
			}
		}
		fmt.Fprintf(&b, "%d %d %s %s %s %s %s %s %s\n", m.id, m.parent, m.dev, m.root, m.point, m.opts, m.fstype, m.source, m.superOpt)
	}
	return b.String()
}

// sh runs a script in a running container and returns its output.
func sh(t *testing.T, id, script string) string {
	t.Helper()
	return mustDocker(t, "exec", id, "sh", "-c", script)
}

// results parses "label result" lines (the label may contain spaces; the
// result is the last field).
func results(t *testing.T, out string) map[string]string {
	t.Helper()
	r := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			t.Fatalf("unexpected output line %q in:\n%s", l, out)
		}
		r[l[:i]] = l[i+1:]
	}
	return r
}

func expect(t *testing.T, r map[string]string, label, want string) {
	t.Helper()
	if got, ok := r[label]; !ok {
		t.Errorf("%s: no result", label)
	} else if got != want {
		t.Errorf("%s: %s, want %s", label, got, want)
	}
}

// marker names the test process's mounts: a host mount carrying it means
// a mount made in a container reached the host.
var marker = fmt.Sprintf("svmt%d", os.Getpid())

// Host files the mount tests must leave as they are.
var hostSysctls = []string{
	"kernel/core_pattern", "kernel/panic", "kernel/hostname", "kernel/domainname",
	"kernel/modprobe", "kernel/shmmax", "kernel/randomize_va_space", "kernel/dmesg_restrict",
	"net/ipv4/ip_forward", "fs/file-max", "vm/overcommit_memory", "kernel/pid_max", "fs/mqueue/msg_max",
}

// hostMountKeys is the host's mount table as a multiset of (place, source,
// type, options), without the sysvisor test environments' own mounts
// (/tmp/sysvisor-*: engines, layers, containers), which change whenever
// any environment starts or stops a container.
func hostMountKeys(t *testing.T) map[string]int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int{}
	for _, m := range parseMountinfo(t, string(b)) {
		// Test environments: ours, and other private ones (tests/env.sh
		// with SV_DIR=/tmp/sv-*) running on the same host.
		if strings.HasPrefix(m.point, "/tmp/sysvisor-") || strings.HasPrefix(m.point, "/tmp/sv-") {
			continue
		}
		keys[strings.Join([]string{m.point, m.root, m.dev, m.fstype, m.source, m.opts, m.superOpt}, " ")]++
	}
	return keys
}

// watchHost records the host's mounts and a few sysctls now and, when the
// test ends (before its containers are removed), fails it if any changed or
// a mount of this test process's appeared on the host.
func watchHost(t *testing.T) {
	t.Helper()
	mounts := hostMountKeys(t)
	sysctls := map[string]string{}
	for _, s := range hostSysctls {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil {
			sysctls[s] = string(b)
		}
	}
	t.Cleanup(func() {
		now := hostMountKeys(t)
		for k, n := range now {
			if n > mounts[k] {
				t.Errorf("new mount on the host: %s", k)
			}
		}
		for k, n := range mounts {
			if now[k] < n {
				t.Errorf("host mount gone or changed: %s", k)
			}
		}
		if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), marker) {
			t.Errorf("a mount made in a container (source %s) is in the host's mount table", marker)
		}
		for s, v := range sysctls {
			if b, _ := os.ReadFile("/proc/sys/" + s); string(b) != v {
				t.Errorf("host /proc/sys/%s changed: %q -> %q", s, v, b)
			}
		}
	})
}

func sysvisordPid(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(svDir, "sysvisord.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if syscall.Kill(pid, 0) != nil {
		t.Fatalf("sysvisord (pid %d) is not running", pid)
	}
	return pid
}

func TestMountProcInNewPidNamespace(t *testing.T) {
	watchHost(t)
	out := mustDocker(t, sv("unshare", "-p", "-f", "--mount-proc", "sh", "-c",
		"ps -o pid,comm; echo ---; cat /proc/self/status; echo ---; cat /proc/self/mountinfo")...)
	parts := strings.Split(out, "---\n")
	if len(parts) != 3 {
		t.Fatalf("output:\n%s", out)
	}
	ps := strings.Split(strings.TrimSpace(parts[0]), "\n")
	if len(ps) != 3 || strings.Fields(ps[1])[0] != "1" || strings.Fields(ps[1])[1] != "sh" {
		t.Errorf("ps in a new pid namespace with its own /proc:\n%s\nwant sh as pid 1 and ps", parts[0])
	}
	var pid string
	for _, l := range strings.Split(parts[1], "\n") {
		if v, ok := strings.CutPrefix(l, "NSpid:"); ok {
			pid = strings.TrimSpace(v)
		}
	}
	if n, err := strconv.Atoi(pid); err != nil || n > 5 {
		t.Errorf("/proc/self/status NSpid %q, want one small pid of the new namespace", pid)
	}
	// The new /proc (on top of the container's) carries its masks.
	masks := childrenOf(parseMountinfo(t, parts[2]), "/proc")
	if m, ok := masks["/sys"]; !ok || !m.ro() {
		t.Errorf("/proc/sys under unshare --mount-proc: %+v, want a read-only mount", m)
	}
	if m, ok := masks["/timer_list"]; !ok || m.root != "/null" {
		t.Errorf("/proc/timer_list under unshare --mount-proc: %+v, want /dev/null over it", m)
	}
	// Built the way this kernel, or the forced fallbacks
	// (SYSVISOR_KERNEL_FALLBACKS, which sysvisord inherits), say.
	by, stage := "pid-namespace-helper", "staging-namespace"
	if kernel.ProcfsPidNS.Has() {
		by = "pidns-option"
	}
	if kernel.DetachedMounts.Has() {
		stage = "detached"
	}
	const want = "kernel filesystem created:"
	found := false
	for _, l := range strings.Split(sysvisordLog(t), "\n") {
		if strings.Contains(l, want) && strings.Contains(l, "fstype=proc") {
			found = true
			if !strings.Contains(l, "created_by="+by) || !strings.Contains(l, "stage="+stage) {
				t.Errorf("procfs built as %q, want created_by=%s stage=%s", l, by, stage)
			}
		}
	}
	if !found {
		t.Error("sysvisord logged no procfs it built")
	}
}

// sysvisordLog is the private sysvisord's log so far (debug level).
func sysvisordLog(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(svDir, "log", "sysvisord.log"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// childrenOf maps the mounts directly on top of the (topmost) mount at
// point to their place relative to it.
func childrenOf(ms []mnt, point string) map[string]mnt {
	var parent mnt
	for _, m := range ms {
		if m.point == point {
			parent = m // the last one is on top
		}
	}
	out := map[string]mnt{}
	for _, m := range ms {
		if m.parent == parent.id && m.id != parent.id {
			out[strings.TrimPrefix(m.point, point)] = m
		}
	}
	return out
}

func TestMountProcCarriesMasks(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	r := results(t, sh(t, id, `mkdir -p /mnt/p; echo "mount $(mountcall mount proc /mnt/p proc 0 -)"`))
	expect(t, r, "mount", "ok")
	ms := containerMounts(t, id)
	want, got := childrenOf(ms, "/proc"), childrenOf(ms, "/mnt/p")
	if len(want) == 0 {
		t.Fatal("the container's /proc has no masks to compare with")
	}
	for rel, w := range want {
		g, ok := got[rel]
		switch {
		case !ok:
			t.Errorf("/mnt/p%s: not masked, /proc%s is (%s %s)", rel, rel, w.fstype, w.root)
		case g.fstype != w.fstype || g.root != w.root || g.ro() != w.ro():
			t.Errorf("/mnt/p%s: %s %s ro=%v, want as /proc%s: %s %s ro=%v", rel, g.fstype, g.root, g.ro(), rel, w.fstype, w.root, w.ro())
		}
	}
	for rel := range got {
		if _, ok := want[rel]; !ok {
			t.Errorf("/mnt/p%s: a mount /proc does not have", rel)
		}
	}
	// What the masks do, and that they stay.
	r = results(t, sh(t, id, `
		echo "init $(tr '\0' _ </mnt/p/1/cmdline)"
		echo "timer_list $(wc -c </mnt/p/timer_list)"
		echo "acpi $(ls -A /mnt/p/acpi | wc -l)"
		echo "write-sys $(echo x 2>&1 >/mnt/p/sys/kernel/domainname | grep -c 'Read-only')"
		echo "umount-timer_list $(mountcall umount /mnt/p/timer_list 0)"
		echo "umount-sys $(mountcall umount /mnt/p/sys detach)"
		echo "umount-acpi $(mountcall umount /mnt/p/acpi 0)"
		echo "rw-sys $(mountcall mount - /mnt/p/sys - remount,bind -)"
		echo "move-sys $(mountcall mount /mnt/p/sys /tmp - move -)"
		echo "bind-p $(mountcall mount /mnt/p /tmp - bind -)"
	`))
	expect(t, r, "init", "sleep_600_") // the container's pid namespace, not the host's
	expect(t, r, "timer_list", "0")
	expect(t, r, "acpi", "0")
	expect(t, r, "write-sys", "1")
	expect(t, r, "umount-timer_list", "EPERM")
	expect(t, r, "umount-sys", "EPERM")
	expect(t, r, "umount-acpi", "EPERM")
	expect(t, r, "rw-sys", "EPERM")
	expect(t, r, "move-sys", "EPERM")
	expect(t, r, "bind-p", "EINVAL")
	if after := mountsOutside(containerMounts(t, id)); after != mountsOutside(ms) {
		t.Errorf("mount table changed by refused operations:\n%s\nwas:\n%s", after, mountsOutside(ms))
	}
	// The whole tree is the container's own to take down, lazily or not.
	r = results(t, sh(t, id, `
		echo "umount-p $(mountcall umount /mnt/p detach)"
		mkdir -p /mnt/p2 && mountcall mount proc /mnt/p2 proc 0 - >/dev/null
		echo "umount-p2 $(mountcall umount /mnt/p2 0)"
		echo "left $(grep -c ' /mnt/p' /proc/self/mountinfo)"
	`))
	expect(t, r, "umount-p", "ok")
	expect(t, r, "umount-p2", "ok")
	expect(t, r, "left", "0")
}

func TestSysfsMountInNewNetNamespace(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	r := results(t, sh(t, id, `mkdir -p /mnt/s; unshare -n sh -c '
		echo "mount $(mountcall mount sysfs /mnt/s sysfs 0 -)"
		echo "net $(ls /mnt/s/class/net | tr "\n" ,)"
		echo "ro $(grep " /mnt/s " /proc/self/mountinfo | cut -d" " -f6 | cut -d, -f1)"
		echo "firmware $(grep -c " /mnt/s/firmware ro,.* - tmpfs " /proc/self/mountinfo)"
		echo "firmware-files $(ls -A /mnt/s/firmware | wc -l)"
		echo "umount-firmware $(mountcall umount /mnt/s/firmware 0)"
		echo "rw-s $(mountcall mount - /mnt/s - remount,bind -)"
		echo "umount-s $(mountcall umount /mnt/s detach)"
	'`))
	expect(t, r, "mount", "ok")
	expect(t, r, "net", "lo,") // the new network namespace's devices
	expect(t, r, "ro", "ro")
	expect(t, r, "firmware", "1")
	expect(t, r, "firmware-files", "0")
	expect(t, r, "umount-firmware", "EPERM")
	expect(t, r, "rw-s", "ok") // its own mount, read-only only because /sys is: no protection
	expect(t, r, "umount-s", "ok")
}

func TestMountTmpfsAndOverlay(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	r := results(t, sh(t, id, fmt.Sprintf(`
		mkdir -p /mnt/t /mnt/o
		echo "tmpfs $(mountcall mount %[1]s /mnt/t tmpfs 0 size=4m)"
		mkdir /mnt/t/l /mnt/t/u /mnt/t/w && echo lower >/mnt/t/l/f
		echo "overlay $(mountcall mount %[1]s /mnt/o overlay 0 lowerdir=/mnt/t/l,upperdir=/mnt/t/u,workdir=/mnt/t/w)"
		echo "read $(cat /mnt/o/f)"
		echo new >/mnt/o/g
		echo "upper $(cat /mnt/t/u/g)"
	`, marker)))
	expect(t, r, "tmpfs", "ok")
	expect(t, r, "overlay", "ok")
	expect(t, r, "read", "lower")
	expect(t, r, "upper", "new")
	var got []string
	for _, m := range containerMounts(t, id) {
		if m.source == marker {
			got = append(got, m.point+" "+m.fstype)
		}
	}
	if strings.Join(got, ",") != "/mnt/t tmpfs,/mnt/o overlay" {
		t.Errorf("the container's mounts of %s: %v, want a tmpfs at /mnt/t and an overlay at /mnt/o", marker, got)
	}
	// A mount in use stays busy however often the emulation retries (it
	// retries a plain umount's EBUSY for ~30 ms, see umountHandler).
	r = results(t, sh(t, id, `
		(cd /mnt/o && sleep 3) & sleep 0.3
		echo "umount-busy $(mountcall umount /mnt/o 0)"
		kill $! 2>/dev/null; wait
		echo "umount-o $(mountcall umount /mnt/o 0)"
		echo "umount-t $(mountcall umount /mnt/t 0)"
	`))
	expect(t, r, "umount-busy", "EBUSY")
	expect(t, r, "umount-o", "ok")
	expect(t, r, "umount-t", "ok")
}

// protScript tries to undo every mount given in $4.. through prefix $1,
// labelled $2, and to make those in $3 (read-only ones) writable; one
// "label op mountpoint result" line per call.
const protScript = `p=$1; ctx=$2; ro=$3; shift 3
mkdir -p $p/mnt/mv $p/mnt/bd 2>/dev/null
for m in "$@"; do
	echo "$ctx umount $m $(mountcall umount $p$m 0)"
	echo "$ctx detach $m $(mountcall umount $p$m detach)"
	echo "$ctx move $m $(mountcall mount $p$m $p/mnt/mv - move -)"
done
for m in $ro; do
	echo "$ctx rw-bind $m $(mountcall mount - $p$m - remount,bind -)"
	echo "$ctx rw $m $(mountcall mount - $p$m - remount -)"
done
for m in /proc /sys; do
	echo "$ctx bind $m $(mountcall mount $p$m $p/mnt/bd - bind -)"
done
`

func TestUmountAndRemountOfRuntimeMountsRefused(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	before := containerMounts(t, id)
	var points, roPoints []string
	ro := map[string]bool{}
	for _, m := range before {
		if m.point == "/" {
			continue
		}
		points = append(points, m.point)
		ro[m.point] = m.ro()
		if m.ro() {
			roPoints = append(roPoints, m.point)
		}
	}
	for _, p := range []string{"/proc", "/proc/sys", "/proc/timer_list", "/sys/firmware", "/etc/hosts"} {
		if _, ok := ro[p]; !ok {
			t.Fatalf("the container has no %s mount: %v", p, points)
		}
	}
	args := fmt.Sprintf("'%s' %s", strings.Join(roPoints, " "), strings.Join(points, " "))
	run := func(ctx string) string { // ctx: the commands that run protScript
		return sh(t, id, fmt.Sprintf("cat >/tmp/prot.sh <<'EOF'\n%sEOF\n%s", protScript, ctx))
	}
	out := run(fmt.Sprintf(`
		sh /tmp/prot.sh "" plain %[1]s
		unshare -m sh /tmp/prot.sh "" unshare %[1]s
		mkdir -p /rb /x
		mount --rbind / /rb && sh /tmp/prot.sh /rb rbind %[1]s
		chroot /rb sh /tmp/prot.sh "" chroot %[1]s
		mount --rbind /proc /x && for m in timer_list sys keys acpi; do
			echo "rbind-proc umount /$m $(mountcall umount /x/$m 0)"
		done
		for m in sys acpi; do
			echo "rbind-proc rw-bind /$m $(mountcall mount - /x/$m - remount,bind -)"
		done
		echo "cleanup /rb $(mountcall umount /rb detach)"
		echo "cleanup /x $(mountcall umount /x detach)"
	`, args))
	r := results(t, out)
	ctxs := []string{"plain", "unshare", "rbind", "chroot"}
	for _, ctx := range ctxs {
		for _, p := range points {
			for _, op := range []string{"umount", "detach", "move"} {
				if got := r[ctx+" "+op+" "+p]; got == "ok" || got == "" {
					t.Errorf("%s: %s %s: %q, want refused", ctx, op, p, got)
				}
			}
			if ro[p] {
				for _, op := range []string{"rw-bind", "rw"} {
					if got := r[ctx+" "+op+" "+p]; got != "EPERM" {
						t.Errorf("%s: %s %s (read-only): %q, want EPERM", ctx, op, p, got)
					}
				}
			}
		}
		expect(t, r, ctx+" umount /proc", "EBUSY")
		expect(t, r, ctx+" detach /proc", "EBUSY")
		expect(t, r, ctx+" umount /proc/sys", "EPERM")
		expect(t, r, ctx+" umount /proc/timer_list", "EPERM")
		expect(t, r, ctx+" detach /sys/firmware", "EPERM")
		expect(t, r, ctx+" umount /etc/hosts", "EPERM")
		expect(t, r, ctx+" move /proc/sys", "EPERM")
		expect(t, r, ctx+" bind /proc", "EINVAL") // would uncover the masks
		expect(t, r, ctx+" bind /sys", "EINVAL")
	}
	for _, m := range []string{"/timer_list", "/sys", "/keys", "/acpi"} {
		expect(t, r, "rbind-proc umount "+m, "EPERM")
	}
	for _, m := range []string{"/sys", "/acpi"} { // the read-only ones
		expect(t, r, "rbind-proc rw-bind "+m, "EPERM")
	}
	expect(t, r, "cleanup /rb", "ok")
	expect(t, r, "cleanup /x", "ok")
	after := containerMounts(t, id)
	if a, b := mountsOutside(after, "/mnt", "/rb", "/x"), mountsOutside(before); a != b {
		t.Errorf("the container's mount table changed:\n%s\nwas:\n%s", a, b)
	}
}

func TestMountReadOnlyRemountAllowed(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	// In a mount namespace of its own: the container's stays as it is.
	// /etc/hosts keeps the flags its mount has: where the engine's
	// directory is on a nosuid,nodev tmpfs (the VMs' /tmp), those are
	// locked, and leaving them out is refused as for /dev/shm below.
	r := results(t, sh(t, id, `unshare -m sh -c '
		keep=$(awk "\$5 == \"/etc/hosts\" {print \$6}" /proc/self/mountinfo | tr , "\n" | grep -xE "nosuid|nodev|noexec" | tr "\n" , )
		echo "ro-hosts $(mountcall mount - /etc/hosts - remount,bind,rdonly,${keep%,} -)"
		echo "write-hosts $(echo x 2>&1 >>/etc/hosts | grep -c Read-only)"
		echo "ro-shm-clearing $(mountcall mount - /dev/shm - remount,bind,rdonly -)"
		echo "ro-shm $(mountcall mount - /dev/shm - remount,bind,rdonly,nosuid,nodev,noexec -)"
		echo "write-shm $(echo x 2>&1 >/dev/shm/x | grep -c Read-only)"
	'`))
	expect(t, r, "ro-hosts", "ok")
	expect(t, r, "write-hosts", "1")
	// /dev/shm is nosuid,nodev,noexec: a remount that leaves those out
	// would clear them, refused as the kernel refuses it for locked mounts.
	expect(t, r, "ro-shm-clearing", "EPERM")
	expect(t, r, "ro-shm", "ok")
	expect(t, r, "write-shm", "1")
	if out := sh(t, id, `echo x >>/etc/hosts && touch /dev/shm/x && echo writable`); out != "writable" {
		t.Errorf("the container's own /etc/hosts and /dev/shm after remounts in another namespace: %q", out)
	}
}

// TestMountCannotReconfigureHostFilesystems: a superblock remount of a
// filesystem the container did not create (here a host tmpfs behind a
// volume) is refused as the kernel refuses it to a user namespace; options
// never change on the host.
func TestMountCannotReconfigureHostFilesystems(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("svhostvol", dir, "tmpfs", 0, "size=2m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	hostLine := func() string {
		b, _ := os.ReadFile("/proc/self/mountinfo")
		for _, m := range parseMountinfo(t, string(b)) {
			if m.point == dir {
				return m.opts + " " + m.superOpt
			}
		}
		return ""
	}
	was := hostLine()
	if !strings.Contains(was, "size=2048k") {
		t.Fatalf("test tmpfs on the host: %q", was)
	}
	id := startDetached(t, "sysvisor-runc", "-v", dir+":/v")
	r := results(t, sh(t, id, `
		mkdir -p /mnt/vb && mount --bind /v /mnt/vb
		echo "size $(mountcall mount - /v - remount size=3m)"
		echo "ro $(mountcall mount - /v - remount,rdonly -)"
		echo "copy-size $(mountcall mount - /mnt/vb - remount size=3m)"
		echo "copy-force $(mountcall umount /mnt/vb force)"
		echo "ro-bind $(mountcall mount - /mnt/vb - remount,bind,rdonly -)"
	`))
	expect(t, r, "size", "EPERM")
	expect(t, r, "ro", "EPERM")
	expect(t, r, "copy-size", "EPERM")
	expect(t, r, "copy-force", "EPERM") // MNT_FORCE needs CAP_SYS_ADMIN over the superblock
	expect(t, r, "ro-bind", "ok")       // the container's own mount of it
	if now := hostLine(); now != was {
		t.Errorf("host tmpfs changed from inside the container: %q -> %q", was, now)
	}
}

func TestNonRootCannotMountOrUmount(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	before := containerMounts(t, id)
	r := results(t, sh(t, id, `mkdir -p /mnt/ok /mnt/n && mount -t tmpfs x /mnt/ok && chmod 777 /mnt/n &&
		su nobody -s /bin/sh -c '
		echo "id $(id -u)"
		echo "tmpfs $(mountcall mount x /mnt/n tmpfs 0 -)"
		echo "proc $(mountcall mount proc /mnt/n proc 0 -)"
		echo "sysfs $(mountcall mount sysfs /mnt/n sysfs 0 -)"
		echo "bind $(mountcall mount /mnt/ok /mnt/n - bind -)"
		echo "rbind $(mountcall mount / /mnt/n - bind,rec -)"
		echo "move $(mountcall mount /mnt/ok /mnt/n - move -)"
		echo "remount $(mountcall mount - /mnt/ok - remount,rdonly -)"
		echo "remount-bind $(mountcall mount - /mnt/ok - remount,bind,rdonly -)"
		echo "private $(mountcall mount - /mnt/ok - private -)"
		echo "umount $(mountcall umount /mnt/ok 0)"
		echo "detach $(mountcall umount /mnt/ok detach)"
		echo "umount-proc-sys $(mountcall umount /proc/sys detach)"
		'
		echo "still $(grep -c " /mnt/ok rw," /proc/self/mountinfo)"
		echo "nothing-on-n $(grep -c " /mnt/n " /proc/self/mountinfo)"
	`))
	expect(t, r, "id", "65534")
	for _, op := range []string{"tmpfs", "proc", "sysfs", "bind", "rbind", "move", "remount", "remount-bind", "private", "umount", "detach", "umount-proc-sys"} {
		expect(t, r, op, "EPERM")
	}
	expect(t, r, "still", "1")
	expect(t, r, "nothing-on-n", "0")
	if a, b := mountsOutside(containerMounts(t, id), "/mnt"), mountsOutside(before, "/mnt"); a != b {
		t.Errorf("the container's mount table changed:\n%s\nwas:\n%s", a, b)
	}
}

func TestNewMountAPIIsENOSYS(t *testing.T) {
	r := results(t, mustDocker(t, sv("mountcall", "newapi")...))
	for _, c := range []string{"fsopen", "fspick", "open_tree", "move_mount", "mount_setattr"} {
		expect(t, r, c, "ENOSYS")
	}
}

// raceCounts parses mountrace's output.
func raceCounts(t *testing.T, out string) map[string]int {
	t.Helper()
	c := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, ok := strings.Cut(l, "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil {
			t.Fatalf("mountrace output %q", out)
		}
		c[k] = n
	}
	return c
}

// TestMountRacingRewrites: a thread rewrites the path, or swaps a symlink
// on it, while another calls mount/umount2. Whatever interleaving happens,
// a protected mount is never remounted read-write or unmounted.
func TestMountRacingRewrites(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	sh(t, id, "mkdir -p /mnt/ok /mnt/okp/sys && mount -t tmpfs ok /mnt/ok && mount -t tmpfs ok /mnt/okp/sys && ln -s /mnt/okp /mnt/lnk")
	before := containerMounts(t, id)
	runs := []struct {
		args    []string
		refused []string // what the protected side answers
	}{
		{[]string{"remount-bind", "/mnt/ok", "/proc/sys", "0.6"}, []string{"EPERM"}},
		{[]string{"remount", "/mnt/ok", "/proc/sys", "0.6"}, []string{"EPERM"}},
		{[]string{"umount", "/mnt/ok", "/proc/sys", "0.6"}, []string{"EPERM"}},
		{[]string{"umount", "/mnt/ok", "/proc/timer_list", "0.6"}, []string{"EPERM"}},
		{[]string{"umount-detach", "/mnt/ok", "/proc/sys", "0.6"}, []string{"EPERM"}},
		{[]string{"umount-detach", "/mnt/ok", "/etc/hosts", "0.6"}, []string{"EPERM"}},
		{[]string{"umount-detach", "/mnt/ok", "/proc", "0.6"}, []string{"EBUSY"}},
		// The symlink /mnt/lnk flips between /mnt/okp and /proc while
		// umount2("/mnt/lnk/sys") runs: its directory is resolved twice.
		{[]string{"symlink-umount", "/mnt/lnk", "/mnt/okp", "/proc", "sys", "1.5"}, []string{"EPERM", "EINVAL"}},
		{[]string{"symlink-umount-detach", "/mnt/lnk", "/mnt/okp", "/proc", "sys", "0.6"}, []string{"EPERM"}},
	}
	for _, run := range runs {
		out := mustDocker(t, append([]string{"exec", id, "mountrace"}, run.args...)...)
		c := raceCounts(t, out)
		refused := 0
		for _, e := range run.refused {
			refused += c[e]
		}
		t.Logf("mountrace %s: %v", strings.Join(run.args, " "), c)
		if c["ok"] == 0 || refused == 0 {
			t.Errorf("mountrace %s: %v: want both the unprotected mount changed and the protected one refused, or the race proves nothing", strings.Join(run.args, " "), c)
		}
	}
	after := containerMounts(t, id)
	if a, b := mountsOutside(after, "/mnt"), mountsOutside(before, "/mnt"); a != b {
		t.Errorf("the container's mount table changed under the races:\n%s\nwas:\n%s", a, b)
	}
	for _, m := range after {
		if m.point == "/proc/sys" && !m.ro() {
			t.Errorf("/proc/sys is writable: %+v", m)
		}
	}
}

// TestMountCoveredRootAfterPivot: the dance of runc and systemd: a
// recursive bind of "/" becomes the root with pivot_root(".", "."), which
// stacks the old root on top of it, and umount2(".", MNT_DETACH) takes the
// old root away. In between, the caller's root lies under the old root (no
// mountinfo of the namespace's root lists it: the fallback for kernels
// without statmount reads the caller's own); the copies of the protected
// mounts stay protected, also from a caller chrooted into one.
func TestMountCoveredRootAfterPivot(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	r := results(t, sh(t, id, `
		mkdir -p /mnt/t /r && mount -t tmpfs t /mnt/t && mount --rbind / /r
		before=$(grep -c . /proc/self/mountinfo)
		cd /r && pivot_root . .
		echo "sys-copy $(mountcall umount /proc/sys detach)"
		echo "chroot-sys-copy $(mountcall --chroot /proc/sys umount / detach)"
		echo "tmpfs-copy $(mountcall umount /mnt/t detach)"
		echo "old-root $(mountcall umount . detach)"
		cd /
		echo "halved $([ $(grep -c . /proc/self/mountinfo) -eq $((before / 2 - 1)) ] && echo yes || echo "no: $before before, now $(grep -c . /proc/self/mountinfo)")"
		echo "sys-after $(mountcall umount /proc/sys detach)"
		echo "sys-ro $(grep -c ' /proc/sys ro,' /proc/self/mountinfo)"
	`))
	expect(t, r, "sys-copy", "EPERM")
	expect(t, r, "chroot-sys-copy", "EPERM")
	expect(t, r, "tmpfs-copy", "ok")
	expect(t, r, "old-root", "ok")
	expect(t, r, "halved", "yes")
	expect(t, r, "sys-after", "EPERM")
	expect(t, r, "sys-ro", "1")
}

// TestMountPathsResolveInContainer: symlinks to "/", through
// /proc/<pid>/root, "..", absolute and chroot-relative paths, as mount
// sources and targets, all resolve in the caller's root.
func TestMountPathsResolveInContainer(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	hostOnly := svDir // exists on the host, not in the container
	r := results(t, sh(t, id, fmt.Sprintf(`
		touch /%[1]s-root
		mkdir -p /mnt/r1 /mnt/r2 /mnt/r3 /mnt/r4 /tmp/tt /tmp/tt2 /mnt/pp /mnt/pq /jail/bin /jail/mnt/q /jail/mnt/q2 /jail/mnt/q3
		cp /bin/mountcall /jail/bin/
		root=$(stat -c %%d:%%i /)
		ln -s / /mnt/lnk-root
		echo "rbind-symlink-root $(mountcall mount /mnt/lnk-root /mnt/r1 - bind,rec -)"
		echo "r1-is-root $([ "$(stat -c %%d:%%i /mnt/r1)" = "$root" ] && [ -e /mnt/r1/%[1]s-root ] && echo yes)"
		echo "rbind-self-root $(mountcall mount /proc/self/root/../../.. /mnt/r2 - bind,rec -)"
		echo "r2-is-root $([ "$(stat -c %%d:%%i /mnt/r2)" = "$root" ] && [ -e /mnt/r2/%[1]s-root ] && echo yes)"
		echo "rbind-1-root $(mountcall mount /proc/1/root/../../.. /mnt/r3 - bind,rec -)"
		echo "r3-is-root $([ "$(stat -c %%d:%%i /mnt/r3)" = "$root" ] && echo yes)"
		ln -s ../../../../.. /mnt/up
		echo "rbind-dotdot $(cd /tmp && mountcall mount ../../../mnt/up/.. /mnt/r4 - bind,rec -)"
		echo "r4-is-root $([ "$(stat -c %%d:%%i /mnt/r4)" = "$root" ] && echo yes)"
		ln -s ../../../../../tmp/tt /mnt/lnk-tt
		echo "tmpfs-via-symlink $(mountcall mount %[1]s /mnt/lnk-tt tmpfs 0 -)"
		echo "tt-mounted $(grep -c ' /tmp/tt rw.* %[1]s ' /proc/self/mountinfo)"
		echo "tmpfs-via-proc1 $(mountcall mount %[1]s /proc/1/root/tmp/tt2 tmpfs 0 -)"
		echo "tt2-mounted $(grep -c ' /tmp/tt2 rw.* %[1]s ' /proc/self/mountinfo)"
		ln -s /proc/1/root/mnt/pp /mnt/lnk-pp
		echo "proc-via-symlink $(mountcall mount proc /mnt/lnk-pp proc 0 -)"
		echo "pp-mounted $(grep -c ' /mnt/pp .* proc ' /proc/self/mountinfo)"
		echo "proc-dotdot $(cd /tmp && mountcall mount proc ../../../../mnt/pq proc 0 -)"
		echo "pq-mounted $(grep -c ' /mnt/pq .* proc ' /proc/self/mountinfo)"
		echo "host-tmpfs $(mountcall mount %[1]s %[2]s tmpfs 0 -)"
		echo "host-proc $(mountcall mount proc %[2]s proc 0 -)"
		echo "host-bind $(mountcall mount / %[2]s - bind,rec -)"
		echo "host-src $(mountcall mount %[2]s /mnt/r1 - bind -)"
		echo "jail-proc $(chroot /jail /bin/mountcall mount proc /../../mnt/q proc 0 -)"
		echo "jail-proc-at $(grep -c ' /jail/mnt/q .* proc ' /proc/self/mountinfo)"
		echo "jail-bind $(chroot /jail /bin/mountcall mount /../.. /mnt/q2 - bind -)"
		echo "q2-is-jail $([ "$(stat -c %%d:%%i /jail/mnt/q2)" = "$(stat -c %%d:%%i /jail)" ] && echo yes)"
		echo "jail-self-root $(chroot /jail /bin/mountcall mount /proc/self/root /mnt/q3 - bind -)"
		echo "jail-1-root $(chroot /jail /bin/mountcall mount /proc/1/root /mnt/q3 - bind -)"
	`, marker, hostOnly)))
	for _, k := range []string{"rbind-symlink-root", "rbind-self-root", "rbind-1-root", "rbind-dotdot",
		"tmpfs-via-symlink", "tmpfs-via-proc1", "proc-via-symlink", "proc-dotdot", "jail-proc", "jail-bind"} {
		expect(t, r, k, "ok")
	}
	for _, k := range []string{"r1-is-root", "r2-is-root", "r3-is-root", "r4-is-root", "q2-is-jail"} {
		expect(t, r, k, "yes")
	}
	for _, k := range []string{"tt-mounted", "tt2-mounted", "pp-mounted", "pq-mounted", "jail-proc-at"} {
		expect(t, r, k, "1")
	}
	for _, k := range []string{"host-tmpfs", "host-proc", "host-bind", "host-src", "jail-self-root", "jail-1-root"} {
		expect(t, r, k, "ENOENT")
	}
}

// TestMountBadPointers: bad pointers and overlong strings in every
// argument of mount(2) and umount2(2) fail with the errno the kernel gives
// (runc's container, where the calls are not trapped, is the reference),
// and sysvisord goes on serving.
func TestMountBadPointers(t *testing.T) {
	watchHost(t)
	pid := sysvisordPid(t)
	got := mustDocker(t, sv("mountcall", "badptr")...)
	want := mustDocker(t, "run", "--rm", "--runtime=runc", "--cap-add", "SYS_ADMIN",
		"--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined", image, "mountcall", "badptr")
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	if len(w) < 150 {
		t.Fatalf("reference run gave %d lines:\n%s", len(w), want)
	}
	if len(g) != len(w) {
		t.Fatalf("sysvisor gave %d lines, runc %d:\n%s", len(g), len(w), got)
	}
	for i := range w {
		if g[i] != w[i] {
			t.Errorf("%s under sysvisor, %s under runc", g[i], w[i])
		}
	}
	r := results(t, got)
	// Not all of it is the kernel's: these go through sysvisord's copies.
	expect(t, r, "proc target unmapped", "EFAULT")
	expect(t, r, "proc target long", "ENAMETOOLONG")
	expect(t, r, "bind source protnone", "EFAULT")
	expect(t, r, "remount-bind fstype unterminated", "EFAULT")
	expect(t, r, "after mount", "ok")
	expect(t, r, "after proc", "ok")
	expect(t, r, "after umount", "ok")
	if now := sysvisordPid(t); now != pid {
		t.Errorf("sysvisord restarted: pid %d, was %d", now, pid)
	}
	if out := mustDocker(t, sv("sh", "-c", "mkdir -p /mnt/p && mountcall mount proc /mnt/p proc 0 -")...); out != "ok" {
		t.Errorf("a proc mount after the bad pointers: %s", out)
	}
}

// TestBindCopyKeepsFlags: a plain bind copy of a protected read-only mount
// may go away, but may not be made writable (or lose nosuid and friends),
// or /proc/sys would be writable two commands later.
func TestBindCopyKeepsFlags(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	// /proc/sys has protected mounts under it (the read-write net bind,
	// the sysctl views): only a recursive copy may be made, as the kernel
	// allows only recursive copies of a mount with locked children.
	r := results(t, sh(t, id, `mkdir -p /x /y
		echo "plain-copy $(mountcall mount /proc/sys /x - bind -)"
		mountcall mount /proc/sys /x - bind,rec - >/dev/null
		echo "rw-copy $(mountcall mount - /x - remount,bind -)"
		echo "write-copy $(echo 1 2>&1 >/x/kernel/core_pattern | grep -c Read-only)"
		echo "umount-copy $(mountcall umount /x detach)"
		mountcall mount /dev/shm /y - bind - >/dev/null
		echo "exec-copy $(mountcall mount - /y - remount,bind,nosuid,nodev -)"
		echo "umount-y $(mountcall umount /y -)"`))
	expect(t, r, "plain-copy", "EINVAL")
	expect(t, r, "rw-copy", "EPERM")
	expect(t, r, "write-copy", "1")
	expect(t, r, "umount-copy", "ok")
	expect(t, r, "exec-copy", "EPERM")
	expect(t, r, "umount-y", "ok")
}

// TestBindOfSysctlIsTheContainers: the kernel resolves names under
// /proc/sys in the looking task's network and IPC namespaces, so a bind (or
// umount) of a sysctl path must be resolved in the caller's, not in
// sysvisord's: otherwise a bind of /proc/sys/net/ipv4/conf lists the host's
// interfaces and one of ip_forward shows the host's value.
func TestBindOfSysctlIsTheContainers(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	r := results(t, sh(t, id, `
		echo 1 >/proc/sys/net/ipv4/ip_forward
		echo 123456 >/proc/sys/kernel/shmmax
		touch /tmp/f /tmp/g; mkdir -p /tmp/conf /tmp/net
		echo "bind-ip_forward $(mountcall mount /proc/sys/net/ipv4/ip_forward /tmp/f - bind -)"
		echo "ip_forward-via-bind $(cat /tmp/f)"
		echo "bind-shmmax $(mountcall mount /proc/sys/kernel/shmmax /tmp/g - bind -)"
		echo "shmmax-via-bind $(cat /tmp/g)"
		echo "rbind-conf $(mountcall mount /proc/sys/net/ipv4/conf /tmp/conf - bind,rec -)"
		echo "conf-same $([ "$(ls /tmp/conf)" = "$(ls /proc/sys/net/ipv4/conf)" ] && echo yes)"
		echo "umount-net $(mountcall umount /proc/sys/net 0)"
		echo "umount-shmmax $(mountcall umount /proc/sys/kernel/shmmax 0)"
		echo "net-still-writable $(echo 0 >/proc/sys/net/ipv4/ip_forward && echo yes)"
	`))
	for _, k := range []string{"bind-ip_forward", "bind-shmmax", "rbind-conf"} {
		expect(t, r, k, "ok")
	}
	expect(t, r, "ip_forward-via-bind", "1")
	expect(t, r, "shmmax-via-bind", "123456")
	expect(t, r, "conf-same", "yes")
	expect(t, r, "umount-net", "EPERM")
	expect(t, r, "umount-shmmax", "EPERM")
	expect(t, r, "net-still-writable", "yes")
}

// A bind source's submounts stay the host's to remove while the container
// runs: sysvisor-runc's idmapped copy of the source leaves the host's mount
// namespace once runc has bound it (the container keeps its own copy), so
// the host can unmount and remove a directory below it, as under runc.
func TestBindSourceReleased(t *testing.T) {
	src := t.TempDir()
	sub := filepath.Join(src, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("none", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(sub, syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(sub, "f"), []byte("on tmpfs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := startDetached(t, "sysvisor-runc", "-v", src+":/data:ro")
	if left := mountsUnder(filepath.Join(svDir, "run", "containers", id, "mounts")); len(left) > 0 {
		t.Errorf("bind sources still mounted on the host after create: %v", left)
	}
	if out, err := docker(t, "exec", id, "cat", "/data/sub/f"); err != nil || strings.TrimSpace(out) != "on tmpfs" {
		t.Errorf("the container's bind: %q, %v", out, err)
	}
	if err := syscall.Unmount(sub, syscall.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(sub); err != nil {
		t.Errorf("the host cannot remove a directory below a running container's bind source: %v", err)
	}
	// What the host's unmount does to the container's copy is the
	// propagation the engine asked for, as under runc; the bind stays.
	if out, err := docker(t, "exec", id, "ls", "/data"); err != nil {
		t.Errorf("the container's bind after the host's unmount: %q, %v", out, err)
	}
}
