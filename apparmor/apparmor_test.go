package apparmor

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/sysvisor/sysvisor/linux/sysctl"
)

func TestParseProfiles(t *testing.T) {
	got := ParseProfiles([]byte("docker-default (enforce)\n/usr/bin/man (complain)\nsysvisor-default (enforce)\nweird name (x) (kill)\n\n"))
	want := map[string]string{"docker-default": "enforce", "/usr/bin/man": "complain", "sysvisor-default": "enforce", "weird name (x)": "kill"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%q: mode %q, want %q", k, got[k], v)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, n := range []string{"sysvisor-default", "docker-default", "my.profile_2", "/usr/bin/foo", "lxc+x"} {
		if !ValidName(n) {
			t.Errorf("%q refused", n)
		}
	}
	for _, n := range []string{"", ":ns:prof", "two words", "a\nb", "x,y", "tab\there", strings.Repeat("a", 256), "é"} {
		if ValidName(n) {
			t.Errorf("%q accepted", n)
		}
	}
}

// The profile as shipped must compile with the host's apparmor_parser
// (tests/deps.sh installs it): -Q compiles without loading, -K skips the
// cache, so this works on a kernel without AppArmor.
func TestProfileParses(t *testing.T) {
	p, err := parser()
	if err != nil {
		t.Skipf("no apparmor_parser: %v", err)
	}
	args := []string{"-Q", "-K", "-d"}
	// Without a kernel's feature set the parser falls back to an older one;
	// ABI 3.0's (the profile's own) compiles mount, signal and ptrace rules
	// as an AppArmor kernel would.
	if _, err := os.Stat("/etc/apparmor.d/abi/3.0"); err == nil {
		args = append(args, "--features-file", "/etc/apparmor.d/abi/3.0")
	}
	cmd := exec.Command(p, args...)
	cmd.Stdin = strings.NewReader(string(Text))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s -Q -K: %v\n%s", p, err, out)
	}
	// The debug dump names the profile and its denials: a parser that
	// silently dropped a rule would show here.
	// (Parsers 3.0 and 4.1 print it differently; these are in both.)
	for _, want := range []string{"Name:\t\tsysvisor-default", "Deny Caps: mac_admin mac_override sys_module", "alg",
		"(/proc/sysrq-trigger)", "(/sys/kernel/security/{,**})", "pivotroot", "umount"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("parser dump lacks %q:\n%s", want, out)
		}
	}
	// An installed copy must be the same text (make install puts it there).
	if b, err := os.ReadFile(Path()); err == nil && string(b) != string(Text) {
		t.Logf("%s differs from this build's profile (edited, or an older install)", Path())
	}
}

// On a kernel without AppArmor (this machine's) loading must fail, and say
// which profile.
func TestLoadFailsClearlyWithoutAppArmor(t *testing.T) {
	if Enabled() {
		t.Skip("AppArmor is enabled here: see tests/hosts/checks-apparmor.sh")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root, as sysvisor-runc runs")
	}
	if _, err := parser(); err != nil {
		t.Skipf("no apparmor_parser: %v", err)
	}
	_, err := Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), Profile) {
		t.Fatalf("Load without AppArmor: %v, want an error naming %s", err, Profile)
	}
	if _, _, err := Ensure(context.Background()); err == nil {
		t.Fatal("Ensure without AppArmor succeeded")
	}
}

// rule is one file rule of the profile, as far as these checks read it.
type rule struct {
	deny, owner bool
	re          *regexp.Regexp
	perms       string
	src         string
}

// fileRules reads the profile's file rules. The glob conversion follows
// apparmor.d(5) and apparmor_parser's: '*' any characters but '/', '**' any
// characters; a run of them that is a whole path component in the pattern
// ("/x/*", "/x/**", "/x/**/y") matches at least one character, so
// "/proc/**" does not match "/proc/" but "/proc/{,**}" and "/m{,/**}"
// match "/proc/" and "/m/"; '?' one character but '/'; {a,b}
// alternatives; [...] and [^...] classes.
func fileRules(t *testing.T) []rule {
	t.Helper()
	line := regexp.MustCompile(`^\s*(deny\s+)?(owner\s+)?(/\S*)\s+([rwlkmixa]+),\s*$`)
	var out []rule
	for _, l := range strings.Split(string(Text), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		re, err := regexp.Compile("^" + globRE(m[3]) + "$")
		if err != nil {
			t.Fatalf("%s: %v", m[3], err)
		}
		out = append(out, rule{deny: m[1] != "", owner: m[2] != "", re: re, perms: m[4], src: m[3]})
	}
	if len(out) < 10 {
		t.Fatalf("only %d file rules read from the profile", len(out))
	}
	return out
}

func globRE(g string) string {
	var b strings.Builder
	for i := 0; i < len(g); i++ {
		c := g[i]
		switch c {
		case '*':
			j := i
			for j < len(g) && g[j] == '*' {
				j++
			}
			any := "[^/]"
			if j-i > 1 {
				any = "."
			}
			if i > 0 && g[i-1] == '/' && (j == len(g) || g[j] == '/') {
				b.WriteString(any + "+")
			} else {
				b.WriteString(any + "*")
			}
			i = j - 1
		case '?':
			b.WriteString("[^/]")
		case '{':
			b.WriteString("(?:")
		case '}':
			b.WriteString(")")
		case ',':
			b.WriteString("|")
		case '[':
			j := strings.IndexByte(g[i:], ']')
			b.WriteString(g[i : i+j+1])
			i += j
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	return b.String()
}

// The matcher agrees with the parser on the forms the profile uses (the
// /proc/** case as seen on the 7.2 VM: a mkdir of "/proc/" was refused
// under "owner /proc/** w").
func TestGlob(t *testing.T) {
	for _, c := range []struct {
		glob, path string
		want       bool
	}{
		{"/proc/**", "/proc/", false}, {"/proc/**", "/proc/x/y", true},
		{"/proc/{,**}", "/proc/", true}, {"/proc/{,**}", "/proc/x", true},
		{"/proc/*", "/proc/", false}, {"/proc/*", "/proc/x", true}, {"/proc/*", "/proc/x/y", false},
		{"/proc/[0-9]*/{,**}", "/proc/12/", true}, {"/proc/[0-9]*/{,**}", "/proc/self/x", false},
		{"/{[^ps/]*,proc?*}{,/**}", "/etc", true}, {"/{[^ps/]*,proc?*}{,/**}", "/etc/", true},
		{"/{[^ps/]*,proc?*}{,/**}", "/etc/x", true}, {"/{[^ps/]*,proc?*}{,/**}", "/proc/x", false},
		{"/{[^ps/]*,proc?*}{,/**}", "/procx/y", true},
	} {
		re := regexp.MustCompile("^" + globRE(c.glob) + "$")
		if got := re.MatchString(c.path); got != c.want {
			t.Errorf("%s ~ %s: %v, want %v (regexp %s)", c.glob, c.path, got, c.want, re)
		}
	}
}

// allowed decides as AppArmor does for one permission: some allow rule
// grants it (owner rules only to the file's owner) and no deny rule takes
// it away.
func allowed(rules []rule, path string, perm byte, owner bool) bool {
	ok := false
	for _, r := range rules {
		if !r.re.MatchString(path) || !strings.ContainsRune(r.perms, rune(perm)) {
			continue
		}
		if r.deny {
			return false
		}
		if !r.owner || owner {
			ok = true
		}
	}
	return ok
}

// What the profile lets a container do with each path: the decisions
// docs/apparmor.md promises.
func TestProfileDecisions(t *testing.T) {
	rules := fileRules(t)
	type check struct {
		path  string
		perm  byte
		owner bool // the writer owns the file
		want  bool
	}
	checks := []check{
		// The container's own tree, whatever the top-level name.
		{"/", 'r', false, true},
		{"/", 'w', false, true},
		// An inner runc 1.1.15 executes its own binary as the root of a
		// detached bind mount: "/" (seen on the 7.2 VM).
		{"/", 'x', false, true},
		{"/etc/passwd", 'w', false, true},
		{"/usr/bin/dockerd", 'x', false, true},
		{"/var/lib/docker/overlay2/x/merged/etc/hosts", 'w', false, true},
		{"/dev/pts/0", 'w', false, true},
		{"/memfd:runc_cloned:/proc/self/exe", 'x', false, true},
		{"/net:[4026532000]", 'r', false, true},
		{"/p/x", 'w', false, true}, {"/pr/x", 'w', false, true}, {"/pro/x", 'w', false, true},
		{"/proc2/x", 'w', false, true}, {"/s/x", 'w', false, true}, {"/sy/x", 'w', false, true},
		{"/sysroot/x", 'w', false, true}, {"/srv/x", 'w', false, true}, {"/pool/x", 'w', false, true},
		// /proc: read, a task's own entries, owned sysctls.
		{"/proc/", 'r', false, true},
		{"/proc/meminfo", 'r', false, true},
		{"/proc/meminfo", 'w', false, false},
		{"/proc/1/uid_map", 'w', false, true},
		{"/proc/4242/task/4243/comm", 'w', false, true},
		{"/proc/1/attr/apparmor/exec", 'w', false, true}, // the profile change itself is refused: no change_profile
		{"/proc/sys/net/ipv4/ip_forward", 'w', true, true},
		{"/proc/sys/net/core/rmem_max", 'w', false, false},
		{"/proc/sys/kernel/shmmax", 'w', true, true},
		{"/proc/sys/kernel/core_pattern", 'w', false, false},
		{"/proc/sys/kernel/modprobe", 'w', false, false},
		{"/proc/sys/vm/drop_caches", 'w', false, false},
		{"/proc/sysrq-trigger", 'w', true, false},
		{"/proc/sysrq-trigger", 'r', true, false},
		{"/proc/kcore", 'r', true, false},
		{"/proc/irq/1/smp_affinity", 'w', false, false},
		{"/proc/acpi/wakeup", 'w', false, false},
		{"/proc/bus/pci/00/00.0", 'w', false, false},
		// A /proc that is not procfs: an inner engine unpacking an image
		// after its pivot_root creates it and what is in it.
		{"/proc/", 'w', true, true},
		{"/proc/x/y", 'w', true, true},
		{"/sys/", 'w', true, true},
		// /sys: read, owned files.
		{"/sys/class/net/eth0/address", 'r', false, true},
		{"/sys/class/net/eth0/mtu", 'w', true, true},
		{"/sys/fs/cgroup/memory.max", 'w', true, true},
		{"/sys/fs/cgroup/system.slice/dbus.service/memory.pressure", 'w', false, true},
		{"/sys/power/state", 'w', false, false},
		{"/sys/kernel/mm/transparent_hugepage/enabled", 'w', false, false},
		{"/sys/module/apparmor/parameters/enabled", 'r', false, true},
		{"/sys/kernel/security/apparmor/profiles", 'r', true, false},
		{"/sys/kernel/security/", 'r', true, false},
		{"/sys/kernel/security/apparmor/.load", 'w', true, false},
		{"/sys/firmware/dmi/tables/DMI", 'r', true, false},
		{"/sys/firmware/efi/efivars/x", 'w', true, false},
		{"/sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/energy_uj", 'r', true, false},
	}
	// sysvisord's per-container sysctls are files the container's root
	// owns: the profile must let it write every one.
	for _, s := range sysctl.Table {
		checks = append(checks, check{s.Path(), 'w', true, true}, check{s.Path(), 'w', false, false})
	}
	for _, c := range checks {
		if got := allowed(rules, c.path, c.perm, c.owner); got != c.want {
			t.Errorf("%c %s (owner %v): allowed %v, want %v", c.perm, c.path, c.owner, got, c.want)
		}
	}
}
