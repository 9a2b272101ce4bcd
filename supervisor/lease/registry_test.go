package lease

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func openShared(t *testing.T, path string, pool Range, reg string) *Store {
	t.Helper()
	s, conflicts, err := OpenShared(path, pool, reg)
	if err != nil {
		t.Fatal(err)
	}
	if len(conflicts) > 0 {
		t.Fatalf("conflicts at open: %v", conflicts)
	}
	return s
}

func overlapping(a, b []Lease) []string {
	var out []string
	for _, x := range a {
		for _, y := range b {
			if x.overlaps(y.Range) {
				out = append(out, fmt.Sprintf("%s %d+%d / %s %d+%d", x.ID, x.Start, x.Size, y.ID, y.Start, y.Size))
			}
		}
	}
	return out
}

// Two instances with their own state and the same pool (two test runs, or
// an installed sysvisord and a test one) lease disjoint blocks, leasing in
// turn and at once.
func TestRegistryInstancesLeaseDisjointBlocks(t *testing.T) {
	reg := t.TempDir()
	a := openShared(t, filepath.Join(t.TempDir(), "leases.json"), testPool(64), reg)
	b := openShared(t, filepath.Join(t.TempDir(), "leases.json"), testPool(64), reg)

	la, _ := a.Acquire("a0", "", "")
	lb, _ := b.Acquire("b0", "", "")
	if la.Range != block(0) || lb.Range != block(1) {
		t.Errorf("in turn: a got %+v, b got %+v; want blocks 0 and 1", la.Range, lb.Range)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 1; i <= 20; i++ {
		for _, s := range []*Store{a, b} {
			wg.Add(1)
			go func(s *Store, id string) {
				defer wg.Done()
				if _, err := s.Acquire(id, "", ""); err != nil {
					errs <- err
				}
			}(s, fmt.Sprintf("%p-%d", s, i))
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if o := overlapping(a.List(), b.List()); len(o) > 0 {
		t.Errorf("the instances share IDs: %v", o)
	}
	if n := len(a.List()) + len(b.List()); n != 42 {
		t.Errorf("%d leases, want 42", n)
	}

	// A block one instance frees is the other's to take.
	a.Release("a0")
	if l, _ := b.Acquire("b-next", "", ""); l.Range != block(0) {
		t.Errorf("after a freed block 0, b got %+v", l.Range)
	}
}

// Another process leasing from the same registry sees this one's blocks
// taken: the lock and the files are the interface, not memory.
func TestRegistryOtherProcess(t *testing.T) {
	if os.Getenv("LEASE_TEST_CHILD") != "" {
		s, _, err := OpenShared(os.Getenv("LEASE_TEST_PATH"), testPool(8), os.Getenv("LEASE_TEST_REG"))
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		l, err := s.Acquire("child", "", "")
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("block", (l.Start-200000)/BlockSize)
		os.Exit(0)
	}
	reg := t.TempDir()
	a := openShared(t, filepath.Join(t.TempDir(), "leases.json"), testPool(8), reg)
	for _, id := range []string{"x", "y", "z"} {
		a.Acquire(id, "", "")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run", "^TestRegistryOtherProcess$")
	cmd.Env = append(os.Environ(), "LEASE_TEST_CHILD=1", "LEASE_TEST_REG="+reg, "LEASE_TEST_PATH="+filepath.Join(t.TempDir(), "leases.json"))
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "block 3\n") {
		t.Errorf("the other process: %v\n%s", err, out)
	}
}

// A member whose leases file is gone (its state dir removed) no longer
// holds anything; one whose file cannot be read stops leasing, with the
// file named, and nothing is leased.
func TestRegistryStaleAndBrokenMembers(t *testing.T) {
	reg := t.TempDir()
	goneDir := t.TempDir()
	gone := openShared(t, filepath.Join(goneDir, "leases.json"), testPool(4), reg)
	gone.Acquire("old", "", "")
	brokenPath := filepath.Join(t.TempDir(), "leases.json")
	broken := openShared(t, brokenPath, testPool(4), reg)
	broken.Acquire("b", "", "")
	os.RemoveAll(goneDir)

	a := openShared(t, filepath.Join(t.TempDir(), "leases.json"), testPool(4), reg)
	l, err := a.Acquire("a", "", "")
	if err != nil || l.Range != block(0) {
		t.Errorf("with a member gone: %+v, %v; want block 0 (the gone member's)", l.Range, err)
	}
	if _, err := os.Stat(gone.reg.memberPath(gone.reg.self)); !os.IsNotExist(err) {
		t.Errorf("the gone member's entry is still there: %v", err)
	}

	os.WriteFile(brokenPath, []byte("{not json"), 0o600)
	_, err = a.Acquire("a2", "", "")
	if err == nil || !strings.Contains(err.Error(), brokenPath) {
		t.Errorf("with a member's file broken: %v; want an error naming %s", err, brokenPath)
	}
	if _, ok := a.Get("a2"); ok {
		t.Error("a lease was made although another member's IDs are unknown")
	}
}

// Leases made before the registry existed that overlap are reported at
// open, and kept.
func TestRegistryConflictsReported(t *testing.T) {
	reg := t.TempDir()
	p1, p2 := filepath.Join(t.TempDir(), "leases.json"), filepath.Join(t.TempDir(), "leases.json")
	for _, p := range []string{p1, p2} {
		s, _ := Open(p, testPool(4))
		s.Acquire("c-"+filepath.Base(filepath.Dir(p)), "", "")
	}
	openShared(t, p1, testPool(4), reg)
	s, conflicts, err := OpenShared(p2, testPool(4), reg)
	if err != nil {
		t.Fatal(err)
	}
	if len(conflicts) != 1 || !strings.Contains(conflicts[0], p1) {
		t.Errorf("conflicts %v, want one naming %s", conflicts, p1)
	}
	if len(s.List()) != 1 {
		t.Errorf("the conflicting lease was dropped: %+v", s.List())
	}
}

// Exhaustion counts the other instances' blocks and says so; Close leaves
// the registry only when no lease is held.
func TestRegistryExhaustionAndClose(t *testing.T) {
	reg := t.TempDir()
	a := openShared(t, filepath.Join(t.TempDir(), "leases.json"), testPool(2), reg)
	b := openShared(t, filepath.Join(t.TempDir(), "leases.json"), testPool(2), reg)
	a.Acquire("a", "", "")
	b.Acquire("b", "", "")
	_, err := a.Acquire("a2", "", "")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "1 leased by this sysvisord, 1 by other sysvisord instances") {
		t.Errorf("exhausted: %v", err)
	}
	if _, ok := a.Get("a2"); ok {
		t.Error("a failed lease was kept")
	}

	member := a.reg.memberPath(a.reg.self)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(member); err != nil {
		t.Errorf("an instance holding a lease left the registry at close: %v", err)
	}
	a.Release("a")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(member); !os.IsNotExist(err) {
		t.Errorf("an instance with no lease is still registered after close: %v", err)
	}
	if l, err := b.Acquire("b2", "", ""); err != nil || l.Range != block(0) {
		t.Errorf("after a left: %+v, %v", l.Range, err)
	}
}
