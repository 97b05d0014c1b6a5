/*  config_crypto: see config_crypto.h. */
#include "config_crypto.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct _config_crypto_t {
    uint8_t *key; /* crypto_secretbox key, sodium_malloc'd (guarded, locked) */
};

int
config_crypto_init (void)
{
    return sodium_init () < 0 ? -1 : 0;
}

int
config_crypto_parse_key (const char *hex, uint8_t key[CONFIG_MASTER_KEY_BYTES])
{
    size_t len = 0;
    const char *end = NULL;
    if (!hex || strlen (hex) != CONFIG_MASTER_KEY_BYTES * 2)
        return -1;
    if (sodium_hex2bin (key, CONFIG_MASTER_KEY_BYTES, hex, strlen (hex), NULL, &len, &end) != 0 ||
        len != CONFIG_MASTER_KEY_BYTES || *end != '\0')
        return -1;
    return 0;
}

void
config_crypto_demo_key (uint8_t key[CONFIG_MASTER_KEY_BYTES])
{
    static const char label[] = "ppm demo master key: not for production";
    crypto_generichash (key, CONFIG_MASTER_KEY_BYTES, (const uint8_t *)label, strlen (label), NULL,
                        0);
}

config_crypto_t *
config_crypto_new (const uint8_t key[CONFIG_MASTER_KEY_BYTES])
{
    if (config_crypto_init ())
        return NULL;
    config_crypto_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->key = sodium_malloc (crypto_secretbox_KEYBYTES);
    if (!self->key) {
        free (self);
        return NULL;
    }
    memcpy (self->key, key, crypto_secretbox_KEYBYTES);
    return self;
}

void
config_crypto_destroy (config_crypto_t **self_p)
{
    if (self_p && *self_p) {
        sodium_free ((*self_p)->key);
        free (*self_p);
        *self_p = NULL;
    }
}

/* "<tenant>\n<field>\n" + value, in a malloc'd buffer. */
static uint8_t *
s_framed (const char *tenant, const char *field, const char *value, size_t *size)
{
    size_t head = strlen (tenant) + strlen (field) + 2;
    size_t len = head + strlen (value);
    uint8_t *buf = malloc (len + 1);
    if (!buf)
        return NULL;
    snprintf ((char *)buf, len + 1, "%s\n%s\n%s", tenant, field, value);
    *size = len;
    return buf;
}

uint8_t *
config_crypto_seal (config_crypto_t *self, const char *tenant, const char *field, const char *value,
                    size_t *size)
{
    size_t plain_len = 0;
    uint8_t *plain = s_framed (tenant, field, value, &plain_len);
    if (!plain)
        return NULL;
    size_t out_len = crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plain_len;
    uint8_t *out = malloc (out_len);
    if (out) {
        randombytes_buf (out, crypto_secretbox_NONCEBYTES);
        crypto_secretbox_easy (out + crypto_secretbox_NONCEBYTES, plain, plain_len, out, self->key);
        *size = out_len;
    }
    sodium_memzero (plain, plain_len);
    free (plain);
    return out;
}

char *
config_crypto_open (config_crypto_t *self, const char *tenant, const char *field,
                    const uint8_t *sealed, size_t size)
{
    if (!sealed || size < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES)
        return NULL;
    size_t plain_len = size - crypto_secretbox_NONCEBYTES - crypto_secretbox_MACBYTES;
    uint8_t *plain = malloc (plain_len + 1);
    if (!plain)
        return NULL;
    if (crypto_secretbox_open_easy (plain, sealed + crypto_secretbox_NONCEBYTES,
                                    size - crypto_secretbox_NONCEBYTES, sealed, self->key) != 0) {
        free (plain);
        return NULL;
    }
    plain[plain_len] = '\0';
    size_t head = strlen (tenant) + strlen (field) + 2;
    char *value = NULL;
    if (plain_len >= head && memcmp (plain, tenant, strlen (tenant)) == 0 &&
        plain[strlen (tenant)] == '\n' &&
        memcmp (plain + strlen (tenant) + 1, field, strlen (field)) == 0 &&
        plain[head - 1] == '\n' && strlen ((char *)plain) == plain_len)
        value = strdup ((char *)plain + head);
    sodium_memzero (plain, plain_len);
    free (plain);
    return value;
}

void
config_crypto_random_id (const char *prefix, size_t hex_chars, char *out, size_t size)
{
    uint8_t bytes[64];
    size_t n = (hex_chars + 1) / 2;
    if (n > sizeof bytes)
        n = sizeof bytes;
    randombytes_buf (bytes, n);
    char hex[sizeof bytes * 2 + 1];
    sodium_bin2hex (hex, sizeof hex, bytes, n);
    size_t hex_len = hex_chars < n * 2 ? hex_chars : n * 2;
    size_t prefix_len = strlen (prefix);
    if (prefix_len + hex_len + 1 > size)
        abort (); /* programmer error: the caller's buffer is too small */
    memcpy (out, prefix, prefix_len);
    memcpy (out + prefix_len, hex, hex_len);
    out[prefix_len + hex_len] = '\0';
}

static void
s_hash_secret (const char *secret, size_t len, uint8_t hash[CONFIG_HASH_BYTES])
{
    crypto_generichash (hash, CONFIG_HASH_BYTES, (const uint8_t *)secret, len, NULL, 0);
}

void
config_crypto_admin_key_new (char key[CONFIG_ADMIN_KEY_LEN + 1], char id[CONFIG_KEY_ID_LEN + 1],
                             uint8_t hash[CONFIG_HASH_BYTES])
{
    char secret[65];
    config_crypto_random_id ("", CONFIG_KEY_ID_LEN, id, CONFIG_KEY_ID_LEN + 1);
    config_crypto_random_id ("", 64, secret, sizeof secret);
    snprintf (key, CONFIG_ADMIN_KEY_LEN + 1, "ppmak_%s_%s", id, secret);
    s_hash_secret (secret, 64, hash);
    sodium_memzero (secret, sizeof secret);
}

static bool
s_is_hex (const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

int
config_crypto_admin_key_parse (const char *key, char id[CONFIG_KEY_ID_LEN + 1],
                               uint8_t hash[CONFIG_HASH_BYTES])
{
    if (!key || strlen (key) != CONFIG_ADMIN_KEY_LEN || strncmp (key, "ppmak_", 6) != 0 ||
        key[6 + CONFIG_KEY_ID_LEN] != '_' || !s_is_hex (key + 6, CONFIG_KEY_ID_LEN) ||
        !s_is_hex (key + 7 + CONFIG_KEY_ID_LEN, 64))
        return -1;
    memcpy (id, key + 6, CONFIG_KEY_ID_LEN);
    id[CONFIG_KEY_ID_LEN] = '\0';
    s_hash_secret (key + 7 + CONFIG_KEY_ID_LEN, 64, hash);
    return 0;
}

bool
config_crypto_hash_equal (const uint8_t a[CONFIG_HASH_BYTES], const uint8_t b[CONFIG_HASH_BYTES])
{
    return crypto_verify_32 (a, b) == 0;
}
