# shellcheck shell=bash disable=SC2154,SC2034
# (root, bin, tmp come from the caller; metrics_port and the ports are for it)
# The whole local stack as `make run` starts it (deploy/run.sh), on free
# loopback ports in a run dir of the caller's temporary directory, for the
# script suites that drive it from the outside (tests/stack, tests/security).
# Sourced, not run.
#
# The caller sets, before calling anything here:
#   root   the repository root
#   bin    the directory of the built binaries
#   tmp    a temporary directory (mode 755: PostgreSQL runs as "postgres"
#          under root and must reach its data in there)
# and defines ok "what" / fail "what" (one result line each).
#
#   free_ports N        prints N free loopback TCP ports
#   start_stack NAME    deploy/run.sh in $tmp/NAME; extra environment (CURVE,
#                       time scale…) is taken from the caller's. Returns 0
#                       once the demo tenant exists, with ok "NAME: the stack
#                       starts…", or 1 after fail and the logs' tails. Then:
#                         run_dir           $tmp/NAME (logs in run_dir/logs)
#                         stack_pid         deploy/run.sh's pid
#                         gateway_port redis_port pg_port emulator_port
#                         config_rpc_port   config's ROUTER port
#                         metrics_port[s]   per service (config rate payment
#                                           metering gateway)
#                       and every variable of run_dir/demo.env (PPM_GATEWAY_URL,
#                       PPM_ADMIN_KEY, PPM_DEMO_*).
#   stop_stack          stops deploy/run.sh (TERM, which stops each process
#                       by its pid; KILL after 15 s); safe to call twice.

free_ports() { # n -> n free loopback TCP ports
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

declare -A metrics_port
stack_pid=

start_stack() {
    local name=$1 c2 r1 p1 p2 m1 m2 mc mr mp mm mg
    run_dir=$tmp/$name
    mkdir -p "$run_dir"
    chmod 755 "$run_dir"
    read -r gateway_port redis_port pg_port emulator_port config_rpc_port c2 r1 p1 p2 m1 m2 \
        mc mr mp mm mg < <(free_ports 16)
    metrics_port=([config]=$mc [rate]=$mr [payment]=$mp [metering]=$mm [gateway]=$mg)
    (
        unset PPM_PG_URL PPM_REDIS_URL PPM_MASTER_KEY PPM_STRIPE_API_BASE
        export PPM_RUN_DIR=$run_dir PPM_BIN_DIR=$bin
        export PPM_GATEWAY_PORT=$gateway_port PPM_REDIS_PORT=$redis_port PPM_PG_PORT=$pg_port
        export PPM_EMULATOR_PORT=$emulator_port
        export PPM_CONFIG_ENDPOINT=tcp://127.0.0.1:$config_rpc_port PPM_CONFIG_EVENTS=tcp://127.0.0.1:$c2
        export PPM_RATE_ENDPOINT=tcp://127.0.0.1:$r1
        export PPM_PAYMENT_ENDPOINT=tcp://127.0.0.1:$p1 PPM_PAYMENT_EVENTS=tcp://127.0.0.1:$p2
        export PPM_METERING_ENDPOINT=tcp://127.0.0.1:$m1 PPM_METERING_EVENTS=tcp://127.0.0.1:$m2
        export PPM_CONFIG_METRICS=127.0.0.1:$mc PPM_RATE_METRICS=127.0.0.1:$mr
        export PPM_PAYMENT_METRICS=127.0.0.1:$mp PPM_METERING_METRICS=127.0.0.1:$mm
        export PPM_GATEWAY_METRICS=127.0.0.1:$mg
        export PPM_PAYMENT_OUTBOX_EVERY=100ms PPM_METERING_TICK=100ms
        exec bash "$root/deploy/run.sh"
    ) >"$tmp/$name.out" 2>&1 &
    stack_pid=$!
    for _ in $(seq 300); do
        grep -q "Press Ctrl-C to stop" "$tmp/$name.out" 2>/dev/null && break
        kill -0 "$stack_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q "Press Ctrl-C to stop" "$tmp/$name.out"; then
        fail "$name: the stack starts (deploy/run.sh)"
        tail -20 "$tmp/$name.out" | sed 's/^/    | /'
        local f
        for f in "$run_dir"/logs/*.log; do
            echo "    | --- $f"
            tail -5 "$f" | sed 's/^/    | /'
        done
        return 1
    fi
    ok "$name: the stack starts (deploy/run.sh, demo tenant created)"
    # shellcheck disable=SC1091
    . "$run_dir/demo.env"
    return 0
}

stop_stack() {
    [ -n "$stack_pid" ] || return 0
    kill -TERM "$stack_pid" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$stack_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$stack_pid" 2>/dev/null
    wait "$stack_pid" 2>/dev/null
    stack_pid=
}
