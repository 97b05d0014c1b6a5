/*  gateway_http: libmicrohttpd server, static pages, and the suspended
    hand-off of API requests to the gateway actor (see gateway_http.h).

    Threads: libmicrohttpd's polling threads run the access handler, the
    content reader of event streams and the completion callback; the actor
    thread runs gateway_http_next and the gateway_req_respond* family. The
    two meet only in a request's mutex-guarded fields (answer, stream
    buffer, suspended/closed flags) and in the queue. A request has two
    references: libmicrohttpd's (dropped when the connection completes) and
    the actor's (dropped when it answers); the last one frees it. The
    connection is resumed only under the request's lock and only while it
    is open and suspended, so a resume never races a completion.
*/
#include "gateway_http.h"
#include "gateway_json.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ppm_clock.h"

#define S_MAX_HEADERS 64   /* more is 431 */
#define S_MAX_QUERY   32   /* more is 400 */
#define S_URL_MAX     8192 /* path and query, decoded; more is 414 */

typedef enum {
    S_READING = 0, /* headers and body arriving */
    S_QUEUED,      /* suspended, waiting for the actor */
    S_ANSWERED,    /* the actor's answer is ready to be queued */
    S_STREAMING,   /* an event stream is open */
    S_DONE         /* a response has been queued */
} s_state_t;

typedef struct {
    char *name;
    char *value;
} s_pair_t;

struct _gateway_req_t {
    pthread_mutex_t lock;            /* guards everything below marked (L) */
    int refs;                        /* (L) libmicrohttpd's + the actor's */
    bool closed;                     /* (L) the connection has completed */
    bool suspended;                  /* (L) libmicrohttpd's connection is suspended */
    s_state_t state;                 /* (L) */
    struct MHD_Connection *conn;     /* borrowed from libmicrohttpd */
    gateway_http_t *http;            /* the server */
    char method[16];                 /* request method */
    char *path;                      /* URL path, no query */
    s_pair_t headers[S_MAX_HEADERS]; /* request headers */
    size_t header_count;
    s_pair_t query[S_MAX_QUERY]; /* decoded query arguments */
    size_t query_count;
    bool query_overflow; /* more than S_MAX_QUERY arguments */
    char *body;          /* request body, NUL-terminated */
    size_t body_len;
    size_t body_cap;
    bool body_too_large; /* more than the cap arrived */
    int64_t started_us;  /* when the request was complete */
    /* answer, set by the actor (L) */
    int status;
    char *content_type;
    char *answer;
    size_t answer_len;
    s_pair_t out_headers[16];
    size_t out_header_count;
    /* stream (L) */
    char *stream_buf;
    size_t stream_len;
    bool stream_ended;
    bool stream_queued; /* the stream's response has been queued */
};

struct _gateway_http_t {
    struct MHD_Daemon *daemon;    /* libmicrohttpd */
    gateway_http_config_t config; /* copy; strings below are owned */
    char *web_root;               /* static pages directory or NULL */
    int port;                     /* bound port */
    int pipe_fds[2];              /* wake-up pipe: [0] for the actor */
    pthread_mutex_t queue_lock;   /* guards queue */
    gateway_req_t **queue;        /* requests waiting for the actor */
    size_t queue_len;
    size_t queue_cap;
    atomic_uint_fast64_t requests; /* requests seen */
};

/* ---- request lifetime ------------------------------------------------ */

static void
s_pairs_free (s_pair_t *pairs, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free (pairs[i].name);
        free (pairs[i].value);
    }
}

static void
s_req_free (gateway_req_t *req)
{
    pthread_mutex_destroy (&req->lock);
    free (req->path);
    s_pairs_free (req->headers, req->header_count);
    s_pairs_free (req->query, req->query_count);
    s_pairs_free (req->out_headers, req->out_header_count);
    free (req->body);
    free (req->content_type);
    free (req->answer);
    free (req->stream_buf);
    free (req);
}

/* Drops one reference; called with the lock held, releases it. */
static void
s_req_unref_locked (gateway_req_t *req)
{
    int refs = --req->refs;
    pthread_mutex_unlock (&req->lock);
    if (refs == 0)
        s_req_free (req);
}

/* Resumes the connection if it is suspended and open. Lock held. */
static void
s_req_wake_locked (gateway_req_t *req)
{
    if (req->suspended && !req->closed) {
        req->suspended = false;
        MHD_resume_connection (req->conn);
    }
}

/* ---- reading a request (libmicrohttpd threads) ------------------------ */

static enum MHD_Result
s_collect_header (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    gateway_req_t *req = cls;
    if (req->header_count >= S_MAX_HEADERS)
        return MHD_NO;
    req->headers[req->header_count].name = strdup (key);
    req->headers[req->header_count].value = strdup (value ? value : "");
    req->header_count++;
    return MHD_YES;
}

static enum MHD_Result
s_collect_query (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    gateway_req_t *req = cls;
    if (req->query_count >= S_MAX_QUERY) {
        req->query_overflow = true;
        return MHD_NO;
    }
    req->query[req->query_count].name = strdup (key);
    req->query[req->query_count].value = strdup (value ? value : "");
    req->query_count++;
    return MHD_YES;
}

static const char *
s_content_type_for (const char *path)
{
    const char *dot = strrchr (path, '.');
    if (!dot)
        return NULL;
    static const struct {
        const char *ext;
        const char *type;
    } types[] = {{".html", "text/html; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},
                 {".js", "text/javascript; charset=utf-8"},
                 {".json", "application/json"},
                 {".svg", "image/svg+xml"},
                 {".png", "image/png"},
                 {".ico", "image/x-icon"},
                 {".txt", "text/plain; charset=utf-8"},
                 {NULL, NULL}};
    for (size_t i = 0; types[i].ext; i++)
        if (strcmp (dot, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

static void
s_security_headers (struct MHD_Response *response)
{
    MHD_add_response_header (response, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header (response, "Referrer-Policy", "no-referrer");
}

static enum MHD_Result
s_queue_text (struct MHD_Connection *conn, int status, const char *type, const char *body)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer (strlen (body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!response)
        return MHD_NO;
    MHD_add_response_header (response, "Content-Type", type);
    s_security_headers (response);
    enum MHD_Result rc = MHD_queue_response (conn, (unsigned)status, response);
    MHD_destroy_response (response);
    return rc;
}

/* Queues SPEC §5's error body; http 0 = the status of code. */
static enum MHD_Result
s_queue_error (struct MHD_Connection *conn, int http, ppm_code_t code, const char *message)
{
    ppm_status_t *status = ppm_status_new (code, "%s", message);
    json_t *json = gateway_error_json (status);
    char *text = json_dumps (json, JSON_COMPACT);
    if (http == 0)
        http = gateway_http_status_for (status);
    enum MHD_Result rc = s_queue_text (conn, http, "application/json", text ? text : "{}");
    free (text);
    json_decref (json);
    ppm_status_destroy (&status);
    return rc;
}

/* Sizes of a request's head, summed by s_measure. */
typedef struct {
    size_t bytes; /* names and values, with ": " and CRLF */
    size_t count;
} s_head_size_t;

static enum MHD_Result
s_measure (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    s_head_size_t *size = cls;
    size->bytes += strlen (key) + (value ? strlen (value) : 0) + 4;
    size->count++;
    return MHD_YES;
}

/* Refuses a request whose head is over the caps, with SPEC §5's error
   body: a URL over S_URL_MAX is 414; more than S_MAX_HEADERS headers, or
   more than header_max bytes of them, 431. (A head that does not even fit
   in the connection's memory, twice header_max, is refused by
   libmicrohttpd itself, with its own page.) Returns true when it has
   answered, with *rc the answer's result. */
static bool
s_head_too_large (gateway_http_t *self, struct MHD_Connection *conn, const char *url,
                  enum MHD_Result *rc)
{
    s_head_size_t query = {0, 0};
    s_head_size_t headers = {0, 0};
    MHD_get_connection_values (conn, MHD_GET_ARGUMENT_KIND, s_measure, &query);
    MHD_get_connection_values (conn, MHD_HEADER_KIND, s_measure, &headers);
    char text[96];
    if (strlen (url) + query.bytes > S_URL_MAX) {
        snprintf (text, sizeof text, "the URL is too long (limit %d bytes)", S_URL_MAX);
        *rc = s_queue_error (conn, 414, PPM_RESOURCE_EXHAUSTED, text);
        return true;
    }
    if (headers.count > S_MAX_HEADERS) {
        snprintf (text, sizeof text, "too many headers (limit %d)", S_MAX_HEADERS);
        *rc = s_queue_error (conn, 431, PPM_RESOURCE_EXHAUSTED, text);
        return true;
    }
    if (headers.bytes > self->config.header_max) {
        snprintf (text, sizeof text, "the headers are too large (limit %zu bytes)",
                  self->config.header_max);
        *rc = s_queue_error (conn, 431, PPM_RESOURCE_EXHAUSTED, text);
        return true;
    }
    return false;
}

/* Whether the request says its body is JSON: Content-Type
   application/json, in any case, with or without parameters. */
static bool
s_json_body (struct MHD_Connection *conn)
{
    const char *type = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Content-Type");
    if (!type)
        return false;
    while (*type == ' ' || *type == '\t')
        type++;
    size_t n = strlen ("application/json");
    if (strncasecmp (type, "application/json", n) != 0)
        return false;
    return type[n] == '\0' || type[n] == ';' || type[n] == ' ' || type[n] == '\t';
}

/* libmicrohttpd's %HH decoding of the path and the query arguments, except
   that a string with %00 is left as it came: decoded, the NUL would cut
   "/v1/sessions/ID%00junk" to the path of session ID and
   "/admin.html%00.png" to a page. Left encoded, its '%' makes every id
   and page name invalid. */
static size_t
s_unescape (void *cls, struct MHD_Connection *conn, char *text)
{
    (void)cls;
    (void)conn;
    if (strstr (text, "%00"))
        return strlen (text);
    return MHD_http_unescape (text);
}

/* Serves a static page; returns MHD_NO to close on a hard error. */
static enum MHD_Result
s_serve_static (gateway_http_t *self, struct MHD_Connection *conn, const char *url)
{
    char rel[256];
    if (strcmp (url, "/") == 0)
        url = "/index.html";
    size_t len = strlen (url);
    bool ok =
        len > 1 && len < sizeof rel && url[0] == '/' && !strstr (url, "..") && !strstr (url, "//");
    for (size_t i = 0; ok && i < len; i++) {
        char c = url[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '/' || c == '.' || c == '-' || c == '_';
    }
    const char *type = ok ? s_content_type_for (url) : NULL;
    if (!ok || !type || !self->web_root)
        return s_queue_error (conn, 0, PPM_NOT_FOUND, "no such page");
    snprintf (rel, sizeof rel, "%s", url);
    char full[1024];
    snprintf (full, sizeof full, "%s%s", self->web_root, rel);
    int fd = open (full, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat (fd, &st) != 0 || !S_ISREG (st.st_mode)) {
        if (fd >= 0)
            close (fd);
        return s_queue_error (conn, 0, PPM_NOT_FOUND, "no such page");
    }
    struct MHD_Response *response = MHD_create_response_from_fd ((uint64_t)st.st_size, fd);
    if (!response) {
        close (fd);
        return MHD_NO;
    }
    MHD_add_response_header (response, "Content-Type", type);
    MHD_add_response_header (response, "Cache-Control", "no-cache");
    MHD_add_response_header (
        response, "Content-Security-Policy",
        "default-src 'self'; script-src 'self' https://js.stripe.com; frame-src "
        "https://js.stripe.com; connect-src 'self' https://api.stripe.com; img-src 'self' data: "
        "https://*.stripe.com; style-src 'self' 'unsafe-inline'");
    s_security_headers (response);
    enum MHD_Result rc = MHD_queue_response (conn, MHD_HTTP_OK, response);
    MHD_destroy_response (response);
    return rc;
}

static ssize_t
s_stream_reader (void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    gateway_req_t *req = cls;
    pthread_mutex_lock (&req->lock);
    ssize_t n = 0;
    if (req->stream_len > 0) {
        size_t take = req->stream_len < max ? req->stream_len : max;
        memcpy (buf, req->stream_buf, take);
        memmove (req->stream_buf, req->stream_buf + take, req->stream_len - take);
        req->stream_len -= take;
        n = (ssize_t)take;
    } else if (req->stream_ended) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing to send: hold no thread until the actor writes. */
        req->suspended = true;
        MHD_suspend_connection (req->conn);
        n = 0;
    }
    pthread_mutex_unlock (&req->lock);
    return n;
}

/* Queues the actor's answer (or opens the stream). Lock held. */
static enum MHD_Result
s_queue_answer_locked (gateway_req_t *req)
{
    struct MHD_Response *response;
    if (req->state == S_STREAMING) {
        response =
            MHD_create_response_from_callback (MHD_SIZE_UNKNOWN, 4096, s_stream_reader, req, NULL);
        if (!response)
            return MHD_NO;
        MHD_add_response_header (response, "Content-Type", "text/event-stream");
        MHD_add_response_header (response, "Cache-Control", "no-store");
        MHD_add_response_header (response, "X-Accel-Buffering", "no");
    } else {
        response =
            MHD_create_response_from_buffer (req->answer_len, req->answer, MHD_RESPMEM_MUST_COPY);
        if (!response)
            return MHD_NO;
        if (req->content_type)
            MHD_add_response_header (response, "Content-Type", req->content_type);
        req->state = S_DONE;
    }
    for (size_t i = 0; i < req->out_header_count; i++)
        MHD_add_response_header (response, req->out_headers[i].name, req->out_headers[i].value);
    s_security_headers (response);
    MHD_add_response_header (response, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response (req->conn, (unsigned)req->status, response);
    MHD_destroy_response (response);
    return rc;
}

static bool
s_is_api_path (const char *url)
{
    return strncmp (url, "/v1/", 4) == 0 || strcmp (url, "/healthz") == 0 ||
           strcmp (url, "/readyz") == 0 || strcmp (url, "/metrics") == 0;
}

static enum MHD_Result
s_access (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
          const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    (void)version;
    gateway_http_t *self = cls;
    gateway_req_t *req = *con_cls;

    if (!req) {
        atomic_fetch_add (&self->requests, 1);
        enum MHD_Result refused = MHD_YES;
        if (s_head_too_large (self, conn, url, &refused))
            return refused;
        if (!s_is_api_path (url)) {
            if (strcmp (method, "GET") != 0 && strcmp (method, "HEAD") != 0)
                return s_queue_error (conn, 0, PPM_NOT_FOUND, "no such page");
            return s_serve_static (self, conn, url);
        }
        req = calloc (1, sizeof *req);
        if (!req)
            return MHD_NO;
        pthread_mutex_init (&req->lock, NULL);
        req->refs = 1; /* libmicrohttpd's, dropped in s_completed */
        req->conn = conn;
        req->http = self;
        snprintf (req->method, sizeof req->method, "%s", method);
        req->path = strdup (url);
        MHD_get_connection_values (conn, MHD_HEADER_KIND, s_collect_header, req);
        MHD_get_connection_values (conn, MHD_GET_ARGUMENT_KIND, s_collect_query, req);
        *con_cls = req;
        const char *length = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Content-Length");
        if (length) {
            char *end = NULL;
            unsigned long long n = strtoull (length, &end, 10);
            if (!end || *end || n > self->config.body_max) {
                req->state = S_DONE;
                char text[96];
                snprintf (text, sizeof text, "request body is too large (limit %zu bytes)",
                          self->config.body_max);
                return s_queue_error (conn, 413, PPM_RESOURCE_EXHAUSTED, text);
            }
        }
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (req->body_too_large)
            return MHD_YES;
        if (req->body_len + n > self->config.body_max) {
            req->body_too_large = true;
            return MHD_YES;
        }
        if (req->body_len + n + 1 > req->body_cap) {
            size_t cap = req->body_cap ? req->body_cap * 2 : 1024;
            while (cap < req->body_len + n + 1)
                cap *= 2;
            char *grown = realloc (req->body, cap);
            if (!grown)
                return MHD_NO;
            req->body = grown;
            req->body_cap = cap;
        }
        memcpy (req->body + req->body_len, upload_data, n);
        req->body_len += n;
        req->body[req->body_len] = '\0';
        return MHD_YES;
    }

    pthread_mutex_lock (&req->lock);
    enum MHD_Result rc = MHD_YES;
    if (req->state == S_READING) {
        if (req->body_too_large) {
            req->state = S_DONE;
            char text[96];
            snprintf (text, sizeof text, "request body is too large (limit %zu bytes)",
                      self->config.body_max);
            rc = s_queue_error (conn, 413, PPM_RESOURCE_EXHAUSTED, text);
        } else if (req->query_overflow) {
            req->state = S_DONE;
            rc = s_queue_error (conn, 0, PPM_INVALID_ARGUMENT, "too many query parameters");
        } else if (req->body_len > 0 && !s_json_body (conn)) {
            req->state = S_DONE;
            rc = s_queue_error (conn, 415, PPM_INVALID_ARGUMENT,
                                "the body must be JSON, sent with Content-Type: application/json");
        } else {
            if (!req->body) {
                req->body = strdup ("");
                req->body_cap = 1;
            }
            req->started_us = ppm_clock_real_mono_us ();
            req->state = S_QUEUED;
            req->refs++; /* the actor's */
            req->suspended = true;
            MHD_suspend_connection (conn);
            pthread_mutex_lock (&self->queue_lock);
            if (self->queue_len == self->queue_cap) {
                size_t cap = self->queue_cap ? self->queue_cap * 2 : 64;
                gateway_req_t **grown = realloc (self->queue, cap * sizeof *grown);
                if (grown) {
                    self->queue = grown;
                    self->queue_cap = cap;
                }
            }
            bool queued = self->queue_len < self->queue_cap;
            bool was_empty = self->queue_len == 0;
            if (queued)
                self->queue[self->queue_len++] = req;
            pthread_mutex_unlock (&self->queue_lock);
            if (!queued) {
                /* Out of memory: answer at once. */
                req->refs--;
                req->suspended = false;
                MHD_resume_connection (conn);
                req->state = S_DONE;
                rc = s_queue_error (conn, 0, PPM_UNAVAILABLE, "gateway is overloaded");
            } else if (was_empty) {
                char one = 1;
                ssize_t w = write (self->pipe_fds[1], &one, 1);
                (void)w; /* a full pipe already wakes the actor */
            }
        }
    } else if (req->state == S_ANSWERED || req->state == S_STREAMING) {
        if (req->state == S_ANSWERED || !req->stream_queued) {
            rc = s_queue_answer_locked (req);
            if (req->state == S_STREAMING)
                req->stream_queued = true;
        }
    }
    pthread_mutex_unlock (&req->lock);
    return rc;
}

static void
s_completed (void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    gateway_req_t *req = *con_cls;
    if (!req)
        return;
    *con_cls = NULL;
    pthread_mutex_lock (&req->lock);
    req->closed = true;
    s_req_unref_locked (req);
}

static void s_log (gateway_http_t *self, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static void
s_log (gateway_http_t *self, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start (ap, fmt);
    vsnprintf (line, sizeof line, fmt, ap);
    va_end (ap);
    if (self->config.log)
        self->config.log (line);
    else
        fprintf (stderr, "gateway http: %s\n", line);
}

static void
s_mhd_log (void *cls, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf (line, sizeof line, fmt, ap);
    size_t len = strlen (line);
    while (len > 0 && line[len - 1] == '\n')
        line[--len] = '\0';
    s_log (cls, "%s", line);
}

/* ---- server ---------------------------------------------------------- */

gateway_http_t *
gateway_http_new (const gateway_http_config_t *config)
{
    gateway_http_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    if (self->config.header_max == 0)
        self->config.header_max = 16384;
    self->config.address = NULL;
    self->config.web_root = NULL;
    self->web_root = config->web_root ? strdup (config->web_root) : NULL;
    pthread_mutex_init (&self->queue_lock, NULL);
    if (pipe2 (self->pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        s_log (self, "pipe: %s", strerror (errno));
        free (self->web_root);
        pthread_mutex_destroy (&self->queue_lock);
        free (self);
        return NULL;
    }

    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons ((uint16_t)config->port);
    if (inet_pton (AF_INET, config->address ? config->address : "127.0.0.1", &addr.sin_addr) != 1) {
        s_log (self, "bad address %s", config->address);
        gateway_http_destroy (&self);
        return NULL;
    }
    /* a pool of 1 is no pool: libmicrohttpd wants 0 then */
    unsigned int threads = config->threads > 1 ? (unsigned)config->threads : 0;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME |
                         MHD_USE_ERROR_LOG;
    self->daemon = MHD_start_daemon (
        flags, 0, NULL, NULL, s_access, self, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, self,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_NOTIFY_COMPLETED, s_completed, self, MHD_OPTION_UNESCAPE_CALLBACK, s_unescape,
        NULL, MHD_OPTION_CONNECTION_MEMORY_LIMIT, 2 * self->config.header_max,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)30, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)4000, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)1024, MHD_OPTION_END);
    if (!self->daemon) {
        s_log (self, "cannot listen on %s:%d", config->address ? config->address : "127.0.0.1",
               config->port);
        gateway_http_destroy (&self);
        return NULL;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info (self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info ? info->port : config->port;
    return self;
}

void
gateway_http_destroy (gateway_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gateway_http_t *self = *self_p;
    /* Answer what nobody took, so that no connection stays suspended. */
    gateway_req_t *req;
    while ((req = gateway_http_next (self)))
        gateway_req_respond_error (&req, PPM_UNAVAILABLE, "gateway is stopping");
    if (self->daemon) {
        /* Stop accepting, then let MHD's thread send what was just resumed
           (bounded: at most 1 s) before the connections are closed. */
        MHD_quiesce_daemon (self->daemon);
        for (int waited = 0; waited < 1000; waited += 5) {
            const union MHD_DaemonInfo *info =
                MHD_get_daemon_info (self->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
            if (!info || info->num_connections == 0)
                break;
            usleep (5 * 1000);
        }
        MHD_stop_daemon (self->daemon);
    }
    if (self->pipe_fds[0] > 0)
        close (self->pipe_fds[0]);
    if (self->pipe_fds[1] > 0)
        close (self->pipe_fds[1]);
    pthread_mutex_destroy (&self->queue_lock);
    free (self->queue);
    free (self->web_root);
    free (self);
    *self_p = NULL;
}

int
gateway_http_port (gateway_http_t *self)
{
    return self->port;
}

int
gateway_http_fd (gateway_http_t *self)
{
    return self->pipe_fds[0];
}

uint64_t
gateway_http_requests (gateway_http_t *self)
{
    return atomic_load (&self->requests);
}

gateway_req_t *
gateway_http_next (gateway_http_t *self)
{
    char drain[64];
    while (read (self->pipe_fds[0], drain, sizeof drain) > 0)
        ;
    gateway_req_t *req = NULL;
    pthread_mutex_lock (&self->queue_lock);
    if (self->queue_len > 0) {
        req = self->queue[0];
        memmove (self->queue, self->queue + 1, (self->queue_len - 1) * sizeof *self->queue);
        self->queue_len--;
    }
    pthread_mutex_unlock (&self->queue_lock);
    return req;
}

/* ---- request accessors ----------------------------------------------- */

const char *
gateway_req_method (const gateway_req_t *req)
{
    return req->method;
}

const char *
gateway_req_path (const gateway_req_t *req)
{
    return req->path;
}

const char *
gateway_req_header (const gateway_req_t *req, const char *name)
{
    for (size_t i = 0; i < req->header_count; i++)
        if (strcasecmp (req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

const char *
gateway_req_query (const gateway_req_t *req, const char *name)
{
    for (size_t i = 0; i < req->query_count; i++)
        if (strcmp (req->query[i].name, name) == 0)
            return req->query[i].value;
    return NULL;
}

size_t
gateway_req_query_count (const gateway_req_t *req)
{
    return req->query_count;
}

const char *
gateway_req_query_name (const gateway_req_t *req, size_t index)
{
    return index < req->query_count ? req->query[index].name : NULL;
}

const char *
gateway_req_body (const gateway_req_t *req, size_t *len)
{
    if (len)
        *len = req->body_len;
    return req->body ? req->body : "";
}

int64_t
gateway_req_started_us (const gateway_req_t *req)
{
    return req->started_us;
}

bool
gateway_req_closed (gateway_req_t *req)
{
    pthread_mutex_lock (&req->lock);
    bool closed = req->closed;
    pthread_mutex_unlock (&req->lock);
    return closed;
}

/* ---- answers (actor thread) ------------------------------------------ */

void
gateway_req_add_header (gateway_req_t *req, const char *name, const char *value)
{
    pthread_mutex_lock (&req->lock);
    size_t max = sizeof req->out_headers / sizeof req->out_headers[0];
    if (req->out_header_count < max) {
        req->out_headers[req->out_header_count].name = strdup (name);
        req->out_headers[req->out_header_count].value = strdup (value);
        req->out_header_count++;
    }
    pthread_mutex_unlock (&req->lock);
}

void
gateway_req_respond (gateway_req_t **req_p, int status, const char *content_type, const char *body,
                     size_t len)
{
    gateway_req_t *req = *req_p;
    *req_p = NULL;
    if (!req)
        return;
    pthread_mutex_lock (&req->lock);
    if (!req->closed && req->state == S_QUEUED) {
        req->status = status;
        req->content_type = content_type ? strdup (content_type) : NULL;
        req->answer = malloc (len + 1);
        if (req->answer) {
            memcpy (req->answer, body, len);
            req->answer[len] = '\0';
            req->answer_len = len;
        }
        req->state = S_ANSWERED;
        s_req_wake_locked (req);
    }
    s_req_unref_locked (req);
}

void
gateway_req_respond_json (gateway_req_t **req_p, int status, json_t *json)
{
    char *text = json ? json_dumps (json, JSON_COMPACT) : NULL;
    json_decref (json);
    if (!text) {
        gateway_req_respond_error (req_p, PPM_INTERNAL, "cannot encode the answer");
        return;
    }
    gateway_req_respond (req_p, status, "application/json", text, strlen (text));
    free (text);
}

void
gateway_req_respond_status (gateway_req_t **req_p, const ppm_status_t *status)
{
    int http = gateway_http_status_for (status);
    if (http == 503 || http == 429) {
        char seconds[16];
        snprintf (seconds, sizeof seconds, "%d", GATEWAY_RETRY_AFTER_S);
        gateway_req_add_header (*req_p, "Retry-After", seconds);
    }
    if (http == 401)
        gateway_req_add_header (*req_p, "WWW-Authenticate", "Bearer");
    gateway_req_respond_json (req_p, http, gateway_error_json (status));
}

void
gateway_req_respond_error (gateway_req_t **req_p, ppm_code_t code, const char *message)
{
    ppm_status_t *status = ppm_status_new (code, "%s", message);
    gateway_req_respond_status (req_p, status);
    ppm_status_destroy (&status);
}

void
gateway_req_stream_start (gateway_req_t *req)
{
    pthread_mutex_lock (&req->lock);
    if (!req->closed && req->state == S_QUEUED) {
        req->status = 200;
        req->state = S_STREAMING;
        s_req_wake_locked (req);
    }
    pthread_mutex_unlock (&req->lock);
}

int
gateway_req_stream_write (gateway_req_t *req, const char *data, size_t len)
{
    int rc = 0;
    pthread_mutex_lock (&req->lock);
    size_t max = req->http->config.stream_max ? req->http->config.stream_max : 65536;
    if (req->closed || req->state != S_STREAMING || req->stream_ended ||
        req->stream_len + len > max) {
        rc = -1;
    } else {
        char *grown = realloc (req->stream_buf, req->stream_len + len + 1);
        if (!grown) {
            rc = -1;
        } else {
            req->stream_buf = grown;
            memcpy (req->stream_buf + req->stream_len, data, len);
            req->stream_len += len;
            /* Only a queued stream response has a reader to wake. */
            if (req->stream_queued)
                s_req_wake_locked (req);
        }
    }
    pthread_mutex_unlock (&req->lock);
    return rc;
}

void
gateway_req_stream_end (gateway_req_t **req_p)
{
    gateway_req_t *req = *req_p;
    *req_p = NULL;
    if (!req)
        return;
    pthread_mutex_lock (&req->lock);
    req->stream_ended = true;
    if (req->state == S_QUEUED && !req->closed) {
        /* Never started: answer with an empty 204 instead. */
        req->status = 204;
        req->state = S_ANSWERED;
    }
    s_req_wake_locked (req);
    s_req_unref_locked (req);
}
