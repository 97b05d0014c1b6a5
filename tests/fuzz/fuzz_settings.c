/*  fuzz_settings: fuzz harness for the decoding and validation of a
    tenant's settings (config_settings), the outside input of
    config.PutSettings and of `ppmctl settings set FIELD=VALUE`.

    libFuzzer entry point LLVMFuzzerTestOneInput: the input is tried both
    as a packed ppm.v1.PutSettingsRequest (unpacked, secrets merged with a
    stored record, normalised, validated with and without rates, masked,
    diffed, rendered field by field) and as "FIELD=VALUE" lines applied with
    config_settings_set_text. Nothing may crash, leak or read out of
    bounds; a status must always name a field for INVALID_ARGUMENT.

    Built with -DPPM_FUZZ_STANDALONE it is a plain program:
        fuzz_settings FILE...            runs each file once
        fuzz_settings --write-seeds DIR  writes the seed corpus
    The seed corpus is tests/fuzz/corpus/fuzz_settings/.
*/
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "services/config/config_settings.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static void
s_noop_diff (const char *field, const char *a, const char *b, void *arg)
{
    (void)a;
    (void)b;
    (*(size_t *)arg) += strlen (field);
}

static void
s_check_status (ppm_status_t *status)
{
    if (status && ppm_status_code (status) == PPM_INVALID_ARGUMENT)
        assert (ppm_status_field_count (status) > 0);
    ppm_status_destroy (&status);
}

static void
s_exercise (Ppm__V1__Settings *next, char *const *clear, size_t clear_count)
{
    Ppm__V1__Settings defaults = PPM__V1__SETTINGS__INIT;
    config_settings_defaults (&defaults);
    Ppm__V1__Settings *current = config_settings_dup (&defaults);
    if (!current)
        return;
    const char *error = NULL;
    config_settings_set_text (current, "stripe_secret_key", "sk_test_abcdefghijklmnop4242", &error);
    config_settings_merge_secrets (next, current, clear, clear_count, NULL);
    config_settings_normalize (next);
    const char *plans[] = {"free", "pro", NULL};
    int64_t rates[] = {1, 99999999, 35};
    for (size_t p = 0; p < 3; p++) {
        config_settings_ctx_t ctx = {
            .plan = plans[p], .time_scaled = p == 1, .rates = rates, .rate_count = p == 1 ? 3 : 0};
        s_check_status (config_settings_validate (next, &ctx));
    }
    size_t changed = 0;
    config_settings_diff (current, next, s_noop_diff, &changed);
    const ProtobufCMessageDescriptor *d = &ppm__v1__settings__descriptor;
    char text[512];
    for (unsigned i = 0; i < d->n_fields; i++)
        config_settings_get_text (next, d->fields[i].name, text, sizeof text);
    config_settings_mask (next);
    config_settings_strip (next);
    config_settings_free (&current);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    /* 1. As a wire message. */
    Ppm__V1__PutSettingsRequest *req = ppm__v1__put_settings_request__unpack (NULL, size, data);
    if (req) {
        if (req->settings)
            s_exercise (req->settings, req->clear_secrets, req->n_clear_secrets);
        ppm__v1__put_settings_request__free_unpacked (req, NULL);
    }
    /* 2. As FIELD=VALUE lines (ppmctl settings set). */
    char *copy = malloc (size + 1);
    if (!copy)
        return 0;
    memcpy (copy, data, size);
    copy[size] = '\0';
    Ppm__V1__Settings defaults = PPM__V1__SETTINGS__INIT;
    config_settings_defaults (&defaults);
    Ppm__V1__Settings *s = config_settings_dup (&defaults);
    char *save = NULL;
    for (char *line = strtok_r (copy, "\n", &save); line && s;
         line = strtok_r (NULL, "\n", &save)) {
        char *eq = strchr (line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        const char *error = NULL;
        config_settings_set_text (s, line, eq + 1, &error);
    }
    if (s)
        s_exercise (s, NULL, 0);
    config_settings_free (&s);
    free (copy);
    return 0;
}

#ifdef PPM_FUZZ_STANDALONE
static int
s_write (const char *dir, const char *name, const uint8_t *data, size_t size)
{
    char path[1024];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    FILE *file = fopen (path, "wb");
    if (!file)
        return -1;
    fwrite (data, 1, size, file);
    fclose (file);
    return 0;
}

static int
s_write_seeds (const char *dir)
{
    Ppm__V1__Settings defaults = PPM__V1__SETTINGS__INIT;
    config_settings_defaults (&defaults);
    Ppm__V1__Settings *s = config_settings_dup (&defaults);
    const char *error = NULL;
    config_settings_set_text (s, "enabled", "true", &error);
    config_settings_set_text (s, "terms_url", "https://example.com/terms", &error);
    config_settings_set_text (s, "default_call_per_minute", "250", &error);
    config_settings_set_text (s, "default_chat_per_minute", "100", &error);
    config_settings_set_text (s, "stripe_secret_key", "sk_test_abcdefghijklmnop4242", &error);
    config_settings_set_text (s, "cors_allowed_origins", "https://app.example", &error);
    Ppm__V1__PutSettingsRequest req = PPM__V1__PUT_SETTINGS_REQUEST__INIT;
    req.settings = s;
    req.expected_version = 3;
    char *clear[] = {"stripe_webhook_secret"};
    req.clear_secrets = clear;
    req.n_clear_secrets = 1;
    uint8_t buf[4096];
    size_t size = ppm__v1__put_settings_request__pack (&req, buf);
    int rc = s_write (dir, "valid_enabled.bin", buf, size);
    config_settings_set_text (s, "currency", "KWD", &error);
    config_settings_set_text (s, "preset_minutes", "1,10,10,700", &error);
    config_settings_set_text (s, "stripe_mode", "live", &error);
    size = ppm__v1__put_settings_request__pack (&req, buf);
    rc |= s_write (dir, "invalid_many.bin", buf, size);
    config_settings_free (&s);
    const char *lines = "enabled=true\nterms_url=https://x.example/t\npreset_minutes=5,30\n"
                        "currency=jpy\ndefault_call_per_minute=13\nwarning_marks_s=60,10\n";
    rc |= s_write (dir, "lines.txt", (const uint8_t *)lines, strlen (lines));
    return rc ? 1 : 0;
}

int
main (int argc, char **argv)
{
    if (argc == 3 && strcmp (argv[1], "--write-seeds") == 0)
        return s_write_seeds (argv[2]);
    for (int i = 1; i < argc; i++) {
        FILE *file = fopen (argv[i], "rb");
        if (!file)
            continue;
        uint8_t buf[1 << 16];
        size_t size = fread (buf, 1, sizeof buf, file);
        fclose (file);
        LLVMFuzzerTestOneInput (buf, size);
    }
    return 0;
}
#endif
