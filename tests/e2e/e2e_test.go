// Package e2e drives a real, private dockerd (and its containerd) with
// sysvisor-runc registered, checking what a user sees from outside.
//
// The environment comes from tests/env.sh: its own data root, exec root,
// socket, pidfile and subuid/subgid copies, all under one directory that is
// removed afterwards. The tests need root, dockerd, runc and a built bin/;
// without them they skip, unless SYSVISOR_E2E=required (CI) turns the skip
// into a failure.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const image = "sysvisor-test/busybox"

var (
	repo  string // repository root
	svDir string // the private environment
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	wd, _ := os.Getwd()
	repo = filepath.Clean(filepath.Join(wd, "..", ".."))
	if reason := unavailable(); reason != "" {
		if os.Getenv("SYSVISOR_E2E") == "required" {
			fmt.Fprintf(os.Stderr, "e2e: required but cannot run: %s\n", reason)
			return 1
		}
		fmt.Fprintf(os.Stderr, "e2e: skipped: %s\n", reason)
		return 0
	}
	svDir = fmt.Sprintf("/tmp/sysvisor-e2e-%d", os.Getpid())
	// The engines the tests start (the private dockerd, inner ones) must
	// leave the host's knobs as they were: dockerd sets ip_forward unless
	// told not to.
	before := readHostSysctls()
	defer func() {
		if after := readHostSysctls(); after != before {
			fmt.Fprintf(os.Stderr, "e2e: host sysctls changed:\n%s\nwere:\n%s\n", after, before)
			code = 1
		}
	}()
	// Every sysvisord this suite starts (tests/env.sh up, here and after
	// the tests' restarts) runs a gops agent on loopback: TestScale200
	// counts its goroutines and asks it for GCs through it.
	os.Setenv("SV_SYSVISORD_ARGS", suiteSysvisordArgs(""))
	if out, err := envsh("up"); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: tests/env.sh up: %v\n%s", err, out)
		envsh("down")
		return 1
	}
	code = m.Run()
	if out, err := envsh("down"); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: tests/env.sh down: %v\n%s", err, out)
		code = 1
	}
	if leftovers := mountsUnder(svDir); len(leftovers) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: mounts left behind: %v\n", leftovers)
		code = 1
	}
	return code
}

// suiteSysvisordArgs is SV_SYSVISORD_ARGS for tests/env.sh: the flags
// given to the suite (SV_SYSVISORD_ARGS in its environment, as first
// seen), --gops, then extra.
func suiteSysvisordArgs(extra string) string {
	args := strings.Fields(userSysvisordArgs + " " + extra)
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--gops") }) {
		args = append([]string{"--gops"}, args...)
	}
	return strings.Join(args, " ")
}

var userSysvisordArgs = os.Getenv("SV_SYSVISORD_ARGS")

// readHostSysctls renders the host knobs the tests must not change.
func readHostSysctls() string {
	var b strings.Builder
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "kernel/panic",
		"kernel/core_pattern", "net/bridge/bridge-nf-call-iptables", "fs/file-max", "vm/overcommit_memory",
		"kernel/shmmax", "kernel/pid_max", "fs/mqueue/msg_max"} {
		v, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s=%s\n", k, strings.TrimSpace(string(v)))
	}
	return b.String()
}

func unavailable() string {
	for _, a := range os.Args {
		if a == "-test.short=true" {
			return "-short"
		}
	}
	if os.Geteuid() != 0 {
		return "not root"
	}
	for _, p := range []string{"dockerd", "runc", "containerd", "ctr", "gcc"} {
		if _, err := exec.LookPath(p); err != nil {
			return p + " not installed (make deps)"
		}
	}
	if _, err := os.Stat("/usr/bin/docker"); err != nil {
		return "Debian's docker client not installed (make deps)"
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		return "busybox-static not installed (make deps)"
	}
	for _, b := range []string{"sysvisor-runc", "sysvisord", "sysvisorctl", "sysvisor-holder"} {
		if _, err := os.Stat(filepath.Join(repo, "bin", b)); err != nil {
			return "bin/" + b + " missing (make build)"
		}
	}
	return ""
}

func envsh(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(repo, "tests", "env.sh"), args...)
	cmd.Env = append(os.Environ(), "SV_DIR="+svDir, "SV_LOG_LEVEL=debug")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// docker runs the Debian docker client against the private engine.
func docker(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("/usr/bin/docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+svDir+"/docker.sock")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func mustDocker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := docker(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func sv(args ...string) []string {
	return append([]string{"run", "--rm", "--runtime=sysvisor-runc", image}, args...)
}

// startDetached runs a sysvisor container that sleeps, removed at cleanup.
func startDetached(t *testing.T, runtime string, extra ...string) string {
	t.Helper()
	args := append([]string{"run", "-d", "--runtime=" + runtime}, extra...)
	args = append(args, image, "sleep", "600")
	id := mustDocker(t, args...)
	t.Cleanup(func() { docker(t, "rm", "-f", id) })
	return id
}

type idMap struct{ inside, outside, size uint64 }

func parseMap(t *testing.T, s string) idMap {
	t.Helper()
	f := strings.Fields(s)
	if len(f) != 3 {
		t.Fatalf("id map %q: want one line of three fields", s)
	}
	var v [3]uint64
	for i := range f {
		n, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			t.Fatalf("id map %q: %v", s, err)
		}
		v[i] = n
	}
	return idMap{v[0], v[1], v[2]}
}

type lease struct {
	Start uint32 `json:"start"`
	Size  uint32 `json:"size"`
}

func leases(t *testing.T) map[string]lease {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(svDir, "state", "leases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Leases map[string]lease `json:"leases"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("leases.json: %v", err)
	}
	return f.Leases
}

func hostStatus(t *testing.T, pid, field string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == field {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%s/status has no %s", pid, field)
	return ""
}

func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

func TestUIDMapIsLeasedRange(t *testing.T) {
	m := parseMap(t, mustDocker(t, sv("cat", "/proc/self/uid_map")...))
	if m.inside != 0 || m.size != 65536 || m.outside < 100000 {
		t.Fatalf("uid_map = %+v, want 0 <base≥100000> 65536", m)
	}
	g := parseMap(t, mustDocker(t, sv("cat", "/proc/self/gid_map")...))
	if g.inside != 0 || g.size != 65536 || g.outside < 100000 {
		t.Fatalf("gid_map = %+v, want 0 <base≥100000> 65536", g)
	}
}

func TestConcurrentContainersGetDisjointRangesFreedOnRemove(t *testing.T) {
	before := leases(t)
	a := startDetached(t, "sysvisor-runc")
	b := startDetached(t, "sysvisor-runc")
	ma := parseMap(t, mustDocker(t, "exec", a, "cat", "/proc/self/uid_map"))
	mb := parseMap(t, mustDocker(t, "exec", b, "cat", "/proc/self/uid_map"))
	if ma.outside < mb.outside+mb.size && mb.outside < ma.outside+ma.size {
		t.Fatalf("ranges overlap: %+v and %+v", ma, mb)
	}
	l := leases(t)
	if l[a].Start != uint32(ma.outside) || l[b].Start != uint32(mb.outside) {
		t.Fatalf("leases.json %v does not record the ranges in use (%d, %d)", l, ma.outside, mb.outside)
	}
	mustDocker(t, "rm", "-f", a, b)
	after := leases(t)
	if _, ok := after[a]; ok {
		t.Errorf("lease of %s kept after rm: %v", a, after)
	}
	if _, ok := after[b]; ok {
		t.Errorf("lease of %s kept after rm: %v", b, after)
	}
	if len(after) != len(before) {
		t.Errorf("leases before %v, after %v", before, after)
	}
	// The freed range is handed out again.
	m := parseMap(t, mustDocker(t, sv("cat", "/proc/self/uid_map")...))
	if m.outside != min(ma.outside, mb.outside) {
		t.Errorf("next container got base %d, want the lowest freed %d", m.outside, min(ma.outside, mb.outside))
	}
}

func TestRootInsideIsUnprivilegedOutside(t *testing.T) {
	id := startDetached(t, "sysvisor-runc")
	if u := mustDocker(t, "exec", id, "id", "-u"); u != "0" {
		t.Fatalf("id -u inside = %q, want 0", u)
	}
	capEff := mustDocker(t, "exec", id, "sh", "-c", "grep ^CapEff: /proc/self/status | cut -f2")
	if want := hostStatus(t, "self", "CapBnd"); capEff != want {
		t.Errorf("CapEff inside = %s, want the host's CapBnd %s", capEff, want)
	}
	base := parseMap(t, mustDocker(t, "exec", id, "cat", "/proc/self/uid_map")).outside
	pid := mustDocker(t, "inspect", "-f", "{{.State.Pid}}", id)
	uids := strings.Fields(hostStatus(t, pid, "Uid"))
	for _, u := range uids {
		if u != strconv.FormatUint(base, 10) {
			t.Fatalf("container init on the host has Uid %v, want all %d", uids, base)
		}
	}
	if eff := hostStatus(t, pid, "CapEff"); eff == "0000000000000000" {
		t.Log("init has no caps in the host's view of its own userns; fine")
	}
}

func TestHostKnobsCannotBeChanged(t *testing.T) {
	id := startDetached(t, "sysvisor-runc")
	// kernel.panic is the container's own (a per-container value, see
	// sysctl_test.go): the write succeeds inside, the host keeps its own.
	// core_pattern is not emulated: refused.
	for _, f := range []string{"/proc/sys/kernel/core_pattern", "/proc/sys/kernel/panic"} {
		before, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, werr := docker(t, "exec", id, "sh", "-c", "echo 7 > "+f)
		after, _ := os.ReadFile(f)
		if !bytes.Equal(before, after) {
			os.WriteFile(f, before, 0o644)
			t.Fatalf("%s changed on the host: %q -> %q", f, before, after)
		}
		if emulated := strings.HasSuffix(f, "/panic"); (werr == nil) != emulated {
			t.Errorf("write to %s inside: %v; want refused unless it is a per-container sysctl", f, werr)
		}
	}
	if _, err := os.Stat("/proc/sysrq-trigger"); err == nil {
		// 'h' only prints help to the kernel log: harmless if it got through.
		if _, err := docker(t, "exec", id, "sh", "-c", "echo h > /proc/sysrq-trigger"); err == nil {
			t.Errorf("write to /proc/sysrq-trigger inside succeeded")
		}
	}
}

func TestWritableLayerAndImageOwnership(t *testing.T) {
	id := startDetached(t, "sysvisor-runc")
	mustDocker(t, "exec", id, "sh", "-c",
		"touch /etc/x && mkdir -p /data/sub && echo hi > /data/f && chown 1000:1000 /data/f && rm /bin/vi && chmod 0700 /data/sub")
	if out := mustDocker(t, "exec", id, "stat", "-c", "%u:%g", "/etc/x", "/bin/busybox"); out != "0:0\n0:0" {
		t.Fatalf("ownership inside: %q", out)
	}
	// The same changes made under runc, for reference.
	ref := startDetached(t, "runc")
	mustDocker(t, "exec", ref, "sh", "-c",
		"touch /etc/x && mkdir -p /data/sub && echo hi > /data/f && chown 1000:1000 /data/f && rm /bin/vi && chmod 0700 /data/sub")
	if got, want := sortedLines(mustDocker(t, "diff", id)), sortedLines(mustDocker(t, "diff", ref)); got != want {
		t.Errorf("docker diff of a running sysvisor container:\n%s\nwant (as runc):\n%s", got, want)
	}
	// Image layers on the host keep their owners.
	graph := mustDocker(t, "inspect", "-f", "{{.GraphDriver.Data.LowerDir}}", id)
	for _, layer := range strings.Split(graph, ":") {
		var st = statOwner(t, filepath.Join(layer, "bin", "busybox"))
		if st != "0:0" && st != "" {
			t.Errorf("image layer file %s owned by %s on the host, want 0:0", layer, st)
		}
	}
	img := "sysvisor-test/committed-" + strconv.Itoa(os.Getpid())
	mustDocker(t, "commit", id, img)
	t.Cleanup(func() { docker(t, "rmi", "-f", img) })
	check := "stat -c '%n %u:%g %a' /etc/x /data /data/f /data/sub; test ! -e /bin/vi && echo vi-gone"
	for _, rt := range []string{"runc", "sysvisor-runc"} {
		out := mustDocker(t, "run", "--rm", "--runtime="+rt, img, "sh", "-c", check)
		want := "/etc/x 0:0 644\n/data 0:0 755\n/data/f 1000:1000 644\n/data/sub 0:0 700\nvi-gone"
		if out != want {
			t.Errorf("committed image under %s:\n%s\nwant:\n%s", rt, out, want)
		}
	}
}

func statOwner(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("stat", "-c", "%u:%g", path).Output()
	if err != nil {
		return "" // not every layer holds the file
	}
	return strings.TrimSpace(string(out))
}

func sortedLines(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	for i := range l {
		l[i] = strings.TrimSpace(l[i])
	}
	sortStrings(l)
	return strings.Join(l, "\n")
}

func sortStrings(l []string) {
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && l[j] < l[j-1]; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
}

func TestBindMountOwnership(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "rootfile"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "userfile"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(dir, "userfile"), 1000, 1000)
	out := mustDocker(t, "run", "--rm", "--runtime=sysvisor-runc", "-v", dir+":/v", image,
		"sh", "-c", "stat -c '%n %u' /v/rootfile /v/userfile && touch /v/new")
	if out != "/v/rootfile 0\n/v/userfile 1000" {
		t.Errorf("bind mount ownership inside:\n%s\nwant host ownership shown unchanged", out)
	}
	if o := statOwner(t, filepath.Join(dir, "new")); o != "0:0" {
		t.Errorf("file created by root inside a volume is %s on the host, want 0:0", o)
	}
}

func TestSysinfoIsEmulated(t *testing.T) {
	out := mustDocker(t, "run", "--rm", "--runtime=sysvisor-runc", "-m", "256m", image, "sysinfo")
	if !strings.Contains(out, "totalram=268435456\n") {
		t.Errorf("sysinfo inside a 256m container:\n%s\nwant totalram=268435456", out)
	}
	up := strings.TrimPrefix(strings.Split(out, "\n")[0], "uptime=")
	if n, err := strconv.Atoi(up); err != nil || n > 30 {
		t.Errorf("container uptime %q, want a fresh container's (< 30 s)", up)
	}
}

func TestSupervisorDownFailsFast(t *testing.T) {
	pidb, err := os.ReadFile(filepath.Join(svDir, "sysvisord.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidb)))
	p, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	p.Signal(os.Interrupt)
	defer func() {
		if out, err := envsh("up"); err != nil {
			t.Fatalf("restart sysvisord: %v\n%s", err, out)
		}
	}()
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	start := time.Now()
	name := "sv-down-" + strconv.Itoa(os.Getpid())
	_, err = docker(t, "run", "--rm", "--name", name, "--runtime=sysvisor-runc", image, "true")
	took := time.Since(start)
	docker(t, "rm", "-f", name)
	if err == nil {
		t.Fatal("docker run succeeded with sysvisord stopped")
	}
	if !strings.Contains(err.Error(), "sysvisord") {
		t.Errorf("error does not name sysvisord: %v", err)
	}
	if took > 15*time.Second {
		t.Errorf("docker run took %v to fail", took)
	}
	if m := mountsUnder(filepath.Join(svDir, "run", "containers")); len(m) > 0 {
		t.Errorf("mounts left after failed create: %v", m)
	}
}

// bundle makes an OCI bundle with the busybox rootfs for driving
// sysvisor-runc directly.
func bundle(t *testing.T, config string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func runtimeCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(repo, "bin", "sysvisor-runc"),
		append([]string{"--run-dir", filepath.Join(svDir, "run"), "--root", filepath.Join(svDir, "runc-root")}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestBadInputLeavesNothingBehind(t *testing.T) {
	before := leases(t)
	id := "bad-" + strconv.Itoa(os.Getpid())
	cases := []struct {
		name, config string
		args         []string
		want         string
	}{
		{"malformed json", `{"ociVersion": "1.0.2", "process": {`, nil, "config.json"},
		{"wrong type", `{"ociVersion": "1.0.2", "process": {"args": "sh"}}`, nil, "config.json"},
		{"unknown flag", `{}`, []string{"--no-such-flag"}, "--no-such-flag"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := bundle(t, c.config)
			args := append(append([]string{}, c.args...), "create", "--bundle", b, id)
			out, err := runtimeCmd(t, args...)
			if err == nil {
				t.Fatalf("create succeeded: %s", out)
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("error %q does not name %s", out, c.want)
			}
			if _, ok := leases(t)[id]; ok {
				t.Errorf("lease left for %s", id)
			}
			if _, err := os.Stat(filepath.Join(svDir, "run", "containers", id)); err == nil {
				t.Errorf("container dir left for %s", id)
			}
			if _, err := os.Stat(filepath.Join(svDir, "state", "containers", id+".json")); err == nil {
				t.Errorf("container record left for %s", id)
			}
		})
	}
	if after := leases(t); len(after) != len(before) {
		t.Errorf("leases before %v after %v", before, after)
	}
}

func TestCheckpointIsRefusedClearly(t *testing.T) {
	out, err := runtimeCmd(t, "checkpoint", "some-id")
	if err == nil || !strings.Contains(out, "not supported") {
		t.Errorf("checkpoint: err=%v out=%q, want a clear 'not supported'", err, out)
	}
}

// TestContainerdCtr runs a container through the engine's containerd with
// ctr --runc-binary, the way containerd users and CRI setups select a
// runtime binary.
func TestContainerdCtr(t *testing.T) {
	addr := filepath.Join(svDir, "exec", "containerd", "containerd.sock")
	if _, err := os.Stat(addr); err != nil {
		t.Skipf("dockerd's containerd socket not at %s", addr)
	}
	ns := "sysvisor-e2e"
	ctr := func(args ...string) (string, error) {
		out, err := exec.Command("ctr", append([]string{"--address", addr, "-n", ns}, args...)...).CombinedOutput()
		return string(out), err
	}
	// ctr passes no runtime arguments, so point the runtime at our
	// sysvisord with a wrapper, as an operator's shim config would.
	wrapper := filepath.Join(t.TempDir(), "sysvisor-runc")
	script := fmt.Sprintf("#!/bin/sh\nexec %s --run-dir %s \"$@\"\n", filepath.Join(repo, "bin", "sysvisor-runc"), filepath.Join(svDir, "run"))
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	tar := filepath.Join(t.TempDir(), "img.tar")
	mustDocker(t, "save", "-o", tar, image)
	if out, err := ctr("image", "import", tar); err != nil {
		t.Fatalf("ctr image import: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		ctr("image", "rm", "docker.io/"+image+":latest")
		ctr("image", "rm", image+":latest")
	})
	ref := "docker.io/" + image + ":latest"
	if out, _ := ctr("image", "ls", "-q"); !strings.Contains(out, ref) {
		ref = image + ":latest"
	}
	name := "ctr-" + strconv.Itoa(os.Getpid())
	parent, err := envsh("cgroup-parent")
	if err != nil {
		t.Fatal(err)
	}
	// Under the environment's cgroup parent, which env.sh down removes.
	cg := "/" + strings.TrimSpace(parent) + "/" + name
	out, err := ctr("run", "--rm", "--cgroup", cg, "--runc-binary", wrapper, ref, name,
		"sh", "-c", "cat /proc/self/uid_map; grep ^0:: /proc/self/cgroup")
	if err != nil {
		t.Fatalf("ctr run: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	m := parseMap(t, strings.TrimSpace(lines[0]))
	if m.inside != 0 || m.outside < 100000 || m.size != 65536 {
		t.Errorf("uid_map under ctr = %+v", m)
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		// A v2-only host: the delegation hook ran under containerd's shim
		// too, and put the container's process in the leaf below its
		// cgroup, the root of its cgroup namespace.
		if len(lines) < 2 || strings.TrimSpace(lines[1]) != "0::/init.scope" {
			t.Errorf("cgroup under ctr: %q, want 0::/init.scope", out)
		}
	}
	for _, d := range []string{"/sys/fs/cgroup" + cg, "/sys/fs/cgroup/memory" + cg, "/sys/fs/cgroup/unified" + cg} {
		if _, err := os.Stat(d); err == nil {
			t.Errorf("cgroup %s left after ctr run --rm", d)
		}
	}
	if _, ok := leases(t)[name]; ok {
		t.Errorf("lease of %s kept after ctr run --rm", name)
	}
}

func TestNothingLeftAfterRemove(t *testing.T) {
	id := startDetached(t, "sysvisor-runc")
	dir := filepath.Join(svDir, "run", "containers", id)
	if len(mountsUnder(dir)) == 0 {
		t.Fatalf("no sysvisor mounts for a running container under %s", dir)
	}
	mustDocker(t, "rm", "-f", id)
	if m := mountsUnder(dir); len(m) > 0 {
		t.Errorf("mounts left after rm: %v", m)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s left after rm", dir)
	}
	if _, err := os.Stat(filepath.Join(svDir, "state", "containers", id+".json")); err == nil {
		t.Errorf("container record left after rm")
	}
}

// TestRestart covers docker restart, where the engine may keep its rootfs
// mounted across stop and start: the next create must find the engine's
// own overlay there, not the read-only view sysvisor left for it.
func TestRestart(t *testing.T) {
	id := startDetached(t, "sysvisor-runc")
	mustDocker(t, "exec", id, "touch", "/before")
	for i := 0; i < 3; i++ {
		mustDocker(t, "restart", "-t", "1", id)
		mustDocker(t, "exec", id, "touch", fmt.Sprintf("/after-%d", i))
	}
	mustDocker(t, "stop", "-t", "1", id)
	mustDocker(t, "start", id)
	got := mustDocker(t, "exec", id, "sh", "-c", "ls / | grep -E '^(before|after-)' | sort | tr '\\n' ' '")
	if got != "after-0 after-1 after-2 before" {
		t.Errorf("files after restarts: %q", got)
	}
	if d := sortedLines(mustDocker(t, "diff", id)); d != "A /after-0\nA /after-1\nA /after-2\nA /before" {
		t.Errorf("docker diff after restarts:\n%s", d)
	}
}
