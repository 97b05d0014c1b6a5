/*  gateway_router: matches a method and path against the route table.

    Linear in the table, which holds a few dozen routes: simpler than a
    trie and far cheaper than anything else a request does.
*/
#include "gateway_router.h"

#include <string.h>

/* Matches pattern against path; fills params. Returns true on a match. */
static bool
s_match_path (const char *pattern, const char *path, gateway_match_t *match)
{
    match->param_count = 0;
    const char *p = pattern;
    const char *s = path;
    while (*p && *s) {
        if (*p == '{') {
            const char *close = strchr (p, '}');
            if (!close || match->param_count >= GATEWAY_ROUTE_PARAMS)
                return false;
            const char *end = strchr (s, '/');
            size_t len = end ? (size_t)(end - s) : strlen (s);
            if (len == 0 || len > GATEWAY_ROUTE_PARAM_MAX)
                return false;
            /* A literal suffix after the parameter within one segment
               (e.g. "{x}.csv") is not supported: patterns avoid it. */
            size_t i = match->param_count++;
            match->param_names[i] = p + 1;
            match->param_name_len[i] = (size_t)(close - p - 1);
            memcpy (match->param_values[i], s, len);
            match->param_values[i][len] = '\0';
            p = close + 1;
            s += len;
        } else {
            if (*p != *s)
                return false;
            p++;
            s++;
        }
    }
    return *p == '\0' && *s == '\0';
}

int
gateway_router_match (const gateway_route_t *routes, const char *method, const char *path,
                      gateway_match_t *match)
{
    memset (match, 0, sizeof *match);
    for (const gateway_route_t *r = routes; r->method; r++) {
        gateway_match_t m;
        memset (&m, 0, sizeof m);
        if (!s_match_path (r->pattern, path, &m))
            continue;
        if (strcmp (r->method, method) == 0) {
            *match = m;
            match->route = r;
            match->path_known = true;
            return 0;
        }
        match->path_known = true;
    }
    return -1;
}

const char *
gateway_match_param (const gateway_match_t *match, const char *name)
{
    size_t len = strlen (name);
    for (size_t i = 0; i < match->param_count; i++)
        if (match->param_name_len[i] == len && memcmp (match->param_names[i], name, len) == 0)
            return match->param_values[i];
    return NULL;
}
