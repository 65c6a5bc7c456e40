/* A real ihc-agent started before its coordinator exists: it keeps dialing, says hello once
 * the (fake) coordinator listens on the same ports, and then interrupts work; after the
 * coordinator goes away and comes back, it says hello again. */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "fake_coord.h"

static char *tmpdir;

/* Waits for a hello from agent id listing a session of hw; returns that session's id. */
static bool wait_hello(th_fc *fc, const char *hw, char *sid, size_t sid_len, int ms)
{
    uint64_t end = th_now_ms_() + (uint64_t)ms;
    while (th_now_ms_() < end) {
        ihc_msg *m = th_fc_recv_type_drop(fc, IHC_MSG_HELLO, (int)(end - th_now_ms_()));
        if (!m)
            return false;
        bool found = false;
        for (size_t i = 0; i < m->u.hello.n_sessions && !found; i++) {
            if (strcmp(m->u.hello.sessions[i].hw, hw) == 0) {
                snprintf(sid, sid_len, "%s", m->u.hello.sessions[i].session_id);
                found = true;
            }
        }
        bool ours = strcmp(m->u.hello.agent, "late-agent") == 0;
        ihc_msg_free(m);
        if (found && ours)
            return true;
    }
    return false;
}

static void test_agent_late_coordinator(void **state)
{
    (void)state;
    th_fc fc = {0};
    th_fc_pick_ports(&fc);
    char log[4200], local[4200];
    snprintf(log, sizeof(log), "%s/agent.log", tmpdir);
    snprintf(local, sizeof(local), "unix://%s/agent.sock", tmpdir);
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    fc.pub_url,
                    "--report",
                    fc.report_url,
                    "--id",
                    "late-agent",
                    "--simulate",
                    "dev-1",
                    "--local",
                    local,
                    NULL};
    pid_t agent = th_spawn(argv, log, NULL);
    assert_true(agent > 0);

    /* it runs (and works) without a coordinator */
    assert_true(TH_WAIT(th_log_has(log, "simulate progress", 0), 5000));
    assert_int_equal(th_wait_exit(agent, 10), -1);

    /* the coordinator appears on the ports the agent dials */
    uint64_t t0 = th_now_ms_();
    assert_int_equal(th_fc_listen(&fc), 0);
    char sid[IHC_ID_MAX + 1] = "";
    assert_true(wait_hello(&fc, "dev-1", sid, sizeof(sid), 8000));
    fprintf(stderr, "hello %llu ms after the coordinator started listening\n",
            (unsigned long long)(th_now_ms_() - t0));
    const char *hws[] = {"dev-1"};
    TH_PASS(th_fc_send_sync(&fc, "late-agent", hws, 1));

    ihc_msg *r = th_fc_interrupt_until_report(&fc, 7, "dev-1", 1, 8000);
    assert_non_null(r);
    assert_string_equal(r->u.report.hw, "dev-1");
    assert_int_equal(r->u.report.n_sessions, 1);
    assert_string_equal(r->u.report.sessions[0], sid);
    assert_int_equal(r->u.report.n_modules, 3);
    ihc_msg_free(r);
    char line[512];
    snprintf(line, sizeof(line), "simulate stopped session=%s hw=dev-1 module=text_processing",
             sid);
    assert_true(TH_WAIT(th_log_has(log, line, 0), 2000));

    /* the replacement dev-1 session begins (after the pause, in the new epoch) */
    ihc_msg *b = NULL;
    uint64_t end = th_now_ms_() + 5000;
    while (!b && th_now_ms_() < end) {
        ihc_msg *m = th_fc_recv(&fc, 200);
        if (m && m->type == IHC_MSG_SESSION_BEGIN &&
            strcmp(m->u.session_begin.session.hw, "dev-1") == 0)
            b = m;
        else
            ihc_msg_free(m);
    }
    assert_non_null(b);
    char sid2[IHC_ID_MAX + 1];
    snprintf(sid2, sizeof(sid2), "%s", b->u.session_begin.session.session_id);
    assert_int_equal(b->u.session_begin.session.epoch, 1);
    ihc_msg_free(b);
    assert_string_not_equal(sid2, sid);

    /* the coordinator goes away and comes back: a new hello lists the current session */
    th_fc_close(&fc); /* closes the agent's connections too */
    assert_int_equal(th_fc_listen(&fc), 0);
    char sid3[IHC_ID_MAX + 1] = "";
    assert_true(wait_hello(&fc, "dev-1", sid3, sizeof(sid3), 8000));
    assert_string_equal(sid3, sid2);

    int st = th_stop(agent, SIGTERM, 5000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    th_fc_close(&fc);
}

static int setup(void **state)
{
    (void)state;
    tmpdir = th_tmpdir("agent-late");
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
        cmocka_unit_test(test_agent_late_coordinator),
    };
    return cmocka_run_group_tests_name("agent_late_coordinator", tests, setup, teardown);
}
