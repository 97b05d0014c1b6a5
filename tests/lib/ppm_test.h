/*  ppm_test: what every test needs from the harness (tests/harness/
    servers.sh): fresh PostgreSQL databases and Redis databases, free ports,
    service binaries started and stopped as child processes, polling with a
    deadline, and restarts of the real servers.

    Helpers that need the harness call cmocka's skip() with a message when
    its environment is missing (running a test binary by hand), so they must
    be called from inside a test or a setup function. `make test` always
    provides the environment.
*/
#ifndef PPM_TEST_H_INCLUDED
#define PPM_TEST_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Drops (forcing out any session) and creates database dbname
   ([a-z0-9_], 1 to 48 characters) on the harness PostgreSQL
   (PPM_TEST_PG_URL) and returns its URL; the caller frees it. Fails the
   test when the server refuses. */
char *ppm_test_pg_url (const char *dbname);

/* The harness Redis URL with database index db (0..63) selected, after
   flushing that database; the caller frees it. */
char *ppm_test_redis_url (int db);

/* A TCP port on 127.0.0.1 that was free a moment ago. */
int ppm_test_free_port (void);

/* Runs PPM_BIN_DIR/bin (or bin itself when it holds a '/') with argv (argv[0] included, NULL-ended;
   NULL for just the name) and the current environment plus env_extra ("NAME=value" entries,
   NULL-ended; may be NULL). stdout and stderr go to $PPM_TEST_TMP/logs/<bin>.<pid>.log when
   PPM_TEST_TMP is set. The child is killed when the calling thread ends (PR_SET_PDEATHSIG), so
   no service outlives a test the harness had to kill. Returns the child's pid; fails the test
   when it cannot start. */
pid_t ppm_test_spawn (const char *bin, char *const argv[], char *const env_extra[]);
/* Sends sig to pid; returns 0 or -1. */
int ppm_test_kill (pid_t pid, int sig);
/* Waits up to timeout_ms for pid to exit. Returns its wait status (as
   waitpid's), or -1 on timeout (the child is left running). */
int ppm_test_wait (pid_t pid, int timeout_ms);
/* SIGTERM, waits up to timeout_ms, then SIGKILL and reaps. Returns the
   wait status. */
int ppm_test_stop (pid_t pid, int timeout_ms);

/* Calls fn (arg) every 10 ms until it returns true or timeout_ms passes.
   Returns true when it did. */
bool ppm_test_wait_until (bool (*fn) (void *arg), void *arg, int timeout_ms);

/* Restarts the harness's Redis / PostgreSQL on the same port with the
   same data (PPM_TEST_REDIS_RESTART / PPM_TEST_PG_RESTART) and returns
   once it accepts connections again; fails the test otherwise. */
void ppm_test_restart_redis (void);
void ppm_test_restart_pg (void);

/* Milliseconds on a monotonic clock. */
int64_t ppm_test_now_ms (void);
/* Sleeps ms milliseconds. */
void ppm_test_sleep_ms (int ms);

#endif
