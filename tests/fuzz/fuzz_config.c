/* libFuzzer target for the configuration: hostile environment and command lines through the
 * settings table (common/config.c) for each program, then --print-config's dump. The input is
 * a role byte, then NUL-separated tokens: "env:NAME=VALUE" sets NAME for this run, anything
 * else is an argument. Runs in an empty temporary directory holding a secret file and TLS
 * files (made with deploy/make-certs.sh when IHC_SOURCE_DIR is known), so that relative paths
 * name them; inputs naming /dev, /proc or /sys are skipped (a path there may block). */
#include "config.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ARGS 64
#define MAX_ENV  32

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_config: check failed: %s (line %d)\n", #cond, __LINE__);         \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static FILE *devnull;
static char workdir[] = "/tmp/ihc-fuzz-config-XXXXXX";

static void remove_workdir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", workdir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz_config: could not remove %s\n", workdir);
}

static void write_file(const char *name, const char *text)
{
    FILE *f = fopen(name, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (!mkdtemp(workdir) || chdir(workdir) != 0)
        abort();
    atexit(remove_workdir);
    write_file("secret", "s3cret\n");
    write_file("token", "tok-123\n");
    write_file("empty", "");
#ifdef IHC_SOURCE_DIR
    /* ca.pem, coordinator.pem/.key, agent-1.pem/.key, client.pem/.key */
    if (system("bash " IHC_SOURCE_DIR "/deploy/make-certs.sh . >/dev/null 2>&1") != 0)
        fprintf(stderr, "fuzz_config: no TLS files (make-certs.sh failed)\n");
#endif
    devnull = fopen("/dev/null", "w");
    if (!devnull)
        abort();
    /* nothing from the fuzzer's own environment */
    static const char *const ours[] = {
        "IHC_PUB_URL",     "IHC_REPORT_URL", "IHC_CONTROL_URL", "IHC_REDIS_URL", "IHC_SECRET",
        "IHC_SECRET_FILE", "IHC_TLS_CERT",   "IHC_TLS_KEY",     "IHC_TLS_CA",    NULL};
    for (int i = 0; ours[i]; i++)
        unsetenv(ours[i]);
    return 0;
}

static bool has(const uint8_t *d, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(d + i, needle, k) == 0)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192 || has(data, size, "/dev") || has(data, size, "/proc") ||
        has(data, size, "/sys"))
        return 0;
    static const unsigned roles[] = {IHC_ROLE_COORDINATOR, IHC_ROLE_AGENT, IHC_ROLE_CLI};
    unsigned role = roles[data[0] % 3];
    char *buf = malloc(size); /* tokens, NUL-terminated */
    CHECK(buf != NULL);
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = '\0';
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    char *env_names[MAX_ENV];
    int n_env = 0;
    argv[argc++] = "prog";
    for (char *t = buf; t < buf + size - 1; t += strlen(t) + 1) {
        if (strncmp(t, "env:", 4) == 0) {
            char *eq = strchr(t + 4, '=');
            if (eq && eq > t + 4 && n_env < MAX_ENV) {
                *eq = '\0';
                if (setenv(t + 4, eq + 1, 1) == 0)
                    env_names[n_env++] = t + 4;
            }
        } else if (argc < MAX_ARGS) {
            argv[argc++] = t;
        }
    }
    argv[argc] = NULL;

    ihc_config cfg;
    char err[512];
    memset(err, 'x', sizeof err);
    int rest[MAX_ARGS + 2], n_rest = 0;
    int rc = ihc_config_load(&cfg, role, argc, argv, role == IHC_ROLE_CLI ? rest : NULL,
                             role == IHC_ROLE_CLI ? &n_rest : NULL, err, sizeof err);
    CHECK(rc == IHC_OK || rc == IHC_ECONFIG);
    if (rc != IHC_OK) {
        CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
    } else {
        CHECK(n_rest >= 0 && n_rest < argc);
        for (int i = 0; i < n_rest; i++)
            CHECK(rest[i] > 0 && rest[i] < argc);
        CHECK(cfg.secret == NULL || cfg.secret_len > 0);
        ihc_config_dump(devnull, &cfg, role);
        if (cfg.want_help)
            ihc_config_usage(devnull, role, "prog");
    }
    ihc_config_fini(&cfg);
    CHECK(cfg.secret == NULL && cfg.tls == NULL && cfg.http_token == NULL);
    for (int i = 0; i < n_env; i++)
        unsetenv(env_names[i]);
    free(buf);
    return 0;
}
