// benchtool is the Go side of bench/run: it registers benchmark "containers"
// with sysvisord over the control socket (as sysvisor-runc does before runc
// hands the listener over), and turns the raw samples bench/run collects into
// the results table and bench/out/results.json.
//
//	benchtool register   -run-dir DIR -id ID
//	benchtool unregister -run-dir DIR -id ID   prints notifications=N, then deletes
//	benchtool report     -raw DIR -out FILE
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/supervisor/control"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool register|unregister|report [flags]")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "register", "unregister":
		err = registration(cmd, args)
	case "report":
		err = report(args)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchtool %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func registration(cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	runDir := fs.String("run-dir", control.DefaultRunDir, "sysvisord's run directory")
	id := fs.String("id", "", "container id")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *id == "" {
		return errors.New("-id is required")
	}
	const timeout = 10 * time.Second
	if cmd == "register" {
		// What sysvisor-runc sends at create, minus the runc root: the
		// supervisor's reconcile then never mistakes it for a dead container.
		_, err := control.Call(*runDir, control.Request{Op: control.OpCreate, ID: *id, Bundle: "/nonexistent", Policy: "bench"}, timeout)
		return err
	}
	resp, err := control.Call(*runDir, control.Request{Op: control.OpPs}, timeout)
	if err != nil {
		return err
	}
	n := uint64(0)
	for _, c := range resp.Containers {
		if c.ID == *id {
			n = c.Notifications
		}
	}
	fmt.Printf("notifications=%d\n", n)
	_, err = control.Call(*runDir, control.Request{Op: control.OpDelete, ID: *id}, timeout)
	return err
}

// Stat summarises repeated measurements.
type Stat struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Mean   float64 `json:"mean"`
}

func summarise(xs []float64) *Stat {
	if len(xs) == 0 {
		return nil
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return &Stat{N: len(s), Median: med, Min: s[0], Max: s[len(s)-1], Mean: sum / float64(len(s))}
}

func ratio(a, b *Stat) float64 {
	if a == nil || b == nil || b.Median == 0 {
		return 0
	}
	return math.Round(a.Median/b.Median*1000) / 1000
}

// Results is bench/out/results.json.
type Results struct {
	Date    string            `json:"date"`
	Machine map[string]string `json:"machine"`
	Start   *StartFigure      `json:"containerStart"`
	Notify  *NotifyFigure     `json:"notifyRoundTrip"`
}

// StartFigure is figure 1: docker run --rm IMAGE true, wall clock in ms.
type StartFigure struct {
	Skipped    string  `json:"skipped,omitempty"`
	Command    string  `json:"command,omitempty"`
	Warmup     int     `json:"warmupPerRuntime,omitempty"`
	Runs       int     `json:"runsPerRuntime,omitempty"`
	Order      string  `json:"order,omitempty"`
	BaselineMs *Stat   `json:"runcMs,omitempty"`
	SysvisorMs *Stat   `json:"sysvisorRuncMs,omitempty"`
	Ratio      float64 `json:"ratioOfMedians,omitempty"`
	// PairRatio is the median of sysvisor/runc over the interleaved pairs,
	// which cancels slow drift of the machine.
	PairRatio float64 `json:"medianPairRatio,omitempty"`
	Target    float64 `json:"targetRatio"`
	// The measured samples, in run order.
	RuncSamples     []float64 `json:"runcSamplesMs,omitempty"`
	SysvisorSamples []float64 `json:"sysvisorRuncSamplesMs,omitempty"`
}

// NotifyConfig is one supervisor setup of figure 2; latencies in µs.
type NotifyConfig struct {
	Name       string `json:"name"`
	Supervisor string `json:"supervisor"`
	Work       string `json:"work"`
	SyncWakeUp bool   `json:"syncWakeUp"`
	Rounds     int    `json:"rounds"`
	P50Us      *Stat  `json:"p50Us"`
	P99Us      *Stat  `json:"p99Us"`
	MeanUs     *Stat  `json:"meanUs"`
	// Per-round p50 and p99 in µs, in round order.
	RoundP50Us []float64 `json:"roundP50Us"`
	RoundP99Us []float64 `json:"roundP99Us"`
}

// NotifyFigure is figure 2.
type NotifyFigure struct {
	Skipped        string          `json:"skipped,omitempty"`
	Note           string          `json:"note,omitempty"`
	Iters          int             `json:"callsPerRound,omitempty"`
	Warmup         int             `json:"warmupCallsPerRound,omitempty"`
	Rounds         int             `json:"rounds,omitempty"`
	Cgroup         string          `json:"cgroup,omitempty"`
	PinnedCPU      string          `json:"pinnedCpu,omitempty"`
	Configs        []*NotifyConfig `json:"configs,omitempty"`
	RatioSyncOn    float64         `json:"ratioP50GoOverCSyncOn,omitempty"`
	RatioSyncOff   float64         `json:"ratioP50GoOverCSyncOff,omitempty"`
	RatioBest      float64         `json:"ratioP50BestGoOverBestCFloor,omitempty"`
	RatioBestP99   float64         `json:"ratioP99BestGoOverBestCFloor,omitempty"`
	RatioMechanism float64         `json:"ratioP50BestGoOverBestCMinWork,omitempty"`
	Target         float64         `json:"targetRatioP50"`
}

func report(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	raw := fs.String("raw", "bench/out/raw", "directory of raw samples written by bench/run")
	out := fs.String("out", "bench/out/results.json", "results file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res := Results{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine()}
	var err error
	if res.Start, err = startFigure(*raw); err != nil {
		return err
	}
	if res.Notify, err = notifyFigure(*raw); err != nil {
		return err
	}
	printTable(os.Stdout, &res)
	b, err := json.MarshalIndent(&res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(*out, append(b, '\n'), 0o644)
}

func machine() map[string]string {
	m := map[string]string{"goarch": runtime.GOARCH, "go": runtime.Version(), "cpus": strconv.Itoa(runtime.NumCPU())}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m["kernel"] = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpuModel"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m["loadavgEnd"] = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	// bench/run passes what it learnt from the tools it ran.
	for _, kv := range []struct{ key, env string }{
		{"runcVersion", "BENCH_RUNC_VERSION"}, {"dockerVersion", "BENCH_DOCKER_VERSION"},
		{"sysvisordVersion", "BENCH_SYSVISORD_VERSION"}, {"ccVersion", "BENCH_CC_VERSION"},
		{"cgroups", "BENCH_CGROUPS"}, {"loadavgStart", "BENCH_LOADAVG_START"},
	} {
		if v := os.Getenv(kv.env); v != "" {
			m[kv.key] = v
		}
	}
	return m
}

func envInt(k string) int {
	n, _ := strconv.Atoi(os.Getenv(k))
	return n
}

// skipped returns the reason in DIR/NAME.skip, if any.
func skipped(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name+".skip"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// startFigure reads start.tsv: "runtime<TAB>phase<TAB>seconds" per docker run.
func startFigure(dir string) (*StartFigure, error) {
	f := &StartFigure{Target: 1.15}
	if f.Skipped = skipped(dir, "start"); f.Skipped != "" {
		return f, nil
	}
	file, err := os.Open(filepath.Join(dir, "start.tsv"))
	if err != nil {
		f.Skipped = "no samples: " + err.Error()
		return f, nil
	}
	defer file.Close()
	ms := map[string][]float64{}
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		p := strings.Split(sc.Text(), "\t")
		if len(p) != 3 || p[1] != "measured" {
			continue
		}
		s, err := strconv.ParseFloat(p[2], 64)
		if err != nil {
			return nil, fmt.Errorf("start.tsv: %q: %w", sc.Text(), err)
		}
		ms[p[0]] = append(ms[p[0]], s*1000)
	}
	f.Command = os.Getenv("BENCH_START_CMD")
	f.Warmup, f.Runs = envInt("BENCH_START_WARMUP"), envInt("BENCH_START_RUNS")
	f.Order = "interleaved runc, sysvisor-runc, runc, ..."
	f.RuncSamples, f.SysvisorSamples = ms["runc"], ms["sysvisor-runc"]
	f.BaselineMs, f.SysvisorMs = summarise(f.RuncSamples), summarise(f.SysvisorSamples)
	if f.BaselineMs == nil || f.SysvisorMs == nil {
		f.Skipped = "incomplete samples in start.tsv"
		return f, nil
	}
	f.Ratio = ratio(f.SysvisorMs, f.BaselineMs)
	var pairs []float64
	for i := 0; i < len(f.RuncSamples) && i < len(f.SysvisorSamples); i++ {
		pairs = append(pairs, f.SysvisorSamples[i]/f.RuncSamples[i])
	}
	f.PairRatio = math.Round(summarise(pairs).Median*1000) / 1000
	return f, sc.Err()
}

// sample is one line of notify.jsonl: a config label plus the client's output.
type sample struct {
	Config     string  `json:"config"`
	Supervisor string  `json:"supervisor"`
	Work       string  `json:"work"`
	Sync       bool    `json:"sync"`
	Round      int     `json:"round"`
	P50        float64 `json:"p50_ns"`
	P99        float64 `json:"p99_ns"`
	Mean       float64 `json:"mean_ns"`
}

func notifyFigure(dir string) (*NotifyFigure, error) {
	f := &NotifyFigure{Target: 1.5}
	if f.Skipped = skipped(dir, "notify"); f.Skipped != "" {
		return f, nil
	}
	file, err := os.Open(filepath.Join(dir, "notify.jsonl"))
	if err != nil {
		f.Skipped = "no samples: " + err.Error()
		return f, nil
	}
	defer file.Close()
	f.Iters, f.Warmup, f.Rounds = envInt("BENCH_NOTIFY_ITERS"), envInt("BENCH_NOTIFY_WARMUP"), envInt("BENCH_NOTIFY_ROUNDS")
	f.Cgroup = os.Getenv("BENCH_NOTIFY_CGROUP")
	f.PinnedCPU = os.Getenv("BENCH_PIN_CPU")
	if b, err := os.ReadFile(filepath.Join(dir, "notify.note")); err == nil {
		f.Note = strings.TrimSpace(string(b))
	}
	byName := map[string][]sample{}
	var order []string
	dec := json.NewDecoder(file)
	for {
		var s sample
		if err := dec.Decode(&s); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("notify.jsonl: %w", err)
		}
		if _, ok := byName[s.Config]; !ok {
			order = append(order, s.Config)
		}
		byName[s.Config] = append(byName[s.Config], s)
	}
	cfg := map[string]*NotifyConfig{}
	for _, name := range order {
		ss := byName[name]
		var p50, p99, mean []float64
		for _, s := range ss {
			p50, p99, mean = append(p50, s.P50/1000), append(p99, s.P99/1000), append(mean, s.Mean/1000)
		}
		c := &NotifyConfig{Name: name, Supervisor: ss[0].Supervisor, Work: ss[0].Work, SyncWakeUp: ss[0].Sync,
			Rounds: len(ss), P50Us: summarise(p50), P99Us: summarise(p99), MeanUs: summarise(mean),
			RoundP50Us: p50, RoundP99Us: p99}
		cfg[name] = c
		f.Configs = append(f.Configs, c)
	}
	f.RatioSyncOn = ratio(p50(cfg["sysvisord-sync"]), p50(cfg["csup-full-sync"]))
	f.RatioSyncOff = ratio(p50(cfg["sysvisord-nosync"]), p50(cfg["csup-full-nosync"]))
	bestGo := best(f.Configs, "sysvisord", "", p50)
	f.RatioBest = ratio(bestGo, best(f.Configs, "csup", "full", p50))
	f.RatioBestP99 = ratio(best(f.Configs, "sysvisord", "", p99), best(f.Configs, "csup", "full", p99))
	f.RatioMechanism = ratio(bestGo, best(f.Configs, "csup", "min", p50))
	return f, nil
}

func p50(c *NotifyConfig) *Stat {
	if c == nil {
		return nil
	}
	return c.P50Us
}

func p99(c *NotifyConfig) *Stat {
	if c == nil {
		return nil
	}
	return c.P99Us
}

// best is the lowest median among configs of supervisor (and work, if set).
func best(cs []*NotifyConfig, supervisor, work string, get func(*NotifyConfig) *Stat) *Stat {
	var b *Stat
	for _, c := range cs {
		if c.Supervisor != supervisor || (work != "" && c.Work != work) {
			continue
		}
		if s := get(c); s != nil && (b == nil || s.Median < b.Median) {
			b = s
		}
	}
	return b
}

func fmtStat(s *Stat, prec int) string {
	if s == nil {
		return "-"
	}
	return fmt.Sprintf("%.*f [%.*f–%.*f]", prec, s.Median, prec, s.Min, prec, s.Max)
}

func verdict(r, target float64) string {
	switch {
	case r == 0:
		return ""
	case r <= target:
		return fmt.Sprintf("(target ≤ %.2f: met)", target)
	default:
		return fmt.Sprintf("(target ≤ %.2f: NOT met)", target)
	}
}

func printTable(w io.Writer, r *Results) {
	m := r.Machine
	fmt.Fprintf(w, "\nsysvisor benchmarks — %s\n", r.Date)
	fmt.Fprintf(w, "kernel %s, %s x%s, runc %s, docker %s, %s; load average %s at start, %s at end\n\n", m["kernel"], m["cpuModel"], m["cpus"],
		or(m["runcVersion"]), or(m["dockerVersion"]), m["go"], or(m["loadavgStart"]), or(m["loadavgEnd"]))

	s := r.Start
	fmt.Fprintln(w, "Figure 1: container start, wall clock of `docker run --rm` (ms, median [min–max])")
	if s.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", s.Skipped)
	} else {
		fmt.Fprintf(w, "  %s; %d warm-ups + %d measured per runtime, interleaved\n", s.Command, s.Warmup, s.Runs)
		t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(t, "  runtime\tms\tmean")
		fmt.Fprintf(t, "  runc (baseline)\t%s\t%.1f\n", fmtStat(s.BaselineMs, 1), s.BaselineMs.Mean)
		fmt.Fprintf(t, "  sysvisor-runc\t%s\t%.1f\n", fmtStat(s.SysvisorMs, 1), s.SysvisorMs.Mean)
		t.Flush()
		fmt.Fprintf(w, "  ratio sysvisor/runc (medians): %.3f %s\n", s.Ratio, verdict(s.Ratio, s.Target))
		fmt.Fprintf(w, "  ratio sysvisor/runc (median of the %d interleaved pairs): %.3f\n\n", len(s.RuncSamples), s.PairRatio)
	}

	n := r.Notify
	fmt.Fprintln(w, "Figure 2: seccomp notify round trip, sysinfo(2) per call (µs; median [min–max] over rounds of each round's p50 / p99)")
	if n.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n", n.Skipped)
		return
	}
	fmt.Fprintf(w, "  %d rounds x (%d warm-up + %d timed calls) per config, configs interleaved; client in %s\n", n.Rounds, n.Warmup, n.Iters, n.Cgroup)
	if n.PinnedCPU != "" {
		fmt.Fprintf(w, "  every supervisor and client pinned to CPU %s\n", n.PinnedCPU)
	} else {
		fmt.Fprintln(w, "  supervisors and client not pinned: the scheduler places them")
	}
	if n.Note != "" {
		fmt.Fprintf(w, "  note: %s\n", n.Note)
	}
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "  supervisor\twork\tsync wake-up\tp50 µs\tp99 µs\tmean µs")
	for _, c := range n.Configs {
		sync := "off"
		if c.SyncWakeUp {
			sync = "on"
		}
		if c.Supervisor == "none" {
			sync = "-"
		}
		fmt.Fprintf(t, "  %s\t%s\t%s\t%s\t%s\t%s\n", label(c.Supervisor), c.Work, sync, fmtStat(c.P50Us, 1), fmtStat(c.P99Us, 1), fmtStat(c.MeanUs, 1))
	}
	t.Flush()
	if n.RatioSyncOn != 0 {
		fmt.Fprintf(w, "  ratio Go/C p50, sync wake-up on:  %.3f\n", n.RatioSyncOn)
	}
	if n.RatioSyncOff != 0 {
		fmt.Fprintf(w, "  ratio Go/C p50, sync wake-up off: %.3f\n", n.RatioSyncOff)
	}
	fmt.Fprintf(w, "  ratio best Go / best C floor (same work), p50: %.3f %s\n", n.RatioBest, verdict(n.RatioBest, n.Target))
	fmt.Fprintf(w, "  ratio best Go / best C floor (same work), p99: %.3f\n", n.RatioBestP99)
	if n.RatioMechanism != 0 {
		fmt.Fprintf(w, "  ratio best Go / best C with minimal work (memory write only), p50: %.3f (not like for like: context)\n", n.RatioMechanism)
	}
}

func label(s string) string {
	switch s {
	case "csup":
		return "C (bench/csup)"
	case "sysvisord":
		return "sysvisord (Go)"
	case "none":
		return "no filter (native)"
	}
	return s
}

func or(s string) string {
	if s == "" {
		return "?"
	}
	return s
}
