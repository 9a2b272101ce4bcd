package doctor

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sysvisor/sysvisor/kernel"
)

func TestKernel(t *testing.T) {
	for _, tc := range []struct {
		release string
		want    Verdict
		text    string
	}{
		{"6.18.44-fc-v669", OK, "floor 6.1"}, {"6.1.0-40-amd64", OK, "6.1.0-40-amd64 (floor 6.1)"}, {"6.12.57+deb13-amd64", OK, ""},
		{"7.0.1", OK, ""}, {"6.0.12-amd64", Fail, "not tested"},
		{"5.15.0-91-generic", Fail, "kernel 5.15.0-91-generic is older than sysvisor's floor 6.1: it lacks overlayfs on idmapped layers (Linux 5.19)"},
		{"garbage", Fail, "no major.minor"}, {"6", Fail, ""},
	} {
		if r := Kernel(tc.release); r.Verdict != tc.want || !strings.Contains(r.Detail, tc.text) {
			t.Errorf("Kernel(%q) = %+v, want %v with %q", tc.release, r, tc.want, tc.text)
		}
	}
}

func TestSeccompNotifyAndUserns(t *testing.T) {
	if r := SeccompNotify("kill_process kill_thread trap errno user_notif trace log allow\n", nil); r.Verdict != OK {
		t.Errorf("%+v", r)
	}
	if r := SeccompNotify("kill_process kill_thread trap errno trace log allow", nil); r.Verdict != Fail {
		t.Errorf("no user_notif: %+v", r)
	}
	if r := SeccompNotify("", fs.ErrNotExist); r.Verdict != Fail {
		t.Errorf("no file: %+v", r)
	}
	if r := Userns("0\n", nil); r.Verdict != Fail || !strings.Contains(r.Hint, "max_user_namespaces") {
		t.Errorf("max 0: %+v", r)
	}
	if r := Userns("1000\n", errors.New("EPERM")); r.Verdict != Fail {
		t.Errorf("probe failed: %+v", r)
	}
}

func featureDoc(actions, flags string) []byte {
	return []byte(fmt.Sprintf(`{"ociVersionMin":"1.0.0","linux":{"seccomp":{"enabled":true,"actions":[%s],"supportedFlags":[%s]}},
"annotations":{"io.github.seccomp.libseccomp.version":"2.5.4"}}`, actions, flags))
}

func TestRunc(t *testing.T) {
	notify := `"SCMP_ACT_ALLOW","SCMP_ACT_NOTIFY"`
	for _, tc := range []struct {
		name string
		feat []byte
		err  error
		want Verdict
		text string
	}{
		{"full", featureDoc(notify, `"SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"`), nil, OK, "libseccomp 2.5.4"},
		{"no killable", featureDoc(notify, `"SECCOMP_FILTER_FLAG_LOG"`), nil, Warn, "WAIT_KILLABLE_RECV"},
		{"no notify", featureDoc(`"SCMP_ACT_ALLOW"`, ``), nil, Fail, "no SCMP_ACT_NOTIFY"},
		{"no seccomp", []byte(`{"linux":{"seccomp":{"enabled":false}}}`), nil, Fail, "without seccomp"},
		{"garbage", []byte(`flag provided but not defined`), nil, Fail, "runc features"},
		{"missing", nil, errors.New(`exec: "runc": executable file not found in $PATH`), Fail, "not found"},
	} {
		rs := Runc("/usr/sbin/runc", "runc version 1.1.5+ds1\ncommit: x\n", tc.feat, tc.err)
		last := rs[len(rs)-1]
		if last.Verdict != tc.want || !strings.Contains(last.Detail, tc.text) {
			t.Errorf("%s: %+v, want %v mentioning %q", tc.name, last, tc.want, tc.text)
		}
		if tc.err == nil && (rs[0].Verdict != OK || rs[0].Detail != "/usr/sbin/runc: runc version 1.1.5+ds1") {
			t.Errorf("%s: runc line %+v", tc.name, rs[0])
		}
	}
}

func TestSubIDPool(t *testing.T) {
	line := []byte("alice:100000:65536\nsysvisor:1048576:268435456\n")
	for _, tc := range []struct {
		name       string
		uid, gid   []byte
		uerr, gerr error
		want       Verdict
	}{
		{"both", line, line, nil, nil, OK},
		{"none yet", []byte("alice:100000:65536\n"), nil, nil, fs.ErrNotExist, Warn},
		{"one only", line, []byte("alice:100000:65536\n"), nil, nil, Fail},
		{"differ", line, []byte("sysvisor:1048576:65536\n"), nil, nil, Fail},
		{"too small", []byte("sysvisor:1048576:1000\n"), []byte("sysvisor:1048576:1000\n"), nil, nil, Fail},
		{"malformed", []byte("sysvisor:x:y\n"), line, nil, nil, Fail},
		{"unreadable", nil, line, fs.ErrPermission, nil, Fail},
	} {
		if r := SubIDPool(tc.uid, tc.gid, tc.uerr, tc.gerr); r.Verdict != tc.want {
			t.Errorf("%s: %+v, want %v", tc.name, r, tc.want)
		}
	}
	if r := SubIDPool(line, line, nil, nil); !strings.Contains(r.Detail, "4096 containers") {
		t.Errorf("detail: %+v", r)
	}
}

func TestDockerRegistration(t *testing.T) {
	exists := func(p string) error {
		if p == "/usr/local/bin/sysvisor-runc" || p == "/opt/sv/sysvisor-runc" {
			return nil
		}
		return fs.ErrNotExist
	}
	for _, tc := range []struct {
		name string
		json string
		err  error
		want Verdict
		text string
	}{
		{"registered", `{"runtimes": {"sysvisor-runc": {"path": "/usr/local/bin/sysvisor-runc"}}}`, nil, OK, "sysvisor-runc"},
		{"other name", `{"runtimes": {"sv-strict": {"path": "/opt/sv/sysvisor-runc", "runtimeArgs": ["--policy", "strict"]}}}`, nil, OK, "sv-strict"},
		{"missing binary", `{"runtimes": {"sysvisor-runc": {"path": "/nope/sysvisor-runc"}}}`, nil, Fail, "/nope/sysvisor-runc"},
		{"not registered", `{"runtimes": {"crun": {"path": "/usr/bin/crun"}}, "debug": true}`, nil, Warn, "no sysvisor-runc"},
		{"syntax", "{\n  \"runtimes\": {\n    \"sysvisor-runc\": {\"path\": \"/x\"},\n  }\n}\n", nil, Fail, "daemon.json:4:3"},
		{"no file", "", fs.ErrNotExist, Warn, "does not exist"},
	} {
		r := DockerRegistration("/etc/docker/daemon.json", []byte(tc.json), tc.err, exists)
		if r.Verdict != tc.want || !strings.Contains(r.Detail, tc.text) {
			t.Errorf("%s: %+v, want %v mentioning %q", tc.name, r, tc.want, tc.text)
		}
	}
}

func TestPrint(t *testing.T) {
	var b bytes.Buffer
	worst := Print(&b, []Result{ok("kernel", "6.18"), warn("runc seccomp", "old", "upgrade"), fail("sysvisord", "down", "start it")})
	want := "ok    kernel        6.18\nwarn  runc seccomp  old\n                    hint: upgrade\nFAIL  sysvisord     down\n                    hint: start it\n"
	if worst != Fail || b.String() != want {
		t.Errorf("worst %v, output:\n%s\nwant:\n%s", worst, b.String(), want)
	}
}

// The probes on this machine's kernel: the kernel package's probes leave
// no seccomp filter on any thread of the process, and the idmapped-mount
// probe leaves no mount.
func TestProbes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	filtered := func() (out []string) {
		ents, _ := os.ReadDir("/proc/self/task")
		for _, e := range ents {
			b, _ := os.ReadFile("/proc/self/task/" + e.Name() + "/status")
			if strings.Contains(string(b), "Seccomp:\t2") {
				out = append(out, e.Name())
			}
		}
		return out
	}
	before, _ := os.ReadFile("/proc/self/mountinfo")
	rs := Run(Options{RunDir: t.TempDir(), PolicyDir: t.TempDir(), DaemonJSON: "/nonexistent/daemon.json", IdmapDir: "/var/lib",
		Docker: "/nonexistent/docker"})
	checks := map[string]Result{}
	for _, r := range rs {
		checks[r.Check] = r
		t.Logf("%-4s %-30s %s", r.Verdict, r.Check, r.Detail)
	}
	// Every feature has its line: ok exactly where the kernel has it and
	// its fallback is not forced.
	for _, f := range kernel.Features() {
		r, found := checks["kernel "+f.Name]
		if !found || (r.Verdict == OK) != f.Has() {
			t.Errorf("kernel feature %s on this machine (present and not forced: %v): %+v", f.Name, f.Has(), r)
		}
	}
	for _, c := range []string{"cgroup mode", "engine cgroup driver", "cgroup delegation", "apparmor"} {
		if _, found := checks[c]; !found {
			t.Errorf("no %q line", c)
		}
	}
	for deadline := time.Now().Add(2 * time.Second); len(filtered()) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("threads %v carry the sync wake-up probe's filter", filtered())
			break
		}
	}
	for _, r := range rs {
		switch r.Check {
		case "kernel", "seccomp user notify", "user namespaces", "idmapped mounts", "policy files":
			if r.Verdict != OK {
				t.Errorf("%s on this machine: %+v", r.Check, r)
			}
		case "sysvisord":
			if r.Verdict != Fail {
				t.Errorf("sysvisord reachable in an empty run dir: %+v", r)
			}
		}
	}
	// Only mounts at the probed directory count: other tests and
	// engineers' containers come and go on this host meanwhile.
	at := func(info []byte) (out []string) {
		for _, l := range strings.Split(string(info), "\n") {
			if f := strings.Fields(l); len(f) > 4 && f[4] == "/var/lib" {
				out = append(out, l)
			}
		}
		return out
	}
	if after, _ := os.ReadFile("/proc/self/mountinfo"); len(at(after)) != len(at(before)) {
		t.Errorf("doctor left a mount at /var/lib: before %q after %q", at(before), at(after))
	}
}
