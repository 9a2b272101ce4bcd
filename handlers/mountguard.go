package handlers

import (
	"fmt"
	"path"
	"strconv"
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

// lockCovers reports whether m's superblock and root lie within those of a
// mount a signature in sigs names (protected, or a locked copy): m is then
// a copy of it, made by a bind of it or of what lies below it, and keeps
// its flags. The container reaches a superblock of the host's, or one the
// runtime or sysvisord made for it, only through those mounts, so every
// such mount is such a copy; a superblock it makes itself (tmpfs, its
// procfs) has a device of its own.
//
// The root ends at the signature's first '@'. A root that holds '@' is cut
// short, to a prefix of itself, which covers more, never less.
func lockCovers(sigs []string, m *mountinfo.Entry) bool {
	for _, sig := range sigs {
		maj, min, root, ok := sigRoot(strings.TrimPrefix(sig, lockedPrefix))
		if !ok || maj != m.Major || min != m.Minor {
			continue
		}
		if root == "/" || m.Root == root || strings.HasPrefix(m.Root, root+"/") {
			return true
		}
	}
	return false
}

// sigRoot parses the leading "M:N<root>@" of a signature.
func sigRoot(sig string) (major, minor uint32, root string, ok bool) {
	at := strings.IndexByte(sig, '@')
	colon := strings.IndexByte(sig, ':')
	slash := strings.IndexByte(sig, '/')
	if at < 0 || colon < 1 || slash < colon || slash > at {
		return 0, 0, "", false
	}
	ma, err1 := strconv.ParseUint(sig[:colon], 10, 32)
	mi, err2 := strconv.ParseUint(sig[colon+1:slash], 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, "", false
	}
	root = sig[slash:at]
	if root != "/" {
		root = strings.TrimSuffix(root, "/")
	}
	return uint32(ma), uint32(mi), root, true
}

// StaleSignature reports whether sig (from sigOf, with or without
// lockedPrefix) can no longer name any mount: the superblock of its mount
// or of its parent is gone everywhere (alive answers for a major:minor, as
// mountinfo.SuperblockAlive does). Signatures of the masks on a procfs or
// sysfs that an inner container mounted and is gone would otherwise pile
// up in the record for as long as the container lives, and match whatever
// superblock reuses the number later.
//
// The mount's own device leads the signature. The parent's follows a '<',
// but the paths between can hold "<M:N/" as well (a container names its
// mountpoints and bind sources), so every such candidate must be dead: a
// crafted path can keep a signature, never drop a live one.
func StaleSignature(sig string, alive func(major, minor uint32) bool) bool {
	sig = strings.TrimPrefix(sig, lockedPrefix)
	maj, min, ok := leadingDev(sig)
	if !ok {
		return false
	}
	if !alive(maj, min) {
		return true
	}
	candidates := 0
	for i := strings.IndexByte(sig, '<'); i >= 0; {
		if maj, min, ok := leadingDev(sig[i+1:]); ok {
			candidates++
			if alive(maj, min) {
				return false
			}
		}
		j := strings.IndexByte(sig[i+1:], '<')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return candidates > 0
}

// leadingDev parses "M:N/" at the start of s (a superblock's device, then
// its root).
func leadingDev(s string) (major, minor uint32, ok bool) {
	num := func(s string) (uint32, string, bool) {
		var n uint64
		i := 0
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			n = n*10 + uint64(s[i]-'0')
			if n > 1<<32-1 {
				return 0, "", false
			}
		}
		return uint32(n), s[i:], i > 0
	}
	major, rest, ok := num(s)
	if !ok || !strings.HasPrefix(rest, ":") {
		return 0, 0, false
	}
	minor, rest, ok = num(rest[1:])
	if !ok || !strings.HasPrefix(rest, "/") {
		return 0, 0, false
	}
	return major, minor, true
}
