package mountinfo

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// kernelEscape is the kernel's mangle()/seq_escape with " \t\n\\": the
// only bytes show_mountinfo escapes in paths, type and source.
func kernelEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// render writes e as show_mountinfo does, optional fields included.
func render(e Entry, optional []string) string {
	f := []string{
		strconv.Itoa(e.ID), strconv.Itoa(e.Parent),
		fmt.Sprintf("%d:%d", e.Major, e.Minor),
		kernelEscape(e.Root), kernelEscape(e.Mountpoint), e.Opts,
	}
	f = append(f, optional...)
	f = append(f, "-", kernelEscape(e.FSType), kernelEscape(e.Source), e.Super)
	return strings.Join(f, " ") + "\n"
}

// FuzzParseLine: whatever names a container gives its mount points, sources
// and FUSE subtypes, a line the kernel writes for them parses back to
// exactly those values, and to one entry: a blank the kernel does not
// escape (\r, \v, U+0085, ...) must not shift the fields after it, since
// mount decisions are made on them.
func FuzzParseLine(f *testing.F) {
	f.Add(uint32(36), uint32(35), uint32(98), uint32(0), "/mnt1", "/mnt2", "rw,noatime", uint8(1), "ext3", "/dev/root", "rw,errors=continue")
	f.Add(uint32(1), uint32(1), uint32(0), uint32(21), "/", "/proc", "rw,nosuid,nodev,noexec,relatime", uint8(0), "proc", "proc", "rw")
	f.Add(uint32(7), uint32(1), uint32(0), uint32(45), "/a b\tc\\d", "/x y\nz", "ro", uint8(5), "fuse.my fs", "my source", "ro,user_id=0")
	f.Add(uint32(9), uint32(1), uint32(0), uint32(50), "/", "/tmp/a\rro", "rw", uint8(2), "tmpfs", "", "rw\r")
	f.Add(uint32(9), uint32(1), uint32(0), uint32(50), "/", "/proc\v- proc", "rw", uint8(0), "tmpfs", "x\u0085y\u00a0z", "rw")
	f.Fuzz(func(t *testing.T, id, parent, major, minor uint32, root, mp, opts string, tags uint8, fstype, source, super string) {
		// What the kernel can show: paths are absolute, the type is
		// never empty, per-mount and superblock options are its own
		// vocabulary, escaped where a value came from userspace.
		root, mp = "/"+strings.TrimPrefix(root, "/"), "/"+strings.TrimPrefix(mp, "/")
		if strings.ContainsRune(root+mp+fstype+source, 0) || fstype == "" {
			t.Skip()
		}
		opts = "r" + kernelEscape(opts)
		super = "r" + kernelEscape(super)
		var optional []string
		for i, tag := range []string{"shared:%d", "master:%d", "propagate_from:%d", "unbindable"} {
			if tags&(1<<i) != 0 {
				optional = append(optional, strings.ReplaceAll(tag, "%d", strconv.Itoa(int(tags)+i)))
			}
		}
		want := Entry{ID: int(id), Parent: int(parent), Major: major, Minor: minor, Root: root, Mountpoint: mp, Opts: opts, FSType: fstype, Source: source, Super: super}
		line := render(want, optional)
		got, err := Parse(strings.NewReader(line + line))
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if len(got) != 2 || got[0] != want || got[1] != want {
			t.Fatalf("%q:\n got %+v\nwant %+v", line, got, want)
		}
	})
}

// FuzzParse: any text is either refused whole or parsed into entries that
// the kernel's rendering of them parses back to, one per non-empty line;
// ids are never negative (Table keys maps by them as uint64).
func FuzzParse(f *testing.F) {
	f.Add([]byte("22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:5 - proc proc rw\n" +
		"23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw\n"))
	f.Add([]byte("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"))
	f.Add([]byte("40 1 0:50 /a\\040b /c\\011d\\134 rw - tmpfs  rw\r\n\n"))
	f.Add([]byte("-1 +2 0:0 / / rw - x y z\n"))
	f.Add([]byte("1 1 0:0 / / rw -"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Parse(strings.NewReader(string(data)))
		if err != nil {
			if got != nil {
				t.Fatalf("error %v with %d entries", err, len(got))
			}
			return
		}
		lines := 0
		for _, l := range strings.Split(string(data), "\n") {
			if l != "" {
				lines++
			}
		}
		if len(got) != lines {
			t.Fatalf("%d entries from %d lines", len(got), lines)
		}
		var b strings.Builder
		for _, e := range got {
			if e.ID < 0 || e.Parent < 0 {
				t.Fatalf("negative id: %+v", e)
			}
			// Parse keeps optional fields nowhere, so none are written.
			b.WriteString(render(e, nil))
		}
		again, err := Parse(strings.NewReader(b.String()))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("rendered %q:\n got %+v (%v)\nwant %+v", b.String(), again, err, got)
		}
	})
}

// FuzzUnescape: Unescape inverts the kernel's escaping of any byte string,
// and leaves text without a backslash alone.
func FuzzUnescape(f *testing.F) {
	f.Add("/a b\tc\nd\\e")
	f.Add(`\040\0\400\1a\\`)
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if got := Unescape(kernelEscape(s)); got != s {
			t.Fatalf("Unescape(%q) = %q, want %q", kernelEscape(s), got, s)
		}
		if !strings.Contains(s, `\`) && Unescape(s) != s {
			t.Fatalf("Unescape(%q) = %q", s, Unescape(s))
		}
	})
}

// encodeStatmount lays out what the kernel's statmount writes for e: the
// strings in the order it appends them, each with its NUL.
func encodeStatmount(e Entry, attr uint64) []byte {
	var sm statmountBuf
	b := make([]byte, strOff, strOff+64)
	put32 := func(off uintptr, v uint32) { binary.NativeEndian.PutUint32(b[off:], v) }
	put64 := func(off uintptr, v uint64) { binary.NativeEndian.PutUint64(b[off:], v) }
	put64(unsafe.Offsetof(sm.Mask), statmountSBBasic|statmountMntBasic|statmountMntRoot|statmountMntPoint|statmountFSType)
	put32(unsafe.Offsetof(sm.SbDevMajor), e.Major)
	put32(unsafe.Offsetof(sm.SbDevMinor), e.Minor)
	put64(unsafe.Offsetof(sm.MntID), uint64(e.ID))
	put64(unsafe.Offsetof(sm.MntParentID), uint64(e.Parent))
	put64(unsafe.Offsetof(sm.MntAttr), attr)
	for _, s := range []struct {
		off uintptr
		v   string
	}{{unsafe.Offsetof(sm.FsType), e.FSType}, {unsafe.Offsetof(sm.MntRoot), e.Root}, {unsafe.Offsetof(sm.MntPoint), e.Mountpoint}} {
		put32(s.off, uint32(len(b)-int(strOff)))
		b = append(append(b, s.v...), 0)
	}
	put32(unsafe.Offsetof(sm.Size), uint32(len(b)))
	return b
}

// FuzzStatmount: decodeStatmount never reads outside the buffer or past
// the size the kernel reported, returns strings exactly as they lie at
// their offsets up to their NUL, derives the options from the attribute
// bits alone, and accepts every buffer laid out as the kernel lays it out.
func FuzzStatmount(f *testing.F) {
	f.Add(encodeStatmount(Entry{ID: 1 << 32, Parent: 1<<32 + 1, Major: 0, Minor: 21, Root: "/", Mountpoint: "/proc", FSType: "proc"}, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV|unix.MOUNT_ATTR_NOEXEC))
	f.Add(encodeStatmount(Entry{ID: 5, Parent: 5, Root: "/sub dir", Mountpoint: "", FSType: "fuse.x"}, mountAttrRdonly))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// The input's bytes, as the strings of a mount the kernel
		// describes, must decode as that mount.
		s := strings.ReplaceAll(string(b), "\x00", "")
		third := len(s) / 3
		e0 := Entry{ID: len(b), Parent: len(s), Major: uint32(third), FSType: "t" + s[:third], Root: s[third : 2*third], Mountpoint: s[2*third:], Opts: "ro,nodev"}
		if got, err := decodeStatmount(encodeStatmount(e0, mountAttrRdonly|unix.MOUNT_ATTR_NODEV)); err != nil || got != e0 {
			t.Fatalf("kernel layout of %+v decodes as %+v (%v)", e0, got, err)
		}
		e, err := decodeStatmount(b)
		if err != nil {
			return
		}
		var sm statmountBuf
		size := int(binary.NativeEndian.Uint32(b[unsafe.Offsetof(sm.Size):]))
		mask := binary.NativeEndian.Uint64(b[unsafe.Offsetof(sm.Mask):])
		for _, s := range []struct {
			off  uintptr
			bit  uint64
			v    string
			name string
		}{{unsafe.Offsetof(sm.FsType), statmountFSType, e.FSType, "fs_type"}, {unsafe.Offsetof(sm.MntRoot), statmountMntRoot, e.Root, "mnt_root"}, {unsafe.Offsetof(sm.MntPoint), statmountMntPoint, e.Mountpoint, "mnt_point"}} {
			if mask&s.bit == 0 {
				if s.v != "" {
					t.Fatalf("%s not in mask %#x but decoded as %q", s.name, mask, s.v)
				}
				continue
			}
			at := int(strOff) + int(binary.NativeEndian.Uint32(b[s.off:]))
			if at+len(s.v) >= size || string(b[at:at+len(s.v)]) != s.v || b[at+len(s.v)] != 0 {
				t.Fatalf("%s %q is not the string at %d (size %d)", s.name, s.v, at, size)
			}
		}
		attr := binary.NativeEndian.Uint64(b[unsafe.Offsetof(sm.MntAttr):])
		want := Entry{Opts: perMountOpts(map[bool]string{true: "ro", false: "rw"}[attr&mountAttrRdonly != 0] +
			map[bool]string{true: ",nosuid"}[attr&unix.MOUNT_ATTR_NOSUID != 0] +
			map[bool]string{true: ",nodev"}[attr&unix.MOUNT_ATTR_NODEV != 0] +
			map[bool]string{true: ",noexec"}[attr&unix.MOUNT_ATTR_NOEXEC != 0])}
		if e.Opts != want.Opts {
			t.Fatalf("attr %#x gave options %q, want %q", attr, e.Opts, want.Opts)
		}
		// The kernel's own layout of what was decoded decodes the same.
		again, err := decodeStatmount(encodeStatmount(e, attr))
		if err != nil || again != e {
			t.Fatalf("re-encoded %+v decodes as %+v (%v)", e, again, err)
		}
	})
}
