package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
)

// --- figure 8: a real job ------------------------------------------------------------

// BuildFigure is figure 8: untar + a Go build and test, wall clock in s.
type BuildFigure struct {
	Skipped   string               `json:"skipped,omitempty"`
	Command   string               `json:"command,omitempty"`
	Go        string               `json:"go,omitempty"`
	Rounds    int                  `json:"rounds,omitempty"`
	NativeS   *Stat                `json:"hostS,omitempty"`
	RuncS     *Stat                `json:"runcS,omitempty"`
	SysvisorS *Stat                `json:"sysvisorS,omitempty"`
	Ratio     float64              `json:"ratioOfMedians,omitempty"`
	PairRatio float64              `json:"medianPairRatio,omitempty"`
	Samples   map[string][]float64 `json:"samplesS,omitempty"`
}

// buildFigure reads build.tsv: place, round, seconds.
func buildFigure(dir string) (*BuildFigure, error) {
	f := &BuildFigure{}
	file, why := openSamples(dir, "build", "build.tsv")
	if file == nil {
		f.Skipped = why
		return f, nil
	}
	defer file.Close()
	f.Command, f.Go, f.Rounds = os.Getenv("BENCH_BUILD_CMD"), os.Getenv("BENCH_BUILD_GO"), envInt("BENCH_BUILD_ROUNDS")
	by := map[string]map[int]float64{}
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		p := strings.Split(sc.Text(), "\t")
		if len(p) != 3 {
			continue
		}
		r, err1 := strconv.Atoi(p[1])
		v, err2 := strconv.ParseFloat(p[2], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("build.tsv: %q", sc.Text())
		}
		if by[p[0]] == nil {
			by[p[0]] = map[int]float64{}
		}
		by[p[0]][r] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	f.Samples = map[string][]float64{}
	for env, m := range by {
		f.Samples[env] = inRoundOrder(m)
	}
	f.NativeS, f.RuncS, f.SysvisorS = summarise(f.Samples["native"]), summarise(f.Samples["runc"]), summarise(f.Samples["sysvisor"])
	if f.RuncS == nil || f.SysvisorS == nil {
		f.Skipped = "incomplete samples in build.tsv"
		return f, nil
	}
	f.Ratio = ratio(f.SysvisorS, f.RuncS)
	var pr []float64
	for r, sv := range by["sysvisor"] {
		if rc, ok := by["runc"][r]; ok && rc > 0 {
			pr = append(pr, sv/rc)
		}
	}
	if s := summarise(pr); s != nil {
		f.PairRatio = math.Round(s.Median*1000) / 1000
	}
	return f, nil
}

func printBuild(w io.Writer, f *BuildFigure) {
	fmt.Fprintln(w, "Figure 8: a real job, untar this tree's sources + a Go build and test with a fresh build cache (s, median [min–max])")
	if f.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", f.Skipped)
		return
	}
	fmt.Fprintf(w, "  job: tar -x, then `%s` (%s, CGO_ENABLED=0, toolchain and module cache bind-mounted read-only); %d rounds, containers interleaved\n",
		f.Command, or(f.Go), f.Rounds)
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "  place\ts")
	fmt.Fprintf(t, "  host (context, one run)\t%s\n", fmtStat(f.NativeS, 2))
	fmt.Fprintf(t, "  runc (baseline)\t%s\n", fmtStat(f.RuncS, 2))
	fmt.Fprintf(t, "  sysvisor\t%s\n", fmtStat(f.SysvisorS, 2))
	t.Flush()
	fmt.Fprintf(w, "  ratio sysvisor/runc: %.3f (medians), %.3f (median of round ratios); no target in the issue\n\n", f.Ratio, f.PairRatio)
}

// --- figure 6: Docker-in-Docker workloads ------------------------------------------

// DindMetric is one line of bench/dind.sh's dind.json.
type DindMetric struct {
	Name     string  `json:"name"`
	Baseline *Stat   `json:"baseline"`
	Sysvisor *Stat   `json:"sysvisor"`
	Ratio    float64 `json:"ratio"`
}

// DindFigure is figure 6, as bench/dind.sh measured it.
type DindFigure struct {
	Skipped string        `json:"skipped,omitempty"`
	Runs    int           `json:"innerRunsPerRuntime,omitempty"`
	Boots   int           `json:"bootsPerKindAndRuntime,omitempty"`
	Metrics []*DindMetric `json:"metrics,omitempty"`
}

func dindFigure(dir string) (*DindFigure, error) {
	f := &DindFigure{}
	if f.Skipped = skipped(dir, "dind"); f.Skipped != "" {
		return f, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "dind.json"))
	if err != nil {
		f.Skipped = "no samples: " + err.Error()
		return f, nil
	}
	if err := json.Unmarshal(b, f); err != nil {
		return nil, fmt.Errorf("dind.json: %w", err)
	}
	if len(f.Metrics) == 0 {
		f.Skipped = "no metrics in dind.json"
	}
	return f, nil
}

// UnmarshalJSON reads dind.sh's field names.
func (f *DindFigure) UnmarshalJSON(b []byte) error {
	var raw struct {
		Runs    int           `json:"runs"`
		Boots   int           `json:"boots"`
		Metrics []*DindMetric `json:"metrics"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	f.Runs, f.Boots, f.Metrics = raw.Runs, raw.Boots, raw.Metrics
	return nil
}

var dindLabels = map[string]string{
	"inner_run_us":    "inner docker run --rm busybox true (µs)",
	"dockerd_boot_ms": "docker run -d IMG dockerd, until docker info answers (ms)",
	"systemd_boot_ms": "docker run -d IMG /sbin/init, until running or degraded (ms)",
}

func printDind(w io.Writer, f *DindFigure) {
	fmt.Fprintln(w, "Figure 6: Docker-in-Docker workloads (bench/dind.sh; median [min–max])")
	if f.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", f.Skipped)
		return
	}
	fmt.Fprintf(w, "  %d inner runs per runtime, interleaved; %d boots per kind and runtime; baseline: runc with CAP_SYS_ADMIN+NET_ADMIN, seccomp and masked paths off, private cgroupns, a host dir for /var/lib/docker\n", f.Runs, f.Boots)
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "  metric\tbaseline\tsysvisor\tratio")
	for _, m := range f.Metrics {
		label := dindLabels[m.Name]
		if label == "" {
			label = m.Name
		}
		fmt.Fprintf(t, "  %s\t%s\t%s\t%.2f\n", label, fmtStat(m.Baseline, 0), fmtStat(m.Sysvisor, 0), m.Ratio)
	}
	t.Flush()
	fmt.Fprintln(w, "  no target in the issue")
	fmt.Fprintln(w)
}
