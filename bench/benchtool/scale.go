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

// ScalePoint is figure 7 at one number of containers.
type ScalePoint struct {
	N int `json:"containers"`
	// Idle: sysvisord once the N containers are up.
	RSSKiB     int  `json:"rssKiB"`
	Threads    int  `json:"threads"`
	Goroutines *int `json:"goroutines,omitempty"`
	// BudgetKiB is the target: 30 MiB + 256 KiB per container.
	BudgetKiB int `json:"rssBudgetKiB"`
	// Busy: every container making trapped calls; pooled latencies, µs.
	Calls         int     `json:"calls"`
	P50Us         float64 `json:"p50Us"`
	P99Us         float64 `json:"p99Us"`
	MaxUs         float64 `json:"maxUs"`
	Late          int     `json:"containersStartedLate"`
	MaxLateMs     float64 `json:"maxLateMs"`
	BusyRSSKiB    int     `json:"rssAfterBusyKiB"`
	SupervisorCPU float64 `json:"supervisorCpuUsPerCall"`
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
	Points     []*ScalePoint `json:"points,omitempty"`
	// Slopes from no container to the largest count.
	RSSPerContainerKiB  float64 `json:"rssKiBPerContainer,omitempty"`
	GoPerContainer      float64 `json:"goroutinesPerContainer,omitempty"`
	ThreadsPerContainer float64 `json:"threadsPerContainer,omitempty"`
	// The C floor at the same pace: csup answering one client on the host.
	FloorP50Us  float64 `json:"cFloorP50Us,omitempty"`
	FloorP99Us  float64 `json:"cFloorP99Us,omitempty"`
	FloorCalls  int     `json:"cFloorCalls,omitempty"`
	TargetP99Us float64 `json:"targetP99UsAt100"`
	TargetRSS   string  `json:"targetRss"`
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
	Iters      int     `json:"iters"`
	P50        float64 `json:"p50_ns"`
	P99        float64 `json:"p99_ns"`
	ClkTck     float64 `json:"clk_tck"`
}

func rssBudget(n int) int { return 30*1024 + 256*n }

func scaleFigure(dir string) (*ScaleFigure, error) {
	f := &ScaleFigure{TargetP99Us: 50, TargetRSS: "30 MiB + 256 KiB per container"}
	file, why := openSamples(dir, "scale", "scale.jsonl")
	if file == nil {
		f.Skipped = why
		return f, nil
	}
	defer file.Close()
	if b, err := os.ReadFile(filepath.Join(dir, "scale.note")); err == nil {
		f.Note = strings.TrimSpace(string(b))
	}
	f.Counts = os.Getenv("BENCH_SCALE_COUNTS")
	f.PeriodUs, f.DurationMs = envInt("BENCH_SCALE_PERIOD_US"), envInt("BENCH_SCALE_DURATION_MS")
	points := map[int]*ScalePoint{}
	hists := map[int]map[float64]float64{}
	cpu := map[int]float64{}
	baseThreads := 0
	if err := eachJSON(file, "scale.jsonl", func(l scaleLine) error {
		if l.Phase == "floor" {
			f.FloorP50Us, f.FloorP99Us, f.FloorCalls = math.Round(l.P50/100)/10, math.Round(l.P99/100)/10, l.Iters
			return nil
		}
		if l.N == 0 {
			f.BaseRSSKiB, f.BaseGo, baseThreads = l.RSS, l.Goroutines, l.Threads
			return nil
		}
		p := points[l.N]
		if p == nil {
			p = &ScalePoint{N: l.N, BudgetKiB: rssBudget(l.N)}
			points[l.N] = p
			hists[l.N] = map[float64]float64{}
		}
		switch l.Phase {
		case "idle":
			p.RSSKiB, p.Threads, p.Goroutines = l.RSS, l.Threads, l.Goroutines
		case "busy":
			p.BusyRSSKiB = l.RSS
		case "loop":
			p.Calls += l.Calls
			if l.LateNs > 0 {
				p.Late++
				p.MaxLateMs = math.Max(p.MaxLateMs, math.Round(l.LateNs/1e4)/100)
			}
			for _, kv := range strings.Fields(l.Hist) {
				a, b, _ := strings.Cut(kv, ":")
				lo, err1 := strconv.ParseFloat(a, 64)
				c, err2 := strconv.ParseFloat(b, 64)
				if err1 != nil || err2 != nil {
					return fmt.Errorf("scale.jsonl: bad histogram entry %q", kv)
				}
				hists[l.N][lo] += c
			}
			if l.ClkTck > 0 {
				cpu[l.N] = l.Ticks / l.ClkTck * 1e6
			}
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
		p.P50Us, p.P99Us, p.MaxUs = histPct(hists[n], 0.5), histPct(hists[n], 0.99), histPct(hists[n], 1)
		if p.Calls > 0 {
			p.SupervisorCPU = math.Round(cpu[n]/float64(p.Calls)*10) / 10
		}
		f.Points = append(f.Points, p)
	}
	if len(f.Points) == 0 {
		f.Skipped = "no samples in scale.jsonl"
		return f, nil
	}
	last := f.Points[len(f.Points)-1]
	f.RSSPerContainerKiB = math.Round(float64(last.RSSKiB-f.BaseRSSKiB)/float64(last.N)*10) / 10
	f.ThreadsPerContainer = math.Round(float64(last.Threads-baseThreads)/float64(last.N)*100) / 100
	if last.Goroutines != nil && f.BaseGo != nil {
		f.GoPerContainer = math.Round(float64(*last.Goroutines-*f.BaseGo)/float64(last.N)*100) / 100
	}
	return f, nil
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

// p99At returns the point for n containers, or the nearest count below it.
func (f *ScaleFigure) pointAt(n int) *ScalePoint {
	var best *ScalePoint
	for _, p := range f.Points {
		if p.N <= n {
			best = p
		}
	}
	return best
}

func printScale(w io.Writer, f *ScaleFigure) {
	fmt.Fprintln(w, "Figure 7: scale, idle sysvisor containers (busybox sleep) and all of them making trapped sysinfo(2) calls")
	if f.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", f.Skipped)
		return
	}
	fmt.Fprintf(w, "  containers: %s; busy phase: every container one sysinfo every %d µs for %d ms, one start once all are ready; latencies pooled\n",
		f.Counts, f.PeriodUs, f.DurationMs)
	if f.Note != "" {
		fmt.Fprintf(w, "  note: %s\n", f.Note)
	}
	gor := func(g *int) string {
		if g == nil {
			return "-"
		}
		return strconv.Itoa(*g)
	}
	fmt.Fprintf(w, "  sysvisord before any container of this figure: RSS %.1f MiB, goroutines %s\n", float64(f.BaseRSSKiB)/1024, gor(f.BaseGo))
	if f.FloorCalls > 0 {
		fmt.Fprintf(w, "  C floor at the same pace (bench/csup --work full without cgroup files, one client on the host, no container): %d calls, p50 %.0f µs, p99 %.0f µs\n",
			f.FloorCalls, f.FloorP50Us, f.FloorP99Us)
	}
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "  containers\tRSS MiB (idle)\tbudget MiB\tgoroutines\tthreads\tcalls\tp50 µs\tp99 µs\tmax µs\tsysvisord CPU µs/call\tRSS MiB after busy\tlate starts")
	for _, p := range f.Points {
		fmt.Fprintf(t, "  %d\t%.1f\t%.1f\t%s\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.1f\t%.1f\t%d (max %.0f ms)\n", p.N, float64(p.RSSKiB)/1024, float64(p.BudgetKiB)/1024,
			gor(p.Goroutines), p.Threads, p.Calls, p.P50Us, p.P99Us, p.MaxUs, p.SupervisorCPU, float64(p.BusyRSSKiB)/1024, p.Late, p.MaxLateMs)
	}
	t.Flush()
	last := f.Points[len(f.Points)-1]
	rssVerdict := "met"
	for _, p := range f.Points {
		if p.RSSKiB > p.BudgetKiB {
			rssVerdict = "NOT met"
		}
	}
	fmt.Fprintf(w, "  per container (0 → %d): RSS %+.0f KiB, goroutines %+.2f, threads %+.2f; RSS budget 30 MiB + 256 KiB/container: %s\n",
		last.N, f.RSSPerContainerKiB, f.GoPerContainer, f.ThreadsPerContainer, rssVerdict)
	if p := f.pointAt(100); p != nil {
		v := "met"
		if p.P99Us > f.TargetP99Us {
			v = "NOT met"
		}
		fmt.Fprintf(w, "  p99 at %d busy containers: %.0f µs (target ≤ %.0f µs at 100: %s)\n", p.N, p.P99Us, f.TargetP99Us, v)
		if one := f.pointAt(1); one != nil && one.P99Us > 0 && p != one {
			fmt.Fprintf(w, "  p99 at %d over p99 at 1 busy container: %.2f\n", p.N, p.P99Us/one.P99Us)
		}
		if f.FloorP99Us > 0 {
			fmt.Fprintf(w, "  over the C floor at the same pace: p50 at 1 container %.2f, p99 at %d containers %.2f\n",
				f.floorRatio(1, false), p.N, p.P99Us/f.FloorP99Us)
		}
	}
	fmt.Fprintln(w)
}

// floorRatio is the p50 (or p99) at n containers over the C floor's.
func (f *ScaleFigure) floorRatio(n int, p99 bool) float64 {
	p := f.pointAt(n)
	if p == nil || f.FloorP50Us <= 0 || f.FloorP99Us <= 0 {
		return 0
	}
	if p99 {
		return p.P99Us / f.FloorP99Us
	}
	return p.P50Us / f.FloorP50Us
}
