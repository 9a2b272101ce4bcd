// Package supervisor is sysvisord: it leases ID ranges to the runtime,
// receives each container process's seccomp listener, and answers trapped
// syscalls through the handlers table.
package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/holder"
	"github.com/sysvisor/sysvisor/kernel"
	"github.com/sysvisor/sysvisor/linux/cgroup"
	"github.com/sysvisor/sysvisor/linux/mountinfo"
	"github.com/sysvisor/sysvisor/linux/notify"
	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/enginefs"
	"github.com/sysvisor/sysvisor/supervisor/handoff"
	"github.com/sysvisor/sysvisor/supervisor/lease"
	"github.com/sysvisor/sysvisor/supervisor/notifyloop"
	"github.com/sysvisor/sysvisor/supervisor/procview"
	"github.com/sysvisor/sysvisor/supervisor/registry"
	"github.com/sysvisor/sysvisor/supervisor/stats"
	"github.com/sysvisor/sysvisor/supervisor/trace"
	"github.com/sysvisor/sysvisor/supervisor/viewfs"
)

// Version is set at build time.
var Version = "dev"

// Config is sysvisord's configuration.
type Config struct {
	RunDir   string
	StateDir string
	SubUID   string
	SubGID   string
	Log      hclog.Logger
	// NoSyncWakeUp disables SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (for benchmarks).
	NoSyncWakeUp bool
	// NotifyThreads is how many OS threads wait for and answer the
	// notifications of every container (0: one per CPU).
	NotifyThreads int
	// NoViews disables the FUSE /proc and /sys views.
	NoViews bool
	// PolicyDir holds the operators' policy files (default policy.Dir("")).
	PolicyDir string
	// MetricsAddr, when set, serves Prometheus metrics there
	// (host:port, see metrics.Addr).
	MetricsAddr string
	// NoHolder serves without a holder: a restart of sysvisord then
	// breaks every running container (benchmarks, tests of that).
	NoHolder bool
	// HolderBinary is the sysvisor-holder started when none runs
	// (default: next to sysvisord's binary).
	HolderBinary string
	// IDRegistry is the host-wide registry of every sysvisord's leases
	// (default lease.DefaultRegistryDir); only tests of two hosts' worth
	// of instances on one machine set another.
	IDRegistry string
	// LockWait is how long New waits for another sysvisord to release
	// the state directory (one killed a moment ago is still exiting).
	LockWait time.Duration
}

// Server is a running supervisor.
type Server struct {
	cfg    Config
	log    hclog.Logger
	leases *lease.Store
	reg    *registry.Registry
	table  *handlers.Table
	mounts cgroup.Mounts
	views  *viewfs.Server // nil: no views served
	// viewSlots numbers the containers on the views mount; under mu.
	viewSlots *viewSlots
	// engine serves the containers' overlays at the engine's rootfs
	// paths; nil when it could not be mounted (engineErr says why).
	// Set before the control socket is served and unmounted after it.
	engine    *enginefs.Server
	engineErr error
	// engineMu orders engine-view requests with deletes, so that no
	// tree is served again for a container deleted meanwhile. Control
	// path only.
	engineMu sync.Mutex
	// policies are the active policies a create can name; they change
	// only on ReloadPolicies.
	policies *policy.Store
	// stats and trace are fed by every listener's observer.
	stats       *stats.Set
	trace       trace.Hub
	metricsAddr atomic.Pointer[string]

	// link is the holder keeping copies of the listener and views fds,
	// nil without one; journal is where each listener receives its
	// notifications, nil without a holder.
	link    *holdLink
	journal *holder.Journal
	// reattached and lost count the held listeners at start.
	reattached, lost atomic.Int64
	// forgotten counts containers forgotten since memory was last given
	// back to the system (see returnMemory); seen is its value at the
	// previous tick.
	forgotten atomic.Int64
	seen      int64
	// trim gives back the threads a burst of work left idle.
	trim threadTrimmer
	// notify serves every listener; made by Run.
	notify *notify.Pool
	// podMu orders a pod member's create (the sandbox's lease given, the
	// record added) against the release of a pod's lease in forget.
	podMu sync.Mutex

	mu        sync.Mutex
	listeners map[string]map[*notify.Fd]string // container id -> live listener fds -> held name
	slots     map[int]bool                     // journal slots in use
	nextSlot  int
	wg        sync.WaitGroup
	ctx       context.Context
	lock      *os.File // flock on the state dir, held until Run returns
}

// New prepares state (subordinate-ID pool, leases, records) without serving.
func New(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.RunDir == "" {
		cfg.RunDir = control.DefaultRunDir
	}
	if cfg.StateDir == "" {
		cfg.StateDir = "/var/lib/sysvisor"
	}
	if cfg.SubUID == "" {
		cfg.SubUID = "/etc/subuid"
	}
	if cfg.SubGID == "" {
		cfg.SubGID = "/etc/subgid"
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", cfg.StateDir, err)
	}
	// One supervisor per state directory: two would keep separate lease
	// maps over one pool and hand out overlapping ranges.
	lockPath := filepath.Join(cfg.StateDir, "sysvisord.lock")
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", lockPath, err)
	}
	// A predecessor killed a moment ago may still be exiting: wait for it
	// a little rather than fail the restart.
	for deadline := time.Now().Add(cfg.LockWait); ; {
		err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			lock.Close()
			return nil, fmt.Errorf("another sysvisord is using state dir %s (lock %s: %w)", cfg.StateDir, lockPath, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	// State written by a newer sysvisord is refused before anything
	// (the ID pool, a lease) is written.
	leasesPath := filepath.Join(cfg.StateDir, "leases.json")
	if err := lease.CheckFormat(leasesPath); err != nil {
		return nil, err
	}
	reg, err := registry.Open(filepath.Join(cfg.StateDir, "containers"))
	if err != nil {
		return nil, err
	}
	pool, err := lease.EnsurePool(cfg.SubUID, cfg.SubGID)
	if err != nil {
		return nil, fmt.Errorf("subordinate ID pool: %w", err)
	}
	regDir := cfg.IDRegistry
	if regDir == "" {
		regDir = lease.DefaultRegistryDir
	}
	leases, conflicts, err := lease.OpenShared(leasesPath, pool, regDir)
	if err != nil {
		return nil, err
	}
	for _, c := range conflicts {
		cfg.Log.Error("a lease shares host IDs with another sysvisord's (both were leased before this host-wide registry existed): recreate one of the two containers", "conflict", c)
	}
	table, err := handlers.NewTable(nil)
	if err != nil {
		return nil, err
	}
	mounts, err := cgroup.HostMounts()
	if err != nil {
		return nil, fmt.Errorf("cgroup mounts: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Log, leases: leases, reg: reg, table: table, mounts: mounts,
		listeners: map[string]map[*notify.Fd]string{}, slots: map[int]bool{}, lock: lock, stats: stats.NewSet()}
	// Last good copies live in the state directory: a restart that finds
	// a broken file serves the version that was active before.
	s.policies = policy.NewStore(policy.Dir(cfg.PolicyDir), filepath.Join(cfg.StateDir, "policies"), func(p *policy.Policy) error {
		_, err := notifyloop.NewActions(table, p.Rules)
		return err
	})
	if _, err := s.ReloadPolicies(); err != nil && len(s.policies.Names()) == 0 {
		return nil, fmt.Errorf("policies: %w", err)
	}
	ok = true
	s.reconcile()
	return s, nil
}

// reconcile runs at start. Records of containers deleted while the
// supervisor was down give back their leases. Running containers get their
// listeners back from the holder in Run (reattach).
func (s *Server) reconcile() {
	for _, l := range s.leases.List() {
		if !s.podLeaseHeld(l.ID) {
			s.log.Info("releasing lease without a container record", "container", l.ID)
			s.leases.Release(l.ID)
		}
	}
}

// collectEvery is how often collect runs. A container deleted while its
// runtime could not reach us (sysvisord down or restarting) is found here.
const collectEvery = 30 * time.Second

// collect releases the leases of containers whose runtime state is gone and
// marks as stopped running containers whose init has exited unseen (no
// listener left to tell us). A fresh record not yet running is spared:
// between the lease and runc's state file, a create is in flight.
func (s *Server) collect() {
	prune := s.protectionPruner()
	for _, c := range s.reg.List() {
		rec := c.Snapshot()
		// Live listeners prove the container exists, whatever the state
		// directory says (a runtime with an unexpected --root).
		// A record still in "created" may be a create in flight (leased,
		// runc's state not written yet); one that ran is not.
		settled := rec.Status != registry.StatusCreated || time.Since(rec.Created) > time.Minute
		if rec.RuncRoot != "" && settled && c.Listeners.Load() == 0 {
			if _, err := os.Stat(filepath.Join(rec.RuncRoot, rec.ID, "state.json")); os.IsNotExist(err) {
				s.log.Info("container gone without a delete reaching the supervisor; releasing its lease", "container", rec.ID)
				s.forget(rec.ID)
				continue
			}
		}
		if rec.Status == registry.StatusRunning && c.Listeners.Load() == 0 && rec.InitPid > 0 {
			if !initAlive(rec) {
				s.reg.Update(rec.ID, func(r *registry.Record) { r.Status = registry.StatusStopped })
				continue
			}
		}
		if rec.Status == registry.StatusRunning {
			prune(c)
		}
	}
}

// protectionPruner returns what drops, from a running container's record,
// the protection of mounts whose superblock is gone: the masks of every
// procfs and sysfs an inner container mounted (a dozen each) would
// otherwise stay for the container's life. One ustat(2) per distinct
// device per collection for the first look (it walks the kernel's list of
// superblocks); a fresh one under the registry's lock for each signature
// found stale.
func (s *Server) protectionPruner() func(c *registry.Container) {
	cache := map[[2]uint32]bool{}
	cached := func(maj, min uint32) bool {
		k := [2]uint32{maj, min}
		v, ok := cache[k]
		if !ok {
			v = mountinfo.SuperblockAlive(maj, min)
			cache[k] = v
		}
		return v
	}
	seen := func(sig string) bool { return handlers.StaleSignature(sig, cached) }
	fresh := func(sig string) bool { return handlers.StaleSignature(sig, mountinfo.SuperblockAlive) }
	return func(c *registry.Container) {
		n, err := c.PruneProtected(seen, fresh)
		if err != nil {
			s.log.Warn("cannot prune protected mounts", "container", c.ID(), "error", err)
		} else if n > 0 {
			s.log.Debug("protection of gone mounts dropped", "container", c.ID(), "signatures", n)
		}
	}
}

// Run serves until ctx is done, then closes every listener and waits for
// every goroutine it started.
func (s *Server) Run(ctx context.Context) error {
	s.ctx = ctx
	defer s.lock.Close()
	defer func() {
		if err := s.leases.Close(); err != nil {
			s.log.Warn("ID registry", "error", err)
		}
	}()
	if err := os.MkdirAll(s.cfg.RunDir, 0o711); err != nil {
		return fmt.Errorf("run dir %s: %w", s.cfg.RunDir, err)
	}
	ctl, err := control.Listen(filepath.Join(s.cfg.RunDir, control.ControlSocket))
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	sec, err := control.Listen(filepath.Join(s.cfg.RunDir, control.SeccompSocket))
	if err != nil {
		ctl.Close()
		return fmt.Errorf("seccomp socket: %w", err)
	}
	stopMetrics, err := s.startMetrics()
	if err != nil {
		ctl.Close()
		sec.Close()
		return fmt.Errorf("metrics: %w", err)
	}
	defer stopMetrics()
	s.loadAppArmor(ctx)
	threads := s.cfg.NotifyThreads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	if s.notify, err = notify.NewPool(threads); err != nil {
		ctl.Close()
		sec.Close()
		return fmt.Errorf("notify threads: %w", err)
	}
	held := s.startHolder()
	if s.cfg.NoViews {
		s.dropViews(held)
	} else {
		if err := s.startViews(held); err != nil {
			s.log.Warn("/proc and /sys views disabled", "error", err)
			s.views = nil
		}
	}
	s.startEngine()
	attached, lost := s.reattach(held)
	s.reattached.Store(int64(attached))
	s.lost.Store(int64(lost))
	s.collect()
	// After collect: containers deleted while sysvisord was down are
	// forgotten, not served again.
	s.restoreEngineViews()
	s.log.Info("sysvisord serving", "run_dir", s.cfg.RunDir, "state_dir", s.cfg.StateDir,
		"pool_start", s.leases.Pool().Start, "pool_size", s.leases.Pool().Size, "version", Version,
		"reattached_listeners", attached, "lost_listeners", lost, "holder", s.link != nil)
	if err := sdNotify("READY=1"); err != nil {
		s.log.Warn("cannot tell systemd we are ready", "error", err)
	}
	holderDone := make(chan struct{})
	if s.link != nil {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.link.keep(holderDone) }()
	}
	s.wg.Add(5)
	s.trim.log = s.log
	go func() {
		defer s.wg.Done()
		grown := int64(0)
		every(ctx, returnMemoryEvery, func() {
			s.returnMemory()
			s.trim.tick()
			if g := s.notify.Grown(); g != grown {
				s.log.Warn("notify threads added: an inline handler was stuck in a caller's memory", "added", g-grown)
				grown = g
			}
		})
	}()
	go func() {
		defer s.wg.Done()
		every(ctx, procview.LoadFreq, func() {
			for _, c := range s.reg.List() {
				s.sampleLoad(c, true)
			}
		})
	}()
	go func() { defer s.wg.Done(); s.acceptLoop(ctl, s.serveControl) }()
	go func() { defer s.wg.Done(); s.acceptLoop(sec, s.serveHandoff) }()
	go func() { defer s.wg.Done(); every(ctx, collectEvery, s.collect) }()
	<-ctx.Done()
	ctl.Close()
	sec.Close()
	close(holderDone)
	if s.link != nil {
		// The holder keeps its copies: the containers wait for the
		// next sysvisord.
		s.link.close()
	}
	s.mu.Lock()
	for _, fds := range s.listeners {
		for fd := range fds {
			fd.Close()
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.notify.Stop()
	if s.journal != nil {
		s.journal.Close()
	}
	// Control connections are done: no create can mount views any more.
	// Without a holder, running containers' view files fail from here on.
	if s.views != nil && s.link != nil {
		// The holder keeps the mount for the next sysvisord; requests
		// wait in the kernel meanwhile.
		s.views.Stop()
	} else if s.views != nil {
		s.views.Unmount()
	}
	s.stopEngine()
	s.log.Info("sysvisord stopped")
	return nil
}

// dropViews ends the views mount a previous sysvisord served, when this
// one serves none (--no-views): left to the holder, it would make every
// reader of a running container's view files wait for good. They get
// ENOTCONN instead.
func (s *Server) dropViews(held map[string]int) {
	if _, ok := held[holder.ViewsFuse]; !ok {
		return
	}
	s.log.Warn("views disabled: the running containers' view files fail with ENOTCONN from now on")
	if err := unix.Unmount(filepath.Join(s.cfg.RunDir, "views"), unix.MNT_DETACH); err != nil {
		s.log.Warn("unmount the views", "error", err)
	}
	for _, name := range []string{holder.ViewsFuse, holder.ViewsJournal} {
		if fd, ok := held[name]; ok {
			unix.Close(fd)
			delete(held, name)
		}
		s.dropHeld(name)
	}
}

// startViews serves the views mount: the one the holder kept (the same
// mount the running containers have their view files bound from), or a new
// one, deposited with the holder. It takes the views' fds out of held.
func (s *Server) startViews(held map[string]int) error {
	var inUse []uint64
	for _, c := range s.reg.List() {
		inUse = append(inUse, c.Snapshot().ViewSlot)
	}
	slots, err := openViewSlots(s.cfg.StateDir, inUse)
	if err != nil {
		return err
	}
	h := viewfs.Held{Fuse: -1, Journal: -1}
	if fd, ok := held[holder.ViewsFuse]; ok {
		h.Fuse = fd
		delete(held, holder.ViewsFuse)
	}
	if fd, ok := held[holder.ViewsJournal]; ok {
		h.Journal = fd
		delete(held, holder.ViewsJournal)
	}
	if (h.Fuse < 0) != (h.Journal < 0) {
		// Half a pair is no use: a fresh mount replaces it.
		s.log.Warn("holder kept only one of the views' fds; mounting the views afresh")
		closeHeld(map[string]int{"fuse": h.Fuse, "journal": h.Journal})
		h = viewfs.Held{Fuse: -1, Journal: -1}
	}
	// The containers are known before the first request is read: the
	// kernel asks about them as soon as the adopted mount is served.
	var initial []viewfs.Entry
	for _, c := range s.reg.List() {
		if rec := c.Snapshot(); rec.ViewSlot != 0 && rec.Views != "" {
			initial = append(initial, viewfs.Entry{ID: rec.ID, Slot: rec.ViewSlot, C: c})
		}
	}
	views, err := viewfs.Start(s.cfg.RunDir, h, initial, s.log.Named("views"))
	if err != nil && h.Fuse >= 0 {
		// Start closed them. The running containers' views are lost;
		// new ones get a fresh mount.
		s.log.Error("cannot adopt the views mount the holder kept; mounting afresh (running containers' view files fail with ENOTCONN until they are recreated)", "error", err)
		views, err = viewfs.Start(s.cfg.RunDir, viewfs.Held{Fuse: -1, Journal: -1}, initial, s.log.Named("views"))
	}
	if err != nil {
		return err
	}
	if s.link != nil {
		hv := views.Held()
		s.link.put(holder.ViewsFuse, rawDeposit(hv.Fuse))
		s.link.put(holder.ViewsJournal, rawDeposit(hv.Journal))
	}
	s.views, s.viewSlots = views, slots
	return nil
}

// returnMemoryEvery is how often returnMemory looks; a burst of deletes
// is over once a tick saw none.
const returnMemoryEvery = 5 * time.Second

// returnMemory gives the heap freed by deleted containers back to the
// system once a burst of deletes is over. Go's scavenger would keep up
// to 10% over the heap goal, and a CI host that ran 500 containers and
// then none would carry their peak for good; a forced collection after
// the burst costs milliseconds, once.
func (s *Server) returnMemory() {
	n := s.forgotten.Load()
	if n == 0 || n != s.seen {
		s.seen = n
		return
	}
	s.forgotten.Add(-n)
	s.seen = 0
	debug.FreeOSMemory()
	s.log.Info("memory of deleted containers returned", "containers", n)
}

// every runs fn each period until ctx is done.
func every(ctx context.Context, period time.Duration, fn func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

func (s *Server) acceptLoop(l *net.UnixListener, serve func(*net.UnixConn)) {
	for {
		conn, err := l.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Error("accept", "socket", l.Addr().String(), "error", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer conn.Close()
			// A peer that never finishes its request must not hold up
			// shutdown until the connection's deadline.
			stop := context.AfterFunc(s.ctx, func() { conn.Close() })
			defer stop()
			serve(conn)
		}()
	}
}

func (s *Server) serveControl(conn *net.UnixConn) {
	// The socket's mode already keeps other users out; the peer's
	// credentials are checked too, so that a wrong mode (or a connection
	// passed on by a root process) still gets nothing.
	uid, err := handoff.PeerUID(conn)
	if err != nil || uid != 0 {
		why := fmt.Sprintf("peer uid %d", uid)
		if err != nil {
			why = "peer credentials unreadable: " + err.Error()
		}
		s.log.Warn("control connection refused: not root", "reason", why)
		json.NewEncoder(conn).Encode(control.Response{Error: "permission denied: sysvisord's control socket serves root only (" + why + ")"})
		return
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	// Bounded: a client (root, but a buggy one) cannot make sysvisord
	// buffer without end.
	req, err := control.ReadRequest(conn)
	if err != nil {
		json.NewEncoder(conn).Encode(control.Response{Error: "malformed request: " + err.Error()})
		return
	}
	if req.Op == control.OpTrace {
		s.serveTrace(conn, req)
		return
	}
	resp := s.handleControl(req)
	if resp.Error != "" {
		s.log.Warn("control request failed", "op", req.Op, "container", req.ID, "error", resp.Error)
	}
	json.NewEncoder(conn).Encode(resp)
}

func (s *Server) handleControl(req control.Request) control.Response {
	switch req.Op {
	case control.OpPing:
		return control.Response{}
	case control.OpVersion:
		p := s.leases.Pool()
		h := &control.HolderInfo{Reattached: int(s.reattached.Load()), Lost: int(s.lost.Load())}
		h.Connected, h.Deposits = s.link.status()
		return control.Response{Version: Version, Pool: &p, Holder: h}
	case control.OpCreate:
		if err := registry.ValidID(req.ID); err != nil {
			return control.Response{Error: err.Error()}
		}
		// Resolved before anything is leased: an unknown or refused
		// policy fails the create and leaves nothing behind.
		pol, err := s.createPolicy(req)
		if err != nil {
			return control.Response{Error: err.Error()}
		}
		l, c, err := s.register(req, pol)
		if errors.Is(err, lease.ErrExhausted) {
			return control.Response{Error: fmt.Sprintf("%v; grow the pool: raise the count of the %q line in %s and %s (a multiple of %d, the same in both) and restart sysvisord, or remove containers",
				err, lease.Owner, s.cfg.SubUID, s.cfg.SubGID, lease.BlockSize)}
		}
		if err != nil {
			return control.Response{Error: err.Error()}
		}
		s.log.Info("container created", "container", req.ID, "id_base", l.Start, "id_size", l.Size, "policy", pol.Name, "policy_source", pol.Source, "pod", req.Pod)
		resp := control.Response{Lease: &l.Range, Policy: pol}
		if s.views != nil && pol.Views {
			// Views are optional: the container is created without them.
			var dir string
			s.mu.Lock()
			slot, err := s.viewSlots.take()
			s.mu.Unlock()
			if err == nil {
				dir, err = s.views.Add(req.ID, slot, c)
			}
			if err == nil {
				// Recorded for the procfs and sysfs mounted on the
				// container's behalf later, and for a restarted
				// sysvisord, which must serve the same slot.
				_, err = s.reg.Update(req.ID, func(r *registry.Record) { r.Views, r.ViewSlot = dir, slot })
				if err != nil {
					s.views.Remove(req.ID)
				}
			}
			if err != nil {
				s.log.Warn("container gets the host's /proc and /sys views", "container", req.ID, "error", err)
			} else {
				resp.Views, resp.ViewFiles = dir, viewfs.AvailableFiles()
			}
		}
		return resp
	case control.OpDelete:
		if err := registry.ValidID(req.ID); err != nil {
			return control.Response{Error: err.Error()}
		}
		if err := s.forget(req.ID); err != nil {
			return control.Response{Error: err.Error()}
		}
		return control.Response{}
	case control.OpPs:
		return control.Response{Containers: s.ps("")}
	case control.OpInspect:
		cs := s.ps(req.ID)
		if len(cs) == 0 {
			return control.Response{Error: fmt.Sprintf("no container %q", req.ID)}
		}
		cs[0].AppArmor = appArmorLabel(cs[0].Record)
		return control.Response{Containers: cs}
	case control.OpReady:
		return s.ready(req.ID)
	case control.OpEngineView:
		return s.engineView(req)
	case control.OpEngineViewDrop:
		if err := registry.ValidID(req.ID); err != nil {
			return control.Response{Error: err.Error()}
		}
		s.dropEngineView(req.ID)
		return control.Response{}
	case control.OpLogLevel:
		level := hclog.LevelFromString(req.Level)
		if level == hclog.NoLevel || level == hclog.Off {
			return control.Response{Error: fmt.Sprintf("log level %q: want trace, debug, info, warn or error", req.Level)}
		}
		prev := s.log.GetLevel()
		// Loggers derived from sysvisord's share its level.
		s.log.SetLevel(level)
		s.log.Info("log level changed", "from", prev.String(), "to", level.String())
		return control.Response{Level: prev.String()}
	case control.OpStats:
		if req.ID != "" {
			if _, ok := s.reg.Get(req.ID); !ok {
				return control.Response{Error: fmt.Sprintf("no container %q", req.ID)}
			}
		}
		return control.Response{Stats: s.stats.Rows(req.ID)}
	case control.OpPolicyReload:
		rep, err := s.ReloadPolicies()
		resp := control.Response{Reload: rep}
		if err != nil {
			resp.Error = err.Error()
		}
		return resp
	}
	return control.Response{Error: fmt.Sprintf("unknown op %q", req.Op)}
}

// register leases a create's IDs and records the container. The lock
// holds until the record is in: a pod's last container leaving in between
// would release the lease a member is given.
func (s *Server) register(req control.Request, pol *policy.Policy) (lease.Lease, *registry.Container, error) {
	s.podMu.Lock()
	defer s.podMu.Unlock()
	l, err := s.createLease(req)
	if err != nil {
		return l, nil, err
	}
	// The record keeps the rules themselves: a reload never changes
	// the policy of a container that exists.
	c, err := s.reg.Add(registry.Record{ID: req.ID, Bundle: req.Bundle, RuncRoot: req.RuncRoot, Policy: pol.Name, Rules: pol.Rules, Limits: pol.Limits,
		Lease: l.Range, Status: registry.StatusCreated, Created: time.Now().UTC(),
		MaskedPaths: req.MaskedPaths, ReadonlyPaths: req.ReadonlyPaths, Pod: req.Pod, Sandbox: req.Sandbox && req.Pod == ""})
	if err != nil && req.Pod == "" {
		s.leases.Release(req.ID)
	}
	return l, c, err
}

// createLease is a create's lease: its own, or its pod's. An app container
// of a Kubernetes pod shares the sandbox's user namespace, so its IDs are
// the sandbox's; the lease stays the sandbox's, held while any container
// of the pod is known (podLeaseHeld).
func (s *Server) createLease(req control.Request) (lease.Lease, error) {
	if req.Pod == "" {
		return s.leases.Acquire(req.ID, req.RuncRoot, req.Bundle)
	}
	if err := registry.ValidID(req.Pod); err != nil {
		return lease.Lease{}, fmt.Errorf("pod: %w", err)
	}
	if req.Pod == req.ID {
		return lease.Lease{}, fmt.Errorf("pod %s: a container cannot be its own pod's sandbox", req.Pod)
	}
	c, ok := s.reg.Get(req.Pod)
	if !ok {
		return lease.Lease{}, fmt.Errorf("pod sandbox %s: not a container of this sysvisord (the sandbox must run under sysvisor-runc too)", req.Pod)
	}
	sb := c.Snapshot()
	if sb.Pod != "" {
		return lease.Lease{}, fmt.Errorf("pod sandbox %s: is itself an app container of pod %s", req.Pod, sb.Pod)
	}
	// Another container's user namespace and IDs are not for the taking:
	// only a container created as a pod's sandbox is joined.
	if !sb.Sandbox {
		return lease.Lease{}, fmt.Errorf("pod sandbox %s: was not created as a pod's sandbox", req.Pod)
	}
	l, ok := s.leases.Get(req.Pod)
	if !ok {
		return lease.Lease{}, fmt.Errorf("pod sandbox %s: holds no lease", req.Pod)
	}
	return l, nil
}

// podLeaseHeld says whether a container of pod (the sandbox's id) is
// still known: its lease, the pod's user namespace's IDs, stays leased.
func (s *Server) podLeaseHeld(pod string) bool {
	if _, ok := s.reg.Get(pod); ok {
		return true
	}
	for _, c := range s.reg.List() {
		if c.Snapshot().Pod == pod {
			return true
		}
	}
	return false
}

// createPolicy resolves a create's policy among the active ones.
func (s *Server) createPolicy(req control.Request) (*policy.Policy, error) {
	name, from := req.Policy, req.PolicySource
	if name == "" {
		name, from = policy.DefaultName, "default"
	}
	if from == "" {
		from = "the create request"
	}
	// A runtime pointed at another directory would believe the container
	// runs under a file sysvisord never read.
	if req.PolicyDir != "" && filepath.Clean(req.PolicyDir) != filepath.Clean(s.policies.Dir()) {
		return nil, fmt.Errorf("policy %q: the runtime's --policy-dir %s is not sysvisord's policy directory %s (policies are read by sysvisord: drop the runtime's flag or give sysvisord --policy-dir %s)",
			name, req.PolicyDir, s.policies.Dir(), req.PolicyDir)
	}
	p, err := s.policies.Get(name)
	if err != nil {
		return nil, fmt.Errorf("policy from %s: %w", from, err)
	}
	return p, nil
}

// ReloadPolicies re-reads the policy directory (SIGHUP, `sysvisorctl policy
// reload`): valid files become active for containers created from now on,
// a refused file keeps its last good version, and running containers keep
// the rules in their records.
func (s *Server) ReloadPolicies() (*policy.Report, error) {
	rep, err := s.policies.Reload()
	for _, l := range rep.Policies {
		switch l.Status {
		case policy.StatusLoaded, policy.StatusRemoved:
			s.log.Info("policy "+l.Status, "policy", l.Name, "source", l.Source)
		case policy.StatusKept, policy.StatusFailed:
			s.log.Error("policy file refused", "policy", l.Name, "status", l.Status, "active", l.Source, "error", l.Error)
		}
	}
	if err != nil && len(rep.Policies) == 0 {
		s.log.Error("policy reload failed; active policies unchanged", "dir", s.policies.Dir(), "error", err)
	}
	return rep, err
}

// forget stops serving id and releases everything it held.
func (s *Server) forget(id string) error {
	// The record goes under s.mu, as attach checks it under s.mu: no
	// listener can join a container once it is forgotten.
	owner := id
	if c, ok := s.reg.Get(id); ok {
		if pod := c.Snapshot().Pod; pod != "" {
			owner = pod
		}
	}
	s.mu.Lock()
	fds := s.listeners[id]
	delete(s.listeners, id)
	err := s.reg.Remove(id)
	s.mu.Unlock()
	for fd, name := range fds {
		s.dropHeld(name)
		fd.Close()
	}
	s.stats.Forget(id)
	if s.views != nil {
		s.views.Remove(id)
	}
	s.dropEngineView(id)
	s.forgotten.Add(1)
	if err != nil {
		return err
	}
	s.podMu.Lock()
	defer s.podMu.Unlock()
	if s.podLeaseHeld(owner) {
		s.log.Info("container deleted, its pod keeps the lease", "container", id, "pod", owner)
		return nil
	}
	released, err := s.leases.Release(owner)
	if err != nil {
		return err
	}
	if released {
		s.log.Info("container deleted, lease released", "container", id, "lease", owner)
	}
	return nil
}

// ps lists the containers, or only id when it is not empty.
func (s *Server) ps(id string) []control.ContainerInfo {
	now, _ := handlers.BootTime()
	var out []control.ContainerInfo
	for _, c := range s.reg.List() {
		rec := c.Snapshot()
		if id != "" && rec.ID != id {
			continue
		}
		info := control.ContainerInfo{Record: rec, Notifications: c.Notified.Load(), Listeners: c.Listeners.Load()}
		if rec.InitStartNs > 0 && rec.Status == registry.StatusRunning {
			info.UptimeSeconds = (now - time.Duration(rec.InitStartNs)).Seconds()
		}
		out = append(out, info)
	}
	return out
}

func (s *Server) serveHandoff(conn *net.UnixConn) {
	msg, err := handoff.Receive(conn, 10*time.Second)
	if err != nil {
		s.log.Error("seccomp handoff rejected", "error", err)
		return
	}
	id, pid := msg.State.State.ID, msg.State.Pid
	log := s.log.With("container", id, "pid", pid)
	if msg.PeerUID != 0 {
		unix.Close(msg.SeccompFd)
		log.Error("seccomp handoff rejected: peer is not root", "peer_uid", msg.PeerUID)
		return
	}
	var meta struct {
		ID string `json:"id"`
	}
	if msg.State.Metadata != "" {
		if err := json.Unmarshal([]byte(msg.State.Metadata), &meta); err != nil || (meta.ID != "" && meta.ID != id) {
			unix.Close(msg.SeccompFd)
			log.Error("seccomp handoff rejected: listener metadata does not match container", "metadata", msg.State.Metadata)
			return
		}
	}
	c, ok := s.reg.Get(id)
	if !ok {
		unix.Close(msg.SeccompFd)
		log.Error("seccomp handoff for a container sysvisord did not create; its trapped syscalls will fail with ENOSYS")
		return
	}
	init := c.Snapshot().InitPid == 0
	// Deposited with the holder before anything slow: should sysvisord
	// die from here on, the next one serves this listener.
	slot, name := s.reserve(id, init, msg.SeccompFd)
	if init {
		start, err := procStart(pid)
		if err != nil {
			s.unreserve(slot, name, msg.SeccompFd)
			log.Error("seccomp handoff: cannot read init's start time", "error", err)
			return
		}
		cg, err := cgroup.Of(pid, s.mounts)
		if err != nil {
			log.Warn("cannot resolve init's cgroups; resource views fall back to the host", "error", err)
		}
		// The container's cgroup, where its limits are: on a v2-only
		// host init is in the leaf below it.
		cg = cg.Container()
		// Before the mounts are read: what it mounts is protected too.
		s.prepareProcSys(c, pid, log)
		s.prepareSysfs(c, pid, log)
		// The mounts the runtime set up, as they are before the
		// container's own code has run: the ones it may not undo.
		protected, sysRO, err := handlers.RuntimeMounts(pid)
		if err != nil {
			s.unreserve(slot, name, msg.SeccompFd)
			log.Error("seccomp handoff: cannot read init's mounts", "error", err)
			return
		}
		c, err = s.reg.Update(id, func(r *registry.Record) {
			r.InitPid, r.InitStartNs, r.Cgroups, r.Status = pid, int64(start), cg, registry.StatusRunning
			r.Protected, r.SysfsReadOnly = protected, sysRO
		})
		if err != nil {
			s.unreserve(slot, name, msg.SeccompFd)
			log.Error("seccomp handoff: cannot record container", "error", err)
			return
		}
		// Task counts for /proc/loadavg before the first 5 s tick.
		s.sampleLoad(c, false)
	}
	// The container's action table, resolved once here: the notify loop
	// reads it without any lock.
	acts, err := notifyloop.NewActions(s.table, c.Snapshot().Rules)
	if err != nil {
		s.unreserve(slot, name, msg.SeccompFd)
		log.Error("seccomp handoff: container's policy", "error", err)
		return
	}
	fd, err := notify.NewFd(msg.SeccompFd, "seccomp:"+id)
	if err != nil {
		s.unreserve(slot, name, -1)
		log.Error("seccomp handoff", "error", err)
		return
	}
	s.attach(c, fd, acts, init, slot, false, log)
}

// reserve takes a journal slot for a listener just received and deposits
// it with the holder; -1 and "" without a holder.
func (s *Server) reserve(id string, init bool, fd int) (int, string) {
	if s.journal == nil {
		return -1, ""
	}
	s.mu.Lock()
	slot := s.freeSlotLocked()
	if slot >= 0 {
		s.slots[slot] = true
	}
	s.mu.Unlock()
	if slot < 0 {
		return -1, ""
	}
	name := holder.ListenerName(slot, id, init)
	s.link.put(name, rawDeposit(fd))
	return slot, name
}

// unreserve undoes reserve for a listener that will not be served, and
// closes fd (unless -1): in this order, so that the holder link never
// sends a closed fd number.
func (s *Server) unreserve(slot int, name string, fd int) {
	if name != "" {
		s.dropHeld(name)
		s.mu.Lock()
		delete(s.slots, slot)
		s.mu.Unlock()
	}
	if fd >= 0 {
		unix.Close(fd)
	}
}

// attach serves listener fd of container c (init's or an exec's) from
// now on, in journal slot slot (-1: take one now) and deposited with the
// holder. An adopted listener is one a previous sysvisord served: its
// slot may hold a notification in flight, which is answered first. It
// takes fd.
func (s *Server) attach(c *registry.Container, fd *notify.Fd, acts notifyloop.Actions, init bool, slot int, adopted bool, log hclog.Logger) bool {
	id := c.ID()
	if !s.cfg.NoSyncWakeUp && kernel.NotifySyncWakeUp.Has() {
		if err := fd.SetSyncWakeUp(); err != nil {
			log.Debug("SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP unavailable", "error", err)
		}
	}
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		fd.Close()
		return false
	}
	if cur, ok := s.reg.Get(id); !ok || cur != c {
		if slot >= 0 {
			delete(s.slots, slot)
		}
		s.mu.Unlock()
		if slot >= 0 {
			s.dropHeld(holder.ListenerName(slot, id, init))
		}
		fd.Close()
		log.Warn("seccomp listener for a container deleted meanwhile; dropped")
		return false
	}
	if s.journal != nil && slot < 0 {
		// No slot was free at the handoff: served, but not kept
		// across a restart.
		log.Error("every journal slot is taken: this listener does not survive a restart of sysvisord", "slots", holder.JournalSlots)
	}
	name := ""
	if s.journal != nil && slot >= 0 {
		s.slots[slot] = true
		name = holder.ListenerName(slot, id, init)
	}
	if s.listeners[id] == nil {
		s.listeners[id] = map[*notify.Fd]string{}
	}
	s.listeners[id][fd] = name
	s.mu.Unlock()
	// Where the notification is received: the journal slot, so that one
	// in flight when we die is found by the next sysvisord.
	n := new(notify.Notif)
	if name != "" {
		n = (*notify.Notif)(s.journal.Slot(slot))
		if !adopted {
			*n = notify.Notif{}
		}
		s.link.put(name, func(send func(int) error) error { return fd.Control(send) })
	}
	if adopted {
		log.Info("seccomp listener re-attached", "init", init, "slot", slot)
	} else {
		log.Info("seccomp listener attached", "init", init)
	}
	c.Listeners.Add(1)
	obs := notifyloop.NewObserver(id, s.stats.NewShard(id), &s.trace, c.Snapshot().Limits, log)
	s.wg.Add(1)
	ended := func(error) {
		defer s.wg.Done()
		s.stats.Retire(obs.Shard())
		c.Listeners.Add(-1)
		s.mu.Lock()
		if fds := s.listeners[id]; fds != nil {
			delete(fds, fd)
		}
		stopping := s.ctx.Err() != nil
		if !stopping && name != "" {
			delete(s.slots, slot)
		}
		s.mu.Unlock()
		fd.Close()
		// At shutdown the container lives on, and the holder keeps the
		// listener for the next sysvisord; only our copy ends.
		if stopping {
			return
		}
		if name != "" {
			s.dropHeld(name)
		}
		if init {
			if _, err := s.reg.Update(id, func(r *registry.Record) { r.Status = registry.StatusStopped }); err == nil {
				log.Info("container init's listener closed: container stopped")
			}
		}
	}
	l := notifyloop.NewListener(c, fd, acts, obs, log, ended)
	if err := s.notify.Add(fd, n, l, l.Pending(n)); err != nil {
		// Closed meanwhile (the container forgotten, shutdown).
		log.Debug("seccomp listener not served", "error", err)
		ended(err)
	}
	return true
}

// freeSlotLocked finds a journal slot no listener uses (s.mu held).
func (s *Server) freeSlotLocked() int {
	for i := 0; i < holder.JournalSlots; i++ {
		slot := (s.nextSlot + i) % holder.JournalSlots
		if !s.slots[slot] {
			s.nextSlot = slot + 1
			return slot
		}
	}
	return -1
}

func (s *Server) dropHeld(name string) {
	if s.link != nil && name != "" {
		s.link.del(name)
	}
}

// sampleLoad counts a running container's tasks (for /proc/loadavg and
// sysinfo) and, with fold, folds them into its load averages: every
// procview.LoadFreq, like the kernel.
func (s *Server) sampleLoad(c *registry.Container, fold bool) {
	rec := c.Snapshot()
	if rec.Status != registry.StatusRunning || rec.InitPid == 0 {
		return
	}
	dir, file, ok := procview.TaskDir(rec.Cgroups)
	if !ok {
		return
	}
	level, err := procview.NSLevel("/proc", rec.InitPid)
	if err != nil {
		return // init is gone; the collector will notice
	}
	running, active, total, last, err := procview.Tasks(dir, file, "/proc", level)
	if err != nil {
		s.log.Debug("load sample", "container", rec.ID, "error", err)
		return
	}
	l := c.Load()
	if fold {
		l = l.Next(active)
	}
	l.Running, l.Total, l.LastPid = running, total, last
	c.SetLoad(l)
}

// initAlive reports whether the record's init still runs: its pid names a
// process started when the record says (not a reuse of the pid).
func initAlive(rec registry.Record) bool {
	start, err := procStart(rec.InitPid)
	return err == nil && int64(start) == rec.InitStartNs
}

// procStart returns pid's start time on CLOCK_BOOTTIME from /proc/<pid>/stat.
func procStart(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatStart(string(b))
}

func parseStatStart(stat string) (time.Duration, error) {
	// comm may contain spaces and parentheses: fields start after the last ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed stat")
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat starttime: %w", err)
	}
	// Ticks times 10ms: ticks*time.Second would overflow after ~3 years of uptime.
	return time.Duration(ticks) * (time.Second / clockTicks), nil
}

// clockTicks is USER_HZ, fixed at 100 on every Linux architecture Go supports.
const clockTicks = 100
