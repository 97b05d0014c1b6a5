/*  payment_server: the payment service actor.

    One zloop owns everything: the RPC ROUTER (payment.*), the PUB socket
    (payment.succeeded / failed / disputed / refunded), the RPC clients of
    config (keys, settings) and metering (Get, Fund), the Stripe client on
    curl multi, and timers for the outbox and reconciliation. Stripe calls
    never block the loop (curl multi). PostgreSQL calls run on the loop
    thread through ppm_pg: on loopback they take well under a millisecond,
    and every statement is bounded by a short statement_timeout
    (PPM_PG_STATEMENT_TIMEOUT, default 2 s), so a slow Stripe can never
    hold the loop, and a stuck database holds it at most that long.

    The actor starts, migrates the schema, binds, then sends on its pipe
    "OK" <rpc endpoint> <pub endpoint>, or "ERROR" <reason> and ends.
    "$TERM" stops it.
*/
#ifndef PAYMENT_SERVER_H_INCLUDED
#define PAYMENT_SERVER_H_INCLUDED

#include <czmq.h>
#include <stdint.h>

typedef struct {
    const char *rpc_bind;          /* "tcp://127.0.0.1:7121" */
    const char *pub_bind;          /* "tcp://127.0.0.1:7122" */
    const char *config_endpoint;   /* config service RPC */
    const char *config_events;     /* config PUB ("" = none: cache by TTL only) */
    const char *metering_endpoint; /* metering service RPC */
    const char *pg_url;
    const char *stripe_api_base;     /* "https://api.stripe.com" or the emulator */
    int64_t pg_statement_timeout_ms; /* bound on each SQL statement */
    int64_t stripe_timeout_ms;       /* per Stripe attempt */
    int64_t stripe_retries;          /* retries after the first attempt */
    int64_t stripe_backoff_percent;  /* 100 = STRIPE.md's backoff; tests use less */
    int64_t reconcile_interval_ms;   /* how often the job runs */
    int64_t reconcile_age_ms;        /* a payment untouched this long is checked */
    int64_t abandon_after_ms;        /* unpaid this long: canceled at Stripe */
    int64_t outbox_interval_ms;      /* outbox pump period */
    int64_t tenant_cache_ms;         /* how long keys/settings are cached */
    const char *fault;               /* test-only crash point ("" = none) */
} payment_config_t;

/* Fills c with the defaults above (addresses from ARCHITECTURE.md). */
void payment_config_defaults (payment_config_t *c);

/* The actor (zactor_new (payment_server_actor, &config)); config is read
   before the actor reports "OK"/"ERROR", so it may live on the stack. */
void payment_server_actor (zsock_t *pipe, void *args);

/* Starts the actor and waits for its report. On success returns it and,
   when not NULL, *rpc_endpoint / *pub_endpoint (caller frees); NULL with
   *error (caller frees) otherwise. */
zactor_t *payment_server_start (const payment_config_t *config, char **rpc_endpoint,
                                char **pub_endpoint, char **error);

#endif
