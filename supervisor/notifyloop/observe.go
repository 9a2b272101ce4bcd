package notifyloop

import (
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/linux/notify"
	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor/stats"
	"github.com/sysvisor/sysvisor/supervisor/trace"
)

// Observer is the middleware around one listener's dispatch: statistics
// and tracing (and the policy's rate guard), kept out of the handlers. It is
// owned by the listener's goroutine; nothing in it takes a lock.
type Observer struct {
	container string
	shard     *stats.Shard
	hub       *trace.Hub
	guard     *guard // nil: the policy sets no limits
	log       hclog.Logger
}

// NewObserver observes container's listener into shard and hub, with the
// policy's rate limits (nil: none).
func NewObserver(container string, shard *stats.Shard, hub *trace.Hub, limits *policy.Limits, log hclog.Logger) *Observer {
	o := &Observer{container: container, shard: shard, hub: hub, log: log}
	if limits != nil {
		o.guard = newGuard(limits, time.Since(epoch))
	}
	return o
}

// Shard is where the observer counts.
func (o *Observer) Shard() *stats.Shard { return o.shard }

// epoch is the origin of the notify path's timestamps: time.Since reads
// only the monotonic clock (one vDSO call, ~50 ns here) where time.Now
// reads the wall clock too.
var epoch = time.Now()

// otherKey counts notifications no rule answered.
var otherKey = stats.KeyOf(stats.Other, "")

// observation is one notification in flight: a value on the listener's
// stack, so the notify path allocates nothing for it.
type observation struct {
	start time.Duration // since epoch
	key   stats.Key
	// ev is non-nil only when a trace subscriber wants this notification.
	ev *trace.Event
	// limited: the rate guard refuses it (EAGAIN, no handler).
	limited bool
}

// begin starts timing n. When a trace wants it, the arguments are decoded
// first, from the caller's memory while it is still blocked, and that time
// is not counted in the latency.
func (o *Observer) begin(fd *notify.Fd, n *notify.Notif, acts Actions) observation {
	a := acts.rule(n)
	ob := observation{key: otherKey}
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
	ob.start = time.Since(epoch)
	if o.guard != nil && !o.guard.allow(ob.start) {
		ob.limited = o.guard.action == policy.LimitEAGAIN
		o.guard.over++
		// At most one line a second: a flood must not become a flood of
		// log lines (hclog's lock is shared by every listener).
		if ob.start-o.guard.logged >= time.Second {
			o.log.Warn("container over its policy's notification rate", "rate", o.guard.rate, "burst", o.guard.burst,
				"action", string(o.guard.action), "over", o.guard.over)
			o.guard.over, o.guard.logged = 0, ob.start
		}
	}
	return ob
}

// guard is the policy's notification rate limit for one listener: a token
// bucket that only its listener's goroutine touches, so no lock and no
// atomics.
type guard struct {
	rate, burst float64
	action      policy.LimitAction
	tokens      float64
	last        time.Duration // since epoch
	over        uint64        // over the rate since the last log line
	logged      time.Duration // last log line, since epoch
}

func newGuard(l *policy.Limits, now time.Duration) *guard {
	return &guard{rate: float64(l.Rate), burst: float64(l.Burst), action: l.Action, tokens: float64(l.Burst), last: now, logged: -time.Hour}
}

// allow takes a token if one is left, refilling at rate since the last
// call; now is on epoch's monotonic clock.
func (g *guard) allow(now time.Duration) bool {
	if dt := (now - g.last).Seconds(); dt > 0 {
		g.tokens = min(g.burst, g.tokens+dt*g.rate)
	}
	g.last = now
	if g.tokens >= 1 {
		g.tokens--
		return true
	}
	return false
}

// end records how n was answered; sendErr is the response's error.
func (o *Observer) end(ob *observation, resp handlers.Response, sendErr error) {
	lat := time.Since(epoch) - ob.start
	d := stats.Continue
	switch {
	case sendErr != nil: // whatever it was, the caller never saw it
		d = stats.Gone
	case ob.limited:
		d = stats.Limited
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
