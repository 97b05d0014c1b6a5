/*  metering_server: the metering service as a czmq actor.

    One zloop owns: the RPC server (metering.*), the PUB socket of session
    events, the client of payment.Settle, and three timers: the tick (every
    tick_ms of real time: runs what is due in the buckets this replica
    leases), the lease cycle (every lease_ms / 3: renews, balances and takes
    over bucket leases) and the settlement sender. Redis and PostgreSQL are
    reached with bounded blocking calls (metering_store, metering_db).

    Pipe commands (tests, main): "PORT" → the RPC port as a string, "PUB"
    → the event endpoint, "BUCKETS" → how many buckets this replica holds,
    "$TERM" ends the actor. When start-up failed, "PORT" answers "-1".
*/
#ifndef METERING_SERVER_H_INCLUDED
#define METERING_SERVER_H_INCLUDED

#include <czmq.h>
#include <stdint.h>

typedef struct {
    const char *rpc_bind;         /* "tcp://127.0.0.1:7131" */
    const char *pub_bind;         /* "tcp://127.0.0.1:7132" */
    const char *redis_url;        /* "redis://127.0.0.1:6379" */
    const char *pg_url;           /* "postgresql://…" */
    const char *payment_endpoint; /* payment's RPC endpoint(s); NULL/"" = no settlement delivery */
    const char *replica_id;       /* NULL: host name + pid + random */
    int64_t tick_ms;              /* real ms between ticks */
    int64_t lease_ms;             /* real ms a bucket lease lasts */
    int64_t buckets;              /* number of deadline buckets (same on every replica) */
    int64_t retention_ms;         /* real ms a finished session stays in Redis */
    int64_t batch;                /* most sessions per bucket per tick */
} metering_config_t;

/* The actor; args is a metering_config_t * (copied at start). */
void metering_server_actor (zsock_t *pipe, void *args);

#endif
