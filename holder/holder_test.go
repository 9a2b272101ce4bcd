package holder

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("SYSVISOR_E2E") == "required" {
			t.Fatal("required but cannot run: needs root")
		}
		t.Skip("needs root (SO_PEERCRED uid 0)")
	}
}

func start(t *testing.T) (*Holder, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "hold") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h, err := Listen(Config{RunDir: dir, DownTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { h.Serve(); close(done) }()
	t.Cleanup(func() { h.Close(); <-done })
	return h, dir
}

func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func list(t *testing.T, dir string) map[string]int {
	t.Helper()
	c, err := Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	held, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	})
	return held
}

// What is put is handed back, the same open file, to the next client;
// a name put twice keeps the last; a deleted name is gone.
func TestPutListDel(t *testing.T) {
	requireRoot(t)
	_, dir := start(t)
	var p1, p2 [2]int
	unix.Pipe2(p1[:], unix.O_CLOEXEC)
	unix.Pipe2(p2[:], unix.O_CLOEXEC)
	defer func() {
		for _, fd := range append(p1[:], p2[:]...) {
			unix.Close(fd)
		}
	}()
	c, err := Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []struct {
		name string
		fd   int
	}{{"a", p1[0]}, {"b", p1[1]}, {"b", p2[1]}, {"c", p2[0]}} {
		if err := c.Put(op.name, op.fd); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Del("c"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// A new client replaces the old connection; what was put stays.
	held := list(t, dir)
	if len(held) != 2 {
		t.Fatalf("held %v, want a and b", held)
	}
	if inode(t, held["a"]) != inode(t, p1[0]) || inode(t, held["b"]) != inode(t, p2[1]) {
		t.Errorf("held fds are not the files put (a, and the second b)")
	}
	// The handed-back copy is the same pipe: write through it.
	unix.Write(held["b"], []byte("x"))
	buf := make([]byte, 1)
	if n, _ := unix.Read(p2[0], buf); n != 1 || buf[0] != 'x' {
		t.Error("write through the held copy did not arrive")
	}
}

// A held fd the kernel reports hung up (here a pipe's read end whose
// writer closed; for a listener, a container whose tasks all exited) is
// dropped by the holder itself.
func TestHangUpDropped(t *testing.T) {
	requireRoot(t)
	_, dir := start(t)
	var p [2]int
	unix.Pipe2(p[:], unix.O_CLOEXEC)
	c, err := Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	name := ListenerName(3, "ctr", true)
	c.Put(name, p[0])
	unix.Close(p[0])
	time.Sleep(100 * time.Millisecond)
	if _, ok := list(t, dir)[name]; !ok {
		t.Fatal("dropped before the hang-up")
	}
	unix.Close(p[1])
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, ok := list(t, dir)[name]; !ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("hung-up fd still held after 3 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Malformed messages (a PUT without an fd, an unknown op, one longer than
// any valid message) cost their sender the connection, and the holder
// goes on serving with what it held.
func TestMalformedMessages(t *testing.T) {
	requireRoot(t)
	_, dir := start(t)
	var p [2]int
	unix.Pipe2(p[:], unix.O_CLOEXEC)
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	c, _ := Dial(dir)
	c.Put("keep", p[0])
	c.Close()
	for _, msg := range []string{"PUT\x00nofd", "WHAT\x00x", "DEL\x00" + strings.Repeat("x", 4*maxMsg), ""} {
		conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: filepath.Join(dir, Socket), Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte(msg))
		conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 64)
		if n, err := conn.Read(buf); err == nil && n > 0 {
			t.Errorf("%q: got a reply %q", msg, buf[:n])
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%q: connection kept open", msg)
		}
		conn.Close()
	}
	if _, ok := list(t, dir)["keep"]; !ok {
		t.Error("held fd lost after malformed messages")
	}
}

// Only host root may talk to the holder: another uid is refused even
// when the socket's mode lets it connect.
func TestNonRootRefused(t *testing.T) {
	requireRoot(t)
	if os.Getenv("HOLDER_TEST_DIAL") != "" {
		return // the child's side, below
	}
	_, dir := start(t)
	var p [2]int
	unix.Pipe2(p[:], unix.O_CLOEXEC)
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	c, _ := Dial(dir)
	c.Put("secret", p[0])
	c.Close()
	os.Chmod(filepath.Join(dir, Socket), 0o666)
	os.Chmod(dir, 0o755)
	// A copy the other uid may execute (go test's build directory is
	// root's).
	self, _ := os.Executable()
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "holder.test")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestNonRootChild$", "-test.v")
	cmd.Env = append(os.Environ(), "HOLDER_TEST_DIAL="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CHILD refused") {
		t.Fatalf("non-root client: %v\n%s", err, out)
	}
	if _, ok := list(t, dir)["secret"]; !ok {
		t.Error("held fd lost")
	}
}

// TestNonRootChild is the child of TestNonRootRefused.
func TestNonRootChild(t *testing.T) {
	dir := os.Getenv("HOLDER_TEST_DIAL")
	if dir == "" {
		t.Skip("child of TestNonRootRefused")
	}
	c, err := Dial(dir)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	held, err := c.List()
	if err == nil {
		t.Fatalf("CHILD got %d fds", len(held))
	}
	t.Logf("CHILD refused: %v", err)
}

// A second holder on the same run directory does not start.
func TestOnePerRunDir(t *testing.T) {
	requireRoot(t)
	_, dir := start(t)
	if _, err := Listen(Config{RunDir: dir}); err != ErrRunning {
		t.Fatalf("second holder: %v, want ErrRunning", err)
	}
}

func TestListenerName(t *testing.T) {
	name := ListenerName(42, "abc", false)
	slot, id, init, err := ParseListenerName(name)
	if err != nil || slot != 42 || id != "abc" || init {
		t.Fatalf("%s: %d %q %v %v", name, slot, id, init, err)
	}
	for _, bad := range []string{"seccomp/x/abc/init", "seccomp/1//init", "seccomp/1/abc/other", "seccomp/-1/a/init",
		"seccomp/65536/a/init", "seccomp/1/a/b/init", "views/fuse"} {
		if _, _, _, err := ParseListenerName(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// A peer whose main thread is a zombie while another thread lives (what a
// sysvisord killed with a thread stuck in a request to its own views mount
// looks like) is taken for gone, although its socket stays open.
func TestDyingPeerDetached(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("needs gcc for the peer program")
	}
	h, dir := start(t)
	src := filepath.Join(dir, "peer.c")
	os.WriteFile(src, []byte(`#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
static void *sleeper(void *a) { sleep(60); return a; }
int main(int argc, char **argv) {
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strncpy(sa.sun_path, argv[1], sizeof sa.sun_path - 1);
	int s = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) return 1;
	pthread_t t;
	pthread_create(&t, 0, sleeper, 0);
	pthread_exit(0); /* the main thread ends; the process lives on */
}
`), 0o644)
	bin := filepath.Join(dir, "peer")
	if out, err := exec.Command("gcc", "-pthread", "-o", bin, src).CombinedOutput(); err != nil {
		t.Skipf("gcc: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, filepath.Join(dir, Socket))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	attached := func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.conn != nil && h.connPid == cmd.Process.Pid
	}
	deadline := time.Now().Add(5 * time.Second)
	for !attached() {
		if time.Now().After(deadline) {
			t.Fatal("peer never attached")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if dying(os.Getpid()) {
		t.Fatal("this test process taken for dying")
	}
	for deadline = time.Now().Add(5 * time.Second); attached(); {
		if time.Now().After(deadline) {
			t.Fatalf("a peer with a zombie main thread is still attached (dying: %v)", dying(cmd.Process.Pid))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
