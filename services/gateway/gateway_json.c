/*  gateway_json: body parsing under caps, field readers, error bodies and
    the status → HTTP mapping (see gateway_json.h).
*/
#include "gateway_json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int
gateway_http_status_for (const ppm_status_t *status)
{
    if (!status)
        return 200;
    switch (ppm_status_code (status)) {
        case PPM_OK:
            return 200;
        case PPM_INVALID_ARGUMENT:
        case PPM_OUT_OF_RANGE:
            return 400;
        case PPM_UNAUTHENTICATED:
            return 401;
        case PPM_PERMISSION_DENIED:
            return 403;
        case PPM_FAILED_PRECONDITION: {
            const char *message = ppm_status_message (status);
            if (strstr (message, "plan") || strstr (message, "Plan"))
                return 403;
            return 422;
        }
        case PPM_NOT_FOUND:
            return 404;
        case PPM_ALREADY_EXISTS:
        case PPM_ABORTED:
            return 409;
        case PPM_RESOURCE_EXHAUSTED:
            return 429;
        case PPM_UNIMPLEMENTED:
            return 501;
        case PPM_UNAVAILABLE:
        case PPM_DEADLINE_EXCEEDED:
        case PPM_CANCELLED:
            return 503;
        case PPM_UNKNOWN:
        case PPM_INTERNAL:
        case PPM_DATA_LOSS:
            return 500;
    }
    return 500;
}

/* A JSON string of text; bytes that are not valid UTF-8 (a malformed
   body quoted in jansson's error text, a query parameter's name) become
   '?', so that the error body can always be built (else the client would
   get a 500 for its own bad input). */
static json_t *
s_text (const char *text)
{
    json_t *json = json_string (text ? text : "");
    if (json)
        return json;
    char *copy = strdup (text);
    if (!copy)
        return json_string ("?");
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    json = json_string (copy);
    free (copy);
    return json;
}

json_t *
gateway_error_json (const ppm_status_t *status)
{
    ppm_code_t code = ppm_status_code (status);
    const char *message = ppm_status_message (status);
    if (code == PPM_OK)
        code = PPM_UNKNOWN;
    json_t *fields = json_array ();
    for (size_t i = 0; i < ppm_status_field_count (status); i++)
        json_array_append_new (
            fields, json_pack ("{s:o, s:o}", "field", s_text (ppm_status_field_name (status, i)),
                               "message", s_text (ppm_status_field_description (status, i))));
    return json_pack ("{s:{s:s, s:o, s:o}}", "error", "code", ppm_code_name (code), "message",
                      s_text (message && *message ? message : ppm_code_name (code)), "fields",
                      fields);
}

size_t
gateway_json_depth (const char *text, size_t len)
{
    size_t depth = 0;
    size_t max = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            depth++;
            if (depth > max)
                max = depth;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return max;
}

void
gateway_json_violation (ppm_status_t **errors, const char *field, const char *fmt, ...)
{
    char text[PPM_STATUS_TEXT_MAX];
    va_list args;
    va_start (args, fmt);
    vsnprintf (text, sizeof text, fmt, args);
    va_end (args);
    if (!*errors)
        *errors = ppm_status_new (PPM_INVALID_ARGUMENT, "%s: %s", field, text);
    ppm_status_add_field (*errors, field, "%s", text);
}

json_t *
gateway_json_parse_object (const char *body, size_t len, bool allow_empty, ppm_status_t **error)
{
    size_t start = 0;
    while (start < len && (body[start] == ' ' || body[start] == '\n' || body[start] == '\r' ||
                           body[start] == '\t'))
        start++;
    if (start == len) {
        if (allow_empty)
            return json_object ();
        gateway_json_violation (error, "body", "a JSON object is required");
        return NULL;
    }
    if (gateway_json_depth (body, len) > GATEWAY_JSON_DEPTH_MAX) {
        gateway_json_violation (error, "body", "JSON is nested deeper than %d levels",
                                GATEWAY_JSON_DEPTH_MAX);
        return NULL;
    }
    json_error_t jerr;
    json_t *json = json_loadb (body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json) {
        gateway_json_violation (error, "body", "invalid JSON at line %d column %d: %s", jerr.line,
                                jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object (json)) {
        json_decref (json);
        gateway_json_violation (error, "body", "a JSON object is required");
        return NULL;
    }
    return json;
}

size_t
gateway_json_refuse_unknown (json_t *object, const char *const *allowed, ppm_status_t **errors)
{
    size_t refused = 0;
    const char *key;
    json_t *value;
    json_object_foreach (object, key, value)
    {
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp (*a, key) == 0) {
                known = true;
                break;
            }
        if (!known) {
            char name[80];
            snprintf (name, sizeof name, "%s", key);
            gateway_json_violation (errors, name, "unknown field");
            refused++;
        }
    }
    return refused;
}

bool
gateway_json_get_string (json_t *object, const char *name, bool required, size_t max_len,
                         const char **out, ppm_status_t **errors)
{
    json_t *value = json_object_get (object, name);
    if (!value || json_is_null (value)) {
        if (required)
            gateway_json_violation (errors, name, "is required");
        return false;
    }
    if (!json_is_string (value)) {
        gateway_json_violation (errors, name, "must be a string");
        return false;
    }
    size_t len = json_string_length (value);
    if (len > max_len || strlen (json_string_value (value)) != len) {
        gateway_json_violation (errors, name, "must be at most %zu characters", max_len);
        return false;
    }
    *out = json_string_value (value);
    return true;
}

bool
gateway_json_get_int (json_t *object, const char *name, bool required, int64_t min, int64_t max,
                      int64_t *out, ppm_status_t **errors)
{
    json_t *value = json_object_get (object, name);
    if (!value || json_is_null (value)) {
        if (required)
            gateway_json_violation (errors, name, "is required");
        return false;
    }
    if (!json_is_integer (value)) {
        gateway_json_violation (errors, name, "must be an integer");
        return false;
    }
    int64_t v = json_integer_value (value);
    if (v < min || v > max) {
        gateway_json_violation (errors, name, "must be between %lld and %lld", (long long)min,
                                (long long)max);
        return false;
    }
    *out = v;
    return true;
}

bool
gateway_json_get_bool (json_t *object, const char *name, bool required, bool *out,
                       ppm_status_t **errors)
{
    json_t *value = json_object_get (object, name);
    if (!value || json_is_null (value)) {
        if (required)
            gateway_json_violation (errors, name, "is required");
        return false;
    }
    if (!json_is_boolean (value)) {
        gateway_json_violation (errors, name, "must be true or false");
        return false;
    }
    *out = json_is_true (value);
    return true;
}

bool
gateway_json_get_nullable_int (json_t *object, const char *name, bool required, int64_t min,
                               int64_t max, int64_t *out, bool *is_null, ppm_status_t **errors)
{
    json_t *value = json_object_get (object, name);
    if (!value) {
        if (required)
            gateway_json_violation (errors, name, "is required (an integer or null)");
        return false;
    }
    if (json_is_null (value)) {
        *is_null = true;
        *out = 0;
        return true;
    }
    *is_null = false;
    return gateway_json_get_int (object, name, true, min, max, out, errors);
}

bool
gateway_parse_int (const char *text, const char *name, int64_t min, int64_t max, int64_t *out,
                   ppm_status_t **errors)
{
    if (!text || !*text) {
        gateway_json_violation (errors, name, "must be an integer");
        return false;
    }
    for (const char *p = text; *p; p++)
        if ((*p < '0' || *p > '9') && !(p == text && *p == '-')) {
            gateway_json_violation (errors, name, "must be an integer");
            return false;
        }
    errno = 0;
    char *end = NULL;
    long long v = strtoll (text, &end, 10);
    if (errno || !end || *end || v < min || v > max) {
        gateway_json_violation (errors, name, "must be between %lld and %lld", (long long)min,
                                (long long)max);
        return false;
    }
    *out = v;
    return true;
}

bool
gateway_valid_id (const char *text, size_t max_len)
{
    if (!text)
        return false;
    size_t len = strlen (text);
    if (len == 0 || len > max_len || strspn (text, ".") == len)
        return false;
    for (const char *p = text; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.' || c == ':' || c == '@';
        if (!ok)
            return false;
    }
    return true;
}
