#!/bin/bash
# OCI conformance (issue 18): the OCI runtime-tools validation suite
# (github.com/opencontainers/runtime-tools, its validation/*/ TAP programs,
# each driving the runtime binary named by RUNTIME) against runc and against
# sysvisor-runc, one after the other in the same run, no engine. Prints the
# ok / not ok counts of both, a table per program, and the TAP lines that
# fail under sysvisor-runc and not under runc; docs/oci-conformance.md
# explains each difference.
#
#   sudo tests/oci-validation.sh                 # or: sudo make oci-validation
#   OCI_TESTS="default hostname" sudo tests/oci-validation.sh   # some programs only
#   OCI_RUNTIMES=sysvisor-runc sudo tests/oci-validation.sh     # one runtime only
#
# The suite's programs are built once into $SYSVISOR_CACHE/runtime-tools/
# (default /var/cache/sysvisor), from the pinned module version below (the
# Go module proxy serves it). sysvisor-runc runs against a private sysvisord
# this script starts under $SV_DIR (default /tmp/sv-oci) and stops at the
# end with `tests/env.sh down` (no dockerd: only sysvisord is started, with
# env.sh's own command line). Each runtime keeps its containers under a
# runc --root of its own and its bundles under a TMPDIR of its own, both in
# $SV_DIR, so whatever a program leaves behind is found and removed; the
# cgroups the programs create (/cgrouptest, testdir/cgrouptest) are removed
# too. The TAP output of each program stays in $OCI_OUT (default
# bench/out/oci-validation/<runtime>/<program>.tap), with summary.txt and
# differences.txt.
#
# Environment: SV_BIN (binaries, default bin/), SV_DIR, OCI_OUT, OCI_TESTS,
# OCI_RUNTIMES (default "runc sysvisor-runc"), OCI_TIMEOUT (seconds per
# program, default 300), RT_VERSION (another runtime-tools version).
set -euo pipefail

# runtime-tools has one tag (v0.9.0, 2019, before its go.mod and most of
# today's validations); this is the main branch of 2025-12-04 (commit
# 5e639034dcdc), runtime-spec v1.3.0.
RT_MODULE=github.com/opencontainers/runtime-tools
RT_VERSION=${RT_VERSION:-v0.9.1-0.20251205004911-5e639034dcdc}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SV_BIN:-$ROOT/bin}
export SV_DIR=${SV_DIR:-/tmp/sv-oci}
export SV_BIN=$BIN
CACHE=${SYSVISOR_CACHE:-/var/cache/sysvisor}/runtime-tools/$RT_VERSION
OUT=${OCI_OUT:-$ROOT/bench/out/oci-validation}
TIMEOUT=${OCI_TIMEOUT:-300}
RUNTIMES=${OCI_RUNTIMES:-runc sysvisor-runc}
export PATH=$PATH:/usr/local/go/bin

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { echo "oci-validation: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (the suite creates containers, cgroups and mounts)"
command -v runc >/dev/null || die "runc not found"
[ -x "$BIN/sysvisor-runc" ] && [ -x "$BIN/sysvisord" ] || die "$BIN/sysvisor-runc or sysvisord missing: make build"
[ "$(uname -m)" = x86_64 ] || die "the suite's rootfs here is rootfs-amd64.tar.gz; this is $(uname -m)"
[ ! -e "$SV_DIR" ] || die "$SV_DIR exists: another run, or a run that was killed (SV_DIR=$SV_DIR tests/env.sh down removes it)"

# --- build the suite (once per version) -------------------------------------
build() {
	[ -f "$CACHE/.built" ] && return 0
	say "building runtime-tools $RT_VERSION validation programs into $CACHE"
	command -v go >/dev/null || die "go not found (needed once, to build the suite)"
	command -v jq >/dev/null || die "jq not found"
	local dir tmp
	dir=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$RT_MODULE@$RT_VERSION" | jq -r '.Dir // empty')
	[ -n "$dir" ] && [ -d "$dir" ] || die "go mod download $RT_MODULE@$RT_VERSION failed"
	rm -rf "$CACHE"
	mkdir -p "$(dirname "$CACHE")"
	tmp=$(mktemp -d "$(dirname "$CACHE")/build.XXXXXX")
	cp -r "$dir/." "$tmp/src"
	chmod -R u+w "$tmp/src"
	# A module's zip leaves its vendor/ out: the dependencies come from
	# the proxy, as its go.sum pins them.
	rm -rf "$tmp/src/vendor"
	(
		cd "$tmp/src" || exit 1
		export GOFLAGS=-mod=mod CGO_ENABLED=0
		mkdir -p "$tmp/out/validation"
		# runtimetest runs inside the containers: static.
		go build -tags "netgo osusergo" -o "$tmp/out/runtimetest" ./cmd/runtimetest || exit 1
		for d in validation/*/; do
			n=$(basename "$d")
			[ "$n" = util ] && continue
			go build -o "$tmp/out/validation/$n.t" "./$d" || exit 1
		done
	) || { rm -rf "$tmp"; die "build failed"; }
	cp "$tmp/src/rootfs-amd64.tar.gz" "$tmp/out/"
	mv "$tmp/out" "$CACHE"
	rm -rf "$tmp"
	echo "$RT_MODULE@$RT_VERSION" >"$CACHE/.built"
}
build

if [ -n "${OCI_TESTS:-}" ]; then
	TESTS=$OCI_TESTS
else
	TESTS=$(cd "$CACHE/validation" && ls ./*.t | sed 's|^\./||; s|\.t$||')
fi

# --- the private sysvisord --------------------------------------------------
# Only sysvisord (env.sh up would start a dockerd too): its command line and
# the pool files as env.sh makes them, its pid where env.sh's down looks.
CGROUPS_BEFORE=$(mktemp)
cleanup() {
	local rc=$?
	set +e
	for r in $RUNTIMES; do
		[ -d "$SV_DIR/root-$r" ] || continue
		for id in $(runc --root "$SV_DIR/root-$r" list -q 2>/dev/null); do
			echo "oci-validation: removing container $id left by a program under $r" >&2
			"$SV_DIR/bin/$r" delete --force "$id" >/dev/null 2>&1
		done
	done
	remove_test_cgroups
	"$ROOT/tests/env.sh" down >/dev/null 2>&1 || "$ROOT/tests/env.sh" down
	rm -f "$CGROUPS_BEFORE"
	exit "$rc"
}
# The programs' cgroups (cgroups.AbsCgroupPath, RelCgroupPath below the
# runtime's cgroup): under every v1 hierarchy and in the unified one.
test_cgroups() {
	find /sys/fs/cgroup -maxdepth 6 -type d \( -name cgrouptest -o -name testdir \) 2>/dev/null | sort
}
remove_test_cgroups() {
	local d
	test_cgroups | while read -r d; do
		grep -qxF "$d" "$CGROUPS_BEFORE" && continue
		find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
		if [ -d "$d" ]; then echo "oci-validation: could not remove cgroup $d" >&2; fi
	done || true
}
test_cgroups >"$CGROUPS_BEFORE"
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$SV_DIR"/{run,state,log,policies,bin}
for f in subuid subgid; do
	{ sed 's/^sysvisor:/sysvisor-host:/' "/etc/$f" 2>/dev/null || true; } >"$SV_DIR/$f"
done
mapfile -t SVD < <("$ROOT/tests/env.sh" sysvisord-cmd)
say "starting sysvisord (log: $SV_DIR/log/sysvisord.log)"
setsid "${SVD[@]}" >>"$SV_DIR/log/sysvisord.log" 2>&1 </dev/null &
echo $! >"$SV_DIR/sysvisord.pid"
for ((i = 0; i < 100; i++)); do [ -S "$SV_DIR/run/control.sock" ] && break; sleep 0.1; done
[ -S "$SV_DIR/run/control.sock" ] || { cat "$SV_DIR/log/sysvisord.log" >&2; die "sysvisord did not start"; }

# The RUNTIME each program runs: runc itself and sysvisor-runc pointed at
# the private sysvisord, each with a runc --root of its own.
cat >"$SV_DIR/bin/runc" <<EOF
#!/bin/sh
exec runc --root "$SV_DIR/root-runc" "\$@"
EOF
cat >"$SV_DIR/bin/sysvisor-runc" <<EOF
#!/bin/sh
exec "$BIN/sysvisor-runc" --run-dir "$SV_DIR/run" --policy-dir "$SV_DIR/policies" --root "$SV_DIR/root-sysvisor-runc" "\$@"
EOF
chmod 0755 "$SV_DIR/bin/runc" "$SV_DIR/bin/sysvisor-runc"

# --- run ---------------------------------------------------------------------
# Each program reads runtimetest and rootfs-amd64.tar.gz from its working
# directory and makes its bundles in TMPDIR.
rm -rf "$OUT"
for r in $RUNTIMES; do
	say "running $(echo "$TESTS" | wc -w) validation programs against $r"
	mkdir -p "$OUT/$r" "$SV_DIR/tmp-$r" "$SV_DIR/root-$r"
	t0=$(date +%s)
	for t in $TESTS; do
		[ -x "$CACHE/validation/$t.t" ] || die "no validation program $t"
		rc=0
		(cd "$CACHE" && RUNTIME="$SV_DIR/bin/$r" TMPDIR="$SV_DIR/tmp-$r" \
			timeout -k 10 "$TIMEOUT" "$CACHE/validation/$t.t" >"$OUT/$r/$t.tap" 2>"$OUT/$r/$t.err" </dev/null) || rc=$?
		echo "$rc" >"$OUT/$r/$t.rc"
		printf '  %-40s ok %4d  not ok %4d  exit %d\n' "$t" \
			"$(grep -c '^ok ' "$OUT/$r/$t.tap")" "$(grep '^not ok ' "$OUT/$r/$t.tap" | grep -vc '# TODO')" "$rc" >&2
		# What a program left behind stays out of the next one's way.
		for id in $(runc --root "$SV_DIR/root-$r" list -q 2>/dev/null); do
			echo "$t: left container $id" >>"$OUT/$r/leftovers.txt"
			"$SV_DIR/bin/$r" delete --force "$id" >/dev/null 2>&1 || true
		done
		remove_test_cgroups
	done
	echo $(($(date +%s) - t0)) >"$OUT/$r/seconds"
	{ grep -F " $SV_DIR/tmp-$r" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r | while read -r m; do
		echo "left mount $m" >>"$OUT/$r/leftovers.txt"
		umount -l "$m" 2>/dev/null || true
	done
	rm -rf "${SV_DIR:?}/tmp-$r"
done

# --- report --------------------------------------------------------------------
# TAP counts: "ok" lines (skips included, as TAP counts them) and "not ok"
# lines; a "not ok ... # TODO" line is not a failure in TAP and is counted
# apart. runtimetest checks the container against the config.json it finds
# in the bundle, which for sysvisor-runc is the rewritten one: where the
# rewrite changes the expectation (capabilities, ID mappings) the same
# check has another description under each runtime. So the differences are
# the failures of sysvisor-runc that runc does not have (matched by
# description), plus, per program, the lines it never reached.
set +e
count() { # runtime program|'*' -> "ok skip notok todo lines"
	cat "$OUT/$1/"$2.tap 2>/dev/null | awk '
		/^ok /     { ok++; if (/# SKIP/) skip++ }
		/^not ok / { if (/# TODO/) todo++; else nok++ }
		END { printf "%d %d %d %d %d\n", ok, skip, nok, todo, ok + nok + todo }'
}
# A failing line's key: program, description without its number and with
# the random parts (temporary names, UUIDs, long numbers) taken out, then
# how many times the same key came before.
failkeys() { # runtime
	local t
	for t in $TESTS; do
		awk -v t="$t" '
			/^not ok / && !/# TODO/ {
				d = $0
				sub(/^not ok [0-9]+/, "", d); sub(/^ - /, "", d); sub(/^ /, "", d); sub(/ +$/, "", d)
				gsub(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/, "UUID", d)
				gsub(/[0-9][0-9][0-9][0-9][0-9][0-9]+/, "N", d)
				k = t ": " d
				print k " #" (++n[k])
			}' "$OUT/$1/$t.tap" 2>/dev/null
	done | sort
}
ok_runc=$(count runc '*' | cut -d' ' -f1)
ok_sysvisor_runc=$(count sysvisor-runc '*' | cut -d' ' -f1)
[ -d "$OUT/runc" ] || ok_runc=
[ -d "$OUT/sysvisor-runc" ] || ok_sysvisor_runc=
{
	echo "OCI runtime-tools $RT_VERSION validation, $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) CPUs, $(runc --version | head -1)"
	for r in $RUNTIMES; do
		read -r ok skip nok todo _ < <(count "$r" '*')
		bad=$(grep -lvx 0 "$OUT/$r"/*.rc | wc -l)
		printf '%-14s ok %5d (%d skipped)  not ok %4d (+%d TODO)  programs exiting non-zero %2d  %ss\n' \
			"$r" "$ok" "$skip" "$nok" "$todo" "$bad" "$(cat "$OUT/$r/seconds")"
	done
	if [ -n "${ok_runc:-}" ] && [ -n "${ok_sysvisor_runc:-}" ] && [ "$ok_runc" -gt 0 ]; then
		echo "sysvisor-runc ok / runc ok: $(awk -v a="$ok_sysvisor_runc" -v b="$ok_runc" 'BEGIN { printf "%.1f%%", 100 * a / b }') (goal: >= 90%)"
	fi
} | tee "$OUT/summary.txt"
if [ -d "$OUT/runc" ] && [ -d "$OUT/sysvisor-runc" ]; then
	{
		printf '\n%-36s %17s  %17s\n' "per program (ok/not ok/lines)" runc sysvisor-runc
		for t in $TESTS; do
			read -r a _ b c n < <(count runc "$t")
			read -r d _ e f m < <(count sysvisor-runc "$t")
			mark=""
			[ "$d" -lt "$a" ] && mark="  <"
			printf '%-36s %5d/%4d/%5d  %5d/%4d/%5d  exit %s/%s%s\n' "$t" "$a" "$b" "$((n))" "$d" "$e" "$((m))" \
				"$(cat "$OUT/runc/$t.rc")" "$(cat "$OUT/sysvisor-runc/$t.rc")" "$mark"
		done
	} | tee -a "$OUT/summary.txt"
	comm -23 <(failkeys sysvisor-runc) <(failkeys runc) >"$OUT/differences.txt"
	comm -23 <(failkeys runc) <(failkeys sysvisor-runc) >"$OUT/runc-only-failures.txt"
	{
		echo
		echo "not ok under sysvisor-runc only: $(wc -l <"$OUT/differences.txt") TAP lines ($OUT/differences.txt), by program:"
		sed -E 's/: .*//' "$OUT/differences.txt" | sort | uniq -c | sort -rn | sed 's/^/  /'
		echo "not ok under runc only: $(wc -l <"$OUT/runc-only-failures.txt") ($OUT/runc-only-failures.txt)"
	} | tee -a "$OUT/summary.txt"
fi
# The goal of issue 18: sysvisor-runc passes at least 90% of what runc does.
if [ -n "${ok_runc:-}" ] && [ -n "${ok_sysvisor_runc:-}" ] && [ $((ok_sysvisor_runc * 10)) -lt $((ok_runc * 9)) ]; then
	exit 1
fi
exit 0
