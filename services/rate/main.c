/*  ppm-rate: the rate service's process. Reads its environment, starts
    rate_server_actor (which loads every tenant from config and keeps the
    cache fresh) and waits for SIGTERM/SIGINT. */
#include <czmq.h>
#include <stdatomic.h>
#include <stdio.h>
#include "ppm_clock.h"
#include "ppm_curve.h"
#include "ppm_env.h"
#include "ppm_log.h"
#include "ppm_metrics.h"
#include "rate_server.h"

static atomic_bool s_ready;

/* /readyz: every tenant loaded once (runs on the metrics thread). */
static bool
s_is_ready (void *arg)
{
    (void)arg;
    return atomic_load (&s_ready);
}

int
main (int argc, char **argv)
{
    struct {
        char *rpc_bind;
        char *metrics_bind;
        char *config_endpoint;
        char *config_events;
        int64_t refresh_ms;
    } cfg = {0};
    ppm_env_t env[] = {{"PPM_METRICS_BIND", PPM_ENV_STRING, .def = "127.0.0.1:9111",
                        .out = &cfg.metrics_bind,
                        .help = "/metrics, /healthz, /readyz (host:port)"},
                       {"PPM_RPC_BIND", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7111",
                        .out = &cfg.rpc_bind, .help = "RPC (ROUTER) endpoint"},
                       {"PPM_CONFIG_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7101",
                        .out = &cfg.config_endpoint, .help = "config service RPC"},
                       {"PPM_CONFIG_EVENTS", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7102",
                        .out = &cfg.config_events, .help = "config service events (PUB)"},
                       {"PPM_RATE_REFRESH", PPM_ENV_DURATION, .min = 50, .max = 60000, .def = "1s",
                        .out = &cfg.refresh_ms,
                        .help = "revision check period; a change is visible within twice this"},
                       {NULL}};
    if (argc > 1 && (streq (argv[1], "--help") || streq (argv[1], "-h"))) {
        printf ("ppm-rate: quotes from an in-memory copy of config\n\n");
        ppm_env_usage (env, stdout);
        return 0;
    }
    ppm_log_init ("rate");
    const char *error = NULL;
    if (ppm_env_load (env, &error) || ppm_clock_init (&error) || ppm_curve_init (&error)) {
        fprintf (stderr, "ppm-rate: %s\n", error);
        return 1;
    }
    ppm_env_log (env);
    rate_server_args_t args = {.rpc_bind = cfg.rpc_bind,
                               .config_endpoint = cfg.config_endpoint,
                               .config_events = cfg.config_events,
                               .refresh_ms = cfg.refresh_ms,
                               .ready = &s_ready};
    zactor_t *server = rate_server_start (&args);
    if (!server) {
        fprintf (stderr, "ppm-rate: could not start (see the log)\n");
        ppm_env_free (env);
        return 1;
    }
    ppm_metrics_server_t *metrics =
        ppm_metrics_server_new (ppm_metrics_global (), cfg.metrics_bind, s_is_ready, NULL);
    if (!metrics) {
        fprintf (stderr, "ppm-rate: cannot serve metrics on %s\n", cfg.metrics_bind);
        zactor_destroy (&server);
        ppm_env_free (env);
        return 1;
    }
    while (!zsys_interrupted)
        zclock_sleep (100);
    ppm_metrics_server_destroy (&metrics);
    ppm_log_info ("rate: stopping");
    zactor_destroy (&server);
    ppm_curve_shutdown ();
    ppm_env_free (env);
    return 0;
}
