package stats

import (
	"math"
	"math/rand"
	"sort"
	"testing"
	"time"
)

// Every value falls in the bucket whose bounds hold it, buckets tile the
// range without gaps, and the index is monotonic.
func TestBuckets(t *testing.T) {
	prevLow, prevWidth := uint64(0), uint64(0)
	for i := 0; i < Buckets; i++ {
		low, width := bounds(i)
		if i > 0 && low != prevLow+prevWidth {
			t.Fatalf("bucket %d starts at %d, previous ends at %d", i, low, prevLow+prevWidth)
		}
		if bucket(low) != i || bucket(low+width-1) != i {
			t.Fatalf("bucket %d [%d,+%d): bucket(low)=%d bucket(last)=%d", i, low, width, bucket(low), bucket(low+width-1))
		}
		if low >= subCount && float64(width)/float64(low) > 1.0/subCount+1e-9 {
			t.Fatalf("bucket %d is %d wide at %d: over 1/%d", i, width, low, subCount)
		}
		prevLow, prevWidth = low, width
	}
	if bucket(math.MaxUint64) != Buckets-1 || bucket(1<<(maxExp+1)+12345) != Buckets-1 {
		t.Error("values past the range do not land in the last bucket")
	}
}

// Quantiles of known distributions are within the promised 6.25%.
func TestQuantiles(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, dist := range []struct {
		name string
		gen  func() time.Duration
	}{
		{"uniform 5-50us", func() time.Duration { return time.Duration(5000 + r.Int63n(45000)) }},
		{"lognormal ~20us", func() time.Duration { return time.Duration(math.Exp(r.NormFloat64()*0.8 + math.Log(20000))) }},
		{"bimodal 3us/300us", func() time.Duration {
			if r.Intn(100) < 95 {
				return time.Duration(3000 + r.Int63n(500))
			}
			return time.Duration(300000 + r.Int63n(50000))
		}},
	} {
		var h Histogram
		vals := make([]float64, 20000)
		for i := range vals {
			d := dist.gen()
			h.Record(d)
			vals[i] = float64(d)
		}
		sort.Float64s(vals)
		var s Snapshot
		h.AddTo(&s)
		if s.Count != uint64(len(vals)) {
			t.Fatalf("%s: count %d", dist.name, s.Count)
		}
		for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
			want := vals[int(math.Ceil(q*float64(len(vals))))-1]
			got := float64(s.Quantile(q))
			if math.Abs(got-want)/want > 0.0625 {
				t.Errorf("%s: p%v = %v, exact %v (%.1f%% off)", dist.name, q*100, time.Duration(got), time.Duration(want), 100*math.Abs(got-want)/want)
			}
		}
		if time.Duration(s.MaxNs) != time.Duration(vals[len(vals)-1]) {
			t.Errorf("%s: max %v, want %v", dist.name, time.Duration(s.MaxNs), time.Duration(vals[len(vals)-1]))
		}
	}
}

func TestSnapshotEdges(t *testing.T) {
	var s Snapshot
	if s.Quantile(0.5) != 0 {
		t.Error("empty histogram has a median")
	}
	var h Histogram
	h.Record(-5) // a clock step backwards counts as 0
	h.Record(7 * time.Microsecond)
	h.AddTo(&s)
	if s.Quantile(0) != 0 || s.Quantile(1) != 7*time.Microsecond {
		t.Errorf("quantiles 0 and 1: %v %v", s.Quantile(0), s.Quantile(1))
	}
	var m Snapshot
	m.Merge(&s)
	m.Merge(&s)
	if m.Count != 4 || m.SumNs != 2*7000 || m.MaxNs != 7000 {
		t.Errorf("merge: %+v", m)
	}
	// Exact below powers of two.
	if got := m.CountBelow(1 << 13); got != 4 {
		t.Errorf("below 8.192us: %d", got)
	}
	if got := m.CountBelow(1 << 12); got != 2 {
		t.Errorf("below 4.096us: %d", got)
	}
}
