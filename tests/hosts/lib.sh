# Shared by tests/hosts/*: the cache, and vm_boot, which boots one VM.
HC=${HOSTS_CACHE:-/var/cache/sysvisor/hosts}
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'tests/hosts: %s\n' "$*" >&2; exit 1; }

# build_payload REPO DIR: sysvisor installed into DIR as docs/install.md says.
build_payload() {
	local repo=$1 d=$2
	say "building $repo and installing it into the payload (make install DESTDIR=...)"
	make -C "$repo" -s install DESTDIR="$d" >&2 || die "make install failed in $repo"
	mkdir -p "$d/etc/docker"
	cat >"$d/etc/docker/daemon.json" <<'JSON'
{
  "runtimes": {
    "sysvisor-runc": {"path": "/usr/local/bin/sysvisor-runc"}
  }
}
JSON
}

# build_busybox REPO TAR: the test image's rootfs as tests/env.sh builds it.
build_busybox() {
	"$1/tests/env.sh" busybox-tar "$2" || die "tests/env.sh busybox-tar failed"
}

# vm_boot --kernel K --disk OVERLAY --workdir W --cmd FILE [--payload DIR]
#         [--setup FILE] [--append ARGS] [--timeout S] [--smp N] [--mem M]
#         [--results-size SIZE] [--file SRC:NAME]... [--ro-disk FILE:SERIAL]...
# Boots kernel K (6.1, 6.12, 7.x) on OVERLAY under TCG with the job disk
# (cmd, payload/, setup, files) built in W, waits for it to power off, and
# unpacks the results disk into W/out (output, rc, journal.gz, ...).
# Logs: W/console.log (ttyS0), W/live.log (ttyS1: the command's output).
# Returns 0 when the job ran to its end (whatever its rc), 1 when the VM
# failed, hung (killed after the timeout) or gave no results.
vm_boot() {
	local kernel= disk= w= cmd= payload= setup= append= timeout=${HOSTS_TIMEOUT:-1800}
	local smp=${HOSTS_SMP:-2} mem=${HOSTS_MEM:-4G} rsize=${HOSTS_RESULTS_SIZE:-1G}
	local files=() extra=()
	while [ $# -gt 0 ]; do
		case $1 in
		--kernel) kernel=$2; shift 2 ;;
		--disk) disk=$2; shift 2 ;;
		--workdir) w=$2; shift 2 ;;
		--cmd) cmd=$2; shift 2 ;;
		--payload) payload=$2; shift 2 ;;
		--setup) setup=$2; shift 2 ;;
		--append) append=$2; shift 2 ;;
		--timeout) timeout=$2; shift 2 ;;
		--smp) smp=$2; shift 2 ;;
		--mem) mem=$2; shift 2 ;;
		--results-size) rsize=$2; shift 2 ;;
		--file) files+=("$2"); shift 2 ;;
		--ro-disk)
			# FILE:SERIAL, a raw read-only disk at /dev/disk/by-id/virtio-SERIAL
			extra+=(-drive "file=${2%:*},if=none,id=${2##*:},format=raw,readonly=on"
				-device "virtio-blk-pci,drive=${2##*:},serial=${2##*:}")
			shift 2 ;;
		*) die "vm_boot: unknown argument $1" ;;
		esac
	done
	local kd=$HC/kernels/$kernel
	[ -e "$kd/vmlinuz" ] || die "no kernel '$kernel' in $HC/kernels (have: $(ls "$HC/kernels" 2>/dev/null | tr '\n' ' '))"

	# The job disk: a tar read by the guest's hostjob from /dev/disk/by-id/virtio-hostjob.
	local j=$w/job
	rm -rf "$j" "$w/out"
	mkdir -p "$j" "$w/out"
	cp "$cmd" "$j/cmd"
	[ -z "$payload" ] || cp -a "$payload" "$j/payload"
	[ -z "$setup" ] || install -m 0755 "$setup" "$j/setup"
	local f
	for f in "${files[@]}"; do
		mkdir -p "$j/$(dirname "${f#*:}")"
		cp -a "${f%%:*}" "$j/${f#*:}"
	done
	tar -C "$j" -cf "$w/job.tar" .
	rm -rf "$j"
	rm -f "$w/results.img"
	truncate -s "$rsize" "$w/results.img"
	: >"$w/console.log"
	: >"$w/live.log"

	# shellcheck disable=SC2086
	qemu-system-x86_64 -nodefaults -display none -no-reboot -monitor none \
		-accel tcg,thread=multi -cpu max -smp "$smp" -m "$mem" \
		-kernel "$kd/vmlinuz" -initrd "$kd/initrd.img" \
		-append "root=/dev/vda rw console=ttyS0 panic=-1 $append" \
		-drive "file=$disk,if=none,id=root,format=qcow2,cache=unsafe,discard=unmap" \
		-device virtio-blk-pci,drive=root,serial=root \
		-drive "file=$w/job.tar,if=none,id=hostjob,format=raw,readonly=on" \
		-device virtio-blk-pci,drive=hostjob,serial=hostjob \
		-drive "file=$w/results.img,if=none,id=results,format=raw,cache=writethrough" \
		-device virtio-blk-pci,drive=results,serial=results \
		"${extra[@]}" \
		-nic none -serial "file:$w/console.log" -serial "file:$w/live.log" \
		</dev/null >"$w/qemu.log" 2>&1 &
	local qpid=$! t0=$SECONDS done_at= status=ok
	echo "$qpid" >"$w/qemu.pid"
	while kill -0 "$qpid" 2>/dev/null; do
		if [ -z "$done_at" ] && grep -q '^HOSTJOB-DONE' "$w/live.log" 2>/dev/null; then
			done_at=$SECONDS
		fi
		if [ -n "$done_at" ] && [ $((SECONDS - done_at)) -gt "${HOSTS_POWEROFF_GRACE:-120}" ]; then
			echo "tests/hosts: the job finished but the VM did not power off within ${HOSTS_POWEROFF_GRACE:-120} s: killed" >>"$w/qemu.log"
			status=poweroff-hang
			kill "$qpid" 2>/dev/null || true
			break
		fi
		if [ $((SECONDS - t0)) -gt "$timeout" ]; then
			echo "tests/hosts: no end after $timeout s: killed" >>"$w/qemu.log"
			status=timeout
			kill "$qpid" 2>/dev/null || true
			break
		fi
		sleep 2
	done
	wait "$qpid" 2>/dev/null
	echo "$((SECONDS - t0))" >"$w/seconds"
	echo "$status" >"$w/status"
	rm -f "$w/job.tar"
	if [ "$status" != timeout ] && tar -C "$w/out" -xf "$w/results.img" 2>/dev/null && [ -s "$w/out/rc" ]; then
		rm -f "$w/results.img"
		return 0
	fi
	rm -f "$w/results.img"
	[ "$status" = ok ] && status=no-results && echo "$status" >"$w/status"
	return 1
}

# console_tail W [N]: the end of a VM's console, for a red cell.
console_tail() {
	echo "--- $1: $(cat "$1/status" 2>/dev/null) after $(cat "$1/seconds" 2>/dev/null) s; console (tail):" >&2
	tail -n "${2:-40}" "$1/console.log" >&2
	[ -s "$1/qemu.log" ] && { echo "--- qemu:" >&2; cat "$1/qemu.log" >&2; }
	return 0
}
