#!/bin/bash
# Builds the cached VM base image of the host matrix from Debian packages
# only: a debootstrapped Debian 13 (trixie) root with systemd, Docker,
# containerd and AppArmor's userland, the kernels of bookworm (6.1), trixie
# (6.12) and sid (7.x) installed into it with their initramfs, and the
# Docker-in-Docker image (the root itself, without kernels) imported into
# its /var/lib/docker.
#
#   tests/hosts/image.sh          build what is missing (idempotent)
#   tests/hosts/image.sh rebuild  throw the cache away and build again
#   tests/hosts/image.sh verify   boot it once: the VM's docker runs the DinD image
#
# Everything lives under $HOSTS_CACHE (default /var/cache/sysvisor/hosts):
#   debs/              .debs debootstrap and apt fetched (kept between builds)
#   base.qcow2         the disk every VM boots, through an overlay of its own
#   dind-trixie.tar    the DinD image's rootfs
#   kernels/K/         vmlinuz, initrd.img, release of each kernel K
#   BUILD-INFO         what went in (package versions, timings)
# The host's apt sources and state are never touched: the kernels of other
# suites are fetched by the root's own apt with a private source list.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

MIRROR=${HOSTS_MIRROR:-http://deb.debian.org/debian}
BUILD=$HC/build
ROOT=$BUILD/root

PKGS=systemd,systemd-sysv,udev,dbus,kmod,initramfs-tools,zstd,docker.io,docker-cli,runc,containerd,iptables,fuse3,libseccomp2,procps,iproute2,busybox-static,apparmor,util-linux,mount,e2fsprogs,psmisc,strace,less

stamp() { touch "$BUILD/.done-$1"; }
done_() { [ -e "$BUILD/.done-$1" ]; }
timed() { # name cmd...: run a stage not yet done and record its time
	local t0=$SECONDS n=$1
	shift
	done_ "$n" && return 0
	"$@"
	echo "time $n: $((SECONDS - t0)) s" >>"$BUILD/info"
	say "$n took $((SECONDS - t0)) s"
}

chroot_mounts() {
	mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
	mountpoint -q "$ROOT/sys" || mount --rbind /sys "$ROOT/sys"
	mountpoint -q "$ROOT/dev" || mount --rbind /dev "$ROOT/dev"
}
chroot_umount() {
	local m
	for m in dev sys proc; do
		mountpoint -q "$ROOT/$m" && umount -R -l "$ROOT/$m"
	done
	return 0
}
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }

stage_debootstrap() {
	done_ debootstrap && return 0
	rm -rf "$ROOT"
	mkdir -p "$ROOT" "$HC/debs"
	say "debootstrap trixie (log: $BUILD/debootstrap.log)"
	debootstrap --variant=minbase --cache-dir="$HC/debs" --include="$PKGS" \
		trixie "$ROOT" "$MIRROR" >"$BUILD/debootstrap.log" 2>&1 ||
		{ tail -30 "$BUILD/debootstrap.log" >&2; exit 1; }
	stamp debootstrap
}

# The root's own configuration: no network, serial console, the job units
# that install a payload and run a command (tests/hosts/guest/).
stage_configure() {
	done_ configure && return 0
	say "configuring the root"
	echo sysvisor-vm >"$ROOT/etc/hostname"
	printf '127.0.0.1 localhost sysvisor-vm\n::1 localhost\n' >"$ROOT/etc/hosts"
	printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$ROOT/etc/fstab"
	# Root without a password on the serial console, for debugging a VM by hand.
	sed -i 's|^root:[^:]*:|root::|' "$ROOT/etc/shadow"
	# No network in the VM: nothing waits for it, no timers fetch anything.
	rm -f "$ROOT"/etc/systemd/system/timers.target.wants/*
	ln -sf /dev/null "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service"
	# The root disk is virtio: make sure its driver is in every initramfs
	# (MODULES=most has it; say it anyway, MODULES=dep would look at the build host).
	printf 'virtio_pci\nvirtio_blk\next4\n' >>"$ROOT/etc/initramfs-tools/modules"
	stamp configure
}

# kernel_apt SUITE TOOL ARGS...: apt-get or apt-cache in the root against one
# suite of the archive, with a source list and lists of its own (the root's
# apt state stays trixie's).
kernel_apt() {
	local suite=$1 tool=$2
	shift 2
	local a=/var/lib/hostsapt
	mkdir -p "$ROOT$a/$suite/lists/partial" "$ROOT$a/parts"
	echo "deb $MIRROR $suite main" >"$ROOT$a/$suite/sources.list"
	# An empty status: what the root has installed must not answer for the suite.
	: >"$ROOT$a/status"
	# Check-Valid-Until: the archive this machine reaches may serve an
	# unstable Release file past its Valid-Until (seen: sid, 30 days).
	in_root "$tool" -q -o Acquire::Check-Valid-Until=false -o Dir::Etc::sourcelist=$a/$suite/sources.list \
		-o Dir::Etc::sourceparts=$a/parts -o Dir::State::Lists=$a/$suite/lists -o Dir::State::status=$a/status \
		-o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= "$@"
}

# cache_debs DIR: .debs fetched into DIR are kept in $HC/debs for the next build.
cache_debs() { cp -n "$1"/*.deb "$HC/debs/" 2>/dev/null || true; }

stage_kernels() {
	done_ kernels && return 0
	chroot_mounts
	mkdir -p "$ROOT/var/cache/apt/archives"
	cp -n "$HC"/debs/linux-*.deb "$ROOT/var/cache/apt/archives/" 2>/dev/null || true

	say "kernel 6.12 (trixie: linux-image-amd64)"
	in_root apt-get -q update >>"$BUILD/kernels.log" 2>&1
	in_root apt-get -q install -y --no-install-recommends linux-image-amd64 >>"$BUILD/kernels.log" 2>&1 ||
		{ tail -30 "$BUILD/kernels.log" >&2; exit 1; }
	cache_debs "$ROOT/var/cache/apt/archives"

	say "kernel 6.1 (bookworm)"
	kernel_apt bookworm apt-get update >>"$BUILD/kernels.log" 2>&1
	local pkg
	pkg=$(kernel_apt bookworm apt-cache show linux-image-amd64 2>/dev/null | sed -n 's/^Depends: //p' | head -1 | grep -o 'linux-image-[^ ,]*' | head -1)
	[ -n "$pkg" ] || die "no bookworm kernel found (see $BUILD/kernels.log)"
	(cd "$ROOT/var/cache/apt/archives" && kernel_apt bookworm apt-get download "$pkg" >>"$BUILD/kernels.log" 2>&1) ||
		true
	# apt-get download writes into the current directory of the chroot'ed apt: /.
	mv "$ROOT"/"$pkg"_*.deb "$ROOT/var/cache/apt/archives/" 2>/dev/null || true
	in_root sh -c "dpkg -i /var/cache/apt/archives/${pkg}_*.deb" >>"$BUILD/kernels.log" 2>&1 ||
		{ tail -30 "$BUILD/kernels.log" >&2; exit 1; }
	cache_debs "$ROOT/var/cache/apt/archives"

	say "kernel 7.x (sid: its parts, not the meta package, which wants sid's linux-base)"
	kernel_apt sid apt-get update >>"$BUILD/kernels.log" 2>&1
	local parts
	pkg=$(kernel_apt sid apt-cache show linux-image-amd64 2>/dev/null | sed -n 's/^Depends: //p' | head -1 | grep -o 'linux-image-[^ ,]*' | head -1)
	[ -n "$pkg" ] || die "no sid kernel found (see $BUILD/kernels.log)"
	parts=$(kernel_apt sid apt-cache show "$pkg" 2>/dev/null | sed -n 's/^Depends: //p' | head -1 | tr ',' '\n' |
		sed 's/^ *//; s/ .*//' | grep -E '^linux-(binary|modules|base|image)-' || true)
	echo "sid kernel: $pkg, parts: $parts" >>"$BUILD/kernels.log"
	in_root sh -c 'rm -f /*.deb'
	(kernel_apt sid apt-get download $parts >>"$BUILD/kernels.log" 2>&1) || { tail -30 "$BUILD/kernels.log" >&2; exit 1; }
	in_root sh -c 'dpkg -i --force-depends /*.deb && mv /*.deb /var/cache/apt/archives/' >>"$BUILD/kernels.log" 2>&1 ||
		{ tail -30 "$BUILD/kernels.log" >&2; exit 1; }
	cache_debs "$ROOT/var/cache/apt/archives"
	chroot_umount
	stamp kernels
}

# What the end-to-end suite needs in the VM besides the engines, kept out of
# the DinD image: gcc and libc6-dev (tests/env.sh builds the static test
# helpers; the suite looks for gcc), debootstrap (the suite looks for it).
stage_tools() {
	done_ tools && return 0
	chroot_mounts
	say "tools for the e2e suite: gcc, libc6-dev, debootstrap"
	in_root apt-get -q update >>"$BUILD/tools.log" 2>&1
	in_root apt-get -q install -y --no-install-recommends gcc libc6-dev debootstrap >>"$BUILD/tools.log" 2>&1 ||
		{ tail -30 "$BUILD/tools.log" >&2; exit 1; }
	cache_debs "$ROOT/var/cache/apt/archives"
	chroot_umount
	stamp tools
}

# The Docker-in-Docker image is the clean root itself, taken before the VM's
# own configuration and kernels go in: Debian 13 with docker.io 26, iptables,
# containerd and systemd.
stage_dindtar() {
	[ -s "$HC/dind-trixie.tar" ] && done_ dindtar && return 0
	say "Docker-in-Docker rootfs tarball ($HC/dind-trixie.tar)"
	tar -C "$ROOT" --exclude=./var/cache/apt/archives/'*.deb' --exclude=./var/lib/apt/lists/'*' \
		--exclude=./debootstrap -cf "$HC/dind-trixie.tar.tmp" .
	mv "$HC/dind-trixie.tar.tmp" "$HC/dind-trixie.tar"
	stamp dindtar
}

# label RELEASE: the matrix's name for a kernel release.
label() {
	case $1 in
	6.1.*) echo 6.1 ;;
	6.12.*) echo 6.12 ;;
	[7-9].*) echo 7.x ;;
	*) echo "$1" ;;
	esac
}

# Each kernel's image and initramfs, copied out of the root for -kernel/-initrd.
stage_export() {
	done_ export && return 0
	chroot_mounts
	local d v k
	rm -rf "$HC/kernels.tmp"
	for d in "$ROOT"/usr/lib/modules/*; do
		v=$(basename "$d")
		k=$ROOT/boot/vmlinuz-$v
		[ -e "$k" ] || k=$d/vmlinuz
		[ -e "$k" ] || die "no kernel image for $v"
		if [ ! -s "$ROOT/boot/initrd.img-$v" ]; then
			say "initramfs for $v"
			in_root depmod "$v"
			in_root mkinitramfs -o "/boot/initrd.img-$v" "$v" >>"$BUILD/kernels.log" 2>&1 || die "mkinitramfs $v failed"
		fi
		mkdir -p "$HC/kernels.tmp/$(label "$v")"
		cp "$k" "$HC/kernels.tmp/$(label "$v")/vmlinuz"
		cp "$ROOT/boot/initrd.img-$v" "$HC/kernels.tmp/$(label "$v")/initrd.img"
		echo "$v" >"$HC/kernels.tmp/$(label "$v")/release"
		echo "kernel $(label "$v"): $v" >>"$BUILD/info"
	done
	chroot_umount
	for v in 6.1 6.12 7.x; do
		[ -e "$HC/kernels.tmp/$v/vmlinuz" ] || die "kernel $v missing after the build"
	done
	rm -rf "$HC/kernels"
	mv "$HC/kernels.tmp" "$HC/kernels"
	stamp export
}

# The root as an ext4 disk image (sparse; the VM sees DISK_SIZE).
stage_disk() {
	done_ disk && return 0
	say "ext4 disk image from the root"
	rm -f "$BUILD/disk.raw"
	# The job units (guest/): they read the job disk the host attaches.
	install -m 0755 "$HERE/guest/hostjob" "$ROOT/usr/local/sbin/hostjob"
	install -m 0644 "$HERE/guest/hostjob-install.service" "$HERE/guest/hostjob.service" \
		"$ROOT/etc/systemd/system/"
	mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants"
	ln -sf ../hostjob-install.service ../hostjob.service "$ROOT/etc/systemd/system/multi-user.target.wants/"
	in_root dpkg-query -W -f '${Package} ${Version}\n' >"$BUILD/packages"
	# Downloads stay in $HC/debs, not in the image.
	rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/hostsapt "$ROOT"/var/lib/apt/lists/*
	mkfs.ext4 -q -L sysvisor-vm -d "$ROOT" "$BUILD/disk.raw" "${HOSTS_DISK_SIZE:-16G}"
	stamp disk
}

# The Docker-in-Docker image, imported on this machine by a private dockerd
# whose data root is the VM root's /var/lib/docker (overlay2; 8 s here). The
# VM's docker 26 reads it as it reads a data root left by an upgrade from
# Debian 12's 20.10; a preparation boot that let the VM's own dockerd import
# it took 130-280 s under TCG. Only the image store is kept: the VM's dockerd
# makes the rest (networks, containerd state) at its first start.
stage_dockerimport() {
	done_ dockerimport && return 0
	say "docker import of the DinD image into the root's /var/lib/docker (a private dockerd)"
	local x=$BUILD/dockerd d=$ROOT/var/lib/docker
	rm -rf "$x" "$d"
	mkdir -p "$x" "$d"
	# Graph driver storage, never the containerd image store (newer
	# engines' option), which Docker 26 would not read by default.
	echo '{"storage-driver": "overlay2", "features": {"containerd-snapshotter": false}}' >"$x/daemon.json"
	setsid dockerd --config-file "$x/daemon.json" --data-root "$d" --exec-root "$x/exec" \
		-H "unix://$x/docker.sock" --pidfile "$x/docker.pid" --bridge=none --iptables=false \
		--ip6tables=false --ip-masq=false --ip-forward=false >"$x/dockerd.log" 2>&1 </dev/null &
	local i ok=
	for ((i = 0; i < 120; i++)); do
		docker -H "unix://$x/docker.sock" info >/dev/null 2>&1 && { ok=1; break; }
		sleep 0.5
	done
	if [ -n "$ok" ]; then
		docker -H "unix://$x/docker.sock" import -c 'CMD ["/sbin/init"]' "$HC/dind-trixie.tar" sysvisor-test/dind >/dev/null || ok=
	fi
	kill "$(cat "$x/docker.pid" 2>/dev/null)" 2>/dev/null || true
	for ((i = 0; i < 60; i++)); do
		[ -e "$x/docker.pid" ] && kill -0 "$(cat "$x/docker.pid")" 2>/dev/null || break
		sleep 0.5
	done
	[ -n "$ok" ] || { tail -20 "$x/dockerd.log" >&2; die "private dockerd: import failed (log $x/dockerd.log)"; }
	find "$d" -mindepth 1 -maxdepth 1 ! -name image ! -name overlay2 -exec rm -rf {} +
	stamp dockerimport
}

# The disk every VM boots (through an overlay of its own), as qcow2.
stage_base() {
	say "base.qcow2"
	qemu-img convert -O qcow2 "$BUILD/disk.raw" "$HC/base.qcow2.tmp"
	mv "$HC/base.qcow2.tmp" "$HC/base.qcow2"
	rm -f "$BUILD/disk.raw"
	cp "$BUILD/info" "$HC/BUILD-INFO"
	cat "$BUILD/packages" >>"$HC/BUILD-INFO"
	stamp base
}

# verify: boot the base image once and run the DinD image (plain runc).
verify() {
	mkdir -p "$HC/run"
	local w
	w=$(mktemp -d "$HC/run/verify.XXXXXX")
	qemu-img create -q -f qcow2 -F qcow2 -b "$HC/base.qcow2" "$w/overlay.qcow2"
	printf '%s\n' 'docker images' 'docker run --rm sysvisor-test/dind cat /etc/debian_version' >"$w/cmd"
	vm_boot --kernel 6.12 --disk "$w/overlay.qcow2" --workdir "$w" --cmd "$w/cmd" --timeout 900 ||
		{ console_tail "$w"; die "verify boot failed (logs in $w)"; }
	cat "$w/out/output"
	local rc
	rc=$(cat "$w/out/rc")
	rm -rf "$w"
	[ "$rc" = 0 ] || die "verify: exit $rc"
	say "verified: the VM's docker runs the DinD image"
}

main() {
	mkdir -p "$BUILD"
	exec 9>"$HC/.build.lock"
	flock -n 9 || die "another image build runs (lock $HC/.build.lock)"
	trap chroot_umount EXIT
	[ -s "$HC/dind-trixie.tar" ] || rm -f "$BUILD/.done-dindtar"
	[ -s "$HC/base.qcow2" ] || rm -f "$BUILD/.done-base"
	[ -e "$HC/kernels/7.x/vmlinuz" ] || rm -f "$BUILD/.done-export"
	# The job units and this script go into the disk stage: when they change,
	# the disk is made again (the root and kernels stay).
	local v
	v=$(cat "$HERE/image.sh" "$HERE"/guest/* | sha256sum | cut -c1-16)
	if [ "$(cat "$BUILD/.disk-version" 2>/dev/null)" != "$v" ]; then
		rm -f "$BUILD/.done-disk" "$BUILD/.done-base"
		echo "$v" >"$BUILD/.disk-version"
	fi
	timed debootstrap stage_debootstrap
	timed dindtar stage_dindtar
	timed configure stage_configure
	timed kernels stage_kernels
	timed tools stage_tools
	timed export stage_export
	timed dockerimport stage_dockerimport
	timed disk stage_disk
	timed base stage_base
}

case "${1:-build}" in
build) main ;;
debootstrap) mkdir -p "$BUILD"; timed debootstrap stage_debootstrap ;;
rebuild) chroot_umount; rm -rf "$BUILD" "$HC/base.qcow2" "$HC/kernels"; main ;;
verify) verify ;;
*) echo "usage: $0 [build|rebuild|verify]" >&2; exit 2 ;;
esac
