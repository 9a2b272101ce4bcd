// Package bench holds the smoke test of the benchmark suite: bench/run
// --smoke runs every figure once with minimal counts, so `make test`
// catches a broken benchmark without the time and noise of a real run. It
// runs only with SYSVISOR_E2E set (make test sets it to "required", which
// turns "cannot run here" into a failure), as root, with dockerd and a
// built bin/.
package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// allowedSkips are figures that may be skipped on any machine, with why.
var allowedSkips = map[string]string{
	"dindWorkloads": "needs the DinD image (issue 6)",
}

func unavailable(repo string) string {
	if os.Geteuid() != 0 {
		return "not root"
	}
	for _, p := range []string{"dockerd", "runc", "gcc", "lxcfs"} {
		if _, err := exec.LookPath(p); err != nil {
			return p + " not installed (make deps)"
		}
	}
	if _, err := os.Stat("/usr/bin/docker"); err != nil {
		return "Debian's docker client not installed (make deps)"
	}
	for _, b := range []string{"sysvisor-runc", "sysvisord"} {
		if _, err := os.Stat(filepath.Join(repo, "bin", b)); err != nil {
			return "bin/" + b + " missing (make build)"
		}
	}
	return ""
}

func TestSmoke(t *testing.T) {
	mode := os.Getenv("SYSVISOR_E2E")
	if mode == "" || testing.Short() {
		t.Skip("benchmark smoke test: set SYSVISOR_E2E=1 (make test sets it)")
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	repo := filepath.Dir(wd)
	if reason := unavailable(repo); reason != "" {
		if mode == "required" {
			t.Fatalf("required but cannot run: %s", reason)
		}
		t.Skip(reason)
	}
	// bench/run's env.sh down removes SV_DIR; the deferred down is for a
	// run that was killed.
	svDir, err := os.MkdirTemp("", "sv-bench-smoke-")
	if err != nil {
		t.Fatal(err)
	}
	// MkdirTemp makes it 0700; the containers' root users (IDs from their
	// leases) must traverse it to reach their rootfs, as under env.sh's own.
	if err := os.Chmod(svDir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	defer func() {
		down := exec.Command(filepath.Join(repo, "tests", "env.sh"), "down")
		down.Env = append(os.Environ(), "SV_DIR="+svDir)
		if b, err := down.CombinedOutput(); err != nil {
			t.Errorf("tests/env.sh down: %v\n%s", err, b)
		}
		os.RemoveAll(svDir)
	}()

	// About 3–4 min on an idle machine of this kind; more beside the host
	// matrix's VMs.
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(wd, "run"), "--smoke")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "SV_DIR="+svDir, "BENCH_OUT="+out, "SV_BIN="+filepath.Join(repo, "bin"))
	cmd.WaitDelay = 30 * time.Second
	start := time.Now()
	b, err := cmd.CombinedOutput()
	t.Logf("bench/run --smoke took %s", time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("bench/run --smoke: %v\n%s", err, b)
	}

	raw, err := os.ReadFile(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatalf("no results.json: %v\n%s", err, b)
	}
	var res map[string]json.RawMessage
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	figures := 0
	for key, v := range res {
		if key == "date" || key == "machine" {
			continue
		}
		figures++
		var f struct {
			Skipped string `json:"skipped"`
		}
		if err := json.Unmarshal(v, &f); err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		if f.Skipped == "" {
			continue
		}
		if want, ok := allowedSkips[key]; ok && strings.Contains(f.Skipped, want) {
			continue
		}
		t.Errorf("figure %s was skipped: %s", key, f.Skipped)
	}
	if figures < 9 {
		t.Errorf("results.json has %d figures, want 9 or more", figures)
	}
	for _, f := range []string{"results.png", "results.txt"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("%s missing or empty: %v", f, err)
		}
	}
	if t.Failed() {
		t.Logf("bench/run output:\n%s", b)
	}
}
