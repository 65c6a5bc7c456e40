/* Unit tests of the lease among coordinators (coordinator/leader.c and the lease, fence and
 * once-only scripts of coordinator/store.c) against a real redis-server: election, standby's
 * view, renew, take-over after expiry with a higher term and ids above the old block, terms
 * that never go back after Redis lost its data, fenced batches refused after the term moved,
 * a leader stepping down when its lease was taken, and repeated batches adding nothing. */
#include "harness.h"

#include "clock.h"
#include "err.h"
#include "leader.h"
#include "log.h"
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static th_redis g_redis;

typedef struct {
    ihc_store *st, *st2;
    ihc_leader *l1, *l2;
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
    char *ok = th_redis_cmd(&g_redis, "FLUSHALL");
    bool flushed = ok && strcmp(ok, "OK") == 0;
    free(ok);
    *state = f;
    return flushed ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    ihc_leader_close(f->l1);
    ihc_leader_close(f->l2);
    ihc_store_close(f->st);
    ihc_store_close(f->st2);
    free(f);
    return 0;
}

static ihc_store *open_store(void)
{
    ihc_store_opts o = {.url = g_redis.url, .timeout_ms = 1000};
    ihc_store *st = NULL;
    TH_PASS(ihc_store_open(&st, &o));
    return st;
}

/* A command's answer equals want (printed when not). */
#define redis_is(want, ...)                                                                        \
    ({                                                                                             \
        char *r_ = th_redis_cmd(&g_redis, __VA_ARGS__);                                            \
        bool ok_ = r_ && strcmp(r_, (want)) == 0;                                                  \
        if (!ok_)                                                                                  \
            fprintf(stderr, "%s: got '%s', want '%s'\n", #__VA_ARGS__, r_ ? r_ : "(error)",        \
                    (want));                                                                       \
        free(r_);                                                                                  \
        ok_;                                                                                       \
    })

static ihc_store_lease_req req(const char *id, uint64_t ttl_ms)
{
    return (ihc_store_lease_req){.id = id,
                                 .ttl_ms = ttl_ms,
                                 .id_block = 1000,
                                 .min_next_id = 1,
                                 .control = "tcp://h:7452",
                                 .http = "http://h:7480"};
}

/* The scripts: one holder, the standby told who and where, compare-and-extend. */
static void test_leader_lease_scripts(void **state)
{
    fixture *f = *state;
    f->st = open_store();
    f->st2 = open_store();
    ihc_store_lease_req a = req("coord-a", 5000), b = req("coord-b", 5000);
    b.control = "tcp://b:7452";
    ihc_store_lease s;
    TH_PASS(ihc_store_lease_acquire(f->st, &a, &s));
    assert_true(s.held);
    assert_int_equal(s.term, 1);
    assert_int_equal(s.ids_hi, 1000);
    assert_true(redis_is("coord-a", "GET ihc:leader"));
    assert_true(redis_is("1", "GET ihc:term"));
    assert_true(redis_is("tcp://h:7452", "HGET ihc:leader:info control"));

    TH_PASS(ihc_store_lease_acquire(f->st2, &b, &s));
    assert_false(s.held);
    assert_int_equal(s.term, 1);
    assert_string_equal(s.holder, "coord-a");
    assert_string_equal(s.holder_control, "tcp://h:7452");
    assert_string_equal(s.holder_http, "http://h:7480");

    TH_PASS(ihc_store_lease_renew(f->st, &a, 1, &s));
    assert_true(s.held);
    assert_int_equal(s.standbys, 1);                   /* b polled */
    TH_PASS(ihc_store_lease_renew(f->st2, &b, 1, &s)); /* b does not hold it */
    assert_false(s.held);
    assert_string_equal(s.holder, "coord-a");
    TH_PASS(ihc_store_lease_renew(f->st, &a, 7, &s)); /* a wrong term is not a's lease */
    assert_false(s.held);

    /* ids: the next block above the first, fenced by the term */
    uint64_t hi = 0;
    TH_PASS(ihc_store_ids_reserve(f->st, 1, 1000, 1, &hi));
    assert_int_equal(hi, 2000);
    TH_FAIL(ihc_store_ids_reserve(f->st, 2, 1000, 1, &hi), IHC_ENOTLEADER);
    TH_PASS(ihc_store_ids_reserve(f->st, 1, 1000, 5000, &hi)); /* above the caller's next id */
    assert_int_equal(hi, 5999);

    TH_PASS(ihc_store_lease_resign(f->st2, "coord-b")); /* not b's: nothing */
    assert_true(redis_is("coord-a", "GET ihc:leader"));
    TH_PASS(ihc_store_lease_resign(f->st, "coord-a"));
    assert_true(redis_is("(nil)", "GET ihc:leader"));
    TH_PASS(ihc_store_lease_acquire(f->st2, &b, &s));
    assert_true(s.held);
    assert_int_equal(s.term, 2);
    assert_true(s.ids_hi > 5999); /* above every id reserved before */
    assert_true(redis_is("tcp://b:7452", "HGET ihc:leader:info control"));
}

/* Redis lost its data: a new election takes a term above the highest seen, and a leader whose
 * lease vanished with nobody taking a later term takes it back with its own term. */
static void test_leader_term_never_goes_back(void **state)
{
    fixture *f = *state;
    f->st = open_store();
    ihc_store_lease_req a = req("coord-a", 5000);
    ihc_store_lease s;
    for (int i = 0; i < 3; i++) {
        TH_PASS(ihc_store_lease_acquire(f->st, &a, &s)); /* already ours: a new term */
        assert_true(s.held);
    }
    assert_int_equal(s.term, 3);
    free(th_redis_cmd(&g_redis, "FLUSHALL"));
    TH_PASS(ihc_store_lease_renew(f->st, &a, 3, &s));
    assert_true(s.held);
    assert_true(redis_is("3", "GET ihc:term"));
    assert_true(redis_is("coord-a", "GET ihc:leader"));

    free(th_redis_cmd(&g_redis, "FLUSHALL"));
    a.min_term = 3;
    TH_PASS(ihc_store_lease_acquire(f->st, &a, &s));
    assert_true(s.held);
    assert_int_equal(s.term, 4);
    /* a later term taken meanwhile: the old holder cannot take it back */
    free(th_redis_cmd(&g_redis, "DEL ihc:leader"));
    free(th_redis_cmd(&g_redis, "SET ihc:term 9"));
    TH_PASS(ihc_store_lease_renew(f->st, &a, 4, &s));
    assert_false(s.held);
    assert_int_equal(s.term, 9);
}

static void put_session(ihc_store *st, const char *sid, bool is_new)
{
    ihc_store_session ss = {.session_id = sid,
                            .hw = "dev-1",
                            .agent_id = "ag",
                            .state = "active",
                            .epoch = 1,
                            .created_ms = 1,
                            .updated_ms = 1,
                            .is_new = is_new};
    TH_PASS(ihc_store_session_put(st, &ss));
}

/* One leader batch, fenced, sent twice (a timeout after Redis ran it): nothing doubles. */
static int fenced_batch(ihc_store *st, uint64_t term, uint64_t first_id)
{
    int rc = ihc_store_pipeline_begin_fenced(st, term);
    if (rc != IHC_OK)
        return rc;
    for (uint64_t id = first_id; id < first_id + 3; id++) {
        ihc_store_log_entry e = {.id = id, .hw = "dev-1", .success = id != first_id};
        TH_PASS(ihc_store_log_append(st, &e));
    }
    put_session(st, "s-1", true);
    put_session(st, "s-2", true);
    put_session(st, "s-3", false); /* an update: never counted */
    TH_PASS(ihc_store_epoch_raise(st, "dev-1", 5));
    TH_PASS(ihc_store_stats_incr(st, "rejected", 0));
    return ihc_store_pipeline_exec(st);
}

static void test_leader_fenced_batch(void **state)
{
    fixture *f = *state;
    f->st = open_store();
    ihc_store_lease_req a = req("coord-a", 5000);
    ihc_store_lease s;
    TH_PASS(ihc_store_lease_acquire(f->st, &a, &s));
    TH_PASS(fenced_batch(f->st, s.term, 1));
    TH_PASS(fenced_batch(f->st, s.term, 1)); /* repeated */
    assert_true(redis_is("3", "XLEN ihc:interrupts"));
    assert_true(redis_is("3", "HGET ihc:stats total_interrupts"));
    assert_true(redis_is("2", "HGET ihc:stats successful_interrupts"));
    assert_true(redis_is("1", "HGET ihc:stats failed_interrupts"));
    assert_true(redis_is("2", "HGET ihc:stats sessions_created")); /* one HINCRBY per batch */
    assert_true(redis_is("5", "GET ihc:hw:{dev-1}:epoch"));
    /* ids far apart land in their own bitmaps */
    TH_PASS(fenced_batch(f->st, s.term, (1u << 20) + 7));
    assert_true(redis_is("6", "XLEN ihc:interrupts"));

    /* another coordinator took a later term: the whole batch is refused, nothing written */
    free(th_redis_cmd(&g_redis, "INCR ihc:term"));
    TH_FAIL(fenced_batch(f->st, s.term, 100), IHC_ENOTLEADER);
    assert_non_null(strstr(ihc_store_errstr(f->st), "FENCED"));
    assert_true(redis_is("6", "XLEN ihc:interrupts"));
    /* Redis lost its data: refused until the lease puts the term back */
    free(th_redis_cmd(&g_redis, "FLUSHALL"));
    TH_FAIL(fenced_batch(f->st, s.term, 200), IHC_ENOENT);
    assert_true(redis_is("0", "XLEN ihc:interrupts"));
    /* a script cache flushed: the batch falls back to EVAL */
    free(th_redis_cmd(&g_redis, "SET ihc:term %llu", (unsigned long long)s.term));
    free(th_redis_cmd(&g_redis, "SCRIPT FLUSH"));
    TH_PASS(fenced_batch(f->st, s.term, 300));
    assert_true(redis_is("3", "XLEN ihc:interrupts"));
}

static ihc_leader *open_leader(const char *id, double ttl_s, uint64_t first_id)
{
    ihc_leader_opts o = {.store = {.url = g_redis.url, .timeout_ms = 500},
                         .id = id,
                         .ttl_s = ttl_s,
                         .first_id = first_id,
                         .control = "tcp://127.0.0.1:1",
                         .http = "http://127.0.0.1:2"};
    ihc_leader *l = NULL;
    TH_PASS(ihc_leader_open(&l, &o));
    return l;
}

static bool leads(ihc_leader *l)
{
    return ihc_leader_term(l) != 0;
}

static bool sees_leader(ihc_leader *l, const char *id)
{
    ihc_leader_view v;
    ihc_leader_view_get(l, &v);
    return !v.leader && strcmp(v.leader_id, id) == 0;
}

/* Two leaders' threads: one leads, the other stands by and knows who leads; the lease given
 * up on close passes at once, the lease of one that stopped renewing after it lapses. */
static void test_leader_election_and_takeover(void **state)
{
    fixture *f = *state;
    ihc_leader_opts bad = {.store = {.url = g_redis.url}, .id = "x", .ttl_s = 0.2};
    ihc_leader *l = NULL;
    TH_FAIL(ihc_leader_open(&l, &bad), IHC_EINVAL);

    f->l1 = open_leader("coord-1", 0.5, 1);
    assert_true(TH_WAIT(leads(f->l1), 3000));
    f->l2 = open_leader("coord-2", 0.5, 1);
    assert_true(TH_WAIT(sees_leader(f->l2, "coord-1"), 3000));
    ihc_leader_view v;
    ihc_leader_view_get(f->l2, &v);
    assert_string_equal(v.leader_control, "tcp://127.0.0.1:1");
    assert_int_equal(v.term, 1);
    uint64_t hi1 = ihc_leader_ids_hi(f->l1);
    assert_int_equal(hi1, IHC_LEADER_ID_BLOCK);
    /* the standby is counted: the leader is not alone */
    assert_true(TH_WAIT((ihc_leader_view_get(f->l1, &v), !v.solo), 3000));
    /* the leader keeps its lease past several TTLs */
    th_sleep_ms_(1200);
    assert_true(leads(f->l1));
    assert_false(leads(f->l2));

    /* the loop uses ids: a new block is reserved before the first runs out */
    ihc_leader_ids_next(f->l1, hi1 - 10);
    assert_true(TH_WAIT(ihc_leader_ids_hi(f->l1) == 2 * IHC_LEADER_ID_BLOCK, 3000));

    uint64_t t0 = ihc_mono_ns();
    ihc_leader_close(f->l1); /* gives the lease up */
    f->l1 = NULL;
    assert_true(TH_WAIT(leads(f->l2), 3000));
    double took_ms = (double)(ihc_mono_ns() - t0) / 1e6;
    ihc_leader_view_get(f->l2, &v);
    assert_int_equal(v.term, 2);
    assert_true(ihc_leader_ids_hi(f->l2) > 2 * IHC_LEADER_ID_BLOCK);
    fprintf(stderr, "take-over after a clean stop: %.0f ms\n", took_ms);

    /* a holder that stops renewing (its process paused): taken over once the lease lapses */
    f->st = open_store();
    ihc_leader_close(f->l2);
    f->l2 = NULL;
    ihc_store_lease_req a = req("coord-paused", 500);
    a.min_term = 2;
    ihc_store_lease s;
    TH_PASS(ihc_store_lease_acquire(f->st, &a, &s));
    assert_true(s.held);
    assert_int_equal(s.term, 3);
    t0 = ihc_mono_ns();
    f->l1 = open_leader("coord-3", 0.5, 1);
    assert_true(TH_WAIT(sees_leader(f->l1, "coord-paused"), 3000));
    assert_true(TH_WAIT(leads(f->l1), 3000));
    took_ms = (double)(ihc_mono_ns() - t0) / 1e6;
    fprintf(stderr, "take-over after a lapsed lease (ttl 500 ms): %.0f ms\n", took_ms);
    assert_true(took_ms >= 400);
    ihc_leader_view_get(f->l1, &v);
    assert_int_equal(v.term, 4);
    /* the paused holder wakes up: its renew and its writes are refused */
    TH_PASS(ihc_store_lease_renew(f->st, &a, 3, &s));
    assert_false(s.held);
    assert_string_equal(s.holder, "coord-3");
    TH_FAIL(fenced_batch(f->st, 3, 1), IHC_ENOTLEADER);
}

/* The lease taken from under a leader (its renew finds another holder): it steps down within
 * a renew period; a refused write makes it step down at once. */
static void test_leader_steps_down(void **state)
{
    fixture *f = *state;
    f->l1 = open_leader("coord-1", 0.6, 1);
    assert_true(TH_WAIT(leads(f->l1), 3000));
    uint64_t term = ihc_leader_term(f->l1);
    ihc_leader_fenced(f->l1, term + 1); /* not its term: nothing */
    assert_true(leads(f->l1));
    ihc_leader_fenced(f->l1, term);
    assert_false(leads(f->l1));
    /* it stands by, then takes the lease again (it is free) with a later term */
    assert_true(TH_WAIT(leads(f->l1), 3000));
    assert_true(ihc_leader_term(f->l1) > term);

    free(th_redis_cmd(&g_redis, "SET ihc:leader intruder PX 60000"));
    free(th_redis_cmd(&g_redis, "INCR ihc:term"));
    uint64_t t0 = ihc_mono_ns();
    assert_true(TH_WAIT(!leads(f->l1), 3000));
    assert_true(ihc_mono_ns() - t0 < 600ull * 1000000ull);
    assert_true(TH_WAIT(sees_leader(f->l1, "intruder"), 3000));
}

/* Redis away: a leader with a standby stops at the end of its lease, one alone goes on. */
static void test_leader_redis_away(void **state)
{
    fixture *f = *state;
    th_redis own = {0};
    assert_int_equal(th_redis_start(&own), 0);
    ihc_leader_opts o = {
        .store = {.url = own.url, .timeout_ms = 200}, .id = "alone", .ttl_s = 0.5, .first_id = 1};
    TH_PASS(ihc_leader_open(&f->l1, &o));
    assert_true(TH_WAIT(leads(f->l1), 3000));
    th_redis_kill(&own);
    th_sleep_ms_(1200);
    assert_true(leads(f->l1));                 /* alone: serving on */
    assert_int_equal(th_redis_start(&own), 0); /* empty */
    char *v = NULL;
    assert_true(TH_WAIT((v = th_redis_cmd(&own, "GET ihc:leader")) && strcmp(v, "alone") == 0
                            ? (free(v), true)
                            : (free(v), false),
                        3000));
    ihc_leader_close(f->l1);
    f->l1 = NULL;

    o.id = "with-standby";
    TH_PASS(ihc_leader_open(&f->l1, &o));
    assert_true(TH_WAIT(leads(f->l1), 3000));
    o.id = "standby";
    TH_PASS(ihc_leader_open(&f->l2, &o));
    ihc_leader_view vw;
    assert_true(TH_WAIT((ihc_leader_view_get(f->l1, &vw), !vw.solo), 3000));
    th_redis_kill(&own);
    uint64_t t0 = ihc_mono_ns();
    assert_true(TH_WAIT(!leads(f->l1), 3000));
    double ms = (double)(ihc_mono_ns() - t0) / 1e6;
    fprintf(stderr, "leader cut off from redis stopped after %.0f ms (ttl 500)\n", ms);
    assert_true(ms <= 600);
    ihc_leader_close(f->l1);
    ihc_leader_close(f->l2);
    f->l1 = f->l2 = NULL;
    th_redis_stop(&own);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_leader_lease_scripts), T(test_leader_term_never_goes_back),
        T(test_leader_fenced_batch),  T(test_leader_election_and_takeover),
        T(test_leader_steps_down),    T(test_leader_redis_away),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
