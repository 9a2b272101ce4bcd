// benchtool is the Go side of bench/run: it registers benchmark "containers"
// with sysvisord over the control socket (as sysvisor-runc does before runc
// hands the listener over), and turns the raw samples bench/run collects into
// the results table and bench/out/results.json.
//
//	benchtool register   -run-dir DIR -id ID
//	benchtool unregister -run-dir DIR -id ID   prints notifications=N, then deletes
//	benchtool bundle-config -in FILE -out FILE -root PATH -cgroups-path PATH -args ARG...
//	                                         runc's default spec made to run ARGS without a terminal
//	benchtool gops-stats -run-dir DIR -pid PID   goroutines and threads from sysvisord's gops agent
//	benchtool restart -pidfile FILE -log FILE -run-dir DIR -- SYSVISORD ARGS...
//	                                         kill -9 sysvisord, start it again, time until it serves
//	benchtool gosup      -socket PATH [-sync-wakeup]   figure 2's Go floor with minimal work (gosup.go)
//	benchtool report     -raw DIR -out FILE [-png FILE] [-table FILE]
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
		fmt.Fprintln(os.Stderr, "usage: benchtool register|unregister|bundle-config|gops-stats|restart|gosup|report [flags]")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "register", "unregister":
		err = registration(cmd, args)
	case "bundle-config":
		err = bundleConfig(args)
	case "report":
		err = report(args)
	case "gops-stats":
		err = gopsStats(args)
	case "restart":
		err = restartOnce(args)
	case "gosup":
		err = gosup(args)
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
		// The built-in default policy (it emulates sysinfo). Its views are
		// mounted for nothing: there is no container to bind them into.
		_, err := control.Call(*runDir, control.Request{Op: control.OpCreate, ID: *id, Bundle: "/nonexistent", Policy: "default"}, timeout)
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

// bundleConfig turns the spec `runc spec` writes into figure 1b's template:
// the process runs ARGS without a terminal, as an engine's would, with a
// writable root at -root and its cgroup at -cgroups-path. Everything else
// stays runc's default, which sysvisor-runc accepts as is.
func bundleConfig(args []string) error {
	fs := flag.NewFlagSet("bundle-config", flag.ContinueOnError)
	in := fs.String("in", "config.json", "spec to read")
	out := fs.String("out", "config.json", "spec to write")
	root := fs.String("root", "rootfs", "root.path")
	cg := fs.String("cgroups-path", "", "linux.cgroupsPath")
	fs.Bool("args", false, "the remaining arguments are process.args")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("-args needs at least one argument")
	}
	b, err := os.ReadFile(*in)
	if err != nil {
		return err
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		return fmt.Errorf("%s: %w", *in, err)
	}
	proc, ok1 := spec["process"].(map[string]any)
	linux, ok2 := spec["linux"].(map[string]any)
	if !ok1 || !ok2 {
		return fmt.Errorf("%s: no process or linux section", *in)
	}
	proc["terminal"] = false
	proc["args"] = fs.Args()
	spec["root"] = map[string]any{"path": *root, "readonly": false}
	if *cg != "" {
		linux["cgroupsPath"] = *cg
	}
	b, err = json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return err
	}
	return os.WriteFile(*out, append(b, '\n'), 0o644)
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
	Runtime *RuntimeFigure    `json:"runtimeOnly"`
	Notify  *NotifyFigure     `json:"notifyRoundTrip"`
	Mount   *MountFigure      `json:"mount"`
	Syscall *SyscallFigure    `json:"untrappedSyscalls"`
	Proc    *ProcFigure       `json:"procViews"`
	Dind    *DindFigure       `json:"dindWorkloads"`
	Scale   *ScaleFigure      `json:"scale"`
	Build   *BuildFigure      `json:"realJob"`
	Restart *RestartFigure    `json:"restart"`
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
	Skipped   string          `json:"skipped,omitempty"`
	Note      string          `json:"note,omitempty"`
	Iters     int             `json:"callsPerRound,omitempty"`
	Warmup    int             `json:"warmupCallsPerRound,omitempty"`
	Rounds    int             `json:"rounds,omitempty"`
	Cgroup    string          `json:"cgroup,omitempty"`
	PinnedCPU string          `json:"pinnedCpu,omitempty"`
	Configs   []*NotifyConfig `json:"configs,omitempty"`
	// Go/C at the same work (csup --work full), per sync setting.
	RatioSyncOn     float64 `json:"ratioP50GoOverCSyncOn,omitempty"`
	RatioSyncOnP99  float64 `json:"ratioP99GoOverCSyncOn,omitempty"`
	RatioSyncOff    float64 `json:"ratioP50GoOverCSyncOff,omitempty"`
	RatioSyncOffP99 float64 `json:"ratioP99GoOverCSyncOff,omitempty"`
	RatioBest       float64 `json:"ratioP50BestGoOverBestCFloor,omitempty"`
	RatioBestP99    float64 `json:"ratioP99BestGoOverBestCFloor,omitempty"`
	// The notify mechanism in Go (benchtool gosup: sysvisord's receive,
	// memory write and send, nothing else) over C doing the same.
	RatioMechanism float64 `json:"ratioP50BestGoFloorOverBestCMinWork,omitempty"`
	// Context: C with per-call opens of the cgroup files (the old design),
	// and sysvisord's full work over C's memory write only.
	RatioReopen       float64 `json:"ratioP50BestGoOverBestCReopen,omitempty"`
	RatioFullOverCMin float64 `json:"ratioP50BestGoOverBestCMinWork,omitempty"`
	Target            float64 `json:"targetRatioP50"`
}

func report(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	raw := fs.String("raw", "bench/out/raw", "directory of raw samples written by bench/run")
	out := fs.String("out", "bench/out/results.json", "results file")
	chart := fs.String("png", "", "also draw the ratios as a PNG chart here")
	table := fs.String("table", "", "also write the table here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	res := Results{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine()}
	var err error
	if res.Start, err = startFigure(*raw); err != nil {
		return err
	}
	if res.Runtime, err = runtimeFigure(*raw); err != nil {
		return err
	}
	if res.Notify, err = notifyFigure(*raw); err != nil {
		return err
	}
	if res.Mount, err = mountFigure(*raw); err != nil {
		return err
	}
	if res.Syscall, err = syscallFigure(*raw); err != nil {
		return err
	}
	if res.Proc, err = procFigure(*raw); err != nil {
		return err
	}
	if res.Dind, err = dindFigure(*raw); err != nil {
		return err
	}
	if res.Scale, err = scaleFigure(*raw); err != nil {
		return err
	}
	if res.Build, err = buildFigure(*raw); err != nil {
		return err
	}
	if res.Restart, err = restartFigure(*raw); err != nil {
		return err
	}
	var w io.Writer = os.Stdout
	var tf *os.File
	if *table != "" {
		if tf, err = os.Create(*table); err != nil {
			return err
		}
		defer tf.Close()
		w = io.MultiWriter(os.Stdout, tf)
	}
	printTable(w, &res)
	if tf != nil {
		if err := tf.Close(); err != nil {
			return err
		}
	}
	if *chart != "" {
		if err := writeChart(*chart, &res); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
	}
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
		{"cgroups", "BENCH_CGROUPS"}, {"lxcfsVersion", "BENCH_LXCFS_VERSION"}, {"loadavgStart", "BENCH_LOADAVG_START"},
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

// openSamples opens a figure's samples, or says why it has none: bench/run
// skipped it (its .skip file names the reason) or wrote no samples.
func openSamples(dir, figure, name string) (*os.File, string) {
	if why := skipped(dir, figure); why != "" {
		return nil, why
	}
	file, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, "no samples: " + err.Error()
	}
	return file, ""
}

// eachJSON decodes the JSON values of a samples file (name, for errors)
// one after another and hands each to fn, stopping at fn's first error.
func eachJSON[T any](r io.Reader, name string, fn func(T) error) error {
	dec := json.NewDecoder(r)
	for {
		var v T
		if err := dec.Decode(&v); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := fn(v); err != nil {
			return err
		}
	}
}

// startFigure reads start.tsv: "runtime<TAB>phase<TAB>seconds" per docker run.
func startFigure(dir string) (*StartFigure, error) {
	f := &StartFigure{Target: 1.15}
	file, why := openSamples(dir, "start", "start.tsv")
	if file == nil {
		f.Skipped = why
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
	file, why := openSamples(dir, "notify", "notify.jsonl")
	if file == nil {
		f.Skipped = why
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
	if err := eachJSON(file, "notify.jsonl", func(s sample) error {
		if _, ok := byName[s.Config]; !ok {
			order = append(order, s.Config)
		}
		byName[s.Config] = append(byName[s.Config], s)
		return nil
	}); err != nil {
		return nil, err
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
	f.RatioSyncOnP99 = ratio(p99(cfg["sysvisord-sync"]), p99(cfg["csup-full-sync"]))
	f.RatioSyncOff = ratio(p50(cfg["sysvisord-nosync"]), p50(cfg["csup-full-nosync"]))
	f.RatioSyncOffP99 = ratio(p99(cfg["sysvisord-nosync"]), p99(cfg["csup-full-nosync"]))
	bestGo := best(f.Configs, "sysvisord", "", p50)
	f.RatioBest = ratio(bestGo, best(f.Configs, "csup", "full", p50))
	f.RatioBestP99 = ratio(best(f.Configs, "sysvisord", "", p99), best(f.Configs, "csup", "full", p99))
	f.RatioReopen = ratio(bestGo, best(f.Configs, "csup", "reopen", p50))
	f.RatioMechanism = ratio(best(f.Configs, "gosup", "min", p50), best(f.Configs, "csup", "min", p50))
	f.RatioFullOverCMin = ratio(bestGo, best(f.Configs, "csup", "min", p50))
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

	printRuntime(w, r.Runtime)
	printNotify(w, r.Notify)
	printMount(w, r.Mount)
	printSyscall(w, r.Syscall)
	printProc(w, r.Proc)
	printDind(w, r.Dind)
	printScale(w, r.Scale)
	printBuild(w, r.Build)
	printRestart(w, r.Restart)
}

func printNotify(w io.Writer, n *NotifyFigure) {
	fmt.Fprintln(w, "Figure 2: seccomp notify round trip, sysinfo(2) per call (µs; median [min–max] over rounds of each round's p50 / p99)")
	if n.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", n.Skipped)
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
		fmt.Fprintf(w, "  ratio Go/C (same work), sync wake-up on:  p50 %.3f, p99 %.3f\n", n.RatioSyncOn, n.RatioSyncOnP99)
	}
	if n.RatioSyncOff != 0 {
		fmt.Fprintf(w, "  ratio Go/C (same work), sync wake-up off: p50 %.3f, p99 %.3f\n", n.RatioSyncOff, n.RatioSyncOffP99)
	}
	fmt.Fprintf(w, "  ratio best Go / best C floor (same work), p50: %.3f %s\n", n.RatioBest, verdict(n.RatioBest, n.Target))
	fmt.Fprintf(w, "  ratio best Go / best C floor (same work), p99: %.3f\n", n.RatioBestP99)
	if n.RatioReopen != 0 {
		fmt.Fprintf(w, "  ratio best Go / best C opening every cgroup file per call, p50: %.3f (not like for like: context)\n", n.RatioReopen)
	}
	if n.RatioMechanism != 0 {
		fmt.Fprintf(w, "  ratio best Go floor / best C with minimal work (memory write only, the notify loop's code in Go), p50: %.3f %s\n", n.RatioMechanism, verdict(n.RatioMechanism, n.Target))
	}
	if n.RatioFullOverCMin != 0 {
		fmt.Fprintf(w, "  ratio best sysvisord / best C with minimal work, p50: %.3f (not like for like: context)\n", n.RatioFullOverCMin)
	}
	fmt.Fprintln(w)
}

func label(s string) string {
	switch s {
	case "csup":
		return "C (bench/csup)"
	case "sysvisord":
		return "sysvisord (Go)"
	case "gosup":
		return "Go floor (benchtool gosup)"
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

// --- figure 1b: the runtimes alone ----------------------------------------------

// RuntimeOp is one runtime command of figure 1b, in ms.
type RuntimeOp struct {
	Op         string `json:"op"`
	RuncMs     *Stat  `json:"runcMs"`
	SysvisorMs *Stat  `json:"sysvisorRuncMs"`
	// AddedMs is the median over the interleaved pairs of sysvisor-runc
	// minus runc: what sysvisor-runc adds to this command.
	AddedMs float64 `json:"medianAddedMs"`
	Ratio   float64 `json:"ratioOfMedians"`
}

// RuntimeKind is figure 1b for one kind of rootfs.
type RuntimeKind struct {
	Rootfs string       `json:"rootfs"`
	Ops    []*RuntimeOp `json:"ops"`
}

// RuntimeFigure is figure 1b: create, start and delete driven directly.
type RuntimeFigure struct {
	Skipped string         `json:"skipped,omitempty"`
	Warmup  int            `json:"warmupPerRuntime,omitempty"`
	Runs    int            `json:"runsPerRuntime,omitempty"`
	Kinds   []*RuntimeKind `json:"kinds,omitempty"`
	// Samples[rootfs][runtime][op], seconds converted to ms, run order.
	Samples map[string]map[string]map[string][]float64 `json:"samplesMs,omitempty"`
}

var runtimeOps = []string{"create", "start", "delete", "total"}

// runtimeFigure reads runtime.tsv: runtime, rootfs kind, phase, op, seconds.
func runtimeFigure(dir string) (*RuntimeFigure, error) {
	f := &RuntimeFigure{}
	file, why := openSamples(dir, "runtime", "runtime.tsv")
	if file == nil {
		f.Skipped = why
		return f, nil
	}
	defer file.Close()
	f.Warmup, f.Runs = envInt("BENCH_RUNTIME_WARMUP"), envInt("BENCH_RUNTIME_RUNS")
	f.Samples = map[string]map[string]map[string][]float64{}
	var kinds []string
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		p := strings.Split(sc.Text(), "\t")
		if len(p) != 5 || p[2] != "measured" {
			continue
		}
		v, err := strconv.ParseFloat(p[4], 64)
		if err != nil {
			return nil, fmt.Errorf("runtime.tsv: %q: %w", sc.Text(), err)
		}
		rt, kind, op := p[0], p[1], p[3]
		if f.Samples[kind] == nil {
			f.Samples[kind] = map[string]map[string][]float64{}
			kinds = append(kinds, kind)
		}
		if f.Samples[kind][rt] == nil {
			f.Samples[kind][rt] = map[string][]float64{}
		}
		m := f.Samples[kind][rt]
		m[op] = append(m[op], v*1000)
		if op == "delete" { // the last command of a run
			m["total"] = append(m["total"], m["create"][len(m["create"])-1]+m["start"][len(m["start"])-1]+v*1000)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, kind := range kinds {
		k := &RuntimeKind{Rootfs: kind}
		for _, op := range runtimeOps {
			a, b := f.Samples[kind]["runc"][op], f.Samples[kind]["sysvisor-runc"][op]
			o := &RuntimeOp{Op: op, RuncMs: summarise(a), SysvisorMs: summarise(b)}
			o.Ratio = ratio(o.SysvisorMs, o.RuncMs)
			var d []float64
			for i := 0; i < len(a) && i < len(b); i++ {
				d = append(d, b[i]-a[i])
			}
			if s := summarise(d); s != nil {
				o.AddedMs = math.Round(s.Median*10) / 10
			}
			k.Ops = append(k.Ops, o)
		}
		f.Kinds = append(f.Kinds, k)
	}
	if len(f.Kinds) == 0 {
		f.Skipped = "no measured samples in runtime.tsv"
	}
	return f, nil
}

func printRuntime(w io.Writer, f *RuntimeFigure) {
	fmt.Fprintln(w, "Figure 1b: the runtimes alone, OCI bundle of the same image driven with the runtime's CLI (ms, median [min–max])")
	if f.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", f.Skipped)
		return
	}
	fmt.Fprintf(w, "  RUNTIME create, start, (wait for exit, not timed), delete; %d warm-ups + %d measured per runtime and rootfs, interleaved\n", f.Warmup, f.Runs)
	for _, k := range f.Kinds {
		desc := map[string]string{"dir": "plain directory", "overlay": "overlay over that directory, as an engine hands it over"}[k.Rootfs]
		fmt.Fprintf(w, "  rootfs: %s\n", desc)
		t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(t, "  command\trunc ms\tsysvisor-runc ms\tadded ms (median of pairs)\tratio of medians")
		for _, o := range k.Ops {
			fmt.Fprintf(t, "  %s\t%s\t%s\t%+.1f\t%.2f\n", o.Op, fmtStat(o.RuncMs, 1), fmtStat(o.SysvisorMs, 1), o.AddedMs, o.Ratio)
		}
		t.Flush()
	}
	fmt.Fprintln(w)
}

// --- figure 3: mount and umount2 -------------------------------------------------

// MountEnv is one environment's figures for one mode; µs, median [min–max]
// over rounds of each round's p50 (p99 for PairP99).
type MountEnv struct {
	Env      string `json:"env"`
	Rounds   int    `json:"rounds"`
	MountUs  *Stat  `json:"mountP50Us"`
	UmountUs *Stat  `json:"umountP50Us"`
	PairUs   *Stat  `json:"pairP50Us"`
	PairP99  *Stat  `json:"pairP99Us"`
	PairMean *Stat  `json:"pairMeanUs"`
	// SupervisorCPUUs is sysvisord's CPU time (user + system, all threads)
	// per pair, warm-up pairs included; sysvisor only.
	SupervisorCPUUs *Stat     `json:"supervisorCpuUsPerPair,omitempty"`
	RoundPairP50Us  []float64 `json:"roundPairP50Us"`
}

// MountMode is figure 3 for one kind of mount.
type MountMode struct {
	Mode string      `json:"mode"`
	Envs []*MountEnv `json:"envs"`
	// Pair p50 ratios, sysvisor over each baseline.
	RatioNative float64 `json:"ratioPairP50SysvisorOverNative"`
	RatioRunc   float64 `json:"ratioPairP50SysvisorOverRuncPrivileged"`
	Target      float64 `json:"targetRatioOverNative,omitempty"`
}

// MountFigure is figure 3.
type MountFigure struct {
	Skipped string       `json:"skipped,omitempty"`
	Warmup  int          `json:"warmupPairs,omitempty"`
	Iters   int          `json:"timedPairs,omitempty"`
	Rounds  int          `json:"rounds,omitempty"`
	Envs    string       `json:"environments,omitempty"`
	Modes   []*MountMode `json:"modes,omitempty"`
	// PeerPairUs is the tmpfs pair of a peer runtime (Sysbox) on this kind
	// of machine, as quoted in the issue: not measured by this suite.
	PeerPairUs [2]float64 `json:"peerSysboxTmpfsPairUsQuoted"`
}

type mountStats struct {
	P50  float64 `json:"p50_ns"`
	P99  float64 `json:"p99_ns"`
	Mean float64 `json:"mean_ns"`
}

type mountSample struct {
	Env    string     `json:"env"`
	Round  int        `json:"round"`
	Mode   string     `json:"mode"`
	Iters  int        `json:"iters"`
	Warmup int        `json:"warmup"`
	Mount  mountStats `json:"mount"`
	Umount mountStats `json:"umount"`
	Pair   mountStats `json:"pair"`
	Ticks  *float64   `json:"supervisor_cpu_ticks"`
	ClkTck float64    `json:"clk_tck"`
}

var mountEnvs = []string{"native", "runc-privileged", "sysvisor"}

func mountFigure(dir string) (*MountFigure, error) {
	f := &MountFigure{PeerPairUs: [2]float64{800, 1100}}
	file, why := openSamples(dir, "mount", "mount.jsonl")
	if file == nil {
		f.Skipped = why
		return f, nil
	}
	defer file.Close()
	f.Warmup, f.Iters, f.Rounds = envInt("BENCH_MOUNT_WARMUP"), envInt("BENCH_MOUNT_ITERS"), envInt("BENCH_MOUNT_ROUNDS")
	f.Envs = os.Getenv("BENCH_MOUNT_ENVS")
	by := map[string]map[string][]mountSample{}
	var modes []string
	if err := eachJSON(file, "mount.jsonl", func(s mountSample) error {
		if by[s.Mode] == nil {
			by[s.Mode] = map[string][]mountSample{}
			modes = append(modes, s.Mode)
		}
		by[s.Mode][s.Env] = append(by[s.Mode][s.Env], s)
		return nil
	}); err != nil {
		return nil, err
	}
	for _, mode := range modes {
		m := &MountMode{Mode: mode}
		if mode == "tmpfs" {
			m.Target = 1.3
		}
		pair := map[string]*Stat{}
		for _, env := range mountEnvs {
			ss := by[mode][env]
			if len(ss) == 0 {
				continue
			}
			var mo, um, pa, p99, mean, cpu []float64
			for _, s := range ss {
				mo, um = append(mo, s.Mount.P50/1000), append(um, s.Umount.P50/1000)
				pa, p99, mean = append(pa, s.Pair.P50/1000), append(p99, s.Pair.P99/1000), append(mean, s.Pair.Mean/1000)
				if s.Ticks != nil && s.ClkTck > 0 && s.Iters+s.Warmup > 0 {
					cpu = append(cpu, *s.Ticks/s.ClkTck*1e6/float64(s.Iters+s.Warmup))
				}
			}
			e := &MountEnv{Env: env, Rounds: len(ss), MountUs: summarise(mo), UmountUs: summarise(um), PairUs: summarise(pa),
				PairP99: summarise(p99), PairMean: summarise(mean), SupervisorCPUUs: summarise(cpu), RoundPairP50Us: pa}
			pair[env] = e.PairUs
			m.Envs = append(m.Envs, e)
		}
		m.RatioNative = ratio(pair["sysvisor"], pair["native"])
		m.RatioRunc = ratio(pair["sysvisor"], pair["runc-privileged"])
		f.Modes = append(f.Modes, m)
	}
	if len(f.Modes) == 0 {
		f.Skipped = "no samples in mount.jsonl"
	}
	return f, nil
}

var mountCalls = map[string]string{
	"tmpfs": `mount("t", "/tmp/m", "tmpfs", 0, NULL) + umount2("/tmp/m", 0); sysvisord: mount CONTINUEd after copying its strings, umount2 emulated`,
	"proc":  `mount("proc", "/tmp/m", "proc", 0, NULL) + umount2("/tmp/m", MNT_DETACH); sysvisord: both emulated, procfs built detached with the container's masks`,
	"bind":  `mount("/tmp/src", "/tmp/m", NULL, MS_BIND, NULL) + umount2("/tmp/m", 0); sysvisord: both emulated`,
}

func printMount(w io.Writer, f *MountFigure) {
	fmt.Fprintln(w, "Figure 3: mount + umount2 pairs (µs; median [min–max] over rounds of each round's p50, or p99)")
	if f.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", f.Skipped)
		return
	}
	fmt.Fprintf(w, "  %d rounds x (%d warm-up + %d timed pairs) per mode and environment, environments interleaved\n", f.Rounds, f.Warmup, f.Iters)
	for _, m := range f.Modes {
		fmt.Fprintf(w, "  %s: %s\n", m.Mode, mountCalls[m.Mode])
		t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(t, "  environment\tmount p50\tumount2 p50\tpair p50\tpair p99\tsysvisord CPU per pair")
		for _, e := range m.Envs {
			cpu := "-"
			if e.SupervisorCPUUs != nil {
				cpu = fmtStat(e.SupervisorCPUUs, 0)
			}
			fmt.Fprintf(t, "  %s\t%s\t%s\t%s\t%s\t%s\n", e.Env, fmtStat(e.MountUs, 1), fmtStat(e.UmountUs, 1), fmtStat(e.PairUs, 1), fmtStat(e.PairP99, 1), cpu)
		}
		t.Flush()
		v := ""
		if m.Target != 0 {
			v = " " + verdict(m.RatioNative, m.Target)
		}
		fmt.Fprintf(w, "  ratio sysvisor/native (pair p50): %.2f%s\n", m.RatioNative, v)
		fmt.Fprintf(w, "  ratio sysvisor/runc-privileged (pair p50): %.2f\n", m.RatioRunc)
		if m.Mode == "tmpfs" {
			fmt.Fprintf(w, "  peer runtime (Sysbox), quoted for this kind of machine, not measured here: %.0f–%.0f µs per pair\n", f.PeerPairUs[0], f.PeerPairUs[1])
		}
	}
	fmt.Fprintln(w)
}
