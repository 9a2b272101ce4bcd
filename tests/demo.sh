#!/bin/bash
# The newcomer's demo: a private sysvisord + dockerd with sysvisor-runc
# registered, a system container, and what it looks like from both sides.
# Leaves nothing behind unless SV_KEEP=1 (then: tests/env.sh down).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export SV_DIR=${SV_DIR:-/tmp/sysvisor-demo}
ENV="$ROOT/tests/env.sh"
D() { "$ENV" docker "$@"; }
step() { printf '\n\033[1;34m### %s\033[0m\n' "$*"; }
show() {
	local shown=("$@")
	[ "$1" != D ] || shown[0]=docker
	printf '\033[2m$ %s\033[0m\n' "${shown[*]}"
	"$@"
}

[ "${SV_KEEP:-}" = 1 ] || trap '"$ENV" down >/dev/null 2>&1 || true' EXIT
"$ENV" up

step "A system container: root inside, an exclusive unprivileged ID range outside"
id=$(D run -d --runtime=sysvisor-runc -m 512m sysvisor-test/busybox sleep 3600)
show D exec "$id" sh -c 'echo "id -u: $(id -u)"; echo "uid_map: $(cat /proc/self/uid_map)"; grep ^CapEff /proc/self/status'
pid=$(D inspect -f '{{.State.Pid}}' "$id")
echo "on the host, the container's init runs as: $(grep ^Uid: /proc/$pid/status)"

step "A second container gets a disjoint range"
id2=$(D run -d --runtime=sysvisor-runc sysvisor-test/busybox sleep 3600)
show D exec "$id2" cat /proc/self/uid_map

step "The image is not copied or chowned: the layers on the host stay owned by root"
show D exec "$id" sh -c 'touch /etc/new-file && ls -ln /etc/new-file /bin/busybox'
layer=$(D inspect -f '{{.GraphDriver.Data.LowerDir}}' "$id" | tr ':' '\n' | tail -1)
show stat -c '%n owned by %u:%g on the host' "$layer/bin/busybox"
show D diff "$id"

step "sysinfo(2) answered by sysvisord: the container's memory limit, its own uptime"
show D exec "$id" sysinfo

step "/proc seen from inside: the container's memory limit, CPUs and uptime (FUSE views)"
show D exec "$id" sh -c 'free -m | head -2; echo "nproc: $(nproc)"; echo "uptime: $(cut -d" " -f1 /proc/uptime) s"'
echo "host uptime: $(cut -d' ' -f1 /proc/uptime) s"

step "The host's kernel knobs stay the host's; some become the container's own"
D exec "$id" sh -c 'echo "|/bin/evil" > /proc/sys/kernel/core_pattern' 2>&1 | sed 's/^/  /' || true
echo "host core_pattern: $(cat /proc/sys/kernel/core_pattern)"
show D exec "$id" sysctl -w kernel.panic=7 kernel.shmmax=1234567
echo "host kernel.panic: $(cat /proc/sys/kernel/panic), kernel.shmmax: $(cat /proc/sys/kernel/shmmax)"
show D exec "$id" cat /sys/devices/virtual/dmi/id/product_uuid

step "Mounts: what a container manager needs works, what protects the host stays"
show D exec "$id" sh -c 'unshare -p -f --mount-proc sh -c "ps" && mkdir -p /mnt/p && mount -t proc proc /mnt/p && ls -l /mnt/p/timer_list'
D exec "$id" sh -c 'umount /proc/sys; mount -o remount,rw /proc/sys; su nobody -s /bin/sh -c "mount -t tmpfs t /mnt"' 2>&1 | sed 's/^/  /' || true

step "Docker in Docker: an inner dockerd, no --privileged (image: Debian + docker.io, built once with debootstrap)"
"$ENV" dind-image
show D run -d --name demo-dind --runtime=sysvisor-runc sysvisor-test/dind dockerd
for ((i = 0; i < 300; i++)); do D exec demo-dind docker info >/dev/null 2>&1 && break; sleep 0.1; done
show D exec demo-dind docker info -f 'inner engine: {{.ServerVersion}}, storage driver {{.Driver}}, cgroup driver {{.CgroupDriver}}'
D save sysvisor-test/busybox | D exec -i demo-dind docker load
show D exec demo-dind docker run --rm --memory 64m sysvisor-test/busybox sh -c 'echo "hello from an inner container, memory limit $(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"'
show D exec demo-dind docker run -d --name web -p 8080:80 sysvisor-test/busybox sh -c 'mkdir -p /w && echo served-through-inner-NAT >/w/index.html && httpd -f -p 80 -h /w'
sleep 0.5
show D exec demo-dind docker run --rm sysvisor-test/busybox sh -c 'wget -qO- http://$(ip route | awk "/^default/{print \$3}"):8080/'
inner=$(pgrep -f 'httpd -f -p 80 -h /w' | head -1)
echo "on the host, the inner container's process runs as: $(grep ^Uid: /proc/$inner/status)"

step "systemd as init: boots to running, docker.service inside, docker stop shuts it down cleanly"
show D run -d --name demo-systemd --runtime=sysvisor-runc sysvisor-test/dind /sbin/init
for ((i = 0; i < 300; i++)); do
	case "$(D exec demo-systemd systemctl is-system-running 2>/dev/null)" in running | degraded) break ;; esac
	sleep 0.1
done
show D exec demo-systemd sh -c 'echo "is-system-running: $(systemctl is-system-running)"; systemctl --failed --no-legend; echo "docker.service: $(systemctl is-active docker)"'
start=$(date +%s.%N)
D stop demo-systemd >/dev/null
echo "docker stop took $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}') s (SIGTERM becomes systemd's SIGRTMIN+3)"

step "The supervisor's view"
show "$ROOT/bin/sysvisorctl" --run-dir "$SV_DIR/run" ps

D rm -f "$id" "$id2" demo-dind demo-systemd >/dev/null
