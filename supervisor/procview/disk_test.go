package procview

import (
	"strconv"
	"strings"
	"testing"

	"github.com/sysvisor/sysvisor/linux/cgroup"
)

// Swaps agrees with meminfo's SwapTotal and SwapFree on every fixture.
func TestSwapsMatchesMeminfo(t *testing.T) {
	hostMem := host(t, "meminfo")
	total, swap := HostMemTotals(hostMem)
	for _, fx := range fixtures {
		mem, err := fx.paths.ReadMemoryFrom(files{})
		if err != nil {
			t.Fatal(err)
		}
		st, _ := ReadMemStat(fx.paths, files{})
		f := Figures(total, swap, mem, st)
		mi := Meminfo(hostMem, f, st)
		sw := string(Swaps(f))
		lines := strings.Split(strings.TrimSuffix(sw, "\n"), "\n")
		if lines[0] != strings.TrimSuffix(swapsHeader, "\n") {
			t.Errorf("%s: header %q", fx.name, lines[0])
		}
		swapTotal, swapFree := meminfoField(t, mi, "SwapTotal"), meminfoField(t, mi, "SwapFree")
		if swapTotal == 0 {
			if len(lines) != 1 {
				t.Errorf("%s: no swap in meminfo, /proc/swaps:\n%s", fx.name, sw)
			}
			continue
		}
		if len(lines) != 2 {
			t.Fatalf("%s: meminfo SwapTotal %d kB, /proc/swaps:\n%s", fx.name, swapTotal, sw)
		}
		w := strings.Fields(lines[1])
		if len(w) != 5 || w[0] != "none" || w[1] != "virtual" || w[2] != itoa(swapTotal) || w[3] != itoa(swapTotal-swapFree) {
			t.Errorf("%s: swap line %q, want size %d used %d kB", fx.name, lines[1], swapTotal, swapTotal-swapFree)
		}
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

// The v1 fixture is a container that wrote and read 300 blocks of 4 KiB
// with O_DIRECT under a throttle limit; the v2 one is io.stat as the
// kernel prints it.
func TestDiskstats(t *testing.T) {
	hostStats := host(t, "diskstats")
	for _, c := range []struct {
		name  string
		paths cgroup.Paths
		want  string
	}{
		{"v1", cgroup.Paths{"blkio": "testdata/v1/blkio"}, " 254       0 vda 300 0 2400 0 300 0 2400 0 0 0 0 0 0 0 0 0 0\n"},
		{"v2", cgroup.Paths{"": "testdata/v2"}, " 254       0 vda 300 0 2400 0 1000 0 8000 0 0 0 0 0 0 0 0 0 0\n"},
		// Recorded: 50003968 bytes written in 19 requests, 97664 sectors.
		{"v2-docker-1g", cgroup.Paths{"": "testdata/v2-docker-1g"}, " 254       0 vda 0 0 0 0 19 0 97664 0 0 0 0 0 0 0 0 0 0\n"},
		// Recorded: no I/O yet, an empty io.stat.
		{"v2-docker-256m", cgroup.Paths{"": "testdata/v2-docker-256m"}, ""},
	} {
		io, err := ReadBlkIO(c.paths, files{})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := string(Diskstats(hostStats, io)); got != c.want {
			t.Errorf("%s: diskstats\n%q\nwant\n%q", c.name, got, c.want)
		}
	}
	if _, err := ReadBlkIO(cgroup.Paths{"memory": "x"}, files{}); err == nil {
		t.Error("no blkio cgroup: no error")
	}
}

func TestProductUUID(t *testing.T) {
	a, b := string(ProductUUID("aaaa")), string(ProductUUID("bbbb"))
	if a == b || a != string(ProductUUID("aaaa")) {
		t.Errorf("uuids %q %q: want stable per id, different across ids", a, b)
	}
	f := strings.Split(strings.TrimSuffix(a, "\n"), "-")
	if len(f) != 5 || len(f[0]) != 8 || len(f[1]) != 4 || len(f[2]) != 4 || len(f[3]) != 4 || len(f[4]) != 12 || f[2][0] != '8' {
		t.Errorf("uuid %q: want 8-4-4-4-12 hex, version 8", a)
	}
}
