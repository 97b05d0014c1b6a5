/*  ppm_bench: the one machine-readable format of benchmark results.

    Every benchmark (the C ones in tests/bench, the scripts through
    tests/lib/bench.sh) prints its human lines as it likes and, for each
    figure, one line that tests/harness/run-bench.sh collects into
    docs/BENCHMARKS.md:

      result|<id>|<what>|<figure>|<baseline>|<ratio>|<aim>|<met>

    id is "<area>.<name>" (area: rpc, quote, metering, payment, gateway,
    e2e; it picks the report's table); what is one line for a reader;
    figure and baseline carry their unit ("119491 req/s", "86 us"); a
    field that does not apply is "-"; met is yes, no or "-" (no aim). Two
    more kinds of line go with them:

      note|<area>|<text>   how the area's figures were measured (lines
                           joined into one paragraph)
      gap|<id>|<text>      what the figures show about a missed aim

    A '|' or a line break inside a field is printed as '/' or ' ', so a
    line always splits into the same fields. Lines are flushed at once:
    a benchmark that dies later still leaves what it measured.
*/
#ifndef PPM_BENCH_H_INCLUDED
#define PPM_BENCH_H_INCLUDED

#include <stdbool.h>

typedef enum {
    PPM_BENCH_NO_AIM = -1, /* "-" */
    PPM_BENCH_MISSED = 0,  /* "no" */
    PPM_BENCH_MET = 1      /* "yes" */
} ppm_bench_met_t;

/* PPM_BENCH_MET when ok is true, PPM_BENCH_MISSED otherwise. */
ppm_bench_met_t ppm_bench_met (bool ok);

/* Prints one result line. Any string may be NULL (printed as "-"). */
void ppm_bench_result (const char *id, const char *what, const char *figure, const char *baseline,
                       const char *ratio, const char *aim, ppm_bench_met_t met);

/* Prints "note|<area>|<text>", text formatted as printf's. */
void ppm_bench_note (const char *area, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

/* Prints "gap|<id>|<text>", text formatted as printf's. */
void ppm_bench_gap (const char *id, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

#endif
