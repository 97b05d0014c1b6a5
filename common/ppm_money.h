/*  ppm_money: amounts in minor units and the currencies Stripe supports.

    Every amount in ppm is an int64_t count of the currency's minor unit
    (cents; yen; fils) — never a float. This module knows each currency's
    exponent (0 for JPY, 2 for USD, 3 for KWD), Stripe's special rules
    (ISK and UGX are sent ×100 and must be divisible by 100; the three-decimal
    BHD, JOD, KWD, OMR, TND must end in 0), and Stripe's minimum and maximum
    charge, and does overflow-checked arithmetic. Facts: ../shared/STRIPE.md.
*/
#ifndef PPM_MONEY_H_INCLUDED
#define PPM_MONEY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *code;   /* ISO 4217, upper case: "USD" */
    int exponent;       /* digits after the decimal point as Stripe counts them */
    int64_t min_charge; /* Stripe's minimum charge in minor units */
    int64_t max_charge; /* Stripe's maximum charge in minor units */
    int64_t step;       /* an amount must be a multiple of this (1, or 10/100) */
} ppm_currency_t;

/* Looks up a currency, case-insensitively; NULL when Stripe does not
   support it (as far as this table knows). */
const ppm_currency_t *ppm_currency_find (const char *code);
/* Number of currencies in the table and the i-th one (for UIs, tests). */
size_t ppm_currency_count (void);
const ppm_currency_t *ppm_currency_at (size_t index);

typedef enum {
    PPM_MONEY_OK = 0,
    PPM_MONEY_OVERFLOW,     /* the result does not fit in int64_t */
    PPM_MONEY_NEGATIVE,     /* an input that must be ≥ 0 is not */
    PPM_MONEY_TOO_SMALL,    /* below the currency's minimum charge */
    PPM_MONEY_TOO_LARGE,    /* above the currency's maximum charge */
    PPM_MONEY_BAD_STEP,     /* not a multiple of the currency's step */
    PPM_MONEY_BAD_CURRENCY, /* unknown currency */
    PPM_MONEY_BAD_FORMAT    /* text that is not an amount */
} ppm_money_err_t;

const char *ppm_money_strerror (ppm_money_err_t err);
/* Stripe's error code for a charge check: "amount_too_small", … */
const char *ppm_money_stripe_code (ppm_money_err_t err);

/* *out = a × b, both ≥ 0; OVERFLOW instead of wrapping. */
ppm_money_err_t ppm_money_mul (int64_t a, int64_t b, int64_t *out);
/* *out = a + b, both ≥ 0. */
ppm_money_err_t ppm_money_add (int64_t a, int64_t b, int64_t *out);
/* Total of minutes at rate_per_minute: exactly minutes × rate. */
ppm_money_err_t ppm_money_total (int64_t rate_per_minute, int64_t minutes, int64_t *out);

/* Whether amount may be charged in currency: minimum, maximum, step. */
ppm_money_err_t ppm_money_check_charge (const ppm_currency_t *currency, int64_t amount);
/* Whether amount is a valid per-minute rate: ≥ 0, ≤ maximum, step. */
ppm_money_err_t ppm_money_check_amount (const ppm_currency_t *currency, int64_t amount);

/* The amount for ms of use at rate_per_minute, rounded per the tenant's
   rule: per_second = true charges each started second, false each started
   minute. Never more than the whole minutes' total would be. */
ppm_money_err_t ppm_money_for_usage (int64_t rate_per_minute, int64_t used_ms, bool per_second,
                                     int64_t *out);

/* Rounds amount (≥ 0) to a multiple of the currency's step (ISK/UGX 100,
   three-decimal currencies 10, else 1): up (for a charge) or down (for a
   refund or a cap). OVERFLOW when rounding up leaves int64_t. */
ppm_money_err_t ppm_money_round_step (const ppm_currency_t *currency, int64_t amount, bool up,
                                      int64_t *out);

/* Formats for people: 1234 USD → "12.34", 1234 JPY → "1234", 1230 KWD →
   "1.230". Returns 0, or -1 when size is too small. */
int ppm_money_format (const ppm_currency_t *currency, int64_t amount, char *buf, size_t size);
/* Parses "12.34" (at most exponent decimals, no sign, no exponent) into
   minor units. */
ppm_money_err_t ppm_money_parse (const ppm_currency_t *currency, const char *text, int64_t *out);

#endif
