package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestPodOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    map[string]string
		want pod
		err  string
	}{
		{"docker", map[string]string{"org.opencontainers.image.ref.name": "x"}, pod{}, ""},
		{"containerd sandbox", map[string]string{annotationCRIType: "sandbox", annotationCRISandboxID: "sb"}, pod{Role: podSandbox}, ""},
		{"containerd member", map[string]string{annotationCRIType: "container", annotationCRISandboxID: "sb"}, pod{Role: podMember, Sandbox: "sb"}, ""},
		{"cri-o sandbox", map[string]string{annotationCRIOType: "sandbox"}, pod{Role: podSandbox}, ""},
		{"cri-o member", map[string]string{annotationCRIOType: "container", annotationCRIOSandboxID: "sb2"}, pod{Role: podMember, Sandbox: "sb2"}, ""},
		{"member without sandbox", map[string]string{annotationCRIType: "container"}, pod{}, annotationCRISandboxID + " is missing"},
		{"unknown type", map[string]string{annotationCRIType: "podvm"}, pod{}, `unknown container type "podvm"`},
	} {
		got, err := podOf(tc.a)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "annotations") {
				t.Errorf("%s: %v, want an error naming the annotations with %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.name, got, err, tc.want)
		}
	}
}

// criSpec is a spec as containerd's CRI writes it for a pod's container.
func criSpec(t *testing.T, typ string) *specs.Spec {
	s := dockerSpec(t)
	s.Annotations = map[string]string{annotationCRIType: typ, annotationCRISandboxID: "sb"}
	s.Linux.Namespaces = []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.MountNamespace},
		{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1234"},
	}
	if typ == "container" {
		s.Linux.Namespaces = append(s.Linux.Namespaces,
			specs.LinuxNamespace{Type: specs.IPCNamespace, Path: "/proc/42/ns/ipc"},
			specs.LinuxNamespace{Type: specs.UTSNamespace, Path: "/proc/42/ns/uts"})
	} else {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.IPCNamespace}, specs.LinuxNamespace{Type: specs.UTSNamespace})
	}
	return s
}

func withPod(p PodOptions) RewriteOptions {
	o := testOptions()
	o.Pod = p
	return o
}

func namespaces(s *specs.Spec) map[specs.LinuxNamespaceType]string {
	m := map[specs.LinuxNamespaceType]string{}
	for _, ns := range s.Linux.Namespaces {
		if _, dup := m[ns.Type]; dup {
			m[ns.Type] = "DUPLICATE"
			continue
		}
		m[ns.Type] = ns.Path
	}
	return m
}

// The sandbox gets a network namespace of its own user namespace; a member
// joins the sandbox's user and network namespaces and keeps the CRI's IPC
// and UTS paths, with the pod's mappings.
func TestRewritePod(t *testing.T) {
	sb := criSpec(t, "sandbox")
	if err := Rewrite(sb, withPod(PodOptions{Sandbox: true})); err != nil {
		t.Fatal(err)
	}
	ns := namespaces(sb)
	if p, ok := ns[specs.NetworkNamespace]; !ok || p != "" {
		t.Errorf("sandbox network namespace %q (present %v), want a new one", p, ok)
	}
	if p, ok := ns[specs.UserNamespace]; !ok || p != "" {
		t.Errorf("sandbox user namespace %q (present %v), want a new one", p, ok)
	}

	m := criSpec(t, "container")
	err := Rewrite(m, withPod(PodOptions{UserNS: "/proc/42/ns/user", NetNS: "/proc/42/ns/net"}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[specs.LinuxNamespaceType]string{
		specs.PIDNamespace: "", specs.MountNamespace: "", specs.CgroupNamespace: "",
		specs.NetworkNamespace: "/proc/42/ns/net", specs.UserNamespace: "/proc/42/ns/user",
		specs.IPCNamespace: "/proc/42/ns/ipc", specs.UTSNamespace: "/proc/42/ns/uts",
	}
	if got := namespaces(m); len(got) != len(want) {
		t.Errorf("member namespaces %v, want %v", got, want)
	} else {
		for k, v := range want {
			if got[k] != v {
				t.Errorf("member %s namespace %q, want %q", k, got[k], v)
			}
		}
	}
	if len(m.Linux.UIDMappings) != 1 || m.Linux.UIDMappings[0].HostID != testBase || m.Linux.GIDMappings[0].HostID != testBase {
		t.Errorf("member mappings %+v %+v, want the pod's", m.Linux.UIDMappings, m.Linux.GIDMappings)
	}

	// Not a pod: namespaces as the engine asked, plus user and cgroup.
	d := criSpec(t, "sandbox")
	d.Annotations = nil
	if err := Rewrite(d, withPod(PodOptions{})); err != nil {
		t.Fatal(err)
	}
	if p := namespaces(d)[specs.NetworkNamespace]; p != "/var/run/netns/cni-1234" {
		t.Errorf("a container outside pods lost its network namespace path: %q", p)
	}
}

// hostUsers: false (containerd >= 2.0) and any other caller that brings a
// user namespace: refused, naming the field (docs/kubernetes.md).
func TestPodWithUserNamespaceRefused(t *testing.T) {
	s := criSpec(t, "sandbox")
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
	s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1 << 20, Size: 65536}}
	s.Linux.GIDMappings = s.Linux.UIDMappings
	err := Rewrite(s, withPod(PodOptions{Sandbox: true}))
	if err == nil || !strings.Contains(err.Error(), "linux.uidMappings") {
		t.Errorf("sandbox with its own mappings: %v", err)
	}
	m := criSpec(t, "container")
	m.Linux.Namespaces = append(m.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/proc/42/ns/user"})
	err = Rewrite(m, withPod(PodOptions{UserNS: "/proc/7/ns/user", NetNS: "/proc/7/ns/net"}))
	if err == nil || !strings.Contains(err.Error(), "linux.namespaces") {
		t.Errorf("member joining a user namespace of its own: %v", err)
	}
}

// Only a namespace bound on a file of its own is taken as the CRI's: not
// another process's by /proc/<pid>/ns/net, not a plain file.
func TestCRINetns(t *testing.T) {
	if err := criNetns("/proc/self/ns/net"); err == nil {
		t.Error("/proc/self/ns/net taken as a CRI's network namespace")
	}
	f := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := criNetns(f); err == nil {
		t.Error("a plain file taken as a CRI's network namespace")
	}
	if os.Geteuid() != 0 {
		t.Skip("binding a namespace needs root")
	}
	if err := unix.Mount("/proc/self/ns/net", f, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(f, unix.MNT_DETACH)
	if err := criNetns(f); err != nil {
		t.Errorf("a bound network namespace: %v", err)
	}
}
