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

// Views are mounted by create, gone after delete and after shutdown, and
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
	r := call(control.OpCreate, "c1")
	if r.Views != viewfs.Dir(e.cfg.RunDir, "c1") || !slices.Equal(r.ViewFiles, viewfs.AvailableFiles()) || !mountedAt(r.Views) {
		t.Fatalf("create: views %q %v, mounted %v", r.Views, r.ViewFiles, mountedAt(r.Views))
	}
	if c, ok := s.reg.Get("c1"); !ok || c.Views() != r.Views {
		t.Errorf("record does not name the views")
	}
	// Not registered yet: the host's file.
	got, err := os.ReadFile(filepath.Join(r.Views, "sys/devices/system/cpu/online"))
	want, _ := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil || string(got) != string(want) {
		t.Errorf("online before registration: %q %v, want %q", got, err, want)
	}
	call(control.OpDelete, "c1")
	if mountedAt(r.Views) {
		t.Errorf("views still mounted after delete")
	}
	r2 := call(control.OpCreate, "c2")
	if !mountedAt(r2.Views) {
		t.Fatalf("c2 views not mounted")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	if mountedAt(r2.Views) {
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
