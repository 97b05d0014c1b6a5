/*  chaos-load: the load generator of `make chaos` (tests/chaos/README.md).

    Runs N paid sessions through the gateway's public HTTP API, as a chat
    server and a payer's widget would: create, checkout, confirm with a test
    card (Stripe answers, then its webhooks reach the gateway), wait until
    the time is credited, keep the session alive with heartbeats, follow
    the countdown (GET and, for some sessions, the event stream), and then
    top up, end early, or let the paid time run out. Arrivals are spread
    over --seconds; at most --concurrency sessions are in flight.

    Everything runs in one thread on libcurl multi: each session is a small
    state machine with at most one API request and one event stream open.
    A request that fails for a reason a client is told to retry (no answer,
    502/503/504, 429) is sent again with backoff, up to a deadline; what a
    fault makes the API answer is counted, never hidden.

    What the load generator saw is the input of the invariant checker
    (tests/chaos/check.sql): one JSON object per session on --out, written
    when the session is done. Times in it are ppm time (PPM_TIME_SCALE and
    PPM_TIME_EPOCH_MS, shared with the services) unless named _real.
*/
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ppm_clock.h"

#define S_MAX_PAYMENTS 6         /* checkouts per session */
#define S_BODY_MAX     (1 << 20) /* cap of one API answer */
#define S_SSE_LINE_MAX 65536     /* cap of one event-stream line */
#define S_STEP_GIVE_UP 90000     /* real ms a step may keep retrying */

/* ---- configuration ------------------------------------------------------- */

typedef struct {
    char *id;    /* payer user id */
    char *token; /* its user token */
} s_payer_t;

typedef struct {
    char *tenant;      /* t_… */
    char *mode;        /* "prepaid" | "authorize" (for the record) */
    s_payer_t *payers; /* at least one */
    size_t n_payers;
} s_tenant_t;

typedef struct {
    const char *config_path; /* --config */
    const char *out_path;    /* --out */
    const char *phase;       /* --phase, copied into every record */
    long sessions;           /* --sessions */
    long seconds;            /* --seconds: arrival window, real */
    long concurrency;        /* --concurrency */
    long seed;               /* --seed */
    long heartbeat_ms;       /* --heartbeat-ms, real */
    long sse_percent;        /* sessions that follow the event stream */
    long topup_percent;      /* sessions that buy more time once */
    long end_percent;        /* sessions the payer ends early */
    long decline_percent;    /* first card declined, then the Visa */
    long abandon_percent;    /* checkout, never pay, end */
    long minutes[8];         /* --minutes: what a checkout buys */
    size_t n_minutes;
    char *gateway;       /* from the config file */
    char *payee;         /* the payee of every session */
    s_tenant_t *tenants; /* from the config file */
    size_t n_tenants;
} s_config_t;

/* ---- sessions ------------------------------------------------------------- */

typedef enum {
    ST_WAIT,     /* not started yet */
    ST_CREATE,   /* POST /v1/sessions */
    ST_CHECKOUT, /* POST …/checkout */
    ST_CONFIRM,  /* POST …/confirm */
    ST_FUNDWAIT, /* GET until the payment's time is credited */
    ST_LIVE,     /* running: heartbeats, top-up, end or expiry next */
    ST_END,      /* POST …/end */
    ST_WATCH,    /* GET until it has expired */
    ST_DONE
} s_step_t;

typedef enum { PLAN_EXPIRE, PLAN_TOPUP, PLAN_END, PLAN_ABANDON } s_plan_t;
static const char *s_plan_names[] = {"expire", "topup", "end", "abandon"};

typedef enum { REQ_NONE, REQ_API, REQ_HEARTBEAT } s_req_kind_t;

typedef struct {
    char id[48];      /* payment_id */
    long minutes;     /* bought */
    char state[24];   /* the confirm answer's state, or "" */
    int confirm_http; /* last confirm status */
} s_payment_t;

typedef struct _s_session_t s_session_t;

/* One transfer: an API request or an event stream. */
typedef struct {
    s_session_t *session;      /* owner */
    CURL *easy;                /* the handle */
    struct curl_slist *hdrs;   /* its headers */
    char *body;                /* answer so far */
    size_t len;                /* its length */
    bool sse;                  /* event stream */
    s_req_kind_t kind;         /* API request: what it was for */
    char line[S_SSE_LINE_MAX]; /* event stream: current line */
    size_t line_len;
    char event[64]; /* event stream: current event name */
    char *data;     /* event stream: current data */
    size_t data_len;
} s_xfer_t;

struct _s_session_t {
    int index;           /* 0.. */
    const s_tenant_t *t; /* its tenant */
    const s_payer_t *payer;
    const char *kind; /* chat | call */
    s_plan_t plan;
    bool sse;           /* follows the event stream */
    bool decline_first; /* first confirm with a declining card */
    bool declined;      /* that decline happened */
    s_step_t step;
    int64_t start_at;        /* real ms: arrival */
    int64_t next_at;         /* real ms: when the step runs next */
    int64_t step_since;      /* real ms: when the step began (give-up clock) */
    int64_t hb_at;           /* real ms: next heartbeat (once live, whatever the step) */
    bool live;               /* its paid time was credited once: heartbeats run */
    s_xfer_t *hb;            /* the heartbeat in flight */
    int64_t act_at;          /* real ms: top-up or end (ST_LIVE), 0 = none */
    int64_t watch_at;        /* real ms: start watching for the expiry */
    int backoff_ms;          /* current retry backoff */
    s_xfer_t *req;           /* the API request in flight */
    s_xfer_t *stream;        /* the event stream, when open */
    int64_t stream_retry_at; /* real ms: reconnect the stream */
    uint64_t last_event_id;  /* event stream: Last-Event-ID */

    char sid[64]; /* session id */
    s_payment_t payments[S_MAX_PAYMENTS];
    int n_payments;
    bool topped_up;            /* the top-up was started */
    int64_t expect_funded_ms;  /* sum of confirmed payments */
    int64_t fund_seen_at_real; /* when the last confirmed payment was credited */

    /* what the API answered (ppm time) */
    int64_t cur_funded;     /* the largest funded_ms seen */
    int64_t dl_first;       /* expires_at first seen with cur_funded, while active */
    int64_t dl_min, dl_max; /* range of expires_at seen with cur_funded */
    int64_t active_over;    /* max(now - dl_first) over answers "active" with cur_funded */
    int64_t hb_over;        /* max(now - dl_first) over accepted heartbeats */
    int64_t last_expires;   /* expires_at of the last "active" answer */
    int64_t max_seq;        /* the newest session event sequence number seen */
    int stale;              /* answers older than one seen before (ignored) */
    char drop_detail[160];  /* the answer where funded_ms went down */
    char over_detail[160];  /* the answer that gave active_over */
    bool funded_dropped;    /* funded_ms went down between two answers */
    bool paused_seen;
    char final_state[24]; /* state of the last answer */
    int64_t ended_at;     /* ended_at / expiry time seen */
    char end_reason[24];
    int64_t end_used_ms; /* POST /end's answer */
    int64_t end_charged;
    int64_t end_refunded;
    bool end_answered;

    /* counts */
    int tries;       /* requests sent */
    int retried;     /* transient failures retried */
    int http_000;    /* no answer */
    int http_5xx;    /* 502/503/504 */
    int http_429;    /* 429 */
    int http_404;    /* 404 for a session that exists */
    int unexpected;  /* other unexpected answers */
    char error[200]; /* the first unexpected answer, or why the flow stopped */
    int sse_events;
    int sse_ticks;
    int sse_reconnects;
    int64_t sse_expired_late_real; /* real ms from expiry to its event, -1 = not seen */
};

static s_config_t s_cfg;
static CURLM *s_multi;
static s_session_t *s_sessions;
static FILE *s_out;
static int s_running;   /* started and not done */
static int s_done;      /* done */
static uint64_t s_rand; /* xorshift state */

static int64_t
s_real_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ppm time (ms) -> real wall time (ms). */
static int64_t
s_ppm_to_real (int64_t ppm_ms)
{
    int64_t now_ppm = ppm_clock_now_ms ();
    int64_t now_real = ppm_clock_real_ms ();
    return now_real + (ppm_ms - now_ppm) / ppm_clock_scale ();
}

static uint64_t
s_next_rand (void)
{
    s_rand ^= s_rand << 13;
    s_rand ^= s_rand >> 7;
    s_rand ^= s_rand << 17;
    return s_rand;
}

static bool
s_chance (long percent)
{
    return (long)(s_next_rand () % 100) < percent;
}

/* ---- records -------------------------------------------------------------- */

static void
s_record (s_session_t *s)
{
    json_t *pays = json_array ();
    for (int i = 0; i < s->n_payments; i++)
        json_array_append_new (
            pays, json_pack ("{s:s, s:I, s:s, s:i}", "payment_id", s->payments[i].id, "minutes",
                             (json_int_t)s->payments[i].minutes, "state", s->payments[i].state,
                             "confirm_http", s->payments[i].confirm_http));
    json_t *rec = json_object ();
    json_object_set_new (rec, "phase", json_string (s_cfg.phase));
    json_object_set_new (rec, "index", json_integer (s->index));
    json_object_set_new (rec, "tenant", json_string (s->t->tenant));
    json_object_set_new (rec, "mode", json_string (s->t->mode));
    json_object_set_new (rec, "payer", json_string (s->payer->id));
    json_object_set_new (rec, "kind", json_string (s->kind));
    json_object_set_new (rec, "plan", json_string (s_plan_names[s->plan]));
    json_object_set_new (rec, "sse", json_boolean (s->sse));
    json_object_set_new (rec, "session_id", s->sid[0] ? json_string (s->sid) : json_null ());
    json_object_set_new (rec, "payments", pays);
    json_object_set_new (rec, "expect_funded_ms", json_integer (s->expect_funded_ms));
    json_object_set_new (rec, "funded_ms", json_integer (s->cur_funded));
    json_object_set_new (rec, "deadline", s->dl_first ? json_integer (s->dl_first) : json_null ());
    json_object_set_new (rec, "deadline_min",
                         s->dl_first ? json_integer (s->dl_min) : json_null ());
    json_object_set_new (rec, "deadline_max",
                         s->dl_first ? json_integer (s->dl_max) : json_null ());
    json_object_set_new (rec, "active_over_ms",
                         s->dl_first ? json_integer (s->active_over) : json_null ());
    json_object_set_new (rec, "active_over_at", json_string (s->over_detail));
    json_object_set_new (rec, "heartbeat_over_ms",
                         s->dl_first ? json_integer (s->hb_over) : json_null ());
    json_object_set_new (rec, "funded_dropped", json_boolean (s->funded_dropped));
    json_object_set_new (rec, "funded_dropped_at", json_string (s->drop_detail));
    json_object_set_new (rec, "paused_seen", json_boolean (s->paused_seen));
    json_object_set_new (rec, "final_state", json_string (s->final_state));
    json_object_set_new (rec, "ended_at", s->ended_at ? json_integer (s->ended_at) : json_null ());
    json_object_set_new (rec, "end_reason", json_string (s->end_reason));
    if (s->end_answered)
        json_object_set_new (rec, "end_answer",
                             json_pack ("{s:I, s:I, s:I}", "used_ms", (json_int_t)s->end_used_ms,
                                        "charged", (json_int_t)s->end_charged, "refunded",
                                        (json_int_t)s->end_refunded));
    json_object_set_new (rec, "http",
                         json_pack ("{s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "requests", s->tries,
                                    "retried", s->retried, "no_answer", s->http_000, "unavailable",
                                    s->http_5xx, "rate_limited", s->http_429, "session_not_found",
                                    s->http_404, "unexpected", s->unexpected));
    json_object_set_new (rec, "error", json_string (s->error));
    json_object_set_new (rec, "stale_answers", json_integer (s->stale));
    json_object_set_new (
        rec, "sse",
        json_pack ("{s:b, s:i, s:i, s:i, s:o}", "on", s->sse, "events", s->sse_events, "ticks",
                   s->sse_ticks, "reconnects", s->sse_reconnects, "expired_late_real_ms",
                   s->sse_expired_late_real >= 0 ? json_integer (s->sse_expired_late_real)
                                                 : json_null ()));
    char *line = json_dumps (rec, JSON_COMPACT);
    if (line) {
        fprintf (s_out, "%s\n", line);
        free (line);
    }
    json_decref (rec);
}

/* ---- transfers ------------------------------------------------------------- */

static size_t
s_on_body (char *data, size_t size, size_t n, void *arg)
{
    s_xfer_t *x = (s_xfer_t *)arg;
    size_t len = size * n;
    if (x->len + len > S_BODY_MAX)
        return 0; /* over the cap: fail the transfer */
    char *grown = (char *)realloc (x->body, x->len + len + 1);
    if (!grown)
        return 0;
    x->body = grown;
    memcpy (x->body + x->len, data, len);
    x->len += len;
    x->body[x->len] = '\0';
    return len;
}

/* What an observation is: a session as the API answered it (GET, the
   end's answer, the event stream's "state"), a heartbeat's answer, or a
   session event (its remaining time and deadline are those of the event's
   moment, while funded_ms is the session's after the whole change: not a
   snapshot, so deadlines are not read from it). */
typedef enum { OBS_ANSWER, OBS_HEARTBEAT, OBS_EVENT } s_obs_t;
static void s_observe (s_session_t *s, json_t *json, s_obs_t what);
static void s_sse_event (s_xfer_t *x);

/* Event stream: lines "event: …", "data: …", "id: …", blank = dispatch. */
static size_t
s_on_sse (char *data, size_t size, size_t n, void *arg)
{
    s_xfer_t *x = (s_xfer_t *)arg;
    size_t len = size * n;
    for (size_t i = 0; i < len; i++) {
        char c = data[i];
        if (c != '\n') {
            if (x->line_len + 1 < sizeof x->line)
                x->line[x->line_len++] = c;
            continue;
        }
        x->line[x->line_len] = '\0';
        if (x->line_len == 0) {
            s_sse_event (x);
        } else if (strncmp (x->line, "event: ", 7) == 0) {
            snprintf (x->event, sizeof x->event, "%s", x->line + 7);
        } else if (strncmp (x->line, "data: ", 6) == 0) {
            size_t add = x->line_len - 6;
            char *grown = (char *)realloc (x->data, x->data_len + add + 1);
            if (!grown)
                return 0;
            x->data = grown;
            memcpy (x->data + x->data_len, x->line + 6, add);
            x->data_len += add;
            x->data[x->data_len] = '\0';
        } else if (strncmp (x->line, "id: ", 4) == 0) {
            char *end = NULL;
            errno = 0;
            unsigned long long id = strtoull (x->line + 4, &end, 10);
            if (!errno && end && *end == '\0')
                x->session->last_event_id = id;
        }
        x->line_len = 0;
    }
    return len;
}

static void
s_xfer_free (s_xfer_t **x_p)
{
    s_xfer_t *x = *x_p;
    if (!x)
        return;
    if (x->easy) {
        curl_multi_remove_handle (s_multi, x->easy);
        curl_easy_cleanup (x->easy);
    }
    curl_slist_free_all (x->hdrs);
    free (x->body);
    free (x->data);
    free (x);
    *x_p = NULL;
}

/* Starts method path with an optional JSON body, as the session's payer. */
static s_xfer_t *
s_xfer_start (s_session_t *s, const char *method, const char *path, json_t *body, bool sse)
{
    s_xfer_t *x = (s_xfer_t *)calloc (1, sizeof (s_xfer_t));
    if (!x)
        return NULL;
    x->session = s;
    x->sse = sse;
    x->easy = curl_easy_init ();
    char url[512];
    snprintf (url, sizeof url, "%s%s", s_cfg.gateway, path);
    char auth[2048];
    snprintf (auth, sizeof auth, "Authorization: Bearer %s", s->payer->token);
    x->hdrs = curl_slist_append (x->hdrs, auth);
    curl_easy_setopt (x->easy, CURLOPT_URL, url);
    curl_easy_setopt (x->easy, CURLOPT_PRIVATE, x);
    curl_easy_setopt (x->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt (x->easy, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    if (sse) {
        char last[64];
        x->hdrs = curl_slist_append (x->hdrs, "Accept: text/event-stream");
        if (s->last_event_id) {
            snprintf (last, sizeof last, "Last-Event-ID: %" PRIu64, s->last_event_id);
            x->hdrs = curl_slist_append (x->hdrs, last);
        }
        curl_easy_setopt (x->easy, CURLOPT_WRITEFUNCTION, s_on_sse);
        /* a stream that says nothing for 10 s is dead (ticks come every second) */
        curl_easy_setopt (x->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt (x->easy, CURLOPT_LOW_SPEED_TIME, 10L);
    } else {
        curl_easy_setopt (x->easy, CURLOPT_WRITEFUNCTION, s_on_body);
        curl_easy_setopt (x->easy, CURLOPT_TIMEOUT_MS, 20000L);
    }
    curl_easy_setopt (x->easy, CURLOPT_WRITEDATA, x);
    if (strcmp (method, "POST") == 0) {
        char *text = body ? json_dumps (body, JSON_COMPACT) : NULL;
        x->hdrs = curl_slist_append (x->hdrs, "Content-Type: application/json");
        curl_easy_setopt (x->easy, CURLOPT_POST, 1L);
        curl_easy_setopt (x->easy, CURLOPT_COPYPOSTFIELDS, text ? text : "{}");
        free (text);
    }
    json_decref (body);
    curl_easy_setopt (x->easy, CURLOPT_HTTPHEADER, x->hdrs);
    curl_multi_add_handle (s_multi, x->easy);
    if (!sse)
        s->tries++;
    return x;
}

/* ---- the session's flow ------------------------------------------------------ */

static void
s_flow_error (s_session_t *s, const char *fmt, const char *what, long status)
{
    if (!s->error[0])
        snprintf (s->error, sizeof s->error, fmt, what, status);
}

static void
s_finish (s_session_t *s)
{
    if (s->step == ST_DONE)
        return;
    s->step = ST_DONE;
    s_xfer_free (&s->stream);
    s_xfer_free (&s->hb);
    s_record (s);
    s_running--;
    s_done++;
}

/* Schedules the step to run again after a transient failure, or gives
   up when it has been retrying for too long. */
static void
s_retry (s_session_t *s, long status, const char *what)
{
    int64_t now = s_real_ms ();
    if (status == 0)
        s->http_000++;
    else if (status == 429)
        s->http_429++;
    else if (status == 404)
        s->http_404++;
    else
        s->http_5xx++;
    if (now - s->step_since > S_STEP_GIVE_UP) {
        s_flow_error (s, "gave up on %s after retrying (last status %ld)", what, status);
        s_finish (s);
        return;
    }
    s->retried++;
    s->next_at = now + s->backoff_ms;
    s->backoff_ms = s->backoff_ms * 2 > 2000 ? 2000 : s->backoff_ms * 2;
}

static void
s_goto (s_session_t *s, s_step_t step, int64_t at)
{
    s->step = step;
    s->next_at = at;
    s->step_since = s_real_ms ();
    s->backoff_ms = 250;
}

static bool
s_transient (long status)
{
    return status == 0 || status == 429 || status == 502 || status == 503 || status == 504;
}

static const char *
s_str (json_t *json, const char *key)
{
    const char *v = json_string_value (json_object_get (json, key));
    return v ? v : "";
}

static int64_t
s_int (json_t *json, const char *key)
{
    return (int64_t)json_integer_value (json_object_get (json, key));
}

/* Records what one answer or event (a session as JSON) says. */
static void
s_observe (s_session_t *s, json_t *json, s_obs_t what)
{
    bool heartbeat = what == OBS_HEARTBEAT;
    const char *state = s_str (json, "state");
    if (!*state)
        return;
    /* The event stream and the answers are two channels: an event older
       than an answer already seen says nothing new. */
    int64_t seq = s_int (json, "seq");
    if (seq && seq < s->max_seq) {
        s->stale++;
        return;
    }
    if (seq)
        s->max_seq = seq;
    snprintf (s->final_state, sizeof s->final_state, "%s", state);
    int64_t funded = s_int (json, "funded_ms");
    int64_t expires = s_int (json, "expires_at");
    int64_t now = s_int (json, "now");
    if (!now)
        now = s_int (json, "at");
    if (strcmp (state, "paused") == 0)
        s->paused_seen = true;
    if (what == OBS_EVENT)
        goto over;
    if (funded < s->cur_funded && !s->funded_dropped) {
        s->funded_dropped = true;
        snprintf (s->drop_detail, sizeof s->drop_detail,
                  "%s %s seq %" PRId64 " funded %" PRId64 " after %" PRId64,
                  heartbeat ? "heartbeat" : "answer", state, seq, funded, s->cur_funded);
    }
    if (strcmp (state, "active") == 0 && expires > 0) {
        s->last_expires = expires;
        if (funded > s->cur_funded || !s->dl_first) {
            s->cur_funded = funded;
            s->dl_first = s->dl_min = s->dl_max = expires;
            s->active_over = INT64_MIN;
            s->hb_over = INT64_MIN;
        } else if (funded == s->cur_funded) {
            if (expires < s->dl_min)
                s->dl_min = expires;
            if (expires > s->dl_max)
                s->dl_max = expires;
        }
        if (funded == s->cur_funded && now > 0) {
            if (now - s->dl_first > s->active_over) {
                s->active_over = now - s->dl_first;
                snprintf (s->over_detail, sizeof s->over_detail,
                          "%s: now %" PRId64 " expires_at %" PRId64 " seq %" PRId64,
                          heartbeat ? "heartbeat" : "answer", now, expires, seq);
            }
            if (heartbeat && now - s->dl_first > s->hb_over)
                s->hb_over = now - s->dl_first;
        }
    } else if (funded > s->cur_funded) {
        /* credited while not active (a top-up that reopened an expired
           session, say): the deadline of this funding is not known yet */
        s->cur_funded = funded;
        s->dl_first = 0;
    }
over:
    if (strcmp (state, "expired") == 0 || strcmp (state, "ended") == 0) {
        int64_t ended = s_int (json, "ended_at");
        if (!ended && strcmp (state, "expired") == 0)
            ended = s_int (json, "at");
        if (ended)
            s->ended_at = ended;
        const char *reason = s_str (json, "end_reason");
        if (!*reason)
            reason = s_str (json, "reason");
        snprintf (s->end_reason, sizeof s->end_reason, "%s", reason);
    }
}

static void
s_sse_event (s_xfer_t *x)
{
    s_session_t *s = x->session;
    if (x->event[0] && x->data) {
        s->sse_events++;
        if (strcmp (x->event, "tick") == 0) {
            s->sse_ticks++;
        } else if (strncmp (x->event, "payment_", 8) != 0) { /* a session event */
            json_t *json = json_loads (x->data, 0, NULL);
            if (json) {
                if (strcmp (x->event, "expired") == 0 && s->sse_expired_late_real < 0) {
                    int64_t at = s_int (json, "at");
                    if (at)
                        s->sse_expired_late_real = ppm_clock_real_ms () - s_ppm_to_real (at);
                }
                s_observe (s, json, strcmp (x->event, "state") == 0 ? OBS_ANSWER : OBS_EVENT);
                json_decref (json);
            }
        }
    }
    x->event[0] = '\0';
    free (x->data);
    x->data = NULL;
    x->data_len = 0;
}

/* The live session's next moment: top-up/end, or the watch. */
static void
s_live_next (s_session_t *s)
{
    int64_t at = s->watch_at;
    if (s->act_at && s->act_at < at)
        at = s->act_at;
    s->next_at = at;
}

/* The confirmed payments' time is credited: the session runs. */
static void
s_go_live (s_session_t *s, bool heartbeat_now)
{
    int64_t now = s_real_ms ();
    s->fund_seen_at_real = now;
    s_goto (s, ST_LIVE, now);
    if (!s->live || heartbeat_now)
        s->hb_at = heartbeat_now ? now : now + s_cfg.heartbeat_ms;
    s->live = true;
    int64_t deadline_real = s->last_expires ? s_ppm_to_real (s->last_expires) : now;
    int64_t left = deadline_real - now;
    s->act_at = 0;
    if (s->plan == PLAN_TOPUP && !s->topped_up)
        s->act_at = now + (left > 0 ? left * 2 / 5 : 0);
    else if (s->plan == PLAN_END)
        s->act_at = now + (left > 0 ? left / 2 : 0);
    s->watch_at = deadline_real + 300 > now + 1000 ? deadline_real + 300 : now + 1000;
    s_live_next (s);
    if (s->sse && !s->stream)
        s->stream_retry_at = now;
}

static void
s_start_step (s_session_t *s)
{
    char path[256];
    s_payment_t *p = s->n_payments ? &s->payments[s->n_payments - 1] : NULL;
    switch (s->step) {
        case ST_CREATE:
            s->req = s_xfer_start (s, "POST", "/v1/sessions",
                                   json_pack ("{s:s, s:s}", "payee", s_cfg.payee, "kind", s->kind),
                                   false);
            break;
        case ST_CHECKOUT:
            snprintf (path, sizeof path, "/v1/sessions/%s/checkout", s->sid);
            s->req = s_xfer_start (
                s, "POST", path,
                json_pack ("{s:I, s:b}", "minutes",
                           (json_int_t)s_cfg.minutes[s_next_rand () % s_cfg.n_minutes],
                           "accept_terms", 1),
                false);
            break;
        case ST_CONFIRM: {
            snprintf (path, sizeof path, "/v1/sessions/%s/confirm", s->sid);
            const char *card =
                s->decline_first && !s->declined ? "pm_card_chargeDeclined" : "pm_card_visa";
            s->req = s_xfer_start (
                s, "POST", path,
                json_pack ("{s:s, s:s}", "payment_method", card, "payment_id", p->id), false);
            break;
        }
        case ST_FUNDWAIT:
        case ST_WATCH:
            snprintf (path, sizeof path, "/v1/sessions/%s", s->sid);
            s->req = s_xfer_start (s, "GET", path, NULL, false);
            break;
        case ST_END:
            snprintf (path, sizeof path, "/v1/sessions/%s/end", s->sid);
            s->req = s_xfer_start (s, "POST", path, json_object (), false);
            break;
        case ST_LIVE: {
            int64_t now = s_real_ms ();
            if (s->act_at && s->act_at <= now) {
                s->act_at = 0;
                if (s->plan == PLAN_TOPUP) {
                    s->topped_up = true;
                    s_goto (s, ST_CHECKOUT, now);
                } else {
                    s_goto (s, ST_END, now);
                }
                s_start_step (s);
                return;
            }
            if (s->watch_at && s->watch_at <= now) {
                s_goto (s, ST_WATCH, now);
                s_start_step (s);
                return;
            }
            s_live_next (s);
            break;
        }
        default:
            break;
    }
    if (s->req && s->req->kind == REQ_NONE)
        s->req->kind = REQ_API;
}

/* Handles the answer to the session's API request. */
static void
s_on_answer (s_session_t *s, long status, json_t *json)
{
    int64_t now = s_real_ms ();
    s_payment_t *p = s->n_payments ? &s->payments[s->n_payments - 1] : NULL;
    const char *code = json ? s_str (json_object_get (json, "error"), "code") : "";
    switch (s->step) {
        case ST_CREATE:
            if (status == 201) {
                snprintf (s->sid, sizeof s->sid, "%s", s_str (json, "session_id"));
                s_goto (s, ST_CHECKOUT, now);
            } else if (s_transient (status)) {
                s_retry (s, status, "create");
            } else {
                s->unexpected++;
                s_flow_error (s, "create answered %s (%ld)", code, status);
                s_finish (s);
            }
            return;
        case ST_CHECKOUT:
            if (status == 201 && s->n_payments < S_MAX_PAYMENTS) {
                p = &s->payments[s->n_payments++];
                snprintf (p->id, sizeof p->id, "%s", s_str (json, "payment_id"));
                p->minutes = (long)s_int (json, "minutes");
                if (s->plan == PLAN_ABANDON)
                    s_goto (s, ST_END, now + 200);
                else
                    s_goto (s, ST_CONFIRM, now);
            } else if (s_transient (status)) {
                s_retry (s, status, "checkout");
            } else {
                s->unexpected++;
                s_flow_error (s, "checkout answered %s (%ld)", code, status);
                /* a top-up refused (the session ended meanwhile) ends the flow */
                if (s->cur_funded > 0)
                    s_goto (s, ST_WATCH, now);
                else
                    s_goto (s, ST_END, now);
            }
            return;
        case ST_CONFIRM: {
            const char *state = json ? s_str (json, "state") : "";
            p->confirm_http = (int)status;
            if (status == 200 &&
                (strcmp (state, "succeeded") == 0 || strcmp (state, "authorized") == 0)) {
                snprintf (p->state, sizeof p->state, "%s", state);
                s->expect_funded_ms += (int64_t)p->minutes * 60000;
                s_goto (s, ST_FUNDWAIT, now);
            } else if (s->decline_first && !s->declined && !s_transient (status)) {
                s->declined = true; /* the declined card: now the Visa */
                snprintf (p->state, sizeof p->state, "declined");
                s_goto (s, ST_CONFIRM, now + 100);
            } else if (s_transient (status)) {
                s_retry (s, status, "confirm");
            } else if (status == 200) {
                /* pending at Stripe: the webhook or reconciliation decides */
                snprintf (p->state, sizeof p->state, "%s", state);
                s_goto (s, ST_FUNDWAIT, now + 500);
            } else {
                s->unexpected++;
                s_flow_error (s, "confirm answered %s (%ld)", code, status);
                s_goto (s, s->cur_funded > 0 ? ST_WATCH : ST_END, now);
            }
            return;
        }
        case ST_FUNDWAIT:
            if (status == 200) {
                s_observe (s, json, OBS_ANSWER);
                const char *state = s_str (json, "state");
                if (s_int (json, "funded_ms") >= s->expect_funded_ms &&
                    strcmp (state, "active") == 0 && s->expect_funded_ms > 0) {
                    s_go_live (s, false);
                } else if (strcmp (state, "ended") == 0 ||
                           (strcmp (state, "expired") == 0 &&
                            (s->cur_funded >= s->expect_funded_ms ||
                             json_is_null (json_object_get (json, "reopen_until"))))) {
                    /* over for good: a payment still on its way is refused
                       by metering and its money given back */
                    s_flow_error (s, "the session was %s before its payment was credited (%ld)",
                                  state, 0);
                    s_finish (s);
                } else if (now - s->step_since > S_STEP_GIVE_UP) {
                    s_flow_error (s, "payment not credited after %s (%ld s)", "waiting",
                                  S_STEP_GIVE_UP / 1000);
                    s_goto (s, s->cur_funded > 0 ? ST_WATCH : ST_END, now);
                } else {
                    s->next_at = now + 300;
                }
            } else if (s_transient (status) || status == 404) {
                s_retry (s, status, "get");
            } else {
                s->unexpected++;
                s_flow_error (s, "get answered %s (%ld)", code, status);
                s_retry (s, status, "get");
            }
            return;
        case ST_END:
            if (status == 200) {
                s_observe (s, json, OBS_ANSWER);
                s->end_answered = true;
                s->end_used_ms = s_int (json, "used_ms");
                s->end_charged = s_int (json, "charged");
                s->end_refunded = s_int (json, "refunded");
                s_finish (s);
            } else if (s_transient (status) || status == 404) {
                s_retry (s, status, "end");
            } else {
                s->unexpected++;
                s_flow_error (s, "end answered %s (%ld)", code, status);
                s_finish (s);
            }
            return;
        case ST_WATCH:
            if (status == 200) {
                s_observe (s, json, OBS_ANSWER);
                const char *state = s_str (json, "state");
                if (strcmp (state, "expired") == 0 || strcmp (state, "ended") == 0) {
                    s_finish (s);
                } else if (strcmp (state, "paused") == 0 ||
                           (strcmp (state, "active") == 0 &&
                            s_ppm_to_real (s_int (json, "expires_at")) > now + 500)) {
                    /* time left (a late top-up, or a pause): back to living */
                    s_go_live (s, true);
                } else if (now - s->step_since > S_STEP_GIVE_UP) {
                    s_flow_error (s, "still %s long after its deadline (%ld)", state, 0);
                    s_finish (s);
                } else {
                    s->next_at = now + 400;
                }
            } else if (s_transient (status) || status == 404) {
                s_retry (s, status, "get");
            } else {
                s->unexpected++;
                s_flow_error (s, "get answered %s (%ld)", code, status);
                s_finish (s);
            }
            return;
        default:
            return;
    }
}

/* The answer to a heartbeat (sent every --heartbeat-ms once the session
   is live, alongside whatever else the session is doing, as a chat
   server's would be). */
static void
s_on_heartbeat (s_session_t *s, long status, json_t *json)
{
    int64_t now = s_real_ms ();
    const char *code = json ? s_str (json_object_get (json, "error"), "code") : "";
    if (status == 200) {
        s_observe (s, json, OBS_HEARTBEAT);
        const char *state = s_str (json, "state");
        if (s->step == ST_LIVE && (strcmp (state, "expired") == 0 || strcmp (state, "ended") == 0))
            s->watch_at = now; /* see it through the watch */
    } else if (status == 409 || status == 422) {
        /* refused (FAILED_PRECONDITION): expired or ended meanwhile */
        if (s->step == ST_LIVE)
            s->watch_at = now;
    } else if (s_transient (status) || status == 404) {
        if (status == 404)
            s->http_404++;
        else if (status == 0)
            s->http_000++;
        else
            s->http_5xx++;
        s->retried++;
        s->hb_at = now + 500; /* heartbeats are retried soon, not held */
    } else {
        s->unexpected++;
        s_flow_error (s, "heartbeat answered %s (%ld)", code, status);
    }
    if (s->step == ST_LIVE && !s->req)
        s_live_next (s);
}

static void
s_on_done (CURLMsg *msg)
{
    s_xfer_t *x = NULL;
    curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    if (!x)
        return;
    s_session_t *s = x->session;
    long status = 0;
    if (msg->data.result == CURLE_OK)
        curl_easy_getinfo (x->easy, CURLINFO_RESPONSE_CODE, &status);
    if (x->sse) {
        /* the stream ended (gateway restarted, or the session ended) */
        s_xfer_free (&s->stream);
        if (s->step != ST_DONE) {
            s->sse_reconnects++;
            s->stream_retry_at = s_real_ms () + 1000;
        }
        return;
    }
    json_t *json = x->len ? json_loadb (x->body, x->len, 0, NULL) : NULL;
    if (x == s->hb) {
        s->hb = NULL;
        if (s->step != ST_DONE)
            s_on_heartbeat (s, status, json);
        json_decref (json);
        s_xfer_free (&x);
        return;
    }
    s->req = NULL;
    if (s->step != ST_DONE)
        s_on_answer (s, status, json);
    json_decref (json);
    s_xfer_free (&x);
}

/* ---- configuration ------------------------------------------------------------ */

static int
s_long (const char *text, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol (text, &end, 10);
    if (errno || !end || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int
s_load_config (void)
{
    json_error_t err;
    json_t *root = json_load_file (s_cfg.config_path, 0, &err);
    if (!root) {
        fprintf (stderr, "chaos-load: %s: %s\n", s_cfg.config_path, err.text);
        return -1;
    }
    json_t *tenants = json_object_get (root, "tenants");
    s_cfg.gateway = strdup (s_str (root, "gateway"));
    s_cfg.payee = strdup (s_str (root, "payee"));
    s_cfg.n_tenants = json_array_size (tenants);
    s_cfg.tenants =
        (s_tenant_t *)calloc (s_cfg.n_tenants ? s_cfg.n_tenants : 1, sizeof (s_tenant_t));
    int rc = 0;
    for (size_t i = 0; i < s_cfg.n_tenants; i++) {
        json_t *t = json_array_get (tenants, i);
        json_t *payers = json_object_get (t, "payers");
        s_tenant_t *st = &s_cfg.tenants[i];
        st->tenant = strdup (s_str (t, "tenant"));
        st->mode = strdup (s_str (t, "mode"));
        st->n_payers = json_array_size (payers);
        st->payers = (s_payer_t *)calloc (st->n_payers ? st->n_payers : 1, sizeof (s_payer_t));
        for (size_t k = 0; k < st->n_payers; k++) {
            st->payers[k].id = strdup (s_str (json_array_get (payers, k), "id"));
            st->payers[k].token = strdup (s_str (json_array_get (payers, k), "token"));
        }
        if (!*st->tenant || st->n_payers == 0)
            rc = -1;
    }
    if (!*s_cfg.gateway || !*s_cfg.payee || s_cfg.n_tenants == 0)
        rc = -1;
    if (rc)
        fprintf (stderr, "chaos-load: %s needs gateway, payee and tenants with payers\n",
                 s_cfg.config_path);
    json_decref (root);
    return rc;
}

static int
s_parse_minutes (const char *text)
{
    s_cfg.n_minutes = 0;
    const char *p = text;
    while (*p && s_cfg.n_minutes < 8) {
        char *end = NULL;
        errno = 0;
        long v = strtol (p, &end, 10);
        if (errno || end == p || v < 1 || v > 600)
            return -1;
        s_cfg.minutes[s_cfg.n_minutes++] = v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return s_cfg.n_minutes ? 0 : -1;
}

static const char *s_usage =
    "usage: chaos-load --config FILE --out FILE [--phase NAME] [--sessions N] [--seconds S]\n"
    "                  [--concurrency C] [--seed N] [--heartbeat-ms MS] [--minutes 1,2,3]\n"
    "                  [--sse-percent P] [--topup-percent P] [--end-percent P]\n"
    "                  [--decline-percent P] [--abandon-percent P]\n"
    "PPM_TIME_SCALE and PPM_TIME_EPOCH_MS must be the services'.\n";

static int
s_parse_args (int argc, char **argv)
{
    s_cfg = (s_config_t){.phase = "run",
                         .sessions = 100,
                         .seconds = 30,
                         .concurrency = 50,
                         .seed = 1,
                         .heartbeat_ms = 2500,
                         .sse_percent = 50,
                         .topup_percent = 30,
                         .end_percent = 25,
                         .decline_percent = 5,
                         .abandon_percent = 3};
    s_parse_minutes ("1,2,3");
    struct {
        const char *name;
        long *out;
        long min, max;
    } nums[] = {{"--sessions", &s_cfg.sessions, 1, 1000000},
                {"--seconds", &s_cfg.seconds, 0, 86400},
                {"--concurrency", &s_cfg.concurrency, 1, 100000},
                {"--seed", &s_cfg.seed, 0, 1L << 30},
                {"--heartbeat-ms", &s_cfg.heartbeat_ms, 100, 600000},
                {"--sse-percent", &s_cfg.sse_percent, 0, 100},
                {"--topup-percent", &s_cfg.topup_percent, 0, 100},
                {"--end-percent", &s_cfg.end_percent, 0, 100},
                {"--decline-percent", &s_cfg.decline_percent, 0, 100},
                {"--abandon-percent", &s_cfg.abandon_percent, 0, 100}};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        bool known = false;
        if (!value)
            break;
        for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++)
            if (strcmp (arg, nums[k].name) == 0) {
                if (s_long (value, nums[k].min, nums[k].max, nums[k].out)) {
                    fprintf (stderr, "chaos-load: %s: %s is not in %ld..%ld\n", arg, value,
                             nums[k].min, nums[k].max);
                    return -1;
                }
                known = true;
            }
        if (strcmp (arg, "--config") == 0)
            s_cfg.config_path = value;
        else if (strcmp (arg, "--out") == 0)
            s_cfg.out_path = value;
        else if (strcmp (arg, "--phase") == 0)
            s_cfg.phase = value;
        else if (strcmp (arg, "--minutes") == 0) {
            if (s_parse_minutes (value)) {
                fprintf (stderr, "chaos-load: --minutes %s: a list like 1,2,3\n", value);
                return -1;
            }
        } else if (!known) {
            fprintf (stderr, "chaos-load: unknown argument %s\n%s", arg, s_usage);
            return -1;
        }
        i++;
    }
    if (!s_cfg.config_path || !s_cfg.out_path) {
        fputs (s_usage, stderr);
        return -1;
    }
    return 0;
}

/* ---- main loop --------------------------------------------------------------------- */

static void
s_setup_sessions (void)
{
    s_sessions = (s_session_t *)calloc ((size_t)s_cfg.sessions, sizeof (s_session_t));
    int64_t t0 = s_real_ms ();
    for (long i = 0; i < s_cfg.sessions; i++) {
        s_session_t *s = &s_sessions[i];
        s->index = (int)i;
        s->t = &s_cfg.tenants[(size_t)i % s_cfg.n_tenants];
        s->payer = &s->t->payers[(size_t)(i / (long)s_cfg.n_tenants) % s->t->n_payers];
        s->kind = s_next_rand () % 2 ? "chat" : "call";
        long roll = (long)(s_next_rand () % 100);
        if (roll < s_cfg.abandon_percent)
            s->plan = PLAN_ABANDON;
        else if (roll < s_cfg.abandon_percent + s_cfg.end_percent)
            s->plan = PLAN_END;
        else if (roll < s_cfg.abandon_percent + s_cfg.end_percent + s_cfg.topup_percent)
            s->plan = PLAN_TOPUP;
        else
            s->plan = PLAN_EXPIRE;
        s->sse = s_chance (s_cfg.sse_percent);
        s->decline_first = s_chance (s_cfg.decline_percent);
        s->start_at = t0 + (s_cfg.sessions > 1 ? s_cfg.seconds * 1000 * i / s_cfg.sessions : 0);
        s->sse_expired_late_real = -1;
        s->step = ST_WAIT;
    }
}

int
main (int argc, char **argv)
{
    if (s_parse_args (argc, argv))
        return 2;
    const char *clock_error = NULL;
    if (ppm_clock_init (&clock_error)) {
        fprintf (stderr, "chaos-load: %s\n", clock_error);
        return 2;
    }
    if (s_load_config ())
        return 2;
    s_out = fopen (s_cfg.out_path, "a");
    if (!s_out) {
        fprintf (stderr, "chaos-load: cannot open %s: %s\n", s_cfg.out_path, strerror (errno));
        return 2;
    }
    s_rand = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(s_cfg.seed + 1) * 0x2545F4914F6CDD1DULL;
    curl_global_init (CURL_GLOBAL_DEFAULT);
    s_multi = curl_multi_init ();
    curl_multi_setopt (s_multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
    s_setup_sessions ();
    long next_start = 0;
    int64_t last_report = s_real_ms ();
    while (s_done < s_cfg.sessions) {
        int64_t now = s_real_ms ();
        /* arrivals */
        while (next_start < s_cfg.sessions && s_sessions[next_start].start_at <= now &&
               s_running < s_cfg.concurrency) {
            s_session_t *s = &s_sessions[next_start++];
            s_running++;
            s_goto (s, ST_CREATE, now);
        }
        /* steps due */
        int64_t wake = now + 200;
        for (long i = 0; i < next_start; i++) {
            s_session_t *s = &s_sessions[i];
            if (s->step == ST_DONE || s->step == ST_WAIT)
                continue;
            if (s->sse && !s->stream && s->stream_retry_at && s->stream_retry_at <= now &&
                (s->step == ST_LIVE || s->step == ST_WATCH)) {
                char path[128];
                snprintf (path, sizeof path, "/v1/sessions/%s/events", s->sid);
                s->stream = s_xfer_start (s, "GET", path, NULL, true);
                s->stream_retry_at = 0;
            }
            if (s->live && !s->hb && s->hb_at <= now) {
                char path[128];
                snprintf (path, sizeof path, "/v1/sessions/%s/heartbeat", s->sid);
                s->hb = s_xfer_start (s, "POST", path, json_object (), false);
                if (s->hb)
                    s->hb->kind = REQ_HEARTBEAT;
                s->hb_at = now + s_cfg.heartbeat_ms;
            }
            if (!s->req && s->next_at <= now)
                s_start_step (s);
            if (!s->req && s->step != ST_DONE && s->next_at < wake)
                wake = s->next_at;
            if (s->live && !s->hb && s->step != ST_DONE && s->hb_at < wake)
                wake = s->hb_at;
        }
        if (next_start < s_cfg.sessions && s_sessions[next_start].start_at < wake)
            wake = s_sessions[next_start].start_at;
        int running = 0;
        curl_multi_perform (s_multi, &running);
        CURLMsg *msg;
        int left = 0;
        while ((msg = curl_multi_info_read (s_multi, &left)))
            if (msg->msg == CURLMSG_DONE)
                s_on_done (msg);
        now = s_real_ms ();
        int timeout = wake > now ? (int)(wake - now) : 0;
        if (timeout > 200)
            timeout = 200;
        curl_multi_poll (s_multi, NULL, 0, timeout, NULL);
        if (now - last_report >= 10000) {
            last_report = now;
            fprintf (stderr, "chaos-load %s: %ld started, %d running, %d done\n", s_cfg.phase,
                     next_start, s_running, s_done);
        }
    }
    int errors = 0;
    for (long i = 0; i < s_cfg.sessions; i++)
        if (s_sessions[i].error[0])
            errors++;
    fprintf (stderr, "chaos-load %s: %ld sessions done, %d with a flow error\n", s_cfg.phase,
             s_cfg.sessions, errors);
    fclose (s_out);
    curl_multi_cleanup (s_multi);
    curl_global_cleanup ();
    return 0;
}
