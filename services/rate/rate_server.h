/*  rate_server: the rate service as an actor. It answers "rate.Quote" from
    its in-memory rate_cache only (no PostgreSQL, no call to config on the
    quote path once a tenant is cached), and keeps the cache fresh:

      - config.changed.<tenant> (SUB on config's PUB) makes it fetch that
        tenant's snapshot at once (config.GetSnapshot, asynchronously);
      - every refresh_ms it lists every tenant's revision
        (config.ListRevisions) and fetches those whose revision differs,
        so a lost event delays a change by at most one period plus a fetch.
    Staleness bound: a committed change is visible to quotes within
    2 × refresh_ms (default refresh 1000 ms: within 2 s), also when the
    event is lost; typically within a few ms through the event.

    A quote for a tenant not cached yet waits (asynchronously, within the
    caller's deadline) for that tenant's first snapshot.

        rate_server_args_t args = {.rpc_bind = "tcp://127.0.0.1:*",
                                   .config_endpoint = …, .config_events = …};
        zactor_t *rate = rate_server_start (&args);
        zstr_send (rate, "ENDPOINT");  → one frame, the RPC endpoint
        zstr_send (rate, "STATS");     → "tenants=N refreshes=N fetches=N"
*/
#ifndef RATE_SERVER_H_INCLUDED
#define RATE_SERVER_H_INCLUDED

#include <czmq.h>
#include <stdatomic.h>
#include <stdint.h>
#include "rate_cache.h"

typedef struct {
    const char *rpc_bind;        /* ROUTER endpoint */
    const char *config_endpoint; /* config's RPC; NULL = no refresh (bench) */
    const char *config_events;   /* config's PUB; NULL = no events */
    int64_t refresh_ms;          /* period of the revision check; 0 = 1000 */
    rate_cache_t *preload;       /* optional: a cache to start from (taken) */
    atomic_bool *ready;          /* optional: set true once every tenant
                                    was loaded (first revision walk done,
                                    or at once without config); for /readyz */
} rate_server_args_t;

void rate_server_actor (zsock_t *pipe, void *args);
/* Starts the actor; NULL when it could not bind. The args' preload is
   taken (NULLed) in every case. */
zactor_t *rate_server_start (rate_server_args_t *args);

#endif
