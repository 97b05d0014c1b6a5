/*  ppm_log: structured logs, one JSON object per line on stderr.

    {"ts":"2026-11-25T10:00:00.123Z","level":"info","service":"rate",
     "trace_id":"…","tenant":"…","msg":"…", "<key>":"<value>", …}

    The trace id and tenant come from a per-thread context that the RPC
    server sets before it calls a handler (and that a handler may set
    itself), so a request's trace id follows it through every service.
    Anything that looks like a secret (Stripe keys sk_/rk_ test or live,
    whsec_ webhook secrets, ppm admin keys "ppmak_", Bearer tokens) is masked
    in the message and in every value before it is written: a secret never
    reaches a log, even by mistake. JWT-looking tokens (three base64url
    parts, the first "eyJ…") are masked too, and so is a word of exactly 64
    hex digits (a 256-bit key in hex: a tenant's user-token secret, which
    has no prefix, or the master key).

    trace_id and tenant appear only when set. A key that names a standard
    field ("msg", "level", …) gets a trailing "_" instead of replacing it.
    Caps: message 4 KiB, each value 1 KiB, 32 pairs; longer text is cut.
    Each line is written with one write() (lines never interleave).
*/
#ifndef PPM_LOG_H_INCLUDED
#define PPM_LOG_H_INCLUDED

#include <stddef.h>

typedef enum { PPM_LOG_DEBUG = 0, PPM_LOG_INFO, PPM_LOG_WARN, PPM_LOG_ERROR } ppm_log_level_t;

/* Names the service in every line and sets the minimum level (from
   PPM_LOG_LEVEL: debug|info|warn|error, default info). */
void ppm_log_init (const char *service);
void ppm_log_set_level (ppm_log_level_t level);
/* Sends lines to fd instead of stderr (tests capture logs this way). */
void ppm_log_set_fd (int fd);

/* Sets this thread's trace id and tenant (copied; NULL clears). */
void ppm_log_context (const char *trace_id, const char *tenant_id);
const char *ppm_log_trace_id (void);
const char *ppm_log_tenant_id (void);

/* Writes one line. The variadic part is pairs of (const char *key,
   const char *value), ended by PPM_LOG_END (a typed NULL: cppcheck, run by
   `make lint`, rejects a bare NULL as a variadic sentinel). A NULL value
   is written as JSON null.

       ppm_log_kv (PPM_LOG_INFO, "payment succeeded", "payment_id", id,
                   "amount", amount_text, PPM_LOG_END);
*/
#define PPM_LOG_END ((const char *)0)
void ppm_log_kv (ppm_log_level_t level, const char *msg, ...) __attribute__ ((sentinel));
/* The same with the pairs in an array: pairs[2i] is a key, pairs[2i+1] its
   value (NULL writes JSON null); count is the number of pairs. */
void ppm_log_pairs (ppm_log_level_t level, const char *msg, const char *const *pairs, size_t count);

/* printf-style shortcuts. */
void ppm_log_debug (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
void ppm_log_info (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
void ppm_log_warn (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
void ppm_log_error (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

/* Masks a secret for display: keeps a recognised prefix (sk_test_, whsec_,
   …) and the last 4 characters: "sk_test_…4242". Short secrets become "…".
   Writes at most size bytes including the NUL; returns buf. */
char *ppm_mask_secret (const char *secret, char *buf, size_t size);

/* Replaces every secret-looking token in text with its mask, in place
   (the result is never longer). Returns the number of tokens masked. */
int ppm_redact (char *text);

#endif
