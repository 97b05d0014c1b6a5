#!/usr/bin/env bash
# End-to-end benchmark (issue 8): the whole stack, measured from the
# outside by BUILD/bench/bench_e2e (see its opening comment): checkout →
# funded latency p50/p99, paid sessions per second through the gateway with
# many payers, each service's RSS idle and under load, and each service's
# start-to-ready time. The figures are printed for a reader and as result
# lines (tests/lib/ppm_bench.h) for docs/BENCHMARKS.md.
#
# This script starts what is measured: the stack as `make run` starts it
# (deploy/run.sh through tests/lib/stack.sh) in a temporary run dir on free
# ports, with the Stripe emulator at zero latency (no fault rules) and
# PPM_LOG_LEVEL=error, makes sure the demo tenant lets a payer hold a
# session while its previous one is being ended (max_concurrent_sessions
# >= 3), and gives bench_e2e the stack's addresses in its environment.
# run-bench.sh runs this script and skips the bare bench_e2e binary.
#
#   tests/bench/bench_e2e.sh [BIN_DIR]
#   PPM_BENCH_SEQUENTIAL (200)  PPM_BENCH_PAYERS (16)  PPM_BENCH_LOAD (15s)
#   PPM_BENCH_WARMUP (5)  PPM_BENCH_READY_RUNS (3)    (read by bench_e2e)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export PPM_BIN_DIR=${1:-${PPM_BIN_DIR:-$root/build/bin}}
bin=$PPM_BIN_DIR
driver=${PPM_BENCH_E2E_BIN:-$(dirname "$bin")/bench/bench_e2e}
for tool in python3 redis-server curl jq; do
    command -v "$tool" >/dev/null || { echo "e2e bench: $tool missing (make deps)"; exit 1; }
done
for b in ppm-config ppm-rate ppm-payment ppm-metering ppm-gateway ppmctl stripe-emulator; do
    [ -x "$bin/$b" ] || { echo "e2e bench: $bin/$b is missing (make build)"; exit 1; }
done
[ -x "$driver" ] || { echo "e2e bench: $driver is missing (make benches)"; exit 1; }

# shellcheck source=tests/lib/stack.sh
. "$root/tests/lib/stack.sh"
tmp=$(mktemp -d "${PPM_TEST_TMP:-/tmp}/ppm-bench-e2e.XXXXXX")
chmod 755 "$tmp" # PostgreSQL runs as "postgres" under root and must reach its dir
cleanup() {
    stack_stop
    rm -rf "$tmp"
}
trap cleanup EXIT

# a request per line in each service's log would be measured too
export PPM_LOG_LEVEL=error
if ! stack_start "$tmp/stack"; then
    echo "e2e bench: the stack did not start"
    stack_tail
    exit 1
fi

emulator=http://127.0.0.1:$stack_emulator_port
curl -fsS -X DELETE "$emulator/_emulator/faults" >/dev/null ||
    { echo "e2e bench: could not clear the emulator's fault rules"; exit 1; }

limit=$("$bin/ppmctl" --json settings get --tenant "$PPM_DEMO_TENANT" |
    jq -r '.max_concurrent_sessions // .settings.max_concurrent_sessions // empty')
if [ -z "$limit" ] || [ "$limit" -lt 3 ]; then
    "$bin/ppmctl" settings set --tenant "$PPM_DEMO_TENANT" max_concurrent_sessions=3 >/dev/null ||
        { echo "e2e bench: ppmctl settings set max_concurrent_sessions failed"; exit 1; }
    echo "e2e bench: max_concurrent_sessions was ${limit:-unknown}, set to 3"
fi

# What bench_e2e needs: the stack's addresses (PPM_GATEWAY_URL,
# PPM_DEMO_TENANT, PPM_CONFIG_ENDPOINT, … from stack_start), its metrics
# ports, and for start-to-ready the environment deploy/run.sh gives each
# service.
metrics=()
for s in config rate payment metering gateway; do
    metrics+=("$s=127.0.0.1:${stack_metrics_port[$s]}")
done
PPM_BENCH_METRICS=$(IFS=,; echo "${metrics[*]}")
export PPM_BENCH_METRICS
export PPM_BENCH_LOG_DIR=$tmp/ready-logs
mkdir -p "$PPM_BENCH_LOG_DIR"
export PPM_PG_URL=postgresql://ppm@127.0.0.1:$stack_pg_port/ppm
export PPM_REDIS_URL=redis://127.0.0.1:$stack_redis_port
PPM_MASTER_KEY=$(cat "$stack_dir/master.key")
export PPM_MASTER_KEY
export PPM_STRIPE_API_BASE=$emulator
export PPM_WEB_ROOT=$root/services/gateway/web
export PPM_PAYMENT_OUTBOX_EVERY=${PPM_PAYMENT_OUTBOX_EVERY:-100ms}
export PPM_METERING_TICK=${PPM_METERING_TICK:-100ms}

rc=0
"$driver" || rc=$?
if [ "$rc" -ne 0 ]; then
    echo "e2e bench: bench_e2e exited with $rc"
    stack_tail
    for f in "$PPM_BENCH_LOG_DIR"/*.log; do
        [ -s "$f" ] || continue
        echo "    | --- $f"
        tail -5 "$f" | sed 's/^/    | /'
    done
fi
for s in config rate payment metering gateway; do
    if ! curl -fsS "http://127.0.0.1:${stack_metrics_port[$s]}/healthz" >/dev/null 2>&1; then
        echo "e2e bench: $s no longer answers /healthz after the run"
        rc=1
    fi
done
exit "$rc"
