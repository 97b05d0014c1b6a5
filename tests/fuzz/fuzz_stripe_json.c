/*  libFuzzer harness for the payment service's reader of Stripe's JSON
    replies and events (services/payment/payment_stripe_json.c): the input
    is a reply body as Stripe (or anything posing as it) might send it. It
    is parsed under the size and depth caps and read as an error, a
    PaymentIntent, a Checkout Session, a small object and an event (and the
    event's data.object as each); nothing may crash, leak or read out of
    bounds, and every string read fits its buffer. Build and run:
    `make fuzz`; corpus: corpus/fuzz_stripe_json/. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "services/payment/payment_stripe_json.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    payment_stripe_json_fuzz_one (data, size);
    char error[128];
    json_t *root = payment_stripe_json_parse ((const char *)data, size, error, sizeof error);
    if (!root) {
        assert (strlen (error) > 0);
        return 0;
    }
    payment_stripe_pi_t pi;
    if (payment_stripe_pi_read (root, &pi, error, sizeof error) == 0) {
        assert (strlen (pi.id) > 0 && strlen (pi.id) < sizeof pi.id);
        assert (strlen (pi.status) > 0);
        assert (pi.amount >= 0 && pi.amount_received >= 0);
    }
    payment_stripe_event_t event;
    if (payment_stripe_event_read (root, &event, error, sizeof error) == 0)
        assert (event.object != NULL && strlen (event.type) > 0);
    json_decref (root);
    return 0;
}
