package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// crish runs tests/cri.sh against the environment, with its containerd in
// dir.
func crish(dir string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(repo, "tests", "cri.sh"), args...)
	cmd.Env = append(os.Environ(), "SV_DIR="+svDir, "CRI_DIR="+dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The CRI harness the Kubernetes work builds on (issue 16; docs/kubernetes.md):
// a private containerd whose CRI plugin has the handlers runc (the
// baseline, through tests/cri/runc-clamp) and sysvisor. A pod runs under the
// baseline on this host, where plain runc fails every pod (the CRI's
// oom_score_adj -998 needs CAP_SYS_RESOURCE), and sysvisorctl doctor finds
// the sysvisor handler in the config as containerd 1.x reads it. Pods as
// system containers are not done: their network namespace is the CRI's,
// owned by the host's user namespace (see docs/kubernetes.md).
func TestCRIHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Skip("no containerd (make deps)")
	}
	// tests/cri.sh builds crictl and runc-clamp with the Go toolchain,
	// which the host matrix's VMs (compiled test binaries) do not have.
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no Go toolchain here to build crictl and runc-clamp (a compiled test binary in a VM)")
	}
	dir := filepath.Join(svDir, fmt.Sprintf("cri-%d", os.Getpid()))
	if out, err := crish(dir, "up"); err != nil {
		t.Fatalf("tests/cri.sh up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := crish(dir, "down"); err != nil {
			t.Errorf("tests/cri.sh down: %v\n%s", err, out)
		}
		if left := mountsUnder(dir); len(left) > 0 {
			t.Errorf("mounts left behind: %v", left)
		}
	})
	parent, err := crish(dir, "cgroup-parent")
	if err != nil {
		t.Fatal(err)
	}
	pod := filepath.Join(t.TempDir(), "pod.json")
	if err := os.WriteFile(pod, []byte(fmt.Sprintf(`{"metadata": {"name": "base", "namespace": "default", "uid": "base-uid", "attempt": 1},
 "log_directory": %q, "linux": {"cgroup_parent": %q}}`, filepath.Join(dir, "logs", "base"), strings.TrimSpace(parent)+"/base")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := crish(dir, "crictl", "runp", "--runtime=runc", pod)
	if err != nil {
		t.Fatalf("crictl runp --runtime=runc: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	id := lines[len(lines)-1]
	if out, err := crish(dir, "crictl", "inspectp", "-o", "go-template", "--template", "{{.status.state}}", id); err != nil || !strings.Contains(out, "SANDBOX_READY") {
		t.Errorf("the baseline pod: %v\n%s", err, out)
	}
	for _, op := range []string{"stopp", "rmp"} {
		if out, err := crish(dir, "crictl", op, id); err != nil {
			t.Errorf("crictl %s: %v\n%s", op, err, out)
		}
	}
	out, _ = sysvisorctl(t, "doctor", "--containerd-config", filepath.Join(dir, "config.toml"))
	if !strings.Contains(out, "handler sysvisor (config version 2)") {
		t.Errorf("sysvisorctl doctor on the harness's config:\n%s", out)
	}
}
