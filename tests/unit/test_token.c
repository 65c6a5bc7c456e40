/* Unit tests of cancellation tokens: flag and eventfd, waits with timeouts, reference counts,
 * many waiters woken by one cancel. */
#include "harness.h"

#include "err.h"
#include "ihc/agent.h"
#include "token.h"

#include <poll.h>
#include <stdio.h>
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

static int open_fds(void)
{
    int n = 0;
    char path[64];
    for (int fd = 0; fd < 4096; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        if (access(path, F_OK) == 0)
            n++;
    }
    return n;
}

/* The eventfd is made when asked for: tokens nobody asks cost no descriptor; one asked for
 * after the cancel is readable at once, and stays the same fd. */
static void test_token_fd_on_demand(void **state)
{
    (void)state;
    int before = open_fds();
    ihc_token *v[64];
    for (int i = 0; i < 64; i++) {
        TH_PASS(ihc__token_new(&v[i], "s"));
        if (i % 2)
            ihc_token_cancel(v[i]);
    }
    assert_int_equal(open_fds(), before);
    int fd = ihc_token_fd(v[1]); /* cancelled before anyone asked */
    assert_true(fd >= 0);
    assert_int_equal(ihc_token_fd(v[1]), fd);
    assert_int_equal(open_fds(), before + 1);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 0), 1);
    TH_PASS(ihc_token_wait(v[3], -1)); /* cancelled: no fd needed */
    TH_FAIL(ihc_token_wait(v[0], 0), IHC_ETIMEDOUT);
    for (int i = 0; i < 64; i++)
        ihc_token_release(v[i]);
    assert_int_equal(open_fds(), before);
}

typedef struct {
    ihc_token *t;
    atomic_int go;
} race_arg;

static void *race_cancel(void *arg)
{
    race_arg *r = arg;
    while (!atomic_load(&r->go))
        ;
    ihc_token_cancel(r->t);
    return NULL;
}

/* A cancel racing the first ihc_token_fd: the fd is readable in every case. */
static void test_token_fd_race(void **state)
{
    (void)state;
    for (int i = 0; i < 300; i++) {
        race_arg r = {0};
        TH_PASS(ihc__token_new(&r.t, "s"));
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, race_cancel, &r), 0);
        atomic_store(&r.go, 1);
        int fd = ihc_token_fd(r.t);
        assert_true(fd >= 0);
        pthread_join(th, NULL);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 0) != 1)
            fail_msg("round %d: cancelled token's fd not readable", i);
        ihc_token_release(r.t);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_cancel_sets_flag_and_fd),
        cmocka_unit_test(test_token_wait_timeout),
        cmocka_unit_test(test_token_refcount),
        cmocka_unit_test(test_token_many_waiters),
        cmocka_unit_test(test_token_checkpoint_live),
        cmocka_unit_test(test_token_fd_on_demand),
        cmocka_unit_test(test_token_fd_race),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
