/* HTTP API tests: coordinator/http.c against a fake coordinator (the api.h functions defined
 * here, answering interrupts from another thread), spoken to over real TCP sockets. */
#include "harness.h"

#include "api.h"
#include "config.h"
#include "err.h"
#include "events.h"
#include "http.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the fake coordinator ---------------------------------------------------------------- */

struct ihc_coord {
    int unused;
};

typedef struct job {
    ihc_api_done_fn done;
    void *arg;
    char *json;
    int status;
    bool hold;
    struct job *next;
} job;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *jobs;
    int queued;   /* jobs waiting */
    int gate;     /* answer nothing until this many are queued (0: no gate) */
    bool release; /* answer held jobs too */
    bool stop;
    pthread_t thread;
} fake = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static ihc_events *events;      /* what the fake coordinator emits */
static atomic_int n_interrupts; /* ihc_api_interrupt calls */
static atomic_int n_rejected;
static atomic_int n_answered;
static struct ihc_coord coord;

ihc_events *ihc_api_events(ihc_coord *c)
{
    assert_ptr_equal(c, &coord);
    return events;
}

void ihc_api_count_rejected(ihc_coord *c)
{
    assert_ptr_equal(c, &coord);
    atomic_fetch_add(&n_rejected, 1);
}

void ihc_api_interrupt(ihc_coord *c, const char *hw, const char *reason, int64_t timeout_ms,
                       ihc_api_done_fn done, void *arg)
{
    assert_ptr_equal(c, &coord);
    atomic_fetch_add(&n_interrupts, 1);
    json_t *doc;
    if (strchr(hw, ' ') != NULL || hw[0] == '\0') {
        /* refused up front: answered synchronously, as api.c does */
        doc = json_pack("{s:s}", "error", "hardware_id: invalid hardware_id");
        char *s = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        done(400, s, arg);
        return;
    }
    doc = json_pack("{s:b,s:s,s:s?,s:I}", "success", 1, "hardware_id", hw, "reason", reason,
                    "timeout_ms", (json_int_t)timeout_ms);
    char *s = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (strcmp(hw, "sync") == 0) {
        done(200, s, arg);
        return;
    }
    job *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->done = done;
    j->arg = arg;
    j->json = s;
    j->status = 200;
    j->hold = strcmp(hw, "hold") == 0;
    pthread_mutex_lock(&fake.mu);
    j->next = fake.jobs;
    fake.jobs = j;
    fake.queued++;
    pthread_cond_broadcast(&fake.cv);
    pthread_mutex_unlock(&fake.mu);
}

int ihc_api_query(ihc_coord *c, const char *op, const char *hw, char **body)
{
    assert_ptr_equal(c, &coord);
    if (strcmp(op, "metrics") == 0) {
        *body = strdup("# TYPE ihc_up gauge\nihc_up 1\n");
        return 200;
    }
    if (hw != NULL && strcmp(hw, "bad") == 0) {
        *body = strdup("{\"error\":\"hardware_id: invalid\"}");
        return 400;
    }
    json_t *doc = json_pack("{s:s,s:s?}", "op", op, "hw", hw);
    *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return 200;
}

/* Answers queued interrupts a moment later, from its own thread, like the coordinator. */
static void *fake_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&fake.mu);
    for (;;) {
        job *ready = NULL;
        if (fake.gate == 0 || fake.queued >= fake.gate) {
            job **pp = &fake.jobs;
            while (*pp != NULL) {
                job *j = *pp;
                if (j->hold && !fake.release && !fake.stop) {
                    pp = &j->next;
                    continue;
                }
                *pp = j->next;
                fake.queued--;
                j->next = ready;
                ready = j;
            }
        }
        if (ready == NULL) {
            if (fake.stop)
                break;
            pthread_cond_wait(&fake.cv, &fake.mu);
            continue;
        }
        pthread_mutex_unlock(&fake.mu);
        th_sleep_ms_(2);
        while (ready != NULL) {
            job *j = ready;
            ready = j->next;
            j->done(j->status, j->json, j->arg);
            atomic_fetch_add(&n_answered, 1);
            free(j);
        }
        pthread_mutex_lock(&fake.mu);
    }
    pthread_mutex_unlock(&fake.mu);
    return NULL;
}

static int queued_now(void)
{
    pthread_mutex_lock(&fake.mu);
    int n = fake.queued;
    pthread_mutex_unlock(&fake.mu);
    return n;
}

static void fake_set(int gate, bool release)
{
    pthread_mutex_lock(&fake.mu);
    fake.gate = gate;
    fake.release = release;
    pthread_cond_broadcast(&fake.cv);
    pthread_mutex_unlock(&fake.mu);
}

/* ---- server and a raw HTTP client ---------------------------------------------------------- */

typedef struct {
    ihc_http *h;
    int port;
    ihc_config cfg;
} srv;

/* A server with these limits (0: the defaults of srv_start). */
typedef struct {
    int max_conns, per_ip, max_streams;
    double deadline;
} limits;

static srv *srv_start_limits(const char *token, int max_body, limits l)
{
    srv *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->cfg.http_addr = "127.0.0.1:0";
    s->cfg.http_max_body = max_body;
    s->cfg.http_max_conns = l.max_conns ? l.max_conns : 200;
    s->cfg.http_max_conns_per_ip = l.per_ip ? l.per_ip : s->cfg.http_max_conns;
    s->cfg.http_max_streams = l.max_streams ? l.max_streams : 8;
    s->cfg.http_request_deadline = l.deadline > 0 ? l.deadline : 5;
    s->cfg.http_token = (char *)token;
    TH_PASS(ihc_http_open(&s->h, &coord, &s->cfg));
    s->port = ihc_http_port(s->h);
    assert_true(s->port > 0);
    return s;
}

static srv *srv_start(const char *token, int max_body)
{
    return srv_start_limits(token, max_body, (limits){0});
}

static void srv_stop(srv *s)
{
    ihc_http_close(s->h);
    free(s);
}

typedef struct {
    int status;
    char head[4096];
    char body[8192];
    size_t body_len;
} resp;

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the server may close early (413): reading tells the rest */
        buf += n;
        len -= (size_t)n;
    }
}

/* Reads until the server closes, then splits status line, head and body. */
static void read_resp(int fd, resp *r)
{
    static char buf[65536];
    size_t n = 0;
    for (;;) {
        ssize_t k = recv(fd, buf + n, sizeof buf - 1 - n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        n += (size_t)k;
        if (n == sizeof buf - 1)
            break;
    }
    buf[n] = '\0';
    memset(r, 0, sizeof *r);
    char *end = strstr(buf, "\r\n\r\n");
    if (n < 12 || end == NULL) {
        r->status = -1;
        return;
    }
    r->status = atoi(buf + 9);
    size_t hl = (size_t)(end - buf);
    if (hl >= sizeof r->head)
        hl = sizeof r->head - 1;
    memcpy(r->head, buf, hl);
    r->body_len = n - (size_t)(end + 4 - buf);
    if (r->body_len >= sizeof r->body)
        r->body_len = sizeof r->body - 1;
    memcpy(r->body, end + 4, r->body_len);
}

static int connect_from(int port, const char *source);
static const char *http_source; /* the client address of http() when set (127.0.0.x) */

static void http_raw(int port, const char *raw, size_t len, resp *r)
{
    int fd = http_source ? connect_from(port, http_source) : connect_to(port);
    send_all(fd, raw, len);
    read_resp(fd, r);
    close(fd);
}

/* One request with Connection: close; body may be NULL; extra is added headers ("K: V\r\n"). */
static void http(int port, const char *method, const char *path, const char *extra,
                 const char *body, resp *r)
{
    char req[16384];
    int n =
        snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s",
                 method, path, extra ? extra : "");
    if (body != NULL)
        n += snprintf(req + n, sizeof req - (size_t)n, "Content-Length: %zu\r\n\r\n%s",
                      strlen(body), body);
    else
        n += snprintf(req + n, sizeof req - (size_t)n, "\r\n");
    assert_true(n > 0 && (size_t)n < sizeof req);
    http_raw(port, req, (size_t)n, r);
}

#define JSON_CT "Content-Type: application/json\r\n"

static void post_json(int port, const char *body, resp *r)
{
    http(port, "POST", "/v1/interrupt", JSON_CT, body, r);
}

static bool has_header(const resp *r, const char *line)
{
    return strcasestr(r->head, line) != NULL;
}

/* Checks a refusal: status, a JSON {"error"} naming the problem, nothing done. */
static void expect_error(const resp *r, int status, const char *text)
{
    if (r->status != status || strstr(r->body, text) == NULL)
        fail_msg("want %d with '%s', got %d: %s", status, text, r->status, r->body);
    assert_true(has_header(r, "Content-Type: application/json"));
    json_t *d = json_loads(r->body, 0, NULL);
    assert_non_null(d);
    assert_true(json_is_string(json_object_get(d, "error")));
    json_decref(d);
    assert_true(r->body_len > 0 && r->body[r->body_len - 1] == '\n');
}

static int setup(void **state)
{
    (void)state;
    atomic_store(&n_interrupts, 0);
    atomic_store(&n_rejected, 0);
    atomic_store(&n_answered, 0);
    http_source = NULL;
    fake.gate = 0;
    fake.release = false;
    fake.stop = false;
    TH_PASS(ihc_events_new(&events, 16, 0));
    assert_int_equal(pthread_create(&fake.thread, NULL, fake_main, NULL), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pthread_mutex_lock(&fake.mu);
    fake.stop = true;
    pthread_cond_broadcast(&fake.cv);
    pthread_mutex_unlock(&fake.mu);
    pthread_join(fake.thread, NULL);
    ihc_events_free(events);
    events = NULL;
    return 0;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_http_routes(void **state)
{
    (void)state;
    srv *s = srv_start(NULL, 4096);
    static const struct {
        const char *method, *path, *op;
    } cases[] = {
        {"GET", "/v1/sessions", "sessions"}, {"GET", "/v1/agents", "agents"},
        {"GET", "/v1/flags", "flags"},       {"POST", "/v1/flags/reset", "flags_reset"},
        {"GET", "/v1/stats", "stats"},       {"GET", "/healthz", "health"},
    };
    resp r;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        http(s->port, cases[i].method, cases[i].path, NULL, NULL, &r);
        if (r.status != 200)
            fail_msg("%s %s: %d %s", cases[i].method, cases[i].path, r.status, r.body);
        assert_true(has_header(&r, "Content-Type: application/json"));
        json_t *d = json_loads(r.body, 0, NULL);
        assert_non_null(d);
        assert_string_equal(json_string_value(json_object_get(d, "op")), cases[i].op);
        json_decref(d);
        assert_int_equal(r.body[r.body_len - 1], '\n');
    }
    http(s->port, "GET", "/v1/sessions?hardware_id=dev-1", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"hw\":\"dev-1\""));
    /* the API's own 4xx passes through unchanged */
    http(s->port, "GET", "/v1/sessions?hardware_id=bad", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "hardware_id: invalid"));

    http(s->port, "GET", "/metrics", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(strstr(r.body, "ihc_up 1\n"));

    http(s->port, "HEAD", "/v1/stats", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_int_equal(atomic_load(&n_rejected), 0);

    /* one access-log line per request at debug level */
    char path[] = "/tmp/ihc-http-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    ihc_log_setup(&(ihc_log_opts){.level = IHC_LOG_DEBUG, .fd = fd});
    http(s->port, "GET", "/v1/agents", NULL, NULL, &r);
    http(s->port, "GET", "/v1/nope?x=1", NULL, NULL, &r);
    srv_stop(s); /* the completion callbacks have run once the server is stopped */
    ihc_log_setup(NULL);
    char log[4096] = "";
    ssize_t n = pread(fd, log, sizeof log - 1, 0);
    assert_true(n > 0);
    log[n] = '\0';
    close(fd);
    unlink(path);
    if (strstr(log, "request method=GET path=/v1/agents status=200 time_ms=") == NULL ||
        strstr(log, "request method=GET path=/v1/nope status=404") == NULL)
        fail_msg("access log: %s", log);
}

static void test_http_interrupt(void **state)
{
    (void)state;
    srv *s = srv_start(NULL, 4096);
    resp r;
    post_json(s->port, "{\"hardware_id\":\"dev-1\",\"reason\":\"user stop\",\"timeout_ms\":750}",
              &r);
    assert_int_equal(r.status, 200);
    json_t *d = json_loads(r.body, 0, NULL);
    assert_non_null(d);
    assert_true(json_is_true(json_object_get(d, "success")));
    assert_string_equal(json_string_value(json_object_get(d, "hardware_id")), "dev-1");
    assert_string_equal(json_string_value(json_object_get(d, "reason")), "user stop");
    assert_int_equal(json_integer_value(json_object_get(d, "timeout_ms")), 750);
    json_decref(d);
    assert_int_equal(r.body[r.body_len - 1], '\n');

    /* answered synchronously inside ihc_api_interrupt */
    post_json(s->port, "{\"hardware_id\":\"sync\"}", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"timeout_ms\":0"));
    /* reason null is no reason; Content-Type with parameters; none at all */
    http(s->port, "POST", "/v1/interrupt", "Content-Type: Application/JSON; charset=utf-8\r\n",
         "{\"hardware_id\":\"dev-2\",\"reason\":null}", &r);
    assert_int_equal(r.status, 200);
    http(s->port, "POST", "/v1/interrupt", NULL, "{\"hardware_id\":\"dev-3\"}", &r);
    assert_int_equal(r.status, 200);
    /* refused by the API up front (synchronous 400) */
    post_json(s->port, "{\"hardware_id\":\"a b\"}", &r);
    expect_error(&r, 400, "hardware_id: invalid hardware_id");
    assert_int_equal(atomic_load(&n_interrupts), 5);
    srv_stop(s);
}

static void test_http_bad_input(void **state)
{
    (void)state;
    srv *s = srv_start(NULL, 4096);
    static const struct {
        const char *body;
        const char *text;
    } cases[] = {
        {"{\"hardware_id\":", "malformed JSON at line 1 column"},
        {"{\"hardware_id\":\"x\",\"hardware_id\":\"y\"}", "duplicate object key"},
        {"[1,2]", "request body must be a JSON object"},
        {"\"dev-1\"", "request body must be a JSON object"},
        {"", "request body is empty"},
        {"{}", "hardware_id: required field missing"},
        {"{\"hardware_id\":5}", "hardware_id: must be a string"},
        {"{\"hardware_id\":null}", "hardware_id: must be a string"},
        {"{\"hardware_id\":\"d\",\"timeout_ms\":\"5\"}", "timeout_ms: must be a non-negative"},
        {"{\"hardware_id\":\"d\",\"timeout_ms\":1.5}", "timeout_ms: must be a non-negative"},
        {"{\"hardware_id\":\"d\",\"timeout_ms\":-1}", "timeout_ms: must be a non-negative"},
        {"{\"hardware_id\":\"d\",\"reason\":7}", "reason: must be a string"},
        {"{\"hardware_id\":\"d\",\"foo\":1}", "unknown field 'foo'"},
        {"{\"hardware_id\":\"d\\u0000x\"}", "malformed JSON"},
    };
    resp r;
    int rejected = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        post_json(s->port, cases[i].body, &r);
        expect_error(&r, 400, cases[i].text);
        assert_int_equal(atomic_load(&n_rejected), ++rejected);
    }
    http(s->port, "POST", "/v1/interrupt", "Content-Type: application/x-www-form-urlencoded\r\n",
         "hardware_id=dev-1", &r);
    expect_error(&r, 415, "Content-Type 'application/x-www-form-urlencoded' not supported");
    http(s->port, "GET", "/v1/interrupt", NULL, NULL, &r);
    expect_error(&r, 405, "method GET not allowed on /v1/interrupt");
    assert_true(has_header(&r, "Allow: POST"));
    http(s->port, "DELETE", "/v1/stats", NULL, NULL, &r);
    expect_error(&r, 405, "method DELETE not allowed");
    assert_true(has_header(&r, "Allow: GET, HEAD"));
    http(s->port, "GET", "/v1/nope", NULL, NULL, &r);
    expect_error(&r, 404, "no such endpoint: /v1/nope");
    http(s->port, "GET", "/v1/stats?verbose=1", NULL, NULL, &r);
    expect_error(&r, 400, "unknown query parameter 'verbose'");
    http(s->port, "GET", "/v1/sessions?hw=dev-1", NULL, NULL, &r);
    expect_error(&r, 400, "unknown query parameter 'hw' (accepted: hardware_id)");
    http(s->port, "GET", "/v1/sessions?hardware_id=a&hardware_id=b", NULL, NULL, &r);
    expect_error(&r, 400, "given more than once");
    http(s->port, "GET", "/v1/sessions?hardware_id=", NULL, NULL, &r);
    expect_error(&r, 400, "'hardware_id' is empty");
    http(s->port, "GET", "/v1/sessions?hardware_id=dev-1%00junk", NULL, NULL, &r);
    expect_error(&r, 400, "'hardware_id' contains a NUL byte (%00)");
    assert_int_equal(atomic_load(&n_rejected), rejected + 9);
    /* nothing reached the coordinator */
    assert_int_equal(atomic_load(&n_interrupts), 0);
    srv_stop(s);
}

static void test_http_oversized_body(void **state)
{
    (void)state;
    srv *s = srv_start(NULL, 256);
    char big[2048];
    memset(big, ' ', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "{\"hardware_id\":\"dev-1\"", 22);
    big[sizeof big - 2] = '}';
    resp r;
    post_json(s->port, big, &r);
    expect_error(&r, 413, "exceeds the limit of 256 bytes");

    /* chunked: no declared length, the limit is found while reading */
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" JSON_CT
                     "Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n",
                     (unsigned)strlen(big), big);
    http_raw(s->port, req, (size_t)n, &r);
    expect_error(&r, 413, "exceeds the limit of 256 bytes");
    /* a body just under the limit is fine */
    post_json(s->port, "{\"hardware_id\":\"dev-1\"}", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(atomic_load(&n_interrupts), 1);
    assert_int_equal(atomic_load(&n_rejected), 2);
    srv_stop(s);
}

#define N_CONC 50

static void test_http_concurrent_interrupts(void **state)
{
    (void)state;
    srv *s = srv_start(NULL, 4096);
    /* Nothing is answered until all N_CONC are queued at once: only possible when each
     * waits suspended rather than holding the server's thread. */
    fake_set(N_CONC, false);
    int fds[N_CONC];
    for (int i = 0; i < N_CONC; i++) {
        char body[64], req[512];
        snprintf(body, sizeof body, "{\"hardware_id\":\"dev-%d\"}", i);
        int n = snprintf(req, sizeof req,
                         "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" JSON_CT
                         "Content-Length: %zu\r\n\r\n%s",
                         strlen(body), body);
        fds[i] = connect_to(s->port);
        send_all(fds[i], req, (size_t)n);
    }
    assert_true(TH_WAIT(queued_now() == 0 && atomic_load(&n_answered) == N_CONC, 10000));
    for (int i = 0; i < N_CONC; i++) {
        resp r;
        read_resp(fds[i], &r);
        close(fds[i]);
        assert_int_equal(r.status, 200);
        char want[64];
        snprintf(want, sizeof want, "\"hardware_id\":\"dev-%d\"", i);
        if (strstr(r.body, want) == NULL)
            fail_msg("request %d got %s", i, r.body);
    }
    fake_set(0, false);
    srv_stop(s);
}

static void test_http_bearer_token(void **state)
{
    (void)state;
    srv *s = srv_start("s3cret-token", 4096);
    resp r;
    http(s->port, "GET", "/v1/stats", NULL, NULL, &r);
    expect_error(&r, 401, "bearer token");
    assert_true(has_header(&r, "WWW-Authenticate: Bearer"));
    http(s->port, "GET", "/v1/stats", "Authorization: Bearer s3cret-tokeX\r\n", NULL, &r);
    expect_error(&r, 401, "bearer token");
    http(s->port, "GET", "/v1/stats", "Authorization: Bearer s3cret-token-longer\r\n", NULL, &r);
    expect_error(&r, 401, "bearer token");
    http(s->port, "GET", "/v1/stats", "Authorization: Basic czNjcmV0\r\n", NULL, &r);
    expect_error(&r, 401, "bearer token");
    post_json(s->port, "{\"hardware_id\":\"dev-1\"}", &r);
    expect_error(&r, 401, "bearer token");
    assert_int_equal(atomic_load(&n_interrupts), 0);
    http(s->port, "GET", "/v1/nope", NULL, NULL, &r); /* no route discovery without a token */
    assert_int_equal(r.status, 401);

    http(s->port, "GET", "/v1/stats", "Authorization: Bearer s3cret-token\r\n", NULL, &r);
    assert_int_equal(r.status, 200);
    http(s->port, "POST", "/v1/interrupt", "Authorization: bearer  s3cret-token\r\n" JSON_CT,
         "{\"hardware_id\":\"dev-1\"}", &r);
    assert_int_equal(r.status, 200);
    http(s->port, "GET", "/healthz", NULL, NULL, &r); /* probes need no token */
    assert_int_equal(r.status, 200);
    assert_int_equal(atomic_load(&n_rejected), 6);
    srv_stop(s);
}

static void test_http_slow_client_does_not_block(void **state)
{
    (void)state;
    srv *s = srv_start(NULL, 4096);
    /* half a request line and half a body, never finished */
    int slow1 = connect_to(s->port);
    send_all(slow1, "GET /v1/sta", 11);
    int slow2 = connect_to(s->port);
    const char *part = "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\n" JSON_CT
                       "Content-Length: 100\r\n\r\n{\"hardware_id\"";
    send_all(slow2, part, strlen(part));
    uint64_t t0 = th_now_ms_();
    resp r;
    for (int i = 0; i < 5; i++) {
        http(s->port, "GET", "/v1/stats", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        post_json(s->port, "{\"hardware_id\":\"dev-1\"}", &r);
        assert_int_equal(r.status, 200);
    }
    assert_true(th_now_ms_() - t0 < 3000);
    close(slow1);
    close(slow2);
    srv_stop(s);
}

static void test_http_close_with_pending(void **state)
{
    (void)state;
    srv *s = srv_start(NULL, 4096);
    const char *req = "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" JSON_CT
                      "Content-Length: 22\r\n\r\n{\"hardware_id\":\"hold\"}";
    int fd = connect_to(s->port);
    send_all(fd, req, strlen(req));
    assert_true(TH_WAIT(queued_now() == 1, 5000));
    /* close while the interrupt is in flight: the client is told, nothing is left behind,
     * and the coordinator's late answer is dropped safely */
    ihc_http_close(s->h);
    free(s);
    resp r;
    read_resp(fd, &r);
    close(fd);
    expect_error(&r, 503, "shutting down");
    fake_set(0, true);
    assert_true(TH_WAIT(atomic_load(&n_answered) == 1, 5000));
}

/* ---- the event stream, the dashboard, limits and the request deadline --------------------- */

/* Connects from a given loopback address (127.0.0.x). */
static int connect_from(int port, const char *source)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    assert_int_equal(inet_pton(AF_INET, source, &src.sin_addr), 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&src, sizeof src), 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

/* Reads from fd into buf (NUL-terminated) until needle appears or timeout_ms passes. */
static bool read_until(int fd, char *buf, size_t cap, size_t *n, const char *needle, int timeout_ms)
{
    uint64_t end = th_now_ms_() + (uint64_t)timeout_ms;
    for (;;) {
        buf[*n] = '\0';
        if (strstr(buf, needle) != NULL)
            return true;
        if (th_now_ms_() >= end || *n + 1 >= cap)
            return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t k = recv(fd, buf + *n, cap - 1 - *n, 0);
        if (k <= 0)
            return strstr(buf, needle) != NULL;
        *n += (size_t)k;
    }
}

/* Milliseconds until the server closes fd (reading and dropping what it sends), or -1 when
 * it is still open after timeout_ms. */
static int64_t ms_until_closed(int fd, int timeout_ms)
{
    uint64_t t0 = th_now_ms_();
    char buf[4096];
    while (th_now_ms_() - t0 < (uint64_t)timeout_ms) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        ssize_t k = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
            return (int64_t)(th_now_ms_() - t0);
    }
    return -1;
}

/* An HTTP/1.0 event stream request (answered without chunking, so the text can be
 * searched as is). extra: added header lines. */
static int open_stream(int port, const char *query, const char *extra)
{
    int fd = connect_to(port);
    char req[512];
    snprintf(req, sizeof req, "GET /v1/events%s HTTP/1.0\r\nHost: x\r\n%s\r\n", query,
             extra ? extra : "");
    send_all(fd, req, strlen(req));
    return fd;
}

static void test_http_events_stream(void **state)
{
    (void)state;
    srv *s = srv_start(NULL, 4096);
    ihc_events_emit(events, "result", "{\"interrupt_id\":1}");
    ihc_events_emit(events, "session_end", "{\"session_id\":\"s-1\"}");
    char id1[IHC_EVENTS_ID_MAX], id2[IHC_EVENTS_ID_MAX], id3[IHC_EVENTS_ID_MAX];
    ihc_events_id(events, 1, id1);
    ihc_events_id(events, 2, id2);
    ihc_events_id(events, 3, id3);

    /* everything held, then what comes while connected */
    static char buf[65536];
    size_t n = 0;
    int fd = open_stream(s->port, "?last_event_id=0", NULL);
    assert_true(read_until(fd, buf, sizeof buf, &n, "s-1\"}\n\n", 5000));
    assert_non_null(strstr(buf, " 200 OK\r\n"));
    assert_non_null(strcasestr(buf, "Content-Type: text/event-stream"));
    assert_non_null(strstr(buf, "\r\n\r\nretry: 2000\n\n"));
    char want[256];
    snprintf(want, sizeof want, "id: %s\nevent: result\ndata: {\"interrupt_id\":1}\n\n", id1);
    assert_non_null(strstr(buf, want));
    assert_null(strstr(buf, "event: gap"));
    th_sleep_ms_(150); /* the stream is idle (suspended) now: a new event must wake it */
    ihc_events_emit(events, "interrupt", "{\"interrupt_id\":2}");
    snprintf(want, sizeof want, "id: %s\nevent: interrupt\ndata: {\"interrupt_id\":2}\n\n", id3);
    assert_true(read_until(fd, buf, sizeof buf, &n, want, 5000));

    /* resume after event 2 with the header: event 3 only */
    size_t m = 0;
    static char buf2[65536];
    char hdr[128];
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %s\r\n", id2);
    int fd2 = open_stream(s->port, "", hdr);
    assert_true(read_until(fd2, buf2, sizeof buf2, &m, want, 5000));
    assert_null(strstr(buf2, id1));
    snprintf(want, sizeof want, "id: %s\n", id2);
    assert_null(strstr(buf2, want));
    close(fd2);

    /* the header wins over the query parameter (a browser's reconnect sends both) */
    m = 0;
    fd2 = open_stream(s->port, "?last_event_id=0", hdr);
    assert_true(read_until(fd2, buf2, sizeof buf2, &m, id3, 5000));
    assert_null(strstr(buf2, id1));
    close(fd2);

    /* events the client missed were dropped from the history: a gap event first */
    for (int i = 0; i < 20; i++)
        ihc_events_emit(events, "e", "{}");
    m = 0;
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %s\r\n", id1);
    fd2 = open_stream(s->port, "", hdr);
    assert_true(read_until(fd2, buf2, sizeof buf2, &m, "\n\nid: ", 5000));
    char *gap = strstr(buf2, "event: gap\ndata: {\"last_event_id\":\"");
    assert_non_null(gap);
    assert_true(gap < strstr(buf2, "\n\nid: "));
    close(fd2);

    /* not an id; a parameter given twice; an unknown parameter */
    resp r;
    http(s->port, "GET", "/v1/events", "Last-Event-ID: nonsense\r\n", NULL, &r);
    expect_error(&r, 400, "Last-Event-ID 'nonsense' is not an event id");
    http(s->port, "GET", "/v1/events?last_event_id=0&last_event_id=0", NULL, NULL, &r);
    expect_error(&r, 400, "given more than once");
    http(s->port, "GET", "/v1/events?since=0", NULL, NULL, &r);
    expect_error(&r, 400, "accepted: token, last_event_id");
    http(s->port, "POST", "/v1/events", JSON_CT, "{}", &r);
    assert_int_equal(r.status, 405);

    /* the server stops with a stream open: the stream ends, the stop does not wait long */
    uint64_t t0 = th_now_ms_();
    srv_stop(s);
    assert_true(th_now_ms_() - t0 < 1500);
    assert_true(ms_until_closed(fd, 2000) >= 0);
    close(fd);
}

static void test_http_events_token(void **state)
{
    (void)state;
    srv *s = srv_start("tok-123", 4096);
    resp r;
    http(s->port, "GET", "/v1/events", NULL, NULL, &r);
    expect_error(&r, 401, "bearer token");
    http(s->port, "GET", "/v1/events?token=tok-12", NULL, NULL, &r);
    expect_error(&r, 401, "bearer token");
    /* only the event stream takes the token from the URL */
    http(s->port, "GET", "/v1/stats?token=tok-123", NULL, NULL, &r);
    expect_error(&r, 401, "bearer token");
    static char buf[8192];
    size_t n = 0;
    int fd = open_stream(s->port, "?token=tok-123", NULL);
    assert_true(read_until(fd, buf, sizeof buf, &n, "retry: 2000", 5000));
    close(fd);
    n = 0;
    fd = open_stream(s->port, "", "Authorization: Bearer tok-123\r\n");
    assert_true(read_until(fd, buf, sizeof buf, &n, "retry: 2000", 5000));
    close(fd);
    /* the dashboard's files are public: the page asks for the token itself */
    http(s->port, "GET", "/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    srv_stop(s);
}

static void test_http_dashboard(void **state)
{
    (void)state;
    srv *s = srv_start(NULL, 4096);
    resp r;
    http(s->port, "GET", "/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/html; charset=utf-8"));
    assert_true(has_header(&r, "Content-Security-Policy: default-src 'none'; script-src 'self'"));
    assert_true(has_header(&r, "X-Content-Type-Options: nosniff"));
    assert_non_null(strstr(r.body, "<script src=\"/dashboard/app.js\"></script>"));
    http(s->port, "GET", "/dashboard/app.js", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/javascript"));
    assert_non_null(strstr(r.body, "EventSource"));
    http(s->port, "GET", "/dashboard/style.css", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Content-Type: text/css"));
    http(s->port, "HEAD", "/", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    http(s->port, "POST", "/", JSON_CT, "{}", &r);
    assert_int_equal(r.status, 405);
    http(s->port, "GET", "/dashboard/nope.js", NULL, NULL, &r);
    assert_int_equal(r.status, 404);
    http(s->port, "GET", "/?x=1", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    srv_stop(s);
}

/* A line of /metrics, e.g. "ihc_http_request_deadline_closed_total": its value or -1. */
static double metric_of(int port, const char *name)
{
    resp r;
    http(port, "GET", "/metrics", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    char key[160];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(r.body, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

static void test_http_request_deadline(void **state)
{
    (void)state;
    srv *s = srv_start_limits(NULL, 4096, (limits){.deadline = 0.4});
    const char *half = "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\n";

    /* trickling a byte every 100 ms does not extend the deadline */
    int slow = connect_to(s->port);
    send_all(slow, half, strlen(half));
    uint64_t t0 = th_now_ms_();
    int64_t closed = -1;
    for (int i = 0; i < 30 && closed < 0; i++) {
        send(slow, "X", 1, MSG_NOSIGNAL);
        closed = ms_until_closed(slow, 100);
    }
    int64_t lived = (int64_t)(th_now_ms_() - t0);
    assert_true(closed >= 0);
    assert_true(lived >= 300 && lived <= 1200);
    close(slow);

    /* silence after connecting counts too */
    int mute = connect_to(s->port);
    closed = ms_until_closed(mute, 3000);
    assert_true(closed >= 300 && closed <= 1200);
    close(mute);

    /* a kept-alive connection may stay idle past the deadline; its next request, once begun,
     * has the deadline again */
    int ka = connect_to(s->port);
    const char *get = "GET /v1/stats HTTP/1.1\r\nHost: x\r\n\r\n";
    static char buf[16384];
    size_t n = 0;
    send_all(ka, get, strlen(get));
    assert_true(read_until(ka, buf, sizeof buf, &n, "\"op\":\"stats\"", 5000));
    assert_int_equal(ms_until_closed(ka, 900), -1); /* idle for twice the deadline */
    n = 0;
    send_all(ka, get, strlen(get));
    assert_true(read_until(ka, buf, sizeof buf, &n, "\"op\":\"stats\"", 5000));
    send_all(ka, half, strlen(half));
    t0 = th_now_ms_();
    closed = -1;
    for (int i = 0; i < 30 && closed < 0; i++) {
        send(ka, "Y", 1, MSG_NOSIGNAL);
        closed = ms_until_closed(ka, 100);
    }
    lived = (int64_t)(th_now_ms_() - t0);
    assert_true(closed >= 0 && lived <= 1200);
    close(ka);

    /* the deadline is for receiving: an answer that takes longer is still given */
    fake_set(0, false);
    const char *req = "POST /v1/interrupt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" JSON_CT
                      "Content-Length: 22\r\n\r\n{\"hardware_id\":\"hold\"}";
    int fd = connect_to(s->port);
    send_all(fd, req, strlen(req));
    assert_true(TH_WAIT(queued_now() == 1, 5000));
    th_sleep_ms_(800);
    fake_set(0, true);
    resp r;
    read_resp(fd, &r);
    close(fd);
    assert_int_equal(r.status, 200);
    assert_true(metric_of(s->port, "ihc_http_request_deadline_closed_total") >= 3);
    srv_stop(s);
}

static void test_http_conn_limits(void **state)
{
    (void)state;
    srv *s = srv_start_limits(
        NULL, 4096, (limits){.max_conns = 3, .per_ip = 2, .max_streams = 2, .deadline = 1});
    http_source = "127.0.0.9"; /* this test's own requests */
    const char *half = "GET /v1/stats HTTP/1.1\r\n";
    /* one address holds two connections: its third is closed at once */
    int a1 = connect_from(s->port, "127.0.0.1");
    int a2 = connect_from(s->port, "127.0.0.1");
    send_all(a1, half, strlen(half));
    send_all(a2, half, strlen(half));
    int a3 = connect_from(s->port, "127.0.0.1");
    int64_t t = ms_until_closed(a3, 2000);
    assert_true(t >= 0 && t < 500);
    close(a3);
    /* another address still gets in: the third and last request connection */
    resp r;
    int b1 = connect_from(s->port, "127.0.0.2");
    const char *get = "GET /v1/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    send_all(b1, get, strlen(get));
    read_resp(b1, &r);
    close(b1);
    assert_int_equal(r.status, 200);
    int b2 = connect_from(s->port, "127.0.0.2");
    send_all(b2, half, strlen(half));
    /* IHC_HTTP_MAX_CONNS (3) request connections open: a fourth is closed at once, not left
     * waiting in the listen queue */
    assert_true(TH_WAIT(true, 50));
    int c1 = connect_from(s->port, "127.0.0.3");
    t = ms_until_closed(c1, 2000);
    assert_true(t >= 0 && t < 500);
    close(c1);
    /* a stream begins as a request: free one request connection for them to come in by.
     * libmicrohttpd 0.9.75 (epoll) takes a short read as "drained", so a close that arrives
     * together with the half request may go unseen: then the request deadline (1 s here)
     * ends the connection. */
    close(b2);
    assert_true(
        TH_WAIT((http(s->port, "GET", "/v1/flags", NULL, NULL, &r), r.status == 200), 4000));
    static char buf[8192];
    size_t n = 0;
    int st1 = connect_from(s->port, "127.0.0.4");
    send_all(st1, "GET /v1/events HTTP/1.0\r\n\r\n", 27);
    assert_true(read_until(st1, buf, sizeof buf, &n, "retry:", 5000));
    n = 0;
    int st2 = connect_from(s->port, "127.0.0.5");
    send_all(st2, "GET /v1/events HTTP/1.0\r\n\r\n", 27);
    assert_true(read_until(st2, buf, sizeof buf, &n, "retry:", 5000));
    /* two streams open: requests still get through */
    http(s->port, "GET", "/v1/flags", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    /* a third stream: 503 with Retry-After */
    http(s->port, "GET", "/v1/events", NULL, NULL, &r);
    expect_error(&r, 503, "too many event streams (IHC_HTTP_MAX_STREAMS=2)");
    assert_true(has_header(&r, "Retry-After: 1"));
    assert_true(metric_of(s->port, "ihc_http_refused_total{limit=\"max_streams\"}") == 1);
    assert_true(metric_of(s->port, "ihc_http_refused_total{limit=\"max_conns\"}") >= 1);
    assert_true(metric_of(s->port, "ihc_http_refused_total{limit=\"max_conns_per_ip\"}") >= 1);
    assert_true(metric_of(s->port, "ihc_http_connections{kind=\"stream\"}") == 2);
    close(st1);
    close(st2);
    close(a1);
    close(a2);
    http_source = NULL;
    srv_stop(s);
}

static void test_http_open_errors(void **state)
{
    (void)state;
    ihc_config cfg = {.http_max_body = 1024, .http_max_conns = 10};
    ihc_http *h = NULL;
    const char *bad[] = {"127.0.0.1",    "127.0.0.1:", "127.0.0.1:99999",
                         "1.2.3.4.5:80", "[::1:80",    "127.0.0.1:-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg.http_addr = (char *)bad[i];
        TH_FAIL(ihc_http_open(&h, &coord, &cfg), IHC_EINVAL);
        assert_null(h);
    }
    cfg.http_addr = "localhost:0"; /* names are resolved */
    TH_PASS(ihc_http_open(&h, &coord, &cfg));
    assert_true(ihc_http_port(h) > 0);
    ihc_http_close(h);
    h = NULL;
    srv *s = srv_start(NULL, 1024);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s->port);
    cfg.http_addr = addr;
    TH_FAIL(ihc_http_open(&h, &coord, &cfg), IHC_EIO); /* port taken */
    assert_null(h);
    srv_stop(s);
    ihc_http_close(NULL);
    assert_int_equal(ihc_http_port(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_http_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_interrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_oversized_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_concurrent_interrupts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_bearer_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_slow_client_does_not_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_close_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_events_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_events_token, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_dashboard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_request_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_conn_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_open_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
