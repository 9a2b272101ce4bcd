package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// delegateFiles are the files of a cgroup directory that move with it when
// it is delegated, as systemd's Delegate= does: enough to create children,
// move processes between them and enable controllers for them. The
// directory's own limit files (memory.limit_in_bytes, pids.max, cpu.max...)
// stay root's, so the delegate cannot raise the limits it lives under.
var delegateFiles = []string{"cgroup.procs", "tasks", "cgroup.clone_children", "notify_on_release",
	"cgroup.subtree_control", "cgroup.threads"}

// Delegate gives uid:gid the cgroup directories in paths (one per
// hierarchy) and their delegation files. Paths come from the kernel
// (/proc/<pid>/cgroup joined to the host's mount points); a path that leaves
// its hierarchy is refused rather than chowned. Files a hierarchy does not
// have are skipped.
func Delegate(paths Paths, mounts Mounts, uid, gid int) error {
	done := map[string]bool{}
	keys := make([]string, 0, len(paths))
	for k := range paths {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, ctrl := range keys {
		dir := filepath.Clean(paths[ctrl])
		if done[dir] {
			continue
		}
		done[dir] = true
		mnt := filepath.Clean(mounts[ctrl])
		if mnt == "." || dir == mnt || !strings.HasPrefix(dir, mnt+"/") {
			// The hierarchy's root is the host's: never hand it out.
			return fmt.Errorf("cgroup %s: %s is not below the hierarchy at %s", ctrl, dir, mnt)
		}
		if err := os.Lchown(dir, uid, gid); err != nil {
			return fmt.Errorf("cgroup %s: %w", ctrl, err)
		}
		for _, f := range delegateFiles {
			if err := os.Lchown(filepath.Join(dir, f), uid, gid); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("cgroup %s: %w", ctrl, err)
			}
		}
	}
	return nil
}
