package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestRewriteAddsDelegateHook(t *testing.T) {
	s := dockerSpec(t)
	o := testOptions()
	o.Self = "/usr/local/bin/sysvisor-runc"
	if err := Rewrite(s, o); err != nil {
		t.Fatal(err)
	}
	if s.Hooks == nil || len(s.Hooks.CreateRuntime) != 1 {
		t.Fatalf("createRuntime hooks: %+v", s.Hooks)
	}
	h := s.Hooks.CreateRuntime[0]
	if h.Path != o.Self || !slices.Equal(h.Args, []string{"sysvisor-runc", "hook", hookDelegate}) {
		t.Errorf("hook %+v", h)
	}
	// For `run` the hook moves the processes into the leaf itself.
	s = dockerSpec(t)
	o.LeafInHook = true
	if err := Rewrite(s, o); err != nil {
		t.Fatal(err)
	}
	if h := s.Hooks.CreateRuntime[0]; !slices.Equal(h.Args, []string{"sysvisor-runc", "hook", hookDelegate, hookLeaf}) {
		t.Errorf("run's hook %+v", h)
	}
	o.LeafInHook = false
	// The engine's own hooks stay, in their place.
	s = dockerSpec(t)
	s.Hooks = &specs.Hooks{Poststop: []specs.Hook{{Path: "/proc/1/exe", Args: []string{"cleanup"}}},
		CreateRuntime: []specs.Hook{{Path: "/engine"}}}
	if err := Rewrite(s, o); err != nil {
		t.Fatal(err)
	}
	if len(s.Hooks.Poststop) != 1 || len(s.Hooks.CreateRuntime) != 2 || s.Hooks.CreateRuntime[0].Path != "/engine" {
		t.Errorf("engine hooks changed: %+v", s.Hooks)
	}
}

func TestRewriteSystemd(t *testing.T) {
	s := dockerSpec(t)
	o := testOptions()
	o.Systemd = true
	if err := Rewrite(s, o); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(s.Process.Env, "container=sysvisor") {
		t.Errorf("env %q lacks container=", s.Process.Env)
	}
	assertFreshRun(t, s)
	// An engine image boots fresh too, without container=.
	s = dockerSpec(t)
	o.Systemd, o.Engine = false, true
	if err := Rewrite(s, o); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(s.Process.Env, func(e string) bool { return strings.HasPrefix(e, "container=") }) {
		t.Error("container= set for an engine image")
	}
	assertFreshRun(t, s)
}

func assertFreshRun(t *testing.T, s *specs.Spec) {
	t.Helper()
	for _, d := range []string{"/run", "/run/lock"} {
		if !slices.ContainsFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == d && m.Type == "tmpfs" }) {
			t.Errorf("no tmpfs on %s", d)
		}
	}
}

func TestRewriteSystemdKeepsUserSettings(t *testing.T) {
	o := testOptions()
	o.Systemd = true
	// What the user set stays.
	s := dockerSpec(t)
	s.Process.Env = append(s.Process.Env, "container=docker")
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/run", Type: "bind", Source: "/somewhere"})
	if err := Rewrite(s, o); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(s.Process.Env, "container=sysvisor") {
		t.Error("container= overridden")
	}
	n := 0
	for _, m := range s.Mounts {
		if m.Destination == "/run" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d mounts on /run, want the user's only", n)
	}
}

func TestInitIsSystemd(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"lib/systemd", "sbin", "bin", "usr/bin"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "lib/systemd/systemd"), nil, 0o755)
	os.WriteFile(filepath.Join(root, "bin/sh"), nil, 0o755)
	os.Symlink("/lib/systemd/systemd", filepath.Join(root, "sbin/init"))
	// A relative link that tries to climb out of the rootfs stops at it.
	os.Symlink("../../../../../lib/systemd/systemd", filepath.Join(root, "usr/bin/init2"))
	os.Symlink("loop", filepath.Join(root, "bin/loop"))
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"/sbin/init"}, true},
		{[]string{"init"}, true},
		{[]string{"/lib/systemd/systemd", "--log-level=debug"}, true},
		{[]string{"/usr/bin/init2"}, true},
		{[]string{"/bin/sh"}, false},
		{[]string{"/bin/loop"}, false},
		{[]string{"/nonexistent"}, false},
		{nil, false},
	} {
		s := &specs.Spec{Process: &specs.Process{Args: tc.args}}
		if got := initIsSystemd(s, root); got != tc.want {
			t.Errorf("%q: got %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestKillArgs(t *testing.T) {
	dir := t.TempDir()
	plain := t.TempDir()
	if err := recordInit(dir, true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir  string
		args []string
		want []string
	}{
		{dir, []string{"c", "15"}, []string{"c", systemdStop}},
		{dir, []string{"c", "SIGTERM"}, []string{"c", systemdStop}},
		{dir, []string{"c", "term"}, []string{"c", systemdStop}},
		{dir, []string{"c"}, []string{"c", systemdStop}},
		{dir, []string{"c", "9"}, []string{"c", "9"}},
		{dir, []string{"c", "KILL"}, []string{"c", "KILL"}},
		{dir, []string{"--all", "c", "15"}, []string{"--all", "c", "15"}},
		{plain, []string{"c", "15"}, []string{"c", "15"}},
		{plain, []string{"c"}, []string{"c"}},
	} {
		if got := killArgs(tc.args, "c", tc.dir); !slices.Equal(got, tc.want) {
			t.Errorf("%q in %s: got %q, want %q", tc.args, filepath.Base(tc.dir), got, tc.want)
		}
	}
}

func TestRunsEngine(t *testing.T) {
	root := t.TempDir()
	if runsEngine(root) {
		t.Error("empty rootfs runs an engine")
	}
	os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755)
	os.WriteFile(filepath.Join(root, "usr/sbin/dockerd"), nil, 0o755)
	if !runsEngine(root) {
		t.Error("rootfs with usr/sbin/dockerd")
	}
}

func TestHookRejectsBadState(t *testing.T) {
	for _, in := range []string{"", "{", `{"pid": 0, "annotations": {"io.sysvisor.id-base": "100000"}}`,
		`{"pid": 1, "annotations": {}}`} {
		err := runHook([]string{hookDelegate}, strings.NewReader(in))
		if err == nil || !strings.Contains(err.Error(), hookDelegate) {
			t.Errorf("state %q: %v", in, err)
		}
	}
	for _, args := range [][]string{{"other"}, {hookDelegate, "now"}, {hookDelegate, hookLeaf, hookLeaf}, nil} {
		if err := runHook(args, strings.NewReader("{}")); err == nil || !strings.Contains(err.Error(), "unknown hook") {
			t.Errorf("hook %q: %v", args, err)
		}
	}
}

func TestLeafOnStartLeavesOthersAlone(t *testing.T) {
	root := t.TempDir()
	// No such container: left to runc start, which says so.
	if err := leafOnStart(root, "nope", false); err != nil {
		t.Errorf("missing state: %v", err)
	}
	// A broken state: an error naming it.
	os.MkdirAll(filepath.Join(root, "bad"), 0o700)
	os.WriteFile(filepath.Join(root, "bad", "state.json"), []byte(`{`), 0o600)
	if err := leafOnStart(root, "bad", false); err == nil || !strings.Contains(err.Error(), "runc state of bad") {
		t.Errorf("broken state: %v", err)
	}
	// A pid whose start time is not the one runc recorded (init gone, the
	// pid reused): nothing is moved, runc start reports the dead init.
	os.MkdirAll(filepath.Join(root, "c1"), 0o700)
	os.WriteFile(filepath.Join(root, "c1", "state.json"), []byte(`{"init_process_pid": 1, "init_process_start": 1}`), 0o600)
	if err := leafOnStart(root, "c1", true); err != nil {
		t.Errorf("reused pid: %v", err)
	}
	// This test process, recorded as init: it is in the host's user
	// namespace, so it is not a system container's init and is refused
	// rather than moved (on a v2-only host; elsewhere nothing happens).
	start, err := procStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "c1", "state.json"), []byte(fmt.Sprintf(`{"init_process_pid": %d, "init_process_start": %d}`, os.Getpid(), start)), 0o600)
	if err := leafOnStart(root, "c1", false); err != nil && !strings.Contains(err.Error(), "not a system container's") {
		t.Errorf("host process: %v", err)
	}
	if _, err := idBase(os.Getpid()); err == nil {
		t.Error("the host's user namespace has an ID base")
	}
}
