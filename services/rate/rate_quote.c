/*  rate_quote: see rate_quote.h. Pure: reads one tenant entry, writes into
    caller-provided storage, allocates nothing, so a quote costs a hash
    lookup and a few multiplications.
*/
#include "rate_quote.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

static rate_amount_t
s_pick (rate_user_t rates, rate_kind_t kind)
{
    return kind == RATE_KIND_CALL ? rates.call : rates.chat;
}

rate_resolution_t
rate_resolve (const rate_tenant_t *tenant, const char *payee, char *const *roles, size_t role_count,
              rate_kind_t kind)
{
    const Ppm__V1__Settings *s = rate_tenant_settings (tenant);
    rate_resolution_t r = {.rate = 0, .source = "free:feature_off", .role = NULL};
    if (!s->enabled)
        return r;
    const char *kind_name = kind == RATE_KIND_CALL ? "call" : "chat";
    if (strcmp (s->enable_for, "both") != 0 && strcmp (s->enable_for, kind_name) != 0) {
        r.source = "free:kind_not_enabled";
        return r;
    }
    const rate_user_t *user = payee ? rate_tenant_user (tenant, payee) : NULL;
    rate_amount_t amount = {0, false};
    if (user)
        amount = s_pick (*user, kind);
    if (amount.set) {
        r.rate = amount.amount;
        r.source = "individual";
    }
    if (!amount.set && strcmp (s->rate_scope, "roles") == 0) {
        size_t count = rate_tenant_role_count (tenant);
        /* Roles are sorted by priority: the first one the payee has that
           carries a rate for the kind wins. */
        for (size_t i = 0; i < count && !amount.set; i++) {
            const rate_role_t *role = rate_tenant_role (tenant, i);
            rate_amount_t candidate = kind == RATE_KIND_CALL ? role->call : role->chat;
            if (!candidate.set)
                continue;
            for (size_t j = 0; j < role_count; j++)
                if (roles[j] && strcmp (roles[j], role->role) == 0) {
                    amount = candidate;
                    r.rate = amount.amount;
                    r.source = "role";
                    r.role = role->role;
                    break;
                }
        }
    }
    if (!amount.set &&
        (strcmp (s->rate_scope, "default") == 0 || strcmp (s->rate_scope, "roles") == 0)) {
        amount.set = true;
        amount.amount =
            kind == RATE_KIND_CALL ? s->default_call_per_minute : s->default_chat_per_minute;
        r.rate = amount.amount;
        r.source = "default";
    }
    if (!amount.set) {
        r.rate = 0;
        r.source = "free:no_individual_rate";
    } else if (amount.amount <= 0) {
        r.rate = 0;
        r.source = "free:zero_rate";
        r.role = NULL;
    }
    return r;
}

void
rate_quote_new_id (char out[40])
{
    /* Per thread: 8 random bytes chosen once, then a counter; unique
       across processes with overwhelming probability, and cheap. */
    static const char digits[] = "0123456789abcdef";
    static _Thread_local char prefix[19]; /* "q_" + 16 hex */
    static _Thread_local uint64_t counter = 0;
    if (!prefix[0]) {
        uint8_t bytes[8];
        randombytes_buf (bytes, sizeof bytes);
        randombytes_buf (&counter, sizeof counter);
        counter &= 0xffffffffull;
        prefix[0] = 'q';
        prefix[1] = '_';
        sodium_bin2hex (prefix + 2, 17, bytes, sizeof bytes);
    }
    counter++;
    memcpy (out, prefix, 18);
    for (int i = 0; i < 16; i++)
        out[18 + i] = digits[(counter >> (60 - 4 * i)) & 15];
    out[34] = '\0';
}

ppm_status_t *
rate_quote_build (const rate_tenant_t *tenant, const Ppm__V1__QuoteRequest *req, bool time_scaled,
                  int64_t now_ms, rate_quote_t *out)
{
    rate_kind_t kind;
    if (req->kind && strcmp (req->kind, "chat") == 0)
        kind = RATE_KIND_CHAT;
    else if (req->kind && strcmp (req->kind, "call") == 0)
        kind = RATE_KIND_CALL;
    else {
        ppm_status_t *status = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid quote request");
        ppm_status_add_field (status, "kind", "must be chat or call");
        return status;
    }
    const Ppm__V1__Settings *s = rate_tenant_settings (tenant);
    const ppm_currency_t *currency = rate_tenant_currency (tenant);
    if (time_scaled && strcmp (s->stripe_mode, "live") == 0)
        return ppm_status_new (PPM_FAILED_PRECONDITION,
                               "tenant is in Stripe live mode: refused under PPM_TIME_SCALE");

    Ppm__V1__Quote *q = &out->quote;
    ppm__v1__quote__init (q);
    rate_quote_new_id (out->quote_id);
    q->quote_id = out->quote_id;
    q->tenant_id = (char *)rate_tenant_id (tenant);
    q->payee = req->payee;
    q->payer = req->payer;
    q->kind = kind == RATE_KIND_CALL ? "call" : "chat";
    q->currency = s->currency;
    q->rounding = s->rounding;
    q->billing_mode = s->billing_mode;
    q->refund_unused = s->refund_unused;
    q->terms_url = s->terms_url;
    q->free_trial_minutes = s->free_trial_minutes;
    size_t marks = s->n_warning_marks_s < 8 ? s->n_warning_marks_s : 8;
    memcpy (out->marks, s->warning_marks_s, marks * sizeof (int64_t));
    q->n_warning_marks_s = marks;
    q->warning_marks_s = out->marks;
    q->grace_s = s->grace_s;
    q->session_ttl_s = s->session_ttl_s;
    q->max_session_minutes = s->max_session_minutes;
    q->max_concurrent_sessions = s->max_concurrent_sessions;
    q->settings_version = s->version;
    q->config_revision = rate_tenant_revision (tenant);
    q->issued_at_ms = now_ms;
    q->stripe_mode = s->stripe_mode;

    rate_resolution_t r =
        rate_resolve (tenant, req->payee, req->payee_roles, req->n_payee_roles, kind);
    if (r.role) {
        snprintf (out->source, sizeof out->source, "role:%s", r.role);
        q->rate_source = out->source;
    } else
        q->rate_source = (char *)r.source;
    if (r.rate <= 0)
        return NULL; /* free: paid = false, no presets */
    if (!currency)
        return ppm_status_new (PPM_FAILED_PRECONDITION, "tenant currency %s is not supported",
                               s->currency);

    /* Smallest minutes reaching the minimum charge; largest within both
       the currency's maximum and the tenant's per-purchase limit. */
    int64_t min_minutes = (currency->min_charge + r.rate - 1) / r.rate;
    if (min_minutes < 1)
        min_minutes = 1;
    int64_t max_minutes = currency->max_charge / r.rate;
    if (max_minutes > s->max_minutes_per_purchase)
        max_minutes = s->max_minutes_per_purchase;
    if (min_minutes > max_minutes)
        return ppm_status_new (PPM_FAILED_PRECONDITION,
                               "no purchase at %lld per minute fits between the %s minimum and "
                               "the limits",
                               (long long)r.rate, currency->code);
    q->paid = true;
    q->rate_per_minute = r.rate;
    q->min_minutes = min_minutes;
    q->max_minutes = max_minutes;
    size_t n = 0;
    for (size_t i = 0; i < s->n_preset_minutes && n < 8; i++) {
        int64_t minutes = s->preset_minutes[i];
        int64_t total = 0;
        if (minutes < min_minutes || minutes > max_minutes ||
            ppm_money_total (r.rate, minutes, &total) != PPM_MONEY_OK ||
            ppm_money_check_charge (currency, total) != PPM_MONEY_OK)
            continue; /* config refuses these; never offer one */
        ppm__v1__quote_preset__init (&out->presets[n]);
        out->presets[n].minutes = minutes;
        out->presets[n].amount = total;
        out->preset_ptrs[n] = &out->presets[n];
        n++;
    }
    q->n_presets = n;
    q->presets = out->preset_ptrs;
    return NULL;
}
