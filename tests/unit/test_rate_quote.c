/*  Unit tests of rate_cache and rate_quote: precedence individual > role >
    default > free for both kinds under each scope, zero = free, kinds not
    enabled, presets' exact totals in USD, JPY and KWD, min/max minutes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "services/config/config_settings.h"
#include "services/rate/rate_cache.h"
#include "services/rate/rate_quote.h"

static rate_tenant_t *
s_tenant (const char *scope, const char *currency, int64_t call, int64_t chat)
{
    Ppm__V1__Settings defaults = PPM__V1__SETTINGS__INIT;
    config_settings_defaults (&defaults);
    Ppm__V1__Settings *s = config_settings_dup (&defaults);
    const char *error;
    config_settings_set_text (s, "enabled", "true", &error);
    config_settings_set_text (s, "rate_scope", scope, &error);
    config_settings_set_text (s, "currency", currency, &error);
    s->default_call_per_minute = call;
    s->default_chat_per_minute = chat;
    s->version = 7;
    rate_tenant_t *t = rate_tenant_new ("t_1", "pro", 42, s);
    config_settings_free (&s);
    assert_non_null (t);
    rate_user_t u = {.call = {300, true}, .chat = {0, false}};
    rate_tenant_set_user (t, "alice", u);
    rate_amount_t none = {0, false};
    rate_tenant_add_role (t, "coach", (rate_amount_t){200, true}, (rate_amount_t){80, true}, 1);
    rate_tenant_add_role (t, "senior", (rate_amount_t){400, true}, none, 5);
    rate_tenant_add_role (t, "free", (rate_amount_t){0, true}, (rate_amount_t){0, true}, 9);
    return t;
}

static int64_t
s_rate (const rate_tenant_t *t, const char *payee, const char *roles_csv, rate_kind_t kind,
        const char **source)
{
    char *roles[4] = {NULL};
    size_t n = 0;
    char buf[64];
    snprintf (buf, sizeof buf, "%s", roles_csv);
    for (char *save = NULL, *r = strtok_r (buf, ",", &save); r && n < 4;
         r = strtok_r (NULL, ",", &save))
        roles[n++] = r;
    rate_resolution_t res = rate_resolve (t, payee, roles, n, kind);
    if (source)
        *source = res.source;
    return res.rate;
}

static void
test_precedence_each_scope (void **state)
{
    (void)state;
    const char *src;
    /* scope roles */
    rate_tenant_t *t = s_tenant ("roles", "USD", 250, 100);
    assert_int_equal (s_rate (t, "alice", "coach", RATE_KIND_CALL, &src), 300); /* individual */
    assert_string_equal (src, "individual");
    assert_int_equal (s_rate (t, "alice", "coach", RATE_KIND_CHAT, &src), 80); /* chat blank */
    assert_string_equal (src, "role");
    assert_int_equal (s_rate (t, "bob", "coach,senior", RATE_KIND_CALL, NULL), 400); /* prio */
    /* senior has no chat rate: the next role with one wins. */
    assert_int_equal (s_rate (t, "bob", "coach,senior", RATE_KIND_CHAT, NULL), 80);
    assert_int_equal (s_rate (t, "bob", "", RATE_KIND_CALL, &src), 250);
    assert_string_equal (src, "default");
    assert_int_equal (s_rate (t, "bob", "unknown", RATE_KIND_CHAT, &src), 100);
    /* A zero rate is free, even from the highest-priority role. */
    assert_int_equal (s_rate (t, "bob", "free,senior", RATE_KIND_CALL, &src), 0);
    assert_string_equal (src, "free:zero_rate");
    rate_tenant_destroy (&t);

    /* scope default: roles ignored */
    t = s_tenant ("default", "USD", 250, 100);
    assert_int_equal (s_rate (t, "alice", "senior", RATE_KIND_CALL, NULL), 300);
    assert_int_equal (s_rate (t, "alice", "senior", RATE_KIND_CHAT, NULL), 100);
    assert_int_equal (s_rate (t, "bob", "senior", RATE_KIND_CALL, &src), 250);
    assert_string_equal (src, "default");
    assert_int_equal (s_rate (t, "bob", "coach", RATE_KIND_CHAT, NULL), 100);
    rate_tenant_destroy (&t);

    /* scope individual: blank means free */
    t = s_tenant ("individual", "USD", 250, 100);
    assert_int_equal (s_rate (t, "alice", "senior", RATE_KIND_CALL, NULL), 300);
    assert_int_equal (s_rate (t, "alice", "senior", RATE_KIND_CHAT, &src), 0);
    assert_string_equal (src, "free:no_individual_rate");
    assert_int_equal (s_rate (t, "bob", "senior", RATE_KIND_CALL, NULL), 0);
    assert_int_equal (s_rate (t, "bob", "", RATE_KIND_CHAT, NULL), 0);
    rate_tenant_destroy (&t);

    /* default zero = free */
    t = s_tenant ("default", "USD", 0, 100);
    assert_int_equal (s_rate (t, "bob", "", RATE_KIND_CALL, &src), 0);
    assert_string_equal (src, "free:zero_rate");
    rate_tenant_destroy (&t);
}

static void
s_quote (const rate_tenant_t *t, const char *payee, const char *kind, bool scaled,
         rate_quote_t *out, ppm_code_t expect)
{
    Ppm__V1__QuoteRequest req = PPM__V1__QUOTE_REQUEST__INIT;
    req.payee = (char *)payee;
    req.payer = "p";
    req.kind = (char *)kind;
    ppm_status_t *status = rate_quote_build (t, &req, scaled, 1000, out);
    assert_int_equal (ppm_status_code (status), expect);
    ppm_status_destroy (&status);
}

static void
test_presets_exact (void **state)
{
    (void)state;
    rate_quote_t q;
    /* USD: 250 × {10, 30, 60}. */
    rate_tenant_t *t = s_tenant ("default", "USD", 250, 100);
    s_quote (t, "bob", "call", false, &q, PPM_OK);
    assert_true (q.quote.paid);
    assert_int_equal (q.quote.rate_per_minute, 250);
    assert_string_equal (q.quote.currency, "USD");
    assert_int_equal (q.quote.n_presets, 3);
    assert_int_equal (q.quote.presets[0]->amount, 2500);
    assert_int_equal (q.quote.presets[1]->amount, 7500);
    assert_int_equal (q.quote.presets[2]->amount, 15000);
    assert_int_equal (q.quote.min_minutes, 1); /* 250 ≥ 50 */
    assert_int_equal (q.quote.max_minutes, 120);
    assert_int_equal (q.quote.settings_version, 7);
    assert_int_equal (q.quote.config_revision, 42);
    assert_int_equal (q.quote.n_warning_marks_s, 3);
    /* chat at 100: min 1 minute; 30 per minute would need 2. */
    s_quote (t, "bob", "chat", false, &q, PPM_OK);
    assert_int_equal (q.quote.min_minutes, 1);
    char first[40];
    snprintf (first, sizeof first, "%s", q.quote.quote_id);
    s_quote (t, "bob", "chat", false, &q, PPM_OK);
    assert_string_not_equal (first, q.quote.quote_id);
    assert_int_equal (strncmp (q.quote.quote_id, "q_", 2), 0);
    rate_tenant_destroy (&t);

    t = s_tenant ("default", "USD", 30, 7);
    s_quote (t, "bob", "call", false, &q, PPM_OK);
    assert_int_equal (q.quote.min_minutes, 2); /* 2 × 30 = 60 ≥ 50 > 30 */
    s_quote (t, "bob", "chat", false, &q, PPM_OK);
    assert_int_equal (q.quote.min_minutes, 8); /* 8 × 7 = 56 ≥ 50 > 49 */
    rate_tenant_destroy (&t);

    /* JPY (zero decimals, minimum 50): 13 yen per minute. */
    t = s_tenant ("default", "JPY", 13, 50);
    s_quote (t, "bob", "call", false, &q, PPM_OK);
    assert_string_equal (q.quote.currency, "JPY");
    assert_int_equal (q.quote.presets[0]->minutes, 10);
    assert_int_equal (q.quote.presets[0]->amount, 130);
    assert_int_equal (q.quote.presets[2]->amount, 780);
    assert_int_equal (q.quote.min_minutes, 4); /* 52 ≥ 50 */
    rate_tenant_destroy (&t);

    /* KWD (three decimals, step 10): 1.250 KWD per minute. */
    t = s_tenant ("default", "KWD", 1250, 10);
    s_quote (t, "bob", "call", false, &q, PPM_OK);
    assert_int_equal (q.quote.presets[0]->amount, 12500);
    assert_int_equal (q.quote.presets[1]->amount, 37500);
    assert_int_equal (q.quote.presets[2]->amount, 75000);
    rate_tenant_destroy (&t);

    /* The currency maximum bounds max_minutes: 99999999 / 2000000 = 49,
       and a preset above it is never offered. */
    t = s_tenant ("default", "USD", 2000000, 100);
    s_quote (t, "bob", "call", false, &q, PPM_OK);
    assert_int_equal (q.quote.max_minutes, 49);
    assert_int_equal (q.quote.n_presets, 2); /* 10, 30; not 60 */
    rate_tenant_destroy (&t);
}

static void
test_free_cases (void **state)
{
    (void)state;
    rate_quote_t q;
    rate_tenant_t *t = s_tenant ("default", "USD", 250, 100);
    s_quote (t, "bob", "video", false, &q, PPM_INVALID_ARGUMENT);
    rate_tenant_destroy (&t);

    Ppm__V1__Settings defaults = PPM__V1__SETTINGS__INIT;
    config_settings_defaults (&defaults);
    defaults.default_call_per_minute = 250;
    t = rate_tenant_new ("t_2", "free", 1, &defaults); /* feature off */
    s_quote (t, "bob", "call", false, &q, PPM_OK);
    assert_false (q.quote.paid);
    assert_int_equal (q.quote.n_presets, 0);
    assert_string_equal (q.quote.rate_source, "free:feature_off");
    rate_tenant_destroy (&t);

    defaults.enabled = true;
    defaults.enable_for = "chat";
    t = rate_tenant_new ("t_2", "pro", 1, &defaults);
    s_quote (t, "bob", "call", false, &q, PPM_OK);
    assert_false (q.quote.paid);
    assert_string_equal (q.quote.rate_source, "free:kind_not_enabled");
    rate_tenant_destroy (&t);

    defaults.enable_for = "both";
    defaults.stripe_mode = "live";
    t = rate_tenant_new ("t_2", "pro", 1, &defaults);
    s_quote (t, "bob", "call", false, &q, PPM_OK);
    assert_true (q.quote.paid);
    s_quote (t, "bob", "call", true, &q, PPM_FAILED_PRECONDITION);
    rate_tenant_destroy (&t);
}

static void
test_cache (void **state)
{
    (void)state;
    rate_cache_t *cache = rate_cache_new ();
    assert_int_equal (rate_cache_revision (cache, "t_1"), -1);
    rate_tenant_t *t = s_tenant ("default", "USD", 250, 100);
    rate_cache_replace (cache, &t);
    assert_null (t);
    assert_int_equal (rate_cache_revision (cache, "t_1"), 42);
    assert_int_equal (rate_cache_size (cache), 1);
    const rate_tenant_t *found = rate_cache_lookup (cache, "t_1");
    assert_int_equal (rate_tenant_user_count (found), 1);
    assert_null (rate_tenant_user (found, "bob"));
    t = s_tenant ("roles", "USD", 1, 1);
    rate_cache_replace (cache, &t);
    assert_int_equal (rate_cache_size (cache), 1);
    zlistx_t *ids = rate_cache_tenant_ids (cache);
    assert_int_equal (zlistx_size (ids), 1);
    zlistx_destroy (&ids);
    rate_cache_remove (cache, "t_1");
    assert_null (rate_cache_lookup (cache, "t_1"));
    rate_cache_destroy (&cache);
    rate_cache_destroy (&cache);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_precedence_each_scope),
        cmocka_unit_test (test_presets_exact),
        cmocka_unit_test (test_free_cases),
        cmocka_unit_test (test_cache),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
