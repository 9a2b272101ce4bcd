package procview

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sysvisor/sysvisor/linux/cgroup"
)

// Dev is a block device number.
type Dev struct{ Major, Minor uint32 }

// BlkIO is what a cgroup did on one device: completed requests and bytes.
type BlkIO struct {
	Reads, Writes         uint64
	ReadBytes, WriteBytes uint64
}

// ReadBlkIO reads the container's block I/O per device: cgroup v1's blkio
// throttle counters (the _recursive files, so inner cgroups count; they
// count every bio whatever the I/O scheduler) or v2's io.stat.
func ReadBlkIO(p cgroup.Paths, src cgroup.Source) (map[Dev]BlkIO, error) {
	if dir, ok := p["blkio"]; ok {
		out := map[Dev]BlkIO{}
		bytesFile, err := readFirst(src, filepath.Join(dir, "blkio.throttle.io_service_bytes_recursive"), filepath.Join(dir, "blkio.throttle.io_service_bytes"))
		if err != nil {
			return nil, err
		}
		ios, err := readFirst(src, filepath.Join(dir, "blkio.throttle.io_serviced_recursive"), filepath.Join(dir, "blkio.throttle.io_serviced"))
		if err != nil {
			return nil, err
		}
		parseBlkioV1(bytesFile, out, func(b *BlkIO) (*uint64, *uint64) { return &b.ReadBytes, &b.WriteBytes })
		parseBlkioV1(ios, out, func(b *BlkIO) (*uint64, *uint64) { return &b.Reads, &b.Writes })
		return out, nil
	}
	if dir, ok := p[""]; ok {
		b, err := src.ReadFile(filepath.Join(dir, "io.stat"))
		if err != nil {
			return nil, err
		}
		return ParseIOStat(b), nil
	}
	return nil, fmt.Errorf("no blkio cgroup")
}

func readFirst(src cgroup.Source, paths ...string) ([]byte, error) {
	var err error
	for _, p := range paths {
		var b []byte
		if b, err = src.ReadFile(p); err == nil {
			return b, nil
		}
	}
	return nil, err
}

// parseBlkioV1 folds "MAJ:MIN Read|Write N" lines into out.
func parseBlkioV1(b []byte, out map[Dev]BlkIO, field func(*BlkIO) (r, w *uint64)) {
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) != 3 || (f[1] != "Read" && f[1] != "Write") {
			continue
		}
		d, ok := parseDev(f[0])
		v, err := strconv.ParseUint(f[2], 10, 64)
		if !ok || err != nil {
			continue
		}
		io := out[d]
		r, w := field(&io)
		if f[1] == "Read" {
			*r += v
		} else {
			*w += v
		}
		out[d] = io
	}
}

// ParseIOStat parses cgroup v2 io.stat: "MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. ...".
func ParseIOStat(b []byte) map[Dev]BlkIO {
	out := map[Dev]BlkIO{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		d, ok := parseDev(f[0])
		if !ok {
			continue
		}
		var io BlkIO
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "rbytes":
				io.ReadBytes = n
			case "wbytes":
				io.WriteBytes = n
			case "rios":
				io.Reads = n
			case "wios":
				io.Writes = n
			}
		}
		out[d] = io
	}
	return out
}

func parseDev(s string) (Dev, bool) {
	a, b, ok := strings.Cut(s, ":")
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	return Dev{uint32(ma), uint32(mi)}, ok && err1 == nil && err2 == nil
}

// Diskstats renders /proc/diskstats: the host's devices, in the host's
// order and naming, that the container did I/O on, with its own completed
// reads and writes and sectors (512 bytes) read and written; the fields
// cgroups do not count (merges, times, in flight, discards, flushes) are 0.
// A device it never used is left out, as LXCFS does.
func Diskstats(host []byte, io map[Dev]BlkIO) []byte {
	var out bytes.Buffer
	for _, l := range strings.Split(string(host), "\n") {
		f := strings.Fields(l)
		if len(f) < 14 {
			continue
		}
		ma, err1 := strconv.ParseUint(f[0], 10, 32)
		mi, err2 := strconv.ParseUint(f[1], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		c, ok := io[Dev{uint32(ma), uint32(mi)}]
		if !ok || c == (BlkIO{}) {
			continue
		}
		vals := make([]uint64, len(f)-3)
		vals[0], vals[2] = c.Reads, c.ReadBytes/512
		vals[4], vals[6] = c.Writes, c.WriteBytes/512
		fmt.Fprintf(&out, "%4d %7d %s", ma, mi, f[2])
		for _, v := range vals {
			fmt.Fprintf(&out, " %d", v)
		}
		out.WriteByte('\n')
	}
	return out.Bytes()
}
