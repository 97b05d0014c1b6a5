/*  ppmctl: the operator's command line. Talks to the config and rate
    services over ZeroMQ (PPM_CONFIG_ENDPOINT, PPM_RATE_ENDPOINT) with
    synchronous ppm_rpc calls; prints replies as "field: value" lines or,
    with --json, as one JSON object (protobuf fields by name, via the
    message descriptors). A refused request prints every field violation
    and exits 1; a usage error exits 2.

    Commands (each has --help):
      tenant create NAME [--plan P]        prints the tenant id and an admin key
      tenant list [--limit N] [--cursor C]
      tenant set-plan --tenant T PLAN
      admin-key create --tenant T [--label L]
      admin-key revoke --tenant T KEY_ID
      settings get --tenant T
      settings set --tenant T FIELD=VALUE… [--clear SECRET_FIELD]…
      rates get --tenant T (--user U | --role R | --list)
      rates set --tenant T (--user U | --role R [--priority P]) [--call N|null] [--chat N|null]
      quote --tenant T --payee P --kind chat|call [--roles a,b] [--payer X]
      user-token --tenant T --user U [--roles a,b] [--ttl S]
      user-token-secret show --tenant T    the secret user tokens are signed with
      user-token-secret rotate --tenant T  a new one; tokens of the old one stop working
      audit --tenant T [--limit N] [--cursor C]
      sessions rebuild [--tenant T]        (PPM_METERING_ENDPOINT)
      sessions list --tenant T [--state S] [--limit N] [--cursor C]
      sessions get --tenant T SESSION_ID
      payments reconcile [--tenant T]      (PPM_PAYMENT_ENDPOINT)
      curve-keygen                         a CURVE key pair (Z85), for PPM_CURVE_* keys
      trace TRACE_ID [--logs DIR]          a request's path across the services' JSON logs

    With PPM_CURVE=on, ppmctl is a CURVE client like any service
    (PPM_CURVE_SECRET_KEY, PPM_CURVE_SERVER_KEY; see ppm_curve.h).
*/
#include <czmq.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ppm_clock.h"
#include "ppm_curve.h"
#include "ppm_jwt.h"
#include "ppm_log.h"
#include "ppm_rpc.h"
#include "proto/config.pb-c.h"
#include "proto/metering.pb-c.h"
#include "proto/payment.pb-c.h"
#include "proto/rate.pb-c.h"
#include "services/config/config_settings.h"

#define S_MAX_OPTS 32

typedef struct {
    const char *name;  /* "--tenant" */
    const char *value; /* NULL for flags */
} s_opt_t;

typedef struct {
    const char *cmd;              /* "tenant" */
    const char *sub;              /* "create" or NULL */
    const char *args[S_MAX_OPTS]; /* positional arguments */
    size_t nargs;
    s_opt_t opts[S_MAX_OPTS]; /* --name value */
    size_t nopts;
    bool json;      /* --json */
    bool help;      /* --help */
    int timeout_ms; /* --timeout */
} s_cli_t;

static const char *s_flags[] = {"--json", "--help", "--list", NULL};

static const char *
s_opt (const s_cli_t *cli, const char *name)
{
    for (size_t i = 0; i < cli->nopts; i++)
        if (streq (cli->opts[i].name, name))
            return cli->opts[i].value;
    return NULL;
}

static bool
s_has (const s_cli_t *cli, const char *name)
{
    for (size_t i = 0; i < cli->nopts; i++)
        if (streq (cli->opts[i].name, name))
            return true;
    return false;
}

/* A command's help: on stdout and 0 when asked for (--help), on stderr
   and 2 when the subcommand is missing. */
static int
s_help (const s_cli_t *cli, const char *text)
{
    fputs (text, cli->help ? stdout : stderr);
    return cli->help ? 0 : 2;
}

static int
s_usage_error (const char *fmt, const char *arg)
{
    fprintf (stderr, "ppmctl: ");
    fprintf (stderr, fmt, arg ? arg : "");
    fprintf (stderr, " (see ppmctl --help)\n");
    return 2;
}

/* ---- output ------------------------------------------------------------- */

static json_t *s_to_json (const ProtobufCMessage *msg);

static json_t *
s_field_json (const ProtobufCFieldDescriptor *f, const void *member)
{
    switch (f->type) {
        case PROTOBUF_C_TYPE_BOOL:
            return json_boolean (*(const protobuf_c_boolean *)member);
        case PROTOBUF_C_TYPE_INT64:
            return json_integer (*(const int64_t *)member);
        case PROTOBUF_C_TYPE_UINT64:
            return json_integer ((json_int_t) * (const uint64_t *)member);
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_ENUM:
            return json_integer (*(const int32_t *)member);
        case PROTOBUF_C_TYPE_UINT32:
            return json_integer (*(const uint32_t *)member);
        case PROTOBUF_C_TYPE_STRING: {
            const char *s = *(char *const *)member;
            return json_string (s ? s : "");
        }
        case PROTOBUF_C_TYPE_MESSAGE: {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)member;
            return sub ? s_to_json (sub) : json_null ();
        }
        default:
            return json_null ();
    }
}

static size_t
s_type_size (const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
        case PROTOBUF_C_TYPE_BOOL:
            return sizeof (protobuf_c_boolean);
        case PROTOBUF_C_TYPE_INT64:
        case PROTOBUF_C_TYPE_UINT64:
            return 8;
        case PROTOBUF_C_TYPE_INT32:
        case PROTOBUF_C_TYPE_UINT32:
        case PROTOBUF_C_TYPE_ENUM:
            return 4;
        default:
            return sizeof (void *);
    }
}

static json_t *
s_to_json (const ProtobufCMessage *msg)
{
    json_t *obj = json_object ();
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *base = (const char *)msg;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *array = *(const char *const *)(base + f->offset);
            json_t *list = json_array ();
            for (size_t k = 0; k < n; k++)
                json_array_append_new (list, s_field_json (f, array + k * s_type_size (f)));
            json_object_set_new (obj, f->name, list);
        } else
            json_object_set_new (obj, f->name, s_field_json (f, base + f->offset));
    }
    return obj;
}

/* Human form: "name: value" lines, nested messages indented. */
static void
s_print_json (json_t *value, const char *prefix)
{
    const char *key;
    json_t *item;
    json_object_foreach (value, key, item)
    {
        char name[240];
        snprintf (name, sizeof name, "%s%s", prefix, key);
        if (json_is_object (item)) {
            char nested[300];
            snprintf (nested, sizeof nested, "%s.", name);
            s_print_json (item, nested);
        } else if (json_is_array (item) && json_array_size (item) &&
                   json_is_object (json_array_get (item, 0))) {
            size_t i;
            json_t *element;
            json_array_foreach (item, i, element)
            {
                char nested[300];
                snprintf (nested, sizeof nested, "%s[%zu].", name, i);
                s_print_json (element, nested);
            }
        } else {
            char *text = json_dumps (item, JSON_ENCODE_ANY | JSON_COMPACT);
            if (json_is_string (item))
                printf ("%s: %s\n", name, json_string_value (item));
            else
                printf ("%s: %s\n", name, text ? text : "");
            free (text);
        }
    }
}

static void
s_output (const s_cli_t *cli, const ProtobufCMessage *msg)
{
    json_t *obj = s_to_json (msg);
    if (cli->json) {
        char *text = json_dumps (obj, JSON_COMPACT | JSON_ENSURE_ASCII);
        printf ("%s\n", text ? text : "{}");
        free (text);
    } else
        s_print_json (obj, "");
    json_decref (obj);
}

static int
s_report (const s_cli_t *cli, ppm_status_t *status)
{
    if (cli->json) {
        json_t *fields = json_array ();
        for (size_t i = 0; i < ppm_status_field_count (status); i++)
            json_array_append_new (fields, json_pack ("{s:s, s:s}", "field",
                                                      ppm_status_field_name (status, i), "message",
                                                      ppm_status_field_description (status, i)));
        json_t *err = json_pack ("{s:{s:s, s:s, s:o}}", "error", "code",
                                 ppm_code_name (ppm_status_code (status)), "message",
                                 ppm_status_message (status), "fields", fields);
        char *text = json_dumps (err, JSON_COMPACT);
        fprintf (stderr, "%s\n", text ? text : "");
        free (text);
        json_decref (err);
    } else {
        fprintf (stderr, "error: %s: %s\n", ppm_code_name (ppm_status_code (status)),
                 ppm_status_message (status));
        for (size_t i = 0; i < ppm_status_field_count (status); i++)
            fprintf (stderr, "  %s: %s\n", ppm_status_field_name (status, i),
                     ppm_status_field_description (status, i));
    }
    ppm_status_destroy (&status);
    return 1;
}

/* ---- calls -------------------------------------------------------------- */

static ppm_rpc_client_t *
s_client (const char *env, const char *def)
{
    const char *endpoint = getenv (env);
    ppm_rpc_client_t *client = ppm_rpc_client_new (endpoint && *endpoint ? endpoint : def);
    if (!client)
        fprintf (stderr, "ppmctl: %s is not a valid endpoint list\n", env);
    return client;
}

/* Calls method with msg, prints the reply. Returns the exit code. When
   reply_p is not NULL the reply is handed to the caller instead. */
static int
s_call (const s_cli_t *cli, bool rate, const char *method, const char *tenant,
        const ProtobufCMessage *msg, const ProtobufCMessageDescriptor *reply_type,
        ProtobufCMessage **reply_p)
{
    ppm_rpc_client_t *client = rate ? s_client ("PPM_RATE_ENDPOINT", "tcp://127.0.0.1:7111")
                                    : s_client ("PPM_CONFIG_ENDPOINT", "tcp://127.0.0.1:7101");
    if (!client)
        return 2;
    ppm_rpc_req_t req = {.method = method, .tenant = tenant, .timeout_ms = cli->timeout_ms};
    ProtobufCMessage *reply = NULL;
    ppm_status_t *status = ppm_rpc_client_call_sync (client, &req, msg, reply_type, &reply);
    ppm_rpc_client_destroy (&client);
    if (status)
        return s_report (cli, status);
    if (reply_p) {
        *reply_p = reply;
        return 0;
    }
    if (reply) {
        s_output (cli, reply);
        protobuf_c_message_free_unpacked (reply, NULL);
    }
    return 0;
}

static const char *
s_need_tenant (const s_cli_t *cli)
{
    const char *tenant = s_opt (cli, "--tenant");
    if (!tenant || !*tenant)
        tenant = getenv ("PPM_TENANT");
    return tenant && *tenant ? tenant : NULL;
}

static const char *
s_actor (void)
{
    const char *user = getenv ("USER");
    static char actor[160];
    snprintf (actor, sizeof actor, "ppmctl:%s", user && *user ? user : "operator");
    return actor;
}

/* Parses "250" or "null" into a nullable amount. */
static int
s_amount (const char *text, bool *set, int64_t *amount)
{
    if (!text)
        return 0;
    if (streq (text, "null") || !*text) {
        *set = false;
        *amount = 0;
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    if (errno || *end || value < 0)
        return -1;
    *set = true;
    *amount = value;
    return 0;
}

/* ---- commands ----------------------------------------------------------- */

static const char *s_help_tenant =
    "ppmctl tenant create NAME [--plan free|basic|pro|enterprise]\n"
    "    creates a tenant; prints its id and its first admin key (shown once)\n"
    "ppmctl tenant list [--limit N] [--cursor C]\n"
    "ppmctl tenant set-plan --tenant T PLAN\n"
    "    a downgrade below pro switches Pay-per-Minute off\n";

static int
s_cmd_tenant (const s_cli_t *cli)
{
    if (cli->help || !cli->sub)
        return s_help (cli, s_help_tenant);
    if (streq (cli->sub, "create")) {
        if (cli->nargs != 1)
            return s_usage_error ("tenant create takes one NAME%s", NULL);
        Ppm__V1__CreateTenantRequest req = PPM__V1__CREATE_TENANT_REQUEST__INIT;
        req.name = (char *)cli->args[0];
        req.plan = (char *)(s_opt (cli, "--plan") ? s_opt (cli, "--plan") : "free");
        req.actor = (char *)s_actor ();
        return s_call (cli, false, "config.CreateTenant", NULL, &req.base,
                       &ppm__v1__create_tenant_reply__descriptor, NULL);
    }
    if (streq (cli->sub, "list")) {
        Ppm__V1__ListTenantsRequest req = PPM__V1__LIST_TENANTS_REQUEST__INIT;
        req.limit =
            s_opt (cli, "--limit") ? (uint32_t)strtoul (s_opt (cli, "--limit"), NULL, 10) : 0;
        req.cursor = (char *)(s_opt (cli, "--cursor") ? s_opt (cli, "--cursor") : "");
        return s_call (cli, false, "config.ListTenants", NULL, &req.base,
                       &ppm__v1__list_tenants_reply__descriptor, NULL);
    }
    if (streq (cli->sub, "set-plan")) {
        const char *tenant = s_need_tenant (cli);
        if (!tenant || cli->nargs != 1)
            return s_usage_error ("tenant set-plan needs --tenant T and one PLAN%s", NULL);
        Ppm__V1__SetPlanRequest req = PPM__V1__SET_PLAN_REQUEST__INIT;
        req.plan = (char *)cli->args[0];
        req.actor = (char *)s_actor ();
        return s_call (cli, false, "config.SetPlan", tenant, &req.base,
                       &ppm__v1__set_plan_reply__descriptor, NULL);
    }
    return s_usage_error ("unknown tenant command %s", cli->sub);
}

static const char *s_help_admin_key = "ppmctl admin-key create --tenant T [--label L]\n"
                                      "    prints a new admin key (shown once)\n"
                                      "ppmctl admin-key revoke --tenant T KEY_ID\n";

static int
s_cmd_admin_key (const s_cli_t *cli)
{
    if (cli->help || !cli->sub)
        return s_help (cli, s_help_admin_key);
    const char *tenant = s_need_tenant (cli);
    if (!tenant)
        return s_usage_error ("admin-key needs --tenant T%s", NULL);
    if (streq (cli->sub, "create")) {
        Ppm__V1__CreateAdminKeyRequest req = PPM__V1__CREATE_ADMIN_KEY_REQUEST__INIT;
        req.label = (char *)(s_opt (cli, "--label") ? s_opt (cli, "--label") : "");
        req.actor = (char *)s_actor ();
        return s_call (cli, false, "config.CreateAdminKey", tenant, &req.base,
                       &ppm__v1__create_admin_key_reply__descriptor, NULL);
    }
    if (streq (cli->sub, "revoke")) {
        if (cli->nargs != 1)
            return s_usage_error ("admin-key revoke takes one KEY_ID%s", NULL);
        Ppm__V1__RevokeAdminKeyRequest req = PPM__V1__REVOKE_ADMIN_KEY_REQUEST__INIT;
        req.key_id = (char *)cli->args[0];
        req.actor = (char *)s_actor ();
        int rc = s_call (cli, false, "config.RevokeAdminKey", tenant, &req.base,
                         &ppm__v1__config_empty__descriptor, NULL);
        if (rc == 0 && !cli->json)
            printf ("revoked: %s\n", cli->args[0]);
        return rc;
    }
    return s_usage_error ("unknown admin-key command %s", cli->sub);
}

static const char *s_help_settings =
    "ppmctl settings get --tenant T\n"
    "    every setting, secrets masked, with its version\n"
    "ppmctl settings set --tenant T FIELD=VALUE... [--clear SECRET_FIELD]\n"
    "    reads the settings, changes the named fields and writes them back with\n"
    "    the version read (a concurrent change is refused: run it again).\n"
    "    Lists are comma-separated (preset_minutes=10,30,60); booleans true|false.\n"
    "    Every invalid field is printed; nothing is applied unless all are valid.\n";

static void
s_print_settings (const s_cli_t *cli, const Ppm__V1__Settings *s)
{
    if (cli->json) {
        s_output (cli, &s->base);
        return;
    }
    const ProtobufCMessageDescriptor *d = &ppm__v1__settings__descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        char text[4096];
        const char *name = d->fields[i].name;
        if (config_settings_is_secret (name)) {
            /* Already masked by config: print as received. */
            const char *value = *(char *const *)((const char *)s + d->fields[i].offset);
            printf ("%s: %s\n", name, value ? value : "");
            continue;
        }
        config_settings_get_text (s, name, text, sizeof text);
        printf ("%s: %s\n", name, text);
    }
}

static int
s_cmd_settings (const s_cli_t *cli)
{
    if (cli->help || !cli->sub)
        return s_help (cli, s_help_settings);
    const char *tenant = s_need_tenant (cli);
    if (!tenant)
        return s_usage_error ("settings needs --tenant T%s", NULL);
    Ppm__V1__GetSettingsRequest get = PPM__V1__GET_SETTINGS_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    int rc = s_call (cli, false, "config.GetSettings", tenant, &get.base,
                     &ppm__v1__settings__descriptor, &reply);
    if (rc)
        return rc;
    Ppm__V1__Settings *s = (Ppm__V1__Settings *)reply;
    if (streq (cli->sub, "get")) {
        s_print_settings (cli, s);
        protobuf_c_message_free_unpacked (reply, NULL);
        return 0;
    }
    if (!streq (cli->sub, "set")) {
        protobuf_c_message_free_unpacked (reply, NULL);
        return s_usage_error ("unknown settings command %s", cli->sub);
    }
    ppm_status_t *bad = NULL;
    for (size_t i = 0; i < cli->nargs; i++) {
        const char *eq = strchr (cli->args[i], '=');
        if (!eq) {
            protobuf_c_message_free_unpacked (reply, NULL);
            return s_usage_error ("expected FIELD=VALUE, got %s", cli->args[i]);
        }
        char field[64];
        snprintf (field, sizeof field, "%.*s", (int)(eq - cli->args[i]), cli->args[i]);
        const char *error = NULL;
        if (config_settings_set_text (s, field, eq + 1, &error)) {
            if (!bad)
                bad = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid settings");
            ppm_status_add_field (bad, field, "%s", error);
        }
    }
    if (bad) {
        protobuf_c_message_free_unpacked (reply, NULL);
        return s_report (cli, bad);
    }
    char *clear[S_MAX_OPTS];
    size_t nclear = 0;
    for (size_t i = 0; i < cli->nopts && nclear < S_MAX_OPTS; i++)
        if (streq (cli->opts[i].name, "--clear"))
            clear[nclear++] = (char *)cli->opts[i].value;
    Ppm__V1__PutSettingsRequest put = PPM__V1__PUT_SETTINGS_REQUEST__INIT;
    put.expected_version = s->version;
    put.settings = s;
    put.clear_secrets = clear;
    put.n_clear_secrets = nclear;
    put.actor = (char *)s_actor ();
    ProtobufCMessage *after = NULL;
    rc = s_call (cli, false, "config.PutSettings", tenant, &put.base,
                 &ppm__v1__settings__descriptor, &after);
    protobuf_c_message_free_unpacked (reply, NULL);
    if (rc)
        return rc;
    s_print_settings (cli, (Ppm__V1__Settings *)after);
    protobuf_c_message_free_unpacked (after, NULL);
    return 0;
}

static const char *s_help_rates =
    "ppmctl rates get --tenant T (--user U | --role R | --list [--limit N] [--cursor C])\n"
    "ppmctl rates set --tenant T --user U [--call N|null] [--chat N|null]\n"
    "ppmctl rates set --tenant T --role R [--priority P] [--call N|null] [--chat N|null]\n"
    "    amounts in minor units of the tenant's currency; null (or omitted) = blank;\n"
    "    both blank removes the row\n";

static int
s_cmd_rates (const s_cli_t *cli)
{
    if (cli->help || !cli->sub)
        return s_help (cli, s_help_rates);
    const char *tenant = s_need_tenant (cli);
    if (!tenant)
        return s_usage_error ("rates needs --tenant T%s", NULL);
    const char *user = s_opt (cli, "--user");
    const char *role = s_opt (cli, "--role");
    if (streq (cli->sub, "get")) {
        if (user) {
            Ppm__V1__GetUserRatesRequest req = PPM__V1__GET_USER_RATES_REQUEST__INIT;
            req.payee = (char *)user;
            return s_call (cli, false, "config.GetUserRates", tenant, &req.base,
                           &ppm__v1__user_rates__descriptor, NULL);
        }
        if (role || (!s_has (cli, "--list"))) {
            Ppm__V1__GetRoleRatesRequest req = PPM__V1__GET_ROLE_RATES_REQUEST__INIT;
            req.role = (char *)(role ? role : "");
            return s_call (cli, false, "config.GetRoleRates", tenant, &req.base,
                           &ppm__v1__role_rates_list__descriptor, NULL);
        }
        Ppm__V1__ListUserRatesRequest req = PPM__V1__LIST_USER_RATES_REQUEST__INIT;
        req.limit =
            s_opt (cli, "--limit") ? (uint32_t)strtoul (s_opt (cli, "--limit"), NULL, 10) : 0;
        req.cursor = (char *)(s_opt (cli, "--cursor") ? s_opt (cli, "--cursor") : "");
        return s_call (cli, false, "config.ListUserRates", tenant, &req.base,
                       &ppm__v1__list_user_rates_reply__descriptor, NULL);
    }
    if (!streq (cli->sub, "set"))
        return s_usage_error ("unknown rates command %s", cli->sub);
    if (!user == !role)
        return s_usage_error ("rates set needs exactly one of --user U or --role R%s", NULL);
    bool call_set = false, chat_set = false;
    int64_t call = 0, chat = 0;
    if (s_amount (s_opt (cli, "--call"), &call_set, &call))
        return s_usage_error ("--call: %s is not an amount or null", s_opt (cli, "--call"));
    if (s_amount (s_opt (cli, "--chat"), &chat_set, &chat))
        return s_usage_error ("--chat: %s is not an amount or null", s_opt (cli, "--chat"));
    Ppm__V1__PutRatesReply *reply = NULL;
    int rc;
    if (user) {
        Ppm__V1__UserRates rates = PPM__V1__USER_RATES__INIT;
        rates.payee = (char *)user;
        rates.call_set = call_set;
        rates.call_per_minute = call;
        rates.chat_set = chat_set;
        rates.chat_per_minute = chat;
        Ppm__V1__PutUserRatesRequest req = PPM__V1__PUT_USER_RATES_REQUEST__INIT;
        req.rates = &rates;
        req.actor = (char *)s_actor ();
        rc = s_call (cli, false, "config.PutUserRates", tenant, &req.base,
                     &ppm__v1__put_rates_reply__descriptor, (ProtobufCMessage **)&reply);
    } else {
        Ppm__V1__RoleRates rates = PPM__V1__ROLE_RATES__INIT;
        rates.role = (char *)role;
        rates.call_set = call_set;
        rates.call_per_minute = call;
        rates.chat_set = chat_set;
        rates.chat_per_minute = chat;
        rates.priority =
            s_opt (cli, "--priority") ? (int32_t)strtol (s_opt (cli, "--priority"), NULL, 10) : 0;
        Ppm__V1__PutRoleRatesRequest req = PPM__V1__PUT_ROLE_RATES_REQUEST__INIT;
        req.rates = &rates;
        req.actor = (char *)s_actor ();
        rc = s_call (cli, false, "config.PutRoleRates", tenant, &req.base,
                     &ppm__v1__put_rates_reply__descriptor, (ProtobufCMessage **)&reply);
    }
    if (rc)
        return rc;
    s_output (cli, &reply->base);
    protobuf_c_message_free_unpacked (&reply->base, NULL);
    return 0;
}

static const char *s_help_quote =
    "ppmctl quote --tenant T --payee P --kind chat|call [--roles a,b] [--payer X]\n"
    "    asks the rate service what a payer would pay this payee\n";

/* Splits "a,b" into pointers into buf. */
static size_t
s_split (const char *text, char *buf, size_t size, char **out, size_t max)
{
    size_t n = 0;
    if (!text || !*text)
        return 0;
    snprintf (buf, size, "%s", text);
    char *save = NULL;
    for (char *piece = strtok_r (buf, ",", &save); piece && n < max;
         piece = strtok_r (NULL, ",", &save))
        out[n++] = piece;
    return n;
}

static int
s_cmd_quote (const s_cli_t *cli)
{
    if (cli->help) {
        fputs (s_help_quote, stdout);
        return 0;
    }
    const char *tenant = s_need_tenant (cli);
    if (!tenant || !s_opt (cli, "--payee") || !s_opt (cli, "--kind"))
        return s_usage_error ("quote needs --tenant, --payee and --kind%s", NULL);
    char buf[1024];
    char *roles[PPM_JWT_MAX_ROLES];
    Ppm__V1__QuoteRequest req = PPM__V1__QUOTE_REQUEST__INIT;
    req.payee = (char *)s_opt (cli, "--payee");
    req.kind = (char *)s_opt (cli, "--kind");
    req.payer = (char *)(s_opt (cli, "--payer") ? s_opt (cli, "--payer") : "");
    req.n_payee_roles = s_split (s_opt (cli, "--roles"), buf, sizeof buf, roles, PPM_JWT_MAX_ROLES);
    req.payee_roles = roles;
    return s_call (cli, true, "rate.Quote", tenant, &req.base, &ppm__v1__quote__descriptor, NULL);
}

static const char *s_help_user_token =
    "ppmctl user-token --tenant T --user U [--roles a,b] [--ttl SECONDS]\n"
    "    mints the HS256 user token a platform's backend would issue (claims tid,\n"
    "    sub, roles, exp), signed with the tenant's user-token secret from config\n";

static int
s_cmd_user_token (const s_cli_t *cli)
{
    if (cli->help) {
        fputs (s_help_user_token, stdout);
        return 0;
    }
    const char *tenant = s_need_tenant (cli);
    const char *user = s_opt (cli, "--user");
    if (!tenant || !user)
        return s_usage_error ("user-token needs --tenant T and --user U%s", NULL);
    long long ttl = s_opt (cli, "--ttl") ? strtoll (s_opt (cli, "--ttl"), NULL, 10) : 3600;
    if (ttl < 1 || ttl > 366LL * 86400)
        return s_usage_error ("--ttl must be 1 to 31622400 seconds%s", NULL);
    ppm_jwt_claims_t claims;
    memset (&claims, 0, sizeof claims);
    if (strlen (tenant) > PPM_JWT_MAX_ID || strlen (user) > PPM_JWT_MAX_ID)
        return s_usage_error ("tenant and user are at most 128 bytes%s", NULL);
    snprintf (claims.tid, sizeof claims.tid, "%s", tenant);
    snprintf (claims.sub, sizeof claims.sub, "%s", user);
    char buf[1024];
    char *roles[PPM_JWT_MAX_ROLES];
    claims.role_count = s_split (s_opt (cli, "--roles"), buf, sizeof buf, roles, PPM_JWT_MAX_ROLES);
    for (size_t i = 0; i < claims.role_count; i++)
        snprintf (claims.roles[i], sizeof claims.roles[i], "%s", roles[i]);
    int64_t now_s = ppm_clock_real_ms () / 1000;
    claims.iat = now_s;
    claims.exp = now_s + ttl;

    Ppm__V1__GetUserTokenSecretRequest req = PPM__V1__GET_USER_TOKEN_SECRET_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    int rc = s_call (cli, false, "config.GetUserTokenSecret", tenant, &req.base,
                     &ppm__v1__user_token_secret__descriptor, &reply);
    if (rc)
        return rc;
    Ppm__V1__UserTokenSecret *secret = (Ppm__V1__UserTokenSecret *)reply;
    char *token = ppm_jwt_sign (&claims, (const uint8_t *)secret->secret, strlen (secret->secret));
    memset (secret->secret, 0, strlen (secret->secret));
    protobuf_c_message_free_unpacked (reply, NULL);
    if (!token) {
        fprintf (stderr, "ppmctl: could not mint the token (check user and roles)\n");
        return 1;
    }
    if (cli->json)
        printf ("{\"token\":\"%s\",\"exp\":%lld}\n", token, (long long)claims.exp);
    else
        printf ("%s\n", token);
    free (token);
    return 0;
}

static const char *s_help_user_token_secret =
    "ppmctl user-token-secret show --tenant T\n"
    "    prints the tenant's user-token secret: the HS256 key (the bytes of these\n"
    "    64 hex characters) the platform's backend signs user tokens with\n"
    "    (claims tid, sub, roles, exp), and when it was made\n"
    "ppmctl user-token-secret rotate --tenant T\n"
    "    replaces it with a new random one and prints it; every token signed with\n"
    "    the old one is refused from then on (audited; admins see it masked)\n";

static int
s_cmd_user_token_secret (const s_cli_t *cli)
{
    if (cli->help || !cli->sub)
        return s_help (cli, s_help_user_token_secret);
    const char *tenant = s_need_tenant (cli);
    if (!tenant)
        return s_usage_error ("user-token-secret needs --tenant T%s", NULL);
    if (cli->nargs != 0)
        return s_usage_error ("user-token-secret takes no argument (got %s)", cli->args[0]);
    if (streq (cli->sub, "show")) {
        Ppm__V1__GetUserTokenSecretRequest req = PPM__V1__GET_USER_TOKEN_SECRET_REQUEST__INIT;
        ProtobufCMessage *reply = NULL;
        int rc = s_call (cli, false, "config.GetUserTokenSecret", tenant, &req.base,
                         &ppm__v1__user_token_secret__descriptor, &reply);
        if (rc)
            return rc;
        Ppm__V1__UserTokenSecret *secret = (Ppm__V1__UserTokenSecret *)reply;
        /* Printed as a rotation's reply is (secret, masked, rotated_at_ms),
           so both commands print the same fields; the origins are not the
           operator's question here. */
        Ppm__V1__RotateUserTokenSecretReply shown = PPM__V1__ROTATE_USER_TOKEN_SECRET_REPLY__INIT;
        char mask[32];
        shown.secret = secret->secret;
        shown.masked = ppm_mask_secret (secret->secret, mask, sizeof mask);
        shown.rotated_at_ms = secret->rotated_at_ms;
        s_output (cli, &shown.base);
        memset (secret->secret, 0, strlen (secret->secret));
        protobuf_c_message_free_unpacked (reply, NULL);
        return 0;
    }
    if (streq (cli->sub, "rotate")) {
        Ppm__V1__RotateUserTokenSecretRequest req = PPM__V1__ROTATE_USER_TOKEN_SECRET_REQUEST__INIT;
        req.actor = (char *)s_actor ();
        ProtobufCMessage *reply = NULL;
        int rc = s_call (cli, false, "config.RotateUserTokenSecret", tenant, &req.base,
                         &ppm__v1__rotate_user_token_secret_reply__descriptor, &reply);
        if (rc)
            return rc;
        Ppm__V1__RotateUserTokenSecretReply *rotated = (Ppm__V1__RotateUserTokenSecretReply *)reply;
        s_output (cli, reply);
        memset (rotated->secret, 0, strlen (rotated->secret));
        protobuf_c_message_free_unpacked (reply, NULL);
        return 0;
    }
    return s_usage_error ("unknown user-token-secret command %s", cli->sub);
}

static const char *s_help_audit = "ppmctl audit --tenant T [--limit N] [--cursor C]\n"
                                  "    the tenant's audit log, newest first (secrets masked)\n";

static int
s_cmd_audit (const s_cli_t *cli)
{
    if (cli->help) {
        fputs (s_help_audit, stdout);
        return 0;
    }
    const char *tenant = s_need_tenant (cli);
    if (!tenant)
        return s_usage_error ("audit needs --tenant T%s", NULL);
    Ppm__V1__ListAuditRequest req = PPM__V1__LIST_AUDIT_REQUEST__INIT;
    req.limit = s_opt (cli, "--limit") ? (uint32_t)strtoul (s_opt (cli, "--limit"), NULL, 10) : 0;
    req.cursor = (char *)(s_opt (cli, "--cursor") ? s_opt (cli, "--cursor") : "");
    return s_call (cli, false, "config.ListAudit", tenant, &req.base,
                   &ppm__v1__list_audit_reply__descriptor, NULL);
}

static const char *s_help_sessions =
    "ppmctl sessions rebuild [--tenant T]\n"
    "    writes back into Redis, from PostgreSQL, every unfinished session Redis lost\n"
    "    (all tenants without --tenant); sessions still in Redis are left alone\n"
    "ppmctl sessions list --tenant T [--state awaiting_payment|active|paused|expired|ended]\n"
    "                     [--limit N] [--cursor C]\n"
    "ppmctl sessions get --tenant T SESSION_ID\n"
    "environment: PPM_METERING_ENDPOINT (default tcp://127.0.0.1:7131)\n";

static int
s_cmd_sessions (const s_cli_t *cli)
{
    if (cli->help || !cli->sub)
        return s_help (cli, s_help_sessions);
    ppm_rpc_client_t *client = s_client ("PPM_METERING_ENDPOINT", "tcp://127.0.0.1:7131");
    if (!client)
        return 2;
    const char *tenant = s_need_tenant (cli);
    const char *method = NULL;
    const ProtobufCMessageDescriptor *reply_type = NULL;
    ProtobufCMessage *msg = NULL;
    Ppm__V1__RebuildRequest rebuild = PPM__V1__REBUILD_REQUEST__INIT;
    Ppm__V1__ListRequest list = PPM__V1__LIST_REQUEST__INIT;
    Ppm__V1__SessionRequest get = PPM__V1__SESSION_REQUEST__INIT;
    int rc = 0;
    if (streq (cli->sub, "rebuild")) {
        rebuild.tenant_id = (char *)(tenant ? tenant : "");
        method = "metering.Rebuild";
        reply_type = &ppm__v1__rebuild_reply__descriptor;
        msg = &rebuild.base;
    } else if (streq (cli->sub, "list") && tenant) {
        static const char *states[] = {"",       "awaiting_payment", "active",
                                       "paused", "expired",          "ended"};
        const char *state = s_opt (cli, "--state");
        for (int i = 1; state && i < 6; i++)
            if (streq (state, states[i]))
                list.state = (Ppm__V1__SessionState)i;
        if (state && list.state == 0)
            rc = s_usage_error ("unknown --state %s", state);
        list.limit =
            s_opt (cli, "--limit") ? (int32_t)strtol (s_opt (cli, "--limit"), NULL, 10) : 50;
        list.cursor = (char *)(s_opt (cli, "--cursor") ? s_opt (cli, "--cursor") : "");
        method = "metering.List";
        reply_type = &ppm__v1__list_reply__descriptor;
        msg = &list.base;
    } else if (streq (cli->sub, "get") && tenant && cli->nargs == 1) {
        get.session_id = (char *)cli->args[0];
        method = "metering.Get";
        reply_type = &ppm__v1__session_reply__descriptor;
        msg = &get.base;
    } else
        rc = s_usage_error ("%s", "sessions rebuild|list|get: see ppmctl sessions --help");
    if (rc == 0) {
        ppm_rpc_req_t req = {.method = method,
                             .tenant = tenant,
                             .timeout_ms = streq (cli->sub, "rebuild") ? 600000 : cli->timeout_ms};
        ProtobufCMessage *reply = NULL;
        ppm_status_t *status = ppm_rpc_client_call_sync (client, &req, msg, reply_type, &reply);
        if (status)
            rc = s_report (cli, status);
        else if (reply) {
            s_output (cli, reply);
            protobuf_c_message_free_unpacked (reply, NULL);
        }
    }
    ppm_rpc_client_destroy (&client);
    return rc;
}

static const char *s_help_payments =
    "ppmctl payments reconcile [--tenant T]\n"
    "    runs payment's reconciliation now (all tenants without --tenant): every\n"
    "    payment not in a final state is fetched from Stripe and applied, and the\n"
    "    unpaid ones are abandoned (canceled at Stripe); prints checked/resolved.\n"
    "    At most 500 payments per run: run it again while checked is 500\n"
    "environment: PPM_PAYMENT_ENDPOINT (default tcp://127.0.0.1:7121)\n";

static int
s_cmd_payments (const s_cli_t *cli)
{
    if (cli->help || !cli->sub)
        return s_help (cli, s_help_payments);
    if (!streq (cli->sub, "reconcile"))
        return s_usage_error ("%s", "payments reconcile: see ppmctl payments --help");
    ppm_rpc_client_t *client = s_client ("PPM_PAYMENT_ENDPOINT", "tcp://127.0.0.1:7121");
    if (!client)
        return 2;
    const char *tenant = s_need_tenant (cli);
    Ppm__V1__ReconcileRequest msg = PPM__V1__RECONCILE_REQUEST__INIT;
    msg.tenant_id = (char *)(tenant ? tenant : "");
    /* Reconciliation waits on Stripe for every open payment: allow minutes. */
    ppm_rpc_req_t req = {.method = "payment.Reconcile",
                         .tenant = tenant,
                         .timeout_ms = cli->timeout_ms > 5000 ? cli->timeout_ms : 300000};
    ProtobufCMessage *reply = NULL;
    ppm_status_t *status = ppm_rpc_client_call_sync (client, &req, &msg.base,
                                                     &ppm__v1__reconcile_reply__descriptor, &reply);
    ppm_rpc_client_destroy (&client);
    if (status)
        return s_report (cli, status);
    if (reply) {
        s_output (cli, reply);
        protobuf_c_message_free_unpacked (reply, NULL);
    }
    return 0;
}

static const char *s_help_curve_keygen =
    "ppmctl curve-keygen\n"
    "    prints a fresh CURVE key pair in Z85, as two lines:\n"
    "      public: <40 characters>\n      secret: <40 characters>\n"
    "    (with --json one object). The server pair's secret goes in\n"
    "    PPM_CURVE_SERVER_SECRET_KEY (and its public half in PPM_CURVE_SERVER_KEY\n"
    "    of clients); each process's own secret in PPM_CURVE_SECRET_KEY and its\n"
    "    public half in the servers' PPM_CURVE_CLIENT_KEYS.\n";

static int
s_cmd_curve_keygen (const s_cli_t *cli)
{
    if (cli->help) {
        fputs (s_help_curve_keygen, stdout);
        return 0;
    }
    char pub[41], sec[41];
    if (ppm_curve_keypair (pub, sec)) {
        fprintf (stderr, "ppmctl: could not make a key pair (libzmq without CURVE?)\n");
        return 1;
    }
    if (cli->json)
        printf ("{\"public\":\"%s\",\"secret\":\"%s\"}\n", pub, sec);
    else
        printf ("public: %s\nsecret: %s\n", pub, sec);
    memset (sec, 0, sizeof sec);
    return 0;
}

static const char *s_help_trace =
    "ppmctl trace TRACE_ID [--logs DIR]\n"
    "    the path of one request across the services: every line with this\n"
    "    trace_id in the JSON log files (*.log) of DIR (default run/logs, where\n"
    "    make run writes them), in time order, as\n"
    "      <ts> <service> <level> <msg> [key=value …]\n"
    "    The trace id is the X-Trace-Id (or X-Request-Id) header of the\n"
    "    gateway's answer. Exits 1 when no line matches.\n";

typedef struct {
    char *ts;   /* ISO 8601 UTC with milliseconds: sorts as text */
    char *line; /* printed form */
    size_t seq; /* reading order, to keep equal times stable */
} s_trace_line_t;

static int
s_trace_cmp (const void *a, const void *b)
{
    const s_trace_line_t *x = a, *y = b;
    int c = strcmp (x->ts, y->ts);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Reads one log file, appending the lines of trace_id to *lines. */
static void
s_trace_file (const char *path, const char *trace_id, s_trace_line_t **lines, size_t *count,
              size_t *size)
{
    FILE *file = fopen (path, "r");
    if (!file)
        return;
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline (&buf, &cap, file)) > 0) {
        if (!strstr (buf, trace_id))
            continue; /* cheap filter before parsing */
        json_t *obj = json_loadb (buf, (size_t)len, 0, NULL);
        const char *id = json_string_value (json_object_get (obj, "trace_id"));
        if (!obj || !id || strcmp (id, trace_id) != 0) {
            json_decref (obj);
            continue;
        }
        const char *ts = json_string_value (json_object_get (obj, "ts"));
        const char *service = json_string_value (json_object_get (obj, "service"));
        const char *level = json_string_value (json_object_get (obj, "level"));
        const char *msg = json_string_value (json_object_get (obj, "msg"));
        char *out = NULL;
        size_t out_size = 0;
        FILE *mem = open_memstream (&out, &out_size);
        fprintf (mem, "%s %-9s %-5s %s", ts ? ts : "?", service ? service : "?",
                 level ? level : "?", msg ? msg : "");
        const char *key;
        json_t *value;
        json_object_foreach (obj, key, value)
        {
            if (streq (key, "ts") || streq (key, "service") || streq (key, "level") ||
                streq (key, "msg") || streq (key, "trace_id"))
                continue;
            if (json_is_string (value))
                fprintf (mem, " %s=%s", key, json_string_value (value));
            else {
                char *text = json_dumps (value, JSON_COMPACT | JSON_ENCODE_ANY);
                fprintf (mem, " %s=%s", key, text ? text : "?");
                free (text);
            }
        }
        fclose (mem);
        if (*count == *size) {
            *size = *size ? *size * 2 : 64;
            *lines = realloc (*lines, *size * sizeof **lines);
            assert (*lines);
        }
        (*lines)[*count] = (s_trace_line_t){strdup (ts ? ts : ""), out, *count};
        (*count)++;
        json_decref (obj);
    }
    free (buf);
    fclose (file);
}

static int
s_cmd_trace (const s_cli_t *cli)
{
    if (cli->help) {
        fputs (s_help_trace, stdout);
        return 0;
    }
    if (cli->nargs != 1 || !*cli->args[0] || strlen (cli->args[0]) > 64)
        return s_usage_error ("trace takes one TRACE_ID%s", NULL);
    const char *trace_id = cli->args[0];
    const char *dir = s_opt (cli, "--logs") ? s_opt (cli, "--logs") : "run/logs";
    DIR *d = opendir (dir);
    if (!d) {
        fprintf (stderr, "ppmctl: --logs %s: cannot open the directory\n", dir);
        return 2;
    }
    s_trace_line_t *lines = NULL;
    size_t count = 0, size = 0;
    struct dirent *entry;
    while ((entry = readdir (d))) {
        size_t n = strlen (entry->d_name);
        if (n < 5 || strcmp (entry->d_name + n - 4, ".log") != 0)
            continue;
        char path[4096];
        snprintf (path, sizeof path, "%s/%s", dir, entry->d_name);
        s_trace_file (path, trace_id, &lines, &count, &size);
    }
    closedir (d);
    if (count > 1)
        qsort (lines, count, sizeof *lines, s_trace_cmp);
    for (size_t i = 0; i < count; i++) {
        puts (lines[i].line);
        free (lines[i].ts);
        free (lines[i].line);
    }
    free (lines);
    if (count == 0) {
        fprintf (stderr, "ppmctl: no log line with trace_id %s in %s\n", trace_id, dir);
        return 1;
    }
    return 0;
}

static const char *s_help_main =
    "ppmctl: the ppm operator's command line\n\n"
    "usage: ppmctl [--json] [--timeout MS] COMMAND [SUBCOMMAND] [ARGS] [--help]\n\n"
    "commands:\n"
    "  tenant create|list|set-plan      tenants and plans\n"
    "  admin-key create|revoke          tenant admin API keys\n"
    "  settings get|set                 a tenant's Pay-per-Minute settings\n"
    "  rates get|set                    individual (--user) and role (--role) rates\n"
    "  quote                            what a payer would pay a payee\n"
    "  user-token                       mint a user token (HS256 JWT)\n"
    "  user-token-secret show|rotate    the secret user tokens are signed with\n"
    "  audit                            a tenant's audit log\n"
    "  sessions rebuild|list|get        metering sessions (rebuild Redis from PostgreSQL)\n"
    "  payments reconcile               reconcile open payments with Stripe now\n"
    "  curve-keygen                     a CURVE key pair (Z85)\n"
    "  trace TRACE_ID [--logs DIR]      a request's path across the services' logs\n\n"
    "environment: PPM_CONFIG_ENDPOINT (default tcp://127.0.0.1:7101),\n"
    "             PPM_RATE_ENDPOINT (default tcp://127.0.0.1:7111), PPM_TENANT\n"
    "exit status: 0 done, 1 refused by the service (errors printed per field), 2 usage\n";

int
main (int argc, char **argv)
{
    s_cli_t cli = {.timeout_ms = 5000};
    ppm_log_init ("ppmctl");
    ppm_log_set_level (PPM_LOG_WARN);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp (arg, "--", 2) == 0) {
            bool flag = false;
            for (size_t f = 0; s_flags[f]; f++)
                if (streq (arg, s_flags[f]))
                    flag = true;
            if (streq (arg, "--json"))
                cli.json = true;
            else if (streq (arg, "--help"))
                cli.help = true;
            else if (streq (arg, "--timeout") && i + 1 < argc)
                cli.timeout_ms = (int)strtol (argv[++i], NULL, 10);
            else if (cli.nopts < S_MAX_OPTS) {
                if (!flag && i + 1 >= argc)
                    return s_usage_error ("option %s needs a value", arg);
                cli.opts[cli.nopts].name = arg;
                cli.opts[cli.nopts].value = flag ? NULL : argv[++i];
                cli.nopts++;
            }
        } else if (!cli.cmd)
            cli.cmd = arg;
        else if (!cli.sub && (streq (cli.cmd, "tenant") || streq (cli.cmd, "admin-key") ||
                              streq (cli.cmd, "settings") || streq (cli.cmd, "rates") ||
                              streq (cli.cmd, "sessions") || streq (cli.cmd, "user-token-secret") ||
                              streq (cli.cmd, "payments")))
            cli.sub = arg;
        else if (cli.nargs < S_MAX_OPTS)
            cli.args[cli.nargs++] = arg;
    }
    if (cli.timeout_ms <= 0)
        cli.timeout_ms = 5000;
    if (!cli.cmd) {
        fputs (s_help_main, cli.help ? stdout : stderr);
        return cli.help ? 0 : 2;
    }
    /* Local commands need no service (nor CURVE configuration). */
    if (streq (cli.cmd, "curve-keygen"))
        return s_cmd_curve_keygen (&cli);
    if (streq (cli.cmd, "trace"))
        return s_cmd_trace (&cli);
    /* ppmctl is only a client: with the server secret at hand (make run
       exports one environment) it uses the public half and serves nothing. */
    const char *server_secret = getenv ("PPM_CURVE_SERVER_SECRET_KEY");
    if (server_secret && *server_secret) {
        char server_public[41];
        if (ppm_curve_public_of (server_secret, server_public) == 0)
            setenv ("PPM_CURVE_SERVER_KEY", server_public, 1);
        unsetenv ("PPM_CURVE_SERVER_SECRET_KEY");
    }
    const char *curve_error = NULL;
    if (ppm_curve_init (&curve_error)) {
        fprintf (stderr, "ppmctl: %s\n", curve_error);
        return 2;
    }
    if (streq (cli.cmd, "tenant"))
        return s_cmd_tenant (&cli);
    if (streq (cli.cmd, "admin-key"))
        return s_cmd_admin_key (&cli);
    if (streq (cli.cmd, "settings"))
        return s_cmd_settings (&cli);
    if (streq (cli.cmd, "rates"))
        return s_cmd_rates (&cli);
    if (streq (cli.cmd, "quote"))
        return s_cmd_quote (&cli);
    if (streq (cli.cmd, "user-token"))
        return s_cmd_user_token (&cli);
    if (streq (cli.cmd, "user-token-secret"))
        return s_cmd_user_token_secret (&cli);
    if (streq (cli.cmd, "audit"))
        return s_cmd_audit (&cli);
    if (streq (cli.cmd, "sessions"))
        return s_cmd_sessions (&cli);
    if (streq (cli.cmd, "payments"))
        return s_cmd_payments (&cli);
    if (streq (cli.cmd, "help")) {
        fputs (s_help_main, stdout);
        return 0;
    }
    return s_usage_error ("unknown command %s", cli.cmd);
}
