/*  Helpers shared by metering's integration tests (header-only, static):
    a fake payment service that answers payment.Settle and counts calls per
    session, RPC shortcuts for metering.*, an event collector, and quotes.
    Times: the tests run with PPM_TIME_SCALE so minutes pass in seconds;
    PPM_TIME_EPOCH_MS is pinned so that spawned binaries share the clock.
*/
#ifndef METERING_TESTKIT_H_INCLUDED
#define METERING_TESTKIT_H_INCLUDED

#include <czmq.h>
#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ppm_clock.h"
#include "ppm_events.h"
#include "ppm_rpc.h"
#include "proto/metering.pb-c.h"
#include "proto/payment.pb-c.h"

/* ---- fake payment ---------------------------------------------------- */

/* What the fake payment service saw of one session's usage reports. */
typedef struct {
    int deliveries;      /* distinct Settle requests (transport re-sends not counted) */
    uint64_t request_id; /* the last request's id: its re-sends carry it again */
    int64_t used_ms;     /* the first report's used time */
    bool differs;        /* a later report said another used time */
} tk_settled_t;

typedef struct {
    zhash_t *counts; /* session id -> tk_settled_t (malloc'd) */
    int total;       /* Settle calls answered, re-sends included */
} tk_payment_t;

/* payment.Settle: ppm_rpc re-sends an idempotent call byte for byte (same
   request id) until it is answered, so a re-send is not a new delivery;
   a new request (after a restart, say) is, and must report the same
   used time. */
static inline void
tk_settle (ppm_rpc_call_t *call, void *arg)
{
    tk_payment_t *self = arg;
    Ppm__V1__SettleRequest *req =
        (Ppm__V1__SettleRequest *)ppm_rpc_call_unpack (call, &ppm__v1__settle_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "bad");
        return;
    }
    uint64_t rid = ppm_rpc_call_request_id (call);
    tk_settled_t *n = zhash_lookup (self->counts, req->session_id);
    if (!n) {
        n = calloc (1, sizeof *n);
        n->used_ms = req->used_ms;
        zhash_insert (self->counts, req->session_id, n);
        zhash_freefn (self->counts, req->session_id, free);
    }
    if (n->deliveries == 0 || rid != n->request_id) {
        n->deliveries++;
        n->request_id = rid;
    }
    if (req->used_ms != n->used_ms)
        n->differs = true;
    self->total++;
    Ppm__V1__SettleReply reply = PPM__V1__SETTLE_REPLY__INIT;
    reply.session_id = req->session_id;
    reply.already_applied = n->deliveries > 1;
    ppm_rpc_call_reply (&call, &reply.base);
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

static inline int
tk_payment_pipe (zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void)loop;
    tk_payment_t *self = arg;
    char *cmd = NULL;
    char *sid = NULL;
    if (zstr_recvx (pipe, &cmd, &sid, NULL) < 1)
        return -1;
    int rc = 0;
    if (streq (cmd, "$TERM"))
        rc = -1;
    else if (streq (cmd, "COUNT")) {
        tk_settled_t *n = sid ? zhash_lookup (self->counts, sid) : NULL;
        /* -1: reports disagreed on the used time */
        zstr_sendf (pipe, "%d", n ? (n->differs ? -1 : n->deliveries) : 0);
    } else if (streq (cmd, "TOTAL"))
        zstr_sendf (pipe, "%d", self->total);
    zstr_free (&cmd);
    zstr_free (&sid);
    return rc;
}

static inline void
tk_payment_actor (zsock_t *pipe, void *args)
{
    (void)args;
    tk_payment_t self = {zhash_new (), 0};
    zloop_t *loop = zloop_new ();
    ppm_rpc_server_t *rpc = ppm_rpc_server_new (loop, "tcp://127.0.0.1:*");
    ppm_rpc_server_handle (rpc, "payment.Settle", tk_settle, &self);
    zloop_reader (loop, pipe, tk_payment_pipe, &self);
    zsock_signal (pipe, 0);
    zstr_sendf (pipe, "%s", ppm_rpc_server_endpoint (rpc));
    zloop_start (loop);
    ppm_rpc_server_destroy (&rpc);
    zloop_destroy (&loop);
    zhash_destroy (&self.counts);
}

/* Distinct usage reports of session sid (0: none yet; -1: they disagreed). */
static inline int
tk_payment_count (zactor_t *payment, const char *sid)
{
    zstr_sendx (payment, "COUNT", sid ? sid : "", NULL);
    char *n = zstr_recv (payment);
    int count = n ? (int)strtol (n, NULL, 10) : -1;
    zstr_free (&n);
    return count;
}

/* ---- RPC shortcuts --------------------------------------------------- */

static inline ppm_status_t *
tk_call (ppm_rpc_client_t *client, const char *method, const char *tenant,
         const ProtobufCMessage *msg, const ProtobufCMessageDescriptor *desc,
         ProtobufCMessage **reply)
{
    ppm_rpc_req_t req = {.method = method, .tenant = tenant, .timeout_ms = 5000};
    return ppm_rpc_client_call_sync (client, &req, msg, desc, reply);
}

static inline void
tk_quote (Ppm__V1__Quote *q, bool paid, int64_t *marks, size_t nmarks, int64_t grace_s,
          int64_t ttl_s)
{
    ppm__v1__quote__init (q);
    q->quote_id = "q_test";
    q->payee = "u_payee";
    q->payer = "u_payer";
    q->kind = "call";
    q->paid = paid;
    q->rate_per_minute = paid ? 120 : 0;
    q->currency = "USD";
    q->rounding = "second";
    q->billing_mode = "prepaid";
    q->warning_marks_s = marks;
    q->n_warning_marks_s = nmarks;
    q->grace_s = grace_s;
    q->session_ttl_s = ttl_s;
    q->max_session_minutes = 600;
}

/* Creates a session; returns its id (caller frees) or NULL. */
static inline char *
tk_create (ppm_rpc_client_t *client, const char *tenant, Ppm__V1__Quote *q, const char *payer)
{
    Ppm__V1__CreateRequest req = PPM__V1__CREATE_REQUEST__INIT;
    req.quote = q;
    req.payer = (char *)payer;
    req.payee = "u_payee";
    req.kind = "call";
    q->payer = (char *)payer;
    Ppm__V1__SessionReply *reply = NULL;
    ppm_status_t *st = tk_call (client, "metering.Create", tenant, &req.base,
                                &ppm__v1__session_reply__descriptor, (ProtobufCMessage **)&reply);
    if (st) {
        fprintf (stderr, "create: %s %s\n", ppm_code_name (ppm_status_code (st)),
                 ppm_status_message (st));
        ppm_status_destroy (&st);
        return NULL;
    }
    char *sid = strdup (reply->session->session_id);
    protobuf_c_message_free_unpacked (&reply->base, NULL);
    return sid;
}

/* Funds; returns the status (NULL = OK); *reply_p gets the reply if asked. */
static inline ppm_status_t *
tk_fund (ppm_rpc_client_t *client, const char *tenant, const char *sid, const char *payment_id,
         int64_t minutes, Ppm__V1__FundReply **reply_p)
{
    Ppm__V1__FundRequest req = PPM__V1__FUND_REQUEST__INIT;
    req.session_id = (char *)sid;
    req.payment_id = (char *)payment_id;
    req.minutes = minutes;
    req.amount = minutes * 120;
    req.currency = "USD";
    Ppm__V1__FundReply *reply = NULL;
    ppm_status_t *st = tk_call (client, "metering.Fund", tenant, &req.base,
                                &ppm__v1__fund_reply__descriptor, (ProtobufCMessage **)&reply);
    if (reply_p)
        *reply_p = reply;
    else if (reply)
        protobuf_c_message_free_unpacked (&reply->base, NULL);
    return st;
}

/* Runs a SessionRequest method; returns the status; *session_p (if asked)
   gets the reply (free with protobuf_c_message_free_unpacked). */
static inline ppm_status_t *
tk_session (ppm_rpc_client_t *client, const char *method, const char *tenant, const char *sid,
            const char *by, const char *actor, int64_t at_ms, Ppm__V1__SessionReply **reply_p)
{
    Ppm__V1__SessionRequest req = PPM__V1__SESSION_REQUEST__INIT;
    req.session_id = (char *)sid;
    req.by = (char *)(by ? by : "");
    req.actor = (char *)(actor ? actor : "");
    req.at_ms = at_ms;
    Ppm__V1__SessionReply *reply = NULL;
    ppm_status_t *st = tk_call (client, method, tenant, &req.base,
                                &ppm__v1__session_reply__descriptor, (ProtobufCMessage **)&reply);
    if (reply_p)
        *reply_p = reply;
    else if (reply)
        protobuf_c_message_free_unpacked (&reply->base, NULL);
    return st;
}

/* ---- events ---------------------------------------------------------- */

#define TK_EVENTS_MAX 8192

typedef struct {
    char sid[24];
    char name[24];
    uint64_t seq;
    int64_t at_ms;
    int64_t recv_ms; /* ppm time when received */
    int64_t remaining_ms;
    int64_t used_ms;
    int64_t mark_s;
    char reason[16];
} tk_event_t;

typedef struct {
    tk_event_t ev[TK_EVENTS_MAX];
    size_t count;
} tk_events_t;

static inline void
tk_on_event (const ppm_event_t *event, void *arg)
{
    tk_events_t *list = arg;
    Ppm__V1__SessionEvent *msg = ppm__v1__session_event__unpack (NULL, event->size, event->payload);
    if (!msg)
        return;
    if (list->count < TK_EVENTS_MAX) {
        tk_event_t *e = &list->ev[list->count++];
        snprintf (e->sid, sizeof e->sid, "%s", msg->session_id);
        snprintf (e->name, sizeof e->name, "%s", msg->event);
        snprintf (e->reason, sizeof e->reason, "%s", msg->reason);
        e->seq = msg->seq;
        e->at_ms = msg->at_ms;
        e->recv_ms = ppm_clock_now_ms ();
        e->remaining_ms = msg->remaining_ms;
        e->used_ms = msg->used_ms;
        e->mark_s = msg->warning_mark_s;
    }
    ppm__v1__session_event__free_unpacked (msg, NULL);
}

/* Collects events for real_ms milliseconds (or until `until` returns true). */
static inline void
tk_collect (ppm_events_sub_t *sub, tk_events_t *list, int64_t real_ms,
            bool (*until) (tk_events_t *, void *), void *arg)
{
    int64_t end = zclock_mono () + real_ms;
    while (zclock_mono () < end) {
        ppm_events_sub_wait (sub, 20, tk_on_event, list);
        if (until && until (list, arg))
            break;
    }
}

static inline int
tk_count (const tk_events_t *list, const char *sid, const char *name)
{
    int n = 0;
    for (size_t i = 0; i < list->count; i++)
        if (streq (list->ev[i].sid, sid) && (!name || streq (list->ev[i].name, name)))
            n++;
    return n;
}

static inline const tk_event_t *
tk_find (const tk_events_t *list, const char *sid, const char *name)
{
    for (size_t i = 0; i < list->count; i++)
        if (streq (list->ev[i].sid, sid) && streq (list->ev[i].name, name))
            return &list->ev[i];
    return NULL;
}

/* A free TCP port on loopback, chosen by the kernel (not ZeroMQ's
   first-free scan, which hands out the same port twice once closed). */
static inline int
tk_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    int port = -1;
    if (fd >= 0 && bind (fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname (fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs (addr.sin_port);
    if (fd >= 0)
        close (fd);
    return port;
}

/* redis URL with a database index appended. */
static inline void
tk_redis_url (char *buf, size_t size, int db)
{
    snprintf (buf, size, "%s/%d", getenv ("PPM_TEST_REDIS_URL"), db);
}

static inline redisContext *
tk_redis_connect (const char *url)
{
    int port = 6379;
    int db = 0;
    sscanf (url, "redis://127.0.0.1:%d/%d", &port, &db);
    redisContext *c = redisConnect ("127.0.0.1", port);
    redisReply *r = redisCommand (c, "SELECT %d", db);
    freeReplyObject (r);
    return c;
}

/* Runs a command without arguments ("FLUSHDB"). */
static inline void
tk_redis (const char *url, const char *command)
{
    redisContext *c = tk_redis_connect (url);
    const char *argv[] = {command};
    redisReply *r = redisCommandArgv (c, 1, argv, NULL);
    freeReplyObject (r);
    redisFree (c);
}

/* Empties a test database and compacts the AOF, so that a later test
   restarting the shared Redis does not wait for it to load our history. */
static inline void
tk_redis_compact (const char *url)
{
    redisContext *c = tk_redis_connect (url);
    redisReply *r = redisCommand (c, "FLUSHDB");
    freeReplyObject (r);
    r = redisCommand (c, "BGREWRITEAOF");
    freeReplyObject (r);
    for (int i = 0; i < 200; i++) {
        r = redisCommand (c, "INFO persistence");
        bool busy = !r || r->type != REDIS_REPLY_STRING ||
                    strstr (r->str, "aof_rewrite_in_progress:1") ||
                    strstr (r->str, "aof_rewrite_scheduled:1");
        freeReplyObject (r);
        if (!busy)
            break;
        usleep (20000);
    }
    redisFree (c);
}

static inline bool
tk_redis_exists (const char *url, const char *key)
{
    redisContext *c = tk_redis_connect (url);
    redisReply *r = redisCommand (c, "EXISTS %s", key);
    bool yes = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject (r);
    redisFree (c);
    return yes;
}

#endif
