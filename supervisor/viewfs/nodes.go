package viewfs

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/sysvisor/sysvisor/linux/sysctl"
)

// Node ids are fixed by design, not handed out by the process: the kernel
// keeps the ids it learnt (in its dentries and in containers' bind mounts)
// across a restart of sysvisord, and the successor that adopts the mount
// must answer them the same way. So:
//
//	1                    the root, <run-dir>/views (FUSE_ROOT_ID)
//	slot<<16 | entry     entry of the container given slot by Add
//
// where slot (1 ≤ slot < 2^40) is the caller's, never reused on a mount,
// and entry is a number from entryTable: 0 is the container's directory.
// Nodes are immortal (FORGET needs no bookkeeping) and the generation is
// always 0.
const (
	entryBits = 16
	entryMask = 1<<entryBits - 1
	maxSlot   = 1 << 40
)

func nodeID(slot uint64, entry uint16) uint64 { return slot<<entryBits | uint64(entry) }

func splitNode(id uint64) (slot uint64, entry uint16) { return id >> entryBits, uint16(id & entryMask) }

type kind uint8

const (
	kindDir kind = iota
	kindFile
	kindSysctl
)

// entryTable numbers every directory and file a container's view tree can
// have. APPEND-ONLY: never renumber an entry or reuse a number, not even of
// a view that was dropped, because a newer sysvisord adopting a mount must
// answer the ids an older one gave out. A new view gets the next free
// number of its range: directories below 32, Files from 32, sysctl views
// from 256 (sysctl.Table is not append-only, kernel/pid_max was inserted in
// its middle, so sysctls are numbered here by name, not by index).
// TestEntryTable checks that every view has a number and its directories
// too.
var entryTable = []struct {
	num  uint16
	path string
}{
	{0, ""},
	{1, "proc"},
	{2, "proc/sys"},
	{3, "proc/sys/kernel"},
	{4, "proc/sys/kernel/yama"},
	{5, "proc/sys/vm"},
	{6, "proc/sys/fs"},
	{7, "proc/sys/net"},
	{8, "proc/sys/net/netfilter"},
	{9, "sys"},
	{10, "sys/devices"},
	{11, "sys/devices/system"},
	{12, "sys/devices/system/cpu"},
	{13, "sys/devices/virtual"},
	{14, "sys/devices/virtual/dmi"},
	{15, "sys/devices/virtual/dmi/id"},
	{16, "sys/module"},
	{17, "sys/module/nf_conntrack"},
	{18, "sys/module/nf_conntrack/parameters"},

	{32, "proc/uptime"},
	{33, "proc/meminfo"},
	{34, "proc/cpuinfo"},
	{35, "proc/stat"},
	{36, "proc/loadavg"},
	{37, "proc/swaps"},
	{38, "proc/diskstats"},
	{39, "sys/devices/system/cpu/online"},
	{40, productUUID},

	{256, "proc/sys/kernel/panic"},
	{257, "proc/sys/kernel/panic_on_oops"},
	{258, "proc/sys/kernel/sysrq"},
	{259, "proc/sys/kernel/printk"},
	{260, "proc/sys/kernel/dmesg_restrict"},
	{261, "proc/sys/kernel/kptr_restrict"},
	{262, "proc/sys/kernel/yama/ptrace_scope"},
	{263, "proc/sys/vm/overcommit_memory"},
	{264, "proc/sys/vm/mmap_min_addr"},
	{265, "proc/sys/kernel/pid_max"},
	{266, "proc/sys/fs/file-max"},
	{267, "proc/sys/fs/nr_open"},
	{268, "proc/sys/fs/protected_hardlinks"},
	{269, "proc/sys/fs/protected_symlinks"},
	{270, "proc/sys/fs/protected_fifos"},
	{271, "proc/sys/fs/protected_regular"},
	{272, "proc/sys/net/netfilter/nf_conntrack_max"},
	{273, "sys/module/nf_conntrack/parameters/hashsize"},
}

// tnode is one served entry of a container's tree (the same for every
// container on a host).
type tnode struct {
	num      uint16
	name     string // last path element; "" for the container's directory
	path     string // relative to the container's directory
	kind     kind
	parent   uint16         // the directory's entry (0 for the container's directory itself)
	sysctl   *sysctl.Sysctl // kindSysctl
	children []*tnode       // sorted by name
}

func (n *tnode) child(name string) *tnode {
	for _, c := range n.children {
		if c.name == name {
			return c
		}
	}
	return nil
}

// tree is the served part of entryTable on this host: the views the host
// has (servedFiles, Sysctls) and their directories. Fixed at Start.
type tree struct {
	nodes map[uint16]*tnode
}

func (t *tree) node(entry uint16) *tnode { return t.nodes[entry] }

// buildTree makes the tree of the given view files and sysctls.
func buildTree(files []string, sysctls []*sysctl.Sysctl) (*tree, error) {
	nums := make(map[string]uint16, len(entryTable))
	for _, e := range entryTable {
		nums[e.path] = e.num
	}
	t := &tree{nodes: map[uint16]*tnode{0: {num: 0, kind: kindDir}}}
	add := func(p string, k kind, s *sysctl.Sysctl) error {
		num, ok := nums[p]
		if !ok {
			return fmt.Errorf("view %s has no entry number (see entryTable)", p)
		}
		t.nodes[num] = &tnode{num: num, name: path.Base(p), path: p, kind: k, sysctl: s}
		child := t.nodes[num]
		for dir := path.Dir(p); ; dir = path.Dir(dir) {
			if dir == "." {
				dir = ""
			}
			dnum, ok := nums[dir]
			if !ok {
				return fmt.Errorf("directory %q of view %s has no entry number", dir, p)
			}
			parent, exists := t.nodes[dnum]
			if !exists {
				parent = &tnode{num: dnum, name: path.Base(dir), path: dir, kind: kindDir}
				t.nodes[dnum] = parent
			}
			child.parent = dnum
			if parent.child(child.name) == nil {
				parent.children = append(parent.children, child)
				slices.SortFunc(parent.children, func(a, b *tnode) int { return strings.Compare(a.name, b.name) })
			}
			if exists || dir == "" {
				return nil
			}
			child = parent
		}
	}
	for _, f := range files {
		if err := add(f, kindFile, nil); err != nil {
			return nil, err
		}
	}
	for _, s := range sysctls {
		if err := add(sysctlView(s), kindSysctl, s); err != nil {
			return nil, err
		}
	}
	return t, nil
}
