/*  fuzz_gateway: libFuzzer harness for what the gateway decodes from an
    HTTP request (services/gateway): JSON bodies, query and header values,
    and request paths.

    The first input byte chooses the mode, the rest is the text:
      0  a JSON body: depth check, gateway_json_parse_object (depth and
         size caps; with and without allow_empty), unknown-field refusal,
         every field reader, and the body readers of PUT settings and PUT
         user/role rates (gateway_settings_from_json, _rates_from_json);
         the error body is built for whatever was refused. An
         INVALID_ARGUMENT always names at least one field.
      1  a query or header value: gateway_parse_int (limit, If-Match),
         gateway_session_state_parse, gateway_valid_id.
      2  a request line "METHOD PATH": matched against the gateway's route
         table (a copy of its patterns); a match's parameters are within
         their cap, contain no '/', and are found by name.
    (libmicrohttpd splits and percent-decodes the query string before the
    gateway sees it; these are the gateway's own decoders.)

    Build and run: `make fuzz`; corpus: corpus/fuzz_gateway/ (written by
    tests/fuzz/gen-seeds.sh). */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/gateway/gateway_convert.h"
#include "services/gateway/gateway_json.h"
#include "services/gateway/gateway_router.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* The patterns of services/gateway/gateway_server.c's s_routes. */
static const gateway_route_t s_routes[] = {
    {"GET", "/healthz", 1, GATEWAY_AUTH_NONE},
    {"GET", "/readyz", 2, GATEWAY_AUTH_NONE},
    {"GET", "/metrics", 3, GATEWAY_AUTH_NONE},
    {"GET", "/v1/admin/settings", 4, GATEWAY_AUTH_ADMIN},
    {"PUT", "/v1/admin/settings", 5, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/users/{user_id}/rates", 6, GATEWAY_AUTH_ADMIN},
    {"PUT", "/v1/admin/users/{user_id}/rates", 7, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/roles/{role}/rates", 8, GATEWAY_AUTH_ADMIN},
    {"PUT", "/v1/admin/roles/{role}/rates", 9, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/roles", 10, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/users", 11, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/sessions", 12, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/payments", 13, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/payments.csv", 14, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/earnings", 15, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/audit", 16, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/admin/health", 17, GATEWAY_AUTH_ADMIN},
    {"GET", "/v1/quote", 18, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions", 19, GATEWAY_AUTH_USER},
    {"GET", "/v1/sessions/{id}", 20, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions/{id}/checkout", 21, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions/{id}/confirm", 22, GATEWAY_AUTH_USER},
    {"GET", "/v1/sessions/{id}/events", 23, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions/{id}/heartbeat", 24, GATEWAY_AUTH_USER},
    {"POST", "/v1/sessions/{id}/end", 25, GATEWAY_AUTH_USER},
    {"POST", "/v1/stripe/webhook/{tenant_id}", 26, GATEWAY_AUTH_NONE},
    {NULL, NULL, 0, GATEWAY_AUTH_NONE}};

static void
s_errors (ppm_status_t **errors)
{
    if (!*errors)
        return;
    if (ppm_status_code (*errors) == PPM_INVALID_ARGUMENT)
        assert (ppm_status_field_count (*errors) > 0);
    int http = gateway_http_status_for (*errors);
    assert (http >= 400 && http <= 599);
    json_t *body = gateway_error_json (*errors);
    assert (body);
    char *text = json_dumps (body, JSON_COMPACT);
    assert (text);
    free (text);
    json_decref (body);
    ppm_status_destroy (errors);
}

static void
s_body (const char *text, size_t len, bool allow_empty)
{
    (void)gateway_json_depth (text, len);
    ppm_status_t *errors = NULL;
    json_t *body = gateway_json_parse_object (text, len, allow_empty, &errors);
    if (!body) {
        assert (errors);
        s_errors (&errors);
        return;
    }
    assert (json_is_object (body) && !errors);

    /* checkout's readers */
    static const char *const allowed[] = {"minutes", "accept_terms", "email", NULL};
    gateway_json_refuse_unknown (body, allowed, &errors);
    int64_t minutes = 0;
    bool accept = false;
    const char *email = NULL;
    gateway_json_get_int (body, "minutes", true, 1, 100000, &minutes, &errors);
    gateway_json_get_bool (body, "accept_terms", true, &accept, &errors);
    gateway_json_get_string (body, "email", false, 254, &email, &errors);
    int64_t value = 0;
    bool is_null = false;
    gateway_json_get_nullable_int (body, "call_per_minute", false, 0, INT64_MAX, &value, &is_null,
                                   &errors);
    s_errors (&errors);

    /* PUT settings */
    Ppm__V1__Settings settings = PPM__V1__SETTINGS__INIT;
    gateway_settings_from_json (body, &settings, &errors);
    gateway_settings_clear (&settings);
    s_errors (&errors);

    /* PUT user rates, PUT role rates */
    for (int role = 0; role < 2; role++) {
        protobuf_c_boolean call_set = 0, chat_set = 0;
        int64_t call = 0, chat = 0;
        int32_t priority = 0;
        gateway_rates_from_json (body, role, &call_set, &call, &chat_set, &chat,
                                 role ? &priority : NULL, &errors);
        s_errors (&errors);
    }
    json_decref (body);
}

static void
s_value (const char *text)
{
    ppm_status_t *errors = NULL;
    int64_t value = 0;
    if (gateway_parse_int (text, "limit", 1, 500, &value, &errors))
        assert (value >= 1 && value <= 500 && !errors);
    s_errors (&errors);
    if (gateway_parse_int (text, "If-Match", 0, INT64_MAX, &value, &errors))
        assert (value >= 0);
    s_errors (&errors);
    int state = gateway_session_state_parse (text);
    if (state > 0)
        assert (strcmp (gateway_session_state_name (state), text) == 0);
    if (gateway_valid_id (text, 64))
        assert (*text && strlen (text) <= 64);
}

static void
s_route (const char *line)
{
    const char *space = strchr (line, ' ');
    const char *method = "GET";
    char verb[8];
    const char *path = line;
    if (space && (size_t)(space - line) < sizeof verb) {
        memcpy (verb, line, (size_t)(space - line));
        verb[space - line] = '\0';
        method = verb;
        path = space + 1;
    }
    gateway_match_t match;
    int rc = gateway_router_match (s_routes, method, path, &match);
    if (rc != 0) {
        assert (match.route == NULL);
        return;
    }
    assert (match.route && match.path_known && strcmp (match.route->method, method) == 0);
    assert (match.param_count <= GATEWAY_ROUTE_PARAMS);
    for (size_t i = 0; i < match.param_count; i++) {
        const char *v = match.param_values[i];
        assert (*v && strlen (v) <= GATEWAY_ROUTE_PARAM_MAX && !strchr (v, '/'));
        char name[64];
        size_t n = match.param_name_len[i];
        assert (n < sizeof name);
        memcpy (name, match.param_names[i], n);
        name[n] = '\0';
        assert (gateway_match_param (&match, name) != NULL);
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t len = size - 1;
    char *text = malloc (len + 1);
    if (!text)
        return 0;
    memcpy (text, data + 1, len);
    text[len] = '\0';
    switch (data[0] % 3) {
        case 0:
            s_body (text, len, data[0] & 0x80);
            break;
        case 1:
            s_value (text);
            break;
        default:
            s_route (text);
    }
    free (text);
    return 0;
}
