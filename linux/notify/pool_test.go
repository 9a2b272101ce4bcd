package notify

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The children of these tests are this test binary again, with
// envChild=<calls>: they install a filter that notifies on sysinfo, send
// the listener over fd 3, and make that many sysinfo calls, each of which
// must return answerVal (or, with envAnyAnswer, anything).
const (
	envChild     = "SYSVISOR_NOTIFY_POOL_CHILD"
	envAnyAnswer = "SYSVISOR_NOTIFY_POOL_ANY"
	envPar       = "SYSVISOR_NOTIFY_POOL_PAR"   // calls made from this many threads at once
	envDelay     = "SYSVISOR_NOTIFY_POOL_DELAY" // a pause before the first call
	answerVal    = 7
)

func TestMain(m *testing.M) {
	if calls := os.Getenv(envChild); calls != "" {
		if err := poolChild(calls); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func poolChild(calls string) error {
	n, err := strconv.Atoi(calls)
	if err != nil {
		return err
	}
	// seccomp_data.nr at offset 0: notify sysinfo, allow the rest.
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_SYSINFO, Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_USER_NOTIF},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	flags := unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
	fd, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(flags), uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if e != 0 {
		return fmt.Errorf("seccomp: %w", e)
	}
	if err := unix.Sendmsg(3, []byte{0}, unix.UnixRights(int(fd)), nil, 0); err != nil {
		return fmt.Errorf("send listener: %w", err)
	}
	unix.Close(int(fd))
	if d, err := time.ParseDuration(os.Getenv(envDelay)); err == nil {
		time.Sleep(d)
	}
	any := os.Getenv(envAnyAnswer) != ""
	par := 1
	if v := os.Getenv(envPar); v != "" {
		par, _ = strconv.Atoi(v)
	}
	errs := make(chan error, par)
	for range par {
		go func() {
			runtime.LockOSThread()
			var si unix.Sysinfo_t
			for i := range n / par {
				r, _, e := unix.Syscall(unix.SYS_SYSINFO, uintptr(unsafe.Pointer(&si)), 0, 0)
				if !any && (e != 0 || r != answerVal) {
					errs <- fmt.Errorf("call %d: got %d, %v", i, r, e)
					return
				}
			}
			errs <- nil
		}()
	}
	for range par {
		if err := <-errs; err != nil {
			return err
		}
	}
	return nil
}

// child is one process with a listener the test serves.
type child struct {
	cmd *exec.Cmd
	fd  *Fd
}

func startChild(t *testing.T, calls int, anyAnswer bool, env ...string) *child {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for nothing but /proc/<pid>/mem of others; run as root")
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	theirs := os.NewFile(uintptr(sp[1]), "child-sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+strconv.Itoa(calls))
	if anyAnswer {
		cmd.Env = append(cmd.Env, envAnyAnswer+"=1")
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	defer unix.Close(sp[0])
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(sp[0], buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("receive listener: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control message: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("rights: %v", err)
	}
	fd, err := NewFd(fds[0], "child")
	if err != nil {
		t.Fatal(err)
	}
	return &child{cmd: cmd, fd: fd}
}

func (c *child) wait(t *testing.T) {
	t.Helper()
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("child %d: %v", c.cmd.Process.Pid, err)
	}
}

// testListener answers every sysinfo with answerVal, counting, and fails
// the test if two of its notifications are ever handled at once.
type testListener struct {
	t        *testing.T
	fd       *Fd
	inline   bool
	block    chan struct{} // Handle waits for it to close (nil: no wait)
	inHandle chan struct{} // gets a value when Handle starts (nil: none)
	running  atomic.Int32
	handled  atomic.Int32
	ended    chan error
	handling atomic.Bool // Ended must not come while true
}

func newListener(t *testing.T, fd *Fd, inline bool) *testListener {
	return &testListener{t: t, fd: fd, inline: inline, ended: make(chan error, 1)}
}

func (l *testListener) Inline(*Notif) bool { return l.inline }

func (l *testListener) Handle(n *Notif) {
	l.handling.Store(true)
	defer l.handling.Store(false)
	if l.running.Add(1) != 1 {
		l.t.Errorf("two notifications of one listener handled at once")
	}
	defer l.running.Add(-1)
	if l.inHandle != nil {
		l.inHandle <- struct{}{}
	}
	if l.block != nil {
		<-l.block
	}
	l.handled.Add(1)
	if err := l.fd.Return(n.ID, answerVal); err != nil && !errors.Is(err, ErrGone) && !errors.Is(err, ErrClosed) {
		l.t.Errorf("send: %v", err)
	}
}

func (l *testListener) Ended(err error) {
	if l.handling.Load() {
		l.t.Errorf("Ended while Handle runs")
	}
	l.ended <- err
}

func (l *testListener) waitEnded(t *testing.T) error {
	t.Helper()
	select {
	case err := <-l.ended:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("listener never ended")
		return nil
	}
}

func openFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Many listeners on two threads: every call answered by its own listener,
// one at a time per listener, every listener ended when its task exits,
// and every fd closed.
func TestPoolServesManyListeners(t *testing.T) {
	const children, calls = 16, 300
	base := openFds(t)
	p, err := NewPool(2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	var cs []*child
	var ls []*testListener
	for i := range children {
		c := startChild(t, calls, false)
		l := newListener(t, c.fd, i%4 != 0) // some on goroutines
		if err := p.Add(c.fd, new(Notif), l, false); err != nil {
			t.Fatal(err)
		}
		cs, ls = append(cs, c), append(ls, l)
	}
	for i, c := range cs {
		c.wait(t)
		if err := ls[i].waitEnded(t); err != nil {
			t.Errorf("listener %d ended with %v, want nil (its task exited)", i, err)
		}
		// A signal in the child (Go's preemption) can take an
		// answered call's result away; the kernel restarts the call,
		// which is notified again: a few more, never fewer.
		if got := ls[i].handled.Load(); got < calls || got > calls+10 {
			t.Errorf("listener %d handled %d, want %d (up to 10 more)", i, got, calls)
		}
	}
	waitFds(t, base+2) // the pool's epoll and eventfd
}

func waitFds(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for openFds(t) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d fds open, want %d", openFds(t), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A handler that blocks on a goroutine holds up its own listener only:
// with a single pool thread, another listener's calls are all answered
// meanwhile, although the slow listener has a second notification
// waiting (its two threads call at once): the pool thread must not pick
// that one up and wait for the listener (EPOLLONESHOT).
func TestPoolSlowHandlerBlocksOnlyItsListener(t *testing.T) {
	p, err := NewPool(1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	slow := startChild(t, 2, false, envPar+"=2")
	ls := newListener(t, slow.fd, false)
	ls.block = make(chan struct{})
	ls.inHandle = make(chan struct{}, 2)
	if err := p.Add(slow.fd, new(Notif), ls, false); err != nil {
		t.Fatal(err)
	}
	<-ls.inHandle // the slow listener's first call is being handled
	waitPending(t, slow.cmd.Process.Pid, 2)
	fast := startChild(t, 500, false)
	lf := newListener(t, fast.fd, true)
	if err := p.Add(fast.fd, new(Notif), lf, false); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { fast.wait(t); close(exited) }()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		close(ls.block)
		t.Fatal("the fast listener was not served while the slow one's handler ran")
	}
	if err := lf.waitEnded(t); err != nil || lf.handled.Load() < 500 {
		t.Errorf("fast listener: ended %v after %d calls, want nil after 500", err, lf.handled.Load())
	}
	if got := ls.handled.Load(); got != 0 {
		t.Errorf("slow listener handled %d before its handler was let go", got)
	}
	close(ls.block)
	slow.wait(t)
	if err := ls.waitEnded(t); err != nil || ls.handled.Load() < 2 {
		t.Errorf("slow listener: ended %v after %d calls, want nil after 2", err, ls.handled.Load())
	}
}

// Close while a notification is in hand: the listener ends (ErrClosed)
// only after its Handle returned, the number is closed then, and the
// caller gets an answer (the kernel's, as the listener is gone).
func TestPoolCloseWhileHandling(t *testing.T) {
	base := openFds(t)
	p, err := NewPool(2)
	if err != nil {
		t.Fatal(err)
	}
	c := startChild(t, 3, true)
	l := newListener(t, c.fd, false)
	l.block = make(chan struct{})
	l.inHandle = make(chan struct{}, 3)
	if err := p.Add(c.fd, new(Notif), l, false); err != nil {
		t.Fatal(err)
	}
	<-l.inHandle
	c.fd.Close()
	select {
	case err := <-l.ended:
		t.Fatalf("ended (%v) while its Handle runs", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := c.fd.Control(func(int) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("Control after Close: %v, want ErrClosed", err)
	}
	close(l.block)
	if err := l.waitEnded(t); !errors.Is(err, ErrClosed) {
		t.Errorf("ended with %v, want ErrClosed", err)
	}
	c.wait(t) // its remaining calls fail once our copy is closed
	if got := l.handled.Load(); got != 1 {
		t.Errorf("handled %d after Close, want 1", got)
	}
	p.Stop()
	waitFds(t, base)
}

// Fd.Close racing with every use: the number is closed exactly once, after
// the last use (a double close would close another test's fd: caught by
// the descriptor count and by ioctls failing with EBADF).
func TestFdCloseRace(t *testing.T) {
	base := openFds(t)
	for range 200 {
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := NewFd(efd, "race")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 50 {
					err := fd.Control(func(n int) error {
						var st unix.Stat_t
						return unix.Fstat(n, &st)
					})
					if err != nil && !errors.Is(err, ErrClosed) {
						t.Errorf("fstat during close race: %v", err)
						return
					}
				}
			}()
		}
		fd.Close()
		wg.Wait()
		fd.Close()
	}
	waitFds(t, base)
}

// A receive on a closed Fd fails without touching the buffer: it may be a
// journal slot holding a notification whose answer failed at shutdown.
func TestRecvClosedKeepsJournal(t *testing.T) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := NewFd(efd, "closed")
	if err != nil {
		t.Fatal(err)
	}
	fd.Close()
	n := Notif{ID: 42, Pid: 7}
	if err := fd.Recv(&n); !errors.Is(err, ErrClosed) {
		t.Errorf("Recv on a closed Fd: %v, want ErrClosed", err)
	}
	if n.ID != 42 || n.Pid != 7 {
		t.Errorf("Recv on a closed Fd changed the journal slot: %+v", n)
	}
}

// waitPending waits until n threads of pid are in sysinfo.
func waitPending(t *testing.T, pid, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		in := 0
		for _, e := range ents {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, e.Name()))
			if err == nil && strings.HasPrefix(string(b), strconv.Itoa(unix.SYS_SYSINFO)+" ") {
				in++
			}
		}
		if in >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d threads of %d in sysinfo, want %d", in, pid, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An inline handler stuck in the caller's memory (here: blocked on a
// channel) holds its thread, but not the pool: the watchdog starts an
// extra thread that serves the other listeners, and it ends once idle.
func TestPoolStuckInlineHandler(t *testing.T) {
	p, err := NewPool(1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	stuck := startChild(t, 1, false)
	ls := newListener(t, stuck.fd, true)
	ls.block = make(chan struct{})
	ls.inHandle = make(chan struct{}, 1)
	if err := p.Add(stuck.fd, new(Notif), ls, false); err != nil {
		t.Fatal(err)
	}
	<-ls.inHandle
	other := startChild(t, 200, false)
	lo := newListener(t, other.fd, true)
	if err := p.Add(other.fd, new(Notif), lo, false); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { other.wait(t); close(exited) }()
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		close(ls.block)
		t.Fatal("a stuck inline handler held up another listener")
	}
	if p.Grown() < 1 {
		t.Errorf("served without an extra thread?")
	}
	close(ls.block)
	stuck.wait(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.mu.Lock()
		extra := p.extra
		p.mu.Unlock()
		if extra == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d extra threads still there 10 s after the stuck handler returned", extra)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An event with EPOLLERR and no EPOLLIN is what the kernel's poll of a
// listener answers when a signal interrupts its lock (Go's preemption
// signal does, on a pool thread): the listener is not over. The 7.x cell
// of the host matrix ended listeners on it, and their callers got ENOSYS.
func TestPoolErrEventKeepsListener(t *testing.T) {
	p, err := NewPool(1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	c := startChild(t, 50, false, envDelay+"=300ms")
	l := newListener(t, c.fd, true)
	if err := p.Add(c.fd, new(Notif), l, false); err != nil {
		t.Fatal(err)
	}
	m := (*p.members.Load())[0]
	m.ready(unix.EPOLLERR, &worker{})
	c.wait(t)
	if err := l.waitEnded(t); err != nil || l.handled.Load() < 50 {
		t.Errorf("ended with %v after %d calls, want nil after 50", err, l.handled.Load())
	}
}
