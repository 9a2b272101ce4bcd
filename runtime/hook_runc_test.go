package runtime

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sysvisor/sysvisor/supervisor/cgroup"
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

// TestDelegateHookWithRunc runs the delegation hook under the real runc,
// with the v2-only path forced onto this host's cgroup2 (on a hybrid host
// runc puts the container in the unified hierarchy too), and looks from
// inside the container. It checks the order the hook relies on: when runc
// runs createRuntime hooks, init has unshared its cgroup namespace already,
// so moving init into the leaf leaves the namespace rooted at the
// container's cgroup (the container sees itself in /init.scope, not in /),
// and the container's root can make cgroups beside the leaf and move into
// them but not write its own cgroup's limits. runc's delete removes the
// leaf with the container's cgroup.
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
	for _, d := range []string{"bin", "proc", "dev", "cg2", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
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

	parent := fmt.Sprintf("sysvisor-hooktest-%d", os.Getpid())
	id := parent
	t.Cleanup(func() {
		exec.Command(runc, "--root", filepath.Join(dir, "state"), "delete", "-f", id).Run()
		for _, m := range mounts {
			os.Remove(filepath.Join(m, parent))
		}
	})
	script := `
		echo "cgroup $(grep '^0::' /proc/self/cgroup)"
		echo owners $(stat -c %u /cg2 /cg2/cgroup.procs /cg2/cgroup.subtree_control /cg2/init.scope /cg2/init.scope/cgroup.procs /cg2/cgroup.max.descendants)
		mkdir /cg2/x && echo $$ >/cg2/x/cgroup.procs && echo "moved $(grep '^0::' /proc/self/cgroup)"
		echo $$ >/cg2/init.scope/cgroup.procs && rmdir /cg2/x && echo "back"
		echo 1 >/cg2/cgroup.max.descendants 2>/dev/null && echo "own limit written" || echo "own limit refused"
	`
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
			Path: self, Args: []string{"sysvisor-runc", "hook", hookDelegate}, Env: []string{envTestHook + "=unified"},
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
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(runc, "--root", filepath.Join(dir, "state"), "run", "--bundle", dir, id)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("runc run: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	t.Logf("runc run took %s:\n%s", time.Since(start).Round(time.Millisecond), stdout.String())
	out := stdout.String()
	for _, want := range []string{
		"cgroup 0::/" + cgroup.Leaf, // the namespace's root is the container's cgroup, init is in the leaf
		"owners 0 0 0 0 0 65534",    // the container's cgroup, its delegation files and the leaf are root's inside; its limits are not
		"moved 0::/x", "back", "own limit refused",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("want %q in the container's output", want)
		}
	}
	if _, err := os.Stat(filepath.Join(mnt, parent, "c1")); !os.IsNotExist(err) {
		t.Errorf("runc left the container's cgroup (or its leaf) behind: %v", err)
	}
}
