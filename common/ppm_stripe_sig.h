/*  ppm_stripe_sig: Stripe webhook signatures (the Stripe-Signature header).

    Stripe signs "<t>.<raw body>" with HMAC-SHA256 keyed by the whole
    endpoint secret string ("whsec_…", prefix included) and sends
    `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`; other schemes
    (v0, …) are ignored. The header is read the way Stripe's own libraries
    read it: split on ',', each item split on '=' (name = first piece, value = second), no trimming.
    Verification compares the expected signature with every v1 in constant
    time and then rejects a timestamp more than the tolerance away from now
    (either way). The payment service verifies with this module and the
    Stripe emulator signs with it, so both agree by construction; the unit
    tests pin it to vectors computed independently with openssl.

    No allocation: callers pass buffers. Facts: ../shared/STRIPE.md.
*/
#ifndef PPM_STRIPE_SIG_H_INCLUDED
#define PPM_STRIPE_SIG_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#define PPM_STRIPE_SIG_TOLERANCE_S 300  /* Stripe's default tolerance */
#define PPM_STRIPE_SIG_HEX_LEN     64   /* hex digits of one v1 */
#define PPM_STRIPE_SIG_MAX_HEADER  4096 /* a longer header is malformed */
#define PPM_STRIPE_SIG_MAX_V1      8    /* more v1 items is malformed */
/* Room for "t=<20 digits>,v1=<64 hex>" and its NUL. */
#define PPM_STRIPE_SIG_HEADER_SIZE 96

typedef enum {
    PPM_STRIPE_SIG_OK = 0,
    PPM_STRIPE_SIG_NO_HEADER,  /* header missing or empty */
    PPM_STRIPE_SIG_MALFORMED,  /* no t, a t that is not a number, too long */
    PPM_STRIPE_SIG_NO_V1,      /* no v1 signature in the header */
    PPM_STRIPE_SIG_TOLERANCE,  /* |now - t| above the tolerance */
    PPM_STRIPE_SIG_NO_MATCH,   /* no v1 matches the expected signature */
    PPM_STRIPE_SIG_BAD_SECRET, /* the secret is missing or empty */
    PPM_STRIPE_SIG_CRYPTO      /* the HMAC could not be computed */
} ppm_stripe_sig_err_t;

/* "no Stripe-Signature header", … (static strings). */
const char *ppm_stripe_sig_strerror (ppm_stripe_sig_err_t err);

/* Writes the lower-case hex HMAC-SHA256 of "<t>.<body>" keyed by secret
   into hex (PPM_STRIPE_SIG_HEX_LEN + 1 bytes). */
ppm_stripe_sig_err_t ppm_stripe_sig_compute (const char *secret, int64_t t, const void *body,
                                             size_t size, char *hex);

/* Writes the header value "t=<t>,v1=<hex>" into header (size bytes, at
   least PPM_STRIPE_SIG_HEADER_SIZE). */
ppm_stripe_sig_err_t ppm_stripe_sig_header (const char *secret, int64_t t, const void *body,
                                            size_t size, char *header, size_t header_size);

/* The parsed parts of a header. v1 points into the caller's header text
   (v1_len[i] bytes each, not NUL-terminated). */
typedef struct {
    int64_t t;                             /* the timestamp */
    const char *v1[PPM_STRIPE_SIG_MAX_V1]; /* each v1 value */
    size_t v1_len[PPM_STRIPE_SIG_MAX_V1];  /* and its length */
    size_t v1_count;                       /* v1 values found */
} ppm_stripe_sig_parts_t;

/* Parses a header (NUL-terminated). The last t item wins if several. */
ppm_stripe_sig_err_t ppm_stripe_sig_parse (const char *header, ppm_stripe_sig_parts_t *parts);

/* Verifies header against the raw body: parse, match any v1 in constant
   time, then |now_s - t| <= tolerance_s (tolerance_s <= 0: no time check).
   On success *t (when not NULL) is the header's timestamp. */
ppm_stripe_sig_err_t ppm_stripe_sig_verify (const char *header, const void *body, size_t size,
                                            const char *secret, int64_t now_s, int64_t tolerance_s,
                                            int64_t *t);

#endif
