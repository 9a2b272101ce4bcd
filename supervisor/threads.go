package supervisor

import (
	"bytes"
	"os"
	"runtime"
	"strconv"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// threadTrimmer gives back the OS threads a burst of work left idle.
//
// The Go runtime starts a thread whenever a goroutine blocks in a syscall
// while others wait to run, and keeps every such thread parked for good.
// With hundreds of listeners, a busy minute leaves as many threads as the
// peak number of handlers that were inside a syscall at once (106 idle
// threads at 200 idle containers in bench/ figure 7), a cost that no longer
// buys anything once the burst is over. A goroutine that exits while locked
// to its thread takes that thread with it; trimming runs such goroutines,
// one per thread above the floor, and the scheduler hands each one a parked
// thread first. A thread still needed is simply started again.
type threadTrimmer struct {
	log hclog.Logger
	// floor is the fewest threads seen at a tick: what sysvisord needs at
	// rest (the runtime's own, the views workers waiting in poll(2)).
	floor int
}

// tick trims the threads above the floor once; it runs every few seconds.
func (t *threadTrimmer) tick() {
	n := threadCount()
	if n <= 0 {
		return
	}
	if t.floor == 0 || n < t.floor {
		t.floor = n
	}
	// Down to the floor: under a steady load the few threads ended here
	// are started again, at tens of microseconds each every few seconds.
	excess := n - t.floor
	if excess <= 0 {
		t.log.Trace("threads", "threads", n, "floor", t.floor)
		return
	}
	var wg sync.WaitGroup
	for i := 0; i < excess; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Exiting while locked ends this goroutine's thread.
			runtime.LockOSThread()
		}()
	}
	wg.Wait()
	t.log.Debug("idle threads returned", "threads", n, "floor", t.floor, "after", threadCount())
}

// threadCount is this process's number of threads (/proc/self/stat field
// 20), 0 if it cannot be read.
func threadCount() int {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// The fields after the command's closing parenthesis, which the
	// command name itself may contain.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); num_threads is field 20.
	if len(f) < 18 {
		return 0
	}
	n, _ := strconv.Atoi(string(f[17]))
	return n
}
