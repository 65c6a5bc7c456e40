/* The agent's local API (HTTP/1.1 + JSON on a Unix socket) driven with raw sockets, against
 * a real redis-server, ihc-coordinator and ihc-agent: every route, the stop event of an HTTP
 * interrupt, module results reported in DELETE appearing in the interrupt's result, sessions
 * held by connections ending when their holder closes or is SIGKILLed, and stray clients
 * (connect+close, garbage, half a request, a client killed mid-request, 1,000 idle
 * connections, more than IHC_LOCAL_MAX_CONNS) that must not stop the next client or
 * `ihc run`, and clients trickling a request closed at IHC_LOCAL_REQUEST_DEADLINE while
 * event streams and connections holding a session stay. */
#include "harness.h"

#include "err.h"

#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <poll.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define GONE_WITHIN_MS 500 /* a held session outlives its last holder by at most this */
#define SMALL_MAX      8   /* IHC_LOCAL_MAX_CONNS of the second agent */
#define N_IDLE         1000
#define N_TRICKLE      20  /* clients trickling half a request at the deadline agent */
#define TRICKLE_MS     300 /* one byte this often */

static struct {
    th_redis redis;
    char *dir;
    int http;
    char pub_url[64], rep_url[64], ctl_url[64];
    pid_t coord, agent, small, dl;
    char sock[512], small_sock[512], dl_sock[512];
    char agent_log[512];
} w;

static pid_t start_agent(const char *id, const char *sock, const char *max_conns,
                         const char *extra_env, const char *extra_env2);

/* ---- helpers ---- */

static json_t *parse(const char *body)
{
    json_t *j = body ? json_loads(body, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
    if (!j)
        fail_msg("not JSON: %s", body ? body : "(none)");
    return j;
}

/* A request on its own connection; fails unless the status is want. Returns the body
 * parsed (caller decrefs). */
static json_t *call(const char *method, const char *path, const char *body, int want)
{
    char *resp = NULL;
    int st = th_unix_http(w.sock, method, path, body, &resp);
    if (st != want)
        fail_msg("%s %s: status %d, want %d: %s", method, path, st, want, resp ? resp : "");
    json_t *j = parse(resp);
    free(resp);
    return j;
}

/* An error answer naming word. */
static void expect_error(const char *method, const char *path, const char *body, int want,
                         const char *word)
{
    json_t *j = call(method, path, body, want);
    const char *e = json_string_value(json_object_get(j, "error"));
    if (!e || !strstr(e, word))
        fail_msg("%s %s: error '%s' does not name '%s'", method, path, e ? e : "(none)", word);
    json_decref(j);
}

static bool listed(const char *sid)
{
    char *resp = NULL;
    if (th_unix_http(w.sock, "GET", "/v1/sessions", NULL, &resp) != 200) {
        free(resp);
        return true; /* cannot tell: not gone */
    }
    bool in = resp && strstr(resp, sid) != NULL;
    free(resp);
    return in;
}

/* POSTs a session without pid on fd (kept alive); its id into sid. */
static void begin_held(int fd, const char *hw, const char *module, char *sid, size_t cap)
{
    char body[256];
    snprintf(body, sizeof body, "{\"hardware_id\":\"%s\",\"module\":\"%s\"}", hw, module);
    assert_int_equal(th_http_send(fd, "POST", "/v1/sessions", body), 0);
    char *resp = NULL;
    int st = th_http_read_one(fd, &resp);
    if (st != 201)
        fail_msg("POST /v1/sessions: %d %s", st, resp ? resp : "");
    json_t *j = parse(resp);
    snprintf(sid, cap, "%s", json_string_value(json_object_get(j, "session_id")));
    assert_true(json_integer_value(json_object_get(j, "epoch")) >= 0);
    json_decref(j);
    free(resp);
}

/* Opens the event stream of sid at the agent on sock; returns its fd once the "session"
 * event came. */
static int open_stream_at(const char *sock, const char *sid)
{
    int fd = th_unix_connect(sock);
    assert_true(fd >= 0);
    char path[256];
    snprintf(path, sizeof path, "/v1/sessions/%s/events", sid);
    assert_int_equal(th_http_send(fd, "GET", path, NULL), 0);
    char *seen = NULL;
    bool ok = th_fd_read_until(fd, "event: session", 5000, &seen);
    if (!ok || !strstr(seen, "200 OK") || !strstr(seen, "text/event-stream"))
        fail_msg("event stream of %s: %s", sid, seen);
    free(seen);
    return fd;
}

static int open_stream(const char *sid)
{
    return open_stream_at(w.sock, sid);
}

static bool gone_within(const char *sid, int ms, uint64_t *took)
{
    uint64_t t0 = th_now_ms_();
    bool gone = TH_WAIT(!listed(sid), ms);
    *took = th_now_ms_() - t0;
    return gone;
}

/* `ihc run --hw dev-r -- true` through the API: exit status 0. */
static void run_works(void)
{
    char env_local[600], log[600];
    snprintf(env_local, sizeof env_local, "IHC_LOCAL_URL=unix://%s", w.sock);
    snprintf(log, sizeof log, "%s/run.log", w.dir);
    char *argv[] = {(char *)th_bin("ihc"), "run", "--hw", "dev-r", "--", "true", NULL};
    char *env[] = {env_local, NULL};
    pid_t p = th_spawn(argv, log, env);
    assert_true(p > 0);
    int st = th_wait_exit(p, 10000);
    if (st == -1) {
        th_stop(p, SIGKILL, 1000);
        fail_msg("ihc run did not finish");
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        th_log_tail(log, 10);
        fail_msg("ihc run: status 0x%x", st);
    }
}

/* The next client is served: healthz answers and ihc run works. */
static void still_serves(const char *after)
{
    uint64_t t0 = th_now_ms_();
    char *resp = NULL;
    int st = th_unix_http(w.sock, "GET", "/healthz", NULL, &resp);
    if (st != 200)
        fail_msg("after %s: GET /healthz gave %d", after, st);
    free(resp);
    run_works();
    fprintf(stderr, "after %s: healthz and ihc run served in %llu ms\n", after,
            (unsigned long long)(th_now_ms_() - t0));
}

/* ---- routes ---- */

static void test_local_routes(void **state)
{
    (void)state;
    json_t *j = call("GET", "/healthz", NULL, 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    assert_string_equal(json_string_value(json_object_get(j, "agent")), "local-agent");
    assert_true(json_is_integer(json_object_get(j, "sessions")));
    json_decref(j);
    assert_true(TH_WAIT(({
                            json_t *h = call("GET", "/healthz", NULL, 200);
                            bool c = json_is_true(json_object_get(h, "coordinator_connected"));
                            json_decref(h);
                            c;
                        }),
                        10000));

    /* a pid session: the caller itself (this process) */
    char body[256];
    snprintf(body, sizeof body,
             "{\"hardware_id\":\"dev-a\",\"pid\":%d,\"module\":\"m1\",\"data\":{\"k\":1}}",
             (int)getpid());
    j = call("POST", "/v1/sessions", body, 201);
    char sid[256];
    snprintf(sid, sizeof sid, "%s", json_string_value(json_object_get(j, "session_id")));
    assert_string_equal(json_string_value(json_object_get(j, "hardware_id")), "dev-a");
    assert_true(json_is_integer(json_object_get(j, "epoch")));
    json_decref(j);

    j = call("GET", "/v1/sessions", NULL, 200);
    json_t *arr = json_object_get(j, "sessions");
    bool found = false;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *s = json_array_get(arr, i);
        if (strcmp(json_string_value(json_object_get(s, "session_id")), sid) != 0)
            continue;
        found = true;
        assert_int_equal(json_integer_value(json_object_get(s, "pid")), getpid());
        assert_string_equal(json_string_value(json_object_get(s, "module")), "m1");
        assert_string_equal(json_string_value(json_object_get(s, "state")), "active");
        assert_true(json_integer_value(json_object_get(s, "created_ms")) > 0);
    }
    assert_true(found);
    json_decref(j);

    /* its stream: the session event first */
    int fd = open_stream(sid);
    char path[300];
    snprintf(path, sizeof path, "/v1/sessions/%s", sid);
    j = call("DELETE", path, "{\"state\":\"done\"}", 200);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "done");
    json_decref(j);
    /* the stream ends with the session */
    assert_true(th_fd_read_until(fd, "event: end", 3000, NULL));
    close(fd);
    assert_false(listed(sid));

    /* errors name the problem */
    expect_error("DELETE", path, NULL, 404, "unknown session");
    expect_error("GET", "/v1/sessions/nope/events", NULL, 404, "nope");
    expect_error("POST", "/v1/sessions", "{\"hardware_id\":", 400, "bad JSON");
    expect_error("POST", "/v1/sessions", "[1]", 400, "object");
    expect_error("POST", "/v1/sessions", "{\"hardware_id\":\"bad hw!\"}", 400, "hardware_id");
    expect_error("POST", "/v1/sessions", "{\"module\":\"m\"}", 400, "hardware_id");
    expect_error("POST", "/v1/sessions", "{\"hardware_id\":\"dev-a\",\"bogus\":1}", 400, "bogus");
    expect_error("POST", "/v1/sessions", "{\"hardware_id\":\"dev-a\",\"pid\":999999999}", 400,
                 "pid");
    /* pid 1 is not this process nor one of its children */
    expect_error("POST", "/v1/sessions", "{\"hardware_id\":\"dev-a\",\"pid\":1}", 400,
                 "not the caller");
    expect_error("DELETE", "/v1/sessions/x", "{\"state\":\"weird\"}", 400, "state");
    expect_error("DELETE", "/v1/sessions/x", "{\"modules\":[{\"name\":\"m\"}]}", 400, "status");
    expect_error("GET", "/v2/nothing", NULL, 404, "no such endpoint");
    expect_error("PUT", "/v1/sessions", NULL, 405, "PUT");
}

/* ---- the stop event and module results ---- */

typedef struct {
    int status;
    char *body;
    uint64_t t_sent, t_done;
} interrupt_call;

static void *interrupt_main(void *arg)
{
    interrupt_call *ic = arg;
    ic->t_sent = th_now_ms_();
    ic->status = th_http(w.http, "POST", "/v1/interrupt", NULL,
                         "{\"hardware_id\":\"dev-s\",\"reason\":\"test stop\"}", &ic->body);
    ic->t_done = th_now_ms_();
    return NULL;
}

static void test_local_stop_and_module_results(void **state)
{
    (void)state;
    int hold = th_unix_connect(w.sock);
    assert_true(hold >= 0);
    char sid[256];
    begin_held(hold, "dev-s", "py_stream", sid, sizeof sid);
    int fd = open_stream(sid);
    /* the coordinator learns of the session before it is interrupted */
    assert_true(TH_WAIT(({
                            char *r = NULL;
                            th_http(w.http, "GET", "/v1/sessions?hardware_id=dev-s", NULL, NULL,
                                    &r);
                            bool in = r && strstr(r, sid);
                            free(r);
                            in;
                        }),
                        5000));

    interrupt_call ic = {0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, interrupt_main, &ic), 0);
    char *seen = NULL;
    bool stop = th_fd_read_until(fd, "\"deadline_ms\":2000}", 5000, &seen);
    uint64_t t_stop = th_now_ms_();
    if (!stop) {
        pthread_join(t, NULL);
        fail_msg("no stop event: %s", seen ? seen : "");
    }
    /* event: stop with the interrupt's id, hardware_id, reason and the module timeout */
    const char *ev = strstr(seen, "event: stop\ndata: {");
    assert_non_null(ev);
    json_t *d = parse(strchr(ev, '{'));
    assert_true(json_integer_value(json_object_get(d, "interrupt_id")) > 0);
    assert_string_equal(json_string_value(json_object_get(d, "hardware_id")), "dev-s");
    assert_string_equal(json_string_value(json_object_get(d, "reason")), "test stop");
    json_decref(d);
    free(seen);

    /* the process ran its own methods: reported in DELETE, on its holding connection */
    char path[300];
    snprintf(path, sizeof path, "/v1/sessions/%s", sid);
    assert_int_equal(
        th_http_send(hold, "DELETE", path,
                     "{\"state\":\"interrupted\",\"modules\":[{\"name\":\"py_stream\","
                     "\"status\":\"ok\",\"time_ms\":12.5},{\"name\":\"py_tts\","
                     "\"status\":\"error\",\"time_ms\":3,\"error\":\"device busy\"}]}"),
        0);
    char *resp = NULL;
    assert_int_equal(th_http_read_one(hold, &resp), 200);
    free(resp);
    pthread_join(t, NULL);
    fprintf(stderr, "stop event %llu ms after the HTTP interrupt was sent; result after %llu ms\n",
            (unsigned long long)(t_stop - ic.t_sent), (unsigned long long)(ic.t_done - ic.t_sent));
    if (ic.status != 200)
        fail_msg("interrupt: %d %s", ic.status, ic.body ? ic.body : "");
    /* the result carries the reported modules and the session */
    assert_non_null(strstr(ic.body, "\"py_stream\""));
    assert_non_null(strstr(ic.body, "\"py_tts\""));
    assert_non_null(strstr(ic.body, "device busy"));
    assert_non_null(strstr(ic.body, sid));
    free(ic.body);
    close(fd);
    close(hold);
}

/* ---- sessions held by connections ---- */

static void test_local_held_sessions_end(void **state)
{
    (void)state;
    uint64_t took;
    /* held by the registering connection only */
    int hold = th_unix_connect(w.sock);
    char sid[256];
    begin_held(hold, "dev-h", "m", sid, sizeof sid);
    assert_true(listed(sid));
    close(hold);
    assert_true(gone_within(sid, GONE_WITHIN_MS, &took));
    fprintf(stderr, "registering connection closed: session gone after %llu ms\n",
            (unsigned long long)took);

    /* held by a stream too: closing the registering connection leaves it */
    hold = th_unix_connect(w.sock);
    begin_held(hold, "dev-h", "m", sid, sizeof sid);
    int fd = open_stream(sid);
    close(hold);
    th_sleep_ms_(200);
    assert_true(listed(sid));
    close(fd);
    assert_true(gone_within(sid, GONE_WITHIN_MS, &took));
    fprintf(stderr, "last event stream closed: session gone after %llu ms\n",
            (unsigned long long)took);
    assert_true(TH_WAIT(th_log_has(w.agent_log, "state=gone by=stream_closed", 0), 2000));

    /* its holder process SIGKILLed: the kernel closes both its connections */
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(pfd[0]);
        int h = th_unix_connect(w.sock);
        char csid[256];
        begin_held(h, "dev-h", "m", csid, sizeof csid);
        int s = open_stream(csid);
        (void)s;
        ssize_t n = write(pfd[1], csid, strlen(csid) + 1);
        (void)n;
        pause();
        _exit(0);
    }
    close(pfd[1]);
    char csid[256] = "";
    ssize_t n = read(pfd[0], csid, sizeof csid);
    close(pfd[0]);
    assert_true(n > 0);
    assert_true(listed(csid));
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    assert_true(gone_within(csid, GONE_WITHIN_MS, &took));
    fprintf(stderr, "holder SIGKILLed: session gone after %llu ms\n", (unsigned long long)took);
}

/* ---- robustness ---- */

static void test_local_stray_clients(void **state)
{
    (void)state;
    /* connect + close (nng#1518 wedged the old ipc endpoint for good on this) */
    for (int i = 0; i < 5; i++) {
        int fd = th_unix_connect(w.sock);
        assert_true(fd >= 0);
        close(fd);
    }
    still_serves("connect+close");

    /* garbage */
    int fd = th_unix_connect(w.sock);
    static const char junk[] = "\x01\x02\xff\xfe garbage \r\n\r\n\x00\x7f not http\r\n\r\n";
    assert_true(send(fd, junk, sizeof junk - 1, MSG_NOSIGNAL) > 0);
    char *resp = NULL;
    int st = th_http_read_answer(fd, &resp); /* closes fd */
    fprintf(stderr, "garbage answered %d\n", st);
    assert_true(st == -1 || (st >= 400 && st < 500));
    free(resp);
    still_serves("garbage");

    /* half a request, then close */
    fd = th_unix_connect(w.sock);
    static const char half[] = "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                               "\r\n{\"hardware_id\":";
    assert_true(send(fd, half, sizeof half - 1, MSG_NOSIGNAL) > 0);
    close(fd);
    still_serves("half a request");

    /* a client SIGKILLed mid-request */
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(pfd[0]);
        int c = th_unix_connect(w.sock);
        ssize_t k = send(c, half, sizeof half - 1, MSG_NOSIGNAL);
        k = write(pfd[1], "r", 1);
        (void)k;
        pause();
        _exit(0);
    }
    close(pfd[1]);
    char ready;
    assert_int_equal(read(pfd[0], &ready, 1), 1);
    close(pfd[0]);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    still_serves("a client SIGKILLed mid-request");

    /* 1,000 idle connections held open */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < N_IDLE + 256 && rl.rlim_max >= N_IDLE + 256) {
        rl.rlim_cur = N_IDLE + 256;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int *idle = calloc(N_IDLE, sizeof *idle);
    for (int i = 0; i < N_IDLE; i++) {
        idle[i] = th_unix_connect(w.sock);
        if (idle[i] < 0)
            fail_msg("idle connection %d: cannot connect", i);
    }
    still_serves("1000 idle connections");
    for (int i = 0; i < N_IDLE; i++)
        close(idle[i]);
    free(idle);
    still_serves("1000 idle connections closed");
}

static void test_local_max_conns(void **state)
{
    (void)state;
    int fds[SMALL_MAX];
    for (int i = 0; i < SMALL_MAX; i++) {
        fds[i] = th_unix_connect(w.small_sock);
        assert_true(fds[i] >= 0);
    }
    /* they are in: one request on the last answers 200 */
    assert_int_equal(th_http_send(fds[SMALL_MAX - 1], "GET", "/healthz", NULL), 0);
    char *resp = NULL;
    assert_int_equal(th_http_read_one(fds[SMALL_MAX - 1], &resp), 200);
    free(resp);
    /* one more: a clear 503 */
    int st = th_unix_http(w.small_sock, "GET", "/healthz", NULL, &resp);
    if (st != 503 || !resp || !strstr(resp, "IHC_LOCAL_MAX_CONNS"))
        fail_msg("past IHC_LOCAL_MAX_CONNS: %d %s", st, resp ? resp : "");
    free(resp);
    for (int i = 0; i < SMALL_MAX; i++)
        close(fds[i]);
    /* served again once they are gone */
    assert_true(TH_WAIT(th_unix_http(w.small_sock, "GET", "/healthz", NULL, NULL) == 200, 5000));
}

/* ---- the request deadline ---- */

/* A client sending a request a byte every TRICKLE_MS: fd, when it began (ms) and when the
 * agent closed it (0: open). */
typedef struct {
    int fd;
    uint64_t t0, closed;
} trickler;

/* Whether the agent closed fd (EOF or error on read; anything else read is discarded). */
static bool peer_closed(int fd)
{
    struct pollfd pf = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&pf, 1, 0) != 1)
        return false;
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* Sends a byte every TRICKLE_MS on each open trickler until the agent closed all of them or
 * timeout_ms passed; once, serve_at_ms after the start, a normal client must be served. */
static void trickle_until_closed(trickler *t, size_t n, int timeout_ms, int serve_at_ms,
                                 const char *sock)
{
    uint64_t start = th_now_ms_(), end = start + (uint64_t)timeout_ms;
    bool served = serve_at_ms < 0;
    size_t open = n;
    while (open > 0 && th_now_ms_() < end) {
        for (size_t i = 0; i < n; i++) {
            if (t[i].closed)
                continue;
            if (peer_closed(t[i].fd) || send(t[i].fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
                t[i].closed = th_now_ms_();
                open--;
            }
        }
        if (!served && th_now_ms_() - start >= (uint64_t)serve_at_ms) {
            uint64_t t1 = th_now_ms_();
            char *resp = NULL;
            int st = th_unix_http(sock, "GET", "/v1/sessions", NULL, &resp);
            free(resp);
            if (st != 200)
                fail_msg("a normal client among the tricklers got %d", st);
            fprintf(stderr, "normal client served in %llu ms among %zu tricklers\n",
                    (unsigned long long)(th_now_ms_() - t1), open);
            served = true;
        }
        /* wait out the tick, noticing closures as they come */
        for (size_t i = 0; i < n && open > 0; i++) {
            if (t[i].closed)
                continue;
            struct pollfd pf = {.fd = t[i].fd, .events = POLLIN | POLLRDHUP};
            int left = (int)(TRICKLE_MS / (int)open);
            poll(&pf, 1, left > 0 ? left : 1);
        }
    }
}

/* Each trickler was closed between 0.8 and 2.5 times the 1 s deadline after it began. */
static void expect_closed_at_deadline(const trickler *t, size_t n, const char *what)
{
    uint64_t lo = UINT64_MAX, hi = 0;
    for (size_t i = 0; i < n; i++) {
        if (!t[i].closed)
            fail_msg("%s %zu: still open after the deadline", what, i);
        uint64_t took = t[i].closed - t[i].t0;
        lo = took < lo ? took : lo;
        hi = took > hi ? took : hi;
        if (took < 800 || took > 2500)
            fail_msg("%s %zu: closed after %llu ms, want 800-2500", what, i,
                     (unsigned long long)took);
    }
    fprintf(stderr, "%zu %s closed after %llu-%llu ms (deadline 1 s)\n", n, what,
            (unsigned long long)lo, (unsigned long long)hi);
}

static int64_t deadline_closed(void)
{
    char *resp = NULL;
    int st = th_unix_http(w.dl_sock, "GET", "/healthz", NULL, &resp);
    if (st != 200)
        fail_msg("GET /healthz: %d %s", st, resp ? resp : "");
    json_t *j = parse(resp);
    free(resp);
    json_t *v = json_object_get(j, "deadline_closed");
    if (!json_is_integer(v))
        fail_msg("GET /healthz has no deadline_closed");
    int64_t n = json_integer_value(v);
    json_decref(j);
    return n;
}

/* An agent with IHC_LOCAL_REQUEST_DEADLINE=1: clients trickling half a request (fresh, or
 * the next one on a kept-alive connection) are closed at the deadline, counted and logged
 * at most once a second, while a normal client is served, an event stream and a
 * connection holding a session stay open past it. */
static void test_local_request_deadline(void **state)
{
    (void)state;
    char log[600];
    snprintf(w.dl_sock, sizeof w.dl_sock, "%s/deadline.sock", w.dir);
    snprintf(log, sizeof log, "%s/deadline-agent.log", w.dir);
    /* the idle timeout stays 30 s: libmicrohttpd's own timeout must not be what closes them */
    w.dl = start_agent("deadline-agent", w.dl_sock, "4096", "IHC_LOCAL_REQUEST_DEADLINE=1", NULL);
    assert_true(w.dl > 0);
    assert_true(th_log_has(log, "request_deadline_s=1 ", 0));
    assert_int_equal(deadline_closed(), 0);

    /* a session held by a kept-alive connection, and its event stream */
    int held = th_unix_connect(w.dl_sock);
    assert_true(held >= 0);
    char sid[128];
    begin_held(held, "dev-dl", "slow", sid, sizeof sid);
    int stream = open_stream_at(w.dl_sock, sid);
    uint64_t stream_t0 = th_now_ms_();

    /* fresh connections trickling half a request: the deadline counts from the accept */
    static const char half[] = "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                               "\r\n{\"hardware_id\":";
    trickler t[N_TRICKLE];
    for (size_t i = 0; i < N_TRICKLE; i++) {
        t[i].fd = th_unix_connect(w.dl_sock);
        assert_true(t[i].fd >= 0);
        t[i].t0 = th_now_ms_();
        t[i].closed = 0;
        assert_true(send(t[i].fd, half, sizeof half - 1, MSG_NOSIGNAL) > 0);
    }
    trickle_until_closed(t, N_TRICKLE, 6000, 400, w.dl_sock);
    expect_closed_at_deadline(t, N_TRICKLE, "fresh tricklers");
    for (size_t i = 0; i < N_TRICKLE; i++)
        close(t[i].fd);

    /* a kept-alive connection: answered, then its next request trickles in after its
     * request line; the deadline counts from that */
    trickler k = {.fd = th_unix_connect(w.dl_sock)};
    assert_true(k.fd >= 0);
    assert_int_equal(th_http_send(k.fd, "GET", "/healthz", NULL), 0);
    char *resp = NULL;
    assert_int_equal(th_http_read_one(k.fd, &resp), 200);
    free(resp);
    static const char next[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    assert_true(send(k.fd, next, sizeof next - 1, MSG_NOSIGNAL) > 0);
    k.t0 = th_now_ms_();
    trickle_until_closed(&k, 1, 6000, -1, NULL);
    expect_closed_at_deadline(&k, 1, "kept-alive trickler");
    close(k.fd);

    /* the stream and the holder outlived the deadline: the stream still ends with the
     * session the holder DELETEs */
    assert_true(th_now_ms_() - stream_t0 > 2000);
    assert_false(peer_closed(stream));
    char path[256];
    snprintf(path, sizeof path, "/v1/sessions/%s", sid);
    assert_int_equal(th_http_send(held, "DELETE", path, "{\"state\":\"done\"}"), 0);
    assert_int_equal(th_http_read_one(held, &resp), 200);
    free(resp);
    char *seen = NULL;
    bool ended = th_fd_read_until(stream, "event: end", 5000, &seen);
    if (!ended)
        fail_msg("the stream did not see its session end: %s", seen ? seen : "");
    free(seen);
    close(stream);
    close(held);

    /* counted, and logged at most once a second */
    assert_int_equal(deadline_closed(), N_TRICKLE + 1);
    char *text = th_slurp(log);
    size_t lines = 0;
    for (const char *p = text; (p = strstr(p, "no whole request within")) != NULL; p++)
        lines++;
    fprintf(stderr, "%d closures logged in %zu lines\n", N_TRICKLE + 1, lines);
    if (lines < 1 || lines > 4 || !strstr(text, "IHC_LOCAL_REQUEST_DEADLINE=1s") ||
        !strstr(text, "total=21)"))
        fail_msg("deadline closures logged in %zu lines: %s", lines, text);
    free(text);

    int st = th_stop(w.dl, SIGTERM, 5000);
    w.dl = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- the coordinator's nng listeners ---- */

static int tcp_port_of(const char *url)
{
    const char *c = strrchr(url, ':');
    return c ? atoi(c + 1) : -1;
}

static void raw_connect_close(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    close(fd);
}

static bool agent_listed(const char *id)
{
    char *r = NULL;
    th_http(w.http, "GET", "/v1/agents", NULL, NULL, &r);
    char want[128];
    snprintf(want, sizeof want, "\"agent_id\":\"%s\"", id);
    bool in = r && strstr(r, want);
    free(r);
    return in;
}

/* Raw connect + close on PUB, PULL and the control REP (tcp://): each keeps accepting — a
 * new agent registers and a control request is answered. ipc:// listeners are refused at
 * start-up: there the same connect + close wedged them (nng#1518). */
static void test_local_coordinator_listeners(void **state)
{
    (void)state;
    const char *urls[] = {w.pub_url, w.rep_url, w.ctl_url};
    for (int k = 0; k < 10; k++)
        for (size_t i = 0; i < 3; i++)
            raw_connect_close(tcp_port_of(urls[i]));
    char *json = NULL;
    int st = th_control(w.ctl_url, "stats", NULL, NULL, 5000, &json);
    free(json);
    assert_int_equal(st, 200);
    char sock[600];
    snprintf(sock, sizeof sock, "%s/late.sock", w.dir);
    pid_t late = start_agent("late-agent", sock, "16", NULL, NULL);
    assert_true(late > 0);
    bool listed_ok = TH_WAIT(agent_listed("late-agent"), 10000);
    th_stop(late, SIGTERM, 5000);
    assert_true(listed_ok);

    char log[600], ipc[600], http[64];
    snprintf(log, sizeof log, "%s/coordinator-ipc.log", w.dir);
    snprintf(ipc, sizeof ipc, "ipc://%s/control.sock", w.dir);
    snprintf(http, sizeof http, "127.0.0.1:%d", th_free_port());
    char *argv[] = {(char *)th_bin("ihc-coordinator"),
                    "--control",
                    ipc,
                    "--http",
                    http,
                    "--redis",
                    w.redis.url,
                    NULL};
    pid_t c = th_spawn(argv, log, NULL);
    assert_true(c > 0);
    st = th_wait_exit(c, 10000);
    if (st == -1)
        th_stop(c, SIGKILL, 1000);
    assert_true(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 2);
    assert_true(th_log_has(log, "does not listen on ipc://", 0));
    assert_true(th_log_has(log, "nng#1518", 0));
}

/* Last: the agents stop cleanly (exit 0; under sanitizers also without leaks or errors) and
 * remove their sockets. */
static void test_local_agents_stop(void **state)
{
    (void)state;
    int st = th_stop(w.agent, SIGTERM, 5000);
    w.agent = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    st = th_stop(w.small, SIGTERM, 5000);
    w.small = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    struct stat sst;
    assert_int_not_equal(stat(w.sock, &sst), 0);
}

/* ---- fixture ---- */

static pid_t start_agent(const char *id, const char *sock, const char *max_conns,
                         const char *extra_env, const char *extra_env2)
{
    char log[600], local[600], env_max[64];
    snprintf(log, sizeof log, "%s/%s.log", w.dir, id);
    snprintf(local, sizeof local, "unix://%s", sock);
    snprintf(env_max, sizeof env_max, "IHC_LOCAL_MAX_CONNS=%s", max_conns);
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    w.pub_url,
                    "--report",
                    w.rep_url,
                    "--id",
                    (char *)id,
                    "--local",
                    local,
                    NULL};
    char *env[] = {"IHC_MODULE_TIMEOUT=2.0", "IHC_HEARTBEAT_INTERVAL=0.2", env_max,
                   (char *)extra_env,        (char *)extra_env2,           NULL};
    pid_t p = th_spawn(argv, log, env);
    if (p <= 0)
        return -1;
    if (!TH_WAIT(th_unix_http(sock, "GET", "/healthz", NULL, NULL) == 200, 10000)) {
        th_log_tail(log, 20);
        return -1;
    }
    return p;
}

static int setup(void **state)
{
    (void)state;
    w.dir = th_tmpdir("local");
    if (!w.dir || th_redis_start(&w.redis) != 0)
        return -1;
    w.http = th_free_port();
    snprintf(w.pub_url, sizeof w.pub_url, "tcp://127.0.0.1:%d", th_free_port());
    snprintf(w.rep_url, sizeof w.rep_url, "tcp://127.0.0.1:%d", th_free_port());
    snprintf(w.ctl_url, sizeof w.ctl_url, "tcp://127.0.0.1:%d", th_free_port());
    char log[600], http[64];
    snprintf(log, sizeof log, "%s/coordinator.log", w.dir);
    snprintf(http, sizeof http, "127.0.0.1:%d", w.http);
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
    char *env[] = {"INTERRUPT_TIMEOUT=5.0", "IHC_AGENT_TTL=3", NULL};
    w.coord = th_spawn(argv, log, env);
    if (w.coord <= 0 ||
        !TH_WAIT(th_http(w.http, "GET", "/healthz", NULL, NULL, NULL) == 200, 10000))
        return -1;
    snprintf(w.sock, sizeof w.sock, "%s/agent.sock", w.dir);
    snprintf(w.small_sock, sizeof w.small_sock, "%s/small.sock", w.dir);
    snprintf(w.agent_log, sizeof w.agent_log, "%s/local-agent.log", w.dir);
    w.agent = start_agent("local-agent", w.sock, "4096", NULL, NULL);
    w.small = start_agent("small-agent", w.small_sock, "8", NULL, NULL);
    if (w.agent <= 0 || w.small <= 0)
        return -1;
    /* the socket is mode 0660 */
    struct stat st;
    if (stat(w.sock, &st) != 0 || (st.st_mode & 0777) != 0660) {
        fprintf(stderr, "socket mode %o, want 0660\n", (unsigned)(st.st_mode & 0777));
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (w.agent > 0)
        th_stop(w.agent, SIGTERM, 5000);
    if (w.small > 0)
        th_stop(w.small, SIGTERM, 5000);
    if (w.dl > 0)
        th_stop(w.dl, SIGTERM, 5000);
    if (w.coord > 0)
        th_stop(w.coord, SIGTERM, 5000);
    th_redis_stop(&w.redis);
    th_tmpdir_remove(w.dir);
    free(w.dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_routes),
        cmocka_unit_test(test_local_stop_and_module_results),
        cmocka_unit_test(test_local_held_sessions_end),
        cmocka_unit_test(test_local_stray_clients),
        cmocka_unit_test(test_local_max_conns),
        cmocka_unit_test(test_local_request_deadline),
        cmocka_unit_test(test_local_coordinator_listeners),
        cmocka_unit_test(test_local_agents_stop),
    };
    return cmocka_run_group_tests_name("local_api", tests, setup, teardown);
}
