/*  End-to-end test of payment with the real metering service: both actors
    in-process (real PostgreSQL, Redis, ZeroMQ) and the Stripe emulator
    binary; only config is played by a small in-test ROUTER. A session is
    created in metering, bought through payment.Checkout/Confirm, funded by
    payment's outbox through the real metering.Fund, ended in metering, and
    settled by metering's own payment.Settle delivery: authorize mode
    captures the one started minute and releases the rest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <czmq.h>
#include <jansson.h>
#include <string.h>

#include "ppm_log.h"
#include "ppm_rpc.h"
#include "services/metering/metering_server.h"
#include "services/payment/payment_server.h"
#include "proto/config.pb-c.h"
#include "proto/metering.pb-c.h"
#include "proto/payment.pb-c.h"
#include "proto/rate.pb-c.h"
#include "tests/lib/ppm_test.h"
#include "tests/lib/ppm_test_emulator.h"

#define TENANT "t_e2e"
#define KEY    "sk_test_payment_e2e1"
#define PAYER  "u_e2e_payer"
#define PAYEE  "u_e2e_coach"

static void
s_secrets (ppm_rpc_call_t *call, void *arg)
{
    (void)arg;
    Ppm__V1__Secrets reply = PPM__V1__SECRETS__INIT;
    reply.stripe_mode = "test";
    reply.stripe_secret_key = KEY;
    reply.stripe_webhook_secret = "whsec_e2e";
    ppm_rpc_call_reply (&call, &reply.base);
}

static void
s_settings (ppm_rpc_call_t *call, void *arg)
{
    (void)arg;
    Ppm__V1__Settings reply = PPM__V1__SETTINGS__INIT;
    reply.terms_url = "https://e2e.example/terms";
    reply.max_minutes_per_purchase = 60;
    ppm_rpc_call_reply (&call, &reply.base);
}

static int
s_pipe (zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void)loop;
    (void)arg;
    char *cmd = zstr_recv (pipe);
    zstr_free (&cmd);
    return -1;
}

static void
s_config_actor (zsock_t *pipe, void *args)
{
    (void)args;
    zsock_signal (pipe, 0);
    zloop_t *loop = zloop_new ();
    ppm_rpc_server_t *server = ppm_rpc_server_new (loop, "tcp://127.0.0.1:*");
    ppm_rpc_server_handle (server, "config.GetSecrets", s_secrets, NULL);
    ppm_rpc_server_handle (server, "config.GetSettings", s_settings, NULL);
    zloop_reader (loop, pipe, s_pipe, NULL);
    zstr_send (pipe, ppm_rpc_server_endpoint (server));
    zloop_start (loop);
    ppm_rpc_server_destroy (&server);
    zloop_destroy (&loop);
}

static ppm_rpc_client_t *s_metering;
static ppm_rpc_client_t *s_payment;

static ppm_status_t *
s_call (ppm_rpc_client_t *client, const char *method, const ProtobufCMessage *msg,
        const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out)
{
    ppm_rpc_req_t req = {.method = method, .tenant = TENANT, .timeout_ms = 10000};
    return ppm_rpc_client_call_sync (client, &req, msg, desc, out);
}

static Ppm__V1__Session *
s_session (const char *sid, Ppm__V1__SessionReply **holder)
{
    Ppm__V1__SessionRequest req = PPM__V1__SESSION_REQUEST__INIT;
    req.session_id = (char *)sid;
    ppm_status_t *st = s_call (s_metering, "metering.Get", &req.base,
                               &ppm__v1__session_reply__descriptor, (ProtobufCMessage **)holder);
    if (st)
        fail_msg ("metering.Get: %s", ppm_status_message (st));
    return (*holder)->session;
}

static const char *s_sid;

static bool
s_funded (void *arg)
{
    (void)arg;
    Ppm__V1__SessionReply *reply = NULL;
    Ppm__V1__Session *s = s_session (s_sid, &reply);
    bool ok = s->funded_ms >= 600000;
    protobuf_c_message_free_unpacked (&reply->base, NULL);
    return ok;
}

static bool
s_settled (void *arg)
{
    (void)arg;
    Ppm__V1__SessionTotalsRequest req = PPM__V1__SESSION_TOTALS_REQUEST__INIT;
    req.session_id = (char *)s_sid;
    ProtobufCMessage *out = NULL;
    ppm_status_t *st = s_call (s_payment, "payment.SessionTotals", &req.base,
                               &ppm__v1__session_totals_reply__descriptor, &out);
    if (st) {
        ppm_status_destroy (&st);
        return false;
    }
    bool settled = ((Ppm__V1__SessionTotalsReply *)out)->settled;
    protobuf_c_message_free_unpacked (out, NULL);
    return settled;
}

static void
test_checkout_fund_end_settle_with_real_metering (void **state)
{
    (void)state;
    ppm_log_init ("test");
    ppm_log_set_level (PPM_LOG_WARN);
    ppm_test_emulator_t *emu = ppm_test_emulator_start (NULL);
    assert_non_null (emu);
    zactor_t *config = zactor_new (s_config_actor, NULL);
    char *config_ep = zstr_recv (config);
    char *pg = ppm_test_pg_url ("payment_e2e");
    char *redis = ppm_test_redis_url (21);
    char payment_ep[64], metering_ep[64];
    snprintf (payment_ep, sizeof payment_ep, "tcp://127.0.0.1:%d", ppm_test_free_port ());
    snprintf (metering_ep, sizeof metering_ep, "tcp://127.0.0.1:%d", ppm_test_free_port ());

    metering_config_t mcfg = {.rpc_bind = metering_ep,
                              .pub_bind = "tcp://127.0.0.1:*",
                              .redis_url = redis,
                              .pg_url = pg,
                              .payment_endpoint = payment_ep,
                              .replica_id = "e2e",
                              .tick_ms = 100,
                              .lease_ms = 1000,
                              .buckets = 16,
                              .retention_ms = 60000,
                              .batch = 1000};
    zactor_t *metering = zactor_new (metering_server_actor, &mcfg);
    zstr_send (metering, "PORT");
    char *port = zstr_recv (metering);
    assert_true (port && strtol (port, NULL, 10) > 0);
    zstr_free (&port);

    payment_config_t pcfg;
    payment_config_defaults (&pcfg);
    pcfg.rpc_bind = payment_ep;
    pcfg.pub_bind = "tcp://127.0.0.1:*";
    pcfg.config_endpoint = config_ep;
    pcfg.config_events = "";
    pcfg.metering_endpoint = metering_ep;
    pcfg.pg_url = pg;
    pcfg.stripe_api_base = ppm_test_emulator_url (emu);
    pcfg.outbox_interval_ms = 50;
    char *error = NULL;
    zactor_t *payment = payment_server_start (&pcfg, NULL, NULL, &error);
    if (!payment)
        fail_msg ("payment: %s", error);
    s_metering = ppm_rpc_client_new (metering_ep);
    s_payment = ppm_rpc_client_new (payment_ep);

    /* a paid session in metering, authorize mode, $1.00 a minute */
    Ppm__V1__Quote q = PPM__V1__QUOTE__INIT;
    q.quote_id = "q_e2e";
    q.payee = PAYEE;
    q.payer = PAYER;
    q.kind = "call";
    q.paid = true;
    q.rate_per_minute = 100;
    q.currency = "USD";
    q.rounding = "minute";
    q.billing_mode = "authorize";
    q.grace_s = 30;
    q.session_ttl_s = 3600;
    q.max_session_minutes = 600;
    Ppm__V1__CreateRequest create = PPM__V1__CREATE_REQUEST__INIT;
    create.quote = &q;
    create.payer = PAYER;
    create.payee = PAYEE;
    create.kind = "call";
    Ppm__V1__SessionReply *created = NULL;
    ppm_status_t *st = s_call (s_metering, "metering.Create", &create.base,
                               &ppm__v1__session_reply__descriptor, (ProtobufCMessage **)&created);
    if (st)
        fail_msg ("metering.Create: %s", ppm_status_message (st));
    char *sid = strdup (created->session->session_id);
    s_sid = sid;
    protobuf_c_message_free_unpacked (&created->base, NULL);

    /* buy 10 minutes */
    Ppm__V1__CheckoutRequest co = PPM__V1__CHECKOUT_REQUEST__INIT;
    co.session_id = sid;
    co.payer = PAYER;
    co.minutes = 10;
    co.accept_terms = true;
    ProtobufCMessage *out = NULL;
    st = s_call (s_payment, "payment.Checkout", &co.base, &ppm__v1__checkout_reply__descriptor,
                 &out);
    if (st)
        fail_msg ("payment.Checkout: %s", ppm_status_message (st));
    char pid[40];
    snprintf (pid, sizeof pid, "%s", ((Ppm__V1__CheckoutReply *)out)->payment_id);
    assert_int_equal (((Ppm__V1__CheckoutReply *)out)->amount, 1000);
    protobuf_c_message_free_unpacked (out, NULL);
    Ppm__V1__ConfirmRequest cf = PPM__V1__CONFIRM_REQUEST__INIT;
    cf.payment_id = pid;
    cf.payer = PAYER;
    cf.payment_method = "pm_card_visa";
    out = NULL;
    st = s_call (s_payment, "payment.Confirm", &cf.base, &ppm__v1__confirm_reply__descriptor, &out);
    if (st)
        fail_msg ("payment.Confirm: %s", ppm_status_message (st));
    assert_int_equal (((Ppm__V1__ConfirmReply *)out)->state,
                      PPM__V1__PAYMENT_STATE__PAYMENT_AUTHORIZED);
    protobuf_c_message_free_unpacked (out, NULL);

    /* the outbox funds the real session */
    assert_true (ppm_test_wait_until (s_funded, NULL, 5000));
    Ppm__V1__SessionReply *holder = NULL;
    Ppm__V1__Session *s = s_session (sid, &holder);
    assert_int_equal (s->state, PPM__V1__SESSION_STATE__SESSION_ACTIVE);
    assert_int_equal (s->funded_ms, 600000);
    protobuf_c_message_free_unpacked (&holder->base, NULL);

    /* end it: metering settles with payment by itself */
    zclock_sleep (300);
    Ppm__V1__EndRequest end = PPM__V1__END_REQUEST__INIT;
    end.session_id = sid;
    end.by = "payer";
    end.actor = PAYER;
    out = NULL;
    st = s_call (s_metering, "metering.End", &end.base, &ppm__v1__end_reply__descriptor, &out);
    if (st)
        fail_msg ("metering.End: %s", ppm_status_message (st));
    protobuf_c_message_free_unpacked (out, NULL);
    assert_true (ppm_test_wait_until (s_settled, NULL, 10000));

    Ppm__V1__GetPaymentRequest get = PPM__V1__GET_PAYMENT_REQUEST__INIT;
    get.payment_id = pid;
    out = NULL;
    st = s_call (s_payment, "payment.Get", &get.base, &ppm__v1__payment__descriptor, &out);
    assert_null (st);
    Ppm__V1__Payment *p = (Ppm__V1__Payment *)out;
    assert_int_equal (p->state, PPM__V1__PAYMENT_STATE__PAYMENT_SUCCEEDED);
    assert_int_equal (p->captured, 100); /* one started minute */
    assert_true (p->funded);
    protobuf_c_message_free_unpacked (out, NULL);

    ppm_rpc_client_destroy (&s_payment);
    ppm_rpc_client_destroy (&s_metering);
    zactor_destroy (&payment);
    zactor_destroy (&metering);
    zactor_destroy (&config);
    zstr_free (&config_ep);
    ppm_test_emulator_stop (&emu);
    free (sid);
    free (pg);
    free (redis);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_checkout_fund_end_settle_with_real_metering),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
