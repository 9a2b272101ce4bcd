package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docker cp and a running sysvisor container work as with runc: the
// engine's rootfs path is sysvisord's ID-translating view of the
// container's overlay (docs/architecture.md, "The engine's view").
// Copying in puts the files where the container sees them, owned as under
// runc; copying out sees what the container wrote after it started; diff
// and commit see the copied files with on-disk (image-native) owners.
func TestDockerCpRunning(t *testing.T) {
	id := startDetached(t, "sysvisor-runc")
	tmp := t.TempDir()
	src := filepath.Join(tmp, "payload")
	if err := os.WriteFile(src, []byte("cp-payload\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(tmp, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "sub", "user-file"), []byte("user\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{tree, filepath.Join(tree, "sub"), filepath.Join(tree, "sub", "user-file")} {
		if err := os.Chown(p, 1000, 1000); err != nil {
			t.Fatal(err)
		}
	}

	// Out of a running container: the image's file, and a file the
	// container wrote after it started (the view is the container's
	// overlay itself, not a copy of its layers).
	out, err := docker(t, "cp", id+":/etc/passwd", "-")
	if err != nil || !strings.Contains(out, "root:") {
		t.Errorf("docker cp out of a running container: %v\n%.200s", err, out)
	}
	mustDocker(t, "exec", id, "sh", "-c", "echo live > /tmp/live")
	if out, err := docker(t, "cp", id+":/tmp/live", "-"); err != nil || !strings.Contains(out, "live") {
		t.Errorf("docker cp out of a file written after start: %v\n%.200s", err, out)
	}

	// In: a new file in a directory of the image (/etc: copied up), a
	// new file in the writable layer, and a tree with its owners (-a).
	if _, err := docker(t, "cp", src, id+":/etc/payload"); err != nil {
		b, _ := os.ReadFile(filepath.Join(svDir, "log", "sysvisord.log"))
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "engine") {
				lines = append(lines, l)
			}
		}
		if len(lines) > 20 {
			lines = lines[len(lines)-20:]
		}
		t.Fatalf("docker cp into a running container: %v\nsysvisord's log on the engine view:\n%s", err, strings.Join(lines, "\n"))
	}
	if _, err := docker(t, "cp", src, id+":/tmp/payload"); err != nil {
		t.Fatalf("docker cp into a running container's /tmp: %v", err)
	}
	if _, err := docker(t, "cp", "-a", tree, id+":/tree"); err != nil {
		t.Fatalf("docker cp -a of a tree: %v", err)
	}
	got := mustDocker(t, "exec", id, "sh", "-c",
		"cat /etc/payload /tmp/payload; stat -c '%n %u:%g %a' /etc/payload /tmp/payload /tree /tree/sub /tree/sub/user-file; cat /tree/sub/user-file")
	want := "cp-payload\ncp-payload\n" +
		"/etc/payload 0:0 644\n/tmp/payload 0:0 644\n/tree 1000:1000 750\n/tree/sub 1000:1000 750\n/tree/sub/user-file 1000:1000 600\n" +
		"user"
	if got != want {
		t.Errorf("files copied into the running container, as the container sees them:\n%s\nwant:\n%s", got, want)
	}
	// The container can change what was copied in: it is its root's.
	if _, err := docker(t, "exec", id, "sh", "-c", "echo more >> /etc/payload && rm /tmp/payload"); err != nil {
		t.Errorf("the container's root cannot change the copied files: %v", err)
	}
	// Overwrite a file the container made.
	if _, err := docker(t, "cp", src, id+":/tmp/live"); err != nil {
		t.Errorf("docker cp over an existing file: %v", err)
	}
	if got := mustDocker(t, "exec", id, "cat", "/tmp/live"); got != "cp-payload" {
		t.Errorf("overwritten file: %q", got)
	}

	// The engine's own record of the change: diff, and a commit whose
	// layer has on-disk owners, checked under plain runc.
	diff := mustDocker(t, "diff", id)
	for _, line := range []string{"A /etc/payload", "A /tree/sub/user-file", "C /etc"} {
		if !strings.Contains(diff, line) {
			t.Errorf("docker diff lacks %q:\n%s", line, diff)
		}
	}
	img := "sysvisor-test/cp-running-commit"
	mustDocker(t, "commit", id, img)
	t.Cleanup(func() { docker(t, "rmi", "-f", img) })
	if got := mustDocker(t, "run", "--rm", "--runtime=runc", img, "stat", "-c", "%n %u:%g", "/etc/payload", "/tree/sub/user-file"); got != "/etc/payload 0:0\n/tree/sub/user-file 1000:1000" {
		t.Errorf("committed image under runc:\n%s", got)
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
	// Started again, the engine's path is the translating view again.
	if _, err := docker(t, "cp", src, id+":/tmp/again"); err != nil {
		t.Errorf("docker cp into the restarted container: %v", err)
	}
}
