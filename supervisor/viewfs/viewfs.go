// Package viewfs serves every container's /proc and /sys views from one
// FUSE mount at <run-dir>/views, a directory per container
// (<run-dir>/views/<id>). The runtime bind-mounts the files over the
// container's /proc/<file> and /sys/devices/system/cpu/online.
//
// The FUSE protocol server is this package's own: a few workers (4, an OS
// thread each, none per container) wait in poll(2) on the /dev/fuse fd, so
// the kernel wakes a worker's thread for a request directly. Waiting in Go's
// netpoller instead cost every request a parked goroutine's wake-up, which
// made the views 0.5-0.7x LXCFS's speed (bench/ figure 5). Node ids are fixed by design (nodes.go) and
// the requests being served are journalled in a memfd (journal.go), so a
// restarted sysvisord given the same /dev/fuse fd and journal (Held) adopts
// the mount: the kernel's dentries, open files and containers' bind mounts
// stay valid, and requests the old process had read but not answered are
// answered.
//
// Every file is opened with FOPEN_DIRECT_IO, rendered at open's first read
// and at every read from offset 0; reads at later offsets continue that
// rendering, and the kernel caches nothing between opens.
package viewfs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/cgroup"
	"github.com/sysvisor/sysvisor/linux/mountinfo"
	"github.com/sysvisor/sysvisor/supervisor/procview"
)

// Files are the read-only views, relative to a container's view root; each
// is bind-mounted at "/" + name in the container by the runtime (runc
// accepts these destinations). The runtime binds those whose host file
// exists (AvailableFiles): a bind needs its target in the container's
// procfs or sysfs, which has the host kernel's files. product_uuid is
// served to every container: where the host has no DMI, sysvisord makes a
// place for it in the container's sysfs (handlers.PrepareSysfs).
var Files = []string{
	"proc/uptime",
	"proc/meminfo",
	"proc/cpuinfo",
	"proc/stat",
	"proc/loadavg",
	"proc/swaps",
	"proc/diskstats",
	"sys/devices/system/cpu/online",
	productUUID,
}

// productUUID exists in the host's sysfs only where the host has DMI (not
// on VMs without firmware tables).
const productUUID = "sys/devices/virtual/dmi/id/product_uuid"

// AvailableFiles lists the Files this host has.
func AvailableFiles() []string {
	var out []string
	for _, f := range Files {
		if _, err := os.Stat(hostFile(f)); err == nil {
			out = append(out, f)
		}
	}
	return out
}

// servedFiles lists the read-only views of a container: the ones the host
// has, and product_uuid (rendered from the container's id, not from a host
// file).
func servedFiles() []string {
	out := AvailableFiles()
	if !slices.Contains(out, productUUID) {
		out = append(out, productUUID)
	}
	return out
}

// Container is what rendering needs of a container; *registry.Container
// implements it. Its methods are read at every open, so the views follow
// the record (init's start and cgroups arrive after Add).
type Container interface {
	// ID names the container (its product_uuid derives from it).
	ID() string
	InitStart() time.Duration
	Cgroups() cgroup.Paths
	CgroupFiles() cgroup.Source
	// Load is the last load sample (sysvisord samples every 5 s).
	Load() procview.Load
	// Sysctl is the container's own value of an emulated sysctl (a path
	// under /proc/sys), if it wrote one; SetSysctl records one.
	Sysctl(name string) (string, bool)
	SetSysctl(name, value string) error
	// RootIDs are the host uid and gid of the container's root, which
	// owns its view files.
	RootIDs() (uint32, uint32)
	// InitPid is the container's init (0 before it registered): its user
	// namespace is the one a sysctl writer's capabilities must be in.
	InitPid() int
	// IDs is the container's host ID range: only host root and uids in
	// it may use the container's views.
	IDs() (base, size uint32)
}

// Dir is where the views of id are.
func Dir(runDir, id string) string { return filepath.Join(runDir, "views", id) }

// Held are the fds that must outlive sysvisord: the views mount's /dev/fuse
// fd and the journal memfd. -1 = absent.
type Held struct{ Fuse, Journal int }

const (
	// workers read the /dev/fuse fd. Requests are short (a render is a
	// few preads): four keep both cores busy and a slow one from
	// holding up the rest.
	workers = 4
	// maxWrite is the largest WRITE the kernel sends: sysctl values are
	// short, and the journal's slots are sized by it.
	maxWrite = 4096
	// dirTimeout is how long the kernel may keep names and directory
	// attributes: the tree of a container never changes (a removed
	// container's name is invalidated explicitly).
	dirTimeout = time.Hour
	// attrTimeout is how long the kernel may keep a view's attributes.
	// Of them only the size changes, and it only matters to splice reads
	// (see noteShort); a read(2) ignores it. Keeping them saves the
	// GETATTR an open would otherwise send, a quarter of an
	// open+read+close; a second bounds how far a rendering can outgrow
	// the size the kernel holds.
	attrTimeout = time.Second
	// sizeSlack is added to the size a view reports, so content that
	// grew a little since the rendering the size comes from is not cut
	// by a splice read.
	sizeSlack = 256
	// initTimeout bounds the wait for the kernel's INIT after mount(2);
	// probeTimeout the wait for the adoption probe's LOOKUP.
	initTimeout  = 5 * time.Second
	probeTimeout = 2 * time.Second
)

// Server serves the views mount.
type Server struct {
	runDir, root string
	log          hclog.Logger
	tree         *tree

	fd int // the /dev/fuse fd, nonblocking
	j  *journal
	// stopFd (an eventfd) wakes the workers waiting in poll(2) at Stop.
	stopFd int

	wg       sync.WaitGroup
	stopOnce sync.Once
	// fdMu guards the fd and the journal for writers outside the workers
	// (notifications from Remove): Stop closes them under it.
	fdMu   sync.RWMutex
	closed bool

	mu      sync.RWMutex
	byID    map[string]*ctr
	bySlot  map[uint64]*ctr
	retired map[uint64]bool // slots removed: never served again

	// handles maps a file handle to its open-file state (*handle).
	handles sync.Map
	// shrunk maps a node id to the size the kernel cut its i_size to
	// (see noteShort).
	shrunk sync.Map

	initOnce sync.Once
	initDone chan struct{}
	fatal    chan error // a worker's read error, for Start to report
	probe    atomic.Pointer[probe]
	pollOff  atomic.Bool // the kernel was told POLL is unsupported
	counts   [maxOp]atomic.Uint64
}

// ctr is one container on the mount.
type ctr struct {
	id   string
	slot uint64
	c    Container
	// lastLen is the length of the latest rendering of each file, for
	// GETATTR without an open file. Keys are fixed at Add.
	lastLen map[uint16]*atomic.Int64
}

// probe is the adoption check's name, looked up once by Start.
type probe struct {
	name string
	seen chan struct{}
	once sync.Once
}

// testHookAfterRead, when set, runs after a worker read a request; true
// makes the worker stop there without answering, as if the process died.
var testHookAfterRead func(req []byte) bool

// Entry is a container whose views Start serves from the first request on.
type Entry struct {
	ID   string
	Slot uint64
	C    Container
}

// Start serves the one views mount at <runDir>/views, with the views of
// the containers in initial.
//
// initial is known before any worker reads a request: after an adoption
// the kernel may ask at once about the containers the predecessor served,
// and a worker must never wait for a container to be added (while all
// workers waited, the adoption probe would go unread).
//
// With held.Fuse < 0 it removes stale mounts at <runDir>/views (and the
// per-container mounts under it of sysvisord before the one mount), mounts
// afresh and answers the kernel's INIT. With held.Fuse >= 0 it adopts that
// connection, already initialised: it checks that the fd serves
// <runDir>/views (a LOOKUP of a random name under it must arrive on the
// fd), answers the requests the journal shows in flight, then serves.
//
// Start owns the held fds it is given from then on, also when it fails: it
// closes them on Stop, or before returning an error.
func Start(runDir string, held Held, initial []Entry, log hclog.Logger) (*Server, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	t, err := buildTree(servedFiles(), Sysctls())
	if err != nil {
		closeHeld(held)
		return nil, err
	}
	s := &Server{runDir: runDir, root: filepath.Join(runDir, "views"), log: log, tree: t,
		byID: map[string]*ctr{}, bySlot: map[uint64]*ctr{}, retired: map[uint64]bool{},
		initDone: make(chan struct{}), fatal: make(chan error, 1), fd: -1}
	if s.stopFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		closeHeld(held)
		return nil, fmt.Errorf("views: eventfd: %w", err)
	}
	for _, e := range initial {
		if _, err := s.add(e.ID, e.Slot, e.C); err != nil {
			log.Warn("container's views not served", "container", e.ID, "error", err)
		}
	}
	if held.Fuse < 0 {
		if held.Journal >= 0 {
			unix.Close(held.Journal)
		}
		err = s.mountFresh()
	} else {
		err = s.adopt(held)
	}
	if err != nil {
		s.Stop()
		return nil, err
	}
	// Any one container's file will do (see disablePoll).
	for id := range s.byID {
		s.disablePoll(Dir(runDir, id))
		break
	}
	return s, nil
}

func closeHeld(h Held) {
	for _, fd := range []int{h.Fuse, h.Journal} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// removeStale unmounts what a previous sysvisord left at <runDir>/views:
// the one mount, and before it the per-container mounts under it.
func (s *Server) removeStale() error {
	for unix.Unmount(s.root, unix.MNT_DETACH) == nil {
	}
	if err := os.MkdirAll(s.root, 0o711); err != nil {
		return fmt.Errorf("views directory: %w", err)
	}
	ents, err := os.ReadDir(s.root)
	if err != nil {
		return fmt.Errorf("views directory: %w", err)
	}
	for _, e := range ents {
		dir := filepath.Join(s.root, e.Name())
		for unix.Unmount(dir, unix.MNT_DETACH) == nil {
		}
		if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
			s.log.Warn("stale views directory left in place", "dir", dir, "error", err)
		}
	}
	return nil
}

func (s *Server) mountFresh() error {
	if err := s.removeStale(); err != nil {
		return err
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("FUSE unavailable: open /dev/fuse: %w", err)
	}
	s.fd = fd // closed by Stop
	if s.j, err = newJournal(); err != nil {
		return err
	}
	// default_permissions: the kernel checks modes itself (no ACCESS
	// round trips); allow_other: container processes are other users.
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,default_permissions,allow_other", fd)
	// fuse.sysvisor: mountinfo shows the subtype, which the e2e tests and
	// operators look for.
	if err := unix.Mount("sysvisor-views", s.root, "fuse.sysvisor", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("mount views at %s: %w", s.root, err)
	}
	if err := s.setFd(fd); err != nil {
		s.detach()
		return err
	}
	s.startWorkers(s.freeSlots(nil))
	select {
	case <-s.initDone:
	case err = <-s.fatal:
	case <-time.After(initTimeout):
		err = errors.New("no INIT from the kernel")
	}
	if err != nil {
		s.detach()
		return fmt.Errorf("views mount at %s: %w", s.root, err)
	}
	s.log.Debug("views mounted", "dir", s.root)
	return nil
}

func (s *Server) setFd(fd int) error {
	// Nonblocking: a worker polls before it reads, and another worker
	// may have taken the request meanwhile.
	s.fd = fd
	if err := unix.SetNonblock(fd, true); err != nil {
		return fmt.Errorf("/dev/fuse fd: %w", err)
	}
	return nil
}

func (s *Server) adopt(held Held) error {
	if err := unix.SetNonblock(held.Fuse, true); err != nil {
		unix.Close(held.Fuse)
		if held.Journal >= 0 {
			unix.Close(held.Journal)
		}
		return fmt.Errorf("adopt /dev/fuse fd %d: %w", held.Fuse, err)
	}
	// A /dev/fuse fd that no mount uses polls as an error.
	pfd := []unix.PollFd{{Fd: int32(held.Fuse), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, 0); err == nil && pfd[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
		closeHeld(held)
		return fmt.Errorf("adopt: fd %d is not a mounted FUSE connection (poll: %#x)", held.Fuse, pfd[0].Revents)
	}
	if err := s.setFd(held.Fuse); err != nil {
		if held.Journal >= 0 {
			unix.Close(held.Journal)
		}
		return err
	}
	var pending []int
	switch {
	case held.Journal < 0:
		s.log.Warn("views adopted without a journal: requests in flight at the restart stay unanswered")
		j, err := newJournal()
		if err != nil {
			return err
		}
		s.j = j
		j.format(fhAfterUnknown())
	default:
		j, err := mapJournal(held.Journal)
		if err != nil {
			unix.Close(held.Journal)
			return fmt.Errorf("adopt views journal: %w", err)
		}
		s.j = j
		if err := j.check(); err != nil {
			s.log.Error("views journal refused: requests in flight at the restart stay unanswered", "error", err)
			j.format(fhAfterUnknown())
		} else {
			pending = j.inFlight()
		}
	}
	// An INIT the predecessor read but did not answer must be answered
	// first: the kernel sends nothing else before, not even the probe.
	var rest []int
	for _, i := range pending {
		if h, ok := parseInHeader(s.j.slot(i)); ok && h.Opcode == opInit {
			s.replay(i)
			continue
		}
		rest = append(rest, i)
	}
	s.startWorkers(s.freeSlots(rest))
	if err := s.verify(); err != nil {
		return err
	}
	// In the background, each in its journal slot until answered.
	for _, i := range rest {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.replay(i)
		}()
	}
	s.log.Info("views mount adopted", "dir", s.root, "replayed", len(pending))
	return nil
}

// replay answers the journalled request in slot i again and frees it.
func (s *Server) replay(i int) {
	b := s.j.slot(i)
	if h, ok := parseInHeader(b); ok && h.Len >= inHeaderSize && int(h.Len) <= len(b) {
		s.log.Debug("views: answering a request read before the restart", "opcode", h.Opcode, "unique", h.Unique)
		s.dispatch(b[:h.Len])
	} else {
		s.log.Warn("views: journal slot unreadable; dropped", "slot", i)
	}
	s.j.done(i)
}

// verify checks that the adopted fd serves <runDir>/views: a LOOKUP of a
// random name there must arrive on it.
func (s *Server) verify() error {
	var rnd [8]byte
	rand.Read(rnd[:])
	p := &probe{name: ".probe-" + hex.EncodeToString(rnd[:]), seen: make(chan struct{})}
	s.probe.Store(p)
	defer s.probe.Store(nil)
	path := filepath.Join(s.root, p.name)
	statDone := make(chan error, 1)
	// If <runDir>/views is a FUSE mount nobody serves, this stat hangs
	// and its goroutine (and thread) stay until that mount goes: rare,
	// and Start reports it.
	go func() {
		var st unix.Stat_t
		statDone <- unix.Lstat(path, &st)
	}()
	timeout := time.NewTimer(probeTimeout)
	defer timeout.Stop()
	select {
	case <-p.seen:
		select { // answered by now, or soon: leave no goroutine behind
		case <-statDone:
		case <-timeout.C:
		}
		return nil
	case err := <-statDone:
		select {
		case <-p.seen:
			return nil
		default:
		}
		return fmt.Errorf("adopted /dev/fuse fd does not serve %s: a stat of %s came back (%v) without a LOOKUP on it", s.root, path, err)
	case err := <-s.fatal:
		return fmt.Errorf("adopted /dev/fuse fd does not serve %s: %w", s.root, err)
	case <-timeout.C:
		return fmt.Errorf("adopted /dev/fuse fd does not serve %s: no LOOKUP of %s within %v", s.root, path, probeTimeout)
	}
}

// freeSlots picks the journal slots of the workers, avoiding busy ones.
func (s *Server) freeSlots(busy []int) []int {
	var out []int
	for i := 0; i < journalSlots && len(out) < workers; i++ {
		if !slices.Contains(busy, i) {
			out = append(out, i)
		}
	}
	return out
}

func (s *Server) startWorkers(slots []int) {
	for _, i := range slots {
		s.wg.Add(1)
		go s.worker(i)
	}
}

// Held returns the server's own fds; the caller dups them to deposit
// with the holder.
func (s *Server) Held() Held {
	h := Held{Fuse: s.fd, Journal: -1}
	if s.j != nil {
		h.Journal = s.j.fd
	}
	return h
}

// Add serves the views of container c, named id, in slot (idempotent: a
// retried create gets the same directory) and returns their directory.
// slot is the caller's, 1 ≤ slot < 2^40, never given to another container
// on this mount: node ids derive from it.
func (s *Server) Add(id string, slot uint64, c Container) (string, error) {
	dir, err := s.add(id, slot, c)
	if err == nil {
		s.disablePoll(dir)
	}
	return dir, err
}

func (s *Server) add(id string, slot uint64, c Container) (string, error) {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") || len(id) > 255 {
		return "", fmt.Errorf("views: bad container id %q", id)
	}
	if slot < 1 || slot >= maxSlot {
		return "", fmt.Errorf("views: slot %d of %s out of range [1, 2^40)", slot, id)
	}
	if c == nil {
		return "", fmt.Errorf("views: no container record for %s", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", errors.New("views: server stopped")
	}
	if cur, ok := s.byID[id]; ok {
		if cur.slot != slot {
			return "", fmt.Errorf("views: %s already served in slot %d, not %d", id, cur.slot, slot)
		}
		return Dir(s.runDir, id), nil
	}
	if other, ok := s.bySlot[slot]; ok || s.retired[slot] {
		name := "a removed container"
		if ok {
			name = other.id
		}
		return "", fmt.Errorf("views: slot %d of %s was %s's", slot, id, name)
	}
	ct := &ctr{id: id, slot: slot, c: c, lastLen: map[uint16]*atomic.Int64{}}
	for num, n := range s.tree.nodes {
		if n.kind != kindDir {
			ct.lastLen[num] = new(atomic.Int64)
		}
	}
	s.byID[id], s.bySlot[slot] = ct, ct
	s.log.Debug("views added", "container", id, "slot", slot)
	return Dir(s.runDir, id), nil
}

// disablePoll makes the kernel stop sending FUSE_POLL on the connection.
// Until it does, adding a view file to an epoll set sends FUSE_POLL while
// the kernel holds that epoll instance's mutex: a round trip for every
// reader that polls, and, when the workers waited in Go's poller, a
// deadlock if this very process did it (os.Open registers files with
// that poller). One poll(2) of a view file gets the POLL answered ENOSYS,
// after which the kernel answers polls itself for as long as the
// connection lives (a successor inherits it).
func (s *Server) disablePoll(dir string) {
	if s.pollOff.Load() {
		return
	}
	fd, err := unix.Open(filepath.Join(dir, productUUID), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		s.log.Warn("views: cannot switch FUSE poll off", "error", err)
		return
	}
	defer unix.Close(fd)
	if _, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0); err != nil {
		s.log.Warn("views: cannot switch FUSE poll off", "error", err)
		return
	}
	s.pollOff.Store(true)
}

// Remove stops serving id: its name is gone from the root, requests on its
// nodes fail and its open files' snapshots are dropped.
func (s *Server) Remove(id string) {
	s.mu.Lock()
	ct, ok := s.byID[id]
	if ok {
		delete(s.byID, id)
		delete(s.bySlot, ct.slot)
		s.retired[ct.slot] = true
	}
	s.mu.Unlock()
	if !ok {
		return
	}
	s.handles.Range(func(k, v any) bool {
		if slot, _ := splitNode(v.(*handle).node); slot == ct.slot {
			s.handles.Delete(k)
		}
		return true
	})
	s.shrunk.Range(func(k, _ any) bool {
		if slot, _ := splitNode(k.(uint64)); slot == ct.slot {
			s.shrunk.Delete(k)
		}
		return true
	})
	// The kernel keeps names for dirTimeout: forget this one now.
	if err := s.notifyInvalEntry(rootID, id); err != nil && !errors.Is(err, unix.ENOENT) {
		s.log.Debug("views: invalidate name", "container", id, "error", err)
	}
	s.log.Debug("views removed", "container", id, "slot", ct.slot)
}

// Stop stops the workers and closes the server's fds, leaving the mount
// for a successor to adopt (through dups of Held). Views are not served
// until then: their readers wait.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		// Wakes the workers waiting for a request; one serving a
		// request answers it first.
		unix.Write(s.stopFd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		s.wg.Wait()
		s.fdMu.Lock()
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
		if s.j != nil {
			s.j.close()
		}
		unix.Close(s.stopFd)
		s.fdMu.Unlock()
	})
}

// Unmount tears the views down: the mount is detached, its connection
// aborted (copies of it elsewhere, as containers' bind mounts, fail from
// then on instead of waiting for a server) and the server stopped.
func (s *Server) Unmount() {
	s.detach()
	s.Stop()
}

func (s *Server) detach() {
	dev, devErr := mountDev(s.root)
	if err := unix.Unmount(s.root, unix.MNT_DETACH); err != nil {
		s.log.Warn("views: unmount", "dir", s.root, "error", err)
	}
	if devErr != nil {
		s.log.Warn("views: FUSE connection not aborted", "error", devErr)
		return
	}
	if err := abortConn(dev); err != nil {
		s.log.Debug("views: abort FUSE connection", "error", err)
	}
}

// mountDev finds the device of the views mount in mountinfo (a stat would
// ask the server, which may be gone).
func mountDev(root string) (uint64, error) {
	ents, err := mountinfo.Read("/proc/self/mountinfo")
	if err != nil {
		return 0, err
	}
	for i := len(ents) - 1; i >= 0; i-- {
		if e := ents[i]; e.Mountpoint == root && strings.HasPrefix(e.FSType, "fuse") {
			return unix.Mkdev(e.Major, e.Minor), nil
		}
	}
	return 0, fmt.Errorf("no FUSE mount at %s", root)
}

// abortConn aborts the FUSE connection of device dev through a private,
// detached fusectl mount: reads on /dev/fuse then fail with ENODEV and the
// server's loops end even while other mount namespaces hold the superblock.
func abortConn(dev uint64) error {
	fsfd, err := unix.Fsopen("fusectl", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen fusectl: %w", err)
	}
	defer unix.Close(fsfd)
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("fusectl create: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount fusectl: %w", err)
	}
	defer unix.Close(mfd)
	// fusectl names a connection by the kernel's dev_t encoding.
	name := fmt.Sprintf("%d/abort", unix.Major(dev)<<20|unix.Minor(dev))
	fd, err := unix.Openat(mfd, name, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open fusectl %s: %w", name, err)
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("1"))
	return err
}
