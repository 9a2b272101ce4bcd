// Package mountinfo parses /proc/<pid>/mountinfo (proc(5)).
package mountinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Entry is one mount.
type Entry struct {
	ID, Parent   int
	Major, Minor uint32
	// Root is the mount's root within its filesystem; Mountpoint is relative
	// to the reader's root. Both are unescaped.
	Root, Mountpoint string
	// Opts are the per-mount options (ro, nosuid, ...).
	Opts string
	// FSType and Source are unescaped too: a container chooses its
	// sources and FUSE subtypes, spaces included.
	FSType string
	Source string
	// Super are the superblock options, as the kernel wrote them.
	Super string
}

// ReadOnly reports whether the mount itself is read-only.
func (e *Entry) ReadOnly() bool { return e.HasOpt("ro") }

// HasOpt reports whether the per-mount options include o (nosuid, ...).
func (e *Entry) HasOpt(o string) bool {
	for _, x := range strings.Split(e.Opts, ",") {
		if x == o {
			return true
		}
	}
	return false
}

// Read parses the mountinfo file at path.
func Read(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Parse reads mountinfo text. Malformed lines are an error: callers make
// security decisions on this list and must not see half of it.
func Parse(r io.Reader) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	sc.Split(scanLines)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		e, err := parseLine(line)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return out, nil
}

// scanLines splits at '\n' only: bufio.ScanLines also drops a '\r' before
// it, which the kernel does not escape and which may end a field.
func scanLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

func parseLine(line string) (Entry, error) {
	// Fields are separated by exactly one space: the kernel escapes only
	// space, tab, newline and backslash in them, so any other blank
	// (\r, \v, U+0085, ...) in a path the container chose is part of
	// the field, and an empty source shows as an empty field.
	f := strings.Split(line, " ")
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(f) < sep+3 {
		return Entry{}, fmt.Errorf("malformed %q", line)
	}
	var e Entry
	// Ids are unsigned decimals: Table keys its maps by them as uint64.
	id, err := strconv.ParseUint(f[0], 10, 63)
	if err != nil {
		return e, fmt.Errorf("mount id %q", f[0])
	}
	parent, err := strconv.ParseUint(f[1], 10, 63)
	if err != nil {
		return e, fmt.Errorf("parent id %q", f[1])
	}
	e.ID, e.Parent = int(id), int(parent)
	maj, min, ok := strings.Cut(f[2], ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return e, fmt.Errorf("device %q", f[2])
	}
	e.Major, e.Minor = uint32(ma), uint32(mi)
	e.Root, e.Mountpoint, e.Opts = Unescape(f[3]), Unescape(f[4]), f[5]
	e.FSType, e.Source = Unescape(f[sep+1]), Unescape(f[sep+2])
	if len(f) > sep+3 {
		e.Super = f[sep+3]
	}
	return e, nil
}

// Unescape decodes the octal escapes (\040 and the like) the kernel uses for
// space, tab, newline and backslash (in the source and type too, where the
// kernel's mangle() writes them).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
