package cgroup

import (
	"os"
	"path/filepath"
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
