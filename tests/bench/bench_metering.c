/*  bench_metering: metering's three measured promises (SPEC §7), against
    the real Redis and PostgreSQL of run-bench.sh:

    1. Redis memory per active session with 1,000,000 sessions (INFO memory
       before/after; each session written by the real create script, in its
       funded-and-active shape, with its bucket entry), aim ≤ 300 bytes.
    2. Tick cost with 1,000 and with 1,000,000 idle sessions (the tick's
       Redis work when nothing is due: one ZRANGEBYSCORE per bucket,
       pipelined), and their ratio, aim ≤ 1.5.
    3. A burst of 10,000 expiries due within the same second, handled by
       the real metering actor (tick 100 ms): p50/p99 lateness of the
       session.expired events and expiries per second, aim p99 ≤ one tick
       + 100 ms.

    PPM_BENCH_SESSIONS changes the 1,000,000 (e.g. for a quick run).
*/
#include <czmq.h>
#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_clock.h"
#include "ppm_events.h"
#include "ppm_log.h"
#include "proto/metering.pb-c.h"
#include "services/metering/metering_model.h"
#include "services/metering/metering_script.h"
#include "services/metering/metering_server.h"
#include "services/metering/metering_store.h"

#define BUCKETS 64
#define TICK_MS 100

static char s_url[256];

static redisContext *
s_connect (int db)
{
    int port = 6379;
    sscanf (getenv ("PPM_TEST_REDIS_URL"), "redis://127.0.0.1:%d", &port);
    redisContext *c = redisConnect ("127.0.0.1", port);
    if (!c || c->err) {
        fprintf (stderr, "bench_metering: cannot connect to Redis\n");
        exit (1);
    }
    redisReply *r = redisCommand (c, "SELECT %d", db);
    freeReplyObject (r);
    return c;
}

static long long
s_used_memory (redisContext *c)
{
    redisReply *r = redisCommand (c, "INFO memory");
    long long used = -1;
    const char *p = r && r->type == REDIS_REPLY_STRING ? strstr (r->str, "used_memory:") : NULL;
    if (p)
        used = strtoll (p + 12, NULL, 10);
    freeReplyObject (r);
    return used;
}

/* Writes n funded, active sessions with deadlines in [deadline_lo,
   deadline_lo + spread) through the store's pipeline: the create script
   with the session's fields, then its bucket entry. */
static void
s_fill (metering_store_t *store, size_t n, int64_t now, int64_t deadline_lo, int64_t spread,
        const char *tenant)
{
    Ppm__V1__Quote q = PPM__V1__QUOTE__INIT;
    int64_t marks[] = {300, 60, 10};
    q.paid = true;
    q.rate_per_minute = 250;
    q.currency = "USD";
    q.rounding = "minute";
    q.billing_mode = "prepaid";
    q.warning_marks_s = marks;
    q.n_warning_marks_s = 3;
    q.grace_s = 0;
    q.session_ttl_s = 3600;
    q.max_session_minutes = 120;
    Ppm__V1__CreateRequest req = PPM__V1__CREATE_REQUEST__INIT;
    req.quote = &q;
    req.kind = "call";
    char sha1[41] = "";
    redisReply *loaded = metering_store_command (store, "SCRIPT LOAD %s", metering_script_lua);
    if (!loaded || loaded->type != REDIS_REPLY_STRING) {
        fprintf (stderr, "bench_metering: SCRIPT LOAD failed\n");
        exit (1);
    }
    snprintf (sha1, sizeof sha1, "%s", loaded->str);
    freeReplyObject (loaded);
    size_t pending = 0;
    for (size_t i = 0; i < n; i++) {
        char payer[32];
        char payee[32];
        snprintf (payer, sizeof payer, "u_%07zu", i);
        snprintf (payee, sizeof payee, "u_%07zu", i + 5000000);
        req.payer = payer;
        req.payee = payee;
        int64_t deadline = deadline_lo + (spread > 0 ? (int64_t)(i % (size_t)spread) : 0);
        int64_t funded = 600000;
        char buf[1024];
        const char *fields[64];
        int nf = metering_create_fields (&req, tenant, now, 0, buf, sizeof buf, fields, 48);
        /* Turn it into what Fund leaves: active, funded, one payment. */
        char sid[METERING_SID_LEN + 1];
        metering_sid_new (now, sid);
        char key[32];
        char snow[24];
        char sf[24];
        char sv[24];
        char pf[48];
        char score[24];
        snprintf (key, sizeof key, "{s:%s}", sid);
        snprintf (snow, sizeof snow, "%lld", (long long)now);
        snprintf (sf, sizeof sf, "%lld", (long long)funded);
        snprintf (sv, sizeof sv, "%lld", (long long)(deadline - funded));
        char pid[32];
        snprintf (pid, sizeof pid, "pay_%020zu", i);
        metering_payment_field (pid, pf);
        snprintf (score, sizeof score, "%lld", (long long)deadline);
        const char *argv[80];
        int argc = 0;
        argv[argc++] = "EVALSHA";
        argv[argc++] = NULL; /* filled below */
        argv[argc++] = "1";
        argv[argc++] = key;
        argv[argc++] = "create";
        argv[argc++] = snow;
        argv[argc++] = tenant;
        for (int j = 0; j < nf; j += 2) {
            const char *v = fields[j + 1];
            if (streq (fields[j], "s"))
                v = "2";
            argv[argc++] = fields[j];
            argv[argc++] = v;
        }
        argv[argc++] = "f";
        argv[argc++] = sf;
        argv[argc++] = "v";
        argv[argc++] = sv;
        argv[argc++] = "y";
        argv[argc++] = "3"; /* next deadline: the expiry */
        argv[argc++] = "M";
        argv[argc++] = "2500";
        argv[argc++] = pf;
        argv[argc++] = sf;
        argv[1] = sha1;
        metering_store_append (store, argc, argv);
        char bucket[24];
        snprintf (bucket, sizeof bucket, "{d:%u}", metering_bucket_of (sid, BUCKETS));
        const char *z[] = {"ZADD", bucket, score, sid};
        metering_store_append (store, 4, z);
        pending += 2;
        if (pending >= 20000) {
            if (metering_store_flush (store, pending)) {
                fprintf (stderr, "bench_metering: pipeline failed\n");
                exit (1);
            }
            pending = 0;
        }
    }
    if (pending && metering_store_flush (store, pending)) {
        fprintf (stderr, "bench_metering: pipeline failed\n");
        exit (1);
    }
}

static void
s_noop (uint32_t bucket, const char *sid, int64_t score, void *arg)
{
    (void)bucket;
    (void)sid;
    (void)score;
    (*(int *)arg)++;
}

/* Mean cost of the tick's Redis work with nothing due, in microseconds. */
static double
s_tick_cost (metering_store_t *store, int rounds)
{
    uint32_t buckets[BUCKETS];
    for (uint32_t b = 0; b < BUCKETS; b++)
        buckets[b] = b;
    int64_t now = ppm_clock_now_ms ();
    int found = 0;
    for (int i = 0; i < 50; i++)
        metering_store_due (store, buckets, BUCKETS, now, 20000, s_noop, &found);
    int64_t t0 = ppm_clock_real_mono_us ();
    for (int i = 0; i < rounds; i++)
        metering_store_due (store, buckets, BUCKETS, now, 20000, s_noop, &found);
    int64_t t1 = ppm_clock_real_mono_us ();
    if (found)
        fprintf (stderr, "bench_metering: %d sessions were due (expected none)\n", found);
    return (double)(t1 - t0) / rounds;
}

static int
s_cmp (const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

typedef struct {
    int64_t *late;
    size_t count;
    size_t max;
    int64_t last_ms;
} s_burst_t;

static void
s_on_expired (const ppm_event_t *event, void *arg)
{
    s_burst_t *b = arg;
    Ppm__V1__SessionEvent *msg = ppm__v1__session_event__unpack (NULL, event->size, event->payload);
    if (!msg)
        return;
    int64_t now = ppm_clock_now_ms ();
    if (b->count < b->max)
        b->late[b->count++] = now - msg->at_ms;
    b->last_ms = now;
    ppm__v1__session_event__free_unpacked (msg, NULL);
}

int
main (void)
{
    if (!getenv ("PPM_TEST_REDIS_URL") || !getenv ("PPM_TEST_PG_URL")) {
        fprintf (stderr, "bench_metering: run under tests/harness/run-bench.sh\n");
        return 1;
    }
    ppm_log_init ("bench");
    ppm_log_set_level (PPM_LOG_WARN);
    size_t big = 1000000;
    const char *env = getenv ("PPM_BENCH_SESSIONS");
    if (env && strtol (env, NULL, 10) > 0)
        big = (size_t)strtol (env, NULL, 10);
    int64_t now = ppm_clock_now_ms ();

    /* 3 first, on a quiet Redis: a burst of 10,000 expiries. */
    snprintf (s_url, sizeof s_url, "%s/14", getenv ("PPM_TEST_REDIS_URL"));
    redisContext *c14 = s_connect (14);
    freeReplyObject (redisCommand (c14, "FLUSHDB"));
    metering_config_t cfg = {.rpc_bind = "tcp://127.0.0.1:*",
                             .pub_bind = "tcp://127.0.0.1:*",
                             .redis_url = s_url,
                             .pg_url = getenv ("PPM_TEST_PG_URL"),
                             .payment_endpoint = "",
                             .replica_id = "bench",
                             .tick_ms = TICK_MS,
                             .lease_ms = 3000,
                             .buckets = BUCKETS,
                             .retention_ms = 60000,
                             .batch = 20000};
    zactor_t *server = zactor_new (metering_server_actor, &cfg);
    zstr_send (server, "PUB");
    char *pub = zstr_recv (server);
    ppm_events_sub_t *sub = ppm_events_sub_new (pub);
    ppm_events_subscribe (sub, "session.expired");
    zstr_free (&pub);
    zclock_sleep (300);
    metering_store_t *store = metering_store_new (s_url, 10000);
    size_t burst = 10000;
    int64_t due = now + 3000;
    s_fill (store, burst, now, due, 1000, "t_bench_burst");
    metering_store_destroy (&store);
    s_burst_t b = {calloc (burst, sizeof (int64_t)), 0, burst, 0};
    int64_t end = zclock_mono () + 15000;
    while (b.count < burst && zclock_mono () < end)
        ppm_events_sub_wait (sub, 50, s_on_expired, &b);
    qsort (b.late, b.count, sizeof (int64_t), s_cmp);
    if (b.count == 0) {
        printf ("metering: burst: no expiries seen\n");
        return 1;
    }
    double span = (double)(b.last_ms - due) / 1000.0;
    printf ("metering: burst of %zu expiries due within 1 s: %zu handled, lateness p50 %lld ms, "
            "p99 %lld ms, max %lld ms (aim p99 <= tick %d ms + 100 ms); %.0f expiries/s\n",
            burst, b.count, (long long)b.late[b.count / 2], (long long)b.late[b.count * 99 / 100],
            (long long)b.late[b.count - 1], TICK_MS, span > 0 ? (double)b.count / span : 0.0);
    free (b.late);
    ppm_events_sub_destroy (&sub);
    zactor_destroy (&server);
    freeReplyObject (redisCommand (c14, "FLUSHDB"));
    /* 1 and 2: memory, tick cost with 1 k and with 1 M idle sessions. */
    now = ppm_clock_now_ms ();
    int64_t far = now + 3600000; /* idle: nothing due for an hour */
    redisContext *c12 = s_connect (12);
    redisContext *c13 = s_connect (13);
    freeReplyObject (redisCommand (c12, "FLUSHDB"));
    freeReplyObject (redisCommand (c13, "FLUSHDB"));
    snprintf (s_url, sizeof s_url, "%s/13", getenv ("PPM_TEST_REDIS_URL"));
    metering_store_t *small = metering_store_new (s_url, 10000);
    s_fill (small, 1000, now, far, 600000, "t_bench_small");
    double cost_small = s_tick_cost (small, 2000);

    snprintf (s_url, sizeof s_url, "%s/12", getenv ("PPM_TEST_REDIS_URL"));
    store = metering_store_new (s_url, 10000);
    long long before = s_used_memory (c12);
    int64_t t0 = ppm_clock_real_mono_us ();
    s_fill (store, big, now, far, 600000, "t_bench_0042");
    int64_t t1 = ppm_clock_real_mono_us ();
    long long after = s_used_memory (c12);
    redisReply *r = redisCommand (c12, "DBSIZE");
    long long keys = r->integer;
    freeReplyObject (r);
    r = redisCommand (c12, "RANDOMKEY");
    char sample[64] = "";
    if (r && r->type == REDIS_REPLY_STRING)
        snprintf (sample, sizeof sample, "%s", r->str);
    freeReplyObject (r);
    r = redisCommand (c12, "OBJECT ENCODING %s", sample);
    char encoding[32] = "?";
    if (r && r->type == REDIS_REPLY_STRING)
        snprintf (encoding, sizeof encoding, "%s", r->str);
    freeReplyObject (r);
    double cost_big = s_tick_cost (store, 2000);
    printf ("metering: %zu active sessions written in %.1f s (%lld keys; session hash "
            "encoding %s)\n",
            big, (double)(t1 - t0) / 1e6, keys, encoding);
    printf ("metering: Redis memory per active session: %.0f bytes (aim <= 300)\n",
            (double)(after - before) / (double)big);
    printf ("metering: tick cost, nothing due: %.1f us with 1000 sessions, %.1f us with %zu; "
            "ratio %.2f (aim <= 1.5)\n",
            cost_small, cost_big, big, cost_big / cost_small);
    freeReplyObject (redisCommand (c12, "FLUSHDB"));
    freeReplyObject (redisCommand (c13, "FLUSHDB"));
    metering_store_destroy (&small);
    metering_store_destroy (&store);

    freeReplyObject (redisCommand (c12, "BGREWRITEAOF"));
    redisFree (c12);
    redisFree (c13);
    redisFree (c14);
    return 0;
}
