/* Unit tests of an agent talking to several coordinators (a leader and standbys): hello,
 * heartbeats and session events reach every coordinator; an interrupt is acted on once per
 * (term, id) whichever coordinator it comes from; its report goes back to the coordinator
 * that sent it; a term older than the newest seen (a deposed leader) is ignored. Two fake
 * coordinators of tests/support (nng PUB + PULL on free tcp ports) play the other side. */
#include "harness.h"

#include "fake_coord.h"

#include "agent_int.h"
#include "err.h"
#include "ihc/agent.h"
#include "wire.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AGENT_ID "ha-agent:1"

static atomic_int method_calls;
static int m_count(const char *hw, void *arg)
{
    (void)hw;
    (void)arg;
    atomic_fetch_add(&method_calls, 1);
    return 0;
}

typedef struct {
    th_fc f[2];
    ihc_agent *a;
} world;

static void open_world(world *w)
{
    memset(w, 0, sizeof(*w));
    for (int i = 0; i < 2; i++)
        assert_int_equal(th_fc_listen(&w->f[i]), 0);
    char pubs[160], reports[160];
    snprintf(pubs, sizeof(pubs), "%s,%s", w->f[0].pub_url, w->f[1].pub_url);
    snprintf(reports, sizeof(reports), "%s,%s", w->f[0].report_url, w->f[1].report_url);
    ihc_agent_opts o;
    ihc_agent_opts_init(&o);
    o.agent_id = AGENT_ID;
    o.pub_url = pubs;
    o.report_url = reports;
    o.high_priority = false;
    o.session_cleanup_delay = 0.2;
    o.heartbeat_interval = 0.2;
    TH_PASS(ihc_agent_open(&w->a, &o));
    static const ihc_method counting[] = {{"cancel_generation", m_count}};
    ihc_module_def d = {
        .name = "text_processing", .methods = counting, .n_methods = 1, .enabled = true};
    TH_PASS(ihc_agent_register_module(w->a, &d));
    atomic_store(&method_calls, 0);
    th_fc_connect(&w->f[0], w->a, AGENT_ID, ihc_agent_connected);
    /* both coordinators' connections up (the second's SUB too, or what it publishes is lost) */
    assert_true(TH_WAIT(({
                            int sub = 0, push = 0;
                            ihc__transport_link(&w->a->tp, 1, &sub, &push);
                            sub > 0 && push > 0;
                        }),
                        10000));
}

static void close_world(world *w)
{
    ihc_agent_close(w->a);
    th_fc_close(&w->f[0]);
    th_fc_close(&w->f[1]);
}

static void begin(ihc_agent *a, const char *sid, const char *hw)
{
    ihc_token *t = NULL;
    ihc_session_opts so = {.session_id = sid, .hw = hw, .module = "text_processing"};
    TH_PASS(ihc_agent_session_begin(a, &so, &t, NULL, 0));
    ihc_token_release(t); /* the session lives on in the agent */
}

/* An interrupt as a leader of term sends it; listed: naming this agent (a re-send). */
static int publish(th_fc *f, uint64_t term, uint64_t id, const char *hw, uint64_t epoch,
                   bool listed)
{
    char *agents[1] = {AGENT_ID};
    ihc_msg m = {.type = IHC_MSG_INTERRUPT};
    m.u.interrupt = (ihc_interrupt_msg){.id = id,
                                        .hw = (char *)hw,
                                        .epoch = epoch,
                                        .reason = "",
                                        .deadline_ms = 0,
                                        .agents = listed ? agents : NULL,
                                        .n_agents = listed ? 1 : 0,
                                        .attempt = listed ? 1 : 0,
                                        .term = term};
    if (!listed)
        return th_fc_publish(f, &m);
    /* a re-send goes on the agent's own topic, as the coordinator sends it */
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = ihc_wire_encode_to(&m, NULL, AGENT_ID, &buf, &len);
    if (rc == IHC_OK && nng_send(f->pub, buf, len, 0) != 0)
        rc = IHC_ETRANSPORT;
    free(buf);
    return rc;
}

/* The next report on f (other messages dropped): its id and term must be these. */
static void expect_report(th_fc *f, uint64_t id, uint64_t term)
{
    ihc_msg *r = th_fc_recv_type_drop(f, IHC_MSG_REPORT, 5000);
    if (!r)
        fail_msg("no report for interrupt %llu", (unsigned long long)id);
    if (r->u.report.id != id || r->u.report.term != term)
        fail_msg("report for interrupt %llu term %llu, want %llu term %llu",
                 (unsigned long long)r->u.report.id, (unsigned long long)r->u.report.term,
                 (unsigned long long)id, (unsigned long long)term);
    ihc_msg_free(r);
}

/* Publishes until f has the report (the first message of a fresh connection may be lost to
 * the slow-joiner race). */
static void publish_until_report(th_fc *f, uint64_t term, uint64_t id, const char *hw,
                                 uint64_t epoch, bool listed)
{
    uint64_t end = th_now_ms_() + 10000;
    while (th_now_ms_() < end) {
        TH_PASS(publish(f, term, id, hw, epoch, listed));
        ihc_msg *r = th_fc_recv_type_drop(f, IHC_MSG_REPORT, 200);
        if (r && r->u.report.id == id && r->u.report.term == term) {
            ihc_msg_free(r);
            return;
        }
        ihc_msg_free(r);
    }
    fail_msg("no report for interrupt %llu from the coordinator that sent it",
             (unsigned long long)id);
}

/* Every coordinator hears hello, heartbeats and session events. */
static void test_agent_ha_events_to_every_coordinator(void **state)
{
    (void)state;
    world w;
    open_world(&w);
    begin(w.a, "s-1", "dev-1");
    for (int i = 0; i < 2; i++) {
        ihc_msg *m = th_fc_recv_type(&w.f[i], IHC_MSG_SESSION_BEGIN, 5000);
        assert_non_null(m);
        assert_string_equal(m->u.session_begin.session.session_id, "s-1");
        ihc_msg_free(m);
        m = th_fc_recv_type(&w.f[i], IHC_MSG_HEARTBEAT, 5000);
        assert_non_null(m);
        assert_string_equal(m->u.heartbeat.agent, AGENT_ID);
        ihc_msg_free(m);
    }
    ihc_msg *h = th_fc_recv_type(&w.f[1], IHC_MSG_HELLO, 5000); /* the standby's own */
    assert_non_null(h);
    assert_string_equal(h->u.hello.agent, AGENT_ID);
    ihc_msg_free(h);
    TH_PASS(ihc_agent_session_end(w.a, "s-1"));
    for (int i = 0; i < 2; i++) {
        ihc_msg *m = th_fc_recv_type(&w.f[i], IHC_MSG_SESSION_END, 5000);
        assert_non_null(m);
        assert_string_equal(m->u.session_end.session_id, "s-1");
        ihc_msg_free(m);
    }
    close_world(&w);
}

/* Once per (term, id), the report to the sender; a deposed leader's term is ignored. */
static void test_agent_ha_dedupe_and_report_route(void **state)
{
    (void)state;
    world w;
    open_world(&w);
    /* the second coordinator's path works both ways: a direct interrupt, answered to it */
    publish_until_report(&w.f[1], 3, 100, "probe", 1, true);
    assert_int_equal(atomic_load(&method_calls), 1);

    begin(w.a, "s-1", "dev-1");
    publish_until_report(&w.f[0], 3, 7, "dev-1", 1, false);
    assert_int_equal(atomic_load(&method_calls), 2);
    /* the other coordinator did not get the report: it hears of the session's end */
    ihc_msg *e = th_fc_recv_type(&w.f[1], IHC_MSG_SESSION_END, 5000);
    assert_non_null(e);
    assert_string_equal(e->u.session_end.session_id, "s-1");
    assert_string_equal(e->u.session_end.state, "interrupted");
    ihc_msg_free(e);
    assert_true(TH_WAIT(ihc_agent_session_count(w.a) == 0, 3000));
    /* the same interrupt from the other coordinator: not acted on again, no report */
    TH_PASS(publish(&w.f[1], 3, 7, "dev-1", 1, false));
    /* listing this agent (a re-send): the report again, to the one that asks */
    TH_PASS(publish(&w.f[1], 3, 7, "dev-1", 1, true));
    expect_report(&w.f[1], 7, 3);
    /* nothing more was answered to the unlisted copy: the next report is the next interrupt */
    begin(w.a, "s-2", "dev-2");
    TH_PASS(publish(&w.f[1], 3, 8, "dev-2", 1, false));
    expect_report(&w.f[1], 8, 3);
    assert_int_equal(atomic_load(&method_calls), 3);

    /* a deposed leader (term 2 < 3): ignored, the session stays */
    begin(w.a, "s-3", "dev-3");
    TH_PASS(publish(&w.f[0], 2, 9, "dev-3", 1, false));
    TH_PASS(publish(&w.f[0], 3, 10, "dev-3", 2, false));
    expect_report(&w.f[0], 10, 3); /* the next report is 10's: 9 was ignored */
    assert_int_equal(atomic_load(&method_calls), 4);

    /* a new leader (term 4) may reuse an id of an older term: another interrupt */
    begin(w.a, "s-4", "dev-1");
    TH_PASS(publish(&w.f[1], 4, 7, "dev-1", 2, false));
    expect_report(&w.f[1], 7, 4);
    assert_int_equal(atomic_load(&method_calls), 5);
    /* ... and now term 3 is the deposed one */
    begin(w.a, "s-5", "dev-5");
    TH_PASS(publish(&w.f[0], 3, 11, "dev-5", 1, false));
    TH_PASS(publish(&w.f[0], 4, 12, "dev-5", 2, false));
    expect_report(&w.f[0], 12, 4);
    assert_int_equal(atomic_load(&method_calls), 6);
    assert_true(atomic_load(&w.a->n_stale_term) == 2);
    close_world(&w);
}

static int sub_pipes(ihc_agent *a)
{
    int sub = 0;
    ihc__transport_links(&a->tp, &sub, NULL);
    return sub;
}

/* The newest term is kept while any coordinator is connected, and forgotten when every PUB
 * connection was lost (a lone coordinator restarted without Redis leads with its old term). */
static void test_agent_ha_term_forgotten_when_all_lost(void **state)
{
    (void)state;
    world w;
    open_world(&w);
    publish_until_report(&w.f[0], 5, 1, "probe", 1, true);
    /* one coordinator goes away: the other's older term is still a deposed leader's */
    th_fc_close(&w.f[0]);
    assert_true(TH_WAIT(sub_pipes(w.a) == 1, 5000));
    begin(w.a, "s-1", "dev-1");
    TH_PASS(publish(&w.f[1], 4, 2, "dev-1", 1, false));
    TH_PASS(publish(&w.f[1], 5, 3, "dev-1", 1, false));
    expect_report(&w.f[1], 3, 5); /* 2 was ignored */
    /* both go away and come back: the term the first one speaks with is taken */
    th_fc_close(&w.f[1]);
    assert_true(TH_WAIT(sub_pipes(w.a) == 0, 5000));
    assert_int_equal(th_fc_listen(&w.f[0]), 0);
    assert_int_equal(th_fc_listen(&w.f[1]), 0);
    assert_true(TH_WAIT(sub_pipes(w.a) == 2, 10000));
    publish_until_report(&w.f[0], 1, 4, "probe", 1, true);
    close_world(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_ha_events_to_every_coordinator),
        cmocka_unit_test(test_agent_ha_dedupe_and_report_route),
        cmocka_unit_test(test_agent_ha_term_forgotten_when_all_lost),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    nng_fini();
    return failed;
}
