package supervisor

import (
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// A burst of goroutines blocked in syscalls at once leaves that many parked
// threads; a tick of the trimmer ends them, and work afterwards still runs.
func TestThreadTrimmerReturnsIdleThreads(t *testing.T) {
	tr := threadTrimmer{log: hclog.NewNullLogger()}
	tr.tick() // the floor: this test binary at rest
	floor := tr.floor
	if floor <= 0 {
		t.Fatalf("thread count unreadable: %d", floor)
	}

	const burst = 40
	var wg sync.WaitGroup
	for i := 0; i < burst; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A blocking syscall the netpoller does not take: each
			// sleeper holds an OS thread while it waits.
			ts := unix.NsecToTimespec(int64(200 * time.Millisecond))
			unix.Nanosleep(&ts, nil)
		}()
	}
	wg.Wait()
	peak := threadCount()
	if peak < floor+burst/2 {
		t.Fatalf("the burst left %d threads over a floor of %d: test premise (a thread per blocked syscall) not met", peak, floor)
	}

	tr.tick()
	// The exits are asynchronous: the threads are gone shortly after.
	var after int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if after = threadCount(); after <= floor+2 {
			break
		}
	}
	if after > floor+2 {
		t.Errorf("threads after a trim: %d (floor %d, peak %d)", after, floor, peak)
	}
	t.Logf("threads: floor %d, after the burst %d, after a trim %d", floor, peak, after)

	// The runtime still runs goroutines and syscalls normally.
	done := make(chan struct{})
	go func() {
		ts := unix.NsecToTimespec(int64(time.Millisecond))
		unix.Nanosleep(&ts, nil)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a goroutine did not run after the trim")
	}
}
