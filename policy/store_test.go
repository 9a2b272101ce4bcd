package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodCI = `version = 1
description = "ci v1"
syscall "sysinfo" {
  action = "emulate"
}
`

func status(rep *Report, name string) Loaded {
	for _, l := range rep.Policies {
		if l.Name == name {
			return l
		}
	}
	return Loaded{}
}

func TestStoreReloadKeepsLastGood(t *testing.T) {
	dir, keep := t.TempDir(), filepath.Join(t.TempDir(), "kept")
	write := func(name, src string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name+".hcl"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ci", goodCI)
	s := NewStore(dir, keep, nil)
	if _, err := s.Get("ci"); err == nil {
		t.Fatal("a store serves policies before its first Reload")
	}
	rep, err := s.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if l := status(rep, "ci"); l.Status != StatusLoaded {
		t.Errorf("ci after first load: %+v", l)
	}
	if l := status(rep, "strict"); l.Status != StatusBuiltin || l.Source != "built-in" {
		t.Errorf("strict: %+v", l)
	}
	// Unchanged on a second load.
	if rep, err = s.Reload(); err != nil || status(rep, "ci").Status != StatusUnchanged {
		t.Errorf("second reload: %v %+v", err, status(rep, "ci"))
	}

	// A typo is refused with its position; v1 stays active.
	write("ci", "version = 1\ndescription = \"ci v2\"\nsyscall \"sysinfo\" {\n  actoin = \"emulate\"\n}\n")
	rep, err = s.Reload()
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "ci.hcl")+":4:3") {
		t.Fatalf("reload with a typo: %v", err)
	}
	l := status(rep, "ci")
	if l.Status != StatusKept || len(l.Problems) != 2 || l.Problems[1].Line != 4 || l.Problems[1].Column != 3 {
		t.Errorf("refused file: %+v", l)
	}
	if p, err := s.Get("ci"); err != nil || p.Description != "ci v1" {
		t.Errorf("after refused reload: %v %+v, want ci v1 still active", err, p)
	}

	// A new file with an error has no good version: the name fails with
	// the file's position.
	write("fresh", "version = 1\nsyscall \"mount\" {\n  action = \"alow\"\n}\n")
	rep, err = s.Reload()
	if err == nil || status(rep, "fresh").Status != StatusFailed {
		t.Fatalf("reload with a bad new file: %v %+v", err, status(rep, "fresh"))
	}
	if _, err := s.Get("fresh"); err == nil || !strings.Contains(err.Error(), ":3:12") || !strings.Contains(err.Error(), `"fresh"`) {
		t.Errorf("Get(fresh) = %v, want the file's error", err)
	}

	// A restarted supervisor (a new store) finds ci.hcl still broken:
	// the copy kept on disk is served.
	s2 := NewStore(dir, keep, nil)
	if rep, err := s2.Reload(); err == nil || status(rep, "ci").Status != StatusKept {
		t.Fatalf("restart with a broken file: %v %+v", err, status(rep, "ci"))
	}
	if p, err := s2.Get("ci"); err != nil || p.Description != "ci v1" || !strings.Contains(p.Source, "last good") {
		t.Errorf("after restart: %v %+v", err, p)
	}

	// Fixed: v3 replaces v1. Removed: the name is gone, and so is its copy.
	write("ci", strings.Replace(goodCI, "ci v1", "ci v3", 1))
	os.Remove(filepath.Join(dir, "fresh.hcl"))
	if rep, err = s2.Reload(); err != nil || status(rep, "ci").Status != StatusLoaded {
		t.Fatalf("fixed file: %v %+v", err, status(rep, "ci"))
	}
	if p, _ := s2.Get("ci"); p.Description != "ci v3" {
		t.Errorf("fixed file not active: %+v", p)
	}
	os.Remove(filepath.Join(dir, "ci.hcl"))
	if rep, err = s2.Reload(); err != nil || status(rep, "ci").Status != StatusRemoved {
		t.Fatalf("removed file: %v %+v", err, status(rep, "ci"))
	}
	if _, err := s2.Get("ci"); !errors.Is(err, ErrUnknown) {
		t.Errorf("removed policy still served: %v", err)
	}
	if _, err := os.Stat(filepath.Join(keep, "ci.hcl")); !os.IsNotExist(err) {
		t.Errorf("kept copy of a removed file: %v", err)
	}
}

// A file overrides the built-in of its name; a refused override keeps the
// built-in, and so does removing it. The caller's check refuses like a
// parse error.
func TestStoreOverrideAndCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "strict.hcl")
	os.WriteFile(path, []byte(goodCI), 0o644)
	refuse := errors.New("no handler for that")
	s := NewStore(dir, "", func(p *Policy) error {
		if p.Description == "ci v1" {
			return refuse
		}
		return nil
	})
	rep, err := s.Reload()
	if err == nil || !strings.Contains(err.Error(), "no handler for that") {
		t.Fatalf("check not applied: %v", err)
	}
	if l := status(rep, "strict"); l.Status != StatusKept || l.Source != "built-in" {
		t.Errorf("strict overridden by a refused file at start: %+v", l)
	}
	// A good override, then a broken one: the good override stays.
	os.WriteFile(path, []byte(strings.Replace(goodCI, "ci v1", "mine", 1)), 0o644)
	if _, err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("version = 1\nsyscall \"sysinfo\" { action = \"emulate\" }\nbroken"), 0o644)
	if rep, err := s.Reload(); err == nil || status(rep, "strict").Status != StatusKept {
		t.Fatalf("broken override: %v %+v", err, status(rep, "strict"))
	}
	if p, _ := s.Get("strict"); p.Description != "mine" {
		t.Errorf("after a broken override: %+v", p)
	}
	// A refused built-in override while nothing was active (a first
	// load): the built-in serves.
	s2 := NewStore(dir, "", nil)
	if rep, _ := s2.Reload(); status(rep, "strict").Status != StatusKept {
		t.Errorf("first load of a broken override: %+v", status(rep, "strict"))
	}
	if p, err := s2.Get("strict"); err != nil || p.Source != "built-in" {
		t.Errorf("first load of a broken override serves %+v, %v", p, err)
	}
	os.Remove(path)
	if _, err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Get("strict"); err != nil || p.Source != "built-in" {
		t.Errorf("strict after the file's removal: %v %+v", err, p)
	}
	if _, err := s.Get("../etc"); !errors.Is(err, ErrUnknown) {
		t.Errorf("invalid name: %v", err)
	}
}
