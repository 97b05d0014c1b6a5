/*  emu_webhook: delivers emulated Stripe events to webhook endpoints.

    One thread runs a libcurl multi handle, so a slow or dead endpoint
    never stalls the API or other deliveries. Each (event, endpoint, copy)
    is a job: it is signed afresh on every attempt (a new `t`, as Stripe
    does), POSTed as application/json, and retried with exponential backoff
    (retry_base_ms × 2^(n−1), at most 10 s) until a 2xx or max_attempts.
    Chaos options: `duplicate` sends every event k times; `reorder_window`
    holds jobs until that many are waiting (or hold_ms passed, or a flush)
    and then releases them shuffled. Every attempt is recorded (time,
    status, error) for the control API.

    The job queues, endpoints and records are guarded by this module's own
    lock; the API side only calls emu_webhook_enqueue with a copy of the
    event text, so no Stripe state is shared with this thread.
*/
#include "emu.h"

#include <curl/curl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_stripe_sig.h"

#define S_MAX_RUNNING 64    /* deliveries in flight at once */
#define S_MAX_BACKOFF 10000 /* ms */
#define S_MAX_RECORDS 20000 /* delivery records kept */

typedef struct {
    char *event_id;             /* evt_… */
    char *url;                  /* endpoint URL */
    char *secret;               /* endpoint secret (whsec_…) */
    char *payload;              /* the event JSON, identical on every attempt */
    int attempts;               /* attempts made so far */
    int64_t next_at;            /* ms: not before */
    json_t *record;             /* this job's delivery record (own reference) */
    uint64_t gen;               /* generation at enqueue; a reset drops older jobs */
    CURL *easy;                 /* while running */
    struct curl_slist *headers; /* while running */
    int64_t started;            /* ms, while running */
} s_job_t;

struct _emu_webhook_t {
    pthread_mutex_t lock;  /* guards everything below but multi */
    pthread_t thread;      /* the delivery thread */
    bool stop;             /* asks the thread to end */
    CURLM *multi;          /* owned by the thread (wakeup is thread-safe) */
    zlist_t *ready;        /* jobs waiting for their time */
    zlist_t *held;         /* jobs held for reordering */
    zlist_t *running;      /* jobs attached to multi */
    int64_t held_since;    /* ms when the first held job arrived */
    json_t *endpoints;     /* [{id, account, url, secret}] */
    json_t *records;       /* delivery records, oldest first */
    uint64_t gen;          /* bumped by reset */
    int duplicate;         /* copies of each event (1 = normal) */
    int reorder_window;    /* hold until this many jobs (0/1 = off) */
    int64_t hold_ms;       /* release held jobs after this long anyway */
    int max_attempts;      /* attempts per job */
    int64_t retry_base_ms; /* first retry delay */
    int64_t timeout_ms;    /* per attempt */
};

static void
s_job_destroy (s_job_t **job_p)
{
    s_job_t *job = *job_p;
    if (!job)
        return;
    free (job->event_id);
    free (job->url);
    free (job->secret);
    free (job->payload);
    json_decref (job->record);
    free (job);
    *job_p = NULL;
}

static void
s_defaults (emu_webhook_t *self)
{
    self->duplicate = 1;
    self->reorder_window = 0;
    self->hold_ms = 1000;
    self->max_attempts = 5;
    self->retry_base_ms = 200;
    self->timeout_ms = 5000;
}

static size_t
s_discard (char *data, size_t size, size_t nmemb, void *arg)
{
    (void)data;
    (void)arg;
    return size * nmemb;
}

/* Starts the due jobs (lock held). */
static void
s_start_due (emu_webhook_t *self, size_t *running)
{
    int64_t now = emu_now_ms ();
    if (zlist_size (self->held) > 0 && ((int)zlist_size (self->held) >= self->reorder_window ||
                                        now - self->held_since >= self->hold_ms)) {
        /* release shuffled */
        size_t count = zlist_size (self->held);
        s_job_t **jobs = calloc (count, sizeof (s_job_t *));
        for (size_t i = 0; i < count; i++)
            jobs[i] = zlist_pop (self->held);
        for (size_t i = count; i > 1; i--) {
            size_t j = randombytes_uniform ((uint32_t)i);
            s_job_t *swap = jobs[i - 1];
            jobs[i - 1] = jobs[j];
            jobs[j] = swap;
        }
        for (size_t i = 0; i < count; i++)
            zlist_append (self->ready, jobs[i]);
        free (jobs);
    }
    s_job_t *job = zlist_first (self->ready);
    while (job && *running < S_MAX_RUNNING) {
        s_job_t *next = zlist_next (self->ready);
        if (job->next_at <= now) {
            zlist_remove (self->ready, job);
            char header[PPM_STRIPE_SIG_HEADER_SIZE + 32];
            char sig[PPM_STRIPE_SIG_HEADER_SIZE];
            int64_t t = emu_now_s ();
            ppm_stripe_sig_header (job->secret, t, job->payload, strlen (job->payload), sig,
                                   sizeof sig);
            snprintf (header, sizeof header, "Stripe-Signature: %s", sig);
            job->headers =
                curl_slist_append (NULL, "Content-Type: application/json; charset=utf-8");
            job->headers = curl_slist_append (
                job->headers, "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)");
            job->headers = curl_slist_append (job->headers, header);
            job->headers = curl_slist_append (job->headers, "Expect:");
            job->easy = curl_easy_init ();
            curl_easy_setopt (job->easy, CURLOPT_URL, job->url);
            curl_easy_setopt (job->easy, CURLOPT_POSTFIELDS, job->payload);
            curl_easy_setopt (job->easy, CURLOPT_HTTPHEADER, job->headers);
            curl_easy_setopt (job->easy, CURLOPT_TIMEOUT_MS, (long)self->timeout_ms);
            curl_easy_setopt (job->easy, CURLOPT_NOSIGNAL, 1L);
            curl_easy_setopt (job->easy, CURLOPT_WRITEFUNCTION, s_discard);
            curl_easy_setopt (job->easy, CURLOPT_PRIVATE, job);
            curl_easy_setopt (job->easy, CURLOPT_PROTOCOLS_STR, "http,https");
            job->started = now;
            job->attempts++;
            json_t *attempt = json_pack ("{s:i, s:I, s:I}", "n", job->attempts, "at_ms",
                                         (json_int_t)now, "t", (json_int_t)t);
            json_array_append_new (json_object_get (job->record, "attempts"), attempt);
            curl_multi_add_handle (self->multi, job->easy);
            zlist_append (self->running, job);
            (*running)++;
        }
        job = next;
    }
}

/* Records a finished attempt and retries or retires the job (lock held). */
static void
s_finish (emu_webhook_t *self, s_job_t *job, CURLcode result)
{
    long status = 0;
    zlist_remove (self->running, job);
    if (result == CURLE_OK)
        curl_easy_getinfo (job->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle (self->multi, job->easy);
    curl_easy_cleanup (job->easy);
    job->easy = NULL;
    curl_slist_free_all (job->headers);
    job->headers = NULL;
    json_t *attempts = json_object_get (job->record, "attempts");
    json_t *attempt = json_array_get (attempts, json_array_size (attempts) - 1);
    json_object_set_new (attempt, "status", json_integer (status));
    json_object_set_new (attempt, "error",
                         result == CURLE_OK ? json_null ()
                                            : json_string (curl_easy_strerror (result)));
    json_object_set_new (attempt, "duration_ms", json_integer (emu_now_ms () - job->started));
    bool ok = status >= 200 && status < 300;
    if (ok || job->gen != self->gen || job->attempts >= self->max_attempts) {
        json_object_set_new (job->record, "state", json_string (ok ? "delivered" : "failed"));
        s_job_destroy (&job);
        return;
    }
    int64_t delay = self->retry_base_ms;
    for (int i = 1; i < job->attempts && delay < S_MAX_BACKOFF; i++)
        delay *= 2;
    if (delay > S_MAX_BACKOFF)
        delay = S_MAX_BACKOFF;
    job->next_at = emu_now_ms () + delay;
    json_object_set_new (job->record, "state", json_string ("retrying"));
    zlist_append (self->ready, job);
}

static void *
s_thread (void *arg)
{
    emu_webhook_t *self = arg;
    size_t running = 0;
    while (true) {
        pthread_mutex_lock (&self->lock);
        bool stop = self->stop;
        if (!stop)
            s_start_due (self, &running);
        pthread_mutex_unlock (&self->lock);
        if (stop)
            break;
        int still = 0;
        curl_multi_perform (self->multi, &still);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read (self->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            s_job_t *job = NULL;
            curl_easy_getinfo (msg->easy_handle, CURLINFO_PRIVATE, (char **)&job);
            CURLcode result = msg->data.result;
            pthread_mutex_lock (&self->lock);
            s_finish (self, job, result);
            pthread_mutex_unlock (&self->lock);
            running--;
        }
        curl_multi_poll (self->multi, NULL, 0, 20, NULL);
    }
    return NULL;
}

emu_webhook_t *
emu_webhook_new (void)
{
    emu_webhook_t *self = calloc (1, sizeof (emu_webhook_t));
    assert (self);
    pthread_mutex_init (&self->lock, NULL);
    self->multi = curl_multi_init ();
    self->ready = zlist_new ();
    self->held = zlist_new ();
    self->running = zlist_new ();
    self->endpoints = json_array ();
    self->records = json_array ();
    s_defaults (self);
    if (pthread_create (&self->thread, NULL, s_thread, self) != 0) {
        fprintf (stderr, "stripe-emulator: cannot start the webhook thread\n");
        abort ();
    }
    return self;
}

static void
s_drop_jobs (zlist_t *list)
{
    s_job_t *job = zlist_pop (list);
    while (job) {
        s_job_destroy (&job);
        job = zlist_pop (list);
    }
}

void
emu_webhook_destroy (emu_webhook_t **self_p)
{
    emu_webhook_t *self = *self_p;
    if (!self)
        return;
    pthread_mutex_lock (&self->lock);
    self->stop = true;
    pthread_mutex_unlock (&self->lock);
    curl_multi_wakeup (self->multi);
    pthread_join (self->thread, NULL);
    /* jobs still attached to the multi handle */
    s_job_t *job = zlist_pop (self->running);
    while (job) {
        curl_multi_remove_handle (self->multi, job->easy);
        curl_easy_cleanup (job->easy);
        curl_slist_free_all (job->headers);
        s_job_destroy (&job);
        job = zlist_pop (self->running);
    }
    zlist_destroy (&self->running);
    curl_multi_cleanup (self->multi);
    s_drop_jobs (self->ready);
    s_drop_jobs (self->held);
    zlist_destroy (&self->ready);
    zlist_destroy (&self->held);
    json_decref (self->endpoints);
    json_decref (self->records);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

json_t *
emu_webhook_add_endpoint (emu_webhook_t *self, const char *account, const char *url,
                          const char *secret)
{
    char *id = emu_new_id ("we_");
    char *generated = secret ? NULL : emu_new_id ("whsec_");
    json_t *endpoint = json_pack ("{s:s, s:s, s:s, s:s}", "id", id, "account", account, "url", url,
                                  "secret", secret ? secret : generated);
    free (id);
    free (generated);
    pthread_mutex_lock (&self->lock);
    json_array_append (self->endpoints, endpoint);
    pthread_mutex_unlock (&self->lock);
    return endpoint;
}

/* Reads an integer option within [min, max] when present. */
static int
s_option (json_t *options, const char *name, int64_t min, int64_t max, int64_t *out,
          const char **error)
{
    json_t *value = json_object_get (options, name);
    if (!value)
        return 0;
    if (!json_is_integer (value) || json_integer_value (value) < min ||
        json_integer_value (value) > max) {
        *error = name;
        return -1;
    }
    *out = json_integer_value (value);
    return 0;
}

int
emu_webhook_configure (emu_webhook_t *self, json_t *options, const char **error)
{
    pthread_mutex_lock (&self->lock);
    int64_t duplicate = self->duplicate, window = self->reorder_window,
            attempts = self->max_attempts;
    int64_t hold = self->hold_ms, base = self->retry_base_ms, timeout = self->timeout_ms;
    int rc = 0;
    if (s_option (options, "duplicate", 1, 10, &duplicate, error) ||
        s_option (options, "reorder_window", 0, 1000, &window, error) ||
        s_option (options, "hold_ms", 0, 60000, &hold, error) ||
        s_option (options, "max_attempts", 1, 50, &attempts, error) ||
        s_option (options, "retry_base_ms", 1, 60000, &base, error) ||
        s_option (options, "timeout_ms", 10, 60000, &timeout, error))
        rc = -1;
    else {
        self->duplicate = (int)duplicate;
        self->reorder_window = (int)window;
        self->hold_ms = hold;
        self->max_attempts = (int)attempts;
        self->retry_base_ms = base;
        self->timeout_ms = timeout;
    }
    pthread_mutex_unlock (&self->lock);
    return rc;
}

static bool
s_endpoint_matches (json_t *endpoint, const char *account)
{
    const char *which = json_string_value (json_object_get (endpoint, "account"));
    return strcmp (which, "*") == 0 || strcmp (which, account) == 0;
}

int
emu_webhook_endpoint_count (emu_webhook_t *self, const char *account)
{
    int count = 0;
    size_t i;
    json_t *endpoint;
    pthread_mutex_lock (&self->lock);
    EMU_ARRAY_EACH (self->endpoints, i, endpoint) {
        if (s_endpoint_matches (endpoint, account))
            count++;
    }
    pthread_mutex_unlock (&self->lock);
    return count;
}

void
emu_webhook_enqueue (emu_webhook_t *self, const char *account, const char *event_id,
                     const char *event_type, const char *payload)
{
    pthread_mutex_lock (&self->lock);
    size_t i;
    json_t *endpoint;
    bool queued = false;
    EMU_ARRAY_EACH (self->endpoints, i, endpoint) {
        if (!s_endpoint_matches (endpoint, account))
            continue;
        for (int copy = 0; copy < self->duplicate; copy++) {
            s_job_t *job = calloc (1, sizeof (s_job_t));
            assert (job);
            job->event_id = strdup (event_id);
            job->url = strdup (json_string_value (json_object_get (endpoint, "url")));
            job->secret = strdup (json_string_value (json_object_get (endpoint, "secret")));
            job->payload = strdup (payload);
            job->gen = self->gen;
            job->record = json_pack ("{s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:[]}", "event", event_id,
                                     "type", event_type, "account", account, "endpoint",
                                     json_string_value (json_object_get (endpoint, "id")), "url",
                                     job->url, "copy", copy, "state", "pending", "attempts");
            if (json_array_size (self->records) >= S_MAX_RECORDS)
                json_array_remove (self->records, 0);
            json_array_append (self->records, job->record);
            if (self->reorder_window > 1) {
                if (zlist_size (self->held) == 0)
                    self->held_since = emu_now_ms ();
                zlist_append (self->held, job);
            } else
                zlist_append (self->ready, job);
            queued = true;
        }
    }
    pthread_mutex_unlock (&self->lock);
    if (queued)
        curl_multi_wakeup (self->multi);
}

void
emu_webhook_flush (emu_webhook_t *self)
{
    pthread_mutex_lock (&self->lock);
    self->held_since = 0;
    int window = self->reorder_window;
    self->reorder_window = 0;
    int64_t hold = self->hold_ms;
    self->hold_ms = 0;
    size_t running = S_MAX_RUNNING; /* only move held to ready here */
    s_start_due (self, &running);
    self->reorder_window = window;
    self->hold_ms = hold;
    pthread_mutex_unlock (&self->lock);
    curl_multi_wakeup (self->multi);
}

json_t *
emu_webhook_state (emu_webhook_t *self, const char *event_id)
{
    pthread_mutex_lock (&self->lock);
    json_t *records = json_array ();
    size_t i;
    json_t *record;
    EMU_ARRAY_EACH (self->records, i, record) {
        if (event_id &&
            strcmp (json_string_value (json_object_get (record, "event")), event_id) != 0)
            continue;
        json_array_append_new (records, json_deep_copy (record));
    }
    json_t *state = json_pack (
        "{s:O, s:{s:i, s:i, s:I, s:i, s:I, s:I}, s:o, s:i}", "endpoints", self->endpoints,
        "options", "duplicate", self->duplicate, "reorder_window", self->reorder_window, "hold_ms",
        (json_int_t)self->hold_ms, "max_attempts", self->max_attempts, "retry_base_ms",
        (json_int_t)self->retry_base_ms, "timeout_ms", (json_int_t)self->timeout_ms, "deliveries",
        records, "held", (int)zlist_size (self->held));
    /* a copy: the endpoints array keeps changing under the lock */
    json_t *copy = json_deep_copy (state);
    json_decref (state);
    pthread_mutex_unlock (&self->lock);
    return copy;
}

void
emu_webhook_reset (emu_webhook_t *self)
{
    pthread_mutex_lock (&self->lock);
    s_drop_jobs (self->ready);
    s_drop_jobs (self->held);
    json_array_clear (self->endpoints);
    json_array_clear (self->records);
    self->gen++;
    s_defaults (self);
    pthread_mutex_unlock (&self->lock);
}
