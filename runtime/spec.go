// Package runtime is sysvisor-runc: it turns an engine's OCI bundle into a
// system container (user namespace with an exclusive ID range, full
// capabilities inside it, seccomp notify to sysvisord) and delegates the
// container's life to the real runc.
package runtime

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers/catalog"
)

// Annotations the runtime sets on the rewritten spec.
const (
	AnnotationIDBase = "io.sysvisor.id-base"
	AnnotationPolicy = "io.sysvisor.policy"
)

// RewriteOptions is everything the rewrite depends on besides the spec, so the
// rewrite itself is pure and table-tested.
type RewriteOptions struct {
	ContainerID string
	IDBase      uint32
	IDSize      uint32
	// HostCaps is the runtime's bounding set: the ceiling for any process.
	HostCaps []string
	// Rlimits maps RLIMIT_* names to the runtime's own hard limit.
	Rlimits map[string]uint64
	// OOMScoreAdjMin, when set, is the lowest oom_score_adj the runtime
	// can give the container: its own, where it lacks CAP_SYS_RESOURCE
	// (the kernel refuses to go lower, and runc dies with "can't get
	// final child's PID from pipe"). The CRI asks -998 for every pod.
	OOMScoreAdjMin *int
	// Policy and the syscalls it traps.
	Policy string
	Notify []string
	// ListenerPath is sysvisord's seccomp socket.
	ListenerPath string
	// SeccompFlags are flags to request, already filtered by what runc supports.
	SeccompFlags []specs.LinuxSeccompFlag
	// AllowUnsafe disables the refusal of privileged or host-namespace specs.
	AllowUnsafe bool
	// Self is sysvisor-runc's own path, for the hooks runc runs; empty: no hooks.
	Self string
	// Systemd: the container's init is systemd. Engine: the image runs a
	// container engine. Either makes it boot like a machine (freshRun).
	Systemd, Engine bool
	// AppArmor: the profile in place of the engine's default, and when
	// (runtime/apparmor.go).
	AppArmor AppArmorOptions
	// Pod: the container's place in a Kubernetes pod (runtime/pod.go).
	Pod PodOptions
	// LeafInHook: the delegation hook moves the container's processes
	// into their leaf cgroup itself (`run`: no `start` follows).
	LeafInHook bool
}

// Reallowed are syscalls an engine's default profile refuses because, on a
// plain container, they would act with host privilege. In a user namespace
// the kernel confines them to the container's own namespaces and resources,
// and system software (inner engines, systemd) needs them. The key
// management calls are among them: an inner runc joins a fresh session
// keyring for every container it starts and fails on EPERM. Keys belong to
// the caller's kuid, which here is the container's exclusive range, and
// their quota counts against it: no other container or host user shares a
// keyring or a quota with it.
var Reallowed = []string{
	"mount", "umount", "umount2", "unshare", "setns", "pivot_root", "chroot",
	"sethostname", "setdomainname", "clone", "clone3",
	"open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
	"process_vm_readv", "process_vm_writev", "kcmp", "vhangup", "reboot", "name_to_handle_at",
	"keyctl", "add_key", "request_key",
}

// SpecError is a rejected field of config.json.
type SpecError struct {
	Field string
	Msg   string
}

func (e *SpecError) Error() string { return fmt.Sprintf("config.json: %s: %s", e.Field, e.Msg) }

// Validate refuses specs that cannot be a safe system container.
func Validate(s *specs.Spec, allowUnsafe bool) error {
	if s.Linux == nil {
		return &SpecError{"linux", "missing: a system container needs Linux namespaces"}
	}
	if s.Process == nil {
		return &SpecError{"process", "missing"}
	}
	if s.Root == nil || s.Root.Path == "" {
		return &SpecError{"root.path", "missing"}
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.UserNamespace && ns.Path != "" {
			return &SpecError{"linux.namespaces", fmt.Sprintf("joining an existing user namespace (%s) is not supported: sysvisor gives every container its own", ns.Path)}
		}
	}
	if len(s.Linux.UIDMappings) > 0 || len(s.Linux.GIDMappings) > 0 {
		return &SpecError{"linux.uidMappings", "already set (engine userns-remap?): sysvisor assigns each container an exclusive range itself; disable userns-remap for this runtime"}
	}
	if allowUnsafe {
		return nil
	}
	// The host's IPC namespace too: its owner is the host's user
	// namespace, so the container's root could not even mount its
	// /dev/mqueue, and it would share the host's SysV IPC.
	for _, t := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.NetworkNamespace, specs.IPCNamespace} {
		if !hasNamespace(s, t) {
			return &SpecError{"linux.namespaces", fmt.Sprintf("no %s namespace: host %s namespace (--%s=host) is refused for system containers (runtime argument --allow-unsafe overrides)", t, t, map[specs.LinuxNamespaceType]string{specs.PIDNamespace: "pid", specs.NetworkNamespace: "net", specs.IPCNamespace: "ipc"}[t])}
		}
	}
	if privileged(s) {
		return &SpecError{"linux.maskedPaths", "privileged container (--privileged): refused, a sysvisor container is already root inside its own user namespace (runtime argument --allow-unsafe overrides)"}
	}
	return nil
}

func hasNamespace(s *specs.Spec, t specs.LinuxNamespaceType) bool {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == t {
			return true
		}
	}
	return false
}

// privileged recognises what engines generate for --privileged: no masked or
// read-only /proc paths and every device allowed.
func privileged(s *specs.Spec) bool {
	if len(s.Linux.MaskedPaths) > 0 || len(s.Linux.ReadonlyPaths) > 0 {
		return false
	}
	if s.Linux.Resources == nil {
		return false
	}
	for _, d := range s.Linux.Resources.Devices {
		if d.Allow && (d.Type == "" || d.Type == "a") && d.Major == nil && d.Minor == nil && d.Access == "rwm" {
			return true
		}
	}
	return false
}

// Rewrite turns s into a system container spec. It does not touch the host.
func Rewrite(s *specs.Spec, o RewriteOptions) error {
	if err := Validate(s, o.AllowUnsafe); err != nil {
		return err
	}
	if o.IDSize == 0 {
		return fmt.Errorf("rewrite: empty ID range")
	}
	rewritePodNamespaces(s, o.Pod)
	for _, t := range []specs.LinuxNamespaceType{specs.UserNamespace, specs.CgroupNamespace} {
		if !hasNamespace(s, t) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: t})
		}
	}
	s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: o.IDBase, Size: o.IDSize}}
	s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: o.IDBase, Size: o.IDSize}}

	clampPingGroupRange(s.Linux.Sysctl, o.IDSize)
	cgroupsWritable(s)
	addDelegateHook(s, o.Self, o.LeafInHook)
	if o.Systemd {
		forSystemd(s)
	}
	if o.Systemd || o.Engine {
		freshRun(s)
	}
	rewriteCaps(s.Process, o.HostCaps)
	clampRlimits(s.Process, o.Rlimits)
	clampOOMScoreAdj(s.Process, o.OOMScoreAdjMin)
	rewriteAppArmor(s, o.AppArmor)
	if err := rewriteSeccomp(s, o); err != nil {
		return err
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[AnnotationIDBase] = strconv.FormatUint(uint64(o.IDBase), 10)
	s.Annotations[AnnotationPolicy] = o.Policy
	return nil
}

// rewriteCaps gives root the host's whole bounding set; capabilities only act
// inside the container's user namespace. A non-root process keeps its engine
// sets (as a non-root user would on any host) within that bounding set.
func rewriteCaps(p *specs.Process, host []string) {
	given := p.Capabilities != nil
	if !given {
		p.Capabilities = &specs.LinuxCapabilities{}
	}
	c := p.Capabilities
	all := slices.Clone(host)
	// An empty list is left out of config.json: a capabilities object with
	// no bounding set is a drop of all (runc gives such a process none).
	if given {
		all = slices.DeleteFunc(all, func(n string) bool { return droppedCap(c.Bounding, n) })
	}
	within := func(l []string) []string {
		return slices.DeleteFunc(slices.Clone(l), func(n string) bool { return !slices.Contains(all, n) })
	}
	c.Bounding = all
	if p.User.UID == 0 {
		c.Effective = slices.Clone(all)
		c.Permitted = slices.Clone(all)
	} else {
		c.Effective = within(c.Effective)
		c.Permitted = within(c.Permitted)
	}
	c.Inheritable = within(c.Inheritable)
	c.Ambient = within(c.Ambient)
}

// engineDefaultCaps is the capability set Docker and containerd (the CRI
// too) give a container that asks for no change: the same fourteen.
var engineDefaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
	"CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// droppedCap says whether the engine's bounding set shows name dropped on
// purpose (--cap-drop, a pod's capabilities.drop): an empty set drops all
// (drop ALL), and a capability of the engines' default set that is missing
// was dropped. Everything else the container's root gets, whatever the
// engine's set: root of a system container holds every capability in its
// own user namespace.
func droppedCap(bounding []string, name string) bool {
	if len(bounding) == 0 {
		return true
	}
	return slices.Contains(engineDefaultCaps, name) && !slices.Contains(bounding, name)
}

// clampRlimits lowers limits above the runtime's hard limits: without
// CAP_SYS_RESOURCE on the host, runc cannot raise them and would fail.
func clampRlimits(p *specs.Process, host map[string]uint64) {
	for i := range p.Rlimits {
		r := &p.Rlimits[i]
		max, ok := host[r.Type]
		if !ok {
			continue
		}
		if r.Hard > max {
			r.Hard = max
		}
		if r.Soft > r.Hard {
			r.Soft = r.Hard
		}
	}
}

// clampOOMScoreAdj raises an oom_score_adj below what the runtime may set
// to that floor, as clampRlimits lowers what it cannot raise.
func clampOOMScoreAdj(p *specs.Process, floor *int) {
	if floor == nil || p.OOMScoreAdj == nil || *p.OOMScoreAdj >= *floor {
		return
	}
	v := *floor
	p.OOMScoreAdj = &v
}

// clampPingGroupRange keeps net.ipv4.ping_group_range inside the container's
// GIDs: engines set "0 2147483647", which the kernel refuses (EINVAL) for
// GIDs the user namespace does not map. A range that is empty, or lies wholly
// outside the container's GIDs, becomes the kernel's "nobody" value "1 0".
func clampPingGroupRange(sysctl map[string]string, size uint32) {
	v, ok := sysctl["net.ipv4.ping_group_range"]
	if !ok {
		return
	}
	var lo, hi uint64
	if _, err := fmt.Sscanf(v, "%d %d", &lo, &hi); err != nil {
		return
	}
	max := uint64(size) - 1
	if hi > max {
		hi = max
	}
	if lo > hi {
		lo, hi = 1, 0
	}
	sysctl["net.ipv4.ping_group_range"] = fmt.Sprintf("%d %d", lo, hi)
}

// allowsOutright reports whether the engine's profile lets name through
// whatever its arguments: the default action, or an allow rule without
// argument conditions (and no other rule naming it).
func allowsOutright(sc *specs.LinuxSeccomp, name string) bool {
	found := false
	for _, r := range sc.Syscalls {
		if !slices.Contains(r.Names, name) {
			continue
		}
		if r.Action != specs.ActAllow || len(r.Args) > 0 || found {
			return false
		}
		found = true
	}
	return found || sc.DefaultAction == specs.ActAllow
}

// deniedOnPurpose are the syscalls the profile refuses by a rule of its
// own, whatever the arguments: a profile written to forbid sethostname or
// mount (Kubernetes' localhost profiles) keeps forbidding them, and they
// are neither re-allowed nor trapped. An engine's default profile refuses
// what sysvisor re-allows by leaving it out, or with ENOSYS for a newer
// call that callers retry the old way (clone3): neither counts.
func deniedOnPurpose(sc *specs.LinuxSeccomp) map[string]bool {
	denied := map[string]bool{}
	for _, r := range sc.Syscalls {
		if r.Action == specs.ActAllow || r.Action == specs.ActLog || len(r.Args) > 0 {
			continue
		}
		if r.Action == specs.ActErrno && r.ErrnoRet != nil && *r.ErrnoRet == uint(unix.ENOSYS) {
			continue
		}
		for _, n := range r.Names {
			denied[n] = true
		}
	}
	return denied
}

// Metadata is the listenerMetadata sysvisord receives with each listener.
type Metadata struct {
	ID     string `json:"id"`
	Policy string `json:"policy"`
}

func rewriteSeccomp(s *specs.Spec, o RewriteOptions) error {
	if s.Linux.Seccomp == nil {
		// The engine asked for no filter (seccomp=unconfined): keep that,
		// adding only the notify rules.
		s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow}
	}
	sc := s.Linux.Seccomp
	if sc.DefaultAction == specs.ActNotify {
		return &SpecError{"linux.seccomp.defaultAction", "SCMP_ACT_NOTIFY as default action is not supported"}
	}
	if len(sc.Architectures) == 0 {
		sc.Architectures = defaultArches()
	}
	for _, r := range sc.Syscalls {
		if r.Action == specs.ActNotify {
			return &SpecError{"linux.seccomp.syscalls", fmt.Sprintf("the spec already traps %v to a listener; sysvisor owns the listener", r.Names)}
		}
	}
	if sc.ListenerPath != "" {
		return &SpecError{"linux.seccomp.listenerPath", fmt.Sprintf("already set to %q; sysvisor owns the listener", sc.ListenerPath)}
	}
	denied := deniedOnPurpose(sc)
	take := map[string]bool{}
	for _, n := range Reallowed {
		take[n] = !denied[n]
	}
	var notify []string
	var narrow []specs.LinuxSyscall
	for _, n := range o.Notify {
		if denied[n] {
			continue
		}
		if e, ok := catalog.Lookup(n); ok && e.When != nil {
			// Trapped for some arguments only. An unconditional rule
			// for the syscall would shadow an argument rule (libseccomp
			// keeps the catch-all), so the engine's allow is split in
			// two: notify where the argument matches, allow where it
			// does not. An engine that does not allow the call outright
			// keeps its own rule, untrapped.
			if !allowsOutright(sc, n) {
				continue
			}
			w := e.When
			narrow = append(narrow,
				specs.LinuxSyscall{Names: []string{n}, Action: specs.ActNotify,
					Args: []specs.LinuxSeccompArg{{Index: w.Index, Value: w.Mask, ValueTwo: w.Value, Op: specs.OpMaskedEqual}}},
				specs.LinuxSyscall{Names: []string{n}, Action: specs.ActAllow,
					Args: []specs.LinuxSeccompArg{{Index: w.Index, Value: w.Mask, ValueTwo: w.Value ^ w.Mask, Op: specs.OpMaskedEqual}}})
			take[n] = true
			continue
		}
		notify = append(notify, n)
		take[n] = true
	}
	rules := sc.Syscalls[:0]
	for _, r := range sc.Syscalls {
		// A syscall denied on purpose keeps only its deny rule.
		r.Names = slices.DeleteFunc(slices.Clone(r.Names), func(n string) bool { return take[n] || (denied[n] && r.Action == specs.ActAllow) })
		if len(r.Names) > 0 {
			rules = append(rules, r)
		}
	}
	allow := slices.DeleteFunc(slices.Clone(Reallowed), func(n string) bool { return slices.Contains(o.Notify, n) || denied[n] })
	if sc.DefaultAction != specs.ActAllow && len(allow) > 0 {
		rules = append(rules, specs.LinuxSyscall{Names: allow, Action: specs.ActAllow})
	}
	if len(notify) > 0 {
		rules = append(rules, specs.LinuxSyscall{Names: notify, Action: specs.ActNotify})
	}
	rules = append(rules, narrow...)
	if len(o.Notify) > 0 {
		sc.ListenerPath = o.ListenerPath
		meta, _ := json.Marshal(Metadata{ID: o.ContainerID, Policy: o.Policy})
		sc.ListenerMetadata = string(meta)
	}
	sc.Syscalls = rules
	for _, f := range o.SeccompFlags {
		if !slices.Contains(sc.Flags, f) {
			sc.Flags = append(sc.Flags, f)
		}
	}
	return nil
}
