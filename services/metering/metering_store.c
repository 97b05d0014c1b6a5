/*  metering_store: see metering_store.h. One hiredis context, re-made after
    any failure; the session script and the two small bucket/lease scripts
    are loaded (SCRIPT LOAD) on every new connection and called by SHA.
*/
#include "metering_store.h"

#include <hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include "metering_script.h"
#include "ppm_log.h"

/* Compare-and-set of bucket entries: ARGV triples (member, old, new). */
static const char s_rearm_lua[] =
    "local n = 0\n"
    "for i = 1, #ARGV, 3 do\n"
    "  local cur = redis.call('ZSCORE', KEYS[1], ARGV[i])\n"
    "  if cur and tonumber(cur) == tonumber(ARGV[i + 1]) then\n"
    "    if tonumber(ARGV[i + 2]) < 0 then redis.call('ZREM', KEYS[1], ARGV[i])\n"
    "    else redis.call('ZADD', KEYS[1], ARGV[i + 2], ARGV[i]) end\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

/* An RPC's bucket entry after its script: ARGV member, pre-armed score
   (-1 none), next deadline (-1 none). */
static const char s_settle_lua[] =
    "local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
    "local n = tonumber(ARGV[3])\n"
    "local mine = cur and tonumber(cur) == tonumber(ARGV[2])\n"
    "if n < 0 then\n"
    "  if mine then redis.call('ZREM', KEYS[1], ARGV[1]) end\n"
    "  return 0\n"
    "end\n"
    "if not cur or mine or tonumber(cur) > n then redis.call('ZADD', KEYS[1], n, ARGV[1]) end\n"
    "return 1\n";

/* Lease of KEYS[1] for holder ARGV[1]: ARGV[2] = ttl takes a free lease
   or renews one's own; ARGV[2] = "0" releases one's own. 1 = done. */
static const char s_lease_lua[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if ARGV[2] == '0' then\n"
    "  if cur == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end\n"
    "  return 0\n"
    "end\n"
    "if cur and cur ~= ARGV[1] then return 0 end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "return 1\n";

struct _metering_store_t {
    char host[256];         /* Redis host */
    int port;               /* Redis port */
    int db;                 /* database index */
    int64_t timeout_ms;     /* connect and command timeout */
    redisContext *ctx;      /* NULL while disconnected */
    char sha_session[41];   /* metering_script_lua */
    char sha_rearm[41];     /* s_rearm_lua */
    char sha_lease[41];     /* s_lease_lua */
    char sha_settle[41];    /* s_settle_lua */
    bool up;                /* last command reached Redis */
    int64_t retry_after_us; /* no reconnect before (back-off) */
};

static int64_t
s_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

metering_store_t *
metering_store_new (const char *url, int64_t timeout_ms)
{
    if (!url || strncmp (url, "redis://", 8) != 0)
        return NULL;
    metering_store_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->port = 6379;
    self->timeout_ms = timeout_ms > 0 ? timeout_ms : 2000;
    const char *p = url + 8;
    const char *at = strchr (p, '@');
    if (at)
        p = at + 1; /* credentials are not supported here (loopback / cluster-internal) */
    size_t hl = strcspn (p, ":/");
    if (hl == 0 || hl >= sizeof self->host) {
        free (self);
        return NULL;
    }
    memcpy (self->host, p, hl);
    self->host[hl] = '\0';
    p += hl;
    if (*p == ':') {
        char *end = NULL;
        long port = strtol (p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535) {
            free (self);
            return NULL;
        }
        self->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end = NULL;
        long db = strtol (p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 1000) {
            free (self);
            return NULL;
        }
        self->db = (int)db;
    }
    return self;
}

static void
s_drop (metering_store_t *self)
{
    if (self->ctx)
        redisFree (self->ctx);
    self->ctx = NULL;
    self->up = false;
}

void
metering_store_destroy (metering_store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    s_drop (*self_p);
    free (*self_p);
    *self_p = NULL;
}

bool
metering_store_up (metering_store_t *self)
{
    return self->up;
}

static int
s_load (metering_store_t *self, const char *source, char *sha)
{
    redisReply *r = redisCommand (self->ctx, "SCRIPT LOAD %s", source);
    if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
        if (r)
            ppm_log_error ("metering: SCRIPT LOAD failed: %s",
                           r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
        if (r)
            freeReplyObject (r);
        return -1;
    }
    memcpy (sha, r->str, 40);
    sha[40] = '\0';
    freeReplyObject (r);
    return 0;
}

static int
s_connect (metering_store_t *self)
{
    if (self->ctx)
        return 0;
    if (s_mono_us () < self->retry_after_us)
        return -1;
    struct timeval tv = {(time_t)(self->timeout_ms / 1000),
                         (suseconds_t)((self->timeout_ms % 1000) * 1000)};
    self->ctx = redisConnectWithTimeout (self->host, self->port, tv);
    if (!self->ctx || self->ctx->err) {
        s_drop (self);
        self->retry_after_us = s_mono_us () + 200000;
        return -1;
    }
    redisSetTimeout (self->ctx, tv);
    if (self->db) {
        redisReply *r = redisCommand (self->ctx, "SELECT %d", self->db);
        bool ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject (r);
        if (!ok) {
            s_drop (self);
            return -1;
        }
    }
    if (s_load (self, metering_script_lua, self->sha_session) ||
        s_load (self, s_rearm_lua, self->sha_rearm) ||
        s_load (self, s_lease_lua, self->sha_lease) ||
        s_load (self, s_settle_lua, self->sha_settle)) {
        s_drop (self);
        self->retry_after_us = s_mono_us () + 200000;
        return -1;
    }
    self->up = true;
    return 0;
}

/* Sends what was appended and reads n replies into replies[] (NULL
   allowed: replies are freed). On failure every reply read is freed, the
   connection dropped and -1 returned. */
static int
s_read (metering_store_t *self, size_t n, redisReply **replies)
{
    for (size_t i = 0; i < n; i++) {
        void *r = NULL;
        if (redisGetReply (self->ctx, &r) != REDIS_OK || !r) {
            ppm_log_warn ("metering: redis: %s", self->ctx->errstr);
            if (replies)
                for (size_t j = 0; j < i; j++) {
                    freeReplyObject (replies[j]);
                    replies[j] = NULL;
                }
            s_drop (self);
            return -1;
        }
        if (replies)
            replies[i] = r;
        else
            freeReplyObject (r);
    }
    self->up = true;
    return 0;
}

static bool
s_noscript (const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR && strncmp (r->str, "NOSCRIPT", 8) == 0;
}

static int64_t
s_int (const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r->type == REDIS_REPLY_STRING)
        return strtoll (r->str, NULL, 10);
    return 0;
}

static const char *
s_event_name (const char *text, size_t len)
{
    static const char *names[] = {"session.active",  "session.warning",  "session.paused",
                                  "session.resumed", "session.extended", "session.expired",
                                  "session.ended"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen (names[i]) == len && memcmp (names[i], text, len) == 0)
            return names[i];
    return NULL;
}

/* Parses the script's reply (see metering.lua). */
static int
s_parse (const redisReply *r, const char *sid, metering_result_t *out)
{
    memset (out, 0, sizeof *out);
    out->next_ms = -1;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 5) {
        if (r && r->type == REDIS_REPLY_ERROR)
            ppm_log_error ("metering: script error: %s", r->str);
        return -1;
    }
    out->code = (int)s_int (r->element[0]);
    if (r->element[1]->type == REDIS_REPLY_STRING)
        snprintf (out->message, sizeof out->message, "%s", r->element[1]->str);
    out->flags = (int)s_int (r->element[2]);
    out->next_ms = s_int (r->element[3]);
    int64_t nev = s_int (r->element[4]);
    if (nev < 0 || (size_t)(5 + nev * 9) > r->elements)
        return -1;
    size_t i = 5;
    for (int64_t e = 0; e < nev; e++, i += 9) {
        if (out->nevents >= METERING_EVENTS_MAX)
            continue;
        metering_event_t *ev = &out->events[out->nevents];
        const redisReply *name = r->element[i];
        if (name->type != REDIS_REPLY_STRING)
            return -1;
        ev->name = s_event_name (name->str, name->len);
        if (!ev->name)
            return -1;
        ev->seq = (uint64_t)s_int (r->element[i + 1]);
        ev->state = (int)s_int (r->element[i + 2]);
        ev->at_ms = s_int (r->element[i + 3]);
        ev->used_ms = s_int (r->element[i + 4]);
        ev->remaining_ms = s_int (r->element[i + 5]);
        ev->mark_s = s_int (r->element[i + 6]);
        ev->added_ms = s_int (r->element[i + 7]);
        if (r->element[i + 8]->type == REDIS_REPLY_STRING)
            snprintf (ev->reason, sizeof ev->reason, "%s", r->element[i + 8]->str);
        out->nevents++;
    }
    metering_snap_reset (&out->snap, sid);
    for (; i + 1 < r->elements; i += 2) {
        const redisReply *f = r->element[i];
        const redisReply *v = r->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            return -1;
        if (metering_snap_set (&out->snap, f->str, v->str))
            return -1;
    }
    return 0;
}

static void
s_key (char *buf, size_t size, const char *sid)
{
    snprintf (buf, size, "{s:%s}", sid);
}

static void
s_append_op (metering_store_t *self, const char *sha, const char *key, const char *op,
             const char *now, const char *tenant, int argc, const char **argv)
{
    const char *stack[32];
    const char **args = argc + 7 <= 32 ? stack : malloc ((size_t)(argc + 7) * sizeof *args);
    if (!args)
        return;
    int n = 0;
    args[n++] = "EVALSHA";
    args[n++] = sha;
    args[n++] = "1";
    args[n++] = key;
    args[n++] = op;
    args[n++] = now;
    args[n++] = tenant ? tenant : "";
    for (int i = 0; i < argc; i++)
        args[n++] = argv[i];
    redisAppendCommandArgv (self->ctx, n, args, NULL);
    if (args != stack)
        free (args);
}

int
metering_store_op (metering_store_t *self, const char *sid, const char *op, int64_t now_ms,
                   const char *tenant, int argc, const char **argv, metering_result_t *out)
{
    if (s_connect (self))
        return -1;
    char key[64];
    char now[24];
    s_key (key, sizeof key, sid);
    snprintf (now, sizeof now, "%lld", (long long)now_ms);
    for (int attempt = 0; attempt < 2; attempt++) {
        s_append_op (self, self->sha_session, key, op, now, tenant, argc, argv);
        redisReply *r = NULL;
        if (s_read (self, 1, &r))
            return -1;
        if (s_noscript (r) && attempt == 0) {
            freeReplyObject (r);
            if (s_load (self, metering_script_lua, self->sha_session))
                return -1;
            continue;
        }
        int rc = s_parse (r, sid, out);
        freeReplyObject (r);
        return rc;
    }
    return -1;
}

int
metering_store_op_many (metering_store_t *self, size_t n, const char *const *sids, const char *op,
                        int64_t now_ms, const char *const *args1, metering_result_t *outs)
{
    if (n == 0)
        return 0;
    if (s_connect (self))
        return -1;
    char now[24];
    snprintf (now, sizeof now, "%lld", (long long)now_ms);
    redisReply **replies = calloc (n, sizeof *replies);
    if (!replies)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char key[64];
        s_key (key, sizeof key, sids[i]);
        s_append_op (self, self->sha_session, key, op, now, "", args1 ? 1 : 0,
                     args1 ? (const char **)&args1[i] : NULL);
    }
    if (s_read (self, n, replies)) {
        free (replies);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (s_noscript (replies[i])) {
            /* Script cache flushed under us: redo this one alone. */
            freeReplyObject (replies[i]);
            replies[i] = NULL;
            if (metering_store_op (self, sids[i], op, now_ms, "", args1 ? 1 : 0,
                                   args1 ? (const char **)&args1[i] : NULL, &outs[i]))
                rc = -1;
            continue;
        }
        if (s_parse (replies[i], sids[i], &outs[i]))
            outs[i].code = -1;
        freeReplyObject (replies[i]);
    }
    free (replies);
    return rc;
}

int
metering_store_get (metering_store_t *self, const char *sid, metering_snap_t *snap)
{
    if (s_connect (self))
        return -1;
    char key[64];
    s_key (key, sizeof key, sid);
    const char *args[] = {"HGETALL", key};
    redisAppendCommandArgv (self->ctx, 2, args, NULL);
    redisReply *r = NULL;
    if (s_read (self, 1, &r))
        return -1;
    int rc = -1;
    if (r->type == REDIS_REPLY_ARRAY) {
        rc = r->elements > 0 ? 1 : 0;
        metering_snap_reset (snap, sid);
        for (size_t i = 0; i + 1 < r->elements; i += 2)
            if (r->element[i]->type != REDIS_REPLY_STRING ||
                r->element[i + 1]->type != REDIS_REPLY_STRING ||
                metering_snap_set (snap, r->element[i]->str, r->element[i + 1]->str))
                rc = -1;
    }
    freeReplyObject (r);
    return rc;
}

int
metering_store_due (metering_store_t *self, const uint32_t *buckets, size_t nbuckets,
                    int64_t now_ms, size_t limit, metering_due_fn *fn, void *arg)
{
    if (nbuckets == 0)
        return 0;
    if (s_connect (self))
        return -1;
    char now[24];
    char lim[24];
    snprintf (now, sizeof now, "%lld", (long long)now_ms);
    snprintf (lim, sizeof lim, "%zu", limit);
    for (size_t i = 0; i < nbuckets; i++) {
        char key[32];
        snprintf (key, sizeof key, "{d:%u}", buckets[i]);
        const char *args[] = {"ZRANGEBYSCORE", key, "-inf", now, "WITHSCORES", "LIMIT", "0", lim};
        redisAppendCommandArgv (self->ctx, 8, args, NULL);
    }
    redisReply **replies = calloc (nbuckets, sizeof *replies);
    if (!replies)
        return -1;
    if (s_read (self, nbuckets, replies)) {
        free (replies);
        return -1;
    }
    int total = 0;
    for (size_t i = 0; i < nbuckets; i++) {
        redisReply *r = replies[i];
        if (r->type == REDIS_REPLY_ARRAY)
            for (size_t j = 0; j + 1 < r->elements; j += 2) {
                if (r->element[j]->type != REDIS_REPLY_STRING)
                    continue;
                fn (buckets[i], r->element[j]->str, s_int (r->element[j + 1]), arg);
                total++;
            }
        freeReplyObject (r);
    }
    free (replies);
    return total;
}

int
metering_store_rearm (metering_store_t *self, uint32_t bucket, size_t n, const char *const *sids,
                      const int64_t *olds, const int64_t *news)
{
    if (n == 0)
        return 0;
    if (s_connect (self))
        return -1;
    size_t argc = 4 + 3 * n;
    const char **args = calloc (argc, sizeof *args);
    char (*nums)[24] = calloc (2 * n, sizeof *nums);
    if (!args || !nums) {
        free (args);
        free (nums);
        return -1;
    }
    char key[32];
    snprintf (key, sizeof key, "{d:%u}", bucket);
    args[0] = "EVALSHA";
    args[1] = self->sha_rearm;
    args[2] = "1";
    args[3] = key;
    for (size_t i = 0; i < n; i++) {
        snprintf (nums[2 * i], 24, "%lld", (long long)olds[i]);
        snprintf (nums[2 * i + 1], 24, "%lld", (long long)news[i]);
        args[4 + 3 * i] = sids[i];
        args[5 + 3 * i] = nums[2 * i];
        args[6 + 3 * i] = nums[2 * i + 1];
    }
    redisAppendCommandArgv (self->ctx, (int)argc, args, NULL);
    redisReply *r = NULL;
    int rc = s_read (self, 1, &r);
    if (rc == 0) {
        if (r->type != REDIS_REPLY_INTEGER) {
            ppm_log_warn ("metering: rearm: %s", r->type == REDIS_REPLY_ERROR ? r->str : "?");
            rc = -1;
        }
        freeReplyObject (r);
    }
    free (args);
    free (nums);
    return rc;
}

int
metering_store_arm (metering_store_t *self, uint32_t bucket, const char *sid, int64_t score)
{
    if (s_connect (self))
        return -1;
    char key[32];
    char sc[24];
    snprintf (key, sizeof key, "{d:%u}", bucket);
    snprintf (sc, sizeof sc, "%lld", (long long)score);
    const char *args[] = {"ZADD", key, "LT", sc, sid};
    redisAppendCommandArgv (self->ctx, 5, args, NULL);
    redisReply *r = NULL;
    if (s_read (self, 1, &r))
        return -1;
    int rc = r->type == REDIS_REPLY_INTEGER ? 0 : -1;
    freeReplyObject (r);
    return rc;
}

int
metering_store_settle_entry (metering_store_t *self, uint32_t bucket, const char *sid,
                             int64_t prearm, int64_t next)
{
    if (s_connect (self))
        return -1;
    char key[32];
    char pre[24];
    char nx[24];
    snprintf (key, sizeof key, "{d:%u}", bucket);
    snprintf (pre, sizeof pre, "%lld", (long long)prearm);
    snprintf (nx, sizeof nx, "%lld", (long long)next);
    const char *args[] = {"EVALSHA", self->sha_settle, "1", key, sid, pre, nx};
    redisAppendCommandArgv (self->ctx, 7, args, NULL);
    redisReply *r = NULL;
    if (s_read (self, 1, &r))
        return -1;
    int rc = r->type == REDIS_REPLY_INTEGER ? 0 : -1;
    freeReplyObject (r);
    return rc;
}

static int
s_lease_script (metering_store_t *self, uint32_t bucket, const char *me, const char *ttl)
{
    if (s_connect (self))
        return -1;
    char key[32];
    snprintf (key, sizeof key, "{l:%u}", bucket);
    const char *args[] = {"EVALSHA", self->sha_lease, "1", key, me, ttl};
    redisAppendCommandArgv (self->ctx, 6, args, NULL);
    redisReply *r = NULL;
    if (s_read (self, 1, &r))
        return -1;
    int rc = r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    freeReplyObject (r);
    return rc;
}

int
metering_store_lease_acquire (metering_store_t *self, uint32_t bucket, const char *me,
                              int64_t ttl_ms)
{
    return metering_store_lease_renew (self, bucket, me, ttl_ms);
}

int
metering_store_lease_renew (metering_store_t *self, uint32_t bucket, const char *me, int64_t ttl_ms)
{
    char ttl[24];
    snprintf (ttl, sizeof ttl, "%lld", (long long)(ttl_ms > 0 ? ttl_ms : 1));
    return s_lease_script (self, bucket, me, ttl);
}

int
metering_store_lease_free (metering_store_t *self, uint32_t bucket)
{
    redisReply *r = metering_store_command (self, "EXISTS {l:%u}", bucket);
    if (!r)
        return -1;
    int rc = r->type == REDIS_REPLY_INTEGER ? r->integer == 0 : -1;
    freeReplyObject (r);
    return rc;
}

int
metering_store_lease_release (metering_store_t *self, uint32_t bucket, const char *me)
{
    return s_lease_script (self, bucket, me, "0");
}

int
metering_store_replicas (metering_store_t *self, const char *me, int64_t now_real_ms,
                         int64_t window_ms)
{
    if (s_connect (self))
        return -1;
    char now[24];
    char low[24];
    char old[24];
    snprintf (now, sizeof now, "%lld", (long long)now_real_ms);
    snprintf (low, sizeof low, "%lld", (long long)(now_real_ms - window_ms));
    snprintf (old, sizeof old, "(%lld", (long long)(now_real_ms - 10 * window_ms));
    const char *a1[] = {"ZADD", "{m}:replicas", now, me};
    const char *a2[] = {"ZREMRANGEBYSCORE", "{m}:replicas", "-inf", old};
    const char *a3[] = {"ZCOUNT", "{m}:replicas", low, "+inf"};
    redisAppendCommandArgv (self->ctx, 4, a1, NULL);
    redisAppendCommandArgv (self->ctx, 4, a2, NULL);
    redisAppendCommandArgv (self->ctx, 4, a3, NULL);
    redisReply *r[3] = {NULL, NULL, NULL};
    if (s_read (self, 3, r))
        return -1;
    int rc = r[2]->type == REDIS_REPLY_INTEGER ? (int)r[2]->integer : -1;
    for (int i = 0; i < 3; i++)
        freeReplyObject (r[i]);
    return rc < 1 && rc != -1 ? 1 : rc;
}

int
metering_store_alive (metering_store_t *self)
{
    redisReply *r = metering_store_command (self, "EXISTS {m}:alive");
    if (!r)
        return -1;
    int rc = r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    freeReplyObject (r);
    return rc;
}

int
metering_store_mark_alive (metering_store_t *self)
{
    redisReply *r = metering_store_command (self, "SET {m}:alive 1 NX");
    if (!r)
        return -1;
    int rc = r->type == REDIS_REPLY_STATUS ? 1 : 0;
    freeReplyObject (r);
    return rc;
}

void *
metering_store_command (metering_store_t *self, const char *format, ...)
{
    if (s_connect (self))
        return NULL;
    va_list ap;
    va_start (ap, format);
    redisvAppendCommand (self->ctx, format, ap);
    va_end (ap);
    redisReply *r = NULL;
    if (s_read (self, 1, &r))
        return NULL;
    return r;
}

int
metering_store_append (metering_store_t *self, int argc, const char **argv)
{
    if (s_connect (self))
        return -1;
    return redisAppendCommandArgv (self->ctx, argc, argv, NULL) == REDIS_OK ? 0 : -1;
}

int
metering_store_flush (metering_store_t *self, size_t replies)
{
    if (!self->ctx)
        return -1;
    return s_read (self, replies, NULL);
}
