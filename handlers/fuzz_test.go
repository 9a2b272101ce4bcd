package handlers

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/mountinfo"
)

// pathMountAttrs is what the kernel's path_mount makes of mount(2) flags
// for a new mount, as fsmount's attributes: relatime unless noatime,
// strictatime over both.
func pathMountAttrs(flags uint64) int {
	var a uint64
	for _, f := range [][2]uint64{
		{unix.MS_RDONLY, unix.MOUNT_ATTR_RDONLY}, {unix.MS_NOSUID, unix.MOUNT_ATTR_NOSUID},
		{unix.MS_NODEV, unix.MOUNT_ATTR_NODEV}, {unix.MS_NOEXEC, unix.MOUNT_ATTR_NOEXEC},
		{unix.MS_NODIRATIME, unix.MOUNT_ATTR_NODIRATIME}, {unix.MS_NOSYMFOLLOW, unix.MOUNT_ATTR_NOSYMFOLLOW},
	} {
		if flags&f[0] != 0 {
			a |= f[1]
		}
	}
	switch {
	case flags&unix.MS_STRICTATIME != 0:
		a |= unix.MOUNT_ATTR_STRICTATIME
	case flags&unix.MS_NOATIME != 0:
		a |= unix.MOUNT_ATTR_NOATIME
	}
	return int(a)
}

// FuzzMountFlags: the flags a container passes to mount(2) become the
// attributes an emulated new mount gets exactly as the kernel would set
// them, in a form fsmount accepts (one atime mode); and a remount loosens
// a mount exactly when it drops one of ro, nosuid, nodev, noexec the mount
// has, so keeping all four never counts as loosening.
func FuzzMountFlags(f *testing.F) {
	f.Add(uint64(unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC), "ro,nosuid,nodev,noexec")
	f.Add(uint64(unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY), "ro,relatime")
	f.Add(uint64(unix.MS_NOATIME|unix.MS_STRICTATIME|unix.MS_NODIRATIME), "rw,nosuid")
	f.Add(uint64(unix.MS_NOSYMFOLLOW|unix.MS_RELATIME), "rw,nosymfollow")
	f.Add(^uint64(0), ",ro,,nosuid ")
	f.Fuzz(func(t *testing.T, flags uint64, opts string) {
		got := mountAttrs(uintptr(flags))
		if want := pathMountAttrs(flags); got != want {
			t.Fatalf("flags %#x: attributes %#x, the kernel's %#x", flags, got, want)
		}
		known := unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC |
			unix.MOUNT_ATTR__ATIME | unix.MOUNT_ATTR_NODIRATIME | unix.MOUNT_ATTR_NOSYMFOLLOW
		if at := got & unix.MOUNT_ATTR__ATIME; got&^known != 0 || (at != unix.MOUNT_ATTR_RELATIME && at != unix.MOUNT_ATTR_NOATIME && at != unix.MOUNT_ATTR_STRICTATIME) {
			t.Fatalf("flags %#x: attributes %#x, which fsmount refuses", flags, got)
		}

		m := &mountinfo.Entry{Opts: opts}
		has := strings.Split(opts, ",")
		want := false
		for _, r := range []struct {
			opt string
			ms  uint64
		}{{"ro", unix.MS_RDONLY}, {"nosuid", unix.MS_NOSUID}, {"nodev", unix.MS_NODEV}, {"noexec", unix.MS_NOEXEC}} {
			want = want || slices.Contains(has, r.opt) && flags&r.ms == 0
		}
		if l := loosens(m, uintptr(flags)); l != want {
			t.Fatalf("remount %#x of %q: loosens %v, want %v", flags, opts, l, want)
		}
		if loosens(m, uintptr(flags)|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC) {
			t.Fatalf("remount of %q keeping every restriction counts as loosening", opts)
		}
	})
}

// FuzzKernelFSOptions: mount data for a new procfs or sysfs, as a
// container passes it, is refused with EINVAL or yields, in order, exactly
// the procfs options the kernel is then given (hidepid, gid, subset) and
// nothing for sysfs; it is refused exactly when some option is neither one
// of those nor a flag; what it yields, given again, yields itself.
func FuzzKernelFSOptions(f *testing.F) {
	for _, d := range []string{"", "rw", "hidepid=2,gid=1000", "subset=pid,ro", "defaults,,hidepid=invisible",
		"mode=755,size=10m,uid=0", "lowerdir=/a:/b,upperdir=/c,workdir=/d", "hidepid", "gid=1,gid=2", ",,", "rw=1", "sync"} {
		f.Add(true, d)
		f.Add(false, d)
	}
	f.Fuzz(func(t *testing.T, proc bool, data string) {
		fstype := map[bool]string{true: "proc", false: "sysfs"}[proc]
		got, err := kernelFSOptions(fstype, data)
		allowed := func(o string) bool {
			k, _, _ := strings.Cut(o, "=")
			return o == "" || o == "rw" || o == "ro" || o == "defaults" || proc && (k == "hidepid" || k == "gid" || k == "subset")
		}
		pieces := strings.Split(data, ",")
		if err != nil {
			if err != unix.EINVAL || got != nil || !slices.ContainsFunc(pieces, func(o string) bool { return !allowed(o) }) {
				t.Fatalf("%s %q: %q, error %v", fstype, data, got, err)
			}
			return
		}
		var want []string
		for _, o := range pieces {
			if !allowed(o) {
				t.Fatalf("%s %q: accepted %q", fstype, data, o)
			}
			if o != "" && o != "rw" && o != "ro" && o != "defaults" {
				want = append(want, o)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s %q: %q, want %q", fstype, data, got, want)
		}
		if again, err := kernelFSOptions(fstype, strings.Join(got, ",")); err != nil || !slices.Equal(again, got) {
			t.Fatalf("%s %q: %q, given again %q (%v)", fstype, data, got, again, err)
		}
	})
}

// FuzzSplitLast: umount's target splits into a directory that resolves
// from where the target would (the cwd for a relative one, the root for an
// absolute one) and the target's last component, which has no slash and
// together with the directory names the target again.
func FuzzSplitLast(f *testing.F) {
	for _, p := range []string{"/a/b/", "/", "", "a", "//b", "a//b", "/proc/sys/..", ".", "../x", "/a/./b//"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		dir, name := splitLast(p)
		trimmed := strings.TrimRight(p, "/")
		if trimmed == "" {
			if dir != "/" || name != "" {
				t.Fatalf("%q: %q %q", p, dir, name)
			}
			return
		}
		if name == "" || strings.Contains(name, "/") || name != path.Base(trimmed) {
			t.Fatalf("%q: last component %q", p, name)
		}
		if dir == "" || strings.HasPrefix(dir, "/") != strings.HasPrefix(p, "/") {
			t.Fatalf("%q: directory %q resolves from elsewhere", p, dir)
		}
		if path.Clean(dir+"/"+name) != path.Clean(p) {
			t.Fatalf("%q: %q + %q names %q", p, dir, name, path.Clean(dir+"/"+name))
		}
	})
}

// FuzzStartTime: whatever name (comm) a process in a container gives
// itself, spaces, parentheses and newlines included, the start time read
// from its /proc/<pid>/stat is the kernel's: selfIn identifies the caller
// by it.
func FuzzStartTime(f *testing.F) {
	f.Add(int32(1), "systemd", byte('S'), uint64(5), int64(-2), uint64(123456))
	f.Add(int32(42), "a) R 1 2 3 4 5", byte('R'), uint64(0), int64(20), uint64(7))
	f.Add(int32(7), ") ) (\n", byte('Z'), uint64(1<<63), int64(-100), uint64(1<<64-1))
	f.Fuzz(func(t *testing.T, pid int32, comm string, state byte, n uint64, prio int64, start uint64) {
		// TASK_COMM_LEN less its NUL; the kernel writes it raw.
		comm = strings.ReplaceAll(comm, "\x00", "")
		if len(comm) > 15 {
			comm = comm[:15]
		}
		// The state is one of the kernel's letters (task_state_array).
		fields := []string{fmt.Sprint(pid), "(" + comm + ")", string("RSDTtXZPI"[int(state)%9])}
		for i := 4; i <= 52; i++ {
			switch i {
			case 18, 19:
				fields = append(fields, strconv.FormatInt(prio, 10))
			case 22:
				fields = append(fields, strconv.FormatUint(start, 10))
			default:
				fields = append(fields, strconv.FormatUint(n+uint64(i), 10))
			}
		}
		stat := strings.Join(fields, " ") + "\n"
		if got := startTime(stat); got != strconv.FormatUint(start, 10) {
			t.Fatalf("%q: start time %q, want %d", stat, got, start)
		}
	})
}

// FuzzMayBeSysctl: a path the caller names on a procfs mount (any root
// within the procfs, any mount point) is taken for a sysctl, and looked up
// again in the caller's network and IPC namespaces, whenever the file it
// reaches lies at or under the procfs's sys/; and a path not below the
// mount point always is (it cannot be told).
func FuzzMayBeSysctl(f *testing.F) {
	f.Add("/proc", "/", "sys/net/ipv4")
	f.Add("/", "/sys", "kernel")
	f.Add("/x/proc", "/sys/net", "")
	f.Add("/proc", "/", "sysrq-trigger")
	f.Add("/p", "/1/root", "sys")
	f.Fuzz(func(t *testing.T, mp, root, rel string) {
		// As the kernel names them: clean absolute paths, and a path
		// below the mount point.
		mp, root, rel = path.Clean("/"+mp), path.Clean("/"+root), strings.TrimPrefix(path.Clean("/"+rel), "/")
		m := &mountinfo.Entry{Mountpoint: mp, Root: root, FSType: "proc"}
		inFS := path.Join(root, rel)
		want := inFS == "/sys" || strings.HasPrefix(inFS, "/sys/")
		p := path.Join(mp, rel)
		if got := mayBeSysctl(m, p); got != want {
			t.Fatalf("%q on %s (root %s), the procfs's %q: sysctl %v, want %v", p, mp, root, inFS, got, want)
		}
		if out := path.Join("/", rel, "..", "x"+path.Base(mp)); mp != "/" && out != mp && !strings.HasPrefix(out, mp+"/") && !mayBeSysctl(m, out) {
			t.Fatalf("%q, not below %s, not taken for a sysctl", out, mp)
		}
	})
}
