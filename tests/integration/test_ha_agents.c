/* High availability on loopback, agent and client side: two coordinator processes on one
 * Redis (a leader and a standby, IHC_LEASE_TTL=1) and two ihc-agent processes that dial both
 * (comma-separated --pub/--report lists) — every agent's hello reaches both coordinators, an
 * interrupt reaches each agent once and its report goes back to the coordinator that sent
 * it; `ihc` with a control URL list (a dead one, the standby, the leader) succeeds; after the
 * leader is SIGKILLed the same command succeeds through the new leader, whose term the agents
 * follow. And Redis through Sentinel: a real master, replica and sentinel; the coordinator on
 * a redis-sentinel:// URL; the master SIGKILLed, the sentinel promotes the replica, and
 * interrupts are persisted again. */
#include "harness.h"

#include "err.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static struct {
    th_redis redis;
    char *dir;
    th_coord c[2];
    pid_t agents[2];
    char agent_log[2][4300];
} w;

/* The coordinators' settings: short timers, so that the test's failovers are quick. */
static const char *const coord_env[] = {"INTERRUPT_TIMEOUT=3.0",
                                        "IHC_AGENT_TTL=3",
                                        "SESSION_CLEANUP_DELAY=0.3",
                                        "IHC_HEARTBEAT_INTERVAL=0.2",
                                        "IHC_REDIS_TIMEOUT_MS=300",
                                        "IHC_LEASE_TTL=1",
                                        NULL};

static pid_t agent_start(const char *id, const char *hws, const char *pubs, const char *reports,
                         const char *log)
{
    char local[4400];
    snprintf(local, sizeof local, "ipc://%s/%s.sock", w.dir, id);
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    (char *)pubs,
                    "--report",
                    (char *)reports,
                    "--id",
                    (char *)id,
                    "--simulate",
                    (char *)hws,
                    "--local",
                    local,
                    NULL};
    char *env[] = {"IHC_HEARTBEAT_INTERVAL=0.2", "IHC_MODULE_TIMEOUT=0.5",
                   "SESSION_CLEANUP_DELAY=0.3", NULL};
    pid_t pid = th_spawn(argv, log, env);
    assert_true(pid > 0);
    return pid;
}

static int setup(void **state)
{
    (void)state;
    memset(&w, 0, sizeof w);
    w.dir = th_tmpdir("ha");
    assert_non_null(w.dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++) {
        if (w.agents[i] > 0)
            th_stop(w.agents[i], SIGTERM, 5000);
        if (w.c[i].pid > 0)
            th_stop(w.c[i].pid, SIGTERM, 5000);
    }
    th_redis_stop(&w.redis);
    th_tmpdir_remove(w.dir);
    free(w.dir);
    return 0;
}

static bool agent_listed(const th_coord *c, const char *id)
{
    char *body = NULL;
    bool ok = th_http(c->http, "GET", "/v1/agents", NULL, NULL, &body) == 200 && body &&
              strstr(body, id) != NULL;
    free(body);
    return ok;
}

static size_t active_sessions(const th_coord *c, const char *hw)
{
    char path[96], *body = NULL;
    snprintf(path, sizeof path, "/v1/sessions?hardware_id=%s", hw);
    size_t n = 0;
    if (th_http(c->http, "GET", path, NULL, NULL, &body) == 200 && body)
        for (const char *p = body; (p = strstr(p, "\"state\":\"active\"")); p++)
            n++;
    free(body);
    return n;
}

/* POST /v1/interrupt on c; the parsed answer (caller frees). */
static json_t *interrupt_on(const th_coord *c, const char *hw)
{
    char body[128], *resp = NULL;
    snprintf(body, sizeof body, "{\"hardware_id\":\"%s\",\"timeout_ms\":3000}", hw);
    int st = th_http(c->http, "POST", "/v1/interrupt", "Content-Type: application/json\r\n", body,
                     &resp);
    json_t *j = resp ? json_loads(resp, 0, NULL) : NULL;
    if (st != 200 || !j)
        fail_msg("interrupt %s on %s: status %d %s", hw, c->http_addr, st, resp ? resp : "");
    free(resp);
    return j;
}

static bool answered_by(json_t *r, const char *agent)
{
    json_t *a = json_object_get(json_object_get(r, "agents"), "answered");
    for (size_t i = 0; i < json_array_size(a); i++)
        if (strcmp(json_string_value(json_array_get(a, i)), agent) == 0)
            return true;
    return false;
}

/* How many times the agent's log says it handled interrupt id of hw. */
static int handled_count(const char *log, uint64_t id, const char *hw)
{
    char needle[128];
    snprintf(needle, sizeof needle, "interrupt handled id=%llu hw=%s ", (unsigned long long)id, hw);
    char *s = th_slurp(log);
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    free(s);
    return n;
}

/* `ihc --control LIST --json interrupt hw`: exit status, output in *out (caller frees). */
static int cli_interrupt(const char *list, const char *hw, char **out)
{
    char cmd[9000], path[4400];
    snprintf(path, sizeof path, "%s/cli.out", w.dir);
    snprintf(cmd, sizeof cmd, "'%s' --control '%s' --json interrupt %s >'%s' 2>&1", th_bin("ihc"),
             list, hw, path);
    int st = system(cmd);
    *out = th_slurp(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static uint64_t result_id(const char *json)
{
    json_t *j = json_loads(json, 0, NULL);
    uint64_t id = (uint64_t)json_integer_value(json_object_get(j, "interrupt_id"));
    bool both = answered_by(j, "ha-agent-1") && answered_by(j, "ha-agent-2");
    bool ok = json_is_true(json_object_get(j, "success"));
    json_decref(j);
    return ok && both ? id : 0;
}

static void test_ha_two_coordinators(void **state)
{
    (void)state;
    assert_int_equal(th_redis_start(&w.redis), 0);
    th_coord_ports(&w.c[0], w.dir, "coord-a");
    th_coord_ports(&w.c[1], w.dir, "coord-b");
    th_coord_start(&w.c[0], w.redis.url, "coord-a", coord_env);
    assert_true(TH_WAIT(th_coord_leads(&w.c[0]), 10000));
    th_coord_start(&w.c[1], w.redis.url, "coord-b", coord_env);
    assert_false(th_coord_leads(&w.c[1]));

    char pubs[160], reports[160];
    snprintf(pubs, sizeof pubs, "%s,%s", w.c[0].pub_url, w.c[1].pub_url);
    snprintf(reports, sizeof reports, "%s,%s", w.c[0].rep_url, w.c[1].rep_url);
    const char *ids[2] = {"ha-agent-1", "ha-agent-2"};
    for (int i = 0; i < 2; i++) {
        snprintf(w.agent_log[i], sizeof w.agent_log[i], "%s/%s.log", w.dir, ids[i]);
        w.agents[i] =
            agent_start(ids[i], i == 0 ? "dev-1" : "dev-1,dev-2", pubs, reports, w.agent_log[i]);
    }
    /* every agent's hello reaches both coordinators, and so do its sessions */
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < 2; i++)
            if (!TH_WAIT(agent_listed(&w.c[c], ids[i]), 15000)) {
                th_log_tail(w.agent_log[i], 20);
                fail_msg("%s not in GET /v1/agents of coordinator %d", ids[i], c);
            }
    for (int c = 0; c < 2; c++)
        assert_true(TH_WAIT(active_sessions(&w.c[c], "dev-1") == 2, 15000));

    /* through the leader: both agents answer it, each acting once */
    json_t *r = interrupt_on(&w.c[0], "dev-1");
    char *txt = json_dumps(r, 0);
    uint64_t id = result_id(txt);
    if (id == 0)
        fail_msg("interrupt through the leader: %s", txt);
    free(txt);
    json_decref(r);
    for (int i = 0; i < 2; i++)
        assert_int_equal(handled_count(w.agent_log[i], id, "dev-1"), 1);
    /* the standby heard of the sessions' end from the agents (the report went to the leader) */
    assert_true(TH_WAIT(active_sessions(&w.c[1], "dev-1") == 2, 15000));

    /* the CLI with a dead URL, the standby and the leader, in that order */
    char list[256];
    snprintf(list, sizeof list, "tcp://127.0.0.1:%d,%s,%s", th_free_port(), w.c[1].ctl_url,
             w.c[0].ctl_url);
    assert_true(TH_WAIT(active_sessions(&w.c[0], "dev-1") == 2, 15000));
    char *out = NULL;
    uint64_t t0 = th_now_ms_();
    int st = cli_interrupt(list, "dev-1", &out);
    if (st != 0 || (id = result_id(out)) == 0)
        fail_msg("ihc --control '%s' interrupt dev-1: exit %d\n%s", list, st, out);
    free(out);
    assert_true(th_now_ms_() - t0 < 8000);
    for (int i = 0; i < 2; i++)
        assert_int_equal(handled_count(w.agent_log[i], id, "dev-1"), 1);

    /* the leader dies: the same command succeeds through the new leader; the agents follow
     * its term and answer it */
    th_stop(w.c[0].pid, SIGKILL, 2000);
    w.c[0].pid = 0;
    t0 = th_now_ms_();
    id = 0;
    while (id == 0 && th_now_ms_() - t0 < 20000) {
        st = cli_interrupt(list, "dev-1", &out);
        if (st == 0)
            id = result_id(out);
        free(out);
        if (id == 0)
            th_sleep_ms_(100);
    }
    if (id == 0) {
        th_log_tail(w.c[1].log, 30);
        fail_msg("no interrupt answered by both agents through the new leader");
    }
    fprintf(stderr, "take-over: an interrupt answered by both agents %.2f s after the SIGKILL\n",
            (double)(th_now_ms_() - t0) / 1000.0);
    assert_true(th_coord_leads(&w.c[1]));
    for (int i = 0; i < 2; i++) {
        assert_int_equal(handled_count(w.agent_log[i], id, "dev-1"), 1);
        assert_true(th_log_has(w.agent_log[i], "leader term now 2", 0));
    }
}

/* ---- Redis through Sentinel ---- */

typedef struct {
    pid_t pid;
    int port;
    char log[4300];
} rproc;

static redisContext *rconnect(int port)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c)
        redisSetTimeout(c, tv);
    return c;
}

/* The reply to one command as text (status, string, integer; arrays joined by ' '). */
static char *rcmd(int port, const char *fmt, ...)
{
    redisContext *c = rconnect(port);
    if (!c)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    char *out = NULL;
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
              r->type == REDIS_REPLY_ERROR)) {
        out = strdup(r->str);
    } else if (r && r->type == REDIS_REPLY_INTEGER) {
        if (asprintf(&out, "%lld", r->integer) < 0)
            out = NULL;
    } else if (r && r->type == REDIS_REPLY_ARRAY) {
        size_t len = 1;
        for (size_t i = 0; i < r->elements; i++)
            len += (r->element[i]->str ? strlen(r->element[i]->str) : 0) + 1;
        out = calloc(1, len);
        for (size_t i = 0; out && i < r->elements; i++) {
            if (i)
                strcat(out, " ");
            if (r->element[i]->str)
                strcat(out, r->element[i]->str);
        }
    } else if (r && r->type == REDIS_REPLY_NIL) {
        out = strdup("(nil)");
    }
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return out;
}

static bool reply_has(int port, const char *needle, const char *fmt, const char *arg)
{
    char *r = rcmd(port, fmt, arg);
    bool ok = r && strstr(r, needle);
    free(r);
    return ok;
}

static void rstart(rproc *p, char *const argv[])
{
    p->pid = th_spawn(argv, p->log, NULL);
    assert_true(p->pid > 0);
    if (!TH_WAIT(reply_has(p->port, "PONG", "PING", NULL), 10000)) {
        th_log_tail(p->log, 20);
        fail_msg("redis on port %d did not answer PING", p->port);
    }
}

static void test_ha_sentinel_failover(void **state)
{
    (void)state;
    rproc master = {.port = th_free_port()}, replica = {.port = th_free_port()},
          sentinel = {.port = th_free_port()};
    char mport[16], rport[16], mdir[4300], rdir[4300], conf[4300];
    snprintf(mport, sizeof mport, "%d", master.port);
    snprintf(rport, sizeof rport, "%d", replica.port);
    snprintf(mdir, sizeof mdir, "%s/master", w.dir);
    snprintf(rdir, sizeof rdir, "%s/replica", w.dir);
    assert_int_equal(mkdir(mdir, 0700), 0);
    assert_int_equal(mkdir(rdir, 0700), 0);
    snprintf(master.log, sizeof master.log, "%s/redis-master.log", w.dir);
    snprintf(replica.log, sizeof replica.log, "%s/redis-replica.log", w.dir);
    snprintf(sentinel.log, sizeof sentinel.log, "%s/sentinel.log", w.dir);
    char *margv[] = {"redis-server", "--port", mport,   "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no",     "--dir", mdir,     NULL};
    rstart(&master, margv);
    char *rargv[] = {
        "redis-server", "--port", rport, "--bind",      "127.0.0.1", "--save", "",  "--appendonly",
        "no",           "--dir",  rdir,  "--replicaof", "127.0.0.1", mport,    NULL};
    rstart(&replica, rargv);
    assert_true(
        TH_WAIT(reply_has(replica.port, "master_link_status:up", "INFO replication", NULL), 15000));
    /* one sentinel, quorum 1, quick to act (it rewrites its own file) */
    snprintf(conf, sizeof conf, "%s/sentinel.conf", w.dir);
    FILE *fp = fopen(conf, "w");
    assert_non_null(fp);
    fprintf(fp,
            "port %d\nbind 127.0.0.1\ndir %s\n"
            "sentinel monitor ihcmaster 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds ihcmaster 500\n"
            "sentinel failover-timeout ihcmaster 2000\n"
            "sentinel parallel-syncs ihcmaster 1\n",
            sentinel.port, w.dir, master.port);
    fclose(fp);
    char *sargv[] = {"redis-server", conf, "--sentinel", NULL};
    rstart(&sentinel, sargv);
    /* the sentinel knows the replica before the master goes */
    if (!TH_WAIT(reply_has(sentinel.port, "num-slaves 1", "SENTINEL master %s", "ihcmaster"),
                 20000)) {
        th_log_tail(sentinel.log, 20);
        fail_msg("the sentinel did not find the replica");
    }

    char url[160];
    snprintf(url, sizeof url, "redis-sentinel://127.0.0.1:%d,127.0.0.1:%d/ihcmaster/0",
             th_free_port(), sentinel.port); /* the first sentinel is down: passed over */
    th_coord *c = &w.c[0];
    th_coord_ports(c, w.dir, "coord-sentinel");
    th_coord_start(c, url, "coord-sentinel", coord_env);
    snprintf(w.agent_log[0], sizeof w.agent_log[0], "%s/agent-s.log", w.dir);
    w.agents[0] = agent_start("sentinel-agent", "dev-1", c->pub_url, c->rep_url, w.agent_log[0]);
    assert_true(TH_WAIT(active_sessions(c, "dev-1") == 1, 15000));
    json_t *r = interrupt_on(c, "dev-1");
    assert_true(json_is_true(json_object_get(r, "success")));
    assert_true(TH_WAIT(reply_has(master.port, "1", "XLEN %s", "ihc:interrupts"), 10000));
    json_decref(r);
    char needle[96];
    snprintf(needle, sizeof needle, "addr=127.0.0.1:%d", master.port);
    assert_true(th_log_has(c->log, needle, 0));

    /* the master dies; the sentinel promotes the replica; interrupts are written there */
    th_stop(master.pid, SIGKILL, 2000);
    master.pid = 0;
    uint64_t t0 = th_now_ms_();
    if (!TH_WAIT(
            reply_has(sentinel.port, rport, "SENTINEL get-master-addr-by-name %s", "ihcmaster"),
            30000)) {
        th_log_tail(sentinel.log, 30);
        fail_msg("the sentinel did not promote the replica");
    }
    bool persisted = false;
    while (!persisted && th_now_ms_() - t0 < 30000) {
        assert_true(TH_WAIT(active_sessions(c, "dev-1") == 1, 15000));
        r = interrupt_on(c, "dev-1");
        persisted = json_is_true(json_object_get(r, "success")) &&
                    json_is_true(json_object_get(r, "persisted"));
        json_decref(r);
        if (!persisted)
            th_sleep_ms_(200);
    }
    if (!persisted) {
        th_log_tail(c->log, 30);
        fail_msg("no interrupt persisted after the failover");
    }
    fprintf(stderr, "sentinel failover: interrupts persisted again %.1f s after the SIGKILL\n",
            (double)(th_now_ms_() - t0) / 1000.0);
    /* written on the promoted replica, which the coordinator found through the sentinel */
    char *len = rcmd(replica.port, "XLEN %s", "ihc:interrupts");
    assert_non_null(len);
    assert_true(atoi(len) >= 1);
    free(len);
    snprintf(needle, sizeof needle, "addr=127.0.0.1:%d", replica.port);
    assert_true(th_log_has(c->log, needle, 0));
    th_stop(w.agents[0], SIGTERM, 5000);
    w.agents[0] = 0;
    th_stop(c->pid, SIGTERM, 5000);
    c->pid = 0;
    th_stop(sentinel.pid, SIGTERM, 5000);
    th_stop(replica.pid, SIGTERM, 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ha_two_coordinators, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ha_sentinel_failover, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
