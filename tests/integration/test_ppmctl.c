/*  Integration test of ppmctl: the real binary (PPM_BIN_DIR) against the
    config and rate actors started in-process on tcp://127.0.0.1:* with
    real PostgreSQL: every command's --help, tenant creation, settings set
    with per-field errors and a non-zero exit, rates, quotes, --json, a
    user token that verifies with the tenant's secret, and that secret
    shown and rotated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <czmq.h>
#include <jansson.h>
#include <sodium.h>

#include "ppm_jwt.h"
#include "ppm_log.h"
#include "ppm_rpc.h"
#include "proto/config.pb-c.h"
#include "services/config/config_server.h"
#include "services/rate/rate_server.h"

static zactor_t *s_config;
static zactor_t *s_rate;
static char *s_config_rpc;
static char s_tenant[64];

/* Runs ppmctl with args (a shell-quoted string); captures stdout and
   stderr; returns the exit status. */
static int
s_ppmctl (const char *args, char *out, size_t out_size, char *err, size_t err_size)
{
    const char *bin = getenv ("PPM_BIN_DIR");
    const char *tmp = getenv ("PPM_TEST_TMP") ? getenv ("PPM_TEST_TMP") : "/tmp";
    char out_path[512], err_path[512], cmd[4096];
    snprintf (out_path, sizeof out_path, "%s/ppmctl-%d.out", tmp, getpid ());
    snprintf (err_path, sizeof err_path, "%s/ppmctl-%d.err", tmp, getpid ());
    snprintf (cmd, sizeof cmd, "%s/ppmctl %s >%s 2>%s", bin ? bin : "build/bin", args, out_path,
              err_path);
    int rc = system (cmd);
    char *paths[2] = {out_path, err_path};
    char *bufs[2] = {out, err};
    size_t sizes[2] = {out_size, err_size};
    for (int i = 0; i < 2; i++) {
        if (!bufs[i])
            continue;
        FILE *file = fopen (paths[i], "r");
        size_t n = file ? fread (bufs[i], 1, sizes[i] - 1, file) : 0;
        bufs[i][n] = '\0';
        if (file)
            fclose (file);
    }
    return WIFEXITED (rc) ? WEXITSTATUS (rc) : -1;
}

static int
s_setup (void **state)
{
    (void)state;
    ppm_log_init ("ppmctl-test");
    ppm_log_set_level (PPM_LOG_ERROR);
    uint8_t key[32];
    randombytes_buf (key, sizeof key);
    config_server_args_t cargs = {.rpc_bind = "tcp://127.0.0.1:*",
                                  .pub_bind = "tcp://127.0.0.1:*",
                                  .pg_url = getenv ("PPM_TEST_PG_URL"),
                                  .master_key = key};
    s_config = config_server_start (&cargs);
    if (!s_config)
        return -1;
    char *pub = NULL;
    zstr_send (s_config, "ENDPOINTS");
    zstr_recvx (s_config, &s_config_rpc, &pub, NULL);
    rate_server_args_t rargs = {.rpc_bind = "tcp://127.0.0.1:*",
                                .config_endpoint = s_config_rpc,
                                .config_events = pub,
                                .refresh_ms = 200};
    s_rate = rate_server_start (&rargs);
    zstr_free (&pub);
    if (!s_rate)
        return -1;
    zstr_send (s_rate, "ENDPOINT");
    char *rate_rpc = zstr_recv (s_rate);
    setenv ("PPM_CONFIG_ENDPOINT", s_config_rpc, 1);
    setenv ("PPM_RATE_ENDPOINT", rate_rpc, 1);
    zstr_free (&rate_rpc);
    return 0;
}

static int
s_teardown (void **state)
{
    (void)state;
    zactor_destroy (&s_rate);
    zactor_destroy (&s_config);
    zstr_free (&s_config_rpc);
    return 0;
}

static void
test_help_everywhere (void **state)
{
    (void)state;
    const char *commands[] = {"--help",
                              "tenant --help",
                              "admin-key --help",
                              "settings --help",
                              "rates --help",
                              "quote --help",
                              "user-token --help",
                              "user-token-secret --help",
                              "audit --help",
                              "payments --help",
                              NULL};
    char out[8192];
    for (size_t i = 0; commands[i]; i++) {
        assert_int_equal (s_ppmctl (commands[i], out, sizeof out, NULL, 0), 0);
        assert_non_null (strstr (out, "ppmctl"));
    }
    assert_int_equal (s_ppmctl ("frobnicate", NULL, 0, NULL, 0), 2);
    assert_int_equal (s_ppmctl ("payments frobnicate", NULL, 0, NULL, 0), 2);
    assert_int_equal (s_ppmctl ("", NULL, 0, NULL, 0), 2);
}

static void
test_tenant_settings_rates_quote (void **state)
{
    (void)state;
    char out[16384], err[8192];
    assert_int_equal (s_ppmctl ("--json tenant create 'Acme Coaching' --plan pro", out, sizeof out,
                                err, sizeof err),
                      0);
    json_error_t jerr;
    json_t *created = json_loads (out, 0, &jerr);
    assert_non_null (created);
    snprintf (
        s_tenant, sizeof s_tenant, "%s",
        json_string_value (json_object_get (json_object_get (created, "tenant"), "tenant_id")));
    assert_int_equal (strncmp (s_tenant, "t_", 2), 0);
    assert_int_equal (
        strncmp (json_string_value (json_object_get (created, "admin_key")), "ppmak_", 6), 0);
    json_decref (created);

    char cmd[1024];
    /* Invalid fields: each printed, exit 1, nothing applied. */
    snprintf (cmd, sizeof cmd,
              "settings set --tenant %s enabled=true enable_for=video grace_s=9999 "
              "preset_minutes=10,10",
              s_tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 1);
    assert_non_null (strstr (err, "INVALID_ARGUMENT"));
    assert_non_null (strstr (err, "enable_for:"));
    assert_non_null (strstr (err, "grace_s:"));
    assert_non_null (strstr (err, "preset_minutes[1]:"));
    assert_non_null (strstr (err, "terms_url:"));
    /* A value that does not parse is refused before any call. */
    snprintf (cmd, sizeof cmd, "settings set --tenant %s grace_s=soon", s_tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 1);
    assert_non_null (strstr (err, "grace_s: must be an integer"));

    snprintf (cmd, sizeof cmd,
              "settings set --tenant %s enabled=true terms_url=https://acme.example/terms "
              "default_chat_per_minute=100 rate_scope=roles stripe_secret_key=%s",
              s_tenant, "sk_test_abcdefghijklmnopqrst4242");
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    assert_non_null (strstr (out, "enabled: true"));
    assert_non_null (strstr (out, "stripe_secret_key: sk_test_…4242"));
    assert_null (strstr (out, "abcdefghijklmnopqrst"));

    snprintf (cmd, sizeof cmd, "rates set --tenant %s --user coach_1 --chat 250 --call null",
              s_tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    snprintf (cmd, sizeof cmd, "rates set --tenant %s --role gold --chat 180 --priority 3",
              s_tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    snprintf (cmd, sizeof cmd, "rates set --tenant %s --user cheap --chat 1", s_tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 1);
    assert_non_null (strstr (err, "chat_per_minute:"));
    snprintf (cmd, sizeof cmd, "--json rates get --tenant %s --user coach_1", s_tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    json_t *rates = json_loads (out, 0, &jerr);
    assert_int_equal (json_integer_value (json_object_get (rates, "chat_per_minute")), 250);
    assert_false (json_is_true (json_object_get (rates, "call_set")));
    json_decref (rates);

    /* Quotes: individual, role, default. */
    const struct {
        const char *args;
        int64_t rate;
    } cases[] = {{"--payee coach_1 --kind chat", 250},
                 {"--payee someone --roles gold --kind chat", 180},
                 {"--payee someone --kind chat", 100}};
    for (size_t i = 0; i < 3; i++) {
        int64_t got = -1;
        for (int attempt = 0; attempt < 50 && got != cases[i].rate; attempt++) {
            snprintf (cmd, sizeof cmd, "--json quote --tenant %s %s", s_tenant, cases[i].args);
            assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
            json_t *q = json_loads (out, 0, &jerr);
            got = json_integer_value (json_object_get (q, "rate_per_minute"));
            json_decref (q);
            if (got != cases[i].rate)
                zclock_sleep (50);
        }
        assert_int_equal (got, cases[i].rate);
    }

    snprintf (cmd, sizeof cmd, "audit --tenant %s", s_tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    assert_non_null (strstr (out, "default_chat_per_minute"));
    assert_null (strstr (out, "abcdefghijklmnopqrst"));
    snprintf (cmd, sizeof cmd, "tenant set-plan --tenant %s basic", s_tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    assert_non_null (strstr (out, "feature_disabled: true"));
}

static void
test_user_token_and_keys (void **state)
{
    (void)state;
    char out[8192], err[4096], cmd[1024];
    snprintf (cmd, sizeof cmd, "user-token --tenant %s --user payer_1 --roles a,b --ttl 600",
              s_tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    char *nl = strchr (out, '\n');
    if (nl)
        *nl = '\0';
    /* Verify with the tenant's secret from config. */
    ppm_rpc_client_t *client = ppm_rpc_client_new (s_config_rpc);
    Ppm__V1__GetUserTokenSecretRequest req = PPM__V1__GET_USER_TOKEN_SECRET_REQUEST__INIT;
    ppm_rpc_req_t call = {.method = "config.GetUserTokenSecret", .tenant = s_tenant};
    Ppm__V1__UserTokenSecret *secret = NULL;
    ppm_status_t *status =
        ppm_rpc_client_call_sync (client, &call, &req.base, &ppm__v1__user_token_secret__descriptor,
                                  (ProtobufCMessage **)&secret);
    assert_null (status);
    ppm_jwt_claims_t claims;
    assert_int_equal (ppm_jwt_verify (out, (const uint8_t *)secret->secret, strlen (secret->secret),
                                      time (NULL), &claims),
                      PPM_JWT_OK);
    assert_string_equal (claims.tid, s_tenant);
    assert_string_equal (claims.sub, "payer_1");
    assert_int_equal (claims.role_count, 2);
    assert_string_equal (claims.roles[1], "b");
    assert_true (claims.exp > time (NULL) + 500 && claims.exp <= time (NULL) + 601);
    protobuf_c_message_free_unpacked (&secret->base, NULL);
    ppm_rpc_client_destroy (&client);

    snprintf (cmd, sizeof cmd, "--json admin-key create --tenant %s --label ci", s_tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    json_error_t jerr;
    json_t *key = json_loads (out, 0, &jerr);
    char key_id[64];
    snprintf (key_id, sizeof key_id, "%s", json_string_value (json_object_get (key, "key_id")));
    json_decref (key);
    snprintf (cmd, sizeof cmd, "admin-key revoke --tenant %s %s", s_tenant, key_id);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 1);
    assert_non_null (strstr (err, "NOT_FOUND"));
    assert_int_equal (
        s_ppmctl ("--json tenant list --limit 1000", out, sizeof out, err, sizeof err), 0);
    assert_non_null (strstr (out, "\"tenants\""));
}

/* Verifies token with secret at now. */
static ppm_jwt_err_t
s_verify (const char *token, const char *secret)
{
    ppm_jwt_claims_t claims;
    return ppm_jwt_verify (token, (const uint8_t *)secret, strlen (secret), time (NULL), &claims);
}

/* Mints a user token of tenant with ppmctl into out (one line). */
static void
s_mint (const char *tenant, char *out, size_t size)
{
    char cmd[512], err[4096];
    snprintf (cmd, sizeof cmd, "user-token --tenant %s --user payer_1", tenant);
    assert_int_equal (s_ppmctl (cmd, out, size, err, sizeof err), 0);
    out[strcspn (out, "\n")] = '\0';
}

static void
test_user_token_secret (void **state)
{
    (void)state;
    char out[8192], err[4096], cmd[1024];
    json_error_t jerr;
    assert_int_equal (
        s_ppmctl ("--json tenant create 'Secret Co' --plan pro", out, sizeof out, err, sizeof err),
        0);
    json_t *created = json_loads (out, 0, &jerr);
    char tenant[64];
    snprintf (
        tenant, sizeof tenant, "%s",
        json_string_value (json_object_get (json_object_get (created, "tenant"), "tenant_id")));
    json_decref (created);

    /* show: the secret the platform signs with (and ppmctl's tokens are) */
    snprintf (cmd, sizeof cmd, "--json user-token-secret show --tenant %s", tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    json_t *shown = json_loads (out, 0, &jerr);
    assert_non_null (shown);
    char old[65];
    snprintf (old, sizeof old, "%s", json_string_value (json_object_get (shown, "secret")));
    assert_int_equal (strlen (old), 64);
    char mask[16];
    snprintf (mask, sizeof mask, "…%s", old + 60);
    assert_string_equal (json_string_value (json_object_get (shown, "masked")), mask);
    assert_true (json_integer_value (json_object_get (shown, "rotated_at_ms")) > 0);
    assert_null (json_object_get (shown, "cors_allowed_origins"));
    json_decref (shown);
    char old_token[2048];
    s_mint (tenant, old_token, sizeof old_token);
    assert_int_equal (s_verify (old_token, old), PPM_JWT_OK);

    /* rotate: a new secret, printed once; tokens minted now use it */
    snprintf (cmd, sizeof cmd, "--json user-token-secret rotate --tenant %s", tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    json_t *rotated = json_loads (out, 0, &jerr);
    assert_non_null (rotated);
    char fresh[65];
    snprintf (fresh, sizeof fresh, "%s", json_string_value (json_object_get (rotated, "secret")));
    json_decref (rotated);
    assert_int_equal (strlen (fresh), 64);
    assert_string_not_equal (fresh, old);
    snprintf (cmd, sizeof cmd, "user-token-secret show --tenant %s", tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    char line[128];
    snprintf (line, sizeof line, "secret: %s\n", fresh);
    assert_non_null (strstr (out, line));
    assert_non_null (strstr (out, "rotated_at_ms: "));
    char new_token[2048];
    s_mint (tenant, new_token, sizeof new_token);
    assert_int_equal (s_verify (new_token, fresh), PPM_JWT_OK);
    assert_int_not_equal (s_verify (new_token, old), PPM_JWT_OK);
    assert_int_not_equal (s_verify (old_token, fresh), PPM_JWT_OK);

    /* the audit log names the operator and shows the masks only */
    snprintf (cmd, sizeof cmd, "--json audit --tenant %s", tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    assert_null (strstr (out, old));
    assert_null (strstr (out, fresh));
    json_t *audit = json_loads (out, 0, &jerr);
    json_t *newest = json_array_get (json_object_get (audit, "entries"), 0);
    assert_string_equal (json_string_value (json_object_get (newest, "field")),
                         "user_token_secret");
    assert_int_equal (strncmp (json_string_value (json_object_get (newest, "actor")), "ppmctl:", 7),
                      0);
    assert_string_equal (json_string_value (json_object_get (newest, "old_value")), mask);
    char fresh_mask[16];
    snprintf (fresh_mask, sizeof fresh_mask, "…%s", fresh + 60);
    assert_string_equal (json_string_value (json_object_get (newest, "new_value")), fresh_mask);
    json_decref (audit);

    /* usage errors exit 2; an unknown tenant is refused with 1 */
    assert_int_equal (s_ppmctl ("user-token-secret rotate", out, sizeof out, err, sizeof err), 2);
    assert_int_equal (s_ppmctl ("user-token-secret", out, sizeof out, err, sizeof err), 2);
    snprintf (cmd, sizeof cmd, "user-token-secret reveal --tenant %s", tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 2);
    assert_int_equal (s_ppmctl ("user-token-secret rotate --tenant t_00000000000000000000", out,
                                sizeof out, err, sizeof err),
                      1);
    assert_non_null (strstr (err, "NOT_FOUND"));
    /* nothing rotated by the refusals */
    snprintf (cmd, sizeof cmd, "user-token-secret show --tenant %s", tenant);
    assert_int_equal (s_ppmctl (cmd, out, sizeof out, err, sizeof err), 0);
    assert_non_null (strstr (out, line));
}

static void
test_config_binary_needs_a_master_key (void **state)
{
    (void)state;
    const char *bin = getenv ("PPM_BIN_DIR") ? getenv ("PPM_BIN_DIR") : "build/bin";
    const char *tmp = getenv ("PPM_TEST_TMP") ? getenv ("PPM_TEST_TMP") : "/tmp";
    char cmd[2048], path[512];
    snprintf (path, sizeof path, "%s/ppm-config-nokey-%d.err", tmp, getpid ());
    snprintf (cmd, sizeof cmd,
              "env -u PPM_MASTER_KEY -u PPM_DEMO PPM_PG_URL=postgresql://127.0.0.1:1/x "
              "PPM_RPC_BIND=tcp://127.0.0.1:0 timeout 10 %s/ppm-config >/dev/null 2>%s",
              bin, path);
    int rc = system (cmd);
    assert_true (WIFEXITED (rc) && WEXITSTATUS (rc) == 1);
    char err[4096] = "";
    FILE *file = fopen (path, "r");
    assert_non_null (file);
    size_t n = fread (err, 1, sizeof err - 1, file);
    err[n] = '\0';
    fclose (file);
    assert_non_null (strstr (err, "PPM_MASTER_KEY is required"));
    /* A malformed key is refused too. */
    snprintf (cmd, sizeof cmd,
              "env PPM_MASTER_KEY=abc PPM_PG_URL=postgresql://127.0.0.1:1/x timeout 10 "
              "%s/ppm-config >/dev/null 2>%s",
              bin, path);
    rc = system (cmd);
    assert_true (WIFEXITED (rc) && WEXITSTATUS (rc) == 1);
    /* --help works without any environment. */
    snprintf (cmd, sizeof cmd, "%s/ppm-config --help >/dev/null && %s/ppm-rate --help >/dev/null",
              bin, bin);
    rc = system (cmd);
    assert_true (WIFEXITED (rc) && WEXITSTATUS (rc) == 0);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_help_everywhere),
        cmocka_unit_test (test_tenant_settings_rates_quote),
        cmocka_unit_test (test_user_token_and_keys),
        cmocka_unit_test (test_user_token_secret),
        cmocka_unit_test (test_config_binary_needs_a_master_key),
    };
    return cmocka_run_group_tests (tests, s_setup, s_teardown);
}
