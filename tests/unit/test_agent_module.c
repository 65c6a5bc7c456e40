/* Unit tests of agent modules: methods in order, a hanging method reported timed out without
 * holding the report back, failing and disabled modules, config-file overrides and errors.
 * The fake coordinator of tests/support (nng PUB + PULL on free tcp ports) sends the
 * interrupts. */
#include "harness.h"

#include "fake_coord.h"

#include "err.h"
#include "ihc/agent.h"
#include "module.h"
#include "wire.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static ihc_agent *open_agent(th_fc *f, const char *config)
{
    ihc_agent_opts o;
    ihc_agent_opts_init(&o);
    o.agent_id = "mod-agent:1";
    o.pub_url = f->pub_url;
    o.report_url = f->report_url;
    o.high_priority = false;
    o.config_file = config;
    ihc_agent *a = NULL;
    TH_PASS(ihc_agent_open(&a, &o));
    return a;
}

/* The fake coordinator f listening, and an agent dialing it. */
static ihc_agent *start_agent(th_fc *f, const char *config)
{
    *f = (th_fc){0};
    assert_int_equal(th_fc_listen(f), 0);
    return open_agent(f, config);
}

static const ihc_module_result *find_mod(const ihc_msg *r, const char *name)
{
    for (size_t i = 0; i < r->u.report.n_modules; i++)
        if (strcmp(r->u.report.modules[i].name, name) == 0)
            return &r->u.report.modules[i];
    fail_msg("module %s missing from the report", name);
    return NULL;
}

/* Sends interrupt id for hw (epoch ep) and returns the agent's report (never NULL). */
static ihc_msg *interrupt(th_fc *f, ihc_agent *a, uint64_t id, const char *hw, uint64_t ep)
{
    TH_PASS(th_fc_send_interrupt(f, id, hw, ep, ihc_agent_id(a), 0));
    ihc_msg *r = th_fc_recv_type(f, IHC_MSG_REPORT, 5000);
    assert_non_null(r);
    assert_int_equal(r->u.report.id, id);
    return r;
}

static void add_module(ihc_agent *a, const char *name, const ihc_method *methods, size_t n,
                       double timeout)
{
    ihc_module_def d = {
        .name = name, .methods = methods, .n_methods = n, .timeout = timeout, .enabled = true};
    TH_PASS(ihc_agent_register_module(a, &d));
}

/* ---- methods ---- */

static pthread_mutex_t trace_mu = PTHREAD_MUTEX_INITIALIZER;
static char trace[512];

static void trace_add(const char *what)
{
    pthread_mutex_lock(&trace_mu);
    if (trace[0])
        strncat(trace, ",", sizeof(trace) - strlen(trace) - 1);
    strncat(trace, what, sizeof(trace) - strlen(trace) - 1);
    pthread_mutex_unlock(&trace_mu);
}

static void trace_get(char *out, size_t cap)
{
    pthread_mutex_lock(&trace_mu);
    snprintf(out, cap, "%s", trace);
    trace[0] = '\0';
    pthread_mutex_unlock(&trace_mu);
}

static int m_first(const char *hw, void *arg)
{
    (void)arg;
    char b[160];
    snprintf(b, sizeof(b), "first@%s", hw);
    trace_add(b);
    return 0;
}
static int m_second(const char *hw, void *arg)
{
    (void)hw;
    (void)arg;
    trace_add("second");
    return 0;
}
static int m_third(const char *hw, void *arg)
{
    (void)hw;
    (void)arg;
    trace_add("third");
    return 0;
}
static int m_fail(const char *hw, void *arg)
{
    (void)hw;
    (void)arg;
    trace_add("fail");
    return IHC_EIO;
}

static sem_t hang_sem;
static atomic_int hang_calls, hang_returned;
static int m_hang(const char *hw, void *arg)
{
    (void)hw;
    (void)arg;
    if (atomic_fetch_add(&hang_calls, 1) == 0) { /* only the first call hangs */
        while (sem_wait(&hang_sem) != 0)
            ;
    }
    atomic_fetch_add(&hang_returned, 1);
    return 0;
}

static void hang_reset(void)
{
    sem_init(&hang_sem, 0, 0);
    atomic_store(&hang_calls, 0);
    atomic_store(&hang_returned, 0);
}

/* Lets the hung method return and waits until its abandoned thread is gone. */
static void hang_release(void)
{
    sem_post(&hang_sem);
    assert_true(TH_WAIT(ihc__workers_abandoned() == 0, 5000));
    sem_destroy(&hang_sem);
}

static const ihc_method three[] = {{"first", m_first}, {"second", m_second}, {"third", m_third}};

/* ---- tests ---- */

static void test_agent_module_methods_in_order(void **state)
{
    (void)state;
    th_fc f;
    ihc_agent *a = start_agent(&f, NULL);
    ihc_module_def d = {.name = "text_processing",
                        .methods = three,
                        .n_methods = 3,
                        .timeout = 1.0,
                        .enabled = true};
    TH_PASS(ihc_agent_register_module(a, &d));
    TH_FAIL(ihc_agent_register_module(a, &d), IHC_EEXIST);
    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    ihc_msg *r = interrupt(&f, a, 1, "dev-1", 1);
    assert_string_equal(r->u.report.agent, "mod-agent:1");
    assert_string_equal(r->u.report.hw, "dev-1");
    assert_int_equal(r->u.report.n_sessions, 0);
    assert_int_equal(r->u.report.n_modules, 1);
    const ihc_module_result *mr = find_mod(r, "text_processing");
    assert_int_equal(mr->status, IHC_MOD_OK);
    assert_null(mr->error);
    assert_true(mr->time_ms >= 0 && mr->time_ms < 1000);
    ihc_msg_free(r);
    char got[512];
    trace_get(got, sizeof(got));
    assert_string_equal(got, "first@dev-1,second,third");
    ihc_agent_close(a);
    th_fc_close(&f);
}

static void test_agent_module_hang_times_out(void **state)
{
    (void)state;
    hang_reset();
    th_fc f;
    ihc_agent *a = start_agent(&f, NULL);
    static const ihc_method hang[] = {{"flush", m_second}, {"wait_forever", m_hang}};
    ihc_module_def dh = {.name = "audio_generation",
                         .methods = hang,
                         .n_methods = 2,
                         .timeout = 0.2,
                         .enabled = true};
    ihc_module_def df = {.name = "text_processing",
                         .methods = three,
                         .n_methods = 1,
                         .timeout = 1.0,
                         .enabled = true};
    TH_PASS(ihc_agent_register_module(a, &dh));
    TH_PASS(ihc_agent_register_module(a, &df));
    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    uint64_t t0 = th_now_ms_();
    TH_PASS(th_fc_send_interrupt(&f, 7, "dev-1", 1, ihc_agent_id(a), 0));
    ihc_msg *r = th_fc_recv_type(&f, IHC_MSG_REPORT, 5000);
    uint64_t dt = th_now_ms_() - t0;
    assert_non_null(r);
    /* the report waits for the timeout, not for the method */
    assert_true(dt >= 195);
    assert_true(dt < 4000); /* the method never returns: any report proves it was not awaited */
    assert_int_equal(atomic_load(&hang_returned), 0);
    const ihc_module_result *mh = find_mod(r, "audio_generation");
    assert_int_equal(mh->status, IHC_MOD_TIMED_OUT);
    assert_non_null(mh->error);
    assert_string_equal(mh->error, "timed out after 200 ms in wait_forever");
    assert_true(mh->time_ms >= 199);
    const ihc_module_result *mf = find_mod(r, "text_processing");
    assert_int_equal(mf->status, IHC_MOD_OK);
    assert_true(mf->time_ms < 1000); /* within its own timeout */
    ihc_msg_free(r);
    assert_int_equal(ihc__workers_abandoned(), 1);

    /* a fresh worker serves the next interrupt while the old one still hangs */
    r = interrupt(&f, a, 8, "dev-1", 2);
    assert_int_equal(find_mod(r, "audio_generation")->status, IHC_MOD_OK);
    ihc_msg_free(r);
    assert_int_equal(atomic_load(&hang_calls), 2);

    ihc_agent_close(a); /* the abandoned worker outlives the agent */
    hang_release();
    th_fc_close(&f);
    trace_get((char[512]){0}, 512);
}

static int m_slow(const char *hw, void *arg)
{
    (void)hw;
    (void)arg;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 300 * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
    return 0;
}

/* A module that finishes after another one timed out is reported when it finishes, not at its
 * own (much later) deadline: the runner is woken by the last live worker. */
static void test_agent_module_finish_after_timeout(void **state)
{
    (void)state;
    hang_reset();
    th_fc f;
    ihc_agent *a = start_agent(&f, NULL);
    static const ihc_method hang[] = {{"wait_forever", m_hang}};
    static const ihc_method slow[] = {{"drain", m_slow}};
    ihc_module_def dh = {.name = "audio_generation",
                         .methods = hang,
                         .n_methods = 1,
                         .timeout = 0.1,
                         .enabled = true};
    ihc_module_def ds = {.name = "text_processing",
                         .methods = slow,
                         .n_methods = 1,
                         .timeout = 5.0,
                         .enabled = true};
    TH_PASS(ihc_agent_register_module(a, &dh));
    TH_PASS(ihc_agent_register_module(a, &ds));
    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    uint64_t t0 = th_now_ms_();
    TH_PASS(th_fc_send_interrupt(&f, 9, "dev-1", 1, ihc_agent_id(a), 0));
    ihc_msg *r = th_fc_recv_type(&f, IHC_MSG_REPORT, 10000);
    uint64_t dt = th_now_ms_() - t0;
    assert_non_null(r);
    assert_true(dt >= 295);
    assert_true(dt < 4500); /* before the 5 s deadline of text_processing */
    assert_int_equal(find_mod(r, "audio_generation")->status, IHC_MOD_TIMED_OUT);
    assert_int_equal(find_mod(r, "text_processing")->status, IHC_MOD_OK);
    ihc_msg_free(r);
    ihc_agent_close(a);
    hang_release();
    th_fc_close(&f);
}

static atomic_int fast_calls;
static int m_fast(const char *hw, void *arg)
{
    (void)hw;
    (void)arg;
    atomic_fetch_add(&fast_calls, 1);
    return 0;
}

/* A hung module among fast ones, in the middle of the order: the fast ones after it still run
 * at once (the run moves on to another worker after a slice), are reported ok well before the
 * hung one's timeout, the hung one is reported timed_out at its timeout, and the report is
 * not later than the largest module timeout (the promise of ihc/agent.h). */
static void test_agent_module_hung_among_fast(void **state)
{
    (void)state;
    hang_reset();
    atomic_store(&fast_calls, 0);
    th_fc f;
    ihc_agent *a = start_agent(&f, NULL);
    static const ihc_method fast[] = {{"stop", m_fast}};
    static const ihc_method hang[] = {{"wait_forever", m_hang}};
    const char *names[] = {"fast_a", "hung", "fast_b", "fast_c"};
    for (int i = 0; i < 4; i++)
        add_module(a, names[i], i == 1 ? hang : fast, 1, i == 1 ? 0.3 : 1.0);
    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    ihc_msg *r = interrupt(&f, a, 12, "dev-1", 1);
    assert_int_equal(r->u.report.n_modules, 4);
    const ihc_module_result *mh = find_mod(r, "hung");
    assert_int_equal(mh->status, IHC_MOD_TIMED_OUT);
    assert_true(mh->time_ms >= 299);
    for (int i = 0; i < 4; i++) {
        if (i == 1)
            continue;
        const ihc_module_result *m = find_mod(r, names[i]);
        assert_int_equal(m->status, IHC_MOD_OK);
        assert_true(m->time_ms < 300); /* not held back by the hung one */
    }
    /* the agent's own handling time, from receipt to report: within the largest timeout */
    assert_true(r->u.report.time_ms >= 299 && r->u.report.time_ms < 1000);
    ihc_msg_free(r);
    assert_int_equal(atomic_load(&fast_calls), 3);
    assert_int_equal(atomic_load(&hang_returned), 0);
    ihc_agent_close(a);
    hang_release();
    th_fc_close(&f);
}

/* The receive thread runs modules itself: one that hangs there has the run taken over by the
 * rescue thread, and receiving moves on with it. Several interrupts after the hung one are each
 * answered (on the new receive thread) while the first method still hangs; closing the agent
 * does not wait for the hung method. */
static void test_agent_module_receive_moves_on(void **state)
{
    (void)state;
    hang_reset();
    atomic_store(&fast_calls, 0);
    th_fc f;
    ihc_agent *a = start_agent(&f, NULL);
    static const ihc_method hang[] = {{"wait_forever", m_hang}};
    static const ihc_method fast[] = {{"stop", m_fast}};
    ihc_module_def dh = {
        .name = "hung", .methods = hang, .n_methods = 1, .timeout = 0.2, .enabled = true};
    ihc_module_def df = {
        .name = "fast", .methods = fast, .n_methods = 1, .timeout = 1.0, .enabled = true};
    TH_PASS(ihc_agent_register_module(a, &dh));
    TH_PASS(ihc_agent_register_module(a, &df));
    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    ihc_msg *r = interrupt(&f, a, 20, "dev-1", 1);
    assert_int_equal(find_mod(r, "hung")->status, IHC_MOD_TIMED_OUT);
    const ihc_module_result *mf = find_mod(r, "fast");
    assert_int_equal(mf->status, IHC_MOD_OK);
    assert_true(mf->time_ms < 200); /* moved to a worker, not held back by the hung one */
    ihc_msg_free(r);
    for (uint64_t id = 21; id <= 25; id++) {
        uint64_t t0 = th_now_ms_();
        r = interrupt(&f, a, id, "dev-1", id - 19);
        assert_int_equal(find_mod(r, "hung")->status, IHC_MOD_OK); /* only the first hangs */
        assert_int_equal(find_mod(r, "fast")->status, IHC_MOD_OK);
        assert_true(th_now_ms_() - t0 < 150); /* not one of them waited for a timeout */
        ihc_msg_free(r);
    }
    assert_int_equal(atomic_load(&hang_returned), 5);
    assert_int_equal(atomic_load(&fast_calls), 6);
    uint64_t t0 = th_now_ms_();
    ihc_agent_close(a);
    assert_true(th_now_ms_() - t0 < 3000);
    hang_release(); /* the displaced receive thread returns, frees its record, exits */
    assert_int_equal(atomic_load(&hang_returned), 6);
    th_fc_close(&f);
}

/* Closing the agent while the receive thread is inside a method that hangs: the close waits
 * for the run to end (the module's timeout), not for the method. */
static void test_agent_module_close_while_hung(void **state)
{
    (void)state;
    hang_reset();
    th_fc f;
    ihc_agent *a = start_agent(&f, NULL);
    static const ihc_method hang[] = {{"wait_forever", m_hang}};
    add_module(a, "hung", hang, 1, 0.3);
    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    TH_PASS(th_fc_send_interrupt(&f, 30, "dev-1", 1, ihc_agent_id(a), 0));
    assert_true(TH_WAIT(atomic_load(&hang_calls) == 1, 5000));
    uint64_t t0 = th_now_ms_();
    ihc_agent_close(a);
    assert_true(th_now_ms_() - t0 < 4000);
    assert_int_equal(atomic_load(&hang_returned), 0);
    sem_post(&hang_sem);
    assert_true(TH_WAIT(ihc__workers_abandoned() == 0 && atomic_load(&hang_returned) == 1, 5000));
    sem_destroy(&hang_sem);
    th_fc_close(&f);
}

static sem_t hw_sem;
static atomic_int hw_calls, hw_done;
static char hw_before[64], hw_after[64];
static int m_hw(const char *hw, void *arg)
{
    (void)arg;
    if (atomic_fetch_add(&hw_calls, 1) == 0) { /* the first call hangs until posted */
        snprintf(hw_before, sizeof(hw_before), "%s", hw);
        while (sem_wait(&hw_sem) != 0)
            ;
        snprintf(hw_after, sizeof(hw_after), "%s", hw);
    }
    atomic_fetch_add(&hw_done, 1);
    return 0;
}

/* A method left hanging on a displaced receive thread keeps reading its own hardware_id:
 * not the next interrupt's, and not freed memory after the agent is closed (ASan). */
static void test_agent_module_displaced_keeps_hw(void **state)
{
    (void)state;
    sem_init(&hw_sem, 0, 0);
    atomic_store(&hw_calls, 0);
    atomic_store(&hw_done, 0);
    th_fc f;
    ihc_agent *a = start_agent(&f, NULL);
    static const ihc_method hm[] = {{"hold", m_hw}};
    add_module(a, "holder", hm, 1, 0.05);
    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    ihc_msg *r = interrupt(&f, a, 40, "dev-1", 1);
    assert_int_equal(find_mod(r, "holder")->status, IHC_MOD_TIMED_OUT);
    ihc_msg_free(r);
    r = interrupt(&f, a, 41, "other-hw-2", 2);
    assert_int_equal(find_mod(r, "holder")->status, IHC_MOD_OK);
    ihc_msg_free(r);
    ihc_agent_close(a);
    sem_post(&hw_sem);
    assert_true(TH_WAIT(atomic_load(&hw_done) == 2 && ihc__workers_abandoned() == 0, 5000));
    assert_string_equal(hw_before, "dev-1");
    assert_string_equal(hw_after, "dev-1");
    sem_destroy(&hw_sem);
    th_fc_close(&f);
}

static int m_busy(const char *hw, void *arg)
{
    (void)hw;
    (void)arg;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 700000L);
    return 0;
}

/* Modules each shorter than a slice still cannot run past their deadlines on the receive
 * thread: 20 modules of 0.7 ms with 5 ms timeouts; those that could not start within 5 ms are
 * reported timed out, not run. */
static void test_agent_module_deadlines_inline(void **state)
{
    (void)state;
    th_fc f;
    ihc_agent *a = start_agent(&f, NULL);
    static const ihc_method bm[] = {{"busy", m_busy}};
    static char names[20][16];
    for (int i = 0; i < 20; i++) {
        snprintf(names[i], sizeof(names[i]), "busy%02d", i);
        add_module(a, names[i], bm, 1, 0.005);
    }
    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    for (uint64_t k = 0; k < 3; k++) {
        ihc_msg *r = interrupt(&f, a, 50 + k, "dev-1", 1 + k);
        assert_int_equal(r->u.report.n_modules, 20);
        int ok = 0;
        for (size_t i = 0; i < r->u.report.n_modules; i++) {
            const ihc_module_result *m = &r->u.report.modules[i];
            if (m->status == IHC_MOD_OK)
                ok++;
            else
                assert_int_equal(m->status, IHC_MOD_TIMED_OUT);
        }
        /* 14 ms of work against 5 ms: run in order, at most 8 start in time; a module that
         * outruns its slice (preempted) has the rest run beside it on workers, so more may —
         * but never all 20 (inline runs that ignored deadlines ran every one) */
        assert_true(ok >= 1 && ok < 20);
        ihc_msg_free(r);
    }
    ihc_agent_close(a);
    assert_true(TH_WAIT(ihc__workers_abandoned() == 0, 5000));
    th_fc_close(&f);
}

static atomic_int disabled_calls;
static int m_count(const char *hw, void *arg)
{
    (void)hw;
    (void)arg;
    atomic_fetch_add(&disabled_calls, 1);
    return 0;
}

static void test_agent_module_failed_and_disabled(void **state)
{
    (void)state;
    atomic_store(&disabled_calls, 0);
    th_fc f;
    ihc_agent *a = start_agent(&f, NULL);
    static const ihc_method failing[] = {{"first", m_first}, {"boom", m_fail}, {"third", m_third}};
    static const ihc_method counting[] = {{"count", m_count}};
    ihc_module_def d1 = {.name = "failing", .methods = failing, .n_methods = 3, .enabled = true};
    ihc_module_def d2 = {.name = "off", .methods = counting, .n_methods = 1, .enabled = false};
    TH_PASS(ihc_agent_register_module(a, &d1));
    TH_PASS(ihc_agent_register_module(a, &d2));
    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    ihc_msg *r = interrupt(&f, a, 3, "dev-2", 1);
    const ihc_module_result *m1 = find_mod(r, "failing");
    assert_int_equal(m1->status, IHC_MOD_FAILED);
    assert_non_null(m1->error);
    assert_non_null(strstr(m1->error, "boom failed"));
    assert_non_null(strstr(m1->error, ihc_strerror(IHC_EIO)));
    const ihc_module_result *m2 = find_mod(r, "off");
    assert_int_equal(m2->status, IHC_MOD_DISABLED);
    ihc_msg_free(r);
    char got[512];
    trace_get(got, sizeof(got));
    assert_string_equal(got, "first@dev-2,fail"); /* stops at the failing method */
    assert_int_equal(atomic_load(&disabled_calls), 0);
    ihc_agent_close(a);
    th_fc_close(&f);
}

static char *write_config(const char *text)
{
    char *dir = th_tmpdir("agentcfg");
    assert_non_null(dir);
    char *path = malloc(strlen(dir) + 16);
    sprintf(path, "%s/agent.ini", dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(text, fp);
    fclose(fp);
    free(dir);
    return path;
}

static void remove_config(char *path)
{
    unlink(path);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    rmdir(path);
    free(path);
}

static void test_agent_module_config_overrides(void **state)
{
    (void)state;
    atomic_store(&disabled_calls, 0);
    char *cfg =
        write_config("# module overrides\n"
                     "[text_processing]\n"
                     "interrupt_methods = third, first\n"
                     "timeout = 3.5\n" /* the methods must finish: room for a loaded machine */
                     "\n"
                     "; disabled here although registered enabled\n"
                     "[counter]\n"
                     "enabled = false\n"
                     "[not_registered]\n"
                     "enabled = yes\n");
    th_fc f;
    ihc_agent *a = start_agent(&f, cfg);
    static const ihc_method counting[] = {{"count", m_count}};
    ihc_module_def d1 = {.name = "text_processing",
                         .methods = three,
                         .n_methods = 3,
                         .timeout = 2.0,
                         .enabled = true};
    ihc_module_def d2 = {.name = "counter", .methods = counting, .n_methods = 1, .enabled = true};
    TH_PASS(ihc_agent_register_module(a, &d1));
    TH_PASS(ihc_agent_register_module(a, &d2));

    /* the hello carries the effective settings */
    ihc_msg *h = NULL;
    uint64_t end = th_now_ms_() + 5000;
    while (!h && th_now_ms_() < end) {
        ihc_msg *m = th_fc_recv_type(&f, IHC_MSG_HELLO, 100);
        if (m && m->u.hello.n_modules == 2)
            h = m;
        else
            ihc_msg_free(m);
    }
    assert_non_null(h);
    const ihc_module_info *mi = &h->u.hello.modules[0];
    assert_string_equal(mi->name, "text_processing");
    assert_int_equal(mi->timeout_ms, 3500);
    assert_true(mi->enabled);
    assert_int_equal(mi->n_methods, 2);
    assert_string_equal(mi->methods[0], "third");
    assert_string_equal(mi->methods[1], "first");
    assert_false(h->u.hello.modules[1].enabled);
    assert_int_equal(h->u.hello.modules[1].timeout_ms, 1000); /* default_module_timeout */
    ihc_msg_free(h);

    th_fc_connect(&f, a, ihc_agent_id(a), ihc_agent_connected);
    ihc_msg *r = interrupt(&f, a, 11, "dev-3", 1);
    assert_int_equal(find_mod(r, "text_processing")->status, IHC_MOD_OK);
    assert_int_equal(find_mod(r, "counter")->status, IHC_MOD_DISABLED);
    ihc_msg_free(r);
    char got[512];
    trace_get(got, sizeof(got));
    assert_string_equal(got, "third,first@dev-3");
    assert_int_equal(atomic_load(&disabled_calls), 0);
    ihc_agent_close(a);
    th_fc_close(&f);
    remove_config(cfg);
}

static void test_agent_module_config_errors(void **state)
{
    (void)state;
    const char *bad[] = {
        "[m]\ncolour = red\n",                    /* unknown key */
        "enabled = true\n",                       /* outside a section */
        "[m]\nenabled = maybe\n",                 /* not a bool */
        "[m]\ntimeout = -1\n",                    /* out of range */
        "[m]\ntimeout = 1s\n",                    /* not a number */
        "[m]\ntimeout = 0\n",                     /* zero */
        "[m]\ninterrupt_methods = a, b c\n",      /* bad method name */
        "[m]\ninterrupt_methods = a, a\n",        /* listed twice */
        "[m]\ninterrupt_methods =\n",             /* empty */
        "[m]\n[m]\n",                             /* duplicate section */
        "[bad name]\n",                           /* bad module name */
        "[m\n",                                   /* malformed header */
        "[m]\njust words\n",                      /* no '=' */
        "[m]\nenabled = true\nenabled = false\n", /* given twice */
    };
    th_fc f = {0};
    assert_int_equal(th_fc_listen(&f), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *cfg = write_config(bad[i]);
        ihc_agent_opts o;
        ihc_agent_opts_init(&o);
        o.pub_url = f.pub_url;
        o.report_url = f.report_url;
        o.config_file = cfg;
        ihc_agent *a = NULL;
        int rc = ihc_agent_open(&a, &o);
        if (rc != IHC_ECONFIG)
            fail_msg("config %zu (%s): got %s, want IHC_ECONFIG", i, bad[i], ihc_err_name(rc));
        assert_null(a);
        remove_config(cfg);
    }
    ihc_agent_opts o;
    ihc_agent_opts_init(&o);
    o.pub_url = f.pub_url;
    o.report_url = f.report_url;
    o.config_file = "/nonexistent/ihc-agent.ini";
    ihc_agent *a = NULL;
    TH_FAIL(ihc_agent_open(&a, &o), IHC_ECONFIG);

    /* an override naming a method the module does not have refuses the registration */
    char *cfg = write_config("[text_processing]\ninterrupt_methods = first, nope\n");
    a = open_agent(&f, cfg);
    ihc_module_def d = {
        .name = "text_processing", .methods = three, .n_methods = 3, .enabled = true};
    TH_FAIL(ihc_agent_register_module(a, &d), IHC_ECONFIG);
    /* bad definitions */
    ihc_module_def bad_def = {.name = "x", .methods = three, .n_methods = 0, .enabled = true};
    TH_FAIL(ihc_agent_register_module(a, &bad_def), IHC_EINVAL);
    bad_def = (ihc_module_def){.name = "bad name", .methods = three, .n_methods = 1};
    TH_FAIL(ihc_agent_register_module(a, &bad_def), IHC_EINVAL);
    static const ihc_method dup[] = {{"a", m_first}, {"a", m_second}};
    bad_def = (ihc_module_def){.name = "dup", .methods = dup, .n_methods = 2};
    TH_FAIL(ihc_agent_register_module(a, &bad_def), IHC_EINVAL);
    bad_def = (ihc_module_def){.name = "neg", .methods = three, .n_methods = 1, .timeout = -1};
    TH_FAIL(ihc_agent_register_module(a, &bad_def), IHC_EINVAL);
    ihc_agent_close(a);
    remove_config(cfg);
    th_fc_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_module_methods_in_order),
        cmocka_unit_test(test_agent_module_hang_times_out),
        cmocka_unit_test(test_agent_module_finish_after_timeout),
        cmocka_unit_test(test_agent_module_hung_among_fast),
        cmocka_unit_test(test_agent_module_receive_moves_on),
        cmocka_unit_test(test_agent_module_close_while_hung),
        cmocka_unit_test(test_agent_module_displaced_keeps_hw),
        cmocka_unit_test(test_agent_module_deadlines_inline),
        cmocka_unit_test(test_agent_module_failed_and_disabled),
        cmocka_unit_test(test_agent_module_config_overrides),
        cmocka_unit_test(test_agent_module_config_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nng_fini(); /* nng's own threads, for leak checkers */
    return rc;
}
