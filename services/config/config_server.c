/*  config_server: see config_server.h. One handler per method: unpack the
    request, settle which tenant it is for (the envelope's, or the
    message's when the envelope has none; both must agree), call the store,
    reply, and publish config.changed after a committed change. Replies to
    admins never hold a stored secret: settings are masked before they
    leave, and the user-token secret is shown as its mask. The only
    plaintext an admin gets is what was just made for them, once: a new
    admin key, a rotated user-token secret.
*/
#include "config_server.h"

#include <string.h>
#include "config_crypto.h"
#include "config_settings.h"
#include "config_store.h"
#include "ppm_clock.h"
#include "ppm_events.h"
#include "ppm_log.h"
#include "ppm_metrics.h"
#include "ppm_pg.h"
#include "ppm_rpc.h"
#include "proto/config.pb-c.h"

typedef struct {
    zsock_t *pipe;                /* the actor's pipe */
    zloop_t *loop;                /* owns every reader and timer */
    ppm_rpc_server_t *rpc;        /* "config.*" */
    ppm_events_pub_t *pub;        /* config.changed */
    ppm_pg_t *pg;                 /* the database connection */
    config_crypto_t *crypto;      /* the master key */
    config_store_t *store;        /* queries */
    ppm_counter_t *changes;       /* ppm_config_changes_total{kind} */
    ppm_counter_t *auth_failures; /* ppm_config_admin_auth_failures_total */
} self_t;

/* ---- helpers ------------------------------------------------------------ */

static void
s_finish (ppm_rpc_call_t **call_p, ppm_status_t *status, const ProtobufCMessage *reply)
{
    if (status) {
        if (ppm_status_code (status) == PPM_INTERNAL || ppm_status_code (status) == PPM_DATA_LOSS)
            ppm_log_error ("%s: %s", ppm_rpc_call_method (*call_p), ppm_status_message (status));
        ppm_rpc_call_fail (call_p, &status);
    } else
        ppm_rpc_call_reply (call_p, reply);
}

/* The tenant a call acts for. NULL with *status set when missing or when
   the envelope and the message disagree. */
static const char *
s_tenant (ppm_rpc_call_t *call, const char *message_tenant, ppm_status_t **status)
{
    const char *envelope = ppm_rpc_call_tenant (call);
    envelope = envelope ? envelope : "";
    message_tenant = message_tenant ? message_tenant : "";
    if (*envelope && *message_tenant && strcmp (envelope, message_tenant) != 0) {
        *status = ppm_status_new (PPM_PERMISSION_DENIED, "tenant mismatch");
        ppm_status_add_field (*status, "tenant_id", "does not match the envelope's tenant");
        return NULL;
    }
    const char *tenant = *envelope ? envelope : message_tenant;
    if (!*tenant || strlen (tenant) > 60) {
        *status = ppm_status_new (PPM_INVALID_ARGUMENT, "tenant required");
        ppm_status_add_field (*status, "tenant_id", "is required");
        return NULL;
    }
    return tenant;
}

static void
s_publish (self_t *self, const config_change_t *change)
{
    Ppm__V1__ConfigChanged event = PPM__V1__CONFIG_CHANGED__INIT;
    event.tenant_id = (char *)change->tenant_id;
    event.revision = change->revision;
    event.settings_version = change->settings_version;
    event.what = (char *)(change->what ? change->what : "");
    ppm_counter_inc (self->changes, 1, streq (event.what, "admin_keys") ? "admin_key" : event.what);
    if (ppm_events_publish (self->pub, "config.changed", change->tenant_id,
                            (const ProtobufCMessage *)&event))
        ppm_log_warn ("config.changed for %s not published", change->tenant_id);
    ppm_log_kv (PPM_LOG_INFO, "config changed", "tenant", change->tenant_id, "what", event.what,
                PPM_LOG_END);
}

#define S_UNPACK(type, name, call)                                                                 \
    Ppm__V1__##type *name =                                                                        \
        (Ppm__V1__##type *)ppm_rpc_call_unpack (call, &ppm__v1__##name##__descriptor);             \
    if (!name) {                                                                                   \
        ppm_rpc_call_error (&call, PPM_INVALID_ARGUMENT, "payload is not a ppm.v1." #type);        \
        return;                                                                                    \
    }

#define S_FREE(name) protobuf_c_message_free_unpacked ((ProtobufCMessage *)(name), NULL)

/* ---- handlers ----------------------------------------------------------- */

static void
s_create_tenant (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (CreateTenantRequest, create_tenant_request, call);
    Ppm__V1__CreateTenantReply *reply = NULL;
    config_change_t change;
    ppm_status_t *status =
        config_store_create_tenant (self->store, create_tenant_request, &reply, &change);
    S_FREE (create_tenant_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply) {
        s_publish (self, &change);
        memset (reply->admin_key, 0, strlen (reply->admin_key));
        S_FREE (reply);
    }
}

static void
s_list_tenants (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (ListTenantsRequest, list_tenants_request, call);
    Ppm__V1__ListTenantsReply *reply = NULL;
    ppm_status_t *status = config_store_list_tenants (self->store, list_tenants_request->limit,
                                                      list_tenants_request->cursor, &reply);
    S_FREE (list_tenants_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply)
        S_FREE (reply);
}

static void
s_set_plan (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (SetPlanRequest, set_plan_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__SetPlanReply *reply = NULL;
    config_change_t change;
    const char *tenant = s_tenant (call, set_plan_request->tenant_id, &status);
    if (tenant)
        status = config_store_set_plan (self->store, tenant, set_plan_request->plan,
                                        set_plan_request->actor, &reply, &change);
    S_FREE (set_plan_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply) {
        s_publish (self, &change);
        S_FREE (reply);
    }
}

static void
s_get_settings (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (GetSettingsRequest, get_settings_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__Settings *settings = NULL;
    const char *tenant = s_tenant (call, get_settings_request->tenant_id, &status);
    if (tenant)
        status = config_store_get_settings (self->store, tenant, &settings);
    S_FREE (get_settings_request);
    if (settings)
        config_settings_mask (settings);
    s_finish (&call, status, (ProtobufCMessage *)settings);
    if (settings)
        S_FREE (settings);
}

static void
s_put_settings (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (PutSettingsRequest, put_settings_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__Settings *settings = NULL;
    config_change_t change;
    const char *tenant = s_tenant (call, put_settings_request->tenant_id, &status);
    if (tenant)
        status = config_store_put_settings (self->store, tenant, put_settings_request, &settings,
                                            &change);
    S_FREE (put_settings_request);
    if (settings)
        config_settings_mask (settings);
    s_finish (&call, status, (ProtobufCMessage *)settings);
    if (settings) {
        s_publish (self, &change);
        S_FREE (settings);
    }
}

static void
s_get_user_rates (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (GetUserRatesRequest, get_user_rates_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__UserRates *rates = NULL;
    const char *tenant = s_tenant (call, get_user_rates_request->tenant_id, &status);
    if (tenant)
        status = config_store_get_user_rates (self->store, tenant, get_user_rates_request->payee,
                                              &rates);
    S_FREE (get_user_rates_request);
    s_finish (&call, status, (ProtobufCMessage *)rates);
    if (rates)
        S_FREE (rates);
}

static void
s_put_user_rates (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (PutUserRatesRequest, put_user_rates_request, call);
    ppm_status_t *status = NULL;
    config_change_t change = {.revision = 0};
    const char *tenant = s_tenant (call, put_user_rates_request->tenant_id, &status);
    if (tenant)
        status = config_store_put_user_rates (self->store, tenant, put_user_rates_request->rates,
                                              put_user_rates_request->actor, &change);
    S_FREE (put_user_rates_request);
    Ppm__V1__PutRatesReply reply = PPM__V1__PUT_RATES_REPLY__INIT;
    reply.revision = change.revision;
    bool ok = status == NULL;
    s_finish (&call, status, (ProtobufCMessage *)&reply);
    if (ok)
        s_publish (self, &change);
}

static void
s_list_user_rates (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (ListUserRatesRequest, list_user_rates_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__ListUserRatesReply *reply = NULL;
    const char *tenant = s_tenant (call, list_user_rates_request->tenant_id, &status);
    if (tenant)
        status = config_store_list_user_rates (self->store, tenant, list_user_rates_request->limit,
                                               list_user_rates_request->cursor, &reply);
    S_FREE (list_user_rates_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply)
        S_FREE (reply);
}

static void
s_get_role_rates (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (GetRoleRatesRequest, get_role_rates_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__RoleRatesList *reply = NULL;
    const char *tenant = s_tenant (call, get_role_rates_request->tenant_id, &status);
    if (tenant)
        status =
            config_store_get_role_rates (self->store, tenant, get_role_rates_request->role, &reply);
    S_FREE (get_role_rates_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply)
        S_FREE (reply);
}

static void
s_put_role_rates (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (PutRoleRatesRequest, put_role_rates_request, call);
    ppm_status_t *status = NULL;
    config_change_t change = {.revision = 0};
    const char *tenant = s_tenant (call, put_role_rates_request->tenant_id, &status);
    if (tenant)
        status = config_store_put_role_rates (self->store, tenant, put_role_rates_request->rates,
                                              put_role_rates_request->actor, &change);
    S_FREE (put_role_rates_request);
    Ppm__V1__PutRatesReply reply = PPM__V1__PUT_RATES_REPLY__INIT;
    reply.revision = change.revision;
    bool ok = status == NULL;
    s_finish (&call, status, (ProtobufCMessage *)&reply);
    if (ok)
        s_publish (self, &change);
}

static void
s_create_admin_key (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (CreateAdminKeyRequest, create_admin_key_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__CreateAdminKeyReply *reply = NULL;
    const char *tenant = s_tenant (call, create_admin_key_request->tenant_id, &status);
    config_change_t change = {.what = "admin_keys"};
    if (tenant)
        snprintf (change.tenant_id, sizeof change.tenant_id, "%s", tenant);
    if (tenant)
        status =
            config_store_create_admin_key (self->store, tenant, create_admin_key_request->label,
                                           create_admin_key_request->actor, &reply);
    S_FREE (create_admin_key_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply) {
        s_publish (self, &change);
        memset (reply->admin_key, 0, strlen (reply->admin_key));
        S_FREE (reply);
    }
}

static void
s_revoke_admin_key (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (RevokeAdminKeyRequest, revoke_admin_key_request, call);
    ppm_status_t *status = NULL;
    const char *tenant = s_tenant (call, revoke_admin_key_request->tenant_id, &status);
    config_change_t change = {.what = "admin_keys"};
    if (tenant)
        snprintf (change.tenant_id, sizeof change.tenant_id, "%s", tenant);
    if (tenant)
        status = config_store_revoke_admin_key (
            self->store, tenant, revoke_admin_key_request->key_id, revoke_admin_key_request->actor);
    S_FREE (revoke_admin_key_request);
    Ppm__V1__ConfigEmpty empty = PPM__V1__CONFIG_EMPTY__INIT;
    bool revoked = !status && change.tenant_id[0];
    s_finish (&call, status, (ProtobufCMessage *)&empty);
    if (revoked)
        s_publish (self, &change);
}

static void
s_verify_admin_key (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (VerifyAdminKeyRequest, verify_admin_key_request, call);
    Ppm__V1__VerifyAdminKeyReply *reply = NULL;
    ppm_status_t *status =
        config_store_verify_admin_key (self->store, verify_admin_key_request->admin_key, &reply);
    S_FREE (verify_admin_key_request);
    if (ppm_status_code (status) == PPM_UNAUTHENTICATED)
        ppm_counter_inc (self->auth_failures, 1);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply)
        S_FREE (reply);
}

static void
s_list_audit (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (ListAuditRequest, list_audit_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__ListAuditReply *reply = NULL;
    const char *tenant = s_tenant (call, list_audit_request->tenant_id, &status);
    if (tenant)
        status = config_store_list_audit (self->store, tenant, list_audit_request->limit,
                                          list_audit_request->cursor, &reply);
    S_FREE (list_audit_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply)
        S_FREE (reply);
}

static void
s_get_secrets (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (GetSecretsRequest, get_secrets_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__Secrets *reply = NULL;
    const char *tenant = s_tenant (call, get_secrets_request->tenant_id, &status);
    if (tenant)
        status = config_store_get_secrets (self->store, tenant, &reply);
    S_FREE (get_secrets_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply)
        S_FREE (reply);
}

static void
s_get_user_token_secret (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (GetUserTokenSecretRequest, get_user_token_secret_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__UserTokenSecret *reply = NULL;
    const char *tenant = s_tenant (call, get_user_token_secret_request->tenant_id, &status);
    if (tenant)
        status = config_store_get_user_token_secret (self->store, tenant, &reply);
    S_FREE (get_user_token_secret_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply) {
        memset (reply->secret, 0, strlen (reply->secret));
        S_FREE (reply);
    }
}

static void
s_get_user_token_secret_info (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (GetUserTokenSecretInfoRequest, get_user_token_secret_info_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__UserTokenSecretInfo *reply = NULL;
    const char *tenant = s_tenant (call, get_user_token_secret_info_request->tenant_id, &status);
    if (tenant)
        status = config_store_get_user_token_secret_info (self->store, tenant, &reply);
    S_FREE (get_user_token_secret_info_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply)
        S_FREE (reply);
}

static void
s_rotate_user_token_secret (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (RotateUserTokenSecretRequest, rotate_user_token_secret_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__RotateUserTokenSecretReply *reply = NULL;
    config_change_t change;
    const char *tenant = s_tenant (call, rotate_user_token_secret_request->tenant_id, &status);
    if (tenant)
        status = config_store_rotate_user_token_secret (
            self->store, tenant, rotate_user_token_secret_request->actor, &reply, &change);
    S_FREE (rotate_user_token_secret_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply) {
        /* After the reply, so that the caller holds the new secret before
           any gateway refuses the old one. */
        s_publish (self, &change);
        memset (reply->secret, 0, strlen (reply->secret));
        S_FREE (reply);
    }
}

static void
s_get_snapshot (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (GetSnapshotRequest, get_snapshot_request, call);
    ppm_status_t *status = NULL;
    Ppm__V1__Snapshot *reply = NULL;
    const char *tenant = s_tenant (call, get_snapshot_request->tenant_id, &status);
    if (tenant)
        status = config_store_get_snapshot (self->store, tenant, get_snapshot_request->rates_cursor,
                                            &reply);
    S_FREE (get_snapshot_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply)
        S_FREE (reply);
}

static void
s_list_revisions (ppm_rpc_call_t *call, void *arg)
{
    self_t *self = arg;
    S_UNPACK (ListRevisionsRequest, list_revisions_request, call);
    Ppm__V1__ListRevisionsReply *reply = NULL;
    ppm_status_t *status = config_store_list_revisions (self->store, list_revisions_request->limit,
                                                        list_revisions_request->cursor, &reply);
    S_FREE (list_revisions_request);
    s_finish (&call, status, (ProtobufCMessage *)reply);
    if (reply)
        S_FREE (reply);
}

static const struct {
    const char *method;
    ppm_rpc_handler_fn *fn;
} s_methods[] = {
    {"config.CreateTenant", s_create_tenant},
    {"config.ListTenants", s_list_tenants},
    {"config.SetPlan", s_set_plan},
    {"config.GetSettings", s_get_settings},
    {"config.PutSettings", s_put_settings},
    {"config.GetUserRates", s_get_user_rates},
    {"config.PutUserRates", s_put_user_rates},
    {"config.ListUserRates", s_list_user_rates},
    {"config.GetRoleRates", s_get_role_rates},
    {"config.PutRoleRates", s_put_role_rates},
    {"config.CreateAdminKey", s_create_admin_key},
    {"config.RevokeAdminKey", s_revoke_admin_key},
    {"config.VerifyAdminKey", s_verify_admin_key},
    {"config.ListAudit", s_list_audit},
    {"config.GetSecrets", s_get_secrets},
    {"config.GetUserTokenSecret", s_get_user_token_secret},
    {"config.GetUserTokenSecretInfo", s_get_user_token_secret_info},
    {"config.RotateUserTokenSecret", s_rotate_user_token_secret},
    {"config.GetSnapshot", s_get_snapshot},
    {"config.ListRevisions", s_list_revisions},
};

/* ---- actor -------------------------------------------------------------- */

static void
s_self_destroy (self_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    self_t *self = *self_p;
    ppm_rpc_server_destroy (&self->rpc);
    ppm_events_pub_destroy (&self->pub);
    config_store_destroy (&self->store);
    ppm_pg_destroy (&self->pg);
    config_crypto_destroy (&self->crypto);
    zloop_destroy (&self->loop);
    free (self);
    *self_p = NULL;
}

static self_t *
s_self_new (zsock_t *pipe, const config_server_args_t *args)
{
    self_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->pipe = pipe;
    self->loop = zloop_new ();
    self->changes = ppm_metrics_counter (ppm_metrics_global (), "ppm_config_changes_total",
                                         "committed changes", "kind");
    self->auth_failures =
        ppm_metrics_counter (ppm_metrics_global (), "ppm_config_admin_auth_failures_total",
                             "admin key verifications that failed", NULL);
    self->crypto = args->master_key ? config_crypto_new (args->master_key) : NULL;
    if (!self->loop || !self->crypto) {
        ppm_log_error ("config: no master key");
        s_self_destroy (&self);
        return NULL;
    }
    ppm_pg_options_t options = {.connect_timeout_ms = 3000,
                                .statement_timeout_ms =
                                    args->statement_timeout_ms ? args->statement_timeout_ms : 2000,
                                .application_name = "ppm-config"};
    const char *error = NULL;
    self->pg = ppm_pg_new (args->pg_url ? args->pg_url : "", &options, &error);
    if (!self->pg) {
        ppm_log_error ("config: PPM_PG_URL: %s", error ? error : "invalid");
        s_self_destroy (&self);
        return NULL;
    }
    self->store = config_store_new (self->pg, self->crypto, ppm_clock_scale () > 1);
    if (!self->store || config_store_migrate (self->store, &error)) {
        ppm_log_error ("config: migrations: %s", error ? error : "failed");
        s_self_destroy (&self);
        return NULL;
    }
    self->rpc = ppm_rpc_server_new (self->loop, args->rpc_bind);
    self->pub = ppm_events_pub_new (args->pub_bind);
    if (!self->rpc || !self->pub) {
        ppm_log_error ("config: cannot bind %s / %s", args->rpc_bind, args->pub_bind);
        s_self_destroy (&self);
        return NULL;
    }
    for (size_t i = 0; i < sizeof s_methods / sizeof s_methods[0]; i++)
        ppm_rpc_server_handle (self->rpc, s_methods[i].method, s_methods[i].fn, self);
    return self;
}

static int
s_pipe_handler (zloop_t *loop, zsock_t *pipe, void *arg)
{
    (void)loop;
    self_t *self = arg;
    char *command = zstr_recv (pipe);
    if (!command)
        return -1;
    int rc = 0;
    if (streq (command, "$TERM"))
        rc = -1;
    else if (streq (command, "ENDPOINTS"))
        zstr_sendx (pipe, ppm_rpc_server_endpoint (self->rpc), ppm_events_pub_endpoint (self->pub),
                    NULL);
    else
        ppm_log_warn ("config: unknown actor command %s", command);
    free (command);
    return rc;
}

void
config_server_actor (zsock_t *pipe, void *args)
{
    self_t *self = s_self_new (pipe, (const config_server_args_t *)args);
    if (!self) {
        /* Stay until told to end, answering every command with one frame
           "FAILED", so that zactor_destroy finds a live pipe. */
        zsock_signal (pipe, 0);
        while (true) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            zstr_free (&command);
            if (term)
                break;
            zstr_send (pipe, "FAILED");
        }
        return;
    }
    zloop_reader (self->loop, pipe, s_pipe_handler, self);
    zsock_signal (pipe, 0);
    ppm_log_info ("config: listening on %s, events on %s", ppm_rpc_server_endpoint (self->rpc),
                  ppm_events_pub_endpoint (self->pub));
    zloop_start (self->loop);
    s_self_destroy (&self);
}

zactor_t *
config_server_start (const config_server_args_t *args)
{
    zactor_t *actor = zactor_new (config_server_actor, (void *)args);
    if (!actor)
        return NULL;
    /* zactor_new consumed the start signal; ask for the endpoints to learn
       whether the loop runs (a failed start has closed the pipe). */
    zstr_send (actor, "ENDPOINTS");
    zsock_set_rcvtimeo (actor, 5000);
    char *rpc = NULL, *pub = NULL;
    zstr_recvx (actor, &rpc, &pub, NULL);
    if (!rpc || !pub || strncmp (rpc, "tcp://", 6) != 0) {
        zstr_free (&rpc);
        zstr_free (&pub);
        zactor_destroy (&actor);
        return NULL;
    }
    zsock_set_rcvtimeo (actor, -1);
    zstr_free (&rpc);
    zstr_free (&pub);
    return actor;
}
