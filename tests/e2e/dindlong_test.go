package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A long-lived Docker-in-Docker container runs inner containers one after
// another; each mounts a procfs and a sysfs whose masks sysvisord protects
// in the system container's record, and copies of its protected mounts.
// The record must stay bounded while they run, and come back once they are
// gone (issue 18: it grew with every inner container for the system
// container's life).
func TestDinDLongLived(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	// 20 in make test, 200 in bench/dind-long.sh.
	n := envCount(t, "SYSVISOR_DIND_INNER", 20)
	if out, err := envsh("dind-image"); err != nil {
		t.Fatalf("tests/env.sh dind-image: %v\n%s", err, out)
	}
	id := mustDocker(t, "run", "-d", "--runtime=sysvisor-runc", "sysvisor-test/dind", "dockerd")
	t.Cleanup(func() { dockerTimeout(60*time.Second, "rm", "-f", id) })
	if err := waitInnerDockerd(id); err != nil {
		t.Fatal(err)
	}
	load := exec.Command("sh", "-c", `/usr/bin/docker save sysvisor-test/busybox | /usr/bin/docker exec -i "$1" docker load`, "sh", id)
	load.Env = append(os.Environ(), "DOCKER_HOST=unix://"+svDir+"/docker.sock")
	if b, err := load.CombinedOutput(); err != nil {
		t.Fatalf("docker load into the inner engine: %v\n%s", err, b)
	}
	inner := func() error {
		_, err := dockerTimeout(60*time.Second, "exec", id, "docker", "run", "--rm", "sysvisor-test/busybox", "true")
		return err
	}
	// A first inner container: what the inner engine mounts once (its
	// first procfs for the inner runc, cgroup mounts) is baseline.
	if err := inner(); err != nil {
		t.Fatalf("first inner container: %v", err)
	}
	time.Sleep(6 * time.Second)
	base := protectedCount(t, id)
	peak, failed, first, last := base, 0, -1, 0
	var series []string
	t0 := time.Now()
	for i := 0; i < n; i++ {
		if err := inner(); err != nil {
			failed++
			t.Logf("inner container %d: %v", i, err)
		}
		p := protectedCount(t, id)
		peak, last = max(peak, p), p
		if first < 0 {
			first = p
		}
		if (i+1)%max(n/10, 1) == 0 {
			series = append(series, fmt.Sprintf("%d@%d(%.0fs)", p, i+1, time.Since(t0).Seconds()))
		}
	}
	elapsed := time.Since(t0)
	if failed > 0 {
		t.Errorf("%d of %d inner containers failed", failed, n)
	}
	// Bounded while the inner containers come and go, not only after: the
	// copies inner runc makes of the protected mounts each time (twelve:
	// cgroups, the engine's storage) add no signature, and an inner
	// container's procfs and sysfs masks carry device numbers the kernel
	// hands the next one, so they are the same strings. Room for the masks
	// of an inner container or two in flight (about 90 each; the baseline
	// may have been taken after the collector dropped the first one's),
	// and no trend from the first inner container to the last (it was
	// twelve more with each).
	if bound := base + 200; peak > bound {
		t.Errorf("the record grew to %d protected mounts while %d inner containers ran (%d before, bound %d)", peak, n, base, bound)
	}
	if last > first+60 {
		t.Errorf("the record grew from %d protected mounts after the first inner container to %d after the last of %d", first, last, n)
	}
	// The collector (every 30 s) drops the masks of mounts that are gone.
	now := peak
	for deadline := time.Now().Add(75 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if now = protectedCount(t, id); now <= base {
			break
		}
	}
	if now > base+12 {
		t.Errorf("after %d inner containers the record protects %d mounts, %d before and %d at the peak: the masks of gone inner containers were kept", n, now, base, peak)
	}
	// The protection of what is still mounted is intact: the system
	// container's own procfs masks.
	if out, err := dockerTimeout(30*time.Second, "exec", id, "sh", "-c", "umount /proc/kcore 2>&1 && echo unmasked; true"); err != nil || strings.Contains(out, "unmasked") {
		t.Errorf("a live mask could be removed after pruning: %v %q", err, out)
	}
	t.Logf("dind long-lived: %d inner containers in %v (%s each), %d failed; protected mounts: %d before, %d at the peak, %d after",
		n, elapsed.Round(time.Millisecond), fmt.Sprint((elapsed / time.Duration(n)).Round(time.Millisecond)), failed, base, peak, now)
	t.Logf("protected mounts during the run (count@inner containers(time)): %s", strings.Join(series, " "))
}
