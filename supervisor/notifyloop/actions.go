package notifyloop

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/linux/notify"
	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor/stats"
)

// action is what sysvisord answers one trapped syscall of one container.
type action struct {
	kind    policy.Action
	errno   unix.Errno
	entry   *handlers.Entry
	options map[string]bool
	key     stats.Key // its statistics series
}

// Actions maps a native syscall number to the container's action. Built
// once per listener at registration and only read afterwards, so the notify
// loop takes no lock for it.
type Actions map[int32]*action

// rule returns the action for n, nil for a compat-ABI caller or a syscall
// without a rule (dispatch answers those ENOSYS).
func (acts Actions) rule(n *notify.Notif) *action {
	if !handlers.IsNative(n.Data.Arch) {
		return nil
	}
	return acts[n.Data.Nr]
}

// NewActions resolves a policy's rules against the handler table.
func NewActions(t *handlers.Table, rules []policy.Rule) (Actions, error) {
	out := Actions{}
	for _, r := range rules {
		nr, ok := t.Nr(r.Syscall)
		if !ok {
			return nil, fmt.Errorf("syscall %q is not one sysvisord can intercept", r.Syscall)
		}
		e, _ := t.Lookup(nr)
		if _, dup := out[nr]; dup {
			return nil, fmt.Errorf("syscall %q has two rules", r.Syscall)
		}
		a := &action{kind: r.Action, entry: e, options: r.Options, key: stats.KeyOf(r.Syscall, string(r.Action))}
		switch r.Action {
		case policy.Emulate, policy.Allow, policy.Log:
		case policy.Deny:
			errno, ok := policy.Errno(r.Errno)
			if !ok {
				return nil, fmt.Errorf("syscall %q: unknown errno %q", r.Syscall, r.Errno)
			}
			a.errno = errno
		default:
			return nil, fmt.Errorf("syscall %q: unknown action %q", r.Syscall, r.Action)
		}
		for name := range r.Options {
			if _, ok := e.Option(name); !ok {
				return nil, fmt.Errorf("syscall %q: unknown option %q", r.Syscall, name)
			}
		}
		out[nr] = a
	}
	return out, nil
}
