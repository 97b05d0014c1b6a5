/*  fuzz_jwt: libFuzzer harness for the user tokens the gateway reads from
    every payer and payee request (common/ppm_jwt.c).

    The input is a token (NUL-ended copy). It is peeked (claims without the
    signature, as the gateway does to learn the tenant) and verified against
    a fixed secret at a fixed time; whatever the outcome, the error has a
    name and verified claims are within their caps. When the token is
    accepted, or when peek read its claims, those claims are signed again
    and the new token must verify to the same claims (sign/verify round
    trip). The input is also decoded as base64url, and what decodes must
    encode back to the same text.

    Build and run: `make fuzz`; corpus: corpus/fuzz_jwt/ (written by
    tests/fuzz/gen-seeds.sh). */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_jwt.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define S_SECRET "fuzz-user-token-secret-0123456789"
#define S_NOW    1800000000LL

static void
s_check_claims (const ppm_jwt_claims_t *claims)
{
    assert (strlen (claims->tid) <= PPM_JWT_MAX_ID);
    assert (strlen (claims->sub) <= PPM_JWT_MAX_ID);
    assert (claims->role_count <= PPM_JWT_MAX_ROLES);
    for (size_t i = 0; i < claims->role_count; i++)
        assert (strlen (claims->roles[i]) <= PPM_JWT_MAX_ID);
}

static void
s_round_trip (const ppm_jwt_claims_t *claims)
{
    char *token = ppm_jwt_sign (claims, (const uint8_t *)S_SECRET, strlen (S_SECRET));
    if (!token)
        return;
    ppm_jwt_claims_t again;
    ppm_jwt_err_t err = ppm_jwt_verify (token, (const uint8_t *)S_SECRET, strlen (S_SECRET),
                                        claims->exp - 1, &again);
    if (err == PPM_JWT_OK) {
        assert (strcmp (again.tid, claims->tid) == 0);
        assert (strcmp (again.sub, claims->sub) == 0);
        assert (again.role_count == claims->role_count);
        for (size_t i = 0; i < claims->role_count; i++)
            assert (strcmp (again.roles[i], claims->roles[i]) == 0);
        assert (again.exp == claims->exp);
    }
    free (token);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char *token = malloc (size + 1);
    if (!token)
        return 0;
    memcpy (token, data, size);
    token[size] = '\0';

    ppm_jwt_claims_t claims;
    ppm_jwt_err_t err = ppm_jwt_peek (token, &claims);
    assert (ppm_jwt_strerror (err) != NULL);
    if (err == PPM_JWT_OK) {
        s_check_claims (&claims);
        s_round_trip (&claims);
    }
    err = ppm_jwt_verify (token, (const uint8_t *)S_SECRET, strlen (S_SECRET), S_NOW, &claims);
    assert (ppm_jwt_strerror (err) != NULL);
    if (err == PPM_JWT_OK) {
        s_check_claims (&claims);
        assert (claims.exp > S_NOW);
    }

    /* base64url: what decodes encodes back to the same text */
    uint8_t out[PPM_JWT_MAX_LEN];
    int64_t n = ppm_base64url_decode (token, size, out, sizeof out);
    if (n >= 0) {
        assert ((size_t)n <= sizeof out);
        char *text = ppm_base64url_encode (out, (size_t)n);
        assert (text);
        assert (strlen (text) == size && memcmp (text, token, size) == 0);
        free (text);
    }
    free (token);
    return 0;
}
