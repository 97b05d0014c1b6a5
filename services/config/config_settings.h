/*  config_settings: the rules of a tenant's settings (SPEC §5 "Settings
    fields", issue 3), as pure functions over the ppm.v1.Settings message.

    No I/O here, so that the rules are tested directly, fuzzed (tests/fuzz/),
    and used the same way by the service and by ppmctl. A write is checked
    whole: config_settings_validate collects every violation (field + reason)
    into one INVALID_ARGUMENT status, or returns FAILED_PRECONDITION for a
    plan or environment gate, or NULL when the record may be stored.

    Bounds (documented in docs/ARCHITECTURE.md "Config service"):
      enable_for chat|call|both; rate_scope default|individual|roles;
      stripe_mode test|live; billing_mode prepaid|authorize;
      rounding minute|second; currency: one ppm_money knows;
      default_*_per_minute: 0 (free) … currency max, multiple of its step;
      keys: ≤ 255 bytes of [A-Za-z0-9_], prefix sk_/rk_/pk_ + mode, whsec_;
      terms_url: absolute http(s) URL ≤ 2048 bytes, required when enabled;
      preset_minutes: 1–6 distinct values 1–600, each ≤ max_minutes_per_
        purchase, stored ascending; every preset × every non-zero rate of the
        tenant (defaults, individual, role) within the currency's minimum and
        maximum charge;
      warning_marks_s: 0–5 distinct values 1–3600, stored descending;
      grace_s 0–600; session_ttl_s 60–86400 and > grace_s;
      max_minutes_per_purchase 1–1440 ≤ max_session_minutes 1–1440;
      max_concurrent_sessions 1–100; free_trial_minutes 0–60;
      cors_allowed_origins: ≤ 16 origins "http(s)://host[:port]" ≤ 256 bytes.
*/
#ifndef CONFIG_SETTINGS_H_INCLUDED
#define CONFIG_SETTINGS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ppm_money.h"
#include "ppm_status.h"
#include "proto/config.pb-c.h"

#define CONFIG_TERMS_URL_MAX   2048
#define CONFIG_PRESETS_MAX     6
#define CONFIG_PRESET_MINUTES  600
#define CONFIG_MARKS_MAX       5
#define CONFIG_KEY_MAX         255
#define CONFIG_ORIGINS_MAX     16
#define CONFIG_ORIGIN_LEN_MAX  256
#define CONFIG_PAYEE_MAX       128
#define CONFIG_ROLE_MAX        64
#define CONFIG_ROLE_PRIO_LIMIT 1000

/* Plans in ascending order; -1 when name is not a plan. */
int config_plan_rank (const char *plan);
/* Whether plan may switch Pay-per-Minute on (pro, enterprise). */
bool config_plan_allows_feature (const char *plan);

/* Fills settings (already initialised, strings not owned by it) with the
   defaults of a new tenant. Strings point to static text and the repeated
   fields to static arrays: copy with config_settings_dup before changing. */
void config_settings_defaults (Ppm__V1__Settings *settings);

/* Deep copy through the wire format; free with config_settings_free. NULL
   on out of memory. */
Ppm__V1__Settings *config_settings_dup (const Ppm__V1__Settings *settings);
void config_settings_free (Ppm__V1__Settings **settings_p);

/* Puts a record into canonical form in place: currency upper case,
   preset_minutes ascending, warning_marks_s descending. */
void config_settings_normalize (Ppm__V1__Settings *settings);

/* What validation needs to know beyond the record itself. */
typedef struct {
    const char *plan;     /* the tenant's plan */
    bool time_scaled;     /* PPM_TIME_SCALE > 1 in this process */
    const int64_t *rates; /* distinct non-zero individual and role rates */
    size_t rate_count;    /*   of the tenant (for the preset × rate check) */
} config_settings_ctx_t;

/* Checks the whole record (after secrets were merged). Returns NULL when it
   may be stored, else a status the caller destroys. */
ppm_status_t *config_settings_validate (const Ppm__V1__Settings *settings,
                                        const config_settings_ctx_t *ctx);

/* Checks one rate (field names it, e.g. "call_per_minute") against the
   currency and every preset; adds violations to *status_p (created on the
   first one). Returns the number of violations added. */
int config_rate_check (const ppm_currency_t *currency, const int64_t *presets, size_t preset_count,
                       int64_t rate, const char *field, ppm_status_t **status_p);

/* The secret fields, by name and accessor, in a fixed order. The
   publishable key is not a secret (it goes to browsers) and is stored and
   shown as is. */
#define CONFIG_SECRET_COUNT 3
const char *config_secret_name (size_t index);
char **config_secret_slot (Ppm__V1__Settings *settings, size_t index);

/* Merges a write's secrets into next: for each secret field, a name in
   clear (count names) erases it; an empty value or one equal to the mask of
   current's value keeps current's value; anything else is the new value.
   Strings in next are replaced with malloc'd copies. Returns 0, or -1 when
   clear names an unknown field (*bad set to it). */
int config_settings_merge_secrets (Ppm__V1__Settings *next, const Ppm__V1__Settings *current,
                                   char *const *clear, size_t clear_count, const char **bad);

/* Replaces every secret of settings with its mask (in place, malloc'd). */
void config_settings_mask (Ppm__V1__Settings *settings);
/* Erases every secret (snapshots for the rate service). */
void config_settings_strip (Ppm__V1__Settings *settings);

/* Whether name is a secret field. */
bool config_settings_is_secret (const char *name);

/* Renders field name of settings as text ("true", "250", "10,30,60", the
   string itself; secrets masked). Returns 0, or -1 for an unknown field. */
int config_settings_get_text (const Ppm__V1__Settings *settings, const char *name, char *buf,
                              size_t size);
/* Sets field name of an unpacked (malloc'd) settings from text in the
   same format. Returns 0, or -1 with *error a static reason. */
int config_settings_set_text (Ppm__V1__Settings *settings, const char *name, const char *text,
                              const char **error);

/* Calls fn for every writable field whose text differs between old and
   new (secrets masked): the audit log's "field, old → new". */
typedef void (config_diff_fn) (const char *field, const char *old_text, const char *new_text,
                               void *arg);
void config_settings_diff (const Ppm__V1__Settings *old_settings,
                           const Ppm__V1__Settings *new_settings, config_diff_fn *fn, void *arg);
/* Whether name is a writable settings field (not version, plan, …). */
bool config_settings_writable (const char *name);

/* Whether text is a valid payee id / role name. */
bool config_valid_payee (const char *payee);
bool config_valid_role (const char *role);

#endif
