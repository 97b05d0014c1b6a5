/*  ppm-echo: a ppm_rpc server with one method, "echo.Echo"
    (proto/echo.proto), for tests that need a server in another process and
    for measuring the RPC layer without any service logic.

    It binds PPM_RPC_BIND (default tcp://127.0.0.1:*), writes the endpoint
    actually bound as the first line on stdout (so a test can bind port 0
    and read the port), and runs until SIGTERM or SIGINT. A request's
    sleep_ms holds the reply that long on a zloop timer (never blocking the
    loop), which is how tests produce slow answers. It also stops when its
    parent process goes away (checked every 200 ms), so a test that dies
    before stopping it leaves nothing running.
*/
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "ppm_clock.h"
#include "ppm_env.h"
#include "ppm_log.h"
#include "ppm_rpc.h"
#include "proto/echo.pb-c.h"

#define S_SLEEP_MAX_MS 60000

typedef struct {
    zloop_t *loop;  /* the only loop */
    zlistx_t *held; /* s_held_t waiting for their timer */
} s_echo_t;

typedef struct {
    s_echo_t *echo;       /* owner */
    ppm_rpc_call_t *call; /* the call to answer */
    void *handle;         /* entry in echo->held */
} s_held_t;

static void
s_answer (ppm_rpc_call_t **call_p)
{
    Ppm__V1__EchoRequest *req =
        (Ppm__V1__EchoRequest *)ppm_rpc_call_unpack (*call_p, &ppm__v1__echo_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (call_p, PPM_INVALID_ARGUMENT, "the payload is not an EchoRequest");
        return;
    }
    Ppm__V1__EchoReply reply = PPM__V1__ECHO_REPLY__INIT;
    reply.data = req->data;
    ppm_rpc_call_reply (call_p, &reply.base);
    protobuf_c_message_free_unpacked (&req->base, NULL);
}

static int
s_held_fire (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    s_held_t *held = (s_held_t *)arg;
    s_answer (&held->call);
    zlistx_delete (held->echo->held, held->handle);
    free (held);
    return 0;
}

static void
s_echo (ppm_rpc_call_t *call, void *arg)
{
    s_echo_t *self = (s_echo_t *)arg;
    Ppm__V1__EchoRequest *req =
        (Ppm__V1__EchoRequest *)ppm_rpc_call_unpack (call, &ppm__v1__echo_request__descriptor);
    if (!req) {
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "the payload is not an EchoRequest");
        return;
    }
    int32_t sleep_ms = req->sleep_ms;
    protobuf_c_message_free_unpacked (&req->base, NULL);
    if (sleep_ms < 0 || sleep_ms > S_SLEEP_MAX_MS) {
        ppm_status_t *status = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid request");
        ppm_status_add_field (status, "sleep_ms", "must be 0 to %d", S_SLEEP_MAX_MS);
        ppm_rpc_call_fail (&call, &status);
        return;
    }
    if (sleep_ms == 0) {
        s_answer (&call);
        return;
    }
    s_held_t *held = (s_held_t *)zmalloc (sizeof (s_held_t));
    assert (held);
    held->echo = self;
    held->call = call;
    held->handle = zlistx_add_end (self->held, held);
    zloop_timer (self->loop, (size_t)sleep_ms, 1, s_held_fire, held);
}

/* Ends the loop once the parent that started us is gone. */
static int
s_parent_check (zloop_t *loop, int timer_id, void *arg)
{
    (void)loop;
    (void)timer_id;
    pid_t parent = *(pid_t *)arg;
    return getppid () == parent ? 0 : -1;
}

int
main (void)
{
    char *bind = NULL;
    ppm_env_t env[] = {
        {"PPM_RPC_BIND", PPM_ENV_STRING, .def = "tcp://127.0.0.1:*", .out = &bind,
         .help = "endpoint the echo ROUTER binds"},
        {NULL},
    };
    ppm_log_init ("echo");
    const char *error = NULL;
    if (ppm_env_load (env, &error) || ppm_clock_init (&error)) {
        fprintf (stderr, "ppm-echo: %s\n", error);
        return 1;
    }
    s_echo_t self = {0};
    self.loop = zloop_new ();
    self.held = zlistx_new ();
    ppm_rpc_server_t *server = ppm_rpc_server_new (self.loop, bind);
    if (!server) {
        fprintf (stderr, "ppm-echo: cannot bind %s\n", bind);
        return 1;
    }
    ppm_rpc_server_handle (server, "echo.Echo", s_echo, &self);
    printf ("%s\n", ppm_rpc_server_endpoint (server));
    fflush (stdout);
    pid_t parent = getppid ();
    zloop_timer (self.loop, 200, 0, s_parent_check, &parent);
    zloop_start (self.loop); /* ends on SIGTERM/SIGINT (czmq's handler) */

    s_held_t *held = (s_held_t *)zlistx_first (self.held);
    while (held) {
        ppm_rpc_call_discard (&held->call);
        free (held);
        held = (s_held_t *)zlistx_next (self.held);
    }
    zlistx_destroy (&self.held);
    ppm_rpc_server_destroy (&server);
    zloop_destroy (&self.loop);
    ppm_env_free (env);
    return 0;
}
