// Package apparmor is sysvisor's side of AppArmor: its own profile for
// system containers (the text file sysvisor-default beside this one, shipped
// and installed by `make install`), what the host's kernel has loaded, and
// loading the profile when it is missing. The runtime chooses the profile at
// create (runtime/apparmor.go), sysvisord reloads it at start
// (supervisor/apparmor.go), sysvisorctl inspect shows the one in use. See
// docs/apparmor.md.
//
// The package is a leaf like kernel/: it reads the kernel's files and runs
// apparmor_parser, nothing else.
package apparmor

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Profile is the name of sysvisor's profile for system containers.
const Profile = "sysvisor-default"

// Unconfined is the name that asks for no profile.
const Unconfined = "unconfined"

// Dir is where `make install` puts the profile (the Makefile's APPARMORDIR,
// set at build time): the distribution's policy directory, whose files the
// apparmor service loads at every boot.
var Dir = "/etc/apparmor.d"

// Text is the profile as this build ships it, loaded when the installed
// file is missing.
//
//go:embed sysvisor-default
var Text []byte

// The kernel's interfaces.
const (
	enabledParam = "/sys/module/apparmor/parameters/enabled"
	securityfs   = "/sys/kernel/security/apparmor"
	profilesFile = "/sys/kernel/security/apparmor/profiles"
)

// EnabledParam is the module parameter programs read to tell whether
// AppArmor is on (runc, containerd, dockerd, systemd's
// ConditionSecurity=apparmor, libapparmor's aa_is_enabled). sysvisor-runc
// masks it in system containers, so they see AppArmor as disabled.
const EnabledParam = enabledParam

// Enabled reports whether the running kernel enforces AppArmor: the module
// says so and securityfs shows its interface. It is what runc and the
// engines check before they name a profile.
func Enabled() bool {
	if _, err := os.Stat(securityfs); err != nil {
		return false
	}
	b, err := os.ReadFile(enabledParam)
	return err == nil && len(b) > 0 && b[0] == 'Y'
}

// ParseProfiles reads the kernel's list of loaded profiles (the securityfs
// file "profiles": one "name (mode)" a line) into name → mode.
func ParseProfiles(data []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		name, mode := line, ""
		if i := strings.LastIndex(line, " ("); i > 0 && strings.HasSuffix(line, ")") {
			name, mode = line[:i], line[i+2:len(line)-1]
		}
		out[name] = mode
	}
	return out
}

// Mode returns the mode a loaded profile is in ("enforce", "complain", ...)
// and whether it is loaded at all.
func Mode(name string) (string, bool, error) {
	b, err := os.ReadFile(profilesFile)
	if err != nil {
		return "", false, fmt.Errorf("AppArmor's loaded profiles: %w", err)
	}
	mode, ok := ParseProfiles(b)[name]
	return mode, ok, nil
}

// Path is where the installed profile is.
func Path() string { return Dir + "/" + Profile }

// parser finds apparmor_parser: on PATH, else where Debian and Ubuntu put
// it (the shim that runs sysvisor-runc may have a short PATH).
func parser() (string, error) {
	if p, err := exec.LookPath("apparmor_parser"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/apparmor_parser", "/sbin/apparmor_parser"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("apparmor_parser not found (install the apparmor package)")
}

// loadTimeout bounds a parser run: compiling the profile takes well under a
// second, and a create must not hang on it.
const loadTimeout = 30 * time.Second

// Load compiles sysvisor's profile and loads it into the kernel, replacing
// any version there: the installed file when it exists (an operator may
// have edited it), else the text this build ships. It returns where the
// text came from.
func Load(ctx context.Context) (string, error) {
	src, text := Path(), []byte(nil)
	if _, err := os.Stat(src); err != nil {
		src, text = "built-in", Text
	}
	p, err := parser()
	if err != nil {
		return src, fmt.Errorf("load AppArmor profile %s: %w", Profile, err)
	}
	ctx, cancel := context.WithTimeout(ctx, loadTimeout)
	defer cancel()
	// --replace: the kernel keeps running containers on the new version.
	// --skip-cache: no cache file is read or written, so an operator's edit
	// of the file is what gets loaded.
	args := []string{"--replace", "--skip-cache"}
	if text == nil {
		args = append(args, src)
	}
	cmd := exec.CommandContext(ctx, p, args...)
	if text != nil {
		cmd.Stdin = bytes.NewReader(text)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return src, fmt.Errorf("load AppArmor profile %s from %s: %s: %w: %s", Profile, src, p, err, strings.TrimSpace(string(out)))
	}
	return src, nil
}

// Ensure makes sure sysvisor's profile is loaded, loading it if not. loaded
// says whether it had to load it, and from where.
func Ensure(ctx context.Context) (loaded bool, src string, err error) {
	_, ok, err := Mode(Profile)
	if err != nil {
		return false, "", err
	}
	if ok {
		return false, "", nil
	}
	src, err = Load(ctx)
	if err != nil {
		return false, src, err
	}
	if _, ok, err = Mode(Profile); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("apparmor_parser succeeded but the kernel does not list %s", Profile)
		}
		return false, src, err
	}
	return true, src, nil
}

// Current returns the AppArmor label of a process, as "name (mode)" or
// "unconfined". The LSM-specific file comes first: with several LSMs
// stacked, attr/current belongs to whichever one the task displays.
func Current(pid int) (string, error) {
	base := "/proc/" + strconv.Itoa(pid) + "/attr/"
	b, err := os.ReadFile(base + "apparmor/current")
	if errors.Is(err, os.ErrNotExist) {
		b, err = os.ReadFile(base + "current")
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\x00\n"), nil
}

// ValidName reports whether a policy file may name name as a profile:
// AppArmor's profile names are free text, but one that becomes part of a
// write to /proc/self/attr/apparmor/exec ("exec NAME") must not carry
// blanks, control characters or a namespace (":ns:name", which the
// container could not switch to anyway). Letters, digits and
// '.', '_', '-', '+', '/' (path-like names such as /usr/bin/foo), at most
// 255 bytes.
func ValidName(name string) bool {
	if name == "" || len(name) > 255 || name[0] == ':' {
		return false
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '-', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}
