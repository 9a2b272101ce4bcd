package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/cgroup"
	"github.com/sysvisor/sysvisor/linux/statefile"
)

// What system software needs from the spec beyond the user namespace: a
// cgroup tree of its own, storage an inner engine can put overlays on, and
// for systemd as init the few things it checks at boot.

// hookDelegate is the createRuntime hook's subcommand: runc runs it on the
// host with the container's state on stdin, for `create` and `run` alike,
// after it has put the container's init in its cgroups, init has unshared
// the cgroup namespace (runc's nsexec does that before init's Go code
// starts) and runc has written the limits (runc 1.1 calls the cgroup
// manager's Set just before the hooks), and before the container's process
// starts.
const hookDelegate = "delegate-cgroups"

// cgroupsWritable lets the container write its cgroup mount. With the cgroup
// namespace the rewrite adds, the mount shows only the container's own
// subtree, and the hook below gives the container's root that subtree's
// directories but not their limit files: inner engines and systemd create
// and manage child cgroups, under the limits the outer engine set.
func cgroupsWritable(s *specs.Spec) {
	for i := range s.Mounts {
		m := &s.Mounts[i]
		if (m.Type != "cgroup" && m.Type != "cgroup2") || filepath.Clean(m.Destination) != "/sys/fs/cgroup" {
			continue
		}
		m.Options = slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "ro" || o == "rw" })
		m.Options = append(m.Options, "rw")
	}
}

// hookLeaf is the delegation hook's argument when the hook moves the
// container's processes into the leaf itself: for `run`, which no `start`
// follows. After `create` the move waits for `start` (leafOnStart).
const hookLeaf = "leaf"

// addDelegateHook asks runc to run `<self> hook delegate-cgroups [leaf]`
// once the container's cgroups exist.
func addDelegateHook(s *specs.Spec, self string, leaf bool) {
	if self == "" {
		return
	}
	if s.Hooks == nil {
		s.Hooks = &specs.Hooks{}
	}
	args := []string{"sysvisor-runc", "hook", hookDelegate}
	if leaf {
		args = append(args, hookLeaf)
	}
	s.Hooks.CreateRuntime = append(s.Hooks.CreateRuntime, specs.Hook{Path: self, Args: args})
}

// runHook serves the hooks the rewrite installs. The state comes from runc
// on stdin; nothing the container controls is read: the pid is runc's, and
// /proc/<pid>/cgroup is written by the kernel while init still runs runc's
// code.
func runHook(args []string, stdin io.Reader) error { return delegateHook(args, stdin, false) }

// delegateHook is runHook; forceUnified takes the v2-only path on any host
// (tests of it on a hybrid host's unified hierarchy).
func delegateHook(args []string, stdin io.Reader, forceUnified bool) error {
	if len(args) == 0 || len(args) > 2 || args[0] != hookDelegate || (len(args) == 2 && args[1] != hookLeaf) {
		return fmt.Errorf("hook: unknown hook %q (want %s [%s])", strings.Join(args, " "), hookDelegate, hookLeaf)
	}
	leaf := len(args) == 2
	var st specs.State
	if err := json.NewDecoder(io.LimitReader(stdin, 1<<20)).Decode(&st); err != nil {
		return fmt.Errorf("hook %s: container state on stdin: %w", hookDelegate, err)
	}
	base, err := strconv.ParseUint(st.Annotations[AnnotationIDBase], 10, 32)
	if err != nil || base == 0 || st.Pid <= 0 {
		return fmt.Errorf("hook %s: container %s: no ID base or pid in its state", hookDelegate, st.ID)
	}
	mounts, err := cgroup.HostMounts()
	if err != nil {
		return fmt.Errorf("hook %s: %w", hookDelegate, err)
	}
	paths, err := cgroup.Of(st.Pid, mounts)
	if err != nil {
		return fmt.Errorf("hook %s: container %s: %w", hookDelegate, st.ID, err)
	}
	if dir, ok := paths[""]; ok && forceUnified {
		paths = cgroup.Paths{"": dir}
	}
	if err := delegateCgroups(paths, mounts, int(base), leaf); err != nil {
		return fmt.Errorf("hook %s: container %s: %w", hookDelegate, st.ID, err)
	}
	return nil
}

// delegateCgroups gives the container's root (host ID id) its cgroups: the
// directory in each hierarchy and its delegation files. On a v2-only host
// the container's processes also move to a leaf below its cgroup, which
// then hands every controller it has down (cgroup.DelegateUnified): here
// when leaf is set, else at `start` (leafOnStart). On a v1 or hybrid host
// the processes stay where runc put them: inner engines set limits through
// the v1 controllers, the unified hierarchy holds none to hand down, and
// runc 1.1 has no fallback there for an exec process the kernel would
// refuse in the container's cgroup.
func delegateCgroups(paths cgroup.Paths, mounts cgroup.Mounts, id int, leaf bool) error {
	dir, ok := paths.Unified()
	if !ok || !leaf {
		return cgroup.Delegate(paths, mounts, id, id)
	}
	named := cgroup.Paths{}
	for k, v := range paths {
		if k != "" {
			named[k] = v
		}
	}
	if err := cgroup.Delegate(named, mounts, id, id); err != nil {
		return err
	}
	return cgroup.DelegateUnified(dir, mounts[""], id, id)
}

// leafOnStart moves a created container's processes into its leaf on a
// v2-only host, just before runc starts it. Not at create: the engine's
// shim (containerd's runc shim, which Docker and Kubernetes use) takes the
// cgroup it reports stats and OOM events from, and watches, from init's
// /proc/<pid>/cgroup once create returns; it must find the container's
// cgroup, where the limits are and which counts every process of the
// container, not the leaf. Until start, init is still runc's code waiting
// to exec the container's process, so nothing of the container has run:
// the pid comes from runc's state and is checked against the start time
// runc recorded, the cgroup and the ID base come from the kernel
// (/proc/<pid>/cgroup, uid_map).
func leafOnStart(runcRoot, id string, forceUnified bool) error {
	pid, err := runcInit(runcRoot, id)
	if err != nil || pid == 0 {
		return err
	}
	mounts, err := cgroup.HostMounts()
	if err != nil {
		return err
	}
	paths, err := cgroup.Of(pid, mounts)
	if err != nil {
		return err
	}
	if dir, ok := paths[""]; ok && forceUnified {
		paths = cgroup.Paths{"": dir}
	}
	dir, ok := paths.Unified()
	if !ok || filepath.Base(dir) == cgroup.Leaf {
		return nil
	}
	base, err := idBase(pid)
	if err != nil {
		return err
	}
	return cgroup.DelegateUnified(dir, mounts[""], base, base)
}

// runcInit is the pid of a container's init from runc's state, checked
// against the start time runc recorded: 0 where there is no such container
// or its init is gone (a pid reused since is not it).
func runcInit(runcRoot, id string) (int, error) {
	b, err := os.ReadFile(filepath.Join(runcRoot, id, "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("runc state: %w", err)
	}
	var st struct {
		Pid   int    `json:"init_process_pid"`
		Start uint64 `json:"init_process_start"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Pid <= 0 {
		return 0, fmt.Errorf("runc state of %s: no init pid (%v)", id, err)
	}
	if start, err := procStartTime(st.Pid); err != nil || start != st.Start {
		return 0, nil
	}
	return st.Pid, nil
}

// procStartTime is field 22 of /proc/<pid>/stat, the start time runc
// records for init.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// idBase is the host ID that pid's user namespace maps its root to: the
// container's ID base. A process in the host's user namespace has none.
func idBase(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 3 || f[0] != "0" || f[1] == "0" {
		return 0, fmt.Errorf("/proc/%d/uid_map %q: not a system container's", pid, strings.TrimSpace(string(b)))
	}
	v, err := strconv.Atoi(f[1])
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/uid_map: %w", pid, err)
	}
	return v, nil
}

// Storage an inner engine keeps under these paths must not be on the
// container's overlay rootfs: overlayfs refuses an overlay upper directory
// as the upper of another overlay, and engines silently fall back to a
// copying driver. Each gets a directory of its own on the host's disk.
var storageDirs = []string{"/var/lib/docker", "/var/lib/containerd", "/var/lib/buildkit"}

// engineBinaries mark an image that runs a container engine. Only such
// images get the storage mounts, so a plain image's `docker diff` shows no
// mount points it never asked for.
var engineBinaries = []string{"dockerd", "containerd", "buildkitd", "k3s", "podman"}

// storageName is the directory, beside the container's writable layer, that
// holds its engine storage.
const storageName = "sysvisor-storage"

// addStorage bind-mounts a host directory at each storage path the spec
// leaves free. The directory sits beside the engine's writable layer
// (<layer>/sysvisor-storage/docker next to <layer>/diff), so it lives as
// long as the container's writable layer does: kept across stop/start and
// restarts, removed by the engine with the layer at `docker rm`. On disk it
// holds the IDs the container sees (0..65535), like the writable layer, and
// is mounted idmapped into the container's range, so a new lease after a
// restart changes nothing on disk. A path the user mounted a volume on (or
// above) is left to the volume, which is idmapped like every bind source.
func addStorage(s *specs.Spec, o *Overlay, dir string, nsfd int, log *Logger) {
	if o == nil || o.Upper == "" {
		return
	}
	layer := filepath.Dir(o.Upper)
	for _, dst := range storageDirs {
		if mountedAtOrAbove(s, dst) {
			continue
		}
		src := filepath.Join(layer, storageName, filepath.Base(dst))
		if err := os.MkdirAll(src, 0o700); err != nil {
			log.Warnf("storage for %s: %v (an inner engine falls back to a copying driver)", dst, err)
			continue
		}
		clone := filepath.Join(dir, "storage", filepath.Base(dst))
		if err := idmapClone(src, clone, nsfd, false, unix.MS_SLAVE); err != nil {
			log.Warnf("storage for %s: %v (an inner engine falls back to a copying driver)", dst, err)
			os.Remove(clone)
			continue
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: dst, Type: "bind", Source: clone,
			Options: []string{"rbind", "rw", "nosuid", "nodev"}})
	}
}

func mountedAtOrAbove(s *specs.Spec, dst string) bool {
	return slices.ContainsFunc(s.Mounts, func(m specs.Mount) bool {
		d := filepath.Clean(m.Destination)
		return d != "/" && underAny(dst, d)
	})
}

func runsEngine(rootfs string) bool {
	for _, d := range []string{"usr/bin", "usr/sbin", "usr/local/bin", "bin", "sbin"} {
		for _, b := range engineBinaries {
			if _, err := os.Lstat(filepath.Join(rootfs, d, b)); err == nil {
				return true
			}
		}
	}
	return false
}

// resolveIn follows path's symlinks as if rootfs were "/": an absolute link
// target restarts at rootfs, ".." stops at it. It returns the resolved path
// relative to rootfs ("/lib/systemd/systemd"). Only for reading the image's
// own files, before the container runs.
func resolveIn(rootfs, path string) (string, error) {
	cur := "/"
	rest := strings.Split(filepath.Clean("/"+path), "/")[1:]
	for n := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		if c == "" || c == "." {
			continue
		}
		next := filepath.Join(cur, c)
		st, err := os.Lstat(filepath.Join(rootfs, next))
		if err != nil {
			return "", err
		}
		if st.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if n++; n > 40 {
			return "", fmt.Errorf("%s: too many symlinks", path)
		}
		t, err := os.Readlink(filepath.Join(rootfs, next))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(t) {
			cur = "/"
		}
		rest = append(strings.Split(t, "/"), rest...)
	}
	return cur, nil
}

// initIsSystemd tells whether the container's process is systemd, following
// /sbin/init-style links inside the image.
func initIsSystemd(s *specs.Spec, rootfs string) bool {
	if s.Process == nil || len(s.Process.Args) == 0 {
		return false
	}
	arg0 := s.Process.Args[0]
	if !filepath.IsAbs(arg0) {
		for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
			if _, err := os.Lstat(filepath.Join(rootfs, d, arg0)); err == nil {
				arg0 = filepath.Join(d, arg0)
				break
			}
		}
	}
	p, err := resolveIn(rootfs, arg0)
	return err == nil && filepath.Base(p) == "systemd"
}

// forSystemd gives systemd as init the container= variable, so it knows
// it is in a container and skips what only a host does.
func forSystemd(s *specs.Spec) {
	if !slices.ContainsFunc(s.Process.Env, func(e string) bool { return strings.HasPrefix(e, "container=") }) {
		s.Process.Env = append(s.Process.Env, "container=sysvisor")
	}
}

// freshRun mounts tmpfs on /run and /run/lock, as a machine has them: a
// system container boots like one, and what the previous boot left there
// is gone. systemd refuses a /run it cannot use as its own; dockerd
// refuses to start when the pid file of its previous life (pid 1, alive
// again as itself) is still in /var/run, as it would be after `docker
// restart` on the writable layer. Mounts the spec already has win.
func freshRun(s *specs.Spec) {
	for _, t := range []struct{ dst, opts string }{
		{"/run", "mode=755,size=65536k"},
		{"/run/lock", "mode=1777,size=5120k"},
	} {
		if slices.ContainsFunc(s.Mounts, func(m specs.Mount) bool { return filepath.Clean(m.Destination) == t.dst }) {
			continue
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: t.dst, Type: "tmpfs", Source: "tmpfs",
			Options: append([]string{"nosuid", "nodev", "noexec"}, strings.Split(t.opts, ",")...)})
	}
}

// initFile records, in the container's runtime directory, what its init is;
// `kill` reads it.
const initFile = "init"

// systemdStop is the signal systemd takes as "shut down": SIGRTMIN+3 with
// the C library's SIGRTMIN (34), which is what systemd itself uses.
const systemdStop = "37"

func recordInit(dir string, systemd bool) error {
	if !systemd {
		return nil
	}
	return statefile.Replace(filepath.Join(dir, initFile), []byte("systemd\n"), 0o644)
}

// stopSignal maps an engine's stop request to what the container's init
// understands: systemd ignores SIGTERM as PID 1 and would wait out the
// engine's timeout, then be SIGKILLed without shutting its services down.
func stopSignal(dir, sig string) string {
	b, err := os.ReadFile(filepath.Join(dir, initFile))
	if err != nil || strings.TrimSpace(string(b)) != "systemd" {
		return sig
	}
	switch strings.TrimPrefix(strings.ToUpper(sig), "SIG") {
	case "TERM", "15", "":
		return systemdStop
	}
	return sig
}

// killArgs rewrites `kill [flags] ID [SIGNAL]` for the container's init
// (see stopSignal). Signals to every process (--all) are left alone.
func killArgs(args []string, id, dir string) []string {
	for i, a := range args {
		if a == "--all" || a == "-a" || a == "--all=true" || a == "-a=true" {
			return args
		}
		if a != id {
			continue
		}
		out := slices.Clone(args)
		if i+1 < len(out) {
			out[i+1] = stopSignal(dir, out[i+1])
		} else if sig := stopSignal(dir, ""); sig != "" {
			out = append(out, sig)
		}
		return out
	}
	return args
}
