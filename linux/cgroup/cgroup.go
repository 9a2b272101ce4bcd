// Package cgroup finds a process's cgroups on the host (v1, v2 or hybrid) and
// reads the few figures the supervisor reports back to the container.
package cgroup

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sysvisor/sysvisor/linux/mountinfo"
	"github.com/sysvisor/sysvisor/linux/rawfile"
)

// Paths maps a controller ("memory", "pids", "cpu", ...) to the host
// directory of a process's cgroup for it. Key "" is the cgroup2 directory.
type Paths map[string]string

// Mounts maps a controller to its hierarchy's mount point; "" is cgroup2.
type Mounts map[string]string

// HostMounts reads the supervisor's own mountinfo. The supervisor runs in the
// host mount namespace, so these are the host's hierarchies.
func HostMounts() (Mounts, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return ParseMounts(data), nil
}

// ParseMounts extracts cgroup hierarchies from mountinfo text.
func ParseMounts(data []byte) Mounts {
	m := Mounts{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+4 || len(f) < 5 {
			continue
		}
		fstype, mnt, super := f[sep+1], mountinfo.Unescape(f[4]), f[sep+3]
		switch fstype {
		case "cgroup2":
			if _, ok := m[""]; !ok {
				m[""] = mnt
			}
		case "cgroup":
			for _, opt := range strings.Split(super, ",") {
				switch opt {
				case "rw", "ro", "relatime", "noexec", "nosuid", "nodev", "clone_children", "xattr", "cpuset_v2_mode", "favordynmods", "memory_recursiveprot", "nsdelegate", "memory_localevents":
					continue
				}
				if strings.HasPrefix(opt, "release_agent=") {
					continue
				}
				if _, ok := m[opt]; !ok {
					m[opt] = mnt
				}
			}
		}
	}
	return m
}

// ParseProcCgroup turns /proc/<pid>/cgroup into host directories using mounts.
// The supervisor reads it from the host cgroup namespace, so paths are
// absolute within each hierarchy.
func ParseProcCgroup(data []byte, mounts Mounts) Paths {
	p := Paths{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" {
			if mnt, ok := mounts[""]; ok {
				p[""] = filepath.Join(mnt, f[2])
			}
			continue
		}
		for _, ctrl := range strings.Split(f[1], ",") {
			if mnt, ok := mounts[ctrl]; ok {
				p[ctrl] = filepath.Join(mnt, f[2])
			}
		}
	}
	return p
}

// Leaf is the child cgroup that a container's processes start in on a
// cgroup2-only host, below the container's own cgroup (see
// DelegateUnified). cgroup v2 lets only a cgroup without processes hand
// domain controllers (memory, io) down to children, so the container's
// cgroup, the root of its cgroup namespace, must stay empty for an inner
// engine to use them. The name is the one systemd gives PID 1's cgroup:
// systemd as init strips a trailing "/init.scope" from its own cgroup to
// find its root, so it finds the container's cgroup, as on a host; other
// inits do not care (moby's dind script makes and uses a sibling, "init").
const Leaf = "init.scope"

// Unified returns the cgroup2 directory when the host keeps every resource
// controller on cgroup2 (a v2-only host), and false on a v1 or hybrid host,
// where the limits live in the v1 hierarchies and the unified one holds no
// controller an engine sets limits with. Named v1 hierarchies
// (name=systemd), which some v2 hosts mount for old containers, have no
// controllers and do not count.
func (p Paths) Unified() (string, bool) {
	dir, ok := p[""]
	if !ok {
		return "", false
	}
	for k := range p {
		if k != "" && !strings.HasPrefix(k, "name=") {
			return "", false
		}
	}
	return dir, true
}

// Container returns the container's own cgroup directories given those of
// its init at registration. On a v2-only host the delegation hook has put
// init in Leaf below the container's cgroup, which is where the outer
// engine set the limits and where the accounting covers every process of
// the container, inner containers included: the parent is returned. The
// supervisor reads init's cgroup before the container's own code has run
// (the listener arrives while init still runs runc's code), so init is
// still where the hook put it. Elsewhere paths are returned as they are.
func (p Paths) Container() Paths {
	dir, ok := p.Unified()
	if !ok || filepath.Base(dir) != Leaf {
		return p
	}
	out := make(Paths, len(p))
	for k, v := range p {
		out[k] = v
	}
	out[""] = filepath.Dir(dir)
	return out
}

// Of resolves pid's cgroup directories.
func Of(pid int, mounts Mounts) (Paths, error) {
	data, err := rawfile.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return nil, err
	}
	return ParseProcCgroup(data, mounts), nil
}

// Memory is a container's memory accounting in bytes. Limit is 0 when
// unlimited.
type Memory struct {
	Limit        uint64
	Usage        uint64
	InactiveFile uint64
	SwapLimit    uint64 // memory+swap limit minus Limit; 0 when none
	SwapUsage    uint64
}

// unlimited v1 limits are PAGE_COUNTER_MAX pages rounded, far above any RAM.
const v1Unlimited = 1 << 62

// ReadMemory reads the memory controller, preferring v1 where the memory
// controller is bound there (hybrid hosts) and v2 otherwise.
func (p Paths) ReadMemory() (Memory, error) { return p.ReadMemoryFrom(direct{}) }

// ReadMemoryFrom is ReadMemory through src (a container's open Files).
func (p Paths) ReadMemoryFrom(src Source) (Memory, error) {
	if dir, ok := p["memory"]; ok {
		return readMemoryV1(src, dir)
	}
	if dir, ok := p[""]; ok {
		return readMemoryV2(src, dir)
	}
	return Memory{}, fmt.Errorf("no memory cgroup")
}

// The readers below name files as dir + "/" + name, not filepath.Join:
// dir is clean (ParseProcCgroup and Container make it with Join), and
// Join's Clean was a tenth of the Go time of a trapped sysinfo.

func readMemoryV1(src Source, dir string) (Memory, error) {
	var m Memory
	lim, err := readUint(src, dir+"/memory.limit_in_bytes")
	if err != nil {
		return m, err
	}
	if lim < v1Unlimited {
		m.Limit = lim
	}
	if m.Usage, err = readUint(src, dir+"/memory.usage_in_bytes"); err != nil {
		return m, err
	}
	if v, err := readStatKey(src, dir+"/memory.stat", "total_inactive_file"); err == nil {
		m.InactiveFile = v
	}
	if m.Limit != 0 {
		if ms, err := readUint(src, dir+"/memory.memsw.limit_in_bytes"); err == nil && ms < v1Unlimited && ms > m.Limit {
			m.SwapLimit = ms - m.Limit
			if mu, err := readUint(src, dir+"/memory.memsw.usage_in_bytes"); err == nil && mu > m.Usage {
				m.SwapUsage = mu - m.Usage
			}
		}
	}
	return m, nil
}

func readMemoryV2(src Source, dir string) (Memory, error) {
	var m Memory
	lim, err := readMax(src, dir+"/memory.max")
	if err != nil {
		return m, err
	}
	m.Limit = lim
	if m.Usage, err = readUint(src, dir+"/memory.current"); err != nil {
		return m, err
	}
	if v, err := readStatKey(src, dir+"/memory.stat", "inactive_file"); err == nil {
		m.InactiveFile = v
	}
	if m.Limit != 0 {
		if sl, err := readMax(src, dir+"/memory.swap.max"); err == nil {
			m.SwapLimit = sl
			m.SwapUsage, _ = readUint(src, dir+"/memory.swap.current")
		}
	}
	return m, nil
}

// ReadPids returns the number of tasks in the pids controller, counting the
// container's whole subtree.
func (p Paths) ReadPids() (uint64, error) { return p.ReadPidsFrom(direct{}) }

// ReadPidsFrom is ReadPids through src.
func (p Paths) ReadPidsFrom(src Source) (uint64, error) {
	if dir, ok := p["pids"]; ok {
		return readUint(src, dir+"/pids.current")
	}
	if dir, ok := p[""]; ok {
		return readUint(src, dir+"/pids.current")
	}
	return 0, fmt.Errorf("no pids cgroup")
}

func readUint(src Source, path string) (uint64, error) {
	b, err := src.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// readMax reads a v2 "max"-or-number file; "max" is 0 (unlimited).
func readMax(src Source, path string) (uint64, error) {
	b, err := src.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// readStatKey returns one key of a "key value" file such as memory.stat,
// without building a map of the whole file.
func readStatKey(src Source, path, key string) (uint64, error) {
	b, err := src.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(line) > len(key) && line[len(key)] == ' ' && string(line[:len(key)]) == key {
			return strconv.ParseUint(string(bytes.TrimSpace(line[len(key)+1:])), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", path, key)
}
