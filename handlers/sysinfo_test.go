package handlers

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/cgroup"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

// hostInfo is a host with 8 GiB of RAM and 2 GiB of swap.
func hostInfo(unit uint32) unix.Sysinfo_t {
	u := uint64(unit)
	if u == 0 {
		u = 1
	}
	return unix.Sysinfo_t{
		Uptime: 864000, Loads: [3]uint64{65536, 32768, 16384},
		Totalram: 8 * gib / u, Freeram: 2 * gib / u, Sharedram: 100 * mib / u, Bufferram: 200 * mib / u,
		Totalswap: 2 * gib / u, Freeswap: gib / u, Procs: 500, Totalhigh: 0, Freehigh: 0, Unit: unit,
	}
}

func TestContainerSysinfo(t *testing.T) {
	// want starts from the host's figures; only what the container changes
	// is listed.
	type view struct {
		uptime              int64
		totalram, freeram   uint64
		totalswap, freeswap uint64
		procs               uint16
	}
	tests := []struct {
		name   string
		unit   uint32
		uptime time.Duration
		mem    cgroup.Memory
		procs  uint64
		want   view
	}{
		{
			name: "docker -m 512m", unit: 1, uptime: 3661900 * time.Millisecond, procs: 5,
			mem:  cgroup.Memory{Limit: 512 * mib, Usage: 100 * mib, InactiveFile: 30 * mib},
			want: view{uptime: 3661, totalram: 512 * mib, freeram: 442 * mib, procs: 5},
		},
		{
			name: "no memory limit", unit: 1, uptime: time.Second, procs: 1,
			mem:  cgroup.Memory{Usage: 2 * gib, InactiveFile: gib},
			want: view{uptime: 1, totalram: 8 * gib, freeram: 7 * gib, procs: 1},
		},
		{
			name: "limit above host RAM", unit: 1, procs: 2,
			mem:  cgroup.Memory{Limit: 64 * gib, Usage: gib},
			want: view{totalram: 8 * gib, freeram: 7 * gib, procs: 2},
		},
		{
			name: "limit with swap", unit: 1, procs: 3,
			mem:  cgroup.Memory{Limit: gib, Usage: 512 * mib, SwapLimit: gib, SwapUsage: 100 * mib},
			want: view{totalram: gib, freeram: 512 * mib, totalswap: gib, freeswap: 924 * mib, procs: 3},
		},
		{
			name: "swap limit above host swap", unit: 1, procs: 3,
			mem:  cgroup.Memory{Limit: gib, Usage: 0, SwapLimit: 16 * gib, SwapUsage: 3 * gib},
			want: view{totalram: gib, freeram: gib, totalswap: 2 * gib, freeswap: 0, procs: 3},
		},
		{
			name: "usage over the limit", unit: 1, procs: 3,
			mem:  cgroup.Memory{Limit: gib, Usage: 2 * gib},
			want: view{totalram: gib, freeram: 0, procs: 3},
		},
		{
			name: "host counts in 4 KiB units", unit: 4096, uptime: 10 * time.Minute, procs: 7,
			mem:  cgroup.Memory{Limit: 512 * mib, Usage: 128 * mib, SwapLimit: 4 * gib, SwapUsage: mib},
			want: view{uptime: 600, totalram: 512 * mib, freeram: 384 * mib, totalswap: 2 * gib, freeswap: 2*gib - mib, procs: 7},
		},
		{
			name: "unlimited with a host in 4 KiB units", unit: 4096, procs: 7,
			mem:  cgroup.Memory{Usage: gib},
			want: view{totalram: 8 * gib, freeram: 7 * gib, procs: 7},
		},
		{
			name: "unit 0 means bytes", unit: 0, procs: 7,
			mem:  cgroup.Memory{Usage: gib},
			want: view{totalram: 8 * gib, freeram: 7 * gib, procs: 7},
		},
		{
			name: "no pids figure keeps the host's", unit: 1, procs: 0,
			mem:  cgroup.Memory{Limit: gib},
			want: view{totalram: gib, freeram: gib, procs: 500},
		},
		{
			name: "more tasks than the field holds", unit: 1, procs: 100000,
			mem:  cgroup.Memory{Limit: gib},
			want: view{totalram: gib, freeram: gib, procs: 0xffff},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			host := hostInfo(tc.unit)
			got := ContainerSysinfo(host, tc.uptime, tc.mem, tc.procs)
			want := host
			want.Unit = 1
			want.Uptime = tc.want.uptime
			want.Totalram, want.Freeram = tc.want.totalram, tc.want.freeram
			want.Sharedram, want.Bufferram = 0, 0
			want.Totalswap, want.Freeswap = tc.want.totalswap, tc.want.freeswap
			want.Procs = tc.want.procs
			if got != want {
				t.Errorf("ContainerSysinfo:\n\tgot  %+v\n\twant %+v", got, want)
			}
			if host != hostInfo(tc.unit) {
				t.Error("the host's figures were modified")
			}
		})
	}
}

func TestContainerSysinfoInactiveAboveUsage(t *testing.T) {
	// As docker stats computes it: usage minus inactive file, or usage
	// itself when inactive file is not below it.
	si := ContainerSysinfo(hostInfo(1), 0, cgroup.Memory{Limit: gib, Usage: 100 * mib, InactiveFile: 200 * mib}, 1)
	if si.Freeram != gib-100*mib {
		t.Errorf("free RAM %d, want %d", si.Freeram, gib-100*mib)
	}
}

func TestContainerSysinfoNoUnderflow(t *testing.T) {
	// Reclaimable page cache can be reported above usage; free memory must
	// never wrap around.
	for _, mem := range []cgroup.Memory{
		{Limit: gib, Usage: 100 * mib, InactiveFile: 200 * mib},
		{Limit: gib, Usage: 100 * mib, InactiveFile: 100 * mib},
		{Limit: gib, Usage: 0, InactiveFile: mib},
		{Limit: gib, Usage: 10 * gib, InactiveFile: mib, SwapLimit: gib, SwapUsage: 2 * gib},
	} {
		si := ContainerSysinfo(hostInfo(1), 0, mem, 1)
		if si.Freeram > si.Totalram || si.Freeswap > si.Totalswap {
			t.Errorf("memory %+v: free %d of %d RAM, %d of %d swap", mem, si.Freeram, si.Totalram, si.Freeswap, si.Totalswap)
		}
	}
}

func TestBootTime(t *testing.T) {
	a, err := BootTime()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := BootTime()
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		t.Fatal(err)
	}
	if a <= 0 || b < a {
		t.Errorf("boot time %v then %v", a, b)
	}
	// sysinfo's uptime counts on the same clock.
	if d := a/time.Second - time.Duration(si.Uptime); d < -2 || d > 2 {
		t.Errorf("boot time %v, sysinfo uptime %ds", a, si.Uptime)
	}
}
