// Package viewfs serves each container's /proc and /sys views from a FUSE
// filesystem of its own, mounted at <run-dir>/views/<id>. The runtime
// bind-mounts the files over the container's /proc/<file> and
// /sys/devices/system/cpu/online.
//
// Every file is opened with FOPEN_DIRECT_IO and its whole content is rendered
// at open, so reads at any offset come from one snapshot and the kernel
// caches nothing between opens.
package viewfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/supervisor/cgroup"
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

// servedFiles lists the read-only views of a container's mount: the ones
// the host has, and product_uuid for a container (rendered from its id, not
// from a host file). Without a container (c nil) only the host's files.
func servedFiles(withContainer bool) []string {
	out := AvailableFiles()
	if withContainer && !slices.Contains(out, productUUID) {
		out = append(out, productUUID)
	}
	return out
}

// Container is what rendering needs of a container; *registry.Container
// implements it. Its methods are read at every open, so the views follow
// the record (init's start and cgroups arrive after the mount).
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
	// owns its sysctl files.
	RootIDs() (uint32, uint32)
	// InitPid is the container's init (0 before it registered): its user
	// namespace is the one a sysctl writer's capabilities must be in.
	InitPid() int
}

// Dir is where the views of id are mounted.
func Dir(runDir, id string) string { return filepath.Join(runDir, "views", id) }

// Manager owns the views mounts: one FUSE server per container.
type Manager struct {
	runDir string
	log    hclog.Logger

	mu     sync.Mutex
	mounts map[string]*mount
	closed bool
}

type mount struct {
	dir    string
	server *fuse.Server
}

// NewManager removes mounts a previous sysvisord left behind under
// <run-dir>/views (their FUSE connections died with it) and returns a
// manager.
func NewManager(runDir string, log hclog.Logger) (*Manager, error) {
	root := filepath.Join(runDir, "views")
	if err := os.MkdirAll(root, 0o711); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		dir := filepath.Join(root, e.Name())
		for unix.Unmount(dir, unix.MNT_DETACH) == nil {
		}
		if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
			log.Warn("stale views directory left in place", "dir", dir, "error", err)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("FUSE unavailable: %w", err)
	}
	return &Manager{runDir: runDir, log: log, mounts: map[string]*mount{}}, nil
}

// Mount serves the views of container c, named id (idempotent: a retried
// create gets the same mount), and returns the directory they are under. A
// nil c gets the host's files.
func (m *Manager) Mount(id string, c Container) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", errors.New("views: shutting down")
	}
	if mt, ok := m.mounts[id]; ok {
		return mt.dir, nil
	}
	dir := Dir(m.runDir, id)
	if err := os.Mkdir(dir, 0o711); err != nil && !os.IsExist(err) {
		return "", err
	}
	root := &dirNode{}
	sysctls, files := Sysctls(), servedFiles(c != nil)
	root.build = func(ctx context.Context) {
		add := func(name string, node fs.InodeEmbedder) {
			parent := &root.Inode
			parts := strings.Split(name, "/")
			for _, p := range parts[:len(parts)-1] {
				ch := parent.GetChild(p)
				if ch == nil {
					ch = parent.NewPersistentInode(ctx, &dirNode{}, fs.StableAttr{Mode: syscall.S_IFDIR})
					parent.AddChild(p, ch, false)
				}
				parent = ch
			}
			parent.AddChild(parts[len(parts)-1], parent.NewPersistentInode(ctx, node, fs.StableAttr{Mode: syscall.S_IFREG}), false)
		}
		for _, name := range files {
			add(name, &fileNode{id: id, name: name, c: c, log: m.log})
		}
		if c == nil {
			return // no record to keep values in: host files only
		}
		for _, s := range sysctls {
			add(sysctlView(s), &sysctlNode{id: id, s: s, c: c, log: m.log})
		}
	}
	// The tree never changes: the kernel caches names and attributes (see
	// attrTimeout).
	long := time.Hour
	attrs := attrTimeout
	opts := &fs.Options{
		EntryTimeout: &long, AttrTimeout: &attrs, NegativeTimeout: &long,
		MountOptions: fuse.MountOptions{
			// The kernel checks modes itself: no ACCESS round trips.
			Options: []string{"default_permissions"},
			// Container processes are other host users.
			AllowOther:        true,
			DirectMountStrict: true,
			FsName:            "sysvisor-views",
			Name:              "sysvisor",
			DisableXAttrs:     true,
			MaxBackground:     64,
		},
	}
	guard := &spliceGuard{RawFileSystem: fs.NewNodeFS(root, opts)}
	srv, err := fuse.NewServer(guard, dir, &opts.MountOptions)
	if err == nil {
		guard.srv = srv
		go srv.Serve()
		if err = srv.WaitMount(); err != nil {
			srv.Unmount()
		}
	}
	if err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("mount views at %s: %w", dir, err)
	}
	m.mounts[id] = &mount{dir: dir, server: srv}
	m.log.Debug("views mounted", "container", id, "dir", dir)
	return dir, nil
}

// Unmount stops serving id's views. The connection is aborted, so copies of
// the mount elsewhere (a container still holding its bind mounts) cannot
// keep the server's goroutines alive.
func (m *Manager) Unmount(id string) {
	m.mu.Lock()
	mt, ok := m.mounts[id]
	delete(m.mounts, id)
	m.mu.Unlock()
	if ok {
		m.teardown(id, mt)
	}
}

// Close unmounts every view; Mount fails afterwards.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	all := m.mounts
	m.mounts = map[string]*mount{}
	m.mu.Unlock()
	for id, mt := range all {
		m.teardown(id, mt)
	}
}

func (m *Manager) teardown(id string, mt *mount) {
	var st unix.Stat_t
	statErr := unix.Lstat(mt.dir, &st)
	if err := unix.Unmount(mt.dir, unix.MNT_DETACH); err != nil {
		m.log.Warn("views: unmount", "container", id, "dir", mt.dir, "error", err)
	}
	if statErr == nil {
		if err := abortConn(st.Dev); err != nil {
			m.log.Debug("views: abort FUSE connection", "container", id, "error", err)
		}
	}
	done := make(chan struct{})
	go func() { mt.server.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		m.log.Error("views: FUSE server did not stop; its goroutines leak", "container", id)
	}
	if err := os.Remove(mt.dir); err != nil && !os.IsNotExist(err) {
		m.log.Warn("views: remove mount point", "dir", mt.dir, "error", err)
	}
	m.log.Debug("views unmounted", "container", id)
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

// spliceGuard keeps splice reads of the views whole while the kernel caches
// their attributes. A read(2) of a view is direct I/O and ignores i_size, but
// a splice read (sendfile) goes through the page cache and stops at i_size,
// and when a page-cache read comes back short, as it does at the end of every
// view, the kernel sets i_size to where the content ended. That shrink is
// what keeps the zeros after the content out of the reader's hands, but with
// the attributes cached the next splice read, of a longer rendering, would
// stop at the old end. So the guard notes each short page-cache read (the
// kernel marks its direct reads with FUSE_READ_LOCKOWNER, page-cache reads
// go without) and, at the node's next open, before answering it, gives the
// size back sizeSlack of room by storing one byte at that offset in the
// page cache: a store only ever grows i_size, and the open drops the page
// again (no FOPEN_KEEP_CACHE).
type spliceGuard struct {
	fuse.RawFileSystem
	srv *fuse.Server
	// shrunk maps a node id to the size the kernel cut its i_size to.
	shrunk sync.Map
}

func (g *spliceGuard) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	res, st := g.RawFileSystem.Read(cancel, in, buf)
	if st == fuse.OK && in.ReadFlags&fuse.READ_LOCKOWNER == 0 && res.Size() < int(in.Size) {
		g.shrunk.Store(in.NodeId, int64(in.Offset)+int64(res.Size()))
	}
	return res, st
}

func (g *spliceGuard) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if end, ok := g.shrunk.LoadAndDelete(in.NodeId); ok {
		g.srv.InodeNotifyStoreCache(in.NodeId, end.(int64)+sizeSlack-1, []byte{'\n'})
	}
	return g.RawFileSystem.Open(cancel, in, out)
}

type dirNode struct {
	fs.Inode
	build func(context.Context)
}

var _ fs.NodeOnAdder = (*dirNode)(nil)
var _ fs.NodeGetattrer = (*dirNode)(nil)

func (d *dirNode) OnAdd(ctx context.Context) {
	if d.build != nil {
		d.build(ctx)
	}
}

// Getattr: directories never change, so the kernel may keep their
// attributes (the mount's default timeout, 0, is for the files).
func (d *dirNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	out.SetTimeout(time.Hour)
	return 0
}

type fileNode struct {
	fs.Inode
	id, name string
	c        Container
	log      hclog.Logger
	// lastLen is the length of the latest rendering, for Getattr.
	lastLen atomic.Int64
}

var _ fs.NodeOpener = (*fileNode)(nil)
var _ fs.NodeGetattrer = (*fileNode)(nil)

// sizeSlack is added to the size Getattr reports, so content that grew a
// little since the rendering the size comes from is not cut by a splice read.
const sizeSlack = 256

// attrTimeout is how long the kernel may keep a view's attributes. Of them
// only the size changes, and it only matters to splice reads (see
// spliceGuard); a read(2) ignores it. Keeping them saves the GETATTR an open
// would otherwise send, a quarter of an open+read+close; a second bounds how
// far a rendering can outgrow the size the kernel holds.
const attrTimeout = time.Second

// Getattr reports the size of the latest rendering (the open file's own, on
// fstat) plus sizeSlack. procfs reports 0, but a FUSE file's splice_read
// (sendfile, as busybox cat uses) goes through the page cache and stops at
// i_size: size 0 would read as empty. Getattr does not render, except before
// the first rendering.
func (n *fileNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o444
	if n.name == productUUID {
		out.Mode = syscall.S_IFREG | 0o400 // the kernel's: root only
	}
	out.Nlink = 1
	if n.c != nil {
		// The kernel's files are root's; inside, that is the
		// container's root (host root would show as nobody).
		out.Uid, out.Gid = n.c.RootIDs()
	}
	// procfs and sysfs show about the time of the look; 1970 stands out.
	now := time.Now()
	out.SetTimes(&now, &now, &now)
	size, ok := int64(0), false
	if h, isH := f.(*handle); isH {
		size, ok = h.size()
	}
	if !ok {
		if size = n.lastLen.Load(); size == 0 {
			if data, err := Render(n.c, n.name); err == nil {
				size = int64(len(data))
				n.lastLen.Store(size)
			}
		}
	}
	out.Size = uint64(size + sizeSlack)
	out.SetTimeout(attrTimeout)
	return 0
}

func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EACCES
	}
	return &handle{render: n.render}, fuse.FOPEN_DIRECT_IO, 0
}

func (n *fileNode) render() ([]byte, error) {
	data, err := Render(n.c, n.name)
	if err != nil {
		n.log.Warn("views: render", "container", n.id, "file", n.name, "error", err)
		return nil, err
	}
	n.lastLen.Store(int64(len(data)))
	return data, nil
}

// handle is one open file. A read at offset 0 renders the content (every
// such read: a reader that keeps the file open and reads it again from the
// start, as procps does with /proc/meminfo and /proc/stat, sees fresh values,
// as seq_file gives them), and reads at later offsets continue that
// rendering, so one pass through the file reads one snapshot.
type handle struct {
	render func() ([]byte, error)

	mu       sync.Mutex
	data     []byte
	rendered bool
}

var _ fs.FileReader = (*handle)(nil)
var _ fs.FileFlusher = (*handle)(nil)

// Flush answers ENOSYS, which tells the kernel never to send FLUSH again on
// this mount: one round trip less per close.
func (h *handle) Flush(ctx context.Context) syscall.Errno { return syscall.ENOSYS }

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if off == 0 || !h.rendered {
		data, err := h.render()
		if err != nil {
			return nil, syscall.EIO
		}
		h.data, h.rendered = data, true
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	// h.data is replaced, never changed in place, by the next rendering:
	// the reply may hold on to it.
	return fuse.ReadResultData(h.data[off:end]), 0
}

// size is the length of the open file's rendering, if it has one.
func (h *handle) size() (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return int64(len(h.data)), h.rendered
}
