#!/bin/bash
# Docker in Docker and systemd in sysvisor system containers, end to end,
# against a private dockerd (tests/env.sh): no --privileged, no extra flags.
# Prints each step with its time; exits non-zero at the first failure, after
# cleaning up. Checks what it leaves behind: no mounts, cgroups, storage
# directories, ID leases.
#
#   DIND_COUNT=2   system containers checked side by side (default 2)
#   DIND_ROUNDS=2  times the whole check runs (default 2)
#   SV_DIR         the private environment (default /tmp/sysvisor-dind)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export SV_DIR=${SV_DIR:-/tmp/sysvisor-dind}
COUNT=${DIND_COUNT:-2}
ROUNDS=${DIND_ROUNDS:-2}
ENV=$ROOT/tests/env.sh
D() { "$ENV" docker "$@"; }

T0=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b - a}'; }
step_start=
step() {
	step_start=$(date +%s.%N)
	printf '%-72s' "$*" >&2
}
ok() {
	local now
	now=$(date +%s.%N)
	printf ' ok %6.2fs\n' "$(elapsed "$step_start")" >&2
}
fail() {
	printf ' FAIL\n  %s\n' "$*" >&2
	exit 1
}
# expect WANT CMD...: CMD's output (trimmed) must equal WANT.
expect() {
	local want=$1 got
	shift
	got=$("$@" 2>&1) || fail "$* exited $?: $got"
	got=$(echo "$got" | tr -d '\r' | sed -e 's/[[:space:]]*$//')
	[ "$got" = "$want" ] || fail "$*: got '$got', want '$want'"
}
wait_for() { # seconds cmd...
	local n=$(($1 * 10))
	shift
	for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}

cleanup() {
	local code=$?
	[ $code -eq 0 ] || { echo "--- sysvisord log (tail)" >&2; tail -20 "$SV_DIR/log/sysvisord.log" >&2 || true; }
	"$ENV" down >/dev/null 2>&1 || true
	exit $code
}
trap cleanup EXIT

step "private sysvisord + dockerd"
"$ENV" up >/dev/null 2>&1 || fail "tests/env.sh up (log in $SV_DIR/log)"
ok
step "Docker-in-Docker image (debootstrap once, then cached)"
"$ENV" dind-image >/dev/null 2>&1 || fail "tests/env.sh dind-image"
ok
CGP=$("$ENV" cgroup-parent)
# A v2-only host keeps every controller on cgroup2 at /sys/fs/cgroup; a v1
# or hybrid host (this project's CI machine) has them on v1 hierarchies.
V2=
[ -f /sys/fs/cgroup/cgroup.controllers ] && V2=1

# LIMITS, run in an inner container, prints its memory limit, CPU quota and
# period, pids limit and cpuset, from v2's files or v1's (it looks at its
# own /sys/fs/cgroup), in one line: "67108864 50000 100000 100 0".
LIMITS='c=/sys/fs/cgroup
if [ -f $c/cgroup.controllers ]; then echo $(cat $c/memory.max $c/cpu.max $c/pids.max $c/cpuset.cpus)
else echo $(cat $c/memory/memory.limit_in_bytes $c/cpu/cpu.cfs_quota_us $c/cpu/cpu.cfs_period_us $c/pids/pids.max $c/cpuset/cpuset.cpus); fi'
LIMIT_FLAGS="--memory 64m --memory-swap 64m --cpus 0.5 --pids-limit 100 --cpuset-cpus 0"
LIMIT_WANT="67108864 50000 100000 100 0"
# THROTTLED, run in a container with a CPU quota: spins for a second, then
# prints how many periods the kernel throttled it in.
THROTTLED='timeout 1 sh -c "while :; do :; done"; c=/sys/fs/cgroup
[ -f $c/cpu.stat ] || c=$c/cpu; awk "/^nr_throttled/{print \$2}" $c/cpu.stat'

# cgroup_of PID: the process's cgroup, as the host sees it, in the memory
# hierarchy (v1) or cgroup2 (v2).
cgroup_of() {
	if [ -n "$V2" ]; then awk -F: '$1=="0"{print $3}' /proc/"$1"/cgroup; else awk -F: '$2=="memory"{print $3}' /proc/"$1"/cgroup; fi
}
# owners FILE...: their owners' uids on one line.
owners() { echo $(stat -c %u "$@"); }
# container_cgroup NAME: the host directory of system container NAME's own
# cgroup, where its limits are: on v2 the parent of its init's leaf.
container_cgroup() {
	local cg
	cg=$(cgroup_of "$(D inspect -f '{{.State.Pid}}' "$1")")
	if [ -n "$V2" ]; then echo "/sys/fs/cgroup${cg%/init.scope}"; else echo "/sys/fs/cgroup/memory$cg"; fi
}

# inner NAME CMD...: run CMD in system container NAME.
inner() { local n=$1; shift; D exec "$n" "$@"; }

# storage_of NAME: the host directory behind the container's /var/lib/docker.
storage_of() {
	local upper
	upper=$(D inspect -f '{{.GraphDriver.Data.UpperDir}}' "$1")
	echo "$(dirname "$upper")/sysvisor-storage"
}

check_dind() { # NAME
	local n=$1 pid base
	step "[$n] start: docker run -d --runtime=sysvisor-runc IMG dockerd"
	D run -d --name "$n" --runtime=sysvisor-runc sysvisor-test/dind dockerd >/dev/null || fail "docker run"
	wait_for 30 inner "$n" docker info || fail "inner dockerd not ready: $(D logs "$n" 2>&1 | tail -5)"
	ok
	step "[$n] inner engine stores on overlay2, in a directory of its own"
	expect overlay2 inner "$n" docker info -f '{{.Driver}}'
	[ -d "$(storage_of "$n")/docker/overlay2" ] || fail "no storage beside the writable layer"
	ok
	step "[$n] docker load of a local busybox image"
	D save sysvisor-test/busybox | D exec -i "$n" docker load >/dev/null 2>&1 || fail "docker load"
	ok
	step "[$n] docker import of an exported container"
	expect imported inner "$n" sh -c 'docker create --name ex sysvisor-test/busybox >/dev/null &&
		docker export ex | docker import - imported:1 >/dev/null && docker rm ex >/dev/null &&
		docker run --rm imported:1 /bin/echo imported'
	ok
	step "[$n] docker run --rm busybox echo hi"
	expect hi inner "$n" docker run --rm sysvisor-test/busybox echo hi
	ok
	step "[$n] product_uuid: the system container's, in inner containers too; their /sys/class/net their own"
	local uuid
	uuid=$(inner "$n" cat /sys/class/dmi/id/product_uuid) || fail "product_uuid"
	[ "${#uuid}" = 36 ] || fail "product_uuid '$uuid'"
	expect "$uuid eth0 lo" inner "$n" docker run --rm sysvisor-test/busybox \
		sh -c 'echo $(cat /sys/devices/virtual/dmi/id/product_uuid) $(ls /sys/class/net)'
	ok
	step "[$n] docker build (FROM, RUN, COPY)"
	inner "$n" sh -c 'mkdir -p /b && cd /b && echo data >f &&
		printf "FROM sysvisor-test/busybox\nRUN echo built >/built && rm /bin/vi\nCOPY f /f\n" >Dockerfile &&
		DOCKER_BUILDKIT=0 docker build -q -t built . >/dev/null' || fail "docker build"
	expect "built data gone" inner "$n" docker run --rm built sh -c 'echo $(cat /built /f) $(test -e /bin/vi || echo gone)'
	ok
	step "[$n] two inner containers on an inner bridge network"
	inner "$n" docker network create net1 >/dev/null || fail "network create"
	inner "$n" docker run -d --name srv --network net1 sysvisor-test/busybox \
		sh -c 'mkdir -p /www && echo hello >/www/index.html && httpd -f -p 8080 -h /www' >/dev/null || fail "server"
	wait_for 10 inner "$n" docker run --rm --network net1 sysvisor-test/busybox wget -qO- http://srv:8080/ ||
		fail "client cannot reach srv"
	expect hello inner "$n" docker run --rm --network net1 sysvisor-test/busybox wget -qO- http://srv:8080/
	ok
	step "[$n] published port through the inner iptables NAT"
	inner "$n" docker run -d --name pub -p 8081:8080 sysvisor-test/busybox \
		sh -c 'mkdir -p /www && echo nat >/www/index.html && httpd -f -p 8080 -h /www' >/dev/null || fail "publish"
	inner "$n" iptables -t nat -S DOCKER | grep -q 'dport 8081' || fail "no DNAT rule in the inner iptables"
	# From another inner container to the system container's bridge address:
	# DNAT in the system container's own network namespace.
	local gw
	gw=$(inner "$n" docker run --rm sysvisor-test/busybox ip route | awk '/^default/{print $3}')
	wait_for 10 inner "$n" docker run --rm sysvisor-test/busybox wget -qO- "http://$gw:8081/" || fail "no NAT to $gw:8081"
	expect nat inner "$n" docker run --rm sysvisor-test/busybox wget -qO- "http://$gw:8081/"
	ok
	step "[$n] inner --memory --cpus --pids-limit --cpuset-cpus: limits set"
	# shellcheck disable=SC2086
	expect "$LIMIT_WANT" inner "$n" docker run --rm $LIMIT_FLAGS sysvisor-test/busybox sh -c "$LIMITS"
	ok
	step "[$n] inner limits enforced: OOM kill at 64 MiB, throttled at 0.5 CPU, no fork beyond 20 pids"
	local rc=0 thr
	inner "$n" docker run --rm --memory 64m --memory-swap 64m sysvisor-test/busybox \
		sh -c 'x=$(head -c 200000000 /dev/zero | tr "\0" a); echo ${#x}' >/dev/null 2>&1 || rc=$?
	[ "$rc" = 137 ] || fail "200 MB under a 64 MiB limit: exit $rc, want 137 (OOM kill)"
	thr=$(inner "$n" docker run --rm --cpus 0.5 sysvisor-test/busybox sh -c "$THROTTLED" 2>/dev/null) || fail "throttle probe: $thr"
	[ "${thr:-0}" -gt 0 ] 2>/dev/null || fail "a second of spinning under --cpus 0.5: nr_throttled '$thr', want > 0"
	expect refused inner "$n" docker run --rm --pids-limit 20 sysvisor-test/busybox \
		sh -c 'for i in $(seq 40); do sleep 2 & done 2>&1 | grep -q fork && echo refused'
	ok
	step "[$n] inner limits land inside the system container's cgroup"
	local outer inner_cg
	outer=$(cgroup_of "$(D inspect -f '{{.State.Pid}}' "$n")")
	[ -z "$V2" ] || outer=${outer%/init.scope}
	pid=$(inner "$n" docker inspect -f '{{.State.Pid}}' srv)
	pid=$(D top "$n" -eo pid,args | awk -v p="$pid" 'NR>1 && $0 ~ /httpd -f -p 8080/ {print $1; exit}')
	inner_cg=$(cgroup_of "$pid")
	case "$inner_cg" in "$outer"/*) ;; *) fail "inner container's cgroup $inner_cg is not below $outer" ;; esac
	ok
	step "[$n] host sees inner processes under the container's ID range"
	base=$(awk '{print $2; exit}' /proc/"$(D inspect -f '{{.State.Pid}}' "$n")"/uid_map)
	expect "$base" stat -c %u /proc/"$pid"
	[ "$base" -ge 100000 ] || fail "base $base"
	ok
	step "[$n] cgroups delegated: directories the container's, limit files root's"
	local cgd
	cgd=$(container_cgroup "$n")
	expect "$base" stat -c %u "$cgd"
	expect "$base" stat -c %u "$cgd/cgroup.procs"
	if [ -n "$V2" ]; then
		# The container's processes start in a leaf, so its cgroup can
		# hand down the controllers the outer engine gave it.
		expect "$base $base $base 0 0" owners "$cgd/cgroup.subtree_control" "$cgd/init.scope" \
			"$cgd/init.scope/memory.max" "$cgd/memory.max" "$cgd/cpu.max"
		expect "$(cat "$cgd/cgroup.controllers")" cat "$cgd/cgroup.subtree_control"
		expect "" cat "$cgd/cgroup.procs"
		expect "0::/init.scope" inner "$n" sh -c 'grep ^0:: /proc/1/cgroup'
	else
		expect 0 stat -c %u "$cgd/memory.limit_in_bytes"
		local v2
		v2=$(awk -F: '$1=="0"{print $3}' /proc/"$(D inspect -f '{{.State.Pid}}' "$n")"/cgroup)
		if [ -n "$v2" ] && [ -d "/sys/fs/cgroup/unified$v2" ]; then
			expect "$base" stat -c %u "/sys/fs/cgroup/unified$v2"
			expect "$base" stat -c %u "/sys/fs/cgroup/unified$v2/cgroup.procs"
		fi
	fi
	ok
	step "[$n] the system container under its engine: exec, top, stats, update --memory"
	# docker exec: runc puts the process in the container's cgroup, or, where
	# the kernel refuses (v2: it hands controllers down), in init's leaf.
	[ -z "$V2" ] || expect "0::/init.scope" inner "$n" sh -c 'grep ^0:: /proc/self/cgroup'
	local top
	top=$(D top "$n" -eo pid,args) || fail "docker top: $top"
	case "$top" in *"httpd -f -p 8080"*) ;; *) fail "docker top does not list the inner containers' processes" ;; esac
	local st
	st=$(D stats --no-stream --format '{{.MemUsage}} {{.PIDs}}' "$n") || fail "docker stats: $st"
	case "$st" in 0B* | *" 0") fail "docker stats: $st" ;; esac
	D update --memory 1g --memory-swap 2g "$n" >/dev/null || fail "docker update"
	if [ -n "$V2" ]; then expect 1073741824 cat "$cgd/memory.max"; else expect 1073741824 cat "$cgd/memory.limit_in_bytes"; fi
	expect 1048576 inner "$n" awk '/^MemTotal:/{print $2}' /proc/meminfo
	ok
	step "[$n] docker exec, stop, start and restart of an inner container"
	expect hello inner "$n" docker exec srv cat /www/index.html
	inner "$n" docker stop -t 2 srv >/dev/null || fail "stop"
	inner "$n" docker start srv >/dev/null || fail "start"
	inner "$n" docker restart -t 2 srv >/dev/null || fail "restart"
	expect true inner "$n" docker inspect -f '{{.State.Running}}' srv
	ok
	step "[$n] isolation: no host devices, kernel knobs, host cgroup limits"
	local panic
	panic=$(cat /proc/sys/kernel/panic)
	inner "$n" sh -c 'mknod /tmp/sda b 8 0 2>/dev/null && head -c1 /tmp/sda >/dev/null 2>&1' && fail "host disk readable"
	inner "$n" sh -c 'echo 1 >/proc/sysrq-trigger' 2>/dev/null && fail "sysrq-trigger written"
	inner "$n" sh -c 'echo 1 >/sys/module/printk/parameters/time' 2>/dev/null && fail "module parameter written"
	inner "$n" sh -c 'echo 999999999999 >/sys/fs/cgroup/memory/memory.limit_in_bytes' 2>/dev/null && fail "own memory limit raised"
	if [ -n "$V2" ]; then
		inner "$n" sh -c 'echo max >/sys/fs/cgroup/memory.max' 2>/dev/null && fail "own memory limit raised"
		inner "$n" sh -c 'echo max >/sys/fs/cgroup/pids.max' 2>/dev/null && fail "own pids limit raised"
	fi
	inner "$n" sh -c 'echo 1 >/proc/sys/kernel/panic' 2>/dev/null || true
	inner "$n" docker run --rm sysvisor-test/busybox sh -c 'echo 2 >/proc/sys/kernel/panic' 2>/dev/null || true
	expect "$panic" cat /proc/sys/kernel/panic
	ok
}

check_restart() { # NAME: the outer container restarts, the inner images stay
	local n=$1
	step "[$n] system container restart keeps the inner images"
	D restart -t 5 "$n" >/dev/null || fail "restart"
	wait_for 30 inner "$n" docker info || fail "inner dockerd not back"
	expect hi inner "$n" docker run --rm built echo hi
	ok
}

check_volume() { # a user's volume at /var/lib/docker outlives the container
	local n=vol-dind
	step "[$n] -v vol:/var/lib/docker: inner images survive the container's removal"
	D volume create dind-store >/dev/null
	D run -d --name "$n" --runtime=sysvisor-runc -v dind-store:/var/lib/docker sysvisor-test/dind dockerd >/dev/null
	wait_for 30 inner "$n" docker info || fail "inner dockerd not ready"
	expect overlay2 inner "$n" docker info -f '{{.Driver}}'
	D save sysvisor-test/busybox | D exec -i "$n" docker load >/dev/null 2>&1 || fail "docker load"
	D rm -f "$n" >/dev/null
	D run -d --name "$n" --runtime=sysvisor-runc -v dind-store:/var/lib/docker sysvisor-test/dind dockerd >/dev/null
	wait_for 30 inner "$n" docker info || fail "inner dockerd not back"
	expect hi inner "$n" docker run --rm sysvisor-test/busybox echo hi
	D rm -f "$n" >/dev/null
	D volume rm dind-store >/dev/null
	ok
}

check_systemd() { # NAME
	local n=$1 t
	step "[$n] systemd as init: boots to running, no failed units"
	D run -d --name "$n" --runtime=sysvisor-runc sysvisor-test/dind /sbin/init >/dev/null || fail "docker run"
	for ((i = 0; i < 300; i++)); do
		state=$(inner "$n" systemctl is-system-running 2>/dev/null || true)
		case "$state" in running | degraded) break ;; esac
		sleep 0.1
	done
	[ "$state" = running ] || fail "is-system-running: $state; failed: $(inner "$n" systemctl --failed --no-legend --plain 2>&1)"
	ok
	step "[$n] journald works, docker.service runs an inner container"
	inner "$n" sh -c 'echo sysvisor-journal-probe | systemd-cat -t probe' || fail "systemd-cat"
	wait_for 5 inner "$n" sh -c 'journalctl -t probe --no-pager | grep -q sysvisor-journal-probe' || fail "journal"
	expect active inner "$n" systemctl is-active docker
	[ "$(inner "$n" cat /sys/class/dmi/id/product_uuid | wc -c)" = 37 ] || fail "product_uuid under systemd"
	D save sysvisor-test/busybox | D exec -i "$n" docker load >/dev/null 2>&1 || fail "docker load"
	expect hi inner "$n" docker run --rm sysvisor-test/busybox echo hi
	ok
	step "[$n] under systemd: inner limits set and enforced"
	# shellcheck disable=SC2086
	expect "$LIMIT_WANT" inner "$n" docker run --rm $LIMIT_FLAGS sysvisor-test/busybox sh -c "$LIMITS"
	local rc=0
	inner "$n" docker run --rm --memory 64m --memory-swap 64m sysvisor-test/busybox \
		sh -c 'x=$(head -c 200000000 /dev/zero | tr "\0" a); echo ${#x}' >/dev/null 2>&1 || rc=$?
	[ "$rc" = 137 ] || fail "200 MB under a 64 MiB limit: exit $rc, want 137 (OOM kill)"
	ok
	step "[$n] docker stop: systemd shuts down cleanly, well within the timeout"
	t=$(date +%s.%N)
	D stop -t 20 "$n" >/dev/null || fail "stop"
	t=$(elapsed "$t")
	awk -v t="$t" 'BEGIN{exit !(t < 10)}' || fail "stop took ${t}s (SIGTERM ignored?)"
	D logs "$n" 2>&1 | grep -q 'Halting system\|Powering off\|reboot: System halted\|systemd-shutdown' ||
		D logs "$n" 2>&1 | tail -3 >&2
	ok
}

for ((round = 1; round <= ROUNDS; round++)); do
	echo "--- round $round of $ROUNDS: $COUNT Docker-in-Docker containers side by side, one systemd" >&2
	pids=()
	for ((c = 1; c <= COUNT; c++)); do
		# Side by side, each step's output kept apart.
		(check_dind "dind$c" && check_restart "dind$c") >"$SV_DIR/dind$c.out" 2>&1 &
		pids+=($!)
	done
	failed=0
	for ((c = 1; c <= COUNT; c++)); do
		wait "${pids[$((c - 1))]}" || failed=1
		cat "$SV_DIR/dind$c.out" >&2
	done
	[ $failed = 0 ] || exit 1
	check_systemd systemd1
	((round > 1)) || check_volume
	step "remove them all: storage, leases, mounts and cgroups go"
	stores=()
	for ((c = 1; c <= COUNT; c++)); do stores+=("$(storage_of "dind$c")"); done
	D rm -f $(D ps -aq) >/dev/null
	for s in "${stores[@]}"; do [ ! -e "$s" ] || fail "storage $s left behind"; done
	[ -z "$(ls "$SV_DIR/run/containers" 2>/dev/null)" ] || fail "runtime state left: $(ls "$SV_DIR/run/containers")"
	leases=$("$ROOT/bin/sysvisorctl" --run-dir "$SV_DIR/run" ps 2>/dev/null | tail -n +2)
	[ -z "$leases" ] || fail "containers still registered: $leases"
	for d in /sys/fs/cgroup/*/"$CGP" /sys/fs/cgroup/"$CGP"; do
		[ -z "$(find "$d" -mindepth 1 -type d 2>/dev/null)" ] || fail "cgroups left under $d"
	done
	ok
done
echo "all Docker-in-Docker and systemd checks passed in $(elapsed "$T0")s" >&2
