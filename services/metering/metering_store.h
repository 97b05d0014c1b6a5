/*  metering_store: metering's Redis, through hiredis with bounded waits.

    Why not ppm_redis alone: the tick's cost must grow with the sessions
    that are due, and a burst of 10,000 expiries must be handled in well
    under a second, which needs pipelining (many EVALSHAs per round trip).
    ppm_redis sends one command per round trip, so this module keeps its
    own connection and pipelines. Every wait is bounded by the command
    timeout; a broken connection is dropped and re-made on the next call.

    Every session change runs the one Lua script (metering_script) against
    one key, "{s:<sid>}"; the bucket sorted sets "{d:<n>}" are changed
    outside the script (they live in other cluster slots), in an order that
    keeps this invariant: every unfinished session has a bucket entry whose
    score is at or before its true next deadline (see metering_server.c).

    BLOCKING (bounded by the command timeout): every call but _new.
*/
#ifndef METERING_STORE_H_INCLUDED
#define METERING_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "metering_model.h"

#define METERING_EVENTS_MAX 16

/* Result flags of a script run. */
#define METERING_R_ALREADY  1 /* already applied / already ended / no-op */
#define METERING_R_JOURNAL  2 /* PostgreSQL is behind this session (j < q) */
#define METERING_R_FINALIZE 4 /* ended/expired for good, settlement not recorded */
#define METERING_R_GONE     8 /* tick: the session key no longer exists */

typedef struct {
    const char *name; /* "session.warning" (static string) */
    uint64_t seq;
    int state;
    int64_t at_ms;
    int64_t used_ms;
    int64_t remaining_ms;
    int64_t mark_s;
    int64_t added_ms;
    char reason[16];
} metering_event_t;

typedef struct {
    int code;          /* ppm_code_t: 0 OK, else the script's refusal */
    char message[160]; /* the refusal's text ("field: why" for INVALID_ARGUMENT) */
    int flags;         /* METERING_R_* */
    int64_t next_ms;   /* next deadline, -1 = none */
    size_t nevents;
    metering_event_t events[METERING_EVENTS_MAX];
    metering_snap_t snap; /* the session after the change (valid when code is 0 and not GONE) */
} metering_result_t;

typedef struct _metering_store_t metering_store_t;

/* Parses redis://host[:port][/db]; connects lazily. NULL on a bad URL. */
metering_store_t *metering_store_new (const char *url, int64_t timeout_ms);
void metering_store_destroy (metering_store_t **self_p);
/* Whether the last command reached Redis. */
bool metering_store_up (metering_store_t *self);

/* Runs the script's op on one session. argv/argc are the op's arguments
   after (op, now, tenant). Returns 0 when Redis answered (out->code may
   still be a refusal), -1 when Redis is unreachable or answered garbage. */
int metering_store_op (metering_store_t *self, const char *sid, const char *op, int64_t now_ms,
                       const char *tenant, int argc, const char **argv, metering_result_t *out);
/* The same op on n sessions, pipelined, with no tenant check; args1 (may
   be NULL) gives each session one extra argument. outs[i] gets each
   result (outs[i].code -1 when unparsable); returns 0, or -1 when the
   pipeline broke (outs undefined). */
int metering_store_op_many (metering_store_t *self, size_t n, const char *const *sids,
                            const char *op, int64_t now_ms, const char *const *args1,
                            metering_result_t *outs);
/* Reads one session without changing it: 1 found, 0 missing, -1 error. */
int metering_store_get (metering_store_t *self, const char *sid, metering_snap_t *snap);

/* The due members of each bucket (score ≤ now_ms), at most limit each,
   pipelined. fn is called per member with its bucket and score. Returns
   the number of members, or -1 on error. */
typedef void (metering_due_fn) (uint32_t bucket, const char *sid, int64_t score, void *arg);
int metering_store_due (metering_store_t *self, const uint32_t *buckets, size_t nbuckets,
                        int64_t now_ms, size_t limit, metering_due_fn *fn, void *arg);
/* Compare-and-set of bucket entries: for each i, when sids[i] still has
   score olds[i], sets it to news[i] (news[i] < 0 removes it). One call. */
int metering_store_rearm (metering_store_t *self, uint32_t bucket, size_t n,
                          const char *const *sids, const int64_t *olds, const int64_t *news);
/* ZADD LT: moves a session's entry earlier (or adds it). */
int metering_store_arm (metering_store_t *self, uint32_t bucket, const char *sid, int64_t score);

/* After an RPC's script: sets sid's entry to next when it still holds the
   score prearm the RPC set (-1: none), is missing, or is later than next;
   next < 0 removes it when it still holds prearm. */
int metering_store_settle_entry (metering_store_t *self, uint32_t bucket, const char *sid,
                                 int64_t prearm, int64_t next);

/* Leases of buckets (real milliseconds). _acquire and _renew take a free
   lease or extend one held under the same name (a restarted replica with
   a stable name gets its buckets back at once); _release only drops one's
   own. 1 done, 0 not (held by another), -1 error. */
int metering_store_lease_acquire (metering_store_t *self, uint32_t bucket, const char *me,
                                  int64_t ttl_ms);
int metering_store_lease_renew (metering_store_t *self, uint32_t bucket, const char *me,
                                int64_t ttl_ms);
/* 1 when nobody holds bucket's lease, 0 when somebody does, -1 error. */
int metering_store_lease_free (metering_store_t *self, uint32_t bucket);
int metering_store_lease_release (metering_store_t *self, uint32_t bucket, const char *me);
/* Registers self as live at real time now and counts replicas seen within
   window_ms. Returns the count (≥ 1) or -1. */
int metering_store_replicas (metering_store_t *self, const char *me, int64_t now_real_ms,
                             int64_t window_ms);
/* The "{m}:alive" marker: 1 present, 0 missing, -1 error. _mark sets it
   when missing and returns 1 when this call set it. */
int metering_store_alive (metering_store_t *self);
int metering_store_mark_alive (metering_store_t *self);

/* Generic command (printf-like hiredis format) for tests and the bench;
   returns the reply (caller frees with freeReplyObject) or NULL. */
void *metering_store_command (metering_store_t *self, const char *format, ...);
/* Appends a command to the pipeline / reads one pending reply (bench). */
int metering_store_append (metering_store_t *self, int argc, const char **argv);
int metering_store_flush (metering_store_t *self, size_t replies);

#endif
