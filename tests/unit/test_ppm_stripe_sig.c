/*  Unit tests of ppm_stripe_sig: signing matches vectors computed
    independently with `openssl dgst -sha256 -hmac <secret>` over
    "<t>.<body>" when these tests were written, and verification follows
    Stripe's libraries (split on ',', then '='; every v1; tolerance). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ppm_stripe_sig.h"

#define BODY1   "{\"id\":\"evt_test_1\",\"object\":\"event\"}"
#define SECRET1 "whsec_test_secret"
/* printf '%s' '1700000000.{"id":"evt_test_1","object":"event"}' |
   openssl dgst -sha256 -hmac 'whsec_test_secret' */
#define SIG1 "29ab30b7065c11b28e53ac114fac5d6c492ed811a12d11ed2c2aad5bb4cf9809"
/* the same body signed with 'whsec_other' */
#define SIG1_OTHER "1e2e0551a8a0c4d75738fd6666928fc659d73d2e5ea3964c41b7c9012a8c1e57"
/* printf '%s' '1700000000.' | openssl dgst -sha256 -hmac 'whsec_test_secret' */
#define SIG_EMPTY "316b9ab98c15bfa039d243f3196acee619cf29749a91a634e6a8154e2f7b6727"
/* printf '%s' '1614556800.{"id": "evt_1", "type": "payment_intent.succeeded"}' |
   openssl dgst -sha256 -hmac 'whsec_plJ8ZqQ0h6Yb' */
#define BODY2 "{\"id\": \"evt_1\", \"type\": \"payment_intent.succeeded\"}"
#define SIG2  "18b24439b16854eda94a08f6c6b5ce3396f07f27ccf2e948f67f5d66f8c4478a"
#define T1    1700000000

static void
test_compute_vectors (void **state)
{
    (void)state;
    char hex[PPM_STRIPE_SIG_HEX_LEN + 1];
    assert_int_equal (ppm_stripe_sig_compute (SECRET1, T1, BODY1, strlen (BODY1), hex),
                      PPM_STRIPE_SIG_OK);
    assert_string_equal (hex, SIG1);
    assert_int_equal (ppm_stripe_sig_compute ("whsec_other", T1, BODY1, strlen (BODY1), hex),
                      PPM_STRIPE_SIG_OK);
    assert_string_equal (hex, SIG1_OTHER);
    assert_int_equal (ppm_stripe_sig_compute (SECRET1, T1, "", 0, hex), PPM_STRIPE_SIG_OK);
    assert_string_equal (hex, SIG_EMPTY);
    assert_int_equal (
        ppm_stripe_sig_compute ("whsec_plJ8ZqQ0h6Yb", 1614556800, BODY2, strlen (BODY2), hex),
        PPM_STRIPE_SIG_OK);
    assert_string_equal (hex, SIG2);
    assert_int_equal (ppm_stripe_sig_compute ("", T1, "", 0, hex), PPM_STRIPE_SIG_BAD_SECRET);
    assert_int_equal (ppm_stripe_sig_compute (NULL, T1, "", 0, hex), PPM_STRIPE_SIG_BAD_SECRET);

    char header[PPM_STRIPE_SIG_HEADER_SIZE];
    assert_int_equal (
        ppm_stripe_sig_header (SECRET1, T1, BODY1, strlen (BODY1), header, sizeof header),
        PPM_STRIPE_SIG_OK);
    assert_string_equal (header, "t=1700000000,v1=" SIG1);
    char small[20];
    assert_int_equal (
        ppm_stripe_sig_header (SECRET1, T1, BODY1, strlen (BODY1), small, sizeof small),
        PPM_STRIPE_SIG_MALFORMED);
}

static ppm_stripe_sig_err_t
s_verify (const char *header, int64_t now)
{
    return ppm_stripe_sig_verify (header, BODY1, strlen (BODY1), SECRET1, now,
                                  PPM_STRIPE_SIG_TOLERANCE_S, NULL);
}

static void
test_verify (void **state)
{
    (void)state;
    int64_t t = 0;
    assert_int_equal (ppm_stripe_sig_verify ("t=1700000000,v1=" SIG1, BODY1, strlen (BODY1),
                                             SECRET1, T1 + 10, 300, &t),
                      PPM_STRIPE_SIG_OK);
    assert_int_equal (t, T1);
    /* secret being rolled: two v1, either may match; v0 and others ignored */
    assert_int_equal (s_verify ("t=1700000000,v1=" SIG1_OTHER ",v1=" SIG1, T1), PPM_STRIPE_SIG_OK);
    assert_int_equal (s_verify ("t=1700000000,v0=abc,v1=" SIG1 ",x=y", T1), PPM_STRIPE_SIG_OK);
    assert_int_equal (s_verify ("v1=" SIG1 ",t=1700000000", T1), PPM_STRIPE_SIG_OK);
    /* wrong secret, tampered body, upper-case hex (Stripe compares strings) */
    assert_int_equal (s_verify ("t=1700000000,v1=" SIG1_OTHER, T1), PPM_STRIPE_SIG_NO_MATCH);
    assert_int_equal (
        ppm_stripe_sig_verify ("t=1700000000,v1=" SIG1, "{}", 2, SECRET1, T1, 300, NULL),
        PPM_STRIPE_SIG_NO_MATCH);
    assert_int_equal (s_verify ("t=1700000000,v1=29AB30B7065C11B28E53AC114FAC5D6C492ED811A12D11ED"
                                "2C2AAD5BB4CF9809",
                                T1),
                      PPM_STRIPE_SIG_NO_MATCH);
    /* a signature for another t does not match */
    assert_int_equal (s_verify ("t=1700000001,v1=" SIG1, T1), PPM_STRIPE_SIG_NO_MATCH);
    /* Stripe's libraries do not trim: " v1=" is another scheme */
    assert_int_equal (s_verify ("t=1700000000, v1=" SIG1, T1), PPM_STRIPE_SIG_NO_V1);
    /* tolerance both ways, boundary included */
    assert_int_equal (s_verify ("t=1700000000,v1=" SIG1, T1 + 300), PPM_STRIPE_SIG_OK);
    assert_int_equal (s_verify ("t=1700000000,v1=" SIG1, T1 + 301), PPM_STRIPE_SIG_TOLERANCE);
    assert_int_equal (s_verify ("t=1700000000,v1=" SIG1, T1 - 301), PPM_STRIPE_SIG_TOLERANCE);
    assert_int_equal (ppm_stripe_sig_verify ("t=1700000000,v1=" SIG1, BODY1, strlen (BODY1),
                                             SECRET1, T1 + 100000, 0, NULL),
                      PPM_STRIPE_SIG_OK);
    /* malformed headers */
    assert_int_equal (s_verify (NULL, T1), PPM_STRIPE_SIG_NO_HEADER);
    assert_int_equal (s_verify ("", T1), PPM_STRIPE_SIG_NO_HEADER);
    assert_int_equal (s_verify ("v1=" SIG1, T1), PPM_STRIPE_SIG_MALFORMED);
    assert_int_equal (s_verify ("t=abc,v1=" SIG1, T1), PPM_STRIPE_SIG_MALFORMED);
    assert_int_equal (s_verify ("t=,v1=" SIG1, T1), PPM_STRIPE_SIG_MALFORMED);
    assert_int_equal (s_verify ("t=99999999999999999999,v1=" SIG1, T1), PPM_STRIPE_SIG_MALFORMED);
    assert_int_equal (s_verify ("t=1700000000", T1), PPM_STRIPE_SIG_NO_V1);
    assert_int_equal (s_verify ("t=1700000000,v0=" SIG1, T1), PPM_STRIPE_SIG_NO_V1);
    assert_int_equal (s_verify ("garbage", T1), PPM_STRIPE_SIG_MALFORMED);
    assert_int_equal (
        ppm_stripe_sig_verify ("t=1700000000,v1=" SIG1, BODY1, strlen (BODY1), "", T1, 300, NULL),
        PPM_STRIPE_SIG_BAD_SECRET);
    /* caps: too many v1, too long */
    char many[2048] = "t=1700000000";
    for (int i = 0; i <= PPM_STRIPE_SIG_MAX_V1; i++)
        strncat (many, ",v1=" SIG1, sizeof many - strlen (many) - 1);
    assert_int_equal (s_verify (many, T1), PPM_STRIPE_SIG_MALFORMED);
    char huge[PPM_STRIPE_SIG_MAX_HEADER + 64];
    memset (huge, 'a', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    memcpy (huge, "t=1,v1=", 7);
    assert_int_equal (s_verify (huge, T1), PPM_STRIPE_SIG_MALFORMED);
    /* every error has a name */
    for (int e = PPM_STRIPE_SIG_OK; e <= PPM_STRIPE_SIG_CRYPTO; e++)
        assert_non_null (strstr (ppm_stripe_sig_strerror ((ppm_stripe_sig_err_t)e), ""));
    assert_string_equal (ppm_stripe_sig_strerror (PPM_STRIPE_SIG_TOLERANCE),
                         "Stripe-Signature timestamp outside the tolerance zone");
}

static void
test_parse (void **state)
{
    (void)state;
    ppm_stripe_sig_parts_t parts;
    assert_int_equal (ppm_stripe_sig_parse ("t=5,v1=ab,v0=cd,v1=ef=gh", &parts), PPM_STRIPE_SIG_OK);
    assert_int_equal (parts.t, 5);
    assert_int_equal (parts.v1_count, 2);
    assert_int_equal (parts.v1_len[0], 2);
    assert_memory_equal (parts.v1[0], "ab", 2);
    /* item.split('=')[1], as Stripe's libraries read it */
    assert_int_equal (parts.v1_len[1], 2);
    assert_memory_equal (parts.v1[1], "ef", 2);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_compute_vectors),
        cmocka_unit_test (test_verify),
        cmocka_unit_test (test_parse),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
