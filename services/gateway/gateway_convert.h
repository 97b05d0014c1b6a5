/*  gateway_convert: the public API's JSON shapes of the services' protobuf
    messages, both ways.

    Replies (proto → JSON) return new jansson references. Requests (JSON →
    proto) refuse unknown fields and fill a ppm_status_t with one violation
    per wrong field, named as in SPEC §5; strings placed in the protobuf
    message are borrowed from the JSON object, so the message must not
    outlive it. Amounts stay in minor units on the wire.
*/
#ifndef GATEWAY_CONVERT_H_INCLUDED
#define GATEWAY_CONVERT_H_INCLUDED

#include <jansson.h>
#include "ppm_status.h"
#include "proto/config.pb-c.h"
#include "proto/metering.pb-c.h"
#include "proto/payment.pb-c.h"
#include "proto/rate.pb-c.h"

/* "awaiting_payment", "active", "paused", "expired", "ended" */
const char *gateway_session_state_name (Ppm__V1__SessionState state);
/* 0 (UNSPECIFIED) for NULL/""; -1 for an unknown name. */
int gateway_session_state_parse (const char *name);
const char *gateway_payment_state_name (Ppm__V1__PaymentState state);

json_t *gateway_settings_json (const Ppm__V1__Settings *settings);
/* Fills settings from a PUT body. The repeated fields are allocated with
   malloc and freed by gateway_settings_clear. Returns 0 or -1 (*errors). */
int gateway_settings_from_json (json_t *body, Ppm__V1__Settings *settings, ppm_status_t **errors);
void gateway_settings_clear (Ppm__V1__Settings *settings);

/* {"call_per_minute": 250 or null, "chat_per_minute": … } */
json_t *gateway_user_rates_json (const Ppm__V1__UserRates *rates);
json_t *gateway_role_rates_json (const Ppm__V1__RoleRates *rates);
/* Reads call_per_minute / chat_per_minute (each required: integer ≥ 0 or
   null) and, for roles, an optional priority. */
int gateway_rates_from_json (json_t *body, bool role, protobuf_c_boolean *call_set, int64_t *call,
                             protobuf_c_boolean *chat_set, int64_t *chat, int32_t *priority,
                             ppm_status_t **errors);

json_t *gateway_quote_json (const Ppm__V1__Quote *quote);
/* How often, in real ms, a client should send heartbeats to a session
   with this grace (ppm seconds) under this time scale: a third of the
   grace, at most 10 s, at least 250 ms. */
int64_t gateway_heartbeat_every_ms (int64_t grace_s, int64_t scale);
/* The session as payer/payee see it (remaining_ms recomputed by the
   caller when it has a newer clock reading); heartbeat_every_ms is
   gateway_heartbeat_every_ms under this process's clock scale. */
json_t *gateway_session_json (const Ppm__V1__Session *session);
json_t *gateway_payment_json (const Ppm__V1__Payment *payment);
json_t *gateway_audit_json (const Ppm__V1__AuditEntry *entry);
/* {"masked": "…abcd", "rotated_at": ms}: what an admin may see of the
   user-token secret. */
json_t *gateway_user_token_secret_info_json (const Ppm__V1__UserTokenSecretInfo *info);
/* {"secret": "<64 hex>", "masked", "rotated_at"}: a rotation's answer,
   the only one that carries the secret. */
json_t *gateway_rotated_secret_json (const Ppm__V1__RotateUserTokenSecretReply *reply);
json_t *gateway_session_event_json (const Ppm__V1__SessionEvent *event);

#endif
