/*  ppm_form: application/x-www-form-urlencoded bodies, as Stripe speaks them.

    Stripe takes request bodies as form pairs with bracketed nested keys
    (`metadata[session_id]=s_1`, `line_items[0][price_data][unit_amount]=250`,
    arrays as `expand[]=a` or `expand[0]=a`). One form is a flat, ordered
    list of (key, value) pairs; nesting lives only in the key text, so the
    same type serves the payment service (which builds and encodes requests)
    and the Stripe emulator (which decodes them and reads nested keys).

    Encoding follows the WHATWG urlencoded serializer: ASCII letters, digits
    and `*-._` stay, space becomes `+`, every other byte (brackets included)
    becomes `%XX`. Decoding is strict: a `%` not followed by two hex digits,
    a decoded NUL byte, an empty key, or a body, pair count or key length
    beyond the caps below is an error, never a guess.

    Ownership: a form owns copies of its keys and values; every `const
    char *` returned is borrowed from the form and valid until it is
    destroyed. ppm_form_encode returns a string the caller frees.
*/
#ifndef PPM_FORM_H_INCLUDED
#define PPM_FORM_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Caps on what a form may hold, for both directions. */
#define PPM_FORM_MAX_BODY  (256 * 1024) /* encoded bytes */
#define PPM_FORM_MAX_PAIRS 1024         /* pairs in one form */
#define PPM_FORM_MAX_KEY   256          /* bytes of one decoded key */

typedef enum {
    PPM_FORM_OK = 0,
    PPM_FORM_TOO_LARGE,      /* body (or encoded result) above PPM_FORM_MAX_BODY */
    PPM_FORM_TOO_MANY_PAIRS, /* more than PPM_FORM_MAX_PAIRS pairs */
    PPM_FORM_KEY_TOO_LONG,   /* a key above PPM_FORM_MAX_KEY bytes */
    PPM_FORM_BAD_ESCAPE,     /* '%' not followed by two hex digits */
    PPM_FORM_NUL_BYTE,       /* a NUL byte, raw or as %00 */
    PPM_FORM_EMPTY_KEY,      /* "=value" or a NULL/empty key given to add */
    PPM_FORM_NO_MEMORY
} ppm_form_err_t;

typedef struct _ppm_form_t ppm_form_t;

/* A human phrase for an error: "malformed percent escape", … */
const char *ppm_form_strerror (ppm_form_err_t err);

/* Creates an empty form. NULL only when out of memory. */
ppm_form_t *ppm_form_new (void);
/* Destroys a form; safe on NULL and twice. */
void ppm_form_destroy (ppm_form_t **self_p);

/* Appends a pair (both copied; key as written, brackets and all). */
ppm_form_err_t ppm_form_add (ppm_form_t *self, const char *key, const char *value);
/* Appends a pair with a decimal integer value. */
ppm_form_err_t ppm_form_add_int (ppm_form_t *self, const char *key, int64_t value);
/* Ends the segment list of ppm_form_add_path (a typed NULL, as a variadic
   sentinel must be). */
#define PPM_FORM_END ((const char *)NULL)

/* Appends a pair whose key is built from segments: ("line_items", "0",
   "price_data", "unit_amount", PPM_FORM_END) gives "line_items[0][price_data]
   [unit_amount]". The segment list ends with PPM_FORM_END. */
ppm_form_err_t ppm_form_add_path (ppm_form_t *self, const char *value, const char *first, ...)
    __attribute__ ((sentinel));

/* Encodes the pairs in order: "k=v&k2=v2". Returns a string the caller
   frees, or NULL when out of memory or when the result would pass
   PPM_FORM_MAX_BODY (*err says which; err may be NULL). */
char *ppm_form_encode (const ppm_form_t *self, ppm_form_err_t *err);

/* Decodes size bytes of body (need not be NUL-terminated) into a new form
   in *form_p (the caller destroys it). Empty pieces ("a=1&&b=2") are
   skipped; "a" alone means key "a" with value "". On error *form_p is
   NULL, and *offset (when not NULL) is the byte offset of the fault. */
ppm_form_err_t ppm_form_decode (const char *body, size_t size, ppm_form_t **form_p, size_t *offset);

/* Number of pairs and the i-th (decoded) key and value. */
size_t ppm_form_size (const ppm_form_t *self);
const char *ppm_form_key (const ppm_form_t *self, size_t index);
const char *ppm_form_value (const ppm_form_t *self, size_t index);

/* The value of the last pair whose key is exactly key (Stripe: a later
   value wins), e.g. ppm_form_get (form, "metadata[session_id]"); NULL when
   there is none. */
const char *ppm_form_get (const ppm_form_t *self, const char *key);
/* Number of pairs whose key is exactly key. */
size_t ppm_form_count (const ppm_form_t *self, const char *key);

/* Whether any key is parent or starts with "parent[": the parameter was
   sent, in whatever shape. */
bool ppm_form_has (const ppm_form_t *self, const char *parent);

/* The child name when pair index's key is exactly "parent[child]" (one
   level, child without brackets), copied into child (size bytes, NUL
   terminated); returns its length, or -1 when the key has another shape
   or the child does not fit. metadata[…] is read this way. */
int ppm_form_child (const ppm_form_t *self, size_t index, const char *parent, char *child,
                    size_t size);

/* An array parameter sent as "name[]=a&name[]=b" or "name[0]=a&name[1]=b"
   (or mixed: "[]" items in order, then indexed ones by index). Returns the
   number of items; ppm_form_array_at gives the i-th, NULL past the end.
   An index that is not a decimal number makes the key not an item. */
size_t ppm_form_array_count (const ppm_form_t *self, const char *name);
const char *ppm_form_array_at (const ppm_form_t *self, const char *name, size_t index);

#endif
