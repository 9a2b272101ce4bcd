package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/lease"
	"github.com/sysvisor/sysvisor/supervisor/registry"
)

// statLine is a /proc/<pid>/stat line with the given comm and starttime
// (field 22); the other fields are what a sleeping shell shows.
func statLine(pid int, comm string, start string) string {
	f := []string{"S", "1", "4242", "4242", "0", "-1", "4194560", "1030", "0", "0", "0", "2", "1", "0", "0", "20", "0", "1",
		"0", start, "4517888", "203", "18446744073709551615", "94489280512000", "94489281113893", "140727101190384", "0", "0", "0", "65536", "4",
		"0", "0", "17", "3", "0", "0", "0", "0", "0", "94489281253776", "94489281263888", "94489290481664", "140727101194593",
		"140727101194596", "140727101194596", "140727101194221", "0"}
	return fmt.Sprintf("%d (%s) %s\n", pid, comm, strings.Join(f, " "))
}

func TestParseStatStart(t *testing.T) {
	const year = 365 * 24 * time.Hour
	tests := []struct {
		name string
		stat string
		want time.Duration
	}{
		{"shell", statLine(4242, "sh", "123456"), 1234560 * time.Millisecond},
		{"started at boot", statLine(1, "systemd", "0"), 0},
		{"comm with spaces", statLine(7, "my prog v2", "250"), 2500 * time.Millisecond},
		{"comm with parentheses", statLine(7, "a) b (c", "100"), time.Second},
		{"comm looking like fields", statLine(7, "x) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22", "300"), 3 * time.Second},
		{"comm ending in )", statLine(7, "(sd-pam))", "42"), 420 * time.Millisecond},
		{"empty comm", statLine(7, "", "1"), 10 * time.Millisecond},
		{"host up four years", statLine(7, "sh", "12614400000"), 4 * year},
		{"host up forty years", statLine(7, "sh", "126144000000"), 40 * year},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatStart(tc.stat)
			if err != nil || got != tc.want {
				t.Errorf("parseStatStart(%q) = %v, %v; want %v", tc.stat, got, err, tc.want)
			}
		})
	}
}

func TestParseStatStartErrors(t *testing.T) {
	for _, stat := range []string{
		"",
		"4242 sh S 1 2 3",                  // no parentheses
		"4242 (sh) S 1 2 3 4 5 6 7 8 9",    // truncated
		statLine(1, "sh", "soon"),          // not a number
		statLine(1, "sh", "-5"),            // negative
		"4242 (sh) S 1 2 3 4 5 6 7 8 9 10", // still short
	} {
		if d, err := parseStatStart(stat); err == nil {
			t.Errorf("parseStatStart(%q) = %v, want an error", stat, d)
		}
	}
}

func TestProcStart(t *testing.T) {
	start, err := procStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	now, err := handlers.BootTime()
	if err != nil {
		t.Fatal(err)
	}
	// This process started on CLOCK_BOOTTIME before now, within a minute
	// (USER_HZ granularity).
	if start <= 0 || start > now || now-start > time.Hour {
		t.Errorf("start %v, boot time now %v", start, now)
	}
}

type env struct {
	cfg      Config
	runcRoot string
}

func newEnv(t *testing.T) env {
	t.Helper()
	dir := t.TempDir()
	e := env{
		cfg: Config{
			RunDir:   filepath.Join(dir, "run"),
			StateDir: filepath.Join(dir, "state"),
			SubUID:   filepath.Join(dir, "subuid"),
			SubGID:   filepath.Join(dir, "subgid"),
			// Never the host's /etc/sysvisor/policies.
			PolicyDir: filepath.Join(dir, "policies"),
			// Fake containers on fake pools: no host IDs to share.
			IDRegistry: filepath.Join(dir, "idpool"),
		},
		runcRoot: filepath.Join(dir, "runc"),
	}
	for _, f := range []string{e.cfg.SubUID, e.cfg.SubGID} {
		if err := os.WriteFile(f, []byte("root:100000:65536\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e env) start(t *testing.T) *Server {
	t.Helper()
	s, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.lock.Close() })
	return s
}

// runcState makes runc's state file for id exist.
func (e env) runcState(t *testing.T, id string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(e.runcRoot, id), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.runcRoot, id, "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func block(i uint32) lease.Range {
	return lease.Range{Start: 196608 + i*lease.BlockSize, Size: lease.BlockSize}
}

func TestHandleControl(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	create := func(id string) control.Response {
		return s.handleControl(control.Request{Op: control.OpCreate, ID: id, Bundle: "/bundles/" + id, RuncRoot: e.runcRoot, Policy: "default"})
	}

	if r := s.handleControl(control.Request{Op: control.OpPing}); r.Error != "" {
		t.Errorf("ping: %+v", r)
	}
	r := s.handleControl(control.Request{Op: control.OpVersion})
	if r.Version != Version || r.Pool == nil || *r.Pool != (lease.Range{Start: 196608, Size: lease.DefaultSize}) {
		t.Errorf("version: %+v (pool %+v)", r, r.Pool)
	}

	r1 := create("c1")
	if r1.Error != "" || r1.Lease == nil || *r1.Lease != block(0) {
		t.Fatalf("create c1: %+v", r1)
	}
	if again := create("c1"); again.Error != "" || *again.Lease != block(0) {
		t.Errorf("retried create c1: %+v", again)
	}
	if r2 := create("c2"); r2.Error != "" || *r2.Lease != block(1) {
		t.Errorf("create c2: %+v", r2)
	}
	for _, bad := range []string{"", "..", "../../etc", "a/b"} {
		if r := create(bad); r.Error == "" || r.Lease != nil {
			t.Errorf("create %q: %+v, want refused", bad, r)
		}
		if r := s.handleControl(control.Request{Op: control.OpDelete, ID: bad}); r.Error == "" {
			t.Errorf("delete %q accepted", bad)
		}
	}

	ps := s.handleControl(control.Request{Op: control.OpPs}).Containers
	if len(ps) != 2 || ps[0].ID != "c1" || ps[1].ID != "c2" {
		t.Fatalf("ps: %+v", ps)
	}
	if p := ps[0]; p.Status != registry.StatusCreated || p.Lease != block(0) || p.Bundle != "/bundles/c1" || p.Policy != "default" ||
		p.RuncRoot != e.runcRoot || p.UptimeSeconds != 0 {
		t.Errorf("ps row %+v", p)
	}

	if r := s.handleControl(control.Request{Op: control.OpDelete, ID: "c1"}); r.Error != "" {
		t.Errorf("delete c1: %+v", r)
	}
	if r := s.handleControl(control.Request{Op: control.OpDelete, ID: "c1"}); r.Error != "" {
		t.Errorf("repeated delete c1: %+v", r)
	}
	if _, ok := s.leases.Get("c1"); ok {
		t.Error("c1's lease survived its delete")
	}
	if _, err := os.Stat(filepath.Join(e.cfg.StateDir, "containers", "c1.json")); !os.IsNotExist(err) {
		t.Errorf("c1's record survived its delete: %v", err)
	}
	if r3 := create("c3"); *r3.Lease != block(0) {
		t.Errorf("create c3 after deleting c1: %+v, want the freed block", r3.Lease)
	}
	if r := s.handleControl(control.Request{Op: "bogus"}); !strings.Contains(r.Error, `unknown op "bogus"`) {
		t.Errorf("unknown op: %+v", r)
	}
}

func TestNewCreatesPool(t *testing.T) {
	e := newEnv(t)
	e.start(t)
	for _, f := range []string{e.cfg.SubUID, e.cfg.SubGID} {
		b, _ := os.ReadFile(f)
		if !strings.Contains(string(b), "sysvisor:196608:268435456\n") {
			t.Errorf("%s: %q, want the sysvisor pool appended", f, b)
		}
	}
}

func TestOneSupervisorPerStateDir(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	if _, err := New(e.cfg); err == nil || !strings.Contains(err.Error(), "another sysvisord") {
		t.Fatalf("second supervisor on %s: %v", e.cfg.StateDir, err)
	}
	s.lock.Close()
	e.start(t)
}

func TestReconcile(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	for _, id := range []string{"gone", "alive", "fresh", "exited", "running"} {
		if r := s.handleControl(control.Request{Op: control.OpCreate, ID: id, RuncRoot: e.runcRoot}); r.Error != "" {
			t.Fatal(r.Error)
		}
	}
	old := time.Now().Add(-2 * time.Minute).UTC()
	me, err := procStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"gone", "alive", "exited", "running"} {
		s.reg.Update(id, func(r *registry.Record) { r.Created = old })
	}
	for _, id := range []string{"alive", "exited", "running"} {
		e.runcState(t, id)
	}
	// Both were running; only one init is still there (this process).
	s.reg.Update("exited", func(r *registry.Record) {
		r.Status, r.InitPid, r.InitStartNs = registry.StatusRunning, os.Getpid(), int64(me)+int64(time.Second)
	})
	s.reg.Update("running", func(r *registry.Record) {
		r.Status, r.InitPid, r.InitStartNs = registry.StatusRunning, os.Getpid(), int64(me)
	})
	// A lease whose record was lost.
	if _, err := s.leases.Acquire("orphan", "", ""); err != nil {
		t.Fatal(err)
	}
	s.lock.Close()

	s2 := e.start(t)
	// Run collects once the held listeners are re-attached (none here).
	s2.collect()
	if _, ok := s2.reg.Get("gone"); ok {
		t.Error("a container deleted while sysvisord was down kept its record")
	}
	for _, id := range []string{"gone", "orphan"} {
		if _, ok := s2.leases.Get(id); ok {
			t.Errorf("%s kept its lease", id)
		}
	}
	for _, id := range []string{"alive", "fresh", "exited", "running"} {
		if _, ok := s2.leases.Get(id); !ok {
			t.Errorf("%s lost its lease", id)
		}
	}
	status := func(id string) string {
		c, ok := s2.reg.Get(id)
		if !ok {
			return "missing"
		}
		return c.Snapshot().Status
	}
	if got := status("exited"); got != registry.StatusStopped {
		t.Errorf("container whose init is gone: %s, want stopped", got)
	}
	if got := status("running"); got != registry.StatusRunning {
		t.Errorf("container whose init lives: %s, want running", got)
	}
	if got := status("fresh"); got != registry.StatusCreated {
		t.Errorf("container being created: %s", got)
	}
}

// An older sysvisord meeting state a newer one wrote refuses to start,
// names the file and both versions, and changes nothing: not the ID pool,
// not the leases, not the record.
func TestNewerStateRefused(t *testing.T) {
	for _, tc := range []struct{ name, file, content, want string }{
		{"record", "containers/c1.json", `{"format": 99, "id": "c1", "status": "running"}`, "container record"},
		{"leases", "leases.json", `{"version": 7, "pool": {"start": 100000, "size": 65536}, "leases": {}}`, "leases"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			path := filepath.Join(e.cfg.StateDir, tc.file)
			os.MkdirAll(filepath.Dir(path), 0o700)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(e.cfg.SubUID)
			_, err := New(e.cfg)
			if err == nil {
				t.Fatal("New accepted a newer state")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) || !strings.Contains(msg, tc.want) || !strings.Contains(msg, "reads versions up to") {
				t.Errorf("error %q: want the file, its version and ours", msg)
			}
			after, _ := os.ReadFile(e.cfg.SubUID)
			if string(after) != string(before) {
				t.Errorf("subuid changed:\n%s", after)
			}
			if got, _ := os.ReadFile(path); string(got) != tc.content {
				t.Errorf("%s changed: %s", tc.file, got)
			}
			if tc.name == "record" {
				if _, err := os.Stat(filepath.Join(e.cfg.StateDir, "leases.json")); err == nil {
					t.Error("leases.json written")
				}
			}
		})
	}
}

// Records written before formats were versioned (no "format") are read
// as format 1, and written back with the current one.
func TestOlderRecordRead(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(e.cfg.StateDir, "containers")
	os.MkdirAll(dir, 0o700)
	old := `{"id": "c1", "bundle": "/b", "policy": "default", "lease": {"start": 100000, "size": 65536}, "status": "created", "created": "2026-12-01T00:00:00Z"}`
	os.WriteFile(filepath.Join(dir, "c1.json"), []byte(old), 0o600)
	s := e.start(t)
	c, ok := s.reg.Get("c1")
	if !ok || c.Snapshot().Bundle != "/b" {
		t.Fatalf("old record not read: %v", ok)
	}
	if _, err := s.reg.Update("c1", func(r *registry.Record) { r.Bundle = "/b2" }); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "c1.json"))
	if !strings.Contains(string(b), `"format": 2`) {
		t.Errorf("rewritten record lacks the format:\n%s", b)
	}
}

// A Kubernetes pod's app containers share the sandbox's user namespace, so
// they get the sandbox's lease; it is released when the last container of
// the pod is gone, in whatever order they go, also across a restart.
func TestPodSharesLease(t *testing.T) {
	e := newEnv(t)
	s := e.start(t)
	create := func(id, pod string) control.Response {
		return s.handleControl(control.Request{Op: control.OpCreate, ID: id, RuncRoot: e.runcRoot, Policy: "default", Pod: pod})
	}
	del := func(s *Server, id string) {
		t.Helper()
		if r := s.handleControl(control.Request{Op: control.OpDelete, ID: id}); r.Error != "" {
			t.Fatalf("delete %s: %s", id, r.Error)
		}
	}
	if r := s.handleControl(control.Request{Op: control.OpCreate, ID: "sb", RuncRoot: e.runcRoot, Policy: "default", Sandbox: true}); r.Error != "" || *r.Lease != block(0) {
		t.Fatalf("sandbox: %+v", r)
	}
	for _, id := range []string{"app1", "app2"} {
		if r := create(id, "sb"); r.Error != "" || r.Lease == nil || *r.Lease != block(0) {
			t.Fatalf("member %s: %+v, want the sandbox's lease %v", id, r, block(0))
		}
	}
	if r := create("other", ""); r.Error != "" || *r.Lease != block(1) {
		t.Fatalf("another pod: %+v, want its own block", r)
	}
	for _, tc := range []struct{ id, pod, want string }{
		{"x1", "nosuch", "not a container of this sysvisord"},
		{"x2", "app1", "is itself an app container of pod sb"},
		{"x3", "x3", "its own pod's sandbox"},
		{"x4", "../sb", "pod:"},
		// Not created as a sandbox: its namespaces are not for joining.
		{"x5", "other", "was not created as a pod's sandbox"},
	} {
		r := create(tc.id, tc.pod)
		if !strings.Contains(r.Error, tc.want) || r.Lease != nil {
			t.Errorf("create %s in pod %q: %+v, want an error with %q", tc.id, tc.pod, r, tc.want)
		}
		if _, ok := s.reg.Get(tc.id); ok {
			t.Errorf("refused %s left a record", tc.id)
		}
	}
	if r := create("app1", "sb"); r.Lease == nil || *r.Lease != block(0) {
		t.Errorf("retried create of a member: %+v", r)
	}

	// The sandbox first: its members keep the lease.
	del(s, "app1")
	del(s, "sb")
	if _, ok := s.leases.Get("sb"); !ok {
		t.Fatal("the pod's lease went with its sandbox while app2 lives")
	}
	if r := create("new", ""); *r.Lease != block(2) {
		t.Errorf("a new container got %v while the pod holds block 0", r.Lease)
	}
	// A restart keeps it too: app2's record holds it.
	s.lock.Close()
	s2 := e.start(t)
	if _, ok := s2.leases.Get("sb"); !ok {
		t.Fatal("a restart released the lease of a pod with a member left")
	}
	del(s2, "app2")
	if _, ok := s2.leases.Get("sb"); ok {
		t.Error("the pod's lease outlived its last container")
	}
	if r := s2.handleControl(control.Request{Op: control.OpCreate, ID: "last", RuncRoot: e.runcRoot, Policy: "default"}); *r.Lease != block(0) {
		t.Errorf("the freed block: %+v", r.Lease)
	}
}
