/*  metering_db: see metering_db.h. Every statement is parameterized; the
    batch upsert passes one array literal per column (built from validated
    ids and numbers, quoted and escaped as array elements) and unnests them.
*/
#include "metering_db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ppm_log.h"
#include "ppm_migrate.h"

static const char s_schema_v1[] =
    "CREATE SCHEMA IF NOT EXISTS metering;"
    "CREATE TABLE metering.sessions ("
    "  session_id text PRIMARY KEY,"
    "  tenant_id text NOT NULL,"
    "  payer text NOT NULL,"
    "  payee text NOT NULL,"
    "  kind int NOT NULL,"
    "  state int NOT NULL,"
    "  seq bigint NOT NULL,"
    "  flags bigint NOT NULL,"
    "  rate bigint NOT NULL,"
    "  currency text NOT NULL,"
    "  marks text NOT NULL,"
    "  grace_s bigint NOT NULL,"
    "  ttl_s bigint NOT NULL,"
    "  max_min bigint NOT NULL,"
    "  funded_ms bigint NOT NULL,"
    "  trial_ms bigint NOT NULL,"
    "  paid_amount bigint NOT NULL,"
    "  used_ms bigint NOT NULL,"
    "  anchor_ms bigint NOT NULL,"
    "  heartbeat_ms bigint NOT NULL,"
    "  warn_idx bigint NOT NULL,"
    "  ended_ms bigint NOT NULL,"
    "  end_reason int NOT NULL,"
    "  finalized boolean NOT NULL,"
    "  created_ms bigint NOT NULL,"
    "  updated_ms bigint NOT NULL,"
    "  quote_id text NOT NULL DEFAULT '',"
    "  settings_version bigint NOT NULL DEFAULT 0);"
    "CREATE INDEX sessions_tenant_newest ON metering.sessions (tenant_id, session_id DESC);"
    "CREATE INDEX sessions_payer_open ON metering.sessions (tenant_id, payer) WHERE state IN "
    "(1, 2, 3);"
    "CREATE INDEX sessions_unfinished ON metering.sessions (session_id) WHERE NOT finalized;"
    "CREATE TABLE metering.payments ("
    "  payment_id text PRIMARY KEY,"
    "  tenant_id text NOT NULL,"
    "  session_id text NOT NULL,"
    "  minutes bigint NOT NULL,"
    "  added_ms bigint NOT NULL,"
    "  amount bigint NOT NULL,"
    "  currency text NOT NULL,"
    "  applied_ms bigint NOT NULL);"
    "CREATE INDEX payments_session ON metering.payments (session_id);"
    "CREATE TABLE metering.trials ("
    "  tenant_id text NOT NULL,"
    "  payer text NOT NULL,"
    "  payee text NOT NULL,"
    "  used_ms bigint NOT NULL,"
    "  PRIMARY KEY (tenant_id, payer, payee));"
    "CREATE TABLE metering.settlements ("
    "  session_id text PRIMARY KEY,"
    "  tenant_id text NOT NULL,"
    "  used_ms bigint NOT NULL,"
    "  paid_used_ms bigint NOT NULL,"
    "  billed_amount bigint NOT NULL,"
    "  currency text NOT NULL,"
    "  ended_ms bigint NOT NULL,"
    "  reason text NOT NULL,"
    "  attempts int NOT NULL DEFAULT 0,"
    "  next_attempt_ms bigint NOT NULL,"
    "  acked_ms bigint,"
    "  created_ms bigint NOT NULL);"
    "CREATE INDEX settlements_due ON metering.settlements (next_attempt_ms) WHERE acked_ms IS "
    "NULL;";

static const ppm_migration_t s_migrations[] = {
    {1, "sessions, payments, trials, settlements", s_schema_v1},
};

int
metering_db_migrate (ppm_pg_t *pg, const char **error)
{
    return ppm_migrate (pg, "metering", s_migrations, 1, error);
}

#define COLS                                                                                       \
    "session_id, tenant_id, payer, payee, kind, state, seq, flags, rate, currency, marks, "        \
    "grace_s, ttl_s, max_min, funded_ms, trial_ms, paid_amount, used_ms, anchor_ms, "              \
    "heartbeat_ms, warn_idx, ended_ms, end_reason, finalized, created_ms, updated_ms"
#define NCOLS 26

static const char s_upsert[] =
    "INSERT INTO metering.sessions (" COLS ") SELECT * FROM unnest($1::text[], $2::text[], "
    "$3::text[], $4::text[], $5::int[], $6::int[], $7::bigint[], $8::bigint[], $9::bigint[], "
    "$10::text[], $11::text[], $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], "
    "$16::bigint[], $17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::bigint[], "
    "$22::bigint[], $23::int[], $24::boolean[], $25::bigint[], $26::bigint[]) "
    "ON CONFLICT (session_id) DO UPDATE SET state = EXCLUDED.state, seq = EXCLUDED.seq, "
    "flags = EXCLUDED.flags, funded_ms = EXCLUDED.funded_ms, trial_ms = EXCLUDED.trial_ms, "
    "paid_amount = EXCLUDED.paid_amount, used_ms = EXCLUDED.used_ms, "
    "anchor_ms = EXCLUDED.anchor_ms, heartbeat_ms = EXCLUDED.heartbeat_ms, "
    "warn_idx = EXCLUDED.warn_idx, ended_ms = EXCLUDED.ended_ms, "
    "end_reason = EXCLUDED.end_reason, finalized = metering.sessions.finalized OR "
    "EXCLUDED.finalized, updated_ms = EXCLUDED.updated_ms "
    "WHERE metering.sessions.seq < EXCLUDED.seq OR (metering.sessions.seq = EXCLUDED.seq AND "
    "EXCLUDED.finalized AND NOT metering.sessions.finalized)";

/* A growing array literal: {"a","b"} or {1,2}. */
typedef struct {
    char *text;  /* the literal */
    size_t size; /* its length */
    FILE *f;     /* open_memstream writer */
    bool first;  /* no element written yet */
} s_array_t;

static void
s_array_open (s_array_t *a)
{
    a->text = NULL;
    a->size = 0;
    a->f = open_memstream (&a->text, &a->size);
    a->first = true;
    if (a->f)
        fputc ('{', a->f);
}

static void
s_array_text (s_array_t *a, const char *value)
{
    if (!a->f)
        return;
    fputs (a->first ? "\"" : ",\"", a->f);
    for (const char *p = value; *p; p++) {
        if (*p == '"' || *p == '\\')
            fputc ('\\', a->f);
        fputc (*p, a->f);
    }
    fputc ('"', a->f);
    a->first = false;
}

static void
s_array_int (s_array_t *a, int64_t value)
{
    if (!a->f)
        return;
    fprintf (a->f, a->first ? "%lld" : ",%lld", (long long)value);
    a->first = false;
}

static void
s_array_bool (s_array_t *a, bool value)
{
    if (!a->f)
        return;
    fputs (a->first ? "" : ",", a->f);
    fputs (value ? "t" : "f", a->f);
    a->first = false;
}

static int
s_array_close (s_array_t *a)
{
    if (!a->f)
        return -1;
    fputc ('}', a->f);
    fclose (a->f);
    a->f = NULL;
    return a->text ? 0 : -1;
}

static int
s_log (ppm_pg_t *pg, ppm_pg_result_t rc, const char *what)
{
    if (rc == PPM_PG_OK)
        return 0;
    ppm_log_warn ("metering: postgres %s: %s %s", what, ppm_pg_result_name (rc), ppm_pg_error (pg));
    return -1;
}

int
metering_db_save (ppm_pg_t *pg, size_t n, const metering_snap_t *const *snaps, int64_t now_ms)
{
    if (n == 0)
        return 0;
    s_array_t a[NCOLS];
    for (int c = 0; c < NCOLS; c++)
        s_array_open (&a[c]);
    for (size_t i = 0; i < n; i++) {
        const metering_snap_t *s = snaps[i];
        int c = 0;
        s_array_text (&a[c++], s->session_id);
        s_array_text (&a[c++], s->tenant);
        s_array_text (&a[c++], s->payer);
        s_array_text (&a[c++], s->payee);
        s_array_int (&a[c++], s->kind);
        s_array_int (&a[c++], s->state);
        s_array_int (&a[c++], (int64_t)s->seq);
        s_array_int (&a[c++], s->flags);
        s_array_int (&a[c++], s->rate);
        s_array_text (&a[c++], s->currency);
        s_array_text (&a[c++], s->marks_text);
        s_array_int (&a[c++], s->grace_s);
        s_array_int (&a[c++], s->ttl_s);
        s_array_int (&a[c++], s->max_min);
        s_array_int (&a[c++], s->funded_ms);
        s_array_int (&a[c++], s->trial_ms);
        s_array_int (&a[c++], s->paid_amount);
        s_array_int (&a[c++], s->used_ms);
        s_array_int (&a[c++], s->anchor_ms);
        s_array_int (&a[c++], s->heartbeat_ms);
        s_array_int (&a[c++], s->warn_idx);
        s_array_int (&a[c++], s->ended_ms);
        s_array_int (&a[c++], s->end_reason);
        s_array_bool (&a[c++], s->finalized);
        s_array_int (&a[c++], metering_sid_created_ms (s->session_id));
        s_array_int (&a[c++], now_ms);
    }
    const char *params[NCOLS];
    int bad = 0;
    for (int c = 0; c < NCOLS; c++) {
        bad |= s_array_close (&a[c]);
        params[c] = a[c].text;
    }
    int rc = -1;
    if (!bad)
        rc = s_log (pg, ppm_pg_exec (pg, s_upsert, NCOLS, params, NULL), "save");
    for (int c = 0; c < NCOLS; c++)
        free (a[c].text);
    return rc;
}

int
metering_db_create (ppm_pg_t *pg, const metering_snap_t *snap, const char *quote_id,
                    int64_t settings_version, int64_t now_ms)
{
    const metering_snap_t *one[] = {snap};
    if (metering_db_save (pg, 1, one, now_ms))
        return -1;
    char ver[24];
    snprintf (ver, sizeof ver, "%lld", (long long)settings_version);
    const char *params[] = {snap->session_id, quote_id ? quote_id : "", ver};
    return s_log (pg,
                  ppm_pg_exec (pg,
                               "UPDATE metering.sessions SET quote_id = $2, settings_version = "
                               "$3::bigint WHERE session_id = $1",
                               3, params, NULL),
                  "create");
}

static int64_t
s_cell (PGresult *res, int row, int col)
{
    const char *v = PQgetvalue (res, row, col);
    return v ? strtoll (v, NULL, 10) : 0;
}

int
metering_db_concurrent (ppm_pg_t *pg, const char *tenant, const char *payer, int64_t *count)
{
    const char *params[] = {tenant, payer};
    PGresult *res = NULL;
    if (s_log (pg,
               ppm_pg_exec (pg,
                            "SELECT count(*) FROM metering.sessions WHERE tenant_id = $1 AND "
                            "payer = $2 AND state IN (1, 2, 3) AND (flags & 1) = 1",
                            2, params, &res),
               "concurrent"))
        return -1;
    *count = s_cell (res, 0, 0);
    PQclear (res);
    return 0;
}

int
metering_db_trial_grant (ppm_pg_t *pg, const char *tenant, const char *payer, const char *payee,
                         int64_t allowance_ms, int64_t *grant_ms)
{
    char allow[24];
    snprintf (allow, sizeof allow, "%lld", (long long)allowance_ms);
    const char *params[] = {tenant, payer, payee, allow};
    *grant_ms = 0;
    if (s_log (pg,
               ppm_pg_exec (pg,
                            "INSERT INTO metering.trials (tenant_id, payer, payee, used_ms) "
                            "VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
                            3, params, NULL),
               "trial"))
        return -1;
    PGresult *res = NULL;
    if (s_log (pg,
               ppm_pg_exec (pg,
                            "WITH old AS (SELECT used_ms FROM metering.trials WHERE tenant_id = "
                            "$1 AND payer = $2 AND payee = $3 FOR UPDATE) "
                            "UPDATE metering.trials t SET used_ms = GREATEST(old.used_ms, "
                            "$4::bigint) FROM old WHERE t.tenant_id = $1 AND t.payer = $2 AND "
                            "t.payee = $3 RETURNING GREATEST(0, $4::bigint - old.used_ms)",
                            4, params, &res),
               "trial"))
        return -1;
    if (PQntuples (res) == 1)
        *grant_ms = s_cell (res, 0, 0);
    PQclear (res);
    return 0;
}

int
metering_db_trial_refund (ppm_pg_t *pg, const char *tenant, const char *payer, const char *payee,
                          int64_t unused_ms)
{
    char unused[24];
    snprintf (unused, sizeof unused, "%lld", (long long)unused_ms);
    const char *params[] = {tenant, payer, payee, unused};
    return s_log (pg,
                  ppm_pg_exec (pg,
                               "UPDATE metering.trials SET used_ms = GREATEST(0, used_ms - "
                               "$4::bigint) WHERE tenant_id = $1 AND payer = $2 AND payee = $3",
                               4, params, NULL),
                  "trial refund");
}

int
metering_db_payment_session (ppm_pg_t *pg, const char *payment_id, char *sid, size_t size)
{
    const char *params[] = {payment_id};
    PGresult *res = NULL;
    if (s_log (pg,
               ppm_pg_exec (pg, "SELECT session_id FROM metering.payments WHERE payment_id = $1", 1,
                            params, &res),
               "payment"))
        return -1;
    int found = PQntuples (res) == 1;
    if (found)
        snprintf (sid, size, "%s", PQgetvalue (res, 0, 0));
    PQclear (res);
    return found;
}

typedef struct {
    const metering_snap_t *snap;
    const char *params[8];
    int64_t now_ms;
} s_payment_tx_t;

static ppm_pg_result_t
s_payment_tx (ppm_pg_t *pg, void *arg)
{
    s_payment_tx_t *tx = arg;
    ppm_pg_result_t rc = ppm_pg_exec (
        pg,
        "INSERT INTO metering.payments (payment_id, tenant_id, session_id, minutes, added_ms, "
        "amount, currency, applied_ms) VALUES ($1, $2, $3, $4::bigint, $5::bigint, $6::bigint, $7, "
        "$8::bigint) ON CONFLICT (payment_id) DO NOTHING",
        8, tx->params, NULL);
    if (rc != PPM_PG_OK)
        return rc;
    const metering_snap_t *one[] = {tx->snap};
    return metering_db_save (pg, 1, one, tx->now_ms) ? PPM_PG_ERROR : PPM_PG_OK;
}

int
metering_db_payment_record (ppm_pg_t *pg, const metering_snap_t *snap, const char *payment_id,
                            int64_t minutes, int64_t added_ms, int64_t amount, const char *currency,
                            int64_t now_ms)
{
    char nums[4][24];
    snprintf (nums[0], 24, "%lld", (long long)minutes);
    snprintf (nums[1], 24, "%lld", (long long)added_ms);
    snprintf (nums[2], 24, "%lld", (long long)amount);
    snprintf (nums[3], 24, "%lld", (long long)now_ms);
    s_payment_tx_t tx = {
        snap,
        {payment_id, snap->tenant, snap->session_id, nums[0], nums[1], nums[2], currency, nums[3]},
        now_ms};
    return s_log (pg, ppm_pg_transaction (pg, PPM_PG_READ_COMMITTED, 3, s_payment_tx, &tx),
                  "payment record");
}

typedef struct {
    const metering_snap_t *snap;
    int64_t now_ms;
    const char *params[10];
    int64_t unused_trial;
} s_final_tx_t;

static ppm_pg_result_t
s_final_tx (ppm_pg_t *pg, void *arg)
{
    s_final_tx_t *tx = arg;
    const metering_snap_t *one[] = {tx->snap};
    if (metering_db_save (pg, 1, one, tx->now_ms))
        return PPM_PG_ERROR;
    PGresult *res = NULL;
    ppm_pg_result_t rc = ppm_pg_exec (
        pg,
        "INSERT INTO metering.settlements (session_id, tenant_id, used_ms, paid_used_ms, "
        "billed_amount, currency, ended_ms, reason, next_attempt_ms, created_ms) VALUES ($1, $2, "
        "$3::bigint, $4::bigint, $5::bigint, $6, $7::bigint, $8, $9::bigint, $10::bigint) "
        "ON CONFLICT (session_id) DO NOTHING RETURNING session_id",
        10, tx->params, &res);
    if (rc != PPM_PG_OK)
        return rc;
    int inserted = PQntuples (res);
    PQclear (res);
    if (inserted && tx->unused_trial > 0) {
        char unused[24];
        snprintf (unused, sizeof unused, "%lld", (long long)tx->unused_trial);
        const char *p[] = {tx->snap->tenant, tx->snap->payer, tx->snap->payee, unused};
        rc = ppm_pg_exec (pg,
                          "UPDATE metering.trials SET used_ms = GREATEST(0, used_ms - $4::bigint) "
                          "WHERE tenant_id = $1 AND payer = $2 AND payee = $3",
                          4, p, NULL);
    }
    return rc;
}

int
metering_db_finalize (ppm_pg_t *pg, const metering_snap_t *snap, int64_t now_ms,
                      int64_t now_real_ms)
{
    metering_snap_t final = *snap;
    final.finalized = true;
    int64_t used = metering_snap_used (snap, now_ms);
    int64_t billed = 0;
    if (metering_snap_billed (snap, now_ms, &billed))
        billed = snap->paid_amount;
    char nums[6][24];
    snprintf (nums[0], 24, "%lld", (long long)used);
    snprintf (nums[1], 24, "%lld", (long long)metering_snap_paid_used (snap, now_ms));
    snprintf (nums[2], 24, "%lld", (long long)billed);
    snprintf (nums[3], 24, "%lld", (long long)snap->ended_ms);
    snprintf (nums[4], 24, "%lld", (long long)now_real_ms);
    snprintf (nums[5], 24, "%lld", (long long)now_ms);
    int64_t trial_used = used < snap->trial_ms ? used : snap->trial_ms;
    s_final_tx_t tx = {&final,
                       now_ms,
                       {snap->session_id, snap->tenant, nums[0], nums[1], nums[2], snap->currency,
                        nums[3], metering_end_name (snap->end_reason), nums[4], nums[5]},
                       snap->trial_ms - trial_used};
    return s_log (pg, ppm_pg_transaction (pg, PPM_PG_READ_COMMITTED, 3, s_final_tx, &tx),
                  "finalize");
}

typedef struct {
    size_t n;
    const metering_snap_t *const *snaps;
    int64_t now_ms;
    int64_t now_real_ms;
} s_final_many_t;

static ppm_pg_result_t
s_final_many_tx (ppm_pg_t *pg, void *arg)
{
    s_final_many_t *tx = arg;
    metering_snap_t *copies = calloc (tx->n, sizeof *copies);
    const metering_snap_t **ptrs = calloc (tx->n, sizeof *ptrs);
    s_array_t a[10];
    for (int c = 0; c < 10; c++)
        s_array_open (&a[c]);
    ppm_pg_result_t rc = PPM_PG_ERROR;
    if (!copies || !ptrs)
        goto cleanup;
    for (size_t i = 0; i < tx->n; i++) {
        const metering_snap_t *s = tx->snaps[i];
        copies[i] = *s;
        copies[i].finalized = true;
        ptrs[i] = &copies[i];
        int64_t billed = 0;
        if (metering_snap_billed (s, tx->now_ms, &billed))
            billed = s->paid_amount;
        s_array_text (&a[0], s->session_id);
        s_array_text (&a[1], s->tenant);
        s_array_int (&a[2], metering_snap_used (s, tx->now_ms));
        s_array_int (&a[3], metering_snap_paid_used (s, tx->now_ms));
        s_array_int (&a[4], billed);
        s_array_text (&a[5], s->currency);
        s_array_int (&a[6], s->ended_ms);
        s_array_text (&a[7], metering_end_name (s->end_reason));
        s_array_int (&a[8], tx->now_real_ms);
        s_array_int (&a[9], tx->now_ms);
    }
    const char *params[10];
    int bad = 0;
    for (int c = 0; c < 10; c++) {
        bad |= s_array_close (&a[c]);
        params[c] = a[c].text;
    }
    if (bad || metering_db_save (pg, tx->n, ptrs, tx->now_ms))
        goto cleanup;
    PGresult *res = NULL;
    rc = ppm_pg_exec (pg,
                      "INSERT INTO metering.settlements (session_id, tenant_id, used_ms, "
                      "paid_used_ms, billed_amount, currency, ended_ms, reason, next_attempt_ms, "
                      "created_ms) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], "
                      "$4::bigint[], $5::bigint[], $6::text[], $7::bigint[], $8::text[], "
                      "$9::bigint[], $10::bigint[]) ON CONFLICT (session_id) DO NOTHING "
                      "RETURNING session_id",
                      10, params, &res);
    if (rc != PPM_PG_OK)
        goto cleanup;
    /* Unused free-trial time goes back, once (only for rows inserted now). */
    int rows = PQntuples (res);
    for (int r = 0; r < rows && rc == PPM_PG_OK; r++) {
        const char *sid = PQgetvalue (res, r, 0);
        for (size_t i = 0; i < tx->n; i++) {
            const metering_snap_t *s = tx->snaps[i];
            if (s->trial_ms <= 0 || strcmp (s->session_id, sid))
                continue;
            int64_t used = metering_snap_used (s, tx->now_ms);
            int64_t unused = s->trial_ms - (used < s->trial_ms ? used : s->trial_ms);
            if (unused > 0) {
                char text[24];
                snprintf (text, sizeof text, "%lld", (long long)unused);
                const char *p[] = {s->tenant, s->payer, s->payee, text};
                rc = ppm_pg_exec (pg,
                                  "UPDATE metering.trials SET used_ms = GREATEST(0, used_ms - "
                                  "$4::bigint) WHERE tenant_id = $1 AND payer = $2 AND payee = $3",
                                  4, p, NULL);
            }
        }
    }
    PQclear (res);
cleanup:
    for (int c = 0; c < 10; c++) {
        if (a[c].f)
            fclose (a[c].f);
        free (a[c].text);
    }
    free (copies);
    free (ptrs);
    return rc;
}

int
metering_db_finalize_many (ppm_pg_t *pg, size_t n, const metering_snap_t *const *snaps,
                           int64_t now_ms, int64_t now_real_ms)
{
    if (n == 0)
        return 0;
    s_final_many_t tx = {n, snaps, now_ms, now_real_ms};
    return s_log (pg, ppm_pg_transaction (pg, PPM_PG_READ_COMMITTED, 3, s_final_many_tx, &tx),
                  "finalize");
}

int
metering_db_settle_due (ppm_pg_t *pg, int64_t now_real_ms, metering_settle_t *out, int max)
{
    char now[24];
    char lim[24];
    snprintf (now, sizeof now, "%lld", (long long)now_real_ms);
    snprintf (lim, sizeof lim, "%d", max);
    const char *params[] = {now, lim};
    PGresult *res = NULL;
    if (s_log (pg,
               ppm_pg_exec (
                   pg,
                   "UPDATE metering.settlements SET attempts = attempts + 1, next_attempt_ms = "
                   "$1::bigint + LEAST(60000, 1000 * (1 << LEAST(attempts, 6))) WHERE session_id "
                   "IN (SELECT session_id FROM metering.settlements WHERE acked_ms IS NULL AND "
                   "next_attempt_ms <= $1::bigint ORDER BY next_attempt_ms LIMIT $2::int FOR "
                   "UPDATE SKIP LOCKED) RETURNING session_id, tenant_id, paid_used_ms, ended_ms, "
                   "reason",
                   2, params, &res),
               "settle due"))
        return -1;
    int n = PQntuples (res);
    if (n > max)
        n = max;
    for (int i = 0; i < n; i++) {
        snprintf (out[i].session_id, sizeof out[i].session_id, "%s", PQgetvalue (res, i, 0));
        snprintf (out[i].tenant, sizeof out[i].tenant, "%s", PQgetvalue (res, i, 1));
        out[i].paid_used_ms = s_cell (res, i, 2);
        out[i].ended_ms = s_cell (res, i, 3);
        snprintf (out[i].reason, sizeof out[i].reason, "%s", PQgetvalue (res, i, 4));
    }
    PQclear (res);
    return n;
}

int
metering_db_settle_ack (ppm_pg_t *pg, const char *session_id, int64_t now_real_ms)
{
    char now[24];
    snprintf (now, sizeof now, "%lld", (long long)now_real_ms);
    const char *params[] = {session_id, now};
    return s_log (pg,
                  ppm_pg_exec (pg,
                               "UPDATE metering.settlements SET acked_ms = $2::bigint WHERE "
                               "session_id = $1 AND acked_ms IS NULL",
                               2, params, NULL),
                  "settle ack");
}

int64_t
metering_db_settle_pending (ppm_pg_t *pg)
{
    PGresult *res = NULL;
    if (s_log (pg,
               ppm_pg_exec (pg, "SELECT count(*) FROM metering.settlements WHERE acked_ms IS NULL",
                            0, NULL, &res),
               "settle pending"))
        return -1;
    int64_t n = s_cell (res, 0, 0);
    PQclear (res);
    return n;
}

/* Fills snap from a row of COLS. */
static void
s_row (PGresult *res, int row, metering_snap_t *s)
{
    metering_snap_reset (s, PQgetvalue (res, row, 0));
    snprintf (s->tenant, sizeof s->tenant, "%s", PQgetvalue (res, row, 1));
    snprintf (s->payer, sizeof s->payer, "%s", PQgetvalue (res, row, 2));
    snprintf (s->payee, sizeof s->payee, "%s", PQgetvalue (res, row, 3));
    s->kind = (int)s_cell (res, row, 4);
    s->state = (int)s_cell (res, row, 5);
    s->seq = (uint64_t)s_cell (res, row, 6);
    s->flags = s_cell (res, row, 7);
    s->rate = s_cell (res, row, 8);
    snprintf (s->currency, sizeof s->currency, "%s", PQgetvalue (res, row, 9));
    metering_snap_set (s, "w", PQgetvalue (res, row, 10));
    s->grace_s = s_cell (res, row, 11);
    s->ttl_s = s_cell (res, row, 12);
    s->max_min = s_cell (res, row, 13);
    s->funded_ms = s_cell (res, row, 14);
    s->trial_ms = s_cell (res, row, 15);
    s->paid_amount = s_cell (res, row, 16);
    s->used_ms = s_cell (res, row, 17);
    s->anchor_ms = s_cell (res, row, 18);
    s->heartbeat_ms = s_cell (res, row, 19);
    s->warn_idx = s_cell (res, row, 20);
    s->ended_ms = s_cell (res, row, 21);
    s->end_reason = s_cell (res, row, 22);
    s->finalized = strcmp (PQgetvalue (res, row, 23), "t") == 0;
    s->journaled = s->seq;
}

int
metering_db_get (ppm_pg_t *pg, const char *tenant, const char *sid, metering_snap_t *snap)
{
    const char *params[] = {sid, tenant ? tenant : ""};
    PGresult *res = NULL;
    if (s_log (pg,
               ppm_pg_exec (pg,
                            "SELECT " COLS " FROM metering.sessions WHERE session_id = $1 AND "
                            "($2 = '' OR tenant_id = $2)",
                            2, params, &res),
               "get"))
        return -1;
    int found = PQntuples (res) == 1;
    if (found)
        s_row (res, 0, snap);
    PQclear (res);
    return found;
}

static int
s_rows (ppm_pg_t *pg, PGresult *res, metering_db_row_fn *fn, void *arg)
{
    (void)pg;
    int n = PQntuples (res);
    for (int i = 0; i < n; i++) {
        metering_snap_t snap;
        s_row (res, i, &snap);
        fn (&snap, arg);
    }
    PQclear (res);
    return n;
}

int
metering_db_list (ppm_pg_t *pg, const char *tenant, int state, const char *payer, const char *payee,
                  const char *cursor, int limit, metering_db_row_fn *fn, void *arg)
{
    char st[16];
    char lim[16];
    snprintf (st, sizeof st, "%d", state);
    snprintf (lim, sizeof lim, "%d", limit);
    const char *params[] = {
        tenant, st, payer ? payer : "", payee ? payee : "", cursor ? cursor : "", lim};
    PGresult *res = NULL;
    if (s_log (pg,
               ppm_pg_exec (pg,
                            "SELECT " COLS " FROM metering.sessions WHERE tenant_id = $1 AND "
                            "($2::int = 0 OR state = $2::int) AND ($3 = '' OR payer = $3) AND "
                            "($4 = '' OR payee = $4) AND ($5 = '' OR session_id < $5) ORDER BY "
                            "session_id DESC LIMIT $6::int",
                            6, params, &res),
               "list"))
        return -1;
    return s_rows (pg, res, fn, arg);
}

int
metering_db_unfinished (ppm_pg_t *pg, const char *tenant, const char *cursor, int limit,
                        metering_db_row_fn *fn, void *arg)
{
    char lim[16];
    snprintf (lim, sizeof lim, "%d", limit);
    const char *params[] = {tenant ? tenant : "", cursor ? cursor : "", lim};
    PGresult *res = NULL;
    if (s_log (pg,
               ppm_pg_exec (pg,
                            "SELECT " COLS " FROM metering.sessions WHERE NOT finalized AND ($1 = "
                            "'' OR tenant_id = $1) AND session_id > $2 ORDER BY session_id LIMIT "
                            "$3::int",
                            3, params, &res),
               "unfinished"))
        return -1;
    return s_rows (pg, res, fn, arg);
}

int
metering_db_payments (ppm_pg_t *pg, const char *sid, metering_db_payment_fn *fn, void *arg)
{
    const char *params[] = {sid};
    PGresult *res = NULL;
    if (s_log (pg,
               ppm_pg_exec (pg,
                            "SELECT payment_id, added_ms FROM metering.payments WHERE session_id "
                            "= $1",
                            1, params, &res),
               "payments"))
        return -1;
    int n = PQntuples (res);
    for (int i = 0; i < n; i++)
        fn (PQgetvalue (res, i, 0), s_cell (res, i, 1), arg);
    PQclear (res);
    return n;
}
