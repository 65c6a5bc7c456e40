/* libihc tests: the client against a fake coordinator control socket (nng REP in a thread of
 * this test) — result parsing, errors, signing, unreachable and slow coordinators, threads —
 * and the watch against a coordinator-like publisher (tests/support/fake_coord: nng PUB). */
#include "fake_coord.h"
#include "harness.h"

#include "err.h"
#include "ihc/client.h"
#include "wire.h"

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char full_result[] =
    "{\"success\":true,\"interrupt_id\":17,\"hardware_id\":\"dev-1\",\"epoch\":4,"
    "\"interrupted_modules\":[\"text_processing\",\"audio_generation\"],"
    "\"cleaned_sessions\":[\"s-1\",\"s-2\"],"
    "\"modules\":[{\"agent\":\"n1:42\",\"name\":\"text_processing\",\"status\":\"ok\","
    "\"time_ms\":0.2,\"error\":null},{\"agent\":\"n1:42\",\"name\":\"audio_generation\","
    "\"status\":\"ok\",\"time_ms\":0.3,\"error\":null}],"
    "\"agents\":{\"expected\":[\"n1:42\"],\"answered\":[\"n1:42\"],\"missing\":[]},"
    "\"reason\":\"user stop\",\"total_time_ms\":0.9,\"persisted\":true}";

static const char incomplete_result[] =
    "{\"success\":false,\"interrupt_id\":18,\"hardware_id\":\"dev-2\",\"epoch\":5,"
    "\"interrupted_modules\":[],\"cleaned_sessions\":[],\"modules\":[{\"agent\":\"n1:42\","
    "\"name\":\"text_processing\",\"status\":\"timed_out\",\"time_ms\":500.0,"
    "\"error\":\"method stop did not return\"}],"
    "\"agents\":{\"expected\":[\"n1:42\",\"n2:7\"],\"answered\":[\"n1:42\"],"
    "\"missing\":[\"n2:7\"]},\"reason\":null,\"total_time_ms\":5000.4,\"persisted\":false,"
    "\"error\":\"1 agent did not answer: n2:7\"}";

/* ---- fake coordinator control socket --------------------------------------------------------- */

typedef struct {
    nng_socket sock;
    pthread_t thread;
    char url[64];
    ihc_wire_auth *auth;
    atomic_bool stop;
    atomic_bool standby; /* answers every request as a standby coordinator does */
    atomic_int requests;
    pthread_mutex_t mu;
    char last_op[32], last_hw[160], last_reason[1100];
    int64_t last_timeout;
} fake_coord;

static void reply(fake_coord *f, int status, const char *json, bool sign)
{
    ihc_msg m = {.type = IHC_MSG_CONTROL_RESPONSE};
    m.u.control_response.status = status;
    m.u.control_response.json = (char *)json;
    uint8_t *buf = NULL;
    size_t len = 0;
    TH_PASS(ihc_wire_encode(&m, sign ? f->auth : NULL, &buf, &len));
    nng_send(f->sock, buf, len, 0);
    free(buf);
}

static void *fake_main(void *arg)
{
    fake_coord *f = arg;
    while (!atomic_load(&f->stop)) {
        nng_msg *msg = NULL;
        int rv = nng_recvmsg(f->sock, &msg, 0);
        if (rv == NNG_ETIMEDOUT)
            continue;
        if (rv != 0)
            break;
        atomic_fetch_add(&f->requests, 1);
        ihc_msg *m = NULL;
        int rc = ihc_wire_decode(nng_msg_body(msg), nng_msg_len(msg), f->auth, &m, NULL, 0);
        nng_msg_free(msg);
        if (rc != IHC_OK) {
            reply(f, 401, "{\"error\":\"bad signature\"}", false);
            continue;
        }
        ihc_control_request *q = &m->u.control_request;
        pthread_mutex_lock(&f->mu);
        snprintf(f->last_op, sizeof f->last_op, "%s", q->op);
        snprintf(f->last_hw, sizeof f->last_hw, "%s", q->hw ? q->hw : "(null)");
        snprintf(f->last_reason, sizeof f->last_reason, "%s", q->reason ? q->reason : "(null)");
        f->last_timeout = q->timeout_ms;
        pthread_mutex_unlock(&f->mu);
        const char *hw = q->hw ? q->hw : "";
        if (atomic_load(&f->standby)) {
            reply(f, 503,
                  "{\"error\":\"not the leader coordinator\",\"code\":\"IHC_ENOTLEADER\","
                  "\"leader\":\"c2\"}",
                  true);
        } else if (strcmp(hw, "slow") == 0) {
            /* no answer: REP drops the request at the next receive */
        } else if (strcmp(hw, "garbage") == 0) {
            nng_send(f->sock, "\xc1\xc1", 2, 0);
        } else if (strcmp(q->op, "interrupt") == 0) {
            if (strcmp(hw, "dev-1") == 0)
                reply(f, 200, full_result, true);
            else if (strcmp(hw, "dev-2") == 0)
                reply(f, 200, incomplete_result, true);
            else if (strcmp(hw, "*") == 0)
                reply(f, 403, "{\"error\":\"hardware_id: global interrupts are disabled\"}", true);
            else if (strcmp(hw, "notjson") == 0)
                reply(f, 200, "{\"success\":", true);
            else {
                char doc[256];
                snprintf(doc, sizeof doc,
                         "{\"success\":true,\"interrupt_id\":1,\"hardware_id\":\"%s\","
                         "\"agents\":{\"expected\":[],\"answered\":[],\"missing\":[]}}",
                         hw);
                reply(f, 200, doc, true);
            }
        } else if (strcmp(q->op, "stats") == 0) {
            reply(f, 503, "{\"error\":\"shutting down\"}", true);
        } else {
            char doc[256];
            snprintf(doc, sizeof doc, "{\"op\":\"%s\",\"hw\":\"%s\",\"count\":0}", q->op,
                     q->hw ? q->hw : "");
            reply(f, 200, doc, true);
        }
        ihc_msg_free(m);
    }
    return NULL;
}

static fake_coord *fake_start(const char *secret, int port)
{
    fake_coord *f = calloc(1, sizeof *f);
    assert_non_null(f);
    pthread_mutex_init(&f->mu, NULL);
    if (secret != NULL)
        TH_PASS(ihc_wire_auth_new(&f->auth, secret, strlen(secret), 0));
    assert_int_equal(nng_rep0_open(&f->sock), 0);
    nng_socket_set_ms(f->sock, NNG_OPT_RECVTIMEO, 50);
    snprintf(f->url, sizeof f->url, "tcp://127.0.0.1:%d", port > 0 ? port : th_free_port());
    assert_int_equal(nng_listen(f->sock, f->url, NULL, 0), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
    return f;
}

static void fake_stop(fake_coord *f)
{
    atomic_store(&f->stop, true);
    pthread_join(f->thread, NULL);
    nng_close(f->sock);
    ihc_wire_auth_free(f->auth);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static ihc_client *client_for(const char *url, const char *secret, int timeout_ms)
{
    ihc_client_opts o = {.control_url = url, .timeout_ms = timeout_ms, .connect_timeout_ms = 2000};
    if (secret != NULL) {
        o.secret = secret;
        o.secret_len = strlen(secret);
    }
    ihc_client *c = NULL;
    TH_PASS(ihc_client_open(&c, &o));
    return c;
}

/* ---- tests ---------------------------------------------------------------------------------- */

static void test_client_interrupt_result(void **state)
{
    (void)state;
    fake_coord *f = fake_start(NULL, 0);
    ihc_client *c = client_for(f->url, NULL, 0);
    ihc_result *r = NULL;
    TH_PASS(ihc_client_interrupt(c, "dev-1", "user stop", 750, &r));
    assert_non_null(r);
    pthread_mutex_lock(&f->mu);
    assert_string_equal(f->last_op, "interrupt");
    assert_string_equal(f->last_hw, "dev-1");
    assert_string_equal(f->last_reason, "user stop");
    assert_int_equal(f->last_timeout, 750);
    pthread_mutex_unlock(&f->mu);

    assert_int_equal(r->status, 200);
    assert_true(r->success);
    assert_int_equal(r->interrupt_id, 17);
    assert_string_equal(r->hardware_id, "dev-1");
    assert_int_equal(r->epoch, 4);
    assert_int_equal(r->n_interrupted_modules, 2);
    assert_string_equal(r->interrupted_modules[1], "audio_generation");
    assert_int_equal(r->n_cleaned_sessions, 2);
    assert_string_equal(r->cleaned_sessions[0], "s-1");
    assert_int_equal(r->n_agents_expected, 1);
    assert_int_equal(r->n_agents_answered, 1);
    assert_string_equal(r->agents_answered[0], "n1:42");
    assert_int_equal(r->n_agents_missing, 0);
    assert_int_equal(r->n_modules, 2);
    assert_string_equal(r->modules[0].agent, "n1:42");
    assert_string_equal(r->modules[0].name, "text_processing");
    assert_string_equal(r->modules[0].status, "ok");
    assert_true(r->modules[1].time_ms > 0.29 && r->modules[1].time_ms < 0.31);
    assert_null(r->modules[0].error);
    assert_string_equal(r->reason, "user stop");
    assert_true(r->total_time_ms > 0.89 && r->total_time_ms < 0.91);
    assert_true(r->persisted);
    assert_null(r->error);
    assert_string_equal(ihc_result_json(r), full_result);
    ihc_result_free(r);

    /* no reason, default timeout */
    TH_PASS(ihc_client_interrupt(c, "dev-9", NULL, 0, &r));
    assert_true(r->success);
    assert_string_equal(r->hardware_id, "dev-9");
    assert_null(r->reason);
    pthread_mutex_lock(&f->mu);
    assert_string_equal(f->last_reason, "(null)");
    assert_int_equal(f->last_timeout, 0);
    pthread_mutex_unlock(&f->mu);
    ihc_result_free(r);
    ihc_client_close(c);
    fake_stop(f);
}

static void test_client_incomplete_and_refused(void **state)
{
    (void)state;
    fake_coord *f = fake_start(NULL, 0);
    ihc_client *c = client_for(f->url, NULL, 0);
    ihc_result *r = NULL;
    TH_PASS(ihc_client_interrupt(c, "dev-2", NULL, 0, &r));
    assert_false(r->success);
    assert_false(r->persisted);
    assert_string_equal(r->error, "1 agent did not answer: n2:7");
    assert_int_equal(r->n_agents_missing, 1);
    assert_string_equal(r->agents_missing[0], "n2:7");
    assert_string_equal(r->modules[0].status, "timed_out");
    assert_string_equal(r->modules[0].error, "method stop did not return");
    assert_null(r->reason);
    ihc_result_free(r);

    r = (ihc_result *)1;
    TH_FAIL(ihc_client_interrupt(c, "*", NULL, 0, &r), IHC_CLIENT_EDISABLED);
    assert_null(r);
    assert_non_null(strstr(ihc_client_last_error(c), "global interrupts are disabled"));
    assert_non_null(strstr(ihc_client_last_error(c), "403"));

    TH_FAIL(ihc_client_interrupt(c, "notjson", NULL, 0, &r), IHC_CLIENT_EPROTO);
    assert_null(r);
    TH_FAIL(ihc_client_interrupt(c, "garbage", NULL, 0, &r), IHC_CLIENT_EPROTO);
    assert_non_null(strstr(ihc_client_last_error(c), "bad answer"));
    ihc_client_close(c);
    fake_stop(f);
}

static void test_client_bad_arguments(void **state)
{
    (void)state;
    fake_coord *f = fake_start(NULL, 0);
    ihc_client *c = client_for(f->url, NULL, 0);
    ihc_result *r = NULL;
    char *json = NULL;
    /* connected first: nng 1.5.2 leaks a dialer when a socket is closed mid-connect */
    TH_PASS(ihc_client_query(c, "agents", NULL, &json));
    free(json);
    json = NULL;
    TH_FAIL(ihc_client_interrupt(c, "a b", NULL, 0, &r), IHC_CLIENT_EBADHW);
    assert_non_null(strstr(ihc_client_last_error(c), "invalid hardware_id"));
    TH_FAIL(ihc_client_interrupt(c, "", NULL, 0, &r), IHC_CLIENT_EBADHW);
    char longhw[200];
    memset(longhw, 'a', sizeof longhw - 1);
    longhw[sizeof longhw - 1] = '\0';
    TH_FAIL(ihc_client_interrupt(c, longhw, NULL, 0, &r), IHC_CLIENT_EBADHW);
    TH_FAIL(ihc_client_interrupt(c, "dev-1", NULL, -5, &r), IHC_CLIENT_EINVAL);
    char *reason = malloc(2000);
    memset(reason, 'r', 1999);
    reason[1999] = '\0';
    TH_FAIL(ihc_client_interrupt(c, "dev-1", reason, 0, &r), IHC_CLIENT_EINVAL);
    free(reason);
    TH_FAIL(ihc_client_interrupt(NULL, "dev-1", NULL, 0, &r), IHC_CLIENT_EINVAL);
    TH_FAIL(ihc_client_interrupt(c, NULL, NULL, 0, &r), IHC_CLIENT_EINVAL);
    TH_FAIL(ihc_client_interrupt(c, "dev-1", NULL, 0, NULL), IHC_CLIENT_EINVAL);
    TH_FAIL(ihc_client_query(c, "nope", NULL, &json), IHC_CLIENT_EINVAL);
    assert_non_null(strstr(ihc_client_last_error(c), "unknown query 'nope'"));
    TH_FAIL(ihc_client_query(c, "agents", "dev-1", &json), IHC_CLIENT_EINVAL);
    TH_FAIL(ihc_client_query(c, "sessions", "*", &json), IHC_CLIENT_EBADHW);
    assert_null(json);
    /* none of these reached the coordinator */
    assert_int_equal(atomic_load(&f->requests), 1);

    ihc_client_opts o = {.timeout_ms = -1};
    ihc_client *c2 = (ihc_client *)1;
    TH_FAIL(ihc_client_open(&c2, &o), IHC_CLIENT_EINVAL);
    assert_null(c2);
    assert_non_null(strstr(ihc_client_last_error(NULL), "must not be negative"));
    o = (ihc_client_opts){.control_url = "bogus://x"};
    TH_FAIL(ihc_client_open(&c2, &o), IHC_CLIENT_ETRANSPORT);
    /* a failed open explains itself through last_error(NULL), and about no client */
    assert_non_null(strstr(ihc_client_last_error(NULL), "cannot dial 'bogus://x'"));
    assert_string_equal(ihc_client_last_error(c), "");
    TH_FAIL(ihc_client_open(NULL, NULL), IHC_CLIENT_EINVAL);
    assert_string_equal(ihc_client_strerror(IHC_CLIENT_ENOTCONN), "not connected");
    TH_PASS(ihc_client_query(c, "agents", NULL, &json));
    free(json);
    json = NULL;
    assert_string_equal(ihc_client_last_error(NULL), ""); /* this thread's text is about c */
    ihc_client_close(NULL);
    ihc_result_free(NULL);
    ihc_client_close(c);
    fake_stop(f);
}

static void test_client_queries(void **state)
{
    (void)state;
    fake_coord *f = fake_start(NULL, 0);
    ihc_client *c = client_for(f->url, NULL, 0);
    char *json = NULL;
    TH_PASS(ihc_client_query(c, "sessions", "dev-1", &json));
    assert_string_equal(json, "{\"op\":\"sessions\",\"hw\":\"dev-1\",\"count\":0}");
    free(json);
    const char *ops[] = {"sessions", "agents", "flags", "flags_reset"};
    for (size_t i = 0; i < 4; i++) {
        TH_PASS(ihc_client_query(c, ops[i], NULL, &json));
        json_t *d = json_loads(json, 0, NULL);
        assert_non_null(d);
        assert_string_equal(json_string_value(json_object_get(d, "op")), ops[i]);
        json_decref(d);
        free(json);
    }
    TH_FAIL(ihc_client_query(c, "stats", NULL, &json), IHC_CLIENT_ELIMIT);
    assert_null(json);
    assert_non_null(strstr(ihc_client_last_error(c), "shutting down"));
    ihc_client_close(c);
    fake_stop(f);
}

static void test_client_unreachable(void **state)
{
    (void)state;
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", th_free_port());
    ihc_client_opts o = {.control_url = url, .connect_timeout_ms = 300};
    ihc_client *c = NULL;
    TH_PASS(ihc_client_open(&c, &o));
    uint64_t t0 = th_now_ms_();
    ihc_result *r = NULL;
    TH_FAIL(ihc_client_interrupt(c, "dev-1", NULL, 0, &r), IHC_CLIENT_ENOTCONN);
    assert_null(r);
    uint64_t took = th_now_ms_() - t0;
    assert_true(took >= 250 && took < 2000);
    assert_non_null(strstr(ihc_client_last_error(c), url));
    char *json = NULL;
    TH_FAIL(ihc_client_query(c, "agents", NULL, &json), IHC_CLIENT_ENOTCONN);
    assert_string_equal(ihc_client_url(c), url);

    /* the coordinator comes up later: the same client connects in the background */
    int port = atoi(strrchr(url, ':') + 1);
    fake_coord *f = fake_start(NULL, port);
    o.connect_timeout_ms = 3000;
    ihc_client_close(c);
    TH_PASS(ihc_client_open(&c, &o));
    TH_PASS(ihc_client_query(c, "agents", NULL, &json));
    free(json);
    ihc_client_close(c);
    fake_stop(f);
}

/* A list of control URLs: a dead coordinator and a standby are skipped, the leader answers,
 * and the next call goes straight to it. */
static void test_client_list_failover(void **state)
{
    (void)state;
    fake_coord *standby = fake_start(NULL, 0), *leader = fake_start(NULL, 0);
    atomic_store(&standby->standby, true);
    char list[256];
    snprintf(list, sizeof list, "tcp://127.0.0.1:%d,%s,%s", th_free_port(), standby->url,
             leader->url);
    ihc_client_opts o = {.control_url = list, .connect_timeout_ms = 1000};
    ihc_client *c = NULL;
    TH_PASS(ihc_client_open(&c, &o));
    assert_string_equal(ihc_client_url(c), list);
    uint64_t t0 = th_now_ms_();
    ihc_result *r = NULL;
    TH_PASS(ihc_client_interrupt(c, "dev-1", NULL, 0, &r));
    assert_true(r->success);
    ihc_result_free(r);
    assert_true(th_now_ms_() - t0 < 1500); /* one connect wait at most, not one per URL */
    assert_int_equal(atomic_load(&leader->requests), 1);
    int asked = atomic_load(&standby->requests);
    assert_true(asked <= 1);
    TH_PASS(ihc_client_interrupt(c, "dev-1", NULL, 0, &r));
    ihc_result_free(r);
    assert_int_equal(atomic_load(&leader->requests), 2);
    assert_int_equal(atomic_load(&standby->requests), asked);

    /* the leader steps down: the other one took over */
    atomic_store(&leader->standby, true);
    atomic_store(&standby->standby, false);
    TH_PASS(ihc_client_interrupt(c, "dev-1", NULL, 0, &r));
    ihc_result_free(r);
    assert_int_equal(atomic_load(&leader->requests), 3);
    assert_int_equal(atomic_load(&standby->requests), asked + 1);

    /* only standbys: nothing was run, the code says so */
    atomic_store(&standby->standby, true);
    TH_FAIL(ihc_client_interrupt(c, "dev-1", NULL, 0, &r), IHC_CLIENT_ENOTLEADER);
    assert_null(r);
    assert_non_null(strstr(ihc_client_last_error(c), "standby"));
    ihc_client_close(c);
    fake_stop(standby);
    fake_stop(leader);
}

/* An interrupt that reached a coordinator is never sent to another, even when no answer
 * comes; a query (read-only) is. */
static void test_client_list_no_resend(void **state)
{
    (void)state;
    fake_coord *a = fake_start(NULL, 0), *b = fake_start(NULL, 0);
    char list[160];
    snprintf(list, sizeof list, "%s,%s", a->url, b->url);
    ihc_client_opts o = {.control_url = list, .timeout_ms = 300, .connect_timeout_ms = 2000};
    ihc_client *c = NULL;
    TH_PASS(ihc_client_open(&c, &o));
    char *json = NULL;
    TH_PASS(ihc_client_query(c, "agents", NULL, &json)); /* makes one of them the preferred */
    free(json);
    fake_coord *first = atomic_load(&a->requests) ? a : b, *other = first == a ? b : a;
    ihc_result *r = NULL;
    TH_FAIL(ihc_client_interrupt(c, "slow", NULL, 100, &r), IHC_CLIENT_ETIMEDOUT);
    assert_int_equal(atomic_load(&first->requests), 2);
    assert_int_equal(atomic_load(&other->requests), 0);
    /* a query that gets no answer is asked of the next */
    TH_FAIL(ihc_client_query(c, "sessions", "slow", &json), IHC_CLIENT_ETIMEDOUT);
    assert_int_equal(atomic_load(&first->requests), 3);
    assert_int_equal(atomic_load(&other->requests), 1);
    ihc_client_close(c);
    fake_stop(a);
    fake_stop(b);
}

static void test_client_timeout(void **state)
{
    (void)state;
    fake_coord *f = fake_start(NULL, 0);
    ihc_client *c = client_for(f->url, NULL, 300);
    uint64_t t0 = th_now_ms_();
    char *json = NULL;
    TH_FAIL(ihc_client_query(c, "sessions", "slow", &json), IHC_CLIENT_ETIMEDOUT);
    uint64_t took = th_now_ms_() - t0;
    assert_true(took >= 250 && took < 2000);
    assert_non_null(strstr(ihc_client_last_error(c), "no answer"));
    /* the client is still usable */
    TH_PASS(ihc_client_query(c, "sessions", NULL, &json));
    free(json);
    ihc_client_close(c);
    fake_stop(f);
}

static void test_client_signed(void **state)
{
    (void)state;
    fake_coord *f = fake_start("shared-secret", 0);
    ihc_client *c = client_for(f->url, "shared-secret", 0);
    ihc_result *r = NULL;
    TH_PASS(ihc_client_interrupt(c, "dev-1", NULL, 0, &r));
    assert_true(r->success);
    ihc_result_free(r);
    ihc_client_close(c);
    /* a client with another secret is refused, and refuses the unsigned refusal */
    c = client_for(f->url, "other-secret", 0);
    TH_FAIL(ihc_client_interrupt(c, "dev-1", NULL, 0, &r), IHC_CLIENT_EBADSIG);
    assert_non_null(strstr(ihc_client_last_error(c), "signature"));
    ihc_client_close(c);
    fake_stop(f);
}

#define N_THREADS 8
#define N_CALLS   25

static void *hammer(void *arg)
{
    ihc_client *c = arg;
    intptr_t bad = 0;
    for (int i = 0; i < N_CALLS; i++) {
        char hw[32];
        snprintf(hw, sizeof hw, "t%d", i);
        ihc_result *r = NULL;
        if (ihc_client_interrupt(c, hw, NULL, 0, &r) != 0 || !r->success ||
            strcmp(r->hardware_id, hw) != 0)
            bad++;
        ihc_result_free(r);
    }
    return (void *)bad;
}

static void test_client_many_threads(void **state)
{
    (void)state;
    fake_coord *f = fake_start(NULL, 0);
    ihc_client *c = client_for(f->url, NULL, 0);
    pthread_t t[N_THREADS];
    for (int i = 0; i < N_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, c), 0);
    intptr_t bad = 0;
    for (int i = 0; i < N_THREADS; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        bad += (intptr_t)rv;
    }
    assert_int_equal(bad, 0);
    assert_int_equal(atomic_load(&f->requests), N_THREADS * N_CALLS);
    ihc_client_close(c);
    fake_stop(f);
}

/* ---- watch ---------------------------------------------------------------------------------- */

#define SECRET "s3cret"

/* An interrupt result document with this id, for hardware_id hw. */
static const char *doc_for(char *buf, size_t cap, uint64_t id, const char *hw)
{
    snprintf(buf, cap,
             "{\"success\":true,\"interrupt_id\":%llu,\"hardware_id\":\"%s\",\"epoch\":1,"
             "\"agents\":{\"expected\":[],\"answered\":[],\"missing\":[]},"
             "\"total_time_ms\":0.1,\"persisted\":true}",
             (unsigned long long)id, hw);
    return buf;
}

/* Publishes raw bytes on the fake coordinator's PUB socket. */
static void publish_raw(th_fc *fc, const void *buf, size_t len)
{
    assert_int_equal(nng_send(fc->pub, (void *)buf, len, 0), 0);
}

/* A "result" message framed with the event topic, signed with secret (NULL: unsigned).
 * Caller frees *buf. */
static void encode_result(const char *json, const char *secret, uint8_t **buf, size_t *len)
{
    ihc_wire_auth *a = NULL;
    if (secret != NULL)
        TH_PASS(ihc_wire_auth_new(&a, secret, strlen(secret), 0));
    ihc_msg m = {.type = IHC_MSG_RESULT};
    m.u.result.json = (char *)json;
    TH_PASS(ihc_wire_encode_framed(&m, a, buf, len));
    ihc_wire_auth_free(a);
}

static void publish_result(th_fc *fc, const char *json, const char *secret)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    encode_result(json, secret, &buf, &len);
    publish_raw(fc, buf, len);
    free(buf);
}

static ihc_watch *watch_for(const char *url, const char *secret)
{
    ihc_watch_opts o = {.pub_url = url};
    if (secret != NULL) {
        o.secret = secret;
        o.secret_len = strlen(secret);
    }
    ihc_watch *w = NULL;
    TH_PASS(ihc_watch_open(&w, &o));
    assert_non_null(w);
    return w;
}

#define MARKER_BASE 9000000u

/* Publish/subscribe loses what is sent before both ends of the connection are up: publishes
 * markers (signed with secret) until the watch gets one, then waits for the last one sent,
 * so that nothing of this is left queued for the test. */
static void watch_sync(th_fc *fc, ihc_watch *w, const char *secret)
{
    assert_true(TH_WAIT(ihc_watch_connected(w), 10000));
    uint64_t end = th_now_ms_() + 10000, last = 0;
    bool got = false;
    while (th_now_ms_() < end) {
        if (!got) {
            char doc[256];
            publish_result(fc, doc_for(doc, sizeof doc, MARKER_BASE + ++last, "sync"), secret);
        }
        ihc_result *r = NULL;
        int rc = ihc_watch_next(w, got ? 5000 : 100, &r);
        if (rc == IHC_CLIENT_OK) {
            got = true;
            uint64_t id = r->interrupt_id;
            ihc_result_free(r);
            if (id == MARKER_BASE + last)
                return;
        } else if (rc != IHC_CLIENT_ETIMEDOUT || got) {
            fail_msg("watch sync: %s (%s)", ihc_client_strerror(rc), ihc_watch_last_error(w));
        }
    }
    fail_msg("watch sync: no marker arrived within 10 s");
}

/* The next result must be the one with this id. */
static void expect_id(ihc_watch *w, uint64_t id)
{
    ihc_result *r = NULL;
    int rc = ihc_watch_next(w, 5000, &r);
    if (rc != IHC_CLIENT_OK)
        fail_msg("want result %llu: %s (%s)", (unsigned long long)id, ihc_client_strerror(rc),
                 ihc_watch_last_error(w));
    assert_int_equal(r->interrupt_id, id);
    ihc_result_free(r);
}

static void test_client_watch_results(void **state)
{
    (void)state;
    th_fc fc = {0};
    assert_int_equal(th_fc_listen(&fc), 0);
    ihc_watch *w = watch_for(fc.pub_url, NULL);
    assert_string_equal(ihc_watch_url(w), fc.pub_url);
    watch_sync(&fc, w, NULL);

    publish_result(&fc, full_result, NULL);
    publish_result(&fc, incomplete_result, SECRET); /* no secret here: signatures not checked */
    ihc_result *r = NULL;
    TH_PASS(ihc_watch_next(w, 5000, &r));
    assert_string_equal(ihc_result_json(r), full_result);
    assert_int_equal(r->status, 200);
    assert_true(r->success);
    assert_int_equal(r->interrupt_id, 17);
    assert_string_equal(r->hardware_id, "dev-1");
    assert_int_equal(r->n_cleaned_sessions, 2);
    assert_int_equal(r->n_agents_answered, 1);
    assert_int_equal(r->n_modules, 2);
    assert_string_equal(r->reason, "user stop");
    int64_t now_ms = (int64_t)time(NULL) * 1000;
    assert_true(r->sent_ms > now_ms - 60000 && r->sent_ms < now_ms + 60000);
    ihc_result_free(r);
    TH_PASS(ihc_watch_next(w, 5000, &r));
    assert_false(r->success);
    assert_int_equal(r->interrupt_id, 18);
    assert_string_equal(r->error, "1 agent did not answer: n2:7");
    assert_string_equal(r->agents_missing[0], "n2:7");
    ihc_result_free(r);

    /* nothing more: 0 takes only what has arrived, a timeout waits that long */
    r = (ihc_result *)1;
    TH_FAIL(ihc_watch_next(w, 0, &r), IHC_CLIENT_ETIMEDOUT);
    assert_null(r);
    uint64_t t0 = th_now_ms_();
    TH_FAIL(ihc_watch_next(w, 300, &r), IHC_CLIENT_ETIMEDOUT);
    uint64_t took = th_now_ms_() - t0;
    assert_true(took >= 250 && took < 3000);
    assert_non_null(strstr(ihc_watch_last_error(w), "no finished interrupt within 300 ms"));
    assert_int_equal(ihc_watch_dropped(w), 0);
    assert_true(ihc_watch_connected(w));
    ihc_watch_close(w);
    th_fc_close(&fc);
}

static void test_client_watch_bad_messages(void **state)
{
    (void)state;
    th_fc fc = {0};
    assert_int_equal(th_fc_listen(&fc), 0);
    ihc_watch *w = watch_for(fc.pub_url, NULL);
    watch_sync(&fc, w, NULL);

    /* another message type framed with the event topic */
    ihc_msg im = {.type = IHC_MSG_INTERRUPT};
    im.u.interrupt = (ihc_interrupt_msg){.id = 5, .hw = "dev-1", .epoch = 1, .reason = "x"};
    uint8_t *body = NULL;
    size_t blen = 0;
    TH_PASS(ihc_wire_encode(&im, NULL, &body, &blen));
    uint8_t *wrong_type = malloc(sizeof IHC_TOPIC_EVENTS + blen);
    assert_non_null(wrong_type);
    memcpy(wrong_type, IHC_TOPIC_EVENTS, sizeof IHC_TOPIC_EVENTS);
    memcpy(wrong_type + sizeof IHC_TOPIC_EVENTS, body, blen);
    free(body);
    uint8_t *not_doc = NULL, *not_json = NULL;
    size_t not_doc_len = 0, not_json_len = 0;
    encode_result("{\"hello\":1}", NULL, &not_doc, &not_doc_len);
    encode_result("{\"success\":", NULL, &not_json, &not_json_len);
    static const uint8_t garbage[] = "ev:\0\xc1\xc1\xc1";
    static const uint8_t huge_array[] = "ev:\0\xdd\x08\x00\x00\x00";

    const struct {
        const void *buf;
        size_t len;
        const char *why;
    } bad[] = {
        {garbage, sizeof garbage - 1, "malformed message"},
        {huge_array, sizeof huge_array - 1, "malformed message"},
        {wrong_type, sizeof IHC_TOPIC_EVENTS + blen, "'interrupt' message on the event topic"},
        {not_doc, not_doc_len, "not an interrupt document"},
        {not_json, not_json_len, "not an interrupt document"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        /* each bad message, then a good one: the good one is what comes out */
        publish_raw(&fc, bad[i].buf, bad[i].len);
        char doc[256];
        publish_result(&fc, doc_for(doc, sizeof doc, 100 + i, "dev-1"), NULL);
        expect_id(w, 100 + i);
        assert_int_equal(ihc_watch_dropped(w), i + 1);
        if (strstr(ihc_watch_last_error(w), bad[i].why) == NULL)
            fail_msg("bad message %zu: want '%s' in '%s'", i, bad[i].why, ihc_watch_last_error(w));
    }
    /* a bad message alone never comes out: the wait runs to its end */
    publish_raw(&fc, garbage, sizeof garbage - 1);
    ihc_result *r = NULL;
    TH_FAIL(ihc_watch_next(w, 500, &r), IHC_CLIENT_ETIMEDOUT);
    assert_null(r);
    assert_int_equal(ihc_watch_dropped(w), 6);
    assert_non_null(strstr(ihc_watch_last_error(w), "malformed message"));
    free(wrong_type);
    free(not_doc);
    free(not_json);
    ihc_watch_close(w);
    th_fc_close(&fc);
}

static void test_client_watch_secret(void **state)
{
    (void)state;
    th_fc fc = {0};
    assert_int_equal(th_fc_listen(&fc), 0);
    ihc_watch *w = watch_for(fc.pub_url, SECRET);
    watch_sync(&fc, w, SECRET);
    assert_int_equal(ihc_watch_dropped(w), 0);

    /* unsigned, then signed with another secret: dropped; the signed one after comes out */
    char doc[256];
    publish_result(&fc, full_result, NULL);
    publish_result(&fc, doc_for(doc, sizeof doc, 1, "dev-1"), SECRET);
    expect_id(w, 1);
    assert_int_equal(ihc_watch_dropped(w), 1);
    assert_non_null(strstr(ihc_watch_last_error(w), "signature"));
    publish_result(&fc, full_result, "other-secret");
    publish_result(&fc, doc_for(doc, sizeof doc, 2, "dev-1"), SECRET);
    expect_id(w, 2);
    assert_int_equal(ihc_watch_dropped(w), 2);
    assert_non_null(strstr(ihc_watch_last_error(w), "signature"));

    /* the same signed bytes twice: the copy is a replay */
    uint8_t *buf = NULL;
    size_t len = 0;
    encode_result(doc_for(doc, sizeof doc, 3, "dev-1"), SECRET, &buf, &len);
    publish_raw(&fc, buf, len);
    publish_raw(&fc, buf, len);
    free(buf);
    publish_result(&fc, doc_for(doc, sizeof doc, 4, "dev-1"), SECRET);
    expect_id(w, 3);
    expect_id(w, 4);
    assert_int_equal(ihc_watch_dropped(w), 3);
    assert_non_null(strstr(ihc_watch_last_error(w), "nonce already seen"));

    /* a mismatched secret alone: nothing comes out, and the count says why */
    publish_result(&fc, full_result, "other-secret");
    ihc_result *r = NULL;
    TH_FAIL(ihc_watch_next(w, 500, &r), IHC_CLIENT_ETIMEDOUT);
    assert_null(r);
    assert_int_equal(ihc_watch_dropped(w), 4);
    assert_non_null(strstr(ihc_watch_last_error(w), "signature"));
    ihc_watch_close(w);
    th_fc_close(&fc);
}

/* The coordinator is not there at first, comes up, and goes away again. */
static void test_client_watch_connection(void **state)
{
    (void)state;
    th_fc fc = {0};
    th_fc_pick_ports(&fc);
    ihc_watch *w = watch_for(fc.pub_url, NULL);
    ihc_result *r = NULL;
    TH_FAIL(ihc_watch_next(w, 200, &r), IHC_CLIENT_ETIMEDOUT);
    assert_false(ihc_watch_connected(w));
    assert_int_equal(th_fc_listen(&fc), 0);
    watch_sync(&fc, w, NULL); /* waits for ihc_watch_connected */
    publish_result(&fc, full_result, NULL);
    expect_id(w, 17);
    th_fc_close(&fc);
    assert_true(TH_WAIT(!ihc_watch_connected(w), 10000));
    ihc_watch_close(w);
}

typedef struct {
    ihc_watch *w;
    int rc;
    ihc_result *r;
} waiter;

static void *wait_forever(void *arg)
{
    waiter *wt = arg;
    wt->rc = ihc_watch_next(wt->w, -1, &wt->r);
    return NULL;
}

static void test_client_watch_close_while_waiting(void **state)
{
    (void)state;
    th_fc fc = {0};
    assert_int_equal(th_fc_listen(&fc), 0);
    ihc_watch *w = watch_for(fc.pub_url, NULL);
    watch_sync(&fc, w, NULL);
    waiter wt = {.w = w, .rc = -1, .r = (ihc_result *)1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_forever, &wt), 0);
    /* a message is only dropped inside ihc_watch_next: once the count moves, the thread is
     * in its wait, and close must end it */
    static const uint8_t garbage[] = "ev:\0\xc1";
    uint64_t end = th_now_ms_() + 10000;
    while (ihc_watch_dropped(w) == 0 && th_now_ms_() < end) {
        publish_raw(&fc, garbage, sizeof garbage - 1);
        TH_WAIT(ihc_watch_dropped(w) > 0, 100);
    }
    assert_true(ihc_watch_dropped(w) > 0);
    uint64_t t0 = th_now_ms_();
    ihc_watch_close(w); /* returns once the waiting call has left */
    assert_true(th_now_ms_() - t0 < 5000);
    /* the thread stores what the call returned after it returned: join before reading */
    pthread_join(t, NULL);
    assert_int_equal(wt.rc, IHC_CLIENT_ECLOSED);
    assert_null(wt.r);
    th_fc_close(&fc);
}

static void test_client_watch_bad_arguments(void **state)
{
    (void)state;
    ihc_watch *w = (ihc_watch *)1;
    TH_FAIL(ihc_watch_open(NULL, NULL), IHC_CLIENT_EINVAL);
    ihc_watch_opts o = {.pub_url = "bogus://x"};
    TH_FAIL(ihc_watch_open(&w, &o), IHC_CLIENT_ETRANSPORT);
    assert_null(w);
    assert_non_null(strstr(ihc_client_last_error(NULL), "cannot dial 'bogus://x'"));
    o = (ihc_watch_opts){.secret_len = 4};
    TH_FAIL(ihc_watch_open(&w, &o), IHC_CLIENT_EINVAL);
    assert_non_null(strstr(ihc_client_last_error(NULL), "secret is NULL"));
    ihc_result *r = (ihc_result *)1;
    TH_FAIL(ihc_watch_next(NULL, 0, &r), IHC_CLIENT_EINVAL);
    assert_null(r);
    assert_false(ihc_watch_connected(NULL));
    assert_int_equal(ihc_watch_dropped(NULL), 0);
    assert_string_equal(ihc_watch_url(NULL), "");
    assert_string_equal(ihc_watch_last_error(NULL), ihc_client_last_error(NULL));
    ihc_watch_close(NULL);

    th_fc fc = {0};
    assert_int_equal(th_fc_listen(&fc), 0);
    w = watch_for(fc.pub_url, NULL);
    TH_FAIL(ihc_watch_next(w, 0, NULL), IHC_CLIENT_EINVAL);
    watch_sync(&fc, w, NULL); /* connected first: see test_client_bad_arguments */
    ihc_watch_close(w);
    th_fc_close(&fc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_interrupt_result),
        cmocka_unit_test(test_client_incomplete_and_refused),
        cmocka_unit_test(test_client_bad_arguments),
        cmocka_unit_test(test_client_queries),
        cmocka_unit_test(test_client_unreachable),
        cmocka_unit_test(test_client_timeout),
        cmocka_unit_test(test_client_signed),
        cmocka_unit_test(test_client_list_failover),
        cmocka_unit_test(test_client_list_no_resend),
        cmocka_unit_test(test_client_many_threads),
        cmocka_unit_test(test_client_watch_results),
        cmocka_unit_test(test_client_watch_bad_messages),
        cmocka_unit_test(test_client_watch_secret),
        cmocka_unit_test(test_client_watch_connection),
        cmocka_unit_test(test_client_watch_close_while_waiting),
        cmocka_unit_test(test_client_watch_bad_arguments),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    nng_fini(); /* drains nng's reaper so leak checkers see only real leaks */
    return failed;
}
