package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leases.json")
	for i, tc := range []struct {
		data string
		mode os.FileMode
	}{
		{`{"version":1}`, 0o600},
		{`{"version":2,"longer":true}`, 0o644}, // replaces, with the new mode
		{``, 0o600},
	} {
		if err := WriteAtomic(path, []byte(tc.data), tc.mode); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != tc.data {
			t.Errorf("write %d: read back %q, %v; want %q", i, b, err, tc.data)
		}
		st, _ := os.Stat(path)
		if st.Mode().Perm() != tc.mode {
			t.Errorf("write %d: mode %v, want %v", i, st.Mode().Perm(), tc.mode)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only leases.json (no temp files)", names)
	}
}

func TestWriteAtomicErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "gone", "x.json")
	if err := WriteAtomic(missing, []byte("x"), 0o600); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("write into a missing directory: %v", err)
	}
	// A directory in the way: the old content stays, no temp file is left.
	target := filepath.Join(dir, "target")
	if err := os.MkdirAll(filepath.Join(target, "child"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := WriteAtomic(target, []byte("x"), 0o600); err == nil {
		t.Error("replacing a non-empty directory succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
}
