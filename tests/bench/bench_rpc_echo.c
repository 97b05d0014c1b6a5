/*  bench_rpc_echo: what ppm_rpc costs over bare ZeroMQ.

    Two echo servers run in threads of this process, each on its own TCP
    port on 127.0.0.1: a ppm_rpc server ("echo.Echo", proto/echo.proto) and
    a bare ROUTER that sends every message straight back (raw zmq_recv /
    zmq_send). The bare messages are as large as ppm's packed request
    envelope, so both carry the same bytes. For each, from the main thread:

      throughput   requests/s with WINDOW requests in flight (a DEALER;
                   ppm_rpc's client attached to a zloop, one new call per
                   reply), over TOTAL requests after a warm-up;
      median RTT   one request in flight (ppm: ppm_rpc_client_call_sync),
                   over SAMPLES round trips.

    The two are measured alternately ROUNDS times (ppm first in even rounds,
    bare first in odd ones), because the machine running it is usually busy
    with other work: each round gives a ratio of two measurements taken
    moments apart, and the figures printed are the medians over the rounds
    (of each side and of the per-round ratios), with the load average
    before and after so a reader can tell a quiet run from a busy one.

    It prints one line per figure with the median ratio ppm/bare and the aim
    (throughput >= 50 % of bare, median RTT <= 1.5x bare), the same as
    result lines (tests/lib/ppm_bench.h) for docs/BENCHMARKS.md, and exits
    0 either way: the figures are for reading, the tests are elsewhere.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ppm_clock.h"
#include "ppm_log.h"
#include "ppm_rpc.h"
#include "proto/echo.pb-c.h"
#include "tests/lib/ppm_bench.h"

#ifndef WINDOW /* -DWINDOW=… for a short run, e.g. under callgrind */
#define WINDOW 100
#endif
#ifndef TOTAL
#define TOTAL 20000
#endif
#ifndef WARMUP
#define WARMUP 2000
#endif
#ifndef SAMPLES
#define SAMPLES 2000
#endif
#ifndef PAYLOAD
#define PAYLOAD 64
#endif
#ifndef ROUNDS
#define ROUNDS 7
#endif

/* ---- servers ---------------------------------------------------------- */

static void
s_echo (ppm_rpc_call_t *call, void *arg)
{
    (void)arg;
    Ppm__V1__EchoRequest *req =
        (Ppm__V1__EchoRequest *)ppm_rpc_call_unpack (call, &ppm__v1__echo_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "not an EchoRequest");
        return;
    }
    Ppm__V1__EchoReply reply = PPM__V1__ECHO_REPLY__INIT;
    reply.data = req->data;
    ppm_rpc_call_reply (&call, &reply.base);
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

static int
s_pipe_term (zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void)loop;
    (void)arg;
    char *command = zstr_recv (pipe);
    int rc = (!command || streq (command, "$TERM")) ? -1 : 0;
    zstr_free (&command);
    return rc;
}

static void
s_ppm_server_actor (zsock_t *pipe, void *args)
{
    (void)args;
    zloop_t *loop = zloop_new ();
    ppm_rpc_server_t *server = ppm_rpc_server_new (loop, "tcp://127.0.0.1:*");
    assert (server);
    ppm_rpc_server_handle (server, "echo.Echo", s_echo, NULL);
    zloop_reader (loop, pipe, s_pipe_term, NULL);
    zsock_signal (pipe, 0);
    zstr_send (pipe, ppm_rpc_server_endpoint (server));
    zloop_start (loop);
    ppm_rpc_server_destroy (&server);
    zloop_destroy (&loop);
}

static void
s_bare_server_actor (zsock_t *pipe, void *args)
{
    (void)args;
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    zsock_set_sndhwm (router, 100000);
    zsock_set_rcvhwm (router, 100000);
    zsock_bind (router, "tcp://127.0.0.1:*");
    char *endpoint = zsock_last_endpoint (router);
    zsock_signal (pipe, 0);
    zstr_send (pipe, endpoint);
    zstr_free (&endpoint);
    void *raw = zsock_resolve (router);
    zmq_pollitem_t items[] = {{zsock_resolve (pipe), 0, ZMQ_POLLIN, 0}, {raw, 0, ZMQ_POLLIN, 0}};
    uint8_t id[256];
    uint8_t body[65536];
    while (zmq_poll (items, 2, -1) >= 0) {
        if (items[0].revents & ZMQ_POLLIN)
            break;
        while (true) {
            int id_size = zmq_recv (raw, id, sizeof id, ZMQ_DONTWAIT);
            if (id_size < 0)
                break;
            int size = zmq_recv (raw, body, sizeof body, 0);
            if (size < 0)
                break;
            zmq_send (raw, id, (size_t)id_size, ZMQ_SNDMORE);
            zmq_send (raw, body, (size_t)size, 0);
        }
    }
    zsock_destroy (&router);
}

/* ---- ppm_rpc client --------------------------------------------------- */

typedef struct {
    ppm_rpc_client_t *client;
    const ProtobufCMessage *request;
    int sent;
    int done;
    int failed;
    int total;
} s_run_t;

static void s_on_reply (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg);

static void
s_send_one (s_run_t *run)
{
    ppm_rpc_req_t req = {.method = "echo.Echo", .tenant = "t_bench", .timeout_ms = 10000};
    if (ppm_rpc_client_call (run->client, &req, run->request, s_on_reply, run) == 0)
        run->sent++;
    else
        run->failed++;
}

static void
s_on_reply (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    (void)payload;
    (void)size;
    s_run_t *run = (s_run_t *)arg;
    run->done++;
    if (status)
        run->failed++;
    if (run->sent < run->total)
        s_send_one (run);
}

static int
s_check_done (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_run_t *run = (s_run_t *)arg;
    return run->done >= run->total || run->failed ? -1 : 0;
}

/* Requests per second with WINDOW in flight. */
static double
s_ppm_throughput (ppm_rpc_client_t *client, zloop_t *loop, const ProtobufCMessage *request,
                  int total)
{
    s_run_t run = {client, request, 0, 0, 0, total};
    int64_t start = ppm_clock_real_mono_us ();
    for (int i = 0; i < WINDOW && run.sent < total; i++)
        s_send_one (&run);
    int timer = zloop_timer (loop, 1, 0, s_check_done, &run);
    zloop_start (loop);
    zloop_timer_end (loop, timer);
    int64_t took = ppm_clock_real_mono_us () - start;
    if (run.failed || run.done < total) {
        fprintf (stderr, "bench_rpc_echo: %d ppm calls failed\n", run.failed);
        return 0;
    }
    return (double)total * 1e6 / (double)took;
}

static int
s_compare (const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int64_t
s_median (int64_t *samples, int count)
{
    qsort (samples, (size_t)count, sizeof samples[0], s_compare);
    return samples[count / 2];
}

static int
s_compare_double (const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
s_median_double (double *values, int count)
{
    qsort (values, (size_t)count, sizeof values[0], s_compare_double);
    return values[count / 2];
}

/* The 1-minute load average, or -1 when /proc/loadavg cannot be read. */
static double
s_load (void)
{
    double load = -1;
    FILE *file = fopen ("/proc/loadavg", "r");
    if (file) {
        if (fscanf (file, "%lf", &load) != 1)
            load = -1;
        fclose (file);
    }
    return load;
}

/* Median round trip in microseconds, one in flight. */
static int64_t
s_ppm_rtt (ppm_rpc_client_t *client, const ProtobufCMessage *request)
{
    static int64_t samples[SAMPLES];
    ppm_rpc_req_t req = {.method = "echo.Echo", .tenant = "t_bench", .timeout_ms = 10000};
    for (int i = 0; i < SAMPLES; i++) {
        int64_t start = ppm_clock_real_mono_us ();
        ppm_status_t *status = ppm_rpc_client_call_sync (client, &req, request, NULL, NULL);
        samples[i] = ppm_clock_real_mono_us () - start;
        if (status) {
            fprintf (stderr, "bench_rpc_echo: %s\n", ppm_status_message (status));
            ppm_status_destroy (&status);
            return 0;
        }
    }
    return s_median (samples, SAMPLES);
}

/* ---- bare client ------------------------------------------------------ */

static double
s_bare_throughput (void *dealer, const uint8_t *msg, size_t size, int total)
{
    uint8_t buf[65536];
    int sent = 0;
    int64_t start = ppm_clock_real_mono_us ();
    for (; sent < WINDOW && sent < total; sent++)
        zmq_send (dealer, msg, size, 0);
    for (int done = 0; done < total; done++) {
        if (zmq_recv (dealer, buf, sizeof buf, 0) < 0)
            return 0;
        if (sent < total) {
            zmq_send (dealer, msg, size, 0);
            sent++;
        }
    }
    int64_t took = ppm_clock_real_mono_us () - start;
    return (double)total * 1e6 / (double)took;
}

static int64_t
s_bare_rtt (void *dealer, const uint8_t *msg, size_t size)
{
    static int64_t samples[SAMPLES];
    uint8_t buf[65536];
    for (int i = 0; i < SAMPLES; i++) {
        int64_t start = ppm_clock_real_mono_us ();
        zmq_send (dealer, msg, size, 0);
        if (zmq_recv (dealer, buf, sizeof buf, 0) < 0)
            return 0;
        samples[i] = ppm_clock_real_mono_us () - start;
    }
    return s_median (samples, SAMPLES);
}

int
main (void)
{
    ppm_log_init ("bench");
    ppm_log_set_level (PPM_LOG_WARN);
    zsys_init ();

    zactor_t *ppm_server = zactor_new (s_ppm_server_actor, NULL);
    char *ppm_endpoint = zstr_recv (ppm_server);
    zactor_t *bare_server = zactor_new (s_bare_server_actor, NULL);
    char *bare_endpoint = zstr_recv (bare_server);

    uint8_t data[PAYLOAD];
    memset (data, 'x', sizeof data);
    Ppm__V1__EchoRequest request = PPM__V1__ECHO_REQUEST__INIT;
    request.data.data = data;
    request.data.len = sizeof data;

    /* The size of ppm's request envelope, for the bare messages. */
    uint8_t packed[256];
    size_t packed_size = ppm__v1__echo_request__pack (&request, packed);
    Ppm__V1__Envelope env = PPM__V1__ENVELOPE__INIT;
    env.version = 1;
    env.method = "echo.Echo";
    env.request_id = 123456;
    env.deadline_ms = ppm_clock_real_ms ();
    env.trace_id = "0123456789abcdef0123456789abcdef";
    env.tenant_id = "t_bench";
    env.payload.data = packed;
    env.payload.len = packed_size;
    size_t wire_size = ppm__v1__envelope__get_packed_size (&env);
    uint8_t *bare_msg = calloc (1, wire_size);

    ppm_rpc_client_t *client = ppm_rpc_client_new (ppm_endpoint);
    zloop_t *loop = zloop_new ();
    ppm_rpc_client_attach (client, loop);
    zsock_t *dealer = zsock_new_dealer (bare_endpoint);
    zsock_set_sndhwm (dealer, 100000);
    zsock_set_rcvhwm (dealer, 100000);
    void *raw = zsock_resolve (dealer);

    /* Warm up both paths (connections, allocators, caches). */
    s_ppm_throughput (client, loop, &request.base, WARMUP);
    s_bare_throughput (raw, bare_msg, wire_size, WARMUP);

    /* The machine is shared (builds, other tests): alternate the two
       several times, and take medians over the rounds. */
    double load_before = s_load ();
    double ppm_tputs[ROUNDS];
    double bare_tputs[ROUNDS];
    double tput_ratios[ROUNDS];
    int64_t ppm_rtts[ROUNDS];
    int64_t bare_rtts[ROUNDS];
    double rtt_ratios[ROUNDS];
    for (int round = 0; round < ROUNDS; round++) {
        if (round % 2 == 0) {
            ppm_tputs[round] = s_ppm_throughput (client, loop, &request.base, TOTAL);
            bare_tputs[round] = s_bare_throughput (raw, bare_msg, wire_size, TOTAL);
            ppm_rtts[round] = s_ppm_rtt (client, &request.base);
            bare_rtts[round] = s_bare_rtt (raw, bare_msg, wire_size);
        } else {
            bare_tputs[round] = s_bare_throughput (raw, bare_msg, wire_size, TOTAL);
            ppm_tputs[round] = s_ppm_throughput (client, loop, &request.base, TOTAL);
            bare_rtts[round] = s_bare_rtt (raw, bare_msg, wire_size);
            ppm_rtts[round] = s_ppm_rtt (client, &request.base);
        }
        tput_ratios[round] = bare_tputs[round] > 0 ? ppm_tputs[round] / bare_tputs[round] : 0;
        rtt_ratios[round] =
            bare_rtts[round] > 0 ? (double)ppm_rtts[round] / (double)bare_rtts[round] : 0;
    }
    double load_after = s_load ();

    double ppm_tput = s_median_double (ppm_tputs, ROUNDS);
    double bare_tput = s_median_double (bare_tputs, ROUNDS);
    double tput_ratio = s_median_double (tput_ratios, ROUNDS);
    double tput_low = tput_ratios[0];
    double tput_high = tput_ratios[ROUNDS - 1];
    int64_t ppm_rtt = s_median (ppm_rtts, ROUNDS);
    int64_t bare_rtt = s_median (bare_rtts, ROUNDS);
    double rtt_ratio = s_median_double (rtt_ratios, ROUNDS);
    printf ("bench_rpc_echo: echo of %d B payload (%zu B on the wire), TCP loopback, "
            "servers in threads; load average %.2f before, %.2f after, %ld cores\n",
            PAYLOAD, wire_size, load_before, load_after, sysconf (_SC_NPROCESSORS_ONLN));
    printf ("bench_rpc_echo: throughput (window %d, median of %d alternating rounds x %d req): "
            "ppm_rpc %.0f req/s, bare zmq %.0f req/s, ratio %.2f (rounds %.2f..%.2f) "
            "(aim >= 0.50) %s\n",
            WINDOW, ROUNDS, TOTAL, ppm_tput, bare_tput, tput_ratio, tput_low, tput_high,
            tput_ratio >= 0.5 ? "ok" : "MISSED");
    printf ("bench_rpc_echo: median RTT (1 in flight, median of %d rounds x %d samples): "
            "ppm_rpc %lld us, bare zmq %lld us, ratio %.2f (aim <= 1.50) %s\n",
            ROUNDS, SAMPLES, (long long)ppm_rtt, (long long)bare_rtt, rtt_ratio,
            rtt_ratio <= 1.5 ? "ok" : "MISSED");
    fflush (stdout);

    char figure[64];
    char baseline[64];
    char ratio[64];
    snprintf (figure, sizeof figure, "%.0f req/s", ppm_tput);
    snprintf (baseline, sizeof baseline, "%.0f req/s", bare_tput);
    snprintf (ratio, sizeof ratio, "%.2f", tput_ratio);
    ppm_bench_result ("rpc.throughput", "ppm_rpc echo throughput, 100 in flight", figure, baseline,
                      ratio, ">= 0.50 x bare ROUTER/DEALER", ppm_bench_met (tput_ratio >= 0.5));
    if (tput_ratio < 0.5)
        ppm_bench_gap ("rpc.throughput",
                       "the per-round ratios ranged %.2f..%.2f over %d rounds (ppm_rpc %.0f, "
                       "bare %.0f req/s at the medians)",
                       tput_low, tput_high, ROUNDS, ppm_tput, bare_tput);
    snprintf (figure, sizeof figure, "%lld us", (long long)ppm_rtt);
    snprintf (baseline, sizeof baseline, "%lld us", (long long)bare_rtt);
    snprintf (ratio, sizeof ratio, "%.2f", rtt_ratio);
    ppm_bench_result ("rpc.rtt", "ppm_rpc echo median round trip, 1 in flight", figure, baseline,
                      ratio, "<= 1.5 x bare", ppm_bench_met (rtt_ratio <= 1.5));
    ppm_bench_note ("rpc",
                    "bench_rpc_echo: a ppm_rpc server (echo.Echo) and a bare libzmq ROUTER that "
                    "returns every message, each in a thread of one process on TCP loopback; "
                    "the bare messages are as large as ppm's envelope (%d B payload, %zu B on "
                    "the wire). Throughput with %d requests in flight over %d requests, round "
                    "trip with one in flight over %d samples; %d rounds alternate the two, each "
                    "figure is the median over the rounds and the ratio the median of the "
                    "per-round ratios. Load average %.2f before, %.2f after.",
                    PAYLOAD, wire_size, WINDOW, TOTAL, SAMPLES, ROUNDS, load_before, load_after);

    free (bare_msg);
    zsock_destroy (&dealer);
    ppm_rpc_client_destroy (&client);
    zloop_destroy (&loop);
    zactor_destroy (&bare_server);
    zactor_destroy (&ppm_server);
    zstr_free (&ppm_endpoint);
    zstr_free (&bare_endpoint);
    return 0;
}
