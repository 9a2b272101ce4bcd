package kernel

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseRelease(t *testing.T) {
	for in, want := range map[string]Version{
		"6.12.57+deb13-amd64": {6, 12}, "6.1.0-40-amd64": {6, 1}, "7.2.13+deb14-amd64": {7, 2},
		"6.18.44-fc-v1300": {6, 18}, "5.15.0-91-generic": {5, 15},
	} {
		got, err := ParseRelease(in)
		if err != nil || got != want {
			t.Errorf("ParseRelease(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "6", "x6.1", "abc"} {
		if _, err := ParseRelease(bad); err == nil {
			t.Errorf("ParseRelease(%q): no error", bad)
		}
	}
}

func TestCheckFloor(t *testing.T) {
	for _, ok := range []string{"6.1.0-40-amd64", "6.12.57+deb13-amd64", "7.2.13+deb14-amd64"} {
		if err := CheckFloor(ok); err != nil {
			t.Errorf("CheckFloor(%q) = %v", ok, err)
		}
	}
	for rel, want := range map[string]string{
		"5.15.0-91-generic": "overlayfs on idmapped layers (Linux 5.19)",
		"5.10.0-30-amd64":   "idmapped mounts",
		"4.19.0-27-amd64":   "seccomp user notification (Linux 5.0)",
		"6.0.12-amd64":      "not tested",
	} {
		err := CheckFloor(rel)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), rel) || !strings.Contains(err.Error(), "floor 6.1") {
			t.Errorf("CheckFloor(%q) = %v; want it to name the kernel, the floor and %q", rel, err, want)
		}
	}
}

func TestForce(t *testing.T) {
	defer func() {
		for _, f := range Features() {
			f.forced = false
		}
	}()
	if err := Force("statmount,nonsense"); err == nil || !strings.Contains(err.Error(), `"nonsense"`) {
		t.Fatalf("Force with an unknown name: %v", err)
	}
	if Statmount.Forced() {
		t.Fatal("a refused list forced statmount anyway")
	}
	if err := Force(" statmount , procfs-pidns"); err != nil {
		t.Fatal(err)
	}
	if !Statmount.Forced() || !ProcfsPidNS.Forced() || DetachedMounts.Forced() {
		t.Fatalf("forced: %v", Forced())
	}
	if Statmount.Has() {
		t.Fatal("Has() true for a forced feature")
	}
	if err := Force("all"); err != nil || len(Forced()) != len(Features()) {
		t.Fatalf("all: %v %v", err, Forced())
	}
}

// TestProbes runs every probe on this kernel: each must come out present or
// missing, never fail to run (as root). The answers are logged, and checked
// against the release where the feature's mainline version says.
func TestProbes(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("probes need root")
	}
	v, err := ParseRelease(Release())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range Features() {
		err := f.Probe()
		t.Logf("%-24s %s", f.Name, f.State())
		if err != nil && !errors.Is(err, ErrMissing) {
			t.Errorf("%s: probe did not run: %v", f.Name, err)
		}
		// Distribution kernels may backport, never remove: a kernel at or
		// past the mainline release must have it.
		if err != nil && !v.Less(f.Since) {
			t.Errorf("%s: missing on %s, mainline has it since %s", f.Name, Release(), f.Since)
		}
	}
}
