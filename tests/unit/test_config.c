/* Unit tests of common/config: defaults per role, environment and flags, every error path,
 * secrets, positional arguments, --help and --print-config output. */
#include "harness.h"

#include "config.h"
#include "err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COORD IHC_ROLE_COORDINATOR
#define AGENT IHC_ROLE_AGENT
#define CLI   IHC_ROLE_CLI

/* Every environment variable the table reads; cleared before each case. */
static const char *const all_env[] = {
    "IHC_PUB_URL",
    "IHC_REPORT_URL",
    "IHC_CONTROL_URL",
    "IHC_HTTP_ADDR",
    "IHC_REDIS_URL",
    "IHC_LOCAL_URL",
    "IHC_LOCAL_MAX_CONNS",
    "IHC_LOCAL_IDLE_TIMEOUT",
    "IHC_LOCAL_REQUEST_DEADLINE",
    "IHC_AGENT_ID",
    "IHC_AGENT_CONFIG",
    "IHC_STATE_DIR",
    "IHC_SECRET",
    "IHC_SECRET_FILE",
    "IHC_HTTP_TOKEN",
    "IHC_HTTP_TOKEN_FILE",
    "GLOBAL_INTERRUPT_ENABLED",
    "INTERRUPT_CHECK_INTERVAL",
    "INTERRUPT_TIMEOUT",
    "SESSION_CLEANUP_DELAY",
    "MAX_ACTIVE_SESSIONS",
    "SESSION_TIMEOUT",
    "LOG_INTERRUPTS",
    "LOG_TIMING",
    "INTERRUPT_PRIORITY",
    "CLEANUP_ON_INTERRUPT",
    "FORCE_CLEANUP",
    "IHC_MODULE_TIMEOUT",
    "IHC_KILL_GRACE",
    "IHC_HEARTBEAT_INTERVAL",
    "IHC_AGENT_TTL",
    "IHC_RESEND_INTERVAL",
    "IHC_REDIS_TIMEOUT_MS",
    "IHC_INTERRUPT_LOG_MAX",
    "IHC_HTTP_MAX_BODY",
    "IHC_HTTP_MAX_CONNS",
    "IHC_HTTP_MAX_CONNS_PER_IP",
    "IHC_HTTP_REQUEST_DEADLINE",
    "IHC_HTTP_MAX_STREAMS",
    "IHC_EVENTS_HISTORY",
    "IHC_MAX_INFLIGHT",
    "IHC_LOG_FORMAT",
    "IHC_LOG_LEVEL",
    "IHC_TLS_CERT",
    "IHC_TLS_KEY",
    "IHC_TLS_CA",
    "IHC_TLS_SERVER_NAME",
};

/* Per role: the settings (env var or flag) --help and --print-config must show, and some
 * they must not. */
typedef struct {
    const char *env;  /* NULL for flag-only */
    const char *flag; /* NULL for env-only */
    unsigned roles;
} expect_setting;

static const expect_setting expected[] = {
    {"IHC_PUB_URL", "--pub", COORD | AGENT | CLI},
    {"IHC_REPORT_URL", "--report", COORD | AGENT},
    {"IHC_CONTROL_URL", "--control", COORD | CLI},
    {"IHC_HTTP_ADDR", "--http", COORD},
    {"IHC_REDIS_URL", "--redis", COORD},
    {"IHC_LOCAL_URL", "--local", AGENT | CLI},
    {"IHC_LOCAL_MAX_CONNS", "--local-max-conns", AGENT},
    {"IHC_LOCAL_IDLE_TIMEOUT", "--local-idle-timeout", AGENT},
    {"IHC_LOCAL_REQUEST_DEADLINE", "--local-request-deadline", AGENT},
    {"IHC_AGENT_ID", "--id", AGENT},
    {NULL, "--simulate", AGENT},
    {"IHC_AGENT_CONFIG", "--config", AGENT},
    {"IHC_STATE_DIR", "--state-dir", COORD},
    {"IHC_SECRET", NULL, COORD | AGENT | CLI},
    {"IHC_SECRET_FILE", "--secret-file", COORD | AGENT | CLI},
    {"IHC_HTTP_TOKEN", NULL, COORD},
    {"IHC_HTTP_TOKEN_FILE", NULL, COORD},
    {"GLOBAL_INTERRUPT_ENABLED", "--global-interrupt-enabled", COORD | AGENT},
    {"INTERRUPT_CHECK_INTERVAL", "--interrupt-check-interval", AGENT},
    {"INTERRUPT_TIMEOUT", "--interrupt-timeout", COORD | AGENT | CLI},
    {"SESSION_CLEANUP_DELAY", "--session-cleanup-delay", COORD | AGENT},
    {"MAX_ACTIVE_SESSIONS", "--max-active-sessions", COORD | AGENT},
    {"SESSION_TIMEOUT", "--session-timeout", COORD | AGENT},
    {"LOG_INTERRUPTS", "--log-interrupts", COORD | AGENT},
    {"LOG_TIMING", "--log-timing", COORD | AGENT},
    {"INTERRUPT_PRIORITY", "--interrupt-priority", COORD | AGENT},
    {"CLEANUP_ON_INTERRUPT", "--cleanup-on-interrupt", AGENT},
    {"FORCE_CLEANUP", "--force-cleanup", AGENT},
    {"IHC_MODULE_TIMEOUT", "--module-timeout", AGENT},
    {"IHC_KILL_GRACE", "--kill-grace", AGENT},
    {"IHC_HEARTBEAT_INTERVAL", "--heartbeat", COORD | AGENT},
    {"IHC_AGENT_TTL", "--agent-ttl", COORD},
    {"IHC_RESEND_INTERVAL", "--resend-interval", COORD},
    {"IHC_REDIS_TIMEOUT_MS", "--redis-timeout", COORD},
    {"IHC_INTERRUPT_LOG_MAX", "--log-max", COORD},
    {"IHC_HTTP_MAX_BODY", "--http-max-body", COORD},
    {"IHC_HTTP_MAX_CONNS", "--http-max-conns", COORD},
    {"IHC_HTTP_MAX_CONNS_PER_IP", "--http-max-conns-per-ip", COORD},
    {"IHC_HTTP_REQUEST_DEADLINE", "--http-request-deadline", COORD},
    {"IHC_HTTP_MAX_STREAMS", "--http-max-streams", COORD},
    {"IHC_EVENTS_HISTORY", "--events-history", COORD},
    {"IHC_MAX_INFLIGHT", "--max-inflight", COORD},
    {"IHC_LOG_FORMAT", "--log-format", COORD | AGENT | CLI},
    {"IHC_LOG_LEVEL", "--log-level", COORD | AGENT | CLI},
    {"IHC_TLS_CERT", "--tls-cert", COORD | AGENT | CLI},
    {"IHC_TLS_KEY", "--tls-key", COORD | AGENT | CLI},
    {"IHC_TLS_CA", "--tls-ca", COORD | AGENT | CLI},
    {"IHC_TLS_SERVER_NAME", "--tls-server-name", AGENT | CLI},
};

#define N_EXPECTED (sizeof expected / sizeof *expected)

static char tmpdir_path[256];

static int reset_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof all_env / sizeof *all_env; i++)
        unsetenv(all_env[i]);
    return 0;
}

/* Loads with argv given as a NULL-terminated list (argv[0] is added). */
static int load(ihc_config *cfg, unsigned role, char *err, size_t err_len, int *rest, int *n_rest,
                const char *const *args)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "prog";
    for (; args != NULL && *args != NULL; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    return ihc_config_load(cfg, role, argc, argv, rest, n_rest, err, err_len);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NOARGS    ((const char *const[]){NULL})

/* Expects IHC_ECONFIG and a message containing every one of the given substrings. */
static void expect_error(unsigned role, const char *const *args, const char *want1,
                         const char *want2)
{
    ihc_config cfg;
    char err[512];
    int rc = load(&cfg, role, err, sizeof err, NULL, NULL, args);
    ihc_config_fini(&cfg);
    if (rc != IHC_ECONFIG)
        fail_msg("got %s (%s), want IHC_ECONFIG containing '%s'", ihc_err_name(rc), err, want1);
    if (want1 != NULL && strstr(err, want1) == NULL)
        fail_msg("message '%s' does not contain '%s'", err, want1);
    if (want2 != NULL && strstr(err, want2) == NULL)
        fail_msg("message '%s' does not contain '%s'", err, want2);
}

static void expect_error_msg(unsigned role, const char *const *args, const char *exact)
{
    ihc_config cfg;
    char err[512];
    int rc = load(&cfg, role, err, sizeof err, NULL, NULL, args);
    ihc_config_fini(&cfg);
    assert_int_equal(rc, IHC_ECONFIG);
    assert_string_equal(err, exact);
}

static char *write_file(const char *name, const void *data, size_t n)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir_path, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    return path;
}

/* ---- defaults ------------------------------------------------------------------------- */

static void test_config_defaults_coordinator(void **state)
{
    (void)state;
    ihc_config cfg;
    char err[256];
    TH_PASS(load(&cfg, COORD, err, sizeof err, NULL, NULL, NOARGS));
    assert_string_equal(cfg.pub_url, "tcp://0.0.0.0:7450");
    assert_string_equal(cfg.report_url, "tcp://0.0.0.0:7451");
    assert_string_equal(cfg.control_url, "tcp://0.0.0.0:7452");
    assert_string_equal(cfg.http_addr, "0.0.0.0:7480");
    assert_string_equal(cfg.redis_url, "redis://127.0.0.1:6379/0");
    assert_null(cfg.local_url); /* not a coordinator setting */
    assert_null(cfg.agent_id);
    assert_null(cfg.state_dir);
    assert_null(cfg.secret);
    assert_int_equal(cfg.secret_len, 0);
    assert_null(cfg.http_token);
    assert_true(cfg.global_interrupt_enabled);
    assert_true(cfg.interrupt_timeout == 5.0);
    assert_true(cfg.session_cleanup_delay == 2.0);
    assert_int_equal(cfg.max_active_sessions, 100);
    assert_true(cfg.session_timeout == 300.0);
    assert_true(cfg.log_interrupts);
    assert_true(cfg.log_timing);
    assert_int_equal(cfg.interrupt_priority, IHC_PRIORITY_HIGH);
    assert_true(cfg.heartbeat_interval == 1.0);
    assert_true(cfg.agent_ttl == 5.0);
    assert_true(cfg.resend_interval == 0.02);
    assert_int_equal(cfg.redis_timeout_ms, 500);
    assert_int_equal(cfg.interrupt_log_max, 100000);
    assert_int_equal(cfg.http_max_body, 65536);
    assert_int_equal(cfg.http_max_conns, 512);
    assert_int_equal(cfg.http_max_conns_per_ip, 0); /* http_max_conns / 8 */
    assert_true(cfg.http_request_deadline == 5.0);
    assert_int_equal(cfg.http_max_streams, 64);
    assert_int_equal(cfg.events_history, 10000);
    assert_int_equal(cfg.max_inflight, 10000);
    assert_int_equal(cfg.log_format, IHC_LOGFMT_TEXT);
    assert_int_equal(cfg.log_level, 1); /* info */
    assert_false(cfg.want_help || cfg.want_version || cfg.want_print_config);
    ihc_config_fini(&cfg);
    assert_null(cfg.pub_url);
}

static void test_config_defaults_agent(void **state)
{
    (void)state;
    ihc_config cfg;
    char err[256];
    TH_PASS(load(&cfg, AGENT, err, sizeof err, NULL, NULL, NOARGS));
    assert_string_equal(cfg.pub_url, "tcp://127.0.0.1:7450");
    assert_string_equal(cfg.report_url, "tcp://127.0.0.1:7451");
    assert_null(cfg.control_url);
    assert_null(cfg.http_addr);
    assert_null(cfg.redis_url);
    assert_string_equal(cfg.local_url, "unix:///tmp/ihc-agent.sock");
    assert_int_equal(cfg.local_max_conns, 4096);
    assert_true(cfg.local_idle_timeout == 30.0);
    assert_true(cfg.local_request_deadline == 5.0);
    assert_null(cfg.simulate);
    assert_null(cfg.agent_config);
    char host[256], want[300];
    assert_int_equal(gethostname(host, sizeof host), 0);
    snprintf(want, sizeof want, "%s:%ld", host, (long)getpid());
    assert_string_equal(cfg.agent_id, want);
    assert_true(cfg.interrupt_check_interval == 0.1);
    assert_true(cfg.interrupt_timeout == 5.0);
    assert_true(cfg.cleanup_on_interrupt);
    assert_true(cfg.force_cleanup);
    assert_true(cfg.module_timeout == 1.0);
    assert_true(cfg.kill_grace == 2.0);
    assert_true(cfg.heartbeat_interval == 1.0);
    ihc_config_fini(&cfg);
}

static void test_config_defaults_cli(void **state)
{
    (void)state;
    ihc_config cfg;
    char err[256];
    TH_PASS(load(&cfg, CLI, err, sizeof err, NULL, NULL, NOARGS));
    assert_string_equal(cfg.control_url, "tcp://127.0.0.1:7452");
    assert_string_equal(cfg.local_url, "unix:///tmp/ihc-agent.sock");
    assert_string_equal(cfg.pub_url, "tcp://127.0.0.1:7450"); /* ihc watch dials it */
    assert_null(cfg.report_url);
    assert_null(cfg.redis_url);
    assert_null(cfg.agent_id);
    assert_true(cfg.interrupt_timeout == 5.0);
    assert_int_equal(cfg.log_level, 1);
    ihc_config_fini(&cfg);
}

/* ---- environment and flags ------------------------------------------------------------ */

static void test_config_env_overrides(void **state)
{
    (void)state;
    setenv("IHC_PUB_URL", "tcp://10.0.0.5:7450", 1);
    setenv("INTERRUPT_TIMEOUT", "2.5", 1);
    setenv("MAX_ACTIVE_SESSIONS", "7", 1);
    setenv("LOG_TIMING", "Off", 1);
    setenv("GLOBAL_INTERRUPT_ENABLED", "no", 1);
    setenv("INTERRUPT_PRIORITY", "NORMAL", 1);
    setenv("IHC_LOG_FORMAT", "json", 1);
    setenv("IHC_LOG_LEVEL", "debug", 1);
    setenv("IHC_REDIS_URL", "unix:///run/redis.sock", 1);
    setenv("IHC_HTTP_ADDR", "[::1]:0", 1);
    setenv("IHC_STATE_DIR", "/var/lib/ihc", 1);
    setenv("IHC_AGENT_ID", "node-7:1", 1); /* not a coordinator setting: ignored */
    ihc_config cfg;
    char err[256];
    TH_PASS(load(&cfg, COORD, err, sizeof err, NULL, NULL, NOARGS));
    assert_string_equal(cfg.pub_url, "tcp://10.0.0.5:7450");
    assert_true(cfg.interrupt_timeout == 2.5);
    assert_int_equal(cfg.max_active_sessions, 7);
    assert_false(cfg.log_timing);
    assert_false(cfg.global_interrupt_enabled);
    assert_int_equal(cfg.interrupt_priority, IHC_PRIORITY_NORMAL);
    assert_int_equal(cfg.log_format, IHC_LOGFMT_JSON);
    assert_int_equal(cfg.log_level, 0);
    assert_string_equal(cfg.redis_url, "unix:///run/redis.sock");
    assert_string_equal(cfg.http_addr, "[::1]:0");
    assert_string_equal(cfg.state_dir, "/var/lib/ihc");
    assert_null(cfg.agent_id);
    ihc_config_fini(&cfg);
}

static void test_config_flag_overrides_env(void **state)
{
    (void)state;
    setenv("INTERRUPT_TIMEOUT", "2.5", 1);
    setenv("IHC_AGENT_ID", "from-env", 1);
    setenv("FORCE_CLEANUP", "true", 1);
    ihc_config cfg;
    char err[256];
    TH_PASS(load(&cfg, AGENT, err, sizeof err, NULL, NULL,
                 ARGS("--interrupt-timeout", "0.5", "--id=from-flag", "--force-cleanup", "0",
                      "--simulate", "dev-1,dev-2", "--interrupt-timeout=0.75")));
    assert_true(cfg.interrupt_timeout == 0.75); /* last occurrence wins */
    assert_string_equal(cfg.agent_id, "from-flag");
    assert_false(cfg.force_cleanup);
    assert_string_equal(cfg.simulate, "dev-1,dev-2");
    ihc_config_fini(&cfg);
}

static void test_config_flag_forms(void **state)
{
    (void)state;
    ihc_config cfg;
    char err[256];
    TH_PASS(load(&cfg, COORD, err, sizeof err, NULL, NULL,
                 ARGS("--pub=tcp://127.0.0.1:9000", "--report", "inproc://rep", "--http",
                      "localhost:8080", "--redis=redis://:pw@h:1/2", "--log-level", "warn",
                      "--max-inflight=1", "--agent-ttl", "3600", "--session-cleanup-delay=0")));
    assert_string_equal(cfg.pub_url, "tcp://127.0.0.1:9000");
    assert_string_equal(cfg.report_url, "inproc://rep");
    assert_string_equal(cfg.http_addr, "localhost:8080");
    assert_string_equal(cfg.redis_url, "redis://:pw@h:1/2");
    assert_int_equal(cfg.log_level, 2);
    assert_int_equal(cfg.max_inflight, 1);
    assert_true(cfg.agent_ttl == 3600.0);
    assert_true(cfg.session_cleanup_delay == 0.0);
    ihc_config_fini(&cfg);

    /* the bounds themselves are accepted */
    TH_PASS(load(
        &cfg, AGENT, err, sizeof err, NULL, NULL,
        ARGS("--interrupt-timeout=0.01", "--max-active-sessions", "1000000", "--kill-grace=0")));
    assert_true(cfg.interrupt_timeout == 0.01);
    assert_int_equal(cfg.max_active_sessions, 1000000);
    assert_true(cfg.kill_grace == 0.0);
    ihc_config_fini(&cfg);
}

static void test_config_actions(void **state)
{
    (void)state;
    ihc_config cfg;
    char err[256];
    TH_PASS(load(&cfg, AGENT, err, sizeof err, NULL, NULL, ARGS("--print-config")));
    assert_true(cfg.want_print_config);
    assert_false(cfg.want_help);
    ihc_config_fini(&cfg);
    TH_PASS(load(&cfg, CLI, err, sizeof err, NULL, NULL, ARGS("--version")));
    assert_true(cfg.want_version);
    ihc_config_fini(&cfg);
    /* --help works even when the environment holds a bad value */
    setenv("INTERRUPT_TIMEOUT", "abc", 1);
    TH_PASS(load(&cfg, COORD, err, sizeof err, NULL, NULL, ARGS("-h")));
    assert_true(cfg.want_help);
    assert_true(cfg.interrupt_timeout == 5.0);
    ihc_config_fini(&cfg);
    TH_PASS(load(&cfg, COORD, err, sizeof err, NULL, NULL, ARGS("--help")));
    assert_true(cfg.want_help);
    ihc_config_fini(&cfg);
    /* but --print-config validates */
    expect_error(COORD, ARGS("--print-config"), "INTERRUPT_TIMEOUT=abc", NULL);
    expect_error(COORD, ARGS("--help=yes"), "--help", "takes no value");
}

static void test_config_positional(void **state)
{
    (void)state;
    ihc_config cfg;
    char err[256];
    int rest[16], n_rest = -1;
    TH_PASS(load(&cfg, CLI, err, sizeof err, rest, &n_rest,
                 ARGS("interrupt", "--interrupt-timeout", "1", "dev-1", "-", "--", "--pub", "x")));
    assert_int_equal(n_rest, 5);
    assert_int_equal(rest[0], 1); /* interrupt */
    assert_int_equal(rest[1], 4); /* dev-1 */
    assert_int_equal(rest[2], 5); /* - */
    assert_int_equal(rest[3], 7); /* --pub, after "--" */
    assert_int_equal(rest[4], 8); /* x */
    assert_true(cfg.interrupt_timeout == 1.0);
    ihc_config_fini(&cfg);

    expect_error_msg(COORD, ARGS("stray"), "unexpected argument 'stray'");
    expect_error(AGENT, ARGS("--", "cmd"), "unexpected argument 'cmd'", NULL);
}

/* ---- errors --------------------------------------------------------------------------- */

static void test_config_bad_number(void **state)
{
    (void)state;
    setenv("INTERRUPT_TIMEOUT", "abc", 1);
    expect_error_msg(COORD, NOARGS,
                     "INTERRUPT_TIMEOUT=abc: expected a number of seconds in [0.01, 3600]");
    setenv("INTERRUPT_TIMEOUT", "1.5s", 1);
    expect_error(COORD, NOARGS, "INTERRUPT_TIMEOUT=1.5s", "seconds");
    setenv("INTERRUPT_TIMEOUT", "nan", 1);
    expect_error(COORD, NOARGS, "INTERRUPT_TIMEOUT=nan", "[0.01, 3600]");
    setenv("INTERRUPT_TIMEOUT", "inf", 1);
    expect_error(COORD, NOARGS, "INTERRUPT_TIMEOUT=inf", NULL);
    setenv("INTERRUPT_TIMEOUT", "", 1);
    expect_error(COORD, NOARGS, "INTERRUPT_TIMEOUT=:", NULL);
    setenv("INTERRUPT_TIMEOUT", " 1", 1);
    expect_error(COORD, NOARGS, "INTERRUPT_TIMEOUT= 1", NULL);
    unsetenv("INTERRUPT_TIMEOUT");
    expect_error(AGENT, ARGS("--max-active-sessions=12x"), "--max-active-sessions=12x",
                 "expected an integer in [1, 1000000]");
    expect_error(AGENT, ARGS("--max-active-sessions", "1.5"), "--max-active-sessions=1.5",
                 "integer");
    expect_error(COORD, ARGS("--redis-timeout=99999999999999999999999"),
                 "--redis-timeout=", "[1, 60000]");
    setenv("IHC_HTTP_MAX_BODY", "lots", 1);
    expect_error(COORD, NOARGS, "IHC_HTTP_MAX_BODY=lots", "[256, 16777216]");
}

static void test_config_out_of_bounds(void **state)
{
    (void)state;
    expect_error_msg(AGENT, ARGS("--max-active-sessions=0"),
                     "--max-active-sessions=0: expected an integer in [1, 1000000]");
    expect_error(AGENT, ARGS("--max-active-sessions=1000001"), "--max-active-sessions=1000001",
                 "[1, 1000000]");
    expect_error(AGENT, ARGS("--max-active-sessions=-5"), "--max-active-sessions=-5", NULL);
    expect_error(COORD, ARGS("--interrupt-timeout", "0.001"), "--interrupt-timeout=0.001",
                 "[0.01, 3600]");
    expect_error(COORD, ARGS("--interrupt-timeout", "3600.5"), "--interrupt-timeout=3600.5", NULL);
    setenv("SESSION_TIMEOUT", "0", 1);
    expect_error(AGENT, NOARGS, "SESSION_TIMEOUT=0", "[1, 604800]");
    unsetenv("SESSION_TIMEOUT");
    setenv("IHC_HTTP_MAX_CONNS", "65537", 1);
    expect_error(COORD, NOARGS, "IHC_HTTP_MAX_CONNS=65537", "[1, 65536]");
    unsetenv("IHC_HTTP_MAX_CONNS");
    expect_error(AGENT, ARGS("--heartbeat=0.01"), "--heartbeat=0.01", "[0.05, 60]");
    expect_error(COORD, ARGS("--http-request-deadline", "0.05"), "--http-request-deadline=0.05",
                 "[0.1, 600]");
    expect_error(COORD, ARGS("--events-history=8"), "--events-history=8", "[16, 1000000]");
    /* cross-check: one address may not be allowed more than every connection */
    expect_error(COORD, ARGS("--http-max-conns=10", "--http-max-conns-per-ip=11"),
                 "IHC_HTTP_MAX_CONNS_PER_IP=11", "IHC_HTTP_MAX_CONNS=10");
    /* cross-check: an agent TTL at or below the heartbeat interval */
    expect_error(COORD, ARGS("--agent-ttl=1", "--heartbeat=1"), "IHC_AGENT_TTL",
                 "IHC_HEARTBEAT_INTERVAL");
}

static void test_config_bad_bool(void **state)
{
    (void)state;
    setenv("LOG_INTERRUPTS", "maybe", 1);
    expect_error_msg(COORD, NOARGS,
                     "LOG_INTERRUPTS=maybe: expected a boolean: true/false, yes/no, on/off or 1/0");
    unsetenv("LOG_INTERRUPTS");
    expect_error(AGENT, ARGS("--force-cleanup=2"), "--force-cleanup=2", "boolean");
    expect_error(AGENT, ARGS("--cleanup-on-interrupt="), "--cleanup-on-interrupt=:", "boolean");
}

static void test_config_bad_enum(void **state)
{
    (void)state;
    setenv("INTERRUPT_PRIORITY", "urgent", 1);
    expect_error_msg(AGENT, NOARGS, "INTERRUPT_PRIORITY=urgent: expected one of low|normal|high");
    unsetenv("INTERRUPT_PRIORITY");
    expect_error(CLI, ARGS("--log-format=xml"), "--log-format=xml", "text|json");
    expect_error(CLI, ARGS("--log-level", "trace"), "--log-level=trace", "debug|info|warn|error");
}

static void test_config_bad_url(void **state)
{
    (void)state;
    setenv("IHC_PUB_URL", "http://x:1", 1);
    expect_error(AGENT, NOARGS, "IHC_PUB_URL=http://x:1", "tcp://");
    setenv("IHC_PUB_URL", "tcp://", 1);
    expect_error(AGENT, NOARGS, "IHC_PUB_URL=tcp://", NULL);
    setenv("IHC_PUB_URL", "tcp://host", 1); /* no port */
    expect_error(AGENT, NOARGS, "IHC_PUB_URL=tcp://host", NULL);
    setenv("IHC_PUB_URL", "tcp://host:99999", 1);
    expect_error(AGENT, NOARGS, "IHC_PUB_URL=tcp://host:99999", NULL);
    setenv("IHC_PUB_URL", "ipc://", 1);
    expect_error(AGENT, NOARGS, "IHC_PUB_URL=ipc://", NULL);
    unsetenv("IHC_PUB_URL");
    expect_error(CLI, ARGS("--control", "tcp://a b:1"), "--control=tcp://a b:1", NULL);
    expect_error(AGENT, ARGS("--local=/tmp/sock"), "--local=/tmp/sock", "unix:///");
    expect_error(AGENT, ARGS("--local=unix://rel.sock"), "--local=unix://rel.sock", "ABSOLUTE");
    expect_error(AGENT, ARGS("--local=tcp://127.0.0.1:1"), "--local=tcp://127.0.0.1:1", "unix://");
    expect_error(CLI, ARGS("--local=unix:///"), "--local=unix:///", NULL);
    static const char *const locals[] = {"unix:///run/ihc/agent.sock", "ipc:///tmp/old.sock"};
    for (size_t i = 0; i < 2; i++) { /* the old ipc:// form still names the same socket */
        ihc_config cfg;
        char err[256];
        setenv("IHC_LOCAL_URL", locals[i], 1);
        TH_PASS(load(&cfg, AGENT, err, sizeof err, NULL, NULL, NOARGS));
        assert_string_equal(cfg.local_url, locals[i]);
        bool legacy = false;
        assert_string_equal(ihc_config_local_path(cfg.local_url, &legacy),
                            i == 0 ? "/run/ihc/agent.sock" : "/tmp/old.sock");
        assert_true(legacy == (i == 1));
        ihc_config_fini(&cfg);
    }
    assert_null(ihc_config_local_path("off", NULL));
    /* the coordinator does not listen on ipc:// (nng#1518); agents may still be told to */
    expect_error(COORD, ARGS("--control=ipc:///tmp/c.sock"), "IHC_CONTROL_URL=ipc:///tmp/c.sock",
                 "nng#1518");
    setenv("IHC_REPORT_URL", "ipc:///tmp/r.sock", 1);
    expect_error(COORD, NOARGS, "IHC_REPORT_URL=ipc:///tmp/r.sock", "tcp://127.0.0.1:PORT");
    {
        ihc_config cfg;
        char err[256];
        TH_PASS(load(&cfg, AGENT, err, sizeof err, NULL, NULL, NOARGS));
        ihc_config_fini(&cfg);
    }
    unsetenv("IHC_REPORT_URL");
    setenv("IHC_LOCAL_MAX_CONNS", "0", 1);
    expect_error(AGENT, NOARGS, "IHC_LOCAL_MAX_CONNS=0", NULL);
    unsetenv("IHC_LOCAL_MAX_CONNS");
    setenv("IHC_LOCAL_REQUEST_DEADLINE", "0.05", 1);
    expect_error(AGENT, NOARGS, "IHC_LOCAL_REQUEST_DEADLINE=0.05", NULL);
    unsetenv("IHC_LOCAL_REQUEST_DEADLINE");
    expect_error(AGENT, ARGS("--local-request-deadline=601"), "--local-request-deadline=601", NULL);
    expect_error(AGENT, ARGS("--pub=off"), "--pub=off", "tcp://"); /* only local can be off */
    static const char *const offs[] = {"off", "none", ""};
    for (size_t i = 0; i < 3; i++) { /* the local endpoint can be switched off */
        ihc_config cfg;
        char err[256];
        setenv("IHC_LOCAL_URL", offs[i], 1);
        TH_PASS(load(&cfg, AGENT, err, sizeof err, NULL, NULL, NOARGS));
        assert_string_equal(cfg.local_url, offs[i]);
        ihc_config_fini(&cfg);
    }
    unsetenv("IHC_LOCAL_URL");
    expect_error(COORD, ARGS("--report=tls+tcp://h:x"), "--report=tls+tcp://h:x", NULL);
    expect_error(COORD, ARGS("--redis=tcp://127.0.0.1:6379"), "--redis=tcp://127.0.0.1:6379",
                 "redis://");
    expect_error(COORD, ARGS("--redis=redis://"), "--redis=redis://", "unix://");
    setenv("IHC_REDIS_URL", "unix://", 1);
    expect_error(COORD, NOARGS, "IHC_REDIS_URL=unix://", NULL);
    /* the setting is named, the Redis URL parser says what is wrong */
    expect_error_msg(COORD, ARGS("--redis=redis://h:0/1"),
                     "--redis=redis://h:0/1: port must be a number in [1, 65535]");
    setenv("IHC_REDIS_URL", "unix://relative.sock", 1);
    expect_error(COORD, NOARGS, "IHC_REDIS_URL=unix://relative.sock: ", "takes no host");
    setenv("IHC_REDIS_URL", "unix:///run/redis.sock?database=1", 1);
    expect_error(COORD, NOARGS, "IHC_REDIS_URL=unix:///run/redis.sock?database=1: ", "?db=DB");
    /* a password in a refused URL is not echoed */
    setenv("IHC_REDIS_URL", "redis://bob:hunter2@h:99999/0", 1);
    expect_error_msg(COORD, NOARGS,
                     "IHC_REDIS_URL=redis://***@h:99999/0: port must be a number "
                     "in [1, 65535]");
    setenv("IHC_REDIS_URL", "unix://:hunter2%zz@/run/redis.sock", 1);
    expect_error(COORD, NOARGS, "IHC_REDIS_URL=unix://***@/run/redis.sock: ", "%-escape");
    unsetenv("IHC_REDIS_URL");
}

/* Agents and clients take one URL per coordinator; coordinators listen on one. */
static void test_config_url_lists(void **state)
{
    (void)state;
    ihc_config cfg;
    char err[512] = "";
    TH_PASS(
        load(&cfg, AGENT, err, sizeof err, NULL, NULL,
             ARGS("--pub", "tcp://a:7450,tcp://b:7450", "--report", "tcp://a:7451,tcp://b:7451")));
    assert_string_equal(cfg.pub_url, "tcp://a:7450,tcp://b:7450");
    ihc_config_fini(&cfg);
    TH_PASS(load(&cfg, CLI, err, sizeof err, NULL, NULL,
                 ARGS("--control", "tcp://a:7452,tcp://b:7452,ipc:///tmp/c")));
    assert_string_equal(cfg.control_url, "tcp://a:7452,tcp://b:7452,ipc:///tmp/c");
    ihc_config_fini(&cfg);
    /* the bad item is named */
    expect_error(AGENT, ARGS("--pub", "tcp://a:1,http://b:2", "--report", "tcp://a:3,tcp://b:4"),
                 "item 2 'http://b:2'", "not an nng URL");
    expect_error(CLI, ARGS("--control", "tcp://a:1,,tcp://b:2"), "empty item 2", NULL);
    expect_error(AGENT, ARGS("--pub", "tcp://a:1,tcp://b:2", "--report", "tcp://a:3"),
                 "names 2 coordinators but IHC_REPORT_URL names 1", NULL);
    expect_error(COORD, ARGS("--control", "tcp://0.0.0.0:1,tcp://0.0.0.0:2"),
                 "IHC_CONTROL_URL (--control): a coordinator listens on one URL", NULL);
    /* a tls+tcp:// item needs the CA like a single URL does */
    expect_error(AGENT, ARGS("--pub", "tcp://a:1,tls+tcp://b:2", "--report", "tcp://a:3,tcp://b:4"),
                 "tls+tcp://b:2", NULL);
}

/* Every form the README documents passes the start-up check, unix:// sockets included. */
static void test_config_redis_url_forms(void **state)
{
    (void)state;
    static const char *const good[] = {
        "redis://127.0.0.1:6379/0",
        "redis://db.internal",
        "redis://:p%40ss%3Aw%2Frd%25@[::1]:6380/2",
        "redis://ihc:pw@h/1",
        "unix:///var/run/redis/redis-server.sock",
        "unix:///var/run/redis/redis-server.sock?db=3",
        "unix://:pw@/run/redis.sock?db=1",
        "unix://ihc:p%40ss@/run/redis.sock",
        "redis-sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3/ihc/0",
        "redis-sentinel://:pw@s1/ihc",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ihc_config cfg;
        char err[512] = "";
        setenv("IHC_REDIS_URL", good[i], 1);
        int rc = load(&cfg, COORD, err, sizeof err, NULL, NULL, NOARGS);
        if (rc != IHC_OK)
            fail_msg("IHC_REDIS_URL=%s: %s", good[i], err);
        assert_string_equal(cfg.redis_url, good[i]);
        ihc_config_fini(&cfg);
    }
    unsetenv("IHC_REDIS_URL");
}

static void test_config_bad_http_addr(void **state)
{
    (void)state;
    expect_error_msg(COORD, ARGS("--http=localhost"),
                     "--http=localhost: expected HOST:PORT with a port in [0, 65535]");
    expect_error(COORD, ARGS("--http=:8080"), "--http=:8080", "HOST:PORT");
    setenv("IHC_HTTP_ADDR", "0.0.0.0:", 1);
    expect_error(COORD, NOARGS, "IHC_HTTP_ADDR=0.0.0.0:", "HOST:PORT");
    unsetenv("IHC_HTTP_ADDR");
}

static void test_config_bad_port(void **state)
{
    (void)state;
    expect_error(COORD, ARGS("--http", "0.0.0.0:65536"), "--http=0.0.0.0:65536", "[0, 65535]");
    expect_error(COORD, ARGS("--http", "0.0.0.0:-1"), "--http=0.0.0.0:-1", NULL);
    expect_error(COORD, ARGS("--http", "0.0.0.0:80a"), "--http=0.0.0.0:80a", NULL);
    expect_error(COORD, ARGS("--http", "0.0.0.0:123456"), "--http=0.0.0.0:123456", NULL);
}

static void test_config_bad_simulate(void **state)
{
    (void)state;
    expect_error(AGENT, ARGS("--simulate", "dev-1,bad id"), "--simulate=dev-1,bad id",
                 "'bad id' is not a valid hardware_id");
    expect_error(AGENT, ARGS("--simulate=dev-1,,dev-2"), "--simulate=dev-1,,dev-2", "''");
    expect_error(AGENT, ARGS("--simulate=*"), "--simulate=*", "hardware_id");
    char longhw[200];
    memset(longhw, 'a', 129);
    longhw[129] = '\0';
    expect_error(AGENT, ARGS("--simulate", longhw), "--simulate=aaaa", "hardware_id");
    expect_error(AGENT, ARGS("--id", "has space"), "--id=has space", "printable ASCII");
    setenv("IHC_AGENT_ID", "", 1);
    expect_error(AGENT, NOARGS, "IHC_AGENT_ID=:", NULL);
}

static void test_config_unknown_flag(void **state)
{
    (void)state;
    expect_error_msg(COORD, ARGS("--foo"), "unknown option '--foo'");
    expect_error_msg(COORD, ARGS("--foo=bar"), "unknown option '--foo'");
    expect_error_msg(AGENT, ARGS("-x"), "unknown option '-x'");
    expect_error(AGENT, ARGS("--pubx=tcp://h:1"), "unknown option '--pubx'", NULL);
    /* a value with a newline is shown without it */
    ihc_config cfg;
    char err[256];
    assert_int_equal(load(&cfg, AGENT, err, sizeof err, NULL, NULL, ARGS("--a\nb")), IHC_ECONFIG);
    assert_null(strchr(err, '\n'));
    ihc_config_fini(&cfg);
}

static void test_config_other_role_flag(void **state)
{
    (void)state;
    expect_error_msg(AGENT, ARGS("--http=0.0.0.0:1"), "unknown option '--http'");
    expect_error_msg(CLI, ARGS("--report", "tcp://h:1"), "unknown option '--report'");
    expect_error_msg(COORD, ARGS("--simulate", "dev-1"), "unknown option '--simulate'");
    expect_error_msg(CLI, ARGS("--max-active-sessions=5"),
                     "unknown option '--max-active-sessions'");
}

static void test_config_missing_value(void **state)
{
    (void)state;
    expect_error_msg(AGENT, ARGS("--pub"), "option '--pub' requires a value (URL)");
    expect_error(AGENT, ARGS("--interrupt-timeout", "--id", "x"), "'--interrupt-timeout'",
                 "requires a value");
    expect_error(AGENT, ARGS("--simulate"), "'--simulate'", "requires a value");
}

static void test_config_secret_file(void **state)
{
    (void)state;
    ihc_config cfg;
    char err[256];
    /* one trailing newline is dropped, not two */
    char *p = write_file("s1", "s3cret\n\n", 8);
    setenv("IHC_SECRET_FILE", p, 1);
    TH_PASS(load(&cfg, AGENT, err, sizeof err, NULL, NULL, NOARGS));
    assert_int_equal(cfg.secret_len, 7);
    assert_memory_equal(cfg.secret, "s3cret\n", 7);
    ihc_config_fini(&cfg);
    assert_null(cfg.secret);
    assert_int_equal(cfg.secret_len, 0);
    unsetenv("IHC_SECRET_FILE");

    /* binary content with a NUL keeps its length; CRLF ending dropped */
    p = write_file("s2", "a\0b\r\n", 5);
    TH_PASS(load(&cfg, CLI, err, sizeof err, NULL, NULL, ARGS("--secret-file", p)));
    assert_int_equal(cfg.secret_len, 3);
    assert_memory_equal(cfg.secret, "a\0b", 3);
    ihc_config_fini(&cfg);

    /* no newline at all */
    p = write_file("s3", "xyz", 3);
    char arg[600];
    snprintf(arg, sizeof arg, "--secret-file=%s", p);
    TH_PASS(load(&cfg, COORD, err, sizeof err, NULL, NULL, ARGS(arg)));
    assert_int_equal(cfg.secret_len, 3);
    assert_memory_equal(cfg.secret, "xyz", 3);
    ihc_config_fini(&cfg);

    /* secret from the environment */
    setenv("IHC_SECRET", "envsecret", 1);
    TH_PASS(load(&cfg, AGENT, err, sizeof err, NULL, NULL, NOARGS));
    assert_int_equal(cfg.secret_len, 9);
    assert_memory_equal(cfg.secret, "envsecret", 9);
    ihc_config_fini(&cfg);
    unsetenv("IHC_SECRET");

    /* HTTP token from a file and from the environment */
    p = write_file("tok", "tok-123\n", 8);
    setenv("IHC_HTTP_TOKEN_FILE", p, 1);
    TH_PASS(load(&cfg, COORD, err, sizeof err, NULL, NULL, NOARGS));
    assert_string_equal(cfg.http_token, "tok-123");
    ihc_config_fini(&cfg);
    assert_null(cfg.http_token);
    unsetenv("IHC_HTTP_TOKEN_FILE");
    setenv("IHC_HTTP_TOKEN", "abc", 1);
    TH_PASS(load(&cfg, COORD, err, sizeof err, NULL, NULL, NOARGS));
    assert_string_equal(cfg.http_token, "abc");
    ihc_config_fini(&cfg);
}

static void test_config_secret_errors(void **state)
{
    (void)state;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/does-not-exist", tmpdir_path);
    setenv("IHC_SECRET_FILE", missing, 1);
    expect_error(AGENT, NOARGS, "IHC_SECRET_FILE=", "No such file or directory");
    expect_error(AGENT, NOARGS, "does-not-exist", NULL);
    unsetenv("IHC_SECRET_FILE");
    expect_error(CLI, ARGS("--secret-file", tmpdir_path), "--secret-file=", "cannot read");

    /* both sources */
    char *p = write_file("both", "x", 1);
    setenv("IHC_SECRET", "abc", 1);
    setenv("IHC_SECRET_FILE", p, 1);
    expect_error(COORD, NOARGS, "IHC_SECRET and IHC_SECRET_FILE are both set", NULL);
    unsetenv("IHC_SECRET_FILE");
    expect_error(COORD, ARGS("--secret-file", p), "IHC_SECRET and --secret-file", "both set");
    unsetenv("IHC_SECRET");
    setenv("IHC_HTTP_TOKEN", "abc", 1);
    setenv("IHC_HTTP_TOKEN_FILE", p, 1);
    expect_error(COORD, NOARGS, "IHC_HTTP_TOKEN and IHC_HTTP_TOKEN_FILE", "both set");
    unsetenv("IHC_HTTP_TOKEN");
    unsetenv("IHC_HTTP_TOKEN_FILE");

    /* empty secrets, never echoing the value */
    setenv("IHC_SECRET", "", 1);
    expect_error_msg(AGENT, NOARGS, "IHC_SECRET: expected a non-empty secret");
    unsetenv("IHC_SECRET");
    p = write_file("empty", "\n", 1);
    expect_error(AGENT, ARGS("--secret-file", p), "--secret-file=", "is empty");
    p = write_file("empty2", "", 0);
    expect_error(AGENT, ARGS("--secret-file", p), "--secret-file=", "is empty");
    expect_error(AGENT, ARGS("--secret-file="), "--secret-file=:", "path");
    setenv("IHC_HTTP_TOKEN", "has space", 1);
    ihc_config cfg;
    char err[256];
    assert_int_equal(load(&cfg, COORD, err, sizeof err, NULL, NULL, NOARGS), IHC_ECONFIG);
    assert_non_null(strstr(err, "IHC_HTTP_TOKEN"));
    assert_null(strstr(err, "has space"));
    ihc_config_fini(&cfg);
    unsetenv("IHC_HTTP_TOKEN");

    /* too large */
    size_t big = 64 * 1024 + 2;
    char *data = malloc(big);
    assert_non_null(data);
    memset(data, 'k', big);
    p = write_file("big", data, big);
    free(data);
    expect_error(AGENT, ARGS("--secret-file", p), "--secret-file=", "larger than 65536");
}

/* ---- usage and dump ------------------------------------------------------------------- */

static char *capture_usage(unsigned role)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    ihc_config_usage(f, role, "prog");
    fclose(f);
    return buf;
}

static char *capture_dump(const ihc_config *cfg, unsigned role)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    ihc_config_dump(f, cfg, role);
    fclose(f);
    return buf;
}

static void test_config_usage(void **state)
{
    (void)state;
    const unsigned roles[] = {COORD, AGENT, CLI};
    for (size_t r = 0; r < 3; r++) {
        char *u = capture_usage(roles[r]);
        assert_non_null(strstr(u, "Usage: prog"));
        assert_non_null(strstr(u, "--help"));
        assert_non_null(strstr(u, "--print-config"));
        for (size_t i = 0; i < N_EXPECTED; i++) {
            bool in = (expected[i].roles & roles[r]) != 0;
            const char *name = expected[i].env ? expected[i].env : expected[i].flag;
            char pat[80];
            snprintf(pat, sizeof pat, "%s ", name);
            if (expected[i].env)
                snprintf(pat, sizeof pat, "env %s;", expected[i].env);
            if (in && strstr(u, pat) == NULL)
                fail_msg("usage of role %u lacks %s:\n%s", roles[r], pat, u);
            if (!in && strstr(u, pat) != NULL)
                fail_msg("usage of role %u shows %s of another role", roles[r], pat);
            if (expected[i].flag) {
                snprintf(pat, sizeof pat, "  %s ", expected[i].flag);
                if (in != (strstr(u, pat) != NULL))
                    fail_msg("usage of role %u: flag %s presence wrong", roles[r], pat);
            }
        }
        free(u);
    }
    char *u = capture_usage(COORD);
    assert_non_null(strstr(u, "default tcp://0.0.0.0:7450"));
    assert_non_null(strstr(u, "default 5.0, range [0.01, 3600] s"));
    assert_non_null(strstr(u, "default 100, range [1, 1000000]"));
    assert_non_null(strstr(u, "one of low|normal|high"));
    free(u);
    u = capture_usage(AGENT);
    assert_non_null(strstr(u, "default tcp://127.0.0.1:7450"));
    assert_non_null(strstr(u, "default <hostname>:<pid>"));
    free(u);
}

static void test_config_dump(void **state)
{
    (void)state;
    char *p = write_file("dumpsecret", "TOPSECRET\n", 10);
    setenv("IHC_SECRET_FILE", p, 1);
    setenv("IHC_HTTP_TOKEN", "TOKENVALUE", 1);
    setenv("MAX_ACTIVE_SESSIONS", "42", 1);
    setenv("IHC_REDIS_URL", "redis://user:hunter2@db:6379/1", 1);
    ihc_config cfg;
    char err[256];
    TH_PASS(load(&cfg, COORD, err, sizeof err, NULL, NULL,
                 ARGS("--interrupt-priority", "low", "--log-format=json")));
    char *d = capture_dump(&cfg, COORD);
    for (size_t i = 0; i < N_EXPECTED; i++) {
        bool in = (expected[i].roles & COORD) != 0;
        char pat[80];
        snprintf(pat, sizeof pat, "%s=", expected[i].env ? expected[i].env : expected[i].flag);
        if (in != (strstr(d, pat) != NULL))
            fail_msg("dump: %s presence wrong:\n%s", pat, d);
    }
    assert_non_null(strstr(d, "IHC_PUB_URL=tcp://0.0.0.0:7450 (default)\n"));
    assert_non_null(strstr(d, "MAX_ACTIVE_SESSIONS=42 (env)\n"));
    assert_non_null(strstr(d, "INTERRUPT_PRIORITY=low (flag)\n"));
    assert_non_null(strstr(d, "IHC_LOG_FORMAT=json (flag)\n"));
    assert_non_null(strstr(d, "INTERRUPT_TIMEOUT=5 (default)\n"));
    assert_non_null(strstr(d, "LOG_TIMING=true (default)\n"));
    assert_non_null(strstr(d, "IHC_STATE_DIR=(none) (default)\n"));
    assert_non_null(strstr(d, "IHC_SECRET=(none) (default)\n"));
    assert_non_null(strstr(d, "IHC_SECRET_FILE=(set) (env)\n"));
    assert_non_null(strstr(d, "IHC_HTTP_TOKEN=(set) (env)\n"));
    assert_non_null(strstr(d, "IHC_REDIS_URL=redis://***@db:6379/1 (env)\n"));
    assert_null(strstr(d, "TOPSECRET"));
    assert_null(strstr(d, "TOKENVALUE"));
    assert_null(strstr(d, "hunter2"));
    free(d);
    ihc_config_fini(&cfg);

    /* a unix:// URL's password is masked the same way */
    TH_PASS(load(&cfg, COORD, err, sizeof err, NULL, NULL,
                 ARGS("--redis=unix://ihc:hunter2@/run/redis.sock?db=2")));
    d = capture_dump(&cfg, COORD);
    assert_non_null(strstr(d, "IHC_REDIS_URL=unix://***@/run/redis.sock?db=2 (flag)\n"));
    assert_null(strstr(d, "hunter2"));
    free(d);
    ihc_config_fini(&cfg);

    TH_PASS(load(&cfg, AGENT, err, sizeof err, NULL, NULL, ARGS("--simulate=a,b")));
    d = capture_dump(&cfg, AGENT);
    assert_non_null(strstr(d, "--simulate=a,b (flag)\n"));
    assert_non_null(strstr(d, "IHC_SECRET_FILE=(set) (env)\n"));
    assert_null(strstr(d, "IHC_HTTP_ADDR"));
    for (size_t i = 0; i < N_EXPECTED; i++) {
        bool in = (expected[i].roles & AGENT) != 0;
        char pat[80];
        snprintf(pat, sizeof pat, "%s=", expected[i].env ? expected[i].env : expected[i].flag);
        if (in != (strstr(d, pat) != NULL))
            fail_msg("agent dump: %s presence wrong:\n%s", pat, d);
    }
    free(d);
    ihc_config_fini(&cfg);
}

static int group_setup(void **state)
{
    (void)state;
    char *d = th_tmpdir("config");
    if (d == NULL)
        return -1;
    snprintf(tmpdir_path, sizeof tmpdir_path, "%s", d);
    free(d);
    return 0;
}

/* ---- TLS ------------------------------------------------------------------------------ */

static void test_config_tls(void **state)
{
    (void)state;
    char certs[400], cert[500], key[500], ca[500], akey[500], old[500], oldkey[500];
    snprintf(certs, sizeof certs, "%s/certs", tmpdir_path);
    assert_int_equal(th_make_certs(certs, NULL), 0);
    assert_int_equal(
        th_make_certs(certs, "--expired --agents old --clients '' --coordinator-names ''"), 0);
    snprintf(cert, sizeof cert, "%s/coordinator.pem", certs);
    snprintf(key, sizeof key, "%s/coordinator.key", certs);
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    snprintf(akey, sizeof akey, "%s/agent-1.key", certs);
    snprintf(old, sizeof old, "%s/old.pem", certs);
    snprintf(oldkey, sizeof oldkey, "%s/old.key", certs);

    /* a tls+tcp:// URL without the files it needs, named by where the URL came from */
    setenv("IHC_PUB_URL", "tls+tcp://0.0.0.0:7450", 1);
    expect_error(COORD, NOARGS, "tls+tcp://0.0.0.0:7450 is a tls+tcp:// URL",
                 "IHC_TLS_CERT and IHC_TLS_KEY are not set");
    expect_error(AGENT, NOARGS, "IHC_TLS_CA is not set", NULL);
    expect_error(CLI, ARGS("--pub", "tls+tcp://h:1"), "tls+tcp://h:1 is a tls+tcp:// URL",
                 "IHC_TLS_CA is not set");
    unsetenv("IHC_PUB_URL");
    expect_error(CLI, ARGS("--control", "tls+tcp://h:1"), "IHC_TLS_CA is not set", NULL);
    expect_error(AGENT, ARGS("--report", "tls+tcp://h:1"), "IHC_TLS_CA is not set", NULL);
    /* a plain URL does not need them; a coordinator's report URL does */
    expect_error(COORD, ARGS("--report", "tls+tcp://0.0.0.0:1"), "IHC_TLS_CERT", NULL);

    /* pairs and files */
    expect_error(COORD, ARGS("--tls-cert", cert), "--tls-cert is set without IHC_TLS_KEY", NULL);
    setenv("IHC_TLS_KEY", key, 1);
    expect_error(AGENT, NOARGS, "IHC_TLS_KEY is set without IHC_TLS_CERT", NULL);
    expect_error(AGENT, ARGS("--tls-cert", ca),
                 "does not match the certificate in --tls-cert=", "CN=ihc test CA");
    unsetenv("IHC_TLS_KEY");
    expect_error(AGENT, ARGS("--tls-cert", cert, "--tls-key", akey),
                 "--tls-key=", "does not match");
    expect_error(COORD, ARGS("--tls-ca", ca), "--tls-ca is set but IHC_TLS_CERT is not", NULL);
    setenv("IHC_TLS_CA", key, 1);
    expect_error(AGENT, NOARGS, "IHC_TLS_CA=", "not a PEM certificate");
    setenv("IHC_TLS_CA", "/nonexistent/ca.pem", 1);
    expect_error(CLI, NOARGS, "IHC_TLS_CA=/nonexistent/ca.pem: cannot read the file",
                 "No such file or directory");
    unsetenv("IHC_TLS_CA");
    expect_error(AGENT, ARGS("--tls-server-name", "a b"), "--tls-server-name=a b",
                 "expected a host name");
    expect_error(COORD, ARGS("--tls-server-name", "x"), "unknown option '--tls-server-name'", NULL);

    /* loaded once, for the whole program */
    ihc_config cfg;
    char err[512];
    setenv("IHC_TLS_CERT", cert, 1);
    setenv("IHC_TLS_KEY", key, 1);
    setenv("IHC_TLS_CA", ca, 1);
    TH_PASS(load(&cfg, COORD, err, sizeof err, NULL, NULL, ARGS("--pub", "tls+tcp://0.0.0.0:1")));
    assert_non_null(cfg.tls);
    assert_string_equal(cfg.tls_warning, "");
    assert_string_equal(cfg.tls_cert, cert);
    ihc_config_fini(&cfg);
    assert_null(cfg.tls);
    assert_null(cfg.tls_cert);
    unsetenv("IHC_TLS_CERT");
    unsetenv("IHC_TLS_KEY");
    TH_PASS(load(&cfg, AGENT, err, sizeof err, NULL, NULL,
                 ARGS("--pub", "tls+tcp://h:1", "--tls-server-name", "coordinator")));
    assert_non_null(cfg.tls);
    assert_string_equal(cfg.tls_server_name, "coordinator");
    ihc_config_fini(&cfg);
    /* an expired certificate loads, with a warning for the program to log */
    TH_PASS(load(&cfg, AGENT, err, sizeof err, NULL, NULL,
                 ARGS("--tls-cert", old, "--tls-key", oldkey)));
    assert_non_null(strstr(cfg.tls_warning, "--tls-cert="));
    assert_non_null(strstr(cfg.tls_warning, "has expired"));
    ihc_config_fini(&cfg);
    unsetenv("IHC_TLS_CA");
    /* nothing set: no TLS */
    TH_PASS(load(&cfg, CLI, err, sizeof err, NULL, NULL, NOARGS));
    assert_null(cfg.tls);
    ihc_config_fini(&cfg);
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir_path);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_config_defaults_coordinator, reset_env),
        cmocka_unit_test_setup(test_config_defaults_agent, reset_env),
        cmocka_unit_test_setup(test_config_defaults_cli, reset_env),
        cmocka_unit_test_setup(test_config_env_overrides, reset_env),
        cmocka_unit_test_setup(test_config_flag_overrides_env, reset_env),
        cmocka_unit_test_setup(test_config_flag_forms, reset_env),
        cmocka_unit_test_setup(test_config_actions, reset_env),
        cmocka_unit_test_setup(test_config_positional, reset_env),
        cmocka_unit_test_setup(test_config_bad_number, reset_env),
        cmocka_unit_test_setup(test_config_out_of_bounds, reset_env),
        cmocka_unit_test_setup(test_config_bad_bool, reset_env),
        cmocka_unit_test_setup(test_config_bad_enum, reset_env),
        cmocka_unit_test_setup(test_config_bad_url, reset_env),
        cmocka_unit_test_setup(test_config_redis_url_forms, reset_env),
        cmocka_unit_test_setup(test_config_url_lists, reset_env),
        cmocka_unit_test_setup(test_config_bad_http_addr, reset_env),
        cmocka_unit_test_setup(test_config_bad_port, reset_env),
        cmocka_unit_test_setup(test_config_bad_simulate, reset_env),
        cmocka_unit_test_setup(test_config_unknown_flag, reset_env),
        cmocka_unit_test_setup(test_config_other_role_flag, reset_env),
        cmocka_unit_test_setup(test_config_missing_value, reset_env),
        cmocka_unit_test_setup(test_config_secret_file, reset_env),
        cmocka_unit_test_setup(test_config_secret_errors, reset_env),
        cmocka_unit_test_setup(test_config_usage, reset_env),
        cmocka_unit_test_setup(test_config_dump, reset_env),
        cmocka_unit_test_setup(test_config_tls, reset_env),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
