/* Integration tests of ihc-coordinator: a real redis-server, a real coordinator process on
 * free ports, fake agents inside the test (SUB + PUSH speaking the wire protocol) and
 * control requests over nng REQ. Checks results, re-sends, deadlines, the Redis layout,
 * Redis outages, restarts, flags, the ihc:requests channel and concurrency. */
#include "harness.h"

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/sub.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "sockaddr.h"
#include "wire.h"

/* ------------------------------------------------------------ coordinator ---- */

typedef struct {
    pid_t pid;
    char pub[64], report[64], control[64], http[64];
    char *dir; /* state dir and log */
    char log[4200];
    const char *redis_url;
    char *env[8];
    size_t n_env;
} coord;

static th_redis g_redis;

static void coord_init(coord *c, const char *redis_url)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->pub, sizeof(c->pub), "tcp://127.0.0.1:%d", th_free_port());
    snprintf(c->report, sizeof(c->report), "tcp://127.0.0.1:%d", th_free_port());
    snprintf(c->control, sizeof(c->control), "tcp://127.0.0.1:%d", th_free_port());
    snprintf(c->http, sizeof(c->http), "127.0.0.1:%d", th_free_port());
    c->dir = th_tmpdir("coord");
    assert_non_null(c->dir);
    snprintf(c->log, sizeof(c->log), "%s/coordinator.log", c->dir);
    c->redis_url = redis_url;
}

static void coord_env(coord *c, const char *kv)
{
    assert_true(c->n_env + 1 < sizeof(c->env) / sizeof(c->env[0]));
    c->env[c->n_env++] = (char *)kv;
    c->env[c->n_env] = NULL;
}

/* Control request; returns the status (or -1 when unreachable) and the parsed body. */
static int ctl_call(const char *url, const char *op, const char *hw, const char *reason,
                    int64_t timeout_ms, json_t **out)
{
    if (out)
        *out = NULL;
    nng_socket s;
    if (nng_req0_open(&s) != 0)
        return -1;
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 20000);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 2000);
    int status = -1;
    uint8_t *buf = NULL;
    size_t len = 0;
    ihc_msg m = {.type = IHC_MSG_CONTROL_REQUEST};
    m.u.control_request.op = (char *)op;
    m.u.control_request.hw = (char *)hw;
    m.u.control_request.reason = (char *)reason;
    m.u.control_request.timeout_ms = timeout_ms;
    if (nng_dial(s, url, NULL, 0) != 0 || ihc_wire_encode(&m, NULL, &buf, &len) != IHC_OK ||
        nng_send(s, buf, len, 0) != 0)
        goto out;
    nng_msg *rep = NULL;
    if (nng_recvmsg(s, &rep, 0) != 0)
        goto out;
    ihc_msg *r = NULL;
    if (ihc_wire_decode(nng_msg_body(rep), nng_msg_len(rep), NULL, &r, NULL, 0) == IHC_OK &&
        r->type == IHC_MSG_CONTROL_RESPONSE) {
        status = r->u.control_response.status;
        if (out)
            *out = json_loads(r->u.control_response.json, JSON_DECODE_ANY, NULL);
    }
    ihc_msg_free(r);
    nng_msg_free(rep);
out:
    free(buf);
    nng_close(s);
    return status;
}

/* Starts the coordinator; without c->redis_url it takes IHC_REDIS_URL from its env. */
static void coord_start(coord *c)
{
    char *argv[] = {(char *)th_bin("ihc-coordinator"),
                    "--pub",
                    c->pub,
                    "--report",
                    c->report,
                    "--control",
                    c->control,
                    "--http",
                    c->http,
                    "--state-dir",
                    c->dir,
                    "--agent-ttl",
                    "3",
                    "--heartbeat",
                    "0.5",
                    "--log-level",
                    "debug",
                    c->redis_url ? "--redis" : NULL,
                    (char *)c->redis_url,
                    NULL};
    c->pid = th_spawn(argv, c->log, c->env);
    assert_true(c->pid > 0);
    if (!TH_WAIT(ctl_call(c->control, "stats", NULL, NULL, 0, NULL) == 200, 10000)) {
        th_log_tail(c->log, 30);
        fail_msg("coordinator did not answer on %s (log %s)", c->control, c->log);
    }
}

/* True when the log holds a sanitizer report (ASan, UBSan, LSan builds). */
static bool log_has_sanitizer_report(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof(line), fp))
        found = strstr(line, "Sanitizer") || strstr(line, "runtime error:");
    fclose(fp);
    return found;
}

/* SIGTERM; returns the exit status (or -1). Fails on a sanitizer report in the log. */
static int coord_stop(coord *c)
{
    if (c->pid <= 0)
        return -1;
    int st = th_stop(c->pid, SIGTERM, 10000);
    c->pid = 0;
    if (log_has_sanitizer_report(c->log)) {
        th_log_tail(c->log, 60);
        fail_msg("sanitizer report in %s", c->log);
    }
    return (st >= 0 && WIFEXITED(st)) ? WEXITSTATUS(st) : -1;
}

/* Stops the coordinator (SIGTERM) if running and removes its directory; false when it
 * did not exit cleanly or its log holds a sanitizer report. */
static bool coord_fini(coord *c)
{
    bool clean = true;
    if (c->pid > 0) {
        int st = th_stop(c->pid, SIGTERM, 10000);
        if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            fprintf(stderr, "coordinator did not exit cleanly (status %d), log %s\n", st, c->log);
            clean = false;
        }
    }
    if (c->dir && log_has_sanitizer_report(c->log)) {
        fprintf(stderr, "sanitizer report in %s\n", c->log);
        clean = false;
    }
    th_tmpdir_remove(c->dir);
    free(c->dir);
    memset(c, 0, sizeof(*c));
    return clean;
}

static json_t *must_call(coord *c, const char *op, const char *hw)
{
    json_t *j = NULL;
    int st = ctl_call(c->control, op, hw, NULL, 0, &j);
    if (st != 200 || !j)
        fail_msg("%s: status %d", op, st);
    return j;
}

static json_int_t stat_of(coord *c, const char *name)
{
    json_t *j = must_call(c, "stats", NULL);
    json_int_t v = json_integer_value(json_object_get(j, name));
    json_decref(j);
    return v;
}

static size_t session_count(coord *c, const char *hw)
{
    json_t *j = NULL;
    if (ctl_call(c->control, "sessions", hw, NULL, 0, &j) != 200) {
        json_decref(j);
        return (size_t)-1;
    }
    size_t n = (size_t)json_integer_value(json_object_get(j, "count"));
    json_decref(j);
    return n;
}

/* ------------------------------------------------------------ fake agent ---- */

#define FA_MAX_SESSIONS 16

typedef struct {
    char id[64];
    nng_socket sub, push;
    pthread_t thread;
    bool running;
    atomic_bool stop;
    atomic_bool mute;   /* receives but never answers */
    atomic_bool keep;   /* sessions begin again right after each interrupt */
    atomic_int ignore;  /* broadcasts to drop before answering */
    atomic_int seen;    /* interrupt broadcasts meant for us */
    atomic_int reports; /* interrupts handled (repeated reports not counted) */
    atomic_int max_attempt;
    atomic_int syncs;
    atomic_int got;        /* interrupt messages received, whatever their topic */
    atomic_int got_direct; /* of which on this agent's own topic "ag:<id>" */
    atomic_int results;    /* results received (it subscribes to "ev:" to see them) */
    bool claim;            /* its hello names its SUB connection's endpoint, as agents do */
    char sub_addr[IHC_SOCKADDR_STR_MAX];
    pthread_mutex_t mu;
    char sid[FA_MAX_SESSIONS][32], hw[FA_MAX_SESSIONS][32];
    int n;
    uint64_t handled[256];
    int n_handled;
} fake_agent;

static void fa_send(fake_agent *a, const ihc_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    TH_PASS(ihc_wire_encode(m, NULL, &buf, &len));
    nng_send(a->push, buf, len, 0);
    free(buf);
}

static void fa_begin(fake_agent *a, const char *sid, const char *hw);

static bool fa_holds(fake_agent *a, const char *hw)
{
    for (int i = 0; i < a->n; i++)
        if (strcmp(hw, "*") == 0 || strcmp(a->hw[i], hw) == 0)
            return true;
    return false;
}

static void fa_on_interrupt(fake_agent *a, const ihc_interrupt_msg *in)
{
    bool listed = false;
    for (size_t i = 0; i < in->n_agents; i++)
        listed |= strcmp(in->agents[i], a->id) == 0;
    pthread_mutex_lock(&a->mu);
    bool relevant = in->n_agents ? listed : fa_holds(a, in->hw);
    if (!relevant) {
        pthread_mutex_unlock(&a->mu);
        return;
    }
    atomic_fetch_add(&a->seen, 1);
    if ((int)in->attempt > atomic_load(&a->max_attempt))
        atomic_store(&a->max_attempt, (int)in->attempt);
    if (atomic_load(&a->mute) || atomic_load(&a->ignore) > 0) {
        if (!atomic_load(&a->mute))
            atomic_fetch_sub(&a->ignore, 1);
        pthread_mutex_unlock(&a->mu);
        return;
    }
    bool again = false;
    for (int i = 0; i < a->n_handled; i++)
        again |= a->handled[i] == in->id;
    char *sessions[FA_MAX_SESSIONS];
    size_t n_s = 0;
    if (!again) {
        if (a->n_handled < 256)
            a->handled[a->n_handled++] = in->id;
        /* cancel and clean up the sessions of hw (all of them for "*") */
        for (int i = 0; i < a->n;) {
            if (strcmp(in->hw, "*") == 0 || strcmp(a->hw[i], in->hw) == 0) {
                sessions[n_s++] = strdup(a->sid[i]);
                a->n--;
                memcpy(a->sid[i], a->sid[a->n], sizeof(a->sid[i]));
                memcpy(a->hw[i], a->hw[a->n], sizeof(a->hw[i]));
            } else {
                i++;
            }
        }
    }
    pthread_mutex_unlock(&a->mu);
    ihc_module_result mods[] = {{.name = "text_processing", .status = IHC_MOD_OK, .time_ms = 0.1},
                                {.name = "audio_generation", .status = IHC_MOD_OK, .time_ms = 0.2}};
    ihc_msg r = {.type = IHC_MSG_REPORT};
    r.u.report.id = in->id;
    r.u.report.agent = a->id;
    r.u.report.hw = in->hw;
    r.u.report.modules = mods;
    r.u.report.n_modules = 2;
    r.u.report.sessions = sessions;
    r.u.report.n_sessions = n_s;
    r.u.report.time_ms = 0.3;
    if (!again) /* before sending: the result may come back first */
        atomic_fetch_add(&a->reports, 1);
    fa_send(a, &r);
    for (size_t i = 0; i < n_s; i++) {
        if (atomic_load(&a->keep))
            fa_begin(a, sessions[i], in->hw);
        free(sessions[i]);
    }
}

static void *fa_main(void *arg)
{
    fake_agent *a = arg;
    while (!atomic_load(&a->stop)) {
        nng_msg *nm = NULL;
        if (nng_recvmsg(a->sub, &nm, 0) != 0)
            continue;
        const char *topic;
        size_t tlen, blen;
        const uint8_t *body;
        ihc_msg *m = NULL;
        if (ihc_wire_split(nng_msg_body(nm), nng_msg_len(nm), &topic, &tlen, &body, &blen) ==
                IHC_OK &&
            ihc_wire_decode(body, blen, NULL, &m, NULL, 0) == IHC_OK) {
            if (m->type == IHC_MSG_INTERRUPT) {
                atomic_fetch_add(&a->got, 1);
                if (tlen >= 3 && memcmp(topic, "ag:", 3) == 0)
                    atomic_fetch_add(&a->got_direct, 1);
                fa_on_interrupt(a, &m->u.interrupt);
            } else if (m->type == IHC_MSG_RESULT)
                atomic_fetch_add(&a->results, 1);
            else if (m->type == IHC_MSG_SYNC && strcmp(m->u.sync.agent, a->id) == 0)
                atomic_fetch_add(&a->syncs, 1);
        }
        ihc_msg_free(m);
        nng_msg_free(nm);
    }
    return NULL;
}

static void fa_hello(fake_agent *a)
{
    char *methods[] = {"stop"};
    ihc_module_info mods[] = {{.name = "text_processing",
                               .methods = methods,
                               .n_methods = 1,
                               .timeout_ms = 500,
                               .enabled = true},
                              {.name = "audio_generation",
                               .methods = methods,
                               .n_methods = 1,
                               .timeout_ms = 500,
                               .enabled = true}};
    ihc_session_info ss[FA_MAX_SESSIONS];
    pthread_mutex_lock(&a->mu);
    for (int i = 0; i < a->n; i++)
        ss[i] = (ihc_session_info){.session_id = a->sid[i], .hw = a->hw[i]};
    ihc_msg m = {.type = IHC_MSG_HELLO};
    m.u.hello.agent = a->id;
    m.u.hello.node = "testnode";
    m.u.hello.pid = 4242;
    m.u.hello.started_ms = 1;
    m.u.hello.modules = mods;
    m.u.hello.n_modules = 2;
    m.u.hello.sessions = ss;
    m.u.hello.n_sessions = (size_t)a->n;
    char *addr = a->sub_addr;
    if (a->claim && a->sub_addr[0]) {
        m.u.hello.sub_addrs = &addr;
        m.u.hello.n_sub_addrs = 1;
    }
    fa_send(a, &m);
    pthread_mutex_unlock(&a->mu);
}

/* Connects and says hello until the coordinator's sync arrives (slow joiner safe). */
static void fa_connect(fake_agent *a)
{
    int before = atomic_load(&a->syncs);
    for (int i = 0; i < 100 && atomic_load(&a->syncs) == before; i++) {
        fa_hello(a);
        TH_WAIT(atomic_load(&a->syncs) > before, 100);
    }
    assert_true(atomic_load(&a->syncs) > before);
}

static void fa_on_sub_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    fake_agent *a = arg;
    pthread_mutex_lock(&a->mu);
    if (ev == NNG_PIPE_EV_ADD_POST)
        ihc_pipe_addr_str(p, true, a->sub_addr, sizeof(a->sub_addr));
    pthread_mutex_unlock(&a->mu);
}

static void fa_start_claiming(fake_agent *a, const char *id, coord *c, bool claim);

static void fa_start(fake_agent *a, const char *id, coord *c)
{
    fa_start_claiming(a, id, c, false);
}

static void fa_start_claiming(fake_agent *a, const char *id, coord *c, bool claim)
{
    memset(a, 0, sizeof(*a));
    a->claim = claim;
    snprintf(a->id, sizeof(a->id), "%s", id);
    pthread_mutex_init(&a->mu, NULL);
    assert_int_equal(nng_sub0_open(&a->sub), 0);
    assert_int_equal(nng_push0_open(&a->push), 0);
    char topic[IHC_TOPIC_MAX];
    size_t tl = ihc_wire_topic_agent(topic, sizeof(topic), id);
    assert_true(tl > 0);
    nng_socket_set(a->sub, NNG_OPT_SUB_SUBSCRIBE, "hw:", 3);
    nng_socket_set(a->sub, NNG_OPT_SUB_SUBSCRIBE, topic, tl);
    nng_socket_set(a->sub, NNG_OPT_SUB_SUBSCRIBE, IHC_TOPIC_EVENTS, sizeof IHC_TOPIC_EVENTS);
    nng_pipe_notify(a->sub, NNG_PIPE_EV_ADD_POST, fa_on_sub_pipe, a);
    nng_socket_set_ms(a->sub, NNG_OPT_RECVTIMEO, 50);
    nng_socket_set_ms(a->sub, NNG_OPT_RECONNMINT, 20);
    nng_socket_set_ms(a->sub, NNG_OPT_RECONNMAXT, 100);
    nng_socket_set_ms(a->push, NNG_OPT_RECONNMINT, 20);
    nng_socket_set_ms(a->push, NNG_OPT_RECONNMAXT, 100);
    nng_socket_set_ms(a->push, NNG_OPT_SENDTIMEO, 1000);
    assert_int_equal(nng_dial(a->sub, c->pub, NULL, NNG_FLAG_NONBLOCK), 0);
    assert_int_equal(nng_dial(a->push, c->report, NULL, NNG_FLAG_NONBLOCK), 0);
    assert_int_equal(pthread_create(&a->thread, NULL, fa_main, a), 0);
    a->running = true;
    fa_connect(a);
}

static void fa_begin(fake_agent *a, const char *sid, const char *hw)
{
    pthread_mutex_lock(&a->mu);
    assert_true(a->n < FA_MAX_SESSIONS);
    snprintf(a->sid[a->n], sizeof(a->sid[0]), "%s", sid);
    snprintf(a->hw[a->n], sizeof(a->hw[0]), "%s", hw);
    a->n++;
    pthread_mutex_unlock(&a->mu);
    ihc_msg m = {.type = IHC_MSG_SESSION_BEGIN};
    m.u.session_begin.agent = a->id;
    m.u.session_begin.session.session_id = (char *)sid;
    m.u.session_begin.session.hw = (char *)hw;
    m.u.session_begin.session.module = "text_processing";
    m.u.session_begin.session.data = "{\"k\":1}";
    fa_send(a, &m);
}

static void fa_stop(fake_agent *a)
{
    if (!a->running)
        return;
    atomic_store(&a->stop, true);
    pthread_join(a->thread, NULL);
    nng_close(a->sub);
    nng_close(a->push);
    pthread_mutex_destroy(&a->mu);
    a->running = false;
}

/* ------------------------------------------------------------ fixture ---- */

typedef struct {
    coord c;
    fake_agent a[3];
    th_redis own; /* a redis-server of the case's own */
} fixture;

static int group_setup(void **state)
{
    (void)state;
    memset(&g_redis, 0, sizeof(g_redis));
    return th_redis_start(&g_redis) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    th_redis_stop(&g_redis);
    return 0;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    if (g_redis.pid <= 0 && th_redis_start(&g_redis) != 0)
        return -1;
    char *ok = th_redis_cmd(&g_redis, "FLUSHALL");
    bool flushed = ok && strcmp(ok, "OK") == 0;
    free(ok);
    coord_init(&f->c, g_redis.url);
    *state = f;
    return flushed ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 3; i++)
        fa_stop(&f->a[i]);
    bool clean = coord_fini(&f->c);
    th_redis_stop(&f->own);
    free(f);
    return clean ? 0 : -1;
}

/* Redis reply contains needle. */
static bool redis_has(const char *needle, const char *fmt, const char *arg)
{
    char *r = th_redis_cmd(&g_redis, fmt, arg);
    bool ok = r && strstr(r, needle);
    free(r);
    return ok;
}

static bool redis_is(const char *want, const char *fmt, const char *arg)
{
    char *r = th_redis_cmd(&g_redis, fmt, arg);
    bool ok = r && strcmp(r, want) == 0;
    free(r);
    return ok;
}

static long redis_int(const char *fmt, const char *arg)
{
    char *r = th_redis_cmd(&g_redis, fmt, arg);
    long v = r ? strtol(r, NULL, 10) : -999;
    free(r);
    return v;
}

static const char *arr_join(json_t *arr)
{
    static char buf[1024];
    buf[0] = '\0';
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "", json_string_value(v));
    }
    return buf;
}

static json_t *interrupt(coord *c, const char *hw, int64_t timeout_ms, int want_status)
{
    json_t *j = NULL;
    int st = ctl_call(c->control, "interrupt", hw, "test stop", timeout_ms, &j);
    if (st != want_status)
        fail_msg("interrupt %s: status %d, want %d", hw, st, want_status);
    assert_non_null(j);
    return j;
}

/* ------------------------------------------------------------ cases ---- */

static void test_coordinator_interrupt_result(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    fa_start(&f->a[0], "n1:42", &f->c);
    fa_start(&f->a[1], "n2:43", &f->c);
    fa_begin(&f->a[0], "s-1", "dev-1");
    fa_begin(&f->a[1], "s-2", "dev-2");
    assert_true(TH_WAIT(session_count(&f->c, NULL) == 2, 5000));
    assert_true(TH_WAIT(redis_has("s-1", "SMEMBERS %s", "ihc:hw:{dev-1}:sessions"), 5000));

    json_t *ag = must_call(&f->c, "agents", NULL);
    assert_int_equal(json_integer_value(json_object_get(ag, "count")), 2);
    json_decref(ag);

    json_t *j = interrupt(&f->c, "dev-1", 2000, 200);
    assert_true(json_is_true(json_object_get(j, "success")));
    assert_true(json_integer_value(json_object_get(j, "interrupt_id")) > 0);
    assert_int_equal(json_integer_value(json_object_get(j, "epoch")), 1);
    assert_string_equal(json_string_value(json_object_get(j, "hardware_id")), "dev-1");
    assert_string_equal(arr_join(json_object_get(j, "interrupted_modules")),
                        "text_processing,audio_generation");
    assert_string_equal(arr_join(json_object_get(j, "cleaned_sessions")), "s-1");
    json_t *agents = json_object_get(j, "agents");
    assert_string_equal(arr_join(json_object_get(agents, "expected")), "n1:42");
    assert_string_equal(arr_join(json_object_get(agents, "answered")), "n1:42");
    assert_string_equal(arr_join(json_object_get(agents, "missing")), "");
    assert_true(json_real_value(json_object_get(j, "total_time_ms")) > 0.0);
    assert_true(json_is_true(json_object_get(j, "persisted")));
    assert_null(json_object_get(j, "error"));
    json_decref(j);
    /* only the agent holding dev-1 was asked */
    assert_int_equal(atomic_load(&f->a[1].seen), 0);
    assert_int_equal(atomic_load(&f->a[0].reports), 1);

    /* the DESIGN layout in Redis */
    assert_true(TH_WAIT(redis_int("XLEN %s", "ihc:interrupts") == 1, 5000));
    assert_true(redis_has("interrupted", "HGETALL %s", "ihc:session:{dev-1}:s-1"));
    assert_true(redis_has("n1:42", "HGETALL %s", "ihc:session:{dev-1}:s-1"));
    assert_true(redis_is("", "SMEMBERS %s", "ihc:hw:{dev-1}:sessions"));
    assert_true(redis_is("s-2", "SMEMBERS %s", "ihc:hw:{dev-2}:sessions"));
    assert_true(redis_is("1", "GET %s", "ihc:hw:{dev-1}:epoch"));
    assert_true(redis_has("dev-1", "HGETALL %s", "ihc:flags"));
    assert_true(redis_has("total_interrupts\n1", "HGETALL %s", "ihc:stats"));
    assert_true(redis_has("successful_interrupts\n1", "HGETALL %s", "ihc:stats"));
    assert_true(redis_has("sessions_created\n2", "HGETALL %s", "ihc:stats"));
    assert_true(redis_int("TTL %s", "ihc:agent:n1:42") > 0);
    assert_true(redis_has("testnode", "HGETALL %s", "ihc:agent:n1:42"));
    assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 0, 2000));
    assert_int_equal(session_count(&f->c, "dev-2"), 1);

    /* a hw nobody holds: nothing to stop, success at once */
    j = interrupt(&f->c, "dev-9", 2000, 200);
    assert_true(json_is_true(json_object_get(j, "success")));
    assert_int_equal(json_array_size(json_object_get(json_object_get(j, "agents"), "expected")), 0);
    json_decref(j);

    /* global: every live agent is expected */
    j = interrupt(&f->c, "*", 2000, 200);
    assert_true(json_is_true(json_object_get(j, "success")));
    assert_string_equal(arr_join(json_object_get(json_object_get(j, "agents"), "expected")),
                        "n1:42,n2:43");
    assert_string_equal(arr_join(json_object_get(j, "cleaned_sessions")), "s-2");
    json_decref(j);

    json_t *st = must_call(&f->c, "stats", NULL);
    assert_int_equal(json_integer_value(json_object_get(st, "total_interrupts")), 3);
    assert_int_equal(json_integer_value(json_object_get(st, "registered_modules")), 2);
    assert_int_equal(json_integer_value(json_object_get(st, "agents")), 2);
    assert_true(json_is_true(json_object_get(st, "redis_connected")));
    json_decref(st);
    assert_int_equal(coord_stop(&f->c), 0);
}

static void test_coordinator_bad_requests(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    json_t *j = NULL;
    assert_int_equal(ctl_call(f->c.control, "interrupt", NULL, NULL, 0, &j), 400);
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")), "hardware_id"));
    json_decref(j);
    assert_int_equal(ctl_call(f->c.control, "interrupt", "dev-1", NULL, 700000, &j), 400);
    assert_non_null(strstr(json_string_value(json_object_get(j, "error")), "timeout_ms"));
    json_decref(j);
    assert_int_equal(ctl_call(f->c.control, "nonsense", NULL, NULL, 0, &j), 404);
    json_decref(j);

    /* garbage on the report socket is dropped and counted; the coordinator lives on */
    nng_socket push;
    assert_int_equal(nng_push0_open(&push), 0);
    assert_int_equal(nng_dial(push, f->c.report, NULL, 0), 0);
    json_int_t before = stat_of(&f->c, "rejected_messages");
    const uint8_t junk[] = {0xdd, 0x08, 0x00, 0x00, 0x00};
    assert_int_equal(nng_send(push, (void *)junk, sizeof(junk), 0), 0);
    assert_true(TH_WAIT(stat_of(&f->c, "rejected_messages") > before, 3000));
    nng_close(push);
    j = interrupt(&f->c, "dev-1", 1000, 200);
    assert_true(json_is_true(json_object_get(j, "success")));
    json_decref(j);

    json_t *mj = NULL; /* Prometheus text, not JSON */
    assert_int_equal(ctl_call(f->c.control, "metrics", NULL, NULL, 0, &mj), 200);
    json_decref(mj);
    assert_int_equal(coord_stop(&f->c), 0);
}

static void test_coordinator_missing_agent(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    fa_start(&f->a[0], "n1:1", &f->c);
    fa_start(&f->a[1], "n2:2", &f->c);
    fa_begin(&f->a[0], "s-1", "dev-1");
    fa_begin(&f->a[1], "s-2", "dev-1");
    assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 2, 5000));
    atomic_store(&f->a[1].mute, true);

    uint64_t t0 = th_now_ms_();
    json_t *j = interrupt(&f->c, "dev-1", 400, 200);
    uint64_t took = th_now_ms_() - t0;
    assert_true(took >= 390 && took < 3000);
    assert_true(json_is_false(json_object_get(j, "success")));
    json_t *agents = json_object_get(j, "agents");
    assert_string_equal(arr_join(json_object_get(agents, "expected")), "n1:1,n2:2");
    assert_string_equal(arr_join(json_object_get(agents, "answered")), "n1:1");
    assert_string_equal(arr_join(json_object_get(agents, "missing")), "n2:2");
    assert_string_equal(json_string_value(json_object_get(j, "error")), "agents missing: n2:2");
    json_decref(j);
    /* the mute agent was asked again and again, each re-send naming it */
    assert_true(atomic_load(&f->a[1].seen) >= 3);
    assert_true(atomic_load(&f->a[1].max_attempt) >= 2);
    assert_int_equal(stat_of(&f->c, "failed_interrupts"), 1);
    assert_true(TH_WAIT(redis_has("failed_interrupts\n1", "HGETALL %s", "ihc:stats"), 3000));
}

static void test_coordinator_resend(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    fa_start(&f->a[0], "n1:1", &f->c);
    fa_begin(&f->a[0], "s-1", "dev-1");
    assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 1, 5000));
    atomic_store(&f->a[0].ignore, 1); /* the first broadcast is "lost" */
    json_t *j = interrupt(&f->c, "dev-1", 3000, 200);
    assert_true(json_is_true(json_object_get(j, "success")));
    assert_string_equal(arr_join(json_object_get(j, "cleaned_sessions")), "s-1");
    assert_true(json_real_value(json_object_get(j, "total_time_ms")) >= 15.0);
    json_decref(j);
    assert_int_equal(atomic_load(&f->a[0].max_attempt), 1);
    assert_int_equal(atomic_load(&f->a[0].reports), 1);
}

/* A re-send reaches only the agent that has not answered: on its own topic, so the agent
 * that answered never receives it; and the session the report named ends in Redis although
 * no session_end was sent (the fake agents send none). */
static void test_coordinator_resend_only_missing(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    fa_start(&f->a[0], "n1:1", &f->c);
    fa_start(&f->a[1], "n2:2", &f->c);
    fa_begin(&f->a[0], "s-1", "dev-1");
    fa_begin(&f->a[1], "s-2", "dev-1");
    assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 2, 5000));
    atomic_store(&f->a[1].ignore, 1); /* n2:2 "loses" the first broadcast */
    json_t *j = interrupt(&f->c, "dev-1", 3000, 200);
    assert_true(json_is_true(json_object_get(j, "success")));
    assert_string_equal(arr_join(json_object_get(json_object_get(j, "agents"), "answered")),
                        "n1:1,n2:2");
    json_decref(j);
    /* n1:1 got the broadcast and nothing else; n2:2 got it and then one re-send, on ag:n2:2 */
    assert_int_equal(atomic_load(&f->a[0].got), 1);
    assert_int_equal(atomic_load(&f->a[0].got_direct), 0);
    assert_int_equal(atomic_load(&f->a[1].got), 2);
    assert_int_equal(atomic_load(&f->a[1].got_direct), 1);
    assert_int_equal(atomic_load(&f->a[1].max_attempt), 1);
    assert_true(TH_WAIT(redis_is("", "SMEMBERS %s", "ihc:hw:{dev-1}:sessions"), 5000));
    assert_true(redis_has("interrupted", "HGETALL %s", "ihc:session:{dev-1}:s-1"));
    assert_true(redis_has("interrupted", "HGETALL %s", "ihc:session:{dev-1}:s-2"));
    assert_int_equal(session_count(&f->c, "dev-1"), 0);
}

/* Interrupts until one's result reaches (want) or does not reach the agent within 300 ms;
 * true when that happened within 5 s. The agent begins its session again each time. */
static bool results_reach(fixture *f, fake_agent *a, bool want)
{
    uint64_t end = th_now_ms_() + 5000;
    while (th_now_ms_() < end) {
        int before = atomic_load(&a->results);
        json_t *j = interrupt(&f->c, "dev-1", 2000, 200);
        bool ok = json_is_true(json_object_get(j, "success"));
        json_decref(j);
        assert_true(ok);
        bool came = TH_WAIT(atomic_load(&a->results) > before, 300);
        if (came == want)
            return true;
        assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 1, 3000));
    }
    return false;
}

/* Results (written to every PUB connection, and growing with the fleet) are published only
 * while a connection that is not an agent's listens: an agent names its own connection in
 * its hello; a watcher that connects gets results, and after it leaves they stop again. */
static void test_coordinator_results_only_for_listeners(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    fake_agent *a = &f->a[0];
    fa_start_claiming(a, "n1:1", &f->c, true);
    assert_true(TH_WAIT(a->sub_addr[0] != '\0', 3000));
    fa_connect(a); /* a hello that surely names it */
    atomic_store(&a->keep, true);
    fa_begin(a, "s-1", "dev-1");
    assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 1, 5000));
    assert_true(results_reach(f, a, false)); /* only the agent listens */
    assert_int_equal(atomic_load(&a->results), 0);

    nng_socket w;
    assert_int_equal(nng_sub0_open(&w), 0);
    nng_socket_set(w, NNG_OPT_SUB_SUBSCRIBE, IHC_TOPIC_EVENTS, sizeof IHC_TOPIC_EVENTS);
    nng_socket_set_ms(w, NNG_OPT_RECONNMINT, 20);
    assert_int_equal(nng_dial(w, f->c.pub, NULL, NNG_FLAG_NONBLOCK), 0);
    assert_true(results_reach(f, a, true)); /* a watcher: results for everyone again */
    nng_msg *got = NULL;
    nng_socket_set_ms(w, NNG_OPT_RECVTIMEO, 1000);
    assert_int_equal(nng_recvmsg(w, &got, 0), 0);
    nng_msg_free(got);
    nng_close(w);
    assert_true(results_reach(f, a, false)); /* gone: no more */
}

static void test_coordinator_redis_outage(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    fa_start(&f->a[0], "n1:1", &f->c);
    fa_begin(&f->a[0], "s-1", "dev-1");
    assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 1, 5000));
    json_t *j = interrupt(&f->c, "dev-1", 2000, 200);
    assert_true(json_is_true(json_object_get(j, "persisted")));
    json_decref(j);
    assert_true(TH_WAIT(stat_of(&f->c, "persist_backlog") == 0, 5000));

    th_redis_kill(&g_redis);
    /* interrupts keep working; once the writer noticed, results say persisted:false */
    int done = 0;
    bool unpersisted = false;
    uint64_t end = th_now_ms_() + 10000;
    while (!unpersisted && th_now_ms_() < end) {
        j = interrupt(&f->c, "dev-1", 2000, 200);
        assert_true(json_is_true(json_object_get(j, "success")));
        unpersisted = json_is_false(json_object_get(j, "persisted"));
        json_decref(j);
        done++;
        if (!unpersisted)
            th_sleep_ms_(50);
    }
    assert_true(unpersisted);
    for (int i = 0; i < 4; i++, done++) {
        j = interrupt(&f->c, "dev-2", 2000, 200);
        assert_true(json_is_false(json_object_get(j, "persisted")));
        json_decref(j);
    }
    assert_true(stat_of(&f->c, "persist_backlog") > 0);
    json_t *h = must_call(&f->c, "health", NULL);
    assert_string_equal(json_string_value(json_object_get(h, "redis")), "unreachable");
    json_decref(h);

    /* Redis comes back (empty: no persistence): the backlog lands, in full */
    assert_int_equal(th_redis_start(&g_redis), 0);
    assert_true(TH_WAIT(redis_int("XLEN %s", "ihc:interrupts") == done, 10000));
    assert_true(TH_WAIT(stat_of(&f->c, "persist_backlog") == 0, 5000));
    assert_true(redis_is("4", "GET %s", "ihc:hw:{dev-2}:epoch"));
    /* what the empty Redis lost is written again: the id high-water mark, the live state */
    assert_true(TH_WAIT(redis_int("HGET %s interrupt_id", "ihc:seq") >= 1000, 5000));
    assert_true(TH_WAIT(redis_has("testnode", "HGETALL %s", "ihc:agent:n1:1"), 5000));
    /* the counters too, from memory: the interrupt before the outage included */
    char want[32];
    snprintf(want, sizeof(want), "%d", done + 1);
    assert_true(TH_WAIT(redis_is(want, "HGET %s total_interrupts", "ihc:stats"), 5000));
    j = interrupt(&f->c, "dev-1", 2000, 200);
    assert_true(json_is_true(json_object_get(j, "persisted")));
    json_decref(j);
}

static void test_coordinator_restart(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    fa_start(&f->a[0], "n1:1", &f->c);
    fa_begin(&f->a[0], "s-1", "dev-1");
    assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 1, 5000));
    json_int_t last_id = 0;
    for (int i = 0; i < 2; i++) {
        /* dev-1 then dev-2: the agent holds nothing of dev-2, so the s-5 begun below cannot
         * be caught by a broadcast still on its way */
        json_t *j = interrupt(&f->c, i == 0 ? "dev-1" : "dev-2", 2000, 200);
        last_id = json_integer_value(json_object_get(j, "interrupt_id"));
        json_decref(j);
    }
    fa_begin(&f->a[0], "s-5", "dev-1");
    assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 1, 5000));
    assert_int_equal(coord_stop(&f->c), 0);

    coord_start(&f->c);
    /* sessions and the agent come back from Redis; the agent is expected while it reconnects */
    assert_int_equal(session_count(&f->c, "dev-1"), 1);
    json_t *j = interrupt(&f->c, "dev-1", 3000, 200);
    assert_true(json_is_true(json_object_get(j, "success")));
    assert_true(json_integer_value(json_object_get(j, "interrupt_id")) > last_id);
    assert_int_equal(json_integer_value(json_object_get(j, "epoch")), 2);
    assert_string_equal(arr_join(json_object_get(j, "cleaned_sessions")), "s-5");
    assert_string_equal(arr_join(json_object_get(json_object_get(j, "agents"), "expected")),
                        "n1:1");
    json_decref(j);

    /* without Redis the state file alone keeps ids increasing */
    json_int_t id2 = 0;
    j = interrupt(&f->c, "dev-3", 1000, 200);
    id2 = json_integer_value(json_object_get(j, "interrupt_id"));
    json_decref(j);
    assert_int_equal(coord_stop(&f->c), 0);
    char *ok = th_redis_cmd(&g_redis, "FLUSHALL");
    free(ok);
    coord_start(&f->c);
    j = interrupt(&f->c, "dev-3", 1000, 200);
    assert_true(json_integer_value(json_object_get(j, "interrupt_id")) > id2);
    json_decref(j);
}

/* Warming up: after a restart, agents known from Redis that have not said hello are
 * expected by every interrupt (they may hold sessions begun while no coordinator ran): no
 * answer says success before each answered; one that stays silent is missing until
 * IHC_AGENT_TTL (3 s here) passes, then it is gone and expected no more. */
static void test_coordinator_warming_up(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    fa_start(&f->a[0], "n1:1", &f->c);
    fa_start(&f->a[1], "n2:2", &f->c);
    assert_true(TH_WAIT(redis_has("testnode", "HGETALL %s", "ihc:agent:n1:1"), 5000));
    assert_true(TH_WAIT(redis_has("testnode", "HGETALL %s", "ihc:agent:n2:2"), 5000));
    assert_int_equal(coord_stop(&f->c), 0);
    /* no coordinator: n1 begins a session of dev-7 (its message is lost), n2 dies */
    fa_begin(&f->a[0], "s-9", "dev-7");
    fa_stop(&f->a[1]);
    th_sleep_ms_(1200); /* past the PUSH send timeout: the session_begin is dropped */
    coord_start(&f->c);
    uint64_t t0 = th_now_ms_();
    json_t *j = interrupt(&f->c, "dev-7", 1000, 200);
    json_t *ag = json_object_get(j, "agents");
    assert_string_equal(arr_join(json_object_get(ag, "expected")), "n1:1,n2:2");
    assert_string_equal(arr_join(json_object_get(ag, "answered")), "n1:1");
    assert_string_equal(arr_join(json_object_get(ag, "missing")), "n2:2");
    assert_string_equal(arr_join(json_object_get(j, "cleaned_sessions")), "s-9");
    assert_true(json_is_false(json_object_get(j, "success")));
    json_decref(j);
    /* n2 stays silent past IHC_AGENT_TTL: gone, not expected any more */
    bool ok = false;
    while (!ok && th_now_ms_() - t0 < 8000) {
        j = interrupt(&f->c, "dev-7", 500, 200);
        ok = json_is_true(json_object_get(j, "success"));
        json_decref(j);
    }
    assert_true(ok);
    assert_true(th_now_ms_() - t0 >= 2500);
}

static void test_coordinator_global_disabled(void **state)
{
    fixture *f = *state;
    coord_env(&f->c, "GLOBAL_INTERRUPT_ENABLED=false");
    coord_start(&f->c);
    json_t *j = interrupt(&f->c, "*", 1000, 403);
    assert_string_equal(json_string_value(json_object_get(j, "error")),
                        "global interrupt disabled (GLOBAL_INTERRUPT_ENABLED=false)");
    json_decref(j);
    j = interrupt(&f->c, "dev-1", 1000, 200);
    json_decref(j);
}

static void test_coordinator_flags(void **state)
{
    fixture *f = *state;
    coord_env(&f->c, "SESSION_CLEANUP_DELAY=0.3");
    coord_start(&f->c);
    json_t *j = must_call(&f->c, "flags", NULL);
    assert_true(json_is_false(json_object_get(j, "global_interrupt_flag")));
    json_decref(j);

    json_decref(interrupt(&f->c, "dev-1", 1000, 200));
    uint64_t t0 = th_now_ms_();
    j = must_call(&f->c, "flags", NULL);
    assert_true(json_is_true(json_object_get(j, "global_interrupt_flag")));
    assert_string_equal(json_string_value(json_object_get(j, "interrupt_hardware_id")), "dev-1");
    assert_string_equal(json_string_value(json_object_get(j, "reason")), "test stop");
    json_decref(j);
    assert_true(TH_WAIT(redis_has("global_interrupt_flag\n1", "HGETALL %s", "ihc:flags"), 3000));
    bool reset = TH_WAIT(({
                             json_t *x = must_call(&f->c, "flags", NULL);
                             bool off = json_is_false(json_object_get(x, "global_interrupt_flag"));
                             json_decref(x);
                             off;
                         }),
                         3000);
    assert_true(reset);
    assert_true(th_now_ms_() - t0 >= 250);
    assert_true(TH_WAIT(redis_has("global_interrupt_flag\n0", "HGETALL %s", "ihc:flags"), 3000));

    /* on request */
    json_decref(interrupt(&f->c, "dev-2", 1000, 200));
    j = must_call(&f->c, "flags_reset", NULL);
    assert_true(json_is_false(json_object_get(j, "global_interrupt_flag")));
    assert_true(json_is_null(json_object_get(j, "interrupt_hardware_id")));
    json_decref(j);
}

static void test_coordinator_request_channel(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    fa_start(&f->a[0], "n1:1", &f->c);
    fa_begin(&f->a[0], "s-1", "dev-1");
    assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 1, 5000));
    /* wait until the coordinator is subscribed (PUBLISH counts receivers) */
    assert_true(TH_WAIT(redis_has("\n1", "PUBSUB NUMSUB %s", "ihc:requests"), 5000));
    char *r = th_redis_cmd(&g_redis, "PUBLISH ihc:requests %s",
                           "{\"hardware_id\":\"dev-1\",\"reason\":\"from redis\"}");
    assert_non_null(r);
    assert_string_equal(r, "1");
    free(r);
    assert_true(TH_WAIT(redis_int("XLEN %s", "ihc:interrupts") == 1, 5000));
    assert_true(redis_has("from redis", "XRANGE %s - +", "ihc:interrupts"));
    assert_int_equal(atomic_load(&f->a[0].reports), 1);

    json_int_t before = stat_of(&f->c, "rejected_messages");
    r = th_redis_cmd(&g_redis, "PUBLISH ihc:requests %s", "{not json");
    free(r);
    assert_true(TH_WAIT(stat_of(&f->c, "rejected_messages") == before + 1, 3000));
}

/* Runs a command on r; true when its rendered reply contains needle. */
static bool reply_has(const th_redis *r, const char *needle, const char *fmt, const char *a1,
                      const char *a2)
{
    char *got = th_redis_cmd(r, fmt, a1, a2);
    bool ok = got && strstr(got, needle);
    free(got);
    return ok;
}

/* A command on db 2 of r (SELECT inside a script stays inside it). */
#define ON_DB2(cmd) "redis.call('SELECT', 2) return redis.call(" cmd ")"

/* True when one CLIENT LIST line of r holds both needles. */
static bool client_with(const th_redis *r, const char *n1, const char *n2)
{
    char *list = th_redis_cmd(r, "CLIENT LIST");
    bool ok = false;
    for (char *l = list ? strtok(list, "\n") : NULL; l && !ok; l = strtok(NULL, "\n"))
        ok = strstr(l, n1) && strstr(l, n2);
    free(list);
    return ok;
}

/* The form a user reported failing (exit 1, "bad redis url for the request channel"):
 * IHC_REDIS_URL=unix:///path?db=N, here with an ACL user whose password needs every kind of
 * escape. The store writes db 2 over the socket, the request channel subscribes over it, and
 * an interrupt published on ihc:requests lands in the ihc:interrupts stream. */
static void test_coordinator_request_channel_unix(void **state)
{
    fixture *f = *state;
    f->own.unix_socket = true;
    f->own.password = "p@ss:w/rd%";
    assert_int_equal(th_redis_start(&f->own), 0);
    char *ok = th_redis_cmd(&f->own, "ACL SETUSER %s on %s ~* &* +@all", "ihc", ">p@ss:w/rd%");
    assert_non_null(ok);
    assert_string_equal(ok, "OK");
    free(ok);
    char enc[64], env[400];
    snprintf(env, sizeof(env), "IHC_REDIS_URL=unix://ihc:%s@%s?db=2",
             th_pct_encode(f->own.password, enc, sizeof(enc)), f->own.sock);
    f->c.redis_url = NULL;
    coord_env(&f->c, env);
    coord_start(&f->c);
    fa_start(&f->a[0], "n1:1", &f->c);
    fa_begin(&f->a[0], "s-1", "dev-1");
    assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 1, 5000));

    /* both connections go through the socket as user ihc: the store on db 2, the
     * subscriber (pub/sub is the same on every db) */
    char addr[200];
    snprintf(addr, sizeof(addr), "addr=%s", f->own.sock);
    assert_true(TH_WAIT(reply_has(&f->own, "\n1", "PUBSUB NUMSUB %s", "ihc:requests", NULL), 5000));
    assert_true(TH_WAIT(client_with(&f->own, addr, " sub=1 "), 5000));
    assert_true(client_with(&f->own, "name=ihc-coordinator ", " db=2 "));
    assert_true(client_with(&f->own, "name=ihc-coordinator ", addr));
    assert_true(client_with(&f->own, " user=ihc ", " sub=1 "));
    assert_true(th_log_has(f->c.log, "subscribed channel=ihc:requests redis=unix:", 0));

    char *r = th_redis_cmd(&f->own, "PUBLISH ihc:requests %s", "{\"hardware_id\":\"dev-1\"}");
    assert_non_null(r);
    assert_string_equal(r, "1");
    free(r);
    if (!TH_WAIT(
            reply_has(&f->own, "1", "EVAL %s 1 %s", ON_DB2("'XLEN', KEYS[1]"), "ihc:interrupts"),
            5000)) {
        th_log_tail(f->c.log, 30);
        fail_msg("no entry in ihc:interrupts on db 2");
    }
    assert_true(reply_has(&f->own, "dev-1", "EVAL %s 1 %s", ON_DB2("'XRANGE', KEYS[1], '-', '+'"),
                          "ihc:interrupts"));
    assert_int_equal(atomic_load(&f->a[0].reports), 1);
    r = th_redis_cmd(&f->own, "XLEN %s", "ihc:interrupts"); /* db 0 untouched */
    assert_non_null(r);
    assert_string_equal(r, "0");
    free(r);
    assert_int_equal(coord_stop(&f->c), 0);
}

typedef struct {
    coord *c;
    int n;
    json_int_t ids[16];
    int ok;
} worker_arg;

static void *concurrent_worker(void *arg)
{
    worker_arg *w = arg;
    nng_socket s;
    if (nng_req0_open(&s) != 0 || nng_dial(s, w->c->control, NULL, 0) != 0)
        return NULL;
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 20000);
    static const char *hws[] = {"dev-1", "dev-2", "dev-3"};
    for (int i = 0; i < w->n; i++) {
        ihc_msg m = {.type = IHC_MSG_CONTROL_REQUEST};
        m.u.control_request.op = "interrupt";
        m.u.control_request.hw = (char *)hws[i % 3];
        m.u.control_request.timeout_ms = 5000;
        uint8_t *buf = NULL;
        size_t len = 0;
        nng_msg *rep = NULL;
        ihc_msg *r = NULL;
        if (ihc_wire_encode(&m, NULL, &buf, &len) == IHC_OK && nng_send(s, buf, len, 0) == 0 &&
            nng_recvmsg(s, &rep, 0) == 0 &&
            ihc_wire_decode(nng_msg_body(rep), nng_msg_len(rep), NULL, &r, NULL, 0) == IHC_OK &&
            r->u.control_response.status == 200) {
            json_t *j = json_loads(r->u.control_response.json, 0, NULL);
            if (json_is_true(json_object_get(j, "success"))) {
                w->ids[w->ok++] = json_integer_value(json_object_get(j, "interrupt_id"));
            }
            json_decref(j);
        }
        ihc_msg_free(r);
        if (rep)
            nng_msg_free(rep);
        free(buf);
    }
    nng_close(s);
    return NULL;
}

static void test_coordinator_concurrent(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    fa_start(&f->a[0], "n1:1", &f->c);
    fa_start(&f->a[1], "n2:2", &f->c);
    /* sessions that survive interrupts: the fake agent re-adds them after each */
    atomic_store(&f->a[0].keep, true);
    atomic_store(&f->a[1].keep, true);
    fa_begin(&f->a[0], "s-1", "dev-1");
    fa_begin(&f->a[1], "s-2", "dev-2");
    assert_true(TH_WAIT(session_count(&f->c, NULL) == 2, 5000));
    enum { THREADS = 4, PER = 10 };
    pthread_t th[THREADS];
    worker_arg wa[THREADS];
    for (int i = 0; i < THREADS; i++) {
        wa[i] = (worker_arg){.c = &f->c, .n = PER};
        assert_int_equal(pthread_create(&th[i], NULL, concurrent_worker, &wa[i]), 0);
    }
    json_int_t all[THREADS * PER];
    int n = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(wa[i].ok, PER);
        for (int k = 0; k < wa[i].ok; k++)
            all[n++] = wa[i].ids[k];
    }
    for (int i = 0; i < n; i++)
        for (int k = i + 1; k < n; k++)
            if (all[i] == all[k])
                fail_msg("interrupt id %lld handed out twice", (long long)all[i]);
    assert_int_equal(stat_of(&f->c, "total_interrupts"), THREADS * PER);
    assert_int_equal(stat_of(&f->c, "inflight"), 0);
}

/* Interrupts that wait for a silent agent hold their control context until the deadline;
 * more of them than the socket started with must not queue other clients behind them. */
typedef struct {
    coord *c;
    int status;
} slow_arg;

static void *slow_interrupt(void *arg)
{
    slow_arg *sa = arg;
    sa->status = ctl_call(sa->c->control, "interrupt", "dev-1", "slow", 2500, NULL);
    return NULL;
}

static void test_coordinator_slow_interrupts_do_not_block(void **state)
{
    fixture *f = *state;
    coord_start(&f->c);
    fa_start(&f->a[0], "n1:1", &f->c);
    fa_begin(&f->a[0], "s-1", "dev-1");
    assert_true(TH_WAIT(session_count(&f->c, "dev-1") == 1, 5000));
    atomic_store(&f->a[0].mute, true);
    enum { SLOW = 150 }; /* more than the 64 contexts the control socket starts with */
    pthread_t th[SLOW];
    slow_arg sa[SLOW];
    for (int i = 0; i < SLOW; i++) {
        sa[i] = (slow_arg){.c = &f->c, .status = 0};
        assert_int_equal(pthread_create(&th[i], NULL, slow_interrupt, &sa[i]), 0);
    }
    assert_true(TH_WAIT(stat_of(&f->c, "inflight") == SLOW, 5000));
    uint64_t t0 = th_now_ms_();
    json_t *j = NULL;
    assert_int_equal(ctl_call(f->c.control, "stats", NULL, NULL, 0, &j), 200);
    assert_true(th_now_ms_() - t0 < 1000);
    json_decref(j);
    for (int i = 0; i < SLOW; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(sa[i].status, 200); /* answered at the deadline: agent missing */
    }
}

/* A listening socket on 127.0.0.1:port, held by the test (a busy port). */
static int hold_port(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 4), 0);
    return fd;
}

/* Starts a coordinator that must fail; returns its exit status and leaves its log. */
static int coord_run_failing(coord *c)
{
    char *argv[] = {(char *)th_bin("ihc-coordinator"),
                    "--pub",
                    c->pub,
                    "--report",
                    c->report,
                    "--control",
                    c->control,
                    "--http",
                    c->http,
                    "--redis",
                    (char *)c->redis_url,
                    "--state-dir",
                    c->dir,
                    NULL};
    pid_t pid = th_spawn(argv, c->log, c->env);
    assert_true(pid > 0);
    int st = th_wait_exit(pid, 10000);
    if (st < 0) {
        th_stop(pid, SIGKILL, 1000);
        th_log_tail(c->log, 30);
        fail_msg("coordinator kept running although a port was busy (log %s)", c->log);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A busy port is named in one clear line, and a coordinator that never ran writes and warns
 * about nothing else (it used to warn about an "unwritten redis backlog" when Redis was
 * down, and to report a busy HTTP port as "Failed to bind to port 0"). */
static void test_coordinator_busy_ports(void **state)
{
    (void)state;
    char dead_redis[64];
    snprintf(dead_redis, sizeof(dead_redis), "redis://127.0.0.1:%d/0", th_free_port());
    for (int which = 0; which < 2; which++) {
        coord c;
        coord_init(&c, dead_redis);
        char seq[4300];
        snprintf(seq, sizeof(seq), "%s/seq", c.dir);
        FILE *fp = fopen(seq, "w"); /* ids handed out by an earlier run */
        assert_non_null(fp);
        fputs("5000\n", fp);
        fclose(fp);
        const char *url = which == 0 ? c.http : c.pub;
        int port = atoi(strrchr(url, ':') + 1);
        int fd = hold_port(port);
        assert_int_equal(coord_run_failing(&c), 1);
        close(fd);
        char want[128];
        if (which == 0)
            snprintf(want, sizeof(want), "cannot listen on %s: Address already in use", c.http);
        else
            snprintf(want, sizeof(want), "cannot listen pub url=%s: Address in use", c.pub);
        bool ok = th_log_has(c.log, want, 0) && !th_log_has(c.log, "unwritten", 0) &&
                  !th_log_has(c.log, "port 0", 0);
        if (!ok) {
            th_log_tail(c.log, 30);
            fail_msg("want '%s' and no backlog warning in %s", want, c.log);
        }
        assert_true(coord_fini(&c));
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (getenv("IHC_TEST_FILTER"))
        cmocka_set_test_filter(getenv("IHC_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_coordinator_interrupt_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_missing_agent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_resend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_resend_only_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_results_only_for_listeners, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_redis_outage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_warming_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_global_disabled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_request_channel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_request_channel_unix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_busy_ports, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coordinator_slow_interrupts_do_not_block, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
