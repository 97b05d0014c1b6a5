#!/usr/bin/env bash
# Gateway benchmark (SPEC §7): wrk against GET /v1/quote (user token checked,
# query validated, answered as JSON) and, as the baseline measured in the
# same run on the same machine, against nginx serving a static file of the
# same size. Prints both and the ratio (the promise: ≥ 30 %).
#
# The gateway talks to ppm-standin for rate.Quote (the bench measures the
# gateway, not the rate service: tests/bench has the rate service's own).
# It is run twice: with the default quote cache (answers reused for
# PPM_GATEWAY_QUOTE_CACHE, dropped on config.changed) and with the cache
# off, so every request makes a real rate.Quote RPC.
#
#   tests/bench/gateway_quote.sh [BIN_DIR]     (PPM_BENCH_SECONDS, default 5)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-${PPM_BIN_DIR:-$root/build/bin}}
secs=${PPM_BENCH_SECONDS:-5}
conns=${PPM_BENCH_CONNECTIONS:-64}
for tool in wrk nginx python3; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "gateway bench: $tool missing (make deps)"; exit 1; }
done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
tmp=$(mktemp -d /tmp/ppm-bench-gw.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null || true
    sleep 0.2
    rm -rf "$tmp"
}
trap cleanup EXIT

export PPM_LOG_LEVEL=error
export PPM_CONFIG_ENDPOINT=tcp://127.0.0.1:$(free_port)
export PPM_RATE_ENDPOINT=tcp://127.0.0.1:$(free_port)
export PPM_PAYMENT_ENDPOINT=tcp://127.0.0.1:$(free_port)
export PPM_METERING_ENDPOINT=tcp://127.0.0.1:$(free_port)
export PPM_STANDIN_EVENTS=tcp://127.0.0.1:$(free_port)
export PPM_CONFIG_EVENTS=$PPM_STANDIN_EVENTS PPM_PAYMENT_EVENTS=$PPM_STANDIN_EVENTS PPM_METERING_EVENTS=$PPM_STANDIN_EVENTS
export PPM_STANDIN_TENANT=t_bench
export PPM_STANDIN_USER_SECRET=bench-secret-0123456789abcdef
export PPM_WEB_ROOT=$root/services/gateway/web
export PPM_METRICS_BIND=127.0.0.1:0
"$bin/ppm-standin" >"$tmp/standin.log" 2>&1 &
pids+=($!)

token=$(python3 - <<'PY'
import base64, hashlib, hmac, json, time
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b'=').decode()
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(',', ':')).encode())
c = b(json.dumps({"tid": "t_bench", "sub": "u_payer", "roles": [], "exp": int(time.time()) + 3600}, separators=(',', ':')).encode())
s = b(hmac.new(b"bench-secret-0123456789abcdef", (h + "." + c).encode(), hashlib.sha256).digest())
print(h + "." + c + "." + s)
PY
)

start_gateway() { # cache_ms → sets gw_pid, gw_port
    gw_port=$(free_port)
    PPM_HTTP_PORT=$gw_port PPM_GATEWAY_QUOTE_CACHE=$1 "$bin/ppm-gateway" >"$tmp/gateway-$1.log" 2>&1 &
    gw_pid=$!
    pids+=($gw_pid)
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$gw_port/healthz" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "gateway bench: the gateway did not start"; cat "$tmp/gateway-$1.log"; exit 1
}
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

path="/v1/quote?payee=u_coach&kind=chat"
auth="Authorization: Bearer $token"
start_gateway 1000
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
kill "$gw_pid"
wait "$gw_pid" 2>/dev/null || true
start_gateway 0
gw_nocache=$(rps "http://127.0.0.1:$gw_port$path" "$auth")

ratio=$(awk -v a="$gw" -v b="$ng" 'BEGIN { printf "%.1f", 100 * a / b }')
ratio_nc=$(awk -v a="$gw_nocache" -v b="$ng" 'BEGIN { printf "%.1f", 100 * a / b }')
echo "gateway GET /v1/quote ($size bytes, $conns connections, ${secs}s each)"
printf '  nginx static file             %8d req/s  (baseline)\n' "$ng"
printf '  gateway, quote cache 1 s      %8d req/s  %5s %% of nginx (promise: >= 30 %%)\n' "$gw" "$ratio"
printf '  gateway, every call to rate   %8d req/s  %5s %% of nginx\n' "$gw_nocache" "$ratio_nc"
awk -v r="$ratio" 'BEGIN { exit !(r >= 30) }' && echo "gateway bench: PASS" || echo "gateway bench: BELOW the 30 % aim"
