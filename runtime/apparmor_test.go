package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sysvisor/sysvisor/apparmor"
)

// The profile a container runs under after the rewrite, for each way the
// engine and the user can have asked: docs/apparmor.md, "Which profile a
// container gets".
func TestRewriteAppArmor(t *testing.T) {
	on := AppArmorOptions{Enabled: true, Profile: apparmor.Profile}
	cases := []struct {
		name string
		spec string // the engine's process.apparmorProfile
		o    AppArmorOptions
		want string
		mask bool
	}{
		{"docker default", "docker-default", on, "sysvisor-default", true},
		{"containerd CRI default", "cri-containerd.apparmor.d", on, "sysvisor-default", true},
		{"nerdctl default", "nerdctl-default", on, "sysvisor-default", true},
		{"podman default", "containers-default-0.62.0", on, "sysvisor-default", true},
		{"policy names another", "docker-default", AppArmorOptions{Enabled: true, Profile: "site-sysctr"}, "site-sysctr", true},
		{"user named docker-default", "docker-default", AppArmorOptions{Enabled: true, Profile: apparmor.Profile, Named: true}, "docker-default", true},
		{"user named a profile", "my-profile", on, "my-profile", true},
		{"user named unconfined", "unconfined", on, "unconfined", true},
		{"engine asked for none", "", on, "", true},
		{"no AppArmor on the host", "", AppArmorOptions{Profile: apparmor.Profile}, "", false},
		{"no AppArmor, stray name", "docker-default", AppArmorOptions{Profile: apparmor.Profile}, "docker-default", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := dockerSpec(t)
			s.Process.ApparmorProfile = c.spec
			masks := slices.Clone(s.Linux.MaskedPaths)
			o := testOptions()
			o.AppArmor = c.o
			if err := Rewrite(s, o); err != nil {
				t.Fatal(err)
			}
			if s.Process.ApparmorProfile != c.want {
				t.Errorf("profile %q, want %q", s.Process.ApparmorProfile, c.want)
			}
			if c.mask {
				masks = append(masks, apparmor.EnabledParam)
			}
			if !slices.Equal(s.Linux.MaskedPaths, masks) {
				t.Errorf("masked paths %v, want %v", s.Linux.MaskedPaths, masks)
			}
			// Applied again, it adds no second mask.
			rewriteAppArmor(s, o.AppArmor)
			if !slices.Equal(s.Linux.MaskedPaths, masks) {
				t.Errorf("applied twice: masked paths %v", s.Linux.MaskedPaths)
			}
		})
	}
}

// writeHostconfig lays out Docker's record of container id under a data
// root and points the spec's /etc/hostname bind at it, as Docker does.
func writeHostconfig(t *testing.T, s *specs.Spec, id, content string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "containers", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if content != "" {
		if err := os.WriteFile(filepath.Join(dir, "hostconfig.json"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i := range s.Mounts {
		if s.Mounts[i].Destination == "/etc/hostname" {
			s.Mounts[i].Source = filepath.Join(dir, "hostname")
		}
	}
	return dir
}

func TestDockerNamedAppArmor(t *testing.T) {
	cases := []struct {
		name, id, hostconfig string
		want                 bool
		err                  string
	}{
		{"no security options", testID, `{"SecurityOpt":null,"Privileged":false}`, false, ""},
		{"seccomp only", testID, `{"SecurityOpt":["seccomp=unconfined","no-new-privileges"]}`, false, ""},
		{"apparmor=docker-default", testID, `{"SecurityOpt":["apparmor=docker-default"]}`, true, ""},
		{"apparmor=unconfined", testID, `{"SecurityOpt":["label=disable","apparmor=unconfined"]}`, true, ""},
		{"legacy apparmor:name", testID, `{"SecurityOpt":["apparmor:docker-default"]}`, true, ""},
		{"not this container's directory", "another", `{"SecurityOpt":["apparmor=x"]}`, false, ""},
		{"no hostconfig.json", testID, "", false, ""},
		{"broken hostconfig.json", testID, `{"SecurityOpt":`, false, "hostconfig.json"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := dockerSpec(t)
			writeHostconfig(t, s, c.id, c.hostconfig)
			got, err := dockerNamedAppArmor(s, testID)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one naming %s", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Errorf("named %v, %v; want %v", got, err, c.want)
			}
		})
	}
	// A spec without Docker's hostname bind (containerd, runc): not named.
	s := dockerSpec(t)
	s.Mounts = slices.DeleteFunc(s.Mounts, func(m specs.Mount) bool { return m.Destination == "/etc/hostname" })
	if named, err := dockerNamedAppArmor(s, testID); named || err != nil {
		t.Errorf("spec without /etc/hostname: %v, %v", named, err)
	}
}

// exec processes get the profile init got when the engine asks for its
// default again, and keep anything else.
func TestExecAppArmor(t *testing.T) {
	dir := t.TempDir()
	p := &specs.Process{ApparmorProfile: "docker-default"}
	if err := execAppArmor(dir, p); err != nil || p.ApparmorProfile != "docker-default" {
		t.Fatalf("without a record: %q, %v", p.ApparmorProfile, err)
	}
	if err := recordAppArmor(dir, "docker-default", "docker-default"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, appArmorFile)); !os.IsNotExist(err) {
		t.Errorf("a profile kept as given left a record: %v", err)
	}
	if err := recordAppArmor(dir, "docker-default", apparmor.Profile); err != nil {
		t.Fatal(err)
	}
	if err := execAppArmor(dir, p); err != nil || p.ApparmorProfile != apparmor.Profile {
		t.Errorf("exec with the engine's default: %q, %v", p.ApparmorProfile, err)
	}
	p = &specs.Process{ApparmorProfile: "unconfined"}
	if err := execAppArmor(dir, p); err != nil || p.ApparmorProfile != "unconfined" {
		t.Errorf("exec naming another profile: %q, %v", p.ApparmorProfile, err)
	}
	if err := os.WriteFile(filepath.Join(dir, appArmorFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := execAppArmor(dir, p); err == nil || !strings.Contains(err.Error(), appArmorFile) {
		t.Errorf("broken record: %v", err)
	}
}

// On a host that does not enforce AppArmor nothing is checked or loaded.
func TestEnsureAppArmorWithout(t *testing.T) {
	if apparmor.Enabled() {
		t.Skip("AppArmor is enabled here: tests/hosts/checks-apparmor.sh checks loading")
	}
	for _, n := range []string{"", "unconfined", apparmor.Profile, "not-loaded-anywhere"} {
		if err := ensureAppArmor(n, "test"); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
	o, err := appArmorFor(dockerSpec(t), testID, "")
	if err != nil || o.Enabled || o.Profile != apparmor.Profile {
		t.Errorf("appArmorFor: %+v, %v", o, err)
	}
}
