package runtime

import (
	"strings"
	"testing"

	"github.com/sysvisor/sysvisor/kernel"
)

func TestFloorRelease(t *testing.T) {
	for _, tc := range []struct{ running, override, want string }{
		{"6.18.44-fc", "", "6.18.44-fc"},
		{"6.18.44-fc", "5.15.0-91-generic", "5.15.0-91-generic"},
		{"6.1.0-40-amd64", "6.0.0", "6.0.0"},
		// Never more lenient than the running kernel.
		{"5.15.0-91-generic", "6.12.0", "5.15.0-91-generic"},
		{"6.1.0-40-amd64", "6.1.99", "6.1.0-40-amd64"},
		// Garbage is judged, and refused.
		{"6.18.44-fc", "banana", "banana"},
	} {
		if got := floorRelease(tc.running, tc.override); got != tc.want {
			t.Errorf("floorRelease(%q, %q) = %q, want %q", tc.running, tc.override, got, tc.want)
		}
	}
	if err := kernel.CheckFloor(floorRelease("6.18.44-fc", "banana")); err == nil {
		t.Error("a malformed override let the create through")
	}
	err := kernel.CheckFloor(floorRelease("6.18.44-fc", "5.15.0-91-generic"))
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "5.15.0-91-generic") {
		t.Errorf("refusal %q: want one line naming the kernel", err)
	}
}

// Below the floor a create stops before it reads the bundle, asks
// sysvisord for a lease or mounts anything: here there is neither a bundle
// nor a sysvisord, and the one error is the refusal.
func TestCreateRefusedBelowFloor(t *testing.T) {
	dir := t.TempDir()
	log := dir + "/log.json"
	t.Setenv(EnvKernelRelease, "5.15.0-91-generic")
	var code int
	stderr := captureStderr(t, func() {
		code = Main([]string{"--log", log, "--log-format", "json", "--run-dir", dir + "/run", "create", "--bundle", dir + "/nobundle", "c1"})
	})
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	lines := readLines(t, log)
	if len(lines) != 1 {
		t.Fatalf("log: %q, want the refusal alone", lines)
	}
	l := parseJSONLine(t, lines[0])
	want := "kernel 5.15.0-91-generic is older than sysvisor's floor 6.1: it lacks overlayfs on idmapped layers (Linux 5.19)"
	if l.Level != "error" || l.Msg != want {
		t.Errorf("log %+v, want error %q", l, want)
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("stderr %q", stderr)
	}
	// delete still works below the floor (docker rm of the refused
	// container): it reaches runc, here a stand-in that says so.
	if code := Main([]string{"--runc", "/bin/true", "--run-dir", dir + "/run", "delete", "c1"}); code != 0 {
		t.Errorf("delete below the floor: exit %d", code)
	}
}

func TestUnknownKernelFallback(t *testing.T) {
	dir := t.TempDir()
	log := dir + "/log.json"
	code := Main([]string{"--log", log, "--log-format", "json", "--kernel-fallbacks", "statmount,nonsense", "create", "--bundle", dir, "c1"})
	lines := readLines(t, log)
	if code != 1 || len(lines) != 1 || !strings.Contains(parseJSONLine(t, lines[0]).Msg, `--kernel-fallbacks: unknown kernel feature "nonsense" (known: all, procfs-pidns,`) {
		t.Fatalf("exit %d, log %q", code, lines)
	}
	if kernel.Statmount.Forced() {
		t.Error("a refused list forced statmount")
	}
	// Other commands go on, with a warning.
	if code := Main([]string{"--log", log, "--kernel-fallbacks", "nonsense", "--runc", "/bin/true", "--run-dir", dir + "/run", "delete", "c1"}); code != 0 {
		t.Errorf("delete with a bad switch: exit %d", code)
	}
}
