/*  bench_e2e: the whole stack measured from the outside, through the
    gateway, as payers use it. Run by tests/bench/bench_e2e.sh, which
    starts the real stack (deploy/run.sh through tests/lib/stack.sh, the
    Stripe emulator at zero latency) and passes its addresses in the
    environment; this program is not a benchmark on its own (run-bench.sh
    skips a binary that has a script of its name).

    Figures, each printed for a reader and as result lines
    (tests/lib/ppm_bench.h):

      funded latency  one payer, SEQUENTIAL paid sessions one after the
                      other: from sending POST /v1/sessions/{id}/checkout,
                      through POST …/confirm with pm_card_visa, until the
                      session's event stream (GET …/events, opened before
                      the clock starts) says it is active; p50 and p99;
      sessions/s      PAYERS payers at once for LOAD, each doing create →
                      events → checkout → confirm → funded → end in a loop:
                      sessions completed per second, and every error;
      RSS             process_resident_memory_bytes of each service from its
                      /metrics: once before any traffic (idle), and the
                      largest seen while the load runs (scraped each second);
      commits         PostgreSQL transactions committed (pg_stat_database,
                      every service and their background work) per session
                      completed under load, when PPM_PG_URL is given: what
                      the sessions per second cost in durable writes;
      start-to-ready  each service binary spawned again, READY_RUNS times,
                      with the stack's environment on fresh ports and
                      against the stack's Redis and PostgreSQL: from fork
                      until its /readyz answers 200 (polled every ms).

    HTTP is libcurl multi (keep-alive connections, all payers in one
    loop); JSON is jansson. Payers' tokens are minted here: the tenant's
    user-token secret comes from config.GetUserTokenSecret (as ppmctl
    user-token does) and each payer u_bench_<n> gets an HS256 token from
    ppm_jwt_sign. Every payer runs its sessions one at a time, so the
    tenant's max_concurrent_sessions per payer is never reached.

    Exit status: 0 when every phase ran (errors under load are reported,
    not fatal), 1 when a phase could not run at all.
*/
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include "ppm_clock.h"
#include "ppm_env.h"
#include "ppm_jwt.h"
#include "ppm_log.h"
#include "ppm_rpc.h"
#include "proto/config.pb-c.h"
#include "tests/lib/ppm_bench.h"

#define S_SERVICES     5
#define S_BODY_MAX     (1024 * 1024) /* a response body larger than this is an error */
#define S_STREAM_MAX   65536         /* one event-stream frame */
#define S_ERROR_KINDS  6             /* distinct error messages counted for the report */
#define S_REQUEST_MS   10000         /* timeout of one ordinary request */
#define S_DRAIN_MS     30000         /* after the load: how long in-flight sessions may take */
#define S_READY_MAX_MS 20000         /* a service not ready after this is an error */

static const char *s_services[S_SERVICES] = {"config", "rate", "payment", "metering", "gateway"};

/* ---- configuration -------------------------------------------------------- */

typedef struct {
    char *gateway_url;  /* http://127.0.0.1:PORT */
    char *tenant;       /* the demo tenant */
    char *payee;        /* whom the payers pay */
    char *config_rpc;   /* config's RPC endpoint, for the token secret */
    char *metrics;      /* "config=host:port,rate=host:port,…" */
    char *bin_dir;      /* the service binaries, for start-to-ready */
    char *log_dir;      /* where the re-spawned services log ("" = /dev/null) */
    char *pg_url;       /* the stack's PostgreSQL, for commit counts ("" = none) */
    int64_t sequential; /* measured sessions of the latency phase */
    int64_t warmup;     /* unmeasured sessions before it */
    int64_t payers;     /* concurrent payers of the load phase */
    int64_t load_ms;    /* how long the load runs */
    int64_t ready_runs; /* spawns per service (0: skip start-to-ready) */
    int64_t funded_ms;  /* how long a session may take to be funded */
} s_config_t;

/* ---- HTTP requests in one curl multi ---------------------------------------- */

typedef struct _s_http_t s_http_t;
typedef struct _s_payer_t s_payer_t;
typedef struct _s_bench_t s_bench_t;
typedef void (s_done_fn) (s_http_t *http);

struct _s_http_t {
    CURL *easy;                 /* the transfer */
    struct curl_slist *headers; /* its request headers */
    char *body;                 /* response body so far (NUL-ended) */
    size_t size;                /* its length */
    bool too_large;             /* the body passed S_BODY_MAX */
    long status;                /* HTTP status, 0 on a transport error */
    CURLcode result;            /* transport result */
    s_done_fn *done;            /* called once the transfer ends, then freed */
    void *arg;                  /* for done */
    s_bench_t *bench;           /* owner */
};

typedef enum {
    P_IDLE,     /* between sessions */
    P_CREATING, /* POST /v1/sessions sent */
    P_OPENING,  /* GET …/events sent, waiting for its first event */
    P_CHECKOUT, /* POST …/checkout sent (the clock runs) */
    P_CONFIRM,  /* POST …/confirm sent */
    P_WAITING,  /* confirmed, waiting for "active" on the stream */
    P_ENDING,   /* POST …/end sent */
    P_STOPPED   /* no more sessions in this phase */
} s_state_t;

struct _s_payer_t {
    s_bench_t *bench;                /* owner */
    char user[32];                   /* u_bench_<n> */
    char auth[PPM_JWT_MAX_LEN + 32]; /* "Authorization: Bearer …" */
    s_state_t state;                 /* where it is in its session */
    s_http_t *request;               /* the ordinary request in flight, or NULL */
    bool request_ok;                 /* the last ordinary request's outcome */
    char request_error[400];         /* why it failed */
    s_http_t *stream;                /* the session's event stream, or NULL */
    char *frame;                     /* event-stream bytes not yet parsed */
    size_t frame_size;               /* their length */
    bool stream_ready;               /* its first event arrived */
    bool stream_failed;              /* it ended, overflowed or said payment_failed */
    char stream_error[160];          /* why */
    int64_t active_us;               /* when it said active (0: not yet) */
    bool failed;                     /* the current session failed (no figure, no count) */
    char session_id[64];             /* the current session */
    char payment_id[64];             /* its payment */
    int64_t t0_us;                   /* checkout sent */
    int64_t checkout_us;             /* checkout answered */
    int64_t confirm_us;              /* confirm answered */
    int64_t opened_us;               /* events requested */
};

typedef struct {
    double *values; /* milliseconds */
    size_t count;   /* how many */
    size_t max;     /* room for */
} s_samples_t;

struct _s_bench_t {
    s_config_t cfg;          /* from the environment */
    CURLM *multi;            /* every transfer */
    s_payer_t *payers;       /* cfg.payers of them; payers[0] also runs the latency phase */
    int64_t budget;          /* sessions still to start in this phase, -1 = until deadline */
    int64_t deadline_us;     /* no new session after this (0 = none) */
    int64_t window_start_us; /* sessions count when they start after this… */
    int64_t window_end_us;   /* …and end before this */
    bool measuring;          /* samples are kept */
    size_t completed;        /* sessions ended in the window */
    size_t completed_all;    /* sessions ended while measuring, the drain included */
    size_t attempted;        /* sessions started while measuring */
    size_t errors;           /* failed sessions while measuring */
    size_t errors_total;     /* failed sessions, all phases */
    char error_kind[S_ERROR_KINDS][480]; /* distinct errors of the phase, for the report */
    size_t error_count[S_ERROR_KINDS];   /* how often each happened */
    size_t error_kinds;                  /* how many kinds */
    s_samples_t funded;                  /* checkout → active, ms */
    s_samples_t checkout;                /* POST checkout's answer, ms */
    s_samples_t confirm;                 /* POST confirm's answer, ms */
    char metrics_addr[S_SERVICES][64];   /* host:port of each service's /metrics */
    double rss_idle[S_SERVICES];         /* bytes, -1 unknown */
    double rss_load[S_SERVICES];         /* largest under load, -1 unknown */
    size_t scrapes_pending;              /* /metrics requests in flight */
};

static int64_t
s_now_us (void)
{
    return ppm_clock_real_mono_us ();
}

static void
s_samples_add (s_samples_t *samples, double value)
{
    if (samples->count == samples->max) {
        size_t max = samples->max ? samples->max * 2 : 256;
        double *values = realloc (samples->values, max * sizeof *values);
        if (!values)
            return;
        samples->values = values;
        samples->max = max;
    }
    samples->values[samples->count++] = value;
}

static int
s_cmp_double (const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The nearest-rank percentile p (0..100) of samples, sorting them; -1 when
   there are none. */
static double
s_percentile (s_samples_t *samples, double p)
{
    if (samples->count == 0)
        return -1;
    qsort (samples->values, samples->count, sizeof (double), s_cmp_double);
    size_t rank = (size_t)((p / 100.0) * (double)samples->count + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > samples->count)
        rank = samples->count;
    return samples->values[rank - 1];
}

static void
s_samples_reset (s_samples_t *samples)
{
    samples->count = 0;
}

/* Counts a failed session: text is what failed (no session id, so that
   the same failure is counted as one kind), session which session. */
static void
s_error (s_bench_t *self, const char *text, const char *session)
{
    self->errors_total++;
    if (self->measuring)
        self->errors++;
    size_t kind = 0;
    while (kind < self->error_kinds && strcmp (self->error_kind[kind], text) != 0)
        kind++;
    if (kind == self->error_kinds) {
        if (kind == S_ERROR_KINDS)
            kind--; /* the last kind also counts every further one */
        else {
            snprintf (self->error_kind[kind], sizeof self->error_kind[0], "%s", text);
            self->error_kinds++;
            fprintf (stderr, "bench_e2e: %s (session %s; more like it are counted, not printed)\n",
                     text, session);
        }
    }
    self->error_count[kind]++;
}

/* Starts counting the failed sessions of a new phase. */
static void
s_errors_reset (s_bench_t *self)
{
    self->errors = 0;
    self->attempted = 0;
    self->error_kinds = 0;
    memset (self->error_count, 0, sizeof self->error_count);
}

static size_t
s_on_body (char *data, size_t size, size_t count, void *arg)
{
    s_http_t *http = arg;
    size_t n = size * count;
    if (http->size + n > S_BODY_MAX) {
        http->too_large = true;
        return 0; /* aborts the transfer */
    }
    char *body = realloc (http->body, http->size + n + 1);
    if (!body)
        return 0;
    memcpy (body + http->size, data, n);
    http->size += n;
    body[http->size] = '\0';
    http->body = body;
    return n;
}

static void
s_http_free (s_http_t **http_p)
{
    s_http_t *http = *http_p;
    if (!http)
        return;
    if (http->easy) {
        curl_multi_remove_handle (http->bench->multi, http->easy);
        curl_easy_cleanup (http->easy);
    }
    curl_slist_free_all (http->headers);
    free (http->body);
    free (http);
    *http_p = NULL;
}

/* Starts method url (path under the gateway when it starts with '/') with
   json (may be NULL) and the payer's token (payer may be NULL). done runs
   from the loop when it ends; the caller's pointer to the request stays
   valid until done returns. NULL when curl refuses. */
static s_http_t *
s_http_start (s_bench_t *self, const char *method, const char *url, s_payer_t *payer,
              const char *json, s_done_fn *done, void *arg)
{
    s_http_t *http = calloc (1, sizeof *http);
    if (!http)
        return NULL;
    http->bench = self;
    http->done = done;
    http->arg = arg;
    http->easy = curl_easy_init ();
    if (!http->easy) {
        free (http);
        return NULL;
    }
    char full[1024];
    if (url[0] == '/')
        snprintf (full, sizeof full, "%s%s", self->cfg.gateway_url, url);
    else
        snprintf (full, sizeof full, "%s", url);
    curl_easy_setopt (http->easy, CURLOPT_URL, full);
    curl_easy_setopt (http->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (http->easy, CURLOPT_PRIVATE, http);
    curl_easy_setopt (http->easy, CURLOPT_WRITEFUNCTION, s_on_body);
    curl_easy_setopt (http->easy, CURLOPT_WRITEDATA, http);
    curl_easy_setopt (http->easy, CURLOPT_TIMEOUT_MS, (long)S_REQUEST_MS);
    if (payer)
        http->headers = curl_slist_append (http->headers, payer->auth);
    if (json) {
        http->headers = curl_slist_append (http->headers, "Content-Type: application/json");
        curl_easy_setopt (http->easy, CURLOPT_COPYPOSTFIELDS, json);
    }
    if (strcmp (method, "GET") != 0 && strcmp (method, "POST") != 0)
        curl_easy_setopt (http->easy, CURLOPT_CUSTOMREQUEST, method);
    if (http->headers)
        curl_easy_setopt (http->easy, CURLOPT_HTTPHEADER, http->headers);
    if (curl_multi_add_handle (self->multi, http->easy) != CURLM_OK) {
        curl_easy_cleanup (http->easy);
        http->easy = NULL;
        s_http_free (&http);
        return NULL;
    }
    return http;
}

/* Runs the loop once: transfers progress, ended ones get their done. */
static void
s_loop_once (s_bench_t *self, int wait_ms)
{
    int running = 0;
    curl_multi_poll (self->multi, NULL, 0, wait_ms, NULL);
    curl_multi_perform (self->multi, &running);
    int left = 0;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read (self->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        s_http_t *http = NULL;
        curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **)&http);
        http->result = msg->data.result;
        curl_easy_getinfo (msg->easy_handle, CURLINFO_RESPONSE_CODE, &http->status);
        if (http->result != CURLE_OK)
            http->status = 0;
        curl_multi_remove_handle (self->multi, http->easy);
        curl_easy_cleanup (http->easy);
        http->easy = NULL;
        if (http->done)
            http->done (http);
        s_http_free (&http);
    }
}

/* A short description of a failed request: the transport error, or the
   status with the error body's code and message (SPEC §5's shape). */
static void
s_describe (const s_http_t *http, const char *what, char *out, size_t size)
{
    if (http->status == 0) {
        snprintf (out, size, "%s: %s", what,
                  http->too_large ? "body too large" : curl_easy_strerror (http->result));
        return;
    }
    json_t *json = json_loads (http->body ? http->body : "", 0, NULL);
    json_t *error = json ? json_object_get (json, "error") : NULL;
    const char *code = json_string_value (json_object_get (error, "code"));
    const char *message = json_string_value (json_object_get (error, "message"));
    if (code && message)
        snprintf (out, size, "%s: HTTP %ld %s: %.250s", what, http->status, code, message);
    else
        snprintf (out, size, "%s: HTTP %ld %.250s", what, http->status,
                  http->body ? http->body : "");
    json_decref (json);
}

/* ---- one payer's sessions --------------------------------------------------- */

static const char *
s_json_string (json_t *json, const char *key)
{
    json_t *value = json ? json_object_get (json, key) : NULL;
    return json_is_string (value) ? json_string_value (value) : NULL;
}

/* The answer of an ordinary request: ok when its status is expect; the
   body's key (may be NULL) copied to out. */
static void
s_on_request (s_http_t *http, long expect, const char *what, const char *key, char *out,
              size_t size)
{
    s_payer_t *payer = http->arg;
    payer->request = NULL;
    payer->request_ok = http->status == expect;
    if (payer->request_ok && key) {
        json_t *json = json_loads (http->body ? http->body : "", 0, NULL);
        const char *value = s_json_string (json, key);
        if (value && strlen (value) < size)
            snprintf (out, size, "%s", value);
        else
            payer->request_ok = false;
        json_decref (json);
    }
    if (!payer->request_ok)
        s_describe (http, what, payer->request_error, sizeof payer->request_error);
}

static void
s_on_created (s_http_t *http)
{
    s_payer_t *payer = http->arg;
    s_on_request (http, 201, "POST /v1/sessions", "session_id", payer->session_id,
                  sizeof payer->session_id);
}

static void
s_on_checkout (s_http_t *http)
{
    s_payer_t *payer = http->arg;
    payer->checkout_us = s_now_us ();
    s_on_request (http, 201, "POST checkout", "payment_id", payer->payment_id,
                  sizeof payer->payment_id);
}

static void
s_on_confirm (s_http_t *http)
{
    s_payer_t *payer = http->arg;
    payer->confirm_us = s_now_us ();
    s_on_request (http, 200, "POST confirm", NULL, NULL, 0);
}

static void
s_on_end (s_http_t *http)
{
    s_on_request (http, 200, "POST end", NULL, NULL, 0);
}

/* One event-stream frame ("event: …\ndata: …"): notes the first event, the
   session becoming active, and a failed payment. */
static void
s_stream_frame (s_payer_t *payer, char *frame)
{
    const char *event = NULL;
    const char *data = NULL;
    for (char *line = frame; line && *line;) {
        char *next = strchr (line, '\n');
        if (next)
            *next++ = '\0';
        if (strncmp (line, "event: ", 7) == 0)
            event = line + 7;
        else if (strncmp (line, "data: ", 6) == 0)
            data = line + 6;
        line = next;
    }
    if (!event)
        return; /* "retry: 2000" */
    payer->stream_ready = true;
    if (strcmp (event, "payment_failed") == 0) {
        payer->stream_failed = true;
        snprintf (payer->stream_error, sizeof payer->stream_error, "event payment_failed: %.100s",
                  data ? data : "");
        return;
    }
    if (payer->active_us || !data)
        return;
    json_t *json = json_loads (data, 0, NULL);
    const char *state = s_json_string (json, "state");
    if ((state && strcmp (state, "active") == 0) || strcmp (event, "active") == 0)
        payer->active_us = s_now_us ();
    json_decref (json);
}

static size_t
s_on_stream (char *data, size_t size, size_t count, void *arg)
{
    s_http_t *http = arg;
    s_payer_t *payer = http->arg;
    size_t n = size * count;
    if (payer->frame_size + n > S_STREAM_MAX) {
        payer->stream_failed = true;
        snprintf (payer->stream_error, sizeof payer->stream_error, "event stream: frame too large");
        return 0;
    }
    char *frame = realloc (payer->frame, payer->frame_size + n + 1);
    if (!frame)
        return 0;
    memcpy (frame + payer->frame_size, data, n);
    payer->frame_size += n;
    frame[payer->frame_size] = '\0';
    payer->frame = frame;
    /* every complete frame, in order */
    char *end;
    while ((end = strstr (payer->frame, "\n\n"))) {
        *end = '\0';
        s_stream_frame (payer, payer->frame);
        size_t used = (size_t)(end + 2 - payer->frame);
        memmove (payer->frame, end + 2, payer->frame_size - used + 1);
        payer->frame_size -= used;
    }
    return n;
}

static void
s_on_stream_end (s_http_t *http)
{
    s_payer_t *payer = http->arg;
    payer->stream = NULL;
    if (!payer->stream_failed) {
        payer->stream_failed = true;
        s_describe (http, "event stream ended", payer->stream_error, sizeof payer->stream_error);
    }
}

static void
s_stream_close (s_payer_t *payer)
{
    s_http_free (&payer->stream);
    free (payer->frame);
    payer->frame = NULL;
    payer->frame_size = 0;
}

static bool
s_stream_open (s_payer_t *payer)
{
    s_bench_t *self = payer->bench;
    char path[160];
    snprintf (path, sizeof path, "/v1/sessions/%s/events", payer->session_id);
    payer->stream_ready = false;
    payer->stream_failed = false;
    payer->active_us = 0;
    payer->opened_us = s_now_us ();
    payer->stream = s_http_start (self, "GET", path, payer, NULL, s_on_stream_end, payer);
    if (!payer->stream)
        return false;
    payer->stream->headers =
        curl_slist_append (payer->stream->headers, "Accept: text/event-stream");
    curl_easy_setopt (payer->stream->easy, CURLOPT_HTTPHEADER, payer->stream->headers);
    curl_easy_setopt (payer->stream->easy, CURLOPT_WRITEFUNCTION, s_on_stream);
    curl_easy_setopt (payer->stream->easy, CURLOPT_TIMEOUT_MS, 0L);
    return true;
}

/* Starts the payer's next request; false when curl refused it. */
static bool
s_request (s_payer_t *payer, const char *method, const char *action, const char *json,
           s_done_fn *done)
{
    char path[160];
    if (action)
        snprintf (path, sizeof path, "/v1/sessions/%s/%s", payer->session_id, action);
    else
        snprintf (path, sizeof path, "/v1/sessions");
    payer->request = s_http_start (payer->bench, method, path, payer, json, done, payer);
    if (!payer->request)
        snprintf (payer->request_error, sizeof payer->request_error, "curl refused %.100s", path);
    return payer->request != NULL;
}

/* The current session failed: counted once, its stream closed, and ended
   (best effort, so that the payer's unfinished sessions do not pile up). */
static void
s_payer_fail (s_payer_t *payer, const char *why)
{
    s_bench_t *self = payer->bench;
    s_error (self, why, payer->session_id[0] ? payer->session_id : "-");
    payer->failed = true;
    s_stream_close (payer);
    if (payer->session_id[0] && s_request (payer, "POST", "end", "{}", s_on_end))
        payer->state = P_ENDING;
    else
        payer->state = P_IDLE;
}

/* Moves the payer on when what it waits for has happened. Returns true
   when its state changed (call again). */
static bool
s_payer_step (s_payer_t *payer)
{
    s_bench_t *self = payer->bench;
    int64_t now = s_now_us ();
    char body[256];
    switch (payer->state) {
        case P_IDLE:
            if (self->budget == 0 || (self->deadline_us && now >= self->deadline_us)) {
                payer->state = P_STOPPED;
                return true;
            }
            if (self->budget > 0)
                self->budget--;
            if (self->measuring)
                self->attempted++;
            payer->failed = false;
            payer->session_id[0] = '\0';
            payer->payment_id[0] = '\0';
            payer->t0_us = 0;
            snprintf (body, sizeof body, "{\"payee\":\"%s\",\"kind\":\"chat\"}", self->cfg.payee);
            if (!s_request (payer, "POST", NULL, body, s_on_created)) {
                s_payer_fail (payer, payer->request_error);
                return true;
            }
            payer->state = P_CREATING;
            return true;
        case P_CREATING:
            if (payer->request)
                return false;
            if (!payer->request_ok) {
                s_payer_fail (payer, payer->request_error);
                return true;
            }
            if (!s_stream_open (payer)) {
                s_payer_fail (payer, "curl refused the event stream");
                return true;
            }
            payer->state = P_OPENING;
            return true;
        case P_OPENING:
            if (payer->stream_failed) {
                s_payer_fail (payer, payer->stream_error);
                return true;
            }
            if (!payer->stream_ready) {
                if (now - payer->opened_us > S_REQUEST_MS * 1000LL) {
                    s_payer_fail (payer, "event stream: no first event within 10 s");
                    return true;
                }
                return false;
            }
            payer->t0_us = s_now_us ();
            if (!s_request (payer, "POST", "checkout", "{\"minutes\":10,\"accept_terms\":true}",
                            s_on_checkout)) {
                s_payer_fail (payer, payer->request_error);
                return true;
            }
            payer->state = P_CHECKOUT;
            return true;
        case P_CHECKOUT:
            if (payer->request)
                return false;
            if (!payer->request_ok) {
                s_payer_fail (payer, payer->request_error);
                return true;
            }
            snprintf (body, sizeof body,
                      "{\"payment_method\":\"pm_card_visa\",\"payment_id\":\"%s\"}",
                      payer->payment_id);
            if (!s_request (payer, "POST", "confirm", body, s_on_confirm)) {
                s_payer_fail (payer, payer->request_error);
                return true;
            }
            payer->state = P_CONFIRM;
            return true;
        case P_CONFIRM:
            if (payer->request)
                return false;
            if (!payer->request_ok) {
                s_payer_fail (payer, payer->request_error);
                return true;
            }
            payer->state = P_WAITING;
            return true;
        case P_WAITING:
            if (!payer->active_us) {
                if (payer->stream_failed) {
                    s_payer_fail (payer, payer->stream_error);
                    return true;
                }
                if (now - payer->t0_us > self->cfg.funded_ms * 1000) {
                    s_payer_fail (payer, "not funded in time");
                    return true;
                }
                return false;
            }
            if (self->measuring && payer->t0_us >= self->window_start_us) {
                s_samples_add (&self->funded, (double)(payer->active_us - payer->t0_us) / 1000.0);
                s_samples_add (&self->checkout,
                               (double)(payer->checkout_us - payer->t0_us) / 1000.0);
                s_samples_add (&self->confirm,
                               (double)(payer->confirm_us - payer->checkout_us) / 1000.0);
            }
            s_stream_close (payer);
            if (!s_request (payer, "POST", "end", "{}", s_on_end)) {
                s_payer_fail (payer, payer->request_error);
                return true;
            }
            payer->state = P_ENDING;
            return true;
        case P_ENDING:
            if (payer->request)
                return false;
            if (!payer->failed) {
                if (!payer->request_ok)
                    s_payer_fail (payer, payer->request_error);
                else if (self->measuring && payer->t0_us >= self->window_start_us) {
                    self->completed_all++;
                    if (!self->window_end_us || now <= self->window_end_us)
                        self->completed++;
                }
            }
            payer->state = P_IDLE;
            return true;
        case P_STOPPED:
            return false;
    }
    return false;
}

static void s_scrape_start (s_bench_t *self);

/* Runs the first count payers until each has stopped (budget spent or
   deadline passed) or hard_end_us (0: none) passes; then abandons what is
   left, each as a failed session. Every second, when scrape is true and
   the window is open, the services' RSS is read. */
static void
s_run (s_bench_t *self, size_t count, bool scrape, int64_t hard_end_us)
{
    for (size_t i = 0; i < count; i++)
        self->payers[i].state = P_IDLE;
    int64_t next_scrape = s_now_us ();
    while (true) {
        size_t stopped = 0;
        for (size_t i = 0; i < count; i++) {
            s_payer_t *payer = &self->payers[i];
            while (s_payer_step (payer))
                ;
            if (payer->state == P_STOPPED)
                stopped++;
        }
        if (stopped == count)
            break;
        int64_t now = s_now_us ();
        if (hard_end_us && now > hard_end_us) {
            for (size_t i = 0; i < count; i++) {
                s_payer_t *payer = &self->payers[i];
                if (payer->state != P_STOPPED) {
                    char why[64];
                    snprintf (why, sizeof why, "still unfinished after the load (state %d)",
                              (int)payer->state);
                    s_error (self, why, payer->session_id);
                    s_http_free (&payer->request);
                    s_stream_close (payer);
                    payer->state = P_STOPPED;
                }
            }
            break;
        }
        if (scrape && now >= next_scrape && (!self->window_end_us || now < self->window_end_us)) {
            s_scrape_start (self);
            next_scrape = now + 1000000;
        }
        s_loop_once (self, 5);
    }
    /* let scrapes still in flight finish */
    int64_t until = s_now_us () + 3000000;
    while (self->scrapes_pending && s_now_us () < until)
        s_loop_once (self, 5);
}

/* ---- resident memory from /metrics ------------------------------------------ */

typedef struct {
    s_bench_t *bench;
    int service;
    double *into; /* rss_idle or rss_load */
    bool largest; /* keep the largest value seen */
} s_scrape_t;

/* process_resident_memory_bytes from a /metrics body, or -1. */
static double
s_rss_of (const char *body)
{
    static const char *name = "process_resident_memory_bytes ";
    for (const char *p = body; p && *p;) {
        if (strncmp (p, name, strlen (name)) == 0)
            return strtod (p + strlen (name), NULL);
        p = strchr (p, '\n');
        if (p)
            p++;
    }
    return -1;
}

static void
s_on_scrape (s_http_t *http)
{
    s_scrape_t *scrape = http->arg;
    s_bench_t *self = scrape->bench;
    self->scrapes_pending--;
    double rss = http->status == 200 ? s_rss_of (http->body) : -1;
    if (rss >= 0 && (!scrape->largest || rss > scrape->into[scrape->service]))
        scrape->into[scrape->service] = rss;
    free (scrape);
}

static void
s_scrape_into (s_bench_t *self, double *into, bool largest)
{
    for (int i = 0; i < S_SERVICES; i++) {
        if (!self->metrics_addr[i][0])
            continue;
        s_scrape_t *scrape = calloc (1, sizeof *scrape);
        if (!scrape)
            continue;
        *scrape = (s_scrape_t){self, i, into, largest};
        char url[128];
        snprintf (url, sizeof url, "http://%s/metrics", self->metrics_addr[i]);
        if (s_http_start (self, "GET", url, NULL, NULL, s_on_scrape, scrape))
            self->scrapes_pending++;
        else
            free (scrape);
    }
}

static void
s_scrape_start (s_bench_t *self)
{
    s_scrape_into (self, self->rss_load, true);
}

/* "config=host:port,rate=host:port,…" into metrics_addr; -1 when a
   service is missing. */
static int
s_parse_metrics (s_bench_t *self, const char *text)
{
    for (int i = 0; i < S_SERVICES; i++) {
        char key[32];
        snprintf (key, sizeof key, "%s=", s_services[i]);
        const char *p = strstr (text, key);
        /* the name must start the text or follow a comma */
        while (p && p != text && p[-1] != ',')
            p = strstr (p + 1, key);
        if (!p)
            return -1;
        p += strlen (key);
        size_t len = strcspn (p, ",");
        if (len == 0 || len >= sizeof self->metrics_addr[i])
            return -1;
        memcpy (self->metrics_addr[i], p, len);
        self->metrics_addr[i][len] = '\0';
    }
    return 0;
}

/* Transactions committed in every database of the server at url so far,
   or -1 ("" or unreachable). */
static double
s_pg_commits (const char *url)
{
    if (!*url)
        return -1;
    PGconn *conn = PQconnectdb (url);
    double commits = -1;
    if (PQstatus (conn) == CONNECTION_OK) {
        PGresult *res = PQexec (conn, "SELECT sum(xact_commit) FROM pg_stat_database");
        if (PQresultStatus (res) == PGRES_TUPLES_OK && PQntuples (res) == 1)
            commits = strtod (PQgetvalue (res, 0, 0), NULL);
        PQclear (res);
    }
    PQfinish (conn);
    return commits;
}

/* ---- tokens ----------------------------------------------------------------- */

/* Mints every payer's token with the tenant's user-token secret. */
static int
s_mint_tokens (s_bench_t *self)
{
    ppm_rpc_client_t *client = ppm_rpc_client_new (self->cfg.config_rpc);
    if (!client) {
        fprintf (stderr, "bench_e2e: bad config endpoint %s\n", self->cfg.config_rpc);
        return -1;
    }
    Ppm__V1__GetUserTokenSecretRequest req = PPM__V1__GET_USER_TOKEN_SECRET_REQUEST__INIT;
    req.tenant_id = self->cfg.tenant;
    ppm_rpc_req_t rr = {
        .method = "config.GetUserTokenSecret", .tenant = self->cfg.tenant, .timeout_ms = 5000};
    ProtobufCMessage *reply = NULL;
    ppm_status_t *status = ppm_rpc_client_call_sync (
        client, &rr, &req.base, &ppm__v1__user_token_secret__descriptor, &reply);
    ppm_rpc_client_destroy (&client);
    if (status) {
        fprintf (stderr, "bench_e2e: config.GetUserTokenSecret: %s\n", ppm_status_message (status));
        ppm_status_destroy (&status);
        return -1;
    }
    Ppm__V1__UserTokenSecret *secret = (Ppm__V1__UserTokenSecret *)reply;
    int rc = 0;
    int64_t now_s = ppm_clock_real_ms () / 1000;
    for (int64_t i = 0; i < self->cfg.payers; i++) {
        s_payer_t *payer = &self->payers[i];
        ppm_jwt_claims_t claims;
        memset (&claims, 0, sizeof claims);
        snprintf (claims.tid, sizeof claims.tid, "%s", self->cfg.tenant);
        snprintf (claims.sub, sizeof claims.sub, "%s", payer->user);
        claims.iat = now_s;
        claims.exp = now_s + 3600;
        char *token =
            ppm_jwt_sign (&claims, (const uint8_t *)secret->secret, strlen (secret->secret));
        if (!token) {
            rc = -1;
            break;
        }
        snprintf (payer->auth, sizeof payer->auth, "Authorization: Bearer %s", token);
        free (token);
    }
    memset (secret->secret, 0, strlen (secret->secret));
    protobuf_c_message_free_unpacked (reply, NULL);
    return rc;
}

/* ---- start-to-ready ----------------------------------------------------------- */

/* A TCP port on 127.0.0.1 that was free a moment ago, or -1. */
static int
s_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = -1;
    if (bind (fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname (fd, (struct sockaddr *)&addr, &len) == 0)
        port = ntohs (addr.sin_port);
    close (fd);
    return port;
}

/* 200 from GET url within 200 ms? */
static bool
s_ready (CURL *easy, const char *url)
{
    curl_easy_setopt (easy, CURLOPT_URL, url);
    curl_easy_setopt (easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (easy, CURLOPT_TIMEOUT_MS, 200L);
    curl_easy_setopt (easy, CURLOPT_WRITEFUNCTION, s_on_body);
    s_http_t sink = {0};
    curl_easy_setopt (easy, CURLOPT_WRITEDATA, &sink);
    long status = 0;
    bool ok = curl_easy_perform (easy) == CURLE_OK &&
              curl_easy_getinfo (easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK &&
              status == 200;
    free (sink.body);
    return ok;
}

/* The environment plus name=value (replacing name's entry), into env
   (at most max entries with the NULL); returns the strings to free. */
static char *
s_env_with (char **env, size_t max, size_t *count, const char *name, const char *value)
{
    size_t len = strlen (name);
    char *entry = NULL;
    if (asprintf (&entry, "%s=%s", name, value) < 0)
        return NULL;
    for (size_t i = 0; i < *count; i++)
        if (strncmp (env[i], name, len) == 0 && env[i][len] == '=') {
            env[i] = entry;
            return entry;
        }
    if (*count + 1 < max) {
        env[(*count)++] = entry;
        env[*count] = NULL;
    }
    return entry;
}

/* Spawns ppm-<service> with the environment plus fresh ports and measures
   the milliseconds from fork until /readyz is 200. -1 on failure (why in
   error). The process is stopped (SIGTERM, KILL after 10 s) before this
   returns. The child only redirects its output and execs: everything it
   needs is built before the fork. */
static double
s_start_to_ready (s_bench_t *self, int service, int run, char *error, size_t error_size)
{
    extern char **environ;
    const char *name = s_services[service];
    char path[512];
    snprintf (path, sizeof path, "%s/ppm-%s", self->cfg.bin_dir, name);
    int rpc = s_free_port ();
    int pub = s_free_port ();
    int metrics = s_free_port ();
    int http = s_free_port ();
    if (rpc < 0 || pub < 0 || metrics < 0 || http < 0) {
        snprintf (error, error_size, "no free port");
        return -1;
    }
    char value[64];
    size_t count = 0;
    while (environ[count])
        count++;
    size_t max = count + 8;
    char **env = calloc (max, sizeof *env);
    char *owned[5] = {NULL};
    if (!env) {
        snprintf (error, error_size, "out of memory");
        return -1;
    }
    memcpy (env, environ, count * sizeof *env);
    snprintf (value, sizeof value, "tcp://127.0.0.1:%d", rpc);
    owned[0] = s_env_with (env, max, &count, "PPM_RPC_BIND", value);
    snprintf (value, sizeof value, "tcp://127.0.0.1:%d", pub);
    owned[1] = s_env_with (env, max, &count, "PPM_PUB_BIND", value);
    snprintf (value, sizeof value, "127.0.0.1:%d", metrics);
    owned[2] = s_env_with (env, max, &count, "PPM_METRICS_BIND", value);
    snprintf (value, sizeof value, "%d", http);
    owned[3] = s_env_with (env, max, &count, "PPM_HTTP_PORT", value);
    snprintf (value, sizeof value, "bench-ready-%d", run);
    owned[4] = s_env_with (env, max, &count, "PPM_METERING_REPLICA_ID", value);
    char log[512];
    if (*self->cfg.log_dir)
        snprintf (log, sizeof log, "%s/%s-ready-%d.log", self->cfg.log_dir, name, run);
    else
        snprintf (log, sizeof log, "/dev/null");
    int log_fd = open (log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    char url[128];
    snprintf (url, sizeof url, "http://127.0.0.1:%d/readyz", metrics);
    CURL *easy = curl_easy_init ();
    double took = -1;
    pid_t pid = -1;
    if (!easy || log_fd < 0) {
        snprintf (error, error_size, "cannot prepare the spawn (%.120s)", log);
        goto cleanup;
    }
    fflush (NULL);
    int64_t t0 = s_now_us ();
    pid = fork ();
    if (pid == 0) {
        dup2 (log_fd, STDOUT_FILENO);
        dup2 (log_fd, STDERR_FILENO);
        execve (path, (char *[]){path, NULL}, env);
        _exit (127);
    }
    if (pid < 0) {
        snprintf (error, error_size, "fork: %s", strerror (errno));
        goto cleanup;
    }
    while (true) {
        if (s_ready (easy, url)) {
            took = (double)(s_now_us () - t0) / 1000.0;
            break;
        }
        int status = 0;
        if (waitpid (pid, &status, WNOHANG) == pid) {
            snprintf (error, error_size, "ppm-%s exited (status %d) before it was ready", name,
                      status);
            pid = -1;
            break;
        }
        if (s_now_us () - t0 > S_READY_MAX_MS * 1000LL) {
            snprintf (error, error_size, "ppm-%s not ready after %d ms", name, S_READY_MAX_MS);
            break;
        }
        usleep (1000);
    }
    if (pid > 0) {
        kill (pid, SIGTERM);
        int status = 0;
        int64_t until = s_now_us () + 10000000;
        while (waitpid (pid, &status, WNOHANG) == 0) {
            if (s_now_us () > until) {
                kill (pid, SIGKILL);
                waitpid (pid, &status, 0);
                break;
            }
            usleep (5000);
        }
    }
cleanup:
    if (easy)
        curl_easy_cleanup (easy);
    if (log_fd >= 0)
        close (log_fd);
    for (int i = 0; i < 5; i++)
        free (owned[i]);
    free (env);
    return took;
}

/* ---- report --------------------------------------------------------------------- */

static void
s_ms (char *out, size_t size, double ms)
{
    if (ms < 0)
        snprintf (out, size, "-");
    else if (ms < 10)
        snprintf (out, size, "%.2f ms", ms);
    else
        snprintf (out, size, "%.1f ms", ms);
}

static void
s_mb (char *out, size_t size, double bytes)
{
    if (bytes < 0)
        snprintf (out, size, "-");
    else
        snprintf (out, size, "%.1f MB", bytes / (1024.0 * 1024.0));
}

static void
s_report_latency (s_bench_t *self, const char *prefix, const char *what)
{
    char id[64], figure[32], text[160];
    double p50 = s_percentile (&self->funded, 50);
    double p99 = s_percentile (&self->funded, 99);
    double checkout = s_percentile (&self->checkout, 50);
    double confirm = s_percentile (&self->confirm, 50);
    printf ("e2e: %s: %zu sessions, checkout -> funded p50 %.1f ms, p99 %.1f ms (POST checkout "
            "p50 %.1f ms, POST confirm p50 %.1f ms)\n",
            what, self->funded.count, p50, p99, checkout, confirm);
    fflush (stdout);
    snprintf (id, sizeof id, "e2e.%sfunded_p50", prefix);
    snprintf (text, sizeof text, "checkout -> funded, p50, %s (%zu sessions)", what,
              self->funded.count);
    s_ms (figure, sizeof figure, p50);
    ppm_bench_result (id, text, figure, NULL, NULL, NULL, PPM_BENCH_NO_AIM);
    snprintf (id, sizeof id, "e2e.%sfunded_p99", prefix);
    snprintf (text, sizeof text, "checkout -> funded, p99, %s", what);
    s_ms (figure, sizeof figure, p99);
    ppm_bench_result (id, text, figure, NULL, NULL, NULL, PPM_BENCH_NO_AIM);
    if (!*prefix) {
        s_ms (figure, sizeof figure, checkout);
        ppm_bench_result ("e2e.checkout_p50", "of which POST checkout answered, p50", figure, NULL,
                          NULL, NULL, PPM_BENCH_NO_AIM);
        s_ms (figure, sizeof figure, confirm);
        ppm_bench_result ("e2e.confirm_p50", "of which POST confirm answered, p50", figure, NULL,
                          NULL, NULL, PPM_BENCH_NO_AIM);
    }
}

/* The phase's failed sessions as a result line with the aim 0 and, when
   there were any, one gap line per kind. */
static void
s_report_errors (s_bench_t *self, const char *id, const char *what)
{
    char figure[32];
    char text[200];
    snprintf (figure, sizeof figure, "%zu", self->errors);
    snprintf (text, sizeof text, "failed sessions (%s; %zu started)", what, self->attempted);
    ppm_bench_result (id, text, figure, NULL, NULL, "0", ppm_bench_met (self->errors == 0));
    for (size_t i = 0; i < self->error_kinds; i++)
        ppm_bench_gap (id, "%zu x %s%s", self->error_count[i], self->error_kind[i],
                       i + 1 == S_ERROR_KINDS ? " (and any other kind)" : "");
    if (self->errors)
        printf ("e2e: %s: %zu of %zu sessions failed\n", what, self->errors, self->attempted);
    fflush (stdout);
}

int
main (void)
{
    s_bench_t bench;
    memset (&bench, 0, sizeof bench);
    s_bench_t *self = &bench;
    s_config_t *cfg = &self->cfg;
    ppm_env_t env[] = {
        {"PPM_GATEWAY_URL", PPM_ENV_STRING, .required = true, .out = &cfg->gateway_url},
        {"PPM_DEMO_TENANT", PPM_ENV_STRING, .required = true, .out = &cfg->tenant},
        {"PPM_DEMO_PAYEE_ID", PPM_ENV_STRING, .def = "u_coach", .out = &cfg->payee},
        {"PPM_CONFIG_ENDPOINT", PPM_ENV_STRING, .required = true, .out = &cfg->config_rpc},
        {"PPM_BENCH_METRICS", PPM_ENV_STRING, .required = true, .out = &cfg->metrics},
        {"PPM_BIN_DIR", PPM_ENV_STRING, .def = "build/bin", .out = &cfg->bin_dir},
        {"PPM_BENCH_LOG_DIR", PPM_ENV_STRING, .def = "", .out = &cfg->log_dir},
        {"PPM_PG_URL", PPM_ENV_STRING, .def = "", .secret = true, .out = &cfg->pg_url},
        {"PPM_BENCH_SEQUENTIAL", PPM_ENV_INT, .min = 1, .max = 100000, .def = "200",
         .out = &cfg->sequential},
        {"PPM_BENCH_WARMUP", PPM_ENV_INT, .min = 0, .max = 1000, .def = "5", .out = &cfg->warmup},
        {"PPM_BENCH_PAYERS", PPM_ENV_INT, .min = 1, .max = 2000, .def = "16", .out = &cfg->payers},
        {"PPM_BENCH_LOAD", PPM_ENV_DURATION, .min = 100, .max = 3600000, .def = "15s",
         .out = &cfg->load_ms},
        {"PPM_BENCH_READY_RUNS", PPM_ENV_INT, .min = 0, .max = 100, .def = "3",
         .out = &cfg->ready_runs},
        {"PPM_BENCH_FUNDED_TIMEOUT", PPM_ENV_DURATION, .min = 100, .max = 600000, .def = "10s",
         .out = &cfg->funded_ms},
        {NULL}};
    const char *error = NULL;
    ppm_log_init ("bench");
    ppm_log_set_level (PPM_LOG_ERROR);
    if (ppm_env_load (env, &error) || ppm_clock_init (&error)) {
        fprintf (stderr, "bench_e2e: %s (run it through tests/bench/bench_e2e.sh)\n", error);
        return 1;
    }
    if (s_parse_metrics (self, cfg->metrics)) {
        fprintf (stderr, "bench_e2e: PPM_BENCH_METRICS must name config, rate, payment, "
                         "metering and gateway (name=host:port,…)\n");
        return 1;
    }
    signal (SIGPIPE, SIG_IGN);
    curl_global_init (CURL_GLOBAL_DEFAULT);
    int rc = 1;
    self->multi = curl_multi_init ();
    curl_multi_setopt (self->multi, CURLMOPT_MAXCONNECTS, (long)(cfg->payers * 2 + 16));
    self->payers = calloc ((size_t)cfg->payers, sizeof *self->payers);
    for (int64_t i = 0; i < cfg->payers; i++) {
        self->payers[i].bench = self;
        snprintf (self->payers[i].user, sizeof self->payers[i].user, "u_bench_%04lld",
                  (long long)i);
    }
    for (int i = 0; i < S_SERVICES; i++)
        self->rss_idle[i] = self->rss_load[i] = -1;
    if (s_mint_tokens (self))
        goto cleanup;

    /* (c) idle RSS: the stack has only started. */
    s_scrape_into (self, self->rss_idle, false);
    int64_t until = s_now_us () + 5000000;
    while (self->scrapes_pending && s_now_us () < until)
        s_loop_once (self, 5);

    /* (a) checkout -> funded, one payer, one session after the other. */
    self->budget = cfg->warmup;
    s_run (self, 1, false, 0);
    s_errors_reset (self);
    self->measuring = true;
    self->window_start_us = s_now_us ();
    self->budget = cfg->sequential;
    s_run (self, 1, false, 0);
    self->measuring = false;
    s_report_latency (self, "", "one payer, sessions one after another");
    s_report_errors (self, "e2e.errors_sequential", "one payer, sessions one after another");
    if (self->funded.count == 0) {
        fprintf (stderr, "bench_e2e: no session was funded\n");
        goto cleanup;
    }

    /* (b) sessions per second: every payer at once. First each payer's
       first session (its Stripe Customer is created then), unmeasured. */
    s_samples_reset (&self->funded);
    s_samples_reset (&self->checkout);
    s_samples_reset (&self->confirm);
    self->budget = cfg->payers;
    s_run (self, (size_t)cfg->payers, false, s_now_us () + S_DRAIN_MS * 1000LL);
    s_errors_reset (self);
    self->completed = 0;
    self->completed_all = 0;
    self->measuring = true;
    self->budget = -1;
    double commits_before = s_pg_commits (cfg->pg_url);
    self->window_start_us = s_now_us ();
    self->deadline_us = self->window_start_us + cfg->load_ms * 1000;
    self->window_end_us = self->deadline_us;
    s_run (self, (size_t)cfg->payers, true, self->deadline_us + S_DRAIN_MS * 1000LL);
    self->measuring = false;
    double commits_after = s_pg_commits (cfg->pg_url);
    double seconds = (double)cfg->load_ms / 1000.0;
    double per_second = (double)self->completed / seconds;
    printf ("e2e: %lld payers for %.1f s: %zu sessions completed (%.1f/s), %zu started, %zu "
            "errors\n",
            (long long)cfg->payers, seconds, self->completed, per_second, self->attempted,
            self->errors);
    fflush (stdout);
    char figure[64], baseline[64], ratio[64], what[200];
    snprintf (figure, sizeof figure, "%.1f sessions/s", per_second);
    snprintf (what, sizeof what,
              "paid sessions completed per second, %lld payers at once for %.0f s "
              "(create, events, checkout, confirm, funded, end)",
              (long long)cfg->payers, seconds);
    ppm_bench_result ("e2e.sessions_per_s", what, figure, NULL, NULL, NULL, PPM_BENCH_NO_AIM);
    s_report_latency (self, "load_", "under that load");
    if (commits_before >= 0 && commits_after >= commits_before && self->completed_all) {
        double per_session = (commits_after - commits_before) / (double)self->completed_all;
        printf ("e2e: PostgreSQL committed %.0f transactions meanwhile, %.1f per completed "
                "session\n",
                commits_after - commits_before, per_session);
        snprintf (figure, sizeof figure, "%.1f", per_session);
        ppm_bench_result ("e2e.pg_commits_per_session",
                          "PostgreSQL commits per session completed under that load (all "
                          "services, background work included)",
                          figure, NULL, NULL, NULL, PPM_BENCH_NO_AIM);
    }
    s_report_errors (self, "e2e.errors", "under that load");

    /* (c) RSS idle and under load */
    for (int i = 0; i < S_SERVICES; i++) {
        char id[64];
        s_mb (figure, sizeof figure, self->rss_load[i]);
        s_mb (baseline, sizeof baseline, self->rss_idle[i]);
        if (self->rss_idle[i] > 0 && self->rss_load[i] >= 0)
            snprintf (ratio, sizeof ratio, "%.2f", self->rss_load[i] / self->rss_idle[i]);
        else
            snprintf (ratio, sizeof ratio, "-");
        printf ("e2e: RSS of %-8s idle %s, under load (largest) %s\n", s_services[i], baseline,
                figure);
        snprintf (id, sizeof id, "e2e.rss_%s", s_services[i]);
        snprintf (what, sizeof what, "RSS of ppm-%s under that load (largest); baseline: idle",
                  s_services[i]);
        ppm_bench_result (id, what, figure, baseline, ratio, NULL, PPM_BENCH_NO_AIM);
    }
    fflush (stdout);

    /* (d) start-to-ready of each service */
    bool ready_failed = false;
    for (int i = 0; i < S_SERVICES && cfg->ready_runs > 0; i++) {
        s_samples_t runs = {0};
        char why[200] = "";
        for (int64_t run = 0; run < cfg->ready_runs; run++) {
            double ms = s_start_to_ready (self, i, (int)run, why, sizeof why);
            if (ms < 0)
                break;
            s_samples_add (&runs, ms);
        }
        char id[64];
        snprintf (id, sizeof id, "e2e.ready_%s", s_services[i]);
        if (runs.count < (size_t)cfg->ready_runs) {
            fprintf (stderr, "bench_e2e: start-to-ready of %s: %s\n", s_services[i], why);
            ppm_bench_result (id, "start-to-ready", "failed", NULL, NULL, NULL, PPM_BENCH_NO_AIM);
            ppm_bench_gap (id, "%s", why);
            ready_failed = true;
        } else {
            double median = s_percentile (&runs, 50);
            double slowest = runs.values[runs.count - 1];
            printf ("e2e: start-to-ready of ppm-%-8s median %.1f ms, slowest %.1f ms (%zu runs)\n",
                    s_services[i], median, slowest, runs.count);
            s_ms (figure, sizeof figure, median);
            snprintf (what, sizeof what,
                      "start-to-ready of ppm-%s, median of %zu (slowest %.1f ms)", s_services[i],
                      runs.count, slowest);
            ppm_bench_result (id, what, figure, NULL, NULL, NULL, PPM_BENCH_NO_AIM);
        }
        free (runs.values);
    }
    fflush (stdout);
    ppm_bench_note (
        "e2e",
        "bench_e2e.sh starts the whole stack as make run does (deploy/run.sh through "
        "tests/lib/stack.sh, free ports, the Stripe emulator with no added latency, "
        "PPM_LOG_LEVEL=error) and runs bench_e2e, one process driving HTTP/1.1 keep-alive "
        "connections with libcurl multi. Payers u_bench_NNNN get tokens signed with the tenant's "
        "user-token secret (config.GetUserTokenSecret). A session: POST /v1/sessions, open GET "
        "/v1/sessions/{id}/events and wait for its first event, then the clock starts: POST "
        "checkout (10 minutes), POST confirm with pm_card_visa, until the stream says active "
        "(funded); then POST end. Latency: one payer, %lld sessions one after another after %lld "
        "unmeasured. Load: %lld payers at once for %.0f s after one unmeasured session each; a "
        "session counts when it ends within the window. RSS: process_resident_memory_bytes of "
        "each service's /metrics before any traffic, and the largest of the scrapes taken every "
        "second under load. Start-to-ready: each binary spawned %lld times with the stack's "
        "environment, fresh ports, the stack's Redis and PostgreSQL (the stack's own instance "
        "still running), from fork until /readyz answers 200, polled every millisecond.",
        (long long)cfg->sequential, (long long)cfg->warmup, (long long)cfg->payers, seconds,
        (long long)cfg->ready_runs);
    rc = ready_failed ? 1 : 0;

cleanup:
    for (int64_t i = 0; self->payers && i < cfg->payers; i++) {
        s_http_free (&self->payers[i].request);
        s_stream_close (&self->payers[i]);
    }
    free (self->payers);
    free (self->funded.values);
    free (self->checkout.values);
    free (self->confirm.values);
    curl_multi_cleanup (self->multi);
    curl_global_cleanup ();
    ppm_env_free (env);
    return rc;
}
