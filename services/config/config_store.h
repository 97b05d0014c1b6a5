/*  config_store: the config service's PostgreSQL schema `config` and every
    query it runs, with the rules of config_settings applied inside the
    transaction that writes.

    Every function takes the tenant it acts for and every statement filters
    on it (B9): no call reads or changes another tenant's rows. Secrets are
    sealed with config_crypto before they reach a statement and opened only
    for the calls that return them (GetSecrets, GetUserTokenSecret) or
    their mask (GetUserTokenSecretInfo, the audit entry of a rotation).

    Replies are protobuf messages built "as if unpacked" (every string and
    array malloc'd), so the caller frees them with the message's
    __free_unpacked. Functions return NULL (OK) or a status the caller
    destroys. BLOCKS on PostgreSQL, each statement bounded by the
    connection's statement_timeout (the config service is not on a hot
    path: it runs these from its actor).
*/
#ifndef CONFIG_STORE_H_INCLUDED
#define CONFIG_STORE_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include "config_crypto.h"
#include "ppm_pg.h"
#include "ppm_status.h"
#include "proto/config.pb-c.h"

typedef struct _config_store_t config_store_t;

/* What a successful write changed, for the config.changed event. */
typedef struct {
    char tenant_id[64];       /* the tenant */
    int64_t revision;         /* tenant revision after the change */
    int64_t settings_version; /* settings version after the change */
    const char *what;         /* static: "settings", "user_rates", … */
} config_change_t;

/* pg and crypto are borrowed and must outlive the store. time_scaled:
   PPM_TIME_SCALE > 1 in this process (refuses live mode). */
config_store_t *config_store_new (ppm_pg_t *pg, config_crypto_t *crypto, bool time_scaled);
void config_store_destroy (config_store_t **self_p);
/* Applies the schema migrations. Returns 0, or -1 with *error. */
int config_store_migrate (config_store_t *self, const char **error);

ppm_status_t *config_store_create_tenant (config_store_t *self,
                                          const Ppm__V1__CreateTenantRequest *req,
                                          Ppm__V1__CreateTenantReply **reply_p,
                                          config_change_t *change);
ppm_status_t *config_store_list_tenants (config_store_t *self, uint32_t limit, const char *cursor,
                                         Ppm__V1__ListTenantsReply **reply_p);
ppm_status_t *config_store_set_plan (config_store_t *self, const char *tenant, const char *plan,
                                     const char *actor, Ppm__V1__SetPlanReply **reply_p,
                                     config_change_t *change);

/* Settings with secrets in clear: mask before replying to an admin. */
ppm_status_t *config_store_get_settings (config_store_t *self, const char *tenant,
                                         Ppm__V1__Settings **settings_p);
ppm_status_t *config_store_put_settings (config_store_t *self, const char *tenant,
                                         const Ppm__V1__PutSettingsRequest *req,
                                         Ppm__V1__Settings **settings_p, config_change_t *change);

ppm_status_t *config_store_get_user_rates (config_store_t *self, const char *tenant,
                                           const char *payee, Ppm__V1__UserRates **rates_p);
ppm_status_t *config_store_put_user_rates (config_store_t *self, const char *tenant,
                                           const Ppm__V1__UserRates *rates, const char *actor,
                                           config_change_t *change);
ppm_status_t *config_store_list_user_rates (config_store_t *self, const char *tenant,
                                            uint32_t limit, const char *cursor,
                                            Ppm__V1__ListUserRatesReply **reply_p);
ppm_status_t *config_store_get_role_rates (config_store_t *self, const char *tenant,
                                           const char *role, Ppm__V1__RoleRatesList **reply_p);
ppm_status_t *config_store_put_role_rates (config_store_t *self, const char *tenant,
                                           const Ppm__V1__RoleRates *rates, const char *actor,
                                           config_change_t *change);

ppm_status_t *config_store_create_admin_key (config_store_t *self, const char *tenant,
                                             const char *label, const char *actor,
                                             Ppm__V1__CreateAdminKeyReply **reply_p);
ppm_status_t *config_store_revoke_admin_key (config_store_t *self, const char *tenant,
                                             const char *key_id, const char *actor);
ppm_status_t *config_store_verify_admin_key (config_store_t *self, const char *key,
                                             Ppm__V1__VerifyAdminKeyReply **reply_p);

ppm_status_t *config_store_list_audit (config_store_t *self, const char *tenant, uint32_t limit,
                                       const char *cursor, Ppm__V1__ListAuditReply **reply_p);

ppm_status_t *config_store_get_secrets (config_store_t *self, const char *tenant,
                                        Ppm__V1__Secrets **reply_p);
ppm_status_t *config_store_get_user_token_secret (config_store_t *self, const char *tenant,
                                                  Ppm__V1__UserTokenSecret **reply_p);
/* The user-token secret's mask ("…abcd") and when it was made: no
   plaintext leaves. DATA_LOSS when it does not open (rotate it then). */
ppm_status_t *config_store_get_user_token_secret_info (config_store_t *self, const char *tenant,
                                                       Ppm__V1__UserTokenSecretInfo **reply_p);
/* Replaces the user-token secret with a fresh random one (64 hex
   characters), sealed, in one transaction with its audit entry (field
   "user_token_secret", old and new masked). The reply holds the new
   secret in clear: the caller zeroes it (sodium_memzero) before freeing.
   *change gets what = "user_token_secret", revision and version 0 (quotes
   do not depend on the secret). */
ppm_status_t *config_store_rotate_user_token_secret (config_store_t *self, const char *tenant,
                                                     const char *actor,
                                                     Ppm__V1__RotateUserTokenSecretReply **reply_p,
                                                     config_change_t *change);

ppm_status_t *config_store_get_snapshot (config_store_t *self, const char *tenant,
                                         const char *rates_cursor, Ppm__V1__Snapshot **reply_p);
ppm_status_t *config_store_list_revisions (config_store_t *self, uint32_t limit, const char *cursor,
                                           Ppm__V1__ListRevisionsReply **reply_p);

#endif
