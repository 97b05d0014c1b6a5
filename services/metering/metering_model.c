/*  metering_model: session ids, the compact hash encoding and the clock's
    arithmetic, free of I/O so that unit tests pin every rule down. See
    metering_model.h for the key and field layout.
*/
#include "metering_model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include "ppm_money.h"

static const char s_b32[] = "0123456789abcdefghjkmnpqrstvwxyz";

void
metering_sid_new (int64_t now_ms, char *out)
{
    uint8_t rnd[8] = {0};
    if (getrandom (rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        /* Never expected; fall back to a weaker but unique-enough source. */
        uint64_t x = (uint64_t)now_ms * 6364136223846793005ULL + (uint64_t)(uintptr_t)out;
        memcpy (rnd, &x, sizeof rnd);
    }
    uint64_t r = 0;
    memcpy (&r, rnd, sizeof r);
    uint64_t hi = (uint64_t)now_ms & ((1ULL << 44) - 1); /* 44 bits of time */
    uint64_t lo = r & ((1ULL << 36) - 1);                /* 36 random bits */
    out[0] = 's';
    /* 80 bits as 16 characters: 44 + 36, most significant first. */
    for (int i = 0; i < 16; i++) {
        int bit = 79 - 5 * i - 4; /* lowest bit of this 5-bit group */
        uint64_t group;
        if (bit >= 36)
            group = (hi >> (bit - 36)) & 31;
        else if (bit + 5 <= 36)
            group = (lo >> bit) & 31;
        else {
            int in_lo = 36 - bit; /* bits from lo */
            group = ((hi << in_lo) | (lo >> bit)) & 31;
        }
        out[1 + i] = s_b32[group];
    }
    out[METERING_SID_LEN] = '\0';
}

static int
s_b32_value (char c)
{
    const char *p = strchr (s_b32, c);
    if (!p || c == '\0')
        return -1;
    return (int)(p - s_b32);
}

bool
metering_sid_valid (const char *text)
{
    if (!text || strlen (text) != METERING_SID_LEN || text[0] != 's')
        return false;
    for (int i = 1; i < METERING_SID_LEN; i++)
        if (s_b32_value (text[i]) < 0)
            return false;
    return true;
}

int64_t
metering_sid_created_ms (const char *sid)
{
    if (!metering_sid_valid (sid))
        return -1;
    /* The first 44 bits: 8 full groups (40 bits) + 4 bits of the 9th. */
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 5) | (uint64_t)s_b32_value (sid[1 + i]);
    v = (v << 4) | ((uint64_t)s_b32_value (sid[9]) >> 1);
    return (int64_t)v;
}

uint32_t
metering_bucket_of (const char *sid, uint32_t buckets)
{
    uint32_t h = 2166136261u;
    for (const char *p = sid; *p; p++) {
        h ^= (uint8_t)*p;
        h *= 16777619u;
    }
    return buckets ? h % buckets : 0;
}

void
metering_payment_field (const char *payment_id, char *out)
{
    uint64_t h = 14695981039346656037ULL;
    for (const char *p = payment_id; *p; p++) {
        h ^= (uint8_t)*p;
        h *= 1099511628211ULL;
    }
    out[0] = 'p';
    for (int i = 0; i < 8; i++)
        out[1 + i] = s_b32[(h >> (5 * i)) & 31];
    out[9] = '\0';
}

bool
metering_id_valid (const char *text)
{
    if (!text)
        return false;
    size_t len = strlen (text);
    if (len == 0 || len > METERING_ID_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.' || c == ':' || c == '@';
        if (!ok)
            return false;
    }
    return true;
}

void
metering_snap_reset (metering_snap_t *snap, const char *session_id)
{
    memset (snap, 0, sizeof *snap);
    if (session_id)
        snprintf (snap->session_id, sizeof snap->session_id, "%s", session_id);
}

/* Every number of a stored session is within ±2^46 (ms until the year
   4199; minutes × 60000 and sums of three such values stay far from
   int64_t's limits), so that a tampered or corrupt store gives an error
   instead of signed overflow in the clock and billing arithmetic. */
#define S_INT_LIMIT (1LL << 46)

static int
s_int (const char *value, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll (value, &end, 10);
    if (errno || end == value || *end != '\0' || v < -S_INT_LIMIT || v > S_INT_LIMIT)
        return -1;
    *out = v;
    return 0;
}

static int
s_text (char *dst, size_t size, const char *value)
{
    if (strlen (value) >= size)
        return -1;
    snprintf (dst, size, "%s", value);
    return 0;
}

static int
s_marks (metering_snap_t *snap, const char *value)
{
    if (s_text (snap->marks_text, sizeof snap->marks_text, value))
        return -1;
    snap->marks_count = 0;
    const char *p = value;
    while (*p && snap->marks_count < METERING_MARKS_MAX) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll (p, &end, 10);
        if (end == p || errno || v < -S_INT_LIMIT || v > S_INT_LIMIT)
            return -1;
        snap->marks[snap->marks_count++] = v;
        p = *end == ',' ? end + 1 : end;
    }
    return 0;
}

int
metering_snap_set (metering_snap_t *snap, const char *field, const char *value)
{
    int64_t v = 0;
    if (field[0] == '\0')
        return -1;
    if (field[1] != '\0')
        return 0; /* p:<payment_id> and future fields: not part of the snapshot */
    switch (field[0]) {
        case 't':
            return s_text (snap->tenant, sizeof snap->tenant, value);
        case 'a':
            return s_text (snap->payer, sizeof snap->payer, value);
        case 'b':
            return s_text (snap->payee, sizeof snap->payee, value);
        case 'c':
            return s_text (snap->currency, sizeof snap->currency, value);
        case 'w':
            return s_marks (snap, value);
        case 'Z':
            snap->finalized = strcmp (value, "1") == 0;
            return 0;
        default:
            break;
    }
    if (s_int (value, &v))
        return -1;
    switch (field[0]) {
        case 'k':
            snap->kind = (int)v;
            break;
        case 's':
            snap->state = (int)v;
            break;
        case 'q':
            snap->seq = (uint64_t)v;
            break;
        case 'o':
            snap->flags = v;
            break;
        case 'r':
            snap->rate = v;
            break;
        case 'g':
            snap->grace_s = v;
            break;
        case 'x':
            snap->ttl_s = v;
            break;
        case 'm':
            snap->max_min = v;
            break;
        case 'f':
            snap->funded_ms = v;
            break;
        case 'T':
            snap->trial_ms = v;
            break;
        case 'M':
            snap->paid_amount = v;
            break;
        case 'u':
            snap->used_ms = v;
            break;
        case 'v':
            snap->anchor_ms = v;
            break;
        case 'h':
            snap->heartbeat_ms = v;
            break;
        case 'y':
            snap->warn_idx = v;
            break;
        case 'e':
            snap->ended_ms = v;
            break;
        case 'n':
            snap->end_reason = v;
            break;
        case 'j':
            snap->journaled = (uint64_t)v;
            break;
        default:
            break;
    }
    return 0;
}

int64_t
metering_snap_used (const metering_snap_t *snap, int64_t now_ms)
{
    int64_t used = snap->used_ms;
    if (snap->state == PPM__V1__SESSION_STATE__SESSION_ACTIVE && now_ms > snap->anchor_ms)
        used += now_ms - snap->anchor_ms;
    if ((snap->flags & METERING_F_PAID) && used > snap->funded_ms)
        used = snap->funded_ms;
    if (!(snap->flags & METERING_F_PAID) && snap->max_min > 0 && used > snap->max_min * 60000)
        used = snap->max_min * 60000;
    return used < 0 ? 0 : used;
}

int64_t
metering_snap_remaining (const metering_snap_t *snap, int64_t now_ms)
{
    if (!(snap->flags & METERING_F_PAID))
        return 0;
    int64_t rem = snap->funded_ms - metering_snap_used (snap, now_ms);
    return rem < 0 ? 0 : rem;
}

int64_t
metering_snap_expires_at (const metering_snap_t *snap)
{
    if (snap->state != PPM__V1__SESSION_STATE__SESSION_ACTIVE || !(snap->flags & METERING_F_PAID))
        return 0;
    return snap->anchor_ms + snap->funded_ms - snap->used_ms;
}

bool
metering_snap_overdue (const metering_snap_t *snap, int64_t now_ms)
{
    int64_t ttl_at = snap->ttl_s > 0 ? snap->heartbeat_ms + snap->ttl_s * 1000 : INT64_MAX;
    switch (snap->state) {
        case PPM__V1__SESSION_STATE__SESSION_AWAITING_PAYMENT:
        case PPM__V1__SESSION_STATE__SESSION_PAUSED:
            return ttl_at <= now_ms;
        case PPM__V1__SESSION_STATE__SESSION_ACTIVE: {
            int64_t end = INT64_MAX;
            if (snap->flags & METERING_F_PAID)
                end = snap->anchor_ms + snap->funded_ms - snap->used_ms;
            else if (snap->max_min > 0)
                end = snap->anchor_ms + snap->max_min * 60000 - snap->used_ms;
            int64_t idle = snap->grace_s > 0 ? snap->heartbeat_ms + snap->grace_s * 1000 : ttl_at;
            return end <= now_ms || idle <= now_ms;
        }
        default:
            return false;
    }
}

int64_t
metering_snap_paid_used (const metering_snap_t *snap, int64_t now_ms)
{
    if (!(snap->flags & METERING_F_PAID))
        return 0;
    int64_t used = metering_snap_used (snap, now_ms) - snap->trial_ms;
    return used < 0 ? 0 : used;
}

int
metering_snap_billed (const metering_snap_t *snap, int64_t now_ms, int64_t *out)
{
    *out = 0;
    if (!(snap->flags & METERING_F_PAID))
        return 0;
    int64_t amount = 0;
    if (ppm_money_for_usage (snap->rate, metering_snap_paid_used (snap, now_ms),
                             (snap->flags & METERING_F_PER_SECOND) != 0, &amount) != PPM_MONEY_OK)
        return -1;
    *out = amount < snap->paid_amount ? amount : snap->paid_amount;
    return 0;
}

const char *
metering_end_name (int64_t reason)
{
    switch (reason) {
        case METERING_END_PAYER:
            return "payer";
        case METERING_END_PAYEE:
            return "payee";
        case METERING_END_PLATFORM:
            return "platform";
        case METERING_END_EXPIRED:
            return "expired";
        case METERING_END_STALE:
            return "stale";
        case METERING_END_MAX_SESSION:
            return "max_session";
        default:
            return "";
    }
}

const char *
metering_kind_name (int kind)
{
    return kind == 1 ? "call" : "chat";
}

void
metering_snap_to_proto (const metering_snap_t *snap, int64_t now_ms, Ppm__V1__Session *s)
{
    ppm__v1__session__init (s);
    s->session_id = (char *)snap->session_id;
    s->tenant_id = (char *)snap->tenant;
    s->payer = (char *)snap->payer;
    s->payee = (char *)snap->payee;
    s->kind = (char *)metering_kind_name (snap->kind);
    s->state = (Ppm__V1__SessionState)snap->state;
    s->paid = (snap->flags & METERING_F_PAID) != 0;
    s->rate_per_minute = snap->rate;
    s->currency = (char *)snap->currency;
    s->rounding = (snap->flags & METERING_F_PER_SECOND) ? "second" : "minute";
    s->billing_mode = (snap->flags & METERING_F_AUTHORIZE) ? "authorize" : "prepaid";
    s->refund_unused = (snap->flags & METERING_F_REFUND) != 0;
    s->n_warning_marks_s = snap->marks_count;
    s->warning_marks_s = (int64_t *)snap->marks;
    s->grace_s = snap->grace_s;
    s->session_ttl_s = snap->ttl_s;
    s->max_session_minutes = snap->max_min;
    s->funded_ms = snap->funded_ms;
    s->trial_ms = snap->trial_ms;
    s->used_ms = metering_snap_used (snap, now_ms);
    s->remaining_ms = metering_snap_remaining (snap, now_ms);
    s->expires_at_ms = metering_snap_expires_at (snap);
    s->paid_amount = snap->paid_amount;
    if (snap->max_min > 0 && (snap->flags & METERING_F_PAID)) {
        int64_t left = snap->max_min * 60000 - snap->funded_ms;
        s->fundable_ms = left < 0 ? 0 : left;
    } else
        s->fundable_ms = (snap->flags & METERING_F_PAID) ? -1 : 0;
    s->created_at_ms = metering_sid_created_ms (snap->session_id);
    s->last_heartbeat_ms = snap->heartbeat_ms;
    bool over = snap->state == PPM__V1__SESSION_STATE__SESSION_EXPIRED ||
                snap->state == PPM__V1__SESSION_STATE__SESSION_ENDED;
    s->ended_at_ms = over ? snap->ended_ms : 0;
    s->reopen_until_ms = snap->state == PPM__V1__SESSION_STATE__SESSION_EXPIRED && !snap->finalized
                             ? snap->ended_ms + snap->grace_s * 1000
                             : 0;
    s->end_reason = (char *)metering_end_name (over ? snap->end_reason : 0);
    s->seq = snap->seq;
    s->now_ms = now_ms;
    s->manual_start = (snap->flags & METERING_F_MANUAL) != 0;
    int64_t billed = 0;
    if (over && metering_snap_billed (snap, now_ms, &billed) == 0)
        s->billed_amount = billed;
}

ppm_status_t *
metering_create_check (const Ppm__V1__CreateRequest *req, const char *tenant, int64_t now_ms)
{
    ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid session request");
    int bad = 0;
    const Ppm__V1__Quote *q = req->quote;
    if (!metering_id_valid (tenant)) {
        ppm_status_add_field (st, "tenant_id", "must be 1-64 characters of [A-Za-z0-9_.:@-]");
        bad++;
    }
    if (!metering_id_valid (req->payer)) {
        ppm_status_add_field (st, "payer", "must be 1-64 characters of [A-Za-z0-9_.:@-]");
        bad++;
    }
    if (!metering_id_valid (req->payee)) {
        ppm_status_add_field (st, "payee", "must be 1-64 characters of [A-Za-z0-9_.:@-]");
        bad++;
    }
    if (req->payer && req->payee && strcmp (req->payer, req->payee) == 0) {
        ppm_status_add_field (st, "payee", "must differ from the payer");
        bad++;
    }
    if (!req->kind || (strcmp (req->kind, "chat") && strcmp (req->kind, "call"))) {
        ppm_status_add_field (st, "kind", "must be chat or call");
        bad++;
    }
    if (!q) {
        ppm_status_add_field (st, "quote", "is required");
        return st;
    }
    if (q->tenant_id && *q->tenant_id && tenant && strcmp (q->tenant_id, tenant)) {
        ppm_status_add_field (st, "quote.tenant_id", "is not the request's tenant");
        bad++;
    }
    if (q->payer && *q->payer && req->payer && strcmp (q->payer, req->payer)) {
        ppm_status_add_field (st, "quote.payer", "is not the request's payer");
        bad++;
    }
    if (q->payee && req->payee && strcmp (q->payee, req->payee)) {
        ppm_status_add_field (st, "quote.payee", "is not the request's payee");
        bad++;
    }
    if (q->kind && req->kind && strcmp (q->kind, req->kind)) {
        ppm_status_add_field (st, "quote.kind", "is not the request's kind");
        bad++;
    }
    if (q->paid) {
        const ppm_currency_t *cur = ppm_currency_find (q->currency ? q->currency : "");
        if (!cur || strlen (q->currency) != 3) {
            ppm_status_add_field (st, "quote.currency", "is not a supported currency");
            bad++;
        }
        if (q->rate_per_minute <= 0) {
            ppm_status_add_field (st, "quote.rate_per_minute", "must be > 0 for a paid quote");
            bad++;
        }
        if (!q->rounding || (strcmp (q->rounding, "minute") && strcmp (q->rounding, "second"))) {
            ppm_status_add_field (st, "quote.rounding", "must be minute or second");
            bad++;
        }
    } else if (q->rate_per_minute < 0) {
        ppm_status_add_field (st, "quote.rate_per_minute", "must be >= 0");
        bad++;
    }
    if (q->billing_mode && *q->billing_mode && strcmp (q->billing_mode, "prepaid") &&
        strcmp (q->billing_mode, "authorize")) {
        ppm_status_add_field (st, "quote.billing_mode", "must be prepaid or authorize");
        bad++;
    }
    if (q->n_warning_marks_s > METERING_MARKS_MAX) {
        ppm_status_add_field (st, "quote.warning_marks_s", "at most %d marks", METERING_MARKS_MAX);
        bad++;
    }
    for (size_t i = 0; i < q->n_warning_marks_s && i < METERING_MARKS_MAX; i++) {
        int64_t m = q->warning_marks_s[i];
        if (m <= 0 || m > 86400 || (i > 0 && m >= q->warning_marks_s[i - 1])) {
            ppm_status_add_field (st, "quote.warning_marks_s",
                                  "must be descending seconds in 1..86400");
            bad++;
            break;
        }
    }
    if (q->grace_s < 0 || q->grace_s > 86400) {
        ppm_status_add_field (st, "quote.grace_s", "must be 0..86400");
        bad++;
    }
    if (q->session_ttl_s < 0 || q->session_ttl_s > 30 * 86400) {
        ppm_status_add_field (st, "quote.session_ttl_s", "must be 0..2592000");
        bad++;
    }
    if (q->max_session_minutes < 0 || q->max_session_minutes > 100000) {
        ppm_status_add_field (st, "quote.max_session_minutes", "must be 0..100000");
        bad++;
    }
    if (q->free_trial_minutes < 0 || q->free_trial_minutes > 100000) {
        ppm_status_add_field (st, "quote.free_trial_minutes", "must be 0..100000");
        bad++;
    }
    if (q->max_concurrent_sessions < 0) {
        ppm_status_add_field (st, "quote.max_concurrent_sessions", "must be >= 0");
        bad++;
    }
    if (q->issued_at_ms > now_ms + 60000) {
        ppm_status_add_field (st, "quote.issued_at_ms", "lies in the future");
        bad++;
    }
    if (bad == 0)
        ppm_status_destroy (&st);
    return st;
}

int
metering_create_fields (const Ppm__V1__CreateRequest *req, const char *tenant, int64_t now_ms,
                        int64_t trial_ms, char *buf, size_t size, const char **argv, int max_argv)
{
    const Ppm__V1__Quote *q = req->quote;
    int64_t flags = 0;
    if (q->paid)
        flags |= METERING_F_PAID;
    if (q->rounding && strcmp (q->rounding, "second") == 0)
        flags |= METERING_F_PER_SECOND;
    if (q->billing_mode && strcmp (q->billing_mode, "authorize") == 0)
        flags |= METERING_F_AUTHORIZE;
    if (q->refund_unused)
        flags |= METERING_F_REFUND;
    if (req->manual_start)
        flags |= METERING_F_MANUAL;
    char marks[64] = "";
    size_t mlen = 0;
    for (size_t i = 0; i < q->n_warning_marks_s && i < METERING_MARKS_MAX; i++) {
        int n = snprintf (marks + mlen, sizeof marks - mlen, "%s%lld", i ? "," : "",
                          (long long)q->warning_marks_s[i]);
        if (n < 0 || (size_t)n >= sizeof marks - mlen)
            return -1;
        mlen += (size_t)n;
    }
    bool active = !req->manual_start && (!q->paid || trial_ms > 0);
    /* Marks at or above the starting time are already behind. */
    int64_t skip = 0;
    while (q->paid && (size_t)skip < q->n_warning_marks_s && skip < METERING_MARKS_MAX &&
           q->warning_marks_s[skip] * 1000 >= trial_ms)
        skip++;
    struct {
        const char *f;
        char v[72];
    } kv[24];
    int n = 0;
#define KV_S(name, val) (kv[n].f = (name), snprintf (kv[n].v, sizeof kv[n].v, "%s", (val)), n++)
#define KV_I(name, val)                                                                            \
    do {                                                                                           \
        if ((val) != 0) {                                                                          \
            kv[n].f = (name);                                                                      \
            snprintf (kv[n].v, sizeof kv[n].v, "%lld", (long long)(val));                          \
            n++;                                                                                   \
        }                                                                                          \
    } while (0)
    KV_S ("t", tenant);
    KV_S ("a", req->payer);
    KV_S ("b", req->payee);
    KV_I ("k", strcmp (req->kind, "call") == 0 ? 1 : 0);
    KV_I ("s", active ? PPM__V1__SESSION_STATE__SESSION_ACTIVE
                      : PPM__V1__SESSION_STATE__SESSION_AWAITING_PAYMENT);
    KV_I ("q", 0);
    KV_I ("o", flags);
    KV_I ("r", q->paid ? q->rate_per_minute : 0);
    KV_S ("c", q->currency && *q->currency ? q->currency : "-");
    if (marks[0])
        KV_S ("w", marks);
    KV_I ("g", q->grace_s);
    KV_I ("x", q->session_ttl_s);
    KV_I ("m", q->max_session_minutes);
    KV_I ("f", trial_ms);
    if (trial_ms > 0)
        KV_I ("T", trial_ms);
    KV_I ("u", 0);
    KV_I ("h", now_ms);
    if (active) {
        KV_I ("v", now_ms);
        KV_I ("y", skip);
    }
#undef KV_S
#undef KV_I
    if (n * 2 > max_argv)
        return -1;
    size_t used = 0;
    for (int i = 0; i < n; i++) {
        size_t fl = strlen (kv[i].f) + 1;
        size_t vl = strlen (kv[i].v) + 1;
        if (used + fl + vl > size)
            return -1;
        memcpy (buf + used, kv[i].f, fl);
        argv[2 * i] = buf + used;
        used += fl;
        memcpy (buf + used, kv[i].v, vl);
        argv[2 * i + 1] = buf + used;
        used += vl;
    }
    return n * 2;
}
