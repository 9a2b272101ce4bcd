// runc-clamp is the runc baseline of the CRI tests (tests/cri.sh): runc,
// with one change to the bundle, the one sysvisor-runc also makes. The CRI
// asks oom_score_adj -998 for every sandbox; where the host does not give
// the runtime CAP_SYS_RESOURCE (this project's test VM), no process may go
// below its own, and plain runc fails every pod. It raises the value to its
// own and execs runc with the same arguments.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	if err := clamp(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "runc-clamp: %v\n", err)
		os.Exit(1)
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		fmt.Fprintf(os.Stderr, "runc-clamp: %v\n", err)
		os.Exit(1)
	}
	err = syscall.Exec(runc, append([]string{"runc"}, os.Args[1:]...), os.Environ())
	fmt.Fprintf(os.Stderr, "runc-clamp: exec %s: %v\n", runc, err)
	os.Exit(1)
}

// clamp edits config.json of a create or run: the bundle is --bundle's
// value (or -b), else the working directory.
func clamp(args []string) error {
	cmd, bundle := "", "."
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--bundle" || a == "-b":
			if i+1 < len(args) {
				bundle = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "--bundle="):
			bundle = strings.TrimPrefix(a, "--bundle=")
		case cmd == "" && !strings.HasPrefix(a, "-"):
			cmd = a
		case cmd == "" && (a == "--root" || a == "--log" || a == "--log-format" || a == "--criu" || a == "--rootless"):
			i++ // a global flag's value
		}
	}
	if cmd != "create" && cmd != "run" {
		return nil
	}
	floor, ok := ownFloor()
	if !ok {
		return nil
	}
	path := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	// Numbers kept as written: a spec holds 64-bit values (limits) that a
	// float64 would round.
	var spec map[string]any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	if err := dec.Decode(&spec); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	proc, _ := spec["process"].(map[string]any)
	n, isNum := proc["oomScoreAdj"].(json.Number)
	v, err := n.Int64()
	if !isNum || err != nil || int(v) >= floor {
		return nil
	}
	proc["oomScoreAdj"] = floor
	out, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

// ownFloor is this process's oom_score_adj when it lacks CAP_SYS_RESOURCE.
func ownFloor() (int, bool) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) == nil && data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) != 0 {
		return 0, false
	}
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0, false
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return v, err == nil
}
