package e2e

// /proc and /sys views, end to end: what free, nproc, cat and grep see in a
// sysvisor container with a memory limit, a cpuset and a CPU quota, and that
// a removed container leaves no FUSE mount behind.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// section splits "== name\n...\n" blocks of a script's output.
func sections(out string) map[string]string {
	m := map[string]string{}
	var name string
	for _, l := range strings.Split(out, "\n") {
		if n, ok := strings.CutPrefix(l, "== "); ok {
			name = n
			continue
		}
		if name != "" {
			m[name] += l + "\n"
		}
	}
	for k, v := range m {
		m[k] = strings.TrimSpace(v)
	}
	return m
}

const viewScript = `
echo "== free"; free -m
echo "== processors"; grep -c ^processor /proc/cpuinfo
echo "== nproc"; nproc
echo "== uptime"; cat /proc/uptime
echo "== online"; cat /sys/devices/system/cpu/online
echo "== stat"; grep ^cpu /proc/stat
echo "== meminfo"; cat /proc/meminfo
`

func hostUptime(t *testing.T) float64 {
	t.Helper()
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func checkStatLines(t *testing.T, stat string, cpus ...string) {
	t.Helper()
	lines := strings.Split(stat, "\n")
	if len(lines) != len(cpus)+1 || !strings.HasPrefix(lines[0], "cpu  ") {
		t.Fatalf("/proc/stat cpu lines:\n%s\nwant the aggregate and %v", stat, cpus)
	}
	agg := strings.Fields(lines[0])[1:]
	sum := make([]uint64, len(agg))
	for i, c := range cpus {
		f := strings.Fields(lines[i+1])
		if f[0] != c {
			t.Errorf("/proc/stat line %d is %s, want %s", i+1, f[0], c)
		}
		for j := range agg {
			v, _ := strconv.ParseUint(f[j+1], 10, 64)
			sum[j] += v
		}
	}
	for j, x := range agg {
		if v, _ := strconv.ParseUint(x, 10, 64); v != sum[j] {
			t.Errorf("/proc/stat aggregate field %d = %d, per-CPU sum %d", j, v, sum[j])
		}
	}
}

func TestViewsMemoryCpusetUptime(t *testing.T) {
	out := mustDocker(t, "run", "--rm", "--runtime=sysvisor-runc", "--memory", "512m", "--cpus", "1.5", "--cpuset-cpus", "0", image, "sh", "-c", viewScript)
	host := hostUptime(t)
	s := sections(out)
	var total int
	for _, l := range strings.Split(s["free"], "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "Mem:" {
			total, _ = strconv.Atoi(f[1])
			used, _ := strconv.Atoi(f[2])
			if used < 0 || used > total {
				t.Errorf("free -m used %d of %d", used, total)
			}
		}
	}
	if total < 500 || total > 512 {
		t.Errorf("free -m total %d, want about 512:\n%s", total, s["free"])
	}
	if s["processors"] != "1" {
		t.Errorf("cpuinfo processors %q, want 1", s["processors"])
	}
	if s["nproc"] != "1" {
		t.Errorf("nproc %q, want 1", s["nproc"])
	}
	if s["online"] != "0" {
		t.Errorf("/sys/devices/system/cpu/online %q, want 0", s["online"])
	}
	up, err := strconv.ParseFloat(strings.Fields(s["uptime"] + " x")[0], 64)
	if err != nil || up >= 5 || up >= host {
		t.Errorf("/proc/uptime %q (host %.2f), want < 5 s and below the host's", s["uptime"], host)
	}
	checkStatLines(t, s["stat"], "cpu0")
	if !strings.HasPrefix(s["meminfo"], "MemTotal:         524288 kB\n") {
		t.Errorf("meminfo:\n%.200s", s["meminfo"])
	}
}

func TestViewsCPUQuota(t *testing.T) {
	out := mustDocker(t, "run", "--rm", "--runtime=sysvisor-runc", "--cpus", "0.5", image, "sh", "-c", viewScript)
	s := sections(out)
	host, _ := os.ReadFile("/sys/devices/system/cpu/online")
	first := strings.FieldsFunc(strings.TrimSpace(string(host)), func(r rune) bool { return r == '-' || r == ',' })[0]
	if s["processors"] != "1" || s["online"] != first {
		t.Errorf("with --cpus 0.5: cpuinfo processors %q, online %q; want 1 and %s", s["processors"], s["online"], first)
	}
	checkStatLines(t, s["stat"], "cpu"+first)
}

func TestViewsGoneAfterRemove(t *testing.T) {
	id := mustDocker(t, "run", "-d", "--runtime=sysvisor-runc", "--memory", "256m", image, "sleep", "600")
	dir := filepath.Join(svDir, "run", "views", id)
	removed := false
	t.Cleanup(func() {
		if !removed {
			docker(t, "rm", "-f", id)
		}
	})
	// One mount serves every container's views; each has a directory.
	if _, err := os.Stat(filepath.Join(dir, "proc", "meminfo")); err != nil {
		t.Fatalf("views of a running container: %v", err)
	}
	if got := sh(t, id, "head -1 /proc/meminfo"); got != "MemTotal:         262144 kB" {
		t.Errorf("meminfo %q", got)
	}
	// Every view is a bind of the container's own FUSE files: read-only
	// except the per-container sysctls and module parameters.
	ro, rw := 0, 0
	for _, m := range containerMounts(t, id) {
		if m.fstype != "fuse.sysvisor" {
			continue
		}
		writable := strings.HasPrefix(m.point, "/proc/sys/") || strings.HasPrefix(m.point, "/sys/module/")
		if m.ro() == writable {
			t.Errorf("view %s: read-only %v", m.point, m.ro())
		}
		if writable {
			rw++
		} else {
			ro++
		}
	}
	// uptime meminfo cpuinfo stat loadavg swaps diskstats cpu/online
	// product_uuid (bound by sysvisord where the host has no DMI).
	wantRO := 9
	if ro != wantRO || rw == 0 {
		t.Errorf("%d read-only and %d writable view mounts in the container, want %d and some", ro, rw, wantRO)
	}
	// A procfs the container mounts itself (emulated) gets the views too.
	if got := sh(t, id, "mkdir -p /mnt/p && mount -t proc proc /mnt/p && head -1 /mnt/p/meminfo"); got != "MemTotal:         262144 kB" {
		t.Errorf("meminfo of a procfs mounted in the container: %q", got)
	}
	mustDocker(t, "rm", "-f", id)
	removed = true
	if m := mountsUnder(dir); len(m) > 0 {
		t.Errorf("a mount under the container's views directory: %v", m)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("views directory left after remove: %v", err)
	}
}

// /proc/swaps agrees with meminfo, /proc/diskstats shows the container's own
// block I/O, /sys/kernel's filesystem mount points are empty directories,
// and the conntrack hash size is the container's to set (product_uuid:
// productuuid_test.go).
func TestViewsSwapsDisksSys(t *testing.T) {
	vol := t.TempDir()
	disk := diskOf(t, vol)
	out := mustDocker(t, "run", "--rm", "--runtime=sysvisor-runc", "--memory", "256m", "--memory-swap", "512m",
		"--device-read-bps", "/dev/"+disk+":500mb", "--device-write-bps", "/dev/"+disk+":500mb", "-v", vol+":/vol", image, "sh", "-c", `
		dd if=/dev/zero of=/vol/f bs=4096 count=300 oflag=direct 2>/dev/null
		echo "== swaps"; cat /proc/swaps
		echo "== meminfo"; grep ^Swap /proc/meminfo
		echo "== diskstats"; cat /proc/diskstats
		echo "== sys-kernel"; for d in security debug tracing config; do [ -d /sys/kernel/$d ] && echo "$d $(ls -A /sys/kernel/$d | wc -l)"; done
		echo "== debugfs"; mount -t debugfs none /sys/kernel/debug && ls -A /sys/kernel/debug | wc -l
		echo "== hashsize"; echo 4096 > /sys/module/nf_conntrack/parameters/hashsize && cat /sys/module/nf_conntrack/parameters/hashsize
	`)
	s := sections(out)
	// This host may have no swap: then neither file shows any.
	var swapTotal string
	for _, l := range strings.Split(s["meminfo"], "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "SwapTotal:" {
			swapTotal = f[1]
		}
	}
	lines := strings.Split(s["swaps"], "\n")
	if swapTotal == "0" && len(lines) != 1 || swapTotal != "0" && (len(lines) != 2 || strings.Fields(lines[1])[2] != swapTotal) {
		t.Errorf("/proc/swaps:\n%s\nmeminfo:\n%s", s["swaps"], s["meminfo"])
	}
	// 300 direct writes of 4 KiB: 2400 sectors, on the volume's disk
	// only (the throttle limits make cgroup v1 count them).
	d := strings.Fields(s["diskstats"])
	if len(d) < 14 || d[2] != disk || d[7] != "300" || d[9] != "2400" || strings.Count(s["diskstats"], "\n") != 0 {
		t.Errorf("/proc/diskstats:\n%s\nwant one %s line with 300 writes, 2400 sectors", s["diskstats"], disk)
	}
	// The container's own sysfs shows kernel filesystems' mount points
	// empty; a debugfs mount (systemd's sys-kernel-debug.mount) gets the
	// mount emulation's empty stub.
	for _, l := range strings.Split(s["sys-kernel"], "\n") {
		if f := strings.Fields(l); len(f) != 2 || f[1] != "0" {
			t.Errorf("/sys/kernel: %q, want empty", l)
		}
	}
	if !strings.Contains(s["sys-kernel"], "debug") || s["debugfs"] != "0" {
		t.Errorf("/sys/kernel: %q, debugfs mount: %q; want debug present and a mount there empty", s["sys-kernel"], s["debugfs"])
	}
	if s["hashsize"] != "4096" {
		t.Errorf("hashsize %q, want the container's 4096", s["hashsize"])
	}
	if b, _ := os.ReadFile("/sys/module/nf_conntrack/parameters/hashsize"); strings.TrimSpace(string(b)) == "4096" {
		t.Errorf("host's hashsize is 4096")
	}
}

// diskOf names the whole disk (for blkio throttling) dir's filesystem is on.
func diskOf(t *testing.T, dir string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", st.Dev>>8&0xfff, st.Dev&0xff|st.Dev>>12&0xfff00)
	if _, err := os.Stat(sys + "/partition"); err == nil {
		sys += "/.."
	}
	p, err := filepath.EvalSymlinks(sys)
	if err != nil {
		t.Skipf("%s is not on a block device: %v", dir, err)
	}
	return filepath.Base(p)
}

// restartSysvisord stops the environment's sysvisord and starts it again
// with extra flags (besides the suite's own, see suiteSysvisordArgs).
func restartSysvisord(t *testing.T, args string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(svDir, "sysvisord.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	cmd := exec.Command(filepath.Join(repo, "tests", "env.sh"), "up")
	cmd.Env = append(os.Environ(), "SV_DIR="+svDir, "SV_LOG_LEVEL=debug", "SV_SYSVISORD_ARGS="+suiteSysvisordArgs(args))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restart sysvisord %s: %v\n%s", args, err, out)
	}
}

// Views are optional: with sysvisord --no-views a container is created as
// before and sees the host's files.
func TestViewsOptional(t *testing.T) {
	restartSysvisord(t, "--no-views")
	defer restartSysvisord(t, "")
	out := mustDocker(t, "run", "--rm", "--runtime=sysvisor-runc", "--memory", "256m", image, "sh", "-c",
		"head -1 /proc/meminfo; grep -c fuse.sysvisor /proc/self/mountinfo || true")
	host, _ := os.ReadFile("/proc/meminfo")
	want := strings.SplitN(string(host), "\n", 2)[0] + "\n0"
	if out != want {
		t.Errorf("without views: %q, want the host's MemTotal and no view mounts (%q)", out, want)
	}
	if _, err := os.Stat(filepath.Join(svDir, "run", "views")); err == nil {
		if ents, _ := os.ReadDir(filepath.Join(svDir, "run", "views")); len(ents) > 0 {
			t.Errorf("views directories with --no-views: %v", ents)
		}
	}
}

// /proc/loadavg counts the container's tasks, and uptime (sysinfo(2)) shows
// the same averages.
func TestViewsLoadavg(t *testing.T) {
	id := startDetached(t, "sysvisor-runc")
	for try := 0; ; try++ {
		out := sh(t, id, "cat /proc/loadavg; uptime; cat /proc/loadavg")
		lines := strings.Split(out, "\n")
		if len(lines) != 3 {
			t.Fatalf("output:\n%s", out)
		}
		f := strings.Fields(lines[0])
		if len(f) != 5 {
			t.Fatalf("/proc/loadavg %q", lines[0])
		}
		run, total, ok := strings.Cut(f[3], "/")
		r, _ := strconv.Atoi(run)
		n, _ := strconv.Atoi(total)
		if !ok || n < 1 || n > 10 || r > n {
			t.Errorf("/proc/loadavg tasks %q: want the container's few", f[3])
		}
		if last, _ := strconv.Atoi(f[4]); last < 1 || last > 100 {
			t.Errorf("/proc/loadavg last pid %q: want one of the container's", f[4])
		}
		_, avg, _ := strings.Cut(lines[1], "load average: ")
		want := strings.Join(f[:3], ", ")
		if avg == want || avg == strings.Join(strings.Fields(lines[2])[:3], ", ") {
			return
		}
		if try == 2 {
			t.Fatalf("uptime's load average %q, /proc/loadavg %q", avg, want)
		}
	}
}
