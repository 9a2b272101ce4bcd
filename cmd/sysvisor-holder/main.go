// sysvisor-holder keeps the fds that running containers depend on while
// sysvisord restarts (see package holder). sysvisord starts one when none
// runs; the systemd unit sysvisor-holder.service runs it under systemd.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/holder"
	"github.com/sysvisor/sysvisor/supervisor/control"
)

func main() {
	fs := flag.NewFlagSet("sysvisor-holder", flag.ContinueOnError)
	runDir := fs.String("run-dir", envOr("SYSVISOR_RUN_DIR", control.DefaultRunDir), "sysvisord's run directory (env SYSVISOR_RUN_DIR)")
	down := fs.Duration("down-timeout", 30*1e9, "how long containers' trapped calls wait for a sysvisord before they fail")
	errno := fs.String("down-errno", "EAGAIN", "the errno trapped calls fail with after --down-timeout without a sysvisord")
	logLevel := fs.String("log-level", "info", "trace, debug, info, warn or error")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sysvisor-holder: unexpected argument %q\n", fs.Arg(0))
		os.Exit(2)
	}
	e := errnoByName(*errno)
	if e == 0 {
		fmt.Fprintf(os.Stderr, "sysvisor-holder: --down-errno %q: not an errno name (e.g. EAGAIN, ENOSYS)\n", *errno)
		os.Exit(2)
	}
	level := hclog.LevelFromString(*logLevel)
	if level == hclog.NoLevel || level == hclog.Off {
		fmt.Fprintf(os.Stderr, "sysvisor-holder: --log-level %q: want trace, debug, info, warn or error\n", *logLevel)
		os.Exit(2)
	}
	// It outlives whoever started it: an fd it inherited (a test's
	// output pipe, a script's redirection) would stay open for as long.
	unix.CloseRange(3, ^uint(0), 0)
	log := hclog.New(&hclog.LoggerOptions{Name: "sysvisor-holder", Level: level, Output: os.Stderr})
	h, err := holder.Listen(holder.Config{RunDir: *runDir, DownTimeout: *down, DownErrno: e, Log: log})
	if errors.Is(err, holder.ErrRunning) {
		log.Info("another holder serves this run directory; exiting", "run_dir", *runDir)
		return
	}
	if err != nil {
		log.Error("cannot start", "error", err)
		os.Exit(1)
	}
	// SIGHUP would end a holder started from a terminal that closes.
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-sigs
		log.Warn("stopping: every held listener and views fd is dropped; running containers keep service only while sysvisord runs", "signal", s.String())
		h.Close()
	}()
	h.Serve()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func errnoByName(name string) unix.Errno {
	for e := unix.Errno(1); e < 4096; e++ {
		if unix.ErrnoName(e) == name {
			return e
		}
	}
	return 0
}
