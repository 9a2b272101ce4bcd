// sysvisorctl is sysvisor's debug console: it asks sysvisord over its
// control socket (root only).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/sysvisor/sysvisor/supervisor"
	"github.com/sysvisor/sysvisor/supervisor/control"
)

const usage = `usage: sysvisorctl [--run-dir DIR] COMMAND

commands:
  ps [--json]   containers served by sysvisord: id, init pid, ID range, policy, uptime
  version       versions of sysvisorctl and sysvisord
`

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("sysvisorctl", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(os.Stderr, usage) }
	runDir := fs.String("run-dir", envOr("SYSVISOR_RUN_DIR", control.DefaultRunDir), "sysvisord's run directory")
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
		return nil, fmt.Errorf("sysvisord's control socket is root-only: run sysvisorctl as root")
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
