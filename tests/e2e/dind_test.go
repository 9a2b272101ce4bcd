package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestDockerInDocker runs tests/dind.sh: inner Docker (load, run, build,
// bridge networks, NAT, memory limits, exec/stop/restart, the system
// container's own restart) and systemd as init, in two system containers
// side by side, twice, against a private engine of its own. The script
// prints each step with its time and checks that nothing is left behind.
func TestDockerInDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		if os.Getenv("SYSVISOR_E2E") == "required" {
			t.Fatal("debootstrap not installed (make deps)")
		}
		t.Skip("debootstrap not installed (make deps)")
	}
	dir := fmt.Sprintf("/tmp/sysvisor-dind-%d", os.Getpid())
	cmd := exec.Command(filepath.Join(repo, "tests", "dind.sh"))
	cmd.Env = append(os.Environ(), "SV_DIR="+dir, "DIND_COUNT=2", "DIND_ROUNDS=2")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	t.Logf("tests/dind.sh (%s):\n%s", time.Since(start).Round(time.Second), out)
	if err != nil {
		t.Fatalf("tests/dind.sh: %v", err)
	}
	if left := mountsUnder(dir); len(left) > 0 {
		t.Errorf("mounts left behind: %v", left)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s left behind", dir)
	}
}
