package sysctl

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	panic, _ := Lookup("kernel/panic")
	printk, _ := Lookup("kernel/printk")
	kptr, _ := Lookup("kernel/kptr_restrict")
	fileMax, _ := Lookup("fs/file-max")
	nrOpen, _ := Lookup("fs/nr_open")
	ptrace, _ := Lookup("kernel/yama/ptrace_scope")
	for _, c := range []struct {
		s    *Sysctl
		cur  []int64
		in   string
		want []int64 // nil: EINVAL
		used int
	}{
		{panic, []int64{1}, "7\n", []int64{7}, 2},
		{panic, []int64{1}, "  7  ", []int64{7}, 5},
		{panic, []int64{1}, "-3", []int64{-3}, 2},
		{panic, []int64{1}, "0x10", []int64{16}, 4},
		{panic, []int64{1}, "010", []int64{8}, 3},
		{panic, []int64{1}, "08", nil, 0}, // octal stops at 8, which is no separator
		{panic, []int64{1}, "2147483647", []int64{2147483647}, 10},
		{panic, []int64{1}, "2147483648", nil, 0},
		{panic, []int64{1}, "-2147483648", []int64{-2147483648}, 11},
		{panic, []int64{1}, "-2147483649", nil, 0},
		{panic, []int64{1}, "abc", nil, 0},
		{panic, []int64{1}, "7abc", nil, 0},
		{panic, []int64{1}, "", nil, 0},
		{panic, []int64{1}, " \n", nil, 0},
		{panic, []int64{1}, "-", nil, 0},
		{panic, []int64{1}, "000000000000000000000007", nil, 0}, // too long
		{panic, []int64{1}, "7 8\n", []int64{7}, 2},             // the kernel leaves "8\n" unconsumed
		{panic, []int64{1}, "7\x008", nil, 0},                   // NUL is no separator
		{printk, []int64{4, 4, 1, 7}, "3", []int64{3, 4, 1, 7}, 1},
		{printk, []int64{4, 4, 1, 7}, "1 2\t3\n4\n", []int64{1, 2, 3, 4}, 8},
		{printk, []int64{4, 4, 1, 7}, "1 x", nil, 0},
		{kptr, []int64{0}, "2", []int64{2}, 1},
		{kptr, []int64{0}, "3", nil, 0},
		{kptr, []int64{0}, "-1", nil, 0},
		{fileMax, []int64{100}, "9223372036854775807", []int64{9223372036854775807}, 19},
		{fileMax, []int64{100}, "-1", nil, 0},
		{fileMax, []int64{100}, "99999999999999999999", nil, 0}, // overflows unsigned long
		{nrOpen, []int64{1048576}, "63", nil, 0},
		{nrOpen, []int64{1048576}, "64", []int64{64}, 2},
		{nrOpen, []int64{1048576}, "2147483647", nil, 0},
		{ptrace, []int64{1}, "3", []int64{3}, 1},
		{ptrace, []int64{3}, "1", nil, 0}, // Yama: 3 is for good
		{ptrace, []int64{3}, "3", []int64{3}, 1},
	} {
		got, used, err := c.s.Parse(c.cur, []byte(c.in))
		if c.want == nil {
			if err != ErrInvalid {
				t.Errorf("%s %q: %v %v, want EINVAL", c.s.Name, c.in, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, c.want) || used != c.used {
			t.Errorf("%s %q: %v used %d (%v), want %v used %d", c.s.Name, c.in, got, used, err, c.want, c.used)
		}
	}
}

func TestParseParam(t *testing.T) {
	hs, _ := Lookup("module/nf_conntrack/parameters/hashsize")
	for in, want := range map[string]any{
		"65536": int64(65536), "65536\n": int64(65536), "+0x10": int64(16), "4294967295": int64(4294967295),
		"0": unix.EINVAL, "": unix.EINVAL, " 1": unix.EINVAL, "1 ": unix.EINVAL, "1\n\n": unix.EINVAL, "-1": unix.EINVAL,
		"4294967296": unix.ERANGE, "99999999999999999999999": unix.ERANGE,
	} {
		got, used, err := hs.Parse([]int64{16384}, []byte(in))
		if e, ok := want.(unix.Errno); ok {
			if err != e {
				t.Errorf("hashsize %q: %v %v, want %v", in, got, err, e)
			}
			continue
		}
		if err != nil || len(got) != 1 || got[0] != want.(int64) || used != len(in) {
			t.Errorf("hashsize %q: %v used %d (%v), want %v", in, got, used, err, want)
		}
	}
	if hs.Path() != "/sys/module/nf_conntrack/parameters/hashsize" || hs.Mode() != 0o600 {
		t.Errorf("hashsize path %s mode %#o", hs.Path(), hs.Mode())
	}
}

func TestValuesFormat(t *testing.T) {
	printk, _ := Lookup("kernel/printk")
	v, err := printk.Values("4\t4\t1\t7\n")
	if err != nil || !slices.Equal(v, []int64{4, 4, 1, 7}) {
		t.Fatalf("Values: %v %v", v, err)
	}
	if got := string(Format(v)); got != "4\t4\t1\t7\n" {
		t.Errorf("Format %q", got)
	}
	if _, err := printk.Values("4 4"); err == nil {
		t.Error("Values accepted 2 of 4")
	}
}
