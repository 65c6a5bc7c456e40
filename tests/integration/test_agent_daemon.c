/* A real `ihc-agent --simulate dev-1,dev-2` process driven by a fake coordinator in the test:
 * hello, sync, an interrupt that stops exactly dev-1's work, a new dev-1 session in the new
 * epoch, refused configuration, and a clean SIGTERM. Also: IHC_KILL_GRACE=0 (SIGKILL right
 * after SIGTERM), what the agent logs about its connection (never made, lost, regained), and
 * a second agent on a busy local endpoint. */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "fake_coord.h"

static char *tmpdir;

static char *path_in(const char *name)
{
    static __thread char buf[4][4096];
    static __thread int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
    return p;
}

/* Runs ihc-agent with args and env, waits for its exit; returns the wait status and leaves
 * its output in log. */
static int run_agent(char *const *args, char *const *env, const char *log)
{
    char *argv[16] = {(char *)th_bin("ihc-agent")};
    size_t n = 1;
    for (size_t i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    unlink(log);
    pid_t pid = th_spawn(argv, log, env);
    assert_true(pid > 0);
    int st = th_wait_exit(pid, 10000);
    if (st == -1)
        st = th_stop(pid, SIGKILL, 1000);
    return st;
}

static void test_agent_daemon_bad_config(void **state)
{
    (void)state;
    const char *log = path_in("bad.log");
    char local[4200];
    snprintf(local, sizeof(local), "--local=unix://%s", path_in("bad.sock"));

    char *env_bad[] = {"INTERRUPT_TIMEOUT=abc", NULL};
    char *a1[] = {local, NULL};
    int st = run_agent(a1, env_bad, log);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_true(th_log_has(log, "INTERRUPT_TIMEOUT", 0));

    char *a2[] = {local, "--simulate", "bad hw!", NULL};
    st = run_agent(a2, NULL, log);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_true(th_log_has(log, "simulate", 0));
    assert_true(th_log_has(log, "bad hw!", 0));

    char *a3[] = {local, "--simulate", "dev-1,dev-1", NULL};
    st = run_agent(a3, NULL, log);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);

    char *a4[] = {local, "--no-such-flag", NULL};
    st = run_agent(a4, NULL, log);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_true(th_log_has(log, "--no-such-flag", 0));

    char *a5[] = {local, "stray", NULL};
    st = run_agent(a5, NULL, log);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_true(th_log_has(log, "stray", 0));

    char *a6[] = {"--version", NULL};
    st = run_agent(a6, NULL, log);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(th_log_has(log, "ihc-agent 0.", 0));

    char *env_ok[] = {"INTERRUPT_TIMEOUT=2.5", NULL};
    char *a7[] = {"--print-config", NULL};
    st = run_agent(a7, env_ok, log);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(th_log_has(log, "INTERRUPT_TIMEOUT", 0));

    char *a8[] = {"--help", NULL};
    st = run_agent(a8, NULL, log);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(th_log_has(log, "--simulate", 0));
}

static bool has_module(const ihc_hello_msg *h, const char *name)
{
    for (size_t i = 0; i < h->n_modules; i++)
        if (strcmp(h->modules[i].name, name) == 0)
            return h->modules[i].n_methods == 2 && h->modules[i].enabled;
    return false;
}

static void note_session(char sids[2][IHC_ID_MAX + 1], const ihc_session_info *s)
{
    int k = strcmp(s->hw, "dev-1") == 0 ? 0 : strcmp(s->hw, "dev-2") == 0 ? 1 : -1;
    assert_true(k >= 0);
    snprintf(sids[k], IHC_ID_MAX + 1, "%s", s->session_id);
    assert_int_equal(s->epoch, 0);
}

static void test_agent_daemon_interrupt(void **state)
{
    (void)state;
    th_fc fc = {0};
    assert_int_equal(th_fc_listen(&fc), 0);
    const char *log = path_in("agent.log");
    char local[4200];
    snprintf(local, sizeof(local), "unix://%s", path_in("agent.sock"));
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    fc.pub_url,
                    "--report",
                    fc.report_url,
                    "--id",
                    "it-agent",
                    "--simulate",
                    "dev-1,dev-2",
                    "--local",
                    local,
                    NULL};
    char *env[] = {"IHC_HEARTBEAT_INTERVAL=0.2", "IHC_LOG_LEVEL=info", NULL};
    pid_t agent = th_spawn(argv, log, env);
    assert_true(agent > 0);

    /* hello: the three modules; the sessions of dev-1 and dev-2 (in hello or right after) */
    ihc_msg *m = th_fc_recv_type_drop(&fc, IHC_MSG_HELLO, 10000);
    assert_non_null(m);
    assert_string_equal(m->u.hello.agent, "it-agent");
    assert_int_equal(m->u.hello.pid, agent);
    assert_true(has_module(&m->u.hello, "text_processing"));
    assert_true(has_module(&m->u.hello, "audio_generation"));
    assert_true(has_module(&m->u.hello, "session_management"));
    char sids[2][IHC_ID_MAX + 1] = {"", ""};
    for (size_t i = 0; i < m->u.hello.n_sessions; i++)
        note_session(sids, &m->u.hello.sessions[i]);
    ihc_msg_free(m);
    const char *hws[] = {"dev-1", "dev-2"};
    TH_PASS(th_fc_send_sync(&fc, "it-agent", hws, 2));
    uint64_t end = th_now_ms_() + 5000;
    while ((!sids[0][0] || !sids[1][0]) && th_now_ms_() < end) {
        m = th_fc_recv(&fc, 200);
        if (m && m->type == IHC_MSG_SESSION_BEGIN)
            note_session(sids, &m->u.session_begin.session);
        ihc_msg_free(m);
    }
    assert_true(sids[0][0] && sids[1][0]);

    /* work is visible in the log */
    char line[512];
    snprintf(line, sizeof(line), "simulate progress session=%s hw=dev-1", sids[0]);
    assert_true(TH_WAIT(th_log_has(log, line, 0), 5000));

    /* interrupt dev-1: the report names the three modules, all ok, and dev-1's session only */
    ihc_msg *r = th_fc_interrupt_until_report(&fc, 1, "dev-1", 1, 10000);
    assert_non_null(r);
    size_t after = th_file_size(log);
    assert_string_equal(r->u.report.agent, "it-agent");
    assert_string_equal(r->u.report.hw, "dev-1");
    assert_int_equal(r->u.report.n_modules, 3);
    for (size_t i = 0; i < r->u.report.n_modules; i++) {
        const ihc_module_result *mr = &r->u.report.modules[i];
        if (mr->status != IHC_MOD_OK)
            fail_msg("module %s: status %d error %s", mr->name, (int)mr->status,
                     mr->error ? mr->error : "-");
    }
    assert_int_equal(r->u.report.n_sessions, 1);
    assert_string_equal(r->u.report.sessions[0], sids[0]);
    ihc_msg_free(r);

    /* dev-1's generators stopped in every module; dev-2's did not and keep progressing */
    static const char *const modules[] = {"text_processing", "audio_generation",
                                          "session_management"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(line, sizeof(line), "simulate stopped session=%s hw=dev-1 module=%s after",
                 sids[0], modules[i]);
        assert_true(TH_WAIT(th_log_has(log, line, 0), 2000));
    }
    snprintf(line, sizeof(line), "simulate progress session=%s hw=dev-2", sids[1]);
    assert_true(TH_WAIT(th_log_has(log, line, after), 3000));
    snprintf(line, sizeof(line), "simulate stopped session=%s", sids[1]);
    assert_false(th_log_has(log, line, 0));

    /* a new dev-1 session begins after the pause, in the interrupt's epoch, and works */
    ihc_msg *b = NULL;
    end = th_now_ms_() + 5000;
    while (!b && th_now_ms_() < end) {
        m = th_fc_recv(&fc, 200);
        if (m && m->type == IHC_MSG_SESSION_BEGIN &&
            strcmp(m->u.session_begin.session.hw, "dev-1") == 0)
            b = m;
        else
            ihc_msg_free(m);
    }
    assert_non_null(b);
    assert_string_not_equal(b->u.session_begin.session.session_id, sids[0]);
    assert_int_equal(b->u.session_begin.session.epoch, 1);
    snprintf(line, sizeof(line), "simulate progress session=%s hw=dev-1",
             b->u.session_begin.session.session_id);
    ihc_msg_free(b);
    assert_true(TH_WAIT(th_log_has(log, line, 0), 3000));

    /* the same interrupt again (a coordinator re-send) is acted on once: the new session
     * lives on */
    TH_PASS(th_fc_send_interrupt(&fc, 1, "dev-1", 1, NULL, 0));
    size_t mark = th_file_size(log);
    assert_true(TH_WAIT(th_log_has(log, line, mark), 3000));
    snprintf(line, sizeof(line), "simulate stopped session=%s", sids[1]);
    assert_false(th_log_has(log, line, 0));

    /* SIGTERM: clean stop, exit 0, promptly */
    uint64_t t0 = th_now_ms_();
    kill(agent, SIGTERM);
    int st = th_wait_exit(agent, 5000);
    if (st == -1) {
        th_stop(agent, SIGKILL, 1000);
        fail_msg("ihc-agent did not exit within 5 s of SIGTERM");
    }
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(th_now_ms_() - t0 < 5000);
    assert_true(th_log_has(log, "daemon stopped", 0));
    struct stat sst;
    assert_int_not_equal(stat(local + 7, &sst), 0); /* the socket file went with it */
    th_fc_close(&fc);
}

static void test_agent_daemon_local_socket(void **state)
{
    (void)state;
    th_fc fc = {0};
    th_fc_pick_ports(&fc); /* nothing listens: the agents keep dialing, which is fine */
    const char *sock = path_in("busy.sock");
    char local[4200];
    snprintf(local, sizeof(local), "unix://%s", sock);

    /* a stale socket file (its owner died) is removed at start */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(fd);
    const char *log1 = path_in("busy1.log");
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    fc.pub_url,
                    "--report",
                    fc.report_url,
                    "--local",
                    local,
                    NULL};
    pid_t a1 = th_spawn(argv, log1, NULL);
    assert_true(a1 > 0);
    assert_true(TH_WAIT(th_log_has(log1, "daemon started", 0), 5000));
    assert_true(th_log_has(log1, "removed stale socket", 0));

    /* a second agent on the same endpoint refuses to start, naming the problem */
    const char *log2 = path_in("busy2.log");
    pid_t a2 = th_spawn(argv, log2, NULL);
    assert_true(a2 > 0);
    int st = th_wait_exit(a2, 5000);
    if (st == -1) {
        th_stop(a2, SIGKILL, 1000);
        fail_msg("a second agent on %s kept running", local);
    }
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    assert_true(th_log_has(log2, "listening there", 0));
    /* and how to run a second agent: its own endpoint */
    assert_true(th_log_has(log2, "--local unix://", 0));
    assert_true(th_log_has(log2, "IHC_LOCAL_URL=", 0));

    /* the first one is unharmed */
    assert_int_equal(th_wait_exit(a1, 100), -1);
    st = th_stop(a1, SIGTERM, 5000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- IHC_KILL_GRACE=0 ---- */

/* Wall-clock ms of the log line (from byte offset from) containing needle, from its leading
 * "YYYY-MM-DDTHH:MM:SS.mmmZ" timestamp; -1 when absent. *at receives the line's offset. */
static int64_t log_line_ms(const char *path, const char *needle, size_t *at)
{
    char *all = th_slurp(path);
    char *hit = strstr(all, needle);
    int64_t ms = -1;
    if (hit) {
        char *line = hit;
        while (line > all && line[-1] != '\n')
            line--;
        struct tm tm = {0};
        int msec = 0;
        if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &msec) == 7) {
            tm.tm_year -= 1900;
            tm.tm_mon -= 1;
            ms = (int64_t)timegm(&tm) * 1000 + msec;
        }
        if (at)
            *at = (size_t)(line - all);
    }
    free(all);
    return ms;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool is_exec_of_sleep(pid_t pid)
{
    char path[64], comm[64] = "";
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fgets(comm, sizeof(comm), f) && strncmp(comm, "sleep", 5) == 0;
    fclose(f);
    return ok;
}

/* A process registered over the local endpoint ignores SIGTERM; with FORCE_CLEANUP on and
 * IHC_KILL_GRACE=0 it gets SIGTERM after the module timeout and SIGKILL right after (it was
 * 2 s, the default, when 0 was taken for "unset"). */
static void test_agent_daemon_kill_grace_zero(void **state)
{
    (void)state;
    th_fc fc = {0};
    assert_int_equal(th_fc_listen(&fc), 0);
    const char *log = path_in("grace.log");
    char local[4200];
    snprintf(local, sizeof(local), "unix://%s", path_in("grace.sock"));
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    fc.pub_url,
                    "--report",
                    fc.report_url,
                    "--id",
                    "grace-agent",
                    "--local",
                    local,
                    NULL};
    char *env[] = {"IHC_KILL_GRACE=0", "IHC_MODULE_TIMEOUT=0.2", "FORCE_CLEANUP=true",
                   "IHC_LOG_LEVEL=info", NULL};
    pid_t agent = th_spawn(argv, log, env);
    assert_true(agent > 0);
    ihc_msg *h = th_fc_recv_type_drop(&fc, IHC_MSG_HELLO, 10000);
    assert_non_null(h);
    ihc_msg_free(h);
    const char *hws[] = {"dev-g"};
    TH_PASS(th_fc_send_sync(&fc, "grace-agent", hws, 1));

    /* the stubborn process: SIGTERM ignored (kept across exec), SIGKILL is the only way */
    char *stubborn[] = {"sh", "-c", "trap '' TERM; exec sleep 60", NULL};
    pid_t p = th_spawn(stubborn, NULL, NULL);
    assert_true(p > 0);
    assert_true(TH_WAIT(is_exec_of_sleep(p), 5000));
    /* registered over the local API (this test is the process's parent) */
    char body[128];
    snprintf(body, sizeof body, "{\"hardware_id\":\"dev-g\",\"pid\":%d,\"session_id\":\"grace-1\"}",
             (int)p);
    char *resp = NULL;
    assert_true(TH_WAIT(th_unix_http(local + 7, "GET", "/healthz", NULL, NULL) == 200, 5000));
    int hst = th_unix_http(local + 7, "POST", "/v1/sessions", body, &resp);
    if (hst != 201)
        fail_msg("POST /v1/sessions: %d %s", hst, resp ? resp : "");
    free(resp);

    ihc_msg *rep = th_fc_interrupt_until_report(&fc, 1, "dev-g", 1, 5000);
    assert_non_null(rep);
    assert_int_equal(rep->u.report.n_sessions, 1);
    ihc_msg_free(rep);

    /* its death, to the ms */
    int st = 0;
    int64_t dead_ms = -1;
    uint64_t end = th_now_ms_() + 5000;
    while (th_now_ms_() < end) {
        pid_t w = waitpid(p, &st, WNOHANG);
        if (w == p) {
            dead_ms = wall_ms();
            break;
        }
        th_sleep_ms_(1);
    }
    if (dead_ms < 0) {
        th_stop(p, SIGKILL, 1000);
        th_log_tail(log, 20);
        fail_msg("the process that ignores SIGTERM was not killed within 5 s of the report");
    }
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGKILL);

    /* SIGTERM first, then SIGKILL, and the process gone well under the old 2 s after the
     * SIGTERM (1 s: room for a loaded machine) */
    char want_term[128], want_kill[128];
    snprintf(want_term, sizeof(want_term), "SIGTERM session=grace-1 pid=%d", (int)p);
    snprintf(want_kill, sizeof(want_kill), "SIGKILL session=grace-1 pid=%d", (int)p);
    assert_true(TH_WAIT(th_log_has(log, want_kill, 0), 2000));
    size_t at_term = 0, at_kill = 0;
    int64_t term_ms = log_line_ms(log, want_term, &at_term);
    int64_t kill_ms = log_line_ms(log, want_kill, &at_kill);
    assert_true(term_ms > 0 && kill_ms > 0);
    assert_true(at_term < at_kill);
    fprintf(stderr,
            "kill grace 0: SIGKILL logged %lld ms after SIGTERM, process dead %lld ms after "
            "SIGTERM\n",
            (long long)(kill_ms - term_ms), (long long)(dead_ms - term_ms));
    assert_true(kill_ms - term_ms < 1000);
    assert_true(dead_ms - term_ms < 1000);

    int ast = th_stop(agent, SIGTERM, 5000);
    assert_true(WIFEXITED(ast));
    assert_int_equal(WEXITSTATUS(ast), 0);
    th_fc_close(&fc);
}

/* ---- what the agent says about its connection ---- */

static int count_in_log(const char *path, const char *needle)
{
    char *all = th_slurp(path);
    int n = 0;
    for (const char *p = all; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(all);
    return n;
}

/* Answers the agent's hellos with a sync until needle is in its log (a sync published before
 * the agent's SUB connection is back is lost; the agent says hello again when it is). */
static bool sync_until_logged(th_fc *fc, const char *id, const char *log, const char *needle)
{
    uint64_t end = th_now_ms_() + 10000;
    while (th_now_ms_() < end) {
        if (th_log_has(log, needle, 0))
            return true;
        ihc_msg *h = th_fc_recv_type_drop(fc, IHC_MSG_HELLO, 200);
        if (h) {
            ihc_msg_free(h);
            TH_PASS(th_fc_send_sync(fc, id, NULL, 0));
        }
    }
    return th_log_has(log, needle, 0);
}

/* Starts an agent dialing fc's URLs (without a local endpoint) with its log in log. */
static pid_t start_plain_agent(th_fc *fc, const char *id, const char *log)
{
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    fc->pub_url,
                    "--report",
                    fc->report_url,
                    "--id",
                    (char *)id,
                    "--local",
                    "off",
                    NULL};
    char *env[] = {"IHC_LOG_LEVEL=info", NULL};
    unlink(log);
    pid_t pid = th_spawn(argv, log, env);
    assert_true(pid > 0);
    return pid;
}

/* Nothing listens at the URLs (a typo, a coordinator that is down): after a few seconds one
 * warning names both URLs and what to check; the agent keeps trying. */
static void test_agent_daemon_unreachable(void **state)
{
    (void)state;
    th_fc fc = {0};
    th_fc_pick_ports(&fc);
    const char *log = path_in("unreachable.log");
    uint64_t t0 = th_now_ms_();
    pid_t agent = start_plain_agent(&fc, "lonely-agent", log);
    const char *warn = "no connection to the coordinator after";
    if (!TH_WAIT(th_log_has(log, warn, 0), 10000)) {
        th_log_tail(log, 20);
        fail_msg("no warning about the unreachable coordinator within 10 s");
    }
    uint64_t took = th_now_ms_() - t0;
    fprintf(stderr, "unreachable warning %llu ms after start\n", (unsigned long long)took);
    assert_true(took >= 2500); /* not at once: a coordinator starting up is fine */
    char want[256];
    snprintf(want, sizeof(want), "pub=%s (not connected) report=%s (not connected)", fc.pub_url,
             fc.report_url);
    assert_true(th_log_has(log, want, 0));
    assert_true(th_log_has(log, "IHC_PUB_URL", 0));
    assert_true(th_log_has(log, "IHC_REPORT_URL", 0));
    assert_true(th_log_has(log, "WARN", 0));
    /* once: still running, still quiet a while later */
    th_sleep_ms_(1500);
    assert_int_equal(th_wait_exit(agent, 10), -1);
    assert_int_equal(count_in_log(log, warn), 1);

    /* the coordinator comes: connected, said at info */
    assert_int_equal(th_fc_listen(&fc), 0);
    assert_true(sync_until_logged(&fc, "lonely-agent", log, "connected to coordinator"));

    int st = th_stop(agent, SIGTERM, 5000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    th_fc_close(&fc);
}

/* Connected at the transport level but no sync ever comes (another secret, another service
 * on the ports): the warning says so instead of blaming the URLs. */
static void test_agent_daemon_no_sync(void **state)
{
    (void)state;
    th_fc fc = {0};
    assert_int_equal(th_fc_listen(&fc), 0);
    const char *log = path_in("nosync.log");
    pid_t agent = start_plain_agent(&fc, "unanswered-agent", log);
    const char *warn = "coordinator not answering after";
    if (!TH_WAIT(th_log_has(log, warn, 0), 10000)) {
        th_log_tail(log, 20);
        fail_msg("no warning about the coordinator not answering within 10 s");
    }
    assert_true(th_log_has(log, "IHC_SECRET", 0));
    assert_true(th_log_has(log, fc.pub_url, 0));
    assert_true(th_log_has(log, fc.report_url, 0));
    assert_int_equal(count_in_log(log, warn), 1);
    int st = th_stop(agent, SIGTERM, 5000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    th_fc_close(&fc);
}

/* Every loss of the connection is a warning, every regain an info line, one each. */
static void test_agent_daemon_connection_lost(void **state)
{
    (void)state;
    th_fc fc = {0};
    assert_int_equal(th_fc_listen(&fc), 0);
    const char *log = path_in("lost.log");
    uint64_t t0 = th_now_ms_();
    pid_t agent = start_plain_agent(&fc, "flaky-agent", log);
    for (int round = 0; round < 2; round++) {
        const char *up = round == 0 ? "connected to coordinator pub="
                                    : "connection to coordinator regained after";
        if (!sync_until_logged(&fc, "flaky-agent", log, up)) {
            th_log_tail(log, 20);
            fail_msg("round %d: no '%s' in the log", round, up);
        }
        if (round == 1)
            break;
        th_fc_close(&fc); /* the coordinator goes away */
        if (!TH_WAIT(th_log_has(log, "connection to coordinator lost", 0), 5000)) {
            th_log_tail(log, 20);
            fail_msg("no warning when the coordinator went away");
        }
        assert_int_equal(th_fc_listen(&fc), 0); /* and comes back on the same ports */
    }
    assert_true(th_log_has(log, "WARN  agent connection to coordinator lost", 0));
    assert_true(th_log_has(log, "INFO  agent connection to coordinator regained", 0));
    assert_int_equal(count_in_log(log, "connection to coordinator lost"), 1);
    assert_int_equal(count_in_log(log, "connection to coordinator regained"), 1);
    /* it was connected in time: no unreachable warning, even past its delay */
    while (th_now_ms_() - t0 < 3500)
        th_sleep_ms_(50);
    assert_int_equal(count_in_log(log, "no connection to the coordinator"), 0);
    int st = th_stop(agent, SIGTERM, 5000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    th_fc_close(&fc);
}

static int setup(void **state)
{
    (void)state;
    tmpdir = th_tmpdir("agentd");
    return tmpdir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    th_tmpdir_remove(tmpdir);
    free(tmpdir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_daemon_bad_config),
        cmocka_unit_test(test_agent_daemon_interrupt),
        cmocka_unit_test(test_agent_daemon_local_socket),
        cmocka_unit_test(test_agent_daemon_kill_grace_zero),
        cmocka_unit_test(test_agent_daemon_unreachable),
        cmocka_unit_test(test_agent_daemon_no_sync),
        cmocka_unit_test(test_agent_daemon_connection_lost),
    };
    return cmocka_run_group_tests_name("agent_daemon", tests, setup, teardown);
}
