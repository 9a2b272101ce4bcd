package e2e

// /proc and /sys views, end to end: what free, nproc, cat and grep see in a
// sysvisor container with a memory limit, a cpuset and a CPU quota, and that
// a removed container leaves no FUSE mount behind.

import (
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
	out := mustDocker(t, "run", "--rm", "--runtime=sysvisor-runc", "--memory", "512m", "--cpuset-cpus", "0", image, "sh", "-c", viewScript)
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
	if len(mountsUnder(dir)) != 1 {
		t.Fatalf("views of a running container: mounts under %s: %v", dir, mountsUnder(dir))
	}
	if got := sh(t, id, "head -1 /proc/meminfo"); got != "MemTotal:         262144 kB" {
		t.Errorf("meminfo %q", got)
	}
	// Every view is a bind of the container's own FUSE files.
	n := 0
	for _, m := range containerMounts(t, id) {
		if m.fstype == "fuse.sysvisor" {
			n++
			if !m.ro() {
				t.Errorf("view %s is not read-only", m.point)
			}
		}
	}
	if n != 6 {
		t.Errorf("%d view mounts in the container, want 6", n)
	}
	// A procfs the container mounts itself (emulated) gets the views too.
	if got := sh(t, id, "mkdir -p /mnt/p && mount -t proc proc /mnt/p && head -1 /mnt/p/meminfo"); got != "MemTotal:         262144 kB" {
		t.Errorf("meminfo of a procfs mounted in the container: %q", got)
	}
	mustDocker(t, "rm", "-f", id)
	removed = true
	deadline := time.Now().Add(5 * time.Second)
	for len(mountsUnder(dir)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if m := mountsUnder(dir); len(m) > 0 {
		t.Errorf("FUSE mount left after remove: %v", m)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("views directory left after remove: %v", err)
	}
}

// restartSysvisord stops the environment's sysvisord and starts it again
// with extra flags.
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
	cmd.Env = append(os.Environ(), "SV_DIR="+svDir, "SV_LOG_LEVEL=debug", "SV_SYSVISORD_ARGS="+args)
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
