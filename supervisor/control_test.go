package supervisor

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor/control"
)

func TestControlPolicy(t *testing.T) {
	e := newEnv(t)
	os.MkdirAll(e.cfg.PolicyDir, 0o755)
	ci := filepath.Join(e.cfg.PolicyDir, "ci.hcl")
	writeCI := func(src string) {
		t.Helper()
		if err := os.WriteFile(ci, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCI("version = 1\ndescription = \"v1\"\nsyscall \"sysinfo\" {\n  action = \"deny\"\n}\n")
	s := e.start(t)
	strict, _ := s.policies.Get("strict")
	r := s.handleControl(control.Request{Op: control.OpCreate, ID: "s", RuncRoot: e.runcRoot, Policy: "strict", PolicySource: "env SYSVISOR_POLICY"})
	if r.Error != "" || r.Policy == nil || r.Policy.Name != "strict" || len(r.Policy.Rules) != len(strict.Rules) {
		t.Fatalf("create under strict: %+v", r)
	}
	// No name: default.
	if r := s.handleControl(control.Request{Op: control.OpCreate, ID: "d", RuncRoot: e.runcRoot}); r.Error != "" || r.Policy.Name != "default" {
		t.Fatalf("create without a policy name: %+v", r)
	}
	r = s.handleControl(control.Request{Op: control.OpInspect, ID: "s"})
	if r.Error != "" || len(r.Containers) != 1 || r.Containers[0].Policy != "strict" || len(r.Containers[0].Rules) != len(strict.Rules) {
		t.Errorf("inspect s: %+v", r)
	}
	if r := s.handleControl(control.Request{Op: control.OpInspect, ID: "nope"}); !strings.Contains(r.Error, `no container "nope"`) {
		t.Errorf("inspect nope: %+v", r)
	}

	// The file loaded at start is served; a container made under v1
	// keeps v1's rules across a reload that changes the file.
	if r := s.handleControl(control.Request{Op: control.OpCreate, ID: "ci1", RuncRoot: e.runcRoot, Policy: "ci"}); r.Error != "" || r.Policy.Description != "v1" {
		t.Fatalf("create under ci v1: %+v", r)
	}
	writeCI("version = 1\ndescription = \"v2\"\nsyscall \"sysinfo\" {\n  action = \"allow\"\n}\n")
	if r := s.handleControl(control.Request{Op: control.OpCreate, ID: "ci-before-reload", RuncRoot: e.runcRoot, Policy: "ci"}); r.Error != "" || r.Policy.Description != "v1" {
		t.Errorf("an edited file counts before a reload: %+v", r.Policy)
	}
	if r := s.handleControl(control.Request{Op: control.OpPolicyReload}); r.Error != "" || r.Reload == nil {
		t.Fatalf("reload: %+v", r)
	}
	if r := s.handleControl(control.Request{Op: control.OpCreate, ID: "ci2", RuncRoot: e.runcRoot, Policy: "ci"}); r.Error != "" || r.Policy.Description != "v2" {
		t.Errorf("create after reload: %+v", r.Policy)
	}
	if c, _ := s.reg.Get("ci1"); c.Snapshot().Rules[0].Action != policy.Deny {
		t.Errorf("running container's rules changed by a reload: %+v", c.Snapshot().Rules)
	}
	// A typo: the reload reports it with its position, v2 stays.
	writeCI("version = 1\nsyscall \"sysinfo\" {\n  action = \"alow\"\n}\n")
	r = s.handleControl(control.Request{Op: control.OpPolicyReload})
	if !strings.Contains(r.Error, ci+":3:12") || r.Reload == nil || len(r.Reload.Refused()) != 1 {
		t.Errorf("reload with a typo: %+v", r)
	}
	if r := s.handleControl(control.Request{Op: control.OpCreate, ID: "ci3", RuncRoot: e.runcRoot, Policy: "ci"}); r.Error != "" || r.Policy.Description != "v2" {
		t.Errorf("create after a refused reload: %+v", r.Policy)
	}

	// Unknown names, a foreign policy dir: refused before anything is leased.
	for _, req := range []control.Request{
		{Op: control.OpCreate, ID: "bad1", RuncRoot: e.runcRoot, Policy: "nosuch", PolicySource: "annotation io.sysvisor.policy"},
		{Op: control.OpCreate, ID: "bad2", RuncRoot: e.runcRoot, Policy: "ci", PolicyDir: "/elsewhere"},
		{Op: control.OpCreate, ID: "bad3", RuncRoot: e.runcRoot, Policy: "../x"},
	} {
		r := s.handleControl(req)
		if r.Error == "" || !strings.Contains(r.Error, strconv.Quote(req.Policy)) || !strings.Contains(r.Error, req.PolicySource) {
			t.Errorf("create %s: %+v, want an error naming policy %q and %q", req.ID, r, req.Policy, req.PolicySource)
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
