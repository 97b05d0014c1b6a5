/*  payment_ledger: the payments ledger. See payment_ledger.h.

    Every statement is parameterized (ppm_pg_exec); numbers travel as text
    parameters. Multi-row changes run in ppm_pg_transaction so that a
    serialization failure or a lost connection redoes the whole change.
*/
#include "payment_ledger.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ppm_clock.h"
#include "ppm_migrate.h"

/* ---- schema --------------------------------------------------------------- */

static const ppm_migration_t s_migrations[] = {
    {1, "ledger",
     "CREATE SCHEMA IF NOT EXISTS payment;"
     "CREATE TABLE payment.customers ("
     "  tenant_id text NOT NULL, payer text NOT NULL,"
     "  mode text NOT NULL CHECK (mode IN ('test','live')),"
     "  stripe_customer text NOT NULL, created_at_ms bigint NOT NULL,"
     "  PRIMARY KEY (tenant_id, payer, mode));"
     "CREATE TABLE payment.payments ("
     "  payment_id text PRIMARY KEY, tenant_id text NOT NULL, session_id text NOT NULL,"
     "  payer text NOT NULL, payee text NOT NULL,"
     "  mode text NOT NULL CHECK (mode IN ('test','live')),"
     "  flow text NOT NULL CHECK (flow IN ('payment_intent','hosted')),"
     "  billing_mode text NOT NULL CHECK (billing_mode IN ('prepaid','authorize')),"
     "  rounding text NOT NULL CHECK (rounding IN ('minute','second')),"
     "  refund_unused boolean NOT NULL,"
     "  minutes bigint NOT NULL CHECK (minutes > 0),"
     "  rate_per_minute bigint NOT NULL CHECK (rate_per_minute > 0),"
     "  amount bigint NOT NULL CHECK (amount > 0), currency text NOT NULL,"
     "  state text NOT NULL CHECK (state IN ('created','pending','requires_action',"
     "    'authorized','succeeded','failed','canceled','refunded')),"
     "  seq integer NOT NULL,"
     "  captured bigint NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= amount),"
     "  refunded bigint NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= captured),"
     "  stripe_customer text NOT NULL DEFAULT '',"
     "  stripe_payment_intent text, stripe_checkout_session text,"
     "  client_secret text NOT NULL DEFAULT '', checkout_url text NOT NULL DEFAULT '',"
     "  success_url text NOT NULL DEFAULT '', cancel_url text NOT NULL DEFAULT '',"
     "  disputed boolean NOT NULL DEFAULT false, funded boolean NOT NULL DEFAULT false,"
     "  confirm_attempts integer NOT NULL DEFAULT 0,"
     "  failure_code text NOT NULL DEFAULT '', failure_message text NOT NULL DEFAULT '',"
     "  created_at_ms bigint NOT NULL, updated_at_ms bigint NOT NULL,"
     "  UNIQUE (tenant_id, session_id, seq),"
     "  UNIQUE (tenant_id, stripe_payment_intent),"
     "  UNIQUE (tenant_id, stripe_checkout_session));"
     "CREATE INDEX payments_list ON payment.payments (tenant_id, created_at_ms DESC,"
     "  payment_id DESC);"
     "CREATE INDEX payments_open ON payment.payments (updated_at_ms)"
     "  WHERE state IN ('created','pending','requires_action');"
     "CREATE TABLE payment.transitions ("
     "  id bigserial PRIMARY KEY,"
     "  payment_id text NOT NULL REFERENCES payment.payments,"
     "  tenant_id text NOT NULL, from_state text, to_state text NOT NULL,"
     "  cause text NOT NULL, stripe_request_id text, event_id text, at_ms bigint NOT NULL);"
     "CREATE INDEX transitions_payment ON payment.transitions (payment_id, id);"
     "CREATE TABLE payment.consents ("
     "  payment_id text PRIMARY KEY REFERENCES payment.payments,"
     "  tenant_id text NOT NULL, session_id text NOT NULL, payer text NOT NULL,"
     "  terms_url text NOT NULL, accepted_at_ms bigint NOT NULL);"
     "CREATE TABLE payment.stripe_requests ("
     "  id bigserial PRIMARY KEY, tenant_id text NOT NULL, payment_id text,"
     "  what text NOT NULL, idempotency_key text, http_status integer NOT NULL,"
     "  request_id text, replayed boolean NOT NULL, at_ms bigint NOT NULL);"
     "CREATE TABLE payment.captures ("
     "  payment_id text PRIMARY KEY REFERENCES payment.payments,"
     "  tenant_id text NOT NULL, amount bigint NOT NULL CHECK (amount >= 0),"
     "  stripe_request_id text, at_ms bigint NOT NULL);"
     "CREATE TABLE payment.refunds ("
     "  refund_id text PRIMARY KEY, payment_id text NOT NULL REFERENCES payment.payments,"
     "  tenant_id text NOT NULL, amount bigint NOT NULL CHECK (amount > 0),"
     "  status text NOT NULL, reason text NOT NULL, stripe_request_id text,"
     "  at_ms bigint NOT NULL);"
     "CREATE TABLE payment.disputes ("
     "  dispute_id text PRIMARY KEY, payment_id text NOT NULL REFERENCES payment.payments,"
     "  tenant_id text NOT NULL, charge text NOT NULL, reason text NOT NULL,"
     "  status text NOT NULL, amount bigint NOT NULL, at_ms bigint NOT NULL);"
     "CREATE TABLE payment.webhook_events ("
     "  tenant_id text NOT NULL, event_id text NOT NULL, type text NOT NULL,"
     "  received_at_ms bigint NOT NULL, processed_at_ms bigint, outcome text,"
     "  PRIMARY KEY (tenant_id, event_id));"
     "CREATE TABLE payment.settlements ("
     "  tenant_id text NOT NULL, session_id text NOT NULL, used_ms bigint NOT NULL,"
     "  reason text NOT NULL, done boolean NOT NULL DEFAULT false,"
     "  charged bigint NOT NULL DEFAULT 0, refunded bigint NOT NULL DEFAULT 0,"
     "  released bigint NOT NULL DEFAULT 0, currency text NOT NULL DEFAULT '',"
     "  created_at_ms bigint NOT NULL, done_at_ms bigint,"
     "  PRIMARY KEY (tenant_id, session_id));"
     "CREATE TABLE payment.outbox ("
     "  id bigserial PRIMARY KEY, tenant_id text NOT NULL,"
     "  payment_id text NOT NULL UNIQUE REFERENCES payment.payments,"
     "  session_id text NOT NULL, minutes bigint NOT NULL, amount bigint NOT NULL,"
     "  currency text NOT NULL, attempts integer NOT NULL DEFAULT 0,"
     "  next_attempt_ms bigint NOT NULL, delivered_at_ms bigint, outcome text,"
     "  created_at_ms bigint NOT NULL);"
     "CREATE INDEX outbox_due ON payment.outbox (next_attempt_ms) WHERE delivered_at_ms IS "
     "NULL;"},
};

int
payment_ledger_migrate (ppm_pg_t *pg, const char **error)
{
    return ppm_migrate (pg, "payment", s_migrations, sizeof s_migrations / sizeof s_migrations[0],
                        error);
}

/* ---- states --------------------------------------------------------------- */

static const char *s_state_names[] = {"",           "created",   "pending", "requires_action",
                                      "authorized", "succeeded", "failed",  "canceled",
                                      "refunded"};

const char *
payment_state_name (payment_state_t state)
{
    if ((int)state < 0 || (int)state > PAYMENT_ST_REFUNDED)
        return "";
    return s_state_names[state];
}

payment_state_t
payment_state_from_name (const char *name)
{
    for (int i = 1; i <= PAYMENT_ST_REFUNDED; i++)
        if (name && strcmp (name, s_state_names[i]) == 0)
            return (payment_state_t)i;
    return PAYMENT_ST_NONE;
}

bool
payment_state_allowed (payment_state_t from, payment_state_t to)
{
    if (from == to)
        return from != PAYMENT_ST_CANCELED && from != PAYMENT_ST_NONE;
    switch (from) {
        case PAYMENT_ST_CREATED:
        case PAYMENT_ST_PENDING:
        case PAYMENT_ST_REQUIRES_ACTION:
        case PAYMENT_ST_FAILED:
            return to == PAYMENT_ST_PENDING || to == PAYMENT_ST_REQUIRES_ACTION ||
                   to == PAYMENT_ST_AUTHORIZED || to == PAYMENT_ST_SUCCEEDED ||
                   to == PAYMENT_ST_FAILED || to == PAYMENT_ST_CANCELED;
        case PAYMENT_ST_AUTHORIZED:
            return to == PAYMENT_ST_SUCCEEDED || to == PAYMENT_ST_CANCELED;
        case PAYMENT_ST_SUCCEEDED:
            return to == PAYMENT_ST_REFUNDED;
        default:
            return false;
    }
}

void
payment_ledger_new_id (char out[40])
{
    unsigned char bytes[12];
    randombytes_buf (bytes, sizeof bytes);
    memcpy (out, "pay_", 4);
    for (size_t i = 0; i < sizeof bytes; i++)
        snprintf (out + 4 + 2 * i, 3, "%02x", bytes[i]);
}

/* ---- helpers --------------------------------------------------------------- */

typedef struct {
    char text[24];
} s_num_t;

static s_num_t
s_num (int64_t value)
{
    s_num_t num;
    snprintf (num.text, sizeof num.text, "%" PRId64, value);
    return num;
}

static int64_t
s_int (const PGresult *res, int row, int col)
{
    if (PQgetisnull (res, row, col))
        return 0;
    return strtoll (PQgetvalue (res, row, col), NULL, 10);
}

static void
s_copy (char *out, size_t size, const PGresult *res, int row, int col)
{
    snprintf (out, size, "%s", PQgetisnull (res, row, col) ? "" : PQgetvalue (res, row, col));
}

static bool
s_bool (const PGresult *res, int row, int col)
{
    return !PQgetisnull (res, row, col) && PQgetvalue (res, row, col)[0] == 't';
}

#define S_COLS                                                                                     \
    "p.payment_id, p.tenant_id, p.session_id, p.payer, p.payee, p.mode, p.flow, "                  \
    "p.billing_mode, p.rounding, p.refund_unused, p.minutes, p.rate_per_minute, p.amount, "        \
    "p.currency, p.state, p.seq, p.captured, p.refunded, p.stripe_customer, "                      \
    "coalesce(p.stripe_payment_intent, ''), coalesce(p.stripe_checkout_session, ''), "             \
    "p.client_secret, p.checkout_url, p.success_url, p.cancel_url, p.disputed, p.funded, "         \
    "p.confirm_attempts, p.failure_code, p.failure_message, coalesce(c.terms_url, ''), "           \
    "coalesce(c.accepted_at_ms, 0), p.created_at_ms, p.updated_at_ms, "                            \
    "coalesce(o.outcome LIKE 'refused%', false) "                                                  \
    "FROM payment.payments p LEFT JOIN payment.consents c ON c.payment_id = p.payment_id "         \
    "LEFT JOIN payment.outbox o ON o.payment_id = p.payment_id "

static void
s_row_read (const PGresult *res, int i, payment_row_t *row)
{
    memset (row, 0, sizeof *row);
    int c = 0;
    s_copy (row->payment_id, sizeof row->payment_id, res, i, c++);
    s_copy (row->tenant_id, sizeof row->tenant_id, res, i, c++);
    s_copy (row->session_id, sizeof row->session_id, res, i, c++);
    s_copy (row->payer, sizeof row->payer, res, i, c++);
    s_copy (row->payee, sizeof row->payee, res, i, c++);
    s_copy (row->mode, sizeof row->mode, res, i, c++);
    s_copy (row->flow, sizeof row->flow, res, i, c++);
    s_copy (row->billing_mode, sizeof row->billing_mode, res, i, c++);
    s_copy (row->rounding, sizeof row->rounding, res, i, c++);
    row->refund_unused = s_bool (res, i, c++);
    row->minutes = s_int (res, i, c++);
    row->rate_per_minute = s_int (res, i, c++);
    row->amount = s_int (res, i, c++);
    s_copy (row->currency, sizeof row->currency, res, i, c++);
    row->state = payment_state_from_name (PQgetvalue (res, i, c++));
    row->seq = (int)s_int (res, i, c++);
    row->captured = s_int (res, i, c++);
    row->refunded = s_int (res, i, c++);
    s_copy (row->customer, sizeof row->customer, res, i, c++);
    s_copy (row->payment_intent, sizeof row->payment_intent, res, i, c++);
    s_copy (row->checkout_session, sizeof row->checkout_session, res, i, c++);
    s_copy (row->client_secret, sizeof row->client_secret, res, i, c++);
    s_copy (row->checkout_url, sizeof row->checkout_url, res, i, c++);
    s_copy (row->success_url, sizeof row->success_url, res, i, c++);
    s_copy (row->cancel_url, sizeof row->cancel_url, res, i, c++);
    row->disputed = s_bool (res, i, c++);
    row->funded = s_bool (res, i, c++);
    row->confirm_attempts = (int)s_int (res, i, c++);
    s_copy (row->failure_code, sizeof row->failure_code, res, i, c++);
    s_copy (row->failure_message, sizeof row->failure_message, res, i, c++);
    s_copy (row->terms_url, sizeof row->terms_url, res, i, c++);
    row->terms_accepted_at_ms = s_int (res, i, c++);
    row->created_at_ms = s_int (res, i, c++);
    row->updated_at_ms = s_int (res, i, c++);
    row->refused = s_bool (res, i, c++);
}

static ppm_pg_result_t
s_rows (ppm_pg_t *pg, const char *sql, int nparams, const char *const *params, payment_row_t **rows,
        size_t *count)
{
    *rows = NULL;
    *count = 0;
    PGresult *res = NULL;
    ppm_pg_result_t rc = ppm_pg_exec (pg, sql, nparams, params, &res);
    if (rc != PPM_PG_OK)
        return rc;
    int n = PQntuples (res);
    if (n > 0) {
        *rows = (payment_row_t *)calloc ((size_t)n, sizeof (payment_row_t));
        if (!*rows) {
            PQclear (res);
            return PPM_PG_ERROR;
        }
        for (int i = 0; i < n; i++)
            s_row_read (res, i, &(*rows)[i]);
    }
    *count = (size_t)n;
    PQclear (res);
    return PPM_PG_OK;
}

static ppm_pg_result_t
s_one (ppm_pg_t *pg, const char *sql, int nparams, const char *const *params, payment_row_t *row,
       bool *found)
{
    payment_row_t *rows = NULL;
    size_t count = 0;
    *found = false;
    ppm_pg_result_t rc = s_rows (pg, sql, nparams, params, &rows, &count);
    if (rc == PPM_PG_OK && count > 0) {
        *row = rows[0];
        *found = true;
    }
    free (rows);
    return rc;
}

/* ---- create ------------------------------------------------------------------ */

/* One statement: the payment (with the payer's known Customer), its
   consent and its first transition are written together or not at all,
   in one round trip. */
ppm_pg_result_t
payment_ledger_create (ppm_pg_t *pg, payment_row_t *row)
{
    row->state = PAYMENT_ST_CREATED;
    if (row->created_at_ms == 0)
        row->created_at_ms = ppm_clock_now_ms ();
    row->updated_at_ms = row->created_at_ms;
    s_num_t minutes = s_num (row->minutes);
    s_num_t rate = s_num (row->rate_per_minute);
    s_num_t amount = s_num (row->amount);
    s_num_t now = s_num (row->created_at_ms);
    s_num_t accepted = s_num (row->terms_accepted_at_ms);
    const char *params[] = {row->payment_id, row->tenant_id,
                            row->session_id, row->payer,
                            row->payee,      row->mode,
                            row->flow,       row->billing_mode,
                            row->rounding,   row->refund_unused ? "true" : "false",
                            minutes.text,    rate.text,
                            amount.text,     row->currency,
                            now.text,        row->success_url,
                            row->cancel_url, row->customer,
                            row->terms_url,  accepted.text};
    ppm_pg_result_t rc = PPM_PG_OK;
    /* Two checkouts of one session at once may pick the same seq: redo. */
    for (int attempt = 0; attempt < 5; attempt++) {
        PGresult *res = NULL;
        rc = ppm_pg_exec (
            pg,
            "WITH p AS (INSERT INTO payment.payments (payment_id, tenant_id, session_id, payer, "
            "payee, mode, flow, billing_mode, rounding, refund_unused, minutes, rate_per_minute, "
            "amount, currency, state, seq, created_at_ms, updated_at_ms, success_url, cancel_url, "
            "stripe_customer) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
            "$14, 'created', (SELECT coalesce(max(seq), 0) + 1 FROM payment.payments WHERE "
            "tenant_id = $2 AND session_id = $3), $15, $15, $16, $17, "
            "coalesce(nullif($18, ''), (SELECT stripe_customer FROM payment.customers WHERE "
            "tenant_id = $2 AND payer = $4 AND mode = $6), $18)) "
            "RETURNING seq, stripe_customer), "
            "c AS (INSERT INTO payment.consents (payment_id, tenant_id, session_id, payer, "
            "terms_url, accepted_at_ms) SELECT $1, $2, $3, $4, $19, $20 FROM p), "
            "t AS (INSERT INTO payment.transitions (payment_id, tenant_id, from_state, to_state, "
            "cause, at_ms) SELECT $1, $2, NULL, 'created', 'checkout: consent recorded', $15 "
            "FROM p) SELECT seq, stripe_customer FROM p",
            20, params, &res);
        if (rc == PPM_PG_OK) {
            row->seq = (int)s_int (res, 0, 0);
            s_copy (row->customer, sizeof row->customer, res, 0, 1);
            PQclear (res);
        }
        if (rc != PPM_PG_UNIQUE_VIOLATION)
            break;
    }
    return rc;
}

ppm_pg_result_t
payment_ledger_set_customer (ppm_pg_t *pg, const char *tenant, const char *payment_id,
                             const char *customer)
{
    const char *params[] = {tenant, payment_id, customer};
    return ppm_pg_exec (pg,
                        "UPDATE payment.payments SET stripe_customer = $3 WHERE tenant_id = $1 "
                        "AND payment_id = $2",
                        3, params, NULL);
}

ppm_pg_result_t
payment_ledger_next_confirm (ppm_pg_t *pg, const char *tenant, const char *payment_id, int *attempt)
{
    const char *params[] = {tenant, payment_id};
    PGresult *res = NULL;
    ppm_pg_result_t rc = ppm_pg_exec (pg,
                                      "UPDATE payment.payments SET confirm_attempts = "
                                      "confirm_attempts + 1 WHERE tenant_id = $1 AND payment_id = "
                                      "$2 RETURNING confirm_attempts",
                                      2, params, &res);
    if (rc != PPM_PG_OK)
        return rc;
    *attempt = PQntuples (res) > 0 ? (int)s_int (res, 0, 0) : 0;
    PQclear (res);
    return PPM_PG_OK;
}

/* ---- reads ------------------------------------------------------------------- */

ppm_pg_result_t
payment_ledger_get (ppm_pg_t *pg, const char *tenant, const char *payment_id, payment_row_t *row,
                    bool *found)
{
    const char *params[] = {tenant, payment_id};
    return s_one (pg, "SELECT " S_COLS "WHERE p.tenant_id = $1 AND p.payment_id = $2", 2, params,
                  row, found);
}

ppm_pg_result_t
payment_ledger_find_stripe (ppm_pg_t *pg, const char *tenant, const char *payment_intent,
                            const char *checkout_session, payment_row_t *row, bool *found)
{
    const char *params[] = {tenant, payment_intent ? payment_intent : "",
                            checkout_session ? checkout_session : ""};
    return s_one (pg,
                  "SELECT " S_COLS "WHERE p.tenant_id = $1 AND ((length($2) > 0 AND "
                  "p.stripe_payment_intent = $2) OR (length($3) > 0 AND "
                  "p.stripe_checkout_session = $3)) LIMIT 1",
                  3, params, row, found);
}

ppm_pg_result_t
payment_ledger_find_open (ppm_pg_t *pg, const char *tenant, const char *session_id,
                          const char *payer, payment_row_t *row, bool *found)
{
    const char *params[] = {tenant, session_id, payer};
    return s_one (pg,
                  "SELECT " S_COLS "WHERE p.tenant_id = $1 AND p.session_id = $2 AND p.payer = $3 "
                  "AND p.state IN ('created','pending','requires_action','failed') "
                  "ORDER BY p.seq DESC LIMIT 1",
                  3, params, row, found);
}

/* ---- apply --------------------------------------------------------------------- */

typedef struct {
    const char *tenant;
    const char *payment_id;
    payment_state_t to;
    const payment_change_t *change;
    bool changed;
    payment_row_t after;
} s_apply_t;

static ppm_pg_result_t
s_apply_tx (ppm_pg_t *pg, void *arg)
{
    s_apply_t *ctx = (s_apply_t *)arg;
    const payment_change_t *ch = ctx->change;
    ctx->changed = false;
    bool found = false;
    const char *key[] = {ctx->tenant, ctx->payment_id};
    ppm_pg_result_t rc = s_one (pg,
                                "SELECT " S_COLS "WHERE p.tenant_id = $1 AND p.payment_id = $2 "
                                "FOR UPDATE OF p",
                                2, key, &ctx->after, &found);
    if (rc != PPM_PG_OK)
        return rc;
    if (!found) {
        memset (&ctx->after, 0, sizeof ctx->after);
        return PPM_PG_OK;
    }
    payment_row_t *row = &ctx->after;
    payment_state_t from = row->state;
    row->previous = from;
    if (!payment_state_allowed (from, ctx->to))
        return PPM_PG_OK; /* a late or repeated fact: nothing to do */

    /* What would change? Only write when something does. */
    bool moved = from != ctx->to;
    int64_t captured = ch->captured >= 0 ? ch->captured : row->captured;
    if (captured > row->amount)
        captured = row->amount;
    int64_t refunded = row->refunded;
    if (ch->refunded > refunded)
        refunded = ch->refunded;
    if (refunded > captured)
        refunded = captured;
    bool dirty = moved || captured != row->captured || refunded != row->refunded ||
                 (ch->disputed && !row->disputed) ||
                 (ch->payment_intent && strcmp (ch->payment_intent, row->payment_intent)) ||
                 (ch->checkout_session && strcmp (ch->checkout_session, row->checkout_session)) ||
                 (ch->client_secret && strcmp (ch->client_secret, row->client_secret)) ||
                 (ch->checkout_url && strcmp (ch->checkout_url, row->checkout_url)) ||
                 (ch->failure_code && strcmp (ch->failure_code, row->failure_code));
    if (!dirty)
        return PPM_PG_OK;

    int64_t now = ppm_clock_now_ms ();
    s_num_t now_text = s_num (now);
    s_num_t cap_text = s_num (captured);
    s_num_t ref_text = s_num (refunded);
    /* One statement: the row, its transition and — the first time it is
       paid — the outbox row that funds the session. */
    bool fund =
        !row->funded && (ctx->to == PAYMENT_ST_AUTHORIZED || ctx->to == PAYMENT_ST_SUCCEEDED);
    const char *params[] = {ctx->tenant,
                            ctx->payment_id,
                            payment_state_name (ctx->to),
                            cap_text.text,
                            ref_text.text,
                            ch->disputed ? "true" : "false",
                            ch->payment_intent,
                            ch->checkout_session,
                            ch->client_secret,
                            ch->checkout_url,
                            ch->failure_code,
                            ch->failure_message,
                            now_text.text,
                            payment_state_name (from),
                            ch->cause ? ch->cause : "unspecified",
                            ch->request_id && *ch->request_id ? ch->request_id : NULL,
                            ch->event_id,
                            fund ? "true" : "false"};
    rc = ppm_pg_exec (
        pg,
        "WITH u AS (UPDATE payment.payments SET state = $3, captured = $4, refunded = $5, "
        "disputed = disputed OR $6::boolean, "
        "stripe_payment_intent = coalesce($7, stripe_payment_intent), "
        "stripe_checkout_session = coalesce($8, stripe_checkout_session), "
        "client_secret = coalesce($9, client_secret), checkout_url = coalesce($10, checkout_url), "
        "failure_code = coalesce($11, failure_code), "
        "failure_message = coalesce($12, failure_message), updated_at_ms = $13, "
        "funded = funded OR $18::boolean "
        "WHERE tenant_id = $1 AND payment_id = $2 "
        "RETURNING session_id, minutes, amount, currency), "
        "t AS (INSERT INTO payment.transitions (payment_id, tenant_id, from_state, to_state, "
        "cause, stripe_request_id, event_id, at_ms) SELECT $2, $1, $14, $3, $15, $16, $17, "
        "$13::bigint FROM u) "
        "INSERT INTO payment.outbox (tenant_id, payment_id, session_id, minutes, amount, "
        "currency, next_attempt_ms, created_at_ms) SELECT $1, $2, session_id, minutes, amount, "
        "currency, $13::bigint, $13::bigint FROM u WHERE $18::boolean "
        "ON CONFLICT (payment_id) DO NOTHING",
        18, params, NULL);
    if (rc != PPM_PG_OK)
        return rc;
    if (fund)
        row->funded = true;
    row->state = ctx->to;
    row->captured = captured;
    row->refunded = refunded;
    row->disputed = row->disputed || ch->disputed;
    if (ch->payment_intent)
        snprintf (row->payment_intent, sizeof row->payment_intent, "%s", ch->payment_intent);
    if (ch->checkout_session)
        snprintf (row->checkout_session, sizeof row->checkout_session, "%s", ch->checkout_session);
    if (ch->client_secret)
        snprintf (row->client_secret, sizeof row->client_secret, "%s", ch->client_secret);
    if (ch->checkout_url)
        snprintf (row->checkout_url, sizeof row->checkout_url, "%s", ch->checkout_url);
    if (ch->failure_code)
        snprintf (row->failure_code, sizeof row->failure_code, "%s", ch->failure_code);
    if (ch->failure_message)
        snprintf (row->failure_message, sizeof row->failure_message, "%s", ch->failure_message);
    row->updated_at_ms = now;
    ctx->changed = true;
    return PPM_PG_OK;
}

ppm_pg_result_t
payment_ledger_apply (ppm_pg_t *pg, const char *tenant, const char *payment_id, payment_state_t to,
                      const payment_change_t *change, bool *changed, payment_row_t *after)
{
    s_apply_t *ctx = (s_apply_t *)calloc (1, sizeof (s_apply_t));
    if (!ctx)
        return PPM_PG_ERROR;
    ctx->tenant = tenant;
    ctx->payment_id = payment_id;
    ctx->to = to;
    ctx->change = change;
    ppm_pg_result_t rc = ppm_pg_transaction (pg, PPM_PG_READ_COMMITTED, 3, s_apply_tx, ctx);
    if (changed)
        *changed = rc == PPM_PG_OK && ctx->changed;
    if (after)
        *after = ctx->after;
    free (ctx);
    return rc;
}

/* ---- customers ------------------------------------------------------------------ */

ppm_pg_result_t
payment_ledger_customer_get (ppm_pg_t *pg, const char *tenant, const char *payer, const char *mode,
                             char *customer, size_t size, bool *found)
{
    const char *params[] = {tenant, payer, mode};
    PGresult *res = NULL;
    *found = false;
    customer[0] = '\0';
    ppm_pg_result_t rc = ppm_pg_exec (pg,
                                      "SELECT stripe_customer FROM payment.customers WHERE "
                                      "tenant_id = $1 AND payer = $2 AND mode = $3",
                                      3, params, &res);
    if (rc != PPM_PG_OK)
        return rc;
    if (PQntuples (res) > 0) {
        s_copy (customer, size, res, 0, 0);
        *found = true;
    }
    PQclear (res);
    return PPM_PG_OK;
}

ppm_pg_result_t
payment_ledger_customer_put (ppm_pg_t *pg, const char *tenant, const char *payer, const char *mode,
                             char *customer, size_t size)
{
    s_num_t now = s_num (ppm_clock_now_ms ());
    const char *params[] = {tenant, payer, mode, customer, now.text};
    ppm_pg_result_t rc = ppm_pg_exec (pg,
                                      "INSERT INTO payment.customers (tenant_id, payer, mode, "
                                      "stripe_customer, created_at_ms) VALUES ($1, $2, $3, $4, "
                                      "$5) ON CONFLICT DO NOTHING",
                                      5, params, NULL);
    if (rc != PPM_PG_OK)
        return rc;
    bool found = false;
    return payment_ledger_customer_get (pg, tenant, payer, mode, customer, size, &found);
}

/* ---- records ----------------------------------------------------------------------- */

ppm_pg_result_t
payment_ledger_stripe_call (ppm_pg_t *pg, const char *tenant, const char *payment_id,
                            const char *what, const char *idempotency_key, int http_status,
                            const char *request_id, bool replayed)
{
    s_num_t status = s_num (http_status);
    s_num_t now = s_num (ppm_clock_now_ms ());
    const char *params[] = {tenant,
                            payment_id,
                            what,
                            idempotency_key,
                            status.text,
                            request_id && *request_id ? request_id : NULL,
                            replayed ? "true" : "false",
                            now.text};
    return ppm_pg_exec (pg,
                        "INSERT INTO payment.stripe_requests (tenant_id, payment_id, what, "
                        "idempotency_key, http_status, request_id, replayed, at_ms) VALUES ($1, "
                        "$2, $3, $4, $5, $6, $7, $8)",
                        8, params, NULL);
}

ppm_pg_result_t
payment_ledger_capture (ppm_pg_t *pg, const char *tenant, const char *payment_id, int64_t amount,
                        const char *request_id)
{
    s_num_t value = s_num (amount);
    s_num_t now = s_num (ppm_clock_now_ms ());
    const char *params[] = {payment_id, tenant, value.text, request_id, now.text};
    return ppm_pg_exec (pg,
                        "INSERT INTO payment.captures (payment_id, tenant_id, amount, "
                        "stripe_request_id, at_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO "
                        "NOTHING",
                        5, params, NULL);
}

ppm_pg_result_t
payment_ledger_refund (ppm_pg_t *pg, const char *tenant, const char *payment_id,
                       const char *refund_id, int64_t amount, const char *status,
                       const char *reason, const char *request_id)
{
    s_num_t value = s_num (amount);
    s_num_t now = s_num (ppm_clock_now_ms ());
    const char *params[] = {refund_id, payment_id, tenant,     value.text,
                            status,    reason,     request_id, now.text};
    return ppm_pg_exec (pg,
                        "INSERT INTO payment.refunds (refund_id, payment_id, tenant_id, amount, "
                        "status, reason, stripe_request_id, at_ms) VALUES ($1, $2, $3, $4, $5, "
                        "$6, $7, $8) ON CONFLICT (refund_id) DO UPDATE SET status = "
                        "EXCLUDED.status",
                        8, params, NULL);
}

ppm_pg_result_t
payment_ledger_dispute (ppm_pg_t *pg, const char *tenant, const char *payment_id,
                        const char *dispute_id, const char *charge, const char *reason,
                        const char *status, int64_t amount, bool *is_new)
{
    s_num_t value = s_num (amount);
    s_num_t now = s_num (ppm_clock_now_ms ());
    const char *params[] = {dispute_id, payment_id, tenant,     charge,
                            reason,     status,     value.text, now.text};
    PGresult *res = NULL;
    ppm_pg_result_t rc = ppm_pg_exec (pg,
                                      "INSERT INTO payment.disputes (dispute_id, payment_id, "
                                      "tenant_id, charge, reason, status, amount, at_ms) VALUES "
                                      "($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING "
                                      "RETURNING dispute_id",
                                      8, params, &res);
    if (rc != PPM_PG_OK)
        return rc;
    *is_new = PQntuples (res) > 0;
    PQclear (res);
    return PPM_PG_OK;
}

ppm_pg_result_t
payment_ledger_event_begin (ppm_pg_t *pg, const char *tenant, const char *event_id,
                            const char *type, bool *seen)
{
    s_num_t now = s_num (ppm_clock_now_ms ());
    const char *params[] = {tenant, event_id, type, now.text};
    PGresult *res = NULL;
    ppm_pg_result_t rc = ppm_pg_exec (pg,
                                      "INSERT INTO payment.webhook_events (tenant_id, event_id, "
                                      "type, received_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT "
                                      "(tenant_id, event_id) DO UPDATE SET received_at_ms = "
                                      "EXCLUDED.received_at_ms WHERE "
                                      "webhook_events.processed_at_ms IS NULL AND "
                                      "webhook_events.received_at_ms < EXCLUDED.received_at_ms - "
                                      "30000 RETURNING true",
                                      4, params, &res);
    if (rc != PPM_PG_OK)
        return rc;
    /* New, or an earlier delivery that was never processed (and is not
       being processed now): ours to process. Otherwise a duplicate. */
    *seen = PQntuples (res) == 0;
    PQclear (res);
    return PPM_PG_OK;
}

ppm_pg_result_t
payment_ledger_event_done (ppm_pg_t *pg, const char *tenant, const char *event_id,
                           const char *outcome)
{
    s_num_t now = s_num (ppm_clock_now_ms ());
    const char *params[] = {tenant, event_id, now.text, outcome};
    return ppm_pg_exec (pg,
                        "UPDATE payment.webhook_events SET processed_at_ms = $3, outcome = $4 "
                        "WHERE tenant_id = $1 AND event_id = $2",
                        4, params, NULL);
}

ppm_pg_result_t
payment_ledger_session_payments (ppm_pg_t *pg, const char *tenant, const char *session_id,
                                 payment_row_t **rows, size_t *count)
{
    const char *params[] = {tenant, session_id};
    return s_rows (pg,
                   "SELECT " S_COLS "WHERE p.tenant_id = $1 AND p.session_id = $2 ORDER BY p.seq",
                   2, params, rows, count);
}

/* ---- settlements ------------------------------------------------------------------- */

ppm_pg_result_t
payment_ledger_settle_begin (ppm_pg_t *pg, const char *tenant, const char *session_id,
                             int64_t used_ms, const char *reason, payment_settlement_t *out)
{
    memset (out, 0, sizeof *out);
    s_num_t used = s_num (used_ms);
    s_num_t now = s_num (ppm_clock_now_ms ());
    const char *params[] = {tenant, session_id, used.text, reason ? reason : "", now.text};
    ppm_pg_result_t rc = ppm_pg_exec (pg,
                                      "INSERT INTO payment.settlements (tenant_id, session_id, "
                                      "used_ms, reason, created_at_ms) VALUES ($1, $2, $3, $4, "
                                      "$5) ON CONFLICT DO NOTHING",
                                      5, params, NULL);
    if (rc != PPM_PG_OK)
        return rc;
    PGresult *res = NULL;
    rc = ppm_pg_exec (pg,
                      "SELECT used_ms, done, charged, refunded, released, currency FROM "
                      "payment.settlements WHERE tenant_id = $1 AND session_id = $2",
                      2, params, &res);
    if (rc != PPM_PG_OK)
        return rc;
    if (PQntuples (res) > 0) {
        out->used_ms = s_int (res, 0, 0);
        out->done = s_bool (res, 0, 1);
        out->charged = s_int (res, 0, 2);
        out->refunded = s_int (res, 0, 3);
        out->released = s_int (res, 0, 4);
        s_copy (out->currency, sizeof out->currency, res, 0, 5);
    }
    PQclear (res);
    return PPM_PG_OK;
}

ppm_pg_result_t
payment_ledger_settle_done (ppm_pg_t *pg, const char *tenant, const char *session_id,
                            const payment_settlement_t *result)
{
    s_num_t charged = s_num (result->charged);
    s_num_t refunded = s_num (result->refunded);
    s_num_t released = s_num (result->released);
    s_num_t now = s_num (ppm_clock_now_ms ());
    const char *params[] = {tenant,        session_id,       charged.text, refunded.text,
                            released.text, result->currency, now.text};
    return ppm_pg_exec (pg,
                        "UPDATE payment.settlements SET done = true, charged = $3, refunded = "
                        "$4, released = $5, currency = $6, done_at_ms = $7 WHERE tenant_id = $1 "
                        "AND session_id = $2 AND NOT done",
                        7, params, NULL);
}

/* ---- outbox ----------------------------------------------------------------------- */

ppm_pg_result_t
payment_ledger_outbox_due (ppm_pg_t *pg, int64_t now_ms, payment_outbox_t *rows, size_t max,
                           size_t *count)
{
    *count = 0;
    s_num_t now = s_num (now_ms);
    s_num_t limit = s_num ((int64_t)max);
    const char *params[] = {now.text, limit.text};
    PGresult *res = NULL;
    ppm_pg_result_t rc = ppm_pg_exec (pg,
                                      "SELECT id, tenant_id, payment_id, session_id, minutes, "
                                      "amount, currency, attempts FROM payment.outbox WHERE "
                                      "delivered_at_ms IS NULL AND next_attempt_ms <= $1 ORDER "
                                      "BY id LIMIT $2",
                                      2, params, &res);
    if (rc != PPM_PG_OK)
        return rc;
    int n = PQntuples (res);
    for (int i = 0; i < n && (size_t)i < max; i++) {
        payment_outbox_t *row = &rows[i];
        row->id = s_int (res, i, 0);
        s_copy (row->tenant_id, sizeof row->tenant_id, res, i, 1);
        s_copy (row->payment_id, sizeof row->payment_id, res, i, 2);
        s_copy (row->session_id, sizeof row->session_id, res, i, 3);
        row->minutes = s_int (res, i, 4);
        row->amount = s_int (res, i, 5);
        s_copy (row->currency, sizeof row->currency, res, i, 6);
        row->attempts = (int)s_int (res, i, 7);
        (*count)++;
    }
    PQclear (res);
    return PPM_PG_OK;
}

ppm_pg_result_t
payment_ledger_outbox_delivered (ppm_pg_t *pg, int64_t id, const char *outcome)
{
    s_num_t key = s_num (id);
    s_num_t now = s_num (ppm_clock_now_ms ());
    const char *params[] = {key.text, now.text, outcome};
    return ppm_pg_exec (pg,
                        "UPDATE payment.outbox SET delivered_at_ms = $2, outcome = $3, attempts "
                        "= attempts + 1 WHERE id = $1",
                        3, params, NULL);
}

ppm_pg_result_t
payment_ledger_outbox_retry (ppm_pg_t *pg, int64_t id, int64_t next_ms, const char *error)
{
    s_num_t key = s_num (id);
    s_num_t next = s_num (next_ms);
    const char *params[] = {key.text, next.text, error};
    return ppm_pg_exec (pg,
                        "UPDATE payment.outbox SET next_attempt_ms = $2, outcome = $3, attempts "
                        "= attempts + 1 WHERE id = $1",
                        3, params, NULL);
}

static ppm_pg_result_t
s_count (ppm_pg_t *pg, const char *sql, int nparams, const char *const *params, int64_t *count)
{
    PGresult *res = NULL;
    *count = 0;
    ppm_pg_result_t rc = ppm_pg_exec (pg, sql, nparams, params, &res);
    if (rc != PPM_PG_OK)
        return rc;
    *count = s_int (res, 0, 0);
    PQclear (res);
    return PPM_PG_OK;
}

ppm_pg_result_t
payment_ledger_outbox_pending (ppm_pg_t *pg, int64_t *count)
{
    return s_count (pg, "SELECT count(*) FROM payment.outbox WHERE delivered_at_ms IS NULL", 0,
                    NULL, count);
}

ppm_pg_result_t
payment_ledger_count_state (ppm_pg_t *pg, const char *tenant, payment_state_t state, int64_t *count)
{
    const char *params[] = {tenant ? tenant : "", payment_state_name (state)};
    return s_count (pg,
                    "SELECT count(*) FROM payment.payments WHERE ($1 = '' OR tenant_id = $1) AND "
                    "state = $2",
                    2, params, count);
}

ppm_pg_result_t
payment_ledger_unresolved (ppm_pg_t *pg, const char *tenant, int64_t before_ms,
                           payment_row_t **rows, size_t *count)
{
    s_num_t before = s_num (before_ms);
    const char *params[] = {tenant ? tenant : "", before.text};
    return s_rows (pg,
                   "SELECT " S_COLS "WHERE ($1 = '' OR p.tenant_id = $1) AND p.state IN "
                   "('created','pending','requires_action','failed') AND p.updated_at_ms <= $2 "
                   "ORDER BY p.updated_at_ms LIMIT 500",
                   2, params, rows, count);
}

ppm_pg_result_t
payment_ledger_unreturned (ppm_pg_t *pg, const char *tenant, int64_t before_ms,
                           payment_row_t **rows, size_t *count)
{
    s_num_t before = s_num (before_ms);
    const char *params[] = {tenant ? tenant : "", before.text};
    return s_rows (pg,
                   "SELECT " S_COLS "WHERE ($1 = '' OR p.tenant_id = $1) AND "
                   "o.outcome LIKE 'refused%' AND "
                   "(p.state = 'authorized' OR (p.state IN ('succeeded','refunded') AND "
                   "p.refunded < p.captured)) AND p.updated_at_ms <= $2 "
                   "ORDER BY p.updated_at_ms LIMIT 500",
                   2, params, rows, count);
}

/* ---- queries ------------------------------------------------------------------------ */

ppm_pg_result_t
payment_ledger_list (ppm_pg_t *pg, const char *tenant, const payment_filter_t *filter,
                     const char *cursor, int limit, payment_row_t **rows, size_t *count,
                     char *next_cursor, size_t next_size)
{
    next_cursor[0] = '\0';
    int64_t cursor_ms = INT64_MAX;
    char cursor_id[40] = "~";
    if (cursor && *cursor) {
        char *end = NULL;
        long long ms = strtoll (cursor, &end, 10);
        if (!end || *end != ':' || strlen (end + 1) >= sizeof cursor_id || ms < 0)
            return PPM_PG_CONSTRAINT;
        cursor_ms = ms;
        snprintf (cursor_id, sizeof cursor_id, "%s", end + 1);
    }
    s_num_t cms = s_num (cursor_ms);
    s_num_t lim = s_num (limit + 1);
    s_num_t from = s_num (filter ? filter->from_ms : 0);
    s_num_t to = s_num (filter && filter->to_ms > 0 ? filter->to_ms : INT64_MAX);
    const char *params[] = {tenant,
                            cms.text,
                            cursor_id,
                            filter && filter->session_id ? filter->session_id : "",
                            filter && filter->payee ? filter->payee : "",
                            filter && filter->payer ? filter->payer : "",
                            from.text,
                            to.text,
                            lim.text};
    ppm_pg_result_t rc = s_rows (pg,
                                 "SELECT " S_COLS "WHERE p.tenant_id = $1 AND "
                                 "(p.created_at_ms, p.payment_id) < ($2::bigint, $3) AND "
                                 "($4 = '' OR p.session_id = $4) AND ($5 = '' OR p.payee = $5) "
                                 "AND ($6 = '' OR p.payer = $6) AND p.created_at_ms >= $7 AND "
                                 "p.created_at_ms < $8 ORDER BY p.created_at_ms DESC, "
                                 "p.payment_id DESC LIMIT $9",
                                 9, params, rows, count);
    if (rc != PPM_PG_OK)
        return rc;
    if (*count > (size_t)limit) {
        *count = (size_t)limit;
        const payment_row_t *last = &(*rows)[limit - 1];
        snprintf (next_cursor, next_size, "%" PRId64 ":%s", last->created_at_ms, last->payment_id);
    }
    return PPM_PG_OK;
}

ppm_pg_result_t
payment_ledger_session_totals (ppm_pg_t *pg, const char *tenant, const char *session_id,
                               payment_totals_t *out)
{
    memset (out, 0, sizeof *out);
    const char *params[] = {tenant, session_id};
    PGresult *res = NULL;
    ppm_pg_result_t rc = ppm_pg_exec (
        pg,
        "SELECT coalesce(max(currency), ''), "
        "coalesce(sum(minutes) FILTER (WHERE state IN ('authorized','succeeded','refunded')), 0), "
        "coalesce(sum(amount) FILTER (WHERE state IN ('authorized','succeeded','refunded')), 0), "
        "coalesce(sum(captured), 0), coalesce(sum(refunded), 0), count(*), "
        "(SELECT done FROM payment.settlements s WHERE s.tenant_id = $1 AND s.session_id = $2), "
        "(SELECT used_ms FROM payment.settlements s WHERE s.tenant_id = $1 AND s.session_id = $2) "
        "FROM payment.payments WHERE tenant_id = $1 AND session_id = $2",
        2, params, &res);
    if (rc != PPM_PG_OK)
        return rc;
    s_copy (out->currency, sizeof out->currency, res, 0, 0);
    out->minutes_bought = s_int (res, 0, 1);
    out->amount_paid = s_int (res, 0, 2);
    out->charged = s_int (res, 0, 3);
    out->refunded = s_int (res, 0, 4);
    out->payments = s_int (res, 0, 5);
    out->settled = s_bool (res, 0, 6);
    out->used_ms = s_int (res, 0, 7);
    PQclear (res);
    return PPM_PG_OK;
}

ppm_pg_result_t
payment_ledger_earnings (ppm_pg_t *pg, const char *tenant, const char *payee, int64_t from_ms,
                         int64_t to_ms, payment_earnings_t **rows, size_t *count)
{
    *rows = NULL;
    *count = 0;
    s_num_t from = s_num (from_ms);
    s_num_t to = s_num (to_ms > 0 ? to_ms : INT64_MAX);
    const char *params[] = {tenant, payee ? payee : "", from.text, to.text};
    PGresult *res = NULL;
    ppm_pg_result_t rc = ppm_pg_exec (
        pg,
        "SELECT payee, currency, count(*), coalesce(sum(minutes), 0), coalesce(sum(captured), 0), "
        "coalesce(sum(refunded), 0) FROM payment.payments WHERE tenant_id = $1 AND ($2 = '' OR "
        "payee = $2) AND created_at_ms >= $3 AND created_at_ms < $4 AND state IN "
        "('authorized','succeeded','refunded') GROUP BY payee, currency ORDER BY payee, currency "
        "LIMIT 10000",
        4, params, &res);
    if (rc != PPM_PG_OK)
        return rc;
    int n = PQntuples (res);
    if (n > 0) {
        *rows = (payment_earnings_t *)calloc ((size_t)n, sizeof (payment_earnings_t));
        if (!*rows) {
            PQclear (res);
            return PPM_PG_ERROR;
        }
    }
    for (int i = 0; i < n; i++) {
        payment_earnings_t *row = &(*rows)[i];
        s_copy (row->payee, sizeof row->payee, res, i, 0);
        s_copy (row->currency, sizeof row->currency, res, i, 1);
        row->payments = s_int (res, i, 2);
        row->minutes = s_int (res, i, 3);
        row->charged = s_int (res, i, 4);
        row->refunded = s_int (res, i, 5);
    }
    *count = (size_t)n;
    PQclear (res);
    return PPM_PG_OK;
}
