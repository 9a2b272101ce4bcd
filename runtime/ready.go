package runtime

import (
	"fmt"
	"strings"
	"time"

	"github.com/sysvisor/sysvisor/supervisor/control"
)

// readyTimeout bounds the wait for sysvisord to finish the container's
// setup; sysvisord itself gives up after 10 s.
const readyTimeout = 15 * time.Second

// awaitReady waits, after runc create succeeded, until sysvisord has
// registered the container's init and made the mounts runc cannot make
// (inside /proc: /proc/sys/net read-write, per-container sysctls). Without
// this wait `runc start` could run the container's process before them.
//
// A sysvisord that does not know the request (older) is not waited for. A
// container whose init never registered would run with every trapped
// syscall failing with ENOSYS: its create fails, and runc's container is
// deleted so that nothing is left half made.
func (r *runner) awaitReady() error {
	_, err := control.Call(r.runDir, control.Request{Op: control.OpReady, ID: r.inv.ID}, readyTimeout)
	if err != nil && strings.Contains(err.Error(), fmt.Sprintf("unknown op %q", control.OpReady)) {
		r.log.Warnf("container %s: sysvisord does not support %q; not waiting for its setup", r.inv.ID, control.OpReady)
		return nil
	}
	if err == nil {
		return nil
	}
	r.deleteHalfMade()
	return fmt.Errorf("setup by sysvisord: %w", err)
}
