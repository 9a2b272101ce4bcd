package runtime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/apparmor"
	"github.com/sysvisor/sysvisor/kernel"
	"github.com/sysvisor/sysvisor/linux/statefile"
	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor/control"
)

// Environment overrides, for engines that cannot pass runtime arguments.
const (
	EnvRunc   = "SYSVISOR_RUNC"
	EnvRunDir = "SYSVISOR_RUN_DIR"
	// EnvKernelRelease names a kernel release for the floor check to judge
	// instead of the running kernel's, when it is older: tests make
	// sysvisor-runc refuse with it. It cannot let an older kernel through.
	EnvKernelRelease = "SYSVISOR_KERNEL_RELEASE"
)

// controlTimeout bounds every call to sysvisord: a dead or wedged supervisor
// must fail a create quickly, never hang the engine.
const controlTimeout = 5 * time.Second

type runner struct {
	phases *phases
	inv    *Invocation
	log    *Logger
	runc   string
	runDir string
	root   string
}

// Main runs sysvisor-runc with argv (without program name) and returns the
// exit code.
func Main(argv []string) int {
	inv, err := Parse(argv)
	if err != nil {
		// Log where the engine looks, if the flags got that far.
		l := &Logger{}
		for i, a := range argv {
			if (a == "--log" || a == "-log") && i+1 < len(argv) {
				l.path = argv[i+1]
			}
			for _, p := range []string{"--log=", "-log="} {
				if v, ok := strings.CutPrefix(a, p); ok {
					l.path = v
				}
			}
			if a == "--log-format=json" || ((a == "--log-format" || a == "-log-format") && i+1 < len(argv) && argv[i+1] == "json") {
				l.json = true
			}
		}
		l.Errorf("%v", err)
		return 1
	}
	r := &runner{inv: inv, log: newLogger(inv.Global)}
	if err := forceFallbacks(inv.Global.KernelFallbacks); err != nil {
		if inv.Command == "create" || inv.Command == "run" {
			r.log.Errorf("%v", err)
			return 1
		}
		// Whatever else the engine asks (delete, kill, state) must
		// still work on containers made before the switch went wrong.
		r.log.Warnf("%v", err)
	}
	r.runc = firstNonEmpty(inv.Global.Runc, os.Getenv(EnvRunc), "runc")
	r.runDir = firstNonEmpty(inv.Global.RunDir, os.Getenv(EnvRunDir), control.DefaultRunDir)
	r.root = firstNonEmpty(inv.Global.Root, "/run/runc")
	if abs, err := filepath.Abs(r.root); err == nil {
		// sysvisord looks for runc's state here to tell a live container
		// from one deleted behind its back; it does not share our cwd.
		r.root = abs
	}
	switch inv.Command {
	case "create", "run":
		return r.create()
	case "delete":
		return r.delete()
	case "hook":
		if err := runHook(inv.Args, os.Stdin); err != nil {
			r.log.Errorf("%v", err)
			return 1
		}
		return 0
	case "start":
		if err := leafOnStart(r.root, inv.ID, false); err != nil {
			r.log.Errorf("start %s: cgroup leaf: %v", inv.ID, err)
			return 1
		}
	case "kill":
		r.inv.Args = killArgs(inv.Args, inv.ID, ContainerDir(r.runDir, inv.ID))
	case "exec":
		if err := r.rewriteExecProcess(); err != nil {
			r.log.Errorf("exec in %s: %v", inv.ID, err)
			return 1
		}
	case "checkpoint", "restore":
		r.log.Errorf("%s is not supported by sysvisor-runc: a system container's supervisor state cannot be checkpointed", inv.Command)
		return 1
	}
	return r.execRunc()
}

// forceFallbacks applies --kernel-fallbacks on top of the environment's
// SYSVISOR_KERNEL_FALLBACKS; a name the kernel package does not know is an
// error in either.
func forceFallbacks(list string) error {
	if err := kernel.EnvError(); err != nil {
		return err
	}
	if list == "" {
		return nil
	}
	if err := kernel.Force(list); err != nil {
		return fmt.Errorf("--kernel-fallbacks: %w", err)
	}
	return nil
}

// floorRelease is the release the floor check judges: the running
// kernel's, or override when that parses as an older one. An override
// that does not parse is judged itself, and refused: the variable only
// ever makes the check stricter.
func floorRelease(running, override string) string {
	if override == "" {
		return running
	}
	o, err := kernel.ParseRelease(override)
	if err != nil {
		return override
	}
	if r, err := kernel.ParseRelease(running); err == nil && !o.Less(r) {
		return running
	}
	return override
}

// logFallbacks says, with --debug, which kernel features use a fallback
// (probing every feature costs a few child processes, so only then).
func (r *runner) logFallbacks() {
	if !r.log.debug {
		return
	}
	var used []string
	for _, f := range kernel.Features() {
		if !f.Has() {
			used = append(used, f.Name+": "+f.State())
		}
	}
	if len(used) == 0 {
		r.log.Debugf("kernel %s: every feature present, no fallback in use", kernel.Release())
		return
	}
	r.log.Debugf("kernel %s: fallbacks in use: %s", kernel.Release(), strings.Join(used, "; "))
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

func (r *runner) runcArgs() []string {
	return append(append(slices.Clone(r.inv.Global.Pass), r.inv.Command), r.inv.Args...)
}

// execRunc replaces this process with runc: exit codes, signals and stdio
// are runc's own.
func (r *runner) execRunc() int {
	path, err := exec.LookPath(r.runc)
	if err != nil {
		r.log.Errorf("runc binary %q: %v", r.runc, err)
		return 1
	}
	err = syscall.Exec(path, append([]string{path}, r.runcArgs()...), os.Environ())
	r.log.Errorf("exec %s: %v", path, err)
	return 1
}

// runRunc runs runc as a child, forwarding signals, and returns its exit code.
func (r *runner) runRunc() (int, error) {
	cmd := exec.Command(r.runc, r.runcArgs()...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	for i := 0; i < r.inv.PreserveFds; i++ {
		cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(3+i), fmt.Sprintf("fd%d", 3+i)))
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 1, fmt.Errorf("start %s: %w", r.runc, err)
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				if s != syscall.SIGCHLD && s != syscall.SIGURG {
					cmd.Process.Signal(s)
				}
			case <-done:
				return
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			return 128 + int(st.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

func (r *runner) containerExists() bool {
	_, err := os.Stat(filepath.Join(r.root, r.inv.ID, "state.json"))
	return err == nil
}

func (r *runner) create() int {
	inv := r.inv
	bundle := inv.Bundle
	if bundle == "" {
		bundle, _ = os.Getwd()
	}
	bundle, _ = filepath.Abs(bundle)
	cfgPath := filepath.Join(bundle, "config.json")
	// Before anything is leased or mounted: below the floor the mounts
	// that follow may fail half-way, on the engine's own rootfs.
	if err := kernel.CheckFloor(floorRelease(kernel.Release(), os.Getenv(EnvKernelRelease))); err != nil {
		r.log.Errorf("%v", err)
		return 1
	}
	r.logFallbacks()
	r.phases = newPhases()
	defer func() { r.log.Debugf("container %s: create took %s", inv.ID, r.phases) }()
	spec, mode, err := loadSpec(cfgPath)
	if err != nil {
		r.log.Errorf("%v", err)
		return 1
	}
	r.phases.mark("spec")
	if r.containerExists() {
		// runc would refuse too, but only after we had leased (the same
		// block: leases are per id) and remounted the live container's
		// rootfs; its failure path would then tear the live one down.
		r.log.Errorf("container with id exists: %s", inv.ID)
		return 1
	}
	name, source := policy.Select(spec.Annotations, processEnv(spec), inv.Global.Policy)
	if err := Validate(spec, inv.Global.AllowUnsafe); err != nil {
		r.log.Errorf("%s: %v", cfgPath, err)
		return 1
	}
	pod, err := podOf(spec.Annotations)
	if err != nil {
		r.log.Errorf("%s: %v", cfgPath, err)
		return 1
	}
	feat, err := runcFeatures(r.runc, r.runDir)
	if err != nil {
		r.log.Errorf("%v", err)
		return 1
	}
	if !slices.Contains(feat.Actions, string(specs.ActNotify)) {
		r.log.Errorf("%s does not support seccomp SCMP_ACT_NOTIFY (runc >= 1.1 with libseccomp >= 2.5 is required)", r.runc)
		return 1
	}
	r.phases.mark("features")
	// sysvisord resolves the policy among the ones it has loaded (it
	// keeps the last good version of a file that stopped parsing) before
	// it leases anything: an unknown or invalid policy leaves nothing
	// behind.
	req := control.Request{Op: control.OpCreate, ID: inv.ID, Bundle: bundle, RuncRoot: r.root,
		Policy: name, PolicySource: source, PolicyDir: inv.Global.PolicyDir, Pod: pod.Sandbox, Sandbox: pod.Role == podSandbox}
	if spec.Linux != nil {
		req.MaskedPaths, req.ReadonlyPaths = spec.Linux.MaskedPaths, spec.Linux.ReadonlyPaths
		// The rewrite adds these; sysvisord masks them in the procfs and
		// sysfs it builds for the container too.
		req.MaskedPaths = append(slices.Clone(req.MaskedPaths), appArmorMasks(apparmor.Enabled())...)
	}
	resp, err := control.Call(r.runDir, req, controlTimeout)
	if err == nil && resp.Policy == nil {
		err = fmt.Errorf("sysvisord answered without a policy (an older sysvisord?)")
	}
	if err != nil {
		r.log.Errorf("container %s: create with sysvisord: %v", inv.ID, err)
		if resp != nil && resp.Lease != nil {
			r.release()
		}
		return 1
	}
	pol := resp.Policy
	r.phases.mark("lease")
	code, err := r.createLeased(spec, mode, cfgPath, bundle, pol, resp, feat, pod)
	if err != nil {
		r.log.Errorf("container %s: %v", inv.ID, err)
	}
	if code != 0 || (inv.Command == "run" && !inv.Detach && !r.containerExists()) {
		r.release()
	}
	return code
}

func (r *runner) createLeased(spec *specs.Spec, mode os.FileMode, cfgPath, bundle string, pol *policy.Policy, resp *control.Response, feat *seccompFeatures, pod pod) (int, error) {
	l := *resp.Lease
	podOpts, criNet, err := r.podOptions(spec, pod, l.Start)
	if err != nil {
		return 1, err
	}
	caps, err := HostBoundingSet()
	if err != nil {
		return 1, err
	}
	var flags []specs.LinuxSeccompFlag
	if slices.Contains(feat.Flags, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV") {
		// Without it a signal (Go's SIGURG preemption) re-sends a pending
		// notification, so handlers would see the same mount twice.
		flags = append(flags, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")
	}
	rootfs := spec.Root.Path
	if !filepath.IsAbs(rootfs) {
		rootfs = filepath.Join(bundle, rootfs)
	}
	self, err := os.Executable()
	if err != nil {
		return 1, fmt.Errorf("own path for runc's hooks: %w", err)
	}
	systemd, engine := initIsSystemd(spec, rootfs), runsEngine(rootfs)
	engineAA := spec.Process.ApparmorProfile
	aa, err := prepareAppArmor(spec, r.inv.ID, pol)
	if err != nil {
		return 1, err
	}
	var askedOOM *int
	if spec.Process != nil && spec.Process.OOMScoreAdj != nil {
		v := *spec.Process.OOMScoreAdj
		askedOOM = &v
	}
	oomMin := hostOOMScoreAdjMin()
	err = Rewrite(spec, RewriteOptions{
		ContainerID: r.inv.ID, IDBase: l.Start, IDSize: l.Size, HostCaps: caps, Rlimits: hostRlimits(), OOMScoreAdjMin: oomMin,
		Policy: pol.Name, Notify: pol.Notify(), ListenerPath: filepath.Join(r.runDir, control.SeccompSocket),
		SeccompFlags: flags, AllowUnsafe: r.inv.Global.AllowUnsafe, Self: self, Systemd: systemd, Engine: engine,
		AppArmor:   aa,
		Pod:        podOpts,
		LeafInHook: r.inv.Command == "run",
	})
	if err != nil {
		return 1, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if askedOOM != nil && *spec.Process.OOMScoreAdj != *askedOOM {
		r.log.Warnf("container %s: process.oomScoreAdj %d raised to %d: this host does not give the runtime CAP_SYS_RESOURCE, without which no process may go below its own oom_score_adj", r.inv.ID, *askedOOM, *spec.Process.OOMScoreAdj)
	}
	r.phases.mark("rewrite")
	if err := setupMounts(spec, bundle, ContainerDir(r.runDir, r.inv.ID), l.Start, l.Size, engine, r.log); err != nil {
		return 1, err
	}
	if err := ownDevices(spec, ContainerDir(r.runDir, r.inv.ID), l.Start, l.Size); err != nil {
		return 1, err
	}
	if err := recordInit(ContainerDir(r.runDir, r.inv.ID), systemd); err != nil {
		return 1, err
	}
	if err := recordAppArmor(ContainerDir(r.runDir, r.inv.ID), engineAA, spec.Process.ApparmorProfile); err != nil {
		return 1, err
	}
	r.phases.mark("mounts")
	r.engineView()
	r.phases.mark("engine-view")
	// After setupMounts: the view files are bound as they are, not idmapped.
	addViews(spec, resp.Views, resp.ViewFiles, r.log)
	b, err := json.Marshal(spec)
	if err != nil {
		return 1, err
	}
	if err := statefile.Replace(cfgPath, b, mode); err != nil {
		return 1, err
	}
	r.phases.mark("write")
	r.log.Debugf("container %s: IDs %d+%d, policy %s, delegating to %s", r.inv.ID, l.Start, l.Size, pol.Name, r.runc)
	code, err := r.runRunc()
	r.phases.mark("runc")
	if code == 0 && err == nil && r.inv.Command == "create" {
		dropBindSources(ContainerDir(r.runDir, r.inv.ID), r.log)
		if err := r.movePodNetwork(criNet); err != nil {
			return 1, err
		}
		if err := r.awaitReady(); err != nil {
			return 1, err
		}
		r.phases.mark("ready")
	}
	return code, err
}

// engineView asks sysvisord to serve the container's overlay at the
// engine's rootfs path in place of the read-only view setupMounts left
// there. Optional: without it the engine still reads the container (docker
// cp out, diff, export) but cannot write into it while it runs. At delete,
// release puts the engine's overlay back in place of either view.
func (r *runner) engineView() {
	dir := ContainerDir(r.runDir, r.inv.ID)
	em, err := readEngineMount(dir)
	if err != nil {
		r.log.Warnf("container %s: engine view: %v; docker cp into the running container will fail", r.inv.ID, err)
		return
	}
	req, ok := engineViewRequest(r.inv.ID, dir, em)
	if !ok {
		return
	}
	if _, err := control.Call(r.runDir, req, controlTimeout); err != nil {
		r.log.Warnf("container %s: engine view: %v; docker cp into the running container will fail", r.inv.ID, err)
	}
}

// dropEngineView has sysvisord let go of the container's overlay before
// cleanupMounts puts the engine's overlay back on the same upper directory:
// an fd sysvisord still held would keep the old overlay's superblock, and
// the upper directory would be in use twice (overlayfs warns; with index=on
// the mount fails). Only where a view went up; a sysvisord that is down
// holds nothing.
func (r *runner) dropEngineView() {
	em, err := readEngineMount(ContainerDir(r.runDir, r.inv.ID))
	if err != nil || em == nil || !em.ViewUp {
		return
	}
	if _, err := control.Call(r.runDir, control.Request{Op: control.OpEngineViewDrop, ID: r.inv.ID}, controlTimeout); err != nil {
		r.log.Warnf("container %s: engine view: %v", r.inv.ID, err)
	}
}

// phases times the steps of a create, for --debug: where the time goes
// when sysvisor-runc is slower than runc.
type phases struct {
	last  time.Time
	steps []string
}

func newPhases() *phases { return &phases{last: time.Now()} }

func (p *phases) mark(name string) {
	if p == nil {
		return
	}
	now := time.Now()
	p.steps = append(p.steps, fmt.Sprintf("%s %.1fms", name, float64(now.Sub(p.last).Microseconds())/1000))
	p.last = now
}

func (p *phases) String() string { return strings.Join(p.steps, ", ") }

// release undoes what create set up on the host. Safe to repeat.
func (r *runner) release() {
	r.dropEngineView()
	if err := cleanupMounts(ContainerDir(r.runDir, r.inv.ID)); err != nil {
		r.log.Errorf("container %s: clean up mounts: %v", r.inv.ID, err)
	}
	if _, err := control.Call(r.runDir, control.Request{Op: control.OpDelete, ID: r.inv.ID}, controlTimeout); err != nil {
		r.log.Warnf("container %s: release lease: %v (sysvisord reclaims it once runc's state is gone)", r.inv.ID, err)
	}
}

func (r *runner) delete() int {
	code, err := r.runRunc()
	if err != nil {
		r.log.Errorf("%v", err)
	}
	if !r.containerExists() {
		r.release()
	}
	return code
}

// rewriteExecProcess gives an engine's exec process (docker exec) the same
// capabilities the container's init got: the engine computed them for a
// container without a user namespace.
func (r *runner) rewriteExecProcess() error {
	if r.inv.Process == "" {
		return nil
	}
	b, err := os.ReadFile(r.inv.Process)
	if err != nil {
		return fmt.Errorf("read process: %w", err)
	}
	var p specs.Process
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("%s: %w", r.inv.Process, err)
	}
	caps, err := HostBoundingSet()
	if err != nil {
		return err
	}
	rewriteCaps(&p, caps)
	if err := execAppArmor(ContainerDir(r.runDir, r.inv.ID), &p); err != nil {
		return err
	}
	out, err := json.Marshal(&p)
	if err != nil {
		return err
	}
	st, err := os.Stat(r.inv.Process)
	if err != nil {
		return err
	}
	return statefile.Replace(r.inv.Process, out, st.Mode().Perm())
}

func loadSpec(path string) (*specs.Spec, os.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("read bundle config: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	var s specs.Spec
	dec := json.NewDecoder(f)
	if err := dec.Decode(&s); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, 0, fmt.Errorf("%s: malformed JSON at byte %d: %v", path, se.Offset, err)
		case errors.As(err, &te):
			return nil, 0, fmt.Errorf("%s: field %s: %v", path, te.Field, err)
		}
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	return &s, st.Mode().Perm(), nil
}

func processEnv(s *specs.Spec) []string {
	if s.Process == nil {
		return nil
	}
	return s.Process.Env
}

var rlimitNums = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

// hostOOMScoreAdjMin is the lowest oom_score_adj the runtime can give a
// process: nil with CAP_SYS_RESOURCE (any), else its own. The kernel lets
// a process without the capability lower its value only down to the
// lowest a privileged process set for it, which is at most its current
// one: the current value is always allowed.
func hostOOMScoreAdjMin() *int {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) == nil && data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) != 0 {
		return nil
	}
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return nil
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil
	}
	return &v
}

// hostRlimits is the runtime's own hard limits. Go raises its soft NOFILE at
// start, but the hard limit is what the container process can reach.
func hostRlimits() map[string]uint64 {
	out := map[string]uint64{}
	for name, n := range rlimitNums {
		var rl unix.Rlimit
		if unix.Getrlimit(n, &rl) == nil {
			out[name] = rl.Max
		}
	}
	return out
}
