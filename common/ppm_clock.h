/*  ppm_clock: every reading of time in ppm comes from here.

    Two clocks: wall time (Unix epoch milliseconds, for deadlines stored in
    Redis/PostgreSQL and shown to people) and monotonic time (for measuring
    intervals inside one process). Both honour PPM_TIME_SCALE, a test-only
    speed-up: with scale 60, one real second is one minute of ppm time.
    Scaled wall time runs from the moment the clock was first read, so that
    processes started with the same scale agree with each other to within
    their start-up skew × scale; ppm_clock_set_epoch pins a common origin
    (PPM_TIME_EPOCH_MS) so that several processes agree exactly.

    RPC deadlines are not ppm time: they are real milliseconds
    (ppm_clock_real_ms), because they bound real waiting.
*/
#ifndef PPM_CLOCK_H_INCLUDED
#define PPM_CLOCK_H_INCLUDED

#include <stdint.h>

/* Reads PPM_TIME_SCALE (1..3600, default 1) and PPM_TIME_EPOCH_MS from the
   environment. Returns 0, or -1 with a one-line reason in *error when a
   value is invalid. Safe to call more than once; later calls re-read. */
int ppm_clock_init (const char **error);

/* Sets the scale directly (tests). scale >= 1. */
void ppm_clock_set_scale (int64_t scale);
int64_t ppm_clock_scale (void);

/* ppm wall time in ms since the Unix epoch: real time when the scale is 1;
   otherwise origin + (real - origin) × scale. */
int64_t ppm_clock_now_ms (void);
/* ppm monotonic time in ms (scaled), for intervals. */
int64_t ppm_clock_mono_ms (void);
/* Real wall time in ms, never scaled: RPC deadlines, log timestamps. */
int64_t ppm_clock_real_ms (void);
/* Real monotonic time in microseconds, never scaled: benchmarks, latency. */
int64_t ppm_clock_real_mono_us (void);

/* Converts a ppm-time interval to real milliseconds (rounded up, ≥ 1 when
   ms > 0), e.g. to arm a zloop timer for "one ppm second". */
int64_t ppm_clock_to_real_ms (int64_t ppm_ms);

#endif
