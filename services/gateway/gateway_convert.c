/*  gateway_convert: protobuf ↔ JSON for the public API (see the header). */
#include "gateway_convert.h"
#include "gateway_json.h"
#include "ppm_clock.h"

#include <stdlib.h>
#include <string.h>

const char *
gateway_session_state_name (Ppm__V1__SessionState state)
{
    switch (state) {
        case PPM__V1__SESSION_STATE__SESSION_AWAITING_PAYMENT:
            return "awaiting_payment";
        case PPM__V1__SESSION_STATE__SESSION_ACTIVE:
            return "active";
        case PPM__V1__SESSION_STATE__SESSION_PAUSED:
            return "paused";
        case PPM__V1__SESSION_STATE__SESSION_EXPIRED:
            return "expired";
        case PPM__V1__SESSION_STATE__SESSION_ENDED:
            return "ended";
        default:
            return "unknown";
    }
}

int
gateway_session_state_parse (const char *name)
{
    if (!name || !*name)
        return 0;
    static const char *names[] = {"awaiting_payment", "active", "paused", "expired", "ended"};
    for (int i = 0; i < 5; i++)
        if (strcmp (names[i], name) == 0)
            return i + 1;
    return -1;
}

const char *
gateway_payment_state_name (Ppm__V1__PaymentState state)
{
    switch (state) {
        case PPM__V1__PAYMENT_STATE__PAYMENT_CREATED:
            return "created";
        case PPM__V1__PAYMENT_STATE__PAYMENT_PENDING:
            return "pending";
        case PPM__V1__PAYMENT_STATE__PAYMENT_REQUIRES_ACTION:
            return "requires_action";
        case PPM__V1__PAYMENT_STATE__PAYMENT_AUTHORIZED:
            return "authorized";
        case PPM__V1__PAYMENT_STATE__PAYMENT_SUCCEEDED:
            return "succeeded";
        case PPM__V1__PAYMENT_STATE__PAYMENT_FAILED:
            return "failed";
        case PPM__V1__PAYMENT_STATE__PAYMENT_CANCELED:
            return "canceled";
        case PPM__V1__PAYMENT_STATE__PAYMENT_REFUNDED:
            return "refunded";
        default:
            return "unknown";
    }
}

static json_t *
s_int_array (const int64_t *values, size_t n)
{
    json_t *array = json_array ();
    for (size_t i = 0; i < n; i++)
        json_array_append_new (array, json_integer (values[i]));
    return array;
}

static json_t *
s_str (const char *s)
{
    return json_string (s ? s : "");
}

json_t *
gateway_settings_json (const Ppm__V1__Settings *s)
{
    json_t *origins = json_array ();
    for (size_t i = 0; i < s->n_cors_allowed_origins; i++)
        json_array_append_new (origins, s_str (s->cors_allowed_origins[i]));
    json_t *json = json_object ();
    json_object_set_new (json, "version", json_integer (s->version));
    json_object_set_new (json, "enabled", json_boolean (s->enabled));
    json_object_set_new (json, "enable_for", s_str (s->enable_for));
    json_object_set_new (json, "rate_scope", s_str (s->rate_scope));
    json_object_set_new (json, "default_call_per_minute",
                         json_integer (s->default_call_per_minute));
    json_object_set_new (json, "default_chat_per_minute",
                         json_integer (s->default_chat_per_minute));
    json_object_set_new (json, "stripe_mode", s_str (s->stripe_mode));
    json_object_set_new (json, "stripe_secret_key", s_str (s->stripe_secret_key));
    json_object_set_new (json, "stripe_restricted_key", s_str (s->stripe_restricted_key));
    json_object_set_new (json, "stripe_publishable_key", s_str (s->stripe_publishable_key));
    json_object_set_new (json, "stripe_webhook_secret", s_str (s->stripe_webhook_secret));
    json_object_set_new (json, "terms_url", s_str (s->terms_url));
    json_object_set_new (json, "preset_minutes",
                         s_int_array (s->preset_minutes, s->n_preset_minutes));
    json_object_set_new (json, "currency", s_str (s->currency));
    json_object_set_new (json, "billing_mode", s_str (s->billing_mode));
    json_object_set_new (json, "rounding", s_str (s->rounding));
    json_object_set_new (json, "refund_unused", json_boolean (s->refund_unused));
    json_object_set_new (json, "warning_marks_s",
                         s_int_array (s->warning_marks_s, s->n_warning_marks_s));
    json_object_set_new (json, "grace_s", json_integer (s->grace_s));
    json_object_set_new (json, "max_minutes_per_purchase",
                         json_integer (s->max_minutes_per_purchase));
    json_object_set_new (json, "max_session_minutes", json_integer (s->max_session_minutes));
    json_object_set_new (json, "max_concurrent_sessions",
                         json_integer (s->max_concurrent_sessions));
    json_object_set_new (json, "free_trial_minutes", json_integer (s->free_trial_minutes));
    json_object_set_new (json, "session_ttl_s", json_integer (s->session_ttl_s));
    json_object_set_new (json, "cors_allowed_origins", origins);
    json_object_set_new (json, "plan", s_str (s->plan));
    json_object_set_new (json, "updated_at_ms", json_integer (s->updated_at_ms));
    json_object_set_new (json, "updated_by", s_str (s->updated_by));
    json_object_set_new (json, "tenant_id", s_str (s->tenant_id));
    return json;
}

/* Reads an array of integers into a malloc'ed array; false on error. */
static bool
s_get_int_array (json_t *body, const char *name, size_t max_items, int64_t min, int64_t max,
                 int64_t **out, size_t *n_out, ppm_status_t **errors)
{
    json_t *value = json_object_get (body, name);
    if (!value)
        return false;
    if (!json_is_array (value)) {
        gateway_json_violation (errors, name, "must be an array of integers");
        return false;
    }
    size_t n = json_array_size (value);
    if (n > max_items) {
        gateway_json_violation (errors, name, "at most %zu values", max_items);
        return false;
    }
    int64_t *items = calloc (n ? n : 1, sizeof *items);
    for (size_t i = 0; i < n; i++) {
        json_t *item = json_array_get (value, i);
        char field[64];
        snprintf (field, sizeof field, "%s[%zu]", name, i);
        if (!json_is_integer (item)) {
            gateway_json_violation (errors, field, "must be an integer");
            free (items);
            return false;
        }
        int64_t v = json_integer_value (item);
        if (v < min || v > max) {
            gateway_json_violation (errors, field, "must be between %lld and %lld", (long long)min,
                                    (long long)max);
            free (items);
            return false;
        }
        items[i] = v;
    }
    *out = items;
    *n_out = n;
    return true;
}

int
gateway_settings_from_json (json_t *body, Ppm__V1__Settings *s, ppm_status_t **errors)
{
    static const char *const allowed[] = {
        "version", "enabled", "enable_for", "rate_scope", "default_call_per_minute",
        "default_chat_per_minute", "stripe_mode", "stripe_secret_key", "stripe_restricted_key",
        "stripe_publishable_key", "stripe_webhook_secret", "terms_url", "preset_minutes",
        "currency", "billing_mode", "rounding", "refund_unused", "warning_marks_s", "grace_s",
        "max_minutes_per_purchase", "max_session_minutes", "max_concurrent_sessions",
        "free_trial_minutes", "session_ttl_s", "cors_allowed_origins",
        /* read-only fields a client may echo back from GET; ignored */
        "plan", "updated_at_ms", "updated_by", "tenant_id", NULL};
    gateway_json_refuse_unknown (body, allowed, errors);
    const int64_t big = INT64_C (1000000000000);
    const char *text;
    bool flag;
    int64_t number;
    if (gateway_json_get_int (body, "version", false, 0, INT64_MAX, &number, errors))
        s->version = number;
    if (gateway_json_get_bool (body, "enabled", false, &flag, errors))
        s->enabled = flag;
    if (gateway_json_get_string (body, "enable_for", false, 16, &text, errors))
        s->enable_for = (char *)text;
    if (gateway_json_get_string (body, "rate_scope", false, 16, &text, errors))
        s->rate_scope = (char *)text;
    if (gateway_json_get_int (body, "default_call_per_minute", false, 0, big, &number, errors))
        s->default_call_per_minute = number;
    if (gateway_json_get_int (body, "default_chat_per_minute", false, 0, big, &number, errors))
        s->default_chat_per_minute = number;
    if (gateway_json_get_string (body, "stripe_mode", false, 16, &text, errors))
        s->stripe_mode = (char *)text;
    if (gateway_json_get_string (body, "stripe_secret_key", false, 512, &text, errors))
        s->stripe_secret_key = (char *)text;
    if (gateway_json_get_string (body, "stripe_restricted_key", false, 512, &text, errors))
        s->stripe_restricted_key = (char *)text;
    if (gateway_json_get_string (body, "stripe_publishable_key", false, 512, &text, errors))
        s->stripe_publishable_key = (char *)text;
    if (gateway_json_get_string (body, "stripe_webhook_secret", false, 512, &text, errors))
        s->stripe_webhook_secret = (char *)text;
    if (gateway_json_get_string (body, "terms_url", false, 2048, &text, errors))
        s->terms_url = (char *)text;
    s_get_int_array (body, "preset_minutes", 16, INT32_MIN, INT32_MAX, &s->preset_minutes,
                     &s->n_preset_minutes, errors);
    if (gateway_json_get_string (body, "currency", false, 8, &text, errors))
        s->currency = (char *)text;
    if (gateway_json_get_string (body, "billing_mode", false, 16, &text, errors))
        s->billing_mode = (char *)text;
    if (gateway_json_get_string (body, "rounding", false, 16, &text, errors))
        s->rounding = (char *)text;
    if (gateway_json_get_bool (body, "refund_unused", false, &flag, errors))
        s->refund_unused = flag;
    s_get_int_array (body, "warning_marks_s", 16, INT32_MIN, INT32_MAX, &s->warning_marks_s,
                     &s->n_warning_marks_s, errors);
    if (gateway_json_get_int (body, "grace_s", false, INT32_MIN, INT32_MAX, &number, errors))
        s->grace_s = number;
    if (gateway_json_get_int (body, "max_minutes_per_purchase", false, INT32_MIN, INT32_MAX,
                              &number, errors))
        s->max_minutes_per_purchase = number;
    if (gateway_json_get_int (body, "max_session_minutes", false, INT32_MIN, INT32_MAX, &number,
                              errors))
        s->max_session_minutes = number;
    if (gateway_json_get_int (body, "max_concurrent_sessions", false, INT32_MIN, INT32_MAX, &number,
                              errors))
        s->max_concurrent_sessions = number;
    if (gateway_json_get_int (body, "free_trial_minutes", false, INT32_MIN, INT32_MAX, &number,
                              errors))
        s->free_trial_minutes = number;
    if (gateway_json_get_int (body, "session_ttl_s", false, INT32_MIN, INT32_MAX, &number, errors))
        s->session_ttl_s = number;
    json_t *origins = json_object_get (body, "cors_allowed_origins");
    if (origins) {
        if (!json_is_array (origins) || json_array_size (origins) > 32) {
            gateway_json_violation (errors, "cors_allowed_origins",
                                    "must be an array of at most 32 origins");
        } else {
            size_t n = json_array_size (origins);
            s->cors_allowed_origins = calloc (n ? n : 1, sizeof (char *));
            for (size_t i = 0; i < n; i++) {
                json_t *item = json_array_get (origins, i);
                if (!json_is_string (item) || json_string_length (item) > 256) {
                    char field[64];
                    snprintf (field, sizeof field, "cors_allowed_origins[%zu]", i);
                    gateway_json_violation (errors, field,
                                            "must be an origin such as "
                                            "https://example.com");
                    break;
                }
                s->cors_allowed_origins[s->n_cors_allowed_origins++] =
                    (char *)json_string_value (item);
            }
        }
    }
    return *errors ? -1 : 0;
}

void
gateway_settings_clear (Ppm__V1__Settings *s)
{
    free (s->preset_minutes);
    free (s->warning_marks_s);
    free (s->cors_allowed_origins);
    s->preset_minutes = NULL;
    s->warning_marks_s = NULL;
    s->cors_allowed_origins = NULL;
    s->n_preset_minutes = 0;
    s->n_warning_marks_s = 0;
    s->n_cors_allowed_origins = 0;
}

static json_t *
s_nullable (bool set, int64_t value)
{
    return set ? json_integer (value) : json_null ();
}

json_t *
gateway_user_rates_json (const Ppm__V1__UserRates *r)
{
    return json_pack ("{s:s, s:o, s:o}", "user_id", r->payee ? r->payee : "", "call_per_minute",
                      s_nullable (r->call_set, r->call_per_minute), "chat_per_minute",
                      s_nullable (r->chat_set, r->chat_per_minute));
}

json_t *
gateway_role_rates_json (const Ppm__V1__RoleRates *r)
{
    return json_pack ("{s:s, s:o, s:o, s:i}", "role", r->role ? r->role : "", "call_per_minute",
                      s_nullable (r->call_set, r->call_per_minute), "chat_per_minute",
                      s_nullable (r->chat_set, r->chat_per_minute), "priority", (int)r->priority);
}

int
gateway_rates_from_json (json_t *body, bool role, protobuf_c_boolean *call_set, int64_t *call,
                         protobuf_c_boolean *chat_set, int64_t *chat, int32_t *priority,
                         ppm_status_t **errors)
{
    static const char *const user_fields[] = {"call_per_minute", "chat_per_minute", "user_id",
                                              NULL};
    static const char *const role_fields[] = {"call_per_minute", "chat_per_minute", "priority",
                                              "role", NULL};
    gateway_json_refuse_unknown (body, role ? role_fields : user_fields, errors);
    const int64_t big = INT64_C (1000000000000);
    bool is_null = true;
    int64_t value = 0;
    if (gateway_json_get_nullable_int (body, "call_per_minute", true, 0, big, &value, &is_null,
                                       errors)) {
        *call_set = !is_null;
        *call = value;
    }
    if (gateway_json_get_nullable_int (body, "chat_per_minute", true, 0, big, &value, &is_null,
                                       errors)) {
        *chat_set = !is_null;
        *chat = value;
    }
    if (role && priority &&
        gateway_json_get_int (body, "priority", false, -1000, 1000, &value, errors))
        *priority = (int32_t)value;
    return *errors ? -1 : 0;
}

json_t *
gateway_quote_json (const Ppm__V1__Quote *q)
{
    json_t *presets = json_array ();
    for (size_t i = 0; i < q->n_presets; i++)
        json_array_append_new (presets, json_pack ("{s:I, s:I}", "minutes",
                                                   (json_int_t)q->presets[i]->minutes, "amount",
                                                   (json_int_t)q->presets[i]->amount));
    json_t *json = json_object ();
    json_object_set_new (json, "paid", json_boolean (q->paid));
    json_object_set_new (json, "rate_per_minute", json_integer (q->rate_per_minute));
    json_object_set_new (json, "currency", s_str (q->currency));
    json_object_set_new (json, "presets", presets);
    json_object_set_new (json, "terms_url", s_str (q->terms_url));
    json_object_set_new (json, "min_minutes", json_integer (q->min_minutes));
    json_object_set_new (json, "max_minutes", json_integer (q->max_minutes));
    json_object_set_new (json, "kind", s_str (q->kind));
    json_object_set_new (json, "payee", s_str (q->payee));
    json_object_set_new (json, "billing_mode", s_str (q->billing_mode));
    json_object_set_new (json, "rounding", s_str (q->rounding));
    json_object_set_new (json, "free_trial_minutes", json_integer (q->free_trial_minutes));
    json_object_set_new (json, "stripe_mode", s_str (q->stripe_mode));
    json_object_set_new (json, "warning_marks_s",
                         s_int_array (q->warning_marks_s, q->n_warning_marks_s));
    return json;
}

int64_t
gateway_heartbeat_every_ms (int64_t grace_s, int64_t scale)
{
    if (scale < 1)
        scale = 1;
    if (grace_s < 0)
        grace_s = 0;
    if (grace_s > INT32_MAX)
        grace_s = INT32_MAX;
    /* a third of the grace in real time: two heartbeats may be lost */
    int64_t every = grace_s * 1000 / 3 / scale;
    if (every > 10000)
        every = 10000;
    if (every < 250)
        every = 250;
    return every;
}

json_t *
gateway_session_json (const Ppm__V1__Session *s)
{
    json_t *json = json_object ();
    json_object_set_new (json, "session_id", s_str (s->session_id));
    json_object_set_new (json, "state", json_string (gateway_session_state_name (s->state)));
    json_object_set_new (json, "kind", s_str (s->kind));
    json_object_set_new (json, "payer", s_str (s->payer));
    json_object_set_new (json, "payee", s_str (s->payee));
    json_object_set_new (json, "paid", json_boolean (s->paid));
    json_object_set_new (json, "rate_per_minute", json_integer (s->rate_per_minute));
    json_object_set_new (json, "currency", s_str (s->currency));
    json_object_set_new (json, "funded_ms", json_integer (s->funded_ms));
    json_object_set_new (json, "trial_ms", json_integer (s->trial_ms));
    json_object_set_new (json, "used_ms", json_integer (s->used_ms));
    json_object_set_new (json, "remaining_ms", json_integer (s->remaining_ms));
    json_object_set_new (json, "expires_at",
                         s->expires_at_ms ? json_integer (s->expires_at_ms) : json_null ());
    json_object_set_new (json, "paused",
                         json_boolean (s->state == PPM__V1__SESSION_STATE__SESSION_PAUSED));
    json_object_set_new (json, "paid_amount", json_integer (s->paid_amount));
    json_object_set_new (json, "billed_amount", json_integer (s->billed_amount));
    json_object_set_new (json, "created_at", json_integer (s->created_at_ms));
    json_object_set_new (json, "ended_at",
                         s->ended_at_ms ? json_integer (s->ended_at_ms) : json_null ());
    json_object_set_new (json, "reopen_until",
                         s->reopen_until_ms ? json_integer (s->reopen_until_ms) : json_null ());
    json_object_set_new (json, "end_reason", s_str (s->end_reason));
    json_object_set_new (json, "warning_marks_s",
                         s_int_array (s->warning_marks_s, s->n_warning_marks_s));
    json_object_set_new (json, "grace_s", json_integer (s->grace_s));
    json_object_set_new (
        json, "heartbeat_every_ms",
        json_integer (gateway_heartbeat_every_ms (s->grace_s, ppm_clock_scale ())));
    json_object_set_new (json, "seq", json_integer ((json_int_t)s->seq));
    json_object_set_new (json, "now", json_integer (s->now_ms));
    return json;
}

json_t *
gateway_payment_json (const Ppm__V1__Payment *p)
{
    json_t *json = json_object ();
    json_object_set_new (json, "payment_id", s_str (p->payment_id));
    json_object_set_new (json, "session_id", s_str (p->session_id));
    json_object_set_new (json, "payer", s_str (p->payer));
    json_object_set_new (json, "payee", s_str (p->payee));
    json_object_set_new (json, "minutes", json_integer (p->minutes));
    json_object_set_new (json, "amount", json_integer (p->amount));
    json_object_set_new (json, "currency", s_str (p->currency));
    json_object_set_new (json, "rate_per_minute", json_integer (p->rate_per_minute));
    json_object_set_new (
        json, "billing_mode",
        json_string (p->billing_mode == PPM__V1__PAYMENT_BILLING_MODE__PAYMENT_BILLING_AUTHORIZE
                         ? "authorize"
                         : "prepaid"));
    json_object_set_new (json, "state", json_string (gateway_payment_state_name (p->state)));
    json_object_set_new (json, "captured", json_integer (p->captured));
    json_object_set_new (json, "refunded", json_integer (p->refunded));
    json_object_set_new (json, "stripe_payment_intent", s_str (p->stripe_payment_intent));
    json_object_set_new (json, "disputed", json_boolean (p->disputed));
    json_object_set_new (json, "failure_code", s_str (p->failure_code));
    json_object_set_new (json, "failure_message", s_str (p->failure_message));
    json_object_set_new (json, "funded", json_boolean (p->funded));
    json_object_set_new (json, "created_at", json_integer (p->created_at_ms));
    json_object_set_new (json, "updated_at", json_integer (p->updated_at_ms));
    json_object_set_new (json, "terms_url", s_str (p->terms_url));
    json_object_set_new (json, "terms_accepted_at", json_integer (p->terms_accepted_at_ms));
    return json;
}

json_t *
gateway_audit_json (const Ppm__V1__AuditEntry *e)
{
    return json_pack ("{s:I, s:I, s:s, s:s, s:s, s:s}", "id", (json_int_t)e->id, "at",
                      (json_int_t)e->at_ms, "actor", e->actor ? e->actor : "", "field",
                      e->field ? e->field : "", "old_value", e->old_value ? e->old_value : "",
                      "new_value", e->new_value ? e->new_value : "");
}

json_t *
gateway_user_token_secret_info_json (const Ppm__V1__UserTokenSecretInfo *info)
{
    return json_pack ("{s:s, s:I}", "masked", info->masked ? info->masked : "", "rotated_at",
                      (json_int_t)info->rotated_at_ms);
}

json_t *
gateway_rotated_secret_json (const Ppm__V1__RotateUserTokenSecretReply *reply)
{
    return json_pack ("{s:s, s:s, s:I}", "secret", reply->secret ? reply->secret : "", "masked",
                      reply->masked ? reply->masked : "", "rotated_at",
                      (json_int_t)reply->rotated_at_ms);
}

json_t *
gateway_session_event_json (const Ppm__V1__SessionEvent *e)
{
    json_t *json = json_object ();
    json_object_set_new (json, "session_id", s_str (e->session_id));
    json_object_set_new (json, "event", s_str (e->event));
    json_object_set_new (json, "state", json_string (gateway_session_state_name (e->state)));
    json_object_set_new (json, "seq", json_integer ((json_int_t)e->seq));
    json_object_set_new (json, "funded_ms", json_integer (e->funded_ms));
    json_object_set_new (json, "used_ms", json_integer (e->used_ms));
    json_object_set_new (json, "remaining_ms", json_integer (e->remaining_ms));
    json_object_set_new (json, "expires_at",
                         e->expires_at_ms ? json_integer (e->expires_at_ms) : json_null ());
    json_object_set_new (json, "paused",
                         json_boolean (e->state == PPM__V1__SESSION_STATE__SESSION_PAUSED));
    json_object_set_new (json, "at", json_integer (e->at_ms));
    if (e->warning_mark_s)
        json_object_set_new (json, "warning_mark_s", json_integer (e->warning_mark_s));
    if (e->added_ms)
        json_object_set_new (json, "added_ms", json_integer (e->added_ms));
    if (e->reason && *e->reason)
        json_object_set_new (json, "reason", s_str (e->reason));
    return json;
}
