#!/bin/bash
# Runs every Go fuzz target of the repository for DURATION each (default
# 60s), one after another: go test takes one -fuzz target per run. Targets
# are found, not listed: any `func FuzzXxx(f *testing.F)` in a *_test.go
# file. Every target runs even when one fails; a failure's input is left in
# its package's testdata/fuzz/FuzzXxx/ (commit it as a regression seed).
#   tests/fuzz.sh [DURATION]   e.g. 10s, 5m, 1000x (go test -fuzztime)
#   tests/fuzz.sh --list       the targets: package, tab, target, a line
# GO names the go command (default go).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

targets() {
	# testdata holds corpora, not code; the file's directory is its package.
	find . -name '*_test.go' -not -path '*/testdata/*' -not -path './.git/*' -print0 |
		xargs -0 -r grep -HE '^func Fuzz[A-Za-z0-9_]*\(([A-Za-z0-9_]+ )?\*testing\.F\)' |
		sed -E 's|^(.*)/[^/]*:func (Fuzz[A-Za-z0-9_]*)\(.*|\1\t\2|' |
		sort
}

if [ "${1:-}" = --list ]; then
	targets
	exit 0
fi
duration=${1:-60s}
go=${GO:-go}

list=$(targets)
if [ -z "$list" ]; then
	echo "tests/fuzz.sh: no fuzz targets found" >&2
	exit 1
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=()
while IFS=$'\t' read -r pkg name; do
	echo "==> fuzz $pkg $name ($duration)" >&2
	corpus=$pkg/testdata/fuzz/$name
	seeds=$(ls "$corpus" 2>/dev/null || true)
	# -run '^$': the package's other tests ran already (go test ./...).
	if "$go" test -run '^$' -fuzz "^$name\$" -fuzztime "$duration" "$pkg" </dev/null 2>&1 | tee "$log"; then
		continue
	fi
	# Go's coordinator can fail a clean run at the -fuzztime deadline
	# (golang/go#75804, fixed in Go 1.27): "context deadline exceeded",
	# no failing input written. An input that fails is always written.
	if grep -qx '    context deadline exceeded' "$log" && [ "$(ls "$corpus" 2>/dev/null || true)" = "$seeds" ]; then
		echo "tests/fuzz.sh: $pkg $name: Go's fuzz deadline race (golang/go#75804), no failing input: not a failure" >&2
		continue
	fi
	failed+=("$pkg $name")
done <<<"$list"
if [ ${#failed[@]} -gt 0 ]; then
	printf 'tests/fuzz.sh: failed: %s\n' "${failed[@]}" >&2
	exit 1
fi
