/* End to end: a real redis-server, a real ihc-coordinator and three real ihc-agent
 * processes running simulated work. Drives interrupts over the control socket and HTTP
 * and checks results, surviving work, Redis contents, failures and restarts. */
#include "harness.h"

#include "err.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_AGENTS 3

static struct {
    th_redis redis;
    char *dir;
    int pub, rep, ctl, http;
    char pub_url[64], rep_url[64], ctl_url[64], http_addr[64];
    pid_t coord;
    pid_t agent[N_AGENTS];
} w;

static const char *agent_ids[N_AGENTS] = {"node-a", "node-b", "node-c"};
static const char *agent_hws[N_AGENTS] = {"dev-1,dev-2", "dev-2,dev-3", "dev-3,dev-4"};

static void start_coordinator(void)
{
    char log[512], http[64];
    snprintf(log, sizeof(log), "%s/coordinator.log", w.dir);
    snprintf(http, sizeof(http), "127.0.0.1:%d", w.http);
    char *argv[] = {(char *)th_bin("ihc-coordinator"),
                    "--pub",
                    w.pub_url,
                    "--report",
                    w.rep_url,
                    "--control",
                    w.ctl_url,
                    "--http",
                    http,
                    "--redis",
                    w.redis.url,
                    NULL};
    char *env[] = {"INTERRUPT_TIMEOUT=2.0", "SESSION_CLEANUP_DELAY=3", "IHC_AGENT_TTL=3",
                   "IHC_LOG_LEVEL=debug", NULL};
    w.coord = th_spawn(argv, log, env);
    assert_true(w.coord > 0);
    if (!TH_WAIT(th_http(w.http, "GET", "/healthz", NULL, NULL, NULL) == 200, 10000)) {
        th_log_tail(log, 30);
        fail_msg("coordinator did not answer GET /healthz on port %d (log %s)", w.http, log);
    }
}

static void start_agent(int i)
{
    char log[512], local[512];
    snprintf(log, sizeof(log), "%s/%s.log", w.dir, agent_ids[i]);
    snprintf(local, sizeof(local), "unix://%s/%s.sock", w.dir, agent_ids[i]);
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    w.pub_url,
                    "--report",
                    w.rep_url,
                    "--id",
                    (char *)agent_ids[i],
                    "--simulate",
                    (char *)agent_hws[i],
                    "--local",
                    local,
                    NULL};
    char *env[] = {"IHC_MODULE_TIMEOUT=0.5", "IHC_HEARTBEAT_INTERVAL=0.2", NULL};
    w.agent[i] = th_spawn(argv, log, env);
    assert_true(w.agent[i] > 0);
}

/* The control socket's answer to op, parsed; NULL when unreachable. */
static json_t *control(const char *op, const char *hw, int64_t timeout_ms, int *status)
{
    char *body = NULL;
    int st = th_control(w.ctl_url, op, hw, "e2e test", timeout_ms, &body);
    if (status)
        *status = st;
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    return j;
}

static size_t active_sessions(const char *hw)
{
    json_t *j = control("sessions", hw, 0, NULL);
    size_t n = j ? json_array_size(json_object_get(j, "sessions")) : 0;
    json_decref(j);
    return n;
}

static size_t live_agents(void)
{
    json_t *j = control("agents", NULL, 0, NULL);
    size_t n = 0, i;
    json_t *a;
    json_array_foreach(json_object_get(j, "agents"), i, a)
    {
        if (json_is_true(json_object_get(a, "connected")))
            n++;
    }
    json_decref(j);
    return n;
}

/* True when the coordinator knows agent id as connected, with the given process id (so a
 * restarted agent has said hello, not only its predecessor's entry is still fresh). */
static bool agent_is(const char *id, pid_t pid)
{
    json_t *j = control("agents", NULL, 0, NULL);
    bool found = false;
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(j, "agents"), i, a)
    {
        const char *aid = json_string_value(json_object_get(a, "agent_id"));
        found = found ||
                (aid && !strcmp(aid, id) && json_integer_value(json_object_get(a, "pid")) == pid &&
                 json_is_true(json_object_get(a, "connected")));
    }
    json_decref(j);
    return found;
}

static bool json_array_has(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return true;
    }
    return false;
}

static int count_lines(const char *agent, const char *needle)
{
    char path[512], line[4096];
    snprintf(path, sizeof(path), "%s/%s.log", w.dir, agent);
    FILE *f = fopen(path, "r");
    int n = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

static int setup(void **state)
{
    (void)state;
    memset(&w, 0, sizeof(w));
    w.dir = th_tmpdir("e2e");
    if (!w.dir || th_redis_start(&w.redis) != 0)
        return -1;
    w.pub = th_free_port();
    w.rep = th_free_port();
    w.ctl = th_free_port();
    w.http = th_free_port();
    snprintf(w.pub_url, sizeof(w.pub_url), "tcp://127.0.0.1:%d", w.pub);
    snprintf(w.rep_url, sizeof(w.rep_url), "tcp://127.0.0.1:%d", w.rep);
    snprintf(w.ctl_url, sizeof(w.ctl_url), "tcp://127.0.0.1:%d", w.ctl);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_AGENTS; i++)
        if (w.agent[i] > 0)
            th_stop(w.agent[i], SIGTERM, 5000);
    if (w.coord > 0)
        th_stop(w.coord, SIGTERM, 5000);
    th_redis_stop(&w.redis);
    th_tmpdir_remove(w.dir);
    free(w.dir);
    return 0;
}

/* Everything comes up: 3 agents connected, 6 simulated sessions registered. */
static void test_e2e_startup(void **state)
{
    (void)state;
    start_coordinator();
    for (int i = 0; i < N_AGENTS; i++)
        start_agent(i);
    assert_true(TH_WAIT(live_agents() == N_AGENTS, 15000));
    assert_true(TH_WAIT(active_sessions(NULL) == 6, 15000));
    assert_int_equal(active_sessions("dev-2"), 2);
}

/* Interrupting dev-2 stops exactly dev-2's sessions on node-a and node-b. */
static void test_e2e_interrupt_exact(void **state)
{
    (void)state;
    int before_dev1 = count_lines("node-a", "hw=dev-1");
    int status;
    json_t *r = control("interrupt", "dev-2", 2000, &status);
    assert_non_null(r);
    assert_int_equal(status, 200);
    assert_true(json_is_true(json_object_get(r, "success")));
    assert_string_equal(json_string_value(json_object_get(r, "hardware_id")), "dev-2");
    assert_true(json_integer_value(json_object_get(r, "interrupt_id")) > 0);
    assert_true(json_integer_value(json_object_get(r, "epoch")) >= 1);
    json_t *ag = json_object_get(r, "agents");
    assert_int_equal(json_array_size(json_object_get(ag, "expected")), 2);
    assert_true(json_array_has(json_object_get(ag, "answered"), "node-a"));
    assert_true(json_array_has(json_object_get(ag, "answered"), "node-b"));
    assert_int_equal(json_array_size(json_object_get(ag, "missing")), 0);
    assert_int_equal(json_array_size(json_object_get(r, "cleaned_sessions")), 2);
    char cleaned[2][160];
    for (size_t i = 0; i < 2; i++)
        snprintf(cleaned[i], sizeof(cleaned[i]), "\"%s\"",
                 json_string_value(json_array_get(json_object_get(r, "cleaned_sessions"), i)));
    json_t *mods = json_object_get(r, "interrupted_modules");
    assert_true(json_array_has(mods, "text_processing"));
    assert_true(json_array_has(mods, "audio_generation"));
    assert_true(json_array_has(mods, "session_management"));
    assert_true(json_is_true(json_object_get(r, "persisted")));
    assert_true(json_real_value(json_object_get(r, "total_time_ms")) > 0);
    json_decref(r);

    /* The flag is set at once (written off the request path, so wait for it), and resets
     * by itself after SESSION_CLEANUP_DELAY. */
    char *v;
    assert_true(TH_WAIT((v = th_redis_cmd(&w.redis, "HGET ihc:flags interrupt_hardware_id")) &&
                                strcmp(v, "dev-2") == 0
                            ? (free(v), true)
                            : (free(v), false),
                        2000));
    r = control("flags", NULL, 0, NULL);
    assert_true(json_is_true(json_object_get(r, "global_interrupt_flag")));
    json_decref(r);

    /* Other hardware_ids keep running: dev-1 (node-a) keeps logging progress. */
    assert_true(TH_WAIT(count_lines("node-a", "hw=dev-1") > before_dev1 + 1, 5000));
    assert_int_equal(active_sessions("dev-1"), 1);
    assert_int_equal(active_sessions("dev-3"), 2);
    assert_int_equal(active_sessions("dev-4"), 1);
    assert_true(count_lines("node-b", "hw=dev-2") > 0);

    /* Redis holds the layout of DESIGN.md. */
    v = th_redis_cmd(&w.redis, "GET ihc:hw:{dev-2}:epoch");
    assert_non_null(v);
    assert_true(atoi(v) >= 1);
    free(v);
    assert_true(TH_WAIT((v = th_redis_cmd(&w.redis, "XLEN ihc:interrupts")) && atoi(v) >= 1
                            ? (free(v), true)
                            : (free(v), false),
                        5000));
    v = th_redis_cmd(&w.redis, "SCARD ihc:hw:{dev-1}:sessions");
    assert_non_null(v);
    assert_int_equal(atoi(v), 1);
    free(v);
    v = th_redis_cmd(&w.redis, "TTL ihc:agent:node-a");
    assert_non_null(v);
    assert_true(atoi(v) > 0);
    free(v);
    /* The agents' hashes list their sessions as they are now (rewritten on a heartbeat). */
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 2; k++)
            assert_true(
                TH_WAIT((v = th_redis_cmd(&w.redis, "HGET ihc:agent:%s sessions", agent_ids[i])) &&
                                !strstr(v, cleaned[k])
                            ? (free(v), true)
                            : (free(v), false),
                        5000));
    v = th_redis_cmd(&w.redis, "HGET ihc:stats total_interrupts");
    assert_non_null(v);
    assert_true(atoi(v) >= 1);
    free(v);
    /* The surviving dev-1 session's hash says active (its id is generated by the agent). */
    v = th_redis_cmd(&w.redis, "EVAL %s 1 %s",
                     "local ids = redis.call('SMEMBERS', KEYS[1]) "
                     "return redis.call('HGET', 'ihc:session:{dev-1}:' .. ids[1], 'state')",
                     "ihc:hw:{dev-1}:sessions");
    assert_non_null(v);
    assert_string_equal(v, "active");
    free(v);
    assert_true(TH_WAIT((v = th_redis_cmd(&w.redis, "HGET ihc:flags global_interrupt_flag")) &&
                                strcmp(v, "0") == 0
                            ? (free(v), true)
                            : (free(v), false),
                        8000));
    r = control("flags", NULL, 0, NULL);
    assert_false(json_is_true(json_object_get(r, "global_interrupt_flag")));
    json_decref(r);
}

/* The same over HTTP, and HTTP's bad-input answers. */
static void test_e2e_http(void **state)
{
    (void)state;
    char *body = NULL;
    int st = th_http(w.http, "POST", "/v1/interrupt", NULL,
                     "{\"hardware_id\":\"dev-4\",\"reason\":\"http\",\"timeout_ms\":2000}", &body);
    assert_int_equal(st, 200);
    json_t *r = json_loads(body, 0, NULL);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "success")));
    json_decref(r);
    free(body);

    struct {
        const char *method, *path, *body;
        int status;
    } bad[] = {
        {"POST", "/v1/interrupt", "{not json", 400},
        {"POST", "/v1/interrupt", "{\"hardware_id\":\"bad id!\"}", 400},
        {"POST", "/v1/interrupt", "{\"hardware_id\":42}", 400},
        {"POST", "/v1/interrupt", "{}", 400},
        {"GET", "/v1/interrupt", NULL, 405},
        {"GET", "/v1/nope", NULL, 404},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        body = NULL;
        st = th_http(w.http, bad[i].method, bad[i].path, NULL, bad[i].body, &body);
        if (st != bad[i].status)
            fail_msg("%s %s %s: status %d, want %d (%s)", bad[i].method, bad[i].path,
                     bad[i].body ? bad[i].body : "", st, bad[i].status, body ? body : "");
        assert_non_null(body);
        assert_non_null(strstr(body, "\"error\""));
        free(body);
    }
    /* Oversized body: refused, nothing done. */
    size_t big = 2 * 1024 * 1024;
    char *huge = malloc(big + 64);
    snprintf(huge, 64, "{\"hardware_id\":\"dev-4\",\"reason\":\"");
    size_t off = strlen(huge);
    memset(huge + off, 'x', big);
    strcpy(huge + off + big, "\"}");
    body = NULL;
    st = th_http(w.http, "POST", "/v1/interrupt", NULL, huge, &body);
    free(huge);
    assert_int_equal(st, 413);
    free(body);
}

/* A killed agent is reported missing, with success false, within the deadline. */
static void test_e2e_agent_killed(void **state)
{
    (void)state;
    assert_true(TH_WAIT(active_sessions("dev-3") == 2, 10000));
    th_stop(w.agent[2], SIGKILL, 5000);
    w.agent[2] = 0;
    int status;
    json_t *r = control("interrupt", "dev-3", 800, &status);
    assert_non_null(r);
    assert_false(json_is_true(json_object_get(r, "success")));
    json_t *missing = json_object_get(json_object_get(r, "agents"), "missing");
    assert_true(json_array_has(missing, "node-c"));
    assert_true(
        json_array_has(json_object_get(json_object_get(r, "agents"), "answered"), "node-b"));
    assert_true(json_real_value(json_object_get(r, "total_time_ms")) < 800 + 500);
    assert_non_null(json_object_get(r, "error"));
    json_decref(r);
    start_agent(2);
    assert_true(TH_WAIT(agent_is("node-c", w.agent[2]), 15000));
    assert_true(TH_WAIT(live_agents() == N_AGENTS, 15000));
}

/* An agent silent past IHC_AGENT_TTL (stopped, starved) is given up and its sessions
 * expire; when it speaks again on the link that never dropped, the coordinator asks it for
 * a hello and knows its sessions again, so interrupts of its hardware_ids reach it. */
static void test_e2e_agent_silent(void **state)
{
    (void)state;
    assert_true(TH_WAIT(agent_is("node-c", w.agent[2]), 15000));
    assert_true(TH_WAIT(active_sessions("dev-4") == 1, 10000));
    assert_int_equal(kill(w.agent[2], SIGSTOP), 0);
    bool given_up = TH_WAIT(active_sessions("dev-4") == 0, 10000);
    json_t *j = control("agents", NULL, 0, NULL); /* live agents only */
    size_t listed = json_array_size(json_object_get(j, "agents"));
    json_decref(j);
    assert_int_equal(kill(w.agent[2], SIGCONT), 0);
    assert_true(given_up);
    assert_int_equal(listed, N_AGENTS - 1);
    assert_true(TH_WAIT(active_sessions("dev-4") == 1, 10000));
    json_t *r = control("interrupt", "dev-4", 2000, NULL);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "success")));
    assert_true(
        json_array_has(json_object_get(json_object_get(r, "agents"), "answered"), "node-c"));
    assert_int_equal(json_array_size(json_object_get(r, "cleaned_sessions")), 1);
    json_decref(r);
}

/* Redis killed: interrupts still succeed with persisted false; the backlog lands later. */
static void test_e2e_redis_outage(void **state)
{
    (void)state;
    char *v = th_redis_cmd(&w.redis, "XLEN ihc:interrupts");
    assert_non_null(v);
    free(v);
    th_redis_kill(&w.redis);
    int status;
    json_t *r = NULL;
    /* The coordinator notices on its next write; retry until it reports persisted false. */
    bool seen_unpersisted = false;
    for (int i = 0; i < 20 && !seen_unpersisted; i++) {
        assert_true(TH_WAIT(active_sessions("dev-1") == 1, 10000));
        r = control("interrupt", "dev-1", 2000, &status);
        assert_non_null(r);
        assert_true(json_is_true(json_object_get(r, "success")));
        seen_unpersisted = json_is_false(json_object_get(r, "persisted"));
        json_decref(r);
    }
    assert_true(seen_unpersisted);
    json_t *stats = control("stats", NULL, 0, NULL);
    json_int_t total = json_integer_value(json_object_get(stats, "total_interrupts"));
    json_decref(stats);
    assert_int_equal(th_redis_start(&w.redis), 0); /* same port, empty data */
    /* Everything the coordinator had not written lands once Redis is back, and the live
     * state the empty Redis lost is written again: the id block, sessions, epochs. */
    assert_true(TH_WAIT((v = th_redis_cmd(&w.redis, "XLEN ihc:interrupts")) && atoi(v) >= 1
                            ? (free(v), true)
                            : (free(v), false),
                        15000));
    assert_true(TH_WAIT((v = th_redis_cmd(&w.redis, "HGET ihc:seq interrupt_id")) && atoi(v) > 0
                            ? (free(v), true)
                            : (free(v), false),
                        15000));
    assert_true(TH_WAIT((v = th_redis_cmd(&w.redis, "GET ihc:hw:{dev-1}:epoch")) && atoi(v) > 0
                            ? (free(v), true)
                            : (free(v), false),
                        15000));
    (void)total;
}

/* Coordinator restarted: ids continue, agents reconnect, interrupts work. */
static void test_e2e_coordinator_restart(void **state)
{
    (void)state;
    assert_true(TH_WAIT(active_sessions("dev-4") == 1, 10000));
    json_t *r = control("interrupt", "dev-4", 2000, NULL);
    assert_non_null(r);
    json_int_t id_before = json_integer_value(json_object_get(r, "interrupt_id"));
    json_int_t epoch_before = json_integer_value(json_object_get(r, "epoch"));
    json_decref(r);
    th_stop(w.coord, SIGTERM, 5000);
    start_coordinator();
    assert_true(TH_WAIT(live_agents() == N_AGENTS, 15000));
    assert_true(TH_WAIT(active_sessions("dev-4") == 1, 15000));
    r = control("interrupt", "dev-4", 2000, NULL);
    assert_non_null(r);
    assert_true(json_is_true(json_object_get(r, "success")));
    assert_true(json_integer_value(json_object_get(r, "interrupt_id")) > id_before);
    assert_true(json_integer_value(json_object_get(r, "epoch")) > epoch_before);
    assert_int_equal(json_array_size(json_object_get(json_object_get(r, "agents"), "answered")), 1);
    json_decref(r);
}

/* Concurrent interrupts from several clients: all answered, ids distinct. */
#define CLIENTS    4
#define PER_CLIENT 10
static json_int_t ids[CLIENTS * PER_CLIENT];

static void *client_thread(void *arg)
{
    int c = (int)(intptr_t)arg;
    static const char *hws[] = {"dev-1", "dev-2", "dev-3", "dev-9"};
    for (int i = 0; i < PER_CLIENT; i++) {
        char *body = NULL;
        int st = th_control(w.ctl_url, "interrupt", hws[(c + i) % 4], "concurrent", 2000, &body);
        json_t *r = body ? json_loads(body, 0, NULL) : NULL;
        ids[c * PER_CLIENT + i] =
            st == 200 && r ? json_integer_value(json_object_get(r, "interrupt_id")) : -1;
        json_decref(r);
        free(body);
    }
    return NULL;
}

static void test_e2e_concurrent(void **state)
{
    (void)state;
    pthread_t t[CLIENTS];
    for (int c = 0; c < CLIENTS; c++)
        pthread_create(&t[c], NULL, client_thread, (void *)(intptr_t)c);
    for (int c = 0; c < CLIENTS; c++)
        pthread_join(t[c], NULL);
    for (int i = 0; i < CLIENTS * PER_CLIENT; i++) {
        assert_true(ids[i] > 0);
        for (int j = 0; j < i; j++)
            assert_true(ids[i] != ids[j]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e2e_startup),
        cmocka_unit_test(test_e2e_interrupt_exact),
        cmocka_unit_test(test_e2e_http),
        cmocka_unit_test(test_e2e_agent_killed),
        cmocka_unit_test(test_e2e_agent_silent),
        cmocka_unit_test(test_e2e_redis_outage),
        cmocka_unit_test(test_e2e_coordinator_restart),
        cmocka_unit_test(test_e2e_concurrent),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
