package handlers

import (
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCoverSet(t *testing.T) {
	f := func(rel string, own bool) sysctlEntry { return sysctlEntry{rel: rel, own: own} }
	d := func(rel string, own bool) sysctlEntry { return sysctlEntry{rel: rel, own: own, dir: true} }
	for _, tc := range []struct {
		name    string
		entries []sysctlEntry
		want    []string
	}{
		{"nothing owned", []sysctlEntry{d("kernel", false), f("kernel/panic", false)}, nil},
		{
			// This kernel's IPC namespace: fs/mqueue whole, kernel/ file by file.
			"mqueue whole, kernel per file",
			[]sysctlEntry{
				d("fs", false), f("fs/file-max", false),
				d("fs/mqueue", true), f("fs/mqueue/msg_max", true), f("fs/mqueue/queues_max", true),
				d("kernel", false), f("kernel/panic", false), f("kernel/shmmax", true), f("kernel/sem", true),
			},
			[]string{"fs/mqueue", "kernel/sem", "kernel/shmmax"},
		},
		{
			"an owned directory with a host file is not bound whole",
			[]sysctlEntry{d("a", true), f("a/x", true), f("a/y", false)},
			[]string{"a/x"},
		},
		{
			"a directory owned by host root is not bound whole",
			[]sysctlEntry{d("a", false), f("a/x", true), f("a/y", true)},
			[]string{"a/x", "a/y"},
		},
		{"an empty owned directory is not bound", []sysctlEntry{d("a", true)}, nil},
		{
			"nested: the top whole directory only",
			[]sysctlEntry{d("a", true), d("a/b", true), f("a/b/x", true), f("a/y", true)},
			[]string{"a"},
		},
		{
			"a host file deep down keeps the parents per file",
			[]sysctlEntry{d("a", true), f("a/x", true), d("a/b", true), f("a/b/y", false), d("a/c", true), f("a/c/z", true)},
			[]string{"a/c", "a/x"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := coverSet(tc.entries); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("coverSet = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestIDRanges(t *testing.T) {
	r, err := parseIDMap([]byte("         0     100000      65536\n 65536 300000 10\n"))
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[uint32]bool{0: false, 99999: false, 100000: true, 165535: true, 165536: false, 300009: true, 300010: false} {
		if got := r.contains(id); got != want {
			t.Errorf("contains(%d) = %v, want %v", id, got, want)
		}
	}
	// Host root is never the container's, even where a map includes it.
	if r, _ := parseIDMap([]byte("0 0 4294967295\n")); r.contains(0) {
		t.Error("host root counted as the container's")
	}
	for _, bad := range []string{"0 1", "a 1 2", "0 1 x"} {
		if _, err := parseIDMap([]byte(bad)); err == nil {
			t.Errorf("parseIDMap(%q) accepted", bad)
		}
	}
}

// On the real kernel: a thread that joined another IPC namespace finds that
// namespace's sysctls by their owner, and the helper born in another pid
// namespace returns that namespace's pid_max. Nothing is mounted: the
// "container" here shares the host's mount namespace.
func TestNamespacedLookupRealKernel(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root (and not -short)")
	}
	const base = 3_000_000_000 // far from any real lease
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: 65536}},
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	p, err := OpenProcess(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ids, err := callerIDs(p)
	if err != nil {
		t.Fatal(err)
	}
	var cover []string
	var pidOwner uint32
	var walkTook, helperTook time.Duration
	const rounds = 20
	err = inCallerFS(p, joinIPC|joinPID, nil, func(fs *callerFS) error {
		sys, err := fs.open("/proc/sys", unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(sys)
		start := time.Now()
		entries, err := walkSysctls(sys, ids)
		if err != nil {
			return err
		}
		walkTook = time.Since(start)
		cover = coverSet(entries)
		start = time.Now()
		for i := 0; i < rounds; i++ {
			fd, err := openInPidNS(sys, "kernel/pid_max")
			if err != nil {
				return err
			}
			var st unix.Stat_t
			err = unix.Fstat(fd, &st)
			unix.Close(fd)
			if err != nil {
				return err
			}
			pidOwner = st.Uid
		}
		helperTook = time.Since(start) / rounds
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("walk %v, helper %v per lookup, cover %q", walkTook, helperTook, cover)
	for _, want := range []string{"fs/mqueue", "kernel/shmmax", "kernel/sem", "kernel/msgmni"} {
		if !slices.Contains(cover, want) {
			t.Errorf("cover set %q lacks %s", cover, want)
		}
	}
	for _, c := range cover {
		if strings.HasPrefix(c, "fs/mqueue/") || c == "kernel/pid_max" || strings.HasPrefix(c, "net") {
			t.Errorf("cover set has %s", c)
		}
	}
	// Linux 6.14 made pid_max per pid namespace.
	var u unix.Utsname
	unix.Uname(&u)
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	if perNS := major > 6 || major == 6 && minor >= 14; perNS && pidOwner != base {
		t.Errorf("helper's pid_max owned by %d, want the namespace's root %d", pidOwner, base)
	} else if !perNS && pidOwner != 0 {
		t.Errorf("helper's pid_max owned by %d on %d.%d, want host root", pidOwner, major, minor)
	}
	// From sysvisord's own pid namespace the file is the host's.
	var st unix.Stat_t
	if err := unix.Stat("/proc/sys/kernel/pid_max", &st); err != nil || st.Uid != 0 {
		t.Errorf("host's pid_max: uid %d, %v", st.Uid, err)
	}
}
