/*  ppm_test: see ppm_test.h. Everything here runs inside cmocka tests, so
    failures are reported with fail_msg and a missing harness with skip().
*/
#include "ppm_test.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ppm_redis.h"

extern char **environ;

#define S_DBNAME_MAX 48

/* Failure text, so that nothing is allocated when a test fails (fail_msg
   jumps out of the test). */
static char s_message[512];

static const char *
s_harness_env (const char *name)
{
    const char *value = getenv (name);
    if (!value || !*value) {
        print_message ("ppm_test: %s is not set: run under tests/harness/run-tests.sh "
                       "(make test); skipping\n",
                       name);
        skip ();
    }
    return value;
}

static char *s_format (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

static char *
s_format (const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    char *text = NULL;
    int rc = vasprintf (&text, fmt, args);
    va_end (args);
    assert (rc >= 0);
    return text;
}

int64_t
ppm_test_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
ppm_test_sleep_ms (int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
}

static bool
s_valid_dbname (const char *dbname)
{
    size_t len = dbname ? strlen (dbname) : 0;
    if (len < 1 || len > S_DBNAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = dbname[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

/* Runs one utility statement (no parameters possible: CREATE/DROP
   DATABASE take identifiers, which are validated and quoted). */
static bool
s_admin_exec (PGconn *conn, const char *verb, const char *quoted, const char *suffix)
{
    char *sql = s_format ("%s %s%s", verb, quoted, suffix);
    PGresult *res = PQexec (conn, sql);
    bool ok = PQresultStatus (res) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf (s_message, sizeof s_message, "%s", PQresultErrorMessage (res));
    PQclear (res);
    free (sql);
    return ok;
}

char *
ppm_test_pg_url (const char *dbname)
{
    const char *base = s_harness_env ("PPM_TEST_PG_URL");
    if (!s_valid_dbname (dbname))
        fail_msg ("ppm_test_pg_url: database name must be [a-z0-9_]{1,%d}", S_DBNAME_MAX);
    /* postgresql://user@host:port/dbname[?query]: replace the path. */
    const char *scheme = strstr (base, "://");
    if (!scheme)
        fail_msg ("ppm_test_pg_url: PPM_TEST_PG_URL is not a URL");
    const char *path = strchr (scheme + 3, '/');
    const char *query = strchr (scheme + 3, '?');
    size_t prefix_len = path    ? (size_t)(path - base)
                        : query ? (size_t)(query - base)
                                : strlen (base);
    char *url = s_format ("%.*s/%s%s", (int)prefix_len, base, dbname, query ? query : "");

    PGconn *conn = PQconnectdb (base);
    bool ok = PQstatus (conn) == CONNECTION_OK;
    if (!ok)
        snprintf (s_message, sizeof s_message, "cannot connect to the harness PostgreSQL: %s",
                  PQerrorMessage (conn));
    if (ok) {
        char *quoted = PQescapeIdentifier (conn, dbname, strlen (dbname));
        assert (quoted);
        ok = s_admin_exec (conn, "DROP DATABASE IF EXISTS", quoted, " WITH (FORCE)") &&
             s_admin_exec (conn, "CREATE DATABASE", quoted, "");
        PQfreemem (quoted);
    }
    PQfinish (conn);
    if (!ok) {
        free (url);
        fail_msg ("ppm_test_pg_url: %s", s_message);
        return NULL;
    }
    return url;
}

char *
ppm_test_redis_url (int db)
{
    const char *base = s_harness_env ("PPM_TEST_REDIS_URL");
    if (db < 0 || db > 63)
        fail_msg ("ppm_test_redis_url: db must be 0..63, not %d", db);
    const char *scheme = strstr (base, "://");
    const char *path = scheme ? strchr (scheme + 3, '/') : NULL;
    size_t prefix_len = path ? (size_t)(path - base) : strlen (base);
    char *url = s_format ("%.*s/%d", (int)prefix_len, base, db);
    const char *error = NULL;
    ppm_redis_t *redis = ppm_redis_new (url, NULL, &error);
    bool ok = redis != NULL;
    if (!ok)
        snprintf (s_message, sizeof s_message, "%s", error);
    if (ok && ppm_redis_command (redis, NULL, "FLUSHDB") != PPM_REDIS_OK) {
        snprintf (s_message, sizeof s_message, "FLUSHDB failed: %s", ppm_redis_error (redis));
        ok = false;
    }
    ppm_redis_destroy (&redis);
    if (!ok) {
        free (url);
        fail_msg ("ppm_test_redis_url: %s", s_message);
        return NULL;
    }
    return url;
}

int
ppm_test_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    assert_true (fd >= 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    assert_int_equal (bind (fd, (struct sockaddr *)&addr, sizeof addr), 0);
    socklen_t len = sizeof addr;
    assert_int_equal (getsockname (fd, (struct sockaddr *)&addr, &len), 0);
    close (fd);
    return ntohs (addr.sin_port);
}

pid_t
ppm_test_spawn (const char *bin, char *const argv[], char *const env_extra[])
{
    assert_non_null (bin);
    /* A path with a slash is used as is (system tools in tests). */
    bool explicit_path = strchr (bin, '/') != NULL;
    char *path = explicit_path ? s_format ("%s", bin)
                               : s_format ("%s/%s", s_harness_env ("PPM_BIN_DIR"), bin);
    const char *name = strrchr (path, '/') ? strrchr (path, '/') + 1 : path;
    if (access (path, X_OK) != 0) {
        char *message = s_format ("%s is not an executable: %s", path, strerror (errno));
        free (path);
        fail_msg ("ppm_test_spawn: %s", message);
    }
    /* Everything the child needs is built before fork. */
    size_t env_count = 0;
    while (environ[env_count])
        env_count++;
    size_t extra_count = 0;
    while (env_extra && env_extra[extra_count])
        extra_count++;
    char **env = calloc (env_count + extra_count + 1, sizeof (char *));
    assert (env);
    for (size_t i = 0; i < env_count; i++)
        env[i] = environ[i];
    for (size_t i = 0; i < extra_count; i++)
        env[env_count + i] = env_extra[i];
    char *default_argv[] = {(char *)bin, NULL};
    char *const *child_argv = argv ? argv : default_argv;
    const char *tmp = getenv ("PPM_TEST_TMP");
    int log_fd = -1;
    if (tmp && *tmp) {
        char *logs = s_format ("%s/logs", tmp);
        mkdir (logs, 0755);
        char *log = s_format ("%s/%s.%d.%lld.log", logs, name, (int)getpid (),
                              (long long)ppm_test_now_ms ());
        log_fd = open (log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        free (log);
        free (logs);
    }
    pid_t parent = getpid ();
    pid_t pid = fork ();
    if (pid == 0) {
        /* A service never outlives its test, even one the harness's
           timeout kills (the test forks from its main thread). */
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != parent)
            _exit (127);
        if (log_fd >= 0) {
            dup2 (log_fd, STDOUT_FILENO);
            dup2 (log_fd, STDERR_FILENO);
        }
        execve (path, child_argv, env);
        _exit (127);
    }
    if (log_fd >= 0)
        close (log_fd);
    free (env);
    free (path);
    if (pid < 0)
        fail_msg ("ppm_test_spawn: fork failed: %s", strerror (errno));
    return pid;
}

int
ppm_test_kill (pid_t pid, int sig)
{
    return kill (pid, sig) == 0 ? 0 : -1;
}

int
ppm_test_wait (pid_t pid, int timeout_ms)
{
    int64_t deadline = ppm_test_now_ms () + timeout_ms;
    while (true) {
        int status = 0;
        pid_t rc = waitpid (pid, &status, WNOHANG);
        if (rc == pid)
            return status;
        if (rc < 0 && errno != EINTR)
            return -1;
        if (ppm_test_now_ms () >= deadline)
            return -1;
        ppm_test_sleep_ms (10);
    }
}

int
ppm_test_stop (pid_t pid, int timeout_ms)
{
    ppm_test_kill (pid, SIGTERM);
    int status = ppm_test_wait (pid, timeout_ms);
    if (status == -1) {
        ppm_test_kill (pid, SIGKILL);
        status = ppm_test_wait (pid, 5000);
    }
    return status;
}

bool
ppm_test_wait_until (bool (*fn) (void *arg), void *arg, int timeout_ms)
{
    int64_t deadline = ppm_test_now_ms () + timeout_ms;
    while (true) {
        if (fn (arg))
            return true;
        if (ppm_test_now_ms () >= deadline)
            return false;
        ppm_test_sleep_ms (10);
    }
}

static void
s_run_restart (const char *variable)
{
    const char *command = s_harness_env (variable);
    int status = system (command);
    if (status == -1 || !WIFEXITED (status) || WEXITSTATUS (status) != 0)
        fail_msg ("%s (%s) failed with status %d", variable, command, status);
}

void
ppm_test_restart_redis (void)
{
    s_run_restart ("PPM_TEST_REDIS_RESTART");
}

void
ppm_test_restart_pg (void)
{
    s_run_restart ("PPM_TEST_PG_RESTART");
}
