// Package lease hands out exclusive 65536-ID blocks of the sysvisor
// subordinate-ID pool, one per container, and keeps them on disk so a
// supervisor restart never hands a live container's IDs to another.
package lease

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/sysvisor/sysvisor/linux/statefile"
)

// Lease is one container's ID block.
type Lease struct {
	ID string `json:"id"`
	Range
	// RuncRoot and Bundle let a restarted supervisor tell whether the
	// container still exists when deciding to reclaim a lease.
	RuncRoot string    `json:"runcRoot,omitempty"`
	Bundle   string    `json:"bundle,omitempty"`
	Created  time.Time `json:"created"`
}

type fileFormat struct {
	Version int              `json:"version"`
	Pool    Range            `json:"pool"`
	Leases  map[string]Lease `json:"leases"`
}

// ErrExhausted means every block of the pool is leased.
var ErrExhausted = errors.New("ID pool exhausted")

// Store is the allocator. Leasing is rare (once per container create), so a
// single mutex is fine; nothing here is on the notify path.
type Store struct {
	mu     sync.Mutex
	path   string
	pool   Range
	leases map[string]Lease
	// reg, when set, makes leasing host-wide: see OpenShared.
	reg *Registry
}

// Open loads path (creating it when absent) for pool. A stored pool that
// differs from the configured one is kept for existing leases only if they
// still fit; otherwise Open fails rather than risk overlap.
func Open(path string, pool Range) (*Store, error) {
	if pool.Size < BlockSize {
		return nil, fmt.Errorf("ID pool %d+%d is smaller than one %d-ID block", pool.Start, pool.Size, BlockSize)
	}
	s := &Store{path: path, pool: pool, leases: map[string]Lease{}}
	data, err := os.ReadFile(path)
	switch {
	case os.IsNotExist(err):
		return s, s.saveLocked()
	case err != nil:
		return nil, fmt.Errorf("read leases %s: %w", path, err)
	}
	var f fileFormat
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse leases %s: %w", path, err)
	}
	if err := checkVersion(path, f.Version); err != nil {
		return nil, err
	}
	for id, l := range f.Leases {
		if !s.inPool(l.Range) {
			return nil, fmt.Errorf("leases %s: lease of %s (%d+%d) lies outside pool %d+%d", path, id, l.Start, l.Size, pool.Start, pool.Size)
		}
		l.ID = id
		s.leases[id] = l
	}
	return s, nil
}

// OpenShared is Open, with this store entered in the host-wide registry at
// regDir (DefaultRegistryDir): a block is leased only if no other member
// holds any of its IDs. conflicts lists this store's leases that overlap
// another member's already (leased before either knew of the other); they
// are kept, and the caller reports them.
func OpenShared(path string, pool Range, regDir string) (s *Store, conflicts []string, err error) {
	s, err = Open(path, pool)
	if err != nil {
		return nil, nil, err
	}
	s.reg, err = openRegistry(regDir, path)
	if err != nil {
		return nil, nil, err
	}
	err = s.reg.locked(func() error {
		if err := s.reg.join(); err != nil {
			return fmt.Errorf("ID registry %s: join: %w", regDir, err)
		}
		others, err := s.reg.others()
		if err != nil {
			return err
		}
		for path, ls := range others {
			for _, o := range ls {
				for _, l := range s.leases {
					if l.overlaps(o.Range) {
						conflicts = append(conflicts, fmt.Sprintf("%s (%d+%d) overlaps %s (%d+%d) of %s", l.ID, l.Start, l.Size, o.ID, o.Start, o.Size, path))
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(conflicts)
	return s, conflicts, nil
}

// Close takes the store out of the registry when it holds no lease; with
// leases it stays, so that no other instance takes their IDs while this
// one is stopped.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reg == nil || len(s.leases) > 0 {
		return nil
	}
	return s.reg.locked(s.reg.leave)
}

// FormatVersion is the version of leases.json this build writes; it reads
// every older one.
const FormatVersion = 1

func checkVersion(path string, v int) error {
	if v > FormatVersion {
		return fmt.Errorf("leases %s: format version %d, but this sysvisord reads versions up to %d: a newer sysvisord wrote it; run that one (nothing was changed)", path, v, FormatVersion)
	}
	return nil
}

// CheckFormat fails if the leases file at path has a newer format than
// this build reads; a missing file is fine. Run it before changing
// anything, so an older binary leaves a newer one's state alone.
func CheckFormat(path string) error {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read leases %s: %w", path, err)
	}
	var f struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("parse leases %s: %w", path, err)
	}
	return checkVersion(path, f.Version)
}

func (s *Store) inPool(r Range) bool {
	return r.Start >= s.pool.Start && r.End() <= s.pool.End()
}

// Acquire returns id's lease, allocating the lowest free block if id has none.
// Acquiring twice for one id returns the same block (a retried create).
func (s *Store) Acquire(id, runcRoot, bundle string) (Lease, error) {
	if id == "" {
		return Lease{}, errors.New("lease: empty container id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.leases[id]; ok {
		return l, nil
	}
	if s.reg == nil {
		return s.acquireLocked(id, runcRoot, bundle, nil)
	}
	// Read the others and write ours under one host-wide lock: another
	// instance leasing meanwhile would not see this block taken.
	var l Lease
	err := s.reg.locked(func() error {
		others, err := s.reg.others()
		if err != nil {
			return fmt.Errorf("lease for %s: %w", id, err)
		}
		l, err = s.acquireLocked(id, runcRoot, bundle, others)
		return err
	})
	return l, err
}

// acquireLocked leases the lowest block of the pool that neither this
// store nor any other member holds (s.mu held).
func (s *Store) acquireLocked(id, runcRoot, bundle string, others Others) (Lease, error) {
	used := make([]Range, 0, len(s.leases))
	for _, l := range s.leases {
		used = append(used, l.Range)
	}
	used = append(used, others.ranges()...)
	sort.Slice(used, func(i, j int) bool { return used[i].Start < used[j].Start })
	next := uint64(s.pool.Start)
	for _, r := range used {
		if uint64(r.Start) >= next+BlockSize {
			break
		}
		if r.End() > next {
			next = r.End()
		}
	}
	if next+BlockSize > s.pool.End() {
		return Lease{}, fmt.Errorf("lease for %s: %w: no free %d-ID block in the pool %d+%d (%d blocks; %d leased by this sysvisord, %d by other sysvisord instances on this host)",
			id, ErrExhausted, BlockSize, s.pool.Start, s.pool.Size, s.pool.Size/BlockSize, len(s.leases), others.count())
	}
	l := Lease{ID: id, Range: Range{Start: uint32(next), Size: BlockSize}, RuncRoot: runcRoot, Bundle: bundle, Created: time.Now().UTC()}
	s.leases[id] = l
	if err := s.saveLocked(); err != nil {
		delete(s.leases, id)
		return Lease{}, err
	}
	return l, nil
}

// Release frees id's lease. Releasing an unknown id is not an error: delete
// is retried by engines and must be idempotent.
func (s *Store) Release(id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[id]
	if !ok {
		return false, nil
	}
	delete(s.leases, id)
	if err := s.saveLocked(); err != nil {
		s.leases[id] = l
		return false, err
	}
	return true, nil
}

// Get returns id's lease.
func (s *Store) Get(id string) (Lease, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.leases[id]
	return l, ok
}

// List returns all leases ordered by base.
func (s *Store) List() []Lease {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Lease, 0, len(s.leases))
	for _, l := range s.leases {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

// Pool returns the configured pool.
func (s *Store) Pool() Range { return s.pool }

func (s *Store) saveLocked() error {
	b, err := json.MarshalIndent(fileFormat{Version: FormatVersion, Pool: s.pool, Leases: s.leases}, "", "  ")
	if err != nil {
		return err
	}
	// Atomic but not fsynced: leases must survive a sysvisord restart,
	// which keeps the page cache; after a machine crash every container is
	// gone too, and the collector frees their leases once runc's state
	// (on /run) is found missing. An fsync here cost each create ~2 ms.
	return statefile.Replace(s.path, b, 0o600)
}
