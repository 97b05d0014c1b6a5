/*  Unit tests of ppm_env: defaults, bounds, malformed values, missing
    required variables, durations, booleans, and secrets masked in errors and
    in the logged configuration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "ppm_env.h"
#include "ppm_log.h"

typedef struct {
    char *bind;
    char *key;
    int64_t tick_ms;
    int64_t count;
    int64_t timeout;
    bool flag;
} s_cfg_t;

static s_cfg_t s_cfg;

static ppm_env_t s_table[] = {
    {"PPM_T_BIND", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7101", .out = &s_cfg.bind,
     .help = "where to bind"},
    {"PPM_T_KEY", PPM_ENV_STRING, .secret = true, .required = true, .out = &s_cfg.key,
     .help = "the key"},
    {"PPM_T_TICK_MS", PPM_ENV_INT, .min = 10, .max = 60000, .def = "1000", .out = &s_cfg.tick_ms},
    {"PPM_T_COUNT", PPM_ENV_INT, .out = &s_cfg.count},
    {"PPM_T_TIMEOUT", PPM_ENV_DURATION, .min = 100, .max = 3600000, .def = "5s",
     .out = &s_cfg.timeout},
    {"PPM_T_FLAG", PPM_ENV_BOOL, .def = "off", .out = &s_cfg.flag},
    {NULL},
};

static const char *s_names[] = {
    "PPM_T_BIND", "PPM_T_KEY", "PPM_T_TICK_MS", "PPM_T_COUNT", "PPM_T_TIMEOUT", "PPM_T_FLAG", NULL};

static int
s_setup (void **state)
{
    (void)state;
    for (int i = 0; s_names[i]; i++)
        unsetenv (s_names[i]);
    memset (&s_cfg, 0, sizeof s_cfg);
    s_cfg.count = -7; /* optional without default: left as it was */
    setenv ("PPM_T_KEY", "sk_test_4eC39HqLyjWDarjtT1zdp7dc", 1);
    return 0;
}

static int
s_teardown (void **state)
{
    (void)state;
    ppm_env_free (s_table);
    return 0;
}

/* Loads and expects failure with an error containing want. */
static void
s_expect_error (const char *want)
{
    const char *error = NULL;
    assert_int_equal (ppm_env_load (s_table, &error), -1);
    assert_non_null (error);
    if (!strstr (error, want))
        fail_msg ("error \"%s\" does not contain \"%s\"", error, want);
    /* Strings parsed before the failure are freed. */
    assert_null (s_cfg.bind);
    assert_null (s_cfg.key);
}

static void
test_defaults (void **state)
{
    (void)state;
    const char *error = "unchanged";
    assert_int_equal (ppm_env_load (s_table, &error), 0);
    assert_null (error);
    assert_string_equal (s_cfg.bind, "tcp://127.0.0.1:7101");
    assert_string_equal (s_cfg.key, "sk_test_4eC39HqLyjWDarjtT1zdp7dc");
    assert_int_equal (s_cfg.tick_ms, 1000);
    assert_int_equal (s_cfg.count, -7);
    assert_int_equal (s_cfg.timeout, 5000);
    assert_false (s_cfg.flag);
    ppm_env_free (s_table);
    assert_null (s_cfg.bind);
    ppm_env_free (s_table); /* twice is fine */

    /* An empty variable counts as unset. */
    setenv ("PPM_T_TICK_MS", "", 1);
    setenv ("PPM_T_BIND", "", 1);
    assert_int_equal (ppm_env_load (s_table, &error), 0);
    assert_int_equal (s_cfg.tick_ms, 1000);
    assert_string_equal (s_cfg.bind, "tcp://127.0.0.1:7101");
}

static void
test_values_and_bounds (void **state)
{
    (void)state;
    const char *error = NULL;
    setenv ("PPM_T_TICK_MS", "10", 1);
    setenv ("PPM_T_COUNT", "-9223372036854775808", 1);
    setenv ("PPM_T_FLAG", "Yes", 1);
    assert_int_equal (ppm_env_load (s_table, &error), 0);
    assert_int_equal (s_cfg.tick_ms, 10);
    assert_int_equal (s_cfg.count, INT64_MIN);
    assert_true (s_cfg.flag);
    ppm_env_free (s_table);

    setenv ("PPM_T_TICK_MS", "60000", 1);
    assert_int_equal (ppm_env_load (s_table, &error), 0);
    assert_int_equal (s_cfg.tick_ms, 60000);
    ppm_env_free (s_table);

    setenv ("PPM_T_TICK_MS", "9", 1);
    s_expect_error ("PPM_T_TICK_MS: \"9\" is below the minimum 10");
    setenv ("PPM_T_TICK_MS", "60001", 1);
    s_expect_error ("PPM_T_TICK_MS: \"60001\" is above the maximum 60000");
    setenv ("PPM_T_TICK_MS", "100", 1);

    setenv ("PPM_T_COUNT", "9223372036854775808", 1);
    s_expect_error ("PPM_T_COUNT: \"9223372036854775808\" is too large");
    setenv ("PPM_T_COUNT", "-9223372036854775809", 1);
    s_expect_error ("PPM_T_COUNT: \"-9223372036854775809\" is too small");
}

static void
test_malformed (void **state)
{
    (void)state;
    static const char *bad_ints[] = {"12abc", " 12", "12 ", "abc", "1e3",
                                     "0x10",  "-",   "+",   "1.5", NULL};
    for (int i = 0; bad_ints[i]; i++) {
        setenv ("PPM_T_TICK_MS", bad_ints[i], 1);
        s_expect_error ("PPM_T_TICK_MS:");
        s_expect_error ("is not an integer");
    }
    unsetenv ("PPM_T_TICK_MS");
    setenv ("PPM_T_FLAG", "maybe", 1);
    s_expect_error ("PPM_T_FLAG: \"maybe\" is not a boolean");
    unsetenv ("PPM_T_FLAG");
    /* Non-printable bytes are not echoed raw. */
    setenv ("PPM_T_COUNT", "1\x1b[31m", 1);
    s_expect_error ("PPM_T_COUNT: \"1?[31m\" is not an integer");
}

static void
test_missing_required_and_secret_errors (void **state)
{
    (void)state;
    unsetenv ("PPM_T_KEY");
    s_expect_error ("PPM_T_KEY: required but not set (the key)");

    /* A secret's value never appears in an error. */
    static ppm_env_t secret_int[] = {
        {"PPM_T_COUNT", PPM_ENV_INT, .secret = true, .out = &s_cfg.count},
        {NULL},
    };
    setenv ("PPM_T_COUNT", "sk_live_notanumber1234", 1);
    const char *error = NULL;
    assert_int_equal (ppm_env_load (secret_int, &error), -1);
    assert_string_equal (error, "PPM_T_COUNT: the value is not an integer");
}

static void
test_durations (void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t ms;
    } good[] = {{"250ms", 250},  {"5s", 5000}, {"2m", 120000},
                {"1h", 3600000}, {"100", 100}, {"0000100ms", 100}};
    const char *error = NULL;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        setenv ("PPM_T_TIMEOUT", good[i].text, 1);
        assert_int_equal (ppm_env_load (s_table, &error), 0);
        assert_int_equal (s_cfg.timeout, good[i].ms);
        ppm_env_free (s_table);
    }
    static const char *bad[] = {"5 s", "5sec", "-5s", "s", "1.5s", "5S", "5ms ", "", NULL};
    for (int i = 0; bad[i]; i++) {
        if (!*bad[i])
            continue; /* empty = unset, tested in defaults */
        setenv ("PPM_T_TIMEOUT", bad[i], 1);
        s_expect_error ("is not a duration");
    }
    setenv ("PPM_T_TIMEOUT", "99ms", 1);
    s_expect_error ("PPM_T_TIMEOUT: \"99ms\" is below the minimum 100ms");
    setenv ("PPM_T_TIMEOUT", "2h", 1);
    s_expect_error ("PPM_T_TIMEOUT: \"2h\" is above the maximum 3600000ms");
    setenv ("PPM_T_TIMEOUT", "9999999999999999h", 1);
    s_expect_error ("is above the maximum");
    setenv ("PPM_T_TIMEOUT", "99999999999999999999999", 1);
    s_expect_error ("is above the maximum");
}

static void
test_bad_default_reported (void **state)
{
    (void)state;
    int64_t value = 0;
    ppm_env_t table[] = {
        {"PPM_T_COUNT", PPM_ENV_INT, .min = 1, .max = 5, .def = "7", .out = &value},
        {NULL},
    };
    const char *error = NULL;
    assert_int_equal (ppm_env_load (table, &error), -1);
    assert_string_equal (error, "PPM_T_COUNT: \"7\" (default) is above the maximum 5");
}

static void
test_log_and_usage_mask_secrets (void **state)
{
    (void)state;
    char path[] = "/tmp/ppm-env-test.XXXXXX";
    int fd = mkstemp (path);
    assert_true (fd >= 0);
    unlink (path);
    ppm_log_set_fd (fd);
    const char *error = NULL;
    assert_int_equal (ppm_env_load (s_table, &error), 0);
    ppm_env_log (s_table);
    char text[4096] = {0};
    ssize_t n = pread (fd, text, sizeof text - 1, 0);
    assert_true (n > 0);
    assert_null (strstr (text, "4eC39HqLyjWDarjtT1zdp7dc"));
    assert_non_null (strstr (text, "\"PPM_T_KEY\":\"sk_test_…p7dc\""));
    assert_non_null (strstr (text, "\"PPM_T_TIMEOUT\":\"5000ms\""));
    assert_non_null (strstr (text, "\"PPM_T_BIND\":\"tcp://127.0.0.1:7101\""));
    assert_non_null (strstr (text, "\"msg\":\"configuration\""));
    ppm_log_set_fd (2);
    close (fd);

    char *usage = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&usage, &size);
    ppm_env_usage (s_table, out);
    fclose (out);
    assert_non_null (strstr (usage, "PPM_T_TICK_MS"));
    assert_non_null (strstr (usage, "(required)"));
    assert_non_null (strstr (usage, "where to bind"));
    free (usage);
}

int
main (void)
{
    ppm_log_init ("test");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown (test_defaults, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_values_and_bounds, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_malformed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_missing_required_and_secret_errors, s_setup,
                                         s_teardown),
        cmocka_unit_test_setup_teardown (test_durations, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_bad_default_reported, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_log_and_usage_mask_secrets, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
