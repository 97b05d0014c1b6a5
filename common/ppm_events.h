/*  ppm_events: events between services over ZeroMQ PUB/SUB.

    Each event is two frames: the topic "<event>.<tenant>" (e.g.
    "session.warning.t_42") and a packed ppm.v1.Envelope of kind EVENT whose
    method is the event name, tenant_id the tenant, trace_id the trace that
    caused it, and payload the packed event message. A tenant-less event's
    topic is the bare event name. Subscribers filter by topic prefix: "session." for every session
   event of every tenant, "config.changed.t_42" for one tenant's config changes.

    PUB/SUB drops messages when a subscriber is slow or not yet connected:
    nothing that moves money or paid time may depend on one event arriving.
    Events are hints to act sooner; the state is always asked for by RPC.
*/
#ifndef PPM_EVENTS_H_INCLUDED
#define PPM_EVENTS_H_INCLUDED

#include <czmq.h>
#include <protobuf-c/protobuf-c.h>
#include <stdint.h>

typedef struct _ppm_events_pub_t ppm_events_pub_t;
typedef struct _ppm_events_sub_t ppm_events_sub_t;

/* One received event; every pointer is borrowed for the callback's run. */
typedef struct {
    const char *name;      /* "session.warning" */
    const char *tenant_id; /* "t_42" */
    const char *trace_id;
    const uint8_t *payload; /* packed event message */
    size_t size;
} ppm_event_t;

typedef void (ppm_event_fn) (const ppm_event_t *event, void *arg);

/* A subscriber drops (and counts) any message that is not exactly two
   frames, a version-1 KIND_EVENT envelope with a non-empty name, and a
   topic equal to "<name>.<tenant_id>". Messages over 1 MiB are refused by
   libzmq (ZMQ_MAXMSGSIZE). */

/* Binds a PUB socket (e.g. "tcp://127.0.0.1:*"). NULL on failure. */
ppm_events_pub_t *ppm_events_pub_new (const char *endpoint);
void ppm_events_pub_destroy (ppm_events_pub_t **self_p);
const char *ppm_events_pub_endpoint (ppm_events_pub_t *self);
zsock_t *ppm_events_pub_sock (ppm_events_pub_t *self);
/* Publishes name for tenant with msg packed as payload (msg may be NULL).
   The trace id is this thread's log context (a new one when there is
   none). tenant_id NULL or "" makes the topic the bare name. Returns 0, or
   -1 when name is empty or the send failed. */
int ppm_events_publish (ppm_events_pub_t *self, const char *name, const char *tenant_id,
                        const ProtobufCMessage *msg);

/* Connects a SUB socket to a comma-separated list of endpoints. */
ppm_events_sub_t *ppm_events_sub_new (const char *endpoints);
void ppm_events_sub_destroy (ppm_events_sub_t **self_p);
/* Subscribes to a topic prefix ("" = everything). */
int ppm_events_subscribe (ppm_events_sub_t *self, const char *prefix);
/* Registers with loop; fn runs for every well-formed event (malformed ones
   are dropped and counted). */
int ppm_events_sub_attach (ppm_events_sub_t *self, zloop_t *loop, ppm_event_fn *fn, void *arg);
/* Waits up to timeout_ms for one event and runs fn on it (tests, tools).
   Returns 1 when an event was delivered, 0 on timeout, -1 on error. */
int ppm_events_sub_wait (ppm_events_sub_t *self, int timeout_ms, ppm_event_fn *fn, void *arg);
zsock_t *ppm_events_sub_sock (ppm_events_sub_t *self);
uint64_t ppm_events_sub_dropped (ppm_events_sub_t *self);

#endif
