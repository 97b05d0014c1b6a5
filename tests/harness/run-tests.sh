#!/usr/bin/env bash
# Runs every test binary of one or more builds (build, build/san) against
# one set of real servers (servers.sh), one binary at a time, and prints one
# line per binary and the closing line "N passed, N failed" (counted from
# cmocka's summaries; a binary that dies without one counts as one failure).
#
#   tests/harness/run-tests.sh BUILD [BUILD...] [curve:BUILD]
#   PPM_TEST_FILTER=regex  runs only the binaries whose path matches
#
# curve:BUILD runs BUILD's integration tests again with CURVE on every
# ZeroMQ link (PPM_CURVE=on, one server key pair and one client key pair
# from `ppmctl curve-keygen`, that client key the only one allowed): the
# in-process servers and clients and every service binary a test spawns
# encrypt and authenticate, so the whole integration suite is shown to
# work with encryption on.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

if [ -z "${PPM_TEST_TMP:-}" ]; then
    exec bash tests/harness/servers.sh bash "$0" "$@"
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/harness/lsan.supp}

passed=0
failed=0
failures=()
logs=$PPM_TEST_TMP/logs
mkdir -p "$logs"
curve_env() { # BUILD -> NAME=VALUE lines for a CURVE run
    local server client
    server=$("$1/bin/ppmctl" --json curve-keygen) || return 1
    client=$("$1/bin/ppmctl" --json curve-keygen) || return 1
    echo "PPM_CURVE=on"
    echo "PPM_CURVE_SERVER_SECRET_KEY=$(jq -r .secret <<<"$server")"
    echo "PPM_CURVE_SERVER_KEY=$(jq -r .public <<<"$server")"
    echo "PPM_CURVE_SECRET_KEY=$(jq -r .secret <<<"$client")"
    echo "PPM_CURVE_CLIENT_KEYS=$(jq -r .public <<<"$client")"
}

for spec in "$@"; do
    build=${spec#curve:}
    kinds=(unit integration)
    extra=()
    label=
    if [ "$spec" != "$build" ]; then
        kinds=(integration)
        mapfile -t extra < <(curve_env "$build")
        label=" (curve)"
        if [ ${#extra[@]} -ne 5 ]; then
            echo "FAIL $build: ppmctl curve-keygen for the CURVE run"
            failures+=("curve:$build")
            failed=$((failed + 1))
            continue
        fi
    fi
    for kind in "${kinds[@]}"; do
        for t in "$build"/tests/$kind/test_*; do
            [ -x "$t" ] || continue
            if [ -n "${PPM_TEST_FILTER:-}" ] && ! [[ $spec/$t =~ $PPM_TEST_FILTER ]]; then continue; fi
            log=$logs/$(echo "$spec/$t" | tr '/:' '__').log
            start=$EPOCHREALTIME
            set +e
            env "${extra[@]}" PPM_BIN_DIR="$root/$build/bin" \
                timeout --kill-after=10 "${PPM_TEST_TIMEOUT:-300}" "$t" >"$log" 2>&1
            rc=$?
            set -e
            secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
            p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
            f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
            if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
            passed=$((passed + p))
            failed=$((failed + f))
            if [ "$f" -gt 0 ]; then
                failures+=("$t$label")
                printf 'FAIL %-60s %3d passed %3d failed  %ss (exit %d)\n' "$t$label" "$p" "$f" "$secs" "$rc"
                tail -n 60 "$log" | sed 's/^/    | /'
            else
                printf 'ok   %-60s %3d passed  %ss\n' "$t$label" "$p" "$secs"
            fi
        done
    done
done
# Script suites: every tests/<name>/run.sh runs once (not per build) and
# ends with its own "N passed, N failed" line, which is added to the total.
for suite in tests/*/run.sh; do
    [ -x "$suite" ] || continue
    if [ -n "${PPM_TEST_FILTER:-}" ] && ! [[ $suite =~ $PPM_TEST_FILTER ]]; then continue; fi
    log=$logs/$(echo "$suite" | tr '/' '_').log
    start=$EPOCHREALTIME
    set +e
    PPM_BIN_DIR=$root/${1#curve:}/bin timeout --kill-after=10 "${PPM_SUITE_TIMEOUT:-600}" bash "$suite" >"$log" 2>&1
    rc=$?
    set -e
    secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1 || true)
    p=$(echo "$summary" | awk '{print $1+0}')
    f=$(echo "$summary" | awk '{print $3+0}')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$f" -gt 0 ]; then
        failures+=("$suite")
        printf 'FAIL %-60s %3d passed %3d failed  %ss (exit %d)\n' "$suite" "$p" "$f" "$secs" "$rc"
        grep -v '^ok ' "$log" | tail -n 60 | sed 's/^/    | /'
    else
        printf 'ok   %-60s %3d passed  %ss\n' "$suite" "$p" "$secs"
    fi
done

echo
if [ ${#failures[@]} -gt 0 ]; then
    echo "failed binaries: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
