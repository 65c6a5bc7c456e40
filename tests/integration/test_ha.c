/* Two ihc-coordinator processes on one redis-server (loopback): one leads, the other stands
 * by. Checks the roles in /healthz, the standby's 503 with the leader's addresses over HTTP
 * and the control socket, take-over after the leader is SIGKILLed (timed, IHC_LEASE_TTL=1),
 * terms, ids that keep growing and never repeat, epochs that never go back, a leader
 * SIGSTOPped past its lease whose interrupt in flight never reaches Redis after it wakes,
 * and a write batch repeated after a Redis stall that duplicates nothing.
 *
 * The agent is a fake inside the test speaking the wire protocol as agents of several
 * coordinators do: per coordinator one SUB and one PUSH, hello and heartbeats to each,
 * reports to the coordinator that sent the interrupt, once per (term, id). */
#include "harness.h"

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/sub.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "wire.h"

#define N_COORD 2
#define AGENT   "ha-agent:1"
#define MAX_IDS 4096

typedef struct {
    pid_t pid;
    char id[32];
    char pub[64], report[64], control[64], http_addr[64];
    int http;
    char log[512];
} coord;

/* One link of the agent to one coordinator. */
typedef struct {
    nng_socket sub, push;
    pthread_t thread;
} link_;

static struct {
    th_redis redis;
    char *dir;
    coord c[N_COORD];
    link_ l[N_COORD];
    atomic_bool stop;
    pthread_t hb;
    pthread_mutex_t mu;
    atomic_bool mute[N_COORD]; /* do not answer this coordinator's interrupts */
    uint64_t seen_term[MAX_IDS], seen_id[MAX_IDS];
    size_t n_seen;
    atomic_uint_fast64_t max_term;
} w;

/* ------------------------------------------------------------ coordinators ---- */

static void coord_start(int i)
{
    coord *c = &w.c[i];
    char *argv[] = {(char *)th_bin("ihc-coordinator"),
                    "--pub",
                    c->pub,
                    "--report",
                    c->report,
                    "--control",
                    c->control,
                    "--http",
                    c->http_addr,
                    "--redis",
                    w.redis.url,
                    NULL};
    char idenv[64];
    snprintf(idenv, sizeof(idenv), "IHC_COORDINATOR_ID=%s", c->id);
    char *env[] = {idenv,
                   "IHC_LEASE_TTL=1",
                   "IHC_AGENT_TTL=3",
                   "IHC_HEARTBEAT_INTERVAL=0.2",
                   "INTERRUPT_TIMEOUT=3",
                   "IHC_REDIS_TIMEOUT_MS=150",
                   "IHC_LOG_LEVEL=debug",
                   NULL};
    c->pid = th_spawn(argv, c->log, env);
    assert_true(c->pid > 0);
    if (!TH_WAIT(th_http(c->http, "GET", "/healthz", NULL, NULL, NULL) == 200, 10000)) {
        th_log_tail(c->log, 30);
        fail_msg("%s did not answer GET /healthz", c->id);
    }
}

static json_t *http_json(int i, const char *method, const char *path, const char *body, int *st)
{
    char *resp = NULL;
    *st = th_http(w.c[i].http, method, path, body ? "Content-Type: application/json\r\n" : NULL,
                  body, &resp);
    json_t *j = resp ? json_loads(resp, 0, NULL) : NULL;
    free(resp);
    return j;
}

static json_t *health(int i)
{
    int st;
    json_t *j = http_json(i, "GET", "/healthz", NULL, &st);
    if (st != 200) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* /healthz of coordinator i says role, with leader (NULL: any). */
static bool role_is(int i, const char *role, const char *leader)
{
    json_t *h = health(i);
    const char *r = json_string_value(json_object_get(h, "role"));
    const char *l = json_string_value(json_object_get(h, "leader"));
    bool ok = r && strcmp(r, role) == 0 && (!leader || (l && strcmp(l, leader) == 0));
    json_decref(h);
    return ok;
}

static json_int_t term_of(int i)
{
    json_t *h = health(i);
    json_int_t t = json_integer_value(json_object_get(h, "term"));
    json_decref(h);
    return t;
}

/* An interrupt over the control socket: status, and the body parsed. */
static json_t *interrupt(int i, const char *hw, int64_t timeout_ms, int *status)
{
    char *body = NULL;
    *status = th_control(w.c[i].control, "interrupt", hw, "ha test", timeout_ms, &body);
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    return j;
}

/* One command to Redis (hiredis format); the reply as text, caller frees. */
#define redis(...) th_redis_cmd(&w.redis, __VA_ARGS__)

static bool redis_is(const char *want, const char *fmt, const char *arg)
{
    char *r = th_redis_cmd(&w.redis, fmt, arg);
    bool ok = r && strcmp(r, want) == 0;
    free(r);
    return ok;
}

/* ------------------------------------------------------------------ agent ---- */

static void send_on(int i, const ihc_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    TH_PASS(ihc_wire_encode(m, NULL, &buf, &len));
    nng_send(w.l[i].push, buf, len, 0);
    free(buf);
}

static void hello(int i)
{
    ihc_session_info ss = {.session_id = "s-1", .hw = "dev-1", .epoch = 0};
    ihc_msg m = {.type = IHC_MSG_HELLO};
    m.u.hello.agent = AGENT;
    m.u.hello.node = "hanode";
    m.u.hello.pid = 1;
    m.u.hello.started_ms = 1;
    m.u.hello.sessions = &ss;
    m.u.hello.n_sessions = 1;
    send_on(i, &m);
}

/* Acts once per (term, id); reports to the coordinator that sent it. */
static void on_interrupt(int i, const ihc_interrupt_msg *in)
{
    if (atomic_load(&w.mute[i]))
        return;
    pthread_mutex_lock(&w.mu);
    bool again = false;
    for (size_t k = 0; k < w.n_seen; k++)
        again |= w.seen_id[k] == in->id && w.seen_term[k] == in->term;
    if (!again && w.n_seen < MAX_IDS) {
        w.seen_id[w.n_seen] = in->id;
        w.seen_term[w.n_seen++] = in->term;
    }
    if (in->term > atomic_load(&w.max_term))
        atomic_store(&w.max_term, in->term);
    pthread_mutex_unlock(&w.mu);
    ihc_msg r = {.type = IHC_MSG_REPORT};
    r.u.report.id = in->id;
    r.u.report.agent = AGENT;
    r.u.report.hw = in->hw;
    r.u.report.time_ms = 0.1;
    r.u.report.term = in->term;
    send_on(i, &r);
}

static void *link_main(void *arg)
{
    int i = (int)(intptr_t)arg;
    while (!atomic_load(&w.stop)) {
        nng_msg *nm = NULL;
        if (nng_recvmsg(w.l[i].sub, &nm, 0) != 0)
            continue;
        const char *topic;
        size_t tlen, blen;
        const uint8_t *body;
        ihc_msg *m = NULL;
        if (ihc_wire_split(nng_msg_body(nm), nng_msg_len(nm), &topic, &tlen, &body, &blen) ==
                IHC_OK &&
            ihc_wire_decode(body, blen, NULL, &m, NULL, 0) == IHC_OK &&
            m->type == IHC_MSG_INTERRUPT)
            on_interrupt(i, &m->u.interrupt);
        ihc_msg_free(m);
        nng_msg_free(nm);
    }
    return NULL;
}

static void *heartbeat_main(void *arg)
{
    (void)arg;
    char *hws[] = {"dev-1"};
    while (!atomic_load(&w.stop)) {
        for (int i = 0; i < N_COORD; i++) {
            ihc_msg m = {.type = IHC_MSG_HEARTBEAT};
            m.u.heartbeat.agent = AGENT;
            m.u.heartbeat.n_sessions = 1;
            m.u.heartbeat.hws = hws;
            m.u.heartbeat.n_hws = 1;
            send_on(i, &m);
        }
        th_sleep_ms_(200);
    }
    return NULL;
}

/* The agent is in coordinator i's registry, connected, holding s-1. */
static bool agent_known(int i)
{
    int st;
    json_t *j = http_json(i, "GET", "/v1/sessions?hardware_id=dev-1", NULL, &st);
    bool ok = st == 200 && json_integer_value(json_object_get(j, "count")) == 1;
    json_decref(j);
    return ok;
}

static void agent_start(void)
{
    pthread_mutex_init(&w.mu, NULL);
    char topic[IHC_TOPIC_MAX];
    size_t tl = ihc_wire_topic_agent(topic, sizeof(topic), AGENT);
    for (int i = 0; i < N_COORD; i++) {
        link_ *l = &w.l[i];
        assert_int_equal(nng_sub0_open(&l->sub), 0);
        assert_int_equal(nng_push0_open(&l->push), 0);
        nng_socket_set(l->sub, NNG_OPT_SUB_SUBSCRIBE, "hw:dev-1", 9);
        nng_socket_set(l->sub, NNG_OPT_SUB_SUBSCRIBE, topic, tl);
        nng_socket_set_ms(l->sub, NNG_OPT_RECVTIMEO, 50);
        nng_socket_set_ms(l->sub, NNG_OPT_RECONNMINT, 20);
        nng_socket_set_ms(l->sub, NNG_OPT_RECONNMAXT, 100);
        nng_socket_set_ms(l->push, NNG_OPT_RECONNMINT, 20);
        nng_socket_set_ms(l->push, NNG_OPT_RECONNMAXT, 100);
        nng_socket_set_ms(l->push, NNG_OPT_SENDTIMEO, 200);
        assert_int_equal(nng_dial(l->sub, w.c[i].pub, NULL, NNG_FLAG_NONBLOCK), 0);
        assert_int_equal(nng_dial(l->push, w.c[i].report, NULL, NNG_FLAG_NONBLOCK), 0);
        assert_int_equal(pthread_create(&l->thread, NULL, link_main, (void *)(intptr_t)i), 0);
    }
    assert_int_equal(pthread_create(&w.hb, NULL, heartbeat_main, NULL), 0);
    for (int i = 0; i < N_COORD; i++) {
        bool known = false;
        for (int k = 0; k < 100 && !known; k++) {
            hello(i);
            known = TH_WAIT(agent_known(i), 100);
        }
        assert_true(known);
    }
}

static void agent_stop(void)
{
    atomic_store(&w.stop, true);
    pthread_join(w.hb, NULL);
    for (int i = 0; i < N_COORD; i++) {
        pthread_join(w.l[i].thread, NULL);
        nng_close(w.l[i].sub);
        nng_close(w.l[i].push);
    }
    pthread_mutex_destroy(&w.mu);
}

/* ------------------------------------------------------------------ cases ---- */

/* Coordinator i has written everything it queued for Redis. */
static bool written(int i)
{
    int st;
    json_t *j = http_json(i, "GET", "/v1/stats", NULL, &st);
    bool ok = st == 200 && json_integer_value(json_object_get(j, "persist_backlog")) == 0;
    json_decref(j);
    return ok;
}

static json_int_t last_id, last_epoch;

/* A successful interrupt of dev-1 on coordinator i; ids and epochs only grow. */
static void interrupt_ok(int i)
{
    int st;
    json_t *j = interrupt(i, "dev-1", 2000, &st);
    if (st != 200 || !json_is_true(json_object_get(j, "success"))) {
        char *s = j ? json_dumps(j, 0) : NULL;
        fail_msg("interrupt on %s: %d %s", w.c[i].id, st, s ? s : "");
    }
    json_int_t id = json_integer_value(json_object_get(j, "interrupt_id"));
    json_int_t ep = json_integer_value(json_object_get(j, "epoch"));
    assert_true(id > last_id);
    assert_true(ep > last_epoch);
    last_id = id;
    last_epoch = ep;
    json_decref(j);
}

/* The standby refuses every write with 503 and the leader's addresses. */
static void check_refused(json_t *j, int st, int leader)
{
    char *s = j ? json_dumps(j, 0) : NULL;
    if (st != 503)
        fail_msg("standby answered %d %s", st, s ? s : "");
    assert_string_equal(json_string_value(json_object_get(j, "code")), "IHC_ENOTLEADER");
    assert_string_equal(json_string_value(json_object_get(j, "leader")), w.c[leader].id);
    assert_string_equal(json_string_value(json_object_get(j, "leader_control")),
                        w.c[leader].control);
    char http[80];
    snprintf(http, sizeof(http), "http://%s", w.c[leader].http_addr);
    assert_string_equal(json_string_value(json_object_get(j, "leader_http")), http);
    free(s);
    json_decref(j);
}

static void test_ha_roles(void **state)
{
    (void)state;
    assert_true(TH_WAIT(role_is(0, "leader", "coord-0"), 5000));
    assert_true(TH_WAIT(role_is(1, "standby", "coord-0"), 5000));
    assert_int_equal(term_of(0), 1);
    assert_int_equal(term_of(1), 1);
    int st;
    json_t *j = http_json(1, "POST", "/v1/interrupt", "{\"hardware_id\":\"dev-1\"}", &st);
    check_refused(j, st, 0);
    j = interrupt(1, "dev-1", 1000, &st);
    check_refused(j, st, 0);
    j = http_json(1, "POST", "/v1/flags/reset", NULL, &st);
    check_refused(j, st, 0);
    /* the standby's reads are its warm registry */
    assert_true(agent_known(1));
    for (int k = 0; k < 3; k++)
        interrupt_ok(0);
    assert_int_equal(atomic_load(&w.max_term), 1); /* interrupts carry the term */
    char *v = redis("GET ihc:leader");
    assert_string_equal(v, "coord-0");
    free(v);

    /* ihc:requests reaches both coordinators; the leader alone acts on it */
    assert_true(TH_WAIT(written(0), 5000));
    v = redis("XLEN ihc:interrupts");
    long before = v ? strtol(v, NULL, 10) : -1;
    free(v);
    pthread_mutex_lock(&w.mu);
    size_t seen = w.n_seen;
    pthread_mutex_unlock(&w.mu);
    /* both subscribed, then one message */
    assert_true(TH_WAIT((v = redis("PUBSUB NUMSUB ihc:requests")) && strstr(v, "\n2")
                            ? (free(v), true)
                            : (free(v), false),
                        5000));
    v = redis("PUBLISH ihc:requests %s", "{\"hardware_id\":\"dev-2\"}");
    assert_string_equal(v, "2");
    free(v);
    assert_true(TH_WAIT((v = redis("XLEN ihc:interrupts")) && strtol(v, NULL, 10) == before + 1
                            ? (free(v), true)
                            : (free(v), false),
                        5000));
    assert_true(TH_WAIT(written(0), 5000));
    th_sleep_ms_(300);
    v = redis("XREVRANGE ihc:interrupts + - COUNT 1");
    assert_non_null(strstr(v, "dev-2"));
    free(v);
    v = redis("XLEN ihc:interrupts");
    long after = v ? strtol(v, NULL, 10) : -1;
    free(v);
    assert_int_equal(after, before + 1); /* once, by the leader */
    pthread_mutex_lock(&w.mu);
    assert_int_equal(w.n_seen, seen); /* dev-2: the agent holds none, nobody expected */
    pthread_mutex_unlock(&w.mu);
    assert_false(th_log_has(w.c[1].log, "hw=dev-2", 0)); /* the standby did nothing */
}

static void test_ha_failover(void **state)
{
    (void)state;
    interrupt_ok(0);
    uint64_t t0 = th_now_ms_();
    assert_int_equal(kill(w.c[0].pid, SIGKILL), 0);
    waitpid(w.c[0].pid, NULL, 0);
    w.c[0].pid = 0;
    /* requests meanwhile are refused fast (503), none hangs */
    int refused = 0, tries = 0;
    bool ok = false;
    while (!ok && th_now_ms_() - t0 < 6000) {
        int st;
        uint64_t q0 = th_now_ms_();
        json_t *j = interrupt(1, "dev-1", 2000, &st);
        assert_true(th_now_ms_() - q0 < 1500);
        tries++;
        ok = st == 200 && json_is_true(json_object_get(j, "success"));
        if (ok) {
            json_int_t id = json_integer_value(json_object_get(j, "interrupt_id"));
            json_int_t ep = json_integer_value(json_object_get(j, "epoch"));
            assert_true(id > last_id);
            assert_true(ep > last_epoch);
            last_id = id;
            last_epoch = ep;
        } else {
            assert_int_equal(st, 503);
            refused++;
            th_sleep_ms_(20);
        }
        json_decref(j);
    }
    uint64_t took = th_now_ms_() - t0;
    fprintf(stderr,
            "failover: first success %llu ms after SIGKILL of the leader "
            "(IHC_LEASE_TTL=1; %d requests refused with 503 meanwhile)\n",
            (unsigned long long)took, refused);
    assert_true(ok);
    assert_true(took <= 2000);
    assert_true(role_is(1, "leader", "coord-1"));
    assert_int_equal(term_of(1), 2);
    assert_true(atomic_load(&w.max_term) == 2);
    assert_true(redis_is("2", "GET %s", "ihc:term"));
    for (int k = 0; k < 3; k++)
        interrupt_ok(1);

    /* the old leader comes back as a standby of the new one */
    coord_start(0);
    assert_true(TH_WAIT(role_is(0, "standby", "coord-1"), 5000));
    bool known = false;
    for (int k = 0; k < 50 && !known; k++) {
        hello(0);
        known = TH_WAIT(agent_known(0), 100);
    }
    assert_true(known);
}

static void *paused_request(void *arg)
{
    int *st = arg;
    json_t *j = interrupt(1, "dev-1", 3000, st);
    json_decref(j);
    return NULL;
}

/* A leader paused past its lease: the standby takes over; when it wakes, the interrupt it
 * had in flight is answered (unsuccessfully) and nothing of it reaches Redis. */
static void test_ha_paused_leader(void **state)
{
    (void)state;
    atomic_store(&w.mute[1], true);
    char *x = redis("XLEN ihc:interrupts");
    long before = x ? strtol(x, NULL, 10) : -1;
    free(x);
    int st = 0;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, paused_request, &st), 0);
    th_sleep_ms_(200); /* the interrupt is in flight on coord-1 */
    assert_int_equal(kill(w.c[1].pid, SIGSTOP), 0);
    uint64_t t0 = th_now_ms_();
    assert_true(TH_WAIT(role_is(0, "leader", "coord-0"), 5000));
    fprintf(stderr, "paused leader replaced after %llu ms\n",
            (unsigned long long)(th_now_ms_() - t0));
    assert_int_equal(term_of(0), 3);
    atomic_store(&w.mute[1], false);
    interrupt_ok(0);
    long with_new = before + 1;
    assert_true(TH_WAIT((x = redis("XLEN ihc:interrupts")) && strtol(x, NULL, 10) == with_new
                            ? (free(x), true)
                            : (free(x), false),
                        5000));
    assert_int_equal(kill(w.c[1].pid, SIGCONT), 0);
    pthread_join(th, NULL);
    assert_int_not_equal(st, -1); /* answered, not hung */
    assert_true(TH_WAIT(role_is(1, "standby", "coord-0"), 5000));
    assert_true(TH_WAIT(th_log_has(w.c[1].log, "not leading any more", 0), 5000));
    /* its late writes never landed: the log has coord-0's entries only */
    th_sleep_ms_(500);
    x = redis("XLEN ihc:interrupts");
    long after = x ? strtol(x, NULL, 10) : -1;
    free(x);
    fprintf(stderr, "interrupt log: %ld before the pause, %ld with coord-0's, %ld after\n", before,
            with_new, after);
    assert_int_equal(after, with_new);
    assert_true(redis_is("3", "GET %s", "ihc:term"));
    assert_true(redis_is("coord-0", "GET %s", "ihc:leader"));
    assert_true(redis_is("coord-0", "HGET %s id", "ihc:leader:info"));
    interrupt_ok(0);
}

/* Redis stalled (SIGSTOP) while a batch is on its way: the writer times out and sends it
 * again; Redis runs both: nothing is duplicated. Then no id ever repeats in the log. */
static void test_ha_repeated_batch(void **state)
{
    (void)state;
    assert_true(TH_WAIT(written(0), 5000)); /* the earlier cases' entries are in */
    size_t log_from = th_file_size(w.c[0].log);
    free(redis("CONFIG RESETSTAT"));
    char *x = redis("XLEN ihc:interrupts");
    long before = x ? strtol(x, NULL, 10) : -1;
    free(x);
    assert_int_equal(kill(w.redis.pid, SIGSTOP), 0);
    interrupt_ok(0);
    interrupt_ok(0);
    th_sleep_ms_(300); /* past IHC_REDIS_TIMEOUT_MS: the writer gave up on its batch */
    assert_int_equal(kill(w.redis.pid, SIGCONT), 0);
    assert_true(TH_WAIT((x = redis("XLEN ihc:interrupts")) && strtol(x, NULL, 10) >= before + 2
                            ? (free(x), true)
                            : (free(x), false),
                        5000));
    th_sleep_ms_(500);
    x = redis("XLEN ihc:interrupts");
    long after = x ? strtol(x, NULL, 10) : -1;
    free(x);
    x = redis("INFO commandstats");
    const char *sb = x ? strstr(x, "cmdstat_setbit:calls=") : NULL;
    const char *xa = x ? strstr(x, "cmdstat_xadd:calls=") : NULL;
    fprintf(stderr, "repeated batch: log entries marked %ld times, added %ld times\n",
            sb ? strtol(sb + 21, NULL, 10) : 0, xa ? strtol(xa + 19, NULL, 10) : 0);
    free(x);
    /* the writer did give up on a batch and send it again */
    assert_true(th_log_has(w.c[0].log, "persist redis unreachable", log_from));
    assert_int_equal(after, before + 2);
    x = redis("HGET ihc:stats total_interrupts");
    long total = x ? strtol(x, NULL, 10) : -1;
    free(x);
    assert_int_equal(total, after);
    /* every id in the log once */
    x = th_redis_cmd(&w.redis, "EVAL %s 1 %s",
                     "local seen, dup = {}, 0 "
                     "for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) do "
                     "  local f = e[2] local id "
                     "  for k = 1, #f, 2 do if f[k] == 'id' then id = f[k + 1] end end "
                     "  if seen[id] then dup = dup + 1 end seen[id] = true "
                     "end return dup",
                     "ihc:interrupts");
    assert_non_null(x);
    assert_string_equal(x, "0");
    free(x);
    assert_true(role_is(0, "leader", "coord-0")); /* the stall was shorter than the lease */
}

/* ---------------------------------------------------------------- fixture ---- */

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    memset(&w, 0, sizeof(w));
    w.dir = th_tmpdir("ha");
    if (!w.dir || th_redis_start(&w.redis) != 0)
        return -1;
    for (int i = 0; i < N_COORD; i++) {
        coord *c = &w.c[i];
        snprintf(c->id, sizeof(c->id), "coord-%d", i);
        snprintf(c->pub, sizeof(c->pub), "tcp://127.0.0.1:%d", th_free_port());
        snprintf(c->report, sizeof(c->report), "tcp://127.0.0.1:%d", th_free_port());
        snprintf(c->control, sizeof(c->control), "tcp://127.0.0.1:%d", th_free_port());
        c->http = th_free_port();
        snprintf(c->http_addr, sizeof(c->http_addr), "127.0.0.1:%d", c->http);
        snprintf(c->log, sizeof(c->log), "%s/%s.log", w.dir, c->id);
    }
    coord_start(0);
    if (!TH_WAIT(role_is(0, "leader", "coord-0"), 5000))
        return -1;
    coord_start(1);
    agent_start();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    agent_stop();
    int rc = 0;
    for (int i = 0; i < N_COORD; i++) {
        if (w.c[i].pid <= 0)
            continue;
        kill(w.c[i].pid, SIGCONT);
        int st = th_stop(w.c[i].pid, SIGTERM, 10000);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            th_log_tail(w.c[i].log, 30);
            fprintf(stderr, "%s exit status %d\n", w.c[i].id, st);
            rc = -1;
        }
    }
    if (w.redis.pid > 0)
        kill(w.redis.pid, SIGCONT);
    th_redis_stop(&w.redis);
    th_tmpdir_remove(w.dir);
    free(w.dir);
    return rc;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ha_roles),
        cmocka_unit_test(test_ha_failover),
        cmocka_unit_test(test_ha_paused_leader),
        cmocka_unit_test(test_ha_repeated_batch),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
