/*  ppm_pg: see ppm_pg.h. One libpq connection in blocking mode, bounded by
    connect_timeout, a per-connection statement_timeout, TCP keepalives and
    tcp_user_timeout. The object remembers whether a transaction is open and
    whether it was lost with a broken connection, so that it never silently
    retries half a transaction.
*/
#include "ppm_pg.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_ERROR_MAX       512
#define S_BACKOFF_MIN_MS  100
#define S_BACKOFF_MAX_MS  5000
#define S_DEFAULT_CONNECT 3000
#define S_DEFAULT_STMT    5000
#define S_PREPARED_MAX    128 /* statements kept prepared per connection */

/* A statement prepared on the current connection, named ppm_<index>. */
typedef struct {
    char *sql;
    uint32_t hash;
} s_prepared_t;

struct _ppm_pg_t {
    char *url;                       /* connection URL or conninfo (may hold a password) */
    char connect_timeout[24];        /* libpq connect_timeout, whole seconds */
    char options[80];                /* libpq options: -c statement_timeout=… */
    char tcp_user_timeout[24];       /* ms */
    char *application_name;          /* shown in pg_stat_activity */
    PGconn *conn;                    /* NULL before the first attempt */
    bool in_tx;                      /* ppm_pg_begin succeeded, not yet ended */
    bool tx_lost;                    /* the connection broke during the transaction */
    int64_t backoff_ms;              /* current back-off; 0 after a success */
    int64_t retry_at_ms;             /* no connection attempt before this (mono) */
    uint64_t connects;               /* successful connections so far */
    char error[S_ERROR_MAX];         /* last failure's message */
    char connect_error[S_ERROR_MAX]; /* why the last connection attempt failed */
    char sqlstate[8];                /* last failure's SQLSTATE */
    /* Statements prepared on connection number prepared_for. */
    s_prepared_t prepared[S_PREPARED_MAX];
    size_t prepared_count;
    uint64_t prepared_for;
};

static int64_t
s_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_sleep_ms (int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    nanosleep (&ts, NULL);
}

static char *
s_strdup (const char *text)
{
    char *copy = strdup (text);
    assert (copy);
    return copy;
}

static void
s_clear_error (ppm_pg_t *self)
{
    self->error[0] = '\0';
    self->sqlstate[0] = '\0';
}

/* Stores a message, without its trailing newline. */
static void
s_set_error (ppm_pg_t *self, const char *message, const char *sqlstate)
{
    snprintf (self->error, sizeof self->error, "%s", message ? message : "unknown error");
    size_t len = strlen (self->error);
    while (len > 0 && (self->error[len - 1] == '\n' || self->error[len - 1] == ' '))
        self->error[--len] = '\0';
    snprintf (self->sqlstate, sizeof self->sqlstate, "%s", sqlstate ? sqlstate : "");
}

static bool
s_conn_ok (const ppm_pg_t *self)
{
    return self->conn && PQstatus (self->conn) == CONNECTION_OK;
}

/* Non-blocking: reads whatever the server sent (libpq's socket is always
   non-blocking underneath) so a closed connection is noticed before a
   statement is sent on it; drops notifications nobody listens to. */
static void
s_check_alive (ppm_pg_t *self)
{
    if (!s_conn_ok (self))
        return;
    if (PQconsumeInput (self->conn) == 0 && PQstatus (self->conn) == CONNECTION_OK) {
        /* A read error that libpq did not turn into CONNECTION_BAD: the
           connection is unusable anyway. */
        PQfinish (self->conn);
        self->conn = NULL;
        return;
    }
    PGnotify *notify;
    while ((notify = PQnotifies (self->conn)) != NULL)
        PQfreemem (notify);
}

/* Connects when there is no good connection, unless backing off. BLOCKS up
   to the connect timeout. Returns 0 when connected. */
static int
s_ensure_connected (ppm_pg_t *self)
{
    if (s_conn_ok (self))
        return 0;
    int64_t wait_ms = self->retry_at_ms - s_mono_ms ();
    if (wait_ms > 0) {
        char message[S_ERROR_MAX + 64];
        snprintf (message, sizeof message, "PostgreSQL unavailable, next attempt in %d ms: %s",
                  (int)wait_ms, self->connect_error);
        s_set_error (self, message, NULL);
        return -1;
    }
    if (self->conn) {
        PQfinish (self->conn);
        self->conn = NULL;
    }
    const char *keys[] = {"connect_timeout",  "application_name",
                          "options",          "keepalives",
                          "keepalives_idle",  "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout",
                          "dbname",           NULL};
    const char *values[] = {self->connect_timeout,
                            self->application_name,
                            self->options,
                            "1",
                            "5",
                            "2",
                            "3",
                            self->tcp_user_timeout,
                            self->url,
                            NULL};
    self->conn = PQconnectdbParams (keys, values, 1);
    if (s_conn_ok (self)) {
        self->backoff_ms = 0;
        self->retry_at_ms = 0;
        self->connects++;
        return 0;
    }
    s_set_error (self, self->conn ? PQerrorMessage (self->conn) : "out of memory", NULL);
    snprintf (self->connect_error, sizeof self->connect_error, "%s", self->error);
    if (self->conn) {
        PQfinish (self->conn);
        self->conn = NULL;
    }
    self->backoff_ms = self->backoff_ms ? self->backoff_ms * 2 : S_BACKOFF_MIN_MS;
    if (self->backoff_ms > S_BACKOFF_MAX_MS)
        self->backoff_ms = S_BACKOFF_MAX_MS;
    self->retry_at_ms = s_mono_ms () + self->backoff_ms;
    return -1;
}

ppm_pg_t *
ppm_pg_new (const char *url, const ppm_pg_options_t *options, const char **error)
{
    static const char *bad_url = "PostgreSQL URL: not a valid postgresql:// URL or conninfo";
    if (!url || !*url) {
        if (error)
            *error = "PostgreSQL URL: missing";
        return NULL;
    }
    char *parse_error = NULL;
    PQconninfoOption *parsed = PQconninfoParse (url, &parse_error);
    if (!parsed) {
        if (parse_error)
            PQfreemem (parse_error);
        if (error)
            *error = bad_url;
        return NULL;
    }
    PQconninfoFree (parsed);

    ppm_pg_options_t opts = {0};
    if (options)
        opts = *options;
    if (opts.connect_timeout_ms <= 0)
        opts.connect_timeout_ms = S_DEFAULT_CONNECT;
    if (opts.statement_timeout_ms <= 0)
        opts.statement_timeout_ms = S_DEFAULT_STMT;
    if (!opts.application_name || !*opts.application_name)
        opts.application_name = "ppm";

    ppm_pg_t *self = calloc (1, sizeof (ppm_pg_t));
    assert (self);
    self->url = s_strdup (url);
    self->application_name = s_strdup (opts.application_name);
    /* libpq counts whole seconds and treats 1 as 2. */
    int64_t seconds = (opts.connect_timeout_ms + 999) / 1000;
    if (seconds < 2)
        seconds = 2;
    snprintf (self->connect_timeout, sizeof self->connect_timeout, "%" PRId64, seconds);
    snprintf (self->options, sizeof self->options, "-c statement_timeout=%" PRId64,
              opts.statement_timeout_ms);
    snprintf (self->tcp_user_timeout, sizeof self->tcp_user_timeout, "%" PRId64,
              opts.statement_timeout_ms + 5000);
    s_ensure_connected (self);
    return self;
}

void
ppm_pg_destroy (ppm_pg_t **self_p)
{
    assert (self_p);
    ppm_pg_t *self = *self_p;
    if (!self)
        return;
    if (self->conn)
        PQfinish (self->conn);
    for (size_t i = 0; i < self->prepared_count; i++)
        free (self->prepared[i].sql);
    free (self->url);
    free (self->application_name);
    free (self);
    *self_p = NULL;
}

ppm_pg_result_t
ppm_pg_classify (const char *sqlstate)
{
    if (!sqlstate || strlen (sqlstate) != 5)
        return PPM_PG_UNAVAILABLE;
    if (strcmp (sqlstate, "23505") == 0)
        return PPM_PG_UNIQUE_VIOLATION;
    if (strcmp (sqlstate, "40001") == 0 || strcmp (sqlstate, "40P01") == 0)
        return PPM_PG_SERIALIZATION;
    if (strncmp (sqlstate, "08", 2) == 0 || strcmp (sqlstate, "57P01") == 0 ||
        strcmp (sqlstate, "57P02") == 0 || strcmp (sqlstate, "57P03") == 0 ||
        strcmp (sqlstate, "53300") == 0)
        return PPM_PG_UNAVAILABLE;
    if (strcmp (sqlstate, "57014") == 0 || strcmp (sqlstate, "55P03") == 0)
        return PPM_PG_TIMEOUT;
    if (strncmp (sqlstate, "23", 2) == 0)
        return PPM_PG_CONSTRAINT;
    return PPM_PG_ERROR;
}

static uint32_t
s_hash (const char *text)
{
    uint32_t hash = 2166136261u; /* FNV-1a */
    for (const unsigned char *c = (const unsigned char *)text; *c; c++)
        hash = (hash ^ *c) * 16777619u;
    return hash;
}

/* The name under which sql is prepared on the current connection,
   preparing it the first time (one more round trip, then none: the server
   parses and plans it once per connection instead of on every call).
   NULL when it cannot be prepared (the table is full, or the server
   refused: the caller runs it unprepared and reports the server's error).
   A new connection starts with none prepared. */
static const char *
s_prepared (ppm_pg_t *self, const char *sql, int nparams, char *name, size_t size)
{
    if (self->prepared_for != self->connects) {
        for (size_t i = 0; i < self->prepared_count; i++)
            free (self->prepared[i].sql);
        self->prepared_count = 0;
        self->prepared_for = self->connects;
    }
    uint32_t hash = s_hash (sql);
    size_t i = 0;
    while (i < self->prepared_count &&
           (self->prepared[i].hash != hash || strcmp (self->prepared[i].sql, sql) != 0))
        i++;
    snprintf (name, size, "ppm_%zu", i);
    if (i < self->prepared_count)
        return name;
    if (i == S_PREPARED_MAX)
        return NULL;
    char *copy = s_strdup (sql);
    if (!copy)
        return NULL;
    PGresult *res = PQprepare (self->conn, name, sql, nparams, NULL);
    bool ok = res && PQresultStatus (res) == PGRES_COMMAND_OK;
    PQclear (res);
    if (!ok) {
        free (copy);
        return NULL;
    }
    self->prepared[i].sql = copy;
    self->prepared[i].hash = hash;
    self->prepared_count++;
    return name;
}

/* Runs one statement on the current connection; no retry. */
static ppm_pg_result_t
s_exec_once (ppm_pg_t *self, const char *sql, int nparams, const char *const *params,
             PGresult **result_p, bool script)
{
    char name[32];
    const char *prepared = script ? NULL : s_prepared (self, sql, nparams, name, sizeof name);
    PGresult *res;
    if (script)
        res = PQexec (self->conn, sql);
    else if (prepared)
        res = PQexecPrepared (self->conn, prepared, nparams, params, NULL, NULL, 0);
    else
        res = PQexecParams (self->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType status = res ? PQresultStatus (res) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
        if (result_p)
            *result_p = res;
        else
            PQclear (res);
        return PPM_PG_OK;
    }
    const char *sqlstate = res ? PQresultErrorField (res, PG_DIAG_SQLSTATE) : NULL;
    const char *message = res ? PQresultErrorMessage (res) : NULL;
    if (!message || !*message)
        message = PQerrorMessage (self->conn);
    ppm_pg_result_t result;
    if (status == PGRES_FATAL_ERROR || status == PGRES_NONFATAL_ERROR)
        result = ppm_pg_classify (sqlstate);
    else {
        message = "unexpected result status (COPY or empty query)";
        result = PPM_PG_ERROR;
    }
    if (PQstatus (self->conn) != CONNECTION_OK)
        result = PPM_PG_UNAVAILABLE;
    s_set_error (self, message, sqlstate);
    PQclear (res);
    return result;
}

static ppm_pg_result_t
s_exec (ppm_pg_t *self, const char *sql, int nparams, const char *const *params,
        PGresult **result_p, bool script)
{
    assert (self);
    assert (sql);
    assert (nparams >= 0);
    assert (nparams == 0 || params);
    if (result_p)
        *result_p = NULL;
    s_clear_error (self);

    if (self->in_tx) {
        if (self->tx_lost || !s_conn_ok (self)) {
            self->tx_lost = true;
            s_set_error (self, "PostgreSQL connection lost during the transaction", NULL);
            return PPM_PG_UNAVAILABLE;
        }
        ppm_pg_result_t result = s_exec_once (self, sql, nparams, params, result_p, script);
        if (!s_conn_ok (self))
            self->tx_lost = true;
        return result;
    }
    s_check_alive (self);
    if (s_ensure_connected (self))
        return PPM_PG_UNAVAILABLE;
    ppm_pg_result_t result = s_exec_once (self, sql, nparams, params, result_p, script);
    if (result == PPM_PG_UNAVAILABLE && !s_conn_ok (self) && !script) {
        /* Broken connection outside a transaction: reconnect now and retry
           once (statements outside transactions are idempotent by contract). */
        if (s_ensure_connected (self) == 0) {
            s_clear_error (self);
            result = s_exec_once (self, sql, nparams, params, result_p, script);
        }
    }
    return result;
}

ppm_pg_result_t
ppm_pg_exec (ppm_pg_t *self, const char *sql, int nparams, const char *const *params,
             PGresult **result_p)
{
    return s_exec (self, sql, nparams, params, result_p, false);
}

ppm_pg_result_t
ppm_pg_exec_script (ppm_pg_t *self, const char *sql)
{
    return s_exec (self, sql, 0, NULL, NULL, true);
}

ppm_pg_result_t
ppm_pg_begin (ppm_pg_t *self, ppm_pg_isolation_t isolation)
{
    assert (self);
    if (self->in_tx) {
        s_set_error (self, "ppm_pg_begin: a transaction is already open", NULL);
        return PPM_PG_ERROR;
    }
    const char *sql = isolation == PPM_PG_SERIALIZABLE ? "BEGIN ISOLATION LEVEL SERIALIZABLE"
                      : isolation == PPM_PG_REPEATABLE_READ
                          ? "BEGIN ISOLATION LEVEL REPEATABLE READ"
                          : "BEGIN ISOLATION LEVEL READ COMMITTED";
    ppm_pg_result_t result = s_exec (self, sql, 0, NULL, NULL, false);
    if (result == PPM_PG_OK) {
        self->in_tx = true;
        self->tx_lost = false;
    }
    return result;
}

ppm_pg_result_t
ppm_pg_commit (ppm_pg_t *self)
{
    assert (self);
    if (!self->in_tx) {
        s_set_error (self, "ppm_pg_commit: no transaction is open", NULL);
        return PPM_PG_ERROR;
    }
    PGresult *res = NULL;
    ppm_pg_result_t result = s_exec (self, "COMMIT", 0, NULL, &res, false);
    self->in_tx = false;
    self->tx_lost = false;
    if (result == PPM_PG_OK && strcmp (PQcmdStatus (res), "ROLLBACK") == 0) {
        s_set_error (self, "COMMIT rolled back: the transaction had failed earlier", NULL);
        result = PPM_PG_ERROR;
    }
    PQclear (res);
    return result;
}

ppm_pg_result_t
ppm_pg_rollback (ppm_pg_t *self)
{
    assert (self);
    if (!self->in_tx)
        return PPM_PG_OK;
    bool lost = self->tx_lost || !s_conn_ok (self);
    self->in_tx = false;
    self->tx_lost = false;
    if (lost)
        return PPM_PG_OK; /* the server rolled it back when the connection ended */
    PGresult *res = PQexec (self->conn, "ROLLBACK");
    PQclear (res);
    return PPM_PG_OK;
}

ppm_pg_result_t
ppm_pg_transaction (ppm_pg_t *self, ppm_pg_isolation_t isolation, int attempts, ppm_pg_tx_fn *fn,
                    void *arg)
{
    assert (self);
    assert (fn);
    assert (attempts >= 1);
    ppm_pg_result_t result = PPM_PG_ERROR;
    for (int attempt = 1; attempt <= attempts; attempt++) {
        bool committing = false;
        result = ppm_pg_begin (self, isolation);
        if (result == PPM_PG_OK) {
            result = fn (self, arg);
            if (result == PPM_PG_OK && self->in_tx) {
                committing = true;
                result = ppm_pg_commit (self);
            }
        }
        if (self->in_tx) {
            /* Keep fn's error message: rollback does not touch it. */
            ppm_pg_rollback (self);
        }
        if (result == PPM_PG_OK)
            break;
        /* A lost COMMIT answer has an unknown outcome: never redo it. */
        if (committing && result == PPM_PG_UNAVAILABLE)
            break;
        if (result != PPM_PG_SERIALIZATION && result != PPM_PG_UNAVAILABLE)
            break;
        if (attempt < attempts) {
            if (result == PPM_PG_SERIALIZATION)
                s_sleep_ms (5 * attempt + rand () % 10);
            else {
                int64_t wait = self->retry_at_ms - s_mono_ms ();
                s_sleep_ms (wait > 1000 ? 1000 : wait);
            }
        }
    }
    return result;
}

bool
ppm_pg_ready (ppm_pg_t *self)
{
    assert (self);
    if (self->in_tx)
        return s_conn_ok (self) && !self->tx_lost;
    s_check_alive (self);
    return s_conn_ok (self);
}

ppm_pg_result_t
ppm_pg_ping (ppm_pg_t *self)
{
    return ppm_pg_exec (self, "SELECT 1", 0, NULL, NULL);
}

bool
ppm_pg_in_transaction (const ppm_pg_t *self)
{
    assert (self);
    return self->in_tx;
}

const char *
ppm_pg_error (const ppm_pg_t *self)
{
    assert (self);
    return self->error;
}

const char *
ppm_pg_sqlstate (const ppm_pg_t *self)
{
    assert (self);
    return self->sqlstate;
}

uint64_t
ppm_pg_connects (const ppm_pg_t *self)
{
    assert (self);
    return self->connects;
}

const char *
ppm_pg_result_name (ppm_pg_result_t result)
{
    switch (result) {
        case PPM_PG_OK:
            return "OK";
        case PPM_PG_UNIQUE_VIOLATION:
            return "UNIQUE_VIOLATION";
        case PPM_PG_SERIALIZATION:
            return "SERIALIZATION";
        case PPM_PG_UNAVAILABLE:
            return "UNAVAILABLE";
        case PPM_PG_TIMEOUT:
            return "TIMEOUT";
        case PPM_PG_CONSTRAINT:
            return "CONSTRAINT";
        case PPM_PG_ERROR:
            return "ERROR";
    }
    return "ERROR";
}

ppm_code_t
ppm_pg_code (ppm_pg_result_t result)
{
    switch (result) {
        case PPM_PG_OK:
            return PPM_OK;
        case PPM_PG_UNIQUE_VIOLATION:
            return PPM_ALREADY_EXISTS;
        case PPM_PG_SERIALIZATION:
            return PPM_ABORTED;
        case PPM_PG_UNAVAILABLE:
            return PPM_UNAVAILABLE;
        case PPM_PG_TIMEOUT:
            return PPM_DEADLINE_EXCEEDED;
        case PPM_PG_CONSTRAINT:
            return PPM_FAILED_PRECONDITION;
        case PPM_PG_ERROR:
            return PPM_INTERNAL;
    }
    return PPM_INTERNAL;
}
