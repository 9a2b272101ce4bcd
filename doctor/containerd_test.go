package doctor

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestContainerdMajor(t *testing.T) {
	for in, want := range map[string]int{
		"containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n": 1,
		"containerd containerd.io v2.0.2 c507a0257ea6462fbd6f5ba4f5c74facb04021f4\n":    2,
		"containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7\n":               2,
		"":        0,
		"garbage": 0,
	} {
		if got := ContainerdMajor(in); got != want {
			t.Errorf("ContainerdMajor(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestContainerdRegistration(t *testing.T) {
	const bin = "/usr/local/bin/sysvisor-runc"
	exists := func(p string) error {
		if p == bin {
			return nil
		}
		return errNotExist
	}
	v2 := func(body string) string {
		return "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sysvisor]\n" + body
	}
	v3 := func(body string) string {
		return "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.sysvisor]\n" + body
	}
	good := "runtime_type = \"io.containerd.runc.v2\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.sysvisor.options]\nBinaryName = \"" + bin + "\"\n"
	good3 := "runtime_type = \"io.containerd.runc.v2\"\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.sysvisor.options]\nBinaryName = \"" + bin + "\"\n"
	for _, tc := range []struct {
		name    string
		file    string
		readErr error
		major   int
		verdict Verdict
		detail  string
	}{
		{"1.x form on containerd 1.x", v2(good), nil, 1, OK, "handler sysvisor (config version 2)"},
		{"2.x form on containerd 2.x", v3(good3), nil, 2, OK, "config version 3"},
		{"1.x form read by 2.x", v2(good), nil, 2, OK, "config version 2"},
		{"any name, found by BinaryName", strings.ReplaceAll(v2(good), "runtimes.sysvisor", "runtimes.sys"), nil, 1, OK, "handler sys "},
		{"2.x form on containerd 1.x", v3(good3), nil, 1, Fail, "cannot read it"},
		{"1.x section in a version 3 file", "version = 3\n" + strings.TrimPrefix(v2(good), "version = 2\n"), nil, 2, Fail, "which a version = 3 config does not read"},
		{"2.x section in a version 2 file", "version = 2\n" + strings.TrimPrefix(v3(good3), "version = 3\n"), nil, 1, Fail, "which a version = 2 config does not read"},
		{"wrong runtime type", strings.Replace(v2(good), "runc.v2", "runsc.v1", 1), nil, 1, Fail, `runtime_type "io.containerd.runsc.v1"`},
		{"no BinaryName", v2("runtime_type = \"io.containerd.runc.v2\"\n"), nil, 1, Fail, "would run plain runc"},
		{"missing binary", strings.ReplaceAll(v2(good), bin, "/nowhere/sysvisor-runc"), nil, 1, Fail, "/nowhere/sysvisor-runc"},
		{"no handler", "version = 2\n", nil, 1, Warn, "no CRI runtime handler"},
		{"no version on containerd 2.x", "[plugins.cri.containerd.runtimes.runc]\n", nil, 2, Fail, "reads versions 2 and 3 only"},
		{"broken TOML", "version = 2\n[plugins\n", nil, 1, Fail, "config.toml:3:9: expected"},
		{"no file", "", fmt.Errorf("open: %w", errNotExist), 1, Warn, "does not exist"},
		{"unreadable", "", errors.New("permission denied"), 1, Fail, "permission denied"},
	} {
		r := ContainerdRegistration("/etc/containerd/config.toml", []byte(tc.file), tc.readErr, tc.major, exists)
		if r.Verdict != tc.verdict || !strings.Contains(r.Detail, tc.detail) {
			t.Errorf("%s: %v %q (hint %q); want %v containing %q", tc.name, r.Verdict, r.Detail, r.Hint, tc.verdict, tc.detail)
		}
	}
}
