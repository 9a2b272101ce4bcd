package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sysvisor/sysvisor/supervisor/lease"
	"github.com/sysvisor/sysvisor/supervisor/registry"
	"github.com/sysvisor/sysvisor/supervisor/trace"
)

// serve answers each connection on l with handle, one request each.
func serve(t *testing.T, l *net.UnixListener, handle func(Request) Response) <-chan Request {
	t.Helper()
	got := make(chan Request, 16)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			var req Request
			if err := json.NewDecoder(conn).Decode(&req); err != nil {
				conn.Close()
				continue
			}
			got <- req
			json.NewEncoder(conn).Encode(handle(req))
			conn.Close()
		}
	}()
	return got
}

func listen(t *testing.T, runDir string) *net.UnixListener {
	t.Helper()
	l, err := Listen(filepath.Join(runDir, ControlSocket))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestCallRoundTrip(t *testing.T) {
	runDir := t.TempDir()
	l := listen(t, runDir)
	rec := registry.Record{ID: "c1", Bundle: "/b", Policy: "default", Lease: lease.Range{Start: 196608, Size: 65536},
		Status: registry.StatusRunning, Created: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)}
	reqs := serve(t, l, func(r Request) Response {
		switch r.Op {
		case OpCreate:
			return Response{Lease: &lease.Range{Start: 196608, Size: 65536}}
		case OpPs:
			return Response{Containers: []ContainerInfo{{Record: rec, Notifications: 3, Listeners: 1, UptimeSeconds: 1.5}}}
		}
		return Response{Error: "unknown op " + r.Op}
	})

	req := Request{Op: OpCreate, ID: "c1", Bundle: "/b", RuncRoot: "/run/runc", Policy: "default",
		MaskedPaths: []string{"/proc/kcore"}, ReadonlyPaths: []string{"/proc/sys"}}
	resp, err := Call(runDir, req, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-reqs; !reflect.DeepEqual(got, req) {
		t.Errorf("server got %+v, want %+v", got, req)
	}
	if resp.Lease == nil || *resp.Lease != (lease.Range{Start: 196608, Size: 65536}) {
		t.Errorf("lease %+v", resp.Lease)
	}

	resp, err = Call(runDir, Request{Op: OpPs}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []ContainerInfo{{Record: rec, Notifications: 3, Listeners: 1, UptimeSeconds: 1.5}}
	if !reflect.DeepEqual(resp.Containers, want) {
		t.Errorf("ps:\n\tgot  %+v\n\twant %+v", resp.Containers, want)
	}

	// A refusal is sysvisord's answer, not unavailability.
	resp, err = Call(runDir, Request{Op: "bogus"}, 2*time.Second)
	if err == nil || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "sysvisord: unknown op bogus") {
		t.Errorf("refused call: %v", err)
	}
	if resp == nil || resp.Error != "unknown op bogus" {
		t.Errorf("refused call response %+v", resp)
	}
}

func TestCallNoSupervisor(t *testing.T) {
	runDir := t.TempDir()
	start := time.Now()
	_, err := Call(runDir, Request{Op: OpPing}, 5*time.Second)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Call without a socket: %v, want ErrUnavailable", err)
	}
	if !strings.Contains(err.Error(), "sysvisord") || !strings.Contains(err.Error(), filepath.Join(runDir, ControlSocket)) {
		t.Errorf("error %q should name sysvisord and the socket", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("a missing supervisor took %v to report", time.Since(start))
	}

	// A stale socket left by a dead supervisor: connection refused, fast.
	l, err := Listen(filepath.Join(runDir, ControlSocket))
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := os.Stat(filepath.Join(runDir, ControlSocket)); err != nil {
		t.Fatalf("stale socket not left: %v", err)
	}
	if _, err := Call(runDir, Request{Op: OpPing}, 5*time.Second); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Call to a stale socket: %v, want ErrUnavailable", err)
	}
}

func TestCallTimeout(t *testing.T) {
	runDir := t.TempDir()
	l := listen(t, runDir)
	// A wedged supervisor: accepts, never answers.
	done := make(chan struct{})
	defer close(done)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		<-done
		conn.Close()
	}()
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := Call(runDir, Request{Op: OpCreate, ID: "c1"}, 200*time.Millisecond)
		errc <- err
	}()
	var err error
	select {
	case err = <-errc:
	case <-time.After(10 * time.Second):
		t.Fatal("Call to a wedged supervisor hangs")
	}
	elapsed := time.Since(start)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "sysvisord") || !strings.Contains(err.Error(), "no answer to create") {
		t.Errorf("Call to a wedged supervisor: %v", err)
	}
	if elapsed < 150*time.Millisecond || elapsed > 3*time.Second {
		t.Errorf("timed out after %v, want about 200ms", elapsed)
	}
}

func TestCallGarbageAnswer(t *testing.T) {
	runDir := t.TempDir()
	l := listen(t, runDir)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		json.NewDecoder(conn).Decode(&Request{})
		conn.Write([]byte("not json\n"))
		conn.Close()
	}()
	if _, err := Call(runDir, Request{Op: OpPing}, 2*time.Second); !errors.Is(err, ErrUnavailable) {
		t.Errorf("garbage answer: %v, want ErrUnavailable", err)
	}
}

func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "sysvisor")
	path := filepath.Join(dir, ControlSocket)
	// Created with its directory, replacing whatever was left at the path.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a root-only socket", st.Mode())
	}
	l.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}
	// Into a directory that does not exist yet.
	l2, err := Listen(filepath.Join(t.TempDir(), "a", "b", SeccompSocket))
	if err != nil {
		t.Fatal(err)
	}
	l2.Close()
}

func TestCallRefusesWhatJSONCannotCarry(t *testing.T) {
	// Refused before dialing: no socket here, so reaching it would say
	// ErrUnavailable instead.
	_, err := Call(t.TempDir(), Request{Op: OpCreate, ID: "c1", Bundle: "/bundles/\xff"}, time.Second)
	if err == nil || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "request field bundle") {
		t.Errorf("Call with a bundle that is not UTF-8: %v", err)
	}
	err = Trace(t.Context(), t.TempDir(), Request{MaskedPaths: []string{"/a", "\xc3"}}, func(trace.Event) error { return nil })
	if err == nil || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "maskedPaths[1]") {
		t.Errorf("Trace with a path that is not UTF-8: %v", err)
	}
}

func TestReadRequestBounded(t *testing.T) {
	// A request that never ends: refused once MaxRequestSize bytes are read.
	r := &countingReader{r: io.MultiReader(strings.NewReader(`{"op":"create","id":"`), repeat('a'))}
	if _, err := ReadRequest(r); err == nil || !strings.Contains(err.Error(), "larger than") || r.n != MaxRequestSize {
		t.Errorf("endless request: %v after %d bytes", err, r.n)
	}
	// Cut short: a decode error, not a size error.
	if _, err := ReadRequest(strings.NewReader(`{"op":"crea`)); err == nil || !strings.Contains(err.Error(), "decode request") {
		t.Errorf("truncated request: %v", err)
	}
	// The largest request that fits is taken.
	req := Request{Op: OpCreate, ID: "c1"}
	b, _ := json.Marshal(req)
	req.Bundle = strings.Repeat("b", MaxRequestSize-len(b)-len(`,"bundle":""`))
	b, _ = json.Marshal(req)
	if got, err := ReadRequest(bytes.NewReader(b)); err != nil || got.Bundle != req.Bundle || len(b) != MaxRequestSize {
		t.Errorf("request of %d bytes: %v", len(b), err)
	}
}
