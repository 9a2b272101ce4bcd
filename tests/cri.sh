#!/bin/bash
# A private containerd with its CRI plugin beside tests/env.sh's private
# engine (its sysvisord, and its dockerd for building the images), for the
# Kubernetes tests: runtime handlers `runc` (runc through tests/cri/runc-clamp,
# the baseline) and `sysvisor` (sysvisor-runc against the environment's
# sysvisord), Debian's CNI plugins with a bridge of its own, crictl from
# sigs.k8s.io/cri-tools. Nothing of the host's containerd is touched.
#
#   SV_DIR=... tests/cri.sh up        start containerd (tests/env.sh up first)
#   SV_DIR=... tests/cri.sh crictl ARGS...
#   SV_DIR=... tests/cri.sh critest HANDLER [ARGS...]
#                                     sigs.k8s.io/cri-tools' validation suite
#                                     with --runtime-handler=HANDLER (see
#                                     critest() below); ARGS go to critest
#   SV_DIR=... tests/cri.sh crictl-bin  build crictl if missing, print its path
#   SV_DIR=... tests/cri.sh down      stop it, remove its pods, mounts, bridge,
#                                     cgroups and directory
#
# CRI_DIR (default $SV_DIR/cri) holds everything. crictl and critest are
# built once with the Go toolchain into CRI_TOOLS (default
# /var/cache/sysvisor-test/bin).
set -euo pipefail

: "${SV_DIR:?SV_DIR: the private engine of tests/env.sh}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SV_BIN:-$ROOT/bin}
CRI_DIR=${CRI_DIR:-$SV_DIR/cri}
CRI_TOOLS=${CRI_TOOLS:-/var/cache/sysvisor-test/bin}
CRICTL_VERSION=v1.37.0
SOCK=$CRI_DIR/containerd.sock
# A bridge and cgroup parent named for this directory: two environments
# side by side do not share them.
TAG=$(printf '%s' "$CRI_DIR" | sha256sum | cut -c1-6)
BRIDGE=svcri$TAG
BRIDGE_ADDR=10.219.0.1/24 # the subnet's first address, which host-local does not lease
CGROUP_PARENT=sysvisor-cri-$TAG
export PATH=$PATH:/usr/local/go/bin

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

crictl() {
	"$CRI_TOOLS/crictl" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" --timeout 60s "$@"
}

# crictl_bin builds crictl once into CRI_TOOLS and prints its path.
crictl_bin() {
	if [ ! -x "$CRI_TOOLS/crictl" ]; then
		say "building crictl $CRICTL_VERSION into $CRI_TOOLS"
		mkdir -p "$CRI_TOOLS"
		GOBIN=$CRI_TOOLS GOFLAGS= go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
	fi
	echo "$CRI_TOOLS/crictl"
}

ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

up() {
	mkdir -p "$CRI_DIR"/{bin,cni,ipam,logs,root,state}
	crictl_bin >/dev/null
	(cd "$ROOT" && go build -o "$CRI_DIR/bin/runc-clamp" ./tests/cri/runc-clamp)
	# The shim runs BinaryName with the engine's arguments only: the
	# environment's run and policy directories go in through a wrapper.
	cat >"$CRI_DIR/bin/sysvisor-runc" <<EOF
#!/bin/sh
exec "$BIN/sysvisor-runc" --run-dir "$SV_DIR/run" --policy-dir "$SV_DIR/policies" "\$@"
EOF
	chmod 0755 "$CRI_DIR/bin/sysvisor-runc"
	# No gateway: the bridge plugin would turn the host's ip_forward on.
	cat >"$CRI_DIR/cni/10-svcri.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "svcri", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.219.0.0/24"}]], "dataDir": "$CRI_DIR/ipam"}}]}
EOF
	cat >"$CRI_DIR/config.toml" <<EOF
version = 2
root = "$CRI_DIR/root"
state = "$CRI_DIR/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/sysvisor-test/pause:1"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".registry]
    # Read at every pull: 'critest' points the registries of critest's
    # images at tests/cri/imagereg there.
    config_path = "$CRI_DIR/certs.d"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CRI_DIR/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$CRI_DIR/bin/runc-clamp"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sysvisor]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sysvisor.options]
        BinaryName = "$CRI_DIR/bin/sysvisor-runc"
EOF
	if ! { [ -f "$CRI_DIR/containerd.pid" ] && kill -0 "$(cat "$CRI_DIR/containerd.pid")" 2>/dev/null; }; then
		say "starting a private containerd (log: $CRI_DIR/containerd.log)"
		setsid containerd --config "$CRI_DIR/config.toml" >>"$CRI_DIR/containerd.log" 2>&1 </dev/null &
		echo $! >"$CRI_DIR/containerd.pid"
		for i in $(seq 100); do
			ctr --address "$SOCK" version >/dev/null 2>&1 && break
			sleep 0.1
		done
		ctr --address "$SOCK" version >/dev/null || { tail -30 "$CRI_DIR/containerd.log"; exit 1; }
	fi
	images
}

# images imports the environment's busybox image, and a pause image made
# from it, into containerd's k8s.io namespace (no registry).
images() {
	local d="$ROOT/tests/env.sh" c
	if ! ctr_ images ls -q | grep -qx docker.io/sysvisor-test/pause:1; then
		c=$("$d" docker create --entrypoint /bin/pause sysvisor-test/busybox)
		"$d" docker commit -c 'ENTRYPOINT ["/bin/pause"]' -c 'CMD []' "$c" sysvisor-test/pause:1 >/dev/null
		"$d" docker rm "$c" >/dev/null
		"$d" docker save sysvisor-test/pause:1 | ctr_ images import - >/dev/null
	fi
	if ! ctr_ images ls -q | grep -qx docker.io/sysvisor-test/busybox:latest; then
		"$d" docker save sysvisor-test/busybox | ctr_ images import - >/dev/null
	fi
}

# critest runs cri-tools' validation suite (critest, CRICTL_VERSION) on
# runtime handler $1 against this containerd (up first), the other
# arguments added to its command line (e.g. --ginkgo.focus=..., or
# --ginkgo.label-filter=...). No registry is reachable: tests/cri/imagereg
# builds local equivalents of the suite's images (the busybox test rootfs,
# tests/cri/standin for the nginx, httpd and nonewprivs programs) and serves
# them; hosts.toml makes it the mirror of registry.k8s.io, gcr.io and
# k8s.gcr.io (what it lacks is then asked of the real one, which fails). critest keeps pulling by name, and containerd's PullImage
# always asks a registry, hence a registry rather than an import. The log
# goes to CRITEST_LOG (default $CRI_DIR/critest-HANDLER.log), the closing
# lines to stdout; the exit status is critest's.
#
# critest's pods go under the cgroup parent /test.slice (containerd 1.6
# has no RuntimeConfig for it to ask the driver): those it leaves, when
# the host had none, are removed after the run and by 'down'.
critest() {
	local handler=${1:?usage: critest HANDLER [critest args...]} log rc=0 port d m
	shift
	log=${CRITEST_LOG:-$CRI_DIR/critest-$handler.log}
	[ -S "$SOCK" ] || { echo "cri.sh: containerd is not up ($SOCK): run 'up' first" >&2; exit 1; }
	if [ ! -x "$CRI_TOOLS/critest" ]; then
		say "building critest $CRICTL_VERSION into $CRI_TOOLS"
		# critest is a test binary (cri-tools' Makefile: go test -c):
		# `go install .../cmd/critest@...` finds no non-test Go files.
		d=$(cd / && GOFLAGS= go mod download -json "sigs.k8s.io/cri-tools@$CRICTL_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
		[ -d "$d" ] || { echo "cri.sh: no source for cri-tools $CRICTL_VERSION" >&2; exit 1; }
		mkdir -p "$CRI_TOOLS"
		(cd "$d" && GOFLAGS=-mod=mod CGO_ENABLED=0 go test -c -o "$CRI_TOOLS/critest.tmp" ./cmd/critest)
		mv "$CRI_TOOLS/critest.tmp" "$CRI_TOOLS/critest"
	fi
	# Rebuilt when their sources change; containerd's copies go too.
	m=$(cat "$ROOT"/tests/cri/imagereg/*.go "$ROOT"/tests/cri/standin/*.go "$ROOT"/tests/testdata/* | sha256sum | cut -c1-16)
	if [ "$(cat "$CRI_DIR/registry/sum" 2>/dev/null)" != "$m" ]; then
		say "building critest's images (tests/cri/imagereg)"
		registry_down
		(cd "$ROOT" && go build -o "$CRI_DIR/bin/imagereg" ./tests/cri/imagereg &&
			CGO_ENABLED=0 go build -o "$CRI_DIR/bin/standin" ./tests/cri/standin)
		"$ROOT/tests/env.sh" busybox-tar "$CRI_DIR/busybox.tar"
		"$CRI_DIR/bin/imagereg" build "$CRI_DIR/registry" "$CRI_DIR/busybox.tar" "$CRI_DIR/bin/standin"
		rm -f "$CRI_DIR/busybox.tar"
		echo "$m" >"$CRI_DIR/registry/sum"
		crictl images 2>/dev/null | awk '$1 ~ /^(registry\.k8s\.io|gcr\.io|k8s\.gcr\.io)\// {print $1 ":" $2}' |
			xargs -r "$CRI_TOOLS/crictl" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" rmi >/dev/null 2>&1 || true
	fi
	registry_up
	port=$(cat "$CRI_DIR/registry.port")
	for d in registry.k8s.io gcr.io k8s.gcr.io; do
		mkdir -p "$CRI_DIR/certs.d/$d"
		# A mirror: containerd 1.6 ignores a `server` of http://.
		printf 'server = "https://%s"\n[host."http://127.0.0.1:%s"]\n  capabilities = ["pull", "resolve"]\n' \
			"$d" "$port" >"$CRI_DIR/certs.d/$d/hosts.toml"
	done
	for d in /sys/fs/cgroup/*/; do
		[ -d "${d}test.slice" ] || echo "${d}test.slice"
	done >>"$CRI_DIR/critest-cgroups"
	# The tests fetch web pages from pods by their IP: the host needs an
	# address on the bridge (the bridge plugin's own, isGateway, would turn
	# the host's ip_forward on). Removed after the run. Every environment
	# has the same subnet: one critest at a time on a host.
	[ -d "/sys/class/net/$BRIDGE" ] || ip link add "$BRIDGE" type bridge
	ip link set "$BRIDGE" up
	ip addr replace "$BRIDGE_ADDR" dev "$BRIDGE"
	# The HostIpc tests leave a segment of theirs on the host (ipcmk -M
	# 1048576, never removed): those created during the run go after it.
	awk 'NR > 1 {print $2}' /proc/sysvipc/shm >"$CRI_DIR/critest-shm"
	say "critest --runtime-handler=$handler $* (log: $log)"
	(cd "$CRI_DIR" && "$CRI_TOOLS/critest" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" \
		--runtime-handler "$handler" --config /dev/null --ginkgo.no-color \
		--ginkgo.json-report "${log%.log}.json" "$@") >"$log" 2>&1 || rc=$?
	awk 'NR > 1 && $4 == 1048576 && $7 == 0 {print $2}' /proc/sysvipc/shm | grep -vxFf "$CRI_DIR/critest-shm" |
		while read -r d; do ipcrm -m "$d" 2>/dev/null || true; done || true
	ip addr del "$BRIDGE_ADDR" dev "$BRIDGE" 2>/dev/null || true
	registry_down
	critest_cgroups
	# The counts, then the failed specs (the log has why).
	grep -E '^(Ran [0-9]+ of [0-9]+ Specs|SUCCESS!|FAIL!|Test Suite (Passed|Failed))' "$log" || tail -20 "$log"
	grep -qE '^\s*\[FAIL\] ' "$log" && { echo "failed:"; sed -n '/^Summarizing [0-9]* Failure/,/^Ran /p' "$log" | grep -E '^\s*\[FAIL\]' | sed 's/^\s*/  /'; }
	return "$rc"
}

registry_up() {
	if [ -f "$CRI_DIR/registry.pid" ] && kill -0 "$(cat "$CRI_DIR/registry.pid")" 2>/dev/null; then return 0; fi
	rm -f "$CRI_DIR/registry.port"
	setsid "$CRI_DIR/bin/imagereg" serve "$CRI_DIR/registry" 127.0.0.1:0 "$CRI_DIR/registry.port" \
		>>"$CRI_DIR/registry.log" 2>&1 </dev/null &
	echo $! >"$CRI_DIR/registry.pid"
	for i in $(seq 50); do [ -s "$CRI_DIR/registry.port" ] && return 0; sleep 0.1; done
	cat "$CRI_DIR/registry.log" >&2
	exit 1
}

registry_down() {
	[ -f "$CRI_DIR/registry.pid" ] || return 0
	kill "$(cat "$CRI_DIR/registry.pid")" 2>/dev/null || true
	rm -f "$CRI_DIR/registry.pid" "$CRI_DIR/registry.port" "$CRI_DIR"/certs.d/*/hosts.toml
}

# critest_cgroups removes what critest left of the /test.slice cgroups it
# created (empty ones; a pod still running keeps its own until 'down').
critest_cgroups() {
	local d
	[ -f "$CRI_DIR/critest-cgroups" ] || return 0
	sort -u "$CRI_DIR/critest-cgroups" | while read -r d; do
		[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
}

down() {
	if [ -f "$CRI_DIR/containerd.pid" ] && kill -0 "$(cat "$CRI_DIR/containerd.pid")" 2>/dev/null; then
		crictl rmp -fa >/dev/null 2>&1 || true
		kill "$(cat "$CRI_DIR/containerd.pid")" 2>/dev/null || true
		for i in $(seq 100); do kill -0 "$(cat "$CRI_DIR/containerd.pid")" 2>/dev/null || break; sleep 0.1; done
	fi
	registry_down
	# Shims outlive containerd; their containers were removed above.
	pkill -f "containerd-shim-runc-v2 -namespace k8s.io -address $SOCK" 2>/dev/null || true
	{ grep -F " $CRI_DIR" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
	ip link del "$BRIDGE" 2>/dev/null || true
	critest_cgroups
	for fs in /sys/fs/cgroup/*/"$CGROUP_PARENT" /sys/fs/cgroup/unified/"$CGROUP_PARENT" /sys/fs/cgroup/"$CGROUP_PARENT"; do
		[ -d "$fs" ] && find "$fs" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
	rm -rf "$CRI_DIR"
}

case ${1:-} in
up) up ;;
down) down ;;
crictl) shift; crictl "$@" ;;
critest) shift; critest "$@" ;;
cgroup-parent) echo "/$CGROUP_PARENT" ;;
crictl-bin) crictl_bin ;;
*) echo "usage: $0 up|down|crictl ARGS...|critest HANDLER [ARGS...]|cgroup-parent|crictl-bin" >&2; exit 2 ;;
esac
