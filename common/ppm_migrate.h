/*  ppm_migrate: applies a component's schema migrations at start-up.

    Each service keeps its schema as an ordered C array of migrations
    {version, name, sql} and calls ppm_migrate when it starts. Applied
    migrations are recorded in public.ppm_schema_version (component,
    version, name, applied_at). Each migration runs in its own transaction
    together with its record, so a failure leaves the schema at the last
    good version; running again is a no-op. Two replicas starting at once
    are serialized by a transaction-scoped advisory lock keyed by the
    component: the second waits, then finds everything applied.

    The runner refuses (returns an error, applies nothing) when the
    database is ahead of the binary (a version it does not know: an older
    binary must not run on a newer schema) or when a recorded version has a
    different name or sits where the binary expects another version (the
    two histories disagree).

        static const ppm_migration_t s_migrations[] = {
            {1, "tenants", "CREATE SCHEMA config; CREATE TABLE config.tenant (…);"},
            {2, "rates", "CREATE TABLE config.rate (…);"},
        };
        const char *error;
        if (ppm_migrate (pg, "config", s_migrations, 2, &error))
            ppm_log_error ("migrations: %s", error);

    BLOCKS (each statement bounded by 60 s inside migrations); call it at
    start-up before the service's loop runs.
*/
#ifndef PPM_MIGRATE_H_INCLUDED
#define PPM_MIGRATE_H_INCLUDED

#include <stddef.h>
#include "ppm_pg.h"

typedef struct {
    int version;      /* 1, 2, …: strictly increasing in the list */
    const char *name; /* short unique name, recorded with the version */
    const char *sql;  /* constant SQL, may hold several statements */
} ppm_migration_t;

/* Applies the migrations of list[0..count) that the database lacks, in
   order. Returns 0, or -1 with *error set to a line naming the component
   and version (valid until the next ppm_migrate call on this thread). A
   database that is unavailable gives -1 too: retry the start-up. */
int ppm_migrate (ppm_pg_t *pg, const char *component, const ppm_migration_t *list, size_t count,
                 const char **error);

/* The version recorded for component (0 when none), or -1 on error. */
int ppm_migrate_version (ppm_pg_t *pg, const char *component);

#endif
