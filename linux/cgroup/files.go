package cgroup

import (
	"errors"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/rawfile"
)

// Source reads cgroup files.
type Source interface {
	ReadFile(path string) ([]byte, error)
}

type direct struct{}

func (direct) ReadFile(path string) ([]byte, error) { return rawfile.ReadFile(path) }

// Files keeps one container's cgroup files open. A cgroup file re-read with
// pread at offset 0 shows the current value, for a tenth of the cost of
// open, read and close: the sysinfo handler reads several per call.
//
// The lock is the container's own, taken only by that container's
// notifications; nothing global is on the notify path.
type Files struct {
	mu      sync.Mutex
	fds     map[string]int
	missing map[string]error // files the kernel does not have (no swap accounting, ...)
	closed  bool
}

// ReadFile implements Source.
func (f *Files) ReadFile(path string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return rawfile.ReadFile(path)
	}
	if err, ok := f.missing[path]; ok {
		return nil, err
	}
	fd, ok := f.fds[path]
	if !ok {
		var err error
		if fd, err = rawfile.Open(path, unix.O_RDONLY); err != nil {
			// A controller file that is not there will not appear for
			// this container: remember, instead of failing an open per
			// call. Anything else may be transient.
			if errors.Is(err, unix.ENOENT) {
				if f.missing == nil {
					f.missing = map[string]error{}
				}
				f.missing[path] = err
			}
			return nil, err
		}
		if f.fds == nil {
			f.fds = map[string]int{}
		}
		f.fds[path] = fd
	}
	buf := make([]byte, 0, 1024)
	for {
		n, err := unix.Pread(fd, buf[len(buf):cap(buf)], int64(len(buf)))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// The cgroup may be gone (container exiting): forget the fd.
			unix.Close(fd)
			delete(f.fds, path)
			return nil, err
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

// Close releases the fds; later reads open and close each time.
func (f *Files) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fd := range f.fds {
		unix.Close(fd)
	}
	f.fds, f.closed = nil, true
}
