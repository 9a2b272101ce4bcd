// Package rawfile reads small kernel files (procfs, cgroupfs) with plain
// syscalls. os.Open registers every file with Go's poller first, which for
// these files costs four failing or useless syscalls per open: on the
// notify path, where a handler reads a few such files per call, that was a
// measurable share of the round trip.
package rawfile

import (
	"os"

	"golang.org/x/sys/unix"
)

// ReadFile returns the contents of path, read to EOF.
func ReadFile(path string) ([]byte, error) {
	fd, err := Open(path, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b, err := ReadAll(fd)
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: path, Err: err}
	}
	return b, nil
}

// Open opens path with flags | O_CLOEXEC, retrying on EINTR. Errors name
// the path, as os.Open's do.
func Open(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// ReadAll reads fd to EOF.
func ReadAll(fd int) ([]byte, error) {
	buf := make([]byte, 0, 512)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}
