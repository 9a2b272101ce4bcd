package registry

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sysvisor/sysvisor/linux/cgroup"
	"github.com/sysvisor/sysvisor/supervisor/lease"
)

func TestValidID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"4f1e2d3c4b5a6978e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8", true},
		{"my_container-1.test", true},
		{"...", true},
		{".hidden", true},
		{"", false},
		{".", false},
		{"..", false},
		{"/", false},
		{"a/b", false},
		{"../etc/passwd", false},
		{"/etc/passwd", false},
		{"nul\x00byte", false},
		{strings.Repeat("a", 1025), false},
	}
	for _, tc := range tests {
		err := ValidID(tc.id)
		if (err == nil) != tc.ok {
			t.Errorf("ValidID(%.40q) = %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}

func testRecord(id string) Record {
	return Record{
		ID: id, Bundle: "/run/containerd/io.containerd.runtime.v2.task/moby/" + id, RuncRoot: "/run/docker/runtime-runc/moby",
		Policy: "default", Lease: lease.Range{Start: 196608, Size: 65536}, Status: StatusCreated,
		Created: time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC),
	}
}

func TestRecordJSON(t *testing.T) {
	rec := testRecord("c1")
	rec.Status = StatusRunning
	rec.InitPid = 4242
	rec.InitStartNs = 123456789000
	rec.Cgroups = cgroup.Paths{"memory": "/sys/fs/cgroup/memory/docker/c1", "": "/sys/fs/cgroup/unified/docker/c1"}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var back Record
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rec) {
		t.Errorf("round trip:\n\tgot  %+v\n\twant %+v", back, rec)
	}
	// The on-disk names other tools and older records rely on.
	var m map[string]any
	json.Unmarshal(b, &m)
	for _, k := range []string{"id", "bundle", "runcRoot", "policy", "lease", "status", "initPid", "initStartNs", "cgroups", "created"} {
		if _, ok := m[k]; !ok {
			t.Errorf("record JSON lacks %q: %s", k, b)
		}
	}
}

func TestRegistryRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "containers")
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("state dir: %v, %v", st, err)
	}
	c1, err := r.Add(testRecord("c1"))
	if err != nil {
		t.Fatal(err)
	}
	second := testRecord("c2")
	second.Created = second.Created.Add(time.Second)
	if _, err := r.Add(second); err != nil {
		t.Fatal(err)
	}
	// A retried create returns the existing container untouched.
	dup := testRecord("c1")
	dup.Bundle = "/other"
	if c, err := r.Add(dup); err != nil || c != c1 || c.Snapshot().Bundle == "/other" {
		t.Errorf("Add(existing) = %p %+v, %v; want the first container", c, c.Snapshot(), err)
	}

	c, err := r.Update("c1", func(rec *Record) {
		rec.Status, rec.InitPid, rec.InitStartNs = StatusRunning, 77, int64(5*time.Second)
		rec.Cgroups = cgroup.Paths{"memory": "/m"}
	})
	if err != nil || c != c1 {
		t.Fatalf("Update: %v", err)
	}
	if c1.ID() != "c1" || c1.InitStart() != 5*time.Second || c1.Cgroups()["memory"] != "/m" || c1.Snapshot().InitPid != 77 {
		t.Errorf("after Update: %+v", c1.Snapshot())
	}
	if _, err := r.Update("nope", func(*Record) {}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update(unknown): %v, want ErrNotFound", err)
	}

	// Everything survives a restart.
	r2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := r2.Get("c1")
	if !ok {
		t.Fatal("c1 lost")
	}
	if !reflect.DeepEqual(got.Snapshot(), c1.Snapshot()) {
		t.Errorf("reloaded c1 %+v, want %+v", got.Snapshot(), c1.Snapshot())
	}
	list := r2.List()
	if len(list) != 2 || list[0].ID() != "c1" || list[1].ID() != "c2" {
		t.Errorf("List after reopen: %v", ids(list))
	}

	if err := r2.Remove("c1"); err != nil {
		t.Fatal(err)
	}
	if err := r2.Remove("c1"); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if _, ok := r2.Get("c1"); ok {
		t.Error("removed container still listed")
	}
	r3, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if l := r3.List(); len(l) != 1 || l[0].ID() != "c2" {
		t.Errorf("after Remove and reopen: %v", ids(l))
	}
}

func ids(cs []*Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID())
	}
	return out
}

func TestListOrder(t *testing.T) {
	r, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, x := range []struct {
		id  string
		sec int
	}{{"late", 3}, {"b", 1}, {"a", 1}, {"first", 0}} {
		rec := testRecord(x.id)
		rec.Created = base.Add(time.Duration(x.sec) * time.Second)
		if _, err := r.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := ids(r.List()), []string{"first", "a", "b", "late"}; !reflect.DeepEqual(got, want) {
		t.Errorf("List order %v, want %v", got, want)
	}
}

func TestAddRejectsBadIDs(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(filepath.Join(dir, "containers"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "..", "../escape", "a/b"} {
		if _, err := r.Add(testRecord(id)); err == nil {
			t.Errorf("Add(%q) succeeded", id)
		}
		if err := r.Remove(id); err == nil {
			t.Errorf("Remove(%q) succeeded", id)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "escape.json")); err == nil {
		t.Error("a record escaped the state directory")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "broken.json")
	if err := os.WriteFile(bad, []byte(`{"id":`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Files that are not records are ignored.
	os.WriteFile(filepath.Join(dir, ".c1.json.tmp123"), []byte("partial"), 0o600)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Open with a corrupt record: %v, want an error naming %s", err, bad)
	}
	os.Remove(bad)
	if _, err := Open(dir); err != nil {
		t.Errorf("Open with only a temp file: %v", err)
	}
}

// Registered wakes a runtime's ready request once init registered, and a
// record read back from disk (a restarted sysvisord) answers from its status.
func TestRegisteredAndSysctls(t *testing.T) {
	dir := t.TempDir()
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.Add(Record{ID: "a", Status: StatusCreated, Lease: lease.Range{Start: 65536, Size: 65536}})
	if err != nil {
		t.Fatal(err)
	}
	closed := func(c *Container) bool {
		select {
		case <-c.Registered():
			return true
		default:
			return false
		}
	}
	if closed(c) {
		t.Fatal("registered before init did")
	}
	if err := c.SetSysctl("kernel/panic", "7"); err != nil {
		t.Fatal(err)
	}
	old := c.Snapshot()
	if err := c.SetSysctl("kernel/panic", "9"); err != nil {
		t.Fatal(err)
	}
	if old.Sysctls["kernel/panic"] != "7" {
		t.Errorf("an earlier snapshot's sysctls changed under it: %v", old.Sysctls)
	}
	if closed(c) {
		t.Fatal("registered by an update that kept the status")
	}
	if _, err := r.Update("a", func(rec *Record) { rec.Status = StatusRunning }); err != nil {
		t.Fatal(err)
	}
	if !closed(c) {
		t.Fatal("not registered once running")
	}
	r2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	c2, _ := r2.Get("a")
	if !closed(c2) {
		t.Error("a running record read from disk is not registered")
	}
	if v, _ := c2.Sysctl("kernel/panic"); v != "9" {
		t.Errorf("sysctl read back %q, want 9", v)
	}
	if u, g := c2.RootIDs(); u != 65536 || g != 65536 {
		t.Errorf("root ids %d %d", u, g)
	}
}

// PruneProtected drops what is stale, judged fresh under the lock, writes
// the record, and leaves the slice a lock-free reader holds untouched.
func TestPruneProtected(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "containers")
	r, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	rec := testRecord("p1")
	rec.Protected = []string{"keep-1", "gone-1", "keep-2", "gone-2", "flags:gone-3"}
	c, err := r.Add(rec)
	if err != nil {
		t.Fatal(err)
	}
	held := c.rec.Load().Protected
	stale := func(s string) bool { return strings.Contains(s, "gone") }
	none := func(string) bool { return false }

	if n, err := c.PruneProtected(none, stale); n != 0 || err != nil {
		t.Errorf("nothing seen stale: dropped %d, %v", n, err)
	}
	// Seen stale at first look, alive when judged again (a reused
	// superblock number): kept.
	if n, err := c.PruneProtected(stale, none); n != 0 || err != nil || len(c.Snapshot().Protected) != 5 {
		t.Errorf("judged alive under the lock: dropped %d, %v, left %v", n, err, c.Snapshot().Protected)
	}
	n, err := c.PruneProtected(stale, stale)
	if n != 3 || err != nil {
		t.Fatalf("dropped %d, %v; want 3", n, err)
	}
	if got := c.Snapshot().Protected; !reflect.DeepEqual(got, []string{"keep-1", "keep-2"}) {
		t.Errorf("left %v", got)
	}
	if !reflect.DeepEqual(held, []string{"keep-1", "gone-1", "keep-2", "gone-2", "flags:gone-3"}) {
		t.Errorf("the slice a reader held was changed: %v", held)
	}
	r2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c2, _ := r2.Get("p1"); !reflect.DeepEqual(c2.Snapshot().Protected, []string{"keep-1", "keep-2"}) {
		t.Errorf("on disk: %v", c2.Snapshot().Protected)
	}
}
