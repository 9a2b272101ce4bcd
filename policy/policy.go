// Package policy names what the supervisor does for a workload: which
// syscalls are trapped and what sysvisord answers for each. Policies are HCL
// files (see docs/policy.md); the built-in ones ship inside the binaries and
// a file of the same name under the policy directory overrides them.
package policy

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Selection sources, first match wins.
const (
	AnnotationKey = "io.sysvisor.policy"
	EnvKey        = "SYSVISOR_POLICY"
	DefaultName   = "default"
	// EnvDir overrides the policy directory (for tests and packaging).
	EnvDir = "SYSVISOR_POLICY_DIR"
)

// DefaultDir is where operators' policy files live; `make install` puts the
// built-in ones there. Set at build time from the Makefile's SYSCONFDIR.
var DefaultDir = "/etc/sysvisor/policies"

// Action is what sysvisord answers for a trapped syscall.
type Action string

// Actions.
const (
	Emulate Action = "emulate" // the built-in handler decides
	Allow   Action = "allow"   // CONTINUE: the kernel runs the call with its own checks
	Deny    Action = "deny"    // fail with an errno
	Log     Action = "log"     // log at info, then CONTINUE
)

var actions = []Action{Emulate, Allow, Deny, Log}

// Rule is what happens to one trapped syscall.
type Rule struct {
	Syscall string `json:"syscall"`
	Action  Action `json:"action"`
	// Errno is the error name a deny answers (EPERM when not given).
	Errno string `json:"errno,omitempty"`
	// Options of the emulation, every catalog option resolved (defaults
	// filled in). Only for emulate.
	Options map[string]bool `json:"options,omitempty"`
}

// Policy is one workload's interception choice.
type Policy struct {
	Name string `json:"name"`
	// Source is the file it was read from, or "built-in".
	Source      string `json:"source"`
	Version     int    `json:"version"`
	Description string `json:"description,omitempty"`
	// Views: whether sysvisord serves the container its /proc and /sys views.
	Views bool `json:"views"`
	// Rules, in catalog order. A syscall without a rule is not trapped.
	Rules []Rule `json:"rules"`
	// Limits is the resource guard; nil: none.
	Limits *Limits `json:"limits,omitempty"`
	// AppArmor names the AppArmor profile that takes the place of an
	// engine's default profile; empty: sysvisor-default. A profile the
	// user named is kept whatever this says (docs/apparmor.md).
	AppArmor string `json:"apparmor,omitempty"`
}

// LimitAction is what the guard does past the rate.
type LimitAction string

// Limit actions.
const (
	LimitEAGAIN LimitAction = "eagain" // the call fails with EAGAIN, no handler runs
	LimitLog    LimitAction = "log"    // counted and logged (once a second), answered as usual
)

// Limits guard sysvisord against a container that floods it: a token
// bucket per seccomp listener (init's tree, and each exec).
type Limits struct {
	// Rate is the sustained notifications per second; Burst how many may
	// come at once (default Rate).
	Rate   int         `json:"notificationsPerSecond"`
	Burst  int         `json:"burst"`
	Action LimitAction `json:"action"`
}

// Notify lists the syscalls trapped to sysvisord.
func (p *Policy) Notify() []string {
	out := make([]string, len(p.Rules))
	for i, r := range p.Rules {
		out[i] = r.Syscall
	}
	return out
}

// Rule returns the rule for a syscall.
func (p *Policy) Rule(syscall string) (Rule, bool) {
	for _, r := range p.Rules {
		if r.Syscall == syscall {
			return r, true
		}
	}
	return Rule{}, false
}

//go:embed builtin/*.hcl
var builtinFS embed.FS

// BuiltinNames lists the policies shipped inside the binary.
func BuiltinNames() []string {
	ents, _ := builtinFS.ReadDir("builtin")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".hcl"))
	}
	sort.Strings(out)
	return out
}

// Builtin returns the source of a built-in policy.
func Builtin(name string) ([]byte, bool) {
	if !ValidName(name) {
		return nil, false
	}
	b, err := builtinFS.ReadFile("builtin/" + name + ".hcl")
	return b, err == nil
}

// ValidName reports whether name can name a policy: letters, digits, '.',
// '_', '-', not starting with '.', at most 64 bytes. Names come from
// container specs and become file names, so nothing else is looked up.
func ValidName(name string) bool {
	if name == "" || len(name) > 64 || name[0] == '.' {
		return false
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Dir returns the policy directory: dir if set, else $SYSVISOR_POLICY_DIR,
// else DefaultDir.
func Dir(dir string) string {
	if dir != "" {
		return dir
	}
	if v := os.Getenv(EnvDir); v != "" {
		return v
	}
	return DefaultDir
}

// ErrUnknown is wrapped by Load's error for a name that is neither a file
// nor a built-in.
var ErrUnknown = errors.New("unknown policy")

// Load returns the named policy: <dir>/<name>.hcl if it exists, else the
// built-in of that name. A file that does not parse is an error (the
// built-in of the same name is not used in its place: the operator asked for
// the file).
func Load(name, dir string) (*Policy, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w %q: a policy name is letters, digits, '.', '_' and '-' (known: %s)", ErrUnknown, name, strings.Join(Known(dir), ", "))
	}
	path := filepath.Join(dir, name+".hcl")
	if dir != "" {
		src, err := os.ReadFile(path)
		switch {
		case err == nil:
			return Parse(name, path, src)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("policy %q: %w", name, err)
		}
	}
	if src, ok := Builtin(name); ok {
		p, err := Parse(name, "built-in:"+name+".hcl", src)
		if err != nil {
			return nil, err
		}
		p.Source = "built-in"
		return p, nil
	}
	return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknown, name, strings.Join(Known(dir), ", "))
}

// Known lists the built-in policies and the files in dir.
func Known(dir string) []string {
	seen := map[string]bool{}
	for _, n := range BuiltinNames() {
		seen[n] = true
	}
	if dir != "" {
		if ents, err := os.ReadDir(dir); err == nil {
			for _, e := range ents {
				if n, ok := strings.CutSuffix(e.Name(), ".hcl"); ok && ValidName(n) && !e.IsDir() {
					seen[n] = true
				}
			}
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Select picks the policy name for a container: annotation, then the
// container's environment, then the runtime's --policy argument, then default.
// It returns the name and where it came from.
func Select(annotations map[string]string, env []string, runtimeArg string) (name, source string) {
	if v := annotations[AnnotationKey]; v != "" {
		return v, "annotation " + AnnotationKey
	}
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, EnvKey+"="); ok && v != "" {
			return v, "env " + EnvKey
		}
	}
	if runtimeArg != "" {
		return runtimeArg, "runtime argument --policy"
	}
	return DefaultName, "default"
}
