/*  A standalone main for the fuzz harnesses: runs LLVMFuzzerTestOneInput on
    every file named on the command line (directories: every file in them),
    so `make test` replays the committed corpora under ASan+UBSan without
    libFuzzer (tests/harness/replay-fuzz.sh). Exit status 0 when every input
    ran; a crash or failed assertion aborts. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define S_MAX_INPUT (1024 * 1024)

static int
s_run_file (const char *path, size_t *count)
{
    FILE *file = fopen (path, "rb");
    if (!file) {
        fprintf (stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    uint8_t *data = malloc (S_MAX_INPUT);
    if (!data) {
        fclose (file);
        return -1;
    }
    size_t size = fread (data, 1, S_MAX_INPUT, file);
    fclose (file);
    /* a copy of exactly size bytes, so ASan catches any over-read */
    uint8_t *exact = malloc (size ? size : 1);
    if (!exact) {
        free (data);
        return -1;
    }
    memcpy (exact, data, size);
    free (data);
    LLVMFuzzerTestOneInput (exact, size);
    free (exact);
    (*count)++;
    return 0;
}

static int
s_run_path (const char *path, size_t *count)
{
    struct stat st;
    if (stat (path, &st) != 0) {
        fprintf (stderr, "replay: no such file or directory: %s\n", path);
        return -1;
    }
    if (!S_ISDIR (st.st_mode))
        return s_run_file (path, count);
    DIR *dir = opendir (path);
    if (!dir)
        return -1;
    int rc = 0;
    struct dirent *entry;
    while ((entry = readdir (dir)) && rc == 0) {
        if (entry->d_name[0] == '.')
            continue;
        char child[4096];
        snprintf (child, sizeof child, "%s/%s", path, entry->d_name);
        rc = s_run_path (child, count);
    }
    closedir (dir);
    return rc;
}

int
main (int argc, char **argv)
{
    size_t count = 0;
    for (int i = 1; i < argc; i++)
        if (s_run_path (argv[i], &count))
            return 1;
    printf ("replay: %s: %zu inputs ok\n", argc > 0 ? argv[0] : "?", count);
    return count > 0 ? 0 : 1;
}
