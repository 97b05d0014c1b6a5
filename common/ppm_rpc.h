/*  ppm_rpc: request/reply between services over ZeroMQ ROUTER/DEALER.

    Wire (docs/PROTOCOL.md): the client's DEALER sends one frame holding a
    packed ppm.v1.Envelope (kind REQUEST, method, request id, absolute
    deadline, trace id, tenant, payload = the packed request message). The
    server's ROUTER answers on the same connection with one frame holding an
    Envelope of kind REPLY, the same request id and method, a Status and,
    when OK, the packed reply message.

    Server. A ppm_rpc_server_t binds a ROUTER and reads it from a zloop the
    service owns, so a service adds its other sockets, timers and fds (curl,
    hiredis) to the same loop and nothing blocks. For each well-formed
    request it looks up the method in its table and calls the handler with a
    ppm_rpc_call_t. The server itself answers, and stays up, when a frame is
    not a valid envelope (INVALID_ARGUMENT, when a request id can be read;
    otherwise the frame is dropped and counted), the method is unknown
    (UNIMPLEMENTED), or the deadline has already passed (DEADLINE_EXCEEDED).
    ZMQ_MAXMSGSIZE caps incoming messages (PPM_RPC_MAX_MSG, default 1 MiB):
    libzmq drops a peer that sends more. Every server also answers the
    built-in method "sys.Ping" (empty request, empty reply), for readiness
    checks. Before a handler runs, the call's trace id and tenant are made
    the thread's log context (ppm_log_context); it is cleared after.

    A handler owns the call it is given: it replies at once, or keeps the
    call and replies later (after a Stripe answer, say). Every call must end
    in exactly one ppm_rpc_call_reply / _fail / _error / _discard, which
    destroys it.

    Client. A ppm_rpc_client_t is a DEALER connected to one or more
    endpoints (DEALER spreads requests over them). Calls are asynchronous:
    each carries a request id, many may be in flight, and the callback runs
    from the loop the client is attached to when the reply arrives, or with
    DEADLINE_EXCEEDED when the deadline passes first. Requests marked
    idempotent are re-sent (same request id) while no reply has come and the
    deadline allows; others are sent once. A synchronous call is there for
    tools, tests and start-up code.

    Re-sends: an idempotent request is sent again, byte for byte (same
    request id), 50 ms after the first send, then after 100, 200, 400,
    800 ms and every second, as long as the re-send is before the deadline
    (ppm_rpc_client_set_backoff changes the numbers). DEALER sends each
    re-send to the next connected endpoint, so a dead server is skipped.
    The first reply wins; later ones, and replies to expired calls, are
    dropped silently (counted in ppm_rpc_client_dropped).

    CURVE: when PPM_CURVE is on (ppm_curve_init ran), the server's ROUTER is
    made a CURVE server before it binds (refused handshakes are counted from
    the same loop) and the client's DEALER a CURVE client before it
    connects; ppm_events does the same for PUB and SUB.

    Threads: a server, a client and their calls belong to the thread of the
    loop they are registered with; nothing here is shared across threads.
*/
#ifndef PPM_RPC_H_INCLUDED
#define PPM_RPC_H_INCLUDED

#include <czmq.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stdint.h>
#include "ppm_status.h"

#define PPM_RPC_VERSION            1
#define PPM_RPC_DEFAULT_TIMEOUT_MS 2000

typedef struct _ppm_rpc_server_t ppm_rpc_server_t;
typedef struct _ppm_rpc_call_t ppm_rpc_call_t;
typedef struct _ppm_rpc_client_t ppm_rpc_client_t;

/* ---- server ---------------------------------------------------------- */

/* Handler: owns call (see above); arg is what was given to _handle. */
typedef void (ppm_rpc_handler_fn) (ppm_rpc_call_t *call, void *arg);

/* Binds a ROUTER to endpoint (e.g. "tcp://127.0.0.1:*") and registers it
   with loop. Returns NULL when the bind fails. */
ppm_rpc_server_t *ppm_rpc_server_new (zloop_t *loop, const char *endpoint);
/* Unregisters and closes. Calls still held by handlers must be ended
   before. Safe on NULL and twice. */
void ppm_rpc_server_destroy (ppm_rpc_server_t **self_p);
/* Registers method ("rate.Quote"). Returns -1 if already registered. */
int ppm_rpc_server_handle (ppm_rpc_server_t *self, const char *method, ppm_rpc_handler_fn *fn,
                           void *arg);
/* The endpoint actually bound ("tcp://127.0.0.1:40123"), and its port. */
const char *ppm_rpc_server_endpoint (ppm_rpc_server_t *self);
int ppm_rpc_server_port (ppm_rpc_server_t *self);
/* The ROUTER socket, e.g. to set CURVE options before binding elsewhere. */
zsock_t *ppm_rpc_server_sock (ppm_rpc_server_t *self);
/* Counters for tests and metrics: messages read from the ROUTER, and
   those of them answered or dropped by the server itself (malformed,
   unknown method, expired) instead of being given to a handler. */
uint64_t ppm_rpc_server_requests (ppm_rpc_server_t *self);
uint64_t ppm_rpc_server_rejected (ppm_rpc_server_t *self);

/* Call accessors; strings are borrowed and live as long as the call. They
   are never NULL: an absent tenant or trace id reads as "". */
const char *ppm_rpc_call_method (const ppm_rpc_call_t *call);
const char *ppm_rpc_call_tenant (const ppm_rpc_call_t *call);
const char *ppm_rpc_call_trace_id (const ppm_rpc_call_t *call);
int64_t ppm_rpc_call_deadline_ms (const ppm_rpc_call_t *call);
uint64_t ppm_rpc_call_request_id (const ppm_rpc_call_t *call);
const uint8_t *ppm_rpc_call_payload (const ppm_rpc_call_t *call, size_t *size);
/* Unpacks the payload; NULL when it is not a valid message of that type.
   The caller frees the result with protobuf_c_message_free_unpacked. */
ProtobufCMessage *ppm_rpc_call_unpack (const ppm_rpc_call_t *call,
                                       const ProtobufCMessageDescriptor *descriptor);
/* Makes the call's trace id and tenant this thread's log context. */
void ppm_rpc_call_log_context (const ppm_rpc_call_t *call);

/* Ends the call with OK and reply (NULL = empty payload). Destroys the
   call and NULLs *call_p. Returns -1 if the reply could not be sent. */
int ppm_rpc_call_reply (ppm_rpc_call_t **call_p, const ProtobufCMessage *reply);
/* Ends the call with a status (taken, *status_p NULLed). */
int ppm_rpc_call_fail (ppm_rpc_call_t **call_p, ppm_status_t **status_p);
/* Shortcut: ends the call with code and a printf-style message. */
int ppm_rpc_call_error (ppm_rpc_call_t **call_p, ppm_code_t code, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));
/* Ends the call without any answer (the client's deadline or re-send
   deals with it): load shedding, tests of lost replies. Safe on NULL. */
void ppm_rpc_call_discard (ppm_rpc_call_t **call_p);

/* ---- client ---------------------------------------------------------- */

typedef struct {
    const char *method;   /* required */
    const char *tenant;   /* NULL for tenant-less methods */
    const char *trace_id; /* NULL: this thread's log context, else a new one */
    int timeout_ms;       /* 0: the client's default */
    bool idempotent;      /* may be re-sent until the deadline */
} ppm_rpc_req_t;

/* Reply callback. status is NULL when OK (then payload/size hold the
   packed reply); otherwise payload is NULL. Both are borrowed. The
   callback may make new calls, but must not destroy the client. */
typedef void (ppm_rpc_reply_fn) (const ppm_status_t *status, const uint8_t *payload, size_t size,
                                 void *arg);

/* Connects a DEALER to a comma-separated list of endpoints. NULL when
   endpoints is empty or malformed, or PPM_RPC_MAX_MSG is invalid. */
ppm_rpc_client_t *ppm_rpc_client_new (const char *endpoints);
/* Pending calls get their callback with CANCELLED first. Safe twice.
   Destroy the client before the loop it is attached to. */
void ppm_rpc_client_destroy (ppm_rpc_client_t **self_p);
/* Default timeout of calls whose timeout_ms is 0 (initially
   PPM_RPC_DEFAULT_TIMEOUT_MS). Values <= 0 are ignored. */
void ppm_rpc_client_set_timeout (ppm_rpc_client_t *self, int timeout_ms);
/* Re-send schedule of idempotent calls: first after first_ms (default 50),
   each next interval doubled up to max_ms (default 1000). */
void ppm_rpc_client_set_backoff (ppm_rpc_client_t *self, int first_ms, int max_ms);
/* Registers the socket and a deadline timer with loop (for async calls).
   Without a loop, callbacks and expiries of async calls only run inside
   ppm_rpc_client_call_sync. Returns -1 when already attached. */
int ppm_rpc_client_attach (ppm_rpc_client_t *self, zloop_t *loop);
/* The DEALER, for socket options (CURVE is already applied). Do not read
   from it: replies are this module's (its RCVTIMEO is 0). */
zsock_t *ppm_rpc_client_sock (ppm_rpc_client_t *self);
/* Number of calls sent and not yet answered or expired. */
size_t ppm_rpc_client_pending (ppm_rpc_client_t *self);
/* Replies dropped (late, duplicate or malformed), and re-sends made. */
uint64_t ppm_rpc_client_dropped (ppm_rpc_client_t *self);
uint64_t ppm_rpc_client_resent (ppm_rpc_client_t *self);

/* Sends a request; fn runs later from the attached loop (exactly once).
   Returns 0, or -1 when the request could not be packed or sent (fn is
   then not called). msg may be NULL for an empty payload. */
int ppm_rpc_client_call (ppm_rpc_client_t *self, const ppm_rpc_req_t *req,
                         const ProtobufCMessage *msg, ppm_rpc_reply_fn *fn, void *arg);

/* Sends and waits for the reply, at most the timeout. Replies to other
   pending calls that arrive meanwhile are dispatched to their callbacks.
   On OK, *reply_p gets the unpacked reply (free with
   protobuf_c_message_free_unpacked) when reply_descriptor is not NULL.
   Returns the status (NULL = OK; the caller destroys it): UNAVAILABLE when
   the request could not be sent, CANCELLED when interrupted by a signal. */
ppm_status_t *ppm_rpc_client_call_sync (ppm_rpc_client_t *self, const ppm_rpc_req_t *req,
                                        const ProtobufCMessage *msg,
                                        const ProtobufCMessageDescriptor *reply_descriptor,
                                        ProtobufCMessage **reply_p);

/* A fresh random trace id: 32 lowercase hex characters plus NUL. */
void ppm_rpc_new_trace_id (char out[33]);

#endif
