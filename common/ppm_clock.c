/*  ppm_clock: see ppm_clock.h. One origin pair (real wall, real monotonic)
    is taken at the first reading; scaled time is origin + elapsed × scale,
    computed from the monotonic clock so that scaled time never runs
    backwards even when the wall clock is stepped.
*/
#include "ppm_clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define PPM_CLOCK_SCALE_MAX 3600

static int64_t s_scale = 1;       /* ppm ms per real ms */
static int64_t s_origin_wall = 0; /* ppm wall time at the origin (ms) */
static int64_t s_origin_mono = 0; /* real monotonic time at the origin (us) */
static pthread_once_t s_once = PTHREAD_ONCE_INIT;

static int64_t
s_real_wall_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
ppm_clock_real_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
s_origin_init (void)
{
    s_origin_wall = s_real_wall_ms ();
    s_origin_mono = ppm_clock_real_mono_us ();
}

static int
s_parse_int (const char *text, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    if (errno || end == text || *end != '\0' || value < min || value > max)
        return -1;
    *out = value;
    return 0;
}

int
ppm_clock_init (const char **error)
{
    pthread_once (&s_once, s_origin_init);
    const char *scale = getenv ("PPM_TIME_SCALE");
    int64_t value = 1;
    if (scale && *scale && s_parse_int (scale, 1, PPM_CLOCK_SCALE_MAX, &value)) {
        if (error)
            *error = "PPM_TIME_SCALE: must be an integer from 1 to 3600";
        return -1;
    }
    const char *epoch = getenv ("PPM_TIME_EPOCH_MS");
    int64_t origin = 0;
    if (epoch && *epoch) {
        if (s_parse_int (epoch, 1, INT64_MAX / 4, &origin)) {
            if (error)
                *error = "PPM_TIME_EPOCH_MS: must be a positive integer (Unix ms)";
            return -1;
        }
        /* Shift the monotonic origin so that scaled time counts from the
           shared real epoch: wall(now) = epoch + (real_now - epoch) × scale. */
        int64_t real_now = s_real_wall_ms ();
        s_origin_wall = origin;
        s_origin_mono = ppm_clock_real_mono_us () - (real_now - origin) * 1000;
    }
    s_scale = value;
    return 0;
}

void
ppm_clock_set_scale (int64_t scale)
{
    pthread_once (&s_once, s_origin_init);
    /* Re-anchor so that time is continuous across the change. */
    int64_t now = ppm_clock_now_ms ();
    s_origin_wall = now;
    s_origin_mono = ppm_clock_real_mono_us ();
    s_scale = scale < 1 ? 1 : scale;
}

int64_t
ppm_clock_scale (void)
{
    return s_scale;
}

int64_t
ppm_clock_real_ms (void)
{
    return s_real_wall_ms ();
}

int64_t
ppm_clock_now_ms (void)
{
    if (s_scale == 1 && s_origin_mono == 0)
        return s_real_wall_ms ();
    pthread_once (&s_once, s_origin_init);
    if (s_scale == 1)
        return s_real_wall_ms ();
    int64_t elapsed_us = ppm_clock_real_mono_us () - s_origin_mono;
    return s_origin_wall + elapsed_us * s_scale / 1000;
}

int64_t
ppm_clock_mono_ms (void)
{
    return ppm_clock_real_mono_us () * s_scale / 1000;
}

int64_t
ppm_clock_to_real_ms (int64_t ppm_ms)
{
    if (ppm_ms <= 0)
        return 0;
    int64_t real = (ppm_ms + s_scale - 1) / s_scale;
    return real < 1 ? 1 : real;
}
