package handlers

import (
	goruntime "runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
	"github.com/sysvisor/sysvisor/supervisor/mountinfo"
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
// runs it (locked, fs context unshared); the thread is never given back.
func onStage(t *testing.T, native bool, views string, fn func(st *stage) error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		if err := unshareFS(); err != nil {
			done <- err
			return
		}
		done <- runStage(native, views, fn)
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
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		if err := unshareFS(); err != nil {
			done <- err
			return
		}
		err := runStage(false, "", func(st *stage) error {
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
		})
		var back unix.Stat_t
		if err == nil {
			err = unix.Stat("/proc/thread-self/ns/mnt", &back)
		}
		if err == nil && (back.Ino != hostNS.Ino || back.Dev != hostNS.Dev) {
			t.Errorf("thread left in mount namespace %d, host's is %d", back.Ino, hostNS.Ino)
		}
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
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
