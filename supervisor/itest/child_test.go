package itest

// The child side of the integration tests: the test binary re-executed with
// SYSVISOR_ITEST_CHILD set. It installs a real seccomp filter (built by
// libseccomp, sysinfo -> SCMP_ACT_NOTIFY), hands the listener to the
// supervisor the way runc does, closes its own copy, and then makes trapped
// calls, reporting each outcome to the parent as one "ITEST {json}" line on
// stdout.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	seccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/supervisor/handoff"
)

// Environment of a child.
const (
	envScenario = "SYSVISOR_ITEST_CHILD"   // which scenario to run
	envSock     = "SYSVISOR_ITEST_SOCK"    // supervisor's seccomp socket
	envID       = "SYSVISOR_ITEST_ID"      // container id sent in the state
	envMeta     = "SYSVISOR_ITEST_META"    // listenerMetadata sent in the state
	envHandoff  = "SYSVISOR_ITEST_HANDOFF" // how to hand the listener over
	envArg      = "SYSVISOR_ITEST_ARG"     // scenario argument
)

// event is one line of a child's report.
type event struct {
	Step  string `json:"step"`
	Errno int    `json:"errno"`
	// Sysinfo figures as the caller saw them.
	Totalram uint64 `json:"totalram,omitempty"`
	Freeram  uint64 `json:"freeram,omitempty"`
	Unit     uint32 `json:"unit,omitempty"`
	Uptime   int64  `json:"uptime,omitempty"`
	Procs    uint16 `json:"procs,omitempty"`
	// Threads of the child just before and after the call.
	ThreadsBefore int `json:"threadsBefore,omitempty"`
	ThreadsAfter  int `json:"threadsAfter,omitempty"`
	// Extra facts, scenario-specific.
	Intact   bool     `json:"intact,omitempty"`
	Calls    int      `json:"calls,omitempty"`
	Failures []string `json:"failures,omitempty"`
	Tids     int      `json:"tids,omitempty"`
	// Round trips of the caller's trapped calls (scenario timed).
	P50Ns int64  `json:"p50Ns,omitempty"`
	P99Ns int64  `json:"p99Ns,omitempty"`
	Msg   string `json:"msg,omitempty"`
}

func emit(ev event) {
	b, _ := json.Marshal(ev)
	fmt.Printf("ITEST %s\n", b)
}

// TestItestChild is not a test: it is the entry point of the child
// processes the integration tests start.
func TestItestChild(t *testing.T) {
	scen := os.Getenv(envScenario)
	if scen == "" {
		t.Skip("helper process of the integration tests; runs only when started by them")
	}
	if err := runChild(scen); err != nil {
		emit(event{Step: "error", Msg: err.Error()})
		os.Exit(3)
	}
	os.Exit(0)
}

// stdin carries "go" once the parent is ready, then, for the interactive
// scenario, one command a line.
var stdin = bufio.NewReader(os.Stdin)

func runChild(scen string) error {
	// Wait until the parent has placed this process in its cgroups: the
	// supervisor reads them when the listener arrives.
	line, err := stdin.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "go" {
		return fmt.Errorf("waiting for go: %q %v", line, err)
	}
	switch scen {
	case "basic":
		return childBasic()
	case "interactive":
		return childInteractive()
	case "badptr":
		return childBadPointers()
	case "threads":
		return childThreads()
	case "handoff":
		return childHandoffOnly()
	case "uffd":
		return childUffd()
	case "hammer":
		return childHammer()
	case "queued":
		return childQueued()
	case "timed":
		return childTimed()
	case "rate":
		return childRate()
	}
	return fmt.Errorf("unknown scenario %q", scen)
}

// installFilter builds "allow everything, notify on sysinfo" with libseccomp
// and loads it on every thread of the process (TSYNC: the Go runtime runs
// goroutines on many threads), returning the listener fd.
func installFilter() (int, error) {
	f, err := seccomp.NewFilter(seccomp.ActAllow)
	if err != nil {
		return -1, err
	}
	defer f.Release()
	nr, err := seccomp.GetSyscallFromName("sysinfo")
	if err != nil {
		return -1, err
	}
	if err := f.AddRule(nr, seccomp.ActNotify); err != nil {
		return -1, err
	}
	// libseccomp-golang cannot ask for TSYNC with a listener, so export the
	// program libseccomp generated and load it with seccomp(2) directly.
	mfd, err := unix.MemfdCreate("itest-bpf", unix.MFD_CLOEXEC)
	if err != nil {
		return -1, err
	}
	mf := os.NewFile(uintptr(mfd), "itest-bpf")
	defer mf.Close()
	if err := f.ExportBPF(mf); err != nil {
		return -1, err
	}
	st, err := mf.Stat()
	if err != nil {
		return -1, err
	}
	prog := make([]byte, st.Size())
	if _, err := mf.ReadAt(prog, 0); err != nil {
		return -1, err
	}
	if len(prog) == 0 || len(prog)%8 != 0 {
		return -1, fmt.Errorf("exported BPF has %d bytes", len(prog))
	}
	insns := unsafe.Slice((*unix.SockFilter)(unsafe.Pointer(&prog[0])), len(prog)/8)
	fprog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	flags := unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_TSYNC | unix.SECCOMP_FILTER_FLAG_TSYNC_ESRCH
	fd, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, uintptr(flags), uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if e != 0 {
		return -1, fmt.Errorf("seccomp(SET_MODE_FILTER, NEW_LISTENER|TSYNC): %w", e)
	}
	return int(fd), nil
}

// setup installs the filter and hands the listener to the supervisor as
// SYSVISOR_ITEST_HANDOFF says, then closes this process's copy so that the
// supervisor holds the only one (as with runc).
func setup() error {
	fd, err := installFilter()
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	sock, id, meta := os.Getenv(envSock), os.Getenv(envID), os.Getenv(envMeta)
	st := specs.ContainerProcessState{
		Version:  specs.Version,
		Pid:      os.Getpid(),
		Metadata: meta,
		State: specs.State{Version: specs.Version, ID: id, Status: specs.StateCreating,
			Pid: os.Getpid(), Bundle: "/nonexistent/itest-bundle"},
	}
	switch mode := os.Getenv(envHandoff); mode {
	case "", "normal":
		return handoff.Send(sock, st, fd)
	case "delayed":
		// Send the state and the fd but keep the connection open: the
		// supervisor takes the listener only at EOF (handoffConn.Close).
		b, _ := json.Marshal(withFds(st))
		conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			return err
		}
		handoffConn = conn
		_, _, err = conn.WriteMsgUnix(b, unix.UnixRights(fd), nil)
		return err
	case "extrafd":
		// A second, unrelated fd beside the listener: the supervisor must
		// keep the listener and close the other.
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return err
		}
		defer unix.Close(p[0])
		extraW = p[1]
		st.Fds = []string{"extra", handoff.SeccompFdName}
		b, _ := json.Marshal(st)
		conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			return err
		}
		defer conn.Close()
		_, _, err = conn.WriteMsgUnix(b, unix.UnixRights(p[0], fd), nil)
		return err
	case "badpid":
		// A process that does not exist (above any pid_max).
		st.Pid = 1 << 30
		return handoff.Send(sock, st, fd)
	case "garbage":
		return sendRaw(sock, []byte(`{"ociVersion": "1.0.2", "fds": ["seccompFd"], "pid": `), fd)
	case "wrongname":
		st.Fds = []string{"notTheSeccompFd"}
		b, _ := json.Marshal(st)
		return sendRaw(sock, b, fd)
	default:
		return fmt.Errorf("unknown handoff mode %q", mode)
	}
}

// handoffConn is the open handoff connection of the "delayed" mode.
var handoffConn *net.UnixConn

// extraW is the write end of the pipe whose read end the "extrafd" mode
// passes along with the listener (-1: none).
var extraW = -1

func withFds(st specs.ContainerProcessState) specs.ContainerProcessState {
	st.Fds = []string{handoff.SeccompFdName}
	return st
}

func sendRaw(path string, b []byte, fd int) error {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	defer conn.Close()
	_, _, err = conn.WriteMsgUnix(b, unix.UnixRights(fd), nil)
	return err
}

// sysinfo makes the raw syscall (through Syscall, not RawSyscall, so that a
// thread blocked in the notification releases its P).
func sysinfo(addr uintptr) unix.Errno {
	_, _, e := unix.Syscall(unix.SYS_SYSINFO, addr, 0, 0)
	return e
}

func threads() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

func goodCall(step string) event {
	var si unix.Sysinfo_t
	before := threads()
	e := sysinfo(uintptr(unsafe.Pointer(&si)))
	after := threads()
	return event{Step: step, Errno: int(e), Totalram: si.Totalram, Freeram: si.Freeram, Unit: si.Unit,
		Uptime: si.Uptime, Procs: si.Procs, ThreadsBefore: before, ThreadsAfter: after}
}

func childBasic() error {
	if err := setup(); err != nil {
		return err
	}
	emit(goodCall("first"))
	emit(goodCall("second"))
	return nil
}

// childInteractive makes one trapped call for each "call" line on stdin.
func childInteractive() error {
	if err := setup(); err != nil {
		return err
	}
	for {
		line, err := stdin.ReadString('\n')
		if err != nil {
			return nil // parent closed stdin: done
		}
		switch cmd := strings.TrimSpace(line); cmd {
		case "call":
			emit(goodCall("call"))
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
	}
}

// badPointers are the buffers a buggy or hostile caller may pass. Each is
// tried natively (before the filter) and emulated (after), and the parent
// compares the two.
type badPointer struct {
	name string
	// prepare returns the address to pass and, for pointers into a hole
	// that some other mapping of the process could fill meanwhile (the Go
	// runtime, the race detector), a check that the hole is still one.
	prepare func() (addr uintptr, stillHole func() bool, err error)
	// check is memory that must stay zero (the kernel would not write it).
	check []byte
}

func fixed(addr uintptr) func() (uintptr, func() bool, error) {
	return func() (uintptr, func() bool, error) { return addr, nil, nil }
}

func badPointers() ([]badPointer, error) {
	page := os.Getpagesize()
	mm := func(pages, prot int) ([]byte, error) {
		return unix.Mmap(-1, 0, pages*page, prot, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	}
	ro, err := mm(1, unix.PROT_READ)
	if err != nil {
		return nil, err
	}
	none, err := mm(1, unix.PROT_NONE)
	if err != nil {
		return nil, err
	}
	// A writable page followed by a PROT_NONE one.
	guarded, err := mm(2, unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		return nil, err
	}
	if err := unix.Mprotect(guarded[page:], unix.PROT_NONE); err != nil {
		return nil, err
	}
	// hole maps pages [before | hole | guard] and unmaps the middle one:
	// the returned address is 'into' bytes before the hole.
	hole := func(before, into int) func() (uintptr, func() bool, error) {
		return func() (uintptr, func() bool, error) {
			m, err := mm(3, unix.PROT_NONE)
			if err != nil {
				return 0, nil, err
			}
			if before == unix.PROT_READ|unix.PROT_WRITE {
				if err := unix.Mprotect(m[:page], before); err != nil {
					return 0, nil, err
				}
			}
			// Unmap the middle page (unix.Munmap only takes whole
			// mappings it made).
			h := uintptr(unsafe.Pointer(&m[page]))
			if _, _, e := unix.Syscall(unix.SYS_MUNMAP, h, uintptr(page), 0); e != 0 {
				return 0, nil, fmt.Errorf("munmap: %w", e)
			}
			stillHole := func() bool {
				var vec [1]byte
				_, _, e := unix.Syscall(unix.SYS_MINCORE, h, uintptr(page), uintptr(unsafe.Pointer(&vec[0])))
				return e == unix.ENOMEM
			}
			return h - uintptr(into), stillHole, nil
		}
	}
	return []badPointer{
		{name: "null", prepare: fixed(0)},
		{name: "one", prepare: fixed(1)},
		{name: "unmapped", prepare: hole(unix.PROT_NONE, 0)},
		{name: "kernel", prepare: fixed(0xffff_ffff_ff60_0000 - 0x1000_0000)},
		{name: "readonly", prepare: fixed(uintptr(unsafe.Pointer(&ro[0]))), check: ro},
		{name: "protnone", prepare: fixed(uintptr(unsafe.Pointer(&none[0])))},
		{name: "into-protnone", prepare: fixed(uintptr(unsafe.Pointer(&guarded[page-16])))},
		{name: "into-hole", prepare: hole(unix.PROT_READ|unix.PROT_WRITE, 16)},
	}, nil
}

// try calls sysinfo on p, again if a hole it relied on was filled meanwhile.
func (p badPointer) try() (unix.Errno, error) {
	for attempt := 0; attempt < 10; attempt++ {
		addr, stillHole, err := p.prepare()
		if err != nil {
			return 0, err
		}
		e := sysinfo(addr)
		if stillHole == nil || stillHole() {
			return e, nil
		}
	}
	return 0, fmt.Errorf("%s: the hole kept being filled by other mappings", p.name)
}

func zero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func childBadPointers() error {
	ptrs, err := badPointers()
	if err != nil {
		return err
	}
	for _, p := range ptrs {
		e, err := p.try()
		if err != nil {
			return err
		}
		emit(event{Step: "native:" + p.name, Errno: int(e)})
	}
	if err := setup(); err != nil {
		return err
	}
	emit(goodCall("before"))
	for _, p := range ptrs {
		e, err := p.try()
		if err != nil {
			return err
		}
		ev := event{Step: "emulated:" + p.name, Errno: int(e), Intact: true}
		if p.check != nil {
			ev.Intact = zero(p.check)
		}
		emit(ev)
		// The supervisor must keep serving after every bad call.
		emit(goodCall("after:" + p.name))
	}
	return nil
}

// childThreads makes N*M trapped calls from N threads at once, each into its
// own buffer prefilled with a sentinel, and checks every answer.
func childThreads() error {
	var n, m int
	var want uint64
	if _, err := fmt.Sscanf(os.Getenv(envArg), "%d %d %d", &n, &m, &want); err != nil {
		return fmt.Errorf("arg %q: %w", os.Getenv(envArg), err)
	}
	if err := setup(); err != nil {
		return err
	}
	var (
		mu       sync.Mutex
		failures []string
		tids     = map[int]bool{}
		calls    int
		wg       sync.WaitGroup
		ready    sync.WaitGroup
		start    = make(chan struct{})
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tid := unix.Gettid()
			// Every thread locked before any starts: a goroutine that
			// started after another finished could run on that one's
			// unlocked thread, and the threads would be fewer than n.
			ready.Done()
			<-start
			var local []string
			for j := 0; j < m; j++ {
				var si unix.Sysinfo_t
				b := unsafe.Slice((*byte)(unsafe.Pointer(&si)), unsafe.Sizeof(si))
				for k := range b {
					b[k] = 0xa5
				}
				e := sysinfo(uintptr(unsafe.Pointer(&si)))
				switch {
				case e != 0:
					local = append(local, fmt.Sprintf("thread %d call %d: %v", tid, j, e))
				case si.Totalram*uint64(si.Unit) != want || si.Unit != 1 || si.Freeram > si.Totalram || si.Totalswap != 0:
					local = append(local, fmt.Sprintf("thread %d call %d: totalram %d unit %d freeram %d totalswap %d", tid, j, si.Totalram, si.Unit, si.Freeram, si.Totalswap))
				}
			}
			mu.Lock()
			failures = append(failures, local...)
			tids[tid] = true
			calls += m
			mu.Unlock()
		}()
	}
	ready.Wait()
	close(start)
	wg.Wait()
	if len(failures) > 10 {
		failures = append(failures[:10], fmt.Sprintf("... %d more", len(failures)-10))
	}
	emit(event{Step: "threads", Calls: calls, Failures: failures, Tids: len(tids)})
	return nil
}

// childHandoffOnly hands the listener over as configured, then makes one
// trapped call: if the supervisor refused the listener (and closed it), the
// kernel fails the call with ENOSYS; if it leaked the fd, the call hangs.
func childHandoffOnly() error {
	if err := setup(); err != nil {
		return err
	}
	emit(goodCall("call"))
	if extraW >= 0 {
		// EPIPE once no read end is left open anywhere.
		closed := false
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if _, err := unix.Write(extraW, []byte("x")); err == unix.EPIPE {
				closed = true
				break
			}
		}
		emit(event{Step: "extra", Intact: closed})
	}
	return nil
}

// userfaultfd ABI (linux/userfaultfd.h), absent from x/sys/unix.
const (
	uffdAPI            = 0xAA
	uffdioAPI          = 0xc018aa3f // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdioRegister     = 0xc020aa00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	uffdioZeropage     = 0xc020aa04 // _IOWR(0xAA, 0x04, struct uffdio_zeropage)
	uffdRegisterMiss   = 1
	uffdEventPagefault = 0x12
)

type uffd struct {
	fd   int
	base uintptr
	size int
	mem  []byte
}

// newUffd maps one page whose first touch waits for this process to serve
// the fault.
func newUffd() (*uffd, error) {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if e != 0 {
		return nil, fmt.Errorf("userfaultfd: %w", e)
	}
	api := struct{ API, Features, Ioctls uint64 }{API: uffdAPI}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uffdioAPI, uintptr(unsafe.Pointer(&api))); e != 0 {
		return nil, fmt.Errorf("UFFDIO_API: %w", e)
	}
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	u := &uffd{fd: int(fd), base: uintptr(unsafe.Pointer(&mem[0])), size: page, mem: mem}
	reg := struct{ Start, Len, Mode, Ioctls uint64 }{Start: uint64(u.base), Len: uint64(page), Mode: uffdRegisterMiss}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uffdioRegister, uintptr(unsafe.Pointer(&reg))); e != 0 {
		return nil, fmt.Errorf("UFFDIO_REGISTER: %w", e)
	}
	return u, nil
}

// fault waits up to timeout for a page-fault event on the page.
func (u *uffd) fault(timeout time.Duration) (bool, error) {
	pfd := []unix.PollFd{{Fd: int32(u.fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd, int(timeout/time.Millisecond))
	if err == unix.EINTR {
		// The Go runtime's own signals (preemption, SIGCHLD) land
		// here too: no event yet, the caller polls again.
		return false, nil
	}
	if err != nil || n == 0 {
		return false, err
	}
	var msg [32]byte // struct uffd_msg
	if _, err := unix.Read(u.fd, msg[:]); err != nil {
		return false, fmt.Errorf("read userfaultfd: %w", err)
	}
	if msg[0] != uffdEventPagefault {
		return false, fmt.Errorf("userfaultfd event %#x, want a page fault", msg[0])
	}
	return true, nil
}

// serve fills the page with zeros, waking whoever faulted on it.
func (u *uffd) serve() error {
	zp := struct {
		Start, Len, Mode uint64
		Zeropage         int64
	}{Start: uint64(u.base), Len: uint64(u.size)}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(u.fd), uffdioZeropage, uintptr(unsafe.Pointer(&zp))); e != 0 {
		return fmt.Errorf("UFFDIO_ZEROPAGE: %w", e)
	}
	return nil
}

// callServing calls sysinfo(u.base), serving a fault on the page if one is
// raised, and reports whether one was and what the call returned.
func callServing(u *uffd) (faulted bool, errno unix.Errno, err error) {
	done := make(chan unix.Errno, 1)
	go func() {
		runtime.LockOSThread()
		done <- sysinfo(u.base)
	}()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		select {
		case e := <-done:
			return faulted, e, nil
		default:
		}
		if faulted {
			time.Sleep(time.Millisecond)
			continue
		}
		if faulted, err = u.fault(10 * time.Millisecond); err != nil {
			return faulted, 0, err
		}
		if faulted {
			if err := u.serve(); err != nil {
				return faulted, 0, err
			}
		}
	}
	return faulted, 0, errors.New("sysinfo into the userfaultfd page still blocked after 15s")
}

// childUffd passes a buffer that only this process can make present
// (userfaultfd, missing mode). The kernel's own sysinfo faults and waits for
// the fault to be served; the supervisor writes through /proc/<pid>/mem,
// whose remote faults userfaultfd refuses, so the emulated call fails fast
// with EFAULT rather than parking a supervisor thread on the container.
func childUffd() error {
	native, err := newUffd()
	if err != nil {
		return err
	}
	faulted, e, err := callServing(native)
	if err != nil {
		return err
	}
	emit(event{Step: "native", Errno: int(e), Intact: !faulted})
	if err := setup(); err != nil {
		return err
	}
	emulated, err := newUffd()
	if err != nil {
		return err
	}
	faulted, e, err = callServing(emulated)
	if err != nil {
		return err
	}
	// A fault raised by the supervisor would be pending on the uffd now.
	late, err := emulated.fault(0)
	if err != nil {
		return err
	}
	emit(event{Step: "emulated", Errno: int(e), Intact: !faulted && !late})
	emit(goodCall("after"))
	return nil
}

// childHammer: N threads call sysinfo back to back until a call fails, so
// that at any moment most of them have a notification pending (queued in the
// kernel or in the supervisor's handler). The parent kills the child or
// stops the supervisor meanwhile.
func childHammer() error {
	var n int
	var want uint64
	if _, err := fmt.Sscanf(os.Getenv(envArg), "%d %d", &n, &want); err != nil {
		return fmt.Errorf("arg %q: %w", os.Getenv(envArg), err)
	}
	if err := setup(); err != nil {
		return err
	}
	var (
		mu       sync.Mutex
		ok       int
		failures []string
		errnos   = map[string]int{}
		wg       sync.WaitGroup
		warm     sync.WaitGroup
	)
	warm.Add(n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			first := true
			for calls := 0; ; calls++ {
				var si unix.Sysinfo_t
				e := sysinfo(uintptr(unsafe.Pointer(&si)))
				if first {
					warm.Done()
					first = false
				}
				if e != 0 {
					mu.Lock()
					errnos[e.Error()]++
					ok += calls
					mu.Unlock()
					return
				}
				if si.Totalram*uint64(si.Unit) != want {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("totalram %d unit %d", si.Totalram, si.Unit))
					mu.Unlock()
				}
			}
		}()
	}
	warm.Wait()
	emit(event{Step: "hammering"})
	wg.Wait()
	if len(failures) > 10 {
		failures = failures[:10]
	}
	b, _ := json.Marshal(errnos)
	emit(event{Step: "hammer", Calls: ok, Failures: failures, Msg: string(b)})
	return nil
}

// childQueued traps calls before the supervisor has the listener: the
// handoff connection stays open (the supervisor reads until EOF) while n
// threads block in sysinfo, so their notifications wait in the kernel.
func childQueued() error {
	var n int
	var want uint64
	if _, err := fmt.Sscanf(os.Getenv(envArg), "%d %d", &n, &want); err != nil {
		return fmt.Errorf("arg %q: %w", os.Getenv(envArg), err)
	}
	os.Setenv(envHandoff, "delayed")
	if err := setup(); err != nil {
		return err
	}
	results := make(chan string, n)
	for i := 0; i < n; i++ {
		go func() {
			runtime.LockOSThread()
			var si unix.Sysinfo_t
			e := sysinfo(uintptr(unsafe.Pointer(&si)))
			switch {
			case e != 0:
				results <- e.Error()
			case si.Totalram*uint64(si.Unit) != want:
				results <- fmt.Sprintf("totalram %d unit %d", si.Totalram, si.Unit)
			default:
				results <- ""
			}
		}()
	}
	// Wait until every thread is blocked in the trapped call.
	deadline := time.Now().Add(10 * time.Second)
	for blockedInSysinfo(os.Getpid()) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d threads blocked in sysinfo", blockedInSysinfo(os.Getpid()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	emit(event{Step: "queued", Calls: n})
	// The parent checks that nothing was answered yet, then says "release"
	// (or kills this process).
	if line, err := stdin.ReadString('\n'); err != nil || strings.TrimSpace(line) != "release" {
		return fmt.Errorf("waiting for release: %q %v", line, err)
	}
	if err := handoffConn.Close(); err != nil {
		return err
	}
	var failures []string
	for i := 0; i < n; i++ {
		select {
		case r := <-results:
			if r != "" {
				failures = append(failures, r)
			}
		case <-time.After(20 * time.Second):
			return fmt.Errorf("%d of %d queued calls unanswered after 20s", n-i, n)
		}
	}
	emit(event{Step: "answered", Calls: n, Failures: failures})
	return nil
}

// childTimed makes N trapped calls one after another and reports how long
// they took as the caller sees them: the supervisor's own latency for each
// lies inside the caller's.
func childTimed() error {
	var n int
	if _, err := fmt.Sscanf(os.Getenv(envArg), "%d", &n); err != nil || n < 1 {
		return fmt.Errorf("arg %q: want a call count", os.Getenv(envArg))
	}
	if err := setup(); err != nil {
		return err
	}
	runtime.LockOSThread()
	durs := make([]time.Duration, n)
	var si unix.Sysinfo_t
	for i := range durs {
		t0 := time.Now()
		if e := sysinfo(uintptr(unsafe.Pointer(&si))); e != 0 {
			return fmt.Errorf("call %d: %w", i, e)
		}
		durs[i] = time.Since(t0)
	}
	slices.Sort(durs)
	emit(event{Step: "timed", Calls: n, P50Ns: int64(durs[(n+1)/2-1]), P99Ns: int64(durs[(n*99+99)/100-1])})
	// An interactive parent keeps the container alive until it closes stdin.
	io.Copy(io.Discard, stdin)
	return nil
}

// childRate makes trapped calls back to back for the given number of
// milliseconds and reports how many succeeded (Calls) and how each failure
// failed (Msg: errno name -> count).
func childRate() error {
	var ms int
	if _, err := fmt.Sscanf(os.Getenv(envArg), "%d", &ms); err != nil {
		return fmt.Errorf("arg %q: want milliseconds", os.Getenv(envArg))
	}
	if err := setup(); err != nil {
		return err
	}
	errnos := map[string]int{}
	ok := 0
	var si unix.Sysinfo_t
	for end := time.Now().Add(time.Duration(ms) * time.Millisecond); time.Now().Before(end); {
		if e := sysinfo(uintptr(unsafe.Pointer(&si))); e != 0 {
			errnos[unix.ErrnoName(e)]++
		} else {
			ok++
		}
	}
	b, _ := json.Marshal(errnos)
	emit(event{Step: "rate", Calls: ok, Msg: string(b)})
	return nil
}

// blockedInSysinfo counts pid's threads currently inside sysinfo(2).
func blockedInSysinfo(pid int) int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, e.Name()))
		if err == nil && strings.HasPrefix(string(b), strconv.Itoa(unix.SYS_SYSINFO)+" ") {
			n++
		}
	}
	return n
}
