/*  payment_stripe: Stripe over libcurl multi inside a zloop.

    curl tells us which sockets to watch (s_curl_socket) and when to call it
    back (s_curl_timer); we turn those into zloop fd pollers and one zloop
    timer, and hand readiness back with curl_multi_socket_action. Finished
    transfers are collected with curl_multi_info_read; each either ends its
    request (one callback) or is re-added after a backoff timer. Nothing
    here blocks: a slow Stripe only means more transfers in flight.
*/
#include "payment_stripe.h"

#include <curl/curl.h>
#include <sodium.h>
#include <string.h>
#include <strings.h>
#include "ppm_clock.h"
#include "ppm_log.h"
#include "ppm_metrics.h"

#define S_MAX_KEY         255
#define S_BACKOFF_BASE_MS 500
#define S_BACKOFF_MAX_MS  5000

typedef struct _s_request_t s_request_t;

struct _payment_stripe_t {
    zloop_t *loop;          /* the service's loop (not owned) */
    CURLM *multi;           /* curl multi handle: transfers and connection cache */
    char *api_base;         /* "https://api.stripe.com", no trailing slash */
    int curl_timer;         /* zloop timer id for curl's timeout, -1 when none */
    zlistx_t *requests;     /* s_request_t *, every request not yet ended */
    int timeout_ms;         /* per attempt */
    int connect_timeout_ms; /* per attempt */
    int max_retries;        /* retries after the first attempt */
    double backoff_scale;   /* 1.0 in production */
    uint64_t attempts;      /* counters */
    uint64_t retries;
    ppm_counter_t *m_requests;   /* ppm_stripe_requests_total{endpoint,status} */
    ppm_histogram_t *m_duration; /* ppm_stripe_request_duration_seconds{endpoint} */
    ppm_counter_t *m_retries;    /* ppm_stripe_retries_total{endpoint} */
};

struct _s_request_t {
    payment_stripe_t *owner;
    void *handle;               /* our entry in owner->requests */
    CURL *easy;                 /* reused across attempts */
    struct curl_slist *headers; /* request headers (owned) */
    char *form;                 /* POST body (owned) */
    payment_stripe_fn *fn;      /* the one callback */
    void *arg;
    char *body; /* reply body of the current attempt */
    size_t body_size;
    bool too_large;      /* the reply passed the cap */
    char request_id[96]; /* Request-Id header */
    bool replayed;       /* Idempotent-Replayed: true */
    int should_retry;    /* Stripe-Should-Retry: -1 absent, 0 false, 1 true */
    int attempts;        /* attempts started */
    bool maybe_done;     /* an earlier attempt may have executed (5xx, no answer) */
    int retry_timer;     /* zloop timer id while waiting to retry, else -1 */
    bool active;         /* added to the multi handle */
    char endpoint[64];   /* path pattern for metrics: "/v1/payment_intents/{id}/confirm" */
    int64_t started_us;  /* first attempt, for the duration metric */
    char curl_error[CURL_ERROR_SIZE];
};

const char *
payment_stripe_strerror (payment_stripe_err_t err)
{
    switch (err) {
        case PAYMENT_STRIPE_OK:
            return "ok";
        case PAYMENT_STRIPE_DECLINED:
            return "card declined";
        case PAYMENT_STRIPE_INVALID:
            return "Stripe refused the request as invalid";
        case PAYMENT_STRIPE_IDEMPOTENCY:
            return "idempotency key reused with different parameters";
        case PAYMENT_STRIPE_AUTH:
            return "Stripe rejected the API key";
        case PAYMENT_STRIPE_PERMISSION:
            return "the Stripe key lacks a permission";
        case PAYMENT_STRIPE_NOT_FOUND:
            return "no such Stripe object";
        case PAYMENT_STRIPE_CONFLICT:
            return "Stripe reported a conflict";
        case PAYMENT_STRIPE_RATE_LIMITED:
            return "Stripe rate limit reached";
        case PAYMENT_STRIPE_UNAVAILABLE:
            return "Stripe unavailable";
        case PAYMENT_STRIPE_NETWORK:
            return "Stripe unreachable";
        case PAYMENT_STRIPE_TIMEOUT:
            return "Stripe did not answer in time";
        case PAYMENT_STRIPE_BAD_REPLY:
            return "unexpected reply from Stripe";
        case PAYMENT_STRIPE_CANCELLED:
            return "cancelled";
    }
    return "unknown Stripe error";
}

ppm_code_t
payment_stripe_code (payment_stripe_err_t err)
{
    switch (err) {
        case PAYMENT_STRIPE_OK:
            return PPM_OK;
        case PAYMENT_STRIPE_DECLINED:
        case PAYMENT_STRIPE_AUTH:
        case PAYMENT_STRIPE_PERMISSION:
            return PPM_FAILED_PRECONDITION;
        case PAYMENT_STRIPE_INVALID:
            return PPM_INVALID_ARGUMENT;
        case PAYMENT_STRIPE_NOT_FOUND:
            return PPM_NOT_FOUND;
        case PAYMENT_STRIPE_CONFLICT:
            return PPM_ABORTED;
        case PAYMENT_STRIPE_RATE_LIMITED:
            return PPM_RESOURCE_EXHAUSTED;
        case PAYMENT_STRIPE_UNAVAILABLE:
        case PAYMENT_STRIPE_NETWORK:
        case PAYMENT_STRIPE_TIMEOUT:
            return PPM_UNAVAILABLE;
        case PAYMENT_STRIPE_CANCELLED:
            return PPM_CANCELLED;
        case PAYMENT_STRIPE_IDEMPOTENCY:
        case PAYMENT_STRIPE_BAD_REPLY:
            return PPM_INTERNAL;
    }
    return PPM_INTERNAL;
}

bool
payment_stripe_indeterminate (payment_stripe_err_t err)
{
    return err == PAYMENT_STRIPE_UNAVAILABLE || err == PAYMENT_STRIPE_NETWORK ||
           err == PAYMENT_STRIPE_TIMEOUT || err == PAYMENT_STRIPE_BAD_REPLY ||
           err == PAYMENT_STRIPE_CANCELLED;
}

/* ---- curl <-> zloop ----------------------------------------------------- */

static void s_check_done (payment_stripe_t *self);

static int
s_socket_ready (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void)loop;
    payment_stripe_t *self = (payment_stripe_t *)arg;
    int flags = 0;
    if (item->revents & ZMQ_POLLIN)
        flags |= CURL_CSELECT_IN;
    if (item->revents & ZMQ_POLLOUT)
        flags |= CURL_CSELECT_OUT;
    if (item->revents & ZMQ_POLLERR)
        flags |= CURL_CSELECT_ERR;
    int running = 0;
    curl_multi_socket_action (self->multi, item->fd, flags, &running);
    s_check_done (self);
    return 0;
}

/* CURLMOPT_SOCKETFUNCTION: watch fd for what curl asks, or stop. */
static int
s_curl_socket (CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)easy;
    (void)socketp;
    payment_stripe_t *self = (payment_stripe_t *)userp;
    zmq_pollitem_t item = {NULL, fd, 0, 0};
    zloop_poller_end (self->loop, &item);
    if (what == CURL_POLL_REMOVE)
        return 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        item.events |= ZMQ_POLLIN;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        item.events |= ZMQ_POLLOUT;
    if (zloop_poller (self->loop, &item, s_socket_ready, self) == 0)
        zloop_poller_set_tolerant (self->loop, &item);
    return 0;
}

static int
s_curl_timeout (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    payment_stripe_t *self = (payment_stripe_t *)arg;
    self->curl_timer = -1;
    int running = 0;
    curl_multi_socket_action (self->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    s_check_done (self);
    return 0;
}

/* CURLMOPT_TIMERFUNCTION: (re)arm our single timer; -1 disarms. */
static int
s_curl_timer (CURLM *multi, long timeout_ms, void *userp)
{
    (void)multi;
    payment_stripe_t *self = (payment_stripe_t *)userp;
    if (self->curl_timer != -1) {
        zloop_timer_end (self->loop, self->curl_timer);
        self->curl_timer = -1;
    }
    if (timeout_ms >= 0)
        self->curl_timer = zloop_timer (self->loop, (size_t)timeout_ms, 1, s_curl_timeout, self);
    return 0;
}

/* ---- one request ---------------------------------------------------------- */

static size_t
s_on_body (char *data, size_t size, size_t nmemb, void *userp)
{
    s_request_t *req = (s_request_t *)userp;
    size_t bytes = size * nmemb;
    if (req->body_size + bytes > PAYMENT_STRIPE_JSON_MAX) {
        req->too_large = true;
        return 0; /* curl ends the transfer with CURLE_WRITE_ERROR */
    }
    char *grown = (char *)realloc (req->body, req->body_size + bytes + 1);
    if (!grown)
        return 0;
    req->body = grown;
    memcpy (req->body + req->body_size, data, bytes);
    req->body_size += bytes;
    req->body[req->body_size] = '\0';
    return bytes;
}

/* Copies the value of header "name: value" into out (trimmed). */
static bool
s_header_value (const char *line, size_t length, const char *name, char *out, size_t out_size)
{
    size_t name_len = strlen (name);
    if (length <= name_len || strncasecmp (line, name, name_len) != 0 || line[name_len] != ':')
        return false;
    const char *value = line + name_len + 1;
    const char *end = line + length;
    while (value < end && (*value == ' ' || *value == '\t'))
        value++;
    while (end > value && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    size_t n = (size_t)(end - value);
    if (n >= out_size)
        n = out_size - 1;
    memcpy (out, value, n);
    out[n] = '\0';
    return true;
}

static size_t
s_on_header (char *data, size_t size, size_t nmemb, void *userp)
{
    s_request_t *req = (s_request_t *)userp;
    size_t bytes = size * nmemb;
    char value[96];
    if (s_header_value (data, bytes, "Request-Id", req->request_id, sizeof req->request_id))
        return bytes;
    if (s_header_value (data, bytes, "Idempotent-Replayed", value, sizeof value)) {
        req->replayed = strcasecmp (value, "true") == 0;
        return bytes;
    }
    if (s_header_value (data, bytes, "Stripe-Should-Retry", value, sizeof value)) {
        if (strcasecmp (value, "true") == 0)
            req->should_retry = 1;
        else if (strcasecmp (value, "false") == 0)
            req->should_retry = 0;
    }
    return bytes;
}

static void
s_request_destroy (s_request_t **req_p)
{
    s_request_t *req = *req_p;
    if (!req)
        return;
    if (req->retry_timer != -1)
        zloop_timer_end (req->owner->loop, req->retry_timer);
    if (req->active)
        curl_multi_remove_handle (req->owner->multi, req->easy);
    if (req->handle)
        zlistx_delete (req->owner->requests, req->handle);
    curl_easy_cleanup (req->easy);
    curl_slist_free_all (req->headers);
    free (req->form);
    free (req->body);
    free (req);
    *req_p = NULL;
}

static int
s_start_attempt (s_request_t *req)
{
    free (req->body);
    req->body = NULL;
    req->body_size = 0;
    req->too_large = false;
    req->request_id[0] = '\0';
    req->replayed = false;
    req->should_retry = -1;
    req->curl_error[0] = '\0';
    req->attempts++;
    req->owner->attempts++;
    if (curl_multi_add_handle (req->owner->multi, req->easy) != CURLM_OK)
        return -1;
    req->active = true;
    return 0;
}

/* Ends req: one callback, then frees it. */
static void
s_end (s_request_t *req, payment_stripe_err_t err, const json_t *body,
       const payment_stripe_error_t *error, const char *detail, long http_status)
{
    payment_stripe_result_t result = {
        .err = err,
        .http_status = (int)http_status,
        .request_id = req->request_id,
        .replayed = req->replayed,
        .attempts = req->attempts,
        .body = body,
        .error = error,
        .detail = detail ? detail : "",
    };
    char status_text[24];
    if (http_status > 0)
        snprintf (status_text, sizeof status_text, "%ld", http_status);
    else
        snprintf (status_text, sizeof status_text, "network");
    ppm_counter_inc (req->owner->m_requests, 1, req->endpoint, status_text);
    ppm_histogram_observe (req->owner->m_duration,
                           (double)(ppm_clock_real_mono_us () - req->started_us) / 1e6,
                           req->endpoint);
    payment_stripe_fn *fn = req->fn;
    void *arg = req->arg;
    req->fn = NULL;
    /* Free first so that the callback may start new requests freely. */
    char request_id[sizeof req->request_id];
    memcpy (request_id, req->request_id, sizeof request_id);
    result.request_id = request_id;
    s_request_destroy (&req);
    if (fn)
        fn (&result, arg);
}

static int
s_retry_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_request_t *req = (s_request_t *)arg;
    req->retry_timer = -1;
    if (s_start_attempt (req) != 0)
        s_end (req, PAYMENT_STRIPE_NETWORK, NULL, NULL, "could not restart the transfer", 0);
    return 0;
}

static payment_stripe_err_t
s_err_of_status (long status, const payment_stripe_error_t *error)
{
    if (status >= 200 && status < 300)
        return PAYMENT_STRIPE_OK;
    if (status == 402 || (error && strcmp (error->type, "card_error") == 0))
        return PAYMENT_STRIPE_DECLINED;
    if (status == 400 && error && strcmp (error->type, "idempotency_error") == 0)
        return PAYMENT_STRIPE_IDEMPOTENCY;
    if (status == 401)
        return PAYMENT_STRIPE_AUTH;
    if (status == 403)
        return PAYMENT_STRIPE_PERMISSION;
    if (status == 404)
        return PAYMENT_STRIPE_NOT_FOUND;
    if (status == 409)
        return PAYMENT_STRIPE_CONFLICT;
    if (status == 429)
        return PAYMENT_STRIPE_RATE_LIMITED;
    if (status >= 500)
        return PAYMENT_STRIPE_UNAVAILABLE;
    return PAYMENT_STRIPE_INVALID;
}

/* Whether to try again, per STRIPE.md. */
static bool
s_should_retry (s_request_t *req, CURLcode code, long status)
{
    if (req->attempts > req->owner->max_retries)
        return false;
    if (code != CURLE_OK)
        return !req->too_large; /* connection errors and timeouts */
    if (req->should_retry == 0)
        return false;
    if (req->should_retry == 1)
        return true;
    return status == 409 || status >= 500;
}

static void
s_finished (s_request_t *req, CURLcode code)
{
    curl_multi_remove_handle (req->owner->multi, req->easy);
    req->active = false;
    long status = 0;
    curl_easy_getinfo (req->easy, CURLINFO_RESPONSE_CODE, &status);
    if (code != CURLE_OK)
        status = 0;

    if (code != CURLE_OK || status >= 500)
        req->maybe_done = true;
    if (s_should_retry (req, code, status)) {
        int n = req->attempts; /* this is the n-th retry */
        int64_t delay = S_BACKOFF_BASE_MS;
        for (int i = 1; i < n && delay < S_BACKOFF_MAX_MS; i++)
            delay *= 2;
        if (delay > S_BACKOFF_MAX_MS)
            delay = S_BACKOFF_MAX_MS;
        /* × a random factor in [0.5, 1.0] */
        delay = delay / 2 + (int64_t)randombytes_uniform ((uint32_t)(delay / 2 + 1));
        delay = (int64_t)((double)delay * req->owner->backoff_scale);
        req->owner->retries++;
        ppm_counter_inc (req->owner->m_retries, 1, req->endpoint);
        ppm_log_debug ("stripe: retry %d in %lld ms (curl %d, HTTP %ld)", n, (long long)delay,
                       (int)code, status);
        req->retry_timer = zloop_timer (req->owner->loop, (size_t)delay, 1, s_retry_timer, req);
        if (req->retry_timer == -1)
            s_end (req, PAYMENT_STRIPE_NETWORK, NULL, NULL, "could not arm the retry timer", 0);
        return;
    }

    if (code != CURLE_OK) {
        payment_stripe_err_t err = PAYMENT_STRIPE_NETWORK;
        const char *detail = req->curl_error[0] ? req->curl_error : curl_easy_strerror (code);
        if (req->too_large) {
            err = PAYMENT_STRIPE_BAD_REPLY;
            detail = "reply exceeds the size cap";
        } else if (code == CURLE_OPERATION_TIMEDOUT)
            err = PAYMENT_STRIPE_TIMEOUT;
        s_end (req, err, NULL, NULL, detail, 0);
        return;
    }

    char detail[256] = "";
    json_t *root = payment_stripe_json_parse (req->body, req->body_size, detail, sizeof detail);
    if (status >= 200 && status < 300) {
        if (!root)
            s_end (req, PAYMENT_STRIPE_BAD_REPLY, NULL, NULL, detail, status);
        else
            s_end (req, PAYMENT_STRIPE_OK, root, NULL, NULL, status);
        json_decref (root);
        return;
    }
    payment_stripe_error_t error;
    bool have_error = root && payment_stripe_error_read (root, &error, detail, sizeof detail) == 0;
    payment_stripe_err_t err = s_err_of_status (status, have_error ? &error : NULL);
    /* A 429 or 409 says this attempt did not run; an earlier one may have
       (it answered 5xx or nothing): the outcome is not known. */
    if ((err == PAYMENT_STRIPE_RATE_LIMITED || err == PAYMENT_STRIPE_CONFLICT) && req->maybe_done)
        err = PAYMENT_STRIPE_UNAVAILABLE;
    if (!have_error) {
        memset (&error, 0, sizeof error);
        snprintf (error.message, sizeof error.message, "HTTP %ld without a Stripe error body",
                  status);
    }
    s_end (req, err, root, &error, have_error ? error.message : detail, status);
    json_decref (root);
}

static void
s_check_done (payment_stripe_t *self)
{
    CURLMsg *msg;
    int left = 0;
    while ((msg = curl_multi_info_read (self->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        s_request_t *req = NULL;
        curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **)&req);
        CURLcode code = msg->data.result;
        if (req)
            s_finished (req, code);
    }
}

/* ---- public --------------------------------------------------------------- */

payment_stripe_t *
payment_stripe_new (zloop_t *loop, const char *api_base)
{
    assert (loop);
    assert (api_base);
    static bool s_global_done = false;
    if (!s_global_done) {
        /* Once per process, before any thread uses curl (the actor thread
           is the only user of curl in the payment service). */
        if (curl_global_init (CURL_GLOBAL_DEFAULT) != 0 || sodium_init () < 0)
            return NULL;
        s_global_done = true;
    }
    payment_stripe_t *self = (payment_stripe_t *)zmalloc (sizeof (payment_stripe_t));
    self->loop = loop;
    self->api_base = strdup (api_base);
    size_t length = strlen (self->api_base);
    while (length > 0 && self->api_base[length - 1] == '/')
        self->api_base[--length] = '\0';
    self->curl_timer = -1;
    self->requests = zlistx_new ();
    self->timeout_ms = 10000;
    self->connect_timeout_ms = 2000;
    self->max_retries = 3;
    self->backoff_scale = 1.0;
    ppm_metrics_t *reg = ppm_metrics_global ();
    self->m_requests =
        ppm_metrics_counter (reg, "ppm_stripe_requests_total",
                             "Stripe calls by endpoint and HTTP status", "endpoint,status");
    self->m_duration = ppm_metrics_histogram (reg, "ppm_stripe_request_duration_seconds",
                                              "Stripe call latency", "endpoint", NULL, 0);
    self->m_retries =
        ppm_metrics_counter (reg, "ppm_stripe_retries_total", "retried Stripe calls", "endpoint");
    self->multi = curl_multi_init ();
    if (!self->multi) {
        payment_stripe_destroy (&self);
        return NULL;
    }
    curl_multi_setopt (self->multi, CURLMOPT_SOCKETFUNCTION, s_curl_socket);
    curl_multi_setopt (self->multi, CURLMOPT_SOCKETDATA, self);
    curl_multi_setopt (self->multi, CURLMOPT_TIMERFUNCTION, s_curl_timer);
    curl_multi_setopt (self->multi, CURLMOPT_TIMERDATA, self);
    /* Keep enough idle connections for a burst of checkouts to reuse. */
    curl_multi_setopt (self->multi, CURLMOPT_MAXCONNECTS, 1024L);
    return self;
}

void
payment_stripe_destroy (payment_stripe_t **self_p)
{
    assert (self_p);
    payment_stripe_t *self = *self_p;
    if (!self)
        return;
    if (self->requests) {
        s_request_t *req;
        while ((req = (s_request_t *)zlistx_first (self->requests)) != NULL)
            s_end (req, PAYMENT_STRIPE_CANCELLED, NULL, NULL, "client destroyed", 0);
        zlistx_destroy (&self->requests);
    }
    if (self->curl_timer != -1)
        zloop_timer_end (self->loop, self->curl_timer);
    if (self->multi)
        curl_multi_cleanup (self->multi);
    free (self->api_base);
    free (self);
    *self_p = NULL;
}

void
payment_stripe_set_timeout (payment_stripe_t *self, int timeout_ms)
{
    assert (self);
    if (timeout_ms > 0)
        self->timeout_ms = timeout_ms;
}

void
payment_stripe_set_max_retries (payment_stripe_t *self, int retries)
{
    assert (self);
    if (retries >= 0)
        self->max_retries = retries;
}

void
payment_stripe_set_backoff_scale (payment_stripe_t *self, double scale)
{
    assert (self);
    if (scale >= 0)
        self->backoff_scale = scale;
}

size_t
payment_stripe_in_flight (payment_stripe_t *self)
{
    return self ? zlistx_size (self->requests) : 0;
}

uint64_t
payment_stripe_attempts (payment_stripe_t *self)
{
    return self ? self->attempts : 0;
}

uint64_t
payment_stripe_retries (payment_stripe_t *self)
{
    return self ? self->retries : 0;
}

/* "/v1/payment_intents/pi_123/confirm?x" → "/v1/payment_intents/{id}/confirm":
   a segment holding '_' after its first character is an object id. */
static void
s_endpoint (const char *path, char *out, size_t size)
{
    size_t n = 0;
    const char *p = path;
    while (*p && *p != '?' && n + 1 < size) {
        if (*p == '/') {
            out[n++] = *p++;
            const char *end = p;
            while (*end && *end != '/' && *end != '?')
                end++;
            const char *underscore = memchr (p, '_', (size_t)(end - p));
            bool is_id = underscore && underscore > p && strncmp (p, "payment_intents", 15) != 0 &&
                         strncmp (p, "checkout", 8) != 0;
            if (is_id && n + 5 < size) {
                memcpy (out + n, "{id}", 4);
                n += 4;
                p = end;
            }
            continue;
        }
        out[n++] = *p++;
    }
    out[n] = '\0';
}

static struct curl_slist *
s_add_header (struct curl_slist *list, const char *fmt, const char *value)
{
    char line[PAYMENT_STRIPE_TEXT_MAX + 64];
    snprintf (line, sizeof line, fmt, value);
    struct curl_slist *grown = curl_slist_append (list, line);
    if (!grown) {
        curl_slist_free_all (list);
        return NULL;
    }
    return grown;
}

int
payment_stripe_request (payment_stripe_t *self, const char *method, const char *path,
                        const char *form, const char *api_key, const char *idempotency_key,
                        payment_stripe_fn *fn, void *arg)
{
    assert (self);
    if (!method || !path || !api_key || !fn || strncmp (path, "/v1/", 4) != 0)
        return -1;
    bool post = strcmp (method, "POST") == 0;
    if (!post && strcmp (method, "GET") != 0)
        return -1;
    if (post && (!idempotency_key || !*idempotency_key || strlen (idempotency_key) > S_MAX_KEY))
        return -1;
    if (strlen (api_key) == 0 || strlen (api_key) > PAYMENT_STRIPE_TEXT_MAX ||
        strpbrk (api_key, "\r\n") || (idempotency_key && strpbrk (idempotency_key, "\r\n")))
        return -1;

    s_request_t *req = (s_request_t *)zmalloc (sizeof (s_request_t));
    req->owner = self;
    req->started_us = ppm_clock_real_mono_us ();
    s_endpoint (path, req->endpoint, sizeof req->endpoint);
    req->fn = fn;
    req->arg = arg;
    req->retry_timer = -1;
    req->easy = curl_easy_init ();
    if (!req->easy) {
        free (req);
        return -1;
    }
    char *url = zsys_sprintf ("%s%s", self->api_base, path);
    req->headers = s_add_header (NULL, "Authorization: Bearer %s", api_key);
    if (req->headers)
        req->headers = s_add_header (req->headers, "Stripe-Version: %s", PAYMENT_STRIPE_VERSION);
    if (req->headers && post)
        req->headers = s_add_header (req->headers, "Idempotency-Key: %s", idempotency_key);
    if (req->headers)
        req->headers = s_add_header (req->headers, "%s", "Expect:");
    if (!req->headers || !url) {
        zstr_free (&url);
        curl_easy_cleanup (req->easy);
        free (req);
        return -1;
    }
    CURL *easy = req->easy;
    curl_easy_setopt (easy, CURLOPT_URL, url);
    zstr_free (&url); /* curl copies the URL */
    curl_easy_setopt (easy, CURLOPT_HTTPHEADER, req->headers);
    curl_easy_setopt (easy, CURLOPT_PRIVATE, req);
    curl_easy_setopt (easy, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt (easy, CURLOPT_WRITEDATA, req);
    curl_easy_setopt (easy, CURLOPT_HEADERFUNCTION, s_on_header);
    curl_easy_setopt (easy, CURLOPT_HEADERDATA, req);
    curl_easy_setopt (easy, CURLOPT_ERRORBUFFER, req->curl_error);
    curl_easy_setopt (easy, CURLOPT_TIMEOUT_MS, (long)self->timeout_ms);
    curl_easy_setopt (easy, CURLOPT_CONNECTTIMEOUT_MS, (long)self->connect_timeout_ms);
    curl_easy_setopt (easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt (easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt (easy, CURLOPT_USERAGENT, "ppm-payment/1");
    if (post) {
        req->form = strdup (form ? form : "");
        curl_easy_setopt (easy, CURLOPT_POST, 1L);
        curl_easy_setopt (easy, CURLOPT_POSTFIELDS, req->form);
        curl_easy_setopt (easy, CURLOPT_POSTFIELDSIZE, (long)strlen (req->form));
    } else
        curl_easy_setopt (easy, CURLOPT_HTTPGET, 1L);

    req->handle = zlistx_add_end (self->requests, req);
    if (s_start_attempt (req) != 0) {
        req->fn = NULL;
        s_request_destroy (&req);
        return -1;
    }
    return 0;
}
