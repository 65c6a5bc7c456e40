/* Sessions begun while an interrupt is handled, announced in that interrupt's report
 * (report.begun), against real coordinator processes: a leader and a standby on one Redis and
 * an agent (libihc-agent, in the test) dialing both, whose session's on_cancel begins the next
 * session. The leader says in its sync that it reads them; after the interrupt both
 * coordinators list the new session (the leader from the report, the standby from the
 * session_begin it alone is sent), Redis holds it as active, and the next interrupt stops it. */
#include "harness.h"

#include "agent_int.h"
#include "err.h"
#include "ihc/agent.h"

#include <jansson.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AGENT_ID "report-begun:1"

static struct {
    th_redis redis;
    char *dir;
    th_coord c[2];
    ihc_agent *a;
    atomic_int next;
} w;

static void coord_start(th_coord *c, const char *name)
{
    static const char *const env[] = {"IHC_AGENT_TTL=30", "IHC_LEASE_TTL=1", NULL};
    th_coord_ports(c, w.dir, name);
    th_coord_start(c, w.redis.url, name, env);
}

/* Whether c lists session id of AGENT_ID (GET /v1/sessions). */
static bool lists(const th_coord *c, const char *id)
{
    char *body = NULL;
    bool found = false;
    if (th_http(c->http, "GET", "/v1/sessions?hardware_id=dev-1", NULL, NULL, &body) == 200 &&
        body) {
        json_t *j = json_loads(body, 0, NULL);
        json_t *arr = json_object_get(j, "sessions");
        for (size_t i = 0; i < json_array_size(arr) && !found; i++) {
            json_t *s = json_array_get(arr, i);
            const char *sid = json_string_value(json_object_get(s, "session_id"));
            const char *agent = json_string_value(json_object_get(s, "agent_id"));
            found = sid && agent && strcmp(sid, id) == 0 && strcmp(agent, AGENT_ID) == 0;
        }
        json_decref(j);
    }
    free(body);
    return found;
}

/* on_cancel: the service starts its next piece of work for the device as it stops the last. */
static void begin_next(const char *session_id, void *arg);

static void begin(const char *sid)
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
    begin(sid);
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
    w.dir = th_tmpdir("report-begun");
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

static void test_report_begun_leader_and_standby(void **state)
{
    (void)state;
    coord_start(&w.c[0], "c1");
    if (!TH_WAIT(th_coord_leads(&w.c[0]), 10000))
        fail_msg("c1 never led (log %s)", w.c[0].log);
    coord_start(&w.c[1], "c2");

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
    begin("first");
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
        cmocka_unit_test_setup_teardown(test_report_begun_leader_and_standby, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
