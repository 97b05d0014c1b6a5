#!/usr/bin/env bash
# The whole local stack, as `make run` starts it (deploy/run.sh with a
# temporary run dir and free ports), checked from the outside:
#   1. a session is created, paid (Stripe emulator) and ended through the
#      gateway with curl and the demo tokens;
#   2. every service's /metrics passes `promtool check metrics`, /healthz
#      and /readyz answer 200;
#   3. tests/observability/run.sh with PPM_METRICS_URLS: every metric the
#      dashboard and the alert rules use is in the real output;
#   4. a real Prometheus scrapes the five services (jobs ppm-<service>) and
#      its HTTP API returns the paid payment, the ended session and up == 1;
#   5. trace ids: the gateway returns the X-Request-Id it was given, and
#      `ppmctl trace` finds that request in the gateway's, payment's and
#      metering's logs;
#   6. the same stack with CURVE on (keys from `ppmctl curve-keygen`, one
#      pair per process): a paid session works end to end, and a client
#      with a key the servers were not given gets no answer and is counted
#      in ppm_curve_auth_failures_total.
# Prints "N passed, N failed".
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${PPM_BIN_DIR:-$root/build/bin}
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # check "what" command...
    local what=$1
    shift
    if "$@" >"$tmp/check.out" 2>&1; then
        ok "$what"
    else
        fail "$what"
        sed 's/^/    | /' "$tmp/check.out" | tail -15
    fi
}
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

tmp=$(mktemp -d "${PPM_TEST_TMP:-/tmp}/ppm-stack.XXXXXX")
chmod 755 "$tmp" # PostgreSQL runs as "postgres" under root and must reach its dir
prom_pid=
cleanup() {
    [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null
    stop_stack
    rm -rf "$tmp"
}
trap cleanup EXIT

for b in ppm-config ppm-rate ppm-payment ppm-metering ppm-gateway ppmctl stripe-emulator; do
    [ -x "$bin/$b" ] || { fail "$bin/$b is built"; finish; }
done
for t in promtool prometheus jq curl python3 redis-server; do
    command -v "$t" >/dev/null || { fail "$t is installed"; finish; }
done

# shellcheck source=tests/lib/stack.sh
. "$root/tests/lib/stack.sh"
free_ports() { stack_free_ports "$@"; }

services=(config rate payment metering gateway)

# start_stack NAME: deploy/run.sh in $tmp/NAME on free ports (tests/lib/
# stack.sh); exports the demo.env variables and the services' endpoints.
# Extra environment (CURVE) is taken from the caller.
start_stack() {
    local name=$1
    if ! stack_start "$tmp/$name"; then
        fail "$name: the stack starts (deploy/run.sh)"
        stack_tail
        return 1
    fi
    run_dir=$stack_dir
    ok "$name: the stack starts (deploy/run.sh, demo tenant created)"
    return 0
}
stop_stack() { stack_stop; }

new_trace() { head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# http METHOD PATH TOKEN TRACE [BODY] -> body in $tmp/body, headers in
# $tmp/headers, status in $status
http() {
    local args=(-sS -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' -X "$1"
        -H "Authorization: Bearer $3" -H "X-Request-Id: $4")
    [ $# -ge 5 ] && args+=(-H 'Content-Type: application/json' --data "$5")
    status=$(curl "${args[@]}" "$PPM_GATEWAY_URL$2") || status=000
}

# pay_session NAME: create, checkout, confirm with the test Visa, wait until
# funded, end — every request with the same X-Request-Id (the client's
# correlation id for the paid session), kept in flow_trace.
pay_session() {
    local name=$1 sid payment_id state
    flow_trace=$(new_trace)
    http POST /v1/sessions "$PPM_DEMO_PAYER_TOKEN" "$flow_trace" '{"payee":"u_coach","kind":"chat"}'
    sid=$(jq -r '.session_id // empty' "$tmp/body" 2>/dev/null)
    [ "$status" = 201 ] && [ -n "$sid" ] || { fail "$name: POST /v1/sessions ($status: $(head -c 300 "$tmp/body"))"; return 1; }
    ok "$name: session $sid created"
    http POST "/v1/sessions/$sid/checkout" "$PPM_DEMO_PAYER_TOKEN" "$flow_trace" \
        '{"minutes":10,"accept_terms":true}'
    payment_id=$(jq -r '.payment_id // empty' "$tmp/body" 2>/dev/null)
    [ "$status" = 201 ] && [ -n "$payment_id" ] || { fail "$name: checkout ($status: $(head -c 300 "$tmp/body"))"; return 1; }
    ok "$name: checkout (payment $payment_id)"
    if tr -d '\r' <"$tmp/headers" | grep -qix "x-request-id: $flow_trace"; then
        ok "$name: the gateway returns the X-Request-Id it was given"
    else
        fail "$name: the gateway returns the X-Request-Id it was given"
        sed 's/^/    | /' "$tmp/headers"
    fi
    http POST "/v1/sessions/$sid/confirm" "$PPM_DEMO_PAYER_TOKEN" "$flow_trace" \
        "{\"payment_method\":\"pm_card_visa\",\"payment_id\":\"$payment_id\"}"
    [ "$status" = 200 ] || { fail "$name: confirm ($status: $(head -c 300 "$tmp/body"))"; return 1; }
    ok "$name: payment confirmed"
    state=
    for _ in $(seq 100); do
        http GET "/v1/sessions/$sid" "$PPM_DEMO_PAYER_TOKEN" "$(new_trace)"
        state=$(jq -r '.state // empty' "$tmp/body" 2>/dev/null)
        [ "$state" = active ] && break
        sleep 0.1
    done
    [ "$state" = active ] || { fail "$name: the session is funded and active (state $state)"; return 1; }
    ok "$name: the session is funded and active"
    http POST "/v1/sessions/$sid/end" "$PPM_DEMO_PAYER_TOKEN" "$flow_trace" '{}'
    state=$(jq -r '.state // empty' "$tmp/body" 2>/dev/null)
    [ "$status" = 200 ] && [ "$state" = ended ] || { fail "$name: end ($status: $(head -c 300 "$tmp/body"))"; return 1; }
    ok "$name: session ended"
    return 0
}

metrics_urls() {
    local urls=() s
    for s in "${services[@]}"; do urls+=("http://127.0.0.1:${stack_metrics_port[$s]}/metrics"); done
    local IFS=,
    echo "${urls[*]}"
}

# prom_query EXPR -> the first result's value, or empty
prom_query() {
    curl -fsS "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
        jq -r '.data.result[0].value[1] // empty' 2>/dev/null
}
prom_expect() { # what EXPR: waits until EXPR (a comparison) returns a series
    local what=$1 expr=$2 value=
    for _ in $(seq 100); do
        value=$(prom_query "$expr")
        [ -n "$value" ] && break
        sleep 0.2
    done
    if [ -n "$value" ]; then ok "prometheus: $what ($expr = $value)"; else fail "prometheus: $what ($expr has no series)"; fi
}

# ---- plain stack ----------------------------------------------------------
if start_stack plain; then
    pay_session plain
    for s in "${services[@]}"; do
        url=http://127.0.0.1:${stack_metrics_port[$s]}
        check "plain: $s /healthz is 200" curl -fsS "$url/healthz"
        check "plain: $s /readyz is 200" curl -fsS "$url/readyz"
        check "plain: $s /metrics passes promtool check metrics" \
            bash -c "curl -fsS '$url/metrics' | promtool check metrics"
    done
    # What each service must expose from the start (docs/METRICS.md).
    declare -A must=(
        [config]="ppm_config_changes_total ppm_config_admin_auth_failures_total process_open_fds"
        [rate]="ppm_rate_quotes_total ppm_rate_cache_tenants ppm_rate_cache_age_seconds ppm_rate_cache_reloads_total"
        [payment]="ppm_stripe_requests_total ppm_payments_total ppm_payments_pending ppm_outbox_pending ppm_webhooks_received_total"
        [metering]="ppm_sessions_active ppm_sessions_started_total ppm_sessions_ended_total ppm_tick_duration_seconds ppm_tick_lateness_seconds ppm_bucket_leases_held ppm_usage_reports_pending"
        [gateway]="ppm_http_requests_total ppm_http_request_duration_seconds ppm_sse_clients process_resident_memory_bytes")
    for s in "${services[@]}"; do
        out=$(curl -fsS "http://127.0.0.1:${stack_metrics_port[$s]}/metrics")
        for m in ${must[$s]}; do
            if grep -qE "^$m(_bucket|_count|_sum)?(\{| )" <<<"$out"; then ok "plain: $s exposes $m"; else fail "plain: $s exposes $m"; fi
        done
    done

    # 3. every metric of the dashboard and the rules in the real output.
    PPM_METRICS_URLS=$(metrics_urls) bash "$root/tests/observability/run.sh" >"$tmp/obs.out" 2>&1
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tmp/obs.out" | tail -n 1)
    fails=$(grep '^FAIL' "$tmp/obs.out")
    if [ -n "$summary" ] && [ -z "$fails" ]; then
        ok "tests/observability/run.sh against the running services ($summary)"
    else
        fail "tests/observability/run.sh against the running services (${summary:-no summary})"
        sed 's/^/    | /' <<<"$fails"
    fi

    # 4. a real Prometheus
    read -r prom_port < <(free_ports 1)
    {
        echo "global: {scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}"
        echo "scrape_configs:"
        for s in "${services[@]}"; do
            echo "  - job_name: ppm-$s"
            echo "    static_configs: [{targets: ['127.0.0.1:${stack_metrics_port[$s]}']}]"
        done
    } >"$tmp/prometheus.yml"
    check "promtool check config (generated scrape config)" promtool check config "$tmp/prometheus.yml"
    prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prom" \
        --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
    prom_pid=$!
    prom_expect "all five services up" 'count(up{job=~"ppm-.*"} == 1) == 5'
    for s in "${services[@]}"; do prom_expect "ppm-$s is up" "up{job=\"ppm-$s\"} == 1"; done
    prom_expect "a payment succeeded" 'sum(ppm_payments_total{job="ppm-payment",state="succeeded"}) >= 1'
    prom_expect "a session became active" 'sum(ppm_sessions_started_total{job="ppm-metering"}) >= 1'
    prom_expect "a session ended" 'sum(ppm_sessions_ended_total{job="ppm-metering"}) >= 1'
    prom_expect "money was charged or held" 'count(ppm_payments_total{job="ppm-payment"}) >= 1'
    prom_expect "the gateway counted the HTTP requests" \
        'sum(ppm_http_requests_total{job="ppm-gateway",route="/v1/sessions/{id}/checkout"}) >= 1'
    kill "$prom_pid" 2>/dev/null
    wait "$prom_pid" 2>/dev/null
    prom_pid=

    # 5. the paid session's trace id across the services' logs
    if [ -n "${flow_trace:-}" ]; then
        "$bin/ppmctl" trace "$flow_trace" --logs "$run_dir/logs" >"$tmp/trace.out" 2>&1
        sed 's/^/    > /' "$tmp/trace.out"
        for s in gateway payment metering; do
            if awk '{print $2}' "$tmp/trace.out" | grep -qx "$s"; then
                ok "ppmctl trace: the paid session's trace id is in $s's log"
            else
                fail "ppmctl trace: the paid session's trace id is in $s's log"
                sed 's/^/    | /' "$tmp/trace.out" | head -20
            fi
        done
        if sort -c -k1,1 "$tmp/trace.out" 2>/dev/null; then ok "ppmctl trace: lines in time order"; else fail "ppmctl trace: lines in time order"; fi
    fi
    fresh=$(curl -fsS -D - -o /dev/null "$PPM_GATEWAY_URL/healthz" | tr -d '\r' |
        awk -F': ' 'tolower($1) == "x-trace-id" {print $2}')
    if [[ $fresh =~ ^[0-9a-f]{32}$ ]]; then ok "a request without X-Request-Id gets a fresh trace id ($fresh)"; else fail "a request without X-Request-Id gets a fresh trace id (${fresh:-none})"; fi
    check "ppmctl trace: an unknown id exits 1" bash -c "! '$bin/ppmctl' trace 0123456789abcdef0123456789abcdef --logs '$run_dir/logs'"
    stop_stack
fi

# ---- CURVE on -----------------------------------------------------------------
keypair() { "$bin/ppmctl" --json curve-keygen; }
server=$(keypair) || { fail "ppmctl curve-keygen"; finish; }
[ "$(jq -r '.public | length' <<<"$server")" = 40 ] && [ "$(jq -r '.secret | length' <<<"$server")" = 40 ] &&
    ok "ppmctl curve-keygen prints a Z85 pair" || fail "ppmctl curve-keygen prints a Z85 pair ($server)"
client_keys=()
for p in config rate payment metering gateway ppmctl; do
    pair=$(keypair)
    export "PPM_CURVE_SECRET_KEY_${p^^}=$(jq -r .secret <<<"$pair")"
    client_keys+=("$(jq -r .public <<<"$pair")")
done
export PPM_CURVE=on
export PPM_CURVE_SERVER_SECRET_KEY=$(jq -r .secret <<<"$server")
export PPM_CURVE_SERVER_KEY=$(jq -r .public <<<"$server")
export PPM_CURVE_CLIENT_KEYS=$(IFS=,; echo "${client_keys[*]}")
if start_stack curve; then
    pay_session curve
    # a client whose key the servers were not given: no answer, and counted
    stranger=$(keypair)
    if PPM_CURVE_SECRET_KEY=$(jq -r .secret <<<"$stranger") PPM_CURVE_SERVER_SECRET_KEY= \
        timeout 20 "$bin/ppmctl" --timeout 1500 tenant list \
        >"$tmp/stranger.out" 2>&1; then
        fail "curve: ppmctl with a key not in PPM_CURVE_CLIENT_KEYS is refused"
        sed 's/^/    | /' "$tmp/stranger.out"
    else
        ok "curve: ppmctl with a key not in PPM_CURVE_CLIENT_KEYS is refused"
    fi
    if PPM_CURVE_SECRET_KEY=$PPM_CURVE_SECRET_KEY_PPMCTL \
        timeout 20 "$bin/ppmctl" --timeout 3000 tenant list >"$tmp/known.out" 2>&1; then
        ok "curve: ppmctl with its listed key is answered"
    else
        fail "curve: ppmctl with its listed key is answered"
        sed 's/^/    | /' "$tmp/known.out"
    fi
    failures=0
    for _ in $(seq 30); do
        failures=$(curl -fsS "http://127.0.0.1:${stack_metrics_port[config]}/metrics" |
            awk '$1 == "ppm_curve_auth_failures_total" {print $2}')
        [ "${failures:-0}" != 0 ] && break
        sleep 0.1
    done
    if [ -n "$failures" ] && [ "$failures" != 0 ]; then
        ok "curve: the refusal is counted (config ppm_curve_auth_failures_total $failures)"
    else
        fail "curve: the refusal is counted (config ppm_curve_auth_failures_total ${failures:-absent})"
    fi
    stop_stack
fi
finish
