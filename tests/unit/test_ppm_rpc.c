/*  Tests of ppm_rpc and ppm_events over real TCP sockets on 127.0.0.1.

    The RPC server under test runs as an actor (its own thread and zloop)
    with a few test methods; the client runs in the test thread, either
    synchronously or attached to a zloop of its own. Misbehaving peers are
    raw DEALER / PUB sockets that send whatever the test wants.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ppm_clock.h"
#include "ppm_curve.h"
#include "ppm_events.h"
#include "ppm_log.h"
#include "ppm_metrics.h"
#include "ppm_rpc.h"
#include "proto/echo.pb-c.h"

#define S_MAX_MSG 65536

/* ---- the server actor ------------------------------------------------- */

typedef struct {
    zloop_t *loop;
    ppm_rpc_server_t *server;
    zlistx_t *held;       /* calls waiting for their sleep_ms timer */
    zhashx_t *flaky_seen; /* request ids test.Flaky has ignored once */
    uint64_t handled;     /* handler runs of test.Echo */
    uint64_t flaky;       /* handler runs of test.Flaky */
} s_server_t;

typedef struct {
    s_server_t *server;
    ppm_rpc_call_t *call;
    void *handle;
    Ppm__V1__EchoReply *reply;
    uint8_t *data;
} s_held_t;

static void
s_held_free (s_held_t **held_p)
{
    s_held_t *held = *held_p;
    ppm_rpc_call_discard (&held->call);
    free (held->data);
    free (held);
    *held_p = NULL;
}

static int
s_held_fire (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_held_t *held = (s_held_t *)arg;
    Ppm__V1__EchoReply reply = PPM__V1__ECHO_REPLY__INIT;
    size_t size = 0;
    const uint8_t *unused = ppm_rpc_call_payload (held->call, &size);
    (void)unused;
    Ppm__V1__EchoRequest *req = (Ppm__V1__EchoRequest *)ppm_rpc_call_unpack (
        held->call, &ppm__v1__echo_request__descriptor);
    reply.data = req->data;
    ppm_rpc_call_reply (&held->call, &reply.base);
    protobuf_c_message_free_unpacked (&req->base, NULL);
    zlistx_delete (held->server->held, held->handle);
    s_held_free (&held);
    return 0;
}

static void
s_echo (ppm_rpc_call_t *call, void *arg)
{
    s_server_t *self = (s_server_t *)arg;
    self->handled++;
    Ppm__V1__EchoRequest *req =
        (Ppm__V1__EchoRequest *)ppm_rpc_call_unpack (call, &ppm__v1__echo_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "not an EchoRequest");
        return;
    }
    if (req->sleep_ms > 0) {
        s_held_t *held = (s_held_t *)calloc (1, sizeof (s_held_t));
        held->server = self;
        held->call = call;
        held->handle = zlistx_add_end (self->held, held);
        zloop_timer (self->loop, (size_t)req->sleep_ms, 1, s_held_fire, held);
    } else {
        Ppm__V1__EchoReply reply = PPM__V1__ECHO_REPLY__INIT;
        reply.data = req->data;
        ppm_rpc_call_reply (&call, &reply.base);
    }
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

/* Answers "<log trace id>|<log tenant>|<call tenant>". */
static void
s_context (ppm_rpc_call_t *call, void *arg)
{
    (void)arg;
    char *text =
        zsys_sprintf ("%s|%s|%s", ppm_log_trace_id () ? ppm_log_trace_id () : "",
                      ppm_log_tenant_id () ? ppm_log_tenant_id () : "", ppm_rpc_call_tenant (call));
    Ppm__V1__EchoReply reply = PPM__V1__ECHO_REPLY__INIT;
    reply.data.data = (uint8_t *)text;
    reply.data.len = strlen (text);
    ppm_rpc_call_reply (&call, &reply.base);
    zstr_free (&text);
}

/* Ignores the first attempt of every request id, answers the next. */
static void
s_flaky (ppm_rpc_call_t *call, void *arg)
{
    s_server_t *self = (s_server_t *)arg;
    self->flaky++;
    char key[32];
    snprintf (key, sizeof key, "%llu", (unsigned long long)ppm_rpc_call_request_id (call));
    if (!zhashx_lookup (self->flaky_seen, key)) {
        zhashx_insert (self->flaky_seen, key, (void *)1);
        ppm_rpc_call_discard (&call);
        return;
    }
    ppm_rpc_call_reply (&call, NULL);
}

static int
s_server_pipe (zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void)loop;
    s_server_t *self = (s_server_t *)arg;
    char *command = zstr_recv (pipe);
    if (!command)
        return -1;
    int rc = 0;
    if (streq (command, "$TERM"))
        rc = -1;
    else if (streq (command, "STATS"))
        zsock_send (pipe, "8888", ppm_rpc_server_requests (self->server),
                    ppm_rpc_server_rejected (self->server), self->handled, self->flaky);
    zstr_free (&command);
    return rc;
}

static void
s_server_actor (zsock_t *pipe, void *args)
{
    (void)args;
    s_server_t self = {0};
    self.loop = zloop_new ();
    self.held = zlistx_new ();
    self.flaky_seen = zhashx_new ();
    self.server = ppm_rpc_server_new (self.loop, "tcp://127.0.0.1:*");
    assert (self.server);
    ppm_rpc_server_handle (self.server, "test.Echo", s_echo, &self);
    ppm_rpc_server_handle (self.server, "test.Context", s_context, &self);
    ppm_rpc_server_handle (self.server, "test.Flaky", s_flaky, &self);
    zloop_reader (self.loop, pipe, s_server_pipe, &self);
    zsock_signal (pipe, 0);
    zstr_send (pipe, ppm_rpc_server_endpoint (self.server));
    zloop_start (self.loop);
    s_held_t *held = (s_held_t *)zlistx_first (self.held);
    while (held) {
        s_held_free (&held);
        held = (s_held_t *)zlistx_next (self.held);
    }
    zlistx_destroy (&self.held);
    zhashx_destroy (&self.flaky_seen);
    ppm_rpc_server_destroy (&self.server);
    zloop_destroy (&self.loop);
}

static zactor_t *
s_server_start (char **endpoint)
{
    zactor_t *actor = zactor_new (s_server_actor, NULL);
    assert_non_null (actor);
    *endpoint = zstr_recv (actor);
    assert_non_null (*endpoint);
    return actor;
}

typedef struct {
    uint64_t requests, rejected, handled, flaky;
} s_stats_t;

static s_stats_t
s_server_stats (zactor_t *actor)
{
    s_stats_t stats;
    zstr_send (actor, "STATS");
    assert_int_equal (
        zsock_recv (actor, "8888", &stats.requests, &stats.rejected, &stats.handled, &stats.flaky),
        0);
    return stats;
}

/* ---- helpers ---------------------------------------------------------- */

/* A NUL-terminated copy of len bytes (which hold no NUL of their own). */
static char *
s_text_dup (const uint8_t *data, size_t len)
{
    char *text = (char *)malloc (len + 1);
    assert_non_null (text);
    if (len)
        memcpy (text, data, len);
    text[len] = '\0';
    return text;
}

static ppm_status_t *
s_echo_sync (ppm_rpc_client_t *client, const char *text, int sleep_ms, int timeout_ms,
             char **reply_text)
{
    Ppm__V1__EchoRequest req = PPM__V1__ECHO_REQUEST__INIT;
    req.data.data = (uint8_t *)text;
    req.data.len = strlen (text);
    req.sleep_ms = sleep_ms;
    ppm_rpc_req_t r = {.method = "test.Echo", .tenant = "t_1", .timeout_ms = timeout_ms};
    Ppm__V1__EchoReply *reply = NULL;
    ppm_status_t *status = ppm_rpc_client_call_sync (
        client, &r, &req.base, &ppm__v1__echo_reply__descriptor, (ProtobufCMessage **)&reply);
    if (reply_text)
        *reply_text = NULL;
    if (reply) {
        if (reply_text)
            *reply_text = s_text_dup (reply->data.data, reply->data.len);
        protobuf_c_message_free_unpacked (&reply->base, NULL);
    }
    return status;
}

/* Packs an envelope into a frame and sends it from a raw DEALER. */
static void
s_raw_send (zsock_t *dealer, const Ppm__V1__Envelope *env, size_t cut)
{
    size_t size = ppm__v1__envelope__get_packed_size (env);
    uint8_t *buf = malloc (size);
    ppm__v1__envelope__pack (env, buf);
    assert_true (cut < size);
    zframe_t *frame = zframe_new (buf, size - cut);
    free (buf);
    assert_int_equal (zframe_send (&frame, dealer, 0), 0);
}

/* Waits for one reply envelope on a raw DEALER; NULL on timeout. */
static Ppm__V1__Envelope *
s_raw_reply (zsock_t *dealer, int timeout_ms)
{
    zpoller_t *poller = zpoller_new (dealer, NULL);
    void *which = zpoller_wait (poller, timeout_ms);
    zpoller_destroy (&poller);
    if (!which)
        return NULL;
    zframe_t *frame = zframe_recv (dealer);
    Ppm__V1__Envelope *env =
        ppm__v1__envelope__unpack (NULL, zframe_size (frame), zframe_data (frame));
    zframe_destroy (&frame);
    assert_non_null (env);
    return env;
}

static void
s_assert_reply (zsock_t *dealer, uint64_t id, ppm_code_t code)
{
    Ppm__V1__Envelope *env = s_raw_reply (dealer, 2000);
    assert_non_null (env);
    assert_int_equal (env->kind, PPM__V1__KIND__KIND_REPLY);
    assert_int_equal (env->request_id, id);
    assert_non_null (env->status);
    assert_int_equal (env->status->code, code);
    ppm__v1__envelope__free_unpacked (env, NULL);
}

/* Runs loop until *counter reaches target or timeout_ms passes. */
typedef struct {
    int *counter;
    int target;
    int64_t until;
} s_wait_t;

static int
s_wait_tick (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_wait_t *wait = (s_wait_t *)arg;
    if (*wait->counter >= wait->target || zclock_mono () >= wait->until)
        return -1;
    return 0;
}

static void
s_loop_until (zloop_t *loop, int *counter, int target, int timeout_ms)
{
    s_wait_t wait = {counter, target, zclock_mono () + timeout_ms};
    int id = zloop_timer (loop, 2, 0, s_wait_tick, &wait);
    zloop_start (loop);
    zloop_timer_end (loop, id);
}

/* ---- tests ------------------------------------------------------------ */

static void
test_round_trip_and_context (void **state)
{
    (void)state;
    char *endpoint;
    zactor_t *server = s_server_start (&endpoint);
    ppm_rpc_client_t *client = ppm_rpc_client_new (endpoint);
    assert_non_null (client);

    char *text = NULL;
    ppm_status_t *status = s_echo_sync (client, "hello", 0, 2000, &text);
    assert_null (status);
    assert_string_equal (text, "hello");
    free (text);

    ppm_rpc_req_t ping = {.method = "sys.Ping"};
    status = ppm_rpc_client_call_sync (client, &ping, NULL, NULL, NULL);
    assert_null (status);

    /* Explicit trace id and tenant reach the handler's log context. */
    ppm_rpc_req_t ctx = {
        .method = "test.Context", .tenant = "t_42", .trace_id = "0123456789abcdef0123456789abcdef"};
    Ppm__V1__EchoReply *reply = NULL;
    status = ppm_rpc_client_call_sync (client, &ctx, NULL, &ppm__v1__echo_reply__descriptor,
                                       (ProtobufCMessage **)&reply);
    assert_null (status);
    assert_memory_equal (reply->data.data, "0123456789abcdef0123456789abcdef|t_42|t_42",
                         reply->data.len);
    protobuf_c_message_free_unpacked (&reply->base, NULL);

    /* Without one, this thread's log context is used ... */
    ppm_log_context ("fedcba9876543210fedcba9876543210", "t_7");
    ctx.trace_id = NULL;
    ctx.tenant = "t_7";
    status = ppm_rpc_client_call_sync (client, &ctx, NULL, &ppm__v1__echo_reply__descriptor,
                                       (ProtobufCMessage **)&reply);
    assert_null (status);
    assert_int_equal (reply->data.len, strlen ("fedcba9876543210fedcba9876543210|t_7|t_7"));
    assert_memory_equal (reply->data.data, "fedcba9876543210fedcba9876543210|t_7|t_7",
                         reply->data.len);
    protobuf_c_message_free_unpacked (&reply->base, NULL);

    /* ... else a fresh one (32 hex). */
    ppm_log_context (NULL, NULL);
    ctx.tenant = NULL;
    status = ppm_rpc_client_call_sync (client, &ctx, NULL, &ppm__v1__echo_reply__descriptor,
                                       (ProtobufCMessage **)&reply);
    assert_null (status);
    assert_int_equal (reply->data.len, 32 + 2);
    for (size_t i = 0; i < 32; i++)
        assert_non_null (strchr ("0123456789abcdef", reply->data.data[i]));
    protobuf_c_message_free_unpacked (&reply->base, NULL);

    /* A payload that is not the method's message is the handler's
       INVALID_ARGUMENT, and the server keeps going. */
    ppm_rpc_req_t bad = {.method = "test.Echo"};
    Ppm__V1__Envelope not_echo = PPM__V1__ENVELOPE__INIT;
    not_echo.version = 5; /* field 1 as a varint, where EchoRequest has bytes */
    status = ppm_rpc_client_call_sync (client, &bad, &not_echo.base, NULL, NULL);
    assert_non_null (status);
    assert_int_equal (ppm_status_code (status), PPM_INVALID_ARGUMENT);
    ppm_status_destroy (&status);

    assert_int_equal (ppm_rpc_client_pending (client), 0);
    ppm_rpc_client_destroy (&client);
    ppm_rpc_client_destroy (&client);
    assert_null (client);
    zactor_destroy (&server);
    zstr_free (&endpoint);
}

typedef struct {
    int *done;
    int index;
    int bad;
} s_pipe_call_t;

static int s_pipe_errors;

static void
s_pipe_reply (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    s_pipe_call_t *call = (s_pipe_call_t *)arg;
    (*call->done)++;
    Ppm__V1__EchoReply *reply = status ? NULL : ppm__v1__echo_reply__unpack (NULL, size, payload);
    char expected[16];
    snprintf (expected, sizeof expected, "%d", call->index);
    if (!reply || reply->data.len != strlen (expected) ||
        memcmp (reply->data.data, expected, reply->data.len) != 0)
        s_pipe_errors++;
    if (reply)
        ppm__v1__echo_reply__free_unpacked (reply, NULL);
}

static void
test_many_in_flight (void **state)
{
    (void)state;
    enum { N = 1000 };
    char *endpoint;
    zactor_t *server = s_server_start (&endpoint);
    ppm_rpc_client_t *client = ppm_rpc_client_new (endpoint);
    zloop_t *loop = zloop_new ();
    assert_int_equal (ppm_rpc_client_attach (client, loop), 0);
    assert_int_equal (ppm_rpc_client_attach (client, loop), -1);

    static s_pipe_call_t calls[N];
    int done = 0;
    s_pipe_errors = 0;
    for (int i = 0; i < N; i++) {
        char text[16];
        snprintf (text, sizeof text, "%d", i);
        Ppm__V1__EchoRequest req = PPM__V1__ECHO_REQUEST__INIT;
        req.data.data = (uint8_t *)text;
        req.data.len = strlen (text);
        calls[i] = (s_pipe_call_t){&done, i, 0};
        ppm_rpc_req_t r = {.method = "test.Echo", .tenant = "t_1", .timeout_ms = 5000};
        assert_int_equal (ppm_rpc_client_call (client, &r, &req.base, s_pipe_reply, &calls[i]), 0);
    }
    assert_int_equal (ppm_rpc_client_pending (client), N);
    s_loop_until (loop, &done, N, 5000);
    assert_int_equal (done, N);
    assert_int_equal (s_pipe_errors, 0);
    assert_int_equal (ppm_rpc_client_pending (client), 0);
    s_stats_t stats = s_server_stats (server);
    assert_int_equal (stats.handled, N);
    assert_int_equal (stats.rejected, 0);

    ppm_rpc_client_destroy (&client);
    zloop_destroy (&loop);
    zactor_destroy (&server);
    zstr_free (&endpoint);
}

typedef struct {
    int calls;
    ppm_code_t code;
} s_record_t;

static void
s_record (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    (void)payload;
    (void)size;
    s_record_t *record = (s_record_t *)arg;
    record->calls++;
    record->code = ppm_status_code (status);
}

static void
test_deadline_expires (void **state)
{
    (void)state;
    char *endpoint;
    zactor_t *server = s_server_start (&endpoint);
    ppm_rpc_client_t *client = ppm_rpc_client_new (endpoint);

    int64_t start = zclock_mono ();
    ppm_status_t *status = s_echo_sync (client, "slow", 800, 100, NULL);
    int64_t took = zclock_mono () - start;
    assert_non_null (status);
    assert_int_equal (ppm_status_code (status), PPM_DEADLINE_EXCEEDED);
    assert_true (took >= 95 && took < 700);
    ppm_status_destroy (&status);
    assert_int_equal (ppm_rpc_client_pending (client), 0);

    /* The same through an attached loop: the callback runs once, with
       DEADLINE_EXCEEDED, and the late reply is dropped silently. */
    zloop_t *loop = zloop_new ();
    ppm_rpc_client_attach (client, loop);
    s_record_t record = {0, PPM_OK};
    Ppm__V1__EchoRequest req = PPM__V1__ECHO_REQUEST__INIT;
    req.sleep_ms = 300;
    ppm_rpc_req_t r = {.method = "test.Echo", .timeout_ms = 100};
    assert_int_equal (ppm_rpc_client_call (client, &r, &req.base, s_record, &record), 0);
    s_loop_until (loop, &record.calls, 1, 2000);
    assert_int_equal (record.calls, 1);
    assert_int_equal (record.code, PPM_DEADLINE_EXCEEDED);
    /* Both late replies arrive, and are dropped. */
    int never = 0;
    int64_t until = zclock_mono () + 5000;
    while (ppm_rpc_client_dropped (client) < 2 && zclock_mono () < until)
        s_loop_until (loop, &never, 1, 20);
    assert_int_equal (record.calls, 1);
    assert_int_equal (ppm_rpc_client_dropped (client), 2);

    char *text = NULL;
    status = s_echo_sync (client, "after", 0, 2000, &text);
    assert_null (status);
    assert_string_equal (text, "after");
    free (text);

    ppm_rpc_client_destroy (&client);
    zloop_destroy (&loop);
    zactor_destroy (&server);
    zstr_free (&endpoint);
}

static void
test_unknown_method (void **state)
{
    (void)state;
    char *endpoint;
    zactor_t *server = s_server_start (&endpoint);
    ppm_rpc_client_t *client = ppm_rpc_client_new (endpoint);
    ppm_rpc_req_t r = {.method = "nope.Nothing"};
    ppm_status_t *status = ppm_rpc_client_call_sync (client, &r, NULL, NULL, NULL);
    assert_non_null (status);
    assert_int_equal (ppm_status_code (status), PPM_UNIMPLEMENTED);
    assert_non_null (strstr (ppm_status_message (status), "nope.Nothing"));
    ppm_status_destroy (&status);
    s_stats_t stats = s_server_stats (server);
    assert_int_equal (stats.rejected, 1);
    ppm_rpc_client_destroy (&client);
    zactor_destroy (&server);
    zstr_free (&endpoint);
}

static void
test_deadline_on_arrival (void **state)
{
    (void)state;
    char *endpoint;
    zactor_t *server = s_server_start (&endpoint);
    zsock_t *raw = zsock_new_dealer (endpoint);
    Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
    env.version = 1;
    env.kind = PPM__V1__KIND__KIND_REQUEST;
    env.method = "test.Echo";
    env.request_id = 11;
    env.deadline_ms = ppm_clock_real_ms () - 1000;
    s_raw_send (raw, &env, 0);
    s_assert_reply (raw, 11, PPM_DEADLINE_EXCEEDED);
    s_stats_t stats = s_server_stats (server);
    assert_int_equal (stats.handled, 0);
    assert_int_equal (stats.rejected, 1);

    /* No deadline at all (0) is accepted. */
    env.deadline_ms = 0;
    env.request_id = 12;
    s_raw_send (raw, &env, 0);
    Ppm__V1__Envelope *reply = s_raw_reply (raw, 2000);
    assert_non_null (reply);
    assert_int_equal (reply->request_id, 12);
    assert_null (reply->status);
    ppm__v1__envelope__free_unpacked (reply, NULL);

    zsock_destroy (&raw);
    zactor_destroy (&server);
    zstr_free (&endpoint);
}

static void
test_garbage_and_oversize (void **state)
{
    (void)state;
    char *endpoint;
    zactor_t *server = s_server_start (&endpoint);
    zsock_t *raw = zsock_new_dealer (endpoint);

    /* An empty frame and random bytes: dropped, no reply. */
    zframe_t *frame = zframe_new (NULL, 0);
    zframe_send (&frame, raw, 0);
    uint8_t noise[200];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof noise; i++) {
        x = x * 1103515245 + 12345;
        noise[i] = (uint8_t)(x >> 16);
    }
    noise[0] = 0xff; /* an invalid tag: not even a request id to read */
    frame = zframe_new (noise, sizeof noise);
    zframe_send (&frame, raw, 0);
    assert_null (s_raw_reply (raw, 200));

    /* A valid envelope but two frames. */
    Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
    env.version = 1;
    env.kind = PPM__V1__KIND__KIND_REQUEST;
    env.method = "test.Echo";
    env.request_id = 7;
    size_t size = ppm__v1__envelope__get_packed_size (&env);
    uint8_t buf[256];
    ppm__v1__envelope__pack (&env, buf);
    zsock_send (raw, "bs", buf, size, "extra");
    s_assert_reply (raw, 7, PPM_INVALID_ARGUMENT);

    /* Wrong version, wrong kind. */
    env.version = 2;
    env.request_id = 8;
    s_raw_send (raw, &env, 0);
    s_assert_reply (raw, 8, PPM_INVALID_ARGUMENT);
    env.version = 1;
    env.kind = PPM__V1__KIND__KIND_REPLY;
    env.request_id = 9;
    s_raw_send (raw, &env, 0);
    s_assert_reply (raw, 9, PPM_INVALID_ARGUMENT);

    /* Truncated: unpack fails, but the request id is readable. */
    env.kind = PPM__V1__KIND__KIND_REQUEST;
    env.request_id = 10;
    uint8_t payload[100] = {0};
    env.payload.data = payload;
    env.payload.len = sizeof payload;
    s_raw_send (raw, &env, 10);
    s_assert_reply (raw, 10, PPM_INVALID_ARGUMENT);

    /* Oversize: libzmq drops the connection, the server stays. */
    size_t big = S_MAX_MSG * 2;
    uint8_t *huge = calloc (1, big);
    frame = zframe_new (huge, big);
    free (huge);
    zframe_send (&frame, raw, 0);
    assert_null (s_raw_reply (raw, 300));

    ppm_rpc_client_t *client = ppm_rpc_client_new (endpoint);
    char *text = NULL;
    ppm_status_t *status = s_echo_sync (client, "still here", 0, 2000, &text);
    assert_null (status);
    assert_string_equal (text, "still here");
    free (text);

    s_stats_t stats = s_server_stats (server);
    assert_int_equal (stats.rejected, 6);
    assert_int_equal (stats.handled, 1);

    ppm_rpc_client_destroy (&client);
    zsock_destroy (&raw);
    zactor_destroy (&server);
    zstr_free (&endpoint);
}

/* Thousands of mutated envelopes (bit flips, truncations, splices): the
   server answers or drops each, and keeps answering well-formed calls. */
static void
test_mutated_envelopes (void **state)
{
    (void)state;
    char *endpoint;
    zactor_t *server = s_server_start (&endpoint);
    zsock_t *raw = zsock_new_dealer (endpoint);
    Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
    env.version = 1;
    env.kind = PPM__V1__KIND__KIND_REQUEST;
    env.method = "test.Echo";
    env.request_id = 77;
    env.deadline_ms = ppm_clock_real_ms () + 60000;
    env.trace_id = "0123456789abcdef0123456789abcdef";
    env.tenant_id = "t_1";
    uint8_t payload[40];
    memset (payload, 0x0a, sizeof payload);
    env.payload.data = payload;
    env.payload.len = sizeof payload;
    uint8_t base[256];
    size_t base_size = ppm__v1__envelope__pack (&env, base);
    uint32_t x = 2463534242u;
    enum { N = 3000 };
    for (int i = 0; i < N; i++) {
        uint8_t buf[256];
        memcpy (buf, base, base_size);
        size_t size = base_size;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        switch (x % 4) {
            case 0: /* flip a few bits */
                for (int k = 0; k < 1 + (int)(x >> 8) % 4; k++)
                    buf[(x >> (k * 5)) % size] ^= (uint8_t)(1u << ((x >> 3) % 8));
                break;
            case 1: /* truncate */
                size = (x >> 4) % size;
                break;
            case 2: /* overwrite a byte with anything */
                buf[(x >> 4) % size] = (uint8_t)(x >> 20);
                break;
            default: /* splice: repeat a slice over the tail */
                size_t from = (x >> 4) % size;
                size_t to = (x >> 12) % size;
                size_t len = size - (from > to ? from : to);
                memmove (buf + to, buf + from, len);
                break;
        }
        zframe_t *frame = zframe_new (buf, size);
        zframe_send (&frame, raw, 0);
    }
    /* Let the server take them all, then throw the answers away. */
    ppm_rpc_client_t *client = ppm_rpc_client_new (endpoint);
    char *text = NULL;
    ppm_status_t *status = s_echo_sync (client, "survived", 0, 5000, &text);
    assert_null (status);
    assert_string_equal (text, "survived");
    free (text);
    /* Every mutated message was read (the echo came on another
       connection, so wait for the count). */
    s_stats_t stats = s_server_stats (server);
    int64_t until = zclock_mono () + 5000;
    while (stats.requests < N + 1 && zclock_mono () < until) {
        zclock_sleep (10);
        stats = s_server_stats (server);
    }
    assert_int_equal (stats.requests, N + 1);
    status = s_echo_sync (client, "still", 0, 5000, NULL);
    assert_null (status);
    ppm_rpc_client_destroy (&client);
    zsock_destroy (&raw);
    zactor_destroy (&server);
    zstr_free (&endpoint);
}

static void
test_idempotent_retry (void **state)
{
    (void)state;
    char *endpoint;
    zactor_t *server = s_server_start (&endpoint);
    ppm_rpc_client_t *client = ppm_rpc_client_new (endpoint);

    /* First re-send after 200 ms, so that a busy machine still answers
       the second attempt before a third is due. */
    ppm_rpc_client_set_backoff (client, 200, 1000);
    ppm_rpc_req_t r = {.method = "test.Flaky", .timeout_ms = 3000, .idempotent = true};
    int64_t start = zclock_mono ();
    ppm_status_t *status = ppm_rpc_client_call_sync (client, &r, NULL, NULL, NULL);
    int64_t took = zclock_mono () - start;
    assert_null (status);
    assert_true (took >= 195 && took < 2500);
    uint64_t resent = ppm_rpc_client_resent (client);
    assert_true (resent >= 1);
    zclock_sleep (100); /* any further re-send reaches the server */
    s_stats_t stats = s_server_stats (server);
    assert_int_equal (stats.flaky, 1 + resent);

    /* Not idempotent: sent once, never re-sent, so it times out. */
    r.idempotent = false;
    r.timeout_ms = 300;
    status = ppm_rpc_client_call_sync (client, &r, NULL, NULL, NULL);
    assert_non_null (status);
    assert_int_equal (ppm_status_code (status), PPM_DEADLINE_EXCEEDED);
    ppm_status_destroy (&status);
    assert_int_equal (ppm_rpc_client_resent (client), resent);
    stats = s_server_stats (server);
    assert_int_equal (stats.flaky, 2 + resent);

    ppm_rpc_client_destroy (&client);
    zactor_destroy (&server);
    zstr_free (&endpoint);
}

/* The metrics of docs/METRICS.md move: OK and error replies on both sides,
   every rejection reason, client retries, timeouts, published events. The
   registry is process-wide, so each check compares with a value read
   before (other tests in this binary count too). */
static void
test_metrics (void **state)
{
    (void)state;
    char *endpoint;
    zactor_t *server = s_server_start (&endpoint);
    ppm_rpc_client_t *client = ppm_rpc_client_new (endpoint);
    assert_non_null (client);
    ppm_metrics_t *reg = ppm_metrics_global ();
    /* Registering again returns the handles ppm_rpc registered. */
    ppm_counter_t *srv_req =
        ppm_metrics_counter (reg, "ppm_rpc_server_requests_total", "", "method,code");
    ppm_histogram_t *srv_dur =
        ppm_metrics_histogram (reg, "ppm_rpc_server_duration_seconds", "", "method", NULL, 0);
    ppm_counter_t *srv_rej =
        ppm_metrics_counter (reg, "ppm_rpc_server_rejected_total", "", "reason");
    ppm_counter_t *cli_req =
        ppm_metrics_counter (reg, "ppm_rpc_client_requests_total", "", "method,code");
    ppm_histogram_t *cli_dur =
        ppm_metrics_histogram (reg, "ppm_rpc_client_duration_seconds", "", "method", NULL, 0);
    ppm_counter_t *cli_retry =
        ppm_metrics_counter (reg, "ppm_rpc_client_retries_total", "", "method");
    ppm_counter_t *published = ppm_metrics_counter (reg, "ppm_events_published_total", "", "event");
    ppm_counter_t *curve = ppm_metrics_counter (reg, "ppm_curve_auth_failures_total", "", NULL);
    assert_non_null (srv_req);
    assert_non_null (srv_dur);
    assert_non_null (srv_rej);
    assert_non_null (cli_req);
    assert_non_null (cli_dur);
    assert_non_null (cli_retry);
    assert_non_null (published);
    assert_non_null (curve);

    /* OK. */
    uint64_t srv_ok = ppm_counter_value (srv_req, "test.Echo", "OK");
    uint64_t cli_ok = ppm_counter_value (cli_req, "test.Echo", "OK");
    uint64_t srv_n = ppm_histogram_count (srv_dur, "test.Echo");
    uint64_t cli_n = ppm_histogram_count (cli_dur, "test.Echo");
    ppm_status_t *status = s_echo_sync (client, "hi", 0, 2000, NULL);
    assert_null (status);
    assert_int_equal (ppm_counter_value (srv_req, "test.Echo", "OK"), srv_ok + 1);
    assert_int_equal (ppm_counter_value (cli_req, "test.Echo", "OK"), cli_ok + 1);
    assert_int_equal (ppm_histogram_count (srv_dur, "test.Echo"), srv_n + 1);
    assert_int_equal (ppm_histogram_count (cli_dur, "test.Echo"), cli_n + 1);

    /* An error from the handler: test.Echo with a payload that is not an
       EchoRequest answers INVALID_ARGUMENT. */
    uint64_t srv_bad = ppm_counter_value (srv_req, "test.Echo", "INVALID_ARGUMENT");
    uint64_t cli_bad = ppm_counter_value (cli_req, "test.Echo", "INVALID_ARGUMENT");
    /* An Envelope's field 1 is a varint where EchoRequest has bytes. */
    Ppm__V1__Envelope not_echo = PPM__V1__ENVELOPE__INIT;
    not_echo.version = 1;
    ppm_rpc_req_t r = {.method = "test.Echo", .timeout_ms = 2000};
    status = ppm_rpc_client_call_sync (client, &r, &not_echo.base, NULL, NULL);
    assert_non_null (status);
    assert_int_equal (ppm_status_code (status), PPM_INVALID_ARGUMENT);
    ppm_status_destroy (&status);
    assert_int_equal (ppm_counter_value (srv_req, "test.Echo", "INVALID_ARGUMENT"), srv_bad + 1);
    assert_int_equal (ppm_counter_value (cli_req, "test.Echo", "INVALID_ARGUMENT"), cli_bad + 1);

    /* A client-side timeout counts as DEADLINE_EXCEEDED. */
    uint64_t cli_late = ppm_counter_value (cli_req, "test.Echo", "DEADLINE_EXCEEDED");
    status = s_echo_sync (client, "late", 500, 100, NULL);
    assert_non_null (status);
    assert_int_equal (ppm_status_code (status), PPM_DEADLINE_EXCEEDED);
    ppm_status_destroy (&status);
    assert_int_equal (ppm_counter_value (cli_req, "test.Echo", "DEADLINE_EXCEEDED"), cli_late + 1);

    /* Rejections, by reason; an unknown method is never a label. */
    uint64_t unknown = ppm_counter_value (srv_rej, "unknown_method");
    uint64_t cli_unimpl = ppm_counter_value (cli_req, "nope.Nothing", "UNIMPLEMENTED");
    r.method = "nope.Nothing";
    status = ppm_rpc_client_call_sync (client, &r, NULL, NULL, NULL);
    assert_non_null (status);
    assert_int_equal (ppm_status_code (status), PPM_UNIMPLEMENTED);
    ppm_status_destroy (&status);
    assert_int_equal (ppm_counter_value (srv_rej, "unknown_method"), unknown + 1);
    assert_int_equal (ppm_counter_value (srv_req, "nope.Nothing", "UNIMPLEMENTED"), 0);
    assert_int_equal (ppm_counter_value (cli_req, "nope.Nothing", "UNIMPLEMENTED"), cli_unimpl + 1);

    zsock_t *raw = zsock_new_dealer (endpoint);
    Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
    env.version = 1;
    env.kind = PPM__V1__KIND__KIND_REQUEST;
    env.method = "test.Echo";
    env.request_id = 21;
    env.deadline_ms = ppm_clock_real_ms () - 1000;
    uint64_t deadline = ppm_counter_value (srv_rej, "deadline");
    s_raw_send (raw, &env, 0);
    s_assert_reply (raw, 21, PPM_DEADLINE_EXCEEDED);
    assert_int_equal (ppm_counter_value (srv_rej, "deadline"), deadline + 1);

    env.version = 2;
    env.deadline_ms = 0;
    env.request_id = 22;
    uint64_t version = ppm_counter_value (srv_rej, "version");
    s_raw_send (raw, &env, 0);
    s_assert_reply (raw, 22, PPM_INVALID_ARGUMENT);
    assert_int_equal (ppm_counter_value (srv_rej, "version"), version + 1);

    uint64_t malformed = ppm_counter_value (srv_rej, "malformed");
    uint8_t bad_bytes[] = {0x0f, 0xff}; /* field 1, wire type 7: not protobuf */
    zframe_t *frame = zframe_new (bad_bytes, sizeof bad_bytes);
    assert_int_equal (zframe_send (&frame, raw, 0), 0);
    /* No request id to answer: dropped; the server's thread counts it. */
    int64_t until = zclock_mono () + 2000;
    while (ppm_counter_value (srv_rej, "malformed") == malformed && zclock_mono () < until)
        zclock_sleep (5);
    assert_int_equal (ppm_counter_value (srv_rej, "malformed"), malformed + 1);
    zsock_destroy (&raw);

    /* Retries of an idempotent call. */
    uint64_t retries = ppm_counter_value (cli_retry, "test.Flaky");
    ppm_rpc_client_set_backoff (client, 200, 1000);
    r.method = "test.Flaky";
    r.timeout_ms = 3000;
    r.idempotent = true;
    status = ppm_rpc_client_call_sync (client, &r, NULL, NULL, NULL);
    assert_null (status);
    assert_true (ppm_counter_value (cli_retry, "test.Flaky") >= retries + 1);
    assert_int_equal (ppm_counter_value (cli_retry, "test.Flaky") - retries,
                      ppm_rpc_client_resent (client));

    /* Published events, by name. */
    ppm_events_pub_t *pub = ppm_events_pub_new ("tcp://127.0.0.1:*");
    assert_non_null (pub);
    uint64_t events = ppm_counter_value (published, "test.happened");
    assert_int_equal (ppm_events_publish (pub, "test.happened", "t_1", NULL), 0);
    assert_int_equal (ppm_events_publish (pub, "test.happened", NULL, NULL), 0);
    assert_int_equal (ppm_counter_value (published, "test.happened"), events + 2);
    ppm_events_pub_destroy (&pub);

    /* Every series appears in the rendered text. */
    char *text = ppm_metrics_render (reg);
    assert_non_null (text);
    assert_non_null (
        strstr (text, "ppm_rpc_server_requests_total{method=\"test.Echo\",code=\"OK\"}"));
    assert_non_null (strstr (text, "ppm_rpc_server_rejected_total{reason=\"unknown_method\"}"));
    assert_null (strstr (text, "ppm_rpc_server_requests_total{method=\"nope.Nothing\""));
    assert_non_null (strstr (text, "ppm_curve_auth_failures_total"));
    free (text);

    ppm_rpc_client_destroy (&client);
    zactor_destroy (&server);
    zstr_free (&endpoint);
}

static void
test_sync_dispatches_others_and_destroy_cancels (void **state)
{
    (void)state;
    char *endpoint;
    zactor_t *server = s_server_start (&endpoint);
    ppm_rpc_client_t *client = ppm_rpc_client_new (endpoint);

    /* An async call answered while a sync call waits. */
    s_record_t early = {0, PPM_UNKNOWN};
    Ppm__V1__EchoRequest req = PPM__V1__ECHO_REQUEST__INIT;
    req.sleep_ms = 30;
    ppm_rpc_req_t r = {.method = "test.Echo"};
    assert_int_equal (ppm_rpc_client_call (client, &r, &req.base, s_record, &early), 0);
    ppm_status_t *status = s_echo_sync (client, "x", 400, 3000, NULL);
    assert_null (status);
    assert_int_equal (early.calls, 1);
    assert_int_equal (early.code, PPM_OK);

    /* Pending calls are cancelled by destroy. */
    s_record_t pending[3];
    req.sleep_ms = 1000;
    for (int i = 0; i < 3; i++) {
        pending[i] = (s_record_t){0, PPM_OK};
        assert_int_equal (ppm_rpc_client_call (client, &r, &req.base, s_record, &pending[i]), 0);
    }
    assert_int_equal (ppm_rpc_client_pending (client), 3);
    ppm_rpc_client_destroy (&client);
    for (int i = 0; i < 3; i++) {
        assert_int_equal (pending[i].calls, 1);
        assert_int_equal (pending[i].code, PPM_CANCELLED);
    }
    zactor_destroy (&server);
    zstr_free (&endpoint);
}

static void
test_several_endpoints (void **state)
{
    (void)state;
    char *endpoint1, *endpoint2;
    zactor_t *server1 = s_server_start (&endpoint1);
    zactor_t *server2 = s_server_start (&endpoint2);
    char *both = zsys_sprintf ("%s,%s", endpoint1, endpoint2);
    ppm_rpc_client_t *client = ppm_rpc_client_new (both);
    assert_non_null (client);
    /* Let both connections come up so DEALER spreads over both. */
    zclock_sleep (100);
    for (int i = 0; i < 20; i++) {
        ppm_status_t *status = s_echo_sync (client, "spread", 0, 2000, NULL);
        assert_null (status);
    }
    s_stats_t stats1 = s_server_stats (server1);
    s_stats_t stats2 = s_server_stats (server2);
    assert_int_equal (stats1.handled + stats2.handled, 20);
    assert_true (stats1.handled > 0);
    assert_true (stats2.handled > 0);
    ppm_rpc_client_destroy (&client);
    zstr_free (&both);
    zactor_destroy (&server1);
    zactor_destroy (&server2);
    zstr_free (&endpoint1);
    zstr_free (&endpoint2);
}

static ppm_rpc_call_t *s_kept_call;
static int s_kept_count;

static void
s_keep (ppm_rpc_call_t *call, void *arg)
{
    (void)arg;
    s_kept_call = call;
    s_kept_count++;
}

static void
test_api_edges (void **state)
{
    (void)state;
    zloop_t *loop = zloop_new ();
    assert_null (ppm_rpc_server_new (loop, "bogus://nowhere"));
    assert_null (ppm_rpc_server_new (loop, ""));
    assert_null (ppm_rpc_client_new (""));
    assert_null (ppm_rpc_client_new (NULL));
    assert_null (ppm_events_pub_new ("bogus://x"));
    assert_null (ppm_events_sub_new (""));

    ppm_rpc_server_t *server = ppm_rpc_server_new (loop, "tcp://127.0.0.1:*");
    assert_non_null (server);
    assert_true (ppm_rpc_server_port (server) > 0);
    assert_non_null (strstr (ppm_rpc_server_endpoint (server), "tcp://127.0.0.1:"));
    assert_int_equal (ppm_rpc_server_handle (server, "sys.Ping", s_keep, NULL), -1);
    assert_int_equal (ppm_rpc_server_handle (server, "test.Keep", s_keep, NULL), 0);
    assert_int_equal (ppm_rpc_server_handle (server, "test.Keep", s_keep, NULL), -1);

    /* A call kept past its server's end fails cleanly. */
    ppm_rpc_client_t *client = ppm_rpc_client_new (ppm_rpc_server_endpoint (server));
    ppm_rpc_client_attach (client, loop);
    s_record_t record = {0, PPM_OK};
    ppm_rpc_req_t r = {.method = "test.Keep", .timeout_ms = 200};
    ppm_rpc_client_call (client, &r, NULL, s_record, &record);
    s_kept_call = NULL;
    s_kept_count = 0;
    s_loop_until (loop, &s_kept_count, 1, 2000);
    assert_non_null (s_kept_call);
    ppm_rpc_server_destroy (&server);
    assert_int_equal (ppm_rpc_call_reply (&s_kept_call, NULL), -1);
    assert_null (s_kept_call);
    ppm_rpc_client_destroy (&client);
    assert_int_equal (record.calls, 1);
    assert_int_equal (record.code, PPM_CANCELLED);

    char trace[33];
    ppm_rpc_new_trace_id (trace);
    assert_int_equal (strlen (trace), 32);
    char other[33];
    ppm_rpc_new_trace_id (other);
    assert_string_not_equal (trace, other);
    zloop_destroy (&loop);
}

/* ---- events ----------------------------------------------------------- */

typedef struct {
    int count;
    char name[64];
    char tenant[64];
    char data[64];
} s_seen_t;

static void
s_seen (const ppm_event_t *event, void *arg)
{
    s_seen_t *seen = (s_seen_t *)arg;
    seen->count++;
    snprintf (seen->name, sizeof seen->name, "%s", event->name);
    snprintf (seen->tenant, sizeof seen->tenant, "%s", event->tenant_id);
    Ppm__V1__EchoReply *reply = ppm__v1__echo_reply__unpack (NULL, event->size, event->payload);
    seen->data[0] = '\0';
    if (reply) {
        snprintf (seen->data, sizeof seen->data, "%.*s", (int)reply->data.len,
                  (const char *)reply->data.data);
        ppm__v1__echo_reply__free_unpacked (reply, NULL);
    }
}

static void
s_publish (ppm_events_pub_t *pub, const char *name, const char *tenant, const char *data)
{
    Ppm__V1__EchoReply msg = PPM__V1__ECHO_REPLY__INIT;
    msg.data.data = (uint8_t *)data;
    msg.data.len = strlen (data);
    assert_int_equal (ppm_events_publish (pub, name, tenant, &msg.base), 0);
}

static void
test_events_by_prefix (void **state)
{
    (void)state;
    ppm_events_pub_t *pub = ppm_events_pub_new ("tcp://127.0.0.1:*");
    assert_non_null (pub);
    ppm_events_sub_t *sub = ppm_events_sub_new (ppm_events_pub_endpoint (pub));
    assert_non_null (sub);
    assert_int_equal (ppm_events_subscribe (sub, "session."), 0);
    assert_int_equal (ppm_events_subscribe (sub, "config.changed.t_42"), 0);

    /* PUB/SUB joins late: publish a probe until the first one arrives. */
    s_seen_t seen = {0};
    int64_t until = zclock_mono () + 3000;
    while (seen.count == 0 && zclock_mono () < until) {
        s_publish (pub, "session.probe", "t_1", "probe");
        ppm_events_sub_wait (sub, 20, s_seen, &seen);
    }
    assert_true (seen.count > 0);
    while (ppm_events_sub_wait (sub, 50, s_seen, &seen) == 1)
        ;

    seen.count = 0;
    s_publish (pub, "config.changed", "t_43", "other tenant");
    s_publish (pub, "payment.succeeded", "t_42", "other event");
    s_publish (pub, "session.warning", "t_1", "warn");
    assert_int_equal (ppm_events_sub_wait (sub, 1000, s_seen, &seen), 1);
    assert_string_equal (seen.name, "session.warning");
    assert_string_equal (seen.tenant, "t_1");
    assert_string_equal (seen.data, "warn");
    s_publish (pub, "config.changed", "t_42", "mine");
    assert_int_equal (ppm_events_sub_wait (sub, 1000, s_seen, &seen), 1);
    assert_string_equal (seen.name, "config.changed");
    assert_string_equal (seen.tenant, "t_42");
    assert_int_equal (ppm_events_sub_wait (sub, 100, s_seen, &seen), 0);
    assert_int_equal (seen.count, 2);

    /* Malformed messages on a subscribed topic are dropped and counted. */
    zsock_t *raw = ppm_events_pub_sock (pub);
    zsock_send (raw, "ss", "session.bad", "not an envelope");
    zstr_send (raw, "session.one-frame");
    Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
    env.version = 1;
    env.kind = PPM__V1__KIND__KIND_EVENT;
    env.method = "session.ended";
    env.tenant_id = "t_1";
    uint8_t buf[128];
    size_t size = ppm__v1__envelope__pack (&env, buf);
    zsock_send (raw, "sb", "session.ended.t_2", buf, size); /* topic lies */
    assert_int_equal (ppm_events_sub_wait (sub, 300, s_seen, &seen), 0);
    assert_int_equal (ppm_events_sub_dropped (sub), 3);
    assert_int_equal (seen.count, 2);

    /* Delivery through a loop. */
    zloop_t *loop = zloop_new ();
    assert_int_equal (ppm_events_sub_attach (sub, loop, s_seen, &seen), 0);
    s_publish (pub, "session.ended", "t_9", "bye");
    s_loop_until (loop, &seen.count, 3, 2000);
    assert_int_equal (seen.count, 3);
    assert_string_equal (seen.tenant, "t_9");

    ppm_events_sub_destroy (&sub);
    ppm_events_sub_destroy (&sub);
    ppm_events_pub_destroy (&pub);
    ppm_events_pub_destroy (&pub);
    zloop_destroy (&loop);
}

/* ---- CURVE ------------------------------------------------------------ */

static void
s_curve_env (const char *server_secret, const char *client_secret, const char *accepted)
{
    setenv ("PPM_CURVE", "on", 1);
    setenv ("PPM_CURVE_SERVER_SECRET_KEY", server_secret, 1);
    setenv ("PPM_CURVE_SECRET_KEY", client_secret, 1);
    setenv ("PPM_CURVE_CLIENT_KEYS", accepted, 1);
    const char *error = NULL;
    assert_int_equal (ppm_curve_init (&error), 0);
    assert_true (ppm_curve_enabled ());
}

static void
s_curve_off (void)
{
    ppm_curve_shutdown ();
    unsetenv ("PPM_CURVE");
    unsetenv ("PPM_CURVE_SERVER_SECRET_KEY");
    unsetenv ("PPM_CURVE_SECRET_KEY");
    unsetenv ("PPM_CURVE_CLIENT_KEYS");
    const char *error = NULL;
    assert_int_equal (ppm_curve_init (&error), 0);
    assert_false (ppm_curve_enabled ());
}

static void
test_curve (void **state)
{
    (void)state;
    char server_public[41], server_secret[41];
    char client_public[41], client_secret[41];
    char other_public[41], other_secret[41];
    assert_int_equal (ppm_curve_keypair (server_public, server_secret), 0);
    assert_int_equal (ppm_curve_keypair (client_public, client_secret), 0);
    assert_int_equal (ppm_curve_keypair (other_public, other_secret), 0);

    /* An accepted client key: RPC and events work, encrypted. */
    s_curve_env (server_secret, client_secret, client_public);
    char *endpoint;
    zactor_t *server = s_server_start (&endpoint);
    ppm_rpc_client_t *client = ppm_rpc_client_new (endpoint);
    char *text = NULL;
    ppm_status_t *status = s_echo_sync (client, "secret", 0, 3000, &text);
    assert_null (status);
    assert_string_equal (text, "secret");
    free (text);
    ppm_rpc_client_destroy (&client);

    ppm_events_pub_t *pub = ppm_events_pub_new ("tcp://127.0.0.1:*");
    ppm_events_sub_t *sub = ppm_events_sub_new (ppm_events_pub_endpoint (pub));
    ppm_events_subscribe (sub, "");
    s_seen_t seen = {0};
    int64_t until = zclock_mono () + 3000;
    while (seen.count == 0 && zclock_mono () < until) {
        s_publish (pub, "session.active", "t_1", "over curve");
        ppm_events_sub_wait (sub, 20, s_seen, &seen);
    }
    assert_string_equal (seen.data, "over curve");
    ppm_events_sub_destroy (&sub);
    ppm_events_pub_destroy (&pub);
    zactor_destroy (&server);
    zstr_free (&endpoint);

    /* A client key the server does not accept: no answer, and the refusal
       is counted by the server's loop. */
    s_curve_env (server_secret, other_secret, client_public);
    server = s_server_start (&endpoint);
    uint64_t before = ppm_curve_auth_failures ();
    ppm_counter_t *refused =
        ppm_metrics_counter (ppm_metrics_global (), "ppm_curve_auth_failures_total", "", NULL);
    uint64_t refused_before = ppm_counter_value (refused);
    client = ppm_rpc_client_new (endpoint);
    status = s_echo_sync (client, "refused", 0, 500, NULL);
    assert_non_null (status);
    assert_int_equal (ppm_status_code (status), PPM_DEADLINE_EXCEEDED);
    ppm_status_destroy (&status);
    until = zclock_mono () + 2000;
    while (ppm_curve_auth_failures () == before && zclock_mono () < until)
        zclock_sleep (10);
    assert_true (ppm_curve_auth_failures () > before);
    /* ... and the metric follows (updated right after, in the server's loop). */
    until = zclock_mono () + 2000;
    while (ppm_counter_value (refused) == refused_before && zclock_mono () < until)
        zclock_sleep (10);
    assert_true (ppm_counter_value (refused) > refused_before);
    ppm_rpc_client_destroy (&client);
    zactor_destroy (&server);
    zstr_free (&endpoint);
    s_curve_off ();
}

int
main (void)
{
    setenv ("PPM_RPC_MAX_MSG", "65536", 1);
    zsys_init ();
    zsys_set_logstream (NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_round_trip_and_context),
        cmocka_unit_test (test_many_in_flight),
        cmocka_unit_test (test_deadline_expires),
        cmocka_unit_test (test_unknown_method),
        cmocka_unit_test (test_deadline_on_arrival),
        cmocka_unit_test (test_garbage_and_oversize),
        cmocka_unit_test (test_mutated_envelopes),
        cmocka_unit_test (test_idempotent_retry),
        cmocka_unit_test (test_metrics),
        cmocka_unit_test (test_sync_dispatches_others_and_destroy_cancels),
        cmocka_unit_test (test_several_endpoints),
        cmocka_unit_test (test_api_edges),
        cmocka_unit_test (test_events_by_prefix),
        cmocka_unit_test (test_curve),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
