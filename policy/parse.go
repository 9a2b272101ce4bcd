package policy

import (
	"fmt"
	"math/big"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/apparmor"
	"github.com/sysvisor/sysvisor/handlers/catalog"
)

// Version is the policy format version this build reads.
const Version = 1

// maxSize bounds a policy file: they are a few dozen lines.
const maxSize = 1 << 20

// Problem is one error in a policy file.
type Problem struct {
	File   string `json:"file"`
	Line   int    `json:"line"`
	Column int    `json:"column"`
	// Summary says what is wrong, Hint how to fix it.
	Summary string `json:"summary"`
	Hint    string `json:"hint,omitempty"`
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Column, p.Summary)
	if p.Hint != "" {
		s += " (" + p.Hint + ")"
	}
	return s
}

// ParseError lists every problem found in a policy file.
type ParseError struct {
	Policy   string
	Problems []Problem
}

func (e *ParseError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return fmt.Sprintf("policy %q is invalid: %s", e.Policy, strings.Join(lines, "; "))
}

// reserved names are part of the format's plan (issue 5) but not honoured
// by this build; accepting them silently would promise what the code does
// not do.
var (
	reservedBlocks = map[string]string{
		"sysctl":  "per-container sysctls are not implemented yet",
		"devices": "the mknod/device allowlist is not implemented yet",
	}
	reservedMountOptions = map[string]string{
		"fstypes":    "an allowlist of filesystem types is not implemented yet",
		"targets":    "an allowlist of mount targets is not implemented yet",
		"immutable":  "the protected-mount strictness is fixed in this build",
		"read_only":  "forcing read-only mounts is not implemented yet",
		"propagate":  "propagation rules are not implemented yet",
		"allow_bind": "bind-mount rules are not implemented yet",
	}
)

// Parse reads a policy from src; file names it in problems.
func Parse(name, file string, src []byte) (*Policy, error) {
	perr := &ParseError{Policy: name}
	var diags hcl.Diagnostics
	if len(src) > maxSize {
		perr.Problems = []Problem{{File: file, Line: 1, Column: 1, Summary: fmt.Sprintf("file is larger than %d bytes", maxSize)}}
		return nil, perr
	}
	p := &Policy{Name: name, Source: file, Views: true}
	f, d := hclsyntax.ParseConfig(src, file, hcl.InitialPos)
	diags = append(diags, d...)
	if f != nil && !d.HasErrors() {
		diags = append(diags, decode(p, f.Body)...)
	}
	for _, dg := range diags {
		if dg.Severity != hcl.DiagError {
			continue
		}
		pr := Problem{File: file, Line: 1, Column: 1, Summary: dg.Summary, Hint: dg.Detail}
		if dg.Subject != nil {
			pr.Line, pr.Column = dg.Subject.Start.Line, dg.Subject.Start.Column
		}
		perr.Problems = append(perr.Problems, pr)
	}
	if len(perr.Problems) > 0 {
		sort.SliceStable(perr.Problems, func(i, j int) bool {
			a, b := perr.Problems[i], perr.Problems[j]
			return a.Line < b.Line || a.Line == b.Line && a.Column < b.Column
		})
		return nil, perr
	}
	return p, nil
}

func decode(p *Policy, body hcl.Body) hcl.Diagnostics {
	schema := &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "version", Required: true}, {Name: "description"}, {Name: "views"}, {Name: "apparmor"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "syscall", LabelNames: []string{"name"}}, {Type: "limits"}},
	}
	for b := range reservedBlocks {
		schema.Blocks = append(schema.Blocks, hcl.BlockHeaderSchema{Type: b})
	}
	content, diags := body.Content(schema)
	if a := content.Attributes["version"]; a != nil {
		v, d := number(a)
		diags = append(diags, d...)
		if !d.HasErrors() {
			if v != Version {
				diags = append(diags, errAt(a.Expr.Range(), fmt.Sprintf("unsupported version %d", v),
					fmt.Sprintf("this build reads version = %d", Version)))
			}
			p.Version = v
		}
	}
	if a := content.Attributes["description"]; a != nil {
		s, d := str(a)
		diags = append(diags, d...)
		p.Description = s
	}
	if a := content.Attributes["views"]; a != nil {
		v, d := boolean(a)
		diags = append(diags, d...)
		p.Views = v
	}
	if a := content.Attributes["apparmor"]; a != nil {
		s, d := str(a)
		diags = append(diags, d...)
		if !d.HasErrors() && !apparmor.ValidName(s) {
			diags = append(diags, errAt(a.Expr.Range(), fmt.Sprintf("invalid AppArmor profile name %q", s),
				"a loaded profile's name: letters, digits, '.', '_', '-', '+', '/' (at most 255 bytes), e.g. \"sysvisor-default\"; leave the key out for sysvisor's own"))
		}
		p.AppArmor = s
	}
	seen := map[string]*hcl.Block{}
	rules := map[string]Rule{}
	where := map[string]hcl.Range{}
	for _, b := range content.Blocks {
		if why, ok := reservedBlocks[b.Type]; ok {
			diags = append(diags, errAt(b.DefRange, fmt.Sprintf("block %q is reserved", b.Type), why+"; see docs/policy.md"))
			continue
		}
		if b.Type == "limits" {
			if p.Limits != nil {
				diags = append(diags, errAt(b.DefRange, "duplicate limits block", "merge the two blocks"))
				continue
			}
			l, d := decodeLimits(b.Body)
			diags = append(diags, d...)
			p.Limits = l
			continue
		}
		sc := b.Labels[0]
		if prev, dup := seen[sc]; dup {
			diags = append(diags, errAt(b.DefRange, fmt.Sprintf("duplicate syscall %q", sc),
				fmt.Sprintf("already given at line %d; merge the two blocks", prev.DefRange.Start.Line)))
			continue
		}
		seen[sc] = b
		entry, ok := catalog.Lookup(sc)
		if !ok {
			diags = append(diags, errAt(b.LabelRanges[0], fmt.Sprintf("unknown syscall %q", sc), unknownSyscallHint(sc)))
			continue
		}
		r, d := decodeRule(entry, b.Body)
		diags = append(diags, d...)
		if !d.HasErrors() {
			rules[sc] = r
			where[sc] = b.DefRange
		}
	}
	if diags.HasErrors() {
		return diags
	}
	// A family whose emulation protects something must be trapped whole.
	reported := map[string]bool{}
	for _, s := range catalog.Syscalls {
		r, ok := rules[s.Name]
		if !ok || r.Action != Emulate {
			continue
		}
		for _, sib := range catalog.Syscalls {
			if sib.Knob != s.Knob {
				continue
			}
			if sr, ok := rules[sib.Name]; !reported[sib.Name] && (!ok || (sr.Action != Emulate && sr.Action != Deny)) {
				reported[sib.Name] = true
				how := "is not trapped"
				if ok {
					how = "is " + string(sr.Action) + "ed"
				}
				diags = append(diags, errAt(where[s.Name], fmt.Sprintf("syscall %q is emulated but %q %s", s.Name, sib.Name, how),
					fmt.Sprintf("syscalls of %s guard one another: give %q action \"emulate\" or \"deny\", or do not emulate %q", s.Knob, sib.Name, s.Name)))
			}
		}
	}
	for _, s := range catalog.Syscalls {
		if r, ok := rules[s.Name]; ok {
			p.Rules = append(p.Rules, r)
		}
	}
	if len(p.Rules) == 0 && !diags.HasErrors() {
		// Without a trapped syscall runc gets no seccomp listener, and
		// the listener's handoff is how sysvisord learns the container's
		// init, cgroups and mounts (views, sysinfo, the protected set).
		rng := hcl.Range{Filename: body.MissingItemRange().Filename, Start: hcl.InitialPos, End: hcl.InitialPos}
		diags = append(diags, errAt(rng, "the policy traps no syscall",
			`sysvisord learns of a container through its seccomp listener, which exists only when a syscall is trapped; add at least syscall "sysinfo" { action = "emulate" }`))
	}
	return diags
}

// maxRate bounds notifications_per_second: far above what one listener can
// answer (~100k/s), so any larger value would be a typo.
const maxRate = 1_000_000

func decodeLimits(body hcl.Body) (*Limits, hcl.Diagnostics) {
	schema := &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "notifications_per_second", Required: true}, {Name: "burst"}, {Name: "action"}}}
	content, diags := body.Content(schema)
	l := &Limits{Action: LimitEAGAIN}
	if a := content.Attributes["notifications_per_second"]; a != nil {
		v, d := number(a)
		diags = append(diags, d...)
		if !d.HasErrors() && (v < 1 || v > maxRate) {
			diags = append(diags, errAt(a.Expr.Range(), fmt.Sprintf("notifications_per_second %d is out of range", v), fmt.Sprintf("1 to %d", maxRate)))
		}
		l.Rate = v
	}
	l.Burst = l.Rate
	if a := content.Attributes["burst"]; a != nil {
		v, d := number(a)
		diags = append(diags, d...)
		if !d.HasErrors() && (v < 1 || v > maxRate) {
			diags = append(diags, errAt(a.Expr.Range(), fmt.Sprintf("burst %d is out of range", v), fmt.Sprintf("1 to %d notifications", maxRate)))
		}
		l.Burst = v
	}
	if a := content.Attributes["action"]; a != nil {
		s, d := str(a)
		diags = append(diags, d...)
		switch LimitAction(s) {
		case LimitEAGAIN, LimitLog:
			l.Action = LimitAction(s)
		default:
			if !d.HasErrors() {
				diags = append(diags, errAt(a.Expr.Range(), fmt.Sprintf("unknown limits action %q", s), `"eagain" (refuse the call) or "log" (log, then answer as usual)`+suggest(s, []string{"eagain", "log"})))
			}
		}
	}
	return l, diags
}

func decodeRule(entry *catalog.Syscall, body hcl.Body) (Rule, hcl.Diagnostics) {
	r := Rule{Syscall: entry.Name}
	schema := &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "action", Required: true}, {Name: "errno"}}}
	for _, o := range entry.Options {
		schema.Attributes = append(schema.Attributes, hcl.AttributeSchema{Name: o.Name})
	}
	if entry.Name == "mount" {
		for n := range reservedMountOptions {
			schema.Attributes = append(schema.Attributes, hcl.AttributeSchema{Name: n})
		}
	}
	content, diags := body.Content(schema)
	a := content.Attributes["action"]
	if a == nil {
		return r, diags
	}
	s, d := str(a)
	diags = append(diags, d...)
	if d.HasErrors() {
		return r, diags
	}
	r.Action = Action(s)
	valid := false
	for _, x := range actions {
		valid = valid || x == r.Action
	}
	if !valid {
		diags = append(diags, errAt(a.Expr.Range(), fmt.Sprintf("unknown action %q", s),
			`one of "emulate", "allow", "deny", "log"`+suggest(s, []string{"emulate", "allow", "deny", "log"})))
		return r, diags
	}
	if e := content.Attributes["errno"]; e != nil {
		name, d := str(e)
		diags = append(diags, d...)
		switch {
		case d.HasErrors():
		case r.Action != Deny:
			diags = append(diags, errAt(e.NameRange, "errno is only for action \"deny\"", "remove it, or make the action \"deny\""))
		case !validErrno(name):
			diags = append(diags, errAt(e.Expr.Range(), fmt.Sprintf("unknown errno %q", name), "an errno name such as \"EPERM\", \"EACCES\" or \"ENOSYS\""))
		default:
			r.Errno = name
		}
	} else if r.Action == Deny {
		r.Errno = "EPERM"
	}
	for name, attr := range content.Attributes {
		if name == "action" || name == "errno" {
			continue
		}
		if why, ok := reservedMountOptions[name]; ok {
			diags = append(diags, errAt(attr.NameRange, fmt.Sprintf("mount option %q is reserved", name), why+"; see docs/policy.md"))
			continue
		}
		if r.Action != Emulate {
			diags = append(diags, errAt(attr.NameRange, fmt.Sprintf("option %q is only for action \"emulate\"", name), "remove it, or make the action \"emulate\""))
			continue
		}
		v, d := boolean(attr)
		diags = append(diags, d...)
		if r.Options == nil {
			r.Options = map[string]bool{}
		}
		r.Options[name] = v
	}
	if r.Action == Emulate {
		for _, o := range entry.Options {
			if r.Options == nil {
				r.Options = map[string]bool{}
			}
			if _, ok := r.Options[o.Name]; !ok {
				r.Options[o.Name] = o.Default
			}
		}
	}
	return r, diags
}

func errAt(rng hcl.Range, summary, hint string) *hcl.Diagnostic {
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: hint, Subject: rng.Ptr()}
}

func value(a *hcl.Attribute, want cty.Type, what string) (cty.Value, hcl.Diagnostics) {
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	if v.IsNull() || !v.IsWhollyKnown() || v.Type() != want {
		return cty.NilVal, hcl.Diagnostics{errAt(a.Expr.Range(), fmt.Sprintf("%s must be %s", a.Name, what), "")}
	}
	return v, nil
}

func str(a *hcl.Attribute) (string, hcl.Diagnostics) {
	v, d := value(a, cty.String, "a string")
	if d.HasErrors() {
		return "", d
	}
	return v.AsString(), nil
}

func boolean(a *hcl.Attribute) (bool, hcl.Diagnostics) {
	v, d := value(a, cty.Bool, "true or false")
	if d.HasErrors() {
		return false, d
	}
	return v.True(), nil
}

func number(a *hcl.Attribute) (int, hcl.Diagnostics) {
	v, d := value(a, cty.Number, "a whole number")
	if d.HasErrors() {
		return 0, d
	}
	bf := v.AsBigFloat()
	i, acc := bf.Int64()
	if acc != big.Exact || i < 0 || i > 1<<20 {
		return 0, hcl.Diagnostics{errAt(a.Expr.Range(), a.Name+" must be a whole number", "")}
	}
	return int(i), nil
}

func unknownSyscallHint(s string) string {
	names := make([]string, len(catalog.Syscalls))
	for i, c := range catalog.Syscalls {
		names[i] = c.Name
	}
	return "policies can name the syscalls sysvisor intercepts: " + strings.Join(names, ", ") + suggest(s, names)
}

// suggest returns "; did you mean X?" for a close name, else "".
func suggest(s string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := distance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// distance is the Levenshtein distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var errnos = func() map[string]unix.Errno {
	m := map[string]unix.Errno{}
	for i := unix.Errno(1); i < 4096; i++ {
		if n := unix.ErrnoName(i); n != "" {
			m[n] = i
		}
	}
	return m
}()

func validErrno(name string) bool { _, ok := errnos[name]; return ok }

// Errno returns the number of an errno name a deny rule holds.
func Errno(name string) (unix.Errno, bool) {
	e, ok := errnos[name]
	return e, ok
}
