package supervisor

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sysvisor/sysvisor/supervisor/control"
	"github.com/sysvisor/sysvisor/supervisor/viewfs"
)

func mountedAt(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// Views are served by create, gone after delete and after shutdown, and
// leave no goroutine behind.
func TestViewsLifecycle(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	before := runtime.NumGoroutine()
	e := newEnv(t)
	s := e.start(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(filepath.Join(e.cfg.RunDir, control.ControlSocket)); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	call := func(op, id string) *control.Response {
		t.Helper()
		r, err := control.Call(e.cfg.RunDir, control.Request{Op: op, ID: id, RuncRoot: e.runcRoot, Policy: "default"}, 5*time.Second)
		if err != nil {
			t.Fatalf("%s %s: %v", op, id, err)
		}
		return r
	}
	views := filepath.Join(e.cfg.RunDir, "views")
	r := call(control.OpCreate, "c1")
	if r.Views != viewfs.Dir(e.cfg.RunDir, "c1") || !slices.Equal(r.ViewFiles, viewfs.AvailableFiles()) || !mountedAt(views) {
		t.Fatalf("create: views %q %v, mounted %v", r.Views, r.ViewFiles, mountedAt(views))
	}
	c1, ok := s.reg.Get("c1")
	if !ok || c1.Views() != r.Views || c1.Snapshot().ViewSlot == 0 {
		t.Errorf("record does not name the views and their slot")
	}
	// Not registered yet: the host's file.
	got, err := os.ReadFile(filepath.Join(r.Views, "sys/devices/system/cpu/online"))
	want, _ := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil || string(got) != string(want) {
		t.Errorf("online before registration: %q %v, want %q", got, err, want)
	}
	call(control.OpDelete, "c1")
	if _, err := os.Stat(r.Views); !os.IsNotExist(err) {
		t.Errorf("views still served after delete: %v", err)
	}
	r2 := call(control.OpCreate, "c2")
	if _, err := os.Stat(filepath.Join(r2.Views, "proc/meminfo")); err != nil {
		t.Fatalf("c2 views not served: %v", err)
	}
	if c2, _ := s.reg.Get("c2"); c2 == nil || c2.Snapshot().ViewSlot <= c1.Snapshot().ViewSlot {
		t.Errorf("c2's slot does not follow c1's")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	if mountedAt(views) {
		t.Errorf("views still mounted after shutdown")
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d before, %d after shutdown\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}
