/* Session events against real coordinator processes: two ihc-coordinators on one Redis (a
 * leader and a standby) and an agent (libihc-agent, in the test) dialing both.
 * - A hello and the session events around it. The standby is killed: the agent says hello to
 *   the leader again. While that hello waits between its snapshot and its send, an owner
 *   begins and ends sessions; afterwards GET /v1/sessions on the leader lists exactly the
 *   agent's sessions (a session_begin sent ahead of a hello snapshotted before it was wiped by
 *   that hello until the next one). The hello is held at its "hello sent" log line: the agent
 *   logs at DEBUG into a pipe the test fills.
 * - Sessions begun while an interrupt is handled (in on_cancel), announced in that
 *   interrupt's report (report.begun). The leader says in its sync that it reads them; after
 *   the interrupt both coordinators list the new session (the leader from the report, the
 *   standby from the session_begin it alone is sent), Redis holds it as active, and the next
 *   interrupt stops it. */
#include "harness.h"
#include "churn.h"
#include "logpipe.h"

#include "agent_int.h"
#include "err.h"
#include "ihc/agent.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AGENT_ID    "session-events:1"
#define CHURN_LIVE  8  /* sessions the owner keeps open */
#define CHURN_BURST 40 /* sessions begun while the hello is held */

static struct {
    th_redis redis;
    char *dir;
    th_coord c[2];
    ihc_agent *a; /* closed by teardown when a test leaves it open */
    atomic_int next;
} w;

/* A coordinator named name on fresh ports, against the test's Redis. */
static void coord_start(th_coord *c, const char *name)
{
    static const char *const env[] = {"IHC_AGENT_TTL=30", "IHC_LEASE_TTL=1", NULL};
    th_coord_ports(c, w.dir, name);
    th_coord_start(c, w.redis.url, name, env);
}

/* c1 leading, then c2 as its standby. */
static void start_pair(void)
{
    coord_start(&w.c[0], "c1");
    if (!TH_WAIT(th_coord_leads(&w.c[0]), 10000))
        fail_msg("c1 never led (log %s)", w.c[0].log);
    coord_start(&w.c[1], "c2");
}

/* The agent AGENT_ID dialing both coordinators (w.a). */
static ihc_agent *open_agent(void)
{
    char pubs[160], reports[160];
    snprintf(pubs, sizeof pubs, "%s,%s", w.c[0].pub_url, w.c[1].pub_url);
    snprintf(reports, sizeof reports, "%s,%s", w.c[0].rep_url, w.c[1].rep_url);
    ihc_agent_opts o;
    ihc_agent_opts_init(&o);
    o.agent_id = AGENT_ID;
    o.pub_url = pubs;
    o.report_url = reports;
    o.high_priority = false;
    o.heartbeat_interval = 0.2;
    TH_PASS(ihc_agent_open(&w.a, &o));
    return w.a;
}

/* The session ids c lists for AGENT_ID (GET /v1/sessions), as a JSON array (caller frees);
 * NULL when c did not answer. */
static json_t *listed(const th_coord *c)
{
    char *body = NULL;
    json_t *ids = NULL;
    if (th_http(c->http, "GET", "/v1/sessions", NULL, NULL, &body) == 200 && body) {
        json_t *j = json_loads(body, 0, NULL);
        json_t *arr = json_object_get(j, "sessions");
        ids = json_array();
        for (size_t i = 0; i < json_array_size(arr); i++) {
            json_t *s = json_array_get(arr, i);
            const char *agent = json_string_value(json_object_get(s, "agent_id"));
            if (agent && strcmp(agent, AGENT_ID) == 0)
                json_array_append(ids, json_object_get(s, "session_id"));
        }
        json_decref(j);
    }
    free(body);
    return ids;
}

static bool has(const json_t *ids, const char *id)
{
    for (size_t i = 0; i < json_array_size(ids); i++)
        if (strcmp(json_string_value(json_array_get(ids, i)), id) == 0)
            return true;
    return false;
}

static bool lists(const th_coord *c, const char *id)
{
    json_t *ids = listed(c);
    bool ok = ids && has(ids, id);
    json_decref(ids);
    return ok;
}

static void begin(ihc_agent *a, const char *sid, const char *hw)
{
    ihc_token *t = NULL;
    ihc_session_opts so = {.session_id = sid, .hw = hw};
    TH_PASS(ihc_agent_session_begin(a, &so, &t, NULL, 0));
    ihc_token_release(t);
}

/* on_cancel: the service starts its next piece of work for the device as it stops the last. */
static void begin_next(const char *session_id, void *arg);

/* A session of dev-1 whose on_cancel begins the next (next-0, next-1, ...). */
static void begin_chained(const char *sid)
{
    ihc_token *t = NULL;
    ihc_session_opts so = {.session_id = sid, .hw = "dev-1", .on_cancel = begin_next};
    TH_PASS(ihc_agent_session_begin(w.a, &so, &t, NULL, 0));
    ihc_token_release(t);
}

static void begin_next(const char *session_id, void *arg)
{
    (void)session_id;
    (void)arg;
    char sid[32];
    snprintf(sid, sizeof sid, "next-%d", atomic_fetch_add(&w.next, 1));
    begin_chained(sid);
}

/* POST /v1/interrupt for dev-1 on the leader; its cleaned_sessions must be exactly [want]. */
static void interrupt_stops(const char *want)
{
    char *body = NULL;
    int st = th_http(w.c[0].http, "POST", "/v1/interrupt", NULL,
                     "{\"hardware_id\":\"dev-1\",\"reason\":\"test\",\"timeout_ms\":5000}", &body);
    if (st != 200)
        fail_msg("interrupt answered %d: %s", st, body ? body : "");
    json_t *j = json_loads(body, 0, NULL);
    assert_non_null(j);
    json_t *ss = json_object_get(j, "cleaned_sessions");
    if (!json_is_true(json_object_get(j, "success")) || json_array_size(ss) != 1 ||
        strcmp(json_string_value(json_array_get(ss, 0)), want) != 0)
        fail_msg("interrupt should have stopped %s: %s", want, body);
    json_decref(j);
    free(body);
}

static int setup(void **state)
{
    (void)state;
    memset(&w, 0, sizeof w);
    w.dir = th_tmpdir("session-events");
    assert_non_null(w.dir);
    return th_redis_start(&w.redis);
}

static int teardown(void **state)
{
    (void)state;
    ihc_agent_close(w.a);
    for (int i = 0; i < 2; i++)
        if (w.c[i].pid > 0)
            th_stop(w.c[i].pid, SIGTERM, 5000);
    th_redis_stop(&w.redis);
    th_tmpdir_remove(w.dir);
    free(w.dir);
    return 0;
}

static void test_hello_after_standby_lost_keeps_sessions(void **state)
{
    (void)state;
    start_pair();
    static th_logpipe lp;
    th_logpipe_open(&lp, 0);
    ihc_agent_log_setup(IHC_LOG_DEBUG, false, false, lp.wr);
    ihc_agent *a = open_agent();
    begin(a, "s-1", "dev-1");
    /* both coordinators know the agent and its session */
    uint64_t end = th_now_ms_() + 10000;
    while (!(ihc_agent_connected(a) && lists(&w.c[0], "s-1") && lists(&w.c[1], "s-1"))) {
        if (th_now_ms_() > end)
            fail_msg("the coordinators never listed session s-1");
        th_logpipe_skip(&lp);
        th_sleep_ms_(5);
    }

    /* one burst of sessions as the agent takes its hello (tests/support/churn.h) */
    th_churn c = {.a = a, .live = CHURN_LIVE, .burst = CHURN_BURST};
    th_churn_start(&c);
    th_logpipe_skip(&lp);
    /* the standby goes: the agent logs the lost connection, then takes a hello 20 ms later
     * and waits at its "hello sent" line in the pipe filled meanwhile */
    th_stop(w.c[1].pid, SIGKILL, 5000);
    w.c[1].pid = 0;
    bool lost = th_logpipe_until(&lp, "connection to coordinator lost", 5000);
    if (lost)
        th_logpipe_fill(&lp);
    /* the owner's burst goes out meanwhile; with the hello and the session events in order
     * it waits for the hello instead, until this deadline lets the hello go */
    (void)TH_WAIT(atomic_load(&c.bursts) > 0, 300);
    bool sent = lost && th_logpipe_until(&lp, "hello sent", 5000);
    bool burst = TH_WAIT(atomic_load(&c.bursts) > 0, 5000);
    th_churn_stop(&c);
    th_logpipe_start_drain(&lp);
    if (!lost || !sent || !burst)
        fail_msg("the agent did not %s", !lost   ? "log the standby's connection lost"
                                         : !sent ? "send a hello"
                                                 : "finish the burst of sessions");

    /* whatever the agent sent before the marker was applied once the marker is listed */
    begin(a, "marker", "dev-marker");
    if (!TH_WAIT(lists(&w.c[0], "marker"), 5000))
        fail_msg("the leader never listed the marker session");
    json_t *ids = listed(&w.c[0]);
    assert_non_null(ids);
    size_t n = 0;
    pthread_mutex_lock(&a->lock);
    char missing[IHC_ID_MAX + 1] = "";
    for (ihc__session *s = a->sessions; s; s = s->next, n++)
        if (!has(ids, s->id) && !missing[0])
            snprintf(missing, sizeof missing, "%s", s->id);
    pthread_mutex_unlock(&a->lock);
    size_t theirs = json_array_size(ids);
    json_decref(ids);
    if (missing[0])
        fail_msg("the leader does not list live session %s (it lists %zu, the agent has %zu)",
                 missing, theirs, n);
    if (theirs != n)
        fail_msg("the leader lists %zu sessions of the agent, which has %zu", theirs, n);

    ihc_agent_close(a); /* before its log pipe closes */
    w.a = NULL;
    ihc_agent_log_setup(IHC_LOG_INFO, false, false, 2);
    th_logpipe_close(&lp);
}

static void test_report_begun_leader_and_standby(void **state)
{
    (void)state;
    start_pair();
    open_agent();
    begin_chained("first");
    if (!TH_WAIT(lists(&w.c[0], "first") && lists(&w.c[1], "first"), 10000))
        fail_msg("the coordinators never listed session first");
    /* the leader's sync said it reads a report's begun sessions (link 0; the standby sends
     * no sync) */
    assert_true(TH_WAIT(ihc__transport_report_begun(&w.a->tp, 0), 5000));

    interrupt_stops("first");
    /* answered after the report was read: the leader lists next-0 at once */
    if (!lists(&w.c[0], "next-0"))
        fail_msg("the leader does not list next-0 right after the interrupt's answer");
    if (!TH_WAIT(lists(&w.c[1], "next-0"), 5000))
        fail_msg("the standby never listed next-0");
    char key[64];
    snprintf(key, sizeof key, "ihc:session:{dev-1}:next-0");
    bool active = false;
    for (uint64_t end = th_now_ms_() + 5000; !active && th_now_ms_() < end; th_sleep_ms_(20)) {
        char *st = th_redis_cmd(&w.redis, "HGET %s state", key);
        active = st && strcmp(st, "active") == 0;
        free(st);
    }
    if (!active)
        fail_msg("Redis does not hold %s as active", key);

    /* the session announced in the report is expected and stopped by the next interrupt */
    interrupt_stops("next-0");
    if (!lists(&w.c[0], "next-1"))
        fail_msg("the leader does not list next-1 after the second interrupt");
    assert_int_equal(ihc_agent_session_count(w.a), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hello_after_standby_lost_keeps_sessions, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_report_begun_leader_and_standby, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
