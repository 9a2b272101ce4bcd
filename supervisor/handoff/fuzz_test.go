package handoff

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Fuzz modes, bits of the mode argument.
const (
	fuzzFdsLater   = 1 << iota // the fds ride on the second chunk, after some data
	fuzzFdsSplit               // the fds come in two SCM_RIGHTS batches
	fuzzOversize               // blanks pad the document past MaxStateSize
	fuzzStall                  // (modes 8-15 only) the peer never closes: only the deadline ends Receive
	fuzzMaxFds     = 24        // beyond the 16 Receive has room for in one message
	fuzzStallAfter = 5 * time.Millisecond
)

// FuzzReceive sends arbitrary bytes and 0..23 real pipe fds through a real
// socketpair, the way a runtime does, cut at an arbitrary point. Receive
// never panics or hangs, fails with an error and no message, accepts only
// a finished document of at most MaxStateSize bytes that names exactly the
// fds sent, returns the fd named seccompFd (close-on-exec), and closes
// every other fd it was sent: the process has the same open fds before and
// after. Seeds: below and
// testdata/fuzz/FuzzReceive.
func FuzzReceive(f *testing.F) {
	valid, _ := json.Marshal(good())
	two, _ := json.Marshal(state("c1", 10, "extra", SeccompFdName))
	sixteen, _ := json.Marshal(state("c1", 10, slices.Repeat([]string{SeccompFdName}, maxFds)...))
	f.Add(valid, uint8(1), uint16(0), uint8(0))
	f.Add(valid, uint8(1), uint16(7), uint8(fuzzFdsLater))
	f.Add(two, uint8(2), uint16(0), uint8(fuzzFdsSplit))
	f.Add(valid, uint8(0), uint16(0), uint8(0))
	f.Add(valid, uint8(2), uint16(0), uint8(0))
	f.Add(valid[:len(valid)/2], uint8(1), uint16(0), uint8(0))
	f.Add(valid, uint8(1), uint16(0), uint8(fuzzOversize))
	f.Add(valid, uint8(1), uint16(0), uint8(fuzzStall))
	f.Add(sixteen, uint8(17), uint16(0), uint8(0))
	twenty, _ := json.Marshal(state("c1", 10, slices.Repeat([]string{SeccompFdName}, 20)...))
	f.Add(twenty, uint8(20), uint16(0), uint8(fuzzFdsSplit))
	f.Add([]byte(`null`), uint8(0), uint16(0), uint8(0))
	f.Add([]byte(`{"fds":["seccompFd"],"pid":1,"state":{"id":"x"}}{}`), uint8(1), uint16(0), uint8(0))

	// The first connection creates the runtime's poller fds; counted
	// later, they would pass for a leak.
	a, b := socketpair(f)
	a.Close()
	b.Close()

	f.Fuzz(func(t *testing.T, payload []byte, nfds uint8, split uint16, mode uint8) {
		before := openFds(t)
		// Each stalled run waits out a deadline: kept rare, so that the
		// fuzzer spends its time on the parsing.
		stall := mode&^(fuzzStall-1) == fuzzStall
		n := int(nfds) % fuzzMaxFds
		if mode&fuzzOversize != 0 {
			payload = append(payload, bytes.Repeat([]byte{' '}, MaxStateSize+1-len(payload)%(MaxStateSize+1))...)
		}
		if n > 0 && len(payload) == 0 {
			payload = []byte{' '} // a stream socket drops fds sent with no data
		}
		cut := 0
		if len(payload) > 0 {
			cut = int(split) % len(payload)
		}
		if mode&fuzzFdsLater != 0 && cut == 0 && n > 0 {
			cut = len(payload) // no second chunk to carry them: they go first
		}
		var chunks [][]byte
		if cut > 0 {
			chunks = append(chunks, payload[:cut])
		}
		if cut < len(payload) {
			chunks = append(chunks, payload[cut:])
		}
		carrier := 0
		if mode&fuzzFdsLater != 0 && len(chunks) > 1 {
			carrier = 1
		}

		a, b := socketpair(t)
		pipes := make([][2]*os.File, n)
		sent := make([]int, n)
		for i := range pipes {
			r, w := pipe(t)
			pipes[i] = [2]*os.File{r, w}
			sent[i] = int(r.Fd())
		}
		batches := [][]int{sent}
		if mode&fuzzFdsSplit != 0 && n > 1 && len(chunks[carrier]) > 1 {
			batches = [][]int{sent[:n/2], sent[n/2:]}
		}
		wrote := make(chan error, 1)
		go func() {
			wrote <- writeChunks(a, chunks, carrier, batches, !stall)
		}()

		timeout := 5 * time.Second
		if stall {
			timeout = fuzzStallAfter
		}
		start := time.Now()
		m, err := Receive(b, timeout)
		took := time.Since(start)
		b.Close() // unblocks a writer Receive stopped reading from
		a.Close()
		<-wrote

		if took > timeout+2*time.Second {
			t.Errorf("Receive took %v with a deadline of %v", took, timeout)
		}
		if err != nil {
			if m != nil {
				t.Errorf("Receive returned a message with error %v", err)
			}
			if !stall && errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Receive waited for its deadline from a peer that closed: %v", err)
			}
			// More than maxFds fds are refused first, for that.
			if mode&fuzzOversize != 0 && n <= maxFds && !strings.Contains(err.Error(), "larger than") && !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("oversize document (%d bytes): %v, want a size error", len(payload), err)
			}
		} else {
			checkMessage(t, m, payload, stall, sent)
		}
		for _, p := range pipes {
			p[0].Close()
			p[1].Close()
		}
		if after := openFds(t); !slices.Equal(before, after) {
			t.Errorf("open fds changed (err %v): %v before, %v after", err, diff(before, after), diff(after, before))
		}
	})
}

// checkMessage checks an accepted handoff and closes its fd.
func checkMessage(t *testing.T, m *Message, payload []byte, stall bool, sent []int) {
	t.Helper()
	defer unix.Close(m.SeccompFd)
	if stall {
		t.Errorf("Receive accepted a document its peer never finished")
	}
	if len(payload) > MaxStateSize {
		t.Errorf("Receive accepted %d bytes, more than %d", len(payload), MaxStateSize)
	}
	// Every fd sent, not only those that fit Receive's buffer: the rest
	// are gone, and the document describes a handoff that did not happen.
	if len(m.State.Fds) != len(sent) {
		t.Fatalf("accepted a document naming %d fds when %d were sent", len(m.State.Fds), len(sent))
	}
	if len(sent) > maxFds {
		t.Errorf("accepted %d fds, more than %d", len(sent), maxFds)
	}
	if m.State.State.ID == "" || m.State.Pid <= 0 {
		t.Errorf("accepted id %q pid %d", m.State.State.ID, m.State.Pid)
	}
	idx := -1
	for i, name := range m.State.Fds {
		if name == SeccompFdName {
			idx = i
		}
	}
	if idx < 0 {
		t.Fatalf("accepted fds %v without %q", m.State.Fds, SeccompFdName)
	}
	if slices.Contains(sent, m.SeccompFd) {
		t.Errorf("returned fd %d is the sender's own, not a received copy", m.SeccompFd)
	}
	var got, want unix.Stat_t
	if err := unix.Fstat(m.SeccompFd, &got); err != nil {
		t.Fatalf("returned fd %d: %v", m.SeccompFd, err)
	}
	if err := unix.Fstat(sent[idx], &want); err != nil {
		t.Fatal(err)
	}
	if got.Dev != want.Dev || got.Ino != want.Ino {
		t.Errorf("returned fd is not the one named %q (fd %d of %v)", SeccompFdName, idx, m.State.Fds)
	}
	if flags, err := unix.FcntlInt(uintptr(m.SeccompFd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("returned fd flags %#x, %v: want close-on-exec", flags, err)
	}
}

// writeChunks sends chunks in order, the fds on chunks[carrier]: each
// batch its own sendmsg, every batch but the last with one byte of the
// chunk. It then closes its side, unless told to stall.
func writeChunks(conn *net.UnixConn, chunks [][]byte, carrier int, batches [][]int, finish bool) error {
	if finish {
		defer conn.CloseWrite()
	}
	for i, c := range chunks {
		if i == carrier {
			for j, fds := range batches {
				part := c
				if j < len(batches)-1 {
					part = c[:1]
				}
				c = c[len(part):]
				var oob []byte
				if len(fds) > 0 {
					oob = unix.UnixRights(fds...)
				}
				n, _, err := conn.WriteMsgUnix(part, oob, nil)
				if err != nil {
					return err
				}
				// One sendmsg can be short on a stream socket.
				if _, err := conn.Write(part[n:]); err != nil {
					return err
				}
			}
			continue
		}
		if _, err := conn.Write(c); err != nil {
			return err
		}
	}
	return nil
}

// diff returns the elements of a not in b.
func diff(a, b []string) []string {
	var d []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			d = append(d, x)
		}
	}
	return d
}

// openFds lists the process's open fds, each as "fd -> target".
func openFds(t *testing.T) []string {
	t.Helper()
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	self := int(d.Fd())
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for _, n := range names {
		if n == strconv.Itoa(self) {
			continue
		}
		target, err := os.Readlink("/proc/self/fd/" + n)
		if err != nil {
			continue // closed meanwhile
		}
		fds = append(fds, n+" -> "+target)
	}
	slices.Sort(fds)
	return fds
}
