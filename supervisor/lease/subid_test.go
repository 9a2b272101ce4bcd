package lease

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseSubID(t *testing.T) {
	data := `# /etc/subuid
root:100000:65536

  alice:165536:65536  
# dockremap from userns-remap
dockremap:231072:65536
sysvisor:4294901760:65535
`
	got, err := ParseSubID("/etc/subuid", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := []SubIDEntry{
		{Owner: "root", Range: Range{100000, 65536}, Line: 2},
		{Owner: "alice", Range: Range{165536, 65536}, Line: 4},
		{Owner: "dockremap", Range: Range{231072, 65536}, Line: 6},
		{Owner: "sysvisor", Range: Range{4294901760, 65535}, Line: 7},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseSubID:\n\tgot  %+v\n\twant %+v", got, want)
	}
	for _, empty := range []string{"", "\n\n", "# only a comment\n"} {
		if got, err := ParseSubID("f", []byte(empty)); err != nil || len(got) != 0 {
			t.Errorf("ParseSubID(%q) = %v, %v", empty, got, err)
		}
	}
}

func TestParseSubIDErrors(t *testing.T) {
	tests := []struct {
		data string
		want string // the error starts with file:line
	}{
		{"root:100000\n", "/etc/subgid:1: "},
		{"root:100000:65536:extra\n", "/etc/subgid:1: "},
		{"# ok\nroot:100000:65536\n:1:2\n", "/etc/subgid:3: "},
		{"root:abc:65536\n", `/etc/subgid:1: start "abc"`},
		{"root:-1:65536\n", `/etc/subgid:1: start "-1"`},
		{"root:100000:many\n", `/etc/subgid:1: count "many"`},
		{"root:4294967296:1\n", `/etc/subgid:1: start "4294967296"`},
		{"\n\nroot:4294967295:2\n", "/etc/subgid:3: range 4294967295+2 exceeds 32-bit IDs"},
		{"root 100000 65536\n", "/etc/subgid:1: want owner:start:count"},
	}
	for _, tc := range tests {
		_, err := ParseSubID("/etc/subgid", []byte(tc.data))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ParseSubID(%q): %v, want an error starting %q", tc.data, err, tc.want)
		}
	}
	// The last ID that fits.
	if _, err := ParseSubID("f", []byte("root:4294967295:1\n")); err != nil {
		t.Errorf("range ending at 2^32: %v", err)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEnsurePoolCreates(t *testing.T) {
	tests := []struct {
		name           string
		subuid, subgid string // "-" means the file does not exist
		want           Range
	}{
		{"no files", "-", "-", Range{131072, DefaultSize}},
		{"empty files", "", "", Range{131072, DefaultSize}},
		{"below the minimum", "root:1000:1000\n", "root:1000:1000\n", Range{131072, DefaultSize}},
		{"one user", "root:100000:65536\n", "root:100000:65536\n", Range{196608, DefaultSize}},
		{"ends on a block boundary", "root:100000:96608\n", "", Range{196608, DefaultSize}},
		{"highest of either file", "root:100000:65536\n", "root:100000:65536\nbob:1000000:65536\n", Range{1114112, DefaultSize}},
		{"unordered, comments", "# x\nbob:1000000:65536\nroot:100000:65536\n", "", Range{1114112, DefaultSize}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			uid, gid := filepath.Join(dir, "subuid"), filepath.Join(dir, "subgid")
			if tc.subuid != "-" {
				writeFile(t, uid, tc.subuid)
			}
			if tc.subgid != "-" {
				writeFile(t, gid, tc.subgid)
			}
			got, err := EnsurePool(uid, gid)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("pool %+v, want %+v", got, tc.want)
			}
			if got.Start%BlockSize != 0 || got.Start < MinStart {
				t.Errorf("pool start %d not a block boundary above %d", got.Start, MinStart)
			}
			// The pool is registered in both files, overlapping nothing.
			for _, p := range []string{uid, gid} {
				es, err := ParseSubID(p, []byte(readFile(t, p)))
				if err != nil {
					t.Fatalf("%s after EnsurePool: %v", p, err)
				}
				var mine int
				for _, e := range es {
					if e.Owner == Owner {
						mine++
						if e.Range != got {
							t.Errorf("%s: %s entry %+v, want %+v", p, Owner, e.Range, got)
						}
					} else if e.overlaps(got) {
						t.Errorf("%s: pool %+v overlaps %s's %+v", p, got, e.Owner, e.Range)
					}
				}
				if mine != 1 {
					t.Errorf("%s: %d %s entries", p, mine, Owner)
				}
			}
			// Idempotent: the second call finds the pool and writes nothing.
			u1, g1 := readFile(t, uid), readFile(t, gid)
			again, err := EnsurePool(uid, gid)
			if err != nil || again != got {
				t.Errorf("second EnsurePool: %+v, %v; want %+v", again, err, got)
			}
			if readFile(t, uid) != u1 || readFile(t, gid) != g1 {
				t.Error("second EnsurePool rewrote the files")
			}
		})
	}
}

func TestEnsurePoolKeepsContent(t *testing.T) {
	dir := t.TempDir()
	uid, gid := filepath.Join(dir, "subuid"), filepath.Join(dir, "subgid")
	writeFile(t, uid, "# keep me\nroot:100000:65536") // no final newline
	writeFile(t, gid, "root:100000:65536\n")
	if _, err := EnsurePool(uid, gid); err != nil {
		t.Fatal(err)
	}
	if got, want := readFile(t, uid), "# keep me\nroot:100000:65536\nsysvisor:196608:268435456\n"; got != want {
		t.Errorf("subuid %q, want %q", got, want)
	}
	if got, want := readFile(t, gid), "root:100000:65536\nsysvisor:196608:268435456\n"; got != want {
		t.Errorf("subgid %q, want %q", got, want)
	}
}

func TestEnsurePoolExisting(t *testing.T) {
	tests := []struct {
		name, subuid, subgid string
		want                 Range
		err                  string
	}{
		{name: "found", subuid: "root:100000:65536\nsysvisor:196608:131072\n", subgid: "sysvisor:196608:131072\n", want: Range{196608, 131072}},
		{name: "disagree", subuid: "sysvisor:196608:131072\n", subgid: "sysvisor:262144:131072\n", err: "disagree"},
		{name: "only in subuid", subuid: "sysvisor:196608:131072\n", subgid: "root:100000:65536\n", err: "only one of"},
		{name: "only in subgid", subuid: "", subgid: "sysvisor:196608:131072\n", err: "only one of"},
		{name: "smaller than a block", subuid: "sysvisor:196608:1000\n", subgid: "sysvisor:196608:1000\n", err: "need at least 65536"},
		{name: "malformed subgid", subuid: "", subgid: "root:100000:65536\nbroken\n", err: "subgid:2: "},
		{name: "no room", subuid: "root:100000:4294000000\n", subgid: "", err: "no room"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			uid, gid := filepath.Join(dir, "subuid"), filepath.Join(dir, "subgid")
			writeFile(t, uid, tc.subuid)
			writeFile(t, gid, tc.subgid)
			got, err := EnsurePool(uid, gid)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("EnsurePool: %+v, %v; want an error mentioning %q", got, err, tc.err)
				}
				if readFile(t, uid) != tc.subuid || readFile(t, gid) != tc.subgid {
					t.Error("EnsurePool changed the files on error")
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("EnsurePool: %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestRange(t *testing.T) {
	r := Range{Start: 4294901760, Size: 65536}
	if r.End() != 1<<32 {
		t.Errorf("End %d, want 2^32 without overflow", r.End())
	}
	tests := []struct {
		a, b Range
		want bool
	}{
		{Range{0, 10}, Range{10, 10}, false},
		{Range{0, 11}, Range{10, 10}, true},
		{Range{10, 10}, Range{0, 11}, true},
		{Range{5, 1}, Range{0, 100}, true},
		{Range{0, 0}, Range{0, 100}, false},
		{r, Range{4294967295, 1}, true},
	}
	for _, tc := range tests {
		if got := tc.a.overlaps(tc.b); got != tc.want {
			t.Errorf("%+v overlaps %+v = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}
