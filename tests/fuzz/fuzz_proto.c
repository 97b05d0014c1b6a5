/*  fuzz_proto: libFuzzer harness for every protobuf message a ppm service
    or client unpacks from the wire (proto/config, rate, payment, metering,
    envelope: requests, replies and events alike).

    The first input byte picks the message type (index into s_messages,
    modulo its length; the list is append-only so committed seeds keep
    their meaning), the rest is unpacked with protobuf_c_message_unpack.
    A message that unpacks must pack again to a buffer of exactly its
    packed size, and that buffer must unpack again. Then the message is
    handed to the same checks the services run on it:
      - PutSettingsRequest: config_settings_normalize + _validate (config)
      - QuoteRequest: rate_quote_build against a fixed tenant (rate)
      - CreateRequest: metering_create_check and, when valid,
        metering_create_fields (metering)
      - SessionRequest/EndRequest/FundRequest ids: metering_sid_valid,
        metering_id_valid
      - Settings, Quote, Session, Payment, AuditEntry, UserRates, RoleRates:
        the gateway's JSON conversions of replies (gateway_convert)
      - Status: ppm_status_from_proto (every client reads it).
    Nothing may crash, leak, read out of bounds or hit undefined behaviour.

    Build and run: `make fuzz`; corpus: corpus/fuzz_proto/ (written by
    tests/fuzz/gen-seeds.sh). */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_status.h"
#include "proto/config.pb-c.h"
#include "proto/envelope.pb-c.h"
#include "proto/metering.pb-c.h"
#include "proto/payment.pb-c.h"
#include "proto/rate.pb-c.h"
#include "services/config/config_settings.h"
#include "services/gateway/gateway_convert.h"
#include "services/metering/metering_model.h"
#include "services/rate/rate_cache.h"
#include "services/rate/rate_quote.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#include "tests/fuzz/fuzz_proto_messages.h"

#define S_MESSAGES (sizeof s_messages / sizeof s_messages[0])

#define S_NOW_MS 1800000000000LL

static rate_tenant_t *s_tenant;

/* The tenant quotes are built against: enabled, one payee with an
   individual rate, two roles. */
static void
s_tenant_init (void)
{
    if (s_tenant)
        return;
    Ppm__V1__Settings defaults = PPM__V1__SETTINGS__INIT;
    config_settings_defaults (&defaults);
    Ppm__V1__Settings *s = config_settings_dup (&defaults);
    assert (s);
    const char *error = NULL;
    config_settings_set_text (s, "enabled", "true", &error);
    s->default_call_per_minute = 250;
    s->default_chat_per_minute = 100;
    s->version = 3;
    s_tenant = rate_tenant_new ("t_1", "pro", 42, s);
    config_settings_free (&s);
    assert (s_tenant);
    rate_user_t u = {.call = {300, true}, .chat = {0, false}};
    rate_tenant_set_user (s_tenant, "alice", u);
    rate_tenant_add_role (s_tenant, "coach", (rate_amount_t){200, true}, (rate_amount_t){80, true},
                          1);
    rate_tenant_add_role (s_tenant, "free", (rate_amount_t){0, true}, (rate_amount_t){0, true}, 9);
}

static void
s_json (json_t *json)
{
    if (!json)
        return;
    char *text = json_dumps (json, JSON_COMPACT);
    free (text);
    json_decref (json);
}

static void
s_status (ppm_status_t *status)
{
    if (status && ppm_status_code (status) == PPM_INVALID_ARGUMENT)
        assert (ppm_status_field_count (status) > 0);
    ppm_status_destroy (&status);
}

static void
s_check (const ProtobufCMessageDescriptor *d, ProtobufCMessage *msg)
{
    if (d == &ppm__v1__put_settings_request__descriptor) {
        Ppm__V1__PutSettingsRequest *req = (Ppm__V1__PutSettingsRequest *)msg;
        if (req->settings) {
            config_settings_normalize (req->settings);
            config_settings_ctx_t ctx = {.plan = "pro"};
            s_status (config_settings_validate (req->settings, &ctx));
        }
    } else if (d == &ppm__v1__quote_request__descriptor) {
        rate_quote_t quote;
        s_status (
            rate_quote_build (s_tenant, (Ppm__V1__QuoteRequest *)msg, false, S_NOW_MS, &quote));
    } else if (d == &ppm__v1__create_request__descriptor) {
        Ppm__V1__CreateRequest *req = (Ppm__V1__CreateRequest *)msg;
        ppm_status_t *status = metering_create_check (req, "t_1", S_NOW_MS);
        if (!status) {
            char buf[4096];
            const char *argv[64];
            int argc =
                metering_create_fields (req, "t_1", S_NOW_MS, 60000, buf, sizeof buf, argv, 64);
            for (int i = 0; i < argc; i++)
                assert (argv[i]);
        }
        s_status (status);
    } else if (d == &ppm__v1__session_request__descriptor) {
        Ppm__V1__SessionRequest *req = (Ppm__V1__SessionRequest *)msg;
        if (metering_sid_valid (req->session_id))
            (void)metering_bucket_of (req->session_id, 64);
        (void)metering_sid_created_ms (req->session_id);
    } else if (d == &ppm__v1__end_request__descriptor) {
        Ppm__V1__EndRequest *req = (Ppm__V1__EndRequest *)msg;
        (void)metering_sid_valid (req->session_id);
    } else if (d == &ppm__v1__fund_request__descriptor) {
        Ppm__V1__FundRequest *req = (Ppm__V1__FundRequest *)msg;
        (void)metering_sid_valid (req->session_id);
        if (metering_id_valid (req->payment_id)) {
            char field[10];
            metering_payment_field (req->payment_id, field);
            assert (strlen (field) == 9);
        }
    } else if (d == &ppm__v1__settings__descriptor)
        s_json (gateway_settings_json ((Ppm__V1__Settings *)msg));
    else if (d == &ppm__v1__quote__descriptor)
        s_json (gateway_quote_json ((Ppm__V1__Quote *)msg));
    else if (d == &ppm__v1__session__descriptor)
        s_json (gateway_session_json ((Ppm__V1__Session *)msg));
    else if (d == &ppm__v1__payment__descriptor)
        s_json (gateway_payment_json ((Ppm__V1__Payment *)msg));
    else if (d == &ppm__v1__audit_entry__descriptor)
        s_json (gateway_audit_json ((Ppm__V1__AuditEntry *)msg));
    else if (d == &ppm__v1__user_rates__descriptor)
        s_json (gateway_user_rates_json ((Ppm__V1__UserRates *)msg));
    else if (d == &ppm__v1__role_rates__descriptor)
        s_json (gateway_role_rates_json ((Ppm__V1__RoleRates *)msg));
    else if (d == &ppm__v1__user_token_secret_info__descriptor)
        s_json (gateway_user_token_secret_info_json ((Ppm__V1__UserTokenSecretInfo *)msg));
    else if (d == &ppm__v1__rotate_user_token_secret_reply__descriptor)
        s_json (gateway_rotated_secret_json ((Ppm__V1__RotateUserTokenSecretReply *)msg));
    else if (d == &ppm__v1__status__descriptor) {
        ppm_status_t *status = ppm_status_from_proto ((Ppm__V1__Status *)msg);
        ppm_status_destroy (&status);
    }
}

/* Whether msg or any message inside it kept unknown fields. */
static bool
s_has_unknown (const ProtobufCMessage *msg)
{
    if (msg->n_unknown_fields)
        return true;
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)msg;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *items = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t j = 0; j < n; j++)
                if (items[j] && s_has_unknown (items[j]))
                    return true;
        } else {
            const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)(base + f->offset);
            if (sub && s_has_unknown (sub))
                return true;
        }
    }
    return false;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    s_tenant_init ();
    const ProtobufCMessageDescriptor *d = s_messages[data[0] % S_MESSAGES];
    ProtobufCMessage *msg = protobuf_c_message_unpack (d, NULL, size - 1, data + 1);
    if (!msg)
        return 0;
    size_t packed = protobuf_c_message_get_packed_size (msg);
    uint8_t *buf = malloc (packed ? packed : 1);
    assert (buf);
    assert (protobuf_c_message_pack (msg, buf) == packed);
    ProtobufCMessage *again = protobuf_c_message_unpack (d, NULL, packed, buf);
    /* libprotobuf-c keeps unknown fields and packs them back as read; it
       accepts a field number 0 written in two bytes but not in one, so
       only a message without unknown fields must survive the round trip */
    assert (again || s_has_unknown (msg));
    if (again)
        protobuf_c_message_free_unpacked (again, NULL);
    free (buf);
    s_check (d, msg);
    protobuf_c_message_free_unpacked (msg, NULL);
    return 0;
}
