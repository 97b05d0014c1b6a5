/*  libFuzzer harness for ppm_stripe_sig (common/ppm_stripe_sig.c): the
    input up to its first newline is a Stripe-Signature header, the rest
    the raw body. Parses and verifies (must never crash, every error named);
    and a header this module signs itself always verifies. Build and run:
    `make fuzz`; corpus: corpus/fuzz_stripe_sig/. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_stripe_sig.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define SECRET "whsec_fuzz"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    const uint8_t *newline = memchr (data, '\n', size);
    size_t header_len = newline ? (size_t)(newline - data) : size;
    const uint8_t *body = newline ? newline + 1 : data + size;
    size_t body_len = size - header_len - (newline ? 1 : 0);
    char *header = malloc (header_len + 1);
    if (!header)
        return 0;
    memcpy (header, data, header_len);
    header[header_len] = '\0';

    ppm_stripe_sig_parts_t parts;
    ppm_stripe_sig_err_t err = ppm_stripe_sig_parse (header, &parts);
    assert (ppm_stripe_sig_strerror (err) != NULL);
    if (err == PPM_STRIPE_SIG_OK) {
        assert (parts.v1_count >= 1 && parts.v1_count <= PPM_STRIPE_SIG_MAX_V1);
        for (size_t i = 0; i < parts.v1_count; i++)
            assert (parts.v1[i] >= header && parts.v1[i] + parts.v1_len[i] <= header + header_len);
    }
    int64_t t = 0;
    err = ppm_stripe_sig_verify (header, body, body_len, SECRET, 1700000000, 300, &t);
    assert (ppm_stripe_sig_strerror (err) != NULL);

    /* what we sign, we verify */
    int64_t when = (int64_t)(header_len * 7919) + 1600000000;
    char signed_header[PPM_STRIPE_SIG_HEADER_SIZE];
    err = ppm_stripe_sig_header (SECRET, when, body, body_len, signed_header, sizeof signed_header);
    assert (err == PPM_STRIPE_SIG_OK);
    err = ppm_stripe_sig_verify (signed_header, body, body_len, SECRET, when, 300, &t);
    assert (err == PPM_STRIPE_SIG_OK && t == when);
    free (header);
    return 0;
}
