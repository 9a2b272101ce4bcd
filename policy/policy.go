// Package policy names what the supervisor does for a workload. This is the
// built-in minimum the foundation needs; policy files extend it.
package policy

import (
	"fmt"
	"sort"
	"strings"
)

// Policy is one workload's interception choice.
type Policy struct {
	Name string
	// Notify lists the syscalls trapped to sysvisord.
	Notify []string
}

// Selection sources, first match wins.
const (
	AnnotationKey = "io.sysvisor.policy"
	EnvKey        = "SYSVISOR_POLICY"
	DefaultName   = "default"
)

var builtin = map[string]Policy{
	DefaultName: {Name: DefaultName, Notify: []string{"sysinfo", "mount", "umount2", "fsopen", "fspick", "open_tree", "move_mount", "mount_setattr"}},
}

// Lookup returns the named built-in policy.
func Lookup(name string) (Policy, error) {
	p, ok := builtin[name]
	if !ok {
		names := make([]string, 0, len(builtin))
		for n := range builtin {
			names = append(names, n)
		}
		sort.Strings(names)
		return Policy{}, fmt.Errorf("unknown policy %q (known: %s)", name, strings.Join(names, ", "))
	}
	return p, nil
}

// Select picks the policy name for a container: annotation, then the
// container's environment, then the runtime's --policy argument, then default.
// It returns the name and where it came from.
func Select(annotations map[string]string, env []string, runtimeArg string) (name, source string) {
	if v := annotations[AnnotationKey]; v != "" {
		return v, "annotation " + AnnotationKey
	}
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, EnvKey+"="); ok && v != "" {
			return v, "env " + EnvKey
		}
	}
	if runtimeArg != "" {
		return runtimeArg, "runtime argument --policy"
	}
	return DefaultName, "default"
}
