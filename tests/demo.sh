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

step "The host's kernel knobs stay the host's"
D exec "$id" sh -c 'echo "|/bin/evil" > /proc/sys/kernel/core_pattern' 2>&1 | sed 's/^/  /' || true
echo "host core_pattern: $(cat /proc/sys/kernel/core_pattern)"

step "Mounts: what a container manager needs works, what protects the host stays"
show D exec "$id" sh -c 'unshare -p -f --mount-proc sh -c "ps" && mkdir -p /mnt/p && mount -t proc proc /mnt/p && ls -l /mnt/p/timer_list'
D exec "$id" sh -c 'umount /proc/sys; mount -o remount,rw /proc/sys; su nobody -s /bin/sh -c "mount -t tmpfs t /mnt"' 2>&1 | sed 's/^/  /' || true

step "The supervisor's view"
show "$ROOT/bin/sysvisorctl" --run-dir "$SV_DIR/run" ps

printf '\nInner Docker and systemd inside arrive with the Docker-in-Docker work (docs/architecture.md, Roadmap).\n'
D rm -f "$id" "$id2" >/dev/null
