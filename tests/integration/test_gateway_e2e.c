/*  End to end through the gateway with every real service: config, rate,
    payment and metering binaries on real PostgreSQL and Redis (the
    harness's), the Stripe emulator, and the gateway actor in-process. An
    admin configures the tenant through the HTTP API, a payer gets a quote,
    opens a session, is declined, pays, gets funded time (payment's outbox →
    metering.Fund), listens to the session's events, and ends the session;
    the admin sees the payment in the ledger, the CSV and the earnings.
    Then the tenant's user-token secret is rotated through the admin API:
    tokens signed with the old one are refused at once, the new one works.

    Skips (does not fail) when a service binary is not built yet. */
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
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ppm_clock.h"
#include "ppm_jwt.h"
#include "ppm_log.h"
#include "ppm_rpc.h"
#include "tests/lib/ppm_test.h"
#include "tests/lib/ppm_test_emulator.h"
#include "proto/config.pb-c.h"
#include "services/gateway/gateway_server.h"

#define MASTER_KEY "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static struct {
    ppm_test_emulator_t *emulator;
    pid_t pids[4];
    zactor_t *gateway;
    int port;
    char tenant[64];
    char admin_key[256];
    char *payer;
    char *payee;
    char config_ep[64];
    char rate_ep[64];
    char payment_ep[64];
    char metering_ep[64];
    char events[256];
    gateway_config_t cfg;
} S;

typedef struct {
    long status;
    char body[65536];
    size_t len;
    char headers[4096];
    size_t headers_len;
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
s_http (const char *method, const char *path, const char *auth, const char *body,
        const char *header, long timeout_ms, s_resp_t *r)
{
    memset (r, 0, sizeof *r);
    char url[512];
    snprintf (url, sizeof url, "http://127.0.0.1:%d%s", S.port, path);
    CURL *curl = curl_easy_init ();
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
    struct curl_slist *headers = NULL;
    char line[4200];
    if (auth) {
        snprintf (line, sizeof line, "Authorization: Bearer %s", auth);
        headers = curl_slist_append (headers, line);
    }
    if (header)
        headers = curl_slist_append (headers, header);
    headers = curl_slist_append (headers, "Expect:");
    if (body) {
        curl_easy_setopt (curl, CURLOPT_POSTFIELDS, body);
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
    curl_easy_perform (curl);
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all (headers);
    curl_easy_cleanup (curl);
}

static bool
s_have (const char *bin)
{
    const char *dir = getenv ("PPM_BIN_DIR");
    if (!dir)
        return false;
    char path[1024];
    snprintf (path, sizeof path, "%s/%s", dir, bin);
    return access (path, X_OK) == 0;
}

static char *
s_env (const char *name, const char *value)
{
    size_t n = strlen (name) + strlen (value) + 2;
    char *out = malloc (n);
    snprintf (out, n, "%s=%s", name, value);
    return out;
}

/* Whether something accepts TCP connections at a "tcp://host:port" endpoint. */
static bool
s_port_open (void *arg)
{
    const char *endpoint = arg;
    int port = (int)strtol (strrchr (endpoint, ':') + 1, NULL, 10);
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons ((uint16_t)port);
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    bool open = connect (fd, (struct sockaddr *)&addr, sizeof addr) == 0;
    close (fd);
    return open;
}

static char *
s_token (const char *sub, const char *secret)
{
    ppm_jwt_claims_t claims;
    memset (&claims, 0, sizeof claims);
    snprintf (claims.tid, sizeof claims.tid, "%s", S.tenant);
    snprintf (claims.sub, sizeof claims.sub, "%s", sub);
    claims.exp = ppm_clock_real_ms () / 1000 + 3600;
    return ppm_jwt_sign (&claims, (const uint8_t *)secret, strlen (secret));
}

static int s_teardown (void **state);

static int
s_setup_inner (void)
{
    const char *bins[] = {"ppm-config",   "ppm-rate",        "ppm-payment",
                          "ppm-metering", "stripe-emulator", NULL};
    for (int i = 0; bins[i]; i++)
        if (!s_have (bins[i])) {
            print_message ("%s is not built yet: skipping the end-to-end test\n", bins[i]);
            return 0;
        }
    ppm_log_init ("test");
    ppm_log_set_level (PPM_LOG_ERROR);
    S.emulator = ppm_test_emulator_start (NULL);
    if (!S.emulator)
        return -1;
    char *pg = ppm_test_pg_url ("gateway_e2e");
    char *redis = ppm_test_redis_url (41);
    int p[8];
    for (int i = 0; i < 8; i++)
        p[i] = ppm_test_free_port ();
    snprintf (S.config_ep, sizeof S.config_ep, "tcp://127.0.0.1:%d", p[0]);
    snprintf (S.rate_ep, sizeof S.rate_ep, "tcp://127.0.0.1:%d", p[1]);
    snprintf (S.payment_ep, sizeof S.payment_ep, "tcp://127.0.0.1:%d", p[2]);
    snprintf (S.metering_ep, sizeof S.metering_ep, "tcp://127.0.0.1:%d", p[3]);
    char config_pub[64], payment_pub[64], metering_pub[64];
    snprintf (config_pub, sizeof config_pub, "tcp://127.0.0.1:%d", p[4]);
    snprintf (payment_pub, sizeof payment_pub, "tcp://127.0.0.1:%d", p[5]);
    snprintf (metering_pub, sizeof metering_pub, "tcp://127.0.0.1:%d", p[6]);
    snprintf (S.events, sizeof S.events, "%s,%s,%s", config_pub, payment_pub, metering_pub);
    char *common[] = {s_env ("PPM_PG_URL", pg),
                      s_env ("PPM_REDIS_URL", redis),
                      s_env ("PPM_MASTER_KEY", MASTER_KEY),
                      s_env ("PPM_STRIPE_API_BASE", ppm_test_emulator_url (S.emulator)),
                      s_env ("PPM_CONFIG_ENDPOINT", S.config_ep),
                      s_env ("PPM_CONFIG_EVENTS", config_pub),
                      s_env ("PPM_RATE_ENDPOINT", S.rate_ep),
                      s_env ("PPM_PAYMENT_ENDPOINT", S.payment_ep),
                      s_env ("PPM_PAYMENT_EVENTS", payment_pub),
                      s_env ("PPM_METERING_ENDPOINT", S.metering_ep),
                      s_env ("PPM_METERING_EVENTS", metering_pub),
                      s_env ("PPM_LOG_LEVEL", "warn")};
    const size_t n_common = sizeof common / sizeof common[0];
    const char *names[] = {"ppm-config", "ppm-rate", "ppm-payment", "ppm-metering"};
    const char *rpc[] = {S.config_ep, S.rate_ep, S.payment_ep, S.metering_ep};
    const char *pub[] = {config_pub, "", payment_pub, metering_pub};
    for (int i = 0; i < 4; i++) {
        char metrics[32];
        snprintf (metrics, sizeof metrics, "127.0.0.1:%d", ppm_test_free_port ());
        char *env[20];
        size_t k = 0;
        for (size_t c = 0; c < n_common; c++)
            env[k++] = common[c];
        env[k++] = s_env ("PPM_RPC_BIND", rpc[i]);
        env[k++] = s_env ("PPM_PUB_BIND", *pub[i] ? pub[i] : "tcp://127.0.0.1:0");
        env[k++] = s_env ("PPM_METRICS_BIND", metrics);
        env[k] = NULL;
        S.pids[i] = ppm_test_spawn (names[i], NULL, env);
        for (size_t c = n_common; c < k; c++)
            free (env[c]);
        if (!ppm_test_wait_until (s_port_open, (void *)rpc[i], 15000)) {
            print_message ("%s did not start\n", names[i]);
            return -1;
        }
        if (i == 0)
            ppm_test_sleep_ms (200); /* config migrated and serving */
    }
    for (size_t c = 0; c < n_common; c++)
        free (common[c]);
    free (pg);
    free (redis);

    /* the tenant, its first admin key and its user-token secret, from config */
    ppm_rpc_client_t *config = ppm_rpc_client_new (S.config_ep);
    Ppm__V1__CreateTenantRequest create = PPM__V1__CREATE_TENANT_REQUEST__INIT;
    create.name = "Gateway e2e";
    create.plan = "pro";
    create.actor = "test";
    ppm_rpc_req_t req = {.method = "config.CreateTenant", .timeout_ms = 5000};
    Ppm__V1__CreateTenantReply *created = NULL;
    ppm_status_t *st = ppm_rpc_client_call_sync (config, &req, &create.base,
                                                 &ppm__v1__create_tenant_reply__descriptor,
                                                 (ProtobufCMessage **)&created);
    if (st || !created) {
        print_message ("CreateTenant: %s\n", ppm_status_message (st));
        ppm_status_destroy (&st);
        ppm_rpc_client_destroy (&config);
        return -1;
    }
    snprintf (S.tenant, sizeof S.tenant, "%s", created->tenant->tenant_id);
    snprintf (S.admin_key, sizeof S.admin_key, "%s", created->admin_key);
    protobuf_c_message_free_unpacked (&created->base, NULL);
    Ppm__V1__GetUserTokenSecretRequest get = PPM__V1__GET_USER_TOKEN_SECRET_REQUEST__INIT;
    get.tenant_id = S.tenant;
    ppm_rpc_req_t req2 = {
        .method = "config.GetUserTokenSecret", .tenant = S.tenant, .timeout_ms = 5000};
    Ppm__V1__UserTokenSecret *secret = NULL;
    st =
        ppm_rpc_client_call_sync (config, &req2, &get.base, &ppm__v1__user_token_secret__descriptor,
                                  (ProtobufCMessage **)&secret);
    ppm_rpc_client_destroy (&config);
    if (st || !secret) {
        print_message ("GetUserTokenSecret: %s\n", ppm_status_message (st));
        ppm_status_destroy (&st);
        return -1;
    }
    S.payer = s_token ("u_payer", secret->secret);
    S.payee = s_token ("u_coach", secret->secret);
    protobuf_c_message_free_unpacked (&secret->base, NULL);

    S.cfg = (gateway_config_t){.http_address = "127.0.0.1",
                               .http_threads = 2,
                               .body_max = 65536,
                               .config_endpoint = S.config_ep,
                               .rate_endpoint = S.rate_ep,
                               .payment_endpoint = S.payment_ep,
                               .metering_endpoint = S.metering_ep,
                               .events_endpoints = S.events,
                               .rpc_timeout_ms = 5000,
                               .auth_cache_ms = 30000};
    S.gateway = zactor_new (gateway_server_actor, &S.cfg);
    zstr_send (S.gateway, "PORT");
    char *port = zstr_recv (S.gateway);
    S.port = (int)strtol (port, NULL, 10);
    free (port);

    /* Stripe's webhooks for this tenant go to the gateway */
    char json[512];
    snprintf (json, sizeof json,
              "{\"api_key\":\"sk_test_gwe2e0123456789\",\"url\":\"http://127.0.0.1:%d/v1/stripe/"
              "webhook/%s\",\"secret\":\"whsec_gwe2e0123456789\"}",
              S.port, S.tenant);
    ppm_test_emulator_control (S.emulator, "POST", "/_emulator/webhook_endpoints", json, NULL);
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
    for (int i = 3; i >= 0; i--)
        if (S.pids[i] > 0)
            ppm_test_stop (S.pids[i], 5000);
    ppm_test_emulator_stop (&S.emulator);
    free (S.payer);
    free (S.payee);
    return 0;
}

static const char *
s_str (json_t *o, const char *k)
{
    const char *v = json_string_value (json_object_get (o, k));
    return v ? v : "";
}

static void
test_paid_session_end_to_end (void **state)
{
    (void)state;
    if (!S.gateway)
        skip ();
    s_resp_t r;
    /* admin: read, change, write the settings with If-Match */
    s_http ("GET", "/v1/admin/settings", S.admin_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    json_t *settings = json_loads (r.body, 0, NULL);
    assert_non_null (settings);
    char if_match[64];
    snprintf (if_match, sizeof if_match, "If-Match: \"%lld\"",
              (long long)json_integer_value (json_object_get (settings, "version")));
    json_object_set_new (settings, "enabled", json_true ());
    json_object_set_new (settings, "enable_for", json_string ("both"));
    json_object_set_new (settings, "rate_scope", json_string ("individual"));
    json_object_set_new (settings, "stripe_mode", json_string ("test"));
    json_object_set_new (settings, "stripe_secret_key", json_string ("sk_test_gwe2e0123456789"));
    json_object_set_new (settings, "stripe_publishable_key",
                         json_string ("pk_test_gwe2e0123456789"));
    json_object_set_new (settings, "stripe_webhook_secret", json_string ("whsec_gwe2e0123456789"));
    json_object_set_new (settings, "terms_url", json_string ("https://example.com/terms"));
    json_object_set_new (settings, "currency", json_string ("USD"));
    json_object_set_new (settings, "preset_minutes", json_pack ("[i,i,i]", 10, 30, 45));
    char *text = json_dumps (settings, JSON_COMPACT);
    json_decref (settings);
    s_http ("PUT", "/v1/admin/settings", S.admin_key, text, if_match, 0, &r);
    free (text);
    if (r.status != 200)
        print_message ("PUT settings: %s\n", r.body);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "sk_test_…"));
    /* the same If-Match again is stale now */
    s_http ("PUT", "/v1/admin/settings", S.admin_key, "{\"enabled\":true}", if_match, 0, &r);
    assert_true (r.status == 409 || r.status == 400);
    s_http ("PUT", "/v1/admin/users/u_coach/rates", S.admin_key,
            "{\"call_per_minute\":250,\"chat_per_minute\":100}", NULL, 0, &r);
    assert_int_equal (r.status, 200);

    /* payer: quote (rate sees the change within its bound), session */
    json_t *quote = NULL;
    for (int i = 0; i < 50; i++) {
        s_http ("GET", "/v1/quote?payee=u_coach&kind=chat", S.payer, NULL, NULL, 0, &r);
        assert_int_equal (r.status, 200);
        if (strstr (r.body, "\"rate_per_minute\":100")) {
            quote = json_loads (r.body, 0, NULL);
            break;
        }
        ppm_test_sleep_ms (100);
    }
    assert_non_null (quote);
    assert_true (json_is_true (json_object_get (quote, "paid")));
    assert_int_equal (json_integer_value (json_object_get (
                          json_array_get (json_object_get (quote, "presets"), 1), "amount")),
                      3000);
    json_decref (quote);
    s_http ("POST", "/v1/sessions", S.payer, "{\"payee\":\"u_coach\",\"kind\":\"chat\"}", NULL, 0,
            &r);
    if (r.status != 201)
        print_message ("POST /v1/sessions: %s\n", r.body);
    assert_int_equal (r.status, 201);
    json_t *session = json_loads (r.body, 0, NULL);
    char id[128];
    snprintf (id, sizeof id, "%s", s_str (session, "session_id"));
    assert_string_equal (s_str (session, "state"), "awaiting_payment");
    json_decref (session);
    char path[256];

    /* checkout: terms refused, then 10 minutes */
    snprintf (path, sizeof path, "/v1/sessions/%s/checkout", id);
    s_http ("POST", path, S.payer, "{\"minutes\":10,\"accept_terms\":false}", NULL, 0, &r);
    assert_int_equal (r.status, 400);
    s_http ("POST", path, S.payee, "{\"minutes\":10,\"accept_terms\":true}", NULL, 0, &r);
    assert_true (r.status == 403 || r.status == 404);
    s_http ("POST", path, S.payer, "{\"minutes\":10,\"accept_terms\":true}", NULL, 0, &r);
    if (r.status != 201)
        print_message ("checkout: %s\n", r.body);
    assert_int_equal (r.status, 201);
    json_t *checkout = json_loads (r.body, 0, NULL);
    assert_int_equal (json_integer_value (json_object_get (checkout, "amount")), 1000);
    char payment_id[128];
    snprintf (payment_id, sizeof payment_id, "%s", s_str (checkout, "payment_id"));
    json_decref (checkout);

    /* a declined card, then the test Visa */
    snprintf (path, sizeof path, "/v1/sessions/%s/confirm", id);
    char body[256];
    snprintf (body, sizeof body,
              "{\"payment_method\":\"pm_card_chargeDeclined\",\"payment_id\":\"%s\"}", payment_id);
    s_http ("POST", path, S.payer, body, NULL, 0, &r);
    if (r.status != 422)
        print_message ("declined confirm: %s\n", r.body);
    assert_int_equal (r.status, 422);
    assert_non_null (strstr (r.body, "decline"));
    snprintf (body, sizeof body, "{\"payment_method\":\"pm_card_visa\",\"payment_id\":\"%s\"}",
              payment_id);
    s_http ("POST", path, S.payer, body, NULL, 0, &r);
    if (r.status != 200)
        print_message ("confirm: %s\n", r.body);
    assert_int_equal (r.status, 200);

    /* funded: payment's outbox → metering.Fund → active with 10 minutes */
    snprintf (path, sizeof path, "/v1/sessions/%s", id);
    bool active = false;
    for (int i = 0; i < 100 && !active; i++) {
        s_http ("GET", path, S.payee, NULL, NULL, 0, &r);
        assert_int_equal (r.status, 200);
        active = strstr (r.body, "\"state\":\"active\"") != NULL;
        if (!active)
            ppm_test_sleep_ms (100);
    }
    if (!active)
        print_message ("session: %s\n", r.body);
    assert_true (active);
    assert_non_null (strstr (r.body, "\"funded_ms\":600000"));

    /* the countdown stream: a state event then ticks */
    snprintf (path, sizeof path, "/v1/sessions/%s/events", id);
    s_http ("GET", path, S.payer, NULL, NULL, 1600, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "event: state"));
    assert_non_null (strstr (r.body, "event: tick"));

    /* end */
    snprintf (path, sizeof path, "/v1/sessions/%s/end", id);
    s_http ("POST", path, S.payer, "{}", NULL, 0, &r);
    if (r.status != 200)
        print_message ("end: %s\n", r.body);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"state\":\"ended\""));

    /* admin: the ledger, the CSV, earnings, sessions, audit */
    s_http ("GET", "/v1/admin/payments", S.admin_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, payment_id));
    s_http ("GET", "/v1/admin/payments.csv", S.admin_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, payment_id));
    s_http ("GET", "/v1/admin/earnings", S.admin_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    s_http ("GET", "/v1/admin/sessions", S.admin_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, id));
    s_http ("GET", "/v1/admin/audit", S.admin_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "stripe_secret_key"));
    assert_null (strstr (r.body, "sk_test_gwe2e0123456789"));
    s_http ("GET", "/v1/admin/health", S.admin_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    assert_null (strstr (r.body, "down"));
}

/* Creates a tenant through config; writes its id and first admin key. */
static void
s_create_tenant (const char *name, char id[64], char key[256])
{
    ppm_rpc_client_t *config = ppm_rpc_client_new (S.config_ep);
    Ppm__V1__CreateTenantRequest create = PPM__V1__CREATE_TENANT_REQUEST__INIT;
    create.name = (char *)name;
    create.plan = "pro";
    create.actor = "test";
    ppm_rpc_req_t req = {.method = "config.CreateTenant", .timeout_ms = 5000};
    Ppm__V1__CreateTenantReply *created = NULL;
    ppm_status_t *st = ppm_rpc_client_call_sync (config, &req, &create.base,
                                                 &ppm__v1__create_tenant_reply__descriptor,
                                                 (ProtobufCMessage **)&created);
    ppm_rpc_client_destroy (&config);
    if (st)
        fail_msg ("CreateTenant: %s", ppm_status_message (st));
    snprintf (id, 64, "%s", created->tenant->tenant_id);
    snprintf (key, 256, "%s", created->admin_key);
    protobuf_c_message_free_unpacked (&created->base, NULL);
}

/* The tenant's user-token secret as config has it (caller frees). */
static char *
s_secret_of (const char *tenant)
{
    ppm_rpc_client_t *config = ppm_rpc_client_new (S.config_ep);
    Ppm__V1__GetUserTokenSecretRequest get = PPM__V1__GET_USER_TOKEN_SECRET_REQUEST__INIT;
    ppm_rpc_req_t req = {
        .method = "config.GetUserTokenSecret", .tenant = tenant, .timeout_ms = 5000};
    Ppm__V1__UserTokenSecret *secret = NULL;
    ppm_status_t *st =
        ppm_rpc_client_call_sync (config, &req, &get.base, &ppm__v1__user_token_secret__descriptor,
                                  (ProtobufCMessage **)&secret);
    ppm_rpc_client_destroy (&config);
    if (st)
        fail_msg ("GetUserTokenSecret: %s", ppm_status_message (st));
    char *out = strdup (secret->secret);
    protobuf_c_message_free_unpacked (&secret->base, NULL);
    return out;
}

/* The status of a user route (a quote: 200 for any valid token, free or
   paid) called with token. */
static long
s_user_status (const char *token)
{
    s_resp_t r;
    s_http ("GET", "/v1/quote?payee=u_coach&kind=chat", token, NULL, NULL, 0, &r);
    return r.status;
}

/* A platform's backend gets the secret through the admin API, rotates it,
   and signs with the new one: the old tokens stop at once, even those
   whose secret the gateway had cached; the GET shows only a mask; another
   tenant's key rotates its own tenant's secret only. */
static void
test_user_token_secret_rotation (void **state)
{
    (void)state;
    if (!S.gateway)
        skip ();
    s_resp_t r;
    char other[64], other_key[256];
    s_create_tenant ("Gateway e2e other", other, other_key);
    char *old = s_secret_of (S.tenant);
    char *other_old = s_secret_of (other);
    char *old_token = s_token ("u_rotation", old);
    char mask[16];
    snprintf (mask, sizeof mask, "…%s", old + 60);

    /* GET: that a secret exists, its mask and its age; never the secret */
    s_http ("GET", "/v1/admin/user-token-secret", S.admin_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    assert_null (strstr (r.body, old));
    json_t *info = json_loads (r.body, 0, NULL);
    assert_non_null (info);
    assert_string_equal (s_str (info, "masked"), mask);
    assert_null (json_object_get (info, "secret"));
    int64_t created_at = json_integer_value (json_object_get (info, "rotated_at"));
    assert_true (created_at > 0);
    json_decref (info);

    /* the old token works, and the gateway now caches the old secret */
    assert_int_equal (s_user_status (old_token), 200);
    assert_int_equal (s_user_status (old_token), 200);

    /* no key, a user token for a key, unknown input: refused, nothing rotated */
    s_http ("POST", "/v1/admin/user-token-secret", NULL, "{}", NULL, 0, &r);
    assert_int_equal (r.status, 401);
    assert_non_null (strstr (r.body, "\"error\""));
    s_http ("GET", "/v1/admin/user-token-secret", NULL, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 401);
    s_http ("POST", "/v1/admin/user-token-secret", old_token, "{}", NULL, 0, &r);
    assert_int_equal (r.status, 401);
    s_http ("POST", "/v1/admin/user-token-secret", S.admin_key, "{\"secret\":\"mine\"}", NULL, 0,
            &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"secret\""));
    s_http ("PUT", "/v1/admin/user-token-secret", S.admin_key, "{}", NULL, 0, &r);
    assert_int_equal (r.status, 405);

    /* another tenant's key: rotates that tenant's secret, not this one's,
       and cannot name this tenant */
    char path[256];
    snprintf (path, sizeof path, "/v1/admin/user-token-secret?tenant_id=%s", S.tenant);
    s_http ("POST", path, other_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 400);
    s_http ("POST", "/v1/admin/user-token-secret", other_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    json_t *theirs = json_loads (r.body, 0, NULL);
    assert_non_null (theirs);
    assert_string_not_equal (s_str (theirs, "secret"), other_old);
    assert_string_not_equal (s_str (theirs, "secret"), old);
    json_decref (theirs);
    char *still = s_secret_of (S.tenant);
    assert_string_equal (still, old);
    free (still);
    assert_int_equal (s_user_status (old_token), 200);

    /* rotate: the new secret, shown once, not to be cached */
    s_http ("POST", "/v1/admin/user-token-secret", S.admin_key, "{}", NULL, 0, &r);
    if (r.status != 200)
        print_message ("POST /v1/admin/user-token-secret: %s\n", r.body);
    assert_int_equal (r.status, 200);
    assert_non_null (strcasestr (r.headers, "Cache-Control: no-store"));
    json_t *rotated = json_loads (r.body, 0, NULL);
    assert_non_null (rotated);
    char *fresh = strdup (s_str (rotated, "secret"));
    assert_int_equal (strlen (fresh), 64);
    assert_int_equal (strspn (fresh, "0123456789abcdef"), 64);
    assert_string_not_equal (fresh, old);
    char fresh_mask[16];
    snprintf (fresh_mask, sizeof fresh_mask, "…%s", fresh + 60);
    assert_string_equal (s_str (rotated, "masked"), fresh_mask);
    assert_true (json_integer_value (json_object_get (rotated, "rotated_at")) >= created_at);
    json_decref (rotated);

    /* at once: the old token refused, one signed with the new secret taken */
    assert_int_equal (s_user_status (old_token), 401);
    char *new_token = s_token ("u_rotation", fresh);
    assert_int_equal (s_user_status (new_token), 200);
    assert_int_equal (s_user_status (old_token), 401);
    char *now = s_secret_of (S.tenant);
    assert_string_equal (now, fresh);
    free (now);
    char *other_now = s_secret_of (other);
    assert_string_not_equal (other_now, fresh);
    free (other_now);

    /* the GET shows the new mask only; the audit log the rotation, masked */
    s_http ("GET", "/v1/admin/user-token-secret", S.admin_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    assert_null (strstr (r.body, fresh));
    assert_non_null (strstr (r.body, fresh_mask));
    s_http ("GET", "/v1/admin/audit", S.admin_key, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"field\":\"user_token_secret\""));
    assert_non_null (strstr (r.body, fresh_mask));
    assert_null (strstr (r.body, fresh));
    assert_null (strstr (r.body, old));

    /* the route has its own label in the metrics */
    s_http ("GET", "/metrics", NULL, NULL, NULL, 0, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "route=\"/v1/admin/user-token-secret\",status=\"200\""));

    /* later tests sign with the tenant's current secret */
    free (S.payer);
    free (S.payee);
    S.payer = s_token ("u_payer", fresh);
    S.payee = s_token ("u_coach", fresh);
    free (new_token);
    free (fresh);
    free (old_token);
    free (other_old);
    free (old);
}

int
main (void)
{
    curl_global_init (CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_paid_session_end_to_end),
        cmocka_unit_test (test_user_token_secret_rotation),
    };
    int rc = cmocka_run_group_tests (tests, s_setup, s_teardown);
    curl_global_cleanup ();
    return rc;
}
