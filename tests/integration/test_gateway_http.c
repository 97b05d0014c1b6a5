/*  HTTP tests of the gateway: the real gateway actor (libmicrohttpd, route
    table, credentials, RPC clients, event streams) in front of in-process
    stand-ins for config, rate, payment and metering that answer over real
    ZeroMQ sockets with ppm_rpc. Requests go through libcurl. Covers every
    endpoint's success, each credential failure (none, bad, expired, other
    tenant, other payer), bad JSON, oversize bodies, unknown fields, server-
    sent events, and a dead backend (503 with Retry-After, quickly). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <czmq.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "ppm_clock.h"
#include "ppm_events.h"
#include "ppm_jwt.h"
#include "ppm_log.h"
#include "ppm_rpc.h"
#include "proto/config.pb-c.h"
#include "proto/metering.pb-c.h"
#include "proto/payment.pb-c.h"
#include "proto/rate.pb-c.h"
#include "services/gateway/gateway_server.h"

#define SECRET_A "secret-of-tenant-a-0123456789abcdef0123456789abcdef0123456789ab"
#define SECRET_B "secret-of-tenant-b-0123456789abcdef0123456789abcdef0123456789ab"

/* ---- stand-in services --------------------------------------------------- */

typedef struct {
    char config[128];
    char rate[128];
    char payment[128];
    char metering[128];
    char events[128];
} s_endpoints_t;

static s_endpoints_t s_ep;
static zactor_t *s_fakes;
static zactor_t *s_gateway;
static int s_port;
static char *s_token_payer;
static char *s_token_payee;
static char *s_token_stranger;
static char *s_token_expired;
static char *s_token_other_tenant;
static char *s_token_forged;
static ppm_events_pub_t *s_pub;

static void
s_fill_session (Ppm__V1__Session *s, const char *id, const char *tenant)
{
    s->session_id = (char *)id;
    s->tenant_id = (char *)tenant;
    s->payer = "u_payer";
    s->payee = "u_payee";
    s->kind = "chat";
    s->state = PPM__V1__SESSION_STATE__SESSION_ACTIVE;
    s->paid = true;
    s->rate_per_minute = 250;
    s->currency = "USD";
    s->funded_ms = 600000;
    s->used_ms = 60000;
    s->remaining_ms = 540000;
    s->expires_at_ms = ppm_clock_now_ms () + 540000;
    s->seq = 3;
    s->now_ms = ppm_clock_now_ms ();
}

static void
s_fake_config (ppm_rpc_call_t *call, const char *method, const char *tenant)
{
    if (streq (method, "config.VerifyAdminKey")) {
        Ppm__V1__VerifyAdminKeyRequest *req =
            (Ppm__V1__VerifyAdminKeyRequest *)ppm_rpc_call_unpack (
                call, &ppm__v1__verify_admin_key_request__descriptor);
        Ppm__V1__VerifyAdminKeyReply reply = PPM__V1__VERIFY_ADMIN_KEY_REPLY__INIT;
        if (req && streq (req->admin_key, "ppmak_good")) {
            reply.tenant_id = "t_a";
            reply.key_id = "k1";
        } else if (req && streq (req->admin_key, "ppmak_other")) {
            reply.tenant_id = "t_b";
            reply.key_id = "k2";
        }
        if (req)
            protobuf_c_message_free_unpacked (&req->base, NULL);
        if (reply.tenant_id)
            ppm_rpc_call_reply (&call, &reply.base);
        else
            ppm_rpc_call_error (&call, PPM_UNAUTHENTICATED, "unknown admin key");
    } else if (streq (method, "config.GetUserTokenSecret")) {
        Ppm__V1__UserTokenSecret reply = PPM__V1__USER_TOKEN_SECRET__INIT;
        char *origins[] = {"https://widget.example"};
        if (streq (tenant, "t_a")) {
            reply.secret = SECRET_A;
            reply.cors_allowed_origins = origins;
            reply.n_cors_allowed_origins = 1;
            ppm_rpc_call_reply (&call, &reply.base);
        } else if (streq (tenant, "t_b")) {
            reply.secret = SECRET_B;
            ppm_rpc_call_reply (&call, &reply.base);
        } else {
            ppm_rpc_call_error (&call, PPM_NOT_FOUND, "no such tenant");
        }
    } else if (streq (method, "config.GetSettings") || streq (method, "config.PutSettings")) {
        Ppm__V1__Settings s = PPM__V1__SETTINGS__INIT;
        int64_t presets[] = {10, 30, 45};
        s.version = 3;
        s.enabled = true;
        s.enable_for = "both";
        s.rate_scope = "individual";
        s.default_call_per_minute = 300;
        s.default_chat_per_minute = 100;
        s.stripe_mode = "test";
        s.stripe_secret_key = "sk_test_…4242";
        s.currency = "USD";
        s.preset_minutes = presets;
        s.n_preset_minutes = 3;
        s.tenant_id = (char *)tenant;
        s.plan = "pro";
        if (streq (method, "config.PutSettings")) {
            Ppm__V1__PutSettingsRequest *req = (Ppm__V1__PutSettingsRequest *)ppm_rpc_call_unpack (
                call, &ppm__v1__put_settings_request__descriptor);
            if (req->expected_version != 0 && req->expected_version != 3) {
                protobuf_c_message_free_unpacked (&req->base, NULL);
                ppm_rpc_call_error (&call, PPM_ABORTED, "settings changed since version read");
                return;
            }
            if (req->settings && req->settings->currency &&
                streq (req->settings->currency, "XXX")) {
                protobuf_c_message_free_unpacked (&req->base, NULL);
                ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "1 field is invalid");
                ppm_status_add_field (st, "currency", "unknown currency XXX");
                ppm_rpc_call_fail (&call, &st);
                return;
            }
            if (req->settings && req->settings->enabled && streq (tenant, "t_b")) {
                protobuf_c_message_free_unpacked (&req->base, NULL);
                ppm_rpc_call_error (&call, PPM_FAILED_PRECONDITION,
                                    "Pay-per-Minute requires the Pro plan");
                return;
            }
            s.version = 4;
            protobuf_c_message_free_unpacked (&req->base, NULL);
        }
        ppm_rpc_call_reply (&call, &s.base);
    } else if (streq (method, "config.GetUserRates")) {
        Ppm__V1__GetUserRatesRequest *req = (Ppm__V1__GetUserRatesRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__get_user_rates_request__descriptor);
        if (streq (req->payee, "u_payee")) {
            Ppm__V1__UserRates r = PPM__V1__USER_RATES__INIT;
            r.payee = "u_payee";
            r.call_set = true;
            r.call_per_minute = 250;
            ppm_rpc_call_reply (&call, &r.base);
        } else {
            ppm_rpc_call_error (&call, PPM_NOT_FOUND, "no rates");
        }
        protobuf_c_message_free_unpacked (&req->base, NULL);
    } else if (streq (method, "config.PutUserRates") || streq (method, "config.PutRoleRates")) {
        Ppm__V1__PutRatesReply reply = PPM__V1__PUT_RATES_REPLY__INIT;
        reply.revision = 9;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (method, "config.ListUserRates")) {
        Ppm__V1__UserRates r = PPM__V1__USER_RATES__INIT;
        r.payee = "u_payee";
        r.chat_set = true;
        r.chat_per_minute = 100;
        Ppm__V1__UserRates *list[] = {&r};
        Ppm__V1__ListUserRatesReply reply = PPM__V1__LIST_USER_RATES_REPLY__INIT;
        reply.rates = list;
        reply.n_rates = 1;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (method, "config.GetRoleRates")) {
        Ppm__V1__RoleRates r = PPM__V1__ROLE_RATES__INIT;
        r.role = "coach";
        r.call_set = true;
        r.call_per_minute = 500;
        Ppm__V1__RoleRates *list[] = {&r};
        Ppm__V1__RoleRatesList reply = PPM__V1__ROLE_RATES_LIST__INIT;
        reply.roles = list;
        reply.n_roles = 1;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (method, "config.ListAudit")) {
        Ppm__V1__AuditEntry e = PPM__V1__AUDIT_ENTRY__INIT;
        e.id = 1;
        e.actor = "admin:k1";
        e.field = "settings.currency";
        e.old_value = "USD";
        e.new_value = "EUR";
        Ppm__V1__AuditEntry *list[] = {&e};
        Ppm__V1__ListAuditReply reply = PPM__V1__LIST_AUDIT_REPLY__INIT;
        reply.entries = list;
        reply.n_entries = 1;
        ppm_rpc_call_reply (&call, &reply.base);
    } else {
        ppm_rpc_call_error (&call, PPM_UNIMPLEMENTED, "%s", method);
    }
}

static void
s_fake_rate_metering (ppm_rpc_call_t *call, const char *method, const char *tenant)
{
    if (streq (method, "rate.Quote")) {
        Ppm__V1__QuoteRequest *req = (Ppm__V1__QuoteRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__quote_request__descriptor);
        Ppm__V1__QuotePreset p[3] = {PPM__V1__QUOTE_PRESET__INIT, PPM__V1__QUOTE_PRESET__INIT,
                                     PPM__V1__QUOTE_PRESET__INIT};
        Ppm__V1__QuotePreset *presets[3] = {&p[0], &p[1], &p[2]};
        int64_t minutes[3] = {10, 30, 45};
        for (int i = 0; i < 3; i++) {
            p[i].minutes = minutes[i];
            p[i].amount = minutes[i] * 250;
        }
        Ppm__V1__Quote q = PPM__V1__QUOTE__INIT;
        q.quote_id = "q_1";
        q.tenant_id = (char *)tenant;
        q.payee = req->payee;
        q.payer = req->payer;
        q.kind = req->kind;
        q.paid = true;
        q.rate_per_minute = 250;
        /* the role rate of a "coach", as rate would resolve it */
        if (req->n_payee_roles > 0 && streq (req->payee_roles[0], "coach"))
            q.rate_per_minute = 500;
        q.currency = "USD";
        q.presets = presets;
        q.n_presets = 3;
        q.min_minutes = 2;
        q.max_minutes = 120;
        q.terms_url = "https://example.com/terms";
        ppm_rpc_call_reply (&call, &q.base);
        protobuf_c_message_free_unpacked (&req->base, NULL);
    } else if (streq (method, "metering.Create")) {
        Ppm__V1__CreateRequest *req = (Ppm__V1__CreateRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__create_request__descriptor);
        Ppm__V1__Session s = PPM__V1__SESSION__INIT;
        s_fill_session (&s, "s_new", tenant);
        s.state = PPM__V1__SESSION_STATE__SESSION_AWAITING_PAYMENT;
        s.payer = req->payer;
        s.quote_id = req->quote ? req->quote->quote_id : "";
        Ppm__V1__SessionReply reply = PPM__V1__SESSION_REPLY__INIT;
        reply.session = &s;
        ppm_rpc_call_reply (&call, &reply.base);
        protobuf_c_message_free_unpacked (&req->base, NULL);
    } else if (streq (method, "metering.Get") || streq (method, "metering.Heartbeat")) {
        Ppm__V1__SessionRequest *req = (Ppm__V1__SessionRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__session_request__descriptor);
        if (streq (req->session_id, "s_1") && streq (tenant, "t_a")) {
            Ppm__V1__Session s = PPM__V1__SESSION__INIT;
            s_fill_session (&s, "s_1", tenant);
            Ppm__V1__SessionReply reply = PPM__V1__SESSION_REPLY__INIT;
            reply.session = &s;
            ppm_rpc_call_reply (&call, &reply.base);
        } else {
            ppm_rpc_call_error (&call, PPM_NOT_FOUND, "no such session");
        }
        protobuf_c_message_free_unpacked (&req->base, NULL);
    } else if (streq (method, "metering.End")) {
        Ppm__V1__Session s = PPM__V1__SESSION__INIT;
        s_fill_session (&s, "s_1", tenant);
        s.state = PPM__V1__SESSION_STATE__SESSION_ENDED;
        Ppm__V1__EndReply reply = PPM__V1__END_REPLY__INIT;
        reply.session = &s;
        reply.used_ms = 61000;
        reply.billed_amount = 500;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (method, "metering.List")) {
        Ppm__V1__Session s = PPM__V1__SESSION__INIT;
        s_fill_session (&s, "s_1", tenant);
        Ppm__V1__Session *list[] = {&s};
        Ppm__V1__ListReply reply = PPM__V1__LIST_REPLY__INIT;
        reply.sessions = list;
        reply.n_sessions = 1;
        ppm_rpc_call_reply (&call, &reply.base);
    } else {
        ppm_rpc_call_error (&call, PPM_UNIMPLEMENTED, "%s", method);
    }
}

/* payment.Confirm with "pm_card_slow": answered after 300 ms (a Stripe
   confirm takes that long), and counted: each call is one confirmation
   attempt at Stripe, so the gateway must send it once. */
static zloop_t *s_fake_loop;
static _Atomic int s_slow_confirms;

static int
s_answer_slow (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    ppm_rpc_call_t *call = arg;
    Ppm__V1__ConfirmReply reply = PPM__V1__CONFIRM_REPLY__INIT;
    reply.payment_id = "pay_1";
    reply.state = PPM__V1__PAYMENT_STATE__PAYMENT_SUCCEEDED;
    reply.amount = 2500;
    reply.currency = "USD";
    ppm_rpc_call_reply (&call, &reply.base);
    return 0;
}

static int
s_answer_slow_checkout (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    ppm_rpc_call_t *call = arg;
    Ppm__V1__CheckoutReply reply = PPM__V1__CHECKOUT_REPLY__INIT;
    reply.payment_id = "pay_slow";
    reply.client_secret = "pi_slow_secret_x";
    reply.amount = 77 * 250;
    reply.currency = "USD";
    reply.minutes = 77;
    reply.state = PPM__V1__PAYMENT_STATE__PAYMENT_PENDING;
    ppm_rpc_call_reply (&call, &reply.base);
    return 0;
}

static void
s_fake_payment (ppm_rpc_call_t *call, const char *method)
{
    if (streq (method, "payment.Checkout")) {
        Ppm__V1__CheckoutRequest *req = (Ppm__V1__CheckoutRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__checkout_request__descriptor);
        if (!streq (req->payer, "u_payer")) {
            ppm_rpc_call_error (&call, PPM_PERMISSION_DENIED, "another payer's session");
        } else if (req->minutes == 77) {
            /* Stripe takes 2 s (customer and intent): longer than an RPC's
               deadline (1.5 s here) */
            zloop_timer (s_fake_loop, 2000, 1, s_answer_slow_checkout, call);
        } else {
            Ppm__V1__CheckoutReply reply = PPM__V1__CHECKOUT_REPLY__INIT;
            reply.payment_id = "pay_1";
            reply.client_secret = "pi_1_secret_x";
            reply.amount = req->minutes * 250;
            reply.currency = "USD";
            reply.minutes = req->minutes;
            reply.state = PPM__V1__PAYMENT_STATE__PAYMENT_PENDING;
            ppm_rpc_call_reply (&call, &reply.base);
        }
        protobuf_c_message_free_unpacked (&req->base, NULL);
    } else if (streq (method, "payment.Confirm")) {
        Ppm__V1__ConfirmRequest *req = (Ppm__V1__ConfirmRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__confirm_request__descriptor);
        if (streq (req->payment_method, "pm_card_slow")) {
            s_slow_confirms++;
            zloop_timer (s_fake_loop, 300, 1, s_answer_slow, call);
        } else if (streq (req->payment_method, "pm_card_chargeDeclined")) {
            ppm_status_t *st =
                ppm_status_new (PPM_FAILED_PRECONDITION, "card_declined: Your card was declined.");
            ppm_status_add_field (st, "decline_code", "generic_decline");
            ppm_rpc_call_fail (&call, &st);
        } else {
            Ppm__V1__ConfirmReply reply = PPM__V1__CONFIRM_REPLY__INIT;
            reply.payment_id = "pay_1";
            reply.state = PPM__V1__PAYMENT_STATE__PAYMENT_SUCCEEDED;
            reply.amount = 2500;
            reply.currency = "USD";
            ppm_rpc_call_reply (&call, &reply.base);
        }
        protobuf_c_message_free_unpacked (&req->base, NULL);
    } else if (streq (method, "payment.Webhook")) {
        Ppm__V1__WebhookRequest *req = (Ppm__V1__WebhookRequest *)ppm_rpc_call_unpack (
            call, &ppm__v1__webhook_request__descriptor);
        const char *expect = "{\"id\":\"evt_1\",\"x\":1}";
        if (streq (req->signature, "t=1,v1=good") && req->payload.len == strlen (expect) &&
            memcmp (req->payload.data, expect, strlen (expect)) == 0) {
            Ppm__V1__WebhookReply reply = PPM__V1__WEBHOOK_REPLY__INIT;
            reply.event_id = "evt_1";
            ppm_rpc_call_reply (&call, &reply.base);
        } else {
            ppm_rpc_call_error (&call, PPM_UNAUTHENTICATED, "bad signature");
        }
        protobuf_c_message_free_unpacked (&req->base, NULL);
    } else if (streq (method, "payment.List")) {
        Ppm__V1__Payment p = PPM__V1__PAYMENT__INIT;
        p.payment_id = "pay_1";
        p.amount = 2500;
        p.currency = "USD";
        p.state = PPM__V1__PAYMENT_STATE__PAYMENT_SUCCEEDED;
        Ppm__V1__Payment *list[] = {&p};
        Ppm__V1__ListPaymentsReply reply = PPM__V1__LIST_PAYMENTS_REPLY__INIT;
        reply.payments = list;
        reply.n_payments = 1;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (method, "payment.ExportCsv")) {
        Ppm__V1__ExportCsvReply reply = PPM__V1__EXPORT_CSV_REPLY__INIT;
        const char *csv = "payment_id,amount\npay_1,2500\n";
        reply.csv.data = (uint8_t *)csv;
        reply.csv.len = strlen (csv);
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (method, "payment.SessionTotals")) {
        Ppm__V1__SessionTotalsReply reply = PPM__V1__SESSION_TOTALS_REPLY__INIT;
        reply.session_id = "s_1";
        reply.currency = "USD";
        reply.settled = true;
        reply.charged = 500;
        reply.refunded = 2000;
        ppm_rpc_call_reply (&call, &reply.base);
    } else if (streq (method, "payment.Earnings")) {
        Ppm__V1__PayeeEarnings e = PPM__V1__PAYEE_EARNINGS__INIT;
        e.payee = "u_payee";
        e.currency = "USD";
        e.charged = 2500;
        e.net = 2500;
        Ppm__V1__PayeeEarnings *list[] = {&e};
        Ppm__V1__EarningsReply reply = PPM__V1__EARNINGS_REPLY__INIT;
        reply.payees = list;
        reply.n_payees = 1;
        ppm_rpc_call_reply (&call, &reply.base);
    } else {
        ppm_rpc_call_error (&call, PPM_UNIMPLEMENTED, "%s", method);
    }
}

static void
s_fake (ppm_rpc_call_t *call, void *arg)
{
    (void)arg;
    const char *method = ppm_rpc_call_method (call);
    const char *tenant = ppm_rpc_call_tenant (call);
    if (strncmp (method, "config.", 7) == 0)
        s_fake_config (call, method, tenant);
    else if (strncmp (method, "payment.", 8) == 0)
        s_fake_payment (call, method);
    else
        s_fake_rate_metering (call, method, tenant);
}

static int
s_fakes_pipe (zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void)loop;
    (void)arg;
    char *command = zstr_recv (pipe);
    if (!command)
        return -1;
    int rc = 0;
    if (streq (command, "$TERM")) {
        rc = -1;
    } else if (streq (command, "WARN")) {
        Ppm__V1__SessionEvent e = PPM__V1__SESSION_EVENT__INIT;
        e.session_id = "s_1";
        e.tenant_id = "t_a";
        e.seq = 4;
        e.event = "session.warning";
        e.state = PPM__V1__SESSION_STATE__SESSION_ACTIVE;
        e.remaining_ms = 59000;
        e.expires_at_ms = ppm_clock_now_ms () + 59000;
        e.warning_mark_s = 60;
        ppm_events_publish (s_pub, "session.warning", "t_a", &e.base);
        /* another tenant's event for a session of the same id: ignored */
        e.tenant_id = "t_b";
        e.seq = 5;
        e.warning_mark_s = 10;
        ppm_events_publish (s_pub, "session.warning", "t_b", &e.base);
        zsock_signal (pipe, 0);
    } else if (streq (command, "END")) {
        Ppm__V1__SessionEvent e = PPM__V1__SESSION_EVENT__INIT;
        e.session_id = "s_1";
        e.tenant_id = "t_a";
        e.seq = 6;
        e.event = "session.ended";
        e.state = PPM__V1__SESSION_STATE__SESSION_ENDED;
        e.reason = "payer";
        ppm_events_publish (s_pub, "session.ended", "t_a", &e.base);
        zsock_signal (pipe, 0);
    }
    free (command);
    return rc;
}

static void
s_fakes_actor (zsock_t *pipe, void *args)
{
    (void)args;
    zloop_t *loop = zloop_new ();
    s_fake_loop = loop;
    const char *methods[] = {"config.VerifyAdminKey",
                             "config.GetUserTokenSecret",
                             "config.GetSettings",
                             "config.PutSettings",
                             "config.GetUserRates",
                             "config.PutUserRates",
                             "config.ListUserRates",
                             "config.GetRoleRates",
                             "config.PutRoleRates",
                             "config.ListAudit",
                             "rate.Quote",
                             "metering.Create",
                             "metering.Get",
                             "metering.Heartbeat",
                             "metering.End",
                             "metering.List",
                             "payment.Checkout",
                             "payment.Confirm",
                             "payment.Webhook",
                             "payment.List",
                             "payment.ExportCsv",
                             "payment.Earnings",
                             "payment.SessionTotals",
                             NULL};
    const char *prefixes[] = {"config.", "rate.", "payment.", "metering."};
    char *outs[] = {s_ep.config, s_ep.rate, s_ep.payment, s_ep.metering};
    ppm_rpc_server_t *servers[4];
    for (int i = 0; i < 4; i++) {
        servers[i] = ppm_rpc_server_new (loop, "tcp://127.0.0.1:*");
        assert_non_null (servers[i]);
        snprintf (outs[i], 128, "%s", ppm_rpc_server_endpoint (servers[i]));
        for (int m = 0; methods[m]; m++)
            if (strncmp (methods[m], prefixes[i], strlen (prefixes[i])) == 0)
                ppm_rpc_server_handle (servers[i], methods[m], s_fake, NULL);
    }
    s_pub = ppm_events_pub_new ("tcp://127.0.0.1:*");
    snprintf (s_ep.events, sizeof s_ep.events, "%s", ppm_events_pub_endpoint (s_pub));
    zloop_reader (loop, pipe, s_fakes_pipe, NULL);
    zsock_signal (pipe, 0);
    zloop_start (loop);
    for (int i = 0; i < 4; i++)
        ppm_rpc_server_destroy (&servers[i]);
    ppm_events_pub_destroy (&s_pub);
    zloop_destroy (&loop);
}

/* ---- HTTP client ------------------------------------------------------------ */

typedef struct {
    long status;
    char body[262144]; /* /metrics holds every RPC histogram of the process */
    size_t len;
    char headers[4096];
    size_t headers_len;
    double seconds;
} s_resp_t;

typedef struct {
    char *buf;
    size_t *len;
    size_t cap;
} s_sink_t;

static size_t
s_collect (char *data, size_t size, size_t nmemb, void *arg)
{
    s_sink_t *sink = arg;
    size_t n = size * nmemb;
    size_t room = sink->cap - 1 - *sink->len;
    size_t take = n < room ? n : room;
    memcpy (sink->buf + *sink->len, data, take);
    *sink->len += take;
    sink->buf[*sink->len] = '\0';
    return n;
}

static void
s_http_port (int port, const char *method, const char *path, const char *auth, const char *body,
             size_t body_len, const char *extra_header, long timeout_ms, s_resp_t *r)
{
    memset (r, 0, sizeof *r);
    char url[512];
    snprintf (url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    CURL *curl = curl_easy_init ();
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM into ZeroMQ calls */
    curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
    struct curl_slist *headers = NULL;
    char line[4200];
    if (auth) {
        snprintf (line, sizeof line, "Authorization: Bearer %s", auth);
        headers = curl_slist_append (headers, line);
    }
    if (extra_header)
        headers = curl_slist_append (headers, extra_header);
    headers = curl_slist_append (headers, "Expect:");
    if (body) {
        curl_easy_setopt (curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt (curl, CURLOPT_POSTFIELDSIZE, (long)body_len);
        headers = curl_slist_append (headers, "Content-Type: application/json");
    }
    curl_easy_setopt (curl, CURLOPT_HTTPHEADER, headers);
    s_sink_t body_sink = {r->body, &r->len, sizeof r->body};
    s_sink_t head_sink = {r->headers, &r->headers_len, sizeof r->headers};
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, &body_sink);
    curl_easy_setopt (curl, CURLOPT_HEADERFUNCTION, s_collect);
    curl_easy_setopt (curl, CURLOPT_HEADERDATA, &head_sink);
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, timeout_ms ? timeout_ms : 10000L);
    int64_t start = ppm_clock_real_mono_us ();
    curl_easy_perform (curl);
    r->seconds = (double)(ppm_clock_real_mono_us () - start) / 1e6;
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all (headers);
    curl_easy_cleanup (curl);
}

static void
s_http (const char *method, const char *path, const char *auth, const char *body, s_resp_t *r)
{
    s_http_port (s_port, method, path, auth, body, body ? strlen (body) : 0, NULL, 0, r);
}

/* The "code" of an error body, or "" */
static const char *
s_error_code (s_resp_t *r, char *buf, size_t size)
{
    json_t *json = json_loads (r->body, 0, NULL);
    const char *code =
        json_string_value (json_object_get (json_object_get (json, "error"), "code"));
    snprintf (buf, size, "%s", code ? code : "");
    json_decref (json);
    return buf;
}

static char *
s_token (const char *tid, const char *sub, const char *secret, int64_t exp_offset_s)
{
    ppm_jwt_claims_t claims;
    memset (&claims, 0, sizeof claims);
    snprintf (claims.tid, sizeof claims.tid, "%s", tid);
    snprintf (claims.sub, sizeof claims.sub, "%s", sub);
    claims.exp = ppm_clock_real_ms () / 1000 + exp_offset_s;
    return ppm_jwt_sign (&claims, (const uint8_t *)secret, strlen (secret));
}

static gateway_config_t s_cfg;
static char s_events[512];

static int
s_start_gateway (const gateway_config_t *cfg, zactor_t **actor_p)
{
    *actor_p = zactor_new (gateway_server_actor, (void *)cfg);
    zstr_send (*actor_p, "PORT");
    char *port = zstr_recv (*actor_p);
    int n = port ? (int)strtol (port, NULL, 10) : 0;
    free (port);
    return n;
}

static int
s_setup (void **state)
{
    (void)state;
    ppm_log_init ("test");
    ppm_log_set_level (PPM_LOG_ERROR);
    s_fakes = zactor_new (s_fakes_actor, NULL);
    snprintf (s_events, sizeof s_events, "%s", s_ep.events);
    s_cfg = (gateway_config_t){.http_address = "127.0.0.1",
                               .http_port = 0,
                               .http_threads = 2,
                               .body_max = 4096,
                               .web_root = NULL,
                               .config_endpoint = s_ep.config,
                               .rate_endpoint = s_ep.rate,
                               .payment_endpoint = s_ep.payment,
                               .metering_endpoint = s_ep.metering,
                               .events_endpoints = s_events,
                               .rpc_timeout_ms = 1500,
                               .auth_cache_ms = 30000,
                               .quote_cache_ms = 0};
    s_port = s_start_gateway (&s_cfg, &s_gateway);
    s_token_payer = s_token ("t_a", "u_payer", SECRET_A, 600);
    s_token_payee = s_token ("t_a", "u_payee", SECRET_A, 600);
    s_token_stranger = s_token ("t_a", "u_stranger", SECRET_A, 600);
    s_token_expired = s_token ("t_a", "u_payer", SECRET_A, -10);
    s_token_other_tenant = s_token ("t_b", "u_payer", SECRET_B, 600);
    s_token_forged = s_token ("t_a", "u_payer", SECRET_B, 600);
    zclock_sleep (200); /* let the SUB connect */
    return s_port > 0 ? 0 : -1;
}

static int
s_teardown (void **state)
{
    (void)state;
    zactor_destroy (&s_gateway);
    zactor_destroy (&s_fakes);
    free (s_token_payer);
    free (s_token_payee);
    free (s_token_stranger);
    free (s_token_expired);
    free (s_token_other_tenant);
    free (s_token_forged);
    return 0;
}

/* ---- tests ---------------------------------------------------------------- */

static void
test_admin_settings (void **state)
{
    (void)state;
    s_resp_t r;
    char code[64];
    s_http ("GET", "/v1/admin/settings", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"version\":3"));
    assert_non_null (strstr (r.body, "sk_test_…4242"));
    assert_non_null (strstr (r.headers, "ETag: \"3\""));

    /* credentials: none, bad, a user token instead of an admin key */
    s_http ("GET", "/v1/admin/settings", NULL, NULL, &r);
    assert_int_equal (r.status, 401);
    assert_string_equal (s_error_code (&r, code, sizeof code), "UNAUTHENTICATED");
    s_http ("GET", "/v1/admin/settings", "ppmak_bad", NULL, &r);
    assert_int_equal (r.status, 401);
    s_http ("GET", "/v1/admin/settings", s_token_payer, NULL, &r);
    assert_int_equal (r.status, 401);

    /* PUT with If-Match: stale version → 409; right one → 200 */
    const char *body = "{\"enabled\":true,\"currency\":\"EUR\",\"preset_minutes\":[10,30,45]}";
    s_http_port (s_port, "PUT", "/v1/admin/settings", "ppmak_good", body, strlen (body),
                 "If-Match: \"2\"", 0, &r);
    assert_int_equal (r.status, 409);
    assert_string_equal (s_error_code (&r, code, sizeof code), "ABORTED");
    s_http_port (s_port, "PUT", "/v1/admin/settings", "ppmak_good", body, strlen (body),
                 "If-Match: \"3\"", 0, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"version\":4"));
    /* a field error from config is named */
    s_http ("PUT", "/v1/admin/settings", "ppmak_good", "{\"currency\":\"XXX\"}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"currency\""));
    /* plan gating → 403 */
    s_http ("PUT", "/v1/admin/settings", "ppmak_other", "{\"enabled\":true}", &r);
    assert_int_equal (r.status, 403);
    assert_non_null (strstr (r.body, "Pro plan"));
    /* unknown field, wrong type, bad JSON */
    s_http ("PUT", "/v1/admin/settings", "ppmak_good", "{\"enabled\":true,\"colour\":1}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"colour\""));
    assert_non_null (strstr (r.body, "unknown field"));
    s_http ("PUT", "/v1/admin/settings", "ppmak_good", "{\"enabled\":\"yes\"}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"enabled\""));
    s_http ("PUT", "/v1/admin/settings", "ppmak_good", "{\"enabled\":", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"body\""));
    /* oversize body */
    char *big = malloc (8192);
    memset (big, ' ', 8191);
    big[0] = '{';
    big[8190] = '}';
    big[8191] = '\0';
    s_http ("PUT", "/v1/admin/settings", "ppmak_good", big, &r);
    assert_int_equal (r.status, 413);
    free (big);
}

static void
test_admin_rates_and_lists (void **state)
{
    (void)state;
    s_resp_t r;
    s_http ("GET", "/v1/admin/users/u_payee/rates", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"call_per_minute\":250"));
    assert_non_null (strstr (r.body, "\"chat_per_minute\":null"));
    s_http ("GET", "/v1/admin/users/u_none/rates", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"call_per_minute\":null"));
    s_http ("PUT", "/v1/admin/users/u_payee/rates", "ppmak_good",
            "{\"call_per_minute\":300,\"chat_per_minute\":null}", &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"revision\":9"));
    s_http ("PUT", "/v1/admin/users/u_payee/rates", "ppmak_good",
            "{\"call_per_minute\":-1,\"chat_per_minute\":null,\"x\":2}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"call_per_minute\""));
    assert_non_null (strstr (r.body, "\"field\":\"x\""));
    s_http ("PUT", "/v1/admin/users/u_payee/rates", "ppmak_good", "{\"call_per_minute\":1}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"chat_per_minute\""));

    s_http ("GET", "/v1/admin/roles/coach/rates", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"call_per_minute\":500"));
    s_http ("PUT", "/v1/admin/roles/coach/rates", "ppmak_good",
            "{\"call_per_minute\":500,\"chat_per_minute\":200,\"priority\":5}", &r);
    assert_int_equal (r.status, 200);
    s_http ("GET", "/v1/admin/roles", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"role\":\"coach\""));

    s_http ("GET", "/v1/admin/users?limit=10", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"users\":[{"));
    s_http ("GET", "/v1/admin/users?limit=abc", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"limit\""));
    s_http ("GET", "/v1/admin/users?bogus=1", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 400);

    s_http ("GET", "/v1/admin/sessions?state=active", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"session_id\":\"s_1\""));
    s_http ("GET", "/v1/admin/sessions?state=sleeping", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 400);
    s_http ("GET", "/v1/admin/payments", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"state\":\"succeeded\""));
    s_http ("GET", "/v1/admin/payments.csv", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.headers, "text/csv"));
    assert_string_equal (r.body, "payment_id,amount\npay_1,2500\n");
    s_http ("GET", "/v1/admin/earnings", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"net\":2500"));
    s_http ("GET", "/v1/admin/audit", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "settings.currency"));
    s_http ("GET", "/v1/admin/health", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"rate\":\"up\""));
    /* routing: unknown path 404, wrong method 405 */
    s_http ("GET", "/v1/admin/nothing", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 404);
    s_http ("DELETE", "/v1/admin/settings", "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 405);
}

static void
test_user_auth (void **state)
{
    (void)state;
    s_resp_t r;
    const char *path = "/v1/quote?payee=u_payee&kind=chat";
    s_http ("GET", path, s_token_payer, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"rate_per_minute\":250"));
    assert_non_null (strstr (r.body, "{\"minutes\":30,\"amount\":7500}"));
    assert_non_null (strstr (r.body, "\"terms_url\":\"https://example.com/terms\""));
    s_http ("GET", path, NULL, NULL, &r);
    assert_int_equal (r.status, 401);
    s_http ("GET", path, "not.a.token", NULL, &r);
    assert_int_equal (r.status, 401);
    s_http ("GET", path, s_token_expired, NULL, &r);
    assert_int_equal (r.status, 401);
    assert_non_null (strstr (r.body, "expired"));
    s_http ("GET", path, s_token_forged, NULL, &r);
    assert_int_equal (r.status, 401);
    /* a token of an unknown tenant */
    char *unknown = s_token ("t_zz", "u_payer", SECRET_A, 600);
    s_http ("GET", path, unknown, NULL, &r);
    assert_int_equal (r.status, 401);
    free (unknown);
    /* alg none: {"alg":"none"}.{"tid":"t_a","sub":"u_payer","exp":4102444800}. */
    s_http ("GET", path,
            "eyJhbGciOiJub25lIn0."
            "eyJ0aWQiOiJ0X2EiLCJzdWIiOiJ1X3BheWVyIiwiZXhwIjo0MTAyNDQ0ODAwfQ.",
            NULL, &r);
    assert_int_equal (r.status, 401);
    assert_non_null (strstr (r.body, "HS256"));
    /* an admin key is not a user token */
    s_http ("GET", path, "ppmak_good", NULL, &r);
    assert_int_equal (r.status, 401);
    /* query validation */
    s_http ("GET", "/v1/quote?payee=u_payee&kind=video", s_token_payer, NULL, &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"kind\""));
    s_http ("GET", "/v1/quote?kind=chat", s_token_payer, NULL, &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"payee\""));
    s_http ("GET", "/v1/quote?payee=u_payee&kind=chat&extra=1", s_token_payer, NULL, &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"extra\""));

    /* CORS: the tenant's origin is echoed, another is not */
    s_http_port (s_port, "GET", path, s_token_payer, NULL, 0, "Origin: https://widget.example", 0,
                 &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.headers, "Access-Control-Allow-Origin: https://widget.example"));
    s_http_port (s_port, "GET", path, s_token_payer, NULL, 0, "Origin: https://evil.example", 0,
                 &r);
    assert_int_equal (r.status, 200);
    assert_null (strstr (r.headers, "Access-Control-Allow-Origin"));
    s_http_port (s_port, "OPTIONS", "/v1/sessions", NULL, NULL, 0, "Origin: https://widget.example",
                 0, &r);
    assert_int_equal (r.status, 204);
    assert_non_null (strstr (r.headers, "Access-Control-Allow-Headers"));
}

static void
test_payee_roles (void **state)
{
    (void)state;
    s_resp_t r;
    /* before the payee has shown a token with roles: no role */
    s_http ("GET", "/v1/quote?payee=u_coach&kind=call", s_token_payer, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"rate_per_minute\":250"));
    /* the payee's own token says it is a coach (any request will do) */
    ppm_jwt_claims_t claims;
    memset (&claims, 0, sizeof claims);
    snprintf (claims.tid, sizeof claims.tid, "t_a");
    snprintf (claims.sub, sizeof claims.sub, "u_coach");
    snprintf (claims.roles[0], sizeof claims.roles[0], "coach");
    claims.role_count = 1;
    claims.exp = ppm_clock_real_ms () / 1000 + 600;
    char *coach = ppm_jwt_sign (&claims, (const uint8_t *)SECRET_A, strlen (SECRET_A));
    s_http ("GET", "/v1/quote?payee=u_payer&kind=call", coach, NULL, &r);
    assert_int_equal (r.status, 200);
    free (coach);
    /* now a payer's quote for that payee carries the payee's roles */
    s_http ("GET", "/v1/quote?payee=u_coach&kind=call", s_token_payer, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"rate_per_minute\":500"));
}

static void
test_sessions (void **state)
{
    (void)state;
    s_resp_t r;
    s_http ("POST", "/v1/sessions", s_token_payer, "{\"payee\":\"u_payee\",\"kind\":\"chat\"}", &r);
    assert_int_equal (r.status, 201);
    assert_non_null (strstr (r.body, "\"session_id\":\"s_new\""));
    assert_non_null (strstr (r.body, "\"state\":\"awaiting_payment\""));
    assert_non_null (strstr (r.headers, "Location: /v1/sessions/s_new"));
    s_http ("POST", "/v1/sessions", s_token_payer,
            "{\"payee\":\"u_payee\",\"kind\":\"chat\",\"x\":1}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"x\""));
    s_http ("POST", "/v1/sessions", s_token_payer, "{\"payee\":\"u_payer\",\"kind\":\"chat\"}", &r);
    assert_int_equal (r.status, 400);
    s_http ("POST", "/v1/sessions", s_token_payer, "[1]", &r);
    assert_int_equal (r.status, 400);

    /* GET: payer and payee yes; stranger 403; other tenant 404; unknown 404 */
    s_http ("GET", "/v1/sessions/s_1", s_token_payer, NULL, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"remaining_ms\":540000"));
    assert_non_null (strstr (r.body, "\"paused\":false"));
    s_http ("GET", "/v1/sessions/s_1", s_token_payee, NULL, &r);
    assert_int_equal (r.status, 200);
    s_http ("GET", "/v1/sessions/s_1", s_token_stranger, NULL, &r);
    assert_int_equal (r.status, 403);
    s_http ("GET", "/v1/sessions/s_1", s_token_other_tenant, NULL, &r);
    assert_int_equal (r.status, 404);
    s_http ("GET", "/v1/sessions/s_nope", s_token_payer, NULL, &r);
    assert_int_equal (r.status, 404);

    /* checkout: terms must be accepted; another payer refused */
    s_http ("POST", "/v1/sessions/s_1/checkout", s_token_payer,
            "{\"minutes\":10,\"accept_terms\":false}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"accept_terms\""));
    s_http ("POST", "/v1/sessions/s_1/checkout", s_token_payer,
            "{\"minutes\":10,\"accept_terms\":true}", &r);
    assert_int_equal (r.status, 201);
    assert_non_null (strstr (r.body, "\"amount\":2500"));
    assert_non_null (strstr (r.body, "\"client_secret\":\"pi_1_secret_x\""));
    s_http ("POST", "/v1/sessions/s_1/checkout", s_token_stranger,
            "{\"minutes\":10,\"accept_terms\":true}", &r);
    assert_int_equal (r.status, 403);
    /* a checkout waits for Stripe's answer (payment_timeout_ms, 15 s by
       default), not just an internal RPC's deadline: no 503 while Stripe
       is merely slow */
    s_http ("POST", "/v1/sessions/s_1/checkout", s_token_payer,
            "{\"minutes\":77,\"accept_terms\":true}", &r);
    assert_int_equal (r.status, 201);
    assert_non_null (strstr (r.body, "\"payment_id\":\"pay_slow\""));
    s_http ("POST", "/v1/sessions/s_1/checkout", s_token_payer,
            "{\"minutes\":0,\"accept_terms\":true,\"tip\":5}", &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "\"field\":\"minutes\""));
    assert_non_null (strstr (r.body, "\"field\":\"tip\""));

    /* confirm: success; decline → 422 with the decline code */
    s_http ("POST", "/v1/sessions/s_1/confirm", s_token_payer,
            "{\"payment_method\":\"pm_card_visa\"}", &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"state\":\"succeeded\""));
    s_http ("POST", "/v1/sessions/s_1/confirm", s_token_payer,
            "{\"payment_method\":\"pm_card_chargeDeclined\"}", &r);
    assert_int_equal (r.status, 422);
    assert_non_null (strstr (r.body, "card_declined"));
    assert_non_null (strstr (r.body, "generic_decline"));
    /* a confirm that takes Stripe's time is sent to payment once: a re-send
       would be a second confirmation attempt (a new Stripe key), and its
       refusal could reach the payer before the first attempt's success */
    s_slow_confirms = 0;
    s_http ("POST", "/v1/sessions/s_1/confirm", s_token_payer,
            "{\"payment_method\":\"pm_card_slow\",\"payment_id\":\"pay_1\"}", &r);
    assert_int_equal (r.status, 200);
    assert_int_equal (s_slow_confirms, 1);

    /* heartbeat and end */
    s_http ("POST", "/v1/sessions/s_1/heartbeat", s_token_payee, NULL, &r);
    assert_int_equal (r.status, 200);
    s_http ("POST", "/v1/sessions/s_1/heartbeat", s_token_stranger, NULL, &r);
    assert_int_equal (r.status, 403);
    s_http ("POST", "/v1/sessions/s_1/end", s_token_payer, "{}", &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"used_ms\":61000"));
    /* charged and refunded come from payment's statement once settled */
    assert_non_null (strstr (r.body, "\"charged\":500"));
    assert_non_null (strstr (r.body, "\"refunded\":2000"));
    assert_non_null (strstr (r.body, "\"settled\":true"));
    assert_non_null (strstr (r.body, "\"state\":\"ended\""));
    s_http ("POST", "/v1/sessions/s_1/end", s_token_payer, "{\"now\":1}", &r);
    assert_int_equal (r.status, 400);
}

typedef struct {
    const char *token;
    s_resp_t resp;
    long timeout_ms;
} s_sse_t;

static void *
s_sse_thread (void *arg)
{
    s_sse_t *sse = arg;
    s_http_port (s_port, "GET", "/v1/sessions/s_1/events", sse->token, NULL, 0, "Last-Event-ID: 2",
                 sse->timeout_ms, &sse->resp);
    return NULL;
}

static void
test_events_stream (void **state)
{
    (void)state;
    s_sse_t sse = {.token = s_token_payer, .timeout_ms = 6000};
    pthread_t thread;
    pthread_create (&thread, NULL, s_sse_thread, &sse);
    /* other listeners that leave early, while the first one stays: the
       tick closes several streams in one pass (a use-after-free once) */
    s_sse_t early[3] = {{.token = s_token_payee, .timeout_ms = 1200},
                        {.token = s_token_payer, .timeout_ms = 4000},
                        {.token = s_token_payee, .timeout_ms = 4000}};
    pthread_t early_threads[3];
    for (int i = 0; i < 3; i++)
        pthread_create (&early_threads[i], NULL, s_sse_thread, &early[i]);
    zclock_sleep (700);
    zstr_send (s_fakes, "WARN");
    zsock_wait (s_fakes);
    zclock_sleep (1300);
    /* the session ends: every stream of it closes in the same tick */
    zstr_send (s_fakes, "END");
    zsock_wait (s_fakes);
    pthread_join (thread, NULL);
    for (int i = 0; i < 3; i++) {
        pthread_join (early_threads[i], NULL);
        assert_int_equal (early[i].resp.status, 200);
    }
    s_resp_t *r = &sse.resp;
    assert_int_equal (r->status, 200);
    assert_non_null (strstr (r->headers, "text/event-stream"));
    assert_non_null (strstr (r->body, "id: 3\nevent: state\ndata: {"));
    assert_non_null (strstr (r->body, "\"resumed\":true"));
    assert_non_null (strstr (r->body, "event: tick\ndata: {\"remaining_ms\":"));
    assert_non_null (strstr (r->body, "id: 4\nevent: warning\ndata: {"));
    assert_non_null (strstr (r->body, "\"warning_mark_s\":60"));
    /* the end is relayed and closes the stream (well before the client's
       own timeout) */
    assert_non_null (strstr (r->body, "id: 6\nevent: ended\ndata: {"));
    assert_non_null (strstr (early[1].resp.body, "event: ended"));
    /* the other tenant's event did not leak into this stream */
    assert_null (strstr (r->body, "\"warning_mark_s\":10"));

    /* a stranger may not listen */
    s_resp_t denied;
    s_http ("GET", "/v1/sessions/s_1/events", s_token_stranger, NULL, &denied);
    assert_int_equal (denied.status, 403);
}

static void
test_webhook (void **state)
{
    (void)state;
    s_resp_t r;
    const char *body = "{\"id\":\"evt_1\",\"x\":1}";
    s_http_port (s_port, "POST", "/v1/stripe/webhook/t_a", NULL, body, strlen (body),
                 "Stripe-Signature: t=1,v1=good", 0, &r);
    assert_int_equal (r.status, 200);
    assert_non_null (strstr (r.body, "\"event_id\":\"evt_1\""));
    s_http_port (s_port, "POST", "/v1/stripe/webhook/t_a", NULL, body, strlen (body),
                 "Stripe-Signature: t=1,v1=forged", 0, &r);
    assert_int_equal (r.status, 400);
    assert_non_null (strstr (r.body, "UNAUTHENTICATED"));
    s_http_port (s_port, "POST", "/v1/stripe/webhook/t_a", NULL, body, strlen (body), NULL, 0, &r);
    assert_int_equal (r.status, 400);
}

static void
test_dead_backend (void **state)
{
    (void)state;
    /* a gateway whose services are all gone: 503 + Retry-After within the
       RPC deadline, never a hang. Nothing listens on port 1 (privileged,
       unused): every connection attempt is refused. */
    const char *dead = "tcp://127.0.0.1:1";
    gateway_config_t cfg = s_cfg;
    cfg.config_endpoint = dead;
    cfg.rate_endpoint = dead;
    cfg.payment_endpoint = dead;
    cfg.metering_endpoint = dead;
    cfg.events_endpoints = NULL;
    cfg.rpc_timeout_ms = 300;
    cfg.metrics_address = "127.0.0.1";
    cfg.metrics_port = 0;
    zactor_t *gw = NULL;
    int port = s_start_gateway (&cfg, &gw);
    assert_true (port > 0);
    zstr_send (gw, "METRICS_PORT");
    char *metrics_text = zstr_recv (gw);
    int metrics_port = (int)strtol (metrics_text, NULL, 10);
    free (metrics_text);
    assert_true (metrics_port > 0);
    s_resp_t r;
    s_http_port (port, "GET", "/v1/admin/settings", "ppmak_good", NULL, 0, NULL, 5000, &r);
    assert_int_equal (r.status, 503);
    assert_non_null (strstr (r.headers, "Retry-After: 1"));
    assert_non_null (strstr (r.body, "UNAVAILABLE"));
    assert_true (r.seconds < 1.5);
    s_http_port (port, "GET", "/v1/quote?payee=u&kind=chat", s_token_payer, NULL, 0, NULL, 5000,
                 &r);
    if (r.status != 503)
        print_message ("unexpected answer: %s\n", r.body);
    assert_int_equal (r.status, 503);
    assert_true (r.seconds < 1.5);
    /* health still answers */
    s_http_port (port, "GET", "/healthz", NULL, NULL, 0, NULL, 5000, &r);
    assert_int_equal (r.status, 200);
    /* the metrics listener serves health and metrics, and nothing else */
    s_http_port (metrics_port, "GET", "/readyz", NULL, NULL, 0, NULL, 5000, &r);
    assert_int_equal (r.status, 200);
    s_http_port (metrics_port, "GET", "/metrics", NULL, NULL, 0, NULL, 5000, &r);
    assert_int_equal (r.status, 200);
    /* the process registry (docs/METRICS.md: no service label; the scrape
       job names the service), shared by every gateway this test process
       starts: at least this test's request is counted */
    assert_non_null (
        strstr (r.body, "ppm_http_requests_total{route=\"/v1/quote\",status=\"503\"} "));
    assert_non_null (strstr (r.body, "ppm_sse_clients"));
    assert_non_null (
        strstr (r.body, "ppm_http_request_duration_seconds_count{route=\"/v1/quote\"} "));
    assert_null (strstr (r.body, "service=\"gateway\""));
    s_http_port (metrics_port, "GET", "/v1/quote?payee=u&kind=chat", s_token_payer, NULL, 0, NULL,
                 5000, &r);
    assert_int_equal (r.status, 404);
    zactor_destroy (&gw);
}

int
main (void)
{
    curl_global_init (CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_admin_settings), cmocka_unit_test (test_admin_rates_and_lists),
        cmocka_unit_test (test_user_auth),      cmocka_unit_test (test_payee_roles),
        cmocka_unit_test (test_sessions),       cmocka_unit_test (test_events_stream),
        cmocka_unit_test (test_webhook),        cmocka_unit_test (test_dead_backend),
    };
    int rc = cmocka_run_group_tests (tests, s_setup, s_teardown);
    curl_global_cleanup ();
    return rc;
}
