/*  metering_model: the session as data, with no I/O. Session ids, the
    Redis key layout, the compact hash encoding (one-letter field names, so
    that Redis keeps each session as a small listpack), and the arithmetic
    of a session's clock (used, remaining, deadline, billed amount). The
    Lua script (metering_script) changes sessions; this module reads them.

    Redis keys (docs/ARCHITECTURE.md "Metering service"):
      {s:<sid>}     hash, one session (fields below)
      {d:<n>}       sorted set, bucket n of deadlines: member sid, score the
                    session's next deadline (ppm ms)
      {l:<n>}       string, the lease of bucket n: the holder's replica id
      {m}:replicas  sorted set, live replicas by last lease cycle (real ms)
      {m}:alive     string, set once Redis holds metering's state; missing
                    means Redis lost it (rebuild from PostgreSQL)

    Session hash fields: t tenant, a payer, b payee, k kind (0 chat, 1
    call), s state (SessionState numbers), q last event seq, o flags, r
    rate per minute, c currency, w warning marks "300,60,10", g grace_s,
    x session_ttl_s, m max_session_minutes, f funded ms, T trial ms, M paid
    amount, u used ms at the anchor, v anchor (active since, ppm ms), h last
    heartbeat, y warning marks passed, e ended/expired at, n end reason, j
    seq journaled to PostgreSQL, Z finalized (settlement recorded), and per
    payment applied "p" + 8 base32 characters of a 40-bit hash of its id
    (metering_payment_field) → ms credited. Fields whose value is 0 or
    empty are left out (read as 0): every byte counts a million times.
*/
#ifndef METERING_MODEL_H_INCLUDED
#define METERING_MODEL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "proto/metering.pb-c.h"
#include "ppm_status.h"

#define METERING_SID_LEN   17 /* "s" + 16 base32 characters */
#define METERING_ID_MAX    64 /* tenant, payer, payee, payment ids */
#define METERING_MARKS_MAX 8

/* Session flags (field o). */
#define METERING_F_PAID       1
#define METERING_F_PER_SECOND 2
#define METERING_F_AUTHORIZE  4
#define METERING_F_REFUND     8
#define METERING_F_MANUAL     16
#define METERING_F_PPAUSE     32

/* End reasons (field n). */
typedef enum {
    METERING_END_NONE = 0,
    METERING_END_PAYER = 1,
    METERING_END_PAYEE = 2,
    METERING_END_PLATFORM = 3,
    METERING_END_EXPIRED = 4,
    METERING_END_STALE = 5,
    METERING_END_MAX_SESSION = 6
} metering_end_t;

typedef struct {
    char session_id[METERING_SID_LEN + 1];
    char tenant[METERING_ID_MAX + 1];
    char payer[METERING_ID_MAX + 1];
    char payee[METERING_ID_MAX + 1];
    char currency[8];
    char marks_text[64];
    int64_t marks[METERING_MARKS_MAX]; /* descending seconds */
    size_t marks_count;
    int kind;          /* 0 chat, 1 call */
    int state;         /* Ppm__V1__SessionState */
    uint64_t seq;      /* last event sequence number */
    int64_t flags;     /* METERING_F_* */
    int64_t rate;      /* per minute, minor units */
    int64_t grace_s;   /* heartbeat grace */
    int64_t ttl_s;     /* stale session TTL */
    int64_t max_min;   /* max_session_minutes, 0 = none */
    int64_t funded_ms; /* credited, trial included */
    int64_t trial_ms;  /* of which free trial */
    int64_t paid_amount;
    int64_t used_ms;   /* used at the anchor */
    int64_t anchor_ms; /* active since */
    int64_t heartbeat_ms;
    int64_t warn_idx;
    int64_t ended_ms;
    int64_t end_reason;
    uint64_t journaled; /* seq written to PostgreSQL */
    bool finalized;     /* settlement recorded */
} metering_snap_t;

/* A new session id for a session created at now_ms: "s" + 16 lowercase
   base32 characters encoding 44 bits of time and 36 random bits, so ids
   sort by creation time. out must hold METERING_SID_LEN + 1 bytes. */
void metering_sid_new (int64_t now_ms, char *out);
/* Whether text is a well-formed session id. */
bool metering_sid_valid (const char *text);
/* Creation time encoded in a valid id; -1 when invalid. */
int64_t metering_sid_created_ms (const char *sid);
/* Bucket of a session: FNV-1a of the id modulo buckets. */
uint32_t metering_bucket_of (const char *sid, uint32_t buckets);
/* Whether text is a usable id (tenant, payer, payee, payment): 1..64 of
   [A-Za-z0-9_.:@-]. */
bool metering_id_valid (const char *text);

/* The hash field recording that payment_id was applied: "p" + 8 base32
   characters (40 bits of FNV-1a 64; a session holds a handful of
   payments, so a collision is out of reach). out holds 10 bytes. */
void metering_payment_field (const char *payment_id, char *out);

/* Resets snap and fills it field by field from the hash (returns -1 on a
   field whose value is malformed). */
void metering_snap_reset (metering_snap_t *snap, const char *session_id);
int metering_snap_set (metering_snap_t *snap, const char *field, const char *value);

/* The clock at now_ms (never negative). */
int64_t metering_snap_used (const metering_snap_t *snap, int64_t now_ms);
int64_t metering_snap_remaining (const metering_snap_t *snap, int64_t now_ms);
/* Active paid sessions: when the paid time is up; otherwise 0. */
int64_t metering_snap_expires_at (const metering_snap_t *snap);
/* True when a change of state is due at or before now_ms (the paid time
   is up, the heartbeat grace or the TTL has passed, a free session reached
   max_session_minutes): the hash is behind the clock until the script
   runs (metering.lua's advance; warnings and finalization are left out).
   Mirrors the script's deadlines; a false positive costs one script run. */
bool metering_snap_overdue (const metering_snap_t *snap, int64_t now_ms);
/* Paid time used (trial excluded) for settlement. */
int64_t metering_snap_paid_used (const metering_snap_t *snap, int64_t now_ms);
/* Amount due for the used paid time per the locked rounding, never more
   than was paid. Returns 0 or -1 on overflow. */
int metering_snap_billed (const metering_snap_t *snap, int64_t now_ms, int64_t *out);

const char *metering_end_name (int64_t reason);
const char *metering_kind_name (int kind);

/* Fills session from snap at now_ms. Strings and the marks array are
   borrowed from snap: keep snap alive while session is used. */
void metering_snap_to_proto (const metering_snap_t *snap, int64_t now_ms,
                             Ppm__V1__Session *session);

/* Checks a Create request (quote and parties). Returns NULL when valid, or
   an INVALID_ARGUMENT status naming each bad field. now_ms bounds the
   quote's issue time. */
ppm_status_t *metering_create_check (const Ppm__V1__CreateRequest *req, const char *tenant,
                                     int64_t now_ms);

/* Hash fields of a new session, as (field, value) text pairs written into
   buf; returns the number of strings (2 × pairs) stored in argv, or -1
   when buf is too small. trial_ms credits free trial time; such a session
   (or a free one) starts active unless manual_start. */
int metering_create_fields (const Ppm__V1__CreateRequest *req, const char *tenant, int64_t now_ms,
                            int64_t trial_ms, char *buf, size_t size, const char **argv,
                            int max_argv);

#endif
