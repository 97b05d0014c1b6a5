/*  metering_db: metering's PostgreSQL schema `metering`, the durable side
    of sessions.

    Redis holds the live clocks; PostgreSQL holds, for every session, the
    snapshot of its last money-relevant transition (funded, started,
    paused, resumed, extended, expired, ended: every event bumps the
    session's seq, and a snapshot only replaces an older seq), the payments
    applied, the free-trial use per (tenant, payer, payee), and the
    settlements (usage reports) still to deliver to payment. A snapshot is
    enough to rebuild a session: while active, its deadline is anchor +
    funded - used, which no later tick changes, so a session rebuilt after
    Redis lost its data keeps the time it had.

    Several snapshots are written in one statement (unnest of arrays), so
    a tick that moves 10,000 sessions costs one round trip.

    BLOCKING (bounded by ppm_pg's timeouts): every call.
*/
#ifndef METERING_DB_H_INCLUDED
#define METERING_DB_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "metering_model.h"
#include "ppm_pg.h"

/* Applies the schema migrations. 0 or -1 with *error. */
int metering_db_migrate (ppm_pg_t *pg, const char **error);

/* Upserts n snapshots (each replaces a stored one only when newer by
   seq). quote_id/settings_version are kept from creation. 0 or -1. */
int metering_db_save (ppm_pg_t *pg, size_t n, const metering_snap_t *const *snaps, int64_t now_ms);
/* Inserts a new session's row with its quote id and settings version. */
int metering_db_create (ppm_pg_t *pg, const metering_snap_t *snap, const char *quote_id,
                        int64_t settings_version, int64_t now_ms);

/* Unfinished paid sessions of a payer (awaiting, active, paused). */
int metering_db_concurrent (ppm_pg_t *pg, const char *tenant, const char *payer, int64_t *count);
/* Reserves what is left of the free-trial allowance (allowance_ms) of
   (tenant, payer, payee): *grant_ms = allowance - used so far (≥ 0). */
int metering_db_trial_grant (ppm_pg_t *pg, const char *tenant, const char *payer, const char *payee,
                             int64_t allowance_ms, int64_t *grant_ms);
/* Gives back trial time a session did not use. */
int metering_db_trial_refund (ppm_pg_t *pg, const char *tenant, const char *payer,
                              const char *payee, int64_t unused_ms);

/* The session a payment was applied to: 1 found (sid filled), 0 none. */
int metering_db_payment_session (ppm_pg_t *pg, const char *payment_id, char *sid, size_t size);
/* Records an applied payment (idempotent by payment_id) and the
   session's snapshot, in one transaction. */
int metering_db_payment_record (ppm_pg_t *pg, const metering_snap_t *snap, const char *payment_id,
                                int64_t minutes, int64_t added_ms, int64_t amount,
                                const char *currency, int64_t now_ms);

/* Records a session's end for good: its snapshot, its settlement (once:
   a second call changes nothing) and the refund of unused trial time. */
int metering_db_finalize (ppm_pg_t *pg, const metering_snap_t *snap, int64_t now_ms,
                          int64_t now_real_ms);

/* The same for n sessions in one transaction (the tick's batches). */
int metering_db_finalize_many (ppm_pg_t *pg, size_t n, const metering_snap_t *const *snaps,
                               int64_t now_ms, int64_t now_real_ms);

/* A settlement to deliver. */
typedef struct {
    char session_id[METERING_SID_LEN + 1];
    char tenant[METERING_ID_MAX + 1];
    int64_t paid_used_ms;
    int64_t ended_ms;
    char reason[16];
} metering_settle_t;
/* Claims up to max settlements due at now_real_ms (pushing their next
   attempt back with a backoff) into out; returns how many, or -1. */
int metering_db_settle_due (ppm_pg_t *pg, int64_t now_real_ms, metering_settle_t *out, int max);
/* Marks a settlement acknowledged by payment. */
int metering_db_settle_ack (ppm_pg_t *pg, const char *session_id, int64_t now_real_ms);
/* Settlements not yet acknowledged, or -1. */
int64_t metering_db_settle_pending (ppm_pg_t *pg);

/* One session from PostgreSQL: 1 found, 0 none, -1 error. tenant may be
   NULL (any). */
int metering_db_get (ppm_pg_t *pg, const char *tenant, const char *sid, metering_snap_t *snap);

typedef void (metering_db_row_fn) (const metering_snap_t *snap, void *arg);
/* The tenant's sessions, newest first, after cursor (a session id, "" =
   from the newest), optional state (0 = any) and party filters. Returns
   rows delivered or -1. */
int metering_db_list (ppm_pg_t *pg, const char *tenant, int state, const char *payer,
                      const char *payee, const char *cursor, int limit, metering_db_row_fn *fn,
                      void *arg);
/* Sessions not finalized, by id after cursor, at most limit; tenant may be
   "" (every tenant). Returns rows or -1. */
int metering_db_unfinished (ppm_pg_t *pg, const char *tenant, const char *cursor, int limit,
                            metering_db_row_fn *fn, void *arg);
/* Payments applied to a session as (payment_id, added_ms): fn per row. */
typedef void (metering_db_payment_fn) (const char *payment_id, int64_t added_ms, void *arg);
int metering_db_payments (ppm_pg_t *pg, const char *sid, metering_db_payment_fn *fn, void *arg);

#endif
