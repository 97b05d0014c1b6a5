/*  Integration tests of ppm_redis against the harness's real Redis:
    binary-safe commands, error replies, database selection, Lua scripts
    with NOSCRIPT recovery, the reply-size cap, command timeouts and
    reconnection after a server restart.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_redis.h"
#include "tests/lib/ppm_test.h"

static ppm_redis_t *
s_connect (int db, const ppm_redis_options_t *options)
{
    char *url = ppm_test_redis_url (db);
    const char *error = NULL;
    ppm_redis_t *redis = ppm_redis_new (url, options, &error);
    free (url);
    assert_non_null (redis);
    assert_true (ppm_redis_ready (redis));
    assert_int_equal (ppm_redis_db (redis), db);
    return redis;
}

static void
test_redis_commands_binary_safe (void **state)
{
    (void)state;
    ppm_redis_t *redis = s_connect (1, NULL);
    /* A value with NUL, CR LF and protocol-looking bytes round-trips. */
    const char value[] = "a\0b\r\n$3\r\nxyz\r\n*1\xff";
    size_t value_len = sizeof value - 1;
    const char key[] = "k\0ey";
    const char *argv[] = {"SET", key, value};
    size_t lens[] = {3, sizeof key - 1, value_len};
    assert_int_equal (ppm_redis_command_argv (redis, 3, argv, lens, NULL), PPM_REDIS_OK);
    redisReply *reply = NULL;
    const char *get[] = {"GET", key};
    size_t get_lens[] = {3, sizeof key - 1};
    assert_int_equal (ppm_redis_command_argv (redis, 2, get, get_lens, &reply), PPM_REDIS_OK);
    assert_int_equal (reply->type, REDIS_REPLY_STRING);
    assert_int_equal (reply->len, value_len);
    assert_memory_equal (reply->str, value, value_len);
    freeReplyObject (reply);
    /* "k" alone is another key. */
    assert_int_equal (ppm_redis_command (redis, &reply, "EXISTS", "k"), PPM_REDIS_OK);
    assert_int_equal (reply->integer, 0);
    freeReplyObject (reply);

    assert_int_equal (ppm_redis_command (redis, &reply, "INCRBY", "n", "41"), PPM_REDIS_OK);
    assert_int_equal (reply->type, REDIS_REPLY_INTEGER);
    assert_int_equal (reply->integer, 41);
    freeReplyObject (reply);

    /* An error reply is an error with the server's text; the connection stays. */
    reply = (redisReply *)1;
    assert_int_equal (ppm_redis_command (redis, &reply, "INCR", "k"), PPM_REDIS_OK);
    freeReplyObject (reply);
    assert_int_equal (ppm_redis_command (redis, NULL, "SET", "s", "text"), PPM_REDIS_OK);
    reply = (redisReply *)1;
    assert_int_equal (ppm_redis_command (redis, &reply, "INCR", "s"), PPM_REDIS_ERROR_REPLY);
    assert_null (reply);
    assert_non_null (strstr (ppm_redis_error (redis), "not an integer"));
    assert_int_equal (ppm_redis_code (PPM_REDIS_ERROR_REPLY), PPM_INTERNAL);
    assert_int_equal (ppm_redis_ping (redis), PPM_REDIS_OK);
    assert_int_equal (ppm_redis_connects (redis), 1);
    assert_int_equal (ppm_redis_command_argv (redis, 0, argv, NULL, NULL), PPM_REDIS_INVALID);

    /* Database isolation: db 2 does not see db 1's keys. */
    ppm_redis_t *other = s_connect (2, NULL);
    assert_int_equal (ppm_redis_command (other, &reply, "EXISTS", "s"), PPM_REDIS_OK);
    assert_int_equal (reply->integer, 0);
    freeReplyObject (reply);
    ppm_redis_destroy (&other);
    ppm_redis_destroy (&redis);
    ppm_redis_destroy (&redis);
    assert_null (redis);
}

static void
test_redis_urls (void **state)
{
    (void)state;
    const char *bad[] = {"http://127.0.0.1:6379", "redis://",         "redis://host:0",
                         "redis://host:99999",    "redis://host:12x", "redis://host/abc",
                         "redis://user@host"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *error = NULL;
        assert_null (ppm_redis_new (bad[i], NULL, &error));
        assert_non_null (error);
    }
    /* A server that is not there: the object exists, commands fail fast. */
    char url[96];
    snprintf (url, sizeof url, "redis://:secret@127.0.0.1:%d/3", ppm_test_free_port ());
    ppm_redis_t *redis = ppm_redis_new (url, NULL, NULL);
    assert_non_null (redis);
    assert_false (ppm_redis_ready (redis));
    int64_t start = ppm_test_now_ms ();
    assert_int_equal (ppm_redis_ping (redis), PPM_REDIS_UNAVAILABLE);
    assert_int_equal (ppm_redis_ping (redis), PPM_REDIS_UNAVAILABLE);
    assert_true (ppm_test_now_ms () - start < 1000);
    assert_null (strstr (ppm_redis_error (redis), "secret"));
    assert_int_equal (ppm_redis_connects (redis), 0);
    assert_int_equal (ppm_redis_code (PPM_REDIS_UNAVAILABLE), PPM_UNAVAILABLE);
    ppm_redis_destroy (&redis);

    /* A password the server does not expect: AUTH fails, the connection is
       refused, and the password is not in the error. */
    const char *base = getenv ("PPM_TEST_REDIS_URL");
    assert_non_null (base);
    snprintf (url, sizeof url, "redis://:hunter2pass@%s/1", base + strlen ("redis://"));
    redis = ppm_redis_new (url, NULL, NULL);
    assert_non_null (redis);
    assert_false (ppm_redis_ready (redis));
    assert_int_equal (ppm_redis_ping (redis), PPM_REDIS_UNAVAILABLE);
    assert_non_null (strstr (ppm_redis_error (redis), "AUTH"));
    assert_null (strstr (ppm_redis_error (redis), "hunter2pass"));
    ppm_redis_destroy (&redis);
}

static void
test_redis_script_and_noscript (void **state)
{
    (void)state;
    ppm_redis_t *redis = s_connect (3, NULL);
    ppm_redis_script_t *script =
        ppm_redis_script_new ("redis.call('SET', KEYS[1], ARGV[1]);"
                              " return {KEYS[1], ARGV[1], redis.call('STRLEN', KEYS[1])}");
    assert_string_equal (ppm_redis_script_sha (script), "");
    const char *argv[] = {"key", "v\0al"};
    size_t lens[] = {3, 4};
    redisReply *reply = NULL;
    assert_int_equal (ppm_redis_eval (redis, script, 1, 2, argv, lens, &reply), PPM_REDIS_OK);
    assert_int_equal (reply->type, REDIS_REPLY_ARRAY);
    assert_int_equal (reply->elements, 3);
    assert_string_equal (reply->element[0]->str, "key");
    assert_int_equal (reply->element[1]->len, 4);
    assert_memory_equal (reply->element[1]->str, "v\0al", 4);
    assert_int_equal (reply->element[2]->integer, 4);
    freeReplyObject (reply);
    char sha[41];
    snprintf (sha, sizeof sha, "%s", ppm_redis_script_sha (script));
    assert_int_equal (strlen (sha), 40);

    /* After SCRIPT FLUSH, EVALSHA gets NOSCRIPT: reloaded transparently. */
    assert_int_equal (ppm_redis_command (redis, NULL, "SCRIPT", "FLUSH"), PPM_REDIS_OK);
    assert_int_equal (ppm_redis_command (redis, &reply, "SCRIPT", "EXISTS", sha), PPM_REDIS_OK);
    assert_int_equal (reply->element[0]->integer, 0);
    freeReplyObject (reply);
    const char *argv2[] = {"key2", "second"};
    assert_int_equal (ppm_redis_eval (redis, script, 1, 2, argv2, NULL, &reply), PPM_REDIS_OK);
    assert_int_equal (reply->element[2]->integer, 6);
    freeReplyObject (reply);
    assert_int_equal (ppm_redis_command (redis, &reply, "SCRIPT", "EXISTS", sha), PPM_REDIS_OK);
    assert_int_equal (reply->element[0]->integer, 1);
    freeReplyObject (reply);

    /* A script error is an error reply, not a reload loop. */
    ppm_redis_script_t *failing = ppm_redis_script_new ("return redis.error_reply('BOOM no')");
    assert_int_equal (ppm_redis_eval (redis, failing, 0, 0, NULL, NULL, &reply),
                      PPM_REDIS_ERROR_REPLY);
    assert_non_null (strstr (ppm_redis_error (redis), "BOOM"));
    assert_int_equal (ppm_redis_eval (redis, failing, 2, 1, argv, NULL, &reply), PPM_REDIS_INVALID);
    ppm_redis_script_destroy (&failing);
    ppm_redis_script_destroy (&script);
    ppm_redis_script_destroy (&script);
    assert_null (script);
    ppm_redis_destroy (&redis);
}

static void
test_redis_reply_cap_and_timeout (void **state)
{
    (void)state;
    ppm_redis_options_t options = {.command_timeout_ms = 300, .max_reply_bytes = 4096};
    ppm_redis_t *redis = s_connect (4, &options);
    char *big = malloc (100000);
    assert_non_null (big);
    memset (big, 'x', 100000);
    const char *set[] = {"SET", "big", big};
    size_t set_lens[] = {3, 3, 100000};
    assert_int_equal (ppm_redis_command_argv (redis, 3, set, set_lens, NULL), PPM_REDIS_OK);
    free (big);
    redisReply *reply = NULL;
    assert_int_equal (ppm_redis_command (redis, &reply, "GET", "big"), PPM_REDIS_TOO_LARGE);
    assert_null (reply);
    assert_int_equal (ppm_redis_code (PPM_REDIS_TOO_LARGE), PPM_RESOURCE_EXHAUSTED);
    /* Many small elements are capped as well. */
    for (int i = 0; i < 5; i++) {
        const char *push[] = {"RPUSH",      "list",       "0123456789", "0123456789",
                              "0123456789", "0123456789", "0123456789", "0123456789",
                              "0123456789", "0123456789", "0123456789", "0123456789"};
        assert_int_equal (ppm_redis_command_argv (redis, 12, push, NULL, NULL), PPM_REDIS_OK);
    }
    assert_int_equal (ppm_redis_command (redis, &reply, "LRANGE", "list", "0", "-1"), PPM_REDIS_OK);
    assert_int_equal (reply->elements, 50);
    freeReplyObject (reply);
    const char *more[] = {"RPUSH", "list", "0123456789012345678901234567890123456789"};
    for (int i = 0; i < 100; i++)
        assert_int_equal (ppm_redis_command_argv (redis, 3, more, NULL, NULL), PPM_REDIS_OK);
    assert_int_equal (ppm_redis_command (redis, &reply, "LRANGE", "list", "0", "-1"),
                      PPM_REDIS_TOO_LARGE);
    /* The next command works on a fresh connection. */
    uint64_t connects = ppm_redis_connects (redis);
    assert_int_equal (ppm_redis_command (redis, &reply, "STRLEN", "big"), PPM_REDIS_OK);
    assert_int_equal (reply->integer, 100000);
    freeReplyObject (reply);
    assert_int_equal (ppm_redis_connects (redis), connects + 1);

    /* The command timeout bounds a blocking command. */
    int64_t start = ppm_test_now_ms ();
    assert_int_equal (ppm_redis_command (redis, &reply, "BLPOP", "nothing", "5"),
                      PPM_REDIS_UNAVAILABLE);
    int64_t took = ppm_test_now_ms () - start;
    assert_true (took >= 250 && took < 2000);
    assert_non_null (strstr (ppm_redis_error (redis), "timed out"));
    assert_int_equal (ppm_redis_ping (redis), PPM_REDIS_OK);
    ppm_redis_destroy (&redis);
}

static void
test_redis_reconnect_after_restart (void **state)
{
    (void)state;
    ppm_redis_t *redis = s_connect (5, NULL);
    ppm_redis_script_t *script = ppm_redis_script_new ("return redis.call('INCR', KEYS[1])");
    const char *keys[] = {"counter"};
    redisReply *reply = NULL;
    assert_int_equal (ppm_redis_eval (redis, script, 1, 1, keys, NULL, &reply), PPM_REDIS_OK);
    assert_int_equal (reply->integer, 1);
    freeReplyObject (reply);
    assert_int_equal (ppm_redis_connects (redis), 1);

    ppm_test_restart_redis ();
    /* The closed idle connection is noticed and replaced before sending,
       the database index is selected again, and the script (gone from the
       restarted server's cache) is reloaded. */
    assert_int_equal (ppm_redis_eval (redis, script, 1, 1, keys, NULL, &reply), PPM_REDIS_OK);
    freeReplyObject (reply);
    assert_int_equal (ppm_redis_connects (redis), 2);
    assert_true (ppm_redis_ready (redis));
    assert_int_equal (ppm_redis_command (redis, &reply, "CLIENT", "INFO"), PPM_REDIS_OK);
    assert_non_null (strstr (reply->str, "db=5"));
    freeReplyObject (reply);
    ppm_redis_script_destroy (&script);
    ppm_redis_destroy (&redis);
}

typedef struct {
    int replies;     /* callbacks with a reply */
    int failures;    /* callbacks with NULL */
    int type;        /* last reply's type */
    long long value; /* last integer reply */
    char text[64];   /* last string or error reply */
    size_t len;      /* its length */
} s_async_state_t;

static void
s_async_cb (ppm_redis_async_t *redis, redisReply *reply, void *arg)
{
    (void)redis;
    s_async_state_t *st = arg;
    if (!reply) {
        st->failures++;
        return;
    }
    st->replies++;
    st->type = reply->type;
    st->value = reply->integer;
    st->len = 0;
    if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_ERROR ||
        reply->type == REDIS_REPLY_STATUS) {
        st->len = reply->len < sizeof st->text ? reply->len : sizeof st->text;
        memcpy (st->text, reply->str, st->len);
    }
}

typedef struct {
    bool (*done) (void *arg); /* stop condition */
    void *arg;
} s_until_t;

static int
s_check_done (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_until_t *until = arg;
    return until->done (until->arg) ? -1 : 0;
}

static int
s_give_up (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    (void)arg;
    return -1;
}

/* Runs the loop until done (arg) or timeout_ms; returns done (arg). */
static bool
s_run_until (zloop_t *loop, bool (*done) (void *), void *arg, int timeout_ms)
{
    s_until_t until = {done, arg};
    int check = zloop_timer (loop, 5, 0, s_check_done, &until);
    int limit = zloop_timer (loop, (size_t)timeout_ms, 1, s_give_up, NULL);
    zloop_start (loop);
    zloop_timer_end (loop, check);
    zloop_timer_end (loop, limit);
    return done (arg);
}

static int s_want;
static bool
s_replies_reached (void *arg)
{
    return ((s_async_state_t *)arg)->replies >= s_want;
}
static bool
s_failures_reached (void *arg)
{
    return ((s_async_state_t *)arg)->failures >= s_want;
}
static bool
s_disconnected (void *arg)
{
    return !ppm_redis_async_connected ((ppm_redis_async_t *)arg);
}

static void
test_redis_async_in_zloop (void **state)
{
    (void)state;
    char *url = ppm_test_redis_url (6);
    zloop_t *loop = zloop_new ();
    ppm_redis_options_t options = {.command_timeout_ms = 300};
    ppm_redis_async_t *redis = ppm_redis_async_new (loop, url, &options, NULL);
    free (url);
    assert_non_null (redis);
    s_async_state_t st = {0};

    /* Binary-safe commands, answered in order from the loop. */
    const char value[] = "v\0\r\nal";
    const char *set[] = {"SET", "k", value};
    size_t set_lens[] = {3, 1, sizeof value - 1};
    assert_int_equal (ppm_redis_async_command_argv (redis, s_async_cb, &st, 3, set, set_lens), 0);
    const char *incr[] = {"INCR", "n"};
    for (int i = 0; i < 3; i++)
        assert_int_equal (ppm_redis_async_command_argv (redis, s_async_cb, &st, 2, incr, NULL), 0);
    const char *get[] = {"GET", "k"};
    assert_int_equal (ppm_redis_async_command_argv (redis, s_async_cb, &st, 2, get, NULL), 0);
    assert_true (ppm_redis_async_pending (redis) >= 5); /* plus SELECT */
    s_want = 5;
    assert_true (s_run_until (loop, s_replies_reached, &st, 3000));
    assert_int_equal (st.failures, 0);
    assert_int_equal (st.len, sizeof value - 1);
    assert_memory_equal (st.text, value, sizeof value - 1);
    assert_int_equal (ppm_redis_async_pending (redis), 0);
    assert_true (ppm_redis_async_connected (redis));
    assert_int_equal (ppm_redis_async_connects (redis), 1);

    /* The database index was selected: the sync view of db 6 sees "n". */
    char *url6 = NULL;
    assert_true (asprintf (&url6, "%s/6", getenv ("PPM_TEST_REDIS_URL")) > 0);
    ppm_redis_t *sync = ppm_redis_new (url6, NULL, NULL);
    free (url6);
    redisReply *reply = NULL;
    assert_int_equal (ppm_redis_command (sync, &reply, "GET", "n"), PPM_REDIS_OK);
    assert_string_equal (reply->str, "3");
    freeReplyObject (reply);
    ppm_redis_destroy (&sync);

    /* An error reply is a reply. */
    const char *bad[] = {"INCR", "k"};
    assert_int_equal (ppm_redis_async_command_argv (redis, s_async_cb, &st, 2, bad, NULL), 0);
    s_want = 6;
    assert_true (s_run_until (loop, s_replies_reached, &st, 3000));
    assert_int_equal (st.type, REDIS_REPLY_ERROR);

    /* The command timeout bounds a command that does not answer. */
    const char *blpop[] = {"BLPOP", "nothing", "5"};
    int64_t start = ppm_test_now_ms ();
    assert_int_equal (ppm_redis_async_command_argv (redis, s_async_cb, &st, 3, blpop, NULL), 0);
    s_want = 1;
    assert_true (s_run_until (loop, s_failures_reached, &st, 3000));
    int64_t took = ppm_test_now_ms () - start;
    assert_true (took >= 250 && took < 2000);
    assert_non_null (strstr (ppm_redis_async_error (redis), "timed out"));
    assert_false (ppm_redis_async_connected (redis));

    /* The next command reconnects. */
    const char *ping[] = {"PING"};
    assert_int_equal (ppm_redis_async_command_argv (redis, s_async_cb, &st, 1, ping, NULL), 0);
    s_want = 7;
    assert_true (s_run_until (loop, s_replies_reached, &st, 3000));
    assert_int_equal (ppm_redis_async_connects (redis), 2);

    /* A Redis restart is noticed by the loop; the next command reconnects. */
    ppm_test_restart_redis ();
    assert_true (s_run_until (loop, s_disconnected, redis, 3000));
    assert_int_equal (ppm_redis_async_command_argv (redis, s_async_cb, &st, 1, ping, NULL), 0);
    s_want = 8;
    assert_true (s_run_until (loop, s_replies_reached, &st, 3000));
    assert_int_equal (ppm_redis_async_connects (redis), 3);

    /* Destroy with a command outstanding: its callback gets NULL. */
    assert_int_equal (ppm_redis_async_command_argv (redis, s_async_cb, &st, 3, blpop, NULL), 0);
    ppm_redis_async_destroy (&redis);
    ppm_redis_async_destroy (&redis);
    assert_null (redis);
    assert_int_equal (st.failures, 2);

    /* A server that is not there: the callback gets NULL, then back-off
       refuses commands at once. */
    char down[64];
    snprintf (down, sizeof down, "redis://127.0.0.1:%d", ppm_test_free_port ());
    redis = ppm_redis_async_new (loop, down, NULL, NULL);
    assert_non_null (redis);
    assert_int_equal (ppm_redis_async_command_argv (redis, s_async_cb, &st, 1, ping, NULL), 0);
    s_want = 3;
    assert_true (s_run_until (loop, s_failures_reached, &st, 3000));
    assert_true (strlen (ppm_redis_async_error (redis)) > 0);
    assert_int_equal (ppm_redis_async_command_argv (redis, s_async_cb, &st, 1, ping, NULL), -1);
    ppm_redis_async_destroy (&redis);
    zloop_destroy (&loop);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_redis_commands_binary_safe),
        cmocka_unit_test (test_redis_urls),
        cmocka_unit_test (test_redis_script_and_noscript),
        cmocka_unit_test (test_redis_reply_cap_and_timeout),
        cmocka_unit_test (test_redis_reconnect_after_restart),
        cmocka_unit_test (test_redis_async_in_zloop),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
