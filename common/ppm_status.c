/*  ppm_status: see ppm_status.h. A status owns copies of its texts; field
    violations are kept in a small array capped at PPM_STATUS_FIELD_MAX.
*/
#include "ppm_status.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *field;       /* dotted path of the offending field */
    char *description; /* why it is refused */
} s_violation_t;

struct _ppm_status_t {
    ppm_code_t code;                            /* outcome */
    char *message;                              /* human summary */
    s_violation_t fields[PPM_STATUS_FIELD_MAX]; /* violations, in order */
    size_t field_count;                         /* used entries of fields */
};

static const char *s_code_names[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};
#define S_CODE_COUNT (sizeof (s_code_names) / sizeof (s_code_names[0]))

static void *
s_alloc (size_t size)
{
    void *p = calloc (1, size);
    assert (p);
    return p;
}

static char *
s_vformat (const char *fmt, va_list args)
{
    char *text = s_alloc (PPM_STATUS_TEXT_MAX);
    vsnprintf (text, PPM_STATUS_TEXT_MAX, fmt, args);
    return text;
}

static char *
s_copy (const char *text)
{
    size_t len = text ? strnlen (text, PPM_STATUS_TEXT_MAX - 1) : 0;
    char *copy = s_alloc (len + 1);
    if (len)
        memcpy (copy, text, len);
    return copy;
}

ppm_status_t *
ppm_status_new (ppm_code_t code, const char *fmt, ...)
{
    ppm_status_t *self = s_alloc (sizeof (ppm_status_t));
    self->code = code;
    va_list args;
    va_start (args, fmt);
    self->message = s_vformat (fmt, args);
    va_end (args);
    return self;
}

void
ppm_status_destroy (ppm_status_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ppm_status_t *self = *self_p;
    for (size_t i = 0; i < self->field_count; i++) {
        free (self->fields[i].field);
        free (self->fields[i].description);
    }
    free (self->message);
    free (self);
    *self_p = NULL;
}

int
ppm_status_add_field (ppm_status_t *self, const char *field, const char *fmt, ...)
{
    assert (self);
    if (self->field_count == PPM_STATUS_FIELD_MAX)
        return -1;
    s_violation_t *v = &self->fields[self->field_count++];
    v->field = s_copy (field);
    va_list args;
    va_start (args, fmt);
    v->description = s_vformat (fmt, args);
    va_end (args);
    return 0;
}

ppm_code_t
ppm_status_code (const ppm_status_t *self)
{
    return self ? self->code : PPM_OK;
}

const char *
ppm_status_message (const ppm_status_t *self)
{
    return self ? self->message : "";
}

size_t
ppm_status_field_count (const ppm_status_t *self)
{
    return self ? self->field_count : 0;
}

const char *
ppm_status_field_name (const ppm_status_t *self, size_t index)
{
    return self && index < self->field_count ? self->fields[index].field : NULL;
}

const char *
ppm_status_field_description (const ppm_status_t *self, size_t index)
{
    return self && index < self->field_count ? self->fields[index].description : NULL;
}

const char *
ppm_status_field_find (const ppm_status_t *self, const char *field)
{
    for (size_t i = 0; self && i < self->field_count; i++)
        if (strcmp (self->fields[i].field, field) == 0)
            return self->fields[i].description;
    return NULL;
}

const char *
ppm_code_name (ppm_code_t code)
{
    if ((size_t)code >= S_CODE_COUNT)
        return "UNKNOWN";
    return s_code_names[code];
}

int
ppm_code_from_name (const char *name)
{
    for (size_t i = 0; name && i < S_CODE_COUNT; i++)
        if (strcmp (s_code_names[i], name) == 0)
            return (int)i;
    return -1;
}

Ppm__V1__Status *
ppm_status_to_proto (const ppm_status_t *self)
{
    Ppm__V1__Status *proto = s_alloc (sizeof (Ppm__V1__Status));
    ppm__v1__status__init (proto);
    proto->code = (Ppm__V1__Code)ppm_status_code (self);
    proto->message = s_copy (ppm_status_message (self));
    size_t count = ppm_status_field_count (self);
    if (count) {
        proto->fields = s_alloc (count * sizeof (Ppm__V1__FieldViolation *));
        proto->n_fields = count;
        for (size_t i = 0; i < count; i++) {
            Ppm__V1__FieldViolation *v = s_alloc (sizeof (Ppm__V1__FieldViolation));
            ppm__v1__field_violation__init (v);
            v->field = s_copy (self->fields[i].field);
            v->description = s_copy (self->fields[i].description);
            proto->fields[i] = v;
        }
    }
    return proto;
}

void
ppm_status_proto_free (Ppm__V1__Status **proto_p)
{
    if (!proto_p || !*proto_p)
        return;
    Ppm__V1__Status *proto = *proto_p;
    for (size_t i = 0; i < proto->n_fields; i++) {
        free (proto->fields[i]->field);
        free (proto->fields[i]->description);
        free (proto->fields[i]);
    }
    free (proto->fields);
    free (proto->message);
    free (proto);
    *proto_p = NULL;
}

ppm_status_t *
ppm_status_from_proto (const Ppm__V1__Status *proto)
{
    if (!proto || proto->code == PPM__V1__CODE__OK)
        return NULL;
    int code = (int)proto->code;
    if (code < 0 || (size_t)code >= S_CODE_COUNT)
        code = PPM_UNKNOWN;
    ppm_status_t *self =
        ppm_status_new ((ppm_code_t)code, "%s", proto->message ? proto->message : "");
    for (size_t i = 0; i < proto->n_fields; i++) {
        const Ppm__V1__FieldViolation *v = proto->fields[i];
        if (!v || ppm_status_add_field (self, v->field ? v->field : "", "%s",
                                        v->description ? v->description : ""))
            break;
    }
    return self;
}
