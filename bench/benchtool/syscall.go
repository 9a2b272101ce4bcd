package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"text/tabwriter"
)

// --- figure 4: untrapped system calls ---------------------------------------------

// SyscallKind is figure 4 for one kind of call: ns per call, median
// [min–max] over rounds of each run's median batch.
type SyscallKind struct {
	Kind       string  `json:"kind"`
	NativeNs   *Stat   `json:"nativeNsPerOp,omitempty"`
	RuncNs     *Stat   `json:"runcNsPerOp"`
	SysvisorNs *Stat   `json:"sysvisorNsPerOp"`
	Ratio      float64 `json:"ratioOfMedians"`
	// PairRatio is the median over rounds of sysvisor/runc within a round.
	PairRatio float64 `json:"medianPairRatio"`
	AddedNs   float64 `json:"medianAddedNs"`
}

// SyscallFigure is figure 4.
type SyscallFigure struct {
	Skipped string         `json:"skipped,omitempty"`
	Warmup  int            `json:"warmupCalls,omitempty"`
	Iters   int            `json:"callsPerBatch,omitempty"`
	Batches int            `json:"batches,omitempty"`
	Rounds  int            `json:"rounds,omitempty"`
	Kinds   []*SyscallKind `json:"kinds,omitempty"`
	// PinnedCPU is BENCH_PIN_CPU: the host run under taskset, the
	// containers with --cpuset-cpus.
	PinnedCPU string  `json:"pinnedCpu,omitempty"`
	Target    float64 `json:"targetRatio"`
}

type syscallSample struct {
	Env   string `json:"env"`
	Round int    `json:"round"`
	Mode  string `json:"mode"`
	NsOp  struct {
		Median float64 `json:"median"`
	} `json:"ns_per_op"`
}

func syscallFigure(dir string) (*SyscallFigure, error) {
	f := &SyscallFigure{Target: 1.02}
	file, why := openSamples(dir, "syscall", "syscall.jsonl")
	if file == nil {
		f.Skipped = why
		return f, nil
	}
	defer file.Close()
	f.Warmup, f.Iters = envInt("BENCH_SYSCALL_WARMUP"), envInt("BENCH_SYSCALL_ITERS")
	f.Batches, f.Rounds = envInt("BENCH_SYSCALL_BATCHES"), envInt("BENCH_SYSCALL_ROUNDS")
	f.PinnedCPU = os.Getenv("BENCH_PIN_CPU")
	// by[kind][env][round] = ns per call
	by := map[string]map[string]map[int]float64{}
	var kinds []string
	if err := eachJSON(file, "syscall.jsonl", func(s syscallSample) error {
		if by[s.Mode] == nil {
			by[s.Mode] = map[string]map[int]float64{}
			kinds = append(kinds, s.Mode)
		}
		if by[s.Mode][s.Env] == nil {
			by[s.Mode][s.Env] = map[int]float64{}
		}
		by[s.Mode][s.Env][s.Round] = s.NsOp.Median
		return nil
	}); err != nil {
		return nil, err
	}
	for _, kind := range kinds {
		vals := func(env string) []float64 { return inRoundOrder(by[kind][env]) }
		k := &SyscallKind{Kind: kind, NativeNs: summarise(vals("native")), RuncNs: summarise(vals("runc")), SysvisorNs: summarise(vals("sysvisor"))}
		k.Ratio = ratio(k.SysvisorNs, k.RuncNs)
		var pr, add []float64
		for r, sv := range by[kind]["sysvisor"] {
			if rc, ok := by[kind]["runc"][r]; ok && rc > 0 {
				pr, add = append(pr, sv/rc), append(add, sv-rc)
			}
		}
		if s := summarise(pr); s != nil {
			k.PairRatio = math.Round(s.Median*1000) / 1000
		}
		if s := summarise(add); s != nil {
			k.AddedNs = math.Round(s.Median*10) / 10
		}
		f.Kinds = append(f.Kinds, k)
	}
	if len(f.Kinds) == 0 {
		f.Skipped = "no samples in syscall.jsonl"
	}
	return f, nil
}

var syscallCalls = map[string]string{
	"getpid": "syscall(SYS_getpid)",
	"read":   "pread(fd, buf, 4096, 0) of /etc/passwd, opened once",
	"stat":   "stat(\"/etc/passwd\") on the container's rootfs",
}

func printSyscall(w io.Writer, f *SyscallFigure) {
	fmt.Fprintln(w, "Figure 4: untrapped system calls, ns per call (median [min–max] over rounds of each run's median batch)")
	if f.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", f.Skipped)
		return
	}
	fmt.Fprintf(w, "  %d rounds x (%d warm-up calls + %d batches of %d calls) per kind and place, places interleaved; engine's default seccomp profile in both containers\n",
		f.Rounds, f.Warmup, f.Batches, f.Iters)
	if f.PinnedCPU != "" {
		fmt.Fprintf(w, "  pinned to CPU %s\n", f.PinnedCPU)
	}
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "  call\thost (context)\trunc\tsysvisor\tadded ns (median of rounds)\tratio of medians\tmedian of round ratios")
	for _, k := range f.Kinds {
		fmt.Fprintf(t, "  %s\t%s\t%s\t%s\t%+.1f\t%.3f\t%.3f %s\n", k.Kind, fmtStat(k.NativeNs, 1), fmtStat(k.RuncNs, 1), fmtStat(k.SysvisorNs, 1),
			k.AddedNs, k.Ratio, k.PairRatio, verdict(k.PairRatio, f.Target))
	}
	t.Flush()
	for _, k := range f.Kinds {
		fmt.Fprintf(w, "  %s: %s\n", k.Kind, syscallCalls[k.Kind])
	}
	fmt.Fprintln(w)
}

// inRoundOrder returns the values of a round-indexed map, by round.
func inRoundOrder(m map[int]float64) []float64 {
	rounds := make([]int, 0, len(m))
	for r := range m {
		rounds = append(rounds, r)
	}
	sort.Ints(rounds)
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = m[r]
	}
	return v
}
