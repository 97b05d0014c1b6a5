/*  ppm_jwt: the user tokens of ppm's public API (HS256 JSON Web Tokens).

    A platform's backend issues each of its users a token signed with the
    tenant's user-token secret; the gateway verifies it on every payer and
    payee request. Only HS256 is accepted: a header naming any other
    algorithm ("none", "RS256", "HS512", …) is refused before any signature
    work, so a token cannot choose how it is checked. The signature is
    HMAC-SHA256 (OpenSSL) compared in constant time. Claims: "tid" (tenant),
    "sub" (user id), "roles" (array of strings, optional), "exp" (Unix
    seconds, required), "iat" (optional). Sizes are capped: a token longer
    than PPM_JWT_MAX_LEN, or with more than PPM_JWT_MAX_ROLES roles, is
    refused.

    ppm_jwt_sign mints a token (ppmctl, the demo set-up, tests).
*/
#ifndef PPM_JWT_H_INCLUDED
#define PPM_JWT_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#define PPM_JWT_MAX_LEN   4096
#define PPM_JWT_MAX_ROLES 16
#define PPM_JWT_MAX_ID    128

typedef enum {
    PPM_JWT_OK = 0,
    PPM_JWT_MALFORMED,     /* not three base64url parts of JSON */
    PPM_JWT_BAD_ALG,       /* alg is not HS256 (none, RS256, …) */
    PPM_JWT_BAD_SIGNATURE, /* signature does not match the secret */
    PPM_JWT_EXPIRED,       /* exp is in the past (or missing) */
    PPM_JWT_BAD_CLAIMS,    /* tid/sub missing, too long, roles not strings */
    PPM_JWT_TOO_LARGE      /* token or a claim over its cap */
} ppm_jwt_err_t;

/* The verified claims. Strings are owned by the struct. */
typedef struct {
    char tid[PPM_JWT_MAX_ID + 1];
    char sub[PPM_JWT_MAX_ID + 1];
    char roles[PPM_JWT_MAX_ROLES][PPM_JWT_MAX_ID + 1];
    size_t role_count;
    int64_t exp; /* Unix seconds */
    int64_t iat; /* Unix seconds, 0 when absent */
} ppm_jwt_claims_t;

const char *ppm_jwt_strerror (ppm_jwt_err_t err);

/* Reads the claims of token WITHOUT checking the signature, so that the
   caller can learn the tenant whose secret verifies it. Never trust the
   result before ppm_jwt_verify. */
ppm_jwt_err_t ppm_jwt_peek (const char *token, ppm_jwt_claims_t *claims);

/* Verifies token against secret (secret_len bytes) at now_s (Unix seconds)
   and fills claims. Returns PPM_JWT_OK or the first reason for refusal. */
ppm_jwt_err_t ppm_jwt_verify (const char *token, const uint8_t *secret, size_t secret_len,
                              int64_t now_s, ppm_jwt_claims_t *claims);

/* Mints an HS256 token for claims (roles may be empty; iat 0 = omitted).
   Returns a string the caller frees, or NULL on a bad input. */
char *ppm_jwt_sign (const ppm_jwt_claims_t *claims, const uint8_t *secret, size_t secret_len);

/* base64url without padding; exposed for tests. _encode returns a string
   the caller frees; _decode returns the number of bytes written to out
   (at most out_size), or -1 when the text is not base64url or too long. */
char *ppm_base64url_encode (const uint8_t *data, size_t size);
int64_t ppm_base64url_decode (const char *text, size_t len, uint8_t *out, size_t out_size);

#endif
