package supervisor

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/notify"
)

func TestNewActions(t *testing.T) {
	tab, err := handlers.NewTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range policy.BuiltinNames() {
		p, err := policy.Load(n, "")
		if err != nil {
			t.Fatal(err)
		}
		acts, err := newActions(tab, p.Rules)
		if err != nil {
			t.Errorf("policy %s: %v", n, err)
		}
		if len(acts) != len(p.Rules) {
			t.Errorf("policy %s: %d actions for %d rules", n, len(acts), len(p.Rules))
		}
	}
	for _, tc := range []struct {
		rules []policy.Rule
		want  string
	}{
		{[]policy.Rule{{Syscall: "chown", Action: policy.Allow}}, `"chown" is not one`},
		{[]policy.Rule{{Syscall: "sysinfo", Action: "maybe"}}, `unknown action "maybe"`},
		{[]policy.Rule{{Syscall: "sysinfo", Action: policy.Deny, Errno: "EWHAT"}}, `unknown errno "EWHAT"`},
		{[]policy.Rule{{Syscall: "sysinfo", Action: policy.Deny}}, `unknown errno ""`},
		{[]policy.Rule{{Syscall: "sysinfo", Action: policy.Emulate, Options: map[string]bool{"procfs": true}}}, `unknown option "procfs"`},
		{[]policy.Rule{{Syscall: "sysinfo", Action: policy.Allow}, {Syscall: "sysinfo", Action: policy.Log}}, "two rules"},
	} {
		if _, err := newActions(tab, tc.rules); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("newActions(%+v) = %v, want %q", tc.rules, err, tc.want)
		}
	}
}

// Deny, allow and log are answered from the container's table without a
// handler; a syscall without a rule gets ENOSYS.
func TestDispatchActions(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("amd64 numbers")
	}
	tab, err := handlers.NewTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	acts, err := newActions(tab, []policy.Rule{
		{Syscall: "mount", Action: policy.Deny, Errno: "EACCES"},
		{Syscall: "umount2", Action: policy.Allow},
		{Syscall: "sysinfo", Action: policy.Log},
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	call := func(nr int32) handlers.Response {
		n := notify.Notif{Pid: 42, Data: notify.Data{Nr: nr, Arch: unix.AUDIT_ARCH_X86_64}}
		return dispatch(nil, nil, &n, acts, log)
	}
	if r := call(unix.SYS_MOUNT); r.Kind != handlers.Errno || r.Errno != unix.EACCES {
		t.Errorf("mount: %v", r)
	}
	if r := call(unix.SYS_UMOUNT2); r.Kind != handlers.Continue {
		t.Errorf("umount2: %v", r)
	}
	if strings.Contains(buf.String(), "syscall=") {
		t.Errorf("allow logged: %s", buf.String())
	}
	if r := call(unix.SYS_SYSINFO); r.Kind != handlers.Continue {
		t.Errorf("sysinfo: %v", r)
	}
	if !strings.Contains(buf.String(), "syscall=sysinfo") || !strings.Contains(buf.String(), "caller=42") {
		t.Errorf("log action did not log: %q", buf.String())
	}
	if r := call(unix.SYS_FSOPEN); r.Kind != handlers.Errno || r.Errno != unix.ENOSYS {
		t.Errorf("fsopen without rule: %v", r)
	}
	n := notify.Notif{Data: notify.Data{Nr: unix.SYS_MOUNT, Arch: unix.AUDIT_ARCH_I386}}
	if r := dispatch(nil, nil, &n, acts, log); r.Errno != unix.ENOSYS {
		t.Errorf("compat arch: %v", r)
	}
}

func TestControlPolicy(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	strict, err := policy.Load("strict", "")
	if err != nil {
		t.Fatal(err)
	}
	if r := s.handleControl(control.Request{Op: control.OpCreate, ID: "s", RuncRoot: e.runcRoot, Policy: "strict", Rules: strict.Rules}); r.Error != "" {
		t.Fatal(r.Error)
	}
	// An older runtime sends the name only: the built-in's rules.
	if r := s.handleControl(control.Request{Op: control.OpCreate, ID: "old", RuncRoot: e.runcRoot, Policy: "dind"}); r.Error != "" {
		t.Fatal(r.Error)
	}
	r := s.handleControl(control.Request{Op: control.OpInspect, ID: "s"})
	if r.Error != "" || len(r.Containers) != 1 || r.Containers[0].Policy != "strict" || len(r.Containers[0].Rules) != len(strict.Rules) {
		t.Errorf("inspect s: %+v", r)
	}
	r = s.handleControl(control.Request{Op: control.OpInspect, ID: "old"})
	if r.Error != "" || len(r.Containers) != 1 || len(r.Containers[0].Rules) != 8 || r.Containers[0].Rules[1].Action != policy.Emulate {
		t.Errorf("inspect old: %+v", r)
	}
	if r := s.handleControl(control.Request{Op: control.OpInspect, ID: "nope"}); !strings.Contains(r.Error, `no container "nope"`) {
		t.Errorf("inspect nope: %+v", r)
	}
	// Rules sysvisord cannot honour, or an unknown built-in, fail before
	// anything is leased.
	for _, req := range []control.Request{
		{Op: control.OpCreate, ID: "bad1", RuncRoot: e.runcRoot, Policy: "x", Rules: []policy.Rule{{Syscall: "chown", Action: policy.Allow}}},
		{Op: control.OpCreate, ID: "bad2", RuncRoot: e.runcRoot, Policy: "nosuch"},
	} {
		r := s.handleControl(req)
		if r.Error == "" || !strings.Contains(r.Error, req.Policy) {
			t.Errorf("create %s: %+v, want an error naming policy %q", req.ID, r, req.Policy)
		}
		if _, ok := s.reg.Get(req.ID); ok {
			t.Errorf("record left for %s", req.ID)
		}
		for _, l := range s.leases.List() {
			if l.ID == req.ID {
				t.Errorf("lease left for %s", req.ID)
			}
		}
	}
}

func TestControlLogLevel(t *testing.T) {
	e := newEnv(t)
	var buf bytes.Buffer
	e.cfg.Log = hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	s := e.start(t)
	sub := s.log.Named("views").With("container", "c")
	if sub.IsDebug() {
		t.Fatal("debug at info level")
	}
	r := s.handleControl(control.Request{Op: control.OpLogLevel, Level: "debug"})
	if r.Error != "" || r.Level != "info" {
		t.Errorf("log-level debug: %+v", r)
	}
	if !s.log.IsDebug() || !sub.IsDebug() {
		t.Error("level not changed for derived loggers")
	}
	for _, bad := range []string{"", "loud", "off"} {
		if r := s.handleControl(control.Request{Op: control.OpLogLevel, Level: bad}); r.Error == "" {
			t.Errorf("log-level %q accepted", bad)
		}
	}
}
