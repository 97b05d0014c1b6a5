/*  Integration tests of ppm_pg and ppm_migrate against the harness's real
    PostgreSQL: parameterized statements (hostile strings stored verbatim),
    SQLSTATE mapping, transactions, migrations (idempotent, concurrent,
    refusals) and reconnection after a server restart.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_migrate.h"
#include "ppm_pg.h"
#include "tests/lib/ppm_test.h"

static ppm_pg_t *
s_connect (const char *dbname, int64_t statement_timeout_ms)
{
    char *url = ppm_test_pg_url (dbname);
    ppm_pg_options_t options = {.statement_timeout_ms = statement_timeout_ms,
                                .application_name = "ppm-test"};
    const char *error = NULL;
    ppm_pg_t *pg = ppm_pg_new (url, &options, &error);
    free (url);
    assert_non_null (pg);
    assert_true (ppm_pg_ready (pg));
    return pg;
}

static long
s_count (ppm_pg_t *pg, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = NULL;
    ppm_pg_result_t result = ppm_pg_exec (pg, sql, nparams, params, &res);
    if (result != PPM_PG_OK)
        fail_msg ("%s: %s", sql, ppm_pg_error (pg));
    assert_int_equal (PQntuples (res), 1);
    long value = strtol (PQgetvalue (res, 0, 0), NULL, 10);
    PQclear (res);
    return value;
}

static void
test_pg_hostile_strings_verbatim (void **state)
{
    (void)state;
    ppm_pg_t *pg = s_connect ("ppm_t_pg_params", 0);
    assert_int_equal (
        ppm_pg_exec (pg, "CREATE TABLE x (id int PRIMARY KEY, v text)", 0, NULL, NULL), PPM_PG_OK);
    const char *hostile[] = {"'; DROP TABLE x; --", "Robert'); DROP TABLE x;--",
                             "back\\slash \"quote\" $1 $$ dollar $$", "line\nbreak\ttab ünïcødé ✓",
                             "' OR '1'='1"};
    size_t count = sizeof hostile / sizeof hostile[0];
    for (size_t i = 0; i < count; i++) {
        char id[16];
        snprintf (id, sizeof id, "%zu", i);
        const char *params[] = {id, hostile[i]};
        assert_int_equal (
            ppm_pg_exec (pg, "INSERT INTO x (id, v) VALUES ($1, $2)", 2, params, NULL), PPM_PG_OK);
    }
    /* A NULL parameter is SQL NULL. */
    const char *null_params[] = {"99", NULL};
    assert_int_equal (
        ppm_pg_exec (pg, "INSERT INTO x (id, v) VALUES ($1, $2)", 2, null_params, NULL), PPM_PG_OK);

    for (size_t i = 0; i < count; i++) {
        char id[16];
        snprintf (id, sizeof id, "%zu", i);
        const char *params[] = {id};
        PGresult *res = NULL;
        assert_int_equal (ppm_pg_exec (pg, "SELECT v FROM x WHERE id = $1", 1, params, &res),
                          PPM_PG_OK);
        assert_int_equal (PQntuples (res), 1);
        assert_string_equal (PQgetvalue (res, 0, 0), hostile[i]);
        PQclear (res);
    }
    /* Lookup by a hostile value matches exactly that row, nothing more. */
    const char *lookup[] = {"' OR '1'='1"};
    assert_int_equal (s_count (pg, "SELECT count(*) FROM x WHERE v = $1", 1, lookup), 1);
    assert_int_equal (s_count (pg, "SELECT count(*) FROM x WHERE v IS NULL", 0, NULL), 1);
    assert_int_equal (s_count (pg, "SELECT count(*) FROM x", 0, NULL), (long)count + 1);
    ppm_pg_destroy (&pg);
    ppm_pg_destroy (&pg);
    assert_null (pg);
}

static void
test_pg_sqlstates (void **state)
{
    (void)state;
    ppm_pg_t *pg = s_connect ("ppm_t_pg_states", 300);
    assert_int_equal (ppm_pg_exec_script (pg, "CREATE TABLE u (k text PRIMARY KEY, n int CHECK "
                                              "(n > 0)); INSERT INTO u VALUES ('a', 1);"),
                      PPM_PG_OK);
    const char *dup[] = {"a", "2"};
    PGresult *res = (PGresult *)1;
    assert_int_equal (ppm_pg_exec (pg, "INSERT INTO u VALUES ($1, $2)", 2, dup, &res),
                      PPM_PG_UNIQUE_VIOLATION);
    assert_null (res);
    assert_string_equal (ppm_pg_sqlstate (pg), "23505");
    assert_non_null (strstr (ppm_pg_error (pg), "duplicate key"));
    assert_int_equal (ppm_pg_code (PPM_PG_UNIQUE_VIOLATION), PPM_ALREADY_EXISTS);

    const char *bad[] = {"b", "-1"};
    assert_int_equal (ppm_pg_exec (pg, "INSERT INTO u VALUES ($1, $2)", 2, bad, NULL),
                      PPM_PG_CONSTRAINT);
    assert_string_equal (ppm_pg_sqlstate (pg), "23514");
    assert_int_equal (ppm_pg_exec (pg, "SELEC nonsense", 0, NULL, NULL), PPM_PG_ERROR);
    assert_string_equal (ppm_pg_sqlstate (pg), "42601");
    /* statement_timeout (300 ms here) bounds a slow statement. */
    int64_t start = ppm_test_now_ms ();
    assert_int_equal (ppm_pg_exec (pg, "SELECT pg_sleep(3)", 0, NULL, NULL), PPM_PG_TIMEOUT);
    assert_true (ppm_test_now_ms () - start < 2500);
    assert_int_equal (ppm_pg_code (PPM_PG_TIMEOUT), PPM_DEADLINE_EXCEEDED);
    /* The connection is still good afterwards. */
    assert_int_equal (ppm_pg_ping (pg), PPM_PG_OK);
    assert_string_equal (ppm_pg_error (pg), "");

    assert_int_equal (ppm_pg_classify ("40001"), PPM_PG_SERIALIZATION);
    assert_int_equal (ppm_pg_classify ("40P01"), PPM_PG_SERIALIZATION);
    assert_int_equal (ppm_pg_classify ("08006"), PPM_PG_UNAVAILABLE);
    assert_int_equal (ppm_pg_classify ("57P01"), PPM_PG_UNAVAILABLE);
    assert_int_equal (ppm_pg_classify (NULL), PPM_PG_UNAVAILABLE);
    assert_string_equal (ppm_pg_result_name (PPM_PG_SERIALIZATION), "SERIALIZATION");
    ppm_pg_destroy (&pg);
}

static int s_tx_calls;

static ppm_pg_result_t
s_tx_fail_once (ppm_pg_t *pg, void *arg)
{
    const char *params[] = {(const char *)arg};
    ppm_pg_result_t result = ppm_pg_exec (pg, "INSERT INTO t (v) VALUES ($1)", 1, params, NULL);
    if (result == PPM_PG_OK && ++s_tx_calls == 1)
        return PPM_PG_SERIALIZATION; /* as if the commit had to be redone */
    return result;
}

static void
test_pg_transactions (void **state)
{
    (void)state;
    ppm_pg_t *pg = s_connect ("ppm_t_pg_tx", 0);
    ppm_pg_t *other = ppm_pg_new ("", NULL, NULL);
    assert_null (other); /* empty URL is refused */
    assert_int_equal (ppm_pg_exec (pg, "CREATE TABLE t (v text)", 0, NULL, NULL), PPM_PG_OK);

    const char *one[] = {"rolled back"};
    assert_int_equal (ppm_pg_begin (pg, PPM_PG_READ_COMMITTED), PPM_PG_OK);
    assert_true (ppm_pg_in_transaction (pg));
    assert_int_equal (ppm_pg_begin (pg, PPM_PG_READ_COMMITTED), PPM_PG_ERROR);
    assert_int_equal (ppm_pg_exec (pg, "INSERT INTO t (v) VALUES ($1)", 1, one, NULL), PPM_PG_OK);
    assert_int_equal (ppm_pg_rollback (pg), PPM_PG_OK);
    assert_false (ppm_pg_in_transaction (pg));
    assert_int_equal (s_count (pg, "SELECT count(*) FROM t", 0, NULL), 0);

    /* A failed statement aborts the transaction: commit reports it. */
    assert_int_equal (ppm_pg_begin (pg, PPM_PG_READ_COMMITTED), PPM_PG_OK);
    assert_int_equal (ppm_pg_exec (pg, "SELECT 1/0", 0, NULL, NULL), PPM_PG_ERROR);
    assert_int_equal (ppm_pg_commit (pg), PPM_PG_ERROR);
    assert_false (ppm_pg_in_transaction (pg));

    /* The helper redoes a transaction that asks for it, commits once. */
    s_tx_calls = 0;
    assert_int_equal (
        ppm_pg_transaction (pg, PPM_PG_SERIALIZABLE, 3, s_tx_fail_once, (void *)"committed"),
        PPM_PG_OK);
    assert_int_equal (s_tx_calls, 2);
    assert_int_equal (s_count (pg, "SELECT count(*) FROM t", 0, NULL), 1);

    /* A real serialization failure between two connections. */
    char *url = NULL;
    {
        PGresult *res = NULL;
        assert_int_equal (ppm_pg_exec (pg, "SELECT current_database()", 0, NULL, &res), PPM_PG_OK);
        const char *base = getenv ("PPM_TEST_PG_URL");
        const char *slash = strrchr (base, '/');
        assert_int_equal (
            asprintf (&url, "%.*s/%s", (int)(slash - base), base, PQgetvalue (res, 0, 0)) > 0, 1);
        PQclear (res);
    }
    other = ppm_pg_new (url, NULL, NULL);
    free (url);
    assert_non_null (other);
    const char *a[] = {"a"};
    const char *b[] = {"b"};
    assert_int_equal (ppm_pg_begin (pg, PPM_PG_SERIALIZABLE), PPM_PG_OK);
    assert_int_equal (ppm_pg_begin (other, PPM_PG_SERIALIZABLE), PPM_PG_OK);
    assert_int_equal (s_count (pg, "SELECT count(*) FROM t", 0, NULL), 1);
    assert_int_equal (s_count (other, "SELECT count(*) FROM t", 0, NULL), 1);
    assert_int_equal (ppm_pg_exec (pg, "INSERT INTO t (v) VALUES ($1)", 1, a, NULL), PPM_PG_OK);
    assert_int_equal (ppm_pg_exec (other, "INSERT INTO t (v) VALUES ($1)", 1, b, NULL), PPM_PG_OK);
    assert_int_equal (ppm_pg_commit (pg), PPM_PG_OK);
    assert_int_equal (ppm_pg_commit (other), PPM_PG_SERIALIZATION);
    assert_string_equal (ppm_pg_sqlstate (other), "40001");
    assert_int_equal (s_count (pg, "SELECT count(*) FROM t", 0, NULL), 2);
    ppm_pg_destroy (&other);
    ppm_pg_destroy (&pg);
}

static const ppm_migration_t s_migrations[] = {
    {1, "widgets", "CREATE SCHEMA shop; CREATE TABLE shop.widget (id int PRIMARY KEY);"},
    {2, "log",
     "SELECT pg_sleep(0.3); CREATE TABLE shop.applied (n int); "
     "INSERT INTO shop.applied VALUES (2);"},
    {3, "widget_name", "ALTER TABLE shop.widget ADD COLUMN name text;"},
};

static void
test_migrate_twice_is_noop (void **state)
{
    (void)state;
    ppm_pg_t *pg = s_connect ("ppm_t_migrate", 0);
    const char *error = NULL;
    assert_int_equal (ppm_migrate_version (pg, "shop"), 0);
    if (ppm_migrate (pg, "shop", s_migrations, 2, &error))
        fail_msg ("%s", error);
    assert_int_equal (ppm_migrate_version (pg, "shop"), 2);
    PGresult *before = NULL;
    const char *sql = "SELECT version, name, applied_at FROM public.ppm_schema_version "
                      "WHERE component = $1 ORDER BY version";
    const char *shop[] = {"shop"};
    assert_int_equal (ppm_pg_exec (pg, sql, 1, shop, &before), PPM_PG_OK);
    assert_int_equal (PQntuples (before), 2);
    assert_string_equal (PQgetvalue (before, 1, 1), "log");

    /* Again: nothing changes. */
    if (ppm_migrate (pg, "shop", s_migrations, 2, &error))
        fail_msg ("%s", error);
    PGresult *after = NULL;
    assert_int_equal (ppm_pg_exec (pg, sql, 1, shop, &after), PPM_PG_OK);
    assert_int_equal (PQntuples (after), 2);
    for (int i = 0; i < 2; i++)
        assert_string_equal (PQgetvalue (before, i, 2), PQgetvalue (after, i, 2));
    PQclear (before);
    PQclear (after);
    assert_int_equal (s_count (pg, "SELECT count(*) FROM shop.applied", 0, NULL), 1);

    /* A newer binary applies only what is new. */
    if (ppm_migrate (pg, "shop", s_migrations, 3, &error))
        fail_msg ("%s", error);
    assert_int_equal (ppm_migrate_version (pg, "shop"), 3);
    assert_int_equal (s_count (pg, "SELECT count(*) FROM shop.applied", 0, NULL), 1);
    assert_int_equal (
        ppm_pg_exec (pg, "INSERT INTO shop.widget (id, name) VALUES (1, 'w')", 0, NULL, NULL),
        PPM_PG_OK);
    /* Another component is independent. */
    assert_int_equal (ppm_migrate_version (pg, "other"), 0);
    ppm_pg_destroy (&pg);
}

static void
test_migrate_refusals (void **state)
{
    (void)state;
    ppm_pg_t *pg = s_connect ("ppm_t_migrate_refuse", 0);
    const char *error = NULL;
    if (ppm_migrate (pg, "shop", s_migrations, 3, &error))
        fail_msg ("%s", error);
    /* An older binary (knows up to 2) refuses a database at 3. */
    assert_int_equal (ppm_migrate (pg, "shop", s_migrations, 2, &error), -1);
    assert_non_null (strstr (error, "newer"));
    assert_non_null (strstr (error, "version 3"));

    /* Same version, different name. */
    ppm_migration_t renamed[3];
    memcpy (renamed, s_migrations, sizeof renamed);
    renamed[1].name = "journal";
    assert_int_equal (ppm_migrate (pg, "shop", renamed, 3, &error), -1);
    assert_non_null (strstr (error, "\"log\""));
    assert_non_null (strstr (error, "\"journal\""));

    /* A broken migration leaves the schema at the last good version. */
    const ppm_migration_t broken[] = {
        {1, "ok", "CREATE TABLE public.ok (n int);"},
        {2, "bad", "CREATE TABLE public.half (n int); SELECT no_such_function();"},
    };
    assert_int_equal (ppm_migrate (pg, "broken", broken, 2, &error), -1);
    assert_non_null (strstr (error, "version 2 (bad)"));
    assert_int_equal (ppm_migrate_version (pg, "broken"), 1);
    assert_int_equal (
        s_count (pg, "SELECT count(*) FROM pg_tables WHERE tablename = 'half'", 0, NULL), 0);

    /* Programmer errors in the list. */
    const ppm_migration_t unordered[] = {{2, "b", "SELECT 1"}, {1, "a", "SELECT 1"}};
    assert_int_equal (ppm_migrate (pg, "unordered", unordered, 2, &error), -1);
    assert_non_null (strstr (error, "increasing"));
    assert_int_equal (ppm_migrate (pg, "", s_migrations, 1, &error), -1);
    ppm_pg_destroy (&pg);
}

typedef struct {
    char *url;
    int rc;
    char error[512];
} s_runner_t;

static void *
s_migrate_thread (void *arg)
{
    s_runner_t *runner = arg;
    ppm_pg_t *pg = ppm_pg_new (runner->url, NULL, NULL);
    const char *error = NULL;
    runner->rc = pg ? ppm_migrate (pg, "shop", s_migrations, 3, &error) : -1;
    if (runner->rc)
        snprintf (runner->error, sizeof runner->error, "%s", error ? error : "no connection");
    ppm_pg_destroy (&pg);
    return NULL;
}

static void
test_migrate_concurrent (void **state)
{
    (void)state;
    char *url = ppm_test_pg_url ("ppm_t_migrate_race");
    s_runner_t runners[3];
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        runners[i] = (s_runner_t){.url = url};
        assert_int_equal (pthread_create (&threads[i], NULL, s_migrate_thread, &runners[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join (threads[i], NULL);
        if (runners[i].rc)
            fail_msg ("runner %d: %s", i, runners[i].error);
    }
    ppm_pg_t *pg = ppm_pg_new (url, NULL, NULL);
    free (url);
    assert_int_equal (ppm_migrate_version (pg, "shop"), 3);
    assert_int_equal (s_count (pg, "SELECT count(*) FROM public.ppm_schema_version", 0, NULL), 3);
    /* Migration 2 inserts one row each time it runs: it ran once. */
    assert_int_equal (s_count (pg, "SELECT count(*) FROM shop.applied", 0, NULL), 1);
    ppm_pg_destroy (&pg);
}

static void
test_pg_unavailable_and_backoff (void **state)
{
    (void)state;
    const char *error = NULL;
    assert_null (ppm_pg_new ("postgresql://user:secret@[::1/db", NULL, &error));
    assert_non_null (error);
    assert_null (strstr (error, "secret"));
    char url[128];
    snprintf (url, sizeof url, "postgresql://ppm@127.0.0.1:%d/postgres", ppm_test_free_port ());
    ppm_pg_t *pg = ppm_pg_new (url, NULL, &error);
    assert_non_null (pg);
    assert_false (ppm_pg_ready (pg));
    assert_int_equal (ppm_pg_connects (pg), 0);
    /* Inside the back-off window calls fail at once, without the network. */
    int64_t start = ppm_test_now_ms ();
    assert_int_equal (ppm_pg_exec (pg, "SELECT 1", 0, NULL, NULL), PPM_PG_UNAVAILABLE);
    assert_int_equal (ppm_pg_code (PPM_PG_UNAVAILABLE), PPM_UNAVAILABLE);
    assert_true (ppm_test_now_ms () - start < 1000);
    assert_true (strlen (ppm_pg_error (pg)) > 0);
    assert_int_equal (ppm_pg_begin (pg, PPM_PG_READ_COMMITTED), PPM_PG_UNAVAILABLE);
    assert_false (ppm_pg_in_transaction (pg));
    ppm_pg_destroy (&pg);
}

static void
test_pg_reconnect_after_restart (void **state)
{
    (void)state;
    ppm_pg_t *pg = s_connect ("ppm_t_pg_restart", 0);
    assert_int_equal (ppm_pg_exec (pg, "CREATE TABLE r (v text)", 0, NULL, NULL), PPM_PG_OK);
    assert_int_equal (ppm_pg_connects (pg), 1);

    /* Outside a transaction a restart is invisible to the caller. */
    ppm_test_restart_pg ();
    const char *v[] = {"after restart"};
    assert_int_equal (ppm_pg_exec (pg, "INSERT INTO r (v) VALUES ($1)", 1, v, NULL), PPM_PG_OK);
    assert_int_equal (ppm_pg_connects (pg), 2);
    assert_true (ppm_pg_ready (pg));

    /* Inside a transaction the transaction is lost: UNAVAILABLE, and the
       object recovers after rollback. */
    assert_int_equal (ppm_pg_begin (pg, PPM_PG_READ_COMMITTED), PPM_PG_OK);
    const char *w[] = {"lost"};
    assert_int_equal (ppm_pg_exec (pg, "INSERT INTO r (v) VALUES ($1)", 1, w, NULL), PPM_PG_OK);
    ppm_test_restart_pg ();
    assert_int_equal (ppm_pg_exec (pg, "INSERT INTO r (v) VALUES ($1)", 1, w, NULL),
                      PPM_PG_UNAVAILABLE);
    assert_int_equal (ppm_pg_exec (pg, "SELECT 1", 0, NULL, NULL), PPM_PG_UNAVAILABLE);
    assert_int_equal (ppm_pg_commit (pg), PPM_PG_UNAVAILABLE);
    assert_false (ppm_pg_in_transaction (pg));
    assert_int_equal (s_count (pg, "SELECT count(*) FROM r", 0, NULL), 1);
    assert_int_equal (ppm_pg_connects (pg), 3);
    ppm_pg_destroy (&pg);
}

/* Statements are prepared once per connection, at most 128 of them; the
   rest run unprepared with the same results; a new connection (after the
   server dropped the old one) prepares them again; errors are still the
   statement's own. */
static void
test_pg_prepared_statements (void **state)
{
    (void)state;
    ppm_pg_t *pg = s_connect ("ppm_t_pg_prepared", 0);
    const char *prepared = "SELECT count(*) FROM pg_prepared_statements";
    assert_int_equal (s_count (pg, prepared, 0, NULL), 1);
    const char *seven[] = {"7"};
    for (int i = 0; i < 5; i++)
        assert_int_equal (s_count (pg, "SELECT $1::int * 6", 1, seven), 42);
    assert_int_equal (s_count (pg, prepared, 0, NULL), 2);

    /* 200 distinct statements: each answers right, 128 stay prepared. */
    for (int i = 0; i < 200; i++) {
        char sql[64];
        snprintf (sql, sizeof sql, "SELECT $1::int + %d", i);
        assert_int_equal (s_count (pg, sql, 1, seven), 7 + i);
        assert_int_equal (s_count (pg, sql, 1, seven), 7 + i);
    }
    assert_int_equal (s_count (pg, prepared, 0, NULL), 128);
    assert_int_equal (s_count (pg, "SELECT $1::int * 6", 1, seven), 42);

    /* A bad statement fails as itself, prepared or not. */
    const char *text[] = {"not a number"};
    assert_int_equal (ppm_pg_exec (pg, "SELECT $1::int * 6", 1, text, NULL), PPM_PG_ERROR);
    assert_non_null (strstr (ppm_pg_error (pg), "invalid input syntax"));
    assert_int_equal (ppm_pg_exec (pg, "SELECT no_such_column FROM pg_class", 0, NULL, NULL),
                      PPM_PG_ERROR);
    assert_non_null (strstr (ppm_pg_error (pg), "no_such_column"));

    /* Inside a failed transaction a statement not prepared yet reports
       the aborted transaction, and the connection recovers. */
    assert_int_equal (ppm_pg_begin (pg, PPM_PG_READ_COMMITTED), PPM_PG_OK);
    assert_int_equal (ppm_pg_exec (pg, "SELECT 1 / 0", 0, NULL, NULL), PPM_PG_ERROR);
    assert_int_equal (ppm_pg_exec (pg, "SELECT $1::int - 1", 1, seven, NULL), PPM_PG_ERROR);
    assert_string_equal (ppm_pg_sqlstate (pg), "25P02");
    assert_int_equal (ppm_pg_rollback (pg), PPM_PG_OK);
    assert_int_equal (s_count (pg, "SELECT $1::int - 1", 1, seven), 6);

    /* The server drops the connection: the next call reconnects and
       prepares again (the old names do not exist there). */
    ppm_pg_t *other = s_connect ("ppm_t_pg_prepared", 0);
    assert_int_equal (
        ppm_pg_exec (other,
                     "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = 'ppm_t_pg_prepared' AND pid <> pg_backend_pid()",
                     0, NULL, NULL),
        PPM_PG_OK);
    ppm_pg_destroy (&other);
    assert_int_equal (s_count (pg, "SELECT $1::int * 6", 1, seven), 42);
    assert_int_equal (ppm_pg_connects (pg), 2);
    assert_int_equal (s_count (pg, prepared, 0, NULL), 2);
    ppm_pg_destroy (&pg);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_pg_hostile_strings_verbatim),
        cmocka_unit_test (test_pg_sqlstates),
        cmocka_unit_test (test_pg_transactions),
        cmocka_unit_test (test_migrate_twice_is_noop),
        cmocka_unit_test (test_migrate_refusals),
        cmocka_unit_test (test_migrate_concurrent),
        cmocka_unit_test (test_pg_unavailable_and_backoff),
        cmocka_unit_test (test_pg_reconnect_after_restart),
        cmocka_unit_test (test_pg_prepared_statements),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
