package supervisor

import (
	"time"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/supervisor/notify"
	"github.com/sysvisor/sysvisor/supervisor/stats"
	"github.com/sysvisor/sysvisor/supervisor/trace"
)

// observer is the middleware around one listener's dispatch: statistics
// and tracing (and the policy's rate guard), kept out of the handlers. It is
// owned by the listener's goroutine; nothing in it takes a lock.
type observer struct {
	container string
	shard     *stats.Shard
	hub       *trace.Hub
}

// observation is one notification in flight: a value on the listener's
// stack, so the notify path allocates nothing for it.
type observation struct {
	start time.Time
	key   stats.Key
	// ev is non-nil only when a trace subscriber wants this notification.
	ev *trace.Event
}

// begin starts timing n. When a trace wants it, the arguments are decoded
// first, from the caller's memory while it is still blocked, and that time
// is not counted in the latency.
func (o *observer) begin(fd *notify.Fd, n *notify.Notif, acts actions) observation {
	a := acts.rule(n)
	ob := observation{key: stats.KeyOf(stats.Other, "")}
	name := ""
	if a != nil {
		ob.key, name = a.key, a.entry.Name
	}
	if o.hub.Active() { // the only cost when nobody traces
		if name == "" {
			name = stats.Other
		}
		if o.hub.Wants(o.container, name) {
			req := handlers.Request{Notif: *n, Fd: fd}
			ev := &trace.Event{Time: time.Now(), Container: o.container, Pid: n.Pid, Syscall: name,
				Args: trace.Decode(name, n.Data.Args, &req)}
			req.Close()
			if a != nil {
				ev.Action = string(a.kind)
			}
			ob.ev = ev
		}
	}
	ob.start = time.Now()
	return ob
}

// end records how n was answered; sendErr is the response's error.
func (o *observer) end(ob *observation, resp handlers.Response, sendErr error) {
	lat := time.Since(ob.start)
	d := stats.Continue
	switch {
	case sendErr != nil:
		d = stats.Gone
	case resp.Kind == handlers.Errno:
		d = stats.Errno
	case resp.Kind == handlers.Value:
		d = stats.Return
	}
	o.shard.Observe(ob.key, d, lat)
	if ob.ev != nil {
		ob.ev.Decision, ob.ev.LatencyNs = resp.String(), int64(lat)
		if sendErr != nil {
			ob.ev.Decision += " (caller gone)"
		}
		o.hub.Publish(*ob.ev)
	}
}
