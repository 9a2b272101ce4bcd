package itest

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/holder"
	"github.com/sysvisor/sysvisor/supervisor"
	"github.com/sysvisor/sysvisor/supervisor/control"
)

// withHolder runs an in-process holder on the server's run directory, as
// sysvisor-holder would; sysvisord finds it at start.
func withHolder(t *testing.T, down time.Duration, out **holder.Holder) func(*supervisor.Config) {
	return func(cfg *supervisor.Config) {
		h := startHolderAt(t, cfg.RunDir, down)
		if out != nil {
			*out = h
		}
	}
}

func startHolderAt(t *testing.T, runDir string, down time.Duration) *holder.Holder {
	t.Helper()
	h, err := holder.Listen(holder.Config{RunDir: runDir, DownTimeout: down, DownErrno: unix.EAGAIN,
		Log: hclog.New(&hclog.LoggerOptions{Name: "holder", Level: hclog.Debug, Output: os.Stderr})})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { h.Serve(); close(done) }()
	t.Cleanup(func() { h.Close(); <-done })
	return h
}

// TestIntegrationRestartKeepsListeners: a container's own process keeps
// being served across a stop and start of sysvisord: a call made while no
// sysvisord runs waits and is answered by the next one, with the
// container's figures, and ps shows the container running again.
func TestIntegrationRestartKeepsListeners(t *testing.T) {
	requireRoot(t)
	srv := startServer(t, withHolder(t, 30*time.Second, nil))
	id := newID("restart")
	srv.create(id)
	ch := startChild(t, srv, childOpts{scenario: "interactive", id: id, cgroup: newCgroup(t, 128*mib, pidsMax), interactive: true})
	ch.send("call")
	if ev := ch.next("call", 15*time.Second); ev.Errno != 0 || ev.Totalram*uint64(ev.Unit) != 128*mib {
		t.Fatalf("first call: %+v", ev)
	}
	for round := 0; round < 3; round++ {
		if err := srv.stop(20 * time.Second); err != nil {
			t.Fatal(err)
		}
		ch.send("call")
		waitPending(t, ch.pid(), 1)
		time.Sleep(200 * time.Millisecond) // still waiting, not failed
		srv.restart()
		ev := ch.next("call", 10*time.Second)
		if ev.Errno != 0 || ev.Totalram*uint64(ev.Unit) != 128*mib {
			t.Fatalf("round %d: call made while sysvisord was down: errno %v, totalram %d×%d", round, unix.Errno(ev.Errno), ev.Totalram, ev.Unit)
		}
		c := srv.waitContainer(id, "running with its listener", func(c2 control.ContainerInfo) bool { return c2.Status == "running" && c2.Listeners == 1 })
		if c.InitPid != ch.pid() {
			t.Errorf("round %d: init pid %d, want %d", round, c.InitPid, ch.pid())
		}
	}
	if !strings.Contains(srv.log.String(), "seccomp listener re-attached") {
		t.Error("no re-attach logged")
	}
	ch.stdin.Close()
	ch.mustExitZero()
	srv.waitContainer(id, "stopped", func(c control.ContainerInfo) bool { return c.Status == "stopped" && c.Listeners == 0 })
}

// TestIntegrationRestartUnderLoad: threads calling back to back across
// stops and starts of sysvisord see no failure and no wrong answer: a
// notification received and not answered when sysvisord stopped is
// answered by the next one from the journal. At the end the holder's
// bound runs out and every thread gets its errno, which ends them.
func TestIntegrationRestartUnderLoad(t *testing.T) {
	requireRoot(t)
	srv := startServer(t, withHolder(t, 2*time.Second, nil))
	const threads = 8
	id := newID("load")
	srv.create(id)
	ch := startChild(t, srv, childOpts{scenario: "hammer", id: id, cgroup: newCgroup(t, memLimit, pidsMax), arg: fmt.Sprintf("%d %d", threads, memLimit)})
	ch.next("hammering", 15*time.Second)
	for round := 0; round < 5; round++ {
		waitPending(t, ch.pid(), 2)
		if err := srv.stop(20 * time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		srv.restart()
		// Every thread moves on: one whose call was in flight at the
		// stop would otherwise wait until the holder's bound.
		var before map[int]int
		for deadline := time.Now().Add(5 * time.Second); len(before) == 0; {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no thread in sysinfo after the restart", round)
			}
			before = sysinfoSwitches(ch.pid())
		}
		time.Sleep(500 * time.Millisecond)
		after := sysinfoSwitches(ch.pid())
		for tid, n := range before {
			if m, ok := after[tid]; ok && m == n {
				t.Fatalf("round %d: thread %d has been blocked in sysinfo since the restart", round, tid)
			}
		}
	}
	inflight := strings.Count(srv.log.String(), "dispatched again")
	t.Logf("in-flight notifications answered again after a restart: %d", inflight)
	if err := srv.stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ev := ch.next("hammer", 20*time.Second)
	if len(ev.Failures) > 0 {
		t.Errorf("wrong answers: %v", ev.Failures)
	}
	var errnos map[string]int
	json.Unmarshal([]byte(ev.Msg), &errnos)
	if errnos[unix.EAGAIN.Error()] != threads || len(errnos) != 1 {
		t.Errorf("how the %d threads' calls ended: %v; want only EAGAIN, once sysvisord stayed away past the bound", threads, errnos)
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Errorf("calls failed %v after the stop, before the 2 s bound", d)
	}
	ch.mustExitZero()
}

// TestIntegrationHolderRestart: when the holder dies, sysvisord keeps
// serving from its own copies and deposits everything with the next
// holder, which then carries the container through a sysvisord restart.
func TestIntegrationHolderRestart(t *testing.T) {
	requireRoot(t)
	var h *holder.Holder
	srv := startServer(t, withHolder(t, 30*time.Second, &h))
	id := newID("holder")
	srv.create(id)
	ch := startChild(t, srv, childOpts{scenario: "interactive", id: id, cgroup: newCgroup(t, 96*mib, pidsMax), interactive: true})
	ch.send("call")
	if ev := ch.next("call", 15*time.Second); ev.Errno != 0 {
		t.Fatalf("first call: %+v", ev)
	}
	h.Close()
	time.Sleep(100 * time.Millisecond)
	ch.send("call")
	if ev := ch.next("call", 10*time.Second); ev.Errno != 0 || ev.Totalram*uint64(ev.Unit) != 96*mib {
		t.Fatalf("call with the holder gone: %+v", ev)
	}
	// Only a deposit after the new holder is up counts (a sysvisord that
	// reached the old one while it closed once matched here too early).
	before := strings.Count(srv.log.String(), "deposits sent again")
	startHolderAt(t, srv.runDir, 30*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(srv.log.String(), "deposits sent again") == before {
		if time.Now().After(deadline) {
			t.Fatal("sysvisord did not deposit again with the new holder")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := srv.stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	ch.send("call")
	waitPending(t, ch.pid(), 1)
	srv.restart()
	if ev := ch.next("call", 10*time.Second); ev.Errno != 0 || ev.Totalram*uint64(ev.Unit) != 96*mib {
		t.Fatalf("call across the restart with the second holder: %+v", ev)
	}
	ch.stdin.Close()
	ch.mustExitZero()
}

// TestIntegrationGoneWhileDown: a container whose processes all exit while
// sysvisord is down is found stopped at the restart, and its listener is
// neither served nor kept by the holder.
func TestIntegrationGoneWhileDown(t *testing.T) {
	requireRoot(t)
	srv := startServer(t, withHolder(t, 30*time.Second, nil))
	id := newID("gone")
	srv.create(id)
	ch := startChild(t, srv, childOpts{scenario: "interactive", id: id, cgroup: newCgroup(t, 64*mib, pidsMax), interactive: true})
	ch.send("call")
	ch.next("call", 15*time.Second)
	if err := srv.stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	ch.stdin.Close()
	ch.mustExitZero()
	srv.restart()
	srv.waitContainer(id, "stopped", func(c control.ContainerInfo) bool { return c.Status == "stopped" && c.Listeners == 0 })
	if err := srv.stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	c, err := holder.Dial(srv.runDir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	held, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	for name, fd := range held {
		unix.Close(fd)
		if strings.Contains(name, id) {
			t.Errorf("holder still keeps %s", name)
		}
	}
	if _, ok := held[holder.SeccompJournal]; !ok {
		t.Errorf("holder lost the journal: %v", held)
	}
}

// sysinfoSwitches maps each thread of pid that is in sysinfo(2) now to
// its voluntary context switches: a thread whose trapped call is answered
// switches again, one left waiting does not.
func sysinfoSwitches(pid int) map[int]int {
	out := map[int]int{}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, e.Name()))
		if err != nil || !strings.HasPrefix(string(b), strconv.Itoa(unix.SYS_SYSINFO)+" ") {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, e.Name()))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				tid, _ := strconv.Atoi(e.Name())
				out[tid] = n
			}
		}
	}
	return out
}

// TestIntegrationHolderAndSupervisorDown: with the holder and sysvisord
// both gone, a container is as it was before the holder existed: its
// trapped calls fail with ENOSYS (the kernel's answer once no listener
// fd is left), the next sysvisord says so, and nothing hangs.
func TestIntegrationHolderAndSupervisorDown(t *testing.T) {
	requireRoot(t)
	var h *holder.Holder
	srv := startServer(t, withHolder(t, 30*time.Second, &h))
	id := newID("both")
	srv.create(id)
	ch := startChild(t, srv, childOpts{scenario: "interactive", id: id, cgroup: newCgroup(t, 64*mib, pidsMax), interactive: true})
	ch.send("call")
	if ev := ch.next("call", 15*time.Second); ev.Errno != 0 {
		t.Fatalf("first call: %+v", ev)
	}
	h.Close()
	if err := srv.stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	ch.send("call")
	if ev := ch.next("call", 10*time.Second); ev.Errno != int(unix.ENOSYS) {
		t.Fatalf("call with neither holder nor sysvisord: errno %v, want ENOSYS", unix.Errno(ev.Errno))
	}
	startHolderAt(t, srv.runDir, 30*time.Second)
	srv.restart()
	if !strings.Contains(srv.log.String(), "its seccomp listeners were lost") {
		t.Error("the new sysvisord did not say the container lost its listeners")
	}
	ch.stdin.Close()
	ch.mustExitZero()
}
