package notifyloop

import (
	"bytes"
	"runtime"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/linux/notify"
	"github.com/sysvisor/sysvisor/policy"
)

func TestNewActions(t *testing.T) {
	tab, err := handlers.NewTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range policy.BuiltinNames() {
		p, err := policy.Load(n, "")
		if err != nil {
			t.Fatal(err)
		}
		acts, err := NewActions(tab, p.Rules)
		if err != nil {
			t.Errorf("policy %s: %v", n, err)
		}
		if len(acts) != len(p.Rules) {
			t.Errorf("policy %s: %d actions for %d rules", n, len(acts), len(p.Rules))
		}
	}
	for _, tc := range []struct {
		rules []policy.Rule
		want  string
	}{
		{[]policy.Rule{{Syscall: "chown", Action: policy.Allow}}, `"chown" is not one`},
		{[]policy.Rule{{Syscall: "sysinfo", Action: "maybe"}}, `unknown action "maybe"`},
		{[]policy.Rule{{Syscall: "sysinfo", Action: policy.Deny, Errno: "EWHAT"}}, `unknown errno "EWHAT"`},
		{[]policy.Rule{{Syscall: "sysinfo", Action: policy.Deny}}, `unknown errno ""`},
		{[]policy.Rule{{Syscall: "sysinfo", Action: policy.Emulate, Options: map[string]bool{"procfs": true}}}, `unknown option "procfs"`},
		{[]policy.Rule{{Syscall: "sysinfo", Action: policy.Allow}, {Syscall: "sysinfo", Action: policy.Log}}, "two rules"},
	} {
		if _, err := NewActions(tab, tc.rules); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewActions(%+v) = %v, want %q", tc.rules, err, tc.want)
		}
	}
}

// Deny, allow and log are answered from the container's table without a
// handler; a syscall without a rule gets ENOSYS.
func TestDispatchActions(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("amd64 numbers")
	}
	tab, err := handlers.NewTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	acts, err := NewActions(tab, []policy.Rule{
		{Syscall: "mount", Action: policy.Deny, Errno: "EACCES"},
		{Syscall: "umount2", Action: policy.Allow},
		{Syscall: "sysinfo", Action: policy.Log},
	})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})
	call := func(nr int32) handlers.Response {
		n := notify.Notif{Pid: 42, Data: notify.Data{Nr: nr, Arch: unix.AUDIT_ARCH_X86_64}}
		return dispatch(nil, nil, &n, acts, log)
	}
	if r := call(unix.SYS_MOUNT); r.Kind != handlers.Errno || r.Errno != unix.EACCES {
		t.Errorf("mount: %v", r)
	}
	if r := call(unix.SYS_UMOUNT2); r.Kind != handlers.Continue {
		t.Errorf("umount2: %v", r)
	}
	if strings.Contains(buf.String(), "syscall=") {
		t.Errorf("allow logged: %s", buf.String())
	}
	if r := call(unix.SYS_SYSINFO); r.Kind != handlers.Continue {
		t.Errorf("sysinfo: %v", r)
	}
	if !strings.Contains(buf.String(), "syscall=sysinfo") || !strings.Contains(buf.String(), "caller=42") {
		t.Errorf("log action did not log: %q", buf.String())
	}
	if r := call(unix.SYS_FSOPEN); r.Kind != handlers.Errno || r.Errno != unix.ENOSYS {
		t.Errorf("fsopen without rule: %v", r)
	}
	n := notify.Notif{Data: notify.Data{Nr: unix.SYS_MOUNT, Arch: unix.AUDIT_ARCH_I386}}
	if r := dispatch(nil, nil, &n, acts, log); r.Errno != unix.ENOSYS {
		t.Errorf("compat arch: %v", r)
	}
}
