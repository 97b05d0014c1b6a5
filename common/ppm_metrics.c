/*  ppm_metrics: see ppm_metrics.h.

    One mutex per registry guards everything in it: metrics are updated a
    few thousand times a second at most, and a scrape renders while holding
    the lock, so a plain mutex is simpler and cheaper than anything clever.
    A metric keeps its series in first-use order (for stable output) and in
    a czmq hash keyed by the joined label values (for the hot path). The
    handles given out (ppm_counter_t and friends) are the metric itself,
    cast: they are never dereferenced under those names.

    The listener is libmicrohttpd with its own polling thread, a connection
    limit and a timeout; it only ever reads the registry through
    ppm_metrics_render, so it shares nothing else with the service.
*/
#include "ppm_metrics.h"
#include "ppm_log.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef enum { S_COUNTER, S_GAUGE, S_HISTOGRAM } s_type_t;

static const char *s_type_names[] = {"counter", "gauge", "histogram"};

static const double s_default_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

typedef struct {
    char *values[PPM_METRICS_LABELS_MAX]; /* label values, owned */
    uint64_t counter;                     /* counter value */
    double gauge;                         /* gauge value */
    uint64_t *buckets;                    /* histogram: count per bucket (not cumulative) */
    double sum;                           /* histogram: sum of observations */
    uint64_t count;                       /* histogram: number of observations */
} s_series_t;

typedef struct {
    ppm_metrics_t *registry;                   /* owner */
    s_type_t type;                             /* what it is */
    char *name;                                /* exposed name (counters end _total) */
    char *help;                                /* help line */
    char *labels;                              /* label names as registered, for clashes */
    char *label_names[PPM_METRICS_LABELS_MAX]; /* owned */
    size_t label_count;
    double *bounds; /* histogram upper bounds, owned */
    size_t bound_count;
    s_series_t **series; /* in first-use order, owned */
    size_t series_count;
    size_t series_size;  /* allocated slots */
    size_t capped_count; /* series counted against the cap (all but _other) */
    zhashx_t *index;     /* joined values -> series (borrowed) */
} s_metric_t;

struct _ppm_metrics_t {
    pthread_mutex_t lock; /* guards everything below */
    s_metric_t **metrics; /* registration order, owned */
    size_t metric_count;  /* used slots */
    size_t metric_size;   /* allocated slots */
    size_t cap;           /* label sets per metric */
    bool process;         /* render process_* metrics */
};

/* ---- registry ------------------------------------------------------------ */

ppm_metrics_t *
ppm_metrics_new (void)
{
    ppm_metrics_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init (&self->lock, NULL);
    self->cap = PPM_METRICS_CAP_DEFAULT;
    self->process = true;
    return self;
}

static void
s_series_destroy (s_series_t **self_p)
{
    s_series_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < PPM_METRICS_LABELS_MAX; i++)
        free (self->values[i]);
    free (self->buckets);
    free (self);
    *self_p = NULL;
}

static void
s_metric_destroy (s_metric_t **self_p)
{
    s_metric_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < self->series_count; i++)
        s_series_destroy (&self->series[i]);
    free (self->series);
    zhashx_destroy (&self->index);
    for (size_t i = 0; i < self->label_count; i++)
        free (self->label_names[i]);
    free (self->bounds);
    free (self->name);
    free (self->help);
    free (self->labels);
    free (self);
    *self_p = NULL;
}

void
ppm_metrics_destroy (ppm_metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ppm_metrics_t *self = *self_p;
    for (size_t i = 0; i < self->metric_count; i++)
        s_metric_destroy (&self->metrics[i]);
    free (self->metrics);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

static ppm_metrics_t *s_global = NULL;
static pthread_once_t s_global_once = PTHREAD_ONCE_INIT;

static void
s_global_init (void)
{
    s_global = ppm_metrics_new ();
}

ppm_metrics_t *
ppm_metrics_global (void)
{
    pthread_once (&s_global_once, s_global_init);
    return s_global;
}

void
ppm_metrics_set_cap (ppm_metrics_t *self, size_t cap)
{
    if (!self || cap < 1)
        return;
    pthread_mutex_lock (&self->lock);
    self->cap = cap;
    pthread_mutex_unlock (&self->lock);
}

void
ppm_metrics_set_process (ppm_metrics_t *self, bool enabled)
{
    if (!self)
        return;
    pthread_mutex_lock (&self->lock);
    self->process = enabled;
    pthread_mutex_unlock (&self->lock);
}

/* ---- registration -------------------------------------------------------- */

static bool
s_valid_name (const char *name, bool colon)
{
    if (!name || !*name)
        return false;
    for (size_t i = 0; name[i]; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* Splits "a,b" into metric->label_names; 0 or -1 (invalid). */
static int
s_parse_labels (s_metric_t *metric, const char *labels)
{
    if (!labels || !*labels)
        return 0;
    const char *start = labels;
    while (true) {
        const char *end = strchr (start, ',');
        size_t len = end ? (size_t)(end - start) : strlen (start);
        if (metric->label_count == PPM_METRICS_LABELS_MAX)
            return -1;
        char *name = strndup (start, len);
        if (!name)
            return -1;
        metric->label_names[metric->label_count++] = name;
        if (!s_valid_name (name, false) || strncmp (name, "__", 2) == 0)
            return -1;
        if (metric->type == S_HISTOGRAM && strcmp (name, "le") == 0)
            return -1;
        for (size_t i = 0; i + 1 < metric->label_count; i++)
            if (strcmp (metric->label_names[i], name) == 0)
                return -1;
        if (!end)
            return 0;
        start = end + 1;
    }
}

static s_metric_t *
s_register (ppm_metrics_t *self, s_type_t type, const char *name, const char *help,
            const char *labels, const double *bounds, size_t bound_count)
{
    if (!self)
        return NULL;
    if (!s_valid_name (name, true)) {
        ppm_log_kv (PPM_LOG_ERROR, "metrics: invalid metric name", "name", name, PPM_LOG_END);
        return NULL;
    }
    s_metric_t *metric = calloc (1, sizeof *metric);
    if (!metric)
        return NULL;
    metric->registry = self;
    metric->type = type;
    size_t len = strlen (name);
    bool add_total = type == S_COUNTER && (len < 6 || strcmp (name + len - 6, "_total") != 0);
    metric->name = add_total ? zsys_sprintf ("%s_total", name) : strdup (name);
    metric->help = strdup (help ? help : "");
    metric->labels = strdup (labels ? labels : "");
    metric->index = zhashx_new ();
    const char *error = NULL;
    if (!metric->name || !metric->help || !metric->labels || !metric->index)
        error = "out of memory";
    else if (s_parse_labels (metric, labels))
        error = "invalid label names";
    if (!error && type == S_HISTOGRAM) {
        if (!bounds) {
            bounds = s_default_buckets;
            bound_count = sizeof s_default_buckets / sizeof s_default_buckets[0];
        }
        if (bound_count == 0 || bound_count > PPM_METRICS_BUCKETS_MAX)
            error = "invalid bucket count";
        for (size_t i = 0; !error && i < bound_count; i++)
            if (!isfinite (bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
                error = "buckets must be finite and strictly increasing";
        if (!error) {
            metric->bounds = malloc (bound_count * sizeof (double));
            if (!metric->bounds)
                error = "out of memory";
            else {
                memcpy (metric->bounds, bounds, bound_count * sizeof (double));
                metric->bound_count = bound_count;
            }
        }
    }
    if (error) {
        ppm_log_kv (PPM_LOG_ERROR, "metrics: cannot register metric", "name", name, "reason", error,
                    PPM_LOG_END);
        s_metric_destroy (&metric);
        return NULL;
    }

    pthread_mutex_lock (&self->lock);
    s_metric_t *result = metric;
    for (size_t i = 0; i < self->metric_count; i++) {
        s_metric_t *other = self->metrics[i];
        if (strcmp (other->name, metric->name) != 0)
            continue;
        bool same =
            other->type == type && strcmp (other->labels, metric->labels) == 0 &&
            other->bound_count == metric->bound_count &&
            (metric->bound_count == 0 ||
             memcmp (other->bounds, metric->bounds, metric->bound_count * sizeof (double)) == 0);
        result = same ? other : NULL;
        break;
    }
    if (result == metric && self->metric_count == self->metric_size) {
        size_t size = self->metric_size ? self->metric_size * 2 : 16;
        s_metric_t **metrics = realloc (self->metrics, size * sizeof *metrics);
        if (metrics) {
            self->metrics = metrics;
            self->metric_size = size;
        } else
            result = NULL;
    }
    if (result == metric)
        self->metrics[self->metric_count++] = metric;
    pthread_mutex_unlock (&self->lock);

    if (result != metric) {
        if (!result)
            ppm_log_kv (PPM_LOG_ERROR,
                        "metrics: name already registered with another type or labels", "name",
                        name, PPM_LOG_END);
        s_metric_destroy (&metric);
    }
    return result;
}

ppm_counter_t *
ppm_metrics_counter (ppm_metrics_t *self, const char *name, const char *help, const char *labels)
{
    return (ppm_counter_t *)s_register (self, S_COUNTER, name, help, labels, NULL, 0);
}

ppm_gauge_t *
ppm_metrics_gauge (ppm_metrics_t *self, const char *name, const char *help, const char *labels)
{
    return (ppm_gauge_t *)s_register (self, S_GAUGE, name, help, labels, NULL, 0);
}

ppm_histogram_t *
ppm_metrics_histogram (ppm_metrics_t *self, const char *name, const char *help, const char *labels,
                       const double *buckets, size_t bucket_count)
{
    return (ppm_histogram_t *)s_register (self, S_HISTOGRAM, name, help, labels, buckets,
                                          bucket_count);
}

/* ---- series lookup -------------------------------------------------------- */

/* Replaces bytes that are not valid UTF-8 with '?', in place. */
static void
s_utf8_sanitize (char *text)
{
    unsigned char *p = (unsigned char *)text;
    while (*p) {
        size_t n = 0;
        if (*p < 0x80)
            n = 1;
        else if ((*p & 0xE0) == 0xC0 && *p >= 0xC2)
            n = 2;
        else if ((*p & 0xF0) == 0xE0)
            n = 3;
        else if ((*p & 0xF8) == 0xF0 && *p <= 0xF4)
            n = 4;
        bool ok = n > 0;
        for (size_t i = 1; ok && i < n; i++)
            ok = (p[i] & 0xC0) == 0x80;
        if (ok && n == 3)
            ok = !(p[0] == 0xE0 && p[1] < 0xA0) && !(p[0] == 0xED && p[1] >= 0xA0);
        if (ok && n == 4)
            ok = !(p[0] == 0xF0 && p[1] < 0x90) && !(p[0] == 0xF4 && p[1] >= 0x90);
        if (!ok) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}

typedef struct {
    char values[PPM_METRICS_LABELS_MAX][PPM_METRICS_VALUE_MAX + 1];     /* cleaned values */
    char key[PPM_METRICS_LABELS_MAX * (PPM_METRICS_VALUE_MAX + 1) + 1]; /* joined */
} s_labels_t;

/* Cleans the values and joins them with 0xFF (never in valid UTF-8). */
static void
s_labels_prepare (s_labels_t *labels, size_t count, const char *const *values)
{
    size_t pos = 0;
    for (size_t i = 0; i < count; i++) {
        const char *value = values && values[i] ? values[i] : "";
        size_t len = strnlen (value, PPM_METRICS_VALUE_MAX + 1);
        if (len > PPM_METRICS_VALUE_MAX) {
            len = PPM_METRICS_VALUE_MAX;
            while (len > 0 && ((unsigned char)value[len] & 0xC0) == 0x80)
                len--; /* do not cut inside a UTF-8 sequence */
        }
        memcpy (labels->values[i], value, len);
        labels->values[i][len] = '\0';
        s_utf8_sanitize (labels->values[i]);
        memcpy (labels->key + pos, labels->values[i], len);
        pos += len;
        labels->key[pos++] = '\xff';
    }
    labels->key[pos] = '\0';
}

static s_series_t *
s_series_new (s_metric_t *metric, const s_labels_t *labels, bool other)
{
    s_series_t *series = calloc (1, sizeof *series);
    if (!series)
        return NULL;
    for (size_t i = 0; i < metric->label_count; i++) {
        series->values[i] = strdup (other ? PPM_METRICS_OTHER : labels->values[i]);
        if (!series->values[i])
            goto failed;
    }
    if (metric->type == S_HISTOGRAM) {
        series->buckets = calloc (metric->bound_count, sizeof (uint64_t));
        if (!series->buckets)
            goto failed;
    }
    return series;
failed:
    s_series_destroy (&series);
    return NULL;
}

static int
s_series_append (s_metric_t *metric, s_series_t *series, const char *key)
{
    if (metric->series_count == metric->series_size) {
        size_t size = metric->series_size ? metric->series_size * 2 : 4;
        s_series_t **all = realloc (metric->series, size * sizeof *all);
        if (!all)
            return -1;
        metric->series = all;
        metric->series_size = size;
    }
    if (zhashx_insert (metric->index, key, series))
        return -1;
    metric->series[metric->series_count++] = series;
    return 0;
}

/* The series for these values, created when new (or the "_other" series
   when the cap is reached); NULL when out of memory or, with create false,
   when absent. Called with the registry locked. */
static s_series_t *
s_series_get (s_metric_t *metric, const char *const *values, bool create)
{
    s_labels_t labels;
    s_labels_prepare (&labels, metric->label_count, values);
    s_series_t *series = zhashx_lookup (metric->index, labels.key);
    if (series || !create)
        return series;
    bool other = metric->capped_count >= metric->registry->cap;
    if (other) {
        const char *others[PPM_METRICS_LABELS_MAX];
        for (size_t i = 0; i < metric->label_count; i++)
            others[i] = PPM_METRICS_OTHER;
        s_labels_prepare (&labels, metric->label_count, others);
        series = zhashx_lookup (metric->index, labels.key);
        if (series)
            return series;
    }
    series = s_series_new (metric, &labels, other);
    if (!series)
        return NULL;
    if (s_series_append (metric, series, labels.key)) {
        s_series_destroy (&series);
        return NULL;
    }
    /* A caller-given set that happens to be all "_other" still counts. */
    if (!other)
        metric->capped_count++;
    return series;
}

/* Reads the metric's label count of const char * from args. */
static void
s_collect (s_metric_t *metric, va_list args, const char **values)
{
    for (size_t i = 0; i < metric->label_count; i++)
        values[i] = va_arg (args, const char *);
}

/* ---- updates --------------------------------------------------------------- */

void
ppm_counter_inc_v (ppm_counter_t *counter, uint64_t by, const char *const *values)
{
    s_metric_t *metric = (s_metric_t *)counter;
    if (!metric)
        return;
    pthread_mutex_lock (&metric->registry->lock);
    s_series_t *series = s_series_get (metric, values, true);
    if (series)
        series->counter += by;
    pthread_mutex_unlock (&metric->registry->lock);
}

void
ppm_counter_inc (ppm_counter_t *counter, uint64_t by, ...)
{
    s_metric_t *metric = (s_metric_t *)counter;
    if (!metric)
        return;
    const char *values[PPM_METRICS_LABELS_MAX];
    va_list args;
    va_start (args, by);
    s_collect (metric, args, values);
    va_end (args);
    ppm_counter_inc_v (counter, by, values);
}

static void
s_gauge_update (s_metric_t *metric, double value, bool add, const char *const *values)
{
    if (!metric)
        return;
    pthread_mutex_lock (&metric->registry->lock);
    s_series_t *series = s_series_get (metric, values, true);
    if (series)
        series->gauge = add ? series->gauge + value : value;
    pthread_mutex_unlock (&metric->registry->lock);
}

void
ppm_gauge_set_v (ppm_gauge_t *gauge, double value, const char *const *values)
{
    s_gauge_update ((s_metric_t *)gauge, value, false, values);
}

void
ppm_gauge_add_v (ppm_gauge_t *gauge, double delta, const char *const *values)
{
    s_gauge_update ((s_metric_t *)gauge, delta, true, values);
}

void
ppm_gauge_set (ppm_gauge_t *gauge, double value, ...)
{
    s_metric_t *metric = (s_metric_t *)gauge;
    if (!metric)
        return;
    const char *values[PPM_METRICS_LABELS_MAX];
    va_list args;
    va_start (args, value);
    s_collect (metric, args, values);
    va_end (args);
    s_gauge_update (metric, value, false, values);
}

void
ppm_gauge_add (ppm_gauge_t *gauge, double delta, ...)
{
    s_metric_t *metric = (s_metric_t *)gauge;
    if (!metric)
        return;
    const char *values[PPM_METRICS_LABELS_MAX];
    va_list args;
    va_start (args, delta);
    s_collect (metric, args, values);
    va_end (args);
    s_gauge_update (metric, delta, true, values);
}

void
ppm_histogram_observe_v (ppm_histogram_t *histogram, double value, const char *const *values)
{
    s_metric_t *metric = (s_metric_t *)histogram;
    if (!metric || isnan (value))
        return;
    pthread_mutex_lock (&metric->registry->lock);
    s_series_t *series = s_series_get (metric, values, true);
    if (series) {
        for (size_t i = 0; i < metric->bound_count; i++) {
            if (value <= metric->bounds[i]) {
                series->buckets[i]++;
                break;
            }
        }
        series->sum += value;
        series->count++;
    }
    pthread_mutex_unlock (&metric->registry->lock);
}

void
ppm_histogram_observe (ppm_histogram_t *histogram, double value, ...)
{
    s_metric_t *metric = (s_metric_t *)histogram;
    if (!metric)
        return;
    const char *values[PPM_METRICS_LABELS_MAX];
    va_list args;
    va_start (args, value);
    s_collect (metric, args, values);
    va_end (args);
    ppm_histogram_observe_v (histogram, value, values);
}

uint64_t
ppm_counter_value (ppm_counter_t *counter, ...)
{
    s_metric_t *metric = (s_metric_t *)counter;
    if (!metric)
        return 0;
    const char *values[PPM_METRICS_LABELS_MAX];
    va_list args;
    va_start (args, counter);
    s_collect (metric, args, values);
    va_end (args);
    pthread_mutex_lock (&metric->registry->lock);
    s_series_t *series = s_series_get (metric, values, false);
    uint64_t value = series ? series->counter : 0;
    pthread_mutex_unlock (&metric->registry->lock);
    return value;
}

double
ppm_gauge_value (ppm_gauge_t *gauge, ...)
{
    s_metric_t *metric = (s_metric_t *)gauge;
    if (!metric)
        return 0;
    const char *values[PPM_METRICS_LABELS_MAX];
    va_list args;
    va_start (args, gauge);
    s_collect (metric, args, values);
    va_end (args);
    pthread_mutex_lock (&metric->registry->lock);
    s_series_t *series = s_series_get (metric, values, false);
    double value = series ? series->gauge : 0;
    pthread_mutex_unlock (&metric->registry->lock);
    return value;
}

uint64_t
ppm_histogram_count (ppm_histogram_t *histogram, ...)
{
    s_metric_t *metric = (s_metric_t *)histogram;
    if (!metric)
        return 0;
    const char *values[PPM_METRICS_LABELS_MAX];
    va_list args;
    va_start (args, histogram);
    s_collect (metric, args, values);
    va_end (args);
    pthread_mutex_lock (&metric->registry->lock);
    s_series_t *series = s_series_get (metric, values, false);
    uint64_t value = series ? series->count : 0;
    pthread_mutex_unlock (&metric->registry->lock);
    return value;
}

/* ---- rendering ------------------------------------------------------------- */

/* Shortest text that reads back as the same double; Prometheus spellings
   for infinities and NaN. */
static void
s_format_double (double value, char *buf, size_t size)
{
    if (isnan (value)) {
        snprintf (buf, size, "NaN");
        return;
    }
    if (isinf (value)) {
        snprintf (buf, size, value > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int precision = 15; precision <= 17; precision++) {
        snprintf (buf, size, "%.*g", precision, value);
        if (strtod (buf, NULL) == value)
            return;
    }
}

/* Writes text escaped for a label value (\\, \", \n) or a help line
   (\\, \n). */
static void
s_write_escaped (FILE *out, const char *text, bool quote)
{
    for (const char *p = text; *p; p++) {
        if (*p == '\\')
            fputs ("\\\\", out);
        else if (*p == '\n')
            fputs ("\\n", out);
        else if (quote && *p == '"')
            fputs ("\\\"", out);
        else
            fputc (*p, out);
    }
}

/* Writes {a="x",b="y"[,le="…"]}, or nothing when there are no labels. */
static void
s_write_labels (FILE *out, const s_metric_t *metric, const s_series_t *series, const char *le)
{
    if (metric->label_count == 0 && !le)
        return;
    fputc ('{', out);
    for (size_t i = 0; i < metric->label_count; i++) {
        fprintf (out, "%s%s=\"", i ? "," : "", metric->label_names[i]);
        s_write_escaped (out, series->values[i], true);
        fputc ('"', out);
    }
    if (le)
        fprintf (out, "%sle=\"%s\"", metric->label_count ? "," : "", le);
    fputc ('}', out);
}

static void
s_render_metric (FILE *out, const s_metric_t *metric)
{
    fprintf (out, "# HELP %s ", metric->name);
    s_write_escaped (out, metric->help, false);
    fprintf (out, "\n# TYPE %s %s\n", metric->name, s_type_names[metric->type]);
    /* A metric without labels always shows its one series. */
    s_series_t empty = {0};
    uint64_t empty_buckets[PPM_METRICS_BUCKETS_MAX] = {0};
    empty.buckets = empty_buckets;
    size_t count = metric->series_count;
    bool show_empty = metric->label_count == 0 && count == 0;
    char number[64];
    for (size_t i = 0; i < count || show_empty; i++) {
        const s_series_t *series = show_empty ? &empty : metric->series[i];
        show_empty = false;
        switch (metric->type) {
            case S_COUNTER:
                fputs (metric->name, out);
                s_write_labels (out, metric, series, NULL);
                fprintf (out, " %" PRIu64 "\n", series->counter);
                break;
            case S_GAUGE:
                fputs (metric->name, out);
                s_write_labels (out, metric, series, NULL);
                s_format_double (series->gauge, number, sizeof number);
                fprintf (out, " %s\n", number);
                break;
            case S_HISTOGRAM: {
                uint64_t cumulative = 0;
                for (size_t b = 0; b < metric->bound_count; b++) {
                    cumulative += series->buckets[b];
                    s_format_double (metric->bounds[b], number, sizeof number);
                    fprintf (out, "%s_bucket", metric->name);
                    s_write_labels (out, metric, series, number);
                    fprintf (out, " %" PRIu64 "\n", cumulative);
                }
                fprintf (out, "%s_bucket", metric->name);
                s_write_labels (out, metric, series, "+Inf");
                fprintf (out, " %" PRIu64 "\n", series->count);
                s_format_double (series->sum, number, sizeof number);
                fprintf (out, "%s_sum", metric->name);
                s_write_labels (out, metric, series, NULL);
                fprintf (out, " %s\n", number);
                fprintf (out, "%s_count", metric->name);
                s_write_labels (out, metric, series, NULL);
                fprintf (out, " %" PRIu64 "\n", series->count);
                break;
            }
        }
    }
}

/* Reads a small /proc file into buf; 0 or -1. */
static int
s_read_proc (const char *path, char *buf, size_t size)
{
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    size_t n = fread (buf, 1, size - 1, file);
    fclose (file);
    buf[n] = '\0';
    return n > 0 ? 0 : -1;
}

static void
s_render_process (FILE *out)
{
    char buf[4096];
    long page = sysconf (_SC_PAGESIZE);
    unsigned long long size_pages = 0;
    unsigned long long rss_pages = 0;
    if (s_read_proc ("/proc/self/statm", buf, sizeof buf) == 0 &&
        sscanf (buf, "%llu %llu", &size_pages, &rss_pages) == 2) {
        fprintf (out,
                 "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                 "# TYPE process_resident_memory_bytes gauge\n"
                 "process_resident_memory_bytes %llu\n",
                 rss_pages * (unsigned long long)page);
    }
    DIR *dir = opendir ("/proc/self/fd");
    if (dir) {
        long fds = 0;
        struct dirent *entry;
        while ((entry = readdir (dir)) != NULL)
            if (entry->d_name[0] != '.')
                fds++;
        closedir (dir);
        /* Not counting the descriptor opendir itself held. */
        fprintf (out,
                 "# HELP process_open_fds Number of open file descriptors.\n"
                 "# TYPE process_open_fds gauge\n"
                 "process_open_fds %ld\n",
                 fds > 0 ? fds - 1 : 0);
    }
    /* Start time: boot time (btime in /proc/stat) + field 22 of
       /proc/self/stat (clock ticks after boot). The command name (field 2)
       may hold spaces and parentheses: fields are counted after the last ')'. */
    unsigned long long btime = 0;
    if (s_read_proc ("/proc/stat", buf, sizeof buf) == 0) {
        const char *line = strstr (buf, "\nbtime ");
        if (line)
            btime = strtoull (line + 7, NULL, 10);
    }
    char stat[1024];
    if (btime && s_read_proc ("/proc/self/stat", stat, sizeof stat) == 0) {
        const char *p = strrchr (stat, ')');
        int field = 2;
        while (p && field < 22) {
            p = strchr (p + 1, ' ');
            field++;
        }
        if (p) {
            unsigned long long ticks = strtoull (p + 1, NULL, 10);
            long hz = sysconf (_SC_CLK_TCK);
            double start = (double)btime + (double)ticks / (double)(hz > 0 ? hz : 100);
            char number[64];
            s_format_double (start, number, sizeof number);
            fprintf (out,
                     "# HELP process_start_time_seconds Start time of the process since unix "
                     "epoch in seconds.\n"
                     "# TYPE process_start_time_seconds gauge\n"
                     "process_start_time_seconds %s\n",
                     number);
        }
    }
}

char *
ppm_metrics_render (ppm_metrics_t *self)
{
    if (!self)
        return NULL;
    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream (&text, &size);
    if (!out)
        return NULL;
    pthread_mutex_lock (&self->lock);
    for (size_t i = 0; i < self->metric_count; i++)
        s_render_metric (out, self->metrics[i]);
    bool process = self->process;
    pthread_mutex_unlock (&self->lock);
    if (process)
        s_render_process (out);
    if (fclose (out) != 0) {
        free (text);
        return NULL;
    }
    return text;
}

/* ---- HTTP listener ----------------------------------------------------------- */

struct _ppm_metrics_server_t {
    ppm_metrics_t *registry;     /* borrowed */
    struct MHD_Daemon *daemon;   /* libmicrohttpd, own thread */
    int port;                    /* bound port */
    ppm_metrics_ready_fn *ready; /* may be NULL */
    void *ready_arg;             /* for ready */
    atomic_bool ready_flag;      /* used when ready is NULL */
};

static enum MHD_Result
s_queue (struct MHD_Connection *conn, unsigned status, const char *type, char *body, bool owned)
{
    struct MHD_Response *response = MHD_create_response_from_buffer (
        strlen (body), body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!response) {
        if (owned)
            free (body);
        return MHD_NO;
    }
    MHD_add_response_header (response, "Content-Type", type);
    MHD_add_response_header (response, "Cache-Control", "no-store");
    enum MHD_Result rc = MHD_queue_response (conn, status, response);
    MHD_destroy_response (response);
    return rc;
}

static enum MHD_Result
s_handle (void *cls, struct MHD_Connection *conn, const char *url, const char *method,
          const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)con_cls;
    ppm_metrics_server_t *self = cls;
    static const char *text = "text/plain; charset=utf-8";
    /* Any request body is ignored; the answer does not depend on it. */
    *upload_data_size = 0;
    if (strcmp (method, "GET") != 0 && strcmp (method, "HEAD") != 0)
        return s_queue (conn, MHD_HTTP_METHOD_NOT_ALLOWED, text, "method not allowed\n", false);
    if (strcmp (url, "/metrics") == 0) {
        char *body = ppm_metrics_render (self->registry);
        if (!body)
            return s_queue (conn, MHD_HTTP_INTERNAL_SERVER_ERROR, text, "out of memory\n", false);
        return s_queue (conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, true);
    }
    if (strcmp (url, "/healthz") == 0)
        return s_queue (conn, MHD_HTTP_OK, text, "ok\n", false);
    if (strcmp (url, "/readyz") == 0) {
        bool ready = self->ready ? self->ready (self->ready_arg) : atomic_load (&self->ready_flag);
        if (ready)
            return s_queue (conn, MHD_HTTP_OK, text, "ready\n", false);
        return s_queue (conn, MHD_HTTP_SERVICE_UNAVAILABLE, text, "not ready\n", false);
    }
    return s_queue (conn, MHD_HTTP_NOT_FOUND, text, "not found\n", false);
}

/* Parses "host:port" / "[v6]:port" into addr; 0 or -1. */
static int
s_parse_address (const char *address, struct sockaddr_storage *addr, bool *ipv6)
{
    if (!address)
        return -1;
    const char *colon = strrchr (address, ':');
    if (!colon || colon == address)
        return -1;
    char host[64];
    size_t host_len = (size_t)(colon - address);
    if (address[0] == '[') {
        if (host_len < 3 || address[host_len - 1] != ']')
            return -1;
        address++;
        host_len -= 2;
    }
    if (host_len >= sizeof host)
        return -1;
    memcpy (host, address, host_len);
    host[host_len] = '\0';
    const char *port_text = colon + 1;
    char *end = NULL;
    errno = 0;
    long port = strtol (port_text, &end, 10);
    if (!*port_text || *end || errno || port < 0 || port > 65535 || port_text[0] == '-' ||
        port_text[0] == '+' || port_text[0] == ' ')
        return -1;
    memset (addr, 0, sizeof *addr);
    if (strcmp (host, "localhost") == 0)
        snprintf (host, sizeof host, "127.0.0.1");
    struct sockaddr_in *v4 = (struct sockaddr_in *)addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)addr;
    if (inet_pton (AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons ((uint16_t)port);
        *ipv6 = false;
        return 0;
    }
    if (inet_pton (AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons ((uint16_t)port);
        *ipv6 = true;
        return 0;
    }
    return -1;
}

ppm_metrics_server_t *
ppm_metrics_server_new (ppm_metrics_t *registry, const char *address, ppm_metrics_ready_fn *ready,
                        void *ready_arg)
{
    struct sockaddr_storage addr;
    bool ipv6 = false;
    if (!registry || s_parse_address (address, &addr, &ipv6)) {
        ppm_log_kv (PPM_LOG_ERROR, "metrics: invalid listen address (want host:port)", "address",
                    address, PPM_LOG_END);
        return NULL;
    }
    ppm_metrics_server_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->registry = registry;
    self->ready = ready;
    self->ready_arg = ready_arg;
    atomic_init (&self->ready_flag, false);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
    if (ipv6)
        flags |= MHD_USE_IPv6;
    self->daemon =
        MHD_start_daemon (flags, 0, NULL, NULL, s_handle, self, MHD_OPTION_SOCK_ADDR,
                          (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!self->daemon) {
        ppm_log_kv (PPM_LOG_ERROR, "metrics: cannot listen", "address", address, "error",
                    strerror (errno), PPM_LOG_END);
        free (self);
        return NULL;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info (self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    self->port = info ? info->port : 0;
    return self;
}

void
ppm_metrics_server_destroy (ppm_metrics_server_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ppm_metrics_server_t *self = *self_p;
    MHD_stop_daemon (self->daemon);
    free (self);
    *self_p = NULL;
}

int
ppm_metrics_server_port (ppm_metrics_server_t *self)
{
    return self ? self->port : 0;
}

void
ppm_metrics_server_set_ready (ppm_metrics_server_t *self, bool ready)
{
    if (self)
        atomic_store (&self->ready_flag, ready);
}
