/*  stripe-emulator: a local stand-in for the Stripe API, for tests, chaos
    tests and `make run` (Stripe itself is not reachable from our machines).

    The server is libmicrohttpd with one thread per connection, so a
    request delayed by an injected latency sleeps in its own thread and 500
    concurrent delayed requests overlap. Every /v1 request goes through one
    pipeline, in Stripe's order:

      faults (before) → auth → form decoding → route → permission →
      idempotency (replay / 409 / 400 mismatch / reserve) → latency →
      handler → faults (after) → idempotency record → request log → reply

    The /_emulator control API (JSON, no auth: loopback test tool) resets
    state, injects faults, configures webhook endpoints and chaos, lists
    what happened, and plays the customer's part (complete a Checkout
    Session, pass or fail 3D Secure, open a dispute).
    See tests/stripe-emulator/README.md.
*/
#include "emu.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <openssl/evp.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <curl/curl.h>

#define S_MAX_REQUESTS    20000 /* request log entries kept */
#define S_MAX_IDEM_KEY    255   /* Stripe's limit on Idempotency-Key */
#define S_DEFAULT_PORT    12111
#define S_DEFAULT_BIND    "127.0.0.1"
#define S_DEFAULT_VERSION "2024-06-20"

/* --- time and ids ---------------------------------------------------------- */

int64_t
emu_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
emu_now_s (void)
{
    return emu_now_ms () / 1000;
}

char *
emu_new_id (const char *prefix)
{
    static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t plen = strlen (prefix);
    char *id = malloc (plen + 25);
    assert (id);
    memcpy (id, prefix, plen);
    for (size_t i = 0; i < 24; i++)
        id[plen + i] = alphabet[randombytes_uniform (sizeof alphabet - 1)];
    id[plen + 24] = '\0';
    return id;
}

/* --- accounts and keys ----------------------------------------------------- */

static void
s_account_destroy (void *item)
{
    emu_account_t *account = item;
    free (account->name);
    free (account->id);
    json_decref (account->objects);
    json_decref (account->idem);
    free (account);
}

static emu_account_t *
s_account (emu_t *emu, const char *name)
{
    emu_account_t *account = zhash_lookup (emu->accounts, name);
    if (!account) {
        account = calloc (1, sizeof (emu_account_t));
        assert (account);
        account->name = strdup (name);
        account->id = emu_new_id ("acct_");
        account->objects = json_object ();
        account->idem = json_object ();
        zhash_insert (emu->accounts, name, account);
        zhash_freefn (emu->accounts, name, s_account_destroy);
    }
    return account;
}

typedef enum { S_KEY_OK, S_KEY_MISSING, S_KEY_LIVE, S_KEY_PUBLISHABLE, S_KEY_INVALID } s_key_t;

/* Classifies a key; on S_KEY_OK *restricted and the account name (the
   key body up to its first '_', or all of it) are set. */
static s_key_t
s_key_check (const char *key, bool *restricted, char *name, size_t name_size)
{
    if (!key || !*key)
        return S_KEY_MISSING;
    if (strncmp (key, "sk_live_", 8) == 0 || strncmp (key, "rk_live_", 8) == 0)
        return S_KEY_LIVE;
    if (strncmp (key, "pk_", 3) == 0)
        return S_KEY_PUBLISHABLE;
    if (strncmp (key, "sk_test_", 8) != 0 && strncmp (key, "rk_test_", 8) != 0)
        return S_KEY_INVALID;
    const char *body = key + 8;
    size_t len = strlen (body);
    if (len == 0 || len > 200)
        return S_KEY_INVALID;
    for (const char *p = body; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return S_KEY_INVALID;
    size_t name_len = strcspn (body, "_");
    if (name_len == 0 || name_len >= name_size)
        return S_KEY_INVALID;
    memcpy (name, body, name_len);
    name[name_len] = '\0';
    *restricted = key[0] == 'r';
    return S_KEY_OK;
}

/* The account a key belongs to: a linked name, else the key's own. */
static const char *
s_account_name_of (emu_t *emu, const char *key, const char *own)
{
    const char *linked = json_string_value (json_object_get (emu->key_links, key));
    return linked ? linked : own;
}

static void
s_mask (const char *key, char *out, size_t size)
{
    size_t len = key ? strlen (key) : 0;
    if (len <= 12)
        snprintf (out, size, "%s", "***");
    else
        snprintf (out, size, "%.8s***%s", key, key + len - 4);
}

/* --- faults ------------------------------------------------------------------ */

typedef enum {
    S_FAULT_NONE,
    S_FAULT_RATE_LIMIT,
    S_FAULT_ERROR_BEFORE,
    S_FAULT_ERROR_AFTER,
    S_FAULT_DROP_BEFORE,
    S_FAULT_DROP_AFTER
} s_fault_t;

static const char *const s_fault_names[] = {
    "none", "rate_limit", "error_before", "error_after", "drop_before", "drop_after", NULL};

typedef struct {
    s_fault_t fault;  /* what to inject */
    int status;       /* for rate_limit / error_* */
    int64_t latency;  /* ms to wait before executing */
    int should_retry; /* -1 no header, else Stripe-Should-Retry value */
    char rule[32];    /* id of the rule that fired */
} s_plan_t;

static double
s_random (emu_t *emu)
{
    /* xorshift64*, seeded by the control API for reproducible chaos */
    uint64_t x = emu->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    emu->rng = x;
    return (double)((x * 0x2545F4914F6CDD1DULL) >> 11) / 9007199254740992.0;
}

static bool
s_path_matches (const char *pattern, const char *path)
{
    if (!pattern || !*pattern)
        return true;
    size_t len = strlen (pattern);
    if (pattern[len - 1] == '*')
        return strncmp (pattern, path, len - 1) == 0;
    return strcmp (pattern, path) == 0;
}

/* Decides the faults of one request (lock held). */
static s_plan_t
s_fault_plan (emu_t *emu, const char *method, const char *path)
{
    s_plan_t plan = {S_FAULT_NONE, 0, 0, -1, ""};
    size_t i = 0;
    while (i < json_array_size (emu->faults)) {
        json_t *rule = json_array_get (emu->faults, i);
        const char *rule_method = json_string_value (json_object_get (rule, "method"));
        if ((rule_method && strcasecmp (rule_method, method) != 0) ||
            !s_path_matches (json_string_value (json_object_get (rule, "path")), path)) {
            i++;
            continue;
        }
        json_t *remaining = json_object_get (rule, "remaining");
        json_int_t latency = json_integer_value (json_object_get (rule, "latency_ms"));
        if (latency > plan.latency)
            plan.latency = latency;
        const char *mode = json_string_value (json_object_get (rule, "mode"));
        double rate = json_is_number (json_object_get (rule, "rate"))
                          ? json_number_value (json_object_get (rule, "rate"))
                          : 1.0;
        if (mode && plan.fault == S_FAULT_NONE && strcmp (mode, "none") != 0 &&
            s_random (emu) < rate) {
            for (int f = 1; s_fault_names[f]; f++)
                if (strcmp (mode, s_fault_names[f]) == 0)
                    plan.fault = (s_fault_t)f;
            plan.status = (int)json_integer_value (json_object_get (rule, "status"));
            if (!plan.status)
                plan.status = plan.fault == S_FAULT_RATE_LIMIT ? 429 : 500;
            json_t *retry = json_object_get (rule, "should_retry");
            plan.should_retry = json_is_boolean (retry) ? json_is_true (retry) : -1;
            snprintf (plan.rule, sizeof plan.rule, "%s",
                      json_string_value (json_object_get (rule, "id")));
            json_object_set_new (
                rule, "fired",
                json_integer (json_integer_value (json_object_get (rule, "fired")) + 1));
        }
        if (json_is_integer (remaining)) {
            json_int_t left = json_integer_value (remaining) - 1;
            if (left <= 0) {
                json_array_remove (emu->faults, i);
                continue;
            }
            json_object_set_new (rule, "remaining", json_integer (left));
        }
        i++;
    }
    return plan;
}

static void
s_fault_reply (const s_plan_t *plan, emu_reply_t *reply)
{
    if (plan->fault == S_FAULT_RATE_LIMIT)
        emu_error (reply, plan->status, "invalid_request_error", "rate_limit", NULL,
                   "Too many requests hit the API too quickly. We recommend an exponential "
                   "backoff of your requests. (injected by the stripe emulator, rule %s)",
                   plan->rule);
    else
        emu_error (reply, plan->status, "api_error", NULL, NULL,
                   "An unknown error occurred (injected by the stripe emulator, rule %s).",
                   plan->rule);
}

/* --- HTTP plumbing ------------------------------------------------------------ */

typedef struct {
    char *body;     /* request body so far */
    size_t size;    /* bytes in body */
    bool too_large; /* body passed the cap */
} s_conn_t;

typedef struct {
    const char *name; /* header name */
    char value[320];  /* header value */
} s_header_t;

static enum MHD_Result
s_send (struct MHD_Connection *conn, int status, json_t *body, const char *request_id,
        const s_header_t *headers, size_t header_count)
{
    char *text = json_dumps (body, JSON_INDENT (2) | JSON_PRESERVE_ORDER);
    size_t len = strlen (text);
    struct MHD_Response *response =
        MHD_create_response_from_buffer (len, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header (response, "Content-Type", "application/json");
    MHD_add_response_header (response, "Request-Id", request_id);
    MHD_add_response_header (response, "Cache-Control", "no-cache, no-store");
    for (size_t i = 0; i < header_count; i++)
        MHD_add_response_header (response, headers[i].name, headers[i].value);
    enum MHD_Result rc = MHD_queue_response (conn, (unsigned int)status, response);
    MHD_destroy_response (response);
    return rc;
}

static enum MHD_Result
s_send_html (struct MHD_Connection *conn, const char *html)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer (strlen (html), (void *)html, MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header (response, "Content-Type", "text/html; charset=utf-8");
    enum MHD_Result rc = MHD_queue_response (conn, MHD_HTTP_OK, response);
    MHD_destroy_response (response);
    return rc;
}

static enum MHD_Result
s_query_pair (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    ppm_form_add (cls, key, value ? value : "");
    return MHD_YES;
}

/* Matches path against a pattern with one optional "{id}" segment; the
   captured id goes into id (size bytes). */
static bool
s_route_matches (const char *pattern, const char *path, char *id, size_t size)
{
    *id = '\0';
    while (*pattern && *path) {
        if (strncmp (pattern, "{id}", 4) == 0) {
            size_t len = strcspn (path, "/");
            if (len == 0 || len >= size)
                return false;
            memcpy (id, path, len);
            id[len] = '\0';
            path += len;
            pattern += 4;
            continue;
        }
        if (*pattern != *path)
            return false;
        pattern++;
        path++;
    }
    return *pattern == '\0' && *path == '\0';
}

/* qsort wants (const void *, const void *) over char **. */
static int
s_strptrcmp (const void *a, const void *b)
{
    return strcmp (*(char *const *)a, *(char *const *)b);
}

/* SHA-256 of method, path and the sorted decoded pairs: "the same
   parameters" in whatever order they were encoded. */
static void
s_fingerprint (const char *method, const char *path, const ppm_form_t *form, char *hex)
{
    size_t count = ppm_form_size (form);
    char **lines = calloc (count ? count : 1, sizeof (char *));
    for (size_t i = 0; i < count; i++) {
        const char *k = ppm_form_key (form, i);
        const char *v = ppm_form_value (form, i);
        size_t len = strlen (k) + strlen (v) + 2;
        lines[i] = malloc (len);
        snprintf (lines[i], len, "%s=%s", k, v);
    }
    qsort (lines, count, sizeof (char *), s_strptrcmp);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new ();
    EVP_DigestInit_ex (ctx, EVP_sha256 (), NULL);
    EVP_DigestUpdate (ctx, method, strlen (method));
    EVP_DigestUpdate (ctx, " ", 1);
    EVP_DigestUpdate (ctx, path, strlen (path));
    for (size_t i = 0; i < count; i++) {
        EVP_DigestUpdate (ctx, "\n", 1);
        EVP_DigestUpdate (ctx, lines[i], strlen (lines[i]));
        free (lines[i]);
    }
    free (lines);
    unsigned char digest[32];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex (ctx, digest, &dlen);
    EVP_MD_CTX_free (ctx);
    for (unsigned int i = 0; i < 32; i++)
        snprintf (hex + 2 * i, 3, "%02x", digest[i]);
}

/* Appends one request to the log (lock held). */
static void
s_log_request (emu_t *emu, const char *request_id, const char *method, const char *path,
               const char *account, const char *idem_key, int status, bool replayed,
               const char *fault, const char *version, const ppm_form_t *form)
{
    json_t *params = json_object ();
    for (size_t i = 0; form && i < ppm_form_size (form); i++)
        json_object_set_new (params, ppm_form_key (form, i),
                             json_string (ppm_form_value (form, i)));
    json_t *entry = json_pack ("{s:s, s:s, s:s, s:s?, s:s?, s:i, s:b, s:s?, s:s?, s:I, s:o}",
                               "request_id", request_id, "method", method, "path", path, "account",
                               account, "idempotency_key", idem_key, "status", status, "replayed",
                               replayed, "fault", fault, "stripe_version", version, "at_ms",
                               (json_int_t)emu_now_ms (), "params", params);
    if (json_array_size (emu->requests) >= S_MAX_REQUESTS)
        json_array_remove (emu->requests, 0);
    json_array_append_new (emu->requests, entry);
}

static void
s_sleep_ms (int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    while (nanosleep (&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* --- the /v1 pipeline -------------------------------------------------------- */

static enum MHD_Result
s_api (emu_t *emu, struct MHD_Connection *conn, const char *method, const char *path,
       s_conn_t *body)
{
    char *request_id = emu_new_id ("req_");
    const char *version = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Stripe-Version");
    const char *idem_key = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Idempotency-Key");
    if (strcmp (method, "POST") != 0)
        idem_key = NULL; /* Stripe ignores keys on GET and DELETE */
    const char *auth = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Authorization");
    s_header_t headers[4];
    size_t header_count = 0;
    emu_reply_t reply = {0, NULL, false};
    ppm_form_t *form = NULL;
    bool replayed = false;
    bool drop = false;
    const char *fault_name = NULL;
    char account_name[256] = "";
    const char *account_label = NULL;
    enum MHD_Result result = MHD_YES;

    pthread_mutex_lock (&emu->lock);
    s_plan_t plan = s_fault_plan (emu, method, path);
    const char *effective_version = version ? version : emu->default_version;
    snprintf (headers[header_count].value, sizeof headers[0].value, "%s", effective_version);
    headers[header_count++].name = "Stripe-Version";
    if (plan.should_retry >= 0) {
        snprintf (headers[header_count].value, sizeof headers[0].value, "%s",
                  plan.should_retry ? "true" : "false");
        headers[header_count++].name = "Stripe-Should-Retry";
    }
    if (plan.fault != S_FAULT_NONE)
        fault_name = s_fault_names[plan.fault];

    /* faults that strike before Stripe looks at the request */
    if (plan.fault == S_FAULT_DROP_BEFORE) {
        drop = true;
        goto log;
    }
    if (plan.fault == S_FAULT_RATE_LIMIT || plan.fault == S_FAULT_ERROR_BEFORE) {
        pthread_mutex_unlock (&emu->lock);
        s_sleep_ms (plan.latency);
        pthread_mutex_lock (&emu->lock);
        s_fault_reply (&plan, &reply);
        goto log;
    }

    /* auth */
    const char *key = NULL;
    if (auth && strncmp (auth, "Bearer ", 7) == 0)
        key = auth + 7;
    bool restricted = false;
    char own[256];
    char masked[64];
    s_mask (key, masked, sizeof masked);
    switch (s_key_check (key, &restricted, own, sizeof own)) {
        case S_KEY_OK:
            break;
        case S_KEY_MISSING:
            emu_error (&reply, 401, "invalid_request_error", NULL, NULL,
                       "You did not provide an API key. You need to provide your API key in the "
                       "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                       "YOUR_SECRET_KEY').");
            goto log;
        case S_KEY_LIVE:
            emu_error (&reply, 401, "invalid_request_error", "api_key_expired", NULL,
                       "Live mode key %s refused: this Stripe emulator is test mode only. Use "
                       "a sk_test_ or rk_test_ key.",
                       masked);
            goto log;
        case S_KEY_PUBLISHABLE:
            emu_error (&reply, 401, "invalid_request_error", "secret_key_required", NULL,
                       "This API call cannot be made with a publishable API key. Please use a "
                       "secret API key.");
            goto log;
        case S_KEY_INVALID:
            emu_error (&reply, 401, "invalid_request_error", NULL, NULL,
                       "Invalid API Key provided: %s", masked);
            goto log;
    }
    snprintf (account_name, sizeof account_name, "%s", s_account_name_of (emu, key, own));
    account_label = account_name;
    if (emu->require_version && !version) {
        emu_error (&reply, 400, "invalid_request_error", "parameter_missing", NULL,
                   "No Stripe-Version header: this emulator was started with --require-version.");
        goto log;
    }

    /* parameters */
    if (strcmp (method, "POST") == 0) {
        if (body->too_large) {
            emu_error (&reply, 400, "invalid_request_error", NULL, NULL,
                       "Request body is larger than %d bytes.", PPM_FORM_MAX_BODY);
            goto log;
        }
        size_t offset = 0;
        ppm_form_err_t err = ppm_form_decode (body->body, body->size, &form, &offset);
        if (err != PPM_FORM_OK) {
            emu_error (&reply, 400, "invalid_request_error", NULL, NULL,
                       "Invalid request body: %s at byte %zu.", ppm_form_strerror (err), offset);
            goto log;
        }
    } else {
        form = ppm_form_new ();
        MHD_get_connection_values (conn, MHD_GET_ARGUMENT_KIND, s_query_pair, form);
    }

    /* route */
    const emu_route_t *route = NULL;
    char id[256];
    bool path_known = false;
    for (const emu_route_t *r = emu_routes; r->method; r++) {
        if (!s_route_matches (r->pattern, path, id, sizeof id))
            continue;
        path_known = true;
        if (strcmp (r->method, method) == 0) {
            route = r;
            break;
        }
    }
    if (!route) {
        emu_error (&reply, 404, "invalid_request_error", NULL, NULL,
                   "Unrecognized request URL (%s: %s). Please see https://stripe.com/docs or we "
                   "can help at https://support.stripe.com/.%s",
                   method, path, path_known ? " (method not allowed)" : "");
        goto log;
    }
    emu_account_t *account = s_account (emu, account_name);
    if (restricted && route->rak_denied) {
        emu_error (&reply, 403, "invalid_request_error", NULL, NULL,
                   "The provided key '%s' does not have the required permissions for this "
                   "endpoint on account '%s'. Having the '%s' permission would allow this "
                   "request to continue.",
                   masked, account->id, route->rak_denied);
        goto log;
    }

    /* idempotency */
    char fingerprint[65] = "";
    json_t *record = NULL;
    if (idem_key) {
        if (strlen (idem_key) > S_MAX_IDEM_KEY) {
            emu_error (&reply, 400, "invalid_request_error", NULL, "Idempotency-Key",
                       "Keys for idempotent requests can only be up to 255 characters long.");
            goto log;
        }
        s_fingerprint (method, path, form, fingerprint);
        record = json_object_get (account->idem, idem_key);
        if (record && emu_now_ms () - json_integer_value (json_object_get (record, "created_ms")) >
                          emu->idem_ttl_s * 1000) {
            json_object_del (account->idem, idem_key);
            record = NULL;
        }
        if (record && json_is_true (json_object_get (record, "in_flight"))) {
            emu_error (&reply, 409, "invalid_request_error", "idempotency_key_in_use", NULL,
                       "There is currently another in-progress request using this Idempotent "
                       "Key (that probably means you submitted twice, and the other request is "
                       "still going through): %s. Please try again later.",
                       idem_key);
            goto log;
        }
        if (record) {
            const char *stored = json_string_value (json_object_get (record, "fingerprint"));
            if (strcmp (stored, fingerprint) != 0) {
                emu_error (&reply, 400, "idempotency_error", NULL, NULL,
                           "Keys for idempotent requests can only be used with the same "
                           "parameters they were first used with. Try using a key other than "
                           "'%s' if you meant to execute a different request.",
                           idem_key);
                reply.store = false;
                goto log;
            }
            reply.status = (int)json_integer_value (json_object_get (record, "status"));
            reply.body = json_incref (json_object_get (record, "body"));
            replayed = true;
            snprintf (headers[header_count].value, sizeof headers[0].value, "true");
            headers[header_count++].name = "Idempotent-Replayed";
            snprintf (headers[header_count].value, sizeof headers[0].value, "%s",
                      json_string_value (json_object_get (record, "request_id")));
            headers[header_count++].name = "Original-Request";
            goto log;
        }
        json_object_set_new (account->idem, idem_key,
                             json_pack ("{s:b, s:s, s:I, s:s}", "in_flight", 1, "fingerprint",
                                        fingerprint, "created_ms", (json_int_t)emu_now_ms (),
                                        "request_id", request_id));
    }

    /* the request is executing: Stripe's latency happens here */
    if (plan.latency > 0) {
        pthread_mutex_unlock (&emu->lock);
        s_sleep_ms (plan.latency);
        pthread_mutex_lock (&emu->lock);
        /* a reset while we slept removed the account */
        account = s_account (emu, account_name);
    }
    emu_req_t req = {emu,  account,    key,      restricted,       method, path, *id ? id : NULL,
                     form, request_id, idem_key, effective_version};
    reply.store = true;
    route->handler (&req, &reply);
    if (plan.fault == S_FAULT_ERROR_AFTER)
        s_fault_reply (&plan, &reply); /* executed, then failed: indeterminate */
    if (idem_key) {
        if (reply.store && reply.status != 409 && reply.status != 429)
            json_object_set_new (account->idem, idem_key,
                                 json_pack ("{s:b, s:s, s:I, s:s, s:i, s:O}", "in_flight", 0,
                                            "fingerprint", fingerprint, "created_ms",
                                            (json_int_t)emu_now_ms (), "request_id", request_id,
                                            "status", reply.status, "body", reply.body));
        else
            json_object_del (account->idem, idem_key);
    }
    if (plan.fault == S_FAULT_DROP_AFTER)
        drop = true;

log:
    s_log_request (emu, request_id, method, path, account_label, idem_key, drop ? 0 : reply.status,
                   replayed, fault_name, version, form);
    pthread_mutex_unlock (&emu->lock);
    if (drop)
        result = MHD_NO; /* libmicrohttpd closes the socket without a response */
    else
        result = s_send (conn, reply.status, reply.body, request_id, headers, header_count);
    json_decref (reply.body);
    ppm_form_destroy (&form);
    free (request_id);
    return result;
}

/* --- the /_emulator control API ------------------------------------------------- */

typedef struct {
    emu_t *emu;                  /* the emulator (lock held) */
    struct MHD_Connection *conn; /* for query arguments */
    const char *id;              /* {id} of the path, or "" */
    json_t *json;                /* the JSON body ({} when none) */
} s_ctl_t;

typedef void (s_ctl_fn) (s_ctl_t *ctl, emu_reply_t *reply);

static void
s_ctl_ok (emu_reply_t *reply, json_t *body)
{
    reply->status = 200;
    reply->body = body;
}

static void
s_ctl_bad (emu_reply_t *reply, const char *fmt, const char *what)
{
    emu_error (reply, 400, "invalid_request_error", NULL, NULL, fmt, what);
}

static const char *
s_query (s_ctl_t *ctl, const char *name)
{
    return MHD_lookup_connection_value (ctl->conn, MHD_GET_ARGUMENT_KIND, name);
}

static void
s_ctl_health (s_ctl_t *ctl, emu_reply_t *reply)
{
    (void)ctl;
    s_ctl_ok (reply, json_pack ("{s:b}", "ok", 1));
}

static void
s_ctl_reset (s_ctl_t *ctl, emu_reply_t *reply)
{
    emu_t *emu = ctl->emu;
    zhash_destroy (&emu->accounts);
    emu->accounts = zhash_new ();
    json_object_clear (emu->key_links);
    json_array_clear (emu->requests);
    json_array_clear (emu->faults);
    emu_webhook_reset (emu->webhook);
    s_ctl_ok (reply, json_pack ("{s:b}", "reset", 1));
}

static void
s_ctl_fault_add (s_ctl_t *ctl, emu_reply_t *reply)
{
    json_t *rule = ctl->json;
    const char *mode = json_string_value (json_object_get (rule, "mode"));
    bool known = !json_object_get (rule, "mode");
    for (int f = 0; mode && s_fault_names[f]; f++)
        known = known || strcmp (mode, s_fault_names[f]) == 0;
    if (!known) {
        s_ctl_bad (reply,
                   "mode must be one of none, rate_limit, error_before, error_after, "
                   "drop_before, drop_after (got %s)",
                   mode ? mode : "a non-string");
        return;
    }
    json_t *latency = json_object_get (rule, "latency_ms");
    json_t *rate = json_object_get (rule, "rate");
    json_t *count = json_object_get (rule, "count");
    json_t *status = json_object_get (rule, "status");
    if (latency && (!json_is_integer (latency) || json_integer_value (latency) < 0 ||
                    json_integer_value (latency) > 120000)) {
        s_ctl_bad (reply, "%s must be an integer 0..120000", "latency_ms");
        return;
    }
    if (rate &&
        (!json_is_number (rate) || json_number_value (rate) < 0 || json_number_value (rate) > 1)) {
        s_ctl_bad (reply, "%s must be a number 0..1", "rate");
        return;
    }
    if (count && (!json_is_integer (count) || json_integer_value (count) < 1)) {
        s_ctl_bad (reply, "%s must be a positive integer", "count");
        return;
    }
    if (status && (!json_is_integer (status) || json_integer_value (status) < 400 ||
                   json_integer_value (status) > 599)) {
        s_ctl_bad (reply, "%s must be an HTTP error status 400..599", "status");
        return;
    }
    json_t *seed = json_object_get (rule, "seed");
    if (json_is_integer (seed))
        ctl->emu->rng = (uint64_t)json_integer_value (seed) | 1;
    char *id = emu_new_id ("fault_");
    json_t *stored = json_deep_copy (rule);
    json_object_set_new (stored, "id", json_string (id));
    json_object_set_new (stored, "fired", json_integer (0));
    if (count)
        json_object_set (stored, "remaining", count);
    free (id);
    json_array_append (ctl->emu->faults, stored);
    s_ctl_ok (reply, stored);
}

static void
s_ctl_fault_list (s_ctl_t *ctl, emu_reply_t *reply)
{
    s_ctl_ok (reply, json_pack ("{s:O}", "rules", ctl->emu->faults));
}

static void
s_ctl_fault_clear (s_ctl_t *ctl, emu_reply_t *reply)
{
    json_array_clear (ctl->emu->faults);
    s_ctl_ok (reply, json_pack ("{s:[]}", "rules"));
}

/* The account name for an "account_key" field: "*" stays "*". */
static int
s_account_of_key (s_ctl_t *ctl, const char *key, char *name, size_t size)
{
    if (key && strcmp (key, "*") == 0) {
        snprintf (name, size, "*");
        return 0;
    }
    bool restricted;
    char own[256];
    if (s_key_check (key, &restricted, own, sizeof own) != S_KEY_OK)
        return -1;
    snprintf (name, size, "%s", s_account_name_of (ctl->emu, key, own));
    return 0;
}

static void
s_ctl_webhook_add (s_ctl_t *ctl, emu_reply_t *reply)
{
    const char *key = json_string_value (json_object_get (ctl->json, "account_key"));
    if (!key)
        key = json_string_value (json_object_get (ctl->json, "api_key"));
    const char *url = json_string_value (json_object_get (ctl->json, "url"));
    const char *secret = json_string_value (json_object_get (ctl->json, "secret"));
    char name[256];
    if (!key)
        key = "*";
    if (s_account_of_key (ctl, key, name, sizeof name)) {
        s_ctl_bad (reply, "%s must be a sk_test_/rk_test_ key or \"*\"", "account_key");
        return;
    }
    if (!url || (strncmp (url, "http://", 7) != 0 && strncmp (url, "https://", 8) != 0)) {
        s_ctl_bad (reply, "%s must be an http(s) URL", "url");
        return;
    }
    if (secret && strncmp (secret, "whsec_", 6) != 0) {
        s_ctl_bad (reply, "%s must start with whsec_", "secret");
        return;
    }
    s_ctl_ok (reply, emu_webhook_add_endpoint (ctl->emu->webhook, name, url, secret));
}

static void
s_ctl_webhook_state (s_ctl_t *ctl, emu_reply_t *reply)
{
    s_ctl_ok (reply, emu_webhook_state (ctl->emu->webhook, s_query (ctl, "event")));
}

static void
s_ctl_webhook_config (s_ctl_t *ctl, emu_reply_t *reply)
{
    const char *error = NULL;
    if (emu_webhook_configure (ctl->emu->webhook, ctl->json, &error)) {
        s_ctl_bad (reply, "option %s is missing or out of range", error);
        return;
    }
    s_ctl_webhook_state (ctl, reply);
}

static void
s_ctl_webhook_flush (s_ctl_t *ctl, emu_reply_t *reply)
{
    emu_webhook_flush (ctl->emu->webhook);
    s_ctl_ok (reply, json_pack ("{s:b}", "flushed", 1));
}

static void
s_ctl_webhook_clear (s_ctl_t *ctl, emu_reply_t *reply)
{
    emu_webhook_reset (ctl->emu->webhook);
    s_ctl_ok (reply, json_pack ("{s:b}", "cleared", 1));
}

static void
s_ctl_link (s_ctl_t *ctl, emu_reply_t *reply)
{
    json_t *keys = json_object_get (ctl->json, "keys");
    if (!json_is_array (keys) || json_array_size (keys) == 0) {
        s_ctl_bad (reply, "%s must be a non-empty array of test keys", "keys");
        return;
    }
    char name[256];
    if (s_account_of_key (ctl, json_string_value (json_array_get (keys, 0)), name, sizeof name) ||
        strcmp (name, "*") == 0) {
        s_ctl_bad (reply, "%s[0] is not a sk_test_/rk_test_ key", "keys");
        return;
    }
    size_t i;
    json_t *key;
    EMU_ARRAY_EACH (keys, i, key) {
        char other[256];
        if (s_account_of_key (ctl, json_string_value (key), other, sizeof other) ||
            strcmp (other, "*") == 0) {
            s_ctl_bad (reply, "keys[%s] is not a sk_test_/rk_test_ key", "…");
            return;
        }
    }
    EMU_ARRAY_EACH (keys, i, key) {
        json_object_set_new (ctl->emu->key_links, json_string_value (key), json_string (name));
    }
    emu_account_t *account = s_account (ctl->emu, name);
    s_ctl_ok (reply, json_pack ("{s:s, s:s}", "account", name, "id", account->id));
}

static void
s_ctl_requests (s_ctl_t *ctl, emu_reply_t *reply)
{
    const char *path = s_query (ctl, "path");
    const char *key = s_query (ctl, "account_key");
    char name[256] = "";
    if (key && s_account_of_key (ctl, key, name, sizeof name)) {
        s_ctl_bad (reply, "%s is not a test key", "account_key");
        return;
    }
    json_t *data = json_array ();
    size_t i;
    json_t *entry;
    EMU_ARRAY_EACH (ctl->emu->requests, i, entry) {
        const char *account = json_string_value (json_object_get (entry, "account"));
        if (path && !s_path_matches (path, json_string_value (json_object_get (entry, "path"))))
            continue;
        if (*name && (!account || strcmp (account, name) != 0))
            continue;
        json_array_append (data, entry);
    }
    s_ctl_ok (reply, json_pack ("{s:o}", "data", data));
}

/* Lists objects of one type across accounts (or one account_key),
   oldest first, each with an "emulator_account" field. */
static void
s_ctl_objects_of (s_ctl_t *ctl, emu_reply_t *reply, const char *type)
{
    const char *key = s_query (ctl, "account_key");
    char name[256] = "";
    if (key && s_account_of_key (ctl, key, name, sizeof name)) {
        s_ctl_bad (reply, "%s is not a test key", "account_key");
        return;
    }
    json_t *data = json_array ();
    for (emu_account_t *account = zhash_first (ctl->emu->accounts); account;
         account = zhash_next (ctl->emu->accounts)) {
        if (*name && strcmp (name, account->name) != 0)
            continue;
        const char *k;
        json_t *v;
        EMU_OBJECT_EACH (account->objects, k, v) {
            if (strcmp (json_string_value (json_object_get (v, "object")), type) != 0)
                continue;
            json_t *copy = json_deep_copy (v);
            json_object_set_new (copy, "emulator_account", json_string (account->name));
            json_array_append_new (data, copy);
        }
    }
    s_ctl_ok (reply, json_pack ("{s:o}", "data", data));
}

static void
s_ctl_payment_intents (s_ctl_t *ctl, emu_reply_t *reply)
{
    s_ctl_objects_of (ctl, reply, "payment_intent");
}
static void
s_ctl_refunds (s_ctl_t *ctl, emu_reply_t *reply)
{
    s_ctl_objects_of (ctl, reply, "refund");
}
static void
s_ctl_events (s_ctl_t *ctl, emu_reply_t *reply)
{
    s_ctl_objects_of (ctl, reply, "event");
}
static void
s_ctl_customers (s_ctl_t *ctl, emu_reply_t *reply)
{
    s_ctl_objects_of (ctl, reply, "customer");
}
static void
s_ctl_charges (s_ctl_t *ctl, emu_reply_t *reply)
{
    s_ctl_objects_of (ctl, reply, "charge");
}
static void
s_ctl_sessions (s_ctl_t *ctl, emu_reply_t *reply)
{
    s_ctl_objects_of (ctl, reply, "checkout.session");
}
static void
s_ctl_disputes (s_ctl_t *ctl, emu_reply_t *reply)
{
    s_ctl_objects_of (ctl, reply, "dispute");
}

static void
s_ctl_authenticate (s_ctl_t *ctl, emu_reply_t *reply)
{
    const char *outcome = json_string_value (json_object_get (ctl->json, "outcome"));
    if (!outcome)
        outcome = "succeed";
    if (strcmp (outcome, "succeed") != 0 && strcmp (outcome, "fail") != 0) {
        s_ctl_bad (reply, "%s must be \"succeed\" or \"fail\"", "outcome");
        return;
    }
    emu_control_authenticate (ctl->emu, ctl->id, strcmp (outcome, "succeed") == 0, reply);
}

static void
s_ctl_checkout_complete (s_ctl_t *ctl, emu_reply_t *reply)
{
    const char *pm = json_string_value (json_object_get (ctl->json, "payment_method"));
    emu_control_checkout_complete (ctl->emu, ctl->id, pm, reply);
}

static void
s_ctl_checkout_expire (s_ctl_t *ctl, emu_reply_t *reply)
{
    emu_control_checkout_expire (ctl->emu, ctl->id, reply);
}

static void
s_ctl_dispute (s_ctl_t *ctl, emu_reply_t *reply)
{
    const char *pi = json_string_value (json_object_get (ctl->json, "payment_intent"));
    if (!pi) {
        s_ctl_bad (reply, "%s is required", "payment_intent");
        return;
    }
    emu_control_dispute (ctl->emu, pi, json_integer_value (json_object_get (ctl->json, "amount")),
                         json_string_value (json_object_get (ctl->json, "reason")), reply);
}

static void
s_ctl_sweep (s_ctl_t *ctl, emu_reply_t *reply)
{
    emu_sweep (ctl->emu);
    s_ctl_ok (reply, json_pack ("{s:b}", "swept", 1));
}

typedef struct {
    const char *method;  /* HTTP method */
    const char *pattern; /* path pattern with an optional {id} */
    s_ctl_fn *handler;   /* the handler */
} s_ctl_route_t;

static const s_ctl_route_t s_ctl_routes[] = {
    {"GET", "/_emulator/health", s_ctl_health},
    {"POST", "/_emulator/reset", s_ctl_reset},
    {"POST", "/_emulator/faults", s_ctl_fault_add},
    {"GET", "/_emulator/faults", s_ctl_fault_list},
    {"DELETE", "/_emulator/faults", s_ctl_fault_clear},
    {"POST", "/_emulator/faults/clear", s_ctl_fault_clear},
    {"POST", "/_emulator/webhooks", s_ctl_webhook_add},
    {"POST", "/_emulator/webhook_endpoints", s_ctl_webhook_add},
    {"GET", "/_emulator/webhooks", s_ctl_webhook_state},
    {"DELETE", "/_emulator/webhooks", s_ctl_webhook_clear},
    {"POST", "/_emulator/webhooks/config", s_ctl_webhook_config},
    {"POST", "/_emulator/webhooks/flush", s_ctl_webhook_flush},
    {"POST", "/_emulator/accounts", s_ctl_link},
    {"GET", "/_emulator/requests", s_ctl_requests},
    {"GET", "/_emulator/payment_intents", s_ctl_payment_intents},
    {"GET", "/_emulator/refunds", s_ctl_refunds},
    {"GET", "/_emulator/events", s_ctl_events},
    {"GET", "/_emulator/customers", s_ctl_customers},
    {"GET", "/_emulator/charges", s_ctl_charges},
    {"GET", "/_emulator/checkout_sessions", s_ctl_sessions},
    {"GET", "/_emulator/disputes", s_ctl_disputes},
    {"POST", "/_emulator/payment_intents/{id}/authenticate", s_ctl_authenticate},
    {"POST", "/_emulator/checkout_sessions/{id}/complete", s_ctl_checkout_complete},
    {"POST", "/_emulator/checkout_sessions/{id}/expire", s_ctl_checkout_expire},
    {"POST", "/_emulator/disputes", s_ctl_dispute},
    {"POST", "/_emulator/sweep", s_ctl_sweep},
    {NULL, NULL, NULL}};

/* Small pages a person can click through in `make run`. */
static enum MHD_Result
s_page (struct MHD_Connection *conn, const char *kind, const char *id)
{
    char html[4096];
    if (strcmp (kind, "checkout") == 0)
        snprintf (html, sizeof html,
                  "<!doctype html><html><head><title>Emulated Stripe Checkout</title></head>"
                  "<body><h1>Emulated Stripe Checkout</h1><p>Session <code>%s</code></p>"
                  "<p><button onclick=\"go('pm_card_visa')\">Pay with 4242 (succeeds)</button> "
                  "<button onclick=\"go('pm_card_chargeDeclined')\">Pay with a declined card"
                  "</button> <button onclick=\"ex()\">Let it expire</button></p><pre id=o></pre>"
                  "<script>function show(r){r.json().then(j=>{document.getElementById('o')"
                  ".textContent=JSON.stringify(j,null,2);if(j.status==='complete'&&j.success_url)"
                  "location.href=j.success_url.replace('{CHECKOUT_SESSION_ID}',j.id);})}"
                  "function go(pm){fetch('/_emulator/checkout_sessions/%s/complete',{method:"
                  "'POST',body:JSON.stringify({payment_method:pm})}).then(show)}"
                  "function ex(){fetch('/_emulator/checkout_sessions/%s/expire',{method:'POST'})"
                  ".then(show)}</script></body></html>",
                  id, id, id);
    else
        snprintf (html, sizeof html,
                  "<!doctype html><html><head><title>Emulated 3D Secure</title></head><body>"
                  "<h1>Emulated 3D Secure</h1><p>PaymentIntent <code>%s</code></p>"
                  "<p><button onclick=\"go('succeed')\">Complete authentication</button> "
                  "<button onclick=\"go('fail')\">Fail authentication</button></p><pre id=o>"
                  "</pre><script>function go(o){fetch('/_emulator/payment_intents/%s/"
                  "authenticate',{method:'POST',body:JSON.stringify({outcome:o})}).then(r=>r"
                  ".json()).then(j=>{document.getElementById('o').textContent=JSON.stringify(j,"
                  "null,2)})}</script></body></html>",
                  id, id);
    return s_send_html (conn, html);
}

static enum MHD_Result
s_control (emu_t *emu, struct MHD_Connection *conn, const char *method, const char *path,
           s_conn_t *body)
{
    char id[256];
    if (strcmp (method, "GET") == 0 &&
        s_route_matches ("/_emulator/checkout/{id}", path, id, sizeof id))
        return s_page (conn, "checkout", id);
    if (strcmp (method, "GET") == 0 && s_route_matches ("/_emulator/3ds/{id}", path, id, sizeof id))
        return s_page (conn, "3ds", id);
    char *request_id = emu_new_id ("req_");
    emu_reply_t reply = {0, NULL, false};
    json_t *json = NULL;
    if (body->too_large)
        s_ctl_bad (&reply, "%s", "request body too large");
    else if (body->size > 0 && body->body[0] != '{') {
        /* a form body (curl -d k=v) is taken as an object of strings */
        ppm_form_t *form = NULL;
        if (ppm_form_decode (body->body, body->size, &form, NULL) != PPM_FORM_OK)
            s_ctl_bad (&reply, "%s", "the body is neither JSON nor a valid form");
        else {
            json = json_object ();
            for (size_t i = 0; i < ppm_form_size (form); i++)
                json_object_set_new (json, ppm_form_key (form, i),
                                     json_string (ppm_form_value (form, i)));
        }
        ppm_form_destroy (&form);
    } else if (body->size > 0) {
        json_error_t error;
        json = json_loadb (body->body, body->size, 0, &error);
        if (!json_is_object (json)) {
            json_decref (json);
            json = NULL;
            s_ctl_bad (&reply, "the body must be a JSON object (%s)", error.text);
        }
    }
    if (!reply.body) {
        if (!json)
            json = json_object ();
        const s_ctl_route_t *route = NULL;
        for (const s_ctl_route_t *r = s_ctl_routes; r->method && !route; r++)
            if (strcmp (r->method, method) == 0 &&
                s_route_matches (r->pattern, path, id, sizeof id))
                route = r;
        if (!route)
            emu_error (&reply, 404, "invalid_request_error", NULL, NULL,
                       "Unknown control endpoint %s %s (see tests/stripe-emulator/README.md)",
                       method, path);
        else {
            s_ctl_t ctl = {emu, conn, id, json};
            pthread_mutex_lock (&emu->lock);
            route->handler (&ctl, &reply);
            pthread_mutex_unlock (&emu->lock);
        }
    }
    enum MHD_Result rc = s_send (conn, reply.status, reply.body, request_id, NULL, 0);
    json_decref (reply.body);
    json_decref (json);
    free (request_id);
    return rc;
}

static enum MHD_Result
s_access (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
          const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    (void)version;
    emu_t *emu = cls;
    s_conn_t *body = *con_cls;
    if (!body) {
        body = calloc (1, sizeof (s_conn_t));
        if (!body)
            return MHD_NO;
        *con_cls = body;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        if (!body->too_large && body->size + *upload_data_size <= PPM_FORM_MAX_BODY) {
            char *grown = realloc (body->body, body->size + *upload_data_size + 1);
            if (!grown)
                return MHD_NO;
            body->body = grown;
            memcpy (body->body + body->size, upload_data, *upload_data_size);
            body->size += *upload_data_size;
            body->body[body->size] = '\0';
        } else
            body->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strncmp (url, "/_emulator/", 11) == 0)
        return s_control (emu, conn, method, url, body);
    return s_api (emu, conn, method, url, body);
}

static void
s_completed (void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    s_conn_t *body = *con_cls;
    if (body) {
        free (body->body);
        free (body);
        *con_cls = NULL;
    }
}

/* libmicrohttpd's own messages, minus the one every injected drop causes. */
static void
s_mhd_log (void *cls, const char *fmt, va_list args)
{
    (void)cls;
    char line[512];
    vsnprintf (line, sizeof line, fmt, args);
    if (strstr (line, "Application reported internal error"))
        return;
    fprintf (stderr, "stripe-emulator: %s", line);
}

/* --- configuration and main -------------------------------------------------- */

typedef struct {
    int64_t port;         /* PPM_EMULATOR_PORT / --port (0 = any free port) */
    char *bind;           /* PPM_EMULATOR_BIND / --bind */
    char *public_url;     /* PPM_EMULATOR_PUBLIC_URL / --public-url */
    char *version;        /* PPM_EMULATOR_STRIPE_VERSION */
    int64_t idem_ttl_s;   /* PPM_EMULATOR_IDEMPOTENCY_TTL_S */
    bool require_version; /* PPM_EMULATOR_REQUIRE_VERSION / --require-version */
} s_config_t;

static int
s_parse_int (const char *name, const char *text, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    if (errno || !end || end == text || *end || value < min || value > max) {
        fprintf (stderr,
                 "stripe-emulator: %s: '%s' is not an integer in %" PRId64 "..%" PRId64 "\n", name,
                 text, min, max);
        return -1;
    }
    *out = value;
    return 0;
}

static void
s_usage (void)
{
    printf (
        "usage: stripe-emulator [--port N] [--bind ADDR] [--public-url URL] "
        "[--require-version]\n\n"
        "  PPM_EMULATOR_PORT               port (default 12111; 0 = any free port)\n"
        "  PPM_EMULATOR_BIND               IPv4 address (default 127.0.0.1)\n"
        "  PPM_EMULATOR_PUBLIC_URL         base of checkout/3DS URLs (default http://BIND:PORT)\n"
        "  PPM_EMULATOR_STRIPE_VERSION     version when a request sends none (default %s)\n"
        "  PPM_EMULATOR_REQUIRE_VERSION    1: refuse requests without Stripe-Version\n"
        "  PPM_EMULATOR_IDEMPOTENCY_TTL_S  idempotency keys kept (default 86400)\n\n"
        "Prints \"stripe-emulator listening on http://ADDR:PORT\" once ready.\n"
        "See tests/stripe-emulator/README.md.\n",
        S_DEFAULT_VERSION);
}

static int
s_config (int argc, char **argv, s_config_t *config)
{
    config->port = S_DEFAULT_PORT;
    config->bind = strdup (S_DEFAULT_BIND);
    config->public_url = NULL;
    config->version = strdup (S_DEFAULT_VERSION);
    config->idem_ttl_s = 86400;
    config->require_version = false;
    const char *env = getenv ("PPM_EMULATOR_PORT");
    if (env && s_parse_int ("PPM_EMULATOR_PORT", env, 0, 65535, &config->port))
        return -1;
    if ((env = getenv ("PPM_EMULATOR_BIND"))) {
        free (config->bind);
        config->bind = strdup (env);
    }
    if ((env = getenv ("PPM_EMULATOR_PUBLIC_URL")))
        config->public_url = strdup (env);
    if ((env = getenv ("PPM_EMULATOR_STRIPE_VERSION"))) {
        free (config->version);
        config->version = strdup (env);
    }
    env = getenv ("PPM_EMULATOR_IDEMPOTENCY_TTL_S");
    if (env &&
        s_parse_int ("PPM_EMULATOR_IDEMPOTENCY_TTL_S", env, 1, 7 * 86400, &config->idem_ttl_s))
        return -1;
    env = getenv ("PPM_EMULATOR_REQUIRE_VERSION");
    config->require_version = env && (strcmp (env, "1") == 0 || strcmp (env, "true") == 0);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp (arg, "--help") == 0 || strcmp (arg, "-h") == 0) {
            s_usage ();
            exit (0);
        } else if (strcmp (arg, "--require-version") == 0)
            config->require_version = true;
        else if (strcmp (arg, "--port") == 0 && value) {
            if (s_parse_int ("--port", value, 0, 65535, &config->port))
                return -1;
            i++;
        } else if (strcmp (arg, "--bind") == 0 && value) {
            free (config->bind);
            config->bind = strdup (value);
            i++;
        } else if (strcmp (arg, "--public-url") == 0 && value) {
            free (config->public_url);
            config->public_url = strdup (value);
            i++;
        } else {
            fprintf (stderr, "stripe-emulator: unknown or incomplete argument '%s' (--help)\n",
                     arg);
            return -1;
        }
    }
    return 0;
}

int
main (int argc, char **argv)
{
    s_config_t config;
    if (s_config (argc, argv, &config))
        return 1;
    if (sodium_init () < 0) {
        fprintf (stderr, "stripe-emulator: libsodium failed to initialise\n");
        return 1;
    }
    curl_global_init (CURL_GLOBAL_DEFAULT);
    /* many concurrent connections: raise the descriptor limit */
    struct rlimit limit;
    if (getrlimit (RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit (RLIMIT_NOFILE, &limit);
    }
    /* signals are taken by sigtimedwait in this thread only */
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &signals, NULL);
    signal (SIGPIPE, SIG_IGN);

    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons ((uint16_t)config.port);
    if (inet_pton (AF_INET, config.bind, &addr.sin_addr) != 1) {
        fprintf (stderr, "stripe-emulator: PPM_EMULATOR_BIND: '%s' is not an IPv4 address\n",
                 config.bind);
        return 1;
    }
    emu_t emu;
    memset (&emu, 0, sizeof emu);
    pthread_mutex_init (&emu.lock, NULL);
    emu.accounts = zhash_new ();
    emu.key_links = json_object ();
    emu.requests = json_array ();
    emu.faults = json_array ();
    randombytes_buf (&emu.rng, sizeof emu.rng);
    emu.rng |= 1;
    emu.idem_ttl_s = config.idem_ttl_s;
    emu.default_version = config.version;
    emu.require_version = config.require_version;
    emu.webhook = emu_webhook_new ();

    struct MHD_Daemon *daemon = MHD_start_daemon (
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
            MHD_USE_ERROR_LOG,
        (uint16_t)config.port, NULL, NULL, s_access, &emu, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_NOTIFY_COMPLETED, s_completed, NULL, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, NULL,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)4000, MHD_OPTION_LISTEN_BACKLOG_SIZE,
        (unsigned int)2048, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
        MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256 * 1024), MHD_OPTION_END);
    if (!daemon) {
        fprintf (stderr, "stripe-emulator: cannot listen on %s:%" PRId64 " (%s)\n", config.bind,
                 config.port, strerror (errno));
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info (daemon, MHD_DAEMON_INFO_BIND_PORT);
    unsigned int port = info ? info->port : (unsigned int)config.port;
    char base[300];
    if (config.public_url)
        snprintf (base, sizeof base, "%s", config.public_url);
    else
        snprintf (base, sizeof base, "http://%s:%u", config.bind, port);
    emu.base_url = base;
    printf ("stripe-emulator listening on http://%s:%u\n", config.bind, port);
    fflush (stdout);
    fprintf (stderr,
             "stripe-emulator: test mode only; default Stripe-Version %s; idempotency keys kept "
             "%" PRId64 " s%s\n",
             config.version, config.idem_ttl_s,
             config.require_version ? "; Stripe-Version required" : "");

    while (true) {
        struct timespec tick = {1, 0};
        int sig = sigtimedwait (&signals, NULL, &tick);
        if (sig == SIGINT || sig == SIGTERM)
            break;
        pthread_mutex_lock (&emu.lock);
        emu_sweep (&emu);
        pthread_mutex_unlock (&emu.lock);
    }
    MHD_stop_daemon (daemon);
    emu_webhook_destroy (&emu.webhook);
    zhash_destroy (&emu.accounts);
    json_decref (emu.key_links);
    json_decref (emu.requests);
    json_decref (emu.faults);
    pthread_mutex_destroy (&emu.lock);
    free (config.bind);
    free (config.public_url);
    free (config.version);
    curl_global_cleanup ();
    return 0;
}
