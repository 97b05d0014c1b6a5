/*  ppm-config: the config service's process. Reads its environment (one
    table), refuses to start without a master key unless PPM_DEMO=1 (which
    uses a fixed, logged-as-unsafe demo key), starts config_server_actor
    and waits for SIGTERM/SIGINT. */
#include <czmq.h>
#include <stdio.h>
#include "config_crypto.h"
#include "config_server.h"
#include "ppm_clock.h"
#include "ppm_curve.h"
#include "ppm_env.h"
#include "ppm_log.h"
#include "ppm_metrics.h"

int
main (int argc, char **argv)
{
    struct {
        char *rpc_bind;
        char *metrics_bind;
        char *pub_bind;
        char *pg_url;
        char *master_key;
        bool demo;
        int64_t statement_timeout_ms;
    } cfg = {0};
    ppm_env_t env[] = {
        {"PPM_METRICS_BIND", PPM_ENV_STRING, .def = "127.0.0.1:9101", .out = &cfg.metrics_bind,
         .help = "/metrics, /healthz, /readyz (host:port)"},
        {"PPM_RPC_BIND", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7101", .out = &cfg.rpc_bind,
         .help = "RPC (ROUTER) endpoint"},
        {"PPM_PUB_BIND", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7102", .out = &cfg.pub_bind,
         .help = "config.changed events (PUB) endpoint"},
        {"PPM_PG_URL", PPM_ENV_STRING, .required = true, .secret = true, .out = &cfg.pg_url,
         .help = "PostgreSQL URL"},
        {"PPM_MASTER_KEY", PPM_ENV_STRING, .secret = true, .out = &cfg.master_key,
         .help = "64 hex characters: the key sealing tenants' secrets"},
        {"PPM_DEMO", PPM_ENV_BOOL, .def = "0", .out = &cfg.demo,
         .help = "1: without PPM_MASTER_KEY, use the fixed demo key (never in production)"},
        {"PPM_CONFIG_STATEMENT_TIMEOUT", PPM_ENV_DURATION, .min = 100, .max = 60000, .def = "2s",
         .out = &cfg.statement_timeout_ms, .help = "bound on each PostgreSQL statement"},
        {NULL}};
    if (argc > 1 && (streq (argv[1], "--help") || streq (argv[1], "-h"))) {
        printf ("ppm-config: tenants, settings, rates, admin keys, audit log\n\n");
        ppm_env_usage (env, stdout);
        return 0;
    }
    ppm_log_init ("config");
    const char *error = NULL;
    if (ppm_env_load (env, &error) || ppm_clock_init (&error) || ppm_curve_init (&error)) {
        fprintf (stderr, "ppm-config: %s\n", error);
        return 1;
    }
    ppm_env_log (env);
    uint8_t key[CONFIG_MASTER_KEY_BYTES];
    if (config_crypto_init ()) {
        fprintf (stderr, "ppm-config: libsodium failed to initialise\n");
        return 1;
    }
    if (cfg.master_key && *cfg.master_key) {
        if (config_crypto_parse_key (cfg.master_key, key)) {
            fprintf (stderr, "ppm-config: PPM_MASTER_KEY must be 64 hex characters\n");
            ppm_env_free (env);
            return 1;
        }
    } else if (cfg.demo) {
        config_crypto_demo_key (key);
        ppm_log_warn ("PPM_DEMO=1 and no PPM_MASTER_KEY: secrets are sealed with the public demo "
                      "key; never use this with real keys");
    } else {
        fprintf (stderr, "ppm-config: PPM_MASTER_KEY is required (or PPM_DEMO=1 for the demo)\n");
        ppm_env_free (env);
        return 1;
    }
    config_server_args_t args = {.rpc_bind = cfg.rpc_bind,
                                 .pub_bind = cfg.pub_bind,
                                 .pg_url = cfg.pg_url,
                                 .master_key = key,
                                 .statement_timeout_ms = cfg.statement_timeout_ms};
    zactor_t *server = config_server_start (&args);
    memset (key, 0, sizeof key);
    if (!server) {
        fprintf (stderr, "ppm-config: could not start (see the log)\n");
        ppm_env_free (env);
        return 1;
    }
    ppm_metrics_server_t *metrics =
        ppm_metrics_server_new (ppm_metrics_global (), cfg.metrics_bind, NULL, NULL);
    if (!metrics) {
        fprintf (stderr, "ppm-config: cannot serve metrics on %s\n", cfg.metrics_bind);
        zactor_destroy (&server);
        ppm_env_free (env);
        return 1;
    }
    ppm_metrics_server_set_ready (metrics, true);
    while (!zsys_interrupted)
        zclock_sleep (100);
    ppm_metrics_server_set_ready (metrics, false);
    ppm_metrics_server_destroy (&metrics);
    ppm_log_info ("config: stopping");
    zactor_destroy (&server);
    ppm_curve_shutdown ();
    ppm_env_free (env);
    return 0;
}
