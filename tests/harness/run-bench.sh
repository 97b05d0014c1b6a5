#!/usr/bin/env bash
# Runs every benchmark of one build: the C benchmarks BUILD/bench/* and the
# scripts tests/bench/*.sh (each starts what it measures and prints its
# figures next to its baseline, measured in the same run), one at a time,
# against one set of real servers (servers.sh, as run-tests.sh does). A
# benchmark that exits non-zero or runs past PPM_BENCH_TIMEOUT (default
# 300 s) is reported and makes this script fail at the end; the others
# still run. A binary with a script of its name (bench_e2e and
# tests/bench/bench_e2e.sh) is not run bare: the script starts what it
# needs and runs it.
#
# Each benchmark prints, besides its lines for a reader, machine-readable
# result/note/gap lines (tests/lib/ppm_bench.h); they are kept out of the
# terminal and written, with the machine (cores, memory, CPU, kernel), the
# date, the commit, and how busy other work kept the machine during each
# benchmark (cpu-sampler.py), to BUILD/bench-results.txt, from which
# bench-report.sh writes docs/BENCHMARKS.md.
#
#   tests/harness/run-bench.sh BUILD
#   PPM_BENCH_FILTER=regex  runs only the benchmarks whose path matches (the
#                           report then goes to BUILD/BENCHMARKS.md, so a
#                           partial run does not replace the full one)
#   PPM_BENCH_REPORT=FILE   where the report goes
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root" || exit 1
build=${1:-build}
if [ -z "${PPM_TEST_TMP:-}" ]; then
    exec bash tests/harness/servers.sh bash "$0" "$@"
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/harness/lsan.supp}
export PPM_BIN_DIR=$root/$build/bin

if [ -n "${PPM_BENCH_FILTER:-}" ]; then
    report=${PPM_BENCH_REPORT:-$build/BENCHMARKS.md}
else
    report=${PPM_BENCH_REPORT:-docs/BENCHMARKS.md}
fi
results=$build/bench-results.txt
work=$PPM_TEST_TMP/bench
mkdir -p "$work"
: >"$results"

# Other work on the machine: sampled for the whole run (our tree starts at
# servers.sh, our parent; a daemon of ours names $PPM_TEST_TMP).
samples=$work/cpu.txt
python3 tests/harness/cpu-sampler.py "$PPID" "$PPM_TEST_TMP" "$samples" 0.5 &
sampler=$!
trap 'kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null' EXIT
sample() { # -> "seconds busy ours niced ours-niced" of the latest sample
    local line=
    for _ in $(seq 50); do
        line=$(tail -n 1 "$samples" 2>/dev/null)
        [ -n "$line" ] && break
        sleep 0.1
    done
    echo "${line:-0 0 0 0 0}"
}
others() { # sample sample -> "cores cores-niced": other work between the two
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " "); dt = y[1] - x[1]
        all = dt > 0 ? ((y[2] - x[2]) - (y[3] - x[3])) / dt : 0
        nice = dt > 0 ? ((y[4] - x[4]) - (y[5] - x[5])) / dt : 0
        if (all < 0) all = 0
        if (nice < 0) nice = 0
        if (nice > all) nice = all
        printf "%.2f|%.2f", all, nice }'
}
loadavg() { cut -d' ' -f1 /proc/loadavg; }

# Before anything runs: how busy is the machine already?
quiet0=$(sample)
sleep 3
quiet1=$(sample)
{
    echo "machine|cores|$(nproc)"
    echo "machine|memory|$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "machine|cpu|$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "machine|kernel|$(uname -sr)"
    echo "machine|date|$(date -u '+%Y-%m-%d %H:%M UTC')"
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    branch=$(git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
    dirty=
    git diff --quiet HEAD -- . ':(exclude)docs/BENCHMARKS.md' 2>/dev/null ||
        dirty=", with uncommitted changes"
    echo "machine|commit|$commit (branch $branch$dirty)"
    echo "machine|build|$build"
    echo "machine|others_before|$(others "$quiet0" "$quiet1")"
} >>"$results"

failed=()
ran=0
started=$EPOCHREALTIME
run() {
    if [ -n "${PPM_BENCH_FILTER:-}" ] && ! [[ $1 =~ $PPM_BENCH_FILTER ]]; then return; fi
    ran=$((ran + 1))
    echo "== $1"
    local cmd=("$1") name out rc before after load0 t0 secs
    case $1 in *.sh) cmd=(bash "$1" "$PPM_BIN_DIR") ;; esac
    name=$(basename "$1")
    out=$work/$name.out
    before=$(sample)
    load0=$(loadavg)
    t0=$EPOCHREALTIME
    {
        timeout --kill-after=10 "${PPM_BENCH_TIMEOUT:-300}" "${cmd[@]}"
        echo $? >"$work/$name.rc"
    } | tee "$out" | grep --line-buffered -vE '^(result|note|gap)\|'
    rc=$(cat "$work/$name.rc" 2>/dev/null || echo 1)
    after=$(sample)
    secs=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
    echo "bench|$name|$secs|$rc|$(others "$before" "$after")|$load0|$(loadavg)" >>"$results"
    grep -E '^(result|note|gap)\|' "$out" >>"$results"
    if [ "$rc" -ne 0 ]; then
        echo "!! $1 exited with $rc"
        failed+=("$1")
    fi
}
for b in "$build"/bench/*; do
    [ -f "$b" ] || continue
    [ -x "$b" ] || continue
    # a benchmark with a script of its name is run by that script
    [ -f "tests/bench/$(basename "$b").sh" ] && continue
    run "$b"
done
for s in tests/bench/*.sh; do
    [ -f "$s" ] || continue
    run "$s"
done
echo "machine|duration|$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')" >>"$results"
echo
if bash tests/harness/bench-report.sh "$results" >"$work/report.md"; then
    mkdir -p "$(dirname "$report")"
    cp "$work/report.md" "$report"
    echo "report: $report (results: $results)"
else
    echo "report: bench-report.sh failed; results in $results"
    failed+=(report)
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed benchmarks: ${failed[*]}"
    exit 1
fi
echo "$ran benchmarks ran"
