/*  Unit tests of ppm_log: every line is valid JSON with the standard
    fields, the context is per thread, levels filter, secrets are masked in
    the message and in values, and lines from many threads never interleave.
    Lines are captured in a temporary file through ppm_log_set_fd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <pthread.h>
#include <jansson.h>
#include <cmocka.h>

#include "ppm_log.h"

#define STRIPE_KEY "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
#define JWT                                                                                        \
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."                            \
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"

static int s_fd = -1; /* capture file */

/* Starts capturing into a fresh temporary file. */
static void
s_capture (void)
{
    if (s_fd >= 0)
        close (s_fd);
    char path[] = "/tmp/ppm-log-test.XXXXXX";
    s_fd = mkstemp (path);
    assert_true (s_fd >= 0);
    unlink (path);
    ppm_log_set_fd (s_fd);
}

/* Everything captured so far (caller frees). */
static char *
s_captured (void)
{
    off_t size = lseek (s_fd, 0, SEEK_END);
    char *text = calloc (1, (size_t)size + 1);
    assert_non_null (text);
    assert_int_equal (pread (s_fd, text, (size_t)size, 0), size);
    return text;
}

/* Parses the n-th line (0-based) as JSON; fails the test if not valid. */
static json_t *
s_line (int n)
{
    char *text = s_captured ();
    char *line = text;
    for (int i = 0; i < n; i++) {
        line = strchr (line, '\n');
        assert_non_null (line);
        line++;
    }
    char *end = strchr (line, '\n');
    assert_non_null (end);
    *end = '\0';
    json_error_t error;
    json_t *json = json_loads (line, 0, &error);
    if (!json)
        fail_msg ("not JSON: %s (%s)", line, error.text);
    free (text);
    return json;
}

static int
s_line_count (void)
{
    char *text = s_captured ();
    int count = 0;
    for (char *p = text; *p; p++)
        count += *p == '\n';
    free (text);
    return count;
}

static const char *
s_get (json_t *line, const char *key)
{
    json_t *value = json_object_get (line, key);
    return json_is_string (value) ? json_string_value (value) : NULL;
}

static int
s_setup (void **state)
{
    (void)state;
    unsetenv ("PPM_LOG_LEVEL");
    ppm_log_init ("testsvc");
    ppm_log_context (NULL, NULL);
    s_capture ();
    return 0;
}

static void
test_json_fields (void **state)
{
    (void)state;
    ppm_log_context ("trace-1", "tenant-a");
    ppm_log_kv (PPM_LOG_INFO, "quote \"issued\"\nnext line", "payee", "u_1", "weird",
                "tab\there \x01 \xff\xfe bad utf8 é", "nothing", (const char *)NULL, PPM_LOG_END);
    json_t *line = s_line (0);
    const char *ts = s_get (line, "ts");
    assert_non_null (ts);
    /* 2026-11-25T10:00:00.123Z */
    assert_int_equal (strlen (ts), 24);
    assert_int_equal (ts[10], 'T');
    assert_int_equal (ts[23], 'Z');
    assert_string_equal (s_get (line, "level"), "info");
    assert_string_equal (s_get (line, "service"), "testsvc");
    assert_string_equal (s_get (line, "trace_id"), "trace-1");
    assert_string_equal (s_get (line, "tenant"), "tenant-a");
    assert_string_equal (s_get (line, "msg"), "quote \"issued\"\nnext line");
    assert_string_equal (s_get (line, "payee"), "u_1");
    assert_string_equal (s_get (line, "weird"), "tab\there \x01 ?? bad utf8 é");
    assert_true (json_is_null (json_object_get (line, "nothing")));
    /* Field order: ts, level, service first. */
    char *text = s_captured ();
    assert_int_equal (strncmp (text, "{\"ts\":", 6), 0);
    assert_non_null (strstr (text, "\"level\":\"info\",\"service\":\"testsvc\""));
    free (text);
    json_decref (line);

    /* Without context: no trace_id/tenant; reserved keys are not replaced. */
    ppm_log_context (NULL, NULL);
    assert_null (ppm_log_trace_id ());
    ppm_log_kv (PPM_LOG_ERROR, "boom", "msg", "not the message", "level", "x", PPM_LOG_END);
    line = s_line (1);
    assert_null (json_object_get (line, "trace_id"));
    assert_null (json_object_get (line, "tenant"));
    assert_string_equal (s_get (line, "msg"), "boom");
    assert_string_equal (s_get (line, "msg_"), "not the message");
    assert_string_equal (s_get (line, "level"), "error");
    assert_string_equal (s_get (line, "level_"), "x");
    json_decref (line);

    ppm_log_warn ("%d minutes left for %s", 3, "u_2");
    line = s_line (2);
    assert_string_equal (s_get (line, "level"), "warn");
    assert_string_equal (s_get (line, "msg"), "3 minutes left for u_2");
    json_decref (line);
}

static void
test_levels (void **state)
{
    (void)state;
    setenv ("PPM_LOG_LEVEL", "warn", 1);
    ppm_log_init ("testsvc");
    ppm_log_debug ("no");
    ppm_log_info ("no");
    ppm_log_warn ("yes");
    ppm_log_error ("yes");
    assert_int_equal (s_line_count (), 2);

    setenv ("PPM_LOG_LEVEL", "DEBUG", 1);
    ppm_log_init ("testsvc");
    ppm_log_debug ("yes");
    assert_int_equal (s_line_count (), 3);

    /* An invalid level says so and falls back to info. */
    setenv ("PPM_LOG_LEVEL", "loud", 1);
    ppm_log_init ("testsvc");
    assert_int_equal (s_line_count (), 4);
    json_t *line = s_line (3);
    assert_string_equal (s_get (line, "level"), "warn");
    assert_non_null (strstr (s_get (line, "msg"), "PPM_LOG_LEVEL"));
    assert_string_equal (s_get (line, "value"), "loud");
    json_decref (line);
    ppm_log_debug ("no");
    ppm_log_info ("yes");
    assert_int_equal (s_line_count (), 5);

    ppm_log_set_level (PPM_LOG_ERROR);
    ppm_log_warn ("no");
    assert_int_equal (s_line_count (), 5);
    unsetenv ("PPM_LOG_LEVEL");
}

typedef struct {
    int index;            /* thread number */
    char trace[32];       /* what it saw as its trace id after logging */
    const char *seen_ctx; /* ppm_log_trace_id () at start: must be NULL */
} s_worker_t;

static void *
s_context_worker (void *arg)
{
    s_worker_t *worker = arg;
    worker->seen_ctx = ppm_log_trace_id ();
    char trace[32];
    char tenant[32];
    snprintf (trace, sizeof trace, "trace-%d", worker->index);
    snprintf (tenant, sizeof tenant, "tenant-%d", worker->index);
    ppm_log_context (trace, tenant);
    for (int i = 0; i < 200; i++)
        ppm_log_kv (PPM_LOG_INFO, "tick", "worker", trace, "padding",
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                    PPM_LOG_END);
    snprintf (worker->trace, sizeof worker->trace, "%s", ppm_log_trace_id ());
    return NULL;
}

static void
test_context_per_thread_and_atomic_lines (void **state)
{
    (void)state;
    ppm_log_context ("main-trace", "main-tenant");
    enum { THREADS = 4 };
    pthread_t threads[THREADS];
    s_worker_t workers[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[i] = (s_worker_t){.index = i};
        assert_int_equal (pthread_create (&threads[i], NULL, s_context_worker, &workers[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal (pthread_join (threads[i], NULL), 0);
    /* The main thread's context is its own. */
    assert_string_equal (ppm_log_trace_id (), "main-trace");
    assert_string_equal (ppm_log_tenant_id (), "main-tenant");
    for (int i = 0; i < THREADS; i++) {
        assert_null (workers[i].seen_ctx);
        char expect[32];
        snprintf (expect, sizeof expect, "trace-%d", i);
        assert_string_equal (workers[i].trace, expect);
    }
    /* Every line is one whole JSON object whose context matches its own
       worker: nothing interleaved, nothing crossed over. */
    char *text = s_captured ();
    int lines = 0;
    char *save = NULL;
    for (char *line = strtok_r (text, "\n", &save); line; line = strtok_r (NULL, "\n", &save)) {
        json_t *json = json_loads (line, 0, NULL);
        assert_non_null (json);
        const char *trace = s_get (json, "trace_id");
        assert_non_null (trace);
        assert_string_equal (trace, s_get (json, "worker"));
        char tenant[32];
        snprintf (tenant, sizeof tenant, "tenant-%s", trace + 6);
        assert_string_equal (s_get (json, "tenant"), tenant);
        json_decref (json);
        lines++;
    }
    assert_int_equal (lines, THREADS * 200);
    free (text);
    ppm_log_context (NULL, NULL);
}

static void
test_secrets_redacted (void **state)
{
    (void)state;
    ppm_log_context ("t", "whsec_abcdefghijklmnopqrstuvwx");
    ppm_log_kv (PPM_LOG_INFO, "charging with " STRIPE_KEY " and rk_live_51HaBcDeFgHiJkLmNoPq9876",
                "auth", "Bearer " JWT, "webhook", "whsec_abcdefghijklmnopqrstuvwx", "admin",
                "key=ppmak_0123456789abcdef0123ZZZZ;", "jwt", JWT, "host", "api.stripe.com",
                "version", "1.2.3", PPM_LOG_END);
    char *text = s_captured ();
    assert_null (strstr (text, STRIPE_KEY));
    assert_null (strstr (text, "51HaBcDeFgHi"));
    assert_null (strstr (text, "abcdefghijkl"));
    assert_null (strstr (text, "0123456789abcdef"));
    assert_null (strstr (text, "eyJzdWIiOiIxMjM0NTY3ODkwIn0"));
    free (text);
    json_t *line = s_line (0);
    assert_string_equal (s_get (line, "msg"), "charging with sk_test_…p7dc and rk_live_…9876");
    assert_string_equal (s_get (line, "auth"), "Bearer …sR8U");
    assert_string_equal (s_get (line, "webhook"), "whsec_…uvwx");
    assert_string_equal (s_get (line, "tenant"), "whsec_…uvwx");
    assert_string_equal (s_get (line, "admin"), "key=ppmak_…ZZZZ;");
    assert_string_equal (s_get (line, "jwt"), "…sR8U");
    assert_string_equal (s_get (line, "host"), "api.stripe.com");
    assert_string_equal (s_get (line, "version"), "1.2.3");
    json_decref (line);

    /* printf-style messages too. */
    ppm_log_error ("stripe said no to %s", STRIPE_KEY);
    line = s_line (1);
    assert_string_equal (s_get (line, "msg"), "stripe said no to sk_test_…p7dc");
    json_decref (line);
    ppm_log_context (NULL, NULL);
}

static void
test_mask_and_redact (void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal (ppm_mask_secret (STRIPE_KEY, buf, sizeof buf), "sk_test_…p7dc");
    assert_string_equal (ppm_mask_secret ("whsec_short", buf, sizeof buf), "whsec_…");
    assert_string_equal (ppm_mask_secret ("abc", buf, sizeof buf), "…");
    assert_string_equal (ppm_mask_secret ("0123456789abcdef0123456789abcdef", buf, sizeof buf),
                         "…cdef");
    assert_string_equal (ppm_mask_secret (NULL, buf, sizeof buf), "…");
    /* Too small a buffer: what fits, never an overflow. */
    char tiny[5];
    assert_string_equal (ppm_mask_secret (STRIPE_KEY, tiny, sizeof tiny), "…");
    char none[2];
    assert_string_equal (ppm_mask_secret (STRIPE_KEY, none, sizeof none), "");

    char text[256];
    snprintf (text, sizeof text, "a %s b bearer  tok_abcdefghijklmn c sk_live_x d", STRIPE_KEY);
    assert_int_equal (ppm_redact (text), 2);
    /* sk_live_x is too short to be a key: left alone. */
    assert_string_equal (text, "a sk_test_…p7dc b bearer  …klmn c sk_live_x d");
    snprintf (text, sizeof text, "nothing secret here: v1.2.3 and a.b.c and " STRIPE_KEY "end");
    assert_int_equal (ppm_redact (text), 1);
    assert_non_null (strstr (text, "v1.2.3 and a.b.c"));
    assert_null (strstr (text, STRIPE_KEY));
    assert_int_equal (ppm_redact (NULL), 0);

    /* A bare 256-bit key in hex (a user-token secret, the master key) is
       masked as a word of its own; other lengths (trace ids, dumps) and
       hex inside a longer word are not. */
#define HEX64 "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF"
    snprintf (text, sizeof text, "secret " HEX64 ", key=" HEX64 ". trace %s x%s",
              "0123456789abcdef0123456789abcdef", HEX64);
    assert_int_equal (ppm_redact (text), 2);
    assert_string_equal (text,
                         "secret …EEFF, key=…EEFF. trace 0123456789abcdef0123456789abcdef x" HEX64);
    snprintf (text, sizeof text, "%s_tail and %.63s and %s0a", HEX64, HEX64, HEX64);
    assert_int_equal (ppm_redact (text), 0);
#undef HEX64
}

/* Random texts with planted secrets: the text never grows, no planted
   secret's body survives (beyond the last 4 characters), and redacting
   again changes nothing. */
static void
test_redact_property (void **state)
{
    (void)state;
    static const char *prefixes[] = {"sk_test_", "sk_live_", "rk_test_", "rk_live_",
                                     "whsec_",   "ppmak_",   "Bearer "};
    static const char *fillers[] = {" ", ".", "=", "\"", "a.b.c", "x", "é", ":", "\n", "1.2.3"};
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    unsigned seed = 12345;
    for (int round = 0; round < 2000; round++) {
        char text[1024] = "";
        char bodies[8][32];
        int planted = 0;
        size_t len = 0;
        while (len < 700) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = (seed >> 16) & 0x7fff;
            if (r % 3 == 0 && planted < 8) {
                const char *prefix = prefixes[r % 7];
                char *body = bodies[planted++];
                for (int i = 0; i < 24; i++) {
                    seed = seed * 1103515245u + 12345u;
                    body[i] = alnum[((seed >> 16) & 0x7fff) % 62];
                }
                body[24] = '\0';
                len += (size_t)snprintf (text + len, sizeof text - len, " %s%s ", prefix, body);
            } else
                len += (size_t)snprintf (text + len, sizeof text - len, "%s", fillers[r % 10]);
        }
        size_t before = strlen (text);
        int count = ppm_redact (text);
        assert_true (strlen (text) <= before);
        assert_true (count >= planted);
        for (int i = 0; i < planted; i++) {
            char head[21];
            memcpy (head, bodies[i], 20);
            head[20] = '\0';
            assert_null (strstr (text, head));
        }
        char again[1024];
        memcpy (again, text, strlen (text) + 1);
        assert_int_equal (ppm_redact (again), 0);
        assert_string_equal (again, text);
    }
}

static void
test_long_message_cut (void **state)
{
    (void)state;
    size_t size = 20000;
    char *big = malloc (size);
    memset (big, 'a', size - 1);
    big[size - 1] = '\0';
    ppm_log_info ("%s", big);
    ppm_log_kv (PPM_LOG_INFO, big, "v", big, PPM_LOG_END);
    json_t *line = s_line (0);
    size_t len = strlen (s_get (line, "msg"));
    assert_true (len < 4096 && len > 4000);
    json_decref (line);
    line = s_line (1);
    assert_true (strlen (s_get (line, "v")) < 1024);
    json_decref (line);
    free (big);
}

int
main (void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup (test_json_fields, s_setup),
        cmocka_unit_test_setup (test_levels, s_setup),
        cmocka_unit_test_setup (test_context_per_thread_and_atomic_lines, s_setup),
        cmocka_unit_test_setup (test_secrets_redacted, s_setup),
        cmocka_unit_test_setup (test_mask_and_redact, s_setup),
        cmocka_unit_test_setup (test_redact_property, s_setup),
        cmocka_unit_test_setup (test_long_message_cut, s_setup),
    };
    int rc = cmocka_run_group_tests (tests, NULL, NULL);
    if (s_fd >= 0)
        close (s_fd);
    return rc;
}
