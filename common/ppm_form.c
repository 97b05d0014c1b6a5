/*  ppm_form: application/x-www-form-urlencoded encode and decode with
    Stripe's bracketed keys. See ppm_form.h for the contract.

    A form is a growable array of owned (key, value) string pairs. The
    decoder works on the raw bytes in one pass per piece, so an error can
    name the byte offset where it was found; nothing is ever read past
    `size`, which is what the fuzz harness (tests/fuzz/fuzz_form.c) checks.
*/
#include "ppm_form.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key;   /* decoded key, owned */
    char *value; /* decoded value, owned */
} s_pair_t;

struct _ppm_form_t {
    s_pair_t *pairs; /* pairs in order */
    size_t count;    /* pairs used */
    size_t alloc;    /* pairs allocated */
};

const char *
ppm_form_strerror (ppm_form_err_t err)
{
    switch (err) {
        case PPM_FORM_OK:
            return "ok";
        case PPM_FORM_TOO_LARGE:
            return "form body too large";
        case PPM_FORM_TOO_MANY_PAIRS:
            return "too many form parameters";
        case PPM_FORM_KEY_TOO_LONG:
            return "form parameter name too long";
        case PPM_FORM_BAD_ESCAPE:
            return "malformed percent escape";
        case PPM_FORM_NUL_BYTE:
            return "NUL byte in form data";
        case PPM_FORM_EMPTY_KEY:
            return "empty form parameter name";
        case PPM_FORM_NO_MEMORY:
            return "out of memory";
    }
    return "unknown form error";
}

ppm_form_t *
ppm_form_new (void)
{
    return calloc (1, sizeof (ppm_form_t));
}

void
ppm_form_destroy (ppm_form_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ppm_form_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) {
        free (self->pairs[i].key);
        free (self->pairs[i].value);
    }
    free (self->pairs);
    free (self);
    *self_p = NULL;
}

/* Appends a pair, taking ownership of key and value (freed on failure). */
static ppm_form_err_t
s_append_owned (ppm_form_t *self, char *key, char *value)
{
    ppm_form_err_t err = PPM_FORM_OK;
    if (self->count >= PPM_FORM_MAX_PAIRS) {
        err = PPM_FORM_TOO_MANY_PAIRS;
        goto fail;
    }
    if (self->count == self->alloc) {
        size_t alloc = self->alloc ? self->alloc * 2 : 8;
        s_pair_t *pairs = realloc (self->pairs, alloc * sizeof (s_pair_t));
        if (!pairs) {
            err = PPM_FORM_NO_MEMORY;
            goto fail;
        }
        self->pairs = pairs;
        self->alloc = alloc;
    }
    self->pairs[self->count].key = key;
    self->pairs[self->count].value = value;
    self->count++;
    return PPM_FORM_OK;
fail:
    free (key);
    free (value);
    return err;
}

ppm_form_err_t
ppm_form_add (ppm_form_t *self, const char *key, const char *value)
{
    if (!self || !key || !*key)
        return PPM_FORM_EMPTY_KEY;
    if (strlen (key) > PPM_FORM_MAX_KEY)
        return PPM_FORM_KEY_TOO_LONG;
    char *k = strdup (key);
    char *v = strdup (value ? value : "");
    if (!k || !v) {
        free (k);
        free (v);
        return PPM_FORM_NO_MEMORY;
    }
    return s_append_owned (self, k, v);
}

ppm_form_err_t
ppm_form_add_int (ppm_form_t *self, const char *key, int64_t value)
{
    char text[32];
    snprintf (text, sizeof text, "%" PRId64, value);
    return ppm_form_add (self, key, text);
}

ppm_form_err_t
ppm_form_add_path (ppm_form_t *self, const char *value, const char *first, ...)
{
    if (!first || !*first)
        return PPM_FORM_EMPTY_KEY;
    char key[PPM_FORM_MAX_KEY + 1];
    size_t used = 0;
    size_t len = strlen (first);
    if (len > PPM_FORM_MAX_KEY)
        return PPM_FORM_KEY_TOO_LONG;
    memcpy (key, first, len);
    used = len;
    va_list args;
    va_start (args, first);
    const char *segment = va_arg (args, const char *);
    ppm_form_err_t err = PPM_FORM_OK;
    while (segment) {
        len = strlen (segment);
        if (used + len + 2 > PPM_FORM_MAX_KEY) {
            err = PPM_FORM_KEY_TOO_LONG;
            break;
        }
        key[used++] = '[';
        memcpy (key + used, segment, len);
        used += len;
        key[used++] = ']';
        segment = va_arg (args, const char *);
    }
    va_end (args);
    if (err != PPM_FORM_OK)
        return err;
    key[used] = '\0';
    return ppm_form_add (self, key, value);
}

/* --- encoding ------------------------------------------------------------ */

/* Bytes the WHATWG urlencoded serializer leaves as they are. */
static bool
s_unreserved (unsigned char c)
{
    return isalnum (c) || c == '*' || c == '-' || c == '.' || c == '_';
}

/* Encoded length of text. */
static size_t
s_encoded_len (const char *text)
{
    size_t len = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        len += (s_unreserved (*p) || *p == ' ') ? 1 : 3;
    return len;
}

static char *
s_encode_into (char *out, const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (s_unreserved (*p))
            *out++ = (char)*p;
        else if (*p == ' ')
            *out++ = '+';
        else {
            *out++ = '%';
            *out++ = hex[*p >> 4];
            *out++ = hex[*p & 0x0F];
        }
    }
    return out;
}

char *
ppm_form_encode (const ppm_form_t *self, ppm_form_err_t *err)
{
    ppm_form_err_t dummy;
    if (!err)
        err = &dummy;
    size_t total = 0;
    for (size_t i = 0; i < self->count; i++) {
        total += s_encoded_len (self->pairs[i].key) + 1 + s_encoded_len (self->pairs[i].value);
        if (i > 0)
            total++;
        if (total > PPM_FORM_MAX_BODY) {
            *err = PPM_FORM_TOO_LARGE;
            return NULL;
        }
    }
    char *body = malloc (total + 1);
    if (!body) {
        *err = PPM_FORM_NO_MEMORY;
        return NULL;
    }
    char *out = body;
    for (size_t i = 0; i < self->count; i++) {
        if (i > 0)
            *out++ = '&';
        out = s_encode_into (out, self->pairs[i].key);
        *out++ = '=';
        out = s_encode_into (out, self->pairs[i].value);
    }
    *out = '\0';
    *err = PPM_FORM_OK;
    return body;
}

/* --- decoding ------------------------------------------------------------ */

static int
s_hex_value (unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes text[0..len) into a new string in *out. base is text's offset
   in the body, for *offset on error. */
static ppm_form_err_t
s_decode_piece (const char *text, size_t len, size_t base, char **out, size_t *offset)
{
    char *result = malloc (len + 1);
    if (!result)
        return PPM_FORM_NO_MEMORY;
    size_t used = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '%') {
            int hi = i + 1 < len ? s_hex_value ((unsigned char)text[i + 1]) : -1;
            int lo = i + 2 < len ? s_hex_value ((unsigned char)text[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                free (result);
                *offset = base + i;
                return PPM_FORM_BAD_ESCAPE;
            }
            c = (unsigned char)(hi * 16 + lo);
            if (c == 0) {
                free (result);
                *offset = base + i;
                return PPM_FORM_NUL_BYTE;
            }
            i += 2;
        } else if (c == '+')
            c = ' ';
        else if (c == 0) {
            free (result);
            *offset = base + i;
            return PPM_FORM_NUL_BYTE;
        }
        result[used++] = (char)c;
    }
    result[used] = '\0';
    *out = result;
    return PPM_FORM_OK;
}

ppm_form_err_t
ppm_form_decode (const char *body, size_t size, ppm_form_t **form_p, size_t *offset)
{
    size_t dummy_offset;
    if (!offset)
        offset = &dummy_offset;
    *offset = 0;
    *form_p = NULL;
    if (size > PPM_FORM_MAX_BODY) {
        *offset = PPM_FORM_MAX_BODY;
        return PPM_FORM_TOO_LARGE;
    }
    ppm_form_t *form = ppm_form_new ();
    if (!form)
        return PPM_FORM_NO_MEMORY;
    ppm_form_err_t err = PPM_FORM_OK;
    size_t start = 0;
    while (start <= size && err == PPM_FORM_OK) {
        const char *amp = size > start ? memchr (body + start, '&', size - start) : NULL;
        size_t end = amp ? (size_t)(amp - body) : size;
        if (end > start) {
            const char *eq = memchr (body + start, '=', end - start);
            size_t key_end = eq ? (size_t)(eq - body) : end;
            size_t value_start = eq ? key_end + 1 : end;
            char *key = NULL;
            char *value = NULL;
            if (key_end == start) {
                *offset = start;
                err = PPM_FORM_EMPTY_KEY;
                break;
            }
            err = s_decode_piece (body + start, key_end - start, start, &key, offset);
            if (err != PPM_FORM_OK)
                break;
            if (strlen (key) > PPM_FORM_MAX_KEY) {
                free (key);
                *offset = start;
                err = PPM_FORM_KEY_TOO_LONG;
                break;
            }
            err =
                s_decode_piece (body + value_start, end - value_start, value_start, &value, offset);
            if (err != PPM_FORM_OK) {
                free (key);
                break;
            }
            err = s_append_owned (form, key, value);
            if (err != PPM_FORM_OK) {
                *offset = start;
                break;
            }
        }
        start = end + 1;
    }
    if (err != PPM_FORM_OK) {
        ppm_form_destroy (&form);
        return err;
    }
    *form_p = form;
    return PPM_FORM_OK;
}

/* --- reading --------------------------------------------------------------- */

size_t
ppm_form_size (const ppm_form_t *self)
{
    return self ? self->count : 0;
}

const char *
ppm_form_key (const ppm_form_t *self, size_t index)
{
    return self && index < self->count ? self->pairs[index].key : NULL;
}

const char *
ppm_form_value (const ppm_form_t *self, size_t index)
{
    return self && index < self->count ? self->pairs[index].value : NULL;
}

const char *
ppm_form_get (const ppm_form_t *self, const char *key)
{
    if (!self || !key)
        return NULL;
    for (size_t i = self->count; i > 0; i--)
        if (strcmp (self->pairs[i - 1].key, key) == 0)
            return self->pairs[i - 1].value;
    return NULL;
}

size_t
ppm_form_count (const ppm_form_t *self, const char *key)
{
    size_t count = 0;
    if (!self || !key)
        return 0;
    for (size_t i = 0; i < self->count; i++)
        if (strcmp (self->pairs[i].key, key) == 0)
            count++;
    return count;
}

bool
ppm_form_has (const ppm_form_t *self, const char *parent)
{
    if (!self || !parent)
        return false;
    size_t len = strlen (parent);
    for (size_t i = 0; i < self->count; i++) {
        const char *key = self->pairs[i].key;
        if (strncmp (key, parent, len) == 0 && (key[len] == '\0' || key[len] == '['))
            return true;
    }
    return false;
}

/* When key is "parent[x]" exactly, points *child at x and returns its
   length; else -1. */
static int
s_child_of (const char *key, const char *parent, const char **child)
{
    size_t len = strlen (parent);
    if (strncmp (key, parent, len) != 0 || key[len] != '[')
        return -1;
    const char *start = key + len + 1;
    const char *close = strchr (start, ']');
    if (!close || close[1] != '\0' || memchr (start, '[', (size_t)(close - start)))
        return -1;
    *child = start;
    return (int)(close - start);
}

int
ppm_form_child (const ppm_form_t *self, size_t index, const char *parent, char *child, size_t size)
{
    if (!self || index >= self->count || !parent)
        return -1;
    const char *start;
    int len = s_child_of (self->pairs[index].key, parent, &start);
    if (len < 0 || (size_t)len + 1 > size)
        return -1;
    memcpy (child, start, (size_t)len);
    child[len] = '\0';
    return len;
}

/* The sort rank of an array item key: -1 for "name[]", N for "name[N]",
   -2 when the key is not an item of name. */
static long long
s_array_rank (const char *key, const char *name)
{
    const char *child;
    int len = s_child_of (key, name, &child);
    if (len < 0)
        return -2;
    if (len == 0)
        return -1;
    if (len > 9)
        return -2;
    long long rank = 0;
    for (int i = 0; i < len; i++) {
        if (!isdigit ((unsigned char)child[i]))
            return -2;
        rank = rank * 10 + (child[i] - '0');
    }
    return rank;
}

/* Fills order[] with the pair indexes of name's items in array order
   (stable: "[]" items first in body order, then indexed ones by index).
   Returns the item count. order holds PPM_FORM_MAX_PAIRS entries. */
static size_t
s_array_items (const ppm_form_t *self, const char *name, size_t *order, long long *rank)
{
    size_t count = 0;
    for (size_t i = 0; i < self->count; i++) {
        long long r = s_array_rank (self->pairs[i].key, name);
        if (r == -2)
            continue;
        /* insertion sort, stable */
        size_t at = count;
        while (at > 0 && rank[at - 1] > r) {
            rank[at] = rank[at - 1];
            order[at] = order[at - 1];
            at--;
        }
        rank[at] = r;
        order[at] = i;
        count++;
    }
    return count;
}

size_t
ppm_form_array_count (const ppm_form_t *self, const char *name)
{
    if (!self || !name)
        return 0;
    size_t count = 0;
    for (size_t i = 0; i < self->count; i++)
        if (s_array_rank (self->pairs[i].key, name) != -2)
            count++;
    return count;
}

const char *
ppm_form_array_at (const ppm_form_t *self, const char *name, size_t index)
{
    if (!self || !name || index >= self->count)
        return NULL;
    size_t *order = malloc (self->count * sizeof (size_t));
    long long *rank = malloc (self->count * sizeof (long long));
    const char *value = NULL;
    if (order && rank) {
        size_t count = s_array_items (self, name, order, rank);
        if (index < count)
            value = self->pairs[order[index]].value;
    }
    free (order);
    free (rank);
    return value;
}
