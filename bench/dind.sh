#!/bin/bash
# Figure 6: Docker-in-Docker and systemd workloads, a sysvisor system
# container vs the same image under runc with what a "privileged" DinD needs
# (the closest this VM allows: its root lacks CAP_SYS_RESOURCE, so
# --privileged itself fails): CAP_SYS_ADMIN and CAP_NET_ADMIN, seccomp and
# masked paths off, a private cgroup namespace with the cgroup mounts
# remounted read-write, and a host directory for /var/lib/docker.
#
#   inner run    `docker run --rm busybox true` inside the system container,
#                timed inside it (no docker exec in the figure), interleaved
#   dockerd boot `docker run -d IMG dockerd` until `docker info` answers inside
#   systemd boot `docker run -d IMG /sbin/init` until is-system-running says
#                running (or degraded)
#
# Needs tests/env.sh's private engine up (SV_DIR) with sysvisor-runc; builds
# the DinD image if missing (tests/env.sh dind-image). Writes
# $BENCH_OUT/dind.json and prints a table. Pinned counts:
#   BENCH_DIND_WARMUP=2 BENCH_DIND_RUNS=15 BENCH_DIND_BOOTS=5
set -euo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ENVSH=$ROOT/tests/env.sh
OUT=${BENCH_OUT:-$ROOT/bench/out}
WARMUP=${BENCH_DIND_WARMUP:-2}
RUNS=${BENCH_DIND_RUNS:-15}
BOOTS=${BENCH_DIND_BOOTS:-5}
: "${SV_DIR:?SV_DIR: the private engine of tests/env.sh}"
D() { "$ENVSH" docker "$@"; }
mkdir -p "$OUT"

NAMES=()
STORES=()
cleanup() {
	[ ${#NAMES[@]} -eq 0 ] || D rm -f "${NAMES[@]}" >/dev/null 2>&1 || true
	for s in "${STORES[@]}"; do rm -rf "$s"; done
}
trap cleanup EXIT

"$ENVSH" dind-image >/dev/null

now() { date +%s%N; }

# start KIND NAME CMD: a DinD container under sysvisor or the baseline.
start() {
	local kind=$1 name=$2 cmd=$3
	NAMES+=("$name")
	if [ "$kind" = sysvisor ]; then
		D run -d --name "$name" --runtime=sysvisor-runc sysvisor-test/dind "$cmd" >/dev/null
		return
	fi
	local store
	store=$(mktemp -d "$SV_DIR/bench-store.XXXXXX")
	STORES+=("$store")
	local extra=()
	[ "$cmd" = dockerd ] || extra=(--tmpfs /run --tmpfs /run/lock -e container=docker --stop-signal SIGRTMIN+3)
	D run -d --name "$name" --cap-add SYS_ADMIN --cap-add NET_ADMIN --security-opt seccomp=unconfined \
		--security-opt systempaths=unconfined --cgroupns private -v "$store:/var/lib/docker" "${extra[@]}" \
		sysvisor-test/dind sh -c "for d in /sys/fs/cgroup /sys/fs/cgroup/*; do mount -o remount,bind,rw \$d; done; rm -f /var/run/docker.pid; exec $cmd" >/dev/null
}

ready() { # NAME CMD
	if [ "$2" = dockerd ]; then
		D exec "$1" docker info >/dev/null 2>&1
	else
		case "$(D exec "$1" systemctl is-system-running 2>/dev/null)" in running | degraded) return 0 ;; esac
		return 1
	fi
}

# boot KIND CMD: ms from docker run to ready.
boot() {
	local kind=$1 cmd=$2 name t0
	name=bench-boot-$kind-$RANDOM
	t0=$(now)
	start "$kind" "$name" "$cmd"
	for ((i = 0; i < 1200; i++)); do
		ready "$name" "$cmd" && break
		sleep 0.025
	done
	ready "$name" "$cmd" || { echo "bench/dind: $kind $cmd never became ready" >&2; exit 1; }
	echo $((($(now) - t0) / 1000000))
	D rm -f "$name" >/dev/null
}

# stats: median min max of the numbers on stdin
stats() { sort -n | awk '{v[NR]=$1} END{m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "%s %s %s", m, v[1], v[NR]}'; }

declare -A RES
for cmd in dockerd /sbin/init; do
	key=$([ "$cmd" = dockerd ] && echo dockerd_boot_ms || echo systemd_boot_ms)
	: >"$OUT/dind.$key.sysvisor" && : >"$OUT/dind.$key.baseline"
	for ((b = 0; b < BOOTS; b++)); do
		boot sysvisor "$cmd" >>"$OUT/dind.$key.sysvisor"
		boot baseline "$cmd" >>"$OUT/dind.$key.baseline"
	done
	RES[$key.sysvisor]=$(stats <"$OUT/dind.$key.sysvisor")
	RES[$key.baseline]=$(stats <"$OUT/dind.$key.baseline")
done

# inner docker run, interleaved, timed inside the system container.
start sysvisor bench-dind-sv dockerd
start baseline bench-dind-base dockerd
for n in bench-dind-sv bench-dind-base; do
	for ((i = 0; i < 1200; i++)); do ready "$n" dockerd && break; sleep 0.025; done
	D save sysvisor-test/busybox | D exec -i "$n" docker load >/dev/null
done
inner() { D exec "$1" sh -c 's=$(date +%s%N); docker run --rm sysvisor-test/busybox true; echo $(( ($(date +%s%N) - s) / 1000 ))'; }
for ((i = 0; i < WARMUP; i++)); do inner bench-dind-sv >/dev/null; inner bench-dind-base >/dev/null; done
: >"$OUT/dind.inner_run_us.sysvisor" && : >"$OUT/dind.inner_run_us.baseline"
for ((i = 0; i < RUNS; i++)); do
	inner bench-dind-sv >>"$OUT/dind.inner_run_us.sysvisor"
	inner bench-dind-base >>"$OUT/dind.inner_run_us.baseline"
done
RES[inner_run_us.sysvisor]=$(stats <"$OUT/dind.inner_run_us.sysvisor")
RES[inner_run_us.baseline]=$(stats <"$OUT/dind.inner_run_us.baseline")

exec 3>&1
printf '\nFigure 6: Docker in Docker and systemd (baseline: runc with CAP_SYS_ADMIN+NET_ADMIN, seccomp and masks off)\n'
printf '%-34s %22s %22s %8s\n' metric "baseline med (min-max)" "sysvisor med (min-max)" ratio
{
	echo '{"figure": "6", "runs": '"$RUNS"', "boots": '"$BOOTS"', "metrics": ['
	sep=
	for key in inner_run_us dockerd_boot_ms systemd_boot_ms; do
		read -r bm bn bx <<<"${RES[$key.baseline]}"
		read -r sm sn sx <<<"${RES[$key.sysvisor]}"
		ratio=$(awk -v a="$sm" -v b="$bm" 'BEGIN{printf "%.2f", a / b}')
		printf '%-34s %22s %22s %8s\n' "$key" "$bm ($bn-$bx)" "$sm ($sn-$sx)" "$ratio" >&3
		printf '%s{"name": "%s", "baseline": {"median": %s, "min": %s, "max": %s}, "sysvisor": {"median": %s, "min": %s, "max": %s}, "ratio": %s}\n' \
			"$sep" "$key" "$bm" "$bn" "$bx" "$sm" "$sn" "$sx" "$ratio"
		sep=,
	done
	echo ']}'
} >"$OUT/dind.json"
rm -f "$OUT"/dind.*.sysvisor "$OUT"/dind.*.baseline
