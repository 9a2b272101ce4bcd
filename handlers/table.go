package handlers

import (
	"fmt"
	"sort"

	seccomp "github.com/seccomp/libseccomp-golang"

	"github.com/sysvisor/sysvisor/handlers/catalog"
)

// Entry describes one intercepted syscall: its catalog entry (name, knob,
// options, doc) and its handler.
type Entry struct {
	catalog.Syscall
	Handler Handler
}

// impl binds each catalog entry to its handler. A syscall not in the catalog
// is never trapped; a catalog entry without a handler fails NewTable.
var impl = map[string]Handler{
	"sysinfo":       sysinfoHandler{},
	"mount":         mountHandler{},
	"umount2":       umountHandler{},
	"fsopen":        enosysHandler{},
	"fspick":        enosysHandler{},
	"open_tree":     enosysHandler{},
	"move_mount":    enosysHandler{},
	"mount_setattr": enosysHandler{},
	"mknod":         mknodHandler{},
	"mknodat":       mknodHandler{at: true},
	"seccomp":       seccompHandler{},
}

// table is what happens to every syscall sysvisor can intercept, in catalog
// order.
var table = func() []Entry {
	t := make([]Entry, 0, len(catalog.Syscalls))
	for _, s := range catalog.Syscalls {
		t = append(t, Entry{Syscall: s, Handler: impl[s.Name]})
	}
	return t
}()

// Table resolves syscall numbers for the native architecture once.
type Table struct {
	byNr map[int32]*Entry
}

// NewTable builds the lookup for names (nil means all).
func NewTable(names []string) (*Table, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	t := &Table{byNr: map[int32]*Entry{}}
	for i := range table {
		e := &table[i]
		if names != nil && !want[e.Name] {
			continue
		}
		delete(want, e.Name)
		if e.Handler == nil {
			return nil, fmt.Errorf("syscall %s: in the catalog without a handler", e.Name)
		}
		nr, err := seccomp.GetSyscallFromName(e.Name)
		if err != nil {
			return nil, fmt.Errorf("syscall %s: %w", e.Name, err)
		}
		t.byNr[int32(nr)] = e
	}
	if len(want) > 0 {
		var unknown []string
		for n := range want {
			unknown = append(unknown, n)
		}
		sort.Strings(unknown)
		return nil, fmt.Errorf("no handler for syscalls %v", unknown)
	}
	return t, nil
}

// Lookup returns the entry for a native syscall number.
func (t *Table) Lookup(nr int32) (*Entry, bool) {
	e, ok := t.byNr[nr]
	return e, ok
}

// Names lists every syscall sysvisor can intercept.
func Names() []string {
	out := make([]string, len(table))
	for i, e := range table {
		out[i] = e.Name
	}
	return out
}

// Nr returns the native syscall number of an entry in the table.
func (t *Table) Nr(name string) (int32, bool) {
	for nr, e := range t.byNr {
		if e.Name == name {
			return nr, true
		}
	}
	return 0, false
}
