package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A container cannot reach another container's views or sysctls by any
// path: its mounts name only its own directory of the views mount, ".."
// out of a view file leads nowhere, file handles are refused, an fd the
// other container hands it over a shared socket reads nothing (the views
// server checks every request's uid, whoever opened the file), and even
// the whole views mount bind-mounted in shows it nothing of the other's.
// Its sysctl writes stay its own. Each refusal is paired with the same
// step done by the owner, which must work, so the test cannot pass by
// everything failing.
func TestViewsIsolation(t *testing.T) {
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	views := filepath.Join(svDir, "run", "views")
	a := startDetached(t, "sysvisor-runc", "--memory", "64m", "-v", shared+":/x", "-v", views+":/v")
	b := startDetached(t, "sysvisor-runc", "--memory", "96m", "-v", shared+":/x")
	const aMem, bMem = "65536 kB", "98304 kB"

	// B hands out fds of its meminfo.
	mustDocker(t, "exec", "-d", b, "viewpeek", "send", "/x/b.sock", "/proc/meminfo")
	sock := filepath.Join(shared, "b.sock")
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("B's viewpeek send did not listen")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := sh(t, b, "viewpeek recv /x/b.sock; true"); !strings.Contains(got, bMem) {
		t.Fatalf("B reading its own meminfo through a passed fd: %q, want MemTotal %s", got, bMem)
	}
	if got := sh(t, a, "viewpeek recv /x/b.sock; true"); strings.Contains(got, bMem) || !strings.HasPrefix(got, "ERR read: Permission denied") {
		t.Errorf("A reading B's meminfo through B's fd: %q, want ERR read: Permission denied", got)
	}

	// Paths, handles, the whole mount.
	r := results(t, sh(t, a, `
		echo "own $(grep MemTotal /proc/meminfo | tr -s ' ' _)"
		echo "dotdot $(cat /proc/meminfo/.. >/dev/null 2>&1 && echo read || echo refused)"
		echo "mountinfo-own $(grep -c `+a+` /proc/self/mountinfo)"
		echo "mountinfo-other $(grep -c `+b+` /proc/self/mountinfo)"
		echo "handle $(viewpeek handle /proc/meminfo | cut -d: -f1 | tr ' ' _)"
		echo "via-mount-own $(grep MemTotal /v/`+a+`/proc/meminfo | tr -s ' ' _)"
		echo "via-mount-other $(cat /v/`+b+`/proc/meminfo >/dev/null 2>&1 && echo read || echo refused)"
		echo "via-mount-dotdot $(cat /v/`+a+`/../`+b+`/proc/meminfo >/dev/null 2>&1 && echo read || echo refused)"
		echo "list-root $(ls /v >/dev/null 2>&1 && echo listed || echo refused)"
	`))
	expect(t, r, "own", "MemTotal:_"+strings.ReplaceAll(aMem, " ", "_"))
	expect(t, r, "dotdot", "refused")
	if r["mountinfo-own"] == "0" {
		t.Errorf("A's mountinfo names no view of its own: the check below proves nothing")
	}
	expect(t, r, "mountinfo-other", "0")
	if !strings.HasPrefix(r["handle"], "ERR") {
		t.Errorf("open by file handle of a view: %s, want an error", r["handle"])
	}
	expect(t, r, "via-mount-own", "MemTotal:_"+strings.ReplaceAll(aMem, " ", "_"))
	expect(t, r, "via-mount-other", "refused")
	expect(t, r, "via-mount-dotdot", "refused")
	expect(t, r, "list-root", "refused")

	// Sysctls: each writes its own kernel.panic, each reads its own.
	sh(t, a, "echo 3 >/proc/sys/kernel/panic")
	sh(t, b, "echo 5 >/proc/sys/kernel/panic")
	if got := strings.TrimSpace(sh(t, a, "cat /proc/sys/kernel/panic")); got != "3" {
		t.Errorf("A's kernel.panic after B wrote its own: %s, want 3", got)
	}
	if got := strings.TrimSpace(sh(t, b, "cat /proc/sys/kernel/panic")); got != "5" {
		t.Errorf("B's kernel.panic: %s, want 5", got)
	}
}
