/*  ppm_env: see ppm_env.h.

    Parsing is strict: a number is the whole string (no blanks, no trailing
    junk), checked for overflow and against the table's bounds; a duration is
    digits and an optional unit (ms, s, m, h), overflow-checked. An empty
    variable counts as unset, so `PPM_X= ppm-rate` falls back to the default
    as if PPM_X were not there. Error lines are kept in a thread-local
    buffer; a secret's value never appears in them, any other value is
    quoted cut to 64 bytes.
*/
#include "ppm_env.h"
#include "ppm_log.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PPM_ENV_ERROR_MAX 256 /* bytes of an error line */
#define PPM_ENV_SHOW_MAX  64  /* bytes of a bad value quoted in an error */
#define PPM_ENV_LOG_MAX   64  /* entries in the ppm_env_log line */

static _Thread_local char s_error[PPM_ENV_ERROR_MAX];

typedef enum { S_OK = 0, S_MALFORMED, S_BELOW, S_ABOVE } s_parse_t;

/* Copies value for display in an error: cut, non-printable bytes as '?'. */
static void
s_show (const char *value, char *out, size_t size)
{
    size_t len = strnlen (value, size - 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        out[i] = isprint (c) ? (char)c : '?';
    }
    out[len] = '\0';
}

static s_parse_t
s_parse_int (const char *text, int64_t *out)
{
    if (!isdigit ((unsigned char)text[0]) &&
        !((text[0] == '-' || text[0] == '+') && isdigit ((unsigned char)text[1])))
        return S_MALFORMED;
    char *end = NULL;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    if (end == text || *end != '\0')
        return S_MALFORMED;
    if (errno == ERANGE)
        return value < 0 ? S_BELOW : S_ABOVE;
    *out = value;
    return S_OK;
}

/* Durations: "250ms", "5s", "2m", "1h", or bare digits (ms). */
static s_parse_t
s_parse_duration (const char *text, int64_t *out)
{
    size_t digits = 0;
    while (isdigit ((unsigned char)text[digits]))
        digits++;
    if (digits == 0)
        return S_MALFORMED;
    const char *unit = text + digits;
    int64_t scale = 0;
    if (*unit == '\0' || strcmp (unit, "ms") == 0)
        scale = 1;
    else if (strcmp (unit, "s") == 0)
        scale = 1000;
    else if (strcmp (unit, "m") == 0)
        scale = 60 * 1000;
    else if (strcmp (unit, "h") == 0)
        scale = 60 * 60 * 1000;
    else
        return S_MALFORMED;
    int64_t value = 0;
    for (size_t i = 0; i < digits; i++) {
        if (__builtin_mul_overflow (value, 10, &value) ||
            __builtin_add_overflow (value, text[i] - '0', &value))
            return S_ABOVE;
    }
    if (__builtin_mul_overflow (value, scale, &value))
        return S_ABOVE;
    *out = value;
    return S_OK;
}

static s_parse_t
s_parse_bool (const char *text, bool *out)
{
    static const char *yes[] = {"1", "true", "yes", "on", NULL};
    static const char *no[] = {"0", "false", "no", "off", NULL};
    for (int i = 0; yes[i]; i++) {
        if (strcasecmp (text, yes[i]) == 0) {
            *out = true;
            return S_OK;
        }
        if (strcasecmp (text, no[i]) == 0) {
            *out = false;
            return S_OK;
        }
    }
    return S_MALFORMED;
}

static const char *
s_type_expect (ppm_env_type_t type)
{
    switch (type) {
        case PPM_ENV_INT:
            return "an integer";
        case PPM_ENV_BOOL:
            return "a boolean (1/0, true/false, yes/no, on/off)";
        case PPM_ENV_DURATION:
            return "a duration (250ms, 5s, 2m, 1h or bare milliseconds)";
        default:
            return "a string";
    }
}

static void
s_bound_text (const ppm_env_t *entry, int64_t bound, char *buf, size_t size)
{
    if (entry->type == PPM_ENV_DURATION)
        snprintf (buf, size, "%" PRId64 "ms", bound);
    else
        snprintf (buf, size, "%" PRId64, bound);
}

/* Parses one value (from the variable or the default) into entry->out.
   Returns 0, or -1 with s_error set. */
static int
s_parse_entry (ppm_env_t *entry, const char *text, bool from_default)
{
    const char *source = from_default ? " (default)" : "";
    char shown[PPM_ENV_SHOW_MAX + 1];
    if (entry->secret)
        snprintf (shown, sizeof shown, "the value");
    else {
        char cut[PPM_ENV_SHOW_MAX - 2];
        s_show (text, cut, sizeof cut);
        snprintf (shown, sizeof shown, "\"%s\"", cut);
    }
    if (entry->type == PPM_ENV_STRING) {
        char *copy = strdup (text);
        if (!copy) {
            snprintf (s_error, sizeof s_error, "%s: out of memory", entry->name);
            return -1;
        }
        *(char **)entry->out = copy;
        return 0;
    }
    if (entry->type == PPM_ENV_BOOL) {
        bool value = false;
        if (s_parse_bool (text, &value) != S_OK) {
            snprintf (s_error, sizeof s_error, "%s: %s%s is not %s", entry->name, shown, source,
                      s_type_expect (entry->type));
            return -1;
        }
        *(bool *)entry->out = value;
        return 0;
    }
    int64_t value = 0;
    s_parse_t rc =
        entry->type == PPM_ENV_INT ? s_parse_int (text, &value) : s_parse_duration (text, &value);
    bool bounded = entry->min != 0 || entry->max != 0;
    char bound[32];
    if (rc == S_MALFORMED) {
        snprintf (s_error, sizeof s_error, "%s: %s%s is not %s", entry->name, shown, source,
                  s_type_expect (entry->type));
        return -1;
    }
    if (rc == S_BELOW || (rc == S_OK && bounded && value < entry->min)) {
        s_bound_text (entry, entry->min, bound, sizeof bound);
        if (bounded)
            snprintf (s_error, sizeof s_error, "%s: %s%s is below the minimum %s", entry->name,
                      shown, source, bound);
        else
            snprintf (s_error, sizeof s_error, "%s: %s%s is too small for a 64-bit integer",
                      entry->name, shown, source);
        return -1;
    }
    if (rc == S_ABOVE || (rc == S_OK && bounded && value > entry->max)) {
        s_bound_text (entry, entry->max, bound, sizeof bound);
        if (bounded)
            snprintf (s_error, sizeof s_error, "%s: %s%s is above the maximum %s", entry->name,
                      shown, source, bound);
        else
            snprintf (s_error, sizeof s_error, "%s: %s%s is too large for a 64-bit integer",
                      entry->name, shown, source);
        return -1;
    }
    *(int64_t *)entry->out = value;
    return 0;
}

int
ppm_env_load (ppm_env_t *table, const char **error)
{
    s_error[0] = '\0';
    for (ppm_env_t *entry = table; entry->name; entry++) {
        if (entry->type == PPM_ENV_STRING)
            *(char **)entry->out = NULL;
    }
    for (ppm_env_t *entry = table; entry->name; entry++) {
        const char *value = getenv (entry->name);
        bool from_default = false;
        if (!value || !*value) {
            value = entry->def;
            from_default = true;
        }
        if (!value) {
            if (entry->required) {
                snprintf (s_error, sizeof s_error, "%s: required but not set%s%s%s", entry->name,
                          entry->help ? " (" : "", entry->help ? entry->help : "",
                          entry->help ? ")" : "");
                goto failed;
            }
            continue; /* optional: out keeps its value (NULL for strings) */
        }
        if (s_parse_entry (entry, value, from_default))
            goto failed;
    }
    if (error)
        *error = NULL;
    return 0;
failed:
    ppm_env_free (table);
    if (error)
        *error = s_error;
    return -1;
}

void
ppm_env_free (ppm_env_t *table)
{
    if (!table)
        return;
    for (ppm_env_t *entry = table; entry->name; entry++) {
        if (entry->type == PPM_ENV_STRING && entry->out) {
            char **slot = (char **)entry->out;
            free (*slot);
            *slot = NULL;
        }
    }
}

/* Text of an entry's effective value for logs and usage (secrets masked). */
static void
s_value_text (const ppm_env_t *entry, char *buf, size_t size)
{
    switch (entry->type) {
        case PPM_ENV_STRING: {
            const char *value = *(char **)entry->out;
            if (!value)
                snprintf (buf, size, "(unset)");
            else if (entry->secret)
                ppm_mask_secret (value, buf, size);
            else
                snprintf (buf, size, "%s", value);
            break;
        }
        case PPM_ENV_BOOL:
            snprintf (buf, size, "%s", *(bool *)entry->out ? "true" : "false");
            break;
        case PPM_ENV_DURATION:
            snprintf (buf, size, "%" PRId64 "ms", *(int64_t *)entry->out);
            break;
        default:
            snprintf (buf, size, "%" PRId64, *(int64_t *)entry->out);
            break;
    }
    if (entry->secret && entry->type != PPM_ENV_STRING)
        ppm_mask_secret (buf, buf, size);
}

void
ppm_env_log (const ppm_env_t *table)
{
    const char *pairs[2 * PPM_ENV_LOG_MAX];
    char values[PPM_ENV_LOG_MAX][256];
    size_t count = 0;
    for (const ppm_env_t *entry = table; entry->name && count < PPM_ENV_LOG_MAX; entry++) {
        s_value_text (entry, values[count], sizeof values[count]);
        pairs[2 * count] = entry->name;
        pairs[2 * count + 1] = values[count];
        count++;
    }
    ppm_log_pairs (PPM_LOG_INFO, "configuration", pairs, count);
}

void
ppm_env_usage (const ppm_env_t *table, void *file)
{
    FILE *out = file ? (FILE *)file : stdout;
    for (const ppm_env_t *entry = table; entry->name; entry++) {
        const char *def = entry->def ? entry->def : (entry->required ? "(required)" : "(none)");
        char masked[64];
        if (entry->secret && entry->def)
            def = ppm_mask_secret (entry->def, masked, sizeof masked);
        fprintf (out, "  %-28s %-24s %s\n", entry->name, def, entry->help ? entry->help : "");
    }
}
