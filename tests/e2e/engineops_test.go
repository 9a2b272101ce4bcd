package e2e

// Every docker container subcommand and runc CLI command an engine or a
// person runs on a container, under sysvisor-runc and, for the expectation,
// under runc on the same private engine (issue 18, "Engine operations").
// One subtest per row of docs/engine-ops.md; a row that differs from runc
// by design asserts the documented difference, so that a change of
// behaviour turns it red and the table is updated with it. docker cp is
// TestDockerCpRunning's (cp_test.go).

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var runtimes = []string{"runc", "sysvisor-runc"}

// eoRun starts a detached container under rt with extra docker run flags
// and the command; removed at cleanup.
func eoRun(t *testing.T, rt string, extra []string, cmd ...string) string {
	t.Helper()
	args := append([]string{"run", "-d", "--runtime=" + rt}, extra...)
	args = append(append(args, image), cmd...)
	id := mustDocker(t, args...)
	t.Cleanup(func() { docker(t, "rm", "-f", id) })
	return id
}

// eoCombined runs docker and returns stdout and stderr together.
func eoCombined(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("/usr/bin/docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+svDir+"/docker.sock")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// eoWait polls cond every 100 ms until it holds or d has passed.
func eoWait(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// eoCgroupLimits prints the container's memory limit and CPU quota from
// inside, on cgroup v1 or v2.
const eoCgroupLimits = `if [ -e /sys/fs/cgroup/memory.max ]; then cat /sys/fs/cgroup/memory.max; cut -d' ' -f1 /sys/fs/cgroup/cpu.max;
else cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us; fi`

// eoTicker prints a line every 100 ms.
var eoTicker = []string{"sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; usleep 100000; done"}

func eoTicks(t *testing.T, id string) int {
	t.Helper()
	return strings.Count(mustDocker(t, "logs", id), "tick ")
}

// eoExportList reads docker export of id: name -> "uid:gid mode".
func eoExportList(t *testing.T, id string) map[string]string {
	t.Helper()
	cmd := exec.Command("/usr/bin/docker", "export", id)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+svDir+"/docker.sock")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	list := map[string]string{}
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("docker export %s: %v", id, err)
		}
		list[strings.TrimSuffix(h.Name, "/")] = fmt.Sprintf("%d:%d %o", h.Uid, h.Gid, h.Mode&0o7777)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("docker export %s: %v", id, err)
	}
	return list
}

// runcRootOf is the runc state root the engine gave the runtime of id.
func runcRootOf(t *testing.T, id string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(svDir, "exec", "runtime-*", "*", id))
	if len(m) != 1 {
		t.Fatalf("runc state of %s under %s/exec: %v", id, svDir, m)
	}
	return filepath.Dir(m[0])
}

// eoRuntimeCLI runs rt's CLI (runc, or sysvisor-runc with the
// environment's run dir) on the engine's container id, as a person would.
func eoRuntimeCLI(t *testing.T, rt, id string, args ...string) (string, error) {
	t.Helper()
	argv := []string{"--root", runcRootOf(t, id)}
	bin := "runc"
	if rt == "sysvisor-runc" {
		bin = filepath.Join(repo, "bin", "sysvisor-runc")
		argv = append([]string{"--run-dir", filepath.Join(svDir, "run")}, argv...)
	}
	cmd := exec.Command(bin, append(argv, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func eoRuntimeState(t *testing.T, rt, id string) string {
	t.Helper()
	out, err := eoRuntimeCLI(t, rt, id, "state", id)
	if err != nil {
		t.Fatalf("%s state: %v\n%s", rt, err, out)
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%s state: %v\n%s", rt, err, out)
	}
	return st.Status
}

// eoBase is the host ID the container's root maps to.
func eoBase(t *testing.T, id string) string {
	t.Helper()
	return strconv.FormatUint(parseMap(t, mustDocker(t, "exec", id, "cat", "/proc/self/uid_map")).outside, 10)
}

func TestEngineOps(t *testing.T) {
	tag := strconv.Itoa(os.Getpid())

	t.Run("export", func(t *testing.T) {
		got := map[string]map[string]string{}
		for _, rt := range runtimes {
			id := eoRun(t, rt, nil, "sleep", "600")
			mustDocker(t, "exec", id, "sh", "-c", "echo x > /tmp/f && chown 1000:1000 /tmp/f && mkdir -m 0700 /data && rm /bin/vi")
			got[rt] = eoExportList(t, id)
			if got[rt]["tmp/f"] != "1000:1000 644" || got[rt]["data"] != "0:0 700" || got[rt]["bin/busybox"] != "0:0 755" {
				t.Errorf("%s: export has tmp/f %q data %q bin/busybox %q, want 1000:1000 644, 0:0 700, 0:0 755",
					rt, got[rt]["tmp/f"], got[rt]["data"], got[rt]["bin/busybox"])
			}
			if _, ok := got[rt]["bin/vi"]; ok {
				t.Errorf("%s: export has the removed bin/vi", rt)
			}
		}
		if a, b := len(got["runc"]), len(got["sysvisor-runc"]); a != b {
			t.Errorf("export has %d entries under runc, %d under sysvisor-runc", a, b)
		}
		for name, v := range got["runc"] {
			if w := got["sysvisor-runc"][name]; w != v {
				t.Errorf("export entry %s: runc %q, sysvisor-runc %q", name, v, w)
			}
		}
	})

	t.Run("diff", func(t *testing.T) {
		got := map[string]string{}
		for _, rt := range runtimes {
			id := eoRun(t, rt, nil, "sleep", "600")
			mustDocker(t, "exec", id, "sh", "-c", "touch /etc/x && mkdir -p /data/sub && echo hi > /data/f && rm /bin/vi")
			got[rt] = sortedLines(mustDocker(t, "diff", id))
		}
		if want := "A /data\nA /data/f\nA /data/sub\nC /bin\nC /etc\nA /etc/x\nD /bin/vi"; sortedLines(want) != got["runc"] {
			t.Errorf("runc's diff:\n%s\nwant:\n%s", got["runc"], sortedLines(want))
		}
		if got["sysvisor-runc"] != got["runc"] {
			t.Errorf("diff under sysvisor-runc:\n%s\nunder runc:\n%s", got["sysvisor-runc"], got["runc"])
		}
	})

	t.Run("commit", func(t *testing.T) {
		check := "stat -c '%n %u:%g %a' /etc/x /data /data/f; test ! -e /bin/vi && echo vi-gone"
		want := "/etc/x 0:0 644\n/data 0:0 700\n/data/f 1000:1000 644\nvi-gone"
		for _, rt := range runtimes {
			id := eoRun(t, rt, nil, "sleep", "600")
			mustDocker(t, "exec", id, "sh", "-c", "touch /etc/x && mkdir -m 0700 /data && echo hi > /data/f && chown 1000:1000 /data/f && rm /bin/vi")
			img := "sysvisor-test/eo-commit-" + rt + "-" + tag
			mustDocker(t, "commit", "-c", "LABEL committed="+rt, id, img)
			t.Cleanup(func() { docker(t, "rmi", "-f", img) })
			// The image runs the same under either runtime.
			for _, run := range runtimes {
				if out := mustDocker(t, "run", "--rm", "--runtime="+run, img, "sh", "-c", check); out != want {
					t.Errorf("committed from %s, run under %s:\n%s\nwant:\n%s", rt, run, out, want)
				}
			}
			if l := mustDocker(t, "image", "inspect", "-f", "{{.Config.Labels.committed}}", img); l != rt {
				t.Errorf("commit --change from %s: label %q", rt, l)
			}
		}
	})

	t.Run("pause-unpause", func(t *testing.T) {
		for _, rt := range runtimes {
			id := eoRun(t, rt, nil, eoTicker...)
			if !eoWait(10*time.Second, func() bool { return eoTicks(t, id) > 2 }) {
				t.Fatalf("%s: ticker not ticking", rt)
			}
			mustDocker(t, "pause", id)
			if s := mustDocker(t, "inspect", "-f", "{{.State.Status}}", id); s != "paused" {
				t.Errorf("%s: status %q after pause", rt, s)
			}
			n := eoTicks(t, id)
			time.Sleep(time.Second)
			if m := eoTicks(t, id); m != n {
				t.Errorf("%s: %d ticks while paused", rt, m-n)
			}
			if _, err := docker(t, "exec", id, "true"); err == nil || !strings.Contains(err.Error(), "is paused") {
				t.Errorf("%s: exec into a paused container: %v, want refused as paused", rt, err)
			}
			mustDocker(t, "unpause", id)
			if !eoWait(10*time.Second, func() bool { return eoTicks(t, id) > n+2 }) {
				t.Errorf("%s: not ticking after unpause", rt)
			}
			// sysvisord still answers the container (a view, sysinfo).
			if out, err := docker(t, "exec", id, "sh", "-c", "head -1 /proc/meminfo && sysinfo >/dev/null"); err != nil {
				t.Errorf("%s: after unpause: %v %s", rt, err, out)
			}
		}
	})

	t.Run("update-memory-cpus-live", func(t *testing.T) {
		for _, rt := range runtimes {
			id := eoRun(t, rt, []string{"--memory", "256m", "--memory-swap", "256m"}, "sleep", "600")
			mustDocker(t, "update", "--memory", "128m", "--memory-swap", "128m", "--cpus", "1", id)
			if out := mustDocker(t, "exec", id, "sh", "-c", eoCgroupLimits); out != "134217728\n100000" {
				t.Errorf("%s: cgroup limits inside after update: %q, want 134217728 and a 100000 quota", rt, out)
			}
			// sysvisord's views follow the cgroup: free and /proc/cpuinfo
			// show the new limits; under runc they show the host's.
			view := mustDocker(t, "exec", id, "sh", "-c", "free | awk '/^Mem:/{print $2}'; grep -c ^processor /proc/cpuinfo")
			if rt == "sysvisor-runc" && view != "131072\n1" {
				t.Errorf("%s: free total and /proc/cpuinfo CPUs after update: %q, want 131072 (KiB) and 1", rt, view)
			}
			if rt == "runc" && strings.HasPrefix(view, "131072\n") {
				t.Errorf("runc: free shows the limit (%q): the comparison has no baseline", view)
			}
		}
	})

	t.Run("top", func(t *testing.T) {
		for _, rt := range runtimes {
			id := eoRun(t, rt, nil, "sleep", "600")
			out := mustDocker(t, "top", id)
			lines := strings.Split(out, "\n")
			if len(lines) != 2 || !strings.HasSuffix(lines[1], "sleep 600") {
				t.Fatalf("%s: docker top:\n%s\nwant one process, sleep 600", rt, out)
			}
			// ps on the host: the UID is the host's view, root under runc,
			// the container's leased base under sysvisor-runc.
			want := "root"
			if rt == "sysvisor-runc" {
				want = eoBase(t, id)
			}
			if uid := strings.Fields(lines[1])[0]; uid != want {
				t.Errorf("%s: docker top UID %q, want %q", rt, uid, want)
			}
			if pid := mustDocker(t, "inspect", "-f", "{{.State.Pid}}", id); strings.Fields(lines[1])[1] != pid {
				t.Errorf("%s: docker top PID %s, inspect says %s", rt, strings.Fields(lines[1])[1], pid)
			}
		}
	})

	t.Run("stats-no-stream", func(t *testing.T) {
		for _, rt := range runtimes {
			id := eoRun(t, rt, []string{"--memory", "64m"}, "sleep", "600")
			out := mustDocker(t, "stats", "--no-stream", "--format", "{{.MemUsage}}|{{.PIDs}}|{{.CPUPerc}}", id)
			f := strings.Split(out, "|")
			if len(f) != 3 || !strings.HasSuffix(f[0], "/ 64MiB") || strings.HasPrefix(f[0], "0B") || f[1] != "1" || !strings.HasSuffix(f[2], "%") {
				t.Errorf("%s: docker stats: %q, want memory used of 64MiB, 1 pid, a CPU percentage", rt, out)
			}
		}
	})

	t.Run("logs", func(t *testing.T) {
		got := map[string]string{}
		for _, rt := range runtimes {
			id := eoRun(t, rt, nil, "sh", "-c", "echo out-1; echo err-1 >&2; sleep 0.2; echo out-2; sleep 600")
			if !eoWait(10*time.Second, func() bool { o, _ := eoCombined(t, "logs", id); return strings.Contains(o, "out-2") }) {
				t.Fatalf("%s: no logs", rt)
			}
			stdout := mustDocker(t, "logs", id)
			both, _ := eoCombined(t, "logs", id)
			tail, _ := eoCombined(t, "logs", "--tail", "1", id)
			ts := mustDocker(t, "logs", "--timestamps", id)
			got[rt] = fmt.Sprintf("stdout=%q stderr-apart=%v tail=%q timestamped=%v", stdout, strings.Contains(both, "err-1\n"),
				strings.TrimSpace(tail), regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\S+ out-1$`).MatchString(ts))
		}
		if want := `stdout="out-1\nout-2" stderr-apart=true tail="out-2" timestamped=true`; got["runc"] != want || got["sysvisor-runc"] != want {
			t.Errorf("docker logs: runc %s, sysvisor-runc %s; want %s", got["runc"], got["sysvisor-runc"], want)
		}
	})

	t.Run("attach", func(t *testing.T) {
		for _, rt := range runtimes {
			id := eoRun(t, rt, []string{"-i"}, "sh", "-c", "while read l; do echo got:$l; done")
			cmd := exec.Command("/usr/bin/docker", "attach", "--sig-proxy=false", id)
			cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+svDir+"/docker.sock")
			in, _ := cmd.StdinPipe()
			out, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 16)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					select {
					case lines <- sc.Text():
					default: // nobody reading any more
					}
				}
				close(lines)
			}()
			var got string
			deadline := time.After(15 * time.Second)
			tick := time.NewTicker(300 * time.Millisecond)
		read:
			for {
				select {
				case l, ok := <-lines:
					if !ok || l == "got:hello" {
						got = l
						break read
					}
				case <-tick.C:
					// Until attach is connected, input may go nowhere.
					io.WriteString(in, "hello\n")
				case <-deadline:
					break read
				}
			}
			tick.Stop()
			cmd.Process.Kill()
			cmd.Wait()
			if got != "got:hello" {
				t.Errorf("%s: docker attach: no echo of stdin through the container", rt)
			}
		}
	})

	t.Run("kill-signals", func(t *testing.T) {
		trap := "for s in TERM INT HUP USR1; do trap \"echo got-$s\" $s; done; echo ready; while true; do sleep 1 & wait $!; done"
		for _, rt := range runtimes {
			id := eoRun(t, rt, nil, "sh", "-c", trap)
			if !eoWait(10*time.Second, func() bool { return strings.Contains(mustDocker(t, "logs", id), "ready") }) {
				t.Fatalf("%s: init not ready", rt)
			}
			for _, sig := range []string{"TERM", "INT", "HUP", "USR1"} {
				mustDocker(t, "kill", "-s", sig, id)
				if !eoWait(10*time.Second, func() bool { return strings.Contains(mustDocker(t, "logs", id), "got-"+sig) }) {
					t.Errorf("%s: init did not see SIG%s", rt, sig)
				}
			}
			mustDocker(t, "kill", "-s", "KILL", id)
			var st string
			eoWait(10*time.Second, func() bool {
				st = mustDocker(t, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", id)
				return strings.HasPrefix(st, "exited")
			})
			if st != "exited 137" {
				t.Errorf("%s: after SIGKILL: %q, want exited 137", rt, st)
			}
		}
	})

	t.Run("rename", func(t *testing.T) {
		for _, rt := range runtimes {
			a, b := "eo-a-"+rt+"-"+tag, "eo-b-"+rt+"-"+tag
			id := eoRun(t, rt, []string{"--name", a}, "sleep", "600")
			mustDocker(t, "rename", a, b)
			if n := mustDocker(t, "inspect", "-f", "{{.Name}}", id); n != "/"+b {
				t.Errorf("%s: name after rename %q", rt, n)
			}
			if out, err := docker(t, "exec", b, "true"); err != nil {
				t.Errorf("%s: exec by the new name: %v %s", rt, err, out)
			}
			// The runtime knows the container by id: it restarts as ever.
			mustDocker(t, "restart", "-t", "0", b)
			if out, err := docker(t, "exec", b, "true"); err != nil {
				t.Errorf("%s: exec after restart of the renamed container: %v %s", rt, err, out)
			}
		}
	})

	t.Run("restart-time", func(t *testing.T) {
		// Init traps TERM and goes on: restart --time 2 waits 2 s, then
		// kills it.
		trap := "trap 'echo got-TERM' TERM; echo started; while true; do sleep 1 & wait $!; done"
		for _, rt := range runtimes {
			id := eoRun(t, rt, nil, "sh", "-c", trap)
			before := mustDocker(t, "inspect", "-f", "{{.State.StartedAt}}", id)
			start := time.Now()
			mustDocker(t, "restart", "--time", "2", id)
			took := time.Since(start)
			if took < 2*time.Second || took > 20*time.Second {
				t.Errorf("%s: restart --time 2 took %v", rt, took)
			}
			if after := mustDocker(t, "inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", id); after == "true "+before || !strings.HasPrefix(after, "true ") {
				t.Errorf("%s: after restart: %q (started before %s)", rt, after, before)
			}
			logs := mustDocker(t, "logs", id)
			if strings.Count(logs, "started") != 2 || !strings.Contains(logs, "got-TERM") {
				t.Errorf("%s: logs after restart --time:\n%s\nwant TERM seen and two starts", rt, logs)
			}
		}
	})

	t.Run("init", func(t *testing.T) {
		for _, rt := range runtimes {
			out := mustDocker(t, "run", "--rm", "--runtime="+rt, "--init", image, "sh", "-c",
				"readlink /proc/1/exe; echo $$; sh -c 'sleep 0.1 &' ; sleep 0.3; ps -o stat,comm | grep -c '^Z' || true")
			if f := strings.Split(out, "\n"); len(f) != 3 || f[0] != "/sbin/docker-init" || f[1] == "1" || f[2] != "0" {
				t.Errorf("%s: --init: %q, want docker-init as PID 1, the command below it and no zombie", rt, out)
			}
		}
	})

	t.Run("read-only", func(t *testing.T) {
		for _, rt := range runtimes {
			out, _ := eoCombined(t, "run", "--rm", "--runtime="+rt, "--read-only", image, "sh", "-c",
				"touch /x 2>&1; awk '$2 == \"/\" {split($4, o, \",\"); print o[1]}' /proc/mounts; echo hi > /dev/shm/ok && cat /dev/shm/ok; head -1 /proc/meminfo | cut -d: -f1")
			out = strings.TrimSpace(strings.ReplaceAll(out, "WARNING: IPv4 forwarding is disabled. Networking will not work.\n", ""))
			if want := "touch: /x: Read-only file system\nro\nhi\nMemTotal"; out != want {
				t.Errorf("%s: --read-only:\n%s\nwant:\n%s", rt, out, want)
			}
		}
	})

	t.Run("tmpfs", func(t *testing.T) {
		for _, rt := range runtimes {
			out := mustDocker(t, "run", "--rm", "--runtime="+rt, "--tmpfs", "/scratch:size=8m,mode=1777", image, "sh", "-c",
				"awk '$2 == \"/scratch\" {print $3}' /proc/mounts; echo hi > /scratch/f && stat -c '%u:%g %a' /scratch /scratch/f; df -k /scratch | awk 'NR==2 {print $2}'")
			if want := "tmpfs\n0:0 1777\n0:0 644\n8192"; out != want {
				t.Errorf("%s: --tmpfs:\n%s\nwant:\n%s", rt, out, want)
			}
		}
	})

	t.Run("named-volume", func(t *testing.T) {
		for _, rt := range runtimes {
			vol := "eo-vol-" + rt + "-" + tag
			mustDocker(t, "volume", "create", vol)
			t.Cleanup(func() { docker(t, "volume", "rm", "-f", vol) })
			// A new volume over /etc is filled from the image; a second
			// container sees what the first wrote.
			out := mustDocker(t, "run", "--rm", "--runtime="+rt, "-v", vol+":/etc", image, "sh", "-c",
				"stat -c '%u:%g %a' /etc /etc/passwd; echo x > /etc/new && mkdir /etc/d && stat -c '%u:%g' /etc/new /etc/d")
			if want := "0:0 755\n0:0 644\n0:0\n0:0"; out != want {
				t.Errorf("%s: named volume inside:\n%s\nwant:\n%s", rt, out, want)
			}
			if out := mustDocker(t, "run", "--rm", "--runtime="+rt, "-v", vol+":/v", image, "sh", "-c", "cat /v/new; stat -c %u:%g /v/new"); out != "x\n0:0" {
				t.Errorf("%s: volume in the next container: %q", rt, out)
			}
			mp := mustDocker(t, "volume", "inspect", "-f", "{{.Mountpoint}}", vol)
			for _, f := range []string{"new", "d", "passwd"} {
				if o := statOwner(t, filepath.Join(mp, f)); o != "0:0" {
					t.Errorf("%s: volume's %s is %s on the host, want 0:0", rt, f, o)
				}
			}
		}
	})

	t.Run("device", func(t *testing.T) {
		dev := ""
		for _, d := range []string{"/dev/fuse", "/dev/net/tun"} {
			if st, err := os.Stat(d); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				dev = d
				break
			}
		}
		if dev == "" {
			t.Skip("no /dev/fuse or /dev/net/tun on this host")
		}
		st, _ := os.Stat(dev)
		want := fmt.Sprintf("%s 0:0 %o\nopened", dev, st.Mode().Perm())
		check := "stat -c '%n %u:%g %a' " + dev + " && exec 3<>" + dev + " && echo opened"
		for _, rt := range runtimes {
			// Opened read-write by root inside, whatever the host's mode
			// (0600 here for some devices): a node of the container's own.
			// Again after a restart; nothing left after rm.
			id := eoRun(t, rt, []string{"--device", dev}, "sleep", "600")
			for round := 0; round < 2; round++ {
				if out, err := docker(t, "exec", id, "sh", "-c", check); err != nil || strings.TrimSpace(out) != want {
					t.Errorf("%s: --device %s (round %d): %v\n%s\nwant:\n%s", rt, dev, round, err, out, want)
				}
				if round == 0 {
					mustDocker(t, "restart", "-t", "0", id)
				}
			}
			mustDocker(t, "rm", "-f", id)
			if m := mountsUnder(filepath.Join(svDir, "run", "containers", id)); len(m) > 0 {
				t.Errorf("%s: mounts left after rm: %v", rt, m)
			}
		}
	})

	t.Run("healthcheck", func(t *testing.T) {
		for _, rt := range runtimes {
			id := eoRun(t, rt, []string{"--health-cmd", "test -e /tmp/ok && grep -q MemTotal /proc/meminfo", "--health-interval", "1s",
				"--health-retries", "1", "--health-timeout", "5s"}, "sh", "-c", "sleep 1; touch /tmp/ok; sleep 600")
			var st string
			if !eoWait(30*time.Second, func() bool {
				st = mustDocker(t, "inspect", "-f", "{{.State.Health.Status}}", id)
				return st == "healthy"
			}) {
				t.Errorf("%s: health %q after 30 s, want healthy", rt, st)
			}
			mustDocker(t, "exec", id, "rm", "/tmp/ok")
			if !eoWait(30*time.Second, func() bool {
				st = mustDocker(t, "inspect", "-f", "{{.State.Health.Status}}", id)
				return st == "unhealthy"
			}) {
				t.Errorf("%s: health %q after the check's file went, want unhealthy", rt, st)
			}
		}
	})

	t.Run("restart-always-across-engine-restart", func(t *testing.T) {
		ids, started := map[string]string{}, map[string]string{}
		for _, rt := range runtimes {
			ids[rt] = eoRun(t, rt, []string{"--restart=always", "--stop-timeout", "1"}, "sleep", "600")
			mustDocker(t, "exec", ids[rt], "touch", "/kept")
			started[rt] = mustDocker(t, "inspect", "-f", "{{.State.StartedAt}}", ids[rt])
		}
		before := leases(t)[ids["sysvisor-runc"]]
		eoRestartEngine(t)
		for _, rt := range runtimes {
			id := ids[rt]
			var st string
			if !eoWait(30*time.Second, func() bool {
				st, _ = dockerTimeout(10*time.Second, "inspect", "-f", "{{.State.Status}}", id)
				return st == "running"
			}) {
				t.Errorf("%s: %q 30 s after the engine restart, want running", rt, st)
				continue
			}
			if s := mustDocker(t, "inspect", "-f", "{{.State.StartedAt}}", id); s == started[rt] {
				t.Errorf("%s: not restarted by the engine (started at %s before and after)", rt, s)
			}
			if out, err := docker(t, "exec", id, "sh", "-c", "ls /kept && cat /proc/self/uid_map"); err != nil {
				t.Errorf("%s: after the engine restart: %v %s", rt, err, out)
			} else if rt == "sysvisor-runc" {
				m := parseMap(t, strings.Split(out, "\n")[1])
				if l := leases(t)[id]; l.Start != uint32(m.outside) || m.size != 65536 || m.inside != 0 {
					t.Errorf("sysvisor-runc: uid_map %+v after the engine restart, lease %+v (before %+v)", m, l, before)
				}
			}
		}
	})

	// The runc CLI on an engine's container, as an engine or a person
	// calls it (with the engine's runc root).
	t.Run("runtime-ps", func(t *testing.T) {
		for _, rt := range runtimes {
			id := eoRun(t, rt, nil, "sleep", "600")
			pid := mustDocker(t, "inspect", "-f", "{{.State.Pid}}", id)
			out, err := eoRuntimeCLI(t, rt, id, "ps", "--format", "json", id)
			if err != nil || strings.TrimSpace(out) != "["+pid+"]" {
				t.Errorf("%s ps --format json: %v %q, want [%s]", rt, err, out, pid)
			}
			out, err = eoRuntimeCLI(t, rt, id, "ps", id)
			if err != nil || !strings.Contains(out, "sleep 600") {
				t.Errorf("%s ps: %v\n%s", rt, err, out)
			}
		}
	})

	t.Run("runtime-events-stats", func(t *testing.T) {
		for _, rt := range runtimes {
			id := eoRun(t, rt, []string{"--memory", "64m"}, "sleep", "600")
			out, err := eoRuntimeCLI(t, rt, id, "events", "--stats", id)
			var ev struct {
				Type string `json:"type"`
				ID   string `json:"id"`
				Data struct {
					Memory struct {
						Usage struct {
							Usage, Limit uint64
						} `json:"usage"`
					} `json:"memory"`
					Pids struct {
						Current uint64 `json:"current"`
					} `json:"pids"`
				} `json:"data"`
			}
			if err != nil || json.Unmarshal([]byte(out), &ev) != nil {
				t.Errorf("%s events --stats: %v\n%s", rt, err, out)
				continue
			}
			if ev.Type != "stats" || ev.ID != id || ev.Data.Memory.Usage.Usage == 0 || ev.Data.Memory.Usage.Limit != 64<<20 || ev.Data.Pids.Current != 1 {
				t.Errorf("%s events --stats: %+v, want stats of %s: memory used of 64 MiB, 1 pid", rt, ev, id)
			}
		}
	})

	t.Run("runtime-update", func(t *testing.T) {
		for _, rt := range runtimes {
			id := eoRun(t, rt, []string{"--memory", "256m"}, "sleep", "600")
			if out, err := eoRuntimeCLI(t, rt, id, "update", "--memory", "104857600", "--cpu-quota", "50000", "--cpu-period", "100000", id); err != nil {
				t.Fatalf("%s update: %v\n%s", rt, err, out)
			}
			if out := mustDocker(t, "exec", id, "sh", "-c", eoCgroupLimits); out != "104857600\n50000" {
				t.Errorf("%s: limits inside after update: %q", rt, out)
			}
			if rt == "sysvisor-runc" {
				if out := mustDocker(t, "exec", id, "grep", "MemTotal", "/proc/meminfo"); !strings.HasSuffix(out, " 102400 kB") {
					t.Errorf("%s: /proc/meminfo after update: %q, want 102400 kB", rt, out)
				}
			}
		}
	})

	t.Run("runtime-pause-resume", func(t *testing.T) {
		for _, rt := range runtimes {
			id := eoRun(t, rt, nil, eoTicker...)
			if !eoWait(10*time.Second, func() bool { return eoTicks(t, id) > 2 }) {
				t.Fatalf("%s: ticker not ticking", rt)
			}
			if out, err := eoRuntimeCLI(t, rt, id, "pause", id); err != nil {
				t.Fatalf("%s pause: %v\n%s", rt, err, out)
			}
			if s := eoRuntimeState(t, rt, id); s != "paused" {
				t.Errorf("%s state after pause: %q", rt, s)
			}
			n := eoTicks(t, id)
			time.Sleep(time.Second)
			if m := eoTicks(t, id); m != n {
				t.Errorf("%s: %d ticks while paused", rt, m-n)
			}
			if out, err := eoRuntimeCLI(t, rt, id, "resume", id); err != nil {
				t.Fatalf("%s resume: %v\n%s", rt, err, out)
			}
			if s := eoRuntimeState(t, rt, id); s != "running" {
				t.Errorf("%s state after resume: %q", rt, s)
			}
			if !eoWait(10*time.Second, func() bool { return eoTicks(t, id) > n+2 }) {
				t.Errorf("%s: not ticking after resume", rt)
			}
		}
	})

	t.Run("runtime-checkpoint", func(t *testing.T) {
		for _, rt := range runtimes {
			id := eoRun(t, rt, nil, "sleep", "600")
			img := filepath.Join(t.TempDir(), "ckpt")
			out, err := eoRuntimeCLI(t, rt, id, "checkpoint", "--leave-running", "--image-path", img, id)
			if rt == "runc" {
				// Works with CRIU installed; the reference only.
				t.Logf("runc checkpoint: %v %s", err, strings.TrimSpace(out))
				continue
			}
			if err == nil || !strings.Contains(out, "checkpoint is not supported by sysvisor-runc") {
				t.Errorf("sysvisor-runc checkpoint: %v %q, want a clear 'not supported'", err, out)
			}
			// Refused before anything happened to the container.
			if s := eoRuntimeState(t, rt, id); s != "running" {
				t.Errorf("sysvisor-runc state after a refused checkpoint: %q", s)
			}
			if _, err := docker(t, "exec", id, "true"); err != nil {
				t.Errorf("sysvisor-runc: exec after a refused checkpoint: %v", err)
			}
		}
	})
}

// eoRestartEngine stops the private dockerd (SIGTERM: it stops its
// containers, as a host's shutdown or `systemctl restart docker` does) and
// starts it again with tests/env.sh, sysvisord staying up.
func eoRestartEngine(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(svDir, "docker.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	// Whatever happens below, the suite gets its engine back.
	t.Cleanup(func() {
		if out, err := envsh("up"); err != nil {
			t.Errorf("tests/env.sh up after the engine restart: %v\n%s", err, out)
		}
	})
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !eoWait(60*time.Second, func() bool { return syscall.Kill(pid, 0) != nil || procState(pid) == "Z" }) {
		t.Fatalf("dockerd %d still running 60 s after SIGTERM", pid)
	}
	if out, err := envsh("up"); err != nil {
		t.Fatalf("tests/env.sh up: %v\n%s", err, out)
	}
}

// procState is the state letter of pid ("" if gone).
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return ""
}
