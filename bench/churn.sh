#!/bin/bash
# The churn run (issue 18): CHURN_CYCLES (default 1000) create/delete cycles
# of tests/e2e's TestChurn (plain, exec'd, mount-heavy, init killed with
# kill -9, docker rm -f mid-start, Docker-in-Docker) against the e2e suite's
# private engine, then the check that sysvisord's fds, goroutines, threads
# and memory, the holder's fds, the leases, records, mounts and processes
# are back where they started. Records the figures in
# bench/results/churn.txt (the whole log in bench/out/churn.log).
#
#   bench/churn.sh            # 1000 cycles, about 15 minutes here
#   CHURN_CYCLES=200 bench/churn.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH=$PATH:/usr/local/go/bin
cycles=${CHURN_CYCLES:-1000}
mkdir -p bench/out bench/results
make build >/dev/null
log=bench/out/churn.log
rc=0
SYSVISOR_E2E=required SYSVISOR_CHURN_CYCLES=$cycles \
	go test -count=1 -timeout "$((cycles * 6 + 600))s" -run '^TestChurn$' -v ./tests/e2e/ >"$log" 2>&1 || rc=$?
{
	echo "TestChurn, $cycles cycles, $(date -u +%Y-%m-%dT%H:%MZ), $(uname -r), $(nproc) CPUs"
	grep -E 'churn_test.go:[0-9]+: (churn:|before:|after:|seed|long-lived)|left behind|failed|sysvisord:|sysvisor-holder:|host mounts:|Go heap:|RSS net' "$log" | sed 's/^ *churn_test.go:[0-9]*: /  /'
	grep -E '^(--- |ok|FAIL)' "$log"
} | tee bench/results/churn.txt
exit $rc
