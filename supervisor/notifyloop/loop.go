// Package notifyloop answers the notifications of one seccomp listener
// (received by a notify.Pool): the container's policy resolved into a
// table of actions, and the observer (statistics, tracing, rate limit)
// around each dispatch to a handler.
package notifyloop

import (
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/linux/notify"
	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor/registry"
)

// Listener answers the notifications of one listener fd of container c,
// served by a notify.Pool: the policy's action for each, the observer
// around it, and the journal of what is in flight. Its methods are called
// for one notification at a time.
type Listener struct {
	c    *registry.Container
	fd   *notify.Fd
	acts Actions
	obs  *Observer
	log  hclog.Logger
	lost lostAnswers
	// ended is called once when the listener ends (notify.Listener's
	// Ended).
	ended func(error)
}

// NewListener serves fd for c. n is where notifications are received (the
// listener's journal slot). A notification already in it is one a
// previous sysvisord received and may not have answered: Pending reports
// whether the kernel still has it, and the pool is then told to handle it
// before anything new is received.
func NewListener(c *registry.Container, fd *notify.Fd, acts Actions, obs *Observer, log hclog.Logger, ended func(error)) *Listener {
	return &Listener{c: c, fd: fd, acts: acts, obs: obs, log: log, ended: ended}
}

// Pending reports whether n holds a notification still awaiting an
// answer, clearing it otherwise.
func (l *Listener) Pending(n *notify.Notif) bool {
	if n.ID == 0 {
		return false
	}
	if !l.fd.Valid(n.ID) {
		n.ID = 0
		return false
	}
	l.log.Info("notification in flight at the previous sysvisord's end: dispatched again", "id", n.ID, "nr", n.Data.Nr, "caller", n.Pid, "acted", n.Flags&notify.FlagActing != 0)
	return true
}

// Inline: allow, deny, log and the handlers that never block are answered
// on the pool thread that received the notification; the rest (mounts,
// helpers, namespace switches) on a goroutine, so that a slow call holds
// up only its own listener.
func (l *Listener) Inline(n *notify.Notif) bool {
	a := l.acts.rule(n)
	if a == nil || a.kind != policy.Emulate {
		return true
	}
	_, ok := a.entry.Handler.(handlers.Inline)
	return ok
}

// Ended implements notify.Listener.
func (l *Listener) Ended(err error) {
	if err != nil && !errors.Is(err, notify.ErrClosed) {
		l.log.Error("seccomp listener", "error", err)
	}
	l.ended(err)
}

// Handle answers the notification in n.
func (l *Listener) Handle(n *notify.Notif) {
	c, fd, acts, obs, log := l.c, l.fd, l.acts, l.obs, l.log
	c.Notified.Add(1)
	if l.lost.restarted(n) {
		// The same call again, from the same thread at the same
		// instruction: the kernel restarted it after a signal took
		// the caller away while its handler acted (no
		// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV). Dispatched as a
		// replay, as after a restart of sysvisord, so a handler that
		// is not idempotent finds its action done (umount2: EINVAL
		// answered 0).
		n.Flags |= notify.FlagActing
	}
	ob := obs.begin(fd, n, acts)
	var resp handlers.Response
	if ob.limited {
		resp = handlers.Fail(unix.EAGAIN)
	} else {
		resp = dispatch(c, fd, n, acts, log)
	}
	var serr error
	switch resp.Kind {
	case handlers.Continue:
		serr = fd.Continue(n.ID)
	case handlers.Errno:
		serr = fd.Errno(n.ID, resp.Errno)
	default:
		serr = fd.Return(n.ID, resp.Val)
	}
	if serr != nil && !errors.Is(serr, notify.ErrGone) && !errors.Is(serr, notify.ErrClosed) {
		log.Warn("seccomp respond", "error", serr)
	}
	if errors.Is(serr, notify.ErrGone) && n.Flags&notify.FlagActing != 0 {
		l.lost.add(n)
	}
	if serr == nil || errors.Is(serr, notify.ErrGone) {
		// Answered (or no longer awaited): nothing for a successor.
		// After a failed send, e.g. our copy closed at shutdown, the
		// id stays for the next sysvisord to answer.
		n.ID = 0
	}
	obs.end(&ob, resp, serr)
}

// lostAnswers remembers the last notifications whose handler acted (a
// mount, an umount) but whose answer found the caller gone: a signal (a
// stop, ptrace, a handler) interrupted the caller's wait. Unless the
// signal was fatal, the kernel restarts the call, which is notified again
// with the same thread, instruction and arguments. Notifications of one
// listener are handled one at a time, so an interruption loses at most
// the one being handled: a few slots are plenty, and a hostile container
// cannot grow them.
type lostAnswers struct {
	slots [8]lostAnswer
	next  int
}

type lostAnswer struct {
	pid  uint32
	data notify.Data
}

func (l *lostAnswers) add(n *notify.Notif) {
	l.slots[l.next] = lostAnswer{pid: n.Pid, data: n.Data}
	l.next = (l.next + 1) % len(l.slots)
}

// restarted reports whether n repeats a lost one, forgetting it: a call is
// restarted once. Any other notification of that thread forgets it too
// (the thread has moved on).
func (l *lostAnswers) restarted(n *notify.Notif) bool {
	for i := range l.slots {
		s := &l.slots[i]
		if s.pid == 0 || s.pid != n.Pid {
			continue
		}
		same := s.data == n.Data
		*s = lostAnswer{}
		if same {
			return true
		}
	}
	return false
}

func dispatch(c *registry.Container, fd *notify.Fd, n *notify.Notif, acts Actions, log hclog.Logger) handlers.Response {
	if !handlers.IsNative(n.Data.Arch) {
		// Compat ABIs have other numbers and struct layouts; refusing is
		// safer than emulating them wrongly.
		return handlers.Fail(unix.ENOSYS)
	}
	a, ok := acts[n.Data.Nr]
	if !ok {
		log.Warn("trapped syscall has no rule in the container's policy", "nr", n.Data.Nr)
		return handlers.Fail(unix.ENOSYS)
	}
	var resp handlers.Response
	switch a.kind {
	case policy.Allow:
		resp = handlers.Allow()
	case policy.Log:
		log.Info("syscall", "syscall", a.entry.Name, "caller", n.Pid,
			"args", fmt.Sprintf("%#x %#x %#x %#x %#x %#x", n.Data.Args[0], n.Data.Args[1], n.Data.Args[2], n.Data.Args[3], n.Data.Args[4], n.Data.Args[5]))
		resp = handlers.Allow()
	case policy.Deny:
		resp = handlers.Fail(a.errno)
	default:
		req := handlers.Request{Notif: *n, Journal: n, Fd: fd, Container: c, Log: log, Entry: a.entry, Options: a.options}
		resp = a.entry.Handler.Handle(&req)
		req.Close()
	}
	if log.IsTrace() {
		log.Trace("notification", "syscall", a.entry.Name, "action", string(a.kind), "caller", n.Pid, "decision", resp.String())
	}
	return resp
}
