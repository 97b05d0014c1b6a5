/*  ppm_rpc: see ppm_rpc.h and docs/PROTOCOL.md.

    Server: a ROUTER read from the service's zloop. Each wake-up drains the
    socket (ZeroMQ's fd is edge-triggered), and every message goes through
    one checker that either rejects it with an error reply (or drops it when
    not even a request id can be read) or turns it into a ppm_rpc_call_t for
    the method's handler. Calls a handler keeps are listed, so that a call
    outliving its server fails cleanly instead of touching freed memory.

    Client: a DEALER; pending calls live in a hash keyed by request id. One
    one-shot zloop timer is armed for the earliest event among them (a
    deadline or an idempotent re-send), so an idle client costs nothing.
    The same expiry code runs inside the synchronous call, which polls the
    DEALER itself (zpoller) and dispatches every reply it reads.
*/
#include "ppm_rpc.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "ppm_clock.h"
#include "ppm_curve.h"
#include "ppm_log.h"
#include "ppm_metrics.h"

#define S_MAX_MSG_DEFAULT    (1024 * 1024)
#define S_MAX_MSG_MIN        1024
#define S_MAX_MSG_MAX        (256 * 1024 * 1024)
#define S_HWM                100000
#define S_BACKOFF_FIRST_MS   50
#define S_BACKOFF_MAX_MS     1000
#define S_POOL_MAX           256 /* spare calls / pending entries kept for reuse */
#define S_ERROR_TEXT_MAX     PPM_STATUS_TEXT_MAX
#define S_METHOD_ECHO_MAX    64
#define S_CLIENT_METHODS_MAX 256 /* method names a client keeps as metric labels */

/* ---- metrics (docs/METRICS.md) ----------------------------------------- */

/* Registered once per process in ppm_metrics_global (). The label values
   the hot path passes are strings that live as long as the process or
   the server/client (method names from the server's table, interned on
   the client, code names from ppm_code_name), so cardinality stays
   bounded: an unknown method is only counted as a rejection. */
static struct {
    ppm_counter_t *server_requests;     /* {method,code} */
    ppm_histogram_t *server_duration;   /* {method} */
    ppm_counter_t *server_rejected;     /* {reason} */
    ppm_counter_t *client_requests;     /* {method,code} */
    ppm_histogram_t *client_duration;   /* {method} */
    ppm_counter_t *client_retries;      /* {method} */
    ppm_counter_t *curve_auth_failures; /* no labels */
} s_metrics;

static pthread_once_t s_metrics_once = PTHREAD_ONCE_INIT;

static void
s_metrics_init (void)
{
    ppm_metrics_t *reg = ppm_metrics_global ();
    s_metrics.server_requests =
        ppm_metrics_counter (reg, "ppm_rpc_server_requests_total",
                             "RPC requests answered, by status code name", "method,code");
    s_metrics.server_duration = ppm_metrics_histogram (
        reg, "ppm_rpc_server_duration_seconds", "Time from arrival to reply", "method", NULL, 0);
    s_metrics.server_rejected =
        ppm_metrics_counter (reg, "ppm_rpc_server_rejected_total",
                             "Requests answered or dropped without reaching a handler", "reason");
    s_metrics.client_requests =
        ppm_metrics_counter (reg, "ppm_rpc_client_requests_total",
                             "Calls made to other services, by outcome", "method,code");
    s_metrics.client_duration = ppm_metrics_histogram (
        reg, "ppm_rpc_client_duration_seconds", "Round trip of calls made", "method", NULL, 0);
    s_metrics.client_retries = ppm_metrics_counter (reg, "ppm_rpc_client_retries_total",
                                                    "Re-sends of idempotent calls", "method");
    s_metrics.curve_auth_failures = ppm_metrics_counter (
        reg, "ppm_curve_auth_failures_total", "Connections refused by CURVE authentication", NULL);
}

static void
s_metrics_ready (void)
{
    pthread_once (&s_metrics_once, s_metrics_init);
}

/* Rejection reasons of ppm_rpc_server_rejected_total. */
#define S_REJECT_MALFORMED      "malformed"
#define S_REJECT_UNKNOWN_METHOD "unknown_method"
#define S_REJECT_DEADLINE       "deadline"
#define S_REJECT_VERSION        "version"

/* ---- shared helpers --------------------------------------------------- */

/* A bump allocator for libprotobuf-c: unpacking an envelope takes one
   allocation (the buffer's owner) instead of one per field; what does not
   fit goes to malloc. Freeing inside the buffer is a no-op. */
#define S_ARENA_SIZE 2048
/* A call's own arena: small enough that the whole call stays in glibc's
   per-thread cache (<= 1032 bytes), large enough for a typical request. */
#define S_CALL_ARENA_SIZE 896

typedef struct {
    ProtobufCAllocator base; /* handed to libprotobuf-c */
    uint8_t *buf;            /* the memory */
    size_t size;             /* its size */
    size_t used;             /* bytes handed out */
} s_arena_t;

static void *
s_arena_alloc (void *data, size_t size)
{
    s_arena_t *arena = (s_arena_t *)data;
    size_t aligned = (size + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
    if (aligned <= arena->size - arena->used) {
        void *p = arena->buf + arena->used;
        arena->used += aligned;
        return p;
    }
    return malloc (size);
}

static void
s_arena_free (void *data, void *pointer)
{
    s_arena_t *arena = (s_arena_t *)data;
    uintptr_t p = (uintptr_t)pointer;
    uintptr_t start = (uintptr_t)arena->buf;
    if (p >= start && p < start + arena->size)
        return;
    free (pointer);
}

static void
s_arena_init (s_arena_t *arena, uint8_t *buf, size_t size)
{
    arena->base.alloc = s_arena_alloc;
    arena->base.free = s_arena_free;
    arena->base.allocator_data = arena;
    arena->buf = buf;
    arena->size = size;
    arena->used = 0;
}

static int64_t
s_mono_ms (void)
{
    return ppm_clock_real_mono_us () / 1000;
}

/* Reads PPM_RPC_MAX_MSG. Returns the cap, or -1 (logged) when invalid. */
static int
s_max_msg (void)
{
    const char *text = getenv ("PPM_RPC_MAX_MSG");
    if (!text || !*text)
        return S_MAX_MSG_DEFAULT;
    char *end = NULL;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    if (errno || end == text || *end || value < S_MAX_MSG_MIN || value > S_MAX_MSG_MAX) {
        ppm_log_error ("PPM_RPC_MAX_MSG: \"%.32s\" is not a byte count in [%d, %d]", text,
                       S_MAX_MSG_MIN, S_MAX_MSG_MAX);
        return -1;
    }
    return (int)value;
}

/* Packs env into a new frame. */
static zframe_t *
s_envelope_frame (const Ppm__V1__Envelope *env)
{
    size_t size = ppm__v1__envelope__get_packed_size (env);
    zframe_t *frame = zframe_new (NULL, size);
    assert (frame);
    if (size)
        ppm__v1__envelope__pack (env, zframe_data (frame));
    return frame;
}

/* Packs msg (NULL = empty) into scratch when it fits, else into a
   malloc'ed buffer; *size gets its size. Release with s_pack_free. */
#define S_SCRATCH_SIZE 1024

static uint8_t *
s_pack_message (const ProtobufCMessage *msg, size_t *size, uint8_t *scratch)
{
    *size = 0;
    if (!msg)
        return NULL;
    *size = protobuf_c_message_get_packed_size (msg);
    uint8_t *buf = *size <= S_SCRATCH_SIZE ? scratch : (uint8_t *)malloc (*size);
    assert (buf);
    if (*size)
        protobuf_c_message_pack (msg, buf);
    return buf;
}

static void
s_pack_free (uint8_t *buf, const uint8_t *scratch)
{
    if (buf != scratch)
        free (buf);
}

/* Reads one varint at *pos; false when truncated or longer than 10 bytes. */
static bool
s_varint (const uint8_t *data, size_t size, size_t *pos, uint64_t *value)
{
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*pos >= size)
            return false;
        uint8_t byte = data[(*pos)++];
        result |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *value = result;
            return true;
        }
    }
    return false;
}

/* Walks a protobuf encoding that libprotobuf-c refused, looking for field
   4 (request_id) before the first malformed byte. */
static bool
s_scan_request_id (const uint8_t *data, size_t size, uint64_t *id)
{
    size_t pos = 0;
    while (pos < size) {
        uint64_t key;
        uint64_t value;
        if (!s_varint (data, size, &pos, &key))
            return false;
        uint64_t field = key >> 3;
        switch (key & 7) {
            case 0:
                if (!s_varint (data, size, &pos, &value))
                    return false;
                if (field == 4) {
                    *id = value;
                    return true;
                }
                break;
            case 1:
                if (size - pos < 8)
                    return false;
                pos += 8;
                break;
            case 2:
                if (!s_varint (data, size, &pos, &value) || value > size - pos)
                    return false;
                pos += (size_t)value;
                break;
            case 5:
                if (size - pos < 4)
                    return false;
                pos += 4;
                break;
            default:
                return false;
        }
    }
    return false;
}

/* Trace ids must be unique, not secret: a per-thread splitmix64 seeded
   once from getrandom saves a system call per request. */
static __thread uint64_t s_trace_state;
static __thread bool s_trace_seeded;

static uint64_t
s_trace_next (void)
{
    if (!s_trace_seeded) {
        size_t got = 0;
        uint8_t *seed = (uint8_t *)&s_trace_state;
        while (got < sizeof s_trace_state) {
            ssize_t rc = getrandom (seed + got, sizeof s_trace_state - got, 0);
            if (rc < 0 && errno == EINTR)
                continue;
            assert (rc > 0);
            got += (size_t)rc;
        }
        s_trace_seeded = true;
    }
    uint64_t z = (s_trace_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void
ppm_rpc_new_trace_id (char out[33])
{
    static const char hex[] = "0123456789abcdef";
    for (int half = 0; half < 2; half++) {
        uint64_t bits = s_trace_next ();
        for (int i = 0; i < 16; i++) {
            out[half * 16 + i] = hex[bits & 15];
            bits >>= 4;
        }
    }
    out[32] = '\0';
}

/* ---- server ----------------------------------------------------------- */

typedef struct {
    ppm_rpc_handler_fn *fn; /* the method's handler */
    void *arg;              /* its argument */
    char *name;             /* the method's name: its metric label value */
} s_method_t;

struct _ppm_rpc_server_t {
    zloop_t *loop;         /* the service's loop (not ours) */
    zsock_t *router;       /* bound ROUTER */
    zactor_t *curve_watch; /* counts refused CURVE handshakes, or NULL */
    char *endpoint;        /* the endpoint actually bound */
    int port;              /* its TCP port, 0 for other transports */
    zhashx_t *methods;     /* method name -> s_method_t */
    zlistx_t *calls;       /* calls handed to handlers and not yet ended */
    ppm_rpc_call_t *spare; /* ended calls kept for reuse (linked by next) */
    size_t spare_count;    /* how many */
    uint64_t requests;     /* messages read */
    uint64_t rejected;     /* messages answered or dropped without a handler */
};

struct _ppm_rpc_call_t {
    ppm_rpc_server_t *server;    /* NULL once the server is destroyed */
    ppm_rpc_call_t *next;        /* in server->spare while unused */
    s_method_t *method;          /* the method's entry (metric labels) */
    int64_t arrived_us;          /* when it was read, monotonic us */
    void *handle;                /* our entry in server->calls */
    zframe_t *routing_id;        /* the ROUTER peer to answer */
    Ppm__V1__Envelope *envelope; /* the unpacked request, in arena */
    s_arena_t arena;             /* where envelope was unpacked */
    _Alignas(max_align_t) uint8_t arena_buf[S_CALL_ARENA_SIZE]; /* its memory */
};

static void
s_method_destroy (void **item)
{
    s_method_t *method = (s_method_t *)*item;
    if (method)
        free (method->name);
    free (method);
    *item = NULL;
}

/* Sends a REPLY envelope to routing_id (taken). Returns 0 or -1. */
static int
s_server_send (ppm_rpc_server_t *self, zframe_t **routing_id_p, const Ppm__V1__Envelope *request,
               uint64_t request_id, const ppm_status_t *status, const uint8_t *payload, size_t size)
{
    Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
    env.version = PPM_RPC_VERSION;
    env.kind = PPM__V1__KIND__KIND_REPLY;
    env.request_id = request_id;
    if (request) {
        env.method = request->method;
        env.trace_id = request->trace_id;
        env.tenant_id = request->tenant_id;
    }
    Ppm__V1__Status *status_proto = NULL;
    if (status && ppm_status_code (status) != PPM_OK) {
        status_proto = ppm_status_to_proto (status);
        env.status = status_proto;
    } else if (payload) {
        env.payload.data = (uint8_t *)payload;
        env.payload.len = size;
    }
    zframe_t *body = s_envelope_frame (&env);
    ppm_status_proto_free (&status_proto);

    int rc = zframe_send (routing_id_p, self->router, ZFRAME_MORE);
    if (rc == 0)
        rc = zframe_send (&body, self->router, 0);
    zframe_destroy (routing_id_p);
    zframe_destroy (&body);
    return rc;
}

/* Answers a request the server refuses itself. */
static void s_server_reject (ppm_rpc_server_t *self, const char *reason, zframe_t **routing_id_p,
                             const Ppm__V1__Envelope *request, uint64_t request_id, ppm_code_t code,
                             const char *fmt, ...) __attribute__ ((format (printf, 7, 8)));

static void
s_server_reject (ppm_rpc_server_t *self, const char *reason, zframe_t **routing_id_p,
                 const Ppm__V1__Envelope *request, uint64_t request_id, ppm_code_t code,
                 const char *fmt, ...)
{
    char text[S_ERROR_TEXT_MAX];
    va_list args;
    va_start (args, fmt);
    vsnprintf (text, sizeof text, fmt, args);
    va_end (args);
    ppm_status_t *status = ppm_status_new (code, "%s", text);
    self->rejected++;
    ppm_counter_inc (s_metrics.server_rejected, 1, reason);
    ppm_log_debug ("rpc: rejected request %llu: %s %s", (unsigned long long)request_id,
                   ppm_code_name (code), text);
    s_server_send (self, routing_id_p, request, request_id, status, NULL, 0);
    ppm_status_destroy (&status);
}

static void
s_server_drop (ppm_rpc_server_t *self, const char *why)
{
    self->rejected++;
    ppm_counter_inc (s_metrics.server_rejected, 1, S_REJECT_MALFORMED);
    ppm_log_debug ("rpc: dropped a message: %s", why);
}

/* Frees a call's memory, or keeps it for the next request. */
static void
s_call_release (ppm_rpc_call_t *call)
{
    ppm_rpc_server_t *server = call->server;
    if (server && server->spare_count < S_POOL_MAX) {
        call->next = server->spare;
        server->spare = call;
        server->spare_count++;
    } else
        free (call);
}

/* Checks one request (routing id, first body frame, number of body
   frames) and hands it to its handler or rejects it. Takes the frames. */
static void
s_server_dispatch (ppm_rpc_server_t *self, zframe_t **routing_id_p, zframe_t **body_p,
                   size_t frames, int64_t arrived_us)
{
    zframe_t *routing_id = *routing_id_p;
    zframe_t *body = *body_p;
    *routing_id_p = NULL;
    *body_p = NULL;
    self->requests++;
    /* Calls are reused: with many in flight, glibc's small per-thread
       cache runs dry and every call would go through the arena's locks. */
    ppm_rpc_call_t *call = self->spare;
    if (call) {
        self->spare = call->next;
        self->spare_count--;
    } else {
        call = (ppm_rpc_call_t *)malloc (sizeof (ppm_rpc_call_t));
        assert (call);
    }
    call->server = self;
    call->next = NULL;
    call->method = NULL;
    call->arrived_us = arrived_us;
    call->handle = NULL;
    call->routing_id = NULL;
    s_arena_init (&call->arena, call->arena_buf, sizeof call->arena_buf);
    Ppm__V1__Envelope *env = NULL;
    if (!body) {
        s_server_drop (self, "no body frame");
        goto cleanup;
    }
    const uint8_t *data = zframe_data (body);
    size_t size = zframe_size (body);
    env = size ? ppm__v1__envelope__unpack (&call->arena.base, size, data) : NULL;
    if (!env || frames != 1) {
        uint64_t id = 0;
        bool found = env ? true : s_scan_request_id (data, size, &id);
        if (env)
            id = env->request_id;
        if (!found)
            s_server_drop (self, frames != 1 ? "more than one body frame" : "not an envelope");
        else if (frames != 1)
            s_server_reject (self, S_REJECT_MALFORMED, &routing_id, env, id, PPM_INVALID_ARGUMENT,
                             "a request is one frame, got %zu", frames);
        else
            s_server_reject (self, S_REJECT_MALFORMED, &routing_id, NULL, id, PPM_INVALID_ARGUMENT,
                             "the request is not a valid ppm.v1.Envelope");
        goto cleanup;
    }
    if (env->version != PPM_RPC_VERSION) {
        s_server_reject (self, S_REJECT_VERSION, &routing_id, env, env->request_id,
                         PPM_INVALID_ARGUMENT,
                         "envelope version %u is not supported (this server speaks %d)",
                         env->version, PPM_RPC_VERSION);
        goto cleanup;
    }
    if (env->kind != PPM__V1__KIND__KIND_REQUEST) {
        s_server_reject (self, S_REJECT_MALFORMED, &routing_id, env, env->request_id,
                         PPM_INVALID_ARGUMENT, "envelope kind %d is not KIND_REQUEST",
                         (int)env->kind);
        goto cleanup;
    }
    s_method_t *method = (s_method_t *)zhashx_lookup (self->methods, env->method);
    if (!method) {
        s_server_reject (self, S_REJECT_UNKNOWN_METHOD, &routing_id, env, env->request_id,
                         PPM_UNIMPLEMENTED, "unknown method \"%.*s\"", S_METHOD_ECHO_MAX,
                         env->method);
        goto cleanup;
    }
    if (env->deadline_ms != 0 && env->deadline_ms <= ppm_clock_real_ms ()) {
        s_server_reject (self, S_REJECT_DEADLINE, &routing_id, env, env->request_id,
                         PPM_DEADLINE_EXCEEDED, "the deadline passed before the request was read");
        goto cleanup;
    }
    zframe_destroy (&body);
    call->routing_id = routing_id;
    call->envelope = env;
    call->method = method;
    call->handle = zlistx_add_end (self->calls, call);
    ppm_rpc_call_log_context (call);
    method->fn (call, method->arg);
    ppm_log_context (NULL, NULL);
    return;

cleanup:
    if (env)
        ppm__v1__envelope__free_unpacked (env, &call->arena.base);
    s_call_release (call);
    zframe_destroy (&routing_id);
    zframe_destroy (&body);
}

static int
s_server_readable (zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    ppm_rpc_server_t *self = (ppm_rpc_server_t *)arg;
    /* RCVTIMEO is 0: zframe_recv returns NULL once the socket is empty.
       A message's parts arrive together, so none is left half read. */
    /* One clock read per wake-up: the requests drained together arrived
       together as far as the duration metric can tell. */
    int64_t arrived_us = ppm_clock_real_mono_us ();
    zframe_t *routing_id = zframe_recv (sock);
    while (routing_id) {
        zframe_t *body = NULL;
        size_t frames = 0;
        bool more = zframe_more (routing_id);
        while (more) {
            zframe_t *part = zframe_recv (sock);
            if (!part)
                break;
            frames++;
            more = zframe_more (part);
            if (!body)
                body = part;
            else
                zframe_destroy (&part);
        }
        s_server_dispatch (self, &routing_id, &body, frames, arrived_us);
        routing_id = zframe_recv (sock);
    }
    return 0;
}

static int
s_curve_watch_readable (zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    (void)sock;
    uint64_t before = ppm_curve_auth_failures ();
    int rc = ppm_curve_watch_handle ((zactor_t *)arg);
    uint64_t after = ppm_curve_auth_failures ();
    /* ppm_curve counts process-wide; the difference is this watch's. */
    if (after > before)
        ppm_counter_inc (s_metrics.curve_auth_failures, after - before);
    return rc;
}

static void
s_sys_ping (ppm_rpc_call_t *call, void *arg)
{
    (void)arg;
    ppm_rpc_call_reply (&call, NULL);
}

ppm_rpc_server_t *
ppm_rpc_server_new (zloop_t *loop, const char *endpoint)
{
    if (!loop || !endpoint || !*endpoint)
        return NULL;
    int max_msg = s_max_msg ();
    if (max_msg < 0)
        return NULL;
    s_metrics_ready ();
    ppm_rpc_server_t *self = (ppm_rpc_server_t *)zmalloc (sizeof (ppm_rpc_server_t));
    assert (self);
    self->loop = loop;
    self->router = zsock_new (ZMQ_ROUTER);
    assert (self->router);
    zsock_set_maxmsgsize (self->router, max_msg);
    zsock_set_sndhwm (self->router, S_HWM);
    zsock_set_rcvhwm (self->router, S_HWM);
    zsock_set_linger (self->router, 0);
    zsock_set_rcvtimeo (self->router, 0);
    /* CURVE (when PPM_CURVE is on) must be set before the bind. */
    if (ppm_curve_server (self->router, &self->curve_watch) == -1) {
        ppm_log_error ("rpc: cannot make %s a CURVE server", endpoint);
        goto failed;
    }
    if (self->curve_watch && zloop_reader (loop, zactor_sock (self->curve_watch),
                                           s_curve_watch_readable, self->curve_watch) == -1)
        goto failed;
    if (zsock_bind (self->router, "%s", endpoint) == -1) {
        ppm_log_error ("rpc: cannot bind %s: %s", endpoint, zmq_strerror (zmq_errno ()));
        goto failed;
    }
    self->endpoint = zsock_last_endpoint (self->router);
    assert (self->endpoint);
    if (strncmp (self->endpoint, "tcp://", 6) == 0) {
        const char *colon = strrchr (self->endpoint, ':');
        if (colon)
            self->port = (int)strtol (colon + 1, NULL, 10);
    }
    self->methods = zhashx_new ();
    assert (self->methods);
    zhashx_set_destructor (self->methods, s_method_destroy);
    self->calls = zlistx_new ();
    assert (self->calls);
    if (zloop_reader (loop, self->router, s_server_readable, self) == -1)
        goto failed;
    ppm_rpc_server_handle (self, "sys.Ping", s_sys_ping, NULL);
    return self;

failed:
    ppm_rpc_server_destroy (&self);
    return NULL;
}

void
ppm_rpc_server_destroy (ppm_rpc_server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ppm_rpc_server_t *self = *self_p;
    if (self->calls) {
        if (zlistx_size (self->calls))
            ppm_log_warn ("rpc: server destroyed with %zu calls still held",
                          zlistx_size (self->calls));
        ppm_rpc_call_t *call = (ppm_rpc_call_t *)zlistx_first (self->calls);
        while (call) {
            call->server = NULL;
            call->handle = NULL;
            call->method = NULL; /* the table goes with the server */
            call = (ppm_rpc_call_t *)zlistx_next (self->calls);
        }
        zlistx_destroy (&self->calls);
    }
    if (self->loop && self->router)
        zloop_reader_end (self->loop, self->router);
    if (self->curve_watch) {
        /* The monitor goes before the socket it watches. */
        zloop_reader_end (self->loop, zactor_sock (self->curve_watch));
        zactor_destroy (&self->curve_watch);
    }
    zsock_destroy (&self->router);
    zhashx_destroy (&self->methods);
    while (self->spare) {
        ppm_rpc_call_t *next = self->spare->next;
        free (self->spare);
        self->spare = next;
    }
    zstr_free (&self->endpoint);
    free (self);
    *self_p = NULL;
}

int
ppm_rpc_server_handle (ppm_rpc_server_t *self, const char *method, ppm_rpc_handler_fn *fn,
                       void *arg)
{
    assert (self);
    if (!method || !*method || !fn || zhashx_lookup (self->methods, method))
        return -1;
    s_method_t *entry = (s_method_t *)zmalloc (sizeof (s_method_t));
    assert (entry);
    entry->fn = fn;
    entry->arg = arg;
    entry->name = strdup (method);
    assert (entry->name);
    zhashx_insert (self->methods, method, entry);
    return 0;
}

const char *
ppm_rpc_server_endpoint (ppm_rpc_server_t *self)
{
    assert (self);
    return self->endpoint;
}

int
ppm_rpc_server_port (ppm_rpc_server_t *self)
{
    assert (self);
    return self->port;
}

zsock_t *
ppm_rpc_server_sock (ppm_rpc_server_t *self)
{
    assert (self);
    return self->router;
}

uint64_t
ppm_rpc_server_requests (ppm_rpc_server_t *self)
{
    assert (self);
    return self->requests;
}

uint64_t
ppm_rpc_server_rejected (ppm_rpc_server_t *self)
{
    assert (self);
    return self->rejected;
}

/* ---- calls ------------------------------------------------------------ */

const char *
ppm_rpc_call_method (const ppm_rpc_call_t *call)
{
    assert (call);
    return call->envelope->method;
}

const char *
ppm_rpc_call_tenant (const ppm_rpc_call_t *call)
{
    assert (call);
    return call->envelope->tenant_id;
}

const char *
ppm_rpc_call_trace_id (const ppm_rpc_call_t *call)
{
    assert (call);
    return call->envelope->trace_id;
}

int64_t
ppm_rpc_call_deadline_ms (const ppm_rpc_call_t *call)
{
    assert (call);
    return call->envelope->deadline_ms;
}

uint64_t
ppm_rpc_call_request_id (const ppm_rpc_call_t *call)
{
    assert (call);
    return call->envelope->request_id;
}

const uint8_t *
ppm_rpc_call_payload (const ppm_rpc_call_t *call, size_t *size)
{
    assert (call);
    if (size)
        *size = call->envelope->payload.len;
    return call->envelope->payload.data;
}

ProtobufCMessage *
ppm_rpc_call_unpack (const ppm_rpc_call_t *call, const ProtobufCMessageDescriptor *descriptor)
{
    assert (call);
    assert (descriptor);
    static const uint8_t empty[1] = {0};
    const uint8_t *data = call->envelope->payload.data;
    return protobuf_c_message_unpack (descriptor, NULL, call->envelope->payload.len,
                                      data ? data : empty);
}

void
ppm_rpc_call_log_context (const ppm_rpc_call_t *call)
{
    assert (call);
    ppm_log_context (call->envelope->trace_id, call->envelope->tenant_id);
}

static void
s_call_destroy (ppm_rpc_call_t **call_p)
{
    ppm_rpc_call_t *call = *call_p;
    if (call->server && call->handle)
        zlistx_delete (call->server->calls, call->handle);
    zframe_destroy (&call->routing_id);
    ppm__v1__envelope__free_unpacked (call->envelope, &call->arena.base);
    s_call_release (call);
    *call_p = NULL;
}

/* Answers and destroys the call. */
static int
s_call_end (ppm_rpc_call_t **call_p, const ppm_status_t *status, const ProtobufCMessage *reply)
{
    assert (call_p && *call_p);
    ppm_rpc_call_t *call = *call_p;
    int rc = -1;
    if (call->method) {
        const char *name = call->method->name;
        ppm_counter_inc (s_metrics.server_requests, 1, name,
                         ppm_code_name (status ? ppm_status_code (status) : PPM_OK));
        ppm_histogram_observe (s_metrics.server_duration,
                               (double)(ppm_clock_real_mono_us () - call->arrived_us) / 1e6, name);
    }
    if (call->server) {
        size_t size = 0;
        uint8_t scratch[S_SCRATCH_SIZE];
        uint8_t *payload = status ? NULL : s_pack_message (reply, &size, scratch);
        rc = s_server_send (call->server, &call->routing_id, call->envelope,
                            call->envelope->request_id, status, payload, size);
        s_pack_free (payload, scratch);
    }
    s_call_destroy (call_p);
    return rc;
}

int
ppm_rpc_call_reply (ppm_rpc_call_t **call_p, const ProtobufCMessage *reply)
{
    return s_call_end (call_p, NULL, reply);
}

int
ppm_rpc_call_fail (ppm_rpc_call_t **call_p, ppm_status_t **status_p)
{
    ppm_status_t *status = status_p ? *status_p : NULL;
    if (status_p)
        *status_p = NULL;
    int rc =
        s_call_end (call_p, status && ppm_status_code (status) != PPM_OK ? status : NULL, NULL);
    ppm_status_destroy (&status);
    return rc;
}

int
ppm_rpc_call_error (ppm_rpc_call_t **call_p, ppm_code_t code, const char *fmt, ...)
{
    char text[S_ERROR_TEXT_MAX];
    va_list args;
    va_start (args, fmt);
    vsnprintf (text, sizeof text, fmt, args);
    va_end (args);
    ppm_status_t *status = ppm_status_new (code, "%s", text);
    return ppm_rpc_call_fail (call_p, &status);
}

void
ppm_rpc_call_discard (ppm_rpc_call_t **call_p)
{
    if (!call_p || !*call_p)
        return;
    s_call_destroy (call_p);
}

/* ---- client ----------------------------------------------------------- */

typedef struct _s_pending_t s_pending_t;
struct _s_pending_t {
    s_pending_t *next;    /* in the client's spare list while unused */
    uint64_t id;          /* request id; also the hash key */
    zframe_t *request;    /* packed envelope, kept while it may be re-sent */
    int64_t deadline;     /* local expiry, monotonic ms */
    int64_t resend_at;    /* next re-send, monotonic ms; INT64_MAX = never */
    int64_t backoff_ms;   /* interval before the re-send after that */
    ppm_rpc_reply_fn *fn; /* callback */
    void *arg;            /* its argument */
    const char *method;   /* interned method name (metric label) */
    int64_t sent_us;      /* first send, monotonic us */
};

struct _ppm_rpc_client_t {
    zsock_t *dealer;         /* connected DEALER */
    zpoller_t *poller;       /* on dealer, for synchronous calls */
    zloop_t *loop;           /* attached loop, or NULL */
    int timer_id;            /* armed one-shot timer, or -1 */
    int64_t timer_at;        /* when it fires, monotonic ms */
    int timeout_ms;          /* default per-call timeout */
    int backoff_first_ms;    /* first re-send interval of idempotent calls */
    int backoff_max_ms;      /* cap of the doubling interval */
    uint64_t next_id;        /* next request id */
    zhashx_t *pending;       /* request id -> s_pending_t */
    uint64_t dropped;        /* replies that matched no pending call or were malformed */
    uint64_t resent;         /* re-sends of idempotent requests */
    s_pending_t *spare;      /* finished entries kept for reuse */
    size_t spare_count;      /* how many */
    zhashx_t *methods;       /* method name -> its interned copy (metric labels) */
    const char *last_method; /* the last one interned: most calls repeat it */
};

/* The method name as a label value that lives as long as the client.
   Past S_CLIENT_METHODS_MAX distinct names (a caller building names at
   run time), further ones are counted as "_other". */
static const char *
s_client_method_label (ppm_rpc_client_t *self, const char *method)
{
    if (self->last_method && streq (self->last_method, method))
        return self->last_method;
    const char *label = (const char *)zhashx_lookup (self->methods, method);
    if (!label) {
        if (zhashx_size (self->methods) >= S_CLIENT_METHODS_MAX)
            return PPM_METRICS_OTHER;
        char *copy = strdup (method);
        assert (copy);
        zhashx_insert (self->methods, method, copy);
        label = copy;
    }
    self->last_method = label;
    return label;
}

static void
s_method_label_destroy (void **item)
{
    free (*item);
    *item = NULL;
}

static size_t
s_id_hash (const void *key)
{
    uint64_t id = *(const uint64_t *)key;
    return (size_t)(id * 0x9E3779B97F4A7C15ULL);
}

static int
s_id_compare (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void
s_pending_free (ppm_rpc_client_t *self, s_pending_t **item_p)
{
    s_pending_t *item = *item_p;
    if (!item)
        return;
    zframe_destroy (&item->request);
    if (self->spare_count < S_POOL_MAX) {
        item->next = self->spare;
        self->spare = item;
        self->spare_count++;
    } else
        free (item);
    *item_p = NULL;
}

/* Removes the call from pending, runs its callback, frees it. */
static void
s_pending_complete (ppm_rpc_client_t *self, s_pending_t *item, const ppm_status_t *status,
                    const uint8_t *payload, size_t size)
{
    zhashx_delete (self->pending, &item->id);
    ppm_counter_inc (s_metrics.client_requests, 1, item->method,
                     ppm_code_name (status ? ppm_status_code (status) : PPM_OK));
    ppm_histogram_observe (s_metrics.client_duration,
                           (double)(ppm_clock_real_mono_us () - item->sent_us) / 1e6, item->method);
    item->fn (status, status ? NULL : payload, status ? 0 : size, item->arg);
    s_pending_free (self, &item);
}

static int s_client_timer (zloop_t *loop, int timer_id, void *arg);

/* Arms the loop's timer for at, unless an earlier one is armed. */
static void
s_client_arm (ppm_rpc_client_t *self, int64_t at)
{
    if (!self->loop || at == INT64_MAX)
        return;
    if (self->timer_id != -1) {
        if (self->timer_at <= at)
            return;
        zloop_timer_end (self->loop, self->timer_id);
        self->timer_id = -1;
    }
    int64_t delay = at - s_mono_ms ();
    if (delay < 1)
        delay = 1;
    self->timer_id = zloop_timer (self->loop, (size_t)delay, 1, s_client_timer, self);
    self->timer_at = at;
}

static int64_t
s_pending_next (const s_pending_t *item)
{
    return item->resend_at < item->deadline ? item->resend_at : item->deadline;
}

/* Expires and re-sends what is due. Returns the next event's time.
   Expired calls are collected by id first and looked up again before each
   callback, because a callback may itself make calls (even synchronous
   ones, which run this function again). */
static int64_t
s_client_service (ppm_rpc_client_t *self)
{
    int64_t now = s_mono_ms ();
    int64_t next = INT64_MAX;
    uint64_t *expired = NULL;
    size_t expired_count = 0;
    s_pending_t *item = (s_pending_t *)zhashx_first (self->pending);
    while (item) {
        if (item->deadline <= now) {
            if (!expired) {
                expired = (uint64_t *)malloc (zhashx_size (self->pending) * sizeof (uint64_t));
                assert (expired);
            }
            expired[expired_count++] = item->id;
        } else {
            if (item->resend_at <= now) {
                zframe_t *copy = zframe_dup (item->request);
                if (zframe_send (&copy, self->dealer, ZFRAME_DONTWAIT) == 0) {
                    self->resent++;
                    ppm_counter_inc (s_metrics.client_retries, 1, item->method);
                }
                zframe_destroy (&copy);
                item->resend_at = now + item->backoff_ms;
                item->backoff_ms *= 2;
                if (item->backoff_ms > self->backoff_max_ms)
                    item->backoff_ms = self->backoff_max_ms;
                if (item->resend_at >= item->deadline)
                    item->resend_at = INT64_MAX;
            }
            int64_t at = s_pending_next (item);
            if (at < next)
                next = at;
        }
        item = (s_pending_t *)zhashx_next (self->pending);
    }
    if (expired_count) {
        ppm_status_t *status =
            ppm_status_new (PPM_DEADLINE_EXCEEDED, "no reply before the deadline");
        for (size_t i = 0; i < expired_count; i++) {
            item = (s_pending_t *)zhashx_lookup (self->pending, &expired[i]);
            if (item)
                s_pending_complete (self, item, status, NULL, 0);
        }
        ppm_status_destroy (&status);
    }
    free (expired);
    return next;
}

static int
s_client_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    ppm_rpc_client_t *self = (ppm_rpc_client_t *)arg;
    self->timer_id = -1;
    int64_t next = s_client_service (self);
    /* Callbacks may have armed a timer meanwhile; s_client_arm keeps the
       earlier one. */
    s_client_arm (self, next);
    return 0;
}

/* Handles one reply read from the DEALER (body = its first frame, frames
   = how many it had). Takes body. */
static void
s_client_dispatch (ppm_rpc_client_t *self, zframe_t **body_p, size_t frames)
{
    zframe_t *body = *body_p;
    *body_p = NULL;
    _Alignas(max_align_t) uint8_t arena_buf[S_ARENA_SIZE];
    s_arena_t arena;
    s_arena_init (&arena, arena_buf, sizeof arena_buf);
    Ppm__V1__Envelope *env = NULL;
    if (frames != 1 || zframe_size (body) == 0) {
        self->dropped++;
        goto cleanup;
    }
    env = ppm__v1__envelope__unpack (&arena.base, zframe_size (body), zframe_data (body));
    if (!env || env->version != PPM_RPC_VERSION || env->kind != PPM__V1__KIND__KIND_REPLY) {
        self->dropped++;
        goto cleanup;
    }
    s_pending_t *item = (s_pending_t *)zhashx_lookup (self->pending, &env->request_id);
    if (!item) {
        /* A late reply to an expired call, or a duplicate answer to a
           re-sent one: nobody waits for it. */
        self->dropped++;
        goto cleanup;
    }
    ppm_status_t *status = ppm_status_from_proto (env->status);
    s_pending_complete (self, item, status, env->payload.data, env->payload.len);
    ppm_status_destroy (&status);

cleanup:
    if (env)
        ppm__v1__envelope__free_unpacked (env, &arena.base);
    zframe_destroy (&body);
}

/* Reads every reply waiting (RCVTIMEO is 0: zframe_recv returns NULL once
   the socket is empty; a message's parts arrive together). */
static void
s_client_drain (ppm_rpc_client_t *self)
{
    zframe_t *body = zframe_recv (self->dealer);
    while (body) {
        size_t frames = 1;
        bool more = zframe_more (body);
        while (more) {
            zframe_t *part = zframe_recv (self->dealer);
            if (!part)
                break;
            frames++;
            more = zframe_more (part);
            zframe_destroy (&part);
        }
        s_client_dispatch (self, &body, frames);
        body = zframe_recv (self->dealer);
    }
}

static int
s_client_readable (zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    (void)sock;
    s_client_drain ((ppm_rpc_client_t *)arg);
    return 0;
}

ppm_rpc_client_t *
ppm_rpc_client_new (const char *endpoints)
{
    if (!endpoints || !*endpoints)
        return NULL;
    int max_msg = s_max_msg ();
    if (max_msg < 0)
        return NULL;
    s_metrics_ready ();
    ppm_rpc_client_t *self = (ppm_rpc_client_t *)zmalloc (sizeof (ppm_rpc_client_t));
    assert (self);
    self->timer_id = -1;
    self->timeout_ms = PPM_RPC_DEFAULT_TIMEOUT_MS;
    self->backoff_first_ms = S_BACKOFF_FIRST_MS;
    self->backoff_max_ms = S_BACKOFF_MAX_MS;
    self->next_id = 1;
    self->dealer = zsock_new (ZMQ_DEALER);
    assert (self->dealer);
    zsock_set_maxmsgsize (self->dealer, max_msg);
    zsock_set_sndhwm (self->dealer, S_HWM);
    zsock_set_rcvhwm (self->dealer, S_HWM);
    zsock_set_sndtimeo (self->dealer, 0);
    zsock_set_rcvtimeo (self->dealer, 0);
    zsock_set_linger (self->dealer, 0);
    if (ppm_curve_client (self->dealer) == -1 ||
        zsock_attach (self->dealer, endpoints, false) == -1) {
        ppm_log_error ("rpc: cannot connect to \"%s\"", endpoints);
        ppm_rpc_client_destroy (&self);
        return NULL;
    }
    self->poller = zpoller_new (self->dealer, NULL);
    assert (self->poller);
    self->pending = zhashx_new ();
    assert (self->pending);
    zhashx_set_key_duplicator (self->pending, NULL);
    zhashx_set_key_destructor (self->pending, NULL);
    zhashx_set_key_hasher (self->pending, s_id_hash);
    zhashx_set_key_comparator (self->pending, s_id_compare);
    self->methods = zhashx_new ();
    assert (self->methods);
    zhashx_set_destructor (self->methods, s_method_label_destroy);
    return self;
}

void
ppm_rpc_client_destroy (ppm_rpc_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ppm_rpc_client_t *self = *self_p;
    if (self->pending) {
        ppm_status_t *status = ppm_status_new (PPM_CANCELLED, "the client was destroyed");
        s_pending_t *item = (s_pending_t *)zhashx_first (self->pending);
        while (item) {
            s_pending_complete (self, item, status, NULL, 0);
            item = (s_pending_t *)zhashx_first (self->pending);
        }
        ppm_status_destroy (&status);
        zhashx_destroy (&self->pending);
    }
    while (self->spare) {
        s_pending_t *next = self->spare->next;
        free (self->spare);
        self->spare = next;
    }
    if (self->loop) {
        if (self->timer_id != -1)
            zloop_timer_end (self->loop, self->timer_id);
        zloop_reader_end (self->loop, self->dealer);
    }
    zpoller_destroy (&self->poller);
    zsock_destroy (&self->dealer);
    zhashx_destroy (&self->methods);
    free (self);
    *self_p = NULL;
}

void
ppm_rpc_client_set_timeout (ppm_rpc_client_t *self, int timeout_ms)
{
    assert (self);
    if (timeout_ms > 0)
        self->timeout_ms = timeout_ms;
}

void
ppm_rpc_client_set_backoff (ppm_rpc_client_t *self, int first_ms, int max_ms)
{
    assert (self);
    if (first_ms > 0)
        self->backoff_first_ms = first_ms;
    if (max_ms >= self->backoff_first_ms)
        self->backoff_max_ms = max_ms;
}

int
ppm_rpc_client_attach (ppm_rpc_client_t *self, zloop_t *loop)
{
    assert (self);
    if (!loop || self->loop)
        return -1;
    if (zloop_reader (loop, self->dealer, s_client_readable, self) == -1)
        return -1;
    self->loop = loop;
    int64_t next = INT64_MAX;
    s_pending_t *item = (s_pending_t *)zhashx_first (self->pending);
    while (item) {
        int64_t at = s_pending_next (item);
        if (at < next)
            next = at;
        item = (s_pending_t *)zhashx_next (self->pending);
    }
    s_client_arm (self, next);
    return 0;
}

zsock_t *
ppm_rpc_client_sock (ppm_rpc_client_t *self)
{
    assert (self);
    return self->dealer;
}

size_t
ppm_rpc_client_pending (ppm_rpc_client_t *self)
{
    assert (self);
    return zhashx_size (self->pending);
}

uint64_t
ppm_rpc_client_dropped (ppm_rpc_client_t *self)
{
    assert (self);
    return self->dropped;
}

uint64_t
ppm_rpc_client_resent (ppm_rpc_client_t *self)
{
    assert (self);
    return self->resent;
}

/* Sends a request and records it; returns the pending entry or NULL. */
static s_pending_t *
s_client_send (ppm_rpc_client_t *self, const ppm_rpc_req_t *req, const ProtobufCMessage *msg,
               ppm_rpc_reply_fn *fn, void *arg)
{
    if (!req || !req->method || !*req->method || !fn)
        return NULL;
    int timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : self->timeout_ms;
    char fresh_trace[33];
    const char *trace_id = req->trace_id;
    if (!trace_id || !*trace_id)
        trace_id = ppm_log_trace_id ();
    if (!trace_id || !*trace_id) {
        ppm_rpc_new_trace_id (fresh_trace);
        trace_id = fresh_trace;
    }
    size_t size = 0;
    uint8_t scratch[S_SCRATCH_SIZE];
    uint8_t *payload = s_pack_message (msg, &size, scratch);
    Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
    env.version = PPM_RPC_VERSION;
    env.kind = PPM__V1__KIND__KIND_REQUEST;
    env.method = (char *)req->method;
    env.request_id = self->next_id++;
    env.deadline_ms = ppm_clock_real_ms () + timeout_ms;
    env.trace_id = (char *)trace_id;
    env.tenant_id = (char *)(req->tenant ? req->tenant : "");
    env.payload.data = payload;
    env.payload.len = size;
    zframe_t *frame = s_envelope_frame (&env);
    s_pack_free (payload, scratch);

    zframe_t *copy = req->idempotent ? zframe_dup (frame) : NULL;
    int rc = zframe_send (&frame, self->dealer, ZFRAME_DONTWAIT);
    zframe_destroy (&frame);
    if (rc == -1) {
        zframe_destroy (&copy);
        return NULL;
    }
    s_pending_t *item = self->spare;
    if (item) {
        self->spare = item->next;
        self->spare_count--;
        memset (item, 0, sizeof *item);
    } else {
        item = (s_pending_t *)zmalloc (sizeof (s_pending_t));
        assert (item);
    }
    int64_t now_us = ppm_clock_real_mono_us ();
    int64_t now = now_us / 1000;
    item->id = env.request_id;
    item->method = s_client_method_label (self, req->method);
    item->sent_us = now_us;
    item->request = copy;
    item->deadline = now + timeout_ms;
    item->resend_at = INT64_MAX;
    item->backoff_ms = self->backoff_first_ms;
    if (req->idempotent && now + item->backoff_ms < item->deadline) {
        item->resend_at = now + item->backoff_ms;
        item->backoff_ms *= 2;
        if (item->backoff_ms > self->backoff_max_ms)
            item->backoff_ms = self->backoff_max_ms;
    }
    item->fn = fn;
    item->arg = arg;
    zhashx_insert (self->pending, &item->id, item);
    s_client_arm (self, s_pending_next (item));
    return item;
}

int
ppm_rpc_client_call (ppm_rpc_client_t *self, const ppm_rpc_req_t *req, const ProtobufCMessage *msg,
                     ppm_rpc_reply_fn *fn, void *arg)
{
    assert (self);
    return s_client_send (self, req, msg, fn, arg) ? 0 : -1;
}

typedef struct {
    bool done;                                    /* the reply or expiry came */
    ppm_status_t *status;                         /* copy of a failure */
    const ProtobufCMessageDescriptor *descriptor; /* reply type, or NULL */
    ProtobufCMessage *reply;                      /* unpacked reply */
} s_sync_t;

static ppm_status_t *
s_status_copy (const ppm_status_t *status)
{
    ppm_status_t *copy =
        ppm_status_new (ppm_status_code (status), "%s", ppm_status_message (status));
    for (size_t i = 0; i < ppm_status_field_count (status); i++)
        ppm_status_add_field (copy, ppm_status_field_name (status, i), "%s",
                              ppm_status_field_description (status, i));
    return copy;
}

static void
s_sync_reply (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    s_sync_t *sync = (s_sync_t *)arg;
    sync->done = true;
    if (status) {
        sync->status = s_status_copy (status);
        return;
    }
    if (!sync->descriptor)
        return;
    static const uint8_t empty[1] = {0};
    sync->reply =
        protobuf_c_message_unpack (sync->descriptor, NULL, size, payload ? payload : empty);
    if (!sync->reply)
        sync->status =
            ppm_status_new (PPM_INTERNAL, "the reply is not a valid %s", sync->descriptor->name);
}

ppm_status_t *
ppm_rpc_client_call_sync (ppm_rpc_client_t *self, const ppm_rpc_req_t *req,
                          const ProtobufCMessage *msg,
                          const ProtobufCMessageDescriptor *reply_descriptor,
                          ProtobufCMessage **reply_p)
{
    assert (self);
    if (reply_p)
        *reply_p = NULL;
    s_sync_t sync = {false, NULL, reply_p ? reply_descriptor : NULL, NULL};
    s_pending_t *item = s_client_send (self, req, msg, s_sync_reply, &sync);
    if (!item)
        return ppm_status_new (PPM_UNAVAILABLE, "the request could not be sent");
    uint64_t id = item->id;
    while (!sync.done) {
        int64_t next = s_client_service (self);
        if (sync.done)
            break;
        int64_t wait = next == INT64_MAX ? 1000 : next - s_mono_ms ();
        if (wait < 0)
            wait = 0;
        zpoller_wait (self->poller, (int)wait);
        if (zpoller_terminated (self->poller)) {
            item = (s_pending_t *)zhashx_lookup (self->pending, &id);
            if (item) {
                ppm_status_t *status = ppm_status_new (PPM_CANCELLED, "interrupted");
                s_pending_complete (self, item, status, NULL, 0);
                ppm_status_destroy (&status);
            }
            break;
        }
        s_client_drain (self);
    }
    /* Re-arm the loop's timer for calls that are still pending. */
    if (self->loop && zhashx_size (self->pending))
        s_client_arm (self, s_mono_ms () + 1);
    if (sync.status) {
        if (sync.reply)
            protobuf_c_message_free_unpacked (sync.reply, NULL);
        return sync.status;
    }
    if (reply_p)
        *reply_p = sync.reply;
    return NULL;
}
