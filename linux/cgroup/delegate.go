package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
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
		if err := below(ctrl, dir, mounts[ctrl]); err != nil {
			return err
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

// below refuses a directory that is not strictly below its hierarchy's
// mount point: the hierarchy's root is the host's, never handed out.
func below(ctrl, dir, mnt string) error {
	mnt = filepath.Clean(mnt)
	if mnt == "." || dir == mnt || !strings.HasPrefix(dir, mnt+"/") {
		return fmt.Errorf("cgroup %s: %s is not below the hierarchy at %s", ctrl, dir, mnt)
	}
	return nil
}

// DelegateUnified delegates a container's cgroup2 directory dir (below the
// hierarchy mounted at mnt) on a v2-only host. The createRuntime hook runs
// it after runc has put the container's init in dir, unshared the cgroup
// namespace (rooted at dir) and written the limits, and before the
// container's own code runs:
//
//  1. the processes in dir (init, still running runc's code) move into
//     dir/Leaf; the cgroup namespace stays rooted at dir, so the container
//     sees its init in /init.scope and dir as its /sys/fs/cgroup;
//  2. every controller dir has (those the outer engine enabled for it) is
//     enabled in dir's cgroup.subtree_control, for the leaf and for the
//     cgroups an inner engine or systemd creates. This also keeps dir
//     empty: runc puts a `docker exec` process in the container's cgroup
//     and, when the kernel refuses it there (EBUSY: a cgroup that hands
//     domain controllers down takes no processes), in init's;
//  3. uid:gid get dir and its delegation files (Delegate), so the container
//     can create cgroups, move its processes between them and enable
//     controllers for them, but not change dir's own limits; and the leaf
//     with all its files, a cgroup below dir's limits as if the container
//     had made it.
func DelegateUnified(dir, mnt string, uid, gid int) error {
	dir = filepath.Clean(dir)
	if err := below("v2", dir, mnt); err != nil {
		return err
	}
	leaf := filepath.Join(dir, Leaf)
	if err := os.Mkdir(leaf, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cgroup v2: create the leaf: %w", err)
	}
	if err := moveAll(dir, leaf); err != nil {
		return err
	}
	if err := enableAll(dir); err != nil {
		return err
	}
	if err := Delegate(Paths{"": dir}, Mounts{"": mnt}, uid, gid); err != nil {
		return err
	}
	// After enableAll: the controller files it made appear in the leaf are
	// owned by whoever enabled them, here host root.
	if err := os.Lchown(leaf, uid, gid); err != nil {
		return fmt.Errorf("cgroup v2: %w", err)
	}
	ents, err := os.ReadDir(leaf)
	if err != nil {
		return fmt.Errorf("cgroup v2: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		if err := os.Lchown(filepath.Join(leaf, e.Name()), uid, gid); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cgroup v2: %w", err)
		}
	}
	return nil
}

// moveAll moves every process of cgroup dir into cgroup to. Writing a pid
// to cgroup.procs moves its whole thread group.
func moveAll(dir, to string) error {
	// The only process is init, which does not fork while runc waits for
	// the hook; a few rounds cover a process that appears meanwhile.
	for range 5 {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			return fmt.Errorf("cgroup v2: %w", err)
		}
		pids := strings.Fields(string(b))
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			if err := writeCgroupFile(filepath.Join(to, "cgroup.procs"), pid); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("cgroup v2: move pid %s into %s: %w", pid, to, err)
			}
		}
	}
	return fmt.Errorf("cgroup v2: %s: processes keep appearing", dir)
}

// enableAll enables in dir's cgroup.subtree_control every controller listed
// in its cgroup.controllers.
func enableAll(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("cgroup v2: %w", err)
	}
	ctrls := strings.Fields(string(b))
	if len(ctrls) == 0 {
		return nil
	}
	file := filepath.Join(dir, "cgroup.subtree_control")
	if writeCgroupFile(file, "+"+strings.Join(ctrls, " +")) == nil {
		return nil
	}
	// One at a time, to name the one the kernel refuses.
	var errs []error
	for _, c := range ctrls {
		if err := writeCgroupFile(file, "+"+c); err != nil {
			errs = append(errs, fmt.Errorf("cgroup v2: enable %s in %s: %w", c, file, err))
		}
	}
	return errors.Join(errs...)
}

// writeCgroupFile writes one value to a cgroup interface file in a single
// write, as the kernel parses it.
func writeCgroupFile(path, v string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(v)); err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}
