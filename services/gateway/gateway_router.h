/*  gateway_router: the route table of the public HTTP API.

    A route is {method, path pattern, handler id, auth kind}. Patterns are
    literal segments and "{name}" segments that match one non-empty path
    segment (no '/'), e.g. "/v1/sessions/{id}/checkout". Matching walks the
    table in order and returns the first route whose pattern and method
    match; when the path matches some pattern but not with this method, the
    result says so (405 with Allow rather than 404). Parameters are copied
    into the match (each at most GATEWAY_ROUTE_PARAM_MAX bytes; a longer
    segment does not match).
*/
#ifndef GATEWAY_ROUTER_H_INCLUDED
#define GATEWAY_ROUTER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#define GATEWAY_ROUTE_PARAMS    4
#define GATEWAY_ROUTE_PARAM_MAX 128

typedef enum {
    GATEWAY_AUTH_NONE = 0, /* public (webhook: verified by the payment service) */
    GATEWAY_AUTH_ADMIN,    /* Bearer tenant admin key */
    GATEWAY_AUTH_USER      /* Bearer user token (HS256 JWT) */
} gateway_auth_t;

typedef struct {
    const char *method;  /* "GET", "POST", "PUT" */
    const char *pattern; /* "/v1/sessions/{id}" */
    int handler;         /* the caller's handler id */
    gateway_auth_t auth; /* what credentials the route needs */
} gateway_route_t;

typedef struct {
    const gateway_route_t *route; /* NULL when nothing matched */
    bool path_known;              /* some route has this path (other method) */
    size_t param_count;
    const char *param_names[GATEWAY_ROUTE_PARAMS]; /* borrowed from the pattern (not NUL-ended) */
    size_t param_name_len[GATEWAY_ROUTE_PARAMS];
    char param_values[GATEWAY_ROUTE_PARAMS][GATEWAY_ROUTE_PARAM_MAX + 1];
} gateway_match_t;

/* Finds the route for method and path (no query string) in routes (ended
   by an entry with method NULL). Returns 0 when a route matched, -1
   otherwise (match->path_known tells 405 from 404). */
int gateway_router_match (const gateway_route_t *routes, const char *method, const char *path,
                          gateway_match_t *match);

/* The value of parameter name in match, or NULL. Borrowed from match. */
const char *gateway_match_param (const gateway_match_t *match, const char *name);

#endif
