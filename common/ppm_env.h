/*  ppm_env: a binary's configuration, read from PPM_* environment variables
    through one declarative table.

    Each binary declares a table of {name, type, bounds, default, secret,
    where to store it}; ppm_env_load parses every entry with checked
    conversions and fails with one clear line naming the variable when a
    value is malformed, out of bounds, or required and missing. After a
    successful load, ppm_env_log writes the effective values (secrets
    masked) as one log line.

        static ppm_env_t s_env[] = {
            { "PPM_RPC_BIND", PPM_ENV_STRING, .def = "tcp://127.0.0.1:7101", .out = &cfg.bind },
            { "PPM_TICK_MS", PPM_ENV_INT, .min = 10, .max = 60000, .def = "1000", .out =
   &cfg.tick_ms }, { "PPM_MASTER_KEY", PPM_ENV_STRING, .secret = true, .required = true, .out =
   &cfg.master_key }, { NULL }
        };
        const char *error;
        if (ppm_env_load (s_env, &error)) { fprintf (stderr, "%s\n", error); return 1; }
*/
#ifndef PPM_ENV_H_INCLUDED
#define PPM_ENV_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

typedef enum {
    PPM_ENV_STRING,  /* out: char ** (owned by the table; freed by ppm_env_free) */
    PPM_ENV_INT,     /* out: int64_t *, checked against [min, max] */
    PPM_ENV_BOOL,    /* out: bool *; accepts 1/0, true/false, yes/no, on/off */
    PPM_ENV_DURATION /* out: int64_t * in ms; accepts "250ms", "5s", "2m", "1h", bare ms */
} ppm_env_type_t;

typedef struct {
    const char *name;    /* PPM_… variable name; NULL ends the table */
    ppm_env_type_t type; /* how to parse it */
    int64_t min;         /* bounds for INT and DURATION (ms); both 0 = unbounded */
    int64_t max;
    const char *def;  /* default as text, parsed like the variable; NULL = none */
    bool required;    /* missing and no default: fail */
    bool secret;      /* masked in ppm_env_log and error lines */
    void *out;        /* where the parsed value goes (see types) */
    const char *help; /* one line, for --help and docs */
} ppm_env_t;

/* Parses every entry. Returns 0, or -1 with *error set to a static line
   such as "PPM_TICK_MS: 5 is below the minimum 10". Strings parsed before a
   failure are freed. */
int ppm_env_load (ppm_env_t *table, const char **error);
/* Frees the strings a load stored. Safe to call twice. */
void ppm_env_free (ppm_env_t *table);
/* Logs the effective configuration as one line, secrets masked. */
void ppm_env_log (const ppm_env_t *table);
/* Prints "NAME  default  help" lines for --help. */
void ppm_env_usage (const ppm_env_t *table, void *file);

#endif
