package doctor

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/apparmor"
	"github.com/sysvisor/sysvisor/kernel"
	"github.com/sysvisor/sysvisor/policy"
	svruntime "github.com/sysvisor/sysvisor/runtime"
	"github.com/sysvisor/sysvisor/supervisor/control"
)

var errNotExist = fs.ErrNotExist

// containerdMajor asks the containerd binary its version; 0 when it is
// not installed or does not answer.
func containerdMajor(bin string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return 0
	}
	return ContainerdMajor(string(out))
}

func (o *Options) defaults() {
	if o.Runc == "" {
		o.Runc = os.Getenv("SYSVISOR_RUNC")
	}
	if o.Runc == "" {
		o.Runc = "runc"
	}
	if o.RunDir == "" {
		o.RunDir = control.DefaultRunDir
	}
	o.PolicyDir = policy.Dir(o.PolicyDir)
	if o.SubUID == "" {
		o.SubUID = "/etc/subuid"
	}
	if o.SubGID == "" {
		o.SubGID = "/etc/subgid"
	}
	if o.DaemonJSON == "" {
		o.DaemonJSON = "/etc/docker/daemon.json"
	}
	if o.ContainerdConfig == "" {
		o.ContainerdConfig = "/etc/containerd/config.toml"
	}
	if o.Containerd == "" {
		o.Containerd = "containerd"
	}
	if o.IdmapDir == "" {
		o.IdmapDir = "/var/lib"
	}
	if o.CgroupRoot == "" {
		o.CgroupRoot = "/sys/fs/cgroup"
	}
}

// Run makes every check. Nothing on the host is changed: the probes make a
// user namespace that dies with its placeholder process, a detached mount
// clone that is dropped, the kernel package's probes (a seccomp filter in
// a child that exits, detached mounts that are dropped, a child in a pid
// namespace of its own), and ask the engine (docker info).
func Run(o Options) []Result {
	o.defaults()
	var rs []Result
	var un unix.Utsname
	if err := unix.Uname(&un); err != nil {
		rs = append(rs, fail("kernel", "uname: "+err.Error(), ""))
	} else {
		rs = append(rs, Kernel(unix.ByteSliceToString(un.Release[:])))
	}
	if err := kernel.EnvError(); err != nil {
		rs = append(rs, fail("kernel fallbacks", err.Error(), "sysvisord and sysvisor-runc refuse to start with it: name features as sysvisorctl doctor lists them, or all"))
	}
	for _, f := range kernel.Features() {
		rs = append(rs, Feature(StateOf(f)))
	}
	b, err := os.ReadFile("/proc/sys/kernel/seccomp/actions_avail")
	rs = append(rs, SeccompNotify(string(b), err))
	root := os.Geteuid() == 0
	maxNS, _ := os.ReadFile("/proc/sys/user/max_user_namespaces")
	if root {
		usernsFd, err := svruntime.UsernsFd(1<<30, 65536)
		rs = append(rs, Userns(string(maxNS), err))
		if err == nil {
			fstype, err := probeIdmap(o.IdmapDir, usernsFd)
			unix.Close(usernsFd)
			rs = append(rs, Idmap(o.IdmapDir, fstype, err))
		} else {
			rs = append(rs, fail("idmapped mounts", "not probed: no user namespace", ""))
		}
	} else {
		rs = append(rs, warn("user namespaces", "not probed", "run sysvisorctl doctor as root"),
			warn("idmapped mounts", "not probed", "run sysvisorctl doctor as root"))
	}
	rs = append(rs, probeRunc(o.Runc)...)
	uid, uerr := os.ReadFile(o.SubUID)
	gid, gerr := os.ReadFile(o.SubGID)
	rs = append(rs, SubIDPool(uid, gid, uerr, gerr))
	rs = append(rs, probeFuse())
	rs = append(rs, probePolicies(o.PolicyDir))
	rs = append(rs, probeSysvisord(o.RunDir, root))
	rs = append(rs, probeHolder(o.RunDir, root))
	dj, derr := os.ReadFile(o.DaemonJSON)
	rs = append(rs, DockerRegistration(o.DaemonJSON, dj, derr, executable))
	cc, cerr := os.ReadFile(o.ContainerdConfig)
	rs = append(rs, ContainerdRegistration(o.ContainerdConfig, cc, cerr, containerdMajor(o.Containerd), executable))
	if derr != nil {
		dj = nil
	}
	rs = append(rs, probeCgroups(o, dj)...)
	rs = append(rs, AppArmor(probeAppArmor(o)))
	return rs
}

// dockerInfo asks the engine, with a deadline: a wedged dockerd must not
// hang the doctor.
func dockerInfo(o Options, format string) (string, error) {
	docker := o.Docker
	if docker == "" {
		docker = "docker"
	}
	path, err := exec.LookPath(docker)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "info", "--format", format)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := firstLine(stderr.String()); msg != "" {
			return "", fmt.Errorf("%w: %s", err, msg)
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

func statfsType(path string) int64 {
	var st unix.Statfs_t
	if unix.Statfs(path, &st) != nil {
		return 0
	}
	return int64(st.Type)
}

// probeCgroups reads the cgroup mode, Docker's cgroup driver and what the
// parent of Docker's containers offers.
func probeCgroups(o Options, daemonJSON []byte) []Result {
	mode, err := CgroupMode(statfsType(o.CgroupRoot), statfsType(filepath.Join(o.CgroupRoot, "unified")))
	rs := []Result{Cgroups(mode, err)}
	if err != nil {
		return rs
	}
	st, serr := os.Stat("/run/systemd/system")
	in := DriverInput{DaemonJSON: daemonJSON, Mode: mode, Systemd: serr == nil && st.IsDir()}
	in.Info, in.InfoErr = dockerInfo(o, "{{.CgroupDriver}}")
	rs = append(rs, Driver(in))
	driver, _ := CgroupDriver(in)
	rs = append(rs, Delegation(mode, readParent(o.CgroupRoot, ParentCgroup(driver, daemonJSON))))
	return rs
}

func readParent(root, rel string) ParentControllers {
	p := ParentControllers{Path: rel}
	dir := filepath.Join(root, rel)
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		p.Missing = true
		dir = root
	}
	c, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		p.Err = err
		return p
	}
	// The root has no subtree_control of a parent above it to show;
	// its own is what its children get.
	sub, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	p.Controllers, p.Subtree = string(c), string(sub)
	return p
}

// probeAppArmor reads AppArmor's state, whether Docker applies its
// profile, and whether sysvisor's is loaded and installed.
func probeAppArmor(o Options) AppArmorState {
	var s AppArmorState
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	s.Enabled, s.EnabledErr = strings.TrimSpace(string(b)), err
	if err != nil {
		return s
	}
	// dockerd looks at /sbin/apparmor_parser; PATH covers /usr/sbin.
	if p, err := exec.LookPath("apparmor_parser"); err == nil {
		s.Parser = p
	} else if _, err := os.Stat("/sbin/apparmor_parser"); err == nil {
		s.Parser = "/sbin/apparmor_parser"
	}
	if out, err := dockerInfo(o, "{{json .SecurityOptions}}"); err == nil {
		var opts []string
		if json.Unmarshal([]byte(out), &opts) == nil {
			s.DockerSecurity = append([]string{}, opts...)
		}
	}
	if p, err := os.ReadFile("/sys/kernel/security/apparmor/profiles"); err == nil {
		s.Profiles = string(p)
	}
	_, err = os.Stat(apparmor.Path())
	s.Installed = err == nil
	return s
}

func executable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

var fsNames = map[int64]string{
	unix.EXT4_SUPER_MAGIC: "ext4", unix.XFS_SUPER_MAGIC: "xfs", unix.BTRFS_SUPER_MAGIC: "btrfs",
	unix.TMPFS_MAGIC: "tmpfs", unix.OVERLAYFS_SUPER_MAGIC: "overlay", 0x2fc12fc1: "zfs",
}

// probeIdmap clones the mount holding dir, detached, and idmaps the clone;
// closing the fd drops it.
func probeIdmap(dir string, usernsFd int) (string, error) {
	fstype := "?"
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil {
		if n, ok := fsNames[int64(st.Type)]; ok {
			fstype = n
		} else {
			fstype = fmt.Sprintf("%#x", st.Type)
		}
	}
	tfd, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fstype, fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tfd)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(usernsFd)}
	if err := unix.MountSetattr(tfd, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return fstype, fmt.Errorf("mount_setattr(MOUNT_ATTR_IDMAP): %w", err)
	}
	return fstype, nil
}

func probeRunc(runc string) []Result {
	path, err := exec.LookPath(runc)
	if err != nil {
		return Runc(runc, "", nil, err)
	}
	version, err := exec.Command(path, "--version").Output()
	if err != nil {
		return Runc(path, "", nil, fmt.Errorf("%s --version: %w", path, err))
	}
	feat, err := exec.Command(path, "features").Output()
	if err != nil {
		return Runc(path, string(version), nil, fmt.Errorf("%s features: %w (runc >= 1.1 is required)", path, err))
	}
	return Runc(path, string(version), feat, nil)
}

func probeFuse() Result {
	const check = "/dev/fuse"
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil {
		return warn(check, err.Error(), "without FUSE sysvisord serves no /proc views: containers see the host's meminfo, cpuinfo, uptime...")
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 10 || unix.Minor(st.Rdev) != 229 {
		return warn(check, fmt.Sprintf("not the FUSE device (%d:%d)", unix.Major(st.Rdev), unix.Minor(st.Rdev)), "mknod /dev/fuse c 10 229")
	}
	if os.Geteuid() != 0 {
		return ok(check, "present (open not probed: not root)")
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return warn(check, "open: "+err.Error(), "the kernel needs CONFIG_FUSE_FS for the /proc views")
	}
	unix.Close(fd)
	return ok(check, "present and opens")
}

func probePolicies(dir string) Result {
	const check = "policy files"
	s := policy.NewStore(dir, "", nil)
	rep, err := s.Reload()
	files := 0
	for _, l := range rep.Policies {
		if l.Status != policy.StatusBuiltin {
			files++
		}
	}
	if err != nil {
		var where []string
		for _, l := range rep.Refused() {
			if len(l.Problems) > 0 {
				p := l.Problems[0]
				where = append(where, fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Column, p.Summary))
			} else {
				where = append(where, l.Error)
			}
		}
		if len(where) == 0 {
			where = append(where, err.Error())
		}
		return fail(check, strings.Join(where, "; "), "sysvisorctl policy check FILE shows every error; sysvisord keeps the last good version until the file is fixed and reloaded")
	}
	return ok(check, fmt.Sprintf("%s: %d file(s) valid, built-ins %s", dir, files, strings.Join(policy.BuiltinNames(), ", ")))
}

func probeSysvisord(runDir string, root bool) Result {
	const check = "sysvisord"
	if !root {
		return warn(check, "not probed: its control socket is root-only", "run sysvisorctl doctor as root")
	}
	resp, err := control.Call(runDir, control.Request{Op: control.OpVersion}, 5*time.Second)
	if err != nil {
		return fail(check, err.Error(), "systemctl start sysvisord (sysvisor-runc cannot create containers without it)")
	}
	detail := "version " + resp.Version
	if resp.Pool != nil {
		detail += fmt.Sprintf(", ID pool %d+%d", resp.Pool.Start, resp.Pool.Size)
	}
	return ok(check, detail+" at "+runDir)
}

// probeHolder says whether running containers would survive a restart of
// sysvisord: a holder keeps copies of their fds.
func probeHolder(runDir string, root bool) Result {
	const check = "holder"
	if !root {
		return warn(check, "not probed: sysvisord's control socket is root-only", "run sysvisorctl doctor as root")
	}
	resp, err := control.Call(runDir, control.Request{Op: control.OpVersion}, 5*time.Second)
	if err != nil {
		return warn(check, "not probed: sysvisord is not reachable", "start sysvisord; it starts or finds sysvisor-holder")
	}
	h := resp.Holder
	if h == nil {
		return warn(check, "sysvisord "+resp.Version+" predates the holder", "upgrade sysvisord: running containers do not survive its restarts")
	}
	at := fmt.Sprintf("at start %d listener(s) re-attached, %d lost", h.Reattached, h.Lost)
	if !h.Connected {
		return fail(check, "sysvisord has no holder: a restart of sysvisord would break every running container ("+at+")",
			"systemctl enable --now sysvisor-holder (or check <run-dir>/holder.log); sysvisord reconnects by itself")
	}
	return ok(check, fmt.Sprintf("%d fd(s) held; %s", h.Deposits, at))
}
