package runtime

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	type want struct {
		global  Global
		command string
		args    []string
		id      string
		bundle  string
		detach  bool
		force   bool
		fds     int
		process string
	}
	const (
		root   = "/var/run/docker/runtime-runc/moby"
		logf   = "/run/containerd/io.containerd.runtime.v2.task/moby/4f1e/log.json"
		bundle = "/run/containerd/io.containerd.runtime.v2.task/moby/4f1e"
	)
	tests := []struct {
		name string
		argv []string
		want want
	}{
		{
			name: "containerd shim create",
			argv: []string{"--root", root, "--log", logf, "--log-format", "json", "--systemd-cgroup",
				"create", "--bundle", bundle, "--pid-file", bundle + "/init.pid", "--console-socket", "/tmp/pty1/pty.sock", "4f1e"},
			want: want{
				global: Global{Root: root, Log: logf, LogFormat: "json", SystemdCgroup: true,
					Pass: []string{"--root", root, "--log", logf, "--log-format", "json", "--systemd-cgroup=true"}},
				command: "create",
				args:    []string{"--bundle", bundle, "--pid-file", bundle + "/init.pid", "--console-socket", "/tmp/pty1/pty.sock", "4f1e"},
				id:      "4f1e", bundle: bundle,
			},
		},
		{
			name: "flag=value forms",
			argv: []string{"--root=/r", "--log=/l.json", "--log-format=text", "--debug", "create", "--bundle=/b", "--no-pivot", "c1"},
			want: want{
				global:  Global{Root: "/r", Log: "/l.json", LogFormat: "text", Debug: true, Pass: []string{"--root", "/r", "--log", "/l.json", "--log-format", "text", "--debug=true"}},
				command: "create", args: []string{"--bundle=/b", "--no-pivot", "c1"}, id: "c1", bundle: "/b",
			},
		},
		{
			name: "single-dash forms",
			argv: []string{"-root", "/r", "-log-format=json", "-debug=false", "-systemd-cgroup=true", "create", "-b", "/b", "c2"},
			want: want{
				global:  Global{Root: "/r", LogFormat: "json", SystemdCgroup: true, Pass: []string{"--root", "/r", "--log-format", "json", "--debug=false", "--systemd-cgroup=true"}},
				command: "create", args: []string{"-b", "/b", "c2"}, id: "c2", bundle: "/b",
			},
		},
		{
			name: "runc's other globals pass through",
			argv: []string{"--criu", "/usr/sbin/criu", "--rootless=auto", "state", "c3"},
			want: want{
				global:  Global{LogFormat: "text", Pass: []string{"--criu", "/usr/sbin/criu", "--rootless", "auto"}},
				command: "state", args: []string{"c3"},
			},
		},
		{
			name: "sysvisor's own flags are consumed",
			argv: []string{"--runc", "/usr/sbin/runc", "--run-dir=/tmp/rd", "--policy", "default", "--policy-dir", "/p", "--allow-unsafe", "--root", "/r", "create", "c4"},
			want: want{
				global:  Global{Root: "/r", LogFormat: "text", Runc: "/usr/sbin/runc", RunDir: "/tmp/rd", Policy: "default", PolicyDir: "/p", AllowUnsafe: true, Pass: []string{"--root", "/r"}},
				command: "create", args: []string{"c4"}, id: "c4",
			},
		},
		{
			name: "kernel fallbacks are consumed, repeated flags add up",
			argv: []string{"--kernel-fallbacks", "statmount", "--root", "/r", "-kernel-fallbacks=procfs-pidns,detached-mounts", "create", "c4b"},
			want: want{
				global:  Global{Root: "/r", LogFormat: "text", KernelFallbacks: "statmount,procfs-pidns,detached-mounts", Pass: []string{"--root", "/r"}},
				command: "create", args: []string{"c4b"}, id: "c4b",
			},
		},
		{
			name: "allow-unsafe=false",
			argv: []string{"-allow-unsafe=false", "delete", "c5"},
			want: want{global: Global{LogFormat: "text"}, command: "delete", args: []string{"c5"}, id: "c5"},
		},
		{
			name: "bundle defaults to the working directory",
			argv: []string{"create", "c6"},
			want: want{global: Global{LogFormat: "text"}, command: "create", args: []string{"c6"}, id: "c6"},
		},
		{
			name: "run detached with preserved fds",
			argv: []string{"run", "-d", "--preserve-fds", "2", "--pid-file", "/p", "-b", "/b", "c7"},
			want: want{global: Global{LogFormat: "text"}, command: "run", args: []string{"-d", "--preserve-fds", "2", "--pid-file", "/p", "-b", "/b", "c7"},
				id: "c7", bundle: "/b", detach: true, fds: 2},
		},
		{
			name: "run --detach=false, --preserve-fds=",
			argv: []string{"run", "--detach=false", "--preserve-fds=0", "--keep", "c8"},
			want: want{global: Global{LogFormat: "text"}, command: "run", args: []string{"--detach=false", "--preserve-fds=0", "--keep", "c8"}, id: "c8"},
		},
		{
			name: "preserve-fds in runc's number syntax",
			argv: []string{"run", "--preserve-fds=0x3", "--detach=true", "c9"},
			want: want{global: Global{LogFormat: "text"}, command: "run", args: []string{"--preserve-fds=0x3", "--detach=true", "c9"}, id: "c9", detach: true, fds: 3},
		},
		{
			name: "id after --",
			argv: []string{"create", "--bundle", "/b", "--", "c10"},
			want: want{global: Global{LogFormat: "text"}, command: "create", args: []string{"--bundle", "/b", "--", "c10"}, id: "c10", bundle: "/b"},
		},
		{
			name: "delete --force",
			argv: []string{"--root", "/r", "delete", "--force", "c11"},
			want: want{global: Global{Root: "/r", LogFormat: "text", Pass: []string{"--root", "/r"}}, command: "delete", args: []string{"--force", "c11"}, id: "c11", force: true},
		},
		{
			name: "delete -f=false",
			argv: []string{"delete", "-f=false", "c12"},
			want: want{global: Global{LogFormat: "text"}, command: "delete", args: []string{"-f=false", "c12"}, id: "c12"},
		},
		{
			name: "containerd shim exec",
			argv: []string{"--root", root, "--log", logf, "--log-format", "json", "exec", "--process", "/tmp/runc-process123", "--detach", "--pid-file", "/run/x.pid", "c13"},
			want: want{
				global:  Global{Root: root, Log: logf, LogFormat: "json", Pass: []string{"--root", root, "--log", logf, "--log-format", "json"}},
				command: "exec", args: []string{"--process", "/tmp/runc-process123", "--detach", "--pid-file", "/run/x.pid", "c13"},
				id: "c13", detach: true, process: "/tmp/runc-process123",
			},
		},
		{
			name: "exec: the command after the id is not parsed",
			argv: []string{"exec", "-t", "--user", "1000:1000", "-e", "A=1", "--cwd", "/tmp", "c14", "sh", "-c", "-p x", "--process", "/nope"},
			want: want{global: Global{LogFormat: "text"}, command: "exec",
				args: []string{"-t", "--user", "1000:1000", "-e", "A=1", "--cwd", "/tmp", "c14", "sh", "-c", "-p x", "--process", "/nope"}, id: "c14"},
		},
		{
			name: "exec -p=",
			argv: []string{"exec", "-p=/tmp/p.json", "c15"},
			want: want{global: Global{LogFormat: "text"}, command: "exec", args: []string{"-p=/tmp/p.json", "c15"}, id: "c15", process: "/tmp/p.json"},
		},
		{
			name: "help and version pass through",
			argv: []string{"--help", "-v"},
			want: want{global: Global{LogFormat: "text", Pass: []string{"--help", "-v"}}},
		},
		{
			name: "no arguments",
			argv: nil,
			want: want{global: Global{LogFormat: "text"}},
		},
	}
	for _, cmd := range [][]string{
		{"start", "c"},
		{"state", "c"},
		{"kill", "--all", "c", "9"},
		{"list", "--format", "json"},
		{"ps", "--format", "json", "c"},
		{"pause", "c"},
		{"resume", "c"},
		{"update", "--resources", "-", "c"},
		{"events", "--stats", "--interval", "5s", "c"},
		{"features"},
		{"spec", "--bundle", "/b", "--rootless"},
	} {
		tests = append(tests, struct {
			name string
			argv []string
			want want
		}{
			name: "passthrough " + cmd[0],
			argv: append([]string{"--log-format", "json"}, cmd...),
			want: want{global: Global{LogFormat: "json", Pass: []string{"--log-format", "json"}}, command: cmd[0], args: cmd[1:]},
		})
	}
	// kill's id is parsed: its signal may be rewritten (killArgs); start's
	// too: its processes move to their leaf cgroup first (leafOnStart).
	for i := range tests {
		if tests[i].name == "passthrough kill" || tests[i].name == "passthrough start" {
			tests[i].want.id = "c"
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			argv := slices.Clone(tc.argv)
			inv, err := Parse(tc.argv)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.argv, err)
			}
			if !slices.Equal(argv, tc.argv) {
				t.Errorf("Parse modified argv: %q", tc.argv)
			}
			g, w := inv.Global, tc.want.global
			if !slices.Equal(g.Pass, w.Pass) {
				t.Errorf("Pass %q, want %q", g.Pass, w.Pass)
			}
			g.Pass, w.Pass = nil, nil
			if !reflect.DeepEqual(g, w) {
				t.Errorf("Global %+v, want %+v", g, w)
			}
			if inv.Command != tc.want.command {
				t.Errorf("Command %q, want %q", inv.Command, tc.want.command)
			}
			if !slices.Equal(inv.Args, tc.want.args) {
				t.Errorf("Args %q, want %q", inv.Args, tc.want.args)
			}
			type fields struct {
				id, bundle, process string
				detach, force       bool
				fds                 int
			}
			got := fields{inv.ID, inv.Bundle, inv.Process, inv.Detach, inv.Force, inv.PreserveFds}
			exp := fields{tc.want.id, tc.want.bundle, tc.want.process, tc.want.detach, tc.want.force, tc.want.fds}
			if got != exp {
				t.Errorf("got %+v, want %+v", got, exp)
			}
		})
	}
}

// TestRuncArgs checks what runc is run with: its globals normalised, then the
// command and its arguments as given, without sysvisor's own flags.
func TestRuncArgs(t *testing.T) {
	inv, err := Parse([]string{"--runc", "/opt/runc", "-root=/r", "--debug", "--policy=default", "--policy-dir=/p", "--log", "/l", "create", "--bundle", "/b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	r := &runner{inv: inv}
	want := []string{"--root", "/r", "--debug=true", "--log", "/l", "create", "--bundle", "/b", "c"}
	got := r.runcArgs()
	if !slices.Equal(got, want) {
		t.Errorf("runc args %q, want %q", got, want)
	}
	got[0] = "changed"
	if inv.Global.Pass[0] != "--root" {
		t.Error("runcArgs shares memory with the parsed flags")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		argv []string
		msg  string
	}{
		{[]string{"--bogus", "create", "c"}, "flag provided but not defined: --bogus"},
		{[]string{"--bogus=1", "create", "c"}, "flag provided but not defined: --bogus"},
		{[]string{"-x", "state", "c"}, "flag provided but not defined: -x"},
		{[]string{"--root"}, "flag needs an argument: -root"},
		{[]string{"--log-format", "xml", "create", "c"}, `invalid log-format "xml"`},
		{[]string{"--log-format=", "create", "c"}, `invalid log-format ""`},
		{[]string{"--debug=yes", "create", "c"}, `invalid boolean value "yes" for -debug`},
		{[]string{"--allow-unsafe=1", "create", "c"}, `invalid boolean value "1" for -allow-unsafe`},
		{[]string{"create", "--bundle", "/b"}, "create: container id cannot be empty"},
		{[]string{"create", "--bundle"}, "create: flag needs an argument: -bundle"},
		{[]string{"run", "--pid-file"}, "run: flag needs an argument: -pid-file"},
		{[]string{"run", "--preserve-fds", "-1", "c"}, `run: invalid --preserve-fds "-1"`},
		{[]string{"run", "--preserve-fds", "two", "c"}, `run: invalid --preserve-fds "two"`},
		{[]string{"run", "--preserve-fds=3x", "c"}, `run: invalid --preserve-fds "3x"`},
		{[]string{"delete"}, "delete: container id cannot be empty"},
		{[]string{"delete", "--force"}, "delete: container id cannot be empty"},
		{[]string{"exec", "--process", "/p"}, "exec: container id cannot be empty"},
		{[]string{"exec", "--process"}, "exec: flag needs an argument: -process"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.argv, " "), func(t *testing.T) {
			inv, err := Parse(tc.argv)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tc.argv, inv)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q, want it to contain %q", err, tc.msg)
			}
		})
	}
}

func TestCommandsCoverRunc(t *testing.T) {
	for _, c := range []string{"create", "start", "run", "exec", "state", "kill", "delete", "list", "ps", "pause", "resume", "update", "events", "features", "spec"} {
		if !slices.Contains(Commands, c) {
			t.Errorf("Commands lacks %s", c)
		}
	}
}
