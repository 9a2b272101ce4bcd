package policy

import (
	"fmt"
	"strings"

	"github.com/sysvisor/sysvisor/handlers/catalog"
)

// Explain says in plain words what a container under p can and cannot do.
func Explain(p *Policy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Policy %q (%s, version %d)\n", p.Name, p.Source, p.Version)
	if p.Description != "" {
		fmt.Fprintf(&b, "  %s\n", p.Description)
	}
	var can, cannot []string
	mount, mountTrapped := p.Rule("mount")
	switch {
	case !mountTrapped || mount.Action == Allow || mount.Action == Log:
		can = append(can, "mount tmpfs, overlay, bind mounts and the like, under the kernel's rules for a user-namespaced container (sysvisord does not check them)")
		can = append(can, "mount procfs and sysfs as far as the kernel allows, without the container's masks (sysvisord does not build them)")
		if u, ok := p.Rule("umount2"); !ok || u.Action == Allow || u.Action == Log {
			can = append(can, "unmount the runtime's mounts, including the masks over /proc and /sys, inside its own mount namespace")
		}
	case mount.Action == Deny:
		cannot = append(cannot, fmt.Sprintf("mount anything: every mount(2) fails with %s (tmpfs, bind mounts, remounts, procfs, ...)", mount.Errno))
	default:
		can = append(can, "mount tmpfs, overlay, devpts, mqueue, cgroup and bind mounts (left to the kernel's user-namespace rules)")
		if mount.Options["procfs"] {
			can = append(can, "mount procfs for nested pid namespaces (built by sysvisord with the container's masks)")
		} else {
			can = append(can, "mount procfs as far as the kernel allows, without the container's masks and read-only paths (procfs emulation is off)")
		}
		if mount.Options["sysfs"] {
			can = append(can, "mount sysfs for nested network namespaces (built by sysvisord, masked, read-only if its /sys is)")
		} else {
			can = append(can, "mount sysfs as far as the kernel allows, without the container's masks (sysfs emulation is off)")
		}
		can = append(can, "remount, bind and move its own mounts (performed by sysvisord on the resolved mounts)")
		cannot = append(cannot, "unmount, move, or make writable, suid, dev or exec the mounts the runtime set up (masks, read-only paths, /etc/hosts, volumes)")
	}
	if u, ok := p.Rule("umount2"); ok && u.Action == Deny {
		cannot = append(cannot, fmt.Sprintf("unmount anything: umount2 fails with %s", u.Errno))
	}
	if r, ok := p.Rule("sysinfo"); ok && r.Action == Emulate {
		can = append(can, "see its own uptime, memory and task count in sysinfo(2) (free, uptime), from its cgroups")
	} else if ok && r.Action == Deny {
		cannot = append(cannot, fmt.Sprintf("call sysinfo(2): it fails with %s", r.Errno))
	} else {
		cannot = append(cannot, "see its own figures in sysinfo(2): it gets the host's uptime and memory")
	}
	if p.Views {
		can = append(can, "read its own /proc/{uptime,meminfo,cpuinfo,stat,loadavg} and /sys/devices/system/cpu/online (sysvisord's views, when sysvisord serves views)")
	} else {
		cannot = append(cannot, "see its own figures in /proc/meminfo, /proc/uptime and the other view files: it reads the host's (views = false)")
	}
	if l := p.Limits; l != nil {
		what := fmt.Sprintf("make more than %d trapped calls a second (bursts of %d) per process tree (init's, and each exec's): ", l.Rate, l.Burst)
		if l.Action == LimitEAGAIN {
			cannot = append(cannot, what+"the excess fails with EAGAIN, without reaching a handler")
		} else {
			can = append(can, what+"sysvisord only logs the excess (limits action \"log\")")
		}
	}
	aa := p.AppArmor
	if aa == "" {
		aa = "sysvisor-default"
	}
	fmt.Fprintf(&b, "  AppArmor (hosts that enforce it): %s in place of the engine's default profile; a profile the user names is kept\n", aa)
	b.WriteString("\nA container under this policy can:\n")
	for _, s := range can {
		fmt.Fprintf(&b, "  - %s\n", s)
	}
	b.WriteString("\nIt cannot:\n")
	for _, s := range cannot {
		fmt.Fprintf(&b, "  - %s\n", s)
	}
	b.WriteString("\nSyscall by syscall:\n")
	for _, s := range catalog.Syscalls {
		r, ok := p.Rule(s.Name)
		var what string
		switch {
		case !ok:
			what = "not trapped: the kernel decides, as for any user-namespaced container"
		case r.Action == Emulate:
			what = "emulated by sysvisord: " + s.Doc
			for _, o := range s.Options {
				state := "off"
				if r.Options[o.Name] {
					state = "on"
				}
				what += fmt.Sprintf("; %s %s", o.Name, state)
			}
		case r.Action == Allow:
			what = "trapped, then passed to the kernel unchanged"
		case r.Action == Log:
			what = "trapped, logged by sysvisord at info level, then passed to the kernel"
		case r.Action == Deny:
			what = "fails with " + r.Errno
		}
		fmt.Fprintf(&b, "  %-14s %s\n", s.Name, what)
	}
	return b.String()
}
