// Package netmove moves a pod's CNI-configured interfaces from the network
// namespace containerd made (owned by the host's user namespace) into one
// owned by the pod's user namespace, so that the pod's root can configure
// its own network.
//
// The kernel does not carry an interface's addresses or routes across
// namespaces, and sets it down on the way: Move captures them first and
// re-applies them on arrival.
package netmove

import (
	"errors"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Move moves every link except loopback from the network namespace at src
// into the one at dst (both paths to nsfs files: /var/run/netns/x,
// /proc/<pid>/ns/net), then re-applies in dst each link's addresses, MTU,
// up state and routes, and brings dst's loopback up. It returns the names
// of the links moved.
//
// Nothing is moved if a name is taken in dst. A later failure leaves the
// links moved so far in dst, possibly unconfigured; their names are returned
// with the error, as the caller has to know where they are.
func Move(src, dst string) ([]string, error) {
	srcNs, err := open(src)
	if err != nil {
		return nil, err
	}
	defer srcNs.Close()
	dstNs, err := open(dst)
	if err != nil {
		return nil, err
	}
	defer dstNs.Close()
	if same, err := sameFile(srcNs, dstNs); err != nil {
		return nil, err
	} else if same {
		return nil, fmt.Errorf("move links from %s into %s: the same network namespace", src, dst)
	}

	srcH, err := handleAt(srcNs)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", src, err)
	}
	defer srcH.Close()
	dstH, err := handleAt(dstNs)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", dst, err)
	}
	defer dstH.Close()

	links, err := capture(srcH)
	if err != nil {
		return nil, fmt.Errorf("move links from %s: %w", src, err)
	}
	taken, err := dstH.LinkList()
	if err != nil {
		return nil, fmt.Errorf("move links into %s: %w", dst, err)
	}
	for _, l := range links {
		for _, t := range taken {
			if t.Attrs().Name == l.name {
				return nil, fmt.Errorf("move %s into %s: %w: a link of that name is there already", l.name, dst, unix.EEXIST)
			}
		}
	}

	var moved []string
	index := map[int]int{} // in src -> in dst: the kernel renumbers on a clash
	for _, l := range links {
		if err := srcH.LinkSetNsFd(l.link, int(dstNs)); err != nil {
			return moved, fmt.Errorf("move %s into %s: %w", l.name, dst, err)
		}
		moved = append(moved, l.name)
		there, err := dstH.LinkByName(l.name)
		if err != nil {
			return moved, fmt.Errorf("move %s into %s: %w", l.name, dst, err)
		}
		index[l.link.Attrs().Index] = there.Attrs().Index
		l.link = there
	}

	for _, l := range links {
		if err := configure(dstH, l); err != nil {
			return moved, fmt.Errorf("move %s into %s: %w", l.name, dst, err)
		}
	}
	// Gateways must be reachable through a direct route when a route via
	// them is added, and routes may use a gateway on another moved link.
	for _, gw := range []bool{false, true} {
		for _, l := range links {
			for _, r := range l.routes {
				if hasGateway(r) != gw {
					continue
				}
				if err := addRoute(dstH, r, index); err != nil {
					return moved, fmt.Errorf("move %s into %s: route %s: %w", l.name, dst, r, err)
				}
			}
		}
	}

	lo, err := dstH.LinkByName("lo")
	if err == nil {
		err = dstH.LinkSetUp(lo)
	}
	if err != nil {
		return moved, fmt.Errorf("move links into %s: loopback: %w", dst, err)
	}
	return moved, nil
}

// open checks the type by the file rather than the path: a bind mount of a
// namespace (/var/run/netns/x) looks like any other file by its name.
func open(path string) (netns.NsHandle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return ns, fmt.Errorf("network namespace %s: %w", path, err)
	}
	typ, err := unix.IoctlRetInt(int(ns), unix.NS_GET_NSTYPE)
	if err != nil || typ != unix.CLONE_NEWNET {
		ns.Close()
		if err == nil || errors.Is(err, unix.ENOTTY) {
			err = unix.EINVAL
		}
		return netns.None(), fmt.Errorf("%s is not a network namespace: %w", path, err)
	}
	return ns, nil
}

// sameFile compares the namespaces, not the paths: /proc/<pid>/ns/net and a
// bind mount of it name one namespace.
func sameFile(a, b netns.NsHandle) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Fstat(int(a), &sa); err != nil {
		return false, err
	}
	if err := unix.Fstat(int(b), &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}

// handleAt makes a netlink socket in ns. NewHandleAt switches a thread
// into ns and back but ignores a failure to come back; the thread is
// checked here and, should it still be elsewhere, left locked to a
// goroutine that ends, which makes the runtime discard it.
func handleAt(ns netns.NsHandle) (*netlink.Handle, error) {
	type result struct {
		h   *netlink.Handle
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		before, err := netns.Get()
		if err != nil {
			c <- result{nil, err}
			return
		}
		defer before.Close()
		h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		after, aerr := netns.Get()
		if aerr == nil {
			defer after.Close()
			if same, serr := sameFile(before, after); serr == nil && same {
				runtime.UnlockOSThread()
			}
		}
		c <- result{h, err}
	}()
	r := <-c
	return r.h, r.err
}

type link struct {
	name   string
	link   netlink.Link
	up     bool
	mtu    int
	addrs  []netlink.Addr
	routes []netlink.Route
}

var (
	linkLocal6 = mustCIDR("fe80::/10")
	multicast6 = mustCIDR("ff00::/8")
)

func mustCIDR(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// capture reads what the move will drop. Routes are taken from the whole
// main table at once as a multipath route belongs to no single link; it
// goes with the first link it uses.
func capture(h *netlink.Handle) ([]*link, error) {
	all, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	var links []*link
	byIndex := map[int]*link{}
	for _, ln := range all {
		a := ln.Attrs()
		if a.Flags&net.FlagLoopback != 0 || kernelTunnel(ln) {
			continue
		}
		l := &link{name: a.Name, link: ln, up: a.Flags&net.FlagUp != 0, mtu: a.MTU}
		addrs, err := h.AddrList(ln, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			// The kernel makes a new link-local address on arrival.
			if ad.Scope == int(netlink.SCOPE_HOST) || linkLocal6.Contains(ad.IP) {
				continue
			}
			l.addrs = append(l.addrs, ad)
		}
		links = append(links, l)
		byIndex[a.Index] = l
	}

	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		// Kernel routes come back with the addresses; those learnt from
		// router advertisements come back with the next advertisement, and
		// re-added by hand would never expire.
		if r.Protocol == unix.RTPROT_KERNEL || r.Protocol == unix.RTPROT_RA {
			continue
		}
		if r.Dst != nil && (linkLocal6.Contains(r.Dst.IP) || multicast6.Contains(r.Dst.IP)) {
			continue
		}
		var owner *link
		if len(r.MultiPath) == 0 {
			owner = byIndex[r.LinkIndex]
		} else {
			// A route with a next hop left behind cannot be re-created.
			for _, nh := range r.MultiPath {
				l := byIndex[nh.LinkIndex]
				if l == nil {
					owner = nil
					break
				}
				if owner == nil {
					owner = l
				}
			}
		}
		if owner != nil {
			owner.routes = append(owner.routes, r)
		}
	}
	return links, nil
}

// kernelTunnel tells the fallback tunnel devices that a loaded tunnel
// module puts in every namespace (tunl0 on a host with ipip, as Calico
// has): the kernel refuses to move them and dst has its own.
func kernelTunnel(l netlink.Link) bool {
	name := l.Attrs().Name
	switch l.(type) {
	case *netlink.Iptun:
		return name == "tunl0"
	case *netlink.Gretun:
		return name == "gre0" || name == "ip6gre0"
	case *netlink.Gretap:
		return name == "gretap0"
	case *netlink.Sittun:
		return name == "sit0"
	case *netlink.Ip6tnl:
		return name == "ip6tnl0"
	case *netlink.Vti:
		return name == "ip_vti0" || name == "ip6_vti0"
	case *netlink.GenericLink:
		return l.Type() == "erspan" && name == "erspan0"
	}
	return false
}

// Address flags the kernel takes from a request; the others it reports
// (permanent, tentative, ...) are its own state.
const addrFlags = unix.IFA_F_NODAD | unix.IFA_F_HOMEADDRESS | unix.IFA_F_MANAGETEMPADDR | unix.IFA_F_NOPREFIXROUTE

// configure sets the MTU before the addresses as IPv6 turns itself off on a
// link whose MTU is below 1280, and brings the link up only once addressed
// so that it never carries traffic half configured.
func configure(h *netlink.Handle, l *link) error {
	if l.link.Attrs().MTU != l.mtu {
		if err := h.LinkSetMTU(l.link, l.mtu); err != nil {
			return fmt.Errorf("mtu %d: %w", l.mtu, err)
		}
	}
	for _, ad := range l.addrs {
		ad.LinkIndex = 0
		ad.Flags &= addrFlags
		if ad.IP.To4() != nil && ad.Broadcast == nil {
			// netlink would make one up; zero keeps it absent, as it was.
			ad.Broadcast = net.IPv4zero
		}
		if ad.IP.To4() == nil {
			// The address was in use already: repeating duplicate address
			// detection would leave it unusable for a second or so.
			ad.Flags |= unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l.link, &ad); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("address %s: %w", ad.IPNet, err)
		}
	}
	if l.up {
		if err := h.LinkSetUp(l.link); err != nil {
			return fmt.Errorf("up: %w", err)
		}
	}
	return nil
}

func hasGateway(r netlink.Route) bool {
	if r.Gw != nil || r.Via != nil {
		return true
	}
	for _, nh := range r.MultiPath {
		if nh.Gw != nil || nh.Via != nil {
			return true
		}
	}
	return false
}

// addRoute re-creates r with dst's link indexes. Of the flags only onlink
// is a request; linkdown and dead are the kernel's report, and refused.
func addRoute(h *netlink.Handle, r netlink.Route, index map[int]int) error {
	if r.LinkIndex != 0 {
		r.LinkIndex = index[r.LinkIndex]
	}
	r.ILinkIndex = 0
	r.Flags &= unix.RTNH_F_ONLINK
	if len(r.MultiPath) > 0 {
		hops := make([]*netlink.NexthopInfo, len(r.MultiPath))
		for i, nh := range r.MultiPath {
			c := *nh
			c.LinkIndex = index[nh.LinkIndex]
			c.Flags &= unix.RTNH_F_ONLINK
			hops[i] = &c
		}
		r.MultiPath = hops
	}
	if err := h.RouteAdd(&r); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}
