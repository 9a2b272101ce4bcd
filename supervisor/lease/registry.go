package lease

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/statefile"
)

// DefaultRegistryDir is where every sysvisord on a host finds the others.
// Host IDs are host-wide, so this path is too: two instances with their own
// state dirs and subuid files (an installed one and a test run, two test
// runs) must still never lease the same IDs. It is on /run: after a reboot
// no container runs, and an instance registers again when it starts.
const DefaultRegistryDir = "/run/sysvisor-idpool"

// Registry is the host-wide list of leases files: each sysvisord enters the
// path of its own, and leases a block only while holding the registry's
// lock, after reading every other member's file. No lease is copied: each
// file stays the one truth of its instance's leases.
type Registry struct {
	dir  string
	self string // this instance's leases file, absolute
}

// Others is what the other members hold, by leases file.
type Others map[string][]Lease

// ranges returns the others' blocks.
func (o Others) ranges() []Range {
	var out []Range
	for _, ls := range o {
		for _, l := range ls {
			out = append(out, l.Range)
		}
	}
	return out
}

// count is the number of the others' leases.
func (o Others) count() int {
	n := 0
	for _, ls := range o {
		n += len(ls)
	}
	return n
}

func openRegistry(dir, self string) (*Registry, error) {
	abs, err := filepath.Abs(self)
	if err != nil {
		return nil, fmt.Errorf("leases path %s: %w", self, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "members"), 0o700); err != nil {
		return nil, fmt.Errorf("ID registry %s: %w", dir, err)
	}
	return &Registry{dir: dir, self: abs}, nil
}

// memberPath is the entry naming leases file path: a hash, so that any
// path fits in one file name.
func (r *Registry) memberPath(path string) string {
	h := sha256.Sum256([]byte(path))
	return filepath.Join(r.dir, "members", hex.EncodeToString(h[:12]))
}

// locked runs fn holding the registry's lock, exclusive across every
// process on the host.
func (r *Registry) locked(fn func() error) error {
	lockPath := filepath.Join(r.dir, "lock")
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("ID registry lock %s: %w", lockPath, err)
	}
	defer f.Close()
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("ID registry lock %s: %w", lockPath, err)
	}
	// Closing the file releases the lock.
	return fn()
}

// join enters this instance (lock held).
func (r *Registry) join() error {
	return statefile.Replace(r.memberPath(r.self), []byte(r.self+"\n"), 0o600)
}

// leave takes this instance out (lock held); it is done only when it holds
// no lease, so its file has nothing the others must avoid.
func (r *Registry) leave() error {
	if err := os.Remove(r.memberPath(r.self)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("ID registry: leave: %w", err)
	}
	return nil
}

// others reads every other member's leases (lock held). A member whose
// file is gone (its state dir was removed) is dropped from the registry. A
// file that exists but cannot be read fails the call: its IDs are unknown,
// so no block can be said to be free.
func (r *Registry) others() (Others, error) {
	dir := filepath.Join(r.dir, "members")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("ID registry %s: %w", dir, err)
	}
	out := Others{}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue // statefile's temporary files
		}
		mp := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(mp)
		if err != nil {
			return nil, fmt.Errorf("ID registry member %s: %w", mp, err)
		}
		path := strings.TrimSpace(string(b))
		if path == r.self {
			continue
		}
		if !filepath.IsAbs(path) || mp != r.memberPath(path) {
			return nil, fmt.Errorf("ID registry member %s: names %q, not a leases file of its own name; remove it if no sysvisord uses that file", mp, path)
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			os.Remove(mp)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("leases of another sysvisord, %s: %w", path, err)
		}
		var f fileFormat
		if err := json.Unmarshal(data, &f); err != nil {
			return nil, fmt.Errorf("leases of another sysvisord, %s: %w", path, err)
		}
		ls := make([]Lease, 0, len(f.Leases))
		for id, l := range f.Leases {
			l.ID = id
			ls = append(ls, l)
		}
		sort.Slice(ls, func(i, j int) bool { return ls[i].Start < ls[j].Start })
		out[path] = ls
	}
	return out, nil
}
