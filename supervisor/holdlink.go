package supervisor

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sysvisor/sysvisor/holder"
)

// holdLink is sysvisord's side of the holder: what it deposited, so that a
// holder that died and came back (or was replaced) gets everything again.
type holdLink struct {
	runDir string
	binary string // sysvisor-holder to start when none runs; "" never starts one
	log    hclog.Logger

	mu       sync.Mutex
	client   *holder.Client // nil while no holder is reachable
	deposits map[string]deposit
}

// deposit sends its fd with send: listeners' fds are reached through their
// os.File, which may be closed meanwhile (then it fails and nothing is sent).
type deposit func(send func(fd int) error) error

func rawDeposit(fd int) deposit { return func(send func(int) error) error { return send(fd) } }

// dialHolder connects to the run directory's holder, starting one when
// none answers, and returns the link and the fds it held.
func dialHolder(runDir, binary string, log hclog.Logger) (*holdLink, map[string]int, error) {
	l := &holdLink{runDir: runDir, binary: binary, log: log, deposits: map[string]deposit{}}
	c, err := l.connect()
	if err != nil {
		return nil, nil, err
	}
	held, err := c.List()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	l.client = c
	return l, held, nil
}

// underSystemd: the unit sysvisor-holder.service is expected to run the
// holder, and a child of ours would die with our cgroup at a restart.
func underSystemd() bool { return os.Getenv("INVOCATION_ID") != "" }

func (l *holdLink) connect() (*holder.Client, error) {
	c, err := holder.Dial(l.runDir)
	if err == nil {
		return c, nil
	}
	if underSystemd() {
		// The unit may be starting.
		for i := 0; i < 20 && err != nil; i++ {
			time.Sleep(100 * time.Millisecond)
			c, err = holder.Dial(l.runDir)
		}
		if err == nil {
			return c, nil
		}
		l.log.Warn("no sysvisor-holder.service answers; starting a holder in sysvisord's own cgroup, which a `systemctl restart sysvisord` ends (enable sysvisor-holder.service)", "error", err)
	}
	if l.binary == "" {
		return nil, err
	}
	if err := l.spawn(); err != nil {
		return nil, err
	}
	for i := 0; i < 50; i++ {
		if c, err = holder.Dial(l.runDir); err == nil {
			return c, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("started %s but cannot reach it: %w", l.binary, err)
}

// spawn starts a holder in a session of its own; it outlives sysvisord.
func (l *holdLink) spawn() error {
	logPath := filepath.Join(l.runDir, "holder.log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("holder log %s: %w", logPath, err)
	}
	defer out.Close()
	cmd := exec.Command(l.binary, "--run-dir", l.runDir)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start holder %s: %w", l.binary, err)
	}
	l.log.Info("holder started", "pid", cmd.Process.Pid, "binary", l.binary, "log", logPath)
	// Reaped if it dies while we live; after we exit, init reaps it.
	go cmd.Wait()
	return nil
}

// put records d under name and deposits it.
func (l *holdLink) put(name string, d deposit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deposits[name] = d
	if l.client == nil {
		return // deposited when the holder is back
	}
	if err := d(func(fd int) error { return l.client.Put(name, fd) }); err != nil {
		l.log.Warn("holder: deposit", "name", name, "error", err)
	}
}

// del forgets name here and in the holder.
func (l *holdLink) del(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.deposits, name)
	if l.client != nil {
		if err := l.client.Del(name); err != nil {
			l.log.Warn("holder: drop", "name", name, "error", err)
		}
	}
}

// keep watches the holder connection until stop: when the holder goes
// away it reconnects (starting a new holder unless systemd runs it) and
// deposits everything again. Meanwhile sysvisord's own copies keep every
// container served.
func (l *holdLink) keep(done <-chan struct{}) {
	for {
		l.mu.Lock()
		c := l.client
		l.mu.Unlock()
		if c != nil {
			c.Wait()
		}
		select {
		case <-done:
			return
		default:
		}
		l.mu.Lock()
		l.client = nil
		l.mu.Unlock()
		l.log.Error("holder gone: containers are served, but a sysvisord crash now would break them; reconnecting")
		for {
			nc, err := l.connect()
			if err == nil {
				l.mu.Lock()
				l.client = nc
				n := 0
				for name, d := range l.deposits {
					if d(func(fd int) error { return nc.Put(name, fd) }) == nil {
						n++
					}
				}
				l.mu.Unlock()
				l.log.Info("holder back; deposits sent again", "deposits", n)
				break
			}
			select {
			case <-done:
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// close detaches: the holder keeps what it has.
func (l *holdLink) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.client != nil {
		l.client.Close()
	}
}

// holderBinary is the default holder: the one installed or built with
// sysvisord, next to its binary ($PATH could name another build's).
func holderBinary() string {
	self, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(self), "sysvisor-holder")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// sdNotify tells systemd (Type=notify) a state; nothing outside systemd.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}

// status reports the link for `sysvisorctl doctor`.
func (l *holdLink) status() (connected bool, deposits int) {
	if l == nil {
		return false, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.client != nil, len(l.deposits)
}
