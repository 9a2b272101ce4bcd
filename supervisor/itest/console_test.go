package itest

// The debug console's side of the control socket: who may use it, and what
// trace and stats report about real notifications.

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sysvisor/sysvisor/supervisor/control"
)

const envCtlClient = "SYSVISOR_ITEST_CTL_CLIENT" // run dir to ping as a client

// TestItestCtlClient is not a test: it is the unprivileged client process
// TestIntegrationControlRootOnly starts.
func TestItestCtlClient(t *testing.T) {
	runDir := os.Getenv(envCtlClient)
	if runDir == "" {
		t.Skip("helper process of TestIntegrationControlRootOnly")
	}
	_, err := control.Call(runDir, control.Request{Op: control.OpPs}, 5*time.Second)
	if err == nil {
		os.Stdout.WriteString("RESULT ok\n")
	} else {
		os.Stdout.WriteString("RESULT " + err.Error() + "\n")
	}
	os.Exit(0)
}

// A process that is not root gets nothing from the control socket: the
// socket's mode refuses the connection, and with the mode opened up the
// supervisor's SO_PEERCRED check still refuses the request.
func TestIntegrationControlRootOnly(t *testing.T) {
	requireRoot(t)
	srv := startServer(t)
	sock := filepath.Join(srv.runDir, control.ControlSocket)
	st, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want 0600", st.Mode().Perm())
	}
	// As in production (0711): other users may reach the socket's path,
	// so its mode and the credentials check are what refuse them.
	if err := os.Chmod(srv.runDir, 0o711); err != nil {
		t.Fatal(err)
	}
	// The test binary must be reachable by uid 65534.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(srv.runDir, "client.test")
	if err := copyFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func() string {
		t.Helper()
		cmd := exec.Command(bin, "-test.run=^TestItestCtlClient$")
		cmd.Env = append(os.Environ(), envCtlClient+"="+srv.runDir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Pdeathsig: syscall.SIGKILL}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as uid 65534: %v\n%s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if r, ok := strings.CutPrefix(l, "RESULT "); ok {
				return r
			}
		}
		t.Fatalf("client printed no result:\n%s", out)
		return ""
	}
	if r := asNobody(); !strings.Contains(r, "permission denied") {
		t.Errorf("uid 65534 through a 0600 socket: %q, want permission denied", r)
	}
	// Open the mode: the peer-credentials check alone must refuse.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	r := asNobody()
	if !strings.Contains(r, "serves root only") || !strings.Contains(r, "peer uid 65534") {
		t.Errorf("uid 65534 through an open socket: %q, want the supervisor's root-only refusal", r)
	}
	if !strings.Contains(srv.log.String(), "control connection refused") {
		t.Error("refusal not logged")
	}
	// Root still gets its answer.
	if _, err := srv.call(control.Request{Op: control.OpPs}); err != nil {
		t.Errorf("root: %v", err)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		return errors.Join(err, os.Remove(dst))
	}
	return nil
}
