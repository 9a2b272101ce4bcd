package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

const (
	testID       = "4f1e2d3c4b5a"
	testBase     = 268566528 // a block of a pool sysvisor would create
	testSize     = 65536
	testListener = "/run/sysvisor/seccomp.sock"
	waitKillable = specs.LinuxSeccompFlag("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")
)

// dockerSpec is what Docker 20.10 writes for `docker run -it --ulimit
// nofile=1048576 busybox sh` on a cgroup v1 host, with its default seccomp
// profile cut down to a representative fragment.
func dockerSpec(t *testing.T) *specs.Spec {
	t.Helper()
	b, err := os.ReadFile("testdata/docker-20.10-config.json")
	if err != nil {
		t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// allCaps is a root host's bounding set.
var allCaps = CapsFromMask(1<<41 - 1)

func testOptions() RewriteOptions {
	return RewriteOptions{
		ContainerID:  testID,
		IDBase:       testBase,
		IDSize:       testSize,
		HostCaps:     allCaps,
		Rlimits:      map[string]uint64{"RLIMIT_NOFILE": 524288, "RLIMIT_NPROC": 1 << 62, "RLIMIT_CORE": ^uint64(0)},
		Policy:       "default",
		Notify:       []string{"sysinfo"},
		ListenerPath: testListener,
		SeccompFlags: []specs.LinuxSeccompFlag{waitKillable},
	}
}

// privilegedSpec turns s into what engines generate for --privileged.
func makePrivileged(s *specs.Spec) {
	s.Linux.MaskedPaths = nil
	s.Linux.ReadonlyPaths = nil
	s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
}

func removeNamespace(s *specs.Spec, t specs.LinuxNamespaceType) {
	s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type == t })
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*specs.Spec)
		unsafe bool
		field  string // "" means valid
		msg    string // substring of the error
	}{
		{name: "docker default", mutate: func(*specs.Spec) {}},
		{name: "docker default, allow-unsafe", mutate: func(*specs.Spec) {}, unsafe: true},
		{name: "no linux section", mutate: func(s *specs.Spec) { s.Linux = nil }, field: "linux"},
		{name: "no linux section, allow-unsafe", mutate: func(s *specs.Spec) { s.Linux = nil }, unsafe: true, field: "linux"},
		{name: "no process", mutate: func(s *specs.Spec) { s.Process = nil }, field: "process"},
		{name: "no root", mutate: func(s *specs.Spec) { s.Root = nil }, field: "root.path"},
		{name: "empty root path", mutate: func(s *specs.Spec) { s.Root.Path = "" }, field: "root.path"},
		{
			name: "joins an existing user namespace",
			mutate: func(s *specs.Spec) {
				s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/proc/42/ns/user"})
			},
			field: "linux.namespaces", msg: "/proc/42/ns/user",
		},
		{
			name: "joins an existing user namespace, allow-unsafe",
			mutate: func(s *specs.Spec) {
				s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/proc/42/ns/user"})
			},
			unsafe: true, field: "linux.namespaces", msg: "/proc/42/ns/user",
		},
		{
			name: "new user namespace without mappings",
			mutate: func(s *specs.Spec) {
				s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
			},
		},
		{
			name: "uid mappings from userns-remap",
			mutate: func(s *specs.Spec) {
				s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
				s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
			},
			field: "linux.uidMappings", msg: "userns-remap",
		},
		{
			name:   "gid mappings only",
			mutate: func(s *specs.Spec) { s.Linux.GIDMappings = []specs.LinuxIDMapping{{HostID: 100000, Size: 1}} },
			field:  "linux.uidMappings",
		},
		{
			name: "uid mappings, allow-unsafe",
			mutate: func(s *specs.Spec) {
				s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 100000, Size: 65536}}
			},
			unsafe: true, field: "linux.uidMappings",
		},
		{name: "host pid namespace", mutate: func(s *specs.Spec) { removeNamespace(s, specs.PIDNamespace) }, field: "linux.namespaces", msg: "--pid=host"},
		{name: "host pid namespace, allow-unsafe", mutate: func(s *specs.Spec) { removeNamespace(s, specs.PIDNamespace) }, unsafe: true},
		{name: "host network namespace", mutate: func(s *specs.Spec) { removeNamespace(s, specs.NetworkNamespace) }, field: "linux.namespaces", msg: "--net=host"},
		{name: "host network namespace, allow-unsafe", mutate: func(s *specs.Spec) { removeNamespace(s, specs.NetworkNamespace) }, unsafe: true},
		{name: "host IPC namespace", mutate: func(s *specs.Spec) { removeNamespace(s, specs.IPCNamespace) }, field: "linux.namespaces", msg: "--ipc=host"},
		{name: "privileged", mutate: makePrivileged, field: "linux.maskedPaths", msg: "--privileged"},
		{name: "privileged, allow-unsafe", mutate: makePrivileged, unsafe: true},
		{
			name: "privileged with an explicit all-devices type",
			mutate: func(s *specs.Spec) {
				makePrivileged(s)
				s.Linux.Resources.Devices = append([]specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}, specs.LinuxDeviceCgroup{Allow: true, Type: "a", Access: "rwm"})
			},
			field: "linux.maskedPaths",
		},
		{
			name: "systempaths=unconfined is not privileged",
			mutate: func(s *specs.Spec) {
				s.Linux.MaskedPaths = nil
				s.Linux.ReadonlyPaths = nil
			},
		},
		{
			name: "all devices allowed but /proc masked is not privileged",
			mutate: func(s *specs.Spec) {
				s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
			},
		},
		{
			name: "all devices readable only is not privileged",
			mutate: func(s *specs.Spec) {
				makePrivileged(s)
				s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "r"}}
			},
		},
		{
			name: "no resources is not privileged",
			mutate: func(s *specs.Spec) {
				makePrivileged(s)
				s.Linux.Resources = nil
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := dockerSpec(t)
			tc.mutate(s)
			err := Validate(s, tc.unsafe)
			if tc.field == "" {
				if err != nil {
					t.Fatalf("Validate: %v, want nil", err)
				}
				return
			}
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("Validate: %v, want a *SpecError for %s", err, tc.field)
			}
			if se.Field != tc.field {
				t.Errorf("field %q, want %q (%v)", se.Field, tc.field, err)
			}
			if !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "config.json: "+tc.field+": ") {
				t.Errorf("error %q does not name %q and %q", err, tc.field, tc.msg)
			}
		})
	}
}

// toJSON is v as runc would read it.
func toJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// jsonDiff lists the paths where a and b (decoded JSON) differ.
func jsonDiff(path string, a, b any, out *[]string) {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			*out = append(*out, fmt.Sprintf("%s: %v != %v", path, a, b))
			return
		}
		keys := map[string]bool{}
		for k := range av {
			keys[k] = true
		}
		for k := range bv {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			jsonDiff(path+"."+k, av[k], bv[k], out)
		}
	case []any:
		bv, ok := b.([]any)
		if !ok || len(av) != len(bv) {
			*out = append(*out, fmt.Sprintf("%s:\n\tgot  %v\n\twant %v", path, a, b))
			return
		}
		for i := range av {
			jsonDiff(fmt.Sprintf("%s[%d]", path, i), av[i], bv[i], out)
		}
	default:
		if !reflect.DeepEqual(a, b) {
			*out = append(*out, fmt.Sprintf("%s: got %v, want %v", path, a, b))
		}
	}
}

func assertSameJSON(t *testing.T, got, want any) {
	t.Helper()
	var d []string
	jsonDiff("", toJSON(t, got), toJSON(t, want), &d)
	for _, l := range d {
		t.Error(l)
	}
}

func without(l []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(l), func(n string) bool { return slices.Contains(drop, n) })
}

// TestRewriteDocker spells out the whole expected result of rewriting the
// Docker spec, so any change Rewrite makes that is not listed here fails.
func TestRewriteDocker(t *testing.T) {
	got := dockerSpec(t)
	if err := Rewrite(got, testOptions()); err != nil {
		t.Fatal(err)
	}

	want := dockerSpec(t)
	l := want.Linux
	l.Namespaces = append(l.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace}, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	l.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: testBase, Size: testSize}}
	l.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: testBase, Size: testSize}}
	l.Sysctl["net.ipv4.ping_group_range"] = "0 65535"
	// The cgroup mount becomes writable: the cgroup namespace shows only
	// the container's subtree (cgroupsWritable).
	for i := range want.Mounts {
		if want.Mounts[i].Type == "cgroup" {
			want.Mounts[i].Options = []string{"nosuid", "noexec", "nodev", "rw"}
		}
	}
	c := want.Process.Capabilities
	c.Bounding, c.Effective, c.Permitted = allCaps, allCaps, allCaps
	// Inheritable stays the engine's (all within the host set); Ambient empty.
	want.Process.Rlimits = []specs.POSIXRlimit{
		{Type: "RLIMIT_NOFILE", Hard: 524288, Soft: 524288},
		{Type: "RLIMIT_NPROC", Hard: 4096, Soft: 4096},
		{Type: "RLIMIT_CORE", Hard: 0, Soft: 0},
	}
	sc := l.Seccomp
	rules := sc.Syscalls
	if rules[1].Names[0] != "process_vm_readv" || rules[8].Names[0] != "chroot" || len(rules) != 11 {
		t.Fatal("testdata changed: update the expected rules")
	}
	sc.Syscalls = []specs.LinuxSyscall{
		{Names: without(rules[0].Names, "sysinfo"), Action: specs.ActAllow},
		{Names: []string{"ptrace"}, Action: specs.ActAllow},
		rules[2], rules[3], rules[4], rules[5], rules[6], // personality, with their args
		rules[7], // arch_prctl, modify_ldt
		// chroot, the conditional clone and clone3's ENOSYS are gone: re-allowed below.
		{Names: Reallowed, Action: specs.ActAllow},
		{Names: []string{"sysinfo"}, Action: specs.ActNotify},
	}
	sc.Flags = []specs.LinuxSeccompFlag{waitKillable}
	sc.ListenerPath = testListener
	sc.ListenerMetadata = `{"id":"4f1e2d3c4b5a","policy":"default"}`
	want.Annotations["io.sysvisor.id-base"] = "268566528"
	want.Annotations["io.sysvisor.policy"] = "default"

	assertSameJSON(t, got, want)

	// What sysvisord decodes from the metadata.
	var m Metadata
	if err := json.Unmarshal([]byte(got.Linux.Seccomp.ListenerMetadata), &m); err != nil || m != (Metadata{ID: testID, Policy: "default"}) {
		t.Errorf("listenerMetadata %q decodes to %+v, %v", got.Linux.Seccomp.ListenerMetadata, m, err)
	}
	if *got.Linux.Seccomp.DefaultErrnoRet != 1 {
		t.Errorf("defaultErrnoRet changed to %d", *got.Linux.Seccomp.DefaultErrnoRet)
	}
}

// syscallRules maps each syscall name to the indexes of the rules naming it.
func syscallRules(sc *specs.LinuxSeccomp) map[string][]int {
	out := map[string][]int{}
	for i, r := range sc.Syscalls {
		for _, n := range r.Names {
			out[n] = append(out[n], i)
		}
	}
	return out
}

func TestRewriteSeccompRules(t *testing.T) {
	got := dockerSpec(t)
	o := testOptions()
	if err := Rewrite(got, o); err != nil {
		t.Fatal(err)
	}
	sc := got.Linux.Seccomp
	by := syscallRules(sc)
	for _, n := range Reallowed {
		idx := by[n]
		if len(idx) != 1 {
			t.Errorf("%s is in %d rules, want exactly 1", n, len(idx))
			continue
		}
		r := sc.Syscalls[idx[0]]
		if r.Action != specs.ActAllow || len(r.Args) != 0 {
			t.Errorf("%s: rule %+v, want an unconditional allow", n, r)
		}
	}
	if idx := by["sysinfo"]; len(idx) != 1 || sc.Syscalls[idx[0]].Action != specs.ActNotify {
		t.Errorf("sysinfo rules %v, want one SCMP_ACT_NOTIFY rule", idx)
	}
	notify := 0
	for _, r := range sc.Syscalls {
		if r.Action == specs.ActNotify {
			notify++
		}
	}
	if notify != 1 {
		t.Errorf("%d notify rules, want 1", notify)
	}
	// Conditional engine rules for syscalls sysvisor does not touch survive.
	if len(by["personality"]) != 5 {
		t.Errorf("personality rules %v, want the engine's 5", by["personality"])
	}
	if sc.DefaultAction != specs.ActErrno {
		t.Errorf("default action %s, want the engine's %s", sc.DefaultAction, specs.ActErrno)
	}
	if !slices.Equal(sc.Architectures, []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}) {
		t.Errorf("architectures %v, want the engine's", sc.Architectures)
	}
}

func TestRewriteNotifyOverridesReallowed(t *testing.T) {
	s := dockerSpec(t)
	o := testOptions()
	o.Notify = []string{"mount", "sysinfo"}
	if err := Rewrite(s, o); err != nil {
		t.Fatal(err)
	}
	sc := s.Linux.Seccomp
	by := syscallRules(sc)
	for _, n := range []string{"mount", "sysinfo"} {
		if idx := by[n]; len(idx) != 1 || sc.Syscalls[idx[0]].Action != specs.ActNotify {
			t.Errorf("%s: rules %v, want only the notify rule", n, idx)
		}
	}
	if idx := by["umount2"]; len(idx) != 1 || sc.Syscalls[idx[0]].Action != specs.ActAllow {
		t.Errorf("umount2: rules %v, want the allow rule", idx)
	}
	last := sc.Syscalls[len(sc.Syscalls)-1]
	if !slices.Equal(last.Names, []string{"mount", "sysinfo"}) || last.Action != specs.ActNotify {
		t.Errorf("last rule %+v, want notify for mount and sysinfo", last)
	}
}

func TestRewriteWithoutSeccomp(t *testing.T) {
	t.Run("notify", func(t *testing.T) {
		s := dockerSpec(t)
		s.Linux.Seccomp = nil // --security-opt seccomp=unconfined
		if err := Rewrite(s, testOptions()); err != nil {
			t.Fatal(err)
		}
		want := &specs.LinuxSeccomp{
			DefaultAction:    specs.ActAllow,
			Architectures:    defaultArches(), // 32-bit programs keep working
			Flags:            []specs.LinuxSeccompFlag{waitKillable},
			ListenerPath:     testListener,
			ListenerMetadata: `{"id":"4f1e2d3c4b5a","policy":"default"}`,
			// No re-allow rule: everything is allowed already.
			Syscalls: []specs.LinuxSyscall{{Names: []string{"sysinfo"}, Action: specs.ActNotify}},
		}
		assertSameJSON(t, s.Linux.Seccomp, want)
	})
	t.Run("no notify", func(t *testing.T) {
		s := dockerSpec(t)
		s.Linux.Seccomp = nil
		o := testOptions()
		o.Notify = nil
		o.SeccompFlags = nil
		if err := Rewrite(s, o); err != nil {
			t.Fatal(err)
		}
		sc := s.Linux.Seccomp
		if sc.DefaultAction != specs.ActAllow || len(sc.Syscalls) != 0 || sc.ListenerPath != "" || sc.ListenerMetadata != "" {
			t.Errorf("seccomp %+v, want allow-all without a listener", sc)
		}
	})
}

func TestRewriteErrors(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*specs.Spec, *RewriteOptions)
		msg    string
	}{
		{"empty ID range", func(_ *specs.Spec, o *RewriteOptions) { o.IDSize = 0 }, "empty ID range"},
		{"invalid spec", func(s *specs.Spec, _ *RewriteOptions) { makePrivileged(s) }, "--privileged"},
		{"notify as default action", func(s *specs.Spec, _ *RewriteOptions) { s.Linux.Seccomp.DefaultAction = specs.ActNotify }, "linux.seccomp.defaultAction"},
		{
			"engine traps to its own listener",
			func(s *specs.Spec, _ *RewriteOptions) {
				s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: []string{"mknod"}, Action: specs.ActNotify})
			},
			"[mknod]",
		},
		{"listener path already set", func(s *specs.Spec, _ *RewriteOptions) { s.Linux.Seccomp.ListenerPath = "/run/other.sock" }, "/run/other.sock"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := dockerSpec(t)
			o := testOptions()
			tc.mutate(s, &o)
			err := Rewrite(s, o)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Rewrite: %v, want an error mentioning %q", err, tc.msg)
			}
		})
	}
}

var enosys = uint(unix.ENOSYS)

// A profile that refuses a syscall by a rule of its own (a Kubernetes
// localhost profile blocking sethostname) keeps refusing it: not re-allowed,
// not trapped. The engine's ENOSYS for clone3 is still overridden.
func TestRewriteKeepsDeniedOnPurpose(t *testing.T) {
	s := dockerSpec(t)
	s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls,
		specs.LinuxSyscall{Names: []string{"sethostname", "sysinfo"}, Action: specs.ActErrno},
		specs.LinuxSyscall{Names: []string{"mount"}, Action: specs.ActKillProcess},
		specs.LinuxSyscall{Names: []string{"unshare"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 0, Value: 1, Op: specs.OpEqualTo}}})
	if err := Rewrite(s, testOptions()); err != nil {
		t.Fatal(err)
	}
	by := syscallRules(s.Linux.Seccomp)
	action := func(n string) []specs.LinuxSeccompAction {
		var a []specs.LinuxSeccompAction
		for _, i := range by[n] {
			a = append(a, s.Linux.Seccomp.Syscalls[i].Action)
		}
		return a
	}
	for n, want := range map[string]specs.LinuxSeccompAction{
		"sethostname": specs.ActErrno, "sysinfo": specs.ActErrno, "mount": specs.ActKillProcess,
		// Conditional or ENOSYS: the engine's kind, overridden.
		"unshare": specs.ActAllow, "clone3": specs.ActAllow, "setns": specs.ActAllow,
	} {
		if got := action(n); len(got) != 1 || got[0] != want {
			t.Errorf("%s: rules with actions %v, want one %s", n, got, want)
		}
	}
}

func TestRewriteNoDuplicates(t *testing.T) {
	s := dockerSpec(t)
	// The engine already asked for a user and a cgroup namespace, a flag
	// sysvisor also wants, and allows syscalls sysvisor re-allows or traps.
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace}, specs.LinuxNamespace{Type: specs.UserNamespace})
	s.Linux.Seccomp.Flags = []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_LOG", waitKillable}
	s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls,
		specs.LinuxSyscall{Names: []string{"mount", "setns", "sysinfo"}, Action: specs.ActAllow},
		specs.LinuxSyscall{Names: []string{"unshare", "sysinfo"}, Action: specs.ActErrno, ErrnoRet: &enosys})
	if err := Rewrite(s, testOptions()); err != nil {
		t.Fatal(err)
	}
	count := map[specs.LinuxNamespaceType]int{}
	for _, ns := range s.Linux.Namespaces {
		count[ns.Type]++
	}
	for typ, n := range count {
		if n != 1 {
			t.Errorf("%d %s namespaces, want 1", n, typ)
		}
	}
	if !slices.Equal(s.Linux.Seccomp.Flags, []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_LOG", waitKillable}) {
		t.Errorf("flags %v", s.Linux.Seccomp.Flags)
	}
	by := syscallRules(s.Linux.Seccomp)
	for _, n := range append(slices.Clone(Reallowed), "sysinfo") {
		if len(by[n]) != 1 {
			t.Errorf("%s appears in rules %v, want exactly one", n, by[n])
		}
	}
	for _, r := range s.Linux.Seccomp.Syscalls {
		if len(r.Names) == 0 {
			t.Errorf("empty rule %+v left behind", r)
		}
	}
}

func TestRewriteTwice(t *testing.T) {
	// Deterministic: two rewrites of the same input agree.
	a, b := dockerSpec(t), dockerSpec(t)
	if err := Rewrite(a, testOptions()); err != nil {
		t.Fatal(err)
	}
	if err := Rewrite(b, testOptions()); err != nil {
		t.Fatal(err)
	}
	assertSameJSON(t, a, b)

	// A rewritten spec is refused, not rewritten again with stacked rules,
	// and is left as it was.
	before := toJSON(t, a)
	err := Rewrite(a, testOptions())
	var se *SpecError
	if !errors.As(err, &se) || se.Field != "linux.uidMappings" {
		t.Fatalf("second Rewrite: %v, want the uidMappings refusal", err)
	}
	assertSameJSON(t, a, before)
}

func TestRewriteCaps(t *testing.T) {
	host := []string{"CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID"}
	tests := []struct {
		name string
		uid  uint32
		caps *specs.LinuxCapabilities
		want *specs.LinuxCapabilities
	}{
		{
			name: "root gets the host bounding set",
			caps: &specs.LinuxCapabilities{
				Bounding:    engineDefaultCaps,
				Effective:   engineDefaultCaps,
				Permitted:   engineDefaultCaps,
				Inheritable: []string{"CAP_MKNOD", "CAP_KILL"},
				Ambient:     []string{"CAP_SYS_MODULE"},
			},
			want: &specs.LinuxCapabilities{Bounding: host, Effective: host, Permitted: host, Inheritable: []string{"CAP_KILL"}},
		},
		{
			// --cap-drop, a pod's capabilities.drop: missing from the
			// engines' default set.
			name: "root keeps dropped capabilities dropped",
			caps: &specs.LinuxCapabilities{
				Bounding:  slices.DeleteFunc(slices.Clone(engineDefaultCaps), func(n string) bool { return n == "CAP_KILL" || n == "CAP_SETUID" }),
				Effective: []string{"CAP_CHOWN"},
				Ambient:   []string{"CAP_KILL"},
			},
			want: func() *specs.LinuxCapabilities {
				l := []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN", "CAP_SETGID"}
				return &specs.LinuxCapabilities{Bounding: l, Effective: l, Permitted: l}
			}(),
		},
		{
			name: "root with all dropped",
			caps: &specs.LinuxCapabilities{},
			want: &specs.LinuxCapabilities{Bounding: []string{}, Effective: []string{}, Permitted: []string{}},
		},
		{
			name: "root without capabilities in the spec",
			want: &specs.LinuxCapabilities{Bounding: host, Effective: host, Permitted: host},
		},
		{
			name: "non-root keeps its sets within the host's",
			uid:  1000,
			caps: &specs.LinuxCapabilities{
				Bounding:  []string{"CAP_NET_BIND_SERVICE"},
				Effective: []string{"CAP_NET_BIND_SERVICE", "CAP_SYS_MODULE"},
				Permitted: []string{"CAP_NET_BIND_SERVICE", "CAP_SYS_MODULE"},
				Ambient:   []string{"CAP_NET_BIND_SERVICE", "CAP_BPF"},
			},
			want: &specs.LinuxCapabilities{
				// The defaults it lacks count as dropped.
				Bounding:  []string{"CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"},
				Effective: []string{"CAP_NET_BIND_SERVICE"},
				Permitted: []string{"CAP_NET_BIND_SERVICE"},
				Ambient:   []string{"CAP_NET_BIND_SERVICE"},
			},
		},
		{
			name: "non-root without capabilities",
			uid:  1000,
			want: &specs.LinuxCapabilities{Bounding: host},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := &specs.Process{User: specs.User{UID: tc.uid}, Capabilities: tc.caps}
			rewriteCaps(p, host)
			assertSameJSON(t, p.Capabilities, tc.want)
			// The sets must not share memory with the host list, which
			// the caller keeps.
			c := p.Capabilities
			for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted} {
				if len(set) > 0 && &set[0] == &host[0] {
					t.Errorf("capability set aliases the host set")
				}
			}
		})
	}
}

func TestClampRlimits(t *testing.T) {
	host := map[string]uint64{"RLIMIT_NOFILE": 1024, "RLIMIT_NPROC": 1 << 40}
	in := []specs.POSIXRlimit{
		{Type: "RLIMIT_NOFILE", Hard: 1048576, Soft: 1048576},  // both above
		{Type: "RLIMIT_NOFILE", Hard: 4096, Soft: 512},         // hard above, soft within
		{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024},        // at the limit
		{Type: "RLIMIT_NPROC", Hard: 100, Soft: 200},           // soft above hard
		{Type: "RLIMIT_MEMLOCK", Hard: 1 << 50, Soft: 1 << 50}, // unknown to the host: kept
	}
	want := []specs.POSIXRlimit{
		{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024},
		{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 512},
		{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024},
		{Type: "RLIMIT_NPROC", Hard: 100, Soft: 100},
		{Type: "RLIMIT_MEMLOCK", Hard: 1 << 50, Soft: 1 << 50},
	}
	p := &specs.Process{Rlimits: in}
	clampRlimits(p, host)
	if !reflect.DeepEqual(p.Rlimits, want) {
		t.Errorf("rlimits\n\tgot  %+v\n\twant %+v", p.Rlimits, want)
	}
}

func TestClampOOMScoreAdj(t *testing.T) {
	n := func(v int) *int { return &v }
	for _, tc := range []struct {
		asked, floor, want *int
	}{
		{n(-998), n(0), n(0)},       // the CRI's sandbox value on a host without CAP_SYS_RESOURCE
		{n(-998), n(-999), n(-998)}, // the runtime runs lower already
		{n(500), n(0), n(500)},      // raising needs nothing
		{n(-998), nil, n(-998)},     // with CAP_SYS_RESOURCE: as asked
		{nil, n(0), nil},            // not asked: inherited, nothing to clamp
	} {
		p := &specs.Process{OOMScoreAdj: tc.asked}
		clampOOMScoreAdj(p, tc.floor)
		if !reflect.DeepEqual(p.OOMScoreAdj, tc.want) {
			t.Errorf("asked %v, floor %v: got %v, want %v", deref(tc.asked), deref(tc.floor), deref(p.OOMScoreAdj), deref(tc.want))
		}
	}
	// Through Rewrite.
	s := dockerSpec(t)
	s.Process.OOMScoreAdj = n(-998)
	o := testOptions()
	o.OOMScoreAdjMin = n(-10)
	if err := Rewrite(s, o); err != nil {
		t.Fatal(err)
	}
	if *s.Process.OOMScoreAdj != -10 {
		t.Errorf("Rewrite: oomScoreAdj %d, want the floor -10", *s.Process.OOMScoreAdj)
	}
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestClampPingGroupRange(t *testing.T) {
	tests := []struct {
		name string
		in   string
		size uint32
		want string
	}{
		{"engine default", "0 2147483647", 65536, "0 65535"},
		{"just above", "0 65536", 65536, "0 65535"},
		{"inside", "100 200", 65536, "100 200"},
		{"whole range", "0 65535", 65536, "0 65535"},
		{"upper part", "1000 4000000", 65536, "1000 65535"},
		{"kernel default: nobody", "1 0", 65536, "1 0"},
		{"outside the container", "70000 80000", 65536, "1 0"},
		{"single ID", "0 2147483647", 1, "0 0"},
		{"unparseable", "all", 65536, "all"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]string{"net.ipv4.ping_group_range": tc.in, "net.ipv4.ip_unprivileged_port_start": "0"}
			clampPingGroupRange(m, tc.size)
			if got := m["net.ipv4.ping_group_range"]; got != tc.want {
				t.Errorf("%q with %d IDs: got %q, want %q", tc.in, tc.size, got, tc.want)
			}
			if m["net.ipv4.ip_unprivileged_port_start"] != "0" || len(m) != 2 {
				t.Errorf("other sysctls changed: %v", m)
			}
		})
	}
	t.Run("absent", func(t *testing.T) {
		m := map[string]string{}
		clampPingGroupRange(m, 65536)
		clampPingGroupRange(nil, 65536)
		if len(m) != 0 {
			t.Errorf("added %v", m)
		}
	})
}

func TestRewriteAnnotations(t *testing.T) {
	s := dockerSpec(t)
	s.Annotations = nil
	o := testOptions()
	o.Policy = "custom"
	o.IDBase = 4294901760 - testSize
	if err := Rewrite(s, o); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{AnnotationIDBase: "4294836224", AnnotationPolicy: "custom"}
	if !reflect.DeepEqual(s.Annotations, want) {
		t.Errorf("annotations %v, want %v", s.Annotations, want)
	}
	if AnnotationIDBase != "io.sysvisor.id-base" || AnnotationPolicy != "io.sysvisor.policy" {
		t.Errorf("annotation keys changed: %s %s", AnnotationIDBase, AnnotationPolicy)
	}
}

// TestRewriteNarrowTrap: a syscall trapped for some arguments only
// (seccomp with NEW_LISTENER) splits the engine's allow in two; a profile
// that does not allow it outright keeps its rule, untrapped.
func TestRewriteNarrowTrap(t *testing.T) {
	s := dockerSpec(t)
	// Docker's real profile allows it with the rest.
	s.Linux.Seccomp.Syscalls[0].Names = append(s.Linux.Seccomp.Syscalls[0].Names, "seccomp")
	o := testOptions()
	o.Notify = []string{"sysinfo", "seccomp"}
	if err := Rewrite(s, o); err != nil {
		t.Fatal(err)
	}
	var notify, allow []specs.LinuxSyscall
	for _, r := range s.Linux.Seccomp.Syscalls {
		if !slices.Contains(r.Names, "seccomp") {
			continue
		}
		if len(r.Names) != 1 || len(r.Args) != 1 {
			t.Fatalf("seccomp still in an unconditional rule: %+v", r)
		}
		switch r.Action {
		case specs.ActNotify:
			notify = append(notify, r)
		case specs.ActAllow:
			allow = append(allow, r)
		}
	}
	want := specs.LinuxSeccompArg{Index: 1, Value: 8, ValueTwo: 8, Op: specs.OpMaskedEqual}
	if len(notify) != 1 || notify[0].Args[0] != want {
		t.Errorf("notify rules %+v", notify)
	}
	want.ValueTwo = 0
	if len(allow) != 1 || allow[0].Args[0] != want {
		t.Errorf("allow rules %+v", allow)
	}
	// A profile that refuses seccomp keeps refusing it.
	s = dockerSpec(t)
	for i := range s.Linux.Seccomp.Syscalls {
		r := &s.Linux.Seccomp.Syscalls[i]
		r.Names = without(r.Names, "seccomp")
	}
	s.Linux.Seccomp.Syscalls = append(s.Linux.Seccomp.Syscalls, specs.LinuxSyscall{Names: []string{"seccomp"}, Action: specs.ActErrno})
	if err := Rewrite(s, o); err != nil {
		t.Fatal(err)
	}
	for _, r := range s.Linux.Seccomp.Syscalls {
		if slices.Contains(r.Names, "seccomp") && r.Action != specs.ActErrno {
			t.Errorf("seccomp re-allowed or trapped: %+v", r)
		}
	}
}
