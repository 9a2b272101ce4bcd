package procview

import "fmt"

// swapsHeader is the kernel's first line of /proc/swaps.
const swapsHeader = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"

// Swaps renders /proc/swaps from the figures meminfo shows, so that
// `swapon --show`, `free` and meminfo's SwapTotal/SwapFree agree: no swap
// line when the container has no swap (no swap limit, or a host without
// swap), otherwise one pseudo-device, in kB as the kernel lists them
// (LXCFS's format).
func Swaps(f MemFigures) []byte {
	if f.SwapTotal == 0 {
		return []byte(swapsHeader)
	}
	used := f.SwapTotal - min(f.SwapFree, f.SwapTotal)
	return fmt.Appendf([]byte(swapsHeader), "%-40s%s\t\t%d\t\t%d\t\t%d\n", "none", "virtual", f.SwapTotal/1024, used/1024, -2)
}
