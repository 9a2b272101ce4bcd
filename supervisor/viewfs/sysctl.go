package viewfs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/rawfile"
	"github.com/sysvisor/sysvisor/linux/sysctl"
)

// SysctlDir is where the per-container sysctls are under a container's
// view root: <views>/proc/sys/kernel/panic is the container's
// kernel.panic. sysvisord binds them over the container's /proc/sys files
// itself (runc refuses mounts there); they are not in Files.
const SysctlDir = "proc/sys"

// hostRoot prefixes the host paths of sysctls, read for a sysctl the
// container never wrote. A variable for tests.
var hostRoot = ""

func hostPath(s *sysctl.Sysctl) string { return hostRoot + s.Path() }

// sysctlView is where s is under a container's view root: proc/sys/<name>,
// or sys/<name> for a module parameter.
func sysctlView(s *sysctl.Sysctl) string {
	if s.Param {
		return "sys/" + s.Name
	}
	return SysctlDir + "/" + s.Name
}

// Sysctls lists the emulated sysctls the host's kernel has and does not
// namespace.
func Sysctls() []*sysctl.Sysctl {
	var out []*sysctl.Sysctl
	for i := range sysctl.Table {
		if f := sysctl.Table[i].NamespacedBy; f != nil && f.Has() {
			continue
		}
		if _, err := os.Stat(hostPath(&sysctl.Table[i])); err == nil {
			out = append(out, &sysctl.Table[i])
		}
	}
	return out
}

// A per-container sysctl looks like the kernel's file in a user-namespaced
// container (owned by the container's root, sysctl.Mode()) and the kernel
// checks the mode at open (default_permissions): only the container's root
// opens it for writing. A write then checks what the kernel's handler
// checks on top (a capability for some), parses the value as the kernel
// does, and records it in the container's record.

// sysctlValues returns the container's current values: its own, or the
// host's.
func (s *Server) sysctlValues(c *ctr, sc *sysctl.Sysctl) ([]int64, error) {
	if v, ok := c.c.Sysctl(sc.Name); ok {
		if vals, err := sc.Values(v); err == nil {
			return vals, nil
		}
		s.log.Warn("views: stored sysctl value unreadable; showing the host's", "container", c.id, "sysctl", sc.Name, "value", v)
	}
	b, err := host.ReadFile(hostPath(sc))
	if err != nil {
		return nil, err
	}
	return sc.Values(string(b))
}

func (s *Server) sysctlRender(c *ctr, sc *sysctl.Sysctl) ([]byte, error) {
	vals, err := s.sysctlValues(c, sc)
	if err != nil {
		return nil, err
	}
	return sysctl.Format(vals), nil
}

// sysctlWrite applies one write(2) as the kernel's proc handler would: at
// offset 0 it is parsed (EINVAL on bad input, range included) and the count
// of bytes consumed returned; a write at a later offset changes nothing and
// reports everything written (sysctl_writes_strict=1, the default).
func (s *Server) sysctlWrite(h inHeader, t target, off int64, data []byte) (uint32, unix.Errno) {
	c, sc := t.c, t.n.sysctl
	if e := mayWrite(h.UID, h.PID, c.c, sc); e != 0 {
		return 0, e
	}
	if off > 0 {
		return uint32(len(data)), 0
	}
	cur, err := s.sysctlValues(c, sc)
	if err != nil {
		s.log.Warn("views: sysctl current value", "container", c.id, "sysctl", sc.Name, "error", err)
		return 0, unix.EIO
	}
	vals, used, err := sc.Parse(cur, data)
	if err != nil {
		var e syscall.Errno
		if !errors.As(err, &e) {
			e = syscall.EINVAL
		}
		return 0, e
	}
	v := strings.TrimSuffix(string(sysctl.Format(vals)), "\n")
	if err := c.c.SetSysctl(sc.Name, v); err != nil {
		s.log.Error("views: record sysctl", "container", c.id, "sysctl", sc.Name, "error", err)
		return 0, unix.EIO
	}
	s.log.Debug("views: sysctl written", "container", c.id, "sysctl", sc.Name, "value", v)
	return uint32(used), 0
}

// mayWrite checks the writer (uid, and pid in the host's pid namespace, as
// the FUSE request carries them) as the kernel checks a host's: the file's
// owner (the container's root, or host root), and the capability the
// kernel's handler asks for, in the writer's effective set (its caps only
// count in the container's user namespace, which is what the container's
// "host" is).
func mayWrite(uid, pid uint32, c Container, sc *sysctl.Sysctl) unix.Errno {
	root, _ := c.RootIDs()
	if uid != root && uid != 0 {
		return unix.EACCES
	}
	if sc.Cap < 0 {
		return 0
	}
	if pid == 0 {
		return unix.EPERM // not visible here: nothing to check it by
	}
	// The capability counts in the container's own user namespace, the
	// one its init is in: a process in a nested user namespace has its
	// capabilities there only, as the kernel's capable() would see it.
	if uid != 0 {
		same, err := sameUserNS(int(pid), c.InitPid())
		if err != nil || !same {
			return unix.EPERM
		}
	}
	has, err := hasCap(int(pid), sc.Cap)
	if err != nil || !has {
		return unix.EPERM
	}
	return 0
}

// sameUserNS reports whether pids a and b are in one user namespace.
func sameUserNS(a, b int) (bool, error) {
	if a <= 0 || b <= 0 {
		return false, fmt.Errorf("no process to compare (%d, %d)", a, b)
	}
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/user", a), &sa); err != nil {
		return false, err
	}
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/user", b), &sb); err != nil {
		return false, err
	}
	return sa.Ino == sb.Ino && sa.Dev == sb.Dev, nil
}

// hasCap reports whether pid has capability c in its effective set. The
// writer is blocked in write(2) while we look, so the pid is still its.
func hasCap(pid, c int) (bool, error) {
	b, err := rawfile.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			eff, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, err
			}
			return eff&(1<<uint(c)) != 0, nil
		}
	}
	return false, fmt.Errorf("no CapEff in /proc/%d/status", pid)
}
