/*  Integration tests of the config service: the actor started in-process
    on tcp://127.0.0.1:*, real PostgreSQL (PPM_TEST_PG_URL), real ZeroMQ.
    Covers plan gating both ways, optimistic concurrency, field violations
    over the wire, secrets (never in replies, audit, logs or the database in
    clear), admin keys, rates, audit, cross-tenant isolation, snapshots,
    config.changed and the rotation of the user-token secret. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>
#include <czmq.h>
#include <libpq-fe.h>
#include <sodium.h>

#include "ppm_events.h"
#include "ppm_log.h"
#include "ppm_rpc.h"
#include "proto/config.pb-c.h"
#include "services/config/config_server.h"
#include "services/config/config_settings.h"

#define SECRET_KEY  "sk_test_51HzSecretValueNeverShown4242"
#define RESTRICTED  "rk_test_51HzRestrictedNeverShown7777"
#define WEBHOOK_SEC "whsec_WebhookSecretNeverShown9999"

static zactor_t *s_server;
static char *s_rpc;
static char *s_pub;
static ppm_rpc_client_t *s_client;
static char s_log_path[512];
static int s_log_fd = -1;

static int
s_setup (void **state)
{
    (void)state;
    const char *pg = getenv ("PPM_TEST_PG_URL");
    if (!pg) {
        fprintf (stderr, "PPM_TEST_PG_URL is not set (run under tests/harness/run-tests.sh)\n");
        return -1;
    }
    const char *tmp = getenv ("PPM_TEST_TMP") ? getenv ("PPM_TEST_TMP") : "/tmp";
    snprintf (s_log_path, sizeof s_log_path, "%s/config-service-%d.log", tmp, getpid ());
    s_log_fd = open (s_log_path, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND, 0600);
    ppm_log_init ("config");
    ppm_log_set_level (PPM_LOG_DEBUG);
    ppm_log_set_fd (s_log_fd);
    uint8_t key[32];
    randombytes_buf (key, sizeof key);
    config_server_args_t args = {.rpc_bind = "tcp://127.0.0.1:*",
                                 .pub_bind = "tcp://127.0.0.1:*",
                                 .pg_url = pg,
                                 .master_key = key};
    s_server = config_server_start (&args);
    if (!s_server)
        return -1;
    zstr_send (s_server, "ENDPOINTS");
    zstr_recvx (s_server, &s_rpc, &s_pub, NULL);
    s_client = ppm_rpc_client_new (s_rpc);
    return s_client ? 0 : -1;
}

static int
s_teardown (void **state)
{
    (void)state;
    ppm_rpc_client_destroy (&s_client);
    zactor_destroy (&s_server);
    zstr_free (&s_rpc);
    zstr_free (&s_pub);
    ppm_log_set_fd (2);
    if (s_log_fd >= 0)
        close (s_log_fd);
    return 0;
}

/* Calls method; returns the status (NULL = OK) and the reply. */
static ppm_status_t *
s_call (const char *method, const char *tenant, const void *msg,
        const ProtobufCMessageDescriptor *reply_type, void *reply_p)
{
    ppm_rpc_req_t req = {.method = method, .tenant = tenant, .timeout_ms = 5000};
    return ppm_rpc_client_call_sync (s_client, &req, (const ProtobufCMessage *)msg, reply_type,
                                     (ProtobufCMessage **)reply_p);
}

static void
s_expect (ppm_status_t *status, ppm_code_t code)
{
    if (ppm_status_code (status) != code)
        fail_msg ("expected %s, got %s: %s", ppm_code_name (code),
                  ppm_code_name (ppm_status_code (status)), ppm_status_message (status));
    ppm_status_destroy (&status);
}

static void
s_ok (ppm_status_t *status)
{
    s_expect (status, PPM_OK);
}

/* Creates a tenant; writes its id and admin key. */
static void
s_tenant (const char *plan, char id[64], char key[128])
{
    Ppm__V1__CreateTenantRequest req = PPM__V1__CREATE_TENANT_REQUEST__INIT;
    req.name = "Acme Coaching";
    req.plan = (char *)plan;
    req.actor = "test";
    Ppm__V1__CreateTenantReply *reply = NULL;
    s_ok (s_call ("config.CreateTenant", NULL, &req, &ppm__v1__create_tenant_reply__descriptor,
                  &reply));
    assert_int_equal (strncmp (reply->tenant->tenant_id, "t_", 2), 0);
    assert_string_equal (reply->tenant->plan, plan);
    assert_int_equal (strncmp (reply->admin_key, "ppmak_", 6), 0);
    snprintf (id, 64, "%s", reply->tenant->tenant_id);
    if (key)
        snprintf (key, 128, "%s", reply->admin_key);
    protobuf_c_message_free_unpacked (&reply->base, NULL);
}

static Ppm__V1__Settings *
s_get (const char *tenant)
{
    Ppm__V1__GetSettingsRequest req = PPM__V1__GET_SETTINGS_REQUEST__INIT;
    Ppm__V1__Settings *s = NULL;
    s_ok (s_call ("config.GetSettings", tenant, &req, &ppm__v1__settings__descriptor, &s));
    return s;
}

static ppm_status_t *
s_put (const char *tenant, Ppm__V1__Settings *s, int64_t expected, Ppm__V1__Settings **out)
{
    Ppm__V1__PutSettingsRequest req = PPM__V1__PUT_SETTINGS_REQUEST__INIT;
    req.settings = s;
    req.expected_version = expected;
    req.actor = "admin@acme";
    Ppm__V1__Settings *reply = NULL;
    ppm_status_t *status =
        s_call ("config.PutSettings", tenant, &req, &ppm__v1__settings__descriptor, &reply);
    if (out)
        *out = reply;
    else if (reply)
        protobuf_c_message_free_unpacked (&reply->base, NULL);
    return status;
}

static void
s_set (Ppm__V1__Settings *s, const char *field, const char *value)
{
    const char *error = NULL;
    if (config_settings_set_text (s, field, value, &error))
        fail_msg ("%s=%s: %s", field, value, error);
}

/* An enabled, valid configuration with every secret set. */
static Ppm__V1__Settings *
s_enabled (const char *tenant)
{
    Ppm__V1__Settings *s = s_get (tenant);
    s_set (s, "enabled", "true");
    s_set (s, "terms_url", "https://acme.example/terms");
    s_set (s, "default_call_per_minute", "250");
    s_set (s, "default_chat_per_minute", "100");
    s_set (s, "stripe_secret_key", SECRET_KEY);
    s_set (s, "stripe_restricted_key", RESTRICTED);
    s_set (s, "stripe_webhook_secret", WEBHOOK_SEC);
    s_set (s, "stripe_publishable_key", "pk_test_publishable");
    return s;
}

static void
set_plan (const char *tenant, const char *plan, bool *disabled)
{
    Ppm__V1__SetPlanRequest req = PPM__V1__SET_PLAN_REQUEST__INIT;
    req.plan = (char *)plan;
    req.actor = "ops";
    Ppm__V1__SetPlanReply *reply = NULL;
    s_ok (s_call ("config.SetPlan", tenant, &req, &ppm__v1__set_plan_reply__descriptor, &reply));
    assert_string_equal (reply->tenant->plan, plan);
    if (disabled)
        *disabled = reply->feature_disabled;
    protobuf_c_message_free_unpacked (&reply->base, NULL);
}

static void
test_plan_gating_both_ways (void **state)
{
    (void)state;
    char tenant[64];
    s_tenant ("basic", tenant, NULL);
    Ppm__V1__Settings *s = s_enabled (tenant);
    ppm_status_t *status = s_put (tenant, s, s->version, NULL);
    assert_int_equal (ppm_status_code (status), PPM_FAILED_PRECONDITION);
    assert_non_null (strstr (ppm_status_message (status), "requires the Pro plan"));
    ppm_status_destroy (&status);
    Ppm__V1__Settings *still = s_get (tenant);
    assert_false (still->enabled);
    assert_int_equal (still->version, 1);
    protobuf_c_message_free_unpacked (&still->base, NULL);

    bool disabled = true;
    set_plan (tenant, "pro", &disabled);
    assert_false (disabled);
    Ppm__V1__Settings *after = NULL;
    s_ok (s_put (tenant, s, s->version, &after));
    assert_true (after->enabled);
    assert_int_equal (after->version, 2);
    protobuf_c_message_free_unpacked (&after->base, NULL);

    /* Downgrading switches the feature off. */
    set_plan (tenant, "basic", &disabled);
    assert_true (disabled);
    after = s_get (tenant);
    assert_false (after->enabled);
    assert_string_equal (after->plan, "basic");
    assert_int_equal (after->version, 3);
    protobuf_c_message_free_unpacked (&after->base, NULL);
    protobuf_c_message_free_unpacked (&s->base, NULL);

    Ppm__V1__SetPlanRequest bad = PPM__V1__SET_PLAN_REQUEST__INIT;
    bad.plan = "gold";
    s_expect (s_call ("config.SetPlan", tenant, &bad, &ppm__v1__set_plan_reply__descriptor, NULL),
              PPM_INVALID_ARGUMENT);
}

static void
test_concurrency_conflict (void **state)
{
    (void)state;
    char tenant[64];
    s_tenant ("pro", tenant, NULL);
    Ppm__V1__Settings *a = s_enabled (tenant);
    Ppm__V1__Settings *b = s_get (tenant);
    s_ok (s_put (tenant, a, a->version, NULL));
    s_set (b, "grace_s", "30");
    ppm_status_t *status = s_put (tenant, b, b->version, NULL);
    assert_int_equal (ppm_status_code (status), PPM_ABORTED);
    ppm_status_destroy (&status);
    Ppm__V1__Settings *now = s_get (tenant);
    assert_int_equal (now->grace_s, 60); /* b was not applied */
    s_set (now, "grace_s", "30");
    s_ok (s_put (tenant, now, now->version, NULL));
    protobuf_c_message_free_unpacked (&a->base, NULL);
    protobuf_c_message_free_unpacked (&b->base, NULL);
    protobuf_c_message_free_unpacked (&now->base, NULL);
}

static void
test_violations_over_the_wire (void **state)
{
    (void)state;
    char tenant[64];
    s_tenant ("pro", tenant, NULL);
    Ppm__V1__Settings *s = s_enabled (tenant);
    s_set (s, "enable_for", "video");
    s_set (s, "terms_url", "ftp://x");
    s_set (s, "preset_minutes", "10,10,700");
    s_set (s, "stripe_secret_key", "sk_live_wrongmode");
    s_set (s, "currency", "KWD");
    s_set (s, "default_call_per_minute", "255");
    ppm_status_t *status = s_put (tenant, s, s->version, NULL);
    assert_int_equal (ppm_status_code (status), PPM_INVALID_ARGUMENT);
    const char *fields[] = {"enable_for",        "terms_url",         "preset_minutes[1]",
                            "preset_minutes[2]", "stripe_secret_key", "default_call_per_minute"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!ppm_status_field_find (status, fields[i]))
            fail_msg ("no violation named %s", fields[i]);
    ppm_status_destroy (&status);
    /* Nothing applied. */
    Ppm__V1__Settings *now = s_get (tenant);
    assert_int_equal (now->version, 1);
    assert_string_equal (now->currency, "USD");
    protobuf_c_message_free_unpacked (&now->base, NULL);

    /* A preset below the currency minimum is refused by name (JPY 50). */
    protobuf_c_message_free_unpacked (&s->base, NULL);
    s = s_enabled (tenant);
    s_set (s, "currency", "JPY");
    s_set (s, "default_call_per_minute", "20");
    s_set (s, "default_chat_per_minute", "20");
    s_set (s, "preset_minutes", "2,5,30");
    status = s_put (tenant, s, 0, NULL);
    assert_int_equal (ppm_status_code (status), PPM_INVALID_ARGUMENT);
    assert_non_null (ppm_status_field_find (status, "preset_minutes[0]"));
    assert_null (ppm_status_field_find (status, "preset_minutes[1]")); /* 100 ≥ 50 */
    ppm_status_destroy (&status);
    s_set (s, "preset_minutes", "3,5,30");
    s_ok (s_put (tenant, s, 0, NULL));
    protobuf_c_message_free_unpacked (&s->base, NULL);
}

/* Every setting at its boundaries through the wire: the value just inside
   is stored, the value just outside is refused with that field named and
   nothing applied. */
static void
test_every_setting_at_its_boundaries (void **state)
{
    (void)state;
    char tenant[64];
    s_tenant ("pro", tenant, NULL);
    static const struct {
        const char *field; /* set to good, then to bad */
        const char *good;
        const char *bad;
        const char *named; /* the violation expected for bad */
    } cases[] = {
        {"enable_for", "call", "video", "enable_for"},
        {"rate_scope", "individual", "everyone", "rate_scope"},
        {"default_call_per_minute", "0", "-1", "default_call_per_minute"},
        {"default_chat_per_minute", "99999", "100000000", "default_chat_per_minute"},
        {"stripe_mode", "test", "sandbox", "stripe_mode"},
        {"stripe_secret_key", "sk_test_goodgoodgood", "sk_live_wrongmode", "stripe_secret_key"},
        {"stripe_restricted_key", "rk_test_goodgood", "sk_test_notrestricted",
         "stripe_restricted_key"},
        {"stripe_publishable_key", "pk_test_good", "pk_live_bad", "stripe_publishable_key"},
        {"stripe_webhook_secret", "whsec_good", "whsecgood", "stripe_webhook_secret"},
        {"terms_url", "http://a.example/t", "mailto:a@example.com", "terms_url"},
        {"preset_minutes", "1,2,3,4,5,6", "1,2,3,4,5,6,7", "preset_minutes"},
        {"preset_minutes", "120", "0", "preset_minutes[0]"},
        {"currency", "JPY", "XYZ", "currency"},
        {"billing_mode", "authorize", "postpaid", "billing_mode"},
        {"rounding", "second", "hour", "rounding"},
        {"warning_marks_s", "3600,1", "3601", "warning_marks_s[0]"},
        {"grace_s", "600", "601", "grace_s"},
        {"session_ttl_s", "86400", "59", "session_ttl_s"},
        {"max_minutes_per_purchase", "240", "0", "max_minutes_per_purchase"},
        {"max_session_minutes", "1440", "1441", "max_session_minutes"},
        {"max_concurrent_sessions", "100", "101", "max_concurrent_sessions"},
        {"free_trial_minutes", "60", "61", "free_trial_minutes"},
        {"cors_allowed_origins", "https://a.example:8443", "https://a.example/x",
         "cors_allowed_origins[0]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Ppm__V1__Settings *s = s_enabled (tenant);
        s_set (s, "default_call_per_minute", "100"); /* fits every currency here */
        s_set (s, "default_chat_per_minute", "100");
        s_set (s, "preset_minutes", "1,10");
        s_set (s, cases[i].field, cases[i].good);
        Ppm__V1__Settings *stored = NULL;
        ppm_status_t *status = s_put (tenant, s, 0, &stored);
        if (status)
            fail_msg ("%s=%s refused: %s", cases[i].field, cases[i].good,
                      ppm_status_field_count (status) ? ppm_status_field_description (status, 0)
                                                      : ppm_status_message (status));
        int64_t version = stored->version;
        protobuf_c_message_free_unpacked (&stored->base, NULL);
        s_set (s, cases[i].field, cases[i].bad);
        status = s_put (tenant, s, 0, NULL);
        if (ppm_status_code (status) != PPM_INVALID_ARGUMENT ||
            !ppm_status_field_find (status, cases[i].named))
            fail_msg ("%s=%s: expected a violation on %s, got %s", cases[i].field, cases[i].bad,
                      cases[i].named, ppm_code_name (ppm_status_code (status)));
        ppm_status_destroy (&status);
        Ppm__V1__Settings *now = s_get (tenant);
        assert_int_equal (now->version, version); /* nothing applied */
        protobuf_c_message_free_unpacked (&now->base, NULL);
        protobuf_c_message_free_unpacked (&s->base, NULL);
    }
}

static bool
s_contains (const void *data, size_t size, const char *needle)
{
    return data && memmem (data, size, needle, strlen (needle)) != NULL;
}

static void
test_secrets_never_leak (void **state)
{
    (void)state;
    char tenant[64];
    s_tenant ("pro", tenant, NULL);
    Ppm__V1__Settings *s = s_enabled (tenant);
    Ppm__V1__Settings *reply = NULL;
    s_ok (s_put (tenant, s, s->version, &reply));
    /* Replies to admins: masked. */
    size_t size = ppm__v1__settings__get_packed_size (reply);
    uint8_t *buf = malloc (size);
    ppm__v1__settings__pack (reply, buf);
    const char *secrets[] = {SECRET_KEY, RESTRICTED, WEBHOOK_SEC, "NeverShown"};
    for (size_t i = 0; i < 4; i++)
        assert_false (s_contains (buf, size, secrets[i]));
    free (buf);
    assert_string_equal (reply->stripe_secret_key, "sk_test_…4242");
    assert_string_equal (reply->stripe_publishable_key, "pk_test_publishable");

    /* Sending the masks back keeps the secrets. */
    s_set (reply, "grace_s", "45");
    s_ok (s_put (tenant, reply, reply->version, NULL));
    protobuf_c_message_free_unpacked (&reply->base, NULL);
    Ppm__V1__GetSecretsRequest greq = PPM__V1__GET_SECRETS_REQUEST__INIT;
    Ppm__V1__Secrets *secrets_reply = NULL;
    s_ok (
        s_call ("config.GetSecrets", tenant, &greq, &ppm__v1__secrets__descriptor, &secrets_reply));
    assert_string_equal (secrets_reply->stripe_secret_key, SECRET_KEY);
    assert_string_equal (secrets_reply->stripe_restricted_key, RESTRICTED);
    assert_string_equal (secrets_reply->stripe_webhook_secret, WEBHOOK_SEC);
    assert_string_equal (secrets_reply->stripe_mode, "test");
    protobuf_c_message_free_unpacked (&secrets_reply->base, NULL);

    /* The audit log: masked. */
    Ppm__V1__ListAuditRequest areq = PPM__V1__LIST_AUDIT_REQUEST__INIT;
    Ppm__V1__ListAuditReply *audit = NULL;
    s_ok (
        s_call ("config.ListAudit", tenant, &areq, &ppm__v1__list_audit_reply__descriptor, &audit));
    bool saw_key = false;
    for (size_t i = 0; i < audit->n_entries; i++) {
        const Ppm__V1__AuditEntry *e = audit->entries[i];
        for (size_t k = 0; k < 4; k++) {
            assert_null (strstr (e->old_value, secrets[k]));
            assert_null (strstr (e->new_value, secrets[k]));
        }
        if (streq (e->field, "stripe_secret_key")) {
            saw_key = true;
            assert_string_equal (e->new_value, "sk_test_…4242");
            assert_string_equal (e->actor, "admin@acme");
        }
        if (streq (e->field, "grace_s")) {
            assert_string_equal (e->old_value, "60");
            assert_string_equal (e->new_value, "45");
        }
    }
    assert_true (saw_key);
    protobuf_c_message_free_unpacked (&audit->base, NULL);

    /* The database: no plaintext in any column of the tenant's rows. */
    PGconn *db = PQconnectdb (getenv ("PPM_TEST_PG_URL"));
    assert_int_equal (PQstatus (db), CONNECTION_OK);
    const char *params[] = {tenant};
    PGresult *res = PQexecParams (db,
                                  "SELECT data, stripe_secret_key, stripe_restricted_key, "
                                  "stripe_webhook_secret, user_token_secret FROM config.settings "
                                  "WHERE tenant_id = $1",
                                  1, NULL, params, NULL, NULL, 1 /* binary */);
    assert_int_equal (PQresultStatus (res), PGRES_TUPLES_OK);
    assert_int_equal (PQntuples (res), 1);
    for (int col = 0; col < 5; col++) {
        for (size_t k = 0; k < 4; k++)
            assert_false (s_contains (PQgetvalue (res, 0, col), (size_t)PQgetlength (res, 0, col),
                                      secrets[k]));
    }
    assert_false (PQgetisnull (res, 0, 1)); /* it is there, sealed */
    PQclear (res);
    res = PQexecParams (db,
                        "SELECT string_agg(old_value || new_value, ' ') FROM config.audit "
                        "WHERE tenant_id = $1",
                        1, NULL, params, NULL, NULL, 0);
    for (size_t k = 0; k < 4; k++)
        assert_null (strstr (PQgetvalue (res, 0, 0), secrets[k]));
    PQclear (res);
    PQfinish (db);

    /* The logs. */
    FILE *log = fopen (s_log_path, "r");
    assert_non_null (log);
    char line[8192];
    size_t lines = 0;
    while (fgets (line, sizeof line, log)) {
        lines++;
        for (size_t k = 0; k < 4; k++)
            if (strstr (line, secrets[k]))
                fail_msg ("secret in log line: %s", line);
    }
    fclose (log);
    assert_true (lines > 0);

    /* Clearing a secret. */
    Ppm__V1__Settings *now = s_get (tenant);
    Ppm__V1__PutSettingsRequest req = PPM__V1__PUT_SETTINGS_REQUEST__INIT;
    char *clear[] = {"stripe_restricted_key"};
    req.settings = now;
    req.clear_secrets = clear;
    req.n_clear_secrets = 1;
    Ppm__V1__Settings *cleared = NULL;
    s_ok (s_call ("config.PutSettings", tenant, &req, &ppm__v1__settings__descriptor, &cleared));
    assert_string_equal (cleared->stripe_restricted_key, "");
    assert_string_equal (cleared->stripe_secret_key, "sk_test_…4242");
    protobuf_c_message_free_unpacked (&cleared->base, NULL);
    protobuf_c_message_free_unpacked (&now->base, NULL);
    protobuf_c_message_free_unpacked (&s->base, NULL);
}

static void
test_admin_keys (void **state)
{
    (void)state;
    char tenant[64], key[128];
    s_tenant ("free", tenant, key);
    Ppm__V1__VerifyAdminKeyRequest vreq = PPM__V1__VERIFY_ADMIN_KEY_REQUEST__INIT;
    vreq.admin_key = key;
    Ppm__V1__VerifyAdminKeyReply *who = NULL;
    s_ok (s_call ("config.VerifyAdminKey", NULL, &vreq,
                  &ppm__v1__verify_admin_key_reply__descriptor, &who));
    assert_string_equal (who->tenant_id, tenant);
    char first_id[64];
    snprintf (first_id, sizeof first_id, "%s", who->key_id);
    protobuf_c_message_free_unpacked (&who->base, NULL);

    /* A second key; revoking the first leaves the second valid. */
    Ppm__V1__CreateAdminKeyRequest creq = PPM__V1__CREATE_ADMIN_KEY_REQUEST__INIT;
    creq.label = "ci";
    Ppm__V1__CreateAdminKeyReply *second = NULL;
    s_ok (s_call ("config.CreateAdminKey", tenant, &creq,
                  &ppm__v1__create_admin_key_reply__descriptor, &second));
    Ppm__V1__RevokeAdminKeyRequest rreq = PPM__V1__REVOKE_ADMIN_KEY_REQUEST__INIT;
    rreq.key_id = first_id;
    s_ok (
        s_call ("config.RevokeAdminKey", tenant, &rreq, &ppm__v1__config_empty__descriptor, NULL));
    s_expect (
        s_call ("config.RevokeAdminKey", tenant, &rreq, &ppm__v1__config_empty__descriptor, NULL),
        PPM_NOT_FOUND);
    s_expect (s_call ("config.VerifyAdminKey", NULL, &vreq,
                      &ppm__v1__verify_admin_key_reply__descriptor, NULL),
              PPM_UNAUTHENTICATED);
    vreq.admin_key = second->admin_key;
    s_ok (s_call ("config.VerifyAdminKey", NULL, &vreq,
                  &ppm__v1__verify_admin_key_reply__descriptor, &who));
    assert_string_equal (who->tenant_id, tenant);
    protobuf_c_message_free_unpacked (&who->base, NULL);
    /* A tampered key fails. */
    char tampered[128];
    snprintf (tampered, sizeof tampered, "%s", second->admin_key);
    tampered[strlen (tampered) - 1] = tampered[strlen (tampered) - 1] == '0' ? '1' : '0';
    vreq.admin_key = tampered;
    s_expect (s_call ("config.VerifyAdminKey", NULL, &vreq,
                      &ppm__v1__verify_admin_key_reply__descriptor, NULL),
              PPM_UNAUTHENTICATED);
    vreq.admin_key = "garbage";
    s_expect (s_call ("config.VerifyAdminKey", NULL, &vreq,
                      &ppm__v1__verify_admin_key_reply__descriptor, NULL),
              PPM_UNAUTHENTICATED);
    /* The DB holds the hash, not the key. */
    PGconn *db = PQconnectdb (getenv ("PPM_TEST_PG_URL"));
    const char *params[] = {tenant};
    PGresult *res =
        PQexecParams (db, "SELECT key_id, hash, label FROM config.admin_keys WHERE tenant_id = $1",
                      1, NULL, params, NULL, NULL, 1);
    assert_int_equal (PQntuples (res), 2);
    const char *secret_part = second->admin_key + 6 + 16 + 1;
    for (int r = 0; r < 2; r++)
        for (int c = 0; c < 3; c++)
            assert_false (
                s_contains (PQgetvalue (res, r, c), (size_t)PQgetlength (res, r, c), secret_part));
    PQclear (res);
    PQfinish (db);
    protobuf_c_message_free_unpacked (&second->base, NULL);
}

static void
test_rates_and_pagination (void **state)
{
    (void)state;
    char tenant[64];
    s_tenant ("pro", tenant, NULL);
    Ppm__V1__UserRates rates = PPM__V1__USER_RATES__INIT;
    Ppm__V1__PutUserRatesRequest put = PPM__V1__PUT_USER_RATES_REQUEST__INIT;
    put.rates = &rates;
    put.actor = "admin";
    char payee[32];
    for (int i = 0; i < 5; i++) {
        snprintf (payee, sizeof payee, "coach_%d", i);
        rates.payee = payee;
        rates.call_set = true;
        rates.call_per_minute = 100 + i * 10;
        rates.chat_set = i % 2;
        rates.chat_per_minute = 50;
        s_ok (s_call ("config.PutUserRates", tenant, &put, &ppm__v1__put_rates_reply__descriptor,
                      NULL));
    }
    /* USD minimum 0.50: with presets 10,30,60 a rate of 4 makes 10 min 0.40. */
    rates.payee = "cheap";
    rates.call_per_minute = 4;
    ppm_status_t *status =
        s_call ("config.PutUserRates", tenant, &put, &ppm__v1__put_rates_reply__descriptor, NULL);
    assert_int_equal (ppm_status_code (status), PPM_INVALID_ARGUMENT);
    const char *why = ppm_status_field_find (status, "call_per_minute");
    assert_non_null (why);
    assert_non_null (strstr (why, "preset 10 minutes"));
    ppm_status_destroy (&status);
    rates.call_per_minute = -5;
    s_expect (
        s_call ("config.PutUserRates", tenant, &put, &ppm__v1__put_rates_reply__descriptor, NULL),
        PPM_INVALID_ARGUMENT);
    rates.payee = "bad payee";
    rates.call_per_minute = 100;
    s_expect (
        s_call ("config.PutUserRates", tenant, &put, &ppm__v1__put_rates_reply__descriptor, NULL),
        PPM_INVALID_ARGUMENT);

    Ppm__V1__GetUserRatesRequest get = PPM__V1__GET_USER_RATES_REQUEST__INIT;
    get.payee = "coach_3";
    Ppm__V1__UserRates *got = NULL;
    s_ok (s_call ("config.GetUserRates", tenant, &get, &ppm__v1__user_rates__descriptor, &got));
    assert_true (got->call_set);
    assert_int_equal (got->call_per_minute, 130);
    assert_true (got->chat_set);
    protobuf_c_message_free_unpacked (&got->base, NULL);

    /* Pages of 2: 5 payees in 3 pages, each once. */
    Ppm__V1__ListUserRatesRequest list = PPM__V1__LIST_USER_RATES_REQUEST__INIT;
    list.limit = 2;
    char cursor[64] = "";
    int seen = 0, pages = 0;
    do {
        list.cursor = cursor;
        Ppm__V1__ListUserRatesReply *page = NULL;
        s_ok (s_call ("config.ListUserRates", tenant, &list,
                      &ppm__v1__list_user_rates_reply__descriptor, &page));
        seen += (int)page->n_rates;
        pages++;
        snprintf (cursor, sizeof cursor, "%s", page->next_cursor);
        protobuf_c_message_free_unpacked (&page->base, NULL);
    } while (*cursor && pages < 10);
    assert_int_equal (seen, 5);
    assert_int_equal (pages, 3);

    /* Both blank deletes the row. */
    rates.payee = "coach_0";
    rates.call_set = false;
    rates.chat_set = false;
    s_ok (
        s_call ("config.PutUserRates", tenant, &put, &ppm__v1__put_rates_reply__descriptor, NULL));
    get.payee = "coach_0";
    s_ok (s_call ("config.GetUserRates", tenant, &get, &ppm__v1__user_rates__descriptor, &got));
    assert_false (got->call_set);
    assert_false (got->chat_set);
    protobuf_c_message_free_unpacked (&got->base, NULL);

    /* Roles, sorted by priority. */
    Ppm__V1__RoleRates role = PPM__V1__ROLE_RATES__INIT;
    Ppm__V1__PutRoleRatesRequest rput = PPM__V1__PUT_ROLE_RATES_REQUEST__INIT;
    rput.rates = &role;
    role.role = "coach";
    role.call_set = true;
    role.call_per_minute = 200;
    role.priority = 1;
    s_ok (
        s_call ("config.PutRoleRates", tenant, &rput, &ppm__v1__put_rates_reply__descriptor, NULL));
    role.role = "senior";
    role.priority = 5;
    s_ok (
        s_call ("config.PutRoleRates", tenant, &rput, &ppm__v1__put_rates_reply__descriptor, NULL));
    role.priority = 5000;
    s_expect (
        s_call ("config.PutRoleRates", tenant, &rput, &ppm__v1__put_rates_reply__descriptor, NULL),
        PPM_INVALID_ARGUMENT);
    Ppm__V1__GetRoleRatesRequest rget = PPM__V1__GET_ROLE_RATES_REQUEST__INIT;
    Ppm__V1__RoleRatesList *roles = NULL;
    s_ok (s_call ("config.GetRoleRates", tenant, &rget, &ppm__v1__role_rates_list__descriptor,
                  &roles));
    assert_int_equal (roles->n_roles, 2);
    assert_string_equal (roles->roles[0]->role, "senior");
    protobuf_c_message_free_unpacked (&roles->base, NULL);

    /* A settings change that would break an existing individual rate is
       refused, naming the preset. */
    Ppm__V1__Settings *s = s_get (tenant);
    s_set (s, "preset_minutes", "1,10");
    s_set (s, "default_call_per_minute", "100");
    rates.payee = "tiny";
    rates.call_set = true;
    rates.call_per_minute = 10; /* 10 × 10 = 1.00 fine with 10,30,60 */
    s_ok (
        s_call ("config.PutUserRates", tenant, &put, &ppm__v1__put_rates_reply__descriptor, NULL));
    status = s_put (tenant, s, 0, NULL);
    assert_int_equal (ppm_status_code (status), PPM_INVALID_ARGUMENT);
    assert_non_null (ppm_status_field_find (status, "preset_minutes[0]"));
    ppm_status_destroy (&status);
    protobuf_c_message_free_unpacked (&s->base, NULL);
}

static void
test_cross_tenant_impossible (void **state)
{
    (void)state;
    char a[64], b[64], b_key[128];
    s_tenant ("pro", a, NULL);
    s_tenant ("pro", b, b_key);
    Ppm__V1__UserRates rates = PPM__V1__USER_RATES__INIT;
    rates.payee = "shared_name";
    rates.call_set = true;
    rates.call_per_minute = 999;
    Ppm__V1__PutUserRatesRequest put = PPM__V1__PUT_USER_RATES_REQUEST__INIT;
    put.rates = &rates;
    s_ok (s_call ("config.PutUserRates", b, &put, &ppm__v1__put_rates_reply__descriptor, NULL));
    /* The message names B, the envelope A: refused. */
    put.tenant_id = b;
    s_expect (s_call ("config.PutUserRates", a, &put, &ppm__v1__put_rates_reply__descriptor, NULL),
              PPM_PERMISSION_DENIED);
    Ppm__V1__GetSecretsRequest sreq = PPM__V1__GET_SECRETS_REQUEST__INIT;
    sreq.tenant_id = b;
    s_expect (s_call ("config.GetSecrets", a, &sreq, &ppm__v1__secrets__descriptor, NULL),
              PPM_PERMISSION_DENIED);
    /* A sees its own (blank) rates under the same payee name, not B's. */
    Ppm__V1__GetUserRatesRequest get = PPM__V1__GET_USER_RATES_REQUEST__INIT;
    get.payee = "shared_name";
    Ppm__V1__UserRates *got = NULL;
    s_ok (s_call ("config.GetUserRates", a, &get, &ppm__v1__user_rates__descriptor, &got));
    assert_false (got->call_set);
    protobuf_c_message_free_unpacked (&got->base, NULL);
    /* B's admin key cannot be revoked through A. */
    Ppm__V1__VerifyAdminKeyRequest vreq = PPM__V1__VERIFY_ADMIN_KEY_REQUEST__INIT;
    vreq.admin_key = b_key;
    Ppm__V1__VerifyAdminKeyReply *who = NULL;
    s_ok (s_call ("config.VerifyAdminKey", NULL, &vreq,
                  &ppm__v1__verify_admin_key_reply__descriptor, &who));
    Ppm__V1__RevokeAdminKeyRequest rreq = PPM__V1__REVOKE_ADMIN_KEY_REQUEST__INIT;
    rreq.key_id = who->key_id;
    s_expect (s_call ("config.RevokeAdminKey", a, &rreq, &ppm__v1__config_empty__descriptor, NULL),
              PPM_NOT_FOUND);
    protobuf_c_message_free_unpacked (&who->base, NULL);
    s_ok (s_call ("config.VerifyAdminKey", NULL, &vreq,
                  &ppm__v1__verify_admin_key_reply__descriptor, NULL));
    /* No tenant at all, or an unknown one. */
    Ppm__V1__GetSettingsRequest gs = PPM__V1__GET_SETTINGS_REQUEST__INIT;
    s_expect (s_call ("config.GetSettings", NULL, &gs, &ppm__v1__settings__descriptor, NULL),
              PPM_INVALID_ARGUMENT);
    s_expect (
        s_call ("config.GetSettings", "t_doesnotexist", &gs, &ppm__v1__settings__descriptor, NULL),
        PPM_NOT_FOUND);
    /* A's audit log holds nothing of B. */
    Ppm__V1__ListAuditRequest areq = PPM__V1__LIST_AUDIT_REQUEST__INIT;
    Ppm__V1__ListAuditReply *audit = NULL;
    s_ok (s_call ("config.ListAudit", a, &areq, &ppm__v1__list_audit_reply__descriptor, &audit));
    for (size_t i = 0; i < audit->n_entries; i++)
        assert_null (strstr (audit->entries[i]->field, "shared_name"));
    protobuf_c_message_free_unpacked (&audit->base, NULL);
}

static void
s_on_event (const ppm_event_t *event, void *arg)
{
    Ppm__V1__ConfigChanged **out = arg;
    *out = ppm__v1__config_changed__unpack (NULL, event->size, event->payload);
}

static void
test_events_snapshot_token_secret (void **state)
{
    (void)state;
    char tenant[64];
    s_tenant ("pro", tenant, NULL);
    ppm_events_sub_t *sub = ppm_events_sub_new (s_pub);
    char topic[128];
    snprintf (topic, sizeof topic, "config.changed.%s", tenant);
    ppm_events_subscribe (sub, topic);
    zclock_sleep (200); /* slow joiner */
    Ppm__V1__Settings *s = s_enabled (tenant);
    s_ok (s_put (tenant, s, s->version, NULL));
    /* The tenant's creation published an event too, after its reply: on a
       busy machine it can reach this late subscriber first. */
    Ppm__V1__ConfigChanged *event = NULL;
    for (int i = 0; i < 5; i++) {
        if (event)
            ppm__v1__config_changed__free_unpacked (event, NULL);
        event = NULL;
        assert_int_equal (ppm_events_sub_wait (sub, 3000, s_on_event, &event), 1);
        assert_non_null (event);
        assert_string_equal (event->tenant_id, tenant);
        if (event->settings_version >= 2)
            break;
    }
    assert_int_equal (event->settings_version, 2);
    int64_t revision = event->revision;
    ppm__v1__config_changed__free_unpacked (event, NULL);
    ppm_events_sub_destroy (&sub);

    Ppm__V1__GetSnapshotRequest sreq = PPM__V1__GET_SNAPSHOT_REQUEST__INIT;
    Ppm__V1__Snapshot *snap = NULL;
    s_ok (s_call ("config.GetSnapshot", tenant, &sreq, &ppm__v1__snapshot__descriptor, &snap));
    assert_int_equal (snap->revision, revision);
    assert_string_equal (snap->plan, "pro");
    assert_true (snap->settings->enabled);
    assert_string_equal (snap->settings->stripe_secret_key, "");
    assert_string_equal (snap->settings->stripe_webhook_secret, "");
    protobuf_c_message_free_unpacked (&snap->base, NULL);

    Ppm__V1__ListRevisionsRequest lreq = PPM__V1__LIST_REVISIONS_REQUEST__INIT;
    Ppm__V1__ListRevisionsReply *revs = NULL;
    s_ok (s_call ("config.ListRevisions", NULL, &lreq, &ppm__v1__list_revisions_reply__descriptor,
                  &revs));
    bool found = false;
    for (size_t i = 0; i < revs->n_tenants; i++)
        if (streq (revs->tenants[i]->tenant_id, tenant))
            found = revs->tenants[i]->revision == revision;
    assert_true (found);
    protobuf_c_message_free_unpacked (&revs->base, NULL);

    Ppm__V1__GetUserTokenSecretRequest treq = PPM__V1__GET_USER_TOKEN_SECRET_REQUEST__INIT;
    Ppm__V1__UserTokenSecret *token = NULL;
    s_ok (s_call ("config.GetUserTokenSecret", tenant, &treq,
                  &ppm__v1__user_token_secret__descriptor, &token));
    assert_int_equal (strlen (token->secret), 64);
    protobuf_c_message_free_unpacked (&token->base, NULL);

    Ppm__V1__ListTenantsRequest tl = PPM__V1__LIST_TENANTS_REQUEST__INIT;
    tl.limit = 1000;
    Ppm__V1__ListTenantsReply *tenants = NULL;
    s_ok (s_call ("config.ListTenants", NULL, &tl, &ppm__v1__list_tenants_reply__descriptor,
                  &tenants));
    assert_true (tenants->n_tenants >= 1);
    protobuf_c_message_free_unpacked (&tenants->base, NULL);
    protobuf_c_message_free_unpacked (&s->base, NULL);

    /* A malformed payload is refused, the server stays up. */
    ppm_rpc_req_t req = {.method = "config.GetSettings", .tenant = tenant, .timeout_ms = 2000};
    Ppm__V1__Tenant wrong = PPM__V1__TENANT__INIT;
    wrong.name = "\xff\xfe not a settings request";
    ppm_status_t *status = ppm_rpc_client_call_sync (s_client, &req, &wrong.base, NULL, NULL);
    (void)status; /* may parse (unknown fields): either answer is fine */
    ppm_status_destroy (&status);
    Ppm__V1__Settings *alive = s_get (tenant);
    protobuf_c_message_free_unpacked (&alive->base, NULL);
}

/* The user-token secret of tenant (caller frees) and when it was made. */
static char *
s_token_secret (const char *tenant, int64_t *rotated_at_ms)
{
    Ppm__V1__GetUserTokenSecretRequest req = PPM__V1__GET_USER_TOKEN_SECRET_REQUEST__INIT;
    Ppm__V1__UserTokenSecret *reply = NULL;
    s_ok (s_call ("config.GetUserTokenSecret", tenant, &req,
                  &ppm__v1__user_token_secret__descriptor, &reply));
    char *secret = strdup (reply->secret);
    if (rotated_at_ms)
        *rotated_at_ms = reply->rotated_at_ms;
    protobuf_c_message_free_unpacked (&reply->base, NULL);
    return secret;
}

static Ppm__V1__UserTokenSecretInfo *
s_token_info (const char *tenant)
{
    Ppm__V1__GetUserTokenSecretInfoRequest req = PPM__V1__GET_USER_TOKEN_SECRET_INFO_REQUEST__INIT;
    Ppm__V1__UserTokenSecretInfo *info = NULL;
    s_ok (s_call ("config.GetUserTokenSecretInfo", tenant, &req,
                  &ppm__v1__user_token_secret_info__descriptor, &info));
    return info;
}

/* "…" + the last 4 characters of secret. */
static void
s_mask_of (const char *secret, char out[16])
{
    snprintf (out, 16, "…%s", secret + strlen (secret) - 4);
}

static void
test_user_token_secret_rotation (void **state)
{
    (void)state;
    char a[64], b[64];
    s_tenant ("pro", a, NULL);
    s_tenant ("pro", b, NULL);
    int64_t created_at = 0;
    char *old_a = s_token_secret (a, &created_at);
    char *old_b = s_token_secret (b, NULL);
    assert_int_equal (strlen (old_a), 64);
    assert_true (created_at > 0);

    /* Admins see the mask and the age only. */
    char mask[16];
    s_mask_of (old_a, mask);
    Ppm__V1__UserTokenSecretInfo *info = s_token_info (a);
    assert_string_equal (info->masked, mask);
    assert_int_equal (info->rotated_at_ms, created_at);
    protobuf_c_message_free_unpacked (&info->base, NULL);

    ppm_events_sub_t *sub = ppm_events_sub_new (s_pub);
    char topic[128];
    snprintf (topic, sizeof topic, "config.changed.%s", a);
    ppm_events_subscribe (sub, topic);
    zclock_sleep (200); /* slow joiner */

    Ppm__V1__RotateUserTokenSecretRequest req = PPM__V1__ROTATE_USER_TOKEN_SECRET_REQUEST__INIT;
    req.actor = "admin@acme";
    Ppm__V1__RotateUserTokenSecretReply *rotated = NULL;
    s_ok (s_call ("config.RotateUserTokenSecret", a, &req,
                  &ppm__v1__rotate_user_token_secret_reply__descriptor, &rotated));
    char *new_a = strdup (rotated->secret);
    assert_int_equal (strlen (new_a), 64);
    assert_int_equal (strspn (new_a, "0123456789abcdef"), 64);
    assert_string_not_equal (new_a, old_a);
    char new_mask[16];
    s_mask_of (new_a, new_mask);
    assert_string_equal (rotated->masked, new_mask);
    assert_true (rotated->rotated_at_ms >= created_at);
    int64_t rotated_at = rotated->rotated_at_ms;
    protobuf_c_message_free_unpacked (&rotated->base, NULL);

    /* The gateways hear of it: what = user_token_secret. */
    Ppm__V1__ConfigChanged *event = NULL;
    assert_int_equal (ppm_events_sub_wait (sub, 3000, s_on_event, &event), 1);
    assert_non_null (event);
    assert_string_equal (event->tenant_id, a);
    assert_string_equal (event->what, "user_token_secret");
    ppm__v1__config_changed__free_unpacked (event, NULL);
    ppm_events_sub_destroy (&sub);

    /* The services get the new one; the other tenant keeps its own. */
    int64_t now_at = 0;
    char *now_a = s_token_secret (a, &now_at);
    assert_string_equal (now_a, new_a);
    assert_int_equal (now_at, rotated_at);
    free (now_a);
    char *now_b = s_token_secret (b, NULL);
    assert_string_equal (now_b, old_b);
    free (now_b);
    info = s_token_info (a);
    assert_string_equal (info->masked, new_mask);
    assert_int_equal (info->rotated_at_ms, rotated_at);
    protobuf_c_message_free_unpacked (&info->base, NULL);

    /* The audit log: one entry, masked both ways; none for tenant B. */
    Ppm__V1__ListAuditRequest areq = PPM__V1__LIST_AUDIT_REQUEST__INIT;
    Ppm__V1__ListAuditReply *audit = NULL;
    s_ok (s_call ("config.ListAudit", a, &areq, &ppm__v1__list_audit_reply__descriptor, &audit));
    size_t seen = 0;
    for (size_t i = 0; i < audit->n_entries; i++) {
        const Ppm__V1__AuditEntry *e = audit->entries[i];
        assert_null (strstr (e->old_value, old_a));
        assert_null (strstr (e->new_value, new_a));
        assert_null (strstr (e->new_value, old_a));
        if (streq (e->field, "user_token_secret")) {
            seen++;
            assert_string_equal (e->actor, "admin@acme");
            assert_string_equal (e->old_value, mask);
            assert_string_equal (e->new_value, new_mask);
        }
    }
    assert_int_equal (seen, 1);
    assert_string_equal (audit->entries[0]->field, "user_token_secret");
    protobuf_c_message_free_unpacked (&audit->base, NULL);
    s_ok (s_call ("config.ListAudit", b, &areq, &ppm__v1__list_audit_reply__descriptor, &audit));
    for (size_t i = 0; i < audit->n_entries; i++)
        assert_string_not_equal (audit->entries[i]->field, "user_token_secret");
    protobuf_c_message_free_unpacked (&audit->base, NULL);

    /* The database: neither secret in clear (nor hex-decoded) anywhere in
       the tenant's settings row or in the audit table. */
    PGconn *db = PQconnectdb (getenv ("PPM_TEST_PG_URL"));
    assert_int_equal (PQstatus (db), CONNECTION_OK);
    const char *params[] = {a};
    PGresult *res = PQexecParams (db, "SELECT s::text FROM config.settings s WHERE tenant_id = $1",
                                  1, NULL, params, NULL, NULL, 0);
    assert_int_equal (PQntuples (res), 1);
    const char *row = PQgetvalue (res, 0, 0);
    assert_null (strstr (row, new_a));
    assert_null (strstr (row, old_a));
    PQclear (res);
    res = PQexecParams (db, "SELECT user_token_secret FROM config.settings WHERE tenant_id = $1", 1,
                        NULL, params, NULL, NULL, 1 /* binary */);
    assert_int_equal (PQntuples (res), 1);
    assert_false (s_contains (PQgetvalue (res, 0, 0), (size_t)PQgetlength (res, 0, 0), new_a));
    assert_true (PQgetlength (res, 0, 0) > 64); /* sealed: nonce, MAC, tenant, field */
    PQclear (res);
    res = PQexec (db, "SELECT coalesce(string_agg(old_value || new_value, ' '), '') FROM "
                      "config.audit");
    assert_null (strstr (PQgetvalue (res, 0, 0), new_a));
    assert_null (strstr (PQgetvalue (res, 0, 0), old_a));
    PQclear (res);
    PQfinish (db);

    /* The logs. */
    FILE *log = fopen (s_log_path, "r");
    assert_non_null (log);
    char line[8192];
    while (fgets (line, sizeof line, log))
        if (strstr (line, new_a) || strstr (line, old_a))
            fail_msg ("user-token secret in log line: %s", line);
    fclose (log);

    /* Refusals: no tenant, an unknown tenant, envelope and message apart. */
    s_expect (s_call ("config.RotateUserTokenSecret", NULL, &req,
                      &ppm__v1__rotate_user_token_secret_reply__descriptor, &rotated),
              PPM_INVALID_ARGUMENT);
    s_expect (s_call ("config.RotateUserTokenSecret", "t_00000000000000000000", &req,
                      &ppm__v1__rotate_user_token_secret_reply__descriptor, &rotated),
              PPM_NOT_FOUND);
    req.tenant_id = b;
    s_expect (s_call ("config.RotateUserTokenSecret", a, &req,
                      &ppm__v1__rotate_user_token_secret_reply__descriptor, &rotated),
              PPM_PERMISSION_DENIED);
    Ppm__V1__GetUserTokenSecretInfoRequest ireq = PPM__V1__GET_USER_TOKEN_SECRET_INFO_REQUEST__INIT;
    s_expect (s_call ("config.GetUserTokenSecretInfo", "t_00000000000000000000", &ireq,
                      &ppm__v1__user_token_secret_info__descriptor, &info),
              PPM_NOT_FOUND);
    now_b = s_token_secret (b, NULL);
    assert_string_equal (now_b, old_b);
    free (now_b);

    free (old_a);
    free (old_b);
    free (new_a);
}

static void
test_refuses_to_start_without_database (void **state)
{
    (void)state;
    uint8_t key[32] = {0};
    config_server_args_t args = {.rpc_bind = "tcp://127.0.0.1:*",
                                 .pub_bind = "tcp://127.0.0.1:*",
                                 .pg_url = "postgresql://127.0.0.1:1/nothing?connect_timeout=2",
                                 .master_key = key};
    zactor_t *server = config_server_start (&args);
    assert_null (server);
    args.pg_url = getenv ("PPM_TEST_PG_URL");
    args.master_key = NULL;
    server = config_server_start (&args);
    assert_null (server);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_plan_gating_both_ways),
        cmocka_unit_test (test_concurrency_conflict),
        cmocka_unit_test (test_violations_over_the_wire),
        cmocka_unit_test (test_every_setting_at_its_boundaries),
        cmocka_unit_test (test_secrets_never_leak),
        cmocka_unit_test (test_admin_keys),
        cmocka_unit_test (test_rates_and_pagination),
        cmocka_unit_test (test_cross_tenant_impossible),
        cmocka_unit_test (test_events_snapshot_token_secret),
        cmocka_unit_test (test_user_token_secret_rotation),
        cmocka_unit_test (test_refuses_to_start_without_database),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
