/*  config_server: the config service as an actor (like malamute's
    mlm_server): a zloop with the ppm_rpc server answering "config.*", the
    PUB socket for config.changed, and the PostgreSQL connection.

        config_server_args_t args = {.rpc_bind = "tcp://127.0.0.1:*", …};
        zactor_t *server = zactor_new (config_server_actor, &args);
        zstr_send (server, "ENDPOINTS");   // replies rpc endpoint, pub endpoint
        char *rpc, *pub;
        zstr_recvx (server, &rpc, &pub, NULL);
        …
        zactor_destroy (&server);

    When it cannot start (no master key, database unreachable or
    migrations refused, bind failure) the actor logs why and answers every
    command with the single frame "FAILED" until "$TERM":
    config_server_start turns that into NULL. Commands on the pipe:
    "ENDPOINTS" (two frames: rpc endpoint, pub endpoint), "$TERM".

    Database calls block the actor's loop for at most the statement timeout
    (PPM_PG statement_timeout, 2 s by default here): config is off the hot
    paths (rate caches it; payment and gateway call it rarely).
*/
#ifndef CONFIG_SERVER_H_INCLUDED
#define CONFIG_SERVER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *rpc_bind;         /* ROUTER endpoint, e.g. "tcp://127.0.0.1:7101" */
    const char *pub_bind;         /* PUB endpoint for config.changed */
    const char *pg_url;           /* postgresql://… */
    const uint8_t *master_key;    /* 32 bytes (copied) */
    int64_t statement_timeout_ms; /* 0 = 2000 */
} config_server_args_t;

/* The actor; args is read before the first signal only. */
void config_server_actor (zsock_t *pipe, void *args);

/* Starts the actor and waits for its start signal. Returns NULL when it
   could not start. */
zactor_t *config_server_start (const config_server_args_t *args);

#endif
