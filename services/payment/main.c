/*  ppm-payment: the payment service's process. Reads its environment,
    starts payment_server_actor (ledger, Stripe client, outbox,
    reconciliation) and waits for SIGTERM/SIGINT. */
#include <czmq.h>
#include <stdio.h>
#include "ppm_clock.h"
#include "ppm_curve.h"
#include "ppm_env.h"
#include "ppm_log.h"
#include "ppm_metrics.h"
#include "payment_server.h"

int
main (int argc, char **argv)
{
    payment_config_t config;
    payment_config_defaults (&config);
    struct {
        char *rpc_bind, *pub_bind, *metrics_bind, *config_endpoint, *config_events;
        char *metering_endpoint, *pg_url, *api_base, *fault;
    } s = {0};
    ppm_env_t env[] = {
        {"PPM_RPC_BIND", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7121", .out = &s.rpc_bind,
         .help = "RPC (ROUTER) endpoint"},
        {"PPM_PUB_BIND", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7122", .out = &s.pub_bind,
         .help = "events (PUB) endpoint"},
        {"PPM_METRICS_BIND", PPM_ENV_STRING, .def = "127.0.0.1:9121", .out = &s.metrics_bind,
         .help = "/metrics, /healthz, /readyz (host:port)"},
        {"PPM_CONFIG_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7101",
         .out = &s.config_endpoint, .help = "config service RPC"},
        {"PPM_CONFIG_EVENTS", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7102",
         .out = &s.config_events, .help = "config service events (\"\" = none)"},
        {"PPM_METERING_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7131",
         .out = &s.metering_endpoint, .help = "metering service RPC"},
        {"PPM_PG_URL", PPM_ENV_STRING, .required = true, .secret = true, .out = &s.pg_url,
         .help = "PostgreSQL URL (schema payment)"},
        {"PPM_STRIPE_API_BASE", PPM_ENV_STRING, .def = "https://api.stripe.com", .out = &s.api_base,
         .help = "Stripe API base URL (the emulator in tests)"},
        {"PPM_PG_STATEMENT_TIMEOUT", PPM_ENV_DURATION, .min = 100, .max = 60000, .def = "2s",
         .out = &config.pg_statement_timeout_ms, .help = "bound on each SQL statement"},
        {"PPM_STRIPE_TIMEOUT", PPM_ENV_DURATION, .min = 100, .max = 120000, .def = "10s",
         .out = &config.stripe_timeout_ms, .help = "per Stripe attempt"},
        {"PPM_STRIPE_RETRIES", PPM_ENV_INT, .min = 0, .max = 10, .def = "3",
         .out = &config.stripe_retries, .help = "retries of a Stripe call (STRIPE.md rules)"},
        {"PPM_STRIPE_BACKOFF_PERCENT", PPM_ENV_INT, .min = 1, .max = 100, .def = "100",
         .out = &config.stripe_backoff_percent, .help = "scales the retry backoff (tests)"},
        {"PPM_PAYMENT_RECONCILE_EVERY", PPM_ENV_DURATION, .min = 100, .max = 3600000, .def = "60s",
         .out = &config.reconcile_interval_ms, .help = "reconciliation job period"},
        {"PPM_PAYMENT_RECONCILE_AGE", PPM_ENV_DURATION, .min = 0, .max = 86400000, .def = "2m",
         .out = &config.reconcile_age_ms,
         .help = "a payment unchanged this long is checked at Stripe"},
        {"PPM_PAYMENT_ABANDON_AFTER", PPM_ENV_DURATION, .min = 0, .max = 7 * 86400000LL,
         .def = "24h", .out = &config.abandon_after_ms,
         .help = "an unpaid payment this old is canceled at Stripe"},
        {"PPM_PAYMENT_OUTBOX_EVERY", PPM_ENV_DURATION, .min = 10, .max = 60000, .def = "500ms",
         .out = &config.outbox_interval_ms, .help = "outbox (metering.Fund) pump period"},
        {"PPM_PAYMENT_TENANT_CACHE", PPM_ENV_DURATION, .min = 0, .max = 600000, .def = "5s",
         .out = &config.tenant_cache_ms, .help = "keys/settings cache lifetime"},
        {"PPM_PAYMENT_FAULT", PPM_ENV_STRING, .def = "", .out = &s.fault,
         .help = "test only: crash point (after_stripe_create, after_stripe_confirm)"},
        {NULL},
    };
    if (argc > 1 && (streq (argv[1], "--help") || streq (argv[1], "-h"))) {
        printf ("ppm-payment: Stripe payments, ledger, settlement, webhooks\n\n");
        ppm_env_usage (env, stdout);
        return 0;
    }
    ppm_log_init ("payment");
    const char *error = NULL;
    if (ppm_env_load (env, &error) || ppm_clock_init (&error) || ppm_curve_init (&error)) {
        fprintf (stderr, "ppm-payment: %s\n", error);
        return 1;
    }
    ppm_env_log (env);
    config.rpc_bind = s.rpc_bind;
    config.pub_bind = s.pub_bind;
    config.config_endpoint = s.config_endpoint;
    config.config_events = s.config_events;
    config.metering_endpoint = s.metering_endpoint;
    config.pg_url = s.pg_url;
    config.stripe_api_base = s.api_base;
    config.fault = s.fault;
    char *start_error = NULL;
    zactor_t *server = payment_server_start (&config, NULL, NULL, &start_error);
    if (!server) {
        fprintf (stderr, "ppm-payment: %s\n", start_error ? start_error : "could not start");
        free (start_error);
        ppm_env_free (env);
        return 1;
    }
    ppm_metrics_server_t *metrics =
        ppm_metrics_server_new (ppm_metrics_global (), s.metrics_bind, NULL, NULL);
    if (!metrics)
        ppm_log_warn ("payment: cannot serve metrics on %s", s.metrics_bind);
    else
        ppm_metrics_server_set_ready (metrics, true); /* schema migrated, sockets bound */
    while (!zsys_interrupted)
        zclock_sleep (100);
    ppm_metrics_server_destroy (&metrics);
    ppm_log_info ("payment: stopping");
    zactor_destroy (&server);
    ppm_curve_shutdown ();
    ppm_env_free (env);
    return 0;
}
