package supervisor

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/registry"
)

// ready answers once the record leaves "created", fails for an unknown
// container, and gives up after readyTimeout.
func TestReady(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	s.ctx = context.Background()
	defer func(d time.Duration) { readyTimeout = d }(readyTimeout)
	readyTimeout = 200 * time.Millisecond
	if r := s.handleControl(control.Request{Op: control.OpCreate, ID: "c1", RuncRoot: e.runcRoot, Policy: "default"}); r.Error != "" {
		t.Fatal(r.Error)
	}
	if r := s.handleControl(control.Request{Op: control.OpReady, ID: "nope"}); !strings.Contains(r.Error, "no container") {
		t.Errorf("ready for an unknown container: %+v", r)
	}
	start := time.Now()
	if r := s.handleControl(control.Request{Op: control.OpReady, ID: "c1"}); !strings.Contains(r.Error, "no seccomp listener") {
		t.Errorf("ready before registration: %+v", r)
	}
	if d := time.Since(start); d < readyTimeout {
		t.Errorf("ready gave up after %s, before its timeout", d)
	}
	// Registration (the handoff) sets the status while a ready waits.
	go func() {
		time.Sleep(50 * time.Millisecond)
		s.reg.Update("c1", func(r *registry.Record) { r.Status = registry.StatusRunning })
	}()
	if r := s.handleControl(control.Request{Op: control.OpReady, ID: "c1"}); r.Error != "" {
		t.Errorf("ready after registration: %s", r.Error)
	}
}
