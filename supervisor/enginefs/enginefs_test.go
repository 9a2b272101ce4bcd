package enginefs

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

const testBase = 300000

// TestMain lets the test binary act as an engine that works inside the
// mount chrooted, as dockerd's docker-untar does.
func TestMain(m *testing.M) {
	if root := os.Getenv("ENGINEFS_CHROOT"); root != "" {
		os.Exit(chrootWriter(root, os.Getenv("ENGINEFS_ROUNDS")))
	}
	os.Exit(m.Run())
}

// chrootWriter chroots into root and creates files through paths whose
// components the test flips between directories and symlinks.
func chrootWriter(root, rounds string) int {
	if err := syscall.Chroot(root); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := os.Chdir("/"); err != nil {
		return 2
	}
	n, _ := strconv.Atoi(rounds)
	for i := 0; i < n; i++ {
		for _, p := range []string{"d/f", "a/b/f", "ln"} {
			if f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				f.WriteString("written by the engine\n")
				f.Close()
			}
			os.Remove(p)
		}
		os.Mkdir("d/sub", 0o755)
	}
	return 0
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

// setup mounts a server over a fresh mount point and serves backing as
// container "c1".
func setup(t *testing.T) (s *Server, backing, dir string) {
	t.Helper()
	needRoot(t)
	tmp := t.TempDir()
	backing = filepath.Join(tmp, "backing")
	if err := os.Mkdir(backing, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(backing, testBase, testBase); err != nil {
		t.Fatal(err)
	}
	s, err := Mount(filepath.Join(tmp, "mnt"), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Unmount(); err != nil {
			t.Error(err)
		}
	})
	dir, err = s.Add("c1", backing, testBase)
	if err != nil {
		t.Fatal(err)
	}
	return s, backing, dir
}

func owner(t *testing.T, p string) (uint32, uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid
}

func write(t *testing.T, p, s string, uid int) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// The engine sees the container's files as they are on disk: host IDs of
// the range shifted down, others as the overflow ID.
func TestOwnersTranslated(t *testing.T) {
	_, backing, dir := setup(t)
	write(t, filepath.Join(backing, "root"), "r", testBase)
	write(t, filepath.Join(backing, "user"), "u", testBase+1000)
	write(t, filepath.Join(backing, "host"), "h", 5)
	if err := os.Symlink("root", filepath.Join(backing, "ln")); err != nil {
		t.Fatal(err)
	}
	os.Lchown(filepath.Join(backing, "ln"), testBase+7, testBase+7)
	for name, want := range map[string]uint32{"root": 0, "user": 1000, "host": overflowID, "ln": 7, ".": 0} {
		if u, g := owner(t, filepath.Join(dir, name)); u != want || g != want {
			t.Errorf("%s: owner %d:%d, want %d:%d", name, u, g, want, want)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "user"))
	if err != nil || string(b) != "u" {
		t.Fatalf("read through the mount: %q, %v", b, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 4 {
		t.Fatalf("readdir: %v, %v", ents, err)
	}
	// An open file answers with its handle: translated as well.
	f, err := os.Open(filepath.Join(dir, "user"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Uid != 1000 {
		t.Fatalf("fstat of an open file: uid %d, %v", st.Uid, err)
	}
}

// What host root makes through the mount is root's in the container (the
// first ID of its range); chown moves within the range and refuses what
// is beyond it.
func TestCreateAndChown(t *testing.T) {
	_, backing, dir := setup(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "new"), []byte("x"), 0o640))
	must(os.Mkdir(filepath.Join(dir, "newdir"), 0o750))
	must(os.Symlink("new", filepath.Join(dir, "newln")))
	must(unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	must(os.Link(filepath.Join(dir, "new"), filepath.Join(dir, "hard")))
	for _, name := range []string{"new", "newdir", "newln", "fifo", "hard"} {
		if u, g := owner(t, filepath.Join(backing, name)); u != testBase || g != testBase {
			t.Errorf("%s on disk: %d:%d, want %d:%d", name, u, g, testBase, testBase)
		}
		if u, _ := owner(t, filepath.Join(dir, name)); u != 0 {
			t.Errorf("%s through the mount: uid %d, want 0", name, u)
		}
	}
	var a, b unix.Stat_t
	must(unix.Stat(filepath.Join(dir, "new"), &a))
	must(unix.Stat(filepath.Join(dir, "hard"), &b))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("hard link: inos %d and %d, nlink %d", a.Ino, b.Ino, a.Nlink)
	}
	must(os.Lchown(filepath.Join(dir, "new"), 1000, 1001))
	if u, g := owner(t, filepath.Join(backing, "new")); u != testBase+1000 || g != testBase+1001 {
		t.Errorf("chown 1000:1001 on disk: %d:%d", u, g)
	}
	must(os.Lchown(filepath.Join(dir, "newln"), 3, 3))
	if u, _ := owner(t, filepath.Join(backing, "newln")); u != testBase+3 {
		t.Errorf("lchown of a symlink: on disk %d", u)
	}
	if u, _ := owner(t, filepath.Join(backing, "new")); u != testBase+1000 {
		t.Errorf("lchown of the symlink changed its target: %d", u)
	}
	if err := os.Lchown(filepath.Join(dir, "new"), 70000, 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("chown beyond the range: %v, want EINVAL", err)
	}
	must(os.Chmod(filepath.Join(dir, "new"), 0o600))
	must(os.Truncate(filepath.Join(dir, "new"), 0))
	st, err := os.Stat(filepath.Join(backing, "new"))
	must(err)
	if st.Mode().Perm() != 0o600 || st.Size() != 0 {
		t.Errorf("chmod/truncate: %v size %d", st.Mode(), st.Size())
	}
	mt := time.Unix(1_000_000_000, 0)
	must(os.Chtimes(filepath.Join(dir, "new"), mt, mt))
	if st, _ := os.Stat(filepath.Join(backing, "new")); !st.ModTime().Equal(mt) {
		t.Errorf("mtime %v, want %v", st.ModTime(), mt)
	}
	must(os.Rename(filepath.Join(dir, "new"), filepath.Join(dir, "newdir", "moved")))
	if _, err := os.Stat(filepath.Join(backing, "newdir", "moved")); err != nil {
		t.Errorf("rename: %v", err)
	}
	if err := unix.Mknod(filepath.Join(dir, "dev"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); !errors.Is(err, unix.EPERM) {
		t.Errorf("mknod of a device: %v, want EPERM", err)
	}
	must(os.RemoveAll(filepath.Join(dir, "newdir")))
	must(os.Remove(filepath.Join(dir, "fifo")))
	if _, err := os.Stat(filepath.Join(backing, "newdir")); !os.IsNotExist(err) {
		t.Errorf("rmdir: %v", err)
	}
	// tmpfs has user xattrs from 6.6 on: below, the backing directory
	// itself refuses them, and there is nothing to pass through.
	if err := unix.Setxattr(filepath.Join(backing, "hard"), "user.probe", []byte("p"), 0); errors.Is(err, unix.EOPNOTSUPP) {
		t.Logf("no user xattrs on the backing filesystem here: %v", err)
		return
	}
	must(unix.Setxattr(filepath.Join(dir, "hard"), "user.k", []byte("v"), 0))
	buf := make([]byte, 8)
	n, err := unix.Getxattr(filepath.Join(backing, "hard"), "user.k", buf)
	if err != nil || string(buf[:n]) != "v" {
		t.Errorf("xattr on disk: %q, %v", buf[:n], err)
	}
	if n, err := unix.Getxattr(filepath.Join(dir, "hard"), "user.k", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("xattr through the mount: %v", err)
	}
}

// Symlinks in the container's tree, whatever they point at, resolve
// inside its root when the server walks them.
func TestResolveStaysInRoot(t *testing.T) {
	_, backing, _ := setup(t)
	outside := t.TempDir()
	for name, target := range map[string]string{"abs": outside, "up": "../../../../../..", "proc": "/proc/self/root"} {
		if err := os.Symlink(target, filepath.Join(backing, name)); err != nil {
			t.Fatal(err)
		}
	}
	root, err := unix.Open(backing, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	var rst unix.Stat_t
	unix.Fstat(root, &rst)
	if _, e := openIn(root, "abs", unix.O_PATH|unix.O_DIRECTORY); e != syscall.ENOENT {
		t.Errorf("absolute symlink out: %v, want ENOENT (resolved inside)", e)
	}
	fd, e := openIn(root, "up", unix.O_PATH|unix.O_DIRECTORY)
	if e != 0 {
		t.Fatal(e)
	}
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	unix.Close(fd)
	if st.Ino != rst.Ino || st.Dev != rst.Dev {
		t.Errorf(`".." beyond the root left it`)
	}
	if _, e := openIn(root, "proc", unix.O_PATH); e == 0 {
		t.Errorf("a procfs magic link was followed")
	}
}

// An engine chrooted in the mount (as dockerd's untar is) writes while the
// container flips the directories on its path into symlinks to a host
// directory: nothing may land outside the container's tree.
func TestRaceSymlinkSwap(t *testing.T) {
	_, backing, dir := setup(t)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "target"), []byte("host file\n"), 0o644)
	// -short (the host matrix's VMs, where TCG makes 1500 rounds take 75 s):
	// fewer rounds of the same race.
	rounds := "1500"
	if testing.Short() {
		rounds = "300"
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ENGINEFS_CHROOT="+dir, "ENGINEFS_ROUNDS="+rounds)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	flips := 0
	flip := func(p, target string, mkdir bool) {
		os.RemoveAll(p)
		if flips%2 == 0 {
			os.Symlink(target, p)
		} else if mkdir {
			os.Mkdir(p, 0o755)
			os.Chown(p, testBase, testBase)
		}
	}
	os.MkdirAll(filepath.Join(backing, "a"), 0o755)
loop:
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("writer: %v", err)
			}
			break loop
		default:
		}
		flips++
		flip(filepath.Join(backing, "d"), outside, true)
		flip(filepath.Join(backing, "a", "b"), outside, true)
		flip(filepath.Join(backing, "ln"), filepath.Join(outside, "target"), false)
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 1 {
		t.Errorf("the outside directory holds %d entries, want 1 (target): %v", len(ents), ents)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "target")); string(b) != "host file\n" {
		t.Errorf("the host file was written: %q", b)
	}
	t.Logf("%d flips", flips)
}

// Once removed, a container's tree is gone from the mount, and an engine
// that still holds a directory open gets errors, not another container.
func TestRemove(t *testing.T) {
	s, backing, dir := setup(t)
	write(t, filepath.Join(backing, "f"), "x", testBase)
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s.Remove("c1")
	if _, err := os.Stat(filepath.Join(dir, "f")); err == nil {
		t.Errorf("stat after remove succeeded")
	}
	if _, err := unix.Openat(int(d.Fd()), "f", unix.O_RDONLY, 0); err == nil {
		t.Errorf("open below a removed tree's directory succeeded")
	}
	// The same id served again (a restarted sysvisord) from another tree.
	other := t.TempDir()
	write(t, filepath.Join(other, "g"), "y", testBase+1)
	if _, err := s.Add("c1", other, testBase); err != nil {
		t.Fatal(err)
	}
	if u, _ := owner(t, filepath.Join(dir, "g")); u != 1 {
		t.Errorf("re-added tree: uid %d, want 1", u)
	}
	for _, bad := range []string{"", "..", "a/b", "x\x00"} {
		if _, err := s.Add(bad, other, testBase); err == nil {
			t.Errorf("Add(%q) accepted", bad)
		}
	}
	if _, err := s.Add("c2", filepath.Join(other, "g"), testBase); err == nil {
		t.Errorf("Add of a file as rootfs accepted")
	}
}

// go-fuse's idle readers, each with a buffer, are at their most from the
// mount on, so a busy phase leaves sysvisord's goroutines and heap where
// they were.
func TestReadersPrimed(t *testing.T) {
	s, backing, dir := setup(t)
	want := fmt.Sprintf("readers: %d", max(runtime.GOMAXPROCS(0), 2)+1)
	if got := s.srv.DebugData(); got != want {
		t.Fatalf("after the mount: %s, want %s", got, want)
	}
	write(t, filepath.Join(backing, "f"), "x", testBase)
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				os.ReadFile(filepath.Join(dir, "f"))
				os.Stat(filepath.Join(dir, fmt.Sprintf("absent%d", j)))
			}
		}()
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond)
	if got := s.srv.DebugData(); got != want {
		t.Errorf("after concurrent requests: %s, want %s", got, want)
	}
	if _, err := s.Add(primePrefix+"0", backing, testBase); err == nil {
		t.Errorf("a container id with the priming prefix was accepted")
	}
}
