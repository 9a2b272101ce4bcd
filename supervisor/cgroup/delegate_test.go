package cgroup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func owner(t *testing.T, p string) int {
	t.Helper()
	st, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return int(st.Sys().(*syscall.Stat_t).Uid)
}

func TestDelegate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	root := t.TempDir()
	mounts := Mounts{"memory": filepath.Join(root, "memory"), "name=systemd": filepath.Join(root, "systemd")}
	paths := Paths{}
	for ctrl, mnt := range mounts {
		dir := filepath.Join(mnt, "parent", "c1")
		os.MkdirAll(dir, 0o755)
		for _, f := range []string{"cgroup.procs", "tasks", "memory.limit_in_bytes"} {
			os.WriteFile(filepath.Join(dir, f), nil, 0o644)
		}
		paths[ctrl] = dir
	}
	if err := Delegate(paths, mounts, 200000, 200000); err != nil {
		t.Fatal(err)
	}
	for ctrl, dir := range paths {
		for _, f := range []string{"", "cgroup.procs", "tasks"} {
			if got := owner(t, filepath.Join(dir, f)); got != 200000 {
				t.Errorf("%s %s owned by %d", ctrl, f, got)
			}
		}
		// Limits stay root's; so does the parent.
		if ctrl == "memory" {
			if got := owner(t, filepath.Join(dir, "memory.limit_in_bytes")); got != 0 {
				t.Errorf("limit file given away (owner %d)", got)
			}
		}
		if got := owner(t, filepath.Dir(dir)); got != 0 {
			t.Errorf("parent given away (owner %d)", got)
		}
	}
	// A hierarchy's root, or a path outside it, is never handed out.
	for _, bad := range []string{mounts["memory"], filepath.Join(root, "elsewhere"), mounts["memory"] + "/../x"} {
		if err := Delegate(Paths{"memory": bad}, mounts, 200000, 200000); err == nil {
			t.Errorf("%s delegated", bad)
		}
	}
	if err := Delegate(Paths{"cpu": filepath.Join(root, "cpu", "x")}, mounts, 1, 1); err == nil {
		t.Error("controller without a mount delegated")
	}
}

// TestDelegateV2 checks delegation on the kernel's cgroup2 (the unified
// hierarchy: the only v2 this hybrid host has, so no controllers move, but
// the delegation rules are v2's): the delegate creates a child, moves
// itself into it and enables what it may there, and cannot climb out of its
// subtree or touch the delegated directory's own settings.
func TestDelegateV2(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	mounts, err := HostMounts()
	if err != nil {
		t.Fatal(err)
	}
	v2, ok := mounts[""]
	if !ok {
		t.Skip("no cgroup2 mounted")
	}
	parent := filepath.Join(v2, fmt.Sprintf("sysvisor-delegate-test-%d", os.Getpid()))
	dir := filepath.Join(parent, "c1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(filepath.Join(dir, "child"))
		os.Remove(dir)
		os.Remove(parent)
	})
	const uid = 300000
	if err := Delegate(Paths{"": dir}, mounts, uid, uid); err != nil {
		t.Fatal(err)
	}
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	// Born in the delegated cgroup as the delegate, as a container's init is.
	script := fmt.Sprintf(`
		mkdir %[1]s/child && echo $$ >%[1]s/child/cgroup.procs && echo "moved $(cat /proc/self/cgroup | grep '^0::')"
		echo $$ >%[2]s/cgroup.procs 2>/dev/null && echo "escaped up" || echo "up refused"
		echo 1 >%[1]s/cgroup.max.descendants 2>/dev/null && echo "own limit written" || echo "own limit refused"
		echo 1 >%[1]s/child/cgroup.max.descendants && echo "child limit written"
	`, dir, parent)
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: uid, Gid: uid},
		UseCgroupFD: true, CgroupFD: int(cg.Fd()),
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	rel := strings.TrimPrefix(dir, v2)
	for _, want := range []string{"moved 0::" + rel + "/child", "up refused", "own limit refused", "child limit written"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
}
