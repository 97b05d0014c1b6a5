/*  ppm_test_emulator: spawn and drive the Stripe emulator from tests.
    See ppm_test_emulator.h. */
#include "ppm_test_emulator.h"

#include <assert.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct _ppm_test_emulator_t {
    pid_t pid;     /* the child */
    char url[256]; /* base URL */
};

ppm_test_emulator_t *
ppm_test_emulator_start (const char *const *extra_args)
{
    const char *dir = getenv ("PPM_BIN_DIR");
    char path[1024];
    snprintf (path, sizeof path, "%s/stripe-emulator", dir ? dir : "build/bin");
    int fds[2];
    if (pipe (fds) != 0)
        return NULL;
    const char *argv[32] = {path, "--port", "0"};
    size_t argc = 3;
    for (size_t i = 0; extra_args && extra_args[i] && argc < 31; i++)
        argv[argc++] = extra_args[i];
    argv[argc] = NULL;
    pid_t pid = fork ();
    if (pid < 0)
        return NULL;
    if (pid == 0) {
        dup2 (fds[1], STDOUT_FILENO);
        close (fds[0]);
        close (fds[1]);
        unsetenv ("PPM_EMULATOR_PORT");
        execv (path, (char *const *)argv);
        _exit (127);
    }
    close (fds[1]);
    FILE *out = fdopen (fds[0], "r");
    char line[200] = "";
    char *got = out ? fgets (line, sizeof line, out) : NULL;
    if (out)
        fclose (out);
    const char *prefix = "stripe-emulator listening on ";
    if (!got || strncmp (line, prefix, strlen (prefix)) != 0) {
        kill (pid, SIGKILL);
        waitpid (pid, NULL, 0);
        return NULL;
    }
    ppm_test_emulator_t *self = calloc (1, sizeof (ppm_test_emulator_t));
    assert (self);
    self->pid = pid;
    snprintf (self->url, sizeof self->url, "%s", line + strlen (prefix));
    self->url[strcspn (self->url, "\r\n")] = '\0';
    return self;
}

void
ppm_test_emulator_stop (ppm_test_emulator_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ppm_test_emulator_t *self = *self_p;
    kill (self->pid, SIGTERM);
    int status;
    for (int i = 0; i < 100; i++) {
        if (waitpid (self->pid, &status, WNOHANG) == self->pid)
            goto done;
        usleep (20000);
    }
    kill (self->pid, SIGKILL);
    waitpid (self->pid, &status, 0);
done:
    free (self);
    *self_p = NULL;
}

const char *
ppm_test_emulator_url (const ppm_test_emulator_t *self)
{
    return self->url;
}

pid_t
ppm_test_emulator_pid (const ppm_test_emulator_t *self)
{
    return self->pid;
}

typedef struct {
    char *data; /* body so far */
    size_t size;
} s_buf_t;

static size_t
s_collect (char *data, size_t size, size_t nmemb, void *arg)
{
    s_buf_t *buf = arg;
    size_t n = size * nmemb;
    char *grown = realloc (buf->data, buf->size + n + 1);
    if (!grown)
        return 0;
    buf->data = grown;
    memcpy (buf->data + buf->size, data, n);
    buf->size += n;
    buf->data[buf->size] = '\0';
    return n;
}

int
ppm_test_emulator_control (const ppm_test_emulator_t *self, const char *method, const char *path,
                           const char *json, char **response)
{
    char url[1024];
    snprintf (url, sizeof url, "%s%s", self->url, path);
    CURL *curl = curl_easy_init ();
    s_buf_t buf = {NULL, 0};
    struct curl_slist *headers = curl_slist_append (NULL, "Content-Type: application/json");
    curl_easy_setopt (curl, CURLOPT_URL, url);
    curl_easy_setopt (curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt (curl, CURLOPT_HTTPHEADER, headers);
    if (json)
        curl_easy_setopt (curl, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt (curl, CURLOPT_WRITEDATA, &buf);
    curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
    long status = 0;
    if (curl_easy_perform (curl) == CURLE_OK)
        curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all (headers);
    curl_easy_cleanup (curl);
    if (response)
        *response = buf.data ? buf.data : strdup ("");
    else
        free (buf.data);
    return (int)status;
}
