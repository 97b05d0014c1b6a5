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

ppm_redis_t *
ppm_redis_new (const char *url, const ppm_redis_options_t *options, const char **error)
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
