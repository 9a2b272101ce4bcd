package lease

import (
	"bufio"
	"bytes"
	"fmt"
	"github.com/sysvisor/sysvisor/linux/statefile"
	"os"
	"strconv"
	"strings"
)

// Range is a span of host IDs [Start, Start+Size).
type Range struct {
	Start uint32 `json:"start"`
	Size  uint32 `json:"size"`
}

// End is one past the last ID.
func (r Range) End() uint64 { return uint64(r.Start) + uint64(r.Size) }

func (r Range) overlaps(o Range) bool {
	return uint64(r.Start) < o.End() && uint64(o.Start) < r.End()
}

// SubIDEntry is one line of /etc/subuid or /etc/subgid.
type SubIDEntry struct {
	Owner string
	Range
	Line int
}

// ParseSubID parses the shadow-utils subordinate ID format "owner:start:count".
// Comments and blank lines are skipped; any other malformed line is an error
// naming the file and line, because guessing could hand out IDs twice.
func ParseSubID(name string, data []byte) ([]SubIDEntry, error) {
	var out []SubIDEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for ln := 1; sc.Scan(); ln++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) != 3 || f[0] == "" {
			return nil, fmt.Errorf("%s:%d: want owner:start:count, got %q", name, ln, line)
		}
		start, err := strconv.ParseUint(f[1], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: start %q: %w", name, ln, f[1], err)
		}
		count, err := strconv.ParseUint(f[2], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: count %q: %w", name, ln, f[2], err)
		}
		if start+count > 1<<32 {
			return nil, fmt.Errorf("%s:%d: range %d+%d exceeds 32-bit IDs", name, ln, start, count)
		}
		out = append(out, SubIDEntry{Owner: f[0], Range: Range{Start: uint32(start), Size: uint32(count)}, Line: ln})
	}
	return out, sc.Err()
}

// Owner is the subordinate-ID owner name sysvisor's pool is registered under.
const Owner = "sysvisor"

// Defaults for a pool sysvisor creates itself.
const (
	BlockSize   = 65536
	MinStart    = 100000
	DefaultSize = BlockSize * 4096
)

// EnsurePool returns the "sysvisor" range, identical in subuid and subgid
// files, creating it (appended to both files) when absent. A new range starts
// on a block boundary above every existing entry in either file, so it clashes
// with no user's or engine's subordinate IDs.
func EnsurePool(subuidPath, subgidPath string) (Range, error) {
	read := func(p string) ([]SubIDEntry, []byte, error) {
		data, err := os.ReadFile(p)
		if err != nil && !os.IsNotExist(err) {
			return nil, nil, fmt.Errorf("read %s: %w", p, err)
		}
		e, err := ParseSubID(p, data)
		return e, data, err
	}
	ue, udata, err := read(subuidPath)
	if err != nil {
		return Range{}, err
	}
	ge, gdata, err := read(subgidPath)
	if err != nil {
		return Range{}, err
	}
	ur, uok := find(ue)
	gr, gok := find(ge)
	switch {
	case uok && gok:
		if ur != gr {
			return Range{}, fmt.Errorf("%s and %s disagree on the %s range (%d+%d vs %d+%d): they must be equal", subuidPath, subgidPath, Owner, ur.Start, ur.Size, gr.Start, gr.Size)
		}
		if ur.Size < BlockSize {
			return Range{}, fmt.Errorf("%s: %s range has %d IDs, need at least %d", subuidPath, Owner, ur.Size, BlockSize)
		}
		return ur, nil
	case uok != gok:
		return Range{}, fmt.Errorf("%s range present in only one of %s and %s: fix by hand, sysvisor will not guess", Owner, subuidPath, subgidPath)
	}
	r, err := freeRange(append(ue, ge...), DefaultSize)
	if err != nil {
		return Range{}, err
	}
	line := fmt.Sprintf("%s:%d:%d\n", Owner, r.Start, r.Size)
	if err := appendLine(subuidPath, udata, line); err != nil {
		return Range{}, err
	}
	if err := appendLine(subgidPath, gdata, line); err != nil {
		return Range{}, err
	}
	return r, nil
}

func find(es []SubIDEntry) (Range, bool) {
	for _, e := range es {
		if e.Owner == Owner {
			return e.Range, true
		}
	}
	return Range{}, false
}

func freeRange(existing []SubIDEntry, size uint32) (Range, error) {
	start := uint64(MinStart)
	for _, e := range existing {
		if e.End() > start {
			start = e.End()
		}
	}
	start = (start + BlockSize - 1) / BlockSize * BlockSize
	if start+uint64(size) > 1<<32-1 {
		return Range{}, fmt.Errorf("no room for %d subordinate IDs above %d", size, start)
	}
	return Range{Start: uint32(start), Size: size}, nil
}

func appendLine(path string, old []byte, line string) error {
	var b bytes.Buffer
	b.Write(old)
	if len(old) > 0 && old[len(old)-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteString(line)
	return statefile.WriteAtomic(path, b.Bytes(), 0o644)
}
