package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// criUp starts tests/cri.sh's containerd for a test, and stops it after,
// checking that nothing is left mounted.
func criUp(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short")
	}
	if _, err := exec.LookPath("containerd"); err != nil {
		t.Skip("no containerd (make deps)")
	}
	// tests/cri.sh builds crictl and runc-clamp with the Go toolchain,
	// which the host matrix's VMs (compiled test binaries) do not have.
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no Go toolchain here to build crictl and runc-clamp (a compiled test binary in a VM)")
	}
	dir := filepath.Join(svDir, fmt.Sprintf("cri-%d-%s", os.Getpid(), strings.ToLower(t.Name())))
	if out, err := crish(dir, "up"); err != nil {
		t.Fatalf("tests/cri.sh up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := crish(dir, "down"); err != nil {
			t.Errorf("tests/cri.sh down: %v\n%s", err, out)
		}
		if left := mountsUnder(dir); len(left) > 0 {
			t.Errorf("mounts left behind: %v", left)
		}
	})
	return dir
}

// crish runs tests/cri.sh against the environment, with its containerd in
// dir.
func crish(dir string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(repo, "tests", "cri.sh"), args...)
	cmd.Env = append(os.Environ(), "SV_DIR="+svDir, "CRI_DIR="+dir)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// The CRI harness the Kubernetes work builds on (issue 16; docs/kubernetes.md):
// a private containerd whose CRI plugin has the handlers runc (the
// baseline, through tests/cri/runc-clamp) and sysvisor. A pod runs under the
// baseline on this host, where plain runc fails every pod (the CRI's
// oom_score_adj -998 needs CAP_SYS_RESOURCE), and sysvisorctl doctor finds
// the sysvisor handler in the config as containerd 1.x reads it.
func TestCRIHarness(t *testing.T) {
	dir := criUp(t)
	parent, err := crish(dir, "cgroup-parent")
	if err != nil {
		t.Fatal(err)
	}
	pod := filepath.Join(t.TempDir(), "pod.json")
	if err := os.WriteFile(pod, []byte(fmt.Sprintf(`{"metadata": {"name": "base", "namespace": "default", "uid": "base-uid", "attempt": 1},
 "log_directory": %q, "linux": {"cgroup_parent": %q}}`, filepath.Join(dir, "logs", "base"), strings.TrimSpace(parent)+"/base")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := crish(dir, "crictl", "runp", "--runtime=runc", pod)
	if err != nil {
		t.Fatalf("crictl runp --runtime=runc: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	id := lines[len(lines)-1]
	if out, err := crish(dir, "crictl", "inspectp", "-o", "go-template", "--template", "{{.status.state}}", id); err != nil || !strings.Contains(out, "SANDBOX_READY") {
		t.Errorf("the baseline pod: %v\n%s", err, out)
	}
	for _, op := range []string{"stopp", "rmp"} {
		if out, err := crish(dir, "crictl", op, id); err != nil {
			t.Errorf("crictl %s: %v\n%s", op, err, out)
		}
	}
	out, _ = sysvisorctl(t, "doctor", "--containerd-config", filepath.Join(dir, "config.toml"))
	if !strings.Contains(out, "handler sysvisor (config version 2)") {
		t.Errorf("sysvisorctl doctor on the harness's config:\n%s", out)
	}
}

// criPods drives pods through crictl on the harness's containerd.
type criPods struct {
	t      *testing.T
	dir    string
	parent string
}

// crictl answers crictl's standard output; its warnings go to standard
// error, which comes back only with a failure.
func (c criPods) crictl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(repo, "tests", "cri.sh"), append([]string{"crictl"}, args...)...)
	cmd.Env = append(os.Environ(), "SV_DIR="+svDir, "CRI_DIR="+c.dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), err
}

func (c criPods) must(args ...string) string {
	c.t.Helper()
	out, err := c.crictl(args...)
	if err != nil {
		c.t.Fatalf("crictl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// lastLine is crictl's answer after any warnings it printed.
func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(l[len(l)-1])
}

// runp starts a pod under handler and returns its sandbox's id and the
// pod's config file (create needs it again).
func (c criPods) runp(name, handler string) (string, string) {
	c.t.Helper()
	pod := filepath.Join(c.t.TempDir(), name+"-pod.json")
	cfg := fmt.Sprintf(`{"metadata": {"name": %q, "namespace": "default", "uid": "%s-uid", "attempt": 1},
 "hostname": %q, "log_directory": %q, "linux": {"cgroup_parent": %q}}`,
		name, name, name, filepath.Join(c.dir, "logs", name), c.parent+"/"+name)
	if err := os.WriteFile(pod, []byte(cfg), 0o644); err != nil {
		c.t.Fatal(err)
	}
	id := lastLine(c.must("runp", "--runtime="+handler, pod))
	c.t.Cleanup(func() {
		c.crictl("stopp", id)
		c.crictl("rmp", id)
	})
	return id, pod
}

// run creates and starts a container in a pod.
func (c criPods) run(podID, pod, name, image string, cmd ...string) string {
	c.t.Helper()
	b, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"name": name}, "image": map[string]string{"image": image},
		"command": cmd, "log_path": name + ".log",
		// The kubelet's default: a PID namespace of the container's own
		// (crictl's is the pod's, where systemd would not be PID 1).
		"linux": map[string]any{"security_context": map[string]any{"namespace_options": map[string]int{"pid": 1}}},
	})
	f := filepath.Join(c.t.TempDir(), name+".json")
	if err := os.WriteFile(f, b, 0o644); err != nil {
		c.t.Fatal(err)
	}
	id := lastLine(c.must("create", podID, f, pod))
	c.must("start", id)
	return id
}

func (c criPods) exec(id string, args ...string) (string, error) {
	return c.crictl(append([]string{"exec", id}, args...)...)
}

// importImage copies an image of the environment's engine into the
// harness's containerd (namespace k8s.io), where pods find it.
func (c criPods) importImage(image string) {
	c.t.Helper()
	cmd := exec.Command("sh", "-c", `"$1" docker save "$2" | ctr --address "$3" --namespace k8s.io images import -`,
		"sh", filepath.Join(repo, "tests", "env.sh"), image, filepath.Join(c.dir, "containerd.sock"))
	cmd.Env = append(os.Environ(), "SV_DIR="+svDir)
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("import %s into containerd: %v\n%s", image, err, out)
	}
}

// Pods as system containers (issue 16, docs/kubernetes.md): a sandbox
// under the handler sysvisor, a container running systemd as init beside
// one running busybox. Both show the pod's user namespace and ID range,
// the pod's network namespace with the address CNI gave the pod, which the
// pod's root owns (sysfs, an inner dockerd's bridge); crictl exec works;
// inner Docker runs a container. A second pod gets a disjoint range, and
// removing the pods leaves no lease, record or mount.
func TestCRIPods(t *testing.T) {
	dir := criUp(t)
	parent, err := crish(dir, "cgroup-parent")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := envsh("dind-image"); err != nil {
		t.Fatalf("tests/env.sh dind-image: %v\n%s", err, out)
	}
	c := criPods{t: t, dir: dir, parent: strings.TrimSpace(parent)}
	c.importImage("sysvisor-test/dind")
	const busybox, dind = "docker.io/sysvisor-test/busybox:latest", "docker.io/sysvisor-test/dind:latest"

	podA, cfgA := c.runp("sva", "sysvisor")
	ip := lastLine(c.must("inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", podA))
	sys := c.run(podA, cfgA, "sys", dind, "/sbin/init")
	app := c.run(podA, cfgA, "app", busybox, "sleep", "3600")

	// One user namespace, one network namespace for the pod.
	same := func(what string, args ...string) string {
		t.Helper()
		a, errA := c.exec(sys, args...)
		b, errB := c.exec(app, args...)
		if errA != nil || errB != nil || a != b || a == "" {
			t.Errorf("%s: systemd container %q (%v), busybox container %q (%v): want the same", what, a, errA, b, errB)
		}
		return a
	}
	mapA := parseMap(t, same("uid_map", "cat", "/proc/self/uid_map"))
	if mapA.inside != 0 || mapA.size != 65536 || mapA.outside < 100000 {
		t.Errorf("pod uid_map %+v", mapA)
	}
	same("user namespace", "readlink", "/proc/self/ns/user")
	netns := same("network namespace", "readlink", "/proc/self/ns/net")
	// The CRI's path to the pod's network (port forwarding, CNI's DEL)
	// holds the pod's own namespace.
	criNet := lastLine(c.must("inspectp", "-o", "go-template", "--template",
		`{{range .info.runtimeSpec.linux.namespaces}}{{if eq .type "network"}}{{.path}}{{end}}{{end}}`, podA))
	var st syscall.Stat_t
	if err := syscall.Stat(criNet, &st); err != nil || fmt.Sprintf("net:[%d]", st.Ino) != netns {
		t.Errorf("the CRI's network namespace path %q: inode %d (%v), the pod's is %s", criNet, st.Ino, err, netns)
	}
	same("interfaces", "ls", "/sys/class/net")
	same("eth0's MAC", "cat", "/sys/class/net/eth0/address")
	if out, err := c.exec(app, "ip", "-4", "addr", "show", "eth0"); err != nil || ip == "" || !strings.Contains(out, " "+ip+"/") {
		t.Errorf("the pod's address %q on eth0 in the busybox container: %v\n%s", ip, err, out)
	}
	// The pod's root owns the pod's namespaces (the CRI's network
	// namespace is the host's user namespace's: moved, not joined).
	if out, err := c.exec(app, "hostname", "sva-renamed"); err != nil {
		t.Errorf("hostname in the pod's UTS namespace: %v\n%s", err, out)
	} else if h, _ := c.exec(sys, "hostname"); h != "sva-renamed" {
		t.Errorf("hostname set in one container of the pod, the other sees %q", h)
	}
	if leases(t)[podA] != (lease{Start: uint32(mapA.outside), Size: uint32(mapA.size)}) {
		t.Errorf("leases %v: want the pod's range under its sandbox %s", leases(t), podA)
	}
	for _, id := range []string{sys, app} {
		if _, ok := leases(t)[id]; ok {
			t.Errorf("container %s of the pod has a lease of its own", id)
		}
	}

	// systemd as init, and inner Docker.
	var state string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		state, _ = c.exec(sys, "systemctl", "is-system-running")
		if state == "running" || state == "degraded" {
			break
		}
	}
	if state != "running" {
		failed, _ := c.exec(sys, "systemctl", "--failed", "--no-legend")
		t.Errorf("systemctl is-system-running: %q; failed units:\n%s", state, failed)
	}
	load := exec.Command("sh", "-c", `"$1" docker save sysvisor-test/busybox | "$2" crictl exec -i "$3" docker load`,
		"sh", filepath.Join(repo, "tests", "env.sh"), filepath.Join(repo, "tests", "cri.sh"), sys)
	load.Env = append(os.Environ(), "SV_DIR="+svDir, "CRI_DIR="+dir)
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("docker load into the pod's inner engine: %v\n%s", err, out)
	}
	if out, err := c.exec(sys, "docker", "run", "--rm", "sysvisor-test/busybox", "sh", "-c", "echo inner-ok; cat /proc/self/uid_map"); err != nil || !strings.Contains(out, "inner-ok") {
		t.Errorf("inner docker run in a pod: %v\n%s", err, out)
	}

	// A second pod: its own range.
	podB, cfgB := c.runp("svb", "sysvisor")
	b := c.run(podB, cfgB, "app", busybox, "sleep", "3600")
	out, err := c.exec(b, "cat", "/proc/self/uid_map")
	if err != nil {
		t.Fatal(err)
	}
	mapB := parseMap(t, out)
	if mapB.outside < mapA.outside+mapA.size && mapA.outside < mapB.outside+mapB.size {
		t.Errorf("two pods overlap: %+v and %+v", mapA, mapB)
	}

	// Gone without a trace.
	for _, id := range []string{podA, podB} {
		c.must("stopp", id)
		c.must("rmp", id)
	}
	l := leases(t)
	ps, _ := sysvisorctl(t, "ps")
	for _, id := range []string{podA, podB, sys, app, b} {
		if _, ok := l[id]; ok {
			t.Errorf("lease of %s left after rmp", id)
		}
		if strings.Contains(ps, id[:12]) {
			t.Errorf("sysvisorctl ps still lists %s:\n%s", id, ps)
		}
		if _, err := os.Stat(filepath.Join(svDir, "state", "containers", id+".json")); err == nil {
			t.Errorf("record of %s left after rmp", id)
		}
		if left := mountsUnder(filepath.Join(svDir, "run", "containers", id)); len(left) > 0 {
			t.Errorf("mounts of %s left after rmp: %v", id, left)
		}
	}
}
