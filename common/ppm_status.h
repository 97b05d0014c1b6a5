/*  ppm_status: the outcome of an operation, as every service reports it.

    A status is a code (numbered as gRPC's and as proto/envelope.proto's
    Code), a human message, and for INVALID_ARGUMENT the list of field
    violations (field + description), so that a caller can show each error
    next to the field that caused it. NULL means OK everywhere a status is
    accepted. Statuses travel on the wire as ppm.v1.Status.
*/
#ifndef PPM_STATUS_H_INCLUDED
#define PPM_STATUS_H_INCLUDED

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include "proto/envelope.pb-c.h"

typedef enum {
    PPM_OK = 0,
    PPM_CANCELLED = 1,
    PPM_UNKNOWN = 2,
    PPM_INVALID_ARGUMENT = 3,
    PPM_DEADLINE_EXCEEDED = 4,
    PPM_NOT_FOUND = 5,
    PPM_ALREADY_EXISTS = 6,
    PPM_PERMISSION_DENIED = 7,
    PPM_RESOURCE_EXHAUSTED = 8,
    PPM_FAILED_PRECONDITION = 9,
    PPM_ABORTED = 10,
    PPM_OUT_OF_RANGE = 11,
    PPM_UNIMPLEMENTED = 12,
    PPM_INTERNAL = 13,
    PPM_UNAVAILABLE = 14,
    PPM_DATA_LOSS = 15,
    PPM_UNAUTHENTICATED = 16
} ppm_code_t;

/* Caps: a message or field description is cut to this many bytes, and a
   status holds at most this many field violations (more are counted). */
#define PPM_STATUS_TEXT_MAX  512
#define PPM_STATUS_FIELD_MAX 64

typedef struct _ppm_status_t ppm_status_t;

/* Creates a status with a printf-style message. Never returns NULL (aborts
   on out of memory, like czmq). */
ppm_status_t *ppm_status_new (ppm_code_t code, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));
/* Destroys a status; safe on NULL and twice. */
void ppm_status_destroy (ppm_status_t **self_p);

/* Adds a field violation. Returns 0, or -1 when the cap is reached. */
int ppm_status_add_field (ppm_status_t *self, const char *field, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

/* Accessors; a NULL status reads as OK with an empty message. */
ppm_code_t ppm_status_code (const ppm_status_t *self);
const char *ppm_status_message (const ppm_status_t *self);
size_t ppm_status_field_count (const ppm_status_t *self);
const char *ppm_status_field_name (const ppm_status_t *self, size_t index);
const char *ppm_status_field_description (const ppm_status_t *self, size_t index);
/* Looks up the violation of one field; NULL when that field has none. */
const char *ppm_status_field_find (const ppm_status_t *self, const char *field);

/* "INVALID_ARGUMENT" etc.; "UNKNOWN" for a number out of range. */
const char *ppm_code_name (ppm_code_t code);
/* Parses a code name; returns -1 when it is not one. */
int ppm_code_from_name (const char *name);

/* Wire conversion. _to_proto returns a message the caller frees with
   ppm_status_proto_free; _from_proto copies (NULL proto = OK = NULL). */
Ppm__V1__Status *ppm_status_to_proto (const ppm_status_t *self);
void ppm_status_proto_free (Ppm__V1__Status **proto_p);
ppm_status_t *ppm_status_from_proto (const Ppm__V1__Status *proto);

#endif
