#!/bin/bash
# The long-lived Docker-in-Docker run (issue 18): one system container runs
# DIND_INNER (default 200) inner `docker run --rm busybox true` one after
# another, and its record in sysvisord must stay bounded: the masks of each
# inner container's procfs and sysfs go once it is gone. tests/e2e's
# TestDinDLongLived against the e2e suite's private engine; records the
# figures in bench/results/dind-long.txt (the whole log in
# bench/out/dind-long.log).
#
#   bench/dind-long.sh            # 200 inner containers, a few minutes here
#   DIND_INNER=50 bench/dind-long.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH=$PATH:/usr/local/go/bin
n=${DIND_INNER:-200}
mkdir -p bench/out bench/results
make build >/dev/null
log=bench/out/dind-long.log
rc=0
SYSVISOR_E2E=required SYSVISOR_DIND_INNER=$n \
	go test -count=1 -timeout "$((n * 10 + 600))s" -run '^TestDinDLongLived$' -v ./tests/e2e/ >"$log" 2>&1 || rc=$?
{
	echo "TestDinDLongLived, $n inner containers, $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) CPUs"
	grep -E 'dindlong_test.go:[0-9]+: ' "$log" | sed 's/^ *dindlong_test.go:[0-9]*: /  /'
	grep -E '^(--- |ok|FAIL)' "$log"
} | tee bench/results/dind-long.txt
exit $rc
