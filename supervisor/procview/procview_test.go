package procview

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/linux/cgroup"
)

type files struct{}

func (files) ReadFile(p string) ([]byte, error) { return os.ReadFile(p) }

func host(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "host", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtures are cgroup directories: Docker's --memory 512m --memory-swap 1g
// --cpus 1.5 --cpuset-cpus 0 on cgroup v1, an unlimited v1 container, a v2
// container with 1 GiB and half a CPU over cpuset 0-1, and two recorded on
// a cgroup-v2-only VM (Debian 13, kernel 7.2, Docker 26 with the systemd
// driver, sysvisor-runc): the container's cgroup (the parent of its init's
// leaf) under --memory 256m --cpuset-cpus 0 --pids-limit 200 (Docker's
// default swap: as much again), and under --memory 1g --memory-swap 2g
// --cpus 1.5 --cpuset-cpus 0-1 after writing a 50 MB file (inactive file
// cache) and 20 MB of anonymous memory, since freed.
var fixtures = []struct {
	name  string
	paths cgroup.Paths
	// expected
	total, free, swapTotal, swapFree uint64 // bytes
	cpus                             []int
	usage                            time.Duration
}{
	{
		name: "v1",
		paths: cgroup.Paths{"memory": "testdata/v1/memory", "cpuset": "testdata/v1/cpuset",
			"cpu": "testdata/v1/cpu", "cpuacct": "testdata/v1/cpuacct"},
		total: 512 << 20, free: 512<<20 - (100<<20 - 30<<20), swapTotal: 512 << 20, swapFree: 512<<20 - 5<<20,
		cpus: []int{0}, usage: 1500 * time.Millisecond,
	},
	{
		name: "v1-unlimited",
		paths: cgroup.Paths{"memory": "testdata/v1-unlimited/memory", "cpuset": "testdata/v1-unlimited/cpuset",
			"cpu": "testdata/v1-unlimited/cpu", "cpuacct": "testdata/v1-unlimited/cpuacct"},
		total: 24684084 * 1024, free: 24684084*1024 - 40<<20,
		cpus: []int{0, 1},
	},
	{
		name:  "v2",
		paths: cgroup.Paths{"": "testdata/v2"},
		total: 1 << 30, free: 1<<30 - (200<<20 - 50<<20),
		cpus: []int{0}, usage: 3 * time.Second,
	},
	{
		name:  "v2-docker-256m",
		paths: cgroup.Paths{"": "testdata/v2-docker-256m"},
		total: 256 << 20, free: 256<<20 - (684032 - 4096), swapTotal: 256 << 20, swapFree: 256 << 20,
		cpus: []int{0}, usage: 1868469 * time.Microsecond,
	},
	{
		name:  "v2-docker-1g",
		paths: cgroup.Paths{"": "testdata/v2-docker-1g"},
		total: 1 << 30, free: 1<<30 - (52129792 - 50003968), swapTotal: 1 << 30, swapFree: 1 << 30,
		cpus: []int{0, 1}, usage: 16045017 * time.Microsecond,
	},
}

func meminfoField(t *testing.T, b []byte, key string) uint64 {
	t.Helper()
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && k == key {
			f := strings.Fields(v)
			n, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil || len(f) != 2 || f[1] != "kB" {
				t.Fatalf("meminfo %s: %q", key, l)
			}
			return n * 1024
		}
	}
	t.Fatalf("meminfo has no %s", key)
	return 0
}

func TestViewsFromFixtures(t *testing.T) {
	hostMem := host(t, "meminfo")
	hostOnline, err := ParseCPUList(string(host(t, "online")))
	if err != nil || !slices.Equal(hostOnline, []int{0, 1}) {
		t.Fatalf("fixture online: %v %v", hostOnline, err)
	}
	memTotal, swapTotal := HostMemTotals(hostMem)
	if memTotal != 24684084*1024 {
		t.Fatalf("host MemTotal %d", memTotal)
	}
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			mem, err := fx.paths.ReadMemoryFrom(files{})
			if err != nil {
				t.Fatal(err)
			}
			st, err := ReadMemStat(fx.paths, files{})
			if err != nil {
				t.Fatal(err)
			}
			// The fixture's host has no swap; pretend it has 4 GiB so the
			// cgroup's swap limit shows.
			hostSwap := swapTotal + 4<<30
			fig := Figures(memTotal, hostSwap, mem, st)
			mi := Meminfo(hostMem, fig, st)
			if got := meminfoField(t, mi, "MemTotal"); got != fx.total {
				t.Errorf("MemTotal %d, want %d", got, fx.total)
			}
			if got := meminfoField(t, mi, "MemFree"); got != fx.free {
				t.Errorf("MemFree %d, want %d", got, fx.free)
			}
			if got := meminfoField(t, mi, "SwapTotal"); got != fx.swapTotal {
				t.Errorf("SwapTotal %d, want %d", got, fx.swapTotal)
			}
			if got := meminfoField(t, mi, "SwapFree"); got != fx.swapFree {
				t.Errorf("SwapFree %d, want %d", got, fx.swapFree)
			}
			free := meminfoField(t, mi, "MemFree")
			avail := meminfoField(t, mi, "MemAvailable")
			// free(1) (procps and busybox): buff/cache = Buffers + Cached +
			// SReclaimable, used = total - free - buff/cache.
			cached := meminfoField(t, mi, "Cached") + meminfoField(t, mi, "Buffers") + meminfoField(t, mi, "SReclaimable")
			if avail < free || avail > fx.total || free+cached > fx.total {
				t.Errorf("inconsistent: total %d free %d available %d buff/cache %d", fx.total, free, avail, cached)
			}
			// Same line count and order as the host's: tools parse by key,
			// some by position.
			if n, m := bytes.Count(mi, []byte("\n")), bytes.Count(hostMem, []byte("\n")); n != m {
				t.Errorf("meminfo has %d lines, host %d", n, m)
			}

			// sysinfo(2) must tell the same story.
			hostSI := unix.Sysinfo_t{Totalram: memTotal, Totalswap: hostSwap, Unit: 1}
			si := handlers.ContainerSysinfo(hostSI, time.Second, mem, 1)
			if si.Totalram != fig.Total || si.Freeram != fig.Free || si.Totalswap != fig.SwapTotal || si.Freeswap != fig.SwapFree || si.Bufferram != fig.Buffers {
				t.Errorf("sysinfo %+v disagrees with meminfo %+v", si, fig)
			}

			lim := ReadCPULimits(fx.paths, files{})
			cpus := lim.Visible(hostOnline)
			if !slices.Equal(cpus, fx.cpus) {
				t.Fatalf("visible CPUs %v (limits %+v), want %v", cpus, lim, fx.cpus)
			}
			ci := Cpuinfo(host(t, "cpuinfo"), cpus)
			var procs []string
			for _, l := range strings.Split(string(ci), "\n") {
				if strings.HasPrefix(l, "processor") {
					procs = append(procs, strings.TrimSpace(strings.SplitN(l, ":", 2)[1]))
				}
			}
			var want []string
			for _, c := range cpus {
				want = append(want, strconv.Itoa(c))
			}
			if !slices.Equal(procs, want) {
				t.Errorf("cpuinfo processors %v, want %v", procs, want)
			}
			if !bytes.HasSuffix(ci, []byte("\n\n")) || bytes.Contains(ci, []byte("\n\n\n")) {
				t.Errorf("cpuinfo block separation broken")
			}
			stat := Stat(host(t, "stat"), cpus)
			checkStat(t, stat, cpus)
			if got := string(FormatCPUList(cpus)); got != string(FormatCPUList(fx.cpus)) {
				t.Errorf("online %q", got)
			}

			usage, err := ReadCPUUsage(fx.paths, files{})
			if err != nil || usage != fx.usage {
				t.Errorf("cpu usage %v %v, want %v", usage, err, fx.usage)
			}
		})
	}
}

func checkStat(t *testing.T, stat []byte, cpus []int) {
	t.Helper()
	lines := strings.Split(string(stat), "\n")
	if !strings.HasPrefix(lines[0], "cpu  ") {
		t.Fatalf("first line %q", lines[0])
	}
	agg := strings.Fields(lines[0])[1:]
	sum := make([]uint64, len(agg))
	var seen []int
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) == 0 || !strings.HasPrefix(f[0], "cpu") {
			continue
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(f[0], "cpu"))
		seen = append(seen, n)
		for i, x := range f[1:] {
			v, _ := strconv.ParseUint(x, 10, 64)
			sum[i] += v
		}
	}
	if !slices.Equal(seen, cpus) {
		t.Errorf("stat cpu lines %v, want %v", seen, cpus)
	}
	for i, x := range agg {
		if v, _ := strconv.ParseUint(x, 10, 64); v != sum[i] {
			t.Errorf("aggregate field %d = %d, per-cpu sum %d", i, v, sum[i])
		}
	}
	for _, k := range []string{"intr ", "ctxt ", "btime ", "processes "} {
		if !strings.Contains(string(stat), "\n"+k) {
			t.Errorf("stat lost its %q line", k)
		}
	}
}

func TestCPUList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
		out  string
	}{
		{"0\n", []int{0}, "0\n"},
		{"0-3", []int{0, 1, 2, 3}, "0-3\n"},
		{"0-1,4,6-7", []int{0, 1, 4, 6, 7}, "0-1,4,6-7\n"},
		{"3,1,2", []int{1, 2, 3}, "1-3\n"},
		{"", nil, "\n"},
	} {
		got, err := ParseCPUList(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseCPUList(%q) = %v, %v", tc.in, got, err)
		}
		if s := string(FormatCPUList(got)); s != tc.out {
			t.Errorf("FormatCPUList(%v) = %q, want %q", got, s, tc.out)
		}
	}
	for _, bad := range []string{"a", "3-1", "-1", "1-", "0-99999999"} {
		if _, err := ParseCPUList(bad); err == nil {
			t.Errorf("ParseCPUList(%q) accepted", bad)
		}
	}
}

func TestVisible(t *testing.T) {
	host := []int{0, 1, 2, 3}
	for _, tc := range []struct {
		l    CPULimits
		want []int
	}{
		{CPULimits{}, host},
		{CPULimits{Cpuset: []int{1, 3}}, []int{1, 3}},
		{CPULimits{Quota: 150000, Period: 100000}, []int{0, 1}},
		{CPULimits{Quota: 1000, Period: 100000}, []int{0}},
		{CPULimits{Cpuset: []int{2, 3}, Quota: 100000, Period: 100000}, []int{2}},
		{CPULimits{Quota: -1, Period: 100000}, host},
		{CPULimits{Quota: 900000, Period: 100000}, host},
		{CPULimits{Cpuset: []int{7}}, []int{7}},
	} {
		if got := tc.l.Visible(host); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.l, got, tc.want)
		}
	}
}

func TestUptime(t *testing.T) {
	for _, tc := range []struct {
		up, usage time.Duration
		n         int
		want      string
	}{
		{1234 * time.Millisecond, 0, 1, "1.23 1.23\n"},
		{10 * time.Second, 4 * time.Second, 2, "10.00 16.00\n"},
		{time.Second, 5 * time.Second, 1, "1.00 0.00\n"},
		{-time.Second, 0, 1, "0.00 0.00\n"},
	} {
		if got := string(Uptime(tc.up, tc.usage, tc.n)); got != tc.want {
			t.Errorf("Uptime(%v, %v, %d) = %q, want %q", tc.up, tc.usage, tc.n, got, tc.want)
		}
	}
}

func TestLoad(t *testing.T) {
	var l Load
	if got := string(Loadavg(l)); got != "0.00 0.00 0.00 0/0 0\n" {
		t.Errorf("zero load %q", got)
	}
	// One task busy for a minute: the 1-minute average reaches 1-1/e, as
	// the kernel's does.
	for i := 0; i < 12; i++ {
		l = l.Next(1)
	}
	l.Running, l.Total, l.LastPid = 1, 3, 42
	if got := string(Loadavg(l)); got != "0.63 0.18 0.06 1/3 42\n" {
		t.Errorf("after a busy minute: %q", got)
	}
	// sysinfo(2) shows the same digits (uptime(1) formats them as the
	// kernel formats /proc/loadavg, with 16 fractional bits).
	var si string
	for _, v := range handlers.SysinfoLoads(l.Avg) {
		si += fmt.Sprintf("%d.%02d ", v>>16, ((v&0xffff)*100)>>16)
	}
	if want := string(Loadavg(l))[:15]; si != want {
		t.Errorf("sysinfo loads %q, /proc/loadavg %q", si, want)
	}
	// Idle again: it decays (truncating, as the kernel's does).
	for i := 0; i < 120; i++ {
		l = l.Next(0)
	}
	if got := string(Loadavg(l))[:15]; got != "0.00 0.01 0.00 " {
		t.Errorf("after ten idle minutes: %q", got)
	}
}

func TestTasks(t *testing.T) {
	dir, file, ok := TaskDir(cgroup.Paths{"pids": "testdata/tasks/cg", "memory": "x"})
	if !ok || dir != "testdata/tasks/cg" || file != "tasks" {
		t.Fatalf("TaskDir: %q %q %v", dir, file, ok)
	}
	if _, file, _ := TaskDir(cgroup.Paths{"": "d"}); file != "cgroup.threads" {
		t.Errorf("v2 task file %q", file)
	}
	// 1005 has exited since the list was read; 1003 and 1004 are in a
	// nested pid namespace (pids 12 and 30 in the container's).
	running, active, total, last, err := Tasks(dir, file, "testdata/tasks/proc", 1)
	if err != nil || running != 2 || active != 3 || total != 4 || last != 30 {
		t.Errorf("Tasks: running %d active %d total %d last %d err %v", running, active, total, last, err)
	}
	if lvl, err := NSLevel("testdata/tasks/proc", 1003); err != nil || lvl != 2 {
		t.Errorf("NSLevel: %d %v", lvl, err)
	}
}

// TestV1V2SameFlags reads two recorded containers started with the same
// flags (--memory 512m --memory-swap 1g --cpus 1.5 --cpuset-cpus 0) and the
// same work (a 50 MB file written, 20 MB of anonymous memory since freed),
// one on this cgroup v1 host (hybrid, kernel 6.18, Docker's cgroupfs
// driver), one on a cgroup-v2-only VM (Debian 13, kernel 6.12, Docker 26's
// systemd driver; the container's cgroup, the parent of init's leaf): the
// views must tell the same story from v1's files and from v2's.
func TestV1V2SameFlags(t *testing.T) {
	hostMem := host(t, "meminfo")
	memTotal, _ := HostMemTotals(hostMem)
	hostOnline, _ := ParseCPUList(string(host(t, "online")))
	type view struct {
		total, free, swapTotal, swapFree uint64
		cpus                             []int
	}
	read := func(p cgroup.Paths) view {
		t.Helper()
		mem, err := p.ReadMemoryFrom(files{})
		if err != nil {
			t.Fatal(err)
		}
		st, err := ReadMemStat(p, files{})
		if err != nil {
			t.Fatal(err)
		}
		f := Figures(memTotal, 4<<30, mem, st)
		mi := Meminfo(hostMem, f, st)
		return view{meminfoField(t, mi, "MemTotal"), meminfoField(t, mi, "MemFree"),
			meminfoField(t, mi, "SwapTotal"), meminfoField(t, mi, "SwapFree"),
			ReadCPULimits(p, files{}).Visible(hostOnline)}
	}
	d := "testdata/v1-docker-512m/"
	v1 := read(cgroup.Paths{"memory": d + "memory", "cpu": d + "cpu", "cpuacct": d + "cpuacct", "cpuset": d + "cpuset"})
	v2 := read(cgroup.Paths{"": "testdata/v2-docker-512m"})
	if v1.total != 512<<20 || v2.total != v1.total || v1.swapTotal != 512<<20 || v2.swapTotal != v1.swapTotal ||
		v2.swapFree != v1.swapFree || !slices.Equal(v1.cpus, []int{0}) || !slices.Equal(v2.cpus, v1.cpus) {
		t.Errorf("v1 %+v\nv2 %+v\nwant 512 MiB, 512 MiB of swap, CPU 0 on both", v1, v2)
	}
	// The same work leaves 2-3 MiB used on each (the file is inactive
	// cache, counted as free by both).
	if diff := int64(v1.free) - int64(v2.free); v1.free < 500<<20 || diff > 4<<20 || diff < -4<<20 {
		t.Errorf("MemFree v1 %d, v2 %d: want within 4 MiB, above 500 MiB", v1.free, v2.free)
	}
}
