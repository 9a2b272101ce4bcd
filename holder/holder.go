// Package holder keeps the kernel objects a container's service depends on
// alive while sysvisord is not running: every seccomp listener fd, the views
// mount's /dev/fuse fd and the journals of requests in flight. The kernel
// ends a seccomp listener (trapped calls then fail with ENOSYS for good) and a
// FUSE connection when the last fd to them closes; with a copy here, a
// crash, a restart or an upgrade of sysvisord is a pause, not an outage.
//
// The holder (cmd/sysvisor-holder) is meant never to restart: it parses
// nothing a container controls, talks to host root only, and does three
// things. It keeps named fds that sysvisord deposits and hands them back;
// it drops an fd the kernel reports hung up (a listener whose container
// exited, an aborted FUSE connection); and while no sysvisord has been
// attached for longer than its bound, it answers the containers' trapped
// calls with an errno instead of letting them wait forever.
//
// Protocol, on a SOCK_SEQPACKET socket (Socket under the run directory):
// one message per operation, op and name separated by a NUL.
//
//	PUT\0name  + one fd (SCM_RIGHTS)  keep fd as name (replacing one of that name)
//	DEL\0name                         close and forget name
//	LIST                              reply: one "FD\0name" message with its fd per held fd, then "END"
//
// The connection itself is the attachment: while one is open, sysvisord is
// serving. A new connection replaces the old one.
package holder

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

const (
	// Socket is the holder's socket under the run directory (0600).
	Socket = "holder.sock"
	// Lockfile keeps one holder per run directory.
	Lockfile = "holder.lock"
	// Pidfile names the holder's pid, for scripts that stop it.
	Pidfile = "holder.pid"
	// maxMsg bounds a message: an op, a NUL and a name.
	maxMsg = 512
)

// Name prefixes. A listener's name carries its journal slot, its container
// and whether it is init's: "seccomp/<slot>/<id>/init" or ".../exec".
const (
	PrefixSeccomp  = "seccomp/"
	SeccompJournal = "journal/seccomp"
	ViewsFuse      = "views/fuse"
	ViewsJournal   = "views/journal"
)

// ListenerName names a listener deposit.
func ListenerName(slot int, id string, init bool) string {
	kind := "exec"
	if init {
		kind = "init"
	}
	return fmt.Sprintf("%s%d/%s/%s", PrefixSeccomp, slot, id, kind)
}

// ParseListenerName is ListenerName's inverse.
func ParseListenerName(name string) (slot int, id string, init bool, err error) {
	rest, ok := strings.CutPrefix(name, PrefixSeccomp)
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 3 || parts[1] == "" || (parts[2] != "init" && parts[2] != "exec") {
		return 0, "", false, fmt.Errorf("listener name %q: want %s<slot>/<id>/init|exec", name, PrefixSeccomp)
	}
	slot, err = strconv.Atoi(parts[0])
	if err != nil || slot < 0 || slot >= JournalSlots {
		return 0, "", false, fmt.Errorf("listener name %q: slot out of range", name)
	}
	return slot, parts[1], parts[2] == "init", nil
}

// Config is a holder's configuration.
type Config struct {
	RunDir string
	// DownTimeout is how long trapped calls wait for a sysvisord to attach
	// before the holder answers them with DownErrno.
	DownTimeout time.Duration
	DownErrno   unix.Errno
	Log         hclog.Logger
}

// ErrRunning means another holder serves the run directory.
var ErrRunning = errors.New("a holder already serves this run directory")

// Holder is a running holder.
type Holder struct {
	cfg  Config
	log  hclog.Logger
	ln   *net.UnixListener
	lock *os.File
	ep   int // epoll: hang-ups of held fds, and trapped calls while answering

	mu       sync.Mutex
	held     map[string]int
	byFd     map[int]string
	conn     *net.UnixConn // the attached sysvisord, nil when none
	connPid  int           // its pid
	connDone chan struct{} // closed when conn's messages are all handled
	detached time.Time     // when the last one went away
	answer   bool          // answering trapped calls with DownErrno
	// lastPeerCheck: when watch last looked whether the peer is dying.
	lastPeerCheck time.Time
	closed        bool
}

// Listen takes the run directory's holder lock and socket. It fails with
// ErrRunning when another holder has them.
func Listen(cfg Config) (*Holder, error) {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.DownTimeout <= 0 {
		cfg.DownTimeout = 30 * time.Second
	}
	if cfg.DownErrno == 0 {
		cfg.DownErrno = unix.EAGAIN
	}
	if err := os.MkdirAll(cfg.RunDir, 0o711); err != nil {
		return nil, fmt.Errorf("run dir %s: %w", cfg.RunDir, err)
	}
	lockPath := filepath.Join(cfg.RunDir, Lockfile)
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("holder lock %s: %w", lockPath, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrRunning
		}
		return nil, fmt.Errorf("holder lock %s: %w", lockPath, err)
	}
	path := filepath.Join(cfg.RunDir, Socket)
	os.Remove(path) // the lock is ours: a socket file left is a dead holder's
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	unix.Umask(old)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("holder socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // a successor's socket must not vanish with us
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		ln.Close()
		lock.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	os.WriteFile(filepath.Join(cfg.RunDir, Pidfile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	return &Holder{cfg: cfg, log: cfg.Log, ln: ln, lock: lock, ep: ep,
		held: map[string]int{}, byFd: map[int]string{}, detached: time.Now()}, nil
}

// Serve runs until Close.
func (h *Holder) Serve() {
	h.log.Info("holder serving", "socket", filepath.Join(h.cfg.RunDir, Socket),
		"down_timeout", h.cfg.DownTimeout.String(), "down_errno", unix.ErrnoName(h.cfg.DownErrno))
	done := make(chan struct{})
	go func() { h.watch(); close(done) }()
	for {
		conn, err := h.ln.AcceptUnix()
		if err != nil {
			break
		}
		cred, err := peerCred(conn)
		if err != nil || cred.Uid != 0 {
			h.log.Warn("connection refused: not root", "peer", cred, "error", err)
			conn.Close()
			continue
		}
		h.mu.Lock()
		if h.closed {
			// Accepted just before Close shut the socket.
			h.mu.Unlock()
			conn.Close()
			break
		}
		prev, prevDone := h.conn, h.connDone
		h.conn, h.connDone, h.connPid = conn, make(chan struct{}), int(cred.Pid)
		h.setAnswering(false)
		h.mu.Unlock()
		go func(done chan struct{}) {
			defer close(done)
			// What the previous sysvisord sent before it died is
			// still queued on its connection: handle it first, or a
			// listener deposited just before a crash would be lost.
			// A previous one still alive is cut off after a while.
			if prev != nil {
				select {
				case <-prevDone:
				case <-time.After(2 * time.Second):
					h.log.Warn("the previous sysvisord is still connected; dropping it")
					prev.Close()
					<-prevDone
				}
			}
			h.log.Info("sysvisord attached", "held", h.count())
			h.serveConn(conn)
		}(h.connDone)
	}
	<-done
}

func (h *Holder) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.held)
}

// Close drops every held fd and stops. The containers' listeners and views
// then end with the last copies sysvisord has.
func (h *Holder) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	// The socket first: a sysvisord that lost its connection below
	// redials at once, and must not reach a holder that is going (it would
	// deposit its listeners here and believe them held).
	h.ln.Close()
	for name, fd := range h.held {
		unix.Close(fd)
		delete(h.held, name)
	}
	h.byFd = map[int]string{}
	if h.conn != nil {
		h.conn.Close()
	}
	h.mu.Unlock()
	h.lock.Close()
	// watch wakes within its poll period and sees closed.
}

func (h *Holder) serveConn(conn *net.UnixConn) {
	defer func() {
		h.mu.Lock()
		if h.conn == conn {
			h.conn = nil
			h.detached = time.Now()
			if !h.closed {
				h.log.Warn("sysvisord detached; trapped calls wait for its return",
					"bound", h.cfg.DownTimeout.String(), "held", len(h.held))
			}
		}
		h.mu.Unlock()
		conn.Close()
	}()
	buf := make([]byte, maxMsg)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			return
		}
		fds := parseRights(oob[:oobn])
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			closeAll(fds)
			h.log.Error("message truncated; connection dropped")
			return
		}
		op, name, _ := strings.Cut(string(buf[:n]), "\x00")
		switch op {
		case "PUT":
			if len(fds) != 1 || name == "" {
				closeAll(fds)
				h.log.Error("PUT without exactly one fd or a name; connection dropped", "name", name, "fds", len(fds))
				return
			}
			h.put(name, fds[0])
		case "DEL":
			closeAll(fds)
			h.del(name)
		case "LIST":
			closeAll(fds)
			if err := h.list(conn); err != nil {
				h.log.Error("LIST reply", "error", err)
				return
			}
		default:
			closeAll(fds)
			h.log.Error("unknown op; connection dropped", "op", op)
			return
		}
	}
}

func (h *Holder) put(name string, fd int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		unix.Close(fd)
		return
	}
	if old, ok := h.held[name]; ok {
		h.forgetLocked(name, old)
	}
	h.held[name] = fd
	h.byFd[fd] = name
	// Regular files (the journals) cannot be polled; they never hang up.
	if strings.HasPrefix(name, PrefixSeccomp) || name == ViewsFuse {
		ev := unix.EpollEvent{Fd: int32(fd)}
		if h.answer && strings.HasPrefix(name, PrefixSeccomp) {
			ev.Events = unix.EPOLLIN
		}
		if err := unix.EpollCtl(h.ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			h.log.Warn("cannot watch held fd for hang-up", "name", name, "error", err)
		}
	}
}

func (h *Holder) del(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if fd, ok := h.held[name]; ok {
		h.forgetLocked(name, fd)
	}
}

func (h *Holder) forgetLocked(name string, fd int) {
	unix.EpollCtl(h.ep, unix.EPOLL_CTL_DEL, fd, nil)
	unix.Close(fd)
	delete(h.held, name)
	delete(h.byFd, fd)
}

func (h *Holder) list(conn *net.UnixConn) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, fd := range h.held {
		if _, _, err := conn.WriteMsgUnix([]byte("FD\x00"+name), unix.UnixRights(fd), nil); err != nil {
			return err
		}
	}
	_, _, err := conn.WriteMsgUnix([]byte("END"), nil, nil)
	return err
}

// watch drops fds the kernel reports hung up and, once sysvisord has been
// away for longer than the bound, answers trapped calls.
func (h *Holder) watch() {
	evs := make([]unix.EpollEvent, 64)
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			unix.Close(h.ep)
			return
		}
		if h.conn != nil && time.Since(h.lastPeerCheck) >= time.Second {
			h.lastPeerCheck = time.Now()
			if pid := h.connPid; dying(pid) {
				// Its stuck thread waits for a reply from the views
				// mount that only a sysvisord gives, and a new one
				// cannot start while the dying one holds the state
				// lock: answer its own requests (it discards the
				// answers) so that it can finish exiting.
				n := h.failViews(unix.EINTR, func(tid uint32) bool { return threadOf(tid, pid) })
				h.log.Warn("attached sysvisord is exiting; treating it as gone", "pid", pid, "own_view_requests_answered", n)
				h.conn.Close()
			}
		}
		if h.conn == nil && !h.answer && time.Since(h.detached) >= h.cfg.DownTimeout {
			h.log.Error("no sysvisord attached within the bound: trapped calls now fail",
				"bound", h.cfg.DownTimeout.String(), "errno", unix.ErrnoName(h.cfg.DownErrno))
			h.setAnswering(true)
		}
		h.mu.Unlock()
		n, err := unix.EpollWait(h.ep, evs, 200)
		if err != nil && err != unix.EINTR {
			h.log.Error("epoll", "error", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		for _, ev := range evs[:max(n, 0)] {
			h.event(int(ev.Fd), ev.Events)
		}
	}
}

func (h *Holder) event(fd int, events uint32) {
	h.mu.Lock()
	name, ok := h.byFd[fd]
	if !ok {
		h.mu.Unlock()
		return
	}
	if events&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		h.log.Debug("held fd hung up; dropped", "name", name)
		h.forgetLocked(name, fd)
		h.mu.Unlock()
		return
	}
	answer := h.answer && h.conn == nil && events&unix.EPOLLIN != 0
	dup := -1
	if answer {
		// A copy: a DEL may close the held fd meanwhile, and the
		// number could name another file by then.
		dup, _ = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	}
	h.mu.Unlock()
	if dup >= 0 {
		failOne(dup, h.cfg.DownErrno)
		unix.Close(dup)
	}
}

// setAnswering switches between leaving trapped calls to sysvisord and
// answering them. Called with mu held.
func (h *Holder) setAnswering(on bool) {
	if h.answer == on {
		return
	}
	h.answer = on
	if on {
		// View reads a sysvisord had read and not answered would wait
		// for good; those nobody read wait in the kernel's queue for
		// the next sysvisord (reading them would mean parsing them).
		if n := h.failViews(unix.EIO, func(uint32) bool { return true }); n > 0 {
			h.log.Warn("view requests in flight failed", "count", n, "errno", "EIO")
		}
	}
	for name, fd := range h.held {
		if !strings.HasPrefix(name, PrefixSeccomp) {
			continue
		}
		ev := unix.EpollEvent{Fd: int32(fd)}
		if on {
			ev.Events = unix.EPOLLIN
			// A call the old sysvisord had received and not answered
			// is in the journal; the kernel checks the id.
			if slot, _, _, err := ParseListenerName(name); err == nil {
				if id, ok := h.journalID(slot); ok && id != 0 {
					sendErrno(fd, id, h.cfg.DownErrno)
				}
			}
		}
		unix.EpollCtl(h.ep, unix.EPOLL_CTL_MOD, fd, &ev)
	}
}

// failViews fails the views journal's requests in flight from requesters
// pick accepts. Called with mu held.
func (h *Holder) failViews(errno unix.Errno, pick func(uint32) bool) int {
	ffd, ok1 := h.held[ViewsFuse]
	jfd, ok2 := h.held[ViewsJournal]
	if !ok1 || !ok2 {
		return 0
	}
	return FailViewsInFlight(ffd, jfd, errno, pick)
}

// journalID reads the id in a listener's journal slot.
func (h *Holder) journalID(slot int) (uint64, bool) {
	jfd, ok := h.held[SeccompJournal]
	if !ok {
		return 0, false
	}
	var b [8]byte
	if n, err := unix.Pread(jfd, b[:], journalSlotOffset(slot)); err != nil || n != 8 {
		return 0, false
	}
	return nativeUint64(b[:]), true
}

func peerCred(conn *net.UnixConn) (unix.Ucred, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return unix.Ucred{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return unix.Ucred{}, err
	}
	if cerr != nil {
		return unix.Ucred{}, cerr
	}
	return *cred, nil
}

// dying reports whether process pid is exiting: its main thread is a
// zombie while some other thread has not finished. A sysvisord killed
// while one of its threads waited for a reply from its own views mount
// stays so until somebody answers that request: its fds (the connection
// to us, its state lock) stay open meanwhile.
func dying(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false // gone: the connection's EOF says so
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}

// threadOf reports whether thread tid belongs to process pid.
func threadOf(tid uint32, pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Tgid:"); ok {
			return strings.TrimSpace(v) == strconv.Itoa(pid)
		}
	}
	return false
}

func parseRights(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		if f, err := unix.ParseUnixRights(&m); err == nil {
			fds = append(fds, f...)
		}
	}
	return fds
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
