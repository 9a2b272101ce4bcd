package cgroup

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// hybridMountinfo is a systemd host in hybrid mode (cgroup v1 controllers,
// the unified hierarchy for systemd), with co-mounted controllers.
const hybridMountinfo = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
25 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
31 26 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
32 26 0:30 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,net_cls,net_prio
33 26 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
34 26 0:32 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
35 26 0:33 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,cpuset,clone_children
36 26 0:34 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,devices
37 26 0:35 / /sys/fs/cgroup/blkio rw,nosuid,nodev,noexec,relatime shared:19 - cgroup cgroup rw,blkio
38 26 0:36 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:20 - cgroup cgroup rw,freezer,release_agent=/sbin/agent
39 26 0:37 / /sys/fs/cgroup/hugetlb rw,nosuid,nodev,noexec,relatime shared:21 - cgroup cgroup rw,hugetlb
40 26 0:38 / /sys/fs/cgroup/perf_event rw,nosuid,nodev,noexec,relatime shared:22 - cgroup cgroup rw,perf_event
41 26 0:39 / /sys/fs/cgroup/rdma rw,nosuid,nodev,noexec,relatime shared:23 - cgroup cgroup rw,rdma
900 22 0:31 /docker /mnt/memory\040copy rw,relatime - cgroup cgroup rw,memory
`

// thisHostMountinfo is the VM these tests were written on: one controller
// per hierarchy, no cpu/cpuacct co-mount, unified at /sys/fs/cgroup/unified.
const thisHostMountinfo = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

const v2Mountinfo = `22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
512 480 0:24 /system.slice/docker-abc.scope /var/lib/docker/x/cgroup rw - cgroup2 cgroup2 rw
`

func TestParseMounts(t *testing.T) {
	tests := []struct {
		name      string
		mountinfo string
		want      Mounts
	}{
		{
			name:      "hybrid, systemd layout",
			mountinfo: hybridMountinfo,
			want: Mounts{
				"":             "/sys/fs/cgroup/unified",
				"name=systemd": "/sys/fs/cgroup/systemd",
				"cpu":          "/sys/fs/cgroup/cpu,cpuacct",
				"cpuacct":      "/sys/fs/cgroup/cpu,cpuacct",
				"net_cls":      "/sys/fs/cgroup/net_cls,net_prio",
				"net_prio":     "/sys/fs/cgroup/net_cls,net_prio",
				"memory":       "/sys/fs/cgroup/memory", // the first mount wins over the later copy
				"pids":         "/sys/fs/cgroup/pids",
				"cpuset":       "/sys/fs/cgroup/cpuset",
				"devices":      "/sys/fs/cgroup/devices",
				"blkio":        "/sys/fs/cgroup/blkio",
				"freezer":      "/sys/fs/cgroup/freezer",
				"hugetlb":      "/sys/fs/cgroup/hugetlb",
				"perf_event":   "/sys/fs/cgroup/perf_event",
				"rdma":         "/sys/fs/cgroup/rdma",
			},
		},
		{
			name:      "hybrid, this host",
			mountinfo: thisHostMountinfo,
			want: Mounts{
				"":             "/sys/fs/cgroup/unified",
				"name=systemd": "/sys/fs/cgroup/systemd",
				"cpu":          "/sys/fs/cgroup/cpu",
				"cpuacct":      "/sys/fs/cgroup/cpuacct",
				"cpuset":       "/sys/fs/cgroup/cpuset",
				"memory":       "/sys/fs/cgroup/memory",
				"devices":      "/sys/fs/cgroup/devices",
				"freezer":      "/sys/fs/cgroup/freezer",
				"blkio":        "/sys/fs/cgroup/blkio",
				"pids":         "/sys/fs/cgroup/pids",
			},
		},
		{
			name:      "cgroup v2 only",
			mountinfo: v2Mountinfo,
			want:      Mounts{"": "/sys/fs/cgroup"},
		},
		{
			name:      "escaped mount point",
			mountinfo: "50 1 0:40 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n",
			want:      Mounts{"": "/mnt/my cgroups"},
		},
		{
			name:      "no cgroups, junk",
			mountinfo: "garbage\n\n22 1 8:1 / / rw - ext4 /dev/sda1 rw\n1 2 3 - cgroup\n",
			want:      Mounts{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseMounts([]byte(tc.mountinfo))
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseMounts:\n\tgot  %v\n\twant %v", got, tc.want)
			}
		})
	}
}

func TestParseProcCgroup(t *testing.T) {
	hybrid := ParseMounts([]byte(hybridMountinfo))
	host := ParseMounts([]byte(thisHostMountinfo))
	v2 := ParseMounts([]byte(v2Mountinfo))
	const id = "4f1e2d3c4b5a"
	tests := []struct {
		name   string
		data   string
		mounts Mounts
		want   Paths
	}{
		{
			name: "docker container on a hybrid host",
			data: `12:rdma:/
11:perf_event:/docker/` + id + `
10:cpu,cpuacct:/docker/` + id + `
9:memory:/docker/` + id + `
8:pids:/docker/` + id + `
7:net_cls,net_prio:/docker/` + id + `
1:name=systemd:/docker/` + id + `
0::/system.slice/containerd.service
`,
			mounts: hybrid,
			want: Paths{
				"rdma":         "/sys/fs/cgroup/rdma",
				"perf_event":   "/sys/fs/cgroup/perf_event/docker/" + id,
				"cpu":          "/sys/fs/cgroup/cpu,cpuacct/docker/" + id,
				"cpuacct":      "/sys/fs/cgroup/cpu,cpuacct/docker/" + id,
				"memory":       "/sys/fs/cgroup/memory/docker/" + id,
				"pids":         "/sys/fs/cgroup/pids/docker/" + id,
				"net_cls":      "/sys/fs/cgroup/net_cls,net_prio/docker/" + id,
				"net_prio":     "/sys/fs/cgroup/net_cls,net_prio/docker/" + id,
				"name=systemd": "/sys/fs/cgroup/systemd/docker/" + id,
				"":             "/sys/fs/cgroup/unified/system.slice/containerd.service",
			},
		},
		{
			name: "this host's /proc/self/cgroup",
			data: `9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/80a82ee0d7d1603b6d2bbd40c51b2af2
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
`,
			mounts: host,
			want: Paths{
				"name=systemd": "/sys/fs/cgroup/systemd",
				"pids":         "/sys/fs/cgroup/pids",
				"blkio":        "/sys/fs/cgroup/blkio",
				"freezer":      "/sys/fs/cgroup/freezer",
				"devices":      "/sys/fs/cgroup/devices",
				"memory":       "/sys/fs/cgroup/memory/process_api/80a82ee0d7d1603b6d2bbd40c51b2af2",
				"cpuset":       "/sys/fs/cgroup/cpuset",
				"cpuacct":      "/sys/fs/cgroup/cpuacct",
				"cpu":          "/sys/fs/cgroup/cpu",
				"":             "/sys/fs/cgroup/unified",
			},
		},
		{
			name:   "cgroup v2 systemd scope",
			data:   "0::/system.slice/docker-" + id + ".scope\n",
			mounts: v2,
			want:   Paths{"": "/sys/fs/cgroup/system.slice/docker-" + id + ".scope"},
		},
		{
			name:   "path with a colon",
			data:   "0::/kubepods/pod1:container\n",
			mounts: v2,
			want:   Paths{"": "/sys/fs/cgroup/kubepods/pod1:container"},
		},
		{
			name:   "controllers without a mount are left out",
			data:   "3:misc:/x\n2:memory:/x\n0::/x\n",
			mounts: v2,
			want:   Paths{"": "/sys/fs/cgroup/x"},
		},
		{
			name:   "malformed lines are skipped",
			data:   "junk\n\n9\n0::/ok\n",
			mounts: v2,
			want:   Paths{"": "/sys/fs/cgroup/ok"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := ParseProcCgroup([]byte(tc.data), tc.mounts)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseProcCgroup:\n\tgot  %v\n\twant %v", got, tc.want)
			}
		})
	}
}

func TestHostMountsAndOf(t *testing.T) {
	m, err := HostMounts()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Of(os.Getpid(), m)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) > 0 && len(p) == 0 {
		t.Errorf("cgroup mounts %v but no cgroup for this process", m)
	}
	for ctrl, dir := range p {
		if !strings.HasPrefix(dir, m[ctrl]) {
			t.Errorf("%q: %s is not under its hierarchy %s", ctrl, dir, m[ctrl])
		}
	}
}

// tree writes files (relative path -> content) under a new directory.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	mib = 1 << 20
	// What a v1 memory.limit_in_bytes reads when unlimited (4 KiB pages).
	v1Max = "9223372036854771712\n"
)

func TestReadMemoryV1(t *testing.T) {
	stat := "cache 1000\nrss 2000\ntotal_cache 50000000\ntotal_inactive_file 30000000\ntotal_active_file 20000000\n"
	tests := []struct {
		name  string
		files map[string]string
		want  Memory
		err   string
	}{
		{
			name: "limit with swap (docker -m 512m)",
			files: map[string]string{
				"memory.limit_in_bytes":       "536870912\n",
				"memory.usage_in_bytes":       "104857600\n",
				"memory.stat":                 stat,
				"memory.memsw.limit_in_bytes": "1073741824\n",
				"memory.memsw.usage_in_bytes": "115343360\n",
			},
			want: Memory{Limit: 512 * mib, Usage: 100 * mib, InactiveFile: 30000000, SwapLimit: 512 * mib, SwapUsage: 10 * mib},
		},
		{
			name: "unlimited",
			files: map[string]string{
				"memory.limit_in_bytes":       v1Max,
				"memory.usage_in_bytes":       "104857600\n",
				"memory.stat":                 stat,
				"memory.memsw.limit_in_bytes": v1Max,
				"memory.memsw.usage_in_bytes": "115343360\n",
			},
			want: Memory{Usage: 100 * mib, InactiveFile: 30000000},
		},
		{
			name: "limit, swap unlimited",
			files: map[string]string{
				"memory.limit_in_bytes":       "536870912",
				"memory.usage_in_bytes":       "1000",
				"memory.memsw.limit_in_bytes": v1Max,
				"memory.memsw.usage_in_bytes": "2000",
			},
			want: Memory{Limit: 512 * mib, Usage: 1000},
		},
		{
			name: "limit, no swap (memory-swap equal to memory)",
			files: map[string]string{
				"memory.limit_in_bytes":       "536870912",
				"memory.usage_in_bytes":       "1000",
				"memory.memsw.limit_in_bytes": "536870912",
				"memory.memsw.usage_in_bytes": "1000",
			},
			want: Memory{Limit: 512 * mib, Usage: 1000},
		},
		{
			name: "no swap accounting (swapaccount=0), no stat",
			files: map[string]string{
				"memory.limit_in_bytes": "536870912",
				"memory.usage_in_bytes": "1000",
			},
			want: Memory{Limit: 512 * mib, Usage: 1000},
		},
		{
			name: "swap usage below memory usage",
			files: map[string]string{
				"memory.limit_in_bytes":       "1000000",
				"memory.usage_in_bytes":       "5000",
				"memory.memsw.limit_in_bytes": "3000000",
				"memory.memsw.usage_in_bytes": "4000",
			},
			want: Memory{Limit: 1000000, Usage: 5000, SwapLimit: 2000000},
		},
		{
			name:  "no limit file",
			files: map[string]string{"memory.usage_in_bytes": "1000"},
			err:   "memory.limit_in_bytes",
		},
		{
			name:  "no usage file",
			files: map[string]string{"memory.limit_in_bytes": "1000"},
			err:   "memory.usage_in_bytes",
		},
		{
			name:  "garbage limit",
			files: map[string]string{"memory.limit_in_bytes": "max\n", "memory.usage_in_bytes": "1000"},
			err:   "memory.limit_in_bytes",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := tree(t, tc.files)
			// v1 is preferred where memory is bound there, even with a v2 dir.
			p := Paths{"memory": dir, "": filepath.Join(dir, "nonexistent")}
			got, err := p.ReadMemory()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ReadMemory: %+v, %v; want an error about %s", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ReadMemory: %+v, %v\n\twant %+v", got, err, tc.want)
			}
		})
	}
}

func TestReadMemoryV2(t *testing.T) {
	stat := "anon 2000\nfile 50000000\nactive_file 20000000\ninactive_file 30000000\nshmem 0\n"
	tests := []struct {
		name  string
		files map[string]string
		want  Memory
		err   string
	}{
		{
			name: "limit with swap",
			files: map[string]string{
				"memory.max": "536870912\n", "memory.current": "104857600\n", "memory.stat": stat,
				"memory.swap.max": "536870912\n", "memory.swap.current": "1048576\n",
			},
			want: Memory{Limit: 512 * mib, Usage: 100 * mib, InactiveFile: 30000000, SwapLimit: 512 * mib, SwapUsage: mib},
		},
		{
			name: "unlimited",
			files: map[string]string{
				"memory.max": "max\n", "memory.current": "104857600\n", "memory.stat": stat,
				"memory.swap.max": "max\n", "memory.swap.current": "0\n",
			},
			want: Memory{Usage: 100 * mib, InactiveFile: 30000000},
		},
		{
			name: "limit, swap disabled",
			files: map[string]string{
				"memory.max": "536870912", "memory.current": "4096", "memory.swap.max": "0", "memory.swap.current": "0",
			},
			want: Memory{Limit: 512 * mib, Usage: 4096},
		},
		{
			name:  "limit, no swap controller",
			files: map[string]string{"memory.max": "536870912", "memory.current": "4096"},
			want:  Memory{Limit: 512 * mib, Usage: 4096},
		},
		{name: "no memory.max", files: map[string]string{"memory.current": "1"}, err: "memory.max"},
		{name: "no memory.current", files: map[string]string{"memory.max": "max"}, err: "memory.current"},
		{name: "garbage memory.max", files: map[string]string{"memory.max": "lots", "memory.current": "1"}, err: "memory.max"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Paths{"": tree(t, tc.files), "pids": "/elsewhere"}
			got, err := p.ReadMemory()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ReadMemory: %+v, %v; want an error about %s", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ReadMemory: %+v, %v\n\twant %+v", got, err, tc.want)
			}
		})
	}
}

func TestReadMemoryNoCgroup(t *testing.T) {
	if _, err := (Paths{"pids": "/x"}).ReadMemory(); err == nil {
		t.Error("ReadMemory without a memory cgroup succeeded")
	}
	var nilPaths Paths
	if _, err := nilPaths.ReadMemory(); err == nil {
		t.Error("ReadMemory on nil Paths succeeded")
	}
}

func TestReadPids(t *testing.T) {
	v1 := tree(t, map[string]string{"pids.current": "17\n", "pids.max": "max\n"})
	v2 := tree(t, map[string]string{"pids.current": "3\n"})
	empty := t.TempDir()
	tests := []struct {
		name  string
		paths Paths
		want  uint64
		err   bool
	}{
		{"v1", Paths{"pids": v1, "": v2}, 17, false},
		{"v2", Paths{"": v2, "memory": v1}, 3, false},
		{"no pids cgroup", Paths{"memory": v1}, 0, true},
		{"missing pids.current", Paths{"pids": empty}, 0, true},
		{"nil", nil, 0, true},
	}
	for _, tc := range tests {
		got, err := tc.paths.ReadPids()
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%s: ReadPids = %d, %v; want %d (error %v)", tc.name, got, err, tc.want, tc.err)
		}
	}
	bad := tree(t, map[string]string{"pids.current": "many"})
	if _, err := (Paths{"pids": bad}).ReadPids(); err == nil || !strings.Contains(err.Error(), "pids.current") {
		t.Errorf("garbage pids.current: %v", err)
	}
}

func TestUnifiedAndContainer(t *testing.T) {
	const scope = "/sys/fs/cgroup/system.slice/docker-abc.scope"
	tests := []struct {
		name      string
		paths     Paths
		unified   bool
		container Paths
	}{
		{"v2 host, init in the leaf", Paths{"": scope + "/init.scope"}, true, Paths{"": scope}},
		{"v2 host with a named v1 hierarchy", Paths{"": scope + "/init.scope", "name=systemd": "/sys/fs/cgroup/systemd/x"}, true,
			Paths{"": scope, "name=systemd": "/sys/fs/cgroup/systemd/x"}},
		// No leaf (a container sysvisor did not create, or a hook that
		// did not run): the directory is the container's.
		{"v2 host, no leaf", Paths{"": scope}, true, Paths{"": scope}},
		// Hybrid: limits on v1, no leaf is made; the unified directory is
		// left as it is whatever its name.
		{"hybrid", Paths{"memory": "/sys/fs/cgroup/memory/docker/abc", "": "/sys/fs/cgroup/unified/x/init.scope"}, false,
			Paths{"memory": "/sys/fs/cgroup/memory/docker/abc", "": "/sys/fs/cgroup/unified/x/init.scope"}},
		{"v1 only", Paths{"memory": "/sys/fs/cgroup/memory/init.scope"}, false, Paths{"memory": "/sys/fs/cgroup/memory/init.scope"}},
		{"nothing", nil, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := Paths{}
			for k, v := range tc.paths {
				in[k] = v
			}
			if _, ok := tc.paths.Unified(); ok != tc.unified {
				t.Errorf("Unified %v, want %v", ok, tc.unified)
			}
			got := tc.paths.Container()
			if len(got) != len(tc.container) || (len(got) > 0 && !reflect.DeepEqual(got, tc.container)) {
				t.Errorf("Container:\n\tgot  %v\n\twant %v", got, tc.container)
			}
			if tc.paths != nil && !reflect.DeepEqual(in, tc.paths) {
				t.Errorf("Container changed its receiver: %v", tc.paths)
			}
		})
	}
}
