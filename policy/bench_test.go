package policy

import "testing"

// In-process costs of policies: sysvisor-runc parses one at every create;
// sysvisord looks rules up when a container registers.

func BenchmarkLoadBuiltin(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if _, err := Load("default", ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRule(b *testing.B) {
	p, err := Load("default", "")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := p.Rule("umount2"); !ok {
			b.Fatal("no rule")
		}
	}
}

func BenchmarkSelect(b *testing.B) {
	env := []string{"PATH=/usr/bin:/bin", "HOME=/root", "SYSVISOR_POLICY=dind"}
	ann := map[string]string{"org.opencontainers.image.title": "x"}
	for i := 0; i < b.N; i++ {
		if n, _ := Select(ann, env, ""); n != "dind" {
			b.Fatal(n)
		}
	}
}
