// Package sysctl knows the sysctls the kernel does not namespace that a
// system container gets a value of its own for (kernel.panic, fs.file-max,
// ...), and parses writes to them exactly as the kernel's proc handlers do
// (proc_dointvec_minmax, proc_doulongvec_minmax): same accepted syntax, same
// ranges, EINVAL where the kernel says EINVAL. Pure: no I/O.
//
// A per-container value changes what the container reads, never the
// kernel's behaviour: kernel.panic=7 in a container does not make the host
// reboot 7 s after a panic. It exists for software that writes these at
// start and stops when the write fails, as it would on a host.
package sysctl

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/kernel"
)

// Sysctl is one emulated file.
type Sysctl struct {
	// Name is the path under /proc/sys, e.g. "kernel/panic".
	Name string
	// N is the number of values (kernel.printk has 4); 1 for the others.
	N int
	// Ulong: the kernel keeps an unsigned long (proc_doulongvec_minmax:
	// negative input is EINVAL); otherwise an int (proc_dointvec*).
	Ulong bool
	// Min and Max bound each value when Ranged (extra1, extra2).
	Ranged   bool
	Min, Max int64
	// Cap is the capability the kernel's handler asks of a writer on top
	// of the file's mode (kptr_restrict: CAP_SYS_ADMIN), or -1.
	Cap int
	// StickyMax: once at Max it cannot be lowered (Yama's ptrace_scope 3).
	StickyMax bool
	// Param: Name is a module parameter under /sys, not a path under
	// /proc/sys; one unsigned int written as kstrtouint parses it, the
	// whole write consumed, ERANGE on overflow.
	Param bool
	// NamespacedBy is the kernel feature that gives every namespace its
	// own copy of this sysctl, where the kernel has one: the sysctl is
	// then the kernel's, and emulated only where the feature is missing
	// (or its fallback forced).
	NamespacedBy *kernel.Feature
}

// Path is where the file is on a host: /proc/sys/<name>, or /sys/<name>
// for a module parameter.
func (s *Sysctl) Path() string {
	if s.Param {
		return "/sys/" + s.Name
	}
	return "/proc/sys/" + s.Name
}

// Mode is the file's permission bits as the kernel shows them.
func (s *Sysctl) Mode() uint32 {
	if s.Param {
		return 0o600
	}
	return 0o644
}

// Table lists the emulated sysctls. A name whose file the host's kernel
// lacks (no Yama, no MAGIC_SYSRQ) is simply not served. Namespaced sysctls
// (net.core.somaxconn, net.unix.max_dgram_qlen) are not here: the kernel
// gives each namespace its own; kernel.pid_max is, for kernels before 6.14,
// which keep one for all.
var Table = []Sysctl{
	{Name: "kernel/panic", N: 1, Cap: -1},
	{Name: "kernel/panic_on_oops", N: 1, Cap: -1},
	{Name: "kernel/sysrq", N: 1, Cap: -1},
	{Name: "kernel/printk", N: 4, Cap: -1},
	{Name: "kernel/dmesg_restrict", N: 1, Ranged: true, Min: 0, Max: 1, Cap: unix.CAP_SYS_ADMIN},
	{Name: "kernel/kptr_restrict", N: 1, Ranged: true, Min: 0, Max: 2, Cap: unix.CAP_SYS_ADMIN},
	{Name: "kernel/yama/ptrace_scope", N: 1, Ranged: true, Min: 0, Max: 3, Cap: unix.CAP_SYS_PTRACE, StickyMax: true},
	{Name: "vm/overcommit_memory", N: 1, Ranged: true, Min: 0, Max: 2, Cap: -1},
	{Name: "vm/mmap_min_addr", N: 1, Ulong: true, Cap: unix.CAP_SYS_RAWIO},
	// RESERVED_PIDS+1 to PID_MAX_LIMIT on 64-bit.
	{Name: "kernel/pid_max", N: 1, Ranged: true, Min: 301, Max: 4194304, Cap: -1, NamespacedBy: kernel.PidMaxPerPidNS},
	{Name: "fs/file-max", N: 1, Ulong: true, Ranged: true, Min: 0, Max: math.MaxInt64, Cap: -1},
	// sysctl_nr_open_min (BITS_PER_LONG) and sysctl_nr_open_max
	// (INT_MAX rounded down to a multiple of BITS_PER_LONG) on 64-bit.
	{Name: "fs/nr_open", N: 1, Ranged: true, Min: 64, Max: 2147483584, Cap: -1},
	{Name: "fs/protected_hardlinks", N: 1, Ranged: true, Min: 0, Max: 1, Cap: -1},
	{Name: "fs/protected_symlinks", N: 1, Ranged: true, Min: 0, Max: 1, Cap: -1},
	{Name: "fs/protected_fifos", N: 1, Ranged: true, Min: 0, Max: 2, Cap: -1},
	{Name: "fs/protected_regular", N: 1, Ranged: true, Min: 0, Max: 2, Cap: -1},
	// Read-only (0444) outside the initial network namespace: the kernel
	// does not let a container size the host-wide conntrack table.
	{Name: "net/netfilter/nf_conntrack_max", N: 1, Ranged: true, Min: 0, Max: math.MaxInt32, Cap: -1},
	// Host root's only (0600, and EOPNOTSUPP outside the initial network
	// namespace); kube-proxy reads and writes it at start.
	{Name: "module/nf_conntrack/parameters/hashsize", N: 1, Param: true, Ranged: true, Min: 1, Max: math.MaxUint32, Cap: -1},
}

// Lookup returns the entry for a name under /proc/sys.
func Lookup(name string) (*Sysctl, bool) {
	for i := range Table {
		if Table[i].Name == name {
			return &Table[i], true
		}
	}
	return nil, false
}

// pageSize bounds what the kernel reads of one write: PAGE_SIZE-1 bytes
// for a sysctl (__do_proc_dointvec), PAGE_SIZE for a sysfs attribute
// (kernfs_fop_write_iter).
const pageSize = 4096

// tmpBufLen is the kernel's TMPBUFLEN: a number and its sign fit in 21
// characters, and a longer run of digits is refused rather than split.
const tmpBufLen = 22

// ErrInvalid is the kernel's EINVAL for a write. Parse's errors are
// unix.Errno values: EINVAL, or ERANGE for an overflowing module parameter.
var ErrInvalid = unix.EINVAL

// Parse applies a write of data at offset 0 to the current values cur (N of
// them, as Values returns) and returns the new values and how many bytes of
// data the kernel would consume: like the kernel, a write may set fewer
// values than N (the rest keep theirs) and leaves anything after the last
// value it reads unconsumed. An error is ErrInvalid.
//
// Only what the kernel looks at decides: the first page less one byte of a
// sysctl write (the bytes past it count as consumed, as the kernel counts
// them), the first page of a module parameter's, up to its first NUL (the
// kernel parses it as a C string).
func (s *Sysctl) Parse(cur []int64, data []byte) ([]int64, int, error) {
	if s.Param {
		data = data[:min(len(data), pageSize)]
		str := data
		if i := bytes.IndexByte(str, 0); i >= 0 {
			str = str[:i]
		}
		v, err := kstrtou(str, s.Max)
		if err != nil {
			return nil, 0, err
		}
		if s.Ranged && v < s.Min {
			return nil, 0, ErrInvalid
		}
		return []int64{v}, len(data), nil
	}
	out := append([]int64(nil), cur...)
	for len(out) < s.N {
		out = append(out, 0)
	}
	p := data[:min(len(data), pageSize-1)]
	first := true
	for i := 0; i < s.N; i++ {
		p = skipSpaces(p)
		if len(p) == 0 {
			break
		}
		v, neg, rest, err := getLong(p)
		if err != nil {
			return nil, 0, err
		}
		p = rest
		val, err := s.convert(v, neg, i == 0 && s.StickyMax && len(cur) > 0 && cur[0] == s.Max)
		if err != nil {
			return nil, 0, err
		}
		out[i] = val
		first = false
	}
	if first {
		return nil, 0, ErrInvalid // nothing but blanks
	}
	p = skipSpaces(p)
	return out, len(data) - len(p), nil
}

// convert applies the int or unsigned long conversion and the range.
func (s *Sysctl) convert(v uint64, neg, locked bool) (int64, error) {
	var val int64
	switch {
	case s.Ulong:
		if neg || v > math.MaxInt64 {
			// Values above LONG_MAX are not representable here; the
			// Ulong entries are all bounded by LONG_MAX or are
			// addresses, where the kernel's max is ULONG_MAX:
			// refusing them is the one divergence.
			return 0, ErrInvalid
		}
		val = int64(v)
	case neg:
		if v > math.MaxInt32+1 {
			return 0, ErrInvalid
		}
		val = -int64(v)
	default:
		if v > math.MaxInt32 {
			return 0, ErrInvalid
		}
		val = int64(v)
	}
	min := s.Min
	if locked {
		min = s.Max
	}
	if s.Ranged && (val < min || val > s.Max) {
		return 0, ErrInvalid
	}
	return val, nil
}

// kstrtou is the kernel's kstrtouint/kstrtoull on a sysfs write: an
// optional '+', a number in base 0, one optional '\n', nothing else;
// EINVAL on anything else, ERANGE above max.
func kstrtou(data []byte, max int64) (int64, error) {
	p := data
	if len(p) > 0 && p[0] == '+' {
		p = p[1:]
	}
	if len(p) == 0 || hexDigit(p[0]) < 0 || hexDigit(p[0]) > 9 {
		return 0, ErrInvalid
	}
	v, end, err := strtoul(p, 0)
	if err != nil {
		return 0, unix.ERANGE
	}
	rest := p[end:]
	if len(rest) > 0 && rest[0] == '\n' {
		rest = rest[1:]
	}
	if len(rest) > 0 {
		return 0, ErrInvalid
	}
	if v > uint64(max) {
		return 0, unix.ERANGE
	}
	return int64(v), nil
}

func isSpace(c byte) bool {
	// The kernel's isspace(): blank, \t \n \v \f \r.
	return c == ' ' || (c >= '\t' && c <= '\r')
}

func skipSpaces(p []byte) []byte {
	for len(p) > 0 && isSpace(p[0]) {
		p = p[1:]
	}
	return p
}

// getLong is the kernel's proc_get_long with proc_wspace_sep: an optional
// '-', a number in C syntax (base 0: 0x hex, leading 0 octal), at most 21
// characters, followed by the end or by ' ', '\t' or '\n'.
func getLong(p []byte) (uint64, bool, []byte, error) {
	size := len(p)
	n := min(size, tmpBufLen-1)
	tmp := p[:n]
	neg := false
	i := 0
	if tmp[0] == '-' && size > 1 {
		neg = true
		i = 1
	}
	if i >= n || tmp[i] < '0' || tmp[i] > '9' {
		return 0, false, nil, ErrInvalid
	}
	v, end, err := strtoul(tmp, i)
	if err != nil {
		return 0, false, nil, ErrInvalid
	}
	if end == tmpBufLen-1 {
		return 0, false, nil, ErrInvalid // too long to be one number
	}
	if end < size && p[end] != ' ' && p[end] != '\t' && p[end] != '\n' {
		return 0, false, nil, ErrInvalid
	}
	return v, neg, p[end:], nil
}

// strtoul parses tmp from i in base 0 as the kernel's simple_strtoull does,
// returning the value and where the digits end; overflow is an error.
func strtoul(tmp []byte, i int) (uint64, int, error) {
	base := uint64(10)
	if tmp[i] == '0' {
		base = 8
		if i+2 < len(tmp) && tmp[i+1]|0x20 == 'x' && hexDigit(tmp[i+2]) >= 0 {
			base = 16
			i += 2
		}
	}
	var v uint64
	for ; i < len(tmp); i++ {
		d := hexDigit(tmp[i])
		if d < 0 || uint64(d) >= base {
			break
		}
		if v > (math.MaxUint64-uint64(d))/base {
			return 0, 0, errors.New("overflow")
		}
		v = v*base + uint64(d)
	}
	return v, i, nil
}

func hexDigit(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// Values parses the text the kernel shows (or Format wrote) into N values.
func (s *Sysctl) Values(text string) ([]int64, error) {
	f := strings.Fields(text)
	if len(f) != s.N {
		return nil, errors.New("want " + strconv.Itoa(s.N) + " values in " + strconv.Quote(text))
	}
	out := make([]int64, len(f))
	for i, x := range f {
		v, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// Format renders values as the kernel does: tab-separated, one line.
func Format(vals []int64) []byte {
	var b strings.Builder
	for i, v := range vals {
		if i > 0 {
			b.WriteByte('\t')
		}
		b.WriteString(strconv.FormatInt(v, 10))
	}
	b.WriteByte('\n')
	return []byte(b.String())
}
