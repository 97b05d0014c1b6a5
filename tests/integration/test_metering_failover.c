/*  Metering as separate processes (build/bin/ppm-metering from PPM_BIN_DIR)
    at PPM_TIME_SCALE 100 with a pinned PPM_TIME_EPOCH_MS, so this test and
    the services share one clock: kill -9 in the middle of 1,000 active
    sessions, restart, every session ends at its exact time and none twice;
    two replicas, one killed, the other takes over its buckets and ends its
    sessions on time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "metering_testkit.h"
#include "tests/lib/ppm_test.h"
#include "ppm_log.h"

#define SCALE    100
#define SESSIONS 1000

static zactor_t *s_payment;
static char *s_payment_ep;
static char s_redis[256];
static char *s_pg; /* this test's own database */
static char s_tenant[32];

typedef struct {
    pid_t pid;      /* the process */
    char rpc[64];   /* its RPC endpoint */
    char pub[64];   /* its PUB endpoint */
    char name[16];  /* replica id */
    char lease[16]; /* PPM_METERING_LEASE */
} s_proc_t;

/* Replicas running now (0 = free slot): a test that fails half way leaves
   its replicas up, and they would hold leases in the next test's buckets. */
static pid_t s_live[8];

static void
s_live_set (pid_t old, pid_t pid)
{
    for (size_t i = 0; i < sizeof s_live / sizeof s_live[0]; i++)
        if (s_live[i] == old) {
            s_live[i] = pid;
            return;
        }
}

static void
s_spawn (s_proc_t *p)
{
    char bin[512];
    snprintf (bin, sizeof bin, "%s/ppm-metering", getenv ("PPM_BIN_DIR"));
    pid_t pid = fork ();
    assert_true (pid >= 0);
    if (pid == 0) {
        /* Never outlive the test, whatever happens to it. */
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        setenv ("PPM_RPC_BIND", p->rpc, 1);
        setenv ("PPM_PUB_BIND", p->pub, 1);
        setenv ("PPM_REDIS_URL", s_redis, 1);
        setenv ("PPM_PG_URL", s_pg, 1);
        setenv ("PPM_PAYMENT_ENDPOINT", s_payment_ep, 1);
        setenv ("PPM_METERING_REPLICA_ID", p->name, 1);
        setenv ("PPM_METERING_TICK", "20ms", 1);
        setenv ("PPM_METERING_LEASE", p->lease[0] ? p->lease : "600ms", 1);
        setenv ("PPM_METERING_BUCKETS", "64", 1);
        setenv ("PPM_LOG_LEVEL", "warn", 1);
        setenv ("PPM_METRICS_BIND", "127.0.0.1:0", 1);
        execl (bin, bin, (char *)NULL);
        _exit (127);
    }
    p->pid = pid;
    s_live_set (0, pid);
}

/* Ends pid with sig and reaps it. */
static void
s_end (pid_t pid, int sig)
{
    if (pid <= 0)
        return;
    kill (pid, sig);
    waitpid (pid, NULL, 0);
    s_live_set (pid, 0);
}

static void
s_kill9 (s_proc_t *p)
{
    s_end (p->pid, SIGKILL);
    p->pid = 0;
}

static void
s_stop (s_proc_t *p)
{
    s_end (p->pid, SIGTERM);
    p->pid = 0;
}

/* After each test, whatever it left running is killed. */
static int
s_test_teardown (void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof s_live / sizeof s_live[0]; i++)
        s_end (s_live[i], SIGKILL);
    return 0;
}

static void
s_proc_init (s_proc_t *p, const char *name)
{
    snprintf (p->rpc, sizeof p->rpc, "tcp://127.0.0.1:%d", tk_free_port ());
    snprintf (p->pub, sizeof p->pub, "tcp://127.0.0.1:%d", tk_free_port ());
    snprintf (p->name, sizeof p->name, "%s", name);
    p->lease[0] = '\0';
    p->pid = 0;
}

/* Waits until the service answers (sys.Ping). */
static void
s_wait_up (ppm_rpc_client_t *client)
{
    for (int i = 0; i < 200; i++) {
        ppm_rpc_req_t req = {.method = "sys.Ping", .timeout_ms = 100};
        ppm_status_t *st = ppm_rpc_client_call_sync (client, &req, NULL, NULL, NULL);
        if (!st)
            return;
        ppm_status_destroy (&st);
    }
    fail_msg ("ppm-metering did not come up");
}

static int
s_setup (void **state)
{
    (void)state;
    if (!getenv ("PPM_TEST_REDIS_URL") || !getenv ("PPM_TEST_PG_URL") || !getenv ("PPM_BIN_DIR"))
        return -1;
    char epoch[32];
    snprintf (epoch, sizeof epoch, "%lld", (long long)ppm_clock_real_ms ());
    setenv ("PPM_TIME_EPOCH_MS", epoch, 1);
    setenv ("PPM_TIME_SCALE", "100", 1);
    const char *error = NULL;
    if (ppm_clock_init (&error))
        return -1;
    ppm_log_init ("test");
    ppm_log_set_level (PPM_LOG_WARN);
    tk_redis_url (s_redis, sizeof s_redis, 11);
    tk_redis (s_redis, "FLUSHDB");
    s_pg = ppm_test_pg_url ("test_metering_failover");
    snprintf (s_tenant, sizeof s_tenant, "t_fo_%d", (int)getpid ());
    s_payment = zactor_new (tk_payment_actor, NULL);
    s_payment_ep = zstr_recv (s_payment);
    return 0;
}

static int
s_teardown (void **state)
{
    (void)state;
    tk_redis_compact (s_redis);
    free (s_pg);
    s_pg = NULL;
    zstr_free (&s_payment_ep);
    zactor_destroy (&s_payment);
    return 0;
}

typedef struct {
    char sid[24];
    int64_t expiry;
} s_sess_t;

static s_sess_t s_sess[SESSIONS];

/* Creates n sessions of 3..6 paid minutes through client. */
static void
s_make (ppm_rpc_client_t *client, size_t n, const char *tag)
{
    Ppm__V1__Quote q;
    tk_quote (&q, true, NULL, 0, 0, 3600);
    for (size_t i = 0; i < n; i++) {
        char payer[32];
        char pid[48];
        snprintf (payer, sizeof payer, "u_%s_%zu", tag, i);
        char *sid = tk_create (client, s_tenant, &q, payer);
        assert_non_null (sid);
        snprintf (pid, sizeof pid, "pay_%s", sid);
        Ppm__V1__FundReply *fr = NULL;
        ppm_status_t *st = tk_fund (client, s_tenant, sid, pid, 3 + (int64_t)(i % 4), &fr);
        assert_null (st);
        snprintf (s_sess[i].sid, sizeof s_sess[i].sid, "%s", sid);
        s_sess[i].expiry = fr->session->expires_at_ms;
        protobuf_c_message_free_unpacked (&fr->base, NULL);
        free (sid);
    }
}

/* Every session expired exactly at its paid time, according to the
   service, and no expiry event was seen twice. */
static void
s_check (ppm_rpc_client_t *client, size_t n, tk_events_t *events, int64_t restart_ms)
{
    size_t late_checked = 0;
    for (size_t i = 0; i < n; i++) {
        int seen = tk_count (events, s_sess[i].sid, "session.expired");
        assert_true (seen <= 1);
        Ppm__V1__SessionReply *r = NULL;
        assert_null (
            tk_session (client, "metering.Get", s_tenant, s_sess[i].sid, NULL, NULL, 0, &r));
        assert_int_equal (r->session->state, PPM__V1__SESSION_STATE__SESSION_EXPIRED);
        assert_int_equal (r->session->ended_at_ms, s_sess[i].expiry);
        assert_int_equal (r->session->used_ms, r->session->funded_ms);
        protobuf_c_message_free_unpacked (&r->base, NULL);
        const tk_event_t *e = tk_find (events, s_sess[i].sid, "session.expired");
        if (e && s_sess[i].expiry > restart_ms + 100 * SCALE) {
            /* Due after the restart settled: at most a tick late, plus
               slack for a loaded 2-core machine and sanitizer builds. */
            assert_true (e->recv_ms - s_sess[i].expiry <= (20 + 500) * SCALE);
            late_checked++;
        }
    }
    assert_true (late_checked > 0);
}

static bool
s_all_expired (tk_events_t *events, void *arg)
{
    size_t n = *(size_t *)arg;
    size_t count = 0;
    for (size_t i = 0; i < events->count; i++)
        if (streq (events->ev[i].name, "session.expired"))
            count++;
    return count >= n;
}

static void
test_kill9_mid_1000_sessions (void **state)
{
    (void)state;
    s_proc_t a = {0};
    s_proc_init (&a, "A");
    s_spawn (&a);
    ppm_rpc_client_t *client = ppm_rpc_client_new (a.rpc);
    s_wait_up (client);
    ppm_events_sub_t *sub = ppm_events_sub_new (a.pub);
    ppm_events_subscribe (sub, "session.expired");
    static tk_events_t events;
    events.count = 0;
    s_make (client, SESSIONS, "k");
    tk_collect (sub, &events, 100, NULL, NULL);
    size_t before = events.count;
    s_kill9 (&a);
    zclock_sleep (300);
    s_spawn (&a);
    s_wait_up (client);
    int64_t restart = ppm_clock_now_ms ();
    size_t n = SESSIONS;
    tk_collect (sub, &events, 8000, s_all_expired, &n);
    printf ("kill -9 after %zu of %d expiries; %zu expiry events in all\n", before, SESSIONS,
            events.count);
    s_check (client, SESSIONS, &events, restart);
    /* Each expired session's usage was reported to payment, once. */
    for (int i = 0; i < 500 && tk_payment_count (s_payment, s_sess[SESSIONS - 1].sid) == 0; i++)
        zclock_sleep (20);
    assert_int_equal (tk_payment_count (s_payment, s_sess[SESSIONS - 1].sid), 1);
    assert_int_equal (tk_payment_count (s_payment, s_sess[0].sid), 1);
    ppm_events_sub_destroy (&sub);
    ppm_rpc_client_destroy (&client);
    s_stop (&a);
}

static int
s_leases_of (const char *name)
{
    int port = 0;
    int db = 0;
    sscanf (s_redis, "redis://127.0.0.1:%d/%d", &port, &db);
    redisContext *c = redisConnect ("127.0.0.1", port);
    redisReply *r = redisCommand (c, "SELECT %d", db);
    freeReplyObject (r);
    int n = 0;
    for (int b = 0; b < 64; b++) {
        r = redisCommand (c, "GET {l:%d}", b);
        if (r && r->type == REDIS_REPLY_STRING && streq (r->str, name))
            n++;
        freeReplyObject (r);
    }
    redisFree (c);
    return n;
}

static void
test_two_replicas_takeover (void **state)
{
    (void)state;
    s_proc_t a = {0};
    s_proc_t b = {0};
    s_proc_init (&a, "A2");
    s_proc_init (&b, "B2");
    s_spawn (&a);
    s_spawn (&b);
    ppm_rpc_client_t *ca = ppm_rpc_client_new (a.rpc);
    ppm_rpc_client_t *cb = ppm_rpc_client_new (b.rpc);
    s_wait_up (ca);
    s_wait_up (cb);
    /* They share the buckets. */
    int la = 0;
    int lb = 0;
    for (int i = 0; i < 200; i++) {
        la = s_leases_of ("A2");
        lb = s_leases_of ("B2");
        if (la == 32 && lb == 32)
            break;
        zclock_sleep (50);
    }
    assert_int_equal (la, 32);
    assert_int_equal (lb, 32);
    ppm_events_sub_t *sub = ppm_events_sub_new (a.pub);
    ppm_events_subscribe (sub, "session.expired");
    static tk_events_t events;
    events.count = 0;
    zclock_sleep (100);
    s_make (cb, 200, "r");
    s_kill9 (&b);
    int64_t killed = ppm_clock_now_ms ();
    /* Within the lease (600 ms) and a cycle, A holds every bucket. */
    for (int i = 0; i < 80 && s_leases_of ("A2") < 64; i++)
        zclock_sleep (25);
    assert_int_equal (s_leases_of ("A2"), 64);
    size_t n = 200;
    tk_collect (sub, &events, 6000, s_all_expired, &n);
    /* Sessions due after the takeover window are on time again. */
    s_check (ca, 200, &events, killed + 1000 * SCALE);
    ppm_events_sub_destroy (&sub);
    ppm_rpc_client_destroy (&ca);
    ppm_rpc_client_destroy (&cb);
    s_stop (&a);
}

/* The replica holding every bucket dies with a lease far longer than the
   sessions' paid time: its sessions fall due and nobody ticks them. Get
   through the other replica brings each one up to now: expired at its
   exact deadline, all its time used, the expiry event published once. */
static void
test_get_while_owner_dead (void **state)
{
    (void)state;
    /* A Redis database of its own: the earlier tests' replicas still count
       as live there for three (20 s) leases, which would halve B's share. */
    char shared[256];
    snprintf (shared, sizeof shared, "%s", s_redis);
    tk_redis_url (s_redis, sizeof s_redis, 12);
    tk_redis (s_redis, "FLUSHDB");
    s_proc_t a = {0};
    s_proc_t b = {0};
    s_proc_init (&a, "A3");
    s_proc_init (&b, "B3");
    snprintf (a.lease, sizeof a.lease, "20s");
    snprintf (b.lease, sizeof b.lease, "20s");
    s_spawn (&b);
    ppm_rpc_client_t *cb = ppm_rpc_client_new (b.rpc);
    s_wait_up (cb);
    int lb = 0;
    for (int i = 0; i < 400 && (lb = s_leases_of ("B3")) != 64; i++)
        zclock_sleep (25);
    assert_int_equal (lb, 64);
    s_spawn (&a);
    ppm_rpc_client_t *ca = ppm_rpc_client_new (a.rpc);
    s_wait_up (ca);
    ppm_events_sub_t *sub = ppm_events_sub_new (a.pub);
    ppm_events_subscribe (sub, "session.expired");
    static tk_events_t events;
    events.count = 0;
    zclock_sleep (100);
    /* 3..6 paid minutes: 1.8..3.6 s at scale 100 */
    s_make (cb, 40, "g");
    s_kill9 (&b);
    int64_t last = 0;
    for (size_t i = 0; i < 40; i++)
        if (s_sess[i].expiry > last)
            last = s_sess[i].expiry;
    while (ppm_clock_now_ms () < last + 50 * SCALE)
        zclock_sleep (20);
    /* B's leases (20 s) still run: A ticks none of these sessions. */
    assert_int_equal (s_leases_of ("A3"), 0);
    for (size_t i = 0; i < 40; i++) {
        Ppm__V1__SessionReply *r = NULL;
        assert_null (tk_session (ca, "metering.Get", s_tenant, s_sess[i].sid, NULL, NULL, 0, &r));
        assert_int_equal (r->session->state, PPM__V1__SESSION_STATE__SESSION_EXPIRED);
        assert_int_equal (r->session->ended_at_ms, s_sess[i].expiry);
        assert_int_equal (r->session->used_ms, r->session->funded_ms);
        protobuf_c_message_free_unpacked (&r->base, NULL);
    }
    size_t n = 40;
    tk_collect (sub, &events, 3000, s_all_expired, &n);
    for (size_t i = 0; i < 40; i++)
        assert_int_equal (tk_count (&events, s_sess[i].sid, "session.expired"), 1);
    ppm_events_sub_destroy (&sub);
    ppm_rpc_client_destroy (&ca);
    ppm_rpc_client_destroy (&cb);
    s_stop (&a);
    tk_redis (s_redis, "FLUSHDB");
    snprintf (s_redis, sizeof s_redis, "%s", shared);
}

/* Redis is emptied (FLUSHALL, or a restart without its data) and this
   replica's lease cycle, which would rebuild every session, is 7 s away.
   An awaiting session's payment is credited (a NOT_FOUND here made payment
   give the money back and the payer never got the session), an active
   one's heartbeat is accepted with its deadline unchanged, and a finished
   one still answers End with its result. */
static void
test_redis_lost_before_rebuild (void **state)
{
    (void)state;
    char shared[256];
    snprintf (shared, sizeof shared, "%s", s_redis);
    tk_redis_url (s_redis, sizeof s_redis, 13);
    tk_redis (s_redis, "FLUSHDB");
    s_proc_t a = {0};
    s_proc_init (&a, "A4");
    snprintf (a.lease, sizeof a.lease, "20s");
    s_spawn (&a);
    ppm_rpc_client_t *client = ppm_rpc_client_new (a.rpc);
    s_wait_up (client);
    Ppm__V1__Quote q;
    tk_quote (&q, true, NULL, 0, 600, 3600);
    char *waiting = tk_create (client, s_tenant, &q, "u_lost_1");
    char *running = tk_create (client, s_tenant, &q, "u_lost_2");
    char *over = tk_create (client, s_tenant, &q, "u_lost_3");
    assert_non_null (waiting);
    assert_non_null (running);
    assert_non_null (over);
    Ppm__V1__FundReply *fr = NULL;
    assert_null (tk_fund (client, s_tenant, running, "pay_lost_2", 30, &fr));
    int64_t deadline = fr->session->expires_at_ms;
    protobuf_c_message_free_unpacked (&fr->base, NULL);
    assert_null (tk_fund (client, s_tenant, over, "pay_lost_3", 30, NULL));
    Ppm__V1__EndRequest end = PPM__V1__END_REQUEST__INIT;
    end.session_id = over;
    end.by = "payer";
    end.actor = "u_lost_3";
    Ppm__V1__EndReply *er = NULL;
    assert_null (tk_call (client, "metering.End", s_tenant, &end.base,
                          &ppm__v1__end_reply__descriptor, (ProtobufCMessage **)&er));
    int64_t used = er->used_ms;
    protobuf_c_message_free_unpacked (&er->base, NULL);
    zclock_sleep (300); /* finalized; the lease cycle at start has run, the next is 7 s away */
    tk_redis (s_redis, "FLUSHDB");
    fr = NULL;
    ppm_status_t *st = tk_fund (client, s_tenant, waiting, "pay_lost_1", 10, &fr);
    if (st)
        fail_msg ("Fund after Redis lost the session: %s %s", ppm_code_name (ppm_status_code (st)),
                  ppm_status_message (st));
    assert_int_equal (fr->session->state, PPM__V1__SESSION_STATE__SESSION_ACTIVE);
    assert_int_equal (fr->session->funded_ms, 10 * 60000);
    protobuf_c_message_free_unpacked (&fr->base, NULL);
    Ppm__V1__SessionReply *r = NULL;
    st = tk_session (client, "metering.Heartbeat", s_tenant, running, "payer", "u_lost_2", 0, &r);
    if (st)
        fail_msg ("Heartbeat after Redis lost the session: %s %s",
                  ppm_code_name (ppm_status_code (st)), ppm_status_message (st));
    assert_int_equal (r->session->state, PPM__V1__SESSION_STATE__SESSION_ACTIVE);
    assert_int_equal (r->session->expires_at_ms, deadline);
    protobuf_c_message_free_unpacked (&r->base, NULL);
    /* Over for good and gone from Redis: End answers its record, already
       ended (not "not found"), and a heartbeat is refused as ended. */
    er = NULL;
    st = tk_call (client, "metering.End", s_tenant, &end.base, &ppm__v1__end_reply__descriptor,
                  (ProtobufCMessage **)&er);
    if (st)
        fail_msg ("End of a finished session after Redis lost it: %s %s",
                  ppm_code_name (ppm_status_code (st)), ppm_status_message (st));
    assert_true (er->already_ended);
    assert_int_equal (er->used_ms, used);
    assert_int_equal (er->session->state, PPM__V1__SESSION_STATE__SESSION_ENDED);
    protobuf_c_message_free_unpacked (&er->base, NULL);
    st = tk_session (client, "metering.Heartbeat", s_tenant, over, "payer", "u_lost_3", 0, NULL);
    assert_non_null (st);
    assert_int_equal (ppm_status_code (st), PPM_FAILED_PRECONDITION);
    ppm_status_destroy (&st);
    free (waiting);
    free (running);
    free (over);
    ppm_rpc_client_destroy (&client);
    s_stop (&a);
    tk_redis (s_redis, "FLUSHDB");
    snprintf (s_redis, sizeof s_redis, "%s", shared);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown (test_kill9_mid_1000_sessions, s_test_teardown),
        cmocka_unit_test_teardown (test_two_replicas_takeover, s_test_teardown),
        cmocka_unit_test_teardown (test_get_while_owner_dead, s_test_teardown),
        cmocka_unit_test_teardown (test_redis_lost_before_rebuild, s_test_teardown),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
