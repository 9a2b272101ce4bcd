package runtime

import (
	"fmt"
	"strconv"
	"strings"
)

// Global holds the global flags: runc's (passed through) and sysvisor's own
// (consumed here).
type Global struct {
	Root          string
	Log           string
	LogFormat     string
	Debug         bool
	SystemdCgroup bool
	// Pass is the runc global flags to forward, as given.
	Pass []string

	Runc        string
	RunDir      string
	Policy      string
	PolicyDir   string
	AllowUnsafe bool
	// KernelFallbacks forces the fallbacks of these kernel features ("all"
	// or names separated by commas; kernel.Force).
	KernelFallbacks string
}

// Invocation is a parsed command line.
type Invocation struct {
	Global  Global
	Command string
	// Args are the command's arguments, forwarded untouched.
	Args []string
	// For create/run/delete:
	ID     string
	Bundle string
	Detach bool
	Force  bool
	// PreserveFds is runc's --preserve-fds count (fds 3.. passed through).
	PreserveFds int
	// Process is exec's --process file (the engine's process.json).
	Process string
}

type flagKind int

const (
	boolFlag flagKind = iota
	valueFlag
)

var runcGlobals = map[string]flagKind{
	"debug": boolFlag, "systemd-cgroup": boolFlag,
	"log": valueFlag, "log-format": valueFlag, "root": valueFlag, "criu": valueFlag, "rootless": valueFlag,
}

var ownGlobals = map[string]flagKind{
	"runc": valueFlag, "run-dir": valueFlag, "policy": valueFlag, "policy-dir": valueFlag, "allow-unsafe": boolFlag,
	"kernel-fallbacks": valueFlag,
}

// commandFlags lists the value flags of the commands whose positional id we
// must find; any other flag is taken as boolean.
var commandFlags = map[string]map[string]bool{
	"create": {"bundle": true, "b": true, "console-socket": true, "pid-file": true, "preserve-fds": true, "pidfd-socket": true},
	"run":    {"bundle": true, "b": true, "console-socket": true, "pid-file": true, "preserve-fds": true, "pidfd-socket": true},
	"delete": {},
	"kill":   {},
	"start":  {},
	"exec": {"console-socket": true, "pidfd-socket": true, "cwd": true, "env": true, "e": true, "user": true, "u": true,
		"additional-gids": true, "g": true, "process": true, "p": true, "process-label": true, "apparmor": true,
		"cap": true, "c": true, "preserve-fds": true, "pid-file": true, "cgroup": true},
}

// Commands is runc's command set that sysvisor-runc serves.
var Commands = []string{"create", "start", "run", "exec", "state", "kill", "delete", "list", "ps", "pause",
	"resume", "update", "events", "features", "spec", "checkpoint", "restore", "help"}

// splitFlag parses "-x", "--x", "-x=v", "--x=v".
func splitFlag(a string) (name, val string, hasVal, ok bool) {
	if len(a) < 2 || a[0] != '-' || a == "--" {
		return "", "", false, false
	}
	a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
	name, val, hasVal = strings.Cut(a, "=")
	return name, val, hasVal, name != ""
}

// Parse reads argv (without the program name). Global flags use Go-flag
// semantics like runc's CLI: one or two dashes, "=value" or a separate value.
func Parse(argv []string) (*Invocation, error) {
	inv := &Invocation{Global: Global{LogFormat: "text"}}
	g := &inv.Global
	i := 0
	for ; i < len(argv); i++ {
		a := argv[i]
		name, val, hasVal, ok := splitFlag(a)
		if !ok {
			break
		}
		kind, isRunc := runcGlobals[name]
		okind, isOwn := ownGlobals[name]
		if !isRunc && !isOwn {
			if name == "h" || name == "help" || name == "v" || name == "version" {
				g.Pass = append(g.Pass, a)
				continue
			}
			flag, _, _ := strings.Cut(a, "=")
			return nil, fmt.Errorf("flag provided but not defined: %s", flag)
		}
		if isOwn {
			kind = okind
		}
		if kind == valueFlag && !hasVal {
			if i+1 >= len(argv) {
				return nil, fmt.Errorf("flag needs an argument: -%s", name)
			}
			i++
			val = argv[i]
		}
		if kind == boolFlag && hasVal && val != "true" && val != "false" {
			return nil, fmt.Errorf("invalid boolean value %q for -%s", val, name)
		}
		on := !hasVal || val == "true"
		switch name {
		case "root":
			g.Root = val
		case "log":
			g.Log = val
		case "log-format":
			if val != "text" && val != "json" {
				return nil, fmt.Errorf("invalid log-format %q: want text or json", val)
			}
			g.LogFormat = val
		case "debug":
			g.Debug = on
		case "systemd-cgroup":
			g.SystemdCgroup = on
		case "runc":
			g.Runc = val
		case "run-dir":
			g.RunDir = val
		case "policy":
			g.Policy = val
		case "policy-dir":
			g.PolicyDir = val
		case "allow-unsafe":
			g.AllowUnsafe = on
		case "kernel-fallbacks":
			// Repeated flags add up, as the switch does with the
			// environment's list.
			g.KernelFallbacks = strings.TrimPrefix(g.KernelFallbacks+","+val, ",")
		}
		if isRunc {
			if kind == valueFlag {
				g.Pass = append(g.Pass, "--"+name, val)
			} else {
				g.Pass = append(g.Pass, fmt.Sprintf("--%s=%t", name, on))
			}
		}
	}
	if i < len(argv) {
		inv.Command = argv[i]
		inv.Args = argv[i+1:]
	}
	if vf, ok := commandFlags[inv.Command]; ok {
		if err := inv.parseCommand(vf); err != nil {
			return nil, err
		}
	}
	return inv, nil
}

func (inv *Invocation) parseCommand(valueFlags map[string]bool) error {
	args := inv.Args
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) && inv.ID == "" {
				inv.ID = args[i+1]
			}
			break
		}
		name, val, hasVal, ok := splitFlag(a)
		if !ok {
			if inv.ID == "" {
				inv.ID = a
				if inv.Command == "exec" {
					break // the rest is the command to run
				}
			}
			continue
		}
		if valueFlags[name] && !hasVal {
			if i+1 >= len(args) {
				return fmt.Errorf("%s: flag needs an argument: -%s", inv.Command, name)
			}
			i++
			val = args[i]
		}
		switch name {
		case "bundle", "b":
			inv.Bundle = val
		case "detach", "d":
			inv.Detach = !hasVal || val == "true"
		case "force", "f":
			inv.Force = !hasVal || val == "true"
		case "process", "p":
			inv.Process = val
		case "preserve-fds":
			// Parsed as runc's flag package does; Sscanf would take "3x" as 3.
			n, err := strconv.ParseUint(val, 0, 31)
			if err != nil {
				return fmt.Errorf("%s: invalid --preserve-fds %q", inv.Command, val)
			}
			inv.PreserveFds = int(n)
		}
	}
	if inv.ID == "" {
		return fmt.Errorf("%s: container id cannot be empty", inv.Command)
	}
	return nil
}
