package holder

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Client is sysvisord's connection to the holder. Its methods are safe for
// concurrent use, except List, which is meant for the start, before Watch.
type Client struct {
	mu   sync.Mutex
	conn *net.UnixConn
}

// Dial connects to the holder of runDir.
func Dial(runDir string) (*Client, error) {
	path := filepath.Join(runDir, Socket)
	conn, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("holder %s: %w", path, err)
	}
	return &Client{conn: conn}, nil
}

// List returns every held fd by name; the caller owns the fds.
func (c *Client) List() (map[string]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	fail := func(err error) (map[string]int, error) {
		for _, fd := range out {
			unix.Close(fd)
		}
		return nil, err
	}
	if _, err := c.conn.Write([]byte("LIST")); err != nil {
		return fail(fmt.Errorf("holder LIST: %w", err))
	}
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.conn.SetReadDeadline(time.Time{})
	buf := make([]byte, maxMsg)
	oob := make([]byte, unix.CmsgSpace(4*4))
	for {
		n, oobn, flags, _, err := c.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return fail(fmt.Errorf("holder LIST: %w", err))
		}
		fds := parseRights(oob[:oobn])
		if n == 0 {
			closeAll(fds)
			return fail(errors.New("holder LIST: connection closed"))
		}
		msg := string(buf[:n])
		if msg == "END" {
			closeAll(fds)
			return out, nil
		}
		name, ok := strings.CutPrefix(msg, "FD\x00")
		if !ok || len(fds) != 1 || flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			closeAll(fds)
			return fail(fmt.Errorf("holder LIST: malformed reply %q", msg))
		}
		if old, dup := out[name]; dup {
			unix.Close(old)
		}
		out[name] = fds[0]
	}
}

// Put deposits a copy of fd as name; the caller keeps fd.
func (c *Client) Put(name string, fd int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, _, err := c.conn.WriteMsgUnix([]byte("PUT\x00"+name), unix.UnixRights(fd), nil); err != nil {
		return fmt.Errorf("holder PUT %s: %w", name, err)
	}
	return nil
}

// Del drops name.
func (c *Client) Del(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.conn.Write([]byte("DEL\x00" + name)); err != nil {
		return fmt.Errorf("holder DEL %s: %w", name, err)
	}
	return nil
}

// Wait blocks until the holder goes away or Close is called.
func (c *Client) Wait() {
	buf := make([]byte, maxMsg)
	for {
		if _, err := c.conn.Read(buf); err != nil {
			return
		}
	}
}

// Close detaches from the holder: it keeps what it holds.
func (c *Client) Close() error { return c.conn.Close() }
