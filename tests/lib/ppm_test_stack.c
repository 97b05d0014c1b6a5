/*  ppm_test_stack: see ppm_test_stack.h. The services are started the way
    deploy/run.sh starts them (same variables), config first (the others
    read their tenants from it), then rate, payment and metering together;
    readiness is a sys.Ping answered, not an open port, so a service is
    known to serve (migrations done) when start returns.
*/
#include "ppm_test_stack.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ppm_clock.h"
#include "ppm_rpc.h"
#include "proto/config.pb-c.h"
#include "tests/lib/ppm_test.h"

/* A development master key (64 hex): test data only. */
#define S_MASTER_KEY    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define S_START_MS      30000 /* a service must answer sys.Ping within this */
#define S_CALL_MS       5000  /* deadline of ppm_test_stack_call */
#define S_PPMCTL_MS     20000 /* ppmctl must exit within this */
#define S_ENV_MAX       48    /* environment entries given to one child */
#define S_ENDPOINT_SIZE 64

static const char *s_bins[PPM_TEST_SERVICES] = {"ppm-config", "ppm-rate", "ppm-payment",
                                                "ppm-metering"};

struct _ppm_test_stack_t {
    ppm_test_emulator_t *emulator;                      /* PPM_STRIPE_API_BASE */
    pid_t pids[PPM_TEST_SERVICES];                      /* 0 = not running */
    char endpoints[PPM_TEST_SERVICES][S_ENDPOINT_SIZE]; /* RPC binds */
    char pubs[PPM_TEST_SERVICES][S_ENDPOINT_SIZE];      /* PUB binds ("" for rate) */
    char events[4 * S_ENDPOINT_SIZE];                   /* config,payment,metering PUBs */
    ppm_rpc_client_t *clients[PPM_TEST_SERVICES];       /* for calls and pings */
    char *env[S_ENV_MAX];                               /* shared "NAME=value" (owned) */
    size_t env_count;                                   /* entries in env */
};

static char *
s_env (const char *name, const char *value)
{
    size_t size = strlen (name) + strlen (value) + 2;
    char *entry = malloc (size);
    assert_non_null (entry);
    snprintf (entry, size, "%s=%s", name, value);
    return entry;
}

static bool
s_have (const char *dir, const char *bin)
{
    char path[1024];
    snprintf (path, sizeof path, "%s/%s", dir, bin);
    return access (path, X_OK) == 0;
}

/* Waits until service answers sys.Ping; false (with a message) when it
   exits or stays silent. */
static bool
s_wait_ready (ppm_test_stack_t *self, int service)
{
    int64_t deadline = ppm_test_now_ms () + S_START_MS;
    while (ppm_test_now_ms () < deadline) {
        int status = 0;
        if (waitpid (self->pids[service], &status, WNOHANG) == self->pids[service]) {
            self->pids[service] = 0;
            print_message ("ppm_test_stack: %s exited at start (status %d): see its log\n",
                           s_bins[service], status);
            return false;
        }
        ppm_rpc_req_t req = {.method = "sys.Ping", .timeout_ms = 250, .idempotent = true};
        ppm_status_t *st =
            ppm_rpc_client_call_sync (self->clients[service], &req, NULL, NULL, NULL);
        if (!st)
            return true;
        ppm_status_destroy (&st);
    }
    print_message ("ppm_test_stack: %s did not answer sys.Ping within %d ms\n", s_bins[service],
                   S_START_MS);
    return false;
}

static void
s_spawn (ppm_test_stack_t *self, int service, char *const env_extra[])
{
    char metrics[S_ENDPOINT_SIZE];
    snprintf (metrics, sizeof metrics, "127.0.0.1:%d", ppm_test_free_port ());
    char *own[] = {s_env ("PPM_RPC_BIND", self->endpoints[service]),
                   s_env ("PPM_METRICS_BIND", metrics),
                   *self->pubs[service] ? s_env ("PPM_PUB_BIND", self->pubs[service]) : NULL};
    char *env[S_ENV_MAX + 8];
    size_t k = 0;
    /* getenv takes the first of equal names: the caller's entries win */
    for (size_t i = 0; env_extra && env_extra[i] && k < S_ENV_MAX; i++)
        env[k++] = env_extra[i];
    for (size_t i = 0; i < 3; i++)
        if (own[i])
            env[k++] = own[i];
    for (size_t i = 0; i < self->env_count; i++)
        env[k++] = self->env[i];
    env[k] = NULL;
    self->pids[service] = ppm_test_spawn (s_bins[service], NULL, env);
    for (size_t i = 0; i < 3; i++)
        free (own[i]);
}

ppm_test_stack_t *
ppm_test_stack_start (const char *dbname, int redis_db, int64_t time_scale, char *const env_extra[])
{
    const char *dir = getenv ("PPM_BIN_DIR");
    if (!dir || !*dir) {
        print_message ("ppm_test_stack: PPM_BIN_DIR is not set: run under "
                       "tests/harness/run-tests.sh (make test); skipping\n");
        skip ();
    }
    const char *needed[] = {"ppm-config",      "ppm-rate", "ppm-payment", "ppm-metering",
                            "stripe-emulator", "ppmctl",   NULL};
    for (int i = 0; needed[i]; i++)
        if (!s_have (dir, needed[i])) {
            print_message ("ppm_test_stack: %s/%s is not built (make build)\n", dir, needed[i]);
            return NULL;
        }
    /* the databases first: these fail the test themselves, before
       anything runs */
    char *pg = ppm_test_pg_url (dbname);
    char *redis = ppm_test_redis_url (redis_db);

    if (time_scale > 1) {
        char text[32];
        snprintf (text, sizeof text, "%lld", (long long)time_scale);
        setenv ("PPM_TIME_SCALE", text, 1);
        snprintf (text, sizeof text, "%lld", (long long)ppm_clock_real_ms ());
        setenv ("PPM_TIME_EPOCH_MS", text, 1);
        const char *error = NULL;
        if (ppm_clock_init (&error) != 0) {
            print_message ("ppm_test_stack: %s\n", error);
            free (pg);
            free (redis);
            return NULL;
        }
    }

    ppm_test_stack_t *self = calloc (1, sizeof *self);
    assert_non_null (self);
    self->emulator = ppm_test_emulator_start (NULL);
    if (!self->emulator) {
        print_message ("ppm_test_stack: the Stripe emulator did not start\n");
        free (pg);
        free (redis);
        free (self);
        return NULL;
    }
    for (int i = 0; i < PPM_TEST_SERVICES; i++) {
        snprintf (self->endpoints[i], S_ENDPOINT_SIZE, "tcp://127.0.0.1:%d", ppm_test_free_port ());
        if (i != PPM_TEST_RATE)
            snprintf (self->pubs[i], S_ENDPOINT_SIZE, "tcp://127.0.0.1:%d", ppm_test_free_port ());
    }
    snprintf (self->events, sizeof self->events, "%s,%s,%s", self->pubs[PPM_TEST_CONFIG],
              self->pubs[PPM_TEST_PAYMENT], self->pubs[PPM_TEST_METERING]);
    char *shared[] = {s_env ("PPM_PG_URL", pg),
                      s_env ("PPM_REDIS_URL", redis),
                      s_env ("PPM_MASTER_KEY", S_MASTER_KEY),
                      s_env ("PPM_STRIPE_API_BASE", ppm_test_emulator_url (self->emulator)),
                      s_env ("PPM_CONFIG_ENDPOINT", self->endpoints[PPM_TEST_CONFIG]),
                      s_env ("PPM_CONFIG_EVENTS", self->pubs[PPM_TEST_CONFIG]),
                      s_env ("PPM_RATE_ENDPOINT", self->endpoints[PPM_TEST_RATE]),
                      s_env ("PPM_PAYMENT_ENDPOINT", self->endpoints[PPM_TEST_PAYMENT]),
                      s_env ("PPM_PAYMENT_EVENTS", self->pubs[PPM_TEST_PAYMENT]),
                      s_env ("PPM_METERING_ENDPOINT", self->endpoints[PPM_TEST_METERING]),
                      s_env ("PPM_METERING_EVENTS", self->pubs[PPM_TEST_METERING]),
                      s_env ("PPM_LOG_LEVEL", "warn")};
    for (size_t i = 0; i < sizeof shared / sizeof shared[0]; i++)
        self->env[self->env_count++] = shared[i];
    free (pg);
    free (redis);
    for (int i = 0; i < PPM_TEST_SERVICES; i++) {
        self->clients[i] = ppm_rpc_client_new (self->endpoints[i]);
        assert_non_null (self->clients[i]);
    }

    /* config first: the others load their tenants from it */
    s_spawn (self, PPM_TEST_CONFIG, env_extra);
    bool ready = s_wait_ready (self, PPM_TEST_CONFIG);
    for (int i = PPM_TEST_RATE; ready && i < PPM_TEST_SERVICES; i++)
        s_spawn (self, i, env_extra);
    for (int i = PPM_TEST_RATE; ready && i < PPM_TEST_SERVICES; i++)
        ready = s_wait_ready (self, i);
    if (!ready) {
        ppm_test_stack_stop (&self);
        return NULL;
    }
    return self;
}

void
ppm_test_stack_stop (ppm_test_stack_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ppm_test_stack_t *self = *self_p;
    for (int i = 0; i < PPM_TEST_SERVICES; i++)
        ppm_rpc_client_destroy (&self->clients[i]);
    for (int i = PPM_TEST_SERVICES - 1; i >= 0; i--)
        if (self->pids[i] > 0) {
            ppm_test_kill (self->pids[i], SIGCONT); /* a stopped process cannot exit */
            ppm_test_stop (self->pids[i], 5000);
            self->pids[i] = 0;
        }
    ppm_test_emulator_stop (&self->emulator);
    for (size_t i = 0; i < self->env_count; i++)
        free (self->env[i]);
    free (self);
    *self_p = NULL;
}

const char *
ppm_test_stack_endpoint (const ppm_test_stack_t *self, ppm_test_service_t service)
{
    assert_true (service < PPM_TEST_SERVICES);
    return self->endpoints[service];
}

const char *
ppm_test_stack_events (const ppm_test_stack_t *self)
{
    return self->events;
}

pid_t
ppm_test_stack_pid (const ppm_test_stack_t *self, ppm_test_service_t service)
{
    assert_true (service < PPM_TEST_SERVICES);
    return self->pids[service];
}

ppm_test_emulator_t *
ppm_test_stack_emulator (const ppm_test_stack_t *self)
{
    return self->emulator;
}

ppm_status_t *
ppm_test_stack_call (ppm_test_stack_t *self, ppm_test_service_t service, const char *method,
                     const char *tenant, const ProtobufCMessage *msg,
                     const ProtobufCMessageDescriptor *reply_descriptor, ProtobufCMessage **reply_p)
{
    assert_true (service < PPM_TEST_SERVICES);
    ppm_rpc_req_t req = {.method = method, .tenant = tenant, .timeout_ms = S_CALL_MS};
    return ppm_rpc_client_call_sync (self->clients[service], &req, msg, reply_descriptor, reply_p);
}

int
ppm_test_stack_ppmctl (ppm_test_stack_t *self, const char *const args[])
{
    char *argv[64] = {"ppmctl"};
    size_t n = 1;
    for (size_t i = 0; args[i] && n < 63; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    char *env[] = {s_env ("PPM_CONFIG_ENDPOINT", self->endpoints[PPM_TEST_CONFIG]),
                   s_env ("PPM_RATE_ENDPOINT", self->endpoints[PPM_TEST_RATE]),
                   s_env ("PPM_PAYMENT_ENDPOINT", self->endpoints[PPM_TEST_PAYMENT]),
                   s_env ("PPM_METERING_ENDPOINT", self->endpoints[PPM_TEST_METERING]), NULL};
    pid_t pid = ppm_test_spawn ("ppmctl", argv, env);
    for (size_t i = 0; env[i]; i++)
        free (env[i]);
    int status = ppm_test_wait (pid, S_PPMCTL_MS);
    if (status == -1) {
        ppm_test_stop (pid, 1000);
        return -1;
    }
    return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

int
ppm_test_stack_create_tenant (ppm_test_stack_t *self, const char *name, const char *plan,
                              char *tenant, size_t tenant_size, char *admin_key,
                              size_t admin_key_size)
{
    Ppm__V1__CreateTenantRequest req = PPM__V1__CREATE_TENANT_REQUEST__INIT;
    req.name = (char *)name;
    req.plan = (char *)plan;
    req.actor = "ppm_test_stack";
    Ppm__V1__CreateTenantReply *reply = NULL;
    ppm_status_t *st = ppm_test_stack_call (self, PPM_TEST_CONFIG, "config.CreateTenant", NULL,
                                            &req.base, &ppm__v1__create_tenant_reply__descriptor,
                                            (ProtobufCMessage **)&reply);
    if (st || !reply || !reply->tenant) {
        print_message ("ppm_test_stack: config.CreateTenant: %s\n",
                       st ? ppm_status_message (st) : "no tenant in the reply");
        ppm_status_destroy (&st);
        if (reply)
            protobuf_c_message_free_unpacked (&reply->base, NULL);
        return -1;
    }
    snprintf (tenant, tenant_size, "%s", reply->tenant->tenant_id);
    snprintf (admin_key, admin_key_size, "%s", reply->admin_key);
    protobuf_c_message_free_unpacked (&reply->base, NULL);
    return 0;
}

char *
ppm_test_stack_user_token_secret (ppm_test_stack_t *self, const char *tenant)
{
    Ppm__V1__GetUserTokenSecretRequest req = PPM__V1__GET_USER_TOKEN_SECRET_REQUEST__INIT;
    req.tenant_id = (char *)tenant;
    Ppm__V1__UserTokenSecret *reply = NULL;
    ppm_status_t *st =
        ppm_test_stack_call (self, PPM_TEST_CONFIG, "config.GetUserTokenSecret", tenant, &req.base,
                             &ppm__v1__user_token_secret__descriptor, (ProtobufCMessage **)&reply);
    if (st || !reply || !reply->secret || !*reply->secret) {
        print_message ("ppm_test_stack: config.GetUserTokenSecret: %s\n",
                       st ? ppm_status_message (st) : "no secret in the reply");
        ppm_status_destroy (&st);
        if (reply)
            protobuf_c_message_free_unpacked (&reply->base, NULL);
        return NULL;
    }
    char *secret = strdup (reply->secret);
    protobuf_c_message_free_unpacked (&reply->base, NULL);
    return secret;
}
