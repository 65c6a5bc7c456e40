/* Unit tests of cancellation tokens: flag and eventfd, waits with timeouts, reference counts,
 * many waiters woken by one cancel. */
#include "harness.h"

#include "err.h"
#include "ihc/agent.h"
#include "token.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void test_token_cancel_sets_flag_and_fd(void **state)
{
    (void)state;
    ihc_token *t = NULL;
    TH_PASS(ihc__token_new(&t, "dev-1-1"));
    assert_string_equal(ihc_token_session(t), "dev-1-1");
    assert_false(ihc_token_cancelled(t));
    int fd = ihc_token_fd(t);
    assert_true(fd >= 0);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 0), 0);

    int hits = 0;
    for (int i = 0; i < 3; i++)
        IHC_CHECKPOINT(t, hits++);
    assert_int_equal(hits, 0);

    ihc_token_cancel(t);
    ihc_token_cancel(t); /* idempotent */
    assert_true(ihc_token_cancelled(t));
    IHC_CHECKPOINT(t, hits++);
    assert_int_equal(hits, 1);
    assert_int_equal(poll(&p, 1, 0), 1);
    assert_true(p.revents & POLLIN);
    /* written exactly once */
    uint64_t v = 0;
    assert_int_equal(read(fd, &v, sizeof(v)), (ssize_t)sizeof(v));
    assert_int_equal(v, 1);
    /* the flag still answers after the fd was drained */
    TH_PASS(ihc_token_wait(t, 0));
    ihc_token_release(t);
}

static void test_token_wait_timeout(void **state)
{
    (void)state;
    ihc_token *t = NULL;
    TH_PASS(ihc__token_new(&t, "s"));
    uint64_t t0 = th_now_ms_();
    TH_FAIL(ihc_token_wait(t, 60), IHC_ETIMEDOUT);
    uint64_t dt = th_now_ms_() - t0;
    assert_true(dt >= 55);
    assert_true(dt < 2000);
    TH_FAIL(ihc_token_wait(t, 0), IHC_ETIMEDOUT);
    ihc_token_cancel(t);
    t0 = th_now_ms_();
    TH_PASS(ihc_token_wait(t, 5000));
    TH_PASS(ihc_token_wait(t, -1));
    assert_true(th_now_ms_() - t0 < 1000);
    TH_FAIL(ihc_token_wait(NULL, 0), IHC_EINVAL);
    ihc_token_release(t);
}

static void test_token_refcount(void **state)
{
    (void)state;
    ihc_token *t = NULL;
    TH_PASS(ihc__token_new(&t, NULL));
    assert_string_equal(ihc_token_session(t), "");
    ihc_token_retain(t);
    ihc_token_retain(t);
    assert_int_equal(atomic_load(&t->refs), 3);
    ihc_token_release(t);
    ihc_token_release(t);
    /* still usable with the last reference (ASan/valgrind catch a premature free) */
    ihc_token_cancel(t);
    assert_true(ihc_token_cancelled(t));
    ihc_token_release(t);
    ihc_token_release(NULL);
    ihc_token_cancel(NULL);
    assert_int_equal(ihc_token_fd(NULL), -1);
}

typedef struct {
    ihc_token *t;
    atomic_int woke;
    atomic_int started;
} waiters_ctx;

static void *waiter_main(void *arg)
{
    waiters_ctx *c = arg;
    ihc_token_retain(c->t);
    atomic_fetch_add(&c->started, 1);
    if (ihc_token_wait(c->t, 10000) == 0)
        atomic_fetch_add(&c->woke, 1);
    ihc_token_release(c->t);
    return NULL;
}

static void test_token_many_waiters(void **state)
{
    (void)state;
    enum { N = 16 };
    waiters_ctx c = {0};
    TH_PASS(ihc__token_new(&c.t, "many"));
    pthread_t th[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&th[i], NULL, waiter_main, &c), 0);
    assert_true(TH_WAIT(atomic_load(&c.started) == N, 5000));
    assert_int_equal(atomic_load(&c.woke), 0);
    uint64_t t0 = th_now_ms_();
    ihc_token_cancel(c.t);
    assert_true(TH_WAIT(atomic_load(&c.woke) == N, 5000));
    assert_true(th_now_ms_() - t0 < 2000);
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    ihc_token_release(c.t);
}

/* IHC_CHECKPOINT on a live token never takes the cancelled branch, in a hot loop as a
 * generator would run it (its cost is a benchmark's business, not a test's). */
static void test_token_checkpoint_live(void **state)
{
    (void)state;
    ihc_token *t = NULL;
    TH_PASS(ihc__token_new(&t, "hot"));
    volatile int seen = 0;
    for (int i = 0; i < 1000000; i++)
        IHC_CHECKPOINT(t, seen++);
    ihc_token_release(t);
    assert_int_equal(seen, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_cancel_sets_flag_and_fd),
        cmocka_unit_test(test_token_wait_timeout),
        cmocka_unit_test(test_token_refcount),
        cmocka_unit_test(test_token_many_waiters),
        cmocka_unit_test(test_token_checkpoint_live),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
