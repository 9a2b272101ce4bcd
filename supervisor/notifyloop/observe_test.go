package notifyloop

import (
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/linux/notify"
	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor/stats"
	"github.com/sysvisor/sysvisor/supervisor/trace"
)

func TestGuardTokenBucket(t *testing.T) {
	t0 := 1000 * time.Second
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
	if !g.allow(t0+100*time.Millisecond) || g.allow(t0+100*time.Millisecond) {
		t.Error("refill after 100ms is not exactly one token")
	}
	// A long pause refills to the burst, no further.
	n = 0
	for i := 0; i < 20; i++ {
		if g.allow(t0 + time.Hour) {
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
		if g.allow(t0 + time.Duration(ms)*time.Millisecond) {
			n++
		}
	}
	if n < 99 || n > 101 {
		t.Errorf("10 s at 1000 calls/s under 10/s: %d allowed", n)
	}
}

// The observer's cost per notification when nobody traces: what every
// notification pays for stats and trace.
func BenchmarkObserverNoTrace(b *testing.B) {
	tab, err := handlers.NewTable(nil)
	if err != nil {
		b.Fatal(err)
	}
	acts, err := NewActions(tab, []policy.Rule{{Syscall: "sysinfo", Action: policy.Emulate}})
	if err != nil {
		b.Fatal(err)
	}
	nr, _ := tab.Nr("sysinfo")
	if runtime.GOARCH != "amd64" {
		b.Skip("amd64 audit arch")
	}
	n := notify.Notif{Data: notify.Data{Nr: nr, Arch: unix.AUDIT_ARCH_X86_64}}
	var hub trace.Hub
	o := NewObserver("c", stats.NewSet().NewShard("c"), &hub, nil, hclog.NewNullLogger())
	resp := handlers.Return(0)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ob := o.begin(nil, &n, acts)
		o.end(&ob, resp, nil)
	}
}
