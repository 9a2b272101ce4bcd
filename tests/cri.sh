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
#   SV_DIR=... tests/cri.sh down      stop it, remove its pods, mounts, bridge,
#                                     cgroups and directory
#
# CRI_DIR (default $SV_DIR/cri) holds everything. crictl is built once with
# `go install` into CRI_TOOLS (default /var/cache/sysvisor-test/bin).
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
CGROUP_PARENT=sysvisor-cri-$TAG
export PATH=$PATH:/usr/local/go/bin

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

crictl() {
	"$CRI_TOOLS/crictl" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" --timeout 60s "$@"
}

ctr_() { ctr --address "$SOCK" --namespace k8s.io "$@"; }

up() {
	mkdir -p "$CRI_DIR"/{bin,cni,ipam,logs,root,state}
	if [ ! -x "$CRI_TOOLS/crictl" ]; then
		say "building crictl $CRICTL_VERSION into $CRI_TOOLS"
		mkdir -p "$CRI_TOOLS"
		GOBIN=$CRI_TOOLS GOFLAGS= go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
	fi
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

down() {
	if [ -f "$CRI_DIR/containerd.pid" ] && kill -0 "$(cat "$CRI_DIR/containerd.pid")" 2>/dev/null; then
		crictl rmp -fa >/dev/null 2>&1 || true
		kill "$(cat "$CRI_DIR/containerd.pid")" 2>/dev/null || true
		for i in $(seq 100); do kill -0 "$(cat "$CRI_DIR/containerd.pid")" 2>/dev/null || break; sleep 0.1; done
	fi
	# Shims outlive containerd; their containers were removed above.
	pkill -f "containerd-shim-runc-v2 -namespace k8s.io -address $SOCK" 2>/dev/null || true
	{ grep -F " $CRI_DIR" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
	ip link del "$BRIDGE" 2>/dev/null || true
	for fs in /sys/fs/cgroup/*/"$CGROUP_PARENT" /sys/fs/cgroup/unified/"$CGROUP_PARENT" /sys/fs/cgroup/"$CGROUP_PARENT"; do
		[ -d "$fs" ] && find "$fs" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
	rm -rf "$CRI_DIR"
}

case ${1:-} in
up) up ;;
down) down ;;
crictl) shift; crictl "$@" ;;
cgroup-parent) echo "/$CGROUP_PARENT" ;;
*) echo "usage: $0 up|down|crictl ARGS...|cgroup-parent" >&2; exit 2 ;;
esac
