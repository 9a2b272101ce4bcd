package viewfs

import (
	"fmt"

	"github.com/sysvisor/sysvisor/handlers"
	"github.com/sysvisor/sysvisor/linux/cgroup"
	"github.com/sysvisor/sysvisor/supervisor/procview"
)

// Host files the views are derived from. Variables for tests.
var (
	hostMeminfo = "/proc/meminfo"
	hostCpuinfo = "/proc/cpuinfo"
	hostStat    = "/proc/stat"
	hostUptime  = "/proc/uptime"
	hostLoadavg = "/proc/loadavg"
	hostOnline  = "/sys/devices/system/cpu/online"
	hostSwaps   = "/proc/swaps"
	hostDisks   = "/proc/diskstats"
	hostDMIUUID = "/sys/devices/virtual/dmi/id/product_uuid"
)

// hostFile maps a view to the host file it stands for.
func hostFile(name string) string {
	return map[string]string{
		"proc/uptime": hostUptime, "proc/meminfo": hostMeminfo, "proc/cpuinfo": hostCpuinfo,
		"proc/stat": hostStat, "proc/loadavg": hostLoadavg, "sys/devices/system/cpu/online": hostOnline,
		"proc/swaps": hostSwaps, "proc/diskstats": hostDisks, productUUID: hostDMIUUID,
	}[name]
}

// host reads the host's files through fds kept open: a procfs or sysfs
// file re-read with pread at offset 0 is regenerated, for a fraction of the
// cost of open, read and close.
var host cgroup.Files

// Render builds the content of view name for c. A nil c, or one whose init
// has not been registered yet, gets the host's file: nothing in the
// container runs before init's registration.
func Render(c Container, name string) ([]byte, error) {
	hostPath := hostFile(name)
	if hostPath == "" {
		return nil, fmt.Errorf("no view %q", name)
	}
	if name == productUUID && c != nil {
		// The container's identity, not its resources: known from create.
		return procview.ProductUUID(c.ID()), nil
	}
	if c == nil || c.InitStart() == 0 || c.Cgroups() == nil {
		return host.ReadFile(hostPath)
	}
	if name == "proc/loadavg" {
		return procview.Loadavg(c.Load()), nil
	}
	cg, files := c.Cgroups(), c.CgroupFiles()
	switch name {
	case "proc/meminfo", "proc/swaps":
		hostMem, err := host.ReadFile(hostMeminfo)
		if err != nil {
			return nil, err
		}
		mem, err := cg.ReadMemoryFrom(files)
		if err != nil {
			// The same fallback as sysinfo(2): the host's figures.
			return host.ReadFile(hostPath)
		}
		st, _ := procview.ReadMemStat(cg, files)
		total, swap := procview.HostMemTotals(hostMem)
		f := procview.Figures(total, swap, mem, st)
		if name == "proc/swaps" {
			return procview.Swaps(f), nil
		}
		return procview.Meminfo(hostMem, f, st), nil
	case "proc/diskstats":
		hostDisk, err := host.ReadFile(hostDisks)
		if err != nil {
			return nil, err
		}
		io, err := procview.ReadBlkIO(cg, files)
		if err != nil {
			// No blkio accounting: nothing the container did is
			// known, and the host's devices' figures are not its.
			return nil, nil
		}
		return procview.Diskstats(hostDisk, io), nil
	}
	online, err := host.ReadFile(hostOnline)
	if err != nil {
		return nil, err
	}
	hostCPUs, err := procview.ParseCPUList(string(online))
	if err != nil {
		return nil, err
	}
	cpus := procview.ReadCPULimits(cg, files).Visible(hostCPUs)
	switch name {
	case "sys/devices/system/cpu/online":
		return procview.FormatCPUList(cpus), nil
	case "proc/cpuinfo":
		host, err := host.ReadFile(hostCpuinfo)
		if err != nil {
			return nil, err
		}
		return procview.Cpuinfo(host, cpus), nil
	case "proc/stat":
		host, err := host.ReadFile(hostStat)
		if err != nil {
			return nil, err
		}
		return procview.Stat(host, cpus), nil
	default: // proc/uptime
		now, err := handlers.BootTime()
		if err != nil {
			return nil, err
		}
		usage, _ := procview.ReadCPUUsage(cg, files)
		return procview.Uptime(now-c.InitStart(), usage, len(cpus)), nil
	}
}
