/*  config_store: see config_store.h.

    Schema `config` (migrations below, applied with ppm_migrate):
      tenants      one row per tenant: name, plan, revision (bumped by every
                   change of anything the tenant's quotes depend on)
      settings     one row per tenant: version, the packed ppm.v1.Settings
                   without secrets (data), each secret sealed in its own
                   bytea column, the sealed user-token secret and when it
                   was made (user_token_rotated_at_ms)
      user_rates   (tenant, payee) → call/chat per minute, NULL = blank
      role_rates   (tenant, role) → call/chat per minute, priority
      admin_keys   key id → tenant, BLAKE2b hash of the key's secret
      audit        actor, time, field, old → new (secrets masked)
    Writes run in one transaction that locks the tenant's settings row
    (SELECT … FOR UPDATE), so replicas of config serialise per tenant.
*/
#include "config_store.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config_settings.h"
#include "ppm_clock.h"
#include "ppm_log.h"
#include "ppm_migrate.h"

struct _config_store_t {
    ppm_pg_t *pg;            /* borrowed */
    config_crypto_t *crypto; /* borrowed */
    bool time_scaled;        /* PPM_TIME_SCALE > 1 */
};

static const ppm_migration_t s_migrations[] = {
    {1, "config schema",
     "CREATE SCHEMA IF NOT EXISTS config;"
     "CREATE TABLE config.tenants ("
     "  tenant_id text PRIMARY KEY,"
     "  name text NOT NULL,"
     "  plan text NOT NULL CHECK (plan IN ('free','basic','pro','enterprise')),"
     "  created_at_ms bigint NOT NULL,"
     "  revision bigint NOT NULL DEFAULT 1);"
     "CREATE TABLE config.settings ("
     "  tenant_id text PRIMARY KEY REFERENCES config.tenants ON DELETE CASCADE,"
     "  version bigint NOT NULL,"
     "  data bytea NOT NULL,"
     "  stripe_secret_key bytea,"
     "  stripe_restricted_key bytea,"
     "  stripe_webhook_secret bytea,"
     "  user_token_secret bytea NOT NULL,"
     "  updated_at_ms bigint NOT NULL,"
     "  updated_by text NOT NULL);"
     "CREATE TABLE config.user_rates ("
     "  tenant_id text NOT NULL REFERENCES config.tenants ON DELETE CASCADE,"
     "  payee text NOT NULL,"
     "  call_per_minute bigint CHECK (call_per_minute >= 0),"
     "  chat_per_minute bigint CHECK (chat_per_minute >= 0),"
     "  PRIMARY KEY (tenant_id, payee));"
     "CREATE TABLE config.role_rates ("
     "  tenant_id text NOT NULL REFERENCES config.tenants ON DELETE CASCADE,"
     "  role text NOT NULL,"
     "  call_per_minute bigint CHECK (call_per_minute >= 0),"
     "  chat_per_minute bigint CHECK (chat_per_minute >= 0),"
     "  priority integer NOT NULL DEFAULT 0,"
     "  PRIMARY KEY (tenant_id, role));"
     "CREATE TABLE config.admin_keys ("
     "  key_id text PRIMARY KEY,"
     "  tenant_id text NOT NULL REFERENCES config.tenants ON DELETE CASCADE,"
     "  hash bytea NOT NULL,"
     "  label text NOT NULL,"
     "  created_at_ms bigint NOT NULL,"
     "  revoked_at_ms bigint);"
     "CREATE INDEX admin_keys_tenant ON config.admin_keys (tenant_id);"
     "CREATE TABLE config.audit ("
     "  id bigserial PRIMARY KEY,"
     "  tenant_id text NOT NULL,"
     "  at_ms bigint NOT NULL,"
     "  actor text NOT NULL,"
     "  field text NOT NULL,"
     "  old_value text NOT NULL,"
     "  new_value text NOT NULL);"
     "CREATE INDEX audit_tenant ON config.audit (tenant_id, id DESC);"},
    /* When the user-token secret was made: the admin panel shows its age.
       Existing secrets date from their tenant's creation. */
    {2, "user-token secret rotation",
     "ALTER TABLE config.settings ADD COLUMN user_token_rotated_at_ms bigint;"
     "UPDATE config.settings s SET user_token_rotated_at_ms = t.created_at_ms "
     "  FROM config.tenants t WHERE t.tenant_id = s.tenant_id;"
     "ALTER TABLE config.settings ALTER COLUMN user_token_rotated_at_ms SET NOT NULL;"},
};

config_store_t *
config_store_new (ppm_pg_t *pg, config_crypto_t *crypto, bool time_scaled)
{
    config_store_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->pg = pg;
    self->crypto = crypto;
    self->time_scaled = time_scaled;
    return self;
}

void
config_store_destroy (config_store_t **self_p)
{
    if (self_p && *self_p) {
        free (*self_p);
        *self_p = NULL;
    }
}

int
config_store_migrate (config_store_t *self, const char **error)
{
    return ppm_migrate (self->pg, "config", s_migrations,
                        sizeof s_migrations / sizeof s_migrations[0], error);
}

/* ---- helpers ------------------------------------------------------------ */

static char *
s_dup (const char *text)
{
    char *copy = strdup (text ? text : "");
    if (!copy)
        abort ();
    return copy;
}

static void *
s_alloc (size_t size)
{
    void *p = calloc (1, size);
    if (!p)
        abort ();
    return p;
}

static ppm_status_t *
s_db_status (config_store_t *self, ppm_pg_result_t result, const char *what)
{
    ppm_log_warn ("config store: %s failed: %s (%s)", what, ppm_pg_result_name (result),
                  ppm_pg_sqlstate (self->pg));
    return ppm_status_new (ppm_pg_code (result), "database error during %s", what);
}

static void
s_rollback (config_store_t *self)
{
    ppm_pg_rollback (self->pg);
}

/* Hex bytea parameter for a buffer: "\x…" (caller frees). */
static char *
s_bytea_param (const uint8_t *data, size_t size)
{
    char *text = s_alloc (size * 2 + 3);
    text[0] = '\\';
    text[1] = 'x';
    sodium_bin2hex (text + 2, size * 2 + 1, data, size);
    return text;
}

/* Seals value for (tenant, field) into a bytea parameter; NULL for "". */
static char *
s_sealed_param (config_store_t *self, const char *tenant, const char *field, const char *value)
{
    if (!value || !*value)
        return NULL;
    size_t size = 0;
    uint8_t *sealed = config_crypto_seal (self->crypto, tenant, field, value, &size);
    if (!sealed)
        abort ();
    char *param = s_bytea_param (sealed, size);
    free (sealed);
    return param;
}

/* Opens a sealed bytea column value; "" when NULL. NULL when it does not
   open (wrong master key or tampered row). */
static char *
s_open_column (config_store_t *self, const PGresult *res, int row, int col, const char *tenant,
               const char *field)
{
    if (PQgetisnull (res, row, col))
        return s_dup ("");
    size_t size = 0;
    unsigned char *raw = PQunescapeBytea ((const unsigned char *)PQgetvalue (res, row, col), &size);
    if (!raw)
        return NULL;
    char *value = config_crypto_open (self->crypto, tenant, field, raw, size);
    PQfreemem (raw);
    return value;
}

static int64_t
s_int (const PGresult *res, int row, int col)
{
    return strtoll (PQgetvalue (res, row, col), NULL, 10);
}

static int
s_bump_revision (config_store_t *self, const char *tenant, int64_t *revision)
{
    PGresult *res = NULL;
    const char *params[] = {tenant};
    if (ppm_pg_exec (self->pg,
                     "UPDATE config.tenants SET revision = revision + 1 WHERE tenant_id = $1 "
                     "RETURNING revision",
                     1, params, &res) != PPM_PG_OK ||
        PQntuples (res) != 1) {
        PQclear (res);
        return -1;
    }
    *revision = s_int (res, 0, 0);
    PQclear (res);
    return 0;
}

static ppm_pg_result_t
s_audit (config_store_t *self, const char *tenant, const char *actor, const char *field,
         const char *old_value, const char *new_value)
{
    char now[32];
    snprintf (now, sizeof now, "%lld", (long long)ppm_clock_now_ms ());
    const char *params[] = {tenant, now,       actor && *actor ? actor : "unknown",
                            field,  old_value, new_value};
    return ppm_pg_exec (self->pg,
                        "INSERT INTO config.audit (tenant_id, at_ms, actor, field, old_value, "
                        "new_value) VALUES ($1, $2, $3, $4, $5, $6)",
                        6, params, NULL);
}

static void
s_change (config_change_t *change, const char *tenant, int64_t revision, int64_t version,
          const char *what)
{
    if (!change)
        return;
    snprintf (change->tenant_id, sizeof change->tenant_id, "%s", tenant);
    change->revision = revision;
    change->settings_version = version;
    change->what = what;
}

static ppm_status_t *
s_invalid (const char *field, const char *fmt, const char *arg)
{
    ppm_status_t *status = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid request");
    ppm_status_add_field (status, field, fmt, arg ? arg : "");
    return status;
}

static const char *
s_limit_param (uint32_t limit, uint32_t def, uint32_t max, char *buf, size_t size)
{
    if (limit == 0)
        limit = def;
    if (limit > max)
        limit = max;
    snprintf (buf, size, "%u", limit);
    return buf;
}

/* ---- settings rows ------------------------------------------------------ */

#define S_SETTINGS_COLUMNS                                                                         \
    "s.version, s.data, s.stripe_secret_key, s.stripe_restricted_key, "                            \
    "s.stripe_webhook_secret, s.updated_at_ms, s.updated_by, t.plan, t.revision"

/* Loads a tenant's settings (secrets opened) and plan; for_update locks
   the row. NOT_FOUND when the tenant does not exist. */
static ppm_status_t *s_load_settings_ex (config_store_t *self, const char *tenant, bool for_update,
                                         bool secrets, Ppm__V1__Settings **settings_p,
                                         int64_t *revision);

static ppm_status_t *
s_load_settings (config_store_t *self, const char *tenant, bool for_update,
                 Ppm__V1__Settings **settings_p, int64_t *revision)
{
    return s_load_settings_ex (self, tenant, for_update, true, settings_p, revision);
}

/* secrets false: the secret fields stay empty and nothing is opened (the
   rate service's snapshots need no secret). */
static ppm_status_t *
s_load_settings_ex (config_store_t *self, const char *tenant, bool for_update, bool secrets,
                    Ppm__V1__Settings **settings_p, int64_t *revision)
{
    *settings_p = NULL;
    PGresult *res = NULL;
    const char *params[] = {tenant};
    const char *sql = for_update ? "SELECT " S_SETTINGS_COLUMNS
                                   " FROM config.settings s JOIN config.tenants t USING (tenant_id)"
                                   " WHERE s.tenant_id = $1 FOR UPDATE"
                                 : "SELECT " S_SETTINGS_COLUMNS
                                   " FROM config.settings s JOIN config.tenants t USING (tenant_id)"
                                   " WHERE s.tenant_id = $1";
    ppm_pg_result_t result = ppm_pg_exec (self->pg, sql, 1, params, &res);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "reading settings");
    if (PQntuples (res) != 1) {
        PQclear (res);
        return ppm_status_new (PPM_NOT_FOUND, "no such tenant");
    }
    size_t size = 0;
    unsigned char *raw = PQunescapeBytea ((const unsigned char *)PQgetvalue (res, 0, 1), &size);
    Ppm__V1__Settings *s = raw ? ppm__v1__settings__unpack (NULL, size, raw) : NULL;
    PQfreemem (raw);
    if (!s) {
        PQclear (res);
        return ppm_status_new (PPM_DATA_LOSS, "stored settings do not decode");
    }
    s->version = s_int (res, 0, 0);
    for (size_t i = 0; secrets && i < CONFIG_SECRET_COUNT; i++) {
        char *value = s_open_column (self, res, 0, 2 + (int)i, tenant, config_secret_name (i));
        if (!value) {
            PQclear (res);
            ppm__v1__settings__free_unpacked (s, NULL);
            return ppm_status_new (PPM_DATA_LOSS,
                                   "a stored secret does not open with this master key");
        }
        char **slot = config_secret_slot (s, i);
        if (*slot && *slot != protobuf_c_empty_string)
            free (*slot);
        *slot = value;
    }
    s->updated_at_ms = s_int (res, 0, 5);
    free (s->updated_by != protobuf_c_empty_string ? s->updated_by : NULL);
    s->updated_by = s_dup (PQgetvalue (res, 0, 6));
    if (s->plan != protobuf_c_empty_string)
        free (s->plan);
    s->plan = s_dup (PQgetvalue (res, 0, 7));
    if (s->tenant_id != protobuf_c_empty_string)
        free (s->tenant_id);
    s->tenant_id = s_dup (tenant);
    if (revision)
        *revision = s_int (res, 0, 8);
    PQclear (res);
    *settings_p = s;
    return NULL;
}

/* Writes settings (version given) with secrets sealed. */
static ppm_pg_result_t
s_store_settings (config_store_t *self, const char *tenant, const Ppm__V1__Settings *settings,
                  int64_t version, const char *actor, bool insert, const char *user_token)
{
    Ppm__V1__Settings *plain = config_settings_dup (settings);
    if (!plain)
        abort ();
    config_settings_strip (plain);
    /* Read-only metadata lives in columns, not in data. */
    plain->version = 0;
    plain->updated_at_ms = 0;
    free (plain->plan != protobuf_c_empty_string ? plain->plan : NULL);
    plain->plan = (char *)protobuf_c_empty_string;
    free (plain->updated_by != protobuf_c_empty_string ? plain->updated_by : NULL);
    plain->updated_by = (char *)protobuf_c_empty_string;
    free (plain->tenant_id != protobuf_c_empty_string ? plain->tenant_id : NULL);
    plain->tenant_id = (char *)protobuf_c_empty_string;
    size_t size = ppm__v1__settings__get_packed_size (plain);
    uint8_t *buf = s_alloc (size ? size : 1);
    ppm__v1__settings__pack (plain, buf);
    ppm__v1__settings__free_unpacked (plain, NULL);
    char *data = s_bytea_param (buf, size);
    free (buf);

    char *sealed[CONFIG_SECRET_COUNT];
    for (size_t i = 0; i < CONFIG_SECRET_COUNT; i++)
        sealed[i] = s_sealed_param (self, tenant, config_secret_name (i),
                                    *config_secret_slot ((Ppm__V1__Settings *)settings, i));
    char version_text[32], now[32];
    snprintf (version_text, sizeof version_text, "%lld", (long long)version);
    snprintf (now, sizeof now, "%lld", (long long)ppm_clock_now_ms ());
    ppm_pg_result_t result;
    if (insert) {
        char *token = s_sealed_param (self, tenant, "user_token_secret", user_token);
        const char *params[] = {tenant,    version_text, data,
                                sealed[0], sealed[1],    sealed[2],
                                token,     now,          actor && *actor ? actor : "unknown"};
        result = ppm_pg_exec (self->pg,
                              "INSERT INTO config.settings (tenant_id, version, data, "
                              "stripe_secret_key, stripe_restricted_key, stripe_webhook_secret, "
                              "user_token_secret, updated_at_ms, updated_by, "
                              "user_token_rotated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
                              "$9, $8)",
                              9, params, NULL);
        free (token);
    } else {
        const char *params[] = {tenant,    version_text, data, sealed[0],
                                sealed[1], sealed[2],    now,  actor && *actor ? actor : "unknown"};
        result = ppm_pg_exec (self->pg,
                              "UPDATE config.settings SET version = $2, data = $3, "
                              "stripe_secret_key = $4, stripe_restricted_key = $5, "
                              "stripe_webhook_secret = $6, updated_at_ms = $7, updated_by = $8 "
                              "WHERE tenant_id = $1",
                              8, params, NULL);
    }
    for (size_t i = 0; i < CONFIG_SECRET_COUNT; i++)
        free (sealed[i]);
    free (data);
    return result;
}

/* The extremes of the tenant's non-zero individual and role rates, and
   one rate that breaks step (if any): what validation must check them
   against. Writes up to 3 values into rates. */
static ppm_pg_result_t
s_rate_extremes (config_store_t *self, const char *tenant, int64_t step, int64_t rates[3],
                 size_t *count)
{
    *count = 0;
    char step_text[32];
    snprintf (step_text, sizeof step_text, "%lld", (long long)(step > 0 ? step : 1));
    const char *params[] = {tenant, step_text};
    PGresult *res = NULL;
    ppm_pg_result_t result = ppm_pg_exec (
        self->pg,
        "WITH r AS (SELECT call_per_minute AS v FROM config.user_rates WHERE tenant_id = $1 "
        " UNION ALL SELECT chat_per_minute FROM config.user_rates WHERE tenant_id = $1 "
        " UNION ALL SELECT call_per_minute FROM config.role_rates WHERE tenant_id = $1 "
        " UNION ALL SELECT chat_per_minute FROM config.role_rates WHERE tenant_id = $1) "
        "SELECT min(v), max(v), min(v) FILTER (WHERE v % $2::bigint <> 0) FROM r WHERE v > 0",
        2, params, &res);
    if (result != PPM_PG_OK)
        return result;
    for (int col = 0; col < 3; col++)
        if (!PQgetisnull (res, 0, col))
            rates[(*count)++] = s_int (res, 0, col);
    PQclear (res);
    return PPM_PG_OK;
}

/* ---- tenants ------------------------------------------------------------ */

static Ppm__V1__Tenant *
s_tenant_row (const PGresult *res, int row)
{
    Ppm__V1__Tenant *t = s_alloc (sizeof *t);
    ppm__v1__tenant__init (t);
    t->tenant_id = s_dup (PQgetvalue (res, row, 0));
    t->name = s_dup (PQgetvalue (res, row, 1));
    t->plan = s_dup (PQgetvalue (res, row, 2));
    t->created_at_ms = s_int (res, row, 3);
    t->revision = s_int (res, row, 4);
    return t;
}

static ppm_status_t *
s_insert_admin_key (config_store_t *self, const char *tenant, const char *label,
                    Ppm__V1__CreateAdminKeyReply **reply_p)
{
    char key[CONFIG_ADMIN_KEY_LEN + 1];
    char id[CONFIG_KEY_ID_LEN + 1];
    uint8_t hash[CONFIG_HASH_BYTES];
    config_crypto_admin_key_new (key, id, hash);
    char *hash_param = s_bytea_param (hash, sizeof hash);
    char now[32];
    int64_t now_ms = ppm_clock_now_ms ();
    snprintf (now, sizeof now, "%lld", (long long)now_ms);
    const char *params[] = {id, tenant, hash_param, label ? label : "", now};
    ppm_pg_result_t result = ppm_pg_exec (self->pg,
                                          "INSERT INTO config.admin_keys (key_id, tenant_id, hash, "
                                          "label, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
                                          5, params, NULL);
    free (hash_param);
    if (result != PPM_PG_OK) {
        sodium_memzero (key, sizeof key);
        return s_db_status (self, result, "creating an admin key");
    }
    Ppm__V1__CreateAdminKeyReply *reply = s_alloc (sizeof *reply);
    ppm__v1__create_admin_key_reply__init (reply);
    reply->key_id = s_dup (id);
    reply->admin_key = s_dup (key);
    reply->created_at_ms = now_ms;
    sodium_memzero (key, sizeof key);
    *reply_p = reply;
    return NULL;
}

ppm_status_t *
config_store_create_tenant (config_store_t *self, const Ppm__V1__CreateTenantRequest *req,
                            Ppm__V1__CreateTenantReply **reply_p, config_change_t *change)
{
    *reply_p = NULL;
    const char *plan = req->plan && *req->plan ? req->plan : "free";
    ppm_status_t *status = NULL;
    if (!req->name || !*req->name || strlen (req->name) > 200) {
        status = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid tenant");
        ppm_status_add_field (status, "name", "must be 1 to 200 bytes");
    }
    if (config_plan_rank (plan) < 0) {
        if (!status)
            status = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid tenant");
        ppm_status_add_field (status, "plan", "must be one of free, basic, pro, enterprise");
    }
    if (status)
        return status;

    char tenant[32];
    config_crypto_random_id ("t_", 20, tenant, sizeof tenant);
    char token[65];
    config_crypto_random_id ("", 64, token, sizeof token);
    char now[32];
    int64_t now_ms = ppm_clock_now_ms ();
    snprintf (now, sizeof now, "%lld", (long long)now_ms);
    Ppm__V1__Settings defaults = PPM__V1__SETTINGS__INIT;
    config_settings_defaults (&defaults);
    Ppm__V1__CreateAdminKeyReply *key = NULL;

    ppm_pg_result_t result = ppm_pg_begin (self->pg, PPM_PG_READ_COMMITTED);
    if (result == PPM_PG_OK) {
        const char *params[] = {tenant, req->name, plan, now};
        result = ppm_pg_exec (self->pg,
                              "INSERT INTO config.tenants (tenant_id, name, plan, created_at_ms) "
                              "VALUES ($1, $2, $3, $4)",
                              4, params, NULL);
    }
    if (result == PPM_PG_OK)
        result = s_store_settings (self, tenant, &defaults, 1, req->actor, true, token);
    sodium_memzero (token, sizeof token);
    if (result == PPM_PG_OK) {
        char what[300];
        snprintf (what, sizeof what, "name=%s plan=%s", req->name, plan);
        result = s_audit (self, tenant, req->actor, "tenant", "", what);
    }
    if (result == PPM_PG_OK) {
        status = s_insert_admin_key (self, tenant, "initial", &key);
        if (status) {
            s_rollback (self);
            return status;
        }
        result = s_audit (self, tenant, req->actor, "admin_keys", "", key->key_id);
    }
    if (result == PPM_PG_OK)
        result = ppm_pg_commit (self->pg);
    if (result != PPM_PG_OK) {
        s_rollback (self);
        if (key)
            ppm__v1__create_admin_key_reply__free_unpacked (key, NULL);
        return s_db_status (self, result, "creating a tenant");
    }
    Ppm__V1__CreateTenantReply *reply = s_alloc (sizeof *reply);
    ppm__v1__create_tenant_reply__init (reply);
    reply->tenant = s_alloc (sizeof *reply->tenant);
    ppm__v1__tenant__init (reply->tenant);
    reply->tenant->tenant_id = s_dup (tenant);
    reply->tenant->name = s_dup (req->name);
    reply->tenant->plan = s_dup (plan);
    reply->tenant->created_at_ms = now_ms;
    reply->tenant->revision = 1;
    reply->admin_key = key->admin_key;
    reply->admin_key_id = key->key_id;
    key->admin_key = NULL;
    key->key_id = NULL;
    ppm__v1__create_admin_key_reply__free_unpacked (key, NULL);
    *reply_p = reply;
    s_change (change, tenant, 1, 1, "tenant");
    return NULL;
}

ppm_status_t *
config_store_list_tenants (config_store_t *self, uint32_t limit, const char *cursor,
                           Ppm__V1__ListTenantsReply **reply_p)
{
    char limit_text[16];
    const char *params[] = {cursor ? cursor : "",
                            s_limit_param (limit, 100, 1000, limit_text, sizeof limit_text)};
    PGresult *res = NULL;
    ppm_pg_result_t result =
        ppm_pg_exec (self->pg,
                     "SELECT tenant_id, name, plan, created_at_ms, revision FROM config.tenants "
                     "WHERE tenant_id > $1 ORDER BY tenant_id LIMIT $2",
                     2, params, &res);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "listing tenants");
    int rows = PQntuples (res);
    Ppm__V1__ListTenantsReply *reply = s_alloc (sizeof *reply);
    ppm__v1__list_tenants_reply__init (reply);
    reply->tenants = s_alloc ((size_t)(rows ? rows : 1) * sizeof (Ppm__V1__Tenant *));
    for (int i = 0; i < rows; i++)
        reply->tenants[i] = s_tenant_row (res, i);
    reply->n_tenants = (size_t)rows;
    uint32_t want = (uint32_t)strtoul (params[1], NULL, 10);
    reply->next_cursor =
        s_dup (rows > 0 && (uint32_t)rows == want ? PQgetvalue (res, rows - 1, 0) : "");
    PQclear (res);
    *reply_p = reply;
    return NULL;
}

ppm_status_t *
config_store_set_plan (config_store_t *self, const char *tenant, const char *plan,
                       const char *actor, Ppm__V1__SetPlanReply **reply_p, config_change_t *change)
{
    *reply_p = NULL;
    if (config_plan_rank (plan) < 0)
        return s_invalid ("plan", "must be one of free, basic, pro, enterprise%s", "");
    ppm_pg_result_t result = ppm_pg_begin (self->pg, PPM_PG_READ_COMMITTED);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "setting the plan");
    Ppm__V1__Settings *s = NULL;
    ppm_status_t *status = s_load_settings (self, tenant, true, &s, NULL);
    if (status) {
        s_rollback (self);
        return status;
    }
    bool disable = s->enabled && !config_plan_allows_feature (plan);
    int64_t version = s->version;
    const char *params[] = {tenant, plan};
    result = ppm_pg_exec (self->pg, "UPDATE config.tenants SET plan = $2 WHERE tenant_id = $1", 2,
                          params, NULL);
    if (result == PPM_PG_OK && strcmp (s->plan, plan) != 0)
        result = s_audit (self, tenant, actor, "plan", s->plan, plan);
    if (result == PPM_PG_OK && disable) {
        /* A downgrade switches the feature off (S2), as a settings change. */
        s->enabled = false;
        version++;
        result = s_store_settings (self, tenant, s, version, actor, false, NULL);
        if (result == PPM_PG_OK)
            result = s_audit (self, tenant, actor, "enabled", "true", "false");
    }
    int64_t revision = 0;
    if (result == PPM_PG_OK && s_bump_revision (self, tenant, &revision))
        result = PPM_PG_ERROR;
    if (result == PPM_PG_OK)
        result = ppm_pg_commit (self->pg);
    ppm__v1__settings__free_unpacked (s, NULL);
    if (result != PPM_PG_OK) {
        s_rollback (self);
        return s_db_status (self, result, "setting the plan");
    }
    /* Read back the tenant row for the reply. */
    PGresult *res = NULL;
    const char *one[] = {tenant};
    result = ppm_pg_exec (self->pg,
                          "SELECT tenant_id, name, plan, created_at_ms, revision FROM "
                          "config.tenants WHERE tenant_id = $1",
                          1, one, &res);
    if (result != PPM_PG_OK || PQntuples (res) != 1) {
        PQclear (res);
        return s_db_status (self, result, "reading the tenant");
    }
    Ppm__V1__SetPlanReply *reply = s_alloc (sizeof *reply);
    ppm__v1__set_plan_reply__init (reply);
    reply->tenant = s_tenant_row (res, 0);
    reply->feature_disabled = disable;
    reply->settings_version = version;
    PQclear (res);
    *reply_p = reply;
    s_change (change, tenant, revision, version, "plan");
    return NULL;
}

/* ---- settings ----------------------------------------------------------- */

ppm_status_t *
config_store_get_settings (config_store_t *self, const char *tenant, Ppm__V1__Settings **settings_p)
{
    return s_load_settings (self, tenant, false, settings_p, NULL);
}

typedef struct {
    config_store_t *store;
    const char *tenant;
    const char *actor;
    ppm_pg_result_t result;
} s_audit_ctx_t;

static void
s_audit_field (const char *field, const char *old_text, const char *new_text, void *arg)
{
    s_audit_ctx_t *ctx = arg;
    if (ctx->result != PPM_PG_OK)
        return;
    ctx->result = s_audit (ctx->store, ctx->tenant, ctx->actor, field, old_text, new_text);
}

ppm_status_t *
config_store_put_settings (config_store_t *self, const char *tenant,
                           const Ppm__V1__PutSettingsRequest *req, Ppm__V1__Settings **settings_p,
                           config_change_t *change)
{
    *settings_p = NULL;
    if (!req->settings)
        return s_invalid ("settings", "is required%s", "");
    Ppm__V1__Settings *next = config_settings_dup (req->settings);
    if (!next)
        abort ();
    ppm_pg_result_t result = ppm_pg_begin (self->pg, PPM_PG_READ_COMMITTED);
    if (result != PPM_PG_OK) {
        ppm__v1__settings__free_unpacked (next, NULL);
        return s_db_status (self, result, "writing settings");
    }
    Ppm__V1__Settings *current = NULL;
    ppm_status_t *status = s_load_settings (self, tenant, true, &current, NULL);
    if (!status && req->expected_version != 0 && req->expected_version != current->version)
        status = ppm_status_new (PPM_ABORTED,
                                 "settings changed since version %lld (now %lld): read them again",
                                 (long long)req->expected_version, (long long)current->version);
    const char *bad = NULL;
    if (!status && config_settings_merge_secrets (next, current, req->clear_secrets,
                                                  req->n_clear_secrets, &bad))
        status = s_invalid ("clear_secrets", "names an unknown secret field%s", "");
    int64_t rates[3];
    size_t rate_count = 0;
    if (!status) {
        config_settings_normalize (next);
        const ppm_currency_t *currency = ppm_currency_find (next->currency);
        result = s_rate_extremes (self, tenant, currency ? currency->step : 1, rates, &rate_count);
        if (result != PPM_PG_OK)
            status = s_db_status (self, result, "reading rates");
    }
    if (!status) {
        config_settings_ctx_t ctx = {.plan = current->plan,
                                     .time_scaled = self->time_scaled,
                                     .rates = rates,
                                     .rate_count = rate_count};
        status = config_settings_validate (next, &ctx);
    }
    if (status) {
        s_rollback (self);
        ppm__v1__settings__free_unpacked (next, NULL);
        if (current)
            ppm__v1__settings__free_unpacked (current, NULL);
        return status;
    }
    int64_t version = current->version + 1;
    result = s_store_settings (self, tenant, next, version, req->actor, false, NULL);
    s_audit_ctx_t actx = {self, tenant, req->actor, result};
    if (result == PPM_PG_OK)
        config_settings_diff (current, next, s_audit_field, &actx);
    result = actx.result;
    int64_t revision = 0;
    if (result == PPM_PG_OK && s_bump_revision (self, tenant, &revision))
        result = PPM_PG_ERROR;
    if (result == PPM_PG_OK)
        result = ppm_pg_commit (self->pg);
    ppm__v1__settings__free_unpacked (current, NULL);
    ppm__v1__settings__free_unpacked (next, NULL);
    if (result != PPM_PG_OK) {
        s_rollback (self);
        return s_db_status (self, result, "writing settings");
    }
    s_change (change, tenant, revision, version, "settings");
    return s_load_settings (self, tenant, false, settings_p, NULL);
}

/* ---- rates -------------------------------------------------------------- */

static void
s_amount_param (bool set, int64_t amount, char *buf, size_t size, const char **param)
{
    if (!set) {
        *param = NULL;
        return;
    }
    snprintf (buf, size, "%lld", (long long)amount);
    *param = buf;
}

/* Validates one rate pair against the tenant's currency and presets. */
static ppm_status_t *
s_check_rates (config_store_t *self, const char *tenant, bool call_set, int64_t call, bool chat_set,
               int64_t chat, Ppm__V1__Settings **settings_p)
{
    ppm_status_t *status = s_load_settings (self, tenant, true, settings_p, NULL);
    if (status)
        return status;
    Ppm__V1__Settings *s = *settings_p;
    const ppm_currency_t *currency = ppm_currency_find (s->currency);
    if (!currency)
        return ppm_status_new (PPM_FAILED_PRECONDITION, "the tenant's currency is not supported");
    ppm_status_t *invalid = NULL;
    if (call_set)
        config_rate_check (currency, s->preset_minutes, s->n_preset_minutes, call,
                           "call_per_minute", &invalid);
    if (chat_set)
        config_rate_check (currency, s->preset_minutes, s->n_preset_minutes, chat,
                           "chat_per_minute", &invalid);
    return invalid;
}

static void
s_amount_text (bool set, int64_t amount, char *buf, size_t size)
{
    if (set)
        snprintf (buf, size, "%lld", (long long)amount);
    else
        snprintf (buf, size, "null");
}

/* Shared by user and role rates: table is "user_rates" or "role_rates". */
static ppm_status_t *
s_put_rates (config_store_t *self, const char *tenant, bool role, const char *key, bool call_set,
             int64_t call, bool chat_set, int64_t chat, int32_t priority, const char *actor,
             config_change_t *change)
{
    ppm_pg_result_t result = ppm_pg_begin (self->pg, PPM_PG_READ_COMMITTED);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "writing rates");
    Ppm__V1__Settings *s = NULL;
    ppm_status_t *status = s_check_rates (self, tenant, call_set, call, chat_set, chat, &s);
    if (s)
        ppm__v1__settings__free_unpacked (s, NULL);
    if (status) {
        s_rollback (self);
        return status;
    }
    /* The old values, for the audit log. */
    PGresult *res = NULL;
    const char *key_params[] = {tenant, key};
    result = ppm_pg_exec (self->pg,
                          role ? "SELECT call_per_minute, chat_per_minute, priority FROM "
                                 "config.role_rates WHERE tenant_id = $1 AND role = $2"
                               : "SELECT call_per_minute, chat_per_minute, 0 FROM "
                                 "config.user_rates WHERE tenant_id = $1 AND payee = $2",
                          2, key_params, &res);
    char old_call[32] = "null", old_chat[32] = "null", old_prio[16] = "0";
    if (result == PPM_PG_OK && PQntuples (res) == 1) {
        if (!PQgetisnull (res, 0, 0))
            snprintf (old_call, sizeof old_call, "%s", PQgetvalue (res, 0, 0));
        if (!PQgetisnull (res, 0, 1))
            snprintf (old_chat, sizeof old_chat, "%s", PQgetvalue (res, 0, 1));
        snprintf (old_prio, sizeof old_prio, "%s", PQgetvalue (res, 0, 2));
    }
    PQclear (res);
    char call_buf[32], chat_buf[32], prio_buf[16];
    const char *call_param, *chat_param;
    s_amount_param (call_set, call, call_buf, sizeof call_buf, &call_param);
    s_amount_param (chat_set, chat, chat_buf, sizeof chat_buf, &chat_param);
    snprintf (prio_buf, sizeof prio_buf, "%d", priority);
    if (result == PPM_PG_OK) {
        if (!call_set && !chat_set)
            result = ppm_pg_exec (self->pg,
                                  role ? "DELETE FROM config.role_rates WHERE tenant_id = $1 AND "
                                         "role = $2"
                                       : "DELETE FROM config.user_rates WHERE tenant_id = $1 AND "
                                         "payee = $2",
                                  2, key_params, NULL);
        else if (role) {
            const char *params[] = {tenant, key, call_param, chat_param, prio_buf};
            result = ppm_pg_exec (
                self->pg,
                "INSERT INTO config.role_rates (tenant_id, role, call_per_minute, "
                "chat_per_minute, priority) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, "
                "role) DO UPDATE SET call_per_minute = $3, chat_per_minute = $4, priority = $5",
                5, params, NULL);
        } else {
            const char *params[] = {tenant, key, call_param, chat_param};
            result = ppm_pg_exec (self->pg,
                                  "INSERT INTO config.user_rates (tenant_id, payee, "
                                  "call_per_minute, chat_per_minute) VALUES ($1, $2, $3, $4) ON "
                                  "CONFLICT (tenant_id, payee) DO UPDATE SET call_per_minute = "
                                  "$3, chat_per_minute = $4",
                                  4, params, NULL);
        }
    }
    char field[256], new_text[32];
    const char *prefix = role ? "role_rates" : "user_rates";
    s_amount_text (call_set, call, new_text, sizeof new_text);
    if (result == PPM_PG_OK && strcmp (old_call, new_text) != 0) {
        snprintf (field, sizeof field, "%s.%s.call_per_minute", prefix, key);
        result = s_audit (self, tenant, actor, field, old_call, new_text);
    }
    s_amount_text (chat_set, chat, new_text, sizeof new_text);
    if (result == PPM_PG_OK && strcmp (old_chat, new_text) != 0) {
        snprintf (field, sizeof field, "%s.%s.chat_per_minute", prefix, key);
        result = s_audit (self, tenant, actor, field, old_chat, new_text);
    }
    if (result == PPM_PG_OK && role && strcmp (old_prio, prio_buf) != 0) {
        snprintf (field, sizeof field, "%s.%s.priority", prefix, key);
        result = s_audit (self, tenant, actor, field, old_prio, prio_buf);
    }
    int64_t revision = 0;
    if (result == PPM_PG_OK && s_bump_revision (self, tenant, &revision))
        result = PPM_PG_ERROR;
    if (result == PPM_PG_OK)
        result = ppm_pg_commit (self->pg);
    if (result != PPM_PG_OK) {
        s_rollback (self);
        return s_db_status (self, result, "writing rates");
    }
    s_change (change, tenant, revision, 0, role ? "role_rates" : "user_rates");
    return NULL;
}

ppm_status_t *
config_store_put_user_rates (config_store_t *self, const char *tenant,
                             const Ppm__V1__UserRates *rates, const char *actor,
                             config_change_t *change)
{
    if (!rates || !config_valid_payee (rates->payee))
        return s_invalid ("payee", "must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ -%s", "");
    return s_put_rates (self, tenant, false, rates->payee, rates->call_set, rates->call_per_minute,
                        rates->chat_set, rates->chat_per_minute, 0, actor, change);
}

ppm_status_t *
config_store_put_role_rates (config_store_t *self, const char *tenant,
                             const Ppm__V1__RoleRates *rates, const char *actor,
                             config_change_t *change)
{
    if (!rates || !config_valid_role (rates->role))
        return s_invalid ("role", "must be 1 to 64 characters of A-Z a-z 0-9 _ . : -%s", "");
    if (rates->priority < -CONFIG_ROLE_PRIO_LIMIT || rates->priority > CONFIG_ROLE_PRIO_LIMIT)
        return s_invalid ("priority", "must be -1000 to 1000%s", "");
    return s_put_rates (self, tenant, true, rates->role, rates->call_set, rates->call_per_minute,
                        rates->chat_set, rates->chat_per_minute, rates->priority, actor, change);
}

static Ppm__V1__UserRates *
s_user_row (const PGresult *res, int row)
{
    Ppm__V1__UserRates *r = s_alloc (sizeof *r);
    ppm__v1__user_rates__init (r);
    r->payee = s_dup (PQgetvalue (res, row, 0));
    r->call_set = !PQgetisnull (res, row, 1);
    r->call_per_minute = r->call_set ? s_int (res, row, 1) : 0;
    r->chat_set = !PQgetisnull (res, row, 2);
    r->chat_per_minute = r->chat_set ? s_int (res, row, 2) : 0;
    return r;
}

static Ppm__V1__RoleRates *
s_role_row (const PGresult *res, int row)
{
    Ppm__V1__RoleRates *r = s_alloc (sizeof *r);
    ppm__v1__role_rates__init (r);
    r->role = s_dup (PQgetvalue (res, row, 0));
    r->call_set = !PQgetisnull (res, row, 1);
    r->call_per_minute = r->call_set ? s_int (res, row, 1) : 0;
    r->chat_set = !PQgetisnull (res, row, 2);
    r->chat_per_minute = r->chat_set ? s_int (res, row, 2) : 0;
    r->priority = (int32_t)s_int (res, row, 3);
    return r;
}

/* NOT_FOUND unless the tenant exists. */
static ppm_status_t *
s_tenant_exists (config_store_t *self, const char *tenant)
{
    PGresult *res = NULL;
    const char *params[] = {tenant};
    ppm_pg_result_t result = ppm_pg_exec (
        self->pg, "SELECT 1 FROM config.tenants WHERE tenant_id = $1", 1, params, &res);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "reading the tenant");
    int rows = PQntuples (res);
    PQclear (res);
    return rows == 1 ? NULL : ppm_status_new (PPM_NOT_FOUND, "no such tenant");
}

ppm_status_t *
config_store_get_user_rates (config_store_t *self, const char *tenant, const char *payee,
                             Ppm__V1__UserRates **rates_p)
{
    *rates_p = NULL;
    if (!config_valid_payee (payee))
        return s_invalid ("payee", "must be 1 to 128 characters of A-Z a-z 0-9 _ . : @ -%s", "");
    ppm_status_t *status = s_tenant_exists (self, tenant);
    if (status)
        return status;
    PGresult *res = NULL;
    const char *params[] = {tenant, payee};
    ppm_pg_result_t result =
        ppm_pg_exec (self->pg,
                     "SELECT payee, call_per_minute, chat_per_minute FROM config.user_rates "
                     "WHERE tenant_id = $1 AND payee = $2",
                     2, params, &res);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "reading rates");
    if (PQntuples (res) == 1)
        *rates_p = s_user_row (res, 0);
    else {
        /* No row: both blank. */
        Ppm__V1__UserRates *r = s_alloc (sizeof *r);
        ppm__v1__user_rates__init (r);
        r->payee = s_dup (payee);
        *rates_p = r;
    }
    PQclear (res);
    return NULL;
}

ppm_status_t *
config_store_list_user_rates (config_store_t *self, const char *tenant, uint32_t limit,
                              const char *cursor, Ppm__V1__ListUserRatesReply **reply_p)
{
    *reply_p = NULL;
    ppm_status_t *status = s_tenant_exists (self, tenant);
    if (status)
        return status;
    char limit_text[16];
    const char *params[] = {tenant, cursor ? cursor : "",
                            s_limit_param (limit, 100, 5000, limit_text, sizeof limit_text)};
    PGresult *res = NULL;
    ppm_pg_result_t result = ppm_pg_exec (
        self->pg,
        "SELECT payee, call_per_minute, chat_per_minute FROM config.user_rates WHERE tenant_id "
        "= $1 AND payee > $2 ORDER BY payee LIMIT $3",
        3, params, &res);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "listing rates");
    int rows = PQntuples (res);
    Ppm__V1__ListUserRatesReply *reply = s_alloc (sizeof *reply);
    ppm__v1__list_user_rates_reply__init (reply);
    reply->rates = s_alloc ((size_t)(rows ? rows : 1) * sizeof (Ppm__V1__UserRates *));
    for (int i = 0; i < rows; i++)
        reply->rates[i] = s_user_row (res, i);
    reply->n_rates = (size_t)rows;
    bool full = rows > 0 && (uint32_t)rows == (uint32_t)strtoul (params[2], NULL, 10);
    reply->next_cursor = s_dup (full ? PQgetvalue (res, rows - 1, 0) : "");
    PQclear (res);
    *reply_p = reply;
    return NULL;
}

ppm_status_t *
config_store_get_role_rates (config_store_t *self, const char *tenant, const char *role,
                             Ppm__V1__RoleRatesList **reply_p)
{
    *reply_p = NULL;
    ppm_status_t *status = s_tenant_exists (self, tenant);
    if (status)
        return status;
    PGresult *res = NULL;
    const char *params[] = {tenant, role ? role : ""};
    ppm_pg_result_t result = ppm_pg_exec (
        self->pg,
        "SELECT role, call_per_minute, chat_per_minute, priority FROM config.role_rates WHERE "
        "tenant_id = $1 AND ($2 = '' OR role = $2) ORDER BY priority DESC, role LIMIT 10000",
        2, params, &res);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "reading role rates");
    int rows = PQntuples (res);
    Ppm__V1__RoleRatesList *reply = s_alloc (sizeof *reply);
    ppm__v1__role_rates_list__init (reply);
    reply->roles = s_alloc ((size_t)(rows ? rows : 1) * sizeof (Ppm__V1__RoleRates *));
    for (int i = 0; i < rows; i++)
        reply->roles[i] = s_role_row (res, i);
    reply->n_roles = (size_t)rows;
    PQclear (res);
    *reply_p = reply;
    return NULL;
}

/* ---- admin keys --------------------------------------------------------- */

ppm_status_t *
config_store_create_admin_key (config_store_t *self, const char *tenant, const char *label,
                               const char *actor, Ppm__V1__CreateAdminKeyReply **reply_p)
{
    *reply_p = NULL;
    if (label && strlen (label) > 200)
        return s_invalid ("label", "must be at most 200 bytes%s", "");
    ppm_pg_result_t result = ppm_pg_begin (self->pg, PPM_PG_READ_COMMITTED);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "creating an admin key");
    ppm_status_t *status = s_tenant_exists (self, tenant);
    if (!status)
        status = s_insert_admin_key (self, tenant, label, reply_p);
    if (!status) {
        result = s_audit (self, tenant, actor, "admin_keys", "", (*reply_p)->key_id);
        if (result == PPM_PG_OK)
            result = ppm_pg_commit (self->pg);
        if (result != PPM_PG_OK)
            status = s_db_status (self, result, "creating an admin key");
    }
    if (status) {
        s_rollback (self);
        if (*reply_p) {
            sodium_memzero ((*reply_p)->admin_key, strlen ((*reply_p)->admin_key));
            ppm__v1__create_admin_key_reply__free_unpacked (*reply_p, NULL);
            *reply_p = NULL;
        }
    }
    return status;
}

ppm_status_t *
config_store_revoke_admin_key (config_store_t *self, const char *tenant, const char *key_id,
                               const char *actor)
{
    char now[32];
    snprintf (now, sizeof now, "%lld", (long long)ppm_clock_now_ms ());
    const char *params[] = {tenant, key_id ? key_id : "", now};
    ppm_pg_result_t result = ppm_pg_begin (self->pg, PPM_PG_READ_COMMITTED);
    PGresult *res = NULL;
    if (result == PPM_PG_OK)
        result = ppm_pg_exec (self->pg,
                              "UPDATE config.admin_keys SET revoked_at_ms = $3 WHERE tenant_id = "
                              "$1 AND key_id = $2 AND revoked_at_ms IS NULL RETURNING key_id",
                              3, params, &res);
    if (result == PPM_PG_OK && PQntuples (res) != 1) {
        PQclear (res);
        s_rollback (self);
        return ppm_status_new (PPM_NOT_FOUND, "no such active admin key for this tenant");
    }
    PQclear (res);
    if (result == PPM_PG_OK)
        result = s_audit (self, tenant, actor, "admin_keys", key_id, "revoked");
    if (result == PPM_PG_OK)
        result = ppm_pg_commit (self->pg);
    if (result != PPM_PG_OK) {
        s_rollback (self);
        return s_db_status (self, result, "revoking an admin key");
    }
    return NULL;
}

ppm_status_t *
config_store_verify_admin_key (config_store_t *self, const char *key,
                               Ppm__V1__VerifyAdminKeyReply **reply_p)
{
    *reply_p = NULL;
    char id[CONFIG_KEY_ID_LEN + 1];
    uint8_t hash[CONFIG_HASH_BYTES];
    if (config_crypto_admin_key_parse (key, id, hash))
        return ppm_status_new (PPM_UNAUTHENTICATED, "invalid admin key");
    PGresult *res = NULL;
    const char *params[] = {id};
    ppm_pg_result_t result =
        ppm_pg_exec (self->pg,
                     "SELECT tenant_id, hash FROM config.admin_keys WHERE key_id = $1 AND "
                     "revoked_at_ms IS NULL",
                     1, params, &res);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "verifying an admin key");
    bool ok = false;
    if (PQntuples (res) == 1) {
        size_t size = 0;
        unsigned char *stored =
            PQunescapeBytea ((const unsigned char *)PQgetvalue (res, 0, 1), &size);
        ok = stored && size == CONFIG_HASH_BYTES && config_crypto_hash_equal (stored, hash);
        PQfreemem (stored);
    }
    if (!ok) {
        PQclear (res);
        return ppm_status_new (PPM_UNAUTHENTICATED, "invalid admin key");
    }
    Ppm__V1__VerifyAdminKeyReply *reply = s_alloc (sizeof *reply);
    ppm__v1__verify_admin_key_reply__init (reply);
    reply->tenant_id = s_dup (PQgetvalue (res, 0, 0));
    reply->key_id = s_dup (id);
    PQclear (res);
    *reply_p = reply;
    return NULL;
}

/* ---- audit -------------------------------------------------------------- */

ppm_status_t *
config_store_list_audit (config_store_t *self, const char *tenant, uint32_t limit,
                         const char *cursor, Ppm__V1__ListAuditReply **reply_p)
{
    *reply_p = NULL;
    ppm_status_t *status = s_tenant_exists (self, tenant);
    if (status)
        return status;
    char limit_text[16];
    const char *params[] = {tenant, cursor && *cursor ? cursor : "9223372036854775807",
                            s_limit_param (limit, 100, 1000, limit_text, sizeof limit_text)};
    char *end = NULL;
    strtoll (params[1], &end, 10);
    if (!end || *end)
        return s_invalid ("cursor", "is not a cursor this method returned%s", "");
    PGresult *res = NULL;
    ppm_pg_result_t result = ppm_pg_exec (
        self->pg,
        "SELECT id, at_ms, actor, field, old_value, new_value FROM config.audit WHERE tenant_id "
        "= $1 AND id < $2::bigint ORDER BY id DESC LIMIT $3",
        3, params, &res);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "reading the audit log");
    int rows = PQntuples (res);
    Ppm__V1__ListAuditReply *reply = s_alloc (sizeof *reply);
    ppm__v1__list_audit_reply__init (reply);
    reply->entries = s_alloc ((size_t)(rows ? rows : 1) * sizeof (Ppm__V1__AuditEntry *));
    for (int i = 0; i < rows; i++) {
        Ppm__V1__AuditEntry *e = s_alloc (sizeof *e);
        ppm__v1__audit_entry__init (e);
        e->id = s_int (res, i, 0);
        e->at_ms = s_int (res, i, 1);
        e->actor = s_dup (PQgetvalue (res, i, 2));
        e->field = s_dup (PQgetvalue (res, i, 3));
        e->old_value = s_dup (PQgetvalue (res, i, 4));
        e->new_value = s_dup (PQgetvalue (res, i, 5));
        reply->entries[i] = e;
    }
    reply->n_entries = (size_t)rows;
    bool full = rows > 0 && (uint32_t)rows == (uint32_t)strtoul (params[2], NULL, 10);
    reply->next_cursor = s_dup (full ? PQgetvalue (res, rows - 1, 0) : "");
    PQclear (res);
    *reply_p = reply;
    return NULL;
}

/* ---- secrets for services ----------------------------------------------- */

ppm_status_t *
config_store_get_secrets (config_store_t *self, const char *tenant, Ppm__V1__Secrets **reply_p)
{
    *reply_p = NULL;
    Ppm__V1__Settings *s = NULL;
    ppm_status_t *status = s_load_settings (self, tenant, false, &s, NULL);
    if (status)
        return status;
    Ppm__V1__Secrets *reply = s_alloc (sizeof *reply);
    ppm__v1__secrets__init (reply);
    reply->stripe_mode = s_dup (s->stripe_mode);
    reply->stripe_secret_key = s_dup (s->stripe_secret_key);
    reply->stripe_restricted_key = s_dup (s->stripe_restricted_key);
    reply->stripe_publishable_key = s_dup (s->stripe_publishable_key);
    reply->stripe_webhook_secret = s_dup (s->stripe_webhook_secret);
    reply->currency = s_dup (s->currency);
    reply->settings_version = s->version;
    ppm__v1__settings__free_unpacked (s, NULL);
    *reply_p = reply;
    return NULL;
}

/* Reads a tenant's user-token secret, decrypted (NULL when it does not
   open), when it was made and, when settings_p is given, the tenant's
   settings (NULL when they do not decode). The status is for the database
   and an unknown tenant only. */
static ppm_status_t *
s_user_token_secret_read (config_store_t *self, const char *tenant, char **secret_p,
                          int64_t *rotated_at_ms, Ppm__V1__Settings **settings_p)
{
    PGresult *res = NULL;
    const char *params[] = {tenant};
    ppm_pg_result_t result =
        ppm_pg_exec (self->pg,
                     "SELECT user_token_secret, user_token_rotated_at_ms, data FROM "
                     "config.settings WHERE tenant_id = $1",
                     1, params, &res);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "reading the user-token secret");
    if (PQntuples (res) != 1) {
        PQclear (res);
        return ppm_status_new (PPM_NOT_FOUND, "no such tenant");
    }
    *secret_p = s_open_column (self, res, 0, 0, tenant, "user_token_secret");
    *rotated_at_ms = s_int (res, 0, 1);
    if (settings_p) {
        size_t size = 0;
        unsigned char *raw = PQunescapeBytea ((const unsigned char *)PQgetvalue (res, 0, 2), &size);
        *settings_p = raw ? ppm__v1__settings__unpack (NULL, size, raw) : NULL;
        PQfreemem (raw);
    }
    PQclear (res);
    return NULL;
}

static void
s_secret_free (char **secret_p)
{
    if (*secret_p) {
        sodium_memzero (*secret_p, strlen (*secret_p));
        free (*secret_p);
        *secret_p = NULL;
    }
}

ppm_status_t *
config_store_get_user_token_secret (config_store_t *self, const char *tenant,
                                    Ppm__V1__UserTokenSecret **reply_p)
{
    *reply_p = NULL;
    char *secret = NULL;
    int64_t rotated_at_ms = 0;
    Ppm__V1__Settings *s = NULL;
    ppm_status_t *st = s_user_token_secret_read (self, tenant, &secret, &rotated_at_ms, &s);
    if (st)
        return st;
    if (!secret || !s) {
        s_secret_free (&secret);
        if (s)
            ppm__v1__settings__free_unpacked (s, NULL);
        return ppm_status_new (PPM_DATA_LOSS, "the user-token secret does not open");
    }
    Ppm__V1__UserTokenSecret *reply = s_alloc (sizeof *reply);
    ppm__v1__user_token_secret__init (reply);
    reply->secret = secret;
    reply->rotated_at_ms = rotated_at_ms;
    /* Hand over the origins list. */
    reply->cors_allowed_origins = s->cors_allowed_origins;
    reply->n_cors_allowed_origins = s->n_cors_allowed_origins;
    s->cors_allowed_origins = NULL;
    s->n_cors_allowed_origins = 0;
    ppm__v1__settings__free_unpacked (s, NULL);
    *reply_p = reply;
    return NULL;
}

/* ---- the user-token secret for admins ------------------------------------ */

ppm_status_t *
config_store_get_user_token_secret_info (config_store_t *self, const char *tenant,
                                         Ppm__V1__UserTokenSecretInfo **reply_p)
{
    *reply_p = NULL;
    char *secret = NULL;
    int64_t rotated_at_ms = 0;
    ppm_status_t *st = s_user_token_secret_read (self, tenant, &secret, &rotated_at_ms, NULL);
    if (st)
        return st;
    if (!secret)
        return ppm_status_new (PPM_DATA_LOSS,
                               "the user-token secret does not open with this master key: "
                               "rotate it");
    char mask[32];
    ppm_mask_secret (secret, mask, sizeof mask);
    s_secret_free (&secret);
    Ppm__V1__UserTokenSecretInfo *reply = s_alloc (sizeof *reply);
    ppm__v1__user_token_secret_info__init (reply);
    reply->masked = s_dup (mask);
    reply->rotated_at_ms = rotated_at_ms;
    *reply_p = reply;
    return NULL;
}

ppm_status_t *
config_store_rotate_user_token_secret (config_store_t *self, const char *tenant, const char *actor,
                                       Ppm__V1__RotateUserTokenSecretReply **reply_p,
                                       config_change_t *change)
{
    *reply_p = NULL;
    ppm_pg_result_t result = ppm_pg_begin (self->pg, PPM_PG_READ_COMMITTED);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "rotating the user-token secret");
    PGresult *res = NULL;
    const char *one[] = {tenant};
    result = ppm_pg_exec (self->pg,
                          "SELECT user_token_secret FROM config.settings WHERE tenant_id = $1 "
                          "FOR UPDATE",
                          1, one, &res);
    if (result != PPM_PG_OK) {
        s_rollback (self);
        return s_db_status (self, result, "rotating the user-token secret");
    }
    if (PQntuples (res) != 1) {
        PQclear (res);
        s_rollback (self);
        return ppm_status_new (PPM_NOT_FOUND, "no such tenant");
    }
    /* The old secret is opened only for its mask in the audit log. One
       that no longer opens (a new master key) is still replaced: rotating
       is how such a tenant recovers. */
    char old_mask[32];
    char *old = s_open_column (self, res, 0, 0, tenant, "user_token_secret");
    PQclear (res);
    if (old) {
        ppm_mask_secret (old, old_mask, sizeof old_mask);
        sodium_memzero (old, strlen (old));
        free (old);
    } else
        snprintf (old_mask, sizeof old_mask, "%s", "(did not open)");
    char secret[65];
    config_crypto_random_id ("", 64, secret, sizeof secret);
    char new_mask[32];
    ppm_mask_secret (secret, new_mask, sizeof new_mask);
    char *sealed = s_sealed_param (self, tenant, "user_token_secret", secret);
    char now[32];
    int64_t now_ms = ppm_clock_now_ms ();
    snprintf (now, sizeof now, "%lld", (long long)now_ms);
    const char *params[] = {tenant, sealed, now};
    result = ppm_pg_exec (self->pg,
                          "UPDATE config.settings SET user_token_secret = $2, "
                          "user_token_rotated_at_ms = $3 WHERE tenant_id = $1",
                          3, params, NULL);
    free (sealed);
    if (result == PPM_PG_OK)
        result = s_audit (self, tenant, actor, "user_token_secret", old_mask, new_mask);
    if (result == PPM_PG_OK)
        result = ppm_pg_commit (self->pg);
    if (result != PPM_PG_OK) {
        sodium_memzero (secret, sizeof secret);
        s_rollback (self);
        return s_db_status (self, result, "rotating the user-token secret");
    }
    Ppm__V1__RotateUserTokenSecretReply *reply = s_alloc (sizeof *reply);
    ppm__v1__rotate_user_token_secret_reply__init (reply);
    reply->secret = s_dup (secret);
    reply->masked = s_dup (new_mask);
    reply->rotated_at_ms = now_ms;
    sodium_memzero (secret, sizeof secret);
    *reply_p = reply;
    /* Quotes do not depend on the secret: no new revision, as for admin
       keys; the event tells gateways to drop the cached secret. */
    s_change (change, tenant, 0, 0, "user_token_secret");
    return NULL;
}

/* ---- snapshots ---------------------------------------------------------- */

#define S_SNAPSHOT_PAGE 5000

ppm_status_t *
config_store_get_snapshot (config_store_t *self, const char *tenant, const char *rates_cursor,
                           Ppm__V1__Snapshot **reply_p)
{
    *reply_p = NULL;
    Ppm__V1__Settings *s = NULL;
    int64_t revision = 0;
    ppm_status_t *status = s_load_settings_ex (self, tenant, false, false, &s, &revision);
    if (status)
        return status;
    Ppm__V1__Snapshot *snap = s_alloc (sizeof *snap);
    ppm__v1__snapshot__init (snap);
    snap->tenant_id = s_dup (tenant);
    snap->plan = s_dup (s->plan);
    snap->revision = revision;
    bool first = !rates_cursor || !*rates_cursor;
    config_settings_strip (s);
    snap->settings = s;
    char page[16];
    snprintf (page, sizeof page, "%d", S_SNAPSHOT_PAGE);
    const char *params[] = {tenant, rates_cursor ? rates_cursor : "", page};
    PGresult *res = NULL;
    ppm_pg_result_t result = ppm_pg_exec (
        self->pg,
        "SELECT payee, call_per_minute, chat_per_minute FROM config.user_rates WHERE tenant_id "
        "= $1 AND payee > $2 ORDER BY payee LIMIT $3",
        3, params, &res);
    if (result != PPM_PG_OK) {
        ppm__v1__snapshot__free_unpacked (snap, NULL);
        return s_db_status (self, result, "reading a snapshot");
    }
    int rows = PQntuples (res);
    snap->user_rates = s_alloc ((size_t)(rows ? rows : 1) * sizeof (Ppm__V1__UserRates *));
    for (int i = 0; i < rows; i++)
        snap->user_rates[i] = s_user_row (res, i);
    snap->n_user_rates = (size_t)rows;
    snap->next_rates_cursor = s_dup (rows == S_SNAPSHOT_PAGE ? PQgetvalue (res, rows - 1, 0) : "");
    PQclear (res);
    if (first) {
        Ppm__V1__RoleRatesList *roles = NULL;
        status = config_store_get_role_rates (self, tenant, "", &roles);
        if (status) {
            ppm__v1__snapshot__free_unpacked (snap, NULL);
            return status;
        }
        snap->role_rates = roles->roles;
        snap->n_role_rates = roles->n_roles;
        roles->roles = NULL;
        roles->n_roles = 0;
        ppm__v1__role_rates_list__free_unpacked (roles, NULL);
    }
    *reply_p = snap;
    return NULL;
}

ppm_status_t *
config_store_list_revisions (config_store_t *self, uint32_t limit, const char *cursor,
                             Ppm__V1__ListRevisionsReply **reply_p)
{
    *reply_p = NULL;
    char limit_text[16];
    const char *params[] = {cursor ? cursor : "",
                            s_limit_param (limit, 5000, 10000, limit_text, sizeof limit_text)};
    PGresult *res = NULL;
    ppm_pg_result_t result =
        ppm_pg_exec (self->pg,
                     "SELECT tenant_id, revision FROM config.tenants WHERE tenant_id > $1 "
                     "ORDER BY tenant_id LIMIT $2",
                     2, params, &res);
    if (result != PPM_PG_OK)
        return s_db_status (self, result, "listing revisions");
    int rows = PQntuples (res);
    Ppm__V1__ListRevisionsReply *reply = s_alloc (sizeof *reply);
    ppm__v1__list_revisions_reply__init (reply);
    reply->tenants = s_alloc ((size_t)(rows ? rows : 1) * sizeof (Ppm__V1__TenantRevision *));
    for (int i = 0; i < rows; i++) {
        Ppm__V1__TenantRevision *t = s_alloc (sizeof *t);
        ppm__v1__tenant_revision__init (t);
        t->tenant_id = s_dup (PQgetvalue (res, i, 0));
        t->revision = s_int (res, i, 1);
        reply->tenants[i] = t;
    }
    reply->n_tenants = (size_t)rows;
    bool full = rows > 0 && (uint32_t)rows == (uint32_t)strtoul (params[1], NULL, 10);
    reply->next_cursor = s_dup (full ? PQgetvalue (res, rows - 1, 0) : "");
    PQclear (res);
    *reply_p = reply;
    return NULL;
}
