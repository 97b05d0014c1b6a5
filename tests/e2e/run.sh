#!/usr/bin/env bash
# Smoke run of the end-to-end benchmark (tests/bench/bench_e2e.sh), so that
# `make test` keeps it working between `make bench` runs: the real stack,
# a few sequential paid sessions, two payers for two seconds, one spawn of
# each service for start-to-ready. Checks that it exits 0 and prints every
# figure as a result line (tests/lib/ppm_bench.h), that sessions were
# funded and completed, and that RSS and start-to-ready are numbers.
# Failed sessions are the benchmark's own figure (docs/BENCHMARKS.md), so
# their count is printed here, not judged. Prints "N passed, N failed".
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export PPM_BIN_DIR=${PPM_BIN_DIR:-$root/build/bin}
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
out=$(mktemp "${PPM_TEST_TMP:-/tmp}/ppm-e2e.XXXXXX")
trap 'rm -f "$out"' EXIT

PPM_BENCH_SEQUENTIAL=5 PPM_BENCH_WARMUP=1 PPM_BENCH_PAYERS=2 PPM_BENCH_LOAD=2s \
    PPM_BENCH_READY_RUNS=1 bash "$root/tests/bench/bench_e2e.sh" "$PPM_BIN_DIR" >"$out" 2>&1
rc=$?
if [ "$rc" -eq 0 ]; then ok "bench_e2e.sh exits 0"; else fail "bench_e2e.sh exits 0 (exit $rc)"; tail -30 "$out" | sed 's/^/    | /'; fi

field() { # id n -> field n of that result line
    awk -F'|' -v id="$1" -v n="$2" '$1 == "result" && $2 == id { print $n; exit }' "$out"
}
number() { [[ $1 =~ ^[0-9]+(\.[0-9]+)?\  ]]; }
for id in e2e.funded_p50 e2e.funded_p99 e2e.checkout_p50 e2e.confirm_p50 e2e.sessions_per_s \
    e2e.load_funded_p50 e2e.load_funded_p99; do
    v=$(field "$id" 4)
    if number "$v"; then ok "$id is a figure ($v)"; else fail "$id is a figure (${v:-missing})"; fi
done
for s in config rate payment metering gateway; do
    v=$(field "e2e.rss_$s" 4)
    b=$(field "e2e.rss_$s" 5)
    if number "$v" && number "$b"; then ok "RSS of $s idle and under load ($b, $v)"; else fail "RSS of $s idle and under load (${b:-missing}, ${v:-missing})"; fi
    v=$(field "e2e.ready_$s" 4)
    if number "$v"; then ok "start-to-ready of $s ($v)"; else fail "start-to-ready of $s (${v:-missing})"; fi
done
rate=$(field e2e.sessions_per_s 4)
if awk -v r="${rate%% *}" 'BEGIN { exit !(r > 0) }'; then ok "sessions completed under load ($rate)"; else fail "sessions completed under load (${rate:-none})"; fi
if grep -q '^note|e2e|' "$out"; then ok "the how-measured note is printed"; else fail "the how-measured note is printed"; fi
echo "failed sessions under load: $(field e2e.errors 4) ($(field e2e.errors 3))"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
