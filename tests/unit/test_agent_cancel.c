/* Unit tests of the interrupt path: fencing by epochs, dedupe by interrupt id, global
 * interrupts, a race of session begins against interrupts, hello on (re)connect, catch-up on
 * sync, callbacks, should_interrupt and escalation to signals. The fake coordinator of
 * tests/support (nng PUB + PULL on free tcp ports) plays the other side. */
#include "harness.h"

#include "fake_coord.h"

#include "agent_int.h"
#include "clock.h"
#include "err.h"
#include "ihc/agent.h"
#include "wire.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- tests ---- */

typedef struct {
    double cleanup_delay;
    double module_timeout;
    double kill_grace;
    bool no_cleanup;
    int max_sessions;
} agent_cfg;

static atomic_int method_calls;
static int m_count(const char *hw, void *arg)
{
    (void)hw;
    (void)arg;
    atomic_fetch_add(&method_calls, 1);
    return 0;
}

static pthread_mutex_t cb_mu = PTHREAD_MUTEX_INITIALIZER;
static char cb_hw[160];
static uint64_t cb_id;
static atomic_int cb_calls;
static void on_interrupt(const char *hw, uint64_t id, void *arg)
{
    (void)arg;
    pthread_mutex_lock(&cb_mu);
    snprintf(cb_hw, sizeof(cb_hw), "%s", hw);
    cb_id = id;
    pthread_mutex_unlock(&cb_mu);
    atomic_fetch_add(&cb_calls, 1);
}

static ihc_agent *open_agent_on(const char *pub, const char *pull, const agent_cfg *c)
{
    ihc_agent_opts o;
    ihc_agent_opts_init(&o);
    o.agent_id = "cancel-agent:1";
    o.pub_url = pub;
    o.report_url = pull;
    o.high_priority = false;
    o.session_cleanup_delay = c && c->cleanup_delay > 0 ? c->cleanup_delay : 0.3;
    o.default_module_timeout = c && c->module_timeout > 0 ? c->module_timeout : 1.0;
    o.kill_grace = c && c->kill_grace > 0 ? c->kill_grace : 2.0;
    o.cleanup_on_interrupt = !(c && c->no_cleanup);
    o.max_active_sessions = c && c->max_sessions ? c->max_sessions : 100;
    ihc_agent *a = NULL;
    TH_PASS(ihc_agent_open(&a, &o));
    static const ihc_method counting[] = {{"cancel_generation", m_count}};
    ihc_module_def d = {
        .name = "text_processing", .methods = counting, .n_methods = 1, .enabled = true};
    TH_PASS(ihc_agent_register_module(a, &d));
    TH_PASS(ihc_agent_register_callback(a, on_interrupt, NULL));
    atomic_store(&method_calls, 0);
    atomic_store(&cb_calls, 0);
    return a;
}

static ihc_agent *open_agent(th_fc *f, const agent_cfg *c)
{
    ihc_agent *a = open_agent_on(f->pub_url, f->report_url, c);
    th_fc_connect(f, a, ihc_agent_id(a), ihc_agent_connected);
    return a;
}

static ihc_token *begin(ihc_agent *a, const char *sid, const char *hw, pid_t pid)
{
    ihc_token *t = NULL;
    ihc_session_opts so = {.session_id = sid, .hw = hw, .pid = pid, .module = "text_processing"};
    TH_PASS(ihc_agent_session_begin(a, &so, &t, NULL, 0));
    return t;
}

static bool has_session(const ihc_msg *r, const char *sid)
{
    for (size_t i = 0; i < r->u.report.n_sessions; i++)
        if (strcmp(r->u.report.sessions[i], sid) == 0)
            return true;
    return false;
}

static ihc_msg *expect_report(th_fc *f, uint64_t id)
{
    ihc_msg *r = th_fc_recv_type(f, IHC_MSG_REPORT, 5000);
    if (!r)
        fail_msg("no report for interrupt %llu", (unsigned long long)id);
    if (r->u.report.id != id)
        fail_msg("report for interrupt %llu, want %llu", (unsigned long long)r->u.report.id,
                 (unsigned long long)id);
    return r;
}

/* Waits for the session_end of sid and checks its state; other sessions' ends are kept. */
static void expect_end(th_fc *f, const char *sid, const char *state)
{
    uint64_t end = th_now_ms_() + 5000;
    ihc_msg **others = NULL;
    size_t n_others = 0;
    bool found = false;
    while (!found && th_now_ms_() < end) {
        ihc_msg *m = th_fc_recv_type(f, IHC_MSG_SESSION_END, 100);
        if (!m)
            continue;
        if (strcmp(m->u.session_end.session_id, sid) == 0) {
            assert_string_equal(m->u.session_end.state, state);
            ihc_msg_free(m);
            found = true;
        } else {
            ihc_msg **grown = realloc(others, (n_others + 1) * sizeof(*others));
            assert_non_null(grown);
            others = grown;
            others[n_others++] = m;
        }
    }
    /* back in the order they came, ahead of anything still queued */
    while (n_others > 0)
        th_fc_unget(f, others[--n_others]);
    free(others);
    if (!found)
        fail_msg("no session_end for %s", sid);
}

/* No session_end for sid comes within ms (other messages are kept). */
static void expect_no_end(th_fc *f, const char *sid, int ms)
{
    uint64_t end = th_now_ms_() + (uint64_t)ms;
    ihc_msg **others = NULL;
    size_t n_others = 0;
    while (th_now_ms_() < end) {
        ihc_msg *m = th_fc_recv(f, 20);
        if (!m)
            continue;
        if (m->type == IHC_MSG_SESSION_END && strcmp(m->u.session_end.session_id, sid) == 0)
            fail_msg("session_end for %s although the report named it", sid);
        ihc_msg **grown = realloc(others, (n_others + 1) * sizeof(*others));
        assert_non_null(grown);
        others = grown;
        others[n_others++] = m;
    }
    while (n_others > 0)
        th_fc_unget(f, others[--n_others]);
    free(others);
}

static void test_agent_cancel_interrupt_report(void **state)
{
    (void)state;
    th_fc f = {0};
    assert_int_equal(th_fc_listen(&f), 0);
    ihc_agent *a = open_agent(&f, NULL);
    ihc_token *t1 = begin(a, "s-1", "dev-1", 0);
    ihc_token *t2 = begin(a, "s-2", "dev-1", 0);
    ihc_token *t3 = begin(a, "s-3", "dev-2", 0);

    TH_PASS(th_fc_send_interrupt(&f, 1, "dev-1", 1, NULL, 0));
    ihc_msg *r = expect_report(&f, 1);
    assert_string_equal(r->u.report.agent, "cancel-agent:1");
    assert_string_equal(r->u.report.hw, "dev-1");
    assert_int_equal(r->u.report.n_sessions, 2);
    assert_true(has_session(r, "s-1") && has_session(r, "s-2"));
    assert_int_equal(r->u.report.n_modules, 1);
    assert_string_equal(r->u.report.modules[0].name, "text_processing");
    assert_int_equal(r->u.report.modules[0].status, IHC_MOD_OK);
    assert_true(r->u.report.time_ms >= 0 && r->u.report.time_ms < 1000);
    ihc_msg_free(r);
    assert_true(ihc_token_cancelled(t1) && ihc_token_cancelled(t2));
    assert_false(ihc_token_cancelled(t3));
    assert_int_equal(atomic_load(&method_calls), 1);
    assert_true(TH_WAIT(ihc_agent_session_count(a) == 1, 2000));
    assert_true(TH_WAIT(atomic_load(&cb_calls) == 1, 2000));
    pthread_mutex_lock(&cb_mu);
    assert_string_equal(cb_hw, "dev-1");
    assert_int_equal(cb_id, 1);
    pthread_mutex_unlock(&cb_mu);
    TH_FAIL(ihc_agent_session_end(a, "s-1"), IHC_ENOENT); /* cleaned up */

    /* should_interrupt: set for dev-1 only, cleared after SESSION_CLEANUP_DELAY */
    assert_true(ihc_agent_should_interrupt(a, "dev-1"));
    assert_false(ihc_agent_should_interrupt(a, "dev-2"));
    assert_true(TH_WAIT(!ihc_agent_should_interrupt(a, "dev-1"), 3000));
    /* one message back: the report named the sessions it ended, no session_end followed */
    expect_no_end(&f, "s-1", 50);
    expect_no_end(&f, "s-2", 0);

    /* a session begun after the interrupt carries its epoch and survives it */
    ihc_token *t4 = begin(a, "s-4", "dev-1", 0);
    TH_PASS(th_fc_send_interrupt(&f, 2, "dev-1", 1, ihc_agent_id(a), 0));
    r = expect_report(&f, 2);
    assert_int_equal(r->u.report.n_sessions, 0);
    ihc_msg_free(r);
    assert_false(ihc_token_cancelled(t4));
    /* the next epoch cancels it */
    TH_PASS(th_fc_send_interrupt(&f, 3, "dev-1", 2, NULL, 0));
    r = expect_report(&f, 3);
    assert_int_equal(r->u.report.n_sessions, 1);
    assert_true(has_session(r, "s-4"));
    ihc_msg_free(r);
    assert_true(ihc_token_cancelled(t4));
    assert_false(ihc_token_cancelled(t3));
    ihc_token_release(t1);
    ihc_token_release(t2);
    ihc_token_release(t3);
    ihc_token_release(t4);
    ihc_agent_close(a);
    th_fc_close(&f);
}

static void test_agent_cancel_duplicate_once(void **state)
{
    (void)state;
    th_fc f = {0};
    assert_int_equal(th_fc_listen(&f), 0);
    ihc_agent *a = open_agent(&f, NULL);
    ihc_token *t1 = begin(a, "d-1", "dev-1", 0);
    TH_PASS(th_fc_send_interrupt(&f, 5, "dev-1", 1, NULL, 0));
    ihc_msg *r = expect_report(&f, 5);
    assert_int_equal(r->u.report.n_sessions, 1);
    ihc_msg_free(r);
    assert_int_equal(atomic_load(&method_calls), 1);
    /* re-sent without this agent listed: ignored; the marker's report comes next */
    TH_PASS(th_fc_send_interrupt(&f, 5, "dev-1", 1, NULL, 1));
    TH_PASS(th_fc_send_interrupt(&f, 6, "dev-9", 1, ihc_agent_id(a), 0));
    r = expect_report(&f, 6);
    ihc_msg_free(r);
    assert_int_equal(atomic_load(&method_calls), 2);
    /* re-sent with this agent listed: the same report again, nothing run twice */
    TH_PASS(th_fc_send_interrupt(&f, 5, "dev-1", 1, ihc_agent_id(a), 2));
    r = expect_report(&f, 5);
    assert_int_equal(r->u.report.n_sessions, 1);
    assert_true(has_session(r, "d-1"));
    assert_string_equal(r->u.report.hw, "dev-1");
    ihc_msg_free(r);
    assert_int_equal(atomic_load(&method_calls), 2);
    assert_int_equal(atomic_load(&cb_calls), 2);
    ihc_token_release(t1);
    ihc_agent_close(a);
    th_fc_close(&f);
}

static void test_agent_cancel_listed_and_unconcerned(void **state)
{
    (void)state;
    th_fc f = {0};
    assert_int_equal(th_fc_listen(&f), 0);
    ihc_agent *a = open_agent(&f, NULL);
    ihc_token *t1 = begin(a, "u-1", "dev-1", 0);
    /* no session of dev-7 and not listed: not for this agent */
    TH_PASS(th_fc_send_interrupt(&f, 20, "dev-7", 1, NULL, 0));
    TH_PASS(th_fc_send_interrupt(&f, 21, "dev-8", 1, "someone-else:1", 0));
    /* listed without a session: answers with no sessions */
    TH_PASS(th_fc_send_interrupt(&f, 22, "dev-7", 2, ihc_agent_id(a), 0));
    ihc_msg *r = expect_report(&f, 22);
    assert_int_equal(r->u.report.n_sessions, 0);
    assert_int_equal(r->u.report.n_modules, 1);
    ihc_msg_free(r);
    assert_int_equal(atomic_load(&method_calls), 1);
    assert_false(ihc_token_cancelled(t1));
    assert_true(ihc_agent_should_interrupt(a, "dev-7"));
    assert_false(ihc_agent_should_interrupt(a, "dev-8"));
    /* the ignored id is not remembered as handled: a listed re-send is answered */
    TH_PASS(th_fc_send_interrupt(&f, 20, "dev-7", 1, ihc_agent_id(a), 1));
    r = expect_report(&f, 20);
    ihc_msg_free(r);
    ihc_token_release(t1);
    ihc_agent_close(a);
    th_fc_close(&f);
}

static void test_agent_cancel_global(void **state)
{
    (void)state;
    th_fc f = {0};
    assert_int_equal(th_fc_listen(&f), 0);
    ihc_agent *a = open_agent(&f, NULL);
    ihc_token *t1 = begin(a, "g-1", "dev-1", 0);
    ihc_token *t2 = begin(a, "g-2", "dev-2", 0);
    TH_PASS(th_fc_send_interrupt(&f, 30, "*", 1, NULL, 0));
    ihc_msg *r = expect_report(&f, 30);
    assert_string_equal(r->u.report.hw, "*");
    assert_int_equal(r->u.report.n_sessions, 2);
    assert_true(has_session(r, "g-1") && has_session(r, "g-2"));
    ihc_msg_free(r);
    assert_true(ihc_token_cancelled(t1) && ihc_token_cancelled(t2));
    assert_true(ihc_agent_should_interrupt(a, "dev-5"));
    assert_true(ihc_agent_should_interrupt(a, "*"));
    assert_true(TH_WAIT(atomic_load(&cb_calls) == 1, 2000));
    pthread_mutex_lock(&cb_mu);
    assert_string_equal(cb_hw, "*");
    pthread_mutex_unlock(&cb_mu);
    /* a session begun after the global interrupt survives the same global epoch */
    ihc_token *t3 = begin(a, "g-3", "dev-3", 0);
    TH_PASS(th_fc_send_interrupt(&f, 31, "*", 1, NULL, 0));
    r = expect_report(&f, 31);
    assert_int_equal(r->u.report.n_sessions, 0);
    ihc_msg_free(r);
    assert_false(ihc_token_cancelled(t3));
    ihc_token_release(t1);
    ihc_token_release(t2);
    ihc_token_release(t3);
    ihc_agent_close(a);
    th_fc_close(&f);
}

/* ---- race: session begins against interrupts ---- */

enum { RACE_THREADS = 4, RACE_MAX = 400, RACE_INTERRUPTS = 20, RACE_AFTER = 10 };

static atomic_int race_last_seen; /* set once the last interrupt was handled */

typedef struct {
    ihc_agent *a;
    int idx;
    int n;
    ihc_token *toks[RACE_MAX];
} race_ctx;

/* Begins sessions until RACE_AFTER more were begun after the last interrupt was handled. */
static void *race_main(void *arg)
{
    race_ctx *c = arg;
    int after = 0;
    while (c->n < RACE_MAX && after < RACE_AFTER) {
        bool last = atomic_load(&race_last_seen);
        if (!last && c->n >= RACE_MAX - RACE_AFTER) { /* keep room for the late ones */
            th_sleep_ms_(1);
            continue;
        }
        char sid[64];
        snprintf(sid, sizeof(sid), "r%d-%d", c->idx, c->n);
        ihc_session_opts so = {.session_id = sid, .hw = "race"};
        TH_PASS(ihc_agent_session_begin(c->a, &so, &c->toks[c->n], NULL, 0));
        c->n++;
        after += last;
        if (c->n % 8 == 0)
            th_sleep_ms_(1);
    }
    return NULL;
}

static void test_agent_cancel_race(void **state)
{
    (void)state;
    th_fc f = {0};
    assert_int_equal(th_fc_listen(&f), 0);
    agent_cfg cfg = {.no_cleanup = true, .max_sessions = RACE_THREADS * RACE_MAX};
    ihc_agent *a = open_agent(&f, &cfg);
    atomic_store(&race_last_seen, 0);
    static race_ctx ctx[RACE_THREADS];
    pthread_t th[RACE_THREADS];
    for (int i = 0; i < RACE_THREADS; i++) {
        ctx[i] = (race_ctx){.a = a, .idx = i};
        assert_int_equal(pthread_create(&th[i], NULL, race_main, &ctx[i]), 0);
    }
    size_t reported = 0;
    for (int e = 1; e <= RACE_INTERRUPTS; e++) {
        TH_PASS(
            th_fc_send_interrupt(&f, 100 + (uint64_t)e, "race", (uint64_t)e, ihc_agent_id(a), 0));
        ihc_msg *r = expect_report(&f, 100 + (uint64_t)e);
        reported += r->u.report.n_sessions;
        ihc_msg_free(r);
    }
    atomic_store(&race_last_seen, 1);
    for (int i = 0; i < RACE_THREADS; i++)
        pthread_join(th[i], NULL);
    /* every session began before the last interrupt (epoch < E) is cancelled, every later one
     * survives, and each cancelled one was reported exactly once */
    size_t cancelled = 0, total = 0, begun = 0;
    pthread_mutex_lock(&a->lock);
    for (ihc__session *s = a->sessions; s; s = s->next) {
        total++;
        bool want = s->epoch < RACE_INTERRUPTS;
        if (want != ihc_token_cancelled(s->tok) || want != s->cancelled) {
            pthread_mutex_unlock(&a->lock);
            fail_msg("session %s epoch %llu cancelled=%d: a lost or wrong cancel", s->id,
                     (unsigned long long)s->epoch, (int)ihc_token_cancelled(s->tok));
        }
        cancelled += want;
    }
    pthread_mutex_unlock(&a->lock);
    for (int i = 0; i < RACE_THREADS; i++)
        begun += (size_t)ctx[i].n;
    assert_int_equal(total, begun);
    assert_int_equal(reported, cancelled);
    assert_true(cancelled > 0);
    assert_true(total - cancelled >= RACE_THREADS * RACE_AFTER);
    for (int i = 0; i < RACE_THREADS; i++)
        for (int k = 0; k < ctx[i].n; k++)
            ihc_token_release(ctx[i].toks[k]);
    ihc_agent_close(a);
    th_fc_close(&f);
}

/* ---- connection ---- */

static void test_agent_cancel_hello_on_connect(void **state)
{
    (void)state;
    th_fc f = {0};
    th_fc_pick_ports(&f);
    ihc_agent *a = open_agent_on(f.pub_url, f.report_url, NULL);
    ihc_token *t1 = begin(a, "early", "dev-1", 0);
    /* let the first dials fail: the coordinator really comes up after the agent */
    th_sleep_ms_(150);
    assert_false(ihc_agent_connected(a));
    assert_int_equal(th_fc_listen(&f), 0);
    ihc_msg *h = th_fc_recv_type(&f, IHC_MSG_HELLO, 5000);
    assert_non_null(h);
    assert_string_equal(h->u.hello.agent, "cancel-agent:1");
    assert_int_equal(h->u.hello.pid, (int32_t)getpid());
    assert_true(h->u.hello.started_ms > 0);
    assert_int_equal(h->u.hello.n_modules, 1);
    assert_string_equal(h->u.hello.modules[0].name, "text_processing");
    assert_int_equal(h->u.hello.modules[0].n_methods, 1);
    assert_int_equal(h->u.hello.n_sessions, 1);
    assert_string_equal(h->u.hello.sessions[0].session_id, "early");
    assert_string_equal(h->u.hello.sessions[0].hw, "dev-1");
    assert_string_equal(h->u.hello.sessions[0].module, "text_processing");
    ihc_msg_free(h);
    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    assert_true(ihc_agent_connected(a));

    /* the coordinator goes away and comes back: the agent says hello again */
    th_fc_close(&f);
    assert_true(TH_WAIT(!ihc_agent_connected(a), 5000));
    assert_int_equal(th_fc_listen(&f), 0); /* on the same ports */
    h = th_fc_recv_type(&f, IHC_MSG_HELLO, 5000);
    assert_non_null(h);
    assert_int_equal(h->u.hello.n_sessions, 1);
    ihc_msg_free(h);
    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    /* and interrupts flow again */
    TH_PASS(th_fc_send_interrupt(&f, 40, "dev-1", 1, NULL, 0));
    ihc_msg *r = expect_report(&f, 40);
    assert_true(has_session(r, "early"));
    ihc_msg_free(r);
    ihc_token_release(t1);
    ihc_agent_close(a);
    th_fc_close(&f);
}

static void send_sync(th_fc *f, ihc_agent *a, const char *hw, uint64_t epoch, int64_t set_ms)
{
    ihc_epoch_info ep = {.hw = (char *)hw, .epoch = epoch, .set_ms = set_ms};
    ihc_msg s = {.type = IHC_MSG_SYNC};
    s.u.sync = (ihc_sync_msg){.agent = (char *)ihc_agent_id(a), .epochs = &ep, .n_epochs = 1};
    TH_PASS(th_fc_publish(f, &s));
}

static void test_agent_cancel_catch_up_on_sync(void **state)
{
    (void)state;
    th_fc f = {0};
    assert_int_equal(th_fc_listen(&f), 0);
    ihc_agent *a = open_agent(&f, NULL);
    ihc_token *told = begin(a, "old", "dev-1", 0);
    ihc_token *tyoung = begin(a, "young", "dev-2", 0);
    ihc_token *tg = begin(a, "gl", "dev-3", 0);
    int64_t now = ihc_now_ms();

    /* dev-1 was interrupted (epoch 5) after "old" began: a missed interrupt */
    send_sync(&f, a, "dev-1", 5, now + 60000);
    assert_true(TH_WAIT(ihc_token_cancelled(told), 5000));
    expect_end(&f, "old", "interrupted");
    assert_true(TH_WAIT(atomic_load(&method_calls) == 1, 2000));
    assert_true(ihc_agent_should_interrupt(a, "dev-1"));

    /* dev-2's last interrupt was before "young" began: it adopts the epoch */
    send_sync(&f, a, "dev-2", 3, now - 60000);
    /* a re-send of that interrupt must now leave it alone */
    TH_PASS(th_fc_send_interrupt(&f, 50, "dev-2", 3, ihc_agent_id(a), 0));
    ihc_msg *r = expect_report(&f, 50);
    assert_int_equal(r->u.report.n_sessions, 0);
    ihc_msg_free(r);
    assert_false(ihc_token_cancelled(tyoung));

    /* global epoch with an unknown set time: everything older is cancelled */
    send_sync(&f, a, "*", 2, 0);
    assert_true(TH_WAIT(ihc_token_cancelled(tg), 5000));
    assert_true(TH_WAIT(ihc_token_cancelled(tyoung), 5000));
    assert_true(TH_WAIT(ihc_agent_session_count(a) == 0, 5000));
    /* no report for a catch-up: there is no interrupt id to answer */
    assert_null(th_fc_recv_type(&f, IHC_MSG_REPORT, 100));
    ihc_token_release(told);
    ihc_token_release(tyoung);
    ihc_token_release(tg);
    ihc_agent_close(a);
    th_fc_close(&f);
}

/* ---- escalation ---- */

static pid_t child(bool ignore_term)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        /* an ignored signal stays ignored across exec; exec keeps valgrind/ASan out of it */
        if (ignore_term)
            signal(SIGTERM, SIG_IGN);
        execlp("sleep", "sleep", "30", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static bool alive(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0;
}

static void test_agent_cancel_escalation(void **state)
{
    (void)state;
    th_fc f = {0};
    assert_int_equal(th_fc_listen(&f), 0);
    agent_cfg cfg = {.module_timeout = 0.2, .kill_grace = 0.2};
    ihc_agent *a = open_agent(&f, &cfg);
    pid_t stubborn = child(true);
    pid_t plain = child(false);
    pid_t polite = child(false);
    ihc_token *t1 = begin(a, "stubborn", "dev-1", stubborn);
    ihc_token *t2 = begin(a, "plain", "dev-1", plain);
    ihc_token *t3 = begin(a, "polite", "dev-1", polite);
    uint64_t t0 = th_now_ms_();
    TH_PASS(th_fc_send_interrupt(&f, 60, "dev-1", 1, NULL, 0));
    ihc_msg *r = expect_report(&f, 60);
    /* the report does not wait for escalation */
    assert_int_equal(r->u.report.n_sessions, 3);
    assert_true(alive(stubborn) && alive(plain));
    ihc_msg_free(r);
    /* the polite owner ends its session in time: no signal */
    TH_PASS(ihc_agent_session_end(a, "polite"));

    int st = th_wait_exit(plain, 5000);
    assert_true(st != -1);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    assert_true(th_now_ms_() - t0 >= 190);
    st = th_wait_exit(stubborn, 5000);
    assert_true(st != -1);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_true(th_now_ms_() - t0 >= 390);
    assert_int_equal(th_wait_exit(polite, 300), -1); /* still running */
    th_stop(polite, SIGKILL, 2000);
    ihc_token_release(t1);
    ihc_token_release(t2);
    ihc_token_release(t3);
    ihc_agent_close(a);
    th_fc_close(&f);
}

/* A process that exits by itself in time is left alone (and not reaped by the agent). */
static void test_agent_cancel_escalation_exited(void **state)
{
    (void)state;
    th_fc f = {0};
    assert_int_equal(th_fc_listen(&f), 0);
    agent_cfg cfg = {.module_timeout = 0.3, .kill_grace = 0.2};
    ihc_agent *a = open_agent(&f, &cfg);
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        execlp("sh", "sh", "-c", "sleep 0.05; exit 7", (char *)NULL);
        _exit(127);
    }
    ihc_token *t = begin(a, "exits", "dev-1", p);
    TH_PASS(th_fc_send_interrupt(&f, 70, "dev-1", 1, NULL, 0));
    ihc_msg *r = expect_report(&f, 70);
    ihc_msg_free(r);
    int st = th_wait_exit(p, 5000);
    assert_true(st != -1);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 7);
    ihc_token_release(t);
    ihc_agent_close(a);
    th_fc_close(&f);
}

/* ---- owners that report their own module results (the local API's held sessions) ---- */

static ihc_agent *held_agent;
static atomic_int held_told, held_rc;
static _Atomic uint64_t held_id;
static void on_cancel_hold(const char *sid, void *arg)
{
    (void)arg; /* on the agent's thread: no cmocka assertions here */
    atomic_store(&held_rc, ihc__session_hold_report(held_agent, sid));
    atomic_store(&held_id, ihc__cancel_current_id(held_agent));
    atomic_fetch_add(&held_told, 1);
}

static atomic_int later_rc;
static void *report_later(void *arg)
{
    const char *sid = arg;
    ihc_sleep_ms(100);
    ihc_module_result m[] = {
        {.name = "py_stream", .status = IHC_MOD_OK, .time_ms = 7.5},
        {.name = "py_tts", .status = IHC_MOD_FAILED, .time_ms = 1, .error = "busy"}};
    int rc = ihc__session_report(held_agent, sid, m, 2);
    /* the report may go out, and the interrupted session be cleaned up, before this end */
    if (rc == IHC_OK && (rc = ihc_agent_session_end(held_agent, sid)) == IHC_ENOENT)
        rc = IHC_OK;
    atomic_store(&later_rc, rc);
    return NULL;
}

static const ihc_module_result *find_module(const ihc_msg *r, const char *name)
{
    for (size_t i = 0; i < r->u.report.n_modules; i++)
        if (strcmp(r->u.report.modules[i].name, name) == 0)
            return &r->u.report.modules[i];
    return NULL;
}

static void test_agent_cancel_owner_reports(void **state)
{
    (void)state;
    th_fc f = {0};
    assert_int_equal(th_fc_listen(&f), 0);
    /* long enough that the owner's report (100 ms after being told) comes first even on a
     * loaded machine; the second half waits for all of it */
    agent_cfg c = {.module_timeout = 1.5};
    ihc_agent *a = open_agent(&f, &c);
    held_agent = a;
    atomic_store(&held_told, 0);

    /* the owner reports within the module timeout: its modules are in the report */
    ihc_token *t = NULL;
    ihc_session_opts so = {.session_id = "held-1", .hw = "dev-h", .on_cancel = on_cancel_hold};
    TH_PASS(ihc_agent_session_begin(a, &so, &t, NULL, 0));
    pthread_t th;
    uint64_t t0 = th_now_ms_();
    TH_PASS(th_fc_send_interrupt(&f, 50, "dev-h", 1, NULL, 0));
    assert_true(TH_WAIT(atomic_load(&held_told) == 1, 5000));
    assert_int_equal(atomic_load(&held_rc), IHC_OK);
    assert_int_equal(atomic_load(&held_id), 50); /* on_cancel knows the interrupt */
    assert_int_equal(pthread_create(&th, NULL, report_later, "held-1"), 0);
    ihc_msg *r = expect_report(&f, 50);
    uint64_t took = th_now_ms_() - t0;
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&later_rc), IHC_OK);
    assert_non_null(find_module(r, "text_processing"));
    const ihc_module_result *m = find_module(r, "py_stream");
    assert_non_null(m);
    assert_int_equal(m->status, IHC_MOD_OK);
    assert_true(m->time_ms == 7.5);
    m = find_module(r, "py_tts");
    assert_non_null(m);
    assert_int_equal(m->status, IHC_MOD_FAILED);
    assert_string_equal(m->error, "busy");
    assert_true(took < 1500); /* it did not wait for the whole module timeout */
    ihc_msg_free(r);
    ihc_token_release(t);

    /* an owner that never reports holds the report up to the module timeout, no longer */
    so.session_id = "held-2";
    TH_PASS(ihc_agent_session_begin(a, &so, &t, NULL, 0));
    t0 = th_now_ms_();
    TH_PASS(th_fc_send_interrupt(&f, 51, "dev-h", 2, NULL, 0));
    r = expect_report(&f, 51);
    took = th_now_ms_() - t0;
    assert_true(took >= 1400 && took < 6000);
    assert_true(has_session(r, "held-2"));
    assert_null(find_module(r, "py_stream"));
    ihc_msg_free(r);
    /* cleaned up after the report like any interrupted session */
    assert_true(TH_WAIT(ihc_agent_session_count(a) == 0, 3000));
    TH_FAIL(ihc__session_report(a, "held-2", NULL, 0), IHC_ENOENT);
    ihc_token_release(t);
    ihc_agent_close(a);
    th_fc_close(&f);
}

/* Sessions begun inside on_cancel: announced in the report (report.begun) to a coordinator
 * that said it reads them, instead of in session_begins of their own; one that ends before
 * the report has its session_begin sent ahead of its end; a re-sent report announces
 * nothing again; a coordinator that did not say so gets session_begins. */
static ihc_agent *begun_agent;
static atomic_int begun_n;
static void begin_next(const char *session_id, void *arg)
{
    (void)arg;
    int k = atomic_fetch_add(&begun_n, 1);
    char sid[32];
    snprintf(sid, sizeof(sid), "next-%d", k);
    ihc_token *t = NULL;
    ihc_session_opts so = {.session_id = sid, .hw = "dev-1", .module = "text_processing"};
    assert_int_equal(ihc_agent_session_begin(begun_agent, &so, &t, NULL, 0), IHC_OK);
    ihc_token_release(t);                   /* the session lives on until ended or interrupted */
    if (strcmp(session_id, "first") == 0) { /* and one begun and ended at once */
        so.session_id = "brief";
        assert_int_equal(ihc_agent_session_begin(begun_agent, &so, &t, NULL, 0), IHC_OK);
        ihc_token_release(t);
        assert_int_equal(ihc_agent_session_end(begun_agent, "brief"), IHC_OK);
        /* and one of another hardware_id: not held (the coordinator would not expect this
         * agent for it until the report came) */
        ihc_session_opts other = {.session_id = "other", .hw = "dev-2"};
        assert_int_equal(ihc_agent_session_begin(begun_agent, &other, &t, NULL, 0), IHC_OK);
        ihc_token_release(t);
    }
}

/* The next message that is a session_begin or session_end of sid (others are dropped). */
static ihc_msg *next_event_of(th_fc *f, const char *sid, int ms)
{
    uint64_t end = th_now_ms_() + (uint64_t)ms;
    while (th_now_ms_() < end) {
        ihc_msg *m = th_fc_recv(f, 20);
        if (!m)
            continue;
        const char *id = m->type == IHC_MSG_SESSION_BEGIN ? m->u.session_begin.session.session_id
                         : m->type == IHC_MSG_SESSION_END ? m->u.session_end.session_id
                                                          : NULL;
        if (id && strcmp(id, sid) == 0)
            return m;
        if (m->type == IHC_MSG_REPORT) { /* the report ends the search: kept for the caller */
            th_fc_unget(f, m);
            break;
        }
        ihc_msg_free(m);
    }
    return NULL;
}

/* Every message up to and including the report of interrupt id (v[n - 1]), in order; fails
 * the test when the report does not come or more than max messages do. Caller frees them. */
static size_t collect_until_report(th_fc *f, uint64_t id, ihc_msg **v, size_t max)
{
    uint64_t end = th_now_ms_() + 5000;
    size_t n = 0;
    while (th_now_ms_() < end) {
        ihc_msg *m = th_fc_recv(f, 20);
        if (!m)
            continue;
        if (n == max)
            fail_msg("more than %zu messages before the report", max);
        v[n++] = m;
        if (m->type == IHC_MSG_REPORT && m->u.report.id == id)
            return n;
    }
    fail_msg("no report for interrupt %llu", (unsigned long long)id);
    return 0;
}

/* The index in v of the first message of type t about session sid, -1 when none. */
static ssize_t event_at(ihc_msg *const *v, size_t n, ihc_msg_type t, const char *sid)
{
    for (size_t i = 0; i < n; i++) {
        const char *id = v[i]->type != t              ? NULL
                         : t == IHC_MSG_SESSION_BEGIN ? v[i]->u.session_begin.session.session_id
                         : t == IHC_MSG_SESSION_END   ? v[i]->u.session_end.session_id
                                                      : NULL;
        if (id && strcmp(id, sid) == 0)
            return (ssize_t)i;
    }
    return -1;
}

/* Begins session sid of hw with on_cancel fn and waits until its session_begin came. */
static ihc_token *begin_announced(th_fc *f, ihc_agent *a, const char *sid, const char *hw,
                                  ihc_session_cancel_fn fn)
{
    ihc_token *t = NULL;
    ihc_session_opts so = {.session_id = sid, .hw = hw, .on_cancel = fn};
    TH_PASS(ihc_agent_session_begin(a, &so, &t, NULL, 0));
    ihc_msg *m = th_fc_recv_type(f, IHC_MSG_SESSION_BEGIN, 5000);
    assert_non_null(m);
    ihc_msg_free(m);
    return t;
}

static void test_agent_cancel_begun_in_report(void **state)
{
    (void)state;
    th_fc f = {.report_begun = true};
    assert_int_equal(th_fc_listen(&f), 0);
    ihc_agent *a = begun_agent = open_agent(&f, NULL);
    atomic_store(&begun_n, 0);
    ihc_token *t = begin_announced(&f, a, "first", "dev-1", begin_next);

    TH_PASS(th_fc_send_interrupt(&f, 1, "dev-1", 1, NULL, 0));
    ihc_msg *got[16];
    size_t n = collect_until_report(&f, 1, got, 16);
    ihc_msg *r = got[n - 1];
    /* "brief" ended inside on_cancel: its begin went out, then its end; "other" (dev-2) went
     * out on its own; next-0 did not: it is in the report */
    assert_true(event_at(got, n, IHC_MSG_SESSION_BEGIN, "brief") >= 0);
    assert_true(event_at(got, n, IHC_MSG_SESSION_BEGIN, "brief") <
                event_at(got, n, IHC_MSG_SESSION_END, "brief"));
    assert_true(event_at(got, n, IHC_MSG_SESSION_BEGIN, "other") >= 0);
    assert_int_equal(event_at(got, n, IHC_MSG_SESSION_BEGIN, "next-0"), -1);
    assert_int_equal(r->u.report.n_sessions, 1);
    assert_true(has_session(r, "first"));
    assert_int_equal(r->u.report.n_begun, 1);
    assert_string_equal(r->u.report.begun[0].session_id, "next-0");
    assert_string_equal(r->u.report.begun[0].hw, "dev-1");
    assert_int_equal(r->u.report.begun[0].epoch, 1); /* begun after the interrupt fenced */
    assert_string_equal(r->u.report.begun[0].module, "text_processing");
    for (size_t i = 0; i < n; i++)
        ihc_msg_free(got[i]);
    /* nothing else announced next-0 */
    assert_null(next_event_of(&f, "next-0", 100));
    assert_int_equal(ihc_agent_session_count(a), 2); /* next-0, other */

    /* a re-send of the report does not announce next-0 again */
    TH_PASS(th_fc_send_interrupt(&f, 1, "dev-1", 1, ihc_agent_id(a), 1));
    ihc_msg *r2 = expect_report(&f, 1);
    assert_int_equal(r2->u.report.n_begun, 0);
    ihc_msg_free(r2);

    /* a coordinator that does not read them: a session_begin, and no begun */
    f.report_begun = false;
    TH_PASS(th_fc_send_sync(&f, ihc_agent_id(a), NULL, 0));
    ihc_session_opts so = {.session_id = "second", .hw = "dev-1", .on_cancel = begin_next};
    ihc_token *t2 = NULL;
    TH_PASS(ihc_agent_session_begin(a, &so, &t2, NULL, 0));
    TH_PASS(th_fc_send_interrupt(&f, 2, "dev-1", 2, NULL, 0));
    ihc_msg *m = next_event_of(&f, "next-1", 5000);
    assert_non_null(m);
    assert_int_equal(m->type, IHC_MSG_SESSION_BEGIN);
    ihc_msg_free(m);
    r2 = expect_report(&f, 2);
    assert_int_equal(r2->u.report.n_begun, 0);
    assert_true(has_session(r2, "next-0") && has_session(r2, "second"));
    ihc_msg_free(r2);
    ihc_token_release(t);
    ihc_token_release(t2);
    ihc_agent_close(a);
    th_fc_close(&f);
}

/* begun sessions too big for one report (64 with 64 KiB of data each, past the wire's 4 MiB):
 * the report goes without them and each goes ahead of it in a session_begin of its own. */
static char big_data[IHC_DATA_MAX + 1]; /* strlen IHC_DATA_MAX: the most a session may hold */
static void begin_many(const char *session_id, void *arg)
{
    (void)session_id;
    (void)arg;
    for (int i = 0; i < IHC__HELD_BEGINS_MAX; i++) {
        char sid[32];
        snprintf(sid, sizeof sid, "many-%d", i);
        ihc_token *t = NULL;
        ihc_session_opts so = {.session_id = sid, .hw = "dev-3", .data = big_data};
        assert_int_equal(ihc_agent_session_begin(begun_agent, &so, &t, NULL, 0), IHC_OK);
        ihc_token_release(t);
    }
}

static void test_agent_cancel_begun_too_big(void **state)
{
    (void)state;
    memset(big_data, 'a', sizeof big_data - 1);
    big_data[0] = big_data[sizeof big_data - 2] = '"'; /* a JSON string */
    th_fc f = {.report_begun = true};
    assert_int_equal(th_fc_listen(&f), 0);
    agent_cfg c = {.max_sessions = 200};
    ihc_agent *a = begun_agent = open_agent(&f, &c);
    ihc_token *t = begin_announced(&f, a, "big", "dev-3", begin_many);
    TH_PASS(th_fc_send_interrupt(&f, 7, "dev-3", 1, NULL, 0));
    ihc_msg *got[IHC__HELD_BEGINS_MAX + 8];
    size_t n = collect_until_report(&f, 7, got, IHC__HELD_BEGINS_MAX + 8);
    ihc_msg *r = got[n - 1];
    assert_int_equal(r->u.report.n_begun, 0);
    assert_true(has_session(r, "big"));
    for (int i = 0; i < IHC__HELD_BEGINS_MAX; i++) {
        char sid[32];
        snprintf(sid, sizeof sid, "many-%d", i);
        if (event_at(got, n, IHC_MSG_SESSION_BEGIN, sid) < 0)
            fail_msg("no session_begin ahead of the report for %s", sid);
    }
    for (size_t i = 0; i < n; i++)
        ihc_msg_free(got[i]);
    assert_int_equal(ihc_agent_session_count(a), IHC__HELD_BEGINS_MAX);
    ihc_token_release(t);
    ihc_agent_close(a);
    th_fc_close(&f);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_cancel_interrupt_report),
        cmocka_unit_test(test_agent_cancel_duplicate_once),
        cmocka_unit_test(test_agent_cancel_listed_and_unconcerned),
        cmocka_unit_test(test_agent_cancel_global),
        cmocka_unit_test(test_agent_cancel_race),
        cmocka_unit_test(test_agent_cancel_hello_on_connect),
        cmocka_unit_test(test_agent_cancel_catch_up_on_sync),
        cmocka_unit_test(test_agent_cancel_escalation),
        cmocka_unit_test(test_agent_cancel_escalation_exited),
        cmocka_unit_test(test_agent_cancel_owner_reports),
        cmocka_unit_test(test_agent_cancel_begun_in_report),
        cmocka_unit_test(test_agent_cancel_begun_too_big),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nng_fini(); /* nng's own threads, for leak checkers */
    return rc;
}
