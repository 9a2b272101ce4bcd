// Package catalog describes every syscall sysvisor can intercept: its name,
// the policy knob that governs it, the options its emulation takes, and what
// the emulation does. It is pure data, so that sysvisor-runc and sysvisorctl
// can validate policies without linking the handlers (and libseccomp).
// handlers/table.go binds each entry to its handler.
package catalog

// Option is one setting of an emulation, given in a policy's syscall block.
// Options are booleans; Default applies when a policy does not name it.
type Option struct {
	Name    string
	Default bool
	Doc     string
}

// Syscall is one interceptable syscall.
type Syscall struct {
	Name string
	// Knob is the policy setting family this syscall belongs to. Syscalls
	// sharing a knob protect one another: a policy that emulates one of
	// them must trap every other one (emulate or deny), or the emulation's
	// guarantees could be bypassed through an untrapped sibling.
	Knob string
	// Doc says what the emulation does.
	Doc     string
	Options []Option
	// When, if set, narrows the trap to calls whose argument matches:
	// the rest never leave the kernel, and keep whatever rule the engine's
	// profile has for them.
	When *ArgMatch
}

// ArgMatch matches syscall argument Index when arg & Mask == Value.
type ArgMatch struct {
	Index       uint
	Mask, Value uint64
}

// Syscalls is the catalog, in the order policies are explained.
var Syscalls = []Syscall{
	{Name: "sysinfo", Knob: "syscall.sysinfo", Doc: "uptime, RAM and task count of the container, from its cgroups"},
	{Name: "mount", Knob: "syscall.mount", Doc: "procfs/sysfs built with the container's masks; remount, bind and move performed on resolved fds, never touching protected mounts; other new mounts left to the kernel",
		Options: []Option{
			{Name: "procfs", Default: true, Doc: "build a new procfs (mount -t proc) for the caller, masked like the container's /proc; when false the call goes to the kernel, and a procfs it mounts lacks the container's masks and read-only paths"},
			{Name: "sysfs", Default: true, Doc: "build a new sysfs (mount -t sysfs) for the caller, masked like the container's /sys; when false the call goes to the kernel, and a sysfs it mounts lacks the container's masks"},
			{Name: "stubs", Default: true, Doc: "answer mounts of debugfs, tracefs, configfs, securityfs and pstore (which the kernel refuses in a user namespace) with an empty read-only tmpfs, so init systems that mount them at boot succeed and see nothing of the host's kernel; when false the kernel refuses them"},
		}},
	{Name: "umount2", Knob: "syscall.mount", Doc: "performed on resolved fds; the runtime's mounts and sysvisord's masks cannot be unmounted"},
	{Name: "fsopen", Knob: "syscall.mount", Doc: "new mount API: ENOSYS, so callers fall back to the checked mount(2)"},
	{Name: "fspick", Knob: "syscall.mount", Doc: "new mount API: ENOSYS"},
	{Name: "open_tree", Knob: "syscall.mount", Doc: "new mount API: ENOSYS"},
	{Name: "move_mount", Knob: "syscall.mount", Doc: "new mount API: ENOSYS"},
	{Name: "mount_setattr", Knob: "syscall.mount", Doc: "new mount API: ENOSYS"},
	{Name: "mknod", Knob: "syscall.mknod", Doc: "device nodes from a short allowlist (null, zero, full, random, urandom, tty, net/tun, fuse) created as the host's node bound over an empty file; other devices EPERM as the kernel answers; FIFOs, sockets, files and overlay whiteouts left to the kernel",
		Options: []Option{
			{Name: "devices", Default: true, Doc: "create the allowlisted devices; when false every device node gets the kernel's EPERM"},
		}},
	{Name: "mknodat", Knob: "syscall.mknod", Doc: "as mknod, relative to a directory fd",
		Options: []Option{
			{Name: "devices", Default: true, Doc: "as for mknod"},
		}},
	{Name: "seccomp", Knob: "syscall.seccomp", Doc: "only filters that ask for a notify listener (SECCOMP_FILTER_FLAG_NEW_LISTENER) are trapped: refused with EBUSY and a warning naming the container, since a filter chain holds one listener and the container's is sysvisord's; every other filter goes to the kernel untouched",
		When: &ArgMatch{Index: 1, Mask: 1 << 3, Value: 1 << 3}},
}

// Lookup returns the catalog entry for name.
func Lookup(name string) (*Syscall, bool) {
	for i := range Syscalls {
		if Syscalls[i].Name == name {
			return &Syscalls[i], true
		}
	}
	return nil, false
}

// Option returns the named option of s.
func (s *Syscall) Option(name string) (*Option, bool) {
	for i := range s.Options {
		if s.Options[i].Name == name {
			return &s.Options[i], true
		}
	}
	return nil, false
}
