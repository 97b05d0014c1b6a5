/*  ppm_curve: CURVE encryption and authentication of ppm's ZeroMQ links.

    When PPM_CURVE is on, every RPC and event socket is encrypted and both
    ends are authenticated:
      - servers (ROUTER, PUB) prove themselves with the deployment's server
        key pair (PPM_CURVE_SERVER_SECRET_KEY; its public half is derived);
      - clients (DEALER, SUB) prove themselves with their own key pair
        (PPM_CURVE_SECRET_KEY) and check the server's public key
        (PPM_CURVE_SERVER_KEY, or derived from the server secret when this
        process holds it);
      - a server accepts only the client public keys it is given
        (PPM_CURVE_CLIENT_KEYS, comma-separated), checked by czmq's zauth
        with an in-memory certificate store; a refused handshake is counted
        (ppm_curve_auth_failures) for the ppm_curve_auth_failures_total metric.
    Keys are Z85 text (40 characters), as `ppmctl curve-keygen` prints them.
    All servers of one deployment share the server key pair: a client checks
    that it talks to *a* ppm server of its deployment; each server checks
    exactly which clients may talk to it.

    When PPM_CURVE is off (the default, and in the local demo), every call
    here is a no-op and sockets stay in the clear on loopback.
*/
#ifndef PPM_CURVE_H_INCLUDED
#define PPM_CURVE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

/* Reads the PPM_CURVE* variables and, when a server key is configured,
   starts the process's zauth actor. Returns 0, or -1 with *error set to
   one line naming the variable. Call once from main before any socket is
   made; calling again replaces the configuration (tests). A process that
   never calls it is configured from the environment when its first socket
   needs it (ppm_curve_server/_client then return -1 if that fails), so
   every binary that uses libppm honours PPM_CURVE. */
int ppm_curve_init (const char **error);
/* Stops zauth and forgets the keys. Safe to call twice. */
void ppm_curve_shutdown (void);
bool ppm_curve_enabled (void);

/* Makes sock a CURVE server (before bind) and, when watch_p is not NULL,
   starts a zmonitor on it that counts refused handshakes; the caller reads
   the monitor's events with ppm_curve_watch_handle from its own loop and
   must destroy the watch (zactor_destroy) BEFORE the socket. With CURVE off
   it does nothing and *watch_p is NULL. Returns 0 or -1. */
int ppm_curve_server (zsock_t *sock, zactor_t **watch_p);
/* Reads one event from a watch made by ppm_curve_server and counts it if
   it is a refused handshake. Returns 0. Fits zloop_reader's signature when
   wrapped; see ppm_rpc.c. */
int ppm_curve_watch_handle (zactor_t *watch);
/* Makes sock a CURVE client of the deployment's servers (before connect). */
int ppm_curve_client (zsock_t *sock);

/* Refused handshakes counted so far in this process. */
uint64_t ppm_curve_auth_failures (void);

/* A fresh key pair in Z85 (40 characters + NUL each). */
int ppm_curve_keypair (char public_z85[41], char secret_z85[41]);
/* The public key of a secret key, both Z85. Returns 0 or -1 if invalid. */
int ppm_curve_public_of (const char *secret_z85, char public_z85[41]);

#endif
