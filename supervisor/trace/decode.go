package trace

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Memory reads strings from the caller's memory (handlers.Request does, with
// its NOTIF_ID_VALID checks).
type Memory interface {
	ReadString(addr uint64, max int) (string, error)
}

// maxString bounds what a trace copies of one string argument.
const maxString = 256

// arg kinds
const (
	hex = iota
	str
	dfd
	mountFlags
	umountFlags
	dec
	mode
	dev
	seccompOp
)

// layouts: the arguments of each interceptable syscall (x86-64 and arm64
// orders agree for these).
var layouts = map[string][]struct {
	name string
	kind int
}{
	"mount":         {{"source", str}, {"target", str}, {"fstype", str}, {"flags", mountFlags}, {"data", str}},
	"umount2":       {{"target", str}, {"flags", umountFlags}},
	"sysinfo":       {{"info", hex}},
	"fsopen":        {{"fsname", str}, {"flags", hex}},
	"fspick":        {{"dfd", dfd}, {"path", str}, {"flags", hex}},
	"open_tree":     {{"dfd", dfd}, {"path", str}, {"flags", hex}},
	"move_mount":    {{"from_dfd", dfd}, {"from_path", str}, {"to_dfd", dfd}, {"to_path", str}, {"flags", hex}},
	"mount_setattr": {{"dfd", dfd}, {"path", str}, {"flags", hex}, {"attr", hex}, {"size", dec}},
	"mknod":         {{"path", str}, {"mode", mode}, {"dev", dev}},
	"mknodat":       {{"dfd", dfd}, {"path", str}, {"mode", mode}, {"dev", dev}},
	"seccomp":       {{"op", seccompOp}, {"flags", hex}, {"args", hex}},
}

// Decode renders a syscall's arguments: strings copied from mem (at most
// 256 bytes, quoted), flags by name, other values in hex. A syscall it does
// not know gets its six raw arguments.
func Decode(syscall string, args [6]uint64, mem Memory) string {
	l, ok := layouts[syscall]
	if !ok {
		return fmt.Sprintf("%#x, %#x, %#x, %#x, %#x, %#x", args[0], args[1], args[2], args[3], args[4], args[5])
	}
	parts := make([]string, len(l))
	for i, a := range l {
		v := args[i]
		var s string
		switch a.kind {
		case str:
			s = readString(v, mem)
		case dfd:
			if int32(v) == unix.AT_FDCWD {
				s = "AT_FDCWD"
			} else {
				s = strconv.Itoa(int(int32(v)))
			}
		case mountFlags:
			// The kernel ignores the old magic in the high 16 bits.
			if v&0xffff0000 == unix.MS_MGC_VAL {
				s = "MS_MGC_VAL|" + flagNames(v&^0xffff0000, mountFlagNames)
			} else {
				s = flagNames(v, mountFlagNames)
			}
		case umountFlags:
			s = flagNames(v, umountFlagNames)
		case dec:
			s = strconv.FormatUint(v, 10)
		case mode:
			s = fileMode(uint32(v))
		case dev:
			s = fmt.Sprintf("%d:%d", unix.Major(v), unix.Minor(v))
		case seccompOp:
			s = seccompOps[v]
			if s == "" {
				s = strconv.FormatUint(v, 10)
			}
		default:
			s = fmt.Sprintf("%#x", v)
		}
		parts[i] = a.name + "=" + s
	}
	return strings.Join(parts, ", ")
}

func readString(addr uint64, mem Memory) string {
	if addr == 0 {
		return "NULL"
	}
	if mem == nil {
		return fmt.Sprintf("%#x", addr)
	}
	s, err := mem.ReadString(addr, maxString)
	if err == unix.ENAMETOOLONG {
		return fmt.Sprintf("%#x (longer than %d bytes)", addr, maxString)
	}
	if err != nil {
		return fmt.Sprintf("%#x (%v)", addr, err)
	}
	return strconv.Quote(s)
}

var fileTypes = map[uint32]string{
	unix.S_IFREG: "S_IFREG", unix.S_IFCHR: "S_IFCHR", unix.S_IFBLK: "S_IFBLK",
	unix.S_IFIFO: "S_IFIFO", unix.S_IFSOCK: "S_IFSOCK", unix.S_IFDIR: "S_IFDIR", unix.S_IFLNK: "S_IFLNK",
}

// fileMode renders a mknod mode: its file type, then the permission bits.
func fileMode(m uint32) string {
	perm := fmt.Sprintf("%#o", m&0o7777)
	if t, ok := fileTypes[m&unix.S_IFMT]; ok {
		return t + "|" + perm
	}
	if m&unix.S_IFMT == 0 {
		return perm
	}
	return fmt.Sprintf("%#o", m)
}

var seccompOps = map[uint64]string{
	unix.SECCOMP_SET_MODE_STRICT: "SECCOMP_SET_MODE_STRICT", unix.SECCOMP_SET_MODE_FILTER: "SECCOMP_SET_MODE_FILTER",
	unix.SECCOMP_GET_ACTION_AVAIL: "SECCOMP_GET_ACTION_AVAIL", unix.SECCOMP_GET_NOTIF_SIZES: "SECCOMP_GET_NOTIF_SIZES",
}

type flagName struct {
	bit  uint64
	name string
}

var mountFlagNames = []flagName{
	{unix.MS_RDONLY, "MS_RDONLY"}, {unix.MS_NOSUID, "MS_NOSUID"}, {unix.MS_NODEV, "MS_NODEV"},
	{unix.MS_NOEXEC, "MS_NOEXEC"}, {unix.MS_SYNCHRONOUS, "MS_SYNCHRONOUS"}, {unix.MS_REMOUNT, "MS_REMOUNT"},
	{unix.MS_MANDLOCK, "MS_MANDLOCK"}, {unix.MS_DIRSYNC, "MS_DIRSYNC"}, {unix.MS_NOSYMFOLLOW, "MS_NOSYMFOLLOW"},
	{unix.MS_NOATIME, "MS_NOATIME"}, {unix.MS_NODIRATIME, "MS_NODIRATIME"}, {unix.MS_BIND, "MS_BIND"},
	{unix.MS_MOVE, "MS_MOVE"}, {unix.MS_REC, "MS_REC"}, {unix.MS_SILENT, "MS_SILENT"},
	{unix.MS_POSIXACL, "MS_POSIXACL"}, {unix.MS_UNBINDABLE, "MS_UNBINDABLE"}, {unix.MS_PRIVATE, "MS_PRIVATE"},
	{unix.MS_SLAVE, "MS_SLAVE"}, {unix.MS_SHARED, "MS_SHARED"}, {unix.MS_RELATIME, "MS_RELATIME"},
	{unix.MS_KERNMOUNT, "MS_KERNMOUNT"}, {unix.MS_I_VERSION, "MS_I_VERSION"}, {unix.MS_STRICTATIME, "MS_STRICTATIME"},
	{unix.MS_LAZYTIME, "MS_LAZYTIME"},
}

var umountFlagNames = []flagName{
	{unix.MNT_FORCE, "MNT_FORCE"}, {unix.MNT_DETACH, "MNT_DETACH"}, {unix.MNT_EXPIRE, "MNT_EXPIRE"},
	{unix.UMOUNT_NOFOLLOW, "UMOUNT_NOFOLLOW"},
}

func flagNames(v uint64, names []flagName) string {
	if v == 0 {
		return "0"
	}
	var out []string
	for _, f := range names {
		if v&f.bit != 0 {
			out = append(out, f.name)
			v &^= f.bit
		}
	}
	if v != 0 {
		out = append(out, fmt.Sprintf("%#x", v))
	}
	return strings.Join(out, "|")
}
