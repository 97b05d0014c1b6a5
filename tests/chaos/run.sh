#!/usr/bin/env bash
# Chaos run (tests/chaos/README.md): the real services, Redis, PostgreSQL
# and the Stripe emulator on free loopback ports in a temporary directory,
# under a supervisor of our own that can kill -9 and restart any process;
# chaos-load drives paid sessions through the gateway, one phase per fault
# kind and then all of them together; afterwards the invariant checker
# (check.sh + check.sql) compares the ledger, metering's sessions, the
# emulator's record and what the load generator saw, and prints the table.
#
#   tests/chaos/run.sh           the smoke (`make test`): CHAOS_SESSIONS=60, phases of 4 s
#   tests/chaos/run.sh --full    `make chaos`: CHAOS_SESSIONS=1100, every phase 30 s
#
# Knobs (environment): CHAOS_SESSIONS, CHAOS_PHASE_SECONDS, CHAOS_CONCURRENCY,
# CHAOS_SCALE (PPM_TIME_SCALE), CHAOS_PHASES (a subset, e.g. "baseline kill9"),
# CHAOS_SEED, CHAOS_KEEP=1 (keep the directory with logs and records),
# CHAOS_LOG_LEVEL (the services', default info).
# Prints one ok/FAIL line per invariant and phase, then "N passed, N failed".
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${PPM_BIN_DIR:-$root/build/bin}
here=$root/tests/chaos

full=0
[ "${1:-}" = --full ] && full=1
if [ "$full" = 1 ]; then
    sessions=${CHAOS_SESSIONS:-1100}
    phase_s=${CHAOS_PHASE_SECONDS:-30}
    concurrency=${CHAOS_CONCURRENCY:-60}
    n_payers=5
    minutes=1,2,3
    ttl_s=900 # a payer whose checkouts keep failing has 30 s to get through
else
    sessions=${CHAOS_SESSIONS:-60}
    phase_s=${CHAOS_PHASE_SECONDS:-4}
    concurrency=${CHAOS_CONCURRENCY:-30}
    n_payers=2
    minutes=1,2
    ttl_s=360
fi
scale=${CHAOS_SCALE:-30}
seed=${CHAOS_SEED:-$RANDOM}
all_phases="baseline kill9 redis-restart redis-flush pg-restart stripe-errors stripe-drops stripe-latency webhooks metering-replica all"
phases=${CHAOS_PHASES:-$all_phases}
tick_ms=200        # PPM_METERING_TICK (real)
slack_ms=300       # what a loaded 2-core machine adds to one tick (real)
grace_s=180        # the tenants' grace_s (ppm time): also the reopen window
heartbeat_ms=2000  # the load generator's heartbeat period (real)

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
say() { printf 'chaos: %s\n' "$*"; }
now_ms() { date +%s%3N; }
t_start=$(now_ms)
elapsed() { echo $((($(now_ms) - t_start) / 1000)); }

for b in ppm-config ppm-rate ppm-payment ppm-metering ppm-gateway ppmctl stripe-emulator chaos-load; do
    [ -x "$bin/$b" ] || { fail "$bin/$b is built (make build tests)"; echo "$passed passed, $failed failed"; exit 1; }
done
for t in redis-server redis-cli psql jq curl python3; do
    command -v "$t" >/dev/null || { fail "$t is installed"; echo "$passed passed, $failed failed"; exit 1; }
done
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pgbin/initdb" ] || { fail "PostgreSQL server binaries are installed"; echo "$passed passed, $failed failed"; exit 1; }

tmp=$(mktemp -d "${PPM_TEST_TMP:-/tmp}/ppm-chaos.XXXXXX")
chmod 755 "$tmp"
mkdir -p "$tmp/logs" "$tmp/redis" "$tmp/pg" "$tmp/pgsock"
runas=()
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runas=(runuser -u postgres --)
    chown postgres "$tmp/pg" "$tmp/pgsock"
fi

# ---- supervisor ----------------------------------------------------------------
# Every process but PostgreSQL is a child of this shell: pid[name]. The
# ones in `expected` must be running; one that exits by itself is a crash:
# reported (must be 0) and restarted.
declare -A pid
expected=()
crashes=0
load_pids=()

cleanup() {
    set +e
    trap '' INT TERM
    for p in "${load_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for n in gateway metering-a metering-b payment rate config emulator redis; do
        [ -n "${pid[$n]:-}" ] && kill -TERM "${pid[$n]}" 2>/dev/null
    done
    for n in gateway metering-a metering-b payment rate config emulator redis; do
        if [ -n "${pid[$n]:-}" ]; then
            for _ in $(seq 50); do kill -0 "${pid[$n]}" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "${pid[$n]}" 2>/dev/null
            wait "${pid[$n]}" 2>/dev/null
        fi
    done
    for p in "${load_pids[@]}"; do wait "$p" 2>/dev/null; done
    [ -f "$tmp/pg/postmaster.pid" ] && "${runas[@]}" "$pgbin/pg_ctl" -D "$tmp/pg" -m immediate stop >/dev/null 2>&1
    if [ "${CHAOS_KEEP:-0}" = 1 ]; then say "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r p_gw p_gwm p_redis p_pg p_emu p_c1 p_c2 p_cm p_r1 p_rm p_p1 p_p2 p_pm \
    p_ma1 p_ma2 p_mam p_mb1 p_mb2 p_mbm < <(python3 - <<'PY'
import socket
socks = []
for _ in range(19):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)
gateway_url=http://127.0.0.1:$p_gw
emu_url=http://127.0.0.1:$p_emu
pg_url=postgresql://ppm@127.0.0.1:$p_pg/ppm
metering_rpc=tcp://127.0.0.1:$p_ma1,tcp://127.0.0.1:$p_mb1
metering_pub=tcp://127.0.0.1:$p_ma2,tcp://127.0.0.1:$p_mb2

# Environment shared by every service: one clock (scale and epoch).
export PPM_TIME_SCALE=$scale
PPM_TIME_EPOCH_MS=$(now_ms)
export PPM_TIME_EPOCH_MS
export PPM_LOG_LEVEL=${CHAOS_LOG_LEVEL:-info}
export PPM_PG_URL=$pg_url
export PPM_REDIS_URL=redis://127.0.0.1:$p_redis
PPM_MASTER_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export PPM_MASTER_KEY
export PPM_STRIPE_API_BASE=$emu_url
export PPM_CONFIG_ENDPOINT=tcp://127.0.0.1:$p_c1 PPM_CONFIG_EVENTS=tcp://127.0.0.1:$p_c2
export PPM_RATE_ENDPOINT=tcp://127.0.0.1:$p_r1
export PPM_PAYMENT_ENDPOINT=tcp://127.0.0.1:$p_p1 PPM_PAYMENT_EVENTS=tcp://127.0.0.1:$p_p2
export PPM_METERING_ENDPOINT=$metering_rpc PPM_METERING_EVENTS=$metering_pub

start_proc() { # name: starts it in the background, logs appended to logs/<name>.log
    local n=$1 log=$tmp/logs/$1.log
    case $n in
        redis) redis-server "$tmp/redis/redis.conf" >>"$log" 2>&1 & ;;
        emulator) PPM_EMULATOR_PORT=$p_emu PPM_EMULATOR_BIND=127.0.0.1 "$bin/stripe-emulator" >>"$log" 2>&1 & ;;
        config) PPM_RPC_BIND=$PPM_CONFIG_ENDPOINT PPM_PUB_BIND=$PPM_CONFIG_EVENTS \
            PPM_METRICS_BIND=127.0.0.1:$p_cm "$bin/ppm-config" >>"$log" 2>&1 & ;;
        rate) PPM_RPC_BIND=$PPM_RATE_ENDPOINT PPM_METRICS_BIND=127.0.0.1:$p_rm \
            "$bin/ppm-rate" >>"$log" 2>&1 & ;;
        payment) PPM_RPC_BIND=$PPM_PAYMENT_ENDPOINT PPM_PUB_BIND=$PPM_PAYMENT_EVENTS \
            PPM_METRICS_BIND=127.0.0.1:$p_pm PPM_PAYMENT_OUTBOX_EVERY=200ms \
            PPM_PAYMENT_RECONCILE_EVERY=2s "$bin/ppm-payment" >>"$log" 2>&1 & ;;
        metering-a) PPM_RPC_BIND=tcp://127.0.0.1:$p_ma1 PPM_PUB_BIND=tcp://127.0.0.1:$p_ma2 \
            PPM_METRICS_BIND=127.0.0.1:$p_mam PPM_METERING_REPLICA_ID=chaos-a \
            PPM_METERING_TICK=${tick_ms}ms "$bin/ppm-metering" >>"$log" 2>&1 & ;;
        metering-b) PPM_RPC_BIND=tcp://127.0.0.1:$p_mb1 PPM_PUB_BIND=tcp://127.0.0.1:$p_mb2 \
            PPM_METRICS_BIND=127.0.0.1:$p_mbm PPM_METERING_REPLICA_ID=chaos-b \
            PPM_METERING_TICK=${tick_ms}ms "$bin/ppm-metering" >>"$log" 2>&1 & ;;
        gateway) PPM_HTTP_ADDRESS=127.0.0.1 PPM_HTTP_PORT=$p_gw PPM_METRICS_BIND=127.0.0.1:$p_gwm \
            PPM_WEB_ROOT=$root/services/gateway/web "$bin/ppm-gateway" >>"$log" 2>&1 & ;;
    esac
    pid[$n]=$!
    echo "$(now_ms) start $n ${pid[$n]}" >>"$tmp/logs/supervisor.log"
}
port_of() {
    case $1 in
        redis) echo "$p_redis" ;; emulator) echo "$p_emu" ;; config) echo "$p_c1" ;;
        rate) echo "$p_r1" ;; payment) echo "$p_p1" ;; metering-a) echo "$p_ma1" ;;
        metering-b) echo "$p_mb1" ;; gateway) echo "$p_gw" ;;
    esac
}
wait_up() { # name: until its port accepts connections (10 s)
    local port
    port=$(port_of "$1")
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    say "$1 did not open port $port"
    return 1
}
kill9() { # name…: kill -9, reaped; not expected to run until restarted
    local n
    for n in "$@"; do
        echo "$(now_ms) kill -9 $n ${pid[$n]:-}" >>"$tmp/logs/supervisor.log"
        [ -n "${pid[$n]:-}" ] && kill -KILL "${pid[$n]}" 2>/dev/null
        [ -n "${pid[$n]:-}" ] && wait "${pid[$n]}" 2>/dev/null
        pid[$n]=
    done
}
restart() { # name…
    local n
    for n in "$@"; do start_proc "$n"; done
    for n in "$@"; do wait_up "$n"; done
}
alive_check() {
    local n rc
    for n in "${expected[@]}"; do
        [ -n "${pid[$n]:-}" ] || continue
        if ! kill -0 "${pid[$n]}" 2>/dev/null; then
            wait "${pid[$n]}"
            rc=$?
            crashes=$((crashes + 1))
            echo "$(now_ms) CRASH $n status $rc" >>"$tmp/logs/supervisor.log"
            say "$n exited by itself (status $rc): restarting it (see logs/$n.log)"
            tail -5 "$tmp/logs/$n.log" | sed 's/^/    | /'
            restart "$n"
        fi
    done
}
pause_ms() { # ms: sleeps, watching the processes
    local end=$(($(now_ms) + $1))
    while [ "$(now_ms)" -lt "$end" ]; do
        alive_check
        sleep 0.2
    done
}

# ---- Redis, PostgreSQL, emulator, services --------------------------------------
cat >"$tmp/redis/redis.conf" <<CONF
port $p_redis
bind 127.0.0.1
dir $tmp/redis
appendonly yes
appendfsync everysec
save ""
logfile $tmp/logs/redis-server.log
CONF
"${runas[@]}" "$pgbin/initdb" -D "$tmp/pg" -U ppm -A trust -E UTF8 --no-sync >"$tmp/logs/initdb.log" 2>&1 ||
    { fail "initdb"; cat "$tmp/logs/initdb.log"; echo "$passed passed, $failed failed"; exit 1; }
pg_opts="-p $p_pg -k $tmp/pgsock -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200"
[ ${#runas[@]} -eq 0 ] || chown postgres "$tmp/logs"
pg_ctl() { "${runas[@]}" "$pgbin/pg_ctl" -D "$tmp/pg" -l "$tmp/logs/postgresql.log" -o "$pg_opts" "$@" >/dev/null; }
pg_ctl -w start || { fail "PostgreSQL starts"; echo "$passed passed, $failed failed"; exit 1; }
psql -h 127.0.0.1 -p "$p_pg" -U ppm -d postgres -qc "CREATE DATABASE ppm" >/dev/null

start_proc redis
for _ in $(seq 100); do [ "$(redis-cli -p "$p_redis" ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done
start_proc emulator
wait_up emulator
start_proc config
wait_up config
for n in rate payment metering-a metering-b gateway; do start_proc "$n"; done
for n in rate payment metering-a metering-b gateway; do wait_up "$n"; done
expected=(redis emulator config rate payment metering-a metering-b gateway)
say "stack up in $(elapsed) s (scale $scale, seed $seed, $sessions sessions, phases: $phases)"

# ---- tenants: two per phase (prepaid with refunds of unused minutes, and
# authorize with capture of the time used), five payers each (two in the smoke) ------
export PPM_TENANT=
ctl() { "$bin/ppmctl" "$@"; }
setup_tenant() { # phase mode -> writes $tmp/tenants/<phase>-<mode>.json
    local phase=$1 mode=$2 created tenant acct whsec billing rounding payers="" i tok
    created=$(ctl --json tenant create "chaos $phase $mode" --plan pro) || return 1
    tenant=$(jq -r '.tenant_id // .tenant.tenant_id' <<<"$created")
    acct=$(tr -cd 'a-z0-9' <<<"${phase}${mode}")$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
    whsec=whsec_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    if [ "$mode" = prepaid ]; then billing=prepaid rounding=minute; else billing=authorize rounding=second; fi
    ctl settings set --tenant "$tenant" enabled=true enable_for=both rate_scope=default \
        currency=USD default_call_per_minute=100 default_chat_per_minute=60 \
        preset_minutes=1,2,3 terms_url=https://example.com/terms stripe_mode=test \
        stripe_secret_key="sk_test_${acct}_secret" stripe_publishable_key="pk_test_${acct}_pub" \
        stripe_webhook_secret="$whsec" billing_mode=$billing rounding=$rounding refund_unused=true \
        grace_s=$grace_s session_ttl_s=$ttl_s max_concurrent_sessions=100 \
        max_minutes_per_purchase=60 max_session_minutes=240 >/dev/null || return 1
    curl -fsS "$emu_url/_emulator/webhooks" -H 'Content-Type: application/json' \
        -d "{\"account_key\":\"sk_test_${acct}_secret\",\"url\":\"$gateway_url/v1/stripe/webhook/$tenant\",\"secret\":\"$whsec\"}" >/dev/null || return 1
    for i in $(seq "$n_payers"); do
        tok=$(ctl user-token --tenant "$tenant" --user "payer$i" --ttl 86400) || return 1
        payers+="${payers:+,}{\"id\":\"payer$i\",\"token\":\"$tok\"}"
    done
    echo "{\"tenant\":\"$tenant\",\"mode\":\"$mode\",\"phase\":\"$phase\",\"account\":\"$acct\",\"payers\":[$payers]}" \
        >"$tmp/tenants/$phase-$mode.json"
}
mkdir -p "$tmp/tenants"
setup_pids=()
for phase in $phases; do
    for mode in prepaid authorize; do
        setup_tenant "$phase" "$mode" >>"$tmp/logs/setup.log" 2>&1 &
        setup_pids+=($!)
    done
done
setup_ok=1
for p in "${setup_pids[@]}"; do wait "$p" || setup_ok=0; done
for phase in $phases; do
    for mode in prepaid authorize; do [ -s "$tmp/tenants/$phase-$mode.json" ] || setup_ok=0; done
done
if [ "$setup_ok" = 1 ]; then
    ok "tenants set up with ppmctl ($(elapsed) s)"
else
    fail "tenants set up with ppmctl"
    tail -20 "$tmp/logs/setup.log" | sed 's/^/    | /'
    echo "$passed passed, $failed failed"
    exit 1
fi
for phase in $phases; do
    jq -s --arg gw "$gateway_url" '{gateway: $gw, payee: "coach", tenants: .}' \
        "$tmp/tenants/$phase-prepaid.json" "$tmp/tenants/$phase-authorize.json" >"$tmp/tenants/$phase.json"
done
i=0
for phase in $phases; do
    i=$((i + 1))
    for mode in prepaid authorize; do
        jq -r --arg n "$i" '[$n, .phase, .mode, .tenant, .account] | @tsv' "$tmp/tenants/$phase-$mode.json"
    done
done >"$tmp/tenants.tsv"
# rate keeps a cache of config (refreshed every second): let it see the tenants
sleep 2

# ---- faults ----------------------------------------------------------------------
emu_fault() { curl -fsS "$emu_url/_emulator/faults" -H 'Content-Type: application/json' -d "$1" >/dev/null; }
current_phase=setup
emu_clear() { # also counts the faults the phase's rules fired (faults.tsv)
    local fired
    fired=$(curl -fsS "$emu_url/_emulator/faults" | jq '[.rules[]?.fired // 0] | add // 0')
    [ "${fired:-0}" = 0 ] || printf '%s\t%s\n' "$current_phase" "$fired" >>"$tmp/faults.tsv"
    curl -fsS -X DELETE "$emu_url/_emulator/faults" >/dev/null
    curl -fsS "$emu_url/_emulator/webhooks/config" -H 'Content-Type: application/json' \
        -d '{"duplicate":1,"reorder_window":0}' >/dev/null
    curl -fsS -X POST "$emu_url/_emulator/webhooks/flush" >/dev/null
}
redis_restart() {
    kill9 redis
    pause_ms 500
    restart redis
    for _ in $(seq 600); do [ "$(redis-cli -p "$p_redis" ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done
}
redis_flush() {
    echo "$(now_ms) FLUSHALL" >>"$tmp/logs/supervisor.log"
    redis-cli -p "$p_redis" flushall >/dev/null
}
pg_restart() {
    echo "$(now_ms) pg_ctl restart -m immediate" >>"$tmp/logs/supervisor.log"
    pg_ctl -m immediate -w restart
}
down_ms=$((phase_s * 1000 / 12 < 1000 ? phase_s * 1000 / 12 : 1000))
kill_restart() { # name…: kill -9, down for down_ms, restart
    kill9 "$@"
    pause_ms "$down_ms"
    restart "$@"
}
stripe_errors() { # rate scale (percent of the full-phase rates)
    emu_fault "{\"mode\":\"rate_limit\",\"rate\":0.$(printf %02d $((15 * $1 / 100))),\"seed\":$seed}"
    emu_fault "{\"mode\":\"error_before\",\"rate\":0.$(printf %02d $((10 * $1 / 100))),\"seed\":$((seed + 1))}"
    emu_fault "{\"mode\":\"error_after\",\"rate\":0.$(printf %02d $((10 * $1 / 100))),\"seed\":$((seed + 2))}"
}
stripe_drops() {
    emu_fault "{\"mode\":\"drop_before\",\"rate\":0.$(printf %02d $((10 * $1 / 100))),\"seed\":$((seed + 3))}"
    emu_fault "{\"mode\":\"drop_after\",\"rate\":0.$(printf %02d $((10 * $1 / 100))),\"seed\":$((seed + 4))}"
}
webhooks_chaos() {
    curl -fsS "$emu_url/_emulator/webhooks/config" -H 'Content-Type: application/json' \
        -d '{"duplicate":3,"reorder_window":5,"hold_ms":1000}' >/dev/null
}

# Each runs for phase_s seconds while that phase's sessions arrive.
T=$((phase_s * 1000))
fault_baseline() { pause_ms "$T"; }
fault_kill9() {
    local n step=$((T / 6))
    for n in config rate payment metering gateway; do
        pause_ms "$step"
        if [ "$n" = metering ]; then kill_restart metering-a metering-b; else kill_restart "$n"; fi
    done
    pause_ms $((step - down_ms))
}
fault_redis_restart() { pause_ms $((T / 4)); redis_restart; pause_ms $((T / 2)); redis_restart; pause_ms $((T / 4 - 500)); }
fault_redis_flush() { pause_ms $((T / 3)); redis_flush; pause_ms $((T / 3)); redis_flush; pause_ms $((T / 3)); }
fault_pg_restart() { pause_ms $((T / 3)); pg_restart; pause_ms $((T / 3)); pg_restart; pause_ms $((T / 3)); }
fault_stripe_errors() { stripe_errors 100; pause_ms "$T"; emu_clear; }
fault_stripe_drops() { stripe_drops 100; pause_ms "$T"; emu_clear; }
fault_stripe_latency() { emu_fault '{"latency_ms":2000}'; pause_ms "$T"; emu_clear; }
fault_webhooks() { webhooks_chaos; pause_ms "$T"; emu_clear; }
fault_metering_replica() {
    # two replicas share the buckets; one dies and stays down for half the
    # phase (the other takes its buckets over), then the other one
    pause_ms $((T / 5)); kill9 metering-b; pause_ms $((T * 2 / 5)); restart metering-b
    pause_ms $((T / 5)); kill9 metering-a; pause_ms $((T / 10)); restart metering-a
    pause_ms $((T / 10))
}
fault_all() {
    local step=$((T / 10))
    stripe_errors 50
    stripe_drops 50
    emu_fault '{"path":"/v1/payment_intents*","method":"POST","latency_ms":2000}'
    webhooks_chaos
    pause_ms "$step"; kill_restart payment
    pause_ms "$step"; redis_restart
    pause_ms "$step"; kill9 metering-b
    pause_ms "$step"; kill_restart gateway
    pause_ms "$step"; pg_restart
    pause_ms "$step"; restart metering-b; redis_flush
    pause_ms "$step"; kill_restart config rate
    pause_ms "$step"; kill_restart metering-a
    pause_ms $((step - 2 * down_ms))
    emu_clear
}

# ---- the phases ------------------------------------------------------------------------
n_phases=$(wc -w <<<"$phases")
per_phase=$(((sessions + n_phases - 1) / n_phases))
: >"$tmp/observed.jsonl"
: >"$tmp/faults.tsv"
i=0
for phase in $phases; do
    i=$((i + 1))
    say "phase $phase: $per_phase sessions over $phase_s s ($(elapsed) s)"
    echo "$(now_ms) phase $phase" >>"$tmp/logs/supervisor.log"
    current_phase=$phase
    "$bin/chaos-load" --config "$tmp/tenants/$phase.json" --out "$tmp/observed-$phase.jsonl" \
        --phase "$phase" --sessions "$per_phase" --seconds "$phase_s" \
        --concurrency "$concurrency" --seed $((seed + i)) --heartbeat-ms "$heartbeat_ms" \
        --minutes "$minutes" \
        >>"$tmp/logs/chaos-load-$phase.log" 2>&1 &
    load_pids+=($!)
    "fault_${phase//-/_}"
done
emu_clear
say "faults over; waiting for the load generators ($(elapsed) s)"
load_rc=0
while :; do
    running=0
    for p in "${load_pids[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
    [ "$running" = 0 ] && break
    pause_ms 1000
done
for p in "${load_pids[@]}"; do wait "$p" || load_rc=1; done
load_pids=()
cat "$tmp"/observed-*.jsonl >"$tmp/observed.jsonl" 2>/dev/null
observed=$(wc -l <"$tmp/observed.jsonl")
if [ "$load_rc" = 0 ] && [ "$observed" -ge $((per_phase * n_phases)) ]; then
    ok "chaos-load ran $observed sessions ($(elapsed) s)"
else
    fail "chaos-load ran every session ($observed of $((per_phase * n_phases)), exit status $load_rc)"
    tail -n 5 "$tmp"/logs/chaos-load-*.log | sed 's/^/    | /'
fi

# ---- drain: every session over, settled; payments reconciled --------------------------
q() { psql -h 127.0.0.1 -p "$p_pg" -U ppm -d ppm -tAq -c "$1" 2>/dev/null; }
drain() { # seconds: until every session is finalized, settled, and the outbox delivered
    local left=
    for _ in $(seq $(($1 * 2))); do
        left=$(q "SELECT (SELECT count(*) FROM metering.sessions WHERE NOT finalized)
                       + (SELECT count(*) FROM metering.settlements WHERE acked_ms IS NULL)
                       + (SELECT count(*) FROM payment.outbox WHERE delivered_at_ms IS NULL)")
        [ "$left" = 0 ] && return 0
        pause_ms 500
    done
    say "not drained after $1 s: $left left (the checker counts them)"
    return 1
}
# At most 500 payments per reconciliation run: again while it had a full page
# (the timer's own run may be going on: then it answers ABORTED, retry).
reconcile() {
    local recon n checked=0 resolved=0
    for _ in $(seq 40); do
        recon=$(PPM_PAYMENT_ENDPOINT=tcp://127.0.0.1:$p_p1 ctl --json payments reconcile 2>/dev/null) ||
            { pause_ms 500; continue; }
        n=$(jq -r '.checked // 0' <<<"$recon")
        checked=$((checked + n))
        resolved=$((resolved + $(jq -r '.resolved // 0' <<<"$recon")))
        [ "$n" -lt 500 ] && break
    done
    say "reconciliation: $checked payments checked, $resolved resolved ($(elapsed) s)"
}
say "draining: sessions finalized, settlements acknowledged, outbox delivered ($(elapsed) s)"
drain 120
reconcile
# what the reconciliation found paid is credited (or refused and given
# back), and settled; then once more
drain 20
reconcile
# webhooks the reconciliation caused, and settlements of what it changed
for _ in $(seq 40); do
    pending=$(curl -fsS "$emu_url/_emulator/webhooks" | jq '[.deliveries[]? // .records[]? | select(.state == "pending" or .state == "retrying")] | length' 2>/dev/null)
    [ "${pending:-0}" = 0 ] && break
    pause_ms 500
done
pause_ms 500
alive_check

# ---- the invariant checker -----------------------------------------------------------------
tol_ms=$(((tick_ms + slack_ms) * scale))
CHAOS_DIR=$tmp CHAOS_PG_URL=$pg_url CHAOS_EMULATOR_URL=$emu_url CHAOS_TOLERANCE_MS=$tol_ms \
    CHAOS_CRASHES=$crashes bash "$here/check.sh" >"$tmp/check.out" 2>"$tmp/check.err"
check_rc=$?
cat "$tmp/check.out" | grep -v '^result\b'
if [ ! -s "$tmp/check.out" ]; then
    fail "the invariant checker ran (exit $check_rc)"
    sed 's/^/    | /' "$tmp/check.err" | tail -20
fi
# one ok/FAIL per must-be-zero column and phase
while IFS=$'\t' read -r _ phase column value; do
    if [ "$value" = 0 ]; then ok "$phase: $column = 0"; else fail "$phase: $column = $value (must be 0)"; fi
done < <(grep '^result' "$tmp/check.out")
if [ "$crashes" = 0 ]; then ok "no process exited by itself"; else fail "$crashes process(es) exited by themselves (logs/supervisor.log)"; fi
say "done in $(elapsed) s"
if [ "$failed" -gt 0 ] && [ "${CHAOS_KEEP:-0}" != 1 ]; then
    rm -rf "$root/build/chaos/last"
    mkdir -p "$root/build/chaos/last"
    cp -r "$tmp/logs" "$tmp"/*.jsonl "$tmp"/*.tsv "$tmp"/check.* "$tmp/tenants" "$root/build/chaos/last/" 2>/dev/null
    say "logs and records kept in build/chaos/last"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
