package procview

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sysvisor/sysvisor/linux/cgroup"
)

// Load averages as the kernel keeps them (kernel/sched/loadavg.c): fixed
// point with FShift fractional bits, folded in every LoadFreq.
const (
	FShift   = 11
	fixed1   = 1 << FShift
	LoadFreq = 5 * time.Second
)

// exp is the decay per LoadFreq for 1, 5 and 15 minutes: 1/exp(5s/1min)
// etc. in fixed point, the kernel's EXP_1, EXP_5, EXP_15.
var exp = [3]uint64{1884, 2014, 2037}

// Load is a container's load average and the task counts of its last
// sample.
type Load struct {
	Avg     [3]uint64 // fixed point, FShift fractional bits
	Running uint64    // tasks running (state R)
	Total   uint64    // tasks (threads)
	LastPid int       // highest pid in the container's pid namespace
}

// Next folds in a sample: active is the number of running plus
// uninterruptible tasks, as the kernel counts for its load.
func (l Load) Next(active uint64) Load {
	a := active * fixed1
	for i, e := range exp {
		n := l.Avg[i]*e + a*(fixed1-e)
		if a >= l.Avg[i] {
			n += fixed1 - 1
		}
		l.Avg[i] = n / fixed1
	}
	return l
}

// Loadavg renders /proc/loadavg.
func Loadavg(l Load) []byte {
	var b bytes.Buffer
	for _, v := range l.Avg {
		fmt.Fprintf(&b, "%d.%02d ", v>>FShift, ((v&(fixed1-1))*100)>>FShift)
	}
	fmt.Fprintf(&b, "%d/%d %d\n", l.Running, l.Total, l.LastPid)
	return b.Bytes()
}

// Tasks counts the threads of a container's cgroup subtree. dirs come from
// TaskDirs; proc is the host's /proc; level is the index, in NSpid, of the
// container's own pid namespace (1 when the supervisor is in the host's and
// the container one level below). active counts R and D, as the kernel's
// load does; running only R.
func Tasks(dir, file, proc string, level int) (running, active, total uint64, lastPid int, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p != dir && os.IsNotExist(err) {
				return nil // a child cgroup removed meanwhile
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, file))
		if err != nil {
			if os.IsNotExist(err) || os.IsPermission(err) {
				return nil
			}
			return err
		}
		for _, tid := range strings.Fields(string(b)) {
			st, err := os.ReadFile(filepath.Join(proc, tid, "status"))
			if err != nil {
				continue // exited meanwhile
			}
			state, nspid := statusFields(st)
			total++
			switch state {
			case 'R':
				running++
				active++
			case 'D':
				active++
			}
			if level < len(nspid) && nspid[level] > lastPid {
				lastPid = nspid[level]
			}
		}
		return nil
	})
	return running, active, total, lastPid, err
}

// TaskDir is the cgroup directory whose subtree holds the container's
// threads, and the file listing them: a v1 hierarchy's "tasks" (pids, cpu or
// memory) or v2's "cgroup.threads".
func TaskDir(p cgroup.Paths) (dir, file string, ok bool) {
	for _, c := range []string{"pids", "cpu", "cpuacct", "memory"} {
		if d, ok := p[c]; ok {
			return d, "tasks", true
		}
	}
	if d, ok := p[""]; ok {
		return d, "cgroup.threads", true
	}
	return "", "", false
}

// statusFields extracts the state letter and the NSpid list from
// /proc/<tid>/status.
func statusFields(b []byte) (state byte, nspid []int) {
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "State":
			if v = strings.TrimSpace(v); v != "" {
				state = v[0]
			}
		case "NSpid":
			for _, f := range strings.Fields(v) {
				n, err := strconv.Atoi(f)
				if err != nil {
					return state, nil
				}
				nspid = append(nspid, n)
			}
		}
	}
	return state, nspid
}

// NSLevel is the index in NSpid of the pid namespace of process pid (from
// the host's /proc): the container's init gives the container's level.
func NSLevel(proc string, pid int) (int, error) {
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	_, nspid := statusFields(b)
	if len(nspid) == 0 {
		return 0, fmt.Errorf("pid %d: no NSpid", pid)
	}
	return len(nspid) - 1, nil
}
