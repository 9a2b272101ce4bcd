#!/bin/sh
# survivor [MEM_KIB]: a system container's init that does, in a loop, what
# its own processes do: a trapped tmpfs mount and umount, reads of the /proc
# views (meminfo shows the memory limit, MEM_KIB, default 98304), uptime, a
# per-container sysctl it sets at start, sysinfo(2); and a reader keeps
# /proc/stat open and re-reads it, as top does. Each round prints
# "round N up SECONDS"; every failure a "FAIL" line. The restart tests run
# it across restarts of sysvisord.
mem=${1:-98304}
mkdir -p /mnt
echo 7 >/proc/sys/kernel/panic || echo "FAIL panic set"
rereader /proc/stat 100 &
n=0
while :; do
	n=$((n + 1))
	e=$(mount -t tmpfs t /mnt 2>&1) || echo "FAIL mount $n: $e"
	e=$(umount /mnt 2>&1) || echo "FAIL umount $n: $e"
	grep -q "^MemTotal: *$mem kB" /proc/meminfo || echo "FAIL meminfo $n: $(head -1 /proc/meminfo 2>&1)"
	u=$(cut -d. -f1 /proc/uptime) || echo "FAIL uptime $n"
	[ "$(cat /proc/sys/kernel/panic 2>&1)" = 7 ] || echo "FAIL panic $n: $(cat /proc/sys/kernel/panic 2>&1)"
	sysinfo | grep -q "^totalram=$((mem * 1024))$" || echo "FAIL sysinfo $n"
	echo "round $n up $u"
	sleep 0.1
done
