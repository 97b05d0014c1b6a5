/*  stripe-emulator: internal interfaces shared by its three parts.

    emu_main.c     configuration, the HTTP server (libmicrohttpd, one thread
                   per connection), the request pipeline (faults, auth,
                   idempotency, latency, routing, request log) and the
                   /_emulator control API.
    emu_api.c      the Stripe /v1 endpoints: objects, the PaymentIntent
                   state machine, test cards, checkout, refunds, events.
    emu_webhook.c  webhook delivery: a thread running libcurl multi that
                   signs (ppm_stripe_sig), retries with backoff, duplicates
                   and reorders deliveries on request, and records attempts.

    All emulated Stripe state (accounts, objects, idempotency records, the
    request log, fault rules) lives in one emu_t behind one mutex: the
    emulator is a test double, and one lock held for the few microseconds a
    handler runs keeps it obviously correct. Latency is slept outside the
    lock, so concurrent requests overlap as they do against Stripe.
    Objects are stored as the JSON Stripe would return, so a GET returns
    exactly what a POST built.
*/
#ifndef EMU_H_INCLUDED
#define EMU_H_INCLUDED

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <czmq.h>
#include <jansson.h>

#include "ppm_form.h"

typedef struct _emu_webhook_t emu_webhook_t;

/* jansson's json_array_foreach / json_object_foreach, spelled out so that
   cppcheck (which does not read system headers) understands the loops. */
#define EMU_ARRAY_EACH(array, index, value)                                                        \
    for ((index) = 0;                                                                              \
         (index) < json_array_size (array) && ((value) = json_array_get ((array), (index)));       \
         (index)++)
#define EMU_OBJECT_EACH(object, key, value)                                                        \
    for ((key) = json_object_iter_key (json_object_iter (object));                                 \
         (key) && ((value) = json_object_iter_value (json_object_key_to_iter (key)));              \
         (key) = json_object_iter_key (                                                            \
             json_object_iter_next ((object), json_object_key_to_iter (key))))

/* One emulated Stripe account: every well-formed test key names one (see
   emu_account_name), and objects never cross accounts. */
typedef struct {
    char *name;      /* account name derived from the key */
    char *id;        /* "acct_…" */
    json_t *objects; /* id -> object, in creation order (all types) */
    json_t *idem;    /* Idempotency-Key -> record (see emu_main.c) */
} emu_account_t;

typedef struct {
    pthread_mutex_t lock;   /* guards everything below */
    zhash_t *accounts;      /* account name -> emu_account_t * (owned) */
    json_t *key_links;      /* api key -> account name (control API links) */
    json_t *requests;       /* request log, oldest first, capped */
    json_t *faults;         /* fault rules, in evaluation order */
    uint64_t rng;           /* xorshift state for fault rates */
    int64_t idem_ttl_s;     /* idempotency keys forgotten after this */
    char *base_url;         /* "http://127.0.0.1:12111", for checkout/3DS URLs */
    char *default_version;  /* Stripe-Version when a request sends none */
    bool require_version;   /* reject requests without Stripe-Version */
    emu_webhook_t *webhook; /* delivery thread */
} emu_t;

/* What one API request carries into a handler. */
typedef struct {
    emu_t *emu;                 /* the emulator (lock held during handlers) */
    emu_account_t *account;     /* the key's account */
    const char *key;            /* the API key */
    bool restricted;            /* rk_ key */
    const char *method;         /* "GET", "POST" */
    const char *path;           /* "/v1/payment_intents/pi_1/confirm" */
    const char *id;             /* the {id} path segment, or NULL */
    const ppm_form_t *form;     /* body (POST) or query (GET) parameters */
    const char *request_id;     /* "req_…" */
    const char *idem_key;       /* Idempotency-Key or NULL */
    const char *stripe_version; /* the request's or the default */
} emu_req_t;

/* A handler's answer. */
typedef struct {
    int status;   /* HTTP status */
    json_t *body; /* owned JSON body */
    bool store;   /* false: not stored for idempotency (validation failed) */
} emu_reply_t;

typedef void (emu_handler_fn) (emu_req_t *req, emu_reply_t *reply);

/* --- emu_main.c -------------------------------------------------------- */
/* Current real time. */
int64_t emu_now_ms (void);
int64_t emu_now_s (void);
/* A new random id "<prefix><24 alphanumerics>" (caller frees). */
char *emu_new_id (const char *prefix);

/* --- emu_api.c ---------------------------------------------------------- */
/* Sets an error reply: {"error": {type, code, message, param}} (code,
   param may be NULL). store defaults to (type != invalid_request_error). */
void emu_error (emu_reply_t *reply, int status, const char *type, const char *code,
                const char *param, const char *fmt, ...) __attribute__ ((format (printf, 6, 7)));
/* The Stripe routes: the table of (method, pattern, handler, permission). */
typedef struct {
    const char *method;      /* "GET" / "POST" */
    const char *pattern;     /* "/v1/payment_intents/{id}/confirm" */
    emu_handler_fn *handler; /* the handler */
    const char *rak_denied;  /* permission a restricted key lacks, or NULL */
} emu_route_t;
extern const emu_route_t emu_routes[];

/* Finds an object of the account by id and type ("payment_intent"); NULL
   when absent. Borrowed. */
json_t *emu_find (emu_account_t *account, const char *id, const char *object);
/* Finds an object by id in any account (control API); *account_p is set. */
json_t *emu_find_any (emu_t *emu, const char *id, emu_account_t **account_p);

/* Control operations (lock held); each sets an HTTP status and body. */
void emu_control_authenticate (emu_t *emu, const char *pi_id, bool succeed, emu_reply_t *reply);
void emu_control_checkout_complete (emu_t *emu, const char *cs_id, const char *pm,
                                    emu_reply_t *reply);
void emu_control_checkout_expire (emu_t *emu, const char *cs_id, emu_reply_t *reply);
void emu_control_dispute (emu_t *emu, const char *pi_id, int64_t amount, const char *reason,
                          emu_reply_t *reply);
/* Expires open checkout sessions past their expires_at. */
void emu_sweep (emu_t *emu);

/* --- emu_webhook.c ------------------------------------------------------ */
emu_webhook_t *emu_webhook_new (void);
void emu_webhook_destroy (emu_webhook_t **self_p);
/* Adds an endpoint for an account name ("*" = every account). secret NULL
   generates one. Returns the endpoint's JSON (new reference). */
json_t *emu_webhook_add_endpoint (emu_webhook_t *self, const char *account, const char *url,
                                  const char *secret);
/* Sets delivery options from a JSON object: duplicate, reorder_window,
   hold_ms, max_attempts, retry_base_ms, timeout_ms. Returns 0 or -1 with
   a message. */
int emu_webhook_configure (emu_webhook_t *self, json_t *options, const char **error);
/* Queues an event (its JSON text, copied) for every endpoint of account. */
void emu_webhook_enqueue (emu_webhook_t *self, const char *account, const char *event_id,
                          const char *event_type, const char *payload);
/* Releases events held for reordering now. */
void emu_webhook_flush (emu_webhook_t *self);
/* Endpoints, options and delivery records as JSON (new references). */
json_t *emu_webhook_state (emu_webhook_t *self, const char *event_id);
/* Forgets endpoints, queued deliveries and records; options to defaults. */
void emu_webhook_reset (emu_webhook_t *self);
/* Number of endpoints that would receive an event of account. */
int emu_webhook_endpoint_count (emu_webhook_t *self, const char *account);

#endif
