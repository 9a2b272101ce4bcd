// Package stats counts what sysvisord answers, per syscall and policy
// action: how many notifications, how they were decided, and how long the
// supervisor took (an HDR-style histogram with logarithmic buckets). The
// notify path writes only to its listener's own Shard, with atomic adds and
// no lock; readers merge every shard when asked (sysvisorctl stats,
// Prometheus scrapes).
package stats

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// subBits is log2 of the buckets per power of two: 8 buckets per octave, so
// a bucket is at most 12.5% of its lower bound wide and a quantile reported
// at the bucket's midpoint is within 6.25% of the true value. Finer buckets
// cost memory per listener for precision nobody reads off a latency.
const subBits = 3

const (
	subCount = 1 << subBits
	// maxExp is the highest power of two tracked: 2^40 ns is about 18
	// minutes; anything longer lands in the last bucket.
	maxExp = 40
	// Buckets: values below subCount have one bucket each, then subCount
	// per octave from 2^subBits up to 2^maxExp.
	Buckets = (maxExp-subBits+1)*subCount + subCount
)

// bucket returns the index of v (nanoseconds).
func bucket(v uint64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(v) - 1 // v is in [2^e, 2^(e+1))
	if e > maxExp {
		return Buckets - 1
	}
	sub := int(v>>(e-subBits)) & (subCount - 1)
	return (e-subBits+1)*subCount + sub
}

// bounds returns bucket i's lowest value and its width.
func bounds(i int) (low, width uint64) {
	if i < subCount {
		return uint64(i), 1
	}
	e := i/subCount + subBits - 1
	sub := uint64(i % subCount)
	width = 1 << (e - subBits)
	return (subCount + sub) * width, width
}

// Histogram is a latency histogram written by one goroutine and read by
// any: every field is an atomic, so a reader never sees a torn count.
type Histogram struct {
	counts [Buckets]atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
	max    atomic.Uint64
}

// Record adds one observation. Only the owning goroutine may call it (max
// is a plain load and store).
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucket(v)].Add(1)
	h.sum.Add(v)
	if v > h.max.Load() {
		h.max.Store(v)
	}
}

// Snapshot is a merged, plain copy of histograms.
type Snapshot struct {
	Counts [Buckets]uint64
	Count  uint64
	SumNs  uint64
	MaxNs  uint64
}

// AddTo merges h into s.
func (h *Histogram) AddTo(s *Snapshot) {
	for i := range h.counts {
		c := h.counts[i].Load()
		s.Counts[i] += c
		s.Count += c
	}
	s.SumNs += h.sum.Load()
	s.MaxNs = max(s.MaxNs, h.max.Load())
}

// Merge adds o into s.
func (s *Snapshot) Merge(o *Snapshot) {
	for i := range o.Counts {
		s.Counts[i] += o.Counts[i]
	}
	s.Count += o.Count
	s.SumNs += o.SumNs
	s.MaxNs = max(s.MaxNs, o.MaxNs)
}

// Quantile returns the value below which a fraction q of the observations
// fall: the midpoint of the bucket holding that rank, never above the
// largest observation. 0 when empty.
func (s *Snapshot) Quantile(q float64) time.Duration {
	if s.Count == 0 {
		return 0
	}
	rank := uint64(q * float64(s.Count))
	if float64(rank) < q*float64(s.Count) || rank == 0 {
		rank++ // ceil, and at least the first observation
	}
	if rank >= s.Count {
		return time.Duration(s.MaxNs) // the largest one is known exactly
	}
	var seen uint64
	for i, c := range s.Counts {
		seen += c
		if seen >= rank {
			low, width := bounds(i)
			return time.Duration(min(low+width/2, s.MaxNs))
		}
	}
	return time.Duration(s.MaxNs)
}

// CountBelow returns how many observations are below limit ns. Exact when
// limit is a bucket boundary (every power of two from 2^subBits is).
func (s *Snapshot) CountBelow(limit uint64) uint64 {
	var n uint64
	for i, c := range s.Counts {
		if low, width := bounds(i); low+width > limit {
			break
		}
		n += c
	}
	return n
}
