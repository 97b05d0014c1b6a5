/*  ppm_metrics: Prometheus metrics for every ppm service, and the small
    HTTP listener that serves them with the health endpoints.

    A registry holds counters, gauges and histograms, each registered once
    with a name, a help line and its label names; registration returns a
    handle that the hot path uses without any lookup by name. Every call is
    thread-safe (one mutex per registry), so an actor, libmicrohttpd's
    threads and a worker may update the same metric. Names follow
    docs/METRICS.md.

        ppm_metrics_t *reg = ppm_metrics_global ();
        ppm_counter_t *requests = ppm_metrics_counter (reg,
            "ppm_rpc_server_requests_total", "RPC requests answered", "method,code");
        ppm_histogram_t *duration = ppm_metrics_histogram (reg,
            "ppm_rpc_server_duration_seconds", "Time to reply", "method", NULL, 0);
        ppm_gauge_t *active = ppm_metrics_gauge (reg, "ppm_sessions_active",
            "Sessions active or paused", NULL);

        ppm_counter_inc (requests, 1, "rate.Quote", "OK");
        ppm_histogram_observe (duration, 0.0042, "rate.Quote");
        ppm_gauge_set (active, 17);

    Label values are passed after the value, exactly as many as the metric
    has label names, in the same order (const char *; NULL counts as "").
    They are made valid UTF-8 and cut to 128 bytes, and escaped when
    rendered. Cardinality is capped: each metric holds at most the
    registry's cap of label sets (default 1000, docs/METRICS.md); a new set
    beyond it is counted in the set whose every label value is "_other".
    A series appears in the output once it has been touched: a metric
    without labels from its registration, a labelled one from its first
    update (`ppm_counter_inc (c, 0, …)` makes a series show 0).

    Rendering is the Prometheus text exposition format 0.0.4: "# HELP" and
    "# TYPE" per metric in registration order, series in first-use order,
    counters named with "_total" (appended when the registered name lacks
    it), histograms as "_bucket{le=…}" (cumulative, ending "+Inf"), "_sum"
    and "_count". The process metrics process_resident_memory_bytes,
    process_open_fds and process_start_time_seconds are appended unless
    turned off.

    Handles are owned by the registry and live until it is destroyed.
    Registering the same name again with the same type and labels returns
    the existing handle (several actors in one process may each register);
    a clash (another type or other labels) or an invalid name returns NULL
    and logs an error. Every update on a NULL handle does nothing.

    The listener (ppm_metrics_server_t) runs libmicrohttpd on its own
    thread and answers GET/HEAD:
      /metrics  200 with the rendered registry
      /healthz  200 "ok" (the process is up and serving)
      /readyz   200 "ready" when ready, 503 "not ready" otherwise
      other     404; other methods 405
    Readiness is a flag the service sets (ppm_metrics_server_set_ready,
    safe from any thread), or, when a callback is given, the callback's
    answer: it runs on the listener's thread and must be thread-safe (read
    an atomic the actor maintains; never touch the actor's state).
*/
#ifndef PPM_METRICS_H_INCLUDED
#define PPM_METRICS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PPM_METRICS_CAP_DEFAULT 1000 /* label sets per metric */
#define PPM_METRICS_LABELS_MAX  8    /* label names per metric */
#define PPM_METRICS_VALUE_MAX   128  /* bytes of a label value kept */
#define PPM_METRICS_BUCKETS_MAX 32   /* histogram buckets (without +Inf) */
#define PPM_METRICS_OTHER       "_other"

typedef struct _ppm_metrics_t ppm_metrics_t;
typedef struct _ppm_counter_t ppm_counter_t;
typedef struct _ppm_gauge_t ppm_gauge_t;
typedef struct _ppm_histogram_t ppm_histogram_t;
typedef struct _ppm_metrics_server_t ppm_metrics_server_t;

/* ---- registry ----------------------------------------------------------- */

/* A new, empty registry (process metrics on, cap 1000). */
ppm_metrics_t *ppm_metrics_new (void);
/* Destroys the registry and every handle it gave. Safe on NULL and twice. */
void ppm_metrics_destroy (ppm_metrics_t **self_p);
/* The process-wide registry that services and libppm (ppm_rpc, ppm_events)
   share; created at first use, never destroyed. */
ppm_metrics_t *ppm_metrics_global (void);
/* Label sets per metric before "_other" (≥ 1); applies to new sets. */
void ppm_metrics_set_cap (ppm_metrics_t *self, size_t cap);
/* Whether render appends the process_* metrics (default true). */
void ppm_metrics_set_process (ppm_metrics_t *self, bool enabled);

/* labels: comma-separated label names ("method,code"), or NULL/"" for none.
   Names: [a-zA-Z_:][a-zA-Z0-9_:]*; labels [a-zA-Z_][a-zA-Z0-9_]*, not
   starting "__", and not "le" on a histogram. */
ppm_counter_t *ppm_metrics_counter (ppm_metrics_t *self, const char *name, const char *help,
                                    const char *labels);
ppm_gauge_t *ppm_metrics_gauge (ppm_metrics_t *self, const char *name, const char *help,
                                const char *labels);
/* buckets: upper bounds, strictly increasing, finite, at most
   PPM_METRICS_BUCKETS_MAX; NULL = the Prometheus defaults (0.005 … 10),
   which suit latencies in seconds. */
ppm_histogram_t *ppm_metrics_histogram (ppm_metrics_t *self, const char *name, const char *help,
                                        const char *labels, const double *buckets,
                                        size_t bucket_count);

/* Renders the registry (see above). Returns a string the caller frees, or
   NULL when out of memory. */
char *ppm_metrics_render (ppm_metrics_t *self);

/* ---- updates (variadic: one const char * per label, in order) ----------- */

void ppm_counter_inc (ppm_counter_t *counter, uint64_t by, ...);
void ppm_gauge_set (ppm_gauge_t *gauge, double value, ...);
void ppm_gauge_add (ppm_gauge_t *gauge, double delta, ...);
void ppm_histogram_observe (ppm_histogram_t *histogram, double value, ...);

/* The same with the label values in an array of the metric's label count. */
void ppm_counter_inc_v (ppm_counter_t *counter, uint64_t by, const char *const *values);
void ppm_gauge_set_v (ppm_gauge_t *gauge, double value, const char *const *values);
void ppm_gauge_add_v (ppm_gauge_t *gauge, double delta, const char *const *values);
void ppm_histogram_observe_v (ppm_histogram_t *histogram, double value, const char *const *values);

/* Current values, for tests: the series' value, or 0 when it does not
   exist. */
uint64_t ppm_counter_value (ppm_counter_t *counter, ...);
double ppm_gauge_value (ppm_gauge_t *gauge, ...);
uint64_t ppm_histogram_count (ppm_histogram_t *histogram, ...);

/* ---- HTTP listener ------------------------------------------------------ */

/* Readiness callback: true when ready. Runs on the listener's thread. */
typedef bool (ppm_metrics_ready_fn) (void *arg);

/* Listens on address "host:port" (IPv4 "127.0.0.1:9101", "0.0.0.0:9101",
   IPv6 "[::1]:9101"; port 0 = ephemeral) and serves registry (borrowed: it
   must outlive the server). ready may be NULL (then the flag decides,
   initially not ready). Returns NULL, with a logged reason, when the
   address is invalid or cannot be bound. */
ppm_metrics_server_t *ppm_metrics_server_new (ppm_metrics_t *registry, const char *address,
                                              ppm_metrics_ready_fn *ready, void *ready_arg);
/* Stops the listener (waits for its thread). Safe on NULL and twice. */
void ppm_metrics_server_destroy (ppm_metrics_server_t **self_p);
/* The bound TCP port (the real one when 0 was asked). */
int ppm_metrics_server_port (ppm_metrics_server_t *self);
/* Sets the readiness flag; safe from any thread. */
void ppm_metrics_server_set_ready (ppm_metrics_server_t *self, bool ready);

#endif
