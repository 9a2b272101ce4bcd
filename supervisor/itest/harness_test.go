package itest

// The parent side: an in-process supervisor on private directories, cgroups
// made for one test and removed after it, and child processes driven over
// their stdin/stdout.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/cgroup"
	"github.com/sysvisor/sysvisor/supervisor"
	"github.com/sysvisor/sysvisor/supervisor/control"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	if os.Geteuid() != 0 {
		cannotRun(t, "integration test: needs root (seccomp listeners, cgroups, /proc/<pid>/mem)")
	}
}

// cannotRun skips, unless SYSVISOR_E2E=required (CI, make test) asks for
// every real-system test to run.
func cannotRun(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("SYSVISOR_E2E") == "required" {
		t.Fatalf("required but cannot run: "+format, args...)
	}
	t.Skipf(format, args...)
}

// syncBuffer collects the supervisor's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// server is an in-process sysvisord.
type server struct {
	t        *testing.T
	runDir   string
	stateDir string
	log      *syncBuffer
	cancel   context.CancelFunc
	done     chan error
	stopped  bool
	srv      *supervisor.Server
	cfg      supervisor.Config
}

// startServer starts an in-process sysvisord; opts adjust its config.
func startServer(t *testing.T, opts ...func(*supervisor.Config)) *server {
	t.Helper()
	// Short run dir: unix socket paths are limited to 108 bytes.
	runDir, err := os.MkdirTemp("", "svit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(runDir) })
	tmp := t.TempDir()
	stateDir := filepath.Join(tmp, "state")
	// Private copies of the host's subordinate-ID files: New appends the
	// sysvisor pool when absent, and the host's files must stay untouched.
	for _, name := range []string{"subuid", "subgid"} {
		b, err := os.ReadFile("/etc/" + name)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logs := &syncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Name: "sysvisord", Level: hclog.Debug, Output: logs})
	cfg := supervisor.Config{RunDir: runDir, StateDir: stateDir,
		SubUID: filepath.Join(tmp, "subuid"), SubGID: filepath.Join(tmp, "subgid"), Log: log,
		PolicyDir: filepath.Join(tmp, "policies")}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := supervisor.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{t: t, runDir: runDir, stateDir: stateDir, log: logs, cancel: cancel, done: make(chan error, 1), srv: srv, cfg: cfg}
	go func() { s.done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		if !s.stopped {
			if err := s.stop(15 * time.Second); err != nil {
				t.Error(err)
			}
		}
		// With a holder, a stopped sysvisord leaves the views mount to
		// its successor; the test is the last.
		unix.Unmount(filepath.Join(runDir, "views"), unix.MNT_DETACH)
		if t.Failed() {
			t.Logf("supervisor log:\n%s", logs.String())
		}
	})
	s.waitServing()
	return s
}

func (s *server) waitServing() {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := control.Call(s.runDir, control.Request{Op: control.OpPing}, time.Second); err == nil {
			return
		} else if time.Now().After(deadline) {
			s.t.Fatalf("supervisor not answering: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// restart starts a new in-process sysvisord on the same directories, as
// a restart of the daemon would (stop it first: s.stop).
func (s *server) restart() {
	s.t.Helper()
	if !s.stopped {
		s.t.Fatal("restart of a running supervisor")
	}
	srv, err := supervisor.New(s.cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.srv, s.cancel, s.stopped, s.done = srv, cancel, false, make(chan error, 1)
	go func(done chan error) { done <- srv.Run(ctx) }(s.done)
	s.waitServing()
}

func (s *server) seccompSock() string { return filepath.Join(s.runDir, control.SeccompSocket) }

// stop cancels Run and waits for it to return: Run returns only after every
// goroutine it started has ended.
func (s *server) stop(timeout time.Duration) error {
	s.stopped = true
	s.cancel()
	select {
	case err := <-s.done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("supervisor Run did not return within %v of cancel", timeout)
	}
}

func (s *server) call(req control.Request) (*control.Response, error) {
	return control.Call(s.runDir, req, 5*time.Second)
}

// create registers a container as sysvisor-runc does before starting it.
func (s *server) create(id string) {
	s.t.Helper()
	resp, err := s.call(control.Request{Op: control.OpCreate, ID: id, Bundle: "/nonexistent/itest-bundle"})
	if err != nil {
		s.t.Fatalf("create %s: %v", id, err)
	}
	if resp.Lease == nil || resp.Lease.Size != 65536 {
		s.t.Fatalf("create %s: lease %+v, want a 65536-ID block", id, resp.Lease)
	}
}

func (s *server) container(id string) (control.ContainerInfo, bool) {
	s.t.Helper()
	resp, err := s.call(control.Request{Op: control.OpPs})
	if err != nil {
		s.t.Fatalf("ps: %v", err)
	}
	for _, c := range resp.Containers {
		if c.ID == id {
			return c, true
		}
	}
	return control.ContainerInfo{}, false
}

// waitContainer polls ps until cond holds for id's row.
func (s *server) waitContainer(id, what string, cond func(control.ContainerInfo) bool) control.ContainerInfo {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, ok := s.container(id)
		if ok && cond(c) {
			return c
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("container %s: %s: not reached within 10s (ps row %+v, present %v)", id, what, c, ok)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testCgroup is a memory and pids cgroup made for one test: a directory in
// each of the v1 memory and pids hierarchies (hybrid hosts), or one cgroup2
// directory on a v2-only host.
type testCgroup struct {
	dirs   []string // memory first
	memory string
	pids   string
	v2     bool
}

const cgroupPrefix = "sysvisor-itest-"

// newCgroup creates sysvisor-itest-<pid>-<rand> with the given limits, in
// the v1 memory and pids hierarchies or at the top of cgroup2, and removes it
// when the test ends. Tests must register their children's cleanup after
// this, so that the children are gone by the time the directories are
// removed.
func newCgroup(t *testing.T, memLimit uint64, pidsMax int) *testCgroup {
	t.Helper()
	mounts, err := cgroup.HostMounts()
	if err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s%d-%s", cgroupPrefix, os.Getpid(), randHex(4))
	cg := &testCgroup{}
	memMnt, pidsMnt := mounts["memory"], mounts["pids"]
	switch {
	case memMnt != "" && pidsMnt != "":
		cg.memory, cg.pids = filepath.Join(memMnt, name), filepath.Join(pidsMnt, name)
		sweepStaleCgroups(memMnt, pidsMnt)
	case memMnt == "" && pidsMnt == "" && mounts[""] != "":
		// A child of the cgroup2 root gets the controllers the root hands
		// down; systemd enables memory and pids there.
		ctl, _ := os.ReadFile(filepath.Join(mounts[""], "cgroup.subtree_control"))
		if f := strings.Fields(string(ctl)); !slices.Contains(f, "memory") || !slices.Contains(f, "pids") {
			cannotRun(t, "cgroup2 root does not hand down memory and pids (subtree_control %q)", ctl)
		}
		cg.v2 = true
		cg.memory = filepath.Join(mounts[""], name)
		cg.pids = cg.memory
		sweepStaleCgroups(mounts[""])
	default:
		cannotRun(t, "needs the memory and pids controllers on cgroup v1 or v2 alone (mounts %v)", mounts)
	}
	for _, d := range slices.Compact([]string{cg.memory, cg.pids}) {
		if err := os.Mkdir(d, 0o755); err != nil {
			cg.remove(t)
			t.Fatalf("create cgroup: %v", err)
		}
		cg.dirs = append(cg.dirs, d)
	}
	t.Cleanup(func() { cg.remove(t) })
	write := func(path, v string) {
		if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
	}
	if cg.v2 {
		write(filepath.Join(cg.memory, "memory.max"), strconv.FormatUint(memLimit, 10))
	} else {
		write(filepath.Join(cg.memory, "memory.limit_in_bytes"), strconv.FormatUint(memLimit, 10))
	}
	write(filepath.Join(cg.pids, "pids.max"), strconv.Itoa(pidsMax))
	return cg
}

// recorded says whether the cgroups the supervisor recorded for a
// container are this one.
func (cg *testCgroup) recorded(paths map[string]string) bool {
	if cg.v2 {
		return paths[""] == cg.memory
	}
	return paths["memory"] == cg.memory && paths["pids"] == cg.pids
}

func (cg *testCgroup) add(pid int) error {
	for _, d := range cg.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("move %d to %s: %w", pid, d, err)
		}
	}
	return nil
}

// remove deletes the directories, retrying while the kernel finishes
// detaching exited tasks.
func (cg *testCgroup) remove(t *testing.T) {
	for _, d := range cg.dirs {
		var err error
		for i := 0; i < 250; i++ {
			if err = os.Remove(d); err == nil || os.IsNotExist(err) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			t.Errorf("cgroup %s left behind: %v (procs %q)", d, err, b)
		}
	}
}

// sweepStaleCgroups removes empty test cgroups whose creating test process
// is gone (a previous run killed before its cleanup).
func sweepStaleCgroups(mnts ...string) {
	for _, mnt := range mnts {
		ents, _ := os.ReadDir(mnt)
		for _, e := range ents {
			rest, ok := strings.CutPrefix(e.Name(), cgroupPrefix)
			if !ok || !e.IsDir() {
				continue
			}
			pidStr, _, _ := strings.Cut(rest, "-")
			pid, err := strconv.Atoi(pidStr)
			if err != nil || pid == os.Getpid() {
				continue
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
				os.Remove(filepath.Join(mnt, e.Name())) // fails harmlessly if still populated
			}
		}
	}
}

// child is one re-executed test binary running a scenario of child_test.go.
type child struct {
	t       *testing.T
	cmd     *exec.Cmd
	started time.Time
	events  chan event
	stderr  *syncBuffer
	other   *syncBuffer // stdout lines that are not events
	stdin   io.WriteCloser
	exited  chan struct{}
	waitErr error
}

type childOpts struct {
	scenario string
	id       string
	meta     string // listenerMetadata; default {"id":<id>,"policy":"itest"}
	handoff  string
	arg      string
	cgroup   *testCgroup
	// interactive keeps stdin open for send; close it with c.stdin.Close.
	interactive bool
}

func startChild(t *testing.T, srv *server, o childOpts) *child {
	t.Helper()
	if o.meta == "" {
		m, _ := json.Marshal(map[string]string{"id": o.id, "policy": "itest"})
		o.meta = string(m)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestItestChild$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(),
		envScenario+"="+o.scenario, envSock+"="+srv.seccompSock(), envID+"="+o.id,
		envMeta+"="+o.meta, envHandoff+"="+o.handoff, envArg+"="+o.arg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{t: t, cmd: cmd, events: make(chan event, 256), stderr: &syncBuffer{}, other: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.started = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			var ev event
			if rest, ok := strings.CutPrefix(line, "ITEST "); ok && json.Unmarshal([]byte(rest), &ev) == nil {
				c.events <- ev
				continue
			}
			fmt.Fprintln(c.other, line)
		}
		io.Copy(io.Discard, stdout)
		close(c.events)
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			cmd.Process.Kill()
			select {
			case <-c.exited:
			case <-time.After(10 * time.Second):
				t.Errorf("child %d not reaped 10s after SIGKILL", cmd.Process.Pid)
			}
		}
		if t.Failed() {
			t.Logf("child %s (pid %d) stderr:\n%s\nstdout:\n%s", o.scenario, cmd.Process.Pid, c.stderr.String(), c.other.String())
		}
	})
	if o.cgroup != nil {
		if err := o.cgroup.add(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	c.stdin = stdin
	c.send("go")
	if !o.interactive {
		stdin.Close()
	}
	return c
}

// send writes one command line to an interactive child.
func (c *child) send(cmd string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		c.t.Fatalf("send %q to child: %v", cmd, err)
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// next returns the child's next event, which must be step (a prefix match
// when step ends in ':').
func (c *child) next(step string, timeout time.Duration) event {
	c.t.Helper()
	select {
	case ev, ok := <-c.events:
		if !ok {
			<-c.exited
			c.t.Fatalf("child exited (%v) before reporting %q", c.waitErr, step)
		}
		if ev.Step == "error" {
			c.t.Fatalf("child failed before %q: %s", step, ev.Msg)
		}
		if ev.Step != step && !(strings.HasSuffix(step, ":") && strings.HasPrefix(ev.Step, step)) {
			c.t.Fatalf("child reported %q (%+v), want %q", ev.Step, ev, step)
		}
		return ev
	case <-time.After(timeout):
		c.t.Fatalf("child did not report %q within %v (a trapped call left unanswered?); its threads:\n%s", step, timeout, taskStates(c.pid()))
	}
	panic("unreachable")
}

// taskStates describes where each thread of pid waits (state, wchan, the
// syscall and the kernel stack), so that a hang in a VM can be read from
// the test's log alone.
func taskStates(pid int) string {
	var b strings.Builder
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err.Error()
	}
	for _, e := range ents {
		dir := fmt.Sprintf("/proc/%d/task/%s/", pid, e.Name())
		read := func(name string) string {
			v, err := os.ReadFile(dir + name)
			if err != nil {
				return "(" + err.Error() + ")"
			}
			return strings.TrimSpace(string(v))
		}
		state := read("stat")
		if i := strings.LastIndexByte(state, ')'); i >= 0 && i+3 < len(state) {
			state = state[i+2 : i+3]
		}
		fmt.Fprintf(&b, "  tid %s state %s wchan %s syscall %s\n", e.Name(), state, read("wchan"), read("syscall"))
		for _, l := range strings.Split(read("stack"), "\n") {
			fmt.Fprintf(&b, "    %s\n", l)
		}
	}
	return b.String()
}

// wait waits for the child to exit and returns its wait error.
func (c *child) wait(timeout time.Duration) error {
	c.t.Helper()
	select {
	case <-c.exited:
		return c.waitErr
	case <-time.After(timeout):
		c.t.Fatalf("child %d did not exit within %v", c.pid(), timeout)
	}
	return nil
}

// mustExitZero waits for a clean exit, which the child makes only after
// reporting every step of its scenario.
func (c *child) mustExitZero() {
	c.t.Helper()
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		c.t.Fatalf("child %d did not exit within 20s", c.pid())
	}
	for ev := range c.events {
		if ev.Step == "error" {
			c.t.Fatalf("child failed: %s", ev.Msg)
		}
		c.t.Fatalf("unexpected extra child event %+v", ev)
	}
	if c.waitErr != nil {
		c.t.Fatalf("child exit: %v", c.waitErr)
	}
}

func isSignal(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}
