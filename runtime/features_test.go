package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const featuresJSON = `{"ociVersionMin":"1.0.0","ociVersionMax":"1.2.0",
"linux":{"seccomp":{"enabled":%s,"actions":["SCMP_ACT_ALLOW","SCMP_ACT_ERRNO","SCMP_ACT_NOTIFY"],
"supportedFlags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}}}`

// fakeRunc writes an executable that answers `features` with out.
func fakeRunc(t *testing.T, path, out string) {
	t.Helper()
	script := "#!/bin/sh\n[ \"$1\" = features ] || exit 3\ncat <<'EOF'\n" + out + "\nEOF\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestRuncFeatures(t *testing.T) {
	dir := t.TempDir()
	runc := filepath.Join(dir, "runc")
	runDir := filepath.Join(dir, "run")
	fakeRunc(t, runc, strings.Replace(featuresJSON, "%s", "true", 1))

	f, err := runcFeatures(runc, runDir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(f.Actions, "SCMP_ACT_NOTIFY") || !slices.Equal(f.Flags, []string{"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"}) {
		t.Errorf("features %+v", f)
	}
	if _, err := os.Stat(filepath.Join(runDir, "runc-features.json")); err != nil {
		t.Errorf("no cache: %v", err)
	}

	// Same binary (path, size, mtime): the cache answers, runc is not run.
	st, _ := os.Stat(runc)
	broken := "#!/bin/sh\nexit 1\n"
	broken += strings.Repeat("#", int(st.Size())-len(broken)-1) + "\n"
	if err := os.WriteFile(runc, []byte(broken), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(runc, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	if f2, err := runcFeatures(runc, runDir); err != nil || !slices.Equal(f2.Actions, f.Actions) {
		t.Errorf("cached features: %+v, %v", f2, err)
	}

	// A new binary is asked again.
	if err := os.Chtimes(runc, st.ModTime().Add(time.Second), st.ModTime().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := runcFeatures(runc, runDir); err == nil || !strings.Contains(err.Error(), "runc >= 1.1") {
		t.Errorf("runc features failing: %v, want an error asking for runc >= 1.1", err)
	}
}

func TestRuncFeaturesSeccompDisabled(t *testing.T) {
	dir := t.TempDir()
	runc := filepath.Join(dir, "runc")
	fakeRunc(t, runc, strings.Replace(featuresJSON, "%s", "false", 1))
	f, err := runcFeatures(runc, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Actions) != 0 || len(f.Flags) != 0 {
		t.Errorf("seccomp disabled, yet features %+v", f)
	}
}

func TestRuncFeaturesErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := runcFeatures(filepath.Join(dir, "no-runc"), dir); err == nil || !strings.Contains(err.Error(), "no-runc") {
		t.Errorf("missing runc: %v", err)
	}
	runc := filepath.Join(dir, "runc")
	fakeRunc(t, runc, "not json")
	if _, err := runcFeatures(runc, dir); err == nil || !strings.Contains(err.Error(), "features") {
		t.Errorf("garbage features: %v", err)
	}
}
