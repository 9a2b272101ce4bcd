package runtime

import (
	"fmt"
	"os"
	"os/exec"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/netmove"
)

// A Kubernetes pod is one sandbox (the pause container) and app containers
// that join the sandbox's network, IPC and UTS namespaces. A process of
// another user namespace could join them but not act in them as their
// owner (hostname, sysfs, an inner engine's bridge), so every container of
// a pod shares the sandbox's user namespace and ID lease. The CRI's
// network namespace is the host's user namespace's: the sandbox gets a new
// one inside its own user namespace instead, and the links CNI configured
// are moved into it (movePodNetwork). docs/kubernetes.md has the whole
// design.

// The annotations containerd's CRI and CRI-O put on every spec of a pod.
const (
	annotationCRIType       = "io.kubernetes.cri.container-type"
	annotationCRISandboxID  = "io.kubernetes.cri.sandbox-id"
	annotationCRIOType      = "io.kubernetes.cri-o.ContainerType"
	annotationCRIOSandboxID = "io.kubernetes.cri-o.SandboxID"
)

// podRole is a container's place in a pod.
type podRole int

const (
	notInPod podRole = iota
	podSandbox
	podMember
)

// pod is what a spec says of its pod.
type pod struct {
	Role podRole
	// Sandbox is the sandbox's container id (members only): the pod's
	// lease and namespaces are that container's.
	Sandbox string
}

// podOf reads the pod from the CRI's annotations. A spec without them is
// not in a pod (Docker, ctr, runc's CLI).
func podOf(a map[string]string) (pod, error) {
	for _, k := range [][2]string{{annotationCRIType, annotationCRISandboxID}, {annotationCRIOType, annotationCRIOSandboxID}} {
		typ, ok := a[k[0]]
		if !ok {
			continue
		}
		switch typ {
		case "sandbox":
			return pod{Role: podSandbox}, nil
		case "container":
			id := a[k[1]]
			if id == "" {
				return pod{}, &SpecError{"annotations", fmt.Sprintf("%s is %q but %s is missing: the pod's sandbox is unknown", k[0], typ, k[1])}
			}
			return pod{Role: podMember, Sandbox: id}, nil
		default:
			return pod{}, &SpecError{"annotations", fmt.Sprintf("%s: unknown container type %q (want sandbox or container)", k[0], typ)}
		}
	}
	return pod{}, nil
}

// PodOptions is the rewrite's part for a pod's containers.
type PodOptions struct {
	// Sandbox: the spec is a pod's sandbox. Its network namespace is made
	// new, so that its own user namespace owns it.
	Sandbox bool
	// UserNS and NetNS are the sandbox's namespaces, which a member joins
	// (/proc/<pause>/ns/user and net).
	UserNS, NetNS string
}

// rewritePodNamespaces points the spec's namespaces where the pod's are.
// A member keeps its ID mappings: runc writes none when it joins a user
// namespace, but computes the host IDs of the container's root from them
// (they are the sandbox's: one lease per pod).
func rewritePodNamespaces(s *specs.Spec, o PodOptions) {
	set := func(t specs.LinuxNamespaceType, path string) {
		for i := range s.Linux.Namespaces {
			if s.Linux.Namespaces[i].Type == t {
				s.Linux.Namespaces[i].Path = path
				return
			}
		}
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: t, Path: path})
	}
	switch {
	case o.Sandbox:
		if hasNamespace(s, specs.NetworkNamespace) {
			set(specs.NetworkNamespace, "")
		}
	case o.UserNS != "":
		set(specs.UserNamespace, o.UserNS)
		set(specs.NetworkNamespace, o.NetNS)
	}
}

// nsPath is the path the spec gives for a namespace of type t ("" if new
// or absent).
func nsPath(s *specs.Spec, t specs.LinuxNamespaceType) string {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == t {
			return ns.Path
		}
	}
	return ""
}

// podOptions prepares the rewrite for the container's pod. It returns the
// CRI's network namespace of a sandbox, whose links movePodNetwork moves
// once runc has made the sandbox's own.
func (r *runner) podOptions(s *specs.Spec, p pod, base uint32) (PodOptions, string, error) {
	switch p.Role {
	case podSandbox:
		if r.inv.Command == "run" {
			return PodOptions{}, "", fmt.Errorf("pod sandbox: `run` is not supported, the CRI's network moves in between create and start")
		}
		cri := nsPath(s, specs.NetworkNamespace)
		if cri != "" {
			if err := criNetns(cri); err != nil {
				return PodOptions{}, "", err
			}
		}
		return PodOptions{Sandbox: true}, cri, nil
	case podMember:
		pid, err := runcInit(r.root, p.Sandbox)
		if err != nil {
			return PodOptions{}, "", fmt.Errorf("pod sandbox %s: %w", p.Sandbox, err)
		}
		if pid == 0 {
			return PodOptions{}, "", fmt.Errorf("pod sandbox %s: not running in runc's state %s", p.Sandbox, r.root)
		}
		// sysvisord gave this container the sandbox's lease: a sandbox
		// with another range is not the one it knows.
		if b, err := idBase(pid); err != nil || uint32(b) != base {
			return PodOptions{}, "", fmt.Errorf("pod sandbox %s: its user namespace maps from %d, not from the pod's lease %d (%v)", p.Sandbox, b, base, err)
		}
		return PodOptions{UserNS: fmt.Sprintf("/proc/%d/ns/user", pid), NetNS: fmt.Sprintf("/proc/%d/ns/net", pid)}, "", nil
	}
	return PodOptions{}, "", nil
}

// movePodNetwork moves the links CNI configured in the CRI's network
// namespace into the sandbox's own, between create and start: the pod's
// processes see the addresses and routes CNI gave, and the pod's root owns
// the namespace (an inner engine's bridge, sysfs). containerd keeps the
// CRI's namespace, left with its loopback, and tears it down with the pod;
// the veth goes with the sandbox's namespace.
func (r *runner) movePodNetwork(cri string) error {
	if cri == "" {
		return nil
	}
	moved, err := r.adoptPodNetwork(cri)
	if err != nil {
		r.deleteHalfMade()
		return fmt.Errorf("pod network from %s: %w", cri, err)
	}
	r.log.Debugf("container %s: pod network: moved %v from %s", r.inv.ID, moved, cri)
	return nil
}

// adoptPodNetwork moves the CRI's links into the created sandbox's network
// namespace and binds that namespace at the CRI's path.
func (r *runner) adoptPodNetwork(cri string) ([]string, error) {
	pid, err := runcInit(r.root, r.inv.ID)
	if err != nil {
		return nil, err
	}
	if pid == 0 {
		return nil, fmt.Errorf("init is gone")
	}
	own := fmt.Sprintf("/proc/%d/ns/net", pid)
	moved, err := netmove.Move(cri, own)
	if err != nil {
		return moved, err
	}
	return moved, repointNetns(cri, own)
}

// criNetns checks that path is what a CRI makes for a pod: a network
// namespace bound on a file of its own (/var/run/netns/cni-...), not
// another process's namespace by /proc/<pid>/ns/net (a magic link, as
// Docker's --network=container: gives). The annotations that make a spec a
// sandbox can be set by whoever writes the spec; the links of another
// container's network must never be taken.
func criNetns(path string) error {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fmt.Errorf("the CRI's network namespace %s: %w", path, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return fmt.Errorf("the CRI's network namespace %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK || fs.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("the CRI's network namespace %s: not a namespace bound on a file of its own (a pod sandbox's spec names the one its CRI made)", path)
	}
	return nil
}

// repointNetns puts the pod's own network namespace where the CRI's was
// mounted (an nsfs bind at path). Whatever enters the pod's network by the
// CRI's path later then finds the pod and its links: containerd's port
// forwarding, CNI's DEL (which removes the veth and releases the address
// while the namespace lives), CNI's CHECK. containerd unmounts and removes
// the path with the pod, which frees the namespace. The CRI's namespace,
// left with its loopback, goes once nothing holds it.
func repointNetns(path, own string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount the CRI's network namespace at %s: %w", path, err)
	}
	if err := unix.Mount(own, path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind the pod's network namespace at %s: %w", path, err)
	}
	return nil
}

// deleteHalfMade removes runc's container after a create that failed past
// runc's own: nothing is left half made.
func (r *runner) deleteHalfMade() {
	args := append(slices.Clone(r.inv.Global.Pass), "delete", "--force", r.inv.ID)
	cmd := exec.Command(r.runc, args...)
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		r.log.Warnf("container %s: runc delete after a failed setup: %v", r.inv.ID, err)
	}
}
