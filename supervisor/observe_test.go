package supervisor

import (
	"testing"
	"time"

	"github.com/sysvisor/sysvisor/policy"
)

func TestGuardTokenBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	g := newGuard(&policy.Limits{Rate: 10, Burst: 5, Action: policy.LimitEAGAIN}, t0)
	n := 0
	for i := 0; i < 20; i++ {
		if g.allow(t0) {
			n++
		}
	}
	if n != 5 {
		t.Errorf("a burst at once: %d allowed, want 5", n)
	}
	// 10/s: one more token every 100 ms.
	if !g.allow(t0.Add(100*time.Millisecond)) || g.allow(t0.Add(100*time.Millisecond)) {
		t.Error("refill after 100ms is not exactly one token")
	}
	// A long pause refills to the burst, no further.
	n = 0
	for i := 0; i < 20; i++ {
		if g.allow(t0.Add(time.Hour)) {
			n++
		}
	}
	if n != 5 {
		t.Errorf("after an hour: %d allowed, want the burst of 5", n)
	}
	// A clock that goes backwards refills nothing.
	if g.allow(t0) {
		t.Error("allowed after the clock went back with an empty bucket")
	}
	// Sustained: 10 calls a second get through, whatever is asked.
	g = newGuard(&policy.Limits{Rate: 10, Burst: 1}, t0)
	n = 0
	for ms := 0; ms < 10000; ms++ {
		if g.allow(t0.Add(time.Duration(ms) * time.Millisecond)) {
			n++
		}
	}
	if n < 99 || n > 101 {
		t.Errorf("10 s at 1000 calls/s under 10/s: %d allowed", n)
	}
}
