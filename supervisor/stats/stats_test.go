package stats

import (
	"sync"
	"testing"
	"time"
)

func row(rows []Row, syscall, action string) Row {
	for _, r := range rows {
		if r.Syscall == syscall && r.Action == action {
			return r
		}
	}
	return Row{}
}

func TestKeys(t *testing.T) {
	seen := map[Key]bool{}
	for _, sc := range []string{"sysinfo", "mount", "mount_setattr", Other} {
		for _, a := range actions {
			k := KeyOf(sc, a)
			if seen[k] || int(k) < 0 || int(k) >= numKeys {
				t.Fatalf("KeyOf(%q, %q) = %d: out of range or taken", sc, a, k)
			}
			seen[k] = true
			if gs, ga := k.names(); gs != sc || ga != a {
				t.Errorf("KeyOf(%q, %q).names() = %q, %q", sc, a, gs, ga)
			}
		}
	}
	if KeyOf("chown", "emulate") != KeyOf(Other, "emulate") || KeyOf("mount", "weird") != KeyOf("mount", "") {
		t.Error("unknown names do not fall back to other / no action")
	}
}

// Shards merge per container and overall; ended listeners keep counting
// in the totals, and in their container's until it is forgotten. Reads run
// while the owners write (go test -race checks the lock-free path).
func TestSetMergesShards(t *testing.T) {
	s := NewSet()
	a1, a2, b := s.NewShard("a"), s.NewShard("a"), s.NewShard("b")
	mount, sysinfo := KeyOf("mount", "emulate"), KeyOf("sysinfo", "emulate")
	var wg sync.WaitGroup
	write := func(sh *Shard, k Key, d Decision, n int, lat time.Duration) {
		defer wg.Done()
		for i := 0; i < n; i++ {
			sh.Observe(k, d, lat)
		}
	}
	wg.Add(3)
	go write(a1, mount, Return, 1000, 100*time.Microsecond)
	go write(a2, mount, Errno, 500, 300*time.Microsecond)
	go write(b, sysinfo, Return, 2000, 10*time.Microsecond)
	for i := 0; i < 20; i++ {
		s.Rows("") // concurrent reads
	}
	wg.Wait()
	r := row(s.Rows("a"), "mount", "emulate")
	if r.Count != 1500 || r.Return != 1000 || r.Errno != 500 {
		t.Errorf("container a mount: %+v", r)
	}
	if r.P50Ns < 94e3 || r.P50Ns > 106e3 || r.P99Ns < 282e3 || r.P99Ns > 300e3 || r.MaxNs != 300e3 {
		t.Errorf("container a mount latency: p50 %d p99 %d max %d", r.P50Ns, r.P99Ns, r.MaxNs)
	}
	if len(s.Rows("a")) != 1 || row(s.Rows(""), "sysinfo", "emulate").Count != 2000 {
		t.Errorf("rows: a %+v all %+v", s.Rows("a"), s.Rows(""))
	}
	s.Retire(a1)
	s.Retire(a1) // twice is harmless
	if r := row(s.Rows("a"), "mount", "emulate"); r.Count != 1500 {
		t.Errorf("after retiring a1: %+v", r)
	}
	s.Forget("a")
	s.Retire(a2) // ends after its container was deleted
	if r := row(s.Rows("a"), "mount", "emulate"); r.Count != 0 {
		t.Errorf("forgotten container still counted: %+v", r)
	}
	if r := row(s.Rows(""), "mount", "emulate"); r.Count != 1500 {
		t.Errorf("totals lost a forgotten container: %+v", r)
	}
	if len(s.byRetired) != 0 {
		t.Errorf("per-container totals kept for a deleted container: %v", s.byRetired)
	}
}

// The notify path allocates nothing once a series exists.
func TestObserveAllocs(t *testing.T) {
	sh := NewSet().NewShard("c")
	k := KeyOf("sysinfo", "emulate")
	sh.Observe(k, Return, time.Microsecond)
	if n := testing.AllocsPerRun(1000, func() { sh.Observe(k, Return, 3*time.Microsecond) }); n != 0 {
		t.Errorf("Observe allocates %v times", n)
	}
}

func BenchmarkObserve(b *testing.B) {
	sh := NewSet().NewShard("c")
	k := KeyOf("sysinfo", "emulate")
	for i := 0; i < b.N; i++ {
		sh.Observe(k, Return, time.Duration(i&0xffff))
	}
}
