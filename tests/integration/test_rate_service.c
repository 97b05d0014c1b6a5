/*  Integration tests of the rate service against a real config service
    (in-process actors on tcp://127.0.0.1:*, real PostgreSQL, real ZeroMQ):
    quotes end to end, precedence over the wire, a change visible within
    the documented bound (2 × refresh) both through config.changed and
    when the event is lost, tenant isolation, live mode under
    PPM_TIME_SCALE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <czmq.h>
#include <sodium.h>
#include <stdatomic.h>

#include "ppm_clock.h"
#include "ppm_log.h"
#include "ppm_rpc.h"
#include "proto/config.pb-c.h"
#include "proto/rate.pb-c.h"
#include "services/config/config_server.h"
#include "services/config/config_settings.h"
#include "services/rate/rate_server.h"

#define REFRESH_MS 1000

static zactor_t *s_config;
static zactor_t *s_rate;      /* with events */
static zactor_t *s_rate_deaf; /* without events: only the periodic check */
static ppm_rpc_client_t *s_config_client;
static ppm_rpc_client_t *s_rate_client;
static ppm_rpc_client_t *s_deaf_client;
static char s_tenant[64];
static atomic_bool s_ready;

static ppm_status_t *
s_call (ppm_rpc_client_t *client, const char *method, const char *tenant, const void *msg,
        const ProtobufCMessageDescriptor *reply_type, void *reply_p)
{
    ppm_rpc_req_t req = {.method = method, .tenant = tenant, .timeout_ms = 5000};
    return ppm_rpc_client_call_sync (client, &req, (const ProtobufCMessage *)msg, reply_type,
                                     (ProtobufCMessage **)reply_p);
}

static void
s_ok (ppm_status_t *status)
{
    if (status)
        fail_msg ("%s: %s", ppm_code_name (ppm_status_code (status)), ppm_status_message (status));
}

static void
s_set (Ppm__V1__Settings *s, const char *field, const char *value)
{
    const char *error = NULL;
    if (config_settings_set_text (s, field, value, &error))
        fail_msg ("%s=%s: %s", field, value, error);
}

static void
s_put_settings (const char *tenant, const char *const *pairs)
{
    Ppm__V1__GetSettingsRequest get = PPM__V1__GET_SETTINGS_REQUEST__INIT;
    Ppm__V1__Settings *s = NULL;
    s_ok (s_call (s_config_client, "config.GetSettings", tenant, &get,
                  &ppm__v1__settings__descriptor, &s));
    for (size_t i = 0; pairs[i]; i += 2)
        s_set (s, pairs[i], pairs[i + 1]);
    Ppm__V1__PutSettingsRequest put = PPM__V1__PUT_SETTINGS_REQUEST__INIT;
    put.settings = s;
    put.expected_version = s->version;
    s_ok (s_call (s_config_client, "config.PutSettings", tenant, &put,
                  &ppm__v1__settings__descriptor, NULL));
    protobuf_c_message_free_unpacked (&s->base, NULL);
}

static void
s_user (const char *tenant, const char *payee, int64_t call, int64_t chat)
{
    Ppm__V1__UserRates rates = PPM__V1__USER_RATES__INIT;
    rates.payee = (char *)payee;
    rates.call_set = call >= 0;
    rates.call_per_minute = call;
    rates.chat_set = chat >= 0;
    rates.chat_per_minute = chat;
    Ppm__V1__PutUserRatesRequest put = PPM__V1__PUT_USER_RATES_REQUEST__INIT;
    put.rates = &rates;
    s_ok (s_call (s_config_client, "config.PutUserRates", tenant, &put,
                  &ppm__v1__put_rates_reply__descriptor, NULL));
}

static void
s_role (const char *tenant, const char *role, int64_t call, int64_t chat, int32_t priority)
{
    Ppm__V1__RoleRates rates = PPM__V1__ROLE_RATES__INIT;
    rates.role = (char *)role;
    rates.call_set = call >= 0;
    rates.call_per_minute = call;
    rates.chat_set = chat >= 0;
    rates.chat_per_minute = chat;
    rates.priority = priority;
    Ppm__V1__PutRoleRatesRequest put = PPM__V1__PUT_ROLE_RATES_REQUEST__INIT;
    put.rates = &rates;
    s_ok (s_call (s_config_client, "config.PutRoleRates", tenant, &put,
                  &ppm__v1__put_rates_reply__descriptor, NULL));
}

static void
s_new_tenant (char out[64])
{
    Ppm__V1__CreateTenantRequest req = PPM__V1__CREATE_TENANT_REQUEST__INIT;
    req.name = "rate test";
    req.plan = "pro";
    Ppm__V1__CreateTenantReply *reply = NULL;
    s_ok (s_call (s_config_client, "config.CreateTenant", NULL, &req,
                  &ppm__v1__create_tenant_reply__descriptor, &reply));
    snprintf (out, 64, "%s", reply->tenant->tenant_id);
    protobuf_c_message_free_unpacked (&reply->base, NULL);
}

static int
s_setup (void **state)
{
    (void)state;
    ppm_log_init ("rate-test");
    ppm_log_set_level (PPM_LOG_WARN);
    const char *pg = getenv ("PPM_TEST_PG_URL");
    if (!pg)
        return -1;
    uint8_t key[32];
    randombytes_buf (key, sizeof key);
    config_server_args_t cargs = {.rpc_bind = "tcp://127.0.0.1:*",
                                  .pub_bind = "tcp://127.0.0.1:*",
                                  .pg_url = pg,
                                  .master_key = key};
    s_config = config_server_start (&cargs);
    if (!s_config)
        return -1;
    char *rpc = NULL, *pub = NULL;
    zstr_send (s_config, "ENDPOINTS");
    zstr_recvx (s_config, &rpc, &pub, NULL);
    s_config_client = ppm_rpc_client_new (rpc);

    /* A tenant exists before the rate services start: loaded at start. */
    s_new_tenant (s_tenant);
    const char *settings[] = {"enabled",
                              "true",
                              "terms_url",
                              "https://example.com/t",
                              "rate_scope",
                              "roles",
                              "default_call_per_minute",
                              "250",
                              "default_chat_per_minute",
                              "100",
                              NULL};
    s_put_settings (s_tenant, settings);
    s_user (s_tenant, "alice", 300, -1);
    s_role (s_tenant, "coach", 200, 80, 1);
    s_role (s_tenant, "senior", 400, -1, 5);

    rate_server_args_t rargs = {.rpc_bind = "tcp://127.0.0.1:*",
                                .config_endpoint = rpc,
                                .config_events = pub,
                                .refresh_ms = REFRESH_MS,
                                .ready = &s_ready};
    s_rate = rate_server_start (&rargs);
    rate_server_args_t deaf = {.rpc_bind = "tcp://127.0.0.1:*",
                               .config_endpoint = rpc,
                               .config_events = NULL,
                               .refresh_ms = REFRESH_MS};
    s_rate_deaf = rate_server_start (&deaf);
    zstr_free (&rpc);
    zstr_free (&pub);
    if (!s_rate || !s_rate_deaf)
        return -1;
    char *endpoint = NULL;
    zstr_send (s_rate, "ENDPOINT");
    endpoint = zstr_recv (s_rate);
    s_rate_client = ppm_rpc_client_new (endpoint);
    zstr_free (&endpoint);
    zstr_send (s_rate_deaf, "ENDPOINT");
    endpoint = zstr_recv (s_rate_deaf);
    s_deaf_client = ppm_rpc_client_new (endpoint);
    zstr_free (&endpoint);
    zclock_sleep (300); /* slow joiner: let the SUB connect */
    return 0;
}

static int
s_teardown (void **state)
{
    (void)state;
    ppm_rpc_client_destroy (&s_rate_client);
    ppm_rpc_client_destroy (&s_deaf_client);
    ppm_rpc_client_destroy (&s_config_client);
    zactor_destroy (&s_rate);
    zactor_destroy (&s_rate_deaf);
    zactor_destroy (&s_config);
    return 0;
}

static ppm_status_t *
s_quote (ppm_rpc_client_t *client, const char *tenant, const char *payee, const char *roles,
         const char *kind, Ppm__V1__Quote **quote_p)
{
    Ppm__V1__QuoteRequest req = PPM__V1__QUOTE_REQUEST__INIT;
    char buf[128];
    char *list[4];
    size_t n = 0;
    snprintf (buf, sizeof buf, "%s", roles);
    for (char *save = NULL, *r = strtok_r (buf, ",", &save); r && n < 4;
         r = strtok_r (NULL, ",", &save))
        list[n++] = r;
    req.payee = (char *)payee;
    req.payee_roles = list;
    req.n_payee_roles = n;
    req.payer = "payer_1";
    req.kind = (char *)kind;
    return s_call (client, "rate.Quote", tenant, &req, &ppm__v1__quote__descriptor, quote_p);
}

static int64_t
s_rate_of (ppm_rpc_client_t *client, const char *payee, const char *roles, const char *kind)
{
    Ppm__V1__Quote *q = NULL;
    s_ok (s_quote (client, s_tenant, payee, roles, kind, &q));
    int64_t rate = q->paid ? q->rate_per_minute : 0;
    protobuf_c_message_free_unpacked (&q->base, NULL);
    return rate;
}

static void
test_quote_end_to_end (void **state)
{
    (void)state;
    /* Ready once every tenant was loaded by the first revision walk. */
    for (int i = 0; i < 250 && !atomic_load (&s_ready); i++)
        zclock_sleep (20);
    assert_true (atomic_load (&s_ready));
    Ppm__V1__Quote *q = NULL;
    s_ok (s_quote (s_rate_client, s_tenant, "bob", "", "call", &q));
    assert_true (q->paid);
    assert_int_equal (q->rate_per_minute, 250);
    assert_string_equal (q->currency, "USD");
    assert_string_equal (q->tenant_id, s_tenant);
    assert_string_equal (q->payer, "payer_1");
    assert_string_equal (q->terms_url, "https://example.com/t");
    assert_string_equal (q->rounding, "minute");
    assert_string_equal (q->billing_mode, "prepaid");
    assert_int_equal (q->n_presets, 3);
    assert_int_equal (q->presets[1]->minutes, 30);
    assert_int_equal (q->presets[1]->amount, 7500);
    assert_int_equal (q->min_minutes, 1);
    assert_int_equal (q->max_minutes, 120);
    assert_int_equal (strncmp (q->quote_id, "q_", 2), 0);
    assert_true (q->settings_version >= 2);
    assert_true (q->issued_at_ms > 0);
    protobuf_c_message_free_unpacked (&q->base, NULL);

    /* Precedence over the wire, both kinds. */
    assert_int_equal (s_rate_of (s_rate_client, "alice", "senior", "call"), 300);
    assert_int_equal (s_rate_of (s_rate_client, "alice", "senior", "chat"), 100);
    assert_int_equal (s_rate_of (s_rate_client, "alice", "coach,senior", "chat"), 80);
    assert_int_equal (s_rate_of (s_rate_client, "bob", "coach,senior", "call"), 400);
    assert_int_equal (s_rate_of (s_rate_client, "bob", "coach", "call"), 200);
    assert_int_equal (s_rate_of (s_rate_client, "bob", "", "chat"), 100);

    /* Errors. */
    Ppm__V1__Quote *none = NULL;
    ppm_status_t *status = s_quote (s_rate_client, s_tenant, "bob", "", "video", &none);
    assert_int_equal (ppm_status_code (status), PPM_INVALID_ARGUMENT);
    assert_non_null (ppm_status_field_find (status, "kind"));
    ppm_status_destroy (&status);
    status = s_quote (s_rate_client, "t_unknown0000", "bob", "", "chat", &none);
    assert_int_equal (ppm_status_code (status), PPM_NOT_FOUND);
    ppm_status_destroy (&status);
    status = s_quote (s_rate_client, s_tenant, "", "", "chat", &none);
    assert_int_equal (ppm_status_code (status), PPM_INVALID_ARGUMENT);
    ppm_status_destroy (&status);
}

static void
test_cross_tenant (void **state)
{
    (void)state;
    char other[64];
    s_new_tenant (other);
    /* A tenant created after start is found (event or first fetch). */
    Ppm__V1__Quote *q = NULL;
    s_ok (s_quote (s_rate_client, other, "alice", "", "call", &q));
    assert_false (q->paid); /* its feature is off: alice's rate is not its */
    assert_string_equal (q->tenant_id, other);
    protobuf_c_message_free_unpacked (&q->base, NULL);
    /* Also on the replica without events: fetched for the waiting quote. */
    char third[64];
    s_new_tenant (third);
    s_ok (s_quote (s_deaf_client, third, "alice", "", "call", &q));
    assert_string_equal (q->tenant_id, third);
    protobuf_c_message_free_unpacked (&q->base, NULL);
    Ppm__V1__QuoteRequest req = PPM__V1__QUOTE_REQUEST__INIT;
    req.tenant_id = other;
    req.payee = "alice";
    req.kind = "call";
    ppm_status_t *status =
        s_call (s_rate_client, "rate.Quote", s_tenant, &req, &ppm__v1__quote__descriptor, NULL);
    assert_int_equal (ppm_status_code (status), PPM_PERMISSION_DENIED);
    ppm_status_destroy (&status);
}

/* Polls until the quote for bob/call is want; returns the ms since start
   (real monotonic us), or -1 past limit_ms. */
static int64_t
s_wait_rate (ppm_rpc_client_t *client, int64_t want, int64_t limit_ms, int64_t start)
{
    while (true) {
        int64_t elapsed = (ppm_clock_real_mono_us () - start) / 1000;
        if (s_rate_of (client, "bob", "", "call") == want)
            return elapsed;
        if (elapsed > limit_ms)
            return -1;
        zclock_sleep (10);
    }
}

static void
test_change_visible_within_bound (void **state)
{
    (void)state;
    assert_int_equal (s_rate_of (s_deaf_client, "bob", "", "call"), 250);
    const char *change[] = {"default_call_per_minute", "260", NULL};
    int64_t start = ppm_clock_real_mono_us ();
    s_put_settings (s_tenant, change); /* committed when it returns */
    /* Through the event: well within the bound. */
    int64_t evented = s_wait_rate (s_rate_client, 260, 2 * REFRESH_MS, start);
    /* Without the event (the deaf replica never gets it): the periodic
       revision check, within 2 × refresh. */
    int64_t deaf = s_wait_rate (s_deaf_client, 260, 2 * REFRESH_MS + 500, start);
    fprintf (stderr, "change visible after %lld ms (event), %lld ms (event lost)\n",
             (long long)evented, (long long)deaf);
    assert_true (evented >= 0 && evented <= 2 * REFRESH_MS);
    assert_true (deaf >= 0 && deaf <= 2 * REFRESH_MS);

    /* Individual and role changes too. */
    start = ppm_clock_real_mono_us ();
    s_user (s_tenant, "bob", 310, -1);
    int64_t took = s_wait_rate (s_deaf_client, 310, 2 * REFRESH_MS + 500, start);
    assert_true (took >= 0 && took <= 2 * REFRESH_MS);
    took = s_wait_rate (s_rate_client, 310, 2 * REFRESH_MS, start);
    assert_true (took >= 0 && took <= 2 * REFRESH_MS);
}

static void
test_live_refused_under_time_scale (void **state)
{
    (void)state;
    char live[64];
    s_new_tenant (live);
    const char *settings[] = {
        "enabled", "true",        "terms_url", "https://example.com/t", "default_chat_per_minute",
        "100",     "stripe_mode", "live",      "stripe_secret_key",     "sk_live_abcdefghijklmnop",
        NULL};
    s_put_settings (live, settings);
    Ppm__V1__Quote *q = NULL;
    ppm_status_t *status = NULL;
    /* Wait until the live settings are cached. */
    for (int i = 0; i < 100; i++) {
        s_ok (s_quote (s_rate_client, live, "x", "", "chat", &q));
        bool ready = q->paid && streq (q->stripe_mode, "live");
        protobuf_c_message_free_unpacked (&q->base, NULL);
        if (ready)
            break;
        zclock_sleep (20);
    }
    ppm_clock_set_scale (60);
    status = s_quote (s_rate_client, live, "x", "", "chat", &q);
    ppm_clock_set_scale (1);
    assert_int_equal (ppm_status_code (status), PPM_FAILED_PRECONDITION);
    ppm_status_destroy (&status);
}

/* The rate a quote gives (0 when free), polled until it is want or 2 s
   passed; returns the last rate seen. */
static int64_t
s_expect_rate (const char *tenant, const char *payee, const char *roles, const char *kind,
               int64_t want)
{
    int64_t rate = -1;
    for (int i = 0; i < 100; i++) {
        Ppm__V1__Quote *q = NULL;
        s_ok (s_quote (s_rate_client, tenant, payee, roles, kind, &q));
        rate = q->paid ? q->rate_per_minute : 0;
        protobuf_c_message_free_unpacked (&q->base, NULL);
        if (rate == want)
            break;
        zclock_sleep (20);
    }
    return rate;
}

static void
test_precedence_each_scope_over_the_wire (void **state)
{
    (void)state;
    char t[64];
    s_new_tenant (t);
    const char *base[] = {"enabled",
                          "true",
                          "terms_url",
                          "https://example.com/t",
                          "default_call_per_minute",
                          "250",
                          "default_chat_per_minute",
                          "100",
                          "rate_scope",
                          "default",
                          NULL};
    s_put_settings (t, base);
    s_user (t, "indiv", 300, -1); /* call only */
    s_user (t, "zero", 0, 0);     /* explicitly free */
    s_role (t, "coach", 200, 80, 1);
    /* default: individual > default; roles ignored. */
    assert_int_equal (s_expect_rate (t, "indiv", "coach", "call", 300), 300);
    assert_int_equal (s_expect_rate (t, "indiv", "coach", "chat", 100), 100);
    assert_int_equal (s_expect_rate (t, "other", "coach", "call", 250), 250);
    assert_int_equal (s_expect_rate (t, "zero", "", "call", 0), 0);
    /* roles: individual > role > default. */
    const char *roles[] = {"rate_scope", "roles", NULL};
    s_put_settings (t, roles);
    assert_int_equal (s_expect_rate (t, "other", "coach", "call", 200), 200);
    assert_int_equal (s_expect_rate (t, "other", "coach", "chat", 80), 80);
    assert_int_equal (s_expect_rate (t, "indiv", "coach", "call", 300), 300);
    assert_int_equal (s_expect_rate (t, "indiv", "coach", "chat", 80), 80);
    assert_int_equal (s_expect_rate (t, "other", "", "chat", 100), 100);
    /* individual: individual or free. */
    const char *individual[] = {"rate_scope", "individual", NULL};
    s_put_settings (t, individual);
    assert_int_equal (s_expect_rate (t, "indiv", "coach", "call", 300), 300);
    assert_int_equal (s_expect_rate (t, "indiv", "coach", "chat", 0), 0);
    assert_int_equal (s_expect_rate (t, "other", "coach", "call", 0), 0);
    assert_int_equal (s_expect_rate (t, "other", "", "chat", 0), 0);
    /* A kind not enabled is free whatever the rates. */
    const char *chat_only[] = {"enable_for", "chat", NULL};
    s_put_settings (t, chat_only);
    assert_int_equal (s_expect_rate (t, "indiv", "", "call", 0), 0);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_quote_end_to_end),
        cmocka_unit_test (test_cross_tenant),
        cmocka_unit_test (test_change_visible_within_bound),
        cmocka_unit_test (test_live_refused_under_time_scale),
        cmocka_unit_test (test_precedence_each_scope_over_the_wire),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
