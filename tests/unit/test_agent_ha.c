/* Unit tests of an agent talking to several coordinators (a leader and standbys): hello,
 * heartbeats and session events reach every coordinator; an interrupt is acted on once per
 * (term, id) whichever coordinator it comes from; its report goes back to the coordinator
 * that sent it; a term older than the newest seen (a deposed leader) is ignored; a hello
 * reaches each coordinator in order with the session events around it (the coordinator's
 * registry replays them). Two fake coordinators of tests/support (nng PUB + PULL on free tcp
 * ports) play the other side. */
#include "harness.h"
#include "churn.h"
#include "logpipe.h"

#include "fake_coord.h"

#include "agent_int.h"
#include "clock.h"
#include "err.h"
#include "ihc/agent.h"
#include "registry.h"
#include "wire.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

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

/* ---- a hello and the session events around it ---- */

/* Session ids, to compare the agent's sessions with a coordinator's. */
typedef struct {
    char ids[64][IHC_ID_MAX + 1];
    size_t n;
} idset;

static bool idset_has(const idset *v, const char *id)
{
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->ids[i], id) == 0)
            return true;
    return false;
}

static void idset_add(void *arg, const ihc_reg_session *s)
{
    idset *v = arg;
    if (v->n == sizeof(v->ids) / sizeof(v->ids[0]))
        fail_msg("more than %zu sessions", v->n);
    snprintf(v->ids[v->n++], sizeof(v->ids[0]), "%s", s->session_id);
}

/* A coordinator's view of the agent: the coordinator's own registry, fed the messages in
 * the order they arrive (a hello replaces the agent's sessions with those it lists). */
typedef struct {
    ihc_registry *reg;
    size_t hellos;
    atomic_ulong begins; /* session_begins applied: paces the owner */
} view;

static void view_open(view *v)
{
    ihc_registry_opts o = {.agent_ttl_ns = 3600000000000ull};
    TH_PASS(ihc_registry_new(&v->reg, &o));
    v->hellos = 0;
    atomic_init(&v->begins, 0);
}

/* The next message f has received, without waiting (NULL: none yet). Straight from the PULL
 * socket: a timed receive costs tens of microseconds, and the owner below is paced by how
 * fast its events are read. */
static ihc_msg *view_next(th_fc *f)
{
    if (f->queue)
        return th_fc_recv(f, 0);
    nng_msg *nm = NULL;
    if (nng_recvmsg(f->pull, &nm, NNG_FLAG_NONBLOCK) != 0)
        return NULL;
    ihc_msg *m = NULL;
    char detail[256] = "";
    int rc = ihc_wire_decode(nng_msg_body(nm), nng_msg_len(nm), NULL, &m, detail, sizeof(detail));
    nng_msg_free(nm);
    if (rc != IHC_OK)
        fail_msg("agent sent an undecodable message: %s (%s)", ihc_strerror(rc), detail);
    return m;
}

/* Applies what f has received so far (at most 256 messages: the other coordinator is read in
 * turn) to v; true when a session_begin of marker was among it. */
static bool view_apply(th_fc *f, view *v, const char *marker)
{
    bool seen = false;
    ihc_msg *m;
    for (int k = 0; k < 256 && (m = view_next(f)) != NULL; k++) {
        uint64_t now_ns = ihc_mono_ns();
        int64_t now_ms = ihc_now_ms();
        if (m->type == IHC_MSG_HELLO) {
            TH_PASS(ihc_registry_hello(v->reg, &m->u.hello, now_ns, now_ms));
            v->hellos++;
        } else if (m->type == IHC_MSG_SESSION_BEGIN) {
            const ihc_session_begin_msg *b = &m->u.session_begin;
            TH_PASS(ihc_registry_session_begin(v->reg, b->agent, &b->session, now_ns, now_ms));
            atomic_fetch_add(&v->begins, 1);
            seen = seen || (marker && strcmp(b->session.session_id, marker) == 0);
        } else if (m->type == IHC_MSG_SESSION_END) {
            const ihc_session_end_msg *e = &m->u.session_end;
            (void)ihc_registry_session_end(v->reg, e->agent, e->session_id, e->state, now_ms);
        }
        ihc_msg_free(m);
    }
    return seen;
}

#define HELLO_ROUNDS 5
#define CHURN_LIVE   8  /* sessions the owner keeps open */
#define CHURN_BURST  40 /* sessions begun while a hello is held between snapshot and send */

/* The agent's log goes into a pipe the test fills (tests/support/logpipe.h). The agent logs
 * "hello sent" between the hello's snapshot and its send; holding it there opens the window
 * the race needs, which otherwise is a few microseconds wide (in the field the write of that
 * very line, to a busy log, held it for a millisecond). An owner (tests/support/churn.h)
 * begins and ends sessions in that window. */
/* Hellos asked for while an owner begins and ends sessions: each coordinator's view, built
 * from the messages in the order they came, ends up as the agent's own sessions. A
 * session_begin sent ahead of a hello snapshotted before it would be wiped by that hello (a
 * coordinator then does not list a live session until the next hello); a session_end ahead
 * of a hello that still lists the session would bring it back. */
static void test_agent_ha_hello_in_order_with_session_events(void **state)
{
    (void)state;
    static th_logpipe lp;
    th_logpipe_open(&lp, 4096);
    ihc_agent_log_setup(IHC_LOG_DEBUG, false, false, lp.wr);
    world w;
    open_world(&w);
    static view v[2];
    view_open(&v[0]);
    view_open(&v[1]);
    th_churn c = {.a = w.a,
                  .module = "text_processing",
                  .live = CHURN_LIVE,
                  .burst = CHURN_BURST,
                  .repeat = true};
    th_churn_start(&c);
    ihc_msg ask = {.type = IHC_MSG_SYNC};
    ask.u.sync.agent = AGENT_ID;
    ask.u.sync.hello = true;
    const char *stuck = NULL; /* what did not come; the owner stops before the test fails */
    for (int round = 0; round < HELLO_ROUNDS && !stuck; round++) {
        size_t want[2] = {v[0].hellos + 1, v[1].hellos + 1};
        unsigned long bursts = atomic_load(&c.bursts);
        th_logpipe_fill(&lp);
        TH_PASS(th_fc_publish(&w.f[0], &ask));
        /* the agent logs the ask (read, so that it goes on), then takes the hello 20 ms later
         * and waits at its "hello sent" line in the pipe filled again */
        if (!th_logpipe_until(&lp, "coordinator asks for a hello", 5000)) {
            stuck = "the ask for a hello";
            break;
        }
        th_logpipe_fill(&lp);
        /* the owner's burst goes out meanwhile; with the hello and the session events in
         * order it waits for the hello instead, until this deadline lets the hello go */
        (void)TH_WAIT(atomic_load(&c.bursts) > bursts, 300);
        if (!th_logpipe_until(&lp, "hello sent", 5000)) {
            stuck = "the hello";
            break;
        }
        uint64_t end = th_now_ms_() + 5000;
        while (v[0].hellos < want[0] || v[1].hellos < want[1] || atomic_load(&c.bursts) == bursts ||
               atomic_load(&v[0].begins) < atomic_load(&c.n) ||
               atomic_load(&v[1].begins) < atomic_load(&c.n)) {
            if (th_now_ms_() > end) {
                stuck = "the hello and the burst at the coordinators";
                break;
            }
            view_apply(&w.f[0], &v[0], NULL);
            view_apply(&w.f[1], &v[1], NULL);
            sched_yield();
        }
    }
    th_churn_stop(&c);
    if (stuck)
        fail_msg("%s did not come within 5 s (hellos %zu and %zu, dropped sends %llu)", stuck,
                 v[0].hellos, v[1].hellos, (unsigned long long)ihc__transport_drops(&w.a->tp));
    /* whatever was sent before the marker was applied once the marker is */
    begin(w.a, "marker", "dev-marker");
    for (int i = 0; i < 2; i++)
        if (!TH_WAIT(view_apply(&w.f[i], &v[i], "marker"), 5000))
            fail_msg("coordinator %d never got the marker session", i);
    assert_int_equal(ihc__transport_drops(&w.a->tp), 0);
    static idset own;
    memset(&own, 0, sizeof(own));
    pthread_mutex_lock(&w.a->lock);
    for (ihc__session *s = w.a->sessions; s && own.n < sizeof(own.ids) / sizeof(own.ids[0]);
         s = s->next)
        snprintf(own.ids[own.n++], sizeof(own.ids[0]), "%s", s->id);
    pthread_mutex_unlock(&w.a->lock);
    for (int i = 0; i < 2; i++) {
        static idset theirs;
        memset(&theirs, 0, sizeof(theirs));
        ihc_registry_foreach_agent_session(v[i].reg, AGENT_ID, idset_add, &theirs);
        for (size_t k = 0; k < own.n; k++)
            if (!idset_has(&theirs, own.ids[k]))
                fail_msg("coordinator %d misses live session %s (after %lu sessions, %zu hellos)",
                         i, own.ids[k], atomic_load(&c.n), v[i].hellos);
        for (size_t k = 0; k < theirs.n; k++)
            if (!idset_has(&own, theirs.ids[k]))
                fail_msg("coordinator %d lists session %s the agent ended (after %lu sessions, "
                         "%zu hellos)",
                         i, theirs.ids[k], atomic_load(&c.n), v[i].hellos);
        ihc_registry_free(v[i].reg);
    }
    th_logpipe_start_drain(&lp);
    close_world(&w);
    ihc_agent_log_setup(IHC_LOG_INFO, false, false, 2);
    th_logpipe_close(&lp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_ha_events_to_every_coordinator),
        cmocka_unit_test(test_agent_ha_dedupe_and_report_route),
        cmocka_unit_test(test_agent_ha_term_forgotten_when_all_lost),
        cmocka_unit_test(test_agent_ha_hello_in_order_with_session_events),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    nng_fini();
    return failed;
}
