package handlers

import (
	"fmt"
	"path"
	"strings"

	"github.com/sysvisor/sysvisor/linux/mountinfo"
)

// A mount's signature names it independently of its mount id, so that the
// copies a container makes of the runtime's mounts (unshare -m, a recursive
// bind) are recognised as the same protection: the superblock and root of
// the mount, where it sits relative to its parent's mountpoint, and the
// parent's superblock and root. A container cannot forge one: a fresh
// procfs, sysfs or tmpfs has a superblock of its own.
func signature(byID map[int]*mountinfo.Entry, e *mountinfo.Entry) (string, bool) {
	p, ok := byID[e.Parent]
	if !ok || p == e {
		return "", false // the namespace's root: never protected
	}
	return sigOf(e, p), true
}

func sigOf(e, p *mountinfo.Entry) string {
	rel := strings.TrimPrefix(e.Mountpoint, p.Mountpoint)
	if p.Mountpoint == "/" {
		rel = e.Mountpoint
	}
	rel = path.Clean("/" + rel)
	return fmt.Sprintf("%d:%d%s@%s<%d:%d%s", e.Major, e.Minor, e.Root, rel, p.Major, p.Minor, p.Root)
}

func indexByID(ms []mountinfo.Entry) map[int]*mountinfo.Entry {
	byID := make(map[int]*mountinfo.Entry, len(ms))
	for i := range ms {
		byID[ms[i].ID] = &ms[i]
	}
	return byID
}

// RuntimeMounts returns the signatures of every mount in the namespace of
// the container's init as the runtime left it, except the root: these are
// the mounts a container may not unmount, move, or remount read-write. It
// also reports whether the container's /sys is read-only.
func RuntimeMounts(initPid int) ([]string, bool, error) {
	ms, err := mountinfo.Read(fmt.Sprintf("/proc/%d/mountinfo", initPid))
	if err != nil {
		return nil, false, err
	}
	sysRO := false
	for i := range ms {
		if ms[i].Mountpoint == "/sys" && ms[i].FSType == "sysfs" {
			sysRO = ms[i].ReadOnly()
		}
	}
	return signatures(ms, nil), sysRO, nil
}

// signatures of the mounts in ms that keep accepts (all, if keep is nil).
func signatures(ms []mountinfo.Entry, keep func(*mountinfo.Entry) bool) []string {
	byID := indexByID(ms)
	var out []string
	for i := range ms {
		if keep != nil && !keep(&ms[i]) {
			continue
		}
		if sig, ok := signature(byID, &ms[i]); ok {
			out = append(out, sig)
		}
	}
	return out
}

// hasProtectedBelow reports whether a protected mount among m's children
// sits at or below dir (a path from the namespace's root): a non-recursive
// bind of dir would show what it hides. The kernel refuses the same for
// locked mounts, with EINVAL.
func hasProtectedBelow(m *mountinfo.Entry, children []mountinfo.Entry, dir string, protected func(string) bool) bool {
	for i := range children {
		c := &children[i]
		if c.Mountpoint != dir && !strings.HasPrefix(c.Mountpoint, strings.TrimSuffix(dir, "/")+"/") {
			continue
		}
		if protected(sigOf(c, m)) {
			return true
		}
	}
	return false
}
