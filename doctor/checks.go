package doctor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go/features"

	"github.com/sysvisor/sysvisor/supervisor/lease"
)

// SeccompNotify judges /proc/sys/kernel/seccomp/actions_avail.
func SeccompNotify(actionsAvail string, readErr error) Result {
	if readErr != nil {
		return fail("seccomp user notify", readErr.Error(), "the kernel needs CONFIG_SECCOMP_FILTER")
	}
	if !slices.Contains(strings.Fields(actionsAvail), "user_notif") {
		return fail("seccomp user notify", "actions_avail: "+strings.TrimSpace(actionsAvail), "the kernel lacks SECCOMP_RET_USER_NOTIF (Linux >= 5.0)")
	}
	return ok("seccomp user notify", "SECCOMP_RET_USER_NOTIF available")
}

// Userns judges max_user_namespaces and the probe that created one.
func Userns(maxUserNS string, probeErr error) Result {
	if n, err := strconv.Atoi(strings.TrimSpace(maxUserNS)); err == nil && n == 0 {
		return fail("user namespaces", "user.max_user_namespaces is 0", "sysctl -w user.max_user_namespaces=15000 (every container has its own)")
	}
	if probeErr != nil {
		return fail("user namespaces", "cannot create one: "+probeErr.Error(), "the kernel needs CONFIG_USER_NS")
	}
	return ok("user namespaces", "created one (max "+strings.TrimSpace(maxUserNS)+")")
}

// Idmap judges the idmapped-mount probe on dir.
func Idmap(dir, fstype string, probeErr error) Result {
	if probeErr != nil {
		return fail("idmapped mounts", fmt.Sprintf("%s (%s): %v", dir, fstype, probeErr),
			"sysvisor shifts image layers with MOUNT_ATTR_IDMAP: the filesystem under the engine's data root must support it (ext4, xfs, btrfs; Linux >= 5.12)")
	}
	return ok("idmapped mounts", fmt.Sprintf("%s (%s) can be idmapped", dir, fstype))
}

// Runc judges runc's version output and its feature document.
func Runc(path, version string, featuresJSON []byte, err error) []Result {
	if err != nil {
		return []Result{fail("runc", err.Error(), "install runc >= 1.1 (Debian: apt-get install runc), or give --runc PATH")}
	}
	out := []Result{ok("runc", path+": "+firstLine(version))}
	var f features.Features
	if err := json.Unmarshal(featuresJSON, &f); err != nil {
		return append(out, fail("runc seccomp", "runc features: "+err.Error(), "runc >= 1.1 is required"))
	}
	sc := (*features.Seccomp)(nil)
	if f.Linux != nil {
		sc = f.Linux.Seccomp
	}
	if sc == nil || sc.Enabled == nil || !*sc.Enabled {
		return append(out, fail("runc seccomp", "runc is built without seccomp", "use a runc built with libseccomp >= 2.5"))
	}
	lib := "libseccomp ?"
	if v := f.Annotations["io.github.seccomp.libseccomp.version"]; v != "" {
		lib = "libseccomp " + v
	}
	if !slices.Contains(sc.Actions, "SCMP_ACT_NOTIFY") {
		return append(out, fail("runc seccomp", lib+": no SCMP_ACT_NOTIFY", "sysvisor-runc refuses to create containers: use runc >= 1.1 with libseccomp >= 2.5"))
	}
	if !slices.Contains(sc.SupportedFlags, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV") {
		return append(out, warn("runc seccomp", lib+": SCMP_ACT_NOTIFY, no SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
			"a signal can make a trapped call arrive twice (handlers cope); runc 1.2 or later, built with libseccomp 2.6 or later, sets the flag"))
	}
	return append(out, ok("runc seccomp", lib+": SCMP_ACT_NOTIFY, SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"))
}

// SubIDPool judges the sysvisor entries of the subordinate-ID files.
func SubIDPool(subuid, subgid []byte, uidErr, gidErr error) Result {
	const check = "subuid/subgid pool"
	find := func(name string, b []byte, rerr error) (*lease.SubIDEntry, error) {
		if rerr != nil {
			if errors.Is(rerr, errNotExist) {
				return nil, nil
			}
			return nil, rerr
		}
		es, err := lease.ParseSubID(name, b)
		if err != nil {
			return nil, err
		}
		for i := range es {
			if es[i].Owner == "sysvisor" {
				return &es[i], nil
			}
		}
		return nil, nil
	}
	u, err := find("subuid", subuid, uidErr)
	if err != nil {
		return fail(check, err.Error(), "")
	}
	g, err := find("subgid", subgid, gidErr)
	if err != nil {
		return fail(check, err.Error(), "")
	}
	switch {
	case u == nil && g == nil:
		return warn(check, "no sysvisor entry yet", "sysvisord appends one to /etc/subuid and /etc/subgid on its first start")
	case u == nil || g == nil:
		return fail(check, "a sysvisor entry in only one of subuid and subgid", "sysvisord refuses to start: give both files the same sysvisor:<start>:<count> line")
	case u.Start != g.Start || u.Size != g.Size:
		return fail(check, fmt.Sprintf("subuid sysvisor:%d:%d differs from subgid sysvisor:%d:%d", u.Start, u.Size, g.Start, g.Size), "make the two lines identical")
	case u.Size < 65536:
		return fail(check, fmt.Sprintf("sysvisor:%d:%d holds no 65536-ID block", u.Start, u.Size), "every container needs 65536 IDs of its own")
	}
	return ok(check, fmt.Sprintf("sysvisor:%d:%d, %d containers", u.Start, u.Size, u.Size/65536))
}

// DockerRegistration judges daemon.json: a runtime whose path is a
// sysvisor-runc binary. exists says whether a path exists and is executable.
func DockerRegistration(path string, b []byte, readErr error, exists func(string) error) Result {
	const check = "docker registration"
	if readErr != nil {
		if errors.Is(readErr, errNotExist) {
			return warn(check, path+" does not exist", `to use Docker, add {"runtimes": {"sysvisor-runc": {"path": "/usr/local/bin/sysvisor-runc"}}} and restart it (containerd users can ignore this)`)
		}
		return fail(check, readErr.Error(), "")
	}
	var cfg struct {
		Runtimes map[string]struct {
			Path string `json:"path"`
		} `json:"runtimes"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			line, col := position(b, se.Offset-1) // Offset is just past the bad byte
			return fail(check, fmt.Sprintf("%s:%d:%d: %v", path, line, col, err), "dockerd will not start with this file")
		}
		return fail(check, fmt.Sprintf("%s: %v", path, err), "dockerd will not start with this file")
	}
	var names []string
	for name, rt := range cfg.Runtimes {
		if name == "sysvisor-runc" || filepath.Base(rt.Path) == "sysvisor-runc" {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) == 0 {
		return warn(check, path+" registers no sysvisor-runc runtime", `add "runtimes": {"sysvisor-runc": {"path": "/usr/local/bin/sysvisor-runc"}} and restart dockerd`)
	}
	for _, n := range names {
		p := cfg.Runtimes[n].Path
		if p == "" {
			return fail(check, fmt.Sprintf("%s: runtime %q has no path", path, n), "")
		}
		if err := exists(p); err != nil {
			return fail(check, fmt.Sprintf("%s: runtime %q: %s: %v", path, n, p, err), "make install, or correct the path")
		}
	}
	return ok(check, fmt.Sprintf("%s: runtime %s", path, strings.Join(names, ", ")))
}

// position turns a byte offset into a 1-based line and column.
func position(b []byte, off int64) (int, int) {
	off = min(max(off, 0), int64(len(b)))
	before := b[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}
