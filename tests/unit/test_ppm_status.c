/*  Unit tests of ppm_status and ppm_clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "ppm_clock.h"
#include "ppm_status.h"

static void
test_status_fields_and_wire (void **state)
{
    (void)state;
    ppm_status_t *status = ppm_status_new (PPM_INVALID_ARGUMENT, "%d fields are invalid", 2);
    assert_int_equal (ppm_status_add_field (status, "currency", "unknown currency %s", "XXX"), 0);
    assert_int_equal (ppm_status_add_field (status, "preset_minutes[1]", "must be 1 to 600"), 0);

    Ppm__V1__Status *proto = ppm_status_to_proto (status);
    size_t size = ppm__v1__status__get_packed_size (proto);
    uint8_t *buf = malloc (size);
    ppm__v1__status__pack (proto, buf);
    Ppm__V1__Status *back = ppm__v1__status__unpack (NULL, size, buf);
    assert_non_null (back);
    ppm_status_t *copy = ppm_status_from_proto (back);
    ppm__v1__status__free_unpacked (back, NULL);
    free (buf);
    ppm_status_proto_free (&proto);
    assert_null (proto);

    assert_int_equal (ppm_status_code (copy), PPM_INVALID_ARGUMENT);
    assert_string_equal (ppm_status_message (copy), "2 fields are invalid");
    assert_int_equal (ppm_status_field_count (copy), 2);
    assert_string_equal (ppm_status_field_find (copy, "currency"), "unknown currency XXX");
    assert_string_equal (ppm_status_field_name (copy, 1), "preset_minutes[1]");
    assert_null (ppm_status_field_find (copy, "terms_url"));
    ppm_status_destroy (&copy);
    ppm_status_destroy (&status);
    ppm_status_destroy (&status);
    assert_null (status);
}

static void
test_status_caps (void **state)
{
    (void)state;
    ppm_status_t *status = ppm_status_new (PPM_INVALID_ARGUMENT, "x");
    for (int i = 0; i < PPM_STATUS_FIELD_MAX; i++)
        assert_int_equal (ppm_status_add_field (status, "f", "%d", i), 0);
    assert_int_equal (ppm_status_add_field (status, "f", "one too many"), -1);
    char long_text[2000];
    memset (long_text, 'a', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    ppm_status_t *long_status = ppm_status_new (PPM_INTERNAL, "%s", long_text);
    assert_int_equal (strlen (ppm_status_message (long_status)), PPM_STATUS_TEXT_MAX - 1);
    ppm_status_destroy (&long_status);
    ppm_status_destroy (&status);
}

static void
test_code_names (void **state)
{
    (void)state;
    assert_string_equal (ppm_code_name (PPM_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
    assert_string_equal (ppm_code_name ((ppm_code_t)99), "UNKNOWN");
    assert_int_equal (ppm_code_from_name ("ABORTED"), PPM_ABORTED);
    assert_int_equal (ppm_code_from_name ("aborted"), -1);
    assert_null (ppm_status_from_proto (NULL));
    assert_int_equal (ppm_status_code (NULL), PPM_OK);
}

static void
test_clock_scale (void **state)
{
    (void)state;
    setenv ("PPM_TIME_SCALE", "0", 1);
    const char *error = NULL;
    assert_int_equal (ppm_clock_init (&error), -1);
    assert_non_null (strstr (error, "PPM_TIME_SCALE"));
    setenv ("PPM_TIME_SCALE", "100", 1);
    assert_int_equal (ppm_clock_init (&error), 0);
    assert_int_equal (ppm_clock_scale (), 100);
    int64_t wall0 = ppm_clock_now_ms ();
    int64_t real0 = ppm_clock_real_ms ();
    struct timespec pause = {0, 50 * 1000000};
    nanosleep (&pause, NULL);
    int64_t scaled = ppm_clock_now_ms () - wall0;
    int64_t real = ppm_clock_real_ms () - real0;
    /* 50 real ms at ×100 is about 5 ppm seconds. */
    assert_true (scaled >= 4500);
    assert_true (scaled <= real * 100 + 200);
    assert_int_equal (ppm_clock_to_real_ms (1000), 10);
    assert_int_equal (ppm_clock_to_real_ms (1), 1);
    ppm_clock_set_scale (1);
    unsetenv ("PPM_TIME_SCALE");
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_status_fields_and_wire),
        cmocka_unit_test (test_status_caps),
        cmocka_unit_test (test_code_names),
        cmocka_unit_test (test_clock_scale),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
