package viewfs

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

var errUnmounted = errors.New("FUSE connection gone (unmounted or aborted)")

// worker serves requests, each read straight into journal slot i, until
// Stop or the connection ends.
func (s *Server) worker(i int) {
	defer s.wg.Done()
	buf := s.j.slot(i)
	for {
		s.j.done(i)
		n, err := s.readRequest(buf)
		if err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, os.ErrClosed):
			case errors.Is(err, errUnmounted):
				s.log.Debug("views: worker done", "reason", err)
			default:
				s.log.Error("views: worker stopped", "error", err)
			}
			select {
			case s.fatal <- err:
			default:
			}
			return
		}
		if hook := testHookAfterRead; hook != nil && hook(buf[:n]) {
			return
		}
		s.dispatch(buf[:n])
	}
}

// readRequest reads one request into buf. The worker waits in poll(2) on
// its own thread, woken by the kernel directly (not through Go's
// netpoller and a parked goroutine), or by Stop through stopFd.
func (s *Server) readRequest(buf []byte) (int, error) {
	for {
		pfd := [2]unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}, {Fd: int32(s.stopFd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd[:], -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return 0, fmt.Errorf("poll /dev/fuse: %w", err)
		}
		if pfd[1].Revents != 0 {
			return 0, os.ErrDeadlineExceeded
		}
		n, rerr := unix.Read(s.fd, buf)
		switch rerr {
		case nil:
			return n, nil
		case unix.EAGAIN, unix.EINTR, unix.ENOENT:
			continue
		case unix.ENODEV:
			return 0, errUnmounted
		default:
			return 0, &os.PathError{Op: "read", Path: "/dev/fuse", Err: rerr}
		}
	}
}

// reply writes the answer to request unique. A reply to a request the
// kernel no longer waits for (interrupted, or answered before a restart)
// fails with ENOENT: nothing to do about it.
func (s *Server) reply(unique uint64, errno unix.Errno, payload ...[]byte) error {
	total := outHeaderSize
	for _, p := range payload {
		total += len(p)
	}
	if errno != 0 {
		total, payload = outHeaderSize, nil
	}
	iov := append([][]byte{outHeader(total, -int32(errno), unique)}, payload...)
	_, err := unix.Writev(s.fd, iov)
	if err != nil && err != unix.ENOENT {
		s.log.Warn("views: reply", "unique", unique, "error", err)
	}
	return err
}

// notify writes an unsolicited message (unique 0, the code in error). It
// runs outside the workers, so it takes fdMu against Stop closing the fd.
func (s *Server) notify(code int32, payload ...[]byte) error {
	s.fdMu.RLock()
	defer s.fdMu.RUnlock()
	if s.closed || s.fd < 0 {
		return errors.New("views: server stopped")
	}
	total := outHeaderSize
	for _, p := range payload {
		total += len(p)
	}
	_, err := unix.Writev(s.fd, append([][]byte{outHeader(total, code, 0)}, payload...))
	return err
}

// notifyInvalEntry drops the kernel's cached name in directory parent.
func (s *Server) notifyInvalEntry(parent uint64, name string) error {
	b := make([]byte, 16)
	ne.PutUint64(b[0:], parent)
	ne.PutUint32(b[8:], uint32(len(name)))
	return s.notify(notifyInvalEntry, b, append([]byte(name), 0))
}

// notifyStore puts data in node's page cache at off, growing its i_size
// to off+len(data) if smaller.
func (s *Server) notifyStore(node uint64, off int64, data []byte) error {
	b := make([]byte, 24)
	ne.PutUint64(b[0:], node)
	ne.PutUint64(b[8:], uint64(off))
	ne.PutUint32(b[16:], uint32(len(data)))
	return s.notify(notifyStore, b, data)
}

// target is the node a request is about: the root (c nil) or a node of a
// container.
type target struct {
	id uint64
	c  *ctr
	n  *tnode
}

func (s *Server) container(slot uint64) *ctr {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bySlot[slot]
}

func (s *Server) containerNamed(id string) *ctr {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.byID[id]
}

// allowed is the isolation check on every request on a container's nodes:
// the server knows the container from the node, and the caller must be
// host root (sysvisord, sysvisorctl) or a uid of that container.
func allowed(uid uint32, c *ctr) bool {
	if uid == 0 {
		return true
	}
	base, size := c.c.IDs()
	return uid >= base && uint64(uid) < uint64(base)+uint64(size)
}

// resolve finds the node of a request and checks its caller.
func (s *Server) resolve(h inHeader) (target, unix.Errno) {
	if h.NodeID == rootID {
		return target{id: rootID}, 0
	}
	slot, entry := splitNode(h.NodeID)
	c := s.container(slot)
	n := s.tree.node(entry)
	if c == nil || n == nil {
		// A removed container's node, or one this host does not
		// serve: ESTALE makes the kernel look the path up again.
		return target{}, unix.ESTALE
	}
	if !allowed(h.UID, c) {
		return target{}, unix.EACCES
	}
	return target{id: h.NodeID, c: c, n: n}, 0
}

// dispatch serves one request as read from /dev/fuse.
func (s *Server) dispatch(req []byte) {
	h, ok := parseInHeader(req)
	if !ok {
		s.log.Warn("views: short request", "bytes", len(req))
		return
	}
	if h.Opcode < maxOp {
		s.counts[h.Opcode].Add(1)
	}
	if int(h.Len) > len(req) || h.Len < inHeaderSize {
		s.reply(h.Unique, unix.EIO)
		return
	}
	arg := req[inHeaderSize:h.Len]
	switch h.Opcode {
	case opForget, opBatchForget:
		// Nodes are immortal: nothing to count. No reply.
	case opInit:
		s.initConn(h, arg)
	case opDestroy:
		s.reply(h.Unique, 0)
	case opInterrupt:
		// Every request is short: ENOSYS, and the kernel sends no more.
		s.reply(h.Unique, unix.ENOSYS)
	case opFlush:
		// ENOSYS tells the kernel never to send FLUSH again on this
		// mount: one round trip less per close.
		s.reply(h.Unique, unix.ENOSYS)
	case opRelease, opReleasedir:
		// Sent without the caller's credentials; only drops state.
		if len(arg) >= 8 {
			s.handles.Delete(ne.Uint64(arg[0:]))
		}
		s.reply(h.Unique, 0)
	case opLookup:
		s.lookup(h, arg)
	case opGetattr:
		s.getattr(h, arg)
	case opSetattr:
		s.setattr(h, arg)
	case opOpen:
		s.open(h, arg)
	case opRead:
		s.read(h, arg)
	case opWrite:
		s.write(h, arg)
	case opOpendir:
		s.opendir(h)
	case opReaddir:
		s.readdir(h, arg)
	case opStatfs:
		s.statfs(h)
	case opMknod, opMkdir, opUnlink, opRmdir, opRename, opRename2, opLink, opSymlink, opCreate, opTmpfile:
		s.reply(h.Unique, unix.EPERM)
	default:
		// READDIRPLUS (never enabled), ACCESS (default_permissions),
		// xattrs, locks, ioctl, poll, lseek...: the kernel copes, and
		// stops asking for most.
		s.reply(h.Unique, unix.ENOSYS)
	}
}

func (s *Server) initConn(h inHeader, arg []byte) {
	if len(arg) < initInSize {
		s.reply(h.Unique, unix.EIO)
		return
	}
	major, minor := ne.Uint32(arg[0:]), ne.Uint32(arg[4:])
	maxReadahead, flags := ne.Uint32(arg[8:]), ne.Uint32(arg[12:])
	if major != ourMajor || minor < minMinor {
		s.log.Error("views: FUSE protocol of the kernel unsupported", "major", major, "minor", minor)
		s.reply(h.Unique, unix.EPROTO)
		return
	}
	neg := min(minor, ourMinor)
	out := make([]byte, initOutSize)
	ne.PutUint32(out[0:], ourMajor)
	ne.PutUint32(out[4:], neg)
	ne.PutUint32(out[8:], maxReadahead)
	// Parallel lookups: the root holds every container's name. No
	// FUSE_ASYNC_READ, no READDIRPLUS.
	ne.PutUint32(out[12:], flags&(initAtomicOTrunc|initParallelDirop))
	ne.PutUint16(out[16:], 64) // max_background
	ne.PutUint16(out[18:], 48) // congestion_threshold
	ne.PutUint32(out[20:], maxWrite)
	ne.PutUint32(out[24:], 1) // time_gran
	if neg < 23 {
		out = out[:initOut22Size]
	}
	s.reply(h.Unique, 0, out)
	s.initOnce.Do(func() { close(s.initDone) })
	s.log.Debug("views: FUSE connection initialised", "kernel_minor", minor, "minor", neg)
}

// attrs fills the attributes of t. o is the open file the kernel names,
// if any: its rendering gives the size.
func (s *Server) attrs(t target, o *handle) attr {
	a := attr{Ino: t.id, Time: time.Now(), Nlink: 1, Valid: attrTimeout, EntryValid: dirTimeout}
	switch {
	case t.c == nil:
		// Only host root lists the containers; anyone may pass
		// through to the directory its lookup is allowed.
		a.Mode, a.Nlink, a.Valid = unix.S_IFDIR|0o711, 2, dirTimeout
	case t.n.kind == kindDir:
		a.Mode, a.Nlink, a.Valid = unix.S_IFDIR|0o555, 2, dirTimeout
	default:
		// The kernel's files are root's; inside, that is the
		// container's root (host root would show as nobody).
		a.UID, a.GID = t.c.c.RootIDs()
		a.Mode = unix.S_IFREG | 0o444
		if t.n.kind == kindSysctl {
			a.Mode = unix.S_IFREG | t.n.sysctl.Mode()
		} else if t.n.path == productUUID {
			a.Mode = unix.S_IFREG | 0o400 // the kernel's: root only
		}
		a.Size = uint64(s.size(t, o) + sizeSlack)
	}
	return a
}

// size is the length of the open file's rendering, or of the latest one,
// rendering only if there is none. procfs reports 0, but a FUSE file's
// splice_read (sendfile, as busybox cat uses) goes through the page cache
// and stops at i_size: size 0 would read as empty.
func (s *Server) size(t target, o *handle) int64 {
	if o != nil {
		if n, ok := o.size(); ok {
			return n
		}
	}
	last := t.c.lastLen[t.n.num]
	if t.n.kind == kindFile && last.Load() != 0 {
		return last.Load()
	}
	// A sysctl renders cheaply (a map lookup, or one host pread).
	if data, err := s.render(t); err == nil {
		return int64(len(data))
	}
	return 0
}

func (s *Server) lookup(h inHeader, arg []byte) {
	name, ok := cstring(arg)
	if !ok {
		s.reply(h.Unique, unix.EINVAL)
		return
	}
	parent, e := s.resolve(h)
	if e != 0 {
		s.reply(h.Unique, e)
		return
	}
	if parent.c == nil {
		if p := s.probe.Load(); p != nil && name == p.name {
			p.once.Do(func() { close(p.seen) })
			s.reply(h.Unique, unix.ENOENT)
			return
		}
		c := s.containerNamed(name)
		if c == nil {
			// Not cached: the name may be added any time.
			s.reply(h.Unique, unix.ENOENT)
			return
		}
		if !allowed(h.UID, c) {
			s.reply(h.Unique, unix.EACCES)
			return
		}
		t := target{id: nodeID(c.slot, 0), c: c, n: s.tree.node(0)}
		a := s.attrs(t, nil)
		s.reply(h.Unique, 0, entryOut(t.id, &a))
		return
	}
	if parent.n.kind != kindDir {
		s.reply(h.Unique, unix.ENOTDIR)
		return
	}
	child := parent.n.child(name)
	if child == nil {
		// A container's tree never changes: the kernel may remember
		// that the name is missing.
		s.reply(h.Unique, 0, entryOut(0, &attr{EntryValid: dirTimeout}))
		return
	}
	t := target{id: nodeID(parent.c.slot, child.num), c: parent.c, n: child}
	a := s.attrs(t, nil)
	s.reply(h.Unique, 0, entryOut(t.id, &a))
}

func (s *Server) getattr(h inHeader, arg []byte) {
	t, e := s.resolve(h)
	if e != 0 {
		s.reply(h.Unique, e)
		return
	}
	var o *handle
	if len(arg) >= getattrInSize && ne.Uint32(arg[0:])&getattrFH != 0 {
		o = s.handleOf(ne.Uint64(arg[8:]), t.id)
	}
	a := s.attrs(t, o)
	s.reply(h.Unique, 0, attrOut(&a))
}

// setattr accepts, on a sysctl, the truncation an O_TRUNC open may send
// (shells open with it) and changes nothing, as procfs ignores it; mode
// and owner changes are refused, on every node.
func (s *Server) setattr(h inHeader, arg []byte) {
	t, e := s.resolve(h)
	if e != 0 {
		s.reply(h.Unique, e)
		return
	}
	if len(arg) < setattrInSize {
		s.reply(h.Unique, unix.EINVAL)
		return
	}
	valid := ne.Uint32(arg[0:])
	if t.c == nil || t.n.kind != kindSysctl || valid&(fattrMode|fattrUID|fattrGID) != 0 {
		s.reply(h.Unique, unix.EPERM)
		return
	}
	a := s.attrs(t, s.handleOf(ne.Uint64(arg[8:]), t.id))
	s.reply(h.Unique, 0, attrOut(&a))
}

func (s *Server) statfs(h inHeader) {
	if _, e := s.resolve(h); e != 0 {
		s.reply(h.Unique, e)
		return
	}
	b := make([]byte, kstatfsSize)
	ne.PutUint32(b[40:], 4096) // bsize
	ne.PutUint32(b[44:], 255)  // namelen
	ne.PutUint32(b[48:], 4096) // frsize
	s.reply(h.Unique, 0, b)
}

// handle is one open file or directory. A read at offset 0 renders the
// content (every such read: a reader that keeps the file open and reads it
// again from the start, as procps does with /proc/meminfo and /proc/stat,
// sees fresh values, as seq_file gives them), and reads at later offsets
// continue that rendering, so one pass through the file reads one
// snapshot. A directory's listing is taken at its first read.
type handle struct {
	node uint64

	mu       sync.Mutex
	data     []byte
	rendered bool
	ents     []dirent
}

type dirent struct {
	ino  uint64
	typ  uint32
	name string
}

// size is the length of the open file's rendering, if it has one.
func (o *handle) size() (int64, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return int64(len(o.data)), o.rendered
}

// handleOf is the state of fh if it belongs to node.
func (s *Server) handleOf(fh, node uint64) *handle {
	if v, ok := s.handles.Load(fh); ok && v.(*handle).node == node {
		return v.(*handle)
	}
	return nil
}

// handleFor is the state of fh, made afresh for a file opened before a
// restart (or, on a removed container, one nobody will find again).
func (s *Server) handleFor(fh, node uint64) *handle {
	if o := s.handleOf(fh, node); o != nil {
		return o
	}
	o := &handle{node: node}
	if v, loaded := s.handles.LoadOrStore(fh, o); loaded {
		if v.(*handle).node == node {
			return v.(*handle)
		}
		return o // not ours to replace: a private snapshot
	}
	return o
}

func (s *Server) render(t target) ([]byte, error) {
	switch t.n.kind {
	case kindSysctl:
		data, err := s.sysctlRender(t.c, t.n.sysctl)
		if err != nil {
			s.log.Warn("views: render sysctl", "container", t.c.id, "sysctl", t.n.sysctl.Name, "error", err)
		}
		return data, err
	default:
		data, err := Render(t.c.c, t.n.path)
		if err != nil {
			s.log.Warn("views: render", "container", t.c.id, "file", t.n.path, "error", err)
			return nil, err
		}
		t.c.lastLen[t.n.num].Store(int64(len(data)))
		return data, nil
	}
}

func (s *Server) open(h inHeader, arg []byte) {
	t, e := s.resolve(h)
	if e == 0 && len(arg) < openInSize {
		e = unix.EINVAL
	}
	if e == 0 && (t.c == nil || t.n.kind == kindDir) {
		e = unix.EISDIR
	}
	var flags uint32
	if e == 0 {
		flags = ne.Uint32(arg[0:])
		if t.n.kind == kindFile && flags&unix.O_ACCMODE != unix.O_RDONLY {
			e = unix.EACCES
		}
	}
	if e != 0 {
		s.reply(h.Unique, e)
		return
	}
	// The splice guard (see noteShort): give the size back its room
	// before the open is answered, so no read of this open sees the
	// cut one.
	if end, ok := s.shrunk.LoadAndDelete(t.id); ok {
		if err := s.notifyStore(t.id, end.(int64)+sizeSlack-1, []byte{'\n'}); err != nil {
			s.log.Debug("views: notify store", "node", t.id, "error", err)
		}
	}
	fh := s.j.nextFh()
	s.handles.Store(fh, &handle{node: t.id})
	if err := s.reply(h.Unique, 0, openOut(fh, fopenDirectIO)); err != nil {
		s.handles.Delete(fh) // no RELEASE will come for it
		return
	}
	if flags&unix.O_TRUNC != 0 {
		// FUSE_ATOMIC_O_TRUNC: the kernel sets i_size to 0 once the
		// open is answered.
		s.shrunk.Store(t.id, int64(0))
	}
}

// noteShort keeps splice reads of the views whole while the kernel caches
// their attributes. A read(2) of a view is direct I/O and ignores i_size, but
// a splice read (sendfile) goes through the page cache and stops at i_size,
// and when a page-cache read comes back short, as it does at the end of every
// view, the kernel sets i_size to where the content ended. That shrink is
// what keeps the zeros after the content out of the reader's hands, but with
// the attributes cached the next splice read, of a longer rendering, would
// stop at the old end. So the server notes each short page-cache read (the
// kernel marks its direct reads with FUSE_READ_LOCKOWNER, page-cache reads
// go without) and, at the node's next open, before answering it, gives the
// size back sizeSlack of room by storing one byte at that offset in the
// page cache: a store only ever grows i_size, and the open drops the page
// again (no FOPEN_KEEP_CACHE).
func (s *Server) noteShort(node uint64, in readIn, n int) {
	if in.ReadFlags&readLockOwner == 0 && n < int(in.Size) {
		s.shrunk.Store(node, int64(in.Offset)+int64(n))
	}
}

func (s *Server) read(h inHeader, arg []byte) {
	t, e := s.resolve(h)
	in, ok := parseReadIn(arg)
	if e == 0 && !ok {
		e = unix.EINVAL
	}
	if e == 0 && (t.c == nil || t.n.kind == kindDir) {
		e = unix.EISDIR
	}
	if e == 0 && int64(in.Offset) < 0 {
		e = unix.EINVAL
	}
	if e != 0 {
		s.reply(h.Unique, e)
		return
	}
	o := s.handleFor(in.Fh, t.id)
	o.mu.Lock()
	if in.Offset == 0 || !o.rendered {
		data, err := s.render(t)
		if err != nil {
			o.mu.Unlock()
			s.reply(h.Unique, unix.EIO)
			return
		}
		o.data, o.rendered = data, true
	}
	// o.data is replaced, never changed in place, by the next rendering:
	// the reply may use it after the lock.
	data := o.data
	o.mu.Unlock()
	var out []byte
	if in.Offset < uint64(len(data)) {
		out = data[in.Offset:min(in.Offset+uint64(in.Size), uint64(len(data)))]
	}
	s.noteShort(t.id, in, len(out))
	s.reply(h.Unique, 0, out)
}

func (s *Server) write(h inHeader, arg []byte) {
	t, e := s.resolve(h)
	if e == 0 && (t.c == nil || t.n.kind != kindSysctl) {
		e = unix.EBADF
	}
	if e == 0 && len(arg) < writeInSize {
		e = unix.EINVAL
	}
	if e != 0 {
		s.reply(h.Unique, e)
		return
	}
	off, size := ne.Uint64(arg[8:]), ne.Uint32(arg[16:])
	if uint64(len(arg)-writeInSize) < uint64(size) || int64(off) < 0 {
		s.reply(h.Unique, unix.EINVAL)
		return
	}
	n, e := s.sysctlWrite(h, t, int64(off), arg[writeInSize:writeInSize+int(size)])
	if e != 0 {
		s.reply(h.Unique, e)
		return
	}
	out := make([]byte, writeOutSize)
	ne.PutUint32(out[0:], n)
	s.reply(h.Unique, 0, out)
}

func (s *Server) opendir(h inHeader) {
	t, e := s.resolve(h)
	if e == 0 && t.c != nil && t.n.kind != kindDir {
		e = unix.ENOTDIR
	}
	if e == 0 && t.c == nil && h.UID != 0 {
		e = unix.EACCES // the root lists every container: host root's only
	}
	if e != 0 {
		s.reply(h.Unique, e)
		return
	}
	fh := s.j.nextFh()
	s.handles.Store(fh, &handle{node: t.id})
	if err := s.reply(h.Unique, 0, openOut(fh, 0)); err != nil {
		s.handles.Delete(fh)
	}
}

// listing is the content of directory t: ".", "..", then its entries.
func (s *Server) listing(t target) []dirent {
	out := []dirent{{ino: t.id, typ: dtDir, name: "."}}
	if t.c == nil {
		out = append(out, dirent{ino: rootID, typ: dtDir, name: ".."})
		s.mu.RLock()
		for id, c := range s.byID {
			out = append(out, dirent{ino: nodeID(c.slot, 0), typ: dtDir, name: id})
		}
		s.mu.RUnlock()
		slices.SortFunc(out[2:], func(a, b dirent) int {
			if a.name < b.name {
				return -1
			}
			return 1
		})
		return out
	}
	parent := uint64(rootID)
	if t.n.num != 0 {
		parent = nodeID(t.c.slot, t.n.parent)
	}
	out = append(out, dirent{ino: parent, typ: dtDir, name: ".."})
	for _, ch := range t.n.children {
		typ := uint32(dtReg)
		if ch.kind == kindDir {
			typ = dtDir
		}
		out = append(out, dirent{ino: nodeID(t.c.slot, ch.num), typ: typ, name: ch.name})
	}
	return out
}

func (s *Server) readdir(h inHeader, arg []byte) {
	t, e := s.resolve(h)
	in, ok := parseReadIn(arg)
	if e == 0 && !ok {
		e = unix.EINVAL
	}
	if e == 0 && t.c != nil && t.n.kind != kindDir {
		e = unix.ENOTDIR
	}
	if e == 0 && t.c == nil && h.UID != 0 {
		e = unix.EACCES
	}
	if e != 0 {
		s.reply(h.Unique, e)
		return
	}
	o := s.handleFor(in.Fh, t.id)
	o.mu.Lock()
	if !o.rendered || in.Offset == 0 {
		o.ents, o.rendered = s.listing(t), true
	}
	ents := o.ents
	o.mu.Unlock()
	var out []byte
	for i := in.Offset; i < uint64(len(ents)); i++ {
		var fit bool
		if out, fit = appendDirent(out, int(in.Size), ents[i].ino, i+1, ents[i].typ, ents[i].name); !fit {
			break
		}
	}
	s.reply(h.Unique, 0, out)
}
