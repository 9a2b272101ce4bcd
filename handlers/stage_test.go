package handlers

import (
	"fmt"
	"os"
	goruntime "runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
	"github.com/sysvisor/sysvisor/linux/mountinfo"
)

// stageModes are the ways this kernel can stage trees: the staging
// namespace always, in place where it can attach inside detached trees.
func stageModes(t *testing.T) []bool {
	modes := []bool{false}
	if kernel.DetachedMounts.Probe() == nil {
		modes = append(modes, true)
	} else {
		t.Logf("no mounts inside detached trees here: staging namespace only")
	}
	return modes
}

// onStage runs fn on a stage, on a thread of its own as a worker thread
// runs it (locked, fs context unshared), then each of after on that thread;
// the thread is never given back.
func onStage(t *testing.T, native bool, views string, fn func(st *stage) error, after ...func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		if err := unshareFS(); err != nil {
			done <- err
			return
		}
		err := runStage(native, views, fn)
		for _, f := range after {
			if err == nil {
				err = f()
			}
		}
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestStageIsolated: a staged tree is in no namespace but the call's own,
// and the thread is back in the host's afterwards, with nothing left.
func TestStageIsolated(t *testing.T) {
	if unix.Geteuid() != 0 {
		t.Skip("needs root")
	}
	var hostNS, insideNS unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &hostNS); err != nil {
		t.Fatal(err)
	}
	before := mountCount(t)
	onStage(t, false, "", func(st *stage) error {
		if err := unix.Stat("/proc/thread-self/ns/mnt", &insideNS); err == nil {
			t.Error("the stage shows a /proc: it is not the empty staging root")
		}
		// Only /dev/null and this call's trees are there.
		var sb unix.Stat_t
		if err := unix.Stat("/dev/null", &sb); err != nil || sb.Mode&unix.S_IFMT != unix.S_IFCHR {
			t.Errorf("/dev/null on the stage: %v, mode %#o", err, sb.Mode)
		}
		raw, err := newStageTmpfs()
		if err != nil {
			return err
		}
		root, err := st.attach(raw)
		if err != nil {
			return err
		}
		mfd, err := st.detach(root)
		if err != nil {
			return err
		}
		return unix.Close(mfd)
	}, func() error {
		var back unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/mnt", &back); err != nil {
			return fmt.Errorf("after the stage: %w", err)
		}
		if back.Ino != hostNS.Ino || back.Dev != hostNS.Dev {
			t.Errorf("thread left in mount namespace %d, host's is %d", back.Ino, hostNS.Ino)
		}
		return nil
	})
	// No thread of the process stays in the staging namespace: /proc/self
	// (the main thread's namespaces) must stay the host's.
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		var ns unix.Stat_t
		if err := unix.Stat("/proc/self/task/"+task.Name()+"/ns/mnt", &ns); err == nil && ns.Ino != hostNS.Ino {
			t.Errorf("thread %s is in mount namespace %d, not the host's %d", task.Name(), ns.Ino, hostNS.Ino)
		}
	}
	if after := mountCount(t); after != before {
		t.Errorf("host mounts %d before, %d after", before, after)
	}
}

func mountCount(t *testing.T) int {
	t.Helper()
	ms, err := mountinfo.Read("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}
