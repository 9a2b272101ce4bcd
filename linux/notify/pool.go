package notify

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A Listener is what a Pool calls for one listener fd. The Pool calls it
// for one notification at a time, so a Listener needs no lock of its own.
type Listener interface {
	// Inline reports whether the notification just received into n is
	// answered on the pool thread that received it: only for work that
	// never blocks (no namespace switch, no helper process). Otherwise
	// Handle runs on a goroutine of its own, and the listener's next
	// notification waits for it.
	Inline(n *Notif) bool
	// Handle answers the notification in n.
	Handle(n *Notif)
	// Ended is called once, after the last Handle returned: the filter
	// has no task left (err nil), the Fd was closed (ErrClosed), or a
	// receive failed.
	Ended(err error)
}

// Pool serves many listener fds from a fixed number of OS threads that
// wait in one epoll set: no goroutine or thread per listener, and no hand-off
// through Go's network poller between the thread that learns of a
// notification and the one that answers it. The thread that receives a
// notification answers it (SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP then switches
// straight to the caller) unless the Listener sends it to a goroutine.
//
// Each fd is armed with EPOLLONESHOT: after an event it is disarmed until
// its notification is answered, so one listener's notifications are
// handled one at a time, in order, while other listeners are served by the
// other threads.
type Pool struct {
	epfd int
	// stop is an eventfd, readable once Stop was called: every thread
	// sees it (level-triggered, never read) and returns.
	stop int
	wg   sync.WaitGroup
	// members is indexed by the slot in an event's data. Copied on
	// write under mu (Add, the end of a member); read without a lock.
	members atomic.Pointer[[]*member]
	mu      sync.Mutex
	free    []uint32
	gen     uint32
	stopped bool
	started bool
	threads int
	// waiting counts the goroutines in epoll_wait.
	waiting atomic.Int32
	// workers are the pool's goroutines; extra counts those the
	// watchdog added. Under mu.
	workers map[*worker]bool
	extra   int
	grown   atomic.Int64
	// done is closed by Stop, for the watchdog.
	done chan struct{}
}

// procsMu orders the pools' changes of GOMAXPROCS.
var procsMu sync.Mutex

// How a pool thread waits. Go's sysmon takes the P of a goroutine that
// has not been through the scheduler for 10 ms as soon as it is in a
// system call, and a pool thread never is (it goes from one system call
// to the next): every wait longer than that would lose its P, and the
// return from it wake sysmon, which then polls every 20 µs for a
// millisecond or more. Per notification at a steady pace, that is most
// of the cost. So for busyFor after its last notification a thread
// waits in a raw system call: its P stays running, sysmon only asks the
// goroutine to yield every 10 ms (a signal: the wait returns EINTR and
// the goroutine goes through the scheduler at its next call). After
// that it waits as an ordinary system call, without a bound, and lets
// sysmon sleep until the next notification.
const (
	busyFor    = time.Second
	busyWaitMs = 100
)

// rawWait is epoll_wait without telling Go's scheduler: the P stays with
// the goroutine (see busyFor). NewPool adds Ps for it.
func rawWait(epfd int, evs []unix.EpollEvent, ms int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), uintptr(ms), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// stopSlot is the event data of the stop eventfd.
const stopSlot = ^uint32(0)

type member struct {
	pool *Pool
	fd   *Fd
	slot uint32
	gen  uint32
	l    Listener
	n    *Notif
	// busy is held from an event until its notification is answered
	// and the fd armed again, and by the member's end.
	busy  sync.Mutex
	ended bool // under busy
	added bool // to the epoll set; under busy
}

// NewPool makes a pool of threads OS threads (at least one), started at
// the first Add.
func NewPool(threads int) (*Pool, error) {
	if threads < 1 {
		threads = 1
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1} // stopSlot
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, stop, &ev); err != nil {
		unix.Close(stop)
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}
	p := &Pool{epfd: epfd, stop: stop, threads: threads, workers: map[*worker]bool{}, done: make(chan struct{})}
	p.members.Store(&[]*member{})
	return p, nil
}

// start starts the threads, at the first Add: a process serving no
// listener has none. p.mu is held.
func (p *Pool) start() {
	if p.started {
		return
	}
	p.started = true
	// A thread waiting in rawWait holds a P: one more each, or the rest
	// of the process would starve while the pool waits.
	procsMu.Lock()
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + p.threads)
	procsMu.Unlock()
	for range p.threads {
		p.spawn(false)
	}
	p.wg.Add(1)
	go p.watch()
}

// spawn starts a pool goroutine. p.mu is held. An extra one (see watch)
// waits as an ordinary system call, holds no P of its own, and ends after
// busyFor without a notification.
func (p *Pool) spawn(extra bool) {
	w := &worker{extra: extra}
	p.workers[w] = true
	if extra {
		p.extra++
	}
	p.wg.Add(1)
	go p.thread(w)
}

// worker is one pool goroutine's state the watchdog reads.
type worker struct {
	extra bool
	// handling is when (since epoch) the notification it is answering
	// inline was received; 0 while it waits.
	handling atomic.Int64
}

var epoch = time.Now()

// A handler marked inline should never block, but the caller's memory can
// make it: a write into a page of a file mapping on a FUSE mount the
// container serves itself waits for the container. stuckAfter is when
// the watchdog, finding no thread waiting for events and one stuck that
// long, starts an extra thread, up to maxExtra at once: a container can
// hold up one thread per listener it owns, never the others' service.
const (
	stuckAfter = 200 * time.Millisecond
	maxExtra   = 128
)

// watch is the pool's watchdog (see stuckAfter).
func (p *Pool) watch() {
	defer p.wg.Done()
	t := time.NewTicker(stuckAfter)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		if p.waiting.Load() > 0 {
			continue
		}
		now := int64(time.Since(epoch))
		p.mu.Lock()
		stuck := 0
		for w := range p.workers {
			if h := w.handling.Load(); h != 0 && now-h >= int64(stuckAfter) {
				stuck++
			}
		}
		if stuck > 0 && p.extra < maxExtra && !p.stopped {
			p.spawn(true)
			p.grown.Add(1)
		}
		p.mu.Unlock()
	}
}

// Grown counts the extra threads the watchdog started (see stuckAfter).
func (p *Pool) Grown() int64 { return p.grown.Load() }

// Add serves fd with l from now on, receiving into n (which must stay
// valid until l.Ended). With pending, n holds a notification received
// before (by a previous sysvisord) that is handled first, on a goroutine.
// The Pool closes fd after l.Ended; Close from anyone ends the member.
func (p *Pool) Add(fd *Fd, n *Notif, l Listener, pending bool) error {
	if !fd.acquire() { // the Pool's use: epoll_ctl needs the number until the end
		return ErrClosed
	}
	m := &member{pool: p, fd: fd, l: l, n: n}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		fd.release()
		return errors.New("notify pool stopped")
	}
	p.start()
	p.gen++
	m.gen = p.gen
	old := *p.members.Load()
	if k := len(p.free); k > 0 {
		m.slot = p.free[k-1]
		p.free = p.free[:k-1]
	} else {
		m.slot = uint32(len(old))
	}
	next := make([]*member, max(len(old), int(m.slot)+1))
	copy(next, old)
	next[m.slot] = m
	p.members.Store(&next)
	p.mu.Unlock()

	m.busy.Lock()
	hook := func() { go m.end(ErrClosed) }
	fd.onClose.Store(&hook)
	if fd.state.Load()&1 != 0 {
		// Closed before the hook was in place (Close calls it if it
		// saw it: end is idempotent).
		go m.end(ErrClosed)
	}
	if pending {
		go func() {
			l.Handle(n)
			m.done()
		}()
		return nil
	}
	m.done()
	return nil
}

// done arms the member's fd for its next notification (the first time:
// adds it to the set, only now so that no event, not even EPOLLHUP which
// epoll always reports, can reach a thread while busy is held for long)
// and lets busy go.
func (m *member) done() {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLONESHOT, Fd: int32(m.slot), Pad: int32(m.gen)}
	op := unix.EPOLL_CTL_MOD
	if !m.added {
		op = unix.EPOLL_CTL_ADD
	}
	if err := unix.EpollCtl(m.pool.epfd, op, m.fd.fd, &ev); err != nil {
		// ENOMEM or the user's epoll watch limit: this listener cannot
		// be served.
		m.finish(fmt.Errorf("epoll_ctl %s: %w", m.fd.name, err))
		return
	}
	m.added = true
	m.busy.Unlock()
}

// thread is one of the Pool's goroutines. It is not locked to its OS
// thread, which it leaves only when the scheduler takes it through a
// yield (see busyFor) or finds no P for it after a system call: a
// notification answered inline is, in practice, received and answered on
// one thread.
func (p *Pool) thread(w *worker) {
	defer p.wg.Done()
	// One event per wait: a thread never sits on a ready listener while
	// another thread is idle.
	var evs [1]unix.EpollEvent
	last := time.Now()
	for {
		var k int
		var err error
		p.waiting.Add(1)
		switch {
		case w.extra:
			k, err = unix.EpollWait(p.epfd, evs[:], int(busyFor/time.Millisecond))
		case time.Since(last) < busyFor:
			k, err = rawWait(p.epfd, evs[:], busyWaitMs)
		default:
			k, err = unix.EpollWait(p.epfd, evs[:], -1)
		}
		p.waiting.Add(-1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			panic(fmt.Sprintf("notify pool: epoll_wait: %v", err)) // EBADF, EFAULT, EINVAL: a bug of ours
		}
		if k != 1 {
			if w.extra && time.Since(last) >= busyFor && p.retire(w) {
				return
			}
			continue
		}
		last = time.Now()
		slot := uint32(evs[0].Fd)
		if slot == stopSlot {
			return
		}
		members := *p.members.Load()
		if int(slot) >= len(members) {
			continue
		}
		m := members[slot]
		if m == nil || m.gen != uint32(evs[0].Pad) {
			continue // the end of an earlier member of that slot
		}
		m.ready(evs[0].Events, w)
	}
}

// retire ends extra worker w once another goroutine waits for events.
func (p *Pool) retire(w *worker) bool {
	if p.waiting.Load() == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.workers, w)
	p.extra--
	return true
}

// ready handles an event of m's fd on a pool thread.
func (m *member) ready(events uint32, w *worker) {
	m.busy.Lock()
	if m.ended {
		m.busy.Unlock()
		return
	}
	if events&unix.EPOLLIN == 0 {
		if events&unix.EPOLLHUP != 0 {
			// Every task of the filter is gone.
			m.finish(nil)
			return
		}
		// EPOLLERR alone: the kernel's poll of a seccomp listener
		// (seccomp_notify_poll) answers it when its interruptible wait
		// for the filter's notify_lock fails, a signal pending on the
		// polling thread (Go's preemption signal, here). Nothing is
		// wrong with the listener: ask again.
		m.done()
		return
	}
	switch err := m.fd.Recv(m.n); {
	case err == nil:
	case errors.Is(err, ErrGone):
		m.done()
		return
	case errors.Is(err, ErrClosed):
		m.finish(ErrClosed)
		return
	default:
		m.finish(fmt.Errorf("seccomp receive: %w", err))
		return
	}
	if m.l.Inline(m.n) {
		w.handling.Store(max(int64(time.Since(epoch)), 1))
		m.l.Handle(m.n)
		w.handling.Store(0)
		m.done()
		return
	}
	go func() {
		m.l.Handle(m.n)
		m.done()
	}()
}

// end ends m from outside the pool's threads (Close), once any
// notification in hand is answered.
func (m *member) end(err error) {
	m.busy.Lock()
	if m.ended {
		m.busy.Unlock()
		return
	}
	m.finish(err)
}

// finish takes m out of the epoll set and the table, then calls Ended on
// a goroutine (it may take the caller's locks and write files: not on a
// pool thread). busy is held; finish lets it go.
func (m *member) finish(err error) {
	m.ended = true
	// The fd number is still ours (the Pool's use of it): removing it
	// explicitly matters, as the holder's copy keeps the file alive and
	// with it any registration left behind.
	if m.added {
		_ = unix.EpollCtl(m.pool.epfd, unix.EPOLL_CTL_DEL, m.fd.fd, nil)
	}
	m.busy.Unlock()
	m.pool.drop(m)
	go func() {
		m.l.Ended(err)
		m.fd.Close()
		m.fd.release()
	}()
}

// drop frees m's slot.
func (p *Pool) drop(m *member) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.members.Load()
	if int(m.slot) >= len(old) || old[m.slot] != m {
		return
	}
	next := make([]*member, len(old))
	copy(next, old)
	next[m.slot] = nil
	p.members.Store(&next)
	p.free = append(p.free, m.slot)
}

// Stop ends the Pool's threads, after their notification in hand is
// answered. Members are not ended: close their Fds first.
func (p *Pool) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	p.mu.Unlock()
	close(p.done)
	var one [8]byte
	one[0] = 1
	unix.Write(p.stop, one[:])
	p.wg.Wait()
	if p.started {
		procsMu.Lock()
		runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0)-p.threads, 1))
		procsMu.Unlock()
	}
	unix.Close(p.stop)
	unix.Close(p.epfd)
}
