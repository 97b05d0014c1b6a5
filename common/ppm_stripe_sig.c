/*  ppm_stripe_sig: sign and verify Stripe-Signature headers. See the header
    for the contract; HMAC from OpenSSL, constant-time compare with
    CRYPTO_memcmp.
*/
#include "ppm_stripe_sig.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

const char *
ppm_stripe_sig_strerror (ppm_stripe_sig_err_t err)
{
    switch (err) {
        case PPM_STRIPE_SIG_OK:
            return "ok";
        case PPM_STRIPE_SIG_NO_HEADER:
            return "no Stripe-Signature header";
        case PPM_STRIPE_SIG_MALFORMED:
            return "malformed Stripe-Signature header";
        case PPM_STRIPE_SIG_NO_V1:
            return "no v1 signature in Stripe-Signature header";
        case PPM_STRIPE_SIG_TOLERANCE:
            return "Stripe-Signature timestamp outside the tolerance zone";
        case PPM_STRIPE_SIG_NO_MATCH:
            return "no signature matches the expected signature for the payload";
        case PPM_STRIPE_SIG_BAD_SECRET:
            return "no webhook secret";
        case PPM_STRIPE_SIG_CRYPTO:
            return "HMAC-SHA256 failed";
    }
    return "unknown signature error";
}

ppm_stripe_sig_err_t
ppm_stripe_sig_compute (const char *secret, int64_t t, const void *body, size_t size, char *hex)
{
    if (!secret || !*secret)
        return PPM_STRIPE_SIG_BAD_SECRET;
    char prefix[32];
    int prefix_len = snprintf (prefix, sizeof prefix, "%" PRId64 ".", t);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    ppm_stripe_sig_err_t err = PPM_STRIPE_SIG_CRYPTO;
    /* EVP_MAC (OpenSSL 3): HMAC_CTX is deprecated, and the one-shot HMAC ()
       would need "<t>." and the body copied into one buffer. */
    EVP_MAC *mac_alg = EVP_MAC_fetch (NULL, "HMAC", NULL);
    EVP_MAC_CTX *mctx = mac_alg ? EVP_MAC_CTX_new (mac_alg) : NULL;
    if (!mctx)
        goto cleanup;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string ("digest", (char *)"SHA256", 0),
        OSSL_PARAM_construct_end (),
    };
    if (!EVP_MAC_init (mctx, (const unsigned char *)secret, strlen (secret), params))
        goto cleanup;
    if (!EVP_MAC_update (mctx, (const unsigned char *)prefix, (size_t)prefix_len))
        goto cleanup;
    if (size > 0 && !EVP_MAC_update (mctx, body, size))
        goto cleanup;
    size_t out_len = 0;
    if (!EVP_MAC_final (mctx, mac, &out_len, sizeof mac) || out_len != 32)
        goto cleanup;
    mac_len = (unsigned int)out_len;
    static const char digits[] = "0123456789abcdef";
    for (unsigned int i = 0; i < mac_len; i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 0x0F];
    }
    hex[2 * mac_len] = '\0';
    err = PPM_STRIPE_SIG_OK;
cleanup:
    EVP_MAC_CTX_free (mctx);
    EVP_MAC_free (mac_alg);
    return err;
}

ppm_stripe_sig_err_t
ppm_stripe_sig_header (const char *secret, int64_t t, const void *body, size_t size, char *header,
                       size_t header_size)
{
    char hex[PPM_STRIPE_SIG_HEX_LEN + 1];
    ppm_stripe_sig_err_t err = ppm_stripe_sig_compute (secret, t, body, size, hex);
    if (err != PPM_STRIPE_SIG_OK)
        return err;
    int len = snprintf (header, header_size, "t=%" PRId64 ",v1=%s", t, hex);
    if (len < 0 || (size_t)len >= header_size)
        return PPM_STRIPE_SIG_MALFORMED;
    return PPM_STRIPE_SIG_OK;
}

/* Parses a decimal int64 from text[0..len): digits only (an optional
   leading '-' as Python's int () would take), no overflow. */
static bool
s_parse_int64 (const char *text, size_t len, int64_t *out)
{
    bool negative = false;
    size_t i = 0;
    if (len > 0 && text[0] == '-') {
        negative = true;
        i = 1;
    }
    if (i == len)
        return false;
    int64_t value = 0;
    for (; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        int digit = text[i] - '0';
        if (value > (INT64_MAX - digit) / 10)
            return false;
        value = value * 10 + digit;
    }
    *out = negative ? -value : value;
    return true;
}

ppm_stripe_sig_err_t
ppm_stripe_sig_parse (const char *header, ppm_stripe_sig_parts_t *parts)
{
    memset (parts, 0, sizeof *parts);
    if (!header || !*header)
        return PPM_STRIPE_SIG_NO_HEADER;
    size_t total = strnlen (header, PPM_STRIPE_SIG_MAX_HEADER + 1);
    if (total > PPM_STRIPE_SIG_MAX_HEADER)
        return PPM_STRIPE_SIG_MALFORMED;
    bool have_t = false;
    const char *item = header;
    while (true) {
        const char *comma = memchr (item, ',', total - (size_t)(item - header));
        size_t len = comma ? (size_t)(comma - item) : total - (size_t)(item - header);
        const char *eq = memchr (item, '=', len);
        if (eq) {
            size_t name_len = (size_t)(eq - item);
            const char *value = eq + 1;
            size_t value_len = len - name_len - 1;
            /* as item.split('=')[1] in Stripe's libraries: up to a second '=' */
            const char *eq2 = memchr (value, '=', value_len);
            if (eq2)
                value_len = (size_t)(eq2 - value);
            if (name_len == 1 && item[0] == 't') {
                if (!s_parse_int64 (value, value_len, &parts->t))
                    return PPM_STRIPE_SIG_MALFORMED;
                have_t = true;
            } else if (name_len == 2 && item[0] == 'v' && item[1] == '1') {
                if (parts->v1_count == PPM_STRIPE_SIG_MAX_V1)
                    return PPM_STRIPE_SIG_MALFORMED;
                parts->v1[parts->v1_count] = value;
                parts->v1_len[parts->v1_count] = value_len;
                parts->v1_count++;
            }
        }
        if (!comma)
            break;
        item = comma + 1;
    }
    if (!have_t)
        return PPM_STRIPE_SIG_MALFORMED;
    if (parts->v1_count == 0)
        return PPM_STRIPE_SIG_NO_V1;
    return PPM_STRIPE_SIG_OK;
}

ppm_stripe_sig_err_t
ppm_stripe_sig_verify (const char *header, const void *body, size_t size, const char *secret,
                       int64_t now_s, int64_t tolerance_s, int64_t *t)
{
    if (!secret || !*secret)
        return PPM_STRIPE_SIG_BAD_SECRET;
    ppm_stripe_sig_parts_t parts;
    ppm_stripe_sig_err_t err = ppm_stripe_sig_parse (header, &parts);
    if (err != PPM_STRIPE_SIG_OK)
        return err;
    char expected[PPM_STRIPE_SIG_HEX_LEN + 1];
    err = ppm_stripe_sig_compute (secret, parts.t, body, size, expected);
    if (err != PPM_STRIPE_SIG_OK)
        return err;
    bool match = false;
    for (size_t i = 0; i < parts.v1_count; i++) {
        /* Lengths are public (always 64 for a real signature); compare the
           bytes in constant time, and look at every v1 either way. */
        if (parts.v1_len[i] == PPM_STRIPE_SIG_HEX_LEN &&
            CRYPTO_memcmp (parts.v1[i], expected, PPM_STRIPE_SIG_HEX_LEN) == 0)
            match = true;
    }
    if (!match)
        return PPM_STRIPE_SIG_NO_MATCH;
    if (tolerance_s > 0) {
        /* |now - t| without overflow for any int64 t */
        bool outside = parts.t > now_s
                           ? (uint64_t)parts.t - (uint64_t)now_s > (uint64_t)tolerance_s
                           : (uint64_t)now_s - (uint64_t)parts.t > (uint64_t)tolerance_s;
        if (outside)
            return PPM_STRIPE_SIG_TOLERANCE;
    }
    if (t)
        *t = parts.t;
    return PPM_STRIPE_SIG_OK;
}
