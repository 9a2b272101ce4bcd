package mountinfo

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A tmpfs made in a private mount namespace on a thread of its own: alive
// while mounted, still alive while only an fd holds that namespace (no
// process is in it), dead once the last mount of it is gone.
func TestSuperblockAlive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount)")
	}
	var st unix.Stat_t
	if err := unix.Stat("/", &st); err != nil {
		t.Fatal(err)
	}
	if !SuperblockAlive(unix.Major(st.Dev), unix.Minor(st.Dev)) {
		t.Fatalf("the root filesystem's superblock (%d:%d) reads as dead", unix.Major(st.Dev), unix.Minor(st.Dev))
	}

	type made struct {
		maj, min  uint32
		dir       string
		nsfd      int
		unmounted bool
		err       error
	}
	mk := func(unmount bool) made {
		ch := make(chan made)
		go func() {
			// Never unlocked: the thread, in its own namespace, ends
			// with the goroutine.
			runtime.LockOSThread()
			var m made
			// Back to the test's namespace before the goroutine ends:
			// the runtime may not end the thread (the main thread is
			// kept), and one left in the private namespace would keep
			// its tmpfs alive.
			home, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				m.err = err
				ch <- m
				return
			}
			defer func() {
				if err := unix.Setns(home, unix.CLONE_NEWNS); err != nil && m.err == nil {
					m.err = err
				}
				unix.Close(home)
				ch <- m
			}()
			if m.err = unix.Unshare(unix.CLONE_NEWNS | unix.CLONE_FS); m.err != nil {
				return
			}
			if m.err = unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); m.err != nil {
				return
			}
			dir, err := os.MkdirTemp("", "sbalive")
			if m.err = err; err != nil {
				return
			}
			// Removed by the test: a mountpoint in the namespace while
			// the thread lives.
			m.dir = dir
			if m.err = unix.Mount("sbalive", dir, "tmpfs", 0, "size=64k"); m.err != nil {
				return
			}
			var st unix.Stat_t
			if m.err = unix.Stat(dir, &st); m.err != nil {
				return
			}
			m.maj, m.min = unix.Major(st.Dev), unix.Minor(st.Dev)
			if !SuperblockAlive(m.maj, m.min) {
				m.err = errAliveWhileMounted
				return
			}
			if unmount {
				m.err, m.unmounted = unix.Unmount(dir, 0), true
				return
			}
			m.nsfd, m.err = unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		}()
		m := <-ch
		if m.dir != "" {
			t.Cleanup(func() { os.Remove(m.dir) })
		}
		return m
	}

	// The kernel hands a freed device number out again at once: a mount
	// elsewhere on the host (tests of other packages run meanwhile) can
	// take it between the unmount and the look. So a few tries; a
	// SuperblockAlive that never says dead fails them all.
	var alive []string
	for try := 0; try < 5; try++ {
		gone := mk(true)
		if gone.err != nil {
			t.Fatal(gone.err)
		}
		if !SuperblockAlive(gone.maj, gone.min) {
			alive = nil
			break
		}
		alive = append(alive, fmt.Sprintf("%d:%d", gone.maj, gone.min))
	}
	if alive != nil {
		t.Errorf("an unmounted tmpfs reads as alive, %d times out of %d (%s)", len(alive), len(alive), strings.Join(alive, " "))
	}

	held := mk(false)
	if held.err != nil {
		t.Fatal(held.err)
	}
	if !SuperblockAlive(held.maj, held.min) {
		t.Errorf("a tmpfs (%d:%d) in a namespace an fd holds reads as dead", held.maj, held.min)
	}
	unix.Close(held.nsfd)
	dead := false
	for deadline := time.Now().Add(10 * time.Second); !dead && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		dead = !SuperblockAlive(held.maj, held.min)
	}
	if !dead {
		t.Errorf("a tmpfs (%d:%d) whose namespace's last fd was closed still reads as alive", held.maj, held.min)
	}
}

type aliveErr string

func (e aliveErr) Error() string { return string(e) }

const errAliveWhileMounted = aliveErr("a mounted tmpfs reads as dead")
