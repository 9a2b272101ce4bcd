package netmove

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestMain checks the tests leave the host's network as they found it. Other
// links may come and go meanwhile (this is a shared host): only ours count.
func TestMain(m *testing.M) {
	before := hostLinks()
	code := m.Run()
	for name, index := range hostLinks() {
		if (name == "eth0" || name == "peer0" || name == "other0") && before[name] != index {
			fmt.Fprintf(os.Stderr, "host has a new %s (index %d)\n", name, index)
			code = 1
		}
	}
	os.Exit(code)
}

func hostLinks() map[string]int {
	links, err := netlink.LinkList()
	if err != nil {
		panic(err)
	}
	m := map[string]int{}
	for _, l := range links {
		m[l.Attrs().Name] = l.Attrs().Index
	}
	return m
}

// ns is a network namespace kept alive by a helper process.
type ns struct {
	path string
	pid  int
	h    *netlink.Handle
	fd   netns.NsHandle
}

// newNs starts the helper in its namespace by clone rather than by
// unshare(1): until unshare(1) has called unshare(2), its
// /proc/<pid>/ns/net is the host's.
func newNs(t *testing.T) *ns {
	t.Helper()
	cmd := exec.Command("sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	n := &ns{path: fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid), pid: cmd.Process.Pid}
	fd, err := netns.GetFromPath(n.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fd.Close() })
	n.fd = fd
	self, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if self.Equal(fd) {
		t.Fatalf("%s is the test's own network namespace", n.path)
	}
	n.h, err = netlink.NewHandleAt(fd, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.h.Close)
	return n
}

func (n *ns) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, n.path, err)
	}
	return l
}

func (n *ns) linkNames(t *testing.T) []string {
	t.Helper()
	links, err := n.h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	return names
}

func (n *ns) addr(t *testing.T, l netlink.Link, cidr string, flags int) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	a.Flags = flags
	if err := n.h.AddrAdd(l, a); err != nil {
		t.Fatalf("%s on %s: %v", cidr, l.Attrs().Name, err)
	}
}

func (n *ns) route(t *testing.T, l netlink.Link, dst, gw string) {
	t.Helper()
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(gw)}
	if gw == "" {
		r.Scope = netlink.SCOPE_LINK
	}
	if dst != "" {
		_, r.Dst, _ = net.ParseCIDR(dst)
	}
	if err := n.h.RouteAdd(r); err != nil {
		t.Fatalf("route %q via %q: %v", dst, gw, err)
	}
}

func (n *ns) up(t *testing.T, l netlink.Link) {
	t.Helper()
	if err := n.h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

// setup makes what CNI leaves: eth0 in src, a veth whose other end (peer0)
// is in peer, which also holds 10.88.0.1 and 192.0.2.1 on its loopback to
// be reached through src's routes.
func setup(t *testing.T) (src, dst, peer *ns) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	src, dst, peer = newNs(t), newNs(t), newNs(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", MTU: 1400}, PeerName: "peer0"}
	if err := src.h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if err := src.h.LinkSetNsFd(src.link(t, "peer0"), int(peer.fd)); err != nil {
		t.Fatal(err)
	}

	p := peer.link(t, "peer0")
	peer.addr(t, p, "10.77.0.1/24", 0)
	peer.addr(t, p, "fd77::1/64", unix.IFA_F_NODAD)
	peer.up(t, p)
	lo := peer.link(t, "lo")
	peer.addr(t, lo, "10.88.0.1/32", 0)
	peer.addr(t, lo, "192.0.2.1/32", 0)
	peer.up(t, lo)

	e := src.link(t, "eth0")
	src.addr(t, e, "10.77.0.2/24", 0)
	src.addr(t, e, "fd77::2/64", 0)
	src.up(t, e)
	src.route(t, e, "10.88.0.0/16", "10.77.0.1")
	src.route(t, e, "", "10.77.0.1")
	src.route(t, e, "", "fd77::1")
	return src, dst, peer
}

func TestMove(t *testing.T) {
	src, dst, peer := setup(t)

	moved, err := Move(src.path, dst.path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(moved, []string{"eth0"}) {
		t.Errorf("moved %q, want [eth0]", moved)
	}
	if got := src.linkNames(t); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("left in src: %q, want [lo]", got)
	}
	if got := dst.linkNames(t); !slices.Equal(got, []string{"eth0", "lo"}) {
		t.Errorf("in dst: %q, want [eth0 lo]", got)
	}

	e := dst.link(t, "eth0")
	if e.Attrs().Flags&net.FlagUp == 0 {
		t.Error("eth0 is down in dst")
	}
	if e.Attrs().MTU != 1400 {
		t.Errorf("eth0's MTU in dst is %d, want 1400", e.Attrs().MTU)
	}
	if dst.link(t, "lo").Attrs().Flags&net.FlagUp == 0 {
		t.Error("lo is down in dst")
	}
	checkAddrs(t, dst, e, true)

	routes, err := dst.h.RouteList(e, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"10.88.0.0/16 via 10.77.0.1": false, "default via 10.77.0.1": false, "default via fd77::1": false}
	for _, r := range routes {
		if r.Gw == nil {
			continue
		}
		d := "default"
		if r.Dst != nil && !r.Dst.IP.IsUnspecified() {
			d = r.Dst.String()
		}
		want[d+" via "+r.Gw.String()] = true
	}
	for r, ok := range want {
		if !ok {
			t.Errorf("no route %s dev eth0 in dst; routes: %v", r, routes)
		}
	}

	// Straight after the move, as a pod's sandbox would: IPv6 must not wait
	// for duplicate address detection. The timeouts allow for the 1 s SYN
	// retransmission: a fresh veth, moved or not, drops a first packet now
	// and then.
	port := listen(t, peer)
	for _, to := range []string{"10.77.0.1", "fd77::1", "10.88.0.1", "192.0.2.1"} {
		if err := dial(dst, net.JoinHostPort(to, port)); err != nil {
			t.Errorf("from dst to %s in peer: %v", to, err)
		}
	}
}

// TestMoveLinkGateway: a gateway outside the pod's subnet, reached through
// a route of the pod's own making, as Calico has (a /32 address, default via
// 169.254.1.1, 169.254.1.1 dev eth0 scope link). The kernel lists the
// default route first, which cannot be added before the route to its
// gateway. Also an IPv6 default route with no gateway.
func TestMoveLinkGateway(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	src, dst, peer := newNs(t), newNs(t), newNs(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}
	if err := src.h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if err := src.h.LinkSetNsFd(src.link(t, "peer0"), int(peer.fd)); err != nil {
		t.Fatal(err)
	}
	p := peer.link(t, "peer0")
	peer.addr(t, p, "169.254.1.1/32", 0)
	peer.up(t, p)
	peer.route(t, p, "10.77.0.2/32", "")
	e := src.link(t, "eth0")
	src.addr(t, e, "10.77.0.2/32", 0)
	src.up(t, e)
	src.route(t, e, "169.254.1.1/32", "")
	src.route(t, e, "", "169.254.1.1")
	src.route(t, e, "::/0", "")

	// Routes the kernel reports with the linkdown flag, which it refuses in
	// a request: the host's end is down for the move.
	if err := peer.h.LinkSetDown(p); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		// The kernel's link watch marks them, in its own time.
		routes, err := src.h.RouteList(e, netlink.FAMILY_V4)
		if err == nil && len(routes) > 0 && routes[0].Flags&unix.RTNH_F_LINKDOWN != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("routes in src: %v, %v; want linkdown", routes, err)
		}
	}
	// Links taking eth0's index in dst, which the kernel then renumbers.
	if err := dst.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "x0"}, PeerName: "x1"}); err != nil {
		t.Fatal(err)
	}

	if _, err := Move(src.path, dst.path); err != nil {
		t.Fatal(err)
	}
	if i := dst.link(t, "eth0").Attrs().Index; i == e.Attrs().Index {
		t.Fatalf("eth0 kept its index %d", i)
	}
	peer.up(t, p)
	peer.route(t, p, "10.77.0.2/32", "") // gone with the down
	routes, err := dst.h.RouteList(dst.link(t, "eth0"), netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range routes {
		if r.Protocol != unix.RTPROT_KERNEL {
			got = append(got, fmt.Sprintf("%v via %v", r.Dst, r.Gw))
		}
	}
	want := []string{"0.0.0.0/0 via 169.254.1.1", "169.254.1.1/32 via <nil>", "::/0 via <nil>"}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("routes in dst:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	port := listen(t, peer)
	if err := dial(dst, net.JoinHostPort("169.254.1.1", port)); err != nil {
		t.Errorf("from dst to the gateway: %v", err)
	}
}

// checkAddrs: eth0 holds both addresses, usable (not tentative) in dst.
func checkAddrs(t *testing.T, n *ns, l netlink.Link, usable bool) {
	t.Helper()
	addrs, err := n.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10.77.0.2/24", "fd77::2/64"} {
		i := slices.IndexFunc(addrs, func(a netlink.Addr) bool { return a.IPNet.String() == want })
		if i < 0 {
			t.Errorf("%s has no %s in %s: %v", l.Attrs().Name, want, n.path, addrs)
		} else if usable && addrs[i].Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			t.Errorf("%s on %s is tentative or failed DAD: flags %#x", want, l.Attrs().Name, addrs[i].Flags)
		}
	}
}

// listen answers in peer with what it is sent, on all its addresses.
func listen(t *testing.T, peer *ns) string {
	t.Helper()
	var ln net.Listener
	err := inNs(peer.fd, func() (err error) {
		ln, err = net.Listen("tcp", ":0")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// dial connects from n to addr and has a message echoed back.
func dial(n *ns, addr string) error {
	var c net.Conn
	err := inNs(n.fd, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != "ping\n" {
		return fmt.Errorf("echo %q", b)
	}
	return nil
}

// inNs runs fn on a thread of its own in ns; a thread that fails to come
// back stays locked to its ending goroutine, so the runtime discards it.
func inNs(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer self.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(self); err != nil {
			errc <- err
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// untouched: src still has its configured eth0, nothing reached dst.
func untouched(t *testing.T, src, dst *ns, dstLinks []string) {
	t.Helper()
	e := src.link(t, "eth0")
	checkAddrs(t, src, e, false)
	if got := dst.linkNames(t); !slices.Equal(got, dstLinks) {
		t.Errorf("in dst: %q, want %q", got, dstLinks)
	}
}

func TestMoveSameNamespace(t *testing.T) {
	src, dst, _ := setup(t)
	other := fmt.Sprintf("/proc/%d/task/%d/ns/net", src.pid, src.pid)
	for _, to := range []string{src.path, other} {
		moved, err := Move(src.path, to)
		if err == nil || !strings.Contains(err.Error(), "same network namespace") {
			t.Errorf("Move(%s, %s) = %q, %v; want the same namespace refused", src.path, to, moved, err)
		}
	}
	untouched(t, src, dst, []string{"lo"})
}

func TestMoveNotNetns(t *testing.T) {
	src, dst, _ := setup(t)
	file := filepath.Join(t.TempDir(), "net")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"/proc/self/ns/uts", file, t.TempDir()} {
		for _, args := range [][2]string{{src.path, bad}, {bad, dst.path}} {
			moved, err := Move(args[0], args[1])
			if err == nil || !strings.Contains(err.Error(), bad+" is not a network namespace") {
				t.Errorf("Move(%s, %s) = %q, %v; want %s refused", args[0], args[1], moved, err, bad)
			}
		}
	}
	if _, err := Move(src.path, "/nonexistent"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Move into /nonexistent: %v", err)
	}
	untouched(t, src, dst, []string{"lo"})
}

func TestMoveNameTaken(t *testing.T) {
	src, dst, peer := setup(t)
	// A second network, as Multus adds, whose name is taken in dst: eth0,
	// moved first, must stay too.
	if err := src.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "net1"}, PeerName: "net1p"}); err != nil {
		t.Fatal(err)
	}
	if err := src.h.LinkSetNsFd(src.link(t, "net1p"), int(peer.fd)); err != nil {
		t.Fatal(err)
	}
	// A veth, as the kernel here may have no dummy links.
	if err := dst.h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "net1", MTU: 1300}, PeerName: "other0"}); err != nil {
		t.Fatal(err)
	}
	moved, err := Move(src.path, dst.path)
	if err == nil || !strings.Contains(err.Error(), "move net1 into "+dst.path) || !errors.Is(err, unix.EEXIST) {
		t.Errorf("Move = %q, %v; want net1 refused", moved, err)
	}
	if moved != nil {
		t.Errorf("moved %q", moved)
	}
	untouched(t, src, dst, []string{"lo", "net1", "other0"})
	if got := src.linkNames(t); !slices.Equal(got, []string{"eth0", "lo", "net1"}) {
		t.Errorf("in src: %q", got)
	}
	if mtu := dst.link(t, "net1").Attrs().MTU; mtu != 1300 {
		t.Errorf("dst's net1 is another link now (MTU %d)", mtu)
	}
}
