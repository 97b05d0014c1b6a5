/*  ppm_log: see ppm_log.h.

    A line is built as a jansson object (so every string is escaped
    correctly, whatever bytes it came from), dumped compact, and written with
    one write() so that lines from different threads never interleave. Every
    string that goes in (message, values, trace id, tenant) is first copied
    into a bounded buffer, made valid UTF-8 and redacted; nothing from the
    caller reaches the output unmasked. The per-thread context lives in
    thread-local buffers: no locks on the hot path.
*/
#include "ppm_log.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define PPM_LOG_MSG_MAX     4096 /* bytes of a message kept (with NUL) */
#define PPM_LOG_VALUE_MAX   1024 /* bytes of a value kept (with NUL) */
#define PPM_LOG_PAIRS_MAX   32   /* key/value pairs kept per line */
#define PPM_LOG_CONTEXT_MAX 128  /* bytes of trace id / tenant (with NUL) */
#define PPM_LOG_SERVICE_MAX 64

#define ELLIPSIS     "\xe2\x80\xa6" /* "…" in UTF-8: 3 bytes */
#define ELLIPSIS_LEN 3
/* A masked token shows its last 4 characters only when it is at least this
   long, so that a mask reveals at most a third of the secret. */
#define SHOW_TAIL_MIN 12

static char s_service[PPM_LOG_SERVICE_MAX] = "ppm"; /* set once at start */
static atomic_int s_level = PPM_LOG_INFO;           /* minimum level written */
static atomic_int s_fd = 2;                         /* where lines go */

static _Thread_local char s_trace_id[PPM_LOG_CONTEXT_MAX]; /* "" = unset */
static _Thread_local char s_tenant_id[PPM_LOG_CONTEXT_MAX];

/* Prefixes that announce a secret; the part after them is the token. */
static const char *s_secret_prefixes[] = {
    "sk_test_", "sk_live_", "rk_test_", "rk_live_", "whsec_", "ppmak_", NULL,
};

static const char *s_level_names[] = {"debug", "info", "warn", "error"};

/* ---- redaction --------------------------------------------------------- */

static bool
s_is_key_char (unsigned char c)
{
    return isalnum (c) || c == '_' || c == '-';
}

/* base64url (JWT parts) */
static bool
s_is_b64url_char (unsigned char c)
{
    return isalnum (c) || c == '_' || c == '-';
}

/* Characters of a bearer token (RFC 6750 b64token). */
static bool
s_is_bearer_char (unsigned char c)
{
    return isalnum (c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/' ||
           c == '=';
}

static const char *
s_known_prefix (const char *text)
{
    for (int i = 0; s_secret_prefixes[i]; i++) {
        size_t len = strlen (s_secret_prefixes[i]);
        if (strncmp (text, s_secret_prefixes[i], len) == 0)
            return s_secret_prefixes[i];
    }
    return NULL;
}

/* Builds the mask of token[0..len) into out (room for len + 1 bytes is
   enough: the mask is never longer than the token when len >= prefix + 3).
   Returns the mask's length. */
static size_t
s_mask_into (const char *token, size_t len, char *out, size_t size)
{
    const char *prefix = s_known_prefix (token);
    size_t prefix_len = prefix ? strlen (prefix) : 0;
    if (prefix_len > len)
        prefix_len = 0;
    size_t body = len - prefix_len;
    size_t tail = body >= SHOW_TAIL_MIN ? 4 : 0;
    size_t need = prefix_len + ELLIPSIS_LEN + tail;
    if (need + 1 > size) {
        /* Not enough room: drop the tail, then the prefix. */
        tail = 0;
        need = prefix_len + ELLIPSIS_LEN;
        if (need + 1 > size) {
            prefix_len = 0;
            need = ELLIPSIS_LEN;
        }
        if (need + 1 > size) {
            if (size > 0)
                out[0] = '\0';
            return 0;
        }
    }
    memmove (out, token, prefix_len);
    memcpy (out + prefix_len, ELLIPSIS, ELLIPSIS_LEN);
    memmove (out + prefix_len + ELLIPSIS_LEN, token + len - tail, tail);
    out[need] = '\0';
    return need;
}

char *
ppm_mask_secret (const char *secret, char *buf, size_t size)
{
    if (!buf || size == 0)
        return buf;
    if (!secret)
        secret = "";
    s_mask_into (secret, strlen (secret), buf, size);
    return buf;
}

/* Length of a JWT-looking token at text (three base64url parts separated by
   dots, the first starting "eyJ" — a base64 JSON object — or all three
   long), or 0. */
static size_t
s_jwt_length (const char *text)
{
    size_t part_len[3] = {0, 0, 0};
    size_t pos = 0;
    for (int part = 0; part < 3; part++) {
        while (s_is_b64url_char ((unsigned char)text[pos])) {
            pos++;
            part_len[part]++;
        }
        if (part < 2) {
            if (text[pos] != '.' || part_len[part] == 0)
                return 0;
            pos++;
        }
    }
    if (text[pos] == '.' || part_len[2] == 0)
        return 0; /* four parts, or no signature: a hostname, a version */
    bool json_header = strncmp (text, "eyJ", 3) == 0 && part_len[1] >= 4;
    bool all_long = part_len[0] >= 10 && part_len[1] >= 10 && part_len[2] >= 10;
    return json_header || all_long ? pos : 0;
}

/* Length of a bare 256-bit key in hex at text: exactly HEX_KEY_LEN hex
   digits standing alone (the next character ends the word), or 0. The
   tenants' user-token secrets (no prefix) and the master key look like
   this; a SHA-256 in hex does too and is masked alike, which costs
   nothing. Longer runs (dumps) are left alone. */
#define HEX_KEY_LEN 64
static size_t
s_hex_key_length (const char *text)
{
    size_t len = strspn (text, "0123456789abcdefABCDEF");
    if (len != HEX_KEY_LEN || s_is_key_char ((unsigned char)text[len]))
        return 0;
    return len;
}

int
ppm_redact (char *text)
{
    if (!text)
        return 0;
    int count = 0;
    char *read = text;
    char *write = text;
    bool boundary = true; /* the previous character ends a word */
    while (*read) {
        size_t token_len = 0;
        size_t keep = 0; /* bytes copied unchanged before the token */
        const char *prefix = s_known_prefix (read);
        if (prefix) {
            size_t prefix_len = strlen (prefix);
            size_t body = 0;
            while (s_is_key_char ((unsigned char)read[prefix_len + body]))
                body++;
            if (body >= 3)
                token_len = prefix_len + body;
        } else if (boundary && strncasecmp (read, "bearer", 6) == 0 &&
                   (read[6] == ' ' || read[6] == '\t')) {
            keep = 6;
            while (read[keep] == ' ' || read[keep] == '\t')
                keep++;
            size_t len = 0;
            while (s_is_bearer_char ((unsigned char)read[keep + len]))
                len++;
            if (len >= 3)
                token_len = len;
            else
                keep = 0;
        } else if (boundary) {
            token_len = s_jwt_length (read);
            if (token_len == 0)
                token_len = s_hex_key_length (read);
        }
        if (token_len == 0) {
            boundary = !s_is_key_char ((unsigned char)*read) && *read != '.';
            *write++ = *read++;
            continue;
        }
        memmove (write, read, keep);
        write += keep;
        read += keep;
        /* The mask is never longer than the token (token >= 3 bytes, mask
           of a short token is the 3-byte ellipsis plus the prefix, and the
           prefix is part of the token). */
        char mask[PPM_LOG_CONTEXT_MAX];
        size_t mask_len = s_mask_into (read, token_len, mask, sizeof mask);
        if (mask_len > token_len)
            mask_len = 0; /* cannot happen; never grow the text */
        memcpy (write, mask, mask_len);
        write += mask_len;
        read += token_len;
        count++;
        boundary = false;
    }
    *write = '\0';
    return count;
}

/* ---- context and set-up ------------------------------------------------- */

static void
s_copy_bounded (char *dst, size_t size, const char *src)
{
    if (!src) {
        dst[0] = '\0';
        return;
    }
    size_t len = strnlen (src, size - 1);
    memcpy (dst, src, len);
    dst[len] = '\0';
}

static int
s_level_from_name (const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp (name, s_level_names[i]) == 0)
            return i;
    if (strcasecmp (name, "warning") == 0)
        return PPM_LOG_WARN;
    return -1;
}

void
ppm_log_init (const char *service)
{
    s_copy_bounded (s_service, sizeof s_service, service ? service : "ppm");
    const char *level = getenv ("PPM_LOG_LEVEL");
    atomic_store (&s_level, PPM_LOG_INFO);
    if (level && *level) {
        int value = s_level_from_name (level);
        if (value < 0)
            ppm_log_kv (PPM_LOG_WARN, "PPM_LOG_LEVEL is not debug|info|warn|error; using info",
                        "value", level, PPM_LOG_END);
        else
            atomic_store (&s_level, value);
    }
}

void
ppm_log_set_level (ppm_log_level_t level)
{
    if (level >= PPM_LOG_DEBUG && level <= PPM_LOG_ERROR)
        atomic_store (&s_level, level);
}

void
ppm_log_set_fd (int fd)
{
    atomic_store (&s_fd, fd);
}

void
ppm_log_context (const char *trace_id, const char *tenant_id)
{
    s_copy_bounded (s_trace_id, sizeof s_trace_id, trace_id);
    s_copy_bounded (s_tenant_id, sizeof s_tenant_id, tenant_id);
}

const char *
ppm_log_trace_id (void)
{
    return s_trace_id[0] ? s_trace_id : NULL;
}

const char *
ppm_log_tenant_id (void)
{
    return s_tenant_id[0] ? s_tenant_id : NULL;
}

/* ---- writing ------------------------------------------------------------ */

/* Replaces each byte that is not part of valid UTF-8 with '?', in place,
   so that jansson accepts the string. */
static void
s_utf8_sanitize (char *text)
{
    unsigned char *p = (unsigned char *)text;
    while (*p) {
        size_t n = 0;
        if (*p < 0x80)
            n = 1;
        else if ((*p & 0xE0) == 0xC0 && *p >= 0xC2)
            n = 2;
        else if ((*p & 0xF0) == 0xE0)
            n = 3;
        else if ((*p & 0xF8) == 0xF0 && *p <= 0xF4)
            n = 4;
        bool ok = n > 0;
        for (size_t i = 1; ok && i < n; i++)
            ok = (p[i] & 0xC0) == 0x80;
        if (ok && n == 3) {
            /* no overlongs, no surrogates */
            ok = !(p[0] == 0xE0 && p[1] < 0xA0) && !(p[0] == 0xED && p[1] >= 0xA0);
        }
        if (ok && n == 4)
            ok = !(p[0] == 0xF0 && p[1] < 0x90) && !(p[0] == 0xF4 && p[1] >= 0x90);
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}

/* Cuts text to fit size bytes (with NUL) without splitting a UTF-8
   sequence, then makes it safe: valid UTF-8, secrets masked. */
static void
s_clean_into (char *dst, size_t size, const char *src)
{
    size_t len = strlen (src);
    if (len >= size) {
        len = size - 1;
        while (len > 0 && ((unsigned char)src[len] & 0xC0) == 0x80)
            len--;
    }
    memcpy (dst, src, len);
    dst[len] = '\0';
    s_utf8_sanitize (dst);
    ppm_redact (dst);
}

static void
s_set_string (json_t *object, const char *key, const char *value, size_t cap)
{
    char *clean = malloc (cap);
    if (!clean)
        return;
    s_clean_into (clean, cap, value);
    json_object_set_new (object, key, json_string (clean));
    free (clean);
}

static void
s_timestamp (char *buf, size_t size)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r (&ts.tv_sec, &tm);
    size_t len = strftime (buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    int ms = (int)(ts.tv_nsec / 1000000) % 1000;
    snprintf (buf + len, size - len, ".%03dZ", ms);
}

static void
s_write_all (const char *data, size_t len)
{
    int fd = atomic_load (&s_fd);
    /* One write per line; a short write (a full pipe) continues where it
       stopped rather than losing the rest. */
    while (len > 0) {
        ssize_t n = write (fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        data += n;
        len -= (size_t)n;
    }
}

static bool
s_reserved_key (const char *key)
{
    static const char *reserved[] = {"ts", "level", "service", "trace_id", "tenant", "msg", NULL};
    for (int i = 0; reserved[i]; i++)
        if (strcmp (key, reserved[i]) == 0)
            return true;
    return false;
}

static void
s_emit (ppm_log_level_t level, const char *msg, const char *const *pairs, size_t pair_count)
{
    if (level < PPM_LOG_DEBUG || level > PPM_LOG_ERROR)
        level = PPM_LOG_ERROR;
    json_t *line = json_object ();
    if (!line)
        return;
    char ts[40];
    s_timestamp (ts, sizeof ts);
    json_object_set_new (line, "ts", json_string (ts));
    json_object_set_new (line, "level", json_string (s_level_names[level]));
    s_set_string (line, "service", s_service, PPM_LOG_SERVICE_MAX);
    if (s_trace_id[0])
        s_set_string (line, "trace_id", s_trace_id, PPM_LOG_CONTEXT_MAX);
    if (s_tenant_id[0])
        s_set_string (line, "tenant", s_tenant_id, PPM_LOG_CONTEXT_MAX);
    s_set_string (line, "msg", msg ? msg : "", PPM_LOG_MSG_MAX);
    if (pair_count > PPM_LOG_PAIRS_MAX)
        pair_count = PPM_LOG_PAIRS_MAX;
    for (size_t i = 0; i < pair_count; i++) {
        const char *key = pairs[2 * i];
        const char *value = pairs[2 * i + 1];
        if (!key)
            break;
        char clean_key[64];
        s_clean_into (clean_key, sizeof clean_key - 1, key);
        /* A key never overrides a standard field: "msg" becomes "msg_". */
        if (s_reserved_key (clean_key) || json_object_get (line, clean_key)) {
            size_t len = strlen (clean_key);
            clean_key[len] = '_';
            clean_key[len + 1] = '\0';
        }
        if (value)
            s_set_string (line, clean_key, value, PPM_LOG_VALUE_MAX);
        else
            json_object_set_new (line, clean_key, json_null ());
    }
    char *text = json_dumps (line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref (line);
    if (!text)
        return;
    size_t len = strlen (text);
    char *out = realloc (text, len + 2);
    if (!out) {
        free (text);
        return;
    }
    out[len] = '\n';
    out[len + 1] = '\0';
    s_write_all (out, len + 1);
    free (out);
}

static bool
s_enabled (ppm_log_level_t level)
{
    return (int)level >= atomic_load (&s_level);
}

void
ppm_log_pairs (ppm_log_level_t level, const char *msg, const char *const *pairs, size_t count)
{
    if (s_enabled (level))
        s_emit (level, msg, pairs, count);
}

void
ppm_log_kv (ppm_log_level_t level, const char *msg, ...)
{
    if (!s_enabled (level))
        return;
    const char *pairs[2 * PPM_LOG_PAIRS_MAX];
    size_t count = 0;
    va_list args;
    va_start (args, msg);
    while (true) {
        const char *key = va_arg (args, const char *);
        if (!key)
            break;
        const char *value = va_arg (args, const char *);
        if (count < PPM_LOG_PAIRS_MAX) {
            pairs[2 * count] = key;
            pairs[2 * count + 1] = value;
            count++;
        }
    }
    va_end (args);
    s_emit (level, msg, pairs, count);
}

static void
s_vlog (ppm_log_level_t level, const char *fmt, va_list args)
{
    if (!s_enabled (level))
        return;
    char msg[PPM_LOG_MSG_MAX];
    int n = vsnprintf (msg, sizeof msg, fmt, args);
    if (n >= (int)sizeof msg) {
        /* Mark the cut: the message ends with "…". */
        memcpy (msg + sizeof msg - 1 - ELLIPSIS_LEN, ELLIPSIS, ELLIPSIS_LEN);
    }
    s_emit (level, msg, NULL, 0);
}

void
ppm_log_debug (const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    s_vlog (PPM_LOG_DEBUG, fmt, args);
    va_end (args);
}

void
ppm_log_info (const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    s_vlog (PPM_LOG_INFO, fmt, args);
    va_end (args);
}

void
ppm_log_warn (const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    s_vlog (PPM_LOG_WARN, fmt, args);
    va_end (args);
}

void
ppm_log_error (const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    s_vlog (PPM_LOG_ERROR, fmt, args);
    va_end (args);
}
