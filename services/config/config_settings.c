/*  config_settings: see config_settings.h. Each check adds a violation
    naming its field and goes on, so that an admin sees every problem of a
    form at once; gates (plan, time scale) are FAILED_PRECONDITION.
*/
#include "config_settings.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include "ppm_log.h"

static const char *s_plans[] = {"free", "basic", "pro", "enterprise"};

int
config_plan_rank (const char *plan)
{
    if (!plan)
        return -1;
    for (int i = 0; i < 4; i++)
        if (strcmp (plan, s_plans[i]) == 0)
            return i;
    return -1;
}

bool
config_plan_allows_feature (const char *plan)
{
    return config_plan_rank (plan) >= 2;
}

static int64_t s_default_presets[] = {10, 30, 60};
static int64_t s_default_marks[] = {300, 60, 10};

void
config_settings_defaults (Ppm__V1__Settings *s)
{
    s->enabled = false;
    s->enable_for = (char *)"both";
    s->rate_scope = (char *)"default";
    s->default_call_per_minute = 0;
    s->default_chat_per_minute = 0;
    s->stripe_mode = (char *)"test";
    s->stripe_secret_key = (char *)"";
    s->stripe_restricted_key = (char *)"";
    s->stripe_publishable_key = (char *)"";
    s->stripe_webhook_secret = (char *)"";
    s->terms_url = (char *)"";
    s->n_preset_minutes = 3;
    s->preset_minutes = s_default_presets;
    s->currency = (char *)"USD";
    s->billing_mode = (char *)"prepaid";
    s->rounding = (char *)"minute";
    s->refund_unused = false;
    s->n_warning_marks_s = 3;
    s->warning_marks_s = s_default_marks;
    s->grace_s = 60;
    s->max_minutes_per_purchase = 120;
    s->max_session_minutes = 240;
    s->max_concurrent_sessions = 3;
    s->free_trial_minutes = 0;
    s->session_ttl_s = 3600;
}

Ppm__V1__Settings *
config_settings_dup (const Ppm__V1__Settings *settings)
{
    size_t size = ppm__v1__settings__get_packed_size (settings);
    uint8_t *buf = malloc (size ? size : 1);
    if (!buf)
        return NULL;
    ppm__v1__settings__pack (settings, buf);
    Ppm__V1__Settings *copy = ppm__v1__settings__unpack (NULL, size, buf);
    free (buf);
    return copy;
}

void
config_settings_free (Ppm__V1__Settings **settings_p)
{
    if (settings_p && *settings_p) {
        ppm__v1__settings__free_unpacked (*settings_p, NULL);
        *settings_p = NULL;
    }
}

static int
s_cmp_asc (const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a;
    int64_t y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int
s_cmp_desc (const void *a, const void *b)
{
    return s_cmp_asc (b, a);
}

void
config_settings_normalize (Ppm__V1__Settings *s)
{
    if (s->currency)
        for (char *c = s->currency; *c; c++)
            *c = (char)toupper ((unsigned char)*c);
    if (s->n_preset_minutes > 1)
        qsort (s->preset_minutes, s->n_preset_minutes, sizeof (int64_t), s_cmp_asc);
    if (s->n_warning_marks_s > 1)
        qsort (s->warning_marks_s, s->n_warning_marks_s, sizeof (int64_t), s_cmp_desc);
}

static bool
s_one_of (const char *value, const char *const *options)
{
    if (!value)
        return false;
    for (size_t i = 0; options[i]; i++)
        if (strcmp (value, options[i]) == 0)
            return true;
    return false;
}

/* Adds a violation, creating the status on the first one. */
static void s_violation (ppm_status_t **status_p, const char *field, const char *fmt, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
s_violation (ppm_status_t **status_p, const char *field, const char *fmt, ...)
{
    char text[PPM_STATUS_TEXT_MAX];
    va_list args;
    va_start (args, fmt);
    vsnprintf (text, sizeof text, fmt, args);
    va_end (args);
    if (!*status_p)
        *status_p = ppm_status_new (PPM_INVALID_ARGUMENT, "invalid settings");
    ppm_status_add_field (*status_p, field, "%s", text);
}

static void
s_check_enum (const char *value, const char *const *options, const char *field,
              ppm_status_t **status_p)
{
    if (s_one_of (value, options))
        return;
    char list[128] = "";
    size_t used = 0;
    for (size_t i = 0; options[i]; i++) {
        int n = snprintf (list + used, sizeof list - used, "%s%s", i ? ", " : "", options[i]);
        if (n < 0 || (size_t)n >= sizeof list - used)
            break;
        used += (size_t)n;
    }
    /* The refused value is echoed only when it is short and printable. */
    char shown[64] = "";
    size_t len = value ? strlen (value) : 0;
    bool printable = len > 0 && len < 40;
    for (size_t i = 0; printable && i < len; i++)
        if (!isprint ((unsigned char)value[i]))
            printable = false;
    if (printable)
        snprintf (shown, sizeof shown, "\"%s\" ", value);
    s_violation (status_p, field, "%smust be one of %s", shown, list);
}

static void
s_check_range (int64_t value, int64_t min, int64_t max, const char *field, ppm_status_t **status_p)
{
    if (value < min || value > max)
        s_violation (status_p, field, "%lld is out of range %lld to %lld", (long long)value,
                     (long long)min, (long long)max);
}

static void
s_fmt_amount (const ppm_currency_t *currency, int64_t amount, char *buf, size_t size)
{
    if (ppm_money_format (currency, amount, buf, size) != 0)
        snprintf (buf, size, "%lld", (long long)amount);
}

/* Absolute http(s) URL with a host, no spaces or control characters. */
static bool
s_valid_http_url (const char *url, bool origin_only)
{
    size_t skip;
    if (strncasecmp (url, "https://", 8) == 0)
        skip = 8;
    else if (strncasecmp (url, "http://", 7) == 0)
        skip = 7;
    else
        return false;
    for (const char *c = url; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c == 0x7f)
            return false;
    const char *host = url + skip;
    size_t host_len = strcspn (host, "/?#");
    if (host_len == 0 || host[0] == ':' || host[0] == '@')
        return false;
    if (origin_only && host[host_len] != '\0')
        return false;
    return true;
}

static bool
s_key_chars_ok (const char *key)
{
    for (const char *c = key; *c; c++)
        if (!isalnum ((unsigned char)*c) && *c != '_')
            return false;
    return true;
}

static void
s_check_key (const char *key, const char *kind, const char *mode, const char *field,
             ppm_status_t **status_p)
{
    if (!key || !*key)
        return;
    if (strlen (key) > CONFIG_KEY_MAX || !s_key_chars_ok (key)) {
        s_violation (status_p, field, "must be at most %d characters of A-Z a-z 0-9 _",
                     CONFIG_KEY_MAX);
        return;
    }
    char prefix[32];
    if (strcmp (kind, "whsec") == 0)
        snprintf (prefix, sizeof prefix, "whsec_");
    else
        snprintf (prefix, sizeof prefix, "%s_%s_", kind, mode);
    if (strncmp (key, prefix, strlen (prefix)) != 0 || strlen (key) <= strlen (prefix)) {
        if (strcmp (kind, "whsec") == 0)
            s_violation (status_p, field, "must start with whsec_");
        else
            s_violation (status_p, field, "must start with %s (stripe_mode is %s)", prefix, mode);
    }
}

int
config_rate_check (const ppm_currency_t *currency, const int64_t *presets, size_t preset_count,
                   int64_t rate, const char *field, ppm_status_t **status_p)
{
    int added = 0;
    ppm_money_err_t err = ppm_money_check_amount (currency, rate);
    if (err != PPM_MONEY_OK) {
        char max[32];
        s_fmt_amount (currency, currency->max_charge, max, sizeof max);
        if (err == PPM_MONEY_BAD_STEP)
            s_violation (status_p, field, "%lld is not a multiple of %lld, the %s step",
                         (long long)rate, (long long)currency->step, currency->code);
        else
            s_violation (status_p, field, "%lld must be 0 (free) to %lld (%s %s)", (long long)rate,
                         (long long)currency->max_charge, max, currency->code);
        return 1;
    }
    if (rate == 0)
        return 0;
    for (size_t i = 0; i < preset_count; i++) {
        int64_t total = 0;
        err = ppm_money_total (rate, presets[i], &total);
        if (err == PPM_MONEY_OK)
            err = ppm_money_check_charge (currency, total);
        if (err == PPM_MONEY_OK)
            continue;
        char limit[32], got[32];
        bool small = err == PPM_MONEY_TOO_SMALL;
        s_fmt_amount (currency, small ? currency->min_charge : currency->max_charge, limit,
                      sizeof limit);
        if (err == PPM_MONEY_OVERFLOW)
            snprintf (got, sizeof got, "too much");
        else
            s_fmt_amount (currency, total, got, sizeof got);
        s_violation (
            status_p, field, "preset %lld minutes at %lld per minute costs %s %s, %s the %s %s %s",
            (long long)presets[i], (long long)rate, got, currency->code, small ? "below" : "above",
            currency->code, small ? "minimum" : "maximum", limit);
        added++;
    }
    return added;
}

/* Every preset × every non-zero rate: a violation on "preset_minutes[i]"
   naming the rate that breaks it. */
static void
s_check_presets_vs_rates (const ppm_currency_t *currency, const Ppm__V1__Settings *s,
                          const int64_t *rates, size_t rate_count, ppm_status_t **status_p)
{
    int64_t lo = 0, hi = 0;
    const char *lo_name = NULL, *hi_name = NULL;
    struct {
        int64_t rate;
        const char *name;
    } all[2] = {{s->default_call_per_minute, "default_call_per_minute"},
                {s->default_chat_per_minute, "default_chat_per_minute"}};
    for (size_t i = 0; i < 2; i++) {
        if (all[i].rate <= 0 || ppm_money_check_amount (currency, all[i].rate) != PPM_MONEY_OK)
            continue;
        if (!lo || all[i].rate < lo) {
            lo = all[i].rate;
            lo_name = all[i].name;
        }
        if (all[i].rate > hi) {
            hi = all[i].rate;
            hi_name = all[i].name;
        }
    }
    for (size_t i = 0; i < rate_count; i++) {
        if (rates[i] <= 0)
            continue;
        if (!lo || rates[i] < lo) {
            lo = rates[i];
            lo_name = "an individual or role rate";
        }
        if (rates[i] > hi) {
            hi = rates[i];
            hi_name = "an individual or role rate";
        }
    }
    if (!lo)
        return;
    for (size_t i = 0; i < s->n_preset_minutes; i++) {
        int64_t minutes = s->preset_minutes[i];
        if (minutes < 1 || minutes > CONFIG_PRESET_MINUTES)
            continue;
        char field[48];
        snprintf (field, sizeof field, "preset_minutes[%zu]", i);
        int64_t total = 0;
        char got[32], limit[32];
        if (ppm_money_total (lo, minutes, &total) == PPM_MONEY_OK &&
            ppm_money_check_charge (currency, total) == PPM_MONEY_TOO_SMALL) {
            s_fmt_amount (currency, total, got, sizeof got);
            s_fmt_amount (currency, currency->min_charge, limit, sizeof limit);
            s_violation (status_p, field,
                         "%lld minutes at %lld per minute (%s) costs %s %s, below the %s "
                         "minimum charge %s",
                         (long long)minutes, (long long)lo, lo_name, got, currency->code,
                         currency->code, limit);
            continue;
        }
        ppm_money_err_t err = ppm_money_total (hi, minutes, &total);
        if (err == PPM_MONEY_OK)
            err = ppm_money_check_charge (currency, total);
        if (err == PPM_MONEY_TOO_LARGE || err == PPM_MONEY_OVERFLOW) {
            s_fmt_amount (currency, currency->max_charge, limit, sizeof limit);
            s_violation (status_p, field,
                         "%lld minutes at %lld per minute (%s) is above the %s maximum charge %s",
                         (long long)minutes, (long long)hi, hi_name, currency->code, limit);
        }
    }
}

static void
s_check_distinct (const int64_t *values, size_t count, const char *field, int64_t min, int64_t max,
                  ppm_status_t **status_p)
{
    for (size_t i = 0; i < count; i++) {
        char name[48];
        snprintf (name, sizeof name, "%s[%zu]", field, i);
        if (values[i] < min || values[i] > max) {
            s_violation (status_p, name, "%lld is out of range %lld to %lld", (long long)values[i],
                         (long long)min, (long long)max);
            continue;
        }
        for (size_t j = 0; j < i; j++)
            if (values[j] == values[i]) {
                s_violation (status_p, name, "%lld appears more than once", (long long)values[i]);
                break;
            }
    }
}

ppm_status_t *
config_settings_validate (const Ppm__V1__Settings *s, const config_settings_ctx_t *ctx)
{
    static const char *const enable_for[] = {"chat", "call", "both", NULL};
    static const char *const scopes[] = {"default", "individual", "roles", NULL};
    static const char *const modes[] = {"test", "live", NULL};
    static const char *const billing[] = {"prepaid", "authorize", NULL};
    static const char *const rounding[] = {"minute", "second", NULL};
    ppm_status_t *status = NULL;

    if (s->enabled && !config_plan_allows_feature (ctx ? ctx->plan : NULL)) {
        status = ppm_status_new (PPM_FAILED_PRECONDITION,
                                 "Pay-per-Minute requires the Pro plan (tenant plan: %s)",
                                 ctx && ctx->plan ? ctx->plan : "unknown");
        ppm_status_add_field (status, "enabled", "requires the Pro plan");
        return status;
    }
    bool mode_ok = s_one_of (s->stripe_mode, modes);
    if (mode_ok && strcmp (s->stripe_mode, "live") == 0 && ctx && ctx->time_scaled) {
        status = ppm_status_new (PPM_FAILED_PRECONDITION,
                                 "stripe_mode live is refused while PPM_TIME_SCALE is set");
        ppm_status_add_field (status, "stripe_mode", "live is refused under PPM_TIME_SCALE");
        return status;
    }

    s_check_enum (s->enable_for, enable_for, "enable_for", &status);
    s_check_enum (s->rate_scope, scopes, "rate_scope", &status);
    s_check_enum (s->stripe_mode, modes, "stripe_mode", &status);
    s_check_enum (s->billing_mode, billing, "billing_mode", &status);
    s_check_enum (s->rounding, rounding, "rounding", &status);

    const ppm_currency_t *currency = s->currency ? ppm_currency_find (s->currency) : NULL;
    if (!currency)
        s_violation (&status, "currency", "must be an ISO 4217 currency Stripe supports");

    if (mode_ok) {
        s_check_key (s->stripe_secret_key, "sk", s->stripe_mode, "stripe_secret_key", &status);
        s_check_key (s->stripe_restricted_key, "rk", s->stripe_mode, "stripe_restricted_key",
                     &status);
        s_check_key (s->stripe_publishable_key, "pk", s->stripe_mode, "stripe_publishable_key",
                     &status);
    }
    s_check_key (s->stripe_webhook_secret, "whsec", "", "stripe_webhook_secret", &status);

    const char *url = s->terms_url ? s->terms_url : "";
    if (strlen (url) > CONFIG_TERMS_URL_MAX)
        s_violation (&status, "terms_url", "must be at most %d bytes", CONFIG_TERMS_URL_MAX);
    else if (*url && !s_valid_http_url (url, false))
        s_violation (&status, "terms_url", "must be an absolute http:// or https:// URL");
    else if (!*url && s->enabled)
        s_violation (&status, "terms_url", "is required to enable Pay-per-Minute");

    s_check_range (s->grace_s, 0, 600, "grace_s", &status);
    s_check_range (s->session_ttl_s, 60, 86400, "session_ttl_s", &status);
    if (s->session_ttl_s >= 60 && s->grace_s >= 0 && s->session_ttl_s <= s->grace_s)
        s_violation (&status, "session_ttl_s", "must be greater than grace_s");
    s_check_range (s->max_minutes_per_purchase, 1, 1440, "max_minutes_per_purchase", &status);
    s_check_range (s->max_session_minutes, 1, 1440, "max_session_minutes", &status);
    if (s->max_minutes_per_purchase >= 1 && s->max_session_minutes >= 1 &&
        s->max_minutes_per_purchase > s->max_session_minutes)
        s_violation (&status, "max_minutes_per_purchase",
                     "must not exceed max_session_minutes (%lld)",
                     (long long)s->max_session_minutes);
    s_check_range (s->max_concurrent_sessions, 1, 100, "max_concurrent_sessions", &status);
    s_check_range (s->free_trial_minutes, 0, 60, "free_trial_minutes", &status);

    if (s->n_preset_minutes < 1 || s->n_preset_minutes > CONFIG_PRESETS_MAX)
        s_violation (&status, "preset_minutes", "must hold 1 to %d values", CONFIG_PRESETS_MAX);
    else {
        s_check_distinct (s->preset_minutes, s->n_preset_minutes, "preset_minutes", 1,
                          CONFIG_PRESET_MINUTES, &status);
        for (size_t i = 0; i < s->n_preset_minutes; i++)
            if (s->max_minutes_per_purchase >= 1 && s->preset_minutes[i] >= 1 &&
                s->preset_minutes[i] <= CONFIG_PRESET_MINUTES &&
                s->preset_minutes[i] > s->max_minutes_per_purchase) {
                char field[48];
                snprintf (field, sizeof field, "preset_minutes[%zu]", i);
                s_violation (&status, field, "%lld exceeds max_minutes_per_purchase %lld",
                             (long long)s->preset_minutes[i],
                             (long long)s->max_minutes_per_purchase);
            }
    }
    if (s->n_warning_marks_s > CONFIG_MARKS_MAX)
        s_violation (&status, "warning_marks_s", "must hold at most %d values", CONFIG_MARKS_MAX);
    else
        s_check_distinct (s->warning_marks_s, s->n_warning_marks_s, "warning_marks_s", 1, 3600,
                          &status);

    if (s->n_cors_allowed_origins > CONFIG_ORIGINS_MAX)
        s_violation (&status, "cors_allowed_origins", "must hold at most %d origins",
                     CONFIG_ORIGINS_MAX);
    else
        for (size_t i = 0; i < s->n_cors_allowed_origins; i++) {
            const char *origin = s->cors_allowed_origins[i];
            if (strlen (origin) > CONFIG_ORIGIN_LEN_MAX || !s_valid_http_url (origin, true)) {
                char field[48];
                snprintf (field, sizeof field, "cors_allowed_origins[%zu]", i);
                s_violation (&status, field,
                             "must be an origin http(s)://host[:port] of at most %d bytes",
                             CONFIG_ORIGIN_LEN_MAX);
            }
        }

    if (currency) {
        if (s->default_call_per_minute < 0 || s->default_call_per_minute > currency->max_charge ||
            ppm_money_check_amount (currency, s->default_call_per_minute) != PPM_MONEY_OK)
            config_rate_check (currency, NULL, 0, s->default_call_per_minute,
                               "default_call_per_minute", &status);
        if (s->default_chat_per_minute < 0 || s->default_chat_per_minute > currency->max_charge ||
            ppm_money_check_amount (currency, s->default_chat_per_minute) != PPM_MONEY_OK)
            config_rate_check (currency, NULL, 0, s->default_chat_per_minute,
                               "default_chat_per_minute", &status);
        const int64_t *rates = ctx ? ctx->rates : NULL;
        size_t rate_count = ctx ? ctx->rate_count : 0;
        for (size_t i = 0; i < rate_count; i++)
            if (ppm_money_check_amount (currency, rates[i]) != PPM_MONEY_OK) {
                s_violation (&status, "currency",
                             "an individual or role rate (%lld) is not a valid %s amount",
                             (long long)rates[i], currency->code);
                break;
            }
        s_check_presets_vs_rates (currency, s, rates, rate_count, &status);
    }
    return status;
}

static const char *s_secret_names[CONFIG_SECRET_COUNT] = {
    "stripe_secret_key", "stripe_restricted_key", "stripe_webhook_secret"};

const char *
config_secret_name (size_t index)
{
    return index < CONFIG_SECRET_COUNT ? s_secret_names[index] : NULL;
}

char **
config_secret_slot (Ppm__V1__Settings *s, size_t index)
{
    switch (index) {
        case 0:
            return &s->stripe_secret_key;
        case 1:
            return &s->stripe_restricted_key;
        case 2:
            return &s->stripe_webhook_secret;
        default:
            return NULL;
    }
}

/* Replaces a string slot of an unpacked message with a copy of value. The
   empty default string of protobuf-c is static and never freed. */
static void
s_set_string (char **slot, const char *value)
{
    char *copy = strdup (value ? value : ""); /* value may be *slot itself */
    if (!copy)
        abort ();
    if (*slot && *slot != protobuf_c_empty_string)
        free (*slot);
    *slot = copy;
}

int
config_settings_merge_secrets (Ppm__V1__Settings *next, const Ppm__V1__Settings *current,
                               char *const *clear, size_t clear_count, const char **bad)
{
    for (size_t c = 0; c < clear_count; c++) {
        bool known = false;
        for (size_t i = 0; i < CONFIG_SECRET_COUNT; i++)
            if (strcmp (clear[c], s_secret_names[i]) == 0)
                known = true;
        if (!known) {
            if (bad)
                *bad = clear[c];
            return -1;
        }
    }
    for (size_t i = 0; i < CONFIG_SECRET_COUNT; i++) {
        char **slot = config_secret_slot (next, i);
        const char *old = current ? *config_secret_slot ((Ppm__V1__Settings *)current, i) : NULL;
        old = old ? old : "";
        bool cleared = false;
        for (size_t c = 0; c < clear_count; c++)
            if (strcmp (clear[c], s_secret_names[i]) == 0)
                cleared = true;
        const char *given = *slot ? *slot : "";
        char mask[64] = "";
        if (*old)
            ppm_mask_secret (old, mask, sizeof mask);
        if (cleared)
            s_set_string (slot, "");
        else if (!*given || (*old && strcmp (given, mask) == 0))
            s_set_string (slot, old);
        else
            s_set_string (slot, given);
    }
    return 0;
}

void
config_settings_mask (Ppm__V1__Settings *s)
{
    for (size_t i = 0; i < CONFIG_SECRET_COUNT; i++) {
        char **slot = config_secret_slot (s, i);
        if (!*slot || !**slot)
            continue;
        char mask[64];
        ppm_mask_secret (*slot, mask, sizeof mask);
        s_set_string (slot, mask);
    }
}

void
config_settings_strip (Ppm__V1__Settings *s)
{
    for (size_t i = 0; i < CONFIG_SECRET_COUNT; i++)
        s_set_string (config_secret_slot (s, i), "");
}

static bool
s_valid_id (const char *text, size_t max, const char *extra)
{
    if (!text || !*text || strlen (text) > max)
        return false;
    for (const char *c = text; *c; c++)
        if (!isalnum ((unsigned char)*c) && !strchr (extra, *c))
            return false;
    return true;
}

bool
config_valid_payee (const char *payee)
{
    return s_valid_id (payee, CONFIG_PAYEE_MAX, "_.:@-");
}

bool
config_valid_role (const char *role)
{
    return s_valid_id (role, CONFIG_ROLE_MAX, "_.:-");
}

bool
config_settings_is_secret (const char *name)
{
    for (size_t i = 0; i < CONFIG_SECRET_COUNT; i++)
        if (strcmp (name, s_secret_names[i]) == 0)
            return true;
    return false;
}

bool
config_settings_writable (const char *name)
{
    static const char *const readonly[] = {"version",    "plan",      "updated_at_ms",
                                           "updated_by", "tenant_id", NULL};
    return protobuf_c_message_descriptor_get_field_by_name (&ppm__v1__settings__descriptor, name) &&
           !s_one_of (name, readonly);
}

/* Appends text to buf at *used, cutting at size. */
static void
s_append (char *buf, size_t size, size_t *used, const char *text)
{
    if (*used + 1 >= size)
        return;
    int n = snprintf (buf + *used, size - *used, "%s", text);
    if (n > 0)
        *used += (size_t)n < size - *used ? (size_t)n : size - *used - 1;
}

int
config_settings_get_text (const Ppm__V1__Settings *s, const char *name, char *buf, size_t size)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name (&ppm__v1__settings__descriptor, name);
    if (!f || size == 0)
        return -1;
    const char *base = (const char *)s;
    size_t used = 0;
    buf[0] = '\0';
    char item[64];
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t n = *(const size_t *)(base + f->quantifier_offset);
        const void *array = *(const void *const *)(base + f->offset);
        for (size_t i = 0; i < n; i++) {
            if (i)
                s_append (buf, size, &used, ",");
            if (f->type == PROTOBUF_C_TYPE_INT64) {
                snprintf (item, sizeof item, "%lld", (long long)((const int64_t *)array)[i]);
                s_append (buf, size, &used, item);
            } else if (f->type == PROTOBUF_C_TYPE_STRING)
                s_append (buf, size, &used, ((char *const *)array)[i]);
        }
        return 0;
    }
    switch (f->type) {
        case PROTOBUF_C_TYPE_BOOL:
            s_append (buf, size, &used,
                      *(const protobuf_c_boolean *)(base + f->offset) ? "true" : "false");
            break;
        case PROTOBUF_C_TYPE_INT64:
            snprintf (item, sizeof item, "%lld", (long long)*(const int64_t *)(base + f->offset));
            s_append (buf, size, &used, item);
            break;
        case PROTOBUF_C_TYPE_STRING: {
            const char *value = *(char *const *)(base + f->offset);
            value = value ? value : "";
            if (config_settings_is_secret (name) && *value) {
                char mask[64];
                ppm_mask_secret (value, mask, sizeof mask);
                s_append (buf, size, &used, mask);
            } else
                s_append (buf, size, &used, value);
            break;
        }
        default:
            return -1;
    }
    return 0;
}

static int
s_parse_int64 (const char *text, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long value = strtoll (text, &end, 10);
    if (errno || end == text || *end != '\0')
        return -1;
    *out = value;
    return 0;
}

int
config_settings_set_text (Ppm__V1__Settings *s, const char *name, const char *text,
                          const char **error)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name (&ppm__v1__settings__descriptor, name);
    const char *dummy = NULL;
    error = error ? error : &dummy;
    if (!f || !config_settings_writable (name)) {
        *error = "unknown or read-only field";
        return -1;
    }
    char *base = (char *)s;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        /* Comma-separated list; "" is the empty list. */
        size_t count = *text ? 1 : 0;
        for (const char *c = text; *c; c++)
            count += *c == ',';
        if (count > 64) {
            *error = "too many values";
            return -1;
        }
        size_t *n_p = (size_t *)(base + f->quantifier_offset);
        void **array_p = (void **)(base + f->offset);
        void *array = count ? calloc (count, f->type == PROTOBUF_C_TYPE_INT64 ? sizeof (int64_t)
                                                                              : sizeof (char *))
                            : NULL;
        if (count && !array) {
            *error = "out of memory";
            return -1;
        }
        const char *start = text;
        for (size_t i = 0; i < count; i++) {
            size_t len = strcspn (start, ",");
            char *piece = strndup (start, len);
            if (!piece)
                abort ();
            if (f->type == PROTOBUF_C_TYPE_INT64) {
                if (s_parse_int64 (piece, &((int64_t *)array)[i])) {
                    free (piece);
                    free (array);
                    *error = "must be a comma-separated list of integers";
                    return -1;
                }
                free (piece);
            } else
                ((char **)array)[i] = piece;
            start += len + (start[len] == ',');
        }
        /* Free the previous list (malloc'd by unpack or by us). */
        if (f->type == PROTOBUF_C_TYPE_STRING)
            for (size_t i = 0; i < *n_p; i++)
                free (((char **)*array_p)[i]);
        free (*array_p);
        *array_p = array;
        *n_p = count;
        return 0;
    }
    switch (f->type) {
        case PROTOBUF_C_TYPE_BOOL:
            if (strcmp (text, "true") == 0 || strcmp (text, "on") == 0 || strcmp (text, "1") == 0)
                *(protobuf_c_boolean *)(base + f->offset) = 1;
            else if (strcmp (text, "false") == 0 || strcmp (text, "off") == 0 ||
                     strcmp (text, "0") == 0)
                *(protobuf_c_boolean *)(base + f->offset) = 0;
            else {
                *error = "must be true or false";
                return -1;
            }
            return 0;
        case PROTOBUF_C_TYPE_INT64:
            if (s_parse_int64 (text, (int64_t *)(base + f->offset))) {
                *error = "must be an integer";
                return -1;
            }
            return 0;
        case PROTOBUF_C_TYPE_STRING:
            s_set_string ((char **)(base + f->offset), text);
            return 0;
        default:
            *error = "unsupported field type";
            return -1;
    }
}

void
config_settings_diff (const Ppm__V1__Settings *old_settings, const Ppm__V1__Settings *new_settings,
                      config_diff_fn *fn, void *arg)
{
    const ProtobufCMessageDescriptor *d = &ppm__v1__settings__descriptor;
    char *a = malloc (4096);
    char *b = malloc (4096);
    if (!a || !b)
        abort ();
    for (unsigned i = 0; i < d->n_fields; i++) {
        const char *name = d->fields[i].name;
        if (!config_settings_writable (name))
            continue;
        config_settings_get_text (old_settings, name, a, 4096);
        config_settings_get_text (new_settings, name, b, 4096);
        /* A secret replaced by another with the same mask still changed. */
        bool changed = strcmp (a, b) != 0;
        if (!changed && config_settings_is_secret (name)) {
            const ProtobufCFieldDescriptor *f = &d->fields[i];
            const char *x = *(char *const *)((const char *)old_settings + f->offset);
            const char *y = *(char *const *)((const char *)new_settings + f->offset);
            changed = strcmp (x ? x : "", y ? y : "") != 0;
        }
        if (changed)
            fn (name, a, b, arg);
    }
    free (a);
    free (b);
}
