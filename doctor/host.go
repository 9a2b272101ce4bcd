package doctor

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/sysvisor/sysvisor/apparmor"
	"github.com/sysvisor/sysvisor/kernel"
)

// The host checks that differ between the hosts people run: the kernel
// against the floor and each feature newer than it, the cgroup mode, the
// engine's cgroup driver and what its containers' cgroups can delegate, and
// AppArmor. Each judge is a pure function of what its probe read.

// Kernel judges the kernel release against kernel.Floor.
func Kernel(release string) Result {
	if err := kernel.CheckFloor(release); err != nil {
		return fail("kernel", err.Error(), fmt.Sprintf("sysvisor-runc refuses to create containers: boot Linux %s or later (Debian 12's 6.1 is the oldest tested)", kernel.Floor))
	}
	return ok("kernel", fmt.Sprintf("%s (floor %s)", release, kernel.Floor))
}

// FeatureState is what the probe of one kernel feature found.
type FeatureState struct {
	Name, What, Fallback string
	Since                kernel.Version
	// ProbeErr is the probe's answer: nil when the kernel has it, wrapping
	// kernel.ErrMissing when it does not, anything else when the probe
	// could not tell.
	ProbeErr error
	// Forced: the fallback is forced (SYSVISOR_KERNEL_FALLBACKS in
	// doctor's environment).
	Forced bool
}

// StateOf reads a feature of the kernel package.
func StateOf(f *kernel.Feature) FeatureState {
	return FeatureState{Name: f.Name, What: f.What, Fallback: f.Fallback, Since: f.Since, ProbeErr: f.Probe(), Forced: f.Forced()}
}

// Feature judges one kernel feature. A fallback keeps the same security
// properties at some cost (speed, or a limit), so a feature in fallback is
// a warning, never a failure.
func Feature(s FeatureState) Result {
	check := "kernel " + s.Name
	switch {
	case s.ProbeErr != nil && !errors.Is(s.ProbeErr, kernel.ErrMissing):
		return warn(check, fmt.Sprintf("not probed (%v): the fallback is used: %s", s.ProbeErr, s.Fallback), "run sysvisorctl doctor as root")
	case s.ProbeErr != nil:
		return warn(check, fmt.Sprintf("missing (Linux %s has %s): fallback in use: %s", s.Since, s.What, s.Fallback),
			"works; a kernel with it is faster or has fewer limits")
	case s.Forced:
		return warn(check, "present, fallback forced by "+kernel.EnvFallbacks+": "+s.Fallback,
			"a test switch: sysvisord and sysvisor-runc follow their own --kernel-fallbacks and environment")
	}
	return ok(check, "present: "+s.What)
}

// Cgroup modes.
const (
	CgroupV1     = "v1"
	CgroupHybrid = "hybrid"
	CgroupV2     = "v2"
)

// Filesystem magics of /sys/fs/cgroup.
const (
	cgroup2Magic = 0x63677270
	tmpfsMagic   = 0x01021994
)

// CgroupMode tells the mode from the filesystem types (statfs magic) of
// /sys/fs/cgroup and /sys/fs/cgroup/unified (0 when absent).
func CgroupMode(root, unified int64) (string, error) {
	switch {
	case root == cgroup2Magic:
		return CgroupV2, nil
	case root == tmpfsMagic && unified == cgroup2Magic:
		return CgroupHybrid, nil
	case root == tmpfsMagic:
		return CgroupV1, nil
	}
	return "", fmt.Errorf("/sys/fs/cgroup is neither cgroup2 nor a tmpfs of v1 hierarchies (magic %#x)", root)
}

// Cgroups judges the cgroup mode.
func Cgroups(mode string, err error) Result {
	const check = "cgroup mode"
	switch {
	case err != nil:
		return fail(check, err.Error(), "sysvisor needs the container's cgroups: mount cgroup2 at /sys/fs/cgroup")
	case mode == CgroupV2:
		return ok(check, "v2 (unified): each container's cgroup is delegated to its root")
	case mode == CgroupHybrid:
		return ok(check, "hybrid: v1 controllers, cgroup2 at /sys/fs/cgroup/unified; each container's v1 directories are delegated to its root")
	}
	return ok(check, "v1: each container's directories are delegated to its root")
}

// DriverInput is what tells Docker's cgroup driver.
type DriverInput struct {
	// Info is `docker info --format {{.CgroupDriver}}` (the engine's own
	// answer), InfoErr why there is none (no docker CLI, engine down).
	Info    string
	InfoErr error
	// DaemonJSON is daemon.json's content (nil when absent).
	DaemonJSON []byte
	// Mode is the cgroup mode; Systemd whether systemd is the init
	// (/run/systemd/system exists, as dockerd checks).
	Mode    string
	Systemd bool
}

// CgroupDriver decides Docker's cgroup driver: the engine's answer if it
// gave one, else native.cgroupdriver in daemon.json's exec-opts, else
// dockerd's default, systemd on a v2 host with systemd as init and cgroupfs
// otherwise. how says which it was.
func CgroupDriver(in DriverInput) (driver, how string) {
	if d := strings.TrimSpace(in.Info); in.InfoErr == nil && d != "" {
		return d, "docker info"
	}
	var cfg struct {
		ExecOpts []string `json:"exec-opts"`
	}
	if in.DaemonJSON != nil && json.Unmarshal(in.DaemonJSON, &cfg) == nil {
		for _, o := range cfg.ExecOpts {
			k, v, _ := strings.Cut(o, "=")
			if strings.TrimSpace(k) == "native.cgroupdriver" {
				return strings.TrimSpace(v), "daemon.json exec-opts"
			}
		}
	}
	if in.Mode == CgroupV2 && in.Systemd {
		return "systemd", "dockerd's default on cgroup v2 with systemd as init"
	}
	return "cgroupfs", "dockerd's default without cgroup v2 and systemd as init"
}

// Driver judges the engine's cgroup driver.
func Driver(in DriverInput) Result {
	const check = "engine cgroup driver"
	d, how := CgroupDriver(in)
	detail := fmt.Sprintf("Docker: %s (%s)", d, how)
	if in.InfoErr != nil {
		detail += "; docker info: " + firstLine(in.InfoErr.Error())
	}
	switch d {
	case "systemd", "cgroupfs":
		if d == "systemd" && !in.Systemd {
			return warn(check, detail+", but systemd is not the init", "dockerd fails to start containers: drop native.cgroupdriver=systemd")
		}
		return ok(check, detail)
	}
	return warn(check, detail, "sysvisor is tested with the systemd and cgroupfs drivers")
}

// ParentCgroup is the cgroup, relative to /sys/fs/cgroup, that Docker
// creates its containers' cgroups in: system.slice for the systemd driver,
// /docker for cgroupfs, or daemon.json's cgroup-parent (a slice name for
// the systemd driver: a-b.slice lies in a.slice).
func ParentCgroup(driver string, daemonJSON []byte) string {
	var cfg struct {
		Parent string `json:"cgroup-parent"`
	}
	if daemonJSON != nil {
		json.Unmarshal(daemonJSON, &cfg)
	}
	if driver == "systemd" {
		slice := cfg.Parent
		if slice == "" {
			slice = "system.slice"
		}
		name := strings.TrimSuffix(slice, ".slice")
		parts := strings.Split(name, "-")
		var dirs []string
		for i := range parts {
			dirs = append(dirs, strings.Join(parts[:i+1], "-")+".slice")
		}
		return path.Join(dirs...)
	}
	if cfg.Parent != "" {
		return strings.TrimPrefix(path.Clean("/"+cfg.Parent), "/")
	}
	return "docker"
}

// ParentControllers is what the parent cgroup offers, read from its
// cgroup.controllers (what it may enable for its children) and
// cgroup.subtree_control (what is enabled now). Missing: the parent does
// not exist yet (cgroupfs's /docker before the first container), and the
// root's files are given instead.
type ParentControllers struct {
	Path                 string
	Controllers, Subtree string
	Missing              bool
	Err                  error
}

// wanted are the controllers an inner engine's limits need: --memory,
// --cpus, --pids-limit, --cpuset-cpus, and block I/O weights.
var wanted = []string{"cpu", "cpuset", "io", "memory", "pids"}

// Delegation judges whether a container's cgroup on v2 can hand the
// controllers an inner engine needs to its children: the controllers the
// engine's parent cgroup offers. On v1 every controller is a hierarchy of
// its own and is delegated by ownership.
func Delegation(mode string, p ParentControllers) Result {
	const check = "cgroup delegation"
	if mode != CgroupV2 {
		return ok(check, mode+": the container's directory in each v1 controller is handed to its root (no subtree_control)")
	}
	if p.Err != nil {
		return warn(check, fmt.Sprintf("%s: %v", p.Path, p.Err), "inner engines may get no controllers")
	}
	offered := strings.Fields(p.Controllers)
	where := "/sys/fs/cgroup/" + p.Path
	if p.Missing {
		where += " (not there yet; the root's)"
	}
	detail := fmt.Sprintf("%s offers %s", where, orNone(offered))
	if len(offered) > 0 {
		detail += fmt.Sprintf(" (enabled for its children now: %s)", orNone(strings.Fields(p.Subtree)))
	}
	var lack []string
	for _, c := range wanted {
		if !slices.Contains(offered, c) {
			lack = append(lack, c)
		}
	}
	switch {
	case len(offered) == 0:
		return warn(check, detail+": no controller can be delegated", "inner --memory, --cpus and --pids-limit fail: enable controllers in the parent's ancestors' cgroup.subtree_control")
	case len(lack) > 0:
		return warn(check, detail+"; missing "+strings.Join(lack, " "), "inner limits that need them fail")
	}
	return ok(check, detail)
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "none"
	}
	return strings.Join(l, " ")
}

// AppArmorState is what the AppArmor probe read.
type AppArmorState struct {
	// Enabled is /sys/module/apparmor/parameters/enabled ("Y" or "N");
	// EnabledErr is set when the file is missing (not built).
	Enabled    string
	EnabledErr error
	// Parser is apparmor_parser's path ("" if absent).
	Parser string
	// DockerSecurity is `docker info`'s security options (nil if the
	// engine did not answer).
	DockerSecurity []string
	// Profiles is /sys/kernel/security/apparmor/profiles ("" if
	// unreadable).
	Profiles string
	// Installed: sysvisor's profile file is where make install puts it
	// (apparmor.Path); sysvisord and sysvisor-runc load it from there,
	// else from the copy built into them.
	Installed bool
}

// DockerProfile is the profile Docker applies to a container that names
// none, once AppArmor is enabled and apparmor_parser present.
const DockerProfile = "docker-default"

// AppArmor judges AppArmor as Docker will apply it to system containers.
// docker-default denies mount and most /proc/sys writes, which system
// containers make (tmpfs mounts, sysctls, inner engines).
func AppArmor(s AppArmorState) Result {
	const check = "apparmor"
	if s.EnabledErr != nil {
		return ok(check, "not in this kernel")
	}
	if !strings.HasPrefix(strings.TrimSpace(s.Enabled), "Y") {
		return ok(check, "built in, disabled")
	}
	var applies bool
	var how string
	switch {
	case s.DockerSecurity != nil:
		applies = slices.ContainsFunc(s.DockerSecurity, func(o string) bool { return strings.Contains(o, "name=apparmor") })
		how = "docker info"
	default:
		// dockerd's own test: enabled, and the parser installed.
		applies = s.Parser != ""
		how = "apparmor_parser " + map[bool]string{true: "at " + s.Parser, false: "absent"}[s.Parser != ""]
	}
	if !applies {
		return ok(check, fmt.Sprintf("enabled; Docker confines no container (%s)", how))
	}
	if s.Profiles != "" && strings.Contains(s.Profiles, apparmor.Profile+" (") {
		return ok(check, fmt.Sprintf("enabled; Docker applies %s by default (%s), and system containers get %s in its place, loaded",
			DockerProfile, how, apparmor.Profile))
	}
	if s.Parser == "" {
		return fail(check, fmt.Sprintf("enabled; Docker applies %s (%s), %s is not loaded and apparmor_parser is missing", DockerProfile, how, apparmor.Profile),
			"install the apparmor package: sysvisord and sysvisor-runc load "+apparmor.Profile+" with it, and a create fails without it")
	}
	from := "the copy built into sysvisord"
	if s.Installed {
		from = apparmor.Path()
	}
	return warn(check, fmt.Sprintf("enabled; Docker applies %s (%s); %s is not loaded yet", DockerProfile, how, apparmor.Profile),
		"sysvisord loads it from "+from+" when it starts, sysvisor-runc at the next create; `systemctl restart sysvisord` loads it now")
}
