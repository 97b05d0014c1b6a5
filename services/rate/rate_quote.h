/*  rate_quote: turns a tenant's cached configuration into a quote (B11):
    which rate applies to (payee, roles, kind), the presets with their exact
    totals, and the minutes one purchase may buy.

    Rate resolution, in order (docs/ARCHITECTURE.md "Rate service"):
      1. the feature is off, or the kind is not in enable_for → free;
      2. the payee's individual rate for the kind, when set;
      3. under rate_scope "roles": the rate of the highest-priority role
         (ties: role name ascending) among the payee's roles that has a rate
         for the kind;
      4. under rate_scope "default" or "roles": the default rate of the kind;
      5. otherwise (scope "individual" and no individual rate) → free.
    A resolved rate of 0 means free: 0 is how an admin says "no charge".

    For a paid quote: presets[i].amount = preset × rate exactly
    (ppm_money_total); min_minutes is the smallest number of minutes whose
    total reaches the currency's minimum charge; max_minutes is
    min(max_minutes_per_purchase, floor(currency maximum / rate)).
*/
#ifndef RATE_QUOTE_H_INCLUDED
#define RATE_QUOTE_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include "ppm_status.h"
#include "proto/rate.pb-c.h"
#include "rate_cache.h"

typedef enum { RATE_KIND_CHAT = 0, RATE_KIND_CALL = 1 } rate_kind_t;

/* The outcome of resolution. */
typedef struct {
    int64_t rate;       /* per minute; 0 = free */
    const char *source; /* "individual", "role", "default", "free:…"; static */
    const char *role;   /* the winning role when source is "role"; borrowed */
} rate_resolution_t;

/* Resolves the rate of (payee, roles, kind) for tenant (see above). */
rate_resolution_t rate_resolve (const rate_tenant_t *tenant, const char *payee, char *const *roles,
                                size_t role_count, rate_kind_t kind);

/* Storage for one quote reply: the message and what its fields point to.
   Strings point into the tenant entry and the request (borrowed): reply
   before the cache changes. */
typedef struct {
    Ppm__V1__Quote quote;
    Ppm__V1__QuotePreset presets[8];
    Ppm__V1__QuotePreset *preset_ptrs[8];
    int64_t marks[8];
    char quote_id[40];
    char source[80];
} rate_quote_t;

/* Builds the quote for req at now_ms. Returns NULL (OK) or a status the
   caller destroys: INVALID_ARGUMENT (field named), NOT_FOUND (tenant not
   known), FAILED_PRECONDITION (live tenant under PPM_TIME_SCALE, or a rate
   that no purchase can respect). */
ppm_status_t *rate_quote_build (const rate_tenant_t *tenant, const Ppm__V1__QuoteRequest *req,
                                bool time_scaled, int64_t now_ms, rate_quote_t *out);

/* Writes a new unique quote id ("q_" + 32 hex). */
void rate_quote_new_id (char out[40]);

#endif
