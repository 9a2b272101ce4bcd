package runtime

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sysvisor/sysvisor/linux/cgroup"
)

// envTestHook makes the test binary act as the delegation hook, with the
// v2-only path forced: runc runs it as a createRuntime hook in
// TestDelegateHookWithRunc.
const envTestHook = "SYSVISOR_TEST_HOOK"

func TestMain(m *testing.M) {
	if os.Getenv(envTestHook) == "unified" {
		if err := delegateHook(os.Args[2:], os.Stdin, true); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func cannotRun(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("SYSVISOR_E2E") == "required" {
		t.Fatalf("required but cannot run: "+format, args...)
	}
	t.Skipf(format, args...)
}

// TestDelegateHookWithRunc runs the delegation under the real runc, with
// the v2-only path forced onto this host's cgroup2 (on a hybrid host runc
// puts the container in the unified hierarchy too), and looks from inside
// the container, for `run` (the hook moves init into the leaf) and for
// `create` then `start` (the move waits for start, so that what reads
// init's cgroup after create, as containerd's shim does, finds the
// container's cgroup). It checks the order the hook relies on: when runc
// runs createRuntime hooks, init has unshared its cgroup namespace already,
// so the namespace stays rooted at the container's cgroup (the container
// sees itself in /init.scope, not in /); and that the container's root can
// make cgroups beside the leaf and move into them but not write its own
// cgroup's limits. runc's delete removes the leaf with the container's
// cgroup.
func TestDelegateHookWithRunc(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	if os.Geteuid() != 0 {
		cannotRun(t, "needs root")
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		cannotRun(t, "no runc")
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		cannotRun(t, "no busybox")
	}
	mounts, err := cgroup.HostMounts()
	if err != nil {
		t.Fatal(err)
	}
	mnt, ok := mounts[""]
	if !ok {
		cannotRun(t, "no cgroup2 mounted")
	}
	for _, mode := range []string{"run", "create"} {
		t.Run(mode, func(t *testing.T) { hookWithRunc(t, runc, busybox, mounts, mnt, mode) })
	}
}

func hookWithRunc(t *testing.T, runc, busybox string, mounts cgroup.Mounts, mnt, mode string) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const base, size = 2900000000, 65536
	dir := t.TempDir()
	// The container's root (an unmapped ID on the host) must reach the rootfs.
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "cg2", "tmp", "out"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(rootfs, "out"), 0o777)
	b, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "cat", "grep", "stat", "mkdir", "rmdir", "echo"} {
		os.Symlink("busybox", filepath.Join(rootfs, "bin", a))
	}

	parent := fmt.Sprintf("sysvisor-hooktest-%s-%d", mode, os.Getpid())
	id := parent
	state := filepath.Join(dir, "state")
	t.Cleanup(func() {
		exec.Command(runc, "--root", state, "delete", "-f", id).Run()
		for _, m := range mounts {
			os.Remove(filepath.Join(m, parent))
		}
	})
	script := `{
		echo "cgroup $(grep '^0::' /proc/self/cgroup)"
		echo owners $(stat -c %u /cg2 /cg2/cgroup.procs /cg2/cgroup.subtree_control /cg2/init.scope /cg2/init.scope/cgroup.procs /cg2/cgroup.max.descendants)
		mkdir /cg2/x && echo $$ >/cg2/x/cgroup.procs && echo "moved $(grep '^0::' /proc/self/cgroup)"
		echo $$ >/cg2/init.scope/cgroup.procs && rmdir /cg2/x && echo "back"
		echo 1 >/cg2/cgroup.max.descendants 2>/dev/null && echo "own limit written" || echo "own limit refused"
	} >/out/log 2>&1; echo done >/out/done`
	hookArgs := []string{"sysvisor-runc", "hook", hookDelegate}
	if mode == "run" {
		hookArgs = append(hookArgs, hookLeaf)
	}
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SYS_ADMIN"}
	spec := specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: []string{"/bin/sh", "-c", script}, Cwd: "/", Env: []string{"PATH=/bin"},
			Capabilities: &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
		},
		Root:     &specs.Root{Path: rootfs},
		Hostname: "hooktest",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
			{Destination: "/cg2", Type: "cgroup2", Source: "cgroup2", Options: []string{"nosuid", "nodev", "noexec"}},
		},
		Hooks: &specs.Hooks{CreateRuntime: []specs.Hook{{
			Path: self, Args: hookArgs, Env: []string{envTestHook + "=unified"},
		}}},
		Annotations: map[string]string{AnnotationIDBase: strconv.Itoa(base)},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.MountNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.NetworkNamespace},
				{Type: specs.UserNamespace}, {Type: specs.CgroupNamespace}},
			UIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: base, Size: size}},
			GIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: base, Size: size}},
			CgroupsPath: "/" + parent + "/c1",
		},
	}
	js, err := json.Marshal(&spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), js, 0o644); err != nil {
		t.Fatal(err)
	}
	runcDo := func(args ...string) {
		t.Helper()
		// Output to a file: after create the container's init keeps
		// runc's stdio open, so a pipe would never end.
		f, err := os.CreateTemp(dir, "runc-out")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd := exec.Command(runc, append([]string{"--root", state}, args...)...)
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Run(); err != nil {
			out, _ := os.ReadFile(f.Name())
			t.Fatalf("runc %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	cdir := filepath.Join(mnt, parent, "c1")
	start := time.Now()
	if mode == "run" {
		runcDo("run", "--bundle", dir, id)
	} else {
		runcDo("create", "--bundle", dir, id)
		// Between create and start, init is in the container's cgroup,
		// which the hook gave the container's root.
		b, err := os.ReadFile(filepath.Join(state, id, "state.json"))
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Pid int `json:"init_process_pid"`
		}
		json.Unmarshal(b, &st)
		if got := cgroupLine(t, st.Pid); got != strings.TrimPrefix(cdir, mnt) {
			t.Errorf("after create init is in %s, want the container's cgroup %s", got, strings.TrimPrefix(cdir, mnt))
		}
		if fi, err := os.Stat(cdir); err != nil || fi.Sys().(*syscall.Stat_t).Uid != base {
			t.Errorf("container cgroup not delegated after create: %v", err)
		}
		if err := leafOnStart(state, id, true); err != nil {
			t.Fatal(err)
		}
		if got := cgroupLine(t, st.Pid); got != strings.TrimPrefix(cdir, mnt)+"/"+cgroup.Leaf {
			t.Errorf("after leafOnStart init is in %s", got)
		}
		if err := leafOnStart(state, id, true); err != nil {
			t.Errorf("leafOnStart again: %v", err)
		}
		runcDo("start", id)
	}
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(filepath.Join(rootfs, "out", "done")); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	ob, _ := os.ReadFile(filepath.Join(rootfs, "out", "log"))
	out := string(ob)
	t.Logf("%s took %s:\n%s", mode, time.Since(start).Round(time.Millisecond), out)
	for _, want := range []string{
		"cgroup 0::/" + cgroup.Leaf, // the namespace's root is the container's cgroup, init is in the leaf
		"owners 0 0 0 0 0 65534",    // the container's cgroup, its delegation files and the leaf are root's inside; its limits are not
		"moved 0::/x", "back", "own limit refused",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %q in the container's output", want)
		}
	}
	if mode == "create" {
		for i := 0; i < 100; i++ {
			if o, _ := exec.Command(runc, "--root", state, "state", id).Output(); strings.Contains(string(o), `"stopped"`) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		runcDo("delete", id)
	}
	if _, err := os.Stat(cdir); !os.IsNotExist(err) {
		t.Errorf("runc left the container's cgroup (or its leaf) behind: %v", err)
	}
}

func cgroupLine(t *testing.T, pid int) string {
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
	return ""
}
