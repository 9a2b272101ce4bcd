package handlers

import (
	"runtime"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers/catalog"
	"github.com/sysvisor/sysvisor/policy"
)

func TestTable(t *testing.T) {
	tab, err := NewTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	e, ok := tab.Lookup(unix.SYS_SYSINFO)
	if !ok || e.Name != "sysinfo" || e.Handler == nil {
		t.Errorf("Lookup(SYS_SYSINFO) = %+v, %v", e, ok)
	}
	if e, ok := tab.Lookup(unix.SYS_MOUNT); !ok || e.Name != "mount" {
		t.Errorf("Lookup(SYS_MOUNT) = %+v, %v", e, ok)
	}
	for _, nr := range []int32{unix.SYS_READ, unix.SYS_OPENAT, -1} {
		if e, ok := tab.Lookup(nr); ok {
			t.Errorf("Lookup(%d) = %+v: not intercepted", nr, e)
		}
	}
	if !slices.Contains(Names(), "sysinfo") {
		t.Errorf("Names() = %v", Names())
	}
	for _, e := range table {
		if e.Knob == "" || e.Doc == "" || e.Handler == nil {
			t.Errorf("table entry %s is incomplete", e.Name)
		}
	}
}

func TestNewTableSelection(t *testing.T) {
	tab, err := NewTable([]string{"sysinfo"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tab.Lookup(unix.SYS_SYSINFO); !ok {
		t.Error("selected sysinfo missing")
	}
	empty, err := NewTable([]string{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := empty.Lookup(unix.SYS_SYSINFO); ok {
		t.Error("an empty selection intercepts sysinfo")
	}
	_, err = NewTable([]string{"sysinfo", "uname", "mount", "chown"})
	if err == nil || !strings.Contains(err.Error(), "[chown uname]") {
		t.Errorf("NewTable with unhandled syscalls: %v", err)
	}
}

// Every syscall a built-in policy traps must have a handler: otherwise the
// container's calls would fail with ENOSYS.
func TestPoliciesHaveHandlers(t *testing.T) {
	for _, name := range policy.BuiltinNames() {
		p, err := policy.Load(name, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewTable(p.Notify()); err != nil {
			t.Errorf("policy %s: %v", p.Name, err)
		}
	}
}

// The catalog and the handlers agree: every catalog entry has a handler and
// every handler a catalog entry.
func TestCatalogBound(t *testing.T) {
	if len(impl) != len(catalog.Syscalls) {
		t.Errorf("%d handlers for %d catalog entries", len(impl), len(catalog.Syscalls))
	}
	for _, s := range catalog.Syscalls {
		if impl[s.Name] == nil {
			t.Errorf("catalog entry %s has no handler", s.Name)
		}
	}
}

func TestIsNative(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("amd64 numbers")
	}
	if !IsNative(unix.AUDIT_ARCH_X86_64) {
		t.Error("x86_64 not native")
	}
	for _, a := range []uint32{unix.AUDIT_ARCH_I386, unix.AUDIT_ARCH_X86_64 &^ 0x40000000, 0} {
		if IsNative(a) {
			t.Errorf("%#x taken as native", a)
		}
	}
}

func TestResponseString(t *testing.T) {
	tests := []struct {
		r    Response
		want string
	}{
		{Allow(), "continue"},
		{Fail(unix.ENOSYS), "errno function not implemented"},
		{Return(0), "return 0"},
		{Return(-3), "return -3"},
	}
	for _, tc := range tests {
		if got := tc.r.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.r, got, tc.want)
		}
	}
}

// BenchmarkLookup: the dispatch's syscall-number lookup, once per
// notification.
func BenchmarkLookup(b *testing.B) {
	t, err := NewTable(nil)
	if err != nil {
		b.Fatal(err)
	}
	nr, ok := t.Nr("umount2")
	if !ok {
		b.Fatal("no umount2")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := t.Lookup(nr); !ok {
			b.Fatal("lookup")
		}
	}
}
