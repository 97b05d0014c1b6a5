/*  ppm_redis: see ppm_redis.h. Built on hiredis's blocking context, but
    the reply is read with our own loop (redisBufferRead +
    redisGetReplyFromReader) so that the bytes read for one reply can be
    counted and capped before hiredis buffers more of them.
*/
#include "ppm_redis.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define S_ERROR_MAX       512
#define S_HOST_MAX        256
#define S_SECRET_MAX      256
#define S_BACKOFF_MIN_MS  100
#define S_BACKOFF_MAX_MS  5000
#define S_VARARGS_MAX     64
#define S_DEFAULT_TIMEOUT 2000
#define S_DEFAULT_MAX     (1024 * 1024)

struct _ppm_redis_t {
    char host[S_HOST_MAX];           /* host name or address */
    int port;                        /* TCP port */
    int db;                          /* database index selected after connecting */
    char user[S_SECRET_MAX];         /* ACL user ("" = default) */
    char password[S_SECRET_MAX];     /* "" = no AUTH */
    struct timeval connect_tv;       /* connect timeout */
    struct timeval command_tv;       /* read/write timeout per command */
    size_t max_reply;                /* cap on one reply's wire bytes */
    redisContext *ctx;               /* NULL when disconnected */
    int64_t backoff_ms;              /* current back-off; 0 after a success */
    int64_t retry_at_ms;             /* no connection attempt before this (mono) */
    uint64_t connects;               /* successful connections so far */
    char error[S_ERROR_MAX];         /* last failure's text */
    char connect_error[S_ERROR_MAX]; /* why the last connection attempt failed */
};

struct _ppm_redis_script_t {
    char *source; /* Lua source */
    char sha[41]; /* SHA1 hex from SCRIPT LOAD; "" until loaded */
};

static int64_t
s_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval
s_tv (int64_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

static void
s_set_error (ppm_redis_t *self, const char *what, const char *detail)
{
    snprintf (self->error, sizeof self->error, "%s%s%s", what, detail ? ": " : "",
              detail ? detail : "");
}

static void
s_drop (ppm_redis_t *self)
{
    if (self->ctx) {
        redisFree (self->ctx);
        self->ctx = NULL;
    }
}

/* Copies [start, end) into out (size bytes); false when it does not fit. */
static bool
s_copy_part (char *out, size_t size, const char *start, const char *end)
{
    size_t len = (size_t)(end - start);
    if (len >= size)
        return false;
    memcpy (out, start, len);
    out[len] = '\0';
    return true;
}

static bool
s_parse_number (const char *start, const char *end, long min, long max, long *value)
{
    if (start == end || end - start > 10)
        return false;
    long parsed = 0;
    for (const char *p = start; p < end; p++) {
        if (*p < '0' || *p > '9')
            return false;
        parsed = parsed * 10 + (*p - '0');
    }
    if (parsed < min || parsed > max)
        return false;
    *value = parsed;
    return true;
}

/* redis://[[user]:password@]host[:port][/db] */
static int
s_parse_url (ppm_redis_t *self, const char *url)
{
    const char *prefix = "redis://";
    if (strncmp (url, prefix, strlen (prefix)) != 0)
        return -1;
    const char *p = url + strlen (prefix);
    const char *end = p + strlen (p);
    const char *slash = memchr (p, '/', (size_t)(end - p));
    const char *authority_end = slash ? slash : end;
    const char *at = NULL;
    for (const char *q = p; q < authority_end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr (p, ':', (size_t)(at - p));
        if (!colon)
            return -1;
        if (!s_copy_part (self->user, sizeof self->user, p, colon) ||
            !s_copy_part (self->password, sizeof self->password, colon + 1, at))
            return -1;
        p = at + 1;
    }
    const char *host_end;
    const char *port_start = NULL;
    if (*p == '[') {
        const char *close = memchr (p, ']', (size_t)(authority_end - p));
        if (!close)
            return -1;
        if (!s_copy_part (self->host, sizeof self->host, p + 1, close))
            return -1;
        host_end = close + 1;
        if (host_end < authority_end) {
            if (*host_end != ':')
                return -1;
            port_start = host_end + 1;
        }
    } else {
        const char *colon = memchr (p, ':', (size_t)(authority_end - p));
        host_end = colon ? colon : authority_end;
        if (!s_copy_part (self->host, sizeof self->host, p, host_end))
            return -1;
        if (colon)
            port_start = colon + 1;
    }
    if (self->host[0] == '\0')
        return -1;
    long port = 6379;
    if (port_start && !s_parse_number (port_start, authority_end, 1, 65535, &port))
        return -1;
    self->port = (int)port;
    long db = 0;
    if (slash && slash + 1 < end && !s_parse_number (slash + 1, end, 0, 1000000, &db))
        return -1;
    self->db = (int)db;
    return 0;
}

static ppm_redis_result_t s_roundtrip (ppm_redis_t *self, int argc, const char **argv,
                                       const size_t *argvlen, redisReply **reply_p);

/* Connects when disconnected, unless backing off. BLOCKS (bounded). */
static int
s_ensure_connected (ppm_redis_t *self)
{
    if (self->ctx)
        return 0;
    int64_t wait_ms = self->retry_at_ms - s_mono_ms ();
    if (wait_ms > 0) {
        snprintf (self->error, sizeof self->error,
                  "Redis unavailable, next attempt in %d ms: %.400s", (int)wait_ms,
                  self->connect_error);
        return -1;
    }
    self->ctx = redisConnectWithTimeout (self->host, self->port, self->connect_tv);
    bool ok = self->ctx && self->ctx->err == 0;
    if (!ok)
        s_set_error (self, "Redis connect failed", self->ctx ? self->ctx->errstr : "out of memory");
    if (ok && redisSetTimeout (self->ctx, self->command_tv) != REDIS_OK) {
        s_set_error (self, "Redis set timeout failed", self->ctx->errstr);
        ok = false;
    }
    if (ok && self->password[0]) {
        const char *auth_user[] = {"AUTH", self->user, self->password};
        const char *auth[] = {"AUTH", self->password};
        ppm_redis_result_t result = self->user[0] ? s_roundtrip (self, 3, auth_user, NULL, NULL)
                                                  : s_roundtrip (self, 2, auth, NULL, NULL);
        ok = result == PPM_REDIS_OK;
    }
    if (ok && self->db != 0) {
        char db[16];
        snprintf (db, sizeof db, "%d", self->db);
        const char *select[] = {"SELECT", db};
        ok = s_roundtrip (self, 2, select, NULL, NULL) == PPM_REDIS_OK;
    }
    if (!ok) {
        snprintf (self->connect_error, sizeof self->connect_error, "%s", self->error);
        s_drop (self);
        self->backoff_ms = self->backoff_ms ? self->backoff_ms * 2 : S_BACKOFF_MIN_MS;
        if (self->backoff_ms > S_BACKOFF_MAX_MS)
            self->backoff_ms = S_BACKOFF_MAX_MS;
        self->retry_at_ms = s_mono_ms () + self->backoff_ms;
        return -1;
    }
    self->backoff_ms = 0;
    self->retry_at_ms = 0;
    self->connects++;
    return 0;
}

/* Non-blocking: an idle connection has nothing to read, so anything
   readable (EOF, error, stray bytes) means it is unusable. */
static void
s_check_alive (ppm_redis_t *self)
{
    if (!self->ctx)
        return;
    struct pollfd pfd = {.fd = self->ctx->fd, .events = POLLIN};
    int rc = poll (&pfd, 1, 0);
    if (rc == 0)
        return;
    if (rc < 0 && errno == EINTR)
        return;
    s_drop (self);
}

static ppm_redis_result_t
s_roundtrip (ppm_redis_t *self, int argc, const char **argv, const size_t *argvlen,
             redisReply **reply_p)
{
    redisContext *c = self->ctx;
    if (redisAppendCommandArgv (c, argc, argv, argvlen) != REDIS_OK) {
        s_set_error (self, "Redis command failed", c->errstr);
        s_drop (self);
        return PPM_REDIS_UNAVAILABLE;
    }
    int done = 0;
    while (!done) {
        if (redisBufferWrite (c, &done) != REDIS_OK) {
            s_set_error (self, "Redis write failed", c->errstr);
            s_drop (self);
            return PPM_REDIS_UNAVAILABLE;
        }
    }
    void *reply = NULL;
    size_t received = 0;
    if (redisGetReplyFromReader (c, &reply) != REDIS_OK) {
        s_set_error (self, "Redis protocol error", c->errstr);
        s_drop (self);
        return PPM_REDIS_UNAVAILABLE;
    }
    while (!reply) {
        size_t before = c->reader->len;
        if (redisBufferRead (c) != REDIS_OK) {
            bool timeout = c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK);
            s_set_error (self, timeout ? "Redis command timed out" : "Redis read failed",
                         c->errstr);
            s_drop (self);
            return PPM_REDIS_UNAVAILABLE;
        }
        received += c->reader->len - before;
        if (received > self->max_reply) {
            char detail[64];
            snprintf (detail, sizeof detail, "more than %zu bytes", self->max_reply);
            s_set_error (self, "Redis reply too large", detail);
            s_drop (self);
            return PPM_REDIS_TOO_LARGE;
        }
        if (redisGetReplyFromReader (c, &reply) != REDIS_OK) {
            s_set_error (self, "Redis protocol error", c->errstr);
            s_drop (self);
            return PPM_REDIS_UNAVAILABLE;
        }
    }
    redisReply *r = reply;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf (self->error, sizeof self->error, "%.*s", (int)r->len, r->str);
        freeReplyObject (r);
        return PPM_REDIS_ERROR_REPLY;
    }
    if (reply_p)
        *reply_p = r;
    else
        freeReplyObject (r);
    return PPM_REDIS_OK;
}

/* Parses the URL and options into a disconnected object; NULL on a bad URL. */
static ppm_redis_t *
s_config_new (const char *url, const ppm_redis_options_t *options, const char **error)
{
    ppm_redis_t *self = calloc (1, sizeof (ppm_redis_t));
    assert (self);
    if (!url || s_parse_url (self, url)) {
        if (error)
            *error = "Redis URL: expected redis://[[user]:password@]host[:port][/db]";
        free (self);
        return NULL;
    }
    ppm_redis_options_t opts = {0};
    if (options)
        opts = *options;
    self->connect_tv =
        s_tv (opts.connect_timeout_ms > 0 ? opts.connect_timeout_ms : S_DEFAULT_TIMEOUT);
    self->command_tv =
        s_tv (opts.command_timeout_ms > 0 ? opts.command_timeout_ms : S_DEFAULT_TIMEOUT);
    self->max_reply = opts.max_reply_bytes > 0 ? opts.max_reply_bytes : S_DEFAULT_MAX;
    return self;
}

ppm_redis_t *
ppm_redis_new (const char *url, const ppm_redis_options_t *options, const char **error)
{
    ppm_redis_t *self = s_config_new (url, options, error);
    if (self)
        s_ensure_connected (self);
    return self;
}

void
ppm_redis_destroy (ppm_redis_t **self_p)
{
    assert (self_p);
    ppm_redis_t *self = *self_p;
    if (!self)
        return;
    s_drop (self);
    /* Do not leave the password in freed memory. */
    memset (self, 0, sizeof *self);
    free (self);
    *self_p = NULL;
}

ppm_redis_result_t
ppm_redis_command_argv (ppm_redis_t *self, int argc, const char **argv, const size_t *argvlen,
                        redisReply **reply_p)
{
    assert (self);
    if (reply_p)
        *reply_p = NULL;
    self->error[0] = '\0';
    if (argc < 1 || !argv) {
        s_set_error (self, "Redis command: no arguments", NULL);
        return PPM_REDIS_INVALID;
    }
    for (int i = 0; i < argc; i++)
        if (!argv[i]) {
            s_set_error (self, "Redis command: NULL argument", NULL);
            return PPM_REDIS_INVALID;
        }
    s_check_alive (self);
    if (s_ensure_connected (self))
        return PPM_REDIS_UNAVAILABLE;
    return s_roundtrip (self, argc, argv, argvlen, reply_p);
}

ppm_redis_result_t
ppm_redis_command_strv (ppm_redis_t *self, redisReply **reply_p, const char *const *argv,
                        size_t argc)
{
    if (argc > S_VARARGS_MAX) {
        if (reply_p)
            *reply_p = NULL;
        s_set_error (self, "Redis command: too many arguments", NULL);
        return PPM_REDIS_INVALID;
    }
    return ppm_redis_command_argv (self, (int)argc, (const char **)argv, NULL, reply_p);
}

ppm_redis_script_t *
ppm_redis_script_new (const char *source)
{
    assert (source);
    ppm_redis_script_t *self = calloc (1, sizeof (ppm_redis_script_t));
    assert (self);
    self->source = strdup (source);
    assert (self->source);
    return self;
}

void
ppm_redis_script_destroy (ppm_redis_script_t **self_p)
{
    assert (self_p);
    ppm_redis_script_t *self = *self_p;
    if (!self)
        return;
    free (self->source);
    free (self);
    *self_p = NULL;
}

const char *
ppm_redis_script_sha (const ppm_redis_script_t *self)
{
    assert (self);
    return self->sha;
}

static ppm_redis_result_t
s_script_load (ppm_redis_t *self, ppm_redis_script_t *script)
{
    redisReply *reply = NULL;
    const char *argv[] = {"SCRIPT", "LOAD", script->source};
    ppm_redis_result_t result = ppm_redis_command_argv (self, 3, argv, NULL, &reply);
    if (result != PPM_REDIS_OK)
        return result;
    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        freeReplyObject (reply);
        s_set_error (self, "Redis SCRIPT LOAD: unexpected reply", NULL);
        return PPM_REDIS_ERROR_REPLY;
    }
    memcpy (script->sha, reply->str, 40);
    script->sha[40] = '\0';
    freeReplyObject (reply);
    return PPM_REDIS_OK;
}

ppm_redis_result_t
ppm_redis_eval (ppm_redis_t *self, ppm_redis_script_t *script, int numkeys, int argc,
                const char **argv, const size_t *argvlen, redisReply **reply_p)
{
    assert (self);
    assert (script);
    if (reply_p)
        *reply_p = NULL;
    if (argc < 0 || numkeys < 0 || numkeys > argc || argc > 1000 || (argc > 0 && !argv)) {
        s_set_error (self, "Redis eval: bad key or argument count", NULL);
        return PPM_REDIS_INVALID;
    }
    ppm_redis_result_t result = PPM_REDIS_OK;
    if (script->sha[0] == '\0')
        result = s_script_load (self, script);
    if (result != PPM_REDIS_OK)
        return result;

    int total = argc + 3;
    const char **full = calloc ((size_t)total, sizeof (char *));
    size_t *lens = calloc ((size_t)total, sizeof (size_t));
    assert (full && lens);
    char nkeys[16];
    snprintf (nkeys, sizeof nkeys, "%d", numkeys);
    full[0] = "EVALSHA";
    full[1] = script->sha;
    full[2] = nkeys;
    for (int i = 0; i < 3; i++)
        lens[i] = strlen (full[i]);
    for (int i = 0; i < argc; i++) {
        full[i + 3] = argv[i];
        lens[i + 3] = argvlen ? argvlen[i] : (argv[i] ? strlen (argv[i]) : 0);
    }
    result = ppm_redis_command_argv (self, total, full, lens, reply_p);
    if (result == PPM_REDIS_ERROR_REPLY && strncmp (self->error, "NOSCRIPT", 8) == 0) {
        /* The cache lost the script (SCRIPT FLUSH, restart): it did not run. */
        result = s_script_load (self, script);
        if (result == PPM_REDIS_OK)
            result = ppm_redis_command_argv (self, total, full, lens, reply_p);
    }
    free (full);
    free (lens);
    return result;
}

bool
ppm_redis_ready (ppm_redis_t *self)
{
    assert (self);
    s_check_alive (self);
    return self->ctx != NULL;
}

ppm_redis_result_t
ppm_redis_ping (ppm_redis_t *self)
{
    return ppm_redis_command (self, NULL, "PING");
}

const char *
ppm_redis_error (const ppm_redis_t *self)
{
    assert (self);
    return self->error;
}

uint64_t
ppm_redis_connects (const ppm_redis_t *self)
{
    assert (self);
    return self->connects;
}

int
ppm_redis_db (const ppm_redis_t *self)
{
    assert (self);
    return self->db;
}

const char *
ppm_redis_result_name (ppm_redis_result_t result)
{
    switch (result) {
        case PPM_REDIS_OK:
            return "OK";
        case PPM_REDIS_ERROR_REPLY:
            return "ERROR_REPLY";
        case PPM_REDIS_UNAVAILABLE:
            return "UNAVAILABLE";
        case PPM_REDIS_TOO_LARGE:
            return "TOO_LARGE";
        case PPM_REDIS_INVALID:
            return "INVALID";
    }
    return "INVALID";
}

ppm_code_t
ppm_redis_code (ppm_redis_result_t result)
{
    switch (result) {
        case PPM_REDIS_OK:
            return PPM_OK;
        case PPM_REDIS_ERROR_REPLY:
            return PPM_INTERNAL;
        case PPM_REDIS_UNAVAILABLE:
            return PPM_UNAVAILABLE;
        case PPM_REDIS_TOO_LARGE:
            return PPM_RESOURCE_EXHAUSTED;
        case PPM_REDIS_INVALID:
            return PPM_INVALID_ARGUMENT;
    }
    return PPM_INTERNAL;
}

/* --- ppm_redis_async ------------------------------------------------------
   The zloop adapter follows hiredis's adapters (adapters/poll.h): hiredis
   asks for read/write interest through five hooks, and we keep one zloop
   poller on the connection's fd with the matching events. The object
   outlives each hiredis context, so a poller entry the loop dispatches
   after the context died finds ac == NULL and does nothing. */

typedef struct {
    ppm_redis_async_t *owner; /* the object, for the user's callback */
    ppm_redis_async_fn *fn;   /* user's callback; NULL = ignore */
    void *arg;                /* user's argument */
} s_call_t;

struct _ppm_redis_async_t {
    ppm_redis_t *conf;       /* URL, credentials, timeouts (never connected) */
    zloop_t *loop;           /* not owned */
    redisAsyncContext *ac;   /* NULL when disconnected; freed by hiredis */
    int fd;                  /* fd of the poller, -1 when none */
    short events;            /* ZMQ_POLLIN | ZMQ_POLLOUT wanted by hiredis */
    bool poller_on;          /* a zloop poller is registered for fd */
    bool connected;          /* connect callback reported success */
    int timer_id;            /* watchdog timer */
    size_t pending;          /* commands sent, no reply yet */
    int64_t started_ms;      /* when the current connection attempt began */
    int64_t progress_ms;     /* last reply, or first send when idle */
    int64_t backoff_ms;      /* reconnection back-off */
    int64_t retry_at_ms;     /* no attempt before this */
    uint64_t connects;       /* successful connections */
    char error[S_ERROR_MAX]; /* why the last connection ended */
};

static int s_async_on_fd (zloop_t *loop, zmq_pollitem_t *item, void *arg);

static void
s_async_set_poller (ppm_redis_async_t *self, short events)
{
    int fd = self->ac ? self->ac->c.fd : -1;
    if (self->poller_on && (events != self->events || fd != self->fd)) {
        zmq_pollitem_t item = {NULL, self->fd, 0, 0};
        zloop_poller_end (self->loop, &item);
        self->poller_on = false;
    }
    self->events = events;
    self->fd = fd;
    if (!self->poller_on && events && fd >= 0) {
        zmq_pollitem_t item = {NULL, fd, events, 0};
        int rc = zloop_poller (self->loop, &item, s_async_on_fd, self);
        assert (rc == 0);
        zloop_poller_set_tolerant (self->loop, &item);
        self->poller_on = true;
    }
}

static void
s_async_add_read (void *privdata)
{
    ppm_redis_async_t *self = privdata;
    s_async_set_poller (self, self->events | ZMQ_POLLIN);
}

static void
s_async_del_read (void *privdata)
{
    ppm_redis_async_t *self = privdata;
    s_async_set_poller (self, self->events & ~ZMQ_POLLIN);
}

static void
s_async_add_write (void *privdata)
{
    ppm_redis_async_t *self = privdata;
    s_async_set_poller (self, self->events | ZMQ_POLLOUT);
}

static void
s_async_del_write (void *privdata)
{
    ppm_redis_async_t *self = privdata;
    s_async_set_poller (self, self->events & ~ZMQ_POLLOUT);
}

/* Last hook hiredis calls on a context it frees (after every pending
   callback got NULL): from here on the object has no context. */
static void
s_async_cleanup (void *privdata)
{
    ppm_redis_async_t *self = privdata;
    s_async_set_poller (self, 0);
    self->ac = NULL;
    self->connected = false;
}

static void
s_async_backoff (ppm_redis_async_t *self)
{
    self->backoff_ms = self->backoff_ms ? self->backoff_ms * 2 : S_BACKOFF_MIN_MS;
    if (self->backoff_ms > S_BACKOFF_MAX_MS)
        self->backoff_ms = S_BACKOFF_MAX_MS;
    self->retry_at_ms = s_mono_ms () + self->backoff_ms;
}

/* Drops the connection: hiredis calls every outstanding callback with
   NULL (at once, or when the callback it is in returns). */
static void
s_async_fail (ppm_redis_async_t *self, const char *what, const char *detail)
{
    snprintf (self->error, sizeof self->error, "%s%s%.400s", what, detail ? ": " : "",
              detail ? detail : "");
    if (self->ac)
        redisAsyncFree (self->ac);
}

static int
s_async_on_fd (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void)loop;
    ppm_redis_async_t *self = arg;
    if (!self->ac || item->fd != self->fd)
        return 0; /* a stale entry of a connection that is gone */
    if (item->revents & (ZMQ_POLLIN | ZMQ_POLLERR))
        redisAsyncHandleRead (self->ac);
    if (self->ac && (item->revents & ZMQ_POLLOUT))
        redisAsyncHandleWrite (self->ac);
    if (self->ac) {
        const redisReader *reader = self->ac->c.reader;
        if (reader && reader->len - reader->pos > self->conf->max_reply)
            s_async_fail (self, "Redis reply too large", NULL);
    }
    return 0;
}

static void
s_async_reply (redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    s_call_t *call = privdata;
    ppm_redis_async_t *self = call->owner;
    assert (self->pending > 0);
    self->pending--;
    self->progress_ms = s_mono_ms ();
    if (call->fn)
        call->fn (self, reply, call->arg);
    free (call);
}

static void
s_async_on_connect (const redisAsyncContext *ac, int status)
{
    ppm_redis_async_t *self = ac->data;
    if (status != REDIS_OK) {
        snprintf (self->error, sizeof self->error, "Redis connect failed: %.400s",
                  ac->errstr ? ac->errstr : "?");
        s_async_backoff (self);
        return;
    }
    self->connected = true;
    self->connects++;
    self->backoff_ms = 0;
    self->retry_at_ms = 0;
}

static void
s_async_on_disconnect (const redisAsyncContext *ac, int status)
{
    ppm_redis_async_t *self = ac->data;
    if (status != REDIS_OK)
        snprintf (self->error, sizeof self->error, "Redis connection lost: %.400s",
                  ac->errstr ? ac->errstr : "?");
    self->connected = false;
}

static void
s_async_handshake (ppm_redis_async_t *self, redisReply *reply, void *arg)
{
    (void)arg;
    if (!reply)
        return; /* the connection is already going */
    if (reply->type == REDIS_REPLY_ERROR)
        s_async_fail (self, "Redis AUTH/SELECT refused", reply->str);
}

static int
s_async_send (ppm_redis_async_t *self, ppm_redis_async_fn *fn, void *arg, int argc,
              const char **argv, const size_t *argvlen)
{
    s_call_t *call = calloc (1, sizeof (s_call_t));
    assert (call);
    call->owner = self;
    call->fn = fn;
    call->arg = arg;
    if (self->pending == 0)
        self->progress_ms = s_mono_ms ();
    if (redisAsyncCommandArgv (self->ac, s_async_reply, call, argc, argv, argvlen) != REDIS_OK) {
        free (call);
        snprintf (self->error, sizeof self->error, "Redis command not queued: %.400s",
                  self->ac->errstr ? self->ac->errstr : "connection closing");
        return -1;
    }
    self->pending++;
    return 0;
}

/* Starts a non-blocking connection when there is none (and not backing
   off); queues AUTH and SELECT ahead of any command. */
static int
s_async_connect (ppm_redis_async_t *self)
{
    if (self->ac)
        return 0;
    int64_t wait_ms = self->retry_at_ms - s_mono_ms ();
    if (wait_ms > 0)
        return -1; /* self->error still says why */
    redisAsyncContext *ac = redisAsyncConnect (self->conf->host, self->conf->port);
    if (!ac || ac->err) {
        snprintf (self->error, sizeof self->error, "Redis connect failed: %.400s",
                  ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree (ac);
        s_async_backoff (self);
        return -1;
    }
    ac->data = self;
    ac->ev.data = self;
    ac->ev.addRead = s_async_add_read;
    ac->ev.delRead = s_async_del_read;
    ac->ev.addWrite = s_async_add_write;
    ac->ev.delWrite = s_async_del_write;
    ac->ev.cleanup = s_async_cleanup;
    self->ac = ac;
    self->connected = false;
    self->started_ms = s_mono_ms ();
    redisAsyncSetConnectCallback (ac, s_async_on_connect);
    redisAsyncSetDisconnectCallback (ac, s_async_on_disconnect);
    if (self->conf->password[0]) {
        const char *auth_user[] = {"AUTH", self->conf->user, self->conf->password};
        const char *auth[] = {"AUTH", self->conf->password};
        if (self->conf->user[0])
            s_async_send (self, s_async_handshake, NULL, 3, auth_user, NULL);
        else
            s_async_send (self, s_async_handshake, NULL, 2, auth, NULL);
    }
    if (self->conf->db != 0) {
        char db[16];
        snprintf (db, sizeof db, "%d", self->conf->db);
        const char *select[] = {"SELECT", db};
        s_async_send (self, s_async_handshake, NULL, 2, select, NULL);
    }
    return 0;
}

static int64_t
s_tv_ms (struct timeval tv)
{
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* Bounds every wait: a connection that does not come up, or outstanding
   commands without progress, drop the connection. */
static int
s_async_watchdog (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    ppm_redis_async_t *self = arg;
    if (!self->ac)
        return 0;
    int64_t now = s_mono_ms ();
    if (!self->connected && now - self->started_ms > s_tv_ms (self->conf->connect_tv)) {
        s_async_fail (self, "Redis connect timed out", NULL);
        s_async_backoff (self);
    } else if (self->pending > 0 && now - self->progress_ms > s_tv_ms (self->conf->command_tv))
        s_async_fail (self, "Redis command timed out", NULL);
    return 0;
}

ppm_redis_async_t *
ppm_redis_async_new (zloop_t *loop, const char *url, const ppm_redis_options_t *options,
                     const char **error)
{
    assert (loop);
    ppm_redis_t *conf = s_config_new (url, options, error);
    if (!conf)
        return NULL;
    ppm_redis_async_t *self = calloc (1, sizeof (ppm_redis_async_t));
    assert (self);
    self->conf = conf;
    self->loop = loop;
    self->fd = -1;
    int64_t shortest = s_tv_ms (conf->connect_tv) < s_tv_ms (conf->command_tv)
                           ? s_tv_ms (conf->connect_tv)
                           : s_tv_ms (conf->command_tv);
    int64_t interval = shortest / 4;
    if (interval < 10)
        interval = 10;
    if (interval > 250)
        interval = 250;
    self->timer_id = zloop_timer (loop, (size_t)interval, 0, s_async_watchdog, self);
    assert (self->timer_id != -1);
    s_async_connect (self);
    return self;
}

void
ppm_redis_async_destroy (ppm_redis_async_t **self_p)
{
    assert (self_p);
    ppm_redis_async_t *self = *self_p;
    if (!self)
        return;
    zloop_timer_end (self->loop, self->timer_id);
    if (self->ac)
        redisAsyncFree (self->ac); /* callbacks get NULL; cleanup ends the poller */
    assert (!self->poller_on);
    ppm_redis_destroy (&self->conf);
    free (self);
    *self_p = NULL;
}

int
ppm_redis_async_command_argv (ppm_redis_async_t *self, ppm_redis_async_fn *fn, void *arg, int argc,
                              const char **argv, const size_t *argvlen)
{
    assert (self);
    if (argc < 1 || !argv) {
        snprintf (self->error, sizeof self->error, "Redis command: no arguments");
        return -1;
    }
    for (int i = 0; i < argc; i++)
        if (!argv[i]) {
            snprintf (self->error, sizeof self->error, "Redis command: NULL argument");
            return -1;
        }
    if (s_async_connect (self))
        return -1;
    return s_async_send (self, fn, arg, argc, argv, argvlen);
}

bool
ppm_redis_async_connected (const ppm_redis_async_t *self)
{
    assert (self);
    return self->ac && self->connected;
}

size_t
ppm_redis_async_pending (const ppm_redis_async_t *self)
{
    assert (self);
    return self->pending;
}

const char *
ppm_redis_async_error (const ppm_redis_async_t *self)
{
    assert (self);
    return self->error;
}

uint64_t
ppm_redis_async_connects (const ppm_redis_async_t *self)
{
    assert (self);
    return self->connects;
}
