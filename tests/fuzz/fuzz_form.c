/*  libFuzzer harness for ppm_form (common/ppm_form.c): decodes arbitrary
    bytes as an urlencoded body; when that succeeds, reads every nested
    accessor, re-encodes and decodes again, and checks the round trip gives
    the same pairs. Build and run: `make fuzz`; corpus: corpus/fuzz_form/. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_form.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    ppm_form_t *form = NULL;
    size_t offset = 0;
    ppm_form_err_t err = ppm_form_decode ((const char *)data, size, &form, &offset);
    if (err != PPM_FORM_OK) {
        assert (form == NULL);
        assert (offset <= size || err == PPM_FORM_TOO_LARGE);
        assert (ppm_form_strerror (err) != NULL);
        return 0;
    }
    size_t count = ppm_form_size (form);
    for (size_t i = 0; i < count; i++) {
        const char *key = ppm_form_key (form, i);
        assert (key && *key && strlen (key) <= PPM_FORM_MAX_KEY);
        assert (ppm_form_get (form, key) != NULL);
        char child[PPM_FORM_MAX_KEY + 1];
        (void)ppm_form_child (form, i, "metadata", child, sizeof child);
    }
    (void)ppm_form_has (form, "metadata");
    size_t items = ppm_form_array_count (form, "expand");
    for (size_t i = 0; i < items; i++)
        assert (ppm_form_array_at (form, "expand", i) != NULL);
    assert (ppm_form_array_at (form, "expand", items) == NULL);

    /* encode → decode gives the same pairs (the encoding may be longer
       than the cap: that is a clean error, not a crash) */
    char *body = ppm_form_encode (form, &err);
    if (body) {
        ppm_form_t *again = NULL;
        err = ppm_form_decode (body, strlen (body), &again, NULL);
        assert (err == PPM_FORM_OK);
        assert (ppm_form_size (again) == count);
        for (size_t i = 0; i < count; i++) {
            assert (strcmp (ppm_form_key (again, i), ppm_form_key (form, i)) == 0);
            assert (strcmp (ppm_form_value (again, i), ppm_form_value (form, i)) == 0);
        }
        ppm_form_destroy (&again);
        free (body);
    } else
        assert (err == PPM_FORM_TOO_LARGE || err == PPM_FORM_NO_MEMORY);
    ppm_form_destroy (&form);
    return 0;
}
