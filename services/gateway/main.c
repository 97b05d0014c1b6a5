/*  ppm-gateway: the HTTP edge of ppm. Reads its configuration from PPM_*
    variables, starts the gateway actor, waits for SIGTERM/SIGINT, stops it.
*/
#include <czmq.h>
#include <stdio.h>

#include "gateway_server.h"
#include "ppm_clock.h"
#include "ppm_curve.h"
#include "ppm_env.h"
#include "ppm_log.h"

/* Splits "host:port" (empty text = leave *port alone, host ""); -1 when
   malformed. */
static int
s_split_bind (const char *text, char *host, size_t size, int64_t *port)
{
    host[0] = '\0';
    if (!text || !*text || strcmp (text, "off") == 0)
        return 0;
    const char *colon = strrchr (text, ':');
    if (!colon || colon == text || (size_t)(colon - text) >= size)
        return -1;
    char *end = NULL;
    long value = strtol (colon + 1, &end, 10);
    if (!end || *end || value < 0 || value > 65535)
        return -1;
    memcpy (host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    if (strcmp (host, "*") == 0)
        snprintf (host, size, "0.0.0.0");
    *port = value;
    return 0;
}

int
main (int argc, char **argv)
{
    gateway_config_t cfg;
    memset (&cfg, 0, sizeof cfg);
    char *address = NULL;
    char *http_bind = NULL;
    char *metrics_bind = NULL;
    char *web_root = NULL;
    char *config_ep = NULL;
    char *rate_ep = NULL;
    char *payment_ep = NULL;
    char *metering_ep = NULL;
    char *config_ev = NULL;
    char *payment_ev = NULL;
    char *metering_ev = NULL;
    ppm_env_t env[] = {
        {"PPM_HTTP_ADDRESS", PPM_ENV_STRING, .def = "127.0.0.1", .out = &address,
         .help = "address the HTTP server binds"},
        {"PPM_HTTP_PORT", PPM_ENV_INT, .min = 0, .max = 65535, .def = "8080", .out = &cfg.http_port,
         .help = "HTTP port (0 = any)"},
        {"PPM_HTTP_BIND", PPM_ENV_STRING, .def = "", .out = &http_bind,
         .help = "host:port of the HTTP server (overrides PPM_HTTP_ADDRESS/PORT)"},
        {"PPM_METRICS_BIND", PPM_ENV_STRING, .def = "127.0.0.1:9141", .out = &metrics_bind,
         .help = "host:port serving only /healthz, /readyz, /metrics (off = none)"},
        {"PPM_HTTP_THREADS", PPM_ENV_INT, .min = 1, .max = 64, .def = "2", .out = &cfg.http_threads,
         .help = "libmicrohttpd polling threads"},
        {"PPM_HTTP_BODY_MAX", PPM_ENV_INT, .min = 1024, .max = 16777216, .def = "65536",
         .out = &cfg.body_max, .help = "request body cap in bytes"},
        {"PPM_WEB_ROOT", PPM_ENV_STRING, .def = "services/gateway/web", .out = &web_root,
         .help = "directory of the static pages"},
        {"PPM_CONFIG_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7101", .out = &config_ep},
        {"PPM_RATE_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7111", .out = &rate_ep},
        {"PPM_PAYMENT_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7121", .out = &payment_ep},
        {"PPM_METERING_ENDPOINT", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7131",
         .out = &metering_ep},
        {"PPM_CONFIG_EVENTS", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7102", .out = &config_ev},
        {"PPM_PAYMENT_EVENTS", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7122", .out = &payment_ev},
        {"PPM_METERING_EVENTS", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7132", .out = &metering_ev},
        {"PPM_RPC_TIMEOUT", PPM_ENV_DURATION, .min = 50, .max = 60000, .def = "2s",
         .out = &cfg.rpc_timeout_ms, .help = "deadline of each RPC (503 after it)"},
        {"PPM_GATEWAY_PAYMENT_TIMEOUT", PPM_ENV_DURATION, .min = 50, .max = 120000, .def = "15s",
         .out = &cfg.payment_timeout_ms,
         .help = "deadline of checkout and confirm, which wait on Stripe (503 after it)"},
        {"PPM_GATEWAY_AUTH_CACHE", PPM_ENV_DURATION, .min = 0, .max = 600000, .def = "30s",
         .out = &cfg.auth_cache_ms, .help = "how long verified credentials are cached"},
        {"PPM_GATEWAY_QUOTE_CACHE", PPM_ENV_DURATION, .min = 0, .max = 60000, .def = "1s",
         .out = &cfg.quote_cache_ms,
         .help = "how long a quote answer is reused (dropped on config.changed)"},
        {NULL}};
    if (argc > 1 && (streq (argv[1], "--help") || streq (argv[1], "-h"))) {
        ppm_env_usage (env, stdout);
        return 0;
    }
    ppm_log_init ("gateway");
    const char *error = NULL;
    if (ppm_env_load (env, &error) || ppm_clock_init (&error) || ppm_curve_init (&error)) {
        fprintf (stderr, "ppm-gateway: %s\n", error);
        return 1;
    }
    ppm_env_log (env);
    char events[1024];
    snprintf (events, sizeof events, "%s,%s,%s", config_ev, payment_ev, metering_ev);
    cfg.http_address = address;
    char http_host[64] = "";
    char metrics_host[64] = "";
    if (s_split_bind (http_bind, http_host, sizeof http_host, &cfg.http_port) ||
        s_split_bind (metrics_bind, metrics_host, sizeof metrics_host, &cfg.metrics_port)) {
        fprintf (stderr, "ppm-gateway: PPM_HTTP_BIND/PPM_METRICS_BIND must be host:port\n");
        return 1;
    }
    if (*http_host)
        cfg.http_address = http_host;
    cfg.metrics_address = *metrics_host ? metrics_host : NULL;
    cfg.web_root = web_root;
    cfg.config_endpoint = config_ep;
    cfg.rate_endpoint = rate_ep;
    cfg.payment_endpoint = payment_ep;
    cfg.metering_endpoint = metering_ep;
    cfg.events_endpoints = events;

    zsys_handler_set (NULL);
    /* Block the signals before any thread starts, so that every thread
       inherits the mask and only sigwait below receives them. */
    sigset_t set;
    sigemptyset (&set);
    sigaddset (&set, SIGTERM);
    sigaddset (&set, SIGINT);
    pthread_sigmask (SIG_BLOCK, &set, NULL);
    zactor_t *actor = zactor_new (gateway_server_actor, &cfg);
    zstr_send (actor, "PORT");
    char *port = zstr_recv (actor);
    int rc = 0;
    if (!port || streq (port, "0") || !*port) {
        rc = 1;
    } else {
        int sig = 0;
        sigwait (&set, &sig);
        ppm_log_info ("gateway stopping (signal %d)", sig);
    }
    free (port);
    zactor_destroy (&actor);
    ppm_curve_shutdown ();
    ppm_env_free (env);
    return rc;
}
