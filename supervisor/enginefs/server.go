package enginefs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
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
}

var _ = (fs.NodeGetattrer)((*rootNode)(nil))

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
			// Large writes: docker cp streams whole files.
			MaxWrite:     1 << 20,
			MaxReadAhead: 1 << 20,
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
	return s, nil
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
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") || len(id) > 255 {
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
