#!/usr/bin/env bash
# Browser tests of the web pages (tests/browser/scenarios.mjs) in Debian's
# headless Chromium driven by playwright-core. Starts the gateway in front of
# ppm-standin (in-memory stand-ins of config, rate, payment and metering
# that speak the real RPCs and events) on free loopback ports, with a time
# scale so that paid minutes pass in seconds, and stops both at the end.
#
#   tests/browser/run.sh                 run the scenarios ("N passed, N failed")
#   tests/browser/run.sh --screenshots   also write docs/screenshots/*.png
#   tests/browser/run.sh --demo          run them against a running `make run`
#                                        instead (run/demo.env; needs ppmctl)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=${PPM_BIN_DIR:-$root/build/bin}
for b in ppm-gateway ppm-standin; do
    [ -x "$bin/$b" ] || { echo "browser: $bin/$b is missing (make build)"; echo "0 passed, 1 failed"; exit 1; }
done
[ -x /usr/bin/chromium ] || { echo "browser: /usr/bin/chromium is missing (make deps)"; echo "0 passed, 1 failed"; exit 1; }
if [ ! -d tests/browser/node_modules/playwright-core ]; then
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error) ||
        { echo "browser: npm ci failed"; echo "0 passed, 1 failed"; exit 1; }
fi

if [ "${1:-}" = "--demo" ]; then
    env_file=${PPM_RUN_DIR:-$root/run}/demo.env
    [ -f "$env_file" ] || { echo "browser: $env_file is missing (make run first)"; echo "0 passed, 1 failed"; exit 1; }
    set -a
    # shellcheck disable=SC1090
    . "$env_file"
    set +a
    export PPM_PPMCTL=$bin/ppmctl
    unset PPM_USER_SECRET
    cd tests/browser && exec node scenarios.mjs
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
tmp=$(mktemp -d /tmp/ppm-browser.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

export PPM_TIME_SCALE=${PPM_BROWSER_TIME_SCALE:-30}
export PPM_TIME_EPOCH_MS=$(($(date +%s%3N) - 1000))
export PPM_LOG_LEVEL=warn
export PPM_CONFIG_ENDPOINT=tcp://127.0.0.1:$(free_port)
export PPM_RATE_ENDPOINT=tcp://127.0.0.1:$(free_port)
export PPM_PAYMENT_ENDPOINT=tcp://127.0.0.1:$(free_port)
export PPM_METERING_ENDPOINT=tcp://127.0.0.1:$(free_port)
export PPM_STANDIN_EVENTS=tcp://127.0.0.1:$(free_port)
export PPM_CONFIG_EVENTS=$PPM_STANDIN_EVENTS PPM_PAYMENT_EVENTS=$PPM_STANDIN_EVENTS PPM_METERING_EVENTS=$PPM_STANDIN_EVENTS
export PPM_STANDIN_TENANT=t_browser
export PPM_STANDIN_ADMIN_KEY=ppmak_browser_$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
export PPM_STANDIN_USER_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export PPM_HTTP_PORT=$(free_port)
export PPM_WEB_ROOT=$root/services/gateway/web
export PPM_GATEWAY_AUTH_CACHE=1s
export PPM_METRICS_BIND=127.0.0.1:0

"$bin/ppm-standin" >"$tmp/standin.log" 2>&1 &
pids+=($!)
"$bin/ppm-gateway" >"$tmp/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PPM_HTTP_PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.05
done

export PPM_GATEWAY_URL=http://127.0.0.1:$PPM_HTTP_PORT
export PPM_ADMIN_KEY=$PPM_STANDIN_ADMIN_KEY
export PPM_DEMO_TENANT=$PPM_STANDIN_TENANT
export PPM_USER_SECRET=$PPM_STANDIN_USER_SECRET
export PPM_DEMO_PAYEE_ID=u_coach
if [ "${1:-}" = "--screenshots" ]; then
    mkdir -p docs/screenshots
    export PPM_SCREENSHOTS_DIR=$root/docs/screenshots
fi
set +e
(cd tests/browser && node scenarios.mjs) | tee "$tmp/scenarios.out"
rc=${PIPESTATUS[0]}
# the gateway must stop cleanly (under a sanitizer build: no error, no leak)
gateway_pid=${pids[1]}
kill -TERM "$gateway_pid" 2>/dev/null
wait "$gateway_pid"
gateway_rc=$?
if [ "$gateway_rc" -ne 0 ]; then
    echo "FAIL the gateway exited with $gateway_rc"
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tmp/scenarios.out" | tail -n 1)
    echo "${summary%% *} passed, $(( $(echo "$summary" | awk '{print $3+0}') + 1 )) failed"
    rc=1
fi
set -e
if [ "$rc" -ne 0 ]; then
    echo "--- gateway log"; tail -n 20 "$tmp/gateway.log"
    echo "--- stand-in log"; tail -n 20 "$tmp/standin.log"
fi
exit $rc
