// sysvisorctl is sysvisor's debug console: it asks sysvisord over its
// control socket (root only).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor"
	"github.com/sysvisor/sysvisor/supervisor/control"
)

const usage = `usage: sysvisorctl [--run-dir DIR] [--policy-dir DIR] COMMAND

commands (ask sysvisord; root only):
  ps [--json]             containers served by sysvisord: id, init pid, ID range, policy, uptime
  inspect ID              one container's full record as JSON (ID or a unique prefix)
  log-level LEVEL         change sysvisord's log level (trace, debug, info, warn, error) until it restarts
  version                 versions of sysvisorctl and sysvisord
  policy reload           make sysvisord re-read its policy directory (as SIGHUP does); a refused
                          file is reported with file:line:column and its last good version stays

commands (local, any user):
  policy check FILE...    validate policy files; every error with file:line:column and a hint
  policy explain NAME     what a container under a policy (name or FILE.hcl) can and cannot do
  policy list             the policies a container can name
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
