/*  ppm_money: see ppm_money.h.

    The currency table is Stripe's list of presentment currencies with the
    rules of ../shared/STRIPE.md:
      - exponent 2 unless listed otherwise;
      - zero-decimal (exponent 0): BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF
        VND VUV XAF XOF XPF;
      - ISK and UGX: sent ×100 (exponent 2), step 100;
      - three-decimal BHD JOD KWD OMR TND: exponent 3, step 10 ("the last
        digit must be 0");
      - minimum charges as STRIPE.md lists them (USD 0.50 → 50, JPY 50 → 50,
        HUF 175.00 → 17500, …);
      - maximum 99999999 minor units for every currency (STRIPE.md: "8
        digits for most currencies"; it names no exception).
    Currencies without a listed minimum: Stripe's rule is "the equivalent of
    USD 0.50", which depends on the day's exchange rate and is not knowable
    offline. We use the smallest positive amount that respects the step
    (1, or 10 / 100), which never refuses a charge Stripe would accept; a
    charge Stripe then finds too small comes back as amount_too_small and
    is reported as such.

    Arithmetic uses __builtin_*_overflow; every function reports overflow
    instead of wrapping.
*/
#include "ppm_money.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define PPM_MONEY_MAX 99999999LL /* Stripe's 8-digit maximum */

/* code, exponent, minimum, maximum, step. A minimum of 0 means "none
   listed" and becomes the step (see above). */
#define S_MIN(min, step) ((min) > 0 ? (min) : (step))
#define C2(code, min)                                                                              \
    {                                                                                              \
        code, 2, S_MIN (min, 1), PPM_MONEY_MAX, 1                                                  \
    }
#define C0(code, min)                                                                              \
    {                                                                                              \
        code, 0, S_MIN (min, 1), PPM_MONEY_MAX, 1                                                  \
    }
#define C3(code, min)                                                                              \
    {                                                                                              \
        code, 3, S_MIN (min, 10), PPM_MONEY_MAX, 10                                                \
    }
#define C2H(code, min)                                                                             \
    {                                                                                              \
        code, 2, S_MIN (min, 100), PPM_MONEY_MAX, 100                                              \
    }

/* Sorted by code (for humans; lookup is linear: the table is small). */
static const ppm_currency_t s_currencies[] = {
    C2 ("AED", 200),  C2 ("AFN", 0),   C2 ("ALL", 0),     C2 ("AMD", 0),    C2 ("ANG", 0),
    C2 ("AOA", 0),    C2 ("ARS", 0),   C2 ("AUD", 50),    C2 ("AWG", 0),    C2 ("AZN", 0),
    C2 ("BAM", 0),    C2 ("BBD", 0),   C2 ("BDT", 0),     C2 ("BGN", 100),  C3 ("BHD", 0),
    C0 ("BIF", 0),    C2 ("BMD", 0),   C2 ("BND", 0),     C2 ("BOB", 0),    C2 ("BRL", 50),
    C2 ("BSD", 0),    C2 ("BWP", 0),   C2 ("BYN", 0),     C2 ("BZD", 0),    C2 ("CAD", 50),
    C2 ("CDF", 0),    C2 ("CHF", 50),  C0 ("CLP", 0),     C2 ("CNY", 0),    C2 ("COP", 0),
    C2 ("CRC", 0),    C2 ("CVE", 0),   C2 ("CZK", 1500),  C0 ("DJF", 0),    C2 ("DKK", 250),
    C2 ("DOP", 0),    C2 ("DZD", 0),   C2 ("EGP", 0),     C2 ("ETB", 0),    C2 ("EUR", 50),
    C2 ("FJD", 0),    C2 ("FKP", 0),   C2 ("GBP", 30),    C2 ("GEL", 0),    C2 ("GIP", 0),
    C2 ("GMD", 0),    C0 ("GNF", 0),   C2 ("GTQ", 0),     C2 ("GYD", 0),    C2 ("HKD", 400),
    C2 ("HNL", 0),    C2 ("HTG", 0),   C2 ("HUF", 17500), C2 ("IDR", 0),    C2 ("ILS", 0),
    C2 ("INR", 50),   C2H ("ISK", 0),  C2 ("JMD", 0),     C3 ("JOD", 0),    C0 ("JPY", 50),
    C2 ("KES", 0),    C2 ("KGS", 0),   C2 ("KHR", 0),     C0 ("KMF", 0),    C0 ("KRW", 0),
    C3 ("KWD", 0),    C2 ("KYD", 0),   C2 ("KZT", 0),     C2 ("LAK", 0),    C2 ("LBP", 0),
    C2 ("LKR", 0),    C2 ("LRD", 0),   C2 ("LSL", 0),     C2 ("MAD", 0),    C2 ("MDL", 0),
    C0 ("MGA", 0),    C2 ("MKD", 0),   C2 ("MMK", 0),     C2 ("MNT", 0),    C2 ("MOP", 0),
    C2 ("MUR", 0),    C2 ("MVR", 0),   C2 ("MWK", 0),     C2 ("MXN", 1000), C2 ("MYR", 200),
    C2 ("MZN", 0),    C2 ("NAD", 0),   C2 ("NGN", 0),     C2 ("NIO", 0),    C2 ("NOK", 300),
    C2 ("NPR", 0),    C2 ("NZD", 50),  C3 ("OMR", 0),     C2 ("PAB", 0),    C2 ("PEN", 0),
    C2 ("PGK", 0),    C2 ("PHP", 0),   C2 ("PKR", 0),     C2 ("PLN", 200),  C0 ("PYG", 0),
    C2 ("QAR", 0),    C2 ("RON", 200), C2 ("RSD", 0),     C2 ("RUB", 0),    C0 ("RWF", 0),
    C2 ("SAR", 0),    C2 ("SBD", 0),   C2 ("SCR", 0),     C2 ("SEK", 300),  C2 ("SGD", 50),
    C2 ("SHP", 0),    C2 ("SLE", 0),   C2 ("SOS", 0),     C2 ("SRD", 0),    C2 ("SZL", 0),
    C2 ("THB", 1000), C2 ("TJS", 0),   C3 ("TND", 0),     C2 ("TOP", 0),    C2 ("TRY", 0),
    C2 ("TTD", 0),    C2 ("TWD", 0),   C2 ("TZS", 0),     C2 ("UAH", 0),    C2H ("UGX", 0),
    C2 ("USD", 50),   C2 ("UYU", 0),   C2 ("UZS", 0),     C0 ("VND", 0),    C0 ("VUV", 0),
    C2 ("WST", 0),    C0 ("XAF", 0),   C2 ("XCD", 0),     C0 ("XOF", 0),    C0 ("XPF", 0),
    C2 ("YER", 0),    C2 ("ZAR", 0),   C2 ("ZMW", 0),
};

#define S_COUNT (sizeof s_currencies / sizeof s_currencies[0])

const ppm_currency_t *
ppm_currency_find (const char *code)
{
    if (!code || strlen (code) != 3)
        return NULL;
    for (size_t i = 0; i < S_COUNT; i++)
        if (strcasecmp (s_currencies[i].code, code) == 0)
            return &s_currencies[i];
    return NULL;
}

size_t
ppm_currency_count (void)
{
    return S_COUNT;
}

const ppm_currency_t *
ppm_currency_at (size_t index)
{
    return index < S_COUNT ? &s_currencies[index] : NULL;
}

const char *
ppm_money_strerror (ppm_money_err_t err)
{
    switch (err) {
        case PPM_MONEY_OK:
            return "ok";
        case PPM_MONEY_OVERFLOW:
            return "amount too large to compute";
        case PPM_MONEY_NEGATIVE:
            return "amount must not be negative";
        case PPM_MONEY_TOO_SMALL:
            return "amount is below the currency's minimum charge";
        case PPM_MONEY_TOO_LARGE:
            return "amount is above the currency's maximum charge";
        case PPM_MONEY_BAD_STEP:
            return "amount is not a multiple of the currency's smallest step";
        case PPM_MONEY_BAD_CURRENCY:
            return "unknown currency";
        case PPM_MONEY_BAD_FORMAT:
            return "not an amount";
    }
    return "unknown error";
}

const char *
ppm_money_stripe_code (ppm_money_err_t err)
{
    switch (err) {
        case PPM_MONEY_OK:
            return NULL;
        case PPM_MONEY_TOO_SMALL:
            return "amount_too_small";
        case PPM_MONEY_TOO_LARGE:
        case PPM_MONEY_OVERFLOW:
            return "amount_too_large";
        case PPM_MONEY_BAD_CURRENCY:
            return "invalid_currency";
        default:
            return "invalid_charge_amount";
    }
}

ppm_money_err_t
ppm_money_mul (int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0)
        return PPM_MONEY_NEGATIVE;
    int64_t result;
    if (__builtin_mul_overflow (a, b, &result))
        return PPM_MONEY_OVERFLOW;
    *out = result;
    return PPM_MONEY_OK;
}

ppm_money_err_t
ppm_money_add (int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0)
        return PPM_MONEY_NEGATIVE;
    int64_t result;
    if (__builtin_add_overflow (a, b, &result))
        return PPM_MONEY_OVERFLOW;
    *out = result;
    return PPM_MONEY_OK;
}

ppm_money_err_t
ppm_money_total (int64_t rate_per_minute, int64_t minutes, int64_t *out)
{
    return ppm_money_mul (rate_per_minute, minutes, out);
}

ppm_money_err_t
ppm_money_check_charge (const ppm_currency_t *currency, int64_t amount)
{
    if (!currency)
        return PPM_MONEY_BAD_CURRENCY;
    if (amount < 0)
        return PPM_MONEY_NEGATIVE;
    if (amount < currency->min_charge)
        return PPM_MONEY_TOO_SMALL;
    if (amount > currency->max_charge)
        return PPM_MONEY_TOO_LARGE;
    if (amount % currency->step != 0)
        return PPM_MONEY_BAD_STEP;
    return PPM_MONEY_OK;
}

ppm_money_err_t
ppm_money_check_amount (const ppm_currency_t *currency, int64_t amount)
{
    if (!currency)
        return PPM_MONEY_BAD_CURRENCY;
    if (amount < 0)
        return PPM_MONEY_NEGATIVE;
    if (amount > currency->max_charge)
        return PPM_MONEY_TOO_LARGE;
    if (amount % currency->step != 0)
        return PPM_MONEY_BAD_STEP;
    return PPM_MONEY_OK;
}

ppm_money_err_t
ppm_money_for_usage (int64_t rate_per_minute, int64_t used_ms, bool per_second, int64_t *out)
{
    if (rate_per_minute < 0 || used_ms < 0)
        return PPM_MONEY_NEGATIVE;
    /* Started minutes: the ceiling, and the cap of any rounding. */
    int64_t minutes = used_ms / 60000 + (used_ms % 60000 != 0);
    int64_t cap;
    if (__builtin_mul_overflow (minutes, rate_per_minute, &cap))
        return PPM_MONEY_OVERFLOW;
    if (!per_second) {
        *out = cap;
        return PPM_MONEY_OK;
    }
    /* Started seconds s; amount = ceil (s × rate / 60), computed as
       whole minutes × rate + ceil (rest × rate / 60) so that it overflows
       only when the result itself would. */
    int64_t seconds = used_ms / 1000 + (used_ms % 1000 != 0);
    int64_t whole = seconds / 60;
    int64_t rest = seconds % 60;
    int64_t amount;
    if (__builtin_mul_overflow (whole, rate_per_minute, &amount))
        return PPM_MONEY_OVERFLOW;
    /* rest × rate / 60 = rest × (rate / 60) + rest × (rate % 60) / 60 */
    int64_t part_whole;
    if (__builtin_mul_overflow (rest, rate_per_minute / 60, &part_whole))
        return PPM_MONEY_OVERFLOW;
    int64_t part_rest = rest * (rate_per_minute % 60); /* < 3600 */
    int64_t part = part_whole + part_rest / 60 + (part_rest % 60 != 0);
    if (__builtin_add_overflow (amount, part, &amount))
        return PPM_MONEY_OVERFLOW;
    *out = amount < cap ? amount : cap;
    return PPM_MONEY_OK;
}

ppm_money_err_t
ppm_money_round_step (const ppm_currency_t *currency, int64_t amount, bool up, int64_t *out)
{
    if (!currency)
        return PPM_MONEY_BAD_CURRENCY;
    if (amount < 0)
        return PPM_MONEY_NEGATIVE;
    int64_t rest = amount % currency->step;
    int64_t result = amount - rest;
    if (up && rest != 0 && __builtin_add_overflow (result, currency->step, &result))
        return PPM_MONEY_OVERFLOW;
    *out = result;
    return PPM_MONEY_OK;
}

int
ppm_money_format (const ppm_currency_t *currency, int64_t amount, char *buf, size_t size)
{
    if (!currency || !buf || size == 0)
        return -1;
    const char *sign = amount < 0 ? "-" : "";
    /* The magnitude as unsigned: INT64_MIN has no positive int64_t. */
    uint64_t magnitude = amount < 0 ? (uint64_t)0 - (uint64_t)amount : (uint64_t)amount;
    int n;
    if (currency->exponent == 0)
        n = snprintf (buf, size, "%s%" PRIu64, sign, magnitude);
    else {
        uint64_t divisor = 1;
        for (int i = 0; i < currency->exponent; i++)
            divisor *= 10;
        n = snprintf (buf, size, "%s%" PRIu64 ".%0*" PRIu64, sign, magnitude / divisor,
                      currency->exponent, magnitude % divisor);
    }
    if (n < 0 || (size_t)n >= size) {
        buf[0] = '\0';
        return -1;
    }
    return 0;
}

ppm_money_err_t
ppm_money_parse (const ppm_currency_t *currency, const char *text, int64_t *out)
{
    if (!currency)
        return PPM_MONEY_BAD_CURRENCY;
    if (!text || !isdigit ((unsigned char)text[0]))
        return text && text[0] == '-' ? PPM_MONEY_NEGATIVE : PPM_MONEY_BAD_FORMAT;
    int64_t value = 0;
    const char *p = text;
    while (isdigit ((unsigned char)*p)) {
        if (__builtin_mul_overflow (value, 10, &value) ||
            __builtin_add_overflow (value, *p - '0', &value))
            return PPM_MONEY_OVERFLOW;
        p++;
    }
    int decimals = 0;
    if (*p == '.') {
        p++;
        if (currency->exponent == 0 || !isdigit ((unsigned char)*p))
            return PPM_MONEY_BAD_FORMAT;
        while (isdigit ((unsigned char)*p)) {
            if (decimals == currency->exponent)
                return PPM_MONEY_BAD_FORMAT;
            if (__builtin_mul_overflow (value, 10, &value) ||
                __builtin_add_overflow (value, *p - '0', &value))
                return PPM_MONEY_OVERFLOW;
            decimals++;
            p++;
        }
    }
    if (*p != '\0')
        return PPM_MONEY_BAD_FORMAT;
    for (; decimals < currency->exponent; decimals++)
        if (__builtin_mul_overflow (value, 10, &value))
            return PPM_MONEY_OVERFLOW;
    *out = value;
    return PPM_MONEY_OK;
}
