#!/usr/bin/env bash
# Gateway benchmark (SPEC §7): wrk against GET /v1/quote (user token checked,
# query validated, answered as JSON) and, as the baseline measured in the
# same run on the same machine, against nginx serving a static file of the
# same size. Prints both and the ratio (the promise: ≥ 30 %), for a reader
# and as result lines (tests/lib/bench.sh) for docs/BENCHMARKS.md.
#
# The gateway runs in front of the real rate and config services: the whole
# stack as `make run` starts it (deploy/run.sh through tests/lib/stack.sh:
# Redis, PostgreSQL, the emulator, the five services, the demo tenant) in a
# temporary run dir on free ports; the payer's token is minted with ppmctl.
# It is run twice, each time on a fresh stack: with the default quote cache
# (answers reused for PPM_GATEWAY_QUOTE_CACHE, dropped on config.changed)
# and with the cache off, so every request makes a real rate.Quote RPC to
# the rate service (which answers from its own per-tenant cache of config).
#
#   tests/bench/gateway_quote.sh [BIN_DIR]     (PPM_BENCH_SECONDS, default 5)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export PPM_BIN_DIR=${1:-${PPM_BIN_DIR:-$root/build/bin}}
bin=$PPM_BIN_DIR
secs=${PPM_BENCH_SECONDS:-5}
conns=${PPM_BENCH_CONNECTIONS:-64}
for tool in wrk nginx python3 redis-server jq; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "gateway bench: $tool missing (make deps)"; exit 1; }
done
for b in ppm-config ppm-rate ppm-payment ppm-metering ppm-gateway ppmctl stripe-emulator; do
    [ -x "$bin/$b" ] || { echo "gateway bench: $bin/$b is missing (make build)"; exit 1; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

# shellcheck source=tests/lib/stack.sh
. "$root/tests/lib/stack.sh"
# shellcheck source=tests/lib/bench.sh
. "$root/tests/lib/bench.sh"
tmp=$(mktemp -d "${PPM_TEST_TMP:-/tmp}/ppm-bench-gw.XXXXXX")
chmod 755 "$tmp" # PostgreSQL runs as "postgres" under root and must reach its dir
cleanup() {
    stack_stop
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    sleep 0.2
    rm -rf "$tmp"
}
trap cleanup EXIT

# a request per line in each service's log would be measured too
export PPM_LOG_LEVEL=error

start_gateway() { # cache (e.g. 1000ms, 0) → a fresh stack; sets gw_port, token
    stack_stop
    if ! PPM_GATEWAY_QUOTE_CACHE=$1 stack_start "$tmp/stack-$1"; then
        echo "gateway bench: the stack did not start"
        stack_tail
        exit 1
    fi
    gw_port=$stack_gateway_port
    token=$("$bin/ppmctl" user-token --tenant "$PPM_DEMO_TENANT" --user u_payer) ||
        { echo "gateway bench: ppmctl user-token failed: $token"; exit 1; }
}
free_port() { stack_free_ports 1; }
rps() { # url [header] → requests/s
    local out
    if [ -n "${2:-}" ]; then
        out=$(wrk -t2 -c"$conns" -d"${secs}s" -H "$2" "$1")
    else
        out=$(wrk -t2 -c"$conns" -d"${secs}s" "$1")
    fi
    echo "$out" >>"$tmp/wrk.log"
    if echo "$out" | grep -q 'Non-2xx'; then echo "gateway bench: non-2xx answers" >&2; echo "$out" >&2; exit 1; fi
    echo "$out" | awk '/Requests\/sec/ {printf "%d", $2}'
}

start_gateway 1000ms
path="/v1/quote?payee=$PPM_DEMO_PAYEE_ID&kind=chat"
auth="Authorization: Bearer $token"
size=$(curl -fs -H "$auth" "http://127.0.0.1:$gw_port$path" | wc -c)
[ "$size" -gt 0 ] || { echo "gateway bench: no quote"; exit 1; }

# nginx: the same number of bytes from a static file
mkdir -p "$tmp/www" "$tmp/nginx"
head -c "$size" /dev/zero | tr '\0' 'x' >"$tmp/www/quote.json"
ng_port=$(free_port)
cat >"$tmp/nginx.conf" <<CONF
worker_processes 2;
pid $tmp/nginx.pid;
error_log $tmp/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx; proxy_temp_path $tmp/nginx; fastcgi_temp_path $tmp/nginx;
    uwsgi_temp_path $tmp/nginx; scgi_temp_path $tmp/nginx;
    default_type application/json;
    server { listen 127.0.0.1:$ng_port; root $tmp/www; location / { } }
}
CONF
"$nginx_bin" -c "$tmp/nginx.conf" -p "$tmp" 2>>"$tmp/nginx/error.log" || { cat "$tmp/nginx/error.log"; exit 1; }
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$ng_port/quote.json" >/dev/null && break; sleep 0.05; done

ng=$(rps "http://127.0.0.1:$ng_port/quote.json")
gw=$(rps "http://127.0.0.1:$gw_port$path" "$auth")
start_gateway 0
auth="Authorization: Bearer $token"
curl -fs -H "$auth" "http://127.0.0.1:$gw_port$path" >/dev/null || { echo "gateway bench: no quote (cache off)"; exit 1; }
gw_nocache=$(rps "http://127.0.0.1:$gw_port$path" "$auth")

ratio=$(awk -v a="$gw" -v b="$ng" 'BEGIN { printf "%.1f", 100 * a / b }')
ratio_nc=$(awk -v a="$gw_nocache" -v b="$ng" 'BEGIN { printf "%.1f", 100 * a / b }')
echo "gateway GET /v1/quote ($size bytes, $conns connections, ${secs}s each)"
printf '  nginx static file             %8d req/s  (baseline)\n' "$ng"
printf '  gateway, quote cache 1 s      %8d req/s  %5s %% of nginx (promise: >= 30 %%)\n' "$gw" "$ratio"
printf '  gateway, every call to rate   %8d req/s  %5s %% of nginx\n' "$gw_nocache" "$ratio_nc"
awk -v r="$ratio" 'BEGIN { exit !(r >= 30) }' && echo "gateway bench: PASS" || echo "gateway bench: BELOW the 30 % aim"

frac() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
bench_result gateway.quote_rps "GET /v1/quote ($size B), quote cache 1 s (the default)" \
    "$gw req/s" "$ng req/s" "$(frac "$gw" "$ng")" ">= 0.30 x nginx static file" \
    "$(bench_met "$gw >= 0.3 * $ng")"
bench_result gateway.quote_rps_nocache "GET /v1/quote, cache off: a rate.Quote RPC per request" \
    "$gw_nocache req/s" "$ng req/s" "$(frac "$gw_nocache" "$ng")" "" -
[ "$(bench_met "$gw >= 0.3 * $ng")" = yes ] ||
    bench_gap gateway.quote_rps "with every quote from rate (no cache) the gateway served $gw_nocache req/s"
bench_note gateway "gateway_quote.sh: wrk (2 threads, $conns connections, ${secs} s) against \
GET /v1/quote on the whole stack as make run starts it (deploy/run.sh through tests/lib/stack.sh, \
free ports, a payer's token from ppmctl), then against nginx (2 workers, access log off) serving \
a static file of the same $size bytes on the same machine. Run twice on a fresh stack: with the \
default quote cache, and with the cache off so that every request is a rate.Quote RPC."
