/*  gateway_server: the gateway actor. It owns the HTTP server
    (gateway_http), one RPC client per service, the event subscription
    that feeds server-sent events, and the caches of credentials, all in one
    zloop: nothing here blocks, and nothing here is shared with another
    thread except through gateway_http's hand-off.

    Every request goes: route table → credentials (admin key through
    config.VerifyAdminKey, or user token verified with the tenant's secret
    from config.GetUserTokenSecret; both cached for PPM_GATEWAY_AUTH_CACHE
    and dropped on the tenant's config.changed, and a tenant's secret at
    once when an admin rotates it through this gateway)
    → the route's handler, which chains asynchronous RPCs and answers. A
    service that does not answer within the RPC deadline gives 503 with
    Retry-After; the gateway never waits longer than that.

    Pipe commands: "PORT" → replies the HTTP port as a string (0 when the
    server could not start); "METRICS_PORT" → the health/metrics port (0
    when none); "$TERM" ends.
*/
#ifndef GATEWAY_SERVER_H_INCLUDED
#define GATEWAY_SERVER_H_INCLUDED

#include <czmq.h>
#include <stdint.h>

typedef struct {
    const char *http_address;    /* e.g. "127.0.0.1" */
    int64_t http_port;           /* 0 = any free port */
    int64_t http_threads;        /* libmicrohttpd threads */
    const char *metrics_address; /* health and metrics listener; NULL = none */
    int64_t metrics_port;        /* its port (0 = any free port) */
    int64_t body_max;            /* request body cap, bytes */
    const char *web_root;        /* static pages directory (NULL = none) */
    const char *config_endpoint; /* RPC endpoints of the services */
    const char *rate_endpoint;
    const char *payment_endpoint;
    const char *metering_endpoint;
    const char *events_endpoints; /* comma-separated PUB endpoints (config, payment, metering) */
    int64_t rpc_timeout_ms;       /* deadline of each RPC */
    int64_t payment_timeout_ms;   /* deadline of payment.Checkout and .Confirm (they wait on
                                     Stripe); <= 0: 15 s */
    int64_t auth_cache_ms;        /* how long credentials stay cached */
    int64_t quote_cache_ms;       /* how long a GET /v1/quote answer is reused (0 = never) */
} gateway_config_t;

/* The actor; args is a gateway_config_t * (copied before the actor
   signals it is ready). */
void gateway_server_actor (zsock_t *pipe, void *args);

#endif
