/*  fuzz_rpc: libFuzzer harness for the RPC envelope as ppm_rpc reads it
    from the wire, on both sides (common/ppm_rpc.c).

    The decoding path is static in ppm_rpc.c (s_server_dispatch,
    s_client_dispatch, the request-id scanner, the unpack arena), so this
    harness includes ppm_rpc.c itself rather than widening its API: the
    harness's copy of every ppm_rpc symbol is the one linked (libppm.a's
    ppm_rpc.o is then never pulled in), and the code fuzzed is exactly the
    code the services run.

    Input: the first byte chooses the side and the frame count (bit 0: 0 =
    server, 1 = client; bit 1: a second body frame), the rest is the first
    body frame.
      - Server: handed to s_server_dispatch of a real server (ROUTER bound
        to inproc, never polled) with every method of config, rate,
        metering and payment registered. A handler unpacks the payload with
        the method's request descriptor (ppm_rpc_call_unpack), as the
        services do, and replies with it, fails, or discards the call
        (chosen by the request id), so replies are packed and sent too.
      - Client: handed to s_client_dispatch of a client that always has one
        call pending with request id 1; a matching reply runs the callback,
        which unpacks the payload as a ppm.v1.Quote.
    Nothing may crash, leak, read out of bounds or hit undefined behaviour;
    every call handed to a handler must end (the server holds no call
    afterwards).

    Build and run: `make fuzz`; corpus: corpus/fuzz_rpc/ (written by
    tests/fuzz/gen-seeds.sh). */
#include "common/ppm_rpc.c"

#include "proto/config.pb-c.h"
#include "proto/metering.pb-c.h"
#include "proto/payment.pb-c.h"
#include "proto/rate.pb-c.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

typedef struct {
    const char *method;
    const ProtobufCMessageDescriptor *request;
} s_fuzz_method_t;

static const s_fuzz_method_t s_fuzz_methods[] = {
    {"config.CreateTenant", &ppm__v1__create_tenant_request__descriptor},
    {"config.ListTenants", &ppm__v1__list_tenants_request__descriptor},
    {"config.SetPlan", &ppm__v1__set_plan_request__descriptor},
    {"config.GetSettings", &ppm__v1__get_settings_request__descriptor},
    {"config.PutSettings", &ppm__v1__put_settings_request__descriptor},
    {"config.GetUserRates", &ppm__v1__get_user_rates_request__descriptor},
    {"config.PutUserRates", &ppm__v1__put_user_rates_request__descriptor},
    {"config.ListUserRates", &ppm__v1__list_user_rates_request__descriptor},
    {"config.GetRoleRates", &ppm__v1__get_role_rates_request__descriptor},
    {"config.PutRoleRates", &ppm__v1__put_role_rates_request__descriptor},
    {"config.CreateAdminKey", &ppm__v1__create_admin_key_request__descriptor},
    {"config.RevokeAdminKey", &ppm__v1__revoke_admin_key_request__descriptor},
    {"config.VerifyAdminKey", &ppm__v1__verify_admin_key_request__descriptor},
    {"config.ListAudit", &ppm__v1__list_audit_request__descriptor},
    {"config.GetSecrets", &ppm__v1__get_secrets_request__descriptor},
    {"config.GetUserTokenSecret", &ppm__v1__get_user_token_secret_request__descriptor},
    {"config.GetUserTokenSecretInfo", &ppm__v1__get_user_token_secret_info_request__descriptor},
    {"config.RotateUserTokenSecret", &ppm__v1__rotate_user_token_secret_request__descriptor},
    {"config.GetSnapshot", &ppm__v1__get_snapshot_request__descriptor},
    {"config.ListRevisions", &ppm__v1__list_revisions_request__descriptor},
    {"rate.Quote", &ppm__v1__quote_request__descriptor},
    {"metering.Create", &ppm__v1__create_request__descriptor},
    {"metering.Fund", &ppm__v1__fund_request__descriptor},
    {"metering.Start", &ppm__v1__session_request__descriptor},
    {"metering.Heartbeat", &ppm__v1__session_request__descriptor},
    {"metering.Pause", &ppm__v1__session_request__descriptor},
    {"metering.Resume", &ppm__v1__session_request__descriptor},
    {"metering.End", &ppm__v1__end_request__descriptor},
    {"metering.Get", &ppm__v1__session_request__descriptor},
    {"metering.List", &ppm__v1__list_request__descriptor},
    {"metering.Rebuild", &ppm__v1__rebuild_request__descriptor},
    {"payment.Checkout", &ppm__v1__checkout_request__descriptor},
    {"payment.Confirm", &ppm__v1__confirm_request__descriptor},
    {"payment.Settle", &ppm__v1__settle_request__descriptor},
    {"payment.Webhook", &ppm__v1__webhook_request__descriptor},
    {"payment.GetPayment", &ppm__v1__get_payment_request__descriptor},
    {"payment.ListPayments", &ppm__v1__list_payments_request__descriptor},
    {"payment.SessionTotals", &ppm__v1__session_totals_request__descriptor},
    {"payment.Earnings", &ppm__v1__earnings_request__descriptor},
    {"payment.ExportCsv", &ppm__v1__export_csv_request__descriptor},
    {"payment.Reconcile", &ppm__v1__reconcile_request__descriptor},
    {NULL, NULL}};

static zloop_t *s_fuzz_loop;
static ppm_rpc_server_t *s_fuzz_server;
static ppm_rpc_client_t *s_fuzz_client;

static void
s_fuzz_handler (ppm_rpc_call_t *call, void *arg)
{
    const s_fuzz_method_t *method = (const s_fuzz_method_t *)arg;
    assert (strcmp (ppm_rpc_call_method (call), method->method) == 0);
    (void)ppm_rpc_call_tenant (call);
    (void)ppm_rpc_call_trace_id (call);
    (void)ppm_rpc_call_deadline_ms (call);
    size_t payload_size = 0;
    (void)ppm_rpc_call_payload (call, &payload_size);
    ProtobufCMessage *msg = ppm_rpc_call_unpack (call, method->request);
    if (!msg) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "payload is not a %s",
                            method->request->name);
        return;
    }
    switch (ppm_rpc_call_request_id (call) % 3) {
        case 0:
            ppm_rpc_call_reply (&call, msg);
            break;
        case 1: {
            ppm_status_t *status = ppm_status_new (PPM_INVALID_ARGUMENT, "bad request");
            ppm_status_add_field (status, "tenant_id", "is required");
            ppm_rpc_call_fail (&call, &status);
            break;
        }
        default:
            ppm_rpc_call_discard (&call);
    }
    assert (call == NULL);
    protobuf_c_message_free_unpacked (msg, NULL);
}

static void
s_fuzz_reply (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    (void)arg;
    if (status) {
        (void)ppm_status_message (status);
        for (size_t i = 0; i < ppm_status_field_count (status); i++)
            (void)ppm_status_field_name (status, i);
        return;
    }
    Ppm__V1__Quote *quote = ppm__v1__quote__unpack (NULL, size, payload);
    if (quote)
        ppm__v1__quote__free_unpacked (quote, NULL);
}

static void
s_fuzz_fini (void)
{
    ppm_rpc_client_destroy (&s_fuzz_client);
    ppm_rpc_server_destroy (&s_fuzz_server);
    zloop_destroy (&s_fuzz_loop);
}

static void
s_fuzz_init (void)
{
    if (s_fuzz_server)
        return;
    ppm_log_set_level (PPM_LOG_ERROR);
    s_fuzz_loop = zloop_new ();
    assert (s_fuzz_loop);
    s_fuzz_server = ppm_rpc_server_new (s_fuzz_loop, "inproc://fuzz-rpc");
    assert (s_fuzz_server);
    for (const s_fuzz_method_t *m = s_fuzz_methods; m->method; m++)
        ppm_rpc_server_handle (s_fuzz_server, m->method, s_fuzz_handler, (void *)m);
    s_fuzz_client = ppm_rpc_client_new ("inproc://fuzz-rpc");
    assert (s_fuzz_client);
    atexit (s_fuzz_fini);
}

/* Keeps exactly one call pending on the client, with request id 1, and
   empties the server's queue of those requests. */
static void
s_fuzz_pending (void)
{
    if (ppm_rpc_client_pending (s_fuzz_client) == 0) {
        s_fuzz_client->next_id = 1;
        ppm_rpc_req_t req = {.method = "rate.Quote", .tenant = "t_1", .timeout_ms = 60000};
        ppm_rpc_client_call (s_fuzz_client, &req, NULL, s_fuzz_reply, NULL);
    }
    zmsg_t *msg;
    while ((msg = zmsg_recv (s_fuzz_server->router)))
        zmsg_destroy (&msg);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    s_fuzz_init ();
    bool client = data[0] & 1;
    size_t frames = data[0] & 2 ? 2 : 1;
    zframe_t *body = zframe_new (data + 1, size - 1);
    assert (body);
    if (client) {
        s_fuzz_pending ();
        s_client_dispatch (s_fuzz_client, &body, frames);
    } else {
        zframe_t *routing_id = zframe_new ("\0fuzz", 5);
        assert (routing_id);
        s_server_dispatch (s_fuzz_server, &routing_id, &body, frames, ppm_clock_real_mono_us ());
        assert (routing_id == NULL);
        assert (zlistx_size (s_fuzz_server->calls) == 0);
    }
    assert (body == NULL);
    return 0;
}
