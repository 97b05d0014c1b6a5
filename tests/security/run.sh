#!/usr/bin/env bash
# Security checks of issue 8 against the real stack (deploy/run.sh on free
# ports: the real gateway, config, rate, payment and metering, Redis,
# PostgreSQL and the Stripe emulator), driven from the outside with curl:
#
#   1. admin endpoints: each one without a key and with a revoked key; all
#      of them with a wrong secret, a truncated key, another scheme, a user
#      token…: 401;
#   2. user tokens: forged, tampered, expired, without exp, alg none / HS512
#      / RS256, another tenant's tid, an unknown tenant, too large: 401;
#   3. sessions: another payer, a payee of other sessions, the session's
#      own payee on payer-only routes: 403; another tenant's session: 404;
#   4. webhooks: wrong secret, old or future timestamp, another tenant's
#      secret, a body changed after signing, no or junk Stripe-Signature:
#      400; an unknown tenant: 404;
#   5. requests: bodies over the cap (413), deeply nested or malformed JSON
#      (400), no Content-Type: application/json (415), headers or URL too
#      large (431 / 414), too many headers (431), path parameters with
#      traversal or percent-encoded junk (%00, %2f, %ff…: 404), static files
#      outside the web root (/../, %2e%2e: 404), other methods (405);
#   every refusal: the status, SPEC §5's error body (JSON, exactly
#   {"error":{"code","message","fields":[{"field","message"}]}}), a 401
#   with WWW-Authenticate: Bearer; and after each group nothing changed:
#   every table of config, payment and metering and Redis's sessions are as
#   before (so no session, payment, settings version or audit entry);
#   6. another tenant's admin key sees and changes only its own tenant, on
#      every admin endpoint;
#   7. a full run: a paid session, Stripe keys and the user-token secret
#      rotated through the API (the old user tokens refused at once, one
#      signed with the returned secret accepted, the other tenant
#      untouched), a webhook accepted;
#   8. SQL-looking input in every text field (settings, path and query
#      parameters, bodies, token claims, headers): refused (400/401/404) or
#      kept literally, never a 5xx, never a delay (pg_sleep), no SQL syntax
#      error in PostgreSQL's log, every table still there;
#   9. no Stripe key, webhook secret, admin key, user-token secret, master
#      key or user token in any log file of the run dir, nor in plaintext
#      (or hex) in the PostgreSQL dump or in Redis's files.
#
# Requests are sent in batches (one curl with --next, one jq over the
# bodies): on a loaded 2-core machine a process costs tens of ms.
# Prints one "ok"/"FAIL" line per check and "N passed, N failed"; exits 1
# on any failure.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${PPM_BIN_DIR:-$root/build/bin}
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}

# shellcheck source=tests/lib/stack.sh
. "$root/tests/lib/stack.sh"
stack_bin=$bin

tmp=$(mktemp -d "${PPM_TEST_TMP:-/tmp}/ppm-security.XXXXXX")
chmod 755 "$tmp" # PostgreSQL runs as "postgres" under root and must reach its dir
cleanup() {
    stack_stop
    rm -rf "$tmp"
}
trap cleanup EXIT

for b in ppm-config ppm-rate ppm-payment ppm-metering ppm-gateway ppmctl stripe-emulator; do
    [ -x "$bin/$b" ] || { fail "$bin/$b is built"; finish; }
done
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
for t in jq curl openssl basenc python3 psql redis-cli "$pgbin/pg_dump"; do
    command -v "$t" >/dev/null || { fail "$t is installed"; finish; }
done
started=$EPOCHREALTIME
section() { echo "# $* ($(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s)"; }

# Reconciliation (payment's timer, 60 s by default) would be the only thing
# to change a table without a request: off for the run's length, so that
# "changed nothing" means what it says.
export PPM_PAYMENT_RECONCILE_EVERY=3600s
if stack_start "$tmp/security"; then
    ok "the stack starts (deploy/run.sh, demo tenant created)"
else
    fail "the stack starts (deploy/run.sh)"
    stack_tail
    finish
fi
run_dir=$stack_dir redis_port=$stack_redis_port pg_port=$stack_pg_port
G=$PPM_GATEWAY_URL

# ---- helpers ----------------------------------------------------------------

ppmctl() { "$bin/ppmctl" --timeout 5000 "$@"; }
psql_q() { psql -h 127.0.0.1 -p "$pg_port" -U ppm -d ppm -tAqX -c "$1"; }
rnd() { head -c "${1:-12}" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
b64url() { # stdin -> base64url without padding
    local out
    out=$(basenc --base64url -w0)
    printf '%s' "${out//=/}"
}
JSON=(-H 'Content-Type: application/json')

# call METHOD PATH [curl args…]: one request; status in $status, body in
# $tmp/body, headers in $tmp/headers.
call() {
    local method=$1 path=$2
    shift 2
    status=$(curl -sS --path-as-is -g --max-time 10 -o "$tmp/body" -D "$tmp/headers" \
        -w '%{http_code}' -X "$method" "$@" "$G$path" 2>"$tmp/curl.err") || status=000
}
header() { # NAME -> that header of the last call's answer
    tr -d '\r' <"$tmp/headers" | awk -v n="$(tr 'A-Z' 'a-z' <<<"$1")" \
        'index(tolower($0), n ":") == 1 { sub(/^[^:]*:[ \t]*/, ""); print; exit }'
}
body() { head -c 300 "$tmp/body"; }

# Batches. batch starts one; req WHAT WANT METHOD PATH [curl args…] adds a
# request that must be answered with a status matching WANT (an ERE; a
# matching 2xx is accepted as is, a matching 4xx must carry SPEC §5's error
# body and, for 401, WWW-Authenticate: Bearer); run_batch sends them all
# with one curl and checks every body with one jq, setting for request i:
# B_status[i], B_took[i] (s), B_code[i] (the error code, "-" when the body
# is not SPEC §5's error), B_ok[i] (1 or 0) and B_why[i]. Bodies stay in
# $B_dir/i.
B_dir=$tmp/batch
batch() {
    B_n=0
    B_args_show=()
    B_what=()
    B_want=()
    B_args=()
    rm -rf "$B_dir"
    mkdir -p "$B_dir"
}
req() {
    local what=$1 want=$2 method=$3 path=$4 i=$B_n
    shift 4
    B_what[i]=$what
    B_want[i]=$want
    [ "$i" -gt 0 ] && B_args+=(--next)
    B_args+=(-sS --path-as-is -g --max-time 10 -o "$B_dir/$i"
        -w "%{http_code} %{time_total} %header{www-authenticate}|%{content_type}\n"
        -X "$method" "$@" "$G$path")
    B_n=$((i + 1))
}
# The shape of SPEC §5's error body, as a jq filter.
ERROR_SHAPE='type == "object" and keys == ["error"] and (.error | type == "object"
    and keys == ["code", "fields", "message"]
    and (.code | type == "string" and test("^[A-Z_]+$"))
    and (.message | type == "string" and length > 0)
    and (.fields | type == "array" and all(.[]; type == "object" and keys == ["field", "message"]
        and (.field | type == "string") and (.message | type == "string"))))'
run_batch() {
    local i line rest www type st
    B_status=()
    B_took=()
    B_code=()
    B_ok=()
    B_why=()
    [ "$B_n" -gt 0 ] || return 0
    curl "${B_args[@]}" >"$B_dir/out" 2>"$B_dir/err"
    declare -a B_www B_type
    i=0
    while IFS= read -r line; do
        B_status[i]=${line%% *}
        rest=${line#* }
        B_took[i]=${rest%% *}
        rest=${rest#* }
        B_www[i]=${rest%%|*}
        B_type[i]=${rest#*|}
        i=$((i + 1))
    done <"$B_dir/out"
    for ((i = 0; i < B_n; i++)); do
        B_code[i]=-
        echo >>"$B_dir/$i" # jq -R reads lines: a body must not run into the next file's
    done
    # one line per file: "index<TAB>code" when the file is one line of
    # SPEC §5's error JSON
    while IFS=$'\t' read -r i rest; do
        B_code[i]=$rest
    done < <(jq -Rrn "[inputs | {f: (input_filename | sub(\".*/\"; \"\")),
        v: (try fromjson catch null)}] | group_by(.f)[]
        | select(length == 1 and (.[0].v | try ($ERROR_SHAPE) catch false))
        | [.[0].f, .[0].v.error.code] | @tsv" "$B_dir"/[0-9]* 2>/dev/null)
    for ((i = 0; i < B_n; i++)); do
        st=${B_status[i]:-000}
        B_status[i]=$st
        www=${B_www[i]:-}
        type=${B_type[i]:-}
        B_ok[i]=0
        if ! [[ $st =~ ^(${B_want[i]})$ ]]; then
            B_why[i]="status $st, want ${B_want[i]}"
        elif [[ $st == 2* ]]; then
            B_ok[i]=1
        elif [ "${B_code[i]}" = - ] || [[ $type != application/json* ]]; then
            B_why[i]="status $st without SPEC §5's error body"
        elif [ "$st" = 401 ] && [ "$www" != Bearer ]; then
            B_why[i]="401 without WWW-Authenticate: Bearer"
        else
            B_ok[i]=1
        fi
    done
}
show() { head -c "${2:-200}" "$B_dir/$1" | tr '\n' ' '; }
# check_each: runs the batch, one result line per request.
check_each() {
    local i
    run_batch
    for ((i = 0; i < B_n; i++)); do
        if [ "${B_ok[i]}" = 1 ]; then
            ok "${B_what[i]}: ${B_status[i]} ${B_code[i]/#-/}"
        else
            fail "${B_what[i]}: ${B_why[i]}"
            echo "    | $(show "$i" 300)"
        fi
    done
}
# check_grouped: runs the batch, one result line per run of requests with
# the same WHAT.
check_grouped() {
    local i j bad n
    run_batch
    i=0
    while [ "$i" -lt "$B_n" ]; do
        bad=()
        n=0
        for ((j = i; j < B_n; j++)); do
            [ "${B_what[j]}" = "${B_what[i]}" ] || break
            n=$((n + 1))
            [ "${B_ok[j]}" = 1 ] || bad+=("${B_args_show[j]:-#$j}: ${B_why[j]} $(show "$j" 150)")
        done
        if [ ${#bad[@]} -eq 0 ]; then
            ok "${B_what[i]} ($n requests, each ${B_want[i]})"
        else
            fail "${B_what[i]} (${#bad[@]} of $n)"
            printf '    | %s\n' "${bad[@]}" | head -20
        fi
        i=$j
    done
}
declare -a B_args_show
reqs() { # WHAT WANT FILE [curl args…]: one request per "METHOD PATH" line of FILE
    local what=$1 want=$2 file=$3 method path
    shift 3
    while read -r method path; do
        [ -n "$method" ] || continue
        B_args_show[B_n]="$method $path"
        req "$what" "$want" "$method" "$path" "$@"
    done <"$file"
}

# State of everything a request could change: every table of config, payment
# and metering (row count and a hash of the rows) and the sessions in Redis.
build_fingerprint() {
    local t
    tables=$(psql_q "SELECT table_schema || '.' || table_name FROM information_schema.tables
        WHERE table_schema IN ('config', 'payment', 'metering') AND table_type = 'BASE TABLE'
        ORDER BY 1")
    fp_query=
    for t in $tables; do
        fp_query+="${fp_query:+ UNION ALL }SELECT '$t', count(*), coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM $t x"
    done
}
fingerprint() {
    psql_q "$fp_query ORDER BY 1"
    redis-cli -p "$redis_port" --scan --pattern '{s:*}' | sort
}
# settle: waits until nothing moves (the outbox and Stripe calls of the
# set-up's checkout) and takes that state as the baseline.
settle() {
    local a b
    a=$(fingerprint)
    for _ in $(seq 50); do
        sleep 0.2
        b=$(fingerprint)
        [ "$a" = "$b" ] && break
        a=$b
    done
    baseline=$b
}
# unchanged WHAT: every table and Redis's sessions are as at the baseline.
unchanged() {
    local now
    now=$(fingerprint)
    if [ "$now" = "$baseline" ]; then
        ok "$1 changed nothing (every config, payment and metering table; Redis's sessions)"
    else
        fail "$1 changed something"
        diff <(echo "$baseline") <(echo "$now") | grep '^[<>]' | sed 's/^/    | /' | head -10
        baseline=$now
    fi
}

# Tokens. jwt HEADER_B64 CLAIMS_JSON SECRET [DIGEST]: a signed token.
sign() { printf '%s' "$1" | openssl dgst "-${3:-sha256}" -hmac "$2" -binary | b64url; }
jwt() {
    local p
    p=$(printf '%s' "$2" | b64url)
    printf '%s.%s.%s' "$1" "$p" "$(sign "$1.$p" "$3" "${4:-}")"
}
HS256=$(printf '%s' '{"alg":"HS256","typ":"JWT"}' | b64url)
claims() { # TID SUB [EXP_OFFSET_S] (ids without quotes)
    printf '{"tid":"%s","sub":"%s","roles":[],"exp":%d}' "$1" "$2" "$(($(date +%s) + ${3:-3600}))"
}

# The tenants' sealed secrets, opened with the master key (crypto_secretbox
# through libsodium, as config_crypto does).
open_secret() { # TENANT COLUMN -> plaintext
    psql_q "SELECT encode($2, 'hex') FROM config.settings WHERE tenant_id = '$1'" |
        python3 -c '
import ctypes, sys
lib = ctypes.CDLL("libsodium.so.23")
lib.sodium_init()
key = bytes.fromhex(open(sys.argv[1]).read().strip())
sealed = bytes.fromhex(sys.stdin.read().strip())
box = sealed[24:]
out = ctypes.create_string_buffer(len(box) - 16)
if lib.crypto_secretbox_open_easy(out, box, ctypes.c_ulonglong(len(box)), sealed[:24], key) != 0:
    sys.exit(1)
print(out.raw.split(b"\n", 2)[2].decode())' "$run_dir/master.key"
}

# webhook_sig SECRET TIMESTAMP BODY_FILE -> the v1 signature (hex)
webhook_sig() {
    { printf '%s.' "$2"; cat "$3"; } | openssl dgst -sha256 -hmac "$1" | awk '{print $NF}'
}

# ---- set-up: two tenants, their keys, users and sessions --------------------
section "set-up"

TA=$PPM_DEMO_TENANT
KA=$PPM_ADMIN_KEY
SK_A=$PPM_DEMO_STRIPE_KEY
WH_A=$PPM_DEMO_WEBHOOK_SECRET
RK_A=rk_test_a$(rnd)
PAYER_A=$PPM_DEMO_PAYER_TOKEN
PAYEE_A=$PPM_DEMO_PAYEE_TOKEN
setup_ok=1
step() { # WHAT command…: a set-up step; its output in $tmp/step.out
    local what=$1
    shift
    if ! "$@" >"$tmp/step.out" 2>&1; then
        fail "set-up: $what"
        sed 's/^/    | /' "$tmp/step.out" | head -10
        setup_ok=0
        return 1
    fi
}
step "tenant A's restricted key" ppmctl settings set --tenant "$TA" stripe_restricted_key="$RK_A"
step "tenant A: role rates for coach" ppmctl rates set --tenant "$TA" --role coach --call 500 --chat 200
step "tenant B" ppmctl --json tenant create "Security B" --plan pro
TB=$(jq -r '.tenant.tenant_id' "$tmp/step.out")
KB=$(jq -r '.admin_key' "$tmp/step.out")
SK_B=sk_test_b$(rnd)
RK_B=rk_test_b$(rnd)
WH_B=whsec_b$(rnd)
step "tenant B's settings" ppmctl settings set --tenant "$TB" enabled=true enable_for=both \
    rate_scope=default currency=EUR default_call_per_minute=200 default_chat_per_minute=120 \
    preset_minutes=10,30 terms_url=https://b.example.com/terms stripe_mode=test \
    stripe_secret_key="$SK_B" stripe_restricted_key="$RK_B" \
    stripe_publishable_key="pk_test_b$(rnd 4)" stripe_webhook_secret="$WH_B"
step "a second admin key of tenant A" ppmctl --json admin-key create --tenant "$TA" --label revoked
KA2=$(jq -r '.admin_key' "$tmp/step.out")
KA2_ID=$(jq -r '.key_id' "$tmp/step.out")
KA_ID=${KA#ppmak_}
KA_ID=${KA_ID%%_*}
mint() { ppmctl user-token --tenant "$1" --user "$2" ${3:+--roles "$3"}; }
MALLORY=$(mint "$TA" u_mallory)
COACH2=$(mint "$TA" u_coach2 coach)
PAYER_B=$(mint "$TB" u_bob)
PAYEE_B=$(mint "$TB" u_coachb)
UTS_A=$(open_secret "$TA" user_token_secret)
UTS_B=$(open_secret "$TB" user_token_secret)
MASTER=$(cat "$run_dir/master.key")
# the secret opened from the database is the one ppmctl's tokens are signed with
if [ -n "$UTS_A" ] && [ -n "$UTS_B" ] && [ "$UTS_A" != "$UTS_B" ] &&
    [ "$(sign "${PAYER_A%.*}" "$UTS_A")" = "${PAYER_A##*.}" ]; then
    ok "set-up: the user-token secret opened from config.settings signs ppmctl's tokens"
else
    fail "set-up: the user-token secret opened from config.settings signs ppmctl's tokens"
    setup_ok=0
fi

# the second key works (and the gateway caches it); section 1 revokes it
call GET /v1/admin/settings -H "Authorization: Bearer $KA2"
[ "$status" = 200 ] || { fail "set-up: the second admin key works before its revocation ($status)"; setup_ok=0; }

# sessions: alice → u_coach in A, with a checkout awaiting payment; bob →
# u_coachb in B
new_session() { # TOKEN PAYEE -> session id
    call POST /v1/sessions -H "Authorization: Bearer $1" "${JSON[@]}" \
        --data-binary "{\"payee\":\"$2\",\"kind\":\"chat\"}"
    [ "$status" = 201 ] && jq -r .session_id "$tmp/body"
}
SID_A=$(new_session "$PAYER_A" u_coach) || { fail "set-up: alice's session ($status $(body))"; setup_ok=0; }
SID_B=$(new_session "$PAYER_B" u_coachb) || { fail "set-up: bob's session ($status $(body))"; setup_ok=0; }
call POST "/v1/sessions/$SID_A/checkout" -H "Authorization: Bearer $PAYER_A" "${JSON[@]}" \
    --data-binary '{"minutes":10,"accept_terms":true}'
PAY_A=$(jq -r '.payment_id // empty' "$tmp/body" 2>/dev/null)
PI_A=$(jq -r '.client_secret // empty' "$tmp/body" 2>/dev/null)
PI_A=${PI_A%%_secret*}
[ "$status" = 201 ] && [ -n "$PAY_A" ] || { fail "set-up: alice's checkout ($status $(body))"; setup_ok=0; }
call GET /v1/admin/settings -H "Authorization: Bearer $KA"
SETTINGS_A=$(cat "$tmp/body")
[ "$setup_ok" = 1 ] || finish
ok "set-up: tenants $TA and $TB, keys, users, sessions $SID_A and $SID_B, payment $PAY_A"

A_ADMIN=(-H "Authorization: Bearer $KA")
B_ADMIN=(-H "Authorization: Bearer $KB")
ALICE=(-H "Authorization: Bearer $PAYER_A")
BOB=(-H "Authorization: Bearer $PAYER_B")
S=/v1/sessions/$SID_A
SB=/v1/sessions/$SID_B
build_fingerprint
settle

# ---- 1. admin endpoints without valid credentials ---------------------------
section "1. admin endpoints without valid credentials"

# "METHOD PATH BODY" (BODY - for none); the PUT bodies are valid, so that
# only the credentials can be why they are refused.
admin_routes=(
    "GET /v1/admin/settings -"
    "PUT /v1/admin/settings $(jq -c '.default_chat_per_minute = 150' <<<"$SETTINGS_A")"
    'GET /v1/admin/users/u_coach/rates -'
    'PUT /v1/admin/users/u_coach/rates {"call_per_minute":300,"chat_per_minute":150}'
    'GET /v1/admin/roles/coach/rates -'
    'PUT /v1/admin/roles/coach/rates {"call_per_minute":300,"chat_per_minute":150,"priority":2}'
    'GET /v1/admin/roles -'
    'GET /v1/admin/users -'
    'GET /v1/admin/sessions -'
    'GET /v1/admin/payments -'
    'GET /v1/admin/payments.csv -'
    'GET /v1/admin/earnings -'
    'GET /v1/admin/audit -'
    'GET /v1/admin/health -'
    'GET /v1/admin/user-token-secret -'
    'POST /v1/admin/user-token-secret {}'
)
admin_req() { # WHAT "METHOD PATH BODY" [curl args…]
    local what=$1 method path body
    read -r method path body <<<"$2"
    shift 2
    B_args_show[B_n]="$method $path"
    if [ "$body" = - ]; then
        req "$what" 401 "$method" "$path" "$@"
    else
        req "$what" 401 "$method" "$path" "$@" "${JSON[@]}" --data-binary "$body"
    fi
}

# the revocation reaches the gateway's key cache through config.changed;
# then the revocation is the new baseline
ppmctl admin-key revoke --tenant "$TA" "$KA2_ID" >"$tmp/step.out" 2>&1 ||
    fail "ppmctl admin-key revoke ($(cat "$tmp/step.out"))"
revoked_at=$EPOCHREALTIME
revoked_after=
for i in $(seq 40); do
    call GET /v1/admin/settings -H "Authorization: Bearer $KA2"
    [ "$status" = 401 ] && { revoked_after=$(awk -v a="$revoked_at" -v b="$EPOCHREALTIME" 'BEGIN { printf "%d", (b - a) * 1000 }'); break; }
    sleep 0.05
done
[ -n "$revoked_after" ] && ok "a revoked admin key is refused ${revoked_after} ms after ppmctl revoked it (try $i)" ||
    fail "a revoked admin key is refused within 2 s of its revocation (still $status)"
settle

batch
for r in "${admin_routes[@]}"; do admin_req "admin without a key: ${r%% [\{-]*}" "$r"; done
for r in "${admin_routes[@]}"; do admin_req "admin with a revoked key: ${r%% [\{-]*}" "$r" -H "Authorization: Bearer $KA2"; done
check_each
batch
variants=(
    "with tenant A's key id and a wrong secret|Authorization: Bearer ppmak_${KA_ID}_$(rnd 32)"
    "with a key one character short|Authorization: Bearer ${KA%?}"
    "with the key and one character more|Authorization: Bearer ${KA}0"
    "with an empty Bearer|Authorization: Bearer "
    "with Basic credentials|Authorization: Basic $(printf 'admin:%s' "$KA" | basenc --base64 -w0)"
    "with the key in another scheme|Authorization: Token $KA"
    "with the key without a scheme|Authorization: $KA"
    "with a payer's user token|Authorization: Bearer $PAYER_A"
    "with a 600-byte key|Authorization: Bearer ppmak_$(rnd 300)"
)
for v in "${variants[@]}"; do
    for r in "${admin_routes[@]}"; do admin_req "admin ${v%%|*}: every endpoint" "$r" -H "${v#*|}"; done
done
check_grouped
unchanged "admin requests without valid credentials"

# ---- 2. user tokens -----------------------------------------------------------
section "2. user tokens"

alice_claims=$(claims "$TA" u_alice)
alice_part=$(printf '%s' "$alice_claims" | b64url)
NONE=$(printf '%s' '{"alg":"none","typ":"JWT"}' | b64url)
bad_tokens=(
    "forged (signed with another secret)|$(jwt "$HS256" "$alice_claims" "$(rnd 32)")"
    "tampered (sub changed, signature kept)|${PAYER_A%%.*}.$(printf '%s' "$(claims "$TA" u_coach)" | b64url).${PAYER_A##*.}"
    "expired a minute ago|$(jwt "$HS256" "$(claims "$TA" u_alice -60)" "$UTS_A")"
    "expiring this second|$(jwt "$HS256" "$(claims "$TA" u_alice 0)" "$UTS_A")"
    "without exp|$(jwt "$HS256" "{\"tid\":\"$TA\",\"sub\":\"u_alice\"}" "$UTS_A")"
    "with exp as a string|$(jwt "$HS256" "{\"tid\":\"$TA\",\"sub\":\"u_alice\",\"exp\":\"9999999999\"}" "$UTS_A")"
    "alg none, no signature|$NONE.$alice_part."
    "alg none, the real signature|$NONE.$alice_part.$(sign "$HS256.$alice_part" "$UTS_A")"
    "alg None|$(printf '%s' '{"alg":"None","typ":"JWT"}' | b64url).$alice_part."
    "alg HS512 (signed with the real secret)|$(jwt "$(printf '%s' '{"alg":"HS512","typ":"JWT"}' | b64url)" "$alice_claims" "$UTS_A" sha512)"
    "alg RS256|$(printf '%s' '{"alg":"RS256","typ":"JWT"}' | b64url).$alice_part.$(rnd 64 | b64url)"
    "another tenant's tid (signed with A's secret)|$(jwt "$HS256" "$(claims "$TB" u_alice)" "$UTS_A")"
    "an unknown tenant's tid|$(jwt "$HS256" "$(claims t_0000000000000000dead u_alice)" "$UTS_A")"
    "a tid with a path|$(jwt "$HS256" "$(claims "../$TA" u_alice)" "$UTS_A")"
    "a sub with a path|$(jwt "$HS256" "$(claims "$TA" u_alice/../u_coach)" "$UTS_A")"
    "a sub of dots|$(jwt "$HS256" "$(claims "$TA" ..)" "$UTS_A")"
    "two parts|${PAYER_A%.*}"
    "four parts|$PAYER_A.x"
    "a signature with padding|$PAYER_A="
    "8 KB long|$(jwt "$HS256" "{\"tid\":\"$TA\",\"sub\":\"u_alice\",\"exp\":9999999999,\"pad\":\"$(rnd 4000)\"}" "$UTS_A")"
    "garbage|not.a.token"
)
batch
for entry in "${bad_tokens[@]}"; do
    req "user token ${entry%%|*}: GET a session" 401 GET "$S" -H "Authorization: Bearer ${entry#*|}"
    req "user token ${entry%%|*}: POST /v1/sessions" 401 POST /v1/sessions -H "Authorization: Bearer ${entry#*|}" \
        "${JSON[@]}" --data-binary '{"payee":"u_coach","kind":"chat"}'
done
req "no Authorization on a user route" 401 GET "/v1/quote?payee=u_coach&kind=chat"
req "an empty Bearer on a user route" 401 GET "$S" -H 'Authorization: Bearer '
req "an admin key on a user route" 401 GET "$S" "${A_ADMIN[@]}"
req "a user token as Basic credentials" 401 GET "$S" -u "u_alice:$PAYER_A"
req "control: alice's own token reads her session" 200 GET "$S" "${ALICE[@]}"
check_each
unchanged "bad user tokens"

# ---- 3. sessions that are not the caller's ------------------------------------
section "3. sessions that are not the caller's"

batch
for who in "another payer (u_mallory)|$MALLORY" "a payee of other sessions (u_coach2)|$COACH2"; do
    name=${who%%|*}
    H=(-H "Authorization: Bearer ${who#*|}")
    req "$name: GET $S" 403 GET "$S" "${H[@]}"
    req "$name: GET $S/events" 403 GET "$S/events" "${H[@]}"
    req "$name: POST $S/heartbeat" 403 POST "$S/heartbeat" "${H[@]}"
    req "$name: POST $S/end" 403 POST "$S/end" "${H[@]}"
    req "$name: POST $S/checkout" 403 POST "$S/checkout" "${H[@]}" "${JSON[@]}" \
        --data-binary '{"minutes":10,"accept_terms":true}'
    req "$name: POST $S/confirm (alice's payment)" 403 POST "$S/confirm" "${H[@]}" "${JSON[@]}" \
        --data-binary "{\"payment_method\":\"pm_card_visa\",\"payment_id\":\"$PAY_A\"}"
    req "$name: POST $S/confirm (no payment id)" '403|404' POST "$S/confirm" "${H[@]}" "${JSON[@]}" \
        --data-binary '{"payment_method":"pm_card_visa"}'
done
H=(-H "Authorization: Bearer $PAYEE_A")
req "the session's payee: POST $S/checkout (payer only)" 403 POST "$S/checkout" "${H[@]}" "${JSON[@]}" \
    --data-binary '{"minutes":10,"accept_terms":true}'
req "the session's payee: POST $S/confirm (payer only)" 403 POST "$S/confirm" "${H[@]}" "${JSON[@]}" \
    --data-binary "{\"payment_method\":\"pm_card_visa\",\"payment_id\":\"$PAY_A\"}"
req "tenant A's payer: GET tenant B's $SB" 404 GET "$SB" "${ALICE[@]}"
req "tenant A's payer: GET tenant B's $SB/events" 404 GET "$SB/events" "${ALICE[@]}"
req "tenant A's payer: POST tenant B's $SB/heartbeat" 404 POST "$SB/heartbeat" "${ALICE[@]}"
req "tenant A's payer: POST tenant B's $SB/end" 404 POST "$SB/end" "${ALICE[@]}"
req "tenant A's payer: POST tenant B's $SB/checkout" 404 POST "$SB/checkout" "${ALICE[@]}" "${JSON[@]}" \
    --data-binary '{"minutes":10,"accept_terms":true}'
req "tenant B's payer: GET tenant A's $S" 404 GET "$S" "${BOB[@]}"
req "tenant B's payer: POST tenant A's $S/confirm (A's payment)" 404 POST "$S/confirm" "${BOB[@]}" "${JSON[@]}" \
    --data-binary "{\"payment_method\":\"pm_card_visa\",\"payment_id\":\"$PAY_A\"}"
req "tenant B's payee: GET tenant A's $S" 404 GET "$S" -H "Authorization: Bearer $PAYEE_B"
check_each
call GET "$S" "${ALICE[@]}"
[ "$(jq -r .state "$tmp/body")" = awaiting_payment ] && ok "alice's session is still awaiting payment" ||
    fail "alice's session is still awaiting payment ($(body))"
unchanged "acting on sessions that are not the caller's"

# ---- 4. webhooks --------------------------------------------------------------
section "4. webhooks"

now=$(date +%s)
jq -cn --arg id "evt_sec_$(rnd 8)" --arg pi "$PI_A" --argjson t "$now" --arg tenant "$TA" \
    --arg pay "$PAY_A" --arg sid "$SID_A" \
    '{id: $id, object: "event", type: "payment_intent.succeeded", created: $t, livemode: false,
      api_version: "2024-06-20",
      data: {object: {id: $pi, object: "payment_intent", status: "succeeded", amount: 1000,
             currency: "usd", metadata: {tenant: $tenant, payment: $pay, session: $sid}}}}' \
    >"$tmp/event.json"
jq -c '.data.object.amount = 999999' "$tmp/event.json" >"$tmp/event2.json"
hook() { # WHAT WANT STRIPE_SIGNATURE [TENANT] [BODY_FILE]
    local sig=()
    [ -n "$3" ] && sig=(-H "Stripe-Signature: $3")
    req "webhook $1" "$2" POST "/v1/stripe/webhook/${4:-$TA}" "${JSON[@]}" "${sig[@]}" \
        --data-binary "@${5:-$tmp/event.json}"
}
old=$((now - 600))
future=$((now + 600))
good_sig=$(webhook_sig "$WH_A" "$now" "$tmp/event.json")
batch
hook "signed with a wrong secret" 400 "t=$now,v1=$(webhook_sig "whsec_$(rnd)" "$now" "$tmp/event.json")"
hook "signed with tenant B's secret" 400 "t=$now,v1=$(webhook_sig "$WH_B" "$now" "$tmp/event.json")"
hook "with a timestamp 10 minutes old" 400 "t=$old,v1=$(webhook_sig "$WH_A" "$old" "$tmp/event.json")"
hook "with a timestamp 10 minutes ahead" 400 "t=$future,v1=$(webhook_sig "$WH_A" "$future" "$tmp/event.json")"
hook "with another timestamp than the one signed" 400 "t=$now,v1=$(webhook_sig "$WH_A" "$old" "$tmp/event.json")"
hook "with a body changed after signing" 400 "t=$now,v1=$good_sig" "$TA" "$tmp/event2.json"
hook "signed with the v0 scheme only" 400 "t=$now,v0=$good_sig"
hook "without Stripe-Signature" 400 ""
hook "with a junk Stripe-Signature" 400 "t=abc,v1=zz,,,=="
hook "with a huge timestamp" 400 "t=99999999999999999999999,v1=$(webhook_sig "$WH_A" 99999999999999999999999 "$tmp/event.json")"
hook "for an unknown tenant" 404 "t=$now,v1=$good_sig" t_0000000000000000dead
hook "for tenant B, signed with A's secret" 400 "t=$now,v1=$good_sig" "$TB"
hook "for a tenant id with traversal" 404 "t=$now,v1=$good_sig" "..%2F$TA"
check_each
pay_state=$(psql_q "SELECT state FROM payment.payments WHERE payment_id = '$PAY_A'")
unchanged "refused webhooks"

# ---- 5. bodies, headers, paths, methods -----------------------------------------
section "5. bodies, headers, paths, methods"

{ printf '{"payee":"u_coach","kind":"chat","x":"'; head -c 70000 /dev/zero | tr '\0' ' '; printf '"}'; } >"$tmp/big.json"
head -c 1100000 /dev/zero | tr '\0' 'a' >"$tmp/huge.txt"
nest() { # DEPTH -> {"a":{"a":…{}…}}
    local open close
    printf -v open '%*s' "$1" ''
    printf -v close '%*s' "$1" ''
    printf '%s{}%s' "${open// /\{\"a\":}" "${close// /\}}"
}
head -c 60000 /dev/zero | tr '\0' '[' >"$tmp/deep.json"
{ head -c 30000 /dev/zero | tr '\0' '['; head -c 30000 /dev/zero | tr '\0' ']'; } >"$tmp/deep2.json"
printf '{"payee":"u_coach","kind":"chat"}\0{"payee":"u_mallory"}' >"$tmp/nul.json"
batch
req "a 70 KB body on POST /v1/sessions" 413 POST /v1/sessions "${ALICE[@]}" "${JSON[@]}" --data-binary "@$tmp/big.json"
req "a 70 KB body on PUT /v1/admin/settings" 413 PUT /v1/admin/settings "${A_ADMIN[@]}" "${JSON[@]}" \
    --data-binary "@$tmp/big.json"
req "a 70 KB body on the webhook" 413 POST "/v1/stripe/webhook/$TA" "${JSON[@]}" \
    -H "Stripe-Signature: t=$now,v1=00" --data-binary "@$tmp/big.json"
req "a 1 MB body, chunked (no Content-Length)" 413 POST /v1/sessions "${ALICE[@]}" "${JSON[@]}" \
    -H 'Transfer-Encoding: chunked' --data-binary "@$tmp/huge.txt"
req "a Content-Length of 10^15" 413 POST /v1/sessions "${ALICE[@]}" "${JSON[@]}" \
    -H 'Content-Length: 1000000000000000' --data-binary '{}'
req "JSON nested 17 deep on POST /v1/sessions" 400 POST /v1/sessions "${ALICE[@]}" "${JSON[@]}" \
    --data-binary "{\"payee\":\"u_coach\",\"kind\":\"chat\",\"x\":$(nest 16)}"
req "JSON nested 17 deep on PUT /v1/admin/settings" 400 PUT /v1/admin/settings "${A_ADMIN[@]}" "${JSON[@]}" \
    --data-binary "$(jq -c --argjson x "$(nest 16)" '.terms_url = $x' <<<"$SETTINGS_A")"
req "60,000 open brackets on POST /v1/sessions" 400 POST /v1/sessions "${ALICE[@]}" "${JSON[@]}" \
    --data-binary "@$tmp/deep.json"
req "60,000 open brackets on PUT /v1/admin/users/u_coach/rates" 400 PUT /v1/admin/users/u_coach/rates \
    "${A_ADMIN[@]}" "${JSON[@]}" --data-binary "@$tmp/deep.json"
req "a 30,000-deep array on the webhook (correctly signed)" 400 POST "/v1/stripe/webhook/$TA" "${JSON[@]}" \
    -H "Stripe-Signature: t=$now,v1=$(webhook_sig "$WH_A" "$now" "$tmp/deep2.json")" --data-binary "@$tmp/deep2.json"
bad_json=(
    "a duplicate key|{\"payee\":\"u_coach\",\"payee\":\"u_mallory\",\"kind\":\"chat\"}"
    "invalid UTF-8|{\"payee\":\"u_coach\",\"kind\":\"chat\",\"x\":\"$(printf '\xff\xfe')\"}"
    "an escaped NUL|{\"payee\":\"u_coach\\u0000x\",\"kind\":\"chat\"}"
    "a top-level array|[{\"payee\":\"u_coach\",\"kind\":\"chat\"}]"
    "trailing garbage|{\"payee\":\"u_coach\",\"kind\":\"chat\"} {}"
    "NaN|{\"payee\":\"u_coach\",\"kind\":NaN}"
    "an unterminated string|{\"payee\":\"u_coach"
    "a number for a string|{\"payee\":1e999,\"kind\":\"chat\"}"
    "an unknown field|{\"payee\":\"u_coach\",\"kind\":\"chat\",\"payer\":\"u_mallory\"}"
)
for entry in "${bad_json[@]}"; do
    req "POST /v1/sessions with ${entry%%|*}" 400 POST /v1/sessions "${ALICE[@]}" "${JSON[@]}" \
        --data-binary "${entry#*|}"
done
req "POST /v1/sessions with a raw NUL inside the body" 400 POST /v1/sessions "${ALICE[@]}" "${JSON[@]}" \
    --data-binary "@$tmp/nul.json"
# Content-Type
session_body='{"payee":"u_coach","kind":"chat"}'
req "POST /v1/sessions without Content-Type" 415 POST /v1/sessions "${ALICE[@]}" -H 'Content-Type:' \
    --data-binary "$session_body"
req "POST /v1/sessions as text/plain" 415 POST /v1/sessions "${ALICE[@]}" -H 'Content-Type: text/plain' \
    --data-binary "$session_body"
req "POST /v1/sessions as a form" 415 POST /v1/sessions "${ALICE[@]}" --data "$session_body"
req "POST /v1/sessions as application/jsonp" 415 POST /v1/sessions "${ALICE[@]}" \
    -H 'Content-Type: application/jsonp' --data-binary "$session_body"
req "PUT /v1/admin/settings without Content-Type" 415 PUT /v1/admin/settings "${A_ADMIN[@]}" -H 'Content-Type:' \
    --data-binary "$(jq -c '.default_chat_per_minute = 150' <<<"$SETTINGS_A")"
req "POST $S/checkout as a form" 415 POST "$S/checkout" "${ALICE[@]}" --data '{"minutes":10,"accept_terms":true}'
req "the webhook without Content-Type" 415 POST "/v1/stripe/webhook/$TA" -H 'Content-Type:' \
    -H "Stripe-Signature: t=$now,v1=$good_sig" --data-binary "@$tmp/event.json"
# headers and URL
big=$(head -c 20000 /dev/zero | tr '\0' a)
req "a 20 KB header on an admin route" 431 GET /v1/admin/settings "${A_ADMIN[@]}" -H "X-Big: $big"
req "a 20 KB header on a static page" 431 GET /admin.html -H "X-Big: $big"
req "a 20 KB Authorization header" 431 GET "$S" -H "Authorization: Bearer $big"
req "a 20 KB URL" 414 GET "/v1/sessions/$big" "${ALICE[@]}"
req "a 20 KB query" 414 GET "/v1/quote?payee=u_coach&kind=chat&x=$big" "${ALICE[@]}"
many=()
for i in $(seq 80); do many+=(-H "X-Filler-$i: x"); done
req "80 headers before Authorization" 431 GET "$S" "${many[@]}" "${ALICE[@]}"
# methods
req "DELETE /v1/admin/settings" 405 DELETE /v1/admin/settings "${A_ADMIN[@]}"
req "PATCH /v1/sessions/{id}" 405 PATCH "$S" "${ALICE[@]}" "${JSON[@]}" --data-binary '{}'
req "TRACE /v1/admin/settings" 405 TRACE /v1/admin/settings "${A_ADMIN[@]}"
req "GET /v1/sessions/{id}/end" 405 GET "$S/end" "${ALICE[@]}"
req "an unknown API path" 404 GET /v1/admin/secrets "${A_ADMIN[@]}"
req "an encoded slash making an admin path" 404 GET /v1/admin%2F..%2Fadmin/settings "${A_ADMIN[@]}"
req "a double slash" 404 GET //v1/admin/settings "${A_ADMIN[@]}"
req "a dot segment" 404 GET /v1/./admin/settings "${A_ADMIN[@]}"
check_each
call GET /admin.html -H "X-Big: $(head -c 200000 /dev/zero | tr '\0' a)"
big_status=$status
call GET /healthz
if [[ $big_status =~ ^(431|413|000)$ ]] && [ "$status" = 200 ]; then
    ok "a 200 KB header (past libmicrohttpd's memory) is refused ($big_status) and the gateway goes on"
else
    fail "a 200 KB header: $big_status, want 431 (or the connection closed); then /healthz $status"
fi

# path parameters
junk_ids=(
    "$SID_A%00junk" "$SID_A%00" "%00" "..%2F..%2Fadmin%2Fsettings" "%2e%2e" "." ".." "..%2f$SID_A"
    "$SID_A%2F..%2F$SID_B" "%ff%fe" "%zz" "%252e%252e" "$SID_A%20" "%20$SID_A"
    "$(head -c 200 /dev/zero | tr '\0' s)" "$SID_A;x" "$SID_A%3Bx" "%C0%AE%C0%AE"
    "$SID_A%0d%0aX-Injected:%201" "%2e"
)
: >"$tmp/paths"
for id in "${junk_ids[@]}"; do
    printf '%s\n' "GET /v1/sessions/$id" "GET /v1/sessions/$id/events" \
        "POST /v1/sessions/$id/heartbeat" "POST /v1/sessions/$id/end" >>"$tmp/paths"
done
: >"$tmp/paths2"
: >"$tmp/paths3"
: >"$tmp/paths4"
for id in "${junk_ids[@]}"; do
    printf '%s\n' "GET /v1/admin/users/$id/rates" "GET /v1/admin/roles/$id/rates" >>"$tmp/paths2"
    printf '%s\n' "PUT /v1/admin/users/$id/rates" "PUT /v1/admin/roles/$id/rates" >>"$tmp/paths3"
    echo "POST /v1/stripe/webhook/$id" >>"$tmp/paths4"
done
cat >"$tmp/static" <<'PATHS'
GET /../../../../etc/passwd
GET /%2e%2e/%2e%2e/%2e%2e/etc/passwd
GET /%2e%2e%2f%2e%2e%2fetc%2fpasswd
GET /..%2f..%2f..%2fetc%2fpasswd
GET /..%5c..%5cetc%5cpasswd
GET /.%2e/.%2e/etc/passwd
GET /%252e%252e/%252e%252e/etc/passwd
GET /%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd
GET /admin.html/../../../gateway_http.c
GET /../gateway_http.c
GET /../../../Makefile
GET /../web/admin.html
GET /admin.html%00.png
GET /admin.html%00
GET /etc/passwd
GET //etc/passwd
GET /.git/config
GET /.%2e
GET /%2e%2e
GET /admin.html%2f..%2f..%2fmain.c
GET /admin.html/
GET /admin.html.bak
GET /index.html~
POST /admin.html
PUT /admin.html
DELETE /admin.html
PATHS
batch
reqs "session ids with traversal or percent-encoded junk (alice's token)" 404 "$tmp/paths" "${ALICE[@]}"
reqs "user and role path parameters with junk (admin key)" 404 "$tmp/paths2" "${A_ADMIN[@]}"
reqs "PUT rates with junk path parameters (admin key)" 404 "$tmp/paths3" "${A_ADMIN[@]}" "${JSON[@]}" \
    --data-binary '{"call_per_minute":300,"chat_per_minute":150}'
reqs "webhook tenant ids with junk" 404 "$tmp/paths4" "${JSON[@]}" -H "Stripe-Signature: t=$now,v1=00" \
    --data-binary '{}'
reqs "static files outside the web root or not served" '404|405' "$tmp/static"
req "control: /admin.html is served" 200 GET /admin.html
check_grouped
grep -qi '<html' "$B_dir/$((B_n - 1))" || fail "control: /admin.html is HTML"

for svc in config rate payment metering gateway; do
    curl -fsS "http://127.0.0.1:${stack_metrics_port[$svc]}/healthz" >/dev/null 2>&1 &&
        ok "$svc still answers /healthz after the malformed requests" ||
        fail "$svc still answers /healthz after the malformed requests"
done
unchanged "oversize, malformed and misdirected requests"
[ "$(psql_q "SELECT state FROM payment.payments WHERE payment_id = '$PAY_A'")" = "$pay_state" ] &&
    ok "alice's payment kept its state ($pay_state) through the refused webhooks and confirms" ||
    fail "alice's payment kept its state ($pay_state) through the refused webhooks and confirms"

# ---- 6. another tenant's admin key --------------------------------------------
section "6. another tenant's admin key"

a_marks=("$TA" "$SID_A" "$PAY_A" "$PI_A" "$KA_ID" "$KA2_ID" u_alice u_mallory)
a_state() {
    psql_q "SELECT (SELECT version FROM config.settings WHERE tenant_id = '$TA'),
        (SELECT count(*) FROM config.audit WHERE tenant_id = '$TA'),
        (SELECT string_agg(payee || ':' || coalesce(call_per_minute::text, '-') || '/'
            || coalesce(chat_per_minute::text, '-'), ',' ORDER BY payee)
         FROM config.user_rates WHERE tenant_id = '$TA'),
        (SELECT string_agg(role || ':' || coalesce(call_per_minute::text, '-') || '/'
            || coalesce(chat_per_minute::text, '-'), ',' ORDER BY role)
         FROM config.role_rates WHERE tenant_id = '$TA')"
}
a_before=$(a_state)
SETTINGS_B=$(curl -sS "$G/v1/admin/settings" "${B_ADMIN[@]}")
batch
req "GET /v1/admin/settings" 200 GET /v1/admin/settings "${B_ADMIN[@]}"
req "GET /v1/admin/settings?tenant_id=A" '200|400' GET "/v1/admin/settings?tenant_id=$TA" "${B_ADMIN[@]}"
req "GET /v1/admin/users/u_coach/rates" 200 GET /v1/admin/users/u_coach/rates "${B_ADMIN[@]}"
req "GET /v1/admin/roles/coach/rates" 200 GET /v1/admin/roles/coach/rates "${B_ADMIN[@]}"
req "GET /v1/admin/roles" 200 GET /v1/admin/roles "${B_ADMIN[@]}"
req "GET /v1/admin/users" 200 GET /v1/admin/users "${B_ADMIN[@]}"
req "GET /v1/admin/sessions" 200 GET /v1/admin/sessions "${B_ADMIN[@]}"
req "GET /v1/admin/sessions?payer=u_alice" 200 GET "/v1/admin/sessions?payer=u_alice" "${B_ADMIN[@]}"
req "GET /v1/admin/payments" 200 GET /v1/admin/payments "${B_ADMIN[@]}"
req "GET /v1/admin/payments?session_id=<A's>" 200 GET "/v1/admin/payments?session_id=$SID_A" "${B_ADMIN[@]}"
req "GET /v1/admin/payments.csv" 200 GET /v1/admin/payments.csv "${B_ADMIN[@]}"
req "GET /v1/admin/earnings" 200 GET /v1/admin/earnings "${B_ADMIN[@]}"
req "GET /v1/admin/earnings?payee=u_coach" 200 GET "/v1/admin/earnings?payee=u_coach" "${B_ADMIN[@]}"
req "GET /v1/admin/audit" 200 GET "/v1/admin/audit?limit=1000" "${B_ADMIN[@]}"
req "GET /v1/admin/health" 200 GET /v1/admin/health "${B_ADMIN[@]}"
req "PUT /v1/admin/settings with tenant_id A in the body" 200 PUT /v1/admin/settings "${B_ADMIN[@]}" "${JSON[@]}" \
    --data-binary "$(jq -c --arg ta "$TA" '.tenant_id = $ta | .default_chat_per_minute = 130' <<<"$SETTINGS_B")"
req "PUT /v1/admin/users/u_coach/rates" 200 PUT /v1/admin/users/u_coach/rates "${B_ADMIN[@]}" "${JSON[@]}" \
    --data-binary '{"call_per_minute":400,"chat_per_minute":200}'
req "PUT /v1/admin/roles/coach/rates" 200 PUT /v1/admin/roles/coach/rates "${B_ADMIN[@]}" "${JSON[@]}" \
    --data-binary '{"call_per_minute":400,"chat_per_minute":200,"priority":1}'
req "GET /v1/admin/user-token-secret" 200 GET /v1/admin/user-token-secret "${B_ADMIN[@]}"
req "POST /v1/admin/user-token-secret?tenant_id=A" 400 POST "/v1/admin/user-token-secret?tenant_id=$TA" \
    "${B_ADMIN[@]}" "${JSON[@]}" --data-binary '{}'
req "POST /v1/admin/user-token-secret with tenant_id A in the body" 400 POST /v1/admin/user-token-secret \
    "${B_ADMIN[@]}" "${JSON[@]}" --data-binary "{\"tenant_id\":\"$TA\"}"
run_batch
# what each answer must be, besides mentioning nothing of tenant A's
expect_b=(
    ".tenant_id == \"$TB\"" ".tenant_id == \"$TB\" or .error != null" '[.call_per_minute, .chat_per_minute] == [null, null]'
    '[.call_per_minute, .chat_per_minute] == [null, null]' '.roles == []' '.users == []' 'true'
    '.sessions == []' 'true' '.payments == []' '' 'true' '.payees == []' 'true' 'true'
    ".tenant_id == \"$TB\" and .default_chat_per_minute == 130" '.call_per_minute == 400' '.call_per_minute == 400'
    ".masked == \"…${UTS_B: -4}\" and (has(\"secret\") | not)" '.error.fields[0].field == "tenant_id"'
    '.error.fields[0].field == "tenant_id"'
)
for ((i = 0; i < B_n; i++)); do
    what="tenant B's key: ${B_what[i]}"
    leak=
    for m in "${a_marks[@]}"; do grep -qF -- "$m" "$B_dir/$i" && leak=$m && break; done
    if [ "${B_ok[i]}" != 1 ]; then
        fail "$what: ${B_why[i]}"
        echo "    | $(show "$i")"
    elif [ -n "$leak" ]; then
        fail "$what: the answer mentions $leak (tenant A's)"
        echo "    | $(show "$i" 300)"
    elif [ -n "${expect_b[i]}" ] && ! jq -e "${expect_b[i]}" "$B_dir/$i" >/dev/null 2>&1; then
        fail "$what: not $(tr -s ' ' <<<"${expect_b[i]}")"
        echo "    | $(show "$i")"
    else
        ok "$what: ${B_status[i]}, tenant B's only"
    fi
done
api_ids=$(jq -r '.entries[].id' "$B_dir/13" | sort -n | tr '\n' ' ')
api_max=$(jq '[.entries[].id] | max // 0' "$B_dir/13")
db_ids=$(psql_q "SELECT id FROM config.audit WHERE tenant_id = '$TB' AND id <= $api_max ORDER BY id" | tr '\n' ' ')
[ -n "$api_ids" ] && [ "$api_ids" = "$db_ids" ] &&
    ok "tenant B's key: GET /v1/admin/audit is exactly tenant B's audit rows" ||
    fail "tenant B's key: GET /v1/admin/audit is exactly tenant B's audit rows (api: $api_ids; db: $db_ids)"
[ "$(open_secret "$TA" user_token_secret)" = "$UTS_A" ] && [ "$(open_secret "$TB" user_token_secret)" = "$UTS_B" ] &&
    ok "tenant B's key rotated no user-token secret by naming tenant A" ||
    fail "tenant B's key changed a user-token secret by naming tenant A"
a_after=$(a_state)
[ "$a_before" = "$a_after" ] &&
    ok "tenant A's settings version, audit, user and role rates are untouched by B's writes ($a_after)" ||
    fail "tenant A's state changed under B's key: $a_before → $a_after"
call GET "/v1/quote?payee=u_coach&kind=chat" "${ALICE[@]}"
[ "$status" = 200 ] && [ "$(jq -r .rate_per_minute "$tmp/body")" = 100 ] &&
    ok "tenant A's quote for u_coach is still A's rate (100)" || fail "tenant A's quote for u_coach: $status $(body)"

# ---- 7. a full run ------------------------------------------------------------------
section "7. a full run"

call POST "$S/confirm" "${ALICE[@]}" "${JSON[@]}" \
    --data-binary "{\"payment_method\":\"pm_card_visa\",\"payment_id\":\"$PAY_A\"}"
[ "$status" = 200 ] && ok "full run: alice confirms her payment" || fail "full run: alice confirms her payment ($status $(body))"
state=
for _ in $(seq 100); do
    call GET "$S" "${ALICE[@]}"
    state=$(jq -r '.state // empty' "$tmp/body")
    [ "$state" = active ] && break
    sleep 0.1
done
[ "$state" = active ] && ok "full run: alice's session is funded" || fail "full run: alice's session is funded ($state)"
call POST "$S/heartbeat" -H "Authorization: Bearer $PAYEE_A"
[ "$status" = 200 ] && ok "full run: the payee's heartbeat" || fail "full run: the payee's heartbeat ($status)"
call POST "$S/end" "${ALICE[@]}"
[ "$status" = 200 ] && ok "full run: alice ends her session" || fail "full run: alice ends her session ($status)"
call POST "$SB/checkout" "${BOB[@]}" "${JSON[@]}" --data-binary '{"minutes":10,"accept_terms":true}'
[ "$status" = 201 ] && ok "full run: bob's checkout (tenant B's Stripe key in use)" ||
    fail "full run: bob's checkout ($status $(body))"
SK_B2=sk_test_b2$(rnd)
RK_B2=rk_test_b2$(rnd)
WH_B2=whsec_b2$(rnd)
call GET /v1/admin/settings "${B_ADMIN[@]}"
call PUT /v1/admin/settings "${B_ADMIN[@]}" "${JSON[@]}" --data-binary "$(jq -c --arg sk "$SK_B2" \
    --arg rk "$RK_B2" --arg wh "$WH_B2" \
    '.stripe_secret_key = $sk | .stripe_restricted_key = $rk | .stripe_webhook_secret = $wh' "$tmp/body")"
if [ "$status" = 200 ] && ! grep -qF -e "$SK_B2" -e "$RK_B2" -e "$WH_B2" "$tmp/body" &&
    [ "$(jq -r .stripe_secret_key "$tmp/body")" = "sk_test_…${SK_B2: -4}" ]; then
    ok "full run: tenant B rotates its Stripe keys through the API; the answer masks them"
else
    fail "full run: tenant B rotates its Stripe keys through the API ($status $(body))"
fi
call GET /v1/admin/audit "${B_ADMIN[@]}"
if [ "$status" = 200 ] && ! grep -qF -e "$SK_B2" -e "$RK_B2" -e "$WH_B2" -e "$SK_B" -e "$WH_B" "$tmp/body" &&
    grep -q stripe_secret_key "$tmp/body"; then
    ok "full run: the audit log records the rotation with the keys masked"
else
    fail "full run: the audit log records the rotation with the keys masked ($(body))"
fi

# tenant B's backend rolls its user-token secret through the API: bob's
# token (B's secret cached by the gateway since the set-up) stops at once,
# a token signed with the secret the API returned works, tenant A is
# untouched
call GET /v1/admin/user-token-secret "${B_ADMIN[@]}"
[ "$status" = 200 ] && [ "$(jq -r .masked "$tmp/body")" = "…${UTS_B: -4}" ] && ! grep -qF "$UTS_B" "$tmp/body" &&
    ok "full run: GET /v1/admin/user-token-secret shows tenant B's secret as …${UTS_B: -4} only" ||
    fail "full run: GET /v1/admin/user-token-secret shows the mask only ($status $(body))"
call GET "$SB" "${BOB[@]}"
[ "$status" = 200 ] || fail "full run: bob's token works before the rotation ($status)"
call POST /v1/admin/user-token-secret "${B_ADMIN[@]}" "${JSON[@]}" --data-binary '{}'
UTS_B2=$(jq -r '.secret // empty' "$tmp/body" 2>/dev/null)
if [ "$status" = 200 ] && [[ $UTS_B2 =~ ^[0-9a-f]{64}$ ]] && [ "$UTS_B2" != "$UTS_B" ] &&
    [ "$(jq -r .masked "$tmp/body")" = "…${UTS_B2: -4}" ] && [ "$(header Cache-Control)" = no-store ]; then
    ok "full run: tenant B rotates its user-token secret through the API; the answer holds the new one (no-store)"
else
    fail "full run: tenant B rotates its user-token secret through the API ($status $(body); Cache-Control: $(header Cache-Control))"
fi
call GET "$SB" "${BOB[@]}"
[ "$status" = 401 ] && ok "full run: bob's token of the old secret is refused right after the rotation" ||
    fail "full run: bob's token of the old secret is refused right after the rotation ($status)"
PAYER_B_OLD=$PAYER_B
PAYER_B=$(jwt "$HS256" "$(claims "$TB" u_bob)" "$UTS_B2")
BOB=(-H "Authorization: Bearer $PAYER_B")
call GET "$SB" "${BOB[@]}"
[ "$status" = 200 ] && ok "full run: a token signed with the returned secret works" ||
    fail "full run: a token signed with the returned secret works ($status $(body))"
[ "$(open_secret "$TB" user_token_secret)" = "$UTS_B2" ] &&
    [ "$(ppmctl --json user-token-secret show --tenant "$TB" | jq -r .secret)" = "$UTS_B2" ] &&
    ok "full run: config holds the returned secret (sealed), and ppmctl user-token-secret show prints it" ||
    fail "full run: config holds the returned secret, and ppmctl user-token-secret show prints it"
call GET "$S" "${ALICE[@]}"
[ "$status" = 200 ] && [ "$(open_secret "$TA" user_token_secret)" = "$UTS_A" ] &&
    ok "full run: tenant A's user-token secret and tokens are untouched by B's rotation" ||
    fail "full run: tenant A's user-token secret and tokens are untouched by B's rotation ($status)"
call GET /v1/admin/audit "${B_ADMIN[@]}"
if [ "$status" = 200 ] && ! grep -qF -e "$UTS_B" -e "$UTS_B2" "$tmp/body" &&
    jq -e --arg m "…${UTS_B: -4}" --arg n "…${UTS_B2: -4}" '.entries[0] | .field == "user_token_secret"
        and .old_value == $m and .new_value == $n and (.actor | startswith("admin:"))' "$tmp/body" >/dev/null; then
    ok "full run: the audit log records the user-token secret's rotation, masked"
else
    fail "full run: the audit log records the user-token secret's rotation, masked ($(body))"
fi
UTS_B_OLD=$UTS_B
UTS_B=$UTS_B2

now=$(date +%s)
jq -cn --arg id "evt_sec_ok_$(rnd 8)" --argjson t "$now" \
    '{id: $id, object: "event", type: "customer.created", created: $t, livemode: false,
      api_version: "2024-06-20", data: {object: {id: "cus_sec", object: "customer"}}}' >"$tmp/ok.json"
call POST "/v1/stripe/webhook/$TA" -H 'Content-Type: application/json; charset=utf-8' \
    -H "Stripe-Signature: t=$now,v1=$(webhook_sig "$WH_A" "$now" "$tmp/ok.json")" --data-binary "@$tmp/ok.json"
[ "$status" = 200 ] && ok "control: a correctly signed, fresh webhook is accepted (application/json; charset=utf-8)" ||
    fail "control: a correctly signed, fresh webhook is accepted ($status $(body))"

# ---- 8. SQL-looking input in every text field ------------------------------------
section "8. SQL-looking input"

sql_payloads=(
    "' OR '1'='1"
    "x'; DROP TABLE config.audit; --"
    "1); SELECT pg_sleep(3); --"
    "\\'; UPDATE config.settings SET version = 0; --"
    "\" OR \"\"=\""
    "%' OR 1=1 --"
)
sql_tenants=$(psql_q "SELECT count(*) FROM config.tenants")
sql_keys=$(psql_q "SELECT count(*) FROM config.admin_keys")
sql_log_before=$(grep -c 'syntax error' "$run_dir/logs/postgresql.log")
tables_before=$tables
mapfile -t sql_enc < <(printf '%s\n' "${sql_payloads[@]}" | jq -Rr '@uri')
mapfile -t sql_json < <(printf '%s\n' "${sql_payloads[@]}" | jq -Rr '@json | .[1:-1]')
# sql WHAT WANT METHOD PATH [curl args…]: the request once per payload, @P@
# in an argument replaced by the payload, @PE@ by it percent-encoded, @PJ@
# by it escaped for a JSON string; accepted answers (2xx) pass, refusals
# must be WANT with the error body.
sql() {
    local what=$1 want=$2 i a args
    shift 2
    for i in "${!sql_payloads[@]}"; do
        args=()
        for a in "$@"; do
            a=${a//@P@/${sql_payloads[i]}}
            a=${a//@PJ@/${sql_json[i]}}
            args+=("${a//@PE@/${sql_enc[i]}}")
        done
        B_args_show[B_n]=${sql_payloads[i]}
        req "SQL-looking input in $what" "$want|200|201" "${args[@]}"
    done
}
SETTINGS_B=$(curl -sS "$G/v1/admin/settings" "${B_ADMIN[@]}" | jq -c 'del(.version)')
batch
# settings, each text field alone (the rest valid), as is and after the
# field's own prefix (sk_test_…), so that prefix checks are passed
settings_fields=(enable_for rate_scope stripe_mode stripe_secret_key stripe_restricted_key
    stripe_publishable_key stripe_webhook_secret terms_url currency billing_mode rounding)
declare -a settings_item=()
# one jq makes every body: 4 lines per item (field, prefix, value, body)
mapfile -t items < <(jq -cr --argjson ps "$(printf '%s\n' "${sql_payloads[@]}" | jq -Rsc 'split("\n")[:-1]')" \
    --argjson fs "$(printf '%s\n' "${settings_fields[@]}" | jq -Rsc 'split("\n")[:-1]')" \
    '. as $s | $fs[] as $f | ($s[$f] | tostring | split("…")[0]) as $prefix | ("", $prefix) as $pre
     | $ps[] as $p | $f, $pre, ($pre + $p), ($s | .[$f] = ($pre + $p) | tojson)' <<<"$SETTINGS_B")
for ((k = 0; k + 3 < ${#items[@]}; k += 4)); do
    field=${items[k]}
    pre=${items[k + 1]}
    settings_item[B_n]="$field|${items[k + 2]}"
    B_args_show[B_n]=${items[k + 2]}
    req "SQL-looking input in settings.$field${pre:+ after \"$pre\"}" '400|200' PUT /v1/admin/settings \
        "${B_ADMIN[@]}" "${JSON[@]}" --data-binary "${items[k + 3]}"
done
sql "settings.cors_allowed_origins" 400 PUT /v1/admin/settings "${B_ADMIN[@]}" "${JSON[@]}" \
    --data-binary "$(jq -c '.cors_allowed_origins = ["https://b.example.com/@PJ@"]' <<<"$SETTINGS_B")"
sql "If-Match" 400 PUT /v1/admin/settings "${B_ADMIN[@]}" -H 'If-Match: @P@' "${JSON[@]}" --data-binary "$SETTINGS_B"
sql "the user_id of GET user rates" 404 GET "/v1/admin/users/@PE@/rates" "${B_ADMIN[@]}"
sql "the user_id of PUT user rates" 404 PUT "/v1/admin/users/@PE@/rates" "${B_ADMIN[@]}" "${JSON[@]}" \
    --data-binary '{"call_per_minute":300,"chat_per_minute":150}'
sql "the role of GET role rates" 404 GET "/v1/admin/roles/@PE@/rates" "${B_ADMIN[@]}"
sql "the role of PUT role rates" 404 PUT "/v1/admin/roles/@PE@/rates" "${B_ADMIN[@]}" "${JSON[@]}" \
    --data-binary '{"call_per_minute":300,"chat_per_minute":150}'
for q in state payer payee cursor limit; do
    sql "admin sessions ?$q=" 400 GET "/v1/admin/sessions?$q=@PE@" "${B_ADMIN[@]}"
done
for q in session_id payer payee cursor limit; do
    sql "admin payments ?$q=" 400 GET "/v1/admin/payments?$q=@PE@" "${B_ADMIN[@]}"
done
sql "admin users ?cursor=" 400 GET "/v1/admin/users?cursor=@PE@" "${B_ADMIN[@]}"
sql "admin audit ?cursor=" 400 GET "/v1/admin/audit?cursor=@PE@" "${B_ADMIN[@]}"
sql "admin payments.csv ?cursor=" 400 GET "/v1/admin/payments.csv?cursor=@PE@" "${B_ADMIN[@]}"
sql "admin earnings ?payee=" 400 GET "/v1/admin/earnings?payee=@PE@" "${B_ADMIN[@]}"
sql "an admin key" 401 GET /v1/admin/settings -H 'Authorization: Bearer @P@'
sql "an admin key shaped ppmak_<id>_<SQL>" 401 GET /v1/admin/settings -H "Authorization: Bearer ppmak_${KA_ID}_@P@"
sql "quote ?payee=" 400 GET "/v1/quote?payee=@PE@&kind=chat" "${BOB[@]}"
sql "quote ?kind=" 400 GET "/v1/quote?payee=u_coachb&kind=@PE@" "${BOB[@]}"
sql "POST /v1/sessions payee" 400 POST /v1/sessions "${BOB[@]}" "${JSON[@]}" \
    --data-binary '{"payee":"@PJ@","kind":"chat"}'
sql "POST /v1/sessions kind" 400 POST /v1/sessions "${BOB[@]}" "${JSON[@]}" \
    --data-binary '{"payee":"u_coachb","kind":"@PJ@"}'
sql "a session id" 404 GET "/v1/sessions/@PE@" "${BOB[@]}"
sql "checkout email" 400 POST "$SB/checkout" "${BOB[@]}" "${JSON[@]}" \
    --data-binary '{"minutes":10,"accept_terms":true,"email":"@PJ@"}'
sql "confirm payment_method" 400 POST "$SB/confirm" "${BOB[@]}" "${JSON[@]}" \
    --data-binary '{"payment_method":"@PJ@"}'
sql "confirm payment_id" 400 POST "$SB/confirm" "${BOB[@]}" "${JSON[@]}" \
    --data-binary '{"payment_method":"pm_card_visa","payment_id":"@PJ@"}'
sql "the webhook's tenant id" 404 POST "/v1/stripe/webhook/@PE@" "${JSON[@]}" \
    -H "Stripe-Signature: t=$now,v1=00" --data-binary '{}'
sql "X-Request-Id" 400 GET "$SB" "${BOB[@]}" -H 'X-Request-Id: @P@'
# token claims, signed with tenant B's real secret
for i in "${!sql_payloads[@]}"; do
    p="\"${sql_json[i]}\""
    B_args_show[B_n]=${sql_payloads[i]}
    req "SQL-looking input in a token's sub" 401 GET "/v1/quote?payee=u_coachb&kind=chat" \
        -H "Authorization: Bearer $(jwt "$HS256" "{\"tid\":\"$TB\",\"sub\":$p,\"exp\":9999999999}" "$UTS_B")"
done
for i in "${!sql_payloads[@]}"; do
    p="\"${sql_json[i]}\""
    B_args_show[B_n]=${sql_payloads[i]}
    req "SQL-looking input in a token's tid" 401 GET "/v1/quote?payee=u_coachb&kind=chat" \
        -H "Authorization: Bearer $(jwt "$HS256" "{\"tid\":$p,\"sub\":\"u_bob\",\"exp\":9999999999}" "$UTS_B")"
done
for i in "${!sql_payloads[@]}"; do
    p="\"${sql_json[i]}\""
    B_args_show[B_n]=${sql_payloads[i]}
    req "SQL-looking input in a token's roles" '200|401' GET "/v1/quote?payee=u_bob&kind=chat" \
        -H "Authorization: Bearer $(jwt "$HS256" "{\"tid\":\"$TB\",\"sub\":\"u_coachb\",\"roles\":[$p],\"exp\":9999999999}" "$UTS_B")"
done
req "quotes of a payee whose token had SQL-looking roles" 200 GET "/v1/quote?payee=u_coachb&kind=chat" "${BOB[@]}"
# a signed webhook whose every string is SQL-looking
jq -cn --arg p "${sql_payloads[1]}" --argjson t "$now" \
    '{id: ("evt_" + $p), object: "event", type: ("payment_intent." + $p), created: $t, livemode: false,
      data: {object: {id: ("pi_" + $p), object: "payment_intent", metadata: {tenant: $p, payment: $p, session: $p}}}}' \
    >"$tmp/sql_event.json"
req "SQL-looking input in every string of a signed webhook" '200|400' POST "/v1/stripe/webhook/$TA" "${JSON[@]}" \
    -H "Stripe-Signature: t=$now,v1=$(webhook_sig "$WH_A" "$now" "$tmp/sql_event.json")" --data-binary "@$tmp/sql_event.json"
check_grouped
# settings accepted with an SQL-looking value keep it literally (secrets are
# masked in answers)
bad=()
filtered=()
for ((i = 0; i < B_n; i++)); do
    # a filter that matched rows would be an injection: nobody has these ids
    [[ ${B_what[i]} =~ (sessions|payments)\ \?(payer|payee|session_id)=|earnings\ \?payee= ]] &&
        [ "${B_status[i]}" = 200 ] && filtered+=("$B_dir/$i")
    [ -n "${settings_item[i]:-}" ] && [ "${B_status[i]}" = 200 ] || continue
    field=${settings_item[i]%%|*}
    value=${settings_item[i]#*|}
    case $field in stripe_secret_key | stripe_restricted_key | stripe_webhook_secret) continue ;; esac
    [ "$(jq -r --arg f "$field" '.[$f]' "$B_dir/$i")" = "$value" ] ||
        bad+=("settings.$field = $value read back as $(jq -c --arg f "$field" '.[$f]' "$B_dir/$i")")
done
[ ${#bad[@]} -eq 0 ] && ok "SQL-looking settings that were accepted are kept literally" ||
    { fail "SQL-looking settings that were accepted are kept literally"; printf '    | %s\n' "${bad[@]}"; }
rows=0
[ ${#filtered[@]} -eq 0 ] || rows=$(jq -s 'map((.sessions // .payments // .payees // []) | length) | add' "${filtered[@]}")
[ "$rows" = 0 ] && ok "SQL-looking filters on sessions, payments and earnings matched no row (${#filtered[@]} answered 200)" ||
    fail "SQL-looking filters on sessions, payments or earnings matched $rows rows"
slowest=$(printf '%s\n' "${B_took[@]}" | sort -g | tail -n 1)
awk -v s="$slowest" 'BEGIN { exit !(s < 2.5) }' && ok "no SQL-looking request was slow (slowest ${slowest}s: no pg_sleep ran)" ||
    fail "an SQL-looking request took ${slowest}s (pg_sleep?)"
build_fingerprint
[ "$tables" = "$tables_before" ] && [ "$(wc -w <<<"$tables")" -ge 20 ] &&
    ok "after the SQL-looking input, all $(wc -w <<<"$tables") tables are there" ||
    fail "after the SQL-looking input, tables differ: $(diff <(echo "$tables_before") <(echo "$tables") | tr '\n' ' ')"
[ "$(psql_q "SELECT count(*) FROM config.tenants")" = "$sql_tenants" ] &&
    [ "$(psql_q "SELECT count(*) FROM config.admin_keys")" = "$sql_keys" ] &&
    [ "$(psql_q "SELECT count(*) FROM config.settings WHERE version = 0")" = 0 ] &&
    ok "after the SQL-looking input, tenants, admin keys and settings versions are intact" ||
    fail "after the SQL-looking input, tenants, admin keys or settings versions changed"
sql_log_after=$(grep -c 'syntax error' "$run_dir/logs/postgresql.log")
[ "$sql_log_after" = "$sql_log_before" ] &&
    ok "PostgreSQL logged no SQL syntax error (no input reached a query as SQL)" ||
    { fail "PostgreSQL logged SQL syntax errors"; grep -A2 'syntax error' "$run_dir/logs/postgresql.log" | tail -10 | sed 's/^/    | /'; }
call GET "$SB" "${BOB[@]}" -H "X-Request-Id: ${sql_payloads[0]}"
[ "$(header X-Request-Id)" != "${sql_payloads[0]}" ] && ok "an SQL-looking X-Request-Id is not echoed" ||
    fail "an SQL-looking X-Request-Id is echoed"

# ---- 9. no secret in any log or in plaintext in the databases ---------------------
section "9. secrets in logs and databases"

sleep 1.2 # Redis's append-only file is written every second
declare -A secrets=(
    ["tenant A's Stripe secret key"]=$SK_A ["tenant A's restricted key"]=$RK_A
    ["tenant A's webhook secret"]=$WH_A ["tenant B's Stripe secret key"]=$SK_B
    ["tenant B's restricted key"]=$RK_B ["tenant B's webhook secret"]=$WH_B
    ["tenant B's rotated Stripe secret key"]=$SK_B2 ["tenant B's rotated restricted key"]=$RK_B2
    ["tenant B's rotated webhook secret"]=$WH_B2
    ["tenant A's admin key"]=$KA ["tenant A's admin key's secret part"]=${KA##*_}
    ["tenant A's revoked admin key"]=$KA2 ["tenant A's revoked key's secret part"]=${KA2##*_}
    ["tenant B's admin key"]=$KB ["tenant B's admin key's secret part"]=${KB##*_}
    ["tenant A's user-token secret"]=$UTS_A ["tenant B's first user-token secret"]=$UTS_B_OLD
    ["tenant B's rotated user-token secret"]=$UTS_B
    ["the master key"]=$MASTER
    ["alice's user token"]=$PAYER_A ["the coach's user token"]=$PAYEE_A ["bob's user token"]=$PAYER_B
    ["bob's token of the first secret"]=$PAYER_B_OLD
)
"$pgbin/pg_dump" -h 127.0.0.1 -p "$pg_port" -U ppm ppm >"$tmp/dump.sql" 2>"$tmp/dump.err" ||
    fail "pg_dump of the ppm database ($(head -c 200 "$tmp/dump.err"))"
redis-cli -p "$redis_port" config set rdbcompression no >/dev/null
redis-cli -p "$redis_port" save >/dev/null
logs=("$run_dir"/logs/*)
mapfile -t redis_files < <(find "$run_dir/redis" -type f ! -name redis.conf)
# the haystacks hold what they should: tenants and sessions
grep -qF "$TA" "$tmp/dump.sql" && grep -qF "$TB" "$tmp/dump.sql" && grep -qF "$SID_A" "$tmp/dump.sql" &&
    ok "the database dump holds both tenants and the sessions ($(wc -c <"$tmp/dump.sql") bytes)" ||
    fail "the database dump holds both tenants and the sessions"
grep -qF "$SID_A" "${logs[@]}" && ok "the logs mention the sessions (${#logs[@]} files: $(cd "$run_dir/logs" && echo *))" ||
    fail "the logs mention the sessions"
grep -qaF "$SID_B" "${redis_files[@]}" && ok "Redis's files hold the sessions (${#redis_files[@]} files)" ||
    fail "Redis's files hold the sessions"
# every value and its hex form in one pattern file; one grep -o per haystack
: >"$tmp/patterns"
declare -A hex_of
for name in "${!secrets[@]}"; do
    hex_of[$name]=$(printf '%s' "${secrets[$name]}" | od -An -tx1 | tr -d ' \n')
    printf '%s\n%s\n' "${secrets[$name]}" "${hex_of[$name]}" >>"$tmp/patterns"
done
declare -A found
for f in "${logs[@]}" "$tmp/dump.sql" "${redis_files[@]}"; do
    case $f in
        "$tmp/dump.sql") where="the database" ;;
        "$run_dir"/logs/*) where="logs/${f##*/}" ;;
        *) where="Redis (${f##*/})" ;;
    esac
    while IFS= read -r hit; do
        found[$hit]+="$where, "
    done < <(grep -aoF -f "$tmp/patterns" "$f" | sort -u)
done
for name in "${!secrets[@]}"; do
    value=${secrets[$name]}
    where="${found[$value]:-}${found[${hex_of[$name]}]:+${found[${hex_of[$name]}]}(hex) }"
    if [ -z "$where" ]; then
        ok "$name is in no log, nor in the database or Redis"
    else
        fail "$name appears in ${where%, }"
        for f in "${logs[@]}"; do grep -aF -- "$value" "$f" | head -2 | cut -c1-300 | sed "s|^|    | ${f##*/}: |"; done
    fi
done

section "done"
finish
