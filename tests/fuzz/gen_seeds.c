/*  gen_seeds: writes the seed corpora of fuzz_proto, fuzz_rpc, fuzz_jwt,
    fuzz_gateway, fuzz_env_money, fuzz_events and fuzz_metering_snap under tests/fuzz/corpus/ —
   valid inputs built with the project's own code (packed messages, envelopes, signed tokens) and
   near-valid ones (truncated, one field wrong). Run by tests/fuzz/gen-seeds.sh; the output is
   committed, so this only runs again when the seeds should change. Files are named seed_*; findings
    kept as regression cases are named regress_* and are never touched.

        gen_seeds CORPUS_DIR
*/
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_jwt.h"
#include "ppm_rpc.h"
#include "ppm_status.h"
#include "services/config/config_settings.h"
#include "services/metering/metering_model.h"
#include "services/rate/rate_cache.h"
#include "services/rate/rate_quote.h"
#include "tests/fuzz/fuzz_proto_messages.h"

#define S_NOW_MS 1800000000000LL

static const char *s_root;

static void
s_write (const char *harness, const char *name, const void *data, size_t size)
{
    char path[1024];
    snprintf (path, sizeof path, "%s/%s/seed_%s", s_root, harness, name);
    FILE *file = fopen (path, "wb");
    if (!file) {
        fprintf (stderr, "gen_seeds: cannot write %s\n", path);
        exit (1);
    }
    if (size)
        fwrite (data, 1, size, file);
    fclose (file);
}

static void
s_text (const char *harness, const char *name, uint8_t mode, const char *text)
{
    size_t len = strlen (text);
    uint8_t *buf = malloc (len + 1);
    assert (buf);
    buf[0] = mode;
    memcpy (buf + 1, text, len);
    s_write (harness, name, buf, len + 1);
    free (buf);
}

/* Packs msg behind a prefix byte; returns the malloc'ed buffer. */
static uint8_t *
s_pack (uint8_t prefix, const ProtobufCMessage *msg, size_t *size)
{
    size_t packed = msg ? protobuf_c_message_get_packed_size (msg) : 0;
    uint8_t *buf = malloc (packed + 1);
    assert (buf);
    buf[0] = prefix;
    if (msg)
        protobuf_c_message_pack (msg, buf + 1);
    *size = packed + 1;
    return buf;
}

static uint8_t
s_index (const ProtobufCMessageDescriptor *d)
{
    for (size_t i = 0; i < sizeof s_messages / sizeof s_messages[0]; i++)
        if (s_messages[i] == d)
            return (uint8_t)i;
    assert (!"message not in fuzz_proto_messages.h");
    return 0;
}

/* A valid message and its truncation (near-valid). */
static void
s_proto (const char *name, const ProtobufCMessage *msg)
{
    size_t size;
    uint8_t *buf = s_pack (s_index (msg->descriptor), msg, &size);
    s_write ("fuzz_proto", name, buf, size);
    if (size > 2) {
        char cut[128];
        snprintf (cut, sizeof cut, "%s_cut", name);
        s_write ("fuzz_proto", cut, buf, size - 1 - (size - 1) / 3);
    }
    free (buf);
}

static uint8_t *
s_payload (const ProtobufCMessage *msg, size_t *size)
{
    *size = protobuf_c_message_get_packed_size (msg);
    uint8_t *buf = malloc (*size ? *size : 1);
    assert (buf);
    protobuf_c_message_pack (msg, buf);
    return buf;
}

/* A request (server side, prefix 0/2) or reply (client side, prefix 1). */
static void
s_envelope (const char *name, uint8_t prefix, Ppm__V1__Kind kind, uint32_t version,
            const char *method, uint64_t request_id, int64_t deadline_ms,
            const ProtobufCMessage *payload, Ppm__V1__Status *status)
{
    Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
    env.version = version;
    env.kind = kind;
    env.method = (char *)method;
    env.request_id = request_id;
    env.deadline_ms = deadline_ms;
    env.trace_id = "0123456789abcdef0123456789abcdef";
    env.tenant_id = "t_1";
    size_t payload_size = 0;
    uint8_t *payload_buf = NULL;
    if (payload) {
        payload_buf = s_payload (payload, &payload_size);
        env.payload.data = payload_buf;
        env.payload.len = payload_size;
    }
    env.status = status;
    size_t size;
    uint8_t *buf = s_pack (prefix, &env.base, &size);
    s_write ("fuzz_rpc", name, buf, size);
    free (buf);
    free (payload_buf);
}

/* An event as a publisher sends it: topic length, topic, envelope. */
static void
s_event (const char *name, const char *topic, const char *event, const char *tenant,
         Ppm__V1__Kind kind, const ProtobufCMessage *payload)
{
    Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
    env.version = 1;
    env.kind = kind;
    env.method = (char *)event;
    env.tenant_id = (char *)tenant;
    env.trace_id = "0123456789abcdef0123456789abcdef";
    size_t payload_size = 0;
    uint8_t *payload_buf = NULL;
    if (payload) {
        payload_buf = s_payload (payload, &payload_size);
        env.payload.data = payload_buf;
        env.payload.len = payload_size;
    }
    size_t topic_len = strlen (topic);
    assert (topic_len < 0x80);
    size_t packed = ppm__v1__envelope__get_packed_size (&env);
    uint8_t *buf = malloc (1 + topic_len + packed);
    assert (buf);
    buf[0] = (uint8_t)topic_len;
    memcpy (buf + 1, topic, topic_len);
    ppm__v1__envelope__pack (&env, buf + 1 + topic_len);
    s_write ("fuzz_events", name, buf, 1 + topic_len + packed);
    free (buf);
    free (payload_buf);
}

int
main (int argc, char **argv)
{
    if (argc != 2) {
        fprintf (stderr, "usage: gen_seeds CORPUS_DIR\n");
        return 1;
    }
    s_root = argv[1];

    /* ---- messages ---- */
    Ppm__V1__Settings defaults = PPM__V1__SETTINGS__INIT;
    config_settings_defaults (&defaults);
    Ppm__V1__Settings *settings = config_settings_dup (&defaults);
    const char *error = NULL;
    config_settings_set_text (settings, "enabled", "true", &error);
    config_settings_set_text (settings, "terms_url", "https://example.com/terms", &error);
    settings->default_call_per_minute = 250;
    settings->default_chat_per_minute = 100;
    settings->version = 3;
    Ppm__V1__PutSettingsRequest put = PPM__V1__PUT_SETTINGS_REQUEST__INIT;
    put.tenant_id = "t_1";
    put.settings = settings;
    put.expected_version = 3;
    s_proto ("put_settings", &put.base);
    s_proto ("settings", &settings->base);

    rate_tenant_t *tenant = rate_tenant_new ("t_1", "pro", 42, settings);
    assert (tenant);
    rate_user_t user = {.call = {300, true}, .chat = {0, false}};
    rate_tenant_set_user (tenant, "alice", user);
    Ppm__V1__QuoteRequest quote_req = PPM__V1__QUOTE_REQUEST__INIT;
    char *roles[] = {"coach"};
    quote_req.tenant_id = "t_1";
    quote_req.payee = "alice";
    quote_req.payee_roles = roles;
    quote_req.n_payee_roles = 1;
    quote_req.payer = "bob";
    quote_req.kind = "call";
    s_proto ("quote_request", &quote_req.base);
    rate_quote_t quote;
    ppm_status_t *st = rate_quote_build (tenant, &quote_req, false, S_NOW_MS, &quote);
    assert (st == NULL);
    s_proto ("quote", &quote.quote.base);

    Ppm__V1__CreateRequest create = PPM__V1__CREATE_REQUEST__INIT;
    create.tenant_id = "t_1";
    create.quote = &quote.quote;
    create.payer = "bob";
    create.payee = "alice";
    create.kind = "call";
    s_proto ("create_request", &create.base);
    create.kind = "chat"; /* near-valid: differs from the quote */
    s_proto ("create_request_kind", &create.base);
    create.kind = "call";

    char sid[METERING_SID_LEN + 1];
    metering_sid_new (S_NOW_MS, sid);
    Ppm__V1__SessionRequest session_req = PPM__V1__SESSION_REQUEST__INIT;
    session_req.tenant_id = "t_1";
    session_req.session_id = sid;
    s_proto ("session_request", &session_req.base);
    Ppm__V1__EndRequest end = PPM__V1__END_REQUEST__INIT;
    end.tenant_id = "t_1";
    end.session_id = sid;
    s_proto ("end_request", &end.base);
    Ppm__V1__FundRequest fund = PPM__V1__FUND_REQUEST__INIT;
    fund.tenant_id = "t_1";
    fund.session_id = sid;
    fund.payment_id = "pay_0123456789";
    fund.minutes = 10;
    fund.amount = 3000;
    fund.currency = "USD";
    s_proto ("fund_request", &fund.base);

    Ppm__V1__Session session = PPM__V1__SESSION__INIT;
    session.session_id = sid;
    session.tenant_id = "t_1";
    session.payer = "bob";
    session.payee = "alice";
    session.currency = "USD";
    session.rate_per_minute = 300;
    session.state = PPM__V1__SESSION_STATE__SESSION_ACTIVE;
    s_proto ("session", &session.base);

    Ppm__V1__CheckoutRequest checkout = PPM__V1__CHECKOUT_REQUEST__INIT;
    checkout.tenant_id = "t_1";
    checkout.session_id = sid;
    checkout.payer = "bob";
    checkout.minutes = 10;
    checkout.accept_terms = 1;
    s_proto ("checkout_request", &checkout.base);
    Ppm__V1__SettleRequest settle = PPM__V1__SETTLE_REQUEST__INIT;
    settle.tenant_id = "t_1";
    settle.session_id = sid;
    settle.used_ms = 61000;
    settle.ended_at_ms = S_NOW_MS;
    settle.reason = "ended";
    s_proto ("settle_request", &settle.base);
    Ppm__V1__WebhookRequest webhook = PPM__V1__WEBHOOK_REQUEST__INIT;
    webhook.tenant_id = "t_1";
    webhook.payload.data = (uint8_t *)"{\"id\":\"evt_1\",\"type\":\"payment_intent.succeeded\"}";
    webhook.payload.len = strlen ((const char *)webhook.payload.data);
    webhook.signature = "t=1800000000,v1=00";
    s_proto ("webhook_request", &webhook.base);
    Ppm__V1__Payment payment = PPM__V1__PAYMENT__INIT;
    payment.tenant_id = "t_1";
    payment.session_id = sid;
    payment.currency = "USD";
    payment.amount = 3000;
    s_proto ("payment", &payment.base);
    Ppm__V1__UserTokenSecretInfo token_info = PPM__V1__USER_TOKEN_SECRET_INFO__INIT;
    token_info.masked = "…cdef";
    token_info.rotated_at_ms = S_NOW_MS;
    s_proto ("user_token_secret_info", &token_info.base);
    Ppm__V1__RotateUserTokenSecretReply rotated = PPM__V1__ROTATE_USER_TOKEN_SECRET_REPLY__INIT;
    rotated.secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    rotated.masked = "…cdef";
    rotated.rotated_at_ms = S_NOW_MS;
    s_proto ("rotate_user_token_secret_reply", &rotated.base);

    ppm_status_t *status = ppm_status_new (PPM_INVALID_ARGUMENT, "2 fields are invalid");
    ppm_status_add_field (status, "minutes", "must be 1..100000");
    ppm_status_add_field (status, "payee", "is required");
    Ppm__V1__Status *status_proto = ppm_status_to_proto (status);
    s_proto ("status", &status_proto->base);

    /* ---- envelopes ---- */
    Ppm__V1__GetSettingsRequest get = PPM__V1__GET_SETTINGS_REQUEST__INIT;
    get.tenant_id = "t_1";
    const Ppm__V1__Kind req = PPM__V1__KIND__KIND_REQUEST;
    const Ppm__V1__Kind rep = PPM__V1__KIND__KIND_REPLY;
    s_envelope ("get_settings", 0, req, 1, "config.GetSettings", 3, 0, &get.base, NULL);
    s_envelope ("put_settings", 0, req, 1, "config.PutSettings", 4, 0, &put.base, NULL);
    s_envelope ("quote", 0, req, 1, "rate.Quote", 5, 0, &quote_req.base, NULL);
    s_envelope ("create", 0, req, 1, "metering.Create", 6, 0, &create.base, NULL);
    s_envelope ("fund", 0, req, 1, "metering.Fund", 7, 0, &fund.base, NULL);
    s_envelope ("checkout", 0, req, 1, "payment.Checkout", 8, 0, &checkout.base, NULL);
    s_envelope ("ping", 0, req, 1, "sys.Ping", 9, 0, NULL, NULL);
    s_envelope ("deadline_future", 0, req, 1, "metering.Get", 10, 4102444800000LL,
                &session_req.base, NULL);
    s_envelope ("deadline_past", 0, req, 1, "metering.Get", 11, 1000, &session_req.base, NULL);
    s_envelope ("bad_version", 0, req, 2, "rate.Quote", 12, 0, &quote_req.base, NULL);
    s_envelope ("bad_kind", 0, rep, 1, "rate.Quote", 13, 0, &quote_req.base, NULL);
    s_envelope ("unknown_method", 0, req, 1, "rate.Nope", 14, 0, NULL, NULL);
    s_envelope ("wrong_payload", 0, req, 1, "metering.Create", 15, 0, &settings->base, NULL);
    s_envelope ("two_frames", 2, req, 1, "rate.Quote", 16, 0, &quote_req.base, NULL);
    Ppm__V1__RotateUserTokenSecretRequest rotate = PPM__V1__ROTATE_USER_TOKEN_SECRET_REQUEST__INIT;
    rotate.actor = "admin:0123456789abcdef";
    s_envelope ("rotate_user_token_secret", 0, req, 1, "config.RotateUserTokenSecret", 17, 0,
                &rotate.base, NULL);
    s_envelope ("reply_ok", 1, rep, 1, "rate.Quote", 1, 0, &quote.quote.base, NULL);
    s_envelope ("reply_status", 1, rep, 1, "rate.Quote", 1, 0, NULL, status_proto);
    s_envelope ("reply_late", 1, rep, 1, "rate.Quote", 2, 0, &quote.quote.base, NULL);
    s_envelope ("reply_bad_kind", 1, req, 1, "rate.Quote", 1, 0, NULL, NULL);
    /* a request id before a malformed tail (the server's id scanner) */
    const uint8_t broken[] = {0x00, 0x08, 0x01, 0x20, 0x2a, 0x1a, 0x7f, 'r'};
    s_write ("fuzz_rpc", "broken_tail", broken, sizeof broken);
    ppm_status_proto_free (&status_proto);
    ppm_status_destroy (&status);

    /* ---- stored sessions: the hash fields metering writes at Create ---- */
    char fields_buf[4096];
    const char *fields[64];
    int nf = metering_create_fields (&create, "t_1", S_NOW_MS, 60000, fields_buf, sizeof fields_buf,
                                     fields, 64);
    assert (nf > 0);
    char lines[8192];
    size_t used = 0;
    for (int i = 0; i + 1 < nf; i += 2)
        used += (size_t)snprintf (lines + used, sizeof lines - used, "%s=%s\n", fields[i],
                                  fields[i + 1]);
    s_write ("fuzz_metering_snap", "created", lines, used);
    const char *active = "t=t_1\na=bob\nb=alice\nc=USD\nw=60,10\nk=1\ns=2\nq=5\no=1\nr=300\n"
                         "g=30\nx=3600\nm=120\nf=600000\nT=60000\nM=3000\nu=1000\n"
                         "v=1800000000000\nh=1800000000000\ny=0\ne=0\nn=0\nj=4\nZ=0\n";
    s_write ("fuzz_metering_snap", "active", active, strlen (active));
    const char *expired = "t=t_1\nc=JPY\ns=4\no=11\nr=50\ng=120\nf=60000\nM=50\nu=60000\n"
                          "e=1800000000000\nn=4\nZ=0\np3k5m2q7x=1\n";
    s_write ("fuzz_metering_snap", "expired", expired, strlen (expired));

    /* ---- events ---- */
    const Ppm__V1__Kind evt = PPM__V1__KIND__KIND_EVENT;
    Ppm__V1__ConfigChanged changed = PPM__V1__CONFIG_CHANGED__INIT;
    changed.tenant_id = "t_1";
    changed.revision = 43;
    changed.what = "settings";
    s_event ("config_changed", "config.changed.t_1", "config.changed", "t_1", evt, &changed.base);
    Ppm__V1__SessionEvent session_event = PPM__V1__SESSION_EVENT__INIT;
    session_event.session_id = sid;
    session_event.tenant_id = "t_1";
    session_event.event = "session.warning";
    session_event.remaining_ms = 60000;
    s_event ("session_warning", "session.warning.t_1", "session.warning", "t_1", evt,
             &session_event.base);
    Ppm__V1__PaymentEvent payment_event = PPM__V1__PAYMENT_EVENT__INIT;
    payment_event.payment_id = "pay_0123456789";
    payment_event.session_id = sid;
    payment_event.amount = 3000;
    payment_event.currency = "USD";
    s_event ("payment_succeeded", "payment.succeeded.t_1", "payment.succeeded", "t_1", evt,
             &payment_event.base);
    s_event ("no_tenant", "config.changed", "config.changed", "", evt, &changed.base);
    s_event ("wrong_topic", "session.warning.t_2", "session.warning", "t_1", evt,
             &session_event.base);
    s_event ("wrong_kind", "session.warning.t_1", "session.warning", "t_1", rep,
             &session_event.base);

    /* ---- tokens ---- */
    const char *secret = "fuzz-user-token-secret-0123456789";
    ppm_jwt_claims_t claims;
    memset (&claims, 0, sizeof claims);
    snprintf (claims.tid, sizeof claims.tid, "t_1");
    snprintf (claims.sub, sizeof claims.sub, "bob");
    snprintf (claims.roles[0], sizeof claims.roles[0], "coach");
    claims.role_count = 1;
    claims.exp = 1900000000;
    claims.iat = 1799999000;
    char *token = ppm_jwt_sign (&claims, (const uint8_t *)secret, strlen (secret));
    assert (token);
    s_write ("fuzz_jwt", "valid", token, strlen (token));
    char *dot = strrchr (token, '.');
    dot[1] = dot[1] == 'A' ? 'B' : 'A';
    s_write ("fuzz_jwt", "bad_signature", token, strlen (token));
    free (token);
    claims.exp = 1700000000;
    token = ppm_jwt_sign (&claims, (const uint8_t *)secret, strlen (secret));
    s_write ("fuzz_jwt", "expired", token, strlen (token));
    free (token);
    /* {"alg":"none","typ":"JWT"} . {"tid":"t_1","sub":"bob","exp":1900000000} . */
    const char *none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
                       "eyJ0aWQiOiJ0XzEiLCJzdWIiOiJib2IiLCJleHAiOjE5MDAwMDAwMDB9.";
    s_write ("fuzz_jwt", "alg_none", none, strlen (none));
    s_write ("fuzz_jwt", "base64", "SGVsbG8td29ybGQ_", 16);

    /* ---- gateway ---- */
    s_text ("fuzz_gateway", "checkout", 0,
            "{\"minutes\": 10, \"accept_terms\": true, \"email\": \"bob@example.com\"}");
    s_text ("fuzz_gateway", "unknown_field", 0, "{\"minutes\": 0, \"tip\": 5}");
    s_text ("fuzz_gateway", "settings", 0,
            "{\"enabled\": true, \"currency\": \"usd\", \"preset_minutes\": [5, 30, 60], "
            "\"default_call_per_minute\": 250, \"terms_url\": \"https://x.example/t\", "
            "\"warning_marks_s\": [60, 10], \"version\": 3}");
    s_text ("fuzz_gateway", "rates", 0,
            "{\"call_per_minute\": 300, \"chat_per_minute\": null, \"priority\": 2}");
    s_text ("fuzz_gateway", "deep", 0, "{\"a\":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}");
    s_text ("fuzz_gateway", "not_object", 0, "[1, 2]");
    s_text ("fuzz_gateway", "empty", 0x80, "  ");
    s_text ("fuzz_gateway", "limit", 1, "50");
    s_text ("fuzz_gateway", "limit_big", 1, "99999999999999999999");
    s_text ("fuzz_gateway", "state", 1, "awaiting_payment");
    s_text ("fuzz_gateway", "route_checkout", 2, "POST /v1/sessions/s0123456789abcdef/checkout");
    s_text ("fuzz_gateway", "route_rates", 2, "PUT /v1/admin/users/alice/rates");
    s_text ("fuzz_gateway", "route_method", 2, "DELETE /v1/sessions/x");
    s_text ("fuzz_gateway", "route_webhook", 2, "POST /v1/stripe/webhook/t_1");

    /* ---- env values and amounts (byte 0: currency index) ---- */
    s_text ("fuzz_env_money", "int", 0, "1000");
    s_text ("fuzz_env_money", "duration_ms", 0, "250ms");
    s_text ("fuzz_env_money", "duration_h", 0, "1h");
    s_text ("fuzz_env_money", "bool", 0, "yes");
    s_text ("fuzz_env_money", "amount", 0, "12.34");
    s_text ("fuzz_env_money", "amount_3", 3, "1.230");
    s_text ("fuzz_env_money", "negative", 0, "-5");
    s_text ("fuzz_env_money", "overflow", 0, "92233720368547758.08");
    s_text ("fuzz_env_money", "too_many_decimals", 0, "1.234");

    rate_tenant_destroy (&tenant);
    config_settings_free (&settings);
    return 0;
}
