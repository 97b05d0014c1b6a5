/*  gateway_server: the gateway actor (see gateway_server.h).

    A request becomes an s_ctx_t that lives until it is answered: the route
    match, the caller's credentials, the parsed body and a few slots for
    replies that a later step needs (the quote a session is created from,
    the session whose owner was checked). Each RPC carries an s_pending_t
    naming the step that continues the request; a failed RPC answers the
    request with the mapped status at once, so a handler step only ever
    sees a successful reply (owned by the step, freed by it).
*/
#include "gateway_server.h"
#include "gateway_convert.h"
#include "gateway_http.h"
#include "gateway_json.h"
#include "gateway_router.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#include "ppm_clock.h"
#include "ppm_events.h"
#include "ppm_jwt.h"
#include "ppm_log.h"
#include "ppm_metrics.h"
#include "ppm_rpc.h"

#define S_ID_MAX   128
#define S_ROLE_MAX 64 /* config's limit on role names */

/* ---- routes ------------------------------------------------------------ */

typedef enum {
    H_HEALTHZ = 1,
    H_READYZ,
    H_METRICS,
    H_SETTINGS_GET,
    H_SETTINGS_PUT,
    H_USER_RATES_GET,
    H_USER_RATES_PUT,
    H_ROLE_RATES_GET,
    H_ROLE_RATES_PUT,
    H_ROLES_LIST,
    H_USERS_LIST,
    H_ADMIN_SESSIONS,
    H_PAYMENTS,
    H_PAYMENTS_CSV,
    H_EARNINGS,
    H_AUDIT,
    H_TOKEN_SECRET_GET,
    H_TOKEN_SECRET_ROTATE,
    H_ADMIN_HEALTH,
    H_QUOTE,
    H_SESSION_CREATE,
    H_SESSION_GET,
    H_CHECKOUT,
    H_CONFIRM,
    H_EVENTS,
    H_HEARTBEAT,
    H_END,
    H_WEBHOOK
} s_handler_t;

static const gateway_route_t s_routes[] = {
    {"GET", "/healthz", H_HEALTHZ, GATEWAY_AUTH_NONE},
    {"GET", "/readyz", H_READYZ, GATEWAY_AUTH_NONE},
    {"GET", "/metrics", H_METRICS, GATEWAY_AUTH_NONE},
    {"GET", "/v1/admin/settings", H_SETTINGS_GET, GATEWAY_AUTH_ADMIN},
    {"PUT", "/v1/admin/settings", H_SETTINGS_PUT, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/users/{user_id}/rates", H_USER_RATES_GET, GATEWAY_AUTH_ADMIN},
    {"PUT", "/v1/admin/users/{user_id}/rates", H_USER_RATES_PUT, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/roles/{role}/rates", H_ROLE_RATES_GET, GATEWAY_AUTH_ADMIN},
    {"PUT", "/v1/admin/roles/{role}/rates", H_ROLE_RATES_PUT, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/roles", H_ROLES_LIST, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/users", H_USERS_LIST, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/sessions", H_ADMIN_SESSIONS, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/payments", H_PAYMENTS, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/payments.csv", H_PAYMENTS_CSV, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/earnings", H_EARNINGS, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/audit", H_AUDIT, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/user-token-secret", H_TOKEN_SECRET_GET, GATEWAY_AUTH_ADMIN},
    {"POST", "/v1/admin/user-token-secret", H_TOKEN_SECRET_ROTATE, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/health", H_ADMIN_HEALTH, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/quote", H_QUOTE, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions", H_SESSION_CREATE, GATEWAY_AUTH_USER},
    {"GET", "/v1/sessions/{id}", H_SESSION_GET, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions/{id}/checkout", H_CHECKOUT, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions/{id}/confirm", H_CONFIRM, GATEWAY_AUTH_USER},
    {"GET", "/v1/sessions/{id}/events", H_EVENTS, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions/{id}/heartbeat", H_HEARTBEAT, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions/{id}/end", H_END, GATEWAY_AUTH_USER},
    {"POST", "/v1/stripe/webhook/{tenant_id}", H_WEBHOOK, GATEWAY_AUTH_NONE},
    {NULL, NULL, 0, GATEWAY_AUTH_NONE}};

/* ---- state ------------------------------------------------------------- */

typedef struct {
    char tenant[S_ID_MAX + 1]; /* tenant of the key */
    char key_id[S_ID_MAX + 1];
    int64_t expires_us; /* real monotonic */
} s_admin_entry_t;

typedef struct {
    uint8_t secret[256]; /* the tenant's user-token secret */
    size_t secret_len;
    zlist_t *origins; /* CORS origins (char *, owned) */
    int64_t expires_us;
} s_secret_entry_t;

typedef struct {
    char *json; /* the answer's body */
    int64_t expires_us;
} s_quote_entry_t;

/* A user's roles as their own verified token last said (B1: the payee's
   roles choose a role rate when a payer asks for a quote). */
typedef struct {
    char roles[PPM_JWT_MAX_ROLES][PPM_JWT_MAX_ID + 1];
    size_t count;
} s_roles_t;
#define S_ROLES_SEEN_MAX 100000

typedef struct _s_self_t s_self_t;

/* One open event stream. */
typedef struct {
    uint64_t id;        /* stream number (pending refreshes name it) */
    gateway_req_t *req; /* the request, owned until stream_end */
    char tenant[S_ID_MAX + 1];
    char session_id[S_ID_MAX + 1];
    char sub[S_ID_MAX + 1]; /* who listens */
    bool is_payer;
    Ppm__V1__SessionState state;
    int64_t remaining_ms;  /* at the last snapshot */
    int64_t expires_at_ms; /* active paid session: its deadline */
    int64_t funded_ms;
    int64_t used_ms;
    uint64_t seq;    /* last session event seen */
    int ticks;       /* since the last refresh */
    bool refreshing; /* a metering.Get is in flight */
} s_stream_t;

struct _s_self_t {
    zsock_t *pipe; /* to the caller */
    zloop_t *loop;
    gateway_config_t config; /* strings borrowed from the caller's config */
    gateway_http_t *http;
    gateway_http_t *metrics_http; /* /healthz, /readyz, /metrics only; may be NULL */
    ppm_rpc_client_t *config_rpc;
    ppm_rpc_client_t *rate_rpc;
    ppm_rpc_client_t *payment_rpc;
    ppm_rpc_client_t *metering_rpc;
    ppm_events_sub_t *events;
    zhashx_t *admin_cache;  /* sha256(key) hex → s_admin_entry_t */
    zhashx_t *secret_cache; /* tenant → s_secret_entry_t */
    uint64_t secret_epoch;  /* bumped whenever cached secrets may be stale */
    zhashx_t *roles_seen;   /* tenant|user → s_roles_t: roles from users' own tokens */
    zhashx_t *quote_cache;  /* tenant|payee|kind → s_quote_entry_t */
    zlistx_t *streams;      /* s_stream_t * */
    uint64_t next_stream_id;
    uint64_t inflight; /* requests being handled */
    bool stopping;
};

typedef struct s_ctx_t s_ctx_t;
typedef void (s_next_fn) (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *reply);

struct s_ctx_t {
    s_self_t *self;
    gateway_req_t *req;
    gateway_match_t match;
    const gateway_route_t *route;
    char trace_id[33];
    char tenant[S_ID_MAX + 1];
    char actor[S_ID_MAX + 16]; /* admin: "admin:<key id>" */
    ppm_jwt_claims_t claims;   /* user routes */
    uint64_t secret_epoch;     /* self's when the tenant's secret was asked for */
    char *allow_origin;        /* CORS origin to echo, when allowed */
    json_t *body;              /* parsed request body */
    ProtobufCMessage *held;    /* a reply a later step needs (quote, session) */
    const char *party;         /* "payer" | "payee" for session routes */
    int fanout;                /* health: replies still expected */
    json_t *fanout_json;
};

typedef struct {
    s_self_t *self;
    s_ctx_t *ctx;
    const ProtobufCMessageDescriptor *descriptor;
    s_next_fn *next;
    const char *service;
    bool not_found_ok; /* NOT_FOUND continues with a NULL reply */
} s_pending_t;

static void s_dispatch (s_self_t *self, s_ctx_t *ctx);

/* ---- metrics ----------------------------------------------------------- */

/* Latency histogram buckets (seconds) of ppm_http_request_duration_seconds. */
static const double s_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define S_BUCKETS (sizeof s_buckets / sizeof s_buckets[0])

/* The gateway's metrics in the process registry (docs/METRICS.md), which
   /metrics renders with ppm_rpc's and the process metrics. */
static ppm_counter_t *s_m_requests;
static ppm_histogram_t *s_m_duration;
static ppm_gauge_t *s_m_sse;

static void
s_metrics_register (void)
{
    ppm_metrics_t *reg = ppm_metrics_global ();
    s_m_requests =
        ppm_metrics_counter (reg, "ppm_http_requests_total",
                             "HTTP requests by route pattern and status", "route,status");
    s_m_duration = ppm_metrics_histogram (reg, "ppm_http_request_duration_seconds", "HTTP latency",
                                          "route", s_buckets, S_BUCKETS);
    s_m_sse = ppm_metrics_gauge (reg, "ppm_sse_clients", "open event streams", NULL);
}

/* Counts one answer of route with status, and its latency; logs it (one
   line per request, with the request's trace id) unless it is a probe or
   a scrape. */
static void
s_count (s_self_t *self, const char *route, int status, gateway_req_t *req, const char *trace_id)
{
    (void)self;
    char code[8];
    snprintf (code, sizeof code, "%d", status);
    ppm_counter_inc (s_m_requests, 1, route, code);
    if (!req)
        return;
    double seconds = (double)(ppm_clock_real_mono_us () - gateway_req_started_us (req)) / 1e6;
    ppm_histogram_observe (s_m_duration, seconds, route);
    if (streq (route, "/metrics") || streq (route, "/healthz") || streq (route, "/readyz"))
        return;
    char ms[32];
    snprintf (ms, sizeof ms, "%.3f", seconds * 1000.0);
    ppm_log_context (trace_id, ppm_log_tenant_id ());
    ppm_log_kv (PPM_LOG_INFO, "http request", "method", gateway_req_method (req), "route", route,
                "status", code, "duration_ms", ms, PPM_LOG_END);
}

/* ---- answering --------------------------------------------------------- */

static void
s_ctx_destroy (s_ctx_t **ctx_p)
{
    s_ctx_t *ctx = *ctx_p;
    if (!ctx)
        return;
    if (ctx->held)
        protobuf_c_message_free_unpacked (ctx->held, NULL);
    json_decref (ctx->body);
    json_decref (ctx->fanout_json);
    free (ctx->allow_origin);
    if (ctx->self->inflight > 0)
        ctx->self->inflight--;
    free (ctx);
    *ctx_p = NULL;
}

static const char *
s_route_label (s_ctx_t *ctx)
{
    return ctx->route ? ctx->route->pattern : "unmatched";
}

static void
s_cors (s_ctx_t *ctx)
{
    if (ctx->allow_origin) {
        gateway_req_add_header (ctx->req, "Access-Control-Allow-Origin", ctx->allow_origin);
        gateway_req_add_header (ctx->req, "Vary", "Origin");
    }
}

static void
s_reply_json (s_ctx_t *ctx, int status, json_t *json)
{
    s_cors (ctx);
    s_count (ctx->self, s_route_label (ctx), status, ctx->req, ctx->trace_id);
    gateway_req_respond_json (&ctx->req, status, json);
    s_ctx_destroy (&ctx);
}

static void
s_reply_status (s_ctx_t *ctx, const ppm_status_t *status)
{
    ppm_code_t code = ppm_status_code (status);
    if (ctx->route && ctx->route->handler == H_WEBHOOK &&
        (code == PPM_UNAUTHENTICATED || code == PPM_INVALID_ARGUMENT)) {
        /* Stripe is told 400 for a webhook payment refuses (bad signature,
           not an event): PROTOCOL.md "payment.Webhook" */
        s_count (ctx->self, s_route_label (ctx), 400, ctx->req, ctx->trace_id);
        gateway_req_respond_json (&ctx->req, 400, gateway_error_json (status));
        s_ctx_destroy (&ctx);
        return;
    }
    s_cors (ctx);
    s_count (ctx->self, s_route_label (ctx), gateway_http_status_for (status), ctx->req,
             ctx->trace_id);
    gateway_req_respond_status (&ctx->req, status);
    s_ctx_destroy (&ctx);
}

static void s_reply_error (s_ctx_t *ctx, ppm_code_t code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
s_reply_error (s_ctx_t *ctx, ppm_code_t code, const char *fmt, ...)
{
    char text[PPM_STATUS_TEXT_MAX];
    va_list args;
    va_start (args, fmt);
    vsnprintf (text, sizeof text, fmt, args);
    va_end (args);
    ppm_status_t *status = ppm_status_new (code, "%s", text);
    s_reply_status (ctx, status);
    ppm_status_destroy (&status);
}

static void
s_reply_invalid (s_ctx_t *ctx, ppm_status_t **errors)
{
    s_reply_status (ctx, *errors);
    ppm_status_destroy (errors);
}

/* ---- RPC plumbing ------------------------------------------------------ */

static void
s_on_reply (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    s_pending_t *p = arg;
    s_ctx_t *ctx = p->ctx;
    ppm_log_context (ctx->trace_id, ctx->tenant[0] ? ctx->tenant : NULL);
    if (p->self->stopping) {
        s_reply_error (ctx, PPM_UNAVAILABLE, "the gateway is stopping");
    } else if (status) {
        ppm_code_t code = ppm_status_code (status);
        if (code == PPM_NOT_FOUND && p->not_found_ok) {
            p->next (p->self, ctx, NULL);
        } else if (code == PPM_DEADLINE_EXCEEDED || code == PPM_UNAVAILABLE ||
                   code == PPM_CANCELLED) {
            ppm_log_warn ("%s did not answer: %s", p->service, ppm_status_message (status));
            s_reply_error (ctx, PPM_UNAVAILABLE, "the %s service is unavailable, retry later",
                           p->service);
        } else if (code == PPM_UNIMPLEMENTED) {
            s_reply_error (ctx, PPM_UNAVAILABLE, "the %s service does not offer this yet",
                           p->service);
        } else {
            s_reply_status (ctx, status);
        }
    } else {
        ProtobufCMessage *reply = protobuf_c_message_unpack (p->descriptor, NULL, size, payload);
        if (!reply) {
            ppm_log_error ("%s sent a reply that does not parse", p->service);
            s_reply_error (ctx, PPM_INTERNAL, "the %s service sent an invalid reply", p->service);
        } else {
            p->next (p->self, ctx, reply);
        }
    }
    free (p);
}

static void
s_call_within (s_ctx_t *ctx, ppm_rpc_client_t *client, const char *service, const char *method,
               const ProtobufCMessage *msg, bool idempotent,
               const ProtobufCMessageDescriptor *reply, s_next_fn *next, bool not_found_ok,
               int64_t timeout_ms)
{
    s_pending_t *p = calloc (1, sizeof *p);
    p->self = ctx->self;
    p->ctx = ctx;
    p->descriptor = reply;
    p->next = next;
    p->service = service;
    p->not_found_ok = not_found_ok;
    ppm_rpc_req_t req = {.method = method,
                         .tenant = ctx->tenant[0] ? ctx->tenant : NULL,
                         .trace_id = ctx->trace_id,
                         .timeout_ms = (int)timeout_ms,
                         .idempotent = idempotent};
    if (ppm_rpc_client_call (client, &req, msg, s_on_reply, p) != 0) {
        free (p);
        s_reply_error (ctx, PPM_UNAVAILABLE, "the %s service is unavailable, retry later", service);
    }
}

/* An RPC within PPM_RPC_TIMEOUT. */
static void
s_call (s_ctx_t *ctx, ppm_rpc_client_t *client, const char *service, const char *method,
        const ProtobufCMessage *msg, bool idempotent, const ProtobufCMessageDescriptor *reply,
        s_next_fn *next, bool not_found_ok)
{
    s_call_within (ctx, client, service, method, msg, idempotent, reply, next, not_found_ok,
                   ctx->self->config.rpc_timeout_ms);
}

/* ---- credentials ------------------------------------------------------- */

static const char *
s_bearer (gateway_req_t *req)
{
    const char *header = gateway_req_header (req, "Authorization");
    if (!header || strncasecmp (header, "Bearer ", 7) != 0)
        return NULL;
    const char *token = header + 7;
    while (*token == ' ')
        token++;
    return *token ? token : NULL;
}

static void
s_sha256_hex (const char *text, char out[65])
{
    uint8_t digest[32];
    unsigned int len = 0;
    EVP_Digest (text, strlen (text), digest, &len, EVP_sha256 (), NULL);
    for (int i = 0; i < 32; i++)
        snprintf (out + i * 2, 3, "%02x", digest[i]);
}

static void
s_admin_verified (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    Ppm__V1__VerifyAdminKeyReply *reply = (Ppm__V1__VerifyAdminKeyReply *)msg;
    const char *key = s_bearer (ctx->req);
    if (!reply->tenant_id || !*reply->tenant_id || strlen (reply->tenant_id) > S_ID_MAX || !key) {
        protobuf_c_message_free_unpacked (msg, NULL);
        s_reply_error (ctx, PPM_UNAUTHENTICATED, "invalid admin key");
        return;
    }
    s_admin_entry_t *entry = calloc (1, sizeof *entry);
    snprintf (entry->tenant, sizeof entry->tenant, "%s", reply->tenant_id);
    snprintf (entry->key_id, sizeof entry->key_id, "%s", reply->key_id ? reply->key_id : "");
    entry->expires_us = ppm_clock_real_mono_us () + self->config.auth_cache_ms * 1000;
    char hash[65];
    s_sha256_hex (key, hash);
    zhashx_update (self->admin_cache, hash, entry);
    snprintf (ctx->tenant, sizeof ctx->tenant, "%s", entry->tenant);
    snprintf (ctx->actor, sizeof ctx->actor, "admin:%s", entry->key_id);
    protobuf_c_message_free_unpacked (msg, NULL);
    s_dispatch (self, ctx);
}

static void s_user_with_secret (s_self_t *self, s_ctx_t *ctx, s_secret_entry_t *entry);
static void s_free_secret (void **item);

static void
s_secret_fetched (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    Ppm__V1__UserTokenSecret *reply = (Ppm__V1__UserTokenSecret *)msg;
    if (!msg) {
        s_reply_error (ctx, PPM_UNAUTHENTICATED, "invalid user token: unknown tenant");
        return;
    }
    s_secret_entry_t *entry = calloc (1, sizeof *entry);
    size_t len = reply->secret ? strlen (reply->secret) : 0;
    if (len > sizeof entry->secret)
        len = sizeof entry->secret;
    memcpy (entry->secret, reply->secret, len);
    entry->secret_len = len;
    entry->origins = zlist_new ();
    zlist_autofree (entry->origins);
    for (size_t i = 0; i < reply->n_cors_allowed_origins; i++)
        zlist_append (entry->origins, reply->cors_allowed_origins[i]);
    entry->expires_us = ppm_clock_real_mono_us () + self->config.auth_cache_ms * 1000;
    if (reply->secret && *reply->secret)
        OPENSSL_cleanse (reply->secret, strlen (reply->secret));
    protobuf_c_message_free_unpacked (msg, NULL);
    /* A config.changed or a rotation since the question was asked may
       have made this answer stale: it serves this request (which started
       before) but is not cached, so the next request asks again. */
    bool current = ctx->secret_epoch == self->secret_epoch;
    if (current)
        zhashx_update (self->secret_cache, ctx->claims.tid, entry);
    s_user_with_secret (self, ctx, entry);
    if (!current)
        s_free_secret ((void **)&entry);
}

static void
s_user_with_secret (s_self_t *self, s_ctx_t *ctx, s_secret_entry_t *entry)
{
    const char *token = s_bearer (ctx->req);
    int64_t now_s = ppm_clock_real_ms () / 1000;
    ppm_jwt_err_t rc =
        ppm_jwt_verify (token, entry->secret, entry->secret_len, now_s, &ctx->claims);
    if (rc != PPM_JWT_OK) {
        ctx->tenant[0] = '\0';
        s_reply_error (ctx, PPM_UNAUTHENTICATED, "invalid user token: %s", ppm_jwt_strerror (rc));
        return;
    }
    if (!gateway_valid_id (ctx->claims.sub, S_ID_MAX)) {
        s_reply_error (ctx, PPM_UNAUTHENTICATED, "invalid user token: bad sub");
        return;
    }
    if (ctx->claims.role_count > 0) {
        char key[2 * S_ID_MAX + 2];
        snprintf (key, sizeof key, "%s|%s", ctx->claims.tid, ctx->claims.sub);
        s_roles_t *seen = zhashx_lookup (self->roles_seen, key);
        if (!seen) {
            if (zhashx_size (self->roles_seen) >= S_ROLES_SEEN_MAX)
                zhashx_purge (self->roles_seen);
            seen = calloc (1, sizeof *seen);
            zhashx_insert (self->roles_seen, key, seen);
        }
        memcpy (seen->roles, ctx->claims.roles, sizeof seen->roles);
        seen->count = ctx->claims.role_count;
    }
    const char *origin = gateway_req_header (ctx->req, "Origin");
    if (origin) {
        for (const char *o = zlist_first (entry->origins); o; o = zlist_next (entry->origins))
            if (strcmp (o, "*") == 0 || strcmp (o, origin) == 0) {
                ctx->allow_origin = strdup (origin);
                break;
            }
    }
    s_dispatch (self, ctx);
}

/* Authenticates ctx per its route, then dispatches. */
static void
s_authenticate (s_self_t *self, s_ctx_t *ctx)
{
    const char *token = s_bearer (ctx->req);
    if (ctx->route->auth == GATEWAY_AUTH_ADMIN) {
        if (!token) {
            s_reply_error (ctx, PPM_UNAUTHENTICATED,
                           "an admin key is required (Authorization: "
                           "Bearer <admin key>)");
            return;
        }
        if (strlen (token) > 512) {
            s_reply_error (ctx, PPM_UNAUTHENTICATED, "invalid admin key");
            return;
        }
        char hash[65];
        s_sha256_hex (token, hash);
        s_admin_entry_t *entry = zhashx_lookup (self->admin_cache, hash);
        if (entry && entry->expires_us > ppm_clock_real_mono_us ()) {
            snprintf (ctx->tenant, sizeof ctx->tenant, "%s", entry->tenant);
            snprintf (ctx->actor, sizeof ctx->actor, "admin:%s", entry->key_id);
            s_dispatch (self, ctx);
            return;
        }
        Ppm__V1__VerifyAdminKeyRequest msg = PPM__V1__VERIFY_ADMIN_KEY_REQUEST__INIT;
        msg.admin_key = (char *)token;
        s_call (ctx, self->config_rpc, "config", "config.VerifyAdminKey", &msg.base, true,
                &ppm__v1__verify_admin_key_reply__descriptor, s_admin_verified, false);
        return;
    }
    /* user token */
    if (!token) {
        s_reply_error (ctx, PPM_UNAUTHENTICATED,
                       "a user token is required (Authorization: Bearer <token>)");
        return;
    }
    ppm_jwt_err_t rc = ppm_jwt_peek (token, &ctx->claims);
    if (rc != PPM_JWT_OK) {
        s_reply_error (ctx, PPM_UNAUTHENTICATED, "invalid user token: %s", ppm_jwt_strerror (rc));
        return;
    }
    if (!gateway_valid_id (ctx->claims.tid, S_ID_MAX)) {
        s_reply_error (ctx, PPM_UNAUTHENTICATED, "invalid user token: bad tid");
        return;
    }
    snprintf (ctx->tenant, sizeof ctx->tenant, "%s", ctx->claims.tid);
    s_secret_entry_t *entry = zhashx_lookup (self->secret_cache, ctx->claims.tid);
    if (entry && entry->expires_us > ppm_clock_real_mono_us ()) {
        s_user_with_secret (self, ctx, entry);
        return;
    }
    Ppm__V1__GetUserTokenSecretRequest msg = PPM__V1__GET_USER_TOKEN_SECRET_REQUEST__INIT;
    msg.tenant_id = ctx->tenant;
    ctx->secret_epoch = self->secret_epoch;
    s_call (ctx, self->config_rpc, "config", "config.GetUserTokenSecret", &msg.base, true,
            &ppm__v1__user_token_secret__descriptor, s_secret_fetched, true);
}

/* ---- helpers for handlers ------------------------------------------------ */

/* Refuses query parameters not in allowed; answers and returns -1 then. */
static int
s_check_query (s_ctx_t *ctx, const char *const *allowed)
{
    ppm_status_t *errors = NULL;
    for (size_t i = 0; i < gateway_req_query_count (ctx->req); i++) {
        const char *name = gateway_req_query_name (ctx->req, i);
        bool known = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp (*a, name) == 0)
                known = true;
        if (!known)
            gateway_json_violation (&errors, name, "unknown query parameter");
    }
    if (errors) {
        s_reply_invalid (ctx, &errors);
        return -1;
    }
    return 0;
}

/* Parses the body as an object; answers and returns -1 on failure. */
static int
s_parse_body (s_ctx_t *ctx, bool allow_empty)
{
    size_t len = 0;
    const char *body = gateway_req_body (ctx->req, &len);
    ppm_status_t *errors = NULL;
    ctx->body = gateway_json_parse_object (body, len, allow_empty, &errors);
    if (!ctx->body) {
        s_reply_invalid (ctx, &errors);
        return -1;
    }
    return 0;
}

static int
s_page_args (s_ctx_t *ctx, int64_t max_limit, int64_t *limit, const char **cursor)
{
    ppm_status_t *errors = NULL;
    const char *text = gateway_req_query (ctx->req, "limit");
    if (text)
        gateway_parse_int (text, "limit", 1, max_limit, limit, &errors);
    *cursor = gateway_req_query (ctx->req, "cursor");
    if (*cursor && strlen (*cursor) > 512)
        gateway_json_violation (&errors, "cursor", "is too long");
    if (errors) {
        s_reply_invalid (ctx, &errors);
        return -1;
    }
    return 0;
}

/* ---- admin handlers ------------------------------------------------------ */

static void
s_settings_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__Settings *settings = (Ppm__V1__Settings *)msg;
    char etag[40];
    snprintf (etag, sizeof etag, "\"%lld\"", (long long)settings->version);
    gateway_req_add_header (ctx->req, "ETag", etag);
    json_t *json = gateway_settings_json (settings);
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json);
}

static void
s_settings_put (s_self_t *self, s_ctx_t *ctx)
{
    if (s_parse_body (ctx, false))
        return;
    Ppm__V1__Settings settings = PPM__V1__SETTINGS__INIT;
    ppm_status_t *errors = NULL;
    gateway_settings_from_json (ctx->body, &settings, &errors);
    int64_t expected = settings.version;
    const char *if_match = gateway_req_header (ctx->req, "If-Match");
    if (if_match && strcmp (if_match, "*") != 0) {
        char digits[32];
        size_t n = 0;
        for (const char *p = if_match; *p && n + 1 < sizeof digits; p++)
            if (*p >= '0' && *p <= '9')
                digits[n++] = *p;
            else if (*p != '"' && *p != 'W' && *p != '/' && *p != ' ')
                n = sizeof digits; /* invalid */
        digits[n < sizeof digits ? n : 0] = '\0';
        if (n == 0 || n >= sizeof digits)
            gateway_json_violation (&errors, "If-Match", "must be the settings version");
        else
            gateway_parse_int (digits, "If-Match", 0, INT64_MAX, &expected, &errors);
    }
    if (errors) {
        gateway_settings_clear (&settings);
        s_reply_invalid (ctx, &errors);
        return;
    }
    Ppm__V1__PutSettingsRequest msg = PPM__V1__PUT_SETTINGS_REQUEST__INIT;
    msg.tenant_id = ctx->tenant;
    msg.expected_version = expected;
    msg.settings = &settings;
    msg.actor = ctx->actor;
    s_call (ctx, self->config_rpc, "config", "config.PutSettings", &msg.base, false,
            &ppm__v1__settings__descriptor, s_settings_reply, false);
    gateway_settings_clear (&settings);
}

static void
s_user_rates_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    json_t *json;
    if (msg) {
        json = gateway_user_rates_json ((Ppm__V1__UserRates *)msg);
        protobuf_c_message_free_unpacked (msg, NULL);
    } else {
        json =
            json_pack ("{s:s, s:n, s:n}", "user_id", gateway_match_param (&ctx->match, "user_id"),
                       "call_per_minute", "chat_per_minute");
    }
    json_object_set_new (json, "user_id",
                         json_string (gateway_match_param (&ctx->match, "user_id")));
    s_reply_json (ctx, 200, json);
}

static void
s_rates_saved (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__PutRatesReply *reply = (Ppm__V1__PutRatesReply *)msg;
    json_t *json = json_deep_copy (ctx->body);
    json_object_set_new (json, "revision", json_integer (reply->revision));
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json);
}

static void
s_user_rates_put (s_self_t *self, s_ctx_t *ctx)
{
    if (!gateway_valid_id (gateway_match_param (&ctx->match, "user_id"), S_ID_MAX)) {
        s_reply_error (ctx, PPM_NOT_FOUND, "no such user");
        return;
    }
    if (s_parse_body (ctx, false))
        return;
    Ppm__V1__UserRates rates = PPM__V1__USER_RATES__INIT;
    ppm_status_t *errors = NULL;
    if (gateway_rates_from_json (ctx->body, false, &rates.call_set, &rates.call_per_minute,
                                 &rates.chat_set, &rates.chat_per_minute, NULL, &errors)) {
        s_reply_invalid (ctx, &errors);
        return;
    }
    json_object_del (ctx->body, "user_id");
    rates.payee = (char *)gateway_match_param (&ctx->match, "user_id");
    Ppm__V1__PutUserRatesRequest msg = PPM__V1__PUT_USER_RATES_REQUEST__INIT;
    msg.tenant_id = ctx->tenant;
    msg.rates = &rates;
    msg.actor = ctx->actor;
    s_call (ctx, self->config_rpc, "config", "config.PutUserRates", &msg.base, false,
            &ppm__v1__put_rates_reply__descriptor, s_rates_saved, false);
}

static void
s_role_rates_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__RoleRatesList *list = (Ppm__V1__RoleRatesList *)msg;
    const char *role = gateway_match_param (&ctx->match, "role");
    json_t *json = NULL;
    if (role) {
        for (size_t i = 0; list && i < list->n_roles; i++)
            if (list->roles[i]->role && strcmp (list->roles[i]->role, role) == 0)
                json = gateway_role_rates_json (list->roles[i]);
        if (!json)
            json = json_pack ("{s:s, s:n, s:n, s:i}", "role", role, "call_per_minute",
                              "chat_per_minute", "priority", 0);
    } else {
        json_t *roles = json_array ();
        for (size_t i = 0; list && i < list->n_roles; i++)
            json_array_append_new (roles, gateway_role_rates_json (list->roles[i]));
        json = json_pack ("{s:o}", "roles", roles);
    }
    if (msg)
        protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json);
}

static void
s_role_rates_put (s_self_t *self, s_ctx_t *ctx)
{
    if (!gateway_valid_id (gateway_match_param (&ctx->match, "role"), S_ROLE_MAX)) {
        s_reply_error (ctx, PPM_NOT_FOUND, "no such role");
        return;
    }
    if (s_parse_body (ctx, false))
        return;
    Ppm__V1__RoleRates rates = PPM__V1__ROLE_RATES__INIT;
    ppm_status_t *errors = NULL;
    if (gateway_rates_from_json (ctx->body, true, &rates.call_set, &rates.call_per_minute,
                                 &rates.chat_set, &rates.chat_per_minute, &rates.priority,
                                 &errors)) {
        s_reply_invalid (ctx, &errors);
        return;
    }
    json_object_del (ctx->body, "role");
    rates.role = (char *)gateway_match_param (&ctx->match, "role");
    Ppm__V1__PutRoleRatesRequest msg = PPM__V1__PUT_ROLE_RATES_REQUEST__INIT;
    msg.tenant_id = ctx->tenant;
    msg.rates = &rates;
    msg.actor = ctx->actor;
    s_call (ctx, self->config_rpc, "config", "config.PutRoleRates", &msg.base, false,
            &ppm__v1__put_rates_reply__descriptor, s_rates_saved, false);
}

static void
s_users_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__ListUserRatesReply *reply = (Ppm__V1__ListUserRatesReply *)msg;
    json_t *users = json_array ();
    for (size_t i = 0; i < reply->n_rates; i++)
        json_array_append_new (users, gateway_user_rates_json (reply->rates[i]));
    json_t *json = json_pack ("{s:o, s:s}", "users", users, "next_cursor",
                              reply->next_cursor ? reply->next_cursor : "");
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json);
}

static void
s_sessions_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__ListReply *reply = (Ppm__V1__ListReply *)msg;
    json_t *sessions = json_array ();
    for (size_t i = 0; i < reply->n_sessions; i++)
        json_array_append_new (sessions, gateway_session_json (reply->sessions[i]));
    json_t *json = json_pack ("{s:o, s:s}", "sessions", sessions, "next_cursor",
                              reply->next_cursor ? reply->next_cursor : "");
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json);
}

static void
s_payments_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__ListPaymentsReply *reply = (Ppm__V1__ListPaymentsReply *)msg;
    json_t *payments = json_array ();
    for (size_t i = 0; i < reply->n_payments; i++)
        json_array_append_new (payments, gateway_payment_json (reply->payments[i]));
    json_t *json = json_pack ("{s:o, s:s}", "payments", payments, "next_cursor",
                              reply->next_cursor ? reply->next_cursor : "");
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json);
}

static void
s_csv_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    Ppm__V1__ExportCsvReply *reply = (Ppm__V1__ExportCsvReply *)msg;
    s_cors (ctx);
    gateway_req_add_header (ctx->req, "Content-Disposition",
                            "attachment; filename=\"payments.csv\"");
    if (reply->next_cursor && *reply->next_cursor && strlen (reply->next_cursor) < 512)
        gateway_req_add_header (ctx->req, "X-Next-Cursor", reply->next_cursor);
    s_count (self, s_route_label (ctx), 200, ctx->req, ctx->trace_id);
    gateway_req_respond (&ctx->req, 200, "text/csv; charset=utf-8", (const char *)reply->csv.data,
                         reply->csv.len);
    protobuf_c_message_free_unpacked (msg, NULL);
    s_ctx_destroy (&ctx);
}

static void
s_earnings_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__EarningsReply *reply = (Ppm__V1__EarningsReply *)msg;
    json_t *payees = json_array ();
    for (size_t i = 0; i < reply->n_payees; i++) {
        Ppm__V1__PayeeEarnings *e = reply->payees[i];
        json_array_append_new (
            payees, json_pack ("{s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "payee",
                               e->payee ? e->payee : "", "currency", e->currency ? e->currency : "",
                               "payments", (json_int_t)e->payments, "minutes",
                               (json_int_t)e->minutes, "charged", (json_int_t)e->charged,
                               "refunded", (json_int_t)e->refunded, "net", (json_int_t)e->net));
    }
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json_pack ("{s:o}", "payees", payees));
}

static void
s_audit_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__ListAuditReply *reply = (Ppm__V1__ListAuditReply *)msg;
    json_t *entries = json_array ();
    for (size_t i = 0; i < reply->n_entries; i++)
        json_array_append_new (entries, gateway_audit_json (reply->entries[i]));
    json_t *json = json_pack ("{s:o, s:s}", "entries", entries, "next_cursor",
                              reply->next_cursor ? reply->next_cursor : "");
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json);
}

/* GET /v1/admin/user-token-secret: the mask and age only. */
static void
s_token_secret_info_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    json_t *json = gateway_user_token_secret_info_json ((Ppm__V1__UserTokenSecretInfo *)msg);
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json);
}

static void
s_token_secret_rotated (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    Ppm__V1__RotateUserTokenSecretReply *reply = (Ppm__V1__RotateUserTokenSecretReply *)msg;
    /* This gateway refuses the old secret from now on, without waiting for
       config.changed (other replicas drop it when that event comes; if it
       is lost, when their cache entry expires: PPM_GATEWAY_AUTH_CACHE). */
    zhashx_delete (self->secret_cache, ctx->tenant);
    self->secret_epoch++;
    json_t *json = gateway_rotated_secret_json (reply);
    if (reply->secret && *reply->secret)
        OPENSSL_cleanse (reply->secret, strlen (reply->secret));
    protobuf_c_message_free_unpacked (msg, NULL);
    gateway_req_add_header (ctx->req, "Cache-Control", "no-store");
    s_reply_json (ctx, 200, json);
}

/* POST /v1/admin/user-token-secret: no query, no body or an empty
   object. Not idempotent: each call makes a new secret. */
static void
s_token_secret_rotate (s_self_t *self, s_ctx_t *ctx)
{
    static const char *const none[] = {NULL};
    if (s_check_query (ctx, none) || s_parse_body (ctx, true))
        return;
    ppm_status_t *errors = NULL;
    if (gateway_json_refuse_unknown (ctx->body, none, &errors)) {
        s_reply_invalid (ctx, &errors);
        return;
    }
    Ppm__V1__RotateUserTokenSecretRequest msg = PPM__V1__ROTATE_USER_TOKEN_SECRET_REQUEST__INIT;
    msg.tenant_id = ctx->tenant;
    msg.actor = ctx->actor;
    s_call (ctx, self->config_rpc, "config", "config.RotateUserTokenSecret", &msg.base, false,
            &ppm__v1__rotate_user_token_secret_reply__descriptor, s_token_secret_rotated, false);
}

/* Health: each service is asked an unknown method; any answer (even
   UNIMPLEMENTED) proves it is up, silence until the deadline that it is
   not. */
typedef struct {
    s_ctx_t *ctx;
    const char *service;
} s_ping_t;

static void
s_on_ping (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    (void)payload;
    (void)size;
    s_ping_t *ping = arg;
    s_ctx_t *ctx = ping->ctx;
    ppm_code_t code = ppm_status_code (status);
    bool up = code != PPM_DEADLINE_EXCEEDED && code != PPM_UNAVAILABLE && code != PPM_CANCELLED;
    json_object_set_new (json_object_get (ctx->fanout_json, "services"), ping->service,
                         json_string (up ? "up" : "down"));
    free (ping);
    if (--ctx->fanout == 0) {
        json_t *json = ctx->fanout_json;
        ctx->fanout_json = NULL;
        json_object_set_new (json, "sse_clients",
                             json_integer ((json_int_t)zlistx_size (ctx->self->streams)));
        json_object_set_new (json, "http_requests",
                             json_integer ((json_int_t)gateway_http_requests (ctx->self->http)));
        s_reply_json (ctx, 200, json);
    }
}

static void
s_admin_health (s_self_t *self, s_ctx_t *ctx)
{
    struct {
        const char *name;
        ppm_rpc_client_t *client;
    } services[] = {{"config", self->config_rpc},
                    {"rate", self->rate_rpc},
                    {"payment", self->payment_rpc},
                    {"metering", self->metering_rpc}};
    ctx->fanout_json = json_pack ("{s:{s:s}}", "services", "gateway", "up");
    ctx->fanout = 4;
    for (int i = 0; i < 4; i++) {
        s_ping_t *ping = calloc (1, sizeof *ping);
        ping->ctx = ctx;
        ping->service = services[i].name;
        char method[48];
        snprintf (method, sizeof method, "sys.Ping");
        ppm_rpc_req_t req = {.method = method,
                             .tenant = ctx->tenant,
                             .trace_id = ctx->trace_id,
                             .timeout_ms = 500,
                             .idempotent = true};
        if (ppm_rpc_client_call (services[i].client, &req, NULL, s_on_ping, ping) != 0) {
            ppm_status_t *down = ppm_status_new (PPM_UNAVAILABLE, "send failed");
            s_on_ping (down, NULL, 0, ping);
            ppm_status_destroy (&down);
        }
    }
}

/* ---- payer and payee handlers --------------------------------------------- */

/* Fills the quote request's payee_roles from what the payee's own token
   said (roles[] is the caller's storage for the pointers). */
static void
s_payee_roles (s_self_t *self, s_ctx_t *ctx, const char *payee, Ppm__V1__QuoteRequest *msg,
               char **roles)
{
    char key[2 * S_ID_MAX + 2];
    snprintf (key, sizeof key, "%s|%s", ctx->tenant, payee);
    s_roles_t *seen = zhashx_lookup (self->roles_seen, key);
    if (!seen)
        return;
    for (size_t i = 0; i < seen->count; i++)
        roles[i] = seen->roles[i];
    msg->payee_roles = roles;
    msg->n_payee_roles = seen->count;
}

static void
s_quote_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    json_t *json = gateway_quote_json ((Ppm__V1__Quote *)msg);
    protobuf_c_message_free_unpacked (msg, NULL);
    if (self->config.quote_cache_ms > 0) {
        char key[3 * S_ID_MAX + 8];
        snprintf (key, sizeof key, "%s|%s|%s", ctx->tenant, gateway_req_query (ctx->req, "payee"),
                  gateway_req_query (ctx->req, "kind"));
        s_quote_entry_t *entry = calloc (1, sizeof *entry);
        entry->json = json_dumps (json, JSON_COMPACT);
        entry->expires_us = ppm_clock_real_mono_us () + self->config.quote_cache_ms * 1000;
        zhashx_update (self->quote_cache, key, entry);
    }
    s_reply_json (ctx, 200, json);
}

/* Checks payee and kind (from the query or the body); -1 after answering. */
static int
s_payee_kind (s_ctx_t *ctx, const char *payee, const char *kind, ppm_status_t **errors)
{
    if (!payee)
        gateway_json_violation (errors, "payee", "is required");
    else if (!gateway_valid_id (payee, S_ID_MAX))
        gateway_json_violation (errors, "payee",
                                "must be a user id (1-128 of A-Z a-z 0-9 _ - . : @)");
    if (!kind)
        gateway_json_violation (errors, "kind", "is required (chat or call)");
    else if (strcmp (kind, "chat") != 0 && strcmp (kind, "call") != 0)
        gateway_json_violation (errors, "kind", "must be chat or call");
    if (*errors) {
        s_reply_invalid (ctx, errors);
        return -1;
    }
    return 0;
}

static void
s_quote (s_self_t *self, s_ctx_t *ctx)
{
    static const char *const allowed[] = {"payee", "kind", NULL};
    if (s_check_query (ctx, allowed))
        return;
    const char *payee = gateway_req_query (ctx->req, "payee");
    const char *kind = gateway_req_query (ctx->req, "kind");
    ppm_status_t *errors = NULL;
    if (s_payee_kind (ctx, payee, kind, &errors))
        return;
    if (self->config.quote_cache_ms > 0) {
        char key[3 * S_ID_MAX + 8];
        snprintf (key, sizeof key, "%s|%s|%s", ctx->tenant, payee, kind);
        s_quote_entry_t *entry = zhashx_lookup (self->quote_cache, key);
        if (entry && entry->expires_us > ppm_clock_real_mono_us () && entry->json) {
            s_cors (ctx);
            s_count (self, s_route_label (ctx), 200, ctx->req, ctx->trace_id);
            gateway_req_respond (&ctx->req, 200, "application/json", entry->json,
                                 strlen (entry->json));
            s_ctx_destroy (&ctx);
            return;
        }
    }
    Ppm__V1__QuoteRequest msg = PPM__V1__QUOTE_REQUEST__INIT;
    msg.tenant_id = ctx->tenant;
    msg.payee = (char *)payee;
    msg.payer = ctx->claims.sub;
    msg.kind = (char *)kind;
    char *roles[PPM_JWT_MAX_ROLES];
    s_payee_roles (self, ctx, payee, &msg, roles);
    s_call (ctx, self->rate_rpc, "rate", "rate.Quote", &msg.base, true, &ppm__v1__quote__descriptor,
            s_quote_reply, false);
}

static void
s_session_created (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__SessionReply *reply = (Ppm__V1__SessionReply *)msg;
    if (!reply->session) {
        protobuf_c_message_free_unpacked (msg, NULL);
        s_reply_error (ctx, PPM_INTERNAL, "the metering service sent no session");
        return;
    }
    json_t *json = gateway_session_json (reply->session);
    json_t *quote = gateway_quote_json ((Ppm__V1__Quote *)ctx->held);
    json_object_set_new (json, "quote", quote);
    char location[256];
    snprintf (location, sizeof location, "/v1/sessions/%s", reply->session->session_id);
    gateway_req_add_header (ctx->req, "Location", location);
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 201, json);
}

static void
s_session_quoted (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    Ppm__V1__Quote *quote = (Ppm__V1__Quote *)msg;
    ctx->held = msg;
    Ppm__V1__CreateRequest req = PPM__V1__CREATE_REQUEST__INIT;
    req.tenant_id = ctx->tenant;
    req.quote = quote;
    req.payer = ctx->claims.sub;
    req.payee = quote->payee;
    req.kind = quote->kind;
    s_call (ctx, self->metering_rpc, "metering", "metering.Create", &req.base, false,
            &ppm__v1__session_reply__descriptor, s_session_created, false);
}

static void
s_session_create (s_self_t *self, s_ctx_t *ctx)
{
    if (s_parse_body (ctx, false))
        return;
    static const char *const allowed[] = {"payee", "kind", NULL};
    ppm_status_t *errors = NULL;
    gateway_json_refuse_unknown (ctx->body, allowed, &errors);
    const char *payee = NULL;
    const char *kind = NULL;
    gateway_json_get_string (ctx->body, "payee", false, S_ID_MAX, &payee, &errors);
    gateway_json_get_string (ctx->body, "kind", false, 8, &kind, &errors);
    if (errors) {
        s_reply_invalid (ctx, &errors);
        return;
    }
    if (s_payee_kind (ctx, payee, kind, &errors))
        return;
    if (strcmp (payee, ctx->claims.sub) == 0) {
        gateway_json_violation (&errors, "payee", "must be another user than the payer");
        s_reply_invalid (ctx, &errors);
        return;
    }
    Ppm__V1__QuoteRequest msg = PPM__V1__QUOTE_REQUEST__INIT;
    msg.tenant_id = ctx->tenant;
    msg.payee = (char *)payee;
    msg.payer = ctx->claims.sub;
    msg.kind = (char *)kind;
    char *roles[PPM_JWT_MAX_ROLES];
    s_payee_roles (self, ctx, payee, &msg, roles);
    s_call (ctx, self->rate_rpc, "rate", "rate.Quote", &msg.base, true, &ppm__v1__quote__descriptor,
            s_session_quoted, false);
}

/* Session routes first read the session and check that the caller is its
   payer or payee; then the route's step runs with ctx->held = the
   SessionReply and ctx->party set. */
static void s_session_step (s_self_t *self, s_ctx_t *ctx);

static void
s_session_loaded (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    Ppm__V1__SessionReply *reply = (Ppm__V1__SessionReply *)msg;
    if (!reply->session) {
        protobuf_c_message_free_unpacked (msg, NULL);
        s_reply_error (ctx, PPM_NOT_FOUND, "no such session");
        return;
    }
    const char *sub = ctx->claims.sub;
    if (reply->session->payer && strcmp (reply->session->payer, sub) == 0)
        ctx->party = "payer";
    else if (reply->session->payee && strcmp (reply->session->payee, sub) == 0)
        ctx->party = "payee";
    if (!ctx->party) {
        protobuf_c_message_free_unpacked (msg, NULL);
        s_reply_error (ctx, PPM_PERMISSION_DENIED,
                       "this session is not yours: only its payer and payee may use it");
        return;
    }
    ctx->held = msg;
    s_session_step (self, ctx);
}

static void
s_load_session (s_self_t *self, s_ctx_t *ctx)
{
    const char *id = gateway_match_param (&ctx->match, "id");
    if (!gateway_valid_id (id, S_ID_MAX)) {
        s_reply_error (ctx, PPM_NOT_FOUND, "no such session");
        return;
    }
    Ppm__V1__SessionRequest msg = PPM__V1__SESSION_REQUEST__INIT;
    msg.tenant_id = ctx->tenant;
    msg.session_id = (char *)id;
    msg.by = "platform";
    s_call (ctx, self->metering_rpc, "metering", "metering.Get", &msg.base, true,
            &ppm__v1__session_reply__descriptor, s_session_loaded, false);
}

static void
s_session_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__SessionReply *reply = (Ppm__V1__SessionReply *)msg;
    json_t *json = reply->session ? gateway_session_json (reply->session) : json_object ();
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json);
}

/* After End: the session's statement from payment, when it is already
   settled (settlement is asynchronous; without it charged/refunded stay 0
   and "settled" is false). A payment service that does not answer does not
   fail the End, which has happened. */
static void
s_on_totals (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    s_ctx_t *ctx = arg;
    json_t *json = ctx->fanout_json;
    ctx->fanout_json = NULL;
    if (!status) {
        Ppm__V1__SessionTotalsReply *totals =
            ppm__v1__session_totals_reply__unpack (NULL, size, payload);
        if (totals && totals->settled) {
            json_object_set_new (json, "charged", json_integer (totals->charged));
            json_object_set_new (json, "refunded", json_integer (totals->refunded));
            json_object_set_new (json, "settled", json_true ());
        }
        if (totals)
            ppm__v1__session_totals_reply__free_unpacked (totals, NULL);
    }
    s_reply_json (ctx, 200, json);
}

static void
s_end_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    Ppm__V1__EndReply *reply = (Ppm__V1__EndReply *)msg;
    json_t *json = reply->session ? gateway_session_json (reply->session) : json_object ();
    json_object_set_new (json, "used_ms", json_integer (reply->used_ms));
    json_object_set_new (json, "billed_amount", json_integer (reply->billed_amount));
    json_object_set_new (json, "charged", json_integer (reply->charged));
    json_object_set_new (json, "refunded", json_integer (reply->refunded));
    json_object_set_new (json, "already_ended", json_boolean (reply->already_ended));
    json_object_set_new (json, "settled", json_false ());
    bool paid = reply->session && reply->session->paid;
    protobuf_c_message_free_unpacked (msg, NULL);
    if (!paid || self->stopping) {
        s_reply_json (ctx, 200, json);
        return;
    }
    ctx->fanout_json = json;
    Ppm__V1__SessionTotalsRequest totals = PPM__V1__SESSION_TOTALS_REQUEST__INIT;
    totals.tenant_id = ctx->tenant;
    totals.session_id = (char *)gateway_match_param (&ctx->match, "id");
    ppm_rpc_req_t req = {.method = "payment.SessionTotals",
                         .tenant = ctx->tenant,
                         .trace_id = ctx->trace_id,
                         .timeout_ms = 500,
                         .idempotent = true};
    if (ppm_rpc_client_call (self->payment_rpc, &req, &totals.base, s_on_totals, ctx) != 0) {
        ctx->fanout_json = NULL;
        s_reply_json (ctx, 200, json);
    }
}

static void
s_checkout_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__CheckoutReply *r = (Ppm__V1__CheckoutReply *)msg;
    json_t *json = json_object ();
    json_object_set_new (json, "payment_id", json_string (r->payment_id ? r->payment_id : ""));
    json_object_set_new (json, "client_secret",
                         json_string (r->client_secret ? r->client_secret : ""));
    json_object_set_new (json, "amount", json_integer (r->amount));
    json_object_set_new (json, "currency", json_string (r->currency ? r->currency : ""));
    json_object_set_new (json, "minutes", json_integer (r->minutes));
    json_object_set_new (json, "state", json_string (gateway_payment_state_name (r->state)));
    json_object_set_new (json, "publishable_key",
                         json_string (r->publishable_key ? r->publishable_key : ""));
    if (r->checkout_url && *r->checkout_url)
        json_object_set_new (json, "checkout_url", json_string (r->checkout_url));
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 201, json);
}

static void
s_checkout (s_self_t *self, s_ctx_t *ctx)
{
    if (s_parse_body (ctx, false))
        return;
    static const char *const allowed[] = {"minutes", "accept_terms", "email", NULL};
    ppm_status_t *errors = NULL;
    gateway_json_refuse_unknown (ctx->body, allowed, &errors);
    int64_t minutes = 0;
    bool accept = false;
    const char *email = NULL;
    gateway_json_get_int (ctx->body, "minutes", true, 1, 100000, &minutes, &errors);
    if (gateway_json_get_bool (ctx->body, "accept_terms", true, &accept, &errors) && !accept)
        gateway_json_violation (&errors, "accept_terms",
                                "the terms and conditions must be accepted before paying");
    gateway_json_get_string (ctx->body, "email", false, 254, &email, &errors);
    const char *id = gateway_match_param (&ctx->match, "id");
    if (!gateway_valid_id (id, S_ID_MAX))
        gateway_json_violation (&errors, "id", "is not a session id");
    if (errors) {
        s_reply_invalid (ctx, &errors);
        return;
    }
    Ppm__V1__CheckoutRequest msg = PPM__V1__CHECKOUT_REQUEST__INIT;
    msg.tenant_id = ctx->tenant;
    msg.session_id = (char *)id;
    msg.payer = ctx->claims.sub;
    msg.minutes = minutes;
    msg.accept_terms = accept;
    msg.payer_email = (char *)email;
    /* Payment answers once Stripe has (a customer and an intent): allow
       Stripe's time, not an internal RPC's. */
    s_call_within (ctx, self->payment_rpc, "payment", "payment.Checkout", &msg.base, false,
                   &ppm__v1__checkout_reply__descriptor, s_checkout_reply, false,
                   self->config.payment_timeout_ms);
}

static void
s_confirm_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__ConfirmReply *r = (Ppm__V1__ConfirmReply *)msg;
    json_t *json = json_object ();
    json_object_set_new (json, "payment_id", json_string (r->payment_id ? r->payment_id : ""));
    json_object_set_new (json, "state", json_string (gateway_payment_state_name (r->state)));
    json_object_set_new (json, "client_secret",
                         json_string (r->client_secret ? r->client_secret : ""));
    json_object_set_new (json, "amount", json_integer (r->amount));
    json_object_set_new (json, "currency", json_string (r->currency ? r->currency : ""));
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json);
}

static void
s_confirm (s_self_t *self, s_ctx_t *ctx)
{
    if (s_parse_body (ctx, false))
        return;
    static const char *const allowed[] = {"payment_method", "payment_id", NULL};
    ppm_status_t *errors = NULL;
    gateway_json_refuse_unknown (ctx->body, allowed, &errors);
    const char *method = NULL;
    const char *payment_id = NULL;
    if (gateway_json_get_string (ctx->body, "payment_method", true, 128, &method, &errors) &&
        !gateway_valid_id (method, 128))
        gateway_json_violation (&errors, "payment_method", "is not a payment method id");
    if (gateway_json_get_string (ctx->body, "payment_id", false, 128, &payment_id, &errors) &&
        !gateway_valid_id (payment_id, 128))
        gateway_json_violation (&errors, "payment_id", "is not a payment id");
    const char *id = gateway_match_param (&ctx->match, "id");
    if (!gateway_valid_id (id, S_ID_MAX))
        gateway_json_violation (&errors, "id", "is not a session id");
    if (errors) {
        s_reply_invalid (ctx, &errors);
        return;
    }
    Ppm__V1__ConfirmRequest msg = PPM__V1__CONFIRM_REQUEST__INIT;
    msg.tenant_id = ctx->tenant;
    msg.session_id = (char *)id;
    msg.payer = ctx->claims.sub;
    msg.payment_id = (char *)payment_id;
    msg.payment_method = (char *)method;
    /* Not idempotent (PROTOCOL.md): each call is one confirmation attempt
       at Stripe under a new idempotency key, so it is sent once. */
    s_call_within (ctx, self->payment_rpc, "payment", "payment.Confirm", &msg.base, false,
                   &ppm__v1__confirm_reply__descriptor, s_confirm_reply, false,
                   self->config.payment_timeout_ms);
}

static void
s_webhook_reply (s_self_t *self, s_ctx_t *ctx, ProtobufCMessage *msg)
{
    (void)self;
    Ppm__V1__WebhookReply *r = (Ppm__V1__WebhookReply *)msg;
    json_t *json = json_pack ("{s:b, s:s, s:b}", "received", 1, "event_id",
                              r->event_id ? r->event_id : "", "duplicate", r->duplicate);
    protobuf_c_message_free_unpacked (msg, NULL);
    s_reply_json (ctx, 200, json);
}

static void
s_webhook (s_self_t *self, s_ctx_t *ctx)
{
    const char *tenant = gateway_match_param (&ctx->match, "tenant_id");
    if (!gateway_valid_id (tenant, S_ID_MAX)) {
        s_reply_error (ctx, PPM_NOT_FOUND, "no such tenant");
        return;
    }
    snprintf (ctx->tenant, sizeof ctx->tenant, "%s", tenant);
    const char *signature = gateway_req_header (ctx->req, "Stripe-Signature");
    if (!signature) {
        s_reply_error (ctx, PPM_INVALID_ARGUMENT, "the Stripe-Signature header is required");
        return;
    }
    size_t len = 0;
    const char *body = gateway_req_body (ctx->req, &len);
    Ppm__V1__WebhookRequest msg = PPM__V1__WEBHOOK_REQUEST__INIT;
    msg.tenant_id = ctx->tenant;
    msg.payload.data = (uint8_t *)body;
    msg.payload.len = len;
    msg.signature = (char *)signature;
    s_call (ctx, self->payment_rpc, "payment", "payment.Webhook", &msg.base, true,
            &ppm__v1__webhook_reply__descriptor, s_webhook_reply, false);
}

/* ---- server-sent events ------------------------------------------------ */

static void
s_stream_write_event (s_stream_t *stream, const char *event, uint64_t id, json_t *data)
{
    char *text = json_dumps (data, JSON_COMPACT);
    json_decref (data);
    if (!text)
        return;
    char head[96];
    int n = id ? snprintf (head, sizeof head, "id: %llu\nevent: %s\ndata: ", (unsigned long long)id,
                           event)
               : snprintf (head, sizeof head, "event: %s\ndata: ", event);
    size_t total = (size_t)n + strlen (text) + 2;
    char *frame = malloc (total + 1);
    snprintf (frame, total + 1, "%s%s\n\n", head, text);
    if (gateway_req_stream_write (stream->req, frame, total) != 0)
        stream->state = 0; /* marks the stream as dead: the next tick closes it */
    free (frame);
    free (text);
}

static int64_t
s_stream_remaining (const s_stream_t *stream)
{
    if (stream->state == PPM__V1__SESSION_STATE__SESSION_ACTIVE && stream->expires_at_ms > 0) {
        int64_t left = stream->expires_at_ms - ppm_clock_now_ms ();
        return left > 0 ? left : 0;
    }
    return stream->remaining_ms;
}

static void
s_stream_apply_session (s_stream_t *stream, const Ppm__V1__Session *s)
{
    stream->state = s->state;
    stream->remaining_ms = s->remaining_ms;
    stream->expires_at_ms = s->expires_at_ms;
    stream->funded_ms = s->funded_ms;
    stream->used_ms = s->used_ms;
    if (s->seq > stream->seq)
        stream->seq = s->seq;
}

static void
s_stream_close (s_self_t *self, s_stream_t *stream)
{
    void *handle = zlistx_find (self->streams, stream);
    if (handle)
        zlistx_delete (self->streams, handle);
    gateway_req_stream_end (&stream->req);
    free (stream);
}

static void
s_events_start (s_self_t *self, s_ctx_t *ctx)
{
    Ppm__V1__SessionReply *reply = (Ppm__V1__SessionReply *)ctx->held;
    s_stream_t *stream = calloc (1, sizeof *stream);
    stream->id = ++self->next_stream_id;
    snprintf (stream->tenant, sizeof stream->tenant, "%s", ctx->tenant);
    snprintf (stream->session_id, sizeof stream->session_id, "%s", reply->session->session_id);
    snprintf (stream->sub, sizeof stream->sub, "%s", ctx->claims.sub);
    stream->is_payer = strcmp (ctx->party, "payer") == 0;
    s_stream_apply_session (stream, reply->session);
    s_cors (ctx);
    s_count (self, s_route_label (ctx), 200, ctx->req, ctx->trace_id);
    stream->req = ctx->req;
    ctx->req = NULL;
    gateway_req_stream_start (stream->req);
    const char *last = gateway_req_header (stream->req, "Last-Event-ID");
    gateway_req_stream_write (stream->req, "retry: 2000\n\n", 13);
    json_t *json = gateway_session_json (reply->session);
    json_object_set_new (json, "resumed", json_boolean (last != NULL));
    s_stream_write_event (stream, "state", stream->seq ? stream->seq : 0, json);
    zlistx_add_end (self->streams, stream);
    s_ctx_destroy (&ctx);
}

typedef struct {
    s_self_t *self;
    uint64_t stream_id;
} s_refresh_t;

static s_stream_t *
s_stream_find (s_self_t *self, uint64_t id)
{
    for (s_stream_t *s = zlistx_first (self->streams); s; s = zlistx_next (self->streams))
        if (s->id == id)
            return s;
    return NULL;
}

static void
s_on_refresh (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    s_refresh_t *r = arg;
    s_stream_t *stream = s_stream_find (r->self, r->stream_id);
    if (stream) {
        stream->refreshing = false;
        if (!status) {
            Ppm__V1__SessionReply *reply = ppm__v1__session_reply__unpack (NULL, size, payload);
            if (reply && reply->session) {
                Ppm__V1__SessionState before = stream->state;
                uint64_t seq_before = stream->seq;
                s_stream_apply_session (stream, reply->session);
                /* an event was missed: tell the client the new state */
                if (before != stream->state || stream->seq > seq_before)
                    s_stream_write_event (stream, "state", stream->seq,
                                          gateway_session_json (reply->session));
            }
            if (reply)
                ppm__v1__session_reply__free_unpacked (reply, NULL);
        }
    }
    free (r);
}

static int
s_on_tick (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_self_t *self = arg;
    /* Streams to close are collected and closed after the walk: closing
       moves the list's cursor. */
    zlist_t *done = zlist_new ();
    for (s_stream_t *stream = zlistx_first (self->streams); stream;
         stream = zlistx_next (self->streams)) {
        if (stream->state == 0 || gateway_req_closed (stream->req) ||
            stream->state == PPM__V1__SESSION_STATE__SESSION_ENDED) {
            zlist_append (done, stream);
        } else {
            int64_t remaining = s_stream_remaining (stream);
            json_t *json = json_pack ("{s:I, s:s, s:b, s:I}", "remaining_ms", (json_int_t)remaining,
                                      "state", gateway_session_state_name (stream->state), "paused",
                                      stream->state == PPM__V1__SESSION_STATE__SESSION_PAUSED,
                                      "now", (json_int_t)ppm_clock_now_ms ());
            s_stream_write_event (stream, "tick", 0, json);
            if (++stream->ticks >= 5 && !stream->refreshing) {
                stream->ticks = 0;
                s_refresh_t *r = calloc (1, sizeof *r);
                r->self = self;
                r->stream_id = stream->id;
                Ppm__V1__SessionRequest msg = PPM__V1__SESSION_REQUEST__INIT;
                msg.tenant_id = stream->tenant;
                msg.session_id = stream->session_id;
                msg.by = "platform";
                ppm_rpc_req_t req = {.method = "metering.Get",
                                     .tenant = stream->tenant,
                                     .timeout_ms = (int)self->config.rpc_timeout_ms,
                                     .idempotent = true};
                stream->refreshing = true;
                if (ppm_rpc_client_call (self->metering_rpc, &req, &msg.base, s_on_refresh, r) !=
                    0) {
                    stream->refreshing = false;
                    free (r);
                }
            }
        }
    }
    for (s_stream_t *stream = zlist_first (done); stream; stream = zlist_next (done))
        s_stream_close (self, stream);
    zlist_destroy (&done);
    return 0;
}

static void
s_on_event (const ppm_event_t *event, void *arg)
{
    s_self_t *self = arg;
    if (strcmp (event->name, "config.changed") == 0) {
        /* secrets (a rotated user-token secret: what = user_token_secret),
           origins, rates may have changed: forget this tenant's, and
           cache no answer to a question asked before */
        zhashx_delete (self->secret_cache, event->tenant_id);
        self->secret_epoch++;
        zhashx_purge (self->quote_cache);
        Ppm__V1__ConfigChanged *changed =
            ppm__v1__config_changed__unpack (NULL, event->size, event->payload);
        if (changed && changed->what && strcmp (changed->what, "admin_keys") == 0)
            zhashx_purge (self->admin_cache);
        if (changed)
            ppm__v1__config_changed__free_unpacked (changed, NULL);
        return;
    }
    if (zlistx_size (self->streams) == 0)
        return;
    if (strncmp (event->name, "session.", 8) == 0) {
        Ppm__V1__SessionEvent *e =
            ppm__v1__session_event__unpack (NULL, event->size, event->payload);
        if (!e)
            return;
        for (s_stream_t *s = zlistx_first (self->streams); s; s = zlistx_next (self->streams)) {
            if (strcmp (s->session_id, e->session_id ? e->session_id : "") != 0 ||
                strcmp (s->tenant, event->tenant_id) != 0 || s->state == 0)
                continue;
            if (e->seq && e->seq <= s->seq)
                continue; /* already seen (or older than the snapshot) */
            s->seq = e->seq;
            s->state = e->state;
            s->remaining_ms = e->remaining_ms;
            s->expires_at_ms = e->expires_at_ms;
            s->funded_ms = e->funded_ms;
            s->used_ms = e->used_ms;
            s_stream_write_event (s, event->name + 8, e->seq, gateway_session_event_json (e));
        }
        ppm__v1__session_event__free_unpacked (e, NULL);
    } else if (strncmp (event->name, "payment.", 8) == 0) {
        Ppm__V1__PaymentEvent *e =
            ppm__v1__payment_event__unpack (NULL, event->size, event->payload);
        if (!e)
            return;
        char name[48];
        snprintf (name, sizeof name, "payment_%s", event->name + 8);
        for (s_stream_t *s = zlistx_first (self->streams); s; s = zlistx_next (self->streams)) {
            if (strcmp (s->session_id, e->session_id ? e->session_id : "") != 0 ||
                strcmp (s->tenant, event->tenant_id) != 0 || !s->is_payer || s->state == 0)
                continue;
            json_t *json = json_pack ("{s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "payment_id",
                                      e->payment_id ? e->payment_id : "", "state",
                                      gateway_payment_state_name (e->state), "minutes",
                                      (json_int_t)e->minutes, "amount", (json_int_t)e->amount,
                                      "currency", e->currency ? e->currency : "", "failure_code",
                                      e->failure_code ? e->failure_code : "", "failure_message",
                                      e->failure_message ? e->failure_message : "");
            s_stream_write_event (s, name, 0, json);
        }
        ppm__v1__payment_event__free_unpacked (e, NULL);
    }
}

/* ---- dispatch ------------------------------------------------------------ */

static void
s_session_step (s_self_t *self, s_ctx_t *ctx)
{
    Ppm__V1__SessionReply *loaded = (Ppm__V1__SessionReply *)ctx->held;
    switch (ctx->route->handler) {
        case H_SESSION_GET: {
            json_t *json = gateway_session_json (loaded->session);
            s_reply_json (ctx, 200, json);
            return;
        }
        case H_EVENTS:
            s_events_start (self, ctx);
            return;
        case H_HEARTBEAT: {
            Ppm__V1__SessionRequest msg = PPM__V1__SESSION_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            msg.session_id = loaded->session->session_id;
            msg.by = (char *)ctx->party;
            msg.actor = ctx->claims.sub;
            s_call (ctx, self->metering_rpc, "metering", "metering.Heartbeat", &msg.base, true,
                    &ppm__v1__session_reply__descriptor, s_session_reply, false);
            return;
        }
        case H_END: {
            Ppm__V1__EndRequest msg = PPM__V1__END_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            msg.session_id = loaded->session->session_id;
            msg.by = (char *)ctx->party;
            msg.actor = ctx->claims.sub;
            s_call (ctx, self->metering_rpc, "metering", "metering.End", &msg.base, true,
                    &ppm__v1__end_reply__descriptor, s_end_reply, false);
            return;
        }
        default:
            s_reply_error (ctx, PPM_INTERNAL, "no step for this route");
    }
}

static void
s_metrics (s_self_t *self, s_ctx_t *ctx)
{
    ppm_gauge_set (s_m_sse, (double)zlistx_size (self->streams));
    char *text = ppm_metrics_render (ppm_metrics_global ());
    if (!text) {
        s_reply_error (ctx, PPM_INTERNAL, "out of memory");
        return;
    }
    gateway_req_respond (&ctx->req, 200, "text/plain; version=0.0.4", text, strlen (text));
    free (text);
    s_ctx_destroy (&ctx);
}

/* Runs the route's handler; credentials are already checked. */
static void
s_dispatch (s_self_t *self, s_ctx_t *ctx)
{
    ppm_log_context (ctx->trace_id, ctx->tenant[0] ? ctx->tenant : NULL);
    static const char *const paging[] = {"limit", "cursor", NULL};
    int64_t limit = 50;
    const char *cursor = NULL;
    switch (ctx->route->handler) {
        case H_HEALTHZ:
        case H_READYZ:
            s_reply_json (ctx, 200, json_pack ("{s:s}", "status", "ok"));
            return;
        case H_METRICS:
            s_metrics (self, ctx);
            return;
        case H_SETTINGS_GET: {
            Ppm__V1__GetSettingsRequest msg = PPM__V1__GET_SETTINGS_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            s_call (ctx, self->config_rpc, "config", "config.GetSettings", &msg.base, true,
                    &ppm__v1__settings__descriptor, s_settings_reply, false);
            return;
        }
        case H_SETTINGS_PUT:
            s_settings_put (self, ctx);
            return;
        case H_USER_RATES_GET: {
            const char *user = gateway_match_param (&ctx->match, "user_id");
            if (!gateway_valid_id (user, S_ID_MAX)) {
                s_reply_error (ctx, PPM_NOT_FOUND, "no such user");
                return;
            }
            Ppm__V1__GetUserRatesRequest msg = PPM__V1__GET_USER_RATES_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            msg.payee = (char *)user;
            s_call (ctx, self->config_rpc, "config", "config.GetUserRates", &msg.base, true,
                    &ppm__v1__user_rates__descriptor, s_user_rates_reply, true);
            return;
        }
        case H_USER_RATES_PUT:
            s_user_rates_put (self, ctx);
            return;
        case H_ROLE_RATES_GET:
        case H_ROLES_LIST: {
            if (ctx->route->handler == H_ROLE_RATES_GET &&
                !gateway_valid_id (gateway_match_param (&ctx->match, "role"), S_ROLE_MAX)) {
                s_reply_error (ctx, PPM_NOT_FOUND, "no such role");
                return;
            }
            Ppm__V1__GetRoleRatesRequest msg = PPM__V1__GET_ROLE_RATES_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            msg.role = "";
            s_call (ctx, self->config_rpc, "config", "config.GetRoleRates", &msg.base, true,
                    &ppm__v1__role_rates_list__descriptor, s_role_rates_reply, true);
            return;
        }
        case H_ROLE_RATES_PUT:
            s_role_rates_put (self, ctx);
            return;
        case H_USERS_LIST: {
            if (s_check_query (ctx, paging) || s_page_args (ctx, 1000, &limit, &cursor))
                return;
            Ppm__V1__ListUserRatesRequest msg = PPM__V1__LIST_USER_RATES_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            msg.limit = (uint32_t)limit;
            msg.cursor = (char *)cursor;
            s_call (ctx, self->config_rpc, "config", "config.ListUserRates", &msg.base, true,
                    &ppm__v1__list_user_rates_reply__descriptor, s_users_reply, false);
            return;
        }
        case H_ADMIN_SESSIONS: {
            static const char *const allowed[] = {"limit", "cursor", "state",
                                                  "payer", "payee",  NULL};
            if (s_check_query (ctx, allowed) || s_page_args (ctx, 200, &limit, &cursor))
                return;
            int state = gateway_session_state_parse (gateway_req_query (ctx->req, "state"));
            if (state < 0) {
                ppm_status_t *errors = NULL;
                gateway_json_violation (&errors, "state",
                                        "must be awaiting_payment, active, paused, expired or "
                                        "ended");
                s_reply_invalid (ctx, &errors);
                return;
            }
            Ppm__V1__ListRequest msg = PPM__V1__LIST_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            msg.state = (Ppm__V1__SessionState)state;
            msg.limit = (int32_t)limit;
            msg.cursor = (char *)cursor;
            msg.payer = (char *)gateway_req_query (ctx->req, "payer");
            msg.payee = (char *)gateway_req_query (ctx->req, "payee");
            s_call (ctx, self->metering_rpc, "metering", "metering.List", &msg.base, true,
                    &ppm__v1__list_reply__descriptor, s_sessions_reply, false);
            return;
        }
        case H_PAYMENTS: {
            static const char *const allowed[] = {"limit", "cursor", "session_id",
                                                  "payer", "payee",  NULL};
            if (s_check_query (ctx, allowed) || s_page_args (ctx, 200, &limit, &cursor))
                return;
            Ppm__V1__ListPaymentsRequest msg = PPM__V1__LIST_PAYMENTS_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            msg.limit = (int32_t)limit;
            msg.cursor = (char *)cursor;
            msg.session_id = (char *)gateway_req_query (ctx->req, "session_id");
            msg.payer = (char *)gateway_req_query (ctx->req, "payer");
            msg.payee = (char *)gateway_req_query (ctx->req, "payee");
            s_call (ctx, self->payment_rpc, "payment", "payment.List", &msg.base, true,
                    &ppm__v1__list_payments_reply__descriptor, s_payments_reply, false);
            return;
        }
        case H_PAYMENTS_CSV: {
            limit = 1000;
            if (s_check_query (ctx, paging) || s_page_args (ctx, 5000, &limit, &cursor))
                return;
            Ppm__V1__ExportCsvRequest msg = PPM__V1__EXPORT_CSV_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            msg.limit = (int32_t)limit;
            msg.cursor = (char *)cursor;
            s_call (ctx, self->payment_rpc, "payment", "payment.ExportCsv", &msg.base, true,
                    &ppm__v1__export_csv_reply__descriptor, s_csv_reply, false);
            return;
        }
        case H_EARNINGS: {
            static const char *const allowed[] = {"payee", NULL};
            if (s_check_query (ctx, allowed))
                return;
            Ppm__V1__EarningsRequest msg = PPM__V1__EARNINGS_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            msg.payee = (char *)gateway_req_query (ctx->req, "payee");
            s_call (ctx, self->payment_rpc, "payment", "payment.Earnings", &msg.base, true,
                    &ppm__v1__earnings_reply__descriptor, s_earnings_reply, false);
            return;
        }
        case H_AUDIT: {
            if (s_check_query (ctx, paging) || s_page_args (ctx, 1000, &limit, &cursor))
                return;
            Ppm__V1__ListAuditRequest msg = PPM__V1__LIST_AUDIT_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            msg.limit = (uint32_t)limit;
            msg.cursor = (char *)cursor;
            s_call (ctx, self->config_rpc, "config", "config.ListAudit", &msg.base, true,
                    &ppm__v1__list_audit_reply__descriptor, s_audit_reply, false);
            return;
        }
        case H_TOKEN_SECRET_GET: {
            static const char *const none[] = {NULL};
            if (s_check_query (ctx, none))
                return;
            Ppm__V1__GetUserTokenSecretInfoRequest msg =
                PPM__V1__GET_USER_TOKEN_SECRET_INFO_REQUEST__INIT;
            msg.tenant_id = ctx->tenant;
            s_call (ctx, self->config_rpc, "config", "config.GetUserTokenSecretInfo", &msg.base,
                    true, &ppm__v1__user_token_secret_info__descriptor, s_token_secret_info_reply,
                    false);
            return;
        }
        case H_TOKEN_SECRET_ROTATE:
            s_token_secret_rotate (self, ctx);
            return;
        case H_ADMIN_HEALTH:
            s_admin_health (self, ctx);
            return;
        case H_QUOTE:
            s_quote (self, ctx);
            return;
        case H_SESSION_CREATE:
            s_session_create (self, ctx);
            return;
        case H_CHECKOUT:
            s_checkout (self, ctx);
            return;
        case H_CONFIRM:
            s_confirm (self, ctx);
            return;
        case H_SESSION_GET:
        case H_EVENTS:
        case H_HEARTBEAT:
        case H_END:
            if (ctx->route->handler == H_END || ctx->route->handler == H_HEARTBEAT) {
                if (s_parse_body (ctx, true))
                    return;
                static const char *const none[] = {NULL};
                ppm_status_t *errors = NULL;
                if (gateway_json_refuse_unknown (ctx->body, none, &errors)) {
                    s_reply_invalid (ctx, &errors);
                    return;
                }
            }
            s_load_session (self, ctx);
            return;
        case H_WEBHOOK:
            s_webhook (self, ctx);
            return;
        default:
            s_reply_error (ctx, PPM_INTERNAL, "no handler");
    }
}

/* The request's trace id: the trace-id part of a W3C `traceparent`
   header ("00-<32 hex>-<16 hex>-<2 hex>"), else an `X-Request-Id` of 1 to
   32 characters [A-Za-z0-9_.-], else a fresh one. It is returned in
   X-Trace-Id and X-Request-Id and carried by every RPC the request makes. */
static void
s_trace_of (gateway_req_t *req, char out[33])
{
    const char *tp = gateway_req_header (req, "traceparent");
    if (tp && strlen (tp) >= 35 && tp[2] == '-' && tp[35] == '-') {
        bool ok = true;
        for (int i = 3; i < 35 && ok; i++)
            ok = isxdigit ((unsigned char)tp[i]) != 0;
        if (ok) {
            for (int i = 0; i < 32; i++)
                out[i] = (char)tolower ((unsigned char)tp[3 + i]);
            out[32] = '\0';
            if (strspn (out, "0") != 32)
                return;
        }
    }
    const char *rid = gateway_req_header (req, "X-Request-Id");
    size_t len = rid ? strlen (rid) : 0;
    if (len >= 1 && len <= 32 &&
        strspn (rid, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == len) {
        memcpy (out, rid, len + 1);
        return;
    }
    ppm_rpc_new_trace_id (out);
}

/* A new request from the HTTP threads (metrics_only: from the health and
   metrics listener, which serves nothing else). */
static void
s_accept (s_self_t *self, gateway_req_t *req, bool metrics_only)
{
    s_ctx_t *ctx = calloc (1, sizeof *ctx);
    ctx->self = self;
    ctx->req = req;
    self->inflight++;
    s_trace_of (req, ctx->trace_id);
    gateway_req_add_header (req, "X-Trace-Id", ctx->trace_id);
    gateway_req_add_header (req, "X-Request-Id", ctx->trace_id);
    const char *method = gateway_req_method (req);
    const char *path = gateway_req_path (req);
    if (strcmp (method, "OPTIONS") == 0) {
        gateway_match_t m;
        gateway_router_match (s_routes, "GET", path, &m);
        const char *origin = gateway_req_header (req, "Origin");
        if (!m.path_known) {
            s_reply_error (ctx, PPM_NOT_FOUND, "no such resource");
            return;
        }
        /* Preflight carries no credentials, so it cannot know the tenant:
           it allows the request shape, and the answer to the real request
           carries Access-Control-Allow-Origin only for the tenant's
           configured origins. */
        if (origin) {
            gateway_req_add_header (req, "Access-Control-Allow-Origin", origin);
            gateway_req_add_header (req, "Vary", "Origin");
        }
        gateway_req_add_header (req, "Access-Control-Allow-Methods", "GET, POST, PUT, OPTIONS");
        gateway_req_add_header (req, "Access-Control-Allow-Headers",
                                "Authorization, Content-Type, If-Match, Last-Event-ID");
        gateway_req_add_header (req, "Access-Control-Max-Age", "600");
        gateway_req_respond (&ctx->req, 204, NULL, "", 0);
        s_ctx_destroy (&ctx);
        return;
    }
    if (gateway_router_match (s_routes, method, path, &ctx->match) != 0) {
        if (ctx->match.path_known) {
            gateway_req_add_header (req, "Allow", "GET, POST, PUT, OPTIONS");
            s_cors (ctx);
            s_count (self, "unmatched", 405, ctx->req, ctx->trace_id);
            json_t *body = json_pack ("{s:{s:s, s:s, s:[]}}", "error", "code", "INVALID_ARGUMENT",
                                      "message", "method not allowed", "fields");
            gateway_req_respond_json (&ctx->req, 405, body);
            s_ctx_destroy (&ctx);
            return;
        }
        s_reply_error (ctx, PPM_NOT_FOUND, "no such resource");
        return;
    }
    ctx->route = ctx->match.route;
    if (metrics_only && ctx->route->handler != H_HEALTHZ && ctx->route->handler != H_READYZ &&
        ctx->route->handler != H_METRICS) {
        s_reply_error (ctx, PPM_NOT_FOUND, "this port serves /healthz, /readyz and /metrics");
        return;
    }
    if (self->stopping) {
        s_reply_error (ctx, PPM_UNAVAILABLE, "the gateway is stopping");
        return;
    }
    ppm_log_context (ctx->trace_id, NULL);
    if (ctx->route->auth == GATEWAY_AUTH_NONE)
        s_dispatch (self, ctx);
    else
        s_authenticate (self, ctx);
}

static int
s_on_http (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void)loop;
    (void)item;
    s_self_t *self = arg;
    gateway_req_t *req;
    while ((req = gateway_http_next (self->http)))
        s_accept (self, req, false);
    return 0;
}

static int
s_on_metrics_http (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void)loop;
    (void)item;
    s_self_t *self = arg;
    gateway_req_t *req;
    while ((req = gateway_http_next (self->metrics_http)))
        s_accept (self, req, true);
    return 0;
}

static int
s_on_pipe (zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void)loop;
    s_self_t *self = arg;
    char *command = zstr_recv (pipe);
    if (!command)
        return -1;
    int rc = 0;
    if (streq (command, "$TERM"))
        rc = -1;
    else if (streq (command, "PORT"))
        zstr_sendf (pipe, "%d", self->http ? gateway_http_port (self->http) : 0);
    else if (streq (command, "METRICS_PORT"))
        zstr_sendf (pipe, "%d", self->metrics_http ? gateway_http_port (self->metrics_http) : 0);
    free (command);
    return rc;
}

static int
s_on_housekeeping (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_self_t *self = arg;
    int64_t now = ppm_clock_real_mono_us ();
    zlist_t *stale = zlist_new ();
    for (s_admin_entry_t *e = zhashx_first (self->admin_cache); e;
         e = zhashx_next (self->admin_cache))
        if (e->expires_us <= now)
            zlist_append (stale, (void *)zhashx_cursor (self->admin_cache));
    for (char *key = zlist_first (stale); key; key = zlist_next (stale))
        zhashx_delete (self->admin_cache, key);
    zlist_purge (stale);
    for (s_quote_entry_t *e = zhashx_first (self->quote_cache); e;
         e = zhashx_next (self->quote_cache))
        if (e->expires_us <= now)
            zlist_append (stale, (void *)zhashx_cursor (self->quote_cache));
    for (char *key = zlist_first (stale); key; key = zlist_next (stale))
        zhashx_delete (self->quote_cache, key);
    zlist_destroy (&stale);
    return 0;
}

static void
s_free_secret (void **item)
{
    s_secret_entry_t *e = *item;
    if (e) {
        OPENSSL_cleanse (e->secret, sizeof e->secret);
        zlist_destroy (&e->origins);
        free (e);
    }
    *item = NULL;
}

static void
s_free_quote (void **item)
{
    s_quote_entry_t *e = *item;
    if (e) {
        free (e->json);
        free (e);
    }
    *item = NULL;
}

static void
s_free_plain (void **item)
{
    free (*item);
    *item = NULL;
}

/* libmicrohttpd's messages are mostly clients that went away: debug. */
static void
s_http_log (const char *line)
{
    ppm_log_debug ("http: %s", line);
}

void
gateway_server_actor (zsock_t *pipe, void *args)
{
    s_self_t *self = calloc (1, sizeof *self);
    self->pipe = pipe;
    self->config = *(gateway_config_t *)args;
    if (self->config.rpc_timeout_ms <= 0)
        self->config.rpc_timeout_ms = PPM_RPC_DEFAULT_TIMEOUT_MS;
    if (self->config.payment_timeout_ms <= 0)
        self->config.payment_timeout_ms = 15000;
    if (self->config.auth_cache_ms <= 0)
        self->config.auth_cache_ms = 30000;
    gateway_http_config_t http = {
        .address = self->config.http_address,
        .port = (int)self->config.http_port,
        .threads = (int)self->config.http_threads,
        .body_max = (size_t)(self->config.body_max > 0 ? self->config.body_max : 65536),
        .header_max = 16384,
        .stream_max = 256 * 1024,
        .web_root = self->config.web_root,
        .log = s_http_log};
    s_metrics_register ();
    self->loop = zloop_new ();
    self->http = gateway_http_new (&http);
    bool metrics_ok = true;
    if (self->config.metrics_address && *self->config.metrics_address) {
        gateway_http_config_t metrics = http;
        metrics.address = self->config.metrics_address;
        metrics.port = (int)self->config.metrics_port;
        metrics.threads = 1;
        metrics.web_root = NULL;
        self->metrics_http = gateway_http_new (&metrics);
        metrics_ok = self->metrics_http != NULL;
    }
    self->config_rpc = ppm_rpc_client_new (self->config.config_endpoint);
    self->rate_rpc = ppm_rpc_client_new (self->config.rate_endpoint);
    self->payment_rpc = ppm_rpc_client_new (self->config.payment_endpoint);
    self->metering_rpc = ppm_rpc_client_new (self->config.metering_endpoint);
    if (self->config.events_endpoints && *self->config.events_endpoints)
        self->events = ppm_events_sub_new (self->config.events_endpoints);
    self->admin_cache = zhashx_new ();
    zhashx_set_destructor (self->admin_cache, s_free_plain);
    self->secret_cache = zhashx_new ();
    zhashx_set_destructor (self->secret_cache, s_free_secret);
    self->roles_seen = zhashx_new ();
    zhashx_set_destructor (self->roles_seen, s_free_plain);
    self->quote_cache = zhashx_new ();
    zhashx_set_destructor (self->quote_cache, s_free_quote);
    self->streams = zlistx_new ();
    bool ok = self->http && metrics_ok && self->config_rpc && self->rate_rpc && self->payment_rpc &&
              self->metering_rpc &&
              (self->events || !self->config.events_endpoints || !*self->config.events_endpoints);
    if (ok) {
        ppm_rpc_client_attach (self->config_rpc, self->loop);
        ppm_rpc_client_attach (self->rate_rpc, self->loop);
        ppm_rpc_client_attach (self->payment_rpc, self->loop);
        ppm_rpc_client_attach (self->metering_rpc, self->loop);
        if (self->events) {
            ppm_events_subscribe (self->events, "session.");
            ppm_events_subscribe (self->events, "payment.");
            ppm_events_subscribe (self->events, "config.changed.");
            ppm_events_sub_attach (self->events, self->loop, s_on_event, self);
        }
        zmq_pollitem_t item = {NULL, gateway_http_fd (self->http), ZMQ_POLLIN, 0};
        zloop_poller (self->loop, &item, s_on_http, self);
        if (self->metrics_http) {
            zmq_pollitem_t metrics_item = {NULL, gateway_http_fd (self->metrics_http), ZMQ_POLLIN,
                                           0};
            zloop_poller (self->loop, &metrics_item, s_on_metrics_http, self);
        }
        zloop_reader (self->loop, pipe, s_on_pipe, self);
        zloop_timer (self->loop, 1000, 0, s_on_tick, self);
        zloop_timer (self->loop, 5000, 0, s_on_housekeeping, self);
        ppm_log_info ("gateway listening on http://%s:%d",
                      self->config.http_address ? self->config.http_address : "127.0.0.1",
                      gateway_http_port (self->http));
        zsock_signal (pipe, 0);
        zloop_start (self->loop);
    } else {
        ppm_log_error ("gateway cannot start (HTTP bind or RPC endpoints failed)");
        /* Stay until told to stop, answering PORT with 0. */
        zloop_reader (self->loop, pipe, s_on_pipe, self);
        zsock_signal (pipe, 0);
        zloop_start (self->loop);
    }

    /* Stop: refuse new work, answer every request we hold, then close. */
    self->stopping = true;
    s_stream_t *stream;
    while ((stream = zlistx_first (self->streams)))
        s_stream_close (self, stream);
    ppm_rpc_client_destroy (&self->config_rpc); /* pending calls answer 503 */
    ppm_rpc_client_destroy (&self->rate_rpc);
    ppm_rpc_client_destroy (&self->payment_rpc);
    ppm_rpc_client_destroy (&self->metering_rpc);
    while ((stream = zlistx_first (self->streams)))
        s_stream_close (self, stream);
    gateway_http_destroy (&self->http);
    gateway_http_destroy (&self->metrics_http);
    ppm_events_sub_destroy (&self->events);
    zlistx_destroy (&self->streams);
    zhashx_destroy (&self->admin_cache);
    zhashx_destroy (&self->secret_cache);
    zhashx_destroy (&self->quote_cache);
    zhashx_destroy (&self->roles_seen);
    zloop_destroy (&self->loop);
    free (self);
    /* OpenSSL's per-thread state of this thread (HMAC, SHA-256) */
    OPENSSL_thread_stop ();
}
