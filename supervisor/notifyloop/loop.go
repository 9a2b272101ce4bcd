// Package notifyloop answers the notifications of one seccomp listener:
// the loop that receives them, the container's policy resolved into a
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

// Serve is the notify loop of one listener fd, until the fd closes. It owns the fd's
// notifications and never blocks other containers: waiting is done in the
// poller, not on a thread.
//
// n is where notifications are received (the listener's journal slot). A
// notification already in it is one a previous sysvisord received and
// may not have answered: if the kernel still has it pending, it is
// dispatched again before anything new is received.
func Serve(c *registry.Container, fd *notify.Fd, n *notify.Notif, acts Actions, obs *Observer, log hclog.Logger) {
	pending := n.ID != 0 && fd.Valid(n.ID)
	if n.ID != 0 && !pending {
		n.ID = 0
	}
	if pending {
		log.Info("notification in flight at the previous sysvisord's end: dispatched again", "id", n.ID, "nr", n.Data.Nr, "caller", n.Pid, "acted", n.Flags&notify.FlagActing != 0)
	}
	var lost lostAnswers
	for {
		var err error
		if pending {
			pending = false
		} else {
			err = fd.Receive(n)
		}
		switch {
		case errors.Is(err, notify.ErrClosed):
			return
		case errors.Is(err, notify.ErrGone):
			continue
		case err != nil:
			log.Error("seccomp receive", "error", err)
			return
		}
		c.Notified.Add(1)
		if lost.restarted(n) {
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
		if serr != nil && !errors.Is(serr, notify.ErrGone) {
			log.Warn("seccomp respond", "error", serr)
		}
		if errors.Is(serr, notify.ErrGone) && n.Flags&notify.FlagActing != 0 {
			lost.add(n)
		}
		if serr == nil || errors.Is(serr, notify.ErrGone) {
			// Answered (or no longer awaited): nothing for a successor.
			// After a failed send, e.g. our copy closed at shutdown, the
			// id stays for the next sysvisord to answer.
			n.ID = 0
		}
		obs.end(&ob, resp, serr)
	}
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
