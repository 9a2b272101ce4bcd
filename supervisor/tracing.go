package supervisor

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/sysvisor/sysvisor/handlers/catalog"
	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/stats"
	"github.com/sysvisor/sysvisor/supervisor/trace"
)

// traceBuffer is how many events a trace client may fall behind before
// events are dropped for it (counted, and told in the next event).
const traceBuffer = 4096

// traceWriteTimeout drops a client that stops reading while staying
// connected; meanwhile its buffer fills and events are dropped, never
// waited for.
const traceWriteTimeout = 10 * time.Second

// serveTrace streams notifications to one sysvisorctl trace until the
// client disconnects or sysvisord stops. The connection's goroutine owns
// the subscription; one more goroutine reads the connection only to see it
// close, and is waited for.
func (s *Server) serveTrace(conn *net.UnixConn, req control.Request) {
	enc := json.NewEncoder(conn)
	if req.ID != "" {
		if _, ok := s.reg.Get(req.ID); !ok {
			enc.Encode(control.Response{Error: fmt.Sprintf("no container %q", req.ID)})
			return
		}
	}
	if req.Syscall != "" && req.Syscall != stats.Other {
		if _, ok := catalog.Lookup(req.Syscall); !ok {
			enc.Encode(control.Response{Error: fmt.Sprintf("syscall %q is not one sysvisord traps (%s, or %q)", req.Syscall, catalogNames(), stats.Other)})
			return
		}
	}
	conn.SetDeadline(time.Time{})
	sub := s.trace.Subscribe(trace.Filter{Container: req.ID, Syscall: req.Syscall}, traceBuffer)
	defer s.trace.Unsubscribe(sub)
	log := s.log.With("container", req.ID, "syscall", req.Syscall)
	log.Info("trace started")
	gone := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(gone)
		io.Copy(io.Discard, conn) // returns when the client closes, or we do
	}()
	defer func() {
		conn.Close()
		<-gone
	}()
	if err := enc.Encode(control.Response{}); err != nil {
		return
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	send := func(ev trace.Event) bool {
		conn.SetWriteDeadline(time.Now().Add(traceWriteTimeout))
		if err := enc.Encode(ev); err != nil {
			log.Info("trace ended", "reason", "client not reading", "error", err)
			return false
		}
		return true
	}
	for {
		select {
		case <-gone:
			log.Info("trace ended", "reason", "client disconnected")
			return
		case <-s.ctx.Done():
			return
		case ev := <-sub.C():
			ev.Dropped = sub.TakeDropped()
			if !send(ev) {
				return
			}
		case <-tick.C:
			// Drops are told even when nothing else gets through.
			if d := sub.TakeDropped(); d > 0 && !send(trace.Event{Time: time.Now(), Dropped: d}) {
				return
			}
		}
	}
}

func catalogNames() string {
	out := ""
	for i, c := range catalog.Syscalls {
		if i > 0 {
			out += ", "
		}
		out += c.Name
	}
	return out
}
