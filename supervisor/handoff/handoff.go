// Package handoff receives seccomp listener fds from an OCI runtime over the
// seccomp-listener protocol (runtime-spec linux.seccomp.listenerPath): one
// ContainerProcessState JSON document per connection, with the fds it names
// passed as SCM_RIGHTS on the first message.
package handoff

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// MaxStateSize bounds the JSON a peer may send; a state document is a few KiB.
const MaxStateSize = 1 << 20

// maxFds is how many fds a handoff may pass (runc passes one): what one
// peer can make sysvisord hold until its deadline. Receive's buffer has
// room for this many in one message; the kernel drops any beyond it.
const maxFds = 16

// SeccompFdName is the name runc gives the listener fd in ContainerProcessState.fds.
const SeccompFdName = specs.SeccompFdName

// Message is one received handoff: the decoded state and the listener fd
// (owned by the caller, who must close it).
type Message struct {
	State     specs.ContainerProcessState
	SeccompFd int
	PeerUID   uint32
}

// Receive reads one handoff from conn until EOF. It closes every fd it was
// sent except the one it returns, so a malformed message leaks nothing.
func Receive(conn *net.UnixConn, timeout time.Duration) (*Message, error) {
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	cred, err := peerCred(conn)
	if err != nil {
		return nil, err
	}
	var (
		data bytes.Buffer
		fds  []int
		buf  = make([]byte, 64<<10)
		oob  = make([]byte, unix.CmsgSpace(maxFds*4))
	)
	closeAll := func(except int) {
		for _, fd := range fds {
			if fd != except {
				unix.Close(fd)
			}
		}
	}
	for {
		n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			got, perr := parseRights(oob[:oobn])
			fds = append(fds, got...)
			if perr != nil {
				closeAll(-1)
				return nil, perr
			}
		}
		// The kernel has closed the fds that did not fit (or found no free
		// fd for): a document naming only those that arrived would
		// otherwise be accepted.
		if flags&unix.MSG_CTRUNC != 0 {
			closeAll(-1)
			return nil, fmt.Errorf("fds lost: control message truncated (more than %d fds in one message, or no free fd)", maxFds)
		}
		if len(fds) > maxFds {
			closeAll(-1)
			return nil, fmt.Errorf("more than %d fds passed", maxFds)
		}
		if n > 0 {
			// A failed read (a deadline) returns n == -1.
			data.Write(buf[:n])
		}
		if data.Len() > MaxStateSize {
			closeAll(-1)
			return nil, fmt.Errorf("container process state larger than %d bytes", MaxStateSize)
		}
		if err != nil || n == 0 {
			if err != nil && !errors.Is(err, net.ErrClosed) && !isEOF(err) {
				closeAll(-1)
				return nil, fmt.Errorf("read container process state: %w", err)
			}
			break
		}
	}
	var st specs.ContainerProcessState
	if err := json.Unmarshal(data.Bytes(), &st); err != nil {
		closeAll(-1)
		return nil, fmt.Errorf("decode container process state: %w", err)
	}
	if len(st.Fds) != len(fds) {
		closeAll(-1)
		return nil, fmt.Errorf("container process state names %d fds but %d were passed", len(st.Fds), len(fds))
	}
	idx := -1
	for i, name := range st.Fds {
		if name == SeccompFdName {
			idx = i
		}
	}
	if idx < 0 {
		closeAll(-1)
		return nil, fmt.Errorf("container process state has no %q fd (fds %v)", SeccompFdName, st.Fds)
	}
	if st.State.ID == "" || st.Pid <= 0 {
		closeAll(-1)
		return nil, fmt.Errorf("container process state lacks id or pid (id %q, pid %d)", st.State.ID, st.Pid)
	}
	closeAll(fds[idx])
	return &Message{State: st, SeccompFd: fds[idx], PeerUID: cred.Uid}, nil
}

func isEOF(err error) bool { return errors.Is(err, io.EOF) }

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range got {
			unix.CloseOnExec(fd)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// PeerUID returns the uid of the process at the other end of conn.
func PeerUID(conn *net.UnixConn) (uint32, error) {
	c, err := peerCred(conn)
	if err != nil {
		return 0, err
	}
	return c.Uid, nil
}

// Send is the runtime side of the protocol, used by tests and benchmarks to
// hand a listener fd to a supervisor the way runc does.
func Send(path string, st specs.ContainerProcessState, fd int) error {
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	defer conn.Close()
	st.Fds = []string{SeccompFdName}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if _, _, err := conn.WriteMsgUnix(b, unix.UnixRights(fd), nil); err != nil {
		return err
	}
	return nil
}
