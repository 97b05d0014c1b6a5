/*  fuzz_env_money: libFuzzer harness for two text decoders of values that
    come from outside a service: ppm_env (common/ppm_env.c: PPM_* variables
    as ints, bools, durations and strings) and ppm_money_parse
    (common/ppm_money.c: an amount typed by an admin or a tool).

    The first input byte picks the currency, the rest (up to its first NUL)
    is the text. The text is set as PPM_FUZZ_VALUE and loaded through one
    table entry of each type, bounded and unbounded: a load succeeds with a
    value within its bounds, or fails with an error line naming the
    variable. It is then parsed as an amount in the chosen currency: an
    amount parses to a non-negative number that formats back to text which
    parses to the same number, and goes through the charge checks and step
    rounding without overflow or undefined behaviour.

    Build and run: `make fuzz`; corpus: corpus/fuzz_env_money/ (written by
    tests/fuzz/gen-seeds.sh). */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ppm_env.h"
#include "ppm_money.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define S_NAME "PPM_FUZZ_VALUE"

static void
s_env (const char *text)
{
    int64_t value = 0;
    bool flag = false;
    char *string = NULL;
    ppm_env_t tables[][2] = {
        {{.name = S_NAME, .type = PPM_ENV_INT, .min = 10, .max = 60000, .out = &value},
         {.name = NULL}},
        {{.name = S_NAME, .type = PPM_ENV_INT, .out = &value}, {.name = NULL}},
        {{.name = S_NAME, .type = PPM_ENV_BOOL, .out = &flag}, {.name = NULL}},
        {{.name = S_NAME, .type = PPM_ENV_DURATION, .min = 1, .max = 86400000, .out = &value},
         {.name = NULL}},
        {{.name = S_NAME, .type = PPM_ENV_DURATION, .out = &value}, {.name = NULL}},
        {{.name = S_NAME, .type = PPM_ENV_STRING, .secret = true, .out = &string}, {.name = NULL}},
    };
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        const char *error = NULL;
        value = INT64_MIN; /* stays so when the variable counts as unset */
        int rc = ppm_env_load (tables[i], &error);
        if (rc == 0) {
            ppm_env_t *e = &tables[i][0];
            if ((e->type == PPM_ENV_INT || e->type == PPM_ENV_DURATION) && (e->min || e->max) &&
                value != INT64_MIN)
                assert (value >= e->min && value <= e->max);
            if (e->type == PPM_ENV_STRING)
                assert (!*text || (string && strcmp (string, text) == 0));
        } else {
            assert (rc == -1 && error && strstr (error, S_NAME));
            /* a secret's value never appears in its error line */
            if (tables[i][0].secret && strlen (text) > 8)
                assert (!strstr (error, text));
        }
        ppm_env_free (tables[i]);
        string = NULL;
    }
}

static void
s_money (const ppm_currency_t *currency, const char *text)
{
    int64_t amount = -1;
    ppm_money_err_t err = ppm_money_parse (currency, text, &amount);
    assert (ppm_money_strerror (err) != NULL);
    if (err != PPM_MONEY_OK)
        return;
    assert (amount >= 0);
    char buf[64];
    assert (ppm_money_format (currency, amount, buf, sizeof buf) == 0);
    int64_t again = -1;
    assert (ppm_money_parse (currency, buf, &again) == PPM_MONEY_OK);
    assert (again == amount);
    (void)ppm_money_check_charge (currency, amount);
    (void)ppm_money_check_amount (currency, amount);
    int64_t out = 0;
    if (ppm_money_round_step (currency, amount, true, &out) == PPM_MONEY_OK)
        assert (out >= amount && out % currency->step == 0);
    assert (ppm_money_round_step (currency, amount, false, &out) == PPM_MONEY_OK);
    assert (out <= amount && out % currency->step == 0);
    int64_t total = 0;
    if (ppm_money_total (amount, 60, &total) == PPM_MONEY_OK) {
        int64_t used = 0;
        assert (ppm_money_for_usage (amount, 59999, true, &used) == PPM_MONEY_OK);
        assert (used <= amount);
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    /* One static "NAME=value" string handed to putenv: setenv would keep
       every old value for the life of the process (glibc never frees
       them), and the harness would grow by the size of each input. */
    static char entry[sizeof S_NAME + 8192] = S_NAME "=";
    char *text = entry + sizeof S_NAME;
    size_t len = size - 1;
    if (len > sizeof entry - sizeof S_NAME - 1)
        len = sizeof entry - sizeof S_NAME - 1;
    memcpy (text, data + 1, len);
    text[len] = '\0';
    /* the environment stops at the first NUL; so do both decoders */
    putenv (entry);
    s_env (text);
    unsetenv (S_NAME);
    s_money (ppm_currency_at (data[0] % ppm_currency_count ()), text);
    return 0;
}
