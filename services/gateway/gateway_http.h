/*  gateway_http: the gateway's HTTP server (libmicrohttpd) and the hand-off
    of each request to the gateway actor.

    Shape (as czmq's zhttp_server): libmicrohttpd runs its own polling
    threads and reads each request fully (headers capped at header_max:
    more is 431, a URL over 8 KB 414; body capped at body_max: more is 413;
    a body without Content-Type application/json is 415; a path or query
    argument with %00 is not decoded). Static files under the web
    directory are served right there. Every other
    request is suspended (MHD_suspend_connection: it holds no thread while it
    waits), queued, and the actor is woken through a pipe whose read end it
    polls in its zloop (gateway_http_fd). The actor pops requests
    (gateway_http_next), makes its RPC calls, and answers with
    gateway_req_respond*, which stores the answer and resumes the
    connection; libmicrohttpd then sends it from its own thread.

    Server-sent events: gateway_req_stream_start answers 200 with
    text/event-stream and keeps the request open; gateway_req_stream_write
    appends to the stream's buffer (capped: a client that does not read is
    dropped) and wakes the connection; the content reader suspends the
    connection again whenever the buffer is empty.

    Ownership: a request popped by the actor belongs to the actor until it
    ends it with exactly one gateway_req_respond* or gateway_req_stream_end
    (which destroy the actor's reference and NULL the pointer). When the
    client goes away first, the answer is dropped silently. Everything of a
    request is read-only for the actor, apart from the answer it builds.
*/
#ifndef GATEWAY_HTTP_H_INCLUDED
#define GATEWAY_HTTP_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ppm_status.h"

typedef struct _gateway_http_t gateway_http_t;
typedef struct _gateway_req_t gateway_req_t;

typedef struct {
    const char *address;            /* IPv4 address to bind, e.g. "127.0.0.1" */
    int port;                       /* 0 = any free port (see gateway_http_port) */
    int threads;                    /* libmicrohttpd polling threads, ≥ 1 */
    size_t body_max;                /* request body cap in bytes (413 beyond) */
    size_t header_max;              /* request headers cap in bytes, 0 = 16384 (431 beyond;
                                       libmicrohttpd's memory per connection is twice it) */
    size_t stream_max;              /* SSE buffer cap per stream */
    const char *web_root;           /* directory of static pages; NULL = none */
    void (*log) (const char *line); /* warnings; NULL = stderr */
} gateway_http_config_t;

/* Starts the HTTP server. Returns NULL (and logs why) when it cannot bind. */
gateway_http_t *gateway_http_new (const gateway_http_config_t *config);
/* Answers every queued request with 503, stops the server. The actor must
   have ended every request it holds first. Safe on NULL and twice. */
void gateway_http_destroy (gateway_http_t **self_p);
/* The port actually bound. */
int gateway_http_port (gateway_http_t *self);
/* File descriptor that becomes readable when requests are queued. */
int gateway_http_fd (gateway_http_t *self);
/* Pops the next queued request (the caller owns it), or NULL. Drains the
   wake-up pipe as a side effect; call until NULL. */
gateway_req_t *gateway_http_next (gateway_http_t *self);
/* Counters for metrics. */
uint64_t gateway_http_requests (gateway_http_t *self);

/* ---- request (read side; strings borrowed for the request's life) ---- */
const char *gateway_req_method (const gateway_req_t *req);
const char *gateway_req_path (const gateway_req_t *req);
/* Header by case-insensitive name, or NULL. */
const char *gateway_req_header (const gateway_req_t *req, const char *name);
/* Query argument (decoded) by name, or NULL; "" for "?flag". */
const char *gateway_req_query (const gateway_req_t *req, const char *name);
/* Number of query arguments and the i-th name (to refuse unknown ones). */
size_t gateway_req_query_count (const gateway_req_t *req);
const char *gateway_req_query_name (const gateway_req_t *req, size_t index);
/* Raw body bytes (NUL-terminated for convenience) and length. */
const char *gateway_req_body (const gateway_req_t *req, size_t *len);
/* Monotonic real µs when the request was complete (for latency metrics). */
int64_t gateway_req_started_us (const gateway_req_t *req);
/* Whether the client has gone away. */
bool gateway_req_closed (gateway_req_t *req);

/* ---- answer ---------------------------------------------------------- */
/* Adds a response header (copied). Before respond/stream_start only. */
void gateway_req_add_header (gateway_req_t *req, const char *name, const char *value);
/* Answers with status and body (copied). Ends the actor's ownership. */
void gateway_req_respond (gateway_req_t **req_p, int status, const char *content_type,
                          const char *body, size_t len);
/* Answers with a JSON value (taken: the reference is stolen). */
void gateway_req_respond_json (gateway_req_t **req_p, int status, json_t *json);
/* Answers with SPEC §5's error body for status (and Retry-After on 503). */
void gateway_req_respond_status (gateway_req_t **req_p, const ppm_status_t *status);
/* Shortcut: an error with a code and a message. */
void gateway_req_respond_error (gateway_req_t **req_p, ppm_code_t code, const char *message);

/* ---- server-sent events ---------------------------------------------- */
/* Answers 200 text/event-stream and keeps the request; the actor still
   owns it and ends it with gateway_req_stream_end. */
void gateway_req_stream_start (gateway_req_t *req);
/* Appends bytes to the stream. Returns -1 when the client has gone or the
   buffer is over its cap (then end the stream). */
int gateway_req_stream_write (gateway_req_t *req, const char *data, size_t len);
/* Ends the stream (closes the response) and the actor's ownership. */
void gateway_req_stream_end (gateway_req_t **req_p);

#endif
