// sysvisorctl is sysvisor's debug console: it asks sysvisord over its
// control socket (root only).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/sysvisor/sysvisor/doctor"
	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor"
	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/stats"
	"github.com/sysvisor/sysvisor/supervisor/trace"
)

const usage = `usage: sysvisorctl [--run-dir DIR] [--policy-dir DIR] COMMAND

commands (ask sysvisord; root only):
  ps [--json]             containers served by sysvisord: id, init pid, ID range, policy, uptime
  inspect ID              one container's full record as JSON (ID or a unique prefix)
  log-level LEVEL         change sysvisord's log level (trace, debug, info, warn, error) until it restarts
  version                 versions of sysvisorctl and sysvisord
  trace [--syscall NAME] [-n N] [--json] [ID]
                          live notifications: time, container, pid, syscall, decoded arguments,
                          action, decision, latency; until interrupted (or N events)
  stats [--json] [ID]     per syscall and policy action: notifications, how they were answered,
                          sysvisord's latency (p50, p90, p99, max); of one container with ID
  policy reload           make sysvisord re-read its policy directory (as SIGHUP does); a refused
                          file is reported with file:line:column and its last good version stays

commands (local; as root for every probe):
  doctor [--runc PATH] [--daemon-json FILE] [--json]
                          checks the host: kernel against the floor and each newer kernel feature
                          (present, or the fallback in use), seccomp notify, idmapped mounts, user
                          namespaces, runc, subuid/subgid pool, /dev/fuse, policies, sysvisord, Docker
                          registration, cgroup mode, Docker's cgroup driver, cgroup delegation, AppArmor;
                          one verdict (ok, warn, FAIL) per line, exit status 1 on any FAIL

commands (local, any user):
  policy check FILE...    validate policy files; every error with file:line:column and a hint
  policy explain NAME     what a container under a policy (name or FILE.hcl) can and cannot do
  policy list             the built-ins and the files of the policy directory (what sysvisord
                          loads at its next reload; "policy reload" shows what it has active)
`

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("sysvisorctl", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	runDir := fs.String("run-dir", envOr("SYSVISOR_RUN_DIR", control.DefaultRunDir), "sysvisord's run directory")
	policyDir := fs.String("policy-dir", "", "policy directory (default $SYSVISOR_POLICY_DIR or "+policy.DefaultDir+")")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "ps":
		return ps(*runDir, rest)
	case "inspect":
		return inspect(*runDir, rest)
	case "stats":
		return statsCmd(*runDir, rest)
	case "trace":
		return traceCmd(*runDir, rest)
	case "doctor":
		return doctorCmd(*runDir, *policyDir, rest)
	case "log-level":
		if len(rest) != 1 {
			fmt.Fprint(os.Stderr, "usage: sysvisorctl log-level trace|debug|info|warn|error\n")
			return 2
		}
		resp, err := call(*runDir, control.Request{Op: control.OpLogLevel, Level: rest[0]})
		if err != nil {
			return fail(err)
		}
		fmt.Printf("sysvisord log level: %s -> %s\n", resp.Level, rest[0])
		return 0
	case "policy":
		if len(rest) > 0 && rest[0] == "reload" {
			return policyReload(*runDir, rest[1:])
		}
		return policyCmd(policy.Dir(*policyDir), rest)
	case "version":
		fmt.Println("sysvisorctl", supervisor.Version)
		resp, err := call(*runDir, control.Request{Op: control.OpVersion})
		if err != nil {
			return fail(err)
		}
		fmt.Printf("sysvisord %s (ID pool %d+%d)\n", resp.Version, resp.Pool.Start, resp.Pool.Size)
		return 0
	case "help", "-h", "--help":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "sysvisorctl: unknown command %q\n%s", cmd, usage)
	return 2
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func call(runDir string, req control.Request) (*control.Response, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("permission denied: sysvisord's control socket is root-only (mode 0600); run sysvisorctl as root (you are uid %d)", os.Geteuid())
	}
	return control.Call(runDir, req, 10*time.Second)
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "sysvisorctl: %v\n", err)
	return 1
}

func ps(runDir string, args []string) int {
	fs := flag.NewFlagSet("ps", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	resp, err := call(runDir, control.Request{Op: control.OpPs})
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		cs := resp.Containers
		if cs == nil {
			cs = []control.ContainerInfo{}
		}
		if err := enc.Encode(cs); err != nil {
			return fail(err)
		}
		return 0
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tINIT PID\tID BASE\tID SIZE\tPOLICY\tUPTIME\tNOTIFICATIONS")
	for _, c := range resp.Containers {
		up := "-"
		if c.UptimeSeconds > 0 {
			up = (time.Duration(c.UptimeSeconds) * time.Second).String()
		}
		id := c.ID
		if len(id) > 12 {
			id = id[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%d\n", id, c.Status, c.InitPid, c.Lease.Start, c.Lease.Size, c.Policy, up, c.Notifications)
	}
	tw.Flush()
	return 0
}

// resolveID turns a container id or a unique prefix of one (as ps shows
// them) into the id.
func resolveID(runDir, id string) (string, error) {
	all, err := call(runDir, control.Request{Op: control.OpPs})
	if err != nil {
		return "", err
	}
	var match []string
	for _, c := range all.Containers {
		if c.ID == id {
			return id, nil
		}
		if strings.HasPrefix(c.ID, id) {
			match = append(match, c.ID)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("no container %q", id)
	case 1:
		return match[0], nil
	}
	return "", fmt.Errorf("%q names %d containers; give more of the id", id, len(match))
}

func statsCmd(runDir string, args []string) int {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() > 1 {
		fmt.Fprint(os.Stderr, "usage: sysvisorctl stats [--json] [ID]\n")
		return 2
	}
	req := control.Request{Op: control.OpStats}
	if fs.NArg() == 1 {
		id, err := resolveID(runDir, fs.Arg(0))
		if err != nil {
			return fail(err)
		}
		req.ID = id
	}
	resp, err := call(runDir, req)
	if err != nil {
		return fail(err)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		rows := resp.Stats
		if rows == nil {
			rows = []stats.Row{}
		}
		if err := enc.Encode(rows); err != nil {
			return fail(err)
		}
		return 0
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "SYSCALL\tACTION\tCOUNT\tCONTINUE\tRETURN\tERRNO\tGONE\tLIMITED\tP50\tP90\tP99\tMAX\t")
	for _, r := range resp.Stats {
		action := r.Action
		if action == "" {
			action = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t\n", r.Syscall, action, r.Count, r.Continue, r.Return, r.Errno, r.Gone, r.Limited,
			dur(r.P50Ns), dur(r.P90Ns), dur(r.P99Ns), dur(r.MaxNs))
	}
	tw.Flush()
	return 0
}

func traceCmd(runDir string, args []string) int {
	fs := flag.NewFlagSet("trace", flag.ContinueOnError)
	sc := fs.String("syscall", "", "only this syscall (mount, umount2, sysinfo, ...)")
	count := fs.Int("n", 0, "stop after this many events (0: until interrupted)")
	asJSON := fs.Bool("json", false, "one JSON object per event")
	// Flags may follow the id (trace ID --syscall mount).
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) > 1 {
		fmt.Fprint(os.Stderr, "usage: sysvisorctl trace [--syscall NAME] [-n N] [--json] [ID]\n")
		return 2
	}
	req := control.Request{Syscall: *sc}
	if len(pos) == 1 {
		id, err := resolveID(runDir, pos[0])
		if err != nil {
			return fail(err)
		}
		req.ID = id
	}
	if os.Geteuid() != 0 {
		_, err := call(runDir, req) // says why, without connecting
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	enc := json.NewEncoder(os.Stdout)
	seen := 0
	err := control.Trace(ctx, runDir, req, func(ev trace.Event) error {
		if *asJSON {
			if err := enc.Encode(ev); err != nil {
				return err
			}
		} else {
			if ev.Dropped > 0 {
				fmt.Printf("-- %d events dropped (this terminal is slower than the notifications)\n", ev.Dropped)
			}
			if ev.Syscall != "" {
				id := ev.Container
				if len(id) > 12 {
					id = id[:12]
				}
				action := ev.Action
				if action == "" {
					action = "no rule"
				}
				fmt.Printf("%s %s pid %d %s(%s) %s -> %s %s\n", ev.Time.Local().Format("15:04:05.000000"), id, ev.Pid,
					ev.Syscall, ev.Args, action, ev.Decision, dur(ev.LatencyNs))
			}
		}
		if ev.Syscall != "" {
			seen++
		}
		if *count > 0 && seen >= *count {
			return io.EOF
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return 0
}

func doctorCmd(runDir, policyDir string, args []string) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	o := doctor.Options{RunDir: runDir, PolicyDir: policyDir}
	fs.StringVar(&o.Runc, "runc", "", "runc binary (default $SYSVISOR_RUNC, else runc from PATH)")
	fs.StringVar(&o.DaemonJSON, "daemon-json", "", "Docker's daemon.json (default /etc/docker/daemon.json)")
	fs.StringVar(&o.ContainerdConfig, "containerd-config", "", "containerd's config (default /etc/containerd/config.toml)")
	fs.StringVar(&o.SubUID, "subuid", "", "subordinate uid file (default /etc/subuid)")
	fs.StringVar(&o.SubGID, "subgid", "", "subordinate gid file (default /etc/subgid)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprint(os.Stderr, "usage: sysvisorctl doctor [--runc PATH] [--daemon-json FILE] [--containerd-config FILE] [--subuid FILE] [--subgid FILE] [--json]\n")
		return 2
	}
	rs := doctor.Run(o)
	worst := doctor.OK
	if *asJSON {
		for _, r := range rs {
			worst = max(worst, r.Verdict)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rs); err != nil {
			return fail(err)
		}
	} else {
		worst = doctor.Print(os.Stdout, rs)
	}
	if worst == doctor.Fail {
		return 1
	}
	return 0
}

// dur prints a latency with three significant digits.
func dur(ns int64) string {
	d := time.Duration(ns)
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d >= 10*time.Microsecond:
		return d.Round(100 * time.Nanosecond).String()
	}
	return d.String()
}

func inspect(runDir string, args []string) int {
	if len(args) != 1 {
		fmt.Fprint(os.Stderr, "usage: sysvisorctl inspect ID\n")
		return 2
	}
	id := args[0]
	resp, err := call(runDir, control.Request{Op: control.OpInspect, ID: id})
	if err != nil && resp != nil {
		// Not an exact id: a unique prefix, as ps shows them.
		all, perr := call(runDir, control.Request{Op: control.OpPs})
		if perr != nil {
			return fail(perr)
		}
		var match []control.ContainerInfo
		for _, c := range all.Containers {
			if strings.HasPrefix(c.ID, id) {
				match = append(match, c)
			}
		}
		switch len(match) {
		case 0:
			return fail(fmt.Errorf("no container %q", id))
		case 1:
			resp, err = &control.Response{Containers: match}, nil
		default:
			return fail(fmt.Errorf("%q names %d containers; give more of the id", id, len(match)))
		}
	}
	if err != nil {
		return fail(err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(resp.Containers[0]); err != nil {
		return fail(err)
	}
	return 0
}

func policyCmd(dir string, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, "usage: sysvisorctl policy check FILE... | explain NAME|FILE | list\n")
		return 2
	}
	switch args[0] {
	case "check":
		if len(args) < 2 {
			fmt.Fprint(os.Stderr, "usage: sysvisorctl policy check FILE...\n")
			return 2
		}
		code := 0
		for _, f := range args[1:] {
			p, err := loadFile(f)
			if err != nil {
				printPolicyError(err)
				code = 1
				continue
			}
			fmt.Printf("%s: ok (policy %q, %d syscalls trapped)\n", f, p.Name, len(p.Rules))
		}
		return code
	case "explain":
		if len(args) != 2 {
			fmt.Fprint(os.Stderr, "usage: sysvisorctl policy explain NAME|FILE\n")
			return 2
		}
		var p *policy.Policy
		var err error
		if strings.Contains(args[1], "/") || strings.HasSuffix(args[1], ".hcl") {
			p, err = loadFile(args[1])
		} else {
			p, err = policy.Load(args[1], dir)
		}
		if err != nil {
			printPolicyError(err)
			return 1
		}
		fmt.Print(policy.Explain(p))
		return 0
	case "list":
		for _, n := range policy.Known(dir) {
			p, err := policy.Load(n, dir)
			if err != nil {
				fmt.Printf("%-12s INVALID: %v\n", n, err)
				continue
			}
			fmt.Printf("%-12s %-10s %s\n", n, p.Source, p.Description)
		}
		return 0
	}
	fmt.Fprintf(os.Stderr, "sysvisorctl policy: unknown command %q\n", args[0])
	return 2
}

func policyReload(runDir string, args []string) int {
	if len(args) != 0 {
		fmt.Fprint(os.Stderr, "usage: sysvisorctl policy reload\n")
		return 2
	}
	resp, err := call(runDir, control.Request{Op: control.OpPolicyReload})
	if resp == nil || resp.Reload == nil {
		if err == nil {
			err = errors.New("sysvisord answered without a report")
		}
		return fail(err)
	}
	fmt.Printf("policy directory %s\n", resp.Reload.Dir)
	for _, l := range resp.Reload.Policies {
		fmt.Printf("%-12s %-10s %s\n", l.Name, l.Status, l.Source)
	}
	refused := resp.Reload.Refused()
	for _, l := range refused {
		if len(l.Problems) == 0 {
			fmt.Fprintf(os.Stderr, "%s\n", l.Error)
		}
		printPolicyError(&policy.ParseError{Policy: l.Name, Problems: l.Problems})
		if l.Status == policy.StatusKept {
			fmt.Fprintf(os.Stderr, "policy %q: file refused; sysvisord keeps its last good version (%s)\n", l.Name, l.Source)
		} else {
			fmt.Fprintf(os.Stderr, "policy %q: file refused and no earlier version: containers cannot use it until it is fixed and reloaded\n", l.Name)
		}
	}
	if err != nil || len(refused) > 0 {
		return 1
	}
	return 0
}

func loadFile(path string) (*policy.Policy, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return policy.Parse(strings.TrimSuffix(filepath.Base(path), ".hcl"), path, src)
}

func printPolicyError(err error) {
	var pe *policy.ParseError
	if !errors.As(err, &pe) {
		fmt.Fprintf(os.Stderr, "sysvisorctl: %v\n", err)
		return
	}
	for _, p := range pe.Problems {
		fmt.Fprintf(os.Stderr, "%s:%d:%d: error: %s\n", p.File, p.Line, p.Column, p.Summary)
		if p.Hint != "" {
			fmt.Fprintf(os.Stderr, "    hint: %s\n", p.Hint)
		}
	}
}
