package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/gops/signal"
)

// gopsStats asks the gops agent of process -pid (port file under
// <run-dir>/gops) for its runtime statistics and prints goroutines=N and
// threads=N.
func gopsStats(args []string) error {
	fs := flag.NewFlagSet("gops-stats", flag.ContinueOnError)
	runDir := fs.String("run-dir", "/run/sysvisor", "sysvisord's run directory")
	pid := fs.Int("pid", 0, "sysvisord's pid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(filepath.Join(*runDir, "gops", strconv.Itoa(*pid)))
	if err != nil {
		return fmt.Errorf("no gops agent for pid %d: %w", *pid, err)
	}
	port := strings.TrimSpace(string(b))
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", port), 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte{signal.Stats}); err != nil {
		return err
	}
	out, err := io.ReadAll(conn)
	if err != nil {
		return err
	}
	found := false
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		switch strings.TrimSpace(k) {
		case "goroutines":
			fmt.Printf("goroutines=%s\n", strings.TrimSpace(v))
			found = ok
		case "OS threads":
			fmt.Printf("threads=%s\n", strings.TrimSpace(v))
		}
	}
	if !found {
		return fmt.Errorf("unexpected answer from the gops agent: %q", out)
	}
	return nil
}

// --- figure 7: scale --------------------------------------------------------------

// The targets for figure 7.
const (
	targetP99OverFloor = 2.0 // sysvisord's p99 over the like-for-like C floor's, at each count
	targetCPUOverFloor = 1.5 // sysvisord's CPU per call over the C supervisors'
	targetGoPerCtr     = 2.0 // goroutines added per container
	targetThreadsBase  = 20  // OS threads: this many
	targetThreadsPer   = 0.1 // plus this many per container
	targetRSSAt        = 200 // the count the RSS target is stated for
	targetP99At        = 100 // the count the p99 target is stated for
	rssBaseKiB         = 30 * 1024
	rssPerCtrKiB       = 256
	// overflowUs is the lower bound of the loops' last histogram bucket:
	// a quantile there is only known to be at least this.
	overflowUs = 100000
)

func rssBudget(n int) int { return rssBaseKiB + rssPerCtrKiB*n }

func threadBudget(n int) float64 { return targetThreadsBase + targetThreadsPer*float64(n) }

// ScaleLoad is one busy phase: sysvisord's, or the C floor's at that count.
// Latencies pooled over every loop (or client), µs.
type ScaleLoad struct {
	// Supervisors is 1 for sysvisord, the number of csup processes for the floor.
	Supervisors int     `json:"supervisors"`
	Calls       int     `json:"calls"`
	P50Us       float64 `json:"p50Us"`
	P99Us       float64 `json:"p99Us"`
	MaxUs       float64 `json:"maxUs"`
	Late        int     `json:"startedLate"`
	MaxLateMs   float64 `json:"maxLateMs"`
	// CPUUsPerCall: the supervisors' CPU time over the busy window (from
	// the go file to the last loop's end), over Calls: sysvisord's utime +
	// stime in clock ticks, the C floor's from schedstat in ns.
	CPUUsPerCall float64 `json:"cpuUsPerCall"`

	hist  map[float64]float64
	cpuUs float64
}

func (l *ScaleLoad) add(s scaleLine) error {
	l.Calls += s.Calls
	if s.LateNs > 0 {
		l.Late++
		l.MaxLateMs = math.Max(l.MaxLateMs, math.Round(s.LateNs/1e4)/100)
	}
	for _, kv := range strings.Fields(s.Hist) {
		a, b, _ := strings.Cut(kv, ":")
		lo, err1 := strconv.ParseFloat(a, 64)
		c, err2 := strconv.ParseFloat(b, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("scale.jsonl: bad histogram entry %q", kv)
		}
		l.hist[lo] += c
	}
	// Every line of a phase carries the same CPU time: the whole window's.
	switch {
	case s.CPUNs > 0:
		l.cpuUs = s.CPUNs / 1e3
	case s.ClkTck > 0:
		l.cpuUs = s.Ticks / s.ClkTck * 1e6
	}
	return nil
}

func (l *ScaleLoad) finish() {
	l.P50Us, l.P99Us, l.MaxUs = histPct(l.hist, 0.5), histPct(l.hist, 0.99), histPct(l.hist, 1)
	if l.Calls > 0 {
		l.CPUUsPerCall = math.Round(l.cpuUs/float64(l.Calls)*100) / 100
	}
}

// ScalePoint is figure 7 at one number of containers.
type ScalePoint struct {
	N int `json:"containers"`
	// Idle: sysvisord once the N containers are up.
	RSSKiB     int  `json:"rssKiB"`
	Threads    int  `json:"threads"`
	Goroutines *int `json:"goroutines,omitempty"`
	// BudgetKiB is the target: 30 MiB + 256 KiB per container.
	BudgetKiB int `json:"rssBudgetKiB"`
	// ThreadBudget is the target: 20 + 0.1 per container.
	ThreadBudget float64 `json:"threadBudget"`
	// From no container to N, per container.
	RSSPerContainerKiB  float64  `json:"rssKiBPerContainer"`
	GoPerContainer      *float64 `json:"goroutinesPerContainer,omitempty"`
	ThreadsPerContainer float64  `json:"threadsPerContainer"`
	// Busy: every container making trapped calls; pooled latencies, µs.
	Calls         int     `json:"calls"`
	P50Us         float64 `json:"p50Us"`
	P99Us         float64 `json:"p99Us"`
	MaxUs         float64 `json:"maxUs"`
	Late          int     `json:"containersStartedLate"`
	MaxLateMs     float64 `json:"maxLateMs"`
	BusyRSSKiB    int     `json:"rssAfterBusyKiB"`
	BusyThreads   int     `json:"threadsAfterBusy"`
	SupervisorCPU float64 `json:"supervisorCpuUsPerCall"`
	// Floor is the C floor at this count: N csup processes, one client each.
	Floor *ScaleLoad `json:"cFloor,omitempty"`
	// Over the floor (0: no floor, or a floor too cheap to measure).
	P99OverFloor float64 `json:"p99OverCFloor,omitempty"`
	// P99OverFloorAtLeast: sysvisord's p99 is in the overflow bucket, so
	// P99OverFloor is a lower bound. A floor p99 in it leaves no ratio.
	P99OverFloorAtLeast bool    `json:"p99OverCFloorIsLowerBound,omitempty"`
	CPUOverFloor        float64 `json:"cpuPerCallOverCFloor,omitempty"`

	busy *ScaleLoad
}

// ScaleTarget is one of the targets, checked at every count.
type ScaleTarget struct {
	Target string `json:"target"`
	Met    bool   `json:"met"`
	// Checked is false when no count had what the target needs (no floor,
	// no goroutine count).
	Checked bool   `json:"checked"`
	Detail  string `json:"detail"`
}

// ScaleMemLimit is one container of the memory limit check.
type ScaleMemLimit struct {
	Container int `json:"container"`
	LimitKiB  int `json:"limitKiB"`
	FreeKiB   int `json:"freeTotalKiB"`
}

// ScaleFigure is figure 7.
type ScaleFigure struct {
	Skipped    string        `json:"skipped,omitempty"`
	Note       string        `json:"note,omitempty"`
	Counts     string        `json:"counts,omitempty"`
	PeriodUs   int           `json:"periodUsPerContainer,omitempty"`
	DurationMs int           `json:"durationMs,omitempty"`
	BaseRSSKiB int           `json:"rssKiBWithoutContainers,omitempty"`
	BaseGo     *int          `json:"goroutinesWithoutContainers,omitempty"`
	BaseThr    int           `json:"threadsWithoutContainers,omitempty"`
	Points     []*ScalePoint `json:"points,omitempty"`
	// Slopes from no container to the largest count.
	RSSPerContainerKiB  float64 `json:"rssKiBPerContainer,omitempty"`
	GoPerContainer      float64 `json:"goroutinesPerContainer,omitempty"`
	ThreadsPerContainer float64 `json:"threadsPerContainer,omitempty"`
	// Context: the C floor for ONE client at the same pace (csup answering
	// one client on the host), before any container; not the load of many.
	FloorP50Us float64 `json:"cFloorP50Us,omitempty"`
	FloorP99Us float64 `json:"cFloorP99Us,omitempty"`
	FloorCalls int     `json:"cFloorCalls,omitempty"`
	// Containers started with a memory limit of their own, and what free(1)
	// showed in them, at the largest count.
	MemLimits []ScaleMemLimit `json:"memoryLimits,omitempty"`
	MemSeen   int             `json:"memoryLimitsSeen"`
	Targets   []ScaleTarget   `json:"targets,omitempty"`
	// The targets, also in Targets as text with their verdicts.
	TargetP99OverFloor float64 `json:"targetP99OverCFloor"`
	TargetCPUOverFloor float64 `json:"targetCpuPerCallOverCFloor"`
	TargetRSS          string  `json:"targetRss"`
	TargetThreads      string  `json:"targetThreads"`
	TargetGoPerCtr     float64 `json:"targetGoroutinesPerContainer"`
}

type scaleLine struct {
	N          int     `json:"n"`
	Phase      string  `json:"phase"`
	RSS        int     `json:"rss_kb"`
	Threads    int     `json:"threads"`
	Goroutines *int    `json:"goroutines"`
	Calls      int     `json:"calls"`
	LateNs     float64 `json:"late_ns"`
	Hist       string  `json:"hist"`
	Ticks      float64 `json:"supervisor_cpu_ticks"`
	CPUNs      float64 `json:"supervisor_cpu_ns"`
	Iters      int     `json:"iters"`
	P50        float64 `json:"p50_ns"`
	P99        float64 `json:"p99_ns"`
	ClkTck     float64 `json:"clk_tck"`
	Container  int     `json:"container"`
	LimitKB    int     `json:"limit_kb"`
	FreeKB     int     `json:"free_kb"`
}

func scaleFigure(dir string) (*ScaleFigure, error) {
	f := &ScaleFigure{TargetP99OverFloor: targetP99OverFloor, TargetCPUOverFloor: targetCPUOverFloor, TargetRSS: "30 MiB + 256 KiB per container",
		TargetThreads: fmt.Sprintf("%d + %.1f per container", targetThreadsBase, targetThreadsPer), TargetGoPerCtr: targetGoPerCtr}
	file, why := openSamples(dir, "scale", "scale.jsonl")
	if file == nil {
		f.Skipped = why
		return f, nil
	}
	defer file.Close()
	if b, err := os.ReadFile(filepath.Join(dir, "scale.note")); err == nil {
		f.Note = strings.Join(strings.Fields(strings.ReplaceAll(string(b), "\n", "; ")), " ")
	}
	f.Counts = os.Getenv("BENCH_SCALE_COUNTS")
	f.PeriodUs, f.DurationMs = envInt("BENCH_SCALE_PERIOD_US"), envInt("BENCH_SCALE_DURATION_MS")
	points := map[int]*ScalePoint{}
	floorClients := map[int]int{}
	if err := eachJSON(file, "scale.jsonl", func(l scaleLine) error {
		switch {
		case l.Phase == "floor":
			f.FloorP50Us, f.FloorP99Us, f.FloorCalls = math.Round(l.P50/100)/10, math.Round(l.P99/100)/10, l.Iters
			return nil
		case l.Phase == "memlimit":
			f.MemLimits = append(f.MemLimits, ScaleMemLimit{Container: l.Container, LimitKiB: l.LimitKB, FreeKiB: l.FreeKB})
			if l.FreeKB == l.LimitKB {
				f.MemSeen++
			}
			return nil
		case l.N == 0:
			f.BaseRSSKiB, f.BaseGo, f.BaseThr = l.RSS, l.Goroutines, l.Threads
			return nil
		}
		p := points[l.N]
		if p == nil {
			p = &ScalePoint{N: l.N, BudgetKiB: rssBudget(l.N), ThreadBudget: threadBudget(l.N),
				busy: &ScaleLoad{Supervisors: 1, hist: map[float64]float64{}}}
			points[l.N] = p
		}
		switch l.Phase {
		case "idle":
			p.RSSKiB, p.Threads, p.Goroutines = l.RSS, l.Threads, l.Goroutines
		case "busy":
			p.BusyRSSKiB, p.BusyThreads = l.RSS, l.Threads
		case "loop":
			return p.busy.add(l)
		case "cfloor":
			if p.Floor == nil {
				p.Floor = &ScaleLoad{hist: map[float64]float64{}}
			}
			floorClients[l.N]++
			return p.Floor.add(l)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var ns []int
	for n := range points {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	for _, n := range ns {
		p := points[n]
		p.busy.finish()
		b := p.busy
		p.Calls, p.P50Us, p.P99Us, p.MaxUs, p.Late, p.MaxLateMs, p.SupervisorCPU = b.Calls, b.P50Us, b.P99Us, b.MaxUs, b.Late, b.MaxLateMs, b.CPUUsPerCall
		if p.Floor != nil {
			p.Floor.Supervisors = floorClients[n]
			p.Floor.finish()
			if p.Floor.P99Us > 0 && p.Floor.P99Us < overflowUs {
				p.P99OverFloor = math.Round(p.P99Us/p.Floor.P99Us*100) / 100
				p.P99OverFloorAtLeast = p.P99Us >= overflowUs
			}
			if p.Floor.cpuUs > 0 && p.Calls > 0 {
				p.CPUOverFloor = math.Round(b.cpuUs/float64(b.Calls)/(p.Floor.cpuUs/float64(p.Floor.Calls))*100) / 100
			}
		}
		p.RSSPerContainerKiB = math.Round(float64(p.RSSKiB-f.BaseRSSKiB)/float64(n)*10) / 10
		p.ThreadsPerContainer = math.Round(float64(p.Threads-f.BaseThr)/float64(n)*100) / 100
		if p.Goroutines != nil && f.BaseGo != nil {
			g := math.Round(float64(*p.Goroutines-*f.BaseGo)/float64(n)*100) / 100
			p.GoPerContainer = &g
		}
		f.Points = append(f.Points, p)
	}
	if len(f.Points) == 0 {
		f.Skipped = "no samples in scale.jsonl"
		return f, nil
	}
	last := f.Points[len(f.Points)-1]
	f.RSSPerContainerKiB, f.ThreadsPerContainer = last.RSSPerContainerKiB, last.ThreadsPerContainer
	if last.GoPerContainer != nil {
		f.GoPerContainer = *last.GoPerContainer
	}
	f.Targets = f.targets()
	return f, nil
}

// targets checks each of the targets at every count that has what
// it needs; a target is met when it is met at every such count.
func (f *ScaleFigure) targets() []ScaleTarget {
	check := func(name string, ok func(p *ScalePoint) (string, bool, bool)) ScaleTarget {
		t := ScaleTarget{Target: name, Met: true}
		var parts []string
		for _, p := range f.Points {
			s, met, checked := ok(p)
			if !checked {
				parts = append(parts, fmt.Sprintf("%d: -", p.N))
				continue
			}
			t.Checked = true
			if !met {
				t.Met = false
				s += " NOT met"
			}
			parts = append(parts, fmt.Sprintf("%d: %s", p.N, s))
		}
		t.Met = t.Met && t.Checked
		t.Detail = strings.Join(parts, ", ")
		return t
	}
	return []ScaleTarget{
		check(fmt.Sprintf("p99 ≤ %.0f× the C floor's p99 at the same count", targetP99OverFloor), func(p *ScalePoint) (string, bool, bool) {
			// A lower bound within the target says nothing.
			if p.P99OverFloor == 0 || (p.P99OverFloorAtLeast && p.P99OverFloor <= targetP99OverFloor) {
				return "", false, false
			}
			return p99Ratio(p) + "×", p.P99OverFloor <= targetP99OverFloor, true
		}),
		check(fmt.Sprintf("sysvisord CPU per call ≤ %.1f× the C supervisors'", targetCPUOverFloor), func(p *ScalePoint) (string, bool, bool) {
			if p.CPUOverFloor == 0 {
				return "", false, false
			}
			return fmt.Sprintf("%.2f×", p.CPUOverFloor), p.CPUOverFloor <= targetCPUOverFloor, true
		}),
		check("RSS ≤ 30 MiB + 256 KiB per container", func(p *ScalePoint) (string, bool, bool) {
			return fmt.Sprintf("%.1f/%.1f MiB", float64(p.RSSKiB)/1024, float64(p.BudgetKiB)/1024), p.RSSKiB <= p.BudgetKiB, true
		}),
		check(fmt.Sprintf("OS threads ≤ %d + %.1f per container", targetThreadsBase, targetThreadsPer), func(p *ScalePoint) (string, bool, bool) {
			return fmt.Sprintf("%d/%.0f", p.Threads, math.Floor(p.ThreadBudget)), float64(p.Threads) <= p.ThreadBudget, true
		}),
		check(fmt.Sprintf("goroutines ≤ %.0f per container (added from no container)", targetGoPerCtr), func(p *ScalePoint) (string, bool, bool) {
			if p.GoPerContainer == nil {
				return "", false, false
			}
			return fmt.Sprintf("%+.2f", *p.GoPerContainer), *p.GoPerContainer <= targetGoPerCtr, true
		}),
	}
}

// histPct is the lower bound, in µs, of the bucket holding quantile q of a
// histogram keyed by bucket lower bound in ns (1 µs buckets below 1 ms).
func histPct(h map[float64]float64, q float64) float64 {
	var keys []float64
	total := 0.0
	for k, c := range h {
		keys = append(keys, k)
		total += c
	}
	if total == 0 {
		return 0
	}
	sort.Float64s(keys)
	seen := 0.0
	for _, k := range keys {
		seen += h[k]
		if seen >= q*total {
			return k / 1000
		}
	}
	return keys[len(keys)-1] / 1000
}

// pointAt returns the point for n containers, or the nearest count below it.
func (f *ScaleFigure) pointAt(n int) *ScalePoint {
	var best *ScalePoint
	for _, p := range f.Points {
		if p.N <= n {
			best = p
		}
	}
	return best
}

// fmtUs prints a latency from the loops' histograms; one in the overflow
// bucket is only a lower bound.
func fmtUs(v float64) string {
	if v >= overflowUs {
		return fmt.Sprintf("≥%.0f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func p99Ratio(p *ScalePoint) string {
	switch {
	case p.P99OverFloor == 0:
		return "-"
	case p.P99OverFloorAtLeast:
		return fmt.Sprintf("≥%.2f", p.P99OverFloor)
	}
	return fmt.Sprintf("%.2f", p.P99OverFloor)
}

func metOr(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func printScale(w io.Writer, f *ScaleFigure) {
	fmt.Fprintln(w, "Figure 7: scale, idle sysvisor containers (busybox sleep) and all of them making trapped sysinfo(2) calls, vs as many C supervisors")
	if f.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", f.Skipped)
		return
	}
	fmt.Fprintf(w, "  containers: %s; busy phase: every container one sysinfo every %d µs for %d ms, one start once all are ready; latencies pooled\n",
		f.Counts, f.PeriodUs, f.DurationMs)
	fmt.Fprintf(w, "  C floor at each count, right after sysvisord's busy phase: as many csup processes (--work full, each reading a memory and pids cgroup its client joined, as sysvisord reads a container's) as containers,\n")
	fmt.Fprintf(w, "    each serving one client on the host (no container) at the same pace for as long, all started together; latencies pooled\n")
	if f.Note != "" {
		fmt.Fprintf(w, "  note: %s\n", f.Note)
	}
	gor := func(g *int) string {
		if g == nil {
			return "-"
		}
		return strconv.Itoa(*g)
	}
	fmt.Fprintf(w, "  sysvisord before any container of this figure: RSS %.1f MiB, goroutines %s, threads %d\n", float64(f.BaseRSSKiB)/1024, gor(f.BaseGo), f.BaseThr)
	if f.FloorCalls > 0 {
		fmt.Fprintf(w, "  context, C floor for ONE client at the same pace (csup --work full without cgroup files, before any container): %d calls, p50 %.0f µs, p99 %.0f µs\n",
			f.FloorCalls, f.FloorP50Us, f.FloorP99Us)
	}
	fmt.Fprintln(w, "  idle sysvisord (per container: added since no container, over the count)")
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "  containers\tRSS MiB\tbudget MiB\tRSS KiB/ctr\tgoroutines\tgoroutines/ctr\tthreads\tthread budget\tthreads/ctr\tRSS MiB after busy\tthreads after busy")
	for _, p := range f.Points {
		gpc := "-"
		if p.GoPerContainer != nil {
			gpc = fmt.Sprintf("%+.2f", *p.GoPerContainer)
		}
		fmt.Fprintf(t, "  %d\t%.1f\t%.1f\t%+.0f\t%s\t%s\t%d\t%.0f\t%+.2f\t%.1f\t%d\n", p.N, float64(p.RSSKiB)/1024, float64(p.BudgetKiB)/1024, p.RSSPerContainerKiB,
			gor(p.Goroutines), gpc, p.Threads, math.Floor(p.ThreadBudget), p.ThreadsPerContainer, float64(p.BusyRSSKiB)/1024, p.BusyThreads)
	}
	t.Flush()
	fmt.Fprintln(w, "  busy (CPU: the supervisors' CPU time from the common start to the last loop's end, over the calls)")
	t = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "  containers\tsupervisor\tcalls\tp50 µs\tp99 µs\tmax µs\tCPU µs/call\tlate starts\tp99 / floor\tCPU / floor")
	ratio := func(r float64) string {
		if r == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", r)
	}
	for _, p := range f.Points {
		fmt.Fprintf(t, "  %d\tsysvisord\t%d\t%s\t%s\t%s\t%.1f\t%d (max %.0f ms)\t%s\t%s\n", p.N, p.Calls, fmtUs(p.P50Us), fmtUs(p.P99Us), fmtUs(p.MaxUs), p.SupervisorCPU,
			p.Late, p.MaxLateMs, p99Ratio(p), ratio(p.CPUOverFloor))
		if fl := p.Floor; fl != nil {
			fmt.Fprintf(t, "  \tC floor (%d csup)\t%d\t%s\t%s\t%s\t%.1f\t%d (max %.0f ms)\t\t\n", fl.Supervisors, fl.Calls, fmtUs(fl.P50Us), fmtUs(fl.P99Us), fmtUs(fl.MaxUs),
				fl.CPUUsPerCall, fl.Late, fl.MaxLateMs)
		} else {
			fmt.Fprintf(t, "  \tC floor\tdid not run\t\t\t\t\t\t\t\n")
		}
	}
	t.Flush()
	fmt.Fprintln(w, "  targets, at each count (a target is met when it is met at every count checked):")
	for _, tg := range f.Targets {
		v := metOr(tg.Met)
		if !tg.Checked {
			v = "not checked (nothing to check it against)"
		}
		fmt.Fprintf(w, "    %s: %s (%s)\n", tg.Target, v, tg.Detail)
	}
	if p := f.pointAt(targetP99At); p != nil {
		if p.P99OverFloor > 0 {
			v := metOr(p.P99OverFloor <= targetP99OverFloor)
			if p.P99OverFloorAtLeast && p.P99OverFloor <= targetP99OverFloor {
				v = "unknown, sysvisord's p99 is beyond the histogram"
			}
			fmt.Fprintf(w, "  p99 at %d busy containers: %s µs, C floor with %d csup %s µs: %s× (target ≤ %.0f×: %s)\n", p.N, fmtUs(p.P99Us), p.Floor.Supervisors,
				fmtUs(p.Floor.P99Us), p99Ratio(p), targetP99OverFloor, v)
		} else {
			fmt.Fprintf(w, "  p99 at %d busy containers: %.0f µs, no C floor to compare with\n", p.N, p.P99Us)
		}
	}
	if p := f.pointAt(targetRSSAt); p != nil {
		fmt.Fprintf(w, "  RSS at %d containers: %.1f MiB, budget %.1f MiB (%s)\n", p.N, float64(p.RSSKiB)/1024, float64(p.BudgetKiB)/1024, metOr(p.RSSKiB <= p.BudgetKiB))
	}
	if len(f.MemLimits) > 0 {
		var bad []string
		for _, m := range f.MemLimits {
			if m.FreeKiB != m.LimitKiB {
				bad = append(bad, fmt.Sprintf("bench-scale-%d: free %d KiB, limit %d KiB", m.Container, m.FreeKiB, m.LimitKiB))
			}
		}
		v := "met"
		if len(bad) > 0 {
			v = "FAILED: " + strings.Join(bad, "; ")
		}
		fmt.Fprintf(w, "  memory limits seen in free: %d of %d (containers with --memory 64 MiB + their number, `free -k` total = limit): %s\n",
			f.MemSeen, len(f.MemLimits), v)
	} else {
		fmt.Fprintln(w, "  memory limits seen in free: not checked (no container with a limit)")
	}
	fmt.Fprintln(w)
}
