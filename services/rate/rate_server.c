/*  rate_server: see rate_server.h.

    Fetches are asynchronous ppm_rpc_client calls driven by the actor's
    loop: one fetch at a time per tenant (a change that arrives during a
    fetch marks it to run again), snapshots in pages assembled into a new
    rate_tenant_t and swapped into the cache when complete and consistent
    (same revision on every page). Quotes that wait for a tenant's first
    snapshot are kept with the fetch and answered when it ends.
*/
#include "rate_server.h"

#include <string.h>
#include "ppm_clock.h"
#include "ppm_events.h"
#include "ppm_log.h"
#include "ppm_metrics.h"
#include "ppm_rpc.h"
#include "proto/config.pb-c.h"
#include "proto/rate.pb-c.h"
#include "rate_quote.h"

#define S_FETCH_TIMEOUT_MS 3000
#define S_MAX_FETCHES      64 /* concurrent snapshot fetches */

typedef struct {
    zsock_t *pipe;            /* the actor's pipe */
    zloop_t *loop;            /* everything runs here */
    ppm_rpc_server_t *rpc;    /* rate.Quote */
    ppm_rpc_client_t *config; /* config's RPC (NULL without) */
    ppm_events_sub_t *events; /* config.changed (NULL without) */
    rate_cache_t *cache;      /* every tenant's configuration */
    zhashx_t *fetches;        /* tenant id → fetch_t, in flight */
    zlistx_t *queue;          /* tenant ids waiting for a fetch slot */
    zhashx_t *queued;         /* the same ids, as a set */
    atomic_bool *ready;       /* the caller's readiness flag, or NULL */
    int64_t refresh_ms;       /* revision check period */
    bool listing;             /* a ListRevisions walk is running */
    uint64_t refreshes;       /* completed revision walks */
    uint64_t fetched;         /* snapshots swapped in */
    bool stopping;            /* destroying: start nothing new */
    int64_t walk_started_ms;  /* real time the running walk began */
    int64_t confirmed_ms;     /* real time the last complete walk began */
    ppm_counter_t *quotes;    /* ppm_rate_quotes_total{result} */
    ppm_gauge_t *tenants;     /* ppm_rate_cache_tenants */
    ppm_gauge_t *age;         /* ppm_rate_cache_age_seconds */
    ppm_counter_t *reloads;   /* ppm_rate_cache_reloads_total{reason} */
    uint64_t counts[3];       /* quotes paid, free, error since the last flush */
} self_t;

typedef struct {
    self_t *self;            /* back pointer */
    char *tenant_id;         /* owned */
    rate_tenant_t *building; /* the entry being assembled */
    int64_t revision;        /* revision of the first page */
    bool again;              /* a change arrived during the fetch */
    const char *reason;      /* "start", "event", "poll" (metrics; static) */
    zlistx_t *waiting;       /* waiting_t: quotes for an uncached tenant */
} fetch_t;

typedef struct {
    ppm_rpc_call_t *call;           /* owned until answered */
    Ppm__V1__QuoteRequest *request; /* unpacked, owned */
} waiting_t;

static void s_fetch_start (self_t *self, const char *tenant_id, const char *reason, bool urgent);
static void s_fetch_page (fetch_t *fetch, const char *cursor);

/* ---- quotes ------------------------------------------------------------- */

/* Quote outcomes are counted locally and added to the registry once a
   second (s_on_flush_timer): no lock on the quote path. */
enum { S_PAID = 0, S_FREE = 1, S_ERROR = 2 };

static int
s_on_flush_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    self_t *self = arg;
    static const char *names[3] = {"paid", "free", "error"};
    for (int i = 0; i < 3; i++)
        if (self->counts[i]) {
            ppm_counter_inc (self->quotes, self->counts[i], names[i]);
            self->counts[i] = 0;
        }
    return 0;
}

/* A bump allocator for the request of one quote, so that unpacking it
   costs no malloc; anything larger than the arena falls back to malloc. */
typedef struct {
    _Alignas(16) uint8_t buf[2048]; /* the arena */
    size_t used;                    /* bytes handed out */
} s_arena_t;

static void *
s_arena_alloc (void *data, size_t size)
{
    s_arena_t *arena = data;
    size_t need = (size + 15) & ~(size_t)15;
    if (need <= sizeof arena->buf - arena->used) {
        void *p = arena->buf + arena->used;
        arena->used += need;
        return p;
    }
    return malloc (size);
}

static void
s_arena_free (void *data, void *pointer)
{
    s_arena_t *arena = data;
    uint8_t *p = pointer;
    if (p < arena->buf || p >= arena->buf + sizeof arena->buf)
        free (pointer);
}

static void
s_answer (self_t *self, ppm_rpc_call_t **call_p, Ppm__V1__QuoteRequest *req, const char *tenant)
{
    const rate_tenant_t *entry = rate_cache_lookup (self->cache, tenant);
    if (!entry) {
        self->counts[S_ERROR]++;
        ppm_rpc_call_error (call_p, PPM_NOT_FOUND, "no such tenant");
        return;
    }
    rate_quote_t quote;
    ppm_status_t *status =
        rate_quote_build (entry, req, ppm_clock_scale () > 1, ppm_clock_now_ms (), &quote);
    if (status) {
        self->counts[S_ERROR]++;
        ppm_rpc_call_fail (call_p, &status);
    } else {
        self->counts[quote.quote.paid ? S_PAID : S_FREE]++;
        ppm_rpc_call_reply (call_p, (const ProtobufCMessage *)&quote.quote);
    }
}

static void
s_quote (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    s_arena_t arena;
    arena.used = 0;
    ProtobufCAllocator allocator = {s_arena_alloc, s_arena_free, &arena};
    size_t size = 0;
    const uint8_t *payload = ppm_rpc_call_payload (call, &size);
    Ppm__V1__QuoteRequest *req = ppm__v1__quote_request__unpack (&allocator, size, payload);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "payload is not a ppm.v1.QuoteRequest");
        return;
    }
    const char *envelope = ppm_rpc_call_tenant (call);
    const char *tenant = envelope && *envelope ? envelope : req->tenant_id;
    ppm_status_t *status = NULL;
    if (envelope && *envelope && *req->tenant_id && strcmp (envelope, req->tenant_id) != 0) {
        status = ppm_status_new (PPM_PERMISSION_DENIED, "tenant mismatch");
        ppm_status_add_field (status, "tenant_id", "does not match the envelope's tenant");
    } else if (!tenant || !*tenant || strlen (tenant) > 60) {
        status = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid quote request");
        ppm_status_add_field (status, "tenant_id", "is required");
    } else if (!req->payee || !*req->payee || strlen (req->payee) > 128) {
        status = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid quote request");
        ppm_status_add_field (status, "payee", "must be 1 to 128 bytes");
    }
    if (status) {
        self->counts[S_ERROR]++;
        ppm_rpc_call_fail (&call, &status);
        ppm__v1__quote_request__free_unpacked (req, &allocator);
        return;
    }
    if (rate_cache_lookup (self->cache, tenant) || !self->config) {
        s_answer (self, &call, req, tenant);
        ppm__v1__quote_request__free_unpacked (req, &allocator);
        return;
    }
    /* The request must outlive this handler: a heap copy. */
    char tenant_copy[64];
    snprintf (tenant_copy, sizeof tenant_copy, "%s", tenant);
    tenant = tenant_copy;
    ppm__v1__quote_request__free_unpacked (req, &allocator);
    req = ppm__v1__quote_request__unpack (NULL, size, payload);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INTERNAL, "out of memory");
        return;
    }
    /* Not cached: fetch it now (ahead of any queue) and wait for it. */
    s_fetch_start (self, tenant, "start", true);
    fetch_t *fetch = zhashx_lookup (self->fetches, tenant);
    if (!fetch) {
        ppm_rpc_call_error (&call, PPM_UNAVAILABLE, "configuration not available; retry");
        ppm__v1__quote_request__free_unpacked (req, NULL);
        return;
    }
    waiting_t *w = malloc (sizeof *w);
    if (!w)
        abort ();
    w->call = call;
    w->request = req;
    zlistx_add_end (fetch->waiting, w);
}

/* ---- fetches ------------------------------------------------------------ */

static void
s_fetch_destroy (fetch_t **fetch_p)
{
    fetch_t *fetch = *fetch_p;
    if (!fetch)
        return;
    rate_tenant_destroy (&fetch->building);
    waiting_t *w = zlistx_first (fetch->waiting);
    while (w) {
        if (w->call)
            ppm_rpc_call_error (&w->call, PPM_UNAVAILABLE, "configuration not available");
        ppm__v1__quote_request__free_unpacked (w->request, NULL);
        free (w);
        w = zlistx_next (fetch->waiting);
    }
    zlistx_destroy (&fetch->waiting);
    free (fetch->tenant_id);
    free (fetch);
    *fetch_p = NULL;
}

/* Ready once a revision walk has completed and every fetch it started
   has ended (successfully or not). */
static void
s_check_ready (self_t *self)
{
    if (self->ready && self->refreshes > 0 && zhashx_size (self->fetches) == 0 &&
        zlistx_size (self->queue) == 0)
        atomic_store (self->ready, true);
}

/* Ends a fetch: answers its waiting quotes, starts queued ones. */
static void
s_fetch_end (self_t *self, fetch_t *fetch, const ppm_status_t *status)
{
    waiting_t *w = zlistx_first (fetch->waiting);
    while (w) {
        if (status) {
            ppm_status_t *copy =
                ppm_status_new (ppm_status_code (status), "%s", ppm_status_message (status));
            ppm_rpc_call_fail (&w->call, &copy);
        } else
            s_answer (self, &w->call, w->request, fetch->tenant_id);
        w = zlistx_next (fetch->waiting);
    }
    char *tenant = strdup (fetch->tenant_id);
    bool again = fetch->again && !status;
    zhashx_delete (self->fetches, tenant);
    if (self->stopping) {
        free (tenant);
        return;
    }
    if (again)
        s_fetch_start (self, tenant, "event", false);
    free (tenant);
    while (zlistx_size (self->queue) && zhashx_size (self->fetches) < S_MAX_FETCHES) {
        char *next = zlistx_detach (self->queue, NULL);
        /* Skip ids started meanwhile out of turn (urgent). */
        if (zhashx_lookup (self->queued, next)) {
            zhashx_delete (self->queued, next);
            s_fetch_start (self, next, "poll", false);
        }
        free (next);
    }
    s_check_ready (self);
}

static rate_amount_t
s_amount (bool set, int64_t amount)
{
    return (rate_amount_t){.amount = amount, .set = set};
}

static void
s_on_snapshot (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    fetch_t *fetch = arg;
    self_t *self = fetch->self;
    if (self->stopping && !status) {
        ppm_status_t *stop = ppm_status_new (PPM_UNAVAILABLE, "rate is stopping");
        s_fetch_end (self, fetch, stop);
        ppm_status_destroy (&stop);
        return;
    }
    if (status) {
        if (ppm_status_code (status) != PPM_NOT_FOUND)
            ppm_log_warn ("rate: snapshot of %s: %s", fetch->tenant_id,
                          ppm_status_message (status));
        else
            rate_cache_remove (self->cache, fetch->tenant_id);
        s_fetch_end (self, fetch, status);
        return;
    }
    Ppm__V1__Snapshot *snap = ppm__v1__snapshot__unpack (NULL, size, payload);
    if (!snap || !snap->settings) {
        if (snap)
            ppm__v1__snapshot__free_unpacked (snap, NULL);
        ppm_status_t *bad = ppm_status_new (PPM_INTERNAL, "malformed snapshot");
        s_fetch_end (self, fetch, bad);
        ppm_status_destroy (&bad);
        return;
    }
    if (!fetch->building) {
        fetch->revision = snap->revision;
        fetch->building =
            rate_tenant_new (snap->tenant_id, snap->plan, snap->revision, snap->settings);
        for (size_t i = 0; fetch->building && i < snap->n_role_rates; i++) {
            const Ppm__V1__RoleRates *r = snap->role_rates[i];
            rate_tenant_add_role (fetch->building, r->role,
                                  s_amount (r->call_set, r->call_per_minute),
                                  s_amount (r->chat_set, r->chat_per_minute), r->priority);
        }
    } else if (snap->revision != fetch->revision) {
        /* Changed between pages: start over. */
        ppm__v1__snapshot__free_unpacked (snap, NULL);
        rate_tenant_destroy (&fetch->building);
        s_fetch_page (fetch, "");
        return;
    }
    for (size_t i = 0; fetch->building && i < snap->n_user_rates; i++) {
        const Ppm__V1__UserRates *u = snap->user_rates[i];
        rate_user_t rates = {.call = s_amount (u->call_set, u->call_per_minute),
                             .chat = s_amount (u->chat_set, u->chat_per_minute)};
        rate_tenant_set_user (fetch->building, u->payee, rates);
    }
    bool more = snap->next_rates_cursor && *snap->next_rates_cursor;
    if (more && fetch->building) {
        char *cursor = strdup (snap->next_rates_cursor);
        ppm__v1__snapshot__free_unpacked (snap, NULL);
        s_fetch_page (fetch, cursor);
        free (cursor);
        return;
    }
    ppm__v1__snapshot__free_unpacked (snap, NULL);
    if (!fetch->building) {
        ppm_status_t *oom = ppm_status_new (PPM_INTERNAL, "out of memory");
        s_fetch_end (self, fetch, oom);
        ppm_status_destroy (&oom);
        return;
    }
    /* Never go back to an older revision (a slow reply after a newer one). */
    if (rate_cache_revision (self->cache, fetch->tenant_id) <= fetch->revision) {
        rate_cache_replace (self->cache, &fetch->building);
        self->fetched++;
        ppm_counter_inc (self->reloads, 1, fetch->reason ? fetch->reason : "poll");
        ppm_gauge_set (self->tenants, (double)rate_cache_size (self->cache));
        zloop_timer (self->loop, 1000, 0, s_on_flush_timer, self);
    }
    s_fetch_end (self, fetch, NULL);
}

static void
s_fetch_page (fetch_t *fetch, const char *cursor)
{
    self_t *self = fetch->self;
    Ppm__V1__GetSnapshotRequest req = PPM__V1__GET_SNAPSHOT_REQUEST__INIT;
    req.tenant_id = fetch->tenant_id;
    req.rates_cursor = (char *)cursor;
    ppm_rpc_req_t call = {.method = "config.GetSnapshot",
                          .tenant = fetch->tenant_id,
                          .timeout_ms = S_FETCH_TIMEOUT_MS,
                          .idempotent = true};
    if (ppm_rpc_client_call (self->config, &call, (const ProtobufCMessage *)&req, s_on_snapshot,
                             fetch)) {
        ppm_status_t *status = ppm_status_new (PPM_UNAVAILABLE, "config unreachable");
        s_fetch_end (self, fetch, status);
        ppm_status_destroy (&status);
    }
}

static void
s_fetch_free (void **item)
{
    s_fetch_destroy ((fetch_t **)item);
}

/* Starts fetching a tenant's snapshot, or queues it when S_MAX_FETCHES
   are running (urgent: start now anyway, for a quote that waits). A change
   event during a running fetch makes it run once more after. */
static void
s_fetch_start (self_t *self, const char *tenant_id, const char *reason, bool urgent)
{
    if (!self->config || self->stopping)
        return;
    fetch_t *running = zhashx_lookup (self->fetches, tenant_id);
    if (running) {
        if (streq (reason, "event"))
            running->again = true;
        return;
    }
    if (urgent)
        zhashx_delete (self->queued, tenant_id);
    else if (zhashx_size (self->fetches) >= S_MAX_FETCHES) {
        if (!zhashx_lookup (self->queued, tenant_id)) {
            zhashx_insert (self->queued, tenant_id, (void *)1);
            zlistx_add_end (self->queue, (void *)tenant_id);
        }
        return;
    }
    fetch_t *fetch = calloc (1, sizeof *fetch);
    if (!fetch)
        abort ();
    fetch->self = self;
    fetch->tenant_id = strdup (tenant_id);
    fetch->waiting = zlistx_new ();
    fetch->reason = reason;
    zhashx_insert (self->fetches, tenant_id, fetch);
    s_fetch_page (fetch, "");
}

/* ---- revision walk ------------------------------------------------------ */

static void s_list_page (self_t *self, const char *cursor);

static void
s_on_revisions (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    self_t *self = arg;
    if (self->stopping)
        return;
    if (status) {
        ppm_log_warn ("rate: revision check: %s", ppm_status_message (status));
        self->listing = false;
        return;
    }
    Ppm__V1__ListRevisionsReply *reply =
        ppm__v1__list_revisions_reply__unpack (NULL, size, payload);
    if (!reply) {
        self->listing = false;
        return;
    }
    for (size_t i = 0; i < reply->n_tenants; i++) {
        const Ppm__V1__TenantRevision *t = reply->tenants[i];
        if (rate_cache_revision (self->cache, t->tenant_id) != t->revision)
            s_fetch_start (self, t->tenant_id, self->confirmed_ms ? "poll" : "start", false);
    }
    if (reply->next_cursor && *reply->next_cursor)
        s_list_page (self, reply->next_cursor);
    else {
        self->listing = false;
        self->refreshes++;
        self->confirmed_ms = self->walk_started_ms;
        s_check_ready (self);
    }
    ppm__v1__list_revisions_reply__free_unpacked (reply, NULL);
}

static void
s_list_page (self_t *self, const char *cursor)
{
    Ppm__V1__ListRevisionsRequest req = PPM__V1__LIST_REVISIONS_REQUEST__INIT;
    req.cursor = (char *)cursor;
    req.limit = 5000;
    ppm_rpc_req_t call = {
        .method = "config.ListRevisions", .timeout_ms = S_FETCH_TIMEOUT_MS, .idempotent = true};
    if (ppm_rpc_client_call (self->config, &call, (const ProtobufCMessage *)&req, s_on_revisions,
                             self))
        self->listing = false;
}

static int
s_on_refresh_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    self_t *self = arg;
    if (!self->listing) {
        self->listing = true;
        self->walk_started_ms = ppm_clock_real_ms ();
        s_list_page (self, "");
    }
    if (self->confirmed_ms)
        ppm_gauge_set (self->age, (double)(ppm_clock_real_ms () - self->confirmed_ms) / 1000.0);
    return 0;
}

static void
s_on_event (const ppm_event_t *event, void *arg)
{
    self_t *self = arg;
    if (event->tenant_id && *event->tenant_id)
        s_fetch_start (self, event->tenant_id, "event", false);
}

/* ---- actor -------------------------------------------------------------- */

static void
s_self_destroy (self_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    self_t *self = *self_p;
    self->stopping = true;
    /* Pending calls end with CANCELLED first: their fetches end and answer
       the quotes waiting on them; then whatever is left. */
    ppm_rpc_client_destroy (&self->config);
    zhashx_destroy (&self->fetches);
    ppm_events_sub_destroy (&self->events);
    ppm_rpc_server_destroy (&self->rpc);
    zlistx_destroy (&self->queue);
    zhashx_destroy (&self->queued);
    rate_cache_destroy (&self->cache);
    zloop_destroy (&self->loop);
    free (self);
    *self_p = NULL;
}

static self_t *
s_self_new (zsock_t *pipe, rate_server_args_t *args)
{
    self_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->pipe = pipe;
    self->loop = zloop_new ();
    self->cache = args->preload ? args->preload : rate_cache_new ();
    args->preload = NULL;
    self->fetches = zhashx_new ();
    self->queue = zlistx_new ();
    self->queued = zhashx_new ();
    self->ready = args->ready;
    self->refresh_ms = args->refresh_ms > 0 ? args->refresh_ms : 1000;
    if (!self->loop || !self->cache || !self->fetches || !self->queue || !self->queued) {
        s_self_destroy (&self);
        return NULL;
    }
    zhashx_set_destructor (self->fetches, s_fetch_free);
    ppm_metrics_t *metrics = ppm_metrics_global ();
    self->quotes =
        ppm_metrics_counter (metrics, "ppm_rate_quotes_total", "quotes answered", "result");
    self->tenants =
        ppm_metrics_gauge (metrics, "ppm_rate_cache_tenants", "tenants held in memory", NULL);
    self->age =
        ppm_metrics_gauge (metrics, "ppm_rate_cache_age_seconds",
                           "age of the oldest tenant copy since last confirmed current", NULL);
    self->reloads =
        ppm_metrics_counter (metrics, "ppm_rate_cache_reloads_total", "tenant reloads", "reason");
    ppm_gauge_set (self->tenants, (double)rate_cache_size (self->cache));
    /* The closed label sets exist from the start, at 0. */
    static const char *const results[] = {"paid", "free", "error"};
    static const char *const reasons[] = {"start", "event", "poll"};
    for (size_t i = 0; i < 3; i++) {
        ppm_counter_inc (self->quotes, 0, results[i]);
        ppm_counter_inc (self->reloads, 0, reasons[i]);
    }
    zloop_timer (self->loop, 1000, 0, s_on_flush_timer, self);
    zlistx_set_duplicator (self->queue, (czmq_duplicator *)strdup);
    zlistx_set_destructor (self->queue, (czmq_destructor *)zstr_free);
    self->rpc = ppm_rpc_server_new (self->loop, args->rpc_bind);
    if (!self->rpc) {
        ppm_log_error ("rate: cannot bind %s", args->rpc_bind ? args->rpc_bind : "(null)");
        s_self_destroy (&self);
        return NULL;
    }
    ppm_rpc_server_handle (self->rpc, "rate.Quote", s_quote, self);
    if (args->config_endpoint && *args->config_endpoint) {
        self->config = ppm_rpc_client_new (args->config_endpoint);
        if (!self->config || ppm_rpc_client_attach (self->config, self->loop)) {
            ppm_log_error ("rate: bad config endpoint %s", args->config_endpoint);
            s_self_destroy (&self);
            return NULL;
        }
        zloop_timer (self->loop, (size_t)self->refresh_ms, 0, s_on_refresh_timer, self);
        /* The first walk loads every tenant. */
        s_on_refresh_timer (self->loop, 0, self);
    } else if (self->ready)
        atomic_store (self->ready, true);
    if (args->config_events && *args->config_events) {
        self->events = ppm_events_sub_new (args->config_events);
        if (!self->events || ppm_events_subscribe (self->events, "config.changed.") ||
            ppm_events_sub_attach (self->events, self->loop, s_on_event, self)) {
            ppm_log_error ("rate: bad config events endpoint %s", args->config_events);
            s_self_destroy (&self);
            return NULL;
        }
    }
    return self;
}

static int
s_pipe_handler (zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void)loop;
    self_t *self = arg;
    char *command = zstr_recv (pipe);
    if (!command)
        return -1;
    int rc = 0;
    if (streq (command, "$TERM"))
        rc = -1;
    else if (streq (command, "ENDPOINT"))
        zstr_send (pipe, ppm_rpc_server_endpoint (self->rpc));
    else if (streq (command, "STATS"))
        zstr_sendf (pipe, "tenants=%zu refreshes=%llu fetches=%llu", rate_cache_size (self->cache),
                    (unsigned long long)self->refreshes, (unsigned long long)self->fetched);
    free (command);
    return rc;
}

/* A failed start: answer every command with "FAILED" until $TERM, so
   that zactor_destroy finds a live pipe. */
static void
s_refuse_commands (zsock_t *pipe)
{
    bool term = false;
    while (!term) {
        char *command = zstr_recv (pipe);
        term = !command || streq (command, "$TERM");
        zstr_free (&command);
        if (!term)
            zstr_send (pipe, "FAILED");
    }
}

void
rate_server_actor (zsock_t *pipe, void *args)
{
    self_t *self = s_self_new (pipe, (rate_server_args_t *)args);
    zsock_signal (pipe, 0);
    if (!self) {
        s_refuse_commands (pipe);
        return;
    }
    zloop_reader (self->loop, pipe, s_pipe_handler, self);
    ppm_log_info ("rate: listening on %s", ppm_rpc_server_endpoint (self->rpc));
    zloop_start (self->loop);
    s_self_destroy (&self);
}

zactor_t *
rate_server_start (rate_server_args_t *args)
{
    zactor_t *actor = zactor_new (rate_server_actor, args);
    if (!actor)
        return NULL;
    zstr_send (actor, "ENDPOINT");
    char *endpoint = zstr_recv (actor);
    bool ok = endpoint && strncmp (endpoint, "tcp://", 6) == 0;
    zstr_free (&endpoint);
    if (!ok)
        zactor_destroy (&actor);
    return actor;
}
