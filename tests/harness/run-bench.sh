#!/usr/bin/env bash
# Runs every benchmark of one build: the C benchmarks BUILD/bench/* and the
# scripts tests/bench/*.sh (each starts what it measures and prints its
# figures next to its baseline, measured in the same run), one at a time,
# against one set of real servers (servers.sh, as run-tests.sh does). A
# benchmark that exits non-zero or runs past PPM_BENCH_TIMEOUT (default
# 300 s) is reported and makes this script fail at the end; the others
# still run.
#
#   tests/harness/run-bench.sh BUILD
#   PPM_BENCH_FILTER=regex  runs only the benchmarks whose path matches
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${1:-build}
if [ -z "${PPM_TEST_TMP:-}" ]; then
    exec bash tests/harness/servers.sh bash "$0" "$@"
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/harness/lsan.supp}
export PPM_BIN_DIR=$root/$build/bin

failed=()
ran=0
run() {
    if [ -n "${PPM_BENCH_FILTER:-}" ] && ! [[ $1 =~ $PPM_BENCH_FILTER ]]; then return; fi
    ran=$((ran + 1))
    echo "== $1"
    local cmd=("$1")
    case $1 in *.sh) cmd=(bash "$1" "$PPM_BIN_DIR") ;; esac
    timeout --kill-after=10 "${PPM_BENCH_TIMEOUT:-300}" "${cmd[@]}"
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "!! $1 exited with $rc"
        failed+=("$1")
    fi
}
for b in "$build"/bench/*; do
    [ -f "$b" ] && [ -x "$b" ] || continue
    run "$b"
done
for s in tests/bench/*.sh; do
    [ -f "$s" ] || continue
    run "$s"
done
echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed benchmarks: ${failed[*]}"
    exit 1
fi
echo "$ran benchmarks ran"
