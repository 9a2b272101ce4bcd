package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strings"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// chartRow is one bar of the chart: sysvisor's cost over its baseline's,
// lower is better, with the target if the issue sets one.
type chartRow struct {
	Label  string
	Value  float64
	Target float64 // 0: none
}

// chartRows collects every ratio of the results, all as sysvisor over
// baseline (figure 5 is sysvisor over LXCFS, so its target is 1/3; figure 7
// compares latency and CPU with as many C supervisors, and resources with
// their budgets).
func chartRows(r *Results) []chartRow {
	var rows []chartRow
	add := func(label string, v, target float64) {
		if v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) {
			rows = append(rows, chartRow{label, v, target})
		}
	}
	if s := r.Start; s != nil && s.Skipped == "" {
		add("1  docker run --rm true / runc (pairs)", s.PairRatio, s.Target)
	}
	if f := r.Runtime; f != nil && f.Skipped == "" {
		for _, k := range f.Kinds {
			for _, o := range k.Ops {
				if o.Op == "total" {
					add(fmt.Sprintf("1b create+start+delete, %s / runc", k.Rootfs), o.Ratio, 0)
				}
			}
		}
	}
	if n := r.Notify; n != nil && n.Skipped == "" {
		add("2  notify p50, sysvisord / C floor", n.RatioBest, n.Target)
		add("2  notify p99, sysvisord / C floor", n.RatioBestP99, 0)
	}
	if m := r.Mount; m != nil && m.Skipped == "" {
		for _, mode := range m.Modes {
			add(fmt.Sprintf("3  %s mount+umount2 / host", mode.Mode), mode.RatioNative, mode.Target)
		}
	}
	if s := r.Syscall; s != nil && s.Skipped == "" {
		for _, k := range s.Kinds {
			add(fmt.Sprintf("4  untrapped %s / runc", k.Kind), k.PairRatio, s.Target)
		}
	}
	if p := r.Proc; p != nil && p.Skipped == "" {
		for _, f := range p.Files {
			switch {
			case f.View && f.LXCFSView:
				add(fmt.Sprintf("5  %s / LXCFS", f.File), f.RatioLXCFS, 1/p.TargetSpeedUp)
			case f.View:
				add(fmt.Sprintf("5  %s view / kernel", f.File), f.RatioLXCFS, 0)
			}
		}
	}
	if d := r.Dind; d != nil && d.Skipped == "" {
		for _, m := range d.Metrics {
			add(fmt.Sprintf("6  DinD %s / privileged runc", strings.TrimSuffix(strings.TrimSuffix(m.Name, "_us"), "_ms")), m.Ratio, 0)
		}
	}
	if s := r.Scale; s != nil && s.Skipped == "" && len(s.Points) > 0 {
		if p := s.pointAt(targetRSSAt); p != nil {
			add(fmt.Sprintf("7  RSS at %d ctrs / budget", p.N), float64(p.RSSKiB)/float64(p.BudgetKiB), 1)
		}
		if p := s.pointAt(targetP99At); p != nil && p.Floor != nil {
			add(fmt.Sprintf("7  p99 at %d ctrs / %d C sups", p.N, p.Floor.Supervisors), p.P99OverFloor, targetP99OverFloor)
			add(fmt.Sprintf("7  CPU/call at %d ctrs / %d C sups", p.N, p.Floor.Supervisors), p.CPUOverFloor, targetCPUOverFloor)
		}
		last := s.Points[len(s.Points)-1]
		add(fmt.Sprintf("7  threads at %d ctrs / budget", last.N), float64(last.Threads)/last.ThreadBudget, 1)
		if last.GoPerContainer != nil {
			add(fmt.Sprintf("7  goroutines/ctr at %d / %.0f", last.N, targetGoPerCtr), *last.GoPerContainer/targetGoPerCtr, 1)
		}
	}
	if b := r.Build; b != nil && b.Skipped == "" {
		add("8  build job / runc (pairs)", b.PairRatio, 0)
	}
	if f := r.Restart; f != nil && f.Skipped == "" {
		last := f.Points[len(f.Points)-1]
		add(fmt.Sprintf("9  restart with %d ctrs / with 0", last.N), last.Ratio, 0)
	}
	return rows
}

var (
	colMet    = color.RGBA{0x2e, 0x8b, 0x57, 0xff}
	colMissed = color.RGBA{0xc0, 0x39, 0x2b, 0xff}
	colNone   = color.RGBA{0x5b, 0x7d, 0xb1, 0xff}
	colInk    = color.RGBA{0x20, 0x20, 0x20, 0xff}
	colGrid   = color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	colTarget = color.RGBA{0x00, 0x00, 0x00, 0xff}
)

// writeChart draws the ratios as horizontal bars on a log scale, from 1
// (as fast as the baseline) to the ratio, green where the target is met,
// red where it is missed, blue where there is none; a black tick marks the
// target. Labels use x/image's 7x13 bitmap font.
func writeChart(path string, r *Results) error {
	rows := chartRows(r)
	const (
		labelW = 330
		plotW  = 560
		rowH   = 22
		top    = 58
		margin = 12
	)
	lo, hi := 0.2, 2.0
	for _, row := range rows {
		lo, hi = math.Min(lo, row.Value), math.Max(hi, row.Value)
		if row.Target > 0 {
			lo, hi = math.Min(lo, row.Target), math.Max(hi, row.Target)
		}
	}
	lo, hi = math.Pow(10, math.Floor(math.Log10(lo)*2)/2), math.Pow(10, math.Ceil(math.Log10(hi)*2)/2)
	width, height := margin+labelW+plotW+80, top+rowH*max(len(rows), 1)+40
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	draw.Draw(img, img.Bounds(), image.White, image.Point{}, draw.Src)
	x0 := margin + labelW
	xOf := func(v float64) int {
		return x0 + int(math.Round((math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*plotW))
	}
	m := r.Machine
	text(img, margin, 16, colInk, "sysvisor / baseline, lower is better (log scale; 1 = as fast as the baseline)")
	text(img, margin, 32, colInk, fmt.Sprintf("%s  kernel %s, %s x%s, runc %s, docker %s", r.Date, m["kernel"], m["cpuModel"], m["cpus"], or(m["runcVersion"]), or(m["dockerVersion"])))
	text(img, margin, 46, colInk, "green: target met  red: missed  blue: no target  black tick: target")
	// Grid: powers of ten and their halves, and the line at 1.
	yEnd := top + rowH*len(rows)
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, k := range []float64{1, 2, 5} {
			v := k * math.Pow(10, e)
			if v < lo || v > hi {
				continue
			}
			x := xOf(v)
			fill(img, x, top-4, 1, yEnd-top+4, colGrid)
			text(img, x-3*len(trimFloat(v)), yEnd+16, colInk, trimFloat(v))
		}
	}
	fill(img, xOf(1), top-6, 2, yEnd-top+8, colInk)
	for i, row := range rows {
		y := top + i*rowH
		text(img, margin, y+15, colInk, row.Label)
		c := colNone
		if row.Target > 0 {
			c = colMissed
			if row.Value <= row.Target {
				c = colMet
			}
		}
		a, b := xOf(1), xOf(row.Value)
		if b < a {
			a, b = b, a
		}
		fill(img, a, y+4, max(b-a, 2), rowH-8, c)
		if row.Target > 0 {
			fill(img, xOf(row.Target)-1, y+1, 3, rowH-2, colTarget)
		}
		tx := max(xOf(row.Value), xOf(1))
		if row.Target > 0 {
			tx = max(tx, xOf(row.Target)+1)
		}
		text(img, tx+6, y+15, colInk, fmt.Sprintf("%.3g", row.Value))
	}
	if len(rows) == 0 {
		text(img, margin, top+15, colInk, "no figure ran")
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fill(img *image.RGBA, x, y, w, h int, c color.Color) {
	draw.Draw(img, image.Rect(x, y, x+w, y+h), image.NewUniform(c), image.Point{}, draw.Src)
}

func text(img *image.RGBA, x, y int, c color.Color, s string) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

func trimFloat(v float64) string {
	return fmt.Sprintf("%g", math.Round(v*100)/100)
}
