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

// defaultArches is what a filter built from nothing must cover: the native
// architecture and the compat ones its kernel runs, as Docker's default
// profile lists them. With the native one alone, runc answers every syscall
// of a 32-bit program with ENOSYS.
func defaultArches() []specs.Arch {
	switch goruntime.GOARCH {
	case "amd64":
		return []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64, specs.ArchARM}
	case "s390x":
		return []specs.Arch{specs.ArchS390X, specs.ArchS390}
	}
	return []specs.Arch{nativeArch()}
}
