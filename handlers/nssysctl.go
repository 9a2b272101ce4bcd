package handlers

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
)

// Namespaced sysctls outside /proc/sys/net. The kernel gives each IPC
// namespace its own kernel.shm*, msg*, sem, auto_msgmni, *_next_id and
// fs.mqueue.*, and (since Linux 6.14) each pid namespace its own
// kernel.pid_max; it makes their files owned by the root of the namespace's
// owner and checks writes itself (the namespace's root, or
// CAP_CHECKPOINT_RESTORE for *_next_id, whose mode says 0444; range checks
// with EINVAL). Like /proc/sys/net, those of the container's own namespaces
// get read-write binds of themselves over the read-only /proc/sys, so the
// kernel decides.
//
// A /proc/sys dentry is per namespace: lookup and d_compare use the set of
// the *current* task (current->nsproxy->ipc_ns, task_active_pid_ns(current)).
// A bind must sit on the dentry the container's lookups find, so the IPC
// ones are looked up by a thread that has joined the container's IPC
// namespace, and pid_max by a helper process born in its pid namespace: a
// thread cannot change its own active pid namespace.

// sysctlEntry is one file or directory under /proc/sys, as a walk saw it.
type sysctlEntry struct {
	rel string // from /proc/sys, e.g. "kernel/shmmax"
	dir bool
	// own: owned by a user of the container's range, not host root: the
	// kernel namespaces it, and the namespace is the container's.
	own bool
}

// coverSet returns the fewest paths whose binds cover every owned file:
// a directory when it and everything under it are owned (fs/mqueue), else
// the owned files one by one. Paths are sorted.
func coverSet(entries []sysctlEntry) []string {
	byRel := map[string]*sysctlEntry{}
	// whole[d]: d and all below it owned, with at least one file.
	whole := map[string]bool{}
	files := map[string]int{}
	for i := range entries {
		e := &entries[i]
		byRel[e.rel] = e
		if e.dir {
			if _, ok := whole[e.rel]; !ok {
				whole[e.rel] = true
			}
		}
	}
	for _, e := range entries {
		for d := path.Dir(e.rel); d != "."; d = path.Dir(d) {
			if !e.own {
				whole[d] = false
			}
			if !e.dir {
				files[d]++
			}
		}
		if e.dir && !e.own {
			whole[e.rel] = false
		}
	}
	var out []string
	for _, e := range entries {
		if !e.own || (e.dir && (!whole[e.rel] || files[e.rel] == 0)) {
			continue
		}
		covered := false
		for d := path.Dir(e.rel); d != "."; d = path.Dir(d) {
			if whole[d] && files[d] > 0 {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, e.rel)
		}
	}
	sort.Strings(out)
	return out
}

// idRanges are host ids a user namespace maps, from its uid_map as a
// process of the initial user namespace reads it.
type idRanges [][2]uint64 // [first, first+count)

// parseIDMap reads a uid_map or gid_map.
func parseIDMap(b []byte) (idRanges, error) {
	var out idRanges
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("id map line %q", l)
		}
		_, err0 := strconv.ParseUint(f[0], 10, 32)
		host, err1 := strconv.ParseUint(f[1], 10, 32)
		n, err2 := strconv.ParseUint(f[2], 10, 32)
		if err0 != nil || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("id map line %q", l)
		}
		out = append(out, [2]uint64{host, host + n})
	}
	return out, nil
}

// contains reports whether id is mapped; host root never counts: it owns
// the sysctls the kernel does not namespace.
func (r idRanges) contains(id uint32) bool {
	if id == 0 {
		return false
	}
	for _, x := range r {
		if uint64(id) >= x[0] && uint64(id) < x[1] {
			return true
		}
	}
	return false
}

// callerIDs reads the caller's uid_map from the host's /proc.
func callerIDs(p caller) (idRanges, error) {
	fd, err := unix.Openat(hostProc(), fmt.Sprintf("%d/uid_map", p.Pid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("uid_map of %d: %w", p.Pid(), err)
	}
	f := os.NewFile(uintptr(fd), "uid_map")
	defer f.Close()
	b := make([]byte, 4096)
	n, err := f.Read(b)
	if err != nil {
		return nil, fmt.Errorf("uid_map of %d: %w", p.Pid(), err)
	}
	return parseIDMap(b[:n])
}

// beneath resolves inside a procfs tree without leaving it: no symlinks,
// no mount crossed (a view, a mask or a bind already there is not the
// kernel's file to bind).
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_XDEV | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// walkSysctls lists the files and directories under the procfs directory
// sys (a /proc/sys) as the current thread's namespaces show them, except
// net/ (bound whole elsewhere) and whatever has a mount on it.
func walkSysctls(sys int, ids idRanges) ([]sysctlEntry, error) {
	var mnt unix.Statx_t
	if err := unix.Statx(sys, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &mnt); err != nil {
		return nil, fmt.Errorf("statx /proc/sys: %w", err)
	}
	var out []sysctlEntry
	var walk func(dir int, rel string, depth int) error
	walk = func(dir int, rel string, depth int) error {
		if depth > 16 {
			return nil // sysctl trees are a few levels deep
		}
		names, err := readDirNames(dir)
		if err != nil {
			return fmt.Errorf("read /proc/sys/%s: %w", rel, err)
		}
		for _, name := range names {
			r := path.Join(rel, name)
			if r == "net" {
				continue
			}
			var st unix.Statx_t
			err := unix.Statx(dir, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT, unix.STATX_TYPE|unix.STATX_UID|unix.STATX_MNT_ID, &st)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return fmt.Errorf("stat /proc/sys/%s: %w", r, err)
			}
			if st.Mnt_id != mnt.Mnt_id {
				continue // something is mounted on it
			}
			e := sysctlEntry{rel: r, own: ids.contains(st.Uid)}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
			case unix.S_IFDIR:
				e.dir = true
			default:
				continue
			}
			out = append(out, e)
			if !e.dir {
				continue
			}
			fd, err := unix.Openat2(dir, name, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: beneath})
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EXDEV) {
				continue
			}
			if err != nil {
				return fmt.Errorf("open /proc/sys/%s: %w", r, err)
			}
			err = walk(fd, r, depth+1)
			unix.Close(fd)
			if err != nil {
				return err
			}
		}
		return nil
	}
	dir, err := unix.Openat2(sys, ".", &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: beneath})
	if err != nil {
		return nil, fmt.Errorf("open /proc/sys: %w", err)
	}
	defer unix.Close(dir)
	return out, walk(dir, "", 0)
}

// readDirNames lists a directory fd's entries without consuming the fd.
func readDirNames(fd int) ([]string, error) {
	var names []string
	buf := make([]byte, 16384)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// openOwned opens rel under sys for a bind (O_PATH, without leaving the
// procfs) and checks it is what the walk took it for: on a procfs, and
// owned by the container's range.
func openOwned(sys int, rel string, ids idRanges) (int, error) {
	fd, err := unix.Openat2(sys, rel, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW, Resolve: beneath})
	if err != nil {
		return -1, err
	}
	if err := checkOwned(fd, ids); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

func checkOwned(fd int, ids idRanges) error {
	if err := isProcfs(fd); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFDIR {
		return fmt.Errorf("not a file or directory (mode %#o)", st.Mode)
	}
	if !ids.contains(st.Uid) {
		return fmt.Errorf("%w (uid %d)", errNotOwned, st.Uid)
	}
	return nil
}

// errNotOwned: the file is not the container's namespace's (host root's
// in a container sharing the host's IPC namespace, another container's).
var errNotOwned = errors.New("not owned by the container: not its namespace's")

// ipcCover is the cover set the first walk that found any namespaced
// sysctl discovered. Which sysctls the kernel keeps per IPC namespace is a
// property of the kernel, not of the container: later containers open
// these paths and check each (procfs, owner) instead of walking the ~300
// files of /proc/sys again.
var ipcCover atomic.Pointer[[]string]

// pidSysctls are the sysctls the kernel keeps per pid namespace (the one
// entry of kernel/pid.c's pid_table). Unlike the IPC ones they cannot be
// found by a walk: only a task whose active pid namespace is the
// container's sees the container's file.
var pidSysctls = []string{"kernel/pid_max"}

// lookupArgs is what the lookup helper child uses: prepared by the parent
// before the fork, so the child only stores one int and makes raw system
// calls.
type lookupArgs struct {
	dirfd, path, how, howSize uintptr
	sock                      uintptr
	m                         *fdMsg
	lo, hi                    uintptr // the two fds the child keeps
}

// openInPidNS opens rel under the directory sys (O_PATH, beneath it) from
// a helper process born in the pid namespace the thread has joined for its
// children (joinPID), and returns the fd. The helper keeps no fd but sys
// and its socket (see fromHelper).
func openInPidNS(sys int, rel string) (int, error) {
	p, err := unix.BytePtrFromString(rel)
	if err != nil {
		return -1, err
	}
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW, Resolve: beneath}
	fd, err := fromHelper(func(sock int, m *fdMsg) (int, unix.Errno) {
		a := lookupArgs{
			dirfd: uintptr(sys), path: uintptr(unsafe.Pointer(p)),
			how: uintptr(unsafe.Pointer(&how)), howSize: unsafe.Sizeof(how),
			sock: uintptr(sock), m: m,
			lo: uintptr(min(sys, sock)), hi: uintptr(max(sys, sock)),
		}
		return forkLookup(&a)
	})
	keepAlive(p, &how)
	if err != nil {
		return -1, fmt.Errorf("lookup helper: %w", err)
	}
	return fd, nil
}

// forkLookup forks the lookup helper: in the child, nothing but raw system
// calls and one store into its own copy of the control message (nosplit:
// no stack growth, no preemption check can call into the runtime).
//
//go:norace
//go:nosplit
func forkLookup(a *lookupArgs) (int, unix.Errno) {
	pid, _, e := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if e != 0 {
		return -1, e
	}
	if pid != 0 {
		return int(pid), 0
	}
	keepOnly(a.lo, a.hi) // only the directory and the socket stay open
	fd, _, e := unix.RawSyscall6(unix.SYS_OPENAT2, a.dirfd, a.path, a.how, a.howSize, 0, 0)
	if e != 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, uintptr(e), 0, 0)
	}
	*a.m.slot = int32(fd)
	_, _, e = unix.RawSyscall(unix.SYS_SENDMSG, a.sock, uintptr(unsafe.Pointer(&a.m.msg)), unix.MSG_NOSIGNAL)
	unix.RawSyscall(unix.SYS_EXIT_GROUP, uintptr(e), 0, 0)
	panic("unreachable")
}

// bindNamespaced puts read-write binds of themselves over the sysctls under
// the procfs directory sys that the kernel keeps per namespace, for the
// IPC namespace the thread has joined and, with pid, for the pid namespace
// it has joined for its children (joinPID); ids is the container's range,
// which must own them. bind attaches the clone fd over the target fd. It
// returns the paths bound, from /proc/sys, and how long the pid-namespace
// helper took. One path that fails costs that path only.
func bindNamespaced(sys int, ids idRanges, pid bool, bind func(src, target int) error) (done []string, helper time.Duration, _ error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(sys, &st); err != nil {
		return nil, 0, err
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		return nil, 0, nil // writable already: nothing to undo
	}
	var cover []string
	if c := ipcCover.Load(); c != nil {
		cover = *c
	} else {
		entries, err := walkSysctls(sys, ids)
		if err != nil {
			return nil, 0, err
		}
		if cover = coverSet(entries); len(cover) > 0 {
			ipcCover.Store(&cover)
		}
	}
	var errs []error
	one := func(rel string, fd int, err error) {
		if errors.Is(err, errNotOwned) {
			return // the kernel's own, or another namespace's: left read-only
		}
		if err == nil {
			err = rwBindOver(fd, bind)
			unix.Close(fd)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("/proc/sys/%s: %w", rel, err))
			return
		}
		done = append(done, rel)
	}
	for _, rel := range cover {
		fd, err := openOwned(sys, rel, ids)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EXDEV) {
			continue // masked, or not in this procfs
		}
		one(rel, fd, err)
	}
	if pid && kernel.PidMaxPerPidNS.Has() {
		for _, rel := range pidSysctls {
			start := time.Now()
			fd, err := openInPidNS(sys, rel)
			helper += time.Since(start)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err == nil {
				if err = checkOwned(fd, ids); err != nil {
					unix.Close(fd)
				}
			}
			one(rel, fd, err)
		}
	}
	return done, helper, errors.Join(errs...)
}

// openSysctl opens name (kernel/pid_max) under the procfs directory sys
// without following a final symlink, through the pid-namespace helper for
// the sysctls a pid namespace has its own of (pidSysctls) when pid says the
// thread has joined the container's (joinPID): the container's processes
// find that namespace's file, not the one the thread would.
func openSysctl(sys int, name string, pid bool) (int, error) {
	if pid && slices.Contains(pidSysctls, name) {
		return openInPidNS(sys, name)
	}
	return unix.Openat(sys, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// needPidHelper reports whether the container whose process is pid needs
// the pid-namespace helper to find its kernel.pid_max: it has a pid
// namespace of its own, and the kernel keeps pid_max per pid namespace
// (6.14+). What is bound there depends on kernel.PidMaxPerPidNS.Has(): the
// kernel's file, read-write, or (the fallback forced) the per-container
// view that kernels before 6.14 get (sysctl.Table).
func needPidHelper(pid int) (bool, error) {
	if kernel.PidMaxPerPidNS.Probe() != nil {
		return false, nil
	}
	same, err := sameNS(pid, "pid")
	return !same, err
}
