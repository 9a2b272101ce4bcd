package enginefs

import (
	"context"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// file is an open file of a container's tree. go-fuse's loopback file
// does the I/O; what shows or sets owners is answered here, translated.
type file struct {
	*fs.LoopbackFile
	raw int
	c   *ctr
}

var (
	_ = (fs.FileGetattrer)((*file)(nil))
	_ = (fs.FileSetattrer)((*file)(nil))
	_ = (fs.FileStatxer)((*file)(nil))
	_ = (fs.FileIoctler)((*file)(nil))
	_ = (fs.FilePassthroughFder)((*file)(nil))
)

func newFile(fd int, c *ctr) *file {
	return &file{LoopbackFile: fs.NewLoopbackFileFromOS(os.NewFile(uintptr(fd), "")), raw: fd, c: c}
}

func (f *file) fd() int { return f.raw }

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	var st unix.Stat_t
	if err := unix.Fstat(f.raw, &st); err != nil {
		return errno(err)
	}
	f.c.fillAttr(&st, &out.Attr)
	return 0
}

// Setattr goes through the node (see node.Setattr), which translates IDs;
// the kernel sends SETATTR to the node with this handle.
func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.ENOSYS
}

func (f *file) Statx(ctx context.Context, flags, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return syscall.ENOSYS
}

// Ioctl: the engine has no need of ioctls on the container's files, and
// host root's ioctls should not reach them.
func (f *file) Ioctl(ctx context.Context, cmd uint32, arg uint64, input, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}

func (f *file) PassthroughFd() (int, bool) { return -1, false }
