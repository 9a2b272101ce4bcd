package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sysvisor/sysvisor/holder"
)

// churnCycles is TestChurn's number of cycles: SYSVISOR_CHURN_CYCLES, else a
// count make test affords (bench/churn.sh runs 1000 and records the figures).
func churnCycles(t *testing.T) int { return envCount(t, "SYSVISOR_CHURN_CYCLES", 40) }

// envCount reads a positive count from the environment variable name,
// def when it is unset.
func envCount(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// waitInnerDockerd waits until the dockerd in system container name
// answers.
func waitInnerDockerd(name string) error {
	var out string
	var err error
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		if out, err = dockerTimeout(30*time.Second, "exec", name, "docker", "info", "--format", "{{.Driver}}"); err == nil {
			return nil
		}
	}
	return fmt.Errorf("inner dockerd not answering: %v: %s", err, out)
}

// churnKinds are the cycles TestChurn mixes, one after another.
var churnKinds = []string{"plain", "exec", "mounts", "kill-init", "rm-mid-start", "plain", "exec", "mounts", "kill-init", "dind"}

// holderFds counts the fds the environment's sysvisor-holder holds: one per
// listener and views fd deposited, so a leak there shows as a count.
func holderFds(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(svDir, "run", holder.Pidfile))
	if err != nil {
		return -1 // no holder in this environment
	}
	ents, err := os.ReadDir("/proc/" + strings.TrimSpace(string(b)) + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// hostMounts counts the host's mounts under the environment's directory
// (the engine's layers and shm, the containers' rootfs, views and
// /proc/sys): not the whole table, which other work on the host changes.
func hostMounts() int { return len(mountsUnder(svDir)) }

// protectedCount is how many mount signatures sysvisord's record of
// container id protects.
func protectedCount(t *testing.T, id string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(svDir, "state", "containers", id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Protected []string `json:"protected"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("record of %s: %v", id, err)
	}
	return len(r.Protected)
}

// churnCycle runs one create/delete cycle of kind; an error is a failure of
// something a user expects to work (rm-mid-start's run may fail: the
// container was removed under it).
func churnCycle(t *testing.T, kind, name string, rng *rand.Rand) error {
	rm := func() error {
		if out, err := dockerTimeout(60*time.Second, "rm", "-f", name); err != nil && !strings.Contains(out, "No such container") {
			return fmt.Errorf("rm -f: %v: %s", err, out)
		}
		return nil
	}
	run := func(args ...string) error {
		a := append([]string{"run", "-d", "--name", name, "--runtime=sysvisor-runc"}, args...)
		if out, err := dockerTimeout(60*time.Second, a...); err != nil {
			return fmt.Errorf("run: %v: %s", err, out)
		}
		return nil
	}
	switch kind {
	case "plain":
		if err := run(image, "sleep", "600"); err != nil {
			return err
		}
		return rm()
	case "exec":
		if err := run(image, "sleep", "600"); err != nil {
			return err
		}
		if out, err := dockerTimeout(60*time.Second, "exec", name, "sh", "-c", "mkdir -p /mnt/t && mount -t tmpfs t /mnt/t && umount /mnt/t && free >/dev/null"); err != nil {
			rm()
			return fmt.Errorf("exec: %v: %s", err, out)
		}
		return rm()
	case "mounts":
		script := `set -e; mkdir -p /mnt/t /mnt/s
for i in 1 2 3 4 5; do mount -t tmpfs t /mnt/t; umount /mnt/t; done
mount -t sysfs s /mnt/s; umount /mnt/s
unshare -p -f --mount-proc true
echo churn-ok`
		out, err := dockerTimeout(60*time.Second, "run", "--rm", "--name", name, "--runtime=sysvisor-runc", image, "sh", "-c", script)
		if err != nil || !strings.Contains(out, "churn-ok") {
			rm()
			return fmt.Errorf("mount-heavy run: %v: %s", err, out)
		}
		return nil
	case "kill-init":
		if err := run(image, "sleep", "600"); err != nil {
			return err
		}
		out, err := dockerTimeout(30*time.Second, "inspect", "-f", "{{.State.Pid}}", name)
		pid, perr := strconv.Atoi(strings.TrimSpace(out))
		if err != nil || perr != nil || pid <= 0 {
			rm()
			return fmt.Errorf("inspect pid: %v %v: %q", err, perr, out)
		}
		// The container's init, killed from the host as an OOM kill or
		// an operator would.
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			rm()
			return fmt.Errorf("kill -9 %d: %w", pid, err)
		}
		if out, err := dockerTimeout(60*time.Second, "wait", name); err != nil {
			rm()
			return fmt.Errorf("wait after kill -9 of init: %v: %s", err, out)
		}
		return rm()
	case "start-only":
		return run(image, "sleep", "3600")
	case "rm-mid-start":
		done := make(chan struct{})
		go func() {
			defer close(done)
			dockerTimeout(60*time.Second, "run", "-d", "--name", name, "--runtime=sysvisor-runc", image, "sleep", "600")
		}()
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		rm()
		<-done
		return rm()
	case "dind":
		if err := run("sysvisor-test/dind", "dockerd"); err != nil {
			return err
		}
		if err := waitInnerDockerd(name); err != nil {
			rm()
			return err
		}
		return rm()
	}
	return fmt.Errorf("unknown kind %q", kind)
}

// TestChurn (issue 18): create/delete cycles of every kind a CI host sees
// (plain, exec'd, mount-heavy, init killed with kill -9, removed with
// docker rm -f mid-start, Docker-in-Docker), then everything is back where it
// started: no failure, and sysvisord's fds, goroutines and threads, its
// memory within bounds, the holder's fds, the leases, records, container
// mounts and processes, and the host's mounts.
func TestChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	cycles := churnCycles(t)
	if out, err := envsh("dind-image"); err != nil {
		t.Fatalf("tests/env.sh dind-image: %v\n%s", err, out)
	}
	keepLogOnFailure(t)
	pid := sysvisordPid(t)
	// A warm-up of every kind: first uses (policies, the views mount,
	// runtime caches) are baseline, not churn.
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (rm-mid-start delays)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	tag := strconv.Itoa(os.Getpid())
	for _, k := range []string{"plain", "exec", "mounts", "dind"} {
		if err := churnCycle(t, k, "churn-warm-"+k+"-"+tag, rng); err != nil {
			t.Fatalf("warm-up %s: %v", k, err)
		}
	}
	// A long-lived container beside the churn, its record read at the end:
	// every procfs and sysfs mounted in it adds the protection of its
	// masks, which must go once that mount is gone (issue 18: a DinD
	// container's record grew with every inner container).
	long := "churn-long-" + tag
	if err := churnCycle(t, "start-only", long, rng); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dockerTimeout(60*time.Second, "rm", "-f", long) })
	longID := mustDocker(t, "inspect", "-f", "{{.Id}}", long)
	time.Sleep(6 * time.Second) // a trimmer and a memory tick
	baseProtected := protectedCount(t, longID)
	before := snapshotFiles(t)
	base := figures(t, pid)
	base.rssKiB = settledRSS(t, pid, 10*time.Second) // after two GCs
	baseMem := goMem(t, pid)
	baseHolder, baseHost := holderFds(t), hostMounts()
	// Then five procfs and five sysfs at once in the long-lived container
	// (distinct superblocks), gone a few seconds later, while the churn
	// runs; after the baseline: its exec holds a listener meanwhile.
	if out, err := dockerTimeout(60*time.Second, "exec", long, "sh", "-c", `for i in 1 2 3 4 5; do
  mkdir -p /mnt/s$i
  unshare -p -f --mount-proc sleep 4 &
  unshare -n sh -c "mount -t sysfs s /mnt/s$i && sleep 4 && umount /mnt/s$i" &
done; sleep 1; echo started`); err != nil || !strings.Contains(out, "started") {
		t.Fatalf("procfs and sysfs mounts in the long-lived container: %v\n%s", err, out)
	}
	peakProtected := protectedCount(t, longID)
	if peakProtected < baseProtected+50 {
		t.Fatalf("ten procfs and sysfs mounts added %d protected signatures, want more than 50 (test premise)", peakProtected-baseProtected)
	}

	t0 := time.Now()
	failures := map[string]int{}
	var first []string
	took := map[string]time.Duration{}
	count := map[string]int{}
	for i := 0; i < cycles; i++ {
		kind := churnKinds[i%len(churnKinds)]
		name := fmt.Sprintf("churn-%s-%d", tag, i)
		c0 := time.Now()
		err := churnCycle(t, kind, name, rng)
		if err != nil {
			failures[kind]++
			if len(first) < 10 {
				first = append(first, fmt.Sprintf("cycle %d (%s): %v", i, kind, err))
			}
		}
		took[kind] += time.Since(c0)
		count[kind]++
	}
	elapsed := time.Since(t0)
	var per []string
	for _, k := range []string{"plain", "exec", "mounts", "kill-init", "rm-mid-start", "dind"} {
		if count[k] > 0 {
			per = append(per, fmt.Sprintf("%s %d (%.0f ms each, %d failed)", k, count[k], float64(took[k].Milliseconds())/float64(count[k]), failures[k]))
		}
	}
	t.Logf("churn: %d cycles in %v: %s", cycles, elapsed.Round(time.Millisecond), strings.Join(per, ", "))
	nfail := 0
	for _, n := range failures {
		nfail += n
	}
	if nfail > 0 {
		t.Errorf("%d of %d cycles failed; first:\n  %s", nfail, cycles, strings.Join(first, "\n  "))
	}

	// Back to the start: the collector (30 s) frees what a delete could
	// not, the trimmer (5 s) the threads, returnMemory the heap.
	var diff []string
	var now svdFigures
	var holderNow, hostNow, protected int
	for deadline := time.Now().Add(75 * time.Second); ; time.Sleep(time.Second) {
		diff = snapshotDiff(before, snapshotFiles(t))
		now = figures(t, pid)
		holderNow, hostNow = holderFds(t), hostMounts()
		protected = protectedCount(t, longID)
		settled := len(diff) == 0 && now.fds == base.fds && now.goroutines == base.goroutines &&
			now.threads <= base.threads+2 && holderNow == baseHolder && hostNow == baseHost &&
			protected <= baseProtected
		if settled || time.Now().After(deadline) {
			break
		}
	}
	if len(diff) > 0 {
		t.Errorf("left behind after %d cycles:\n  %s", cycles, strings.Join(diff, "\n  "))
	}
	if now.fds != base.fds || now.goroutines != base.goroutines {
		t.Errorf("sysvisord: %d fds and %d goroutines after the churn, %d and %d before", now.fds, now.goroutines, base.fds, base.goroutines)
	}
	if now.threads > base.threads+2 {
		t.Errorf("sysvisord: %d threads after the churn, %d before", now.threads, base.threads)
	}
	if holderNow != baseHolder {
		t.Errorf("sysvisor-holder: %d fds after the churn, %d before", holderNow, baseHolder)
	}
	// A signature is judged by its superblocks' device numbers, which the
	// kernel hands out again at once: on a busy host a few may be alive
	// for other mounts when the collector looks, and their signatures
	// stay until those go. On a quiet one (CI) all go.
	if kept := protected - baseProtected; kept > (peakProtected-baseProtected)/4 {
		t.Errorf("the long-lived container's record protects %d mounts after the churn, %d before and %d with its ten procfs and sysfs mounted: the masks of gone mounts were kept", protected, baseProtected, peakProtected)
	}
	// Pruning never drops a live mount's protection: the runtime's mask
	// of /proc/kcore, and those of a procfs mounted now.
	if out, err := dockerTimeout(30*time.Second, "exec", long, "sh", "-c",
		"umount /proc/kcore 2>&1 && echo kcore-unmasked; unshare -p -f --mount-proc sh -c 'umount /proc/kcore 2>&1 && echo inner-kcore-unmasked'; true"); err != nil || strings.Contains(out, "unmasked") {
		t.Errorf("a mask could be removed after pruning: %v\n%s", err, out)
	}
	if hostNow != baseHost {
		t.Errorf("host mounts: %d after the churn, %d before", hostNow, baseHost)
	}
	// Memory, after two GCs: the live heap back to the baseline's (what
	// stays, ended goroutines' descriptors and grown map tables, is
	// bounded by the peak, not by the cycles: 256 KiB, whatever the count;
	// a record or buffer kept per cycle exceeds it within a few hundred
	// cycles), and RSS net of the free heap the runtime keeps within 10%
	// plus what Go keeps after a peak (as TestScale200).
	now.rssKiB = settledRSS(t, pid, 5*time.Second)
	nowMem := goMem(t, pid)
	if grown := nowMem["heap-alloc"] - baseMem["heap-alloc"]; grown > 256<<10 {
		t.Errorf("Go heap: %d KiB live after the churn, %d KiB before", nowMem["heap-alloc"]>>10, baseMem["heap-alloc"]>>10)
	}
	net := func(rssKiB int, m map[string]int64) int { return rssKiB - int((m["heap-idle"]-m["heap-released"])>>10) }
	baseNet, nowNet := net(base.rssKiB, baseMem), net(now.rssKiB, nowMem)
	if limit := baseNet + baseNet/10 + 4<<10; nowNet > limit {
		t.Errorf("RSS net of free heap: %d KiB after the churn, %d KiB before (limit %d)", nowNet, baseNet, limit)
	}
	t.Logf("long-lived container's protected mounts: %d before, %d with ten procfs and sysfs mounted, %d after", baseProtected, peakProtected, protected)
	t.Logf("before: %v, holder %d fds, %d host mounts under the environment", base, baseHolder, baseHost)
	t.Logf("after:  %v, holder %d fds, %d host mounts under the environment; RSS net of free heap %d -> %d KiB; live heap %d -> %d KiB",
		now, holderNow, hostNow, baseNet, nowNet, baseMem["heap-alloc"]>>10, nowMem["heap-alloc"]>>10)
}
