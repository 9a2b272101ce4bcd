package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/linux/notify"
	"github.com/sysvisor/sysvisor/supervisor/handoff"
)

// gosup is figure 2's Go floor with minimal work, the counterpart of
// `csup --work min`: it accepts one listener over the OCI seccomp-listener
// protocol and answers every notification by writing a zeroed struct
// sysinfo into the caller (handlers.Request.WriteMem: open
// /proc/<pid>/mem, NOTIF_ID_VALID, the writability check, pwrite) and
// returning 0. The pool, WriteMem and the send are the code sysvisord's
// notify path runs (a notify.Pool thread receives and answers inline), so gosup over csup at the same work is the cost of that
// mechanism in Go, without sysvisord's policy, statistics and cgroup reads.
// It prints notifications=N on stderr when the listener hangs up.
func gosup(args []string) error {
	fs := flag.NewFlagSet("gosup", flag.ContinueOnError)
	sock := fs.String("socket", "", "unix socket to accept the listener on")
	syncWake := fs.Bool("sync-wakeup", false, "set SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *sock == "" {
		return errors.New("-socket is required")
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: *sock, Net: "unix"})
	if err != nil {
		return err
	}
	defer os.Remove(*sock)
	conn, err := l.AcceptUnix()
	l.Close()
	if err != nil {
		return err
	}
	m, err := handoff.Receive(conn, 10*time.Second)
	conn.Close()
	if err != nil {
		return fmt.Errorf("handoff: %w", err)
	}
	fd, err := notify.NewFd(m.SeccompFd, "listener")
	if err != nil {
		return err
	}
	defer fd.Close()
	if *syncWake {
		if err := fd.SetSyncWakeUp(); err != nil {
			return fmt.Errorf("sync wake-up: %w", err)
		}
	}
	pool, err := notify.NewPool(1)
	if err != nil {
		return err
	}
	defer pool.Stop()
	gl := &gosupListener{fd: fd, ended: make(chan error, 1)}
	gl.answer = unsafe.Slice((*byte)(unsafe.Pointer(&gl.si)), unsafe.Sizeof(gl.si))
	if err := pool.Add(fd, new(notify.Notif), gl, false); err != nil {
		return err
	}
	if err := <-gl.ended; err != nil && !errors.Is(err, notify.ErrClosed) {
		return err
	}
	if gl.err != nil {
		return gl.err
	}
	fmt.Fprintf(os.Stderr, "notifications=%d\n", gl.count)
	return nil
}

// gosupListener is gosup's work on sysvisord's notify pool.
type gosupListener struct {
	fd     *notify.Fd
	si     unix.Sysinfo_t
	answer []byte
	count  int
	err    error
	ended  chan error
}

func (l *gosupListener) Inline(*notify.Notif) bool { return true }

func (l *gosupListener) Ended(err error) { l.ended <- err }

func (l *gosupListener) Handle(n *notify.Notif) {
	l.count++
	req := handlers.Request{Notif: *n, Fd: l.fd}
	werr := req.WriteMem(n.Data.Args[0], l.answer)
	req.Close()
	var err error
	if werr != nil {
		err = l.fd.Errno(n.ID, unix.EFAULT)
	} else {
		err = l.fd.Return(n.ID, 0)
	}
	if err != nil && !errors.Is(err, notify.ErrGone) && l.err == nil {
		l.err = fmt.Errorf("send: %w", err)
	}
}
