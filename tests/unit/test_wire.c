/* Unit tests of common/wire: round trips of every message type, framing, identifier rules,
 * field-by-field validation of hostile and random input, and every type signed. */
#include "harness.h"

#include "clock.h"
#include "err.h"
#include "wire.h"

#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS0 1700000000123LL

/* ------------------------------------------------------------------------------------------
 * Fixtures: one message of each type with every field set, and one with only what is
 * required.
 * ---------------------------------------------------------------------------------------- */

static char *fx_agents[] = {"n1:42", "node-b:7", "h:1"};
static ihc_module_result fx_results[] = {
    {"text_processing", IHC_MOD_OK, 1.25, NULL},
    {"audio_generation", IHC_MOD_TIMED_OUT, 5000.5, "timed out after 5000 ms"},
    {"session_management", IHC_MOD_FAILED, 0.5, "boom"},
    {"idle", IHC_MOD_DISABLED, 0.0, NULL},
};
static char *fx_sessions[] = {"s-1", "s-2"};
static char *fx_methods_a[] = {"stop_generation", "flush"};
static char *fx_methods_b[] = {"cancel"};
static ihc_module_info fx_modules[] = {
    {"text_processing", fx_methods_a, 2, 500, true},
    {"audio_generation", fx_methods_b, 1, 0, false},
    {"bare", NULL, 0, 0, true},
};
static ihc_session_info fx_sinfo[] = {
    {"s-1", "dev-1", 4, 2, TS0 - 5000, "text_processing", 1234, "{\"user\":\"u1\"}"},
    {"s-2", "dev-2", 1, 0, TS0 - 1, NULL, 0, NULL},
};
static char *fx_hws[] = {"dev-1", "dev-2", "a.b:c@d_e-f"};
static char *fx_modnames[] = {"text_processing", "audio_generation"};
static char *fx_subaddrs[] = {"127.0.0.1:50312", "[2001:db8::1]:7450"};
static ihc_epoch_info fx_epochs[] = {{"*", 3, TS0 - 10}, {"dev-1", 17, 0}, {"dev-2", 0, TS0}};

static void make_full(ihc_msg_type t, ihc_msg *m)
{
    memset(m, 0, sizeof *m);
    m->type = t;
    m->ts_ms = TS0;
    switch (t) {
    case IHC_MSG_INTERRUPT:
        m->u.interrupt =
            (ihc_interrupt_msg){17, "dev-1", 4, "user stop", TS0 + 5000, fx_agents, 3, 2, 9};
        break;
    case IHC_MSG_REPORT:
        m->u.report = (ihc_report_msg){17, "n1:42", "dev-1", fx_results, 4, fx_sessions,
                                       2,  7.75,    9,       fx_sinfo,   2};
        break;
    case IHC_MSG_SESSION_BEGIN:
        m->u.session_begin.agent = "n1:42";
        m->u.session_begin.session = fx_sinfo[0];
        break;
    case IHC_MSG_SESSION_END:
        m->u.session_end = (ihc_session_end_msg){"n1:42", "s-1", "dev-1", "interrupted"};
        break;
    case IHC_MSG_HELLO:
        m->u.hello = (ihc_hello_msg){"n1:42", "node-a", 42, TS0 - 60000, fx_modules,
                                     3,       fx_sinfo, 2,  fx_subaddrs, 2};
        break;
    case IHC_MSG_HEARTBEAT:
        m->u.heartbeat = (ihc_heartbeat_msg){"n1:42", 5, fx_hws, 3, fx_modnames, 2};
        break;
    case IHC_MSG_SYNC:
        m->u.sync = (ihc_sync_msg){"n1:42", fx_epochs, 3, true, 9, true};
        break;
    case IHC_MSG_RESULT:
        m->u.result.json = "{\"success\":true,\"interrupt_id\":17}";
        break;
    case IHC_MSG_CONTROL_REQUEST:
        m->u.control_request = (ihc_control_request){"interrupt", "dev-1", "user stop", 2500};
        break;
    case IHC_MSG_CONTROL_RESPONSE:
        m->u.control_response = (ihc_control_response){503, "{\"error\":\"no agents\"}"};
        break;
    default:
        fail_msg("no fixture for type %d", t);
    }
}

static void make_min(ihc_msg_type t, ihc_msg *m)
{
    memset(m, 0, sizeof *m);
    m->type = t;
    m->ts_ms = TS0;
    switch (t) {
    case IHC_MSG_INTERRUPT:
        m->u.interrupt.id = 1;
        m->u.interrupt.hw = "*";
        break;
    case IHC_MSG_REPORT:
        m->u.report.id = 1;
        m->u.report.agent = "a:1";
        m->u.report.hw = "dev-1";
        break;
    case IHC_MSG_SESSION_BEGIN:
        m->u.session_begin.agent = "a:1";
        m->u.session_begin.session.session_id = "s";
        m->u.session_begin.session.hw = "h";
        break;
    case IHC_MSG_SESSION_END:
        m->u.session_end = (ihc_session_end_msg){"a:1", "s", "h", "done"};
        break;
    case IHC_MSG_HELLO:
        m->u.hello.agent = "a:1";
        m->u.hello.node = "n";
        break;
    case IHC_MSG_HEARTBEAT:
        m->u.heartbeat.agent = "a:1";
        break;
    case IHC_MSG_SYNC:
        m->u.sync.agent = "a:1";
        break;
    case IHC_MSG_RESULT:
        m->u.result.json = "";
        break;
    case IHC_MSG_CONTROL_REQUEST:
        m->u.control_request.op = "stats";
        break;
    case IHC_MSG_CONTROL_RESPONSE:
        m->u.control_response.json = "{}";
        break;
    default:
        fail_msg("no fixture for type %d", t);
    }
}

static void enc(const ihc_msg *m, const ihc_wire_auth *auth, uint8_t **buf, size_t *len)
{
    TH_PASS(ihc_wire_encode(m, auth, buf, len));
    assert_non_null(*buf);
    assert_true(*len > 0);
}

static ihc_msg *dec_ok(const uint8_t *buf, size_t len, const ihc_wire_auth *auth)
{
    ihc_msg *m = NULL;
    char detail[256];
    int rc = ihc_wire_decode(buf, len, auth, &m, detail, sizeof detail);
    if (rc != IHC_OK)
        fail_msg("decode: %s (%s): %s", ihc_err_name(rc), ihc_strerror(rc), detail);
    assert_non_null(m);
    return m;
}

/* Decodes and expects rc; returns the detail text in a static buffer. */
static const char *dec_fail(const uint8_t *buf, size_t len, const ihc_wire_auth *auth, int want)
{
    static char detail[256];
    ihc_msg *m = (ihc_msg *)(uintptr_t)1;
    int rc = ihc_wire_decode(buf, len, auth, &m, detail, sizeof detail);
    if (rc != want)
        fail_msg("decode: got %s, want %s (%s)", ihc_err_name(rc), ihc_err_name(want), detail);
    assert_null(m);
    if (want != IHC_OK)
        assert_true(detail[0] != '\0');
    return detail;
}

static void assert_strs(char **a, size_t na, char **b, size_t nb)
{
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++)
        assert_string_equal(a[i], b[i]);
}

static void assert_opt_str(const char *got, const char *want)
{
    if (want == NULL)
        assert_null(got);
    else
        assert_string_equal(got, want);
}

static void assert_session(const ihc_session_info *a, const ihc_session_info *b)
{
    assert_string_equal(a->session_id, b->session_id);
    assert_string_equal(a->hw, b->hw);
    assert_int_equal(a->epoch, b->epoch);
    assert_int_equal(a->gepoch, b->gepoch);
    assert_int_equal(a->created_ms, b->created_ms);
    assert_opt_str(a->module, b->module);
    assert_int_equal(a->pid, b->pid);
    assert_opt_str(a->data, b->data);
}

/* Field-by-field comparison of a decoded message d with what was encoded, e. */
static void assert_msg_equal(const ihc_msg *d, const ihc_msg *e)
{
    assert_int_equal(d->type, e->type);
    assert_int_equal(d->ts_ms, e->ts_ms);
    switch (e->type) {
    case IHC_MSG_INTERRUPT: {
        const ihc_interrupt_msg *a = &d->u.interrupt, *b = &e->u.interrupt;
        assert_int_equal(a->id, b->id);
        assert_string_equal(a->hw, b->hw);
        assert_int_equal(a->epoch, b->epoch);
        assert_string_equal(a->reason, b->reason ? b->reason : "");
        assert_int_equal(a->deadline_ms, b->deadline_ms);
        assert_strs(a->agents, a->n_agents, b->agents, b->n_agents);
        assert_int_equal(a->attempt, b->attempt);
        assert_int_equal(a->term, b->term);
        break;
    }
    case IHC_MSG_REPORT: {
        const ihc_report_msg *a = &d->u.report, *b = &e->u.report;
        assert_int_equal(a->id, b->id);
        assert_string_equal(a->agent, b->agent);
        assert_string_equal(a->hw, b->hw);
        assert_int_equal(a->term, b->term);
        assert_int_equal(a->n_modules, b->n_modules);
        for (size_t i = 0; i < a->n_modules; i++) {
            assert_string_equal(a->modules[i].name, b->modules[i].name);
            assert_int_equal(a->modules[i].status, b->modules[i].status);
            assert_true(a->modules[i].time_ms == b->modules[i].time_ms);
            assert_opt_str(a->modules[i].error, b->modules[i].error);
        }
        assert_strs(a->sessions, a->n_sessions, b->sessions, b->n_sessions);
        assert_true(a->time_ms == b->time_ms);
        assert_int_equal(a->n_begun, b->n_begun);
        for (size_t i = 0; i < a->n_begun; i++)
            assert_session(&a->begun[i], &b->begun[i]);
        break;
    }
    case IHC_MSG_SESSION_BEGIN:
        assert_string_equal(d->u.session_begin.agent, e->u.session_begin.agent);
        assert_session(&d->u.session_begin.session, &e->u.session_begin.session);
        break;
    case IHC_MSG_SESSION_END: {
        const ihc_session_end_msg *a = &d->u.session_end, *b = &e->u.session_end;
        assert_string_equal(a->agent, b->agent);
        assert_string_equal(a->session_id, b->session_id);
        assert_string_equal(a->hw, b->hw);
        assert_string_equal(a->state, b->state);
        break;
    }
    case IHC_MSG_HELLO: {
        const ihc_hello_msg *a = &d->u.hello, *b = &e->u.hello;
        assert_string_equal(a->agent, b->agent);
        assert_string_equal(a->node, b->node);
        assert_int_equal(a->pid, b->pid);
        assert_int_equal(a->started_ms, b->started_ms);
        assert_int_equal(a->n_modules, b->n_modules);
        for (size_t i = 0; i < a->n_modules; i++) {
            assert_string_equal(a->modules[i].name, b->modules[i].name);
            assert_strs(a->modules[i].methods, a->modules[i].n_methods, b->modules[i].methods,
                        b->modules[i].n_methods);
            assert_int_equal(a->modules[i].timeout_ms, b->modules[i].timeout_ms);
            assert_int_equal(a->modules[i].enabled, b->modules[i].enabled);
        }
        assert_int_equal(a->n_sessions, b->n_sessions);
        for (size_t i = 0; i < a->n_sessions; i++)
            assert_session(&a->sessions[i], &b->sessions[i]);
        assert_strs(a->sub_addrs, a->n_sub_addrs, b->sub_addrs, b->n_sub_addrs);
        break;
    }
    case IHC_MSG_HEARTBEAT: {
        const ihc_heartbeat_msg *a = &d->u.heartbeat, *b = &e->u.heartbeat;
        assert_string_equal(a->agent, b->agent);
        assert_int_equal(a->n_sessions, b->n_sessions);
        assert_strs(a->hws, a->n_hws, b->hws, b->n_hws);
        assert_strs(a->modules, a->n_modules, b->modules, b->n_modules);
        break;
    }
    case IHC_MSG_SYNC: {
        const ihc_sync_msg *a = &d->u.sync, *b = &e->u.sync;
        assert_string_equal(a->agent, b->agent);
        assert_int_equal(a->hello, b->hello);
        assert_int_equal(a->term, b->term);
        assert_int_equal(a->report_begun, b->report_begun);
        assert_int_equal(a->n_epochs, b->n_epochs);
        for (size_t i = 0; i < a->n_epochs; i++) {
            assert_string_equal(a->epochs[i].hw, b->epochs[i].hw);
            assert_int_equal(a->epochs[i].epoch, b->epochs[i].epoch);
            assert_int_equal(a->epochs[i].set_ms, b->epochs[i].set_ms);
        }
        break;
    }
    case IHC_MSG_RESULT:
        assert_string_equal(d->u.result.json, e->u.result.json);
        break;
    case IHC_MSG_CONTROL_REQUEST: {
        const ihc_control_request *a = &d->u.control_request, *b = &e->u.control_request;
        assert_string_equal(a->op, b->op);
        assert_opt_str(a->hw, b->hw);
        assert_opt_str(a->reason, b->reason);
        assert_int_equal(a->timeout_ms, b->timeout_ms);
        break;
    }
    case IHC_MSG_CONTROL_RESPONSE:
        assert_int_equal(d->u.control_response.status, e->u.control_response.status);
        assert_string_equal(d->u.control_response.json, e->u.control_response.json);
        break;
    default:
        fail_msg("unexpected type %d", e->type);
    }
}

/* Encode, decode, compare, re-encode: the second encoding must be byte-identical. */
static void roundtrip(const ihc_msg *m)
{
    uint8_t *b1, *b2;
    size_t n1, n2;
    enc(m, NULL, &b1, &n1);
    ihc_msg *d = dec_ok(b1, n1, NULL);
    assert_msg_equal(d, m);
    enc(d, NULL, &b2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    ihc_msg_free(d);
    free(b1);
    free(b2);
}

static void test_wire_roundtrip_full(void **state)
{
    (void)state;
    for (int t = IHC_MSG_NONE + 1; t < IHC__MSG_COUNT; t++) {
        ihc_msg m;
        make_full((ihc_msg_type)t, &m);
        roundtrip(&m);
    }
}

static void test_wire_roundtrip_minimal(void **state)
{
    (void)state;
    for (int t = IHC_MSG_NONE + 1; t < IHC__MSG_COUNT; t++) {
        ihc_msg m;
        make_min((ihc_msg_type)t, &m);
        roundtrip(&m);
    }
    /* Absent optional fields come back as NULL / 0 / empty; reason as "". */
    ihc_msg m;
    uint8_t *b;
    size_t n;
    make_min(IHC_MSG_INTERRUPT, &m);
    enc(&m, NULL, &b, &n);
    ihc_msg *d = dec_ok(b, n, NULL);
    assert_string_equal(d->u.interrupt.reason, "");
    assert_null(d->u.interrupt.agents);
    assert_int_equal(d->u.interrupt.n_agents, 0);
    assert_int_equal(d->u.interrupt.attempt, 0);
    assert_int_equal(d->nonce, 0);
    ihc_msg_free(d);
    free(b);

    ihc_msg_free(NULL);
}

/* Lists of tiny strings need more memory than twice the input: the arena grows. */
static void test_wire_roundtrip_large(void **state)
{
    (void)state;
    enum { N = 50000 };
    char **hws = malloc(N * sizeof *hws);
    assert_non_null(hws);
    char names[10][2];
    for (int i = 0; i < 10; i++) {
        names[i][0] = (char)('0' + i);
        names[i][1] = '\0';
    }
    for (int i = 0; i < N; i++)
        hws[i] = names[i % 10];
    ihc_msg m;
    make_full(IHC_MSG_HEARTBEAT, &m);
    m.u.heartbeat.hws = hws;
    m.u.heartbeat.n_hws = N;
    roundtrip(&m);
    static ihc_epoch_info eps[3000];
    for (int i = 0; i < 3000; i++)
        eps[i] = (ihc_epoch_info){"*", (uint64_t)i, i};
    make_full(IHC_MSG_SYNC, &m);
    m.u.sync.epochs = eps;
    m.u.sync.n_epochs = 3000;
    roundtrip(&m);
    free(hws);
}

static void test_wire_ts_filled(void **state)
{
    (void)state;
    ihc_msg m;
    make_min(IHC_MSG_HEARTBEAT, &m);
    m.ts_ms = 0;
    uint8_t *b;
    size_t n;
    int64_t before = ihc_now_ms();
    enc(&m, NULL, &b, &n);
    ihc_msg *d = dec_ok(b, n, NULL);
    assert_true(d->ts_ms >= before && d->ts_ms <= ihc_now_ms());
    ihc_msg_free(d);
    free(b);
    /* Negative ts and large values survive. */
    m.ts_ms = -5;
    enc(&m, NULL, &b, &n);
    d = dec_ok(b, n, NULL);
    assert_int_equal(d->ts_ms, -5);
    ihc_msg_free(d);
    free(b);
}

static void test_wire_type_names(void **state)
{
    (void)state;
    assert_string_equal(ihc_msg_type_name(IHC_MSG_REPORT), "report");
    assert_string_equal(ihc_msg_type_name(IHC_MSG_CONTROL_RESPONSE), "control_response");
    assert_string_equal(ihc_msg_type_name(IHC_MSG_NONE), "unknown");
    assert_string_equal(ihc_msg_type_name(IHC__MSG_COUNT), "unknown");
    assert_string_equal(ihc_msg_type_name((ihc_msg_type)-3), "unknown");
}

/* ------------------------------------------------------------------------------------------
 * Identifiers and framing
 * ---------------------------------------------------------------------------------------- */

static void test_wire_ids(void **state)
{
    (void)state;
    char max[IHC_AGENT_ID_MAX + 2];
    memset(max, 'a', sizeof max);
    struct {
        const char *s;
        size_t len; /* 0: strlen */
        bool hw, hw_global, id, agent;
    } cases[] = {
        {"dev-1", 0, true, true, true, true},     {"a.b_c:d@e-F9", 0, true, true, true, true},
        {"*", 0, false, true, false, true},       {"", 0, false, false, false, false},
        {max, 128, true, true, true, true},       {max, 129, false, false, false, true},
        {max, 255, false, false, false, true},    {max, 256, false, false, false, false},
        {"dev 1", 0, false, false, false, false}, {"dev/1", 0, false, false, false, true},
        {"dév", 0, false, false, false, false},   {"a*", 0, false, false, false, true},
        {"**", 0, false, false, false, true},     {"tab\t", 0, false, false, false, false},
        {"a\0b", 3, false, false, false, false},  {"host:1234", 0, true, true, true, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].s);
        if (ihc_hw_valid(cases[i].s, len, false) != cases[i].hw ||
            ihc_hw_valid(cases[i].s, len, true) != cases[i].hw_global ||
            ihc_id_valid(cases[i].s, len) != cases[i].id ||
            ihc_agent_id_valid(cases[i].s, len) != cases[i].agent)
            fail_msg("case %zu (%.*s, len %zu)", i, (int)(len > 20 ? 20 : len), cases[i].s, len);
    }
    assert_false(ihc_hw_valid(NULL, 0, true));
    assert_false(ihc_id_valid(NULL, 3));
    assert_false(ihc_agent_id_valid(NULL, 3));
}

static void test_wire_topics(void **state)
{
    (void)state;
    char t[IHC_TOPIC_MAX];
    assert_int_equal(ihc_wire_topic_hw(t, sizeof t, "dev-1"), 9);
    assert_memory_equal(t, "hw:dev-1\0", 9);
    assert_int_equal(ihc_wire_topic_hw(t, sizeof t, "*"), 5);
    assert_memory_equal(t, "hw:*\0", 5);
    assert_int_equal(ihc_wire_topic_hw(t, 8, "dev-1"), 0);
    assert_int_equal(ihc_wire_topic_hw(t, 9, "dev-1"), 9);
    assert_int_equal(ihc_wire_topic_hw(t, sizeof t, "bad hw"), 0);
    assert_int_equal(ihc_wire_topic_hw(t, sizeof t, ""), 0);
    assert_int_equal(ihc_wire_topic_hw(t, sizeof t, NULL), 0);
    assert_int_equal(ihc_wire_topic_agent(t, sizeof t, "n1:42"), 9);
    assert_memory_equal(t, "ag:n1:42\0", 9);
    assert_int_equal(ihc_wire_topic_agent(t, sizeof t, "has space"), 0);
    char agent[IHC_AGENT_ID_MAX + 1];
    memset(agent, 'x', IHC_AGENT_ID_MAX);
    agent[IHC_AGENT_ID_MAX] = '\0';
    assert_int_equal(ihc_wire_topic_agent(t, sizeof t, agent), IHC_TOPIC_MAX);
}

static void check_framed(const ihc_msg *m, const char *want_topic)
{
    uint8_t *b;
    size_t n;
    TH_PASS(ihc_wire_encode_framed(m, NULL, &b, &n));
    const char *topic;
    size_t tl, bl;
    const uint8_t *body;
    TH_PASS(ihc_wire_split(b, n, &topic, &tl, &body, &bl));
    assert_int_equal(tl, strlen(want_topic));
    assert_memory_equal(topic, want_topic, tl);
    assert_int_equal(body, b + tl + 1);
    assert_int_equal(bl, n - tl - 1);
    /* The framed body is exactly the unframed encoding. */
    uint8_t *plain;
    size_t pn;
    enc(m, NULL, &plain, &pn);
    assert_int_equal(pn, bl);
    assert_memory_equal(plain, body, bl);
    ihc_msg *d = dec_ok(body, bl, NULL);
    assert_msg_equal(d, m);
    ihc_msg_free(d);
    free(plain);
    free(b);
}

static void test_wire_framing(void **state)
{
    (void)state;
    ihc_msg m;
    make_full(IHC_MSG_INTERRUPT, &m);
    check_framed(&m, "hw:dev-1");
    m.u.interrupt.hw = "*";
    check_framed(&m, "hw:*");
    make_full(IHC_MSG_SYNC, &m);
    check_framed(&m, "ag:n1:42");
    make_full(IHC_MSG_RESULT, &m);
    check_framed(&m, "ev:");

    uint8_t *b = (uint8_t *)1;
    size_t n = 1;
    make_full(IHC_MSG_REPORT, &m);
    TH_FAIL(ihc_wire_encode_framed(&m, NULL, &b, &n), IHC_EINVAL);
    assert_null(b);
    make_full(IHC_MSG_INTERRUPT, &m);
    m.u.interrupt.hw = "bad hw";
    TH_FAIL(ihc_wire_encode_framed(&m, NULL, &b, &n), IHC_EINVAL);
    m.u.interrupt.hw = NULL;
    TH_FAIL(ihc_wire_encode_framed(&m, NULL, &b, &n), IHC_EINVAL);
    TH_FAIL(ihc_wire_encode_framed(NULL, NULL, &b, &n), IHC_EINVAL);

    /* split: the NUL must come within IHC_TOPIC_MAX bytes. */
    uint8_t raw[600];
    memset(raw, 'x', sizeof raw);
    const char *topic;
    size_t tl, bl;
    const uint8_t *body;
    TH_FAIL(ihc_wire_split(raw, sizeof raw, &topic, &tl, &body, &bl), IHC_EPROTO);
    raw[IHC_TOPIC_MAX - 1] = '\0';
    TH_PASS(ihc_wire_split(raw, sizeof raw, &topic, &tl, &body, &bl));
    assert_int_equal(tl, IHC_TOPIC_MAX - 1);
    raw[IHC_TOPIC_MAX - 1] = 'x';
    raw[IHC_TOPIC_MAX] = '\0';
    TH_FAIL(ihc_wire_split(raw, sizeof raw, &topic, &tl, &body, &bl), IHC_EPROTO);
    TH_FAIL(ihc_wire_split(raw, 0, &topic, &tl, &body, &bl), IHC_EPROTO);
    raw[0] = '\0';
    TH_PASS(ihc_wire_split(raw, 1, &topic, &tl, &body, &bl));
    assert_int_equal(tl, 0);
    assert_int_equal(bl, 0);
    TH_FAIL(ihc_wire_split(NULL, 0, &topic, &tl, &body, &bl), IHC_EPROTO);
}

/* ------------------------------------------------------------------------------------------
 * Encoder validation
 * ---------------------------------------------------------------------------------------- */

static int try_enc(const ihc_msg *m)
{
    uint8_t *b = (uint8_t *)1;
    size_t n = 1;
    int rc = ihc_wire_encode(m, NULL, &b, &n);
    if (rc == IHC_OK)
        free(b);
    else
        assert_null(b);
    return rc;
}

static void test_wire_encode_invalid(void **state)
{
    (void)state;
    ihc_msg m;
    uint8_t *b;
    size_t n;
    TH_FAIL(ihc_wire_encode(NULL, NULL, &b, &n), IHC_EINVAL);
    memset(&m, 0, sizeof m);
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    m.type = IHC__MSG_COUNT;
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    make_full(IHC_MSG_INTERRUPT, &m);
    TH_FAIL(ihc_wire_encode(&m, NULL, NULL, &n), IHC_EINVAL);

    make_full(IHC_MSG_INTERRUPT, &m);
    m.u.interrupt.hw = NULL;
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    m.u.interrupt.hw = "dev 1";
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    m.u.interrupt.hw = "dev-1";
    m.u.interrupt.reason = NULL; /* optional: encoded as "" */
    TH_PASS(try_enc(&m));
    char big[IHC_REASON_MAX + 2];
    memset(big, 'r', sizeof big);
    big[IHC_REASON_MAX + 1] = '\0';
    m.u.interrupt.reason = big;
    TH_FAIL(try_enc(&m), IHC_ETOOBIG);
    big[IHC_REASON_MAX] = '\0';
    TH_PASS(try_enc(&m));
    m.u.interrupt.reason = "x";
    char *bad_agents[] = {"ok:1", "not ok"};
    m.u.interrupt.agents = bad_agents;
    m.u.interrupt.n_agents = 2;
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    m.u.interrupt.agents = NULL;
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    m.u.interrupt.n_agents = IHC_WIRE_MAX_LIST + 1;
    m.u.interrupt.agents = bad_agents;
    TH_FAIL(try_enc(&m), IHC_ETOOBIG);

    make_full(IHC_MSG_SESSION_BEGIN, &m);
    m.u.session_begin.session.hw = "*"; /* sessions belong to one device */
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    make_full(IHC_MSG_SESSION_END, &m);
    m.u.session_end.state = "running";
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    make_full(IHC_MSG_REPORT, &m);
    ihc_module_result bad_mr[] = {{"m", IHC_MOD_OK, NAN, NULL}};
    m.u.report.modules = bad_mr;
    m.u.report.n_modules = 1;
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    bad_mr[0].time_ms = 1;
    bad_mr[0].status = (ihc_mod_status)9;
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    bad_mr[0].status = IHC_MOD_OK;
    bad_mr[0].name = "bad name";
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    bad_mr[0].name = "m";
    TH_PASS(try_enc(&m));
    make_full(IHC_MSG_CONTROL_REQUEST, &m);
    m.u.control_request.timeout_ms = -1;
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    make_full(IHC_MSG_HELLO, &m);
    m.u.hello.node = NULL;
    TH_FAIL(try_enc(&m), IHC_EINVAL);
    make_full(IHC_MSG_RESULT, &m);
    m.u.result.json = NULL;
    TH_FAIL(try_enc(&m), IHC_EINVAL);

    /* Whole message over the limit. */
    size_t jl = IHC_JSON_MAX;
    char *json = malloc(jl + 1);
    assert_non_null(json);
    memset(json, ' ', jl);
    json[jl] = '\0';
    make_full(IHC_MSG_RESULT, &m);
    m.u.result.json = json;
    TH_PASS(try_enc(&m));
    char *json2 = malloc(jl + 2);
    assert_non_null(json2);
    memset(json2, ' ', jl + 1);
    json2[jl + 1] = '\0';
    m.u.result.json = json2;
    TH_FAIL(try_enc(&m), IHC_ETOOBIG);
    free(json2);
    /* Every field within its own limit, the whole over IHC_WIRE_MAX_MSG. */
    static ihc_session_info many[100];
    char *data = malloc(IHC_DATA_MAX + 1);
    assert_non_null(data);
    memset(data, 'd', IHC_DATA_MAX);
    data[IHC_DATA_MAX] = '\0';
    for (int i = 0; i < 100; i++)
        many[i] = (ihc_session_info){"s", "h", 1, 0, 1, NULL, 0, data};
    make_full(IHC_MSG_HELLO, &m);
    m.u.hello.sessions = many;
    m.u.hello.n_sessions = 100;
    TH_FAIL(try_enc(&m), IHC_ETOOBIG);
    m.u.hello.n_sessions = 10;
    TH_PASS(try_enc(&m));
    free(data);
    free(json);
}

/* ------------------------------------------------------------------------------------------
 * Decoder: hostile input
 * ---------------------------------------------------------------------------------------- */

static void test_wire_decode_args(void **state)
{
    (void)state;
    ihc_msg *m;
    uint8_t one = 0x80;
    TH_FAIL(ihc_wire_decode(&one, 1, NULL, NULL, NULL, 0), IHC_EINVAL);
    TH_FAIL(ihc_wire_decode(NULL, 5, NULL, &m, NULL, 0), IHC_EINVAL);
    dec_fail(NULL, 0, NULL, IHC_EPROTO);
    dec_fail(&one, 1, NULL, IHC_EMISSING); /* {} */
    /* A zero-length detail buffer is never written. */
    char d = 'z';
    TH_FAIL(ihc_wire_decode(&one, 1, NULL, &m, &d, 0), IHC_EMISSING);
    assert_int_equal(d, 'z');
    /* A short one is truncated and terminated. */
    char small[8];
    TH_FAIL(ihc_wire_decode(&one, 1, NULL, &m, small, sizeof small), IHC_EMISSING);
    assert_int_equal(strlen(small), sizeof small - 1);
}

static void test_wire_decode_truncated(void **state)
{
    (void)state;
    for (int t = IHC_MSG_NONE + 1; t < IHC__MSG_COUNT; t++) {
        ihc_msg m;
        uint8_t *b;
        size_t n;
        make_full((ihc_msg_type)t, &m);
        enc(&m, NULL, &b, &n);
        for (size_t cut = 0; cut < n; cut++) {
            ihc_msg *d = (ihc_msg *)(uintptr_t)1;
            int rc = ihc_wire_decode(b, cut, NULL, &d, NULL, 0);
            if (rc == IHC_OK)
                fail_msg("type %s accepted when cut at %zu of %zu", ihc_msg_type_name(t), cut, n);
            assert_null(d);
        }
        /* A copy in an exactly sized heap buffer lets ASan see any read past the end. */
        for (size_t cut = 1; cut < n; cut += 7) {
            uint8_t *c = malloc(cut);
            assert_non_null(c);
            memcpy(c, b, cut);
            ihc_msg *d;
            assert_int_not_equal(ihc_wire_decode(c, cut, NULL, &d, NULL, 0), IHC_OK);
            free(c);
        }
        free(b);
    }
}

static void test_wire_decode_trailing(void **state)
{
    (void)state;
    ihc_msg m;
    uint8_t *b;
    size_t n;
    make_full(IHC_MSG_REPORT, &m);
    enc(&m, NULL, &b, &n);
    uint8_t *b2 = malloc(n + 1);
    assert_non_null(b2);
    memcpy(b2, b, n);
    b2[n] = 0xc0;
    const char *det = dec_fail(b2, n + 1, NULL, IHC_EPROTO);
    assert_non_null(strstr(det, "trailing"));
    /* Two messages back to back are not one message. */
    uint8_t *b3 = malloc(2 * n);
    assert_non_null(b3);
    memcpy(b3, b, n);
    memcpy(b3 + n, b, n);
    dec_fail(b3, 2 * n, NULL, IHC_EPROTO);
    free(b3);
    free(b2);
    free(b);
}

/* Hostile structure is refused before anything is allocated (the reader's cases are in
 * test_pack.c); the detail says where. */
static void test_wire_decode_structure(void **state)
{
    (void)state;
    static const uint8_t huge[] = {0xdd, 0x08, 0x00, 0x00, 0x00}; /* array32 of 2^27 */
    assert_string_equal(dec_fail(huge, sizeof huge, NULL, IHC_EPROTO),
                        "at byte 5: message is not a MessagePack map");
    static const uint8_t hmap[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    assert_string_equal(dec_fail(hmap, sizeof hmap, NULL, IHC_EPROTO),
                        "at byte 5: declared count larger than the message");
    static const uint8_t inner[] = {0x81, 0xa1, 'x', 0xdd, 0x7f, 0xff, 0xff, 0xff};
    assert_string_equal(dec_fail(inner, sizeof inner, NULL, IHC_EPROTO),
                        "at byte 8: declared count larger than the message");
    static const uint8_t key[] = {0x81, 0x01, 0x01};
    assert_string_equal(dec_fail(key, sizeof key, NULL, IHC_EPROTO),
                        "at byte 2: map key is not a string");
    static const uint8_t ext[] = {0x81, 0xa1, 'x', 0xd4, 0x01, 0x00};
    dec_fail(ext, sizeof ext, NULL, IHC_EPROTO);
    /* A list longer than IHC_WIRE_MAX_LIST with all its bytes present. */
    size_t cnt = IHC_WIRE_MAX_LIST + 1, len = 3 + 5 + cnt;
    uint8_t *b = malloc(len);
    assert_non_null(b);
    memcpy(b, "\x81\xa1x\xdd", 4);
    b[4] = (uint8_t)(cnt >> 24);
    b[5] = (uint8_t)(cnt >> 16);
    b[6] = (uint8_t)(cnt >> 8);
    b[7] = (uint8_t)cnt;
    memset(b + 8, 0xc0, cnt);
    assert_string_equal(dec_fail(b, len, NULL, IHC_ETOOBIG),
                        "at byte 8: list longer than the limit");
    free(b);
}

static void test_wire_decode_deep(void **state)
{
    (void)state;
    enum { DEPTH = 1000 };
    uint8_t *b = malloc(3 + DEPTH);
    assert_non_null(b);
    memcpy(b, "\x81\xa1x", 3);
    memset(b + 3, 0x91, DEPTH - 1);
    b[3 + DEPTH - 1] = 0x90;
    const char *det = dec_fail(b, 3 + DEPTH, NULL, IHC_EPROTO);
    assert_non_null(strstr(det, "deep"));
    /* Maps too. */
    uint8_t mb[3 + 3 * 20 + 1];
    memcpy(mb, "\x81\xa1x", 3);
    for (int i = 0; i < 20; i++)
        memcpy(mb + 3 + 3 * i, "\x81\xa1k", 3);
    mb[sizeof mb - 1] = 0x80;
    dec_fail(mb, sizeof mb, NULL, IHC_EPROTO);
    free(b);

    /* Exactly IHC_WIRE_MAX_DEPTH levels is fine (under an unknown key); one more is not. */
    ihc_msg m;
    uint8_t *e;
    size_t n;
    make_min(IHC_MSG_HEARTBEAT, &m);
    enc(&m, NULL, &e, &n);
    for (int extra = IHC_WIRE_MAX_DEPTH - 1; extra <= IHC_WIRE_MAX_DEPTH; extra++) {
        /* top map (depth 1) + "z": extra nested arrays */
        size_t len = n + 2 + (size_t)extra;
        uint8_t *x = malloc(len);
        assert_non_null(x);
        memcpy(x, e, n);
        x[0]++; /* fixmap count + 1 */
        x[n] = 0xa1;
        x[n + 1] = 'z';
        memset(x + n + 2, 0x91, (size_t)extra - 1);
        x[len - 1] = 0x90;
        if (extra < IHC_WIRE_MAX_DEPTH)
            ihc_msg_free(dec_ok(x, len, NULL));
        else
            dec_fail(x, len, NULL, IHC_EPROTO);
        free(x);
    }
    free(e);
}

static void test_wire_decode_oversized(void **state)
{
    (void)state;
    uint8_t *b = calloc(1, IHC_WIRE_MAX_MSG + 1);
    assert_non_null(b);
    b[0] = 0x80;
    dec_fail(b, IHC_WIRE_MAX_MSG + 1, NULL, IHC_ETOOBIG);
    free(b);
}

/* msgpack-c helpers: an independent MessagePack implementation builds variants of messages. */

typedef enum { OP_DROP, OP_SET } edit_op;

/* Re-packs the top-level map of buf with key dropped or its value set to val (appended when
 * absent). Caller destroys out. */
static void repack(const uint8_t *buf, size_t len, const char *key, edit_op op,
                   const msgpack_object *val, msgpack_sbuffer *out)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, (const char *)buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len);
    assert_int_equal(u.data.type, MSGPACK_OBJECT_MAP);
    const msgpack_object_map *mp = &u.data.via.map;
    size_t kl = strlen(key);
    bool found = false;
    for (uint32_t i = 0; i < mp->size; i++)
        if (mp->ptr[i].key.via.str.size == kl && !memcmp(mp->ptr[i].key.via.str.ptr, key, kl))
            found = true;
    msgpack_sbuffer_init(out);
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    uint32_t n = mp->size;
    if (op == OP_DROP && found)
        n--;
    if (op == OP_SET && !found)
        n++;
    msgpack_pack_map(&pk, n);
    for (uint32_t i = 0; i < mp->size; i++) {
        bool match =
            mp->ptr[i].key.via.str.size == kl && !memcmp(mp->ptr[i].key.via.str.ptr, key, kl);
        if (match && op == OP_DROP)
            continue;
        msgpack_pack_object(&pk, mp->ptr[i].key);
        msgpack_pack_object(&pk, match ? *val : mp->ptr[i].val);
    }
    if (op == OP_SET && !found) {
        msgpack_pack_str(&pk, kl);
        msgpack_pack_str_body(&pk, key, kl);
        msgpack_pack_object(&pk, *val);
    }
    msgpack_unpacked_destroy(&u);
}

static msgpack_object mo_uint(uint64_t v)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_POSITIVE_INTEGER};
    o.via.u64 = v;
    return o;
}

static msgpack_object mo_int(int64_t v)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_NEGATIVE_INTEGER};
    o.via.i64 = v;
    return o;
}

static msgpack_object mo_str(const char *s, size_t n)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_STR};
    o.via.str.ptr = s;
    o.via.str.size = (uint32_t)n;
    return o;
}

static msgpack_object mo_nil(void)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_NIL};
    return o;
}

/* Applies one edit to the full fixture of type t and decodes; returns rc (and frees). */
static int edit_decode(ihc_msg_type t, const char *key, edit_op op, msgpack_object val,
                       char *detail, size_t dlen)
{
    ihc_msg m;
    uint8_t *b;
    size_t n;
    make_full(t, &m);
    enc(&m, NULL, &b, &n);
    msgpack_sbuffer sb;
    repack(b, n, key, op, &val, &sb);
    ihc_msg *d = NULL;
    int rc = ihc_wire_decode((const uint8_t *)sb.data, sb.size, NULL, &d, detail, dlen);
    if (rc == IHC_OK)
        ihc_msg_free(d);
    else
        assert_null(d);
    msgpack_sbuffer_destroy(&sb);
    free(b);
    return rc;
}

static const char *const required_keys[IHC__MSG_COUNT][8] = {
    [IHC_MSG_INTERRUPT] = {"id", "hw", "epoch", "deadline_ms"},
    [IHC_MSG_REPORT] = {"id", "agent", "hw"},
    [IHC_MSG_SESSION_BEGIN] = {"agent", "session_id", "hw", "epoch", "created_ms"},
    [IHC_MSG_SESSION_END] = {"agent", "session_id", "hw", "state"},
    [IHC_MSG_HELLO] = {"agent", "node", "pid", "started_ms"},
    [IHC_MSG_HEARTBEAT] = {"agent"},
    [IHC_MSG_SYNC] = {"agent"},
    [IHC_MSG_RESULT] = {"json"},
    [IHC_MSG_CONTROL_REQUEST] = {"op"},
    [IHC_MSG_CONTROL_RESPONSE] = {"status", "json"},
};

static bool is_required(ihc_msg_type t, const char *key)
{
    if (!strcmp(key, "v") || !strcmp(key, "type"))
        return true;
    for (int i = 0; required_keys[t][i] != NULL; i++)
        if (!strcmp(required_keys[t][i], key))
            return true;
    return false;
}

/* For every key of every full fixture: dropping it, setting it to nil and giving it a value
 * of the wrong type. */
static void test_wire_decode_fields(void **state)
{
    (void)state;
    for (int t = IHC_MSG_NONE + 1; t < IHC__MSG_COUNT; t++) {
        ihc_msg m;
        uint8_t *b;
        size_t n;
        make_full((ihc_msg_type)t, &m);
        enc(&m, NULL, &b, &n);
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        assert_int_equal(msgpack_unpack_next(&u, (const char *)b, n, &off), MSGPACK_UNPACK_SUCCESS);
        const msgpack_object_map *mp = &u.data.via.map;
        for (uint32_t i = 0; i < mp->size; i++) {
            char key[32], detail[256];
            snprintf(key, sizeof key, "%.*s", (int)mp->ptr[i].key.via.str.size,
                     mp->ptr[i].key.via.str.ptr);
            bool req = is_required((ihc_msg_type)t, key);
            int want = req ? IHC_EMISSING : IHC_OK;
            int rc = edit_decode((ihc_msg_type)t, key, OP_DROP, mo_nil(), detail, sizeof detail);
            if (rc != want)
                fail_msg("%s: drop '%s': %s (%s)", ihc_msg_type_name(t), key, ihc_err_name(rc),
                         detail);
            if (req) {
                char field[48];
                snprintf(field, sizeof field, "field '%s'", key);
                assert_non_null(strstr(detail, field));
            }
            rc = edit_decode((ihc_msg_type)t, key, OP_SET, mo_nil(), detail, sizeof detail);
            if (rc != want)
                fail_msg("%s: nil '%s': %s (%s)", ihc_msg_type_name(t), key, ihc_err_name(rc),
                         detail);
            msgpack_object wrong;
            switch (mp->ptr[i].val.type) {
            case MSGPACK_OBJECT_POSITIVE_INTEGER:
            case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            case MSGPACK_OBJECT_BOOLEAN:
            case MSGPACK_OBJECT_FLOAT64:
            case MSGPACK_OBJECT_FLOAT32:
                wrong = mo_str("7", 1);
                break;
            default:
                wrong = mo_uint(7);
                break;
            }
            rc = edit_decode((ihc_msg_type)t, key, OP_SET, wrong, detail, sizeof detail);
            if (rc != IHC_ETYPE)
                fail_msg("%s: wrong type for '%s': %s (%s)", ihc_msg_type_name(t), key,
                         ihc_err_name(rc), detail);
        }
        msgpack_unpacked_destroy(&u);
        free(b);
    }
}

static void test_wire_decode_values(void **state)
{
    (void)state;
    char d[256];
    /* Unknown keys (with nested content) are ignored. */
    msgpack_object arr = {.type = MSGPACK_OBJECT_ARRAY};
    msgpack_object items[2] = {mo_uint(1), mo_str("x", 1)};
    arr.via.array.ptr = items;
    arr.via.array.size = 2;
    TH_PASS(edit_decode(IHC_MSG_INTERRUPT, "future_field", OP_SET, arr, d, sizeof d));
    TH_PASS(edit_decode(IHC_MSG_REPORT, "zzz", OP_SET, mo_nil(), d, sizeof d));

    /* Version and type. */
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "v", OP_SET, mo_uint(2), d, sizeof d), IHC_EVERSION);
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "v", OP_SET, mo_uint(0), d, sizeof d), IHC_EVERSION);
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "v", OP_SET, mo_int(-1), d, sizeof d), IHC_ETYPE);
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "type", OP_SET, mo_str("interrupts", 10), d, sizeof d),
            IHC_EPROTO);
    assert_non_null(strstr(d, "type"));
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "type", OP_SET, mo_str("", 0), d, sizeof d), IHC_EPROTO);
    /* A v=2 message with a type we do not know is a version error first. */
    {
        ihc_msg m;
        uint8_t *b;
        size_t n;
        make_full(IHC_MSG_INTERRUPT, &m);
        enc(&m, NULL, &b, &n);
        msgpack_sbuffer s1, s2;
        msgpack_object v2 = mo_uint(2), ty = mo_str("teleport", 8);
        repack(b, n, "v", OP_SET, &v2, &s1);
        repack((uint8_t *)s1.data, s1.size, "type", OP_SET, &ty, &s2);
        dec_fail((uint8_t *)s2.data, s2.size, NULL, IHC_EVERSION);
        msgpack_sbuffer_destroy(&s1);
        msgpack_sbuffer_destroy(&s2);
        free(b);
    }

    /* Identifiers. */
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "hw", OP_SET, mo_str("dev 1", 5), d, sizeof d),
            IHC_EBADHW);
    assert_string_equal(d, "field 'hw': invalid hardware_id");
    char h129[129];
    memset(h129, 'h', sizeof h129);
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "hw", OP_SET, mo_str(h129, 129), d, sizeof d),
            IHC_EBADHW);
    TH_PASS(edit_decode(IHC_MSG_INTERRUPT, "hw", OP_SET, mo_str(h129, 128), d, sizeof d));
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "hw", OP_SET, mo_str("", 0), d, sizeof d), IHC_EBADHW);
    TH_PASS(edit_decode(IHC_MSG_INTERRUPT, "hw", OP_SET, mo_str("*", 1), d, sizeof d));
    TH_FAIL(edit_decode(IHC_MSG_SESSION_END, "hw", OP_SET, mo_str("*", 1), d, sizeof d),
            IHC_EBADHW);
    TH_FAIL(edit_decode(IHC_MSG_SESSION_BEGIN, "hw", OP_SET, mo_str("*", 1), d, sizeof d),
            IHC_EBADHW);
    TH_PASS(edit_decode(IHC_MSG_CONTROL_REQUEST, "hw", OP_SET, mo_str("*", 1), d, sizeof d));
    TH_FAIL(edit_decode(IHC_MSG_CONTROL_REQUEST, "hw", OP_SET, mo_str("a/b", 3), d, sizeof d),
            IHC_EBADHW);
    TH_FAIL(edit_decode(IHC_MSG_SESSION_END, "hw", OP_SET, mo_str("a b", 3), d, sizeof d),
            IHC_EBADHW);
    TH_FAIL(edit_decode(IHC_MSG_SESSION_END, "session_id", OP_SET, mo_str("a b", 3), d, sizeof d),
            IHC_EBADID);
    TH_FAIL(edit_decode(IHC_MSG_REPORT, "agent", OP_SET, mo_str("a b", 3), d, sizeof d),
            IHC_EBADID);
    TH_FAIL(edit_decode(IHC_MSG_SESSION_BEGIN, "session_id", OP_SET, mo_str("", 0), d, sizeof d),
            IHC_EBADID);
    TH_FAIL(edit_decode(IHC_MSG_CONTROL_REQUEST, "op", OP_SET, mo_str("", 0), d, sizeof d),
            IHC_EBADID);
    /* A NUL inside a string is a type error. */
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "hw", OP_SET, mo_str("de\0v", 4), d, sizeof d),
            IHC_ETYPE);
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "reason", OP_SET, mo_str("a\0b", 3), d, sizeof d),
            IHC_ETYPE);
    /* Binary where a string is expected. */
    msgpack_object bin = {.type = MSGPACK_OBJECT_BIN};
    bin.via.bin.ptr = "dev-1";
    bin.via.bin.size = 5;
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "hw", OP_SET, bin, d, sizeof d), IHC_ETYPE);

    /* Lengths. */
    static char longtext[IHC_DATA_MAX + 1];
    memset(longtext, 'x', sizeof longtext);
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "reason", OP_SET, mo_str(longtext, IHC_REASON_MAX + 1),
                        d, sizeof d),
            IHC_ETOOBIG);
    TH_PASS(edit_decode(IHC_MSG_INTERRUPT, "reason", OP_SET, mo_str(longtext, IHC_REASON_MAX), d,
                        sizeof d));

    /* Integers: negatives refused where unsigned, ranges enforced, signed accepted. */
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "id", OP_SET, mo_int(-1), d, sizeof d), IHC_ETYPE);
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "epoch", OP_SET, mo_int(-100000), d, sizeof d),
            IHC_ETYPE);
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "attempt", OP_SET, mo_uint(1ull << 32), d, sizeof d),
            IHC_ETYPE);
    TH_PASS(edit_decode(IHC_MSG_INTERRUPT, "attempt", OP_SET, mo_uint(UINT32_MAX), d, sizeof d));
    TH_PASS(edit_decode(IHC_MSG_INTERRUPT, "deadline_ms", OP_SET, mo_int(-5), d, sizeof d));
    TH_PASS(edit_decode(IHC_MSG_INTERRUPT, "id", OP_SET, mo_uint(UINT64_MAX), d, sizeof d));
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "deadline_ms", OP_SET, mo_uint(UINT64_MAX), d, sizeof d),
            IHC_ETYPE);
    TH_FAIL(edit_decode(IHC_MSG_CONTROL_REQUEST, "timeout_ms", OP_SET, mo_int(-1), d, sizeof d),
            IHC_ETYPE);
    TH_FAIL(edit_decode(IHC_MSG_HELLO, "pid", OP_SET, mo_uint(1ull << 31), d, sizeof d), IHC_ETYPE);
    TH_FAIL(edit_decode(IHC_MSG_CONTROL_RESPONSE, "status", OP_SET, mo_int(INT64_MIN), d, sizeof d),
            IHC_ETYPE);
    TH_PASS(
        edit_decode(IHC_MSG_CONTROL_RESPONSE, "status", OP_SET, mo_int(INT32_MIN), d, sizeof d));
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "ts_ms", OP_SET, mo_str("1", 1), d, sizeof d),
            IHC_ETYPE);
    TH_PASS(edit_decode(IHC_MSG_INTERRUPT, "ts_ms", OP_DROP, mo_nil(), d, sizeof d));

    /* Floats: float32, float64 and integers for time_ms; not NaN or infinity. */
    msgpack_object f = {.type = MSGPACK_OBJECT_FLOAT32};
    f.via.f64 = 2.5;
    TH_PASS(edit_decode(IHC_MSG_REPORT, "time_ms", OP_SET, f, d, sizeof d));
    TH_PASS(edit_decode(IHC_MSG_REPORT, "time_ms", OP_SET, mo_uint(3), d, sizeof d));
    TH_PASS(edit_decode(IHC_MSG_REPORT, "time_ms", OP_SET, mo_int(-3), d, sizeof d));
    f.type = MSGPACK_OBJECT_FLOAT64;
    f.via.f64 = NAN;
    TH_FAIL(edit_decode(IHC_MSG_REPORT, "time_ms", OP_SET, f, d, sizeof d), IHC_ETYPE);
    f.via.f64 = INFINITY;
    TH_FAIL(edit_decode(IHC_MSG_REPORT, "time_ms", OP_SET, f, d, sizeof d), IHC_ETYPE);

    /* Enumerations. */
    TH_FAIL(edit_decode(IHC_MSG_SESSION_END, "state", OP_SET, mo_str("running", 7), d, sizeof d),
            IHC_EPROTO);
    TH_PASS(edit_decode(IHC_MSG_SESSION_END, "state", OP_SET, mo_str("expired", 7), d, sizeof d));

    /* Lists: wrong element types and invalid elements name the element. */
    msgpack_object l = {.type = MSGPACK_OBJECT_ARRAY};
    msgpack_object els[3] = {mo_str("a:1", 3), mo_str("b:2", 3), mo_uint(3)};
    l.via.array.ptr = els;
    l.via.array.size = 3;
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "agents", OP_SET, l, d, sizeof d), IHC_ETYPE);
    assert_non_null(strstr(d, "agents[2]"));
    els[2] = mo_str("c 3", 3);
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "agents", OP_SET, l, d, sizeof d), IHC_EBADID);
    els[2] = mo_nil();
    TH_FAIL(edit_decode(IHC_MSG_INTERRUPT, "agents", OP_SET, l, d, sizeof d), IHC_ETYPE);
    l.via.array.size = 0;
    TH_PASS(edit_decode(IHC_MSG_INTERRUPT, "agents", OP_SET, l, d, sizeof d));
    els[0] = mo_str("*", 1);
    l.via.array.size = 1;
    TH_FAIL(edit_decode(IHC_MSG_HEARTBEAT, "hws", OP_SET, l, d, sizeof d), IHC_EBADHW);
}

/* Builds a report whose modules array is the given list of module maps (msgpack-c). */
static int decode_report_modules(const msgpack_object *mods, uint32_t n, ihc_msg **out, char *d,
                                 size_t dl)
{
    ihc_msg m;
    uint8_t *b;
    size_t len;
    make_full(IHC_MSG_REPORT, &m);
    enc(&m, NULL, &b, &len);
    msgpack_object arr = {.type = MSGPACK_OBJECT_ARRAY};
    arr.via.array.ptr = (msgpack_object *)(uintptr_t)mods;
    arr.via.array.size = n;
    msgpack_sbuffer sb;
    repack(b, len, "modules", OP_SET, &arr, &sb);
    int rc = ihc_wire_decode((uint8_t *)sb.data, sb.size, NULL, out, d, dl);
    msgpack_sbuffer_destroy(&sb);
    free(b);
    return rc;
}

static msgpack_object mo_map(msgpack_object_kv *kv, uint32_t n)
{
    msgpack_object o = {.type = MSGPACK_OBJECT_MAP};
    o.via.map.ptr = kv;
    o.via.map.size = n;
    return o;
}

static void test_wire_decode_modules(void **state)
{
    (void)state;
    char d[256];
    ihc_msg *m;
    msgpack_object t = {.type = MSGPACK_OBJECT_BOOLEAN}, fa = {.type = MSGPACK_OBJECT_BOOLEAN};
    t.via.boolean = true;
    fa.via.boolean = false;
    /* Old senders: "ok" only → status derived. */
    msgpack_object_kv a[] = {{mo_str("name", 4), mo_str("m1", 2)}, {mo_str("ok", 2), t}};
    msgpack_object_kv b[] = {{mo_str("name", 4), mo_str("m2", 2)},
                             {mo_str("ok", 2), fa},
                             {mo_str("time_ms", 7), mo_uint(12)},
                             {mo_str("error", 5), mo_nil()}};
    msgpack_object_kv c[] = {{mo_str("name", 4), mo_str("m3", 2)},
                             {mo_str("ok", 2), t},
                             {mo_str("status", 6), mo_str("disabled", 8)}};
    msgpack_object mods[3] = {mo_map(a, 2), mo_map(b, 4), mo_map(c, 3)};
    TH_PASS(decode_report_modules(mods, 3, &m, d, sizeof d));
    assert_int_equal(m->u.report.n_modules, 3);
    assert_int_equal(m->u.report.modules[0].status, IHC_MOD_OK);
    assert_int_equal(m->u.report.modules[1].status, IHC_MOD_FAILED);
    assert_true(m->u.report.modules[1].time_ms == 12.0);
    assert_null(m->u.report.modules[1].error);
    assert_int_equal(m->u.report.modules[2].status, IHC_MOD_DISABLED);
    ihc_msg_free(m);

    /* Neither ok nor status. */
    msgpack_object_kv e[] = {{mo_str("name", 4), mo_str("m4", 2)}};
    mods[1] = mo_map(e, 1);
    TH_FAIL(decode_report_modules(mods, 2, &m, d, sizeof d), IHC_EMISSING);
    assert_non_null(strstr(d, "modules[1].status"));
    /* Unknown status, bad name, missing name, element not a map, duplicate key. */
    msgpack_object_kv g[] = {{mo_str("name", 4), mo_str("m5", 2)},
                             {mo_str("status", 6), mo_str("exploded", 8)}};
    mods[1] = mo_map(g, 2);
    TH_FAIL(decode_report_modules(mods, 2, &m, d, sizeof d), IHC_EPROTO);
    msgpack_object_kv h[] = {{mo_str("name", 4), mo_str("bad name", 8)}, {mo_str("ok", 2), t}};
    mods[1] = mo_map(h, 2);
    TH_FAIL(decode_report_modules(mods, 2, &m, d, sizeof d), IHC_EBADID);
    assert_string_equal(d, "field 'modules[1].name': invalid identifier");
    msgpack_object_kv k[] = {{mo_str("ok", 2), t}};
    mods[1] = mo_map(k, 1);
    TH_FAIL(decode_report_modules(mods, 2, &m, d, sizeof d), IHC_EMISSING);
    mods[1] = mo_uint(1);
    TH_FAIL(decode_report_modules(mods, 2, &m, d, sizeof d), IHC_ETYPE);
    msgpack_object_kv dup[] = {{mo_str("name", 4), mo_str("m", 1)},
                               {mo_str("ok", 2), t},
                               {mo_str("name", 4), mo_str("n", 1)}};
    mods[1] = mo_map(dup, 3);
    TH_FAIL(decode_report_modules(mods, 2, &m, d, sizeof d), IHC_EPROTO);
    assert_non_null(strstr(d, "duplicate"));
}

/* hello.modules[]: "enabled" defaults to true, methods to none. */
static void test_wire_decode_hello_defaults(void **state)
{
    (void)state;
    char d[256];
    ihc_msg m;
    uint8_t *b;
    size_t len;
    make_full(IHC_MSG_HELLO, &m);
    enc(&m, NULL, &b, &len);
    msgpack_object_kv kv[] = {{mo_str("name", 4), mo_str("m1", 2)}};
    msgpack_object mods[1] = {mo_map(kv, 1)};
    msgpack_object arr = {.type = MSGPACK_OBJECT_ARRAY};
    arr.via.array.ptr = mods;
    arr.via.array.size = 1;
    msgpack_sbuffer sb;
    repack(b, len, "modules", OP_SET, &arr, &sb);
    ihc_msg *dm = NULL;
    TH_PASS(ihc_wire_decode((uint8_t *)sb.data, sb.size, NULL, &dm, d, sizeof d));
    assert_int_equal(dm->u.hello.n_modules, 1);
    assert_string_equal(dm->u.hello.modules[0].name, "m1");
    assert_true(dm->u.hello.modules[0].enabled);
    assert_int_equal(dm->u.hello.modules[0].n_methods, 0);
    assert_null(dm->u.hello.modules[0].methods);
    assert_int_equal(dm->u.hello.modules[0].timeout_ms, 0);
    ihc_msg_free(dm);
    msgpack_sbuffer_destroy(&sb);
    /* A session without its hw names the element. */
    msgpack_object_kv skv[] = {{mo_str("session_id", 10), mo_str("s", 1)},
                               {mo_str("epoch", 5), mo_uint(1)},
                               {mo_str("created_ms", 10), mo_uint(1)}};
    mods[0] = mo_map(skv, 3);
    repack(b, len, "sessions", OP_SET, &arr, &sb);
    TH_FAIL(ihc_wire_decode((uint8_t *)sb.data, sb.size, NULL, &dm, d, sizeof d), IHC_EMISSING);
    assert_string_equal(d, "field 'sessions[0].hw': required field missing");
    msgpack_sbuffer_destroy(&sb);
    free(b);
}

static void test_wire_decode_duplicates(void **state)
{
    (void)state;
    /* Hand-made: {v:1, type:"heartbeat", agent:"a", agent:"b"} → duplicate key error. */
    static const uint8_t dup[] = {0x84, 0xa1, 'v', 0x01, 0xa4, 't', 'y', 'p',  'e', 0xa9, 'h', 'e',
                                  'a',  'r',  't', 'b',  'e',  'a', 't', 0xa5, 'a', 'g',  'e', 'n',
                                  't',  0xa1, 'a', 0xa5, 'a',  'g', 'e', 'n',  't', 0xa1, 'b'};
    const char *det = dec_fail(dup, sizeof dup, NULL, IHC_EPROTO);
    assert_string_equal(det, "field 'agent': duplicate key");
    static const uint8_t dupv[] = {0x83, 0xa1, 'v',  0x01, 0xa1, 'v', 0x01, 0xa4, 't', 'y',
                                   'p',  'e',  0xa6, 'r',  'e',  's', 'u',  'l',  't'};
    dec_fail(dupv, sizeof dupv, NULL, IHC_EPROTO);
    /* The same message without the duplicate decodes; unknown keys may repeat. */
    static const uint8_t ok[] = {0x85, 0xa1, 'v', 0x01, 0xa4, 't',  'y', 'p',  'e',  0xa9, 'h',
                                 'e',  'a',  'r', 't',  'b',  'e',  'a', 't',  0xa5, 'a',  'g',
                                 'e',  'n',  't', 0xa1, 'a',  0xa1, 'q', 0x01, 0xa1, 'q',  0x02};
    ihc_msg *m = dec_ok(ok, sizeof ok, NULL);
    assert_string_equal(m->u.heartbeat.agent, "a");
    assert_int_equal(m->ts_ms, 0);
    ihc_msg_free(m);
}

/* Every input decodes to an error or a message the encoder accepts again. */
static void check_any(const uint8_t *b, size_t n, const ihc_wire_auth *auth)
{
    ihc_msg *m = (ihc_msg *)(uintptr_t)1;
    int rc = ihc_wire_decode(b, n, auth, &m, NULL, 0);
    if (rc != IHC_OK) {
        assert_true(rc > IHC_OK && rc < IHC__ERR_COUNT);
        assert_null(m);
        return;
    }
    uint8_t *e;
    size_t en;
    int rc2 = ihc_wire_encode(m, NULL, &e, &en);
    if (rc2 != IHC_OK)
        fail_msg("decoded %s but cannot re-encode: %s", ihc_msg_type_name(m->type),
                 ihc_err_name(rc2));
    free(e);
    ihc_msg_free(m);
}

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

static void test_wire_decode_random(void **state)
{
    (void)state;
    rng_state = 42;
    uint8_t b[96];
    for (int i = 0; i < 100000; i++) {
        size_t n = rnd() % sizeof b;
        for (size_t j = 0; j < n; j++)
            b[j] = (uint8_t)rnd();
        /* Half of them start like a map so that the walker gets further. */
        if (n > 0 && (i & 1))
            b[0] = (uint8_t)(0x80 | (b[0] & 0x0f));
        check_any(b, n, NULL);
    }
}

static void test_wire_decode_mutations(void **state)
{
    (void)state;
    rng_state = 7;
    int accepted = 0;
    for (int t = IHC_MSG_NONE + 1; t < IHC__MSG_COUNT; t++) {
        ihc_msg m;
        uint8_t *b;
        size_t n;
        make_full((ihc_msg_type)t, &m);
        enc(&m, NULL, &b, &n);
        uint8_t *x = malloc(n + 16);
        assert_non_null(x);
        for (int i = 0; i < 3000; i++) {
            memcpy(x, b, n);
            size_t xn = n;
            int muts = 1 + (int)(rnd() % 4);
            for (int k = 0; k < muts; k++) {
                size_t at = rnd() % xn;
                switch (rnd() % 5) {
                case 0: /* flip bits */
                    x[at] ^= (uint8_t)(1u << (rnd() % 8));
                    break;
                case 1: /* random byte */
                    x[at] = (uint8_t)rnd();
                    break;
                case 2: /* interesting byte */ {
                    static const uint8_t hot[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0,
                                                  0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xca, 0xcb,
                                                  0xcf, 0xd3, 0xdb, 0xdd, 0xdf, 0xff};
                    x[at] = hot[rnd() % sizeof hot];
                    break;
                }
                case 3: /* delete a byte */
                    if (xn > 1) {
                        memmove(x + at, x + at + 1, xn - at - 1);
                        xn--;
                    }
                    break;
                default: /* insert a byte */
                    if (xn < n + 16) {
                        memmove(x + at + 1, x + at, xn - at);
                        x[at] = (uint8_t)rnd();
                        xn++;
                    }
                    break;
                }
            }
            ihc_msg *d;
            if (ihc_wire_decode(x, xn, NULL, &d, NULL, 0) == IHC_OK) {
                accepted++;
                ihc_msg_free(d);
            }
            check_any(x, xn, NULL);
        }
        free(x);
        free(b);
    }
    /* Some mutations (inside string contents, numbers) still give valid messages. */
    assert_true(accepted > 0);
}

/* ------------------------------------------------------------------------------------------
 * Signing (tampering, windows and the replay cache are test_sign.c's)
 * ---------------------------------------------------------------------------------------- */

static ihc_wire_auth *auth_new(const char *secret)
{
    ihc_wire_auth *a = NULL;
    TH_PASS(ihc_wire_auth_new(&a, secret, strlen(secret), 0));
    assert_non_null(a);
    return a;
}

/* Every message type signed: decodes without auth too, not with another key, once with
 * the right one. */
static void test_wire_sign_roundtrip(void **state)
{
    (void)state;
    ihc_wire_auth *a = auth_new("s3cret"), *other = auth_new("another");
    for (int t = IHC_MSG_NONE + 1; t < IHC__MSG_COUNT; t++) {
        ihc_msg m;
        uint8_t *b;
        size_t n;
        make_full((ihc_msg_type)t, &m);
        m.ts_ms = 0; /* now */
        enc(&m, a, &b, &n);
        /* Without auth the signed message decodes too (sig ignored, nonce visible). */
        ihc_msg *d = dec_ok(b, n, NULL);
        uint64_t nonce = d->nonce;
        ihc_msg_free(d);
        TH_FAIL(ihc_wire_decode(b, n, other, &d, NULL, 0), IHC_EBADSIG);
        d = dec_ok(b, n, a);
        assert_int_equal(d->nonce, nonce);
        m.ts_ms = d->ts_ms;
        assert_msg_equal(d, &m);
        ihc_msg_free(d);
        /* Replay. */
        const char *det = dec_fail(b, n, a, IHC_EREPLAY);
        assert_non_null(strstr(det, "nonce"));
        free(b);
    }

    ihc_wire_auth_free(a);
    ihc_wire_auth_free(other);
}

/* The hot path: decoding an interrupt and a report. Prints the cost; fails only when it is
 * absurdly slow (sanitizers and valgrind make it several times slower). */
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_roundtrip_full),
        cmocka_unit_test(test_wire_roundtrip_minimal),
        cmocka_unit_test(test_wire_roundtrip_large),
        cmocka_unit_test(test_wire_ts_filled),
        cmocka_unit_test(test_wire_type_names),
        cmocka_unit_test(test_wire_ids),
        cmocka_unit_test(test_wire_topics),
        cmocka_unit_test(test_wire_framing),
        cmocka_unit_test(test_wire_encode_invalid),
        cmocka_unit_test(test_wire_decode_args),
        cmocka_unit_test(test_wire_decode_truncated),
        cmocka_unit_test(test_wire_decode_trailing),
        cmocka_unit_test(test_wire_decode_structure),
        cmocka_unit_test(test_wire_decode_deep),
        cmocka_unit_test(test_wire_decode_oversized),
        cmocka_unit_test(test_wire_decode_fields),
        cmocka_unit_test(test_wire_decode_values),
        cmocka_unit_test(test_wire_decode_modules),
        cmocka_unit_test(test_wire_decode_hello_defaults),
        cmocka_unit_test(test_wire_decode_duplicates),
        cmocka_unit_test(test_wire_decode_random),
        cmocka_unit_test(test_wire_decode_mutations),
        cmocka_unit_test(test_wire_sign_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
