package handlers

import (
	"fmt"
	"sort"

	seccomp "github.com/seccomp/libseccomp-golang"
)

// Entry describes one intercepted syscall.
type Entry struct {
	Name    string
	Handler Handler
	// Knob is the policy setting that governs interception of this syscall.
	Knob string
	// What a reader of the table should know about the emulation.
	Doc string
}

// table is what happens to every syscall sysvisor can intercept. A syscall not
// listed here is never trapped.
var table = []Entry{
	{Name: "sysinfo", Handler: sysinfoHandler{}, Knob: "syscall.sysinfo", Doc: "uptime, RAM and task count of the container, from its cgroups"},
	{Name: "mount", Handler: mountHandler{}, Knob: "syscall.mount", Doc: "procfs/sysfs built with the container's masks; remount, bind and move performed on resolved fds, never touching protected mounts; other new mounts left to the kernel"},
	{Name: "umount2", Handler: umountHandler{}, Knob: "syscall.mount", Doc: "performed on resolved fds; the runtime's mounts and sysvisord's masks cannot be unmounted"},
	{Name: "fsopen", Handler: enosysHandler{}, Knob: "syscall.mount", Doc: "new mount API: ENOSYS, so callers fall back to the checked mount(2)"},
	{Name: "fspick", Handler: enosysHandler{}, Knob: "syscall.mount", Doc: "new mount API: ENOSYS"},
	{Name: "open_tree", Handler: enosysHandler{}, Knob: "syscall.mount", Doc: "new mount API: ENOSYS"},
	{Name: "move_mount", Handler: enosysHandler{}, Knob: "syscall.mount", Doc: "new mount API: ENOSYS"},
	{Name: "mount_setattr", Handler: enosysHandler{}, Knob: "syscall.mount", Doc: "new mount API: ENOSYS"},
}

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
