/*  Unit tests of ppm_metrics: the exact exposition text of a small
    registry, label escaping, the cardinality cap, registration rules,
    updates from many threads, process metrics, and the HTTP listener
    answered over a real TCP connection with libcurl. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <stdatomic.h>
#include <curl/curl.h>
#include <cmocka.h>

#include "ppm_log.h"
#include "ppm_metrics.h"

static void
test_exposition_exact (void **state)
{
    (void)state;
    ppm_metrics_t *reg = ppm_metrics_new ();
    ppm_metrics_set_process (reg, false);
    ppm_counter_t *requests = ppm_metrics_counter (reg, "ppm_rpc_server_requests",
                                                   "RPC requests answered", "method,code");
    ppm_counter_t *failures =
        ppm_metrics_counter (reg, "ppm_curve_auth_failures_total", "CURVE refusals", NULL);
    ppm_gauge_t *active =
        ppm_metrics_gauge (reg, "ppm_sessions_active", "Sessions\nactive \\ paused", "");
    static const double bounds[] = {0.1, 0.5, 1};
    ppm_histogram_t *duration = ppm_metrics_histogram (reg, "ppm_rpc_server_duration_seconds",
                                                       "Time to reply", "method", bounds, 3);
    assert_non_null (requests);
    assert_non_null (failures);
    assert_non_null (active);
    assert_non_null (duration);

    ppm_counter_inc (requests, 1, "rate.Quote", "OK");
    ppm_counter_inc (requests, 2, "rate.Quote", "OK");
    ppm_counter_inc (requests, 1, "config.Get", "NOT_FOUND");
    ppm_gauge_set (active, 17);
    ppm_gauge_add (active, -0.5);
    ppm_histogram_observe (duration, 0.05, "rate.Quote");
    ppm_histogram_observe (duration, 0.5, "rate.Quote");
    ppm_histogram_observe (duration, 3, "rate.Quote");

    char *text = ppm_metrics_render (reg);
    assert_non_null (text);
    assert_string_equal (
        text, "# HELP ppm_rpc_server_requests_total RPC requests answered\n"
              "# TYPE ppm_rpc_server_requests_total counter\n"
              "ppm_rpc_server_requests_total{method=\"rate.Quote\",code=\"OK\"} 3\n"
              "ppm_rpc_server_requests_total{method=\"config.Get\",code=\"NOT_FOUND\"} 1\n"
              "# HELP ppm_curve_auth_failures_total CURVE refusals\n"
              "# TYPE ppm_curve_auth_failures_total counter\n"
              "ppm_curve_auth_failures_total 0\n"
              "# HELP ppm_sessions_active Sessions\\nactive \\\\ paused\n"
              "# TYPE ppm_sessions_active gauge\n"
              "ppm_sessions_active 16.5\n"
              "# HELP ppm_rpc_server_duration_seconds Time to reply\n"
              "# TYPE ppm_rpc_server_duration_seconds histogram\n"
              "ppm_rpc_server_duration_seconds_bucket{method=\"rate.Quote\",le=\"0.1\"} 1\n"
              "ppm_rpc_server_duration_seconds_bucket{method=\"rate.Quote\",le=\"0.5\"} 2\n"
              "ppm_rpc_server_duration_seconds_bucket{method=\"rate.Quote\",le=\"1\"} 2\n"
              "ppm_rpc_server_duration_seconds_bucket{method=\"rate.Quote\",le=\"+Inf\"} 3\n"
              "ppm_rpc_server_duration_seconds_sum{method=\"rate.Quote\"} 3.55\n"
              "ppm_rpc_server_duration_seconds_count{method=\"rate.Quote\"} 3\n");
    free (text);

    assert_int_equal (ppm_counter_value (requests, "rate.Quote", "OK"), 3);
    assert_int_equal (ppm_counter_value (requests, "rate.Quote", "nope"), 0);
    assert_true (ppm_gauge_value (active) == 16.5);
    assert_int_equal (ppm_histogram_count (duration, "rate.Quote"), 3);
    ppm_metrics_destroy (&reg);
    ppm_metrics_destroy (&reg);
    assert_null (reg);
}

static void
test_label_escaping (void **state)
{
    (void)state;
    ppm_metrics_t *reg = ppm_metrics_new ();
    ppm_metrics_set_process (reg, false);
    ppm_counter_t *c = ppm_metrics_counter (reg, "x_total", "x", "v");
    ppm_counter_inc (c, 1, "a\"b\\c\nd");
    ppm_counter_inc (c, 1, "bad \xff utf8");
    ppm_counter_inc (c, 1, (const char *)NULL);
    char long_value[300];
    memset (long_value, 'z', sizeof long_value - 1);
    long_value[sizeof long_value - 1] = '\0';
    ppm_counter_inc (c, 1, long_value);
    const char *array[] = {"from array"};
    ppm_counter_inc_v (c, 5, array);
    char *text = ppm_metrics_render (reg);
    assert_non_null (strstr (text, "x_total{v=\"a\\\"b\\\\c\\nd\"} 1\n"));
    assert_non_null (strstr (text, "x_total{v=\"bad ? utf8\"} 1\n"));
    assert_non_null (strstr (text, "x_total{v=\"\"} 1\n"));
    assert_non_null (strstr (text, "x_total{v=\"from array\"} 5\n"));
    char expect[200];
    snprintf (expect, sizeof expect, "x_total{v=\"%.*s\"} 1\n", PPM_METRICS_VALUE_MAX, long_value);
    assert_non_null (strstr (text, expect));
    free (text);
    ppm_metrics_destroy (&reg);
}

static void
test_cardinality_cap (void **state)
{
    (void)state;
    ppm_metrics_t *reg = ppm_metrics_new ();
    ppm_metrics_set_process (reg, false);
    ppm_metrics_set_cap (reg, 3);
    ppm_counter_t *c =
        ppm_metrics_counter (reg, "ppm_charged_minor_total", "charged", "tenant,currency");
    char tenant[32];
    for (int i = 0; i < 10; i++) {
        snprintf (tenant, sizeof tenant, "t%d", i);
        ppm_counter_inc (c, 100, tenant, "usd");
    }
    /* Known sets keep counting after the cap. */
    ppm_counter_inc (c, 1, "t0", "usd");
    char *text = ppm_metrics_render (reg);
    assert_string_equal (text,
                         "# HELP ppm_charged_minor_total charged\n"
                         "# TYPE ppm_charged_minor_total counter\n"
                         "ppm_charged_minor_total{tenant=\"t0\",currency=\"usd\"} 101\n"
                         "ppm_charged_minor_total{tenant=\"t1\",currency=\"usd\"} 100\n"
                         "ppm_charged_minor_total{tenant=\"t2\",currency=\"usd\"} 100\n"
                         "ppm_charged_minor_total{tenant=\"_other\",currency=\"_other\"} 700\n");
    free (text);
    assert_int_equal (ppm_counter_value (c, "_other", "_other"), 700);
    assert_int_equal (ppm_counter_value (c, "t9", "usd"), 0);

    /* The default cap is the catalog's 1000. */
    ppm_metrics_t *big = ppm_metrics_new ();
    ppm_gauge_t *g = ppm_metrics_gauge (big, "g", "g", "k");
    for (int i = 0; i < 1005; i++) {
        snprintf (tenant, sizeof tenant, "k%d", i);
        ppm_gauge_set (g, 1, tenant);
    }
    assert_true (ppm_gauge_value (g, "k999") == 1);
    assert_true (ppm_gauge_value (g, "k1000") == 0);
    assert_true (ppm_gauge_value (g, "_other") == 1);
    ppm_metrics_destroy (&big);
    ppm_metrics_destroy (&reg);
}

static void
test_registration_rules (void **state)
{
    (void)state;
    ppm_metrics_t *reg = ppm_metrics_new ();
    ppm_counter_t *a = ppm_metrics_counter (reg, "dup", "first", "x");
    ppm_counter_t *b = ppm_metrics_counter (reg, "dup_total", "second", "x");
    assert_non_null (a);
    assert_ptr_equal (a, b); /* same name, type and labels: same handle */
    int devnull = open ("/dev/null", 1);
    ppm_log_set_fd (devnull); /* the refusals below log errors */
    assert_null (ppm_metrics_counter (reg, "dup", "other labels", "y"));
    assert_null (ppm_metrics_gauge (reg, "dup_total", "other type", "x"));
    assert_null (ppm_metrics_counter (reg, "bad-name", "x", NULL));
    assert_null (ppm_metrics_counter (reg, "9lives", "x", NULL));
    assert_null (ppm_metrics_counter (reg, "ok", "x", "a,,b"));
    assert_null (ppm_metrics_counter (reg, "ok", "x", "a,a"));
    assert_null (ppm_metrics_counter (reg, "ok", "x", "__reserved"));
    assert_null (ppm_metrics_counter (reg, "ok", "x", "a,b,c,d,e,f,g,h,i"));
    assert_null (ppm_metrics_histogram (reg, "h", "x", "le", NULL, 0));
    static const double unsorted[] = {1, 0.5};
    assert_null (ppm_metrics_histogram (reg, "h", "x", NULL, unsorted, 2));
    ppm_log_set_fd (2);
    close (devnull);
    /* Default buckets. */
    ppm_histogram_t *h = ppm_metrics_histogram (reg, "h", "x", NULL, NULL, 0);
    assert_non_null (h);
    ppm_histogram_observe (h, 0.003);
    ppm_metrics_set_process (reg, false);
    char *text = ppm_metrics_render (reg);
    assert_non_null (strstr (text, "h_bucket{le=\"0.005\"} 1\n"));
    assert_non_null (strstr (text, "h_bucket{le=\"10\"} 1\n"));
    assert_non_null (strstr (text, "h_sum 0.003\n"));
    free (text);
    /* NULL handles are no-ops. */
    ppm_counter_inc (NULL, 1);
    ppm_gauge_set (NULL, 1);
    ppm_histogram_observe (NULL, 1);
    assert_null (ppm_metrics_render (NULL));
    ppm_metrics_destroy (&reg);
    assert_non_null (ppm_metrics_global ());
    assert_ptr_equal (ppm_metrics_global (), ppm_metrics_global ());
}

typedef struct {
    ppm_counter_t *counter;
    ppm_histogram_t *histogram;
} s_load_t;

static void *
s_load (void *arg)
{
    s_load_t *load = arg;
    for (int i = 0; i < 20000; i++) {
        ppm_counter_inc (load->counter, 1, i % 2 ? "odd" : "even");
        ppm_histogram_observe (load->histogram, 0.001);
    }
    return NULL;
}

static void
test_threads (void **state)
{
    (void)state;
    ppm_metrics_t *reg = ppm_metrics_new ();
    s_load_t load = {
        ppm_metrics_counter (reg, "n", "n", "parity"),
        ppm_metrics_histogram (reg, "d", "d", NULL, NULL, 0),
    };
    pthread_t threads[4];
    for (int i = 0; i < 4; i++)
        pthread_create (&threads[i], NULL, s_load, &load);
    for (int i = 0; i < 20; i++)
        free (ppm_metrics_render (reg)); /* scrapes while updating */
    for (int i = 0; i < 4; i++)
        pthread_join (threads[i], NULL);
    assert_int_equal (ppm_counter_value (load.counter, "odd"), 40000);
    assert_int_equal (ppm_counter_value (load.counter, "even"), 40000);
    assert_int_equal (ppm_histogram_count (load.histogram), 80000);
    ppm_metrics_destroy (&reg);
}

static void
test_process_metrics (void **state)
{
    (void)state;
    ppm_metrics_t *reg = ppm_metrics_new ();
    char *text = ppm_metrics_render (reg);
    assert_non_null (text);
    long long rss = 0;
    long long fds = 0;
    double start = 0;
    const char *p = strstr (text, "\nprocess_resident_memory_bytes ");
    assert_non_null (p);
    rss = strtoll (p + 31, NULL, 10);
    assert_true (rss > 100000);
    p = strstr (text, "\nprocess_open_fds ");
    assert_non_null (p);
    fds = strtoll (p + 18, NULL, 10);
    assert_true (fds >= 3);
    p = strstr (text, "\nprocess_start_time_seconds ");
    assert_non_null (p);
    start = strtod (p + 28, NULL);
    double now = (double)time (NULL);
    assert_true (start > now - 600 && start <= now + 1);
    assert_non_null (strstr (text, "# TYPE process_open_fds gauge\n"));
    free (text);
    ppm_metrics_destroy (&reg);
}

/* ---- HTTP ------------------------------------------------------------------ */

typedef struct {
    char body[65536];
    size_t len;
} s_buffer_t;

static size_t
s_write (char *data, size_t size, size_t count, void *arg)
{
    s_buffer_t *buffer = arg;
    size_t n = size * count;
    if (buffer->len + n >= sizeof buffer->body)
        return 0;
    memcpy (buffer->body + buffer->len, data, n);
    buffer->len += n;
    buffer->body[buffer->len] = '\0';
    return n;
}

/* Fetches http://127.0.0.1:port/path; returns the status, body in buffer. */
static long
s_fetch (int port, const char *path, const char *method, s_buffer_t *buffer, char *type,
         size_t type_size)
{
    CURL *curl = curl_easy_init ();
    assert_non_null (curl);
    char url[128];
    snprintf (url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    buffer->len = 0;
    buffer->body[0] = '\0';
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, buffer);
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 5000L);
    if (method)
        curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
    assert_int_equal (curl_easy_perform (curl), CURLE_OK);
    long status = 0;
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
    if (type) {
        char *content_type = NULL;
        curl_easy_getinfo (curl, CURLINFO_CONTENT_TYPE, &content_type);
        snprintf (type, type_size, "%s", content_type ? content_type : "");
    }
    curl_easy_cleanup (curl);
    return status;
}

static atomic_bool s_ready;

static bool
s_ready_fn (void *arg)
{
    (void)arg;
    return atomic_load (&s_ready);
}

static void
test_http_listener (void **state)
{
    (void)state;
    ppm_metrics_t *reg = ppm_metrics_new ();
    ppm_counter_t *c = ppm_metrics_counter (reg, "ppm_rate_quotes_total", "quotes", "result");
    ppm_counter_inc (c, 7, "paid");
    atomic_store (&s_ready, false);
    ppm_metrics_server_t *server = ppm_metrics_server_new (reg, "127.0.0.1:0", s_ready_fn, NULL);
    assert_non_null (server);
    int port = ppm_metrics_server_port (server);
    assert_true (port > 0);

    s_buffer_t *buffer = malloc (sizeof *buffer);
    char type[128];
    assert_int_equal (s_fetch (port, "/metrics", NULL, buffer, type, sizeof type), 200);
    assert_string_equal (type, "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null (strstr (buffer->body, "ppm_rate_quotes_total{result=\"paid\"} 7\n"));
    assert_non_null (strstr (buffer->body, "process_open_fds "));

    assert_int_equal (s_fetch (port, "/healthz", NULL, buffer, NULL, 0), 200);
    assert_string_equal (buffer->body, "ok\n");
    assert_int_equal (s_fetch (port, "/readyz", NULL, buffer, NULL, 0), 503);
    assert_string_equal (buffer->body, "not ready\n");
    atomic_store (&s_ready, true);
    assert_int_equal (s_fetch (port, "/readyz", NULL, buffer, NULL, 0), 200);
    assert_string_equal (buffer->body, "ready\n");
    assert_int_equal (s_fetch (port, "/nope", NULL, buffer, NULL, 0), 404);
    assert_int_equal (s_fetch (port, "/metrics", "POST", buffer, NULL, 0), 405);
    ppm_metrics_server_destroy (&server);
    ppm_metrics_server_destroy (&server);
    assert_null (server);

    /* Without a callback the flag decides, from any thread. */
    server = ppm_metrics_server_new (reg, "localhost:0", NULL, NULL);
    assert_non_null (server);
    port = ppm_metrics_server_port (server);
    assert_int_equal (s_fetch (port, "/readyz", NULL, buffer, NULL, 0), 503);
    ppm_metrics_server_set_ready (server, true);
    assert_int_equal (s_fetch (port, "/readyz", NULL, buffer, NULL, 0), 200);
    ppm_metrics_server_set_ready (server, false);
    assert_int_equal (s_fetch (port, "/readyz", NULL, buffer, NULL, 0), 503);

    /* The port is taken: a second listener on it fails cleanly. */
    char address[64];
    snprintf (address, sizeof address, "127.0.0.1:%d", port);
    int devnull = open ("/dev/null", 1);
    ppm_log_set_fd (devnull);
    assert_null (ppm_metrics_server_new (reg, address, NULL, NULL));
    static const char *bad[] = {"127.0.0.1",    "127.0.0.1:",   "127.0.0.1:70000",
                                "127.0.0.1:-1", "nohost:80",    ":80",
                                "[::1:80",      "127.0.0.1:8x", NULL};
    for (int i = 0; bad[i]; i++)
        assert_null (ppm_metrics_server_new (reg, bad[i], NULL, NULL));
    ppm_log_set_fd (2);
    close (devnull);
    ppm_metrics_server_destroy (&server);
    free (buffer);
    ppm_metrics_destroy (&reg);
}

int
main (void)
{
    curl_global_init (CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_exposition_exact), cmocka_unit_test (test_label_escaping),
        cmocka_unit_test (test_cardinality_cap),  cmocka_unit_test (test_registration_rules),
        cmocka_unit_test (test_threads),          cmocka_unit_test (test_process_metrics),
        cmocka_unit_test (test_http_listener),
    };
    int rc = cmocka_run_group_tests (tests, NULL, NULL);
    curl_global_cleanup ();
    return rc;
}
