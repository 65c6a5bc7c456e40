/* `ihc` CLI tests: the built binary against a fake coordinator (control REP socket and event
 * PUB socket in this process) — outputs, --json, exit statuses, unreachable, watch. */
#include "harness.h"

#include "defaults.h"
#include "err.h"
#include "wire.h"

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char full_result[] =
    "{\"success\":true,\"interrupt_id\":17,\"hardware_id\":\"dev-1\",\"epoch\":4,"
    "\"interrupted_modules\":[\"text_processing\",\"audio_generation\"],"
    "\"cleaned_sessions\":[\"s-1\",\"s-2\"],"
    "\"modules\":[{\"agent\":\"n1:42\",\"name\":\"text_processing\",\"status\":\"ok\","
    "\"time_ms\":0.2,\"error\":null},{\"agent\":\"n1:42\",\"name\":\"audio_generation\","
    "\"status\":\"ok\",\"time_ms\":0.3,\"error\":null}],"
    "\"agents\":{\"expected\":[\"n1:42\"],\"answered\":[\"n1:42\"],\"missing\":[]},"
    "\"reason\":\"user stop\",\"total_time_ms\":0.9,\"persisted\":true}";

static const char incomplete_result[] =
    "{\"success\":false,\"interrupt_id\":18,\"hardware_id\":\"dev-2\",\"epoch\":5,"
    "\"interrupted_modules\":[],\"cleaned_sessions\":[],\"modules\":[{\"agent\":\"n1:42\","
    "\"name\":\"text_processing\",\"status\":\"timed_out\",\"time_ms\":500.0,"
    "\"error\":null}],\"agents\":{\"expected\":[\"n1:42\",\"n2:7\"],"
    "\"answered\":[\"n1:42\"],\"missing\":[\"n2:7\"]},\"total_time_ms\":5000.4,"
    "\"persisted\":true,\"error\":\"1 agent did not answer: n2:7\"}";

static const char sessions_doc[] =
    "{\"count\":2,\"sessions\":[{\"session_id\":\"s-1\",\"hardware_id\":\"dev-1\","
    "\"agent_id\":\"n1:42\",\"state\":\"active\",\"epoch\":3,\"created_ms\":1000,"
    "\"updated_ms\":1000,\"module\":\"text_processing\",\"pid\":0,\"data\":null},"
    "{\"session_id\":\"session-long-2\",\"hardware_id\":\"dev-1\",\"agent_id\":\"n1:42\","
    "\"state\":\"active\",\"epoch\":3,\"created_ms\":1000,\"updated_ms\":1000,"
    "\"module\":null,\"pid\":4242,\"data\":null}]}";

static const char agents_doc[] =
    "{\"count\":1,\"agents\":[{\"agent_id\":\"n1:42\",\"node\":\"n1\",\"pid\":42,"
    "\"connected\":true,\"started_ms\":1000,\"last_seen_ms\":1000,\"sessions\":2,"
    "\"hardware_ids\":[\"dev-1\"],\"modules\":[{\"name\":\"text_processing\",\"methods\":"
    "[\"stop\"],\"timeout_ms\":500,\"enabled\":true},{\"name\":\"audio_generation\","
    "\"methods\":[\"stop\"],\"timeout_ms\":500,\"enabled\":true}]}]}";

static const char flags_doc[] = "{\"global_interrupt_flag\":true,\"interrupt_hardware_id\":"
                                "\"dev-1\",\"set_ms\":1700000000000,\"reason\":\"user stop\"}";
static const char stats_doc[] =
    "{\"total_interrupts\":12,\"successful_interrupts\":11,\"success_rate\":0.9167,"
    "\"redis_connected\":true}";

/* ---- fake coordinator -------------------------------------------------------------------- */

static struct {
    nng_socket rep, pub;
    pthread_t thread;
    char control_url[64], pub_url[64];
    atomic_bool stop;
    pthread_mutex_t mu;
    char last_op[32], last_hw[160], last_reason[256];
    int64_t last_timeout;
} fake = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void reply(int status, const char *json)
{
    ihc_msg m = {.type = IHC_MSG_CONTROL_RESPONSE};
    m.u.control_response.status = status;
    m.u.control_response.json = (char *)json;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (ihc_wire_encode(&m, NULL, &buf, &len) == IHC_OK)
        nng_send(fake.rep, buf, len, 0);
    free(buf);
}

static void *fake_main(void *unused)
{
    (void)unused;
    while (!atomic_load(&fake.stop)) {
        nng_msg *msg = NULL;
        int rv = nng_recvmsg(fake.rep, &msg, 0);
        if (rv == NNG_ETIMEDOUT)
            continue;
        if (rv != 0)
            break;
        ihc_msg *m = NULL;
        int rc = ihc_wire_decode(nng_msg_body(msg), nng_msg_len(msg), NULL, &m, NULL, 0);
        nng_msg_free(msg);
        if (rc != IHC_OK) {
            reply(400, "{\"error\":\"malformed request\"}");
            continue;
        }
        ihc_control_request *q = &m->u.control_request;
        pthread_mutex_lock(&fake.mu);
        snprintf(fake.last_op, sizeof fake.last_op, "%s", q->op);
        snprintf(fake.last_hw, sizeof fake.last_hw, "%s", q->hw ? q->hw : "(null)");
        snprintf(fake.last_reason, sizeof fake.last_reason, "%s", q->reason ? q->reason : "(null)");
        fake.last_timeout = q->timeout_ms;
        pthread_mutex_unlock(&fake.mu);
        const char *hw = q->hw ? q->hw : "";
        if (strcmp(q->op, "interrupt") == 0) {
            if (strcmp(hw, "dev-2") == 0)
                reply(200, incomplete_result);
            else if (strcmp(hw, "*") == 0)
                reply(403, "{\"error\":\"hardware_id: global interrupts are disabled\"}");
            else if (strcmp(hw, "busy") == 0)
                reply(503, "{\"error\":\"too many interrupts in flight\"}");
            else
                reply(200, full_result);
        } else if (strcmp(q->op, "sessions") == 0) {
            reply(200, sessions_doc);
        } else if (strcmp(q->op, "agents") == 0) {
            reply(200, agents_doc);
        } else if (strcmp(q->op, "flags") == 0) {
            reply(200, flags_doc);
        } else if (strcmp(q->op, "flags_reset") == 0) {
            reply(200, "{\"global_interrupt_flag\":false,\"interrupt_hardware_id\":null,"
                       "\"set_ms\":0,\"reason\":null}");
        } else if (strcmp(q->op, "stats") == 0) {
            reply(200, stats_doc);
        } else {
            reply(404, "{\"error\":\"unknown op\"}");
        }
        ihc_msg_free(m);
    }
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    atomic_store(&fake.stop, false);
    assert_int_equal(nng_rep0_open(&fake.rep), 0);
    nng_socket_set_ms(fake.rep, NNG_OPT_RECVTIMEO, 50);
    snprintf(fake.control_url, sizeof fake.control_url, "tcp://127.0.0.1:%d", th_free_port());
    assert_int_equal(nng_listen(fake.rep, fake.control_url, NULL, 0), 0);
    assert_int_equal(nng_pub0_open(&fake.pub), 0);
    snprintf(fake.pub_url, sizeof fake.pub_url, "tcp://127.0.0.1:%d", th_free_port());
    assert_int_equal(nng_listen(fake.pub, fake.pub_url, NULL, 0), 0);
    assert_int_equal(pthread_create(&fake.thread, NULL, fake_main, NULL), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    atomic_store(&fake.stop, true);
    pthread_join(fake.thread, NULL);
    nng_close(fake.rep);
    nng_close(fake.pub);
    return 0;
}

/* ---- running the CLI ------------------------------------------------------------------------- */

typedef struct {
    int status; /* exit status; 128+N when killed by signal N; -1 when it did not exit */
    char *out, *err;
} run_result;

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return strdup("");
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static char g_dir[256];

/* Starts `ihc args…` with stdout and stderr in files; env entries "K=V" (NULL-terminated). */
static pid_t start_cli(const char *const *args, char *const *env)
{
    char *argv[40];
    int n = 0;
    argv[n++] = "/bin/sh";
    argv[n++] = "-c";
    argv[n++] = "exec \"$0\" \"$@\" >\"$CLI_OUT\" 2>\"$CLI_ERR\"";
    argv[n++] = (char *)th_bin("ihc");
    for (int i = 0; args[i] != NULL && n < 38; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    static char out_env[300], err_env[300];
    snprintf(out_env, sizeof out_env, "CLI_OUT=%s/out", g_dir);
    snprintf(err_env, sizeof err_env, "CLI_ERR=%s/err", g_dir);
    char *envs[8] = {out_env, err_env};
    int k = 2;
    for (int i = 0; env != NULL && env[i] != NULL && k < 7; i++)
        envs[k++] = env[i];
    envs[k] = NULL;
    pid_t pid = th_spawn(argv, NULL, envs);
    assert_true(pid > 0);
    return pid;
}

static run_result finish(pid_t pid, int timeout_ms)
{
    run_result r = {.status = -1};
    int st = th_wait_exit(pid, timeout_ms);
    if (st == -1)
        th_stop(pid, SIGKILL, 1000);
    else if (WIFEXITED(st))
        r.status = WEXITSTATUS(st);
    else if (WIFSIGNALED(st))
        r.status = 128 + WTERMSIG(st); /* shows in failure messages */
    char p[300];
    snprintf(p, sizeof p, "%s/out", g_dir);
    r.out = slurp(p);
    snprintf(p, sizeof p, "%s/err", g_dir);
    r.err = slurp(p);
    return r;
}

static run_result run_cli_env(char *const *env, const char *const *args)
{
    return finish(start_cli(args, env), 15000);
}

#define CLI(...) run_cli_env(NULL, (const char *const[]){__VA_ARGS__, NULL})
#define CTL      "--control", fake.control_url

static void expect(run_result *r, int status, const char *in_out, const char *in_err)
{
    if (r->status != status || (in_out && strstr(r->out, in_out) == NULL) ||
        (in_err && strstr(r->err, in_err) == NULL))
        fail_msg("want exit %d, out~'%s', err~'%s'; got exit %d\n--- out:\n%s--- err:\n%s", status,
                 in_out ? in_out : "", in_err ? in_err : "", r->status, r->out, r->err);
}

static void done(run_result *r)
{
    free(r->out);
    free(r->err);
}

static int dir_setup(void **state)
{
    char *d = th_tmpdir("cli");
    assert_non_null(d);
    snprintf(g_dir, sizeof g_dir, "%s", d);
    free(d);
    return setup(state);
}

static int dir_teardown(void **state)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return teardown(state);
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_cli_interrupt(void **state)
{
    (void)state;
    run_result r = CLI(CTL, "interrupt", "dev-1", "--reason", "user stop", "--timeout", "750");
    expect(&r, 0,
           "interrupted dev-1 (id 17, epoch 4) in 0.9 ms: 2 sessions on 1 agent; modules: "
           "text_processing ok 0.2 ms, audio_generation ok 0.3 ms; missing: none\n",
           NULL);
    assert_string_equal(r.err, "");
    done(&r);
    pthread_mutex_lock(&fake.mu);
    assert_string_equal(fake.last_op, "interrupt");
    assert_string_equal(fake.last_hw, "dev-1");
    assert_string_equal(fake.last_reason, "user stop");
    assert_int_equal(fake.last_timeout, 750);
    pthread_mutex_unlock(&fake.mu);

    /* --json: the document unchanged; options after or before the command */
    r = CLI("interrupt", "--json", CTL, "dev-1");
    expect(&r, 0, NULL, NULL);
    char want[sizeof full_result + 1];
    snprintf(want, sizeof want, "%s\n", full_result);
    assert_string_equal(r.out, want);
    done(&r);

    /* incomplete: exit 1, the missing agent named */
    r = CLI(CTL, "interrupt", "dev-2");
    expect(&r, 1, "missing: n2:7", "incomplete: 1 agent did not answer: n2:7");
    assert_non_null(strstr(r.out, "INCOMPLETE (id 18, epoch 5)"));
    assert_non_null(strstr(r.out, "text_processing timed_out 500.0 ms"));
    done(&r);
    r = CLI(CTL, "--json", "interrupt", "dev-2");
    expect(&r, 1, "\"success\":false", NULL);
    done(&r);

    /* refused by the coordinator: its message, exit 2; busy: exit 1 */
    r = CLI(CTL, "interrupt", "*");
    expect(&r, 2, NULL, "global interrupts are disabled");
    assert_string_equal(r.out, "");
    done(&r);
    r = CLI(CTL, "interrupt", "busy");
    expect(&r, 1, NULL, "too many interrupts in flight");
    done(&r);
}

/* A usage error: exit 2, nothing on stdout, and on stderr exactly two lines: the problem
 * (containing want) and one hint. */
static void expect_usage(run_result *r, const char *want, const char *hint)
{
    expect(r, 2, NULL, want);
    assert_string_equal(r->out, "");
    size_t lines = 0;
    for (const char *p = r->err; *p; p++)
        lines += *p == '\n';
    const char *h = strstr(r->err, hint);
    if (lines != 2 || h == NULL || strcmp(h, hint) != 0 || strstr(r->err, "(see") != NULL)
        fail_msg("want one line naming '%s' and then '%s'; got:\n%s", want, hint, r->err);
}

static void test_cli_usage_errors(void **state)
{
    (void)state;
    static const char hint[] = "Try 'ihc --help'.\n";
    static const struct {
        const char *args[8];
        const char *err;
    } cases[] = {
        {{"interrupt"}, "interrupt: missing HW"},
        {{"interrupt", "a", "b"}, "takes one HW"},
        {{"interrupt", "a b"}, "invalid hardware_id"},
        {{"interrupt", "dev-1", "--timeout", "abc"},
         "--timeout abc: an interrupt's timeout is 1 to " IHC_STR(IHC_INTERRUPT_TIMEOUT_MAX_MS)},
        {{"interrupt", "dev-1", "--timeout"}, "option '--timeout' requires a value (MS)"},
        {{"interrupt", "dev-1", "--timeout", "600001"},
         "--timeout 600001: an interrupt's timeout is 1 to 600000 ms"},
        {{"interrupt", "dev-1", "--timeout", "0"}, "--timeout 0: an interrupt's timeout is"},
        {{"stats", "--timeout", "4000000"},
         "--timeout 4000000: the wait for an answer is 1 to 3600000 ms"},
        {{"watch", "--timeout", "5"}, "--timeout is not for watch"},
        {{"sessions", "--reason", "x"}, "--reason is only for interrupt"},
        {{"stats", "--pub", "tcp://127.0.0.1:1"}, "--pub is only for watch"},
        {{"frobnicate"}, "unknown command 'frobnicate'"},
        {{"flags", "clear"}, "the only argument is 'reset'"},
        {{"sessions", "a b"}, "sessions: invalid hardware_id 'a b'"},
        {{"agents", "extra"}, "agents: takes no arguments"},
        {{"stats", "--bogus", "1"}, "unknown option '--bogus'"},
        {{"--bogus", "stats"}, "unknown option '--bogus'"},
        {{"stats", "--log-level"}, "option '--log-level' requires a value"},
        {{"-x"}, "unknown option '-x'"},
        {{"run", "--hw", "a", "--", "true"}, "'--control' is not an option of run"},
        {{NULL}, "missing COMMAND"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[10] = {"--control", fake.control_url};
        int n = 2;
        for (int j = 0; cases[i].args[j] != NULL; j++)
            args[n++] = cases[i].args[j];
        args[n] = NULL;
        run_result r = run_cli_env(NULL, args);
        expect_usage(&r, cases[i].err, hint);
        done(&r);
    }

    /* the messages users met, word for word */
    run_result r = CLI("--bogus");
    expect_usage(&r, "unknown option", hint);
    assert_string_equal(r.err, "ihc: unknown option '--bogus'\nTry 'ihc --help'.\n");
    done(&r);
    r = CLI("interrupt", "x", "--timeout", "4000000");
    expect_usage(&r, "--timeout", hint);
    assert_string_equal(r.err, "ihc: --timeout 4000000: an interrupt's timeout is 1 to 600000 ms\n"
                               "Try 'ihc --help'.\n");
    done(&r);
    r = CLI("--control", "nope://x", "stats");
    expect_usage(&r, "--control=nope://x: expected an nng URL", hint);
    done(&r);
    r = CLI("watch", "--pub", "bogus://x");
    expect_usage(&r, "--pub=bogus://x: expected an nng URL", hint);
    done(&r);

    /* `ihc run`: its own hint */
    static const struct {
        const char *args[8];
        const char *err;
    } run_cases[] = {
        {{"run", "--bogus"}, "ihc run: unknown option '--bogus'"},
        {{"run", "--hw"}, "ihc run: option '--hw' requires a value (HW)"},
        {{"run", "--hw", "dev-1"}, "ihc run: no command given"},
        {{"run", "--", "true"}, "ihc run: --hw HW is required"},
        {{"run", "--hw", "a b", "--", "true"}, "ihc run: --hw 'a b': invalid hardware_id"},
        {{"run", "--hw", "a", "--local=", "--", "true"}, "ihc run: --local: empty URL"},
    };
    for (size_t i = 0; i < sizeof run_cases / sizeof run_cases[0]; i++) {
        r = run_cli_env(NULL, run_cases[i].args);
        expect_usage(&r, run_cases[i].err, "Try 'ihc run --help'.\n");
        done(&r);
    }

    /* the help states each --timeout's limit */
    r = CLI("--help");
    expect(&r, 0, "usage: ihc", NULL);
    assert_non_null(strstr(r.out, "its timeout, 1 to " IHC_STR(IHC_INTERRUPT_TIMEOUT_MAX_MS)));
    assert_non_null(strstr(r.out, "how long to wait for the answer, 1 to 3600000"));
    assert_string_equal(r.err, "");
    done(&r);
    r = CLI("--version");
    expect(&r, 0, "ihc 0.1.0", NULL);
    done(&r);
}

static void test_cli_unreachable(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", th_free_port());
    run_result r = CLI("--control", url, "interrupt", "dev-1");
    expect(&r, 3, NULL, url);
    assert_non_null(strstr(r.err, "unreachable"));
    done(&r);
    /* the environment names the endpoint too */
    char env[100];
    snprintf(env, sizeof env, "IHC_CONTROL_URL=%s", url);
    r = run_cli_env((char *const[]){env, NULL}, (const char *const[]){"stats", NULL});
    expect(&r, 3, NULL, url);
    done(&r);
    snprintf(env, sizeof env, "IHC_CONTROL_URL=%s", fake.control_url);
    r = run_cli_env((char *const[]){env, NULL}, (const char *const[]){"stats", NULL});
    expect(&r, 0, "total_interrupts", NULL);
    done(&r);
}

static void test_cli_queries(void **state)
{
    (void)state;
    run_result r = CLI(CTL, "sessions", "dev-1");
    expect(&r, 0, "SESSION         HARDWARE_ID  AGENT  STATE   EPOCH", NULL);
    assert_non_null(strstr(r.out, "session-long-2  dev-1"));
    assert_non_null(strstr(r.out, "text_processing"));
    assert_non_null(strstr(r.out, "4242"));
    done(&r);
    pthread_mutex_lock(&fake.mu);
    assert_string_equal(fake.last_op, "sessions");
    assert_string_equal(fake.last_hw, "dev-1");
    pthread_mutex_unlock(&fake.mu);
    r = CLI(CTL, "sessions", "--json");
    expect(&r, 0, NULL, NULL);
    char want[sizeof sessions_doc + 1];
    snprintf(want, sizeof want, "%s\n", sessions_doc);
    assert_string_equal(r.out, want);
    done(&r);
    pthread_mutex_lock(&fake.mu);
    assert_string_equal(fake.last_hw, "(null)");
    pthread_mutex_unlock(&fake.mu);

    r = CLI(CTL, "agents");
    expect(&r, 0, "AGENT  NODE  PID  CONNECTED  SESSIONS", NULL);
    assert_non_null(strstr(r.out, "n1:42  n1    42   yes        2"));
    assert_non_null(strstr(r.out, "text_processing,audio_generation"));
    done(&r);

    r = CLI(CTL, "flags");
    expect(&r, 0, "global_interrupt_flag  true\ninterrupt_hardware_id  dev-1\n", NULL);
    assert_non_null(strstr(r.out, "reason                 user stop"));
    assert_non_null(strstr(r.out, " ago)"));
    done(&r);
    r = CLI(CTL, "flags", "reset");
    expect(&r, 0, "flags reset\n", NULL);
    done(&r);
    pthread_mutex_lock(&fake.mu);
    assert_string_equal(fake.last_op, "flags_reset");
    pthread_mutex_unlock(&fake.mu);

    r = CLI(CTL, "stats");
    expect(&r, 0, "total_interrupts       12\n", NULL);
    assert_non_null(strstr(r.out, "success_rate           0.917\n"));
    assert_non_null(strstr(r.out, "redis_connected        true\n"));
    done(&r);
    r = CLI(CTL, "stats", "--json");
    char want2[sizeof stats_doc + 1];
    snprintf(want2, sizeof want2, "%s\n", stats_doc);
    assert_string_equal(r.out, want2);
    assert_int_equal(r.status, 0);
    done(&r);
}

static void publish_result(const char *json)
{
    ihc_msg m = {.type = IHC_MSG_RESULT};
    m.u.result.json = (char *)json;
    uint8_t *buf = NULL;
    size_t len = 0;
    TH_PASS(ihc_wire_encode_framed(&m, NULL, &buf, &len));
    nng_send(fake.pub, buf, len, 0);
    free(buf);
}

static bool out_has(const char *needle)
{
    char p[300];
    snprintf(p, sizeof p, "%s/out", g_dir);
    char *s = slurp(p);
    bool ok = strstr(s, needle) != NULL;
    free(s);
    return ok;
}

/* Publishes bytes that are not a message, framed with the event topic. */
static void publish_garbage(void)
{
    static const char garbage[] = "ev:\0\xc1\xc1";
    nng_send(fake.pub, (void *)garbage, sizeof garbage - 1, 0);
}

static void test_cli_watch(void **state)
{
    (void)state;
    pid_t pid = start_cli((const char *const[]){"--pub", fake.pub_url, "watch", NULL}, NULL);
    /* the subscriber joins at some point: publish until both lines were seen */
    bool seen = false;
    for (int i = 0; i < 200 && !seen; i++) {
        publish_garbage();
        publish_result(full_result);
        publish_result(incomplete_result);
        seen = TH_WAIT(out_has("#18  dev-2  INCOMPLETE") && out_has("#17  dev-1  ok"), 50);
    }
    assert_true(seen);
    kill(pid, SIGINT);
    run_result r = finish(pid, 5000);
    expect(&r, 0, "#17  dev-1  ok  0.9 ms  agents 1/1  sessions 2", "watching interrupts from");
    assert_non_null(strstr(r.out, "agents 1/2  sessions 0  error: 1 agent did not answer"));
    /* the garbage is named on stderr, never printed as an interrupt */
    assert_non_null(strstr(r.err, "ihc: watch: bad event skipped: malformed message"));
    for (const char *line = r.out; *line; line = strchr(line, '\n') + 1)
        if (strstr(line, "  #17  dev-1  ok  ") == NULL && strstr(line, "  #18  dev-2  ") == NULL)
            fail_msg("unexpected watch line: %.200s", line);
    done(&r);

    /* --json: one document per line, unchanged */
    char env[100];
    snprintf(env, sizeof env, "IHC_PUB_URL=%s", fake.pub_url);
    pid = start_cli((const char *const[]){"watch", "--json", NULL}, (char *const[]){env, NULL});
    seen = false;
    for (int i = 0; i < 200 && !seen; i++) {
        publish_garbage();
        publish_result(full_result);
        seen = TH_WAIT(out_has(full_result), 50);
    }
    assert_true(seen);
    kill(pid, SIGTERM);
    r = finish(pid, 5000);
    assert_int_equal(r.status, 0);
    /* one document per line, each the coordinator's unchanged */
    char want_line[sizeof full_result + 1];
    snprintf(want_line, sizeof want_line, "%s\n", full_result);
    for (const char *line = r.out; *line; line += strlen(want_line))
        if (strncmp(line, want_line, strlen(want_line)) != 0)
            fail_msg("unexpected watch --json output: %.200s", line);
    done(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_interrupt),   cmocka_unit_test(test_cli_usage_errors),
        cmocka_unit_test(test_cli_unreachable), cmocka_unit_test(test_cli_queries),
        cmocka_unit_test(test_cli_watch),
    };
    int failed = cmocka_run_group_tests(tests, dir_setup, dir_teardown);
    nng_fini(); /* drains nng's reaper so leak checkers see only real leaks */
    return failed;
}
