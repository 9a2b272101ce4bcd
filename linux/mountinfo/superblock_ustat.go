//go:build linux && (386 || amd64 || arm || mips || mips64 || mips64le || mipsle || ppc || ppc64 || ppc64le || s390x || sparc64)

package mountinfo

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func ustatAlive(dev uint32) bool {
	var buf [64]byte // struct ustat is 32 bytes on 64-bit arches
	_, _, e := unix.Syscall(unix.SYS_USTAT, uintptr(dev), uintptr(unsafe.Pointer(&buf[0])), 0)
	return e != unix.EINVAL
}
