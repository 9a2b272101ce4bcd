package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sysvisor/sysvisor/linux/statefile"
)

// Store is a supervisor's active policies: the built-ins and the files of
// one directory, as last loaded without error. It changes only when Reload
// runs (start, SIGHUP, `sysvisorctl policy reload`), never behind the
// operator's back: an edited file counts once it has been reloaded, and a
// file that does not parse then is refused while its last good version
// stays active.
//
// The last good source of every file is also copied to keep (a directory
// under sysvisord's state directory), so that a restart finding a broken
// file still has the version that was active before it.
type Store struct {
	dir   string
	keep  string
	check func(*Policy) error

	reloading sync.Mutex // one Reload at a time; never taken by Get
	cur       atomic.Pointer[storeState]
}

type storeState struct {
	active map[string]*Policy
	src    map[string][]byte // file policies' sources, to tell unchanged files
	failed map[string]error  // files that fail with no good version to keep
}

// Load status of one policy in a Report.
const (
	StatusLoaded    = "loaded"    // new or changed file, now active
	StatusUnchanged = "unchanged" // same source as the active version
	StatusBuiltin   = "built-in"  // no file: the built-in is active
	StatusKept      = "kept"      // file refused; the last good version stays active
	StatusFailed    = "failed"    // file refused and no good version: the name cannot be used
	StatusRemoved   = "removed"   // file gone since the last load
)

// Loaded is one policy's outcome in a Report.
type Loaded struct {
	Name   string `json:"name"`
	Status string `json:"status"`
	// Source of the active version ("" when none is active).
	Source string `json:"source,omitempty"`
	// Error and Problems say why a file was refused.
	Error    string    `json:"error,omitempty"`
	Problems []Problem `json:"problems,omitempty"`
}

// Report is what a Reload did, one entry per name, sorted.
type Report struct {
	Dir      string   `json:"dir"`
	Policies []Loaded `json:"policies"`
}

// Refused lists the entries whose file was refused.
func (r *Report) Refused() []Loaded {
	var out []Loaded
	for _, l := range r.Policies {
		if l.Status == StatusKept || l.Status == StatusFailed {
			out = append(out, l)
		}
	}
	return out
}

// NewStore returns an empty store over dir; keep ("" for none) holds the
// last good copies. check, when not nil, is the caller's own validation
// (sysvisord resolves the rules against its handler table): a policy it
// refuses is refused like a file that does not parse. Call Reload to load.
func NewStore(dir, keep string, check func(*Policy) error) *Store {
	s := &Store{dir: dir, keep: keep, check: check}
	s.cur.Store(&storeState{active: map[string]*Policy{}, src: map[string][]byte{}, failed: map[string]error{}})
	return s
}

// Dir is the policy directory the store reads.
func (s *Store) Dir() string { return s.dir }

// Get returns the active policy of that name. A name whose file was
// refused with no good version to keep returns that file's error.
func (s *Store) Get(name string) (*Policy, error) {
	st := s.cur.Load()
	if p, ok := st.active[name]; ok {
		return p, nil
	}
	if err, ok := st.failed[name]; ok {
		return nil, fmt.Errorf("%w (refused at the last reload, and no earlier version was loaded)", err)
	}
	names := make([]string, 0, len(st.active))
	for n := range st.active {
		names = append(names, n)
	}
	sort.Strings(names)
	if !ValidName(name) {
		return nil, fmt.Errorf("%w %q: a policy name is letters, digits, '.', '_' and '-' (known: %s)", ErrUnknown, name, strings.Join(names, ", "))
	}
	return nil, fmt.Errorf("%w %q (known: %s; a new file in %s counts after `sysvisorctl policy reload` or SIGHUP to sysvisord)", ErrUnknown, name, strings.Join(names, ", "), s.dir)
}

// Names lists the active policies.
func (s *Store) Names() []string {
	st := s.cur.Load()
	out := make([]string, 0, len(st.active))
	for n := range st.active {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Reload re-reads the directory. Valid files replace their active versions;
// a refused file keeps its last good version (from memory, else from the
// keep directory). The error, when not nil, names every refused file with
// its problems; the report says what happened to each policy either way.
// An unreadable directory changes nothing.
func (s *Store) Reload() (*Report, error) {
	s.reloading.Lock()
	defer s.reloading.Unlock()
	old := s.cur.Load()
	next := &storeState{active: map[string]*Policy{}, src: map[string][]byte{}, failed: map[string]error{}}
	rep := &Report{Dir: s.dir}
	files, err := s.files()
	if err != nil {
		return rep, err
	}
	names := map[string]bool{}
	for _, n := range BuiltinNames() {
		names[n] = true
	}
	for n := range files {
		names[n] = true
	}
	for n := range old.src {
		names[n] = true // to report files that were removed
	}
	var refused []string
	for _, name := range sortedKeys(names) {
		path, isFile := files[name]
		if !isFile {
			if _, ok := Builtin(name); ok {
				p, err := s.parseBuiltin(name)
				if err != nil {
					// Built-ins are tested; this build cannot serve it.
					return rep, err
				}
				next.active[name] = p
				l := Loaded{Name: name, Status: StatusBuiltin, Source: p.Source}
				if _, had := old.src[name]; had {
					l.Status = StatusRemoved
				}
				rep.Policies = append(rep.Policies, l)
			} else {
				rep.Policies = append(rep.Policies, Loaded{Name: name, Status: StatusRemoved})
			}
			s.dropKept(name)
			continue
		}
		src, p, err := s.load(name, path)
		if err == nil {
			next.active[name], next.src[name] = p, src
			l := Loaded{Name: name, Status: StatusLoaded, Source: p.Source}
			if bytes.Equal(old.src[name], src) {
				l.Status = StatusUnchanged
			}
			rep.Policies = append(rep.Policies, l)
			s.saveKept(name, src)
			continue
		}
		refused = append(refused, err.Error())
		l := Loaded{Name: name, Error: err.Error()}
		var pe *ParseError
		if errors.As(err, &pe) {
			l.Problems = pe.Problems
		}
		// The last good version: the active one (a file's, or the
		// built-in a broken override would replace), else the copy kept
		// on disk by an earlier sysvisord, else the built-in.
		if prev, ok := old.active[name]; ok {
			next.active[name] = prev
			if old.src[name] != nil {
				next.src[name] = old.src[name]
			}
			l.Status, l.Source = StatusKept, prev.Source
		} else if prev, prevSrc, ok := s.loadKept(name, path); ok {
			next.active[name], next.src[name] = prev, prevSrc
			l.Status, l.Source = StatusKept, prev.Source
		} else if p, ok := s.builtin(name); ok {
			next.active[name] = p
			l.Status, l.Source = StatusKept, p.Source
		} else {
			next.failed[name] = err
			l.Status = StatusFailed
		}
		rep.Policies = append(rep.Policies, l)
	}
	s.cur.Store(next)
	if len(refused) > 0 {
		return rep, fmt.Errorf("%d policy file(s) refused, last good versions kept: %s", len(refused), strings.Join(refused, "; "))
	}
	return rep, nil
}

func (s *Store) parseBuiltin(name string) (*Policy, error) {
	b, _ := Builtin(name)
	p, err := Parse(name, "built-in:"+name+".hcl", b)
	if err == nil && s.check != nil {
		err = s.check(p)
	}
	if err != nil {
		return nil, fmt.Errorf("built-in policy %q: %w", name, err)
	}
	p.Source = "built-in"
	return p, nil
}

// builtin returns the built-in of that name, if there is one this
// supervisor can serve.
func (s *Store) builtin(name string) (*Policy, bool) {
	if _, ok := Builtin(name); !ok {
		return nil, false
	}
	p, err := s.parseBuiltin(name)
	return p, err == nil
}

// files lists <dir>/<name>.hcl for valid names.
func (s *Store) files() (map[string]string, error) {
	out := map[string]string{}
	if s.dir == "" {
		return out, nil
	}
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil // no directory: the built-ins only
	}
	if err != nil {
		return nil, fmt.Errorf("policy directory: %w", err)
	}
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".hcl"); ok && ValidName(n) && !e.IsDir() {
			out[n] = filepath.Join(s.dir, e.Name())
		}
	}
	return out, nil
}

func (s *Store) load(name, path string) ([]byte, *Policy, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("policy %q: %w", name, err)
	}
	p, err := Parse(name, path, src)
	if err != nil {
		return nil, nil, err
	}
	if s.check != nil {
		if err := s.check(p); err != nil {
			return nil, nil, fmt.Errorf("policy %q (%s): %w", name, path, err)
		}
	}
	return src, p, nil
}

// loadKept parses the copy of name's last good file, if any: what a
// restarted supervisor serves while the file itself is broken.
func (s *Store) loadKept(name, path string) (*Policy, []byte, bool) {
	if s.keep == "" {
		return nil, nil, false
	}
	src, err := os.ReadFile(filepath.Join(s.keep, name+".hcl"))
	if err != nil {
		return nil, nil, false
	}
	p, err := Parse(name, path, src)
	if err != nil || (s.check != nil && s.check(p) != nil) {
		return nil, nil, false
	}
	p.Source = path + " (last good version)"
	return p, src, true
}

func (s *Store) saveKept(name string, src []byte) {
	if s.keep == "" {
		return
	}
	path := filepath.Join(s.keep, name+".hcl")
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, src) {
		return
	}
	// Best effort: losing the copy loses only the fallback for a file
	// that is broken at the next start. fsynced: the policy directory
	// outlives a machine crash, so its fallback must too.
	if err := os.MkdirAll(s.keep, 0o700); err != nil {
		return
	}
	statefile.WriteAtomic(path, src, 0o600)
}

func (s *Store) dropKept(name string) {
	if s.keep != "" {
		os.Remove(filepath.Join(s.keep, name+".hcl"))
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
