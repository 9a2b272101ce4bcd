package supervisor

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/registry"
)

// readyTimeout bounds how long a runtime's ready request waits for init's
// registration. runc hands the listener over before `runc create` returns,
// so this only runs out when the handoff failed. A variable for tests.
var readyTimeout = 10 * time.Second

// prepareProcSys sets up the container's /proc/sys while its init waits on
// runc's exec fifo (see handlers.PrepareProcSys). A failure leaves /proc/sys
// as the runtime made it, read-only and the host's values: the container is
// less capable, not less isolated, so it is logged and the create goes on.
func (s *Server) prepareProcSys(c *registry.Container, pid int, log hclog.Logger) {
	p, err := handlers.OpenProcess(pid)
	if err != nil {
		log.Warn("/proc/sys stays read-only", "error", err)
		return
	}
	defer p.Close()
	start := time.Now()
	rep, err := handlers.PrepareProcSys(p, c.Views())
	if err != nil {
		log.Warn("/proc/sys setup incomplete: net, namespaced or per-container sysctls may be read-only", "error", err,
			"net_writable", rep.NetWritable, "namespaced", rep.Namespaced, "emulated", rep.Emulated)
		return
	}
	log.Debug("/proc/sys prepared", "net_writable", rep.NetWritable, "namespaced", rep.Namespaced,
		"pid_helper", rep.PidHelper, "emulated", rep.Emulated, "kernel", rep.Kernel,
		"took", time.Since(start))
}

// ready answers the runtime's ready request once id's init has registered,
// or fails after readyTimeout. The registered state is the persisted status,
// so a ready request to a restarted sysvisord is answered from the record.
func (s *Server) ready(id string) control.Response {
	if err := registry.ValidID(id); err != nil {
		return control.Response{Error: err.Error()}
	}
	c, ok := s.reg.Get(id)
	if !ok {
		return control.Response{Error: fmt.Sprintf("no container %q", id)}
	}
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case <-c.Registered():
		return control.Response{}
	case <-s.ctx.Done():
		return control.Response{Error: "sysvisord is shutting down"}
	case <-t.C:
		return control.Response{Error: fmt.Sprintf("container %s: no seccomp listener from its init after %s (see sysvisord's log)", id, readyTimeout)}
	}
}
