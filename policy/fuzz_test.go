package policy

import (
	"errors"
	"testing"

	"github.com/sysvisor/sysvisor/handlers/catalog"
)

// FuzzParse: the parser never panics, every problem has a position, and
// every policy it accepts is one sysvisord can serve. Seeds: the built-ins
// here, and policy/testdata/fuzz/FuzzParse (committed corpus).
func FuzzParse(f *testing.F) {
	for _, n := range BuiltinNames() {
		src, _ := Builtin(n)
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		p, err := Parse("fuzz", "fuzz.hcl", src)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || len(pe.Problems) == 0 {
				t.Fatalf("error without problems: %v", err)
			}
			for _, pr := range pe.Problems {
				if pr.Line < 1 || pr.Column < 1 || pr.File != "fuzz.hcl" || pr.Summary == "" {
					t.Fatalf("problem without position: %+v", pr)
				}
			}
			return
		}
		if p.Version != Version || len(p.Rules) == 0 {
			t.Fatalf("accepted version %d with %d rules", p.Version, len(p.Rules))
		}
		if l := p.Limits; l != nil && (l.Rate < 1 || l.Rate > maxRate || l.Burst < 1 || l.Burst > maxRate || (l.Action != LimitEAGAIN && l.Action != LimitLog)) {
			t.Fatalf("accepted limits %+v", *l)
		}
		last := -1
		for _, r := range p.Rules {
			i := -1
			for j, s := range catalog.Syscalls {
				if s.Name == r.Syscall {
					i = j
				}
			}
			if i <= last {
				t.Fatalf("rule %q unknown, duplicated or out of order", r.Syscall)
			}
			last = i
			switch r.Action {
			case Emulate:
				s := catalog.Syscalls[i]
				if len(r.Options) != len(s.Options) {
					t.Fatalf("rule %+v: options not resolved", r)
				}
			case Deny:
				if _, ok := Errno(r.Errno); !ok {
					t.Fatalf("deny without a valid errno: %+v", r)
				}
			case Allow, Log:
				if r.Errno != "" || r.Options != nil {
					t.Fatalf("rule %+v carries emulate/deny settings", r)
				}
			default:
				t.Fatalf("accepted action %q", r.Action)
			}
		}
	})
}
