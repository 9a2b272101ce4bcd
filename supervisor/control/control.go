// Package control is the request/response protocol on sysvisord's control
// socket, spoken by sysvisor-runc (leases, registration) and sysvisorctl.
// One JSON request and one JSON response per connection.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sysvisor/sysvisor/policy"
	"github.com/sysvisor/sysvisor/supervisor/lease"
	"github.com/sysvisor/sysvisor/supervisor/registry"
	"github.com/sysvisor/sysvisor/supervisor/stats"
	"github.com/sysvisor/sysvisor/supervisor/trace"
)

// Socket names under the run directory.
const (
	ControlSocket = "control.sock"
	SeccompSocket = "seccomp.sock"
	DefaultRunDir = "/run/sysvisor"
)

// Ops.
const (
	OpPing     = "ping"
	OpCreate   = "create" // lease IDs and record the container
	OpDelete   = "delete" // stop serving, release the lease, forget the record
	OpPs       = "ps"
	OpVersion  = "version"
	OpInspect  = "inspect"   // one container's full record
	OpLogLevel = "log-level" // change sysvisord's log level at runtime
	// OpPolicyReload re-reads the policy directory (as SIGHUP does).
	OpPolicyReload = "policy-reload"
	// OpStats: per syscall and action, counts and latency quantiles (of
	// one container when ID is set).
	OpStats = "stats"
	// OpTrace streams notifications (of container ID, of Syscall, when
	// set): one Response, then one trace.Event per line until the client
	// closes the connection. See Trace.
	OpTrace = "trace"
	// OpReady (runtime, after runc create): wait until sysvisord has
	// registered the container's init and finished the setup it does in
	// the container (/proc/sys), so runc start runs a finished container.
	OpReady = "ready"
	// OpEngineView (runtime, after its mounts): serve the container's
	// overlay (Rootfs) to the engine, ID-translated, in place of the
	// read-only view at the engine's rootfs path (EnginePath), so that
	// the engine can write into the running container (docker cp).
	OpEngineView = "engine-view"
	// OpEngineViewDrop (runtime, at delete, before it unmounts the
	// container's overlay): stop serving it. sysvisord's fd of the overlay
	// would keep its superblock, and so its upper directory, in use when
	// the engine's overlay is mounted on the same upper again.
	OpEngineViewDrop = "engine-view-drop"
)

// Request is one control call.
type Request struct {
	Op       string `json:"op"`
	ID       string `json:"id,omitempty"`
	Bundle   string `json:"bundle,omitempty"`
	RuncRoot string `json:"runcRoot,omitempty"`
	// Policy (create) names the container's policy; sysvisord resolves it
	// among its active policies and answers it. PolicySource says where
	// the name came from (for the error message); PolicyDir, when the
	// runtime was given one, must be sysvisord's own policy directory.
	Policy       string `json:"policy,omitempty"`
	PolicySource string `json:"policySource,omitempty"`
	PolicyDir    string `json:"policyDir,omitempty"`
	// The spec's masked and read-only paths, for the mounts sysvisord
	// makes on the container's behalf.
	MaskedPaths   []string `json:"maskedPaths,omitempty"`
	ReadonlyPaths []string `json:"readonlyPaths,omitempty"`
	// Level (log-level): trace, debug, info, warn or error.
	Level string `json:"level,omitempty"`
	// Syscall (trace): only this syscall's notifications.
	Syscall string `json:"syscall,omitempty"`
	// Rootfs (engine-view) is the container's own overlay on the host,
	// <run-dir>/containers/<id>/rootfs: sysvisord serves no other path.
	// EnginePath is the engine's rootfs path (…/overlay2/<id>/merged),
	// which must hold the read-only view.
	Rootfs     string `json:"rootfs,omitempty"`
	EnginePath string `json:"enginePath,omitempty"`
	// Pod (create) is the sandbox's id for an app container of a
	// Kubernetes pod: the container shares the sandbox's lease. Sandbox
	// (create) marks a pod's sandbox, the only container others may join.
	Pod     string `json:"pod,omitempty"`
	Sandbox bool   `json:"sandbox,omitempty"`
}

// MaxRequestSize bounds one request. The largest, a create, carries the
// spec's masked and read-only paths: a few KiB.
const MaxRequestSize = 1 << 20

// ReadRequest decodes the request that starts a control connection. It reads
// at most MaxRequestSize bytes, so a client that never ends its request
// costs sysvisord a bounded buffer, not memory until the deadline. Bytes
// after the request may be consumed (a trace client sends none).
func ReadRequest(r io.Reader) (Request, error) {
	lr := &io.LimitedReader{R: r, N: MaxRequestSize}
	var req Request
	if err := json.NewDecoder(lr).Decode(&req); err != nil {
		if lr.N == 0 && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)) {
			return Request{}, fmt.Errorf("request larger than %d bytes", MaxRequestSize)
		}
		return Request{}, fmt.Errorf("decode request: %w", err)
	}
	return req, nil
}

// check refuses what JSON cannot carry: encoding/json replaces bytes that
// are not UTF-8 (a bundle path can hold any) with U+FFFD, so sysvisord
// would act on a different path than the runtime's. Every string field,
// by reflection, so that one added later is not forgotten.
func (r Request) check() error {
	v := reflect.ValueOf(r)
	for i := 0; i < v.NumField(); i++ {
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("json"), ",")
		f := v.Field(i)
		switch {
		case f.Kind() == reflect.String && !utf8.ValidString(f.String()):
			return fmt.Errorf("request field %s: %q is not valid UTF-8", name, f.String())
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
			for j := 0; j < f.Len(); j++ {
				if s := f.Index(j).String(); !utf8.ValidString(s) {
					return fmt.Errorf("request field %s[%d]: %q is not valid UTF-8", name, j, s)
				}
			}
		}
	}
	return nil
}

// ContainerInfo is one row of ps.
type ContainerInfo struct {
	registry.Record
	Notifications uint64  `json:"notifications"`
	Listeners     int32   `json:"listeners"`
	UptimeSeconds float64 `json:"uptimeSeconds,omitempty"`
	// AppArmor (inspect) is the label init runs under, read from the
	// kernel: "sysvisor-default (enforce)", "unconfined"; empty without
	// AppArmor or a running init.
	AppArmor string `json:"apparmor,omitempty"`
}

// Response is the answer; Error is set on failure.
type Response struct {
	Error      string          `json:"error,omitempty"`
	Lease      *lease.Range    `json:"lease,omitempty"`
	Containers []ContainerInfo `json:"containers,omitempty"`
	Version    string          `json:"version,omitempty"`
	Pool       *lease.Range    `json:"pool,omitempty"`
	// Views (create): the directory of the container's /proc and /sys
	// views, and the files under it, each to be bind-mounted at "/"+file.
	// Empty when sysvisord serves no views (disabled, or FUSE failed).
	Views     string   `json:"views,omitempty"`
	ViewFiles []string `json:"viewFiles,omitempty"`
	// Level (log-level): the level before the change.
	Level string `json:"level,omitempty"`
	// Policy (create): the container's policy as sysvisord resolved it;
	// the runtime traps the syscalls it names.
	Policy *policy.Policy `json:"policy,omitempty"`
	// Reload (policy-reload): what happened to each policy.
	Reload *policy.Report `json:"reload,omitempty"`
	// Stats (stats): one row per syscall and action seen.
	Stats []stats.Row `json:"stats,omitempty"`
	// Holder (version): what keeps the containers across a restart.
	Holder *HolderInfo `json:"holder,omitempty"`
}

// HolderInfo is sysvisord's link to sysvisor-holder.
type HolderInfo struct {
	// Connected: a holder keeps copies of what sysvisord deposits.
	Connected bool `json:"connected"`
	// Deposits counts the fds deposited (listeners, journals, views).
	Deposits int `json:"deposits"`
	// Reattached and Lost count the listeners the holder had kept at
	// sysvisord's start: served again, or dropped (their container was
	// deleted meanwhile, or the fd did not match).
	Reattached int `json:"reattached"`
	Lost       int `json:"lost"`
}

// ErrUnavailable wraps failures to reach sysvisord, so callers can say so.
var ErrUnavailable = errors.New("sysvisord is not reachable")

// Call sends req to the control socket under runDir and waits at most
// timeout. A supervisor that is down fails fast (connection refused or no
// socket), never hangs.
func Call(runDir string, req Request, timeout time.Duration) (*Response, error) {
	if err := req.check(); err != nil {
		return nil, err
	}
	path := filepath.Join(runDir, ControlSocket)
	d := net.Dialer{Timeout: timeout}
	conn, err := d.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v (is sysvisord running?)", ErrUnavailable, path, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	var resp Response
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		// sysvisord answers some connections without reading them (a
		// client that is not root) and closes: its reason is still
		// readable.
		if json.NewDecoder(conn).Decode(&resp) == nil && resp.Error != "" {
			return &resp, fmt.Errorf("sysvisord: %s", resp.Error)
		}
		return nil, fmt.Errorf("%w at %s: send: %v", ErrUnavailable, path, err)
	}
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return nil, fmt.Errorf("%w at %s: no answer to %s: %v", ErrUnavailable, path, req.Op, err)
	}
	if resp.Error != "" {
		return &resp, fmt.Errorf("sysvisord: %s", resp.Error)
	}
	return &resp, nil
}

// Trace asks for a live stream of notifications and calls fn with each
// event until ctx is done, fn returns an error (returned, unless it is
// io.EOF) or sysvisord ends the stream.
func Trace(ctx context.Context, runDir string, req Request, fn func(trace.Event) error) error {
	req.Op = OpTrace
	if err := req.check(); err != nil {
		return err
	}
	path := filepath.Join(runDir, ControlSocket)
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("%w at %s: %v (is sysvisord running?)", ErrUnavailable, path, err)
	}
	defer conn.Close()
	// Closing the connection is how the trace ends, on either side.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	dec := json.NewDecoder(conn)
	var resp Response
	err = json.NewEncoder(conn).Encode(req)
	if derr := dec.Decode(&resp); derr != nil {
		if err == nil {
			err = derr
		}
		return fmt.Errorf("%w at %s: no answer to trace: %v", ErrUnavailable, path, err)
	}
	if resp.Error != "" {
		return fmt.Errorf("sysvisord: %s", resp.Error)
	}
	for {
		var ev trace.Event
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("trace stream from sysvisord ended: %w", err)
		}
		if err := fn(ev); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// Listen creates a root-only unix socket at path, replacing a stale one.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
