/* Unit tests of agent sessions: begin/end, generated ids, validation, MAX_ACTIVE_SESSIONS,
 * reaping after SESSION_TIMEOUT (in creation order), generators (registered and spawned) and their
 * stop. No coordinator is needed: the agent keeps dialing an address nobody listens on. */
#include "harness.h"

#include "err.h"
#include "ihc/agent.h"

#include <nng/nng.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* max_sessions / session_timeout 0: keep ihc_agent_opts_init's default. */
static ihc_agent *open_agent(int max_sessions, double session_timeout)
{
    char pub[64], rep[64];
    snprintf(pub, sizeof(pub), "tcp://127.0.0.1:%d", th_free_port());
    snprintf(rep, sizeof(rep), "tcp://127.0.0.1:%d", th_free_port());
    ihc_agent_opts o;
    ihc_agent_opts_init(&o);
    o.agent_id = "test-agent:1";
    o.pub_url = pub;
    o.report_url = rep;
    if (max_sessions)
        o.max_active_sessions = max_sessions;
    if (session_timeout)
        o.session_timeout = session_timeout;
    o.high_priority = false;
    ihc_agent *a = NULL;
    TH_PASS(ihc_agent_open(&a, &o));
    return a;
}

static void test_agent_session_begin_end(void **state)
{
    (void)state;
    ihc_agent *a = open_agent(0, 0);
    assert_string_equal(ihc_agent_id(a), "test-agent:1");
    assert_false(ihc_agent_connected(a));
    ihc_token *t = NULL;
    char sid[129];
    ihc_session_opts so = {.session_id = "s-1", .hw = "dev-1", .module = "text", .data = "{}"};
    TH_PASS(ihc_agent_session_begin(a, &so, &t, sid, sizeof(sid)));
    assert_string_equal(sid, "s-1");
    assert_string_equal(ihc_token_session(t), "s-1");
    assert_false(ihc_token_cancelled(t));
    assert_int_equal(ihc_agent_session_count(a), 1);
    assert_false(ihc_agent_should_interrupt(a, "dev-1"));
    TH_FAIL(ihc_agent_session_begin(a, &so, &(ihc_token *){NULL}, NULL, 0), IHC_EEXIST);
    TH_PASS(ihc_agent_session_end(a, "s-1"));
    assert_int_equal(ihc_agent_session_count(a), 0);
    TH_FAIL(ihc_agent_session_end(a, "s-1"), IHC_ENOENT);
    TH_FAIL(ihc_agent_session_end(a, "never"), IHC_ENOENT);
    /* the caller's reference outlives the session */
    assert_false(ihc_token_cancelled(t));
    ihc_token_release(t);
    /* the id can be used again once ended */
    TH_PASS(ihc_agent_session_begin(a, &so, &t, NULL, 0));
    ihc_token_release(t);
    ihc_agent_close(a); /* ends the live session */
    ihc_agent_close(NULL);
}

static void test_agent_session_generated_ids(void **state)
{
    (void)state;
    ihc_agent *a = open_agent(0, 0);
    ihc_token *t1 = NULL, *t2 = NULL, *t3 = NULL;
    char s1[129], s2[129], s3[160];
    ihc_session_opts so = {.hw = "dev-1"};
    TH_PASS(ihc_agent_session_begin(a, &so, &t1, s1, sizeof(s1)));
    TH_PASS(ihc_agent_session_begin(a, &so, &t2, s2, sizeof(s2)));
    /* "<hw>-<8 hex agent tag>-<n>": unique per agent, increasing within one */
    assert_int_equal(strlen(s1), strlen("dev-1-") + 8 + 2);
    assert_memory_equal(s1, "dev-1-", 6);
    assert_string_equal(s1 + 14, "-1");
    assert_memory_equal(s1, s2, 14);
    assert_string_equal(s2 + 14, "-2");
    /* another agent's ids differ even for the same hw and counter */
    ihc_agent *b = open_agent(0, 0);
    ihc_token *tb = NULL;
    char sb[129];
    TH_PASS(ihc_agent_session_begin(b, &so, &tb, sb, sizeof(sb)));
    assert_string_not_equal(s1, sb);
    ihc_token_release(tb);
    ihc_agent_close(b);
    /* a 128-byte hw still yields a valid id of at most 128 bytes */
    char hw[129];
    memset(hw, 'h', 128);
    hw[128] = '\0';
    so.hw = hw;
    TH_PASS(ihc_agent_session_begin(a, &so, &t3, s3, sizeof(s3)));
    assert_true(strlen(s3) <= 128);
    assert_non_null(strstr(s3, "-3"));
    assert_int_equal(ihc_agent_session_count(a), 3);
    /* an explicit id that looks generated is not handed out twice */
    ihc_token *t4 = NULL, *t5 = NULL;
    char s5[129];
    char next[129];
    snprintf(next, sizeof(next), "dev-2-%.8s-4", s1 + 6);
    ihc_session_opts ex = {.session_id = next, .hw = "dev-2"};
    TH_PASS(ihc_agent_session_begin(a, &ex, &t4, NULL, 0));
    ihc_session_opts gen = {.hw = "dev-2"};
    TH_PASS(ihc_agent_session_begin(a, &gen, &t5, s5, sizeof(s5)));
    assert_string_not_equal(s5, next);
    assert_string_equal(s5 + 14, "-5");
    ihc_token_release(t1);
    ihc_token_release(t2);
    ihc_token_release(t3);
    ihc_token_release(t4);
    ihc_token_release(t5);
    ihc_agent_close(a);
}

static void test_agent_session_bad_input(void **state)
{
    (void)state;
    ihc_agent *a = open_agent(0, 0);
    ihc_token *t = NULL;
    char sid[129];
    const char *bad_hws[] = {"", "*", "bad hw", "dev/1", "dev\n1"};
    for (size_t i = 0; i < sizeof(bad_hws) / sizeof(bad_hws[0]); i++) {
        ihc_session_opts so = {.hw = bad_hws[i]};
        TH_FAIL(ihc_agent_session_begin(a, &so, &t, sid, sizeof(sid)), IHC_EBADHW);
        assert_null(t);
    }
    char longhw[200];
    memset(longhw, 'x', 129);
    longhw[129] = '\0';
    ihc_session_opts so = {.hw = longhw};
    TH_FAIL(ihc_agent_session_begin(a, &so, &t, sid, sizeof(sid)), IHC_EBADHW);
    so.hw = NULL;
    TH_FAIL(ihc_agent_session_begin(a, &so, &t, sid, sizeof(sid)), IHC_EBADHW);
    so = (ihc_session_opts){.hw = "dev-1", .session_id = "has space"};
    TH_FAIL(ihc_agent_session_begin(a, &so, &t, sid, sizeof(sid)), IHC_EBADID);
    so = (ihc_session_opts){.hw = "dev-1", .session_id = ""};
    TH_FAIL(ihc_agent_session_begin(a, &so, &t, sid, sizeof(sid)), IHC_EBADID);
    so = (ihc_session_opts){.hw = "dev-1", .module = "bad module"};
    TH_FAIL(ihc_agent_session_begin(a, &so, &t, sid, sizeof(sid)), IHC_EBADID);
    so = (ihc_session_opts){.hw = "dev-1"};
    TH_FAIL(ihc_agent_session_begin(a, &so, &t, sid, 16), IHC_EINVAL);
    TH_FAIL(ihc_agent_session_begin(a, NULL, &t, sid, sizeof(sid)), IHC_EINVAL);
    TH_FAIL(ihc_agent_session_begin(a, &so, NULL, sid, sizeof(sid)), IHC_EINVAL);
    assert_int_equal(ihc_agent_session_count(a), 0);
    assert_false(ihc_agent_should_interrupt(a, "bad hw"));
    ihc_agent_close(a);
}

static void test_agent_session_limit(void **state)
{
    (void)state;
    ihc_agent *a = open_agent(3, 0);
    ihc_token *t[4] = {0};
    char sid[3][129];
    ihc_session_opts so = {.hw = "dev-1"};
    for (int i = 0; i < 3; i++)
        TH_PASS(ihc_agent_session_begin(a, &so, &t[i], sid[i], sizeof(sid[i])));
    TH_FAIL(ihc_agent_session_begin(a, &so, &t[3], NULL, 0), IHC_ELIMIT);
    assert_null(t[3]);
    assert_int_equal(ihc_agent_session_count(a), 3);
    TH_PASS(ihc_agent_session_end(a, sid[1]));
    TH_PASS(ihc_agent_session_begin(a, &so, &t[3], NULL, 0));
    assert_int_equal(ihc_agent_session_count(a), 3);
    for (int i = 0; i < 4; i++)
        ihc_token_release(t[i]);
    ihc_agent_close(a);
}

static atomic_int cancel_calls;
static void on_cancel(const char *sid, void *arg)
{
    (void)arg;
    if (strcmp(sid, "short") == 0)
        atomic_fetch_add(&cancel_calls, 1);
}

static void test_agent_session_reaped_after_timeout(void **state)
{
    (void)state;
    atomic_store(&cancel_calls, 0);
    ihc_agent *a = open_agent(0, 0.2);
    ihc_token *t = NULL;
    ihc_session_opts so = {.session_id = "short", .hw = "dev-1", .on_cancel = on_cancel};
    uint64_t t0 = th_now_ms_();
    TH_PASS(ihc_agent_session_begin(a, &so, &t, NULL, 0));
    assert_true(TH_WAIT(ihc_agent_session_count(a) == 0, 3000));
    assert_true(th_now_ms_() - t0 >= 190);
    assert_true(ihc_token_cancelled(t));
    TH_PASS(ihc_token_wait(t, 0));
    assert_int_equal(atomic_load(&cancel_calls), 1);
    TH_FAIL(ihc_agent_session_end(a, "short"), IHC_ENOENT);
    ihc_token_release(t);
    ihc_agent_close(a);
}

/* Sessions expire each SESSION_TIMEOUT after its own beginning, oldest first: the reaper
 * walks them in creation order and stops at the first one too young, so a younger session
 * must not hold an older one back, and one begun after the newest was ended must still be
 * found (the list's tail follows ends). */
static void test_agent_session_reaped_in_order(void **state)
{
    (void)state;
    ihc_agent *a = open_agent(0, 2.0);
    ihc_token *t_old = NULL, *t_mid = NULL, *t_gone = NULL, *t_young = NULL;
    ihc_session_opts so = {.session_id = "old", .hw = "dev-1"};
    TH_PASS(ihc_agent_session_begin(a, &so, &t_old, NULL, 0));
    so.session_id = "mid";
    so.hw = "dev-2";
    TH_PASS(ihc_agent_session_begin(a, &so, &t_mid, NULL, 0));
    so.session_id = "gone";
    TH_PASS(ihc_agent_session_begin(a, &so, &t_gone, NULL, 0));
    TH_PASS(ihc_agent_session_end(a, "gone")); /* the newest: the list's tail moves back */
    th_sleep_ms_(1000);
    uint64_t young_t0 = th_now_ms_();
    so.session_id = "young";
    TH_PASS(ihc_agent_session_begin(a, &so, &t_young, NULL, 0));
    /* the older two go about 1 s before the young one (ticks are 50 ms apart) */
    assert_true(TH_WAIT(ihc_token_cancelled(t_old) && ihc_token_cancelled(t_mid), 5000));
    assert_true(th_now_ms_() - young_t0 < 1900);
    assert_false(ihc_token_cancelled(t_young));
    assert_true(TH_WAIT(ihc_agent_session_count(a) == 1, 2000));
    TH_FAIL(ihc_agent_session_end(a, "old"), IHC_ENOENT);
    assert_true(TH_WAIT(ihc_agent_session_count(a) == 0, 5000));
    assert_true(th_now_ms_() - young_t0 >= 1990);
    assert_true(ihc_token_cancelled(t_young));
    ihc_token_release(t_old);
    ihc_token_release(t_mid);
    ihc_token_release(t_gone);
    ihc_token_release(t_young);
    ihc_agent_close(a);
}

/* A generator on a thread of the test: obeying ones finish when their stop function is
 * called, the others only when the test says so. */
typedef struct {
    ihc_generator *g;
    bool obey;
    atomic_int stop_called;
    atomic_int finish;
    atomic_int done;
} gen_ctx;

static void gen_stop(void *arg)
{
    gen_ctx *c = arg;
    atomic_fetch_add(&c->stop_called, 1);
}

static void *gen_main(void *arg)
{
    gen_ctx *c = arg;
    while (!atomic_load(&c->finish) && !(c->obey && atomic_load(&c->stop_called)))
        th_sleep_ms_(1);
    ihc_generator_done(c->g);
    atomic_store(&c->done, 1);
    return NULL;
}

static void gen_start(ihc_agent *a, const char *sid, gen_ctx *c, bool obey, pthread_t *th)
{
    c->obey = obey;
    TH_PASS(ihc_agent_generator_add(a, sid, "text", obey ? gen_stop : NULL, c, &c->g));
    assert_int_equal(pthread_create(th, NULL, gen_main, c), 0);
}

static void test_agent_session_generators_stop(void **state)
{
    (void)state;
    ihc_agent *a = open_agent(0, 0);
    ihc_token *t1 = NULL, *t2 = NULL, *t3 = NULL;
    ihc_session_opts so = {.session_id = "g-1", .hw = "dev-1"};
    TH_PASS(ihc_agent_session_begin(a, &so, &t1, NULL, 0));
    so = (ihc_session_opts){.session_id = "g-2", .hw = "dev-2"};
    TH_PASS(ihc_agent_session_begin(a, &so, &t2, NULL, 0));
    so = (ihc_session_opts){.session_id = "g-3", .hw = "dev-3"};
    TH_PASS(ihc_agent_session_begin(a, &so, &t3, NULL, 0));
    ihc_generator *g = NULL;
    TH_FAIL(ihc_agent_generator_add(a, "nope", "m", gen_stop, NULL, &g), IHC_ENOENT);

    static gen_ctx fast, slow, other, last;
    pthread_t th_fast, th_slow, th_other, th_last;
    gen_start(a, "g-1", &fast, true, &th_fast);
    gen_start(a, "g-1", &slow, false, &th_slow);
    gen_start(a, "g-2", &other, true, &th_other);
    gen_start(a, "g-3", &last, true, &th_last);

    /* the obeying generator ends, the other is still running at the deadline */
    size_t left = 99;
    uint64_t t0 = th_now_ms_();
    TH_FAIL(ihc_agent_generators_stop(a, "g-1", NULL, 150, &left), IHC_ETIMEDOUT);
    assert_true(th_now_ms_() - t0 >= 140);
    assert_int_equal(left, 1);
    assert_true(ihc_token_cancelled(t1));
    assert_int_equal(atomic_load(&fast.stop_called), 1);
    assert_true(TH_WAIT(atomic_load(&fast.done), 3000));
    pthread_join(th_fast, NULL);
    atomic_store(&slow.finish, 1);
    pthread_join(th_slow, NULL);
    TH_PASS(ihc_agent_generators_stop(a, "g-1", NULL, 1000, &left));
    assert_int_equal(left, 0);
    assert_int_equal(atomic_load(&fast.stop_called), 1); /* once */

    /* by hw: only that hw's generators */
    TH_PASS(ihc_agent_generators_stop(a, NULL, "dev-2", 3000, &left));
    assert_int_equal(left, 0);
    assert_int_equal(atomic_load(&other.stop_called), 1);
    assert_true(ihc_token_cancelled(t2));
    assert_false(ihc_token_cancelled(t3));
    assert_int_equal(atomic_load(&last.stop_called), 0);
    pthread_join(th_other, NULL);

    /* close stops the last one; it finishes after close returned or during it */
    ihc_token_release(t1);
    ihc_token_release(t2);
    ihc_token_release(t3);
    ihc_agent_close(a);
    pthread_join(th_last, NULL);
    assert_int_equal(atomic_load(&last.stop_called), 1);
}

static atomic_int spawned_running, spawned_exited;

static void spawned_work(ihc_token *tok, void *arg)
{
    (void)arg;
    atomic_fetch_add(&spawned_running, 1);
    for (;;) {
        IHC_CHECKPOINT(tok, break);
        th_sleep_ms_(1);
    }
    atomic_fetch_add(&spawned_exited, 1);
}

static void test_agent_session_spawn_exits_on_token(void **state)
{
    (void)state;
    atomic_store(&spawned_running, 0);
    atomic_store(&spawned_exited, 0);
    ihc_agent *a = open_agent(0, 0);
    ihc_token *t1 = NULL, *t2 = NULL;
    ihc_session_opts so = {.session_id = "w-1", .hw = "dev-1"};
    TH_PASS(ihc_agent_session_begin(a, &so, &t1, NULL, 0));
    so = (ihc_session_opts){.session_id = "w-2", .hw = "dev-2"};
    TH_PASS(ihc_agent_session_begin(a, &so, &t2, NULL, 0));
    TH_FAIL(ihc_agent_spawn(a, "nope", "m", spawned_work, NULL), IHC_ENOENT);
    TH_FAIL(ihc_agent_spawn(a, "w-1", "m", NULL, NULL), IHC_EINVAL);
    for (int i = 0; i < 3; i++)
        TH_PASS(ihc_agent_spawn(a, "w-1", "text", spawned_work, NULL));
    for (int i = 0; i < 2; i++)
        TH_PASS(ihc_agent_spawn(a, "w-2", "audio", spawned_work, NULL));
    assert_true(TH_WAIT(atomic_load(&spawned_running) == 5, 5000));
    size_t left = 99;
    TH_PASS(ihc_agent_generators_stop(a, NULL, "dev-1", 3000, &left));
    assert_int_equal(left, 0);
    assert_int_equal(atomic_load(&spawned_exited), 3);
    assert_false(ihc_token_cancelled(t2));
    /* the two left are stopped (and their threads joined) by close */
    ihc_token_release(t1);
    ihc_token_release(t2);
    ihc_agent_close(a);
    assert_int_equal(atomic_load(&spawned_exited), 5);
}

static void test_agent_session_open_errors(void **state)
{
    (void)state;
    ihc_agent *a = NULL;
    ihc_agent_opts o;
    ihc_agent_opts_init(&o);
    assert_int_equal(o.max_active_sessions, 100);
    assert_true(o.cleanup_on_interrupt && o.force_cleanup);
    o.max_active_sessions = -1;
    TH_FAIL(ihc_agent_open(&a, &o), IHC_EINVAL);
    /* values are taken as given: 0 is not "the default" (kill_grace 0 is valid: at once) */
    o.max_active_sessions = 0;
    TH_FAIL(ihc_agent_open(&a, &o), IHC_EINVAL);
    ihc_agent_opts_init(&o);
    o.heartbeat_interval = 0;
    TH_FAIL(ihc_agent_open(&a, &o), IHC_EINVAL);
    ihc_agent_opts_init(&o);
    o.session_timeout = -2;
    TH_FAIL(ihc_agent_open(&a, &o), IHC_EINVAL);
    ihc_agent_opts_init(&o);
    o.agent_id = "has space";
    TH_FAIL(ihc_agent_open(&a, &o), IHC_EINVAL);
    ihc_agent_opts_init(&o);
    o.pub_url = "nope://x";
    TH_FAIL(ihc_agent_open(&a, &o), IHC_EINVAL);
    assert_null(a);
    TH_FAIL(ihc_agent_open(NULL, &o), IHC_EINVAL);
    /* defaults: id is host:pid */
    ihc_agent_opts_init(&o);
    char pub[64];
    snprintf(pub, sizeof(pub), "tcp://127.0.0.1:%d", th_free_port());
    o.pub_url = pub;
    o.report_url = pub;
    TH_PASS(ihc_agent_open(&a, &o));
    char want[32];
    snprintf(want, sizeof(want), ":%d", (int)getpid());
    const char *id = ihc_agent_id(a);
    assert_true(strlen(id) > strlen(want));
    assert_string_equal(id + strlen(id) - strlen(want), want);
    ihc_agent_close(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_session_begin_end),
        cmocka_unit_test(test_agent_session_generated_ids),
        cmocka_unit_test(test_agent_session_bad_input),
        cmocka_unit_test(test_agent_session_limit),
        cmocka_unit_test(test_agent_session_reaped_after_timeout),
        cmocka_unit_test(test_agent_session_reaped_in_order),
        cmocka_unit_test(test_agent_session_generators_stop),
        cmocka_unit_test(test_agent_session_spawn_exits_on_token),
        cmocka_unit_test(test_agent_session_open_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nng_fini(); /* nng's own threads, for leak checkers */
    return rc;
}
