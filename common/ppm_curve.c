/*  ppm_curve: see ppm_curve.h. One process-wide configuration, set from the
    environment by the main thread before any socket exists and only read
    afterwards; the failure counter is atomic because several actors' loops
    update it. A process that never called ppm_curve_init (a test binary, a
    tool) is configured on its first socket, under a mutex because that may
    happen in several actors at once.
*/
#include "ppm_curve.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define S_KEY_TEXT 40 /* Z85 length of a 32-byte key */

typedef struct {
    bool enabled;                       /* PPM_CURVE is on */
    bool serving;                       /* this process holds the server secret */
    zcert_t *server;                    /* server key pair (serving only) */
    zcert_t *client;                    /* this process's client key pair */
    char server_public[S_KEY_TEXT + 1]; /* the key clients expect from servers */
    zactor_t *auth;                     /* zauth, when serving */
} s_curve_t;

static s_curve_t s_curve;
static atomic_uint_fast64_t s_failures;
static atomic_bool s_configured; /* ppm_curve_init ran (and no shutdown since) */
static pthread_mutex_t s_lazy = PTHREAD_MUTEX_INITIALIZER;

/* Configures the process from the environment if nothing did yet.
   Returns 0, or -1 when the environment is invalid (logged by nobody: the
   socket that needed it fails). */
static int
s_ensure (void)
{
    if (atomic_load (&s_configured))
        return 0;
    pthread_mutex_lock (&s_lazy);
    int rc = 0;
    if (!atomic_load (&s_configured))
        rc = ppm_curve_init (NULL);
    pthread_mutex_unlock (&s_lazy);
    return rc;
}

static bool
s_is_key (const char *text)
{
    if (!text || strlen (text) != S_KEY_TEXT)
        return false;
    uint8_t bin[32];
    return zmq_z85_decode (bin, text) != NULL;
}

int
ppm_curve_public_of (const char *secret_z85, char public_z85[41])
{
    if (!s_is_key (secret_z85))
        return -1;
    return zmq_curve_public (public_z85, secret_z85) == 0 ? 0 : -1;
}

int
ppm_curve_keypair (char public_z85[41], char secret_z85[41])
{
    return zmq_curve_keypair (public_z85, secret_z85) == 0 ? 0 : -1;
}

/* A certificate from Z85 keys; secret may be NULL (a public-only cert). */
static zcert_t *
s_cert_new (const char *public_z85, const char *secret_z85)
{
    uint8_t public_key[32] = {0};
    uint8_t secret_key[32] = {0};
    if (!zmq_z85_decode (public_key, public_z85))
        return NULL;
    if (secret_z85 && !zmq_z85_decode (secret_key, secret_z85))
        return NULL;
    return zcert_new_from (public_key, secret_key);
}

void
ppm_curve_shutdown (void)
{
    zactor_destroy (&s_curve.auth);
    zcert_destroy (&s_curve.server);
    zcert_destroy (&s_curve.client);
    memset (&s_curve, 0, sizeof s_curve);
    atomic_store (&s_configured, false);
}

bool
ppm_curve_enabled (void)
{
    s_ensure ();
    return s_curve.enabled;
}

static int
s_fail (const char **error, const char *line)
{
    if (error)
        *error = line;
    ppm_curve_shutdown ();
    return -1;
}

/* Loads the allowed client keys into a new certificate store. */
static zcertstore_t *
s_allowed_clients (const char *list)
{
    zcertstore_t *store = zcertstore_new (NULL);
    char *copy = strdup (list ? list : "");
    char *rest = copy;
    char *item;
    int count = 0;
    while ((item = strsep (&rest, ",")) != NULL) {
        while (*item == ' ')
            item++;
        if (*item == '\0')
            continue;
        zcert_t *cert = s_is_key (item) ? s_cert_new (item, NULL) : NULL;
        if (!cert) {
            zcertstore_destroy (&store);
            break;
        }
        zcertstore_insert (store, &cert);
        count++;
    }
    free (copy);
    if (store && count == 0)
        zcertstore_destroy (&store);
    return store;
}

int
ppm_curve_init (const char **error)
{
    ppm_curve_shutdown ();
    const char *on = getenv ("PPM_CURVE");
    atomic_store (&s_configured, true);
    if (!on || !*on || streq (on, "off") || streq (on, "0") || streq (on, "false"))
        return 0;
    if (!streq (on, "on") && !streq (on, "1") && !streq (on, "true"))
        return s_fail (error, "PPM_CURVE: must be on or off");
    s_curve.enabled = true;

    const char *client_secret = getenv ("PPM_CURVE_SECRET_KEY");
    char client_public[S_KEY_TEXT + 1];
    if (ppm_curve_public_of (client_secret, client_public))
        return s_fail (error, "PPM_CURVE_SECRET_KEY: must be a Z85 secret key (40 characters)");
    s_curve.client = s_cert_new (client_public, client_secret);

    const char *server_secret = getenv ("PPM_CURVE_SERVER_SECRET_KEY");
    const char *server_key = getenv ("PPM_CURVE_SERVER_KEY");
    if (server_secret && *server_secret) {
        char server_public[S_KEY_TEXT + 1];
        if (ppm_curve_public_of (server_secret, server_public))
            return s_fail (error,
                           "PPM_CURVE_SERVER_SECRET_KEY: must be a Z85 secret key (40 characters)");
        if (server_key && *server_key && !streq (server_key, server_public))
            return s_fail (error, "PPM_CURVE_SERVER_KEY: is not the public half of "
                                  "PPM_CURVE_SERVER_SECRET_KEY");
        s_curve.server = s_cert_new (server_public, server_secret);
        memcpy (s_curve.server_public, server_public, sizeof server_public);
        s_curve.serving = true;
    } else if (s_is_key (server_key)) {
        memcpy (s_curve.server_public, server_key, S_KEY_TEXT + 1);
    } else {
        return s_fail (error, "PPM_CURVE_SERVER_KEY: must be a Z85 public key (40 characters) "
                              "when PPM_CURVE_SERVER_SECRET_KEY is not set");
    }

    if (s_curve.serving) {
        zcertstore_t *store = s_allowed_clients (getenv ("PPM_CURVE_CLIENT_KEYS"));
        if (!store)
            return s_fail (error, "PPM_CURVE_CLIENT_KEYS: must list one or more Z85 public "
                                  "keys, comma-separated");
        /* zauth takes the store and checks every CURVE handshake of the
           process against it. */
        s_curve.auth = zactor_new (zauth, store);
        if (!s_curve.auth)
            return s_fail (error, "PPM_CURVE: could not start the authenticator");
        /* zauth must be stopped before czmq's exit handler runs, whatever
           path the process leaves by: czmq registered its handler when
           zauth made the first socket, so ours, registered after, runs
           first. */
        static bool registered = false;
        if (!registered)
            registered = atexit (ppm_curve_shutdown) == 0;
    }
    return 0;
}

int
ppm_curve_server (zsock_t *sock, zactor_t **watch_p)
{
    if (watch_p)
        *watch_p = NULL;
    if (s_ensure () == -1)
        return -1;
    if (!s_curve.enabled)
        return 0;
    if (!s_curve.serving)
        return -1; /* a process without the server secret cannot serve */
    zcert_apply (s_curve.server, sock);
    zsock_set_curve_server (sock, 1);
    zsock_set_zap_domain (sock, "ppm");
    if (watch_p) {
        zactor_t *watch = zactor_new (zmonitor, sock);
        if (!watch)
            return -1;
        zstr_sendx (watch, "LISTEN", "HANDSHAKE_FAILED_AUTH", NULL);
        zstr_send (watch, "START");
        zsock_wait (watch);
        *watch_p = watch;
    }
    return 0;
}

int
ppm_curve_watch_handle (zactor_t *watch)
{
    zmsg_t *event = zmsg_recv (watch);
    if (!event)
        return 0;
    char *name = zmsg_popstr (event);
    if (name && streq (name, "HANDSHAKE_FAILED_AUTH"))
        atomic_fetch_add (&s_failures, 1);
    free (name);
    zmsg_destroy (&event);
    return 0;
}

int
ppm_curve_client (zsock_t *sock)
{
    if (s_ensure () == -1)
        return -1;
    if (!s_curve.enabled)
        return 0;
    zcert_apply (s_curve.client, sock);
    zsock_set_curve_serverkey (sock, s_curve.server_public);
    return 0;
}

uint64_t
ppm_curve_auth_failures (void)
{
    return atomic_load (&s_failures);
}
