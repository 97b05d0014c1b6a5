/*  payment_stripe: the only code in ppm that talks to Stripe.

    An asynchronous HTTPS client on libcurl's multi interface, driven by the
    payment service's zloop: curl's socket callback registers each socket
    as a zloop fd poller and its timer callback arms a zloop timer, so many
    Stripe calls are in flight at once while the loop keeps serving RPCs,
    and connections are kept and reused across calls (curl's connection
    cache lives in the multi handle). Every request carries the pinned
    Stripe-Version, a Bearer key, and on POST an Idempotency-Key the caller
    derives from its own ids ("ppm-<payment_id>-create"), so that a retry —
    by us now, or after a crash — reuses it and Stripe replays its first
    answer instead of charging twice.

    Retries follow ../shared/STRIPE.md exactly: "Stripe-Should-Retry: false"
    never retries, "true" always does; without the header, connection
    errors, 409 and 5xx are retried. The n-th retry waits
    min(0.5 s × 2^(n−1), 5 s) × a random factor in [0.5, 1.0]. The outcome is
    one callback per request with a payment_stripe_err_t that tells
    declines from invalid requests, bad keys, missing permissions, rate
    limits, outages and timeouts; outages, network errors and timeouts are
    "indeterminate" (the call may have happened: reconcile by fetching).

    Every reply body is capped (PAYMENT_STRIPE_JSON_MAX) and parsed with
    payment_stripe_json before the callback sees it.
*/
#ifndef PAYMENT_STRIPE_H_INCLUDED
#define PAYMENT_STRIPE_H_INCLUDED

#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include "ppm_status.h"
#include "payment_stripe_json.h"

#define PAYMENT_STRIPE_VERSION "2024-06-20"

typedef enum {
    PAYMENT_STRIPE_OK = 0,
    PAYMENT_STRIPE_DECLINED,     /* 402 card_error: the card was declined */
    PAYMENT_STRIPE_INVALID,      /* 400 invalid_request_error (amount_too_small, …) */
    PAYMENT_STRIPE_IDEMPOTENCY,  /* 400 idempotency_error: same key, other params */
    PAYMENT_STRIPE_AUTH,         /* 401: the key is wrong */
    PAYMENT_STRIPE_PERMISSION,   /* 403: the (restricted) key lacks a permission */
    PAYMENT_STRIPE_NOT_FOUND,    /* 404 */
    PAYMENT_STRIPE_CONFLICT,     /* 409 after every retry */
    PAYMENT_STRIPE_RATE_LIMITED, /* 429 after every retry */
    PAYMENT_STRIPE_UNAVAILABLE,  /* 5xx after every retry: indeterminate */
    PAYMENT_STRIPE_NETWORK,      /* no answer (refused, reset, dropped): indeterminate */
    PAYMENT_STRIPE_TIMEOUT,      /* no answer in time: indeterminate */
    PAYMENT_STRIPE_BAD_REPLY,    /* unparsable, oversized or unexpected reply */
    PAYMENT_STRIPE_CANCELLED     /* the client was destroyed first */
} payment_stripe_err_t;

/* "card declined", "Stripe unavailable", … */
const char *payment_stripe_strerror (payment_stripe_err_t err);
/* The ppm status code a caller should answer with for err. */
ppm_code_t payment_stripe_code (payment_stripe_err_t err);
/* Whether the call may have taken effect at Stripe although we got no
   usable answer (5xx, network, timeout): reconcile by fetching. */
bool payment_stripe_indeterminate (payment_stripe_err_t err);

/* What a request ended with; everything is borrowed for the callback. */
typedef struct {
    payment_stripe_err_t err;
    int http_status;                     /* 0 when no HTTP answer */
    const char *request_id;              /* Stripe's Request-Id header ("" if none) */
    bool replayed;                       /* Idempotent-Replayed: true */
    int attempts;                        /* 1 + retries */
    const json_t *body;                  /* parsed reply object (NULL if none) */
    const payment_stripe_error_t *error; /* parsed error body when err != OK */
    const char *detail;                  /* curl's or the parser's words when no error body */
} payment_stripe_result_t;

typedef void (payment_stripe_fn) (const payment_stripe_result_t *result, void *arg);

typedef struct _payment_stripe_t payment_stripe_t;

/* A client for api_base ("https://api.stripe.com", or the emulator's
   "http://127.0.0.1:12111") driven by loop. NULL on failure. */
payment_stripe_t *payment_stripe_new (zloop_t *loop, const char *api_base);
/* Ends every request in flight with CANCELLED, then frees. Safe twice. */
void payment_stripe_destroy (payment_stripe_t **self_p);

/* Tuning; defaults: 10 s per attempt, 3 retries, 2 s connect timeout. */
void payment_stripe_set_timeout (payment_stripe_t *self, int timeout_ms);
void payment_stripe_set_max_retries (payment_stripe_t *self, int retries);
/* Scales the backoff (tests: 0.01 makes 0.5 s into 5 ms). */
void payment_stripe_set_backoff_scale (payment_stripe_t *self, double scale);

/* Starts a request. method is "GET" or "POST"; path starts with "/v1/";
   form is the url-encoded body (POST; may be NULL or ""); api_key is the
   tenant's sk_/rk_ key; idempotency_key is required for POST (≤ 255
   chars) and ignored for GET. fn runs exactly once from the loop, never
   from inside this call. Returns 0, or -1 on invalid arguments (fn is then
   not called). */
int payment_stripe_request (payment_stripe_t *self, const char *method, const char *path,
                            const char *form, const char *api_key, const char *idempotency_key,
                            payment_stripe_fn *fn, void *arg);

/* Requests started and not yet ended (retries waiting included). */
size_t payment_stripe_in_flight (payment_stripe_t *self);
/* Totals for metrics and tests. */
uint64_t payment_stripe_attempts (payment_stripe_t *self);
uint64_t payment_stripe_retries (payment_stripe_t *self);

#endif
