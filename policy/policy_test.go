package policy

import (
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

func TestLookup(t *testing.T) {
	p, err := Lookup("default")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "default" || !slices.Contains(p.Notify, "sysinfo") {
		t.Errorf("default policy %+v", p)
	}
	for _, name := range []string{"nope", "", "Default", " default"} {
		_, err := Lookup(name)
		if err == nil {
			t.Errorf("Lookup(%q) succeeded", name)
			continue
		}
		if !strings.Contains(err.Error(), "unknown policy") || !strings.Contains(err.Error(), "known: default") {
			t.Errorf("Lookup(%q): %q should name the policy and list the known ones", name, err)
		}
	}
}
