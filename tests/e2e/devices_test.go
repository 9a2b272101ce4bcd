package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMknodAllowlist: a container's root creates the allowlisted character
// devices (the host's node bound over an empty file), nothing else; FIFOs
// and whiteouts go to the kernel; the final component is never followed;
// a non-root user gets EPERM as from the kernel. (Not in /tmp: in a sticky
// world-writable directory the kernel refuses O_CREAT opens of a device
// whose owner is neither the directory's nor the opener's, and the node
// is the host's, owned by an unmapped root.)
func TestMknodAllowlist(t *testing.T) {
	watchHost(t)
	id := startDetached(t, "sysvisor-runc")
	out := sh(t, id, `
		mkdir -p /d
		try() { label=$1; shift; if err=$("$@" 2>&1); then echo "$label ok"; else echo "$label $(echo "$err" | sed 's/.*: //; s/ /_/g')"; fi; }
		try null mknod /d/null c 1 3
		echo "null-type $(stat -c %F:%t:%T /d/null | tr ' ' _)"
		try null-write sh -c 'echo data >/d/null'
		echo "null-reads $(wc -c </d/null)"
		try urandom mknod -m 600 /d/urandom c 1 9
		echo "urandom-bytes $(head -c 16 /d/urandom | wc -c)"
		try tun mknod /d/tun c 10 200
		try again mknod /d/null c 1 3
		try disk mknod /d/sda b 8 0
		try console mknod /d/console c 5 1
		try mem mknod /d/mem c 1 1
		try fifo mknod /d/fifo p
		echo "fifo-type $(stat -c %F /d/fifo | tr ' ' _)"
		mkdir -p /mnt/t && mount -t tmpfs x /mnt/t
		try whiteout mknod /mnt/t/w c 0 0
		ln -s /tmp/target /tmp/dangling
		try dangling mknod /tmp/dangling c 1 3
		echo "dangling-target $(test -e /tmp/target && echo created || echo absent)"
		ln -s / /tmp/rootlink
		try via-link mknod /tmp/rootlink/tmp/vialink c 1 5
		echo "via-link-type $(stat -c %t:%T /tmp/vialink)"
		try readonly mknod /proc/sys/kernel/zz c 1 3
		chmod 1777 /tmp
		try nobody su nobody -s /bin/sh -c 'mknod /tmp/nobody c 1 3'
	`)
	r := results(t, out)
	for label, want := range map[string]string{
		"null": "ok", "null-type": "character_special_file:1:3", "null-write": "ok", "null-reads": "0",
		"urandom": "ok", "urandom-bytes": "16", "tun": "ok", "again": "File_exists",
		"disk": "Operation_not_permitted", "console": "Operation_not_permitted", "mem": "Operation_not_permitted",
		"fifo": "ok", "fifo-type": "fifo", "whiteout": "ok",
		"dangling": "File_exists", "dangling-target": "absent",
		"via-link": "ok", "via-link-type": "1:5",
		"nobody": "Operation_not_permitted",
	} {
		expect(t, r, label, want)
	}
	if got := r["readonly"]; got == "ok" || got == "" {
		t.Errorf("mknod on read-only /proc/sys: %q", got)
	}
	// What the container sees is the host's node, as its own /dev/null
	// (runc binds it the same way in a user namespace).
	if got, want := sh(t, id, "stat -c %u:%g:%a /d/null"), sh(t, id, "stat -c %u:%g:%a /dev/null"); strings.TrimSpace(got) != strings.TrimSpace(want) {
		t.Errorf("created node %s, /dev/null %s", got, want)
	}
}

// TestNestedListenerRefused: a filter with its own notify listener is
// refused (EBUSY) and logged by sysvisord; a plain filter is the kernel's.
func TestNestedListenerRefused(t *testing.T) {
	r := results(t, mustDocker(t, sv("sh", "-c", "echo listener $(seccomplisten listener); echo plain $(seccomplisten plain)")...))
	expect(t, r, "listener", "EBUSY")
	expect(t, r, "plain", "ok")
	log, err := os.ReadFile(filepath.Join(svDir, "log", "sysvisord.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "refused a seccomp filter with its own notify listener") {
		t.Error("sysvisord did not log the refusal")
	}
}
