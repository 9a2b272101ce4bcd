package itest

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/registry"
)

const (
	mib      = 1 << 20
	memLimit = 256 * mib
	pidsMax  = 200
)

func hostSysinfo(t *testing.T) unix.Sysinfo_t {
	t.Helper()
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		t.Fatal(err)
	}
	return si
}

func newID(name string) string { return "itest-" + name + "-" + randHex(4) }

// TestIntegrationSysinfoMemoryLimit: a process in a 256 MiB memory cgroup
// sees 256 MiB of RAM, its own task count and its own uptime through the
// supervisor, and the supervisor records the container's life cycle.
func TestIntegrationSysinfoMemoryLimit(t *testing.T) {
	requireRoot(t)
	host := hostSysinfo(t)
	if host.Totalram*uint64(host.Unit) <= memLimit {
		t.Skipf("host RAM %d is not above the %d test limit: the check could not tell them apart", host.Totalram*uint64(host.Unit), memLimit)
	}
	srv := startServer(t)
	cg := newCgroup(t, memLimit, pidsMax)
	id := newID("mem")
	srv.create(id)
	if c, ok := srv.container(id); !ok || c.Status != registry.StatusCreated || c.InitPid != 0 {
		t.Fatalf("after create: ps row %+v (present %v), want status created, no init", c, ok)
	}

	ch := startChild(t, srv, childOpts{scenario: "basic", id: id, cgroup: cg})
	for _, step := range []string{"first", "second"} {
		ev := ch.next(step, 15*time.Second)
		age := time.Since(ch.started)
		if ev.Errno != 0 {
			t.Fatalf("%s: sysinfo failed: %v", step, unix.Errno(ev.Errno))
		}
		if total := ev.Totalram * uint64(ev.Unit); total != memLimit {
			t.Errorf("%s: totalram %d x unit %d = %d, want the cgroup limit %d (host has %d)", step, ev.Totalram, ev.Unit, total, memLimit, host.Totalram*uint64(host.Unit))
		}
		if ev.Freeram > ev.Totalram || ev.Totalram-ev.Freeram > 128*mib {
			t.Errorf("%s: freeram %d of totalram %d: a Go test child in a fresh cgroup uses a few MiB", step, ev.Freeram, ev.Totalram)
		}
		// Uptime counts from the child's start, not the host's boot.
		if ev.Uptime < 0 || time.Duration(ev.Uptime)*time.Second > age+time.Second {
			t.Errorf("%s: uptime %ds, but the child started %v ago", step, ev.Uptime, age)
		}
		if hostUp := hostSysinfo(t).Uptime; hostUp > int64(age/time.Second)+5 {
			if ev.Uptime >= hostUp-3 {
				t.Errorf("%s: uptime %ds is the host's (%ds)", step, ev.Uptime, hostUp)
			}
		} else {
			t.Logf("host booted %ds ago: too recently to tell container uptime from host uptime", hostUp)
		}
		// Procs is pids.current of the child's pids cgroup: its threads.
		lo, hi := min(ev.ThreadsBefore, ev.ThreadsAfter)-1, max(ev.ThreadsBefore, ev.ThreadsAfter)+1
		if int(ev.Procs) < lo || int(ev.Procs) > hi || ev.Procs == 0 {
			t.Errorf("%s: procs %d, want the child's thread count (%d before, %d after the call); host has %d", step, ev.Procs, ev.ThreadsBefore, ev.ThreadsAfter, host.Procs)
		}
		if int(host.Procs) >= lo && int(host.Procs) <= hi {
			t.Logf("host task count %d is within the child's range: procs check not discriminating", host.Procs)
		}
	}
	ch.mustExitZero()

	// The supervisor recorded init (the child), its cgroups, both calls, and
	// the stop when the filter's last user exited.
	c := srv.waitContainer(id, "stopped", func(c control.ContainerInfo) bool { return c.Status == registry.StatusStopped })
	if c.InitPid != ch.pid() {
		t.Errorf("init pid %d, want the child %d", c.InitPid, ch.pid())
	}
	if !cg.recorded(c.Cgroups) {
		t.Errorf("recorded cgroups %v, want memory %s and pids %s", c.Cgroups, cg.memory, cg.pids)
	}
	if c.Notifications != 2 || c.Listeners != 0 {
		t.Errorf("notifications %d, listeners %d; want 2 and 0", c.Notifications, c.Listeners)
	}
	if c.InitStartNs <= 0 {
		t.Errorf("init start %d not recorded", c.InitStartNs)
	}
}

// TestIntegrationSysinfoBadPointers: every buffer the kernel's own sysinfo
// rejects with EFAULT is rejected by the emulation too, nothing is written
// where the kernel would not write, and the supervisor serves the next call.
func TestIntegrationSysinfoBadPointers(t *testing.T) {
	requireRoot(t)
	srv := startServer(t)
	cg := newCgroup(t, memLimit, pidsMax)
	id := newID("badptr")
	srv.create(id)
	ch := startChild(t, srv, childOpts{scenario: "badptr", id: id, cgroup: cg})
	names := []string{"null", "one", "unmapped", "kernel", "readonly", "protnone", "into-protnone", "into-hole"}
	native := map[string]int{}
	for _, n := range names {
		native[n] = ch.next("native:"+n, 15*time.Second).Errno
		if native[n] != int(unix.EFAULT) {
			t.Errorf("kernel's own sysinfo(%s) = %v, want EFAULT (test premise)", n, unix.Errno(native[n]))
		}
	}
	good := func(ev event) {
		t.Helper()
		if ev.Errno != 0 || ev.Totalram*uint64(ev.Unit) != memLimit {
			t.Errorf("%s: errno %v totalram %d unit %d, want success with %d", ev.Step, unix.Errno(ev.Errno), ev.Totalram, ev.Unit, memLimit)
		}
	}
	good(ch.next("before", 15*time.Second))
	for _, n := range names {
		ev := ch.next("emulated:"+n, 15*time.Second)
		if ev.Errno != native[n] {
			t.Errorf("emulated sysinfo(%s) = %v, the kernel answers %v", n, unix.Errno(ev.Errno), unix.Errno(native[n]))
		}
		if !ev.Intact {
			t.Errorf("emulated sysinfo(%s) wrote into memory the kernel would not write", n)
		}
		good(ch.next("after:"+n, 15*time.Second))
	}
	ch.mustExitZero()
	c := srv.waitContainer(id, "stopped", func(c control.ContainerInfo) bool { return c.Status == registry.StatusStopped })
	if want := uint64(1 + 2*len(names)); c.Notifications != want {
		t.Errorf("notifications %d, want %d", c.Notifications, want)
	}
}

// TestIntegrationConcurrentThreads: many threads of two containers with
// different limits trap at once; every call is answered into its own buffer
// with its own container's figures.
func TestIntegrationConcurrentThreads(t *testing.T) {
	requireRoot(t)
	srv := startServer(t)
	const n, m = 16, 100
	limits := []uint64{memLimit, 128 * mib}
	var ids []string
	var children []*child
	for i, limit := range limits {
		cg := newCgroup(t, limit, pidsMax)
		id := newID(fmt.Sprintf("threads%d", i))
		srv.create(id)
		ids = append(ids, id)
		children = append(children, startChild(t, srv, childOpts{scenario: "threads", id: id, cgroup: cg, arg: fmt.Sprintf("%d %d %d", n, m, limit)}))
	}
	for i, ch := range children {
		ev := ch.next("threads", 60*time.Second)
		if len(ev.Failures) > 0 {
			t.Errorf("container %d (%d MiB): %d threads x %d calls: bad answers:\n%s", i, limits[i]/mib, n, m, strings.Join(ev.Failures, "\n"))
		}
		if ev.Calls != n*m || ev.Tids != n {
			t.Errorf("container %d: %d calls from %d threads, want %d from %d", i, ev.Calls, ev.Tids, n*m, n)
		}
		ch.mustExitZero()
		c := srv.waitContainer(ids[i], "stopped", func(c control.ContainerInfo) bool { return c.Status == registry.StatusStopped })
		// A call a signal interrupted in its wait is notified again
		// when the kernel restarts it: a few more, never fewer.
		if c.Notifications < n*m || c.Notifications > n*m+n*m/100 {
			t.Errorf("container %d: supervisor counted %d notifications, want %d (or a few more)", i, c.Notifications, n*m)
		}
	}
}

// TestIntegrationRejectedHandoffs: listeners the supervisor must refuse are
// closed (the child's trapped call then fails with ENOSYS instead of hanging),
// malformed handoffs leak no fds, nothing is recorded, and the supervisor
// goes on serving a proper container.
func TestIntegrationRejectedHandoffs(t *testing.T) {
	requireRoot(t)
	srv := startServer(t)
	registered := newID("registered")
	srv.create(registered)

	cases := []struct {
		name, id, meta, handoff, logWant string
	}{
		{name: "unknown-id", id: newID("unknown"), logWant: "did not create"},
		{name: "metadata-mismatch", id: registered, meta: `{"id":"someone-else"}`, logWant: "metadata does not match"},
		{name: "metadata-garbage", id: registered, meta: `{not json`, logWant: "metadata does not match"},
		{name: "state-garbage", id: registered, handoff: "garbage", logWant: "decode container process state"},
		{name: "fd-misnamed", id: registered, handoff: "wrongname", logWant: "fds [notTheSeccompFd]"},
		{name: "pid-missing", id: registered, handoff: "badpid", logWant: "cannot read init's start time"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := startChild(t, srv, childOpts{scenario: "handoff", id: tc.id, meta: tc.meta, handoff: tc.handoff})
			ev := ch.next("call", 15*time.Second)
			if ev.Errno != int(unix.ENOSYS) {
				t.Errorf("trapped call after a refused handoff: %v, want ENOSYS (no listener)", unix.Errno(ev.Errno))
			}
			ch.mustExitZero()
			if !strings.Contains(srv.log.String(), tc.logWant) {
				t.Errorf("supervisor log does not say %q", tc.logWant)
			}
		})
	}
	if _, ok := srv.container(cases[0].id); ok {
		t.Errorf("unknown container %s appears in ps", cases[0].id)
	}
	if c, _ := srv.container(registered); c.Status != registry.StatusCreated || c.InitPid != 0 || c.Notifications != 0 || c.Listeners != 0 {
		t.Errorf("refused handoffs changed the record: %+v", c)
	}

	// A listener sent along with another fd is taken; the other is closed.
	t.Run("extra-fd", func(t *testing.T) {
		id := newID("extrafd")
		srv.create(id)
		ch := startChild(t, srv, childOpts{scenario: "handoff", id: id, handoff: "extrafd"})
		if ev := ch.next("call", 15*time.Second); ev.Errno != 0 {
			t.Errorf("trapped call with the listener sent beside another fd: %v", unix.Errno(ev.Errno))
		}
		if ev := ch.next("extra", 15*time.Second); !ev.Intact {
			t.Errorf("the supervisor kept the extra fd of the handoff open")
		}
		ch.mustExitZero()
	})

	// Handoffs without a listener: every fd passed must be closed by the
	// supervisor, which the write end of a pipe shows as EPIPE.
	t.Run("malformed-fds", func(t *testing.T) {
		st := specs.ContainerProcessState{Version: specs.Version, Pid: os.Getpid(),
			State: specs.State{Version: specs.Version, ID: registered, Status: specs.StateCreating, Pid: os.Getpid()}}
		msgs := []struct {
			name  string
			fds   []string
			pass  int
			state any
		}{
			{name: "names two passes one", fds: []string{"seccompFd", "other"}, pass: 1, state: st},
			{name: "names one passes three", fds: []string{"seccompFd"}, pass: 3, state: st},
			{name: "no id", fds: []string{"seccompFd"}, pass: 1, state: specs.ContainerProcessState{Version: specs.Version, Pid: 1}},
			{name: "not json", pass: 2, state: "]]]"},
		}
		for _, m := range msgs {
			var b []byte
			if s, ok := m.state.(string); ok {
				b = []byte(s)
			} else {
				cps := m.state.(specs.ContainerProcessState)
				cps.Fds = m.fds
				b, _ = json.Marshal(cps)
			}
			var send, keep []int
			for i := 0; i < m.pass; i++ {
				var p [2]int
				if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
					t.Fatal(err)
				}
				send = append(send, p[0])
				keep = append(keep, p[1])
			}
			conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: srv.seccompSock(), Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := conn.WriteMsgUnix(b, unix.UnixRights(send...), nil); err != nil {
				t.Fatal(err)
			}
			conn.Close()
			for _, fd := range send {
				unix.Close(fd)
			}
			for i, w := range keep {
				deadline := time.Now().Add(10 * time.Second)
				for {
					_, err := unix.Write(w, []byte("x"))
					if err == unix.EPIPE {
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("%s: fd %d of the handoff still open in the supervisor after 10s (write: %v)", m.name, i, err)
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				unix.Close(w)
			}
		}
		// A connection that sends nothing at all.
		conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: srv.seccompSock(), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	})

	// Garbage on the control socket, and requests that must be refused.
	t.Run("control-garbage", func(t *testing.T) {
		conn, err := net.Dial("unix", filepath.Join(srv.runDir, control.ControlSocket))
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte("{\"op\": 12\n"))
		conn.(*net.UnixConn).CloseWrite()
		var resp control.Response
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if err := json.NewDecoder(conn).Decode(&resp); err != nil || !strings.Contains(resp.Error, "malformed") {
			t.Errorf("garbage control request: response %+v, decode error %v; want a malformed-request error", resp, err)
		}
		conn.Close()
		for _, req := range []control.Request{{Op: "explode"}, {Op: control.OpCreate, ID: "../escape"}, {Op: control.OpCreate}, {Op: control.OpDelete, ID: "a/b"}} {
			if _, err := srv.call(req); err == nil {
				t.Errorf("request %+v accepted", req)
			}
		}
	})

	// After all that, a proper container is served.
	cg := newCgroup(t, memLimit, pidsMax)
	ch := startChild(t, srv, childOpts{scenario: "basic", id: registered, cgroup: cg})
	for _, step := range []string{"first", "second"} {
		if ev := ch.next(step, 15*time.Second); ev.Errno != 0 || ev.Totalram*uint64(ev.Unit) != memLimit {
			t.Errorf("proper container after the refusals: %+v", ev)
		}
	}
	ch.mustExitZero()
}

// TestIntegrationDeleteStopsServing: delete closes a running container's
// listener (its next trapped call fails with ENOSYS), forgets the record and
// releases the lease.
func TestIntegrationDeleteStopsServing(t *testing.T) {
	requireRoot(t)
	srv := startServer(t)
	cg := newCgroup(t, memLimit, pidsMax)
	id := newID("delete")
	srv.create(id)
	ch := startChild(t, srv, childOpts{scenario: "interactive", id: id, cgroup: cg, interactive: true})
	ch.send("call")
	if ev := ch.next("call", 15*time.Second); ev.Errno != 0 || ev.Totalram*uint64(ev.Unit) != memLimit {
		t.Fatalf("call before delete: %+v", ev)
	}
	srv.waitContainer(id, "running with one listener", func(c control.ContainerInfo) bool {
		return c.Status == registry.StatusRunning && c.Listeners == 1
	})
	if _, err := srv.call(control.Request{Op: control.OpDelete, ID: id}); err != nil {
		t.Fatal(err)
	}
	ch.send("call")
	if ev := ch.next("call", 15*time.Second); ev.Errno != int(unix.ENOSYS) {
		t.Errorf("call after delete: %v, want ENOSYS", unix.Errno(ev.Errno))
	}
	if _, ok := srv.container(id); ok {
		t.Errorf("deleted container still in ps")
	}
	if _, err := os.Stat(filepath.Join(srv.stateDir, "containers", id+".json")); !os.IsNotExist(err) {
		t.Errorf("record of deleted container still on disk: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(srv.stateDir, "leases.json"))
	if err != nil || strings.Contains(string(b), id) {
		t.Errorf("lease of deleted container not released (%v):\n%s", err, b)
	}
	ch.stdin.Close()
	ch.mustExitZero()
}

// TestIntegrationUserfaultfdBuffer: a buffer only the container can make
// present (userfaultfd) must not park the supervisor on the container. The
// kernel's own sysinfo waits for the fault to be served; the emulation fails
// fast with EFAULT (remote writes through /proc/<pid>/mem are refused by
// userfaultfd) and the next call is served.
func TestIntegrationUserfaultfdBuffer(t *testing.T) {
	requireRoot(t)
	srv := startServer(t)
	cg := newCgroup(t, memLimit, pidsMax)
	id := newID("uffd")
	srv.create(id)
	ch := startChild(t, srv, childOpts{scenario: "uffd", id: id, cgroup: cg})
	if ev := ch.next("native", 30*time.Second); ev.Errno != 0 || ev.Intact {
		t.Errorf("native sysinfo into a userfaultfd page: errno %v, faulted %v; want success after a served fault (test premise)", unix.Errno(ev.Errno), !ev.Intact)
	}
	ev := ch.next("emulated", 30*time.Second)
	if ev.Errno != int(unix.EFAULT) || !ev.Intact {
		t.Errorf("emulated sysinfo into a userfaultfd page: errno %v, fault raised in the container %v; want EFAULT without a fault", unix.Errno(ev.Errno), !ev.Intact)
	}
	if ev := ch.next("after", 15*time.Second); ev.Errno != 0 || ev.Totalram*uint64(ev.Unit) != memLimit {
		t.Errorf("call after the userfaultfd one: %+v", ev)
	}
	ch.mustExitZero()
}

// TestIntegrationQueuedBeforeAttach: calls trapped while the handoff is still
// in flight wait in the kernel and are all answered once the supervisor takes
// the listener.
func TestIntegrationQueuedBeforeAttach(t *testing.T) {
	requireRoot(t)
	srv := startServer(t)
	cg := newCgroup(t, memLimit, pidsMax)
	id := newID("queued")
	srv.create(id)
	const n = 8
	ch := startChild(t, srv, childOpts{scenario: "queued", id: id, cgroup: cg, arg: fmt.Sprintf("%d %d", n, memLimit), interactive: true})
	ch.next("queued", 15*time.Second)
	time.Sleep(50 * time.Millisecond)
	if c, _ := srv.container(id); c.Notifications != 0 || c.Status != registry.StatusCreated {
		t.Errorf("listener attached before the handoff completed: %+v", c)
	}
	ch.send("release")
	ch.stdin.Close()
	ev := ch.next("answered", 30*time.Second)
	if len(ev.Failures) > 0 {
		t.Errorf("queued calls answered wrongly: %v", ev.Failures)
	}
	ch.mustExitZero()
	if c := srv.waitContainer(id, "stopped", func(c control.ContainerInfo) bool { return c.Status == registry.StatusStopped }); c.Notifications != n {
		t.Errorf("notifications %d, want %d", c.Notifications, n)
	}
}

// waitPending waits until at least k threads of pid are inside sysinfo, i.e.
// have a notification pending.
func waitPending(t *testing.T, pid, k int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n := blockedInSysinfo(pid); n >= k {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d threads of %d blocked in sysinfo after 10s", k, pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestIntegrationKilledWhilePending: containers killed while notifications
// are pending (in the handler, queued in the kernel, or queued before the
// listener reached the supervisor) leave the supervisor serving, their
// records stopped with no listener, and shutdown complete with no goroutine
// left.
func TestIntegrationKilledWhilePending(t *testing.T) {
	requireRoot(t)
	baseline := runtime.NumGoroutine()
	srv := startServer(t)
	const threads = 8
	for round := 0; round < 5; round++ {
		cg := newCgroup(t, memLimit, pidsMax)
		id := newID(fmt.Sprintf("killed%d", round))
		srv.create(id)
		ch := startChild(t, srv, childOpts{scenario: "hammer", id: id, cgroup: cg, arg: fmt.Sprintf("%d %d", threads, memLimit)})
		ch.next("hammering", 15*time.Second)
		pending := waitPending(t, ch.pid(), 2)
		if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := ch.wait(15 * time.Second); !isSignal(err, syscall.SIGKILL) {
			t.Fatalf("round %d: child exit %v, want killed by SIGKILL", round, err)
		}
		c := srv.waitContainer(id, "stopped, no listener", func(c control.ContainerInfo) bool {
			return c.Status == registry.StatusStopped && c.Listeners == 0
		})
		t.Logf("round %d: killed with %d calls pending after %d notifications", round, pending, c.Notifications)
	}

	t.Run("before-attach", func(t *testing.T) {
		cg := newCgroup(t, memLimit, pidsMax)
		id := newID("killed-queued")
		srv.create(id)
		ch := startChild(t, srv, childOpts{scenario: "queued", id: id, cgroup: cg, arg: fmt.Sprintf("%d %d", threads, memLimit), interactive: true})
		ch.next("queued", 15*time.Second)
		if err := ch.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := ch.wait(15 * time.Second); !isSignal(err, syscall.SIGKILL) {
			t.Fatalf("child exit %v, want killed by SIGKILL", err)
		}
		// Whether the listener of the dead process is attached and then
		// closed, or refused, nothing may stay attached.
		srv.waitContainer(id, "no listener, not running", func(c control.ContainerInfo) bool {
			return c.Listeners == 0 && c.Status != registry.StatusRunning
		})
	})

	// Still serving: another container gets its answers.
	id := newID("after-kill")
	srv.create(id)
	ch := startChild(t, srv, childOpts{scenario: "basic", id: id, cgroup: newCgroup(t, 64*mib, pidsMax)})
	for _, step := range []string{"first", "second"} {
		if ev := ch.next(step, 15*time.Second); ev.Errno != 0 || ev.Totalram*uint64(ev.Unit) != 64*mib {
			t.Errorf("container after the kills: %+v", ev)
		}
	}
	ch.mustExitZero()
	if strings.Contains(srv.log.String(), "seccomp receive") {
		t.Errorf("a listener loop gave up on a receive error (see log)")
	}

	if err := srv.stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkStopped(t, srv, baseline)
}

// TestIntegrationShutdownWithPendingCalls: cancelling Run closes every
// listener, busy or idle. The kernel then fails the calls that were pending
// and every later one with ENOSYS. Run returns promptly even with a handoff
// connection that never completes, and leaves no goroutine behind.
func TestIntegrationShutdownWithPendingCalls(t *testing.T) {
	requireRoot(t)
	baseline := runtime.NumGoroutine()
	srv := startServer(t)
	const threads = 8

	idle := newID("idle")
	srv.create(idle)
	chIdle := startChild(t, srv, childOpts{scenario: "interactive", id: idle, cgroup: newCgroup(t, 128*mib, pidsMax), interactive: true})
	chIdle.send("call")
	if ev := chIdle.next("call", 15*time.Second); ev.Errno != 0 || ev.Totalram*uint64(ev.Unit) != 128*mib {
		t.Fatalf("idle container's first call: %+v", ev)
	}

	busy := newID("busy")
	srv.create(busy)
	ch := startChild(t, srv, childOpts{scenario: "hammer", id: busy, cgroup: newCgroup(t, memLimit, pidsMax), arg: fmt.Sprintf("%d %d", threads, memLimit)})
	ch.next("hammering", 15*time.Second)

	// A peer that connects to the seccomp socket and never finishes.
	stalled, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: srv.seccompSock(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.Write([]byte(`{"ociVersion":`))
	// The supervisor accepts in order: once a later connection has been
	// served, the stalled one is held by a serving goroutine.
	rejected := strings.Count(srv.log.String(), "seccomp handoff rejected")
	probe, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: srv.seccompSock(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()
	for deadline := time.Now().Add(10 * time.Second); strings.Count(srv.log.String(), "seccomp handoff rejected") == rejected; {
		if time.Now().After(deadline) {
			t.Fatal("the supervisor did not serve a second handoff connection")
		}
		time.Sleep(5 * time.Millisecond)
	}

	pending := waitPending(t, ch.pid(), 2)
	start := time.Now()
	if err := srv.stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Run took %v to return after cancel", d)
	}
	t.Logf("stopped with %d calls pending, in %v", pending, time.Since(start))

	ev := ch.next("hammer", 20*time.Second)
	if len(ev.Failures) > 0 {
		t.Errorf("wrong answers before shutdown: %v", ev.Failures)
	}
	var errnos map[string]int
	json.Unmarshal([]byte(ev.Msg), &errnos)
	if errnos[unix.ENOSYS.Error()] != threads || len(errnos) != 1 {
		t.Errorf("how the %d threads' calls ended after shutdown: %v; want ENOSYS for all", threads, errnos)
	}
	if ev.Calls == 0 {
		t.Errorf("no call succeeded before shutdown")
	}
	ch.mustExitZero()

	chIdle.send("call")
	if ev := chIdle.next("call", 15*time.Second); ev.Errno != int(unix.ENOSYS) {
		t.Errorf("idle container's call after shutdown: %v, want ENOSYS", unix.Errno(ev.Errno))
	}
	chIdle.stdin.Close()
	chIdle.mustExitZero()
	stalled.Close()
	checkStopped(t, srv, baseline)
}

// checkStopped verifies what a stopped supervisor leaves: no sockets, no
// goroutines.
func checkStopped(t *testing.T, srv *server, baseline int) {
	t.Helper()
	for _, s := range []string{control.ControlSocket, control.SeccompSocket} {
		if _, err := os.Stat(filepath.Join(srv.runDir, s)); !os.IsNotExist(err) {
			t.Errorf("%s still present after Run returned (%v)", s, err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Errorf("%d goroutines after shutdown, %d before the supervisor started:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
