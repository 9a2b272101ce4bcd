#!/bin/bash
# A private, self-contained sysvisor environment: sysvisord and a dockerd of
# its own (data root, exec root, socket, pidfile, subuid pool all under $SV_DIR)
# with sysvisor-runc registered. Nothing of the host's Docker is touched.
#
#   tests/env.sh up      start sysvisord + dockerd, build the busybox image
#   tests/env.sh down    stop them, unmount and remove $SV_DIR
#   tests/env.sh dind-image  import the Docker-in-Docker image (built once, cached)
#   tests/env.sh dind-tar    only build (or find) the image's cached rootfs tarball
#   tests/env.sh busybox-tar FILE  the busybox test image's rootfs as a tarball
#   tests/env.sh docker ARGS...   the docker CLI pointed at the private engine
#   tests/env.sh sysvisord-cmd    sysvisord's command line here, one argument a line
#
# SV_SYSVISORD_ARGS adds flags to sysvisord's command line (tests: --no-views).
set -euo pipefail

SV_DIR=${SV_DIR:-/tmp/sysvisor-env}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SV_BIN:-$ROOT/bin}
DOCKER=/usr/bin/docker   # Debian's client matches Debian's engine
export DOCKER_HOST=unix://$SV_DIR/docker.sock
# Every container's cgroup goes under this parent, removed by 'down': the
# host's cgroup tree is left as it was found. The cgroupfs driver is named:
# on a cgroup-v2 host with systemd, dockerd would pick the systemd driver,
# which takes only a slice as parent.
CGROUP_PARENT=sysvisor-$(basename "$SV_DIR")

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

wait_for() { # seconds cmd...
	local n=$(( $1 * 10 )); shift
	for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}

# alive PIDFILE: the process runs and is not a zombie (an orphan's zombie
# lingers where PID 1 does not reap).
alive() {
	local p
	p=$(cat "$1" 2>/dev/null) || return 1
	[ -n "$p" ] && [ "$(ps -o stat= -p "$p" 2>/dev/null | cut -c1)" != Z ] && [ -n "$(ps -o stat= -p "$p" 2>/dev/null)" ]
}

# sysvisord_cmd sets SVD_CMD to sysvisord's command line in this
# environment (bench/run's restart figure starts the same one:
# `tests/env.sh sysvisord-cmd`, one argument per line).
sysvisord_cmd() {
	# shellcheck disable=SC2206 # SV_SYSVISORD_ARGS is a list of flags
	SVD_CMD=("$BIN/sysvisord" --run-dir "$SV_DIR/run" --state-dir "$SV_DIR/state"
		--subuid "$SV_DIR/subuid" --subgid "$SV_DIR/subgid" --policy-dir "$SV_DIR/policies" --log-level "${SV_LOG_LEVEL:-info}"
		${SV_SYSVISORD_ARGS:-})
}

up() {
	mkdir -p "$SV_DIR"/{run,state,docker,exec,log,policies}
	# The pool lives in copies of the ID files, so the host's stay untouched.
	# A host sysvisor pool stays reserved under another name: our private
	# sysvisord must not lease IDs a real one hands out.
	for f in subuid subgid; do
		[ -f "$SV_DIR/$f" ] || { sed 's/^sysvisor:/sysvisor-host:/' "/etc/$f" 2>/dev/null || true; } >"$SV_DIR/$f"
	done
	if ! alive "$SV_DIR/sysvisord.pid"; then
		# A sysvisord just killed may still hold its state lock: its
		# leader is a zombie while its other threads finish exiting.
		# A new one started meanwhile exits at once ("another
		# sysvisord is using state dir").
		[ -e "$SV_DIR/state/sysvisord.lock" ] && flock -w 10 "$SV_DIR/state/sysvisord.lock" true
		# The dead one's socket would pass the wait below.
		rm -f "$SV_DIR/run/control.sock"
		say "starting sysvisord (log: $SV_DIR/log/sysvisord.log)"
		sysvisord_cmd
		setsid "${SVD_CMD[@]}" >>"$SV_DIR/log/sysvisord.log" 2>&1 </dev/null &
		echo $! >"$SV_DIR/sysvisord.pid"
		wait_for 10 test -S "$SV_DIR/run/control.sock" || { cat "$SV_DIR/log/sysvisord.log"; exit 1; }
	fi
	# The cgroupfs driver whatever the host: on a systemd host (the VMs of
	# tests/hosts) dockerd would pick the systemd driver, which takes a
	# slice name, not the cgroup-parent path below.
	cat >"$SV_DIR/daemon.json" <<JSON
{
  "runtimes": {
    "sysvisor-runc": {"path": "$BIN/sysvisor-runc", "runtimeArgs": ["--run-dir", "$SV_DIR/run", "--policy-dir", "$SV_DIR/policies"]}
  },
  "storage-driver": "overlay2",
  "exec-opts": ["native.cgroupdriver=cgroupfs"],
  "cgroup-parent": "/$CGROUP_PARENT"
}
JSON
	if ! alive "$SV_DIR/docker.pid"; then
		say "starting a private dockerd (log: $SV_DIR/log/dockerd.log)"
		# No bridge or iptables: the host's network config stays as it was.
		setsid dockerd --config-file "$SV_DIR/daemon.json" --data-root "$SV_DIR/docker" \
			--exec-root "$SV_DIR/exec" -H "$DOCKER_HOST" --pidfile "$SV_DIR/docker.pid" \
			--bridge=none --iptables=false --ip6tables=false --ip-masq=false --ip-forward=false \
			>>"$SV_DIR/log/dockerd.log" 2>&1 </dev/null &
		wait_for 60 "$DOCKER" info || { tail -50 "$SV_DIR/log/dockerd.log"; exit 1; }
	fi
	image
}

# busybox image from Debian's busybox-static (no registry needed), plus
# static helpers for the tests (tests/testdata/*.c): a sysinfo(2) printer,
# mountcall and mountrace for the mount emulation, seccomplisten, rereader;
# and the scripts there (survivor).
# busybox_tar FILE writes its rootfs as a tarball (tests/hosts imports the
# same into its VMs).
busybox_tar() {
	local r c
	r=$(mktemp -d)
	mkdir -p "$r"/{bin,sbin,etc,tmp,root,proc,sys,dev,usr/bin,var/tmp}
	chmod 1777 "$r/tmp" "$r/var/tmp"
	cp /bin/busybox "$r/bin/busybox"
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"
	done
	for c in "$ROOT"/tests/testdata/*.c; do
		gcc -static -O2 -pthread -o "$r/bin/$(basename "$c" .c)" "$c" || { rm -rf "$r"; return 1; }
	done
	for c in "$ROOT"/tests/testdata/*.sh; do
		install -m 0755 "$c" "$r/bin/$(basename "$c" .sh)"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$r/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
	tar -C "$r" -cf "$1" .
	rm -rf "$r"
}
image() {
	# Labelled with a hash of the helpers' sources, so an edited helper
	# rebuilds the image instead of testing the old binary.
	local sum t
	sum=$(cat "$ROOT"/tests/testdata/*.c "$ROOT"/tests/testdata/*.sh | sha256sum | cut -c1-16)
	[ "$("$DOCKER" image inspect -f '{{index .Config.Labels "sysvisor.testdata"}}' sysvisor-test/busybox 2>/dev/null)" = "$sum" ] && return 0
	say "building image sysvisor-test/busybox"
	t=$(mktemp)
	busybox_tar "$t" || { rm -f "$t"; exit 1; }
	"$DOCKER" import -c 'CMD ["/bin/sh"]' -c "LABEL sysvisor.testdata=$sum" "$t" sysvisor-test/busybox >/dev/null
	rm -f "$t"
}

# The Docker-in-Docker image: Debian bookworm with docker.io, iptables and
# systemd, from debootstrap (no registry is reachable). The rootfs tarball
# is cached under $SYSVISOR_CACHE (default /var/cache/sysvisor) between
# runs: building it takes ~40 s plus the downloads. Delete the file to
# rebuild it. SV_DIND_TAR names another tarball (tests/hosts: a read-only
# disk holding the host's, in a VM without network).
CACHE=${SYSVISOR_CACHE:-/var/cache/sysvisor}
DIND_TAR=${SV_DIND_TAR:-$CACHE/dind-bookworm.tar}
dind_tar() {
	if [ ! -s "$DIND_TAR" ] && [ ! -b "$DIND_TAR" ]; then
		say "building the Docker-in-Docker rootfs with debootstrap (cached in $DIND_TAR)"
		mkdir -p "$CACHE"
		local r
		r=$(mktemp -d "$CACHE/build.XXXXXX")
		debootstrap --variant=minbase \
			--include=docker.io,iptables,systemd,systemd-sysv,procps \
			bookworm "$r" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 ||
			{ tail -20 "$CACHE/debootstrap.log" >&2; rm -rf "$r"; exit 1; }
		rm -rf "$r"/var/cache/apt/archives/*.deb
		tar -C "$r" -cf "$DIND_TAR.tmp" .
		mv "$DIND_TAR.tmp" "$DIND_TAR"
		rm -rf "$r"
	fi
}
dind_image() {
	"$DOCKER" image inspect sysvisor-test/dind >/dev/null 2>&1 && return 0
	dind_tar
	say "importing image sysvisor-test/dind"
	"$DOCKER" import -c 'CMD ["/sbin/init"]' "$DIND_TAR" sysvisor-test/dind >/dev/null
}

down() {
	[ -d "$SV_DIR" ] || return 0
	if alive "$SV_DIR/docker.pid"; then
		say "stopping dockerd"
		"$DOCKER" ps -aq | xargs -r "$DOCKER" rm -f >/dev/null 2>&1 || true
		kill "$(cat "$SV_DIR/docker.pid")" 2>/dev/null || true
		wait_for 30 bash -c "$(declare -f alive); ! alive $SV_DIR/docker.pid" || kill -9 "$(cat "$SV_DIR/docker.pid")" 2>/dev/null || true
	fi
	# dockerd starts its own containerd; it exits with dockerd, but not always at once.
	pkill -f "containerd --config $SV_DIR/exec" 2>/dev/null || true
	if alive "$SV_DIR/sysvisord.pid"; then
		say "stopping sysvisord"
		kill "$(cat "$SV_DIR/sysvisord.pid")"
		wait_for 10 bash -c "$(declare -f alive); ! alive $SV_DIR/sysvisord.pid" || true
	fi
	# sysvisord started a holder of its own, which outlives it by design.
	if alive "$SV_DIR/run/holder.pid"; then
		say "stopping sysvisor-holder"
		kill "$(cat "$SV_DIR/run/holder.pid")" 2>/dev/null || true
		wait_for 10 bash -c "$(declare -f alive); ! alive $SV_DIR/run/holder.pid" || true
	fi
	for d in /sys/fs/cgroup/*/"$CGROUP_PARENT" /sys/fs/cgroup/"$CGROUP_PARENT"; do
		[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	# Deepest first, then the tree itself.
	{ grep -F " $SV_DIR" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
	rm -rf "$SV_DIR"
}

case "${1:-}" in
up) up ;;
cgroup-parent) echo "$CGROUP_PARENT" ;;
dind-image) dind_image ;;
dind-tar) dind_tar ;;
busybox-tar) busybox_tar "$2" ;;
down) down ;;
sysvisord-cmd) sysvisord_cmd; printf '%s\n' "${SVD_CMD[@]}" ;;
docker) shift; exec "$DOCKER" "$@" ;;
*) echo "usage: $0 up|down|dind-image|dind-tar|busybox-tar FILE|docker ARGS...|sysvisord-cmd" >&2; exit 2 ;;
esac
