/*  payment_ledger: the payments ledger in PostgreSQL (schema "payment").

    Owns every durable fact of the payment service: payments and their state
    machine (each change a row in payment.transitions with time and cause),
    the consent the payer gave (terms URL, time, payer, session) written in
    the same transaction that creates the payment and so before Stripe is
    ever called, the payer → Stripe Customer mapping, every Stripe request
    id, captures, refunds, disputes, processed webhook events, settlements
    (once per session) and the outbox that funds metering.

    The state machine is enforced here (payment_ledger_apply refuses a move
    the graph does not allow and reports "unchanged"), which is what makes
    duplicate and out-of-order webhooks harmless. When a payment first
    reaches AUTHORIZED or SUCCEEDED, the same transaction writes its outbox
    row (metering.Fund), so funding is never lost nor written twice.

    BLOCKING: calls run on the service's loop thread through ppm_pg, each
    statement bounded by the connection's statement_timeout (short, on
    loopback). Times are ppm wall-clock ms (ppm_clock_now_ms).
*/
#ifndef PAYMENT_LEDGER_H_INCLUDED
#define PAYMENT_LEDGER_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include "ppm_pg.h"

typedef enum {
    PAYMENT_ST_NONE = 0,
    PAYMENT_ST_CREATED = 1,
    PAYMENT_ST_PENDING = 2,
    PAYMENT_ST_REQUIRES_ACTION = 3,
    PAYMENT_ST_AUTHORIZED = 4,
    PAYMENT_ST_SUCCEEDED = 5,
    PAYMENT_ST_FAILED = 6,
    PAYMENT_ST_CANCELED = 7,
    PAYMENT_ST_REFUNDED = 8
} payment_state_t; /* numbered as proto's PaymentState */

const char *payment_state_name (payment_state_t state);
payment_state_t payment_state_from_name (const char *name);
/* Whether the state machine allows from → to (to == from: only to update
   fields, allowed for every state but CANCELED). */
bool payment_state_allowed (payment_state_t from, payment_state_t to);

typedef struct {
    char payment_id[40];
    char tenant_id[80];
    char session_id[80];
    char payer[136];
    char payee[136];
    char mode[8];          /* "test" | "live" */
    char flow[16];         /* "payment_intent" | "hosted" */
    char billing_mode[12]; /* "prepaid" | "authorize" */
    char rounding[8];      /* "minute" | "second" */
    bool refund_unused;
    int64_t minutes;
    int64_t rate_per_minute;
    int64_t amount;
    char currency[8]; /* upper case */
    payment_state_t state;
    payment_state_t previous; /* after payment_ledger_apply: the state before */
    int seq;                  /* 1, 2, … within the session */
    int64_t captured;
    int64_t refunded;
    char customer[256];
    char payment_intent[256];
    char checkout_session[256];
    char client_secret[512];
    char checkout_url[1024];
    char success_url[1024];
    char cancel_url[1024];
    bool disputed;
    bool funded;
    int confirm_attempts;
    char failure_code[64];
    char failure_message[512];
    char terms_url[2056];
    int64_t terms_accepted_at_ms;
    int64_t created_at_ms;
    int64_t updated_at_ms;
    bool refused; /* metering refused to credit it (outbox outcome "refused…"): its money
                     goes back in full, it takes no part in the session's settlement */
} payment_row_t;

/* A change to apply with a state move. NULL / -1 fields are left alone. */
typedef struct {
    const char *cause;      /* "stripe.create", "webhook payment_intent.succeeded", … */
    const char *request_id; /* Stripe Request-Id, recorded with the transition */
    const char *event_id;   /* webhook event id */
    const char *payment_intent;
    const char *checkout_session;
    const char *client_secret;
    const char *checkout_url;
    const char *failure_code;
    const char *failure_message;
    int64_t captured; /* -1: unchanged */
    int64_t refunded; /* -1: unchanged; else the new total (only grows) */
    bool disputed;    /* true: mark disputed */
} payment_change_t;

#define PAYMENT_CHANGE_INIT                                                                        \
    {                                                                                              \
        .captured = -1, .refunded = -1                                                             \
    }

/* Creates or upgrades the schema. 0, or -1 with *error. */
int payment_ledger_migrate (ppm_pg_t *pg, const char **error);

/* A fresh payment id "pay_" + 24 hex characters. */
void payment_ledger_new_id (char out[40]);

/* Inserts row (state CREATED, seq assigned) and its consent record and
   first transition in one statement. row->payment_id must be set. When
   row->customer is empty it is filled from the payer's Customer of this
   mode (payment_ledger_customer_put), if there is one, in that statement. */
ppm_pg_result_t payment_ledger_create (ppm_pg_t *pg, payment_row_t *row);

/* Sets the Stripe customer of a CREATED payment. */
ppm_pg_result_t payment_ledger_set_customer (ppm_pg_t *pg, const char *tenant,
                                             const char *payment_id, const char *customer);
/* Increments confirm_attempts and returns the new count in *attempt. */
ppm_pg_result_t payment_ledger_next_confirm (ppm_pg_t *pg, const char *tenant,
                                             const char *payment_id, int *attempt);

/* Reads one payment of tenant. PPM_PG_OK and *found. */
ppm_pg_result_t payment_ledger_get (ppm_pg_t *pg, const char *tenant, const char *payment_id,
                                    payment_row_t *row, bool *found);
/* Finds by Stripe PaymentIntent or Checkout Session id (either may be
   NULL/empty). */
ppm_pg_result_t payment_ledger_find_stripe (ppm_pg_t *pg, const char *tenant,
                                            const char *payment_intent,
                                            const char *checkout_session, payment_row_t *row,
                                            bool *found);
/* The newest payment of (session, payer) awaiting payment (CREATED,
   PENDING, REQUIRES_ACTION or FAILED). */
ppm_pg_result_t payment_ledger_find_open (ppm_pg_t *pg, const char *tenant, const char *session_id,
                                          const char *payer, payment_row_t *row, bool *found);

/* Moves the payment to state `to` with change, when the state machine
   allows it from its current state, in one transaction: the transition
   row, the updated fields, and — the first time it reaches AUTHORIZED or
   SUCCEEDED — the outbox row that funds the session. *changed tells
   whether anything moved; *after (may be NULL) gets the row as it is
   after. An unknown payment is PPM_PG_OK with *changed = false and
   after->state = PAYMENT_ST_NONE. */
ppm_pg_result_t payment_ledger_apply (ppm_pg_t *pg, const char *tenant, const char *payment_id,
                                      payment_state_t to, const payment_change_t *change,
                                      bool *changed, payment_row_t *after);

/* Customers: our own payer → cus_ mapping per tenant and mode. */
ppm_pg_result_t payment_ledger_customer_get (ppm_pg_t *pg, const char *tenant, const char *payer,
                                             const char *mode, char *customer, size_t size,
                                             bool *found);
/* Stores the mapping unless one exists; *customer (size bytes) gets the
   mapping that won. */
ppm_pg_result_t payment_ledger_customer_put (ppm_pg_t *pg, const char *tenant, const char *payer,
                                             const char *mode, char *customer, size_t size);

/* Records one Stripe call (request id, status) for the audit trail. */
ppm_pg_result_t payment_ledger_stripe_call (ppm_pg_t *pg, const char *tenant,
                                            const char *payment_id, const char *what,
                                            const char *idempotency_key, int http_status,
                                            const char *request_id, bool replayed);

/* Captures, refunds and disputes, each keyed by Stripe's id (repeat: no-op). */
ppm_pg_result_t payment_ledger_capture (ppm_pg_t *pg, const char *tenant, const char *payment_id,
                                        int64_t amount, const char *request_id);
ppm_pg_result_t payment_ledger_refund (ppm_pg_t *pg, const char *tenant, const char *payment_id,
                                       const char *refund_id, int64_t amount, const char *status,
                                       const char *reason, const char *request_id);
ppm_pg_result_t payment_ledger_dispute (ppm_pg_t *pg, const char *tenant, const char *payment_id,
                                        const char *dispute_id, const char *charge,
                                        const char *reason, const char *status, int64_t amount,
                                        bool *is_new);

/* Webhook events: *seen is true when (tenant, event_id) was received
   before and was processed, or is being processed (received less than
   30 s ago); otherwise the event is recorded (unprocessed) and the caller
   processes it, then calls payment_ledger_event_done. */
ppm_pg_result_t payment_ledger_event_begin (ppm_pg_t *pg, const char *tenant, const char *event_id,
                                            const char *type, bool *seen);
ppm_pg_result_t payment_ledger_event_done (ppm_pg_t *pg, const char *tenant, const char *event_id,
                                           const char *outcome);

/* Payments of a session in seq order; *rows is malloc'd (caller frees). */
ppm_pg_result_t payment_ledger_session_payments (ppm_pg_t *pg, const char *tenant,
                                                 const char *session_id, payment_row_t **rows,
                                                 size_t *count);

/* Settlement of a session: begin records used_ms once (a later call keeps
   the first) and tells whether it was already done (then *charged, … hold
   its result). */
typedef struct {
    int64_t used_ms;
    bool done;
    int64_t charged;
    int64_t refunded;
    int64_t released;
    char currency[8];
} payment_settlement_t;

ppm_pg_result_t payment_ledger_settle_begin (ppm_pg_t *pg, const char *tenant,
                                             const char *session_id, int64_t used_ms,
                                             const char *reason, payment_settlement_t *out);
ppm_pg_result_t payment_ledger_settle_done (ppm_pg_t *pg, const char *tenant,
                                            const char *session_id,
                                            const payment_settlement_t *result);

/* Outbox: up to max undelivered rows due now. */
typedef struct {
    int64_t id;
    char tenant_id[80];
    char payment_id[40];
    char session_id[80];
    int64_t minutes;
    int64_t amount;
    char currency[8];
    int attempts;
} payment_outbox_t;

ppm_pg_result_t payment_ledger_outbox_due (ppm_pg_t *pg, int64_t now_ms, payment_outbox_t *rows,
                                           size_t max, size_t *count);
ppm_pg_result_t payment_ledger_outbox_delivered (ppm_pg_t *pg, int64_t id, const char *outcome);
ppm_pg_result_t payment_ledger_outbox_retry (ppm_pg_t *pg, int64_t id, int64_t next_ms,
                                             const char *error);
/* Undelivered outbox rows (tests, metrics). */
ppm_pg_result_t payment_ledger_outbox_pending (ppm_pg_t *pg, int64_t *count);

/* Payments to reconcile: CREATED, PENDING, REQUIRES_ACTION or FAILED (a
   declined card may be followed by one that went through while its
   answer was lost), last changed before before_ms; tenant NULL/"" for
   every tenant. At most 500, oldest first. */
ppm_pg_result_t payment_ledger_unresolved (ppm_pg_t *pg, const char *tenant, int64_t before_ms,
                                           payment_row_t **rows, size_t *count);

/* Payments metering refused (outbox outcome "refused…": the session ended
   before they were credited) whose money is not back yet: still
   AUTHORIZED, or captured and not refunded in full; last changed before
   before_ms; tenant NULL/"" for every tenant. At most 500, oldest first. */
ppm_pg_result_t payment_ledger_unreturned (ppm_pg_t *pg, const char *tenant, int64_t before_ms,
                                           payment_row_t **rows, size_t *count);

/* Listing, newest first; cursor is "<created_at_ms>:<payment_id>" or "". */
typedef struct {
    const char *session_id;
    const char *payee;
    const char *payer;
    int64_t from_ms;
    int64_t to_ms;
} payment_filter_t;

ppm_pg_result_t payment_ledger_list (ppm_pg_t *pg, const char *tenant,
                                     const payment_filter_t *filter, const char *cursor, int limit,
                                     payment_row_t **rows, size_t *count, char *next_cursor,
                                     size_t next_size);

typedef struct {
    char currency[8];
    int64_t minutes_bought;
    int64_t amount_paid;
    int64_t charged;
    int64_t refunded;
    int64_t payments;
    bool settled;
    int64_t used_ms;
} payment_totals_t;

ppm_pg_result_t payment_ledger_session_totals (ppm_pg_t *pg, const char *tenant,
                                               const char *session_id, payment_totals_t *out);

typedef struct {
    char payee[136];
    char currency[8];
    int64_t payments;
    int64_t minutes;
    int64_t charged;
    int64_t refunded;
} payment_earnings_t;

/* Per payee and currency; *rows malloc'd (caller frees). */
ppm_pg_result_t payment_ledger_earnings (ppm_pg_t *pg, const char *tenant, const char *payee,
                                         int64_t from_ms, int64_t to_ms, payment_earnings_t **rows,
                                         size_t *count);

/* Counts payments in a state (tests, metrics); tenant may be NULL. */
ppm_pg_result_t payment_ledger_count_state (ppm_pg_t *pg, const char *tenant, payment_state_t state,
                                            int64_t *count);

#endif
