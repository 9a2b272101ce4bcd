package viewfs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/holder"
	"github.com/sysvisor/sysvisor/linux/sysctl"
)

// dupHeld dups the server's fds, as the holder keeps them.
func dupHeld(t *testing.T, s *Server) Held {
	t.Helper()
	h := s.Held()
	f, err := unix.FcntlInt(uintptr(h.Fuse), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	j, err := unix.FcntlInt(uintptr(h.Journal), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return Held{Fuse: f, Journal: j}
}

func adopt(t *testing.T, rd string, h Held, initial ...Entry) *Server {
	t.Helper()
	s, err := Start(rd, h, initial, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Unmount)
	return s
}

// readAt0 reads f from offset 0 in the background.
func readAt0(f *os.File) <-chan string {
	ch := make(chan string, 1)
	go func() {
		buf := make([]byte, 256)
		n, err := f.ReadAt(buf, 0)
		if n == 0 && err != nil {
			ch <- "error: " + err.Error()
			return
		}
		ch <- string(buf[:n])
	}()
	return ch
}

// A restarted server adopts the mount: files opened before read fresh
// content, new opens work, and a reader that came while no server ran
// waits and then gets its answer.
func TestAdoptRestart(t *testing.T) {
	needFUSE(t)
	rd := runDir(t)
	c := fixtureContainer(t)
	last := new(atomic.Uint32)
	last.Store(100)
	c.lastPid = last
	s1, err := Start(rd, Held{Fuse: -1, Journal: -1}, nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	dir := add(t, s1, "a", 5, c)
	f, err := os.Open(filepath.Join(dir, "proc/loadavg"))
	if err != nil {
		t.Fatal(err)
	}
	// Closed after the servers stop (cleanups run last first): a close
	// waits for a read in progress.
	t.Cleanup(func() { f.Close() })
	if got := <-readAt0(f); got != "0.50 0.25 0.00 1/4 100\n" {
		t.Fatalf("before restart: %q", got)
	}
	var before unix.Stat_t
	unix.Stat(filepath.Join(dir, "proc/loadavg"), &before)
	held := dupHeld(t, s1)
	s1.Stop()
	if !mountedAt(filepath.Join(rd, "views")) {
		t.Fatal("Stop dropped the mount")
	}
	last.Store(101)
	waiting := readAt0(f)
	select {
	case got := <-waiting:
		t.Fatalf("read with no server running: %q", got)
	case <-time.After(200 * time.Millisecond):
	}
	s2 := adopt(t, rd, held, Entry{"a", 5, c})
	select {
	case got := <-waiting:
		if got != "0.50 0.25 0.00 1/4 101\n" {
			t.Errorf("waiting reader got %q", got)
		}
	case <-time.After(time.Second):
		t.Fatal("waiting reader not answered after the restart")
	}
	last.Store(102)
	if got := <-readAt0(f); got != "0.50 0.25 0.00 1/4 102\n" {
		t.Errorf("file opened before the restart: %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "proc/loadavg")); got != "0.50 0.25 0.00 1/4 102\n" {
		t.Errorf("new open: %q", got)
	}
	var after unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "proc/loadavg"), &after); err != nil || after.Ino != before.Ino || after.Ino != 5<<16|36 {
		t.Errorf("ino %#x (%v), before the restart %#x", after.Ino, err, before.Ino)
	}
	// A second restart, without Stop's courtesy: the fds simply change
	// hands.
	held = dupHeld(t, s2)
	s2.Stop()
	adopt(t, rd, held, Entry{"a", 5, c})
	if got := readFile(t, filepath.Join(dir, "proc/loadavg")); got != "0.50 0.25 0.00 1/4 102\n" {
		t.Errorf("after a second restart: %q", got)
	}
}

// More readers than workers wait while no server runs: the successor
// answers them all, and reads its adoption probe among them (a worker
// that waited for a container to be added would starve the probe).
func TestAdoptManyWaiting(t *testing.T) {
	needFUSE(t)
	rd := runDir(t)
	s1, err := Start(rd, Held{Fuse: -1, Journal: -1}, nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	var entries []Entry
	var files []*os.File
	for i := 1; i <= 3*workers; i++ {
		e := Entry{fmt.Sprintf("c%d", i), uint64(i), fixtureContainer(t)}
		f, err := os.Open(filepath.Join(add(t, s1, e.ID, e.Slot, e.C), "proc/loadavg"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() }) // after the servers stop
		entries, files = append(entries, e), append(files, f)
	}
	held := dupHeld(t, s1)
	s1.Stop()
	var waiting []<-chan string
	for _, f := range files {
		waiting = append(waiting, readAt0(f))
	}
	time.Sleep(200 * time.Millisecond) // queued in the kernel by now
	t0 := time.Now()
	adopt(t, rd, held, entries...)
	timeout := time.After(2 * time.Second)
	for i, ch := range waiting {
		select {
		case got := <-ch:
			if !strings.HasPrefix(got, "0.50 0.25 0.00 ") {
				t.Errorf("reader %d got %q", i, got)
			}
		case <-timeout:
			t.Fatalf("reader %d not answered %v after the adoption began", i, time.Since(t0))
		}
	}
	t.Logf("adopted and %d waiting readers answered in %v", len(waiting), time.Since(t0))
}

// A request read by a worker that died before answering is answered by
// the successor, from the journal.
func TestAdoptAnswersInFlight(t *testing.T) {
	needFUSE(t)
	rd := runDir(t)
	c := fixtureContainer(t)
	s1, f, waiting := readNobodyAnswers(t, rd, c)
	t.Cleanup(func() { f.Close() }) // after the servers stop
	select {
	case got := <-waiting:
		t.Fatalf("read answered by a dead worker: %q", got)
	case <-time.After(200 * time.Millisecond):
	}
	if n := len(s1.j.inFlight()); n != 1 {
		t.Errorf("%d requests in flight in the journal, want 1", n)
	}
	held := dupHeld(t, s1)
	s1.Stop()
	testHookAfterRead = nil
	s2 := adopt(t, rd, held, Entry{"a", 1, c})
	select {
	case got := <-waiting:
		if got != "0.50 0.25 0.00 1/4 9\n" {
			t.Errorf("in-flight read got %q", got)
		}
	case <-time.After(time.Second):
		t.Fatal("in-flight read not answered by the successor")
	}
	// The slot is freed right after the reply went out.
	for deadline := time.Now().Add(time.Second); len(s2.j.inFlight()) != 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(s2.j.inFlight()); n != 0 {
		t.Errorf("%d requests still in flight", n)
	}
}

var logMu sync.Mutex

// A journal of an unknown version is refused: the server serves, without
// re-processing.
func TestAdoptUnknownJournal(t *testing.T) {
	needFUSE(t)
	rd := runDir(t)
	s1 := start(t, rd)
	dir := add(t, s1, "a", 1, fixtureContainer(t))
	held := dupHeld(t, s1)
	s1.Stop()
	mem, err := unix.Mmap(held.Journal, 0, journalHeader, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	ne.PutUint32(mem[8:], 99)
	unix.Munmap(mem)
	var logs bytes.Buffer
	s2, err := Start(rd, held, []Entry{{"a", 1, fixtureContainer(t)}}, hclog.New(&hclog.LoggerOptions{Output: &logs, Mutex: &logMu}))
	if err != nil {
		t.Fatal(err)
	}
	readFile(t, filepath.Join(dir, "proc/meminfo"))
	s2.Unmount()
	t.Log(logs.String())
	if !strings.Contains(logs.String(), "version 99") {
		t.Errorf("no error about the journal logged: %s", logs.String())
	}
}

// Start refuses an fd that does not serve <runDir>/views: a fresh,
// unmounted /dev/fuse fd, or another mount's.
func TestAdoptWrongFd(t *testing.T) {
	needFUSE(t)
	rd := runDir(t)
	start(t, rd)
	fresh, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	if _, err := Start(rd, Held{Fuse: fresh, Journal: -1}, nil, hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "not a mounted FUSE connection") {
		t.Errorf("adopting a fresh fd: %v", err)
	}
	other := start(t, runDir(t))
	add(t, other, "x", 1, fixtureContainer(t))
	h := dupHeld(t, other)
	_, err = Start(rd, h, nil, hclog.NewNullLogger())
	if err == nil || !strings.Contains(err.Error(), "does not serve "+filepath.Join(rd, "views")) {
		t.Errorf("adopting another mount's fd: %v", err)
	}
	t.Logf("error: %v", err)
	waitGoroutines(t, before+workers) // other's workers
}

// Isolation: a uid of container A reads A's views and nothing of B's,
// whatever the path; a uid of no container cannot list the root.
func TestIsolation(t *testing.T) {
	needFUSE(t)
	rd := runDir(t)
	s := start(t, rd)
	a, b := fixtureContainer(t), fixtureContainer(t)
	a.id, a.base = "a", 100000
	b.id, b.base = "b", 200000
	da, db := add(t, s, "a", 1, a), add(t, s, "b", 2, b)
	// Host root reads both first: the kernel caches every name.
	readFile(t, filepath.Join(da, "proc/meminfo"))
	readFile(t, filepath.Join(db, "proc/meminfo"))
	run := func(uid uint32, name string, args ...string) (string, error) {
		cmd := exec.Command(name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	views := filepath.Join(rd, "views")
	aUser := uint32(100000 + 1000)
	if out, err := run(aUser, "cat", filepath.Join(da, "proc/meminfo")); err != nil || !strings.HasPrefix(out, "MemTotal:") {
		t.Errorf("a's user reading a's meminfo: %q %v", out, err)
	}
	for _, p := range []string{
		filepath.Join(db, "proc/meminfo"),
		views + "/a/../b/proc/meminfo",
		views + "/a/proc/../../b/proc/loadavg",
		views + "/b/sys/devices/system/cpu/online",
	} {
		if out, err := run(aUser, "cat", p); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("a's user reading %s: %q %v, want EACCES", p, out, err)
		}
	}
	if out, err := run(aUser, "ls", views+"/b/proc"); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("a's user listing b's proc: %q %v", out, err)
	}
	// b's root cannot use a's sysctls either (the mode would let the
	// owner only, and the owner is a's root).
	if out, err := run(200000, "cat", views+"/a/proc/sys/kernel/panic"); err == nil {
		t.Errorf("b's root reading a's sysctl: %q", out)
	}
	for _, uid := range []uint32{1234, aUser} {
		if out, err := run(uid, "ls", views); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("uid %d listing the root: %q %v, want EACCES", uid, out, err)
		}
	}
	if out, err := run(1234, "cat", filepath.Join(da, "proc/meminfo")); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("uid 1234 reading a's meminfo: %q %v", out, err)
	}
	if out, err := run(1234, "stat", "-c", "%i", views+"/c-not-added"); err == nil {
		t.Errorf("stat of a name not added: %q", out)
	}
	if out, err := run(aUser, "ls", da+"/proc"); err != nil || !strings.Contains(out, "meminfo") {
		t.Errorf("a's user listing a's proc: %q %v", out, err)
	}
}

func osThreads(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatal("no Threads in /proc/self/status")
	return 0
}

// Neither threads nor goroutines grow with the containers served.
func TestThreadsFlat(t *testing.T) {
	needFUSE(t)
	g0, th0 := runtime.NumGoroutine(), osThreads(t)
	s := start(t, runDir(t))
	c := fixtureContainer(t)
	for i := range 200 {
		id := "c" + strconv.Itoa(i)
		dir := add(t, s, id, uint64(i+1), c)
		if i%20 == 0 {
			readFile(t, filepath.Join(dir, "proc/meminfo"))
		}
	}
	time.Sleep(50 * time.Millisecond)
	g, th := runtime.NumGoroutine(), osThreads(t)
	t.Logf("200 containers: goroutines %d → %d, OS threads %d → %d", g0, g, th0, th)
	if g-g0 > workers+2 {
		t.Errorf("goroutines grew by %d for 200 containers (workers %d)", g-g0, workers)
	}
	// GOMAXPROCS threads, sysmon, the poller, a few blocked in syscalls
	// at some point: a bound that does not depend on containers. Threads
	// earlier tests left idle are reused, never ended, so they count too.
	if limit := max(th0, runtime.GOMAXPROCS(0)+10); th > limit {
		t.Errorf("%d OS threads with 200 containers, more than %d", th, limit)
	}
}

// Every view and every sysctl has an entry number, numbers are unique and
// fit 16 bits, and the numbers given out stay what they are.
func TestEntryTable(t *testing.T) {
	seen := map[uint16]string{}
	paths := map[string]bool{}
	for _, e := range entryTable {
		if p, dup := seen[e.num]; dup {
			t.Errorf("entry %d given to %s and %s", e.num, p, e.path)
		}
		seen[e.num], paths[e.path] = e.path, true
	}
	var all []*sysctl.Sysctl
	for i := range sysctl.Table {
		all = append(all, &sysctl.Table[i])
	}
	if _, err := buildTree(Files, all); err != nil {
		t.Error(err)
	}
	// Frozen: a successor must answer these ids as its predecessor did.
	for num, p := range map[uint16]string{0: "", 1: "proc", 2: "proc/sys", 33: "proc/meminfo", 39: "sys/devices/system/cpu/online",
		40: productUUID, 256: "proc/sys/kernel/panic", 265: "proc/sys/kernel/pid_max", 273: "sys/module/nf_conntrack/parameters/hashsize"} {
		if seen[num] != p {
			t.Errorf("entry %d is %q, was %q: entries are never renumbered", num, seen[num], p)
		}
	}
}

// Bad input from the kernel gets an errno, never a panic. The server
// writes its replies into a pipe here.
func TestBadRequests(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	j, err := newJournal()
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	tr, err := buildTree(Files, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{log: hclog.NewNullLogger(), tree: tr, fd: int(w.Fd()), j: j, byID: map[string]*ctr{}, bySlot: map[uint64]*ctr{},
		retired: map[uint64]bool{}, initDone: make(chan struct{}), fatal: make(chan error, 1)}
	if _, err := s.add("a", 1, fixtureContainer(t)); err != nil {
		t.Fatal(err)
	}
	req := func(op uint32, node uint64, uid uint32, arg []byte) []byte {
		b := make([]byte, inHeaderSize+len(arg))
		ne.PutUint32(b[0:], uint32(len(b)))
		ne.PutUint32(b[4:], op)
		ne.PutUint64(b[8:], 77)
		ne.PutUint64(b[16:], node)
		ne.PutUint32(b[24:], uid)
		copy(b[inHeaderSize:], arg)
		return b
	}
	answer := func() int32 {
		buf := make([]byte, 1<<16)
		n, err := r.Read(buf)
		if err != nil || n < outHeaderSize {
			t.Fatalf("reply: %d bytes, %v", n, err)
		}
		return -int32(ne.Uint32(buf[4:]))
	}
	meminfo := nodeID(1, 33)
	farRead := make([]byte, readInSize)
	ne.PutUint64(farRead[8:], 1<<63-1)
	ne.PutUint32(farRead[16:], 4096)
	for _, c := range []struct {
		name string
		req  []byte
		want unix.Errno
	}{
		{"name without NUL", req(opLookup, rootID, 0, []byte("a")), unix.EINVAL},
		{"unknown node", req(opGetattr, nodeID(9, 33), 0, make([]byte, 16)), unix.ESTALE},
		{"unknown entry", req(opGetattr, nodeID(1, 999), 0, make([]byte, 16)), unix.ESTALE},
		{"short read_in", req(opRead, meminfo, 0, make([]byte, 8)), unix.EINVAL},
		{"short open_in", req(opOpen, meminfo, 0, nil), unix.EINVAL},
		{"short write_in", req(opWrite, meminfo, 0, nil), unix.EBADF},
		{"short setattr_in", req(opSetattr, meminfo, 0, nil), unix.EINVAL},
		{"len beyond the data", append(req(opLookup, rootID, 0, nil)[:4:4], make([]byte, 36)...), unix.EIO},
		{"other container's uid", req(opGetattr, meminfo, 300000, make([]byte, 16)), unix.EACCES},
		{"unknown opcode", req(4242, meminfo, 0, nil), unix.ENOSYS},
		{"read past the end", req(opRead, meminfo, 0, farRead), 0},
	} {
		if c.name == "len beyond the data" {
			ne.PutUint32(c.req[0:], 4096)
		}
		s.dispatch(c.req)
		if got := answer(); got != int32(c.want) {
			t.Errorf("%s: errno %d, want %d (%x)", c.name, got, c.want, c.req)
		}
	}
	s.dispatch(make([]byte, 20)) // too short for a header: no reply, no panic
	// Random requests: no panic.
	go func() {
		buf := make([]byte, 1<<16)
		for {
			if _, err := r.Read(buf); err != nil {
				return
			}
		}
	}()
	rnd := make([]byte, 200)
	for i := range 5000 {
		for k := range rnd {
			rnd[k] = byte(i*7 + k*13 + i*k)
		}
		op := uint32(i % 50)
		if op == opInit || op == opWrite {
			continue // INIT closes initDone once; WRITE would record sysctls
		}
		s.dispatch(req(op, []uint64{rootID, meminfo, nodeID(1, 0), nodeID(1, 1)}[i%4], 0, rnd[:i%len(rnd)]))
	}
}

// readNobodyAnswers serves container c as "a" and starts a read of its
// loadavg whose READ the worker takes into the journal and never answers,
// as if the process died right after reading it.
func readNobodyAnswers(t *testing.T, rd string, c Container) (*Server, *os.File, <-chan string) {
	t.Helper()
	var armed atomic.Bool
	testHookAfterRead = func(req []byte) bool {
		h, _ := parseInHeader(req)
		return h.Opcode == opRead && armed.CompareAndSwap(true, false)
	}
	s1, err := Start(rd, Held{Fuse: -1, Journal: -1}, nil, hclog.NewNullLogger())
	if err != nil {
		testHookAfterRead = nil
		t.Fatal(err)
	}
	dir := add(t, s1, "a", 1, c)
	f, err := os.Open(filepath.Join(dir, "proc/loadavg"))
	if err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	return s1, f, readAt0(f)
}

// When no sysvisord comes back, the holder fails the requests a dead one
// had read and not answered (holder.FailViewsInFlight, from this
// journal's header): the reader gets EIO instead of waiting for good. Only
// the requests the holder picks are answered.
func TestHolderFailsInFlight(t *testing.T) {
	needFUSE(t)
	rd := runDir(t)
	s1, f, waiting := readNobodyAnswers(t, rd, fixtureContainer(t))
	time.Sleep(200 * time.Millisecond)
	held := dupHeld(t, s1)
	s1.Stop()
	testHookAfterRead = nil
	t.Cleanup(func() {
		unix.Unmount(filepath.Join(rd, "views"), unix.MNT_DETACH)
		unix.Close(held.Fuse)
		unix.Close(held.Journal)
		f.Close()
	})
	if n := holder.FailViewsInFlight(held.Fuse, held.Journal, unix.EIO, func(uint32) bool { return false }); n != 0 {
		t.Fatalf("answered %d requests it was told to leave", n)
	}
	select {
	case got := <-waiting:
		t.Fatalf("read answered with nobody serving: %q", got)
	case <-time.After(100 * time.Millisecond):
	}
	me := uint32(os.Getpid())
	if n := holder.FailViewsInFlight(held.Fuse, held.Journal, unix.EIO, func(pid uint32) bool { return pid == me || pid != 0 }); n != 1 {
		t.Fatalf("answered %d requests, want the 1 in flight", n)
	}
	select {
	case got := <-waiting:
		if !strings.Contains(got, "input/output error") {
			t.Errorf("in-flight read got %q, want EIO", got)
		}
	case <-time.After(time.Second):
		t.Fatal("in-flight read not failed by the holder")
	}
}
