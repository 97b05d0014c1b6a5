/*  emu_api: the Stripe /v1 endpoints the emulator serves.

    Customers, PaymentIntents (create, retrieve, list, confirm, capture,
    cancel), Refunds, Checkout Sessions (create, retrieve, expire), Charges
    and Events (retrieve), with Stripe's parameter validation (unknown
    parameters refused, integers checked, metadata limits), its error shapes
    and its test payment methods. Every handler runs with emu->lock held,
    reads parameters from req->form and answers through emu_reply_t; state
    changes emit events that emu_webhook.c delivers.

    Facts followed: ../../../shared/STRIPE.md. Where the emulator simplifies
    Stripe, tests/stripe-emulator/README.md says so.
*/
#include "emu.h"

#include <ctype.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_money.h"

/* --- errors and parameters ---------------------------------------------- */

void
emu_error (emu_reply_t *reply, int status, const char *type, const char *code, const char *param,
           const char *fmt, ...)
{
    char message[1024];
    va_list args;
    va_start (args, fmt);
    vsnprintf (message, sizeof message, fmt, args);
    va_end (args);
    json_t *error = json_pack ("{s:s, s:s}", "type", type, "message", message);
    if (code)
        json_object_set_new (error, "code", json_string (code));
    if (param)
        json_object_set_new (error, "param", json_string (param));
    json_decref (reply->body);
    reply->body = json_pack ("{s:o}", "error", error);
    reply->status = status;
    reply->store = strcmp (type, "invalid_request_error") != 0;
}

/* The error object of a reply (borrowed), to add fields to. */
static json_t *
s_error_of (emu_reply_t *reply)
{
    return json_object_get (reply->body, "error");
}

static void
s_ok (emu_reply_t *reply, json_t *object)
{
    json_decref (reply->body);
    reply->body = json_deep_copy (object);
    reply->status = 200;
    reply->store = true;
}

/* Refuses parameters not in allowed (by their name before any '['). */
static int
s_check_params (emu_req_t *req, emu_reply_t *reply, const char *const *allowed)
{
    for (size_t i = 0; i < ppm_form_size (req->form); i++) {
        const char *key = ppm_form_key (req->form, i);
        size_t len = strcspn (key, "[");
        bool known = len == 6 && strncmp (key, "expand", 6) == 0;
        for (const char *const *a = allowed; *a && !known; a++)
            known = strlen (*a) == len && strncmp (key, *a, len) == 0;
        if (!known) {
            emu_error (reply, 400, "invalid_request_error", "parameter_unknown", key,
                       "Received unknown parameter: %.*s", (int)len, key);
            return -1;
        }
    }
    return 0;
}

/* Parses a Stripe integer parameter. Returns 1 when absent (and not
   required), 0 when *out is set, -1 with an error reply. */
static int
s_int_param (emu_req_t *req, emu_reply_t *reply, const char *name, bool required, int64_t min,
             int64_t *out)
{
    const char *text = ppm_form_get (req->form, name);
    if (!text || !*text) {
        if (!required)
            return 1;
        emu_error (reply, 400, "invalid_request_error", "parameter_missing", name,
                   "Missing required param: %s.", name);
        return -1;
    }
    const char *p = text;
    bool negative = *p == '-';
    if (negative)
        p++;
    int64_t value = 0;
    bool ok = *p != '\0';
    for (; *p && ok; p++) {
        if (*p < '0' || *p > '9' || value > (INT64_MAX - 9) / 10)
            ok = false;
        else
            value = value * 10 + (*p - '0');
    }
    if (!ok) {
        emu_error (reply, 400, "invalid_request_error", "parameter_invalid_integer", name,
                   "Invalid integer: %s", text);
        return -1;
    }
    if (negative)
        value = -value;
    if (value < min) {
        emu_error (reply, 400, "invalid_request_error", "parameter_invalid_integer", name,
                   "This value must be greater than or equal to %" PRId64 ".", min);
        return -1;
    }
    *out = value;
    return 0;
}

/* A string parameter limited to one of values (NULL-terminated). Returns
   1 absent, 0 set, -1 error. */
static int
s_enum_param (emu_req_t *req, emu_reply_t *reply, const char *name, const char *const *values,
              const char **out)
{
    const char *text = ppm_form_get (req->form, name);
    if (!text || !*text)
        return 1;
    for (const char *const *v = values; *v; v++)
        if (strcmp (text, *v) == 0) {
            *out = *v;
            return 0;
        }
    char list[256] = "";
    size_t used = 0;
    for (const char *const *v = values; *v; v++) {
        int n = snprintf (list + used, sizeof list - used, "%s%s", v == values ? "" : ", ", *v);
        if (n < 0 || (size_t)n >= sizeof list - used)
            break;
        used += (size_t)n;
    }
    emu_error (reply, 400, "invalid_request_error", "parameter_invalid_string", name,
               "Invalid %s: must be one of %s", name, list);
    return -1;
}

/* Reads parent[k]=v pairs into a new metadata object with Stripe's limits
   (50 keys, key ≤ 40 chars, value ≤ 500). An empty value deletes a key
   when merged (Stripe); here the caller merges. Returns NULL on error. */
static json_t *
s_metadata (emu_req_t *req, emu_reply_t *reply, const char *parent)
{
    json_t *metadata = json_object ();
    for (size_t i = 0; i < ppm_form_size (req->form); i++) {
        const char *key = ppm_form_key (req->form, i);
        char child[PPM_FORM_MAX_KEY + 1];
        size_t plen = strlen (parent);
        if (strncmp (key, parent, plen) != 0 || (key[plen] != '[' && key[plen] != '\0'))
            continue;
        if (key[plen] == '\0') {
            /* metadata= (empty) unsets all metadata in Stripe; accept "" only */
            if (*ppm_form_value (req->form, i) == '\0')
                continue;
            emu_error (reply, 400, "invalid_request_error", "parameter_invalid_string", parent,
                       "Invalid object: %s must be a hash", parent);
            goto fail;
        }
        int len = ppm_form_child (req->form, i, parent, child, sizeof child);
        if (len <= 0) {
            emu_error (reply, 400, "invalid_request_error", "parameter_invalid_string", key,
                       "Invalid %s key: nested metadata is not allowed", parent);
            goto fail;
        }
        if (len > 40) {
            emu_error (reply, 400, "invalid_request_error", "parameter_invalid_string", key,
                       "Metadata keys can have a maximum length of 40 characters.");
            goto fail;
        }
        const char *value = ppm_form_value (req->form, i);
        if (strlen (value) > 500) {
            emu_error (reply, 400, "invalid_request_error", "parameter_invalid_string", key,
                       "Metadata values can have a maximum length of 500 characters.");
            goto fail;
        }
        json_object_set_new (metadata, child, json_string (value));
        if (json_object_size (metadata) > 50) {
            emu_error (reply, 400, "invalid_request_error", "parameter_invalid_string", parent,
                       "You can specify up to 50 metadata keys.");
            goto fail;
        }
    }
    return metadata;
fail:
    json_decref (metadata);
    return NULL;
}

/* Merges new metadata into an object's (empty values delete keys). */
static void
s_merge_metadata (json_t *object, json_t *metadata)
{
    json_t *target = json_object_get (object, "metadata");
    const char *k;
    json_t *v;
    EMU_OBJECT_EACH (metadata, k, v) {
        if (*json_string_value (v) == '\0')
            json_object_del (target, k);
        else
            json_object_set (target, k, v);
    }
}

static const char *
s_str (json_t *object, const char *field)
{
    return json_string_value (json_object_get (object, field));
}

static int64_t
s_int (json_t *object, const char *field)
{
    return json_integer_value (json_object_get (object, field));
}

/* --- currencies ----------------------------------------------------------- */

/* Currency codes are looked up in common/ppm_money (Stripe's table: zero-
   and three-decimal currencies, minimum and maximum charges, steps) and
   written back in lower case, as Stripe does. */
static void
s_lower (const char *code, char *out, size_t size)
{
    size_t i = 0;
    for (; code[i] && i + 1 < size; i++)
        out[i] = (char)tolower ((unsigned char)code[i]);
    out[i] = '\0';
}

/* Validates amount and currency parameters (names given) for a charge;
   fills *amount and *currency. Returns 0 or -1 with an error reply. */
static int
s_amount_currency (emu_req_t *req, emu_reply_t *reply, const char *amount_name,
                   const char *currency_name, int64_t *amount, const ppm_currency_t **currency)
{
    if (s_int_param (req, reply, amount_name, true, 1, amount) != 0)
        return -1;
    const char *code = ppm_form_get (req->form, currency_name);
    if (!code || !*code) {
        emu_error (reply, 400, "invalid_request_error", "parameter_missing", currency_name,
                   "Missing required param: %s.", currency_name);
        return -1;
    }
    *currency = ppm_currency_find (code);
    if (!*currency) {
        emu_error (reply, 400, "invalid_request_error", "parameter_invalid_string", currency_name,
                   "Invalid currency: %s. Stripe currently supports these currencies "
                   "(lower case): usd, eur, gbp, jpy, …",
                   code);
        return -1;
    }
    ppm_money_err_t err = ppm_money_check_charge (*currency, *amount);
    if (err == PPM_MONEY_OK)
        return 0;
    char lower[8];
    s_lower ((*currency)->code, lower, sizeof lower);
    if (err == PPM_MONEY_TOO_SMALL)
        emu_error (reply, 400, "invalid_request_error", "amount_too_small", amount_name,
                   "Amount must be at least %" PRId64 " %s (minor units)", (*currency)->min_charge,
                   lower);
    else if (err == PPM_MONEY_TOO_LARGE)
        emu_error (reply, 400, "invalid_request_error", "amount_too_large", amount_name,
                   "Amount must be no more than %" PRId64 " %s (minor units)",
                   (*currency)->max_charge, lower);
    else
        emu_error (reply, 400, "invalid_request_error", ppm_money_stripe_code (err), amount_name,
                   "Amounts in %s must be a multiple of %" PRId64 " (%s).", lower,
                   (*currency)->step, ppm_money_strerror (err));
    return -1;
}

/* --- objects and events ----------------------------------------------------- */

json_t *
emu_find (emu_account_t *account, const char *id, const char *object)
{
    if (!id)
        return NULL;
    json_t *found = json_object_get (account->objects, id);
    if (found && object && strcmp (s_str (found, "object"), object) != 0)
        return NULL;
    return found;
}

json_t *
emu_find_any (emu_t *emu, const char *id, emu_account_t **account_p)
{
    for (emu_account_t *account = zhash_first (emu->accounts); account;
         account = zhash_next (emu->accounts)) {
        json_t *found = emu_find (account, id, NULL);
        if (found) {
            *account_p = account;
            return found;
        }
    }
    return NULL;
}

/* Stores a new object (steals the reference) and returns it (borrowed). */
static json_t *
s_store (emu_account_t *account, json_t *object)
{
    json_object_set_new (account->objects, s_str (object, "id"), object);
    return object;
}

/* Who caused an event: the API request, or the control API (NULLs). */
typedef struct {
    const char *request_id; /* "req_…" or NULL */
    const char *idem_key;   /* its Idempotency-Key or NULL */
    const char *version;    /* api_version of the event */
} s_cause_t;

static s_cause_t
s_cause_of (emu_req_t *req)
{
    s_cause_t cause = {req->request_id, req->idem_key, req->stripe_version};
    return cause;
}

/* Creates, stores and queues an event carrying a copy of object; takes
   ownership of previous (may be NULL). */
static void
s_emit (emu_t *emu, emu_account_t *account, s_cause_t cause, const char *type, json_t *object,
        json_t *previous)
{
    char *id = emu_new_id ("evt_");
    json_t *data = json_pack ("{s:O}", "object", object);
    if (previous)
        json_object_set_new (data, "previous_attributes", previous);
    json_t *request =
        json_pack ("{s:s?, s:s?}", "id", cause.request_id, "idempotency_key", cause.idem_key);
    json_t *event = json_pack (
        "{s:s, s:s, s:s, s:I, s:o, s:b, s:i, s:o, s:s}", "id", id, "object", "event", "api_version",
        cause.version ? cause.version : emu->default_version, "created", (json_int_t)emu_now_s (),
        "data", data, "livemode", 0, "pending_webhooks",
        emu_webhook_endpoint_count (emu->webhook, account->name), "request", request, "type", type);
    /* data.object must be a snapshot, not the live object */
    json_object_set_new (data, "object", json_deep_copy (object));
    s_store (account, event);
    char *payload = json_dumps (event, JSON_COMPACT);
    emu_webhook_enqueue (emu->webhook, account->name, id, type, payload);
    free (payload);
    free (id);
}

static json_t *
s_new_charge (json_t *pi, const char *pm, bool paid, bool captured)
{
    char *id = emu_new_id ("ch_");
    int64_t amount = s_int (pi, "amount");
    json_t *charge = json_pack (
        "{s:s, s:s, s:I, s:I, s:I, s:b, s:s, s:O, s:I, s:b, s:{}, s:b, s:b, s:s, s:s, s:s, "
        "s:n, s:n, s:b}",
        "id", id, "object", "charge", "amount", (json_int_t)amount, "amount_captured",
        (json_int_t)(captured ? amount : 0), "amount_refunded", (json_int_t)0, "captured", captured,
        "currency", s_str (pi, "currency"), "customer", json_object_get (pi, "customer"), "created",
        (json_int_t)emu_now_s (), "livemode", 0, "metadata", "paid", paid, "refunded", 0,
        "payment_intent", s_str (pi, "id"), "payment_method", pm, "status",
        paid ? "succeeded" : "failed", "failure_code", "failure_message", "disputed", 0);
    free (id);
    return charge;
}

/* --- customers ------------------------------------------------------------- */

static void
s_customer_create (emu_req_t *req, emu_reply_t *reply)
{
    static const char *const allowed[] = {"email",    "name",  "description",
                                          "metadata", "phone", NULL};
    if (s_check_params (req, reply, allowed))
        return;
    json_t *metadata = s_metadata (req, reply, "metadata");
    if (!metadata)
        return;
    const char *email = ppm_form_get (req->form, "email");
    if (email && *email && !strchr (email, '@')) {
        json_decref (metadata);
        emu_error (reply, 400, "invalid_request_error", "email_invalid", "email",
                   "Invalid email address: %s", email);
        return;
    }
    char *id = emu_new_id ("cus_");
    json_t *customer = json_pack (
        "{s:s, s:s, s:I, s:s?, s:s?, s:s?, s:s?, s:b, s:o}", "id", id, "object", "customer",
        "created", (json_int_t)emu_now_s (), "email", email, "name",
        ppm_form_get (req->form, "name"), "description", ppm_form_get (req->form, "description"),
        "phone", ppm_form_get (req->form, "phone"), "livemode", 0, "metadata", json_object ());
    if (!json_object_get (customer, "email"))
        json_object_set_new (customer, "email", json_null ());
    if (!json_object_get (customer, "name"))
        json_object_set_new (customer, "name", json_null ());
    s_merge_metadata (customer, metadata);
    json_decref (metadata);
    free (id);
    s_ok (reply, s_store (req->account, customer));
}

static void
s_not_found (emu_reply_t *reply, const char *what, const char *id, const char *param)
{
    emu_error (reply, 404, "invalid_request_error", "resource_missing", param, "No such %s: '%s'",
               what, id ? id : "");
}

static void
s_customer_get (emu_req_t *req, emu_reply_t *reply)
{
    json_t *customer = emu_find (req->account, req->id, "customer");
    if (!customer) {
        s_not_found (reply, "customer", req->id, "id");
        return;
    }
    s_ok (reply, customer);
}

static void
s_customer_update (emu_req_t *req, emu_reply_t *reply)
{
    static const char *const allowed[] = {"email",    "name",  "description",
                                          "metadata", "phone", NULL};
    json_t *customer = emu_find (req->account, req->id, "customer");
    if (!customer) {
        s_not_found (reply, "customer", req->id, "id");
        return;
    }
    if (s_check_params (req, reply, allowed))
        return;
    json_t *metadata = s_metadata (req, reply, "metadata");
    if (!metadata)
        return;
    static const char *const fields[] = {"email", "name", "description", "phone", NULL};
    for (const char *const *f = fields; *f; f++) {
        const char *value = ppm_form_get (req->form, *f);
        if (value)
            json_object_set_new (customer, *f, *value ? json_string (value) : json_null ());
    }
    s_merge_metadata (customer, metadata);
    json_decref (metadata);
    s_ok (reply, customer);
}

/* GET list: {object: list, data, has_more, url}, newest first, with limit,
   starting_after and an optional equality filter. */
static void
s_list (emu_req_t *req, emu_reply_t *reply, const char *object, const char *url,
        const char *filter_field, const char *filter_param)
{
    int64_t limit = 10;
    int rc = s_int_param (req, reply, "limit", false, 1, &limit);
    if (rc < 0)
        return;
    if (limit > 100) {
        emu_error (reply, 400, "invalid_request_error", "parameter_invalid_integer", "limit",
                   "This value must be less than or equal to 100.");
        return;
    }
    const char *filter = filter_param ? ppm_form_get (req->form, filter_param) : NULL;
    const char *after = ppm_form_get (req->form, "starting_after");
    const char *type = ppm_form_get (req->form, "type");
    json_t *all = json_array ();
    const char *k;
    json_t *v;
    EMU_OBJECT_EACH (req->account->objects, k, v) {
        if (strcmp (s_str (v, "object"), object) != 0)
            continue;
        if (filter && (!s_str (v, filter_field) || strcmp (s_str (v, filter_field), filter) != 0))
            continue;
        if (type && strcmp (object, "event") == 0 && strcmp (s_str (v, "type"), type) != 0)
            continue;
        json_array_insert (all, 0, v);
    }
    size_t start = 0;
    if (after) {
        size_t i;
        json_t *item;
        EMU_ARRAY_EACH (all, i, item) {
            if (strcmp (s_str (item, "id"), after) == 0)
                start = i + 1;
        }
    }
    json_t *data = json_array ();
    for (size_t i = start; i < json_array_size (all) && (int64_t)json_array_size (data) < limit;
         i++)
        json_array_append (data, json_array_get (all, i));
    bool has_more = start + json_array_size (data) < json_array_size (all);
    json_decref (all);
    json_t *list = json_pack ("{s:s, s:o, s:b, s:s}", "object", "list", "data", data, "has_more",
                              has_more, "url", url);
    s_ok (reply, list);
    json_decref (list);
}

static void
s_customer_list (emu_req_t *req, emu_reply_t *reply)
{
    s_list (req, reply, "customer", "/v1/customers", "email", "email");
}

/* --- payment intents ------------------------------------------------------- */

typedef enum { S_PM_SUCCEEDS, S_PM_DECLINED, S_PM_INSUFFICIENT, S_PM_3DS, S_PM_UNKNOWN } s_pm_t;

static s_pm_t
s_pm_kind (const char *pm)
{
    static const char *const succeeding[] = {"pm_card_visa",
                                             "pm_card_visa_debit",
                                             "pm_card_mastercard",
                                             "pm_card_amex",
                                             "pm_card_discover",
                                             "pm_card_jcb",
                                             "pm_card_unionpay",
                                             "pm_card_us",
                                             "pm_card_mastercard_debit",
                                             NULL};
    for (const char *const *s = succeeding; *s; s++)
        if (strcmp (pm, *s) == 0)
            return S_PM_SUCCEEDS;
    if (strcmp (pm, "pm_card_chargeDeclined") == 0)
        return S_PM_DECLINED;
    if (strcmp (pm, "pm_card_chargeDeclinedInsufficientFunds") == 0)
        return S_PM_INSUFFICIENT;
    if (strcmp (pm, "pm_card_authenticationRequired") == 0 ||
        strcmp (pm, "pm_card_threeDSecure2Required") == 0)
        return S_PM_3DS;
    return S_PM_UNKNOWN;
}

/* Moves an authorized intent to succeeded (automatic) or requires_capture
   (manual), with its charge, and emits the event. */
static void
s_pi_authorized (emu_t *emu, emu_account_t *account, s_cause_t cause, json_t *pi, const char *pm)
{
    bool manual = strcmp (s_str (pi, "capture_method"), "manual") == 0;
    json_t *charge = s_store (account, s_new_charge (pi, pm, true, !manual));
    int64_t amount = s_int (pi, "amount");
    json_object_set_new (pi, "latest_charge", json_string (s_str (charge, "id")));
    json_object_set_new (pi, "payment_method", json_string (pm));
    json_object_set_new (pi, "next_action", json_null ());
    json_object_set_new (pi, "last_payment_error", json_null ());
    if (manual) {
        json_object_set_new (pi, "status", json_string ("requires_capture"));
        json_object_set_new (pi, "amount_capturable", json_integer (amount));
        s_emit (emu, account, cause, "payment_intent.amount_capturable_updated", pi,
                json_pack ("{s:i}", "amount_capturable", 0));
    } else {
        json_object_set_new (pi, "status", json_string ("succeeded"));
        json_object_set_new (pi, "amount_received", json_integer (amount));
        s_emit (emu, account, cause, "payment_intent.succeeded", pi, NULL);
    }
}

/* A failed payment attempt: the intent returns to requires_payment_method
   with last_payment_error; emits payment_intent.payment_failed. Returns
   the error object (borrowed from pi). */
static json_t *
s_pi_failed (emu_t *emu, emu_account_t *account, s_cause_t cause, json_t *pi, const char *pm,
             const char *code, const char *decline_code, const char *message)
{
    json_t *charge = NULL;
    if (decline_code) {
        charge = s_store (account, s_new_charge (pi, pm, false, false));
        json_object_set_new (charge, "failure_code", json_string (code));
        json_object_set_new (charge, "failure_message", json_string (message));
        json_object_set_new (pi, "latest_charge", json_string (s_str (charge, "id")));
    }
    json_t *error = json_pack ("{s:s, s:s, s:s, s:s?, s:s?, s:{s:s, s:s}}", "type", "card_error",
                               "code", code, "message", message, "decline_code", decline_code,
                               "charge", charge ? s_str (charge, "id") : NULL, "payment_method",
                               "id", pm, "object", "payment_method");
    json_object_set_new (pi, "last_payment_error", error);
    json_object_set_new (pi, "status", json_string ("requires_payment_method"));
    json_object_set_new (pi, "payment_method", json_null ());
    json_object_set_new (pi, "next_action", json_null ());
    s_emit (emu, account, cause, "payment_intent.payment_failed", pi, NULL);
    return error;
}

/* Confirms pi with pm. Sets the reply: 200 with the intent, 402 on a
   decline, 400 on an unknown payment method. */
static void
s_pi_confirm_with (emu_req_t *req, emu_reply_t *reply, json_t *pi, const char *pm,
                   const char *return_url)
{
    s_cause_t cause = s_cause_of (req);
    switch (s_pm_kind (pm)) {
        case S_PM_UNKNOWN:
            emu_error (reply, 400, "invalid_request_error", "resource_missing", "payment_method",
                       "No such PaymentMethod: '%s'", pm);
            return;
        case S_PM_SUCCEEDS:
            s_pi_authorized (req->emu, req->account, cause, pi, pm);
            s_ok (reply, pi);
            return;
        case S_PM_DECLINED:
        case S_PM_INSUFFICIENT: {
            bool funds = s_pm_kind (pm) == S_PM_INSUFFICIENT;
            const char *message =
                funds ? "Your card has insufficient funds." : "Your card was declined.";
            json_t *error = s_pi_failed (req->emu, req->account, cause, pi, pm, "card_declined",
                                         funds ? "insufficient_funds" : "generic_decline", message);
            emu_error (reply, 402, "card_error", "card_declined", NULL, "%s", message);
            json_t *out = s_error_of (reply);
            json_object_set (out, "decline_code", json_object_get (error, "decline_code"));
            json_object_set (out, "charge", json_object_get (error, "charge"));
            json_object_set_new (out, "payment_intent", json_deep_copy (pi));
            json_object_set (out, "payment_method", json_object_get (error, "payment_method"));
            return;
        }
        case S_PM_3DS: {
            char url[512];
            snprintf (url, sizeof url, "%s/_emulator/3ds/%s", req->emu->base_url, s_str (pi, "id"));
            json_object_set_new (pi, "status", json_string ("requires_action"));
            json_object_set_new (pi, "payment_method", json_string (pm));
            json_object_set_new (pi, "next_action",
                                 json_pack ("{s:s, s:{s:s, s:s?}}", "type", "redirect_to_url",
                                            "redirect_to_url", "url", url, "return_url",
                                            return_url));
            s_emit (req->emu, req->account, cause, "payment_intent.requires_action", pi, NULL);
            s_ok (reply, pi);
            return;
        }
    }
}

static const char *const s_capture_methods[] = {"automatic", "automatic_async", "manual", NULL};

static void
s_pi_create (emu_req_t *req, emu_reply_t *reply)
{
    static const char *const allowed[] = {"amount",
                                          "currency",
                                          "customer",
                                          "metadata",
                                          "description",
                                          "receipt_email",
                                          "capture_method",
                                          "automatic_payment_methods",
                                          "payment_method",
                                          "payment_method_types",
                                          "confirm",
                                          "return_url",
                                          "statement_descriptor_suffix",
                                          "setup_future_usage",
                                          NULL};
    if (s_check_params (req, reply, allowed))
        return;
    int64_t amount;
    const ppm_currency_t *currency;
    if (s_amount_currency (req, reply, "amount", "currency", &amount, &currency))
        return;
    char currency_code[8];
    s_lower (currency->code, currency_code, sizeof currency_code);
    const char *capture_method = "automatic";
    if (s_enum_param (req, reply, "capture_method", s_capture_methods, &capture_method) < 0)
        return;
    static const char *const booleans[] = {"true", "false", NULL};
    const char *confirm = "false";
    if (s_enum_param (req, reply, "confirm", booleans, &confirm) < 0)
        return;
    const char *ape = "false";
    if (s_enum_param (req, reply, "automatic_payment_methods[enabled]", booleans, &ape) < 0)
        return;
    const char *customer = ppm_form_get (req->form, "customer");
    if (customer && *customer && !emu_find (req->account, customer, "customer")) {
        emu_error (reply, 400, "invalid_request_error", "resource_missing", "customer",
                   "No such customer: '%s'", customer);
        return;
    }
    const char *pm = ppm_form_get (req->form, "payment_method");
    if (pm && *pm && s_pm_kind (pm) == S_PM_UNKNOWN) {
        emu_error (reply, 400, "invalid_request_error", "resource_missing", "payment_method",
                   "No such PaymentMethod: '%s'", pm);
        return;
    }
    if (strcmp (confirm, "true") == 0 && !(pm && *pm)) {
        emu_error (reply, 400, "invalid_request_error", "parameter_missing", "payment_method",
                   "You cannot confirm this PaymentIntent because it's missing a payment "
                   "method. To confirm the PaymentIntent with %s, specify a payment method.",
                   "this request");
        return;
    }
    json_t *metadata = s_metadata (req, reply, "metadata");
    if (!metadata)
        return;
    char *id = emu_new_id ("pi_");
    char *secret = emu_new_id ("_secret_");
    char client_secret[128];
    snprintf (client_secret, sizeof client_secret, "%s%s", id, secret);
    json_t *pi = json_pack (
        "{s:s, s:s, s:I, s:i, s:i, s:n, s:n, s:n, s:s, s:s, s:s, s:I, s:s, s:s?, s:s?, s:n, "
        "s:n, s:b, s:o, s:n, s:n, s:[s], s:s?, s:s}",
        "id", id, "object", "payment_intent", "amount", (json_int_t)amount, "amount_capturable", 0,
        "amount_received", 0, "automatic_payment_methods", "canceled_at", "cancellation_reason",
        "capture_method", capture_method, "client_secret", client_secret, "confirmation_method",
        "automatic", "created", (json_int_t)emu_now_s (), "currency", currency_code, "customer",
        customer && *customer ? customer : NULL, "description",
        ppm_form_get (req->form, "description"), "last_payment_error", "latest_charge", "livemode",
        0, "metadata", json_object (), "next_action", "payment_method", "payment_method_types",
        "card", "receipt_email", ppm_form_get (req->form, "receipt_email"), "status",
        pm && *pm ? "requires_confirmation" : "requires_payment_method");
    free (id);
    free (secret);
    if (strcmp (ape, "true") == 0)
        json_object_set_new (pi, "automatic_payment_methods", json_pack ("{s:b}", "enabled", 1));
    if (!json_object_get (pi, "customer"))
        json_object_set_new (pi, "customer", json_null ());
    if (!json_object_get (pi, "description"))
        json_object_set_new (pi, "description", json_null ());
    if (!json_object_get (pi, "receipt_email"))
        json_object_set_new (pi, "receipt_email", json_null ());
    s_merge_metadata (pi, metadata);
    json_decref (metadata);
    if (pm && *pm)
        json_object_set_new (pi, "payment_method", json_string (pm));
    s_store (req->account, pi);
    s_emit (req->emu, req->account, s_cause_of (req), "payment_intent.created", pi, NULL);
    if (strcmp (confirm, "true") == 0)
        s_pi_confirm_with (req, reply, pi, pm, ppm_form_get (req->form, "return_url"));
    else
        s_ok (reply, pi);
}

static json_t *
s_pi_lookup (emu_req_t *req, emu_reply_t *reply)
{
    json_t *pi = emu_find (req->account, req->id, "payment_intent");
    if (!pi)
        s_not_found (reply, "payment_intent", req->id, "intent");
    return pi;
}

static void
s_pi_get (emu_req_t *req, emu_reply_t *reply)
{
    static const char *const allowed[] = {"client_secret", NULL};
    if (s_check_params (req, reply, allowed))
        return;
    json_t *pi = s_pi_lookup (req, reply);
    if (pi)
        s_ok (reply, pi);
}

static void
s_pi_update (emu_req_t *req, emu_reply_t *reply)
{
    static const char *const allowed[] = {"metadata", "description", "receipt_email", NULL};
    json_t *pi = s_pi_lookup (req, reply);
    if (!pi || s_check_params (req, reply, allowed))
        return;
    json_t *metadata = s_metadata (req, reply, "metadata");
    if (!metadata)
        return;
    const char *description = ppm_form_get (req->form, "description");
    if (description)
        json_object_set_new (pi, "description", json_string (description));
    const char *email = ppm_form_get (req->form, "receipt_email");
    if (email)
        json_object_set_new (pi, "receipt_email", json_string (email));
    s_merge_metadata (pi, metadata);
    json_decref (metadata);
    s_ok (reply, pi);
}

static void
s_pi_list (emu_req_t *req, emu_reply_t *reply)
{
    static const char *const allowed[] = {"limit",         "customer", "starting_after",
                                          "ending_before", "created",  NULL};
    if (s_check_params (req, reply, allowed))
        return;
    s_list (req, reply, "payment_intent", "/v1/payment_intents", "customer", "customer");
}

/* The 400 Stripe sends when an intent is in the wrong state. */
static void
s_unexpected_state (emu_reply_t *reply, json_t *pi, const char *action, const char *expected)
{
    emu_error (reply, 400, "invalid_request_error", "payment_intent_unexpected_state", NULL,
               "This PaymentIntent could not be %s because it has a status of %s. Only a "
               "PaymentIntent with one of the following statuses may be %s: %s.",
               action, s_str (pi, "status"), action, expected);
    json_object_set_new (s_error_of (reply), "payment_intent", json_deep_copy (pi));
}

static void
s_pi_confirm (emu_req_t *req, emu_reply_t *reply)
{
    static const char *const allowed[] = {"payment_method", "return_url",         "receipt_email",
                                          "capture_method", "setup_future_usage", NULL};
    json_t *pi = s_pi_lookup (req, reply);
    if (!pi || s_check_params (req, reply, allowed))
        return;
    const char *status = s_str (pi, "status");
    if (strcmp (status, "requires_payment_method") != 0 &&
        strcmp (status, "requires_confirmation") != 0) {
        s_unexpected_state (reply, pi, "confirmed",
                            "requires_payment_method, requires_confirmation");
        return;
    }
    const char *capture_method = NULL;
    if (s_enum_param (req, reply, "capture_method", s_capture_methods, &capture_method) < 0)
        return;
    const char *pm = ppm_form_get (req->form, "payment_method");
    if (!pm || !*pm)
        pm = s_str (pi, "payment_method");
    if (!pm) {
        emu_error (reply, 400, "invalid_request_error", "payment_intent_unexpected_state",
                   "payment_method",
                   "You cannot confirm this PaymentIntent because it's missing a payment "
                   "method. You can either update the PaymentIntent with a payment method and "
                   "then confirm it again, or confirm it again directly with a payment method.");
        return;
    }
    if (s_pm_kind (pm) == S_PM_UNKNOWN) {
        emu_error (reply, 400, "invalid_request_error", "resource_missing", "payment_method",
                   "No such PaymentMethod: '%s'", pm);
        return;
    }
    if (capture_method)
        json_object_set_new (pi, "capture_method", json_string (capture_method));
    char *pm_copy = strdup (pm);
    s_pi_confirm_with (req, reply, pi, pm_copy, ppm_form_get (req->form, "return_url"));
    free (pm_copy);
}

static void
s_pi_capture (emu_req_t *req, emu_reply_t *reply)
{
    static const char *const allowed[] = {"amount_to_capture", "metadata",
                                          "statement_descriptor_suffix", NULL};
    json_t *pi = s_pi_lookup (req, reply);
    if (!pi || s_check_params (req, reply, allowed))
        return;
    if (strcmp (s_str (pi, "status"), "requires_capture") != 0) {
        s_unexpected_state (reply, pi, "captured", "requires_capture");
        return;
    }
    int64_t capturable = s_int (pi, "amount_capturable");
    int64_t amount = capturable;
    if (s_int_param (req, reply, "amount_to_capture", false, 1, &amount) < 0)
        return;
    if (amount > capturable) {
        emu_error (reply, 400, "invalid_request_error", "amount_too_large", "amount_to_capture",
                   "The amount_to_capture (%" PRId64
                   ") must be less than or equal to the PaymentIntent's amount_capturable (%" PRId64
                   ").",
                   amount, capturable);
        return;
    }
    json_t *metadata = s_metadata (req, reply, "metadata");
    if (!metadata)
        return;
    s_merge_metadata (pi, metadata);
    json_decref (metadata);
    json_t *charge = emu_find (req->account, s_str (pi, "latest_charge"), "charge");
    if (charge) {
        json_object_set_new (charge, "captured", json_true ());
        json_object_set_new (charge, "amount_captured", json_integer (amount));
    }
    json_object_set_new (pi, "amount_capturable", json_integer (0));
    json_object_set_new (pi, "amount_received", json_integer (amount));
    json_object_set_new (pi, "status", json_string ("succeeded"));
    s_emit (req->emu, req->account, s_cause_of (req), "payment_intent.succeeded", pi,
            json_pack ("{s:s, s:I}", "status", "requires_capture", "amount_capturable",
                       (json_int_t)capturable));
    s_ok (reply, pi);
}

static void
s_pi_cancel (emu_req_t *req, emu_reply_t *reply)
{
    static const char *const allowed[] = {"cancellation_reason", NULL};
    static const char *const reasons[] = {"duplicate", "fraudulent", "requested_by_customer",
                                          "abandoned", NULL};
    json_t *pi = s_pi_lookup (req, reply);
    if (!pi || s_check_params (req, reply, allowed))
        return;
    const char *reason = NULL;
    if (s_enum_param (req, reply, "cancellation_reason", reasons, &reason) < 0)
        return;
    const char *status = s_str (pi, "status");
    if (strcmp (status, "succeeded") == 0 || strcmp (status, "canceled") == 0) {
        s_unexpected_state (reply, pi, "canceled",
                            "requires_payment_method, requires_capture, requires_confirmation, "
                            "requires_action, processing");
        return;
    }
    bool held = strcmp (status, "requires_capture") == 0;
    json_t *previous = json_pack ("{s:s}", "status", status);
    json_object_set_new (pi, "status", json_string ("canceled"));
    json_object_set_new (pi, "canceled_at", json_integer (emu_now_s ()));
    json_object_set_new (pi, "cancellation_reason", reason ? json_string (reason) : json_null ());
    json_object_set_new (pi, "amount_capturable", json_integer (0));
    json_object_set_new (pi, "next_action", json_null ());
    s_cause_t cause = s_cause_of (req);
    if (held) {
        /* releasing the hold: Stripe marks the uncaptured charge refunded */
        json_t *charge = emu_find (req->account, s_str (pi, "latest_charge"), "charge");
        if (charge) {
            json_object_set_new (charge, "amount_refunded",
                                 json_integer (s_int (charge, "amount")));
            json_object_set_new (charge, "refunded", json_true ());
            s_emit (req->emu, req->account, cause, "charge.refunded", charge,
                    json_pack ("{s:i, s:b}", "amount_refunded", 0, "refunded", 0));
        }
    }
    s_emit (req->emu, req->account, cause, "payment_intent.canceled", pi, previous);
    s_ok (reply, pi);
}

/* --- refunds ------------------------------------------------------------------ */

static void
s_refund_create (emu_req_t *req, emu_reply_t *reply)
{
    static const char *const allowed[] = {"payment_intent", "charge",   "amount",
                                          "reason",         "metadata", NULL};
    static const char *const reasons[] = {"duplicate", "fraudulent", "requested_by_customer", NULL};
    if (s_check_params (req, reply, allowed))
        return;
    const char *pi_id = ppm_form_get (req->form, "payment_intent");
    const char *charge_id = ppm_form_get (req->form, "charge");
    json_t *pi = NULL;
    json_t *charge = NULL;
    if (pi_id && *pi_id) {
        pi = emu_find (req->account, pi_id, "payment_intent");
        if (!pi) {
            emu_error (reply, 400, "invalid_request_error", "resource_missing", "payment_intent",
                       "No such payment_intent: '%s'", pi_id);
            return;
        }
        charge = emu_find (req->account, s_str (pi, "latest_charge"), "charge");
    } else if (charge_id && *charge_id) {
        charge = emu_find (req->account, charge_id, "charge");
        if (!charge) {
            emu_error (reply, 400, "invalid_request_error", "resource_missing", "charge",
                       "No such charge: '%s'", charge_id);
            return;
        }
        pi = emu_find (req->account, s_str (charge, "payment_intent"), "payment_intent");
    } else {
        emu_error (reply, 400, "invalid_request_error", "parameter_missing", "payment_intent",
                   "One of the following params should be provided for this request: "
                   "payment_intent or charge.");
        return;
    }
    const char *reason = NULL;
    if (s_enum_param (req, reply, "reason", reasons, &reason) < 0)
        return;
    if (!charge || !pi || strcmp (s_str (pi, "status"), "succeeded") != 0 ||
        !json_is_true (json_object_get (charge, "captured"))) {
        emu_error (reply, 400, "invalid_request_error", "charge_not_refundable",
                   pi_id ? "payment_intent" : "charge",
                   "This PaymentIntent does not have a successful charge to refund.");
        return;
    }
    int64_t remaining = s_int (charge, "amount_captured") - s_int (charge, "amount_refunded");
    if (remaining <= 0) {
        emu_error (reply, 400, "invalid_request_error", "charge_already_refunded", NULL,
                   "Charge %s has already been refunded.", s_str (charge, "id"));
        return;
    }
    int64_t amount = remaining;
    if (s_int_param (req, reply, "amount", false, 1, &amount) < 0)
        return;
    if (amount > remaining) {
        emu_error (reply, 400, "invalid_request_error", "amount_too_large", "amount",
                   "Refund amount (%" PRId64
                   ") is greater than unrefunded amount on charge (%" PRId64 ")",
                   amount, remaining);
        return;
    }
    json_t *metadata = s_metadata (req, reply, "metadata");
    if (!metadata)
        return;
    char *id = emu_new_id ("re_");
    json_t *refund =
        json_pack ("{s:s, s:s, s:I, s:s, s:I, s:s, s:o, s:s, s:s?, s:s}", "id", id, "object",
                   "refund", "amount", (json_int_t)amount, "charge", s_str (charge, "id"),
                   "created", (json_int_t)emu_now_s (), "currency", s_str (charge, "currency"),
                   "metadata", json_object (), "payment_intent", s_str (pi, "id"), "reason", reason,
                   "status", "succeeded");
    free (id);
    if (!reason)
        json_object_set_new (refund, "reason", json_null ());
    s_merge_metadata (refund, metadata);
    json_decref (metadata);
    s_store (req->account, refund);
    int64_t before = s_int (charge, "amount_refunded");
    json_object_set_new (charge, "amount_refunded", json_integer (before + amount));
    json_object_set_new (charge, "refunded",
                         json_boolean (before + amount >= s_int (charge, "amount_captured")));
    s_emit (req->emu, req->account, s_cause_of (req), "charge.refunded", charge,
            json_pack ("{s:I}", "amount_refunded", (json_int_t)before));
    s_ok (reply, refund);
}

static void
s_refund_get (emu_req_t *req, emu_reply_t *reply)
{
    json_t *refund = emu_find (req->account, req->id, "refund");
    if (!refund)
        s_not_found (reply, "refund", req->id, "id");
    else
        s_ok (reply, refund);
}

static void
s_refund_list (emu_req_t *req, emu_reply_t *reply)
{
    s_list (req, reply, "refund", "/v1/refunds", "payment_intent", "payment_intent");
}

static void
s_charge_get (emu_req_t *req, emu_reply_t *reply)
{
    json_t *charge = emu_find (req->account, req->id, "charge");
    if (!charge)
        s_not_found (reply, "charge", req->id, "id");
    else
        s_ok (reply, charge);
}

static void
s_event_get (emu_req_t *req, emu_reply_t *reply)
{
    json_t *event = emu_find (req->account, req->id, "event");
    if (!event)
        s_not_found (reply, "event", req->id, "id");
    else
        s_ok (reply, event);
}

static void
s_event_list (emu_req_t *req, emu_reply_t *reply)
{
    s_list (req, reply, "event", "/v1/events", NULL, NULL);
}

/* --- checkout sessions ------------------------------------------------------- */

static void
s_cs_create (emu_req_t *req, emu_reply_t *reply)
{
    static const char *const allowed[] = {"mode",
                                          "line_items",
                                          "success_url",
                                          "cancel_url",
                                          "customer",
                                          "customer_email",
                                          "client_reference_id",
                                          "metadata",
                                          "payment_intent_data",
                                          "expires_at",
                                          "payment_method_types",
                                          "locale",
                                          NULL};
    static const char *const modes[] = {"payment", "setup", "subscription", NULL};
    if (s_check_params (req, reply, allowed))
        return;
    const char *mode = NULL;
    if (s_enum_param (req, reply, "mode", modes, &mode) < 0)
        return;
    if (!mode) {
        emu_error (reply, 400, "invalid_request_error", "parameter_missing", "mode",
                   "Missing required param: mode.");
        return;
    }
    if (strcmp (mode, "payment") != 0) {
        emu_error (reply, 400, "invalid_request_error", "parameter_invalid_string", "mode",
                   "The emulator supports mode=payment only.");
        return;
    }
    const char *success_url = ppm_form_get (req->form, "success_url");
    if (!success_url || !*success_url) {
        emu_error (reply, 400, "invalid_request_error", "parameter_missing", "success_url",
                   "Missing required param: success_url.");
        return;
    }
    size_t items = 0;
    int64_t total = 0;
    const char *currency_code = NULL;
    while (true) {
        char index[24];
        snprintf (index, sizeof index, "%zu", items);
        char name[48];
        snprintf (name, sizeof name, "line_items[%s]", index);
        if (!ppm_form_has (req->form, name))
            break;
        char amount_key[PPM_FORM_MAX_KEY], currency_key[PPM_FORM_MAX_KEY];
        char product_key[PPM_FORM_MAX_KEY], quantity_key[PPM_FORM_MAX_KEY];
        char price_key[PPM_FORM_MAX_KEY];
        snprintf (amount_key, sizeof amount_key, "%s[price_data][unit_amount]", name);
        snprintf (currency_key, sizeof currency_key, "%s[price_data][currency]", name);
        snprintf (product_key, sizeof product_key, "%s[price_data][product_data][name]", name);
        snprintf (quantity_key, sizeof quantity_key, "%s[quantity]", name);
        snprintf (price_key, sizeof price_key, "%s[price]", name);
        if (ppm_form_get (req->form, price_key)) {
            emu_error (reply, 400, "invalid_request_error", "resource_missing", price_key,
                       "No such price: '%s' (the emulator supports price_data only)",
                       ppm_form_get (req->form, price_key));
            return;
        }
        int64_t unit, quantity;
        if (s_int_param (req, reply, amount_key, true, 0, &unit) != 0)
            return;
        if (s_int_param (req, reply, quantity_key, true, 1, &quantity) != 0)
            return;
        const char *code = ppm_form_get (req->form, currency_key);
        if (!code || !*code) {
            emu_error (reply, 400, "invalid_request_error", "parameter_missing", currency_key,
                       "Missing required param: %s.", currency_key);
            return;
        }
        if (!ppm_currency_find (code)) {
            emu_error (reply, 400, "invalid_request_error", "parameter_invalid_string",
                       currency_key, "Invalid currency: %s.", code);
            return;
        }
        if (currency_code && strcasecmp (currency_code, code) != 0) {
            emu_error (reply, 400, "invalid_request_error", "parameter_invalid_string",
                       currency_key, "All line items must use the same currency.");
            return;
        }
        currency_code = code;
        const char *product = ppm_form_get (req->form, product_key);
        if (!product || !*product) {
            emu_error (reply, 400, "invalid_request_error", "parameter_missing", product_key,
                       "Missing required param: %s.", product_key);
            return;
        }
        int64_t line;
        if (__builtin_mul_overflow (unit, quantity, &line) ||
            __builtin_add_overflow (total, line, &total)) {
            emu_error (reply, 400, "invalid_request_error", "amount_too_large", amount_key,
                       "The total amount is too large.");
            return;
        }
        items++;
    }
    if (items == 0) {
        emu_error (reply, 400, "invalid_request_error", "parameter_missing", "line_items",
                   "Missing required param: line_items.");
        return;
    }
    const ppm_currency_t *currency = ppm_currency_find (currency_code);
    char lower[8];
    s_lower (currency->code, lower, sizeof lower);
    ppm_money_err_t money = ppm_money_check_charge (currency, total);
    if (money == PPM_MONEY_TOO_SMALL) {
        emu_error (reply, 400, "invalid_request_error", "amount_too_small", "line_items",
                   "The Checkout Session's total amount due must add up to at least %" PRId64
                   " %s (minor units)",
                   currency->min_charge, lower);
        return;
    }
    if (money != PPM_MONEY_OK) {
        emu_error (reply, 400, "invalid_request_error", ppm_money_stripe_code (money), "line_items",
                   "The Checkout Session's total amount is invalid: %s.",
                   ppm_money_strerror (money));
        return;
    }
    const char *capture_method = "automatic";
    if (s_enum_param (req, reply, "payment_intent_data[capture_method]", s_capture_methods,
                      &capture_method) < 0)
        return;
    const char *customer = ppm_form_get (req->form, "customer");
    if (customer && *customer && !emu_find (req->account, customer, "customer")) {
        emu_error (reply, 400, "invalid_request_error", "resource_missing", "customer",
                   "No such customer: '%s'", customer);
        return;
    }
    const char *reference = ppm_form_get (req->form, "client_reference_id");
    if (reference && strlen (reference) > 200) {
        emu_error (reply, 400, "invalid_request_error", "parameter_invalid_string",
                   "client_reference_id", "client_reference_id must be at most 200 characters.");
        return;
    }
    int64_t now = emu_now_s ();
    int64_t expires_at = now + 24 * 3600;
    if (s_int_param (req, reply, "expires_at", false, 0, &expires_at) < 0)
        return;
    if (expires_at < now + 30 * 60 || expires_at > now + 24 * 3600) {
        emu_error (reply, 400, "invalid_request_error", "parameter_invalid_integer", "expires_at",
                   "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                   "Checkout Session creation.");
        return;
    }
    json_t *metadata = s_metadata (req, reply, "metadata");
    if (!metadata)
        return;
    json_t *pi_metadata = s_metadata (req, reply, "payment_intent_data[metadata]");
    if (!pi_metadata) {
        json_decref (metadata);
        return;
    }
    char *id = emu_new_id ("cs_test_");
    char url[512];
    snprintf (url, sizeof url, "%s/_emulator/checkout/%s", req->emu->base_url, id);
    json_t *cs = json_pack (
        "{s:s, s:s, s:I, s:I, s:s, s:s?, s:s?, s:s?, s:I, s:I, s:b, s:o, s:s, s:n, s:s, s:s, "
        "s:s, s:s?, s:s, s:o}",
        "id", id, "object", "checkout.session", "amount_subtotal", (json_int_t)total,
        "amount_total", (json_int_t)total, "currency", lower, "cancel_url",
        ppm_form_get (req->form, "cancel_url"), "client_reference_id", reference, "customer",
        customer && *customer ? customer : NULL, "created", (json_int_t)now, "expires_at",
        (json_int_t)expires_at, "livemode", 0, "metadata", json_object (), "mode", "payment",
        "payment_intent", "payment_status", "unpaid", "status", "open", "success_url", success_url,
        "customer_email", ppm_form_get (req->form, "customer_email"), "url", url,
        "payment_intent_data",
        json_pack ("{s:s, s:o, s:s?}", "capture_method", capture_method, "metadata", pi_metadata,
                   "description", ppm_form_get (req->form, "payment_intent_data[description]")));
    free (id);
    static const char *const nullable[] = {"cancel_url", "client_reference_id", "customer",
                                           "customer_email", NULL};
    for (const char *const *f = nullable; *f; f++)
        if (!json_object_get (cs, *f))
            json_object_set_new (cs, *f, json_null ());
    s_merge_metadata (cs, metadata);
    json_decref (metadata);
    s_store (req->account, cs);
    /* the intent's settings are the emulator's own bookkeeping: keep them
       out of what the API returns */
    json_t *shown = json_deep_copy (cs);
    json_object_del (shown, "payment_intent_data");
    s_ok (reply, shown);
    json_decref (shown);
}

/* A session as the API shows it (without the emulator's bookkeeping). */
static void
s_cs_reply (emu_reply_t *reply, json_t *cs)
{
    json_t *shown = json_deep_copy (cs);
    json_object_del (shown, "payment_intent_data");
    s_ok (reply, shown);
    json_decref (shown);
}

static void
s_cs_get (emu_req_t *req, emu_reply_t *reply)
{
    json_t *cs = emu_find (req->account, req->id, "checkout.session");
    if (!cs)
        s_not_found (reply, "checkout.session", req->id, "session");
    else
        s_cs_reply (reply, cs);
}

static void
s_cs_expire_in (emu_t *emu, emu_account_t *account, s_cause_t cause, json_t *cs, emu_reply_t *reply)
{
    if (strcmp (s_str (cs, "status"), "open") != 0) {
        emu_error (reply, 400, "invalid_request_error", "checkout_session_unexpected_state", NULL,
                   "Only Checkout Sessions with a status in [\"open\"] can be expired. This "
                   "Checkout Session has a status of \"%s\".",
                   s_str (cs, "status"));
        return;
    }
    json_object_set_new (cs, "status", json_string ("expired"));
    json_t *shown = json_deep_copy (cs);
    json_object_del (shown, "payment_intent_data");
    s_emit (emu, account, cause, "checkout.session.expired", shown,
            json_pack ("{s:s}", "status", "open"));
    json_decref (shown);
    s_cs_reply (reply, cs);
}

static void
s_cs_expire (emu_req_t *req, emu_reply_t *reply)
{
    json_t *cs = emu_find (req->account, req->id, "checkout.session");
    if (!cs)
        s_not_found (reply, "checkout.session", req->id, "session");
    else
        s_cs_expire_in (req->emu, req->account, s_cause_of (req), cs, reply);
}

/* --- control operations (called by emu_main.c with the lock held) ------------- */

static const s_cause_t s_control_cause = {NULL, NULL, NULL};

void
emu_control_authenticate (emu_t *emu, const char *pi_id, bool succeed, emu_reply_t *reply)
{
    emu_account_t *account = NULL;
    json_t *pi = emu_find_any (emu, pi_id, &account);
    if (!pi || strcmp (s_str (pi, "object"), "payment_intent") != 0) {
        s_not_found (reply, "payment_intent", pi_id, "intent");
        return;
    }
    if (strcmp (s_str (pi, "status"), "requires_action") != 0) {
        s_unexpected_state (reply, pi, "authenticated", "requires_action");
        return;
    }
    char *pm = strdup (s_str (pi, "payment_method"));
    if (succeed)
        s_pi_authorized (emu, account, s_control_cause, pi, pm);
    else
        s_pi_failed (emu, account, s_control_cause, pi, pm, "payment_intent_authentication_failure",
                     NULL,
                     "The provided PaymentMethod has failed authentication. You can provide "
                     "payment_method_data or a new PaymentMethod to attempt to fulfill this "
                     "PaymentIntent again.");
    free (pm);
    s_ok (reply, pi);
}

void
emu_control_checkout_complete (emu_t *emu, const char *cs_id, const char *pm, emu_reply_t *reply)
{
    emu_account_t *account = NULL;
    json_t *cs = emu_find_any (emu, cs_id, &account);
    if (!cs || strcmp (s_str (cs, "object"), "checkout.session") != 0) {
        s_not_found (reply, "checkout.session", cs_id, "session");
        return;
    }
    if (strcmp (s_str (cs, "status"), "open") != 0) {
        emu_error (reply, 400, "invalid_request_error", "checkout_session_unexpected_state", NULL,
                   "Checkout Session %s is %s, not open.", cs_id, s_str (cs, "status"));
        return;
    }
    if (!pm)
        pm = "pm_card_visa";
    s_pm_t kind = s_pm_kind (pm);
    if (kind == S_PM_UNKNOWN) {
        emu_error (reply, 400, "invalid_request_error", "resource_missing", "payment_method",
                   "No such PaymentMethod: '%s'", pm);
        return;
    }
    json_t *pid = json_object_get (cs, "payment_intent_data");
    json_t *pi = emu_find (account, s_str (cs, "payment_intent"), "payment_intent");
    if (!pi) {
        char *id = emu_new_id ("pi_");
        char *secret = emu_new_id ("_secret_");
        char client_secret[128];
        snprintf (client_secret, sizeof client_secret, "%s%s", id, secret);
        pi = json_pack (
            "{s:s, s:s, s:I, s:i, s:i, s:n, s:n, s:n, s:s, s:s, s:s, s:I, s:s, s:O, "
            "s:O, s:n, s:n, s:b, s:O, s:n, s:n, s:[s], s:n, s:s}",
            "id", id, "object", "payment_intent", "amount", (json_int_t)s_int (cs, "amount_total"),
            "amount_capturable", 0, "amount_received", 0, "automatic_payment_methods",
            "canceled_at", "cancellation_reason", "capture_method", s_str (pid, "capture_method"),
            "client_secret", client_secret, "confirmation_method", "automatic", "created",
            (json_int_t)emu_now_s (), "currency", s_str (cs, "currency"), "customer",
            json_object_get (cs, "customer"), "description",
            json_object_get (pid, "description") ? json_object_get (pid, "description")
                                                 : json_null (),
            "last_payment_error", "latest_charge", "livemode", 0, "metadata",
            json_object_get (pid, "metadata"), "next_action", "payment_method",
            "payment_method_types", "card", "receipt_email", "status", "requires_payment_method");
        free (id);
        free (secret);
        s_store (account, pi);
        json_object_set_new (cs, "payment_intent", json_string (s_str (pi, "id")));
        s_emit (emu, account, s_control_cause, "payment_intent.created", pi, NULL);
    }
    if (kind == S_PM_DECLINED || kind == S_PM_INSUFFICIENT) {
        bool funds = kind == S_PM_INSUFFICIENT;
        const char *message =
            funds ? "Your card has insufficient funds." : "Your card was declined.";
        s_pi_failed (emu, account, s_control_cause, pi, pm, "card_declined",
                     funds ? "insufficient_funds" : "generic_decline", message);
        emu_error (reply, 402, "card_error", "card_declined", NULL, "%s", message);
        json_object_set_new (s_error_of (reply), "decline_code",
                             json_string (funds ? "insufficient_funds" : "generic_decline"));
        json_object_set_new (s_error_of (reply), "payment_intent", json_deep_copy (pi));
        return;
    }
    /* the Checkout page runs 3D Secure itself: treat it as passed */
    s_pi_authorized (emu, account, s_control_cause, pi, pm);
    bool paid = strcmp (s_str (pi, "status"), "succeeded") == 0;
    json_object_set_new (cs, "status", json_string ("complete"));
    json_object_set_new (cs, "payment_status", json_string (paid ? "paid" : "unpaid"));
    json_t *shown = json_deep_copy (cs);
    json_object_del (shown, "payment_intent_data");
    s_emit (emu, account, s_control_cause, "checkout.session.completed", shown,
            json_pack ("{s:s}", "status", "open"));
    json_decref (shown);
    s_cs_reply (reply, cs);
}

void
emu_control_checkout_expire (emu_t *emu, const char *cs_id, emu_reply_t *reply)
{
    emu_account_t *account = NULL;
    json_t *cs = emu_find_any (emu, cs_id, &account);
    if (!cs || strcmp (s_str (cs, "object"), "checkout.session") != 0) {
        s_not_found (reply, "checkout.session", cs_id, "session");
        return;
    }
    s_cs_expire_in (emu, account, s_control_cause, cs, reply);
}

void
emu_control_dispute (emu_t *emu, const char *pi_id, int64_t amount, const char *reason,
                     emu_reply_t *reply)
{
    emu_account_t *account = NULL;
    json_t *pi = emu_find_any (emu, pi_id, &account);
    if (!pi || strcmp (s_str (pi, "object"), "payment_intent") != 0) {
        s_not_found (reply, "payment_intent", pi_id, "payment_intent");
        return;
    }
    json_t *charge = emu_find (account, s_str (pi, "latest_charge"), "charge");
    if (!charge || !json_is_true (json_object_get (charge, "captured"))) {
        emu_error (reply, 400, "invalid_request_error", "charge_not_disputable", "payment_intent",
                   "PaymentIntent %s has no captured charge to dispute.", pi_id);
        return;
    }
    if (amount <= 0 || amount > s_int (charge, "amount_captured"))
        amount = s_int (charge, "amount_captured");
    char *id = emu_new_id ("dp_");
    json_t *dispute =
        json_pack ("{s:s, s:s, s:I, s:s, s:s, s:I, s:b, s:{}, s:s, s:s, s:s}", "id", id, "object",
                   "dispute", "amount", (json_int_t)amount, "charge", s_str (charge, "id"),
                   "currency", s_str (charge, "currency"), "created", (json_int_t)emu_now_s (),
                   "livemode", 0, "metadata", "payment_intent", pi_id, "reason",
                   reason ? reason : "fraudulent", "status", "needs_response");
    free (id);
    s_store (account, dispute);
    json_object_set_new (charge, "disputed", json_true ());
    s_emit (emu, account, s_control_cause, "charge.dispute.created", dispute, NULL);
    s_ok (reply, dispute);
}

void
emu_sweep (emu_t *emu)
{
    int64_t now = emu_now_s ();
    for (emu_account_t *account = zhash_first (emu->accounts); account;
         account = zhash_next (emu->accounts)) {
        /* collect first: expiring adds events to the map being walked */
        json_t *due = json_array ();
        const char *k;
        json_t *v;
        EMU_OBJECT_EACH (account->objects, k, v) {
            if (strcmp (s_str (v, "object"), "checkout.session") == 0 &&
                strcmp (s_str (v, "status"), "open") == 0 && s_int (v, "expires_at") <= now)
                json_array_append (due, v);
        }
        size_t i;
        EMU_ARRAY_EACH (due, i, v) {
            emu_reply_t reply = {0, NULL, false};
            s_cs_expire_in (emu, account, s_control_cause, v, &reply);
            json_decref (reply.body);
        }
        json_decref (due);
    }
}

/* --- the route table ------------------------------------------------------- */

const emu_route_t emu_routes[] = {{"POST", "/v1/customers", s_customer_create, NULL},
                                  {"GET", "/v1/customers", s_customer_list, NULL},
                                  {"GET", "/v1/customers/{id}", s_customer_get, NULL},
                                  {"POST", "/v1/customers/{id}", s_customer_update, NULL},
                                  {"POST", "/v1/payment_intents", s_pi_create, NULL},
                                  {"GET", "/v1/payment_intents", s_pi_list, NULL},
                                  {"GET", "/v1/payment_intents/{id}", s_pi_get, NULL},
                                  {"POST", "/v1/payment_intents/{id}", s_pi_update, NULL},
                                  {"POST", "/v1/payment_intents/{id}/confirm", s_pi_confirm, NULL},
                                  {"POST", "/v1/payment_intents/{id}/capture", s_pi_capture, NULL},
                                  {"POST", "/v1/payment_intents/{id}/cancel", s_pi_cancel, NULL},
                                  {"POST", "/v1/refunds", s_refund_create, "rak_refund_write"},
                                  {"GET", "/v1/refunds", s_refund_list, "rak_refund_read"},
                                  {"GET", "/v1/refunds/{id}", s_refund_get, "rak_refund_read"},
                                  {"GET", "/v1/charges/{id}", s_charge_get, "rak_charge_read"},
                                  {"GET", "/v1/events", s_event_list, "rak_event_read"},
                                  {"GET", "/v1/events/{id}", s_event_get, "rak_event_read"},
                                  {"POST", "/v1/checkout/sessions", s_cs_create, NULL},
                                  {"GET", "/v1/checkout/sessions/{id}", s_cs_get, NULL},
                                  {"POST", "/v1/checkout/sessions/{id}/expire", s_cs_expire, NULL},
                                  {NULL, NULL, NULL, NULL}};
