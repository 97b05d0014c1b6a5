#!/usr/bin/env bash
# `make run`: the whole product on loopback, with a demo tenant.
#
# Starts Redis, PostgreSQL (as the unprivileged user "postgres" when run as
# root), the Stripe emulator (webhooks to the gateway) and every service,
# each on 127.0.0.1; creates a demo tenant on the Pro plan with
# Pay-per-Minute on, default and individual rates, presets 10/30/45, a
# terms URL and test keys for the emulator (with ppmctl); writes
# run/demo.env; prints the URLs; stops everything cleanly on Ctrl-C (or
# SIGTERM) and prints each process's exit status ("run: exit statuses:
# gateway=0 …"). Data stays in run/ between runs (the demo tenant is created
# once).
#
#   deploy/run.sh [BUILD_DIR]
#
# Environment given to `make run` reaches every service (PPM_TIME_SCALE,
# PPM_LOG_LEVEL, …). Ports: PPM_GATEWAY_PORT (8080), PPM_REDIS_PORT (16379),
# PPM_PG_PORT (15432), PPM_EMULATOR_PORT (12111); the services' own
# addresses follow docs/ARCHITECTURE.md "Default addresses" unless set.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${1:-build}
bin=${PPM_BIN_DIR:-$root/$build/bin}
run=${PPM_RUN_DIR:-$root/run}
mkdir -p "$run/logs" "$run/redis"
chmod 755 "$run"

gateway_port=${PPM_GATEWAY_PORT:-8080}
redis_port=${PPM_REDIS_PORT:-16379}
pg_port=${PPM_PG_PORT:-15432}
emu_port=${PPM_EMULATOR_PORT:-12111}
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

say() { printf 'run: %s\n' "$*"; }
die() { printf 'run: %s\n' "$*" >&2; exit 1; }
[ -x "$pgbin/initdb" ] || die "PostgreSQL server binaries not found (make deps)"
command -v redis-server >/dev/null || die "redis-server not found (make deps)"
for b in ppm-config ppm-rate ppm-payment ppm-metering ppm-gateway ppmctl; do
    [ -x "$bin/$b" ] || die "$bin/$b is missing: build first (make build)"
done

runas=()
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    runas=(runuser -u postgres --)
fi

pids=()
names=()
stopping=0
stop_all() {
    [ "$stopping" -eq 1 ] && return
    stopping=1
    set +e
    trap '' PIPE INT # a closed terminal or a second Ctrl-C must not cut the stop short
    say "stopping"
    # services in reverse order of start, each by its own pid
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[$i]}" 2>/dev/null
    done
    local statuses=()
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        for _ in $(seq 50); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "${pids[$i]}" 2>/dev/null
        wait "${pids[$i]}" 2>/dev/null
        statuses+=("${names[$i]}=$?")
    done
    # Each process's own status (0 = it stopped cleanly; 137 = it had to be
    # killed; under a sanitizer build a report or a leak is non-zero): the
    # test suites that run this script check it.
    say "exit statuses: ${statuses[*]}"
    redis-cli -p "$redis_port" shutdown >/dev/null 2>&1
    [ -f "$run/pg/postmaster.pid" ] && "${runas[@]}" "$pgbin/pg_ctl" -D "$run/pg" -m fast -w stop >/dev/null 2>&1
    say "stopped; data kept in run/"
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# With PPM_CURVE=on, a process's own CURVE secret may be given as
# PPM_CURVE_SECRET_KEY_<NAME> (CONFIG, RATE, PAYMENT, METERING, GATEWAY,
# PPMCTL); otherwise PPM_CURVE_SECRET_KEY is shared.
own_key() { # name -> that process's own key, or nothing
    local var="PPM_CURVE_SECRET_KEY_${1^^}"
    var=${var//-/_}
    printf '%s' "${!var:-}"
}
start() { # name command… (environment already exported; logs in run/logs/<name>.log)
    local name=$1 key
    shift
    key=$(own_key "$name")
    if [ -n "$key" ]; then
        PPM_CURVE_SECRET_KEY=$key "$@" >>"$run/logs/$name.log" 2>&1 &
    else
        "$@" >>"$run/logs/$name.log" 2>&1 &
    fi
    pids+=($!)
    names+=("$name")
}
wait_tcp() { # port name
    for _ in $(seq 200); do
        (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
        sleep 0.05
    done
    die "$2 did not open port $1 (see run/logs/$2.log)"
}

# --- Redis (append-only file in run/redis) ----------------------------------
if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
    die "port $redis_port is taken (is another make run going?): set PPM_REDIS_PORT"
fi
cat >"$run/redis/redis.conf" <<CONF
port $redis_port
bind 127.0.0.1
dir $run/redis
appendonly yes
appendfsync everysec
logfile $run/logs/redis.log
CONF
start redis redis-server "$run/redis/redis.conf"
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

# --- PostgreSQL (cluster in run/pg, created once) ----------------------------
mkdir -p "$run/pgsock"
if [ ! -f "$run/pg/PG_VERSION" ]; then
    mkdir -p "$run/pg"
    [ ${#runas[@]} -eq 0 ] || chown postgres "$run/pg" "$run/pgsock"
    "${runas[@]}" "$pgbin/initdb" -D "$run/pg" -U ppm -A trust -E UTF8 >"$run/logs/initdb.log" 2>&1 ||
        die "initdb failed (run/logs/initdb.log)"
fi
[ ${#runas[@]} -eq 0 ] || chown postgres "$run/pgsock" "$run/logs"
"${runas[@]}" "$pgbin/pg_ctl" -D "$run/pg" -l "$run/logs/postgresql.log" \
    -o "-p $pg_port -k $run/pgsock -c listen_addresses=127.0.0.1" -w start >/dev/null ||
    die "PostgreSQL did not start (run/logs/postgresql.log)"
psql -h 127.0.0.1 -p "$pg_port" -U ppm -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'ppm'" |
    grep -q 1 || psql -h 127.0.0.1 -p "$pg_port" -U ppm -d postgres -qc "CREATE DATABASE ppm" >/dev/null

# --- shared environment ---------------------------------------------------------
if [ ! -f "$run/master.key" ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$run/master.key")
fi
export PPM_PG_URL=${PPM_PG_URL:-postgresql://ppm@127.0.0.1:$pg_port/ppm}
export PPM_REDIS_URL=${PPM_REDIS_URL:-redis://127.0.0.1:$redis_port}
export PPM_MASTER_KEY=${PPM_MASTER_KEY:-$(cat "$run/master.key")}
export PPM_STRIPE_API_BASE=${PPM_STRIPE_API_BASE:-http://127.0.0.1:$emu_port}
export PPM_CONFIG_ENDPOINT=${PPM_CONFIG_ENDPOINT:-tcp://127.0.0.1:7101}
export PPM_CONFIG_EVENTS=${PPM_CONFIG_EVENTS:-tcp://127.0.0.1:7102}
export PPM_RATE_ENDPOINT=${PPM_RATE_ENDPOINT:-tcp://127.0.0.1:7111}
export PPM_PAYMENT_ENDPOINT=${PPM_PAYMENT_ENDPOINT:-tcp://127.0.0.1:7121}
export PPM_PAYMENT_EVENTS=${PPM_PAYMENT_EVENTS:-tcp://127.0.0.1:7122}
export PPM_METERING_ENDPOINT=${PPM_METERING_ENDPOINT:-tcp://127.0.0.1:7131}
export PPM_METERING_EVENTS=${PPM_METERING_EVENTS:-tcp://127.0.0.1:7132}
export PPM_WEB_ROOT=${PPM_WEB_ROOT:-$root/services/gateway/web}
# Under a time scale every process must count from the same origin.
if [ "${PPM_TIME_SCALE:-1}" != 1 ]; then
    export PPM_TIME_EPOCH_MS=${PPM_TIME_EPOCH_MS:-$(date +%s%3N)}
fi
port_of() { echo "${1##*:}"; }

# --- Stripe emulator ------------------------------------------------------------
if [ -x "$bin/stripe-emulator" ]; then
    PPM_EMULATOR_PORT=$emu_port PPM_EMULATOR_BIND=127.0.0.1 \
        PPM_EMULATOR_PUBLIC_URL=http://127.0.0.1:$emu_port start stripe-emulator "$bin/stripe-emulator"
    wait_tcp "$emu_port" stripe-emulator
else
    say "no stripe-emulator binary: payments will fail (build it with make build)"
fi

# --- services (each binds its own sockets from PPM_RPC_BIND / PPM_PUB_BIND) -----
PPM_RPC_BIND=$PPM_CONFIG_ENDPOINT PPM_PUB_BIND=$PPM_CONFIG_EVENTS \
    PPM_METRICS_BIND=${PPM_CONFIG_METRICS:-127.0.0.1:9101} start config "$bin/ppm-config"
wait_tcp "$(port_of "$PPM_CONFIG_ENDPOINT")" config
PPM_RPC_BIND=$PPM_RATE_ENDPOINT PPM_METRICS_BIND=${PPM_RATE_METRICS:-127.0.0.1:9111} \
    start rate "$bin/ppm-rate"
PPM_RPC_BIND=$PPM_PAYMENT_ENDPOINT PPM_PUB_BIND=$PPM_PAYMENT_EVENTS \
    PPM_METRICS_BIND=${PPM_PAYMENT_METRICS:-127.0.0.1:9121} start payment "$bin/ppm-payment"
PPM_RPC_BIND=$PPM_METERING_ENDPOINT PPM_PUB_BIND=$PPM_METERING_EVENTS \
    PPM_METRICS_BIND=${PPM_METERING_METRICS:-127.0.0.1:9131} start metering "$bin/ppm-metering"
PPM_HTTP_PORT=$gateway_port PPM_METRICS_BIND=${PPM_GATEWAY_METRICS:-127.0.0.1:9141} \
    start gateway "$bin/ppm-gateway"
wait_tcp "$(port_of "$PPM_RATE_ENDPOINT")" rate
wait_tcp "$(port_of "$PPM_PAYMENT_ENDPOINT")" payment
wait_tcp "$(port_of "$PPM_METERING_ENDPOINT")" metering
wait_tcp "$gateway_port" gateway
gateway_url=http://127.0.0.1:$gateway_port

# --- the demo tenant (once; kept in run/demo.env) --------------------------------
ppmctl() {
    local key
    key=$(own_key ppmctl)
    if [ -n "$key" ]; then PPM_CURVE_SECRET_KEY=$key "$bin/ppmctl" "$@"; else "$bin/ppmctl" "$@"; fi
}
if [ ! -f "$run/demo.env" ]; then
    say "creating the demo tenant"
    created=$(ppmctl tenant create "Demo platform" --plan pro --json) ||
        die "ppmctl tenant create failed: $created"
    tenant=$(echo "$created" | jq -r '.tenant_id // .tenant.tenant_id')
    admin_key=$(echo "$created" | jq -r '.admin_key')
    [ -n "$tenant" ] && [ "$tenant" != null ] && [ -n "$admin_key" ] || die "unexpected ppmctl output: $created"
    suffix=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
    ppmctl settings set --tenant "$tenant" \
        enabled=true enable_for=both rate_scope=individual currency=USD \
        default_call_per_minute=300 default_chat_per_minute=150 \
        preset_minutes=10,30,45 terms_url=https://example.com/terms \
        stripe_mode=test stripe_secret_key="sk_test_demo$suffix" \
        stripe_publishable_key="pk_test_demo$suffix" stripe_webhook_secret="whsec_demo$suffix" \
        >/dev/null || die "ppmctl settings set failed"
    ppmctl rates set --tenant "$tenant" --user u_coach --call 250 --chat 100 >/dev/null ||
        die "ppmctl rates set failed"
    payee_token=$(ppmctl user-token --tenant "$tenant" --user u_coach --roles coach --ttl 2592000)
    payer_token=$(ppmctl user-token --tenant "$tenant" --user u_alice --ttl 2592000)
    umask 077
    cat >"$run/demo.env" <<ENV
# Written by make run (deploy/run.sh) for the demo tenant; source it.
PPM_GATEWAY_URL=$gateway_url
PPM_ADMIN_KEY=$admin_key
PPM_DEMO_TENANT=$tenant
PPM_DEMO_PAYEE_ID=u_coach
PPM_DEMO_PAYEE_TOKEN=$payee_token
PPM_DEMO_PAYER_ID=u_alice
PPM_DEMO_PAYER_TOKEN=$payer_token
PPM_DEMO_STRIPE_KEY=sk_test_demo$suffix
PPM_DEMO_WEBHOOK_SECRET=whsec_demo$suffix
ENV
fi
# shellcheck disable=SC1091
. "$run/demo.env"
# The emulator keeps no state between runs: tell it, every time, where the
# demo tenant's webhooks go and with which signing secret.
if [ -x "$bin/stripe-emulator" ] && [ -n "${PPM_DEMO_STRIPE_KEY:-}" ]; then
    curl -fs -X POST "http://127.0.0.1:$emu_port/_emulator/webhook_endpoints" \
        -H 'Content-Type: application/json' \
        -d "{\"api_key\":\"$PPM_DEMO_STRIPE_KEY\",\"url\":\"$gateway_url/v1/stripe/webhook/$PPM_DEMO_TENANT\",\"secret\":\"$PPM_DEMO_WEBHOOK_SECRET\"}" \
        >/dev/null || say "could not register the demo webhook endpoint with the emulator"
fi

cat <<TXT

ppm is running on loopback (logs in run/logs/, data in run/):

  admin panel   $gateway_url/admin.html#key=$PPM_ADMIN_KEY
  widget demo   $gateway_url/widget.html#token=$PPM_DEMO_PAYER_TOKEN&payee=$PPM_DEMO_PAYEE_ID
  operations    $gateway_url/ops.html#key=$PPM_ADMIN_KEY

  demo tenant   $PPM_DEMO_TENANT      admin key: $PPM_ADMIN_KEY
  scripts       source run/demo.env

Press Ctrl-C to stop.
TXT

# Run until Ctrl-C or until a service dies.
while :; do
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            say "${names[$i]} exited (see run/logs/${names[$i]}.log)"
            exit 1
        fi
    done
    sleep 1
done
