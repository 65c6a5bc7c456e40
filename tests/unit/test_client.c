/* libihc tests: the client against a fake coordinator control socket (nng REP in a thread of
 * this test) — result parsing, errors, signing, unreachable and slow coordinators, threads. */
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
        if (strcmp(hw, "slow") == 0) {
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
    o = (ihc_client_opts){.control_url = "bogus://x"};
    TH_FAIL(ihc_client_open(&c2, &o), IHC_CLIENT_ETRANSPORT);
    TH_FAIL(ihc_client_open(NULL, NULL), IHC_CLIENT_EINVAL);
    assert_string_equal(ihc_client_strerror(IHC_CLIENT_ENOTCONN), "not connected");
    assert_string_equal(ihc_client_last_error(NULL), "");
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
        cmocka_unit_test(test_client_many_threads),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    nng_fini(); /* drains nng's reaper so leak checkers see only real leaks */
    return failed;
}
