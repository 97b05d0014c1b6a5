/*  rate_cache: see rate_cache.h. Tenants in a zhashx keyed by id; each
    entry's user rates in its own zhashx keyed by payee, values malloc'd
    rate_user_t; roles in a small sorted array.
*/
#include "rate_cache.h"

#include <stdlib.h>
#include <string.h>

struct _rate_tenant_t {
    char *tenant_id;             /* owned */
    char *plan;                  /* owned */
    int64_t revision;            /* config revision of this copy */
    Ppm__V1__Settings *settings; /* owned unpacked copy, secrets empty */
    const ppm_currency_t *currency;
    zhashx_t *users;    /* payee → rate_user_t * (owned) */
    rate_role_t *roles; /* sorted: priority desc, role asc */
    size_t role_count;  /* entries used */
    size_t role_alloc;  /* entries allocated */
};

struct _rate_cache_t {
    zhashx_t *tenants; /* tenant id → rate_tenant_t * (owned) */
};

static void
s_free_user (void **item)
{
    free (*item);
    *item = NULL;
}

rate_tenant_t *
rate_tenant_new (const char *tenant_id, const char *plan, int64_t revision,
                 const Ppm__V1__Settings *settings)
{
    rate_tenant_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->tenant_id = strdup (tenant_id);
    self->plan = strdup (plan ? plan : "");
    self->revision = revision;
    size_t size = ppm__v1__settings__get_packed_size (settings);
    uint8_t *buf = malloc (size ? size : 1);
    if (buf) {
        ppm__v1__settings__pack (settings, buf);
        self->settings = ppm__v1__settings__unpack (NULL, size, buf);
        free (buf);
    }
    self->users = zhashx_new ();
    if (!self->tenant_id || !self->plan || !self->settings || !self->users) {
        rate_tenant_destroy (&self);
        return NULL;
    }
    zhashx_set_destructor (self->users, s_free_user);
    self->currency = ppm_currency_find (self->settings->currency);
    return self;
}

void
rate_tenant_destroy (rate_tenant_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    rate_tenant_t *self = *self_p;
    free (self->tenant_id);
    free (self->plan);
    if (self->settings)
        ppm__v1__settings__free_unpacked (self->settings, NULL);
    zhashx_destroy (&self->users);
    for (size_t i = 0; i < self->role_count; i++)
        free (self->roles[i].role);
    free (self->roles);
    free (self);
    *self_p = NULL;
}

int
rate_tenant_set_user (rate_tenant_t *self, const char *payee, rate_user_t rates)
{
    rate_user_t *copy = malloc (sizeof *copy);
    if (!copy)
        return -1;
    *copy = rates;
    zhashx_update (self->users, payee, copy);
    return 0;
}

static int
s_role_cmp (const void *a, const void *b)
{
    const rate_role_t *x = a;
    const rate_role_t *y = b;
    if (x->priority != y->priority)
        return x->priority > y->priority ? -1 : 1;
    return strcmp (x->role, y->role);
}

int
rate_tenant_add_role (rate_tenant_t *self, const char *role, rate_amount_t call, rate_amount_t chat,
                      int32_t priority)
{
    if (self->role_count == self->role_alloc) {
        size_t alloc = self->role_alloc ? self->role_alloc * 2 : 8;
        rate_role_t *roles = realloc (self->roles, alloc * sizeof *roles);
        if (!roles)
            return -1;
        self->roles = roles;
        self->role_alloc = alloc;
    }
    char *name = strdup (role);
    if (!name)
        return -1;
    self->roles[self->role_count++] =
        (rate_role_t){.role = name, .call = call, .chat = chat, .priority = priority};
    qsort (self->roles, self->role_count, sizeof *self->roles, s_role_cmp);
    return 0;
}

const char *
rate_tenant_id (const rate_tenant_t *self)
{
    return self->tenant_id;
}

int64_t
rate_tenant_revision (const rate_tenant_t *self)
{
    return self->revision;
}

const Ppm__V1__Settings *
rate_tenant_settings (const rate_tenant_t *self)
{
    return self->settings;
}

const ppm_currency_t *
rate_tenant_currency (const rate_tenant_t *self)
{
    return self->currency;
}

const rate_user_t *
rate_tenant_user (const rate_tenant_t *self, const char *payee)
{
    return zhashx_lookup (self->users, payee);
}

size_t
rate_tenant_role_count (const rate_tenant_t *self)
{
    return self->role_count;
}

const rate_role_t *
rate_tenant_role (const rate_tenant_t *self, size_t index)
{
    return index < self->role_count ? &self->roles[index] : NULL;
}

size_t
rate_tenant_user_count (const rate_tenant_t *self)
{
    return zhashx_size (self->users);
}

static void
s_free_tenant (void **item)
{
    rate_tenant_destroy ((rate_tenant_t **)item);
}

rate_cache_t *
rate_cache_new (void)
{
    rate_cache_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->tenants = zhashx_new ();
    if (!self->tenants) {
        free (self);
        return NULL;
    }
    zhashx_set_destructor (self->tenants, s_free_tenant);
    return self;
}

void
rate_cache_destroy (rate_cache_t **self_p)
{
    if (self_p && *self_p) {
        zhashx_destroy (&(*self_p)->tenants);
        free (*self_p);
        *self_p = NULL;
    }
}

void
rate_cache_replace (rate_cache_t *self, rate_tenant_t **tenant_p)
{
    rate_tenant_t *tenant = *tenant_p;
    *tenant_p = NULL;
    zhashx_update (self->tenants, tenant->tenant_id, tenant);
}

void
rate_cache_remove (rate_cache_t *self, const char *tenant_id)
{
    zhashx_delete (self->tenants, tenant_id);
}

const rate_tenant_t *
rate_cache_lookup (rate_cache_t *self, const char *tenant_id)
{
    return zhashx_lookup (self->tenants, tenant_id);
}

int64_t
rate_cache_revision (rate_cache_t *self, const char *tenant_id)
{
    const rate_tenant_t *tenant = zhashx_lookup (self->tenants, tenant_id);
    return tenant ? tenant->revision : -1;
}

size_t
rate_cache_size (rate_cache_t *self)
{
    return zhashx_size (self->tenants);
}

zlistx_t *
rate_cache_tenant_ids (rate_cache_t *self)
{
    zlistx_t *ids = zhashx_keys (self->tenants);
    return ids;
}
