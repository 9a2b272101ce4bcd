// Package kernel knows which of the kernel interfaces sysvisor uses the
// running kernel has. Every interface newer than the supported floor (Floor)
// is a Feature: probed once on the real kernel, with a fallback that keeps
// the same security properties. A fallback can be forced on any kernel
// (SYSVISOR_KERNEL_FALLBACKS, or the binaries' --kernel-fallbacks flag), so
// the paths of kernels the tests cannot boot are still exercised on the
// newest one.
//
// The package is a leaf: it imports nothing of sysvisor's, and the runtime,
// the supervisor, the handlers and the doctor all ask it the same questions.
package kernel

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
)

// Feature is one kernel interface newer than the floor.
type Feature struct {
	// Name is how the switch and the doctor name it.
	Name string
	// Since is the first mainline release that has it.
	Since Version
	// What it is, and what sysvisor does without it.
	What, Fallback string

	probe  func() error
	once   sync.Once
	err    error
	forced bool
}

// The features, newest first. Their probes act on the real kernel and leave
// nothing behind.
var (
	// ProcfsPidNS: procfs's pidns= mount option, which mounts a procfs for
	// another pid namespace than the mounter's.
	ProcfsPidNS = &Feature{
		Name: "procfs-pidns", Since: Version{6, 18},
		What:     "procfs pidns= option (a procfs for another pid namespace)",
		Fallback: "a helper process born in the caller's pid namespace creates the procfs",
		probe:    probeProcfsPidNS,
	}
	// DetachedMounts: mounts attached inside a detached tree (move_mount
	// onto it, open_tree clones from it), which lets a procfs or sysfs be
	// masked before anyone can see it.
	DetachedMounts = &Feature{
		Name: "detached-mounts", Since: Version{6, 15},
		What:     "move_mount and open_tree inside a detached mount tree",
		Fallback: "the tree is built in a private staging mount namespace of sysvisord's, then cloned detached",
		probe:    probeDetachedMounts,
	}
	// ProcmapQuery: the PROCMAP_QUERY ioctl on /proc/<pid>/maps, one
	// mapping's permissions without rendering the whole listing.
	ProcmapQuery = &Feature{
		Name: "procmap-query", Since: Version{6, 11},
		What:     "PROCMAP_QUERY on /proc/<pid>/maps",
		Fallback: "the caller's memory permissions are read from its /proc/<pid>/maps listing",
		probe:    probeProcmapQuery,
	}
	// PidMaxPerPidNS: kernel.pid_max kept per pid namespace.
	PidMaxPerPidNS = &Feature{
		Name: "pidns-pid-max", Since: Version{6, 14},
		What:     "kernel.pid_max per pid namespace",
		Fallback: "kernel.pid_max is a per-container view like the other global sysctls",
		probe:    probePidMaxPerPidNS,
	}
	// Statmount: statmount(2), listmount(2) and STATX_MNT_ID_UNIQUE.
	Statmount = &Feature{
		Name: "statmount", Since: Version{6, 8},
		What:     "statmount, listmount and unique mount ids",
		Fallback: "the mount emulation reads the thread's mountinfo",
		probe:    probeStatmount,
	}
	// OverlayLowerdirAppend: overlayfs's lowerdir+ option (one layer per
	// fsconfig call).
	OverlayLowerdirAppend = &Feature{
		Name: "overlay-lowerdir-append", Since: Version{6, 8},
		What:     "overlayfs lowerdir+ (one layer per option)",
		Fallback: "one colon-separated lowerdir of short layer paths",
		probe:    probeOverlayLowerdirAppend,
	}
	// NotifySyncWakeUp: SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP on a listener.
	NotifySyncWakeUp = &Feature{
		Name: "notify-sync-wakeup", Since: Version{6, 6},
		What:     "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP",
		Fallback: "the default wake-up (a cross-CPU wake-up per trapped syscall: slower, same answers)",
		probe:    probeSyncWakeUp,
	}
)

// Features lists every feature, newest first.
func Features() []*Feature {
	return []*Feature{ProcfsPidNS, DetachedMounts, PidMaxPerPidNS, ProcmapQuery, Statmount, OverlayLowerdirAppend, NotifySyncWakeUp}
}

// Has reports whether the feature is there and not forced off. The probe
// runs once per process.
func (f *Feature) Has() bool { return f.Probe() == nil && !f.Forced() }

// Probe returns what the kernel answered the probe: nil when the feature
// is there, whether or not it is forced off.
func (f *Feature) Probe() error {
	f.once.Do(func() { f.err = f.probe() })
	return f.err
}

// Forced reports whether the fallback is forced.
func (f *Feature) Forced() bool {
	forceMu.Lock()
	defer forceMu.Unlock()
	loadEnvLocked()
	return f.forced
}

// State is the one-line account of a feature, as doctor and logs show it.
func (f *Feature) State() string {
	switch err := f.Probe(); {
	case err != nil:
		return fmt.Sprintf("missing (%v): %s", err, f.Fallback)
	case f.Forced():
		return "present, fallback forced: " + f.Fallback
	}
	return "present"
}

// EnvFallbacks names the environment variable that forces fallbacks: "all"
// or a comma-separated list of feature names. Engines pass their
// environment to the runtime they start, so one variable reaches
// sysvisor-runc and sysvisord alike in tests.
const EnvFallbacks = "SYSVISOR_KERNEL_FALLBACKS"

var (
	forceMu   sync.Mutex
	envLoaded bool
	envErr    error
)

func loadEnvLocked() {
	if envLoaded {
		return
	}
	envLoaded = true
	if v := os.Getenv(EnvFallbacks); v != "" {
		envErr = forceLocked(v)
		if envErr != nil {
			envErr = fmt.Errorf("%s: %w", EnvFallbacks, envErr)
		}
	}
}

// EnvError is the error of a malformed SYSVISOR_KERNEL_FALLBACKS, for the
// binaries to report at start.
func EnvError() error {
	forceMu.Lock()
	defer forceMu.Unlock()
	loadEnvLocked()
	return envErr
}

// Force forces the fallbacks of list ("all", or names separated by commas)
// in addition to those the environment forced. An unknown name is an error
// and forces nothing.
func Force(list string) error {
	forceMu.Lock()
	defer forceMu.Unlock()
	loadEnvLocked()
	return forceLocked(list)
}

func forceLocked(list string) error {
	var pick []*Feature
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
		case n == "all":
			pick = append(pick, Features()...)
		default:
			i := slices.IndexFunc(Features(), func(f *Feature) bool { return f.Name == n })
			if i < 0 {
				return fmt.Errorf("unknown kernel feature %q (known: all, %s)", n, strings.Join(Names(), ", "))
			}
			pick = append(pick, Features()[i])
		}
	}
	for _, f := range pick {
		f.forced = true
	}
	return nil
}

// Forced lists the names of the features whose fallbacks are forced, to
// pass the same switch on to another binary.
func Forced() []string {
	var out []string
	for _, f := range Features() {
		if f.Forced() {
			out = append(out, f.Name)
		}
	}
	return out
}

// Names lists every feature's name.
func Names() []string {
	var out []string
	for _, f := range Features() {
		out = append(out, f.Name)
	}
	return out
}

// ErrMissing is wrapped by a probe's error when the kernel lacks the
// feature, as opposed to a probe that could not run (no privilege, ...).
var ErrMissing = errors.New("not in this kernel")
