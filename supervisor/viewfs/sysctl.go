package viewfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hashicorp/go-hclog"

	"github.com/sysvisor/sysvisor/supervisor/rawfile"
	"github.com/sysvisor/sysvisor/supervisor/sysctl"
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

// sysctlNode is one per-container sysctl. It looks like the kernel's file
// in a user-namespaced container (owned by the container's root, 0644) and
// the kernel checks the mode at open (default_permissions): only the
// container's root opens it for writing. Write then checks what the
// kernel's handler checks on top (a capability for some), parses the
// value as the kernel does, and records it in the container's record.
type sysctlNode struct {
	fs.Inode
	id  string
	s   *sysctl.Sysctl
	c   Container
	log hclog.Logger
}

var _ fs.NodeOpener = (*sysctlNode)(nil)
var _ fs.NodeGetattrer = (*sysctlNode)(nil)
var _ fs.NodeSetattrer = (*sysctlNode)(nil)

// values returns the container's current values: its own, or the host's.
func (n *sysctlNode) values() ([]int64, error) {
	if v, ok := n.c.Sysctl(n.s.Name); ok {
		if vals, err := n.s.Values(v); err == nil {
			return vals, nil
		}
		n.log.Warn("views: stored sysctl value unreadable; showing the host's", "container", n.id, "sysctl", n.s.Name, "value", v)
	}
	b, err := host.ReadFile(hostPath(n.s))
	if err != nil {
		return nil, err
	}
	return n.s.Values(string(b))
}

func (n *sysctlNode) render() ([]byte, error) {
	vals, err := n.values()
	if err != nil {
		return nil, err
	}
	return sysctl.Format(vals), nil
}

func (n *sysctlNode) fill(out *fuse.AttrOut, size int) {
	out.Mode = syscall.S_IFREG | n.s.Mode()
	out.Nlink = 1
	out.Uid, out.Gid = n.c.RootIDs()
	// procfs shows the time the inode was made, which for a sysctl is
	// about when it is looked at; 1970 would stand out.
	now := time.Now()
	out.SetTimes(&now, &now, &now)
	// As for the other views: sendfile stops at i_size (see fileNode).
	out.Size = uint64(size + sizeSlack)
	out.SetTimeout(attrTimeout)
}

// Getattr renders (a map lookup, or one host pread): the value is small.
func (n *sysctlNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	size, ok := int64(0), false
	if h, isH := f.(*handle); isH {
		size, ok = h.size()
	}
	if !ok {
		if b, err := n.render(); err == nil {
			size = int64(len(b))
		}
	}
	n.fill(out, int(size))
	return 0
}

// Setattr accepts the truncation an O_TRUNC open sends (shells open with
// it) and changes nothing, as procfs ignores it.
func (n *sysctlNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if _, ok := in.GetMode(); ok {
		return syscall.EPERM
	}
	if _, ok := in.GetUID(); ok {
		return syscall.EPERM
	}
	if _, ok := in.GetGID(); ok {
		return syscall.EPERM
	}
	return n.Getattr(ctx, f, out)
}

func (n *sysctlNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	render := func() ([]byte, error) {
		b, err := n.render()
		if err != nil {
			n.log.Warn("views: render sysctl", "container", n.id, "sysctl", n.s.Name, "error", err)
		}
		return b, err
	}
	if flags&syscall.O_ACCMODE == syscall.O_RDONLY {
		return &handle{render: render}, fuse.FOPEN_DIRECT_IO, 0
	}
	return &sysctlHandle{handle: handle{render: render}, n: n}, fuse.FOPEN_DIRECT_IO, 0
}

// sysctlHandle is a sysctl opened for writing (and maybe reading).
type sysctlHandle struct {
	handle
	n *sysctlNode
}

var _ fs.FileWriter = (*sysctlHandle)(nil)

// Write applies one write(2) as the kernel's proc handler would: at offset
// 0 it is parsed (EINVAL on bad input, range included) and the count of
// bytes consumed returned; a write at a later offset changes nothing and
// reports everything written (sysctl_writes_strict=1, the default).
func (h *sysctlHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	n := h.n
	if e := n.mayWrite(ctx); e != 0 {
		return 0, e
	}
	if off > 0 {
		return uint32(len(data)), 0
	}
	cur, err := n.values()
	if err != nil {
		n.log.Warn("views: sysctl current value", "container", n.id, "sysctl", n.s.Name, "error", err)
		return 0, syscall.EIO
	}
	vals, used, err := n.s.Parse(cur, data)
	if err != nil {
		var e syscall.Errno
		if !errors.As(err, &e) {
			e = syscall.EINVAL
		}
		return 0, e
	}
	v := strings.TrimSuffix(string(sysctl.Format(vals)), "\n")
	if err := n.c.SetSysctl(n.s.Name, v); err != nil {
		n.log.Error("views: record sysctl", "container", n.id, "sysctl", n.s.Name, "error", err)
		return 0, syscall.EIO
	}
	n.log.Debug("views: sysctl written", "container", n.id, "sysctl", n.s.Name, "value", v)
	return uint32(used), 0
}

// mayWrite checks the writer as the kernel checks a host's: the file's
// owner (the container's root, or host root), and the capability the
// kernel's handler asks for, in the writer's effective set (its caps only
// count in the container's user namespace, which is what the container's
// "host" is).
func (n *sysctlNode) mayWrite(ctx context.Context) syscall.Errno {
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return syscall.EACCES
	}
	uid, _ := n.c.RootIDs()
	if caller.Uid != uid && caller.Uid != 0 {
		return syscall.EACCES
	}
	if n.s.Cap < 0 {
		return 0
	}
	if caller.Pid == 0 {
		return syscall.EPERM // not visible here: nothing to check it by
	}
	// The capability counts in the container's own user namespace, the
	// one its init is in: a process in a nested user namespace has its
	// capabilities there only, as the kernel's capable() would see it.
	if caller.Uid != 0 {
		same, err := sameUserNS(int(caller.Pid), n.c.InitPid())
		if err != nil || !same {
			return syscall.EPERM
		}
	}
	has, err := hasCap(int(caller.Pid), n.s.Cap)
	if err != nil || !has {
		return syscall.EPERM
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
