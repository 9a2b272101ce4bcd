package handlers

import (
	"errors"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sysvisor/sysvisor/linux/cgroup"
	"github.com/sysvisor/sysvisor/linux/notify"
)

// sysinfoHandler answers sysinfo(2) with the container's view: uptime since
// its init started, RAM from its memory cgroup, task count from its pids
// cgroup, load averages sampled over its tasks (the figures its
// /proc/loadavg shows).
type sysinfoHandler struct{}

// ContainerSysinfo computes the container's struct sysinfo from the host's
// and the container's figures. Pure, so it is tested with fixtures.
func ContainerSysinfo(host unix.Sysinfo_t, uptime time.Duration, mem cgroup.Memory, procs uint64) unix.Sysinfo_t {
	si := host
	unit := uint64(host.Unit)
	if unit == 0 {
		unit = 1
	}
	si.Unit = 1
	si.Uptime = int64(uptime / time.Second)
	hostTotal := host.Totalram * unit
	total := hostTotal
	if mem.Limit != 0 && mem.Limit < total {
		total = mem.Limit
	}
	used := mem.Usage
	if mem.InactiveFile < used {
		used -= mem.InactiveFile
	}
	if used > total {
		used = total
	}
	si.Totalram = total
	si.Freeram = total - used
	si.Sharedram = 0
	si.Bufferram = 0
	si.Totalhigh, si.Freehigh = 0, 0
	si.Totalswap, si.Freeswap = 0, 0
	if mem.SwapLimit != 0 {
		hostSwap := host.Totalswap * unit
		swap := mem.SwapLimit
		if hostSwap < swap {
			swap = hostSwap
		}
		si.Totalswap = swap
		if mem.SwapUsage < swap {
			si.Freeswap = swap - mem.SwapUsage
		}
	}
	if procs > 0xffff {
		procs = 0xffff
	}
	if procs > 0 {
		si.Procs = uint16(procs)
	}
	return si
}

func (sysinfoHandler) Inline() {}

func (sysinfoHandler) Handle(req *Request) Response {
	addr := req.Arg(0)
	var host unix.Sysinfo_t
	if err := unix.Sysinfo(&host); err != nil {
		return Fail(unix.EIO)
	}
	c := req.Container
	now, err := BootTime()
	if err != nil {
		return Fail(unix.EIO)
	}
	uptime := now - c.InitStart()
	if uptime < 0 {
		uptime = 0
	}
	cg := c.Cgroups()
	files := c.CgroupFiles()
	mem, err := cg.ReadMemoryFrom(files)
	if err != nil {
		req.Log.Debug("sysinfo: memory cgroup unreadable, host figures used", "error", err)
		mem = cgroup.Memory{Usage: (host.Totalram - host.Freeram) * uint64(host.Unit)}
	}
	procs, _ := cg.ReadPidsFrom(files)
	si := ContainerSysinfo(host, uptime, mem, procs)
	si.Loads = SysinfoLoads(c.LoadAvg())
	b := unsafe.Slice((*byte)(unsafe.Pointer(&si)), unsafe.Sizeof(si))
	if err := req.WriteMem(addr, b); err != nil {
		if errors.Is(err, notify.ErrGone) {
			return Fail(unix.EINTR)
		}
		return Fail(unix.EFAULT)
	}
	return Return(0)
}

// SysinfoLoads converts load averages kept with 11 fractional bits (the
// kernel's FSHIFT, /proc/loadavg's source) to sysinfo's 16 (SI_LOAD_SHIFT).
func SysinfoLoads(avg [3]uint64) [3]uint64 {
	for i := range avg {
		avg[i] <<= 16 - 11
	}
	return avg
}

// BootTime is now on CLOCK_BOOTTIME, the clock /proc/<pid>/stat's start
// time counts on.
func BootTime() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, err
	}
	return time.Duration(ts.Nano()), nil
}
