/*  HTTP tests of the gateway against the real services: the gateway actor
    (libmicrohttpd, route table, credentials, RPC clients, event streams)
    runs in-process in front of the real config, rate, payment and metering
    binaries (tests/lib/ppm_test_stack: this test's own PostgreSQL database
    and Redis database, real ZeroMQ), and the Stripe emulator is the only
    stand-in, for Stripe. Requests go through libcurl.

    Nothing is made up: tenants come from config.CreateTenant, settings and
    rates from ppmctl, user tokens are signed with each tenant's secret from
    config.GetUserTokenSecret, sessions are bought through the API with the
    emulator's test cards, and every process runs at PPM_TIME_SCALE 30 (a
    paid minute lasts 2 s) on one pinned epoch.

    Covers every endpoint's success, each credential failure (none, bad,
    expired, other tenant, other payer, forged), payee roles, bad JSON,
    oversize bodies, unknown fields, server-sent events (state first,
    relayed session events, ticks, Last-Event-ID resume), Stripe's webhooks
    as the emulator delivers them, and a service that stops answering
    (SIGSTOP: 503 with Retry-After within the RPC deadline; SIGCONT: the
    gateway recovers). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <czmq.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include "ppm_clock.h"
#include "ppm_jwt.h"
#include "ppm_log.h"
#include "ppm_stripe_sig.h"
#include "proto/metering.pb-c.h"
#include "services/gateway/gateway_server.h"
#include "tests/lib/ppm_test.h"
#include "tests/lib/ppm_test_stack.h"

#define TIME_SCALE     30 /* a paid minute lasts 2 s */
#define RATE           250
#define STRIPE_KEY     "sk_test_gwhttp_00004242" /* long enough for a masked tail */
#define WEBHOOK_SECRET "whsec_gwhttp0123456789"
#define ORIGIN         "https://widget.example"

/* ---- HTTP client ------------------------------------------------------------ */

typedef struct {
    long status;
    char body[262144]; /* /metrics holds every RPC histogram of the process */
    size_t len;
    char headers[4096];
    size_t headers_len;
    double seconds;
} s_resp_t;

typedef struct {
    char *buf;
    size_t *len;
    size_t cap;
} s_sink_t;

static size_t
s_collect (char *data, size_t size, size_t nmemb, void *arg)
{
    s_sink_t *sink = arg;
    size_t n = size * nmemb;
    size_t room = sink->cap - 1 - *sink->len;
    size_t take = n < room ? n : room;
    memcpy (sink->buf + *sink->len, data, take);
    *sink->len += take;
    sink->buf[*sink->len] = '\0';
    return n;
}

static void
s_http_port (int port, const char *method, const char *path, const char *auth, const char *body,
             size_t body_len, const char *extra_header, long timeout_ms, s_resp_t *r)
{
    memset (r, 0, sizeof *r);
    char url[512];
    snprintf (url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *curl = curl_easy_init ();
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM into ZeroMQ calls */
    curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
    struct curl_slist *headers = NULL;
    char line[4200];
    if (auth) {
        snprintf (line, sizeof line, "Authorization: Bearer %s", auth);
        headers = curl_slist_append (headers, line);
    }
    if (extra_header)
        headers = curl_slist_append (headers, extra_header);
    headers = curl_slist_append (headers, "Expect:");
    if (body) {
        curl_easy_setopt (curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt (curl, CURLOPT_POSTFIELDSIZE, (long)body_len);
        headers = curl_slist_append (headers, "Content-Type: application/json");
    }
    curl_easy_setopt (curl, CURLOPT_HTTPHEADER, headers);
    s_sink_t body_sink = {r->body, &r->len, sizeof r->body};
    s_sink_t head_sink = {r->headers, &r->headers_len, sizeof r->headers};
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, &body_sink);
    curl_easy_setopt (curl, CURLOPT_HEADERFUNCTION, s_collect);
    curl_easy_setopt (curl, CURLOPT_HEADERDATA, &head_sink);
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, timeout_ms ? timeout_ms : 10000L);
    int64_t start = ppm_clock_real_mono_us ();
    curl_easy_perform (curl);
    r->seconds = (double)(ppm_clock_real_mono_us () - start) / 1e6;
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all (headers);
    curl_easy_cleanup (curl);
}

/* ---- the stack --------------------------------------------------------------- */

static struct {
    ppm_test_stack_t *stack;
    zactor_t *gateway;
    int port;
    gateway_config_t cfg;
    char tenant_a[64]; /* plan pro, Pay-per-Minute on, USD 2.50 a minute */
    char tenant_b[64]; /* plan basic: the feature is off, every session is free */
    char admin_a[256];
    char admin_b[256];
    char *secret_a; /* the tenants' user-token secrets, from config */
    char *secret_b;
    char *token_payer;
    char *token_payee;
    char *token_stranger;
    char *token_expired;
    char *token_other_tenant;
    char *token_forged;
    char session[64]; /* a paid, active session of tenant A: u_payer → u_payee */
    char payment[64]; /* the payment that funded it */
} S;

static void
s_http (const char *method, const char *path, const char *auth, const char *body, s_resp_t *r)
{
    s_http_port (S.port, method, path, auth, body, body ? strlen (body) : 0, NULL, 0, r);
}

/* The "code" of an error body, or "" */
static const char *
s_error_code (s_resp_t *r, char *buf, size_t size)
{
    json_t *json = json_loads (r->body, 0, NULL);
    const char *code =
        json_string_value (json_object_get (json_object_get (json, "error"), "code"));
    snprintf (buf, size, "%s", code ? code : "");
    json_decref (json);
    return buf;
}

/* An integer member of a JSON body, or -1 */
static int64_t
s_json_int (const char *body, const char *name)
{
    json_t *json = json_loads (body, 0, NULL);
    json_t *value = json_object_get (json, name);
    int64_t n = json_is_integer (value) ? (int64_t)json_integer_value (value) : -1;
    json_decref (json);
    return n;
}

/* A string member of a JSON body into buf ("" when there is none) */
static const char *
s_json_str (const char *body, const char *name, char *buf, size_t size)
{
    json_t *json = json_loads (body, 0, NULL);
    const char *value = json_string_value (json_object_get (json, name));
    snprintf (buf, size, "%s", value ? value : "");
    json_decref (json);
    return buf;
}

static char *
s_token (const char *tid, const char *sub, const char *secret, int64_t exp_offset_s)
{
    ppm_jwt_claims_t claims;
    memset (&claims, 0, sizeof claims);
    snprintf (claims.tid, sizeof claims.tid, "%s", tid);
    snprintf (claims.sub, sizeof claims.sub, "%s", sub);
    claims.exp = ppm_clock_real_ms () / 1000 + exp_offset_s;
    return ppm_jwt_sign (&claims, (const uint8_t *)secret, strlen (secret));
}

/* Polls GET /v1/sessions/{id} until the session is in state; r holds the
   last answer. */
static bool
s_wait_state (const char *id, const char *token, const char *state, int timeout_ms, s_resp_t *r)
{
    char path[256];
    snprintf (path, sizeof path, "/v1/sessions/%s", id);
    char want[64];
    snprintf (want, sizeof want, "\"state\":\"%s\"", state);
    int64_t deadline = ppm_test_now_ms () + timeout_ms;
    do {
        s_http ("GET", path, token, NULL, r);
        if (r->status == 200 && strstr (r->body, want))
            return true;
        ppm_test_sleep_ms (50);
    } while (ppm_test_now_ms () < deadline);
    print_message ("session %s never became %s: %ld %s\n", id, state, r->status, r->body);
    return false;
}

/* A new paid session of tenant A from u_payer to payee, bought for
   minutes with the test Visa (checkout, confirm) and funded by payment
   (its outbox calls metering.Fund): active when this returns true. */
static bool
s_paid_session (const char *payee, int minutes, char *id, size_t id_size, char *payment_id,
                size_t payment_size)
{
    s_resp_t *r = malloc (sizeof *r);
    assert_non_null (r);
    char body[256];
    char path[256];
    bool ok = false;
    snprintf (body, sizeof body, "{\"payee\":\"%s\",\"kind\":\"chat\"}", payee);
    s_http ("POST", "/v1/sessions", S.token_payer, body, r);
    if (r->status != 201) {
        print_message ("POST /v1/sessions: %ld %s\n", r->status, r->body);
        goto done;
    }
    s_json_str (r->body, "session_id", id, id_size);
    snprintf (path, sizeof path, "/v1/sessions/%s/checkout", id);
    snprintf (body, sizeof body, "{\"minutes\":%d,\"accept_terms\":true}", minutes);
    s_http ("POST", path, S.token_payer, body, r);
    if (r->status != 201) {
        print_message ("checkout: %ld %s\n", r->status, r->body);
        goto done;
    }
    s_json_str (r->body, "payment_id", payment_id, payment_size);
    snprintf (path, sizeof path, "/v1/sessions/%s/confirm", id);
    snprintf (body, sizeof body, "{\"payment_method\":\"pm_card_visa\",\"payment_id\":\"%s\"}",
              payment_id);
    s_http ("POST", path, S.token_payer, body, r);
    if (r->status != 200) {
        print_message ("confirm: %ld %s\n", r->status, r->body);
        goto done;
    }
    ok = s_wait_state (id, S.token_payer, "active", 10000, r);
done:
    free (r);
    return ok;
}

static int s_teardown (void **state);

static int
s_setup_inner (void)
{
    ppm_log_init ("test");
    ppm_log_set_level (PPM_LOG_ERROR);
    char *extra[] = {"PPM_PAYMENT_OUTBOX_EVERY=100ms", NULL};
    S.stack = ppm_test_stack_start ("gateway_http", 42, TIME_SCALE, extra);
    if (!S.stack)
        return -1;
    if (ppm_test_stack_create_tenant (S.stack, "Gateway HTTP A", "pro", S.tenant_a,
                                      sizeof S.tenant_a, S.admin_a, sizeof S.admin_a) ||
        ppm_test_stack_create_tenant (S.stack, "Gateway HTTP B", "basic", S.tenant_b,
                                      sizeof S.tenant_b, S.admin_b, sizeof S.admin_b))
        return -1;
    /* tenant A as its operator would set it up: paid chat and calls, role
       rates, refunds of unused minutes, one warning a minute before the
       end, no pause for missing heartbeats (the tests do not send them at
       the pace of a 2 s minute), and the widget's origin */
    const char *settings[] = {"settings",
                              "set",
                              "--tenant",
                              S.tenant_a,
                              "enabled=true",
                              "enable_for=both",
                              "rate_scope=roles",
                              "default_call_per_minute=250",
                              "default_chat_per_minute=250",
                              "stripe_mode=test",
                              "stripe_secret_key=" STRIPE_KEY,
                              "stripe_publishable_key=pk_test_gwhttp_00004242",
                              "stripe_webhook_secret=" WEBHOOK_SECRET,
                              "terms_url=https://example.com/terms",
                              "preset_minutes=10,30,45",
                              "currency=USD",
                              "refund_unused=true",
                              "warning_marks_s=60",
                              "grace_s=0",
                              "session_ttl_s=86400",
                              "max_concurrent_sessions=10",
                              "cors_allowed_origins=" ORIGIN,
                              NULL};
    const char *user_rates[] = {"rates",   "set",    "--tenant", S.tenant_a, "--user",
                                "u_payee", "--call", "250",      NULL};
    const char *role_rates[] = {"rates", "set",    "--tenant", S.tenant_a, "--role",
                                "coach", "--call", "500",      NULL};
    if (ppm_test_stack_ppmctl (S.stack, settings) != 0 ||
        ppm_test_stack_ppmctl (S.stack, user_rates) != 0 ||
        ppm_test_stack_ppmctl (S.stack, role_rates) != 0) {
        print_message ("ppmctl failed: see its log\n");
        return -1;
    }
    S.secret_a = ppm_test_stack_user_token_secret (S.stack, S.tenant_a);
    S.secret_b = ppm_test_stack_user_token_secret (S.stack, S.tenant_b);
    if (!S.secret_a || !S.secret_b)
        return -1;
    S.token_payer = s_token (S.tenant_a, "u_payer", S.secret_a, 600);
    S.token_payee = s_token (S.tenant_a, "u_payee", S.secret_a, 600);
    S.token_stranger = s_token (S.tenant_a, "u_stranger", S.secret_a, 600);
    S.token_expired = s_token (S.tenant_a, "u_payer", S.secret_a, -10);
    S.token_other_tenant = s_token (S.tenant_b, "u_payer", S.secret_b, 600);
    S.token_forged = s_token (S.tenant_a, "u_payer", S.secret_b, 600);

    S.cfg = (gateway_config_t){
        .http_address = "127.0.0.1",
        .http_port = 0,
        .http_threads = 2,
        .body_max = 4096,
        .web_root = NULL,
        .config_endpoint = ppm_test_stack_endpoint (S.stack, PPM_TEST_CONFIG),
        .rate_endpoint = ppm_test_stack_endpoint (S.stack, PPM_TEST_RATE),
        .payment_endpoint = ppm_test_stack_endpoint (S.stack, PPM_TEST_PAYMENT),
        .metering_endpoint = ppm_test_stack_endpoint (S.stack, PPM_TEST_METERING),
        .events_endpoints = ppm_test_stack_events (S.stack),
        .rpc_timeout_ms = 5000,
        .auth_cache_ms = 30000,
        .quote_cache_ms = 0};
    S.gateway = zactor_new (gateway_server_actor, &S.cfg);
    zstr_send (S.gateway, "PORT");
    char *port = zstr_recv (S.gateway);
    S.port = port ? (int)strtol (port, NULL, 10) : 0;
    free (port);
    if (S.port <= 0)
        return -1;

    /* Stripe (the emulator) sends tenant A's events to the gateway, signed
       with the tenant's webhook secret */
    char json[512];
    snprintf (json, sizeof json,
              "{\"account_key\":\"%s\",\"url\":\"http://127.0.0.1:%d/v1/stripe/webhook/%s\","
              "\"secret\":\"%s\"}",
              STRIPE_KEY, S.port, S.tenant_a, WEBHOOK_SECRET);
    if (ppm_test_emulator_control (ppm_test_stack_emulator (S.stack), "POST", "/_emulator/webhooks",
                                   json, NULL) != 200)
        return -1;

    /* a session the admin lists show: 30 paid minutes (60 s here) */
    if (!s_paid_session ("u_payee", 30, S.session, sizeof S.session, S.payment, sizeof S.payment))
        return -1;
    return 0;
}

/* cmocka skips the group teardown when the setup fails: stop what was
   started here then. */
static int
s_setup (void **state)
{
    int rc = s_setup_inner ();
    if (rc != 0)
        s_teardown (state);
    return rc;
}

static int
s_teardown (void **state)
{
    (void)state;
    zactor_destroy (&S.gateway);
    ppm_test_stack_stop (&S.stack);
    free (S.secret_a);
    free (S.secret_b);
    free (S.token_payer);
    free (S.token_payee);
    free (S.token_stranger);
    free (S.token_expired);
    free (S.token_other_tenant);
    free (S.token_forged);
    memset (&S, 0, sizeof S);
    return 0;
}

/* ---- tests ---------------------------------------------------------------- */

/* The settings as GET has them with one member replaced: a whole-replace
   PUT body. The caller frees it. */
static char *
s_settings_with (const char *settings_body, const char *name, json_t *value)
{
    json_t *json = json_loads (settings_body, 0, NULL);
    assert_non_null (json);
    json_object_set_new (json, name, value);
    char *text = json_dumps (json, JSON_COMPACT);
    json_decref (json);
    return text;
}

static void
test_admin_settings (void **state)
{
    (void)state;
    s_resp_t r;
    char code[64];
    s_http ("GET", "/v1/admin/settings", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    int64_t version = s_json_int (r.body, "version");
    assert_true (version > 0);
    assert_non_null (strstr (r.body, "\"sk_test_…4242\""));
    assert_null (strstr (r.body, STRIPE_KEY));
    char etag[64];
    snprintf (etag, sizeof etag, "ETag: \"%lld\"", (long long)version);
    assert_non_null (strstr (r.headers, etag));

    /* credentials: none, bad, a user token instead of an admin key */
    s_resp_t denied;
    s_http ("GET", "/v1/admin/settings", NULL, NULL, &denied);
    assert_int_equal (denied.status, 401);
    assert_string_equal (s_error_code (&denied, code, sizeof code), "UNAUTHENTICATED");
    s_http ("GET", "/v1/admin/settings", "ppmak_bad", NULL, &denied);
    assert_int_equal (denied.status, 401);
    s_http ("GET", "/v1/admin/settings", S.token_payer, NULL, &denied);
    assert_int_equal (denied.status, 401);

    /* PUT with If-Match: stale version → 409; right one → 200 */
    char *body = s_settings_with (r.body, "session_ttl_s", json_integer (86000));
    char if_match[64];
    snprintf (if_match, sizeof if_match, "If-Match: \"%lld\"", (long long)version - 1);
    s_http_port (S.port, "PUT", "/v1/admin/settings", S.admin_a, body, strlen (body), if_match, 0,
                 &r);
    assert_int_equal (r.status, 409);
    assert_string_equal (s_error_code (&r, code, sizeof code), "ABORTED");
    snprintf (if_match, sizeof if_match, "If-Match: \"%lld\"", (long long)version);
    s_http_port (S.port, "PUT", "/v1/admin/settings", S.admin_a, body, strlen (body), if_match, 0,
                 &r);
    free (body);
    if (r.status != 200)
        print_message ("PUT settings: %s\n", r.body);
    assert_int_equal (r.status, 200);
    assert_int_equal (s_json_int (r.body, "version"), version + 1);
    assert_int_equal (s_json_int (r.body, "session_ttl_s"), 86000);
    /* a field error from config is named */
    body = s_settings_with (r.body, "currency", json_string ("XXX"));
    s_http ("PUT", "/v1/admin/settings", S.admin_a, body, &r);
    free (body);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"currency\""));
    /* plan gating → 403 */
    s_http ("PUT", "/v1/admin/settings", S.admin_b, "{\"enabled\":true}", &r);
    assert_int_equal (r.status, 403);
    assert_non_null (strstr (r.body, "Pro plan"));
    /* unknown field, wrong type, bad JSON */
    s_http ("PUT", "/v1/admin/settings", S.admin_a, "{\"enabled\":true,\"colour\":1}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"colour\""));
    assert_non_null (strstr (r.body, "unknown field"));
    s_http ("PUT", "/v1/admin/settings", S.admin_a, "{\"enabled\":\"yes\"}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"enabled\""));
    s_http ("PUT", "/v1/admin/settings", S.admin_a, "{\"enabled\":", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"body\""));
    /* oversize body */
    char *big = malloc (8192);
    memset (big, ' ', 8191);
    big[0] = '{';
    big[8190] = '}';
    big[8191] = '\0';
    s_http ("PUT", "/v1/admin/settings", S.admin_a, big, &r);
    assert_int_equal (r.status, 413);
    free (big);
    /* nothing of that reached the settings */
    s_http ("GET", "/v1/admin/settings", S.admin_a, NULL, &r);
    assert_int_equal (s_json_int (r.body, "version"), version + 1);
    assert_non_null (strstr (r.body, "\"currency\":\"USD\""));
}

static void
test_admin_rates_and_lists (void **state)
{
    (void)state;
    s_resp_t r;
    s_http ("GET", "/v1/admin/users/u_payee/rates", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"call_per_minute\":250"));
    assert_non_null (strstr (r.body, "\"chat_per_minute\":null"));
    s_http ("GET", "/v1/admin/users/u_none/rates", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"call_per_minute\":null"));
    s_http ("PUT", "/v1/admin/users/u_payee/rates", S.admin_a,
            "{\"call_per_minute\":300,\"chat_per_minute\":null}", &r);
    assert_int_equal (r.status, 200);
    assert_true (s_json_int (r.body, "revision") > 0);
    s_http ("GET", "/v1/admin/users/u_payee/rates", S.admin_a, NULL, &r);
    assert_non_null (strstr (r.body, "\"call_per_minute\":300"));
    s_http ("PUT", "/v1/admin/users/u_payee/rates", S.admin_a,
            "{\"call_per_minute\":-1,\"chat_per_minute\":null,\"x\":2}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"call_per_minute\""));
    assert_non_null (strstr (r.body, "\"field\":\"x\""));
    s_http ("PUT", "/v1/admin/users/u_payee/rates", S.admin_a, "{\"call_per_minute\":1}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"chat_per_minute\""));

    s_http ("GET", "/v1/admin/roles/coach/rates", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"call_per_minute\":500"));
    s_http ("PUT", "/v1/admin/roles/coach/rates", S.admin_a,
            "{\"call_per_minute\":500,\"chat_per_minute\":200,\"priority\":5}", &r);
    assert_int_equal (r.status, 200);
    s_http ("GET", "/v1/admin/roles", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"role\":\"coach\""));
    assert_non_null (strstr (r.body, "\"chat_per_minute\":200"));

    s_http ("GET", "/v1/admin/users?limit=10", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"users\":[{"));
    assert_non_null (strstr (r.body, "u_payee"));
    s_http ("GET", "/v1/admin/users?limit=abc", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"limit\""));
    s_http ("GET", "/v1/admin/users?bogus=1", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 400);

    /* the ledger and the sessions hold the session bought in the set-up */
    s_http ("GET", "/v1/admin/sessions?state=active", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, S.session));
    s_http ("GET", "/v1/admin/sessions?state=sleeping", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 400);
    s_http ("GET", "/v1/admin/payments", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, S.payment));
    assert_non_null (strstr (r.body, "\"state\":\"succeeded\""));
    s_http ("GET", "/v1/admin/payments.csv", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.headers, "text/csv"));
    assert_true (strncmp (r.body, "payment_id,", 11) == 0);
    assert_non_null (strstr (r.body, S.payment));
    s_http ("GET", "/v1/admin/earnings", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"payee\":\"u_payee\""));
    assert_non_null (strstr (r.body, "\"net\":7500")); /* 30 minutes at 2.50 */
    s_http ("GET", "/v1/admin/audit", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "terms_url"));
    assert_null (strstr (r.body, STRIPE_KEY));
    s_http ("GET", "/v1/admin/health", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"rate\":\"up\""));
    assert_null (strstr (r.body, "down"));
    /* routing: unknown path 404, wrong method 405 */
    s_http ("GET", "/v1/admin/nothing", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 404);
    s_http ("DELETE", "/v1/admin/settings", S.admin_a, NULL, &r);
    assert_int_equal (r.status, 405);
}

static void
test_user_auth (void **state)
{
    (void)state;
    s_resp_t r;
    const char *path = "/v1/quote?payee=u_payee&kind=chat";
    s_http ("GET", path, S.token_payer, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"rate_per_minute\":250"));
    assert_non_null (strstr (r.body, "{\"minutes\":30,\"amount\":7500}"));
    assert_non_null (strstr (r.body, "\"terms_url\":\"https://example.com/terms\""));
    s_http ("GET", path, NULL, NULL, &r);
    assert_int_equal (r.status, 401);
    s_http ("GET", path, "not.a.token", NULL, &r);
    assert_int_equal (r.status, 401);
    s_http ("GET", path, S.token_expired, NULL, &r);
    assert_int_equal (r.status, 401);
    assert_non_null (strstr (r.body, "expired"));
    s_http ("GET", path, S.token_forged, NULL, &r);
    assert_int_equal (r.status, 401);
    /* a token of a tenant config does not know */
    char *unknown = s_token ("t_zz", "u_payer", S.secret_a, 600);
    s_http ("GET", path, unknown, NULL, &r);
    assert_int_equal (r.status, 401);
    free (unknown);
    /* alg none: {"alg":"none"}.{"tid":"t_a","sub":"u_payer","exp":4102444800}. */
    s_http ("GET", path,
            "eyJhbGciOiJub25lIn0."
            "eyJ0aWQiOiJ0X2EiLCJzdWIiOiJ1X3BheWVyIiwiZXhwIjo0MTAyNDQ0ODAwfQ.",
            NULL, &r);
    assert_int_equal (r.status, 401);
    assert_non_null (strstr (r.body, "HS256"));
    /* an admin key is not a user token */
    s_http ("GET", path, S.admin_a, NULL, &r);
    assert_int_equal (r.status, 401);
    /* query validation */
    s_http ("GET", "/v1/quote?payee=u_payee&kind=video", S.token_payer, NULL, &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"kind\""));
    s_http ("GET", "/v1/quote?kind=chat", S.token_payer, NULL, &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"payee\""));
    s_http ("GET", "/v1/quote?payee=u_payee&kind=chat&extra=1", S.token_payer, NULL, &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"extra\""));

    /* CORS: the tenant's origin is echoed, another is not */
    s_http_port (S.port, "GET", path, S.token_payer, NULL, 0, "Origin: " ORIGIN, 0, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.headers, "Access-Control-Allow-Origin: " ORIGIN));
    s_http_port (S.port, "GET", path, S.token_payer, NULL, 0, "Origin: https://evil.example", 0,
                 &r);
    assert_int_equal (r.status, 200);
    assert_null (strstr (r.headers, "Access-Control-Allow-Origin"));
    s_http_port (S.port, "OPTIONS", "/v1/sessions", NULL, NULL, 0, "Origin: " ORIGIN, 0, &r);
    assert_int_equal (r.status, 204);
    assert_non_null (strstr (r.headers, "Access-Control-Allow-Headers"));
}

/* The admin routes of the user-token secret, on a tenant of its own: the
   GET shows a mask, the POST answers the new secret once (no-store), the
   old secret, cached by this gateway, is refused at once, the new one
   works. */
static void
test_user_token_secret_routes (void **state)
{
    (void)state;
    static s_resp_t r;
    char tenant[64];
    char admin[256];
    assert_int_equal (ppm_test_stack_create_tenant (S.stack, "Gateway HTTP C", "basic", tenant,
                                                    sizeof tenant, admin, sizeof admin),
                      0);
    char *secret = ppm_test_stack_user_token_secret (S.stack, tenant);
    assert_non_null (secret);
    const char *path = "/v1/quote?payee=u_payee&kind=chat";
    char *old_token = s_token (tenant, "u_payer", secret, 600);
    s_http ("GET", path, old_token, NULL, &r);
    assert_int_equal (r.status, 200);
    s_http ("GET", path, old_token, NULL, &r); /* from the cached secret */
    assert_int_equal (r.status, 200);

    char mask[16];
    char expect[16];
    snprintf (expect, sizeof expect, "…%s", secret + strlen (secret) - 4);
    s_http ("GET", "/v1/admin/user-token-secret", admin, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_string_equal (s_json_str (r.body, "masked", mask, sizeof mask), expect);
    assert_null (strstr (r.body, secret));
    int64_t rotated = s_json_int (r.body, "rotated_at");
    assert_true (rotated > 0);
    s_http ("GET", "/v1/admin/user-token-secret?x=1", admin, NULL, &r);
    assert_int_equal (r.status, 400);
    s_http ("GET", "/v1/admin/user-token-secret", NULL, NULL, &r);
    assert_int_equal (r.status, 401);
    s_http ("POST", "/v1/admin/user-token-secret", NULL, "{}", &r);
    assert_int_equal (r.status, 401);
    assert_non_null (strcasestr (r.headers, "WWW-Authenticate: Bearer"));
    s_http ("POST", "/v1/admin/user-token-secret", admin, "[]", &r);
    assert_int_equal (r.status, 400);
    s_http ("POST", "/v1/admin/user-token-secret", admin, "{\"tenant_id\":\"t_a\"}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"tenant_id\""));
    s_http ("GET", path, old_token, NULL, &r); /* nothing rotated by the refusals */
    assert_int_equal (r.status, 200);

    s_http ("POST", "/v1/admin/user-token-secret", admin, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strcasestr (r.headers, "Cache-Control: no-store"));
    char fresh[128];
    s_json_str (r.body, "secret", fresh, sizeof fresh);
    assert_int_equal (strlen (fresh), 64);
    assert_string_not_equal (fresh, secret);
    assert_true (s_json_int (r.body, "rotated_at") >= rotated);
    s_http ("GET", path, old_token, NULL, &r);
    assert_int_equal (r.status, 401);
    char *new_token = s_token (tenant, "u_payer", fresh, 600);
    s_http ("GET", path, new_token, NULL, &r);
    assert_int_equal (r.status, 200);
    s_http ("GET", "/v1/admin/user-token-secret", admin, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_null (strstr (r.body, fresh));
    free (new_token);
    free (old_token);
    free (secret);
}

static void
test_payee_roles (void **state)
{
    (void)state;
    s_resp_t r;
    /* before the payee has shown a token with roles: the default rate */
    s_http ("GET", "/v1/quote?payee=u_coach&kind=call", S.token_payer, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"rate_per_minute\":250"));
    /* the payee's own token says it is a coach (any request will do) */
    ppm_jwt_claims_t claims;
    memset (&claims, 0, sizeof claims);
    snprintf (claims.tid, sizeof claims.tid, "%s", S.tenant_a);
    snprintf (claims.sub, sizeof claims.sub, "u_coach");
    snprintf (claims.roles[0], sizeof claims.roles[0], "coach");
    claims.role_count = 1;
    claims.exp = ppm_clock_real_ms () / 1000 + 600;
    char *coach = ppm_jwt_sign (&claims, (const uint8_t *)S.secret_a, strlen (S.secret_a));
    s_http ("GET", "/v1/quote?payee=u_payer&kind=call", coach, NULL, &r);
    assert_int_equal (r.status, 200);
    free (coach);
    /* now a payer's quote for that payee carries the payee's roles, and
       rate applies the coach's role rate */
    s_http ("GET", "/v1/quote?payee=u_coach&kind=call", S.token_payer, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"rate_per_minute\":500"));
}

static void
test_sessions (void **state)
{
    (void)state;
    s_resp_t r;
    char id[64];
    char path[256];
    char body[256];
    char payment_id[64];
    s_http ("POST", "/v1/sessions", S.token_payer, "{\"payee\":\"u_payee\",\"kind\":\"chat\"}", &r);
    assert_int_equal (r.status, 201);
    s_json_str (r.body, "session_id", id, sizeof id);
    assert_true (strlen (id) > 1);
    assert_non_null (strstr (r.body, "\"state\":\"awaiting_payment\""));
    char location[128];
    snprintf (location, sizeof location, "Location: /v1/sessions/%s", id);
    assert_non_null (strstr (r.headers, location));
    s_http ("POST", "/v1/sessions", S.token_payer,
            "{\"payee\":\"u_payee\",\"kind\":\"chat\",\"x\":1}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"x\""));
    s_http ("POST", "/v1/sessions", S.token_payer, "{\"payee\":\"u_payer\",\"kind\":\"chat\"}", &r);
    assert_int_equal (r.status, 400);
    s_http ("POST", "/v1/sessions", S.token_payer, "[1]", &r);
    assert_int_equal (r.status, 400);

    /* checkout: terms must be accepted; another payer refused */
    snprintf (path, sizeof path, "/v1/sessions/%s/checkout", id);
    s_http ("POST", path, S.token_payer, "{\"minutes\":10,\"accept_terms\":false}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"accept_terms\""));
    s_http ("POST", path, S.token_stranger, "{\"minutes\":10,\"accept_terms\":true}", &r);
    assert_int_equal (r.status, 403);
    s_http ("POST", path, S.token_payer, "{\"minutes\":0,\"accept_terms\":true,\"tip\":5}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"minutes\""));
    assert_non_null (strstr (r.body, "\"field\":\"tip\""));
    s_http ("POST", path, S.token_payer, "{\"minutes\":10,\"accept_terms\":true}", &r);
    if (r.status != 201)
        print_message ("checkout: %s\n", r.body);
    assert_int_equal (r.status, 201);
    assert_non_null (strstr (r.body, "\"amount\":2500"));
    assert_non_null (strstr (r.body, "\"client_secret\":\"pi_"));
    s_json_str (r.body, "payment_id", payment_id, sizeof payment_id);
    /* the PaymentIntent: the client secret is "<intent id>_secret_…" */
    char intent[128];
    s_json_str (r.body, "client_secret", intent, sizeof intent);
    char *cut = strstr (intent, "_secret_");
    assert_non_null (cut);
    *cut = '\0';

    /* confirm: a decline → 422 with the decline code; then success */
    snprintf (path, sizeof path, "/v1/sessions/%s/confirm", id);
    s_http ("POST", path, S.token_payer, "{\"payment_method\":\"pm_card_chargeDeclined\"}", &r);
    assert_int_equal (r.status, 422);
    assert_non_null (strstr (r.body, "card_declined"));
    assert_non_null (strstr (r.body, "generic_decline"));
    /* Stripe takes 300 ms over the next attempt: the gateway still sends
       payment.Confirm once (not idempotent: each call is one attempt at
       Stripe, and of two attempts one finds the intent already paid and
       the payer may be told that one's error) */
    ppm_test_emulator_t *emulator = ppm_test_stack_emulator (S.stack);
    char stripe_path[192];
    snprintf (stripe_path, sizeof stripe_path, "/v1/payment_intents/%s/confirm", intent);
    char fault[320];
    snprintf (fault, sizeof fault,
              "{\"path\":\"%s\",\"method\":\"POST\",\"latency_ms\":300,\"count\":1}", stripe_path);
    assert_int_equal (
        ppm_test_emulator_control (emulator, "POST", "/_emulator/faults", fault, NULL), 200);
    snprintf (body, sizeof body, "{\"payment_method\":\"pm_card_visa\",\"payment_id\":\"%s\"}",
              payment_id);
    s_http ("POST", path, S.token_payer, body, &r);
    if (r.status != 200)
        print_message ("confirm: %s\n", r.body);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"state\":\"succeeded\""));
    char query[256];
    snprintf (query, sizeof query, "/_emulator/requests?path=%s", stripe_path);
    char *log = NULL;
    assert_int_equal (ppm_test_emulator_control (emulator, "GET", query, NULL, &log), 200);
    json_t *requests = json_loads (log, 0, NULL);
    free (log);
    /* the one attempt took Stripe's 300 ms (a re-sent one would have
       answered sooner), and Stripe saw the declined attempt and this one */
    assert_true (r.seconds >= 0.3);
    assert_int_equal (json_array_size (json_object_get (requests, "data")), 2);
    json_decref (requests);

    /* GET: payer and payee yes; stranger 403; other tenant 404; unknown 404 */
    assert_true (s_wait_state (id, S.token_payer, "active", 10000, &r));
    assert_non_null (strstr (r.body, "\"funded_ms\":600000"));
    assert_non_null (strstr (r.body, "\"paused\":false"));
    int64_t remaining = s_json_int (r.body, "remaining_ms");
    assert_true (remaining > 0 && remaining <= 600000);
    snprintf (path, sizeof path, "/v1/sessions/%s", id);
    s_http ("GET", path, S.token_payee, NULL, &r);
    assert_int_equal (r.status, 200);
    s_http ("GET", path, S.token_stranger, NULL, &r);
    assert_int_equal (r.status, 403);
    s_http ("GET", path, S.token_other_tenant, NULL, &r);
    assert_int_equal (r.status, 404);
    /* a well-formed id no session has */
    char unknown[64];
    snprintf (unknown, sizeof unknown, "%s", id);
    size_t last = strlen (unknown) - 1;
    unknown[last] = unknown[last] == '0' ? '1' : '0';
    snprintf (path, sizeof path, "/v1/sessions/%s", unknown);
    s_http ("GET", path, S.token_payer, NULL, &r);
    assert_int_equal (r.status, 404);

    /* heartbeat and end */
    snprintf (path, sizeof path, "/v1/sessions/%s/heartbeat", id);
    s_http ("POST", path, S.token_payee, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"state\":\"active\""));
    s_http ("POST", path, S.token_stranger, NULL, &r);
    assert_int_equal (r.status, 403);
    snprintf (path, sizeof path, "/v1/sessions/%s/end", id);
    s_http ("POST", path, S.token_payer, "{}", &r);
    if (r.status != 200)
        print_message ("end: %s\n", r.body);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"state\":\"ended\""));
    int64_t used_ms = s_json_int (r.body, "used_ms");
    assert_true (used_ms > 0 && used_ms < 600000);
    /* charged and refunded come from payment's statement once settled
       (metering's payment.Settle is asynchronous): the ten minutes were
       charged, the unused whole minutes refunded (refund_unused) */
    bool settled = strstr (r.body, "\"settled\":true") != NULL;
    for (int i = 0; i < 200 && !settled; i++) {
        ppm_test_sleep_ms (50);
        s_http ("POST", path, S.token_payer, "{}", &r);
        assert_int_equal (r.status, 200);
        assert_non_null (strstr (r.body, "\"already_ended\":true"));
        assert_int_equal (s_json_int (r.body, "used_ms"), used_ms);
        settled = strstr (r.body, "\"settled\":true") != NULL;
    }
    if (!settled)
        print_message ("never settled: %s\n", r.body);
    assert_true (settled);
    int64_t used_minutes = (used_ms + 59999) / 60000;
    assert_int_equal (s_json_int (r.body, "charged"), 10 * RATE);
    assert_int_equal (s_json_int (r.body, "refunded"), (10 - used_minutes) * RATE);
    s_http ("POST", path, S.token_payer, "{\"now\":1}", &r);
    assert_int_equal (r.status, 400);
}

typedef struct {
    char path[256];
    char last_event_id[64];
    const char *token;
    s_resp_t resp;
    long timeout_ms;
} s_sse_t;

static void *
s_sse_thread (void *arg)
{
    s_sse_t *sse = arg;
    s_http_port (S.port, "GET", sse->path, sse->token, NULL, 0, sse->last_event_id, sse->timeout_ms,
                 &sse->resp);
    return NULL;
}

/* A metering RPC on a session of tenant A, as the platform: the reply's
   session seq. */
static uint64_t
s_platform (const char *method, const char *id)
{
    Ppm__V1__SessionRequest req = PPM__V1__SESSION_REQUEST__INIT;
    req.session_id = (char *)id;
    req.by = "platform";
    Ppm__V1__SessionReply *reply = NULL;
    ppm_status_t *st =
        ppm_test_stack_call (S.stack, PPM_TEST_METERING, method, S.tenant_a, &req.base,
                             &ppm__v1__session_reply__descriptor, (ProtobufCMessage **)&reply);
    if (st)
        fail_msg ("%s: %s", method, ppm_status_message (st));
    assert_non_null (reply->session);
    uint64_t seq = reply->session->seq;
    protobuf_c_message_free_unpacked (&reply->base, NULL);
    return seq;
}

/* Position of needle in haystack, or -1 */
static long
s_at (const char *haystack, const char *needle)
{
    const char *p = strstr (haystack, needle);
    return p ? (long)(p - haystack) : -1;
}

static void
test_events_stream (void **state)
{
    (void)state;
    /* two paid minutes, the warning at one minute left; the platform
       pauses the clock while the listeners connect */
    char id[64];
    char payment_id[64];
    assert_true (s_paid_session ("u_payee", 2, id, sizeof id, payment_id, sizeof payment_id));
    uint64_t paused_seq = s_platform ("metering.Pause", id);
    assert_true (paused_seq > 0);

    s_sse_t *sse = calloc (4, sizeof *sse);
    assert_non_null (sse);
    /* [0] stays to the end; [1] leaves early while the others stay (the
       tick closes its stream alone, then several in one pass: a
       use-after-free once); [2] and [3] are closed by the end */
    const char *tokens[] = {S.token_payer, S.token_payee, S.token_payer, S.token_payee};
    long timeouts[] = {20000, 1200, 20000, 20000};
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        snprintf (sse[i].path, sizeof sse[i].path, "/v1/sessions/%s/events", id);
        snprintf (sse[i].last_event_id, sizeof sse[i].last_event_id, "Last-Event-ID: %llu",
                  (unsigned long long)paused_seq);
        sse[i].token = tokens[i];
        sse[i].timeout_ms = timeouts[i];
        pthread_create (&threads[i], NULL, s_sse_thread, &sse[i]);
    }
    s_resp_t *r = malloc (sizeof *r);
    assert_non_null (r);
    bool listening = false;
    for (int i = 0; i < 200 && !listening; i++) {
        s_http ("GET", "/v1/admin/health", S.admin_a, NULL, r);
        listening = s_json_int (r->body, "sse_clients") >= 4;
        if (!listening)
            ppm_test_sleep_ms (25);
    }
    assert_true (listening);

    /* meanwhile, in tenant B (plan basic: free), a session of its own */
    char other[64];
    s_http ("POST", "/v1/sessions", S.token_other_tenant,
            "{\"payee\":\"u_payee\",\"kind\":\"chat\"}", r);
    assert_int_equal (r->status, 201);
    assert_non_null (strstr (r->body, "\"state\":\"active\""));
    s_json_str (r->body, "session_id", other, sizeof other);

    /* the clock runs again: resumed, then the one-minute warning */
    s_platform ("metering.Resume", id);
    char path[256];
    snprintf (path, sizeof path, "/v1/sessions/%s", id);
    int64_t remaining = -1;
    for (int i = 0; i < 400; i++) {
        s_http ("GET", path, S.token_payer, NULL, r);
        remaining = s_json_int (r->body, "remaining_ms");
        if (remaining >= 0 && remaining <= 60000)
            break;
        ppm_test_sleep_ms (20);
    }
    assert_true (remaining >= 0 && remaining <= 60000);
    snprintf (path, sizeof path, "/v1/sessions/%s/end", other);
    s_http ("POST", path, S.token_other_tenant, "{}", r);
    assert_int_equal (r->status, 200);
    /* the session ends: every stream of it closes in the same tick */
    snprintf (path, sizeof path, "/v1/sessions/%s/end", id);
    s_http ("POST", path, S.token_payer, "{}", r);
    if (r->status != 200)
        print_message ("end: %s\n", r->body);
    assert_int_equal (r->status, 200);
    for (int i = 0; i < 4; i++)
        pthread_join (threads[i], NULL);
    for (int i = 0; i < 4; i++) {
        assert_int_equal (sse[i].resp.status, 200);
        assert_non_null (strstr (sse[i].resp.headers, "text/event-stream"));
        /* the other tenant's session did not leak into these streams */
        assert_null (strstr (sse[i].resp.body, other));
    }
    const char *events = sse[0].resp.body;
    /* first the session as it is (paused), marked as a resumption */
    char state_frame[96];
    snprintf (state_frame, sizeof state_frame, "id: %llu\nevent: state\ndata: {",
              (unsigned long long)paused_seq);
    long at_state = s_at (events, state_frame);
    assert_true (at_state >= 0);
    assert_non_null (strstr (events, "\"resumed\":true"));
    assert_non_null (strstr (events, "\"state\":\"paused\""));
    /* then metering's events, relayed with their sequence numbers */
    char resumed_frame[96];
    snprintf (resumed_frame, sizeof resumed_frame, "id: %llu\nevent: resumed\ndata: {",
              (unsigned long long)paused_seq + 1);
    char warning_frame[96];
    snprintf (warning_frame, sizeof warning_frame, "id: %llu\nevent: warning\ndata: {",
              (unsigned long long)paused_seq + 2);
    char ended_frame[96];
    snprintf (ended_frame, sizeof ended_frame, "id: %llu\nevent: ended\ndata: {",
              (unsigned long long)paused_seq + 3);
    long at_resumed = s_at (events, resumed_frame);
    long at_warning = s_at (events, warning_frame);
    long at_ended = s_at (events, ended_frame);
    if (at_resumed < 0 || at_warning < 0 || at_ended < 0)
        print_message ("events: %s\n", events);
    assert_true (at_state < at_resumed && at_resumed < at_warning && at_warning < at_ended);
    assert_non_null (strstr (events, "\"warning_mark_s\":60"));
    assert_non_null (strstr (events, "event: tick\ndata: {\"remaining_ms\":"));
    /* the end is relayed and closes the stream (well before the client's
       own timeout) */
    assert_true (sse[0].resp.seconds < 15);
    assert_non_null (strstr (sse[1].resp.body, "event: state"));
    assert_non_null (strstr (sse[2].resp.body, "event: ended"));
    assert_non_null (strstr (sse[3].resp.body, "event: ended"));
    free (sse);

    /* a stranger may not listen */
    snprintf (path, sizeof path, "/v1/sessions/%s/events", id);
    s_http ("GET", path, S.token_stranger, NULL, r);
    assert_int_equal (r->status, 403);
    free (r);
}

static void
test_webhook (void **state)
{
    (void)state;
    ppm_test_emulator_t *emulator = ppm_test_stack_emulator (S.stack);
    /* the emulator delivered tenant A's Stripe events to the gateway
       during the purchases, and payment accepted every one (200) */
    char wanted[256];
    snprintf (wanted, sizeof wanted, "/v1/stripe/webhook/%s", S.tenant_a);
    char event_id[64] = "";
    bool all_delivered = false;
    for (int i = 0; i < 100 && !all_delivered; i++) {
        char *text = NULL;
        assert_int_equal (
            ppm_test_emulator_control (emulator, "GET", "/_emulator/webhooks", NULL, &text), 200);
        json_t *json = json_loads (text, 0, NULL);
        free (text);
        json_t *deliveries = json_object_get (json, "deliveries");
        size_t n = 0;
        size_t delivered = 0;
        size_t index;
        json_t *d;
        json_array_foreach (deliveries, index, d)
        {
            const char *url = json_string_value (json_object_get (d, "url"));
            if (!url || !strstr (url, wanted))
                continue;
            n++;
            const char *st = json_string_value (json_object_get (d, "state"));
            if (st && strcmp (st, "delivered") == 0) {
                delivered++;
                json_t *attempts = json_object_get (d, "attempts");
                json_t *last = json_array_get (attempts, json_array_size (attempts) - 1);
                assert_int_equal (json_integer_value (json_object_get (last, "status")), 200);
                const char *type = json_string_value (json_object_get (d, "type"));
                if (type && strcmp (type, "payment_intent.succeeded") == 0)
                    snprintf (event_id, sizeof event_id, "%s",
                              json_string_value (json_object_get (d, "event")));
            }
        }
        json_decref (json);
        all_delivered = n > 0 && delivered == n && event_id[0];
        if (!all_delivered)
            ppm_test_sleep_ms (50);
    }
    assert_true (all_delivered);

    /* Stripe sends that event again (a retry): accepted, and known */
    s_resp_t *event = malloc (sizeof *event);
    assert_non_null (event);
    const char *url = ppm_test_emulator_url (emulator);
    int emulator_port = (int)strtol (strrchr (url, ':') + 1, NULL, 10);
    char path[256];
    snprintf (path, sizeof path, "/v1/events/%s", event_id);
    s_http_port (emulator_port, "GET", path, STRIPE_KEY, NULL, 0, NULL, 0, event);
    assert_int_equal (event->status, 200);
    const char *body = event->body;
    char signature[PPM_STRIPE_SIG_HEADER_SIZE];
    char header[PPM_STRIPE_SIG_HEADER_SIZE + 32];
    int64_t now_s = ppm_clock_real_ms () / 1000;
    assert_int_equal (ppm_stripe_sig_header (WEBHOOK_SECRET, now_s, body, strlen (body), signature,
                                             sizeof signature),
                      PPM_STRIPE_SIG_OK);
    snprintf (header, sizeof header, "Stripe-Signature: %s", signature);
    snprintf (path, sizeof path, "/v1/stripe/webhook/%s", S.tenant_a);
    s_resp_t r;
    s_http_port (S.port, "POST", path, NULL, body, strlen (body), header, 0, &r);
    if (r.status != 200)
        print_message ("webhook: %s\n", r.body);
    assert_int_equal (r.status, 200);
    char expect[128];
    snprintf (expect, sizeof expect, "\"event_id\":\"%s\"", event_id);
    assert_non_null (strstr (r.body, expect));
    assert_non_null (strstr (r.body, "\"duplicate\":true"));
    /* signed with another secret: refused */
    assert_int_equal (ppm_stripe_sig_header ("whsec_forged0123456789", now_s, body, strlen (body),
                                             signature, sizeof signature),
                      PPM_STRIPE_SIG_OK);
    snprintf (header, sizeof header, "Stripe-Signature: %s", signature);
    s_http_port (S.port, "POST", path, NULL, body, strlen (body), header, 0, &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "UNAUTHENTICATED"));
    /* not signed */
    s_http_port (S.port, "POST", path, NULL, body, strlen (body), NULL, 0, &r);
    assert_int_equal (r.status, 400);
    free (event);
}

/* Sends sig to a service of the stack. */
/* Signals a service; after SIGSTOP, waits until the kernel shows it
   stopped (kill returns before every thread of the target has stopped). */
static void
s_signal (ppm_test_service_t service, int sig)
{
    pid_t pid = ppm_test_stack_pid (S.stack, service);
    assert_int_equal (ppm_test_kill (pid, sig), 0);
    if (sig != SIGSTOP)
        return;
    char path[64];
    snprintf (path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int i = 0; i < 200; i++) {
        char line[512] = "";
        FILE *f = fopen (path, "r");
        if (f) {
            if (!fgets (line, sizeof line, f))
                line[0] = '\0';
            fclose (f);
        }
        const char *paren = strrchr (line, ')'); /* "pid (comm) STATE ..." */
        if (paren && paren[1] == ' ' && paren[2] == 'T')
            return;
        usleep (10 * 1000);
    }
    fail_msg ("pid %d did not stop", (int)pid);
}

static void
test_dead_backend (void **state)
{
    (void)state;
    /* a gateway with a short deadline, in front of the same services */
    gateway_config_t cfg = S.cfg;
    cfg.rpc_timeout_ms = 300;
    cfg.metrics_address = "127.0.0.1";
    cfg.metrics_port = 0;
    zactor_t *gw = zactor_new (gateway_server_actor, &cfg);
    zstr_send (gw, "PORT");
    char *text = zstr_recv (gw);
    int port = text ? (int)strtol (text, NULL, 10) : 0;
    free (text);
    assert_true (port > 0);
    zstr_send (gw, "METRICS_PORT");
    text = zstr_recv (gw);
    int metrics_port = text ? (int)strtol (text, NULL, 10) : 0;
    free (text);
    assert_true (metrics_port > 0);
    s_resp_t *r = malloc (sizeof *r);
    assert_non_null (r);
    const char *quote = "/v1/quote?payee=u_payee&kind=chat";
    s_http_port (port, "GET", "/v1/admin/settings", S.admin_a, NULL, 0, NULL, 5000, r);
    assert_int_equal (r->status, 200);
    s_http_port (port, "GET", quote, S.token_payer, NULL, 0, NULL, 5000, r);
    assert_int_equal (r->status, 200);

    /* rate stops answering (its credentials are cached, config still
       answers): 503 + Retry-After within the deadline, never a hang */
    s_signal (PPM_TEST_RATE, SIGSTOP);
    s_http_port (port, "GET", quote, S.token_payer, NULL, 0, NULL, 5000, r);
    if (r->status != 503)
        print_message ("unexpected answer: %s\n", r->body);
    assert_int_equal (r->status, 503);
    assert_non_null (strstr (r->headers, "Retry-After: 1"));
    assert_non_null (strstr (r->body, "UNAVAILABLE"));
    assert_non_null (strstr (r->body, "rate"));
    assert_true (r->seconds < 1.5);
    s_http_port (port, "GET", "/v1/admin/health", S.admin_a, NULL, 0, NULL, 5000, r);
    assert_int_equal (r->status, 200);
    assert_non_null (strstr (r->body, "\"rate\":\"down\""));
    assert_non_null (strstr (r->body, "\"config\":\"up\""));
    /* and config too */
    s_signal (PPM_TEST_CONFIG, SIGSTOP);
    s_http_port (port, "GET", "/v1/admin/settings", S.admin_a, NULL, 0, NULL, 5000, r);
    if (r->status != 503)
        print_message ("unexpected answer after %.3f s: %s\n", r->seconds, r->body);
    assert_int_equal (r->status, 503);
    assert_non_null (strstr (r->headers, "Retry-After: 1"));
    assert_non_null (strstr (r->body, "UNAVAILABLE"));
    assert_true (r->seconds < 1.5);
    /* health still answers */
    s_http_port (port, "GET", "/healthz", NULL, NULL, 0, NULL, 5000, r);
    assert_int_equal (r->status, 200);
    /* the metrics listener serves health and metrics, and nothing else */
    s_http_port (metrics_port, "GET", "/readyz", NULL, NULL, 0, NULL, 5000, r);
    assert_int_equal (r->status, 200);
    s_http_port (metrics_port, "GET", "/metrics", NULL, NULL, 0, NULL, 5000, r);
    assert_int_equal (r->status, 200);
    /* the process registry (docs/METRICS.md: no service label; the scrape
       job names the service), shared by every gateway this test process
       starts: at least this test's request is counted */
    assert_non_null (
        strstr (r->body, "ppm_http_requests_total{route=\"/v1/quote\",status=\"503\"} "));
    assert_non_null (strstr (r->body, "ppm_sse_clients"));
    assert_non_null (
        strstr (r->body, "ppm_http_request_duration_seconds_count{route=\"/v1/quote\"} "));
    assert_null (strstr (r->body, "service=\"gateway\""));
    s_http_port (metrics_port, "GET", quote, S.token_payer, NULL, 0, NULL, 5000, r);
    assert_int_equal (r->status, 404);

    /* both answer again: so does the gateway */
    s_signal (PPM_TEST_CONFIG, SIGCONT);
    s_signal (PPM_TEST_RATE, SIGCONT);
    bool settings = false;
    bool quoted = false;
    for (int i = 0; i < 100 && !(settings && quoted); i++) {
        if (!settings) {
            s_http_port (port, "GET", "/v1/admin/settings", S.admin_a, NULL, 0, NULL, 5000, r);
            settings = r->status == 200;
        }
        if (!quoted) {
            s_http_port (port, "GET", quote, S.token_payer, NULL, 0, NULL, 5000, r);
            quoted = r->status == 200;
        }
        if (!(settings && quoted))
            ppm_test_sleep_ms (50);
    }
    assert_true (settings);
    assert_true (quoted);
    assert_non_null (strstr (r->body, "\"rate_per_minute\":250"));
    free (r);
    zactor_destroy (&gw);
}

int
main (void)
{
    curl_global_init (CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_admin_settings), cmocka_unit_test (test_admin_rates_and_lists),
        cmocka_unit_test (test_user_auth),      cmocka_unit_test (test_user_token_secret_routes),
        cmocka_unit_test (test_payee_roles),    cmocka_unit_test (test_sessions),
        cmocka_unit_test (test_events_stream),  cmocka_unit_test (test_webhook),
        cmocka_unit_test (test_dead_backend),
    };
    int rc = cmocka_run_group_tests (tests, s_setup, s_teardown);
    curl_global_cleanup ();
    return rc;
}
