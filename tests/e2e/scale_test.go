package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gops/signal"
)

// svdFigures is what sysvisord costs at one moment: resident memory (KiB),
// OS threads, goroutines and open fds.
type svdFigures struct {
	rssKiB, threads, goroutines, fds int
}

func (f svdFigures) String() string {
	return fmt.Sprintf("RSS %d KiB, %d threads, %d goroutines, %d fds", f.rssKiB, f.threads, f.goroutines, f.fds)
}

// gops sends one request to sysvisord's gops agent (the suite starts
// sysvisord with --gops, see TestMain; the agent writes its port under
// <run-dir>/gops/<pid>) and returns the answer.
func gops(pid int, req byte) (string, error) {
	b, err := os.ReadFile(filepath.Join(svDir, "run", "gops", strconv.Itoa(pid)))
	if err != nil {
		return "", fmt.Errorf("no gops agent in sysvisord %d (started without --gops?): %w", pid, err)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strings.TrimSpace(string(b))), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write([]byte{req}); err != nil {
		return "", err
	}
	out, err := io.ReadAll(conn)
	return string(out), err
}

// statusInt reads a number field ("VmRSS", "Threads") of /proc/pid/status.
func statusInt(t *testing.T, pid int, field string) int {
	t.Helper()
	v := strings.Fields(hostStatus(t, strconv.Itoa(pid), field))
	if len(v) == 0 {
		t.Fatalf("/proc/%d/status: empty %s", pid, field)
	}
	n, err := strconv.Atoi(v[0])
	if err != nil {
		t.Fatalf("/proc/%d/status %s: %v", pid, field, err)
	}
	return n
}

// figures reads sysvisord's figures. The fds are counted before the gops
// connection opens; the goroutine count includes the agent's own, which is
// there (listening) at every reading alike.
func figures(t *testing.T, pid int) svdFigures {
	t.Helper()
	var f svdFigures
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	f.fds = len(fds)
	f.rssKiB = statusInt(t, pid, "VmRSS")
	f.threads = statusInt(t, pid, "Threads")
	out, err := gops(pid, signal.Stats)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	f.goroutines = -1
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && k == "goroutines" {
			f.goroutines, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if f.goroutines < 0 {
		t.Fatalf("gops stats: no goroutine count in %q", out)
	}
	return f
}

// goMem is the Go runtime's account of sysvisord's memory (gops
// memstats), in bytes by name: heap-alloc, heap-in-use, heap-released...
func goMem(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	out, err := gops(pid, signal.MemStats)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int64{}
	for _, l := range strings.Split(out, "\n") {
		// "heap-alloc: 1.45MB (1520448 bytes)", or "512 bytes".
		k, v, _ := strings.Cut(l, ": ")
		if i := strings.Index(v, "("); i >= 0 {
			v = v[i+1:]
		}
		if n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " bytes)"), 10, 64); err == nil {
			m[k] = n
		} else if n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " bytes"), 10, 64); err == nil {
			m[k] = n
		}
	}
	if _, ok := m["heap-alloc"]; !ok {
		t.Fatalf("gops memstats: no heap-alloc in %q", out)
	}
	return m
}

// memDetail says where sysvisord's memory is: the kinds of resident
// pages, and the Go runtime's own account.
func memDetail(t *testing.T, pid int, m map[string]int64) string {
	t.Helper()
	var b strings.Builder
	for _, f := range []string{"RssAnon", "RssFile"} {
		fmt.Fprintf(&b, "%s %s, ", f, hostStatus(t, strconv.Itoa(pid), f))
	}
	fmt.Fprintf(&b, "Go: heap-alloc %d KiB in %d objects, heap-in-use %d KiB, heap-idle %d KiB of which %d released, stacks %d KiB, sys %d KiB",
		m["heap-alloc"]>>10, m["heap-objects"], m["heap-in-use"]>>10, m["heap-idle"]>>10, m["heap-released"]>>10, m["stack-in-use"]>>10, m["sys"]>>10)
	return b.String()
}

// settledRSS asks sysvisord for two GCs (the second frees what the first
// only moved to sync.Pools' victim caches) and waits until its RSS has
// stopped falling (the runtime's background scavenger hands the freed
// pages back over the next moments), at most within.
func settledRSS(t *testing.T, pid int, within time.Duration) int {
	t.Helper()
	for range 2 {
		if _, err := gops(pid, signal.GC); err != nil {
			t.Fatal(err)
		}
	}
	low, still := statusInt(t, pid, "VmRSS"), 0
	for deadline := time.Now().Add(within); still < 4 && time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		if r := statusInt(t, pid, "VmRSS"); r < low {
			low, still = r, 0
		} else {
			still++
		}
	}
	return low
}

// goroutineKinds counts the goroutines of a gops stack dump by where they
// wait and who started them.
func goroutineKinds(dump string) map[string]int {
	kinds := map[string]int{}
	for _, g := range strings.Split(dump, "\n\n") {
		lines := strings.Split(strings.TrimSpace(g), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[0], "goroutine ") {
			continue
		}
		k := lines[1]
		for _, l := range lines {
			if strings.HasPrefix(l, "created by ") {
				k += " <- " + strings.TrimPrefix(l, "created by ")
				if i := strings.Index(k, " in goroutine "); i >= 0 {
					k = k[:i]
				}
			}
		}
		kinds[k]++
	}
	return kinds
}

// goroutineDiff says which kinds of goroutines now has more of than before.
func goroutineDiff(before, now map[string]int) string {
	var out []string
	for k, n := range now {
		if n > before[k] {
			out = append(out, fmt.Sprintf("  +%d %s", n-before[k], k))
		}
	}
	for k, n := range before {
		if now[k] < n {
			out = append(out, fmt.Sprintf("  -%d %s", n-now[k], k))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// TestScale200: 200 containers up at once; 20 of them, each with a memory
// limit of its own, see exactly that limit in free and /proc/meminfo, the
// unlimited ones the host's. Removing them all gives back what sysvisord
// took for them: goroutines and fds to the count before, the Go heap's
// live bytes too, RSS to within 10% (plus what the Go runtime keeps after
// a peak, see below), and no OS thread per container.
func TestScale200(t *testing.T) {
	const (
		total   = 200
		limited = 20
		workers = 6
		// No thread per container: at most this many plus this much
		// per container (issue 15).
		threadBase, threadPer = 20, 0.1
	)
	keepLogOnFailure(t)
	t0 := time.Now()
	pid := sysvisordPid(t)
	prefix := fmt.Sprintf("s200-%d-", os.Getpid())
	names := make([]string, total)
	mem := make([]int, total) // MiB; 0: no limit
	for i := range names {
		names[i] = fmt.Sprintf("%s%d", prefix, i)
		if i%(total/limited) == 0 {
			mem[i] = 64 + 4*(i/(total/limited)) // 64..140 MiB, one each
		}
	}
	t.Cleanup(func() {
		// Whatever is left, failed test or not: one listing, then rm.
		out, _ := dockerTimeout(time.Minute, "ps", "-aq", "--filter", "name="+prefix)
		if ids := strings.Fields(out); len(ids) > 0 {
			parallel(len(ids), workers, func(i int) { dockerTimeout(time.Minute, "rm", "-f", ids[i]) })
		}
	})

	// Warm-up: one container through everything the 200 go through, so
	// that first-use allocations (the views mount's first files, the
	// cgroup readers, the exec path, the control and gops connections)
	// are in the baseline, not in the per-container cost.
	warm := prefix + "warm"
	warmID, err := dockerTimeout(time.Minute, "run", "-d", "--runtime=sysvisor-runc", "--name", warm, "--memory", "64m", image, "sleep", "3600")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dockerTimeout(time.Minute, "exec", warm, "sh", "-c", "free -k; head -1 /proc/meminfo"); err != nil {
		t.Fatal(err)
	}
	if _, err := dockerTimeout(time.Minute, "rm", "-f", warm); err != nil {
		t.Fatal(err)
	}
	waitForgotten(t, []string{warmID}, 30*time.Second)
	// The baseline: the Go heap settled (GCs through gops, then RSS
	// watched until the scavenger has stopped handing pages back), and
	// the goroutine count steady. Besides one goroutine per seccomp
	// listener (a container's init, an exec while it runs) and one per
	// control connection while it is served, sysvisord's goroutines are
	// a fixed set: the load sampler (every 5 s) and the collector run
	// their rounds in goroutines of their own that live as long as
	// sysvisord; the FUSE workers are a fixed pool. So an idle
	// sysvisord's count is exact, and a reading is only off while a
	// request is in flight; two equal readings in a row make the
	// baseline.
	base := figures(t, pid)
	for i := 0; i < 20; i++ {
		time.Sleep(250 * time.Millisecond)
		again := figures(t, pid)
		if again.goroutines == base.goroutines && again.fds == base.fds {
			break
		}
		base = again
	}
	base.rssKiB = settledRSS(t, pid, 10*time.Second)
	baseMem := goMem(t, pid)
	baseDump, err := gops(pid, signal.StackTrace) // for a diff if goroutines stay
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("baseline (after a warm-up container): %v\n  %s", base, memDetail(t, pid, baseMem))

	// 200 up, a few at a time.
	t1 := time.Now()
	errs := make([]error, total)
	ids := make([]string, total)
	parallel(total, workers, func(i int) {
		args := []string{"run", "-d", "--runtime=sysvisor-runc", "--name", names[i]}
		if mem[i] > 0 {
			args = append(args, "--memory", fmt.Sprintf("%dm", mem[i]))
		}
		ids[i], errs[i] = dockerTimeout(2*time.Minute, append(args, image, "sleep", "3600")...)
	})
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d containers started in %v", total, time.Since(t1).Round(time.Millisecond))

	rows := psRows(t)
	var notRunning []string
	for i, id := range ids {
		if r, ok := rows[id]; !ok || r.Status != "running" {
			notRunning = append(notRunning, fmt.Sprintf("%s (listed %v, status %q)", names[i], ok, r.Status))
		}
	}
	if len(notRunning) > 0 {
		t.Fatalf("sysvisorctl ps with %d up: %d not running, first ones: %v", total, len(notRunning), notRunning[:min(len(notRunning), 5)])
	}

	// What sysvisord holds with all 200 up and idle (no exec running).
	at := figures(t, pid)
	at.rssKiB = settledRSS(t, pid, 5*time.Second)
	t.Logf("with %d up: %v\n  %s", total, at, memDetail(t, pid, goMem(t, pid)))

	// Each limited container sees its own limit; some unlimited ones see
	// the host's memory. One exec each (free -k, then meminfo's first
	// line), a few at a time: every exec has its own seccomp listener.
	hostMem := hostMemTotalKiB(t)
	var check []int
	for i := range names {
		if mem[i] > 0 || i%40 == 5 { // and 5 unlimited ones
			check = append(check, i)
		}
	}
	var mu sync.Mutex
	var bad []string
	parallel(len(check), 4, func(k int) {
		i := check[k]
		out, err := dockerTimeout(time.Minute, "exec", names[i], "sh", "-c", "free -k && grep ^MemTotal: /proc/meminfo")
		want := hostMem
		if mem[i] > 0 {
			want = mem[i] << 10
		}
		free, meminfo := firstField(out, "Mem:"), firstField(out, "MemTotal:")
		if err == nil && free == want && meminfo == want {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		what := fmt.Sprintf("--memory %dm", mem[i])
		if mem[i] == 0 {
			what = "no limit: the host's"
		}
		bad = append(bad, fmt.Sprintf("%s (%s, want %d KiB): free -k total %d, MemTotal %d kB; err %v\n%s", names[i], what, want, free, meminfo, err, out))
	})
	sort.Strings(bad)
	for _, b := range bad {
		t.Error(b)
	}
	t.Logf("%d containers checked (%d limited, %d not) in free and meminfo", len(check), limited, len(check)-limited)

	// All removed, a few at a time, and forgotten by sysvisord.
	returned := logCount(t, memoryReturned)
	t2 := time.Now()
	parallel(total, workers, func(i int) {
		if _, err := dockerTimeout(2*time.Minute, "rm", "-f", names[i]); err != nil {
			mu.Lock()
			t.Error(err)
			mu.Unlock()
		}
	})
	waitForgotten(t, ids, time.Minute)
	t.Logf("%d containers removed and forgotten by sysvisord in %v", total, time.Since(t2).Round(time.Millisecond))

	// Goroutines and fds back to the baseline exactly: polled, as the
	// last listener goroutines end when their fds report the end, and a
	// load round or a collection may be under way.
	var after svdFigures
	deadline := time.Now().Add(30 * time.Second)
	for {
		after = figures(t, pid)
		if after.goroutines == base.goroutines && after.fds == base.fds || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if after.goroutines != base.goroutines {
		dump, _ := gops(pid, signal.StackTrace)
		t.Errorf("goroutines %d 30 s after removing all, want the baseline's %d; by kind:\n%s",
			after.goroutines, base.goroutines, goroutineDiff(goroutineKinds(baseDump), goroutineKinds(dump)))
	}
	if after.fds != base.fds {
		t.Errorf("fds %d 30 s after removing all, want the baseline's %d", after.fds, base.fds)
	}
	// Memory. What the containers took must be free again in Go's heap:
	// after two GCs, the live bytes are the baseline's, give or take
	// 2 KiB per container. Some stays by design, ~1 KiB per container
	// here (+200 KiB, +360 objects after 200, whatever the run): the
	// runtime keeps the descriptors of ended goroutines for reuse (one a
	// listener, ~0.4 KiB each), and Go maps keep the tables they grew to
	// (the registry's, the listeners', the leases'...). A record, a
	// buffer or a listener's state left per container shows here first,
	// whatever the runtime does with pages.
	// RSS must be back within 10% of the baseline, plus what the Go
	// runtime keeps for good after a peak: the metadata of the spans it
	// grew the heap by and their GC bitmaps (persistentalloc, never
	// returned), the mark-bit arenas, the in-use spans the few live
	// objects keep resident. On a baseline of ~17 MiB, 13 of them the
	// binary's own pages, that was 2-3 MiB after 200 containers here,
	// beyond 10% (1.7 MiB) by itself: smaps showed it in the runtime's
	// own mappings and in the heap arena, with the heap's live bytes below
	// the baseline's. So 4 MiB more are allowed; a leak outside Go's heap
	// (C allocations, mappings, thread stacks) of 30 KiB per container
	// still fails. Free heap pages the runtime keeps do not count:
	// sysvisord hands the freed heap back once a burst of deletes is over
	// (Server.returnMemory, checked by its log line), but whatever the
	// process allocates and frees after that (the test's own gops
	// requests, load sampling) is kept again, up to 10% over the heap
	// goal (at least 4 MiB), by Go's scavenger: 0-2.4 MiB here.
	for deadline := time.Now().Add(30 * time.Second); logCount(t, memoryReturned) == returned; time.Sleep(250 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Errorf("sysvisord did not return the memory of the deleted containers: no %q in its log 30 s after the last delete", memoryReturned)
			break
		}
	}
	heapLimit := baseMem["heap-alloc"] + 2*total<<10
	const runtimeKeeps = 4 << 10 // KiB
	net := func(rssKiB int, m map[string]int64) int { return rssKiB - int((m["heap-idle"]-m["heap-released"])>>10) }
	baseNet := net(base.rssKiB, baseMem)
	limit := baseNet + baseNet/10 + runtimeKeeps
	var afterMem map[string]int64
	var afterNet int
	deadline = time.Now().Add(30 * time.Second)
	for {
		after.rssKiB = settledRSS(t, pid, 5*time.Second)
		afterMem = goMem(t, pid)
		afterNet = net(after.rssKiB, afterMem)
		if afterNet <= limit && afterMem["heap-alloc"] <= heapLimit || time.Now().After(deadline) {
			break
		}
	}
	if afterMem["heap-alloc"] > heapLimit {
		t.Errorf("Go heap: %d KiB live after removing all, want the baseline's %d KiB + ≤ 2 KiB per container (%d KiB)",
			afterMem["heap-alloc"]>>10, baseMem["heap-alloc"]>>10, heapLimit>>10)
	}
	if afterNet > limit {
		t.Errorf("RSS net of the free heap the runtime keeps: %d KiB after removing all, want within 10%% of the baseline's %d KiB + %d KiB the Go runtime keeps after a peak (≤ %d)",
			afterNet, baseNet, runtimeKeeps, limit)
	}
	t.Logf("RSS: baseline %d KiB, after %d KiB (%+.1f%%); net of free heap kept: %d -> %d KiB (%+.1f%%; limit %d KiB)",
		base.rssKiB, after.rssKiB, 100*float64(after.rssKiB-base.rssKiB)/float64(base.rssKiB),
		baseNet, afterNet, 100*float64(afterNet-baseNet)/float64(baseNet), limit)
	// Threads: no thread per container, with 200 up and after, at most
	// 20 + 0.1 per container (issue 15); and the threads a burst left
	// parked are ended within a tick or two of sysvisord's trimmer (5 s),
	// back to the baseline's count (+2: the runtime starts a thread or two
	// of its own now and then, GC workers, a sample between two ticks).
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		after.threads = statusInt(t, pid, "Threads")
		if after.threads <= base.threads+2 || time.Now().After(deadline) {
			break
		}
	}
	if after.threads > base.threads+2 {
		t.Errorf("%d threads 15 s after removing all, want the baseline's %d (+2)", after.threads, base.threads)
	}
	maxThreads := threadBase + int(threadPer*total)
	for _, c := range []struct {
		when string
		n    int
	}{{fmt.Sprintf("with %d containers up", total), at.threads}, {"after removing them", after.threads}} {
		if c.n > maxThreads {
			t.Errorf("%d threads %s, want ≤ %d (%d + %.1f per container)", c.n, c.when, maxThreads, threadBase, threadPer)
		}
	}
	t.Logf("after removing all: %v\n  %s", after, memDetail(t, pid, afterMem))
	per := func(a, b int) float64 { return float64(a-b) / total }
	t.Logf("per container at %d: %.1f KiB RSS, %.3f threads, %.2f goroutines, %.2f fds",
		total, per(at.rssKiB, base.rssKiB), per(at.threads, base.threads), per(at.goroutines, base.goroutines), per(at.fds, base.fds))
	t.Logf("total %v", time.Since(t0).Round(time.Millisecond))
}

// waitForgotten waits until sysvisorctl ps lists none of ids.
func waitForgotten(t *testing.T, ids []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		rows := psRows(t)
		var left []string
		for _, id := range ids {
			if _, ok := rows[id]; ok {
				left = append(left, id)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sysvisorctl ps still lists %d removed containers %v after: %v", len(left), within, left[:min(len(left), 5)])
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func hostMemTotalKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	n := firstField(string(b), "MemTotal:")
	if n <= 0 {
		t.Fatalf("host /proc/meminfo has no MemTotal:\n%.200s", b)
	}
	return n
}

// firstField is the number after label on the first line of out that
// starts with it (free -k's "Mem:", meminfo's "MemTotal:"), -1 if none.
func firstField(out, label string) int {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == label {
			if n, err := strconv.Atoi(f[1]); err == nil {
				return n
			}
		}
	}
	return -1
}

// memoryReturned is sysvisord's log line once it gave the memory of
// deleted containers back (Server.returnMemory).
const memoryReturned = "memory of deleted containers returned"

// logCount counts the lines of sysvisord's log that contain s.
func logCount(t *testing.T, s string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(svDir, "log", "sysvisord.log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), s)
}
