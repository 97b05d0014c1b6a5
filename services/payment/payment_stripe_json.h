/*  payment_stripe_json: reads Stripe's JSON replies and events into plain
    structs, refusing anything malformed.

    Stripe's answers are outside input: they are parsed with jansson under a
    size cap (PAYMENT_STRIPE_JSON_MAX bytes) and a depth cap, and every field
    we use is type-checked and length-checked into a fixed-size buffer, so
    the rest of the service never touches a json_t nor guesses a string's
    lifetime. A field that is absent or null reads as empty / zero; a field
    of the wrong type, a string longer than its buffer, or a negative amount
    is an error naming the field. Pure functions, no I/O: the fuzz harness
    tests/fuzz/fuzz_stripe_json.c drives payment_stripe_json_fuzz_one.
*/
#ifndef PAYMENT_STRIPE_JSON_H_INCLUDED
#define PAYMENT_STRIPE_JSON_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PAYMENT_STRIPE_JSON_MAX   (1024 * 1024) /* largest reply we parse */
#define PAYMENT_STRIPE_JSON_DEPTH 32            /* deepest nesting we accept */
#define PAYMENT_STRIPE_ID_MAX     256           /* ids: "pi_…", "evt_…" (+ NUL) */
#define PAYMENT_STRIPE_SHORT_MAX  64            /* statuses, codes, currencies */
#define PAYMENT_STRIPE_TEXT_MAX   512           /* messages, URLs, secrets */

/* Parses text (not NUL-terminated) of size bytes into an object. Returns
   the root (caller frees with json_decref) or NULL with a reason in error. */
json_t *payment_stripe_json_parse (const char *text, size_t size, char *error, size_t error_size);

/* {"error": {...}} */
typedef struct {
    char type[PAYMENT_STRIPE_SHORT_MAX];         /* card_error, invalid_request_error, … */
    char code[PAYMENT_STRIPE_SHORT_MAX];         /* card_declined, amount_too_small, … */
    char decline_code[PAYMENT_STRIPE_SHORT_MAX]; /* generic_decline, insufficient_funds */
    char message[PAYMENT_STRIPE_TEXT_MAX];
    char param[PAYMENT_STRIPE_SHORT_MAX];
    char payment_intent[PAYMENT_STRIPE_ID_MAX]; /* id of error.payment_intent, if any */
    char payment_intent_status[PAYMENT_STRIPE_SHORT_MAX];
} payment_stripe_error_t;

/* The metadata keys we set on every object we create. */
typedef struct {
    char tenant[PAYMENT_STRIPE_SHORT_MAX];
    char session[PAYMENT_STRIPE_ID_MAX];
    char payment[PAYMENT_STRIPE_SHORT_MAX];
} payment_stripe_meta_t;

typedef struct {
    char id[PAYMENT_STRIPE_ID_MAX];
    char status[PAYMENT_STRIPE_SHORT_MAX];
    char currency[PAYMENT_STRIPE_SHORT_MAX]; /* as Stripe sends it: lower case */
    char capture_method[PAYMENT_STRIPE_SHORT_MAX];
    char client_secret[PAYMENT_STRIPE_TEXT_MAX];
    char customer[PAYMENT_STRIPE_ID_MAX];
    char latest_charge[PAYMENT_STRIPE_ID_MAX];
    int64_t amount;
    int64_t amount_capturable;
    int64_t amount_received;
    bool livemode;
    payment_stripe_meta_t meta;
    payment_stripe_error_t last_error; /* last_payment_error, when present */
} payment_stripe_pi_t;

typedef struct {
    char id[PAYMENT_STRIPE_ID_MAX];
    char status[PAYMENT_STRIPE_SHORT_MAX];         /* open, complete, expired */
    char payment_status[PAYMENT_STRIPE_SHORT_MAX]; /* paid, unpaid */
    char payment_intent[PAYMENT_STRIPE_ID_MAX];
    char url[PAYMENT_STRIPE_TEXT_MAX];
    char client_reference_id[PAYMENT_STRIPE_ID_MAX];
    char currency[PAYMENT_STRIPE_SHORT_MAX];
    int64_t amount_total;
    payment_stripe_meta_t meta;
} payment_stripe_checkout_t;

/* Customer, Refund, Charge and Dispute share one small shape. */
typedef struct {
    char id[PAYMENT_STRIPE_ID_MAX];
    char object[PAYMENT_STRIPE_SHORT_MAX];
    char status[PAYMENT_STRIPE_SHORT_MAX];
    char payment_intent[PAYMENT_STRIPE_ID_MAX];
    char charge[PAYMENT_STRIPE_ID_MAX];
    char reason[PAYMENT_STRIPE_SHORT_MAX];
    char currency[PAYMENT_STRIPE_SHORT_MAX];
    int64_t amount;
    int64_t amount_refunded;
    bool refunded;
    payment_stripe_meta_t meta;
} payment_stripe_object_t;

typedef struct {
    char id[PAYMENT_STRIPE_ID_MAX]; /* evt_… */
    char type[PAYMENT_STRIPE_SHORT_MAX];
    char object_type[PAYMENT_STRIPE_SHORT_MAX]; /* data.object.object */
    int64_t created;
    bool livemode;
    const json_t *object; /* data.object, borrowed from the root given */
} payment_stripe_event_t;

/* Each returns 0, or -1 with a reason naming the field in error. */
int payment_stripe_error_read (const json_t *root, payment_stripe_error_t *out, char *error,
                               size_t error_size);
int payment_stripe_pi_read (const json_t *object, payment_stripe_pi_t *out, char *error,
                            size_t error_size);
int payment_stripe_checkout_read (const json_t *object, payment_stripe_checkout_t *out, char *error,
                                  size_t error_size);
int payment_stripe_object_read (const json_t *object, payment_stripe_object_t *out, char *error,
                                size_t error_size);
int payment_stripe_event_read (const json_t *root, payment_stripe_event_t *out, char *error,
                               size_t error_size);

/* Parses size bytes as any of the above (fuzzing entry point). Returns 0
   when something was read, -1 otherwise; never crashes, never leaks. */
int payment_stripe_json_fuzz_one (const uint8_t *data, size_t size);

#endif
