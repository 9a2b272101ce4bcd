package handlers

import "runtime"

// nativeAuditArch is the AUDIT_ARCH_* value of the supervisor's own
// architecture. Syscall numbers in the table are native; a trap from a
// compat ABI (i386, x32) carries another arch and other numbers.
var nativeAuditArch = map[string]uint32{
	"amd64":   0xC000003E,
	"arm64":   0xC00000B7,
	"ppc64le": 0xC0000015,
	"s390x":   0x80000016,
	"riscv64": 0xC00000F3,
}[runtime.GOARCH]

// IsNative reports whether arch is the supervisor's native ABI.
func IsNative(arch uint32) bool { return arch == nativeAuditArch }
