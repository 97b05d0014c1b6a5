/*  Metering's data model and Lua transitions against a real Redis, with
    explicit times (no clock): the lifecycle, warnings once each, expiry at
    the exact paid time, top-up without a gap, end with exact used time,
    grace pause and resume, TTL, bad input changing nothing, bucket
    compare-and-set and leases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <hiredis.h>

#include "services/metering/metering_model.h"
#include "services/metering/metering_script.h"
#include "services/metering/metering_store.h"

static metering_store_t *s_store;
static const int64_t T0 = 1800000000000LL;

static int
s_setup (void **state)
{
    (void)state;
    const char *url = getenv ("PPM_TEST_REDIS_URL");
    if (!url)
        return -1;
    char buf[256];
    snprintf (buf, sizeof buf, "%s/9", url);
    s_store = metering_store_new (buf, 2000);
    redisReply *r = metering_store_command (s_store, "FLUSHDB");
    if (!r)
        return -1;
    freeReplyObject (r);
    return 0;
}

static int
s_teardown (void **state)
{
    (void)state;
    metering_store_destroy (&s_store);
    return 0;
}

/* A paid call session created at `at` with marks 300,60,10, grace 30 s,
   TTL 3600 s, max 120 min. */
static void
s_create (char *sid, int64_t at, const char *tenant, int64_t grace_s)
{
    Ppm__V1__Quote q = PPM__V1__QUOTE__INIT;
    int64_t marks[] = {300, 60, 10};
    q.paid = true;
    q.rate_per_minute = 100;
    q.currency = "USD";
    q.rounding = "second";
    q.billing_mode = "prepaid";
    q.n_warning_marks_s = 3;
    q.warning_marks_s = marks;
    q.grace_s = grace_s;
    q.session_ttl_s = 3600;
    q.max_session_minutes = 120;
    q.payee = "u_payee";
    q.kind = "call";
    Ppm__V1__CreateRequest req = PPM__V1__CREATE_REQUEST__INIT;
    req.quote = &q;
    req.payer = "u_payer";
    req.payee = "u_payee";
    req.kind = "call";
    ppm_status_t *st = metering_create_check (&req, tenant, at);
    assert_null (st);
    metering_sid_new (at, sid);
    char buf[1024];
    const char *argv[64];
    int argc = metering_create_fields (&req, tenant, at, 0, buf, sizeof buf, argv, 64);
    assert_true (argc > 0);
    metering_result_t res;
    assert_int_equal (metering_store_op (s_store, sid, "create", at, tenant, argc, argv, &res), 0);
    assert_int_equal (res.code, 0);
    assert_int_equal (res.snap.state, PPM__V1__SESSION_STATE__SESSION_AWAITING_PAYMENT);
    assert_int_equal (res.next_ms, at + 3600 * 1000);
}

static void
s_fund (const char *sid, int64_t at, const char *pid, int64_t ms, metering_result_t *res)
{
    char add[24];
    snprintf (add, sizeof add, "%lld", (long long)ms);
    char pfield[12];
    metering_payment_field (pid, pfield);
    const char *argv[] = {pfield, add, "1000", "USD"};
    assert_int_equal (metering_store_op (s_store, sid, "fund", at, "t1", 4, argv, res), 0);
}

static metering_result_t s_res;

static void
test_ids (void **state)
{
    (void)state;
    char a[METERING_SID_LEN + 1];
    char b[METERING_SID_LEN + 1];
    metering_sid_new (T0, a);
    metering_sid_new (T0 + 1, b);
    assert_true (metering_sid_valid (a));
    assert_int_equal (metering_sid_created_ms (a), T0);
    assert_int_equal (metering_sid_created_ms (b), T0 + 1);
    assert_true (strcmp (a, b) < 0);
    assert_false (metering_sid_valid ("s0000"));
    assert_false (metering_sid_valid ("x0123456789abcdef"));
    assert_false (metering_sid_valid ("s0123456789abcdeu"));
    assert_true (metering_bucket_of (a, 64) < 64);
    assert_true (metering_id_valid ("u_42@example.com"));
    assert_false (metering_id_valid ("a b"));
    assert_false (metering_id_valid (""));
}

static void
test_script_is_the_lua_file (void **state)
{
    (void)state;
    FILE *f = fopen ("services/metering/metering.lua", "rb");
    assert_non_null (f);
    static char buf[65536];
    size_t n = fread (buf, 1, sizeof buf - 1, f);
    fclose (f);
    buf[n] = '\0';
    assert_string_equal (buf, metering_script_lua);
}

static void
test_create_check (void **state)
{
    (void)state;
    Ppm__V1__Quote q = PPM__V1__QUOTE__INIT;
    int64_t marks[] = {10, 60};
    q.paid = true;
    q.currency = "XXX";
    q.rate_per_minute = 0;
    q.n_warning_marks_s = 2;
    q.warning_marks_s = marks;
    q.payee = "u_b";
    Ppm__V1__CreateRequest req = PPM__V1__CREATE_REQUEST__INIT;
    req.quote = &q;
    req.payer = "u_a";
    req.payee = "u_other";
    req.kind = "video";
    ppm_status_t *st = metering_create_check (&req, "t1", T0);
    assert_non_null (st);
    assert_int_equal (ppm_status_code (st), PPM_INVALID_ARGUMENT);
    assert_non_null (ppm_status_field_find (st, "kind"));
    assert_non_null (ppm_status_field_find (st, "quote.currency"));
    assert_non_null (ppm_status_field_find (st, "quote.rate_per_minute"));
    assert_non_null (ppm_status_field_find (st, "quote.warning_marks_s"));
    assert_non_null (ppm_status_field_find (st, "quote.payee"));
    ppm_status_destroy (&st);
}

static void
test_countdown_warnings_expiry (void **state)
{
    (void)state;
    char sid[METERING_SID_LEN + 1];
    s_create (sid, T0, "t1", 0);
    s_fund (sid, T0 + 1000, "pay_1", 400000, &s_res);
    assert_int_equal (s_res.code, 0);
    assert_int_equal (s_res.nevents, 1);
    assert_string_equal (s_res.events[0].name, "session.active");
    int64_t start = T0 + 1000;
    int64_t expiry = start + 400000;
    /* Next deadline: the 300 s mark. */
    assert_int_equal (s_res.next_ms, expiry - 300000);
    /* A tick before it does nothing. */
    assert_int_equal (
        metering_store_op (s_store, sid, "tick", expiry - 300001, "", 0, NULL, &s_res), 0);
    assert_int_equal (s_res.nevents, 0);
    int marks_seen[3] = {0, 0, 0};
    int expired = 0;
    for (int64_t t = expiry - 300000; t <= expiry + 5000; t += 500) {
        assert_int_equal (metering_store_op (s_store, sid, "tick", t, "", 0, NULL, &s_res), 0);
        for (size_t i = 0; i < s_res.nevents; i++) {
            metering_event_t *e = &s_res.events[i];
            if (strcmp (e->name, "session.warning") == 0) {
                int idx = e->mark_s == 300 ? 0 : e->mark_s == 60 ? 1 : 2;
                marks_seen[idx]++;
                assert_int_equal (e->remaining_ms, e->mark_s * 1000);
                assert_int_equal (e->at_ms, expiry - e->mark_s * 1000);
            } else if (strcmp (e->name, "session.expired") == 0) {
                expired++;
                assert_int_equal (e->at_ms, expiry);
                assert_int_equal (e->used_ms, 400000);
                assert_int_equal (e->remaining_ms, 0);
            }
        }
    }
    assert_int_equal (marks_seen[0], 1);
    assert_int_equal (marks_seen[1], 1);
    assert_int_equal (marks_seen[2], 1);
    assert_int_equal (expired, 1);
    assert_int_equal (s_res.snap.state, PPM__V1__SESSION_STATE__SESSION_EXPIRED);
    /* grace 0: the reopen window is closed, finalization is due. */
    assert_true (s_res.flags & METERING_R_FINALIZE);
    /* Funding now is refused and changes nothing. */
    s_fund (sid, expiry + 6000, "pay_2", 60000, &s_res);
    assert_int_equal (s_res.code, 9);
    assert_int_equal (metering_store_get (s_store, sid, &s_res.snap), 1);
    assert_int_equal (s_res.snap.funded_ms, 400000);
}

static void
test_topup_end_exact_and_idempotent (void **state)
{
    (void)state;
    char sid[METERING_SID_LEN + 1];
    s_create (sid, T0, "t1", 30);
    s_fund (sid, T0, "pay_a", 120000, &s_res);
    /* Heartbeats keep it active; top-up at 100 s extends without a gap. */
    const char *hb[] = {"payer", "u_payer", "0"};
    for (int64_t t = T0 + 20000; t <= T0 + 100000; t += 20000)
        assert_int_equal (metering_store_op (s_store, sid, "hb", t, "t1", 3, hb, &s_res), 0);
    s_fund (sid, T0 + 100000, "pay_b", 60000, &s_res);
    assert_int_equal (s_res.code, 0);
    assert_string_equal (s_res.events[0].name, "session.extended");
    assert_int_equal (s_res.events[0].remaining_ms, 80000);
    assert_int_equal (metering_snap_expires_at (&s_res.snap), T0 + 180000);
    /* The same payment again: OK, already applied, nothing changed. */
    s_fund (sid, T0 + 101000, "pay_b", 60000, &s_res);
    assert_int_equal (s_res.code, 0);
    assert_true (s_res.flags & METERING_R_ALREADY);
    assert_int_equal (s_res.snap.funded_ms, 180000);
    /* Another tenant sees nothing. */
    const char *hb2[] = {"platform", "", "0"};
    assert_int_equal (metering_store_op (s_store, sid, "hb", T0 + 110000, "t2", 3, hb2, &s_res), 0);
    assert_int_equal (s_res.code, 5);
    /* Time going backwards in input. */
    const char *back[] = {"payer", "u_payer", "1800000050000"};
    assert_int_equal (metering_store_op (s_store, sid, "hb", T0 + 110000, "t1", 3, back, &s_res),
                      0);
    assert_int_equal (s_res.code, 3);
    /* The payee may not act as the payer. */
    const char *wrong[] = {"payer", "u_payee", "0", "1"};
    assert_int_equal (metering_store_op (s_store, sid, "end", T0 + 110000, "t1", 4, wrong, &s_res),
                      0);
    assert_int_equal (s_res.code, 7);
    /* End at 111.5 s: used exactly 111500 ms. */
    const char *end[] = {"payee", "u_payee", "0", "2"};
    assert_int_equal (metering_store_op (s_store, sid, "end", T0 + 111500, "t1", 4, end, &s_res),
                      0);
    assert_int_equal (s_res.code, 0);
    assert_int_equal (s_res.snap.used_ms, 111500);
    assert_int_equal (s_res.snap.state, PPM__V1__SESSION_STATE__SESSION_ENDED);
    assert_true (s_res.flags & METERING_R_FINALIZE);
    int64_t billed = 0;
    assert_int_equal (metering_snap_billed (&s_res.snap, T0 + 200000, &billed), 0);
    assert_int_equal (billed, 187); /* ceil (112 started seconds × 100 / 60) */
    uint64_t seq = s_res.snap.seq;
    /* Ending again: already ended, same result. Heartbeat: refused. */
    assert_int_equal (metering_store_op (s_store, sid, "end", T0 + 120000, "t1", 4, end, &s_res),
                      0);
    assert_true (s_res.flags & METERING_R_ALREADY);
    assert_int_equal (s_res.snap.used_ms, 111500);
    assert_int_equal (metering_store_op (s_store, sid, "hb", T0 + 120000, "t1", 3, hb, &s_res), 0);
    assert_int_equal (s_res.code, 9);
    assert_int_equal (metering_store_get (s_store, sid, &s_res.snap), 1);
    assert_int_equal (s_res.snap.seq, seq);
    /* Finalize: marked once, key expires later. */
    const char *ret[] = {"60000"};
    assert_int_equal (metering_store_op (s_store, sid, "fin", T0 + 120000, "", 1, ret, &s_res), 0);
    assert_int_equal (s_res.code, 0);
    assert_int_equal (s_res.next_ms, -1);
    assert_int_equal (metering_store_get (s_store, sid, &s_res.snap), 1);
    assert_true (s_res.snap.finalized);
}

static void
test_grace_pause_resume_and_ttl (void **state)
{
    (void)state;
    char sid[METERING_SID_LEN + 1];
    s_create (sid, T0, "t1", 30);
    s_fund (sid, T0, "pay_g", 600000, &s_res);
    /* Last heartbeat at 10 s; grace 30 s: paused at 40 s. */
    const char *hb[] = {"payee", "u_payee", "0"};
    assert_int_equal (metering_store_op (s_store, sid, "hb", T0 + 10000, "t1", 3, hb, &s_res), 0);
    assert_int_equal (s_res.next_ms, T0 + 40000);
    assert_int_equal (metering_store_op (s_store, sid, "tick", T0 + 40100, "", 0, NULL, &s_res), 0);
    assert_int_equal (s_res.nevents, 1);
    assert_string_equal (s_res.events[0].name, "session.paused");
    assert_int_equal (s_res.events[0].at_ms, T0 + 40000);
    assert_int_equal (s_res.snap.used_ms, 40000);
    /* Back at 100 s: the gap 40..100 s is not counted. */
    assert_int_equal (metering_store_op (s_store, sid, "hb", T0 + 100000, "t1", 3, hb, &s_res), 0);
    assert_string_equal (s_res.events[0].name, "session.resumed");
    assert_int_equal (metering_snap_used (&s_res.snap, T0 + 110000), 50000);
    /* Silence again: paused at 130 s; the TTL (3600 s from the last
       heartbeat) closes it as stale. */
    assert_int_equal (
        metering_store_op (s_store, sid, "tick", T0 + 100000 + 3600000, "", 0, NULL, &s_res), 0);
    assert_int_equal (s_res.nevents, 2);
    assert_string_equal (s_res.events[0].name, "session.paused");
    assert_string_equal (s_res.events[1].name, "session.ended");
    assert_string_equal (s_res.events[1].reason, "stale");
    assert_int_equal (s_res.snap.end_reason, METERING_END_STALE);
    assert_int_equal (s_res.snap.used_ms, 70000);
}

static void
test_rearm_and_leases (void **state)
{
    (void)state;
    assert_int_equal (metering_store_arm (s_store, 3, "sA", 5000), 0);
    assert_int_equal (metering_store_arm (s_store, 3, "sA", 9000), 0); /* LT: stays 5000 */
    const char *sids[] = {"sA"};
    int64_t olds[] = {9000};
    int64_t news[] = {7000};
    assert_int_equal (metering_store_rearm (s_store, 3, 1, sids, olds, news), 0);
    redisReply *r = metering_store_command (s_store, "ZSCORE {d:3} sA");
    assert_string_equal (r->str, "5000"); /* CAS failed: score was not 9000 */
    freeReplyObject (r);
    olds[0] = 5000;
    assert_int_equal (metering_store_rearm (s_store, 3, 1, sids, olds, news), 0);
    r = metering_store_command (s_store, "ZSCORE {d:3} sA");
    assert_string_equal (r->str, "7000");
    freeReplyObject (r);
    news[0] = -1;
    olds[0] = 7000;
    assert_int_equal (metering_store_rearm (s_store, 3, 1, sids, olds, news), 0);
    r = metering_store_command (s_store, "ZCARD {d:3}");
    assert_int_equal (r->integer, 0);
    freeReplyObject (r);

    /* The race of a tick with an RPC: the RPC pre-arms (100), the tick
       reads the entry (100) and the old session, the RPC's script changes
       the session and sets the entry from its pre-arm to 5000; the tick's
       stale compare-and-set (100 -> 9999) then fails. */
    assert_int_equal (metering_store_arm (s_store, 4, "sB", 100), 0);
    assert_int_equal (metering_store_settle_entry (s_store, 4, "sB", 100, 5000), 0);
    const char *sb[] = {"sB"};
    int64_t o2[] = {100};
    int64_t n2[] = {9999};
    assert_int_equal (metering_store_rearm (s_store, 4, 1, sb, o2, n2), 0);
    r = metering_store_command (s_store, "ZSCORE {d:4} sB");
    assert_string_equal (r->str, "5000");
    freeReplyObject (r);
    /* Without its pre-arm, an RPC only moves the entry earlier. */
    assert_int_equal (metering_store_settle_entry (s_store, 4, "sB", -1, 7000), 0);
    r = metering_store_command (s_store, "ZSCORE {d:4} sB");
    assert_string_equal (r->str, "5000");
    freeReplyObject (r);
    assert_int_equal (metering_store_settle_entry (s_store, 4, "sB", -1, 4000), 0);
    r = metering_store_command (s_store, "ZSCORE {d:4} sB");
    assert_string_equal (r->str, "4000");
    freeReplyObject (r);

    assert_int_equal (metering_store_lease_acquire (s_store, 5, "r1", 10000), 1);
    assert_int_equal (metering_store_lease_acquire (s_store, 5, "r2", 10000), 0);
    assert_int_equal (metering_store_lease_renew (s_store, 5, "r2", 10000), 0);
    assert_int_equal (metering_store_lease_renew (s_store, 5, "r1", 10000), 1);
    assert_int_equal (metering_store_lease_release (s_store, 5, "r2"), 0);
    assert_int_equal (metering_store_lease_release (s_store, 5, "r1"), 1);
    assert_int_equal (metering_store_lease_acquire (s_store, 5, "r2", 10000), 1);
    assert_int_equal (metering_store_replicas (s_store, "r1", 1000000, 3000), 1);
    assert_int_equal (metering_store_replicas (s_store, "r2", 1000500, 3000), 2);
    assert_int_equal (metering_store_replicas (s_store, "r2", 1005000, 3000), 1);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_ids),
        cmocka_unit_test (test_script_is_the_lua_file),
        cmocka_unit_test (test_create_check),
        cmocka_unit_test (test_countdown_warnings_expiry),
        cmocka_unit_test (test_topup_end_exact_and_idempotent),
        cmocka_unit_test (test_grace_pause_resume_and_ttl),
        cmocka_unit_test (test_rearm_and_leases),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
