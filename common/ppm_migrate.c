/*  ppm_migrate: see ppm_migrate.h. One transaction per migration, each
    holding pg_advisory_xact_lock on a key derived from the component, and
    each re-reading the recorded history under that lock before applying
    the next migration, so concurrent runners never apply a migration
    twice. The history table itself is created under a lock of its own.
*/
#include "ppm_migrate.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_ERROR_MAX       768
#define S_COMPONENT_MAX   63
#define S_MIGRATE_TIMEOUT "60000"

static __thread char s_error[S_ERROR_MAX];

static int s_fail (const char **error, const char *fmt, ...)
    __attribute__ ((format (printf, 2, 3)));

static int
s_fail (const char **error, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    vsnprintf (s_error, sizeof s_error, fmt, args);
    va_end (args);
    if (error)
        *error = s_error;
    return -1;
}

/* Opens a transaction with a long statement timeout and takes the lock
   named by key (hashed by the server). */
static ppm_pg_result_t
s_begin_locked (ppm_pg_t *pg, const char *key)
{
    ppm_pg_result_t result = ppm_pg_begin (pg, PPM_PG_READ_COMMITTED);
    if (result != PPM_PG_OK)
        return result;
    const char *timeout[] = {S_MIGRATE_TIMEOUT};
    result = ppm_pg_exec (pg, "SELECT set_config('statement_timeout', $1, true)", 1, timeout, NULL);
    if (result == PPM_PG_OK) {
        const char *params[] = {key};
        result = ppm_pg_exec (pg, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", 1,
                              params, NULL);
    }
    if (result != PPM_PG_OK)
        ppm_pg_rollback (pg);
    return result;
}

static ppm_pg_result_t
s_bootstrap (ppm_pg_t *pg)
{
    ppm_pg_result_t result = s_begin_locked (pg, "ppm_migrate");
    if (result != PPM_PG_OK)
        return result;
    result = ppm_pg_exec (pg,
                          "CREATE TABLE IF NOT EXISTS public.ppm_schema_version ("
                          " component text NOT NULL,"
                          " version integer NOT NULL CHECK (version > 0),"
                          " name text NOT NULL,"
                          " applied_at timestamptz NOT NULL DEFAULT now(),"
                          " PRIMARY KEY (component, version))",
                          0, NULL, NULL);
    if (result == PPM_PG_OK)
        result = ppm_pg_commit (pg);
    ppm_pg_rollback (pg);
    return result;
}

static bool
s_parse_int (const char *text, int *value)
{
    char *end = NULL;
    long parsed = strtol (text, &end, 10);
    if (!end || *end != '\0' || end == text || parsed < 0 || parsed > 0x7fffffff)
        return false;
    *value = (int)parsed;
    return true;
}

int
ppm_migrate (ppm_pg_t *pg, const char *component, const ppm_migration_t *list, size_t count,
             const char **error)
{
    assert (pg);
    assert (list || count == 0);
    if (!component || !*component || strlen (component) > S_COMPONENT_MAX)
        return s_fail (error, "migrations: component name must be 1 to %d characters",
                       S_COMPONENT_MAX);
    for (size_t i = 0; i < count; i++) {
        if (list[i].version < 1 || (i > 0 && list[i].version <= list[i - 1].version))
            return s_fail (error,
                           "migrations of %s: versions must be positive and strictly "
                           "increasing (entry %zu has %d)",
                           component, i, list[i].version);
        if (!list[i].name || !*list[i].name || !list[i].sql)
            return s_fail (error, "migrations of %s: version %d needs a name and sql", component,
                           list[i].version);
    }
    if (ppm_pg_in_transaction (pg))
        return s_fail (error, "migrations of %s: called inside a transaction", component);

    ppm_pg_result_t result = s_bootstrap (pg);
    if (result != PPM_PG_OK)
        return s_fail (error, "migrations of %s: cannot create ppm_schema_version: %s (%s)",
                       component, ppm_pg_error (pg), ppm_pg_result_name (result));

    char key[S_COMPONENT_MAX + 32];
    snprintf (key, sizeof key, "ppm_migrate:%s", component);
    int max_known = count ? list[count - 1].version : 0;
    while (true) {
        result = s_begin_locked (pg, key);
        if (result != PPM_PG_OK)
            return s_fail (error, "migrations of %s: cannot lock: %s (%s)", component,
                           ppm_pg_error (pg), ppm_pg_result_name (result));
        PGresult *rows = NULL;
        const char *params[] = {component};
        result = ppm_pg_exec (pg,
                              "SELECT version, name FROM public.ppm_schema_version"
                              " WHERE component = $1 ORDER BY version",
                              1, params, &rows);
        if (result != PPM_PG_OK) {
            ppm_pg_rollback (pg);
            return s_fail (error, "migrations of %s: cannot read history: %s (%s)", component,
                           ppm_pg_error (pg), ppm_pg_result_name (result));
        }
        /* The recorded history must be exactly a prefix of the list. */
        size_t applied = (size_t)PQntuples (rows);
        int rc = 0;
        for (size_t i = 0; i < applied && rc == 0; i++) {
            int version = 0;
            const char *name = PQgetvalue (rows, (int)i, 1);
            if (!s_parse_int (PQgetvalue (rows, (int)i, 0), &version))
                rc = s_fail (error, "migrations of %s: unreadable recorded version", component);
            else if (version > max_known)
                rc = s_fail (error,
                             "migrations of %s: database is at version %d (%s), newer than "
                             "this binary knows (%d): refusing to run on a newer schema",
                             component, version, name, max_known);
            else if (i >= count || version != list[i].version)
                rc = s_fail (error,
                             "migrations of %s: database history has version %d where this "
                             "binary expects version %d",
                             component, version, i < count ? list[i].version : -1);
            else if (strcmp (name, list[i].name) != 0)
                rc = s_fail (error,
                             "migrations of %s: version %d is \"%s\" in the database but "
                             "\"%s\" in this binary",
                             component, version, name, list[i].name);
        }
        PQclear (rows);
        if (rc != 0 || applied >= count) {
            if (rc == 0)
                result = ppm_pg_commit (pg);
            ppm_pg_rollback (pg);
            if (rc == 0 && result != PPM_PG_OK)
                rc = s_fail (error, "migrations of %s: %s (%s)", component, ppm_pg_error (pg),
                             ppm_pg_result_name (result));
            return rc;
        }
        const ppm_migration_t *next = &list[applied];
        result = ppm_pg_exec_script (pg, next->sql);
        if (result == PPM_PG_OK) {
            char version[16];
            snprintf (version, sizeof version, "%d", next->version);
            const char *record[] = {component, version, next->name};
            result = ppm_pg_exec (pg,
                                  "INSERT INTO public.ppm_schema_version (component, version, "
                                  "name) VALUES ($1, $2::integer, $3)",
                                  3, record, NULL);
        }
        if (result == PPM_PG_OK)
            result = ppm_pg_commit (pg);
        if (result != PPM_PG_OK) {
            ppm_pg_rollback (pg);
            return s_fail (error, "migrations of %s: version %d (%s) failed: %s (%s)", component,
                           next->version, next->name, ppm_pg_error (pg),
                           ppm_pg_result_name (result));
        }
    }
}

int
ppm_migrate_version (ppm_pg_t *pg, const char *component)
{
    assert (pg);
    assert (component);
    PGresult *res = NULL;
    const char *params[] = {component};
    ppm_pg_result_t result = ppm_pg_exec (pg,
                                          "SELECT coalesce(max(version), 0) FROM "
                                          "public.ppm_schema_version WHERE component = $1",
                                          1, params, &res);
    if (result != PPM_PG_OK && strcmp (ppm_pg_sqlstate (pg), "42P01") == 0)
        return 0; /* undefined_table: nothing was ever migrated */
    if (result != PPM_PG_OK)
        return -1;
    int version = -1;
    if (PQntuples (res) != 1 || !s_parse_int (PQgetvalue (res, 0, 0), &version))
        version = -1;
    PQclear (res);
    return version;
}
