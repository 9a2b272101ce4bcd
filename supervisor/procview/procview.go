// Package procview renders a container's /proc and /sys files from the host's
// files and the container's cgroup figures. Rendering is pure (bytes in,
// bytes out) so every view is tested from recorded fixtures; the readers here
// take a cgroup.Source, so they are tested the same way.
//
// The figures must agree with handlers.ContainerSysinfo: the same memory
// total, free and swap, the same uptime.
package procview

import (
	"bytes"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sysvisor/sysvisor/linux/cgroup"
)

// ParseCPUList parses a kernel CPU list ("0-3,8,10-11"). Empty input is an
// empty list.
func ParseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	var out []int
	if s == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("cpu list %q: bad %q", s, part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a || b-a > 1<<16 {
				return nil, fmt.Errorf("cpu list %q: bad %q", s, part)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// FormatCPUList is the kernel's form of a sorted CPU list, newline-terminated.
func FormatCPUList(cpus []int) []byte {
	var b bytes.Buffer
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j == i {
			fmt.Fprintf(&b, "%d", cpus[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", cpus[i], cpus[j])
		}
		i = j + 1
	}
	b.WriteByte('\n')
	return b.Bytes()
}

// CPULimits is what a container may use: its cpuset and its CFS quota.
type CPULimits struct {
	Cpuset []int // nil: no cpuset information (all host CPUs)
	Quota  int64 // µs per Period; <= 0 unlimited
	Period int64
}

// Visible is the CPUs the container is shown: the allowed ones (cpuset ∩
// host online), cut to ceil(quota/period) when the quota allows fewer.
// CPU numbers are the host's, as sched_getaffinity reports them.
func (l CPULimits) Visible(hostOnline []int) []int {
	cpus := hostOnline
	if l.Cpuset != nil {
		cpus = nil
		for _, c := range l.Cpuset {
			if slices.Contains(hostOnline, c) {
				cpus = append(cpus, c)
			}
		}
		if len(cpus) == 0 {
			// A cpuset naming no online CPU cannot run anything; show
			// the cpuset rather than nothing.
			cpus = l.Cpuset
		}
	}
	if l.Quota > 0 && l.Period > 0 {
		n := int((l.Quota + l.Period - 1) / l.Period)
		if n < 1 {
			n = 1
		}
		if n < len(cpus) {
			cpus = cpus[:n]
		}
	}
	return slices.Clone(cpus)
}

// ReadCPULimits reads the cpuset (v1 "cpuset" controller or v2) and the CFS
// quota (v1 "cpu" controller or v2 cpu.max). Missing files leave the
// corresponding limit unset.
func ReadCPULimits(p cgroup.Paths, src cgroup.Source) CPULimits {
	var l CPULimits
	if dir, ok := p["cpuset"]; ok {
		l.Cpuset = readCPUList(src, filepath.Join(dir, "cpuset.effective_cpus"), filepath.Join(dir, "cpuset.cpus"))
	} else if dir, ok := p[""]; ok {
		l.Cpuset = readCPUList(src, filepath.Join(dir, "cpuset.cpus.effective"))
	}
	if dir, ok := p["cpu"]; ok {
		q, err1 := readInt(src, filepath.Join(dir, "cpu.cfs_quota_us"))
		per, err2 := readInt(src, filepath.Join(dir, "cpu.cfs_period_us"))
		if err1 == nil && err2 == nil {
			l.Quota, l.Period = q, per
		}
	} else if dir, ok := p[""]; ok {
		if b, err := src.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
			f := strings.Fields(string(b))
			if len(f) == 2 && f[0] != "max" {
				q, err1 := strconv.ParseInt(f[0], 10, 64)
				per, err2 := strconv.ParseInt(f[1], 10, 64)
				if err1 == nil && err2 == nil {
					l.Quota, l.Period = q, per
				}
			}
		}
	}
	return l
}

func readCPUList(src cgroup.Source, paths ...string) []int {
	for _, p := range paths {
		b, err := src.ReadFile(p)
		if err != nil {
			continue
		}
		if cpus, err := ParseCPUList(string(b)); err == nil && len(cpus) > 0 {
			return cpus
		}
	}
	return nil
}

func readInt(src cgroup.Source, path string) (int64, error) {
	b, err := src.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// ReadCPUUsage is the container's total CPU time (v1 cpuacct.usage, v2
// cpu.stat usage_usec).
func ReadCPUUsage(p cgroup.Paths, src cgroup.Source) (time.Duration, error) {
	if dir, ok := p["cpuacct"]; ok {
		v, err := readInt(src, filepath.Join(dir, "cpuacct.usage"))
		return time.Duration(v), err
	}
	if dir, ok := p[""]; ok {
		st, err := ReadKeyed(src, filepath.Join(dir, "cpu.stat"))
		if err != nil {
			return 0, err
		}
		v, ok := st["usage_usec"]
		if !ok {
			return 0, fmt.Errorf("%s: no usage_usec", dir)
		}
		return time.Duration(v) * time.Microsecond, nil
	}
	return 0, fmt.Errorf("no cpu accounting cgroup")
}

// ReadKeyed parses a "key value" file such as memory.stat or cpu.stat.
func ReadKeyed(src cgroup.Source, path string) (map[string]uint64, error) {
	b, err := src.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]uint64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
			m[k] = n
		}
	}
	return m, nil
}

// MemStat is the part of memory.stat meminfo shows, in bytes.
type MemStat struct {
	ActiveFile, InactiveFile, ActiveAnon, InactiveAnon, Shmem, Cache uint64
	// Slab (v2 only: v1's memory.stat has no slab figures).
	SlabReclaimable, SlabUnreclaimable uint64
}

// ReadMemStat reads memory.stat (v1 hierarchical total_* keys, v2 keys).
func ReadMemStat(p cgroup.Paths, src cgroup.Source) (MemStat, error) {
	var s MemStat
	if dir, ok := p["memory"]; ok {
		m, err := ReadKeyed(src, filepath.Join(dir, "memory.stat"))
		if err != nil {
			return s, err
		}
		s.ActiveFile, s.InactiveFile = m["total_active_file"], m["total_inactive_file"]
		s.ActiveAnon, s.InactiveAnon = m["total_active_anon"], m["total_inactive_anon"]
		s.Shmem, s.Cache = m["total_shmem"], m["total_cache"]
		return s, nil
	}
	if dir, ok := p[""]; ok {
		m, err := ReadKeyed(src, filepath.Join(dir, "memory.stat"))
		if err != nil {
			return s, err
		}
		s.ActiveFile, s.InactiveFile = m["active_file"], m["inactive_file"]
		s.ActiveAnon, s.InactiveAnon = m["active_anon"], m["inactive_anon"]
		s.Shmem, s.Cache = m["shmem"], m["file"]
		s.SlabReclaimable, s.SlabUnreclaimable = m["slab_reclaimable"], m["slab_unreclaimable"]
		return s, nil
	}
	return s, fmt.Errorf("no memory cgroup")
}

// Uptime renders /proc/uptime: seconds since the container's init started,
// and idle time as the visible CPUs' time the container did not use.
func Uptime(uptime, cpuUsage time.Duration, ncpu int) []byte {
	if uptime < 0 {
		uptime = 0
	}
	idle := uptime*time.Duration(ncpu) - cpuUsage
	if idle < 0 {
		idle = 0
	}
	return fmt.Appendf(nil, "%d.%02d %d.%02d\n",
		uptime/time.Second, (uptime%time.Second)/(10*time.Millisecond),
		idle/time.Second, (idle%time.Second)/(10*time.Millisecond))
}

// MemFigures is the container's memory as meminfo and sysinfo(2) show it, in
// bytes. It is computed exactly as handlers.ContainerSysinfo computes
// totalram, freeram and the swap fields.
type MemFigures struct {
	Total, Free, Available, Cached, Buffers uint64
	SReclaimable                            uint64
	SwapTotal, SwapFree                     uint64
}

// Figures derives the container's memory from the host's totals (bytes) and
// its cgroup. Used = usage - inactive file (clamped to total), Free = total -
// used; Cached is the active file cache still counted as used, so free(1)'s
// used (total - free - buff/cache) is the container's anonymous memory;
// Available adds that cache back. free(1) counts SReclaimable as cache too,
// so it is also bounded by what is used.
func Figures(hostTotal, hostSwap uint64, mem cgroup.Memory, st MemStat) MemFigures {
	var f MemFigures
	f.Total = hostTotal
	if mem.Limit != 0 && mem.Limit < f.Total {
		f.Total = mem.Limit
	}
	used := mem.Usage
	if mem.InactiveFile < used {
		used -= mem.InactiveFile
	}
	if used > f.Total {
		used = f.Total
	}
	f.Free = f.Total - used
	f.Cached = min(st.ActiveFile, used)
	f.SReclaimable = min(st.SlabReclaimable, used-f.Cached)
	f.Available = f.Free + f.Cached + f.SReclaimable
	if mem.SwapLimit != 0 {
		f.SwapTotal = min(mem.SwapLimit, hostSwap)
		if mem.SwapUsage < f.SwapTotal {
			f.SwapFree = f.SwapTotal - mem.SwapUsage
		}
	}
	return f
}

// Meminfo renders /proc/meminfo: the host's file with the container's
// figures in place of the host's for every line it knows; other lines (slab,
// page tables, huge pages...) stay the host's.
func Meminfo(host []byte, f MemFigures, st MemStat) []byte {
	kb := func(v uint64) uint64 { return v / 1024 }
	repl := map[string]uint64{
		"MemTotal":       kb(f.Total),
		"MemFree":        kb(f.Free),
		"MemAvailable":   kb(f.Available),
		"Buffers":        kb(f.Buffers),
		"Cached":         kb(f.Cached),
		"SwapCached":     0,
		"Active":         kb(st.ActiveAnon + st.ActiveFile),
		"Inactive":       kb(st.InactiveAnon + st.InactiveFile),
		"Active(anon)":   kb(st.ActiveAnon),
		"Inactive(anon)": kb(st.InactiveAnon),
		"Active(file)":   kb(st.ActiveFile),
		"Inactive(file)": kb(st.InactiveFile),
		"Shmem":          kb(st.Shmem),
		"Slab":           kb(f.SReclaimable + st.SlabUnreclaimable),
		"SReclaimable":   kb(f.SReclaimable),
		"SUnreclaim":     kb(st.SlabUnreclaimable),
		"SwapTotal":      kb(f.SwapTotal),
		"SwapFree":       kb(f.SwapFree),
	}
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(host, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		key, _, ok := bytes.Cut(line, []byte(":"))
		v, known := repl[string(key)]
		if !ok || !known {
			out.Write(line)
			continue
		}
		fmt.Fprintf(&out, "%-16s%8d kB\n", string(key)+":", v)
	}
	return out.Bytes()
}

// HostMemTotals reads MemTotal and SwapTotal (bytes) from host meminfo text.
func HostMemTotals(host []byte) (mem, swap uint64) {
	for _, line := range strings.Split(string(host), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "MemTotal":
			mem = n * 1024
		case "SwapTotal":
			swap = n * 1024
		}
	}
	return mem, swap
}

// Cpuinfo renders /proc/cpuinfo: the host's per-processor blocks for the
// visible CPUs only, numbers unchanged.
func Cpuinfo(host []byte, cpus []int) []byte {
	var out bytes.Buffer
	for _, block := range bytes.Split(host, []byte("\n\n")) {
		if len(bytes.TrimSpace(block)) == 0 {
			continue
		}
		n, ok := cpuinfoProcessor(block)
		if ok && !slices.Contains(cpus, n) {
			continue
		}
		out.Write(bytes.TrimRight(block, "\n"))
		out.WriteString("\n\n")
	}
	return out.Bytes()
}

func cpuinfoProcessor(block []byte) (int, bool) {
	for _, line := range strings.Split(string(block), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "processor" {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			return n, err == nil
		}
	}
	return 0, false
}

// Stat renders /proc/stat: the cpuN lines of the visible CPUs, and the
// aggregate "cpu" line summed over them. Other lines (intr, ctxt, btime,
// processes...) are the host's; btime must stay the host's because process
// start times in /proc/<pid>/stat count from the host's boot.
func Stat(host []byte, cpus []int) []byte {
	var out bytes.Buffer
	var sum []uint64
	var percpu [][]byte
	lines := bytes.SplitAfter(host, []byte("\n"))
	for _, line := range lines {
		if !bytes.HasPrefix(line, []byte("cpu")) || bytes.HasPrefix(line, []byte("cpu ")) {
			continue
		}
		f := strings.Fields(string(line))
		n, err := strconv.Atoi(strings.TrimPrefix(f[0], "cpu"))
		if err != nil || !slices.Contains(cpus, n) {
			continue
		}
		for i, x := range f[1:] {
			v, _ := strconv.ParseUint(x, 10, 64)
			if i >= len(sum) {
				sum = append(sum, 0)
			}
			sum[i] += v
		}
		percpu = append(percpu, line)
	}
	out.WriteString("cpu ")
	for _, v := range sum {
		fmt.Fprintf(&out, " %d", v)
	}
	out.WriteByte('\n')
	for _, l := range percpu {
		out.Write(l)
	}
	for _, line := range lines {
		if len(line) == 0 || bytes.HasPrefix(line, []byte("cpu")) {
			continue
		}
		out.Write(line)
	}
	return out.Bytes()
}
