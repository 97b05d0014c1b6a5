/*  payment_server: the payment service actor. See payment_server.h.

    Each RPC that needs Stripe or another service is a small chain of
    callbacks over one heap context (s_checkout_t, s_confirm_t, …); the
    context owns the RPC call until it replies. Every Stripe POST carries an
    idempotency key made from our payment id ("ppm-<payment_id>-create"),
    so the reconciliation job can repeat a call whose answer was lost —
    after a timeout or a crash — and get Stripe's first answer back instead
    of a second charge. Ledger changes go through payment_ledger_apply,
    whose state machine makes repeated and out-of-order facts harmless.
*/
#include "payment_server.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <sodium.h>
#include <string.h>
#include "ppm_clock.h"
#include "ppm_events.h"
#include "ppm_form.h"
#include "ppm_log.h"
#include "ppm_metrics.h"
#include "ppm_money.h"
#include "ppm_pg.h"
#include "ppm_rpc.h"
#include "ppm_stripe_sig.h"
#include "payment_ledger.h"
#include "payment_stripe.h"
#include "proto/config.pb-c.h"
#include "proto/metering.pb-c.h"
#include "proto/payment.pb-c.h"

#define S_REAL_STRIPE  "https://api.stripe.com"
#define S_OUTBOX_BATCH 64
#define S_MAX_MINUTES  100000
#define S_WEBHOOK_MAX  (512 * 1024)
#define S_ID_MAX       64

typedef struct _s_self_t s_self_t;

/* ---- tenant keys and settings (cached) ------------------------------------- */

typedef void (s_tenant_fn) (s_self_t *self, const ppm_status_t *status, void *arg);

typedef struct {
    s_tenant_fn *fn;
    void *arg;
} s_waiter_t;

typedef struct {
    char tenant_id[80];
    bool valid;         /* fetched and usable */
    int64_t fetched_ms; /* real ms */
    bool fetching;      /* an RPC is under way */
    zlistx_t *waiters;  /* s_waiter_t * */
    char mode[8];       /* "test" | "live" */
    char secret_key[256];
    char restricted_key[256];
    char publishable_key[256];
    char webhook_secret[256];
    char terms_url[2056];
    int64_t max_minutes_per_purchase;
} s_tenant_t;

struct _s_self_t {
    zsock_t *pipe; /* actor pipe */
    zloop_t *loop;
    payment_config_t config; /* strings below are owned copies */
    char *strings[8];        /* owned copies of config strings */
    ppm_rpc_server_t *server;
    ppm_events_pub_t *pub;
    ppm_events_sub_t *config_sub; /* config.changed (may be NULL) */
    ppm_rpc_client_t *config_rpc;
    ppm_rpc_client_t *metering;
    ppm_pg_t *pg;
    payment_stripe_t *stripe;
    zhashx_t *tenants;     /* tenant id -> s_tenant_t * */
    zhashx_t *outbox_busy; /* payment ids whose Fund is in flight */
    zhashx_t *settling;    /* "<tenant>/<session>" of settlements in flight */
    int outbox_timer;
    int reconcile_timer;
    int64_t gauges_at_ms;          /* when the gauges were last refreshed */
    ppm_counter_t *m_webhooks;     /* ppm_webhooks_received_total{type} */
    ppm_counter_t *m_webhooks_bad; /* ppm_webhooks_rejected_total{reason} */
    ppm_counter_t *m_webhooks_dup; /* ppm_webhooks_duplicate_total */
    ppm_counter_t *m_payments;     /* ppm_payments_total{state,currency} */
    ppm_gauge_t *m_pending;        /* ppm_payments_pending */
    ppm_counter_t *m_charged;      /* ppm_charged_minor_total{tenant,currency} */
    ppm_counter_t *m_refunded;     /* ppm_refunded_minor_total{tenant,currency} */
    ppm_gauge_t *m_outbox;         /* ppm_outbox_pending */
    bool reconcile_running;
};

static void
s_tenant_free (void **item)
{
    s_tenant_t *t = (s_tenant_t *)*item;
    if (t) {
        zlistx_destroy (&t->waiters);
        sodium_memzero (t, sizeof *t);
        free (t);
    }
    *item = NULL;
}

static bool
s_key_matches_mode (const char *key, const char *mode)
{
    if (!key || !*key)
        return true;
    if (strcmp (mode, "live") == 0)
        return strncmp (key, "sk_live_", 8) == 0 || strncmp (key, "rk_live_", 8) == 0;
    return strncmp (key, "sk_test_", 8) == 0 || strncmp (key, "rk_test_", 8) == 0;
}

/* Which key to use: the restricted key can do customers, intents and
   checkout; refunds and reads of events/charges need the secret key. */
static const char *
s_key (const s_tenant_t *t, bool needs_secret)
{
    if (!needs_secret && t->restricted_key[0])
        return t->restricted_key;
    return t->secret_key[0] ? t->secret_key : t->restricted_key;
}

/* NULL when the tenant may use Stripe now; else a status to answer. */
static ppm_status_t *
s_tenant_usable (s_self_t *self, const s_tenant_t *t)
{
    if (strcmp (t->mode, "test") != 0 && strcmp (t->mode, "live") != 0) {
        ppm_status_t *st = ppm_status_new (PPM_FAILED_PRECONDITION, "Stripe mode is not set");
        ppm_status_add_field (st, "stripe_mode", "must be test or live");
        return st;
    }
    if (!t->secret_key[0] && !t->restricted_key[0]) {
        ppm_status_t *st =
            ppm_status_new (PPM_FAILED_PRECONDITION, "the tenant has no Stripe key configured");
        ppm_status_add_field (st, "stripe_secret_key", "required");
        return st;
    }
    if (!s_key_matches_mode (t->secret_key, t->mode) ||
        !s_key_matches_mode (t->restricted_key, t->mode)) {
        ppm_status_t *st = ppm_status_new (PPM_FAILED_PRECONDITION,
                                           "a Stripe key does not match the %s mode", t->mode);
        ppm_status_add_field (st, "stripe_secret_key", "must start with sk_%s_ / rk_%s_", t->mode,
                              t->mode);
        return st;
    }
    if (strcmp (t->mode, "live") == 0) {
        if (strcmp (self->config.stripe_api_base, S_REAL_STRIPE) != 0)
            return ppm_status_new (PPM_FAILED_PRECONDITION,
                                   "live mode is refused: PPM_STRIPE_API_BASE is not Stripe "
                                   "(the emulator is test-only)");
        if (ppm_clock_scale () != 1)
            return ppm_status_new (PPM_FAILED_PRECONDITION,
                                   "live mode is refused while PPM_TIME_SCALE is not 1");
    }
    return NULL;
}

static void
s_tenant_finish (s_self_t *self, s_tenant_t *t, const ppm_status_t *status)
{
    t->fetching = false;
    zlistx_t *waiters = t->waiters;
    t->waiters = zlistx_new ();
    s_waiter_t *w;
    while ((w = (s_waiter_t *)zlistx_first (waiters)) != NULL) {
        zlistx_delete (waiters, zlistx_cursor (waiters));
        w->fn (self, status, w->arg);
        free (w);
    }
    zlistx_destroy (&waiters);
}

typedef struct {
    s_self_t *self;
    char tenant_id[80];
} s_tenant_call_t;

static void
s_on_settings (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    s_tenant_call_t *tc = (s_tenant_call_t *)arg;
    s_self_t *self = tc->self;
    s_tenant_t *t = (s_tenant_t *)zhashx_lookup (self->tenants, tc->tenant_id);
    free (tc);
    if (!t)
        return;
    if (status) {
        s_tenant_finish (self, t, status);
        return;
    }
    Ppm__V1__Settings *s = ppm__v1__settings__unpack (NULL, size, payload);
    if (!s) {
        ppm_status_t *st = ppm_status_new (PPM_INTERNAL, "config answered malformed settings");
        s_tenant_finish (self, t, st);
        ppm_status_destroy (&st);
        return;
    }
    snprintf (t->terms_url, sizeof t->terms_url, "%s", s->terms_url);
    t->max_minutes_per_purchase = s->max_minutes_per_purchase;
    ppm__v1__settings__free_unpacked (s, NULL);
    t->valid = true;
    t->fetched_ms = ppm_clock_real_ms ();
    s_tenant_finish (self, t, NULL);
}

static void
s_on_secrets (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    s_tenant_call_t *tc = (s_tenant_call_t *)arg;
    s_self_t *self = tc->self;
    s_tenant_t *t = (s_tenant_t *)zhashx_lookup (self->tenants, tc->tenant_id);
    if (!t) {
        free (tc);
        return;
    }
    if (status) {
        free (tc);
        s_tenant_finish (self, t, status);
        return;
    }
    Ppm__V1__Secrets *s = ppm__v1__secrets__unpack (NULL, size, payload);
    if (!s) {
        free (tc);
        ppm_status_t *st = ppm_status_new (PPM_INTERNAL, "config answered malformed secrets");
        s_tenant_finish (self, t, st);
        ppm_status_destroy (&st);
        return;
    }
    snprintf (t->mode, sizeof t->mode, "%s", s->stripe_mode);
    snprintf (t->secret_key, sizeof t->secret_key, "%s", s->stripe_secret_key);
    snprintf (t->restricted_key, sizeof t->restricted_key, "%s", s->stripe_restricted_key);
    snprintf (t->publishable_key, sizeof t->publishable_key, "%s", s->stripe_publishable_key);
    snprintf (t->webhook_secret, sizeof t->webhook_secret, "%s", s->stripe_webhook_secret);
    ppm__v1__secrets__free_unpacked (s, NULL);
    Ppm__V1__GetSettingsRequest req = PPM__V1__GET_SETTINGS_REQUEST__INIT;
    req.tenant_id = t->tenant_id;
    ppm_rpc_req_t rr = {.method = "config.GetSettings", .tenant = t->tenant_id, .idempotent = true};
    if (ppm_rpc_client_call (self->config_rpc, &rr, &req.base, s_on_settings, tc) != 0) {
        free (tc);
        ppm_status_t *st = ppm_status_new (PPM_UNAVAILABLE, "config unreachable");
        s_tenant_finish (self, t, st);
        ppm_status_destroy (&st);
    }
}

/* Calls fn with the tenant's keys and settings (cached), now or later. */
static void
s_tenant_get (s_self_t *self, const char *tenant_id, s_tenant_fn *fn, void *arg)
{
    s_tenant_t *t = (s_tenant_t *)zhashx_lookup (self->tenants, tenant_id);
    if (!t) {
        t = (s_tenant_t *)zmalloc (sizeof (s_tenant_t));
        snprintf (t->tenant_id, sizeof t->tenant_id, "%s", tenant_id);
        t->waiters = zlistx_new ();
        zhashx_insert (self->tenants, tenant_id, t);
    }
    if (t->valid && ppm_clock_real_ms () - t->fetched_ms < self->config.tenant_cache_ms) {
        fn (self, NULL, arg);
        return;
    }
    s_waiter_t *w = (s_waiter_t *)zmalloc (sizeof (s_waiter_t));
    w->fn = fn;
    w->arg = arg;
    zlistx_add_end (t->waiters, w);
    if (t->fetching)
        return;
    t->fetching = true;
    s_tenant_call_t *tc = (s_tenant_call_t *)zmalloc (sizeof (s_tenant_call_t));
    tc->self = self;
    snprintf (tc->tenant_id, sizeof tc->tenant_id, "%s", tenant_id);
    Ppm__V1__GetSecretsRequest req = PPM__V1__GET_SECRETS_REQUEST__INIT;
    req.tenant_id = t->tenant_id;
    ppm_rpc_req_t rr = {.method = "config.GetSecrets", .tenant = t->tenant_id, .idempotent = true};
    if (ppm_rpc_client_call (self->config_rpc, &rr, &req.base, s_on_secrets, tc) != 0) {
        free (tc);
        ppm_status_t *st = ppm_status_new (PPM_UNAVAILABLE, "config unreachable");
        s_tenant_finish (self, t, st);
        ppm_status_destroy (&st);
    }
}

static s_tenant_t *
s_tenant (s_self_t *self, const char *tenant_id)
{
    return (s_tenant_t *)zhashx_lookup (self->tenants, tenant_id);
}

static void
s_on_config_changed (const ppm_event_t *event, void *arg)
{
    s_self_t *self = (s_self_t *)arg;
    s_tenant_t *t = s_tenant (self, event->tenant_id);
    if (t)
        t->valid = false;
}

/* ---- helpers ------------------------------------------------------------------ */

static Ppm__V1__PaymentState
s_proto_state (payment_state_t state)
{
    return (Ppm__V1__PaymentState)state; /* numbered alike */
}

static void
s_to_proto (const payment_row_t *row, Ppm__V1__Payment *p)
{
    ppm__v1__payment__init (p);
    p->payment_id = (char *)row->payment_id;
    p->tenant_id = (char *)row->tenant_id;
    p->session_id = (char *)row->session_id;
    p->payer = (char *)row->payer;
    p->payee = (char *)row->payee;
    p->minutes = row->minutes;
    p->amount = row->amount;
    p->currency = (char *)row->currency;
    p->rate_per_minute = row->rate_per_minute;
    p->billing_mode = strcmp (row->billing_mode, "authorize") == 0
                          ? PPM__V1__PAYMENT_BILLING_MODE__PAYMENT_BILLING_AUTHORIZE
                          : PPM__V1__PAYMENT_BILLING_MODE__PAYMENT_BILLING_PREPAID;
    p->state = s_proto_state (row->state);
    p->captured = row->captured;
    p->refunded = row->refunded;
    p->stripe_payment_intent = (char *)row->payment_intent;
    p->stripe_checkout_session = (char *)row->checkout_session;
    p->stripe_customer = (char *)row->customer;
    p->disputed = row->disputed;
    p->failure_code = (char *)row->failure_code;
    p->failure_message = (char *)row->failure_message;
    p->funded = row->funded;
    p->created_at_ms = row->created_at_ms;
    p->updated_at_ms = row->updated_at_ms;
    p->flow = strcmp (row->flow, "hosted") == 0
                  ? PPM__V1__PAYMENT_FLOW__PAYMENT_FLOW_HOSTED
                  : PPM__V1__PAYMENT_FLOW__PAYMENT_FLOW_PAYMENT_INTENT;
    p->terms_url = (char *)row->terms_url;
    p->terms_accepted_at_ms = row->terms_accepted_at_ms;
}

static void
s_publish (s_self_t *self, const char *name, const payment_row_t *row, const char *dispute_id,
           const char *dispute_reason)
{
    Ppm__V1__PaymentEvent ev = PPM__V1__PAYMENT_EVENT__INIT;
    ev.payment_id = (char *)row->payment_id;
    ev.session_id = (char *)row->session_id;
    ev.payer = (char *)row->payer;
    ev.payee = (char *)row->payee;
    ev.minutes = row->minutes;
    ev.amount = row->amount;
    ev.currency = (char *)row->currency;
    ev.state = s_proto_state (row->state);
    ev.failure_code = (char *)row->failure_code;
    ev.failure_message = (char *)row->failure_message;
    ev.dispute_id = (char *)(dispute_id ? dispute_id : "");
    ev.dispute_reason = (char *)(dispute_reason ? dispute_reason : "");
    ev.at_ms = ppm_clock_now_ms ();
    ppm_events_publish (self->pub, name, row->tenant_id, &ev.base);
    ppm_log_kv (PPM_LOG_INFO, name, "payment_id", row->payment_id, "session_id", row->session_id,
                "state", payment_state_name (row->state), PPM_LOG_END);
}

static void s_outbox_pump (s_self_t *self);

/* Events that follow a ledger change. */
static void
s_after_change (s_self_t *self, const payment_row_t *after)
{
    payment_state_t from = after->previous;
    payment_state_t to = after->state;
    if (from == to)
        return;
    ppm_counter_inc (self->m_payments, 1, payment_state_name (to), after->currency);
    if (to == PAYMENT_ST_SUCCEEDED && after->captured > 0)
        ppm_counter_inc (self->m_charged, (uint64_t)after->captured, after->tenant_id,
                         after->currency);
    bool was_paid = from == PAYMENT_ST_AUTHORIZED || from == PAYMENT_ST_SUCCEEDED ||
                    from == PAYMENT_ST_REFUNDED;
    if ((to == PAYMENT_ST_AUTHORIZED || to == PAYMENT_ST_SUCCEEDED) && !was_paid) {
        s_publish (self, "payment.succeeded", after, NULL, NULL);
        s_outbox_pump (self);
    } else if (to == PAYMENT_ST_FAILED)
        s_publish (self, "payment.failed", after, NULL, NULL);
    else if (to == PAYMENT_ST_REFUNDED)
        s_publish (self, "payment.refunded", after, NULL, NULL);
}

/* Our state for a Stripe PaymentIntent. */
static payment_state_t
s_state_of_pi (const payment_stripe_pi_t *pi)
{
    const char *s = pi->status;
    if (strcmp (s, "succeeded") == 0)
        return PAYMENT_ST_SUCCEEDED;
    if (strcmp (s, "requires_capture") == 0)
        return PAYMENT_ST_AUTHORIZED;
    if (strcmp (s, "canceled") == 0)
        return PAYMENT_ST_CANCELED;
    if (strcmp (s, "requires_action") == 0)
        return PAYMENT_ST_REQUIRES_ACTION;
    if (strcmp (s, "requires_payment_method") == 0 && pi->last_error.type[0])
        return PAYMENT_ST_FAILED;
    return PAYMENT_ST_PENDING;
}

/* Applies what Stripe says about a PaymentIntent to our payment. */
static ppm_pg_result_t
s_apply_pi (s_self_t *self, const char *tenant, const char *payment_id,
            const payment_stripe_pi_t *pi, const char *cause, const char *request_id,
            const char *event_id, payment_row_t *after)
{
    payment_change_t ch = PAYMENT_CHANGE_INIT;
    ch.cause = cause;
    ch.request_id = request_id;
    ch.event_id = event_id;
    ch.payment_intent = pi->id;
    if (pi->client_secret[0])
        ch.client_secret = pi->client_secret;
    payment_state_t to = s_state_of_pi (pi);
    if (to == PAYMENT_ST_SUCCEEDED)
        ch.captured = pi->amount_received;
    if (to == PAYMENT_ST_FAILED) {
        ch.failure_code =
            pi->last_error.decline_code[0] ? pi->last_error.decline_code : pi->last_error.code;
        ch.failure_message = pi->last_error.message;
    }
    bool changed = false;
    ppm_pg_result_t rc =
        payment_ledger_apply (self->pg, tenant, payment_id, to, &ch, &changed, after);
    /* A capture after an authorization ends as SUCCEEDED; a refund seen
       on the intent is handled by charge.refunded. */
    if (rc == PPM_PG_OK && changed)
        s_after_change (self, after);
    return rc;
}

static void
s_idem_key (char *out, size_t size, const char *payment_id, const char *what)
{
    snprintf (out, size, "ppm-%s-%s", payment_id, what);
}

static void
s_record_call (s_self_t *self, const char *tenant, const char *payment_id, const char *what,
               const char *key, const payment_stripe_result_t *r)
{
    payment_ledger_stripe_call (self->pg, tenant, payment_id, what, key, r->http_status,
                                r->request_id, r->replayed);
}

/* Fails a call with a Stripe outcome, declines distinguishable. */
static void
s_fail_stripe (ppm_rpc_call_t **call_p, const payment_stripe_result_t *r)
{
    ppm_status_t *st = NULL;
    if (r->err == PAYMENT_STRIPE_DECLINED) {
        const payment_stripe_error_t *e = r->error;
        const char *decline = e && e->decline_code[0] ? e->decline_code
                              : e && e->code[0]       ? e->code
                                                      : "card_declined";
        st = ppm_status_new (PPM_FAILED_PRECONDITION, "card_declined: %s: %s", decline,
                             e && e->message[0] ? e->message : "the card was declined");
        ppm_status_add_field (st, "decline_code", "%s", decline);
    } else
        st = ppm_status_new (payment_stripe_code (r->err), "Stripe: %s%s%s",
                             payment_stripe_strerror (r->err), r->detail[0] ? ": " : "", r->detail);
    ppm_rpc_call_fail (call_p, &st);
}

static int
s_form_send (s_self_t *self, const char *method, const char *path, ppm_form_t **form_p,
             const char *key, const char *idem, payment_stripe_fn *fn, void *arg)
{
    char *body = NULL;
    if (form_p && *form_p) {
        body = ppm_form_encode (*form_p, NULL);
        ppm_form_destroy (form_p);
        if (!body)
            return -1;
    }
    int rc = self->stripe
                 ? payment_stripe_request (self->stripe, method, path, body, key, idem, fn, arg)
                 : -1; /* shutting down */
    free (body);
    return rc;
}

static void
s_lower (char *out, size_t size, const char *in)
{
    size_t i = 0;
    for (; in[i] && i + 1 < size; i++)
        out[i] = (char)((in[i] >= 'A' && in[i] <= 'Z') ? in[i] + 32 : in[i]);
    out[i] = '\0';
}

static void
s_add_metadata (ppm_form_t *form, const payment_row_t *row, const char *prefix)
{
    char key[96];
    char minutes[24];
    snprintf (minutes, sizeof minutes, "%" PRId64, row->minutes);
    const char *pairs[][2] = {{"tenant", row->tenant_id},   {"session", row->session_id},
                              {"payment", row->payment_id}, {"payer", row->payer},
                              {"payee", row->payee},        {"minutes", minutes}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        snprintf (key, sizeof key, "%smetadata[%s]", prefix, pairs[i][0]);
        ppm_form_add (form, key, pairs[i][1]);
    }
}

/* The create request of a payment, built only from its ledger row, so
   that a repeat (reconciliation) sends the very same parameters. */
static ppm_form_t *
s_create_form (const payment_row_t *row, char *path, size_t path_size)
{
    ppm_form_t *form = ppm_form_new ();
    if (!form)
        return NULL;
    char currency[8];
    s_lower (currency, sizeof currency, row->currency);
    bool manual = strcmp (row->billing_mode, "authorize") == 0;
    char description[200];
    snprintf (description, sizeof description, "%" PRId64 " minutes with %.100s", row->minutes,
              row->payee);
    if (strcmp (row->flow, "hosted") == 0) {
        snprintf (path, path_size, "/v1/checkout/sessions");
        ppm_form_add (form, "mode", "payment");
        ppm_form_add (form, "line_items[0][price_data][currency]", currency);
        ppm_form_add_int (form, "line_items[0][price_data][unit_amount]", row->rate_per_minute);
        ppm_form_add (form, "line_items[0][price_data][product_data][name]", description);
        ppm_form_add_int (form, "line_items[0][quantity]", row->minutes);
        ppm_form_add (form, "success_url", row->success_url);
        ppm_form_add (form, "cancel_url", row->cancel_url);
        if (row->customer[0])
            ppm_form_add (form, "customer", row->customer);
        ppm_form_add (form, "client_reference_id", row->payment_id);
        ppm_form_add (form, "payment_intent_data[capture_method]", manual ? "manual" : "automatic");
        s_add_metadata (form, row, "");
        s_add_metadata (form, row, "payment_intent_data[");
    } else {
        snprintf (path, path_size, "/v1/payment_intents");
        ppm_form_add_int (form, "amount", row->amount);
        ppm_form_add (form, "currency", currency);
        if (row->customer[0])
            ppm_form_add (form, "customer", row->customer);
        ppm_form_add (form, "capture_method", manual ? "manual" : "automatic");
        ppm_form_add (form, "description", description);
        s_add_metadata (form, row, "");
    }
    return form;
}

/* payment_intent_data[metadata[x]] must read payment_intent_data[metadata][x]. */
static void
s_fix_nested_metadata (ppm_form_t **form_p)
{
    ppm_form_t *in = *form_p;
    ppm_form_t *out = ppm_form_new ();
    if (!out)
        return;
    for (size_t i = 0; i < ppm_form_size (in); i++) {
        const char *key = ppm_form_key (in, i);
        const char *prefix = "payment_intent_data[metadata[";
        if (strncmp (key, prefix, strlen (prefix)) == 0) {
            char fixed[160];
            snprintf (fixed, sizeof fixed, "payment_intent_data[metadata][%s",
                      key + strlen (prefix));
            ppm_form_add (out, fixed, ppm_form_value (in, i));
        } else
            ppm_form_add (out, key, ppm_form_value (in, i));
    }
    ppm_form_destroy (form_p);
    *form_p = out;
}

static void
s_crash_point (s_self_t *self, const char *point)
{
    if (self->config.fault && strcmp (self->config.fault, point) == 0) {
        ppm_log_warn ("fault injection: crashing at %s", point);
        raise (SIGKILL);
    }
}

/* ---- outbox: metering.Fund until acknowledged --------------------------------- */

typedef struct {
    s_self_t *self;
    payment_outbox_t row;
} s_fund_t;

/* Metering refused a payment for good (the session ended before it was
   funded): give the money back — release the hold or refund the charge —
   so nobody pays for time they cannot use. */
typedef void (s_unwind_done_fn) (void *arg);

typedef struct {
    s_self_t *self;
    char tenant[80];
    char payment_id[40];
    char key[300];
    bool refund;
    int64_t amount;
    s_unwind_done_fn *done; /* called at the end, or NULL */
    void *done_arg;
} s_unwind_t;

/* Records the refund (a Stripe refund object) that gave an unfunded
   payment's money back. */
static void
s_record_unfunded_refund (s_self_t *self, const char *tenant, const char *payment_id,
                          const json_t *object, int64_t amount, const char *request_id)
{
    char error[200];
    payment_stripe_object_t refund;
    if (payment_stripe_object_read (object, &refund, error, sizeof error) != 0)
        return;
    payment_ledger_refund (self->pg, tenant, payment_id, refund.id, amount, refund.status,
                           "session ended before funding", request_id);
    payment_row_t row;
    bool found = false;
    payment_ledger_get (self->pg, tenant, payment_id, &row, &found);
    payment_change_t ch = PAYMENT_CHANGE_INIT;
    ch.cause = "metering refused funding: refunded";
    ch.request_id = request_id;
    ch.refunded = found ? row.refunded + amount : amount;
    bool changed = false;
    payment_row_t after;
    if (payment_ledger_apply (self->pg, tenant, payment_id, PAYMENT_ST_REFUNDED, &ch, &changed,
                              &after) == PPM_PG_OK &&
        changed) {
        ppm_counter_inc (self->m_refunded, (uint64_t)amount, tenant, after.currency);
        s_after_change (self, &after);
    }
}

static void
s_on_unwound (const payment_stripe_result_t *r, void *arg)
{
    s_unwind_t *u = (s_unwind_t *)arg;
    s_self_t *self = u->self;
    s_record_call (self, u->tenant, u->payment_id, u->refund ? "refund.create" : "pi.cancel",
                   u->key, r);
    char error[200];
    payment_row_t after;
    if (r->err != PAYMENT_STRIPE_OK) {
        /* reconciliation tries again (s_giveback) */
        ppm_log_kv (PPM_LOG_WARN, "could not give back an unfunded payment yet", "payment_id",
                    u->payment_id, "error", r->detail, PPM_LOG_END);
    } else if (u->refund) {
        s_record_unfunded_refund (self, u->tenant, u->payment_id, r->body, u->amount,
                                  r->request_id);
    } else {
        payment_stripe_pi_t pi;
        if (payment_stripe_pi_read (r->body, &pi, error, sizeof error) == 0)
            s_apply_pi (self, u->tenant, u->payment_id, &pi, "metering refused funding: released",
                        r->request_id, NULL, &after);
    }
    if (u->done)
        u->done (u->done_arg);
    free (u);
}

/* Releases the hold or refunds the charge of a payment metering refused.
   done (may be NULL) is called with arg when the attempt ends, whatever
   its outcome; returns -1 (and calls nothing) when no attempt started
   (tenant keys not loaded, nothing to give back). */
static int
s_unwind (s_self_t *self, const char *tenant, const char *payment_id, s_unwind_done_fn *done,
          void *done_arg)
{
    payment_row_t row;
    bool found = false;
    s_tenant_t *t = s_tenant (self, tenant);
    if (!t || !t->valid ||
        payment_ledger_get (self->pg, tenant, payment_id, &row, &found) != PPM_PG_OK || !found ||
        !row.payment_intent[0])
        return -1;
    s_unwind_t *u = (s_unwind_t *)zmalloc (sizeof (s_unwind_t));
    u->self = self;
    u->done = done;
    u->done_arg = done_arg;
    snprintf (u->tenant, sizeof u->tenant, "%s", tenant);
    snprintf (u->payment_id, sizeof u->payment_id, "%s", payment_id);
    char path[320];
    ppm_form_t *form = ppm_form_new ();
    const char *key = s_key (t, false);
    if (row.state == PAYMENT_ST_AUTHORIZED) {
        snprintf (path, sizeof path, "/v1/payment_intents/%s/cancel", row.payment_intent);
        if (form)
            ppm_form_add (form, "cancellation_reason", "abandoned");
        s_idem_key (u->key, sizeof u->key, payment_id, "cancel");
    } else if (row.state == PAYMENT_ST_SUCCEEDED && row.captured > row.refunded) {
        u->refund = true;
        u->amount = row.captured - row.refunded;
        snprintf (path, sizeof path, "/v1/refunds");
        if (form) {
            ppm_form_add (form, "payment_intent", row.payment_intent);
            ppm_form_add_int (form, "amount", u->amount);
            ppm_form_add (form, "reason", "requested_by_customer");
            ppm_form_add (form, "metadata[payment]", payment_id);
        }
        s_idem_key (u->key, sizeof u->key, payment_id, "refund-unfunded");
        key = s_key (t, true);
    } else {
        ppm_form_destroy (&form);
        free (u);
        return -1;
    }
    if (!form || s_form_send (self, "POST", path, &form, key, u->key, s_on_unwound, u) != 0) {
        ppm_form_destroy (&form);
        free (u);
        return -1;
    }
    return 0;
}

static void
s_on_fund (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    (void)payload;
    (void)size;
    s_fund_t *f = (s_fund_t *)arg;
    s_self_t *self = f->self;
    zhashx_delete (self->outbox_busy, f->row.payment_id);
    ppm_code_t code = ppm_status_code (status);
    if (code == PPM_OK)
        payment_ledger_outbox_delivered (self->pg, f->row.id, "funded");
    else if (code == PPM_FAILED_PRECONDITION || code == PPM_OUT_OF_RANGE ||
             code == PPM_INVALID_ARGUMENT || code == PPM_NOT_FOUND) {
        /* Metering will never take it (the session ended first): stop
           delivering and give the money back (s_unwind). */
        char outcome[600];
        snprintf (outcome, sizeof outcome, "refused: %s: %s", ppm_code_name (code),
                  ppm_status_message (status));
        payment_ledger_outbox_delivered (self->pg, f->row.id, outcome);
        ppm_log_kv (PPM_LOG_WARN, "metering refused funding: giving the money back", "payment_id",
                    f->row.payment_id, "reason", ppm_status_message (status), PPM_LOG_END);
        s_unwind (self, f->row.tenant_id, f->row.payment_id, NULL, NULL);
    } else {
        int64_t delay = 500;
        for (int i = 0; i < f->row.attempts && delay < 30000; i++)
            delay *= 2;
        payment_ledger_outbox_retry (self->pg, f->row.id, ppm_clock_now_ms () + delay,
                                     ppm_status_message (status));
    }
    free (f);
}

static void
s_refresh_gauges (s_self_t *self)
{
    int64_t now = ppm_clock_real_ms ();
    if (now - self->gauges_at_ms < 5000)
        return;
    self->gauges_at_ms = now;
    int64_t outbox = 0, pending = 0, count = 0;
    if (payment_ledger_outbox_pending (self->pg, &outbox) == PPM_PG_OK)
        ppm_gauge_set (self->m_outbox, (double)outbox);
    payment_state_t open[] = {PAYMENT_ST_CREATED, PAYMENT_ST_PENDING, PAYMENT_ST_REQUIRES_ACTION};
    for (size_t i = 0; i < 3; i++)
        if (payment_ledger_count_state (self->pg, NULL, open[i], &count) == PPM_PG_OK)
            pending += count;
    ppm_gauge_set (self->m_pending, (double)pending);
}

static void
s_outbox_pump (s_self_t *self)
{
    s_refresh_gauges (self);
    payment_outbox_t rows[S_OUTBOX_BATCH];
    size_t count = 0;
    if (payment_ledger_outbox_due (self->pg, ppm_clock_now_ms (), rows, S_OUTBOX_BATCH, &count) !=
        PPM_PG_OK)
        return;
    for (size_t i = 0; i < count; i++) {
        if (zhashx_lookup (self->outbox_busy, rows[i].payment_id))
            continue;
        s_fund_t *f = (s_fund_t *)zmalloc (sizeof (s_fund_t));
        f->self = self;
        f->row = rows[i];
        Ppm__V1__FundRequest req = PPM__V1__FUND_REQUEST__INIT;
        req.tenant_id = f->row.tenant_id;
        req.session_id = f->row.session_id;
        req.payment_id = f->row.payment_id;
        req.minutes = f->row.minutes;
        req.amount = f->row.amount;
        req.currency = f->row.currency;
        ppm_rpc_req_t rr = {.method = "metering.Fund",
                            .tenant = f->row.tenant_id,
                            .idempotent = true,
                            .timeout_ms = 3000};
        if (ppm_rpc_client_call (self->metering, &rr, &req.base, s_on_fund, f) != 0) {
            free (f);
            continue;
        }
        zhashx_insert (self->outbox_busy, rows[i].payment_id, (void *)1);
    }
}

static int
s_outbox_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_outbox_pump ((s_self_t *)arg);
    return 0;
}

/* ---- payment.Checkout ------------------------------------------------------------ */

typedef struct {
    s_self_t *self;
    ppm_rpc_call_t *call;
    char tenant[80];
    Ppm__V1__CheckoutRequest *req; /* unpacked, owned */
    payment_row_t row;
    s_tenant_t snapshot;   /* keys at the time of the call */
    char key[300];         /* idempotency key in use */
    bool own_customer_key; /* the customer is being created under this payment's own key */
} s_checkout_t;

static void
s_checkout_free (s_checkout_t **c_p)
{
    s_checkout_t *c = *c_p;
    if (!c)
        return;
    if (c->req)
        ppm__v1__checkout_request__free_unpacked (c->req, NULL);
    sodium_memzero (&c->snapshot, sizeof c->snapshot);
    free (c);
    *c_p = NULL;
}

static void
s_checkout_error (s_checkout_t *c, ppm_code_t code, const char *field, const char *fmt,
                  const char *detail)
{
    ppm_status_t *st = ppm_status_new (code, fmt, detail);
    if (field)
        ppm_status_add_field (st, field, fmt, detail);
    ppm_rpc_call_fail (&c->call, &st);
    s_checkout_free (&c);
}

static void
s_checkout_reply (s_checkout_t *c)
{
    Ppm__V1__CheckoutReply reply = PPM__V1__CHECKOUT_REPLY__INIT;
    reply.payment_id = c->row.payment_id;
    reply.client_secret = c->row.client_secret;
    reply.amount = c->row.amount;
    reply.currency = c->row.currency;
    reply.minutes = c->row.minutes;
    reply.state = s_proto_state (c->row.state);
    reply.checkout_url = c->row.checkout_url;
    reply.publishable_key = c->snapshot.publishable_key;
    reply.stripe_payment_intent = c->row.payment_intent;
    /* Stripe's answer arrives outside the call: log under its trace id. */
    ppm_rpc_call_log_context (c->call);
    char amount[32];
    snprintf (amount, sizeof amount, "%lld", (long long)c->row.amount);
    ppm_log_kv (PPM_LOG_INFO, "checkout", "payment_id", c->row.payment_id, "session_id",
                c->row.session_id, "amount", amount, "currency", c->row.currency, "state",
                payment_state_name (c->row.state), PPM_LOG_END);
    ppm_rpc_call_reply (&c->call, &reply.base);
    s_checkout_free (&c);
}

static void
s_on_created (const payment_stripe_result_t *r, void *arg)
{
    s_checkout_t *c = (s_checkout_t *)arg;
    s_self_t *self = c->self;
    bool hosted = strcmp (c->row.flow, "hosted") == 0;
    s_record_call (self, c->tenant, c->row.payment_id, hosted ? "checkout.create" : "pi.create",
                   c->key, r);
    if (r->err != PAYMENT_STRIPE_OK) {
        if (!payment_stripe_indeterminate (r->err)) {
            /* Stripe did not create anything (declined validation, bad key,
               429 — not stored under the key): the payment failed. */
            payment_change_t ch = PAYMENT_CHANGE_INIT;
            ch.cause = "stripe.create refused";
            ch.request_id = r->request_id;
            ch.failure_code =
                r->error && r->error->code[0] ? r->error->code : payment_stripe_strerror (r->err);
            ch.failure_message = r->detail;
            payment_row_t after;
            payment_ledger_apply (self->pg, c->tenant, c->row.payment_id, PAYMENT_ST_CANCELED, &ch,
                                  NULL, &after);
        }
        /* Indeterminate: the row stays CREATED; reconciliation repeats the
           call with the same key and learns the outcome. */
        s_fail_stripe (&c->call, r);
        s_checkout_free (&c);
        return;
    }
    s_crash_point (self, "after_stripe_create");
    char error[200];
    payment_row_t after;
    if (hosted) {
        payment_stripe_checkout_t cs;
        if (payment_stripe_checkout_read (r->body, &cs, error, sizeof error) != 0) {
            s_checkout_error (c, PPM_INTERNAL, NULL, "Stripe checkout session: %s", error);
            return;
        }
        payment_change_t ch = PAYMENT_CHANGE_INIT;
        ch.cause = "stripe.checkout.create";
        ch.request_id = r->request_id;
        ch.checkout_session = cs.id;
        ch.checkout_url = cs.url;
        if (cs.payment_intent[0])
            ch.payment_intent = cs.payment_intent;
        if (payment_ledger_apply (self->pg, c->tenant, c->row.payment_id, PAYMENT_ST_PENDING, &ch,
                                  NULL, &after) != PPM_PG_OK) {
            s_checkout_error (c, PPM_UNAVAILABLE, NULL, "ledger unavailable%s", "");
            return;
        }
    } else {
        payment_stripe_pi_t pi;
        if (payment_stripe_pi_read (r->body, &pi, error, sizeof error) != 0) {
            s_checkout_error (c, PPM_INTERNAL, NULL, "Stripe payment intent: %s", error);
            return;
        }
        if (s_apply_pi (self, c->tenant, c->row.payment_id, &pi, "stripe.pi.create", r->request_id,
                        NULL, &after) != PPM_PG_OK) {
            s_checkout_error (c, PPM_UNAVAILABLE, NULL, "ledger unavailable%s", "");
            return;
        }
    }
    c->row = after;
    s_checkout_reply (c);
}

static void
s_checkout_create (s_checkout_t *c)
{
    char path[64];
    ppm_form_t *form = s_create_form (&c->row, path, sizeof path);
    if (form && strcmp (c->row.flow, "hosted") == 0)
        s_fix_nested_metadata (&form);
    s_idem_key (c->key, sizeof c->key, c->row.payment_id, "create");
    if (!form || s_form_send (c->self, "POST", path, &form, s_key (&c->snapshot, false), c->key,
                              s_on_created, c) != 0) {
        ppm_form_destroy (&form);
        s_checkout_error (c, PPM_INTERNAL, NULL, "could not build the Stripe request%s", "");
    }
}

static void s_customer_create (s_checkout_t *c);

static void
s_on_customer (const payment_stripe_result_t *r, void *arg)
{
    s_checkout_t *c = (s_checkout_t *)arg;
    s_self_t *self = c->self;
    s_record_call (self, c->tenant, c->row.payment_id, "customer.create", c->key, r);
    payment_stripe_object_t cus;
    char error[200];
    if ((payment_stripe_indeterminate (r->err) || r->err == PAYMENT_STRIPE_IDEMPOTENCY) &&
        !c->own_customer_key) {
        /* Stripe stores a 500 under the payer's customer key too (it may
           have created the customer, we cannot know its id) and replays
           it to every later checkout of this payer, for a day; and a first
           attempt without an email refuses a later one with (other
           parameters, same key). Create it under this payment's own key
           instead: at worst the payer has one customer object more. */
        c->own_customer_key = true;
        s_customer_create (c);
        return;
    }
    if (r->err != PAYMENT_STRIPE_OK) {
        if (!payment_stripe_indeterminate (r->err)) {
            payment_change_t ch = PAYMENT_CHANGE_INIT;
            ch.cause = "stripe.customer.create refused";
            ch.failure_code = payment_stripe_strerror (r->err);
            payment_ledger_apply (self->pg, c->tenant, c->row.payment_id, PAYMENT_ST_CANCELED, &ch,
                                  NULL, NULL);
        }
        s_fail_stripe (&c->call, r);
        s_checkout_free (&c);
        return;
    }
    if (payment_stripe_object_read (r->body, &cus, error, sizeof error) != 0) {
        s_checkout_error (c, PPM_INTERNAL, NULL, "Stripe customer: %s", error);
        return;
    }
    snprintf (c->row.customer, sizeof c->row.customer, "%s", cus.id);
    if (payment_ledger_customer_put (self->pg, c->tenant, c->row.payer, c->row.mode,
                                     c->row.customer, sizeof c->row.customer) != PPM_PG_OK ||
        payment_ledger_set_customer (self->pg, c->tenant, c->row.payment_id, c->row.customer) !=
            PPM_PG_OK) {
        s_checkout_error (c, PPM_UNAVAILABLE, NULL, "ledger unavailable%s", "");
        return;
    }
    s_checkout_create (c);
}

/* The payment row exists (consent recorded): find or create the Customer. */
static void
s_checkout_customer (s_checkout_t *c)
{
    if (c->row.customer[0]) {
        s_checkout_create (c);
        return;
    }
    s_customer_create (c);
}

/* POST /v1/customers. One customer per (tenant, mode, payer), whoever
   asks first: the key is derived from those, hashed to fit Stripe's 255
   characters (c->own_customer_key: and from this payment). */
static void
s_customer_create (s_checkout_t *c)
{
    s_self_t *self = c->self;
    unsigned char hash[16];
    char material[400];
    snprintf (material, sizeof material, "%s\n%s\n%s", c->tenant, c->row.mode, c->row.payer);
    crypto_generichash (hash, sizeof hash, (const unsigned char *)material, strlen (material), NULL,
                        0);
    char hex[33];
    sodium_bin2hex (hex, sizeof hex, hash, sizeof hash);
    if (c->own_customer_key)
        snprintf (c->key, sizeof c->key, "ppm-cus-%s-%s", hex, c->row.payment_id);
    else
        snprintf (c->key, sizeof c->key, "ppm-cus-%s", hex);
    ppm_form_t *form = ppm_form_new ();
    if (form) {
        ppm_form_add (form, "metadata[tenant]", c->tenant);
        ppm_form_add (form, "metadata[payer]", c->row.payer);
        if (c->req->payer_email && *c->req->payer_email)
            ppm_form_add (form, "email", c->req->payer_email);
    }
    if (!form || s_form_send (self, "POST", "/v1/customers", &form, s_key (&c->snapshot, false),
                              c->key, s_on_customer, c) != 0) {
        ppm_form_destroy (&form);
        s_checkout_error (c, PPM_INTERNAL, NULL, "could not build the Stripe request%s", "");
    }
}

static bool
s_http_url (const char *url)
{
    return url && (strncmp (url, "https://", 8) == 0 || strncmp (url, "http://", 7) == 0) &&
           strlen (url) < 1000 && !strpbrk (url, " \r\n\t");
}

static void
s_on_session (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    s_checkout_t *c = (s_checkout_t *)arg;
    s_self_t *self = c->self;
    if (status) {
        ppm_code_t code = ppm_status_code (status);
        if (code == PPM_NOT_FOUND)
            s_checkout_error (c, PPM_NOT_FOUND, "session_id", "unknown session %s",
                              c->req->session_id);
        else
            s_checkout_error (c, code == PPM_DEADLINE_EXCEEDED ? PPM_UNAVAILABLE : code, NULL,
                              "metering: %s", ppm_status_message (status));
        return;
    }
    Ppm__V1__SessionReply *reply = ppm__v1__session_reply__unpack (NULL, size, payload);
    if (!reply || !reply->session) {
        if (reply)
            ppm__v1__session_reply__free_unpacked (reply, NULL);
        s_checkout_error (c, PPM_INTERNAL, NULL, "metering answered a malformed session%s", "");
        return;
    }
    Ppm__V1__Session *s = reply->session;
    const Ppm__V1__CheckoutRequest *req = c->req;
    ppm_code_t code = PPM_OK;
    const char *field = NULL;
    char why[300] = "";
    int64_t amount = 0;
    const ppm_currency_t *currency = ppm_currency_find (s->currency);
    if (strcmp (s->tenant_id, c->tenant) != 0 && s->tenant_id[0]) {
        code = PPM_NOT_FOUND;
        field = "session_id";
        snprintf (why, sizeof why, "unknown session %.80s", req->session_id);
    } else if (strcmp (s->payer, req->payer) != 0) {
        code = PPM_PERMISSION_DENIED;
        field = "session_id";
        snprintf (why, sizeof why, "session %.80s belongs to another payer", req->session_id);
    } else if (!s->paid) {
        code = PPM_FAILED_PRECONDITION;
        snprintf (why, sizeof why, "session %.80s is free: nothing to pay", req->session_id);
    } else if (s->state == PPM__V1__SESSION_STATE__SESSION_ENDED ||
               (s->state == PPM__V1__SESSION_STATE__SESSION_EXPIRED &&
                s->reopen_until_ms <= ppm_clock_now_ms ())) {
        code = PPM_FAILED_PRECONDITION;
        field = "session_id";
        snprintf (why, sizeof why, "session %.80s has ended", req->session_id);
    } else if (c->snapshot.max_minutes_per_purchase > 0 &&
               req->minutes > c->snapshot.max_minutes_per_purchase) {
        code = PPM_INVALID_ARGUMENT;
        field = "minutes";
        snprintf (why, sizeof why, "at most %" PRId64 " minutes per purchase",
                  c->snapshot.max_minutes_per_purchase);
    } else if (s->fundable_ms >= 0 && req->minutes * 60000 > s->fundable_ms) {
        code = PPM_INVALID_ARGUMENT;
        field = "minutes";
        snprintf (why, sizeof why, "at most %" PRId64 " more minutes in this session",
                  s->fundable_ms / 60000);
    } else if (!currency || s->rate_per_minute <= 0) {
        code = PPM_FAILED_PRECONDITION;
        snprintf (why, sizeof why, "session has no usable rate/currency");
    } else {
        ppm_money_err_t merr = ppm_money_total (s->rate_per_minute, req->minutes, &amount);
        if (merr == PPM_MONEY_OK)
            merr = ppm_money_check_charge (currency, amount);
        if (merr == PPM_MONEY_OVERFLOW) {
            code = PPM_INVALID_ARGUMENT;
            field = "minutes";
            snprintf (why, sizeof why, "the total overflows");
        } else if (merr != PPM_MONEY_OK) {
            code = PPM_FAILED_PRECONDITION;
            field = "amount";
            const char *stripe_code = ppm_money_stripe_code (merr);
            snprintf (why, sizeof why, "%s: %" PRId64 " %s %s (min %" PRId64 ", max %" PRId64 ")",
                      stripe_code && *stripe_code ? stripe_code : "invalid_amount", amount,
                      currency->code, ppm_money_strerror (merr), currency->min_charge,
                      currency->max_charge);
        }
    }
    if (code != PPM_OK) {
        ppm__v1__session_reply__free_unpacked (reply, NULL);
        ppm_status_t *st = ppm_status_new (code, "%s", why);
        if (field)
            ppm_status_add_field (st, field, "%s", why);
        ppm_rpc_call_fail (&c->call, &st);
        s_checkout_free (&c);
        return;
    }
    payment_row_t *row = &c->row;
    payment_ledger_new_id (row->payment_id);
    snprintf (row->tenant_id, sizeof row->tenant_id, "%s", c->tenant);
    snprintf (row->session_id, sizeof row->session_id, "%s", req->session_id);
    snprintf (row->payer, sizeof row->payer, "%s", req->payer);
    snprintf (row->payee, sizeof row->payee, "%s", s->payee);
    snprintf (row->mode, sizeof row->mode, "%s", c->snapshot.mode);
    snprintf (row->flow, sizeof row->flow, "%s",
              req->flow == PPM__V1__PAYMENT_FLOW__PAYMENT_FLOW_HOSTED ? "hosted"
                                                                      : "payment_intent");
    snprintf (row->billing_mode, sizeof row->billing_mode, "%s",
              strcmp (s->billing_mode, "authorize") == 0 ? "authorize" : "prepaid");
    snprintf (row->rounding, sizeof row->rounding, "%s",
              strcmp (s->rounding, "second") == 0 ? "second" : "minute");
    row->refund_unused = s->refund_unused;
    row->minutes = req->minutes;
    row->rate_per_minute = s->rate_per_minute;
    row->amount = amount;
    snprintf (row->currency, sizeof row->currency, "%s", currency->code);
    snprintf (row->terms_url, sizeof row->terms_url, "%s", c->snapshot.terms_url);
    snprintf (row->success_url, sizeof row->success_url, "%s", req->success_url);
    snprintf (row->cancel_url, sizeof row->cancel_url, "%s", req->cancel_url);
    row->created_at_ms = ppm_clock_now_ms ();
    row->terms_accepted_at_ms = row->created_at_ms;
    ppm__v1__session_reply__free_unpacked (reply, NULL);
    /* Consent and payment are durable before Stripe hears of them; the
       row carries the payer's known Customer from the start. */
    if (payment_ledger_create (self->pg, row) != PPM_PG_OK) {
        s_checkout_error (c, PPM_UNAVAILABLE, NULL, "ledger unavailable: %s",
                          ppm_pg_error (self->pg));
        return;
    }
    s_checkout_customer (c);
}

static void
s_checkout_with_tenant (s_self_t *self, const ppm_status_t *status, void *arg)
{
    s_checkout_t *c = (s_checkout_t *)arg;
    if (status) {
        ppm_code_t code = ppm_status_code (status);
        s_checkout_error (c, code == PPM_NOT_FOUND ? PPM_NOT_FOUND : PPM_UNAVAILABLE, NULL,
                          "config: %s", ppm_status_message (status));
        return;
    }
    s_tenant_t *t = s_tenant (self, c->tenant);
    ppm_status_t *st = s_tenant_usable (self, t);
    if (st) {
        ppm_rpc_call_fail (&c->call, &st);
        s_checkout_free (&c);
        return;
    }
    c->snapshot = *t;
    c->snapshot.waiters = NULL;
    Ppm__V1__SessionRequest req = PPM__V1__SESSION_REQUEST__INIT;
    req.tenant_id = c->tenant;
    req.session_id = c->req->session_id;
    req.by = (char *)"platform";
    ppm_rpc_req_t rr = {.method = "metering.Get", .tenant = c->tenant, .idempotent = true};
    if (ppm_rpc_client_call (self->metering, &rr, &req.base, s_on_session, c) != 0)
        s_checkout_error (c, PPM_UNAVAILABLE, NULL, "metering unreachable%s", "");
}

/* The request's tenant: the envelope's, and the message's must agree. */
static bool
s_tenant_of (ppm_rpc_call_t **call_p, const char *message_tenant, char *out, size_t size)
{
    const char *env = ppm_rpc_call_tenant (*call_p);
    if (!*env) {
        ppm_rpc_call_error (call_p, PPM_INVALID_ARGUMENT, "the envelope carries no tenant");
        return false;
    }
    if (message_tenant && *message_tenant && strcmp (message_tenant, env) != 0) {
        ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "tenant_id differs from the "
                                                                 "envelope's tenant");
        ppm_status_add_field (st, "tenant_id", "must equal the envelope's tenant");
        ppm_rpc_call_fail (call_p, &st);
        return false;
    }
    snprintf (out, size, "%s", env);
    return true;
}

static bool
s_id_ok (const char *id)
{
    size_t n = id ? strlen (id) : 0;
    if (n == 0 || n > S_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.' || ch == ':' || ch == '@'))
            return false;
    }
    return true;
}

static void
s_handle_checkout (ppm_rpc_call_t *call, void *arg)
{
    s_self_t *self = (s_self_t *)arg;
    Ppm__V1__CheckoutRequest *req = (Ppm__V1__CheckoutRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__checkout_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "malformed CheckoutRequest");
        return;
    }
    char tenant[80];
    if (!s_tenant_of (&call, req->tenant_id, tenant, sizeof tenant)) {
        ppm__v1__checkout_request__free_unpacked (req, NULL);
        return;
    }
    ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid checkout");
    if (!s_id_ok (req->session_id))
        ppm_status_add_field (st, "session_id", "required, 1-64 characters [A-Za-z0-9_-.:@]");
    if (!req->payer[0] || strlen (req->payer) > 128)
        ppm_status_add_field (st, "payer", "required, at most 128 bytes");
    if (req->minutes < 1 || req->minutes > S_MAX_MINUTES)
        ppm_status_add_field (st, "minutes", "must be 1 to %d", S_MAX_MINUTES);
    if (!req->accept_terms)
        ppm_status_add_field (st, "accept_terms", "the terms must be accepted before paying");
    if (req->flow == PPM__V1__PAYMENT_FLOW__PAYMENT_FLOW_HOSTED) {
        if (!s_http_url (req->success_url))
            ppm_status_add_field (st, "success_url", "an http(s) URL is required");
        if (!s_http_url (req->cancel_url))
            ppm_status_add_field (st, "cancel_url", "an http(s) URL is required");
    }
    if (req->payer_email && strlen (req->payer_email) > 200)
        ppm_status_add_field (st, "payer_email", "at most 200 bytes");
    if (ppm_status_field_count (st) > 0) {
        /* The message names the first bad field; every one is listed. */
        ppm_status_t *out =
            ppm_status_new (PPM_INVALID_ARGUMENT, "invalid checkout: %s: %s",
                            ppm_status_field_name (st, 0), ppm_status_field_description (st, 0));
        for (size_t i = 0; i < ppm_status_field_count (st); i++)
            ppm_status_add_field (out, ppm_status_field_name (st, i), "%s",
                                  ppm_status_field_description (st, i));
        ppm_status_destroy (&st);
        ppm_rpc_call_fail (&call, &out);
        ppm__v1__checkout_request__free_unpacked (req, NULL);
        return;
    }
    ppm_status_destroy (&st);
    s_checkout_t *c = (s_checkout_t *)zmalloc (sizeof (s_checkout_t));
    c->self = self;
    c->call = call;
    c->req = req;
    snprintf (c->tenant, sizeof c->tenant, "%s", tenant);
    s_tenant_get (self, tenant, s_checkout_with_tenant, c);
}

/* ---- payment.Confirm (test mode) ----------------------------------------------------- */

typedef struct {
    s_self_t *self;
    ppm_rpc_call_t *call;
    char tenant[80];
    char payment_id[40];
    char session_id[80];
    char payer[136];
    char payment_method[128];
    char key[300];
    char pi_id[256];             /* the intent confirmed */
    payment_stripe_err_t failed; /* the confirm's error, while its outcome is checked */
    char failed_detail[300];
} s_confirm_t;

static void
s_confirm_reply (s_confirm_t *c, const payment_row_t *row)
{
    Ppm__V1__ConfirmReply reply = PPM__V1__CONFIRM_REPLY__INIT;
    reply.payment_id = (char *)row->payment_id;
    reply.state = s_proto_state (row->state);
    reply.client_secret = (char *)row->client_secret;
    reply.amount = row->amount;
    reply.currency = (char *)row->currency;
    ppm_rpc_call_reply (&c->call, &reply.base);
}

/* The intent, fetched after a confirm whose outcome was not an answer
   (s_confirm_check): the payer is told what Stripe did. */
static void
s_on_confirm_checked (const payment_stripe_result_t *r, void *arg)
{
    s_confirm_t *c = (s_confirm_t *)arg;
    s_self_t *self = c->self;
    payment_row_t after;
    char error[200];
    payment_stripe_pi_t pi;
    if (r->err == PAYMENT_STRIPE_OK &&
        payment_stripe_pi_read (r->body, &pi, error, sizeof error) == 0 &&
        s_apply_pi (self, c->tenant, c->payment_id, &pi, "stripe.pi.confirm: outcome fetched",
                    r->request_id, NULL, &after) == PPM_PG_OK &&
        (after.state == PAYMENT_ST_AUTHORIZED || after.state == PAYMENT_ST_SUCCEEDED ||
         after.state == PAYMENT_ST_REQUIRES_ACTION)) {
        s_confirm_reply (c, &after);
        free (c);
        return;
    }
    payment_stripe_result_t failed = {.err = c->failed, .detail = c->failed_detail};
    s_fail_stripe (&c->call, &failed);
    free (c);
}

/* A confirm that failed without a decline may have confirmed the intent
   all the same: Stripe answered 500 after doing it, the answer was lost,
   or a retry found the intent confirmed already (400, 409). Fetches the
   intent and answers from it (s_on_confirm_checked). Returns true when
   the fetch started. */
static bool
s_confirm_check (s_confirm_t *c, const payment_stripe_result_t *r)
{
    s_self_t *self = c->self;
    s_tenant_t *t = s_tenant (self, c->tenant);
    if ((!payment_stripe_indeterminate (r->err) && r->err != PAYMENT_STRIPE_INVALID &&
         r->err != PAYMENT_STRIPE_CONFLICT && r->err != PAYMENT_STRIPE_RATE_LIMITED) ||
        !t || !self->stripe || !s_id_ok (c->pi_id))
        return false;
    c->failed = r->err;
    snprintf (c->failed_detail, sizeof c->failed_detail, "%s", r->detail);
    char path[320];
    snprintf (path, sizeof path, "/v1/payment_intents/%s", c->pi_id);
    return payment_stripe_request (self->stripe, "GET", path, NULL, s_key (t, false), NULL,
                                   s_on_confirm_checked, c) == 0;
}

static void
s_on_confirmed (const payment_stripe_result_t *r, void *arg)
{
    s_confirm_t *c = (s_confirm_t *)arg;
    s_self_t *self = c->self;
    s_crash_point (self, "after_stripe_confirm");
    s_record_call (self, c->tenant, c->payment_id, "pi.confirm", c->key, r);
    payment_row_t after;
    char error[200];
    if (r->err == PAYMENT_STRIPE_OK) {
        payment_stripe_pi_t pi;
        if (payment_stripe_pi_read (r->body, &pi, error, sizeof error) != 0)
            ppm_rpc_call_error (&c->call, PPM_INTERNAL, "Stripe payment intent: %s", error);
        else if (s_apply_pi (self, c->tenant, c->payment_id, &pi, "stripe.pi.confirm",
                             r->request_id, NULL, &after) != PPM_PG_OK)
            ppm_rpc_call_error (&c->call, PPM_UNAVAILABLE, "ledger unavailable");
        else
            s_confirm_reply (c, &after);
        free (c);
        return;
    }
    if (r->err != PAYMENT_STRIPE_DECLINED && s_confirm_check (c, r))
        return; /* answers once Stripe says what became of the intent */
    if (r->err == PAYMENT_STRIPE_DECLINED) {
        const payment_stripe_error_t *e = r->error;
        payment_change_t ch = PAYMENT_CHANGE_INIT;
        ch.cause = "stripe.pi.confirm declined";
        ch.request_id = r->request_id;
        ch.failure_code = e && e->decline_code[0] ? e->decline_code : "card_declined";
        ch.failure_message = e ? e->message : "";
        bool changed = false;
        if (payment_ledger_apply (self->pg, c->tenant, c->payment_id, PAYMENT_ST_FAILED, &ch,
                                  &changed, &after) == PPM_PG_OK &&
            changed)
            s_after_change (self, &after);
    }
    s_fail_stripe (&c->call, r);
    free (c);
}

static void
s_confirm_with_tenant (s_self_t *self, const ppm_status_t *status, void *arg)
{
    s_confirm_t *c = (s_confirm_t *)arg;
    if (status) {
        ppm_rpc_call_error (&c->call, PPM_UNAVAILABLE, "config: %s", ppm_status_message (status));
        free (c);
        return;
    }
    s_tenant_t *t = s_tenant (self, c->tenant);
    ppm_status_t *st = s_tenant_usable (self, t);
    if (!st && strcmp (t->mode, "test") != 0)
        st = ppm_status_new (PPM_FAILED_PRECONDITION,
                             "confirm with a test payment method is for test mode only");
    if (st) {
        ppm_rpc_call_fail (&c->call, &st);
        free (c);
        return;
    }
    payment_row_t row;
    bool found = false;
    ppm_pg_result_t rc =
        c->payment_id[0]
            ? payment_ledger_get (self->pg, c->tenant, c->payment_id, &row, &found)
            : payment_ledger_find_open (self->pg, c->tenant, c->session_id, c->payer, &row, &found);
    if (rc != PPM_PG_OK) {
        ppm_rpc_call_error (&c->call, PPM_UNAVAILABLE, "ledger unavailable");
        free (c);
        return;
    }
    if (!found || (c->session_id[0] && strcmp (row.session_id, c->session_id) != 0)) {
        ppm_rpc_call_error (&c->call, PPM_NOT_FOUND, "no payment awaiting confirmation");
        free (c);
        return;
    }
    if (strcmp (row.payer, c->payer) != 0) {
        ppm_rpc_call_error (&c->call, PPM_PERMISSION_DENIED, "payment of another payer");
        free (c);
        return;
    }
    if (row.state == PAYMENT_ST_SUCCEEDED || row.state == PAYMENT_ST_AUTHORIZED) {
        s_confirm_reply (c, &row); /* already paid: say so, change nothing */
        free (c);
        return;
    }
    if (!row.payment_intent[0] || row.state == PAYMENT_ST_CANCELED ||
        row.state == PAYMENT_ST_REFUNDED) {
        ppm_rpc_call_error (&c->call, PPM_FAILED_PRECONDITION, "payment %s is %s", row.payment_id,
                            row.payment_intent[0] ? payment_state_name (row.state)
                                                  : "not created at Stripe yet");
        free (c);
        return;
    }
    snprintf (c->payment_id, sizeof c->payment_id, "%s", row.payment_id);
    int attempt = 0;
    if (payment_ledger_next_confirm (self->pg, c->tenant, c->payment_id, &attempt) != PPM_PG_OK) {
        ppm_rpc_call_error (&c->call, PPM_UNAVAILABLE, "ledger unavailable");
        free (c);
        return;
    }
    char what[32];
    snprintf (what, sizeof what, "confirm-%d", attempt);
    s_idem_key (c->key, sizeof c->key, c->payment_id, what);
    char path[320];
    snprintf (c->pi_id, sizeof c->pi_id, "%s", row.payment_intent);
    snprintf (path, sizeof path, "/v1/payment_intents/%s/confirm", row.payment_intent);
    ppm_form_t *form = ppm_form_new ();
    if (form) {
        ppm_form_add (form, "payment_method", c->payment_method);
        ppm_form_add (form, "return_url", "https://example.invalid/ppm/3ds-return");
    }
    if (!form ||
        s_form_send (self, "POST", path, &form, s_key (t, false), c->key, s_on_confirmed, c) != 0) {
        ppm_form_destroy (&form);
        ppm_rpc_call_error (&c->call, PPM_INTERNAL, "could not build the Stripe request");
        free (c);
    }
}

static void
s_handle_confirm (ppm_rpc_call_t *call, void *arg)
{
    s_self_t *self = (s_self_t *)arg;
    Ppm__V1__ConfirmRequest *req = (Ppm__V1__ConfirmRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__confirm_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "malformed ConfirmRequest");
        return;
    }
    s_confirm_t *c = (s_confirm_t *)zmalloc (sizeof (s_confirm_t));
    c->self = self;
    bool ok = s_tenant_of (&call, req->tenant_id, c->tenant, sizeof c->tenant);
    if (ok) {
        const char *pm = req->payment_method;
        ppm_status_t *st = NULL;
        if (strncmp (pm, "pm_", 3) != 0 || strlen (pm) >= sizeof c->payment_method ||
            !s_id_ok (pm)) {
            st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid payment_method");
            ppm_status_add_field (st, "payment_method", "a Stripe test payment method (pm_…)");
        } else if (!req->payer[0] || strlen (req->payer) >= sizeof c->payer) {
            st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid payer");
            ppm_status_add_field (st, "payer", "required");
        } else if (!req->payment_id[0] && !s_id_ok (req->session_id)) {
            st = ppm_status_new (PPM_INVALID_ARGUMENT, "payment_id or session_id required");
            ppm_status_add_field (st, "session_id", "required when payment_id is empty");
        } else if (req->payment_id[0] && strlen (req->payment_id) >= sizeof c->payment_id) {
            st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid payment_id");
            ppm_status_add_field (st, "payment_id", "unknown");
        }
        if (st) {
            ppm_rpc_call_fail (&call, &st);
            ok = false;
        }
    }
    if (!ok) {
        ppm__v1__confirm_request__free_unpacked (req, NULL);
        free (c);
        return;
    }
    c->call = call;
    snprintf (c->payment_id, sizeof c->payment_id, "%s", req->payment_id);
    snprintf (c->session_id, sizeof c->session_id, "%s", req->session_id);
    snprintf (c->payer, sizeof c->payer, "%s", req->payer);
    snprintf (c->payment_method, sizeof c->payment_method, "%s", req->payment_method);
    ppm__v1__confirm_request__free_unpacked (req, NULL);
    s_tenant_get (self, c->tenant, s_confirm_with_tenant, c);
}

/* ---- payment.Settle ------------------------------------------------------------------ */

typedef enum { S_OP_CAPTURE, S_OP_CANCEL, S_OP_REFUND } s_op_kind_t;

typedef struct {
    s_op_kind_t kind;
    int64_t amount;
    size_t index; /* into rows */
} s_op_t;

typedef struct {
    s_self_t *self;
    ppm_rpc_call_t *call; /* NULL when run by reconciliation */
    char tenant[80];
    char session_id[80];
    payment_row_t *rows;
    size_t count;
    s_op_t ops[64];
    size_t op_count;
    size_t next;
    payment_settlement_t result;
    int64_t used_minutes;
    char key[300];
    bool failed;
    char error[300];
    char running[200]; /* its key in self->settling, "" when not registered */
} s_settle_t;

static void
s_settle_free (s_settle_t **s_p)
{
    s_settle_t *s = *s_p;
    if (!s)
        return;
    if (s->running[0])
        zhashx_delete (s->self->settling, s->running);
    free (s->rows);
    free (s);
    *s_p = NULL;
}

static void
s_settle_reply (s_settle_t *s, bool already)
{
    Ppm__V1__SettleReply reply = PPM__V1__SETTLE_REPLY__INIT;
    reply.session_id = s->session_id;
    reply.already_applied = already;
    reply.charged = s->result.charged;
    reply.refunded = s->result.refunded;
    reply.released = s->result.released;
    reply.currency = s->result.currency;
    reply.used_minutes = s->used_minutes;
    if (s->call)
        ppm_rpc_call_reply (&s->call, &reply.base);
}

static void s_settle_next (s_settle_t *s);

static void s_settle_next (s_settle_t *s);

/* One settlement operation is done at Stripe: record what Stripe
   answered (body: the PaymentIntent, or the refund) and go on. */
static void
s_settle_op_done (s_settle_t *s, const json_t *body, const char *request_id)
{
    s_self_t *self = s->self;
    s_op_t *op = &s->ops[s->next];
    payment_row_t *row = &s->rows[op->index];
    char error[200];
    payment_row_t after;
    bool changed = false;
    if (op->kind == S_OP_REFUND) {
        payment_stripe_object_t refund;
        if (payment_stripe_object_read (body, &refund, error, sizeof error) == 0) {
            payment_ledger_refund (self->pg, s->tenant, row->payment_id, refund.id, op->amount,
                                   refund.status, "unused minutes", request_id);
            payment_change_t ch = PAYMENT_CHANGE_INIT;
            ch.cause = "settle: refund of unused minutes";
            ch.request_id = request_id;
            ch.refunded = row->refunded + op->amount;
            ppm_counter_inc (self->m_refunded, (uint64_t)op->amount, s->tenant, row->currency);
            if (payment_ledger_apply (self->pg, s->tenant, row->payment_id, PAYMENT_ST_REFUNDED,
                                      &ch, &changed, &after) == PPM_PG_OK &&
                changed)
                s_after_change (self, &after);
        }
    } else {
        payment_stripe_pi_t pi;
        if (payment_stripe_pi_read (body, &pi, error, sizeof error) == 0) {
            if (op->kind == S_OP_CAPTURE)
                payment_ledger_capture (self->pg, s->tenant, row->payment_id, pi.amount_received,
                                        request_id);
            s_apply_pi (self, s->tenant, row->payment_id, &pi,
                        op->kind == S_OP_CAPTURE ? "settle: capture of used time"
                                                 : "settle: nothing used, released",
                        request_id, NULL, &after);
        }
    }
    s->next++;
    s_settle_next (s);
}

static void
s_settle_op_failed (s_settle_t *s, const char *detail)
{
    static const char *names[] = {"pi.capture", "pi.cancel", "refund.create"};
    s_op_t *op = &s->ops[s->next];
    s->failed = true;
    snprintf (s->error, sizeof s->error, "%s %s: %s", names[op->kind],
              s->rows[op->index].payment_id, detail);
    s->next = s->op_count;
    s_settle_next (s);
}

/* The answer to Stripe's state after a failed operation (s_settle_verify). */
static void
s_on_settle_verified (const payment_stripe_result_t *r, void *arg)
{
    s_settle_t *s = (s_settle_t *)arg;
    s_op_t *op = &s->ops[s->next];
    payment_row_t *row = &s->rows[op->index];
    char error[200];
    if (r->err == PAYMENT_STRIPE_OK && op->kind == S_OP_REFUND) {
        /* ours: this payment's settlement refund, of this amount */
        size_t i;
        json_t *item;
        json_array_foreach (json_object_get (r->body, "data"), i, item)
        {
            payment_stripe_object_t refund;
            if (payment_stripe_object_read (item, &refund, error, sizeof error) == 0 &&
                strcmp (refund.meta.payment, row->payment_id) == 0 &&
                strcmp (refund.meta.session, row->session_id) == 0 && refund.amount == op->amount &&
                (strcmp (refund.status, "succeeded") == 0 ||
                 strcmp (refund.status, "pending") == 0)) {
                s_settle_op_done (s, item, r->request_id);
                return;
            }
        }
    } else if (r->err == PAYMENT_STRIPE_OK) {
        payment_stripe_pi_t pi;
        const char *want = op->kind == S_OP_CAPTURE ? "succeeded" : "canceled";
        if (payment_stripe_pi_read (r->body, &pi, error, sizeof error) == 0 &&
            strcmp (pi.status, want) == 0) {
            s_settle_op_done (s, r->body, r->request_id);
            return;
        }
    }
    s_settle_op_failed (s, s->error);
}

/* The operation failed in a way that may hide its success: Stripe answered
   500 after doing it (and replays that 500 under the same key for as long
   as it keeps the key, so repeating it never tells), the answer was lost,
   or Stripe says the intent is no longer in the state the operation needs
   (done before). Asks Stripe for the intent (capture, cancel) or its
   refunds; s_on_settle_verified decides. Returns true when asked. */
static bool
s_settle_verify (s_settle_t *s, const payment_stripe_result_t *r)
{
    s_self_t *self = s->self;
    s_op_t *op = &s->ops[s->next];
    payment_row_t *row = &s->rows[op->index];
    s_tenant_t *t = s_tenant (self, s->tenant);
    if ((!payment_stripe_indeterminate (r->err) && r->err != PAYMENT_STRIPE_INVALID &&
         r->err != PAYMENT_STRIPE_CONFLICT) ||
        !t || !self->stripe || !s_id_ok (row->payment_intent))
        return false;
    char path[400];
    if (op->kind == S_OP_REFUND)
        snprintf (path, sizeof path, "/v1/refunds?payment_intent=%s&limit=100",
                  row->payment_intent);
    else
        snprintf (path, sizeof path, "/v1/payment_intents/%s", row->payment_intent);
    return payment_stripe_request (self->stripe, "GET", path, NULL,
                                   s_key (t, op->kind == S_OP_REFUND), NULL, s_on_settle_verified,
                                   s) == 0;
}

static void
s_on_settle_op (const payment_stripe_result_t *r, void *arg)
{
    s_settle_t *s = (s_settle_t *)arg;
    s_self_t *self = s->self;
    s_op_t *op = &s->ops[s->next];
    payment_row_t *row = &s->rows[op->index];
    static const char *names[] = {"pi.capture", "pi.cancel", "refund.create"};
    s_record_call (self, s->tenant, row->payment_id, names[op->kind], s->key, r);
    if (r->err != PAYMENT_STRIPE_OK) {
        snprintf (s->error, sizeof s->error, "%s", r->detail);
        if (!s_settle_verify (s, r))
            s_settle_op_failed (s, r->detail);
        return;
    }
    s_settle_op_done (s, r->body, r->request_id);
}

static void
s_settle_next (s_settle_t *s)
{
    s_self_t *self = s->self;
    if (s->next >= s->op_count) {
        if (s->failed) {
            if (s->call)
                ppm_rpc_call_error (&s->call, PPM_UNAVAILABLE,
                                    "settlement incomplete (%s); "
                                    "send it again",
                                    s->error);
            s_settle_free (&s);
            return;
        }
        /* Totals from the ledger as it is now. */
        payment_row_t *rows = NULL;
        size_t count = 0;
        if (payment_ledger_session_payments (self->pg, s->tenant, s->session_id, &rows, &count) ==
            PPM_PG_OK) {
            for (size_t i = 0; i < count; i++)
                if (!rows[i].refused) /* their money goes back whole */
                    s->result.charged += rows[i].captured - rows[i].refunded;
        }
        free (rows);
        payment_ledger_settle_done (self->pg, s->tenant, s->session_id, &s->result);
        s_settle_reply (s, false);
        s_settle_free (&s);
        return;
    }
    s_op_t *op = &s->ops[s->next];
    payment_row_t *row = &s->rows[op->index];
    s_tenant_t *t = s_tenant (self, s->tenant);
    char path[320];
    ppm_form_t *form = ppm_form_new ();
    if (!form) {
        s->failed = true;
        s->next = s->op_count;
        s_settle_next (s);
        return;
    }
    const char *key = s_key (t, false);
    if (op->kind == S_OP_CAPTURE) {
        snprintf (path, sizeof path, "/v1/payment_intents/%s/capture", row->payment_intent);
        ppm_form_add_int (form, "amount_to_capture", op->amount);
        s_idem_key (s->key, sizeof s->key, row->payment_id, "capture");
    } else if (op->kind == S_OP_CANCEL) {
        snprintf (path, sizeof path, "/v1/payment_intents/%s/cancel", row->payment_intent);
        ppm_form_add (form, "cancellation_reason", "abandoned");
        s_idem_key (s->key, sizeof s->key, row->payment_id, "cancel");
    } else {
        snprintf (path, sizeof path, "/v1/refunds");
        ppm_form_add (form, "payment_intent", row->payment_intent);
        ppm_form_add_int (form, "amount", op->amount);
        ppm_form_add (form, "reason", "requested_by_customer");
        ppm_form_add (form, "metadata[payment]", row->payment_id);
        ppm_form_add (form, "metadata[session]", row->session_id);
        s_idem_key (s->key, sizeof s->key, row->payment_id, "refund-settle");
        key = s_key (t, true);
    }
    if (s_form_send (self, "POST", path, &form, key, s->key, s_on_settle_op, s) != 0) {
        ppm_form_destroy (&form);
        s->failed = true;
        snprintf (s->error, sizeof s->error, "could not send a Stripe request");
        s->next = s->op_count;
        s_settle_next (s);
    }
}

/* What is left to do for the session's settlement, from the ledger as it
   is now: a run that stopped halfway (Stripe failed one operation) is
   planned again from what the earlier run already did, never from
   scratch. Payments metering refused take no part: their money goes back
   whole (s_unwind, reconciliation's give-back). */
static void
s_settle_plan (s_settle_t *s)
{
    int64_t used_ms = s->result.used_ms;
    const payment_row_t *first = NULL;
    for (size_t i = 0; i < s->count; i++)
        if (!s->rows[i].refused &&
            (s->rows[i].state == PAYMENT_ST_AUTHORIZED ||
             s->rows[i].state == PAYMENT_ST_SUCCEEDED || s->rows[i].state == PAYMENT_ST_REFUNDED)) {
            first = &s->rows[i];
            break;
        }
    if (!first)
        return;
    snprintf (s->result.currency, sizeof s->result.currency, "%s", first->currency);
    const ppm_currency_t *currency = ppm_currency_find (first->currency);
    bool per_second = strcmp (first->rounding, "second") == 0;
    int64_t used_amount = 0;
    if (ppm_money_for_usage (first->rate_per_minute, used_ms, per_second, &used_amount) !=
        PPM_MONEY_OK)
        used_amount = INT64_MAX;
    if (currency)
        ppm_money_round_step (currency, used_amount, true, &used_amount);
    s->used_minutes = (used_ms + 59999) / 60000;
    if (strcmp (first->billing_mode, "authorize") == 0) {
        /* captured by an earlier run of this settlement counts */
        int64_t remaining = used_amount;
        for (size_t i = 0; i < s->count; i++)
            if (!s->rows[i].refused)
                remaining -= s->rows[i].captured;
        for (size_t i = 0; i < s->count && s->op_count < 64; i++) {
            payment_row_t *row = &s->rows[i];
            if (row->state != PAYMENT_ST_AUTHORIZED || row->refused)
                continue;
            int64_t take = remaining < row->amount ? remaining : row->amount;
            if (take > 0) {
                s->ops[s->op_count++] = (s_op_t){S_OP_CAPTURE, take, i};
                remaining -= take;
                s->result.released += row->amount - take;
            } else {
                s->ops[s->op_count++] = (s_op_t){S_OP_CANCEL, 0, i};
                s->result.released += row->amount;
            }
        }
    } else if (first->refund_unused) {
        int64_t paid_minutes = 0;
        int64_t refunded_before = 0;
        for (size_t i = 0; i < s->count; i++) {
            const payment_row_t *row = &s->rows[i];
            if (row->refused ||
                (row->state != PAYMENT_ST_SUCCEEDED && row->state != PAYMENT_ST_REFUNDED))
                continue;
            paid_minutes += row->minutes;
            refunded_before += row->refunded;
        }
        int64_t unused = paid_minutes - s->used_minutes;
        int64_t refund = 0;
        if (unused > 0 && ppm_money_total (first->rate_per_minute, unused, &refund) != PPM_MONEY_OK)
            refund = 0;
        s->result.refunded = refund;
        /* refunded by an earlier run of this settlement counts */
        refund -= refunded_before;
        /* Refund from the newest payment backwards. */
        for (size_t k = s->count; k > 0 && refund > 0 && s->op_count < 64; k--) {
            payment_row_t *row = &s->rows[k - 1];
            if (row->refused ||
                (row->state != PAYMENT_ST_SUCCEEDED && row->state != PAYMENT_ST_REFUNDED))
                continue;
            int64_t room = row->captured - row->refunded;
            int64_t take = refund < room ? refund : room;
            if (take > 0) {
                s->ops[s->op_count++] = (s_op_t){S_OP_REFUND, take, k - 1};
                refund -= take;
            }
        }
    }
}

static void
s_settle_with_tenant (s_self_t *self, const ppm_status_t *status, void *arg)
{
    s_settle_t *s = (s_settle_t *)arg;
    if (status) {
        if (s->call)
            ppm_rpc_call_error (&s->call, PPM_UNAVAILABLE, "config: %s",
                                ppm_status_message (status));
        s_settle_free (&s);
        return;
    }
    if (payment_ledger_session_payments (self->pg, s->tenant, s->session_id, &s->rows, &s->count) !=
        PPM_PG_OK) {
        if (s->call)
            ppm_rpc_call_error (&s->call, PPM_UNAVAILABLE, "ledger unavailable");
        s_settle_free (&s);
        return;
    }
    s_settle_plan (s);
    s_settle_next (s);
}

static void
s_handle_settle (ppm_rpc_call_t *call, void *arg)
{
    s_self_t *self = (s_self_t *)arg;
    Ppm__V1__SettleRequest *req =
        (Ppm__V1__SettleRequest *)ppm_rpc_call_unpack (call, &ppm__v1__settle_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "malformed SettleRequest");
        return;
    }
    s_settle_t *s = (s_settle_t *)zmalloc (sizeof (s_settle_t));
    s->self = self;
    if (!s_tenant_of (&call, req->tenant_id, s->tenant, sizeof s->tenant)) {
        ppm__v1__settle_request__free_unpacked (req, NULL);
        free (s);
        return;
    }
    if (!s_id_ok (req->session_id) || req->used_ms < 0) {
        ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid settlement");
        ppm_status_add_field (st, s_id_ok (req->session_id) ? "used_ms" : "session_id",
                              "required, ≥ 0");
        ppm_rpc_call_fail (&call, &st);
        ppm__v1__settle_request__free_unpacked (req, NULL);
        free (s);
        return;
    }
    snprintf (s->session_id, sizeof s->session_id, "%s", req->session_id);
    s->call = call;
    ppm_pg_result_t rc = payment_ledger_settle_begin (self->pg, s->tenant, s->session_id,
                                                      req->used_ms, req->reason, &s->result);
    ppm__v1__settle_request__free_unpacked (req, NULL);
    if (rc != PPM_PG_OK) {
        ppm_rpc_call_error (&s->call, PPM_UNAVAILABLE, "ledger unavailable");
        s_settle_free (&s);
        return;
    }
    s->used_minutes = (s->result.used_ms + 59999) / 60000;
    if (s->result.done) {
        s_settle_reply (s, true);
        s_settle_free (&s);
        return;
    }
    /* One run per session at a time: metering re-sends Settle while no
       answer has come, and two runs would plan from the same ledger and
       both act. The running one answers; this one is dropped (the caller
       re-sends after its deadline if need be). */
    char running[200];
    snprintf (running, sizeof running, "%s/%s", s->tenant, s->session_id);
    if (zhashx_lookup (self->settling, running)) {
        ppm_rpc_call_discard (&s->call);
        s_settle_free (&s);
        return;
    }
    snprintf (s->running, sizeof s->running, "%s", running);
    zhashx_insert (self->settling, s->running, (void *)1);
    s->result.charged = s->result.refunded = s->result.released = 0;
    s_tenant_get (self, s->tenant, s_settle_with_tenant, s);
}

/* ---- fetching from Stripe (webhooks, reconciliation) ---------------------------------- */

typedef void (s_done_fn) (s_self_t *self, void *arg);

typedef struct {
    s_self_t *self;
    char tenant[80];
    char payment_id[40];
    char event_id[256];
    char cause[96];
    s_done_fn *done;
    void *done_arg;
    bool cancel_if_unpaid; /* reconciliation: abandon an unpaid intent */
    char key[300];
    char customer[256]; /* reconciliation of a lost create */
} s_fetch_t;

static void
s_fetch_end (s_fetch_t *f)
{
    if (f->event_id[0])
        payment_ledger_event_done (f->self->pg, f->tenant, f->event_id, "applied");
    if (f->done)
        f->done (f->self, f->done_arg);
    free (f);
}

static void s_fetch_pi (s_fetch_t *f, const char *pi_id);

static void
s_on_cancel_abandoned (const payment_stripe_result_t *r, void *arg)
{
    s_fetch_t *f = (s_fetch_t *)arg;
    s_record_call (f->self, f->tenant, f->payment_id, "pi.cancel", f->key, r);
    payment_stripe_pi_t pi;
    char error[200];
    payment_row_t after;
    if (r->err == PAYMENT_STRIPE_OK &&
        payment_stripe_pi_read (r->body, &pi, error, sizeof error) == 0)
        s_apply_pi (f->self, f->tenant, f->payment_id, &pi, "reconcile: abandoned, canceled",
                    r->request_id, NULL, &after);
    s_fetch_end (f);
}

static void
s_on_fetched_pi (const payment_stripe_result_t *r, void *arg)
{
    s_fetch_t *f = (s_fetch_t *)arg;
    s_self_t *self = f->self;
    payment_stripe_pi_t pi;
    char error[200];
    if (r->err != PAYMENT_STRIPE_OK ||
        payment_stripe_pi_read (r->body, &pi, error, sizeof error) != 0) {
        if (f->event_id[0]) {
            f->event_id[0] = '\0'; /* unprocessed: a redelivery tries again */
        }
        s_fetch_end (f);
        return;
    }
    if (!f->payment_id[0]) {
        payment_row_t row;
        bool found = false;
        if (pi.meta.payment[0])
            payment_ledger_get (self->pg, f->tenant, pi.meta.payment, &row, &found);
        if (!found)
            payment_ledger_find_stripe (self->pg, f->tenant, pi.id, NULL, &row, &found);
        if (!found) {
            s_fetch_end (f);
            return;
        }
        snprintf (f->payment_id, sizeof f->payment_id, "%s", row.payment_id);
    }
    payment_row_t after;
    s_apply_pi (self, f->tenant, f->payment_id, &pi, f->cause, r->request_id,
                f->event_id[0] ? f->event_id : NULL, &after);
    payment_state_t st = s_state_of_pi (&pi);
    if (f->cancel_if_unpaid && (st == PAYMENT_ST_PENDING || st == PAYMENT_ST_REQUIRES_ACTION)) {
        s_tenant_t *t = s_tenant (self, f->tenant);
        char path[320];
        snprintf (path, sizeof path, "/v1/payment_intents/%s/cancel", pi.id);
        s_idem_key (f->key, sizeof f->key, f->payment_id, "cancel");
        ppm_form_t *form = ppm_form_new ();
        if (form)
            ppm_form_add (form, "cancellation_reason", "abandoned");
        if (t && form &&
            s_form_send (self, "POST", path, &form, s_key (t, false), f->key, s_on_cancel_abandoned,
                         f) == 0)
            return;
        ppm_form_destroy (&form);
    }
    s_fetch_end (f);
}

static void
s_fetch_pi (s_fetch_t *f, const char *pi_id)
{
    s_tenant_t *t = s_tenant (f->self, f->tenant);
    char path[320];
    snprintf (path, sizeof path, "/v1/payment_intents/%s", pi_id);
    if (!t || !s_id_ok (pi_id) || !f->self->stripe ||
        payment_stripe_request (f->self->stripe, "GET", path, NULL, s_key (t, false), NULL,
                                s_on_fetched_pi, f) != 0)
        s_fetch_end (f);
}

static void
s_on_fetched_checkout (const payment_stripe_result_t *r, void *arg)
{
    s_fetch_t *f = (s_fetch_t *)arg;
    s_self_t *self = f->self;
    payment_stripe_checkout_t cs;
    char error[200];
    if (r->err != PAYMENT_STRIPE_OK ||
        payment_stripe_checkout_read (r->body, &cs, error, sizeof error) != 0) {
        f->event_id[0] = '\0';
        s_fetch_end (f);
        return;
    }
    payment_row_t row;
    bool found = false;
    if (cs.client_reference_id[0])
        payment_ledger_get (self->pg, f->tenant, cs.client_reference_id, &row, &found);
    if (!found)
        payment_ledger_find_stripe (self->pg, f->tenant, NULL, cs.id, &row, &found);
    if (!found) {
        s_fetch_end (f);
        return;
    }
    snprintf (f->payment_id, sizeof f->payment_id, "%s", row.payment_id);
    payment_change_t ch = PAYMENT_CHANGE_INIT;
    ch.cause = f->cause;
    ch.request_id = r->request_id;
    ch.checkout_session = cs.id;
    ch.event_id = f->event_id[0] ? f->event_id : NULL;
    if (cs.payment_intent[0])
        ch.payment_intent = cs.payment_intent;
    payment_row_t after;
    bool changed = false;
    payment_state_t to = strcmp (cs.status, "expired") == 0 ? PAYMENT_ST_CANCELED : row.state;
    if (to == PAYMENT_ST_CREATED)
        to = PAYMENT_ST_PENDING;
    if (payment_ledger_apply (self->pg, f->tenant, row.payment_id, to, &ch, &changed, &after) ==
            PPM_PG_OK &&
        changed)
        s_after_change (self, &after);
    if (cs.payment_intent[0]) {
        s_fetch_pi (f, cs.payment_intent);
        return;
    }
    s_fetch_end (f);
}

static void
s_fetch_checkout (s_fetch_t *f, const char *cs_id)
{
    s_tenant_t *t = s_tenant (f->self, f->tenant);
    char path[320];
    snprintf (path, sizeof path, "/v1/checkout/sessions/%s", cs_id);
    if (!t || !s_id_ok (cs_id) || !f->self->stripe ||
        payment_stripe_request (f->self->stripe, "GET", path, NULL, s_key (t, false), NULL,
                                s_on_fetched_checkout, f) != 0)
        s_fetch_end (f);
}

/* ---- payment.Webhook ------------------------------------------------------------------- */

typedef struct {
    s_self_t *self;
    ppm_rpc_call_t *call;
    char tenant[80];
    Ppm__V1__WebhookRequest *req;
} s_webhook_t;

static void
s_webhook_free (s_webhook_t **w_p)
{
    s_webhook_t *w = *w_p;
    if (!w)
        return;
    if (w->req)
        ppm__v1__webhook_request__free_unpacked (w->req, NULL);
    free (w);
    *w_p = NULL;
}

static void
s_webhook_dispute (s_self_t *self, const char *tenant, const payment_stripe_event_t *ev)
{
    payment_stripe_object_t dp;
    char error[200];
    if (payment_stripe_object_read (ev->object, &dp, error, sizeof error) != 0)
        return;
    payment_row_t row;
    bool found = false;
    if (dp.payment_intent[0])
        payment_ledger_find_stripe (self->pg, tenant, dp.payment_intent, NULL, &row, &found);
    if (!found) {
        ppm_log_kv (PPM_LOG_WARN, "dispute for an unknown payment", "dispute_id", dp.id,
                    PPM_LOG_END);
        return;
    }
    bool is_new = false;
    payment_ledger_dispute (self->pg, tenant, row.payment_id, dp.id, dp.charge, dp.reason,
                            dp.status, dp.amount, &is_new);
    payment_change_t ch = PAYMENT_CHANGE_INIT;
    ch.cause = "webhook charge.dispute.created";
    ch.event_id = ev->id;
    ch.disputed = true;
    payment_row_t after;
    bool changed = false;
    payment_ledger_apply (self->pg, tenant, row.payment_id, row.state, &ch, &changed, &after);
    if (is_new)
        s_publish (self, "payment.disputed", changed ? &after : &row, dp.id, dp.reason);
}

static void
s_webhook_refunded (s_self_t *self, const char *tenant, const payment_stripe_event_t *ev)
{
    payment_stripe_object_t charge;
    char error[200];
    if (payment_stripe_object_read (ev->object, &charge, error, sizeof error) != 0)
        return;
    payment_row_t row;
    bool found = false;
    if (charge.payment_intent[0])
        payment_ledger_find_stripe (self->pg, tenant, charge.payment_intent, NULL, &row, &found);
    if (!found)
        return;
    payment_change_t ch = PAYMENT_CHANGE_INIT;
    ch.cause = "webhook charge.refunded";
    ch.event_id = ev->id;
    ch.refunded = charge.amount_refunded;
    payment_row_t after;
    bool changed = false;
    if (charge.amount_refunded > row.refunded &&
        payment_ledger_apply (self->pg, tenant, row.payment_id, PAYMENT_ST_REFUNDED, &ch, &changed,
                              &after) == PPM_PG_OK &&
        changed)
        s_after_change (self, &after);
}

static void
s_webhook_with_tenant (s_self_t *self, const ppm_status_t *status, void *arg)
{
    s_webhook_t *w = (s_webhook_t *)arg;
    if (status) {
        ppm_code_t code = ppm_status_code (status);
        ppm_rpc_call_error (&w->call, code == PPM_NOT_FOUND ? PPM_NOT_FOUND : PPM_UNAVAILABLE,
                            "config: %s", ppm_status_message (status));
        s_webhook_free (&w);
        return;
    }
    s_tenant_t *t = s_tenant (self, w->tenant);
    if (!t->webhook_secret[0]) {
        ppm_rpc_call_error (&w->call, PPM_FAILED_PRECONDITION,
                            "the tenant has no webhook secret configured");
        s_webhook_free (&w);
        return;
    }
    const ProtobufCBinaryData *body = &w->req->payload;
    ppm_stripe_sig_err_t serr =
        ppm_stripe_sig_verify (w->req->signature, body->data, body->len, t->webhook_secret,
                               ppm_clock_real_ms () / 1000, PPM_STRIPE_SIG_TOLERANCE_S, NULL);
    if (serr != PPM_STRIPE_SIG_OK) {
        ppm_counter_inc (self->m_webhooks_bad, 1,
                         serr == PPM_STRIPE_SIG_TOLERANCE ? "timestamp" : "signature");
        ppm_rpc_call_error (&w->call, PPM_UNAUTHENTICATED, "Stripe-Signature: %s",
                            ppm_stripe_sig_strerror (serr));
        s_webhook_free (&w);
        return;
    }
    char error[200];
    json_t *root =
        payment_stripe_json_parse ((const char *)body->data, body->len, error, sizeof error);
    payment_stripe_event_t ev;
    if (!root || payment_stripe_event_read (root, &ev, error, sizeof error) != 0) {
        ppm_counter_inc (self->m_webhooks_bad, 1, "malformed");
        json_decref (root);
        ppm_rpc_call_error (&w->call, PPM_INVALID_ARGUMENT, "not a Stripe event: %s", error);
        s_webhook_free (&w);
        return;
    }
    if (ev.livemode != (strcmp (t->mode, "live") == 0)) {
        json_decref (root);
        ppm_rpc_call_error (&w->call, PPM_INVALID_ARGUMENT,
                            "event livemode does not match the tenant's %s mode", t->mode);
        s_webhook_free (&w);
        return;
    }
    bool seen = false;
    if (payment_ledger_event_begin (self->pg, w->tenant, ev.id, ev.type, &seen) != PPM_PG_OK) {
        json_decref (root);
        ppm_rpc_call_error (&w->call, PPM_UNAVAILABLE, "ledger unavailable");
        s_webhook_free (&w);
        return;
    }
    static const char *handled[] = {"payment_intent.succeeded",
                                    "payment_intent.payment_failed",
                                    "payment_intent.canceled",
                                    "payment_intent.amount_capturable_updated",
                                    "payment_intent.processing",
                                    "payment_intent.requires_action",
                                    "charge.refunded",
                                    "checkout.session.completed",
                                    "checkout.session.expired",
                                    "checkout.session.async_payment_succeeded",
                                    "checkout.session.async_payment_failed",
                                    "charge.dispute.created",
                                    NULL};
    bool known = false;
    for (int i = 0; handled[i]; i++)
        known = known || strcmp (handled[i], ev.type) == 0;
    if (seen)
        ppm_counter_inc (self->m_webhooks_dup, 1);
    else
        ppm_counter_inc (self->m_webhooks, 1, known ? ev.type : "other");
    /* Answer first (Stripe wants 2xx fast), then do the work. */
    Ppm__V1__WebhookReply reply = PPM__V1__WEBHOOK_REPLY__INIT;
    reply.event_id = ev.id;
    reply.type = ev.type;
    reply.duplicate = seen;
    reply.ignored = !known;
    ppm_rpc_call_reply (&w->call, &reply.base);
    if (seen || !known) {
        if (!known && !seen)
            payment_ledger_event_done (self->pg, w->tenant, ev.id, "ignored");
        json_decref (root);
        s_webhook_free (&w);
        return;
    }
    if (strcmp (ev.type, "charge.dispute.created") == 0) {
        s_webhook_dispute (self, w->tenant, &ev);
        payment_ledger_event_done (self->pg, w->tenant, ev.id, "applied");
    } else if (strcmp (ev.type, "charge.refunded") == 0) {
        s_webhook_refunded (self, w->tenant, &ev);
        payment_ledger_event_done (self->pg, w->tenant, ev.id, "applied");
    } else {
        /* The current state matters: fetch the object, never trust the
           event's copy (events come in any order). */
        s_fetch_t *f = (s_fetch_t *)zmalloc (sizeof (s_fetch_t));
        f->self = self;
        snprintf (f->tenant, sizeof f->tenant, "%s", w->tenant);
        snprintf (f->event_id, sizeof f->event_id, "%s", ev.id);
        snprintf (f->cause, sizeof f->cause, "webhook %s", ev.type);
        const char *id = json_string_value (json_object_get (ev.object, "id"));
        if (strncmp (ev.type, "checkout.session.", 17) == 0)
            s_fetch_checkout (f, id ? id : "");
        else
            s_fetch_pi (f, id ? id : "");
    }
    json_decref (root);
    s_webhook_free (&w);
}

static void
s_handle_webhook (ppm_rpc_call_t *call, void *arg)
{
    s_self_t *self = (s_self_t *)arg;
    Ppm__V1__WebhookRequest *req = (Ppm__V1__WebhookRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__webhook_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "malformed WebhookRequest");
        return;
    }
    s_webhook_t *w = (s_webhook_t *)zmalloc (sizeof (s_webhook_t));
    w->self = self;
    w->req = req;
    if (!s_tenant_of (&call, req->tenant_id, w->tenant, sizeof w->tenant)) {
        s_webhook_free (&w);
        return;
    }
    w->call = call;
    if (!req->signature[0]) {
        ppm_rpc_call_error (&w->call, PPM_UNAUTHENTICATED, "Stripe-Signature: %s",
                            ppm_stripe_sig_strerror (PPM_STRIPE_SIG_NO_HEADER));
        s_webhook_free (&w);
        return;
    }
    if (req->payload.len == 0 || req->payload.len > S_WEBHOOK_MAX) {
        ppm_rpc_call_error (&w->call, PPM_INVALID_ARGUMENT, "webhook body of %zu bytes",
                            req->payload.len);
        s_webhook_free (&w);
        return;
    }
    s_tenant_get (self, w->tenant, s_webhook_with_tenant, w);
}

/* ---- reconciliation ---------------------------------------------------------------------- */

typedef struct {
    s_self_t *self;
    ppm_rpc_call_t *call; /* NULL: run by the timer */
    payment_row_t *rows;
    size_t count;
    size_t started; /* rows handed out */
    size_t waiting; /* rows in flight */
    bool loading;   /* a tenant's keys are being fetched */
    bool in_step;   /* s_reconcile_step is on the stack */
    int checked;
    int resolved;
    bool abandon_all;
} s_reconcile_t;

static void s_reconcile_step (s_reconcile_t *r);

static void
s_reconcile_finish (s_reconcile_t *r)
{
    s_self_t *self = r->self;
    for (size_t i = 0; i < r->count; i++) {
        payment_row_t now;
        bool found = false;
        if (payment_ledger_get (self->pg, r->rows[i].tenant_id, r->rows[i].payment_id, &now,
                                &found) == PPM_PG_OK &&
            found && now.state != r->rows[i].state)
            r->resolved++;
    }
    if (r->call) {
        Ppm__V1__ReconcileReply reply = PPM__V1__RECONCILE_REPLY__INIT;
        reply.checked = r->checked;
        reply.resolved = r->resolved;
        ppm_rpc_call_reply (&r->call, &reply.base);
    }
    if (r->resolved > 0)
        ppm_log_info ("reconciliation: %d of %d payments resolved", r->resolved, r->checked);
    self->reconcile_running = false;
    free (r->rows);
    free (r);
}

static void
s_reconcile_one_done (s_self_t *self, void *arg)
{
    (void)self;
    s_reconcile_t *r = (s_reconcile_t *)arg;
    r->waiting--;
    s_reconcile_step (r);
}

static void
s_on_listed (const payment_stripe_result_t *res, void *arg)
{
    s_fetch_t *f = (s_fetch_t *)arg;
    s_self_t *self = f->self;
    if (res->err != PAYMENT_STRIPE_OK) {
        s_fetch_end (f);
        return;
    }
    json_t *data = json_object_get (res->body, "data");
    size_t index;
    json_t *item;
    json_array_foreach (data, index, item)
    {
        payment_stripe_pi_t pi;
        char error[200];
        if (payment_stripe_pi_read (item, &pi, error, sizeof error) == 0 &&
            strcmp (pi.meta.payment, f->payment_id) == 0) {
            payment_row_t after;
            s_apply_pi (self, f->tenant, f->payment_id, &pi, "reconcile: found by customer",
                        res->request_id, NULL, &after);
            s_fetch_pi (f, pi.id);
            return;
        }
    }
    if (!json_is_array (data) || json_array_size (data) < 100) {
        /* Complete list, no intent of ours: Stripe created nothing. */
        payment_change_t ch = PAYMENT_CHANGE_INIT;
        ch.cause = "reconcile: no intent at Stripe";
        payment_ledger_apply (self->pg, f->tenant, f->payment_id, PAYMENT_ST_CANCELED, &ch, NULL,
                              NULL);
    }
    s_fetch_end (f);
}

static void
s_on_recreated (const payment_stripe_result_t *res, void *arg)
{
    s_fetch_t *f = (s_fetch_t *)arg;
    s_self_t *self = f->self;
    s_record_call (self, f->tenant, f->payment_id, "reconcile.create", f->key, res);
    char error[200];
    payment_row_t after;
    if (res->err == PAYMENT_STRIPE_OK) {
        payment_stripe_pi_t pi;
        payment_stripe_checkout_t cs;
        if (payment_stripe_pi_read (res->body, &pi, error, sizeof error) == 0) {
            s_apply_pi (self, f->tenant, f->payment_id, &pi, "reconcile: create replayed",
                        res->request_id, NULL, &after);
            s_fetch_pi (f, pi.id); /* then cancel it if unpaid and abandoned */
            return;
        }
        if (payment_stripe_checkout_read (res->body, &cs, error, sizeof error) == 0) {
            payment_change_t ch = PAYMENT_CHANGE_INIT;
            ch.cause = "reconcile: checkout create replayed";
            ch.request_id = res->request_id;
            ch.checkout_session = cs.id;
            ch.checkout_url = cs.url;
            payment_ledger_apply (self->pg, f->tenant, f->payment_id, PAYMENT_ST_PENDING, &ch, NULL,
                                  &after);
        }
    } else if (payment_stripe_indeterminate (res->err) && f->customer[0]) {
        /* Stripe keeps replaying an indeterminate answer (it stores even a
           500 under the key): look for the intent among the customer's. */
        s_tenant_t *t = s_tenant (self, f->tenant);
        char path[400];
        snprintf (path, sizeof path, "/v1/payment_intents?customer=%s&limit=100", f->customer);
        if (t && s_id_ok (f->customer) && self->stripe &&
            payment_stripe_request (self->stripe, "GET", path, NULL, s_key (t, false), NULL,
                                    s_on_listed, f) == 0)
            return;
    } else if (!payment_stripe_indeterminate (res->err) &&
               res->err != PAYMENT_STRIPE_RATE_LIMITED && res->err != PAYMENT_STRIPE_CONFLICT) {
        /* refused for good (429 and 409 only say "not now": next run) */
        payment_change_t ch = PAYMENT_CHANGE_INIT;
        ch.cause = "reconcile: create refused";
        ch.failure_code = payment_stripe_strerror (res->err);
        payment_ledger_apply (self->pg, f->tenant, f->payment_id, PAYMENT_ST_CANCELED, &ch, NULL,
                              &after);
    }
    s_fetch_end (f);
}

/* A payment metering refused whose money is not back yet (the first
   attempt failed, or the process died before it): first ask Stripe
   whether it already happened — a release or refund may have been done
   while its answer was lost, or answered 500 after executing, which
   Stripe replays under the same key — and record it; otherwise release
   or refund now (s_unwind, same keys). */
typedef struct {
    s_self_t *self;
    char tenant[80];
    char payment_id[40];
    s_reconcile_t *r;
} s_giveback_t;

static void
s_giveback_end (void *arg)
{
    s_giveback_t *g = (s_giveback_t *)arg;
    s_reconcile_one_done (g->self, g->r);
    free (g);
}

static void
s_on_giveback_seen (const payment_stripe_result_t *res, void *arg)
{
    s_giveback_t *g = (s_giveback_t *)arg;
    s_self_t *self = g->self;
    payment_row_t row;
    bool found = false;
    char error[200];
    if (res->err != PAYMENT_STRIPE_OK ||
        payment_ledger_get (self->pg, g->tenant, g->payment_id, &row, &found) != PPM_PG_OK ||
        !found) {
        s_giveback_end (g);
        return;
    }
    if (row.state == PAYMENT_ST_AUTHORIZED) {
        payment_stripe_pi_t pi;
        if (payment_stripe_pi_read (res->body, &pi, error, sizeof error) == 0 &&
            strcmp (pi.status, "canceled") == 0) {
            payment_row_t after;
            s_apply_pi (self, g->tenant, g->payment_id, &pi, "metering refused funding: released",
                        res->request_id, NULL, &after);
            s_giveback_end (g);
            return;
        }
    } else {
        size_t i;
        json_t *item;
        json_array_foreach (json_object_get (res->body, "data"), i, item)
        {
            payment_stripe_object_t refund;
            if (payment_stripe_object_read (item, &refund, error, sizeof error) == 0 &&
                strcmp (refund.meta.payment, g->payment_id) == 0 &&
                refund.amount == row.captured - row.refunded &&
                (strcmp (refund.status, "succeeded") == 0 ||
                 strcmp (refund.status, "pending") == 0)) {
                s_record_unfunded_refund (self, g->tenant, g->payment_id, item, refund.amount,
                                          res->request_id);
                s_giveback_end (g);
                return;
            }
        }
    }
    if (s_unwind (self, g->tenant, g->payment_id, s_giveback_end, g) != 0)
        s_giveback_end (g);
}

static void
s_giveback (s_self_t *self, s_reconcile_t *r, const payment_row_t *row)
{
    s_tenant_t *t = s_tenant (self, row->tenant_id);
    s_giveback_t *g = (s_giveback_t *)zmalloc (sizeof (s_giveback_t));
    g->self = self;
    g->r = r;
    snprintf (g->tenant, sizeof g->tenant, "%s", row->tenant_id);
    snprintf (g->payment_id, sizeof g->payment_id, "%s", row->payment_id);
    char path[400];
    bool authorized = row->state == PAYMENT_ST_AUTHORIZED;
    if (authorized)
        snprintf (path, sizeof path, "/v1/payment_intents/%s", row->payment_intent);
    else
        snprintf (path, sizeof path, "/v1/refunds?payment_intent=%s&limit=100",
                  row->payment_intent);
    if (!t || !self->stripe || !s_id_ok (row->payment_intent) ||
        payment_stripe_request (self->stripe, "GET", path, NULL, s_key (t, !authorized), NULL,
                                s_on_giveback_seen, g) != 0)
        s_giveback_end (g);
}

/* Resolves one row; the tenant's keys are loaded. */
static void
s_reconcile_row (s_self_t *self, s_reconcile_t *r, const payment_row_t *listed)
{
    /* The run's list was read when it started; a checkout, a confirm or a
       webhook may have moved the payment since: act on it as it is now. */
    payment_row_t fresh;
    bool found = false;
    const payment_row_t *row = listed;
    if (payment_ledger_get (self->pg, listed->tenant_id, listed->payment_id, &fresh, &found) ==
            PPM_PG_OK &&
        found)
        row = &fresh;
    r->checked++;
    if (row->state == PAYMENT_ST_AUTHORIZED || row->state == PAYMENT_ST_SUCCEEDED ||
        row->state == PAYMENT_ST_REFUNDED || row->state == PAYMENT_ST_CANCELED) {
        /* refused by metering (payment_ledger_unreturned): give it back;
           anything else is settled already */
        if (row->refused && row->state != PAYMENT_ST_CANCELED &&
            (row->state == PAYMENT_ST_AUTHORIZED || row->refunded < row->captured)) {
            r->waiting++;
            s_giveback (self, r, row);
        }
        return;
    }
    s_tenant_t *t = s_tenant (self, row->tenant_id);
    r->waiting++;
    s_fetch_t *f = (s_fetch_t *)zmalloc (sizeof (s_fetch_t));
    f->self = self;
    snprintf (f->tenant, sizeof f->tenant, "%s", row->tenant_id);
    snprintf (f->payment_id, sizeof f->payment_id, "%s", row->payment_id);
    snprintf (f->cause, sizeof f->cause, "reconcile");
    f->done = s_reconcile_one_done;
    f->done_arg = r;
    f->cancel_if_unpaid =
        r->abandon_all || ppm_clock_now_ms () - row->created_at_ms >= self->config.abandon_after_ms;
    if (row->payment_intent[0]) {
        s_fetch_pi (f, row->payment_intent);
        return;
    }
    if (row->checkout_session[0]) {
        s_fetch_checkout (f, row->checkout_session);
        return;
    }
    if (!row->customer[0]) {
        /* Stripe never heard of this payment (we stopped before the
           create call): nothing can be pending there. */
        payment_change_t ch = PAYMENT_CHANGE_INIT;
        ch.cause = "reconcile: never sent to Stripe";
        payment_ledger_apply (self->pg, row->tenant_id, row->payment_id, PAYMENT_ST_CANCELED, &ch,
                              NULL, NULL);
        s_fetch_end (f);
        return;
    }
    /* The create call's answer was lost: repeat it with the same key and
       the same parameters; Stripe replays its first answer. */
    snprintf (f->customer, sizeof f->customer, "%s", row->customer);
    char path[64];
    ppm_form_t *form = s_create_form (row, path, sizeof path);
    if (form && strcmp (row->flow, "hosted") == 0)
        s_fix_nested_metadata (&form);
    s_idem_key (f->key, sizeof f->key, row->payment_id, "create");
    if (!form || !t ||
        s_form_send (self, "POST", path, &form, s_key (t, false), f->key, s_on_recreated, f) != 0) {
        ppm_form_destroy (&form);
        s_fetch_end (f);
    }
}

static void
s_reconcile_tenant_back (s_self_t *self, const ppm_status_t *status, void *arg)
{
    (void)self;
    s_reconcile_t *r = (s_reconcile_t *)arg;
    r->loading = false;
    if (status)
        r->started++; /* no keys for this tenant now: skip the row */
    s_reconcile_step (r);
}

/* Hands out rows, at most 32 in flight, loading each tenant's keys first. */
static void
s_reconcile_step (s_reconcile_t *r)
{
    if (r->in_step || r->loading)
        return;
    s_self_t *self = r->self;
    r->in_step = true;
    while (r->started < r->count && r->waiting < 32 && !r->loading) {
        const payment_row_t *row = &r->rows[r->started];
        s_tenant_t *t = s_tenant (self, row->tenant_id);
        if (!t || !t->valid) {
            r->loading = true;
            s_tenant_get (self, row->tenant_id, s_reconcile_tenant_back, r);
            continue; /* loading may have been cleared by a synchronous answer */
        }
        r->started++;
        s_reconcile_row (self, r, row);
    }
    r->in_step = false;
    if (r->started >= r->count && r->waiting == 0 && !r->loading)
        s_reconcile_finish (r);
}

static void
s_reconcile_start (s_self_t *self, ppm_rpc_call_t *call, const char *tenant, bool abandon_all)
{
    if (self->reconcile_running) {
        if (call)
            ppm_rpc_call_error (&call, PPM_ABORTED, "reconciliation already running; retry");
        return;
    }
    s_reconcile_t *r = (s_reconcile_t *)zmalloc (sizeof (s_reconcile_t));
    r->self = self;
    r->call = call;
    r->abandon_all = abandon_all;
    int64_t before = ppm_clock_now_ms () - (call ? 0 : self->config.reconcile_age_ms);
    payment_row_t *unreturned = NULL;
    size_t n_unreturned = 0;
    if (payment_ledger_unresolved (self->pg, tenant, before, &r->rows, &r->count) != PPM_PG_OK ||
        payment_ledger_unreturned (self->pg, tenant, before, &unreturned, &n_unreturned) !=
            PPM_PG_OK) {
        if (r->call)
            ppm_rpc_call_error (&r->call, PPM_UNAVAILABLE, "ledger unavailable");
        free (r->rows);
        free (unreturned);
        free (r);
        return;
    }
    /* payments still open, then refused ones whose money is not back */
    if (n_unreturned > 0) {
        payment_row_t *all = realloc (r->rows, (r->count + n_unreturned) * sizeof *all);
        assert (all);
        memcpy (all + r->count, unreturned, n_unreturned * sizeof *all);
        r->rows = all;
        r->count += n_unreturned;
    }
    free (unreturned);
    self->reconcile_running = true;
    s_reconcile_step (r);
}

static int
s_reconcile_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_reconcile_start ((s_self_t *)arg, NULL, NULL, false);
    return 0;
}

static void
s_handle_reconcile (ppm_rpc_call_t *call, void *arg)
{
    s_self_t *self = (s_self_t *)arg;
    Ppm__V1__ReconcileRequest *req = (Ppm__V1__ReconcileRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__reconcile_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "malformed ReconcileRequest");
        return;
    }
    char tenant[80];
    snprintf (tenant, sizeof tenant, "%s",
              req->tenant_id[0] ? req->tenant_id : ppm_rpc_call_tenant (call));
    ppm__v1__reconcile_request__free_unpacked (req, NULL);
    /* On demand: every unresolved payment, and unpaid ones are abandoned. */
    s_reconcile_start (self, call, tenant, true);
}

/* ---- queries -------------------------------------------------------------------------------- */

static void
s_handle_get (ppm_rpc_call_t *call, void *arg)
{
    s_self_t *self = (s_self_t *)arg;
    Ppm__V1__GetPaymentRequest *req = (Ppm__V1__GetPaymentRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__get_payment_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "malformed GetPaymentRequest");
        return;
    }
    char tenant[80];
    if (s_tenant_of (&call, req->tenant_id, tenant, sizeof tenant)) {
        payment_row_t row;
        bool found = false;
        if (payment_ledger_get (self->pg, tenant, req->payment_id, &row, &found) != PPM_PG_OK)
            ppm_rpc_call_error (&call, PPM_UNAVAILABLE, "ledger unavailable");
        else if (!found)
            ppm_rpc_call_error (&call, PPM_NOT_FOUND, "no such payment");
        else {
            Ppm__V1__Payment p;
            s_to_proto (&row, &p);
            ppm_rpc_call_reply (&call, &p.base);
        }
    }
    ppm__v1__get_payment_request__free_unpacked (req, NULL);
}

static void
s_handle_list (ppm_rpc_call_t *call, void *arg)
{
    s_self_t *self = (s_self_t *)arg;
    Ppm__V1__ListPaymentsRequest *req = (Ppm__V1__ListPaymentsRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__list_payments_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "malformed ListPaymentsRequest");
        return;
    }
    char tenant[80];
    if (!s_tenant_of (&call, req->tenant_id, tenant, sizeof tenant)) {
        ppm__v1__list_payments_request__free_unpacked (req, NULL);
        return;
    }
    int limit = req->limit == 0 ? 50 : req->limit;
    if (limit < 1 || limit > 200) {
        ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid limit");
        ppm_status_add_field (st, "limit", "must be 1 to 200");
        ppm_rpc_call_fail (&call, &st);
        ppm__v1__list_payments_request__free_unpacked (req, NULL);
        return;
    }
    payment_filter_t filter = {req->session_id, req->payee, req->payer, 0, 0};
    payment_row_t *rows = NULL;
    size_t count = 0;
    char next[128];
    ppm_pg_result_t rc = payment_ledger_list (self->pg, tenant, &filter, req->cursor, limit, &rows,
                                              &count, next, sizeof next);
    if (rc == PPM_PG_CONSTRAINT) {
        ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid cursor");
        ppm_status_add_field (st, "cursor", "not a cursor of this list");
        ppm_rpc_call_fail (&call, &st);
    } else if (rc != PPM_PG_OK)
        ppm_rpc_call_error (&call, PPM_UNAVAILABLE, "ledger unavailable");
    else {
        Ppm__V1__ListPaymentsReply reply = PPM__V1__LIST_PAYMENTS_REPLY__INIT;
        Ppm__V1__Payment *items = (Ppm__V1__Payment *)calloc (count + 1, sizeof *items);
        Ppm__V1__Payment **ptrs = (Ppm__V1__Payment **)calloc (count + 1, sizeof *ptrs);
        for (size_t i = 0; i < count; i++) {
            s_to_proto (&rows[i], &items[i]);
            ptrs[i] = &items[i];
        }
        reply.n_payments = count;
        reply.payments = ptrs;
        reply.next_cursor = next;
        ppm_rpc_call_reply (&call, &reply.base);
        free (items);
        free (ptrs);
    }
    free (rows);
    ppm__v1__list_payments_request__free_unpacked (req, NULL);
}

static void
s_handle_totals (ppm_rpc_call_t *call, void *arg)
{
    s_self_t *self = (s_self_t *)arg;
    Ppm__V1__SessionTotalsRequest *req = (Ppm__V1__SessionTotalsRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__session_totals_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "malformed SessionTotalsRequest");
        return;
    }
    char tenant[80];
    payment_totals_t t;
    if (s_tenant_of (&call, req->tenant_id, tenant, sizeof tenant)) {
        if (payment_ledger_session_totals (self->pg, tenant, req->session_id, &t) != PPM_PG_OK)
            ppm_rpc_call_error (&call, PPM_UNAVAILABLE, "ledger unavailable");
        else {
            Ppm__V1__SessionTotalsReply reply = PPM__V1__SESSION_TOTALS_REPLY__INIT;
            reply.session_id = req->session_id;
            reply.currency = t.currency;
            reply.minutes_bought = t.minutes_bought;
            reply.amount_paid = t.amount_paid;
            reply.charged = t.charged;
            reply.refunded = t.refunded;
            reply.payments = t.payments;
            reply.settled = t.settled;
            reply.used_ms = t.used_ms;
            ppm_rpc_call_reply (&call, &reply.base);
        }
    }
    ppm__v1__session_totals_request__free_unpacked (req, NULL);
}

static void
s_handle_earnings (ppm_rpc_call_t *call, void *arg)
{
    s_self_t *self = (s_self_t *)arg;
    Ppm__V1__EarningsRequest *req = (Ppm__V1__EarningsRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__earnings_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "malformed EarningsRequest");
        return;
    }
    char tenant[80];
    if (s_tenant_of (&call, req->tenant_id, tenant, sizeof tenant)) {
        payment_earnings_t *rows = NULL;
        size_t count = 0;
        if (payment_ledger_earnings (self->pg, tenant, req->payee, req->from_ms, req->to_ms, &rows,
                                     &count) != PPM_PG_OK)
            ppm_rpc_call_error (&call, PPM_UNAVAILABLE, "ledger unavailable");
        else {
            Ppm__V1__EarningsReply reply = PPM__V1__EARNINGS_REPLY__INIT;
            Ppm__V1__PayeeEarnings *items =
                (Ppm__V1__PayeeEarnings *)calloc (count + 1, sizeof *items);
            Ppm__V1__PayeeEarnings **ptrs =
                (Ppm__V1__PayeeEarnings **)calloc (count + 1, sizeof *ptrs);
            for (size_t i = 0; i < count; i++) {
                ppm__v1__payee_earnings__init (&items[i]);
                items[i].payee = rows[i].payee;
                items[i].currency = rows[i].currency;
                items[i].payments = rows[i].payments;
                items[i].minutes = rows[i].minutes;
                items[i].charged = rows[i].charged;
                items[i].refunded = rows[i].refunded;
                items[i].net = rows[i].charged - rows[i].refunded;
                ptrs[i] = &items[i];
            }
            reply.n_payees = count;
            reply.payees = ptrs;
            ppm_rpc_call_reply (&call, &reply.base);
            free (items);
            free (ptrs);
        }
        free (rows);
    }
    ppm__v1__earnings_request__free_unpacked (req, NULL);
}

/* CSV field: quoted when it holds a comma, quote or newline; a leading
   = + - @ is prefixed with ' so spreadsheets do not run it. */
static void
s_csv_field (zchunk_t *out, const char *text, bool last)
{
    bool quote = strpbrk (text, ",\"\r\n") != NULL;
    bool formula = text[0] == '=' || text[0] == '+' || text[0] == '-' || text[0] == '@';
    if (quote)
        zchunk_extend (out, "\"", 1);
    if (formula)
        zchunk_extend (out, "'", 1);
    for (const char *p = text; *p; p++) {
        if (*p == '"')
            zchunk_extend (out, "\"\"", 2);
        else
            zchunk_extend (out, p, 1);
    }
    if (quote)
        zchunk_extend (out, "\"", 1);
    zchunk_extend (out, last ? "\n" : ",", 1);
}

static void
s_handle_csv (ppm_rpc_call_t *call, void *arg)
{
    s_self_t *self = (s_self_t *)arg;
    Ppm__V1__ExportCsvRequest *req = (Ppm__V1__ExportCsvRequest *)ppm_rpc_call_unpack (
        call, &ppm__v1__export_csv_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "malformed ExportCsvRequest");
        return;
    }
    char tenant[80];
    if (!s_tenant_of (&call, req->tenant_id, tenant, sizeof tenant)) {
        ppm__v1__export_csv_request__free_unpacked (req, NULL);
        return;
    }
    int limit = req->limit == 0 ? 1000 : req->limit;
    if (limit < 1 || limit > 5000) {
        ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid limit");
        ppm_status_add_field (st, "limit", "must be 1 to 5000");
        ppm_rpc_call_fail (&call, &st);
        ppm__v1__export_csv_request__free_unpacked (req, NULL);
        return;
    }
    payment_filter_t filter = {NULL, NULL, NULL, req->from_ms, req->to_ms};
    payment_row_t *rows = NULL;
    size_t count = 0;
    char next[128];
    ppm_pg_result_t rc = payment_ledger_list (self->pg, tenant, &filter, req->cursor, limit, &rows,
                                              &count, next, sizeof next);
    if (rc != PPM_PG_OK)
        ppm_rpc_call_error (&call, rc == PPM_PG_CONSTRAINT ? PPM_INVALID_ARGUMENT : PPM_UNAVAILABLE,
                            "%s",
                            rc == PPM_PG_CONSTRAINT ? "invalid cursor" : "ledger unavailable");
    else {
        zchunk_t *out = zchunk_new (NULL, 4096);
        const char *header = "payment_id,created_at_ms,session_id,payer,payee,minutes,"
                             "rate_per_minute,amount,currency,billing_mode,state,captured,"
                             "refunded,disputed,stripe_payment_intent,terms_url,"
                             "terms_accepted_at_ms\n";
        if (!req->cursor[0])
            zchunk_extend (out, header, strlen (header));
        for (size_t i = 0; i < count; i++) {
            const payment_row_t *r = &rows[i];
            char created[24], minutes[24], rate[24], amount[24], captured[24], refunded[24],
                accepted[24];
            snprintf (created, sizeof created, "%" PRId64, r->created_at_ms);
            snprintf (minutes, sizeof minutes, "%" PRId64, r->minutes);
            snprintf (rate, sizeof rate, "%" PRId64, r->rate_per_minute);
            snprintf (amount, sizeof amount, "%" PRId64, r->amount);
            snprintf (captured, sizeof captured, "%" PRId64, r->captured);
            snprintf (refunded, sizeof refunded, "%" PRId64, r->refunded);
            snprintf (accepted, sizeof accepted, "%" PRId64, r->terms_accepted_at_ms);
            const char *fields[] = {r->payment_id,
                                    created,
                                    r->session_id,
                                    r->payer,
                                    r->payee,
                                    minutes,
                                    rate,
                                    amount,
                                    r->currency,
                                    r->billing_mode,
                                    payment_state_name (r->state),
                                    captured,
                                    refunded,
                                    r->disputed ? "true" : "false",
                                    r->payment_intent,
                                    r->terms_url,
                                    accepted};
            size_t n = sizeof fields / sizeof fields[0];
            for (size_t k = 0; k < n; k++)
                s_csv_field (out, fields[k], k + 1 == n);
        }
        Ppm__V1__ExportCsvReply reply = PPM__V1__EXPORT_CSV_REPLY__INIT;
        reply.csv.data = zchunk_data (out);
        reply.csv.len = zchunk_size (out);
        reply.next_cursor = next;
        ppm_rpc_call_reply (&call, &reply.base);
        zchunk_destroy (&out);
    }
    free (rows);
    ppm__v1__export_csv_request__free_unpacked (req, NULL);
}

/* ---- actor ----------------------------------------------------------------------------------- */

void
payment_config_defaults (payment_config_t *c)
{
    memset (c, 0, sizeof *c);
    c->rpc_bind = "tcp://127.0.0.1:7121";
    c->pub_bind = "tcp://127.0.0.1:7122";
    c->config_endpoint = "tcp://127.0.0.1:7101";
    c->config_events = "tcp://127.0.0.1:7102";
    c->metering_endpoint = "tcp://127.0.0.1:7131";
    c->pg_url = "postgresql://127.0.0.1/ppm";
    c->stripe_api_base = S_REAL_STRIPE;
    c->pg_statement_timeout_ms = 2000;
    c->stripe_timeout_ms = 10000;
    c->stripe_retries = 3;
    c->stripe_backoff_percent = 100;
    c->reconcile_interval_ms = 60000;
    c->reconcile_age_ms = 120000;
    c->abandon_after_ms = 24 * 3600 * 1000LL;
    c->outbox_interval_ms = 500;
    c->tenant_cache_ms = 5000;
    c->fault = "";
}

static int
s_on_pipe (zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void)loop;
    (void)arg;
    char *command = zstr_recv (pipe);
    bool stop = !command || strcmp (command, "$TERM") == 0;
    zstr_free (&command);
    return stop ? -1 : 0;
}

static void
s_self_destroy (s_self_t **self_p)
{
    s_self_t *self = *self_p;
    if (!self)
        return;
    /* Stripe first, then the clients: calls still held end with an error
       through the server, which goes last (no new Stripe call can start
       once self->stripe is NULL). */
    payment_stripe_destroy (&self->stripe);
    ppm_rpc_client_destroy (&self->config_rpc);
    ppm_rpc_client_destroy (&self->metering);
    ppm_rpc_server_destroy (&self->server);
    ppm_events_sub_destroy (&self->config_sub);
    ppm_events_pub_destroy (&self->pub);
    zhashx_destroy (&self->tenants);
    zhashx_destroy (&self->outbox_busy);
    zhashx_destroy (&self->settling);
    ppm_pg_destroy (&self->pg);
    zloop_destroy (&self->loop);
    for (size_t i = 0; i < sizeof self->strings / sizeof self->strings[0]; i++)
        free (self->strings[i]);
    free (self);
    *self_p = NULL;
}

static const char *
s_own (s_self_t *self, size_t slot, const char *text)
{
    self->strings[slot] = strdup (text ? text : "");
    return self->strings[slot];
}

static const char *
s_setup (s_self_t *self)
{
    payment_config_t *c = &self->config;
    self->loop = zloop_new ();
    const char *error = NULL;
    ppm_pg_options_t options = {.connect_timeout_ms = 3000,
                                .statement_timeout_ms = c->pg_statement_timeout_ms,
                                .application_name = "ppm-payment"};
    self->pg = ppm_pg_new (c->pg_url, &options, &error);
    if (!self->pg)
        return error ? error : "PPM_PG_URL is not a PostgreSQL URL";
    if (payment_ledger_migrate (self->pg, &error) != 0)
        return error ? error : "migrations failed";
    self->server = ppm_rpc_server_new (self->loop, c->rpc_bind);
    if (!self->server)
        return "cannot bind PPM_RPC_BIND";
    self->pub = ppm_events_pub_new (c->pub_bind);
    if (!self->pub)
        return "cannot bind PPM_PUB_BIND";
    self->config_rpc = ppm_rpc_client_new (c->config_endpoint);
    self->metering = ppm_rpc_client_new (c->metering_endpoint);
    if (!self->config_rpc || !self->metering ||
        ppm_rpc_client_attach (self->config_rpc, self->loop) ||
        ppm_rpc_client_attach (self->metering, self->loop))
        return "cannot connect to config or metering";
    if (c->config_events && *c->config_events) {
        self->config_sub = ppm_events_sub_new (c->config_events);
        if (self->config_sub) {
            ppm_events_subscribe (self->config_sub, "config.changed");
            ppm_events_sub_attach (self->config_sub, self->loop, s_on_config_changed, self);
        }
    }
    self->stripe = payment_stripe_new (self->loop, c->stripe_api_base);
    if (!self->stripe)
        return "cannot start the Stripe client";
    payment_stripe_set_timeout (self->stripe, (int)c->stripe_timeout_ms);
    payment_stripe_set_max_retries (self->stripe, (int)c->stripe_retries);
    payment_stripe_set_backoff_scale (self->stripe, (double)c->stripe_backoff_percent / 100.0);
    ppm_metrics_t *reg = ppm_metrics_global ();
    self->m_webhooks =
        ppm_metrics_counter (reg, "ppm_webhooks_received_total", "webhook events accepted", "type");
    self->m_webhooks_bad = ppm_metrics_counter (reg, "ppm_webhooks_rejected_total",
                                                "webhook deliveries refused", "reason");
    self->m_webhooks_dup = ppm_metrics_counter (reg, "ppm_webhooks_duplicate_total",
                                                "deliveries of an event already processed", NULL);
    self->m_payments = ppm_metrics_counter (reg, "ppm_payments_total",
                                            "payments entering each state", "state,currency");
    self->m_pending =
        ppm_metrics_gauge (reg, "ppm_payments_pending", "payments not yet in a final state", NULL);
    self->m_charged = ppm_metrics_counter (reg, "ppm_charged_minor_total",
                                           "amounts captured, minor units", "tenant,currency");
    self->m_refunded = ppm_metrics_counter (reg, "ppm_refunded_minor_total",
                                            "amounts refunded, minor units", "tenant,currency");
    self->m_outbox = ppm_metrics_gauge (reg, "ppm_outbox_pending",
                                        "funding messages not yet acknowledged by metering", NULL);
    self->tenants = zhashx_new ();
    zhashx_set_destructor (self->tenants, s_tenant_free);
    self->outbox_busy = zhashx_new ();
    self->settling = zhashx_new ();
    struct {
        const char *method;
        ppm_rpc_handler_fn *fn;
    } routes[] = {
        {"payment.Checkout", s_handle_checkout},
        {"payment.Confirm", s_handle_confirm},
        {"payment.Settle", s_handle_settle},
        {"payment.Webhook", s_handle_webhook},
        {"payment.Get", s_handle_get},
        {"payment.List", s_handle_list},
        {"payment.SessionTotals", s_handle_totals},
        {"payment.Earnings", s_handle_earnings},
        {"payment.ExportCsv", s_handle_csv},
        {"payment.Reconcile", s_handle_reconcile},
    };
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        ppm_rpc_server_handle (self->server, routes[i].method, routes[i].fn, self);
    self->outbox_timer =
        zloop_timer (self->loop, (size_t)c->outbox_interval_ms, 0, s_outbox_timer, self);
    self->reconcile_timer =
        zloop_timer (self->loop, (size_t)c->reconcile_interval_ms, 0, s_reconcile_timer, self);
    zloop_reader (self->loop, self->pipe, s_on_pipe, self);
    return NULL;
}

void
payment_server_actor (zsock_t *pipe, void *args)
{
    zsock_signal (pipe, 0); /* zactor_new returns; the report follows */
    s_self_t *self = (s_self_t *)zmalloc (sizeof (s_self_t));
    self->pipe = pipe;
    const payment_config_t *in = (const payment_config_t *)args;
    self->config = *in;
    payment_config_t *c = &self->config;
    c->rpc_bind = s_own (self, 0, in->rpc_bind);
    c->pub_bind = s_own (self, 1, in->pub_bind);
    c->config_endpoint = s_own (self, 2, in->config_endpoint);
    c->config_events = s_own (self, 3, in->config_events);
    c->metering_endpoint = s_own (self, 4, in->metering_endpoint);
    c->pg_url = s_own (self, 5, in->pg_url);
    c->stripe_api_base = s_own (self, 6, in->stripe_api_base);
    c->fault = s_own (self, 7, in->fault);
    const char *error = s_setup (self);
    if (error) {
        ppm_log_error ("payment: %s", error);
        zstr_sendx (pipe, "ERROR", error, NULL);
    } else {
        zstr_sendx (pipe, "OK", ppm_rpc_server_endpoint (self->server),
                    ppm_events_pub_endpoint (self->pub), NULL);
        /* Anything left over from before a crash: fund it, resolve it. */
        s_outbox_pump (self);
        s_reconcile_start (self, NULL, NULL, false);
        zloop_start (self->loop);
    }
    s_self_destroy (&self);
    /* OpenSSL's per-thread state of this thread (libcurl, the webhook HMAC),
       freed before zactor_destroy returns: left to the thread-exit handler,
       it races the process's exit and a sanitizer build sees it leaked */
    OPENSSL_thread_stop ();
}

zactor_t *
payment_server_start (const payment_config_t *config, char **rpc_endpoint, char **pub_endpoint,
                      char **error)
{
    zactor_t *actor = zactor_new (payment_server_actor, (void *)config);
    char *status = NULL, *a = NULL, *b = NULL;
    zstr_recvx (actor, &status, &a, &b, NULL);
    if (!status || strcmp (status, "OK") != 0) {
        if (error)
            *error = strdup (a ? a : "payment server failed to start");
        zstr_free (&status);
        zstr_free (&a);
        zstr_free (&b);
        zactor_destroy (&actor);
        return NULL;
    }
    if (rpc_endpoint)
        *rpc_endpoint = a;
    else
        zstr_free (&a);
    if (pub_endpoint)
        *pub_endpoint = b;
    else
        zstr_free (&b);
    zstr_free (&status);
    return actor;
}
