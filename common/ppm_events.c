/*  ppm_events: see ppm_events.h and docs/PROTOCOL.md.

    Publishing packs one Envelope per event and sends it after its topic;
    PUB never blocks (libzmq drops for slow subscribers). Subscribing checks
    each message completely (two frames, a valid EVENT envelope whose topic
    is the event name and tenant) before the callback sees it, and counts
    what it drops, so a broken or hostile publisher cannot crash a service.
*/
#include "ppm_events.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_curve.h"
#include "ppm_log.h"
#include "ppm_metrics.h"
#include "ppm_rpc.h"
#include "proto/envelope.pb-c.h"

#define S_EVENT_MAX_MSG (1024 * 1024)
#define S_EVENT_HWM     100000

struct _ppm_events_pub_t {
    zsock_t *pub;   /* bound PUB */
    char *endpoint; /* the endpoint actually bound */
};

struct _ppm_events_sub_t {
    zsock_t *sub;      /* connected SUB */
    zpoller_t *poller; /* on sub, for ppm_events_sub_wait */
    zloop_t *loop;     /* attached loop, or NULL */
    ppm_event_fn *fn;  /* the attached loop's callback */
    void *arg;         /* its argument */
    uint64_t dropped;  /* malformed messages */
};

/* ppm_events_published_total{event} (docs/METRICS.md), registered once per
   process. Event names are constants in the services' code, a closed set. */
static ppm_counter_t *s_published;
static pthread_once_t s_published_once = PTHREAD_ONCE_INIT;

static void
s_published_init (void)
{
    s_published = ppm_metrics_counter (ppm_metrics_global (), "ppm_events_published_total",
                                       "Events published", "event");
}

/* Builds "<name>.<tenant>" ("<name>" when there is no tenant). */
static char *
s_topic (const char *name, const char *tenant_id)
{
    if (tenant_id && *tenant_id)
        return zsys_sprintf ("%s.%s", name, tenant_id);
    return strdup (name);
}

ppm_events_pub_t *
ppm_events_pub_new (const char *endpoint)
{
    if (!endpoint || !*endpoint)
        return NULL;
    ppm_events_pub_t *self = (ppm_events_pub_t *)zmalloc (sizeof (ppm_events_pub_t));
    assert (self);
    self->pub = zsock_new (ZMQ_PUB);
    assert (self->pub);
    zsock_set_sndhwm (self->pub, S_EVENT_HWM);
    zsock_set_linger (self->pub, 0);
    pthread_once (&s_published_once, s_published_init);
    if (ppm_curve_server (self->pub, NULL) == -1) {
        ppm_log_error ("events: cannot make %s a CURVE server", endpoint);
        ppm_events_pub_destroy (&self);
        return NULL;
    }
    if (zsock_bind (self->pub, "%s", endpoint) == -1) {
        ppm_log_error ("events: cannot bind %s: %s", endpoint, zmq_strerror (zmq_errno ()));
        ppm_events_pub_destroy (&self);
        return NULL;
    }
    self->endpoint = zsock_last_endpoint (self->pub);
    assert (self->endpoint);
    return self;
}

void
ppm_events_pub_destroy (ppm_events_pub_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ppm_events_pub_t *self = *self_p;
    zsock_destroy (&self->pub);
    zstr_free (&self->endpoint);
    free (self);
    *self_p = NULL;
}

const char *
ppm_events_pub_endpoint (ppm_events_pub_t *self)
{
    assert (self);
    return self->endpoint;
}

zsock_t *
ppm_events_pub_sock (ppm_events_pub_t *self)
{
    assert (self);
    return self->pub;
}

int
ppm_events_publish (ppm_events_pub_t *self, const char *name, const char *tenant_id,
                    const ProtobufCMessage *msg)
{
    assert (self);
    if (!name || !*name)
        return -1;
    int rc = -1;
    uint8_t *payload = NULL;
    size_t size = 0;
    if (msg) {
        size = protobuf_c_message_get_packed_size (msg);
        payload = (uint8_t *)malloc (size ? size : 1);
        assert (payload);
        if (size)
            protobuf_c_message_pack (msg, payload);
    }
    char fresh_trace[33];
    const char *trace_id = ppm_log_trace_id ();
    if (!trace_id || !*trace_id) {
        ppm_rpc_new_trace_id (fresh_trace);
        trace_id = fresh_trace;
    }
    Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
    env.version = PPM_RPC_VERSION;
    env.kind = PPM__V1__KIND__KIND_EVENT;
    env.method = (char *)name;
    env.trace_id = (char *)trace_id;
    env.tenant_id = (char *)(tenant_id ? tenant_id : "");
    env.payload.data = payload;
    env.payload.len = size;
    size_t env_size = ppm__v1__envelope__get_packed_size (&env);
    zframe_t *body = zframe_new (NULL, env_size);
    assert (body);
    ppm__v1__envelope__pack (&env, zframe_data (body));
    free (payload);

    char *topic = s_topic (name, tenant_id);
    zframe_t *head = zframe_new (topic, strlen (topic));
    assert (head);
    free (topic);
    if (zframe_send (&head, self->pub, ZFRAME_MORE | ZFRAME_DONTWAIT) == 0 &&
        zframe_send (&body, self->pub, ZFRAME_DONTWAIT) == 0) {
        rc = 0;
        ppm_counter_inc (s_published, 1, name);
    }
    zframe_destroy (&head);
    zframe_destroy (&body);
    return rc;
}

ppm_events_sub_t *
ppm_events_sub_new (const char *endpoints)
{
    if (!endpoints || !*endpoints)
        return NULL;
    ppm_events_sub_t *self = (ppm_events_sub_t *)zmalloc (sizeof (ppm_events_sub_t));
    assert (self);
    self->sub = zsock_new (ZMQ_SUB);
    assert (self->sub);
    zsock_set_maxmsgsize (self->sub, S_EVENT_MAX_MSG);
    zsock_set_rcvhwm (self->sub, S_EVENT_HWM);
    zsock_set_linger (self->sub, 0);
    zsock_set_rcvtimeo (self->sub, 0);
    if (ppm_curve_client (self->sub) == -1 || zsock_attach (self->sub, endpoints, false) == -1) {
        ppm_log_error ("events: cannot connect to \"%s\"", endpoints);
        ppm_events_sub_destroy (&self);
        return NULL;
    }
    self->poller = zpoller_new (self->sub, NULL);
    assert (self->poller);
    return self;
}

void
ppm_events_sub_destroy (ppm_events_sub_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ppm_events_sub_t *self = *self_p;
    if (self->loop)
        zloop_reader_end (self->loop, self->sub);
    zpoller_destroy (&self->poller);
    zsock_destroy (&self->sub);
    free (self);
    *self_p = NULL;
}

int
ppm_events_subscribe (ppm_events_sub_t *self, const char *prefix)
{
    assert (self);
    if (!prefix)
        return -1;
    zsock_set_subscribe (self->sub, prefix);
    return 0;
}

/* Checks and delivers one message. Returns 1 when delivered, 0 when
   dropped. Takes msg. */
static int
s_sub_dispatch (ppm_events_sub_t *self, zmsg_t **msg_p, ppm_event_fn *fn, void *arg)
{
    zmsg_t *msg = *msg_p;
    int delivered = 0;
    Ppm__V1__Envelope *env = NULL;
    char *topic = NULL;
    char *expected = NULL;
    zframe_t *head = zmsg_first (msg);
    zframe_t *body = zmsg_next (msg);
    if (zmsg_size (msg) != 2 || zframe_size (body) == 0)
        goto cleanup;
    env = ppm__v1__envelope__unpack (NULL, zframe_size (body), zframe_data (body));
    if (!env || env->version != PPM_RPC_VERSION || env->kind != PPM__V1__KIND__KIND_EVENT ||
        !*env->method)
        goto cleanup;
    topic = zframe_strdup (head);
    expected = s_topic (env->method, env->tenant_id);
    if (strcmp (topic, expected) != 0)
        goto cleanup;
    ppm_event_t event = {env->method, env->tenant_id, env->trace_id, env->payload.data,
                         env->payload.len};
    delivered = 1;
    if (fn)
        fn (&event, arg);

cleanup:
    if (!delivered) {
        self->dropped++;
        ppm_log_debug ("events: dropped a malformed event");
    }
    free (topic);
    free (expected);
    if (env)
        ppm__v1__envelope__free_unpacked (env, NULL);
    zmsg_destroy (msg_p);
    return delivered;
}

static int
s_sub_readable (zloop_t *loop, zsock_t *sock, void *arg)
{
    (void)loop;
    ppm_events_sub_t *self = (ppm_events_sub_t *)arg;
    /* RCVTIMEO is 0: zmsg_recv returns NULL once the socket is empty. */
    zmsg_t *msg = zmsg_recv (sock);
    while (msg) {
        s_sub_dispatch (self, &msg, self->fn, self->arg);
        msg = zmsg_recv (sock);
    }
    return 0;
}

int
ppm_events_sub_attach (ppm_events_sub_t *self, zloop_t *loop, ppm_event_fn *fn, void *arg)
{
    assert (self);
    if (!loop || !fn || self->loop)
        return -1;
    if (zloop_reader (loop, self->sub, s_sub_readable, self) == -1)
        return -1;
    self->loop = loop;
    self->fn = fn;
    self->arg = arg;
    return 0;
}

int
ppm_events_sub_wait (ppm_events_sub_t *self, int timeout_ms, ppm_event_fn *fn, void *arg)
{
    assert (self);
    int64_t until = zclock_mono () + (timeout_ms > 0 ? timeout_ms : 0);
    while (true) {
        zmsg_t *msg = zmsg_recv (self->sub);
        while (msg) {
            if (s_sub_dispatch (self, &msg, fn, arg))
                return 1;
            msg = zmsg_recv (self->sub);
        }
        int64_t wait = until - zclock_mono ();
        if (wait <= 0)
            return 0;
        zpoller_wait (self->poller, (int)wait);
        if (zpoller_terminated (self->poller))
            return -1;
    }
}

zsock_t *
ppm_events_sub_sock (ppm_events_sub_t *self)
{
    assert (self);
    return self->sub;
}

uint64_t
ppm_events_sub_dropped (ppm_events_sub_t *self)
{
    assert (self);
    return self->dropped;
}
