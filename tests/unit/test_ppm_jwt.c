/*  Unit tests of ppm_jwt: round trip, forged, expired, alg none and other
    algorithms, another tenant's secret, malformed tokens and caps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ppm_jwt.h"

static const uint8_t s_secret[] = "tenant-one-secret-0123456789abcdef";
static const uint8_t s_other[] = "tenant-two-secret-0123456789abcdef";
#define NOW 1800000000

static char *
s_token (const char *tid, const char *sub, int64_t exp)
{
    ppm_jwt_claims_t claims;
    memset (&claims, 0, sizeof claims);
    snprintf (claims.tid, sizeof claims.tid, "%s", tid);
    snprintf (claims.sub, sizeof claims.sub, "%s", sub);
    snprintf (claims.roles[0], sizeof claims.roles[0], "coach");
    claims.role_count = 1;
    claims.exp = exp;
    claims.iat = NOW - 10;
    return ppm_jwt_sign (&claims, s_secret, sizeof s_secret - 1);
}

/* Builds header.body.signature from raw JSON parts (signature given). */
static char *
s_raw (const char *header, const char *body, const char *sig)
{
    char *h = ppm_base64url_encode ((const uint8_t *)header, strlen (header));
    char *b = ppm_base64url_encode ((const uint8_t *)body, strlen (body));
    size_t n = strlen (h) + strlen (b) + strlen (sig) + 3;
    char *out = malloc (n);
    snprintf (out, n, "%s.%s.%s", h, b, sig);
    free (h);
    free (b);
    return out;
}

static void
test_round_trip (void **state)
{
    (void)state;
    char *token = s_token ("t_1", "u_payer", NOW + 600);
    assert_non_null (token);
    ppm_jwt_claims_t claims;
    assert_int_equal (ppm_jwt_verify (token, s_secret, sizeof s_secret - 1, NOW, &claims),
                      PPM_JWT_OK);
    assert_string_equal (claims.tid, "t_1");
    assert_string_equal (claims.sub, "u_payer");
    assert_int_equal (claims.role_count, 1);
    assert_string_equal (claims.roles[0], "coach");
    assert_int_equal (claims.exp, NOW + 600);
    assert_int_equal (claims.iat, NOW - 10);
    /* peek tells the tenant without the secret */
    ppm_jwt_claims_t peeked;
    assert_int_equal (ppm_jwt_peek (token, &peeked), PPM_JWT_OK);
    assert_string_equal (peeked.tid, "t_1");
    free (token);
}

static void
test_expired_and_other_secret (void **state)
{
    (void)state;
    char *token = s_token ("t_1", "u_payer", NOW - 1);
    ppm_jwt_claims_t claims;
    assert_int_equal (ppm_jwt_verify (token, s_secret, sizeof s_secret - 1, NOW, &claims),
                      PPM_JWT_EXPIRED);
    free (token);
    token = s_token ("t_1", "u_payer", NOW + 60);
    /* another tenant's secret does not verify it */
    assert_int_equal (ppm_jwt_verify (token, s_other, sizeof s_other - 1, NOW, &claims),
                      PPM_JWT_BAD_SIGNATURE);
    assert_string_equal (claims.tid, "");
    assert_int_equal (ppm_jwt_verify (token, s_secret, 0, NOW, &claims), PPM_JWT_BAD_SIGNATURE);
    free (token);
}

static void
test_forged (void **state)
{
    (void)state;
    char *token = s_token ("t_1", "u_payer", NOW + 60);
    /* change the claims, keep the signature */
    char *sig = strrchr (token, '.') + 1;
    char *forged = s_raw ("{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
                          "{\"tid\":\"t_1\",\"sub\":\"u_admin\",\"exp\":1900000000}", sig);
    ppm_jwt_claims_t claims;
    assert_int_equal (ppm_jwt_verify (forged, s_secret, sizeof s_secret - 1, NOW, &claims),
                      PPM_JWT_BAD_SIGNATURE);
    free (forged);
    /* flip one character of the signature */
    char *copy = strdup (token);
    char *last = copy + strlen (copy) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    assert_int_equal (ppm_jwt_verify (copy, s_secret, sizeof s_secret - 1, NOW, &claims),
                      PPM_JWT_BAD_SIGNATURE);
    free (copy);
    free (token);
}

static void
test_alg_none_and_others (void **state)
{
    (void)state;
    const char *body = "{\"tid\":\"t_1\",\"sub\":\"u_payer\",\"exp\":1900000000}";
    ppm_jwt_claims_t claims;
    const char *headers[] = {"{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"alg\":\"HS512\"}",
                             "{\"alg\":\"RS256\"}", "{\"alg\":\"hs256\"}", "{\"typ\":\"JWT\"}"};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        char *token = s_raw (headers[i], body, "");
        assert_int_equal (ppm_jwt_verify (token, s_secret, sizeof s_secret - 1, NOW, &claims),
                          PPM_JWT_MALFORMED == ppm_jwt_peek (token, &claims) ? PPM_JWT_MALFORMED
                                                                             : PPM_JWT_BAD_ALG);
        free (token);
        token = s_raw (headers[i], body, "c2ln");
        assert_int_equal (ppm_jwt_verify (token, s_secret, sizeof s_secret - 1, NOW, &claims),
                          PPM_JWT_BAD_ALG);
        free (token);
    }
}

static void
test_malformed_and_caps (void **state)
{
    (void)state;
    ppm_jwt_claims_t claims;
    const char *bad[] = {"", "abc", "a.b", "a.b.c.d", "..", "!!!.???.xx", "e30.e30.e30"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_not_equal (ppm_jwt_verify (bad[i], s_secret, sizeof s_secret - 1, NOW, &claims),
                              PPM_JWT_OK);
    assert_int_equal (ppm_jwt_verify (NULL, s_secret, 4, NOW, &claims), PPM_JWT_MALFORMED);
    /* claims missing or of the wrong type */
    char *token = s_raw ("{\"alg\":\"HS256\"}", "{\"sub\":\"u\",\"exp\":1900000000}", "c2ln");
    assert_int_equal (ppm_jwt_peek (token, &claims), PPM_JWT_BAD_CLAIMS);
    free (token);
    token = s_raw ("{\"alg\":\"HS256\"}", "{\"tid\":\"t\",\"sub\":\"u\"}", "c2ln");
    assert_int_equal (ppm_jwt_peek (token, &claims), PPM_JWT_BAD_CLAIMS);
    free (token);
    token = s_raw ("{\"alg\":\"HS256\"}",
                   "{\"tid\":\"t\",\"sub\":\"u\",\"exp\":1900000000,\"roles\":[1]}", "c2ln");
    assert_int_equal (ppm_jwt_peek (token, &claims), PPM_JWT_BAD_CLAIMS);
    free (token);
    /* oversize token */
    char *huge = malloc (PPM_JWT_MAX_LEN + 10);
    memset (huge, 'a', PPM_JWT_MAX_LEN + 9);
    huge[PPM_JWT_MAX_LEN + 9] = '\0';
    assert_int_equal (ppm_jwt_peek (huge, &claims), PPM_JWT_TOO_LARGE);
    free (huge);
    assert_non_null (ppm_jwt_strerror (PPM_JWT_EXPIRED));
}

static void
test_base64url (void **state)
{
    (void)state;
    const char *inputs[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *expect[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (size_t i = 0; i < 7; i++) {
        char *enc = ppm_base64url_encode ((const uint8_t *)inputs[i], strlen (inputs[i]));
        assert_string_equal (enc, expect[i]);
        uint8_t out[16];
        int64_t n = ppm_base64url_decode (enc, strlen (enc), out, sizeof out);
        assert_int_equal (n, (int64_t)strlen (inputs[i]));
        assert_memory_equal (out, inputs[i], (size_t)n);
        free (enc);
    }
    uint8_t out[4];
    assert_int_equal (ppm_base64url_decode ("Zm9vYmFy", 8, out, sizeof out), -1);
    assert_int_equal (ppm_base64url_decode ("Z", 1, out, sizeof out), -1);
    assert_int_equal (ppm_base64url_decode ("Zm+v", 4, out, sizeof out), -1);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_round_trip),
        cmocka_unit_test (test_expired_and_other_secret),
        cmocka_unit_test (test_forged),
        cmocka_unit_test (test_alg_none_and_others),
        cmocka_unit_test (test_malformed_and_caps),
        cmocka_unit_test (test_base64url),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
