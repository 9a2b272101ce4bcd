package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/supervisor/control"
)

// --- figure 9: restart -------------------------------------------------------------

// restartOnce is `benchtool restart`: kill -9 the sysvisord of -pidfile (if
// one runs), start -- ARGS... in a session of its own as tests/env.sh does,
// and time from just before the exec to the first answer of its control
// socket. sysvisord accepts on that socket only once every held listener is
// re-attached, so the first answer is the end of the restart; it must
// report as many re-attached listeners as the old one served (OpPs before
// the kill), or the restart is a failure. Prints one JSON object.
func restartOnce(args []string) error {
	fs := flag.NewFlagSet("restart", flag.ContinueOnError)
	runDir := fs.String("run-dir", control.DefaultRunDir, "sysvisord's run directory")
	pidfile := fs.String("pidfile", "", "sysvisord's pid file (read, then rewritten with the new pid)")
	logPath := fs.String("log", "", "append sysvisord's output here")
	lockPath := fs.String("lock", "", "sysvisord's state lock (<state-dir>/sysvisord.lock): wait until the killed one let it go")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pidfile == "" || *logPath == "" || *lockPath == "" || fs.NArg() == 0 {
		return errors.New("usage: restart -pidfile FILE -log FILE -lock FILE [-run-dir DIR] -- SYSVISORD [ARG]")
	}
	want := 0
	killed := time.Now()
	if b, err := os.ReadFile(*pidfile); err == nil {
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("%s: %w", *pidfile, err)
		}
		if running(pid) {
			// What the old one served is what the new one must take back.
			resp, err := control.Call(*runDir, control.Request{Op: control.OpPs}, 10*time.Second)
			if err != nil {
				return fmt.Errorf("listeners before the kill: %w", err)
			}
			for _, c := range resp.Containers {
				want += int(c.Listeners)
			}
			killed = time.Now()
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				return fmt.Errorf("kill -9 %d: %w", pid, err)
			}
		}
	}
	// Its leader turns zombie at once; its other threads take a while to
	// exit, holding the state lock until the last one is gone. A
	// sysvisord started before would exit ("another sysvisord"): the
	// restart is timed from when one can start.
	if err := waitLock(*lockPath, 10*time.Second); err != nil {
		return err
	}
	gone := time.Since(killed)
	out, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	// Reaped by init once we exit, as env.sh's sysvisord is.
	if err := os.WriteFile(*pidfile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var resp *control.Response
	deadline := t0.Add(*timeout)
	for {
		// Before the new socket exists the dial fails at once (no file,
		// or the dead one's refusing): poll. Once it exists the call
		// waits in the backlog until sysvisord accepts.
		resp, err = control.Call(*runDir, control.Request{Op: control.OpVersion}, time.Until(deadline))
		if err == nil {
			break
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("sysvisord exited (%v) before answering: %w", werr, err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within %v: %w", *timeout, err)
		}
		// A failed dial costs microseconds; at 250 µs the poll adds
		// little to a restart of ~10 ms and takes little CPU from it.
		time.Sleep(250 * time.Microsecond)
	}
	ms := float64(time.Since(t0).Microseconds()) / 1000
	h := resp.Holder
	if h == nil {
		h = &control.HolderInfo{}
	}
	b, _ := json.Marshal(map[string]any{"ms": ms, "want": want, "reattached": h.Reattached, "lost": h.Lost,
		"deposits": h.Deposits, "holder": h.Connected, "pid": pid, "lock_wait_ms": float64(gone.Microseconds()) / 1000})
	fmt.Println(string(b))
	switch {
	case !h.Connected:
		return errors.New("the new sysvisord has no holder")
	case h.Reattached != want:
		return fmt.Errorf("re-attached %d listeners, the old sysvisord served %d (lost %d)", h.Reattached, want, h.Lost)
	}
	return nil
}

// running: pid exists and is not a zombie (an orphan's zombie lingers
// where PID 1 does not reap).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// waitLock waits until nobody holds the flock on path (a missing file is
// free).
func waitLock(path string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		f, err := os.Open(path)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			return err
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		f.Close() // and the lock with it
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still locked %v after the kill: %w", path, within, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// RestartPoint is figure 9 at one number of containers.
type RestartPoint struct {
	N int `json:"containers"`
	// Listeners re-attached at each restart (one per container: their
	// init's).
	Listeners int `json:"listeners"`
	// BaselineMs: the same restart of a sysvisord serving no container,
	// in the same rounds; RestartMs: the engine's, with N containers.
	BaselineMs *Stat `json:"baselineMs"`
	RestartMs  *Stat `json:"restartMs"`
	// GoneMs: from the kill until the old one let go of its state lock
	// (its last thread exited), when the new one can start; not in the
	// restart time.
	GoneMs *Stat   `json:"killToLockFreeMs"`
	Ratio  float64 `json:"ratioOfMedians"`
	// AddedMsPerContainer: (median - baseline median) / N.
	AddedMsPerContainer float64   `json:"addedMsPerContainer"`
	BaselineSamples     []float64 `json:"baselineSamplesMs"`
	Samples             []float64 `json:"restartSamplesMs"`
}

// RestartFigure is figure 9.
type RestartFigure struct {
	Skipped string          `json:"skipped,omitempty"`
	Counts  string          `json:"counts,omitempty"`
	Rounds  int             `json:"roundsPerCount,omitempty"`
	Points  []*RestartPoint `json:"points,omitempty"`
	// After the last restart: containers whose init's loop made a trapped
	// mount since, of those checked; the names of the others.
	Served   int      `json:"servedAfterLastRestart"`
	Checked  int      `json:"checkedAfterLastRestart"`
	Unserved []string `json:"unservedAfterLastRestart,omitempty"`
}

type restartLine struct {
	N          int      `json:"n"`
	Kind       string   `json:"kind"` // base, sysvisor, verify
	Round      int      `json:"round"`
	Ms         float64  `json:"ms"`
	LockWaitMs float64  `json:"lock_wait_ms"`
	Want       int      `json:"want"`
	Reattached int      `json:"reattached"`
	Checked    int      `json:"checked"`
	Served     int      `json:"served"`
	Unserved   []string `json:"unserved"`
}

// restartFigure reads restart.jsonl: one line per timed restart (kind base
// or sysvisor) and one verify line after the last.
func restartFigure(dir string) (*RestartFigure, error) {
	f := &RestartFigure{}
	file, why := openSamples(dir, "restart", "restart.jsonl")
	if file == nil {
		f.Skipped = why
		return f, nil
	}
	defer file.Close()
	f.Counts, f.Rounds = os.Getenv("BENCH_RESTART_COUNTS"), envInt("BENCH_RESTART_ROUNDS")
	points := map[int]*RestartPoint{}
	gone := map[int][]float64{}
	verified := false
	if err := eachJSON(file, "restart.jsonl", func(l restartLine) error {
		if l.Kind == "verify" {
			f.Checked, f.Served, f.Unserved, verified = l.Checked, l.Served, l.Unserved, true
			return nil
		}
		p := points[l.N]
		if p == nil {
			p = &RestartPoint{N: l.N}
			points[l.N] = p
		}
		switch l.Kind {
		case "base":
			p.BaselineSamples = append(p.BaselineSamples, l.Ms)
		case "sysvisor":
			p.Samples = append(p.Samples, l.Ms)
			p.Listeners = l.Reattached
			gone[l.N] = append(gone[l.N], l.LockWaitMs)
		default:
			return fmt.Errorf("restart.jsonl: unknown kind %q", l.Kind)
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
		p.BaselineMs, p.RestartMs, p.GoneMs = summarise(p.BaselineSamples), summarise(p.Samples), summarise(gone[n])
		if p.BaselineMs == nil || p.RestartMs == nil {
			continue
		}
		p.Ratio = ratio(p.RestartMs, p.BaselineMs)
		if n > 0 {
			p.AddedMsPerContainer = math.Round((p.RestartMs.Median-p.BaselineMs.Median)/float64(n)*1000) / 1000
		}
		f.Points = append(f.Points, p)
	}
	switch {
	case len(f.Points) == 0:
		f.Skipped = "no complete samples in restart.jsonl"
	case !verified:
		f.Skipped = "no check of the containers after the last restart in restart.jsonl"
	}
	return f, nil
}

func printRestart(w io.Writer, f *RestartFigure) {
	fmt.Fprintln(w, "Figure 9: restart, kill -9 of sysvisord with N running containers, then a new one from its exec until its control socket answers with every listener re-attached (ms, median [min–max])")
	if f.Skipped != "" {
		fmt.Fprintf(w, "  skipped: %s\n\n", f.Skipped)
		return
	}
	fmt.Fprintf(w, "  containers: %s; %d rounds per count, each restarting a sysvisord with no container (baseline) and the engine's, order alternating\n", f.Counts, f.Rounds)
	t := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(t, "  containers\tlisteners\tbaseline ms (0 containers)\trestart ms\tratio\tadded ms per container\tkill to lock free ms")
	for _, p := range f.Points {
		fmt.Fprintf(t, "  %d\t%d\t%s\t%s\t%.2f\t%+.2f\t%s\n", p.N, p.Listeners, fmtStat(p.BaselineMs, 1), fmtStat(p.RestartMs, 1), p.Ratio, p.AddedMsPerContainer, fmtStat(p.GoneMs, 1))
	}
	t.Flush()
	if len(f.Points) > 1 {
		a, b := f.Points[0], f.Points[len(f.Points)-1]
		// The slope between the smallest and largest counts leaves out
		// what any restart with a container costs once.
		if b.N > a.N {
			fmt.Fprintf(w, "  slope %d → %d containers: %+.2f ms per container\n", a.N, b.N, (b.RestartMs.Median-a.RestartMs.Median)/float64(b.N-a.N))
		}
	}
	v := "all served"
	if f.Served < f.Checked {
		v = "NOT all served: " + strings.Join(f.Unserved, " ")
	}
	fmt.Fprintln(w, "  kill to lock free: from kill -9 of the engine's sysvisord until its last thread let go of the state lock, when a new one can start (not in the restart)")
	fmt.Fprintf(w, "  after the last restart: %d of %d containers made a trapped mount from their init's loop since (%s); no target in the issue\n\n", f.Served, f.Checked, v)
}
