/*  gateway_json: the JSON side of the public API: parsing request bodies
    under caps, reading fields with per-field errors, SPEC §5's error body,
    and the mapping from ppm status codes to HTTP status codes.

    Every reader appends its violation to one ppm_status_t (created on the
    first error, INVALID_ARGUMENT), so that a handler reads all fields and
    answers once with every field that is wrong, each named.
*/
#ifndef GATEWAY_JSON_H_INCLUDED
#define GATEWAY_JSON_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ppm_status.h"

#define GATEWAY_JSON_DEPTH_MAX 16

/* HTTP status for a ppm status (NULL = 200). FAILED_PRECONDITION about a
   plan is 403, any other 422. */
int gateway_http_status_for (const ppm_status_t *status);
/* Seconds for Retry-After on 503 (and 429). */
#define GATEWAY_RETRY_AFTER_S 1

/* SPEC §5's error body for status: {"error":{"code","message","fields"}}.
   Returns a new reference. */
json_t *gateway_error_json (const ppm_status_t *status);

/* Nesting depth of JSON text (brackets outside strings); a cheap check
   before parsing so that a deep body costs nothing. */
size_t gateway_json_depth (const char *text, size_t len);

/* Parses body as one JSON object, within GATEWAY_JSON_DEPTH_MAX. Returns a
   new reference, or NULL with *error set (INVALID_ARGUMENT naming "body"
   and where it failed). An empty body parses as {} when allow_empty. */
json_t *gateway_json_parse_object (const char *body, size_t len, bool allow_empty,
                                   ppm_status_t **error);

/* Refuses every key of object that is not in allowed (NULL-ended): each one
   is added to *errors as "unknown field". Returns the number refused. */
size_t gateway_json_refuse_unknown (json_t *object, const char *const *allowed,
                                    ppm_status_t **errors);

/* Adds a field violation to *errors (created as INVALID_ARGUMENT on the
   first call). */
void gateway_json_violation (ppm_status_t **errors, const char *field, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* Field readers. Each returns true when the field is present and valid
   (value in *out); false when absent (no error unless required) or
   invalid (error added). */
bool gateway_json_get_string (json_t *object, const char *name, bool required, size_t max_len,
                              const char **out, ppm_status_t **errors);
bool gateway_json_get_int (json_t *object, const char *name, bool required, int64_t min,
                           int64_t max, int64_t *out, ppm_status_t **errors);
bool gateway_json_get_bool (json_t *object, const char *name, bool required, bool *out,
                            ppm_status_t **errors);
/* An integer or null: *is_null tells which. Required means the key must be
   present (null is a value). */
bool gateway_json_get_nullable_int (json_t *object, const char *name, bool required, int64_t min,
                                    int64_t max, int64_t *out, bool *is_null,
                                    ppm_status_t **errors);

/* Parses a decimal integer query value within [min, max]; false (and an
   error naming the parameter) otherwise. */
bool gateway_parse_int (const char *text, const char *name, int64_t min, int64_t max, int64_t *out,
                        ppm_status_t **errors);

/* Whether text is a safe identifier for ids in paths and claims:
   1..max_len of [A-Za-z0-9_.:@-], not dots only ("." and ".." are path
   segments, not ids: a client or proxy that normalises the URL would send
   the request elsewhere). */
bool gateway_valid_id (const char *text, size_t max_len);

#endif
