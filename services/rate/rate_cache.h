/*  rate_cache: the rate service's in-memory copy of every tenant's
    settings and rates, so that a quote never waits on PostgreSQL.

    A tenant's entry is built whole from a config snapshot (settings without
    secrets, user rates, role rates, revision) and swapped in at once, so a
    quote sees either the old or the new configuration, never a mix. Entries
    are keyed by tenant id; user rates by payee inside the entry; role rates
    are kept sorted by priority (highest first, then role name) so that the
    first matching role is the one that wins.

    Single-threaded: owned and used by the rate actor only.
*/
#ifndef RATE_CACHE_H_INCLUDED
#define RATE_CACHE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <czmq.h>
#include "ppm_money.h"
#include "proto/config.pb-c.h"

typedef struct _rate_cache_t rate_cache_t;
typedef struct _rate_tenant_t rate_tenant_t;

/* A nullable per-minute amount. */
typedef struct {
    int64_t amount; /* minor units */
    bool set;       /* false = blank */
} rate_amount_t;

typedef struct {
    rate_amount_t call; /* individual call rate */
    rate_amount_t chat; /* individual chat rate */
} rate_user_t;

typedef struct {
    char *role;         /* owned */
    rate_amount_t call; /* role's call rate */
    rate_amount_t chat; /* role's chat rate */
    int32_t priority;   /* higher wins */
} rate_role_t;

/* ---- tenant entry ----------------------------------------------------- */

/* Creates an entry holding a copy of settings. NULL on failure. */
rate_tenant_t *rate_tenant_new (const char *tenant_id, const char *plan, int64_t revision,
                                const Ppm__V1__Settings *settings);
void rate_tenant_destroy (rate_tenant_t **self_p);
/* Adds or replaces a payee's rates. Returns 0 or -1. */
int rate_tenant_set_user (rate_tenant_t *self, const char *payee, rate_user_t rates);
/* Adds a role's rates (kept sorted). Returns 0 or -1. */
int rate_tenant_add_role (rate_tenant_t *self, const char *role, rate_amount_t call,
                          rate_amount_t chat, int32_t priority);

const char *rate_tenant_id (const rate_tenant_t *self);
int64_t rate_tenant_revision (const rate_tenant_t *self);
const Ppm__V1__Settings *rate_tenant_settings (const rate_tenant_t *self);
/* The tenant's currency (NULL if the settings hold an unknown one). */
const ppm_currency_t *rate_tenant_currency (const rate_tenant_t *self);
/* Borrowed; NULL when the payee has no individual rates. */
const rate_user_t *rate_tenant_user (const rate_tenant_t *self, const char *payee);
size_t rate_tenant_role_count (const rate_tenant_t *self);
const rate_role_t *rate_tenant_role (const rate_tenant_t *self, size_t index);
size_t rate_tenant_user_count (const rate_tenant_t *self);

/* ---- cache ------------------------------------------------------------ */

rate_cache_t *rate_cache_new (void);
void rate_cache_destroy (rate_cache_t **self_p);
/* Puts an entry in place of the tenant's previous one (takes ownership). */
void rate_cache_replace (rate_cache_t *self, rate_tenant_t **tenant_p);
void rate_cache_remove (rate_cache_t *self, const char *tenant_id);
/* Borrowed; valid until the next change of the cache. */
const rate_tenant_t *rate_cache_lookup (rate_cache_t *self, const char *tenant_id);
/* The revision cached for a tenant, -1 when absent. */
int64_t rate_cache_revision (rate_cache_t *self, const char *tenant_id);
size_t rate_cache_size (rate_cache_t *self);
/* Tenant ids in the cache, for the periodic check (caller destroys). */
zlistx_t *rate_cache_tenant_ids (rate_cache_t *self);

#endif
