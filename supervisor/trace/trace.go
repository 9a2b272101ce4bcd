// Package trace streams sysvisord's notifications to whoever listens
// (sysvisorctl trace). Nobody listening costs the notify path one atomic
// load; a slow listener loses events (counted) rather than slowing a
// container down.
package trace

import (
	"sync"
	"sync/atomic"
	"time"
)

// Event is one answered notification.
type Event struct {
	Time      time.Time `json:"time"`
	Container string    `json:"container"`
	Pid       uint32    `json:"pid"`
	Syscall   string    `json:"syscall"`
	// Args are the decoded arguments, read from the caller's memory by
	// the tracer itself (a thread racing the call can make them differ
	// from what the handler read).
	Args string `json:"args"`
	// Action is the policy's ("" when no rule applied), Decision what the
	// caller got: "continue", "return N" or "errno NAME".
	Action    string `json:"action,omitempty"`
	Decision  string `json:"decision"`
	LatencyNs int64  `json:"latencyNs"`
	// Dropped counts the events this subscriber lost (its buffer was
	// full) since the previous one it received.
	Dropped uint64 `json:"dropped,omitempty"`
}

// Filter selects events; empty fields match everything.
type Filter struct {
	Container string
	Syscall   string
}

func (f Filter) match(container, syscall string) bool {
	return (f.Container == "" || f.Container == container) && (f.Syscall == "" || f.Syscall == syscall)
}

// Sub is one subscriber.
type Sub struct {
	filter  Filter
	c       chan Event
	dropped atomic.Uint64
}

// C delivers the events.
func (s *Sub) C() <-chan Event { return s.c }

// TakeDropped returns and resets the count of events lost since the last
// call.
func (s *Sub) TakeDropped() uint64 { return s.dropped.Swap(0) }

// Hub fans events out to subscribers.
type Hub struct {
	n    atomic.Int32           // subscribers: the notify path's only cost when 0
	subs atomic.Pointer[[]*Sub] // copy-on-write, read without a lock
	mu   sync.Mutex             // serializes Subscribe and Unsubscribe
}

// Active reports whether anyone listens: one atomic load.
func (h *Hub) Active() bool { return h.n.Load() > 0 }

// Wants reports whether a subscriber would take an event of this
// container and syscall, so that the caller decodes arguments only then.
func (h *Hub) Wants(container, syscall string) bool {
	if !h.Active() {
		return false
	}
	if p := h.subs.Load(); p != nil {
		for _, s := range *p {
			if s.filter.match(container, syscall) {
				return true
			}
		}
	}
	return false
}

// Publish hands ev to every matching subscriber without waiting: a full
// buffer drops the event for that subscriber and counts it.
func (h *Hub) Publish(ev Event) {
	p := h.subs.Load()
	if p == nil {
		return
	}
	for _, s := range *p {
		if !s.filter.match(ev.Container, ev.Syscall) {
			continue
		}
		select {
		case s.c <- ev:
		default:
			s.dropped.Add(1)
		}
	}
}

// Subscribe starts delivering matching events into a buffer of size buf.
func (h *Hub) Subscribe(f Filter, buf int) *Sub {
	s := &Sub{filter: f, c: make(chan Event, buf)}
	h.mu.Lock()
	defer h.mu.Unlock()
	var next []*Sub
	if p := h.subs.Load(); p != nil {
		next = append(next, *p...)
	}
	next = append(next, s)
	h.subs.Store(&next)
	h.n.Store(int32(len(next)))
	return s
}

// Unsubscribe stops delivery to s. Events already buffered stay readable;
// the channel is not closed (a publisher may still hold the old list).
func (h *Hub) Unsubscribe(s *Sub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.subs.Load()
	if p == nil {
		return
	}
	next := make([]*Sub, 0, len(*p))
	for _, x := range *p {
		if x != s {
			next = append(next, x)
		}
	}
	h.subs.Store(&next)
	h.n.Store(int32(len(next)))
}
