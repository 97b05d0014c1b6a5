/*  Unit tests of ppm_form: encoding (WHATWG urlencoded, bracketed keys),
    strict decoding with caps, and reading nested keys and arrays. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ppm_form.h"

static void
test_encode (void **state)
{
    (void)state;
    ppm_form_t *form = ppm_form_new ();
    assert_int_equal (ppm_form_add_int (form, "amount", 1250), PPM_FORM_OK);
    assert_int_equal (ppm_form_add (form, "currency", "usd"), PPM_FORM_OK);
    assert_int_equal (ppm_form_add (form, "metadata[session_id]", "s 1&x=y"), PPM_FORM_OK);
    assert_int_equal (ppm_form_add_path (form, "250", "line_items", "0", "price_data",
                                         "unit_amount", PPM_FORM_END),
                      PPM_FORM_OK);
    assert_int_equal (ppm_form_add (form, "description", "caf\xc3\xa9 50%+~*-._"), PPM_FORM_OK);
    assert_int_equal (ppm_form_add (form, "expand[]", "latest_charge"), PPM_FORM_OK);
    assert_int_equal (ppm_form_add (form, "", "x"), PPM_FORM_EMPTY_KEY);
    ppm_form_err_t err;
    char *body = ppm_form_encode (form, &err);
    assert_int_equal (err, PPM_FORM_OK);
    assert_string_equal (body, "amount=1250&currency=usd&metadata%5Bsession_id%5D=s+1%26x%3Dy"
                               "&line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D=250"
                               "&description=caf%C3%A9+50%25%2B%7E*-._&expand%5B%5D=latest_charge");
    /* and back */
    ppm_form_t *back = NULL;
    assert_int_equal (ppm_form_decode (body, strlen (body), &back, NULL), PPM_FORM_OK);
    assert_int_equal (ppm_form_size (back), 6);
    assert_string_equal (ppm_form_get (back, "metadata[session_id]"), "s 1&x=y");
    assert_string_equal (ppm_form_get (back, "line_items[0][price_data][unit_amount]"), "250");
    assert_string_equal (ppm_form_get (back, "description"), "caf\xc3\xa9 50%+~*-._");
    assert_string_equal (ppm_form_key (back, 0), "amount");
    assert_string_equal (ppm_form_value (back, 1), "usd");
    assert_null (ppm_form_key (back, 6));
    free (body);
    ppm_form_destroy (&back);
    ppm_form_destroy (&form);
    ppm_form_destroy (&form);
    assert_null (form);

    /* an empty form encodes to "" */
    form = ppm_form_new ();
    body = ppm_form_encode (form, NULL);
    assert_string_equal (body, "");
    free (body);
    ppm_form_destroy (&form);
}

static ppm_form_err_t
s_decode (const char *text, ppm_form_t **form, size_t *offset)
{
    return ppm_form_decode (text, strlen (text), form, offset);
}

static void
test_decode_strict (void **state)
{
    (void)state;
    ppm_form_t *form = NULL;
    size_t offset = 99;
    assert_int_equal (s_decode ("", &form, NULL), PPM_FORM_OK);
    assert_int_equal (ppm_form_size (form), 0);
    ppm_form_destroy (&form);
    assert_int_equal (s_decode ("a=1&&b&c=&&", &form, NULL), PPM_FORM_OK);
    assert_int_equal (ppm_form_size (form), 3);
    assert_string_equal (ppm_form_get (form, "b"), "");
    assert_string_equal (ppm_form_get (form, "c"), "");
    ppm_form_destroy (&form);
    assert_int_equal (s_decode ("a=%4a%4A+%2b", &form, NULL), PPM_FORM_OK);
    assert_string_equal (ppm_form_get (form, "a"), "JJ +");
    ppm_form_destroy (&form);
    /* later values win, count sees all */
    assert_int_equal (s_decode ("k=1&k=2", &form, NULL), PPM_FORM_OK);
    assert_string_equal (ppm_form_get (form, "k"), "2");
    assert_int_equal (ppm_form_count (form, "k"), 2);
    assert_null (ppm_form_get (form, "missing"));
    ppm_form_destroy (&form);

    assert_int_equal (s_decode ("a=1&b=%zz", &form, &offset), PPM_FORM_BAD_ESCAPE);
    assert_null (form);
    assert_int_equal (offset, 6);
    assert_int_equal (s_decode ("a=%4", &form, &offset), PPM_FORM_BAD_ESCAPE);
    assert_int_equal (s_decode ("a=%", &form, &offset), PPM_FORM_BAD_ESCAPE);
    assert_int_equal (s_decode ("%g1=a", &form, &offset), PPM_FORM_BAD_ESCAPE);
    assert_int_equal (offset, 0);
    assert_int_equal (s_decode ("a=%00", &form, &offset), PPM_FORM_NUL_BYTE);
    assert_int_equal (ppm_form_decode ("a=b\0c", 5, &form, &offset), PPM_FORM_NUL_BYTE);
    assert_int_equal (offset, 3);
    assert_int_equal (s_decode ("=v", &form, &offset), PPM_FORM_EMPTY_KEY);
    assert_int_equal (s_decode ("a=1&=v", &form, &offset), PPM_FORM_EMPTY_KEY);
    assert_int_equal (offset, 4);
    assert_null (form);
    /* the size given is respected: no NUL terminator needed */
    assert_int_equal (ppm_form_decode ("a=12345", 4, &form, NULL), PPM_FORM_OK);
    assert_string_equal (ppm_form_get (form, "a"), "12");
    ppm_form_destroy (&form);
    assert_string_equal (ppm_form_strerror (PPM_FORM_BAD_ESCAPE), "malformed percent escape");
}

static void
test_caps (void **state)
{
    (void)state;
    ppm_form_t *form = NULL;
    /* body cap */
    size_t big = PPM_FORM_MAX_BODY + 1;
    char *text = malloc (big + 1);
    memset (text, 'a', big);
    text[big] = '\0';
    assert_int_equal (ppm_form_decode (text, big, &form, NULL), PPM_FORM_TOO_LARGE);
    /* key length cap: exactly the cap passes, one more fails */
    memset (text, 'k', PPM_FORM_MAX_KEY + 1);
    text[PPM_FORM_MAX_KEY] = '=';
    assert_int_equal (ppm_form_decode (text, PPM_FORM_MAX_KEY + 1, &form, NULL), PPM_FORM_OK);
    ppm_form_destroy (&form);
    memset (text, 'k', PPM_FORM_MAX_KEY + 2);
    text[PPM_FORM_MAX_KEY + 1] = '=';
    assert_int_equal (ppm_form_decode (text, PPM_FORM_MAX_KEY + 2, &form, NULL),
                      PPM_FORM_KEY_TOO_LONG);
    /* pair cap */
    size_t used = 0;
    for (int i = 0; i <= PPM_FORM_MAX_PAIRS; i++)
        used += (size_t)snprintf (text + used, big + 1 - used, "%sk%d=v", i ? "&" : "", i);
    assert_int_equal (ppm_form_decode (text, used, &form, NULL), PPM_FORM_TOO_MANY_PAIRS);
    assert_null (form);
    free (text);
    /* builder caps */
    form = ppm_form_new ();
    for (int i = 0; i < PPM_FORM_MAX_PAIRS; i++)
        assert_int_equal (ppm_form_add (form, "k", "v"), PPM_FORM_OK);
    assert_int_equal (ppm_form_add (form, "k", "v"), PPM_FORM_TOO_MANY_PAIRS);
    ppm_form_destroy (&form);
    form = ppm_form_new ();
    char *value = malloc (PPM_FORM_MAX_BODY);
    memset (value, 'x', PPM_FORM_MAX_BODY - 1);
    value[PPM_FORM_MAX_BODY - 1] = '\0';
    assert_int_equal (ppm_form_add (form, "v", value), PPM_FORM_OK);
    ppm_form_err_t err = PPM_FORM_OK;
    assert_null (ppm_form_encode (form, &err));
    assert_int_equal (err, PPM_FORM_TOO_LARGE);
    free (value);
    char long_key[PPM_FORM_MAX_KEY + 2];
    memset (long_key, 'k', sizeof long_key - 1);
    long_key[sizeof long_key - 1] = '\0';
    assert_int_equal (ppm_form_add (form, long_key, "v"), PPM_FORM_KEY_TOO_LONG);
    assert_int_equal (ppm_form_add_path (form, "v", "a", long_key, PPM_FORM_END),
                      PPM_FORM_KEY_TOO_LONG);
    ppm_form_destroy (&form);
}

static void
test_nested (void **state)
{
    (void)state;
    ppm_form_t *form = NULL;
    const char *body = "metadata%5Bsession_id%5D=s_1&metadata[tenant]=t&metadata[a][b]=x"
                       "&expand[1]=second&expand[]=first_by_brackets&expand[0]=zeroth"
                       "&expand[x]=bad&expandable=no&payment_intent_data[capture_method]=manual";
    assert_int_equal (ppm_form_decode (body, strlen (body), &form, NULL), PPM_FORM_OK);
    assert_string_equal (ppm_form_get (form, "metadata[session_id]"), "s_1");
    char child[64];
    assert_int_equal (ppm_form_child (form, 0, "metadata", child, sizeof child), 10);
    assert_string_equal (child, "session_id");
    assert_int_equal (ppm_form_child (form, 1, "metadata", child, sizeof child), 6);
    assert_string_equal (child, "tenant");
    assert_int_equal (ppm_form_child (form, 2, "metadata", child, sizeof child), -1);
    assert_int_equal (ppm_form_child (form, 1, "metadata", child, 3), -1);
    assert_int_equal (ppm_form_child (form, 1, "meta", child, sizeof child), -1);
    assert_true (ppm_form_has (form, "metadata"));
    assert_true (ppm_form_has (form, "payment_intent_data"));
    assert_false (ppm_form_has (form, "meta"));
    assert_true (ppm_form_has (form, "expandable"));
    /* [] first in order, then indexed by index; [x] is not an item */
    assert_int_equal (ppm_form_array_count (form, "expand"), 3);
    assert_string_equal (ppm_form_array_at (form, "expand", 0), "first_by_brackets");
    assert_string_equal (ppm_form_array_at (form, "expand", 1), "zeroth");
    assert_string_equal (ppm_form_array_at (form, "expand", 2), "second");
    assert_null (ppm_form_array_at (form, "expand", 3));
    assert_int_equal (ppm_form_array_count (form, "none"), 0);
    ppm_form_destroy (&form);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test (test_encode),
        cmocka_unit_test (test_decode_strict),
        cmocka_unit_test (test_caps),
        cmocka_unit_test (test_nested),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
