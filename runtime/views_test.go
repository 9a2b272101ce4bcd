package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func viewSpec() *specs.Spec {
	return &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs"},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"ro"}},
	}}
}

func viewDir(t *testing.T, files ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		p := filepath.Join(dir, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func dests(s *specs.Spec) []string {
	var out []string
	for _, m := range s.Mounts {
		out = append(out, m.Destination)
	}
	return out
}

func TestAddViews(t *testing.T) {
	files := []string{"proc/uptime", "proc/meminfo", "sys/devices/system/cpu/online"}
	log := &Logger{path: filepath.Join(t.TempDir(), "log")}

	s := viewSpec()
	dir := viewDir(t, files...)
	addViews(s, dir, files, log)
	want := []string{"/proc", "/dev", "/sys", "/proc/uptime", "/proc/meminfo", "/sys/devices/system/cpu/online"}
	if got := dests(s); !slices.Equal(got, want) {
		t.Fatalf("mounts %v, want %v", got, want)
	}
	m := s.Mounts[4]
	if m.Source != filepath.Join(dir, "proc/meminfo") || !slices.Contains(m.Options, "ro") {
		t.Errorf("view mount %+v", m)
	}
	// A bind by its option, with no type: "bind" is no filesystem type,
	// and runtimetest reports a typed bind as a TODO failure.
	if m.Type != "" || !isBind(&m) || !slices.Contains(m.Options, "bind") {
		t.Errorf("view mount %+v: want no type and the bind option", m)
	}

	// No views from sysvisord, or one file missing: nothing added.
	s = viewSpec()
	addViews(s, "", nil, log)
	addViews(s, viewDir(t, files[:2]...), files, log)
	if len(s.Mounts) != 3 {
		t.Errorf("views added without all files: %v", dests(s))
	}

	// A file the engine already mounts is left alone; no sysfs, no /sys views.
	s = viewSpec()
	s.Mounts[2] = specs.Mount{Destination: "/sys", Type: "bind", Source: "/sys"}
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/proc/uptime", Type: "bind", Source: "/var/lib/lxcfs/proc/uptime"})
	addViews(s, viewDir(t, files...), files, log)
	if got, want := dests(s), []string{"/proc", "/dev", "/sys", "/proc/uptime", "/proc/meminfo"}; !slices.Equal(got, want) {
		t.Errorf("mounts %v, want %v", got, want)
	}

	// A name escaping the view directory is refused.
	s = viewSpec()
	addViews(s, viewDir(t, files...), []string{"../etc/passwd"}, log)
	if len(s.Mounts) != 3 {
		t.Errorf("escaping view added: %v", dests(s))
	}
}
