package policy

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSelect(t *testing.T) {
	const ann = "io.sysvisor.policy"
	tests := []struct {
		name        string
		annotations map[string]string
		env         []string
		arg         string
		want        string
		source      string
	}{
		{"nothing set", nil, nil, "", "default", "default"},
		{"runtime argument", nil, []string{"PATH=/bin"}, "strict", "strict", "runtime argument --policy"},
		{"env over argument", nil, []string{"PATH=/bin", "SYSVISOR_POLICY=envpol"}, "strict", "envpol", "env SYSVISOR_POLICY"},
		{"annotation over env and argument", map[string]string{ann: "annpol"}, []string{"SYSVISOR_POLICY=envpol"}, "strict", "annpol", "annotation io.sysvisor.policy"},
		{"empty annotation is unset", map[string]string{ann: ""}, []string{"SYSVISOR_POLICY=envpol"}, "", "envpol", "env SYSVISOR_POLICY"},
		{"empty env is unset", nil, []string{"SYSVISOR_POLICY="}, "strict", "strict", "runtime argument --policy"},
		{"first env entry wins", nil, []string{"SYSVISOR_POLICY=one", "SYSVISOR_POLICY=two"}, "", "one", "env SYSVISOR_POLICY"},
		{"similar variable names do not count", nil, []string{"SYSVISOR_POLICYX=x", "XSYSVISOR_POLICY=y", "SYSVISOR_POLICY"}, "", "default", "default"},
		{"value with =", nil, []string{"SYSVISOR_POLICY=a=b"}, "", "a=b", "env SYSVISOR_POLICY"},
		{"other annotations ignored", map[string]string{"io.sysvisor.other": "x", "org.opencontainers.image.ref.name": "y"}, nil, "", "default", "default"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name, source := Select(tc.annotations, tc.env, tc.arg)
			if name != tc.want || source != tc.source {
				t.Errorf("Select = %q from %q, want %q from %q", name, source, tc.want, tc.source)
			}
		})
	}
	if AnnotationKey != "io.sysvisor.policy" || EnvKey != "SYSVISOR_POLICY" || DefaultName != "default" {
		t.Error("selection keys changed: engines and users set these")
	}
}

func TestBuiltins(t *testing.T) {
	want := []string{"default", "dind", "strict", "systemd"}
	if got := BuiltinNames(); !slices.Equal(got, want) {
		t.Fatalf("BuiltinNames() = %v, want %v", got, want)
	}
	for _, n := range want {
		p, err := Load(n, "")
		if err != nil {
			t.Fatalf("built-in %s: %v", n, err)
		}
		if p.Name != n || p.Source != "built-in" || p.Version != 1 || p.Description == "" || !p.Views {
			t.Errorf("built-in %s: %+v", n, p)
		}
	}
	def, _ := Load("default", "")
	// Today's behaviour: sysinfo, the whole mount family and device nodes emulated.
	if got := def.Notify(); !slices.Equal(got, []string{"sysinfo", "mount", "umount2", "fsopen", "fspick", "open_tree", "move_mount", "mount_setattr", "mknod", "mknodat", "seccomp"}) {
		t.Errorf("default traps %v", got)
	}
	for _, r := range def.Rules {
		if r.Action != Emulate {
			t.Errorf("default: %+v", r)
		}
	}
	if r, _ := def.Rule("mount"); !r.Options["procfs"] || !r.Options["sysfs"] {
		t.Errorf("default mount options %v", r.Options)
	}
	for _, n := range []string{"dind", "systemd"} {
		p, _ := Load(n, "")
		if !reflectEqualRules(p.Rules, def.Rules) {
			t.Errorf("%s differs from default: documented as the same for now", n)
		}
	}
	strict, _ := Load("strict", "")
	for _, r := range strict.Rules {
		want := Deny
		if r.Syscall == "sysinfo" {
			want = Emulate
		}
		if r.Action != want || (want == Deny && r.Errno != "EPERM") {
			t.Errorf("strict: %+v", r)
		}
	}
	if len(strict.Rules) != 8 {
		t.Errorf("strict traps %v", strict.Notify())
	}
}

func reflectEqualRules(a, b []Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Syscall != b[i].Syscall || a[i].Action != b[i].Action || a[i].Errno != b[i].Errno || !maps.Equal(a[i].Options, b[i].Options) {
			return false
		}
	}
	return true
}

const mountFamily = `
syscall "umount2" { action = "emulate" }
syscall "fsopen" { action = "emulate" }
syscall "fspick" { action = "emulate" }
syscall "open_tree" { action = "emulate" }
syscall "move_mount" { action = "emulate" }
syscall "mount_setattr" { action = "emulate" }
`

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		src  string
		// want: problems as "line:col summary-substring", in order
		want  []string
		check func(*testing.T, *Policy)
	}{
		{name: "minimal", src: "version = 1\nsyscall \"sysinfo\" { action = \"emulate\" }\n", check: func(t *testing.T, p *Policy) {
			if len(p.Rules) != 1 || !p.Views || p.Version != 1 || p.Description != "" {
				t.Errorf("%+v", p)
			}
		}},
		{name: "comments of every kind", src: "# hash\n// slashes\n/* block */ version = 1 # trailing\nsyscall \"sysinfo\" { action = \"emulate\" }\n"},
		{name: "deny defaults to EPERM", src: "version = 1\nsyscall \"sysinfo\" {\n  action = \"deny\"\n}\n", check: func(t *testing.T, p *Policy) {
			if r, _ := p.Rule("sysinfo"); r.Action != Deny || r.Errno != "EPERM" {
				t.Errorf("%+v", r)
			}
		}},
		{name: "deny with errno", src: "version = 1\nsyscall \"sysinfo\" {\n  action = \"deny\"\n  errno = \"ENOSYS\"\n}\n", check: func(t *testing.T, p *Policy) {
			if r, _ := p.Rule("sysinfo"); r.Errno != "ENOSYS" {
				t.Errorf("%+v", r)
			}
		}},
		{name: "allow and log", src: "version = 1\nsyscall \"mount\" { action = \"log\" }\nsyscall \"umount2\" { action = \"allow\" }\n", check: func(t *testing.T, p *Policy) {
			if got := p.Notify(); !slices.Equal(got, []string{"mount", "umount2"}) {
				t.Errorf("Notify() = %v", got)
			}
		}},
		{name: "emulate fills option defaults", src: "version = 1\nsyscall \"mount\" {\n  action = \"emulate\"\n  sysfs = false\n}\n" + mountFamily, check: func(t *testing.T, p *Policy) {
			if r, _ := p.Rule("mount"); !maps.Equal(r.Options, map[string]bool{"procfs": true, "sysfs": false, "stubs": true}) {
				t.Errorf("options %v", r.Options)
			}
		}},
		{name: "views off", src: "version = 1\nviews = false\nsyscall \"sysinfo\" { action = \"emulate\" }\n", check: func(t *testing.T, p *Policy) {
			if p.Views {
				t.Error("views on")
			}
		}},
		{name: "rules in catalog order", src: "version = 1\nsyscall \"umount2\" { action = \"deny\" }\nsyscall \"sysinfo\" { action = \"allow\" }\n", check: func(t *testing.T, p *Policy) {
			if got := p.Notify(); !slices.Equal(got, []string{"sysinfo", "umount2"}) {
				t.Errorf("Notify() = %v", got)
			}
		}},

		{name: "limits", src: "version = 1\nsyscall \"sysinfo\" { action = \"emulate\" }\nlimits {\n  notifications_per_second = 500\n}\n", check: func(t *testing.T, p *Policy) {
			if p.Limits == nil || *p.Limits != (Limits{Rate: 500, Burst: 500, Action: LimitEAGAIN}) {
				t.Errorf("limits %+v", p.Limits)
			}
		}},
		{name: "limits log", src: "version = 1\nsyscall \"sysinfo\" { action = \"emulate\" }\nlimits {\n  notifications_per_second = 10\n  burst = 100\n  action = \"log\"\n}\n", check: func(t *testing.T, p *Policy) {
			if p.Limits == nil || *p.Limits != (Limits{Rate: 10, Burst: 100, Action: LimitLog}) {
				t.Errorf("limits %+v", p.Limits)
			}
		}},
		{name: "no limits", src: "version = 1\nsyscall \"sysinfo\" { action = \"emulate\" }\n", check: func(t *testing.T, p *Policy) {
			if p.Limits != nil {
				t.Errorf("limits %+v", p.Limits)
			}
		}},
		{name: "limits bad action", src: "version = 1\nsyscall \"sysinfo\" { action = \"emulate\" }\nlimits {\n  notifications_per_second = 10\n  action = \"eagian\"\n}\n", want: []string{`5:12 unknown limits action "eagian"`}},
		{name: "limits zero rate", src: "version = 1\nsyscall \"sysinfo\" { action = \"emulate\" }\nlimits {\n  notifications_per_second = 0\n}\n", want: []string{`4:30 notifications_per_second 0 is out of range`}},
		{name: "limits without rate", src: "version = 1\nsyscall \"sysinfo\" { action = \"emulate\" }\nlimits {\n  burst = 5\n}\n", want: []string{`3:8 Missing required argument`}},
		{name: "limits twice", src: "version = 1\nsyscall \"sysinfo\" { action = \"emulate\" }\nlimits {\n  notifications_per_second = 1\n}\nlimits {\n  notifications_per_second = 2\n}\n", want: []string{`6:1 duplicate limits block`}},

		{name: "apparmor profile", src: "version = 1\napparmor = \"site-sysctr\"\nsyscall \"sysinfo\" { action = \"emulate\" }\n", check: func(t *testing.T, p *Policy) {
			if p.AppArmor != "site-sysctr" {
				t.Errorf("apparmor %q", p.AppArmor)
			}
		}},
		{name: "apparmor unset", src: "version = 1\nsyscall \"sysinfo\" { action = \"emulate\" }\n", check: func(t *testing.T, p *Policy) {
			if p.AppArmor != "" {
				t.Errorf("apparmor %q", p.AppArmor)
			}
		}},
		{name: "apparmor with a blank", src: "version = 1\napparmor = \"my profile\"\nsyscall \"sysinfo\" { action = \"emulate\" }\n", want: []string{`2:12 invalid AppArmor profile name "my profile"`}},
		{name: "apparmor empty", src: "version = 1\napparmor = \"\"\nsyscall \"sysinfo\" { action = \"emulate\" }\n", want: []string{`2:12 invalid AppArmor profile name ""`}},
		{name: "apparmor namespace", src: "version = 1\napparmor = \":host:unconfined\"\nsyscall \"sysinfo\" { action = \"emulate\" }\n", want: []string{`2:12 invalid AppArmor profile name`}},
		{name: "apparmor not a string", src: "version = 1\napparmor = true\nsyscall \"sysinfo\" { action = \"emulate\" }\n", want: []string{`2:12 apparmor must be a string`}},
		{name: "apparmor as a block", src: "version = 1\napparmor {\n}\nsyscall \"sysinfo\" { action = \"emulate\" }\n", want: []string{`2:1 Unsupported block type`}},

		{name: "typo in key", src: "version = 1\nsyscall \"sysinfo\" {\n  actoin = \"emulate\"\n}\n",
			want: []string{"2:19 Missing required argument", `3:3 Unsupported argument`}},
		{name: "typo in top-level key", src: "verison = 1\n", want: []string{"1:1 Missing required argument", "1:1 Unsupported argument"}},
		{name: "missing version", src: "syscall \"sysinfo\" { action = \"allow\" }\n", want: []string{"1:1 Missing required argument"}},
		{name: "traps nothing", src: "# empty\nversion = 1\n", want: []string{"1:1 the policy traps no syscall"}},
		{name: "wrong version", src: "version = 2\n", want: []string{"1:11 unsupported version 2"}},
		{name: "fractional version", src: "version = 1.5\nsyscall \"sysinfo\" { action = \"emulate\" }\n", want: []string{"1:11 version must be a whole number"}},
		{name: "version as string", src: "version = \"1\"\nsyscall \"sysinfo\" { action = \"emulate\" }\n", want: []string{"1:11 version must be a whole number"}},
		{name: "unknown syscall", src: "version = 1\nsyscall \"mout\" { action = \"deny\" }\n", want: []string{`2:9 unknown syscall "mout"`}},
		{name: "unknown action", src: "version = 1\nsyscall \"sysinfo\" { action = \"emulte\" }\n", want: []string{`2:30 unknown action "emulte"`}},
		{name: "unknown errno", src: "version = 1\nsyscall \"sysinfo\" {\n  action = \"deny\"\n  errno = \"EPREM\"\n}\n", want: []string{`4:11 unknown errno "EPREM"`}},
		{name: "errno without deny", src: "version = 1\nsyscall \"sysinfo\" {\n  action = \"allow\"\n  errno = \"EPERM\"\n}\n", want: []string{`4:3 errno is only for action "deny"`}},
		{name: "option without emulate", src: "version = 1\nsyscall \"mount\" {\n  action = \"allow\"\n  procfs = false\n}\n", want: []string{`4:3 option "procfs" is only for action "emulate"`}},
		{name: "option of another syscall", src: "version = 1\nsyscall \"sysinfo\" {\n  action = \"emulate\"\n  procfs = false\n}\n", want: []string{`4:3 Unsupported argument`}},
		{name: "option not bool", src: "version = 1\nsyscall \"mount\" {\n  action = \"emulate\"\n  procfs = \"no\"\n}\n" + mountFamily, want: []string{`4:12 procfs must be true or false`}},
		{name: "duplicate syscall", src: "version = 1\nsyscall \"sysinfo\" { action = \"allow\" }\nsyscall \"sysinfo\" { action = \"deny\" }\n", want: []string{`3:1 duplicate syscall "sysinfo"`}},
		{name: "incomplete mount family", src: "version = 1\nsyscall \"mount\" { action = \"emulate\" }\nsyscall \"umount2\" { action = \"allow\" }\n",
			want: []string{`2:1 syscall "mount" is emulated but "umount2" is allowed`, `2:1 syscall "mount" is emulated but "fsopen" is not trapped`, "2:1", "2:1", "2:1", "2:1"}},
		{name: "reserved block", src: "version = 1\nsysctl {\n}\nsyscall \"sysinfo\" { action = \"emulate\" }\n", want: []string{`2:1 block "sysctl" is reserved`}},
		{name: "reserved mount option", src: "version = 1\nsyscall \"mount\" {\n  action = \"emulate\"\n  fstypes = [\"tmpfs\"]\n}\n" + mountFamily, want: []string{`4:3 mount option "fstypes" is reserved`}},
		{name: "variables are not allowed", src: "version = 1\ndescription = var.x\nsyscall \"sysinfo\" { action = \"emulate\" }\n", want: []string{"2:15 Variables not allowed"}},
		{name: "function calls are not allowed", src: "version = 1\ndescription = upper(\"x\")\nsyscall \"sysinfo\" { action = \"emulate\" }\n", want: []string{"2:15 Function calls not allowed"}},
		{name: "syntax error", src: "version = 1\nsyscall \"sysinfo\" {\n", want: []string{"2:19 Unclosed configuration block"}},
		{name: "syscall without label", src: "version = 1\nsyscall {\n  action = \"allow\"\n}\n", want: []string{"2:9 Missing name for syscall"}},
		{name: "every error reported", src: "version = 3\nsyscall \"a\" { action = \"allow\" }\nsyscall \"sysinfo\" { action = \"x\" }\n",
			want: []string{"1:11 unsupported version", `2:9 unknown syscall "a"`, `3:30 unknown action "x"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("t", "dir/t.hcl", []byte(tc.src))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if tc.check != nil {
					tc.check(t, p)
				}
				return
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse = %+v, %v; want problems %v", p, err, tc.want)
			}
			if len(pe.Problems) != len(tc.want) {
				t.Fatalf("problems %v, want %v", pe.Problems, tc.want)
			}
			for i, w := range tc.want {
				pos, sum, _ := strings.Cut(w, " ")
				pr := pe.Problems[i]
				if pr.File != "dir/t.hcl" || fmt.Sprintf("%d:%d", pr.Line, pr.Column) != pos || !strings.Contains(pr.Summary, sum) {
					t.Errorf("problem %d: %s, want %s", i, pr, w)
				}
			}
			if !strings.Contains(err.Error(), `policy "t"`) || !strings.Contains(err.Error(), "dir/t.hcl:") {
				t.Errorf("error %q names neither policy nor file", err)
			}
		})
	}
}

// Problems carry hints: a typo gets a suggestion.
func TestParseHints(t *testing.T) {
	for src, hint := range map[string]string{
		"version = 1\nsyscall \"sysinfo\" { actoin = \"allow\" }\n":                     `Did you mean "action"?`,
		"version = 1\nsyscall \"sysinf\" { action = \"allow\" }\n":                      `did you mean "sysinfo"?`,
		"version = 1\nsyscall \"sysinfo\" { action = \"alow\" }\n":                      `did you mean "allow"?`,
		"version = 1\nsyscall \"sysinfo\" {\naction = \"deny\"\nerrno = \"EPREM\"\n}\n": `"EPERM"`,
	} {
		_, err := Parse("t", "t.hcl", []byte(src))
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("%q: %v", src, err)
		}
		found := false
		for _, p := range pe.Problems {
			found = found || strings.Contains(p.Hint, hint)
		}
		if !found {
			t.Errorf("%q: no hint %q in %v", src, hint, pe.Problems)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("default.hcl", "version = 1\ndescription = \"site default\"\nsyscall \"sysinfo\" { action = \"emulate\" }\n")
	write("mine.hcl", "version = 1\nsyscall \"sysinfo\" { action = \"log\" }\n")
	write("broken.hcl", "version = 1\nsyscall \"sysinfo\" {\n  actoin = \"log\"\n}\n")
	write("strict.hcl.bak", "garbage")

	p, err := Load("default", dir)
	if err != nil || p.Description != "site default" || p.Source != filepath.Join(dir, "default.hcl") {
		t.Errorf("a file overrides the built-in: %+v, %v", p, err)
	}
	if p, err := Load("strict", dir); err != nil || p.Source != "built-in" {
		t.Errorf("built-in without a file: %+v, %v", p, err)
	}
	if p, err := Load("mine", dir); err != nil || p.Rules[0].Action != Log {
		t.Errorf("file-only policy: %+v, %v", p, err)
	}
	_, err = Load("broken", dir)
	var pe *ParseError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), filepath.Join(dir, "broken.hcl")+":3:3") || !strings.Contains(err.Error(), `policy "broken"`) {
		t.Errorf("broken file: %v", err)
	}
	for _, name := range []string{"nope", "", "Default", " default", "../default", "a/b", ".hidden", strings.Repeat("x", 65), "strict.hcl"} {
		_, err := Load(name, dir)
		if !errors.Is(err, ErrUnknown) {
			t.Errorf("Load(%q): %v, want unknown", name, err)
			continue
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) || !strings.Contains(err.Error(), "known: broken, default, dind, mine, strict, systemd") {
			t.Errorf("Load(%q): %q should name the policy and list the known ones", name, err)
		}
	}
	// The directory may be missing: built-ins still work.
	if _, err := Load("dind", filepath.Join(dir, "missing")); err != nil {
		t.Errorf("missing dir: %v", err)
	}
}

func TestDir(t *testing.T) {
	t.Setenv(EnvDir, "")
	if Dir("") != DefaultDir || DefaultDir != "/etc/sysvisor/policies" {
		t.Errorf("Dir() = %q", Dir(""))
	}
	t.Setenv(EnvDir, "/env")
	if Dir("") != "/env" || Dir("/flag") != "/flag" {
		t.Errorf("Dir: env %q, flag %q", Dir(""), Dir("/flag"))
	}
}

func TestExplain(t *testing.T) {
	for name, wants := range map[string][]string{
		"strict":  {"cannot", "mount anything: every mount(2) fails with EPERM", "unmount anything"},
		"default": {"mount procfs for nested pid namespaces", "unmount, move, or make writable"},
	} {
		p, _ := Load(name, "")
		out := Explain(p)
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("Explain(%s) lacks %q:\n%s", name, w, out)
			}
		}
	}
	p, err := Parse("x", "x.hcl", []byte("version = 1\nviews = false\nsyscall \"mount\" { action = \"log\" }\nlimits {\n  notifications_per_second = 50\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	out := Explain(p)
	for _, w := range []string{"logged by sysvisord", "mount procfs and sysfs as far as the kernel allows, without the container's masks", "unmount the runtime's mounts", "reads the host's (views = false)", "sysinfo        not trapped",
		"make more than 50 trapped calls a second (bursts of 50) per process tree (init's, and each exec's): the excess fails with EAGAIN"} {
		if !strings.Contains(out, w) {
			t.Errorf("Explain lacks %q:\n%s", w, out)
		}
	}
}
