/*  ppm_bench: result, note and gap lines of the benchmarks (format in
    ppm_bench.h). Fields are cleaned as they are printed, never rejected:
    a benchmark's output must not fail on its own wording.
*/
#include "ppm_bench.h"

#include <stdarg.h>
#include <stdio.h>

/* Prints text (NULL or empty: "-") with '|' as '/' and line breaks as
   spaces, then sep when it is not 0. */
static void
s_field (const char *text, char sep)
{
    if (!text || !*text)
        text = "-";
    for (const char *p = text; *p; p++) {
        char c = *p;
        if (c == '|')
            c = '/';
        else if (c == '\n' || c == '\r')
            c = ' ';
        putchar (c);
    }
    if (sep)
        putchar (sep);
}

ppm_bench_met_t
ppm_bench_met (bool ok)
{
    return ok ? PPM_BENCH_MET : PPM_BENCH_MISSED;
}

void
ppm_bench_result (const char *id, const char *what, const char *figure, const char *baseline,
                  const char *ratio, const char *aim, ppm_bench_met_t met)
{
    fputs ("result|", stdout);
    s_field (id, '|');
    s_field (what, '|');
    s_field (figure, '|');
    s_field (baseline, '|');
    s_field (ratio, '|');
    s_field (aim, '|');
    s_field (met == PPM_BENCH_MET ? "yes" : met == PPM_BENCH_MISSED ? "no" : "-", '\n');
    fflush (stdout);
}

static void
s_text_line (const char *kind, const char *key, const char *format, va_list args)
{
    char text[2048];
    vsnprintf (text, sizeof text, format, args);
    fputs (kind, stdout);
    putchar ('|');
    s_field (key, '|');
    s_field (text, '\n');
    fflush (stdout);
}

void
ppm_bench_note (const char *area, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    s_text_line ("note", area, format, args);
    va_end (args);
}

void
ppm_bench_gap (const char *id, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    s_text_line ("gap", id, format, args);
    va_end (args);
}
