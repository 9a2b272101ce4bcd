package sysctl

import (
	"bytes"
	"math"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// decimal is a plain decimal number with its blanks, the form whose value
// strconv can tell independently of the parser under test.
var decimal = regexp.MustCompile(`^[ \t\n]*(-?(?:0|[1-9][0-9]{0,19}))[ \t\n]*$`)

// pageMax is what the kernel's handlers look at of one write (PAGE_SIZE-1
// for /proc/sys, PAGE_SIZE for a sysfs attribute).
func pageMax(s *Sysctl) int {
	if s != nil && s.Param {
		return 4096
	}
	return 4095
}

// FuzzParse: a write a container makes to one of its sysctls is refused
// with EINVAL (ERANGE for a module parameter's overflow) and changes
// nothing, or gives N values within the kernel's type and range that read
// back (Format, Values) and write back (Parse) as themselves; the bytes
// consumed are a prefix the kernel would consume alone; a plain decimal is
// accepted exactly when it is in range, never wrapped; and only what the
// kernel looks at of a write (a page, up to a NUL for sysfs) decides.
func FuzzParse(f *testing.F) {
	for i := range Table {
		f.Add(uint8(i), int64(1), int64(2), int64(3), int64(4), uint16(0), uint16(0), []byte("7\n"))
	}
	for _, in := range []string{" 1 2 3", "-2147483648", "2147483648", "9223372036854775808", "18446744073709551616",
		"0x7fffffff", "0X10 010\t-0", "  -\n", "4 4 1 7 8", "1\x00", "١", "+1\n", "3\v"} {
		f.Add(uint8(3), int64(4), int64(4), int64(1), int64(7), uint16(0), uint16(0), []byte(in))
	}
	// Around the page the kernel reads: a value past it, one across it.
	f.Add(uint8(3), int64(4), int64(4), int64(1), int64(7), uint16(1), uint16(4094), []byte("12"))
	f.Add(uint8(0), int64(0), int64(0), int64(0), int64(0), uint16(0), uint16(4093), []byte("123"))
	f.Fuzz(func(t *testing.T, idx uint8, c0, c1, c2, c3 int64, at, pad uint16, data []byte) {
		// pad blanks inserted at at: writes that reach the page's end
		// without a corpus of page-sized inputs, slow to minimize.
		at = min(at, uint16(len(data)))
		data = slices.Concat(data[:at], bytes.Repeat([]byte{' '}, int(pad)%(2*pageMax(nil))), data[at:])
		s := &Table[int(idx)%len(Table)]
		cur := []int64{c0, c1, c2, c3}[:s.N]
		got, used, err := s.Parse(cur, data)
		if err != nil {
			if (err != unix.EINVAL && (!s.Param || err != unix.ERANGE)) || got != nil || used != 0 {
				t.Fatalf("%s %q: %v used %d, error %#v", s.Name, data, got, used, err)
			}
		} else {
			checkAccepted(t, s, cur, data, got, used)
		}
		if m := decimal.FindSubmatch(data); m != nil && len(data) <= pageMax(s) {
			checkDecimal(t, s, cur, data, string(m[1]), got, err)
		}
		// The kernel never sees more than a page, nor, in sysfs, past a
		// NUL (its buffer is a C string): what lies there cannot matter.
		view := data[:min(len(data), pageMax(s))]
		if i := bytes.IndexByte(view, 0); s.Param && i >= 0 {
			view = view[:i]
		}
		if len(view) < len(data) {
			vgot, vused, verr := s.Parse(cur, view)
			switch {
			case verr != nil:
			case s.Param:
				vused = min(len(data), pageMax(s)) // sysfs reports the whole store consumed
			default:
				vused += len(data) - len(view) // *lenp -= left: the bytes past the page count as consumed
			}
			if verr != err || !slices.Equal(vgot, got) || vused != used {
				t.Fatalf("%s %q: %v used %d (%v); the kernel's view %q: %v used %d (%v)", s.Name, data, got, used, err, view, vgot, vused, verr)
			}
		}
	})
}

func checkAccepted(t *testing.T, s *Sysctl, cur []int64, data []byte, got []int64, used int) {
	t.Helper()
	if len(got) != s.N || used < 1 || used > len(data) {
		t.Fatalf("%s %q: %v used %d", s.Name, data, got, used)
	}
	for i, v := range got {
		lo, hi := int64(math.MinInt32), int64(math.MaxInt32)
		switch {
		case s.Param:
			lo, hi = 0, math.MaxUint32
		case s.Ulong:
			lo, hi = 0, math.MaxInt64
		}
		if s.Ranged {
			lo, hi = max(lo, s.Min), min(hi, s.Max)
		}
		if i == 0 && s.StickyMax && cur[0] == s.Max {
			lo = s.Max
		}
		if v < lo || v > hi {
			t.Fatalf("%s %q: value %d outside [%d, %d]", s.Name, data, v, lo, hi)
		}
	}
	if s.Param {
		return
	}
	// What the kernel consumed, written alone, sets the same values and
	// is consumed whole (within a page: past it the kernel counts bytes
	// it never read as consumed).
	if again, n, err := s.Parse(cur, data[:used]); len(data) <= pageMax(s) && (err != nil || !slices.Equal(again, got) || n != used) {
		t.Fatalf("%s %q: %v used %d, but its prefix %q gives %v used %d (%v)", s.Name, data, got, used, data[:used], again, n, err)
	}
	// Read back as the kernel shows it, and written back, unchanged.
	shown := Format(got)
	if back, err := s.Values(string(shown)); err != nil || !slices.Equal(back, got) {
		t.Fatalf("%s: %v shows as %q, reads back %v (%v)", s.Name, got, shown, back, err)
	}
	if back, n, err := s.Parse(got, shown); err != nil || !slices.Equal(back, got) || n != len(shown) {
		t.Fatalf("%s: %q written back gives %v used %d (%v)", s.Name, shown, back, n, err)
	}
}

// checkDecimal compares the parse of one plain decimal with strconv's.
func checkDecimal(t *testing.T, s *Sysctl, cur []int64, data []byte, num string, got []int64, err error) {
	t.Helper()
	if s.Param && (num[0] == '-' || bytes.ContainsAny(data, " \t") || bytes.Count(data, []byte("\n")) > 1 ||
		bytes.IndexByte(data, '\n') >= 0 && data[len(data)-1] != '\n') {
		return // kstrtouint takes no sign, blank or second newline
	}
	v, perr := strconv.ParseInt(num, 10, 64)
	lo, hi := int64(math.MinInt32), int64(math.MaxInt32)
	switch {
	case s.Param:
		lo, hi = 0, math.MaxUint32
	case s.Ulong:
		lo, hi = 0, math.MaxInt64
	}
	if s.Ranged {
		lo, hi = max(lo, s.Min), min(hi, s.Max)
	}
	if s.StickyMax && cur[0] == s.Max {
		lo = s.Max
	}
	ok := perr == nil && v >= lo && v <= hi && !(s.Ulong && num == "-0")
	if ok != (err == nil) || ok && got[0] != v || ok && !slices.Equal(got[1:], cur[1:]) {
		t.Fatalf("%s %q: %v (%v), want %d accepted %v", s.Name, data, got, err, v, ok)
	}
}
