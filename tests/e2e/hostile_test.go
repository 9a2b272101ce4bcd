package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gops/signal"
)

// Issue 18, "A hostile container": one container misbehaves in every way
// tests/testdata/hostile.c knows, one behaviour a subtest, while a second,
// well-behaved container keeps making trapped calls. sysvisord must go on
// serving the well-behaved one and stay bounded, and give back everything
// once the hostile container is gone.
//
// What is asserted is functional: the well-behaved container's calls all
// succeed and none of them stalls (p99 under hostileP99Bound, far above
// its normal tens of microseconds: a stall, not a performance target;
// performance is measured in bench/); sysvisord's goroutines and fds come
// back to their start values exactly after each hostile container is
// removed, its RSS net of free heap within 10% + 4 MiB (as TestScale200),
// and no lease, record, mount or process is left. The latencies (quiet
// against hostile phase, p50/p99/max) and sysvisord's figures before,
// during and after each phase are logged.

// hostileP99Bound is the well-behaved container's p99 sysinfo(2) latency
// during a hostile phase that counts as stalled.
const hostileP99Bound = 250 * time.Millisecond

// latency is what `hostile lat` printed: one probe of the well-behaved
// container.
type latency struct {
	calls, fails        int
	p50, p99, max       time.Duration
	firstFail, rawLines string
}

func (l latency) String() string {
	return fmt.Sprintf("%d calls, p50 %v p99 %v max %v", l.calls, l.p50, l.p99, l.max)
}

var latRE = regexp.MustCompile(`calls=(\d+) fails=(\d+)(?: p50_us=(\d+) p99_us=(\d+) max_us=(\d+))?`)

func parseLatency(out string) (latency, error) {
	m := latRE.FindStringSubmatch(out)
	if m == nil {
		return latency{}, fmt.Errorf("no latency line in %q", out)
	}
	us := func(s string) time.Duration { n, _ := strconv.Atoi(s); return time.Duration(n) * time.Microsecond }
	l := latency{rawLines: out, p50: us(m[3]), p99: us(m[4]), max: us(m[5])}
	l.calls, _ = strconv.Atoi(m[1])
	l.fails, _ = strconv.Atoi(m[2])
	if i := strings.Index(out, "fail errno="); i >= 0 {
		l.firstFail = strings.TrimSpace(out[i:])
	}
	return l, nil
}

// bgCmd is a docker command running in the background.
type bgCmd struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

func dockerBg(t *testing.T, args ...string) *bgCmd {
	t.Helper()
	b := &bgCmd{cmd: exec.Command("/usr/bin/docker", args...), done: make(chan error, 1)}
	b.cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+svDir+"/docker.sock")
	b.cmd.Stdout, b.cmd.Stderr = &b.out, &b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.done <- b.cmd.Wait() }()
	t.Cleanup(func() { b.cmd.Process.Kill() })
	return b
}

// wait waits for the command at most d; a command still running then is
// killed (the docker client only: what it started in a container goes
// with the container) and reported as hung.
func (b *bgCmd) wait(d time.Duration) (string, error) {
	select {
	case err := <-b.done:
		if err != nil {
			return b.out.String(), fmt.Errorf("docker %s: %v", strings.Join(b.cmd.Args[1:], " "), err)
		}
		return b.out.String(), nil
	case <-time.After(d):
		b.cmd.Process.Kill()
		<-b.done
		return b.out.String(), fmt.Errorf("docker %s: still running after %v", strings.Join(b.cmd.Args[1:], " "), d)
	}
}

// outcomes parses hostile's "NAME=count" lines (ok=, EAGAIN=, ...) and its
// "key=value" summary words.
func outcomes(out string) map[string]int {
	m := map[string]int{}
	for _, l := range strings.Split(out, "\n") {
		for _, w := range strings.Fields(l) {
			if k, v, ok := strings.Cut(w, "="); ok {
				if n, err := strconv.Atoi(v); err == nil {
					m[k] = n
				}
			}
		}
	}
	return m
}

var errnoName = regexp.MustCompile(`^E[A-Z0-9]+$`)

// errnos lists the outcomes of hostile's counters that are not successes.
func errnos(m map[string]int) []string {
	var bad []string
	for k, n := range m {
		if n > 0 && errnoName.MatchString(k) {
			bad = append(bad, fmt.Sprintf("%s=%d", k, n))
		}
	}
	sort.Strings(bad)
	return bad
}

// hostileEnv is the test's well-behaved container and sysvisord's
// baseline.
type hostileEnv struct {
	pid     int // sysvisord
	prefix  string
	good    string
	base    svdFigures
	baseMem map[string]int64
	snap    stateSnapshot
	dump    string
	n       int // probes so far, for unique stop files
}

// steadyFigures reads sysvisord's figures until two readings in a row
// agree on goroutines and fds (a reading during a control request or a
// load round is off by its goroutines).
func steadyFigures(t *testing.T, pid int) svdFigures {
	t.Helper()
	f := figures(t, pid)
	for i := 0; i < 20; i++ {
		time.Sleep(250 * time.Millisecond)
		again := figures(t, pid)
		if again.goroutines == f.goroutines && again.fds == f.fds {
			return again
		}
		f = again
	}
	return f
}

// probe runs the latency probe in the well-behaved container in the
// background, until stop is called (at most maxSecs).
func (e *hostileEnv) probe(t *testing.T, maxSecs int) (stop func() (latency, error)) {
	t.Helper()
	e.n++
	file := fmt.Sprintf("/tmp/stop-%d", e.n)
	b := dockerBg(t, "exec", e.good, "hostile", "lat", strconv.Itoa(maxSecs), "2000", file)
	return func() (latency, error) {
		if _, err := dockerTimeout(time.Minute, "exec", e.good, "touch", file); err != nil {
			return latency{}, err
		}
		out, err := b.wait(time.Minute)
		if err != nil {
			return latency{}, fmt.Errorf("%v: %s", err, out)
		}
		return parseLatency(out)
	}
}

// quiet measures the well-behaved container's latency for secs, with
// nothing hostile running.
func (e *hostileEnv) quiet(t *testing.T, secs int) latency {
	t.Helper()
	out, err := dockerTimeout(time.Minute, "exec", e.good, "hostile", "lat", strconv.Itoa(secs), "2000")
	if err != nil {
		t.Fatalf("quiet probe: %v", err)
	}
	l, err := parseLatency(out)
	if err != nil {
		t.Fatal(err)
	}
	if l.fails > 0 {
		t.Fatalf("well-behaved container, quiet phase: %d of %d sysinfo calls failed (%s)", l.fails, l.calls, l.firstFail)
	}
	return l
}

// hostile starts a hostile container (removed at cleanup).
func (e *hostileEnv) hostile(t *testing.T, name string, extra ...string) string {
	t.Helper()
	args := append([]string{"run", "-d", "--runtime=sysvisor-runc", "--name", e.prefix + name}, extra...)
	id, err := dockerTimeout(time.Minute, append(args, image, "sleep", "3600")...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dockerTimeout(time.Minute, "rm", "-f", id) })
	return id
}

// phase runs act (the hostile behaviour, which calls mid once at its
// height) with the well-behaved container's probe running throughout,
// after a quiet probe; it checks and logs the probe, removes the hostile
// container id and checks that sysvisord is back at its baseline.
func (e *hostileEnv) phase(t *testing.T, id string, act func(mid func())) {
	t.Helper()
	q := e.quiet(t, 2)
	stop := e.probe(t, 120)
	time.Sleep(300 * time.Millisecond) // the probe under way
	var during svdFigures
	var duringMem map[string]int64
	act(func() {
		during = figures(t, e.pid)
		duringMem = goMem(t, e.pid)
	})
	h, err := stop()
	if err != nil {
		t.Fatalf("probe during the hostile phase: %v", err)
	}
	t.Logf("well-behaved container's sysinfo(2): quiet %v; hostile %v (p50 x%.1f, p99 x%.1f)",
		q, h, float64(h.p50)/float64(max(q.p50, time.Microsecond)), float64(h.p99)/float64(max(q.p99, time.Microsecond)))
	if h.fails > 0 {
		t.Errorf("well-behaved container: %d of %d sysinfo calls failed during the hostile phase (%s)", h.fails, h.calls, h.firstFail)
	}
	if h.calls < 200 {
		t.Errorf("well-behaved container made only %d sysinfo calls during the hostile phase (every 2 ms: starved?)\n%s", h.calls, h.rawLines)
	}
	if h.p99 > hostileP99Bound {
		t.Errorf("well-behaved container stalled: sysinfo p99 %v during the hostile phase (quiet: %v), bound %v", h.p99, q.p99, hostileP99Bound)
	}
	if during.goroutines > 0 {
		t.Logf("sysvisord during: %v, Go heap %d KiB", during, duringMem["heap-alloc"]>>10)
	}
	if _, err := dockerTimeout(time.Minute, "rm", "-f", id); err != nil {
		t.Fatal(err)
	}
	waitForgotten(t, []string{id}, 30*time.Second)
	e.checkBack(t)
}

// checkBack checks that sysvisord is the one of the start, with the
// baseline's goroutines and fds, its RSS (net of free heap) within 10% +
// 4 MiB, and that nothing was left behind.
func (e *hostileEnv) checkBack(t *testing.T) {
	t.Helper()
	if p := sysvisordPid(t); p != e.pid {
		t.Fatalf("sysvisord is pid %d, was %d: it restarted (crashed?)", p, e.pid)
	}
	var after svdFigures
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		after = figures(t, e.pid)
		if after.goroutines == e.base.goroutines && after.fds == e.base.fds || time.Now().After(deadline) {
			break
		}
	}
	if after.goroutines != e.base.goroutines {
		dump, _ := gops(e.pid, signal.StackTrace)
		t.Errorf("sysvisord has %d goroutines 30 s after the hostile container's removal, want the start's %d; by kind:\n%s",
			after.goroutines, e.base.goroutines, goroutineDiff(goroutineKinds(e.dump), goroutineKinds(dump)))
	}
	if after.fds != e.base.fds {
		t.Errorf("sysvisord has %d fds after the hostile container's removal, want the start's %d", after.fds, e.base.fds)
	}
	net := func(rssKiB int, m map[string]int64) int { return rssKiB - int((m["heap-idle"]-m["heap-released"])>>10) }
	baseNet := net(e.base.rssKiB, e.baseMem)
	limit := baseNet + baseNet/10 + 4<<10
	var afterNet int
	var afterMem map[string]int64
	for deadline := time.Now().Add(20 * time.Second); ; {
		after.rssKiB = settledRSS(t, e.pid, 5*time.Second)
		afterMem = goMem(t, e.pid)
		afterNet = net(after.rssKiB, afterMem)
		if afterNet <= limit || time.Now().After(deadline) {
			break
		}
	}
	if afterNet > limit {
		t.Errorf("sysvisord's RSS net of free heap: %d KiB after the hostile container's removal, want within 10%% of the start's %d KiB + 4 MiB (≤ %d)\n  %s",
			afterNet, baseNet, limit, memDetail(t, e.pid, afterMem))
	}
	t.Logf("sysvisord after: %v (start: %v); RSS net of free heap %d -> %d KiB (limit %d)", after, e.base, baseNet, afterNet, limit)
	var diff []string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		diff = snapshotDiff(e.snap, snapshotFiles(t))
		if len(diff) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, d := range diff {
		t.Errorf("left behind by the hostile container: %s", d)
	}
}

// hostPidOf finds the host pid of the process in the container id whose
// command line is exactly args (hostile's arguments are unique per call).
func hostPidOf(t *testing.T, id string, args ...string) int {
	t.Helper()
	want := strings.Join(args, "\x00") + "\x00"
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if string(b) != want {
				continue
			}
			if cg, _ := os.ReadFile("/proc/" + e.Name() + "/cgroup"); bytes.Contains(cg, []byte(id)) {
				return pid
			}
		}
	}
	t.Fatalf("no process %q in container %s", strings.Join(args, " "), id[:12])
	return 0
}

// threadStatesOf counts the threads of pid by their state letter.
func threadStatesOf(pid int) map[string]int {
	m := map[string]int{}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, e.Name()))
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) {
			m[string(b[i+2])]++
		}
	}
	return m
}

// waitIdle waits until sysvisord's goroutines and fds are want's (the
// listener of an exec that was killed is gone), at most within.
func waitIdle(t *testing.T, pid int, want svdFigures, within time.Duration) svdFigures {
	t.Helper()
	var f svdFigures
	for deadline := time.Now().Add(within); ; time.Sleep(250 * time.Millisecond) {
		f = figures(t, pid)
		if f.goroutines == want.goroutines && f.fds == want.fds || time.Now().After(deadline) {
			return f
		}
	}
}

func TestHostileContainer(t *testing.T) {
	keepLogOnFailure(t)
	t0 := time.Now()
	e := &hostileEnv{pid: sysvisordPid(t), prefix: fmt.Sprintf("hostile-%d-", os.Getpid())}
	t.Cleanup(func() {
		out, _ := dockerTimeout(time.Minute, "ps", "-aq", "--filter", "name="+e.prefix)
		for _, id := range strings.Fields(out) {
			dockerTimeout(time.Minute, "rm", "-f", id)
		}
	})
	good, err := dockerTimeout(time.Minute, "run", "-d", "--runtime=sysvisor-runc", "--name", e.prefix+"good", image, "sleep", "3600")
	if err != nil {
		t.Fatal(err)
	}
	e.good = good
	// Warm-up: a hostile container through a short storm of each kind and
	// a probe, so that first-use allocations are in the baseline.
	warm := e.hostile(t, "warm")
	if out, err := dockerTimeout(time.Minute, "exec", warm, "hostile", "mounts", "8", "0.3", "/tmp"); err != nil {
		t.Fatalf("warm-up: %v\n%s", err, out)
	}
	e.quiet(t, 1)
	if _, err := dockerTimeout(time.Minute, "rm", "-f", warm); err != nil {
		t.Fatal(err)
	}
	waitForgotten(t, []string{warm}, 30*time.Second)
	e.snap = snapshotFiles(t)
	e.base = steadyFigures(t, e.pid)
	e.base.rssKiB = settledRSS(t, e.pid, 10*time.Second)
	e.baseMem = goMem(t, e.pid)
	if e.dump, err = gops(e.pid, signal.StackTrace); err != nil {
		t.Fatal(err)
	}
	t.Logf("sysvisord at the start (a well-behaved container up): %v\n  %s", e.base, memDetail(t, e.pid, e.baseMem))

	t.Run("1000ConcurrentMounts", func(t *testing.T) {
		id := e.hostile(t, "mounts")
		e.phase(t, id, func(mid func()) {
			b := dockerBg(t, "exec", id, "hostile", "mounts", "1000", "6", "/tmp")
			time.Sleep(4 * time.Second)
			mid()
			out, err := b.wait(2 * time.Minute)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			t.Logf("hostile: %s", strings.Join(strings.Fields(out), " "))
			r := outcomes(out)
			if r["threads"] != 1000 || r["ok"] == 0 {
				t.Errorf("1000 mounting threads: %s", out)
			}
			// All 1000 wait in a trapped call at once, more or less.
			if r["maxinflight"] < 500 {
				t.Errorf("at most %d mounts in flight at once, want ~1000: %s", r["maxinflight"], out)
			}
			if bad := errnos(r); len(bad) > 0 || r["leftover"] != 0 {
				t.Errorf("the hostile container's own mounts and umounts: %v failed, %d left mounted\n%s", bad, r["leftover"], out)
			}
		})
	})

	t.Run("ForkBombUnderPidsLimit", func(t *testing.T) {
		id := e.hostile(t, "bomb", "--pids-limit", "200")
		e.phase(t, id, func(mid func()) {
			b := dockerBg(t, "exec", id, "hostile", "bomb", "6")
			time.Sleep(3 * time.Second)
			mid()
			out, err := b.wait(2 * time.Minute)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			t.Logf("hostile: %s", strings.TrimSpace(out))
			r := outcomes(out)
			if r["eagain"] == 0 || r["forks"] < 150 {
				t.Errorf("the fork bomb did not run into its pids limit: %s", out)
			}
			if r["sysinfo_ok"] == 0 || r["sysinfo_fail"] > 0 {
				t.Errorf("the bomb's own sysinfo calls: %s", out)
			}
			// The hostile container is itself still served.
			if out, err := dockerTimeout(time.Minute, "exec", id, "sysinfo"); err != nil || !strings.Contains(out, "totalram=") {
				t.Errorf("sysinfo in the bombed container afterwards: %v\n%s", err, out)
			}
		})
	})

	t.Run("StoppedInTrappedCall", func(t *testing.T) {
		id := e.hostile(t, "stop")
		e.phase(t, id, func(mid func()) {
			// sysvisord with the hostile container idle (and the probe
			// running), after a first sysinfo: the container's cgroup
			// files, opened then, stay open as long as it runs.
			if _, err := dockerTimeout(time.Minute, "exec", id, "sysinfo"); err != nil {
				t.Fatal(err)
			}
			idle := steadyFigures(t, e.pid)
			// SIGSTOP from the host while 200 threads wait in sysinfo and
			// mount, held 3 s, then SIGCONT: the calls complete.
			args := []string{"hostile", "stuck", "200", "6", "/tmp/sig"}
			b := dockerBg(t, append([]string{"exec", id}, args...)...)
			pid := hostPidOf(t, id, args...)
			time.Sleep(1500 * time.Millisecond)
			if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond)
			st := threadStatesOf(pid)
			mid()
			time.Sleep(2500 * time.Millisecond)
			syscall.Kill(pid, syscall.SIGCONT)
			out, err := b.wait(time.Minute)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			t.Logf("SIGSTOP (threads by state while stopped: %v) then SIGCONT: %s", st, strings.Join(strings.Fields(out), " "))
			if st["T"] < 200 {
				t.Errorf("threads of the stopped process by state: %v, want all 201 stopped (T)", st)
			}
			r := outcomes(out)
			// Restarted calls whose first try sysvisord had performed
			// are answered as done, not done again (runc without
			// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV lets a stop
			// interrupt the wait).
			if bad := errnos(r); len(bad) > 0 || r["ok"] == 0 || r["leftover"] != 0 {
				t.Errorf("calls stopped by SIGSTOP then continued: %v failed, %d mounts left\n%s", bad, r["leftover"], out)
			}

			// ptrace: the threads seized and interrupted inside the
			// container, held 2 s, then detached.
			out, err = dockerTimeout(time.Minute, "exec", id, "hostile", "ptrace", "200", "6", "/tmp/ptr", "2", "detach")
			t.Logf("ptrace-stopped, then detached: %s", strings.Join(strings.Fields(out), " "))
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			r = outcomes(out)
			if r["stopped"] < 200 {
				t.Errorf("ptrace stopped %d threads, want 201:\n%s", r["stopped"], out)
			}
			if bad := errnos(r); len(bad) > 0 || r["ok"] == 0 || r["leftover"] != 0 {
				t.Errorf("calls of ptrace-stopped threads, once detached: %v failed, %d mounts left\n%s", bad, r["leftover"], out)
			}

			// Killed while stopped (SIGSTOP, then ptrace): its listener
			// goes, sysvisord is back at its figures with the hostile
			// container idle.
			args = []string{"hostile", "stuck", "200", "30", "/tmp/kill"}
			b = dockerBg(t, append([]string{"exec", id}, args...)...)
			pid = hostPidOf(t, id, args...)
			time.Sleep(1500 * time.Millisecond)
			syscall.Kill(pid, syscall.SIGSTOP)
			time.Sleep(time.Second)
			syscall.Kill(pid, syscall.SIGKILL)
			if out, err := b.wait(time.Minute); err == nil || !strings.Contains(err.Error(), "137") {
				t.Errorf("docker exec of the killed process: %v, want exit status 137\n%s", err, out)
			}
			out, err = dockerTimeout(time.Minute, "exec", id, "hostile", "ptrace", "200", "30", "/tmp/ptrkill", "1", "kill")
			t.Logf("ptrace-stopped, then killed: %s", strings.Join(strings.Fields(out), " "))
			if err != nil || outcomes(out)["killed"] != 1 {
				t.Errorf("ptrace kill: %v\n%s", err, out)
			}
			if f := waitIdle(t, e.pid, idle, 20*time.Second); f.goroutines != idle.goroutines || f.fds != idle.fds {
				t.Errorf("sysvisord after the stopped processes were killed: %v, want the goroutines and fds it had with the hostile container idle: %v", f, idle)
			}
			// The container is served as before.
			if out, err := dockerTimeout(time.Minute, "exec", id, "sh", "-c", "mkdir -p /mnt/x && mount -t tmpfs t /mnt/x && umount /mnt/x && sysinfo"); err != nil {
				t.Errorf("mount and sysinfo in the container afterwards: %v\n%s", err, out)
			}
		})
	})

	t.Run("GarbageArguments", func(t *testing.T) {
		id := e.hostile(t, "garbage")
		e.phase(t, id, func(mid func()) {
			b := dockerBg(t, "exec", id, "hostile", "garbage", "/tmp/gb")
			time.Sleep(2 * time.Second)
			mid()
			out, err := b.wait(3 * time.Minute)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			checkGarbage(t, out)
			if out, err := dockerTimeout(time.Minute, "exec", id, "sh", "-c", "mkdir -p /mnt/x && mount -t tmpfs t /mnt/x && umount /mnt/x && sysinfo"); err != nil {
				t.Errorf("mount and sysinfo in the container afterwards: %v\n%s", err, out)
			}
		})
	})

	t.Run("RateGuard", func(t *testing.T) {
		const rate, burst = 50, 50
		name := fmt.Sprintf("hostile-rate-%d", os.Getpid())
		mustAddPolicy(t, name, fmt.Sprintf(`version = 1
description = "hostile_test: sysinfo under a low rate guard"
syscall "sysinfo" {
  action = "emulate"
}
limits {
  notifications_per_second = %d
  burst                    = %d
  action                   = "eagain"
}
`, rate, burst))
		id := e.hostile(t, "rate", "-e", "SYSVISOR_POLICY="+name)
		const warning = "container over its policy's notification rate"
		warned := logCount(t, warning)
		e.phase(t, id, func(mid func()) {
			start := time.Now()
			b := dockerBg(t, "exec", id, "hostile", "storm", "16", "5")
			time.Sleep(3 * time.Second)
			mid()
			out, err := b.wait(time.Minute)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			t.Logf("hostile (16 threads of sysinfo for 5 s, rate %d/s, burst %d): %s", rate, burst, strings.Join(strings.Fields(out), " "))
			r := outcomes(out)
			// The guard engages: the excess is answered EAGAIN, and what
			// gets through is within the bucket (the exec's own: burst,
			// then rate a second over the whole exec, with a second's slack).
			if r["EAGAIN"] == 0 {
				t.Errorf("no call refused by the rate guard: %s", out)
			}
			if most := burst + int(float64(rate)*(took.Seconds()+1)); r["ok"] > most || r["ok"] == 0 {
				t.Errorf("%d calls answered in %v under a guard of %d/s, burst %d: want 1..%d\n%s", r["ok"], took, rate, burst, most, out)
			}
			if bad := errnos(r); len(bad) != 1 || !strings.HasPrefix(bad[0], "EAGAIN=") {
				t.Errorf("outcomes other than ok and EAGAIN: %v", bad)
			}
			if n := logCount(t, warning); n == warned {
				t.Errorf("sysvisord logged no %q", warning)
			}
			var rows []map[string]any
			st, err := sysvisorctl(t, "stats", "--json", id[:12])
			if err == nil {
				err = json.Unmarshal([]byte(st), &rows)
			}
			limited := 0.0
			for _, row := range rows {
				if v, ok := row["limited"].(float64); ok {
					limited += v
				}
			}
			if err != nil || limited == 0 {
				t.Errorf("sysvisorctl stats of the stormed container counts no limited call: %v\n%s", err, st)
			}
			t.Logf("sysvisorctl stats: %.0f calls limited", limited)
		})
	})
	t.Logf("total %v", time.Since(t0).Round(time.Millisecond))
}

// checkGarbage checks `hostile garbage`'s report: every call returned
// (no hang, no crash), and a garbage pointer (unmapped, in the kernel's
// half, -1, or a huge address) always got an error, never a success.
// sysinfo(2) into a read-only page must fail with EFAULT, as the kernel's
// own copy would, however /proc/<pid>/mem lets sysvisord write it.
func checkGarbage(t *testing.T, out string) {
	t.Helper()
	calls, byResult := 0, map[string]int{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 7 || f[0] != "call" {
			if strings.HasPrefix(l, "setup") {
				t.Errorf("garbage: %s", l)
			}
			continue
		}
		calls++
		sys, pos, val, kind, res := f[1], f[2], f[3], f[4], f[6]
		byResult[res]++
		switch {
		case res == "HANG" || res == "SIGNAL":
			t.Errorf("%s with %s in argument %s: %s", sys, val, pos, res)
		case kind == "ptr" && res == "ok" && (val == "unmapped" || val == "kernel" || val == "minus1" || val == "huge"):
			t.Errorf("%s with a garbage pointer (%s) in argument %s succeeded", sys, val, pos)
		case sys == "sysinfo" && pos == "0" && val == "readonly" && res != "EFAULT":
			t.Errorf("sysinfo into a read-only page: %s, want EFAULT", res)
		// The kernel's answers where sysvisord's once differed. umount2's
		// flags are an int: garbage in the upper half only (1<<40, the
		// kernel address) is flags 0 to the kernel.
		case sys == "umount2" && pos == "1" && (val == "huge" || val == "kernel") && res != "ok":
			t.Errorf("umount2 with flags %s (0 in the int the kernel reads): %s, want ok", val, res)
		// An empty path (the read-only page holds zeros) names nothing.
		case (sys == "mknod" && pos == "0" || sys == "mknodat" && pos == "1") && val == "readonly" && res != "ENOENT":
			t.Errorf("%s of an empty path: %s, want ENOENT", sys, res)
		}
	}
	if want := 11 * 6 * 7; calls != want || !strings.Contains(out, fmt.Sprintf("calls=%d", want)) {
		t.Errorf("garbage: %d calls reported, want %d:\n%s", calls, want, out)
	}
	t.Logf("garbage arguments: %d calls, by result %v", calls, byResult)
}
