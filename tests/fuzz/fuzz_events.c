/*  fuzz_events: libFuzzer harness for events as a subscriber reads them
    from its SUB socket (common/ppm_events.c).

    The check and unpack are static in ppm_events.c (s_sub_dispatch), so
    this harness includes ppm_events.c itself (as fuzz_rpc does ppm_rpc.c):
    the code fuzzed is the code every subscriber runs.

    Input: byte 0's low 7 bits are the topic frame's length n (clamped to
    what is there), bit 7 adds a third frame; then n bytes of topic, and
    the rest is the body frame (a packed ppm.v1.Envelope of kind EVENT).
    A delivered event has a name, and its topic is "<name>.<tenant>"; the
    callback unpacks the payload as the subscribers do, by event name:
    config.changed -> ConfigChanged, payment.* -> PaymentEvent, session.* ->
    SessionEvent.

    Build and run: `make fuzz`; corpus: corpus/fuzz_events/ (written by
    tests/fuzz/gen-seeds.sh). */
#include "common/ppm_events.c"

#include "proto/config.pb-c.h"
#include "proto/metering.pb-c.h"
#include "proto/payment.pb-c.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static ppm_events_sub_t *s_fuzz_sub;

static void
s_fuzz_event (const ppm_event_t *event, void *arg)
{
    (*(size_t *)arg)++;
    assert (event->name && *event->name && event->tenant_id && event->trace_id);
    const ProtobufCMessageDescriptor *d = NULL;
    if (strcmp (event->name, "config.changed") == 0)
        d = &ppm__v1__config_changed__descriptor;
    else if (strncmp (event->name, "payment.", 8) == 0)
        d = &ppm__v1__payment_event__descriptor;
    else if (strncmp (event->name, "session.", 8) == 0)
        d = &ppm__v1__session_event__descriptor;
    if (!d)
        return;
    ProtobufCMessage *msg = protobuf_c_message_unpack (d, NULL, event->size, event->payload);
    if (msg)
        protobuf_c_message_free_unpacked (msg, NULL);
}

static void
s_fuzz_fini (void)
{
    ppm_events_sub_destroy (&s_fuzz_sub);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!s_fuzz_sub) {
        ppm_log_set_level (PPM_LOG_ERROR);
        s_fuzz_sub = ppm_events_sub_new ("inproc://fuzz-events");
        assert (s_fuzz_sub);
        atexit (s_fuzz_fini);
    }
    size_t n = data[0] & 0x7f;
    if (n > size - 1)
        n = size - 1;
    zmsg_t *msg = zmsg_new ();
    assert (msg);
    zmsg_addmem (msg, data + 1, n);
    zmsg_addmem (msg, data + 1 + n, size - 1 - n);
    if (data[0] & 0x80)
        zmsg_addstr (msg, "extra");
    size_t calls = 0;
    int delivered = s_sub_dispatch (s_fuzz_sub, &msg, s_fuzz_event, &calls);
    assert (msg == NULL);
    assert ((size_t)delivered == calls);
    return 0;
}
