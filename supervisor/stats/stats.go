package stats

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sysvisor/sysvisor/handlers/catalog"
)

// Actions, in the order of Key's action index. "" is a notification that no
// rule answered (a compat-ABI caller, a syscall without a rule).
var actions = []string{"emulate", "allow", "deny", "log", ""}

// Other is the syscall name of notifications outside the catalog's
// native syscalls.
const Other = "other"

// Key names a (syscall, action) series; computed once per rule, not per
// notification.
type Key int

var numKeys = (len(catalog.Syscalls) + 1) * len(actions)

// KeyOf returns the key of a syscall (catalog name, else Other) and a
// policy action ("" for none).
func KeyOf(syscall, action string) Key {
	si := len(catalog.Syscalls)
	for i, s := range catalog.Syscalls {
		if s.Name == syscall {
			si = i
		}
	}
	ai := len(actions) - 1
	for i, a := range actions {
		if a == action {
			ai = i
		}
	}
	return Key(si*len(actions) + ai)
}

func (k Key) names() (syscall, action string) {
	si, ai := int(k)/len(actions), int(k)%len(actions)
	if si < len(catalog.Syscalls) {
		syscall = catalog.Syscalls[si].Name
	} else {
		syscall = Other
	}
	return syscall, actions[ai]
}

// Decision is how a notification was answered.
type Decision int

// Decisions.
const (
	Continue Decision = iota // the kernel ran the call
	Return                   // a value computed by sysvisord
	Errno                    // an error (a deny, or an emulation's failure)
	Gone                     // the caller left before the answer reached it
	Limited                  // answered EAGAIN by the policy's rate guard
	numDecisions
)

var decisionNames = [numDecisions]string{"continue", "return", "errno", "gone", "limited"}

func (d Decision) String() string { return decisionNames[d] }

// series is one (syscall, action) of one shard.
type series struct {
	decisions [numDecisions]atomic.Uint64
	latency   Histogram
}

// Shard is one listener's statistics. One goroutine (the listener's loop)
// writes it; any may read it.
type Shard struct {
	container string
	series    []atomic.Pointer[series] // by Key; allocated on first use
	forgotten bool                     // under Set.mu: its container was deleted
}

// Observe records one answered notification. Only the shard's owner may
// call it: it allocates a series on first use without a lock.
func (sh *Shard) Observe(k Key, d Decision, latency time.Duration) {
	p := &sh.series[k]
	s := p.Load()
	if s == nil {
		// Most listeners see two or three of the keys: a histogram for
		// every key of every listener would cost ~100 KiB each.
		s = &series{}
		p.Store(s)
	}
	s.decisions[d].Add(1)
	s.latency.Record(latency)
}

// Row is the merged statistics of one (syscall, action).
type Row struct {
	Syscall string `json:"syscall"`
	Action  string `json:"action,omitempty"`
	Count   uint64 `json:"count"`
	// By decision.
	Continue uint64 `json:"continue"`
	Return   uint64 `json:"return"`
	Errno    uint64 `json:"errno"`
	Gone     uint64 `json:"gone"`
	Limited  uint64 `json:"limited,omitempty"`
	// Latency from the notification's receipt to the answer's delivery.
	P50Ns  int64 `json:"p50Ns"`
	P90Ns  int64 `json:"p90Ns"`
	P99Ns  int64 `json:"p99Ns"`
	MaxNs  int64 `json:"maxNs"`
	MeanNs int64 `json:"meanNs"`
	// Latency is the merged histogram (metrics); not sent to sysvisorctl.
	Latency *Snapshot `json:"-"`
}

// table is a merged set of series.
type table map[Key]*acc

type acc struct {
	decisions [numDecisions]uint64
	latency   Snapshot
}

func (t table) add(sh *Shard) {
	for k := range sh.series {
		s := sh.series[k].Load()
		if s == nil {
			continue
		}
		a := t[Key(k)]
		if a == nil {
			a = &acc{}
			t[Key(k)] = a
		}
		for d := range s.decisions {
			a.decisions[d] += s.decisions[d].Load()
		}
		s.latency.AddTo(&a.latency)
	}
}

func (t table) merge(o table) {
	for k, oa := range o {
		a := t[k]
		if a == nil {
			a = &acc{}
			t[k] = a
		}
		for d := range oa.decisions {
			a.decisions[d] += oa.decisions[d]
		}
		a.latency.Merge(&oa.latency)
	}
}

func (t table) rows() []Row {
	out := make([]Row, 0, len(t))
	for k, a := range t {
		sc, ac := k.names()
		lat := a.latency
		r := Row{Syscall: sc, Action: ac, Count: lat.Count,
			Continue: a.decisions[Continue], Return: a.decisions[Return], Errno: a.decisions[Errno],
			Gone: a.decisions[Gone], Limited: a.decisions[Limited],
			P50Ns: int64(lat.Quantile(0.5)), P90Ns: int64(lat.Quantile(0.9)), P99Ns: int64(lat.Quantile(0.99)),
			MaxNs: int64(lat.MaxNs), Latency: &lat}
		if lat.Count > 0 {
			r.MeanNs = int64(lat.SumNs / lat.Count)
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Syscall != out[j].Syscall {
			return out[i].Syscall < out[j].Syscall
		}
		return out[i].Action < out[j].Action
	})
	return out
}

// Set is a supervisor's statistics: the live listeners' shards, and what
// ended listeners counted, so totals never go backwards (Prometheus
// counters must not). Its mutex is taken when a listener starts or ends and
// when someone reads, never on the notify path.
type Set struct {
	mu        sync.Mutex
	live      map[*Shard]struct{}
	retired   table            // every ended listener
	byRetired map[string]table // ended listeners of containers still known
}

// NewSet returns an empty set.
func NewSet() *Set {
	return &Set{live: map[*Shard]struct{}{}, retired: table{}, byRetired: map[string]table{}}
}

// NewShard starts the statistics of one listener of container.
func (s *Set) NewShard(container string) *Shard {
	sh := &Shard{container: container, series: make([]atomic.Pointer[series], numKeys)}
	s.mu.Lock()
	s.live[sh] = struct{}{}
	s.mu.Unlock()
	return sh
}

// Retire folds an ended listener's shard into the totals. Its owner must
// have stopped writing.
func (s *Set) Retire(sh *Shard) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.live[sh]; !ok {
		return
	}
	delete(s.live, sh)
	s.retired.add(sh)
	if sh.forgotten {
		return
	}
	t := s.byRetired[sh.container]
	if t == nil {
		t = table{}
		s.byRetired[sh.container] = t
	}
	t.add(sh)
}

// Forget drops a deleted container's per-container totals (the overall
// totals keep them).
func (s *Set) Forget(container string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byRetired, container)
	// Its listeners may still be ending: they retire into the totals only.
	for sh := range s.live {
		if sh.container == container {
			sh.forgotten = true
		}
	}
}

// Rows merges every shard: of one container, or of all when container is
// "" (ended listeners of deleted containers included).
func (s *Set) Rows(container string) []Row {
	t := table{}
	s.mu.Lock()
	if container == "" {
		t.merge(s.retired)
	} else if r := s.byRetired[container]; r != nil {
		t.merge(r)
	}
	for sh := range s.live {
		if container == "" || sh.container == container {
			t.add(sh)
		}
	}
	s.mu.Unlock()
	return t.rows()
}
