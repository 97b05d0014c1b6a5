/*  ppm_test_emulator: starts the Stripe emulator binary for a test.

    Runs $PPM_BIN_DIR/stripe-emulator --port 0 (a free port) as a child
    process, waits for its "listening on" line, and gives the base URL to
    point PPM_STRIPE_API_BASE at. ppm_test_emulator_control sends a JSON
    request to the /_emulator control API (see
    tests/stripe-emulator/README.md). Test-only: aborts on setup failures.
*/
#ifndef PPM_TEST_EMULATOR_H_INCLUDED
#define PPM_TEST_EMULATOR_H_INCLUDED

#include <sys/types.h>

typedef struct _ppm_test_emulator_t ppm_test_emulator_t;

/* Starts an emulator; extra_args (NULL-terminated, may be NULL) are passed
   on its command line. NULL when the binary cannot be started. */
ppm_test_emulator_t *ppm_test_emulator_start (const char *const *extra_args);
/* Stops it (SIGTERM, then waits) and frees; safe on NULL and twice. */
void ppm_test_emulator_stop (ppm_test_emulator_t **self_p);
/* "http://127.0.0.1:PORT" (borrowed). */
const char *ppm_test_emulator_url (const ppm_test_emulator_t *self);
pid_t ppm_test_emulator_pid (const ppm_test_emulator_t *self);

/* Sends method path with a JSON body (may be NULL) to the control API.
   Returns the HTTP status (0 on a transport error); *response (when not
   NULL) gets the body, which the caller frees. */
int ppm_test_emulator_control (const ppm_test_emulator_t *self, const char *method,
                               const char *path, const char *json, char **response);

#endif
