# shellcheck shell=bash
# The whole local stack for script suites: deploy/run.sh (what `make run`
# starts: Redis, PostgreSQL, the Stripe emulator, the five services and the
# demo tenant) in a run dir of the caller's, on free loopback ports. Sourced
# by tests/stack/run.sh, tests/browser/run.sh and tests/bench/gateway_quote.sh.
#
#   . tests/lib/stack.sh
#   stack_start DIR     starts deploy/run.sh with PPM_RUN_DIR=DIR (its output
#                       in DIR.out), waits until the demo tenant exists and
#                       exports run/demo.env's variables (PPM_GATEWAY_URL,
#                       PPM_ADMIN_KEY, PPM_DEMO_*). Returns 1 when it does not
#                       come up. Any other environment (PPM_TIME_SCALE,
#                       PPM_CURVE*, …) is taken from the caller.
#   stack_tail          prints the end of run.sh's output and of every log
#   stack_stop          SIGTERM to run.sh, which stops every process it
#                       started; KILL after 60 s. Safe to call twice.
#   stack_exit_status NAME
#                       the exit status run.sh saw for one of its processes
#                       (gateway, metering, …) when it stopped them, or
#                       "unknown": under a sanitizer build a report or a leak
#                       is a non-zero status.
#
# Safe under `set -e`. After stack_start: stack_pid, stack_dir, stack_out,
# stack_bin (PPM_BIN_DIR when this file was sourced), stack_gateway_port,
# stack_redis_port, stack_pg_port, stack_emulator_port,
# stack_metrics_port[config|rate|payment|metering|gateway], and the
# services' endpoints PPM_CONFIG_ENDPOINT, … exported, so that ppmctl
# reaches this stack.

stack_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
stack_bin=${PPM_BIN_DIR:-$stack_root/build/bin}
stack_pid=
stack_dir=
stack_out=
declare -A stack_metrics_port

stack_free_ports() { # n -> n distinct free loopback TCP ports
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

stack_start() {
    local gw redis pg emu c1 c2 r1 p1 p2 m1 m2 mc mr mp mm mg
    stack_dir=$1
    stack_out=$1.out
    mkdir -p "$stack_dir"
    chmod 755 "$stack_dir" # PostgreSQL runs as "postgres" under root and must reach it
    read -r gw redis pg emu c1 c2 r1 p1 p2 m1 m2 mc mr mp mm mg < <(stack_free_ports 16)
    # shellcheck disable=SC2034 # for the caller
    stack_gateway_port=$gw stack_redis_port=$redis stack_pg_port=$pg stack_emulator_port=$emu
    # shellcheck disable=SC2034 # for the caller
    stack_metrics_port=([config]=$mc [rate]=$mr [payment]=$mp [metering]=$mm [gateway]=$mg)
    export PPM_CONFIG_ENDPOINT=tcp://127.0.0.1:$c1 PPM_CONFIG_EVENTS=tcp://127.0.0.1:$c2
    export PPM_RATE_ENDPOINT=tcp://127.0.0.1:$r1
    export PPM_PAYMENT_ENDPOINT=tcp://127.0.0.1:$p1 PPM_PAYMENT_EVENTS=tcp://127.0.0.1:$p2
    export PPM_METERING_ENDPOINT=tcp://127.0.0.1:$m1 PPM_METERING_EVENTS=tcp://127.0.0.1:$m2
    (
        # the harness's own servers (tests/harness/servers.sh) are not this stack's
        unset PPM_PG_URL PPM_REDIS_URL PPM_MASTER_KEY PPM_STRIPE_API_BASE
        export PPM_RUN_DIR=$stack_dir PPM_BIN_DIR=$stack_bin
        export PPM_GATEWAY_PORT=$gw PPM_REDIS_PORT=$redis PPM_PG_PORT=$pg PPM_EMULATOR_PORT=$emu
        export PPM_CONFIG_METRICS=127.0.0.1:$mc PPM_RATE_METRICS=127.0.0.1:$mr
        export PPM_PAYMENT_METRICS=127.0.0.1:$mp PPM_METERING_METRICS=127.0.0.1:$mm
        export PPM_GATEWAY_METRICS=127.0.0.1:$mg
        export PPM_PAYMENT_OUTBOX_EVERY=${PPM_PAYMENT_OUTBOX_EVERY:-100ms}
        export PPM_METERING_TICK=${PPM_METERING_TICK:-100ms}
        exec bash "$stack_root/deploy/run.sh"
    ) >"$stack_out" 2>&1 &
    stack_pid=$!
    for _ in $(seq 600); do
        grep -q "Press Ctrl-C to stop" "$stack_out" 2>/dev/null && break
        kill -0 "$stack_pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q "Press Ctrl-C to stop" "$stack_out" || return 1
    set -a
    # shellcheck disable=SC1091
    . "$stack_dir/demo.env"
    set +a
    return 0
}

stack_tail() { # the end of deploy/run.sh's output and of every log, indented
    local f
    tail -20 "$stack_out" | sed 's/^/    | /'
    for f in "$stack_dir"/logs/*.log; do
        [ -f "$f" ] || continue
        echo "    | --- $f"
        tail -5 "$f" | sed 's/^/    | /'
    done
}

stack_stop() {
    [ -n "$stack_pid" ] || return 0
    kill -TERM "$stack_pid" 2>/dev/null || true
    # run.sh gives each process 5 s before it kills it: wait for that rather
    # than orphan what it started
    for _ in $(seq 600); do
        kill -0 "$stack_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$stack_pid" 2>/dev/null || true
    wait "$stack_pid" 2>/dev/null || true
    stack_pid=
    return 0
}

stack_exit_status() { # name -> its status from run.sh's "run: exit statuses: …" line
    local line
    line=$(grep '^run: exit statuses:' "$stack_out" 2>/dev/null | tail -n 1)
    line=" ${line#run: exit statuses: } "
    if [[ $line =~ \ $1=([0-9]+)\  ]]; then
        echo "${BASH_REMATCH[1]}"
    else
        echo unknown
    fi
}
