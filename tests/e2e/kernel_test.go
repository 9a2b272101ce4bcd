package e2e

// The kernel floor and the fallbacks, seen from docker: a refused create
// reaches `docker run` as one line and touches nothing of the engine's, and
// the container's overlay is made the way the kernel switch says.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// addRuntime registers name in the private dockerd as a wrapper that runs
// sysvisor-runc with env set and args added to sysvisor-runc's
// runtimeArgs, and removes it at cleanup. dockerd re-reads its runtimes on
// SIGHUP.
func addRuntime(t *testing.T, name string, env, args []string) {
	t.Helper()
	wrapper := filepath.Join(svDir, name+".sh")
	script := "#!/bin/sh\nexec env " + strings.Join(env, " ") + " " + filepath.Join(repo, "bin", "sysvisor-runc") + ` "$@"` + "\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(svDir, "daemon.json")
	orig, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(orig, &cfg); err != nil {
		t.Fatal(err)
	}
	rts := cfg["runtimes"].(map[string]any)
	sv := rts["sysvisor-runc"].(map[string]any)
	rtArgs := append(sv["runtimeArgs"].([]any), func() (out []any) {
		for _, a := range args {
			out = append(out, a)
		}
		return out
	}()...)
	rts[name] = map[string]any{"path": wrapper, "runtimeArgs": rtArgs}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	reload := func(b []byte, want bool) {
		if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
		pb, err := os.ReadFile(filepath.Join(svDir, "docker.pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(pb)))
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			out, _ := docker(t, "info", "--format", "{{json .Runtimes}}")
			if strings.Contains(out, `"`+name+`"`) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("dockerd did not reload its runtimes (%s registered: %v): %s", name, !want, out)
			}
		}
	}
	reload(b, true)
	t.Cleanup(func() { reload(orig, false) })
}

// hostMountOf returns the mountinfo line of the mount at path, or "".
func hostMountOf(path string) string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	line := ""
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == path {
			line = l
		}
	}
	return line
}

func TestRefusedBelowFloor(t *testing.T) {
	addRuntime(t, "sysvisor-floor", []string{"SYSVISOR_KERNEL_RELEASE=5.15.0-91-generic"}, nil)
	// A container of the engine's own, started before.
	ref := startDetached(t, "runc")
	refRoot := mustDocker(t, "inspect", "-f", "{{.GraphDriver.Data.MergedDir}}", ref)
	refMount := hostMountOf(refRoot)
	if refMount == "" {
		t.Fatalf("runc container's rootfs %s is not mounted", refRoot)
	}
	beforeLeases := leases(t)
	beforeDirs, _ := os.ReadDir(filepath.Join(svDir, "run", "containers"))

	name := fmt.Sprintf("floor-%d", os.Getpid())
	start := time.Now()
	_, err := docker(t, "run", "--name", name, "--runtime=sysvisor-floor", image, "true")
	took := time.Since(start)
	t.Cleanup(func() { docker(t, "rm", "-f", name) })
	const want = "kernel 5.15.0-91-generic is older than sysvisor's floor 6.1: it lacks overlayfs on idmapped layers (Linux 5.19)"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("docker run below the floor: %v\nwant the refusal %q", err, want)
	}
	t.Logf("docker run refused in %v: %v", took.Round(time.Millisecond), err)
	// One line: nothing after the refusal was tried.
	for _, later := range []string{"sysvisord", "overlay", "lease", "mount"} {
		if strings.Contains(strings.ReplaceAll(err.Error(), want, ""), later) {
			t.Errorf("the error mentions %q beyond the refusal: %v", later, err)
		}
	}
	if l := leases(t); len(l) != len(beforeLeases) {
		t.Errorf("leases before %v, after the refusal %v", beforeLeases, l)
	}
	if after, _ := os.ReadDir(filepath.Join(svDir, "run", "containers")); len(after) != len(beforeDirs) {
		t.Errorf("container directories before %v, after %v", beforeDirs, after)
	}
	mustDocker(t, "rm", name)
	if out, err := docker(t, "inspect", name); err == nil {
		t.Errorf("container still there after docker rm: %s", out)
	}
	// The engine's container is untouched: same rootfs mount, still runs.
	if got := hostMountOf(refRoot); got != refMount {
		t.Errorf("runc container's rootfs mount changed:\n%s\nwas\n%s", got, refMount)
	}
	if out := mustDocker(t, "exec", ref, "sh", "-c", "echo alive > /tmp/x && cat /tmp/x"); out != "alive" {
		t.Errorf("runc container after the refusal: %q", out)
	}
	// And the same runtime above the floor still creates (the wrapper
	// names an older kernel only).
	addRuntime(t, "sysvisor-newer", []string{"SYSVISOR_KERNEL_RELEASE=99.0.0"}, nil)
	if out := mustDocker(t, "run", "--rm", "--runtime=sysvisor-newer", image, "echo", "ok"); out != "ok" {
		t.Errorf("an override newer than the kernel: %q", out)
	}
}

// The container's overlay is made with lowerdir+ where the kernel has it,
// and as one lowerdir otherwise or when the fallback is forced (run the
// suite with SYSVISOR_KERNEL_FALLBACKS=overlay-lowerdir-append to force it
// for every container).
func TestOverlayKind(t *testing.T) {
	forced := false
	for _, f := range strings.Split(os.Getenv("SYSVISOR_KERNEL_FALLBACKS"), ",") {
		forced = forced || slices.Contains([]string{"all", "overlay-lowerdir-append"}, strings.TrimSpace(f))
	}
	var rel syscall.Utsname
	syscall.Uname(&rel)
	checkOverlayKind(t, "sysvisor-runc", !forced && kernelAtLeast(rel, 6, 8))
	// The switch as a runtime argument in daemon.json.
	addRuntime(t, "sysvisor-fallback", nil, []string{"--kernel-fallbacks", "overlay-lowerdir-append"})
	checkOverlayKind(t, "sysvisor-fallback", false)
}

func checkOverlayKind(t *testing.T, runtime string, appendKernel bool) {
	t.Helper()
	id := startDetached(t, runtime)
	ours := hostMountOf(filepath.Join(svDir, "run", "containers", id, "rootfs"))
	if ours == "" {
		t.Fatal("no overlay at the container's rootfs")
	}
	if strings.Contains(ours, "lowerdir+=") != appendKernel {
		t.Errorf("%s: container's overlay (lowerdir+ expected: %v):\n%s", runtime, appendKernel, ours)
	}
	t.Logf("%s: lowerdir+ %v: %.200s", runtime, appendKernel, ours)
	root := mustDocker(t, "inspect", "-f", "{{.GraphDriver.Data.MergedDir}}", id)
	// sysvisord's engine view replaced the runtime's read-only view.
	if view := hostMountOf(root); !strings.Contains(view, " fuse.sysvisor-engine ") {
		t.Errorf("engine's path holds %q, want the engine view", view)
	}
	// Writes go through the overlay (copy-up with the mounter's
	// credentials).
	if out := mustDocker(t, "exec", id, "sh", "-c", "echo x >> /etc/passwd && tail -1 /etc/passwd && touch /new && stat -c %u /new"); out != "x\n0" {
		t.Errorf("writes in the container: %q", out)
	}
}

func kernelAtLeast(u syscall.Utsname, major, minor int) bool {
	var b strings.Builder
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	var ma, mi int
	fmt.Sscanf(b.String(), "%d.%d", &ma, &mi)
	return ma > major || ma == major && mi >= minor
}
