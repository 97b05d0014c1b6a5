/*  Tests of the test support library itself (tests/lib/ppm_test): fresh
    databases really are fresh, Redis databases are flushed, child
    processes get the extra environment and are stopped and reaped, and
    polling honours its deadline.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "ppm_pg.h"
#include "ppm_redis.h"
#include "tests/lib/ppm_test.h"

static void
test_fresh_pg_database (void **state)
{
    (void)state;
    char *url = ppm_test_pg_url ("ppm_t_fresh");
    assert_non_null (strstr (url, "/ppm_t_fresh"));
    ppm_pg_t *pg = ppm_pg_new (url, NULL, NULL);
    assert_int_equal (ppm_pg_exec (pg, "CREATE TABLE leftover (n int)", 0, NULL, NULL), PPM_PG_OK);
    /* Recreating drops the old one even with a session still connected. */
    char *again = ppm_test_pg_url ("ppm_t_fresh");
    ppm_pg_destroy (&pg);
    pg = ppm_pg_new (again, NULL, NULL);
    PGresult *res = NULL;
    assert_int_equal (ppm_pg_exec (pg, "SELECT count(*) FROM pg_tables WHERE tablename = $1", 1,
                                   (const char *[]){"leftover"}, &res),
                      PPM_PG_OK);
    assert_string_equal (PQgetvalue (res, 0, 0), "0");
    PQclear (res);
    ppm_pg_destroy (&pg);
    free (url);
    free (again);
}

static void
test_redis_db_flushed (void **state)
{
    (void)state;
    char *url = ppm_test_redis_url (7);
    ppm_redis_t *redis = ppm_redis_new (url, NULL, NULL);
    assert_int_equal (ppm_redis_command (redis, NULL, "SET", "left", "over"), PPM_REDIS_OK);
    free (url);
    url = ppm_test_redis_url (7);
    redisReply *reply = NULL;
    assert_int_equal (ppm_redis_command (redis, &reply, "DBSIZE"), PPM_REDIS_OK);
    assert_int_equal (reply->integer, 0);
    freeReplyObject (reply);
    ppm_redis_destroy (&redis);
    free (url);
}

static void
test_spawn_wait_kill (void **state)
{
    (void)state;
    char *const check_env[] = {"/bin/sh", "-c", "test \"$PPM_T_EXTRA\" = 'a b' && exit 7", NULL};
    char *const extra[] = {"PPM_T_EXTRA=a b", NULL};
    pid_t pid = ppm_test_spawn ("/bin/sh", check_env, extra);
    int status = ppm_test_wait (pid, 5000);
    assert_true (status != -1);
    assert_true (WIFEXITED (status));
    assert_int_equal (WEXITSTATUS (status), 7);

    char *const sleeper[] = {"sleep", "30", NULL};
    pid = ppm_test_spawn ("/bin/sleep", sleeper, NULL);
    int64_t start = ppm_test_now_ms ();
    assert_int_equal (ppm_test_wait (pid, 100), -1);
    assert_true (ppm_test_now_ms () - start >= 100);
    status = ppm_test_stop (pid, 2000);
    assert_true (WIFSIGNALED (status));
    assert_int_equal (WTERMSIG (status), SIGTERM);

    pid = ppm_test_spawn ("/bin/sleep", sleeper, NULL);
    assert_int_equal (ppm_test_kill (pid, SIGKILL), 0);
    status = ppm_test_wait (pid, 2000);
    assert_true (WIFSIGNALED (status));
    assert_int_equal (WTERMSIG (status), SIGKILL);
}

static int s_polls;

static bool
s_third_time (void *arg)
{
    (void)arg;
    return ++s_polls >= 3;
}

static bool
s_never (void *arg)
{
    (void)arg;
    return false;
}

static void
test_wait_until_and_ports (void **state)
{
    (void)state;
    s_polls = 0;
    assert_true (ppm_test_wait_until (s_third_time, NULL, 1000));
    assert_int_equal (s_polls, 3);
    int64_t start = ppm_test_now_ms ();
    assert_false (ppm_test_wait_until (s_never, NULL, 150));
    int64_t took = ppm_test_now_ms () - start;
    assert_true (took >= 150 && took < 1000);
    int port = ppm_test_free_port ();
    assert_true (port > 0 && port < 65536);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_fresh_pg_database),
        cmocka_unit_test (test_redis_db_flushed),
        cmocka_unit_test (test_spawn_wait_kill),
        cmocka_unit_test (test_wait_until_and_ports),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
