/*  bench_quote: rate.Quote over ZeroMQ against a bare libzmq ROUTER/DEALER
    echo of the same message sizes, measured in the same run (SPEC §7:
    throughput ≥ 50 % of the echo's, median round trip ≤ 1.5 × the echo's).

    The rate actor runs in-process with 10,000 tenants × 100 individual
    rates preloaded (no config service: the cache is built directly), each
    request for a random (tenant, payee) among them. Both servers are driven
    by the same raw DEALER client sending the same pre-packed envelopes, so
    the difference is the server's work only. The echo answers each request
    with a frame as large as a real quote reply. Runs alternate between the
    two servers (S_ROUNDS rounds) and each figure is a median, so that a
    busy machine disturbs both alike. The figures are printed for a reader
    and as result lines (tests/lib/ppm_bench.h) for docs/BENCHMARKS.md.

    Usage: bench_quote [tenants] [rates_per_tenant] [seconds of throughput runs per server]
*/
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ppm_clock.h"
#include "ppm_log.h"
#include "proto/config.pb-c.h"
#include "proto/envelope.pb-c.h"
#include "proto/rate.pb-c.h"
#include "services/config/config_settings.h"
#include "services/rate/rate_cache.h"
#include "services/rate/rate_server.h"
#include "tests/lib/ppm_bench.h"

#define S_REQUESTS 1024 /* distinct pre-packed requests, cycled */
#define S_WINDOW   100  /* requests in flight for the throughput run (as bench_rpc_echo) */
#define S_ROUNDS   7    /* alternating rate/echo rounds; medians reported */

typedef struct {
    zframe_t *frames[S_REQUESTS]; /* packed envelopes */
    size_t reply_size;            /* size of a real reply frame */
} s_load_t;

static rate_cache_t *
s_build_cache (int tenants, int rates)
{
    rate_cache_t *cache = rate_cache_new ();
    Ppm__V1__Settings defaults = PPM__V1__SETTINGS__INIT;
    config_settings_defaults (&defaults);
    Ppm__V1__Settings *s = config_settings_dup (&defaults);
    const char *error;
    config_settings_set_text (s, "enabled", "true", &error);
    config_settings_set_text (s, "terms_url", "https://example.com/terms", &error);
    config_settings_set_text (s, "rate_scope", "individual", &error);
    for (int t = 0; t < tenants; t++) {
        char id[32];
        snprintf (id, sizeof id, "t_%08d", t);
        rate_tenant_t *tenant = rate_tenant_new (id, "pro", 1, s);
        for (int r = 0; r < rates; r++) {
            char payee[32];
            snprintf (payee, sizeof payee, "payee_%04d", r);
            rate_user_t u = {.call = {100 + r, true}, .chat = {50 + r, true}};
            rate_tenant_set_user (tenant, payee, u);
        }
        rate_cache_replace (cache, &tenant);
    }
    config_settings_free (&s);
    return cache;
}

static void
s_build_requests (s_load_t *load, int tenants, int rates)
{
    for (int i = 0; i < S_REQUESTS; i++) {
        char tenant[32], payee[32];
        snprintf (tenant, sizeof tenant, "t_%08d", (int)(random () % tenants));
        snprintf (payee, sizeof payee, "payee_%04d", (int)(random () % rates));
        Ppm__V1__QuoteRequest req = PPM__V1__QUOTE_REQUEST__INIT;
        req.payee = payee;
        req.payer = "payer_0001";
        req.kind = i % 2 ? "call" : "chat";
        uint8_t payload[256];
        size_t payload_len = ppm__v1__quote_request__pack (&req, payload);
        Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
        env.version = 1;
        env.kind = PPM__V1__KIND__KIND_REQUEST;
        env.method = "rate.Quote";
        env.request_id = (uint64_t)i + 1;
        env.trace_id = "0123456789abcdef0123456789abcdef";
        env.tenant_id = tenant;
        env.payload.data = payload;
        env.payload.len = payload_len;
        size_t size = ppm__v1__envelope__get_packed_size (&env);
        zframe_t *frame = zframe_new (NULL, size);
        ppm__v1__envelope__pack (&env, zframe_data (frame));
        load->frames[i] = frame;
    }
}

/* The bare echo: ROUTER answering every request with reply_size bytes. */
static void
s_echo_actor (zsock_t *pipe, void *args)
{
    size_t reply_size = *(size_t *)args;
    zsock_t *router = zsock_new_router ("tcp://127.0.0.1:*");
    zsock_signal (pipe, 0);
    zstr_send (pipe, zsock_endpoint (router));
    zframe_t *reply = zframe_new (NULL, reply_size);
    memset (zframe_data (reply), 'x', reply_size);
    zpoller_t *poller = zpoller_new (pipe, router, NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (which != router)
            break;
        /* Drain everything that is there. */
        while (zsock_events (router) & ZMQ_POLLIN) {
            zframe_t *id = zframe_recv (router);
            zframe_t *req = zframe_recv (router);
            zframe_send (&id, router, ZFRAME_MORE);
            zframe_send (&reply, router, ZFRAME_REUSE);
            zframe_destroy (&req);
        }
    }
    zframe_destroy (&reply);
    zpoller_destroy (&poller);
    zsock_destroy (&router);
}

typedef struct {
    double per_second; /* replies per second with S_WINDOW in flight */
    double median_us;  /* round trip, one in flight */
    size_t reply_bytes;
} s_result_t;

static int
s_cmp_double (const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
s_median (double *values, int count)
{
    qsort (values, (size_t)count, sizeof *values, s_cmp_double);
    return values[count / 2];
}

static int
s_cmp_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static s_result_t
s_drive (const char *endpoint, s_load_t *load, double seconds)
{
    s_result_t result = {0, 0, 0};
    zsock_t *dealer = zsock_new_dealer (endpoint);
    zsock_set_rcvtimeo (dealer, 5000);
    /* Warm up and learn the reply size. */
    for (int i = 0; i < 500; i++) {
        zframe_send (&load->frames[i % S_REQUESTS], dealer, ZFRAME_REUSE);
        zframe_t *reply = zframe_recv (dealer);
        if (!reply) {
            fprintf (stderr, "bench_quote: no reply from %s\n", endpoint);
            exit (1);
        }
        result.reply_bytes = zframe_size (reply);
        zframe_destroy (&reply);
    }
    /* Round trips, one in flight. */
    enum { RTT_N = 5000 };
    int64_t *rtt = malloc (RTT_N * sizeof *rtt);
    for (int i = 0; i < RTT_N; i++) {
        int64_t start = ppm_clock_real_mono_us ();
        zframe_send (&load->frames[i % S_REQUESTS], dealer, ZFRAME_REUSE);
        zframe_t *reply = zframe_recv (dealer);
        rtt[i] = ppm_clock_real_mono_us () - start;
        zframe_destroy (&reply);
    }
    qsort (rtt, RTT_N, sizeof *rtt, s_cmp_i64);
    result.median_us = (double)rtt[RTT_N / 2];
    free (rtt);
    /* Throughput, S_WINDOW in flight. */
    int64_t start = ppm_clock_real_mono_us ();
    int64_t deadline = start + (int64_t)(seconds * 1e6);
    uint64_t sent = 0, received = 0;
    for (; sent < S_WINDOW; sent++)
        zframe_send (&load->frames[sent % S_REQUESTS], dealer, ZFRAME_REUSE);
    while (true) {
        zframe_t *reply = zframe_recv (dealer);
        if (!reply)
            break;
        zframe_destroy (&reply);
        received++;
        if (ppm_clock_real_mono_us () < deadline) {
            zframe_send (&load->frames[sent % S_REQUESTS], dealer, ZFRAME_REUSE);
            sent++;
        } else if (received == sent)
            break;
    }
    double elapsed = (double)(ppm_clock_real_mono_us () - start) / 1e6;
    result.per_second = (double)received / elapsed;
    zsock_destroy (&dealer);
    return result;
}

int
main (int argc, char **argv)
{
    int tenants = argc > 1 ? (int)strtol (argv[1], NULL, 10) : 10000;
    int rates = argc > 2 ? (int)strtol (argv[2], NULL, 10) : 100;
    double seconds = argc > 3 ? strtod (argv[3], NULL) : 7.0;
    if (tenants < 1 || rates < 1 || seconds <= 0) {
        fprintf (stderr, "usage: bench_quote [tenants] [rates_per_tenant] [seconds]\n");
        return 2;
    }
    ppm_log_init ("bench");
    ppm_log_set_level (PPM_LOG_ERROR);
    srandom (42);
    int64_t t0 = ppm_clock_real_mono_us ();
    rate_cache_t *cache = s_build_cache (tenants, rates);
    printf ("loaded %d tenants x %d individual rates in %.1f s\n", tenants, rates,
            (double)(ppm_clock_real_mono_us () - t0) / 1e6);
    s_load_t load;
    s_build_requests (&load, tenants, rates);

    rate_server_args_t args = {.rpc_bind = "tcp://127.0.0.1:*", .preload = cache};
    zactor_t *rate = rate_server_start (&args);
    if (!rate) {
        fprintf (stderr, "bench_quote: rate did not start\n");
        return 1;
    }
    zstr_send (rate, "ENDPOINT");
    char *rate_endpoint = zstr_recv (rate);
    /* A first short run learns the size of a real reply for the echo. */
    s_result_t quote = s_drive (rate_endpoint, &load, 0.2);
    zactor_t *echo = zactor_new (s_echo_actor, &quote.reply_bytes);
    char *echo_endpoint = zstr_recv (echo);

    /* Rounds alternate rate and echo so that both see the same background
       load; each figure is the median over the rounds. */
    double q_tp[S_ROUNDS], q_rtt[S_ROUNDS], e_tp[S_ROUNDS], e_rtt[S_ROUNDS];
    for (int r = 0; r < S_ROUNDS; r++) {
        s_result_t a = s_drive (rate_endpoint, &load, seconds / S_ROUNDS);
        s_result_t b = s_drive (echo_endpoint, &load, seconds / S_ROUNDS);
        q_tp[r] = a.per_second;
        q_rtt[r] = a.median_us;
        e_tp[r] = b.per_second;
        e_rtt[r] = b.median_us;
    }
    quote.per_second = s_median (q_tp, S_ROUNDS);
    quote.median_us = s_median (q_rtt, S_ROUNDS);
    s_result_t bare = {.per_second = s_median (e_tp, S_ROUNDS),
                       .median_us = s_median (e_rtt, S_ROUNDS)};

    size_t request_bytes = zframe_size (load.frames[0]);
    printf ("message sizes: request %zu B, reply %zu B\n", request_bytes, quote.reply_bytes);
    printf ("bare zmq echo : %10.0f msg/s  median RTT %6.1f us\n", bare.per_second, bare.median_us);
    printf ("rate.Quote    : %10.0f msg/s  median RTT %6.1f us\n", quote.per_second,
            quote.median_us);
    double throughput_ratio = quote.per_second / bare.per_second;
    double rtt_ratio = quote.median_us / bare.median_us;
    printf ("ratio         : throughput %.0f %% of echo (target >= 50 %%), median RTT %.2fx "
            "echo (target <= 1.5x)\n",
            throughput_ratio * 100, rtt_ratio);
    fflush (stdout);

    char figure[64];
    char baseline[64];
    char ratio[64];
    snprintf (figure, sizeof figure, "%.0f req/s", quote.per_second);
    snprintf (baseline, sizeof baseline, "%.0f req/s", bare.per_second);
    snprintf (ratio, sizeof ratio, "%.2f", throughput_ratio);
    ppm_bench_result ("quote.throughput", "rate.Quote throughput, 100 in flight", figure, baseline,
                      ratio, ">= 0.50 x bare ROUTER/DEALER echo",
                      ppm_bench_met (throughput_ratio >= 0.5));
    snprintf (figure, sizeof figure, "%.1f us", quote.median_us);
    snprintf (baseline, sizeof baseline, "%.1f us", bare.median_us);
    snprintf (ratio, sizeof ratio, "%.2f", rtt_ratio);
    ppm_bench_result ("quote.rtt", "rate.Quote median round trip, 1 in flight", figure, baseline,
                      ratio, "<= 1.5 x bare", ppm_bench_met (rtt_ratio <= 1.5));
    ppm_bench_note ("quote",
                    "bench_quote: the rate actor in-process with %d tenants x %d individual "
                    "rates preloaded, each request for a random (tenant, payee); the baseline is "
                    "a bare ROUTER answering every request with a frame as large as a real quote "
                    "reply (request %zu B, reply %zu B). One raw DEALER drives both with the "
                    "same pre-packed envelopes: round trips with one in flight (5000), then "
                    "throughput with %d in flight; %d rounds alternate rate and echo, each "
                    "figure is the median over the rounds.",
                    tenants, rates, request_bytes, quote.reply_bytes, S_WINDOW, S_ROUNDS);

    zstr_free (&rate_endpoint);
    zstr_free (&echo_endpoint);
    zactor_destroy (&echo);
    zactor_destroy (&rate);
    for (int i = 0; i < S_REQUESTS; i++)
        zframe_destroy (&load.frames[i]);
    return 0;
}
