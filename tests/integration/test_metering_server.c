/*  The metering actor in-process on tcp://127.0.0.1:*, against real Redis
    and PostgreSQL, at PPM_TIME_SCALE 100 (a minute in 0.6 s): countdown
    with each warning once and expiry within a tick, top-up without a gap,
    end early with exact used time and one usage report, grace pause and
    resume without charging the gap, TTL, bad input changing nothing, and
    Redis flushed then rebuilt from PostgreSQL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <unistd.h>

#include "metering_testkit.h"
#include "tests/lib/ppm_test.h"
#include "ppm_log.h"
#include "services/metering/metering_server.h"

#define SCALE   100
#define TICK_MS 20 /* real */

static zactor_t *s_payment;
static zactor_t *s_server;
static ppm_rpc_client_t *s_client;
static ppm_events_sub_t *s_sub;
static tk_events_t s_events;
static char s_redis[256];
static int s_port;
static char *s_pg; /* this test's own database */
static char s_t1[32];
static char s_t2[32];
static char s_t3[32];
static char s_trial[32];
static char s_many[32];

static int
s_setup (void **state)
{
    (void)state;
    if (!getenv ("PPM_TEST_REDIS_URL") || !getenv ("PPM_TEST_PG_URL"))
        return -1;
    ppm_log_init ("test");
    ppm_log_set_level (PPM_LOG_WARN);
    ppm_clock_set_scale (SCALE);
    tk_redis_url (s_redis, sizeof s_redis, 10);
    /* Names unique per run: the plain and sanitizer runs share PostgreSQL. */
    int pid = (int)getpid ();
    snprintf (s_t1, sizeof s_t1, "t_m1_%d", pid);
    snprintf (s_t2, sizeof s_t2, "t_m2_%d", pid);
    snprintf (s_t3, sizeof s_t3, "t_m3_%d", pid);
    snprintf (s_trial, sizeof s_trial, "u_trial_%d", pid);
    snprintf (s_many, sizeof s_many, "u_many_%d", pid);
    tk_redis (s_redis, "FLUSHDB");
    /* A database of its own: payment ids are fixed strings, applied once
       ever, and the plain and sanitizer runs share the server. */
    s_pg = ppm_test_pg_url ("test_metering_server");
    s_payment = zactor_new (tk_payment_actor, NULL);
    char *payment_ep = zstr_recv (s_payment);
    metering_config_t cfg = {.rpc_bind = "tcp://127.0.0.1:*",
                             .pub_bind = "tcp://127.0.0.1:*",
                             .redis_url = s_redis,
                             .pg_url = s_pg,
                             .payment_endpoint = payment_ep,
                             .replica_id = "inproc",
                             .tick_ms = TICK_MS,
                             .lease_ms = 600,
                             .buckets = 16,
                             .retention_ms = 60000,
                             .batch = 10000};
    s_server = zactor_new (metering_server_actor, &cfg);
    zstr_free (&payment_ep);
    zstr_send (s_server, "PORT");
    char *port = zstr_recv (s_server);
    zstr_send (s_server, "PUB");
    char *pub = zstr_recv (s_server);
    char ep[64];
    snprintf (ep, sizeof ep, "tcp://127.0.0.1:%s", port);
    s_port = (int)strtol (port, NULL, 10);
    s_client = ppm_rpc_client_new (ep);
    s_sub = ppm_events_sub_new (pub);
    ppm_events_subscribe (s_sub, "session.");
    zstr_free (&port);
    zstr_free (&pub);
    zclock_sleep (200); /* SUB joins */
    return 0;
}

static int
s_teardown (void **state)
{
    (void)state;
    ppm_events_sub_destroy (&s_sub);
    ppm_rpc_client_destroy (&s_client);
    zactor_destroy (&s_server);
    zactor_destroy (&s_payment);
    tk_redis_compact (s_redis);
    free (s_pg);
    s_pg = NULL;
    return 0;
}

static bool
s_has (tk_events_t *list, void *arg)
{
    const char **want = arg;
    return tk_find (list, want[0], want[1]) != NULL;
}

static void
s_wait_event (const char *sid, const char *name, int64_t real_ms)
{
    const char *want[] = {sid, name};
    if (tk_find (&s_events, sid, name))
        return;
    tk_collect (s_sub, &s_events, real_ms, s_has, want);
}

static void
test_countdown_warnings_expiry (void **state)
{
    (void)state;
    int64_t marks[] = {300, 60, 10};
    Ppm__V1__Quote q;
    tk_quote (&q, true, marks, 3, 0, 3600);
    char *sid = tk_create (s_client, s_t1, &q, "u_payer1");
    assert_non_null (sid);
    Ppm__V1__FundReply *fr = NULL;
    assert_null (tk_fund (s_client, s_t1, sid, "pay_cd_1", 6, &fr));
    assert_non_null (fr);
    assert_int_equal (fr->session->state, PPM__V1__SESSION_STATE__SESSION_ACTIVE);
    int64_t expiry = fr->session->expires_at_ms;
    assert_int_equal (expiry, fr->session->now_ms + 360000);
    protobuf_c_message_free_unpacked (&fr->base, NULL);
    s_wait_event (sid, "session.expired", 8000);
    assert_int_equal (tk_count (&s_events, sid, "session.warning"), 3);
    assert_int_equal (tk_count (&s_events, sid, "session.expired"), 1);
    for (size_t i = 0; i < s_events.count; i++) {
        tk_event_t *e = &s_events.ev[i];
        if (!streq (e->sid, sid) || !streq (e->name, "session.warning"))
            continue;
        assert_int_equal (e->at_ms, expiry - e->mark_s * 1000);
        assert_int_equal (e->remaining_ms, e->mark_s * 1000);
    }
    const tk_event_t *x = tk_find (&s_events, sid, "session.expired");
    assert_int_equal (x->at_ms, expiry);
    assert_int_equal (x->used_ms, 360000);
    /* Handled within one tick (plus scheduling slack) of the paid time. */
    int64_t late = x->recv_ms - expiry;
    assert_true (late <= (TICK_MS + 300) * SCALE);
    /* Nothing more for this session, ever. */
    tk_collect (s_sub, &s_events, 300, NULL, NULL);
    assert_int_equal (tk_count (&s_events, sid, "session.expired"), 1);
    assert_int_equal (tk_count (&s_events, sid, "session.warning"), 3);
    free (sid);
}

static void
test_topup_and_end_exact (void **state)
{
    (void)state;
    Ppm__V1__Quote q;
    tk_quote (&q, true, NULL, 0, 0, 3600);
    char *sid = tk_create (s_client, s_t1, &q, "u_payer2");
    Ppm__V1__FundReply *fr = NULL;
    assert_null (tk_fund (s_client, s_t1, sid, "pay_tu_1", 2, &fr));
    int64_t expiry = fr->session->expires_at_ms;
    protobuf_c_message_free_unpacked (&fr->base, NULL);
    zclock_sleep (400); /* 40 s of ppm time */
    assert_null (tk_fund (s_client, s_t1, sid, "pay_tu_2", 1, &fr));
    assert_int_equal (fr->session->state, PPM__V1__SESSION_STATE__SESSION_ACTIVE);
    assert_int_equal (fr->session->expires_at_ms, expiry + 60000); /* no gap, no loss */
    assert_false (fr->already_applied);
    protobuf_c_message_free_unpacked (&fr->base, NULL);
    s_wait_event (sid, "session.extended", 1000);
    assert_int_equal (tk_count (&s_events, sid, "session.extended"), 1);
    /* End at an exact instant: used = that instant - start. */
    Ppm__V1__SessionReply *got = NULL;
    assert_null (tk_session (s_client, "metering.Get", s_t1, sid, NULL, NULL, 0, &got));
    int64_t start = got->session->expires_at_ms - 180000;
    int64_t at = got->session->now_ms;
    protobuf_c_message_free_unpacked (&got->base, NULL);
    Ppm__V1__EndRequest end = PPM__V1__END_REQUEST__INIT;
    end.session_id = sid;
    end.by = "payee";
    end.actor = "u_payee";
    end.at_ms = at;
    Ppm__V1__EndReply *er = NULL;
    assert_null (tk_call (s_client, "metering.End", s_t1, &end.base,
                          &ppm__v1__end_reply__descriptor, (ProtobufCMessage **)&er));
    assert_int_equal (er->used_ms, at - start);
    assert_int_equal (er->session->state, PPM__V1__SESSION_STATE__SESSION_ENDED);
    assert_string_equal (er->session->end_reason, "payee");
    /* per second at 120/min: 2 per started second, at most what was paid */
    int64_t secs = (at - start + 999) / 1000;
    assert_int_equal (er->billed_amount, secs * 2 < 360 ? secs * 2 : 360);
    protobuf_c_message_free_unpacked (&er->base, NULL);
    /* The usage report reaches payment once, and only once. */
    for (int i = 0; i < 100 && tk_payment_count (s_payment, sid) == 0; i++)
        zclock_sleep (20);
    assert_int_equal (tk_payment_count (s_payment, sid), 1);
    zclock_sleep (700);
    assert_int_equal (tk_payment_count (s_payment, sid), 1);
    /* Ending again answers the first result. */
    assert_null (tk_call (s_client, "metering.End", s_t1, &end.base,
                          &ppm__v1__end_reply__descriptor, (ProtobufCMessage **)&er));
    assert_true (er->already_ended);
    assert_int_equal (er->used_ms, at - start);
    protobuf_c_message_free_unpacked (&er->base, NULL);
    free (sid);
}

static void
test_grace_pause_resume (void **state)
{
    (void)state;
    Ppm__V1__Quote q;
    tk_quote (&q, true, NULL, 0, 20, 3600); /* grace 20 s = 0.2 s real */
    char *sid = tk_create (s_client, s_t1, &q, "u_payer3");
    assert_null (tk_fund (s_client, s_t1, sid, "pay_gr_1", 10, NULL));
    assert_null (
        tk_session (s_client, "metering.Heartbeat", s_t1, sid, "payer", "u_payer3", 0, NULL));
    s_wait_event (sid, "session.paused", 2000);
    const tk_event_t *p = tk_find (&s_events, sid, "session.paused");
    assert_non_null (p);
    assert_string_equal (p->reason, "grace");
    int64_t used_at_pause = p->used_ms;
    zclock_sleep (500); /* 50 s of ppm time with nobody there */
    Ppm__V1__SessionReply *r = NULL;
    assert_null (tk_session (s_client, "metering.Get", s_t1, sid, NULL, NULL, 0, &r));
    assert_int_equal (r->session->state, PPM__V1__SESSION_STATE__SESSION_PAUSED);
    assert_int_equal (r->session->used_ms, used_at_pause);
    protobuf_c_message_free_unpacked (&r->base, NULL);
    assert_null (tk_session (s_client, "metering.Heartbeat", s_t1, sid, "payee", "u_payee", 0, &r));
    assert_int_equal (r->session->state, PPM__V1__SESSION_STATE__SESSION_ACTIVE);
    /* The gap is not charged: used continues from where it paused. */
    assert_true (r->session->used_ms - used_at_pause < 2000);
    protobuf_c_message_free_unpacked (&r->base, NULL);
    s_wait_event (sid, "session.resumed", 1000);
    assert_int_equal (tk_count (&s_events, sid, "session.resumed"), 1);
    assert_null (tk_session (s_client, "metering.End", s_t1, sid, NULL, NULL, 0, NULL));
    free (sid);
}

static void
test_ttl_closes_stale (void **state)
{
    (void)state;
    Ppm__V1__Quote q;
    tk_quote (&q, true, NULL, 0, 0, 30); /* TTL 30 s = 0.3 s real, never paid */
    char *sid = tk_create (s_client, s_t1, &q, "u_payer4");
    s_wait_event (sid, "session.ended", 2000);
    const tk_event_t *e = tk_find (&s_events, sid, "session.ended");
    assert_non_null (e);
    assert_string_equal (e->reason, "stale");
    free (sid);
}

static void
test_bad_input_changes_nothing (void **state)
{
    (void)state;
    Ppm__V1__Quote q;
    tk_quote (&q, true, NULL, 0, 0, 3600);
    char *sid = tk_create (s_client, s_t1, &q, "u_payer5");
    char *other = tk_create (s_client, s_t1, &q, "u_payer6");
    assert_null (tk_fund (s_client, s_t1, sid, "pay_bad_1", 5, NULL));
    Ppm__V1__SessionReply *r = NULL;
    assert_null (tk_session (s_client, "metering.Get", s_t1, sid, NULL, NULL, 0, &r));
    uint64_t seq = r->session->seq;
    int64_t funded = r->session->funded_ms;
    protobuf_c_message_free_unpacked (&r->base, NULL);

    /* Unknown session; another tenant's session. */
    ppm_status_t *st =
        tk_session (s_client, "metering.Get", s_t1, "s0000000000000000", NULL, NULL, 0, NULL);
    assert_int_equal (ppm_status_code (st), PPM_NOT_FOUND);
    ppm_status_destroy (&st);
    st = tk_session (s_client, "metering.Get", "t_other", sid, NULL, NULL, 0, NULL);
    assert_int_equal (ppm_status_code (st), PPM_NOT_FOUND);
    ppm_status_destroy (&st);
    st = tk_fund (s_client, "t_other", sid, "pay_bad_2", 5, NULL);
    assert_int_equal (ppm_status_code (st), PPM_NOT_FOUND);
    ppm_status_destroy (&st);
    st = tk_session (s_client, "metering.Get", s_t1, "not-a-session", NULL, NULL, 0, NULL);
    assert_int_equal (ppm_status_code (st), PPM_INVALID_ARGUMENT);
    assert_non_null (ppm_status_field_find (st, "session_id"));
    ppm_status_destroy (&st);
    /* Repeat funding: OK, already applied, nothing added. */
    Ppm__V1__FundReply *fr = NULL;
    assert_null (tk_fund (s_client, s_t1, sid, "pay_bad_1", 5, &fr));
    assert_true (fr->already_applied);
    assert_int_equal (fr->session->funded_ms, funded);
    protobuf_c_message_free_unpacked (&fr->base, NULL);
    /* A payment applied to one session cannot fund another. */
    st = tk_fund (s_client, s_t1, other, "pay_bad_1", 5, NULL);
    assert_int_equal (ppm_status_code (st), PPM_FAILED_PRECONDITION);
    assert_non_null (ppm_status_field_find (st, "payment_id"));
    ppm_status_destroy (&st);
    /* Bad fields. */
    st = tk_fund (s_client, s_t1, sid, "pay bad", 0, NULL);
    assert_int_equal (ppm_status_code (st), PPM_INVALID_ARGUMENT);
    assert_non_null (ppm_status_field_find (st, "payment_id"));
    assert_non_null (ppm_status_field_find (st, "minutes"));
    ppm_status_destroy (&st);
    /* Time going backwards, and from the future. */
    st = tk_session (s_client, "metering.Heartbeat", s_t1, sid, "payer", "u_payer5",
                     ppm_clock_now_ms () - 3600000, NULL);
    assert_int_equal (ppm_status_code (st), PPM_INVALID_ARGUMENT);
    assert_non_null (ppm_status_field_find (st, "at_ms"));
    ppm_status_destroy (&st);
    st = tk_session (s_client, "metering.Heartbeat", s_t1, sid, "payer", "u_payer5",
                     ppm_clock_now_ms () + 3600000, NULL);
    assert_int_equal (ppm_status_code (st), PPM_INVALID_ARGUMENT);
    ppm_status_destroy (&st);
    /* Someone else acting as the payer. */
    st = tk_session (s_client, "metering.End", s_t1, sid, "payer", "u_intruder", 0, NULL);
    assert_int_equal (ppm_status_code (st), PPM_PERMISSION_DENIED);
    ppm_status_destroy (&st);
    assert_null (tk_session (s_client, "metering.Get", s_t1, sid, NULL, NULL, 0, &r));
    assert_int_equal (r->session->seq, seq);
    assert_int_equal (r->session->funded_ms, funded);
    assert_int_equal (r->session->state, PPM__V1__SESSION_STATE__SESSION_ACTIVE);
    protobuf_c_message_free_unpacked (&r->base, NULL);
    /* Heartbeat for an ended session. */
    assert_null (tk_session (s_client, "metering.End", s_t1, sid, "platform", NULL, 0, NULL));
    st = tk_session (s_client, "metering.Heartbeat", s_t1, sid, NULL, NULL, 0, NULL);
    assert_int_equal (ppm_status_code (st), PPM_FAILED_PRECONDITION);
    ppm_status_destroy (&st);
    /* Funding an ended session. */
    st = tk_fund (s_client, s_t1, sid, "pay_bad_3", 5, NULL);
    assert_int_equal (ppm_status_code (st), PPM_FAILED_PRECONDITION);
    ppm_status_destroy (&st);
    /* List: newest first, state filter. */
    Ppm__V1__ListRequest lr = PPM__V1__LIST_REQUEST__INIT;
    lr.state = PPM__V1__SESSION_STATE__SESSION_AWAITING_PAYMENT;
    Ppm__V1__ListReply *list = NULL;
    assert_null (tk_call (s_client, "metering.List", s_t1, &lr.base,
                          &ppm__v1__list_reply__descriptor, (ProtobufCMessage **)&list));
    assert_true (list->n_sessions >= 1);
    assert_string_equal (list->sessions[0]->session_id, other);
    for (size_t i = 1; i < list->n_sessions; i++)
        assert_true (strcmp (list->sessions[i - 1]->session_id, list->sessions[i]->session_id) > 0);
    protobuf_c_message_free_unpacked (&list->base, NULL);
    tk_session (s_client, "metering.End", s_t1, other, NULL, NULL, 0, NULL);
    free (sid);
    free (other);
}

static void
test_free_session_and_limits (void **state)
{
    (void)state;
    Ppm__V1__Quote q;
    tk_quote (&q, false, NULL, 0, 0, 3600);
    char *sid = tk_create (s_client, s_t2, &q, "u_free");
    Ppm__V1__SessionReply *r = NULL;
    assert_null (tk_session (s_client, "metering.Get", s_t2, sid, NULL, NULL, 0, &r));
    assert_int_equal (r->session->state, PPM__V1__SESSION_STATE__SESSION_ACTIVE);
    assert_int_equal (r->session->expires_at_ms, 0);
    protobuf_c_message_free_unpacked (&r->base, NULL);
    assert_null (tk_session (s_client, "metering.End", s_t2, sid, NULL, NULL, 0, NULL));
    for (int i = 0; i < 100 && tk_payment_count (s_payment, sid) == 0; i++)
        zclock_sleep (20);
    assert_int_equal (tk_payment_count (s_payment, sid), 1); /* free sessions report too */
    free (sid);
    /* At most 2 unfinished paid sessions per payer. */
    tk_quote (&q, true, NULL, 0, 0, 3600);
    q.max_concurrent_sessions = 2;
    char *a = tk_create (s_client, s_t2, &q, s_many);
    char *b = tk_create (s_client, s_t2, &q, s_many);
    assert_non_null (a);
    assert_non_null (b);
    char *c = tk_create (s_client, s_t2, &q, s_many);
    assert_null (c);
    /* Free trial: 1 minute per (payer, payee), consumed once. */
    q.max_concurrent_sessions = 0;
    q.free_trial_minutes = 1;
    char *t1 = tk_create (s_client, s_t2, &q, s_trial);
    assert_null (tk_session (s_client, "metering.Get", s_t2, t1, NULL, NULL, 0, &r));
    assert_int_equal (r->session->state, PPM__V1__SESSION_STATE__SESSION_ACTIVE);
    assert_int_equal (r->session->trial_ms, 60000);
    protobuf_c_message_free_unpacked (&r->base, NULL);
    char *t2 = tk_create (s_client, s_t2, &q, s_trial);
    assert_null (tk_session (s_client, "metering.Get", s_t2, t2, NULL, NULL, 0, &r));
    assert_int_equal (r->session->state, PPM__V1__SESSION_STATE__SESSION_AWAITING_PAYMENT);
    assert_int_equal (r->session->trial_ms, 0);
    protobuf_c_message_free_unpacked (&r->base, NULL);
    tk_session (s_client, "metering.End", s_t2, a, NULL, NULL, 0, NULL);
    tk_session (s_client, "metering.End", s_t2, b, NULL, NULL, 0, NULL);
    tk_session (s_client, "metering.End", s_t2, t1, NULL, NULL, 0, NULL);
    tk_session (s_client, "metering.End", s_t2, t2, NULL, NULL, 0, NULL);
    free (a);
    free (b);
    free (t1);
    free (t2);
}

static void
test_redis_flushed_rebuilt (void **state)
{
    (void)state;
    Ppm__V1__Quote q;
    tk_quote (&q, true, NULL, 0, 0, 3600);
    char *sid = tk_create (s_client, s_t3, &q, "u_payer7");
    Ppm__V1__FundReply *fr = NULL;
    assert_null (tk_fund (s_client, s_t3, sid, "pay_rb_1", 10, &fr));
    int64_t expiry = fr->session->expires_at_ms;
    protobuf_c_message_free_unpacked (&fr->base, NULL);
    tk_redis (s_redis, "FLUSHDB");
    /* Rebuilt automatically (the lease cycle sees the marker gone). */
    char key[64];
    snprintf (key, sizeof key, "{s:%s}", sid);
    bool live = false;
    for (int i = 0; i < 100 && !live; i++) {
        zclock_sleep (20);
        live = tk_redis_exists (s_redis, key);
    }
    assert_true (live);
    Ppm__V1__SessionReply *r = NULL;
    assert_null (tk_session (s_client, "metering.Get", s_t3, sid, NULL, NULL, 0, &r));
    assert_int_equal (r->session->expires_at_ms, expiry);
    assert_int_equal (r->session->state, PPM__V1__SESSION_STATE__SESSION_ACTIVE);
    protobuf_c_message_free_unpacked (&r->base, NULL);
    /* The Rebuild RPC finds it already there; the funding is still known. */
    Ppm__V1__RebuildRequest rq = PPM__V1__REBUILD_REQUEST__INIT;
    Ppm__V1__RebuildReply *rr = NULL;
    assert_null (tk_call (s_client, "metering.Rebuild", s_t3, &rq.base,
                          &ppm__v1__rebuild_reply__descriptor, (ProtobufCMessage **)&rr));
    assert_int_equal (rr->rebuilt, 0);
    assert_true (rr->present >= 1);
    protobuf_c_message_free_unpacked (&rr->base, NULL);
    /* ppmctl sessions rebuild calls the same RPC. */
    if (getenv ("PPM_BIN_DIR")) {
        char cmd[512];
        snprintf (cmd, sizeof cmd,
                  "PPM_METERING_ENDPOINT=tcp://127.0.0.1:%d %s/ppmctl --json sessions rebuild "
                  "--tenant %s",
                  s_port, getenv ("PPM_BIN_DIR"), s_t3);
        FILE *p = popen (cmd, "r");
        assert_non_null (p);
        char out[256] = "";
        size_t n = fread (out, 1, sizeof out - 1, p);
        out[n] = '\0';
        assert_int_equal (pclose (p), 0);
        assert_non_null (strstr (out, "present"));
    }
    assert_null (tk_fund (s_client, s_t3, sid, "pay_rb_1", 10, &fr));
    assert_true (fr->already_applied);
    assert_int_equal (fr->session->expires_at_ms, expiry);
    protobuf_c_message_free_unpacked (&fr->base, NULL);
    assert_null (tk_session (s_client, "metering.End", s_t3, sid, NULL, NULL, 0, NULL));
    free (sid);
}

/* B13: Redis restarts (data kept) under a running session: the service
   reconnects, the session keeps its deadline and expires exactly on it. */
static void
test_redis_restart_keeps_time (void **state)
{
    (void)state;
    const char *restart = getenv ("PPM_TEST_REDIS_RESTART");
    if (!restart)
        skip ();
    Ppm__V1__Quote q;
    tk_quote (&q, true, NULL, 0, 0, 3600);
    char *sid = tk_create (s_client, s_t3, &q, "u_payer8");
    Ppm__V1__FundReply *fr = NULL;
    assert_null (tk_fund (s_client, s_t3, sid, "pay_rr_1", 2, &fr));
    int64_t expiry = fr->session->expires_at_ms;
    protobuf_c_message_free_unpacked (&fr->base, NULL);
    assert_int_equal (system (restart), 0);
    /* Answers again once Redis is back (a call during the restart may
       fail with UNAVAILABLE: the gateway then answers 503). */
    Ppm__V1__SessionReply *r = NULL;
    ppm_status_t *st = NULL;
    for (int i = 0; i < 50; i++) {
        st = tk_session (s_client, "metering.Get", s_t3, sid, NULL, NULL, 0, &r);
        if (!st && r->session->last_heartbeat_ms > 0)
            break;
        if (r)
            protobuf_c_message_free_unpacked (&r->base, NULL);
        r = NULL;
        ppm_status_destroy (&st);
        zclock_sleep (50);
    }
    assert_non_null (r);
    assert_int_equal (r->session->expires_at_ms, expiry);
    protobuf_c_message_free_unpacked (&r->base, NULL);
    s_wait_event (sid, "session.expired", 3000);
    const tk_event_t *x = tk_find (&s_events, sid, "session.expired");
    assert_non_null (x);
    assert_int_equal (x->at_ms, expiry);
    free (sid);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_countdown_warnings_expiry),
        cmocka_unit_test (test_topup_and_end_exact),
        cmocka_unit_test (test_grace_pause_resume),
        cmocka_unit_test (test_ttl_closes_stale),
        cmocka_unit_test (test_bad_input_changes_nothing),
        cmocka_unit_test (test_free_session_and_limits),
        cmocka_unit_test (test_redis_flushed_rebuilt),
        cmocka_unit_test (test_redis_restart_keeps_time),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
