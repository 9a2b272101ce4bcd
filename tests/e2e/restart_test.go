package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var roundRE = regexp.MustCompile(`(?m)^round (\d+) up (\d+)$`)

// rounds returns the last round the survivor finished and its uptime.
func rounds(t *testing.T, id string) (n, up int, log string) {
	t.Helper()
	log, _ = docker(t, "logs", id)
	m := roundRE.FindAllStringSubmatch(log, -1)
	if len(m) == 0 {
		return 0, 0, log
	}
	n, _ = strconv.Atoi(m[len(m)-1][1])
	up, _ = strconv.Atoi(m[len(m)-1][2])
	return n, up, log
}

func waitRounds(t *testing.T, id string, past int, within time.Duration) (int, int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n, up, log := rounds(t, id)
		if n > past {
			return n, up
		}
		if time.Now().After(deadline) {
			t.Fatalf("survivor stuck at round %d for %v; log tail:\n%s", n, within, tail(log, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// stopSysvisord stops the environment's sysvisord with sig and waits for
// it to be gone.
func stopSysvisord(t *testing.T, sig syscall.Signal) {
	t.Helper()
	pid := sysvisordPid(t)
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatal(err)
	}
	for i := 0; syscall.Kill(pid, 0) == nil; i++ {
		if i == 200 {
			t.Fatalf("sysvisord %d still alive 10 s after %v", pid, sig)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRestartKeepsContainers: a container started before sysvisord is
// killed (SIGKILL) or stopped (SIGTERM) and started again is served, in its
// own process tree, as before: the loop pauses while sysvisord is away and
// goes on without one failure, with fresh views and its sysctl.
func TestRestartKeepsContainers(t *testing.T) {
	id := mustDocker(t, "run", "-d", "--runtime=sysvisor-runc", "--memory", "96m", image, "survivor")
	t.Cleanup(func() { docker(t, "rm", "-f", id) })
	_, up0 := waitRounds(t, id, 3, 30*time.Second)
	payload := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(payload, []byte("restart-payload\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM, syscall.SIGKILL} {
		stopSysvisord(t, sig)
		// The loop waits (its trapped mount, its view reads), it does
		// not fail.
		time.Sleep(time.Second)
		paused, _, _ := rounds(t, id)
		time.Sleep(time.Second)
		if n, _, log := rounds(t, id); n > paused+1 {
			t.Errorf("after %v: rounds went on without sysvisord (%d then %d):\n%s", sig, paused, n, tail(log, 10))
		}
		start := time.Now()
		if out, err := envsh("up"); err != nil {
			t.Fatalf("start sysvisord again: %v\n%s", err, out)
		}
		ready := time.Since(start)
		n, _ := waitRounds(t, id, paused+1, 5*time.Second)
		t.Logf("%v: paused at round %d; sysvisord up again in %v; round %d %v later", sig, paused, ready.Round(time.Millisecond), n, time.Since(start).Round(time.Millisecond))
		// The engine's view of the container is served again (it failed,
		// ENOTCONN, while sysvisord was away): docker cp into it works.
		dst := "/tmp/cp-after-" + strings.ToLower(strings.ReplaceAll(sig.String(), " ", "-"))
		if _, err := docker(t, "cp", payload, id+":"+dst); err != nil {
			t.Errorf("after %v: docker cp into the running container: %v", sig, err)
		} else if got := mustDocker(t, "exec", id, "sh", "-c", "cat "+dst+"; stat -c %u "+dst); got != "restart-payload\n0" {
			t.Errorf("after %v: the copied file reads %q", sig, got)
		}
		_, up := waitRounds(t, id, n+5, 10*time.Second)
		if up < up0 {
			t.Errorf("uptime went back: %d then %d", up0, up)
		}
		up0 = up
	}
	upgrade(t, id)
	_, _, log := rounds(t, id)
	if strings.Contains(log, "FAIL") {
		var fails []string
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "FAIL") {
				fails = append(fails, l)
			}
		}
		t.Errorf("the survivor saw failures:\n%s", tail(strings.Join(fails, "\n"), 20))
	}
	if !strings.Contains(log, "rereader ok") {
		t.Errorf("the /proc/stat reader never read:\n%s", tail(log, 10))
	}
	out, err := sysvisorctl(t, "ps")
	if err != nil {
		t.Fatal(err)
	}
	row := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, id[:12]) {
			row = l
		}
	}
	if !strings.Contains(row, "running") {
		t.Errorf("sysvisorctl ps after the restarts: %q, want %s running\n%s", row, id[:12], out)
	}
}

// upgrade replaces sysvisord by a new build (another version) the way an
// upgrade does, binary first, then the restart, and back: the survivor
// goes on through both, and the new sysvisord reports its version.
func upgrade(t *testing.T, id string) {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Log("no Go toolchain here (a compiled test binary in a VM): the upgrade step is left to the host matrix's restart check")
		return
	}
	newBin := filepath.Join(svDir, "newbin")
	build := exec.Command(gobin, "build", "-ldflags", "-X github.com/sysvisor/sysvisor/supervisor.Version=upgrade-test",
		"-o", filepath.Join(newBin, "sysvisord"), "./cmd/sysvisord")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the new sysvisord: %v\n%s", err, out)
	}
	for _, bin := range []string{newBin, filepath.Join(repo, "bin")} {
		paused, _, _ := rounds(t, id)
		stopSysvisord(t, syscall.SIGTERM)
		cmd := exec.Command(filepath.Join(repo, "tests", "env.sh"), "up")
		cmd.Env = append(os.Environ(), "SV_DIR="+svDir, "SV_LOG_LEVEL=debug", "SV_BIN="+bin)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("start sysvisord from %s: %v\n%s", bin, err, out)
		}
		waitRounds(t, id, paused+3, 10*time.Second)
		out, err := sysvisorctl(t, "version")
		if err != nil {
			t.Fatal(err)
		}
		if upgraded := strings.Contains(out, "upgrade-test"); upgraded != (bin == newBin) {
			t.Errorf("sysvisord from %s reports:\n%s", bin, out)
		}
	}
}
