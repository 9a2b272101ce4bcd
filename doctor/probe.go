package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/policy"
	svruntime "github.com/sysvisor/sysvisor/runtime"
	"github.com/sysvisor/sysvisor/supervisor/control"
)

var errNotExist = fs.ErrNotExist

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
	if o.IdmapDir == "" {
		o.IdmapDir = "/var/lib"
	}
}

// Run makes every check. Nothing on the host is changed: the probes make a
// user namespace that dies with its placeholder process, a detached mount
// clone that is dropped, and a seccomp filter on a thread that exits.
func Run(o Options) []Result {
	o.defaults()
	var rs []Result
	var un unix.Utsname
	if err := unix.Uname(&un); err != nil {
		rs = append(rs, fail("kernel", "uname: "+err.Error(), ""))
	} else {
		rs = append(rs, Kernel(unix.ByteSliceToString(un.Release[:])))
	}
	b, err := os.ReadFile("/proc/sys/kernel/seccomp/actions_avail")
	rs = append(rs, SeccompNotify(string(b), err))
	rs = append(rs, SyncWakeUp(probeSyncWakeUp()))
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
	dj, derr := os.ReadFile(o.DaemonJSON)
	rs = append(rs, DockerRegistration(o.DaemonJSON, dj, derr, executable))
	return rs
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

// probeSyncWakeUp gets a listener from an allow-all filter installed in a
// child process that exits at once, and asks the kernel for
// SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP on it. A thread of this process would
// not do: when Go schedules the probe on the main thread, that thread
// outlives its goroutine, filter included.
func probeSyncWakeUp() error {
	insns := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
	prog := unix.SockFprog{Len: 1, Filter: &insns[0]}
	pid, err := syncWakeUpChild(&prog)
	runtime.KeepAlive(insns)
	if err != nil {
		return fmt.Errorf("probe process: %w", err)
	}
	var ws unix.WaitStatus
	for {
		if _, err := unix.Wait4(pid, &ws, 0, nil); err != unix.EINTR {
			if err != nil {
				return fmt.Errorf("probe process: %w", err)
			}
			break
		}
	}
	switch code := ws.ExitStatus(); {
	case !ws.Exited():
		return fmt.Errorf("probe process: %v", ws)
	case code == 0:
		return nil
	case code == probeNoNewPrivs:
		return errors.New("prctl(PR_SET_NO_NEW_PRIVS) failed")
	case code == probeSeccomp:
		return errors.New("seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER) failed")
	default:
		return fmt.Errorf("SECCOMP_IOCTL_NOTIF_SET_FLAGS: %w", unix.Errno(code))
	}
}

// Exit codes of the probe child other than an errno of the ioctl.
const (
	probeNoNewPrivs = 251
	probeSeccomp    = 252
)

// syncWakeUpChild forks a child that runs raw system calls only (the Go
// runtime's state in a forked copy is never touched) and exits with 0 or
// what failed.
//
//go:norace
func syncWakeUpChild(prog *unix.SockFprog) (int, error) {
	pid, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	if pid != 0 {
		return int(pid), nil
	}
	if _, _, e := unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, probeNoNewPrivs, 0, 0)
	}
	fd, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(prog)))
	if e != 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, probeSeccomp, 0, 0)
	}
	_, _, e = unix.RawSyscall(unix.SYS_IOCTL, fd, unix.SECCOMP_IOCTL_NOTIF_SET_FLAGS, unix.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
	unix.RawSyscall(unix.SYS_EXIT_GROUP, uintptr(e), 0, 0)
	panic("unreachable")
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
