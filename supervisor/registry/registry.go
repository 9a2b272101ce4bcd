// Package registry keeps the supervisor's record of every container it
// serves, in memory for the notify path and on disk so that a restarted
// supervisor knows which containers, leases and start times exist.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sysvisor/sysvisor/linux/cgroup"
	"github.com/sysvisor/sysvisor/linux/statefile"
	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor/lease"
	"github.com/sysvisor/sysvisor/supervisor/procview"
)

// Status of a container as the supervisor sees it.
const (
	StatusCreated = "created" // leased, runtime has not handed a listener yet
	StatusRunning = "running" // init's listener is live
	StatusStopped = "stopped" // init's listener closed: every task is gone
)

// Format is the version of the record files this build writes; it reads
// every older one. 2: viewSlot (the shared views mount) and format.
const Format = 2

// Record is the persisted part of a container.
type Record struct {
	// Format is the record's format version (Format); 0 in records of
	// builds before versions were written, which are format 1.
	Format   int    `json:"format,omitempty"`
	ID       string `json:"id"`
	Bundle   string `json:"bundle"`
	RuncRoot string `json:"runcRoot,omitempty"`
	Policy   string `json:"policy"`
	// Rules are the policy's, as the runtime resolved them at create:
	// a container keeps the policy it started with.
	Rules []policy.Rule `json:"rules,omitempty"`
	// Limits is the policy's resource guard, nil for none.
	Limits  *policy.Limits `json:"limits,omitempty"`
	Lease   lease.Range    `json:"lease"`
	Status  string         `json:"status"`
	InitPid int            `json:"initPid,omitempty"`
	// InitStartNs is init's start on CLOCK_BOOTTIME, from /proc/<pid>/stat,
	// so uptime survives supervisor restarts.
	InitStartNs int64        `json:"initStartNs,omitempty"`
	Cgroups     cgroup.Paths `json:"cgroups,omitempty"`
	Created     time.Time    `json:"created"`
	// From the spec at create: what the runtime hides and makes read-only.
	MaskedPaths   []string `json:"maskedPaths,omitempty"`
	ReadonlyPaths []string `json:"readonlyPaths,omitempty"`
	// SysfsReadOnly: the container's /sys is mounted read-only.
	SysfsReadOnly bool `json:"sysfsReadOnly,omitempty"`
	// Protected holds the signatures of the runtime's mounts (taken when
	// init's listener arrives) and of masks sysvisord added since.
	Protected []string `json:"protected,omitempty"`
	// Views is the directory of the container's /proc and /sys views
	// (sysvisord's FUSE mount); empty when it has none.
	Views string `json:"views,omitempty"`
	// ViewSlot numbers the container's directory on the views mount: its
	// FUSE node ids derive from it, so it is never given twice (a new
	// sysvisord serving the same mount must answer the same node ids).
	ViewSlot uint64 `json:"viewSlot,omitempty"`
	// Sysctls are the values the container wrote to emulated sysctls
	// (path under /proc/sys → value as the file shows it); a sysctl it
	// never wrote reads as the host's.
	Sysctls map[string]string `json:"sysctls,omitempty"`
	// EngineRootfs and EnginePath are set once sysvisord serves the
	// container's overlay (EngineRootfs) to the engine at its rootfs path
	// (EnginePath). Nothing but sysvisord's FUSE server keeps that bind
	// alive: a restarted sysvisord finds the bind dead and must know
	// which tree to serve again, and where.
	EngineRootfs string `json:"engineRootfs,omitempty"`
	EnginePath   string `json:"enginePath,omitempty"`
	// Pod is the sandbox's id for an app container of a Kubernetes pod.
	// Its Lease is the sandbox's, which is leased under the sandbox's id
	// and released when the last container of the pod is gone.
	Pod string `json:"pod,omitempty"`
	// Sandbox: the container is a pod's sandbox, which app containers may
	// join (no other container's namespaces and IDs can be joined).
	Sandbox bool `json:"sandbox,omitempty"`
}

// Container is a live record plus counters. Handlers read it without locks:
// fields set at registration are published once via the atomic pointer.
type Container struct {
	rec      atomic.Pointer[Record]
	Notified atomic.Uint64
	// Listeners counts live seccomp listener loops (init plus execs).
	Listeners atomic.Int32
	reg       *Registry
	files     cgroup.Files // open cgroup files, for the notify path
	load      atomic.Pointer[procview.Load]
	// registered is closed once the record leaves StatusCreated: init's
	// listener was handed over and its setup done. The persisted status is
	// the truth; this only wakes waiters (see Registered).
	registered     chan struct{}
	registeredOnce sync.Once
}

func newContainer(r *Registry, rec *Record) *Container {
	c := &Container{reg: r, registered: make(chan struct{})}
	c.rec.Store(rec)
	c.noteStatus()
	return c
}

// noteStatus wakes Registered's waiters once the status says so.
func (c *Container) noteStatus() {
	if c.rec.Load().Status != StatusCreated {
		c.registeredOnce.Do(func() { close(c.registered) })
	}
}

// Registered is closed once the container's init has registered (its
// status left "created").
func (c *Container) Registered() <-chan struct{} { return c.registered }

// Load is the container's load average and task counts as last sampled
// (zero before the first sample).
func (c *Container) Load() procview.Load {
	if l := c.load.Load(); l != nil {
		return *l
	}
	return procview.Load{}
}

// SetLoad publishes a new sample.
func (c *Container) SetLoad(l procview.Load) { c.load.Store(&l) }

// LoadAvg implements handlers.Container.
func (c *Container) LoadAvg() [3]uint64 { return c.Load().Avg }

// CgroupFiles implements handlers.Container.
func (c *Container) CgroupFiles() cgroup.Source { return &c.files }

// Snapshot returns a copy of the record.
func (c *Container) Snapshot() Record { return *c.rec.Load() }

// ID implements handlers.Container.
func (c *Container) ID() string { return c.rec.Load().ID }

// InitStart implements handlers.Container.
func (c *Container) InitStart() time.Duration { return time.Duration(c.rec.Load().InitStartNs) }

// Cgroups implements handlers.Container.
func (c *Container) Cgroups() cgroup.Paths { return c.rec.Load().Cgroups }

// MaskedPaths implements handlers.Container.
func (c *Container) MaskedPaths() []string { return c.rec.Load().MaskedPaths }

// ReadonlyPaths implements handlers.Container.
func (c *Container) ReadonlyPaths() []string { return c.rec.Load().ReadonlyPaths }

// SysfsReadOnly implements handlers.Container.
func (c *Container) SysfsReadOnly() bool { return c.rec.Load().SysfsReadOnly }

// Views implements handlers.Container.
func (c *Container) Views() string { return c.rec.Load().Views }

// Sysctl returns the container's own value of an emulated sysctl.
func (c *Container) Sysctl(name string) (string, bool) {
	v, ok := c.rec.Load().Sysctls[name]
	return v, ok
}

// SetSysctl records the container's value of an emulated sysctl, on disk
// before it is visible: a restarted sysvisord serves the same values.
func (c *Container) SetSysctl(name, value string) error {
	if c.reg == nil {
		return fmt.Errorf("container %s is not registered", c.ID())
	}
	_, err := c.reg.Update(c.ID(), func(r *Record) {
		// A copy: readers of the previous record may hold its map.
		m := maps.Clone(r.Sysctls)
		if m == nil {
			m = map[string]string{}
		}
		m[name] = value
		r.Sysctls = m
	})
	return err
}

// InitPid is the container's init in sysvisord's pid namespace, 0 before
// it registered.
func (c *Container) InitPid() int { return c.rec.Load().InitPid }

// RootIDs returns the host uid and gid of the container's root: the start
// of its lease, the same block for both.
func (c *Container) RootIDs() (uint32, uint32) {
	l := c.rec.Load().Lease
	return l.Start, l.Start
}

// IDs returns the container's host ID range: root's uid (and gid) and the
// count. Every process of the container runs as a host uid in it.
func (c *Container) IDs() (base, size uint32) {
	l := c.rec.Load().Lease
	return l.Start, l.Size
}

// Protected implements handlers.Container. A linear scan: mount calls are
// rare and the set holds a few dozen entries.
func (c *Container) Protected(sig string) bool {
	for _, p := range c.rec.Load().Protected {
		if p == sig {
			return true
		}
	}
	return false
}

// ProtectedSigs implements handlers.Container. Updates replace the slice,
// never change one a reader holds.
func (c *Container) ProtectedSigs() []string { return c.rec.Load().Protected }

// Protect implements handlers.Container.
func (c *Container) Protect(sigs []string) error {
	if c.reg == nil {
		return fmt.Errorf("container %s is not registered", c.ID())
	}
	// Most calls add nothing new (every emulated procfs brings the same
	// masks): no record rewrite, no fsync, no registry lock then.
	fresh := false
	for _, s := range sigs {
		if !c.Protected(s) {
			fresh = true
			break
		}
	}
	if !fresh {
		return nil
	}
	_, err := c.reg.Update(c.ID(), func(r *Record) {
		for _, s := range sigs {
			if !slices.Contains(r.Protected, s) {
				r.Protected = append(r.Protected, s)
			}
		}
	})
	return err
}

// PruneProtected drops the signatures stale reports (see
// handlers.StaleSignature) and returns how many it dropped. seen is the
// cheap first look (it may answer from a cache); the signatures are judged
// again by stale, fresh, under the registry's lock, where Protect adds: a
// superblock that reuses a dead one's number exists before its mount is
// recorded, so its signature is judged alive then and kept. The slice is
// built anew: the notify path reads the old one without a lock.
func (c *Container) PruneProtected(seen, stale func(sig string) bool) (int, error) {
	if c.reg == nil {
		return 0, fmt.Errorf("container %s is not registered", c.ID())
	}
	found := false
	for _, p := range c.rec.Load().Protected {
		if seen(p) {
			found = true
			break
		}
	}
	if !found {
		return 0, nil
	}
	dropped := 0
	_, err := c.reg.Update(c.ID(), func(r *Record) {
		kept := make([]string, 0, len(r.Protected))
		for _, p := range r.Protected {
			if stale(p) {
				dropped++
				continue
			}
			kept = append(kept, p)
		}
		r.Protected = kept
	})
	if err != nil {
		return 0, err
	}
	return dropped, nil
}

// Registry is the set of containers. Its lock guards the map only; the
// notify path holds a *Container and never takes it.
type Registry struct {
	dir string
	mu  sync.RWMutex
	m   map[string]*Container
}

// Open loads every record under dir.
func Open(dir string) (*Registry, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	r := &Registry{dir: dir, m: map[string]*Container{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", p, err)
		}
		var rec Record
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("parse %s: %w", p, err)
		}
		if rec.Format > Format {
			return nil, fmt.Errorf("container record %s: format version %d, but this sysvisord reads versions up to %d: a newer sysvisord wrote it; run that one (nothing was changed)", p, rec.Format, Format)
		}
		r.m[rec.ID] = newContainer(r, &rec)
	}
	return r, nil
}

// ValidID rejects ids that could escape the state directory.
func ValidID(id string) error {
	if id == "" || len(id) > 250 || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return fmt.Errorf("invalid container id %q", id)
	}
	return nil
}

// ErrNotFound means no such container.
var ErrNotFound = errors.New("container not found")

// Add records a new container, or returns the existing one for a retried create.
func (r *Registry) Add(rec Record) (*Container, error) {
	if err := ValidID(rec.ID); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.m[rec.ID]; ok {
		return c, nil
	}
	c := newContainer(r, &rec)
	if err := r.save(&rec); err != nil {
		return nil, err
	}
	r.m[rec.ID] = c
	return c, nil
}

// Update applies fn to a copy of id's record, persists it, then publishes it.
func (r *Registry) Update(id string, fn func(*Record)) (*Container, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.m[id]
	if !ok {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	rec := c.Snapshot()
	fn(&rec)
	if err := r.save(&rec); err != nil {
		return nil, err
	}
	c.rec.Store(&rec)
	c.noteStatus()
	return c, nil
}

// Get returns id's container.
func (r *Registry) Get(id string) (*Container, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.m[id]
	return c, ok
}

// Remove forgets id and deletes its record.
func (r *Registry) Remove(id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.m[id]; ok {
		c.files.Close()
	}
	delete(r.m, id)
	if err := os.Remove(r.path(id)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove record of %s: %w", id, err)
	}
	return nil
}

// List returns all containers ordered by creation.
func (r *Registry) List() []*Container {
	r.mu.RLock()
	out := make([]*Container, 0, len(r.m))
	for _, c := range r.m {
		out = append(out, c)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Snapshot(), out[j].Snapshot()
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.ID < b.ID
	})
	return out
}

func (r *Registry) path(id string) string { return filepath.Join(r.dir, id+".json") }

func (r *Registry) save(rec *Record) error {
	rec.Format = Format
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	// Atomic, not fsynced: see lease.Store.saveLocked.
	return statefile.Replace(r.path(rec.ID), b, 0o600)
}
