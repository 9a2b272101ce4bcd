// sysvisord is the sysvisor supervisor daemon.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/gops/agent"
	"github.com/hashicorp/go-hclog"

	"github.com/sysvisor/sysvisor/kernel"
	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor"
	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/metrics"
)

func main() {
	fs := flag.NewFlagSet("sysvisord", flag.ContinueOnError)
	runDir := fs.String("run-dir", envOr("SYSVISOR_RUN_DIR", control.DefaultRunDir), "directory for sockets and per-container mounts (env SYSVISOR_RUN_DIR)")
	stateDir := fs.String("state-dir", "/var/lib/sysvisor", "directory for persistent state (leases, container records)")
	logLevel := fs.String("log-level", "info", "trace, debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json")
	subuid := fs.String("subuid", "/etc/subuid", "subordinate uid file holding the sysvisor pool")
	subgid := fs.String("subgid", "/etc/subgid", "subordinate gid file holding the sysvisor pool")
	gops := fs.Bool("gops", false, "run a gops agent on loopback for debugging (port file under <run-dir>/gops); any local user can reach it")
	noSync := fs.Bool("no-sync-wakeup", false, "do not set SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP on listeners")
	notifyThreads := fs.Int("notify-threads", 0, "OS threads that receive and answer every container's trapped syscalls (0: one per CPU)")
	fallbacks := fs.String("kernel-fallbacks", "", "force the fallbacks of these kernel features: all, or names separated by commas (added to $"+kernel.EnvFallbacks+"; sysvisorctl doctor lists them)")
	noViews := fs.Bool("no-views", false, "serve no FUSE /proc and /sys views (containers see the host's files)")
	noHolder := fs.Bool("no-holder", false, "keep nothing in sysvisor-holder: running containers then do not survive a restart of sysvisord (throwaway instances, benchmarks)")
	policyDir := fs.String("policy-dir", policy.Dir(""), "policy files (<name>.hcl), read at start and on SIGHUP or `sysvisorctl policy reload` (env SYSVISOR_POLICY_DIR)")
	metricsAddr := fs.String("metrics", "", "serve Prometheus metrics at ADDR (a port or :port listens on 127.0.0.1 only; host:port as given)")
	version := fs.Bool("version", false, "print version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *version {
		fmt.Println("sysvisord", supervisor.Version)
		return
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sysvisord: unexpected argument %q\n", fs.Arg(0))
		os.Exit(2)
	}
	level := hclog.LevelFromString(*logLevel)
	if level == hclog.NoLevel || level == hclog.Off {
		fmt.Fprintf(os.Stderr, "sysvisord: --log-level %q: want trace, debug, info, warn or error\n", *logLevel)
		os.Exit(2)
	}
	if *logFormat != "text" && *logFormat != "json" {
		fmt.Fprintf(os.Stderr, "sysvisord: --log-format %q: want text or json\n", *logFormat)
		os.Exit(2)
	}
	if *metricsAddr != "" {
		a, err := metrics.Addr(*metricsAddr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sysvisord: --metrics: %v\n", err)
			os.Exit(2)
		}
		*metricsAddr = a
	}
	if err := kernel.EnvError(); err != nil {
		fmt.Fprintf(os.Stderr, "sysvisord: %v\n", err)
		os.Exit(2)
	}
	if err := kernel.Force(*fallbacks); err != nil {
		fmt.Fprintf(os.Stderr, "sysvisord: --kernel-fallbacks: %v\n", err)
		os.Exit(2)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "sysvisord", Level: level, JSONFormat: *logFormat == "json", Output: os.Stderr})
	if forced := kernel.Forced(); len(forced) > 0 {
		log.Info("kernel fallbacks forced", "features", forced)
	}
	if log.IsDebug() {
		for _, f := range kernel.Features() {
			if !f.Has() {
				log.Debug("kernel feature uses its fallback", "feature", f.Name, "state", f.State())
			}
		}
	}
	if os.Geteuid() != 0 {
		log.Error("sysvisord must run as root")
		os.Exit(1)
	}
	srv, err := supervisor.New(supervisor.Config{RunDir: *runDir, StateDir: *stateDir, SubUID: *subuid, SubGID: *subgid, Log: log, NoSyncWakeUp: *noSync, NotifyThreads: *notifyThreads, NoViews: *noViews, NoHolder: *noHolder, PolicyDir: *policyDir, MetricsAddr: *metricsAddr,
		// A predecessor killed a moment ago may still hold the state lock.
		LockWait: 10 * time.Second})
	if err != nil {
		log.Error("cannot start", "error", err)
		os.Exit(1)
	}
	if *gops {
		if err := agent.Listen(agent.Options{Addr: "127.0.0.1:0", ConfigDir: filepath.Join(*runDir, "gops")}); err != nil {
			log.Warn("gops agent not started", "error", err)
		} else {
			defer agent.Close()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP reloads the policy directory; the loop ends with ctx.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	hupDone := make(chan struct{})
	go func() {
		defer close(hupDone)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading policies")
				srv.ReloadPolicies() // logs every outcome
			}
		}
	}()
	defer func() { signal.Stop(hup); stop(); <-hupDone }()
	if err := srv.Run(ctx); err != nil {
		log.Error("serve", "error", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
