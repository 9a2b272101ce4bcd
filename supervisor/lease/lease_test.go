package lease

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pool of n blocks at an unaligned start, to check blocks count from it.
func testPool(n uint32) Range { return Range{Start: 200000, Size: n * BlockSize} }

func open(t *testing.T, path string, pool Range) *Store {
	t.Helper()
	s, err := Open(path, pool)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func block(i uint32) Range { return Range{Start: 200000 + i*BlockSize, Size: BlockSize} }

func TestAcquire(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	s := open(t, path, testPool(4))

	a, err := s.Acquire("a", "/run/runc", "/bundle/a")
	if err != nil {
		t.Fatal(err)
	}
	if a.Range != block(0) || a.ID != "a" || a.RuncRoot != "/run/runc" || a.Bundle != "/bundle/a" || a.Created.IsZero() {
		t.Errorf("first lease %+v, want block 0 with its details", a)
	}
	b, _ := s.Acquire("b", "", "")
	c, _ := s.Acquire("c", "", "")
	if b.Range != block(1) || c.Range != block(2) {
		t.Errorf("leases b %+v c %+v, want blocks 1 and 2", b.Range, c.Range)
	}

	// A retried create gets its own block back, not a new one.
	again, err := s.Acquire("b", "/other", "/other")
	if err != nil || again != b {
		t.Errorf("Acquire(b) again: %+v, %v; want %+v", again, err, b)
	}

	// The lowest free block is reused.
	if ok, err := s.Release("a"); !ok || err != nil {
		t.Fatalf("Release(a): %v, %v", ok, err)
	}
	d, _ := s.Acquire("d", "", "")
	if d.Range != block(0) {
		t.Errorf("after releasing block 0, got %+v", d.Range)
	}
	e, _ := s.Acquire("e", "", "")
	if e.Range != block(3) {
		t.Errorf("last block: got %+v", e.Range)
	}

	// Full.
	_, err = s.Acquire("f", "", "")
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "f") {
		t.Errorf("Acquire on a full pool: %v, want ErrExhausted naming the container", err)
	}
	if _, ok := s.Get("f"); ok {
		t.Error("a failed Acquire left a lease")
	}

	ls := s.List()
	if len(ls) != 4 {
		t.Fatalf("List: %d leases", len(ls))
	}
	for i, l := range ls {
		if l.Range != block(uint32(i)) {
			t.Errorf("List[%d] = %+v, want ordered by base", i, l)
		}
		for _, o := range ls[i+1:] {
			if l.overlaps(o.Range) {
				t.Errorf("%s %+v overlaps %s %+v", l.ID, l.Range, o.ID, o.Range)
			}
		}
	}
}

func TestAcquireManyDisjoint(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "leases.json"), testPool(64))
	seen := map[uint32]string{}
	for i := 0; i < 64; i++ {
		id := fmt.Sprintf("c%02d", i)
		l, err := s.Acquire(id, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if l.Size != BlockSize || (l.Start-200000)%BlockSize != 0 || l.End() > testPool(64).End() {
			t.Fatalf("%s: lease %+v is not a block of the pool", id, l.Range)
		}
		if other, dup := seen[l.Start]; dup {
			t.Fatalf("%s and %s share %d", id, other, l.Start)
		}
		seen[l.Start] = id
	}
	// Free every other block, then fill them again lowest first.
	for i := 0; i < 64; i += 2 {
		s.Release(fmt.Sprintf("c%02d", i))
	}
	for i := 0; i < 64; i += 2 {
		l, err := s.Acquire(fmt.Sprintf("n%02d", i), "", "")
		if err != nil || l.Range != block(uint32(i)) {
			t.Fatalf("refill %d: %+v, %v", i, l.Range, err)
		}
	}
}

func TestRelease(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "leases.json"), testPool(2))
	if ok, err := s.Release("never"); ok || err != nil {
		t.Errorf("Release of an unknown id: %v, %v; want false, nil", ok, err)
	}
	s.Acquire("a", "", "")
	if ok, err := s.Release("a"); !ok || err != nil {
		t.Errorf("Release(a): %v, %v", ok, err)
	}
	if ok, err := s.Release("a"); ok || err != nil {
		t.Errorf("second Release(a): %v, %v; want false, nil", ok, err)
	}
	if _, ok := s.Get("a"); ok {
		t.Error("released lease still there")
	}
}

func TestAcquireEmptyID(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "leases.json"), testPool(1))
	if _, err := s.Acquire("", "", ""); err == nil {
		t.Error("Acquire(\"\") succeeded")
	}
}

func TestPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	s := open(t, path, testPool(8))
	var want []Lease
	for _, id := range []string{"a", "b", "c"} {
		l, err := s.Acquire(id, "/run/runc", "/bundles/"+id)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, l)
	}
	s.Release("b")
	want = []Lease{want[0], want[2]}

	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("leases file mode %v, want 0600", st.Mode().Perm())
	}

	r := open(t, path, testPool(8))
	got := r.List()
	if len(got) != len(want) {
		t.Fatalf("reopened: %+v, want %+v", got, want)
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Range != w.Range || g.RuncRoot != w.RuncRoot || g.Bundle != w.Bundle || !g.Created.Equal(w.Created) {
			t.Errorf("reopened lease %+v, want %+v", g, w)
		}
	}
	// The reopened store does not hand out live blocks.
	n, err := r.Acquire("new", "", "")
	if err != nil || n.Range != block(1) {
		t.Errorf("Acquire after reopen: %+v, %v; want the freed block 1", n.Range, err)
	}
	n2, _ := r.Acquire("new2", "", "")
	if n2.Range != block(3) {
		t.Errorf("next Acquire after reopen: %+v, want block 3", n2.Range)
	}
	if r.Pool() != testPool(8) {
		t.Errorf("Pool %+v", r.Pool())
	}
}

func TestOpenCreatesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	open(t, path, testPool(1))
	var f struct {
		Version int              `json:"version"`
		Pool    Range            `json:"pool"`
		Leases  map[string]Lease `json:"leases"`
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &f); err != nil || f.Version != 1 || f.Pool != testPool(1) || len(f.Leases) != 0 {
		t.Errorf("new leases file %s: %+v, %v", b, f, err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		data string // "" means no file
		pool Range
		err  string
	}{
		{name: "pool below one block", pool: Range{200000, BlockSize - 1}, err: "smaller than one 65536-ID block"},
		{name: "corrupt", data: `{"version":1,"leases":{`, pool: testPool(2), err: "parse leases "},
		{name: "empty file", data: " ", pool: testPool(2), err: "parse leases "},
		{name: "wrong types", data: `{"leases":{"a":{"start":"x"}}}`, pool: testPool(2), err: "parse leases "},
		{
			name: "lease outside a shrunk pool",
			data: `{"version":1,"pool":{"start":200000,"size":262144},"leases":{"a":{"id":"a","start":396608,"size":65536}}}`,
			pool: testPool(2), err: "lease of a (396608+65536) lies outside pool 200000+131072",
		},
		{
			name: "lease below a moved pool",
			data: `{"version":1,"leases":{"a":{"id":"a","start":200000,"size":65536}}}`,
			pool: Range{265536, 2 * BlockSize}, err: "lies outside pool",
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("leases%d.json", i))
			if tc.data != "" {
				if err := os.WriteFile(path, []byte(tc.data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Open(path, tc.pool)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Open: %v, want an error mentioning %q", err, tc.err)
			}
			if tc.data != "" && !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name %s", err, path)
			}
		})
	}
	t.Run("leases that still fit a changed pool are kept", func(t *testing.T) {
		path := filepath.Join(dir, "grown.json")
		s := open(t, path, testPool(2))
		s.Acquire("a", "", "")
		s.Acquire("b", "", "")
		r := open(t, path, testPool(3))
		if l, err := r.Acquire("c", "", ""); err != nil || l.Range != block(2) {
			t.Errorf("Acquire in the grown pool: %+v, %v", l.Range, err)
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		_, err := Open(dir, testPool(1)) // a directory
		if err == nil || !strings.Contains(err.Error(), dir) {
			t.Errorf("Open(directory): %v", err)
		}
	})
}

func TestLeaseIDFromKey(t *testing.T) {
	// The map key is authoritative over a stale id field.
	path := filepath.Join(t.TempDir(), "leases.json")
	data := `{"version":1,"leases":{"real":{"id":"stale","start":200000,"size":65536}}}`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	s := open(t, path, testPool(2))
	if l, ok := s.Get("real"); !ok || l.ID != "real" {
		t.Errorf("Get(real) = %+v, %v", l, ok)
	}
}

func TestSaveFailureRollsBack(t *testing.T) {
	// A vanished state directory makes every save fail, even for root.
	dir := t.TempDir()
	sub := filepath.Join(dir, "state")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	s := open(t, filepath.Join(sub, "leases.json"), testPool(2))
	s.Acquire("a", "", "")
	if err := os.RemoveAll(sub); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire("b", "", ""); err == nil {
		t.Fatal("Acquire succeeded without persisting")
	}
	if _, ok := s.Get("b"); ok {
		t.Error("unpersisted lease b kept in memory")
	}
	if ok, err := s.Release("a"); ok || err == nil {
		t.Errorf("Release without persisting: %v, %v", ok, err)
	}
	if _, ok := s.Get("a"); !ok {
		t.Error("lease a dropped from memory though its release was not persisted")
	}
}
