#!/usr/bin/env bash
# Runs every benchmark of one build: the C benchmarks build/bench/* and the
# scripts tests/bench/*.sh (each starts what it measures and prints its
# figures next to its baseline, measured in the same run).
#
#   tests/harness/run-bench.sh BUILD
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
build=${1:-build}
export PPM_BIN_DIR=$root/$build/bin
rc=0
for b in "$build"/bench/*; do
    [ -x "$b" ] || continue
    echo "== $b"
    "$b" || rc=1
done
for s in tests/bench/*.sh; do
    [ -f "$s" ] || continue
    echo "== $s"
    bash "$s" "$PPM_BIN_DIR" || rc=1
done
exit $rc
