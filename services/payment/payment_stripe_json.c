/*  payment_stripe_json: Stripe JSON replies and events into fixed structs.
    See payment_stripe_json.h for the contract. Every accessor is checked:
    wrong types and oversized strings are errors, absent fields are empty.
*/
#include "payment_stripe_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int s_fail (char *error, size_t error_size, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static int
s_fail (char *error, size_t error_size, const char *fmt, ...)
{
    if (error && error_size > 0) {
        va_list args;
        va_start (args, fmt);
        vsnprintf (error, error_size, fmt, args);
        va_end (args);
    }
    return -1;
}

/* Depth of a value, stopping as soon as it exceeds limit. */
static int
s_depth (const json_t *value, int limit)
{
    if (limit < 0)
        return 1;
    int deepest = 0;
    if (json_is_object (value)) {
        const char *key;
        json_t *child;
        json_object_foreach ((json_t *)value, key, child)
        {
            int d = s_depth (child, limit - 1);
            if (d > deepest)
                deepest = d;
            if (deepest > limit)
                break;
        }
        return deepest + 1;
    }
    if (json_is_array (value)) {
        size_t index;
        json_t *child;
        json_array_foreach (value, index, child)
        {
            int d = s_depth (child, limit - 1);
            if (d > deepest)
                deepest = d;
            if (deepest > limit)
                break;
        }
        return deepest + 1;
    }
    return 1;
}

json_t *
payment_stripe_json_parse (const char *text, size_t size, char *error, size_t error_size)
{
    if (!text || size == 0) {
        s_fail (error, error_size, "empty reply");
        return NULL;
    }
    if (size > PAYMENT_STRIPE_JSON_MAX) {
        s_fail (error, error_size, "reply of %zu bytes exceeds the %d byte cap", size,
                PAYMENT_STRIPE_JSON_MAX);
        return NULL;
    }
    json_error_t jerr;
    json_t *root = json_loadb (text, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        s_fail (error, error_size, "invalid JSON at line %d: %s", jerr.line, jerr.text);
        return NULL;
    }
    if (!json_is_object (root)) {
        json_decref (root);
        s_fail (error, error_size, "reply is not a JSON object");
        return NULL;
    }
    if (s_depth (root, PAYMENT_STRIPE_JSON_DEPTH) > PAYMENT_STRIPE_JSON_DEPTH) {
        json_decref (root);
        s_fail (error, error_size, "reply nests deeper than %d", PAYMENT_STRIPE_JSON_DEPTH);
        return NULL;
    }
    return root;
}

/* Copies the string field key of object into out; absent or null gives "".
   An expandable field (an object with an "id") yields its id. */
static int
s_str (const json_t *object, const char *key, char *out, size_t out_size, char *error,
       size_t error_size)
{
    out[0] = '\0';
    json_t *value = json_object_get (object, key);
    if (!value || json_is_null (value))
        return 0;
    if (json_is_object (value))
        value = json_object_get (value, "id");
    if (!json_is_string (value))
        return s_fail (error, error_size, "field %s: expected a string", key);
    size_t length = json_string_length (value);
    if (length >= out_size)
        return s_fail (error, error_size, "field %s: %zu bytes exceed %zu", key, length,
                       out_size - 1);
    const char *text = json_string_value (value);
    if (memchr (text, '\0', length))
        return s_fail (error, error_size, "field %s: embedded NUL", key);
    memcpy (out, text, length);
    out[length] = '\0';
    return 0;
}

static int
s_amount (const json_t *object, const char *key, int64_t *out, char *error, size_t error_size)
{
    *out = 0;
    json_t *value = json_object_get (object, key);
    if (!value || json_is_null (value))
        return 0;
    if (!json_is_integer (value))
        return s_fail (error, error_size, "field %s: expected an integer", key);
    json_int_t number = json_integer_value (value);
    if (number < 0)
        return s_fail (error, error_size, "field %s: negative", key);
    *out = (int64_t)number;
    return 0;
}

static int
s_bool (const json_t *object, const char *key, bool *out, char *error, size_t error_size)
{
    *out = false;
    json_t *value = json_object_get (object, key);
    if (!value || json_is_null (value))
        return 0;
    if (!json_is_boolean (value))
        return s_fail (error, error_size, "field %s: expected a boolean", key);
    *out = json_is_true (value);
    return 0;
}

static int
s_meta (const json_t *object, payment_stripe_meta_t *out, char *error, size_t error_size)
{
    memset (out, 0, sizeof *out);
    json_t *meta = json_object_get (object, "metadata");
    if (!meta || json_is_null (meta))
        return 0;
    if (!json_is_object (meta))
        return s_fail (error, error_size, "field metadata: expected an object");
    if (s_str (meta, "tenant", out->tenant, sizeof out->tenant, error, error_size) ||
        s_str (meta, "session", out->session, sizeof out->session, error, error_size) ||
        s_str (meta, "payment", out->payment, sizeof out->payment, error, error_size))
        return -1;
    return 0;
}

static int
s_error_object (const json_t *err, payment_stripe_error_t *out, char *error, size_t error_size)
{
    memset (out, 0, sizeof *out);
    if (!err || json_is_null (err))
        return 0;
    if (!json_is_object (err))
        return s_fail (error, error_size, "field error: expected an object");
    if (s_str (err, "type", out->type, sizeof out->type, error, error_size) ||
        s_str (err, "code", out->code, sizeof out->code, error, error_size) ||
        s_str (err, "decline_code", out->decline_code, sizeof out->decline_code, error,
               error_size) ||
        s_str (err, "param", out->param, sizeof out->param, error, error_size))
        return -1;
    /* Messages are for people: cut rather than refuse a long one. */
    json_t *message = json_object_get (err, "message");
    if (json_is_string (message))
        snprintf (out->message, sizeof out->message, "%s", json_string_value (message));
    else if (message && !json_is_null (message))
        return s_fail (error, error_size, "field error.message: expected a string");
    json_t *pi = json_object_get (err, "payment_intent");
    if (json_is_object (pi)) {
        if (s_str (pi, "id", out->payment_intent, sizeof out->payment_intent, error, error_size) ||
            s_str (pi, "status", out->payment_intent_status, sizeof out->payment_intent_status,
                   error, error_size))
            return -1;
    } else if (json_is_string (pi)) {
        if (s_str (err, "payment_intent", out->payment_intent, sizeof out->payment_intent, error,
                   error_size))
            return -1;
    }
    return 0;
}

int
payment_stripe_error_read (const json_t *root, payment_stripe_error_t *out, char *error,
                           size_t error_size)
{
    memset (out, 0, sizeof *out);
    if (!json_is_object (root))
        return s_fail (error, error_size, "error reply is not an object");
    json_t *err = json_object_get (root, "error");
    if (!json_is_object (err))
        return s_fail (error, error_size, "field error: missing");
    return s_error_object (err, out, error, error_size);
}

static int
s_expect_object (const json_t *object, const char *want, char *error, size_t error_size)
{
    if (!json_is_object (object))
        return s_fail (error, error_size, "not an object");
    json_t *kind = json_object_get (object, "object");
    if (kind && !json_is_string (kind))
        return s_fail (error, error_size, "field object: expected a string");
    if (want && kind && strcmp (json_string_value (kind), want) != 0)
        return s_fail (error, error_size, "field object: expected %s, got %.40s", want,
                       json_string_value (kind));
    json_t *id = json_object_get (object, "id");
    if (!json_is_string (id) || json_string_length (id) == 0)
        return s_fail (error, error_size, "field id: missing");
    return 0;
}

int
payment_stripe_pi_read (const json_t *object, payment_stripe_pi_t *out, char *error,
                        size_t error_size)
{
    memset (out, 0, sizeof *out);
    if (s_expect_object (object, "payment_intent", error, error_size))
        return -1;
    if (s_str (object, "id", out->id, sizeof out->id, error, error_size) ||
        s_str (object, "status", out->status, sizeof out->status, error, error_size) ||
        s_str (object, "currency", out->currency, sizeof out->currency, error, error_size) ||
        s_str (object, "capture_method", out->capture_method, sizeof out->capture_method, error,
               error_size) ||
        s_str (object, "client_secret", out->client_secret, sizeof out->client_secret, error,
               error_size) ||
        s_str (object, "customer", out->customer, sizeof out->customer, error, error_size) ||
        s_str (object, "latest_charge", out->latest_charge, sizeof out->latest_charge, error,
               error_size) ||
        s_amount (object, "amount", &out->amount, error, error_size) ||
        s_amount (object, "amount_capturable", &out->amount_capturable, error, error_size) ||
        s_amount (object, "amount_received", &out->amount_received, error, error_size) ||
        s_bool (object, "livemode", &out->livemode, error, error_size) ||
        s_meta (object, &out->meta, error, error_size) ||
        s_error_object (json_object_get (object, "last_payment_error"), &out->last_error, error,
                        error_size))
        return -1;
    if (out->status[0] == '\0')
        return s_fail (error, error_size, "field status: missing");
    return 0;
}

int
payment_stripe_checkout_read (const json_t *object, payment_stripe_checkout_t *out, char *error,
                              size_t error_size)
{
    memset (out, 0, sizeof *out);
    if (s_expect_object (object, "checkout.session", error, error_size))
        return -1;
    if (s_str (object, "id", out->id, sizeof out->id, error, error_size) ||
        s_str (object, "status", out->status, sizeof out->status, error, error_size) ||
        s_str (object, "payment_status", out->payment_status, sizeof out->payment_status, error,
               error_size) ||
        s_str (object, "payment_intent", out->payment_intent, sizeof out->payment_intent, error,
               error_size) ||
        s_str (object, "url", out->url, sizeof out->url, error, error_size) ||
        s_str (object, "client_reference_id", out->client_reference_id,
               sizeof out->client_reference_id, error, error_size) ||
        s_str (object, "currency", out->currency, sizeof out->currency, error, error_size) ||
        s_amount (object, "amount_total", &out->amount_total, error, error_size) ||
        s_meta (object, &out->meta, error, error_size))
        return -1;
    return 0;
}

int
payment_stripe_object_read (const json_t *object, payment_stripe_object_t *out, char *error,
                            size_t error_size)
{
    memset (out, 0, sizeof *out);
    if (s_expect_object (object, NULL, error, error_size))
        return -1;
    if (s_str (object, "id", out->id, sizeof out->id, error, error_size) ||
        s_str (object, "object", out->object, sizeof out->object, error, error_size) ||
        s_str (object, "status", out->status, sizeof out->status, error, error_size) ||
        s_str (object, "payment_intent", out->payment_intent, sizeof out->payment_intent, error,
               error_size) ||
        s_str (object, "charge", out->charge, sizeof out->charge, error, error_size) ||
        s_str (object, "reason", out->reason, sizeof out->reason, error, error_size) ||
        s_str (object, "currency", out->currency, sizeof out->currency, error, error_size) ||
        s_amount (object, "amount", &out->amount, error, error_size) ||
        s_amount (object, "amount_refunded", &out->amount_refunded, error, error_size) ||
        s_bool (object, "refunded", &out->refunded, error, error_size) ||
        s_meta (object, &out->meta, error, error_size))
        return -1;
    return 0;
}

int
payment_stripe_event_read (const json_t *root, payment_stripe_event_t *out, char *error,
                           size_t error_size)
{
    memset (out, 0, sizeof *out);
    if (s_expect_object (root, "event", error, error_size))
        return -1;
    if (s_str (root, "id", out->id, sizeof out->id, error, error_size) ||
        s_str (root, "type", out->type, sizeof out->type, error, error_size) ||
        s_amount (root, "created", &out->created, error, error_size) ||
        s_bool (root, "livemode", &out->livemode, error, error_size))
        return -1;
    if (out->type[0] == '\0')
        return s_fail (error, error_size, "field type: missing");
    json_t *data = json_object_get (root, "data");
    if (!json_is_object (data))
        return s_fail (error, error_size, "field data: expected an object");
    json_t *object = json_object_get (data, "object");
    if (!json_is_object (object))
        return s_fail (error, error_size, "field data.object: expected an object");
    if (s_str (object, "object", out->object_type, sizeof out->object_type, error, error_size))
        return -1;
    out->object = object;
    return 0;
}

int
payment_stripe_json_fuzz_one (const uint8_t *data, size_t size)
{
    char error[256];
    json_t *root = payment_stripe_json_parse ((const char *)data, size, error, sizeof error);
    if (!root)
        return -1;
    int read = 0;
    payment_stripe_error_t err;
    payment_stripe_pi_t pi;
    payment_stripe_checkout_t checkout;
    payment_stripe_object_t object;
    payment_stripe_event_t event;
    if (payment_stripe_error_read (root, &err, error, sizeof error) == 0)
        read++;
    if (payment_stripe_pi_read (root, &pi, error, sizeof error) == 0)
        read++;
    if (payment_stripe_checkout_read (root, &checkout, error, sizeof error) == 0)
        read++;
    if (payment_stripe_object_read (root, &object, error, sizeof error) == 0)
        read++;
    if (payment_stripe_event_read (root, &event, error, sizeof error) == 0) {
        read++;
        if (payment_stripe_pi_read (event.object, &pi, error, sizeof error) == 0)
            read++;
        if (payment_stripe_checkout_read (event.object, &checkout, error, sizeof error) == 0)
            read++;
        if (payment_stripe_object_read (event.object, &object, error, sizeof error) == 0)
            read++;
    }
    json_decref (root);
    return read > 0 ? 0 : -1;
}
