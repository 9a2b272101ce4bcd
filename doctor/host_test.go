package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysvisor/sysvisor/kernel"
)

func TestFeature(t *testing.T) {
	base := FeatureState{Name: "statmount", What: "statmount, listmount and unique mount ids",
		Fallback: "the mount emulation reads the thread's mountinfo", Since: kernel.Version{Major: 6, Minor: 8}}
	missing := base
	missing.ProbeErr = fmt.Errorf("statmount: %w (%w)", errors.New("function not implemented"), kernel.ErrMissing)
	forced := base
	forced.Forced = true
	unknown := base
	unknown.ProbeErr = errors.New("fsopen proc: operation not permitted")
	for _, tc := range []struct {
		name string
		s    FeatureState
		want Verdict
		text string
	}{
		{"present", base, OK, "present: statmount"},
		{"missing", missing, Warn, "missing (Linux 6.8 has statmount, listmount and unique mount ids): fallback in use: the mount emulation reads"},
		{"forced", forced, Warn, "present, fallback forced by SYSVISOR_KERNEL_FALLBACKS: the mount emulation"},
		{"not probed", unknown, Warn, "not probed (fsopen proc: operation not permitted)"},
	} {
		r := Feature(tc.s)
		if r.Check != "kernel statmount" || r.Verdict != tc.want || !strings.Contains(r.Detail, tc.text) {
			t.Errorf("%s: %+v, want %v with %q", tc.name, r, tc.want, tc.text)
		}
	}
}

func TestCgroupMode(t *testing.T) {
	for _, tc := range []struct {
		root, unified int64
		want          string
	}{
		{cgroup2Magic, 0, CgroupV2},
		{tmpfsMagic, cgroup2Magic, CgroupHybrid},
		{tmpfsMagic, tmpfsMagic, CgroupV1},
		{tmpfsMagic, 0, CgroupV1},
	} {
		if got, err := CgroupMode(tc.root, tc.unified); err != nil || got != tc.want {
			t.Errorf("CgroupMode(%#x, %#x) = %q, %v; want %q", tc.root, tc.unified, got, err, tc.want)
		}
	}
	_, err := CgroupMode(0xef53, 0)
	if r := Cgroups("", err); r.Verdict != Fail || !strings.Contains(r.Detail, "0xef53") {
		t.Errorf("ext4 at /sys/fs/cgroup: %+v", r)
	}
	if r := Cgroups(CgroupHybrid, nil); r.Verdict != OK || !strings.Contains(r.Detail, "hybrid") {
		t.Errorf("hybrid: %+v", r)
	}
}

func TestCgroupDriver(t *testing.T) {
	down := errors.New("exit status 1: Cannot connect to the Docker daemon")
	for _, tc := range []struct {
		name      string
		in        DriverInput
		want, how string
		verdict   Verdict
	}{
		{"engine answers", DriverInput{Info: "systemd\n", Mode: CgroupV2, Systemd: true}, "systemd", "docker info", OK},
		{"engine answers cgroupfs on a systemd host", DriverInput{Info: "cgroupfs", Mode: CgroupV2, Systemd: true}, "cgroupfs", "docker info", OK},
		{"daemon.json exec-opts", DriverInput{InfoErr: down, DaemonJSON: []byte(`{"exec-opts": ["native.cgroupdriver=cgroupfs"]}`), Mode: CgroupV2, Systemd: true},
			"cgroupfs", "daemon.json exec-opts", OK},
		{"default on v2 with systemd", DriverInput{InfoErr: down, DaemonJSON: []byte(`{"runtimes": {}}`), Mode: CgroupV2, Systemd: true},
			"systemd", "dockerd's default on cgroup v2 with systemd as init", OK},
		{"default on v2 without systemd", DriverInput{InfoErr: down, Mode: CgroupV2}, "cgroupfs", "dockerd's default without", OK},
		{"default on hybrid with systemd", DriverInput{InfoErr: down, Mode: CgroupHybrid, Systemd: true}, "cgroupfs", "dockerd's default without", OK},
		{"systemd driver without systemd", DriverInput{InfoErr: down, DaemonJSON: []byte(`{"exec-opts": ["native.cgroupdriver=systemd"]}`), Mode: CgroupHybrid},
			"systemd", "daemon.json exec-opts", Warn},
		{"broken daemon.json", DriverInput{InfoErr: down, DaemonJSON: []byte(`{`), Mode: CgroupV1}, "cgroupfs", "dockerd's default", OK},
	} {
		d, how := CgroupDriver(tc.in)
		if d != tc.want || !strings.Contains(how, tc.how) {
			t.Errorf("%s: %s (%s), want %s (%s)", tc.name, d, how, tc.want, tc.how)
		}
		if r := Driver(tc.in); r.Verdict != tc.verdict || !strings.Contains(r.Detail, "Docker: "+tc.want+" ("+tc.how) {
			t.Errorf("%s: %+v", tc.name, r)
		}
	}
}

func TestParentCgroup(t *testing.T) {
	for _, tc := range []struct {
		driver, json, want string
	}{
		{"systemd", ``, "system.slice"},
		{"cgroupfs", ``, "docker"},
		{"systemd", `{"cgroup-parent": "sysvisor.slice"}`, "sysvisor.slice"},
		{"systemd", `{"cgroup-parent": "ci-runners.slice"}`, "ci.slice/ci-runners.slice"},
		{"cgroupfs", `{"cgroup-parent": "/sysvisor-e2e"}`, "sysvisor-e2e"},
		{"cgroupfs", `{"cgroup-parent": "ci/docker"}`, "ci/docker"},
	} {
		var b []byte
		if tc.json != "" {
			b = []byte(tc.json)
		}
		if got := ParentCgroup(tc.driver, b); got != tc.want {
			t.Errorf("ParentCgroup(%s, %s) = %q, want %q", tc.driver, tc.json, got, tc.want)
		}
	}
}

func TestDelegation(t *testing.T) {
	all := "cpuset cpu io memory hugetlb pids rdma misc\n"
	for _, tc := range []struct {
		name string
		mode string
		p    ParentControllers
		want Verdict
		text string
	}{
		{"hybrid", CgroupHybrid, ParentControllers{}, OK, "v1 controller"},
		{"debian 13 system.slice", CgroupV2, ParentControllers{Path: "system.slice", Controllers: all, Subtree: "cpu io memory pids\n"}, OK,
			"/sys/fs/cgroup/system.slice offers cpuset cpu io memory hugetlb pids rdma misc (enabled for its children now: cpu io memory pids)"},
		{"cgroupfs before the first container", CgroupV2, ParentControllers{Path: "docker", Missing: true, Controllers: all, Subtree: all}, OK, "not there yet"},
		{"nothing offered", CgroupV2, ParentControllers{Path: "system.slice", Controllers: "\n"}, Warn, "offers none: no controller can be delegated"},
		{"no cpuset", CgroupV2, ParentControllers{Path: "system.slice", Controllers: "cpu io memory pids"}, Warn, "missing cpuset"},
		{"unreadable", CgroupV2, ParentControllers{Path: "docker", Err: fs.ErrPermission}, Warn, "permission"},
	} {
		r := Delegation(tc.mode, tc.p)
		if r.Verdict != tc.want || !strings.Contains(r.Detail, tc.text) {
			t.Errorf("%s: %+v, want %v with %q", tc.name, r, tc.want, tc.text)
		}
	}
}

// readParent on a fake cgroup2 tree.
func TestReadParent(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644)
	os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("memory\n"), 0o644)
	p := readParent(root, "docker")
	if !p.Missing || p.Controllers != "cpu memory pids\n" || p.Subtree != "memory\n" || p.Err != nil {
		t.Errorf("no /docker yet: %+v", p)
	}
	os.MkdirAll(filepath.Join(root, "system.slice"), 0o755)
	os.WriteFile(filepath.Join(root, "system.slice", "cgroup.controllers"), []byte("memory pids\n"), 0o644)
	if p := readParent(root, "system.slice"); p.Missing || p.Controllers != "memory pids\n" || p.Subtree != "" {
		t.Errorf("system.slice: %+v", p)
	}
}

func TestAppArmor(t *testing.T) {
	profiles := "docker-default (enforce)\n/usr/bin/man (enforce)\n"
	for _, tc := range []struct {
		name string
		s    AppArmorState
		want Verdict
		text string
	}{
		{"not built", AppArmorState{EnabledErr: fs.ErrNotExist}, OK, "not in this kernel"},
		{"disabled", AppArmorState{Enabled: "N"}, OK, "disabled"},
		{"enabled, no parser", AppArmorState{Enabled: "Y"}, OK, "Docker confines no container (apparmor_parser absent)"},
		{"enabled, ours not loaded", AppArmorState{Enabled: "Y", Parser: "/usr/sbin/apparmor_parser", Profiles: profiles}, Warn,
			"Docker applies docker-default (apparmor_parser at /usr/sbin/apparmor_parser); sysvisor-default is not loaded yet"},
		{"engine says so, ours loaded", AppArmorState{Enabled: "Y", Parser: "/usr/sbin/apparmor_parser", Profiles: profiles + "sysvisor-default (enforce)\n",
			DockerSecurity: []string{"name=apparmor", "name=seccomp,profile=builtin", "name=cgroupns"}}, OK,
			"system containers get sysvisor-default in its place, loaded"},
		{"engine says so, no parser", AppArmorState{Enabled: "Y", DockerSecurity: []string{"name=apparmor"}}, Fail, "apparmor_parser is missing"},
		{"engine says no", AppArmorState{Enabled: "Y", Parser: "/usr/sbin/apparmor_parser", DockerSecurity: []string{"name=seccomp,profile=builtin"}}, OK,
			"confines no container (docker info)"},
		{"installed, not loaded", AppArmorState{Enabled: "Y", Parser: "/sbin/apparmor_parser", Profiles: "/usr/bin/man (enforce)\n", Installed: true}, Warn, "loads it from /etc/apparmor.d/sysvisor-default"},
	} {
		r := AppArmor(tc.s)
		if r.Verdict != tc.want || !strings.Contains(r.Detail+" hint: "+r.Hint, tc.text) {
			t.Errorf("%s: %+v, want %v with %q", tc.name, r, tc.want, tc.text)
		}
	}
}
