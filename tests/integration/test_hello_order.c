/* A hello and the session events around it, against real coordinator processes: two
 * ihc-coordinators on one Redis (a leader and a standby) and an agent (libihc-agent, in the
 * test) dialing both. The standby is killed: the agent says hello to the leader again. While
 * that hello waits between its snapshot and its send, an owner begins and ends sessions;
 * afterwards GET /v1/sessions on the leader lists exactly the agent's sessions (a
 * session_begin sent ahead of a hello snapshotted before it was wiped by that hello until the
 * next one). The hello is held at its "hello sent" log line: the agent logs at DEBUG into a
 * pipe the test fills. */
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

#define AGENT_ID    "hello-order:1"
#define CHURN_LIVE  8  /* sessions the owner keeps open */
#define CHURN_BURST 40 /* sessions begun while the hello is held */

static struct {
    th_redis redis;
    char *dir;
    th_coord c[2];
} w;

/* A coordinator named name on fresh ports, against the test's Redis. */
static void coord_start(th_coord *c, const char *name)
{
    static const char *const env[] = {"IHC_AGENT_TTL=30", "IHC_LEASE_TTL=1", NULL};
    th_coord_ports(c, w.dir, name);
    th_coord_start(c, w.redis.url, name, env);
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

static int setup(void **state)
{
    (void)state;
    memset(&w, 0, sizeof w);
    w.dir = th_tmpdir("hello-order");
    assert_non_null(w.dir);
    return th_redis_start(&w.redis);
}

static int teardown(void **state)
{
    (void)state;
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
    coord_start(&w.c[0], "c1");
    if (!TH_WAIT(th_coord_leads(&w.c[0]), 10000))
        fail_msg("c1 never led (log %s)", w.c[0].log);
    coord_start(&w.c[1], "c2");

    static th_logpipe lp;
    th_logpipe_open(&lp, 0);
    ihc_agent_log_setup(IHC_LOG_DEBUG, false, false, lp.wr);
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
    ihc_agent *a = NULL;
    TH_PASS(ihc_agent_open(&a, &o));
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

    ihc_agent_close(a);
    ihc_agent_log_setup(IHC_LOG_INFO, false, false, 2);
    th_logpipe_close(&lp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hello_after_standby_lost_keeps_sessions, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
