#!/bin/bash
# Installs what building, testing and the demo need on a Debian host.
# Idempotent: packages already present are not fetched again.
set -euo pipefail

PKGS=(
	docker.io runc containerd  # the engine sysvisor plugs into, and the runtime it delegates to
	libseccomp-dev gcc make    # libseccomp-golang (cgo)
	busybox-static             # test image, built locally: no registry is reachable
	uidmap                     # newuidmap/newgidmap, /etc/subuid conventions
	fuse3                      # /proc views (FUSE)
	iptables debootstrap       # Docker-in-Docker demo image
	procps psmisc kmod         # pgrep/pkill/fuser in tests
	lxcfs                      # bench/ figure 5 baseline; started by bench/run only, never as a service
	apparmor                   # apparmor_parser: apparmor/ compiles sysvisor-default with it (no kernel AppArmor needed)
	qemu-system-x86 qemu-utils # tests/hosts: the VM matrix (qemu-img for overlays)
	e2fsprogs                  # tests/hosts: mkfs.ext4 -d makes the VM disk from a directory
	containernetworking-plugins # tests/cri.sh: pod networking for the CRI tests (bridge, host-local, loopback)
)

if [ "$(id -u)" != 0 ]; then
	echo "tests/deps.sh: run as root (apt-get, dockerd and sysvisord need it)" >&2
	exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "==> installing: ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# policy-rc.d keeps apt from starting the host's docker/containerd: tests
	# run private daemons and must leave the host as they found it.
	created_policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod +x /usr/sbin/policy-rc.d
		created_policy=1
	fi
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	[ -z "$created_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

if ! command -v go >/dev/null; then
	if [ -x /usr/local/go/bin/go ]; then
		echo "tests/deps.sh: Go is at /usr/local/go/bin; add it to PATH" >&2
	else
		echo "tests/deps.sh: Go >= 1.24 is needed (https://go.dev/dl)" >&2
	fi
	exit 1
fi
