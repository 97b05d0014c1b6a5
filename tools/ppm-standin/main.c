/*  ppm-standin: in-memory stand-ins of the config, rate, payment and
    metering services, speaking the real RPCs (the protos of proto/ over ppm_rpc)
    and publishing the real events, for the gateway's browser tests and
    screenshots and for web-page work without PostgreSQL, Redis or Stripe.

    It is not the product: nothing is stored, Stripe is not called (test
    payment methods decide the outcome: pm_card_visa succeeds,
    pm_card_chargeDeclined and pm_card_chargeDeclinedInsufficientFunds are
    declined, pm_card_authenticationRequired needs an action), and the
    validation is the subset the pages exercise. Time is ppm time
    (PPM_TIME_SCALE, PPM_TIME_EPOCH_MS), so a test can run a paid session in
    seconds; the gateway must share the same scale and epoch.

    Environment: PPM_CONFIG_ENDPOINT, PPM_RATE_ENDPOINT, PPM_PAYMENT_ENDPOINT,
    PPM_METERING_ENDPOINT (bind addresses), PPM_STANDIN_EVENTS (PUB bind),
    PPM_STANDIN_TENANT, PPM_STANDIN_ADMIN_KEY, PPM_STANDIN_USER_SECRET.
*/
#include <czmq.h>
#include <stdio.h>

#include "ppm_clock.h"
#include "ppm_env.h"
#include "ppm_events.h"
#include "ppm_log.h"
#include "ppm_money.h"
#include "ppm_rpc.h"
#include "proto/config.pb-c.h"
#include "proto/metering.pb-c.h"
#include "proto/payment.pb-c.h"
#include "proto/rate.pb-c.h"

#define S_MAX_SESSIONS 256
#define S_MAX_PAYMENTS 512
#define S_MAX_RATES    128
#define S_MAX_AUDIT    256

typedef struct {
    char id[32];
    char payer[129];
    char payee[129];
    char kind[8];
    bool paid;
    int64_t rate;
    Ppm__V1__SessionState state;
    int64_t funded_ms;
    int64_t used_ms; /* up to last_change */
    int64_t last_change_ms;
    int64_t created_ms;
    int64_t ended_ms;
    int64_t paid_amount;
    uint64_t seq;
    int64_t marks[8];
    size_t n_marks;
    int64_t warned_below; /* lowest mark already warned (ms) */
} s_session_t;

typedef struct {
    char id[32];
    char session[32];
    char payer[129];
    char payee[129];
    int64_t minutes;
    int64_t amount;
    Ppm__V1__PaymentState state;
    char failure_code[64];
    char failure_message[128];
    int64_t created_ms;
    int64_t updated_ms;
    int64_t refunded;
} s_payment_t;

typedef struct {
    char payee[129];
    bool call_set;
    int64_t call;
    bool chat_set;
    int64_t chat;
} s_rates_t;

typedef struct {
    char field[64];
    char old_value[128];
    char new_value[128];
    int64_t at_ms;
} s_audit_t;

static struct {
    const char *tenant;
    const char *admin_key;
    const char *secret;
    ppm_events_pub_t *pub;
    /* settings */
    int64_t version;
    bool enabled;
    char enable_for[8];
    char rate_scope[16];
    int64_t default_call;
    int64_t default_chat;
    char currency[4];
    char terms_url[512];
    int64_t presets[6];
    size_t n_presets;
    int64_t marks[5];
    size_t n_marks;
    int64_t max_minutes;
    char role_name[65];
    s_rates_t role;
    bool role_set;
    s_rates_t rates[S_MAX_RATES];
    size_t n_rates;
    s_session_t sessions[S_MAX_SESSIONS];
    size_t n_sessions;
    s_payment_t payments[S_MAX_PAYMENTS];
    size_t n_payments;
    s_audit_t audit[S_MAX_AUDIT];
    size_t n_audit;
} S;

static void
s_audit (const char *field, const char *old_value, const char *new_value)
{
    if (strcmp (old_value, new_value) == 0 || S.n_audit >= S_MAX_AUDIT)
        return;
    s_audit_t *a = &S.audit[S.n_audit++];
    snprintf (a->field, sizeof a->field, "%s", field);
    snprintf (a->old_value, sizeof a->old_value, "%s", old_value);
    snprintf (a->new_value, sizeof a->new_value, "%s", new_value);
    a->at_ms = ppm_clock_now_ms ();
}

static s_rates_t *
s_rates_find (const char *payee)
{
    for (size_t i = 0; i < S.n_rates; i++)
        if (streq (S.rates[i].payee, payee))
            return &S.rates[i];
    return NULL;
}

static s_session_t *
s_session_find (const char *id)
{
    for (size_t i = 0; i < S.n_sessions; i++)
        if (streq (S.sessions[i].id, id ? id : ""))
            return &S.sessions[i];
    return NULL;
}

/* Used time now (active sessions count down). */
static int64_t
s_used (const s_session_t *s, int64_t now)
{
    if (s->state == PPM__V1__SESSION_STATE__SESSION_ACTIVE && s->paid) {
        int64_t used = s->used_ms + (now - s->last_change_ms);
        return used < s->funded_ms ? used : s->funded_ms;
    }
    return s->used_ms;
}

static void
s_session_proto (const s_session_t *s, Ppm__V1__Session *p, int64_t now)
{
    p->session_id = (char *)s->id;
    p->tenant_id = (char *)S.tenant;
    p->payer = (char *)s->payer;
    p->payee = (char *)s->payee;
    p->kind = (char *)s->kind;
    p->state = s->state;
    p->paid = s->paid;
    p->rate_per_minute = s->rate;
    p->currency = S.currency;
    p->rounding = "minute";
    p->billing_mode = "prepaid";
    p->funded_ms = s->funded_ms;
    p->used_ms = s_used (s, now);
    p->remaining_ms = s->paid ? s->funded_ms - p->used_ms : 0;
    p->expires_at_ms =
        s->state == PPM__V1__SESSION_STATE__SESSION_ACTIVE && s->paid ? now + p->remaining_ms : 0;
    p->paid_amount = s->paid_amount;
    p->created_at_ms = s->created_ms;
    p->ended_at_ms = s->ended_ms;
    p->seq = s->seq;
    p->now_ms = now;
    p->warning_marks_s = (int64_t *)s->marks;
    p->n_warning_marks_s = s->n_marks;
}

static void
s_publish (s_session_t *s, const char *event, int64_t mark_s, int64_t added_ms)
{
    int64_t now = ppm_clock_now_ms ();
    s->seq++;
    Ppm__V1__SessionEvent e = PPM__V1__SESSION_EVENT__INIT;
    e.session_id = s->id;
    e.tenant_id = (char *)S.tenant;
    e.seq = s->seq;
    e.event = (char *)event;
    e.state = s->state;
    e.payer = s->payer;
    e.payee = s->payee;
    e.kind = s->kind;
    e.funded_ms = s->funded_ms;
    e.used_ms = s_used (s, now);
    e.remaining_ms = s->funded_ms - e.used_ms;
    e.expires_at_ms = s->state == PPM__V1__SESSION_STATE__SESSION_ACTIVE ? now + e.remaining_ms : 0;
    e.at_ms = now;
    e.warning_mark_s = mark_s;
    e.added_ms = added_ms;
    ppm_events_publish (S.pub, event, S.tenant, &e.base);
}

/* ---- config ------------------------------------------------------------ */

static void
s_settings_proto (Ppm__V1__Settings *s)
{
    s->version = S.version;
    s->enabled = S.enabled;
    s->enable_for = S.enable_for;
    s->rate_scope = S.rate_scope;
    s->default_call_per_minute = S.default_call;
    s->default_chat_per_minute = S.default_chat;
    s->stripe_mode = "test";
    s->stripe_secret_key = "sk_test_…4242";
    s->stripe_publishable_key = "pk_test_…4242";
    s->stripe_webhook_secret = "whsec_…abcd";
    s->terms_url = S.terms_url;
    s->preset_minutes = S.presets;
    s->n_preset_minutes = S.n_presets;
    s->currency = S.currency;
    s->billing_mode = "prepaid";
    s->rounding = "minute";
    s->warning_marks_s = S.marks;
    s->n_warning_marks_s = S.n_marks;
    s->grace_s = 60;
    s->max_minutes_per_purchase = S.max_minutes;
    s->max_session_minutes = 600;
    s->max_concurrent_sessions = 3;
    s->session_ttl_s = 3600;
    s->plan = "pro";
    s->tenant_id = (char *)S.tenant;
}

static void
s_put_settings (ppm_rpc_call_t *call)
{
    Ppm__V1__PutSettingsRequest *req = (Ppm__V1__PutSettingsRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__put_settings_request__descriptor);
    if (!req || !req->settings) {
        if (req)
            protobuf_c_message_free_unpacked (&req->base, NULL);
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "settings are required");
        return;
    }
    if (req->expected_version && req->expected_version != S.version) {
        protobuf_c_message_free_unpacked (&req->base, NULL);
        ppm_rpc_call_error (&call, PPM_ABORTED, "the settings changed since version %lld was read",
                            (long long)req->expected_version);
        return;
    }
    Ppm__V1__Settings *in = req->settings;
    ppm_status_t *st = NULL;
#define S_BAD(field, ...)                                                                          \
    do {                                                                                           \
        if (!st)                                                                                   \
            st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid settings");                        \
        ppm_status_add_field (st, field, __VA_ARGS__);                                             \
    } while (0)
    if (!ppm_currency_find (in->currency))
        S_BAD ("currency", "is not a currency Stripe supports");
    if (in->n_preset_minutes < 1 || in->n_preset_minutes > 6)
        S_BAD ("preset_minutes", "give 1 to 6 values");
    for (size_t i = 0; i < in->n_preset_minutes; i++) {
        char field[48];
        snprintf (field, sizeof field, "preset_minutes[%zu]", i);
        if (in->preset_minutes[i] < 1 || in->preset_minutes[i] > 600)
            S_BAD (field, "must be between 1 and 600 minutes");
        for (size_t j = 0; j < i; j++)
            if (in->preset_minutes[j] == in->preset_minutes[i])
                S_BAD (field, "is a duplicate");
    }
    if (in->terms_url && *in->terms_url && strncmp (in->terms_url, "https://", 8) != 0 &&
        strncmp (in->terms_url, "http://", 7) != 0)
        S_BAD ("terms_url", "must be an http or https URL");
    if (in->default_call_per_minute < 0)
        S_BAD ("default_call_per_minute", "must be 0 or more");
    if (in->default_chat_per_minute < 0)
        S_BAD ("default_chat_per_minute", "must be 0 or more");
#undef S_BAD
    if (st) {
        protobuf_c_message_free_unpacked (&req->base, NULL);
        ppm_rpc_call_fail (&call, &st);
        return;
    }
    char before[64];
    char after[64];
    snprintf (before, sizeof before, "%s", S.currency);
    snprintf (S.currency, sizeof S.currency, "%s", in->currency);
    s_audit ("settings.currency", before, S.currency);
    snprintf (before, sizeof before, "%lld", (long long)S.default_call);
    S.default_call = in->default_call_per_minute;
    snprintf (after, sizeof after, "%lld", (long long)S.default_call);
    s_audit ("settings.default_call_per_minute", before, after);
    snprintf (before, sizeof before, "%lld", (long long)S.default_chat);
    S.default_chat = in->default_chat_per_minute;
    snprintf (after, sizeof after, "%lld", (long long)S.default_chat);
    s_audit ("settings.default_chat_per_minute", before, after);
    snprintf (before, sizeof before, "%s", S.enabled ? "true" : "false");
    S.enabled = in->enabled;
    s_audit ("settings.enabled", before, S.enabled ? "true" : "false");
    if (in->enable_for && *in->enable_for)
        snprintf (S.enable_for, sizeof S.enable_for, "%s", in->enable_for);
    if (in->rate_scope && *in->rate_scope)
        snprintf (S.rate_scope, sizeof S.rate_scope, "%s", in->rate_scope);
    snprintf (S.terms_url, sizeof S.terms_url, "%s", in->terms_url ? in->terms_url : "");
    char list_before[64] = "";
    char list_after[64] = "";
    for (size_t i = 0; i < S.n_presets; i++)
        snprintf (list_before + strlen (list_before), sizeof list_before - strlen (list_before),
                  "%s%lld", i ? "," : "", (long long)S.presets[i]);
    S.n_presets = in->n_preset_minutes;
    for (size_t i = 0; i < S.n_presets; i++) {
        S.presets[i] = in->preset_minutes[i];
        snprintf (list_after + strlen (list_after), sizeof list_after - strlen (list_after),
                  "%s%lld", i ? "," : "", (long long)S.presets[i]);
    }
    s_audit ("settings.preset_minutes", list_before, list_after);
    if (in->n_warning_marks_s <= 5) {
        S.n_marks = in->n_warning_marks_s;
        for (size_t i = 0; i < S.n_marks; i++)
            S.marks[i] = in->warning_marks_s[i];
    }
    if (in->max_minutes_per_purchase > 0)
        S.max_minutes = in->max_minutes_per_purchase;
    S.version++;
    protobuf_c_message_free_unpacked (&req->base, NULL);
    Ppm__V1__Settings out = PPM__V1__SETTINGS__INIT;
    s_settings_proto (&out);
    ppm_rpc_call_reply (&call, &out.base);
    Ppm__V1__ConfigChanged changed = PPM__V1__CONFIG_CHANGED__INIT;
    changed.tenant_id = (char *)S.tenant;
    changed.settings_version = S.version;
    changed.what = "settings";
    ppm_events_publish (S.pub, "config.changed", S.tenant, &changed.base);
}

static void
s_config (ppm_rpc_call_t *call, void *arg)
{
    (void)arg;
    const char *m = ppm_rpc_call_method (call);
    if (streq (m, "config.VerifyAdminKey")) {
        Ppm__V1__VerifyAdminKeyRequest *req =
            (Ppm__V1__VerifyAdminKeyRequest *)ppm_rpc_call_unpack (
                call, &ppm__v1__verify_admin_key_request__descriptor);
        bool ok = req && req->admin_key && streq (req->admin_key, S.admin_key);
        if (req)
            protobuf_c_message_free_unpacked (&req->base, NULL);
        Ppm__V1__VerifyAdminKeyReply reply = PPM__V1__VERIFY_ADMIN_KEY_REPLY__INIT;
        reply.tenant_id = (char *)S.tenant;
        reply.key_id = "demo";
        if (ok)
            ppm_rpc_call_reply (&call, &reply.base);
        else
            ppm_rpc_call_error (&call, PPM_UNAUTHENTICATED, "unknown admin key");
    } else if (streq (m, "config.GetUserTokenSecret")) {
        Ppm__V1__UserTokenSecret reply = PPM__V1__USER_TOKEN_SECRET__INIT;
        reply.secret = (char *)S.secret;
        if (streq (ppm_rpc_call_tenant (call), S.tenant))
            ppm_rpc_call_reply (&call, &reply.base);
        else
            ppm_rpc_call_error (&call, PPM_NOT_FOUND, "no such tenant");
    } else if (streq (m, "config.GetSettings")) {
        Ppm__V1__Settings out = PPM__V1__SETTINGS__INIT;
        s_settings_proto (&out);
        ppm_rpc_call_reply (&call, &out.base);
    } else if (streq (m, "config.PutSettings")) {
        s_put_settings (call);
    } else if (streq (m, "config.GetUserRates")) {
        Ppm__V1__GetUserRatesRequest *req = (Ppm__V1__GetUserRatesRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__get_user_rates_request__descriptor);
        s_rates_t *r = req ? s_rates_find (req->payee) : NULL;
        if (r) {
            Ppm__V1__UserRates out = PPM__V1__USER_RATES__INIT;
            out.payee = r->payee;
            out.call_set = r->call_set;
            out.call_per_minute = r->call;
            out.chat_set = r->chat_set;
            out.chat_per_minute = r->chat;
            ppm_rpc_call_reply (&call, &out.base);
        } else {
            ppm_rpc_call_error (&call, PPM_NOT_FOUND, "no individual rates");
        }
        if (req)
            protobuf_c_message_free_unpacked (&req->base, NULL);
    } else if (streq (m, "config.PutUserRates")) {
        Ppm__V1__PutUserRatesRequest *req = (Ppm__V1__PutUserRatesRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__put_user_rates_request__descriptor);
        if (!req || !req->rates) {
            if (req)
                protobuf_c_message_free_unpacked (&req->base, NULL);
            ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "rates are required");
            return;
        }
        s_rates_t *r = s_rates_find (req->rates->payee);
        if (!r && S.n_rates < S_MAX_RATES) {
            r = &S.rates[S.n_rates++];
            snprintf (r->payee, sizeof r->payee, "%s", req->rates->payee);
        }
        if (r) {
            r->call_set = req->rates->call_set;
            r->call = req->rates->call_per_minute;
            r->chat_set = req->rates->chat_set;
            r->chat = req->rates->chat_per_minute;
            char field[160];
            char value[64];
            snprintf (field, sizeof field, "user_rates.%s", r->payee);
            snprintf (value, sizeof value, "call=%lld chat=%lld", (long long)r->call,
                      (long long)r->chat);
            s_audit (field, "", value);
        }
        protobuf_c_message_free_unpacked (&req->base, NULL);
        Ppm__V1__PutRatesReply reply = PPM__V1__PUT_RATES_REPLY__INIT;
        reply.revision = ++S.version;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (m, "config.ListUserRates")) {
        Ppm__V1__UserRates items[S_MAX_RATES];
        Ppm__V1__UserRates *list[S_MAX_RATES];
        for (size_t i = 0; i < S.n_rates; i++) {
            ppm__v1__user_rates__init (&items[i]);
            items[i].payee = S.rates[i].payee;
            items[i].call_set = S.rates[i].call_set;
            items[i].call_per_minute = S.rates[i].call;
            items[i].chat_set = S.rates[i].chat_set;
            items[i].chat_per_minute = S.rates[i].chat;
            list[i] = &items[i];
        }
        Ppm__V1__ListUserRatesReply reply = PPM__V1__LIST_USER_RATES_REPLY__INIT;
        reply.rates = list;
        reply.n_rates = S.n_rates;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (m, "config.GetRoleRates")) {
        Ppm__V1__RoleRates r = PPM__V1__ROLE_RATES__INIT;
        Ppm__V1__RoleRates *list[] = {&r};
        r.role = S.role_name;
        r.call_set = S.role.call_set;
        r.call_per_minute = S.role.call;
        r.chat_set = S.role.chat_set;
        r.chat_per_minute = S.role.chat;
        Ppm__V1__RoleRatesList reply = PPM__V1__ROLE_RATES_LIST__INIT;
        reply.roles = list;
        reply.n_roles = S.role_set ? 1 : 0;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (m, "config.PutRoleRates")) {
        Ppm__V1__PutRoleRatesRequest *req = (Ppm__V1__PutRoleRatesRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__put_role_rates_request__descriptor);
        if (req && req->rates) {
            snprintf (S.role_name, sizeof S.role_name, "%s", req->rates->role);
            S.role.call_set = req->rates->call_set;
            S.role.call = req->rates->call_per_minute;
            S.role.chat_set = req->rates->chat_set;
            S.role.chat = req->rates->chat_per_minute;
            S.role_set = true;
        }
        if (req)
            protobuf_c_message_free_unpacked (&req->base, NULL);
        Ppm__V1__PutRatesReply reply = PPM__V1__PUT_RATES_REPLY__INIT;
        reply.revision = ++S.version;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (m, "config.ListAudit")) {
        Ppm__V1__AuditEntry items[S_MAX_AUDIT];
        Ppm__V1__AuditEntry *list[S_MAX_AUDIT];
        size_t n = 0;
        for (size_t i = S.n_audit; i-- > 0;) {
            ppm__v1__audit_entry__init (&items[n]);
            items[n].id = (int64_t)i + 1;
            items[n].at_ms = S.audit[i].at_ms;
            items[n].actor = "admin:demo";
            items[n].field = S.audit[i].field;
            items[n].old_value = S.audit[i].old_value;
            items[n].new_value = S.audit[i].new_value;
            list[n] = &items[n];
            n++;
        }
        Ppm__V1__ListAuditReply reply = PPM__V1__LIST_AUDIT_REPLY__INIT;
        reply.entries = list;
        reply.n_entries = n;
        ppm_rpc_call_reply (&call, &reply.base);
    } else {
        ppm_rpc_call_error (&call, PPM_UNIMPLEMENTED, "the stand-in does not offer %s", m);
    }
}

/* ---- rate ------------------------------------------------------------------ */

static void
s_rate (ppm_rpc_call_t *call, void *arg)
{
    (void)arg;
    Ppm__V1__QuoteRequest *req =
        (Ppm__V1__QuoteRequest *)ppm_rpc_call_unpack (call, &ppm__v1__quote_request__descriptor);
    if (!req || !req->payee || !req->kind) {
        if (req)
            protobuf_c_message_free_unpacked (&req->base, NULL);
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "payee and kind are required");
        return;
    }
    bool call_kind = streq (req->kind, "call");
    int64_t rate = call_kind ? S.default_call : S.default_chat;
    const char *source = "default";
    s_rates_t *r = s_rates_find (req->payee);
    if (streq (S.rate_scope, "individual") && r) {
        bool set = call_kind ? r->call_set : r->chat_set;
        rate = set ? (call_kind ? r->call : r->chat) : 0;
        source = "individual";
    }
    bool kind_on = streq (S.enable_for, "both") || streq (S.enable_for, req->kind);
    bool paid = S.enabled && kind_on && rate > 0;
    const ppm_currency_t *cur = ppm_currency_find (S.currency);
    Ppm__V1__QuotePreset items[6];
    Ppm__V1__QuotePreset *presets[6];
    Ppm__V1__Quote q = PPM__V1__QUOTE__INIT;
    char quote_id[40];
    snprintf (quote_id, sizeof quote_id, "q_%lld", (long long)ppm_clock_real_mono_us ());
    q.quote_id = quote_id;
    q.tenant_id = (char *)S.tenant;
    q.payee = req->payee;
    q.payer = req->payer;
    q.kind = req->kind;
    q.paid = paid;
    q.currency = S.currency;
    q.rounding = "minute";
    q.billing_mode = "prepaid";
    q.terms_url = S.terms_url;
    q.warning_marks_s = S.marks;
    q.n_warning_marks_s = S.n_marks;
    q.grace_s = 60;
    q.session_ttl_s = 3600;
    q.max_session_minutes = 600;
    q.max_concurrent_sessions = 3;
    q.settings_version = S.version;
    q.issued_at_ms = ppm_clock_now_ms ();
    q.stripe_mode = "test";
    q.rate_source = paid ? (char *)source : "free:off";
    if (paid) {
        q.rate_per_minute = rate;
        int64_t min = cur && rate > 0 ? (cur->min_charge + rate - 1) / rate : 1;
        q.min_minutes = min > 0 ? min : 1;
        q.max_minutes = S.max_minutes;
        for (size_t i = 0; i < S.n_presets; i++) {
            if (S.presets[i] < q.min_minutes || S.presets[i] > q.max_minutes)
                continue;
            ppm__v1__quote_preset__init (&items[q.n_presets]);
            items[q.n_presets].minutes = S.presets[i];
            ppm_money_total (rate, S.presets[i], &items[q.n_presets].amount);
            presets[q.n_presets] = &items[q.n_presets];
            q.n_presets++;
        }
        q.presets = presets;
    }
    ppm_rpc_call_reply (&call, &q.base);
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

/* ---- metering ------------------------------------------------------------- */

static void
s_reply_session (ppm_rpc_call_t **call_p, s_session_t *s)
{
    Ppm__V1__Session p = PPM__V1__SESSION__INIT;
    s_session_proto (s, &p, ppm_clock_now_ms ());
    Ppm__V1__SessionReply reply = PPM__V1__SESSION_REPLY__INIT;
    reply.session = &p;
    ppm_rpc_call_reply (call_p, &reply.base);
}

/* Moves an active session's used time up to now. */
static void
s_settle_clock (s_session_t *s, int64_t now)
{
    s->used_ms = s_used (s, now);
    s->last_change_ms = now;
}

static void
s_metering (ppm_rpc_call_t *call, void *arg)
{
    (void)arg;
    const char *m = ppm_rpc_call_method (call);
    int64_t now = ppm_clock_now_ms ();
    if (streq (m, "metering.Create")) {
        Ppm__V1__CreateRequest *req = (Ppm__V1__CreateRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__create_request__descriptor);
        if (!req || !req->quote || S.n_sessions >= S_MAX_SESSIONS) {
            if (req)
                protobuf_c_message_free_unpacked (&req->base, NULL);
            ppm_rpc_call_error (&call, PPM_RESOURCE_EXHAUSTED, "no more sessions");
            return;
        }
        s_session_t *s = &S.sessions[S.n_sessions++];
        memset (s, 0, sizeof *s);
        snprintf (s->id, sizeof s->id, "s%016llx", (unsigned long long)S.n_sessions);
        snprintf (s->payer, sizeof s->payer, "%s", req->payer);
        snprintf (s->payee, sizeof s->payee, "%s", req->payee);
        snprintf (s->kind, sizeof s->kind, "%s", req->kind);
        s->paid = req->quote->paid;
        s->rate = req->quote->rate_per_minute;
        s->state = s->paid ? PPM__V1__SESSION_STATE__SESSION_AWAITING_PAYMENT
                           : PPM__V1__SESSION_STATE__SESSION_ACTIVE;
        s->created_ms = now;
        s->last_change_ms = now;
        s->n_marks = req->quote->n_warning_marks_s < 8 ? req->quote->n_warning_marks_s : 8;
        for (size_t i = 0; i < s->n_marks; i++)
            s->marks[i] = req->quote->warning_marks_s[i];
        s->warned_below = INT64_MAX;
        protobuf_c_message_free_unpacked (&req->base, NULL);
        s_reply_session (&call, s);
        return;
    }
    if (streq (m, "metering.List")) {
        Ppm__V1__ListRequest *req =
            (Ppm__V1__ListRequest *)ppm_rpc_call_unpack (call, &ppm__v1__list_request__descriptor);
        Ppm__V1__Session items[S_MAX_SESSIONS];
        Ppm__V1__Session *list[S_MAX_SESSIONS];
        size_t n = 0;
        for (size_t i = S.n_sessions; i-- > 0;) {
            if (req && req->state && S.sessions[i].state != req->state)
                continue;
            ppm__v1__session__init (&items[n]);
            s_session_proto (&S.sessions[i], &items[n], now);
            list[n] = &items[n];
            n++;
        }
        if (req)
            protobuf_c_message_free_unpacked (&req->base, NULL);
        Ppm__V1__ListReply reply = PPM__V1__LIST_REPLY__INIT;
        reply.sessions = list;
        reply.n_sessions = n;
        ppm_rpc_call_reply (&call, &reply.base);
        return;
    }
    const ProtobufCMessageDescriptor *d = streq (m, "metering.End")
                                              ? &ppm__v1__end_request__descriptor
                                              : &ppm__v1__session_request__descriptor;
    ProtobufCMessage *msg = ppm_rpc_call_unpack (call, d);
    const char *id =
        msg ? (streq (m, "metering.End") ? ((Ppm__V1__EndRequest *)msg)->session_id
                                         : ((Ppm__V1__SessionRequest *)msg)->session_id)
            : NULL;
    s_session_t *s = s_session_find (id);
    if (msg)
        protobuf_c_message_free_unpacked (msg, NULL);
    if (!s) {
        ppm_rpc_call_error (&call, PPM_NOT_FOUND, "no such session");
        return;
    }
    if (streq (m, "metering.Get") || streq (m, "metering.Heartbeat")) {
        s_reply_session (&call, s);
    } else if (streq (m, "metering.End")) {
        bool already = s->state == PPM__V1__SESSION_STATE__SESSION_ENDED;
        if (!already) {
            s_settle_clock (s, now);
            s->state = PPM__V1__SESSION_STATE__SESSION_ENDED;
            s->ended_ms = now;
            s_publish (s, "session.ended", 0, 0);
        }
        Ppm__V1__Session p = PPM__V1__SESSION__INIT;
        s_session_proto (s, &p, now);
        Ppm__V1__EndReply reply = PPM__V1__END_REPLY__INIT;
        reply.session = &p;
        reply.used_ms = s->used_ms;
        int64_t minutes = (s->used_ms + 59999) / 60000;
        reply.billed_amount = s->paid ? minutes * s->rate : 0;
        if (reply.billed_amount > s->paid_amount)
            reply.billed_amount = s->paid_amount;
        reply.already_ended = already;
        ppm_rpc_call_reply (&call, &reply.base);
    } else {
        ppm_rpc_call_error (&call, PPM_UNIMPLEMENTED, "the stand-in does not offer %s", m);
    }
}

static int
s_tick (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    (void)arg;
    int64_t now = ppm_clock_now_ms ();
    for (size_t i = 0; i < S.n_sessions; i++) {
        s_session_t *s = &S.sessions[i];
        if (s->state != PPM__V1__SESSION_STATE__SESSION_ACTIVE || !s->paid)
            continue;
        int64_t left = s->funded_ms - s_used (s, now);
        if (left <= 0) {
            s_settle_clock (s, now);
            s->state = PPM__V1__SESSION_STATE__SESSION_EXPIRED;
            s->ended_ms = now;
            s_publish (s, "session.expired", 0, 0);
            continue;
        }
        /* the largest mark crossed and not warned yet */
        for (size_t k = 0; k < s->n_marks; k++) {
            int64_t mark_ms = s->marks[k] * 1000;
            if (left <= mark_ms && mark_ms < s->warned_below) {
                s->warned_below = mark_ms;
                s_publish (s, "session.warning", s->marks[k], 0);
                break;
            }
        }
    }
    return 0;
}

/* ---- payment ----------------------------------------------------------------- */

static s_payment_t *
s_payment_find (const char *id)
{
    for (size_t i = 0; i < S.n_payments; i++)
        if (streq (S.payments[i].id, id ? id : ""))
            return &S.payments[i];
    return NULL;
}

static void
s_fund (s_session_t *s, s_payment_t *p)
{
    int64_t now = ppm_clock_now_ms ();
    s_settle_clock (s, now);
    int64_t added = p->minutes * 60000;
    bool was_active = s->state == PPM__V1__SESSION_STATE__SESSION_ACTIVE;
    s->funded_ms += added;
    s->paid_amount += p->amount;
    s->state = PPM__V1__SESSION_STATE__SESSION_ACTIVE;
    /* warn again only for the marks still ahead of the new remaining time */
    int64_t left = s->funded_ms - s->used_ms;
    s->warned_below = INT64_MAX;
    for (size_t k = 0; k < s->n_marks; k++)
        if (s->marks[k] * 1000 >= left && s->marks[k] * 1000 < s->warned_below)
            s->warned_below = s->marks[k] * 1000;
    s_publish (s, was_active ? "session.extended" : "session.active", 0, added);
}

static void
s_payment (ppm_rpc_call_t *call, void *arg)
{
    (void)arg;
    const char *m = ppm_rpc_call_method (call);
    int64_t now = ppm_clock_now_ms ();
    if (streq (m, "payment.Checkout")) {
        Ppm__V1__CheckoutRequest *req = (Ppm__V1__CheckoutRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__checkout_request__descriptor);
        s_session_t *s = req ? s_session_find (req->session_id) : NULL;
        if (!s) {
            ppm_rpc_call_error (&call, PPM_NOT_FOUND, "no such session");
        } else if (!streq (s->payer, req->payer)) {
            ppm_rpc_call_error (&call, PPM_PERMISSION_DENIED, "another payer's session");
        } else if (!req->accept_terms) {
            ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "terms not accepted");
            ppm_status_add_field (st, "accept_terms", "the terms must be accepted");
            ppm_rpc_call_fail (&call, &st);
        } else if (req->minutes < 1 || req->minutes > S.max_minutes) {
            ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "minutes out of range");
            ppm_status_add_field (st, "minutes", "must be between 1 and %lld",
                                  (long long)S.max_minutes);
            ppm_rpc_call_fail (&call, &st);
        } else if (s->state == PPM__V1__SESSION_STATE__SESSION_ENDED ||
                   S.n_payments >= S_MAX_PAYMENTS) {
            ppm_rpc_call_error (&call, PPM_FAILED_PRECONDITION, "the session has ended");
        } else {
            s_payment_t *p = &S.payments[S.n_payments++];
            memset (p, 0, sizeof *p);
            snprintf (p->id, sizeof p->id, "pay_%zu", S.n_payments);
            snprintf (p->session, sizeof p->session, "%s", s->id);
            snprintf (p->payer, sizeof p->payer, "%s", s->payer);
            snprintf (p->payee, sizeof p->payee, "%s", s->payee);
            p->minutes = req->minutes;
            ppm_money_total (s->rate, req->minutes, &p->amount);
            p->state = PPM__V1__PAYMENT_STATE__PAYMENT_PENDING;
            p->created_ms = now;
            p->updated_ms = now;
            char secret[64];
            snprintf (secret, sizeof secret, "pi_%s_secret_standin", p->id);
            Ppm__V1__CheckoutReply reply = PPM__V1__CHECKOUT_REPLY__INIT;
            reply.payment_id = p->id;
            reply.client_secret = secret;
            reply.amount = p->amount;
            reply.currency = S.currency;
            reply.minutes = p->minutes;
            reply.state = p->state;
            reply.publishable_key = "pk_test_standin";
            ppm_rpc_call_reply (&call, &reply.base);
        }
        if (req)
            protobuf_c_message_free_unpacked (&req->base, NULL);
    } else if (streq (m, "payment.Confirm")) {
        Ppm__V1__ConfirmRequest *req = (Ppm__V1__ConfirmRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__confirm_request__descriptor);
        s_payment_t *p = req ? s_payment_find (req->payment_id) : NULL;
        s_session_t *s = p ? s_session_find (p->session) : NULL;
        if (!p || !s || !streq (p->payer, req->payer)) {
            ppm_rpc_call_error (&call, PPM_NOT_FOUND, "no such payment");
        } else if (p->state == PPM__V1__PAYMENT_STATE__PAYMENT_SUCCEEDED) {
            Ppm__V1__ConfirmReply reply = PPM__V1__CONFIRM_REPLY__INIT;
            reply.payment_id = p->id;
            reply.state = p->state;
            reply.amount = p->amount;
            reply.currency = S.currency;
            ppm_rpc_call_reply (&call, &reply.base);
        } else {
            const char *pm = req->payment_method ? req->payment_method : "";
            const char *decline = NULL;
            if (streq (pm, "pm_card_chargeDeclined"))
                decline = "generic_decline";
            else if (streq (pm, "pm_card_chargeDeclinedInsufficientFunds"))
                decline = "insufficient_funds";
            Ppm__V1__PaymentEvent e = PPM__V1__PAYMENT_EVENT__INIT;
            e.payment_id = p->id;
            e.session_id = p->session;
            e.payer = p->payer;
            e.payee = p->payee;
            e.minutes = p->minutes;
            e.amount = p->amount;
            e.currency = S.currency;
            e.at_ms = now;
            p->updated_ms = now;
            if (decline) {
                p->state = PPM__V1__PAYMENT_STATE__PAYMENT_FAILED;
                snprintf (p->failure_code, sizeof p->failure_code, "%s", decline);
                snprintf (p->failure_message, sizeof p->failure_message, "%s",
                          streq (decline, "insufficient_funds")
                              ? "Your card has insufficient funds."
                              : "Your card was declined.");
                e.state = p->state;
                e.failure_code = p->failure_code;
                e.failure_message = p->failure_message;
                ppm_events_publish (S.pub, "payment.failed", S.tenant, &e.base);
                ppm_status_t *st = ppm_status_new (PPM_FAILED_PRECONDITION, "card_declined: %s",
                                                   p->failure_message);
                ppm_status_add_field (st, "decline_code", "%s", decline);
                ppm_rpc_call_fail (&call, &st);
            } else if (streq (pm, "pm_card_authenticationRequired")) {
                p->state = PPM__V1__PAYMENT_STATE__PAYMENT_REQUIRES_ACTION;
                Ppm__V1__ConfirmReply reply = PPM__V1__CONFIRM_REPLY__INIT;
                reply.payment_id = p->id;
                reply.state = p->state;
                reply.client_secret = "pi_secret_standin";
                reply.amount = p->amount;
                reply.currency = S.currency;
                ppm_rpc_call_reply (&call, &reply.base);
            } else {
                p->state = PPM__V1__PAYMENT_STATE__PAYMENT_SUCCEEDED;
                e.state = p->state;
                Ppm__V1__ConfirmReply reply = PPM__V1__CONFIRM_REPLY__INIT;
                reply.payment_id = p->id;
                reply.state = p->state;
                reply.amount = p->amount;
                reply.currency = S.currency;
                ppm_rpc_call_reply (&call, &reply.base);
                ppm_events_publish (S.pub, "payment.succeeded", S.tenant, &e.base);
                s_fund (s, p);
            }
        }
        if (req)
            protobuf_c_message_free_unpacked (&req->base, NULL);
    } else if (streq (m, "payment.List")) {
        Ppm__V1__Payment items[S_MAX_PAYMENTS];
        Ppm__V1__Payment *list[S_MAX_PAYMENTS];
        size_t n = 0;
        for (size_t i = S.n_payments; i-- > 0;) {
            s_payment_t *p = &S.payments[i];
            ppm__v1__payment__init (&items[n]);
            items[n].payment_id = p->id;
            items[n].tenant_id = (char *)S.tenant;
            items[n].session_id = p->session;
            items[n].payer = p->payer;
            items[n].payee = p->payee;
            items[n].minutes = p->minutes;
            items[n].amount = p->amount;
            items[n].currency = S.currency;
            items[n].state = p->state;
            items[n].captured =
                p->state == PPM__V1__PAYMENT_STATE__PAYMENT_SUCCEEDED ? p->amount : 0;
            items[n].failure_code = p->failure_code;
            items[n].failure_message = p->failure_message;
            items[n].created_at_ms = p->created_ms;
            items[n].updated_at_ms = p->updated_ms;
            items[n].terms_url = S.terms_url;
            list[n] = &items[n];
            n++;
        }
        Ppm__V1__ListPaymentsReply reply = PPM__V1__LIST_PAYMENTS_REPLY__INIT;
        reply.payments = list;
        reply.n_payments = n;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (m, "payment.ExportCsv")) {
        zchunk_t *csv = zchunk_new (NULL, 1024);
        const char *head = "payment_id,session_id,payer,payee,minutes,amount,currency,state\n";
        zchunk_extend (csv, head, strlen (head));
        for (size_t i = S.n_payments; i-- > 0;) {
            s_payment_t *p = &S.payments[i];
            char line[512];
            int len = snprintf (line, sizeof line, "%s,%s,%s,%s,%lld,%lld,%s,%d\n", p->id,
                                p->session, p->payer, p->payee, (long long)p->minutes,
                                (long long)p->amount, S.currency, (int)p->state);
            zchunk_extend (csv, line, (size_t)len);
        }
        Ppm__V1__ExportCsvReply reply = PPM__V1__EXPORT_CSV_REPLY__INIT;
        reply.csv.data = zchunk_data (csv);
        reply.csv.len = zchunk_size (csv);
        ppm_rpc_call_reply (&call, &reply.base);
        zchunk_destroy (&csv);
    } else if (streq (m, "payment.Earnings")) {
        Ppm__V1__PayeeEarnings items[S_MAX_RATES];
        Ppm__V1__PayeeEarnings *list[S_MAX_RATES];
        size_t n = 0;
        for (size_t i = 0; i < S.n_payments; i++) {
            s_payment_t *p = &S.payments[i];
            if (p->state != PPM__V1__PAYMENT_STATE__PAYMENT_SUCCEEDED)
                continue;
            size_t k = 0;
            while (k < n && !streq (items[k].payee, p->payee))
                k++;
            if (k == n) {
                if (n == S_MAX_RATES)
                    continue;
                ppm__v1__payee_earnings__init (&items[n]);
                items[n].payee = p->payee;
                items[n].currency = S.currency;
                list[n] = &items[n];
                n++;
            }
            items[k].payments++;
            items[k].minutes += p->minutes;
            items[k].charged += p->amount;
            items[k].net += p->amount;
        }
        Ppm__V1__EarningsReply reply = PPM__V1__EARNINGS_REPLY__INIT;
        reply.payees = list;
        reply.n_payees = n;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (m, "payment.Webhook")) {
        Ppm__V1__WebhookReply reply = PPM__V1__WEBHOOK_REPLY__INIT;
        reply.event_id = "evt_standin";
        reply.ignored = true;
        ppm_rpc_call_reply (&call, &reply.base);
    } else {
        ppm_rpc_call_error (&call, PPM_UNIMPLEMENTED, "the stand-in does not offer %s", m);
    }
}

int
main (void)
{
    char *ep[5] = {NULL};
    char *tenant = NULL;
    char *admin_key = NULL;
    char *secret = NULL;
    ppm_env_t env[] = {
        {"PPM_CONFIG_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7101", .out = &ep[0]},
        {"PPM_RATE_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7111", .out = &ep[1]},
        {"PPM_PAYMENT_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7121", .out = &ep[2]},
        {"PPM_METERING_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7131", .out = &ep[3]},
        {"PPM_STANDIN_EVENTS", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7132", .out = &ep[4]},
        {"PPM_STANDIN_TENANT", PPM_ENV_STRING, .def = "t_demo", .out = &tenant},
        {"PPM_STANDIN_ADMIN_KEY", PPM_ENV_STRING, .def = "ppmak_demo", .secret = true,
         .out = &admin_key},
        {"PPM_STANDIN_USER_SECRET", PPM_ENV_STRING, .def = "demo-user-token-secret", .secret = true,
         .out = &secret},
        {NULL}};
    ppm_log_init ("standin");
    const char *error = NULL;
    if (ppm_env_load (env, &error) || ppm_clock_init (&error)) {
        fprintf (stderr, "ppm-standin: %s\n", error);
        return 1;
    }
    S.tenant = tenant;
    S.admin_key = admin_key;
    S.secret = secret;
    S.version = 1;
    S.enabled = true;
    snprintf (S.enable_for, sizeof S.enable_for, "both");
    snprintf (S.rate_scope, sizeof S.rate_scope, "individual");
    S.default_call = 300;
    S.default_chat = 150;
    snprintf (S.currency, sizeof S.currency, "USD");
    snprintf (S.terms_url, sizeof S.terms_url, "https://example.com/terms");
    S.presets[0] = 10;
    S.presets[1] = 30;
    S.presets[2] = 45;
    S.n_presets = 3;
    S.marks[0] = 300;
    S.marks[1] = 60;
    S.marks[2] = 10;
    S.n_marks = 3;
    S.max_minutes = 120;

    zloop_t *loop = zloop_new ();
    ppm_rpc_handler_fn *handlers[4] = {s_config, s_rate, s_payment, s_metering};
    const char *methods[4][16] = {
        {"config.VerifyAdminKey", "config.GetUserTokenSecret", "config.GetSettings",
         "config.PutSettings", "config.GetUserRates", "config.PutUserRates", "config.ListUserRates",
         "config.GetRoleRates", "config.PutRoleRates", "config.ListAudit", NULL},
        {"rate.Quote", NULL},
        {"payment.Checkout", "payment.Confirm", "payment.List", "payment.ExportCsv",
         "payment.Earnings", "payment.Webhook", NULL},
        {"metering.Create", "metering.Get", "metering.Heartbeat", "metering.End", "metering.List",
         NULL}};
    ppm_rpc_server_t *servers[4];
    for (int i = 0; i < 4; i++) {
        servers[i] = ppm_rpc_server_new (loop, ep[i]);
        if (!servers[i]) {
            fprintf (stderr, "ppm-standin: cannot bind %s\n", ep[i]);
            return 1;
        }
        for (int k = 0; methods[i][k]; k++)
            ppm_rpc_server_handle (servers[i], methods[i][k], handlers[i], NULL);
    }
    S.pub = ppm_events_pub_new (ep[4]);
    if (!S.pub) {
        fprintf (stderr, "ppm-standin: cannot bind %s\n", ep[4]);
        return 1;
    }
    zloop_timer (loop, 100, 0, s_tick, NULL);
    /* SIGTERM/SIGINT: czmq's handler sets zsys_interrupted; zloop returns */
    ppm_log_info ("stand-in services ready for tenant %s", S.tenant);
    zloop_start (loop);
    for (int i = 0; i < 4; i++)
        ppm_rpc_server_destroy (&servers[i]);
    ppm_events_pub_destroy (&S.pub);
    zloop_destroy (&loop);
    ppm_env_free (env);
    return 0;
}
