/* `ihc run` and the agent's local API, through a real ihc-agent (short module timeout
 * and kill grace) and a fake coordinator that delivers the interrupts: exit codes passed
 * through, polite and stubborn commands stopped, unreachable agent, the local protocol, and
 * sessions of processes that died. */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "fake_coord.h"

#define MODULE_TIMEOUT_MS 300
#define KILL_GRACE_MS     300

static struct {
    char *dir;
    th_fc fc;
    pid_t agent;
    char local[4200];
    char agent_log[4200];
    uint64_t next_id;
    uint64_t epoch[2]; /* dev-9, dev-8 */
    pid_t pgids[16];
    size_t n_pgids;
    char runner[4200];
    const char *sock; /* the socket path of local */
} w;

static char *path_in(const char *name)
{
    static __thread char buf[4][4200];
    static __thread int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof(buf[0]), "%s/%s", w.dir, name);
    return p;
}

/* Starts `ihc run ARGS…` with output into log. */
static pid_t start_run(const char *log, char *const *args, const char *local)
{
    char *argv[32];
    size_t n = 0;
    argv[n++] = w.runner;
    argv[n++] = "run";
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    static __thread char env_local[4300];
    snprintf(env_local, sizeof(env_local), "IHC_LOCAL_URL=%s", local ? local : w.local);
    char *env[] = {env_local, NULL};
    unlink(log);
    pid_t pid = th_spawn(argv, log, env);
    assert_true(pid > 0);
    return pid;
}

static int run_to_end(const char *log, char *const *args, const char *local, int ms)
{
    pid_t pid = start_run(log, args, local);
    int st = th_wait_exit(pid, ms);
    if (st == -1) {
        th_stop(pid, SIGKILL, 1000);
        fail_msg("ihc run %s did not finish within %d ms", args[0], ms);
    }
    return st;
}

/* Waits for the session_begin of session sid; returns its pid. */
static pid_t wait_begin(const char *sid)
{
    uint64_t end = th_now_ms_() + 5000;
    while (th_now_ms_() < end) {
        ihc_msg *m = th_fc_recv(&w.fc, 200);
        if (m && m->type == IHC_MSG_SESSION_BEGIN &&
            strcmp(m->u.session_begin.session.session_id, sid) == 0) {
            pid_t pid = m->u.session_begin.session.pid;
            ihc_msg_free(m);
            if (w.n_pgids < 16)
                w.pgids[w.n_pgids++] = pid;
            return pid;
        }
        ihc_msg_free(m);
    }
    fail_msg("no session_begin for %s", sid);
    return -1;
}

/* Interrupts hw (in the next epoch) until the agent reports; returns the report. */
static ihc_msg *interrupt(const char *hw)
{
    uint64_t *ep = &w.epoch[strcmp(hw, "dev-9") == 0 ? 0 : 1];
    ihc_msg *r = th_fc_interrupt_until_report(&w.fc, ++w.next_id, hw, ++*ep, 5000);
    assert_non_null(r);
    return r;
}

/* ---- exit statuses and errors ---- */

static void test_run_exit_code(void **state)
{
    (void)state;
    const char *log = path_in("exit.log");
    char *a1[] = {"--hw", "dev-9", "--", "sh", "-c", "exit 7", NULL};
    int st = run_to_end(log, a1, NULL, 10000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 7);

    char *a2[] = {"--hw=dev-9", "--session", "exit-0", "--module", "text_processing", "true", NULL};
    st = run_to_end(log, a2, NULL, 10000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);

    /* a command killed by a signal: 128 + N */
    char *a3[] = {"--hw", "dev-9", "--", "sh", "-c", "kill -USR1 $$", NULL};
    st = run_to_end(log, a3, NULL, 10000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 128 + SIGUSR1);

    char *a4[] = {"--hw", "dev-9", "--", "/no/such/command-ihc", NULL};
    st = run_to_end(log, a4, NULL, 10000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 127);
    assert_true(th_log_has(log, "cannot run /no/such/command-ihc", 0));

    /* every one of them ended its session */
    assert_true(TH_WAIT(th_log_has(w.agent_log, "local session ended session=exit-0", 0), 3000));
}

static void test_run_usage_and_unreachable(void **state)
{
    (void)state;
    const char *log = path_in("usage.log");
    char *a1[] = {"--", "true", NULL};
    int st = run_to_end(log, a1, NULL, 5000);
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_true(th_log_has(log, "--hw", 0));

    char *a2[] = {"--hw", "bad hw!", "--", "true", NULL};
    st = run_to_end(log, a2, NULL, 5000);
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_true(th_log_has(log, "invalid hardware_id", 0));

    char *a3[] = {"--hw", "dev-9", NULL};
    st = run_to_end(log, a3, NULL, 5000);
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_true(th_log_has(log, "no command", 0));

    char *a4[] = {"--hw", "dev-9", "--bogus", "--", "true", NULL};
    st = run_to_end(log, a4, NULL, 5000);
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_true(th_log_has(log, "--bogus", 0));

    /* nobody listens there: exit 3 and the command never ran */
    char nobody[4300];
    snprintf(nobody, sizeof(nobody), "unix://%s", path_in("nobody.sock"));
    const char *marker = path_in("ran-anyway");
    char cmd[4400];
    snprintf(cmd, sizeof(cmd), "touch '%s'", marker);
    char *a5[] = {"--hw", "dev-9", "--", "sh", "-c", cmd, NULL};
    st = run_to_end(log, a5, nobody, 10000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 3);
    assert_true(th_log_has(log, "cannot reach the ihc agent", 0));
    struct stat sst;
    assert_int_not_equal(stat(marker, &sst), 0);
}

/* ---- interrupts ---- */

static void test_run_interrupt_polite(void **state)
{
    (void)state;
    const char *log = path_in("polite.log");
    char *args[] = {"--hw", "dev-9", "--session", "polite-1", "--", "sleep", "30", NULL};
    pid_t run = start_run(log, args, NULL);
    const char *sid = "polite-1";
    pid_t child = wait_begin(sid);
    assert_true(child > 0 && child != run);

    ihc_msg *r = interrupt("dev-9");
    uint64_t t0 = th_now_ms_();
    assert_int_equal(r->u.report.n_sessions, 1);
    assert_string_equal(r->u.report.sessions[0], sid);
    ihc_msg_free(r);

    int st = th_wait_exit(run, 5000);
    assert_int_not_equal(st, -1);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 128 + SIGTERM);
    assert_true(th_now_ms_() - t0 < 2000);
    char want[512];
    snprintf(want, sizeof(want),
             "ihc run: interrupted (hardware_id dev-9, session %s): sent SIGTERM", sid);
    assert_true(th_log_has(log, want, 0));
    assert_true(th_log_has(log, "ihc run: sleep stopped by interrupt (signal 15)", 0));
}

static void test_run_interrupt_stubborn(void **state)
{
    (void)state;
    const char *log = path_in("stubborn.log");
    /* the shell and its sleep both ignore SIGTERM (once the trap is set: it says so) */
    const char *ready = path_in("stubborn.ready");
    char script[4400];
    snprintf(script, sizeof(script), "trap '' TERM; touch '%s'; sleep 30; exit 0", ready);
    char *args[] = {"--hw", "dev-9", "--session", "stubborn-1", "--", "sh", "-c", script, NULL};
    pid_t run = start_run(log, args, NULL);
    pid_t child = wait_begin("stubborn-1");
    struct stat sst;
    assert_true(TH_WAIT(stat(ready, &sst) == 0, 5000));

    ihc_msg *r = interrupt("dev-9");
    uint64_t t0 = th_now_ms_();
    ihc_msg_free(r);

    int st = th_wait_exit(run, 8000);
    assert_int_not_equal(st, -1);
    uint64_t took = th_now_ms_() - t0;
    fprintf(stderr, "stubborn command killed %llu ms after the report\n", (unsigned long long)took);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 128 + SIGKILL);
    assert_true(took < MODULE_TIMEOUT_MS + KILL_GRACE_MS + 2500);
    assert_true(th_log_has(log, "ihc run: interrupted (hardware_id dev-9", 0));
    assert_true(th_log_has(log, "killed by SIGKILL after the grace period", 0));
    /* nothing of its process group is left */
    assert_true(TH_WAIT(kill(-child, 0) == -1 && errno == ESRCH, 2000));
}

static void test_run_forwards_signals(void **state)
{
    (void)state;
    const char *log = path_in("forward.log");
    char *args[] = {"--hw", "dev-9", "--session", "forward-1", "--", "sleep", "30", NULL};
    pid_t run = start_run(log, args, NULL);
    const char *sid = "forward-1";
    wait_begin(sid);
    kill(run, SIGINT);
    int st = th_wait_exit(run, 5000);
    assert_int_not_equal(st, -1);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 128 + SIGINT);
    /* not an interrupt: no such message, and the session ended normally */
    assert_false(th_log_has(log, "interrupted (hardware_id", 0));
    char want[256];
    snprintf(want, sizeof(want), "local session ended session=%s", sid);
    assert_true(TH_WAIT(th_log_has(w.agent_log, want, 0), 3000));
}

/* ---- the local API itself (raw HTTP on the socket) ---- */

static char *api(const char *method, const char *path, const char *body, int want)
{
    char *resp = NULL;
    int st = th_unix_http(w.sock, method, path, body, &resp);
    if (st != want)
        fail_msg("%s %s: status %d, want %d: %s", method, path, st, want, resp ? resp : "");
    return resp;
}

static void expect_error(const char *method, const char *path, const char *body, int want,
                         const char *word)
{
    char *resp = api(method, path, body, want);
    if (!resp || !strstr(resp, "\"error\"") || !strstr(resp, word))
        fail_msg("%s %s: answer '%s' does not name '%s'", method, path, resp ? resp : "", word);
    free(resp);
}

static void test_run_local_protocol(void **state)
{
    (void)state;
    free(api("GET", "/healthz", NULL, 200));
    expect_error("POST", "/v1/sessions", "{\"pid\":1}", 400, "hardware_id");
    expect_error("POST", "/v1/sessions", "{\"hardware_id\":\"dev-8\",\"pid\":999999999}", 400,
                 "no running process");
    expect_error("DELETE", "/v1/sessions/nope", NULL, 404, "nope");
    expect_error("GET", "/v1/sessions/nope/events", NULL, 404, "nope");
    expect_error("POST", "/v1/sessions", "\xc1\x00\x01", 400, "bad JSON");

    /* a session of a process that dies is ended by the agent (pid check) */
    char *sleeper[] = {"sleep", "30", NULL};
    pid_t p = th_spawn(sleeper, NULL, NULL);
    assert_true(p > 0);
    char body[256];
    snprintf(body, sizeof body,
             "{\"hardware_id\":\"dev-8\",\"pid\":%d,\"session_id\":\"s-dies\",\"data\":{\"k\":1}}",
             (int)p);
    char *resp = api("POST", "/v1/sessions", body, 201);
    assert_non_null(strstr(resp, "\"session_id\":\"s-dies\""));
    assert_non_null(strstr(resp, "\"state\":\"active\""));
    free(resp);
    expect_error("POST", "/v1/sessions", body, 409, "s-dies");
    th_stop(p, SIGKILL, 2000);
    ihc_msg *e = NULL;
    uint64_t end = th_now_ms_() + 5000;
    while (!e && th_now_ms_() < end) {
        ihc_msg *m = th_fc_recv(&w.fc, 200);
        if (m && m->type == IHC_MSG_SESSION_END &&
            strcmp(m->u.session_end.session_id, "s-dies") == 0)
            e = m;
        else
            ihc_msg_free(m);
    }
    assert_non_null(e);
    ihc_msg_free(e);
    expect_error("DELETE", "/v1/sessions/s-dies", NULL, 404, "s-dies");

    /* interrupted before anyone listens: the stream tells it at once; DELETE then ends it */
    p = th_spawn(sleeper, NULL, NULL);
    assert_true(p > 0);
    snprintf(body, sizeof body, "{\"hardware_id\":\"dev-8\",\"pid\":%d,\"session_id\":\"s-int\"}",
             (int)p);
    free(api("POST", "/v1/sessions", body, 201));
    ihc_msg *r = interrupt("dev-8");
    assert_int_equal(r->u.report.n_sessions, 1);
    assert_string_equal(r->u.report.sessions[0], "s-int");
    uint64_t id = r->u.report.id;
    ihc_msg_free(r);
    int fd = th_unix_connect(w.sock);
    assert_true(fd >= 0);
    assert_int_equal(th_http_send(fd, "GET", "/v1/sessions/s-int/events", NULL), 0);
    char *seen = NULL;
    assert_true(th_fd_read_until(fd, "\"deadline_ms\":300}", 5000, &seen));
    char want[128];
    snprintf(want, sizeof want, "event: stop\ndata: {\"interrupt_id\":%llu,",
             (unsigned long long)id);
    if (!strstr(seen, want))
        fail_msg("no '%s' in: %s", want, seen);
    free(seen);
    resp = api("DELETE", "/v1/sessions/s-int", "{\"state\":\"interrupted\"}", 200);
    assert_non_null(strstr(resp, "\"state\":\"interrupted\""));
    free(resp);
    assert_true(th_fd_read_until(fd, "event: end", 3000, NULL));
    close(fd);
    th_stop(p, SIGKILL, 2000);
}

/* Last: the agent stops cleanly (exit 0; under sanitizers also without leaks or errors). */
static void test_run_agent_stops(void **state)
{
    (void)state;
    int st = th_stop(w.agent, SIGTERM, 5000);
    w.agent = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    struct stat sst;
    assert_int_not_equal(stat(w.sock, &sst), 0);
}

/* ---- fixture: one agent and fake coordinator for the whole file ---- */

static int setup(void **state)
{
    (void)state;
    w.dir = th_tmpdir("run");
    if (!w.dir)
        return -1;
    snprintf(w.runner, sizeof(w.runner), "%s", th_bin("ihc"));
    if (access(w.runner, X_OK) != 0) {
        snprintf(w.runner, sizeof(w.runner), "%s", th_bin("ihc-run-driver"));
        fprintf(stderr, "the ihc CLI is not built: testing ihc_run_main through %s\n", w.runner);
    }
    if (th_fc_listen(&w.fc) != 0)
        return -1;
    snprintf(w.local, sizeof(w.local), "unix://%s/agent.sock", w.dir);
    w.sock = w.local + 7;
    snprintf(w.agent_log, sizeof(w.agent_log), "%s/agent.log", w.dir);
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    w.fc.pub_url,
                    "--report",
                    w.fc.report_url,
                    "--id",
                    "run-agent",
                    "--local",
                    w.local,
                    NULL};
    char *env[] = {"IHC_MODULE_TIMEOUT=0.3", "IHC_KILL_GRACE=0.3", NULL};
    w.agent = th_spawn(argv, w.agent_log, env);
    if (w.agent <= 0)
        return -1;
    ihc_msg *h = th_fc_recv_type_drop(&w.fc, IHC_MSG_HELLO, 10000);
    if (!h) {
        fprintf(stderr, "no hello from the agent\n");
        return -1;
    }
    ihc_msg_free(h);
    const char *hws[] = {"dev-9", "dev-8"};
    if (th_fc_send_sync(&w.fc, "run-agent", hws, 2) != IHC_OK)
        return -1;
    struct stat st;
    return TH_WAIT(stat(w.sock, &st) == 0, 5000) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < w.n_pgids; i++)
        if (w.pgids[i] > 0)
            kill(-w.pgids[i], SIGKILL);
    if (w.agent > 0) {
        int st = th_stop(w.agent, SIGTERM, 5000);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            fprintf(stderr, "ihc-agent did not stop cleanly (status 0x%x)\n", st);
    }
    th_fc_close(&w.fc);
    th_tmpdir_remove(w.dir);
    free(w.dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_exit_code),
        cmocka_unit_test(test_run_usage_and_unreachable),
        cmocka_unit_test(test_run_interrupt_polite),
        cmocka_unit_test(test_run_interrupt_stubborn),
        cmocka_unit_test(test_run_forwards_signals),
        cmocka_unit_test(test_run_local_protocol),
        cmocka_unit_test(test_run_agent_stops),
    };
    return cmocka_run_group_tests_name("run", tests, setup, teardown);
}
