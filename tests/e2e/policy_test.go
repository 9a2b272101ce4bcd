package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func sysvisorctl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(repo, "bin", "sysvisorctl"), append([]string{"--run-dir", filepath.Join(svDir, "run"), "--policy-dir", filepath.Join(svDir, "policies")}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// addPolicy writes a policy file into sysvisord's policy directory and
// reloads; the file is removed (and reloaded away) when the test ends.
func addPolicy(t *testing.T, name, src string) (string, error) {
	t.Helper()
	path := filepath.Join(svDir, "policies", name+".hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(path)
		sysvisorctl(t, "policy", "reload")
	})
	return sysvisorctl(t, "policy", "reload")
}

func mustAddPolicy(t *testing.T, name, src string) {
	t.Helper()
	if out, err := addPolicy(t, name, src); err != nil {
		t.Fatalf("sysvisorctl policy reload: %v\n%s", err, out)
	}
}

// mountScript makes the check with busybox's mount and the same
// calls through mountcall, which prints the errno's name.
const mountScript = `mkdir -p /mnt/t
if mount -t tmpfs t /mnt/t 2>/tmp/err; then echo "busybox ok"; umount /mnt/t; else echo "busybox $(tr ' ' _ </tmp/err)"; fi
echo "tmpfs $(mountcall mount t /mnt/t tmpfs 0 -)"
echo "umount $(mountcall umount /mnt/t 0)"
`

// Two containers with different policies behave as their policies say:
// under strict no mount at all, under dind the tmpfs mount works.
func TestPolicySelectsBehaviour(t *testing.T) {
	strict := startDetached(t, "sysvisor-runc", "-e", "SYSVISOR_POLICY=strict")
	dind := startDetached(t, "sysvisor-runc", "-e", "SYSVISOR_POLICY=dind")

	r := results(t, sh(t, strict, mountScript))
	// busybox words EPERM as "permission denied (are you root?)"; the
	// errno itself is checked through mountcall below.
	if got := strings.ToLower(r["busybox"]); !strings.Contains(got, "permission_denied") && !strings.Contains(got, "not_permitted") {
		t.Errorf("strict: mount -t tmpfs: %q, want EPERM's message", r["busybox"])
	}
	expect(t, r, "tmpfs", "EPERM")
	expect(t, r, "umount", "EPERM")
	r = results(t, sh(t, strict, `mountcall newapi`))
	for _, c := range []string{"fsopen", "fspick", "open_tree", "move_mount", "mount_setattr"} {
		expect(t, r, c, "EPERM")
	}

	r = results(t, sh(t, dind, mountScript))
	expect(t, r, "busybox", "ok")
	expect(t, r, "tmpfs", "ok")
	expect(t, r, "umount", "ok")

	for id, want := range map[string]string{strict: "strict", dind: "dind"} {
		out, err := sysvisorctl(t, "inspect", id[:12])
		if err != nil {
			t.Fatalf("sysvisorctl inspect: %v\n%s", err, out)
		}
		var rec struct {
			Policy string `json:"policy"`
			Rules  []struct {
				Syscall, Action, Errno string
			} `json:"rules"`
		}
		if err := json.Unmarshal([]byte(out), &rec); err != nil {
			t.Fatalf("inspect output: %v\n%s", err, out)
		}
		if rec.Policy != want || len(rec.Rules) == 0 {
			t.Errorf("inspect %s: policy %q, %d rules; want %s", id[:12], rec.Policy, len(rec.Rules), want)
		}
		for _, r := range rec.Rules {
			if r.Syscall == "mount" && (want == "strict") != (r.Action == "deny" && r.Errno == "EPERM") {
				t.Errorf("inspect %s: mount rule %+v", want, r)
			}
		}
	}
}

// A file in the policy directory is used: log lets the call through.
func TestPolicyFileIsUsed(t *testing.T) {
	name := "e2elog" + strconv.Itoa(os.Getpid())
	src := `# mount is logged and left to the kernel; the rest of the family denied
version = 1
syscall "mount" {
  action = "log"
}
syscall "umount2" {
  action = "deny"
  errno  = "EACCES"
}
`
	mustAddPolicy(t, name, src)
	id := startDetached(t, "sysvisor-runc", "-e", "SYSVISOR_POLICY="+name)
	r := results(t, sh(t, id, mountScript))
	expect(t, r, "tmpfs", "ok")
	expect(t, r, "umount", "EACCES")
	log, _ := os.ReadFile(filepath.Join(svDir, "log", "sysvisord.log"))
	if !strings.Contains(string(log), "syscall=mount") || !strings.Contains(string(log), id) {
		t.Errorf("sysvisord's log has no line for the logged mount of %s", id[:12])
	}
}

// An unknown policy name, or a policy file with a typo, fails docker run
// with a message naming the policy (and the file's line and column), and
// leaves no lease, record or mount behind.
func TestBadPolicyFailsCreateLeavingNothing(t *testing.T) {
	typo := "e2etypo" + strconv.Itoa(os.Getpid())
	path := filepath.Join(svDir, "policies", typo+".hcl")
	out, err := addPolicy(t, typo, "version = 1\nsyscall \"mount\" {\n  actoin = \"deny\"\n}\n")
	if err == nil || !strings.Contains(out, path+":3:3") {
		t.Errorf("policy reload with a typo: %v, want an error at %s:3:3\n%s", err, path, out)
	}
	before := leases(t)
	for _, c := range []struct{ policy, want string }{
		{"nosuchpolicy", `unknown policy "nosuchpolicy"`},
		{typo, path + ":3:3"},
	} {
		t.Run(c.policy, func(t *testing.T) {
			name := "sv-badpol-" + strconv.Itoa(os.Getpid())
			_, err := docker(t, "run", "--rm", "--name", name, "--runtime=sysvisor-runc", "-e", "SYSVISOR_POLICY="+c.policy, image, "true")
			docker(t, "rm", "-f", name)
			if err == nil {
				t.Fatal("docker run succeeded")
			}
			t.Logf("docker run: %v", err)
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.policy) {
				t.Errorf("error does not name the policy (%s): %v", c.want, err)
			}
			if m := mountsUnder(filepath.Join(svDir, "run", "containers")); len(m) > 0 {
				t.Errorf("mounts left after failed create: %v", m)
			}
			ents, _ := os.ReadDir(filepath.Join(svDir, "run", "containers"))
			for _, e := range ents {
				if _, err := docker(t, "inspect", e.Name()); err != nil {
					t.Errorf("container dir %s left behind", e.Name())
				}
			}
		})
	}
	if after := leases(t); len(after) != len(before) {
		t.Errorf("leases before %v after %v", before, after)
	}
}

// Reload: a new version counts for containers created after it, a running
// container keeps the policy it started with, and a file with an error is
// refused with its position while the last good version stays active.
func TestPolicyReload(t *testing.T) {
	name := "e2ereload" + strconv.Itoa(os.Getpid())
	v1 := `version = 1
syscall "mount" {
  action = "deny"
  errno  = "EACCES"
}
syscall "umount2" { action = "deny" }
`
	mustAddPolicy(t, name, v1)
	a := startDetached(t, "sysvisor-runc", "-e", "SYSVISOR_POLICY="+name)
	expect(t, results(t, sh(t, a, mountScript)), "tmpfs", "EACCES")

	path := filepath.Join(svDir, "policies", name+".hcl")
	if err := os.WriteFile(path, []byte(strings.Replace(v1, `"EACCES"`, `"EACCESS"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := sysvisorctl(t, "policy", "reload")
	if err == nil || !strings.Contains(out, path+":4:12") || !strings.Contains(out, "last good version") {
		t.Errorf("reload of a broken file: %v\n%s", err, out)
	}
	b := startDetached(t, "sysvisor-runc", "-e", "SYSVISOR_POLICY="+name)
	expect(t, results(t, sh(t, b, mountScript)), "tmpfs", "EACCES")

	v2 := strings.Replace(v1, `"EACCES"`, `"EROFS"`, 1)
	if err := os.WriteFile(path, []byte(v2), 0o644); err != nil {
		t.Fatal(err)
	}
	// SIGHUP reloads too.
	logPath := filepath.Join(svDir, "log", "sysvisord.log")
	loaded := func() int {
		log, _ := os.ReadFile(logPath)
		return strings.Count(string(log), "policy loaded: policy="+name+" ")
	}
	before := loaded()
	pid, err := os.ReadFile(filepath.Join(svDir, "sysvisord.pid"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("kill", "-HUP", strings.TrimSpace(string(pid))).CombinedOutput(); err != nil {
		t.Fatalf("kill -HUP sysvisord: %v %s", err, out)
	}
	for deadline := time.Now().Add(10 * time.Second); loaded() == before; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no reload of %s logged 10s after SIGHUP", name)
		}
	}
	c := startDetached(t, "sysvisor-runc", "-e", "SYSVISOR_POLICY="+name)
	expect(t, results(t, sh(t, c, mountScript)), "tmpfs", "EROFS")
	// a started under v1 and keeps it.
	expect(t, results(t, sh(t, a, mountScript)), "tmpfs", "EACCES")
}

func TestSysvisorctl(t *testing.T) {
	id := startDetached(t, "sysvisor-runc")
	out, err := sysvisorctl(t, "ps")
	if err != nil || !strings.Contains(out, id[:12]) || !strings.Contains(out, "default") {
		t.Errorf("sysvisorctl ps: %v\n%s", err, out)
	}
	out, err = sysvisorctl(t, "log-level", "debug")
	if err != nil || !strings.Contains(out, "-> debug") {
		t.Errorf("sysvisorctl log-level debug: %v\n%s", err, out)
	}
	if out, err := sysvisorctl(t, "log-level", "loud"); err == nil {
		t.Errorf("sysvisorctl log-level loud succeeded: %s", out)
	}
	out, err = sysvisorctl(t, "policy", "explain", "strict")
	if err != nil || !strings.Contains(out, "EPERM") {
		t.Errorf("sysvisorctl policy explain strict: %v\n%s", err, out)
	}
	out, err = sysvisorctl(t, "inspect", "nosuchcontainer")
	if err == nil || !strings.Contains(out, "no container") {
		t.Errorf("sysvisorctl inspect nosuchcontainer: %v\n%s", err, out)
	}
	// doctor against the private environment: sysvisord reachable, the
	// runtime registered in its daemon.json, no FAIL.
	out, err = sysvisorctl(t, "doctor", "--daemon-json", filepath.Join(svDir, "daemon.json"),
		"--subuid", filepath.Join(svDir, "subuid"), "--subgid", filepath.Join(svDir, "subgid"))
	if err != nil || !regexp.MustCompile(`(?m)^ok +sysvisord +version`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^ok +docker registration +.*sysvisor-runc`).MatchString(out) || strings.Contains(out, "FAIL") {
		t.Errorf("sysvisorctl doctor: %v\n%s", err, out)
	}
	// Not root: a clear refusal, exit status 1.
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", filepath.Join(repo, "bin", "sysvisorctl"),
		"--run-dir", filepath.Join(svDir, "run"), "ps")
	b, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(b), "root-only") || !strings.Contains(string(b), "uid 65534") {
		t.Errorf("sysvisorctl ps as uid 65534: exit %d (%v)\n%s", code, err, b)
	}
}

// An emulation option changes behaviour: with procfs = false, a new procfs
// in a nested pid namespace is left to the kernel, which (runc having made
// the container's mount namespace inside its user namespace, so nothing is
// locked) mounts it without the container's masks; sysvisord's procfs
// carries them. sysfs emulation stays on either way.
func TestPolicyProcfsOptionOff(t *testing.T) {
	name := "e2enoproc" + strconv.Itoa(os.Getpid())
	src := `version = 1
syscall "mount" {
  action = "emulate"
  procfs = false
}
syscall "umount2" { action = "emulate" }
syscall "fsopen" { action = "emulate" }
syscall "fspick" { action = "emulate" }
syscall "open_tree" { action = "emulate" }
syscall "move_mount" { action = "emulate" }
syscall "mount_setattr" { action = "emulate" }
`
	mustAddPolicy(t, name, src)
	script := `unshare -p -f sh -c 'mkdir -p /mnt/p; echo "proc $(mountcall mount proc /mnt/p proc 0 -)"; echo "proc-masked $(grep -q " /mnt/p/" /proc/self/mountinfo && echo yes || echo no)"'
unshare -n sh -c 'mkdir -p /mnt/s; echo "sysfs $(mountcall mount sysfs /mnt/s sysfs 0 -)"; echo "sysfs-masked $(grep -q " /mnt/s/" /proc/self/mountinfo && echo yes || echo no)"'`
	off := startDetached(t, "sysvisor-runc", "-e", "SYSVISOR_POLICY="+name)
	r := results(t, sh(t, off, script))
	expect(t, r, "proc", "ok")
	expect(t, r, "proc-masked", "no")
	expect(t, r, "sysfs", "ok")
	expect(t, r, "sysfs-masked", "yes")
	on := startDetached(t, "sysvisor-runc")
	r = results(t, sh(t, on, script))
	expect(t, r, "proc", "ok")
	expect(t, r, "proc-masked", "yes")
	expect(t, r, "sysfs", "ok")
	expect(t, r, "sysfs-masked", "yes")
}

// sysvisorctl trace shows a mount made inside a container within a second,
// with its arguments decoded; sysvisorctl stats then counts it.
func TestTraceAndStats(t *testing.T) {
	id := startDetached(t, "sysvisor-runc")
	logPath := filepath.Join(svDir, "log", "sysvisord.log")
	started := func() int {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), "trace started")
	}
	before := started()
	cmd := exec.Command(filepath.Join(repo, "bin", "sysvisorctl"), "--run-dir", filepath.Join(svDir, "run"), "trace", "-n", "1", "--syscall", "mount", id[:12])
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()
	for deadline := time.Now().Add(10 * time.Second); started() == before; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("trace not started within 10s: %s", out.String())
		}
	}
	mounted := time.Now()
	sh(t, id, "mkdir -p /mnt/tr && mount -t tmpfs -o size=1m,mode=700 trsrc /mnt/tr && umount /mnt/tr")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sysvisorctl trace: %v\n%s", err, out.String())
		}
	case <-time.After(time.Second + time.Since(mounted)):
		t.Fatalf("no traced mount within a second of it: %s", out.String())
	}
	line := out.String()
	t.Logf("trace: %s", line)
	for _, want := range []string{id[:12], `mount(source="trsrc", target="/mnt/tr", fstype="tmpfs", flags=`, `data="size=1m,mode=700"`, "emulate -> "} {
		if !strings.Contains(line, want) {
			t.Errorf("trace line lacks %q: %s", want, line)
		}
	}
	out2, err := sysvisorctl(t, "stats", "--json", id[:12])
	if err != nil {
		t.Fatalf("sysvisorctl stats: %v\n%s", err, out2)
	}
	var rows []struct {
		Syscall, Action string
		Count           uint64
		P50Ns           int64
	}
	if err := json.Unmarshal([]byte(out2), &rows); err != nil {
		t.Fatalf("stats output: %v\n%s", err, out2)
	}
	counted := map[string]uint64{}
	for _, r := range rows {
		counted[r.Syscall] += r.Count
		if r.Count > 0 && r.P50Ns <= 0 {
			t.Errorf("stats row without latency: %+v", r)
		}
	}
	if counted["mount"] < 1 || counted["umount2"] < 1 {
		t.Errorf("stats of %s: %s", id[:12], out2)
	}
	if out, err := sysvisorctl(t, "stats"); err != nil || !strings.Contains(out, "P99") || !strings.Contains(out, "umount2") {
		t.Errorf("sysvisorctl stats: %v\n%s", err, out)
	}
}
