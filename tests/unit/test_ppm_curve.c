/*  ppm_curve: a client with an accepted key talks to a CURVE server over a
    real TCP connection; a client with any other key is refused and the
    refusal is counted; bad configuration is refused with the variable
    named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ppm_curve.h"

typedef struct {
    char server_public[41], server_secret[41];
    char client_public[41], client_secret[41];
    char other_public[41], other_secret[41];
} keys_t;

static void
s_keys (keys_t *k)
{
    assert_int_equal (ppm_curve_keypair (k->server_public, k->server_secret), 0);
    assert_int_equal (ppm_curve_keypair (k->client_public, k->client_secret), 0);
    assert_int_equal (ppm_curve_keypair (k->other_public, k->other_secret), 0);
}

static void
s_clear_env (void)
{
    unsetenv ("PPM_CURVE");
    unsetenv ("PPM_CURVE_SECRET_KEY");
    unsetenv ("PPM_CURVE_SERVER_SECRET_KEY");
    unsetenv ("PPM_CURVE_SERVER_KEY");
    unsetenv ("PPM_CURVE_CLIENT_KEYS");
}

/* Sends "ping" from a DEALER configured as the process's CURVE client and
   says whether the server received it within 1 s. */
static bool
s_delivered (zsock_t *server, int port)
{
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    assert_int_equal (ppm_curve_client (dealer), 0);
    zsock_connect (dealer, "tcp://127.0.0.1:%d", port);
    zstr_send (dealer, "ping");
    zsock_set_rcvtimeo (server, 1000);
    zmsg_t *msg = zmsg_recv (server);
    bool ok = msg != NULL;
    zmsg_destroy (&msg);
    zsock_destroy (&dealer);
    return ok;
}

static void
test_accepted_and_refused (void **state)
{
    (void)state;
    keys_t k;
    s_keys (&k);
    setenv ("PPM_CURVE", "on", 1);
    setenv ("PPM_CURVE_SERVER_SECRET_KEY", k.server_secret, 1);
    setenv ("PPM_CURVE_SECRET_KEY", k.client_secret, 1);
    setenv ("PPM_CURVE_CLIENT_KEYS", k.client_public, 1);
    const char *error = NULL;
    assert_int_equal (ppm_curve_init (&error), 0);
    assert_true (ppm_curve_enabled ());

    zsock_t *server = zsock_new (ZMQ_ROUTER);
    zactor_t *watch = NULL;
    assert_int_equal (ppm_curve_server (server, &watch), 0);
    assert_non_null (watch);
    int port = zsock_bind (server, "tcp://127.0.0.1:*");
    assert_true (port > 0);

    assert_true (s_delivered (server, port));

    /* Same server key, but a client key the server was not given. */
    uint64_t before = ppm_curve_auth_failures ();
    setenv ("PPM_CURVE_SECRET_KEY", k.other_secret, 1);
    /* Re-init replaces the client key pair; the server socket keeps its
       options, and the new zauth keeps the same allowed list. */
    assert_int_equal (ppm_curve_init (&error), 0);
    assert_false (s_delivered (server, port));
    zpoller_t *poller = zpoller_new (watch, NULL);
    while (zpoller_wait (poller, 500))
        ppm_curve_watch_handle (watch);
    zpoller_destroy (&poller);
    assert_true (ppm_curve_auth_failures () > before);

    zactor_destroy (&watch);
    zsock_destroy (&server);
    ppm_curve_shutdown ();
    s_clear_env ();
}

static void
test_plain_client_refused (void **state)
{
    (void)state;
    keys_t k;
    s_keys (&k);
    setenv ("PPM_CURVE", "on", 1);
    setenv ("PPM_CURVE_SERVER_SECRET_KEY", k.server_secret, 1);
    setenv ("PPM_CURVE_SECRET_KEY", k.client_secret, 1);
    setenv ("PPM_CURVE_CLIENT_KEYS", k.client_public, 1);
    const char *error = NULL;
    assert_int_equal (ppm_curve_init (&error), 0);
    zsock_t *server = zsock_new (ZMQ_ROUTER);
    assert_int_equal (ppm_curve_server (server, NULL), 0);
    int port = zsock_bind (server, "tcp://127.0.0.1:*");
    /* A client that does not speak CURVE at all never gets through. */
    zsock_t *plain = zsock_new (ZMQ_DEALER);
    zsock_connect (plain, "tcp://127.0.0.1:%d", port);
    zstr_send (plain, "ping");
    zsock_set_rcvtimeo (server, 500);
    zmsg_t *msg = zmsg_recv (server);
    assert_null (msg);
    zsock_destroy (&plain);
    zsock_destroy (&server);
    ppm_curve_shutdown ();
    s_clear_env ();
}

static void
test_configuration_errors (void **state)
{
    (void)state;
    keys_t k;
    s_keys (&k);
    const char *error = NULL;
    s_clear_env ();
    assert_int_equal (ppm_curve_init (&error), 0);
    assert_false (ppm_curve_enabled ());
    zsock_t *sock = zsock_new (ZMQ_ROUTER);
    zactor_t *watch = NULL;
    assert_int_equal (ppm_curve_server (sock, &watch), 0);
    assert_null (watch);
    zsock_destroy (&sock);

    setenv ("PPM_CURVE", "maybe", 1);
    assert_int_equal (ppm_curve_init (&error), -1);
    assert_non_null (strstr (error, "PPM_CURVE:"));

    setenv ("PPM_CURVE", "on", 1);
    setenv ("PPM_CURVE_SECRET_KEY", "short", 1);
    assert_int_equal (ppm_curve_init (&error), -1);
    assert_non_null (strstr (error, "PPM_CURVE_SECRET_KEY"));

    setenv ("PPM_CURVE_SECRET_KEY", k.client_secret, 1);
    assert_int_equal (ppm_curve_init (&error), -1);
    assert_non_null (strstr (error, "PPM_CURVE_SERVER_KEY"));

    setenv ("PPM_CURVE_SERVER_SECRET_KEY", k.server_secret, 1);
    setenv ("PPM_CURVE_SERVER_KEY", k.other_public, 1);
    assert_int_equal (ppm_curve_init (&error), -1);
    assert_non_null (strstr (error, "public half"));

    unsetenv ("PPM_CURVE_SERVER_KEY");
    setenv ("PPM_CURVE_CLIENT_KEYS", "not-a-key", 1);
    assert_int_equal (ppm_curve_init (&error), -1);
    assert_non_null (strstr (error, "PPM_CURVE_CLIENT_KEYS"));

    char derived[41];
    assert_int_equal (ppm_curve_public_of (k.server_secret, derived), 0);
    assert_string_equal (derived, k.server_public);
    assert_int_equal (ppm_curve_public_of ("x", derived), -1);
    s_clear_env ();
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_accepted_and_refused),
        cmocka_unit_test (test_plain_client_refused),
        cmocka_unit_test (test_configuration_errors),
    };
    int rc = cmocka_run_group_tests (tests, NULL, NULL);
    zsys_shutdown ();
    return rc;
}
