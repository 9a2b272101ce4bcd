// Package doctor checks a host for what sysvisor needs, one verdict per
// line (sysvisorctl doctor). The judging of each check is a pure function of
// what was read (kernel release, /proc files, runc's feature document,
// subordinate-ID files, daemon.json), tested with fixtures; the probes that
// gather it act on the real kernel and change nothing on the host.
package doctor

import (
	"fmt"
	"io"
	"strings"
)

// Verdict of a check.
type Verdict int

// Verdicts, from best to worst.
const (
	OK Verdict = iota
	Warn
	Fail
)

func (v Verdict) String() string {
	switch v {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	}
	return "FAIL"
}

// Result is one line of the report.
type Result struct {
	Check   string  `json:"check"`
	Verdict Verdict `json:"verdict"`
	Detail  string  `json:"detail"`
	Hint    string  `json:"hint,omitempty"`
}

func ok(check, detail string) Result { return Result{Check: check, Verdict: OK, Detail: detail} }
func warn(check, detail, hint string) Result {
	return Result{Check: check, Verdict: Warn, Detail: detail, Hint: hint}
}
func fail(check, detail, hint string) Result {
	return Result{Check: check, Verdict: Fail, Detail: detail, Hint: hint}
}

// Print writes one line per result (and its hint below it) and returns the
// worst verdict.
func Print(w io.Writer, rs []Result) Verdict {
	worst := OK
	width := 0
	for _, r := range rs {
		width = max(width, len(r.Check))
	}
	for _, r := range rs {
		fmt.Fprintf(w, "%-4s  %-*s  %s\n", r.Verdict, width, r.Check, r.Detail)
		if r.Hint != "" && r.Verdict != OK {
			fmt.Fprintf(w, "      %-*s  hint: %s\n", width, "", r.Hint)
		}
		worst = max(worst, r.Verdict)
	}
	return worst
}

// Options says where to look; empty fields take the defaults.
type Options struct {
	Runc       string // runc binary (default: $SYSVISOR_RUNC, else runc from PATH)
	RunDir     string // sysvisord's run directory
	PolicyDir  string
	SubUID     string
	SubGID     string
	DaemonJSON string // Docker's daemon.json
	// ContainerdConfig is containerd's config.toml (default
	// /etc/containerd/config.toml), and Containerd its binary, asked for
	// its version (default: containerd from PATH).
	ContainerdConfig string
	Containerd       string
	// IdmapDir is where the idmapped-mount probe clones a mount from
	// (default /var/lib: where engines keep their layers).
	IdmapDir string
	// Docker is the docker CLI asked for the engine's cgroup driver and
	// security options (default: docker from PATH).
	Docker string
	// CgroupRoot is where the cgroup filesystems are (default
	// /sys/fs/cgroup).
	CgroupRoot string
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
