#!/bin/bash
# The host matrix's checks, run as root inside a VM (tests/hosts/matrix) where
# sysvisor is installed as docs/install.md says: the system dockerd (systemd
# cgroup driver) with sysvisor-runc registered, sysvisord.service, containerd.
#
#   checks.sh [REGEX]      run the checks whose names match (default: all)
#   checks.sh --list       the check names, in order
#
# Each check prints one line, "PASS|FAIL|SKIP name (Ns) reason"; its details
# go to $OUT/checks/NAME.log. A check runs in a process of its own under a
# timeout. Containers named keep-* are shared by later checks (two plain
# ones, the DinD and the systemd one); a check's own containers (hc-NAME*)
# are removed after it. Two groups of checks run side by side (see group;
# CHECK_JOBS=1 runs everything in order).
# Needs: sysvisor-test/busybox ($JOB/images/busybox.tar) and sysvisor-test/dind
# (in the image). $JOB/gotest/*.test and $JOB/src (the repository) for the
# go-* checks, $JOB/e2e for e2e-suite.
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
SELF=$(realpath "$0")
JOB=${JOB:-$(dirname "$SELF")}
OUT=${OUT:-/tmp/hosts-out}
STATE=/run/hosts-checks
IMG=sysvisor-test/busybox
DIND=sysvisor-test/dind
RT=--runtime=sysvisor-runc

CHECKS=(
	floor run ranges sysvisorctl-ps
	mount-tmpfs unshare-mount-proc mount-proc mount-sysfs protected-mounts
	view-free view-cpus view-uptime sysctl product-uuid
	attack-proc attack-sysctls attack-cgroup attack-remount attack-devices attack-privileged
	dind-dockerd dind-memory dind-cpus dind-pids dind-cpuset
	systemd-init systemd-dind systemd-stop
	containerd-ctr
	cri-pod
	apparmor restart
	go-kernel go-handlers go-itest go-mountinfo go-cgroup go-viewfs go-holder go-runtime go-doctor go-netmove go-enginefs go-notify
	demo e2e-suite
)

# Per-check time limits (s); TCG is slow.
limit() {
	case $1 in
	go-*) echo 1500 ;;
	e2e-suite) echo "${E2E_LIMIT:-7200}" ;;
	demo) echo 1200 ;;
	dind-dockerd | systemd-init) echo 400 ;;
	cri-pod) echo 600 ;;
	apparmor) echo 1500 ;;
	restart) echo 600 ;;
	*) echo 300 ;;
	esac
}

# ---- verdicts (inside a check's process; fd 3 is the result stream)
verdict() { # KIND reason...
	local r="${*:2}"
	r=$(printf '%s' "$r" | tr '\n\t' '  ' | sed 's/  */ /g' | cut -c1-300)
	printf '%s %s %s\n' "$1" "$CHECK" "$r" >&3
	exit 0
}
pass() { verdict PASS "$@"; }
fail() { verdict FAIL "$@"; }
skip() { verdict SKIP "$@"; }
# last OUTPUT: the last non-empty line of a command's output, for a reason,
# without the layers of context docker and runc put before the cause.
last() {
	printf '%s\n' "$1" | grep -v '^[[:space:]]*$' | grep -v "^See 'docker run --help'" | tail -1 |
		sed -E 's/^docker: Error response from daemon: //; s/failed to create task for container: failed to create shim task: //;
			s/OCI runtime create failed: //; s/runc create failed: unable to start container process: //; s/: unknown\.?$//
			s/container [0-9a-f]{64}: //; s#/[0-9a-f]{64}(-init)?/#/<id>/#g'
}

D() { docker "$@"; }
# sv NAME ARGS...: a detached sysvisor container sleeping, or fail the check.
sv() {
	local n=$1 out
	shift
	out=$(D run -d --name "$n" $RT "$@" $IMG sleep 3600 2>&1) || fail "docker run: $(last "$out")"
}
ex() { D exec "$@"; }
# shared NAME: a plain sysvisor container (keep-NAME) that later checks reuse
# to save container starts (each takes seconds under TCG); checks that use
# it leave it as they found it.
shared() {
	local out
	D exec "keep-$1" true >/dev/null 2>&1 && return 0
	D rm -f "keep-$1" >/dev/null 2>&1
	out=$(D run -d --name "keep-$1" $RT $IMG sleep infinity 2>&1) || fail "docker run: $(last "$out")"
}
refused() { [ -e $STATE/refused ]; }
needs_create() { ! refused || skip "sysvisor refuses this kernel (see floor)"; }
wait_for() { # seconds cmd...: until cmd succeeds, by the clock (one try can take seconds)
	local end=$((SECONDS + $1))
	shift
	while [ $SECONDS -lt $end ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
	return 1
}
# running C: container C runs.
running() { [ "$(D inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }
# died C: why container C is not running, for a reason, with its log in ours.
died() {
	echo "--- $1 is not running: $(D inspect -f 'exit {{.State.ExitCode}} oom {{.State.OOMKilled}} error {{.State.Error}}' "$1" 2>&1)"
	D logs "$1" 2>&1 | tail -40
	echo "$1 exited: $(D inspect -f 'exit {{.State.ExitCode}}{{if .State.OOMKilled}}, OOM-killed{{end}}' "$1" 2>&1); last log line: $(D logs "$1" 2>&1 | grep -v '^[[:space:]]*$' | tail -1 | cut -c1-160)"
}

# ---- basics
c_floor() {
	# Refused below the floor at once (one line, naming kernel, floor and
	# feature), leaving the engine and its other containers untouched; or
	# working. Anything else is the bug of issue 20 (e.g. a broken overlay).
	D run -d --name keep-ref $IMG sleep 3600 >/dev/null || fail "plain runc container: cannot start"
	local before after out rc
	before=$(awk '{print $5, $9, $10}' /proc/self/mountinfo | sort)
	# The first create also gives the ID maps for `run` (a container start
	# costs seconds under TCG).
	out=$(D run --name hc-floor $RT $IMG cat /proc/self/uid_map /proc/self/gid_map 2>&1)
	rc=$?
	echo "$out"
	if [ $rc = 0 ]; then
		echo "$out" >$STATE/maps
		D rm hc-floor >/dev/null
		pass "creates work on $(uname -r)"
	fi
	after=$(awk '{print $5, $9, $10}' /proc/self/mountinfo | sort)
	local problems=
	D exec keep-ref true || problems+="the runc container started before no longer runs; "
	D rm hc-floor >/dev/null 2>&1 || problems+="docker rm of the refused container failed; "
	[ "$before" = "$(awk '{print $5, $9, $10}' /proc/self/mountinfo | sort)" ] ||
		{ problems+="mounts changed; "; diff <(echo "$before") <(echo "$after"); }
	if echo "$out" | grep -q "older than sysvisor's floor"; then
		touch $STATE/refused
		echo "$out" | grep -q "kernel $(uname -r)" || problems+="the refusal does not name $(uname -r); "
		[ -z "$problems" ] || fail "refused, but: $problems"
		pass "refused: $(echo "$out" | grep -o "kernel $(uname -r) is older.*" | sed 's/: unknown\.$//')"
	fi
	fail "create failed: $(last "$out") ${problems:+($problems)}"
}

c_run() {
	needs_create
	local m
	if [ -s $STATE/maps ]; then
		m=$(cat $STATE/maps) # from floor's container
	else
		m=$(D run --rm $RT $IMG cat /proc/self/uid_map /proc/self/gid_map 2>&1) || fail "$(last "$m")"
	fi
	echo "$m"
	set -- $m
	[ $# = 6 ] && [ "$1" = 0 ] && [ "$3" = 65536 ] && [ "$2" -ge 100000 ] && [ "$4" = 0 ] && [ "$5" = "$2" ] && [ "$6" = 65536 ] ||
		fail "uid/gid map '$m', want 0 <base> 65536 twice"
	pass "uid_map 0 $2 65536"
}

c_ranges() {
	needs_create
	shared a
	shared b
	local a b
	a=$(ex keep-a cat /proc/self/uid_map | awk '{print $2}')
	b=$(ex keep-b cat /proc/self/uid_map | awk '{print $2}')
	echo "a=$a b=$b"
	[ -n "$a" ] && [ -n "$b" ] || fail "no uid_map"
	if [ "$a" -lt $((b + 65536)) ] && [ "$b" -lt $((a + 65536)) ]; then fail "ranges overlap: $a and $b"; fi
	local ua
	ua=$(awk '/^Uid:/{print $2}' /proc/"$(D inspect -f '{{.State.Pid}}' keep-a)"/status)
	[ "$ua" = "$a" ] || fail "init of keep-a runs as uid $ua on the host, want $a"
	pass "disjoint: $a, $b; init's host uid is the base"
}

c_sysvisorctl-ps() {
	needs_create
	shared a
	local id out
	id=$(D inspect -f '{{.Id}}' keep-a)
	out=$(sysvisorctl ps 2>&1) || fail "sysvisorctl ps: $(last "$out")"
	echo "$out"
	echo "$out" | grep -q "^${id:0:12}" || fail "container ${id:0:12} not listed"
	local base
	base=$(ex keep-a cat /proc/self/uid_map | awk '{print $2}')
	echo "$out" | grep "^${id:0:12}" | grep -qw "$base" || fail "listed without its ID base $base"
	pass "lists ${id:0:12} running with base $base"
}

# ---- mounts
c_mount-tmpfs() {
	needs_create
	shared a
	local out
	out=$(ex keep-a sh -c 'mkdir -p /mnt/t && echo "mount $(mountcall mount hcx /mnt/t tmpfs 0 size=4m)";
		echo "type $(awk "\$5==\"/mnt/t\"{for(i=7;i<NF;i++) if(\$i==\"-\"){print \$(i+1); exit}}" /proc/self/mountinfo)";
		echo "write $(echo hi >/mnt/t/f && cat /mnt/t/f)"; echo "umount $(mountcall umount /mnt/t 0)"' 2>&1)
	echo "$out"
	[ "$out" = $'mount ok\ntype tmpfs\nwrite hi\numount ok' ] || fail "$(echo "$out" | tr '\n' ' ')"
	pass "mount, write, umount"
}

c_unshare-mount-proc() {
	needs_create
	local out ps mi
	out=$(D run --rm $RT $IMG unshare -p -f --mount-proc sh -c 'ps -o pid,comm; echo ---; cat /proc/self/mountinfo' 2>&1) ||
		fail "$(last "$out")"
	echo "$out"
	ps=${out%%---*}
	mi=${out#*---}
	echo "$ps" | awk 'NR==2' | grep -Eq '^ *1 +sh$' || fail "ps does not show sh as pid 1: $(echo "$ps" | tr '\n' ' ')"
	# The new /proc (the last mount at /proc) carries the masks: /proc/sys read-only.
	local pid
	pid=$(echo "$mi" | awk '$5=="/proc"{id=$1} END{print id}')
	echo "$mi" | awk -v p="$pid" '$2==p && $5=="/proc/sys" && $6 ~ /(^|,)ro(,|$)/' | grep -q . ||
		fail "the new /proc has no read-only /proc/sys on it"
	pass "pid 1 in a new pid namespace, masks on the new /proc"
}

c_mount-proc() {
	needs_create
	shared a
	local out
	out=$(ex keep-a sh -c 'mkdir -p /mnt/p; echo "mount $(mountcall mount proc /mnt/p proc 0 -)"' 2>&1)
	echo "$out"
	[ "$out" = "mount ok" ] || fail "mount -t proc: $out"
	# The same masks on /mnt/p as on /proc (place, type, root, ro).
	out=$(ex keep-a sh -c '
		masks() { awk -v p="$1" '"'"'$5==p{id=$1} {l[NR]=$0} END{for(i=1;i<=NR;i++){split(l[i],f," "); if(f[2]==id){sub("^" p, "", f[5]); ro=(f[6] ~ /(^|,)ro(,|$)/); print f[5], f[4], ro}}}'"'"' /proc/self/mountinfo | sort; }
		masks /proc >/tmp/a; masks /mnt/p >/tmp/b
		echo "count $(wc -l </tmp/a)"
		echo "same $(cmp -s /tmp/a /tmp/b && echo yes || { diff /tmp/a /tmp/b >&2; echo no; })"
		echo "init $(tr "\0" _ </mnt/p/1/cmdline)"
		echo "timer_list $(wc -c </mnt/p/timer_list)"
		echo "write-sys $(echo x 2>&1 >/mnt/p/sys/kernel/domainname | grep -c Read-only)"
		echo "umount-timer_list $(mountcall umount /mnt/p/timer_list 0)"
		echo "umount-sys $(mountcall umount /mnt/p/sys detach)"
		echo "umount-p $(mountcall umount /mnt/p detach)"' 2>&1)
	echo "$out"
	local want=$'same yes\ninit sleep_infinity_\ntimer_list 0\nwrite-sys 1\numount-timer_list EPERM\numount-sys EPERM\numount-p ok'
	[ "$(echo "$out" | grep -v '^count')" = "$want" ] || fail "$(echo "$out" | tr '\n' ' ')"
	pass "mounted with the container's $(echo "$out" | awk '/^count/{print $2}') masks, still protected"
}

c_mount-sysfs() {
	needs_create
	shared a
	local out
	out=$(ex keep-a sh -c 'mkdir -p /mnt/s; unshare -n sh -c "
		echo \"mount \$(mountcall mount sysfs /mnt/s sysfs 0 -)\"
		echo \"net \$(ls /mnt/s/class/net | tr \"\n\" ,)\"
		echo \"firmware-files \$(ls -A /mnt/s/firmware | wc -l)\"
		echo \"umount-firmware \$(mountcall umount /mnt/s/firmware 0)\"
		echo \"umount-s \$(mountcall umount /mnt/s detach)\""' 2>&1)
	echo "$out"
	[ "$out" = $'mount ok\nnet lo,\nfirmware-files 0\numount-firmware EPERM\numount-s ok' ] || fail "$(echo "$out" | tr '\n' ' ')"
	pass "new netns sysfs: lo only, firmware masked and protected"
}

c_protected-mounts() {
	needs_create
	shared a
	local out
	out=$(ex keep-a sh -c 'mkdir -p /mnt/bd
		echo "umount-/proc $(mountcall umount /proc 0)"
		echo "umount-/proc/sys $(mountcall umount /proc/sys 0)"
		echo "umount-/proc/timer_list $(mountcall umount /proc/timer_list 0)"
		echo "detach-/sys/firmware $(mountcall umount /sys/firmware detach)"
		echo "umount-/etc/hosts $(mountcall umount /etc/hosts 0)"
		echo "rw-/proc/sys $(mountcall mount - /proc/sys - remount,bind -)"
		echo "move-/proc/sys $(mountcall mount /proc/sys /mnt/bd - move -)"
		echo "bind-/proc $(mountcall mount /proc /mnt/bd - bind -)"
		echo "bind-/sys $(mountcall mount /sys /mnt/bd - bind -)"' 2>&1)
	echo "$out"
	local want='umount-/proc EBUSY
umount-/proc/sys EPERM
umount-/proc/timer_list EPERM
detach-/sys/firmware EPERM
umount-/etc/hosts EPERM
rw-/proc/sys EPERM
move-/proc/sys EPERM
bind-/proc EINVAL
bind-/sys EINVAL'
	[ "$out" = "$want" ] || fail "$(diff <(echo "$want") <(echo "$out") | grep '^>' | tr '\n' ' ')"
	pass "umount/move/remount/bind of the runtime's mounts refused"
}

# ---- views
c_view-free() {
	needs_create
	local out total
	out=$(D run --rm $RT --memory 256m $IMG sh -c 'free -m; grep MemTotal /proc/meminfo' 2>&1) || fail "$(last "$out")"
	echo "$out"
	total=$(echo "$out" | awk '$1=="Mem:"{print $2}')
	[ -n "$total" ] && [ "$total" -ge 250 ] && [ "$total" -le 256 ] || fail "free -m total '$total' MiB, want 256"
	echo "$out" | grep -Eq '^MemTotal: +262144 kB' || fail "meminfo: $(echo "$out" | grep MemTotal)"
	pass "free: $total MiB, MemTotal 262144 kB"
}

c_view-cpus() {
	needs_create
	local n
	n=$(nproc)
	[ "$n" -ge 2 ] || skip "the VM has $n CPU: a limit to 1 cannot be told apart"
	local last=$((n - 1)) out
	out=$(D run --rm $RT --cpuset-cpus "$last" $IMG sh -c 'echo "nproc $(nproc)"; echo "cpuinfo $(grep -c ^processor /proc/cpuinfo)"; echo "online $(cat /sys/devices/system/cpu/online)"' 2>&1) ||
		fail "$(last "$out")"
	echo "--cpuset-cpus $last: $out"
	[ "$out" = $'nproc 1\ncpuinfo 1\nonline '"$last" ] || fail "--cpuset-cpus $last: $(echo "$out" | tr '\n' ' ')"
	out=$(D run --rm $RT --cpus 0.5 $IMG sh -c 'echo "cpuinfo $(grep -c ^processor /proc/cpuinfo)"; echo "online $(cat /sys/devices/system/cpu/online)"' 2>&1) ||
		fail "$(last "$out")"
	echo "--cpus 0.5: $out"
	[ "$out" = $'cpuinfo 1\nonline 0' ] || fail "--cpus 0.5 on $n CPUs: $(echo "$out" | tr '\n' ' ')"
	pass "--cpuset-cpus $last: nproc 1, cpu $last online; --cpus 0.5: one CPU"
}

c_view-uptime() {
	needs_create
	local out host
	out=$(D run --rm $RT $IMG cat /proc/uptime 2>&1) || fail "$(last "$out")"
	host=$(cut -d' ' -f1 /proc/uptime)
	echo "container: $out; VM: $host"
	# A fresh container's, not the VM's (up a minute or more by now); TCG
	# under load can take a few seconds from start to cat.
	awk -v c="${out%% *}" -v h="$host" 'BEGIN{exit !(c < 30 && c < h - 30)}' || fail "/proc/uptime ${out%% *} s (VM $host s), want the container's (< 30 s)"
	pass "${out%% *} s (VM: $host s)"
}

c_sysctl() {
	needs_create
	local host v out
	host=$(cat /proc/sys/kernel/panic)
	v=7
	[ "$host" != 7 ] || v=9
	shared a
	shared b
	out=$(ex keep-a sh -c "sysctl -w kernel.panic=$v >/dev/null 2>&1 && echo ok || echo refused; cat /proc/sys/kernel/panic" 2>&1)
	echo "$out"
	[ "$out" = $'ok\n'"$v" ] || fail "sysctl -w kernel.panic=$v inside: $(echo "$out" | tr '\n' ' ')"
	[ "$(cat /proc/sys/kernel/panic)" = "$host" ] || { echo "$host" >/proc/sys/kernel/panic; fail "reached the host"; }
	[ "$(ex keep-b cat /proc/sys/kernel/panic)" = "$host" ] || fail "another container reads $(ex keep-b cat /proc/sys/kernel/panic)"
	pass "kernel.panic=$v inside, host and neighbour keep $host"
}

c_product-uuid() {
	needs_create
	shared a
	shared b
	local a b host=
	a=$(ex keep-a cat /sys/devices/virtual/dmi/id/product_uuid 2>&1)
	b=$(ex keep-b cat /sys/class/dmi/id/product_uuid 2>&1)
	host=$(cat /sys/devices/virtual/dmi/id/product_uuid 2>/dev/null)
	echo "a=$a b=$b host=$host"
	[ ${#a} = 36 ] || fail "product_uuid: $a"
	[ ${#b} = 36 ] || fail "product_uuid (via /sys/class): $b"
	[ "$a" != "$b" ] || fail "two containers share $a"
	[ "$a" != "$host" ] || fail "the container sees the host's"
	pass "$a (host: ${host:-none})"
}

# ---- attacks (from tests/e2e and tests/dind.sh)
c_attack-proc() {
	needs_create
	shared a
	local out r= before sysrq param
	before=$(dmesg | grep -c 'sysrq: ')
	sysrq=$(cat /proc/sys/kernel/sysrq)
	param=$(cat /sys/module/printk/parameters/time)
	# One exec (each costs seconds under TCG); "label result" lines.
	out=$(ex keep-a sh -c '
		w() { (echo "$2" >"$1") 2>/dev/null && echo written || echo refused; }
		echo "sysrq-trigger $(w /proc/sysrq-trigger h)"
		echo "kcore $(head -c 16 /proc/kcore 2>/dev/null | wc -c)"
		echo "kmsg $( (exec 3</proc/kmsg) 2>/dev/null && echo opened || echo refused)"
		echo "module-param $(w /sys/module/printk/parameters/time 1)"
		echo "kernel.sysrq $(w /proc/sys/kernel/sysrq 1)"' 2>&1)
	echo "$out"
	echo "$out" | grep -q '^sysrq-trigger refused$' || r+="sysrq-trigger written; "
	[ "$(dmesg | grep -c 'sysrq: ')" = "$before" ] || r+="sysrq reached the kernel; "
	echo "$out" | grep -q '^kcore 0$' || r+="kcore readable; "
	echo "$out" | grep -q '^kmsg refused$' || r+="kmsg opened; "
	echo "$out" | grep -q '^module-param refused$' || r+="module parameter written; "
	[ "$(cat /sys/module/printk/parameters/time)" = "$param" ] || r+="printk.time changed on the host; "
	[ "$(cat /proc/sys/kernel/sysrq)" = "$sysrq" ] || r+="kernel.sysrq changed on the host; "
	[ -z "$r" ] || fail "$r"
	pass "sysrq-trigger, kcore, kmsg, module parameters refused; kernel.sysrq inside: $(echo "$out" | awk '$1=="kernel.sysrq"{print $2}'), host unchanged"
}

HOST_KNOBS="kernel/core_pattern kernel/panic kernel/modprobe fs/file-max vm/overcommit_memory kernel/randomize_va_space kernel/dmesg_restrict kernel/pid_max net/ipv4/ip_forward kernel/shmmax kernel/hostname"
c_attack-sysctls() {
	needs_create
	sv hc-attack-sysctls
	local before after k r= out
	before=$(for k in $HOST_KNOBS; do echo "$k=$(cat /proc/sys/$k)"; done)
	out=$(ex hc-attack-sysctls sh -c 'for k in '"$HOST_KNOBS"'; do
		v=1; [ $k = kernel/core_pattern ] && v="|/tmp/evil %p"
		(echo "$v" >/proc/sys/$k) 2>/dev/null && echo "$k written" || echo "$k refused"
	done' 2>&1)
	echo "$out"
	echo "$out" | grep -q '^kernel/core_pattern refused$' || r+="core_pattern written inside; "
	after=$(for k in $HOST_KNOBS; do echo "$k=$(cat /proc/sys/$k)"; done)
	if [ "$before" != "$after" ]; then
		diff <(echo "$before") <(echo "$after")
		r+="host changed: $(diff <(echo "$before") <(echo "$after") | grep '^>' | tr '\n' ' ')"
		# Put them back: later checks read them.
		echo "$before" | while IFS== read -r k v; do echo "$v" >/proc/sys/$k 2>/dev/null; done
	fi
	[ -z "$r" ] || fail "$r"
	pass "host sysctls unchanged; accepted inside as the container's own: $(echo "$out" | awk '$2=="written"{printf "%s ", $1}')"
}

c_attack-cgroup() {
	needs_create
	sv hc-attack-cgroup --memory 256m --pids-limit 100
	local id cg r=
	id=$(D inspect -f '{{.Id}}' hc-attack-cgroup)
	cg=$(find /sys/fs/cgroup -maxdepth 3 -type d -name "*$id*" | head -1)
	[ -n "$cg" ] || fail "no cgroup of the container on the host"
	echo "cgroup $cg: memory.max $(cat "$cg/memory.max"), pids.max $(cat "$cg/pids.max")"
	ex hc-attack-cgroup sh -c 'ls -l /sys/fs/cgroup/; cat /proc/self/cgroup'
	ex hc-attack-cgroup sh -c 'echo max >/sys/fs/cgroup/memory.max' 2>/dev/null && r+="memory.max written; "
	ex hc-attack-cgroup sh -c 'echo max >/sys/fs/cgroup/pids.max' 2>/dev/null && r+="pids.max written; "
	ex hc-attack-cgroup sh -c 'for f in /sys/fs/cgroup/*/memory.max; do echo max >$f; done' 2>/dev/null
	ex hc-attack-cgroup sh -c 'mkdir -p /mnt/c && mount -t cgroup2 none /mnt/c && echo max >/mnt/c/memory.max' 2>/dev/null && r+="memory.max written through a new cgroup2 mount; "
	[ "$(cat "$cg/memory.max")" = 268435456 ] || r+="host memory.max now $(cat "$cg/memory.max"); "
	[ "$(cat "$cg/pids.max")" = 100 ] || r+="host pids.max now $(cat "$cg/pids.max"); "
	[ -z "$r" ] || fail "$r"
	pass "the container's own memory.max and pids.max stay as the engine set them"
}

c_attack-remount() {
	needs_create
	shared a
	local out
	out=$(ex keep-a sh -c '
		echo "proc-sys $(mount -o remount,rw /proc/sys 2>/dev/null && echo done || echo refused)"
		echo "sys $(mount -o remount,rw /sys 2>/dev/null && echo done || echo refused)"
		echo "bind-rw-sys $(mount -o remount,bind,rw /sys 2>/dev/null && echo done || echo refused)"
		echo "write-sys $(echo 1 2>/dev/null >/sys/kernel/mm/ksm/run && echo done || echo refused)"
		echo "write-proc-sys $(echo 1 2>/dev/null >/proc/sys/vm/drop_caches && echo done || echo refused)"
		echo "new-proc-rw $(mkdir -p /mnt/p && mount -t proc proc /mnt/p 2>/dev/null && { echo 1 2>/dev/null >/mnt/p/sys/vm/drop_caches && echo done || echo refused; } || echo no-mount)"
		umount /mnt/p 2>/dev/null; true' 2>&1)
	echo "$out"
	echo "$out" | grep -q ' done$' && fail "$(echo "$out" | grep ' done$' | tr '\n' ' ')"
	pass "remounts of /proc/sys and /sys refused, kernel knobs not writable"
}

c_attack-devices() {
	needs_create
	shared a
	local mm out r=
	mm=$(stat -c '%t %T' /dev/vda)
	mm=$(printf '%d %d' 0x${mm% *} 0x${mm#* })
	out=$(ex keep-a sh -c "
		echo \"disk \$(mknod /tmp/hc-disk b $mm 2>/dev/null; head -c 512 /tmp/hc-disk 2>/dev/null | wc -c)\"
		echo \"mem \$(head -c 1 /dev/mem 2>/dev/null | wc -c)\"
		echo \"mknod-mem \$(mknod /tmp/hc-mem c 1 1 2>/dev/null; head -c 1 /tmp/hc-mem 2>/dev/null | wc -c)\"
		rm -f /tmp/hc-disk /tmp/hc-mem" 2>&1)
	echo "$out"
	[ "$out" = $'disk 0\nmem 0\nmknod-mem 0' ] || fail "$(echo "$out" | tr '\n' ' ') (bytes read)"
	pass "the VM's disk (b $mm) and memory unreadable"
}

c_attack-privileged() {
	needs_create
	local out r=
	out=$(D run --rm --privileged $RT $IMG true 2>&1) && r+="--privileged ran; "
	echo "$out"
	out=$(D run --rm --pid=host $RT $IMG true 2>&1) && r+="--pid=host ran; "
	echo "$out"
	out=$(D run --rm --network=host $RT $IMG true 2>&1) && r+="--network=host ran; "
	echo "$out"
	[ -z "$r" ] || fail "$r"
	pass "--privileged, --pid=host, --network=host refused"
}

# ---- Docker in Docker
load_busybox() { D save $IMG | D exec -i "$1" docker load >/dev/null 2>&1; }
need_inner() {
	running keep-dind || fail "no DinD container (see dind-dockerd)"
	timeout 60 docker exec keep-dind docker info >/dev/null 2>&1 || fail "no inner dockerd (see dind-dockerd)"
	D exec keep-dind docker image inspect $IMG >/dev/null 2>&1 || load_busybox keep-dind || fail "docker load in DinD failed"
}

c_dind-dockerd() {
	needs_create
	local out
	out=$(D run -d --name keep-dind $RT $DIND dockerd 2>&1) || fail "docker run: $(last "$out")"
	inner_ready() { running keep-dind && timeout 60 docker exec keep-dind docker info; }
	wait_for 240 inner_ready
	running keep-dind || fail "$(died keep-dind | tail -1)"
	timeout 60 docker exec keep-dind docker info >/dev/null 2>&1 || { D logs keep-dind 2>&1 | tail -20; fail "inner dockerd not ready after 240 s: $(D logs keep-dind 2>&1 | grep -iE 'level=(error|fatal)|failed' | tail -1)"; }
	D exec keep-dind docker info 2>&1 | grep -iE 'cgroup|storage driver|security|runtimes' 
	load_busybox keep-dind || fail "docker load of busybox into the inner engine failed"
	out=$(D exec keep-dind docker run --rm $IMG true 2>&1) || fail "inner docker run: $(last "$out")"
	pass "inner dockerd $(D exec keep-dind docker version -f '{{.Server.Version}}' 2>/dev/null) ($(D exec keep-dind docker info -f '{{.Driver}}/{{.CgroupDriver}}' 2>/dev/null)), inner docker run works"
}

c_dind-memory() {
	needs_create
	need_inner
	local out rc=0
	out=$(D exec keep-dind docker run --rm --memory 64m --memory-swap 64m $IMG cat /sys/fs/cgroup/memory.max 2>&1) ||
		fail "inner docker run --memory 64m: $(last "$out")"
	[ "$out" = 67108864 ] || fail "inner memory.max '$out', want 67108864"
	out=$(D exec keep-dind docker run --rm --memory 64m --memory-swap 64m $IMG sh -c 'x=$(head -c 200000000 /dev/zero | tr "\0" a); echo ${#x}' 2>&1) || rc=$?
	echo "allocation of 200 MB: exit $rc: $out"
	[ "$rc" = 137 ] || fail "200 MB under --memory 64m: exit $rc, want 137 (OOM kill)"
	pass "memory.max 67108864, 200 MB OOM-killed (137)"
}

c_dind-cpus() {
	needs_create
	need_inner
	local out
	out=$(D exec keep-dind docker run --rm --cpus 0.5 $IMG cat /sys/fs/cgroup/cpu.max 2>&1) || fail "inner docker run --cpus 0.5: $(last "$out")"
	[ "$out" = "50000 100000" ] || fail "inner cpu.max '$out', want 50000 100000"
	pass "cpu.max 50000 100000"
}

c_dind-pids() {
	needs_create
	need_inner
	local out
	# The forks run in a subshell: ash gives up the shell running the loop at
	# the first fork that fails. The reporting shell then uses builtins only
	# (read, echo): no fork needed once the limit bites.
	out=$(D exec keep-dind docker run --rm --pids-limit 20 $IMG sh -c 'read m </sys/fs/cgroup/pids.max; echo "max $m"
		(i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i + 1)); done) 2>/dev/null
		read c </sys/fs/cgroup/pids.current; echo "current $c"' 2>&1)
	echo "$out"
	echo "$out" | grep -q '^max ' || fail "inner docker run --pids-limit 20: $(last "$out")"
	local max cur
	max=$(echo "$out" | awk '$1=="max"{print $2}')
	cur=$(echo "$out" | awk '$1=="current"{print $2}')
	[ "$max" = 20 ] || fail "inner pids.max '$max', want 20"
	[ -n "$cur" ] && [ "$cur" -le 20 ] && [ "$cur" -ge 18 ] || fail "pids.current '$cur' after 40 forks under --pids-limit 20, want 18-20"
	pass "pids.max 20, 40 forks stop at $cur"
}

c_dind-cpuset() {
	needs_create
	need_inner
	local n out
	n=$(nproc)
	[ "$n" -ge 2 ] || skip "the VM has $n CPU"
	out=$(D exec keep-dind docker run --rm --cpuset-cpus $((n - 1)) $IMG sh -c 'cat /sys/fs/cgroup/cpuset.cpus.effective; nproc' 2>&1) ||
		fail "inner docker run --cpuset-cpus $((n - 1)): $(last "$out")"
	[ "$out" = "$((n - 1))"$'\n1' ] || fail "inner cpuset.cpus.effective/nproc: $(echo "$out" | tr '\n' ' ')"
	pass "cpuset.cpus.effective $((n - 1)), nproc 1"
}

# ---- systemd as init
c_systemd-init() {
	needs_create
	local out state=
	out=$(D run -d --name keep-sysd $RT $DIND /sbin/init 2>&1) || fail "docker run: $(last "$out")"
	local end=$((SECONDS + 300))
	while [ $SECONDS -lt $end ]; do
		running keep-sysd || fail "$(died keep-sysd | tail -1)"
		state=$(timeout 60 docker exec keep-sysd systemctl is-system-running 2>/dev/null)
		case "$state" in running | degraded) break ;; esac
		sleep 1
	done
	local failed
	failed=$(D exec keep-sysd systemctl --failed --no-legend --plain 2>&1)
	echo "state: $state; failed: $failed"
	D exec keep-sysd systemctl status --no-pager 2>&1 | head -5
	local u
	for u in $(echo "$failed" | awk '{print $1}'); do
		D exec keep-sysd systemctl status --no-pager -l "$u" 2>&1 | tail -15
	done
	[ "$state" = running ] || fail "is-system-running: ${state:-none}; failed: $(echo "$failed" | awk '{print $1}' | tr '\n' ' ')"
	pass "running, 0 failed units"
}

c_systemd-dind() {
	needs_create
	running keep-sysd || fail "no systemd container (see systemd-init)"
	sysd_docker() { timeout 60 docker exec keep-sysd docker info; }
	wait_for 120 sysd_docker || fail "docker.service in the container: $(D exec keep-sysd systemctl is-active docker 2>&1)"
	load_busybox keep-sysd || fail "docker load failed"
	local out
	out=$(D exec keep-sysd docker run --rm $IMG true 2>&1) || fail "inner docker run: $(last "$out")"
	out=$(D exec keep-sysd docker run --rm --memory 64m --cpus 0.5 $IMG cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max 2>&1) ||
		fail "inner docker run --memory 64m --cpus 0.5: $(last "$out")"
	[ "$out" = $'67108864\n50000 100000' ] || fail "inner memory.max/cpu.max: $(echo "$out" | tr '\n' ' ')"
	pass "docker.service ($(D exec keep-sysd docker info -f '{{.CgroupDriver}}' 2>/dev/null) driver): inner run, memory.max 67108864, cpu.max 50000 100000"
}

c_systemd-stop() {
	needs_create
	running keep-sysd || fail "no systemd container (see systemd-init)"
	local t0 t code
	t0=$(date +%s.%N)
	D stop -t 30 keep-sysd >/dev/null || fail "docker stop failed"
	t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
	code=$(D inspect -f '{{.State.ExitCode}}' keep-sysd)
	D logs keep-sysd 2>&1 | tail -5
	# Not SIGKILLed (137) at the end of the 30 s: systemd shut down by itself
	# (it took 6-21 s under TCG here).
	awk -v t="$t" 'BEGIN{exit !(t < 28)}' || fail "docker stop took ${t} s (exit $code): SIGTERM ignored?"
	[ "$code" != 137 ] || fail "killed (exit 137) after ${t} s"
	pass "stopped in ${t} s, exit $code"

}

# ---- containerd
c_containerd-ctr() {
	needs_create
	local out ref=docker.io/$IMG:latest
	D save -o /tmp/busybox-oci.tar $IMG
	out=$(ctr -n hosts image import /tmp/busybox-oci.tar 2>&1) || fail "ctr image import: $(last "$out")"
	ctr -n hosts image ls -q | grep -qx "$ref" || ref=$IMG:latest
	out=$(ctr -n hosts run --rm --runc-binary /usr/local/bin/sysvisor-runc "$ref" hc-containerd-ctr cat /proc/self/uid_map 2>&1) ||
		fail "ctr run: $(last "$out")"
	echo "$out"
	set -- $out
	[ "${1:-}" = 0 ] && [ "${2:-0}" -ge 100000 ] && [ "${3:-}" = 65536 ] || fail "uid_map under ctr: $out"
	pass "ctr run --runc-binary: uid_map 0 $2 65536"
}

# cri-pod: a Kubernetes pod as the CRI makes it (docs/kubernetes.md) on a
# private containerd (the image's, with its CRI plugin) whose handler sysvisor
# runs the installed sysvisor-runc against sysvisord.service, under the host's
# cgroup v2 and AppArmor. crictl and the CNI plugins come in the job
# ($JOB/cri). Two containers share the pod's user namespace, range, network
# namespace, address and hostname; stopp and rmp leave no lease. Busybox
# only: importing the DinD image into containerd takes ~150 s under TCG, more
# than CI's budget (systemd in a pod: TestCRIPods on the dev host, and this
# check with HOSTS_CRI_POD_SYSTEMD=1 given to tests/hosts/matrix).
CRI=/run/hc-cri CRI_ROOT=/var/lib/hc-cri
cri_down() {
	if [ -f $CRI/containerd.pid ]; then
		"$JOB/cri/crictl" --runtime-endpoint unix://$CRI/c.sock rmp -fa >/dev/null 2>&1
		kill "$(cat $CRI/containerd.pid)" 2>/dev/null
		sleep 2
	fi
	pkill -f "containerd-shim-runc-v2 -namespace k8s.io -address $CRI/c.sock" 2>/dev/null
	grep -e " $CRI" -e " $CRI_ROOT" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
	ip link del hccri0 2>/dev/null
	[ ! -d /sys/fs/cgroup/hc-cri ] || find /sys/fs/cgroup/hc-cri -depth -type d -exec rmdir {} \; 2>/dev/null
	rm -rf /run/hc-cri /var/lib/hc-cri
	return 0
}
# cri_crictl ARGS...: crictl on the private containerd; errors to crictl.err.
cri_crictl() {
	"$JOB/cri/crictl" --runtime-endpoint unix://$CRI/c.sock --image-endpoint unix://$CRI/c.sock --timeout 120s "$@" 2>>$CRI/crictl.err
}
cri_err() { last "$(cat $CRI/crictl.err 2>/dev/null)"; }
c_cri-pod() {
	needs_create
	[ -x "$JOB/cri/crictl" ] || skip "no crictl in the job"
	cri_down
	trap cri_down EXIT
	mkdir -p $CRI/cni $CRI/logs
	printf '%s\n' '{"cniVersion": "0.4.0", "name": "hccri", "plugins": [{"type": "bridge", "bridge": "hccri0", "isGateway": false, "ipMasq": false,' \
		' "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.221.0.0/24"}]], "dataDir": "'$CRI'/ipam"}}]}' >$CRI/cni/10-hc.conflist
	cat >$CRI/config.toml <<-TOML
		version = 2
		root = "$CRI_ROOT"
		state = "$CRI/state"
		[grpc]
		  address = "$CRI/c.sock"
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "docker.io/sysvisor-test/pause:1"
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "$JOB/cri/cni"
		    conf_dir = "$CRI/cni"
		  [plugins."io.containerd.grpc.v1.cri".containerd]
		    default_runtime_name = "sysvisor"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sysvisor]
		      runtime_type = "io.containerd.runc.v2"
		      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.sysvisor.options]
		        BinaryName = "/usr/local/bin/sysvisor-runc"
	TOML
	setsid containerd --config $CRI/config.toml >$CRI/containerd.log 2>&1 </dev/null &
	echo $! >$CRI/containerd.pid
	wait_for 60 ctr --address $CRI/c.sock version || { tail -20 $CRI/containerd.log; fail "containerd did not start"; }
	local out c i
	c=$(D create --entrypoint /bin/pause $IMG) || fail "docker create of the pause image"
	D commit -c 'ENTRYPOINT ["/bin/pause"]' -c 'CMD []' "$c" sysvisor-test/pause:1 >/dev/null
	D rm "$c" >/dev/null
	local images="sysvisor-test/pause:1 $IMG"
	[ -z "${CRI_POD_SYSTEMD:-}" ] || images+=" $DIND"
	for i in $images; do
		out=$(D save "$i" | ctr --address $CRI/c.sock -n k8s.io images import - 2>&1) || fail "import $i: $(last "$out")"
	done
	D rmi sysvisor-test/pause:1 >/dev/null 2>&1
	printf '{"metadata": {"name": "hc", "namespace": "default", "uid": "hc-uid", "attempt": 1}, "hostname": "hc", "log_directory": "%s", "linux": {"cgroup_parent": "/hc-cri/hc"}}\n' \
		$CRI/logs >$CRI/pod.json
	# The kubelet's default PID namespace, the container's own: systemd is PID 1.
	if [ -n "${CRI_POD_SYSTEMD:-}" ]; then
		printf '{"metadata": {"name": "sys"}, "image": {"image": "docker.io/%s:latest"}, "command": ["/sbin/init"], "log_path": "sys.log", "linux": {"security_context": {"namespace_options": {"pid": 1}}}}\n' \
			"$DIND" >$CRI/sys.json
	else
		printf '{"metadata": {"name": "sys"}, "image": {"image": "docker.io/%s:latest"}, "command": ["sleep", "3600"], "log_path": "sys.log", "linux": {"security_context": {"namespace_options": {"pid": 1}}}}\n' \
			"$IMG" >$CRI/sys.json
	fi
	printf '{"metadata": {"name": "app"}, "image": {"image": "docker.io/%s:latest"}, "command": ["sleep", "3600"], "log_path": "app.log", "linux": {"security_context": {"namespace_options": {"pid": 1}}}}\n' \
		"$IMG" >$CRI/app.json
	local pod ip sys app what=busybox
	[ -z "${CRI_POD_SYSTEMD:-}" ] || what=systemd
	pod=$(cri_crictl runp --runtime=sysvisor $CRI/pod.json) || fail "crictl runp: $(cri_err)"
	ip=$(cri_crictl inspectp -o go-template --template '{{.status.network.ip}}' "$pod")
	sys=$(cri_crictl create "$pod" $CRI/sys.json $CRI/pod.json) || fail "crictl create ($what): $(cri_err)"
	cri_crictl start "$sys" >/dev/null || fail "crictl start ($what): $(cri_err)"
	app=$(cri_crictl create "$pod" $CRI/app.json $CRI/pod.json) || fail "crictl create (busybox): $(cri_err)"
	cri_crictl start "$app" >/dev/null || fail "crictl start (busybox): $(cri_err)"
	local ms ma ns na
	ms=$(cri_crictl exec "$sys" cat /proc/self/uid_map)
	ma=$(cri_crictl exec "$app" cat /proc/self/uid_map)
	ns=$(cri_crictl exec "$sys" readlink /proc/self/ns/net)
	na=$(cri_crictl exec "$app" readlink /proc/self/ns/net)
	echo "uid_map: $ms / $ma; net: $ns / $na; pod ip $ip"
	[ -n "$ms" ] && [ "$ms" = "$ma" ] || fail "uid_map differs in one pod: '$ms' and '$ma' $(cri_err)"
	[ -n "$ns" ] && [ "$ns" = "$na" ] || fail "network namespace differs in one pod: '$ns' and '$na'"
	out=$(cri_crictl exec "$app" ip -4 addr show eth0)
	echo "$out" | grep -q " $ip/" || fail "eth0 in the pod lacks the pod's address $ip: $out"
	cri_crictl exec "$app" hostname renamed >/dev/null || fail "hostname in the pod: $(cri_err)"
	[ "$(cri_crictl exec "$sys" hostname)" = renamed ] || fail "the pod's containers do not share UTS"
	local st=running
	[ -z "${CRI_POD_SYSTEMD:-}" ] || for i in $(seq 150); do
		st=$(cri_crictl exec "$sys" systemctl is-system-running)
		case $st in running | degraded) break ;; esac
		sleep 2
	done
	[ "$st" = running ] || fail "systemd in a pod: '$st'; failed units: $(cri_crictl exec "$sys" systemctl --failed --no-legend | tr '\n' ' ')"
	set -- $ms
	local base=${2:-}
	cri_crictl stopp "$pod" >/dev/null && cri_crictl rmp "$pod" >/dev/null || fail "stopp/rmp: $(cri_err)"
	out=$(sysvisorctl ps 2>&1)
	echo "$out"
	! echo "$out" | grep -qe "${pod:0:12}" -e "${sys:0:12}" -e "${app:0:12}" || fail "sysvisorctl ps lists the removed pod's containers"
	! grep -q "\"$pod\"" /var/lib/sysvisor/leases.json || fail "the pod's lease is left after rmp"
	pass "pod: $what and busybox share uid_map (base $base), netns and $ip; rmp left nothing"
}

# ---- AppArmor: tests/hosts/checks-apparmor.sh on the system engine, with
# AppArmor as the cell's kernel command line asked (on: the profile, what it
# allows and refuses in system and inner containers, bookworm's and trixie's
# inner engines; off: containers unaffected).
c_apparmor() {
	needs_create
	local want=on out rc=0 dind="trixie:$DIND"
	grep -qw apparmor=0 /proc/cmdline && want=off
	[ ! -b /dev/disk/by-id/virtio-dindbookworm ] || dind+=" bookworm:/dev/disk/by-id/virtio-dindbookworm"
	out=$(AA_ENGINE=system AA_REQUIRE=$want AA_DIND="$dind" bash "$JOB/src/tests/hosts/checks-apparmor.sh" 2>&1) || rc=$?
	echo "$out"
	local sum
	sum=$(echo "$out" | grep -E '^# [0-9]+ ok' | tail -1 | sed 's/^# //')
	[ $rc = 0 ] || fail "AppArmor $want: ${sum:-exit $rc}; failed: $(echo "$out" | sed -n 's/^FAIL  //p' | tr '\n' ';' | cut -c1-220)"
	pass "AppArmor $want: $sum"
}

# ---- Go test binaries of the kernel-sensitive packages
gotest() { # PKG
	local name=${1//\//-} b
	b=$JOB/gotest/$name.test
	[ -x "$b" ] || skip "$b not built"
	cd "$JOB/src/$1" || fail "no source dir $1"
	local t0=$SECONDS rc=0
	# GOTEST_ARGS (the matrix's HOSTS_GOTEST_ARGS): extra flags, e.g.
	# "-test.run ^TestX$ -test.count 200" to chase a flake on one kernel.
	# shellcheck disable=SC2086
	SYSVISOR_E2E=required "$b" -test.count=1 -test.timeout 20m -test.v ${GOTEST_ARGS:-} >"$OUT/checks/$CHECK.go.log" 2>&1 || rc=$?
	grep -E '^(--- FAIL|FAIL|ok|PASS|panic)' "$OUT/checks/$CHECK.go.log"
	local nfail npass nskip
	nfail=$(grep -c '^\s*--- FAIL' "$OUT/checks/$CHECK.go.log")
	npass=$(grep -c '^\s*--- PASS' "$OUT/checks/$CHECK.go.log")
	nskip=$(grep -c '^\s*--- SKIP' "$OUT/checks/$CHECK.go.log")
	[ $rc = 0 ] || fail "exit $rc; failed: $(grep -E '^\s*--- FAIL' "$OUT/checks/$CHECK.go.log" | awk '{print $3}' | tr '\n' ' ' | cut -c1-200)$(grep -m1 '^panic' "$OUT/checks/$CHECK.go.log")"
	pass "$npass passed, $nskip skipped in $((SECONDS - t0)) s"
}
c_go-kernel() { needs_create_go; gotest kernel; }
c_go-handlers() { needs_create_go; gotest handlers; }
c_go-itest() { needs_create_go; gotest supervisor/itest; }
c_go-mountinfo() { needs_create_go; gotest linux/mountinfo; }
c_go-cgroup() { needs_create_go; gotest linux/cgroup; }
c_go-viewfs() { needs_create_go; gotest supervisor/viewfs; }
c_go-holder() { needs_create_go; gotest holder; }
c_go-runtime() { needs_create_go; gotest runtime; }
c_go-doctor() { needs_create_go; gotest doctor; }
c_go-netmove() { needs_create_go; gotest linux/netmove; }
c_go-notify() { needs_create_go; gotest linux/notify; }
# -test.short: fewer rounds of TestRaceSymlinkSwap (75 s under TCG at full length).
c_go-enginefs() { needs_create_go; GOTEST_ARGS="-test.short ${GOTEST_ARGS:-}" gotest supervisor/enginefs; }
needs_create_go() { :; } # unit tests run below the floor too

# ---- README's first command on this host: tests/demo.sh (what `make demo`
# runs after its installs and build) with this build, against a private
# dockerd; the DinD image from the read-only bookworm disk (no network here).
c_demo() {
	[ -x "$JOB/gotest/tests-e2e.test" ] || skip "not asked for (HOSTS_E2E=1)"
	needs_create
	cd "$JOB/src" || fail "no source tree"
	D ps -aq | xargs -r docker rm -f >/dev/null 2>&1
	local t0=$SECONDS rc=0 log=$OUT/checks/demo.out
	SV_DIND_TAR=/dev/disk/by-id/virtio-dindbookworm bash tests/demo.sh >"$log" 2>&1 || rc=$?
	cat "$log"
	[ $rc = 0 ] || fail "tests/demo.sh exit $rc after $((SECONDS - t0)) s: $(last "$(cat "$log")")"
	grep -q 'hello from an inner container, memory limit 67108864' "$log" || fail "no inner container with its 64 MiB limit in the demo's output"
	pass "tests/demo.sh in $((SECONDS - t0)) s: inner docker run with memory limit 67108864"
}

# ---- the whole end-to-end suite against a private dockerd (cgroupfs driver)
c_e2e-suite() {
	[ -x "$JOB/gotest/tests-e2e.test" ] || skip "not asked for (HOSTS_E2E=1)"
	cd "$JOB/src/tests/e2e" || fail "no tests/e2e"
	# The suite runs its own engine: the system one's containers go first.
	D ps -aq | xargs -r docker rm -f >/dev/null 2>&1
	local t0=$SECONDS rc=0 log=$OUT/checks/e2e-suite.go.log
	SYSVISOR_E2E=required SV_DIND_TAR=/dev/disk/by-id/virtio-dindbookworm \
		"$JOB/gotest/tests-e2e.test" -test.count=1 -test.timeout 115m -test.v ${E2E_SKIP:+-test.skip "$E2E_SKIP"} >"$log" 2>&1 || rc=$?
	grep -E '^(--- FAIL|FAIL|ok|PASS|panic)' "$log"
	local npass nfail t1=$SECONDS
	npass=$(grep -c '^--- PASS' "$log")
	nfail=$(grep -c '^--- FAIL' "$log")
	[ $rc = 0 ] || fail "exit $rc after $((SECONDS - t0)) s; $nfail failed: $(grep '^--- FAIL' "$log" | awk '{print $3}' | tr '\n' ' ' | cut -c1-220)"
	# Then, as make test does, the tests that reach interfaces newer than the
	# floor again with every fallback forced.
	local re flog=$OUT/checks/e2e-fallbacks.go.log
	re=$(sed -n 's/^FALLBACK_TESTS ?= //p' "$JOB/src/Makefile")
	[ -n "$re" ] || fail "no FALLBACK_TESTS in the Makefile"
	SYSVISOR_E2E=required SYSVISOR_KERNEL_FALLBACKS=all SV_DIND_TAR=/dev/disk/by-id/virtio-dindbookworm \
		"$JOB/gotest/tests-e2e.test" -test.count=1 -test.timeout 60m -test.v -test.run "$re" ${E2E_SKIP:+-test.skip "$E2E_SKIP"} >"$flog" 2>&1 || rc=$?
	grep -E '^(--- FAIL|FAIL|ok|PASS|panic)' "$flog"
	local fpass
	fpass=$(grep -c '^--- PASS' "$flog")
	[ $rc = 0 ] || fail "$npass passed in $((t1 - t0)) s; with every fallback forced, exit $rc; failed: $(grep '^--- FAIL' "$flog" | awk '{print $3}' | tr '\n' ' ' | cut -c1-200)"
	pass "$npass tests passed in $((t1 - t0)) s; with every fallback forced, $fpass in $((SECONDS - t1)) s"
}

# ---- restart: the installed units carry a running container across a
# crash of sysvisord (systemd restarts it), `systemctl restart sysvisord`
# and an upgrade (a new binary installed, then the restart), in its own
# process tree: the survivor's loop pauses and goes on without a failure.
# The holder stays the same process throughout.
c_restart() {
	needs_create
	local out c=hc-restart holder0 how pid n0 n1 t0
	out=$(D run -d --name $c $RT --memory 96m $IMG survivor 2>&1) || fail "docker run: $(last "$out")"
	round() { D logs $c 2>/dev/null | sed -n 's/^round \([0-9]*\) up [0-9][0-9]*$/\1/p' | tail -1; }
	wait_for 120 sh -c "[ \"\$(docker logs $c 2>/dev/null | grep -c '^round .* up [0-9]')\" -ge 3 ]" ||
		{ died $c; fail "the survivor never ran 3 rounds: $(D logs $c 2>&1 | tail -1)"; }
	holder0=$(systemctl show -p MainPID --value sysvisor-holder)
	[ "${holder0:-0}" != 0 ] || fail "sysvisor-holder.service is not running: $(systemctl is-active sysvisor-holder)"
	for how in kill restart upgrade; do
		pid=$(systemctl show -p MainPID --value sysvisord)
		t0=$SECONDS
		case $how in
		kill) kill -9 "$pid" ;;
		restart) systemctl restart sysvisord ;;
		upgrade)
			# A new inode at the installed path, as a package upgrade
			# or `make install` leaves it.
			cp /usr/local/bin/sysvisord /tmp/sysvisord.new && install -m 0755 /tmp/sysvisord.new /usr/local/bin/sysvisord &&
				systemctl restart sysvisord || fail "upgrade: install and restart failed"
			;;
		esac
		wait_for 60 sh -c "[ \"\$(systemctl show -p MainPID --value sysvisord)\" != $pid ] && [ \"\$(systemctl show -p MainPID --value sysvisord)\" != 0 ] && systemctl is-active -q sysvisord" ||
			fail "$how: sysvisord not back: $(systemctl status sysvisord 2>&1 | tail -3)"
		n0=$(round)
		wait_for 60 sh -c "[ \"\$(docker logs $c 2>/dev/null | sed -n 's/^round \([0-9]*\) up [0-9][0-9]*\$/\1/p' | tail -1)\" -gt $((n0 + 5)) ]" ||
			{ died $c; fail "$how: the survivor stuck at round $n0 after sysvisord came back"; }
		n1=$(round)
		echo "$how: sysvisord back and the survivor at round $n1 (from $n0) $((SECONDS - t0)) s after the $how"
	done
	[ "$(systemctl show -p MainPID --value sysvisor-holder)" = "$holder0" ] || fail "the holder restarted (was $holder0)"
	if D logs $c 2>&1 | grep -q FAIL; then
		D logs $c 2>&1 | grep FAIL | head -20
		fail "the survivor saw failures: $(D logs $c 2>&1 | grep FAIL | head -1)"
	fi
	sysvisorctl ps | grep -q "^$(D inspect -f '{{.Id}}' $c | cut -c1-12) *running" || fail "sysvisorctl ps: $(sysvisorctl ps 2>&1 | tail -1)"
	out=$(sysvisorctl doctor 2>&1 | grep -E '^(ok|warn|FAIL) +holder')
	echo "$out"
	case $out in ok*) ;; *) fail "doctor: $out" ;; esac
	pass "the survivor went on through kill -9, systemctl restart and an upgrade of sysvisord; holder $holder0 kept; $(D logs $c 2>&1 | grep -c '^round') rounds"
}

# ---- runner
one() { # NAME: run one check in this process
	CHECK=$1
	set +e
	"c_$1"
	echo "FAIL $1 the check gave no verdict" >&3
}

# cleanup_containers CHECK: remove the containers the check made (hc-CHECK*);
# the keep-* ones stay for later checks.
cleanup_containers() {
	local c
	c=$(D ps -aq --filter name="^hc-$1" 2>/dev/null)
	[ -z "$c" ] || D rm -f $c >/dev/null 2>&1
	if [ "$1" = containerd-ctr ]; then
		ctr -n hosts tasks ls -q 2>/dev/null | xargs -r -n1 ctr -n hosts tasks kill -s KILL >/dev/null 2>&1
		ctr -n hosts containers ls -q 2>/dev/null | xargs -r ctr -n hosts containers rm >/dev/null 2>&1
	fi
	return 0
}

# group CHECK: floor runs alone first; then the plain-container checks (1)
# and the DinD/systemd/containerd ones (2) run side by side, each group in
# order (CHECK_JOBS=1: one after the other); the Go tests and the e2e suite
# (3) run last, alone, as they look at the whole host (apparmor restarts
# sysvisord and unloads the profile).
group() {
	case $1 in
	floor) echo 0 ;;
	dind-* | systemd-* | containerd-*) echo 2 ;;
	apparmor | restart | go-* | demo | e2e-*) echo 3 ;;
	*) echo 1 ;;
	esac
}

# run_check NAME: one check under its time limit; prints its result line.
run_check() {
	local c=$1 t0=$SECONDS line
	line=$(timeout -k 10 "$(limit "$c")" "$SELF" --one "$c" 3>&1 >"$OUT/checks/$c.log" 2>&1 | tail -1)
	[ -n "$line" ] || line="FAIL $c timed out after $(limit "$c") s"
	printf '%s %s (%ds) %s\n' "${line%% *}" "$c" $((SECONDS - t0)) "$(echo "$line" | cut -d' ' -f3-)"
	cleanup_containers "$c"
}

run_group() { # G RE
	local c
	for c in "${CHECKS[@]}"; do
		[[ $c =~ $2 ]] && [ "$(group "$c")" = "$1" ] && run_check "$c"
	done
	return 0
}

prepare() {
	mkdir -p "$OUT/checks" $STATE
	local i
	for ((i = 0; i < 120; i++)); do docker info >/dev/null 2>&1 && break; sleep 1; done
	docker image inspect $IMG >/dev/null 2>&1 || docker import -c 'CMD ["/bin/sh"]' "$JOB/images/busybox.tar" $IMG >/dev/null ||
		echo "checks: docker import of busybox failed" >&2
	{
		echo "kernel: $(uname -r)"
		echo "cmdline: $(cat /proc/cmdline)"
		echo "cpus: $(nproc), memory: $(free -m | awk '/^Mem:/{print $2}') MiB"
		echo "cgroup: $(stat -fc %T /sys/fs/cgroup)"
		echo "apparmor: $(cat /sys/module/apparmor/parameters/enabled 2>/dev/null || echo absent)"
		docker version -f 'docker {{.Server.Version}}' 2>&1
		docker info -f 'cgroup driver {{.CgroupDriver}}, security {{.SecurityOptions}}' 2>&1
		runc --version | head -1
		containerd --version
		echo "--- sysvisorctl doctor"
		sysvisorctl doctor 2>&1
	} >"$OUT/host.txt"
}

main() {
	if [ "${1:-}" = --list ]; then printf '%s\n' "${CHECKS[@]}"; exit 0; fi
	if [ "${1:-}" = --one ]; then
		# fd 3 is the result stream; by hand it is stdout.
		{ true >&3; } 2>/dev/null || exec 3>&1
		mkdir -p "$OUT/checks" $STATE
		one "$2"
		exit 0
	fi
	local re=${1:-.} c n=0
	for c in "${CHECKS[@]}"; do [[ $c =~ $re ]] && n=$((n + 1)); done
	[ $n -gt 0 ] || { echo "checks: no check matches '$re'" >&2; exit 2; }
	prepare
	run_group 0 "$re"
	if [ "${CHECK_JOBS:-2}" -ge 2 ]; then
		run_group 2 "$re" &
		run_group 1 "$re"
		wait
	else
		run_group 1 "$re"
		run_group 2 "$re"
	fi
	run_group 3 "$re"
}

# When only a subset runs, floor still runs first (it decides refusal).
if [ "${1:-}" != --one ] && [ "${1:-}" != --list ] && [ -n "${1:-}" ] && ! [[ floor =~ $1 ]]; then
	set -- "^floor\$|$1"
fi
main "$@"
