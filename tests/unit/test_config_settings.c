/*  Unit tests of config_settings (every field accepted and refused at its
    boundaries, with the field named) and config_crypto (sealing bound to
    tenant and field, admin keys). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "services/config/config_crypto.h"
#include "services/config/config_settings.h"

/* A valid, enabled Pro configuration to break one field at a time. */
static Ppm__V1__Settings *
s_valid (void)
{
    Ppm__V1__Settings defaults = PPM__V1__SETTINGS__INIT;
    config_settings_defaults (&defaults);
    Ppm__V1__Settings *s = config_settings_dup (&defaults);
    assert_non_null (s);
    const char *error = NULL;
    assert_int_equal (config_settings_set_text (s, "enabled", "true", &error), 0);
    assert_int_equal (
        config_settings_set_text (s, "terms_url", "https://example.com/terms", &error), 0);
    assert_int_equal (config_settings_set_text (s, "default_call_per_minute", "250", &error), 0);
    assert_int_equal (config_settings_set_text (s, "default_chat_per_minute", "100", &error), 0);
    assert_int_equal (
        config_settings_set_text (s, "stripe_secret_key", "sk_test_abcdefghijklmnop4242", &error),
        0);
    return s;
}

static const config_settings_ctx_t s_pro = {.plan = "pro"};

/* Sets field=value on a valid record and returns the validation status. */
static ppm_status_t *
s_try (const char *field, const char *value, const config_settings_ctx_t *ctx)
{
    Ppm__V1__Settings *s = s_valid ();
    const char *error = NULL;
    assert_int_equal (config_settings_set_text (s, field, value, &error), 0);
    config_settings_normalize (s);
    ppm_status_t *status = config_settings_validate (s, ctx ? ctx : &s_pro);
    config_settings_free (&s);
    return status;
}

static void
s_accept (const char *field, const char *value)
{
    ppm_status_t *status = s_try (field, value, NULL);
    if (status)
        fail_msg ("%s=%s refused: %s %s", field, value,
                  ppm_status_field_count (status) ? ppm_status_field_name (status, 0) : "",
                  ppm_status_field_count (status) ? ppm_status_field_description (status, 0)
                                                  : ppm_status_message (status));
}

static void
s_refuse (const char *field, const char *value, const char *named)
{
    ppm_status_t *status = s_try (field, value, NULL);
    if (!status)
        fail_msg ("%s=%s accepted", field, value);
    assert_int_equal (ppm_status_code (status), PPM_INVALID_ARGUMENT);
    if (!ppm_status_field_find (status, named))
        fail_msg ("%s=%s: no violation on %s (first: %s)", field, value, named,
                  ppm_status_field_count (status) ? ppm_status_field_name (status, 0) : "-");
    ppm_status_destroy (&status);
}

static void
test_valid_and_defaults (void **state)
{
    (void)state;
    Ppm__V1__Settings *s = s_valid ();
    assert_null (config_settings_validate (s, &s_pro));
    config_settings_free (&s);
    /* Defaults of a new tenant are valid on any plan. */
    Ppm__V1__Settings defaults = PPM__V1__SETTINGS__INIT;
    config_settings_defaults (&defaults);
    config_settings_ctx_t free_plan = {.plan = "free"};
    assert_null (config_settings_validate (&defaults, &free_plan));
}

static void
test_enums (void **state)
{
    (void)state;
    s_accept ("enable_for", "chat");
    s_accept ("enable_for", "call");
    s_refuse ("enable_for", "video", "enable_for");
    s_refuse ("enable_for", "", "enable_for");
    s_accept ("rate_scope", "individual");
    s_accept ("rate_scope", "roles");
    s_refuse ("rate_scope", "Default", "rate_scope");
    s_refuse ("billing_mode", "later", "billing_mode");
    s_accept ("billing_mode", "authorize");
    s_refuse ("rounding", "hour", "rounding");
    s_accept ("rounding", "second");
    s_refuse ("stripe_mode", "prod", "stripe_mode");
    s_refuse ("currency", "XXX", "currency");
    s_refuse ("currency", "", "currency");
    s_accept ("currency", "eur");
}

static void
test_amounts (void **state)
{
    (void)state;
    s_accept ("default_call_per_minute", "0");
    s_refuse ("default_call_per_minute", "-1", "default_call_per_minute");
    s_refuse ("default_chat_per_minute", "100000000", "default_chat_per_minute");
    /* KWD: three decimals, the last digit must be 0. */
    Ppm__V1__Settings *s = s_valid ();
    const char *error;
    config_settings_set_text (s, "currency", "KWD", &error);
    config_settings_set_text (s, "default_call_per_minute", "255", &error);
    ppm_status_t *status = config_settings_validate (s, &s_pro);
    assert_non_null (status);
    assert_non_null (ppm_status_field_find (status, "default_call_per_minute"));
    ppm_status_destroy (&status);
    config_settings_set_text (s, "default_call_per_minute", "250", &error);
    assert_null (config_settings_validate (s, &s_pro));
    config_settings_free (&s);
}

static void
test_keys_and_mode (void **state)
{
    (void)state;
    s_refuse ("stripe_secret_key", "sk_live_abc", "stripe_secret_key");
    s_refuse ("stripe_secret_key", "rk_test_abc", "stripe_secret_key");
    s_refuse ("stripe_secret_key", "sk_test_", "stripe_secret_key");
    s_refuse ("stripe_secret_key", "sk_test_a b", "stripe_secret_key");
    s_accept ("stripe_restricted_key", "rk_test_xyz");
    s_refuse ("stripe_restricted_key", "sk_test_xyz", "stripe_restricted_key");
    s_accept ("stripe_publishable_key", "pk_test_xyz");
    s_refuse ("stripe_publishable_key", "pk_live_xyz", "stripe_publishable_key");
    s_accept ("stripe_webhook_secret", "whsec_abc");
    s_refuse ("stripe_webhook_secret", "wh_abc", "stripe_webhook_secret");
    /* Switching to live with test keys names the keys. */
    s_refuse ("stripe_mode", "live", "stripe_secret_key");
    char long_key[300];
    memset (long_key, 'a', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    memcpy (long_key, "sk_test_", 8);
    s_refuse ("stripe_secret_key", long_key, "stripe_secret_key");
    /* Live mode under PPM_TIME_SCALE is a gate, not a field error. */
    Ppm__V1__Settings *s = s_valid ();
    const char *error;
    config_settings_set_text (s, "stripe_mode", "live", &error);
    config_settings_set_text (s, "stripe_secret_key", "sk_live_abcd", &error);
    assert_null (config_settings_validate (s, &s_pro));
    config_settings_ctx_t scaled = {.plan = "pro", .time_scaled = true};
    ppm_status_t *status = config_settings_validate (s, &scaled);
    assert_int_equal (ppm_status_code (status), PPM_FAILED_PRECONDITION);
    assert_non_null (ppm_status_field_find (status, "stripe_mode"));
    ppm_status_destroy (&status);
    config_settings_free (&s);
}

static void
test_terms_url (void **state)
{
    (void)state;
    s_accept ("terms_url", "http://a.example/t?x=1");
    s_refuse ("terms_url", "ftp://a.example/t", "terms_url");
    s_refuse ("terms_url", "/terms", "terms_url");
    s_refuse ("terms_url", "https://", "terms_url");
    s_refuse ("terms_url", "https://a b.example/", "terms_url");
    s_refuse ("terms_url", "", "terms_url"); /* required when enabled */
    char url[2100];
    memcpy (url, "https://a.example/", 18);
    memset (url + 18, 'x', 2048 - 18);
    url[2048] = '\0';
    s_accept ("terms_url", url);
    url[2048] = 'x';
    url[2049] = '\0';
    s_refuse ("terms_url", url, "terms_url");
    /* Not required while the feature is off. */
    Ppm__V1__Settings *s = s_valid ();
    const char *error;
    config_settings_set_text (s, "enabled", "false", &error);
    config_settings_set_text (s, "terms_url", "", &error);
    assert_null (config_settings_validate (s, &s_pro));
    config_settings_free (&s);
}

static void
test_presets (void **state)
{
    (void)state;
    s_accept ("preset_minutes", "1");
    s_accept ("preset_minutes", "5,10,15,20,30,45");
    s_refuse ("preset_minutes", "5,10,15,20,30,45,60", "preset_minutes");
    s_refuse ("preset_minutes", "", "preset_minutes");
    s_refuse ("preset_minutes", "10,0", "preset_minutes[0]"); /* sorted first: 0,10 */
    s_refuse ("preset_minutes", "10,10", "preset_minutes[1]");
    s_refuse ("preset_minutes", "601", "preset_minutes[0]");
    /* Presets must fit one purchase. */
    Ppm__V1__Settings *s = s_valid ();
    const char *error;
    config_settings_set_text (s, "max_minutes_per_purchase", "20", &error);
    config_settings_set_text (s, "preset_minutes", "10,30", &error);
    ppm_status_t *status = config_settings_validate (s, &s_pro);
    assert_non_null (ppm_status_field_find (status, "preset_minutes[1]"));
    assert_null (ppm_status_field_find (status, "preset_minutes[0]"));
    ppm_status_destroy (&status);
    config_settings_free (&s);
    /* Stored sorted. */
    s = s_valid ();
    config_settings_set_text (s, "preset_minutes", "60,5,30", &error);
    config_settings_normalize (s);
    char text[64];
    config_settings_get_text (s, "preset_minutes", text, sizeof text);
    assert_string_equal (text, "5,30,60");
    config_settings_free (&s);
}

static void
test_preset_below_minimum_named (void **state)
{
    (void)state;
    /* USD minimum 0.50: 1 minute at 0.40 = 0.40 is too little. */
    Ppm__V1__Settings *s = s_valid ();
    const char *error;
    config_settings_set_text (s, "default_chat_per_minute", "40", &error);
    config_settings_set_text (s, "preset_minutes", "1,10", &error);
    ppm_status_t *status = config_settings_validate (s, &s_pro);
    config_settings_free (&s);
    assert_non_null (status);
    const char *why = ppm_status_field_find (status, "preset_minutes[0]");
    assert_non_null (why);
    assert_non_null (strstr (why, "minimum"));
    assert_null (ppm_status_field_find (status, "preset_minutes[1]"));
    ppm_status_destroy (&status);
    /* A small individual rate (from the store) breaks a preset too. */
    int64_t rates[] = {3};
    config_settings_ctx_t ctx = {.plan = "pro", .rates = rates, .rate_count = 1};
    status = s_try ("preset_minutes", "10,30", &ctx);
    assert_non_null (ppm_status_field_find (status, "preset_minutes[0]"));
    assert_null (ppm_status_field_find (status, "preset_minutes[1]"));
    ppm_status_destroy (&status);
    /* Above the maximum: 120 minutes × 900000 > 99999999. */
    int64_t big[] = {900000};
    ctx.rates = big;
    status = s_try ("preset_minutes", "10,120", &ctx);
    assert_null (ppm_status_field_find (status, "preset_minutes[0]"));
    assert_non_null (strstr (ppm_status_field_find (status, "preset_minutes[1]"), "maximum"));
    ppm_status_destroy (&status);
    /* config_rate_check names the preset for a single rate. */
    const ppm_currency_t *jpy = ppm_currency_find ("JPY");
    int64_t presets[] = {1, 10};
    ppm_status_t *invalid = NULL;
    assert_int_equal (config_rate_check (jpy, presets, 2, 30, "call_per_minute", &invalid), 1);
    assert_non_null (strstr (ppm_status_field_find (invalid, "call_per_minute"), "preset 1 "));
    ppm_status_destroy (&invalid);
    assert_int_equal (config_rate_check (jpy, presets, 2, 50, "call_per_minute", &invalid), 0);
    assert_int_equal (config_rate_check (jpy, presets, 2, 0, "call_per_minute", &invalid), 0);
    assert_null (invalid);
}

static void
test_limits (void **state)
{
    (void)state;
    s_accept ("warning_marks_s", "");
    s_accept ("warning_marks_s", "3600,1");
    s_refuse ("warning_marks_s", "0", "warning_marks_s[0]");
    s_refuse ("warning_marks_s", "3601", "warning_marks_s[0]");
    s_refuse ("warning_marks_s", "60,60", "warning_marks_s[1]");
    s_refuse ("warning_marks_s", "1,2,3,4,5,6", "warning_marks_s");
    s_accept ("grace_s", "0");
    s_accept ("grace_s", "600");
    s_refuse ("grace_s", "601", "grace_s");
    s_refuse ("grace_s", "-1", "grace_s");
    s_accept ("session_ttl_s", "86400");
    s_refuse ("session_ttl_s", "59", "session_ttl_s");
    s_refuse ("session_ttl_s", "86401", "session_ttl_s");
    s_refuse ("max_minutes_per_purchase", "0", "max_minutes_per_purchase");
    s_refuse ("max_minutes_per_purchase", "241", "max_minutes_per_purchase"); /* > session max */
    s_accept ("max_session_minutes", "1440");
    s_refuse ("max_session_minutes", "1441", "max_session_minutes");
    s_refuse ("max_session_minutes", "100", "max_minutes_per_purchase");
    s_accept ("max_concurrent_sessions", "1");
    s_accept ("max_concurrent_sessions", "100");
    s_refuse ("max_concurrent_sessions", "0", "max_concurrent_sessions");
    s_refuse ("max_concurrent_sessions", "101", "max_concurrent_sessions");
    s_accept ("free_trial_minutes", "60");
    s_refuse ("free_trial_minutes", "61", "free_trial_minutes");
    s_accept ("cors_allowed_origins", "https://app.example,http://localhost:3000");
    s_refuse ("cors_allowed_origins", "https://app.example/path", "cors_allowed_origins[0]");
    s_refuse ("cors_allowed_origins", "*", "cors_allowed_origins[0]");
}

static void
test_all_violations_at_once (void **state)
{
    (void)state;
    Ppm__V1__Settings *s = s_valid ();
    const char *error;
    config_settings_set_text (s, "enable_for", "x", &error);
    config_settings_set_text (s, "grace_s", "601", &error);
    config_settings_set_text (s, "currency", "ZZZ", &error);
    config_settings_set_text (s, "terms_url", "nope", &error);
    ppm_status_t *status = config_settings_validate (s, &s_pro);
    assert_int_equal (ppm_status_code (status), PPM_INVALID_ARGUMENT);
    assert_int_equal (ppm_status_field_count (status), 4);
    ppm_status_destroy (&status);
    config_settings_free (&s);
}

static void
test_plan_gate (void **state)
{
    (void)state;
    Ppm__V1__Settings *s = s_valid ();
    const char *plans[] = {"free", "basic", "pro", "enterprise"};
    for (int i = 0; i < 4; i++) {
        config_settings_ctx_t ctx = {.plan = plans[i]};
        ppm_status_t *status = config_settings_validate (s, &ctx);
        if (i < 2) {
            assert_int_equal (ppm_status_code (status), PPM_FAILED_PRECONDITION);
            assert_non_null (strstr (ppm_status_message (status), "requires the Pro plan"));
            ppm_status_destroy (&status);
        } else
            assert_null (status);
    }
    assert_true (config_plan_rank ("enterprise") > config_plan_rank ("pro"));
    assert_int_equal (config_plan_rank ("gold"), -1);
    config_settings_free (&s);
}

static void
s_collect (const char *field, const char *a, const char *b, void *arg)
{
    struct {
        int count;
        char all[1024];
    } *seen = arg;
    seen->count++;
    size_t used = strlen (seen->all);
    snprintf (seen->all + used, sizeof seen->all - used, "%s:%s>%s;", field, a, b);
}

static void
test_secrets_merge_mask_diff (void **state)
{
    (void)state;
    Ppm__V1__Settings *current = s_valid ();
    const char *error;
    config_settings_set_text (current, "stripe_webhook_secret", "whsec_old9999", &error);
    /* The admin sends back what GetSettings showed: masks keep the values. */
    Ppm__V1__Settings *shown = config_settings_dup (current);
    config_settings_mask (shown);
    assert_string_equal (shown->stripe_secret_key, "sk_test_…4242");
    assert_null (strstr (shown->stripe_webhook_secret, "old9"));
    Ppm__V1__Settings *next = config_settings_dup (shown);
    config_settings_set_text (next, "stripe_restricted_key", "rk_test_new1234", &error);
    char *clear[] = {"stripe_webhook_secret"};
    assert_int_equal (config_settings_merge_secrets (next, current, clear, 1, NULL), 0);
    assert_string_equal (next->stripe_secret_key, "sk_test_abcdefghijklmnop4242");
    assert_string_equal (next->stripe_restricted_key, "rk_test_new1234");
    assert_string_equal (next->stripe_webhook_secret, "");
    char *bad_clear[] = {"currency"};
    const char *bad = NULL;
    assert_int_equal (config_settings_merge_secrets (next, current, bad_clear, 1, &bad), -1);
    assert_string_equal (bad, "currency");
    /* The audit diff masks secrets. */
    struct {
        int count;
        char all[1024];
    } seen = {0, ""};
    config_settings_diff (current, next, s_collect, &seen);
    assert_int_equal (seen.count, 2);
    assert_null (strstr (seen.all, "rk_test_new1234"));
    assert_null (strstr (seen.all, "whsec_old9999"));
    assert_non_null (strstr (seen.all, "stripe_restricted_key"));
    config_settings_free (&current);
    config_settings_free (&shown);
    config_settings_free (&next);
}

static void
test_text_round_trip (void **state)
{
    (void)state;
    Ppm__V1__Settings *s = s_valid ();
    const char *error = NULL;
    assert_int_equal (config_settings_set_text (s, "grace_s", "12x", &error), -1);
    assert_int_equal (config_settings_set_text (s, "enabled", "maybe", &error), -1);
    assert_int_equal (config_settings_set_text (s, "version", "3", &error), -1);
    assert_int_equal (config_settings_set_text (s, "nope", "3", &error), -1);
    assert_int_equal (config_settings_set_text (s, "warning_marks_s", "30,x", &error), -1);
    char text[64];
    assert_int_equal (config_settings_get_text (s, "enabled", text, sizeof text), 0);
    assert_string_equal (text, "true");
    assert_int_equal (config_settings_get_text (s, "stripe_secret_key", text, sizeof text), 0);
    assert_string_equal (text, "sk_test_…4242");
    config_settings_free (&s);
    assert_true (config_valid_payee ("user_1@x"));
    assert_false (config_valid_payee (""));
    assert_false (config_valid_payee ("a b"));
    assert_true (config_valid_role ("coach"));
    assert_false (config_valid_role ("co/ach"));
}

static void
test_crypto (void **state)
{
    (void)state;
    uint8_t key[CONFIG_MASTER_KEY_BYTES];
    assert_int_equal (config_crypto_parse_key ("00", key), -1);
    assert_int_equal (config_crypto_parse_key (
                          "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g", key),
                      -1);
    assert_int_equal (config_crypto_parse_key (
                          "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", key),
                      0);
    config_crypto_t *crypto = config_crypto_new (key);
    size_t size = 0;
    uint8_t *sealed = config_crypto_seal (crypto, "t_1", "stripe_secret_key", "sk_test_x", &size);
    assert_non_null (sealed);
    assert_null (memmem (sealed, size, "sk_test_x", 9));
    char *plain = config_crypto_open (crypto, "t_1", "stripe_secret_key", sealed, size);
    assert_string_equal (plain, "sk_test_x");
    free (plain);
    /* Bound to tenant and field. */
    assert_null (config_crypto_open (crypto, "t_2", "stripe_secret_key", sealed, size));
    assert_null (config_crypto_open (crypto, "t_1", "stripe_webhook_secret", sealed, size));
    sealed[size - 1] ^= 1;
    assert_null (config_crypto_open (crypto, "t_1", "stripe_secret_key", sealed, size));
    free (sealed);
    /* Another key does not open it. */
    uint8_t demo[CONFIG_MASTER_KEY_BYTES];
    config_crypto_demo_key (demo);
    config_crypto_t *other = config_crypto_new (demo);
    sealed = config_crypto_seal (crypto, "t_1", "f", "v", &size);
    assert_null (config_crypto_open (other, "t_1", "f", sealed, size));
    free (sealed);
    config_crypto_destroy (&other);
    config_crypto_destroy (&crypto);
    config_crypto_destroy (&crypto);

    char admin[CONFIG_ADMIN_KEY_LEN + 1], id[CONFIG_KEY_ID_LEN + 1], id2[CONFIG_KEY_ID_LEN + 1];
    uint8_t hash[CONFIG_HASH_BYTES], hash2[CONFIG_HASH_BYTES];
    config_crypto_admin_key_new (admin, id, hash);
    assert_int_equal (strncmp (admin, "ppmak_", 6), 0);
    assert_int_equal (config_crypto_admin_key_parse (admin, id2, hash2), 0);
    assert_string_equal (id, id2);
    assert_true (config_crypto_hash_equal (hash, hash2));
    admin[CONFIG_ADMIN_KEY_LEN - 1] = admin[CONFIG_ADMIN_KEY_LEN - 1] == 'a' ? 'b' : 'a';
    assert_int_equal (config_crypto_admin_key_parse (admin, id2, hash2), 0);
    assert_false (config_crypto_hash_equal (hash, hash2));
    assert_int_equal (config_crypto_admin_key_parse ("ppmak_short", id2, hash2), -1);
    char tid[32];
    config_crypto_random_id ("t_", 20, tid, sizeof tid);
    assert_int_equal (strlen (tid), 22);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_valid_and_defaults),
        cmocka_unit_test (test_enums),
        cmocka_unit_test (test_amounts),
        cmocka_unit_test (test_keys_and_mode),
        cmocka_unit_test (test_terms_url),
        cmocka_unit_test (test_presets),
        cmocka_unit_test (test_preset_below_minimum_named),
        cmocka_unit_test (test_limits),
        cmocka_unit_test (test_all_violations_at_once),
        cmocka_unit_test (test_plan_gate),
        cmocka_unit_test (test_secrets_merge_mask_diff),
        cmocka_unit_test (test_text_round_trip),
        cmocka_unit_test (test_crypto),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
