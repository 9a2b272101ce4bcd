package trace

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// memBase is where the fuzzed bytes sit in the fake caller's address space.
const memBase = 0x7f0000001000

// cMemory is a caller's address space holding one mapping, read the way
// handlers.Request.ReadString reads /proc/<pid>/mem: a NUL-terminated
// string of at most max bytes, ENAMETOOLONG beyond, EFAULT for memory
// that is not mapped, including a string that runs off its mapping.
type cMemory struct {
	b     []byte
	calls []uint64
	maxes []int
}

func (m *cMemory) ReadString(addr uint64, max int) (string, error) {
	m.calls = append(m.calls, addr)
	m.maxes = append(m.maxes, max)
	if addr < memBase || addr-memBase >= uint64(len(m.b)) {
		return "", unix.EFAULT
	}
	rest := m.b[addr-memBase:]
	for i, c := range rest {
		if i > max {
			return "", unix.ENAMETOOLONG
		}
		if c == 0 {
			return string(rest[:i]), nil
		}
	}
	if len(rest) > max {
		return "", unix.ENAMETOOLONG
	}
	return "", unix.EFAULT
}

// FuzzDecode renders arbitrary arguments of any syscall, its string
// arguments read from arbitrary caller memory (ptrs: which arguments point
// into it). Decode never panics, is deterministic, asks the memory for at
// most maxString bytes whatever the arguments say, never shows part of a
// string (one too long or cut by unmapped memory shows as its address and
// the error), and its output is bounded. Seeds: below and
// testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	names := make([]string, 0, len(layouts))
	for n := range layouts {
		names = append(names, n)
	}
	sort.Strings(names)
	mem := []byte("tmpfs\x00/mnt/t\x00size=1m\x00" + strings.Repeat("x", 300) + "\x00\xff\xfe\"\\\x00")
	for _, n := range names {
		f.Add(n, uint64(0), uint64(6), uint64(unix.MS_NOSUID|unix.MS_BIND), uint64(13), uint64(1<<63), uint64(0xffffffff), mem, uint8(0x3f), false)
	}
	f.Add("mount", uint64(0), uint64(0), uint64(0), uint64(0xc0ed0000|unix.MS_REMOUNT), uint64(21), uint64(0), mem, uint8(0x17), false)
	f.Add("mount", uint64(1), uint64(6), uint64(0), uint64(0), uint64(0), uint64(0), []byte("abc"), uint8(0x1f), false)
	f.Add("mknodat", uint64(0xffffff9c), uint64(6), uint64(unix.S_IFCHR|0o7777), uint64(unix.Mkdev(4095, 1<<20-1)), uint64(0), uint64(0), mem, uint8(0x02), false)
	f.Add("seccomp", uint64(unix.SECCOMP_GET_NOTIF_SIZES), uint64(1), uint64(2), uint64(3), uint64(4), uint64(5), []byte{}, uint8(0), false)
	f.Add("chown", uint64(1), uint64(2), uint64(3), uint64(4), uint64(5), uint64(6), mem, uint8(0x3f), false)
	f.Add("umount2", uint64(memBase), uint64(0xffffffffffffffff), uint64(0), uint64(0), uint64(0), uint64(0), mem, uint8(0), true)

	f.Fuzz(func(t *testing.T, syscall string, a0, a1, a2, a3, a4, a5 uint64, b []byte, ptrs uint8, noMem bool) {
		args := [6]uint64{a0, a1, a2, a3, a4, a5}
		for i := range args {
			// Pointers into the mapping and just past it, so that
			// strings are found, cut and missed.
			if ptrs&(1<<i) != 0 {
				args[i] = memBase + args[i]%uint64(len(b)+16)
			}
		}
		m := &cMemory{b: b}
		var mem Memory = m
		if noMem {
			mem = nil
		}
		got := Decode(syscall, args, mem)
		if again := Decode(syscall, args, &cMemory{b: b}); !noMem && again != got {
			t.Fatalf("not deterministic:\n %s\n %s", got, again)
		}
		for _, max := range m.maxes {
			if max != maxString {
				t.Fatalf("asked the caller's memory for %d bytes, not %d", max, maxString)
			}
		}
		l, known := layouts[syscall]
		if !known {
			if want := fmt.Sprintf("%#x, %#x, %#x, %#x, %#x, %#x", args[0], args[1], args[2], args[3], args[4], args[5]); got != want {
				t.Fatalf("unknown syscall %q: %s, want %s", syscall, got, want)
			}
			if len(m.calls) != 0 {
				t.Fatalf("unknown syscall %q: read memory at %#x", syscall, m.calls)
			}
			return
		}
		// Each argument in order, strings exactly as readString must show
		// them; the rest of the output is the other arguments.
		rest := got
		reads := 0
		for i, a := range l {
			prefix := a.name + "="
			if i > 0 {
				prefix = ", " + prefix
			}
			if !strings.HasPrefix(rest, prefix) {
				t.Fatalf("%s: argument %d (%s) missing at %q in %s", syscall, i, a.name, rest, got)
			}
			rest = rest[len(prefix):]
			if a.kind == str {
				want := wantString(args[i], mem, b)
				if args[i] != 0 && !noMem {
					if reads >= len(m.calls) || m.calls[reads] != args[i] {
						t.Fatalf("%s: %s at %#x not read from memory (reads %#x)", syscall, a.name, args[i], m.calls)
					}
					reads++
				}
				if !strings.HasPrefix(rest, want) {
					t.Fatalf("%s: %s shown as %q, want %q", syscall, a.name, rest, want)
				}
				rest = rest[len(want):]
				continue
			}
			// A non-string argument runs up to the next argument.
			if end := strings.Index(rest, ", "); end >= 0 && i < len(l)-1 {
				rest = rest[end:]
			} else if i == len(l)-1 {
				if strings.Contains(rest, ", ") || rest == "" {
					t.Fatalf("%s: last argument %s shown as %q", syscall, a.name, rest)
				}
				rest = ""
			}
		}
		if rest != "" {
			t.Fatalf("%s: trailing %q in %s", syscall, rest, got)
		}
		if reads != len(m.calls) {
			t.Fatalf("%s: %d memory reads for %d string arguments", syscall, len(m.calls), reads)
		}
		// A quoted string is at most 4 bytes per byte read (\xff), plus
		// the quotes; every other argument is well under 512 bytes.
		if bound := len(l) * (len("from_path=") + 2 + 4*maxString + 512); len(got) > bound {
			t.Fatalf("%s: %d bytes of output, more than %d", syscall, len(got), bound)
		}
	})
}

// wantString is how a string argument at addr must be shown.
func wantString(addr uint64, mem Memory, b []byte) string {
	switch {
	case addr == 0:
		return "NULL"
	case mem == nil:
		return fmt.Sprintf("%#x", addr)
	}
	s, err := (&cMemory{b: b}).ReadString(addr, maxString)
	switch {
	case err == unix.ENAMETOOLONG:
		return fmt.Sprintf("%#x (longer than %d bytes)", addr, maxString)
	case err != nil:
		return fmt.Sprintf("%#x (%v)", addr, err)
	}
	return strconv.Quote(s)
}
