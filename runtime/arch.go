package runtime

import (
	goruntime "runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func nativeArch() specs.Arch {
	switch goruntime.GOARCH {
	case "arm64":
		return specs.ArchAARCH64
	case "ppc64le":
		return specs.ArchPPC64LE
	case "s390x":
		return specs.ArchS390X
	case "riscv64":
		return specs.ArchRISCV64
	}
	return specs.ArchX86_64
}
