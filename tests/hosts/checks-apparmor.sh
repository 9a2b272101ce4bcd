#!/bin/bash
# AppArmor checks for the hosts matrix: run inside a VM (or any host) with
# sysvisor built, as root. On a host whose kernel enforces AppArmor it checks
# that system containers run under sysvisor-default and what the profile
# allows and refuses, in a system container and in an inner container; on a
# host without AppArmor, that containers are unaffected. One line per check
# ("ok", "FAIL", "skip"), a summary, exit status 1 if any check failed.
#
#   tests/hosts/checks-apparmor.sh
#
#   AA_ENGINE     "private" (default): tests/env.sh's own sysvisord and
#                 dockerd, images built from this tree; "system": the host's
#                 dockerd with sysvisor-runc registered and the sysvisord
#                 unit, as docs/install.md sets them up (tests/hosts/vm
#                 --sysvisor), images sysvisor-test/busybox and
#                 sysvisor-test/dind already there
#   AA_DIND       space-separated NAME:IMAGE or NAME:TAR, the Docker-in-Docker
#                 images to check (Debian with docker.io, iptables, systemd:
#                 bookworm's dockerd 20.10, trixie's 26); a TAR is imported as
#                 sysvisor-test/dind-NAME. Default: "trixie:sysvisor-test/dind"
#                 on the system engine, tests/env.sh's bookworm image if its
#                 tarball is in the cache on the private one
#   AA_REQUIRE    "on": fail unless the kernel enforces AppArmor; "off": fail
#                 if it does (what the matrix cell asked for); empty: either
#   SV_DIR        the private environment of tests/env.sh (default
#                 /tmp/sysvisor-apparmor), torn down at the end
#
# It uses tests/env.sh: a private sysvisord and dockerd, so the host's
# Docker, if any, is untouched. It leaves the kernel's profiles as it found
# them (sysvisor-default loaded if it was).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export SV_DIR=${SV_DIR:-/tmp/sysvisor-apparmor}
ENV=$ROOT/tests/env.sh
ENGINE=${AA_ENGINE:-private}
PROFILE=sysvisor-default
PROFILE_FILE=${AA_PROFILE_FILE:-/etc/apparmor.d/$PROFILE}
if [ "$ENGINE" = system ]; then
	D() { docker "$@"; }
	CTL=(sysvisorctl)
	command -v sysvisorctl >/dev/null || CTL=(/usr/local/bin/sysvisorctl)
	POLICIES=/etc/sysvisor/policies
	up() { true; }
	down() { rm -f "$POLICIES/aa-missing.hcl"; "${CTL[@]}" policy reload >/dev/null 2>&1 || true; }
	restart_sysvisord() { systemctl restart sysvisord && wait_for 20 "${CTL[@]}" version; }
else
	D() { "$ENV" docker "$@"; }
	CTL=("$ROOT/bin/sysvisorctl" --run-dir "$SV_DIR/run")
	POLICIES=$SV_DIR/policies
	up() { "$ENV" up; }
	down() { "$ENV" down; }
	restart_sysvisord() {
		kill "$(cat "$SV_DIR/sysvisord.pid")" && wait_for 10 bash -c "! kill -0 $(cat "$SV_DIR/sysvisord.pid")"
		"$ENV" up
	}
fi

pass=0 failed=0 skipped=0
ok() { printf 'ok    %s\n' "$1"; pass=$((pass + 1)); }
bad() { printf 'FAIL  %s\n      %s\n' "$1" "${2:-}"; failed=$((failed + 1)); }
skip() { printf 'skip  %s: %s\n' "$1" "$2"; skipped=$((skipped + 1)); }
# check NAME CMD...: CMD must succeed.
check() { local n=$1 out; shift; if out=$("$@" 2>&1); then ok "$n"; else bad "$n" "$(echo "$out" | tail -3)"; fi; }
# refuse NAME CMD...: CMD must fail.
refuse() { local n=$1 out; shift; if out=$("$@" 2>&1); then bad "$n" "succeeded: $(echo "$out" | tail -2)"; else ok "$n"; fi; }
# denied NAME RUNNER... -- SHELL: SHELL, run by sh in the container RUNNER
# starts, must fail. The container must have run it (a create that failed
# for another reason proves nothing).
denied() {
	local n=$1 out; shift
	local a=()
	while [ "$1" != -- ]; do a+=("$1"); shift; done
	shift
	out=$("${a[@]}" sh -c "if { $1 ; } >/dev/null 2>&1; then echo ALLOWED; else echo REFUSED; fi" 2>&1)
	case $out in
	*REFUSED*) ok "$n" ;;
	*ALLOWED*) bad "$n" "allowed" ;;
	*) bad "$n" "the container did not run it: $(echo "$out" | tail -2)" ;;
	esac
}
# same NAME WANT CMD...: CMD's output, trimmed, must be WANT.
# Only standard output counts: docker run warns on standard error.
same() {
	local n=$1 want=$2 got err; shift 2
	err=$(mktemp)
	got=$("$@" 2>"$err" | tr -d '\r' | sed -e 's/[[:space:]]*$//')
	if [ "$got" = "$want" ]; then ok "$n"; else bad "$n" "got '$got', want '$want'; stderr: $(tail -2 "$err")"; fi
	rm -f "$err"
}
wait_for() { local n=$(($1 * 10)); shift; for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }

loaded() { grep -q "^$PROFILE (" /sys/kernel/security/apparmor/profiles 2>/dev/null; }
was_loaded=
cleanup() {
	D rm -f aa-ps $(D ps -aq --filter name=aa-) >/dev/null 2>&1 || true
	down >/dev/null 2>&1 || true
	# Leave the kernel as found: the profile back if it was loaded.
	if [ -n "$was_loaded" ] && ! loaded && [ -f "$PROFILE_FILE" ]; then apparmor_parser -r "$PROFILE_FILE" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

enabled=no
[ -d /sys/kernel/security/apparmor ] && [ "$(cut -c1 /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ] && enabled=yes
echo "# kernel $(uname -r), AppArmor enforced: $enabled, parser: $(apparmor_parser --version 2>/dev/null | head -1 || echo none)"
case ${AA_REQUIRE:-} in
on) [ $enabled = yes ] || { bad "AppArmor on, as the cell asked" "not enforced by this kernel"; exit 1; } ;;
off) [ $enabled = no ] || { bad "AppArmor off, as the cell asked" "enforced by this kernel"; exit 1; } ;;
esac
loaded && was_loaded=1

up >/dev/null 2>&1 || { bad "tests/env.sh up" "$(tail -5 "$SV_DIR/log/sysvisord.log" "$SV_DIR/log/dockerd.log" 2>&1)"; exit 1; }
BB=sysvisor-test/busybox
run() { D run --rm --runtime=sysvisor-runc "$@"; }

if [ $enabled = no ]; then
	# No AppArmor: no profile, nothing masked (the container reads the
	# kernel's own "N", or nothing where AppArmor is not built in).
	same "the enabled parameter is not masked" "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" run $BB sh -c 'cat /sys/module/apparmor/parameters/enabled 2>/dev/null'
	check "a system container runs" run $BB true
	check "tmpfs mount inside" run $BB sh -c 'mkdir -p /m && mount -t tmpfs t /m'
	echo "# $pass ok, $failed failed, $skipped skipped"
	[ $failed = 0 ]
	exit
fi

## The profile and its selection

check "sysvisord has the profile loaded" loaded
same "a container runs under $PROFILE" "$PROFILE (enforce)" run $BB cat /proc/self/attr/current
id=$(D run -d --runtime=sysvisor-runc $BB sleep 300)
same "docker exec gets $PROFILE too" "$PROFILE (enforce)" D exec "$id" cat /proc/self/attr/current
same "sysvisorctl inspect shows it" "$PROFILE (enforce)" bash -c "$(printf '%q ' "${CTL[@]}") inspect $id | sed -n 's/.*\"apparmor\": \"\\(.*\\)\".*/\\1/p'"
D rm -f "$id" >/dev/null
same "--security-opt apparmor=unconfined is kept" "unconfined" run --security-opt apparmor=unconfined $BB cat /proc/self/attr/current
same "--security-opt apparmor=docker-default is kept" "docker-default (enforce)" run --security-opt apparmor=docker-default $BB cat /proc/self/attr/current
same "AppArmor looks disabled inside (enabled parameter masked)" "" run $BB cat /sys/module/apparmor/parameters/enabled
same "no securityfs inside" "" run $BB ls /sys/kernel/security

## What it allows (system container)

check "tmpfs mount" run $BB sh -c 'mkdir -p /m && mount -t tmpfs t /m && touch /m/x'
check "unshare -m with a propagation change" run $BB unshare -m sh -c 'mount --make-rprivate / && mount -t tmpfs t /tmp'
check "nested procfs" run $BB sh -c 'mkdir -p /p && mount -t proc proc /p && test -r /p/1/status'
check "nested sysfs" run $BB sh -c 'mkdir -p /s && mount -t sysfs sys /s && test -d /s/class/net/lo'
check "namespaced sysctl write (net.ipv4.ip_forward)" run $BB sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
check "namespaced sysctl write (kernel.shmmax)" run $BB sh -c 'echo 123456789 >/proc/sys/kernel/shmmax && grep -qx 123456789 /proc/sys/kernel/shmmax'
check "per-container sysctl write (kernel.panic)" run $BB sh -c 'echo 7 >/proc/sys/kernel/panic && grep -qx 7 /proc/sys/kernel/panic'
check "per-container sysctl write (fs.file-max)" run $BB sh -c 'echo 100000 >/proc/sys/fs/file-max'
check "nested user namespace" run $BB unshare -U -r true

## What it refuses (system container)

denied "write to /proc/sysrq-trigger" run $BB -- 'echo h >/proc/sysrq-trigger'
denied "read /proc/kcore" run $BB -- 'head -c1 /proc/kcore'
hostcp=$(cat /proc/sys/kernel/core_pattern)
denied "write to kernel.core_pattern" run $BB -- 'echo "|/bin/false" >/proc/sys/kernel/core_pattern'
same "the host's core_pattern is unchanged" "$hostcp" cat /proc/sys/kernel/core_pattern
denied "write to a host-wide sysctl (vm.drop_caches)" run $BB -- 'echo 1 >/proc/sys/vm/drop_caches'
denied "write to a host-wide /sys knob (kernel/mm)" run $BB -- 'echo never >/sys/kernel/mm/transparent_hugepage/enabled'
denied "reach AppArmor's securityfs" run $BB -- 'ls /sys/kernel/security/apparmor'
denied "remount /proc/sys read-write" run $BB -- 'mount -o remount,rw /proc/sys'
denied "remount /sys read-write" run $BB -- 'mount -o remount,rw /sys'
denied "remount /proc" run $BB -- 'mount -o remount,rw,suid /proc'
denied "change to unconfined (attr exec)" run $BB -- 'echo "exec unconfined" >/proc/self/attr/apparmor/exec'
denied "change to unconfined (attr current)" run $BB -- 'echo "changeprofile unconfined" >/proc/self/attr/current'
denied "load a profile" run $BB -- 'echo x >/sys/kernel/security/apparmor/.replace'

## Docker in Docker and systemd, per inner engine

dinds=${AA_DIND:-}
if [ -z "$dinds" ] && [ "$ENGINE" = system ]; then
	dinds=trixie:sysvisor-test/dind
elif [ -z "$dinds" ] && [ -s "${SYSVISOR_CACHE:-/var/cache/sysvisor}/dind-bookworm.tar" ]; then
	dinds="bookworm:${SYSVISOR_CACHE:-/var/cache/sysvisor}/dind-bookworm.tar"
fi
[ -n "$dinds" ] || skip "Docker in Docker and systemd" "no AA_DIND and no cached bookworm image"
mkdir -p "$SV_DIR"
D save $BB >"$SV_DIR/busybox.tar"
for spec in $dinds; do
	name=${spec%%:*} img=${spec#*:}
	if [ -f "$img" ] || [ -b "$img" ]; then
		tar=$img img=sysvisor-test/dind-$name
		D image inspect "$img" >/dev/null 2>&1 || D import -c 'CMD ["/sbin/init"]' "$tar" "$img" >/dev/null || { bad "[$name] import $tar"; continue; }
	fi
	c=aa-dind-$name
	D run -d --name $c --runtime=sysvisor-runc "$img" dockerd >/dev/null || { bad "[$name] start dockerd"; continue; }
	if ! wait_for 120 D exec $c docker info; then bad "[$name] inner dockerd up" "$(D logs $c 2>&1 | tail -5)"; D rm -f $c >/dev/null; continue; fi
	secopts=$(D exec $c docker info -f '{{json .SecurityOptions}}' 2>&1)
	if grep -q apparmor <<<"$secopts"; then bad "[$name] inner dockerd sees no AppArmor" "$secopts"; else ok "[$name] inner dockerd sees no AppArmor"; fi
	same "[$name] inner dockerd uses overlay2" overlay2 D exec $c docker info -f '{{.Driver}}'
	D exec -i $c docker load <"$SV_DIR/busybox.tar" >/dev/null || bad "[$name] docker load"
	I() { D exec $c docker run --rm "$@"; }
	same "[$name] inner container runs under $PROFILE" "$PROFILE (enforce)" I $BB cat /proc/self/attr/current
	check "[$name] inner docker run with limits" I --memory 64m --cpus 0.5 --pids-limit 50 $BB echo hi
	check "[$name] inner container: tmpfs mount" I --cap-add SYS_ADMIN --security-opt seccomp=unconfined $BB sh -c 'mkdir -p /m && mount -t tmpfs t /m'
	check "[$name] inner container: namespaced sysctl" I --sysctl net.ipv4.ip_forward=1 $BB true
	denied "[$name] inner container: write to /proc/sysrq-trigger" I --privileged $BB -- 'echo h >/proc/sysrq-trigger'
	denied "[$name] inner container: write to kernel.core_pattern" I --privileged $BB -- 'echo "|/bin/false" >/proc/sys/kernel/core_pattern'
	denied "[$name] inner container: write to vm.drop_caches" I --privileged $BB -- 'echo 1 >/proc/sys/vm/drop_caches'
	denied "[$name] inner container: remount /proc/sys rw" I --cap-add SYS_ADMIN --security-opt seccomp=unconfined $BB -- 'mount -o remount,rw /proc/sys'
	denied "[$name] inner container: remount /sys rw" I --cap-add SYS_ADMIN --security-opt seccomp=unconfined $BB -- 'mount -o remount,rw /sys'
	denied "[$name] inner container: read /proc/kcore" I --privileged $BB -- 'head -c1 /proc/kcore'
	denied "[$name] inner container: change to unconfined" I --privileged $BB -- 'echo "exec unconfined" >/proc/self/attr/apparmor/exec'
	D rm -f $c >/dev/null

	c=aa-systemd-$name
	D run -d --name $c --runtime=sysvisor-runc "$img" /sbin/init >/dev/null || { bad "[$name] start systemd"; continue; }
	state=
	for _ in $(seq 1 120); do
		state=$(D exec $c systemctl is-system-running 2>/dev/null) || true
		case $state in running | degraded) break ;; esac
		sleep 1
	done
	same "[$name] systemd as init: running" running echo "$state"
	same "[$name] systemd as init: no failed units" "" D exec $c systemctl --failed --no-legend --plain
	same "[$name] systemd as init under $PROFILE" "$PROFILE (enforce)" D exec $c cat /proc/1/attr/current
	if wait_for 60 D exec $c docker info; then
		D exec -i $c docker load <"$SV_DIR/busybox.tar" >/dev/null
		check "[$name] dockerd under systemd: inner docker run with limits" D exec $c docker run --rm --memory 64m $BB echo hi
	else
		bad "[$name] dockerd under systemd" "$(D exec $c systemctl status docker 2>&1 | tail -5)"
	fi
	D rm -f $c >/dev/null
done

## The profile leaves the kernel

# The next create loads it again (sysvisor-runc), never runs unconfined.
apparmor_parser -R "$PROFILE_FILE" >/dev/null 2>&1 || apparmor_parser -R <<<"profile $PROFILE {}" >/dev/null 2>&1
refuse "profile removed" loaded
same "after apparmor_parser -R: the next create runs under $PROFILE again" "$PROFILE (enforce)" run $BB cat /proc/self/attr/current
# sysvisord loads it at start.
apparmor_parser -R "$PROFILE_FILE" >/dev/null 2>&1
restart_sysvisord >/dev/null 2>&1
check "sysvisord loads it at start" wait_for 10 loaded
# A profile named by a policy that the kernel lacks fails the create, naming it.
printf 'version = 1\napparmor = "no-such-profile"\nsyscall "sysinfo" { action = "emulate" }\n' >"$POLICIES/aa-missing.hcl"
"${CTL[@]}" policy reload >/dev/null
out=$(run -e SYSVISOR_POLICY=aa-missing $BB true 2>&1)
if [ $? -ne 0 ] && grep -q no-such-profile <<<"$out"; then ok "policy naming a profile that is not loaded: create fails naming it"; else bad "policy naming a profile that is not loaded" "$out"; fi
out=$(run --security-opt apparmor=no-such-profile $BB true 2>&1)
if [ $? -ne 0 ] && grep -q no-such-profile <<<"$out"; then ok "--security-opt naming a profile that is not loaded: create fails naming it"; else bad "--security-opt naming a profile that is not loaded" "$out"; fi

echo "# $pass ok, $failed failed, $skipped skipped"
[ $failed = 0 ]
