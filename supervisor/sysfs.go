package supervisor

import (
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/supervisor/registry"
)

// prepareSysfs gives the container a product_uuid where the host has no
// DMI (see handlers.PrepareSysfs), while its init waits on runc's exec fifo.
// A failure leaves /sys as the runtime made it, without product_uuid: the
// container misses one identity file, nothing is exposed, so it is logged
// and the create goes on.
func (s *Server) prepareSysfs(c *registry.Container, pid int, log hclog.Logger) {
	if c.Views() == "" {
		return
	}
	p, err := handlers.OpenProcess(pid)
	if err != nil {
		log.Warn("no product_uuid in /sys", "error", err)
		return
	}
	defer p.Close()
	start := time.Now()
	sys, err := handlers.ReadSysfsState(pid)
	if err != nil {
		log.Warn("no product_uuid in /sys: init's mounts", "error", err)
		return
	}
	rep, err := handlers.PrepareSysfs(p, c.Views(), sys, c.MaskedPaths(), c.ReadonlyPaths())
	if err != nil {
		log.Warn("product_uuid setup incomplete in /sys", "error", err, "shadowed", rep.Shadowed)
		return
	}
	if len(rep.Shadowed) > 0 {
		log.Debug("/sys shadowed for product_uuid", "dirs", rep.Shadowed, "mounts", rep.Mounts, "took", time.Since(start))
	}
}
