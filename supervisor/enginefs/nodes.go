package enginefs

import (
	"context"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is a file or directory of one container's tree. It keeps no fd:
// every operation resolves the node's path again inside the container's
// root, so the kernel's cached nodes cost the server memory, not fds.
type node struct {
	fs.Inode
	c *ctr
}

var (
	_ = (fs.NodeLookuper)((*node)(nil))
	_ = (fs.NodeGetattrer)((*node)(nil))
	_ = (fs.NodeSetattrer)((*node)(nil))
	_ = (fs.NodeReadlinker)((*node)(nil))
	_ = (fs.NodeOpener)((*node)(nil))
	_ = (fs.NodeCreater)((*node)(nil))
	_ = (fs.NodeMkdirer)((*node)(nil))
	_ = (fs.NodeMknoder)((*node)(nil))
	_ = (fs.NodeSymlinker)((*node)(nil))
	_ = (fs.NodeLinker)((*node)(nil))
	_ = (fs.NodeUnlinker)((*node)(nil))
	_ = (fs.NodeRmdirer)((*node)(nil))
	_ = (fs.NodeRenamer)((*node)(nil))
	_ = (fs.NodeReaddirer)((*node)(nil))
	_ = (fs.NodeStatfser)((*node)(nil))
	_ = (fs.NodeGetxattrer)((*node)(nil))
	_ = (fs.NodeSetxattrer)((*node)(nil))
	_ = (fs.NodeListxattrer)((*node)(nil))
	_ = (fs.NodeRemovexattrer)((*node)(nil))
	_ = (fs.NodeStatxer)((*node)(nil))
)

// resolveFlags keep a walk inside the container's root whatever its
// symlinks say ("/" and ".." stop at the root) and refuse procfs magic
// links, which would lead out of it.
const resolveFlags = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// rel is the node's path below the container's root, "" for the root. A
// node cut off from the root (its directory was removed through the
// mount) is stale.
func (n *node) rel() (string, syscall.Errno) {
	var parts []string
	in := n.EmbeddedInode()
	for in != n.c.root {
		name, parent := in.Parent()
		if parent == nil {
			return "", syscall.ESTALE
		}
		parts = append(parts, name)
		in = parent
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/"), 0
}

// held runs fn with the container's root fd, which stays open meanwhile.
func (c *ctr) held(fn func(root int) syscall.Errno) syscall.Errno {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.rootfd < 0 {
		return syscall.ESTALE
	}
	return fn(c.rootfd)
}

// openIn opens rel inside the root. The last component is not followed
// when flags hold O_NOFOLLOW.
func openIn(root int, rel string, flags uint64) (int, syscall.Errno) {
	if rel == "" {
		rel = "."
	}
	for {
		fd, err := unix.Openat2(root, rel, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: resolveFlags})
		if err == unix.EAGAIN || err == unix.EINTR {
			// RESOLVE_IN_ROOT answers EAGAIN when a rename raced the
			// walk; the walk is safe to repeat.
			continue
		}
		return fd, errno(err)
	}
}

// at gives the directory fd and name by which the node's final component
// is reached; the root is reached as "." of itself. The caller closes fd.
func (n *node) at(fn func(dir int, name string) syscall.Errno) syscall.Errno {
	rel, e := n.rel()
	if e != 0 {
		return e
	}
	return n.c.held(func(root int) syscall.Errno {
		dirRel, name := "", "."
		if rel != "" {
			dirRel, name = splitLast(rel)
		}
		dir, e := openIn(root, dirRel, unix.O_PATH|unix.O_DIRECTORY)
		if e != 0 {
			return e
		}
		defer unix.Close(dir)
		return fn(dir, name)
	})
}

// dir opens the node itself as a directory (O_PATH) to create or look up
// a child in.
func (n *node) dir(fn func(dir int) syscall.Errno) syscall.Errno {
	rel, e := n.rel()
	if e != 0 {
		return e
	}
	return n.c.held(func(root int) syscall.Errno {
		d, e := openIn(root, rel, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW)
		if e != 0 {
			return e
		}
		defer unix.Close(d)
		return fn(d)
	})
}

func splitLast(rel string) (string, string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// pinned opens dir/name itself (O_PATH, never followed) and gives fn the
// fd and its stat; fn acts on that exact inode, whatever is renamed
// meanwhile.
func pinned(dir int, name string, fn func(fd int, st *unix.Stat_t) syscall.Errno) syscall.Errno {
	fd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return errno(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstatat(fd, "", &st, unix.AT_EMPTY_PATH); err != nil {
		return errno(err)
	}
	return fn(fd, &st)
}

// reopen opens the inode an O_PATH fd pins with real access. Through
// /proc/self/fd the kernel goes to that inode and nowhere else; only
// regular files and directories are opened (a device or FIFO of the
// container's is never opened by host root).
func reopen(fd int, st *unix.Stat_t, flags int) (int, syscall.Errno) {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
	default:
		return -1, syscall.EACCES
	}
	f, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), flags|unix.O_CLOEXEC, 0)
	return f, errno(err)
}

// child makes the inode for a directory entry just looked up or made.
func (n *node) child(ctx context.Context, st *unix.Stat_t, out *fuse.EntryOut) *fs.Inode {
	n.c.fillAttr(st, &out.Attr)
	ch := &node{c: n.c}
	return n.NewInode(ctx, ch, fs.StableAttr{Mode: st.Mode & unix.S_IFMT, Ino: n.c.ino(st.Ino)})
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var st unix.Stat_t
	e := n.dir(func(d int) syscall.Errno {
		return errno(unix.Fstatat(d, name, &st, unix.AT_SYMLINK_NOFOLLOW))
	})
	if e != 0 {
		return nil, e
	}
	return n.child(ctx, &st, out), 0
}

func (n *node) stat(f fs.FileHandle, st *unix.Stat_t) syscall.Errno {
	if fh, ok := f.(*file); ok {
		return errno(unix.Fstat(fh.fd(), st))
	}
	return n.at(func(dir int, name string) syscall.Errno {
		return errno(unix.Fstatat(dir, name, st, unix.AT_SYMLINK_NOFOLLOW))
	})
}

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st unix.Stat_t
	if e := n.stat(f, &st); e != 0 {
		return e
	}
	n.c.fillAttr(&st, &out.Attr)
	return 0
}

// Statx is refused so the kernel falls back to GETATTR, which translates
// IDs (go-fuse's file handles would answer statx untranslated).
func (n *node) Statx(ctx context.Context, f fs.FileHandle, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return syscall.ENOSYS
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	hu, hg := -1, -1
	if uok {
		h, ok := n.c.toHost(uid)
		if !ok {
			return syscall.EINVAL
		}
		hu = int(h)
	}
	if gok {
		h, ok := n.c.toHost(gid)
		if !ok {
			return syscall.EINVAL
		}
		hg = int(h)
	}
	e := n.at(func(dir int, name string) syscall.Errno {
		return pinned(dir, name, func(fd int, st *unix.Stat_t) syscall.Errno {
			if mode, ok := in.GetMode(); ok {
				if st.Mode&unix.S_IFMT == unix.S_IFLNK {
					return syscall.EOPNOTSUPP
				}
				// The procfs path of a pinned non-symlink names
				// that inode alone.
				if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), mode&0o7777); err != nil {
					return errno(err)
				}
			}
			if hu >= 0 || hg >= 0 {
				if err := unix.Fchownat(fd, "", hu, hg, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
					return errno(err)
				}
			}
			if size, ok := in.GetSize(); ok {
				if fh, ok := f.(*file); ok {
					if err := unix.Ftruncate(fh.fd(), int64(size)); err != nil {
						return errno(err)
					}
				} else {
					if st.Mode&unix.S_IFMT != unix.S_IFREG {
						return syscall.EINVAL
					}
					w, e := reopen(fd, st, unix.O_WRONLY)
					if e != 0 {
						return e
					}
					err := unix.Ftruncate(w, int64(size))
					unix.Close(w)
					if err != nil {
						return errno(err)
					}
				}
			}
			return 0
		})
	})
	if e == 0 {
		e = n.at(func(dir int, name string) syscall.Errno {
			return setTimes(dir, name, in)
		})
	}
	if e != 0 {
		return e
	}
	return n.Getattr(ctx, f, out)
}

// setTimes applies SETATTR's times, never following the final component.
func setTimes(dir int, name string, in *fuse.SetAttrIn) syscall.Errno {
	atime, aok := in.GetATime()
	mtime, mok := in.GetMTime()
	if !aok && !mok {
		return 0
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if aok {
		ts[0] = unix.NsecToTimespec(atime.UnixNano())
		if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
			ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
		}
	}
	if mok {
		ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
			ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
		}
	}
	return errno(unix.UtimesNanoAt(dir, name, ts, unix.AT_SYMLINK_NOFOLLOW))
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	var out []byte
	e := n.at(func(dir int, name string) syscall.Errno {
		buf := make([]byte, unix.PathMax)
		m, err := unix.Readlinkat(dir, name, buf)
		if err != nil {
			return errno(err)
		}
		out = buf[:m]
		return 0
	})
	return out, e
}

// openFlags keeps what a reopen may carry: creation and link-following
// were decided already.
func openFlags(flags uint32) int {
	return int(flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_NOFOLLOW | unix.O_PATH)
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	var fh fs.FileHandle
	e := n.at(func(dir int, name string) syscall.Errno {
		return pinned(dir, name, func(fd int, st *unix.Stat_t) syscall.Errno {
			if st.Mode&unix.S_IFMT != unix.S_IFREG {
				return syscall.EACCES
			}
			f, e := reopen(fd, st, openFlags(flags))
			if e != 0 {
				return e
			}
			fh = newFile(f, n.c)
			return 0
		})
	})
	return fh, 0, e
}

// caller is the requester's IDs as they will be on the container's files.
func (n *node) caller(ctx context.Context) (uint32, uint32, syscall.Errno) {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return 0, 0, syscall.EIO
	}
	u, uok := n.c.toHost(c.Uid)
	g, gok := n.c.toHost(c.Gid)
	if !uok || !gok {
		return 0, 0, syscall.EPERM
	}
	return u, g, 0
}

// made stats what was just made in dir and returns its inode.
func (n *node) made(ctx context.Context, dir int, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, &st, out), 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	u, g, e := n.caller(ctx)
	if e != 0 {
		return nil, nil, 0, e
	}
	var ch *fs.Inode
	var fh fs.FileHandle
	e = n.dir(func(d int) syscall.Errno {
		var fd int
		e := asOwner(u, g, func() error {
			var err error
			// O_NONBLOCK: an existing FIFO of that name must not
			// block us; O_NOFOLLOW: nor a symlink lead elsewhere.
			fd, err = unix.Openat(d, name, openFlags(flags)|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|int(flags&unix.O_EXCL), mode&0o7777)
			return err
		})
		if e != 0 {
			return e
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			unix.Close(fd)
			if err != nil {
				return errno(err)
			}
			return syscall.EEXIST
		}
		if flags&unix.O_NONBLOCK == 0 {
			if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil {
				unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
			}
		}
		n.c.fillAttr(&st, &out.Attr)
		ch = n.NewInode(ctx, &node{c: n.c}, fs.StableAttr{Mode: unix.S_IFREG, Ino: n.c.ino(st.Ino)})
		fh = newFile(fd, n.c)
		return 0
	})
	return ch, fh, 0, e
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.make(ctx, name, out, func(d int) error { return unix.Mkdirat(d, name, mode&0o7777) })
}

// Mknod makes FIFOs and sockets. Device nodes are refused: a node made
// by host root in the container's tree would reach a host device.
func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFREG:
	default:
		return nil, syscall.EPERM
	}
	return n.make(ctx, name, out, func(d int) error { return unix.Mknodat(d, name, mode, 0) })
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.make(ctx, name, out, func(d int) error { return unix.Symlinkat(target, d, name) })
}

// make runs mk as the caller's owner in the container, then returns the
// new entry's inode.
func (n *node) make(ctx context.Context, name string, out *fuse.EntryOut, mk func(dir int) error) (*fs.Inode, syscall.Errno) {
	u, g, e := n.caller(ctx)
	if e != 0 {
		return nil, e
	}
	var ch *fs.Inode
	e = n.dir(func(d int) syscall.Errno {
		if e := asOwner(u, g, func() error { return mk(d) }); e != 0 {
			return e
		}
		var e syscall.Errno
		ch, e = n.made(ctx, d, name, out)
		return e
	})
	return ch, e
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok || t.c != n.c {
		return nil, syscall.EXDEV
	}
	var ch *fs.Inode
	e := t.at(func(tdir int, tname string) syscall.Errno {
		return n.dir(func(d int) syscall.Errno {
			// No AT_SYMLINK_FOLLOW: a symlink is linked, not its target.
			if err := unix.Linkat(tdir, tname, d, name, 0); err != nil {
				return errno(err)
			}
			var e syscall.Errno
			ch, e = n.made(ctx, d, name, out)
			return e
		})
	})
	return ch, e
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.dir(func(d int) syscall.Errno { return errno(unix.Unlinkat(d, name, 0)) })
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.dir(func(d int) syscall.Errno { return errno(unix.Unlinkat(d, name, unix.AT_REMOVEDIR)) })
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok || np.c != n.c {
		return syscall.EXDEV
	}
	return n.dir(func(d int) syscall.Errno {
		return np.dir(func(nd int) syscall.Errno {
			return errno(unix.Renameat2(d, name, nd, newName, uint(flags)))
		})
	})
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	rel, e := n.rel()
	if e != 0 {
		return nil, e
	}
	var ds fs.DirStream
	e = n.c.held(func(root int) syscall.Errno {
		fd, e := openIn(root, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
		if e != 0 {
			return e
		}
		ds, e = fs.NewLoopbackDirStreamFd(fd)
		if e != 0 {
			unix.Close(fd)
		}
		return e
	})
	return ds, e
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return n.c.held(func(root int) syscall.Errno {
		var st syscall.Statfs_t
		if err := syscall.Fstatfs(root, &st); err != nil {
			return errno(err)
		}
		out.FromStatfsT(&st)
		return 0
	})
}

// xattr runs fn on the node reopened read-only. Symlinks carry no
// extended attributes the engine needs (user.* is refused on them).
func (n *node) xattr(onSymlink syscall.Errno, fn func(fd int) syscall.Errno) syscall.Errno {
	return n.at(func(dir int, name string) syscall.Errno {
		return pinned(dir, name, func(fd int, st *unix.Stat_t) syscall.Errno {
			if st.Mode&unix.S_IFMT == unix.S_IFLNK {
				return onSymlink
			}
			f, e := reopen(fd, st, unix.O_RDONLY)
			if e != 0 {
				return syscall.ENODATA
			}
			defer unix.Close(f)
			return fn(f)
		})
	})
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	var sz int
	e := n.xattr(syscall.ENODATA, func(fd int) syscall.Errno {
		var err error
		sz, err = unix.Fgetxattr(fd, attr, dest)
		return errno(err)
	})
	return uint32(sz), e
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var sz int
	e := n.xattr(0, func(fd int) syscall.Errno {
		var err error
		sz, err = unix.Flistxattr(fd, dest)
		return errno(err)
	})
	return uint32(sz), e
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.xattr(syscall.EPERM, func(fd int) syscall.Errno {
		return errno(unix.Fsetxattr(fd, attr, data, int(flags)))
	})
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.xattr(syscall.EPERM, func(fd int) syscall.Errno {
		return errno(unix.Fremovexattr(fd, attr))
	})
}
