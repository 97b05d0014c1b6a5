#!/usr/bin/env bash
# Browser tests of the web pages (tests/browser/scenarios.mjs) in Debian's
# headless Chromium driven by playwright-core, against the real stack:
# deploy/run.sh (what `make run` starts: Redis, PostgreSQL, the Stripe
# emulator, the five services and the demo tenant, set up with ppmctl) in a
# temporary run dir on free loopback ports (tests/lib/stack.sh), with a time
# scale so that paid minutes pass in seconds. User tokens are minted with
# ppmctl, as for `make run`. At the end the stack is stopped and every
# service must have exited with status 0 (under a sanitizer build: no
# report, no leak); each is one more check in the summary.
#
#   tests/browser/run.sh                 run the scenarios ("N passed, N failed")
#   tests/browser/run.sh --screenshots   also write docs/screenshots/*.png
#   tests/browser/run.sh --demo          run them against a running `make run`
#                                        instead (run/demo.env; needs ppmctl;
#                                        the payer scenario needs a time scale:
#                                        PPM_TIME_SCALE=15 make run)
#
# PPM_BROWSER_TIME_SCALE (default 15): ppm seconds per real second.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=${PPM_BIN_DIR:-$root/build/bin}
give_up() {
    echo "browser: $*"
    echo "0 passed, 1 failed"
    exit 1
}
[ -x "$bin/ppmctl" ] || give_up "$bin/ppmctl is missing (make build)"
[ -x /usr/bin/chromium ] || give_up "/usr/bin/chromium is missing (make deps)"
for t in jq python3 redis-server curl; do
    command -v "$t" >/dev/null || give_up "$t is missing (make deps)"
done
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) || give_up "npm ci failed"
fi
export PPM_PPMCTL=$bin/ppmctl

if [ "${1:-}" = "--demo" ]; then
    env_file=${PPM_RUN_DIR:-$root/run}/demo.env
    [ -f "$env_file" ] || give_up "$env_file is missing (make run first)"
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
    export PPM_BROWSER_DEMO=1 # keep the demo tenant's secret: run/demo.env's tokens use it
    cd tests/browser && exec node scenarios.mjs
fi

for b in ppm-config ppm-rate ppm-payment ppm-metering ppm-gateway stripe-emulator; do
    [ -x "$bin/$b" ] || give_up "$bin/$b is missing (make build)"
done
# as tests/harness/run-tests.sh sets them, for a sanitizer build run by hand
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$root/tests/harness/lsan.supp}

# shellcheck source=tests/lib/stack.sh
. "$root/tests/lib/stack.sh"
tmp=$(mktemp -d "${PPM_TEST_TMP:-/tmp}/ppm-browser.XXXXXX")
chmod 755 "$tmp" # PostgreSQL runs as "postgres" under root and must reach its dir
cleanup() {
    stack_stop
    rm -rf "$tmp"
}
trap cleanup EXIT

export PPM_TIME_SCALE=${PPM_BROWSER_TIME_SCALE:-15}
export PPM_LOG_LEVEL=${PPM_LOG_LEVEL:-info}
if ! stack_start "$tmp/stack"; then
    echo "FAIL the stack starts (deploy/run.sh)"
    stack_tail
    echo "0 passed, 1 failed"
    exit 1
fi
# The demo tenant as `make run` creates it (default grace: the widget
# heartbeats as often as the gateway's heartbeat_every_ms says, which
# follows the time scale), with the warning marks written out through
# ppmctl as an operator would: the payer scenario buys 2 minutes and must
# be warned within seconds, by the 60 s mark (marks at or above the time
# bought are skipped).
if ! "$PPM_PPMCTL" settings set --tenant "$PPM_DEMO_TENANT" warning_marks_s=300,60,10 \
    >"$tmp/settings.out" 2>&1; then
    echo "FAIL ppmctl settings set (warning_marks_s)"
    sed 's/^/    | /' "$tmp/settings.out"
    echo "0 passed, 1 failed"
    exit 1
fi
if [ "${1:-}" = "--screenshots" ]; then
    mkdir -p docs/screenshots
    export PPM_SCREENSHOTS_DIR=$root/docs/screenshots
fi

set +e
# the scenarios' own summary line is replaced by the one below, which also
# counts the clean stop of each service
(cd tests/browser && node scenarios.mjs) | tee "$tmp/scenarios.out" | grep -Ev '^[0-9]+ passed, [0-9]+ failed$'
node_rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$tmp/scenarios.out" | tail -n 1)
passed=$(awk '{print $1+0}' <<<"$summary")
failed=$(awk '{print $3+0}' <<<"$summary")
if [ -z "$summary" ] || { [ "$node_rc" -ne 0 ] && [ "$failed" -eq 0 ]; }; then
    echo "FAIL scenarios.mjs exited with $node_rc without a summary"
    failed=$((failed + 1))
fi

stack_stop
for s in gateway metering payment rate config; do
    status=$(stack_exit_status "$s")
    if [ "$status" = 0 ]; then
        passed=$((passed + 1))
        echo "ok   $s stopped cleanly"
    else
        failed=$((failed + 1))
        echo "FAIL $s stopped with status $status (deploy/run.sh: $(grep '^run: exit statuses:' "$stack_out" | tail -n 1))"
        echo "    | --- $stack_dir/logs/$s.log"
        tail -n 30 "$stack_dir/logs/$s.log" | sed 's/^/    | /'
    fi
done
if [ "$failed" -ne 0 ]; then
    echo "--- deploy/run.sh and the logs"
    stack_tail
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
