package viewfs

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/supervisor/cgroup"
	"github.com/sysvisor/sysvisor/supervisor/procview"
)

type fakeContainer struct {
	start   time.Duration
	paths   cgroup.Paths
	sysctls *fakeSysctls
}

type fakeSysctls struct {
	mu sync.Mutex
	m  map[string]string
}

func (f fakeContainer) Sysctl(name string) (string, bool) {
	if f.sysctls == nil {
		return "", false
	}
	f.sysctls.mu.Lock()
	defer f.sysctls.mu.Unlock()
	v, ok := f.sysctls.m[name]
	return v, ok
}

func (f fakeContainer) SetSysctl(name, value string) error {
	if f.sysctls == nil {
		return errors.New("no store")
	}
	f.sysctls.mu.Lock()
	defer f.sysctls.mu.Unlock()
	f.sysctls.m[name] = value
	return nil
}

func (f fakeContainer) RootIDs() (uint32, uint32) { return 100000, 100000 }

func (f fakeContainer) InitPid() int { return os.Getpid() }

func (f fakeContainer) ID() string { return "fake" }

func (f fakeContainer) InitStart() time.Duration   { return f.start }
func (f fakeContainer) Cgroups() cgroup.Paths      { return f.paths }
func (f fakeContainer) CgroupFiles() cgroup.Source { return &fakeFiles }
func (f fakeContainer) Load() procview.Load {
	return procview.Load{Avg: [3]uint64{1024, 512, 0}, Running: 1, Total: 4, LastPid: 9}
}

// fakeFiles keeps the fixtures open, as a registered container's files are.
var fakeFiles cgroup.Files

func needFUSE(t *testing.T) {
	t.Helper()
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

func mountedAt(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

func TestMountReadUnmount(t *testing.T) {
	needFUSE(t)
	now, _ := handlers.BootTime()
	fixture, _ := filepath.Abs("../procview/testdata/v1")
	c := fakeContainer{start: now - 3*time.Second, paths: cgroup.Paths{
		"memory": fixture + "/memory", "cpuset": fixture + "/cpuset", "cpu": fixture + "/cpu", "cpuacct": fixture + "/cpuacct"}}
	runDir := t.TempDir()
	before := runtime.NumGoroutine()
	m, err := NewManager(runDir, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	dir, err := m.Mount("c1", c)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := m.Mount("c1", c); err != nil || again != dir {
		t.Fatalf("second Mount: %q %v", again, err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if mi := read("proc/meminfo"); !strings.HasPrefix(mi, "MemTotal:         524288 kB\n") {
		t.Errorf("meminfo: %.60q", mi)
	}
	if up := read("proc/uptime"); !strings.HasPrefix(up, "3.") {
		t.Errorf("uptime %q", up)
	}
	if la := read("proc/loadavg"); la != "0.50 0.25 0.00 1/4 9\n" {
		t.Errorf("loadavg %q", la)
	}
	if on := read("sys/devices/system/cpu/online"); on != "0\n" {
		t.Errorf("online %q", on)
	}
	// Served whether or not the host has DMI: sysvisord makes it a place
	// in the container's sysfs where the kernel has none.
	if u := read(productUUID); u != string(procview.ProductUUID("fake")) {
		t.Errorf("product_uuid %q", u)
	}
	if st, err := os.Stat(filepath.Join(dir, productUUID)); err != nil || st.Mode() != 0o400 {
		t.Errorf("product_uuid mode %v, %v; want 0400", st.Mode(), err)
	}
	n := 0
	for _, l := range strings.Split(read("proc/cpuinfo"), "\n") {
		if strings.HasPrefix(l, "processor") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("cpuinfo shows %d processors", n)
	}
	if st := read("proc/stat"); !strings.HasPrefix(st, "cpu  ") || strings.Contains(st, "\ncpu1 ") {
		t.Errorf("stat %.80q", st)
	}
	// Partial reads come from the snapshot taken at open.
	f, err := os.Open(filepath.Join(dir, "proc/cpuinfo"))
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	buf := make([]byte, 7)
	for {
		n, err := f.Read(buf)
		got = append(got, buf[:n]...)
		if n == 0 || err != nil {
			break
		}
	}
	f.Close()
	if string(got) != read("proc/cpuinfo") {
		t.Errorf("7-byte reads differ from a whole read")
	}
	// sendfile (busybox cat) goes through the page cache and i_size.
	for _, name := range []string{"proc/cpuinfo", "sys/devices/system/cpu/online"} {
		src, err := unix.Open(filepath.Join(dir, name), unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		for {
			n, err := unix.Sendfile(int(dst.Fd()), src, nil, 1<<20)
			if n <= 0 || err != nil {
				break
			}
		}
		unix.Close(src)
		got, _ := os.ReadFile(dst.Name())
		dst.Close()
		if want := read(name); string(got) != want {
			t.Errorf("sendfile of %s: %q, want %q", name, got, want)
		}
	}
	if _, err := os.OpenFile(filepath.Join(dir, "proc/meminfo"), os.O_WRONLY, 0); err == nil {
		t.Errorf("views opened for writing")
	}

	// A copy of the mount elsewhere (as a running container's bind mount
	// would be) must not keep the server alive.
	copyAt := filepath.Join(t.TempDir(), "meminfo")
	os.WriteFile(copyAt, nil, 0o644)
	if err := unix.Mount(filepath.Join(dir, "proc/meminfo"), copyAt, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(copyAt, unix.MNT_DETACH)
	m.Unmount("c1")
	if mountedAt(dir) {
		t.Errorf("%s still mounted", dir)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("mount point left: %v", err)
	}
	if _, err := os.ReadFile(copyAt); err == nil {
		t.Errorf("copy still served after teardown")
	}
	unix.Unmount(copyAt, unix.MNT_DETACH)
	m.Close()
	if _, err := m.Mount("c2", c); err == nil {
		t.Errorf("Mount after Close succeeded")
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

func TestCloseUnmountsAll(t *testing.T) {
	needFUSE(t)
	runDir := t.TempDir()
	m, err := NewManager(runDir, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, id := range []string{"a", "b"} {
		d, err := m.Mount(id, nil)
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	// Without a registered init the views are the host's files.
	b, err := os.ReadFile(filepath.Join(dirs[0], "sys/devices/system/cpu/online"))
	host, _ := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil || string(b) != string(host) {
		t.Errorf("unregistered container's online = %q %v, want host's %q", b, err, host)
	}
	m.Close()
	for _, d := range dirs {
		if mountedAt(d) {
			t.Errorf("%s still mounted after Close", d)
		}
	}
}

// An open view read again from offset 0 is rendered again, as seq_file
// does (procps keeps /proc/meminfo open and seeks back); and with the
// kernel caching attributes, a splice read of content that grew since the
// previous splice read is still whole.
func TestRereadAndSplice(t *testing.T) {
	needFUSE(t)
	c := fakeContainer{sysctls: &fakeSysctls{m: map[string]string{}}}
	m, err := NewManager(t.TempDir(), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dir, err := m.Mount("c", c)
	if err != nil {
		t.Fatal(err)
	}
	panicView := filepath.Join(dir, SysctlDir, "kernel/panic")
	if _, err := os.Stat(panicView); err != nil {
		t.Skip("host has no kernel.panic")
	}
	c.SetSysctl("kernel/panic", "1")
	f, err := os.Open(panicView)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64)
	n, _ := f.ReadAt(buf, 0)
	if got := string(buf[:n]); got != "1\n" {
		t.Fatalf("first read %q", got)
	}
	c.SetSysctl("kernel/panic", "42")
	n, _ = f.ReadAt(buf, 0)
	if got := string(buf[:n]); got != "42\n" {
		t.Errorf("read again at 0: %q, want the new value", got)
	}
	// A later offset continues the rendering of the read at 0.
	c.SetSysctl("kernel/panic", "7")
	if n, _ = f.ReadAt(buf, 1); string(buf[:n]) != "2\n" {
		t.Errorf("read at 1: %q, want the rest of \"42\\n\"", buf[:n])
	}

	sendfile := func() string {
		src, err := unix.Open(panicView, unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(src)
		dst, err := os.Create(filepath.Join(t.TempDir(), "out"))
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		for {
			n, err := unix.Sendfile(int(dst.Fd()), src, nil, 1<<20)
			if n <= 0 || err != nil {
				break
			}
		}
		b, _ := os.ReadFile(dst.Name())
		return string(b)
	}
	for _, v := range []string{"1", "123456789", "3", "2147483647", "5"} {
		c.SetSysctl("kernel/panic", v)
		if got := sendfile(); got != v+"\n" {
			t.Errorf("sendfile after setting %s: %q", v, got)
		}
	}
}

func BenchmarkOpenReadClose(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	now, _ := handlers.BootTime()
	fixture, _ := filepath.Abs("../procview/testdata/v1")
	c := fakeContainer{start: now - 3*time.Second, paths: cgroup.Paths{
		"memory": fixture + "/memory", "cpuset": fixture + "/cpuset", "cpu": fixture + "/cpu", "cpuacct": fixture + "/cpuacct"}}
	m, err := NewManager(b.TempDir(), hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	dir, err := m.Mount("c", c)
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"proc/uptime", "proc/meminfo"} {
		b.Run(name, func(b *testing.B) {
			p := filepath.Join(dir, name)
			buf := make([]byte, 1<<16)
			for i := 0; i < b.N; i++ {
				fd, err := unix.Open(p, unix.O_RDONLY, 0)
				if err != nil {
					b.Fatal(err)
				}
				for {
					n, err := unix.Read(fd, buf)
					if n <= 0 || err != nil {
						break
					}
				}
				unix.Close(fd)
			}
		})
	}
}

func BenchmarkRender(b *testing.B) {
	now, _ := handlers.BootTime()
	fixture, _ := filepath.Abs("../procview/testdata/v1")
	c := fakeContainer{start: now - 3*time.Second, paths: cgroup.Paths{
		"memory": fixture + "/memory", "cpuset": fixture + "/cpuset", "cpu": fixture + "/cpu", "cpuacct": fixture + "/cpuacct"}}
	for _, name := range Files {
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := Render(c, name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
