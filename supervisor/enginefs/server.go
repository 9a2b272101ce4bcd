package enginefs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

type impl struct {
	dir  string
	srv  *fuse.Server
	root *rootNode
	log  hclog.Logger

	mu   sync.Mutex
	ctrs map[string]*ctr
	slot uint64
}

// rootNode lists the containers. Only root reaches the mount (no
// allow_other), and only sysvisord binds from it.
type rootNode struct {
	fs.Inode
	prime atomic.Pointer[primer]
}

var (
	_ = (fs.NodeGetattrer)((*rootNode)(nil))
	_ = (fs.NodeLookuper)((*rootNode)(nil))
)

// primePrefix names the lookups primeReaders holds in flight together.
const primePrefix = ".sysvisor-prime-"

// primer holds lookups of primePrefix names until n are in flight.
type primer struct {
	n       int
	mu      sync.Mutex
	waiting int
	release chan struct{}
}

func (p *primer) wait() {
	p.mu.Lock()
	p.waiting++
	if p.waiting == p.n {
		close(p.release)
	}
	p.mu.Unlock()
	select {
	case <-p.release:
	case <-time.After(2 * time.Second):
	}
}

// Lookup finds a container's directory, put in the tree by add; the
// priming names wait for each other (see primeReaders).
func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if ch := r.GetChild(name); ch != nil {
		if n, ok := ch.Operations().(*node); ok {
			var a fuse.AttrOut
			if n.Getattr(ctx, nil, &a) == 0 {
				out.Attr = a.Attr
			}
		}
		return ch, 0
	}
	if p := r.prime.Load(); p != nil && strings.HasPrefix(name, primePrefix) {
		p.wait()
	}
	return nil, syscall.ENOENT
}

func (r *rootNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = unix.S_IFDIR | 0o700
	return 0
}

func mount(dir string, log hclog.Logger) (*Server, error) {
	// A sysvisord that died left its mount here, dead (ENOTCONN, which
	// also fails the mkdir below); binds of it at engine paths are
	// replaced one by one as containers are adopted.
	for i := 0; i < 16; i++ {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("engine views %s: %w", dir, err)
	}
	s := &Server{impl{dir: dir, root: &rootNode{}, log: log, ctrs: map[string]*ctr{}}}
	zero := time.Duration(0)
	opts := &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName: FSName,
			Name:   FSName,
			// mount(2) as root, no fusermount helper.
			DirectMountStrict: true,
			// The kernel checks the caller against the (translated)
			// attributes; host root passes, as on the engine's overlay.
			Options: []string{"default_permissions"},
			// Each idle reader keeps a buffer of this size: 128 KiB
			// (the kernel's own read-ahead) is plenty for the
			// engine's copies.
			MaxWrite:     128 << 10,
			MaxReadAhead: 128 << 10,
		},
		// The container changes its tree behind our back: the kernel
		// asks again every time rather than trust a cached entry.
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		// Never let a caller's umask or the kernel's cached owner
		// decide: attributes come from the container's files.
		NullPermissions: true,
	}
	srv, err := fs.Mount(dir, s.root, opts)
	if err != nil {
		return nil, fmt.Errorf("engine views: mount %s: %w", dir, err)
	}
	s.srv = srv
	s.primeReaders()
	return s, nil
}

// primeReaders brings go-fuse's reader goroutines to their most at once.
// go-fuse starts a reader whenever the last idle one takes a request, and
// keeps up to GOMAXPROCS+1 (at least 3) idle for good: left alone, their
// number (each with a MaxWrite buffer) would grow with the first
// concurrent requests an engine makes, long after start, and sysvisord's
// goroutines and heap would not be back where they were after a busy
// phase. Held in flight together, that many lookups leave exactly that
// many readers.
func (s *impl) primeReaders() {
	n := max(runtime.GOMAXPROCS(0), 2) + 1
	s.root.prime.Store(&primer{n: n, release: make(chan struct{})})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Distinct names: lookups of one name wait for each other
			// in the kernel.
			os.Lstat(filepath.Join(s.dir, primePrefix+strconv.Itoa(i)))
		}()
	}
	wg.Wait()
	s.root.prime.Store(nil)
}

func (s *impl) unmount() error {
	s.mu.Lock()
	for id, c := range s.ctrs {
		c.close()
		delete(s.ctrs, id)
	}
	s.mu.Unlock()
	// Detached, not waited for: binds at running containers' engine paths
	// keep the connection, and go-fuse's readers, until sysvisord exits
	// and the kernel ends the connection with its last fd. Without binds
	// the connection ends now.
	if err := unix.Unmount(s.dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("engine views: unmount %s: %w", s.dir, err)
	}
	return nil
}

// validID refuses what could not be one directory name on the mount.
func validID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") || len(id) > 255 || strings.HasPrefix(id, primePrefix) {
		return fmt.Errorf("engine views: bad container id %q", id)
	}
	return nil
}

func (s *impl) add(id, rootfs string, base uint32) (string, error) {
	if err := validID(id); err != nil {
		return "", err
	}
	if base == 0 || uint64(base)+idRange > 1<<32 {
		return "", fmt.Errorf("engine views: container %s: bad base ID %d", id, base)
	}
	fd, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("engine views: container %s: open rootfs %s: %w", id, rootfs, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.ctrs[id]; old != nil {
		old.close()
	}
	s.slot++
	c := &ctr{id: id, slot: s.slot, rootfd: fd, base: base}
	n := &node{c: c}
	ch := s.root.NewPersistentInode(context.Background(), n, fs.StableAttr{Mode: unix.S_IFDIR, Ino: c.ino(0)})
	c.root = ch
	s.root.AddChild(id, ch, true)
	s.ctrs[id] = c
	return s.dir + "/" + id, nil
}

func (s *impl) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.ctrs[id]
	if c == nil {
		return
	}
	c.close()
	delete(s.ctrs, id)
	s.root.RmChild(id)
}

// idRange is the size of every container's ID range.
const idRange = 65536

// overflowID is what the kernel shows for an ID outside a mapping.
const overflowID = 65534

// ctr is one container's tree.
type ctr struct {
	id   string
	slot uint64
	base uint32
	root *fs.Inode

	// mu keeps rootfd open while an operation uses it: remove closes it
	// under the write lock. Per container: containers never wait on
	// each other.
	mu     sync.RWMutex
	rootfd int
}

func (c *ctr) close() {
	c.mu.Lock()
	if c.rootfd >= 0 {
		unix.Close(c.rootfd)
		c.rootfd = -1
	}
	c.mu.Unlock()
}

// ino makes inode numbers unique across containers on the one mount,
// while a hard link keeps one number within a container (tar finds
// links by it). Numbers too large to fit get an automatic one (0).
func (c *ctr) ino(real uint64) uint64 {
	if real >= 1<<40 || c.slot >= 1<<23 {
		return 0
	}
	return c.slot<<40 | real
}

// toEngine translates a host ID of the container's overlay to the ID on
// disk, as the engine sees a runc container's files.
func (c *ctr) toEngine(id uint32) uint32 {
	if id >= c.base && id-c.base < idRange {
		return id - c.base
	}
	return overflowID
}

// toHost translates an ID the engine asks for to the host ID in the
// container's range. IDs beyond the range cannot be represented.
func (c *ctr) toHost(id uint32) (uint32, bool) {
	if id >= idRange {
		return 0, false
	}
	return c.base + id, true
}

func (c *ctr) fillAttr(st *unix.Stat_t, a *fuse.Attr) {
	var sst syscall.Stat_t
	sst.Ino = st.Ino
	sst.Size = st.Size
	sst.Blocks = st.Blocks
	sst.Atim = syscall.Timespec(st.Atim)
	sst.Mtim = syscall.Timespec(st.Mtim)
	sst.Ctim = syscall.Timespec(st.Ctim)
	sst.Mode = st.Mode
	sst.Nlink = st.Nlink
	sst.Uid = c.toEngine(st.Uid)
	sst.Gid = c.toEngine(st.Gid)
	sst.Rdev = st.Rdev
	sst.Blksize = st.Blksize
	a.FromStat(&sst)
	if ino := c.ino(st.Ino); ino != 0 {
		a.Ino = ino
	}
}

// errno turns a Go error from unix calls into an Errno for the kernel.
func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
