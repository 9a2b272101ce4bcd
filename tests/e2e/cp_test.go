package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// docker cp and a running sysvisor container, as docs/architecture.md
// ("Rootfs ownership", Known limits) says: copying out works; copying in
// fails with EROFS (the engine's path is the read-only view) and the
// documented tar-through-exec way puts root's files in place; copying into
// a stopped container works, owned by the container's root.
func TestDockerCpRunning(t *testing.T) {
	id := startDetached(t, "sysvisor-runc")
	src := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(src, []byte("cp-payload\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// Out of a running container: the image's file, as it is.
	out, err := docker(t, "cp", id+":/etc/passwd", "-")
	if err != nil || !strings.Contains(out, "root:") {
		t.Errorf("docker cp out of a running container: %v\n%.200s", err, out)
	}

	// In: the documented limit. A change that makes it work must change
	// this test and the docs together.
	_, err = docker(t, "cp", src, id+":/tmp/payload")
	if err == nil {
		t.Errorf("docker cp into a running container succeeded: update docs/architecture.md's Known limits and this test")
	} else if !strings.Contains(err.Error(), "read-only file system") {
		t.Errorf("docker cp into a running container: %v; want the documented EROFS", err)
	}

	// The documented way in: tar through docker exec.
	cmd := exec.Command("sh", "-c", `tar -C "$1" -c payload | /usr/bin/docker exec -i "$2" tar -x -C /tmp`, "sh", filepath.Dir(src), id)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+svDir+"/docker.sock")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar through docker exec: %v\n%s", err, b)
	}
	if got := mustDocker(t, "exec", id, "sh", "-c", "cat /tmp/payload; stat -c %u:%g /tmp/payload"); got != "cp-payload\n0:0" {
		t.Errorf("file put in through exec: %q, want its content and 0:0", got)
	}

	// Into a stopped container: works, root's inside once it runs again.
	mustDocker(t, "stop", "-t", "1", id)
	if _, err := docker(t, "cp", src, id+":/tmp/stopped"); err != nil {
		t.Fatalf("docker cp into a stopped container: %v", err)
	}
	mustDocker(t, "start", id)
	if got := mustDocker(t, "exec", id, "sh", "-c", "cat /tmp/stopped; stat -c %u:%g /tmp/stopped"); got != "cp-payload\n0:0" {
		t.Errorf("file copied into the stopped container: %q, want its content and 0:0", got)
	}
}
