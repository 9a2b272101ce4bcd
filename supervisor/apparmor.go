package supervisor

import (
	"context"

	"github.com/sysvisor/sysvisor/apparmor"
	"github.com/sysvisor/sysvisor/supervisor/registry"
)

// loadAppArmor loads sysvisor's AppArmor profile at start when the kernel
// enforces AppArmor and does not have it (`make install` loads it, the
// apparmor service loads it at boot; a reload of the service's policy, or an
// `apparmor_parser -R`, may have dropped it since). A failure is logged, not
// fatal: sysvisor-runc tries again at each create and fails that create,
// naming the profile, if it still cannot, so no container runs unconfined
// in its place.
func (s *Server) loadAppArmor(ctx context.Context) {
	if !apparmor.Enabled() {
		return
	}
	loaded, src, err := apparmor.Ensure(ctx)
	switch {
	case err != nil:
		s.log.Warn("AppArmor profile not loaded: creates will try again and fail if they cannot", "profile", apparmor.Profile, "source", src, "error", err)
	case loaded:
		s.log.Info("AppArmor profile loaded", "profile", apparmor.Profile, "source", src)
	}
}

// appArmorLabel is the AppArmor label the container's init runs under, as
// the kernel says ("sysvisor-default (enforce)", "unconfined"); empty when
// init is not running or the kernel has no AppArmor. The pid is checked
// against init's recorded start time, so a reused pid is never reported.
func appArmorLabel(rec registry.Record) string {
	if rec.Status != registry.StatusRunning || rec.InitPid <= 0 || !apparmor.Enabled() {
		return ""
	}
	label, err := apparmor.Current(rec.InitPid)
	if err != nil {
		return ""
	}
	if !initAlive(rec) {
		return ""
	}
	return label
}
