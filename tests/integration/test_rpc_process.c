/*  RPC between two processes: this test spawns tools/ppm-echo (from
    PPM_BIN_DIR, else the build's bin/ next to this binary), reads the
    endpoint it bound from its first stdout line, and drives it with
    ppm_rpc_client over TCP: round trip, 1000 requests in flight, a server
    that answers after the deadline, a payload the server refuses, and a
    clean stop on SIGTERM.
*/
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <libgen.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ppm_rpc.h"
#include "proto/echo.pb-c.h"

extern char **environ;

typedef struct {
    pid_t pid;
    char endpoint[256];
} s_child_t;

static void
s_bin_path (char *path, size_t size)
{
    const char *dir = getenv ("PPM_BIN_DIR");
    if (dir && *dir) {
        snprintf (path, size, "%s/ppm-echo", dir);
        return;
    }
    /* build/tests/integration/test_rpc_process -> build/bin/ppm-echo */
    char self[1024];
    ssize_t n = readlink ("/proc/self/exe", self, sizeof self - 1);
    assert_true (n > 0);
    self[n] = '\0';
    snprintf (path, size, "%s/../../bin/ppm-echo", dirname (self));
}

static void
s_spawn (s_child_t *child)
{
    char path[1200];
    s_bin_path (path, sizeof path);
    int fds[2];
    assert_int_equal (pipe (fds), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init (&actions);
    posix_spawn_file_actions_adddup2 (&actions, fds[1], 1);
    posix_spawn_file_actions_addclose (&actions, fds[0]);
    char *argv[] = {path, NULL};
    setenv ("PPM_RPC_BIND", "tcp://127.0.0.1:*", 1);
    int rc = posix_spawn (&child->pid, path, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy (&actions);
    close (fds[1]);
    assert_int_equal (rc, 0);
    FILE *out = fdopen (fds[0], "r");
    assert_non_null (out);
    assert_non_null (fgets (child->endpoint, sizeof child->endpoint, out));
    fclose (out);
    child->endpoint[strcspn (child->endpoint, "\n")] = '\0';
    assert_non_null (strstr (child->endpoint, "tcp://127.0.0.1:"));
}

/* A NUL-terminated copy of len bytes (which hold no NUL of their own). */
static char *
s_text_dup (const uint8_t *data, size_t len)
{
    char *text = (char *)malloc (len + 1);
    assert_non_null (text);
    if (len)
        memcpy (text, data, len);
    text[len] = '\0';
    return text;
}

static ppm_status_t *
s_echo (ppm_rpc_client_t *client, const char *text, int sleep_ms, int timeout_ms, char **back)
{
    Ppm__V1__EchoRequest req = PPM__V1__ECHO_REQUEST__INIT;
    req.data.data = (uint8_t *)text;
    req.data.len = strlen (text);
    req.sleep_ms = sleep_ms;
    ppm_rpc_req_t r = {.method = "echo.Echo", .tenant = "t_1", .timeout_ms = timeout_ms};
    Ppm__V1__EchoReply *reply = NULL;
    ppm_status_t *status = ppm_rpc_client_call_sync (
        client, &r, &req.base, &ppm__v1__echo_reply__descriptor, (ProtobufCMessage **)&reply);
    if (back)
        *back = reply ? s_text_dup (reply->data.data, reply->data.len) : NULL;
    if (reply)
        protobuf_c_message_free_unpacked (&reply->base, NULL);
    return status;
}

typedef struct {
    int done;
    int mismatched;
} s_count_t;

typedef struct {
    s_count_t *count;
    int index;
} s_slot_t;

static void
s_on_reply (const ppm_status_t *status, const uint8_t *payload, size_t size, void *arg)
{
    s_slot_t *slot = (s_slot_t *)arg;
    slot->count->done++;
    char expected[16];
    snprintf (expected, sizeof expected, "%d", slot->index);
    Ppm__V1__EchoReply *reply = status ? NULL : ppm__v1__echo_reply__unpack (NULL, size, payload);
    if (!reply || reply->data.len != strlen (expected) ||
        memcmp (reply->data.data, expected, reply->data.len))
        slot->count->mismatched++;
    if (reply)
        ppm__v1__echo_reply__free_unpacked (reply, NULL);
}

static int
s_until_done (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_count_t *count = (s_count_t *)arg;
    return count->done >= 1000 ? -1 : 0;
}

static void
test_echo_in_another_process (void **state)
{
    (void)state;
    s_child_t child;
    s_spawn (&child);
    ppm_rpc_client_t *client = ppm_rpc_client_new (child.endpoint);
    assert_non_null (client);

    ppm_rpc_req_t ping = {.method = "sys.Ping", .timeout_ms = 5000, .idempotent = true};
    ppm_status_t *status = ppm_rpc_client_call_sync (client, &ping, NULL, NULL, NULL);
    assert_null (status);

    char *back = NULL;
    status = s_echo (client, "across processes", 0, 2000, &back);
    assert_null (status);
    assert_string_equal (back, "across processes");
    free (back);

    /* 1000 in flight, every reply matched to its request. */
    zloop_t *loop = zloop_new ();
    ppm_rpc_client_attach (client, loop);
    static s_slot_t slots[1000];
    s_count_t count = {0, 0};
    for (int i = 0; i < 1000; i++) {
        char text[16];
        snprintf (text, sizeof text, "%d", i);
        Ppm__V1__EchoRequest req = PPM__V1__ECHO_REQUEST__INIT;
        req.data.data = (uint8_t *)text;
        req.data.len = strlen (text);
        slots[i] = (s_slot_t){&count, i};
        ppm_rpc_req_t r = {.method = "echo.Echo", .timeout_ms = 10000};
        assert_int_equal (ppm_rpc_client_call (client, &r, &req.base, s_on_reply, &slots[i]), 0);
    }
    int timer = zloop_timer (loop, 5, 0, s_until_done, &count);
    zloop_start (loop);
    zloop_timer_end (loop, timer);
    assert_int_equal (count.done, 1000);
    assert_int_equal (count.mismatched, 0);

    /* The server answers after the deadline. */
    status = s_echo (client, "late", 500, 100, NULL);
    assert_non_null (status);
    assert_int_equal (ppm_status_code (status), PPM_DEADLINE_EXCEEDED);
    ppm_status_destroy (&status);

    /* A field the server refuses, named. */
    status = s_echo (client, "x", -5, 2000, NULL);
    assert_non_null (status);
    assert_int_equal (ppm_status_code (status), PPM_INVALID_ARGUMENT);
    assert_non_null (ppm_status_field_find (status, "sleep_ms"));
    ppm_status_destroy (&status);

    /* Unknown method, across the process boundary too. */
    ppm_rpc_req_t unknown = {.method = "echo.Nope"};
    status = ppm_rpc_client_call_sync (client, &unknown, NULL, NULL, NULL);
    assert_non_null (status);
    assert_int_equal (ppm_status_code (status), PPM_UNIMPLEMENTED);
    ppm_status_destroy (&status);

    /* A call still held by the server when it stops: it exits cleanly. */
    Ppm__V1__EchoRequest req = PPM__V1__ECHO_REQUEST__INIT;
    req.sleep_ms = 5000;
    ppm_rpc_req_t held = {.method = "echo.Echo", .timeout_ms = 10000};
    s_count_t ignored = {0, 0};
    s_slot_t slot = {&ignored, -1};
    ppm_rpc_client_call (client, &held, &req.base, s_on_reply, &slot);
    zclock_sleep (100);

    assert_int_equal (kill (child.pid, SIGTERM), 0);
    int wstatus = 0;
    assert_int_equal (waitpid (child.pid, &wstatus, 0), child.pid);
    assert_true (WIFEXITED (wstatus));
    assert_int_equal (WEXITSTATUS (wstatus), 0);

    ppm_rpc_client_destroy (&client);
    assert_int_equal (ignored.done, 1); /* cancelled by destroy */
    zloop_destroy (&loop);
}

int
main (void)
{
    zsys_init ();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_echo_in_another_process),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
