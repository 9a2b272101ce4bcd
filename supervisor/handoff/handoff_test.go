package handoff

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// socketpair returns two connected unix stream sockets.
func socketpair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// sendRaw writes payload with fds on its first byte, the way runc does, then
// closes its side. (One sendmsg can be short on a stream socket: the rest
// goes with Write, which loops.)
func sendRaw(conn *net.UnixConn, payload []byte, fds ...int) error {
	defer conn.CloseWrite()
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, _, err := conn.WriteMsgUnix(payload, oob, nil)
	if err != nil {
		return err
	}
	_, err = conn.Write(payload[n:])
	return err
}

func state(id string, pid int, fds ...string) specs.ContainerProcessState {
	return specs.ContainerProcessState{
		Version: specs.Version, Fds: fds, Pid: pid, Metadata: `{"id":"` + id + `","policy":"default"}`,
		State: specs.State{Version: specs.Version, ID: id, Status: specs.StateCreating, Pid: pid, Bundle: "/bundles/" + id},
	}
}

// assertOnlyWriter closes w and checks the read end then sees EOF: no other
// copy of the write end (one leaked by Receive) is still open.
func assertOnlyWriter(t *testing.T, r, w *os.File) {
	t.Helper()
	w.Close()
	r.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("pipe read after closing the writer: %v, want EOF (a received fd was leaked)", err)
	}
}

// assertSamePipe checks fd is a copy of the pipe's read end.
func assertSamePipe(t *testing.T, fd int, w *os.File) {
	t.Helper()
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if n, err := unix.Read(fd, buf); n != 1 || err != nil || buf[0] != 'x' {
		t.Errorf("reading the received fd: %d %q %v", n, buf, err)
	}
}

func TestSendReceive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seccomp.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		m   *Message
		err error
	}
	res := make(chan result, 1)
	go func() {
		conn, err := l.AcceptUnix()
		if err != nil {
			res <- result{nil, err}
			return
		}
		defer conn.Close()
		m, err := Receive(conn, 5*time.Second)
		res <- result{m, err}
	}()
	r, w := pipe(t)
	st := state("4f1e", 4242)
	if err := Send(path, st, int(r.Fd())); err != nil {
		t.Fatal(err)
	}
	got := <-res
	if got.err != nil {
		t.Fatal(got.err)
	}
	m := got.m
	defer unix.Close(m.SeccompFd)
	if m.State.State.ID != "4f1e" || m.State.Pid != 4242 || m.State.Metadata != st.Metadata || m.State.State.Bundle != "/bundles/4f1e" {
		t.Errorf("state %+v", m.State)
	}
	if len(m.State.Fds) != 1 || m.State.Fds[0] != SeccompFdName {
		t.Errorf("fds %v, want [%s]", m.State.Fds, SeccompFdName)
	}
	if m.PeerUID != uint32(os.Getuid()) {
		t.Errorf("peer uid %d, want %d", m.PeerUID, os.Getuid())
	}
	flags, err := unix.FcntlInt(uintptr(m.SeccompFd), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("received fd flags %#x, %v: want close-on-exec", flags, err)
	}
	assertSamePipe(t, m.SeccompFd, w)
}

func TestReceiveClosesExtraFds(t *testing.T) {
	a, b := socketpair(t)
	extraR, extraW := pipe(t)
	r, w := pipe(t)
	payload, _ := json.Marshal(state("c1", 10, "extra", SeccompFdName))
	go sendRaw(a, payload, int(extraW.Fd()), int(r.Fd()))
	m, err := Receive(b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(m.SeccompFd)
	assertSamePipe(t, m.SeccompFd, w)
	assertOnlyWriter(t, extraR, extraW)
}

func TestReceiveRejects(t *testing.T) {
	good := func() specs.ContainerProcessState { return state("c1", 10, SeccompFdName) }
	marshal := func(st specs.ContainerProcessState) []byte { b, _ := json.Marshal(st); return b }
	tests := []struct {
		name    string
		payload []byte
		nfds    int
		err     string
	}{
		{"more fds than named", marshal(good()), 2, "names 1 fds but 2 were passed"},
		{"named fds not passed", marshal(state("c1", 10, SeccompFdName, "other")), 1, "names 2 fds but 1 were passed"},
		{"no fds at all", marshal(good()), 0, "names 1 fds but 0 were passed"},
		{"no seccomp fd", marshal(state("c1", 10, "other")), 1, `no "seccompFd" fd`},
		{"no container id", marshal(state("", 10, SeccompFdName)), 1, "lacks id or pid"},
		{"no pid", marshal(state("c1", 0, SeccompFdName)), 1, "lacks id or pid"},
		{"more fds than fit one message", marshal(state("c1", 10, slices.Repeat([]string{SeccompFdName}, maxFds)...)), maxFds + 1, "more than 16 fds"},
		{"malformed JSON", []byte(`{"ociVersion":`), 1, "decode container process state"},
		{"empty", nil, 1, "decode container process state"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := socketpair(t)
			var rs, ws []*os.File
			var fds []int
			for i := 0; i < tc.nfds; i++ {
				r, w := pipe(t)
				rs, ws = append(rs, r), append(ws, w)
				fds = append(fds, int(w.Fd()))
			}
			payload := tc.payload
			if payload == nil {
				payload = []byte{' '} // fds need at least one byte of data
			}
			go sendRaw(a, payload, fds...)
			m, err := Receive(b, 5*time.Second)
			if err == nil {
				unix.Close(m.SeccompFd)
				t.Fatalf("Receive accepted %s", tc.name)
			}
			if !strings.Contains(err.Error(), tc.err) {
				t.Errorf("error %q, want it to mention %q", err, tc.err)
			}
			for i := range rs {
				assertOnlyWriter(t, rs[i], ws[i])
			}
		})
	}
}

func TestReceiveOversize(t *testing.T) {
	a, b := socketpair(t)
	r, w := pipe(t)
	st := good()
	st.Metadata = strings.Repeat("x", MaxStateSize)
	payload, _ := json.Marshal(st)
	sent := make(chan error, 1)
	go func() { sent <- sendRaw(a, payload, int(w.Fd())) }()
	_, err := Receive(b, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversize state: %v, want a size error", err)
	}
	b.Close() // unblocks the sender
	<-sent
	assertOnlyWriter(t, r, w)
}

func good() specs.ContainerProcessState { return state("c1", 10, SeccompFdName) }

func TestReceiveTimeout(t *testing.T) {
	// Peers that never finish: a deadline error, never a hang or a panic.
	for _, send := range []bool{false, true} {
		a, b := socketpair(t)
		r, w := pipe(t)
		if send {
			payload, _ := json.Marshal(good())
			if _, _, err := a.WriteMsgUnix(payload, unix.UnixRights(int(w.Fd())), nil); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		_, err := Receive(b, 200*time.Millisecond)
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("sent %v: Receive from a peer that never finishes: %v, want a deadline error", send, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("sent %v: timed out after %v", send, d)
		}
		assertOnlyWriter(t, r, w)
	}
}

func TestReceiveNothing(t *testing.T) {
	a, b := socketpair(t)
	a.Close()
	if _, err := Receive(b, time.Second); err == nil || !strings.Contains(err.Error(), "decode") {
		t.Errorf("Receive from a peer that sent nothing: %v", err)
	}
}

func TestPeerUID(t *testing.T) {
	a, _ := socketpair(t)
	uid, err := PeerUID(a)
	if err != nil || uid != uint32(os.Getuid()) {
		t.Errorf("PeerUID = %d, %v; want %d", uid, err, os.Getuid())
	}
}

func TestSendNoListener(t *testing.T) {
	r, _ := pipe(t)
	if err := Send(filepath.Join(t.TempDir(), "none.sock"), good(), int(r.Fd())); err == nil {
		t.Error("Send to a missing socket succeeded")
	}
}
