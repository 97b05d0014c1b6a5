/*  Unit tests of the gateway's HTTP layer: the route table, JSON caps and
    field readers, the error body and status mapping, and the HTTP server's
    hand-off (suspend, answer from another thread, body cap, static pages,
    event streams) with real HTTP requests through libcurl. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include "services/gateway/gateway_convert.h"
#include "services/gateway/gateway_http.h"
#include "services/gateway/gateway_json.h"
#include "services/gateway/gateway_router.h"

enum { H_QUOTE = 1, H_SESSION_GET, H_CHECKOUT, H_SESSIONS_POST, H_RATES_GET, H_RATES_PUT };

static const gateway_route_t s_routes[] = {
    {"GET", "/v1/quote", H_QUOTE, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions", H_SESSIONS_POST, GATEWAY_AUTH_USER},
    {"GET", "/v1/sessions/{id}", H_SESSION_GET, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions/{id}/checkout", H_CHECKOUT, GATEWAY_AUTH_USER},
    {"GET", "/v1/admin/users/{user_id}/rates", H_RATES_GET, GATEWAY_AUTH_ADMIN},
    {"PUT", "/v1/admin/users/{user_id}/rates", H_RATES_PUT, GATEWAY_AUTH_ADMIN},
    {NULL, NULL, 0, GATEWAY_AUTH_NONE}};

static void
test_router (void **state)
{
    (void)state;
    gateway_match_t m;
    assert_int_equal (gateway_router_match (s_routes, "GET", "/v1/quote", &m), 0);
    assert_int_equal (m.route->handler, H_QUOTE);
    assert_int_equal (m.param_count, 0);

    assert_int_equal (gateway_router_match (s_routes, "GET", "/v1/sessions/s_123", &m), 0);
    assert_int_equal (m.route->handler, H_SESSION_GET);
    assert_string_equal (gateway_match_param (&m, "id"), "s_123");
    assert_null (gateway_match_param (&m, "user_id"));

    assert_int_equal (gateway_router_match (s_routes, "POST", "/v1/sessions/s_9/checkout", &m), 0);
    assert_int_equal (m.route->handler, H_CHECKOUT);
    assert_string_equal (gateway_match_param (&m, "id"), "s_9");

    assert_int_equal (gateway_router_match (s_routes, "PUT", "/v1/admin/users/u_7/rates", &m), 0);
    assert_int_equal (m.route->handler, H_RATES_PUT);
    assert_int_equal (m.route->auth, GATEWAY_AUTH_ADMIN);
    assert_string_equal (gateway_match_param (&m, "user_id"), "u_7");

    /* wrong method on a known path: 405, not 404 */
    assert_int_equal (gateway_router_match (s_routes, "DELETE", "/v1/sessions/s_1", &m), -1);
    assert_null (m.route);
    assert_true (m.path_known);
    /* unknown paths, empty parameter, extra segments */
    assert_int_equal (gateway_router_match (s_routes, "GET", "/v1/nope", &m), -1);
    assert_false (m.path_known);
    assert_int_equal (gateway_router_match (s_routes, "GET", "/v1/sessions/", &m), -1);
    assert_int_equal (gateway_router_match (s_routes, "GET", "/v1/sessions/a/b", &m), -1);
    assert_int_equal (gateway_router_match (s_routes, "GET", "/v1/quote/", &m), -1);
    /* a parameter longer than the cap does not match */
    char path[400];
    memset (path, 'x', sizeof path);
    memcpy (path, "/v1/sessions/", 13);
    path[13 + GATEWAY_ROUTE_PARAM_MAX + 1] = '\0';
    assert_int_equal (gateway_router_match (s_routes, "GET", path, &m), -1);
}

static void
test_json_caps (void **state)
{
    (void)state;
    ppm_status_t *err = NULL;
    json_t *json = gateway_json_parse_object ("{\"a\":1}", 7, false, &err);
    assert_non_null (json);
    assert_null (err);
    json_decref (json);

    json = gateway_json_parse_object ("  ", 2, true, &err);
    assert_non_null (json);
    json_decref (json);
    assert_null (gateway_json_parse_object ("", 0, false, &err));
    assert_non_null (err);
    assert_string_equal (ppm_status_field_name (err, 0), "body");
    ppm_status_destroy (&err);

    /* bad JSON names the body and where */
    assert_null (gateway_json_parse_object ("{\"a\":", 5, false, &err));
    assert_int_equal (ppm_status_code (err), PPM_INVALID_ARGUMENT);
    assert_non_null (strstr (ppm_status_field_description (err, 0), "invalid JSON"));
    ppm_status_destroy (&err);
    /* not an object */
    assert_null (gateway_json_parse_object ("[1,2]", 5, false, &err));
    ppm_status_destroy (&err);
    /* duplicate keys are refused */
    assert_null (gateway_json_parse_object ("{\"a\":1,\"a\":2}", 13, false, &err));
    ppm_status_destroy (&err);

    /* depth */
    char deep[200];
    size_t n = 0;
    for (int i = 0; i < GATEWAY_JSON_DEPTH_MAX + 1; i++)
        deep[n++] = '[';
    for (int i = 0; i < GATEWAY_JSON_DEPTH_MAX + 1; i++)
        deep[n++] = ']';
    deep[n] = '\0';
    assert_int_equal (gateway_json_depth (deep, n), GATEWAY_JSON_DEPTH_MAX + 1);
    assert_null (gateway_json_parse_object (deep, n, false, &err));
    assert_non_null (strstr (ppm_status_field_description (err, 0), "nested"));
    ppm_status_destroy (&err);
    /* brackets inside strings do not count */
    assert_int_equal (gateway_json_depth ("{\"a\":\"[[[[\\\"[[\"}", 16), 1);
}

static void
test_json_fields (void **state)
{
    (void)state;
    ppm_status_t *err = NULL;
    json_t *json = gateway_json_parse_object (
        "{\"minutes\":30,\"accept_terms\":true,\"bogus\":1,\"rate\":null,\"name\":\"x\"}", 67,
        false, &err);
    assert_non_null (json);
    static const char *const allowed[] = {"minutes", "accept_terms", "rate", "name", NULL};
    assert_int_equal (gateway_json_refuse_unknown (json, allowed, &err), 1);
    assert_non_null (err);
    assert_string_equal (ppm_status_field_find (err, "bogus"), "unknown field");
    ppm_status_destroy (&err);

    int64_t minutes = 0;
    bool terms = false;
    assert_true (gateway_json_get_int (json, "minutes", true, 1, 600, &minutes, &err));
    assert_int_equal (minutes, 30);
    assert_true (gateway_json_get_bool (json, "accept_terms", true, &terms, &err));
    assert_true (terms);
    int64_t rate = 5;
    bool is_null = false;
    assert_true (gateway_json_get_nullable_int (json, "rate", true, 0, 100, &rate, &is_null, &err));
    assert_true (is_null);
    assert_null (err);

    /* out of range, wrong type, missing: each named */
    assert_false (gateway_json_get_int (json, "minutes", true, 1, 10, &minutes, &err));
    assert_false (gateway_json_get_bool (json, "name", true, &terms, &err));
    assert_false (gateway_json_get_int (json, "missing", true, 0, 1, &minutes, &err));
    const char *s = NULL;
    assert_false (gateway_json_get_string (json, "missing2", false, 10, &s, &err));
    assert_int_equal (ppm_status_field_count (err), 3);
    assert_non_null (strstr (ppm_status_field_find (err, "minutes"), "between 1 and 10"));
    assert_non_null (ppm_status_field_find (err, "name"));
    assert_string_equal (ppm_status_field_find (err, "missing"), "is required");
    assert_non_null (strstr (ppm_status_message (err), "minutes"));
    ppm_status_destroy (&err);
    json_decref (json);

    int64_t v;
    assert_true (gateway_parse_int ("25", "limit", 1, 100, &v, &err));
    assert_int_equal (v, 25);
    assert_false (gateway_parse_int ("2x", "limit", 1, 100, &v, &err));
    assert_false (gateway_parse_int ("1000", "limit", 1, 100, &v, &err));
    assert_false (gateway_parse_int ("99999999999999999999999", "limit", 1, 100, &v, &err));
    assert_int_equal (ppm_status_field_count (err), 3);
    ppm_status_destroy (&err);

    assert_true (gateway_valid_id ("u_12-ab.c", 64));
    assert_false (gateway_valid_id ("", 64));
    assert_false (gateway_valid_id ("a/b", 64));
    assert_false (gateway_valid_id ("a b", 64));
    assert_false (gateway_valid_id ("abcdef", 3));
    /* path segments are not ids */
    assert_false (gateway_valid_id (".", 64));
    assert_false (gateway_valid_id ("..", 64));
    assert_false (gateway_valid_id ("...", 64));
    assert_true (gateway_valid_id ("a..b", 64));
    assert_true (gateway_valid_id ("..a", 64));
}

/* Heartbeats a third of the grace apart in real time, 250 ms to 10 s. */
static void
test_heartbeat_interval (void **state)
{
    (void)state;
    assert_int_equal (gateway_heartbeat_every_ms (60, 1), 10000);
    assert_int_equal (gateway_heartbeat_every_ms (15, 1), 5000);
    assert_int_equal (gateway_heartbeat_every_ms (60, 15), 1333);
    assert_int_equal (gateway_heartbeat_every_ms (60, 60), 333);
    assert_int_equal (gateway_heartbeat_every_ms (60, 1000), 250);
    assert_int_equal (gateway_heartbeat_every_ms (0, 1), 250);
    assert_int_equal (gateway_heartbeat_every_ms (-5, 0), 250);
    assert_int_equal (gateway_heartbeat_every_ms (INT64_MAX, 1), 10000);
}

static void
test_error_mapping (void **state)
{
    (void)state;
    struct {
        ppm_code_t code;
        const char *message;
        int http;
    } cases[] = {{PPM_INVALID_ARGUMENT, "x", 400},
                 {PPM_UNAUTHENTICATED, "x", 401},
                 {PPM_PERMISSION_DENIED, "x", 403},
                 {PPM_FAILED_PRECONDITION, "requires the Pro plan", 403},
                 {PPM_FAILED_PRECONDITION, "amount is below the minimum charge", 422},
                 {PPM_NOT_FOUND, "x", 404},
                 {PPM_ABORTED, "version mismatch", 409},
                 {PPM_ALREADY_EXISTS, "x", 409},
                 {PPM_RESOURCE_EXHAUSTED, "x", 429},
                 {PPM_UNAVAILABLE, "x", 503},
                 {PPM_DEADLINE_EXCEEDED, "x", 503},
                 {PPM_INTERNAL, "x", 500}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ppm_status_t *st = ppm_status_new (cases[i].code, "%s", cases[i].message);
        assert_int_equal (gateway_http_status_for (st), cases[i].http);
        ppm_status_destroy (&st);
    }
    assert_int_equal (gateway_http_status_for (NULL), 200);

    ppm_status_t *st = ppm_status_new (PPM_INVALID_ARGUMENT, "2 fields are invalid");
    ppm_status_add_field (st, "currency", "unknown currency");
    ppm_status_add_field (st, "preset_minutes[1]", "must be 1 to 600");
    json_t *body = gateway_error_json (st);
    json_t *error = json_object_get (body, "error");
    assert_string_equal (json_string_value (json_object_get (error, "code")), "INVALID_ARGUMENT");
    assert_string_equal (json_string_value (json_object_get (error, "message")),
                         "2 fields are invalid");
    json_t *fields = json_object_get (error, "fields");
    assert_int_equal (json_array_size (fields), 2);
    assert_string_equal (json_string_value (json_object_get (json_array_get (fields, 1), "field")),
                         "preset_minutes[1]");
    assert_string_equal (
        json_string_value (json_object_get (json_array_get (fields, 0), "message")),
        "unknown currency");
    json_decref (body);
    ppm_status_destroy (&st);
}

/* ---- the HTTP server, driven with libcurl from another thread ---------- */

typedef struct {
    char url[256];
    const char *method;
    const char *body;
    size_t body_len;
    const char *header;
    const char *header2;
    int fillers; /* X-Filler-<i> headers to add */
    long status;
    char response[8192];
    size_t response_len;
    char headers[4096];
    size_t headers_len;
    long timeout_ms;
} s_fetch_t;

static size_t
s_write (char *data, size_t size, size_t nmemb, void *arg)
{
    s_fetch_t *f = arg;
    size_t n = size * nmemb;
    size_t room = sizeof f->response - 1 - f->response_len;
    size_t take = n < room ? n : room;
    memcpy (f->response + f->response_len, data, take);
    f->response_len += take;
    f->response[f->response_len] = '\0';
    return n;
}

static size_t
s_header (char *data, size_t size, size_t nmemb, void *arg)
{
    s_fetch_t *f = arg;
    size_t n = size * nmemb;
    size_t room = sizeof f->headers - 1 - f->headers_len;
    size_t take = n < room ? n : room;
    memcpy (f->headers + f->headers_len, data, take);
    f->headers_len += take;
    f->headers[f->headers_len] = '\0';
    return n;
}

static void *
s_fetch (void *arg)
{
    s_fetch_t *f = arg;
    CURL *curl = curl_easy_init ();
    curl_easy_setopt (curl, CURLOPT_URL, f->url);
    curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, f->method ? f->method : "GET");
    if (f->body) {
        curl_easy_setopt (curl, CURLOPT_POSTFIELDS, f->body);
        curl_easy_setopt (curl, CURLOPT_POSTFIELDSIZE, (long)f->body_len);
    }
    struct curl_slist *headers = NULL;
    if (f->header)
        headers = curl_slist_append (headers, f->header);
    if (f->header2)
        headers = curl_slist_append (headers, f->header2);
    for (int i = 0; i < f->fillers; i++) {
        char line[32];
        snprintf (line, sizeof line, "X-Filler-%d: v", i);
        headers = curl_slist_append (headers, line);
    }
    headers = curl_slist_append (headers, "Expect:");
    curl_easy_setopt (curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, f);
    curl_easy_setopt (curl, CURLOPT_HEADERFUNCTION, s_header);
    curl_easy_setopt (curl, CURLOPT_HEADERDATA, f);
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, f->timeout_ms ? f->timeout_ms : 5000L);
    curl_easy_perform (curl);
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &f->status);
    curl_slist_free_all (headers);
    curl_easy_cleanup (curl);
    return NULL;
}

static gateway_req_t *
s_wait_request (gateway_http_t *http, int timeout_ms)
{
    struct pollfd pfd = {.fd = gateway_http_fd (http), .events = POLLIN};
    for (int waited = 0; waited < timeout_ms; waited += 10) {
        gateway_req_t *req = gateway_http_next (http);
        if (req)
            return req;
        poll (&pfd, 1, 10);
    }
    return NULL;
}

static gateway_http_t *
s_http (const char *web_root)
{
    gateway_http_config_t config = {.address = "127.0.0.1",
                                    .port = 0,
                                    .threads = 2,
                                    .body_max = 1024,
                                    .header_max = 16384,
                                    .stream_max = 4096,
                                    .web_root = web_root};
    gateway_http_t *http = gateway_http_new (&config);
    assert_non_null (http);
    assert_true (gateway_http_port (http) > 0);
    return http;
}

static void
test_http_handoff (void **state)
{
    (void)state;
    gateway_http_t *http = s_http (NULL);
    s_fetch_t f;
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/sessions/s_1/checkout?x=1&y=a%%20b",
              gateway_http_port (http));
    f.method = "POST";
    f.body = "{\"minutes\":10}";
    f.body_len = strlen (f.body);
    f.header = "Authorization: Bearer abc";
    f.header2 = "Content-Type: application/json; charset=utf-8";
    pthread_t thread;
    pthread_create (&thread, NULL, s_fetch, &f);

    gateway_req_t *req = s_wait_request (http, 3000);
    assert_non_null (req);
    assert_string_equal (gateway_req_method (req), "POST");
    assert_string_equal (gateway_req_path (req), "/v1/sessions/s_1/checkout");
    assert_string_equal (gateway_req_header (req, "authorization"), "Bearer abc");
    assert_string_equal (gateway_req_query (req, "x"), "1");
    assert_string_equal (gateway_req_query (req, "y"), "a b");
    assert_int_equal (gateway_req_query_count (req), 2);
    size_t len = 0;
    assert_string_equal (gateway_req_body (req, &len), "{\"minutes\":10}");
    assert_int_equal (len, 14);
    /* the connection waits, suspended, while we take our time */
    usleep (100 * 1000);
    gateway_req_add_header (req, "X-Test", "yes");
    gateway_req_respond_json (&req, 201, json_pack ("{s:s}", "ok", "yes"));
    assert_null (req);
    pthread_join (thread, NULL);
    assert_int_equal (f.status, 201);
    assert_string_equal (f.response, "{\"ok\":\"yes\"}");
    assert_non_null (strstr (f.headers, "X-Test: yes"));
    assert_non_null (strstr (f.headers, "application/json"));

    /* an error answer carries SPEC §5's body and Retry-After on 503 */
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/quote", gateway_http_port (http));
    pthread_create (&thread, NULL, s_fetch, &f);
    req = s_wait_request (http, 3000);
    assert_non_null (req);
    gateway_req_respond_error (&req, PPM_UNAVAILABLE, "rate service is unavailable");
    pthread_join (thread, NULL);
    assert_int_equal (f.status, 503);
    assert_non_null (strstr (f.headers, "Retry-After: 1"));
    assert_non_null (strstr (f.response, "\"code\":\"UNAVAILABLE\""));

    /* a body over the cap is 413 without reaching the actor */
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/sessions", gateway_http_port (http));
    char big[4000];
    memset (big, 'a', sizeof big);
    f.method = "POST";
    f.body = big;
    f.body_len = sizeof big;
    pthread_create (&thread, NULL, s_fetch, &f);
    pthread_join (thread, NULL);
    assert_int_equal (f.status, 413);
    assert_non_null (strstr (f.response, "too large"));
    assert_null (gateway_http_next (http));

    /* headers over the connection's memory cap are refused by libmicrohttpd */
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/quote", gateway_http_port (http));
    char *huge = malloc (40000);
    memcpy (huge, "X-Big: ", 7);
    memset (huge + 7, 'a', 40000 - 8);
    huge[40000 - 1] = '\0';
    f.header = huge;
    pthread_create (&thread, NULL, s_fetch, &f);
    pthread_join (thread, NULL);
    free (huge);
    assert_true (f.status == 431 || f.status == 413);
    assert_null (gateway_http_next (http));

    /* a client that leaves before the answer: the answer is dropped */
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/quote", gateway_http_port (http));
    f.timeout_ms = 200;
    pthread_create (&thread, NULL, s_fetch, &f);
    req = s_wait_request (http, 3000);
    assert_non_null (req);
    pthread_join (thread, NULL);
    assert_int_equal (f.status, 0);
    gateway_req_respond_error (&req, PPM_INTERNAL, "late");

    /* a request never taken is answered 503 when the server stops */
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/quote", gateway_http_port (http));
    uint64_t seen = gateway_http_requests (http);
    pthread_create (&thread, NULL, s_fetch, &f);
    for (int i = 0; i < 300 && gateway_http_requests (http) <= seen; i++)
        usleep (10 * 1000);
    assert_true (gateway_http_requests (http) > seen);
    gateway_http_destroy (&http);
    pthread_join (thread, NULL);
    assert_int_equal (f.status, 503);
    assert_null (http);
}

/* Refusals libmicrohttpd's threads answer at once, with SPEC §5's body. */
static void
s_assert_refused (s_fetch_t *f, long status)
{
    pthread_t thread;
    pthread_create (&thread, NULL, s_fetch, f);
    pthread_join (thread, NULL);
    assert_int_equal (f->status, status);
    json_t *json = json_loads (f->response, 0, NULL);
    assert_non_null (json);
    assert_true (json_is_string (json_object_get (json_object_get (json, "error"), "code")));
    assert_true (json_is_array (json_object_get (json_object_get (json, "error"), "fields")));
    json_decref (json);
    assert_non_null (strstr (f->headers, "application/json"));
}

static void
test_http_refusals (void **state)
{
    (void)state;
    gateway_http_t *http = s_http (NULL);
    int port = gateway_http_port (http);
    s_fetch_t f;

    /* a body that does not say it is JSON: 415 */
    const char *types[] = {NULL, "Content-Type: text/plain", "Content-Type: application/jsonp",
                           "Content-Type: application/x-www-form-urlencoded"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        memset (&f, 0, sizeof f);
        snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/sessions", port);
        f.method = "POST";
        f.body = "{}";
        f.body_len = 2;
        f.header = types[i] ? types[i] : "Content-Type:";
        s_assert_refused (&f, 415);
    }
    /* headers over header_max (16384 here): 431, in JSON */
    char *big = malloc (20000);
    memcpy (big, "X-Big: ", 7);
    memset (big + 7, 'a', 20000 - 8);
    big[20000 - 1] = '\0';
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/quote", port);
    f.header = big;
    s_assert_refused (&f, 431);
    /* the same on a static page */
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/index.html", port);
    f.header = big;
    s_assert_refused (&f, 431);
    free (big);
    /* more than 64 headers: 431 */
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/quote", port);
    f.fillers = 70;
    s_assert_refused (&f, 431);
    /* a URL over 8 KB: 414 */
    memset (&f, 0, sizeof f);
    int n = snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/sessions/", port);
    assert_true (n > 0 && (size_t)n < sizeof f.url);
    char *url = malloc (9000 + (size_t)n);
    memcpy (url, f.url, (size_t)n);
    memset (url + n, 's', 9000);
    url[n + 9000 - 1] = '\0';
    pthread_t thread;
    s_fetch_t *g = calloc (1, sizeof *g);
    assert_true (strlen (url) >= sizeof g->url); /* too long for s_fetch_t: by hand */
    CURL *curl = curl_easy_init ();
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, s_write);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, g);
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_perform (curl);
    curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &g->status);
    curl_easy_cleanup (curl);
    assert_int_equal (g->status, 414);
    assert_non_null (strstr (g->response, "\"error\""));
    free (g);
    free (url);
    assert_null (gateway_http_next (http));

    /* %00 is not decoded: the path keeps it (an id with '%' is invalid
       everywhere), instead of being cut at a NUL */
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/sessions/s_1%%00x?a=b%%00c&d=%%41",
              port);
    pthread_create (&thread, NULL, s_fetch, &f);
    gateway_req_t *req = s_wait_request (http, 3000);
    assert_non_null (req);
    assert_string_equal (gateway_req_path (req), "/v1/sessions/s_1%00x");
    assert_string_equal (gateway_req_query (req, "a"), "b%00c");
    assert_string_equal (gateway_req_query (req, "d"), "A");
    gateway_req_respond_error (&req, PPM_NOT_FOUND, "no such session");
    pthread_join (thread, NULL);
    assert_int_equal (f.status, 404);

    gateway_http_destroy (&http);
}

static void
test_http_static_and_stream (void **state)
{
    (void)state;
    char dir[] = "/tmp/ppm-web-XXXXXX";
    assert_non_null (mkdtemp (dir));
    char path[256];
    snprintf (path, sizeof path, "%s/index.html", dir);
    FILE *file = fopen (path, "w");
    fputs ("<!doctype html><title>ppm</title>", file);
    fclose (file);

    gateway_http_t *http = s_http (dir);
    int port = gateway_http_port (http);
    s_fetch_t f;
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/", port);
    s_fetch (&f);
    assert_int_equal (f.status, 200);
    assert_non_null (strstr (f.response, "<title>ppm</title>"));
    assert_non_null (strstr (f.headers, "text/html"));
    const char *bad[] = {"/../etc/passwd",     "/missing.html",      "/index.exe",
                         "/a%20b.html",        "/index.html%00.png", "/index.html%00",
                         "/%2e%2e/etc/passwd", "/..%2fetc%2fpasswd", "/.%2e/index.html"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset (&f, 0, sizeof f);
        snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d%s", port, bad[i]);
        s_fetch (&f);
        assert_int_equal (f.status, 404);
    }

    /* an event stream: three events, then the end */
    memset (&f, 0, sizeof f);
    snprintf (f.url, sizeof f.url, "http://127.0.0.1:%d/v1/sessions/s_1/events", port);
    pthread_t thread;
    pthread_create (&thread, NULL, s_fetch, &f);
    gateway_req_t *req = s_wait_request (http, 3000);
    assert_non_null (req);
    gateway_req_stream_start (req);
    for (int i = 0; i < 3; i++) {
        char event[64];
        int n = snprintf (event, sizeof event, "id: %d\nevent: tick\ndata: {}\n\n", i);
        assert_int_equal (gateway_req_stream_write (req, event, (size_t)n), 0);
        usleep (50 * 1000);
    }
    /* over the cap: refused */
    char big[5000];
    memset (big, 'x', sizeof big);
    assert_int_equal (gateway_req_stream_write (req, big, sizeof big), -1);
    gateway_req_stream_end (&req);
    pthread_join (thread, NULL);
    assert_int_equal (f.status, 200);
    assert_non_null (strstr (f.headers, "text/event-stream"));
    assert_non_null (strstr (f.response, "id: 0\nevent: tick"));
    assert_non_null (strstr (f.response, "id: 2\nevent: tick"));

    gateway_http_destroy (&http);
    unlink (path);
    rmdir (dir);
}

int
main (void)
{
    curl_global_init (CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_router),        cmocka_unit_test (test_json_caps),
        cmocka_unit_test (test_json_fields),   cmocka_unit_test (test_heartbeat_interval),
        cmocka_unit_test (test_error_mapping), cmocka_unit_test (test_http_handoff),
        cmocka_unit_test (test_http_refusals), cmocka_unit_test (test_http_static_and_stream),
    };
    int rc = cmocka_run_group_tests (tests, NULL, NULL);
    curl_global_cleanup ();
    return rc;
}
