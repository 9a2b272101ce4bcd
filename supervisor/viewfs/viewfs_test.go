package viewfs

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/linux/cgroup"
	"github.com/sysvisor/sysvisor/supervisor/procview"
)

type fakeContainer struct {
	id      string // "fake" if empty
	base    uint32 // host ID range start; 100000 if 0
	start   time.Duration
	paths   cgroup.Paths
	sysctls *fakeSysctls
	lastPid *atomic.Uint32 // loadavg's last pid, 9 if nil
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

func (f fakeContainer) IDs() (uint32, uint32) {
	if f.base == 0 {
		return 100000, 65536
	}
	return f.base, 65536
}

func (f fakeContainer) RootIDs() (uint32, uint32) { b, _ := f.IDs(); return b, b }

func (f fakeContainer) InitPid() int { return os.Getpid() }

func (f fakeContainer) ID() string {
	if f.id == "" {
		return "fake"
	}
	return f.id
}

func (f fakeContainer) InitStart() time.Duration   { return f.start }
func (f fakeContainer) Cgroups() cgroup.Paths      { return f.paths }
func (f fakeContainer) CgroupFiles() cgroup.Source { return &fakeFiles }
func (f fakeContainer) Load() procview.Load {
	last := uint32(9)
	if f.lastPid != nil {
		last = f.lastPid.Load()
	}
	return procview.Load{Avg: [3]uint64{1024, 512, 0}, Running: 1, Total: 4, LastPid: int(last)}
}

// fakeFiles keeps the fixtures open, as a registered container's files are.
var fakeFiles cgroup.Files

func needFUSE(t testing.TB) {
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

// fixtureContainer is a registered container limited by the v1 fixtures:
// 512 MiB, one CPU, started 3 s ago.
func fixtureContainer(t testing.TB) fakeContainer {
	now, _ := handlers.BootTime()
	fixture, err := filepath.Abs("../procview/testdata/v1")
	if err != nil {
		t.Fatal(err)
	}
	return fakeContainer{start: now - 3*time.Second, paths: cgroup.Paths{
		"memory": fixture + "/memory", "cpuset": fixture + "/cpuset", "cpu": fixture + "/cpu", "cpuacct": fixture + "/cpuacct"}}
}

// runDir is a run directory searchable by other users (0711 up to it, as a
// real one is), so tests can act as container users.
func runDir(t testing.TB) string {
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func start(t testing.TB, dir string) *Server {
	t.Helper()
	s, err := Start(dir, Held{Fuse: -1, Journal: -1}, nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Unmount)
	return s
}

func add(t testing.TB, s *Server, id string, slot uint64, c Container) string {
	t.Helper()
	dir, err := s.Add(id, slot, c)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func readFile(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sendfile(t testing.TB, p string) string {
	t.Helper()
	src, err := unix.Open(p, unix.O_RDONLY, 0)
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

// waitGoroutines waits for the goroutine count to fall back to before.
func waitGoroutines(t testing.TB, before int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("goroutines: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

func TestMountReadUnmount(t *testing.T) {
	needFUSE(t)
	c := fixtureContainer(t)
	rd := runDir(t)
	before := runtime.NumGoroutine()
	s, err := Start(rd, Held{Fuse: -1, Journal: -1}, nil, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if !mountedAt(filepath.Join(rd, "views")) {
		t.Fatalf("views not mounted")
	}
	dir := add(t, s, "c1", 1, c)
	if dir != Dir(rd, "c1") {
		t.Errorf("Add: %s, want %s", dir, Dir(rd, "c1"))
	}
	if again, err := s.Add("c1", 1, c); err != nil || again != dir {
		t.Fatalf("second Add: %q %v", again, err)
	}
	if _, err := s.Add("c1", 2, c); err == nil {
		t.Errorf("Add of c1 in another slot succeeded")
	}
	if _, err := s.Add("c2", 1, c); err == nil {
		t.Errorf("Add of c2 in c1's slot succeeded")
	}
	read := func(name string) string { return readFile(t, filepath.Join(dir, name)) }
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
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "proc/meminfo"), &st); err != nil || st.Uid != 100000 || st.Gid != 100000 || st.Mode != unix.S_IFREG|0o444 {
		t.Errorf("meminfo: uid %d gid %d mode %#o (%v), want the container's root and 0444", st.Uid, st.Gid, st.Mode, err)
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
		if got, want := sendfile(t, filepath.Join(dir, name)), read(name); got != want {
			t.Errorf("sendfile of %s: %q, want %q", name, got, want)
		}
	}
	if _, err := os.OpenFile(filepath.Join(dir, "proc/meminfo"), os.O_WRONLY, 0); err == nil {
		t.Errorf("views opened for writing")
	}
	ents, err := os.ReadDir(filepath.Join(dir, "proc"))
	if err != nil || len(ents) < 7 {
		t.Errorf("readdir proc: %v %v", ents, err)
	}

	// A copy of the mount elsewhere (as a running container's bind mount
	// would be) must not keep the server alive.
	copyAt := filepath.Join(t.TempDir(), "meminfo")
	os.WriteFile(copyAt, nil, 0o644)
	if err := unix.Mount(filepath.Join(dir, "proc/meminfo"), copyAt, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(copyAt, unix.MNT_DETACH)
	s.Unmount()
	if mountedAt(filepath.Join(rd, "views")) {
		t.Errorf("views still mounted")
	}
	if _, err := os.ReadFile(copyAt); err == nil {
		t.Errorf("copy still served after teardown")
	}
	unix.Unmount(copyAt, unix.MNT_DETACH)
	if _, err := s.Add("c2", 2, c); err == nil {
		t.Errorf("Add after Unmount succeeded")
	}
	waitGoroutines(t, before)
}

// A container whose init has not registered sees the host's files.
func TestUnregisteredGetsHostFiles(t *testing.T) {
	needFUSE(t)
	s := start(t, runDir(t))
	dir := add(t, s, "a", 1, fakeContainer{})
	host, _ := os.ReadFile("/sys/devices/system/cpu/online")
	if got := readFile(t, filepath.Join(dir, "sys/devices/system/cpu/online")); got != string(host) {
		t.Errorf("unregistered container's online = %q, want host's %q", got, host)
	}
}

// Stale mounts of an earlier sysvisord, one per container under the views
// directory as before the one mount, are removed by a fresh Start.
func TestStartRemovesStaleMounts(t *testing.T) {
	needFUSE(t)
	rd := runDir(t)
	old := filepath.Join(rd, "views", "old")
	if err := os.MkdirAll(old, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", old, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(old, unix.MNT_DETACH)
	s1 := start(t, rd)
	s1.Stop() // leaves the mount, as a crash would
	s2 := start(t, rd)
	if mountedAt(old) {
		t.Errorf("stale per-container mount left")
	}
	n := 0
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == filepath.Join(rd, "views") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d mounts at the views directory, want 1", n)
	}
	add(t, s2, "a", 1, fixtureContainer(t))
	readFile(t, filepath.Join(rd, "views/a/proc/meminfo"))
}

// Two containers on one mount: each sees its own rendering, and node ids
// (shown as inode numbers) are slot<<16 | entry.
func TestTwoContainers(t *testing.T) {
	needFUSE(t)
	s := start(t, runDir(t))
	a, b := fixtureContainer(t), fixtureContainer(t)
	a.id, b.id = "a", "b"
	b.base = 200000
	pa, pb := new(atomic.Uint32), new(atomic.Uint32)
	pa.Store(11)
	pb.Store(22)
	a.lastPid, b.lastPid = pa, pb
	da, db := add(t, s, "a", 3, a), add(t, s, "b", 1<<39, b)
	if got := readFile(t, filepath.Join(da, "proc/loadavg")); got != "0.50 0.25 0.00 1/4 11\n" {
		t.Errorf("a's loadavg %q", got)
	}
	if got := readFile(t, filepath.Join(db, "proc/loadavg")); got != "0.50 0.25 0.00 1/4 22\n" {
		t.Errorf("b's loadavg %q", got)
	}
	if ua, ub := readFile(t, filepath.Join(da, productUUID)), readFile(t, filepath.Join(db, productUUID)); ua == ub || ua != string(procview.ProductUUID("a")) {
		t.Errorf("product_uuid a %q b %q", ua, ub)
	}
	for _, c := range []struct {
		path string
		ino  uint64
	}{
		{da, 3 << 16}, {filepath.Join(da, "proc"), 3<<16 | 1}, {filepath.Join(da, "proc/meminfo"), 3<<16 | 33},
		{filepath.Join(db, "proc/meminfo"), 1<<55 | 33}, {filepath.Join(db, productUUID), 1<<55 | 40},
		{filepath.Dir(da), 1},
	} {
		var st unix.Stat_t
		if err := unix.Stat(c.path, &st); err != nil || st.Ino != c.ino {
			t.Errorf("%s: ino %#x (%v), want %#x", c.path, st.Ino, err, c.ino)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(db, "proc/meminfo"), &st); err != nil || st.Uid != 200000 {
		t.Errorf("b's meminfo owner %d (%v)", st.Uid, err)
	}
	ents, err := os.ReadDir(filepath.Dir(da))
	if err != nil || len(ents) != 2 || ents[0].Name() != "a" || ents[1].Name() != "b" {
		t.Errorf("root listing %v %v", ents, err)
	}
}

// Remove: the directory is gone for lookups, opens of its files fail,
// the other container goes on.
func TestRemove(t *testing.T) {
	needFUSE(t)
	s := start(t, runDir(t))
	a, b := fixtureContainer(t), fixtureContainer(t)
	b.base = 200000
	da, db := add(t, s, "a", 1, a), add(t, s, "b", 2, b)
	readFile(t, filepath.Join(da, "proc/meminfo"))
	f, err := os.Open(filepath.Join(da, "proc/uptime"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s.Remove("a")
	if _, err := os.Stat(da); !os.IsNotExist(err) {
		t.Errorf("stat after Remove: %v", err)
	}
	if _, err := os.ReadFile(filepath.Join(da, "proc/meminfo")); err == nil {
		t.Errorf("open after Remove succeeded")
	}
	if _, err := f.ReadAt(make([]byte, 10), 0); err == nil {
		t.Errorf("read of a file opened before Remove succeeded")
	}
	readFile(t, filepath.Join(db, "proc/meminfo"))
	n := 0
	s.handles.Range(func(k, v any) bool {
		if slot, _ := splitNode(v.(*handle).node); slot == 1 {
			n++
		}
		return true
	})
	if n != 0 {
		t.Errorf("%d snapshots of a removed container kept", n)
	}
	if _, err := s.Add("a", 1, a); err == nil {
		t.Errorf("a removed container's slot was given again")
	}
	if _, err := s.Add("a", 3, a); err != nil {
		t.Errorf("Add of a again in a new slot: %v", err)
	}
	readFile(t, filepath.Join(da, "proc/meminfo"))
}

// An open view read again from offset 0 is rendered again, as seq_file
// does (procps keeps /proc/meminfo open and seeks back); and with the
// kernel caching attributes, a splice read of content that grew since the
// previous splice read is still whole.
func TestRereadAndSplice(t *testing.T) {
	needFUSE(t)
	c := fakeContainer{sysctls: &fakeSysctls{m: map[string]string{}}}
	s := start(t, runDir(t))
	dir := add(t, s, "c", 1, c)
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
	for _, v := range []string{"1", "123456789", "3", "2147483647", "5"} {
		c.SetSysctl("kernel/panic", v)
		if got := sendfile(t, panicView); got != v+"\n" {
			t.Errorf("sendfile after setting %s: %q", v, got)
		}
	}
}

// Open, read to EOF and close costs OPEN + READ + READ (the one that
// returns 0) and an asynchronous RELEASE: no GETATTR (attributes are
// cached), no FLUSH (answered ENOSYS once).
func TestRoundTrips(t *testing.T) {
	needFUSE(t)
	s := start(t, runDir(t))
	p := filepath.Join(add(t, s, "c", 1, fixtureContainer(t)), "proc/uptime")
	readFile(t, p) // the lookup, and FLUSH's ENOSYS
	before := make([]uint64, maxOp)
	for i := range before {
		before[i] = s.counts[i].Load()
	}
	const n = 20
	buf := make([]byte, 4096)
	start := time.Now()
	for range n {
		fd, err := unix.Open(p, unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for {
			m, err := unix.Read(fd, buf)
			if m <= 0 || err != nil {
				break
			}
		}
		unix.Close(fd)
	}
	took := time.Since(start) / n
	time.Sleep(50 * time.Millisecond) // RELEASE is sent in the background
	got := map[string]uint64{}
	names := map[int]string{opOpen: "OPEN", opRead: "READ", opRelease: "RELEASE", opFlush: "FLUSH", opGetattr: "GETATTR", opLookup: "LOOKUP"}
	for i := range before {
		if d := s.counts[i].Load() - before[i]; d != 0 {
			name, ok := names[i]
			if !ok {
				name = "op" + string(rune('0'+i/10)) + string(rune('0'+i%10))
			}
			got[name] = d
		}
	}
	t.Logf("%d open+read+close of proc/uptime: %v requests, %v each", n, got, took)
	want := map[string]uint64{"OPEN": n, "READ": 2 * n, "RELEASE": n}
	if len(got) != len(want) || got["OPEN"] != n || got["READ"] != 2*n || got["RELEASE"] != n {
		// A GETATTR may slip in where the attribute timeout (1 s)
		// ran out during the loop.
		if got["GETATTR"] > 1 || got["OPEN"] != n || got["READ"] != 2*n || got["FLUSH"] != 0 {
			t.Errorf("requests %v, want %v", got, want)
		}
	}
}

func BenchmarkOpenReadClose(b *testing.B) {
	needFUSE(b)
	s := start(b, runDir(b))
	dir := add(b, s, "c", 1, fixtureContainer(b))
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
	c := fixtureContainer(b)
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
