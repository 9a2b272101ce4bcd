package handlers

import (
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
)

func TestWritableRange(t *testing.T) {
	const maps = `00400000-00401000 r-xp 00000000 08:01 42 /bin/x
00600000-00601000 r--p 00000000 08:01 42 /bin/x
00601000-00602000 rw-p 00001000 08:01 42 /bin/x
00602000-00604000 rw-p 00000000 00:00 0 [heap]
00700000-00701000 ---p 00000000 00:00 0
00701000-00702000 rw-p 00000000 00:00 0
7ffc0000-7ffc1000 rw-p 00000000 00:00 0 [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
`
	for _, tc := range []struct {
		name    string
		addr, n uint64
		want    bool
	}{
		{"inside one writable mapping", 0x602010, 112, true},
		{"across two adjacent writable mappings", 0x601ff0, 0x20, true},
		{"ends exactly at the end", 0x603f90, 0x70, true},
		{"read-only", 0x600000, 8, false},
		{"text", 0x400100, 8, false},
		{"PROT_NONE", 0x700000, 8, false},
		{"from PROT_NONE into writable", 0x700ff8, 16, false},
		{"writable into a gap", 0x603ff8, 16, false},
		{"in a gap", 0x650000, 8, false},
		{"below every mapping", 0x1, 8, false},
		{"null", 0, 112, false},
		{"above every mapping", 0x7ffc1000, 8, false},
		{"vsyscall", 0xffffffffff600000, 8, false},
		{"wraps around", 0xfffffffffffffff0, 0x20, false},
	} {
		got, err := writableRange(strings.NewReader(maps), tc.addr, tc.n)
		if err != nil || got != tc.want {
			t.Errorf("%s: writableRange(%#x, %d) = %v, %v; want %v", tc.name, tc.addr, tc.n, got, err, tc.want)
		}
	}
	if _, err := writableRange(strings.NewReader("garbage\n"), 0x1000, 8); err == nil {
		t.Error("malformed maps accepted")
	}
}

// TestQueryWritable checks PROCMAP_QUERY against the maps listing on this
// process's own mappings.
func TestQueryWritable(t *testing.T) {
	page := uint64(os.Getpagesize())
	mm := func(prot int) uint64 {
		b, err := unix.Mmap(-1, 0, 3*int(page), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Munmap(b) })
		if err := unix.Mprotect(b[page:2*page], prot); err != nil {
			t.Fatal(err)
		}
		return uint64(uintptr(unsafe.Pointer(&b[0])))
	}
	rw, ro, none := mm(unix.PROT_READ|unix.PROT_WRITE), mm(unix.PROT_READ), mm(unix.PROT_NONE)
	maps, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer maps.Close()
	query := kernel.ProcmapQuery.Probe() == nil
	if !query {
		t.Logf("kernel lacks PROCMAP_QUERY (%v): the listing only", kernel.ProcmapQuery.Probe())
	}
	for _, tc := range []struct {
		name    string
		addr, n uint64
		want    bool
	}{
		{"writable", rw + page, 112, true},
		{"across writable mappings", rw + page - 8, 16, true},
		{"read-only", ro + page, 8, false},
		{"into read-only", ro + page - 8, 16, false},
		{"PROT_NONE", none + page, 8, false},
		{"null", 0, 8, false},
		{"wraps", ^uint64(0) - 4, 8, false},
	} {
		if query {
			got, err := queryWritable(maps, tc.addr, tc.n)
			if err != nil || got != tc.want {
				t.Errorf("%s: PROCMAP_QUERY %v (%v); want %v", tc.name, got, err, tc.want)
			}
		}
		text, terr := writableRange(maps, tc.addr, tc.n)
		maps.Seek(0, 0)
		if terr != nil || text != tc.want {
			t.Errorf("%s: listing %v (%v); want %v", tc.name, text, terr, tc.want)
		}
		// accessible as the handlers call it, each way the kernel allows.
		for _, q := range []bool{false, query} {
			if got := accessibleBy(int(maps.Fd()), tc.addr, tc.n, writeAccess, q); got != tc.want {
				t.Errorf("%s: accessible (PROCMAP_QUERY %v) %v; want %v", tc.name, q, got, tc.want)
			}
		}
	}
}
