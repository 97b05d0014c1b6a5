/*  ppm_redis: one synchronous Redis connection (hiredis 0.14) with
    timeouts, reconnection, binary-safe commands, Lua scripts and a cap on
    reply size.

    Commands are argv arrays with lengths (no format strings), so any byte
    string is a safe argument. Every wait is bounded: connecting by the
    connect timeout, each command by the command timeout (SO_RCVTIMEO /
    SO_SNDTIMEO). A reply larger than max_reply_bytes is refused with
    PPM_REDIS_TOO_LARGE, never buffered beyond the cap: Redis data can be
    written by others, so its size is outside input.

    BLOCKING: ppm_redis_new, ppm_redis_command*, ppm_redis_eval and
    ppm_redis_ping block (bounded as above); use them from a worker actor or
    with short timeouts. ppm_redis_ready and the accessors never block.

    Reconnection: an I/O error, timeout, protocol error or refused reply
    drops the connection; the next command reconnects (failed attempts back
    off from 100 ms doubling to 5 s, during which commands fail at once
    with PPM_REDIS_UNAVAILABLE). A command that failed is never resent
    (it may have run); but before sending, an idle connection the server
    has closed (e.g. after a Redis restart) is noticed without blocking and
    replaced, so a restart between two commands is invisible.

    Scripts: ppm_redis_script_t holds a Lua source and its SHA1. The first
    ppm_redis_eval loads it (SCRIPT LOAD) and every call runs EVALSHA; a
    NOSCRIPT answer (script cache flushed, Redis restarted) reloads it and
    runs it once more (safe: NOSCRIPT means it did not run).

    An object is used by one thread at a time.

    ppm_redis_async_t (below) is the same connection shape for a czmq zloop:
    hiredis's async API driven by the loop (readable/writable on the
    connection's fd), never blocking it.
*/
#ifndef PPM_REDIS_H_INCLUDED
#define PPM_REDIS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <czmq.h>
#include <hiredis.h>
#include <hiredis/async.h>
#include "ppm_status.h"

typedef enum {
    PPM_REDIS_OK = 0,
    PPM_REDIS_ERROR_REPLY, /* Redis answered with an error (text in ppm_redis_error) */
    PPM_REDIS_UNAVAILABLE, /* cannot connect, I/O error or timeout: retry later */
    PPM_REDIS_TOO_LARGE,   /* the reply exceeded max_reply_bytes */
    PPM_REDIS_INVALID      /* bad arguments (programmer error) */
} ppm_redis_result_t;

typedef struct {
    int64_t connect_timeout_ms; /* default 2000 */
    int64_t command_timeout_ms; /* default 2000 */
    size_t max_reply_bytes;     /* cap on one reply's wire size; default 1 MiB */
} ppm_redis_options_t;

typedef struct _ppm_redis_t ppm_redis_t;
typedef struct _ppm_redis_script_t ppm_redis_script_t;

/* Parses redis://[[user]:password@]host[:port][/db] (port 6379, db 0 by
   default) and tries to connect once (BLOCKS up to the connect timeout).
   A failed first connection is not an error: commands reconnect. Returns
   NULL only for a malformed URL, with *error a static line that does not
   repeat the URL. options may be NULL for the defaults. */
ppm_redis_t *ppm_redis_new (const char *url, const ppm_redis_options_t *options,
                            const char **error);
/* Closes and frees; safe on NULL and twice. */
void ppm_redis_destroy (ppm_redis_t **self_p);

/* Runs one command. argvlen may be NULL when every argument is a C
   string. On PPM_REDIS_OK, when reply_p is not NULL, *reply_p is the reply
   (the caller frees it with freeReplyObject); otherwise *reply_p is NULL.
   An error reply gives PPM_REDIS_ERROR_REPLY with its text in
   ppm_redis_error. BLOCKS (bounded). */
ppm_redis_result_t ppm_redis_command_argv (ppm_redis_t *self, int argc, const char **argv,
                                           const size_t *argvlen, redisReply **reply_p);
/* Shortcut for C-string arguments, counted at compile time (no sentinel):
   ppm_redis_command (r, &reply, "SET", key, value). */
#define ppm_redis_command(self, reply_p, ...)                                                      \
    ppm_redis_command_strv ((self), (reply_p), (const char *[]){__VA_ARGS__},                      \
                            sizeof ((const char *[]){__VA_ARGS__}) / sizeof (const char *))
ppm_redis_result_t ppm_redis_command_strv (ppm_redis_t *self, redisReply **reply_p,
                                           const char *const *argv, size_t argc);

/* Creates a script from Lua source (copied). Never NULL. */
ppm_redis_script_t *ppm_redis_script_new (const char *source);
void ppm_redis_script_destroy (ppm_redis_script_t **self_p);
/* The SHA1 Redis knows the script by ("" until first loaded). */
const char *ppm_redis_script_sha (const ppm_redis_script_t *self);

/* EVALSHA script numkeys argv… (keys first, then arguments); loads the
   script when needed and reloads it on NOSCRIPT. Same reply rules as
   ppm_redis_command_argv. BLOCKS (bounded). */
ppm_redis_result_t ppm_redis_eval (ppm_redis_t *self, ppm_redis_script_t *script, int numkeys,
                                   int argc, const char **argv, const size_t *argvlen,
                                   redisReply **reply_p);

/* NON-BLOCKING: true when connected and the server has not closed the
   connection. Never connects. */
bool ppm_redis_ready (ppm_redis_t *self);
/* BLOCKING: PING (reconnecting if needed). */
ppm_redis_result_t ppm_redis_ping (ppm_redis_t *self);

/* The last failure's text ("" when none); borrowed, valid until the next
   call on self. */
const char *ppm_redis_error (const ppm_redis_t *self);
/* Successful connections so far (tests watch reconnections). */
uint64_t ppm_redis_connects (const ppm_redis_t *self);
/* The selected database index. */
int ppm_redis_db (const ppm_redis_t *self);

const char *ppm_redis_result_name (ppm_redis_result_t result);
/* ERROR_REPLY -> INTERNAL, UNAVAILABLE -> UNAVAILABLE, TOO_LARGE ->
   RESOURCE_EXHAUSTED, INVALID -> INVALID_ARGUMENT. */
ppm_code_t ppm_redis_code (ppm_redis_result_t result);

/* ---------------------------------------------------------------------
   ppm_redis_async: hiredis async inside a zloop. NEVER BLOCKS: commands
   are queued and written when the socket is writable; each reply comes to
   a callback from the loop. Waits are bounded by timers on the loop: a
   connection not up within connect_timeout_ms, or commands outstanding
   with no reply for command_timeout_ms, drop the connection, and every
   outstanding callback gets reply NULL (ppm_redis_async_error says why).
   Unparsed input beyond max_reply_bytes drops the connection as well. The
   next command after a drop reconnects (with the same back-off as the
   synchronous object); while it cannot, commands fail at once.

   Ownership: the reply passed to a callback is borrowed (hiredis frees it
   when the callback returns). Do not destroy the object from one of its
   own callbacks. */
typedef struct _ppm_redis_async_t ppm_redis_async_t;
/* reply: the answer (possibly an error reply: check reply->type), or NULL
   when the command failed (connection lost, timeout, destroy). */
typedef void (ppm_redis_async_fn) (ppm_redis_async_t *self, redisReply *reply, void *arg);

/* Same URL and options as ppm_redis_new; starts connecting (non-blocking).
   NULL only for a malformed URL (*error static, without the URL). */
ppm_redis_async_t *ppm_redis_async_new (zloop_t *loop, const char *url,
                                        const ppm_redis_options_t *options, const char **error);
/* Drops the connection (outstanding callbacks get NULL), removes the
   loop's pollers and timer, frees. Safe on NULL and twice. */
void ppm_redis_async_destroy (ppm_redis_async_t **self_p);
/* Queues one command (binary-safe; argvlen may be NULL for C strings).
   fn may be NULL to ignore the reply. Returns 0 when queued (fn will be
   called exactly once), -1 when there is no connection and none can be
   started now (fn is not called). */
int ppm_redis_async_command_argv (ppm_redis_async_t *self, ppm_redis_async_fn *fn, void *arg,
                                  int argc, const char **argv, const size_t *argvlen);
/* True when connected (the handshake may still be in flight). */
bool ppm_redis_async_connected (const ppm_redis_async_t *self);
/* Commands sent and not yet answered. */
size_t ppm_redis_async_pending (const ppm_redis_async_t *self);
/* Why the last connection ended or failed ("" when none); borrowed. */
const char *ppm_redis_async_error (const ppm_redis_async_t *self);
uint64_t ppm_redis_async_connects (const ppm_redis_async_t *self);

#endif
