/*  Unit tests of ppm_money: the currency table against STRIPE.md, charge
    checks (zero-decimal, three-decimal, ISK/UGX step, minimum, maximum),
    overflow refused, usage rounding, and format/parse round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ppm_money.h"

static const ppm_currency_t *
s_cur (const char *code)
{
    const ppm_currency_t *currency = ppm_currency_find (code);
    if (!currency)
        fail_msg ("currency %s missing", code);
    return currency;
}

static void
test_table (void **state)
{
    (void)state;
    static const char *required[] = {"USD", "EUR", "GBP", "AUD", "CAD", "CHF", "JPY", "KRW", "KWD",
                                     "BHD", "JOD", "OMR", "TND", "ISK", "UGX", "HUF", "INR", "MXN",
                                     "NZD", "SEK", "NOK", "DKK", "PLN", "CZK", "HKD", "SGD", "THB",
                                     "MYR", "BRL", "AED", "BGN", "RON", NULL};
    for (int i = 0; required[i]; i++)
        s_cur (required[i]);
    static const char *zero_decimal[] = {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA",
                                         "PYG", "RWF", "VND", "VUV", "XAF", "XOF", "XPF", NULL};
    for (int i = 0; zero_decimal[i]; i++) {
        assert_int_equal (s_cur (zero_decimal[i])->exponent, 0);
        assert_int_equal (s_cur (zero_decimal[i])->step, 1);
    }
    static const char *three_decimal[] = {"BHD", "JOD", "KWD", "OMR", "TND", NULL};
    for (int i = 0; three_decimal[i]; i++) {
        assert_int_equal (s_cur (three_decimal[i])->exponent, 3);
        assert_int_equal (s_cur (three_decimal[i])->step, 10);
    }
    assert_int_equal (s_cur ("ISK")->exponent, 2);
    assert_int_equal (s_cur ("ISK")->step, 100);
    assert_int_equal (s_cur ("UGX")->step, 100);
    assert_int_equal (s_cur ("USD")->exponent, 2);

    /* STRIPE.md's minimum charges, in minor units. */
    static const struct {
        const char *code;
        int64_t min;
    } minimums[] = {{"USD", 50},
                    {"AED", 200},
                    {"AUD", 50},
                    {"BGN", 100},
                    {"BRL", 50},
                    {"CAD", 50},
                    {"CHF", 50},
                    {"CZK", 1500},
                    {"DKK", 250},
                    {"EUR", 50},
                    {"GBP", 30},
                    {"HKD", 400},
                    {"HUF", 17500},
                    {"INR", 50},
                    {"JPY", 50},
                    {"MXN", 1000},
                    {"MYR", 200},
                    {"NOK", 300},
                    {"NZD", 50},
                    {"PLN", 200},
                    {"RON", 200},
                    {"SEK", 300},
                    {"SGD", 50},
                    {"THB", 1000},
                    /* none listed: the smallest step */
                    {"KRW", 1},
                    {"KWD", 10},
                    {"ISK", 100},
                    {"UGX", 100},
                    {"ZAR", 1}};
    for (size_t i = 0; i < sizeof minimums / sizeof minimums[0]; i++) {
        const ppm_currency_t *currency = s_cur (minimums[i].code);
        assert_int_equal (currency->min_charge, minimums[i].min);
        assert_int_equal (currency->max_charge, 99999999);
    }
    /* Every entry is sane; codes are unique. */
    assert_true (ppm_currency_count () >= 130);
    for (size_t i = 0; i < ppm_currency_count (); i++) {
        const ppm_currency_t *currency = ppm_currency_at (i);
        assert_int_equal (strlen (currency->code), 3);
        assert_true (currency->min_charge >= currency->step);
        assert_int_equal (currency->min_charge % currency->step, 0);
        assert_ptr_equal (ppm_currency_find (currency->code), currency);
    }
    assert_null (ppm_currency_at (ppm_currency_count ()));
    assert_ptr_equal (ppm_currency_find ("usd"), s_cur ("USD"));
    assert_null (ppm_currency_find ("XXX"));
    assert_null (ppm_currency_find ("US"));
    assert_null (ppm_currency_find ("USDX"));
    assert_null (ppm_currency_find (NULL));
}

static void
test_check_charge (void **state)
{
    (void)state;
    /* JPY: zero-decimal, face value, minimum 50. */
    assert_int_equal (ppm_money_check_charge (s_cur ("JPY"), 50), PPM_MONEY_OK);
    assert_int_equal (ppm_money_check_charge (s_cur ("JPY"), 49), PPM_MONEY_TOO_SMALL);
    assert_int_equal (ppm_money_check_charge (s_cur ("JPY"), 51), PPM_MONEY_OK);
    /* KWD: three decimals, must end in 0. */
    assert_int_equal (ppm_money_check_charge (s_cur ("KWD"), 1230), PPM_MONEY_OK);
    assert_int_equal (ppm_money_check_charge (s_cur ("KWD"), 1235), PPM_MONEY_BAD_STEP);
    assert_int_equal (ppm_money_check_charge (s_cur ("KWD"), 5), PPM_MONEY_TOO_SMALL);
    assert_int_equal (ppm_money_check_charge (s_cur ("KWD"), 99999990), PPM_MONEY_OK);
    assert_int_equal (ppm_money_check_charge (s_cur ("KWD"), 99999999), PPM_MONEY_BAD_STEP);
    /* ISK: ×100, divisible by 100. */
    assert_int_equal (ppm_money_check_charge (s_cur ("ISK"), 12300), PPM_MONEY_OK);
    assert_int_equal (ppm_money_check_charge (s_cur ("ISK"), 12350), PPM_MONEY_BAD_STEP);
    assert_int_equal (ppm_money_check_charge (s_cur ("UGX"), 150), PPM_MONEY_BAD_STEP);
    /* Minimum and maximum. */
    assert_int_equal (ppm_money_check_charge (s_cur ("USD"), 49), PPM_MONEY_TOO_SMALL);
    assert_int_equal (ppm_money_check_charge (s_cur ("USD"), 50), PPM_MONEY_OK);
    assert_int_equal (ppm_money_check_charge (s_cur ("USD"), 99999999), PPM_MONEY_OK);
    assert_int_equal (ppm_money_check_charge (s_cur ("USD"), 100000000), PPM_MONEY_TOO_LARGE);
    assert_int_equal (ppm_money_check_charge (s_cur ("GBP"), 29), PPM_MONEY_TOO_SMALL);
    assert_int_equal (ppm_money_check_charge (s_cur ("HUF"), 17499), PPM_MONEY_TOO_SMALL);
    assert_int_equal (ppm_money_check_charge (s_cur ("HUF"), 17500), PPM_MONEY_OK);
    assert_int_equal (ppm_money_check_charge (s_cur ("KRW"), 1), PPM_MONEY_OK);
    assert_int_equal (ppm_money_check_charge (s_cur ("KRW"), 0), PPM_MONEY_TOO_SMALL);
    assert_int_equal (ppm_money_check_charge (s_cur ("USD"), -1), PPM_MONEY_NEGATIVE);
    assert_int_equal (ppm_money_check_charge (NULL, 100), PPM_MONEY_BAD_CURRENCY);
    assert_string_equal (ppm_money_stripe_code (PPM_MONEY_TOO_SMALL), "amount_too_small");
    assert_string_equal (ppm_money_stripe_code (PPM_MONEY_TOO_LARGE), "amount_too_large");
    assert_null (ppm_money_stripe_code (PPM_MONEY_OK));
    assert_non_null (strstr (ppm_money_strerror (PPM_MONEY_BAD_STEP), "multiple"));

    /* Rates: 0 is allowed (free), step and maximum still apply. */
    assert_int_equal (ppm_money_check_amount (s_cur ("USD"), 0), PPM_MONEY_OK);
    assert_int_equal (ppm_money_check_amount (s_cur ("USD"), 1), PPM_MONEY_OK);
    assert_int_equal (ppm_money_check_amount (s_cur ("KWD"), 15), PPM_MONEY_BAD_STEP);
    assert_int_equal (ppm_money_check_amount (s_cur ("USD"), 100000000), PPM_MONEY_TOO_LARGE);
    assert_int_equal (ppm_money_check_amount (s_cur ("USD"), -5), PPM_MONEY_NEGATIVE);
}

static void
test_overflow (void **state)
{
    (void)state;
    int64_t out = 42;
    assert_int_equal (ppm_money_mul (INT64_MAX / 2 + 1, 2, &out), PPM_MONEY_OVERFLOW);
    assert_int_equal (out, 42); /* untouched on failure */
    assert_int_equal (ppm_money_mul (INT64_MAX / 2, 2, &out), PPM_MONEY_OK);
    assert_int_equal (out, INT64_MAX - 1);
    assert_int_equal (ppm_money_add (INT64_MAX, 1, &out), PPM_MONEY_OVERFLOW);
    assert_int_equal (ppm_money_add (INT64_MAX - 1, 1, &out), PPM_MONEY_OK);
    assert_int_equal (out, INT64_MAX);
    assert_int_equal (ppm_money_total (INT64_MAX, 2, &out), PPM_MONEY_OVERFLOW);
    assert_int_equal (ppm_money_total (250, 30, &out), PPM_MONEY_OK);
    assert_int_equal (out, 7500);
    assert_int_equal (ppm_money_mul (-1, 2, &out), PPM_MONEY_NEGATIVE);
    assert_int_equal (ppm_money_add (1, -2, &out), PPM_MONEY_NEGATIVE);
    assert_int_equal (ppm_money_total (100, -1, &out), PPM_MONEY_NEGATIVE);
}

static void
test_usage_rounding (void **state)
{
    (void)state;
    int64_t out = -1;
    /* 0 ms costs nothing either way. */
    assert_int_equal (ppm_money_for_usage (120, 0, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 0);
    assert_int_equal (ppm_money_for_usage (120, 0, false, &out), PPM_MONEY_OK);
    assert_int_equal (out, 0);
    /* Per started minute. */
    assert_int_equal (ppm_money_for_usage (120, 1, false, &out), PPM_MONEY_OK);
    assert_int_equal (out, 120);
    assert_int_equal (ppm_money_for_usage (120, 60000, false, &out), PPM_MONEY_OK);
    assert_int_equal (out, 120);
    assert_int_equal (ppm_money_for_usage (120, 60001, false, &out), PPM_MONEY_OK);
    assert_int_equal (out, 240);
    assert_int_equal (ppm_money_for_usage (120, 180000, false, &out), PPM_MONEY_OK);
    assert_int_equal (out, 360);
    /* Per started second at 120/min = 2 per second. */
    assert_int_equal (ppm_money_for_usage (120, 1, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 2);
    assert_int_equal (ppm_money_for_usage (120, 1000, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 2);
    assert_int_equal (ppm_money_for_usage (120, 1001, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 4);
    assert_int_equal (ppm_money_for_usage (120, 60000, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 120);
    assert_int_equal (ppm_money_for_usage (120, 61000, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 122);
    /* Fractions of a minor unit round up: 50/min, 1 s = 0.83 → 1. */
    assert_int_equal (ppm_money_for_usage (50, 1000, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 1);
    /* 7 s at 50/min = 5.83 → 6. */
    assert_int_equal (ppm_money_for_usage (50, 7000, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 6);
    /* Never above the whole-minute total; per second never above per minute. */
    for (int64_t ms = 0; ms <= 200000; ms += 777) {
        int64_t per_second = 0;
        int64_t per_minute = 0;
        assert_int_equal (ppm_money_for_usage (7, ms, true, &per_second), PPM_MONEY_OK);
        assert_int_equal (ppm_money_for_usage (7, ms, false, &per_minute), PPM_MONEY_OK);
        assert_true (per_second <= per_minute);
        int64_t minutes = (ms + 59999) / 60000;
        assert_int_equal (per_minute, minutes * 7);
    }
    /* Free rate. */
    assert_int_equal (ppm_money_for_usage (0, 123456, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 0);
    /* Overflow and negatives are refused. */
    assert_int_equal (ppm_money_for_usage (INT64_MAX, 120000, false, &out), PPM_MONEY_OVERFLOW);
    assert_int_equal (ppm_money_for_usage (INT64_MAX, 120000, true, &out), PPM_MONEY_OVERFLOW);
    assert_int_equal (ppm_money_for_usage (INT64_MAX, INT64_MAX, true, &out), PPM_MONEY_OVERFLOW);
    /* Large but representable: one minute at INT64_MAX. */
    assert_int_equal (ppm_money_for_usage (INT64_MAX, 60000, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, INT64_MAX);
    assert_int_equal (ppm_money_for_usage (INT64_MAX, 30000, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, INT64_MAX / 2 + 1);
    assert_int_equal (ppm_money_for_usage (-1, 1000, true, &out), PPM_MONEY_NEGATIVE);
    assert_int_equal (ppm_money_for_usage (1, -1, false, &out), PPM_MONEY_NEGATIVE);
}

static void
test_round_step (void **state)
{
    (void)state;
    int64_t out = -1;
    assert_int_equal (ppm_money_round_step (s_cur ("ISK"), 12345, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 12400);
    assert_int_equal (ppm_money_round_step (s_cur ("ISK"), 12345, false, &out), PPM_MONEY_OK);
    assert_int_equal (out, 12300);
    assert_int_equal (ppm_money_round_step (s_cur ("ISK"), 12300, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 12300);
    assert_int_equal (ppm_money_round_step (s_cur ("KWD"), 1231, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 1240);
    assert_int_equal (ppm_money_round_step (s_cur ("KWD"), 1239, false, &out), PPM_MONEY_OK);
    assert_int_equal (out, 1230);
    assert_int_equal (ppm_money_round_step (s_cur ("USD"), 1231, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 1231);
    assert_int_equal (ppm_money_round_step (s_cur ("UGX"), 0, true, &out), PPM_MONEY_OK);
    assert_int_equal (out, 0);
    assert_int_equal (ppm_money_round_step (s_cur ("UGX"), INT64_MAX, true, &out),
                      PPM_MONEY_OVERFLOW);
    assert_int_equal (ppm_money_round_step (s_cur ("UGX"), INT64_MAX, false, &out), PPM_MONEY_OK);
    assert_int_equal (out, INT64_MAX - INT64_MAX % 100);
    assert_int_equal (ppm_money_round_step (s_cur ("USD"), -1, true, &out), PPM_MONEY_NEGATIVE);
    assert_int_equal (ppm_money_round_step (NULL, 1, true, &out), PPM_MONEY_BAD_CURRENCY);
}

static void
test_format_parse (void **state)
{
    (void)state;
    char buf[32];
    assert_int_equal (ppm_money_format (s_cur ("USD"), 1234, buf, sizeof buf), 0);
    assert_string_equal (buf, "12.34");
    assert_int_equal (ppm_money_format (s_cur ("USD"), 5, buf, sizeof buf), 0);
    assert_string_equal (buf, "0.05");
    assert_int_equal (ppm_money_format (s_cur ("JPY"), 1234, buf, sizeof buf), 0);
    assert_string_equal (buf, "1234");
    assert_int_equal (ppm_money_format (s_cur ("KWD"), 1230, buf, sizeof buf), 0);
    assert_string_equal (buf, "1.230");
    assert_int_equal (ppm_money_format (s_cur ("USD"), -150, buf, sizeof buf), 0);
    assert_string_equal (buf, "-1.50");
    assert_int_equal (ppm_money_format (s_cur ("USD"), INT64_MIN, buf, sizeof buf), 0);
    assert_string_equal (buf, "-92233720368547758.08");
    char small[5];
    assert_int_equal (ppm_money_format (s_cur ("USD"), 12345, small, sizeof small), -1);
    assert_string_equal (small, "");
    assert_int_equal (ppm_money_format (NULL, 1, buf, sizeof buf), -1);

    int64_t out = -1;
    assert_int_equal (ppm_money_parse (s_cur ("USD"), "12.34", &out), PPM_MONEY_OK);
    assert_int_equal (out, 1234);
    assert_int_equal (ppm_money_parse (s_cur ("USD"), "12.5", &out), PPM_MONEY_OK);
    assert_int_equal (out, 1250);
    assert_int_equal (ppm_money_parse (s_cur ("USD"), "12", &out), PPM_MONEY_OK);
    assert_int_equal (out, 1200);
    assert_int_equal (ppm_money_parse (s_cur ("JPY"), "500", &out), PPM_MONEY_OK);
    assert_int_equal (out, 500);
    assert_int_equal (ppm_money_parse (s_cur ("KWD"), "1.23", &out), PPM_MONEY_OK);
    assert_int_equal (out, 1230);
    static const char *bad[] = {"",    "12.345", "1,00", "12.",  ".5",    "+1",
                                "1e2", " 1",     "1 ",   "0x10", "1.2.3", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal (ppm_money_parse (s_cur ("USD"), bad[i], &out), PPM_MONEY_BAD_FORMAT);
    assert_int_equal (ppm_money_parse (s_cur ("JPY"), "12.0", &out), PPM_MONEY_BAD_FORMAT);
    assert_int_equal (ppm_money_parse (s_cur ("KWD"), "1.2345", &out), PPM_MONEY_BAD_FORMAT);
    assert_int_equal (ppm_money_parse (s_cur ("USD"), "-1.00", &out), PPM_MONEY_NEGATIVE);
    assert_int_equal (ppm_money_parse (s_cur ("USD"), "92233720368547758.08", &out),
                      PPM_MONEY_OVERFLOW);
    assert_int_equal (ppm_money_parse (s_cur ("USD"), "92233720368547758.07", &out), PPM_MONEY_OK);
    assert_int_equal (out, INT64_MAX);
    assert_int_equal (ppm_money_parse (s_cur ("USD"), "92233720368547758", &out), PPM_MONEY_OK);
    assert_int_equal (ppm_money_parse (s_cur ("USD"), "92233720368547759", &out),
                      PPM_MONEY_OVERFLOW);
    assert_int_equal (ppm_money_parse (NULL, "1", &out), PPM_MONEY_BAD_CURRENCY);
    assert_int_equal (ppm_money_parse (s_cur ("USD"), NULL, &out), PPM_MONEY_BAD_FORMAT);

    /* Round trip for every currency and a spread of amounts. */
    static const int64_t amounts[] = {0, 1, 10, 99, 100, 12345, 99999999, INT64_MAX};
    for (size_t i = 0; i < ppm_currency_count (); i++) {
        const ppm_currency_t *currency = ppm_currency_at (i);
        for (size_t j = 0; j < sizeof amounts / sizeof amounts[0]; j++) {
            assert_int_equal (ppm_money_format (currency, amounts[j], buf, sizeof buf), 0);
            int64_t back = -1;
            assert_int_equal (ppm_money_parse (currency, buf, &back), PPM_MONEY_OK);
            assert_int_equal (back, amounts[j]);
        }
    }
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_table),      cmocka_unit_test (test_check_charge),
        cmocka_unit_test (test_overflow),   cmocka_unit_test (test_usage_rounding),
        cmocka_unit_test (test_round_step), cmocka_unit_test (test_format_parse),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
