package kernel

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Version is a kernel's major.minor.
type Version struct{ Major, Minor int }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Less reports whether v is older than w.
func (v Version) Less(w Version) bool {
	return v.Major < w.Major || v.Major == w.Major && v.Minor < w.Minor
}

// ParseRelease reads "6.12.57+deb13-amd64" as 6.12.
func ParseRelease(release string) (Version, error) {
	f := strings.FieldsFunc(release, func(r rune) bool { return r < '0' || r > '9' })
	if len(f) < 2 {
		return Version{}, fmt.Errorf("kernel release %q: no major.minor", release)
	}
	major, err1 := strconv.Atoi(f[0])
	minor, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || !strings.HasPrefix(release, f[0]+"."+f[1]) {
		return Version{}, fmt.Errorf("kernel release %q: no major.minor", release)
	}
	return Version{major, minor}, nil
}

// Release returns the running kernel's release string (uname -r).
func Release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// Floor is the oldest kernel sysvisor supports: Debian 12's, the oldest the
// host matrix boots (tests/hosts). Every interface sysvisor uses that is
// newer than the floor is a Feature with a tested fallback; the ones below
// are required outright (Required).
var Floor = Version{6, 1}

// Requirement is an interface sysvisor cannot do without.
type Requirement struct {
	Since Version
	What  string
}

// Required are the interfaces below the floor that have no fallback,
// newest first: a kernel older than the floor lacks at least the first one
// newer than itself, or is simply not tested.
var Required = []Requirement{
	{Version{5, 19}, "overlayfs on idmapped layers"},
	{Version{5, 12}, "idmapped mounts (mount_setattr MOUNT_ATTR_IDMAP)"},
	{Version{5, 9}, "seccomp notify ADDFD and close_range"},
	{Version{5, 6}, "openat2 and pidfd_getfd"},
	{Version{5, 2}, "the new mount API (fsopen, fsmount, move_mount, open_tree)"},
	{Version{5, 0}, "seccomp user notification"},
}

// CheckFloor returns nil on a kernel at or above the floor, else one line
// that names the kernel, the floor and what is missing.
func CheckFloor(release string) error {
	v, err := ParseRelease(release)
	if err != nil {
		return err
	}
	if !v.Less(Floor) {
		return nil
	}
	missing := "kernels between it and the floor are not tested"
	for i := len(Required) - 1; i >= 0; i-- {
		if v.Less(Required[i].Since) {
			missing = fmt.Sprintf("it lacks %s (Linux %s)", Required[i].What, Required[i].Since)
			break
		}
	}
	return fmt.Errorf("kernel %s is older than sysvisor's floor %s: %s", release, Floor, missing)
}
