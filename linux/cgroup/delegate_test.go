package cgroup

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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

// v2Parent makes a cgroup of the test's own in the host's cgroup2 (the
// unified hierarchy of a hybrid host, or a v2 host's only one) and removes
// it, deepest first, when the test ends. It skips without root or cgroup2.
func v2Parent(t *testing.T) (mnt, parent string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	mounts, err := HostMounts()
	if err != nil {
		t.Fatal(err)
	}
	mnt, ok := mounts[""]
	if !ok {
		t.Skip("no cgroup2 mounted")
	}
	parent = filepath.Join(mnt, fmt.Sprintf("sysvisor-%s-%d", strings.ToLower(t.Name()), os.Getpid()))
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(t, parent) })
	return mnt, parent
}

// removeTree removes a cgroup and its children, deepest first, retrying
// while killed processes are still leaving.
func removeTree(t *testing.T, dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		var err error
		for range 50 {
			if err = os.Remove(dirs[i]); err == nil || os.IsNotExist(err) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil && !os.IsNotExist(err) {
			t.Errorf("cgroup left behind: %v", err)
		}
	}
}

// startIn starts a process born in cgroup dir (CLONE_INTO_CGROUP) as uid,
// as runc starts a container's init in its cgroup; it is killed at cleanup.
func startIn(t *testing.T, dir string, uid uint32, args ...string) *exec.Cmd {
	t.Helper()
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: uid, Gid: uid},
		UseCgroupFD: true, CgroupFD: int(cg.Fd()),
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// runIn runs a shell script born in cgroup dir as uid and returns its
// output.
func runIn(t *testing.T, dir string, uid uint32, script string) string {
	t.Helper()
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: uid, Gid: uid},
		UseCgroupFD: true, CgroupFD: int(cg.Fd()),
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return string(out)
}

func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "0::"); ok {
			return v
		}
	}
	t.Fatalf("pid %d has no cgroup2 line: %s", pid, b)
	return ""
}

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestDelegateUnified checks the v2-only host's delegation on the kernel's
// cgroup2: the container's init, started in its cgroup, is moved to the
// leaf; the cgroup and its delegation files become the container's, its
// limit files stay root's, the leaf is wholly the container's; the
// container can then make cgroups beside the leaf, move itself between
// them and set their limits, but not leave its subtree or set its own
// cgroup's limits. A second run (a hook repeated) changes nothing.
func TestDelegateUnified(t *testing.T) {
	mnt, parent := v2Parent(t)
	const uid = 300000
	dir := filepath.Join(parent, "c1")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	init := startIn(t, dir, 0, "sleep", "600")
	if err := DelegateUnified(dir, mnt, uid, uid); err != nil {
		t.Fatal(err)
	}
	rel := strings.TrimPrefix(dir, mnt)
	if got := cgroupOf(t, init.Process.Pid); got != rel+"/"+Leaf {
		t.Errorf("init in %s, want %s/%s", got, rel, Leaf)
	}
	if got := readTrim(t, filepath.Join(dir, "cgroup.procs")); got != "" {
		t.Errorf("container cgroup still holds %q", got)
	}
	if got, want := readTrim(t, filepath.Join(dir, "cgroup.subtree_control")), readTrim(t, filepath.Join(dir, "cgroup.controllers")); got != want {
		t.Errorf("subtree_control %q, want the cgroup's controllers %q", got, want)
	}
	leaf := filepath.Join(dir, Leaf)
	for p, want := range map[string]int{
		dir: uid, dir + "/cgroup.procs": uid, dir + "/cgroup.threads": uid, dir + "/cgroup.subtree_control": uid,
		dir + "/cgroup.max.descendants": 0, dir + "/cgroup.max.depth": 0, dir + "/cgroup.type": 0, parent: 0,
		leaf: uid, leaf + "/cgroup.procs": uid, leaf + "/cgroup.max.descendants": uid, leaf + "/cgroup.type": uid,
	} {
		if got := owner(t, p); got != want {
			t.Errorf("%s owned by %d, want %d", strings.TrimPrefix(p, parent+"/"), got, want)
		}
	}
	if err := DelegateUnified(dir, mnt, uid, uid); err != nil {
		t.Errorf("second run: %v", err)
	}

	// The container's root, from its init's cgroup.
	out := runIn(t, leaf, uid, fmt.Sprintf(`
		mkdir %[1]s/x && echo $$ >%[1]s/x/cgroup.procs && echo "moved $(grep '^0::' /proc/self/cgroup)"
		echo 1 >%[1]s/x/cgroup.max.descendants && echo "child limit written"
		echo $$ >%[1]s/%[3]s/cgroup.procs && echo "back in the leaf"
		echo $$ >%[2]s/cgroup.procs 2>/dev/null && echo "escaped up" || echo "up refused"
		echo 1 >%[1]s/cgroup.max.descendants 2>/dev/null && echo "own limit written" || echo "own limit refused"
		rmdir %[1]s/x && echo "child removed"
	`, dir, parent, Leaf))
	for _, want := range []string{"moved 0::" + rel + "/x", "child limit written", "back in the leaf", "up refused", "own limit refused", "child removed"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}

	// Never the hierarchy's root or a path outside it.
	for _, bad := range []string{mnt, filepath.Dir(mnt), mnt + "/../x"} {
		if err := DelegateUnified(bad, mnt, uid, uid); err == nil {
			t.Errorf("%s delegated", bad)
		}
	}
}

// TestDelegateUnifiedController repeats the delegation with a domain
// controller, which is where cgroup v2's rule bites: hugetlb, the one
// controller a hybrid host's unified hierarchy has (a v2 host has them
// all). The test enables it for its own cgroups, from the hierarchy's root
// down, and disables it at the root again if it enabled it there.
//   - With init in the container's cgroup, the container's cgroup cannot
//     hand the controller down (EBUSY): what inner engines met.
//   - After DelegateUnified it can; the leaf has the controller's files,
//     the container's; a process written into the container's cgroup is
//     refused (runc exec's first try, which then falls back to init's
//     cgroup, the leaf); and the container's root sets a hugetlb limit in
//     a cgroup of its own.
func TestDelegateUnifiedController(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	mounts, err := HostMounts()
	if err != nil {
		t.Fatal(err)
	}
	mnt, ok := mounts[""]
	if !ok {
		t.Skip("no cgroup2 mounted")
	}
	if !strings.Contains(" "+readTrim(t, filepath.Join(mnt, "cgroup.controllers"))+" ", " hugetlb ") {
		t.Skip("hugetlb is not on cgroup2 here")
	}
	rootSC := filepath.Join(mnt, "cgroup.subtree_control")
	if !strings.Contains(" "+readTrim(t, rootSC)+" ", " hugetlb ") {
		if err := writeCgroupFile(rootSC, "+hugetlb"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := writeCgroupFile(rootSC, "-hugetlb"); err != nil {
				t.Errorf("restore %s: %v", rootSC, err)
			}
		})
	}
	_, parent := v2Parent(t) // removed before the root's controller is disabled
	if err := writeCgroupFile(filepath.Join(parent, "cgroup.subtree_control"), "+hugetlb"); err != nil {
		t.Fatal(err)
	}
	const uid = 300000
	dir := filepath.Join(parent, "c1")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	startIn(t, dir, 0, "sleep", "600")
	if err := writeCgroupFile(filepath.Join(dir, "cgroup.subtree_control"), "+hugetlb"); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("enabling a controller in a cgroup with a process: %v, want EBUSY", err)
	}
	if err := DelegateUnified(dir, mnt, uid, uid); err != nil {
		t.Fatal(err)
	}
	if got := readTrim(t, filepath.Join(dir, "cgroup.subtree_control")); got != "hugetlb" {
		t.Errorf("subtree_control %q, want hugetlb", got)
	}
	leaf := filepath.Join(dir, Leaf)
	limits, _ := filepath.Glob(filepath.Join(leaf, "hugetlb.*.max"))
	if len(limits) == 0 {
		t.Fatalf("no hugetlb limit files in the leaf")
	}
	for _, f := range limits {
		if got := owner(t, f); got != uid {
			t.Errorf("%s owned by %d", f, got)
		}
	}
	// What runc exec does with a new process: the container's cgroup
	// refuses it, init's takes it.
	exec1 := exec.Command("sleep", "600")
	if err := exec1.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec1.Process.Kill(); exec1.Wait() })
	pid := fmt.Sprint(exec1.Process.Pid)
	if err := writeCgroupFile(filepath.Join(dir, "cgroup.procs"), pid); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("process into the container's cgroup: %v, want EBUSY", err)
	}
	if err := writeCgroupFile(filepath.Join(leaf, "cgroup.procs"), pid); err != nil {
		t.Errorf("process into the leaf: %v", err)
	}
	if _, err := os.Stat(filepath.Join(leaf, "hugetlb.2MB.max")); err != nil {
		t.Skip("no 2 MB huge pages here")
	}
	out := runIn(t, leaf, uid, fmt.Sprintf(`
		mkdir %[1]s/x && echo 4194304 >%[1]s/x/hugetlb.2MB.max && echo "limit $(cat %[1]s/x/hugetlb.2MB.max)"
		echo 4194304 >%[1]s/hugetlb.2MB.max 2>/dev/null && echo "own limit written" || echo "own limit refused"
		rmdir %[1]s/x
	`, dir))
	for _, want := range []string{"limit 4194304", "own limit refused"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}
}
