package handlers

import (
	"os"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestProcfsFromPidNSHelper creates a procfs for another pid namespace the
// way the mount emulation does where procfs has no pidns= option: from a
// helper born there. The procfs must be that namespace's (its pid 1 is the
// namespace's init), carry the options given, and leave no process behind.
func TestProcfsFromPidNSHelper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	init := exec.Command("sleep", "60")
	init.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := init.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { init.Process.Kill(); init.Wait() }()
	nsfd, err := unix.Open("/proc/"+strconv.Itoa(init.Process.Pid)+"/ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(nsfd)

	for _, tc := range []struct {
		name string
		opts []string
		want func(t *testing.T, mfd int)
	}{
		{"plain", nil, func(t *testing.T, mfd int) {
			if got := readAt(t, mfd, "1/comm"); got != "sleep\n" {
				t.Errorf("pid 1 of the new procfs is %q, want the namespace's init", got)
			}
			// This test's own process is outside that namespace.
			if _, err := unix.Readlinkat(mfd, "self", make([]byte, 64)); err == nil {
				t.Error("self resolves in the namespace's procfs: it is sysvisord's")
			}
		}},
		{"subset=pid", []string{"subset=pid"}, func(t *testing.T, mfd int) {
			if _, err := unix.Openat(mfd, "sys", unix.O_PATH|unix.O_CLOEXEC, 0); err != unix.ENOENT {
				t.Errorf("subset=pid still shows sys: %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mfd, err := procfsFromHelper(nsfd, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(mfd)
			var st unix.Statfs_t
			if err := unix.Fstatfs(mfd, &st); err != nil || st.Type != unix.PROC_SUPER_MAGIC {
				t.Fatalf("not a procfs: %v %#x", err, st.Type)
			}
			tc.want(t, mfd)
		})
	}
	// An option procfs refuses is EINVAL, as mount(2) would answer.
	if _, err := procfsFromHelper(nsfd, []string{"nonsense=1"}); err == nil || !strings.Contains(err.Error(), "invalid argument") {
		t.Errorf("bad option: %v, want EINVAL", err)
	}
	if _, err := newFSInPidNS("proc", make([]string, maxFSOptions+1), 0); err != unix.EINVAL {
		t.Errorf("too many options: %v, want EINVAL", err)
	}
}

// procfsFromHelper runs newFSInPidNS on a thread that has joined nsfd for
// its children, as a worker thread does (joinPID), and puts the thread back.
func procfsFromHelper(nsfd int, opts []string) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		defer goruntime.UnlockOSThread()
		own, err := unix.Open("/proc/thread-self/ns/pid_for_children", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{-1, err}
			return
		}
		defer unix.Close(own)
		if err := unix.Setns(nsfd, unix.CLONE_NEWPID); err != nil {
			ch <- result{-1, err}
			return
		}
		fd, err := newFSInPidNS("proc", opts, 0)
		if err := unix.Setns(own, unix.CLONE_NEWPID); err != nil {
			panic(err) // a thread left in another pid namespace must not run on
		}
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

func readAt(t *testing.T, dir int, rel string) string {
	t.Helper()
	fd, err := unix.Openat(dir, rel, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", rel, err)
	}
	defer unix.Close(fd)
	b := make([]byte, 256)
	n, _ := unix.Read(fd, b)
	return string(b[:max(n, 0)])
}
