package viewfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSysctlFiles writes the per-container sysctls through the FUSE mount
// as a container's root would, against a fake host /proc/sys.
func TestSysctlFiles(t *testing.T) {
	needFUSE(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("no setpriv")
	}
	fakeHost := t.TempDir()
	for name, v := range map[string]string{"/proc/sys/kernel/panic": "1\n", "/proc/sys/kernel/kptr_restrict": "0\n",
		"/proc/sys/kernel/printk": "4\t4\t1\t7\n", "/sys/module/nf_conntrack/parameters/hashsize": "16384\n"} {
		os.MkdirAll(filepath.Dir(fakeHost+name), 0o755)
		if err := os.WriteFile(fakeHost+name, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Restored after the server stopped (cleanups run last first).
	old := hostRoot
	t.Cleanup(func() { hostRoot = old })
	hostRoot = fakeHost
	c := fakeContainer{sysctls: &fakeSysctls{m: map[string]string{}}}
	runDir := t.TempDir()
	// Searchable by the fake container's root (uid 100000), as a real run
	// directory is (0711).
	for _, d := range []string{filepath.Dir(runDir), runDir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	s := start(t, runDir)
	dir := add(t, s, "c1", 1, c)
	file := func(name string) string {
		if strings.HasPrefix(name, "module/") {
			return filepath.Join(dir, "sys", name)
		}
		return filepath.Join(dir, SysctlDir, name)
	}
	read := func(name string) string {
		b, err := os.ReadFile(file(name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// write writes value with one write(2) from a dd run as host root (or
	// with setpriv's changes), as a container process would; it returns
	// dd's complaint, if any.
	write := func(name, value string, setpriv ...string) string {
		args := append(setpriv, "dd", "of="+file(name), "status=none")
		if len(setpriv) > 0 {
			args = append([]string{"setpriv"}, args...)
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin = strings.NewReader(value)
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	// Only the emulated sysctls the "host" has are served.
	if _, err := os.Stat(file("fs/file-max")); !os.IsNotExist(err) {
		t.Errorf("fs/file-max served though the host has none: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(file("kernel/panic"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 100000 || st.Gid != 100000 || st.Mode != unix.S_IFREG|0o644 {
		t.Errorf("kernel/panic: uid %d gid %d mode %#o, want the container's root and 0644", st.Uid, st.Gid, st.Mode)
	}
	if got := read("kernel/panic"); got != "1\n" {
		t.Errorf("before any write: %q, want the host's", got)
	}
	if e := write("kernel/panic", "7\n"); e != "" {
		t.Errorf("write 7: %s", e)
	}
	if got := read("kernel/panic"); got != "7\n" {
		t.Errorf("after writing 7: %q", got)
	}
	if v, _ := c.Sysctl("kernel/panic"); v != "7" {
		t.Errorf("recorded %q", v)
	}
	if b, _ := os.ReadFile(fakeHost + "/proc/sys/kernel/panic"); string(b) != "1\n" {
		t.Errorf("host file changed: %q", b)
	}
	for _, bad := range []string{"abc", "7x", "99999999999", " \n", "000000000000000000000001"} {
		if e := write("kernel/panic", bad); !strings.Contains(e, "Invalid argument") {
			t.Errorf("write %q: %q, want EINVAL", bad, e)
		}
	}
	if e := write("kernel/kptr_restrict", "3"); !strings.Contains(e, "Invalid argument") {
		t.Errorf("kptr_restrict 3 (max 2): %q", e)
	}
	if got := read("kernel/panic"); got != "7\n" {
		t.Errorf("after bad writes: %q", got)
	}
	// A vector: one value sets the first only.
	if e := write("kernel/printk", "3"); e != "" {
		t.Errorf("printk: %s", e)
	}
	if got := read("kernel/printk"); got != "3\t4\t1\t7\n" {
		t.Errorf("printk %q", got)
	}
	// Other users: the kernel refuses the open (mode 0644, owner root).
	if e := write("kernel/panic", "3", "--reuid=1234", "--regid=1234", "--clear-groups"); !strings.Contains(e, "Permission denied") {
		t.Errorf("write by another user: %q, want EACCES", e)
	}
	// kptr_restrict needs CAP_SYS_ADMIN, as the kernel's handler asks.
	if e := write("kernel/kptr_restrict", "1", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"); !strings.Contains(e, "Operation not permitted") {
		t.Errorf("kptr_restrict without CAP_SYS_ADMIN: %q, want EPERM", e)
	}
	if e := write("kernel/kptr_restrict", "1"); e != "" {
		t.Errorf("kptr_restrict with CAP_SYS_ADMIN: %s", e)
	}
	// The container's root (uid 100000 here) with CAP_SYS_ADMIN in the
	// container's user namespace (the fake's init is this test): allowed.
	// The same uid with every capability of a user namespace of its own:
	// not in the container's namespace, refused.
	asRoot := []string{"--reuid=100000", "--regid=100000", "--clear-groups"}
	if e := write("kernel/kptr_restrict", "2", append(asRoot, "--inh-caps=+sys_admin", "--ambient-caps=+sys_admin")...); e != "" {
		t.Errorf("kptr_restrict by the container's root: %s", e)
	}
	if e := write("kernel/kptr_restrict", "0", append(asRoot, "unshare", "-U")...); !strings.Contains(e, "Operation not permitted") {
		t.Errorf("kptr_restrict from a nested user namespace: %q, want EPERM", e)
	}
	if got := read("kernel/kptr_restrict"); got != "2\n" {
		t.Errorf("kptr_restrict %q, want 2", got)
	}
	write("kernel/kptr_restrict", "1")
	if got := read("kernel/panic") + read("kernel/kptr_restrict"); got != "7\n1\n" {
		t.Errorf("values %q", got)
	}
	// A module parameter: root's only (0600), kstrtouint's syntax.
	hs := "module/nf_conntrack/parameters/hashsize"
	if err := unix.Stat(file(hs), &st); err != nil || st.Mode != unix.S_IFREG|0o600 {
		t.Errorf("hashsize mode %#o (%v), want 0600", st.Mode, err)
	}
	if e := write(hs, "65536\n"); e != "" {
		t.Errorf("hashsize: %s", e)
	}
	if e := write(hs, "4294967296"); !strings.Contains(e, "Numerical result out of range") {
		t.Errorf("hashsize overflow: %q, want ERANGE", e)
	}
	if got := read(hs); got != "65536\n" {
		t.Errorf("hashsize %q", got)
	}
}
