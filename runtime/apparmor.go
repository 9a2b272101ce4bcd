package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sysvisor/sysvisor/apparmor"
	"github.com/sysvisor/sysvisor/linux/statefile"
	"github.com/sysvisor/sysvisor/policy"
)

// AppArmorOptions is what the rewrite needs to choose the container's
// AppArmor profile (see docs/apparmor.md, "Which profile a container
// gets").
type AppArmorOptions struct {
	// Enabled: the host's kernel enforces AppArmor.
	Enabled bool
	// Profile takes the place of an engine's default: the policy's
	// apparmor key, else sysvisor-default.
	Profile string
	// Named: the user named the spec's profile (docker run --security-opt
	// apparmor=...), as the engine's own record of the container says.
	Named bool
}

// engineDefaults are the profiles engines put in a spec when the user named
// none: Docker's, containerd CRI's (runtime/default), nerdctl's. Podman's
// carries its version: containers-default-<version>.
var engineDefaults = []string{"docker-default", "cri-containerd.apparmor.d", "nerdctl-default"}

func engineDefault(name string) bool {
	return slices.Contains(engineDefaults, name) || strings.HasPrefix(name, "containers-default-")
}

// chooseAppArmor returns the profile a container whose spec names current
// runs under, and whether it replaced the engine's default.
func chooseAppArmor(current string, o AppArmorOptions) (string, bool) {
	if o.Enabled && !o.Named && engineDefault(current) {
		return o.Profile, true
	}
	// No AppArmor on the host, no profile asked for, or one the user (or
	// whatever wrote the spec) named, unconfined included: as given.
	return current, false
}

// appArmorMasks are the masked paths that make a system container see
// AppArmor as disabled on a host where it is enabled: runc, containerd,
// dockerd, systemd and libapparmor read this parameter first. The
// container's sysfs has no securityfs either, so nothing inside tries to
// load a profile of its own (dockerd >= 23 would, and fail) or to change to
// one (its profile allows no change).
func appArmorMasks(enabled bool) []string {
	if !enabled {
		return nil
	}
	return []string{apparmor.EnabledParam}
}

// rewriteAppArmor sets the profile the container runs under and the mask
// that hides AppArmor from it.
func rewriteAppArmor(s *specs.Spec, o AppArmorOptions) {
	p, _ := chooseAppArmor(s.Process.ApparmorProfile, o)
	s.Process.ApparmorProfile = p
	for _, m := range appArmorMasks(o.Enabled) {
		if !slices.Contains(s.Linux.MaskedPaths, m) {
			s.Linux.MaskedPaths = append(s.Linux.MaskedPaths, m)
		}
	}
}

// dockerNamedAppArmor tells whether the user named the container's AppArmor
// profile. Docker writes "docker-default" into the spec both when the user
// names nothing and for --security-opt apparmor=docker-default; only its
// record of the container tells them apart: hostconfig.json's SecurityOpt
// keeps the user's options as given. That file sits beside the container's
// hostname file, which the spec binds at /etc/hostname from
// <data-root>/containers/<id>/hostname. A spec without that mount, or whose
// directory is not named after this container (--network container:...
// shares another's file), is not Docker's or cannot be told: not named.
func dockerNamedAppArmor(s *specs.Spec, id string) (bool, error) {
	var dir string
	for _, m := range s.Mounts {
		if m.Destination == "/etc/hostname" && filepath.IsAbs(m.Source) {
			dir = filepath.Dir(m.Source)
		}
	}
	if dir == "" || filepath.Base(dir) != id || filepath.Base(filepath.Dir(dir)) != "containers" {
		return false, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "hostconfig.json"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var hc struct {
		SecurityOpt []string
	}
	if err := json.Unmarshal(b, &hc); err != nil {
		return false, fmt.Errorf("%s: %w", filepath.Join(dir, "hostconfig.json"), err)
	}
	return namesAppArmor(hc.SecurityOpt), nil
}

// namesAppArmor: one of Docker's security options is "apparmor=NAME" (or
// the older "apparmor:NAME").
func namesAppArmor(opts []string) bool {
	for _, o := range opts {
		k, _, ok := strings.Cut(o, "=")
		if !ok {
			k, _, _ = strings.Cut(o, ":")
		}
		if strings.TrimSpace(k) == "apparmor" {
			return true
		}
	}
	return false
}

// appArmorFor gathers the options for a create: whether the host enforces
// AppArmor, the profile that replaces an engine's default, whether the
// user named the spec's.
func appArmorFor(s *specs.Spec, id, policyProfile string) (AppArmorOptions, error) {
	o := AppArmorOptions{Enabled: apparmor.Enabled(), Profile: firstNonEmpty(policyProfile, apparmor.Profile)}
	if !o.Enabled || s.Process == nil || !engineDefault(s.Process.ApparmorProfile) {
		return o, nil
	}
	named, err := dockerNamedAppArmor(s, id)
	if err != nil {
		return o, fmt.Errorf("AppArmor: cannot tell whether the user named %s: %w", s.Process.ApparmorProfile, err)
	}
	o.Named = named
	return o, nil
}

// ensureAppArmor makes sure the profile the container will run under is in
// the kernel: runc would otherwise fail at exec with a bare ENOENT. Its own
// profile sysvisor-runc loads when missing; one named by the user or a
// policy it cannot load (it has no file for it), so the create fails naming
// it. A container never runs unconfined because a profile was missing.
func ensureAppArmor(name, source string) error {
	if name == "" || name == apparmor.Unconfined || !apparmor.Enabled() {
		return nil
	}
	_, ok, err := apparmor.Mode(name)
	if err != nil {
		return fmt.Errorf("AppArmor profile %s (%s): %w", name, source, err)
	}
	if ok {
		return nil
	}
	if name != apparmor.Profile {
		return fmt.Errorf("AppArmor profile %s (%s) is not loaded in the kernel: load it with apparmor_parser -r FILE, or name another", name, source)
	}
	if _, _, err := apparmor.Ensure(context.Background()); err != nil {
		return fmt.Errorf("AppArmor profile %s is not loaded in the kernel and loading it failed (sudo make install, or apparmor_parser -r %s): %w", name, apparmor.Path(), err)
	}
	return nil
}

// appArmorFile records, in the container's runtime directory, the profile
// the engine asked for and the one the container got, so that `exec` gives
// its processes the same (engines put their default in every exec's
// process too).
const appArmorFile = "apparmor.json"

type appArmorRecord struct {
	Engine string `json:"engine"`
	Chosen string `json:"chosen"`
}

func recordAppArmor(dir, engine, chosen string) error {
	if engine == chosen {
		return nil
	}
	b, _ := json.Marshal(appArmorRecord{Engine: engine, Chosen: chosen})
	return statefile.Replace(filepath.Join(dir, appArmorFile), b, 0o644)
}

// execAppArmor gives an exec'd process the container's profile where the
// engine asked for the one the container's init had been given instead.
func execAppArmor(dir string, p *specs.Process) error {
	b, err := os.ReadFile(filepath.Join(dir, appArmorFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var rec appArmorRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, appArmorFile), err)
	}
	if p.ApparmorProfile == rec.Engine {
		p.ApparmorProfile = rec.Chosen
	}
	return nil
}

// prepareAppArmor decides the container's profile before the rewrite and
// makes sure it is loaded, so a create fails before anything is mounted.
func prepareAppArmor(s *specs.Spec, id string, pol *policy.Policy) (AppArmorOptions, error) {
	o, err := appArmorFor(s, id, pol.AppArmor)
	if err != nil {
		return o, err
	}
	chosen, replaced := chooseAppArmor(s.Process.ApparmorProfile, o)
	source := "named in the spec"
	switch {
	case replaced && pol.AppArmor != "":
		source = fmt.Sprintf("from policy %s, in place of the engine's %s", pol.Name, s.Process.ApparmorProfile)
	case replaced:
		source = "sysvisor's default, in place of the engine's " + s.Process.ApparmorProfile
	case o.Named:
		source = "named with --security-opt apparmor="
	}
	return o, ensureAppArmor(chosen, source)
}
