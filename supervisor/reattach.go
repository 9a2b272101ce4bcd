package supervisor

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/holder"
	"github.com/sysvisor/sysvisor/linux/notify"
	"github.com/sysvisor/sysvisor/supervisor/notifyloop"
	"github.com/sysvisor/sysvisor/supervisor/registry"
)

// startHolder connects to the holder (starting one if needed) and maps the
// seccomp journal, the one it held or a new one. It returns the other held
// fds by name, for the views and reattach. Without a holder sysvisord
// serves as before: a restart then breaks the running containers.
func (s *Server) startHolder() map[string]int {
	if s.cfg.NoHolder {
		return nil
	}
	bin := s.cfg.HolderBinary
	if bin == "" {
		bin = holderBinary()
	}
	link, held, err := dialHolder(s.cfg.RunDir, bin, s.log.Named("holder"))
	if err != nil {
		s.log.Error("no holder: running containers will not survive a restart of sysvisord", "error", err)
		return nil
	}
	s.link = link
	if fd, ok := held[holder.SeccompJournal]; ok {
		delete(held, holder.SeccompJournal)
		if s.journal, err = holder.OpenJournal(fd); err != nil {
			// Listeners still re-attach; only what was in flight at
			// the previous end is not answered again.
			s.log.Error("held seccomp journal unusable; starting a new one", "error", err)
		}
	}
	if s.journal == nil {
		if s.journal, err = holder.CreateJournal(); err != nil {
			s.log.Error("no seccomp journal: running containers will not survive a restart of sysvisord", "error", err)
			link.close()
			s.link = nil
			closeHeld(held)
			return nil
		}
	}
	link.put(holder.SeccompJournal, rawDeposit(s.journal.Fd()))
	return held
}

// reattach serves again the listeners the holder kept: each one's
// container record must exist and the fd must be a seccomp listener. What
// cannot be matched is dropped from the holder. It takes the fds.
func (s *Server) reattach(held map[string]int) (attached, lost int) {
	for name, fd := range held {
		if !strings.HasPrefix(name, holder.PrefixSeccomp) {
			continue
		}
		delete(held, name)
		if !s.reattachOne(name, fd) {
			s.dropHeld(name)
			lost++
			continue
		}
		attached++
	}
	// Containers running with none of their listeners back: the holder
	// did not keep them (it was killed along with the previous sysvisord,
	// or none ran). Nothing brings them back.
	for _, c := range s.reg.List() {
		rec := c.Snapshot()
		if rec.Status != registry.StatusRunning || c.Listeners.Load() > 0 || rec.InitPid == 0 {
			continue
		}
		if initAlive(rec) {
			s.log.Error("container runs but its seccomp listeners were lost (no holder kept them): its trapped syscalls fail with ENOSYS until it is recreated",
				"container", rec.ID, "init_pid", rec.InitPid)
			lost++
		}
	}
	// The views take theirs first; anything left is unknown to this
	// version.
	for name, fd := range held {
		unix.Close(fd)
		if strings.HasPrefix(name, "views/") {
			// Views disabled (--no-views) or not adoptable: the holder
			// keeps them for a sysvisord that serves them.
			continue
		}
		s.log.Warn("holder kept an fd this sysvisord does not know; dropped", "name", name)
		s.dropHeld(name)
	}
	return attached, lost
}

// reattachOne takes fd, whatever it returns.
func (s *Server) reattachOne(name string, fd int) bool {
	fail := func() bool { unix.Close(fd); return false }
	slot, id, init, err := holder.ParseListenerName(name)
	if err != nil {
		s.log.Error("held listener", "error", err)
		return fail()
	}
	log := s.log.With("container", id)
	if kind, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err != nil || kind != "anon_inode:seccomp notify" {
		log.Error("held fd is not a seccomp listener; dropped", "name", name, "kind", kind)
		return fail()
	}
	c, ok := s.reg.Get(id)
	if !ok {
		log.Info("held listener of a container without a record (deleted while sysvisord was down); dropped")
		return fail()
	}
	if init && c.Snapshot().InitPid == 0 {
		// The previous sysvisord died while registering init (before
		// its mounts were recorded as protected): the runtime's create
		// waited for that and failed, and deletes the container.
		log.Warn("held init listener of a container whose registration did not finish; dropped")
		return fail()
	}
	acts, err := notifyloop.NewActions(s.table, c.Snapshot().Rules)
	if err != nil {
		log.Error("held listener: container's policy", "error", err)
		return fail()
	}
	s.mu.Lock()
	taken := s.slots[slot]
	s.mu.Unlock()
	if taken || s.journal == nil {
		log.Error("held listener's journal slot is taken; dropped", "slot", slot)
		return fail()
	}
	nfd, err := notify.NewFd(fd, "seccomp:"+id)
	if err != nil {
		log.Error("held listener", "error", err)
		return false // NewFd closed it
	}
	if init && c.Snapshot().Status != registry.StatusRunning {
		s.reg.Update(id, func(r *registry.Record) { r.Status = registry.StatusRunning })
	}
	return s.attach(c, nfd, acts, init, slot, true, log)
}

func closeHeld(held map[string]int) {
	for _, fd := range held {
		unix.Close(fd)
	}
}
