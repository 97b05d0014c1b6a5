/*  ppm_jwt: HS256 JSON Web Tokens (see ppm_jwt.h for the contract).

    The header and claims are decoded into fixed buffers (sizes capped by
    PPM_JWT_MAX_LEN) and parsed with jansson; the algorithm is checked
    before the signature, and the signature before any claim is trusted.
*/
#include "ppm_jwt.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char s_b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

const char *
ppm_jwt_strerror (ppm_jwt_err_t err)
{
    switch (err) {
        case PPM_JWT_OK:
            return "ok";
        case PPM_JWT_MALFORMED:
            return "token is malformed";
        case PPM_JWT_BAD_ALG:
            return "token algorithm is not HS256";
        case PPM_JWT_BAD_SIGNATURE:
            return "token signature is invalid";
        case PPM_JWT_EXPIRED:
            return "token has expired";
        case PPM_JWT_BAD_CLAIMS:
            return "token claims are invalid";
        case PPM_JWT_TOO_LARGE:
            return "token is too large";
    }
    return "token is invalid";
}

char *
ppm_base64url_encode (const uint8_t *data, size_t size)
{
    size_t out_len = (size / 3) * 4 + (size % 3 ? size % 3 + 1 : 0);
    char *out = malloc (out_len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    size_t i = 0;
    while (i + 2 < size) {
        uint32_t v = ((uint32_t)data[i] << 16) | ((uint32_t)data[i + 1] << 8) | data[i + 2];
        out[o++] = s_b64url[(v >> 18) & 63];
        out[o++] = s_b64url[(v >> 12) & 63];
        out[o++] = s_b64url[(v >> 6) & 63];
        out[o++] = s_b64url[v & 63];
        i += 3;
    }
    if (size - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        out[o++] = s_b64url[(v >> 18) & 63];
        out[o++] = s_b64url[(v >> 12) & 63];
    } else if (size - i == 2) {
        uint32_t v = ((uint32_t)data[i] << 16) | ((uint32_t)data[i + 1] << 8);
        out[o++] = s_b64url[(v >> 18) & 63];
        out[o++] = s_b64url[(v >> 12) & 63];
        out[o++] = s_b64url[(v >> 6) & 63];
    }
    out[o] = '\0';
    return out;
}

static int
s_b64_value (char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int64_t
ppm_base64url_decode (const char *text, size_t len, uint8_t *out, size_t out_size)
{
    if (len % 4 == 1)
        return -1;
    size_t need = (len / 4) * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > out_size)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = s_b64_value (text[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)((acc >> bits) & 0xff);
        }
    }
    /* Leftover bits must be zero (canonical encoding). */
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
        return -1;
    return (int64_t)o;
}

/* Splits token into its three parts; returns false when it is not
   "a.b.c" with non-empty a and b. */
static bool
s_split (const char *token, size_t *dot1, size_t *dot2)
{
    const char *a = strchr (token, '.');
    if (!a)
        return false;
    const char *b = strchr (a + 1, '.');
    if (!b || strchr (b + 1, '.'))
        return false;
    *dot1 = (size_t)(a - token);
    *dot2 = (size_t)(b - token);
    return *dot1 > 0 && *dot2 > *dot1 + 1;
}

static json_t *
s_decode_json (const char *text, size_t len)
{
    uint8_t buf[PPM_JWT_MAX_LEN];
    int64_t n = ppm_base64url_decode (text, len, buf, sizeof buf);
    if (n <= 0)
        return NULL;
    json_t *json = json_loadb ((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (json && !json_is_object (json)) {
        json_decref (json);
        return NULL;
    }
    return json;
}

static bool
s_copy_id (json_t *value, char *out)
{
    if (!json_is_string (value))
        return false;
    const char *s = json_string_value (value);
    size_t len = json_string_length (value);
    if (len == 0 || len > PPM_JWT_MAX_ID || strlen (s) != len)
        return false;
    memcpy (out, s, len + 1);
    return true;
}

static ppm_jwt_err_t
s_parse (const char *token, ppm_jwt_claims_t *claims, size_t *dot1, size_t *dot2)
{
    memset (claims, 0, sizeof *claims);
    if (!token)
        return PPM_JWT_MALFORMED;
    if (strlen (token) > PPM_JWT_MAX_LEN)
        return PPM_JWT_TOO_LARGE;
    if (!s_split (token, dot1, dot2))
        return PPM_JWT_MALFORMED;

    json_t *header = s_decode_json (token, *dot1);
    if (!header)
        return PPM_JWT_MALFORMED;
    json_t *alg = json_object_get (header, "alg");
    bool hs256 = json_is_string (alg) && strcmp (json_string_value (alg), "HS256") == 0;
    json_t *typ = json_object_get (header, "typ");
    bool typ_ok = !typ || (json_is_string (typ) && strcmp (json_string_value (typ), "JWT") == 0);
    json_decref (header);
    if (!hs256)
        return PPM_JWT_BAD_ALG;
    if (!typ_ok)
        return PPM_JWT_MALFORMED;

    json_t *body = s_decode_json (token + *dot1 + 1, *dot2 - *dot1 - 1);
    if (!body)
        return PPM_JWT_MALFORMED;
    ppm_jwt_err_t rc = PPM_JWT_OK;
    if (!s_copy_id (json_object_get (body, "tid"), claims->tid) ||
        !s_copy_id (json_object_get (body, "sub"), claims->sub)) {
        rc = PPM_JWT_BAD_CLAIMS;
        goto cleanup;
    }
    json_t *exp = json_object_get (body, "exp");
    if (!json_is_integer (exp)) {
        rc = PPM_JWT_BAD_CLAIMS;
        goto cleanup;
    }
    claims->exp = json_integer_value (exp);
    json_t *iat = json_object_get (body, "iat");
    if (iat && json_is_integer (iat))
        claims->iat = json_integer_value (iat);
    json_t *roles = json_object_get (body, "roles");
    if (roles && !json_is_null (roles)) {
        if (!json_is_array (roles)) {
            rc = PPM_JWT_BAD_CLAIMS;
            goto cleanup;
        }
        if (json_array_size (roles) > PPM_JWT_MAX_ROLES) {
            rc = PPM_JWT_TOO_LARGE;
            goto cleanup;
        }
        size_t index;
        json_t *role;
        json_array_foreach (roles, index, role)
        {
            if (!s_copy_id (role, claims->roles[claims->role_count])) {
                rc = PPM_JWT_BAD_CLAIMS;
                goto cleanup;
            }
            claims->role_count++;
        }
    }
cleanup:
    json_decref (body);
    return rc;
}

ppm_jwt_err_t
ppm_jwt_peek (const char *token, ppm_jwt_claims_t *claims)
{
    size_t dot1, dot2;
    return s_parse (token, claims, &dot1, &dot2);
}

ppm_jwt_err_t
ppm_jwt_verify (const char *token, const uint8_t *secret, size_t secret_len, int64_t now_s,
                ppm_jwt_claims_t *claims)
{
    size_t dot1, dot2;
    ppm_jwt_err_t rc = s_parse (token, claims, &dot1, &dot2);
    if (rc != PPM_JWT_OK)
        return rc;
    if (!secret || secret_len == 0)
        return PPM_JWT_BAD_SIGNATURE;

    uint8_t given[64];
    const char *sig = token + dot2 + 1;
    int64_t given_len = ppm_base64url_decode (sig, strlen (sig), given, sizeof given);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (!HMAC (EVP_sha256 (), secret, (int)secret_len, (const uint8_t *)token, dot2, mac, &mac_len))
        return PPM_JWT_BAD_SIGNATURE;
    if (given_len != (int64_t)mac_len || CRYPTO_memcmp (given, mac, mac_len) != 0) {
        memset (claims, 0, sizeof *claims);
        return PPM_JWT_BAD_SIGNATURE;
    }
    if (claims->exp <= now_s)
        return PPM_JWT_EXPIRED;
    return PPM_JWT_OK;
}

char *
ppm_jwt_sign (const ppm_jwt_claims_t *claims, const uint8_t *secret, size_t secret_len)
{
    if (!claims || !secret || secret_len == 0 || !claims->tid[0] || !claims->sub[0] ||
        claims->role_count > PPM_JWT_MAX_ROLES)
        return NULL;
    char *result = NULL;
    char *h64 = NULL;
    char *b64 = NULL;
    char *s64 = NULL;
    char *body_text = NULL;
    json_t *body = json_pack ("{s:s, s:s, s:I}", "tid", claims->tid, "sub", claims->sub, "exp",
                              (json_int_t)claims->exp);
    if (!body)
        return NULL;
    json_t *roles = json_array ();
    for (size_t i = 0; i < claims->role_count; i++)
        json_array_append_new (roles, json_string (claims->roles[i]));
    json_object_set_new (body, "roles", roles);
    if (claims->iat)
        json_object_set_new (body, "iat", json_integer ((json_int_t)claims->iat));
    body_text = json_dumps (body, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref (body);
    if (!body_text)
        goto cleanup;
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    h64 = ppm_base64url_encode ((const uint8_t *)header, strlen (header));
    b64 = ppm_base64url_encode ((const uint8_t *)body_text, strlen (body_text));
    if (!h64 || !b64)
        goto cleanup;
    size_t signing_len = strlen (h64) + 1 + strlen (b64);
    char *signing = malloc (signing_len + 1);
    if (!signing)
        goto cleanup;
    snprintf (signing, signing_len + 1, "%s.%s", h64, b64);
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (HMAC (EVP_sha256 (), secret, (int)secret_len, (const uint8_t *)signing, signing_len, mac,
              &mac_len))
        s64 = ppm_base64url_encode (mac, mac_len);
    if (s64) {
        size_t total = signing_len + 1 + strlen (s64);
        result = malloc (total + 1);
        if (result)
            snprintf (result, total + 1, "%s.%s", signing, s64);
    }
    free (signing);
cleanup:
    free (body_text);
    free (h64);
    free (b64);
    free (s64);
    return result;
}
