package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sysvisor/sysvisor/supervisor/control"
	idlease "github.com/sysvisor/sysvisor/supervisor/lease"
)

// otherSupervisor starts a second sysvisord process beside this suite's,
// with its own run and state dirs and the given subuid/subgid contents; it
// is stopped (SIGTERM) when the test ends. It returns its run and state dirs.
func otherSupervisor(t *testing.T, subid []byte) (runDir, stateDir string) {
	t.Helper()
	// Short: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "sv2-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	runDir, stateDir = filepath.Join(dir, "run"), filepath.Join(dir, "state")
	for _, f := range []string{"subuid", "subgid"} {
		if err := os.WriteFile(filepath.Join(dir, f), subid, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	log, err := os.Create(filepath.Join(dir, "sysvisord.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(filepath.Join(repo, "bin", "sysvisord"), "--run-dir", runDir, "--state-dir", stateDir,
		"--subuid", filepath.Join(dir, "subuid"), "--subgid", filepath.Join(dir, "subgid"),
		"--policy-dir", filepath.Join(dir, "policies"), "--no-holder", "--no-views")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Errorf("second sysvisord did not stop within 15 s of SIGTERM")
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "sysvisord.log"))
			t.Logf("second sysvisord's log:\n%s", b)
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := control.Call(runDir, control.Request{Op: control.OpPing}, time.Second); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("second sysvisord not answering: %v", err)
		}
	}
	return runDir, stateDir
}

func ctlCreate(runDir, id string) (*control.Response, error) {
	return control.Call(runDir, control.Request{Op: control.OpCreate, ID: id, Bundle: "/nonexistent/idpool-bundle"}, 10*time.Second)
}

// Two sysvisord instances on one host, with their own state and copies of
// the same ID files (so the same pool: two test runs, or an installed
// sysvisord and a test one), lease disjoint ID blocks.
func TestTwoSupervisorsShareNoIDs(t *testing.T) {
	subid, err := os.ReadFile(filepath.Join(svDir, "subuid"))
	if err != nil {
		t.Fatal(err)
	}
	run2, _ := otherSupervisor(t, subid)
	run1 := filepath.Join(svDir, "run")
	tag := strconv.Itoa(os.Getpid())
	type got struct {
		who, id string
		l       idlease.Range
	}
	var all []got
	for i := 0; i < 4; i++ {
		for _, side := range []struct{ who, run string }{{"suite", run1}, {"second", run2}} {
			id := "idpool-" + side.who + "-" + tag + "-" + strconv.Itoa(i)
			resp, err := ctlCreate(side.run, id)
			if err != nil || resp.Lease == nil {
				t.Fatalf("create %s on the %s sysvisord: %v", id, side.who, err)
			}
			all = append(all, got{side.who, id, *resp.Lease})
			t.Cleanup(func() { control.Call(side.run, control.Request{Op: control.OpDelete, ID: id}, 10*time.Second) })
		}
	}
	// Against each other and against every lease the suite's sysvisord
	// holds (this suite's running containers too).
	for name, l := range leases(t) {
		all = append(all, got{"suite (leases.json)", name, idlease.Range{Start: l.Start, Size: l.Size}})
	}
	for i, a := range all {
		for _, b := range all[i+1:] {
			if a.id == b.id {
				continue
			}
			if uint64(a.l.Start) < uint64(b.l.Start)+uint64(b.l.Size) && uint64(b.l.Start) < uint64(a.l.Start)+uint64(a.l.Size) {
				t.Errorf("%s %s (%d+%d) and %s %s (%d+%d) share host IDs", a.who, a.id, a.l.Start, a.l.Size, b.who, b.id, b.l.Start, b.l.Size)
			}
		}
	}
}

// When the pool has no free block, create fails at once, says so and how
// to grow the pool, and leaves nothing behind; a freed block is leased
// again.
func TestIDPoolExhausted(t *testing.T) {
	// A pool of two blocks of its own, far above any other.
	runDir, stateDir := otherSupervisor(t, []byte("sysvisor:4000000000:131072\n"))
	tag := strconv.Itoa(os.Getpid())
	for i := 0; i < 2; i++ {
		id := "full-" + tag + "-" + strconv.Itoa(i)
		if resp, err := ctlCreate(runDir, id); err != nil || resp.Lease == nil {
			t.Fatalf("create %s: %v", id, err)
		}
	}
	start := time.Now()
	id := "full-" + tag + "-2"
	_, err := ctlCreate(runDir, id)
	if err == nil {
		t.Fatal("a third create in a two-block pool succeeded")
	}
	for _, want := range []string{"ID pool exhausted", "grow the pool", "subuid", "restart sysvisord"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the refusal took %v", took)
	}
	b, _ := os.ReadFile(filepath.Join(stateDir, "leases.json"))
	if strings.Contains(string(b), id) {
		t.Errorf("a lease was left for the refused create:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(stateDir, "containers", id+".json")); err == nil {
		t.Errorf("a record was left for the refused create")
	}
	// The same refusal through the runtime, as an engine's create meets
	// it: the error reaches the caller, and no lease, runc state or mount
	// is left.
	bun := t.TempDir()
	if out, err := exec.Command("runc", "spec", "--bundle", bun).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	if err := os.Mkdir(filepath.Join(bun, "rootfs"), 0o755); err != nil {
		t.Fatal(err)
	}
	runcRoot := filepath.Join(t.TempDir(), "runc")
	rid := "full-" + tag + "-rt"
	out, err := exec.Command(filepath.Join(repo, "bin", "sysvisor-runc"), "--run-dir", runDir, "--root", runcRoot,
		"create", "--bundle", bun, rid).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "ID pool exhausted") || !strings.Contains(string(out), "grow the pool") {
		t.Errorf("sysvisor-runc create with the pool full: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(stateDir, "leases.json")); strings.Contains(string(b), rid) {
		t.Errorf("a lease was left for the refused runtime create:\n%s", b)
	}
	if ents, _ := os.ReadDir(runcRoot); len(ents) > 0 {
		t.Errorf("runc state left for the refused create: %v", ents)
	}
	var left []string
	for _, m := range append(mountsUnder(runDir), mountsUnder(bun)...) {
		// sysvisord's own engine-view mount is there from its start.
		if m != filepath.Join(runDir, "engine") {
			left = append(left, m)
		}
	}
	if len(left) > 0 {
		t.Errorf("mounts left after the refused create: %v", left)
	}
	if _, err := control.Call(runDir, control.Request{Op: control.OpDelete, ID: "full-" + tag + "-0"}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if resp, err := ctlCreate(runDir, id); err != nil || resp.Lease == nil || resp.Lease.Start != 4000000000 {
		t.Errorf("create after a delete: %+v, %v; want the freed first block", resp, err)
	}
}
