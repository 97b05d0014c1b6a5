/*  config_crypto: the config service's secrets at rest and its random ids,
    with libsodium.

    Secrets (Stripe keys, webhook secret, user-token secret) are sealed with
    crypto_secretbox (XSalsa20-Poly1305) under the master key from
    PPM_MASTER_KEY (64 hex characters). A sealed value is nonce (24 bytes)
    || box; the boxed plaintext is "<tenant>\n<field>\n<value>" so that a
    ciphertext copied to another tenant's row or field fails to open.

    Admin keys are "ppmak_<id>_<secret>": id 16 hex characters (the lookup
    key, not secret), secret 64 hex characters (256 random bits). Only the
    BLAKE2b-256 hash (crypto_generichash) of the secret is stored, and it is
    compared in constant time (crypto_verify_32).
*/
#ifndef CONFIG_CRYPTO_H_INCLUDED
#define CONFIG_CRYPTO_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MASTER_KEY_BYTES 32
#define CONFIG_HASH_BYTES       32
#define CONFIG_ADMIN_KEY_LEN    (6 + 16 + 1 + 64)
#define CONFIG_KEY_ID_LEN       16

typedef struct _config_crypto_t config_crypto_t;

/* Initialises libsodium. Returns 0 or -1. */
int config_crypto_init (void);

/* Parses 64 hex characters into a key. Returns 0 or -1. */
int config_crypto_parse_key (const char *hex, uint8_t key[CONFIG_MASTER_KEY_BYTES]);
/* The fixed key of the demo (PPM_DEMO=1): never for real tenants. */
void config_crypto_demo_key (uint8_t key[CONFIG_MASTER_KEY_BYTES]);

/* Keeps a copy of key in locked memory. NULL on failure. */
config_crypto_t *config_crypto_new (const uint8_t key[CONFIG_MASTER_KEY_BYTES]);
void config_crypto_destroy (config_crypto_t **self_p);

/* Seals value for (tenant, field). Returns a malloc'd buffer (*size set)
   the caller frees, or NULL. */
uint8_t *config_crypto_seal (config_crypto_t *self, const char *tenant, const char *field,
                             const char *value, size_t *size);
/* Opens a sealed value; returns the malloc'd plaintext the caller frees
   (sodium_memzero it first), or NULL when it does not open for (tenant,
   field) under this key. */
char *config_crypto_open (config_crypto_t *self, const char *tenant, const char *field,
                          const uint8_t *sealed, size_t size);

/* Writes a random id: prefix + hex_chars lower-case hex characters. */
void config_crypto_random_id (const char *prefix, size_t hex_chars, char *out, size_t size);

/* Makes a new admin key: writes the key (CONFIG_ADMIN_KEY_LEN + 1 bytes),
   its id (CONFIG_KEY_ID_LEN + 1) and the hash to store. */
void config_crypto_admin_key_new (char key[CONFIG_ADMIN_KEY_LEN + 1],
                                  char id[CONFIG_KEY_ID_LEN + 1], uint8_t hash[CONFIG_HASH_BYTES]);
/* Splits a presented key into its id and the hash of its secret. Returns
   0, or -1 when it is not shaped like an admin key. */
int config_crypto_admin_key_parse (const char *key, char id[CONFIG_KEY_ID_LEN + 1],
                                   uint8_t hash[CONFIG_HASH_BYTES]);
/* Constant-time comparison of two hashes. */
bool config_crypto_hash_equal (const uint8_t a[CONFIG_HASH_BYTES],
                               const uint8_t b[CONFIG_HASH_BYTES]);

#endif
