/*  fuzz_metering_snap: libFuzzer harness for the metering service's
    decoding of a session read back from its stores
    (services/metering/metering_model.c): the Redis hash (HGETALL and the
    tick script's replies) and PostgreSQL snapshot rows are text fields
    parsed by metering_snap_set. A store that was tampered with, truncated
    or written by another version must give an error, never a crash or
    undefined behaviour (signed overflow) in the arithmetic that follows.

    Input: lines "FIELD=VALUE" applied in order to a fresh snapshot. When
    every line parsed, the clock and billing are computed at several
    instants (used, remaining, expiry, paid time used, amount billed) and
    the snapshot is turned into a ppm.v1.Session and packed, as metering.Get
    answers it.

    Build and run: `make fuzz`; corpus: corpus/fuzz_metering_snap/ (written
    by tests/fuzz/gen-seeds.sh). */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/metering/metering_model.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char *text = malloc (size + 1);
    if (!text)
        return 0;
    memcpy (text, data, size);
    text[size] = '\0';
    metering_snap_t snap;
    metering_snap_reset (&snap, "s0000000000000000");
    int rc = 0;
    char *line = text;
    while (line && rc == 0) {
        char *next = strchr (line, '\n');
        if (next)
            *next++ = '\0';
        char *eq = strchr (line, '=');
        if (eq) {
            *eq = '\0';
            rc = metering_snap_set (&snap, line, eq + 1);
        }
        line = next;
    }
    if (rc == 0) {
        assert (snap.marks_count <= METERING_MARKS_MAX);
        const int64_t instants[] = {0, 1800000000000LL, snap.anchor_ms, 4102444800000LL};
        for (size_t i = 0; i < sizeof instants / sizeof instants[0]; i++) {
            int64_t now = instants[i];
            (void)metering_snap_used (&snap, now);
            (void)metering_snap_remaining (&snap, now);
            (void)metering_snap_expires_at (&snap);
            (void)metering_snap_paid_used (&snap, now);
            int64_t billed = 0;
            (void)metering_snap_billed (&snap, now, &billed);
            Ppm__V1__Session session = PPM__V1__SESSION__INIT;
            metering_snap_to_proto (&snap, now, &session);
            size_t packed = ppm__v1__session__get_packed_size (&session);
            uint8_t *buf = malloc (packed ? packed : 1);
            assert (buf);
            assert (ppm__v1__session__pack (&session, buf) == packed);
            free (buf);
        }
        (void)metering_end_name (snap.end_reason);
        (void)metering_kind_name (snap.kind);
    }
    free (text);
    return 0;
}
