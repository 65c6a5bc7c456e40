/* Hostile input against real processes: a real redis-server, ihc-coordinator and ihc-agent
 * are attacked on every door (PULL, control REP, HTTP, the agent's SUB and local endpoint,
 * a Redis that dies or hangs). After every attack each process must be alive, its log free of
 * sanitizer reports, and a normal interrupt must still succeed with the real agent answering. */
#include "harness.h"

#include "err.h"
#include "wire.h"

#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/reqrep0/req.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define AGENT_A  "hostile-a" /* the real agent, --simulate dev-1 */
#define AGENT_B  "hostile-b" /* second agent, dialing the test's fake PUB/PULL */
#define GHOST    "ghost-agent"
#define GHOST_HW "ghost-hw"

static struct {
    th_redis redis;
    char *dir;
    int http;
    char pub_url[64], rep_url[64], ctl_url[64];
    char log_coord[512], log_a[512], log_b[512];
    char local_a[512], local_b[512];
    pid_t coord, agent_a, agent_b;
} w;

/* ---------------------------------------------------------------- small msgpack writer --- */

/* Builds MessagePack by hand so that the test can send what the encoder refuses to make. */
typedef struct {
    uint8_t *b;
    size_t n, cap;
} mp;

static void mp_raw(mp *m, const void *p, size_t n)
{
    if (m->n + n > m->cap) {
        size_t cap = m->cap ? m->cap : 256;
        while (cap < m->n + n)
            cap *= 2;
        m->b = realloc(m->b, cap);
        assert_non_null(m->b);
        m->cap = cap;
    }
    memcpy(m->b + m->n, p, n);
    m->n += n;
}

static void mp_byte(mp *m, uint8_t v)
{
    mp_raw(m, &v, 1);
}

static void mp_be(mp *m, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        mp_byte(m, (uint8_t)(v >> (8 * i)));
}

static void mp_map(mp *m, uint32_t n)
{
    if (n < 16)
        mp_byte(m, (uint8_t)(0x80 | n));
    else if (n < 65536) {
        mp_byte(m, 0xde);
        mp_be(m, n, 2);
    } else {
        mp_byte(m, 0xdf);
        mp_be(m, n, 4);
    }
}

static void mp_arr(mp *m, uint32_t n)
{
    if (n < 16)
        mp_byte(m, (uint8_t)(0x90 | n));
    else if (n < 65536) {
        mp_byte(m, 0xdc);
        mp_be(m, n, 2);
    } else {
        mp_byte(m, 0xdd);
        mp_be(m, n, 4);
    }
}

static void mp_strn(mp *m, const char *s, size_t n)
{
    if (n < 32)
        mp_byte(m, (uint8_t)(0xa0 | n));
    else if (n < 256) {
        mp_byte(m, 0xd9);
        mp_be(m, n, 1);
    } else if (n < 65536) {
        mp_byte(m, 0xda);
        mp_be(m, n, 2);
    } else {
        mp_byte(m, 0xdb);
        mp_be(m, n, 4);
    }
    mp_raw(m, s, n);
}

static void mp_str(mp *m, const char *s)
{
    mp_strn(m, s, strlen(s));
}

static void mp_int(mp *m, int64_t v)
{
    mp_byte(m, v >= 0 ? 0xcf : 0xd3);
    mp_be(m, (uint64_t)v, 8);
}

/* {"v":1, "type":type, …n more entries} */
static void mp_head(mp *m, const char *type, uint32_t more)
{
    mp_map(m, 2 + more);
    mp_str(m, "v");
    mp_int(m, 1);
    mp_str(m, "type");
    mp_str(m, type);
}

static void mp_free(mp *m)
{
    free(m->b);
    memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------------------ processes --- */

static bool alive(pid_t pid)
{
    int st;
    return pid > 0 && waitpid(pid, &st, WNOHANG) == 0;
}

/* True when the log holds no sanitizer or crash report. */
static bool log_clean(const char *path)
{
    static const char *bad[] = {"AddressSanitizer", "LeakSanitizer",   "UndefinedBehaviorSanitizer",
                                "runtime error:",   "ThreadSanitizer", "Segmentation fault",
                                "stack smashing",   "double free",     NULL};
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    char line[8192];
    bool clean = true;
    while (clean && fgets(line, sizeof(line), f))
        for (int i = 0; bad[i]; i++)
            if (strstr(line, bad[i])) {
                fprintf(stderr, "%s: %s", path, line);
                clean = false;
                break;
            }
    fclose(f);
    return clean;
}

static int count_lines(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

static void start_coordinator(void)
{
    char http[64];
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
    char *env[] = {"INTERRUPT_TIMEOUT=3.0",      "SESSION_CLEANUP_DELAY=2",  "IHC_AGENT_TTL=5",
                   "IHC_HEARTBEAT_INTERVAL=0.5", "IHC_REDIS_TIMEOUT_MS=300", NULL};
    w.coord = th_spawn(argv, w.log_coord, env);
    assert_true(w.coord > 0);
    assert_true(TH_WAIT(th_http(w.http, "GET", "/healthz", NULL, NULL, NULL) == 200, 15000));
}

static pid_t start_agent(const char *id, const char *pub, const char *rep, const char *hw,
                         const char *local, const char *log)
{
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    (char *)pub,
                    "--report",
                    (char *)rep,
                    "--id",
                    (char *)id,
                    "--simulate",
                    (char *)hw,
                    "--local",
                    (char *)local,
                    NULL};
    char *env[] = {"IHC_MODULE_TIMEOUT=0.5", "IHC_HEARTBEAT_INTERVAL=0.3", "IHC_KILL_GRACE=0.5",
                   NULL};
    pid_t pid = th_spawn(argv, log, env);
    assert_true(pid > 0);
    return pid;
}

/* ------------------------------------------------------------------ control socket --- */

static json_t *control(const char *op, const char *hw, int64_t timeout_ms, int *status)
{
    char *body = NULL;
    int st = th_control(w.ctl_url, op, hw, "hostile test", timeout_ms, &body);
    if (status)
        *status = st;
    json_t *j = body ? json_loads(body, 0, NULL) : NULL;
    free(body);
    return j;
}

/* Sends raw bytes on a fresh REQ socket; returns the control_response status (or -1) and
 * its JSON in *json (malloc'd). */
static int control_raw(const void *buf, size_t len, int timeout_ms, char **json)
{
    *json = NULL;
    nng_socket s;
    if (nng_req0_open(&s) != 0)
        return -1;
    int status = -1;
    void *rbuf = NULL;
    size_t rlen = 0;
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 5000);
    if (nng_dial(s, w.ctl_url, NULL, 0) == 0 && nng_send(s, (void *)buf, len, 0) == 0 &&
        nng_recv(s, &rbuf, &rlen, NNG_FLAG_ALLOC) == 0) {
        ihc_msg *m = NULL;
        if (ihc_wire_decode(rbuf, rlen, NULL, &m, NULL, 0) == IHC_OK &&
            m->type == IHC_MSG_CONTROL_RESPONSE) {
            status = m->u.control_response.status;
            *json = strdup(m->u.control_response.json);
        }
        ihc_msg_free(m);
        nng_free(rbuf, rlen);
    }
    th_close(nng_socket_id(s));
    return status;
}

static int64_t stat_int(const char *key)
{
    json_t *j = control("stats", NULL, 0, NULL);
    int64_t v = j ? (int64_t)json_integer_value(json_object_get(j, key)) : -1;
    json_decref(j);
    return v;
}

static size_t active_sessions(const char *hw)
{
    json_t *j = control("sessions", hw, 0, NULL);
    size_t n = j ? json_array_size(json_object_get(j, "sessions")) : 0;
    json_decref(j);
    return n;
}

/* The id of hw's first active session (malloc'd), or NULL. */
static char *first_session_id(const char *hw)
{
    json_t *j = control("sessions", hw, 0, NULL);
    json_t *s = json_array_get(json_object_get(j, "sessions"), 0);
    const char *id = json_string_value(json_object_get(s, "session_id"));
    char *out = id ? strdup(id) : NULL;
    json_decref(j);
    return out;
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

/* A normal interrupt of dev-1: answered by the real agent, success. Returns the result. */
static json_t *normal_interrupt(void)
{
    assert_true(TH_WAIT(active_sessions("dev-1") >= 1, 10000));
    int st = 0;
    json_t *r = control("interrupt", "dev-1", 3000, &st);
    if (!r || st != 200 || !json_is_true(json_object_get(r, "success"))) {
        char *s = r ? json_dumps(r, 0) : NULL;
        fail_msg("normal interrupt of dev-1 failed: status %d %s", st, s ? s : "(no answer)");
    }
    assert_true(json_array_has(json_object_get(json_object_get(r, "agents"), "answered"), AGENT_A));
    assert_true(json_array_size(json_object_get(r, "cleaned_sessions")) >= 1);
    return r;
}

/* After every attack: all processes alive, logs clean, a normal interrupt works. */
static void check_healthy(void)
{
    assert_true(alive(w.redis.pid) || w.redis.pid == 0);
    if (!alive(w.coord)) {
        th_log_tail(w.log_coord, 30);
        fail_msg("ihc-coordinator died; log %s", w.log_coord);
    }
    if (!alive(w.agent_a)) {
        th_log_tail(w.log_a, 30);
        fail_msg("ihc-agent %s died; log %s", AGENT_A, w.log_a);
    }
    if (w.agent_b > 0 && !alive(w.agent_b)) {
        th_log_tail(w.log_b, 30);
        fail_msg("ihc-agent %s died; log %s", AGENT_B, w.log_b);
    }
    assert_true(log_clean(w.log_coord));
    assert_true(log_clean(w.log_a));
    assert_true(log_clean(w.log_b));
    json_decref(normal_interrupt());
}

/* ----------------------------------------------------------------------- PULL socket --- */

static nng_socket push_open(const char *url)
{
    nng_socket s;
    assert_int_equal(nng_push0_open(&s), 0);
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 5000);
    nng_socket_set_int(s, NNG_OPT_SENDBUF, 256);
    assert_int_equal(nng_dial(s, url, NULL, 0), 0);
    return s;
}

static void push_send(nng_socket s, const void *buf, size_t len)
{
    int rv = nng_send(s, (void *)buf, len, 0);
    if (rv != 0)
        fail_msg("push send of %zu bytes: %s", len, nng_strerror(rv));
}

static void encode(const ihc_msg *m, uint8_t **buf, size_t *len)
{
    TH_PASS(ihc_wire_encode(m, NULL, buf, len));
}

/* Replaces the first occurrence of from by the n bytes of to (strlen(from) == n) in buf. */
static void patch_n(uint8_t *buf, size_t len, const char *from, const char *to, size_t n)
{
    assert_int_equal(n, strlen(from));
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(buf + i, from, n) == 0) {
            memcpy(buf + i, to, n);
            return;
        }
    fail_msg("patch: '%s' not found", from);
}

static void patch(uint8_t *buf, size_t len, const char *from, const char *to)
{
    patch_n(buf, len, from, to, strlen(to));
}

/* Speaks the SP/TCP framing by hand as a PUSH peer of url: sends a frame declaring len bytes
 * followed by send bytes of it, and checks that the peer closes the connection. */
static void sp_oversized(const char *url, uint64_t len, size_t send_n)
{
    int port = atoi(strrchr(url, ':') + 1);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    static const uint8_t hello[8] = {0, 'S', 'P', 0, 0x00, 0x50 /* push v0 */, 0, 0};
    assert_int_equal(send(fd, hello, 8, MSG_NOSIGNAL), 8);
    uint8_t peer[8];
    size_t got = 0;
    while (got < 8) {
        ssize_t n = recv(fd, peer + got, 8 - got, 0);
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_int_equal(peer[5], 0x51); /* pull v0 */
    uint8_t hdr[8];
    for (int i = 0; i < 8; i++)
        hdr[i] = (uint8_t)(len >> (56 - 8 * i));
    assert_int_equal(send(fd, hdr, 8, MSG_NOSIGNAL), 8);
    uint8_t *body = calloc(1, send_n ? send_n : 1);
    body[0] = 0x81;
    size_t off = 0;
    while (off < send_n) {
        ssize_t n = send(fd, body + off, send_n - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* closed by the coordinator while sending: what we want */
        off += (size_t)n;
    }
    free(body);
    uint8_t b;
    ssize_t n = recv(fd, &b, 1, 0);
    if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)))
        fail_msg("the coordinator kept a connection that sent a %llu-byte frame",
                 (unsigned long long)len);
    close(fd);
}

/* A session_begin from agent/hw, so that the coordinator expects a report from agent. */
static void ghost_session(nng_socket s, const char *agent, const char *hw, const char *sid)
{
    ihc_msg m = {.type = IHC_MSG_SESSION_BEGIN};
    m.u.session_begin.agent = (char *)agent;
    m.u.session_begin.session.session_id = (char *)sid;
    m.u.session_begin.session.hw = (char *)hw;
    m.u.session_begin.session.created_ms = 1;
    uint8_t *buf;
    size_t len;
    encode(&m, &buf, &len);
    push_send(s, buf, len);
    free(buf);
}

static void test_hostile_startup(void **state)
{
    (void)state;
    start_coordinator();
    w.agent_a = start_agent(AGENT_A, w.pub_url, w.rep_url, "dev-1", w.local_a, w.log_a);
    assert_true(TH_WAIT(active_sessions("dev-1") == 1, 15000));
    check_healthy();
}

static void test_hostile_pull(void **state)
{
    (void)state;
    int64_t rejected0 = stat_int("rejected_messages");
    assert_true(rejected0 >= 0);
    char *real_sid = NULL;
    assert_true(TH_WAIT((real_sid = first_session_id("dev-1")) != NULL, 10000));
    nng_socket s = push_open(w.rep_url);

    /* 1. seeded random bytes */
    srand(20240601);
    enum { N_RANDOM = 3000 };
    uint8_t rnd[600];
    for (int i = 0; i < N_RANDOM; i++) {
        size_t n = (size_t)(rand() % (int)sizeof(rnd));
        for (size_t k = 0; k < n; k++)
            rnd[k] = (uint8_t)rand();
        /* half of them look like a msgpack map, so the decoder goes deeper */
        if (n > 0 && (i & 1))
            rnd[0] = (uint8_t)(0x80 | (rand() % 16));
        push_send(s, rnd, n);
    }
    /* every one of them is refused and counted (none is a valid message) */
    assert_true(TH_WAIT(stat_int("rejected_messages") >= rejected0 + N_RANDOM, 20000));

    /* 2. valid messages of every type, truncated at every length and mutated */
    ihc_msg base[5];
    memset(base, 0, sizeof(base));
    ihc_module_result mr = {.name = "text_processing", .status = IHC_MOD_OK, .time_ms = 1.5};
    char *sids[] = {"mut-s1", "mut-s2"};
    base[0].type = IHC_MSG_REPORT;
    base[0].u.report = (ihc_report_msg){.id = 424242,
                                        .agent = "mut-agent",
                                        .hw = "mut-hw",
                                        .modules = &mr,
                                        .n_modules = 1,
                                        .sessions = sids,
                                        .n_sessions = 2,
                                        .time_ms = 2.5};
    ihc_session_info si = {.session_id = "mut-s1",
                           .hw = "mut-hw",
                           .epoch = 1,
                           .created_ms = 1700000000000,
                           .module = "text_processing",
                           .pid = 42,
                           .data = "{\"k\":1}"};
    char *meths[] = {"cancel_generation", "clear_buffers"};
    ihc_module_info mi = {.name = "text_processing",
                          .methods = meths,
                          .n_methods = 2,
                          .timeout_ms = 500,
                          .enabled = true};
    base[1].type = IHC_MSG_HELLO;
    base[1].u.hello = (ihc_hello_msg){.agent = "mut-agent",
                                      .node = "mut-node",
                                      .pid = 7,
                                      .started_ms = 1700000000000,
                                      .modules = &mi,
                                      .n_modules = 1,
                                      .sessions = &si,
                                      .n_sessions = 1};
    base[2].type = IHC_MSG_SESSION_BEGIN;
    base[2].u.session_begin = (ihc_session_begin_msg){.agent = "mut-agent", .session = si};
    base[3].type = IHC_MSG_SESSION_END;
    base[3].u.session_end = (ihc_session_end_msg){
        .agent = "mut-agent", .session_id = "mut-s1", .hw = "mut-hw", .state = "done"};
    char *hws[] = {"mut-hw"};
    base[4].type = IHC_MSG_HEARTBEAT;
    base[4].u.heartbeat =
        (ihc_heartbeat_msg){.agent = "mut-agent", .n_sessions = 1, .hws = hws, .n_hws = 1};
    int64_t truncated = 0; /* every truncation is refused; mutations may stay valid */
    for (size_t b = 0; b < 5; b++) {
        uint8_t *buf;
        size_t len;
        encode(&base[b], &buf, &len);
        for (size_t cut = 0; cut < len; cut++)
            push_send(s, buf, cut);
        truncated += len;
        uint8_t *mut = malloc(len);
        for (int i = 0; i < 400; i++) {
            memcpy(mut, buf, len);
            int flips = 1 + rand() % 4;
            for (int f = 0; f < flips; f++) {
                size_t at = (size_t)rand() % len;
                switch (rand() % 3) {
                case 0:
                    mut[at] = (uint8_t)rand();
                    break;
                case 1:
                    mut[at] ^= (uint8_t)(1u << (rand() % 8));
                    break;
                default: /* a count or length byte turned into a 32-bit one */
                    mut[at] = (uint8_t)(0xdb + rand() % 5);
                    break;
                }
            }
            push_send(s, mut, len);
        }
        free(mut);
        free(buf);
    }

    /* 3. the 5 bytes that ask msgpack-c for ~3 GB, and other huge declared counts */
    static const uint8_t dd[] = {0xdd, 0x08, 0x00, 0x00, 0x00};
    static const uint8_t mapbig[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t strbig[] = {0xdb, 0xff, 0xff, 0xff, 0xf0, 'a'};
    push_send(s, dd, sizeof(dd));
    push_send(s, mapbig, sizeof(mapbig));
    push_send(s, strbig, sizeof(strbig));
    mp m = {0};
    mp_head(&m, "report", 4);
    mp_str(&m, "id");
    mp_int(&m, 1);
    mp_str(&m, "agent");
    mp_str(&m, "mut-agent");
    mp_str(&m, "hw");
    mp_str(&m, "mut-hw");
    mp_str(&m, "modules");
    mp_arr(&m, 0x7fffffff); /* and nothing behind it */
    push_send(s, m.b, m.n);
    m.n = 0;
    mp_head(&m, "hello", 5);
    mp_str(&m, "agent");
    mp_str(&m, "mut-agent");
    mp_str(&m, "node");
    mp_str(&m, "n");
    mp_str(&m, "pid");
    mp_int(&m, 1);
    mp_str(&m, "started_ms");
    mp_int(&m, 1);
    mp_str(&m, "sessions");
    mp_arr(&m, 200000); /* over IHC_WIRE_MAX_LIST, each a tiny map */
    for (int i = 0; i < 1000; i++)
        mp_map(&m, 0);
    push_send(s, m.b, m.n);
    /* nesting deeper than the limit */
    m.n = 0;
    for (int i = 0; i < 5000; i++)
        mp_arr(&m, 1);
    mp_int(&m, 1);
    push_send(s, m.b, m.n);

    /* 4. a report for an interrupt id that was never issued, naming the real agent and its
     * real session: nothing may end that session */
    m.n = 0;
    mp_head(&m, "report", 5);
    mp_str(&m, "id");
    mp_int(&m, 900000000000LL);
    mp_str(&m, "agent");
    mp_str(&m, AGENT_A);
    mp_str(&m, "hw");
    mp_str(&m, "dev-1");
    mp_str(&m, "sessions");
    mp_arr(&m, 1);
    mp_str(&m, real_sid);
    mp_str(&m, "time_ms");
    mp_int(&m, 1);
    push_send(s, m.b, m.n);
    /* reports claiming to be from agents that hold nothing, for unknown and real ids */
    for (int i = 0; i < 50; i++) {
        ihc_msg r = {.type = IHC_MSG_REPORT};
        char agent[32];
        snprintf(agent, sizeof(agent), "impostor-%d", i);
        r.u.report = (ihc_report_msg){.id = (uint64_t)(i % 5 == 0 ? 1 : 800000 + i),
                                      .agent = agent,
                                      .hw = "dev-1",
                                      .sessions = &real_sid,
                                      .n_sessions = 1};
        uint8_t *buf;
        size_t len;
        encode(&r, &buf, &len);
        push_send(s, buf, len);
        free(buf);
    }

    /* 5. a session_begin with an invalid hw (made valid for the encoder, then broken) */
    {
        ihc_msg b = {.type = IHC_MSG_SESSION_BEGIN};
        b.u.session_begin.agent = "mut-agent";
        b.u.session_begin.session = (ihc_session_info){
            .session_id = "bad-hw-s", .hw = "XdevX1", .epoch = 0, .created_ms = 1};
        uint8_t *buf;
        size_t len;
        encode(&b, &buf, &len);
        patch(buf, len, "XdevX1", "de v/1");
        push_send(s, buf, len);
        patch_n(buf, len, "de v/1", "de\0v\n1", 6);
        push_send(s, buf, len);
        free(buf);
    }

    /* 6. a hello with as many sessions as the message limit allows (about 90k) */
    {
        size_t n = 100000;
        ihc_session_info *ss = calloc(n, sizeof(*ss));
        char(*ids)[16] = calloc(n, 16);
        assert_non_null(ss);
        assert_non_null(ids);
        for (size_t i = 0; i < n; i++) {
            snprintf(ids[i], 16, "f%zu", i);
            ss[i] = (ihc_session_info){.session_id = ids[i], .hw = "flood-hw", .created_ms = 1};
        }
        ihc_msg h = {.type = IHC_MSG_HELLO};
        h.u.hello = (ihc_hello_msg){.agent = "flood-agent",
                                    .node = "flood",
                                    .pid = 1,
                                    .started_ms = 1,
                                    .sessions = ss,
                                    .n_sessions = n};
        uint8_t *buf = NULL;
        size_t len = 0;
        int rc;
        while ((rc = ihc_wire_encode(&h, NULL, &buf, &len)) == IHC_ETOOBIG)
            h.u.hello.n_sessions -= h.u.hello.n_sessions / 20;
        TH_PASS(rc);
        assert_true(h.u.hello.n_sessions > 50000);
        push_send(s, buf, len);
        free(buf);
        free(ss);
        free(ids);
        /* the coordinator keeps answering while it digests it */
        uint64_t t0 = th_now_ms_();
        assert_int_equal(th_http(w.http, "GET", "/healthz", NULL, NULL, NULL), 200);
        assert_true(th_now_ms_() - t0 < 3000);
    }
    th_close(nng_socket_id(s));

    /* 7. oversized frames (raw SP over TCP: closing an nng socket whose pipe the peer
     * dropped mid-send can hang in nng 1.5.2): each connection is closed by the coordinator */
    sp_oversized(w.rep_url, IHC_WIRE_MAX_MSG + 4096, IHC_WIRE_MAX_MSG + 4096);
    sp_oversized(w.rep_url, UINT64_MAX / 2, 16);
    mp_free(&m);

    /* random, truncated, 9 hand-made bad ones above, 40 reports for never-issued ids */
    int64_t want = rejected0 + N_RANDOM + truncated + 9 + 40;
    if (!TH_WAIT(stat_int("rejected_messages") >= want, 20000))
        fail_msg("rejected_messages %lld, want at least %lld",
                 (long long)stat_int("rejected_messages"), (long long)want);
    /* the report for a never-issued id ended nothing */
    char *still = first_session_id("dev-1");
    assert_non_null(still);
    assert_string_equal(still, real_sid);
    free(still);
    free(real_sid);
    check_healthy();
}

/* -------------------------------------------------------------------- control socket --- */

static void expect_control(const void *buf, size_t len, int want, const char *word)
{
    char *json = NULL;
    int st = control_raw(buf, len, 5000, &json);
    if (st != want || !json || !strstr(json, "\"error\"") || (word && !strstr(json, word)))
        fail_msg("control: status %d (want %d), body %s (want error naming '%s')", st, want,
                 json ? json : "(none)", word ? word : "");
    free(json);
}

/* A control_request with the given fields; hw/reason NULL to leave out; timeout INT64_MIN to
 * leave out. */
static void control_req(mp *m, const char *op, const char *hw, const char *reason, int64_t timeout)
{
    m->n = 0;
    uint32_t more = 1 + (hw != NULL) + (reason != NULL) + (timeout != INT64_MIN);
    mp_head(m, "control_request", more);
    mp_str(m, "op");
    mp_str(m, op);
    if (hw) {
        mp_str(m, "hw");
        mp_str(m, hw);
    }
    if (reason) {
        mp_str(m, "reason");
        mp_str(m, reason);
    }
    if (timeout != INT64_MIN) {
        mp_str(m, "timeout_ms");
        mp_int(m, timeout);
    }
}

static void test_hostile_control(void **state)
{
    (void)state;
    int64_t rejected0 = stat_int("rejected_messages");
    static const uint8_t garbage[] = {0xc1, 0xff, 0x00, 'x', 'y'};
    expect_control(garbage, sizeof(garbage), 400, NULL);
    expect_control("", 0, 400, NULL);
    static const uint8_t dd[] = {0xdd, 0x08, 0x00, 0x00, 0x00};
    expect_control(dd, sizeof(dd), 400, NULL);

    /* a wrong message type */
    ihc_msg hb = {.type = IHC_MSG_HEARTBEAT};
    hb.u.heartbeat.agent = "x";
    uint8_t *buf;
    size_t len;
    encode(&hb, &buf, &len);
    expect_control(buf, len, 400, "control_request");
    free(buf);

    mp m = {0};
    control_req(&m, "format_disk", NULL, NULL, INT64_MIN);
    expect_control(m.b, m.n, 404, "unknown");
    control_req(&m, "interrupt", "dev 1!", NULL, INT64_MIN);
    expect_control(m.b, m.n, 400, "hw");
    control_req(&m, "interrupt", NULL, NULL, INT64_MIN);
    expect_control(m.b, m.n, 400, "hardware_id");
    control_req(&m, "sessions", "../../etc", NULL, INT64_MIN);
    expect_control(m.b, m.n, 400, "hw");
    char *reason = malloc(IHC_REASON_MAX * 3);
    memset(reason, 'r', IHC_REASON_MAX * 3 - 1);
    reason[IHC_REASON_MAX * 3 - 1] = '\0';
    control_req(&m, "interrupt", "dev-1", reason, INT64_MIN);
    expect_control(m.b, m.n, 400, "reason");
    free(reason);
    control_req(&m, "interrupt", "dev-1", "\xff\xfe bad utf8", INT64_MIN);
    expect_control(m.b, m.n, 400, "reason");
    control_req(&m, "interrupt", "dev-1", NULL, -5);
    expect_control(m.b, m.n, 400, "timeout_ms");
    control_req(&m, "interrupt", "dev-1", NULL, INT64_MIN + 1);
    expect_control(m.b, m.n, 400, "timeout_ms");
    control_req(&m, "interrupt", "dev-1", NULL, 1000000000000LL);
    expect_control(m.b, m.n, 400, "timeout_ms");
    /* an oversized request (over the socket's limit): no answer, and nothing breaks */
    {
        size_t n = 256 * 1024;
        uint8_t *big = calloc(1, n);
        big[0] = 0x81;
        char *json = NULL;
        int st = control_raw(big, n, 500, &json);
        assert_true(st == -1 || (st >= 400 && st < 500));
        free(json);
        free(big);
    }
    assert_true(stat_int("rejected_messages") >= rejected0 + 11);

    /* peers that vanish mid-request: an interrupt that waits for an agent that never
     * answers, its client gone before the answer; meanwhile others are served at once */
    nng_socket ps = push_open(w.rep_url);
    ghost_session(ps, GHOST, GHOST_HW, "ghost-s1");
    assert_true(TH_WAIT(active_sessions(GHOST_HW) == 1, 5000));
    control_req(&m, "interrupt", GHOST_HW, "vanishing client", 1500);
    for (int i = 0; i < 20; i++) {
        nng_socket s;
        assert_int_equal(nng_req0_open(&s), 0);
        assert_int_equal(nng_dial(s, w.ctl_url, NULL, 0), 0);
        nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 2000);
        assert_int_equal(nng_send(s, m.b, m.n, 0), 0);
        th_sleep_ms_(10); /* let it leave before the socket goes */
        th_close(nng_socket_id(s));
        if (i % 5 == 0) /* the agent is expected again for the next ones */
            ghost_session(ps, GHOST, GHOST_HW, "ghost-s1");
    }
    for (int i = 0; i < 5; i++) {
        uint64_t t0 = th_now_ms_();
        json_t *j = control("stats", NULL, 0, NULL);
        assert_non_null(j);
        json_decref(j);
        assert_true(th_now_ms_() - t0 < 1000);
    }
    /* the vanished clients' interrupts finish (failed: the ghost never answers) */
    assert_true(TH_WAIT(count_lines(w.log_coord, "hw=" GHOST_HW " success=false") >= 20, 10000));
    assert_true(TH_WAIT(stat_int("inflight") == 0, 5000));
    th_close(nng_socket_id(ps));
    mp_free(&m);
    check_healthy();
}

/* ---------------------------------------------------------------------------- HTTP --- */

static int http_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)w.http),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* Sends raw bytes (then half-closes when half_close) and reads the answer until the server
 * closes. Returns the status (-1 when the connection closed without an answer) and the body
 * in *body (malloc'd, may be NULL). A half-closed connection whose request is suspended (an
 * interrupt waiting for agents) is dropped by libmicrohttpd, so only refusals use it. */
static int http_raw(const void *req, size_t len, char **body, bool half_close)
{
    if (body)
        *body = NULL;
    int fd = http_connect();
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, (const char *)req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server may refuse before it has read everything */
        off += (size_t)n;
    }
    if (half_close)
        shutdown(fd, SHUT_WR);
    return th_http_read_answer(fd, body);
}

/* A request with a JSON body that reaches the API: the answer must be want with an
 * {"error":…} naming word. */
static void expect_http(const char *method, const char *path, const char *extra_headers,
                        const char *body, size_t body_len, int want, const char *word)
{
    char head[1024];
    int hn = snprintf(head, sizeof(head),
                      "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s"
                      "Content-Length: %zu\r\n\r\n",
                      method, path, extra_headers ? extra_headers : "", body_len);
    char *req = malloc((size_t)hn + body_len);
    memcpy(req, head, (size_t)hn);
    if (body_len)
        memcpy(req + hn, body, body_len);
    char *resp = NULL;
    int st = http_raw(req, (size_t)hn + body_len, &resp, false);
    free(req);
    json_t *j = resp ? json_loads(resp, 0, NULL) : NULL;
    const char *err = json_string_value(json_object_get(j, "error"));
    if (st != want || !err || (word && !strstr(err, word)))
        fail_msg("%s %s: status %d (want %d), body %s (want an error naming '%s')", method, path,
                 st, want, resp ? resp : "(none)", word ? word : "");
    json_decref(j);
    free(resp);
}

static void expect_json_body(const char *body, int want, const char *word)
{
    expect_http("POST", "/v1/interrupt", "Content-Type: application/json\r\n", body, strlen(body),
                want, word);
}

/* Requests libmicrohttpd refuses itself, before the API sees them: a 4xx or a closed
 * connection, never a crash. */
static void expect_refused_raw(const char *req, size_t len)
{
    int st = http_raw(req, len, NULL, true);
    if (st != -1 && (st < 400 || st >= 500) && st != 505 /* HTTP version */)
        fail_msg("raw request %.40s…: status %d, want a 4xx or a closed connection", req, st);
}

static void test_hostile_http(void **state)
{
    (void)state;
    /* clients that connect and send nothing, or half a request line, stay open meanwhile */
    int idle[8];
    for (int i = 0; i < 8; i++) {
        idle[i] = http_connect();
        if (i & 1)
            assert_true(send(idle[i], "POST /v1/inter", 14, MSG_NOSIGNAL) == 14);
    }

    /* malformed request lines and headers */
    static const char *raws[] = {
        "GARBAGE\r\n\r\n",
        "GET\r\n\r\n",
        "GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: x\r\nbroken header line\r\n\r\n",
        "\x01\x02\x03\xff\xfe\r\n\r\n",
        "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
        "chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(raws) / sizeof(raws[0]); i++)
        expect_refused_raw(raws[i], strlen(raws[i]));
    {
        /* a NUL inside the request line */
        static const char nul_line[] = "GET /heal\0thz HTTP/1.1\r\nHost: x\r\n\r\n";
        expect_refused_raw(nul_line, sizeof(nul_line) - 1);
    }
    {
        /* huge headers and a huge URL */
        size_t n = 200 * 1024;
        char *req = malloc(n + 256);
        int k = snprintf(req, 256, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
        memset(req + k, 'a', n);
        strcpy(req + k + n, "\r\n\r\n");
        expect_refused_raw(req, strlen(req));
        k = snprintf(req, 256, "GET /v1/");
        memset(req + k, 'u', n);
        strcpy(req + k + n, " HTTP/1.1\r\nHost: x\r\n\r\n");
        expect_refused_raw(req, strlen(req));
        /* many small headers */
        size_t off = (size_t)snprintf(req, 256, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
        for (int i = 0; off + 32 < n; i++)
            off += (size_t)snprintf(req + off, 32, "X-H%d: v\r\n", i);
        strcpy(req + off, "\r\n");
        expect_refused_raw(req, strlen(req));
        free(req);
    }

    /* bodies over the limit: with Content-Length (refused before reading) … */
    expect_http("POST", "/v1/interrupt", "Content-Type: application/json\r\n", NULL, 0, 400,
                "empty");
    {
        char req[256];
        snprintf(req, sizeof(req),
                 "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: 10000000\r\nConnection: close\r\n\r\n{\"hardware_id\":");
        char *resp = NULL;
        int st = http_raw(req, strlen(req), &resp, false);
        assert_int_equal(st, 413);
        assert_non_null(strstr(resp, "\"error\""));
        assert_non_null(strstr(resp, "limit"));
        free(resp);
    }
    /* … and chunked, without one: a bit over the limit gets its 413, far over is dropped */
    for (int pass = 0; pass < 2; pass++) {
        size_t total = pass == 0 ? 200 * 1024 : 3 * 1024 * 1024;
        size_t chunk = 16 * 1024;
        size_t cap = total + chunk + (total / chunk + 1) * 16 + 512;
        char *req = malloc(cap);
        size_t off =
            (size_t)snprintf(req, cap,
                             "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             "application/json\r\nTransfer-Encoding: chunked\r\nConnection: "
                             "close\r\n\r\n");
        for (size_t done = 0; done < total; done += chunk) {
            off += (size_t)snprintf(req + off, 16, "%zx\r\n", chunk);
            memset(req + off, ' ', chunk);
            off += chunk;
            memcpy(req + off, "\r\n", 2);
            off += 2;
        }
        memcpy(req + off, "0\r\n\r\n", 5);
        off += 5;
        char *resp = NULL;
        int st = http_raw(req, off, &resp, false);
        free(req);
        if (pass == 0) {
            assert_int_equal(st, 413);
            assert_non_null(strstr(resp, "\"error\""));
        } else {
            assert_true(st == 413 || st == -1);
        }
        free(resp);
    }
    {
        /* a valid chunked interrupt is served */
        static const char req[] =
            "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            "f\r\n{\"hardware_id\":\r\n"
            "c\r\n\"nobody-hw\"}\r\n0\r\n\r\n";
        char *resp = NULL;
        int st = http_raw(req, sizeof(req) - 1, &resp, false);
        if (st != 200)
            fail_msg("chunked interrupt: status %d body %s", st, resp ? resp : "");
        assert_non_null(strstr(resp, "\"success\":true"));
        free(resp);
    }

    /* bad JSON of every kind: 400 with an error naming the problem */
    expect_json_body("{not json", 400, "JSON");
    expect_json_body("{\"hardware_id\":\"dev-\xff\xfe\"}", 400, NULL);
    expect_json_body("{\"hardware_id\":\"dev-1\",\"reason\":\"\xc3\x28\"}", 400, NULL);
    {
        size_t n = 10000;
        char *deep = malloc(n + 1);
        memset(deep, '[', n);
        deep[n] = '\0';
        expect_json_body(deep, 400, NULL);
        /* and deeply nested objects */
        size_t k = 0;
        while (k + 5 < n) {
            memcpy(deep + k, "{\"a\":", 5);
            k += 5;
        }
        deep[k] = '\0';
        expect_json_body(deep, 400, NULL);
        free(deep);
    }
    {
        static const char nul[] = "{\"hardware_id\":\"dev-1\"\0,\"reason\":\"x\"}";
        expect_http("POST", "/v1/interrupt", "Content-Type: application/json\r\n", nul,
                    sizeof(nul) - 1, 400, NULL);
    }
    expect_json_body("{\"hardware_id\":\"dev\\u0000-1\"}", 400, NULL);
    expect_json_body("{\"hardware_id\":\"dev-1\",\"reason\":\"a\\u0000b\"}", 400, NULL);
    expect_json_body("{\"hardware_id\":\"dev-1\",\"hardware_id\":\"dev-2\"}", 400, "duplicate");
    expect_json_body("{\"hardware_id\":\"dev-1\",\"force\":true}", 400, "force");
    expect_json_body("{\"hardware_id\":42}", 400, "hardware_id");
    expect_json_body("{\"hardware_id\":null}", 400, "hardware_id");
    expect_json_body("{\"hardware_id\":\"dev-1\",\"timeout_ms\":\"5\"}", 400, "timeout_ms");
    expect_json_body("{\"hardware_id\":\"dev-1\",\"timeout_ms\":-1}", 400, "timeout_ms");
    expect_json_body("{\"hardware_id\":\"dev-1\",\"timeout_ms\":1e300}", 400, "timeout_ms");
    expect_json_body("{\"hardware_id\":\"dev-1\",\"timeout_ms\":99999999999999999999}", 400, NULL);
    expect_json_body("{\"hardware_id\":\"dev-1\",\"timeout_ms\":9223372036854775807}", 400,
                     "timeout_ms");
    expect_json_body("{\"hardware_id\":\"dev-1\",\"reason\":[1]}", 400, "reason");
    expect_json_body("[\"dev-1\"]", 400, "object");
    expect_json_body("\"dev-1\"", 400, "object");
    expect_json_body("{\"hardware_id\":\"\"}", 400, "hardware_id");
    expect_json_body("{\"hardware_id\":\"a b\"}", 400, "hardware_id");
    expect_http("POST", "/v1/interrupt", "Content-Type: text/plain\r\n", "{}", 2, 415,
                "Content-Type");

    /* wrong methods and paths */
    expect_http("PUT", "/v1/interrupt", NULL, NULL, 0, 405, "PUT");
    expect_http("DELETE", "/v1/sessions", NULL, NULL, 0, 405, "DELETE");
    expect_http("OPTIONS", "/v1/interrupt", NULL, NULL, 0, 405, "OPTIONS");
    expect_http("GET", "/v1/interrupt", NULL, NULL, 0, 405, "GET");
    expect_http("POST", "/v1/stats", NULL, "{}", 2, 405, "POST");
    expect_http("GET", "/v1/../etc/passwd", NULL, NULL, 0, 404, NULL);
    expect_http("GET", "/v1/sessions?hardware_id=bad%20id", NULL, NULL, 0, 400, "hardware_id");
    expect_http("GET", "/v1/sessions?evil=1", NULL, NULL, 0, 400, "evil");
    expect_http("GET", "/v1/sessions?hardware_id=a&hardware_id=b", NULL, NULL, 0, 400,
                "hardware_id");
    expect_http("OPTIONS", "*", NULL, NULL, 0, 404, NULL);
    {
        /* HEAD: headers only */
        static const char head[] = "HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        char *resp = NULL;
        assert_int_equal(http_raw(head, sizeof(head) - 1, &resp, false), 200);
        assert_true(resp == NULL || resp[0] == '\0');
        free(resp);
    }

    /* the idle clients did not block anybody: a normal request is answered at once */
    uint64_t t0 = th_now_ms_();
    assert_int_equal(th_http(w.http, "GET", "/v1/stats", NULL, NULL, NULL), 200);
    assert_true(th_now_ms_() - t0 < 1000);
    for (int i = 0; i < 8; i++)
        close(idle[i]);

    /* clients that vanish while their interrupt is suspended waiting for an agent */
    nng_socket ps = push_open(w.rep_url);
    ghost_session(ps, GHOST, GHOST_HW, "ghost-s2");
    assert_true(TH_WAIT(active_sessions(GHOST_HW) >= 1, 5000));
    static const char body[] = "{\"hardware_id\":\"" GHOST_HW "\",\"timeout_ms\":1000}";
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     sizeof(body) - 1, body);
    int done0 = count_lines(w.log_coord, "hw=" GHOST_HW " success=false");
    for (int i = 0; i < 12; i++) {
        if (i % 4 == 0)
            ghost_session(ps, GHOST, GHOST_HW, "ghost-s2");
        int fd = http_connect();
        assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
        if (i & 1) {
            /* wait until it is surely suspended, then reset the connection */
            th_sleep_ms_(20);
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(fd);
    }
    /* others are served meanwhile */
    t0 = th_now_ms_();
    assert_int_equal(th_http(w.http, "GET", "/healthz", NULL, NULL, NULL), 200);
    assert_true(th_now_ms_() - t0 < 1000);
    /* and the abandoned ones finish by their deadline */
    assert_true(
        TH_WAIT(count_lines(w.log_coord, "hw=" GHOST_HW " success=false") >= done0 + 6, 5000));
    assert_true(TH_WAIT(stat_int("inflight") == 0, 5000));
    th_close(nng_socket_id(ps));
    check_healthy();
}

/* -------------------------------------------------------------------------- agent --- */

static atomic_int pub_pipes_added;

static void on_pub_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    (void)arg;
    if (ev == NNG_PIPE_EV_ADD_POST)
        atomic_fetch_add(&pub_pipes_added, 1);
}

static ihc_msg *pull_recv(nng_socket pull, int timeout_ms)
{
    nng_socket_set_ms(pull, NNG_OPT_RECVTIMEO, timeout_ms);
    void *buf = NULL;
    size_t len = 0;
    if (nng_recv(pull, &buf, &len, NNG_FLAG_ALLOC) != 0)
        return NULL;
    ihc_msg *m = NULL;
    if (ihc_wire_decode(buf, len, NULL, &m, NULL, 0) != IHC_OK)
        m = NULL;
    nng_free(buf, len);
    return m;
}

static void pub_send(nng_socket pub, const void *buf, size_t len)
{
    assert_int_equal(nng_send(pub, (void *)buf, len, 0), 0);
}

/* topic + NUL + body */
static void pub_framed(nng_socket pub, const char *topic, const uint8_t *body, size_t len)
{
    size_t tl = strlen(topic) + 1;
    uint8_t *buf = malloc(tl + len);
    memcpy(buf, topic, tl);
    memcpy(buf + tl, body, len);
    pub_send(pub, buf, tl + len);
    free(buf);
}

/* One request to the second agent's local API; its status, and the answer must be an error
 * naming word (when want >= 400). */
static void expect_local(const char *method, const char *path, const char *body, int want,
                         const char *word)
{
    char *resp = NULL;
    int st = th_unix_http(w.local_b + 7, method, path, body, &resp);
    if (st != want ||
        (want >= 400 && (!resp || !strstr(resp, "\"error\"") || (word && !strstr(resp, word)))))
        fail_msg("local API %s %s %s: %d '%s' (want %d naming '%s')", method, path,
                 body ? body : "", st, resp ? resp : "", want, word ? word : "");
    free(resp);
}

#define N_STREAMS 1100 /* event streams on one session: more than the old endpoint parked */

static void test_hostile_agent(void **state)
{
    (void)state;
    int pub_port = th_free_port(), pull_port = th_free_port();
    char pub_url[64], pull_url[64];
    snprintf(pub_url, sizeof(pub_url), "tcp://127.0.0.1:%d", pub_port);
    snprintf(pull_url, sizeof(pull_url), "tcp://127.0.0.1:%d", pull_port);
    nng_socket pub, pull;
    assert_int_equal(nng_pub0_open(&pub), 0);
    assert_int_equal(nng_pull0_open(&pull), 0);
    nng_socket_set_int(pub, NNG_OPT_SENDBUF, 1024);
    nng_socket_set_size(pull, NNG_OPT_RECVMAXSZ, IHC_WIRE_MAX_MSG);
    atomic_store(&pub_pipes_added, 0);
    assert_int_equal(nng_pipe_notify(pub, NNG_PIPE_EV_ADD_POST, on_pub_pipe, NULL), 0);
    assert_int_equal(nng_listen(pub, pub_url, NULL, 0), 0);
    assert_int_equal(nng_listen(pull, pull_url, NULL, 0), 0);
    w.agent_b = start_agent(AGENT_B, pub_url, pull_url, "dev-7", w.local_b, w.log_b);
    assert_true(TH_WAIT(atomic_load(&pub_pipes_added) >= 1, 10000));
    ihc_msg *hello = NULL;
    uint64_t end = th_now_ms_() + 10000;
    while (!hello && th_now_ms_() < end) {
        ihc_msg *m = pull_recv(pull, 200);
        if (m && m->type == IHC_MSG_HELLO && m->u.hello.n_sessions >= 1)
            hello = m;
        else
            ihc_msg_free(m);
    }
    assert_non_null(hello);
    ihc_msg_free(hello);

    /* garbage frames, frames without a NUL topic, valid topics with garbage bodies */
    srand(77);
    uint8_t rnd[400];
    for (int i = 0; i < 1500; i++) {
        size_t n = 1 + (size_t)(rand() % (int)sizeof(rnd));
        for (size_t k = 0; k < n; k++)
            rnd[k] = (uint8_t)(rand() | 1); /* no NUL: no topic */
        if (i % 3 == 1)
            memcpy(rnd, "hw:", n >= 3 ? 3 : n);
        if (i % 3 == 2 && n > 12) {
            memcpy(rnd, "hw:dev-7", 9); /* valid topic (the NUL included), garbage body */
            rnd[9] = (uint8_t)(0x80 | (rand() % 16));
        }
        pub_send(pub, rnd, n);
        if (i % 200 == 199)
            th_sleep_ms_(5); /* PUB drops the oldest when the queue is full: pace a little */
    }
    static const uint8_t dd[] = {'h', 'w', ':',  'd',  'e',  'v',  '-',
                                 '7', 0,   0xdd, 0x08, 0x00, 0x00, 0x00};
    pub_send(pub, dd, sizeof(dd));
    pub_send(pub, "", 0);
    pub_send(pub, "hw:", 3);

    /* an interrupt with an invalid hw (made by hand) */
    mp m = {0};
    mp_head(&m, "interrupt", 4);
    mp_str(&m, "id");
    mp_int(&m, 5);
    mp_str(&m, "hw");
    mp_str(&m, "dev 7;rm -rf");
    mp_str(&m, "epoch");
    mp_int(&m, 99);
    mp_str(&m, "deadline_ms");
    mp_int(&m, 1);
    pub_framed(pub, "hw:dev 7;rm -rf", m.b, m.n);
    pub_framed(pub, "hw:dev-7", m.b, m.n);
    /* a sync for another agent (on its topic, and on ours): must cancel nothing here */
    m.n = 0;
    mp_head(&m, "sync", 2);
    mp_str(&m, "agent");
    mp_str(&m, "someone-else");
    mp_str(&m, "epochs");
    mp_arr(&m, 2);
    mp_map(&m, 2);
    mp_str(&m, "hw");
    mp_str(&m, "dev-7");
    mp_str(&m, "epoch");
    mp_int(&m, 1000);
    mp_map(&m, 2);
    mp_str(&m, "hw");
    mp_str(&m, "*");
    mp_str(&m, "epoch");
    mp_int(&m, 1000);
    pub_framed(pub, "ag:someone-else", m.b, m.n);
    pub_framed(pub, "ag:" AGENT_B, m.b, m.n);
    /* an interrupt listing 90k agents, and one with a huge reason field */
    m.n = 0;
    mp_head(&m, "interrupt", 5);
    mp_str(&m, "id");
    mp_int(&m, 6);
    mp_str(&m, "hw");
    mp_str(&m, "other-hw");
    mp_str(&m, "epoch");
    mp_int(&m, 1);
    mp_str(&m, "deadline_ms");
    mp_int(&m, 1);
    mp_str(&m, "agents");
    mp_arr(&m, 90000);
    for (int i = 0; i < 90000; i++)
        mp_str(&m, "a");
    pub_framed(pub, "hw:other-hw", m.b, m.n);
    /* a huge message: over the agent's limit; its SUB pipe is closed and redials */
    int pipes = atomic_load(&pub_pipes_added);
    {
        size_t n = IHC_WIRE_MAX_MSG + 64 * 1024;
        uint8_t *big = calloc(1, n);
        memcpy(big, "hw:dev-7", 9);
        big[9] = 0x81;
        pub_send(pub, big, n);
        free(big);
    }
    /* the pipe is dropped and redialled, or (if the frame was dropped earlier) kept */
    (void)TH_WAIT(atomic_load(&pub_pipes_added) > pipes, 3000);
    assert_true(alive(w.agent_b));

    /* the local API: garbage, then bodies that must be refused naming the field */
    {
        int fd = th_unix_connect(w.local_b + 7);
        assert_true(fd >= 0);
        static const uint8_t junk[] = {0xc1, 0x00, 0xff, '\r', '\n', '\r', '\n'};
        assert_true(send(fd, junk, sizeof junk, MSG_NOSIGNAL) > 0);
        int st = th_http_read_answer(fd, NULL);
        assert_true(st == -1 || (st >= 400 && st < 500));
    }
    expect_local("POST", "/v1/sessions", "", 400, "empty body");
    expect_local("POST", "/v1/sessions", "\xc1\x00\xff", 400, "bad JSON");
    expect_local("POST", "/v1/sessions", "{\"hardware_id\":\"dev 7!\"}", 400, "hardware_id");
    expect_local("POST", "/v1/sessions", "{\"hardware_id\":\"dev-7\",\"session_id\":\"../../s\"}",
                 400, "session_id");
    expect_local("POST", "/v1/sessions", "{\"hardware_id\":\"dev-7\",\"pid\":-1}", 400, "pid");
    expect_local("POST", "/v1/sessions", "{\"hardware_id\":\"dev-7\",\"pid\":1099511627776}", 400,
                 "pid");
    expect_local("POST", "/v1/sessions", "{\"hardware_id\":\"dev-7\",\"pid\":999999999}", 400,
                 "pid");
    expect_local("POST", "/v1/sessions", "{\"hardware_id\":\"dev-7\",\"pid\":\"12\"}", 400, "pid");
    expect_local("POST", "/v1/sessions", "{\"hardware_id\":\"dev-7\",\"data\":[1]}", 400, "data");
    expect_local("GET", "/v1/sessions/..%2F..%2Fetc/events", NULL, 404, NULL);
    /* pid 1 and our own parent are not the caller's processes: the agent would signal them
     * on an interrupt */
    {
        char *resp = NULL;
        int st =
            th_unix_http(w.local_b + 7, "POST", "/v1/sessions",
                         "{\"hardware_id\":\"dev-7\",\"pid\":1,\"session_id\":\"s-init\"}", &resp);
        bool named = resp && strstr(resp, "pid");
        free(resp);
        if (st == 201) {
            /* never let an interrupt reach a session of pid 1 */
            th_stop(w.agent_b, SIGKILL, 5000);
            w.agent_b = 0;
            fail_msg("the agent accepted a session for pid 1");
        }
        assert_int_equal(st, 400);
        assert_true(named);
    }
    char pbody[160];
    snprintf(pbody, sizeof pbody, "{\"hardware_id\":\"dev-7\",\"pid\":%d}", (int)getppid());
    expect_local("POST", "/v1/sessions", pbody, 400, "pid");
    expect_local("DELETE", "/v1/sessions/no-such-session", NULL, 404, "no-such-session");
    expect_local("DELETE", "/v1/sessions/x",
                 "{\"modules\":[{\"name\":\"m\",\"status\":\"ok\","
                 "\"time_ms\":-1}]}",
                 400, "time_ms");

    /* a real session of a child of ours, and many event streams on it */
    char *sleeper[] = {"sleep", "60", NULL};
    pid_t child = th_spawn(sleeper, NULL, NULL);
    assert_true(child > 0);
    snprintf(pbody, sizeof pbody,
             "{\"hardware_id\":\"dev-7\",\"pid\":%d,\"session_id\":\"s-waited\"}", (int)child);
    expect_local("POST", "/v1/sessions", pbody, 201, NULL);
    int *streams = calloc(N_STREAMS, sizeof *streams);
    for (int i = 0; i < N_STREAMS; i++) {
        streams[i] = th_unix_connect(w.local_b + 7);
        assert_true(streams[i] >= 0);
        assert_int_equal(th_http_send(streams[i], "GET", "/v1/sessions/s-waited/events", NULL), 0);
    }
    for (int i = 0; i < N_STREAMS; i++)
        if (!th_fd_read_until(streams[i], "event: session", 10000, NULL))
            fail_msg("event stream %d of %d: no session event", i, N_STREAMS);
    /* the agent still answers meanwhile */
    expect_local("GET", "/healthz", NULL, 200, NULL);

    /* a valid interrupt still produces a correct report (re-published until it arrives:
     * the SUB pipe may still be redialling) */
    char *listed[] = {AGENT_B};
    ihc_msg im = {.type = IHC_MSG_INTERRUPT};
    im.u.interrupt = (ihc_interrupt_msg){.id = 7001,
                                         .hw = "dev-7",
                                         .epoch = 1,
                                         .reason = "hostile test",
                                         .deadline_ms = (int64_t)time(NULL) * 1000 + 20000,
                                         .agents = listed,
                                         .n_agents = 1};
    uint8_t *ibuf;
    size_t ilen;
    TH_PASS(ihc_wire_encode_framed(&im, NULL, &ibuf, &ilen));
    ihc_msg *report = NULL;
    end = th_now_ms_() + 15000;
    while (!report && th_now_ms_() < end) {
        pub_send(pub, ibuf, ilen);
        ihc_msg *x;
        while (!report && (x = pull_recv(pull, 300)) != NULL) {
            if (x->type == IHC_MSG_REPORT && x->u.report.id == 7001)
                report = x;
            else
                ihc_msg_free(x);
        }
    }
    free(ibuf);
    assert_non_null(report);
    assert_string_equal(report->u.report.agent, AGENT_B);
    assert_string_equal(report->u.report.hw, "dev-7");
    assert_true(report->u.report.n_modules >= 3);
    for (size_t i = 0; i < report->u.report.n_modules; i++)
        if (report->u.report.modules[i].status != IHC_MOD_OK)
            fail_msg("module %s: status %d", report->u.report.modules[i].name,
                     (int)report->u.report.modules[i].status);
    bool has_waited = false;
    for (size_t i = 0; i < report->u.report.n_sessions; i++)
        has_waited = has_waited || strcmp(report->u.report.sessions[i], "s-waited") == 0;
    assert_true(has_waited);
    assert_true(report->u.report.n_sessions >= 2); /* and the simulated one */
    ihc_msg_free(report);

    /* every stream was told to stop */
    for (int i = 0; i < N_STREAMS; i++) {
        if (!th_fd_read_until(streams[i], "event: stop", 10000, NULL))
            fail_msg("event stream %d of %d: no stop event", i, N_STREAMS);
        close(streams[i]);
    }
    free(streams);
    th_stop(child, SIGKILL, 2000);

    /* nothing was cancelled by the forged sync or the bad interrupts; the agent survived */
    assert_int_equal(count_lines(w.log_b, "sync: cancelling"), 0);
    assert_int_equal(count_lines(w.log_b, "interrupt handled"), 1);
    assert_true(count_lines(w.log_b, "bad message dropped") >= 1);
    mp_free(&m);
    assert_true(alive(w.agent_b));
    assert_true(log_clean(w.log_b));
    /* stopped cleanly (exit 0: no leak, no sanitizer report) */
    int st = th_stop(w.agent_b, SIGTERM, 10000);
    w.agent_b = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(log_clean(w.log_b));
    th_close(nng_socket_id(pub));
    th_close(nng_socket_id(pull));
    check_healthy();
}

/* -------------------------------------------------------------------------- Redis --- */

static int64_t xlen(void)
{
    char *v = th_redis_cmd(&w.redis, "XLEN ihc:interrupts");
    int64_t n = v ? atoll(v) : -1;
    free(v);
    return n;
}

/* /healthz answers within 1 s; true when it says Redis is unreachable. */
static bool health_says_unreachable(void)
{
    char *body = NULL;
    uint64_t t0 = th_now_ms_();
    int st = th_http(w.http, "GET", "/healthz", NULL, NULL, &body);
    uint64_t took = th_now_ms_() - t0;
    if (st != 200 || took > 1000)
        fail_msg("/healthz: status %d after %llu ms", st, (unsigned long long)took);
    bool down = body && strstr(body, "unreachable");
    free(body);
    return down;
}

/* Interrupts while Redis does not answer: all succeed, fast; returns how many were made. */
static int interrupts_without_redis(void)
{
    int n = 0;
    bool unpersisted = false;
    uint64_t end = th_now_ms_() + 2500;
    while (th_now_ms_() < end || !unpersisted) {
        assert_true(n < 40);
        uint64_t t0 = th_now_ms_();
        json_t *r = normal_interrupt();
        assert_true(th_now_ms_() - t0 < 2000 + 1000); /* the session's restart included */
        if (json_is_false(json_object_get(r, "persisted")))
            unpersisted = true;
        json_decref(r);
        n++;
    }
    return n;
}

static void test_hostile_redis_hang(void **state)
{
    (void)state;
    int64_t before = xlen();
    assert_true(before >= 0);
    pid_t rp = w.redis.pid;
    assert_int_equal(kill(rp, SIGSTOP), 0);
    uint64_t stopped = th_now_ms_();
    int n = interrupts_without_redis();
    assert_true(TH_WAIT(health_says_unreachable(), 3000));
    while (th_now_ms_() < stopped + 3000)
        th_sleep_ms_(50);
    assert_int_equal(kill(rp, SIGCONT), 0);
    /* the backlog lands */
    assert_true(TH_WAIT(xlen() >= before + n, 15000));
    assert_true(TH_WAIT(!health_says_unreachable(), 10000));
    check_healthy();
}

static void test_hostile_redis_gone(void **state)
{
    (void)state;
    th_redis_kill(&w.redis);
    int n = interrupts_without_redis();
    assert_true(TH_WAIT(health_says_unreachable(), 3000));
    assert_true(alive(w.coord));
    assert_int_equal(th_redis_start(&w.redis), 0); /* same port, empty */
    assert_true(TH_WAIT(xlen() >= n, 15000));
    assert_true(TH_WAIT(!health_says_unreachable(), 10000));
    char *v = NULL;
    assert_true(TH_WAIT((v = th_redis_cmd(&w.redis, "GET ihc:hw:{dev-1}:epoch")) && atoi(v) > 0
                            ? (free(v), true)
                            : (free(v), false),
                        10000));
    check_healthy();
}

/* Everyone stops cleanly after all that: exit status 0, no leak or sanitizer report. */
static void test_hostile_shutdown(void **state)
{
    (void)state;
    int st = th_stop(w.agent_a, SIGTERM, 10000);
    w.agent_a = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        th_log_tail(w.log_a, 30);
        fail_msg("agent exit status %d; log %s", st, w.log_a);
    }
    st = th_stop(w.coord, SIGTERM, 10000);
    w.coord = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        th_log_tail(w.log_coord, 30);
        fail_msg("coordinator exit status %d; log %s", st, w.log_coord);
    }
    assert_true(log_clean(w.log_coord));
    assert_true(log_clean(w.log_a));
}

/* ---------------------------------------------------------------------------------- --- */

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    memset(&w, 0, sizeof(w));
    w.dir = th_tmpdir("hostile");
    if (!w.dir || th_redis_start(&w.redis) != 0)
        return -1;
    int pub = th_free_port(), rep = th_free_port(), ctl = th_free_port();
    w.http = th_free_port();
    snprintf(w.pub_url, sizeof(w.pub_url), "tcp://127.0.0.1:%d", pub);
    snprintf(w.rep_url, sizeof(w.rep_url), "tcp://127.0.0.1:%d", rep);
    snprintf(w.ctl_url, sizeof(w.ctl_url), "tcp://127.0.0.1:%d", ctl);
    snprintf(w.log_coord, sizeof(w.log_coord), "%s/coordinator.log", w.dir);
    snprintf(w.log_a, sizeof(w.log_a), "%s/%s.log", w.dir, AGENT_A);
    snprintf(w.log_b, sizeof(w.log_b), "%s/%s.log", w.dir, AGENT_B);
    snprintf(w.local_a, sizeof(w.local_a), "unix://%s/a.sock", w.dir);
    snprintf(w.local_b, sizeof(w.local_b), "unix://%s/b.sock", w.dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (w.agent_b > 0)
        th_stop(w.agent_b, SIGTERM, 5000);
    if (w.agent_a > 0)
        th_stop(w.agent_a, SIGTERM, 5000);
    if (w.coord > 0)
        th_stop(w.coord, SIGTERM, 5000);
    if (w.redis.pid > 0)
        kill(w.redis.pid, SIGCONT);
    th_redis_stop(&w.redis);
    th_tmpdir_remove(w.dir);
    free(w.dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_startup),    cmocka_unit_test(test_hostile_pull),
        cmocka_unit_test(test_hostile_control),    cmocka_unit_test(test_hostile_http),
        cmocka_unit_test(test_hostile_agent),      cmocka_unit_test(test_hostile_redis_hang),
        cmocka_unit_test(test_hostile_redis_gone), cmocka_unit_test(test_hostile_shutdown),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
