/* Unit tests of coordinator/registry: sessions, agents and epochs bookkeeping, hello
 * replacement, expiry of silent agents, expected agents of an interrupt. No sockets. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "registry.h"

#define MS     (1000000ull)
#define TTL_NS (1000 * MS)

/* Records the events the registry emits. */
typedef struct {
    int added, updated, ended;
    char last_end_state[32];
    char last_end_sid[64];
} events;

static void on_event(void *arg, ihc_reg_event ev, const ihc_reg_session *s)
{
    events *e = arg;
    switch (ev) {
    case IHC_REG_SESSION_ADDED:
        e->added++;
        break;
    case IHC_REG_SESSION_UPDATED:
        e->updated++;
        break;
    case IHC_REG_SESSION_ENDED:
        e->ended++;
        snprintf(e->last_end_state, sizeof(e->last_end_state), "%s", s->state);
        snprintf(e->last_end_sid, sizeof(e->last_end_sid), "%s", s->session_id);
        break;
    case IHC_REG_EPOCH_RAISED:
        break;
    }
}

typedef struct {
    ihc_registry *r;
    events ev;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    ihc_registry_opts o = {
        .agent_ttl_ns = TTL_NS, .max_sessions_per_agent = 3, .on_event = on_event, .arg = &f->ev};
    if (!f || ihc_registry_new(&f->r, &o) != IHC_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ihc_registry_free(f->r);
    free(f);
    return 0;
}

static ihc_session_info sess(const char *sid, const char *hw, uint64_t epoch)
{
    ihc_session_info s = {.session_id = (char *)sid, .hw = (char *)hw, .epoch = epoch};
    return s;
}

/* Expected agents of hw joined by ',' into a static buffer. */
static const char *expected(ihc_registry *r, const char *hw)
{
    static char buf[512];
    char **v = NULL;
    size_t n = 0;
    buf[0] = '\0';
    if (ihc_registry_expected(r, hw, &v, &n) != IHC_OK)
        return "ENOMEM";
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(buf);
        snprintf(buf + len, sizeof(buf) - len, "%s%s", i ? "," : "", v[i]);
    }
    ihc_registry_strv_free(v, n);
    return buf;
}

static void test_coord_registry_sessions(void **state)
{
    fixture *f = *state;
    ihc_session_info s1 = sess("s-1", "dev-1", 0), s2 = sess("s-2", "dev-2", 0),
                     s3 = sess("s-3", "dev-1", 0);
    TH_PASS(ihc_registry_session_begin(f->r, "n1:1", &s1, 1, 1000));
    TH_PASS(ihc_registry_session_begin(f->r, "n2:2", &s2, 1, 1000));
    TH_PASS(ihc_registry_session_begin(f->r, "n2:2", &s3, 1, 1000));
    assert_int_equal(f->ev.added, 3);
    assert_int_equal(ihc_registry_session_count(f->r), 3);
    assert_string_equal(expected(f->r, "dev-1"), "n1:1,n2:2");
    assert_string_equal(expected(f->r, "dev-2"), "n2:2");
    assert_string_equal(expected(f->r, "dev-9"), "");
    assert_string_equal(expected(f->r, "*"), "n1:1,n2:2");

    /* the same session again is an update, not a new one */
    TH_PASS(ihc_registry_session_begin(f->r, "n1:1", &s1, 2, 1001));
    assert_int_equal(f->ev.added, 3);
    assert_int_equal(f->ev.updated, 1);

    TH_PASS(ihc_registry_session_end(f->r, "n1:1", "s-1", "interrupted", 1002));
    assert_int_equal(f->ev.ended, 1);
    assert_string_equal(f->ev.last_end_state, "interrupted");
    assert_string_equal(expected(f->r, "dev-1"), "n2:2");
    TH_FAIL(ihc_registry_session_end(f->r, "n1:1", "s-1", "done", 1003), IHC_ENOENT);
    TH_FAIL(ihc_registry_session_end(f->r, "n2:2", "nope", "done", 1003), IHC_ENOENT);
    /* an unknown state is recorded as done */
    TH_PASS(ihc_registry_session_end(f->r, "n2:2", "s-2", "weird", 1004));
    assert_string_equal(f->ev.last_end_state, "done");
    assert_int_equal(ihc_registry_agent(f->r, "n2:2")->n_sessions, 1);
}

static void test_coord_registry_session_limit(void **state)
{
    fixture *f = *state;
    char sid[16];
    for (int i = 0; i < 3; i++) {
        snprintf(sid, sizeof(sid), "s-%d", i);
        ihc_session_info s = sess(sid, "dev-1", 0);
        TH_PASS(ihc_registry_session_begin(f->r, "n1:1", &s, 1, 1));
    }
    ihc_session_info s = sess("s-9", "dev-1", 0);
    TH_FAIL(ihc_registry_session_begin(f->r, "n1:1", &s, 1, 1), IHC_ELIMIT);
    ihc_session_info again = sess("s-0", "dev-1", 0); /* known: still accepted */
    TH_PASS(ihc_registry_session_begin(f->r, "n1:1", &again, 1, 1));
    assert_int_equal(ihc_registry_session_count(f->r), 3);
}

static void test_coord_registry_hello_replaces(void **state)
{
    fixture *f = *state;
    ihc_session_info a = sess("s-a", "dev-1", 0), b = sess("s-b", "dev-1", 0);
    TH_PASS(ihc_registry_session_begin(f->r, "n1:1", &a, 1, 1));
    TH_PASS(ihc_registry_session_begin(f->r, "n1:1", &b, 1, 1));
    ihc_session_info other = sess("s-a", "dev-1", 0); /* same id on another agent */
    TH_PASS(ihc_registry_session_begin(f->r, "n2:2", &other, 1, 1));

    char *methods[] = {"stop"};
    ihc_module_info mods[] = {{.name = "text_processing",
                               .methods = methods,
                               .n_methods = 1,
                               .timeout_ms = 500,
                               .enabled = true},
                              {.name = "audio_generation", .timeout_ms = 500, .enabled = true}};
    ihc_session_info hs[] = {sess("s-b", "dev-1", 4), sess("s-c", "dev-2", 7)};
    hs[1].gepoch = 2;
    ihc_hello_msg h = {.agent = "n1:1",
                       .node = "n1",
                       .pid = 42,
                       .started_ms = 5,
                       .modules = mods,
                       .n_modules = 2,
                       .sessions = hs,
                       .n_sessions = 2};
    f->ev = (events){0};
    TH_PASS(ihc_registry_hello(f->r, &h, 10, 100));
    assert_int_equal(f->ev.ended, 1); /* s-a of n1:1 is gone */
    assert_string_equal(f->ev.last_end_sid, "s-a");
    assert_string_equal(f->ev.last_end_state, "done");
    assert_int_equal(f->ev.updated, 1);                    /* s-b */
    assert_int_equal(f->ev.added, 1);                      /* s-c */
    assert_int_equal(ihc_registry_session_count(f->r), 3); /* s-b, s-c, n2's s-a */
    const ihc_reg_agent *ag = ihc_registry_agent(f->r, "n1:1");
    assert_non_null(ag);
    assert_string_equal(ag->node, "n1");
    assert_int_equal(ag->pid, 42);
    assert_int_equal(ag->n_modules, 2);
    assert_int_equal(ag->n_sessions, 2);
    assert_int_equal(ag->state, IHC_AGENT_CONNECTED);
    assert_string_equal(ag->modules[0].methods[0], "stop");
    assert_int_equal(ihc_registry_module_count(f->r), 2);
    /* epochs carried by the sessions raise the registry's */
    assert_int_equal(ihc_registry_epoch(f->r, "dev-1", NULL), 4);
    assert_int_equal(ihc_registry_epoch(f->r, "dev-2", NULL), 7);
    assert_int_equal(ihc_registry_epoch(f->r, "*", NULL), 2);
    assert_string_equal(expected(f->r, "dev-2"), "n1:1");
    assert_string_equal(expected(f->r, "dev-1"), "n1:1,n2:2");

    /* an empty hello ends everything the agent had */
    ihc_hello_msg empty = {.agent = "n1:1", .node = "n1", .pid = 42};
    TH_PASS(ihc_registry_hello(f->r, &empty, 11, 101));
    assert_int_equal(ihc_registry_agent(f->r, "n1:1")->n_sessions, 0);
    assert_int_equal(ihc_registry_agent(f->r, "n1:1")->n_modules, 0);
    assert_string_equal(expected(f->r, "dev-2"), "");
    assert_int_equal(ihc_registry_session_count(f->r), 1);
}

static void test_coord_registry_epochs(void **state)
{
    fixture *f = *state;
    int64_t set_ms = -1;
    assert_int_equal(ihc_registry_epoch(f->r, "dev-1", &set_ms), 0);
    assert_int_equal(set_ms, 0);
    assert_int_equal(ihc_registry_epoch_bump(f->r, "dev-1", 500), 1);
    assert_int_equal(ihc_registry_epoch_bump(f->r, "dev-1", 600), 2);
    assert_int_equal(ihc_registry_epoch(f->r, "dev-1", &set_ms), 2);
    assert_int_equal(set_ms, 600);
    TH_PASS(ihc_registry_epoch_raise(f->r, "dev-1", 1, 700)); /* never lowers */
    assert_int_equal(ihc_registry_epoch(f->r, "dev-1", &set_ms), 2);
    assert_int_equal(set_ms, 600);
    TH_PASS(ihc_registry_epoch_raise(f->r, "dev-1", 10, 0));
    assert_int_equal(ihc_registry_epoch_bump(f->r, "dev-1", 800), 11);
    assert_int_equal(ihc_registry_epoch_bump(f->r, "*", 800), 1);
    assert_int_equal(ihc_registry_epoch(f->r, "dev-2", NULL), 0);
}

static void test_coord_registry_expiry(void **state)
{
    fixture *f = *state;
    ihc_session_info s1 = sess("s-1", "dev-1", 0), s2 = sess("s-2", "dev-1", 0);
    TH_PASS(ihc_registry_session_begin(f->r, "n1:1", &s1, 0, 1));
    TH_PASS(ihc_registry_session_begin(f->r, "n2:2", &s2, 0, 1));
    /* n2 keeps talking, n1 falls silent */
    assert_non_null(ihc_registry_touch(f->r, "n2:2", 900 * MS, 900));
    assert_int_equal(ihc_registry_expire(f->r, 999 * MS), 0);
    assert_int_equal(ihc_registry_expire(f->r, 1001 * MS), 1);
    assert_int_equal(ihc_registry_agent(f->r, "n1:1")->state, IHC_AGENT_GONE);
    assert_string_equal(f->ev.last_end_sid, "s-1");
    assert_string_equal(f->ev.last_end_state, "expired");
    assert_string_equal(expected(f->r, "dev-1"), "n2:2");
    assert_string_equal(expected(f->r, "*"), "n2:2");
    assert_int_equal(ihc_registry_live_agents(f->r), 1);
    /* it comes back: connected again */
    assert_non_null(ihc_registry_touch(f->r, "n1:1", 1500 * MS, 1500));
    assert_int_equal(ihc_registry_agent(f->r, "n1:1")->state, IHC_AGENT_CONNECTED);
    assert_string_equal(expected(f->r, "*"), "n1:1,n2:2");
    /* gone agents are forgotten after 3 ttl */
    assert_int_equal(ihc_registry_expire(f->r, 2600 * MS), 2);
    assert_non_null(ihc_registry_agent(f->r, "n1:1"));
    assert_int_equal(ihc_registry_expire(f->r, 5000 * MS), 0);
    assert_null(ihc_registry_agent(f->r, "n1:1"));
    assert_null(ihc_registry_agent(f->r, "n2:2"));
}

static void test_coord_registry_load_pending(void **state)
{
    fixture *f = *state;
    ihc_module_info mods[] = {{.name = "text_processing", .timeout_ms = 100, .enabled = true}};
    TH_PASS(ihc_registry_agent_load(f->r, "n1:1", "n1", 11, 5, 6, mods, 1, 100 * MS));
    ihc_store_session_rec rec = {.session_id = "s-1",
                                 .hw = "dev-1",
                                 .agent_id = "n1:1",
                                 .state = "active",
                                 .epoch = 3,
                                 .created_ms = 1,
                                 .updated_ms = 2};
    TH_PASS(ihc_registry_session_load(f->r, &rec, 100 * MS));
    ihc_store_session_rec orphan = {
        .session_id = "s-2", .hw = "dev-1", .agent_id = "n3:3", .state = "active", .epoch = 1};
    TH_PASS(ihc_registry_session_load(f->r, &orphan, 100 * MS));
    assert_int_equal(f->ev.added, 0); /* loading does not write back */
    assert_int_equal(ihc_registry_agent(f->r, "n1:1")->state, IHC_AGENT_PENDING);
    assert_int_equal(ihc_registry_agent(f->r, "n3:3")->state, IHC_AGENT_PENDING);
    assert_int_equal(ihc_registry_epoch(f->r, "dev-1", NULL), 3);
    /* pending agents are expected until agent_ttl passes without a word */
    assert_string_equal(expected(f->r, "dev-1"), "n1:1,n3:3");
    assert_non_null(ihc_registry_touch(f->r, "n1:1", 600 * MS, 600));
    assert_int_equal(ihc_registry_expire(f->r, 1200 * MS), 1);
    assert_string_equal(expected(f->r, "dev-1"), "n1:1");
    assert_int_equal(ihc_registry_session_count(f->r), 1);
    assert_int_equal(ihc_registry_agent(f->r, "n1:1")->n_sessions, 1);
}

typedef struct {
    int n;
    char seen[4][64];
} pairs;

static void on_pair(void *arg, const char *hw, const char *agent)
{
    pairs *p = arg;
    if (p->n < 4)
        snprintf(p->seen[p->n], sizeof(p->seen[0]), "%s@%s", agent, hw);
    p->n++;
}

static void test_coord_registry_hw_agents(void **state)
{
    fixture *f = *state;
    ihc_session_info a = sess("s-1", "dev-1", 0), b = sess("s-2", "dev-1", 0);
    TH_PASS(ihc_registry_session_begin(f->r, "n1:1", &a, 0, 1));
    TH_PASS(ihc_registry_session_begin(f->r, "n1:1", &b, 0, 1));
    pairs p = {0};
    ihc_registry_foreach_hw_agent(f->r, on_pair, &p);
    assert_int_equal(p.n, 1); /* one pair however many sessions */
    assert_string_equal(p.seen[0], "n1:1@dev-1");
}

/* Many agents holding sessions of one hw, ended in a shuffled order (entries move in the hw's
 * list as others leave it): after every end, the agents expected are exactly those still
 * holding one (the hw's list and its index by (hw, agent) kept in step). */
static void test_coord_registry_hw_agents_many(void **state)
{
    fixture *f = *state;
    enum { N = 40, K = 2 };
    char agent[N][16], sid[N * K][16];
    int order[N * K], left[N];
    for (int i = 0; i < N; i++) {
        snprintf(agent[i], sizeof agent[i], "n%02d:1", i);
        left[i] = K;
        for (int k = 0; k < K; k++) {
            int x = i * K + k;
            snprintf(sid[x], sizeof sid[x], "s-%d", x);
            ihc_session_info si = sess(sid[x], "dev-1", 0);
            TH_PASS(ihc_registry_session_begin(f->r, agent[i], &si, 1, 1000));
            order[x] = x;
        }
    }
    uint32_t seed = 12345;
    for (int x = N * K - 1; x > 0; x--) { /* Fisher-Yates with a fixed LCG */
        seed = seed * 1103515245u + 12345u;
        int y = (int)((seed >> 8) % (uint32_t)(x + 1)), t = order[x];
        order[x] = order[y];
        order[y] = t;
    }
    for (int e = 0; e < N * K; e++) {
        int x = order[e], i = x / K;
        TH_PASS(ihc_registry_session_end(f->r, agent[i], sid[x], "done", 1001));
        left[i]--;
        char want[N * 16] = "";
        size_t len = 0;
        for (int a = 0; a < N; a++)
            if (left[a] > 0) {
                if (len)
                    want[len++] = ',';
                size_t l = strlen(agent[a]);
                memcpy(want + len, agent[a], l + 1);
                len += l;
            }
        assert_string_equal(expected(f->r, "dev-1"), want);
    }
    /* and back: an agent that held none holds one again */
    ihc_session_info again = sess("s-again", "dev-1", 0);
    TH_PASS(ihc_registry_session_begin(f->r, agent[7], &again, 1, 1002));
    assert_string_equal(expected(f->r, "dev-1"), agent[7]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_coord_registry_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coord_registry_session_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coord_registry_hello_replaces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coord_registry_epochs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coord_registry_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coord_registry_load_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coord_registry_hw_agents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coord_registry_hw_agents_many, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
