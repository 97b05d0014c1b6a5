/*  ppm_test_stack: the real services behind a test.

    Starts the Stripe emulator (ppm_test_emulator) and the config, rate,
    payment and metering binaries of PPM_BIN_DIR as child processes, each
    on free loopback ports, on the test's own PostgreSQL database
    (ppm_test_pg_url) and Redis database (ppm_test_redis_url), wired to one
    another exactly as deploy/run.sh wires them, and waits until each one
    answers sys.Ping. A test then drives them as a user would: through an
    in-process gateway actor (endpoints and the comma-separated event
    endpoints are here), ppmctl (ppm_test_stack_ppmctl) or RPCs
    (ppm_test_stack_call).

    Time: with a time scale above 1, PPM_TIME_SCALE and a pinned
    PPM_TIME_EPOCH_MS are set in this process's environment (and
    ppm_clock_init is run) before anything is spawned, so the children and
    every in-process actor read one clock: paid minutes pass in seconds.

    CURVE (PPM_CURVE=on and its keys in the environment, as run-tests.sh
    curve:BUILD sets them) reaches the children by inheritance.

    Must be called from inside a cmocka test or setup function (the
    ppm_test helpers it uses skip or fail the test when the harness is
    missing). Nothing is left running when start fails; stop ends every
    child, even one stopped with SIGSTOP.
*/
#ifndef PPM_TEST_STACK_H_INCLUDED
#define PPM_TEST_STACK_H_INCLUDED

#include <protobuf-c/protobuf-c.h>
#include <stdint.h>
#include <sys/types.h>

#include "ppm_status.h"
#include "tests/lib/ppm_test_emulator.h"

typedef struct _ppm_test_stack_t ppm_test_stack_t;

typedef enum {
    PPM_TEST_CONFIG = 0,
    PPM_TEST_RATE,
    PPM_TEST_PAYMENT,
    PPM_TEST_METERING,
    PPM_TEST_SERVICES /* how many */
} ppm_test_service_t;

/* Starts the emulator and the four services. dbname: the PostgreSQL
   database ([a-z0-9_], recreated empty); redis_db: the Redis database
   (flushed); time_scale: PPM_TIME_SCALE (1 = real time); env_extra: more
   "NAME=value" entries for every service (NULL-ended, may be NULL; e.g. a
   shorter PPM_PAYMENT_OUTBOX_EVERY). Returns NULL, after print_message
   saying why, when a binary is missing or a service does not answer in
   time. */
ppm_test_stack_t *ppm_test_stack_start (const char *dbname, int redis_db, int64_t time_scale,
                                        char *const env_extra[]);
/* Stops the services (SIGCONT, then SIGTERM and a wait) and the emulator,
   in reverse order, and frees. Safe on NULL and twice. */
void ppm_test_stack_stop (ppm_test_stack_t **self_p);

/* A service's RPC endpoint, "tcp://127.0.0.1:PORT" (borrowed). */
const char *ppm_test_stack_endpoint (const ppm_test_stack_t *self, ppm_test_service_t service);
/* The PUB endpoints of config, payment and metering, comma-separated, as
   the gateway's events_endpoints wants them (borrowed). */
const char *ppm_test_stack_events (const ppm_test_stack_t *self);
/* The process id of a service (for SIGSTOP/SIGCONT). */
pid_t ppm_test_stack_pid (const ppm_test_stack_t *self, ppm_test_service_t service);
/* The emulator (borrowed); its URL is the services' PPM_STRIPE_API_BASE. */
ppm_test_emulator_t *ppm_test_stack_emulator (const ppm_test_stack_t *self);

/* One synchronous RPC to a service (sent once, 5 s deadline). tenant may
   be NULL for tenant-less methods. On OK, *reply_p (when reply_descriptor
   is not NULL) gets the unpacked reply, which the caller frees. Returns
   the status (NULL = OK), which the caller destroys. */
ppm_status_t *ppm_test_stack_call (ppm_test_stack_t *self, ppm_test_service_t service,
                                   const char *method, const char *tenant,
                                   const ProtobufCMessage *msg,
                                   const ProtobufCMessageDescriptor *reply_descriptor,
                                   ProtobufCMessage **reply_p);

/* Runs PPM_BIN_DIR/ppmctl with args (NULL-ended, without argv[0]) against
   these services and waits for it (its output goes to the test logs).
   Returns its exit status, or -1 when it did not exit within 20 s. */
int ppm_test_stack_ppmctl (ppm_test_stack_t *self, const char *const args[]);

/* Creates a tenant through config.CreateTenant and copies its id and its
   first admin key into the caller's buffers. Returns 0, or -1 after
   print_message. */
int ppm_test_stack_create_tenant (ppm_test_stack_t *self, const char *name, const char *plan,
                                  char *tenant, size_t tenant_size, char *admin_key,
                                  size_t admin_key_size);

/* The tenant's user-token secret (config.GetUserTokenSecret), which signs
   the tenant's user tokens; the caller frees it. NULL after print_message
   on failure. */
char *ppm_test_stack_user_token_secret (ppm_test_stack_t *self, const char *tenant);

#endif
