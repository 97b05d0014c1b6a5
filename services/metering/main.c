/*  ppm-metering: sessions and their clocks. Reads its configuration from
    PPM_* variables, starts the metering actor, waits for SIGTERM/SIGINT,
    stops it (giving up its bucket leases so another replica takes over at
    once).
*/
#include <czmq.h>
#include <stdio.h>

#include "metering_server.h"
#include "ppm_clock.h"
#include "ppm_curve.h"
#include "ppm_env.h"
#include "ppm_log.h"
#include "ppm_metrics.h"

int
main (int argc, char **argv)
{
    metering_config_t cfg;
    memset (&cfg, 0, sizeof cfg);
    char *rpc_bind = NULL;
    char *pub_bind = NULL;
    char *redis_url = NULL;
    char *pg_url = NULL;
    char *payment_ep = NULL;
    char *replica = NULL;
    char *metrics_bind = NULL;
    ppm_env_t env[] = {
        {"PPM_RPC_BIND", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7131", .out = &rpc_bind,
         .help = "metering.* RPC endpoint (ROUTER)"},
        {"PPM_PUB_BIND", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7132", .out = &pub_bind,
         .help = "session.* events (PUB)"},
        {"PPM_METRICS_BIND", PPM_ENV_STRING, .def = "127.0.0.1:9131", .out = &metrics_bind,
         .help = "/metrics, /healthz, /readyz (host:port)"},
        {"PPM_REDIS_URL", PPM_ENV_STRING, .def = "redis://127.0.0.1:6379", .out = &redis_url,
         .help = "live session state"},
        {"PPM_PG_URL", PPM_ENV_STRING, .required = true, .secret = true, .out = &pg_url,
         .help = "PostgreSQL (schema metering)"},
        {"PPM_PAYMENT_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7121", .out = &payment_ep,
         .help = "payment service, for payment.Settle"},
        {"PPM_METERING_REPLICA_ID", PPM_ENV_STRING, .def = "", .out = &replica,
         .help = "name in bucket leases (default host-pid-random)"},
        {"PPM_METERING_TICK", PPM_ENV_DURATION, .min = 5, .max = 5000, .def = "200ms",
         .out = &cfg.tick_ms, .help = "real time between ticks (expiry is at most one tick late)"},
        {"PPM_METERING_LEASE", PPM_ENV_DURATION, .min = 300, .max = 60000, .def = "3s",
         .out = &cfg.lease_ms, .help = "bucket lease; a dead replica's buckets move after it"},
        {"PPM_METERING_BUCKETS", PPM_ENV_INT, .min = 1, .max = 1024, .def = "64",
         .out = &cfg.buckets, .help = "deadline buckets (the same on every replica)"},
        {"PPM_METERING_RETENTION", PPM_ENV_DURATION, .min = 1000, .max = 2592000000LL, .def = "24h",
         .out = &cfg.retention_ms, .help = "how long a finished session stays in Redis"},
        {"PPM_METERING_BATCH", PPM_ENV_INT, .min = 10, .max = 1000000, .def = "20000",
         .out = &cfg.batch, .help = "most due sessions per bucket per tick"},
        {NULL}};
    if (argc > 1 && (streq (argv[1], "--help") || streq (argv[1], "-h"))) {
        ppm_env_usage (env, stdout);
        return 0;
    }
    ppm_log_init ("metering");
    const char *error = NULL;
    if (ppm_env_load (env, &error) || ppm_clock_init (&error) || ppm_curve_init (&error)) {
        fprintf (stderr, "ppm-metering: %s\n", error);
        return 1;
    }
    ppm_env_log (env);
    cfg.rpc_bind = rpc_bind;
    cfg.pub_bind = pub_bind;
    cfg.redis_url = redis_url;
    cfg.pg_url = pg_url;
    cfg.payment_endpoint = payment_ep;
    cfg.replica_id = replica;

    zsys_handler_set (NULL);
    sigset_t set;
    sigemptyset (&set);
    sigaddset (&set, SIGTERM);
    sigaddset (&set, SIGINT);
    pthread_sigmask (SIG_BLOCK, &set, NULL);
    zactor_t *actor = zactor_new (metering_server_actor, &cfg);
    zstr_send (actor, "PORT");
    char *port = zstr_recv (actor);
    int rc = 0;
    if (!port || streq (port, "-1") || !*port) {
        fprintf (stderr, "ppm-metering: start-up failed (see log)\n");
        rc = 1;
    } else {
        ppm_metrics_server_t *metrics =
            ppm_metrics_server_new (ppm_metrics_global (), metrics_bind, NULL, NULL);
        if (!metrics) {
            fprintf (stderr, "ppm-metering: cannot serve metrics on %s\n", metrics_bind);
            rc = 1;
        } else {
            ppm_metrics_server_set_ready (metrics, true);
            int sig = 0;
            sigwait (&set, &sig);
            ppm_log_info ("metering stopping (signal %d)", sig);
            ppm_metrics_server_set_ready (metrics, false);
            ppm_metrics_server_destroy (&metrics);
        }
    }
    free (port);
    zactor_destroy (&actor);
    ppm_curve_shutdown ();
    ppm_env_free (env);
    return rc;
}
