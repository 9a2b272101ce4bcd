package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// --- figure 5: /proc views vs LXCFS -------------------------------------------------

// ProcEnv is one place's figures for one file; µs, median [min–max] over
// rounds of each run's p50 (p99 for P99Us).
type ProcEnv struct {
	Env   string    `json:"env"`
	Bytes int       `json:"bytes"`
	P50Us *Stat     `json:"p50Us"`
	P99Us *Stat     `json:"p99Us"`
	Round []float64 `json:"roundP50Us"`
}

// ProcFile is figure 5 for one file.
type ProcFile struct {
	File string `json:"file"`
	// View: sysvisor's container has one of its views mounted on the
	// file; LXCFSView: the LXCFS container has an LXCFS file there. Both
	// come from the containers' mountinfo (procview.mounted), so a file
	// the kernel serves in one of them is never taken for a view.
	View      bool       `json:"sysvisorView"`
	LXCFSView bool       `json:"lxcfsView"`
	Envs      []*ProcEnv `json:"envs"`
	// Ratios of p50s: sysvisor over LXCFS (lower is better; the target is
	// 1/3), its inverse (the speed-up), and sysvisor over the host.
	RatioLXCFS  float64 `json:"ratioP50SysvisorOverLxcfs,omitempty"`
	SpeedUp     float64 `json:"speedUpOverLxcfs,omitempty"`
	RatioNative float64 `json:"ratioP50SysvisorOverNative,omitempty"`
}

// ProcFigure is figure 5.
type ProcFigure struct {
	Skipped string `json:"skipped,omitempty"`
	Warmup  int    `json:"warmupReads,omitempty"`
	Iters   int    `json:"timedReads,omitempty"`
	Rounds  int    `json:"rounds,omitempty"`
	LXCFS   string `json:"lxcfsVersion,omitempty"`
	// PinnedCPU is BENCH_PIN_CPU (the containers get --cpuset-cpus).
	PinnedCPU string      `json:"pinnedCpu,omitempty"`
	Files     []*ProcFile `json:"files,omitempty"`
	// Target: sysvisor at least this many times faster than LXCFS.
	TargetSpeedUp float64 `json:"targetSpeedUpOverLxcfs"`
	// What the issue quotes for a peer runtime (Sysbox) on this kind of
	// machine, µs; not measured by this suite.
	PeerUs map[string][2]float64 `json:"peerSysboxUsQuoted"`
	// Parallel: open+read+close cycles per second with several readers at
	// once, per file and place (one run each).
	Parallel []ProcParallel `json:"parallel,omitempty"`
}

// ProcParallel is one parallel-readers run.
type ProcParallel struct {
	Env     string  `json:"env"`
	File    string  `json:"file"`
	Readers int     `json:"readers"`
	Ms      int     `json:"ms"`
	OpsPerS float64 `json:"ops_per_s"`
}

type procSample struct {
	Env     string  `json:"env"`
	Round   int     `json:"round"`
	File    string  `json:"file"`
	Missing bool    `json:"missing"`
	Bytes   int     `json:"bytes"`
	P50     float64 `json:"p50_ns"`
	P99     float64 `json:"p99_ns"`
}

var procEnvs = []string{"native", "runc", "lxcfs", "sysvisor"}

func procFigure(dir string) (*ProcFigure, error) {
	f := &ProcFigure{TargetSpeedUp: 3, PeerUs: map[string][2]float64{
		"/proc/uptime": {300, 400}, "/proc/sys/kernel/panic": {300, 300}}}
	file, why := openSamples(dir, "procview", "procview.jsonl")
	if file == nil {
		f.Skipped = why
		return f, nil
	}
	defer file.Close()
	f.Warmup, f.Iters, f.Rounds = envInt("BENCH_PROC_WARMUP"), envInt("BENCH_PROC_ITERS"), envInt("BENCH_PROC_ROUNDS")
	f.LXCFS = os.Getenv("BENCH_LXCFS_VERSION")
	f.PinnedCPU = os.Getenv("BENCH_PIN_CPU")
	// by[file][env][round]
	by := map[string]map[string]map[int]procSample{}
	var files []string
	if err := eachJSON(file, "procview.jsonl", func(s procSample) error {
		if s.Missing {
			return nil
		}
		if by[s.File] == nil {
			by[s.File] = map[string]map[int]procSample{}
			files = append(files, s.File)
		}
		if by[s.File][s.Env] == nil {
			by[s.File][s.Env] = map[int]procSample{}
		}
		by[s.File][s.Env][s.Round] = s
		return nil
	}); err != nil {
		return nil, err
	}
	mounted := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(dir, "procview.mounted")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			mounted[strings.TrimSpace(l)] = true
		}
	}
	for _, name := range files {
		pf := &ProcFile{File: name, View: mounted["sysvisor "+name], LXCFSView: mounted["lxcfs "+name]}
		p50 := map[string]*Stat{}
		for _, env := range procEnvs {
			ss := by[name][env]
			if len(ss) == 0 {
				continue
			}
			a, b := map[int]float64{}, map[int]float64{}
			bytes := 0
			for r, s := range ss {
				a[r], b[r], bytes = s.P50/1000, s.P99/1000, s.Bytes
			}
			e := &ProcEnv{Env: env, Bytes: bytes, Round: inRoundOrder(a)}
			e.P50Us, e.P99Us = summarise(e.Round), summarise(inRoundOrder(b))
			p50[env] = e.P50Us
			pf.Envs = append(pf.Envs, e)
		}
		pf.RatioLXCFS = ratio(p50["sysvisor"], p50["lxcfs"])
		if pf.RatioLXCFS > 0 {
			pf.SpeedUp = math.Round(p50["lxcfs"].Median/p50["sysvisor"].Median*100) / 100
		}
		pf.RatioNative = ratio(p50["sysvisor"], p50["native"])
		f.Files = append(f.Files, pf)
	}
	if len(f.Files) == 0 {
		f.Skipped = "no samples in procview.jsonl"
	}
	if par, err := os.Open(filepath.Join(dir, "procpar.jsonl")); err == nil {
		defer par.Close()
		if err := eachJSON(par, "procpar.jsonl", func(p ProcParallel) error {
			f.Parallel = append(f.Parallel, p)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// printProcParallel prints the parallel readers' throughput, per file: each
// place's cycles per second and sysvisor's over LXCFS's (higher is better).
func printProcParallel(w io.Writer, f *ProcFigure) {
	if len(f.Parallel) == 0 {
		return
	}
	by := map[string]map[string]ProcParallel{}
	var files []string
	for _, p := range f.Parallel {
		if by[p.File] == nil {
			by[p.File] = map[string]ProcParallel{}
			files = append(files, p.File)
		}
		by[p.File][p.Env] = p
	}
	p0 := f.Parallel[0]
	fmt.Fprintf(w, "  %d readers in parallel, %d ms each, cycles per second (whole run):\n", p0.Readers, p0.Ms)
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "  file\thost\trunc\tlxcfs\tsysvisor\tsysvisor/LXCFS throughput")
	for _, file := range files {
		col := func(env string) string {
			if p, ok := by[file][env]; ok {
				return fmt.Sprintf("%.0f", p.OpsPerS)
			}
			return "-"
		}
		r := "-"
		if l, s := by[file]["lxcfs"], by[file]["sysvisor"]; l.OpsPerS > 0 && s.OpsPerS > 0 {
			r = fmt.Sprintf("%.2fx", s.OpsPerS/l.OpsPerS)
		}
		fmt.Fprintf(t, "  %s\t%s\t%s\t%s\t%s\t%s\n", file, col("native"), col("runc"), col("lxcfs"), col("sysvisor"), r)
	}
	t.Flush()
}

func printProc(w io.Writer, f *ProcFigure) {
	fmt.Fprintln(w, "Figure 5: open + read to EOF + close of /proc files (µs; median [min–max] over rounds of each run's p50)")
	if f.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", f.Skipped)
		return
	}
	fmt.Fprintf(w, "  %d rounds x (%d warm-up + %d timed reads) per file and place, places interleaved; containers with -m 256m; %s\n",
		f.Rounds, f.Warmup, f.Iters, or(f.LXCFS))
	fmt.Fprintln(w, "  host: no container; runc: the kernel's files; lxcfs: runc + LXCFS bind-mounted over them; sysvisor: its views")
	if f.PinnedCPU != "" {
		fmt.Fprintf(w, "  pinned to CPU %s (containers with --cpuset-cpus)\n", f.PinnedCPU)
	}
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "  file\thost\trunc\tlxcfs\tsysvisor\tlxcfs p99\tsysvisor p99\tLXCFS/sysvisor (p50)\tsysvisor/host")
	for _, pf := range f.Files {
		cols := map[string]string{}
		p99 := map[string]string{}
		for _, e := range pf.Envs {
			cols[e.Env], p99[e.Env] = fmtStat(e.P50Us, 1), fmtStat(e.P99Us, 1)
		}
		speed := "-"
		if pf.SpeedUp > 0 {
			speed = fmt.Sprintf("%.2fx", pf.SpeedUp)
			switch {
			case pf.View && pf.LXCFSView:
				speed += " " + verdictAtLeast(pf.SpeedUp, f.TargetSpeedUp)
			case pf.View:
				speed += " (LXCFS: the kernel's file)"
			case pf.LXCFSView:
				speed += " (sysvisor: the kernel's file)"
			default:
				speed += " (the kernel's file in both)"
			}
		}
		fmt.Fprintf(t, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\n", pf.File, or(cols["native"]), or(cols["runc"]), or(cols["lxcfs"]), or(cols["sysvisor"]),
			or(p99["lxcfs"]), or(p99["sysvisor"]), speed, pf.RatioNative)
	}
	t.Flush()
	for _, pf := range f.Files {
		if !pf.View || !pf.LXCFSView {
			fmt.Fprintf(w, "  %s: sysvisor %s, LXCFS %s (from each container's mountinfo); no target\n", pf.File, served(pf.View), served(pf.LXCFSView))
		}
	}
	printProcParallel(w, f)
	fmt.Fprintln(w, "  peer runtime (Sysbox), quoted for this kind of machine, not measured here: /proc/uptime 300–400 µs, /proc/sys/kernel/panic 300 µs; LXCFS meminfo 230 µs")
	fmt.Fprintln(w)
}

func verdictAtLeast(r, target float64) string {
	if r >= target {
		return fmt.Sprintf("(target ≥ %.0fx: met)", target)
	}
	return fmt.Sprintf("(target ≥ %.0fx: NOT met)", target)
}

func served(view bool) string {
	if view {
		return "serves a view"
	}
	return "leaves the kernel's file"
}
