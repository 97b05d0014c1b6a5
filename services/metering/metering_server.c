/*  metering_server: see metering_server.h. The shape of every change:

      1. (RPCs that may bring a deadline earlier) pre-arm: ZADD LT now in
         the session's bucket, so a crash after step 2 still gets the
         session looked at by the next tick;
      2. the Lua script changes the session atomically and answers with
         the events it produced (each with its own seq) and the session's
         next deadline;
      3. the events are published; the snapshot is written to PostgreSQL
         when the script says PostgreSQL is behind (j < q), then marked
         journaled; a session over for good is finalized (settlement row);
      4. the bucket entry is set to the next deadline (ZADD LT from RPCs,
         compare-and-set from the tick, so a stale tick never pushes a
         deadline later than the truth).

    Invariant: every unfinished session has a bucket entry at or before its
    true next deadline. A tick only ever runs the script on due entries and
    only the script changes state, so two replicas racing on a bucket (a
    lease lost mid-tick) cannot repeat a transition: the second run finds
    nothing due and emits nothing.
*/
#include "metering_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "metering_db.h"
#include "metering_model.h"
#include "metering_store.h"
#include "ppm_clock.h"
#include "ppm_events.h"
#include "ppm_log.h"
#include "ppm_metrics.h"
#include "ppm_pg.h"
#include "ppm_rpc.h"
#include "proto/payment.pb-c.h"

#define S_BUCKETS_MAX 1024
#define S_CHUNK       512
#define S_SETTLE_MAX  64   /* settlements read from PostgreSQL at a time */
#define S_SETTLE_FLY  256  /* payment.Settle calls in flight at most */
#define S_RETRY_MS    1000 /* ppm ms before a failed journal/finalize is retried */
#define S_FINAL_RETRY 5000 /* ppm ms before a session waiting to be finalized is re-ticked */
#define S_FINALS_KEEP (16 * S_CHUNK) /* sessions waiting to be finalized kept across ticks */
#define S_FINALS_WAIT 10 /* ticks the finals may wait for time before one chunk goes anyway */

typedef struct {
    char sid[METERING_SID_LEN + 1]; /* session */
    uint32_t bucket;                /* its bucket */
    int64_t score;                  /* the entry's score when read */
} s_due_t;

/* A session the tick must still write to PostgreSQL. */
typedef struct {
    metering_snap_t snap; /* its state after the transition */
    uint32_t bucket;      /* its bucket */
    int64_t score;        /* the score its entry was given */
} s_pending_t;

/* Metric handles (docs/METRICS.md "metering"), from the global registry. */
typedef struct {
    ppm_counter_t *started;    /* ppm_sessions_started_total{kind} */
    ppm_counter_t *expired;    /* ppm_sessions_expired_total */
    ppm_counter_t *ended;      /* ppm_sessions_ended_total{by} */
    ppm_histogram_t *tick;     /* ppm_tick_duration_seconds */
    ppm_histogram_t *lateness; /* ppm_tick_lateness_seconds */
    ppm_gauge_t *leases;       /* ppm_bucket_leases_held */
    ppm_gauge_t *pending;      /* ppm_usage_reports_pending */
    ppm_gauge_t *active;       /* ppm_sessions_active (this replica's view) */
} s_metrics_t;

typedef struct {
    s_metrics_t m;             /* metrics */
    unsigned settle_runs;      /* settle timer runs, to poll the pending count now and then */
    metering_config_t cfg;     /* copied configuration (strings owned below) */
    char *strings[6];          /* owned copies of the config strings */
    char replica[64];          /* this replica's id in leases */
    zsock_t *pipe;             /* the actor's pipe */
    zloop_t *loop;             /* everything runs here */
    ppm_rpc_server_t *rpc;     /* metering.* */
    ppm_events_pub_t *pub;     /* session.* events */
    ppm_rpc_client_t *payment; /* payment.Settle (NULL when not configured) */
    metering_store_t *store;   /* Redis */
    ppm_pg_t *pg;              /* PostgreSQL */
    bool ok;                   /* start-up succeeded */
    bool owned[S_BUCKETS_MAX]; /* buckets whose lease this replica holds */
    size_t owned_count;        /* how many */
    uint8_t free_seen[S_BUCKETS_MAX]; /* cycles in a row a bucket was seen without a lease */
    s_due_t *due;                     /* the tick's due entries */
    size_t due_count;                 /* used */
    size_t due_size;                  /* allocated */
    metering_result_t *results;       /* S_CHUNK results of tick scripts */
    metering_result_t *marks;         /* S_CHUNK results of journal marks */
    size_t settles_in_flight;         /* payment.Settle calls awaiting a reply */
    bool settles_more;                /* the last read filled its batch: more may be due */
    int64_t finalize_until;           /* zclock_mono deadline for finalizing in this tick */
    s_pending_t *journal;             /* this tick's snapshots for PostgreSQL */
    size_t journal_count;             /* used */
    size_t journal_size;              /* allocated */
    s_pending_t *finals;              /* sessions to finalize, carried across ticks */
    size_t finals_count;              /* used */
    unsigned finals_waited;           /* ticks in a row that finalized nothing */
    size_t finals_size;               /* allocated */
} self_t;

/* ---- events ------------------------------------------------------------ */

static void
s_publish (self_t *self, const metering_snap_t *snap, const metering_event_t *ev)
{
    Ppm__V1__SessionEvent msg = PPM__V1__SESSION_EVENT__INIT;
    msg.session_id = (char *)snap->session_id;
    msg.tenant_id = (char *)snap->tenant;
    msg.seq = ev->seq;
    msg.event = (char *)ev->name;
    msg.state = (Ppm__V1__SessionState)ev->state;
    msg.payer = (char *)snap->payer;
    msg.payee = (char *)snap->payee;
    msg.kind = (char *)metering_kind_name (snap->kind);
    msg.funded_ms = snap->funded_ms;
    msg.used_ms = ev->used_ms;
    msg.remaining_ms = ev->remaining_ms;
    if (ev->state == PPM__V1__SESSION_STATE__SESSION_ACTIVE && (snap->flags & METERING_F_PAID))
        msg.expires_at_ms = ev->at_ms + ev->remaining_ms;
    msg.at_ms = ev->at_ms;
    msg.warning_mark_s = ev->mark_s;
    msg.added_ms = ev->added_ms;
    msg.reason = (char *)ev->reason;
    if (ppm_events_publish (self->pub, ev->name, snap->tenant, &msg.base))
        ppm_log_warn ("metering: could not publish %s", ev->name);
    /* One line per session event, under the trace id of the call that
       caused it (none for the tick's own transitions). */
    ppm_log_kv (PPM_LOG_INFO, ev->name, "session_id", snap->session_id, "reason", ev->reason,
                PPM_LOG_END);
    /* Active or paused, as this replica saw the transitions it made (sum
       over replicas; a restart starts from 0, never below). */
    if (streq (ev->name, "session.active"))
        ppm_gauge_add (self->m.active, 1);
    else if ((streq (ev->name, "session.expired") ||
              (streq (ev->name, "session.ended") && !streq (ev->reason, "expired") &&
               snap->funded_ms > 0)) &&
             ppm_gauge_value (self->m.active) >= 1)
        ppm_gauge_add (self->m.active, -1);
    if (streq (ev->name, "session.active") && !streq (ev->reason, "reopened"))
        ppm_counter_inc (self->m.started, 1, metering_kind_name (snap->kind));
    else if (streq (ev->name, "session.expired"))
        ppm_counter_inc (self->m.expired, 1);
    else if (streq (ev->name, "session.ended") && !streq (ev->reason, "expired")) {
        const char *by = ev->reason;
        if (streq (by, "stale"))
            by = "ttl";
        else if (!streq (by, "payer") && !streq (by, "payee"))
            by = "platform";
        ppm_counter_inc (self->m.ended, 1, by);
    }
}

static void
s_publish_all (self_t *self, const metering_result_t *res)
{
    for (size_t i = 0; i < res->nevents; i++)
        s_publish (self, &res->snap, &res->events[i]);
}

/* ---- durability ------------------------------------------------------ */

/* Writes the snapshot when PostgreSQL is behind and marks it journaled.
   Returns 0 when PostgreSQL is up to date. */
static int
s_journal (self_t *self, metering_result_t *res, int64_t now)
{
    if (!(res->flags & METERING_R_JOURNAL))
        return 0;
    const metering_snap_t *one[] = {&res->snap};
    if (metering_db_save (self->pg, 1, one, now))
        return -1;
    char seq[24];
    snprintf (seq, sizeof seq, "%llu", (unsigned long long)res->snap.seq);
    const char *argv[] = {seq};
    metering_result_t mark;
    if (metering_store_op (self->store, res->snap.session_id, "jmark", now, "", 1, argv, &mark))
        return -1;
    res->flags &= ~METERING_R_JOURNAL;
    return 0;
}

/* Records the settlement of a session over for good, then marks it
   finalized in Redis (the key then expires after the retention). */
static int
s_finalize (self_t *self, metering_result_t *res, int64_t now)
{
    if (!(res->flags & METERING_R_FINALIZE))
        return 0;
    if (metering_db_finalize (self->pg, &res->snap, now, ppm_clock_real_ms ()))
        return -1;
    char ret[24];
    snprintf (ret, sizeof ret, "%lld", (long long)self->cfg.retention_ms);
    const char *argv[] = {ret};
    metering_result_t fin;
    if (metering_store_op (self->store, res->snap.session_id, "fin", now, "", 1, argv, &fin))
        return -1;
    res->flags &= ~METERING_R_FINALIZE;
    res->next_ms = -1;
    return 0;
}

/* Everything after a script run from an RPC: publish, journal, finalize,
   set the bucket entry to the next deadline. prearm is the score this RPC
   pre-armed (-1: none): the entry takes the new deadline when it still
   holds that score (a tick that read the session before this change then
   fails its compare-and-set) or when the new deadline is earlier. */
static void
s_after (self_t *self, metering_result_t *res, int64_t now, int64_t prearm)
{
    s_publish_all (self, res);
    int64_t next = res->next_ms;
    if (s_journal (self, res, now) || s_finalize (self, res, now))
        next = now + S_RETRY_MS; /* the tick retries */
    uint32_t b = metering_bucket_of (res->snap.session_id, (uint32_t)self->cfg.buckets);
    metering_store_settle_entry (self->store, b, res->snap.session_id, prearm, next);
}

/* Makes the session due now (ZADD LT), before a change that may bring
   its deadline earlier; returns the score set, for s_after. */
static int64_t
s_prearm (self_t *self, const char *sid, int64_t now)
{
    uint32_t b = metering_bucket_of (sid, (uint32_t)self->cfg.buckets);
    metering_store_arm (self->store, b, sid, now);
    return now;
}

/* ---- the tick -------------------------------------------------------- */

static void
s_collect (uint32_t bucket, const char *sid, int64_t score, void *arg)
{
    self_t *self = arg;
    if (strlen (sid) > METERING_SID_LEN)
        return;
    if (self->due_count == self->due_size) {
        size_t size = self->due_size ? self->due_size * 2 : 1024;
        s_due_t *more = realloc (self->due, size * sizeof *more);
        if (!more)
            return;
        self->due = more;
        self->due_size = size;
    }
    s_due_t *d = &self->due[self->due_count++];
    snprintf (d->sid, sizeof d->sid, "%s", sid);
    d->bucket = bucket;
    d->score = score;
}

static int
s_by_bucket (const void *a, const void *b)
{
    const s_due_t *x = a;
    const s_due_t *y = b;
    return (x->bucket > y->bucket) - (x->bucket < y->bucket);
}

/* Appends to a growing array of s_pending_t; false when out of memory. */
static bool
s_push (s_pending_t **list, size_t *count, size_t *size, const metering_snap_t *snap,
        uint32_t bucket, int64_t score)
{
    if (*count == *size) {
        size_t more = *size ? *size * 2 : 256;
        s_pending_t *grown = realloc (*list, more * sizeof *grown);
        if (!grown)
            return false;
        *list = grown;
        *size = more;
    }
    s_pending_t *p = &(*list)[(*count)++];
    p->snap = *snap;
    p->bucket = bucket;
    p->score = score;
    return true;
}

/* Phase 1 for one chunk of due sessions: scripts pipelined, events
   published at once, entries compare-and-set per bucket. Sessions whose
   snapshot PostgreSQL lacks, or that are over for good, are queued for
   the later phases with an entry a little ahead (so a crash before those
   phases only delays them by S_RETRY_MS). */
static void
s_tick_chunk (self_t *self, s_due_t *due, size_t n, int64_t now)
{
    const char *sids[S_CHUNK];
    for (size_t i = 0; i < n; i++)
        sids[i] = due[i].sid;
    metering_result_t *res = self->results;
    if (metering_store_op_many (self->store, n, sids, "tick", now, NULL, res))
        return;
    int64_t next[S_CHUNK];
    for (size_t i = 0; i < n; i++) {
        next[i] = due[i].score; /* unparsable: leave the entry as it is */
        if (res[i].code != 0)
            continue;
        if (res[i].flags & METERING_R_GONE) {
            next[i] = -1;
            continue;
        }
        s_publish_all (self, &res[i]);
        for (size_t e = 0; e < res[i].nevents; e++)
            ppm_histogram_observe (self->m.lateness, (double)(now - res[i].events[e].at_ms) /
                                                         (1000.0 * (double)ppm_clock_scale ()));
        next[i] = res[i].next_ms;
        int64_t retry = now + S_RETRY_MS;
        if (res[i].flags & METERING_R_JOURNAL) {
            if (next[i] < 0 || next[i] > retry)
                next[i] = retry;
            s_push (&self->journal, &self->journal_count, &self->journal_size, &res[i].snap,
                    due[i].bucket, next[i]);
        }
        if (res[i].flags & METERING_R_FINALIZE) {
            /* Phase 3 finalizes it after phase 2 journaled it (this tick
               or later); the entry only guards against a crash before
               that, far enough ahead that a busy tick does not run the
               session again. */
            next[i] = now + S_FINAL_RETRY;
            s_push (&self->finals, &self->finals_count, &self->finals_size, &res[i].snap,
                    due[i].bucket, next[i]);
        }
    }
    size_t start = 0;
    while (start < n) {
        size_t end = start;
        while (end < n && due[end].bucket == due[start].bucket)
            end++;
        int64_t olds[S_CHUNK];
        for (size_t i = start; i < end; i++)
            olds[i - start] = due[i].score;
        metering_store_rearm (self->store, due[start].bucket, end - start, sids + start, olds,
                              next + start);
        start = end;
    }
}

/* Phase 2: snapshots to PostgreSQL in batches, then marked journaled.
   Returns 0, or -1 when a batch could not be written (its entries, at
   most S_RETRY_MS ahead, bring the sessions back). */
static int
s_tick_journal (self_t *self, int64_t now)
{
    int rc = 0;
    for (size_t at = 0; at < self->journal_count; at += S_CHUNK) {
        size_t n = self->journal_count - at < S_CHUNK ? self->journal_count - at : S_CHUNK;
        const metering_snap_t *snaps[S_CHUNK];
        const char *sids[S_CHUNK];
        const char *seqs[S_CHUNK];
        char seqbuf[S_CHUNK][24];
        for (size_t i = 0; i < n; i++) {
            s_pending_t *p = &self->journal[at + i];
            snaps[i] = &p->snap;
            sids[i] = p->snap.session_id;
            snprintf (seqbuf[i], sizeof seqbuf[i], "%llu", (unsigned long long)p->snap.seq);
            seqs[i] = seqbuf[i];
        }
        if (metering_db_save (self->pg, n, snaps, now) == 0)
            metering_store_op_many (self->store, n, sids, "jmark", now, seqs, self->marks);
        else
            rc = -1;
    }
    self->journal_count = 0;
    return rc;
}

static int
s_by_pending_bucket (const void *a, const void *b)
{
    const s_pending_t *x = a;
    const s_pending_t *y = b;
    return (x->bucket > y->bucket) - (x->bucket < y->bucket);
}

/* Phase 3: sessions over for good get their settlement rows in batches,
   within half a tick of time (transitions come first); what does not fit
   waits in memory for the next ticks (up to S_FINALS_KEEP; the rest, and
   everything after a crash, comes back through its entry S_FINAL_RETRY
   later). After S_FINALS_WAIT ticks without time for it, one batch goes
   anyway, so a steady overload cannot hold settlements back for ever.
   Finalizing a session twice is harmless (ON CONFLICT DO NOTHING, and
   the script's fin op is idempotent). */
static void
s_tick_finalize (self_t *self, int64_t now)
{
    if (self->finals_count > 1) /* finals is NULL until first used: qsort (NULL, 0) is UB */
        qsort (self->finals, self->finals_count, sizeof *self->finals, s_by_pending_bucket);
    size_t at = 0;
    bool forced = self->finals_waited >= S_FINALS_WAIT;
    while (at < self->finals_count) {
        if (zclock_mono () > self->finalize_until && !forced)
            break;
        forced = false;
        size_t n = self->finals_count - at < S_CHUNK ? self->finals_count - at : S_CHUNK;
        const metering_snap_t *snaps[S_CHUNK];
        const char *sids[S_CHUNK];
        const char *rets[S_CHUNK];
        char ret[24];
        snprintf (ret, sizeof ret, "%lld", (long long)self->cfg.retention_ms);
        for (size_t i = 0; i < n; i++) {
            snaps[i] = &self->finals[at + i].snap;
            sids[i] = self->finals[at + i].snap.session_id;
            rets[i] = ret;
        }
        if (metering_db_finalize_many (self->pg, n, snaps, now, ppm_clock_real_ms ())) {
            at = self->finals_count; /* PostgreSQL is down: the entries retry */
            break;
        }
        metering_store_op_many (self->store, n, sids, "fin", now, rets, self->marks);
        size_t start = 0;
        while (start < n) {
            size_t end = start;
            uint32_t bucket = self->finals[at + start].bucket;
            while (end < n && self->finals[at + end].bucket == bucket)
                end++;
            int64_t olds[S_CHUNK];
            int64_t gone[S_CHUNK];
            for (size_t i = start; i < end; i++) {
                olds[i - start] = self->finals[at + i].score;
                gone[i - start] = -1;
            }
            metering_store_rearm (self->store, bucket, end - start, sids + start, olds, gone);
            start = end;
        }
        at += n;
    }
    self->finals_waited = at > 0 || self->finals_count == 0 ? 0 : self->finals_waited + 1;
    size_t left = self->finals_count - at;
    if (left > S_FINALS_KEEP)
        left = S_FINALS_KEEP;
    if (left > 0 && at > 0)
        memmove (self->finals, self->finals + at, left * sizeof *self->finals);
    self->finals_count = left;
}

static int
s_tick (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    self_t *self = arg;
    if (!self->ok || self->owned_count == 0)
        return 0;
    int64_t now = ppm_clock_now_ms ();
    int64_t tick_start = zclock_mono ();
    self->finalize_until = tick_start + self->cfg.tick_ms / 2;
    uint32_t buckets[S_BUCKETS_MAX];
    size_t nb = 0;
    for (uint32_t b = 0; b < (uint32_t)self->cfg.buckets; b++)
        if (self->owned[b])
            buckets[nb++] = b;
    self->due_count = 0;
    if (metering_store_due (self->store, buckets, nb, now, (size_t)self->cfg.batch, s_collect,
                            self) <= 0)
        return 0;
    qsort (self->due, self->due_count, sizeof *self->due, s_by_bucket);
    for (size_t i = 0; i < self->due_count; i += S_CHUNK) {
        size_t n = self->due_count - i < S_CHUNK ? self->due_count - i : S_CHUNK;
        s_tick_chunk (self, self->due + i, n, now);
    }
    /* A session is finalized only once its last transition is journaled:
       when phase 2 failed, phase 3 waits for a tick that journals all. */
    if (s_tick_journal (self, now) == 0)
        s_tick_finalize (self, now);
    ppm_histogram_observe (self->m.tick, (double)(zclock_mono () - tick_start) / 1000.0);
    return 0;
}

/* ---- rebuild from PostgreSQL ---------------------------------------- */

typedef struct {
    self_t *self;
    int64_t now;
    int64_t rebuilt;
    int64_t present;
    char cursor[METERING_SID_LEN + 1];
    char (*pay)[96]; /* p:<payment_id> fields */
    char (*payv)[24];
    size_t npay;
} s_rebuild_t;

static void
s_rebuild_payment (const char *payment_id, int64_t added_ms, void *arg)
{
    s_rebuild_t *rb = arg;
    if (rb->npay >= 24)
        return;
    metering_payment_field (payment_id, rb->pay[rb->npay]);
    snprintf (rb->payv[rb->npay], 24, "%lld", (long long)added_ms);
    rb->npay++;
}

static void
s_rebuild_row (const metering_snap_t *snap, void *arg)
{
    s_rebuild_t *rb = arg;
    self_t *self = rb->self;
    snprintf (rb->cursor, sizeof rb->cursor, "%s", snap->session_id);
    char pay[24][96];
    char payv[24][24];
    rb->pay = pay;
    rb->payv = payv;
    rb->npay = 0;
    metering_db_payments (self->pg, snap->session_id, s_rebuild_payment, rb);
    const char *argv[100];
    int argc = 0;
    int ni = 0;
    char numbuf[24][24];
#define RB_S(f, v) (argv[argc++] = (f), argv[argc++] = (v))
#define RB_I(f, v)                                                                                 \
    (snprintf (numbuf[ni], 24, "%lld", (long long)(v)), argv[argc++] = (f),                        \
     argv[argc++] = numbuf[ni++])
    RB_S ("t", snap->tenant);
    RB_S ("a", snap->payer);
    RB_S ("b", snap->payee);
    RB_I ("k", snap->kind);
    RB_I ("s", snap->state);
    RB_I ("q", (int64_t)snap->seq);
    RB_I ("j", (int64_t)snap->seq);
    RB_I ("o", snap->flags);
    RB_I ("r", snap->rate);
    RB_S ("c", snap->currency);
    RB_S ("w", snap->marks_text);
    RB_I ("g", snap->grace_s);
    RB_I ("x", snap->ttl_s);
    RB_I ("m", snap->max_min);
    RB_I ("f", snap->funded_ms);
    RB_I ("T", snap->trial_ms);
    RB_I ("M", snap->paid_amount);
    RB_I ("u", snap->used_ms);
    RB_I ("v", snap->anchor_ms);
    /* The parties get a full grace from now: the outage was not theirs. */
    RB_I ("h", snap->heartbeat_ms > rb->now ? snap->heartbeat_ms : rb->now);
    RB_I ("y", snap->warn_idx);
    RB_I ("e", snap->ended_ms);
    RB_I ("n", snap->end_reason);
#undef RB_S
#undef RB_I
    for (size_t i = 0; i < rb->npay; i++) {
        argv[argc++] = pay[i];
        argv[argc++] = payv[i];
    }
    metering_result_t res;
    s_prearm (self, snap->session_id, rb->now);
    if (metering_store_op (self->store, snap->session_id, "rebuild", rb->now, "", argc, argv, &res))
        return;
    if (res.code == 0)
        rb->rebuilt++;
    else
        rb->present++;
}

static int
s_rebuild (self_t *self, const char *tenant, int64_t *rebuilt, int64_t *present)
{
    s_rebuild_t rb = {self, ppm_clock_now_ms (), 0, 0, "", NULL, NULL, 0};
    for (;;) {
        int n = metering_db_unfinished (self->pg, tenant, rb.cursor, 500, s_rebuild_row, &rb);
        if (n < 0)
            return -1;
        if (n < 500)
            break;
    }
    ppm_log_info ("metering: rebuilt %lld sessions from PostgreSQL (%lld already in Redis)",
                  (long long)rb.rebuilt, (long long)rb.present);
    if (rebuilt)
        *rebuilt = rb.rebuilt;
    if (present)
        *present = rb.present;
    return 0;
}

/* A script found no session sid in Redis. When PostgreSQL holds it
   unfinished, Redis lost it (flushed, or restarted without its data)
   and the lease cycle's rebuild has not run yet: write this one session
   back from its snapshot now, exactly as the rebuild would. Returns 1
   when it is in Redis again (run the operation again), 2 when it is over
   for good (finalized: its record is in *snap; its hash expired after the
   retention, or went with Redis), 0 when it is unknown, -1 when
   PostgreSQL or Redis fails. */
static int
s_restore (self_t *self, const char *tenant, const char *sid, int64_t now, metering_snap_t *snap)
{
    int found = metering_db_get (self->pg, tenant, sid, snap);
    if (found != 1)
        return found < 0 ? -1 : 0;
    if (snap->finalized)
        return 2;
    s_rebuild_t rb = {self, now, 0, 0, "", NULL, NULL, 0};
    s_rebuild_row (snap, &rb);
    if (rb.rebuilt + rb.present == 0)
        return -1;
    ppm_log_kv (PPM_LOG_WARN, "metering: session restored from PostgreSQL (Redis had lost it)",
                "session_id", sid, PPM_LOG_END);
    return 1;
}

/* metering_store_op for an RPC, for a session Redis may have lost. One
   that PostgreSQL has unfinished is restored first (s_restore), so that a
   payment, a heartbeat or an end is never refused as "not found" for a
   session that exists; one over for good is answered from its record as
   the script answers a finished session (End: already ended; anything
   else: FAILED_PRECONDITION "session has ended"). Returns 0 (res filled,
   res->code may be a refusal), -1 when Redis fails, -2 when PostgreSQL
   fails. */
static int
s_op (self_t *self, const char *sid, const char *op, int64_t now, const char *tenant, int argc,
      const char **argv, metering_result_t *res)
{
    if (metering_store_op (self->store, sid, op, now, tenant, argc, argv, res))
        return -1;
    if (res->code != PPM_NOT_FOUND)
        return 0;
    metering_snap_t snap;
    int restored = s_restore (self, tenant, sid, now, &snap);
    if (restored < 0)
        return -2;
    if (restored == 1 && metering_store_op (self->store, sid, op, now, tenant, argc, argv, res))
        return -1;
    if (restored == 2) {
        memset (res, 0, sizeof *res);
        res->next_ms = -1;
        res->snap = snap;
        if (strcmp (op, "end") == 0)
            res->flags = METERING_R_ALREADY;
        else {
            res->code = PPM_FAILED_PRECONDITION;
            snprintf (res->message, sizeof res->message, "session has ended");
        }
    }
    return 0;
}

/* ---- leases ---------------------------------------------------------- */

static int
s_leases (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    self_t *self = arg;
    if (!self->ok)
        return 0;
    /* Redis lost metering's state (flushed, replaced): rebuild once. */
    int alive = metering_store_alive (self->store);
    if (alive == 0 && metering_store_mark_alive (self->store) == 1)
        s_rebuild (self, "", NULL, NULL);
    int64_t real = ppm_clock_real_ms ();
    /* Live = seen within three leases: one slow cycle must not make the
       others grab every bucket back. */
    int live = metering_store_replicas (self->store, self->replica, real, 3 * self->cfg.lease_ms);
    if (live < 1)
        return 0;
    uint32_t nb = (uint32_t)self->cfg.buckets;
    size_t target = (nb + (uint32_t)live - 1) / (uint32_t)live;
    size_t owned = 0;
    for (uint32_t b = 0; b < nb; b++)
        if (self->owned[b]) {
            if (metering_store_lease_renew (self->store, b, self->replica, self->cfg.lease_ms) == 1)
                owned++;
            else
                self->owned[b] = false;
        }
    for (uint32_t b = nb; b-- > 0 && owned > target;)
        if (self->owned[b]) {
            metering_store_lease_release (self->store, b, self->replica);
            self->owned[b] = false;
            owned--;
        }
    /* Up to the fair share, take any free bucket. Beyond it, take a bucket
       only after seeing it free for two cycles in a row: a dead replica's
       buckets are served again within its lease plus two cycles, while a
       bucket just released for balance is left for the replica that is
       short of its share. */
    uint32_t start = (uint32_t)(real % nb);
    for (uint32_t i = 0; i < nb; i++) {
        uint32_t b = (start + i) % nb;
        if (self->owned[b])
            continue;
        bool take = owned < target;
        if (!take) {
            int free_now = metering_store_lease_free (self->store, b);
            self->free_seen[b] = free_now == 1 ? self->free_seen[b] + 1 : 0;
            take = self->free_seen[b] >= 2;
        }
        if (take &&
            metering_store_lease_acquire (self->store, b, self->replica, self->cfg.lease_ms) == 1) {
            self->owned[b] = true;
            self->free_seen[b] = 0;
            owned++;
        }
    }
    if (owned != self->owned_count)
        ppm_log_info ("metering: replica %s holds %zu of %u buckets (%d replicas)", self->replica,
                      owned, nb, live);
    self->owned_count = owned;
    ppm_gauge_set (self->m.leases, (double)owned);
    return 0;
}

/* ---- settlement delivery -------------------------------------------- */

/* Settlements are sent in batches of S_SETTLE_MAX with up to S_SETTLE_FLY
   in flight. The 250 ms timer starts a round; while batches come back
   full, each reply that brings the calls in flight under half the cap
   reads the next batch at once, so a burst of expiries is reported at the
   pace payment answers, not one batch per timer run. */
static void s_settle_send (self_t *self);

static void
s_settle_reply (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    (void)payload;
    (void)size;
    char **ctx = arg;
    self_t *self = (self_t *)ctx[0];
    char *sid = ctx[1];
    if (self->settles_in_flight > 0)
        self->settles_in_flight--;
    if (!status)
        metering_db_settle_ack (self->pg, sid, ppm_clock_real_ms ());
    else
        ppm_log_warn ("metering: payment.Settle %s: %s %s", sid,
                      ppm_code_name (ppm_status_code (status)), ppm_status_message (status));
    free (sid);
    free (ctx);
    if (self->settles_more && self->settles_in_flight <= S_SETTLE_FLY / 2)
        s_settle_send (self);
}

static void
s_settle_send (self_t *self)
{
    self->settles_more = false;
    while (self->payment && self->settles_in_flight + S_SETTLE_MAX <= S_SETTLE_FLY) {
        metering_settle_t due[S_SETTLE_MAX];
        int n = metering_db_settle_due (self->pg, ppm_clock_real_ms (), due, S_SETTLE_MAX);
        for (int i = 0; i < n; i++) {
            Ppm__V1__SettleRequest req = PPM__V1__SETTLE_REQUEST__INIT;
            req.tenant_id = due[i].tenant;
            req.session_id = due[i].session_id;
            req.used_ms = due[i].paid_used_ms;
            req.ended_at_ms = due[i].ended_ms;
            req.reason = due[i].reason;
            ppm_rpc_req_t rq = {.method = "payment.Settle",
                                .tenant = due[i].tenant,
                                .timeout_ms = 5000,
                                .idempotent = true};
            char **ctx = malloc (2 * sizeof *ctx);
            char *sid = strdup (due[i].session_id);
            if (!ctx || !sid) {
                free (ctx);
                free (sid);
                return; /* the rows are retried after their back-off */
            }
            ctx[0] = (char *)self;
            ctx[1] = sid;
            if (ppm_rpc_client_call (self->payment, &rq, &req.base, s_settle_reply, ctx) == 0)
                self->settles_in_flight++;
            else {
                free (ctx[1]);
                free (ctx);
            }
        }
        if (n < S_SETTLE_MAX)
            return;
        self->settles_more = true;
    }
}

static int
s_settle (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    self_t *self = arg;
    if (!self->ok)
        return 0;
    if (self->settle_runs++ % 20 == 0) {
        int64_t pending = metering_db_settle_pending (self->pg);
        if (pending >= 0)
            ppm_gauge_set (self->m.pending, (double)pending);
    }
    s_settle_send (self);
    return 0;
}

/* ---- RPC helpers ----------------------------------------------------- */

/* The request's tenant: the envelope's; a message's own tenant_id must
   agree. NULL after answering the call with an error. */
static const char *
s_tenant (ppm_rpc_call_t **call, const char *msg_tenant)
{
    const char *tenant = ppm_rpc_call_tenant (*call);
    if (msg_tenant && *msg_tenant && strcmp (msg_tenant, tenant)) {
        ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "tenant mismatch");
        ppm_status_add_field (st, "tenant_id", "must equal the envelope's tenant");
        ppm_rpc_call_fail (call, &st);
        return NULL;
    }
    if (!metering_id_valid (tenant)) {
        ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "tenant required");
        ppm_status_add_field (st, "tenant_id", "is required");
        ppm_rpc_call_fail (call, &st);
        return NULL;
    }
    return tenant;
}

static bool
s_sid_ok (ppm_rpc_call_t **call, const char *sid)
{
    if (metering_sid_valid (sid))
        return true;
    ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid session id");
    ppm_status_add_field (st, "session_id", "is not a session id");
    ppm_rpc_call_fail (call, &st);
    return false;
}

/* Answers a script refusal: INVALID_ARGUMENT messages are "field: why". */
static void
s_refuse (ppm_rpc_call_t **call, const metering_result_t *res)
{
    ppm_code_t code = res->code > 0 && res->code <= 16 ? (ppm_code_t)res->code : PPM_INTERNAL;
    ppm_status_t *st = ppm_status_new (code, "%s", res->message);
    const char *colon = strchr (res->message, ':');
    if ((code == PPM_INVALID_ARGUMENT || code == PPM_OUT_OF_RANGE) && colon) {
        char field[64];
        size_t len = (size_t)(colon - res->message);
        if (len >= sizeof field)
            len = sizeof field - 1;
        memcpy (field, res->message, len);
        field[len] = '\0';
        ppm_status_add_field (st, field, "%s", colon[1] == ' ' ? colon + 2 : colon + 1);
    }
    ppm_rpc_call_fail (call, &st);
}

static void
s_unavailable (ppm_rpc_call_t **call, const char *what)
{
    ppm_rpc_call_error (call, PPM_UNAVAILABLE, "%s is unavailable; retry later", what);
}

static void
s_reply_session (ppm_rpc_call_t **call, const metering_snap_t *snap, int64_t now)
{
    Ppm__V1__Session session;
    metering_snap_to_proto (snap, now, &session);
    Ppm__V1__SessionReply reply = PPM__V1__SESSION_REPLY__INIT;
    reply.session = &session;
    ppm_rpc_call_reply (call, &reply.base);
}

/* ---- RPC handlers ---------------------------------------------------- */

static void
s_create (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    Ppm__V1__CreateRequest *req =
        (Ppm__V1__CreateRequest *)ppm_rpc_call_unpack (call, &ppm__v1__create_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "not a CreateRequest");
        return;
    }
    int64_t now = ppm_clock_now_ms ();
    const char *tenant = s_tenant (&call, req->tenant_id);
    if (!tenant)
        goto cleanup;
    ppm_status_t *st = metering_create_check (req, tenant, now);
    if (st) {
        ppm_rpc_call_fail (&call, &st);
        goto cleanup;
    }
    const Ppm__V1__Quote *q = req->quote;
    if (q->paid && q->max_concurrent_sessions > 0) {
        int64_t count = 0;
        if (metering_db_concurrent (self->pg, tenant, req->payer, &count)) {
            s_unavailable (&call, "PostgreSQL");
            goto cleanup;
        }
        if (count >= q->max_concurrent_sessions) {
            ppm_rpc_call_error (&call, PPM_RESOURCE_EXHAUSTED,
                                "the payer already has %lld unfinished paid sessions (at most "
                                "%lld)",
                                (long long)count, (long long)q->max_concurrent_sessions);
            goto cleanup;
        }
    }
    int64_t trial = 0;
    if (q->paid && q->free_trial_minutes > 0 &&
        metering_db_trial_grant (self->pg, tenant, req->payer, req->payee,
                                 q->free_trial_minutes * 60000, &trial)) {
        s_unavailable (&call, "PostgreSQL");
        goto cleanup;
    }
    char sid[METERING_SID_LEN + 1];
    metering_sid_new (now, sid);
    char buf[1024];
    const char *argv[64];
    int argc = metering_create_fields (req, tenant, now, trial, buf, sizeof buf, argv, 64);
    if (argc < 0) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "session fields too long");
        goto cleanup;
    }
    s_prearm (self, sid, now);
    metering_result_t res;
    if (metering_store_op (self->store, sid, "create", now, tenant, argc, argv, &res) ||
        res.code != 0) {
        if (trial > 0)
            metering_db_trial_refund (self->pg, tenant, req->payer, req->payee, trial);
        s_unavailable (&call, "Redis");
        goto cleanup;
    }
    if (metering_db_create (self->pg, &res.snap, q->quote_id, q->settings_version, now))
        ppm_log_warn ("metering: session %s not yet in PostgreSQL", sid);
    s_after (self, &res, now, now);
    s_reply_session (&call, &res.snap, now);
cleanup:
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

static void
s_fund (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    Ppm__V1__FundRequest *req =
        (Ppm__V1__FundRequest *)ppm_rpc_call_unpack (call, &ppm__v1__fund_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "not a FundRequest");
        return;
    }
    int64_t now = ppm_clock_now_ms ();
    const char *tenant = s_tenant (&call, req->tenant_id);
    if (!tenant || !s_sid_ok (&call, req->session_id))
        goto cleanup;
    ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid funding");
    int bad = 0;
    if (!metering_id_valid (req->payment_id))
        bad += ppm_status_add_field (st, "payment_id", "must be 1-64 of [A-Za-z0-9_.:@-]") + 1;
    if (req->minutes < 1 || req->minutes > 100000)
        bad += ppm_status_add_field (st, "minutes", "must be 1..100000") + 1;
    if (req->amount < 0)
        bad += ppm_status_add_field (st, "amount", "must be >= 0") + 1;
    if (!req->currency || strlen (req->currency) != 3)
        bad += ppm_status_add_field (st, "currency", "must be an ISO 4217 code") + 1;
    if (bad) {
        ppm_rpc_call_fail (&call, &st);
        goto cleanup;
    }
    ppm_status_destroy (&st);
    char other[METERING_SID_LEN + 8] = "";
    int found = metering_db_payment_session (self->pg, req->payment_id, other, sizeof other);
    if (found < 0) {
        s_unavailable (&call, "PostgreSQL");
        goto cleanup;
    }
    if (found && strcmp (other, req->session_id)) {
        st = ppm_status_new (PPM_FAILED_PRECONDITION, "payment already applied to another session");
        ppm_status_add_field (st, "payment_id", "was applied to another session");
        ppm_rpc_call_fail (&call, &st);
        goto cleanup;
    }
    char add[24];
    char amount[24];
    snprintf (add, sizeof add, "%lld", (long long)(req->minutes * 60000));
    snprintf (amount, sizeof amount, "%lld", (long long)req->amount);
    char pfield[12];
    metering_payment_field (req->payment_id, pfield);
    const char *argv[] = {pfield, add, amount, req->currency};
    s_prearm (self, req->session_id, now);
    metering_result_t res;
    int rc = s_op (self, req->session_id, "fund", now, tenant, 4, argv, &res);
    if (rc) {
        s_unavailable (&call, rc == -2 ? "PostgreSQL" : "Redis");
        goto cleanup;
    }
    if (res.code != 0) {
        s_refuse (&call, &res);
        goto cleanup;
    }
    /* OK only once the credit is durable: payment re-sends until then. */
    if (metering_db_payment_record (self->pg, &res.snap, req->payment_id, req->minutes,
                                    req->minutes * 60000, req->amount, req->currency, now)) {
        /* Applied in Redis (so the payer has the time); the pre-armed
           entry makes the tick write the snapshot; payment re-sends and
           gets already_applied once PostgreSQL has it. */
        s_publish_all (self, &res);
        s_unavailable (&call, "PostgreSQL");
        goto cleanup;
    }
    s_after (self, &res, now, now);
    Ppm__V1__Session session;
    metering_snap_to_proto (&res.snap, now, &session);
    Ppm__V1__FundReply reply = PPM__V1__FUND_REPLY__INIT;
    reply.session = &session;
    reply.already_applied = (res.flags & METERING_R_ALREADY) != 0;
    ppm_rpc_call_reply (&call, &reply.base);
cleanup:
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

static int
s_by_code (const char *by)
{
    if (!by || !*by || strcmp (by, "platform") == 0)
        return METERING_END_PLATFORM;
    if (strcmp (by, "payer") == 0)
        return METERING_END_PAYER;
    if (strcmp (by, "payee") == 0)
        return METERING_END_PAYEE;
    return -1;
}

/* Start, Heartbeat, Pause, Resume and End share their checks. */
static int
s_session_op (self_t *self, ppm_rpc_call_t **call, const char *op, const char *msg_tenant,
              const char *sid, const char *by, const char *actor, int64_t at_ms,
              metering_result_t *res, int64_t now)
{
    const char *tenant = s_tenant (call, msg_tenant);
    if (!tenant || !s_sid_ok (call, sid))
        return -1;
    int code = s_by_code (by);
    if (code < 0 || at_ms < 0) {
        ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid request");
        if (code < 0)
            ppm_status_add_field (st, "by", "must be payer, payee or platform");
        if (at_ms < 0)
            ppm_status_add_field (st, "at_ms", "must be >= 0");
        ppm_rpc_call_fail (call, &st);
        return -1;
    }
    char at[24];
    char reason[8];
    snprintf (at, sizeof at, "%lld", (long long)at_ms);
    snprintf (reason, sizeof reason, "%d", code);
    const char *argv[] = {by && *by ? by : "platform", actor ? actor : "", at, reason};
    int64_t prearm = -1;
    if (strcmp (op, "hb") != 0)
        prearm = s_prearm (self, sid, now);
    int rc = s_op (self, sid, op, now, tenant, 4, argv, res);
    if (rc) {
        s_unavailable (call, rc == -2 ? "PostgreSQL" : "Redis");
        return -1;
    }
    if (res->code != 0) {
        s_refuse (call, res);
        return -1;
    }
    s_after (self, res, now, prearm);
    return 0;
}

static void
s_simple (ppm_rpc_call_t *call, void *arg, const char *op)
{
    self_t *self = arg;
    Ppm__V1__SessionRequest *req = (Ppm__V1__SessionRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__session_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "not a SessionRequest");
        return;
    }
    int64_t now = ppm_clock_now_ms ();
    metering_result_t res;
    if (s_session_op (self, &call, op, req->tenant_id, req->session_id, req->by, req->actor,
                      req->at_ms, &res, now) == 0)
        s_reply_session (&call, &res.snap, now);
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

static void
s_start (ppm_rpc_call_t *call, void *arg)
{
    s_simple (call, arg, "start");
}

static void
s_heartbeat (ppm_rpc_call_t *call, void *arg)
{
    s_simple (call, arg, "hb");
}

static void
s_pause (ppm_rpc_call_t *call, void *arg)
{
    s_simple (call, arg, "pause");
}

static void
s_resume (ppm_rpc_call_t *call, void *arg)
{
    s_simple (call, arg, "resume");
}

static void
s_end (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    Ppm__V1__EndRequest *req =
        (Ppm__V1__EndRequest *)ppm_rpc_call_unpack (call, &ppm__v1__end_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "not an EndRequest");
        return;
    }
    int64_t now = ppm_clock_now_ms ();
    metering_result_t res;
    if (s_session_op (self, &call, "end", req->tenant_id, req->session_id, req->by, req->actor,
                      req->at_ms, &res, now) == 0) {
        Ppm__V1__Session session;
        metering_snap_to_proto (&res.snap, now, &session);
        Ppm__V1__EndReply reply = PPM__V1__END_REPLY__INIT;
        reply.session = &session;
        reply.used_ms = session.used_ms;
        reply.billed_amount = session.billed_amount;
        reply.already_ended = (res.flags & METERING_R_ALREADY) != 0;
        ppm_rpc_call_reply (&call, &reply.base);
    }
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

/* The session as of now, for metering.Get. From Redis, brought up to now
   first when a change of state is overdue: the tick of the replica holding
   its bucket is late (that replica died and its lease has not run out, or
   this one just started), and nobody may be told "active" after the paid
   time is up (the transition happens once, whoever runs it). From
   PostgreSQL when it is over for good and its hash is gone; restored into
   Redis when Redis lost it. A live session is never answered from
   PostgreSQL's snapshot, which may be behind the clock: while Redis is
   unreachable, Get answers UNAVAILABLE for it, as every other RPC does.
   Returns 1 (snap filled), 0 (unknown), -1 (unavailable). */
static int
s_read (self_t *self, const char *tenant, const char *sid, int64_t now, metering_snap_t *snap)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int found = metering_store_get (self->store, sid, snap);
        if (found == 1 && strcmp (snap->tenant, tenant) != 0)
            found = 0;
        if (found == 1 && !snap->finalized && metering_snap_overdue (snap, now)) {
            metering_result_t res;
            if (metering_store_op (self->store, sid, "tick", now, tenant, 0, NULL, &res) ||
                res.code != 0)
                return -1;
            if (res.flags & METERING_R_GONE)
                found = 0;
            else if (res.nevents > 0) {
                s_after (self, &res, now, -1);
                *snap = res.snap;
            } else {
                found = metering_store_get (self->store, sid, snap);
                if (found == 1 && strcmp (snap->tenant, tenant) != 0)
                    found = 0;
            }
        }
        if (found == 1)
            return 1;
        metering_snap_t record;
        int in_pg = metering_db_get (self->pg, tenant, sid, &record);
        if (in_pg < 0 || (in_pg == 0 && found < 0))
            return -1;
        if (in_pg == 0)
            return 0;
        if (record.finalized) {
            *snap = record;
            return 1;
        }
        if (found < 0 || s_restore (self, tenant, sid, now, &record) != 1)
            return -1;
    }
    return -1;
}

static void
s_get (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    Ppm__V1__SessionRequest *req = (Ppm__V1__SessionRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__session_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "not a SessionRequest");
        return;
    }
    int64_t now = ppm_clock_now_ms ();
    const char *tenant = s_tenant (&call, req->tenant_id);
    if (!tenant || !s_sid_ok (&call, req->session_id))
        goto cleanup;
    metering_snap_t snap;
    int found = s_read (self, tenant, req->session_id, now, &snap);
    if (found < 0)
        s_unavailable (&call, "session store");
    else if (found == 0)
        ppm_rpc_call_error (&call, PPM_NOT_FOUND, "session not found");
    else
        s_reply_session (&call, &snap, now);
cleanup:
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

typedef struct {
    self_t *self;
    metering_snap_t *snaps;
    size_t count;
} s_list_t;

static void
s_list_row (const metering_snap_t *snap, void *arg)
{
    s_list_t *list = arg;
    metering_snap_t *dst = &list->snaps[list->count++];
    *dst = *snap;
    if (!snap->finalized) {
        metering_snap_t live;
        if (metering_store_get (list->self->store, snap->session_id, &live) == 1 &&
            strcmp (live.tenant, snap->tenant) == 0)
            *dst = live;
    }
}

static void
s_list (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    Ppm__V1__ListRequest *req =
        (Ppm__V1__ListRequest *)ppm_rpc_call_unpack (call, &ppm__v1__list_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "not a ListRequest");
        return;
    }
    int64_t now = ppm_clock_now_ms ();
    const char *tenant = s_tenant (&call, req->tenant_id);
    if (!tenant)
        goto cleanup;
    int limit = req->limit == 0 ? 50 : req->limit;
    if (limit < 1 || limit > 200 ||
        (req->cursor && *req->cursor && !metering_sid_valid (req->cursor)) || req->state < 0 ||
        req->state > 5) {
        ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid list request");
        if (limit < 1 || limit > 200)
            ppm_status_add_field (st, "limit", "must be 1..200");
        if (req->cursor && *req->cursor && !metering_sid_valid (req->cursor))
            ppm_status_add_field (st, "cursor", "is not a cursor from a previous reply");
        if (req->state < 0 || req->state > 5)
            ppm_status_add_field (st, "state", "is not a session state");
        ppm_rpc_call_fail (&call, &st);
        goto cleanup;
    }
    s_list_t list = {self, calloc ((size_t)limit, sizeof (metering_snap_t)), 0};
    Ppm__V1__Session *sessions = calloc ((size_t)limit, sizeof *sessions);
    Ppm__V1__Session **ptrs = calloc ((size_t)limit, sizeof *ptrs);
    if (!list.snaps || !sessions || !ptrs) {
        ppm_rpc_call_error (&call, PPM_INTERNAL, "out of memory");
    } else if (metering_db_list (self->pg, tenant, (int)req->state, req->payer, req->payee,
                                 req->cursor, limit, s_list_row, &list) < 0) {
        s_unavailable (&call, "PostgreSQL");
    } else {
        Ppm__V1__ListReply reply = PPM__V1__LIST_REPLY__INIT;
        for (size_t i = 0; i < list.count; i++) {
            metering_snap_to_proto (&list.snaps[i], now, &sessions[i]);
            ptrs[i] = &sessions[i];
        }
        reply.n_sessions = list.count;
        reply.sessions = ptrs;
        reply.next_cursor =
            list.count == (size_t)limit ? list.snaps[list.count - 1].session_id : "";
        ppm_rpc_call_reply (&call, &reply.base);
    }
    free (list.snaps);
    free (sessions);
    free (ptrs);
cleanup:
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

static void
s_rebuild_rpc (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    Ppm__V1__RebuildRequest *req = (Ppm__V1__RebuildRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__rebuild_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "not a RebuildRequest");
        return;
    }
    const char *tenant =
        req->tenant_id && *req->tenant_id ? req->tenant_id : ppm_rpc_call_tenant (call);
    int64_t rebuilt = 0;
    int64_t present = 0;
    metering_store_mark_alive (self->store);
    if (s_rebuild (self, tenant ? tenant : "", &rebuilt, &present))
        s_unavailable (&call, "PostgreSQL");
    else {
        Ppm__V1__RebuildReply reply = PPM__V1__REBUILD_REPLY__INIT;
        reply.rebuilt = rebuilt;
        reply.present = present;
        ppm_rpc_call_reply (&call, &reply.base);
    }
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

/* ---- actor ----------------------------------------------------------- */

static int
s_pipe (zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void)loop;
    self_t *self = arg;
    zmsg_t *msg = zmsg_recv (pipe);
    if (!msg)
        return -1;
    char *cmd = zmsg_popstr (msg);
    int rc = 0;
    if (!cmd || streq (cmd, "$TERM"))
        rc = -1;
    else if (streq (cmd, "PORT"))
        zstr_sendf (pipe, "%d", self->ok ? ppm_rpc_server_port (self->rpc) : -1);
    else if (streq (cmd, "PUB"))
        zstr_send (pipe, self->ok ? ppm_events_pub_endpoint (self->pub) : "");
    else if (streq (cmd, "BUCKETS"))
        zstr_sendf (pipe, "%zu", self->owned_count);
    else
        ppm_log_warn ("metering: unknown pipe command %s", cmd);
    free (cmd);
    zmsg_destroy (&msg);
    return rc;
}

static char *
s_dup (const char *text)
{
    return text ? strdup (text) : NULL;
}

static void
s_metrics_init (s_metrics_t *m)
{
    ppm_metrics_t *reg = ppm_metrics_global ();
    m->started = ppm_metrics_counter (reg, "ppm_sessions_started_total",
                                      "Sessions that became active", "kind");
    m->expired = ppm_metrics_counter (reg, "ppm_sessions_expired_total",
                                      "Sessions that ran out of paid time", NULL);
    m->ended = ppm_metrics_counter (reg, "ppm_sessions_ended_total", "Sessions ended", "by");
    m->tick = ppm_metrics_histogram (reg, "ppm_tick_duration_seconds", "Time one tick took", NULL,
                                     NULL, 0);
    m->lateness =
        ppm_metrics_histogram (reg, "ppm_tick_lateness_seconds",
                               "How late a deadline was handled after it fell due", NULL, NULL, 0);
    m->leases =
        ppm_metrics_gauge (reg, "ppm_bucket_leases_held", "Tick buckets this replica holds", NULL);
    m->pending = ppm_metrics_gauge (reg, "ppm_usage_reports_pending",
                                    "Settlements not yet acknowledged by payment", NULL);
    m->active = ppm_metrics_gauge (reg, "ppm_sessions_active", "Sessions active or paused", NULL);
    /* The closed label sets exist from the start, at 0. */
    static const char *const kinds[] = {"chat", "call"};
    static const char *const bys[] = {"payer", "payee", "platform", "ttl"};
    for (size_t i = 0; i < 2; i++)
        ppm_counter_inc (m->started, 0, kinds[i]);
    for (size_t i = 0; i < 4; i++)
        ppm_counter_inc (m->ended, 0, bys[i]);
}

static int
s_start_up (self_t *self)
{
    s_metrics_init (&self->m);
    const char *error = NULL;
    ppm_pg_options_t pgo = {.connect_timeout_ms = 3000,
                            .statement_timeout_ms = 5000,
                            .application_name = "ppm-metering"};
    self->pg = ppm_pg_new (self->cfg.pg_url, &pgo, &error);
    if (!self->pg) {
        ppm_log_error ("metering: PPM_PG_URL: %s", error ? error : "invalid");
        return -1;
    }
    if (metering_db_migrate (self->pg, &error)) {
        ppm_log_error ("metering: %s", error ? error : "migrations failed");
        return -1;
    }
    self->store = metering_store_new (self->cfg.redis_url, 2000);
    if (!self->store) {
        ppm_log_error ("metering: PPM_REDIS_URL is not a redis:// URL");
        return -1;
    }
    self->rpc = ppm_rpc_server_new (self->loop, self->cfg.rpc_bind);
    self->pub = ppm_events_pub_new (self->cfg.pub_bind);
    if (!self->rpc || !self->pub) {
        ppm_log_error ("metering: cannot bind %s / %s", self->cfg.rpc_bind, self->cfg.pub_bind);
        return -1;
    }
    if (self->cfg.payment_endpoint && *self->cfg.payment_endpoint) {
        self->payment = ppm_rpc_client_new (self->cfg.payment_endpoint);
        if (self->payment)
            ppm_rpc_client_attach (self->payment, self->loop);
    }
    ppm_rpc_server_handle (self->rpc, "metering.Create", s_create, self);
    ppm_rpc_server_handle (self->rpc, "metering.Fund", s_fund, self);
    ppm_rpc_server_handle (self->rpc, "metering.Start", s_start, self);
    ppm_rpc_server_handle (self->rpc, "metering.Heartbeat", s_heartbeat, self);
    ppm_rpc_server_handle (self->rpc, "metering.Pause", s_pause, self);
    ppm_rpc_server_handle (self->rpc, "metering.Resume", s_resume, self);
    ppm_rpc_server_handle (self->rpc, "metering.End", s_end, self);
    ppm_rpc_server_handle (self->rpc, "metering.Get", s_get, self);
    ppm_rpc_server_handle (self->rpc, "metering.List", s_list, self);
    ppm_rpc_server_handle (self->rpc, "metering.Rebuild", s_rebuild_rpc, self);
    self->results = calloc (S_CHUNK, sizeof *self->results);
    self->marks = calloc (S_CHUNK, sizeof *self->marks);
    if (!self->results || !self->marks)
        return -1;
    /* Redis without metering's marker lost its state (or is new): rebuild. */
    if (metering_store_alive (self->store) == 0 && metering_store_mark_alive (self->store) == 1)
        s_rebuild (self, "", NULL, NULL);
    s_leases (self->loop, 0, self);
    zloop_timer (self->loop, (size_t)self->cfg.tick_ms, 0, s_tick, self);
    zloop_timer (self->loop, (size_t)(self->cfg.lease_ms / 3 > 0 ? self->cfg.lease_ms / 3 : 1), 0,
                 s_leases, self);
    zloop_timer (self->loop, 250, 0, s_settle, self);
    return 0;
}

void
metering_server_actor (zsock_t *pipe, void *args)
{
    self_t *self = calloc (1, sizeof *self);
    assert (self);
    self->cfg = *(const metering_config_t *)args;
    self->strings[0] = s_dup (self->cfg.rpc_bind);
    self->strings[1] = s_dup (self->cfg.pub_bind);
    self->strings[2] = s_dup (self->cfg.redis_url);
    self->strings[3] = s_dup (self->cfg.pg_url);
    self->strings[4] = s_dup (self->cfg.payment_endpoint);
    self->strings[5] = s_dup (self->cfg.replica_id);
    self->cfg.rpc_bind = self->strings[0];
    self->cfg.pub_bind = self->strings[1];
    self->cfg.redis_url = self->strings[2];
    self->cfg.pg_url = self->strings[3];
    self->cfg.payment_endpoint = self->strings[4];
    if (self->cfg.buckets < 1 || self->cfg.buckets > S_BUCKETS_MAX)
        self->cfg.buckets = 64;
    if (self->cfg.tick_ms < 1)
        self->cfg.tick_ms = 200;
    if (self->cfg.lease_ms < 30)
        self->cfg.lease_ms = 3000;
    if (self->cfg.retention_ms < 1)
        self->cfg.retention_ms = 86400000;
    if (self->cfg.batch < 1)
        self->cfg.batch = 20000;
    if (self->strings[5] && *self->strings[5])
        snprintf (self->replica, sizeof self->replica, "%s", self->strings[5]);
    else {
        char host[32] = "";
        gethostname (host, sizeof host - 1);
        snprintf (self->replica, sizeof self->replica, "%s-%d-%04x", host, (int)getpid (),
                  (unsigned)(ppm_clock_real_mono_us () & 0xffff));
    }
    self->pipe = pipe;
    self->loop = zloop_new ();
    zloop_reader (self->loop, pipe, s_pipe, self);
    self->ok = s_start_up (self) == 0;
    zsock_signal (pipe, 0);
    zloop_start (self->loop);

    /* Give up leases at once so another replica takes over without waiting. */
    if (self->ok)
        for (uint32_t b = 0; b < (uint32_t)self->cfg.buckets; b++)
            if (self->owned[b])
                metering_store_lease_release (self->store, b, self->replica);
    ppm_rpc_client_destroy (&self->payment);
    ppm_rpc_server_destroy (&self->rpc);
    ppm_events_pub_destroy (&self->pub);
    zloop_destroy (&self->loop);
    metering_store_destroy (&self->store);
    ppm_pg_destroy (&self->pg);
    free (self->due);
    free (self->results);
    free (self->marks);
    free (self->journal);
    free (self->finals);
    for (int i = 0; i < 6; i++)
        free (self->strings[i]);
    free (self);
}
