#!/usr/bin/env bash
# The invariant checker of a chaos run (tests/chaos/README.md): loads what
# the emulator recorded (PaymentIntents, refunds, request log, webhook
# deliveries) and what chaos-load observed into schema "chaos" of the
# services' PostgreSQL database, then runs check.sql there against the
# payment ledger and metering's sessions. Prints two tables and, for the
# caller, one "result<TAB>phase<TAB>column<TAB>value" line per must-be-zero
# figure.
#
# Environment: CHAOS_DIR (the run's directory: tenants.tsv, observed.jsonl,
# faults.tsv: the emulator's fault rules fired per phase),
# CHAOS_PG_URL, CHAOS_EMULATOR_URL, CHAOS_TOLERANCE_MS (one tick + slack, ppm ms).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${CHAOS_DIR:?}
pg=${CHAOS_PG_URL:?}
emu=${CHAOS_EMULATOR_URL:?}
tol=${CHAOS_TOLERANCE_MS:?}

sql() { psql "$pg" -v ON_ERROR_STOP=1 -qAt "$@"; }
# JSON lines on stdin into chaos.<table>(doc): COPY's text format, so every
# backslash of the JSON is doubled (JSON lines hold no raw tab or newline).
load() { sed 's/\\/\\\\/g' | sql -c "\\copy chaos.$1 (doc) FROM STDIN"; }

sql <<'SQL'
DROP SCHEMA IF EXISTS chaos CASCADE;
CREATE SCHEMA chaos;
CREATE TABLE chaos.tenants (phase_no int, phase text, mode text, tenant_id text, account text);
CREATE TABLE chaos.observed (doc jsonb);
CREATE TABLE chaos.intents (doc jsonb);
CREATE TABLE chaos.refunds (doc jsonb);
CREATE TABLE chaos.deliveries (doc jsonb);
CREATE TABLE chaos.faults (phase text, fired int);
SQL
sql -c "\\copy chaos.tenants FROM '$dir/tenants.tsv'"
[ -s "$dir/faults.tsv" ] && sql -c "\\copy chaos.faults FROM '$dir/faults.tsv'"
load observed <"$dir/observed.jsonl"
curl -fsS "$emu/_emulator/payment_intents" | jq -c '.data[]' | load intents
curl -fsS "$emu/_emulator/refunds" | jq -c '.data[]' | load refunds
curl -fsS "$emu/_emulator/webhooks" | jq -c '.deliveries[] | del(.attempts)' | load deliveries
psql "$pg" -X -q -v ON_ERROR_STOP=1 -v tol="$tol" -f "$here/check.sql"
