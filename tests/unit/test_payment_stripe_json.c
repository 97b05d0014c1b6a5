/*  Unit tests of payment_stripe_json (the reader of Stripe's replies and
    events) and of payment_stripe's error mapping: what is read, what is
    refused and with which words, and that declines stay distinguishable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include "services/payment/payment_stripe.h"
#include "services/payment/payment_stripe_json.h"

static json_t *
s_parse (const char *text)
{
    char error[200];
    return payment_stripe_json_parse (text, strlen (text), error, sizeof error);
}

static void
test_reads_payment_intent (void **state)
{
    (void)state;
    json_t *root = s_parse ("{\"id\":\"pi_1\",\"object\":\"payment_intent\",\"status\":"
                            "\"requires_payment_method\",\"amount\":1500,\"currency\":\"usd\","
                            "\"customer\":{\"id\":\"cus_9\",\"object\":\"customer\"},"
                            "\"metadata\":{\"payment\":\"pay_1\",\"session\":\"s_1\"},"
                            "\"last_payment_error\":{\"type\":\"card_error\",\"code\":"
                            "\"card_declined\",\"decline_code\":\"insufficient_funds\","
                            "\"message\":\"Your card has insufficient funds.\"}}");
    assert_non_null (root);
    payment_stripe_pi_t pi;
    char error[200];
    assert_int_equal (payment_stripe_pi_read (root, &pi, error, sizeof error), 0);
    assert_string_equal (pi.id, "pi_1");
    assert_int_equal (pi.amount, 1500);
    assert_string_equal (pi.customer, "cus_9"); /* expanded object → its id */
    assert_string_equal (pi.meta.payment, "pay_1");
    assert_string_equal (pi.last_error.decline_code, "insufficient_funds");
    json_decref (root);
}

static void
test_refuses_malformed (void **state)
{
    (void)state;
    char error[200];
    /* wrong types, negative amounts, oversized strings are named errors */
    const char *bad[][2] = {
        {"{\"id\":\"pi_1\",\"object\":\"payment_intent\",\"status\":1}", "status"},
        {"{\"id\":\"pi_1\",\"object\":\"payment_intent\",\"status\":\"x\",\"amount\":-1}",
         "amount"},
        {"{\"id\":\"pi_1\",\"object\":\"payment_intent\",\"status\":\"x\",\"amount\":\"1\"}",
         "amount"},
        {"{\"id\":\"pi_1\",\"object\":\"refund\",\"status\":\"x\"}", "object"},
        {"{\"object\":\"payment_intent\",\"status\":\"x\"}", "id"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *root = s_parse (bad[i][0]);
        assert_non_null (root);
        payment_stripe_pi_t pi;
        assert_int_equal (payment_stripe_pi_read (root, &pi, error, sizeof error), -1);
        assert_non_null (strstr (error, bad[i][1]));
        json_decref (root);
    }
    char big[PAYMENT_STRIPE_ID_MAX + 64];
    memset (big, 'a', sizeof big);
    big[sizeof big - 1] = '\0';
    char text[sizeof big + 100];
    snprintf (text, sizeof text, "{\"id\":\"%s\",\"object\":\"payment_intent\",\"status\":\"x\"}",
              big);
    json_t *root = s_parse (text);
    payment_stripe_pi_t pi;
    assert_int_equal (payment_stripe_pi_read (root, &pi, error, sizeof error), -1);
    json_decref (root);
    /* not JSON, not an object, too deep, too big */
    assert_null (payment_stripe_json_parse ("{", 1, error, sizeof error));
    assert_null (payment_stripe_json_parse ("[1]", 3, error, sizeof error));
    char deep[256] = "";
    for (int i = 0; i < 40; i++)
        memcpy (deep + 5 * i, "{\"a\":", 6);
    assert_null (payment_stripe_json_parse (deep, strlen (deep), error, sizeof error));
    assert_null (
        payment_stripe_json_parse ("{}", PAYMENT_STRIPE_JSON_MAX + 1, error, sizeof error));
    assert_non_null (strstr (error, "cap"));
}

static void
test_reads_event_and_error (void **state)
{
    (void)state;
    json_t *root = s_parse ("{\"id\":\"evt_1\",\"object\":\"event\",\"type\":"
                            "\"charge.dispute.created\",\"created\":5,\"livemode\":false,"
                            "\"data\":{\"object\":{\"id\":\"dp_1\",\"object\":\"dispute\","
                            "\"payment_intent\":\"pi_1\",\"reason\":\"fraudulent\","
                            "\"amount\":700}}}");
    payment_stripe_event_t ev;
    char error[200];
    assert_int_equal (payment_stripe_event_read (root, &ev, error, sizeof error), 0);
    assert_string_equal (ev.type, "charge.dispute.created");
    assert_string_equal (ev.object_type, "dispute");
    payment_stripe_object_t dp;
    assert_int_equal (payment_stripe_object_read (ev.object, &dp, error, sizeof error), 0);
    assert_string_equal (dp.payment_intent, "pi_1");
    assert_int_equal (dp.amount, 700);
    json_decref (root);

    root = s_parse ("{\"error\":{\"type\":\"invalid_request_error\",\"code\":"
                    "\"amount_too_small\",\"param\":\"amount\",\"message\":\"too small\"}}");
    payment_stripe_error_t err;
    assert_int_equal (payment_stripe_error_read (root, &err, error, sizeof error), 0);
    assert_string_equal (err.code, "amount_too_small");
    assert_string_equal (err.param, "amount");
    json_decref (root);
}

static void
test_error_mapping (void **state)
{
    (void)state;
    assert_int_equal (payment_stripe_code (PAYMENT_STRIPE_DECLINED), PPM_FAILED_PRECONDITION);
    assert_int_equal (payment_stripe_code (PAYMENT_STRIPE_UNAVAILABLE), PPM_UNAVAILABLE);
    assert_int_equal (payment_stripe_code (PAYMENT_STRIPE_RATE_LIMITED), PPM_RESOURCE_EXHAUSTED);
    assert_true (payment_stripe_indeterminate (PAYMENT_STRIPE_NETWORK));
    assert_true (payment_stripe_indeterminate (PAYMENT_STRIPE_TIMEOUT));
    assert_false (payment_stripe_indeterminate (PAYMENT_STRIPE_DECLINED));
    assert_false (payment_stripe_indeterminate (PAYMENT_STRIPE_INVALID));
    assert_string_equal (payment_stripe_strerror (PAYMENT_STRIPE_DECLINED), "card declined");
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_reads_payment_intent),
        cmocka_unit_test (test_refuses_malformed),
        cmocka_unit_test (test_reads_event_and_error),
        cmocka_unit_test (test_error_mapping),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
