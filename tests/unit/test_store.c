/* Unit tests of coordinator/store against a real redis-server: URLs, every operation and key,
 * expiry pruning, pipelining, AUTH/ACL with escaped passwords, SELECT, unix sockets, and
 * Redis down, killed, restarted or hung. */
#include "harness.h"

#include "err.h"
#include "log.h"
#include "store.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The group's redis-server, flushed before every case. */
static th_redis g_redis;

/* Per-case state; teardown releases whatever a case left behind when it failed. */
typedef struct {
    ihc_store *st, *st2;
    th_redis own; /* a redis-server the case kills, restarts or stops */
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
    ihc_store_close(f->st);
    ihc_store_close(f->st2);
    if (f->own.pid > 0)
        kill(f->own.pid, SIGCONT); /* a case may have left it stopped */
    th_redis_stop(&f->own);
    free(f);
    return 0;
}

static ihc_store *open_store(const char *url, uint32_t timeout_ms, const char *name)
{
    ihc_store_opts o = {.url = url, .timeout_ms = timeout_ms, .client_name = name};
    ihc_store *st = NULL;
    TH_PASS(ihc_store_open(&st, &o));
    assert_non_null(st);
    return st;
}

/* A Redis URL for port and db on 127.0.0.1. */
static const char *url_of(int port, int db)
{
    static char url[128];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/%d", port, db);
    return url;
}

/* Runs a command on r and compares its rendered reply with want. */
#define EXPECT_CMD(r, want, ...)                                                                   \
    do {                                                                                           \
        char *got_ = th_redis_cmd((r), __VA_ARGS__);                                               \
        char buf_[4096];                                                                           \
        snprintf(buf_, sizeof(buf_), "%s", got_ ? got_ : "<no reply>");                            \
        free(got_);                                                                                \
        if (strcmp(buf_, (want)) != 0)                                                             \
            fail_msg("%s: got \"%s\", want \"%s\"", #__VA_ARGS__, buf_, (want));                   \
    } while (0)

/* True when CLIENT LIST contains needle. */
static bool client_list_has(const th_redis *r, const char *needle)
{
    char *got = th_redis_cmd(r, "CLIENT LIST");
    bool has = got && strstr(got, needle);
    free(got);
    return has;
}

static bool key_gone(const th_redis *r, const char *key)
{
    char *got = th_redis_cmd(r, "EXISTS %s", key);
    bool gone = got && strcmp(got, "0") == 0;
    free(got);
    return gone;
}

/* Keys matching pattern (SCAN, not KEYS: it counts only what exists, expired or not yet). */
static long redis_count(const th_redis *r, const char *pattern)
{
    long n = 0;
    char cursor[32] = "0";
    do {
        char *got = th_redis_cmd(r, "SCAN %s MATCH %s COUNT 1000", cursor, pattern);
        if (!got)
            return -1;
        /* rendered as the cursor, then one key per line */
        char *nl = strchr(got, '\n');
        if (nl)
            *nl = '\0';
        snprintf(cursor, sizeof(cursor), "%s", got);
        for (char *p = nl; p; p = strchr(p + 1, '\n'))
            n++;
        free(got);
    } while (strcmp(cursor, "0") != 0);
    return n;
}

static uint64_t elapsed_ms(uint64_t t0)
{
    return th_now_ms_() - t0;
}

/* ---------------------------------------------------------------- URLs ---- */

static void test_store_bad_urls(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "http://127.0.0.1:6379",
        "rediss://127.0.0.1:6379",
        "redis://",
        "redis://:6379",
        "redis://127.0.0.1:0",
        "redis://127.0.0.1:65536",
        "redis://127.0.0.1:12ab",
        "redis://127.0.0.1:",
        "redis://127.0.0.1/abc",
        "redis://127.0.0.1/1/2",
        "redis://127.0.0.1/-1",
        "redis://127.0.0.1?db=1",
        "redis://[::1",
        "redis://[::1]x",
        "redis://:@127.0.0.1",
        "redis://user:@127.0.0.1",
        "redis://:p%zzw@127.0.0.1",
        "redis://:pw%4@127.0.0.1",
        "redis://:pw%00x@127.0.0.1",
        "unix://",
        "unix://relative.sock",
        "unix:///",
        "unix:///tmp/x.sock?db=x",
        "unix:///tmp/x.sock?foo=1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ihc_store_opts o = {.url = bad[i]};
        ihc_store *st = (ihc_store *)&o; /* must be reset to NULL */
        int rc = ihc_store_open(&st, &o);
        if (rc != IHC_EINVAL)
            fail_msg("url \"%s\": got %s, want IHC_EINVAL", bad[i], ihc_err_name(rc));
        assert_null(st);
    }
    ihc_store *st = NULL;
    TH_FAIL(ihc_store_open(&st, NULL), IHC_EINVAL);
    ihc_store_opts nourl = {.url = NULL};
    TH_FAIL(ihc_store_open(&st, &nourl), IHC_EINVAL);
    ihc_store_opts badname = {.url = g_redis.url, .client_name = "has space"};
    TH_FAIL(ihc_store_open(&st, &badname), IHC_EINVAL);

    /* Valid forms open (disconnected when nothing listens there). */
    int port = th_free_port();
    char url[256];
    static const char *const good[][2] = {
        {"redis://127.0.0.1:", ""},           {"redis://127.0.0.1:", "/"},
        {"redis://127.0.0.1:", "/15"},        {"redis://:pw@127.0.0.1:", "/0"},
        {"redis://u:p%40s:s@127.0.0.1:", ""}, {"redis://[::1]:", "/1"},
        {"redis://pw@localhost:", ""},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(url, sizeof(url), "%s%d%s", good[i][0], port, good[i][1]);
        ihc_store_opts o = {.url = url, .timeout_ms = 200};
        int rc = ihc_store_open(&st, &o);
        if (rc != IHC_OK)
            fail_msg("url \"%s\": %s", url, ihc_err_name(rc));
        assert_false(ihc_store_connected(st));
        assert_string_not_equal(ihc_store_errstr(st), "");
        ihc_store_close(st);
    }
    ihc_store_opts o = {.url = "unix:///nonexistent/ihc.sock?db=2"};
    TH_PASS(ihc_store_open(&st, &o));
    assert_false(ihc_store_connected(st));
    ihc_store_close(st);
    ihc_store_close(NULL);
}

/* ------------------------------------------------------ down, then up ---- */

#define FAST_FAIL(expr)                                                                            \
    do {                                                                                           \
        uint64_t t0_ = th_now_ms_();                                                               \
        int rc_ = (expr);                                                                          \
        uint64_t dt_ = elapsed_ms(t0_);                                                            \
        if (rc_ != IHC_ENOTCONN && rc_ != IHC_ETIMEDOUT)                                           \
            fail_msg("%s: got %s, want IHC_ENOTCONN or IHC_ETIMEDOUT", #expr, ihc_err_name(rc_));  \
        if (dt_ > 1000)                                                                            \
            fail_msg("%s took %llu ms", #expr, (unsigned long long)dt_);                           \
    } while (0)

static void test_store_down_then_up(void **state)
{
    fixture *f = *state;
    int port = th_free_port();
    f->st = open_store(url_of(port, 0), 300, "ihc-down-up");
    assert_false(ihc_store_connected(f->st));
    assert_non_null(strstr(ihc_store_errstr(f->st), "127.0.0.1"));

    ihc_store_session s = {.session_id = "s1", .hw = "dev-1", .agent_id = "a1", .state = "active"};
    ihc_store_flags fl;
    ihc_store_session_rec *recs = NULL;
    size_t n = 99;
    uint64_t u;
    int64_t i64;
    for (int round = 0; round < 3; round++) {
        FAST_FAIL(ihc_store_ping(f->st));
        FAST_FAIL(ihc_store_session_put(f->st, &s));
        FAST_FAIL(ihc_store_session_state(f->st, "dev-1", "s1", "done", 1));
        FAST_FAIL(ihc_store_sessions_list(f->st, NULL, &recs, &n));
        assert_null(recs);
        assert_int_equal(n, 0);
        FAST_FAIL(ihc_store_epoch_raise(f->st, "dev-1", 3));
        FAST_FAIL(ihc_store_epoch_get(f->st, "dev-1", &u));
        FAST_FAIL(ihc_store_flags_get(f->st, &fl));
        FAST_FAIL(ihc_store_stats_incr(f->st, "total_interrupts", 1));
        FAST_FAIL(ihc_store_stats_get(f->st, "total_interrupts", &i64));
        FAST_FAIL(ihc_store_seq_raise(f->st, 5));
        FAST_FAIL(ihc_store_log_len(f->st, &u));
        FAST_FAIL(ihc_store_pipeline_begin(f->st));
        FAST_FAIL(ihc_store_stats_incr(f->st, "total_interrupts", 1));
        FAST_FAIL(ihc_store_agent_touch(f->st, "a1", 1));
        TH_FAIL(ihc_store_stats_get(f->st, "x", &i64), IHC_EINVAL); /* read in a pipeline */
        FAST_FAIL(ihc_store_pipeline_exec(f->st));
        TH_FAIL(ihc_store_pipeline_exec(f->st), IHC_EINVAL); /* already closed */
        assert_false(ihc_store_connected(f->st));
    }

    f->own.port = port;
    assert_int_equal(th_redis_start(&f->own), 0);
    assert_true(TH_WAIT(ihc_store_ping(f->st) == IHC_OK, 5000));
    assert_true(ihc_store_connected(f->st));
    assert_string_equal(ihc_store_errstr(f->st), "");
    TH_PASS(ihc_store_stats_incr(f->st, "total_interrupts", 4));
    if (ihc_store_stats_get(f->st, "total_interrupts", &i64) != IHC_OK)
        fail_msg("stats_get: %s %lld", ihc_store_errstr(f->st), (long long)i64);
    assert_int_equal(i64, 4);
    EXPECT_CMD(&f->own, "4", "HGET ihc:stats total_interrupts");
    assert_true(client_list_has(&f->own, "name=ihc-down-up"));
}

/* ------------------------------------------------------------ sessions ---- */

static const ihc_store_session_rec *find_session(const ihc_store_session_rec *recs, size_t n,
                                                 const char *sid)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(recs[i].session_id, sid) == 0)
            return &recs[i];
    return NULL;
}

static void test_store_sessions(void **state)
{
    fixture *f = *state;
    f->st = open_store(g_redis.url, 1000, NULL);
    const char *data = "{\"text\":\"line 1\\nline 2 %s %n\",\"x\":[1,2]}";
    ihc_store_session s[] = {
        {"s1", "dev-1", "agent-a", "active", 3, 1000, 1001, data, false},
        {"s2", "dev-1", "agent-a", "active", 3, 2000, 2001, NULL, false},
        {"s3", "dev-1", "agent-b", "done", 2, 3000, 3001, NULL, false},
        {"s4", "dev-2", "agent-b", "active", 7, 4000, 4001, "{}", false},
    };
    for (size_t i = 0; i < 4; i++)
        TH_PASS(ihc_store_session_put(f->st, &s[i]));

    /* The keys of DESIGN.md, with the hash tag and an expiry. */
    EXPECT_CMD(&g_redis, "1", "EXISTS ihc:session:{dev-1}:s1");
    EXPECT_CMD(&g_redis, "agent-a", "HGET ihc:session:{dev-1}:s1 agent_id");
    EXPECT_CMD(&g_redis, "dev-1", "HGET ihc:session:{dev-1}:s1 hardware_id");
    EXPECT_CMD(&g_redis, "1", "SISMEMBER ihc:hw:{dev-1}:sessions s1");
    EXPECT_CMD(&g_redis, "0", "SISMEMBER ihc:hw:{dev-1}:sessions s3");
    EXPECT_CMD(&g_redis, "2", "SCARD ihc:hw:{dev-1}:sessions");
    char *ttl = th_redis_cmd(&g_redis, "TTL ihc:session:{dev-1}:s3");
    assert_non_null(ttl);
    assert_true(atoi(ttl) > 250 && atoi(ttl) <= 300);
    free(ttl);

    ihc_store_session_rec *recs = NULL;
    size_t n = 0;
    TH_PASS(ihc_store_sessions_list(f->st, "dev-1", &recs, &n));
    assert_int_equal(n, 2);
    const ihc_store_session_rec *r1 = find_session(recs, n, "s1");
    const ihc_store_session_rec *r2 = find_session(recs, n, "s2");
    assert_non_null(r1);
    assert_non_null(r2);
    assert_string_equal(r1->hw, "dev-1");
    assert_string_equal(r1->agent_id, "agent-a");
    assert_string_equal(r1->state, "active");
    assert_int_equal(r1->epoch, 3);
    assert_int_equal(r1->created_ms, 1000);
    assert_int_equal(r1->updated_ms, 1001);
    assert_string_equal(r1->data, data);
    assert_null(r2->data);
    ihc_store_sessions_free(recs, n);

    TH_PASS(ihc_store_sessions_list(f->st, NULL, &recs, &n));
    assert_int_equal(n, 3);
    assert_non_null(find_session(recs, n, "s4"));
    assert_string_equal(find_session(recs, n, "s4")->hw, "dev-2");
    ihc_store_sessions_free(recs, n);

    /* State change: hash updated, removed from the active set, expiry kept. */
    TH_PASS(ihc_store_session_state(f->st, "dev-1", "s1", "interrupted", 5000));
    EXPECT_CMD(&g_redis, "interrupted", "HGET ihc:session:{dev-1}:s1 state");
    EXPECT_CMD(&g_redis, "5000", "HGET ihc:session:{dev-1}:s1 updated_ms");
    EXPECT_CMD(&g_redis, "0", "SISMEMBER ihc:hw:{dev-1}:sessions s1");
    ttl = th_redis_cmd(&g_redis, "TTL ihc:session:{dev-1}:s1");
    assert_true(ttl && atoi(ttl) > 0);
    free(ttl);
    TH_PASS(ihc_store_sessions_list(f->st, "dev-1", &recs, &n));
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].session_id, "s2");
    ihc_store_sessions_free(recs, n);

    /* A missing session: OK, and no hash is created. */
    TH_PASS(ihc_store_session_state(f->st, "dev-1", "nope", "done", 1));
    EXPECT_CMD(&g_redis, "0", "EXISTS ihc:session:{dev-1}:nope");

    /* Putting a non-active state removes it from the set. */
    ihc_store_session done = s[1];
    done.state = "done";
    TH_PASS(ihc_store_session_put(f->st, &done));
    EXPECT_CMD(&g_redis, "0", "SISMEMBER ihc:hw:{dev-1}:sessions s2");

    /* A hash whose state was changed behind the store's back is not listed as active. */
    EXPECT_CMD(&g_redis, "OK", "SET ihc:unrelated x");
    EXPECT_CMD(&g_redis, "0", "HSET ihc:session:{dev-2}:s4 state expired");
    TH_PASS(ihc_store_sessions_list(f->st, "dev-2", &recs, &n));
    assert_int_equal(n, 0);
    ihc_store_sessions_free(recs, n);

    TH_PASS(ihc_store_sessions_list(f->st, "no-such-hw", &recs, &n));
    assert_int_equal(n, 0);
    ihc_store_sessions_free(recs, n);

    ihc_store_session bad = s[0];
    bad.hw = NULL;
    TH_FAIL(ihc_store_session_put(f->st, &bad), IHC_EINVAL);
    bad.hw = "";
    TH_FAIL(ihc_store_session_put(f->st, &bad), IHC_EINVAL);
    TH_FAIL(ihc_store_session_state(f->st, "dev-1", NULL, "done", 1), IHC_EINVAL);
    TH_FAIL(ihc_store_sessions_list(f->st, "", &recs, &n), IHC_EINVAL);
}

static void test_store_session_expiry(void **state)
{
    fixture *f = *state;
    ihc_store_opts o = {.url = g_redis.url, .session_ttl_s = 1};
    TH_PASS(ihc_store_open(&f->st, &o));
    ihc_store_session a = {"e1", "dev-e", "ag", "active", 1, 1, 1, NULL, false};
    ihc_store_session b = {"e2", "dev-f", "ag", "active", 1, 1, 1, NULL, false};
    TH_PASS(ihc_store_session_put(f->st, &a));
    TH_PASS(ihc_store_session_put(f->st, &b));
    EXPECT_CMD(&g_redis, "1", "SCARD ihc:hw:{dev-e}:sessions");
    assert_true(TH_WAIT(key_gone(&g_redis, "ihc:session:{dev-e}:e1") &&
                            key_gone(&g_redis, "ihc:session:{dev-f}:e2"),
                        5000));
    EXPECT_CMD(&g_redis, "1", "SCARD ihc:hw:{dev-e}:sessions"); /* the set still names it */

    ihc_store_session_rec *recs = NULL;
    size_t n = 9;
    TH_PASS(ihc_store_sessions_list(f->st, "dev-e", &recs, &n));
    assert_int_equal(n, 0);
    ihc_store_sessions_free(recs, n);
    EXPECT_CMD(&g_redis, "0", "SCARD ihc:hw:{dev-e}:sessions");

    EXPECT_CMD(&g_redis, "1", "SCARD ihc:hw:{dev-f}:sessions");
    TH_PASS(ihc_store_sessions_list(f->st, NULL, &recs, &n));
    assert_int_equal(n, 0);
    ihc_store_sessions_free(recs, n);
    EXPECT_CMD(&g_redis, "0", "SCARD ihc:hw:{dev-f}:sessions");

    /* More gone sessions than one command's arguments hold, around one that lives on: all
     * are pruned (several SREMs in one round trip), the live one is listed and kept. */
    ihc_store_opts o2 = {.url = g_redis.url, .session_ttl_s = 300};
    TH_PASS(ihc_store_open(&f->st2, &o2));
    ihc_store_session keep = {"keep", "dev-g", "ag", "active", 1, 1, 1, NULL, false};
    TH_PASS(ihc_store_session_put(f->st2, &keep));
    char sid[75][16];
    TH_PASS(ihc_store_pipeline_begin(f->st));
    for (int i = 0; i < 75; i++) {
        snprintf(sid[i], sizeof(sid[i]), "g%02d", i);
        ihc_store_session g = {sid[i], "dev-g", "ag", "active", 1, 1, 1, NULL, false};
        TH_PASS(ihc_store_session_put(f->st, &g));
    }
    TH_PASS(ihc_store_pipeline_exec(f->st));
    EXPECT_CMD(&g_redis, "76", "SCARD ihc:hw:{dev-g}:sessions");
    /* expiry is sampled: wait until every hash is gone, not only some */
    assert_true(TH_WAIT(redis_count(&g_redis, "ihc:session:{dev-g}:g*") == 0, 10000));
    TH_PASS(ihc_store_sessions_list(f->st, "dev-g", &recs, &n));
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].session_id, "keep");
    ihc_store_sessions_free(recs, n);
    EXPECT_CMD(&g_redis, "keep", "SMEMBERS ihc:hw:{dev-g}:sessions");
}

/* -------------------------------------------------------------- epochs ---- */

/* Listing every session reads the hardware_ids' sets a chunk at a time: 600 hardware_ids (more
 * than two chunks) with a session each, some of whose hashes are gone, in every chunk; the
 * live ones are all listed once, the gone ones leave their sets. */
static void test_store_sessions_many_hws(void **state)
{
    fixture *f = *state;
    f->st = open_store(g_redis.url, 2000, NULL);
    char sid[16], hw[16];
    TH_PASS(ihc_store_pipeline_begin(f->st));
    for (int i = 0; i < 600; i++) {
        snprintf(sid, sizeof(sid), "m%03d", i);
        snprintf(hw, sizeof(hw), "hw-%03d", i);
        ihc_store_session m = {sid, hw, "ag", "active", 1, i, i, NULL, false};
        TH_PASS(ihc_store_session_put(f->st, &m));
    }
    TH_PASS(ihc_store_pipeline_exec(f->st));
    for (int i = 0; i < 600; i += 7) { /* as if expired: the hash goes, the set still names it */
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "DEL ihc:session:{hw-%03d}:m%03d", i, i);
        EXPECT_CMD(&g_redis, "1", cmd);
    }
    ihc_store_session_rec *recs = NULL;
    size_t n = 0;
    TH_PASS(ihc_store_sessions_list(f->st, NULL, &recs, &n));
    assert_int_equal(n, 600 - 86);
    bool seen[600] = {false};
    for (size_t k = 0; k < n; k++) {
        int i = atoi(recs[k].session_id + 1);
        assert_true(i >= 0 && i < 600 && i % 7 != 0 && !seen[i]);
        seen[i] = true;
        snprintf(hw, sizeof(hw), "hw-%03d", i);
        assert_string_equal(recs[k].hw, hw);
        assert_int_equal(recs[k].created_ms, i);
    }
    ihc_store_sessions_free(recs, n);
    EXPECT_CMD(&g_redis, "0", "SCARD ihc:hw:{hw-000}:sessions");
    EXPECT_CMD(&g_redis, "0", "SCARD ihc:hw:{hw-595}:sessions");
    EXPECT_CMD(&g_redis, "1", "SCARD ihc:hw:{hw-596}:sessions");
}

static void test_store_epochs(void **state)
{
    fixture *f = *state;
    f->st = open_store(g_redis.url, 1000, NULL);
    uint64_t e = 99;
    TH_PASS(ihc_store_epoch_get(f->st, "dev-1", &e));
    assert_int_equal(e, 0);
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-1", 5));
    TH_PASS(ihc_store_epoch_get(f->st, "dev-1", &e));
    assert_int_equal(e, 5);
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-1", 3)); /* never lowers */
    TH_PASS(ihc_store_epoch_get(f->st, "dev-1", &e));
    assert_int_equal(e, 5);
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-1", 10)); /* longer decimal, larger */
    TH_PASS(ihc_store_epoch_get(f->st, "dev-1", &e));
    assert_int_equal(e, 10);
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-1", 9));
    TH_PASS(ihc_store_epoch_get(f->st, "dev-1", &e));
    assert_int_equal(e, 10);
    EXPECT_CMD(&g_redis, "10", "GET ihc:hw:{dev-1}:epoch");

    /* Exact at the top of the range (Lua numbers are doubles; the script compares text). */
    TH_PASS(ihc_store_epoch_raise(f->st, "big", UINT64_MAX - 1));
    TH_PASS(ihc_store_epoch_raise(f->st, "big", UINT64_MAX - 2));
    TH_PASS(ihc_store_epoch_get(f->st, "big", &e));
    assert_true(e == UINT64_MAX - 1);
    TH_PASS(ihc_store_epoch_raise(f->st, "big", UINT64_MAX));
    TH_PASS(ihc_store_epoch_get(f->st, "big", &e));
    assert_true(e == UINT64_MAX);

    /* Foreign data is replaced by a raise, and skipped by the listing. */
    EXPECT_CMD(&g_redis, "OK", "SET ihc:hw:{junk}:epoch abc");
    TH_FAIL(ihc_store_epoch_get(f->st, "junk", &e), IHC_EREDIS);
    ihc_store_epoch_rec *recs = NULL;
    size_t n = 0;
    TH_PASS(ihc_store_epochs_list(f->st, &recs, &n));
    assert_int_equal(n, 2);
    assert_string_equal(recs[0].hw, "big");
    assert_true(recs[0].epoch == UINT64_MAX);
    assert_string_equal(recs[1].hw, "dev-1");
    assert_int_equal(recs[1].epoch, 10);
    ihc_store_epochs_free(recs, n);
    TH_PASS(ihc_store_epoch_raise(f->st, "junk", 2));
    TH_PASS(ihc_store_epoch_get(f->st, "junk", &e));
    assert_int_equal(e, 2);

    /* Many hardware ids: SCAN spans several cursors. */
    char hw[32];
    TH_PASS(ihc_store_pipeline_begin(f->st));
    for (int i = 0; i < 2500; i++) {
        snprintf(hw, sizeof(hw), "hw-%04d", i);
        TH_PASS(ihc_store_epoch_raise(f->st, hw, (uint64_t)i + 1));
    }
    TH_PASS(ihc_store_pipeline_exec(f->st));
    TH_PASS(ihc_store_epochs_list(f->st, &recs, &n));
    assert_int_equal(n, 2503);
    for (size_t i = 0; i < n; i++)
        if (strncmp(recs[i].hw, "hw-", 3) == 0)
            assert_int_equal(recs[i].epoch, (uint64_t)atoi(recs[i].hw + 3) + 1);
    ihc_store_epochs_free(recs, n);

    TH_FAIL(ihc_store_epoch_raise(f->st, NULL, 1), IHC_EINVAL);
    TH_FAIL(ihc_store_epoch_get(f->st, "", &e), IHC_EINVAL);
}

/* --------------------------------------------------------------- flags ---- */

static void test_store_flags(void **state)
{
    fixture *f = *state;
    f->st = open_store(g_redis.url, 1000, NULL);
    ihc_store_flags fl;
    memset(&fl, 0x55, sizeof(fl));
    TH_PASS(ihc_store_flags_get(f->st, &fl)); /* missing hash: zeros */
    assert_false(fl.global_interrupt_flag);
    assert_string_equal(fl.interrupt_hardware_id, "");
    assert_int_equal(fl.set_ms, 0);
    assert_string_equal(fl.reason, "");

    ihc_store_flags set = {.global_interrupt_flag = true, .set_ms = 1234567};
    strcpy(set.interrupt_hardware_id, "*");
    memset(set.reason, 'r', sizeof(set.reason) - 1); /* the longest reason */
    set.reason[sizeof(set.reason) - 1] = '\0';
    TH_PASS(ihc_store_flags_set(f->st, &set));
    EXPECT_CMD(&g_redis, "1", "HGET ihc:flags global_interrupt_flag");
    EXPECT_CMD(&g_redis, "*", "HGET ihc:flags interrupt_hardware_id");
    EXPECT_CMD(&g_redis, "1234567", "HGET ihc:flags set_ms");
    TH_PASS(ihc_store_flags_get(f->st, &fl));
    assert_true(fl.global_interrupt_flag);
    assert_string_equal(fl.interrupt_hardware_id, "*");
    assert_int_equal(fl.set_ms, 1234567);
    assert_string_equal(fl.reason, set.reason);

    /* A reason longer than the struct holds (written by another tool) is cut, not overrun. */
    char big[3000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    char *ok = th_redis_cmd(&g_redis, "HSET ihc:flags reason %s", big);
    free(ok);
    TH_PASS(ihc_store_flags_get(f->st, &fl));
    assert_int_equal(strlen(fl.reason), sizeof(fl.reason) - 1);

    TH_PASS(ihc_store_flags_reset(f->st));
    EXPECT_CMD(&g_redis, "0", "HGET ihc:flags global_interrupt_flag");
    TH_PASS(ihc_store_flags_get(f->st, &fl));
    assert_false(fl.global_interrupt_flag);
    assert_string_equal(fl.interrupt_hardware_id, "");
    assert_int_equal(fl.set_ms, 0);
    assert_string_equal(fl.reason, "");
    TH_FAIL(ihc_store_flags_set(f->st, NULL), IHC_EINVAL);
}

/* -------------------------------------------------------------- agents ---- */

static const ihc_store_agent_rec *find_agent(const ihc_store_agent_rec *recs, size_t n,
                                             const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(recs[i].agent_id, id) == 0)
            return &recs[i];
    return NULL;
}

static void test_store_agents(void **state)
{
    fixture *f = *state;
    f->st = open_store(g_redis.url, 1000, NULL);
    ihc_store_agent a1 = {"node-a:1", "node-a", 1, "[\"tts\"]", "[\"s1\"]", 100, 200};
    ihc_store_agent a2 = {"node-b:2", "node-b", 2, NULL, NULL, 300, 400};
    TH_PASS(ihc_store_agent_put(f->st, &a1));
    TH_PASS(ihc_store_agent_put(f->st, &a2));
    EXPECT_CMD(&g_redis, "node-a", "HGET ihc:agent:node-a:1 node");
    EXPECT_CMD(&g_redis, "1", "SISMEMBER ihc:agents node-b:2");
    char *ttl = th_redis_cmd(&g_redis, "TTL ihc:agent:node-a:1");
    assert_true(ttl && atoi(ttl) > 0 && atoi(ttl) <= 10);
    free(ttl);

    ihc_store_agent_rec *recs = NULL;
    size_t n = 0;
    TH_PASS(ihc_store_agents_list(f->st, &recs, &n));
    assert_int_equal(n, 2);
    const ihc_store_agent_rec *r = find_agent(recs, n, "node-a:1");
    assert_non_null(r);
    assert_string_equal(r->node, "node-a");
    assert_int_equal(r->pid, 1);
    assert_string_equal(r->modules, "[\"tts\"]");
    assert_string_equal(r->sessions, "[\"s1\"]");
    assert_int_equal(r->started_ms, 100);
    assert_int_equal(r->last_seen_ms, 200);
    r = find_agent(recs, n, "node-b:2");
    assert_non_null(r);
    assert_string_equal(r->modules, "[]");
    ihc_store_agents_free(recs, n);

    char *ok = th_redis_cmd(&g_redis, "EXPIRE ihc:agent:node-a:1 3");
    free(ok);
    TH_PASS(ihc_store_agent_touch(f->st, "node-a:1", 999));
    EXPECT_CMD(&g_redis, "999", "HGET ihc:agent:node-a:1 last_seen_ms");
    ttl = th_redis_cmd(&g_redis, "TTL ihc:agent:node-a:1");
    assert_true(ttl && atoi(ttl) > 3); /* renewed to agent_ttl */
    free(ttl);

    /* Touching an unknown agent creates nothing. */
    TH_PASS(ihc_store_agent_touch(f->st, "ghost", 5));
    EXPECT_CMD(&g_redis, "0", "EXISTS ihc:agent:ghost");

    TH_PASS(ihc_store_agent_del(f->st, "node-b:2"));
    EXPECT_CMD(&g_redis, "0", "EXISTS ihc:agent:node-b:2");
    EXPECT_CMD(&g_redis, "0", "SISMEMBER ihc:agents node-b:2");
    TH_PASS(ihc_store_agents_list(f->st, &recs, &n));
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].agent_id, "node-a:1");
    assert_int_equal(recs[0].last_seen_ms, 999);
    ihc_store_agents_free(recs, n);
    TH_PASS(ihc_store_agent_del(f->st, "node-b:2")); /* idempotent */
    TH_FAIL(ihc_store_agent_put(f->st, NULL), IHC_EINVAL);
    TH_FAIL(ihc_store_agent_touch(f->st, "", 1), IHC_EINVAL);
}

static void test_store_agent_expiry(void **state)
{
    fixture *f = *state;
    ihc_store_opts o = {.url = g_redis.url, .agent_ttl_s = 1};
    TH_PASS(ihc_store_open(&f->st, &o));
    ihc_store_agent a = {"short", "n", 7, "[]", "[]", 1, 1};
    ihc_store_agent b = {"long", "n", 8, "[]", "[]", 1, 1};
    TH_PASS(ihc_store_agent_put(f->st, &a));
    TH_PASS(ihc_store_agent_put(f->st, &b));
    char *ok = th_redis_cmd(&g_redis, "PERSIST ihc:agent:long");
    free(ok);
    assert_true(TH_WAIT(key_gone(&g_redis, "ihc:agent:short"), 5000));
    EXPECT_CMD(&g_redis, "1", "SISMEMBER ihc:agents short");
    ihc_store_agent_rec *recs = NULL;
    size_t n = 0;
    TH_PASS(ihc_store_agents_list(f->st, &recs, &n));
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].agent_id, "long");
    assert_int_equal(recs[0].pid, 8);
    ihc_store_agents_free(recs, n);
    EXPECT_CMD(&g_redis, "0", "SISMEMBER ihc:agents short");
    EXPECT_CMD(&g_redis, "1", "SISMEMBER ihc:agents long");
}

/* ----------------------------------------------------------------- log ---- */

static void test_store_log(void **state)
{
    fixture *f = *state;
    ihc_store_opts o = {.url = g_redis.url, .log_max = 10};
    TH_PASS(ihc_store_open(&f->st, &o));
    uint64_t n = 99;
    TH_PASS(ihc_store_log_len(f->st, &n));
    assert_int_equal(n, 0);
    ihc_store_log_entry e = {.id = 17,
                             .hw = "dev-1",
                             .success = true,
                             .total_time_ms = 12.5,
                             .modules = "[\"text_processing\"]",
                             .sessions = "[\"s1\",\"s2\"]",
                             .agents_missing = NULL,
                             .reason = "user stop",
                             .ts_ms = 1700000000000};
    TH_PASS(ihc_store_log_append(f->st, &e));
    TH_PASS(ihc_store_log_len(f->st, &n));
    assert_int_equal(n, 1);
    char *x = th_redis_cmd(&g_redis, "XRANGE ihc:interrupts - +");
    assert_non_null(x);
    bool fields = strstr(x, "\nid\n17\nhardware_id\ndev-1\nsuccess\n1\ntotal_time_ms\n12.500\n"
                            "modules\n[\"text_processing\"]\nsessions\n[\"s1\",\"s2\"]\n"
                            "agents_missing\n[]\nreason\nuser stop\nts_ms\n1700000000000") != NULL;
    free(x);
    assert_true(fields);
    /* the same interrupt again (a batch repeated after a timeout): nothing more is added */
    TH_PASS(ihc_store_log_append(f->st, &e));
    TH_PASS(ihc_store_log_len(f->st, &n));
    assert_int_equal(n, 1);
    EXPECT_CMD(&g_redis, "1", "HGET ihc:stats total_interrupts");
    EXPECT_CMD(&g_redis, "1", "HGET ihc:stats successful_interrupts");

    e.success = false;
    e.reason = NULL;
    TH_PASS(ihc_store_pipeline_begin(f->st));
    for (int i = 0; i < 500; i++) {
        e.id = 100 + (uint64_t)i;
        TH_PASS(ihc_store_log_append(f->st, &e));
    }
    TH_PASS(ihc_store_pipeline_exec(f->st));
    TH_PASS(ihc_store_log_len(f->st, &n));
    /* MAXLEN ~ trims whole stream nodes (100 entries by default). */
    assert_true(n >= 10 && n <= 110);

    e.total_time_ms = NAN;
    TH_FAIL(ihc_store_log_append(f->st, &e), IHC_EINVAL);
    assert_non_null(strstr(ihc_store_errstr(f->st), "total_time_ms"));
    e.total_time_ms = 1;
    e.hw = NULL;
    TH_FAIL(ihc_store_log_append(f->st, &e), IHC_EINVAL);
}

/* ------------------------------------------------------ stats and seq ---- */

static void test_store_stats_seq(void **state)
{
    fixture *f = *state;
    f->st = open_store(g_redis.url, 1000, NULL);
    int64_t v = 9;
    TH_PASS(ihc_store_stats_get(f->st, "total_interrupts", &v));
    assert_int_equal(v, 0);
    for (int i = 0; i < 3; i++)
        TH_PASS(ihc_store_stats_incr(f->st, "total_interrupts", 1));
    TH_PASS(ihc_store_stats_incr(f->st, "total_interrupts", -1));
    TH_PASS(ihc_store_stats_incr(f->st, "sessions_created", 40));
    TH_PASS(ihc_store_stats_get(f->st, "total_interrupts", &v));
    assert_int_equal(v, 2);
    TH_PASS(ihc_store_stats_get(f->st, "sessions_created", &v));
    assert_int_equal(v, 40);
    EXPECT_CMD(&g_redis, "40", "HGET ihc:stats sessions_created");
    /* numbers are formatted exactly at both ends of the range */
    TH_PASS(ihc_store_stats_incr(f->st, "low", INT64_MIN));
    EXPECT_CMD(&g_redis, "-9223372036854775808", "HGET ihc:stats low");
    TH_PASS(ihc_store_stats_incr(f->st, "high", INT64_MAX));
    EXPECT_CMD(&g_redis, "9223372036854775807", "HGET ihc:stats high");
    TH_PASS(ihc_store_stats_incr(f->st, "zero", 0));
    EXPECT_CMD(&g_redis, "0", "HGET ihc:stats zero");

    char *ok = th_redis_cmd(&g_redis, "HSET ihc:stats bogus notanumber");
    free(ok);
    TH_FAIL(ihc_store_stats_get(f->st, "bogus", &v), IHC_EREDIS);
    TH_FAIL(ihc_store_stats_incr(f->st, "bogus", 1), IHC_EREDIS);
    assert_non_null(strstr(ihc_store_errstr(f->st), "not an integer"));
    TH_PASS(ihc_store_ping(f->st)); /* an error reply leaves the connection usable */
    assert_string_equal(ihc_store_errstr(f->st), "");

    uint64_t s = 9;
    TH_PASS(ihc_store_seq_get(f->st, &s));
    assert_int_equal(s, 0);
    TH_PASS(ihc_store_seq_raise(f->st, 10));
    TH_PASS(ihc_store_seq_raise(f->st, 4));
    TH_PASS(ihc_store_seq_get(f->st, &s));
    assert_int_equal(s, 10);
    TH_PASS(ihc_store_seq_raise(f->st, 100));
    TH_PASS(ihc_store_seq_get(f->st, &s));
    assert_int_equal(s, 100);
    EXPECT_CMD(&g_redis, "100", "HGET ihc:seq interrupt_id");
    TH_FAIL(ihc_store_stats_incr(f->st, NULL, 1), IHC_EINVAL);
}

/* ---------------------------------------------------------- pipelining ---- */

/* A new session is counted once in ihc:stats sessions_created, whether written alone or in a
 * pipeline, and however often the write is repeated (a retry after a lost answer); an
 * update of a session is never counted. */
static void test_store_sessions_created(void **state)
{
    fixture *f = *state;
    f->st = open_store(g_redis.url, 1000, NULL);
    ihc_store_session s = {"c1", "dev-c", "ag", "active", 1, 10, 10, NULL, true};
    TH_PASS(ihc_store_session_put(f->st, &s));
    TH_PASS(ihc_store_session_put(f->st, &s)); /* repeated */
    EXPECT_CMD(&g_redis, "1", "HGET ihc:stats sessions_created");
    s.session_id = "c2";
    s.is_new = false;
    TH_PASS(ihc_store_session_put(f->st, &s));
    EXPECT_CMD(&g_redis, "1", "HGET ihc:stats sessions_created");
    EXPECT_CMD(&g_redis, "1", "SISMEMBER ihc:hw:{dev-c}:sessions c2");

    TH_PASS(ihc_store_pipeline_begin(f->st));
    char sid[16];
    for (int i = 0; i < 2; i++) /* the second round repeats the first */
        for (int k = 3; k < 6; k++) {
            snprintf(sid, sizeof(sid), "c%d", k);
            ihc_store_session n = {sid, "dev-c", "ag", "active", 1, 10, 10, "{}", true};
            TH_PASS(ihc_store_session_put(f->st, &n));
        }
    TH_PASS(ihc_store_pipeline_exec(f->st));
    EXPECT_CMD(&g_redis, "4", "HGET ihc:stats sessions_created");
    EXPECT_CMD(&g_redis, "5", "SCARD ihc:hw:{dev-c}:sessions");
    char *ttl = th_redis_cmd(&g_redis, "TTL ihc:session:{dev-c}:c5");
    assert_true(ttl && atoi(ttl) > 250 && atoi(ttl) <= 300);
    free(ttl);

    /* a session that ended elsewhere and expired: its state is not written back */
    EXPECT_CMD(&g_redis, "1", "DEL ihc:session:{dev-c}:c4");
    TH_PASS(ihc_store_session_state(f->st, "dev-c", "c4", "interrupted", 20));
    EXPECT_CMD(&g_redis, "0", "EXISTS ihc:session:{dev-c}:c4");
    EXPECT_CMD(&g_redis, "0", "SISMEMBER ihc:hw:{dev-c}:sessions c4");
    TH_PASS(ihc_store_session_state(f->st, "dev-c", "c3", "interrupted", 20));
    EXPECT_CMD(&g_redis, "interrupted", "HGET ihc:session:{dev-c}:c3 state");
    EXPECT_CMD(&g_redis, "ag", "HGET ihc:session:{dev-c}:c3 agent_id");
}

static void test_store_pipeline(void **state)
{
    fixture *f = *state;
    f->st = open_store(g_redis.url, 2000, NULL);
    TH_FAIL(ihc_store_pipeline_exec(f->st), IHC_EINVAL); /* none open */
    TH_PASS(ihc_store_pipeline_begin(f->st));
    TH_FAIL(ihc_store_pipeline_begin(f->st), IHC_EINVAL);
    TH_PASS(ihc_store_pipeline_exec(f->st)); /* empty */

    TH_PASS(ihc_store_pipeline_begin(f->st));
    char sid[32];
    for (int i = 0; i < 2000; i++)
        TH_PASS(ihc_store_stats_incr(f->st, "total_interrupts", 1));
    for (int i = 0; i < 300; i++) {
        snprintf(sid, sizeof(sid), "p%03d", i);
        ihc_store_session s = {sid, "dev-p", "ag", "active", 1, i, i, "{}", false};
        TH_PASS(ihc_store_session_put(f->st, &s));
    }
    for (int i = 0; i < 100; i++) {
        snprintf(sid, sizeof(sid), "p%03d", i);
        TH_PASS(ihc_store_session_state(f->st, "dev-p", sid, "done", 9));
    }
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-p", 4));
    TH_PASS(ihc_store_seq_raise(f->st, 77));
    ihc_store_agent a = {"pa", "n", 1, "[]", "[]", 1, 1};
    TH_PASS(ihc_store_agent_put(f->st, &a));
    TH_PASS(ihc_store_agent_touch(f->st, "pa", 5));
    ihc_store_flags fl = {.global_interrupt_flag = true};
    TH_PASS(ihc_store_flags_set(f->st, &fl));
    ihc_store_log_entry e = {.id = 1, .hw = "dev-p"};
    TH_PASS(ihc_store_log_append(f->st, &e));
    /* Nothing has been sent yet. */
    EXPECT_CMD(&g_redis, "(nil)", "HGET ihc:stats total_interrupts");
    /* Reads are refused inside a pipeline. */
    int64_t v;
    uint64_t u;
    ihc_store_session_rec *recs = NULL;
    size_t n = 0;
    TH_FAIL(ihc_store_ping(f->st), IHC_EINVAL);
    TH_FAIL(ihc_store_stats_get(f->st, "total_interrupts", &v), IHC_EINVAL);
    TH_FAIL(ihc_store_sessions_list(f->st, NULL, &recs, &n), IHC_EINVAL);
    TH_FAIL(ihc_store_flags_get(f->st, &fl), IHC_EINVAL);
    TH_FAIL(ihc_store_seq_get(f->st, &u), IHC_EINVAL);
    TH_PASS(ihc_store_pipeline_exec(f->st));

    TH_PASS(ihc_store_stats_get(f->st, "total_interrupts", &v));
    assert_int_equal(v, 2001); /* the log entry counts its interrupt */
    TH_PASS(ihc_store_sessions_list(f->st, "dev-p", &recs, &n));
    assert_int_equal(n, 200);
    ihc_store_sessions_free(recs, n);
    TH_PASS(ihc_store_epoch_get(f->st, "dev-p", &u));
    assert_int_equal(u, 4);
    TH_PASS(ihc_store_seq_get(f->st, &u));
    assert_int_equal(u, 77);
    EXPECT_CMD(&g_redis, "5", "HGET ihc:agent:pa last_seen_ms");
    EXPECT_CMD(&g_redis, "1", "HGET ihc:flags global_interrupt_flag");
    TH_PASS(ihc_store_log_len(f->st, &u));
    assert_int_equal(u, 1);

    /* An error reply in the middle: every reply is read, the first error is returned. */
    char *ok = th_redis_cmd(&g_redis, "HSET ihc:stats bogus notanumber");
    free(ok);
    TH_PASS(ihc_store_pipeline_begin(f->st));
    TH_PASS(ihc_store_stats_incr(f->st, "a", 1));
    TH_PASS(ihc_store_stats_incr(f->st, "bogus", 1));
    TH_PASS(ihc_store_stats_incr(f->st, "b", 1));
    TH_FAIL(ihc_store_pipeline_exec(f->st), IHC_EREDIS);
    assert_non_null(strstr(ihc_store_errstr(f->st), "not an integer"));
    EXPECT_CMD(&g_redis, "1", "HGET ihc:stats a");
    EXPECT_CMD(&g_redis, "1", "HGET ihc:stats b");
    TH_PASS(ihc_store_ping(f->st)); /* replies are in step */
    TH_PASS(ihc_store_stats_get(f->st, "a", &v));
    assert_int_equal(v, 1);
}

/* Scripts survive SCRIPT FLUSH: EVALSHA falls back to EVAL. */
static void test_store_script_flush(void **state)
{
    fixture *f = *state;
    f->st = open_store(g_redis.url, 1000, NULL);
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-s", 5));
    EXPECT_CMD(&g_redis, "OK", "SCRIPT FLUSH");
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-s", 9));
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-s", 7));
    uint64_t e;
    TH_PASS(ihc_store_epoch_get(f->st, "dev-s", &e));
    assert_int_equal(e, 9);

    /* Inside a pipeline the NOSCRIPT only shows at exec; the next call recovers. */
    EXPECT_CMD(&g_redis, "OK", "SCRIPT FLUSH");
    TH_PASS(ihc_store_pipeline_begin(f->st));
    TH_PASS(ihc_store_seq_raise(f->st, 3));
    TH_FAIL(ihc_store_pipeline_exec(f->st), IHC_EREDIS);
    assert_non_null(strstr(ihc_store_errstr(f->st), "NOSCRIPT"));
    TH_PASS(ihc_store_pipeline_begin(f->st));
    TH_PASS(ihc_store_seq_raise(f->st, 3));
    TH_PASS(ihc_store_pipeline_exec(f->st));
    TH_PASS(ihc_store_pipeline_begin(f->st));
    TH_PASS(ihc_store_seq_raise(f->st, 4)); /* EVALSHA again */
    TH_PASS(ihc_store_pipeline_exec(f->st));
    uint64_t s;
    TH_PASS(ihc_store_seq_get(f->st, &s));
    assert_int_equal(s, 4);
}

/* ---------------------------------------------------------- AUTH, SELECT ---- */

static void test_store_auth(void **state)
{
    fixture *f = *state;
    f->own.password = "s3cret";
    assert_int_equal(th_redis_start(&f->own), 0);
    f->st = open_store(f->own.url, 1000, "ihc-auth");
    assert_true(ihc_store_connected(f->st));
    TH_PASS(ihc_store_stats_incr(f->st, "x", 1));
    EXPECT_CMD(&f->own, "1", "HGET ihc:stats x");

    /* Wrong password: opens, stays disconnected, says why, fails fast. */
    char url[256];
    snprintf(url, sizeof(url), "redis://:wrong@127.0.0.1:%d/0", f->own.port);
    f->st2 = open_store(url, 1000, NULL);
    assert_false(ihc_store_connected(f->st2));
    assert_non_null(strstr(ihc_store_errstr(f->st2), "WRONGPASS"));
    assert_null(strstr(ihc_store_errstr(f->st2), "wrong")); /* the password is never shown */
    FAST_FAIL(ihc_store_ping(f->st2));
    assert_true(TH_WAIT(ihc_store_ping(f->st2) == IHC_ENOTCONN &&
                            strstr(ihc_store_errstr(f->st2), "WRONGPASS"),
                        2000));
    ihc_store_close(f->st2);

    /* No password: connected, but commands get NOAUTH. */
    f->st2 = open_store(url_of(f->own.port, 0), 1000, NULL);
    TH_FAIL(ihc_store_ping(f->st2), IHC_EREDIS);
    assert_non_null(strstr(ihc_store_errstr(f->st2), "NOAUTH"));
    ihc_store_close(f->st2);

    /* Redis 6 ACL user with a password that needs %-escapes. */
    EXPECT_CMD(&f->own, "OK", "ACL SETUSER bob on >p@ss:w/rd ~* &* +@all");
    snprintf(url, sizeof(url), "redis://bob:p%%40ss%%3Aw%%2Frd@127.0.0.1:%d/0", f->own.port);
    f->st2 = open_store(url, 1000, "ihc-bob");
    assert_true(ihc_store_connected(f->st2));
    TH_PASS(ihc_store_ping(f->st2));
    assert_true(client_list_has(&f->own, "name=ihc-bob"));
    char *list = th_redis_cmd(&f->own, "CLIENT LIST");
    assert_non_null(list);
    char *line = strstr(list, "name=ihc-bob");
    bool bob = line && strstr(line, "user=bob");
    free(list);
    assert_true(bob);
    ihc_store_close(f->st2);
    snprintf(url, sizeof(url), "redis://bob:nope@127.0.0.1:%d/0", f->own.port);
    f->st2 = open_store(url, 1000, NULL);
    assert_false(ihc_store_connected(f->st2));
    assert_non_null(strstr(ihc_store_errstr(f->st2), "AUTH"));
}

static void test_store_select_db(void **state)
{
    fixture *f = *state;
    f->st = open_store(url_of(g_redis.port, 3), 1000, "ihc-db3");
    TH_PASS(ihc_store_stats_incr(f->st, "total_interrupts", 5));
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-3", 8));
    EXPECT_CMD(&g_redis, "(nil)", "HGET ihc:stats total_interrupts"); /* db 0 is untouched */
    assert_true(client_list_has(&g_redis, "db=3"));
    f->st2 = open_store(url_of(g_redis.port, 0), 1000, NULL);
    int64_t v = -1;
    TH_PASS(ihc_store_stats_get(f->st2, "total_interrupts", &v));
    assert_int_equal(v, 0);
    ihc_store_close(f->st2);
    f->st2 = open_store(url_of(g_redis.port, 3), 1000, NULL);
    TH_PASS(ihc_store_stats_get(f->st2, "total_interrupts", &v));
    assert_int_equal(v, 5);
    uint64_t e;
    TH_PASS(ihc_store_epoch_get(f->st2, "dev-3", &e));
    assert_int_equal(e, 8);
    ihc_store_close(f->st2);
    /* A db that does not exist: a clean setup failure. */
    f->st2 = open_store(url_of(g_redis.port, 999), 1000, NULL);
    assert_false(ihc_store_connected(f->st2));
    assert_non_null(strstr(ihc_store_errstr(f->st2), "SELECT"));
    TH_FAIL(ihc_store_ping(f->st2), IHC_ENOTCONN);
}

/* -------------------------------------------------- kill, restart, hang ---- */

/* CLIENT LIST shows our connection with its name on the expected db. */
static bool client_is(const th_redis *r, const char *name, int db)
{
    char *list = th_redis_cmd(r, "CLIENT LIST");
    if (!list)
        return false;
    char want_name[128], want_db[32];
    snprintf(want_name, sizeof(want_name), "name=%s ", name);
    snprintf(want_db, sizeof(want_db), " db=%d ", db);
    bool ok = false;
    for (char *line = strtok(list, "\n"); line && !ok; line = strtok(NULL, "\n"))
        ok = strstr(line, want_name) && strstr(line, want_db);
    free(list);
    return ok;
}

static void test_store_redis_killed_and_restarted(void **state)
{
    fixture *f = *state;
    assert_int_equal(th_redis_start(&f->own), 0);
    char url[256];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/2", f->own.port);
    f->st = open_store(url, 300, "ihc-restart");
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-k", 3));
    assert_true(client_is(&f->own, "ihc-restart", 2));

    th_redis_kill(&f->own);
    ihc_store_session s = {"k1", "dev-k", "ag", "active", 1, 1, 1, NULL, false};
    FAST_FAIL(ihc_store_session_put(f->st, &s));
    assert_false(ihc_store_connected(f->st));
    /* While it is down, calls fail fast and the backoff spaces the connection attempts. */
    bool backoff_seen = false;
    uint64_t t0 = th_now_ms_();
    while (elapsed_ms(t0) < 400) {
        FAST_FAIL(ihc_store_stats_incr(f->st, "x", 1));
        FAST_FAIL(ihc_store_epoch_raise(f->st, "dev-k", 4));
        uint64_t u;
        FAST_FAIL(ihc_store_epoch_get(f->st, "dev-k", &u));
        if (strstr(ihc_store_errstr(f->st), "next attempt"))
            backoff_seen = true;
    }
    assert_true(backoff_seen);
    FAST_FAIL(ihc_store_pipeline_begin(f->st));
    FAST_FAIL(ihc_store_session_put(f->st, &s));
    FAST_FAIL(ihc_store_pipeline_exec(f->st));

    assert_int_equal(th_redis_start(&f->own), 0); /* same port */
    assert_true(TH_WAIT(ihc_store_ping(f->st) == IHC_OK, 6000));
    assert_true(ihc_store_connected(f->st));
    /* Settings re-applied on the new connection: name and db, and the scripts. */
    assert_true(client_is(&f->own, "ihc-restart", 2));
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-k", 6));
    TH_PASS(ihc_store_epoch_raise(f->st, "dev-k", 5));
    TH_PASS(ihc_store_session_put(f->st, &s));
    uint64_t e;
    TH_PASS(ihc_store_epoch_get(f->st, "dev-k", &e)); /* replies still in step */
    assert_int_equal(e, 6);
    f->st2 = open_store(url, 1000, NULL);
    TH_PASS(ihc_store_epoch_get(f->st2, "dev-k", &e));
    assert_int_equal(e, 6);
    ihc_store_session_rec *recs = NULL;
    size_t n = 0;
    TH_PASS(ihc_store_sessions_list(f->st2, "dev-k", &recs, &n));
    assert_int_equal(n, 1);
    ihc_store_sessions_free(recs, n);
    EXPECT_CMD(&f->own, "(nil)", "GET ihc:hw:{dev-k}:epoch"); /* db 0 untouched */
}

/* Redis killed between pipeline begin and exec, with megabytes queued: the write fails
 * (EPIPE/ECONNRESET) without a SIGPIPE killing the test. */
static void test_store_redis_killed_mid_pipeline(void **state)
{
    fixture *f = *state;
    assert_int_equal(th_redis_start(&f->own), 0);
    f->st = open_store(f->own.url, 500, NULL);
    TH_PASS(ihc_store_ping(f->st));
    TH_PASS(ihc_store_pipeline_begin(f->st));
    th_redis_kill(&f->own);
    char sid[32], data[512];
    memset(data, 'd', sizeof(data) - 1);
    data[sizeof(data) - 1] = '\0';
    for (int i = 0; i < 20000; i++) {
        snprintf(sid, sizeof(sid), "m%05d", i);
        ihc_store_session s = {sid, "dev-m", "ag", "active", 1, 1, 1, data, false};
        TH_PASS(ihc_store_session_put(f->st, &s));
    }
    uint64_t t0 = th_now_ms_();
    int rc = ihc_store_pipeline_exec(f->st);
    assert_true(rc == IHC_ENOTCONN || rc == IHC_ETIMEDOUT);
    assert_true(elapsed_ms(t0) < 2000);
    assert_false(ihc_store_connected(f->st));
    FAST_FAIL(ihc_store_ping(f->st));
}

static void test_store_redis_hung(void **state)
{
    fixture *f = *state;
    assert_int_equal(th_redis_start(&f->own), 0);
    f->st = open_store(f->own.url, 300, NULL);
    TH_PASS(ihc_store_ping(f->st));
    assert_int_equal(kill(f->own.pid, SIGSTOP), 0);

    uint64_t t0 = th_now_ms_();
    TH_FAIL(ihc_store_stats_incr(f->st, "x", 1), IHC_ETIMEDOUT);
    uint64_t dt = elapsed_ms(t0);
    if (dt < 250 || dt > 1000)
        fail_msg("timed out after %llu ms, want about 300", (unsigned long long)dt);
    assert_false(ihc_store_connected(f->st));
    assert_non_null(strstr(ihc_store_errstr(f->st), "timed out"));
    /* Reconnects to the hung server time out during setup, no later than connect + command
     * timeout; calls between attempts fail at once. */
    t0 = th_now_ms_();
    while (elapsed_ms(t0) < 800) {
        uint64_t t1 = th_now_ms_();
        int rc = ihc_store_ping(f->st);
        assert_true(rc == IHC_ETIMEDOUT || rc == IHC_ENOTCONN);
        if (elapsed_ms(t1) > 800)
            fail_msg("a call took %llu ms", (unsigned long long)elapsed_ms(t1));
    }

    assert_int_equal(kill(f->own.pid, SIGCONT), 0);
    assert_true(TH_WAIT(ihc_store_ping(f->st) == IHC_OK, 6000));
    TH_PASS(ihc_store_stats_incr(f->st, "x", 1));
}

/* ------------------------------------------------------------ unix socket ---- */

/* The password needs every kind of percent-escape a URL's user info can need. */
#define ODD_PASSWORD "p@ss:w/rd%"

/* The line of CLIENT LIST for the connection named name, malloc'd ("" when none). */
static char *client_line(const th_redis *r, const char *name)
{
    char *list = th_redis_cmd(r, "CLIENT LIST");
    char want[128];
    snprintf(want, sizeof(want), "name=%s ", name);
    char *line = NULL;
    for (char *l = list ? strtok(list, "\n") : NULL; l && !line; l = strtok(NULL, "\n"))
        if (strstr(l, want))
            line = strdup(l);
    free(list);
    return line ? line : strdup("");
}

static void test_store_unix_socket(void **state)
{
    fixture *f = *state;
    f->own.unix_socket = true;
    f->own.password = ODD_PASSWORD;
    assert_int_equal(th_redis_start(&f->own), 0);
    char enc[64], url[512];
    th_pct_encode(ODD_PASSWORD, enc, sizeof(enc));

    /* ":password" form on db 1: writes and reads through the socket */
    snprintf(url, sizeof(url), "unix://:%s@%s?db=1", enc, f->own.sock);
    f->st = open_store(url, 1000, "ihc-unix");
    assert_true(ihc_store_connected(f->st));
    ihc_store_session s = {"u-1", "dev-u", "ag", "active", 4, 10, 11, "{\"k\":1}", false};
    TH_PASS(ihc_store_session_put(f->st, &s));
    TH_PASS(ihc_store_stats_incr(f->st, "u", 3));
    ihc_store_session_rec *recs = NULL;
    size_t n = 0;
    TH_PASS(ihc_store_sessions_list(f->st, "dev-u", &recs, &n));
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].session_id, "u-1");
    assert_string_equal(recs[0].data, "{\"k\":1}");
    assert_int_equal(recs[0].epoch, 4);
    ihc_store_sessions_free(recs, n);
    char *line = client_line(&f->own, "ihc-unix");
    char want_addr[200];
    snprintf(want_addr, sizeof(want_addr), "addr=%s", f->own.sock);
    bool on_socket = strstr(line, want_addr) && strstr(line, " db=1 ");
    if (!on_socket)
        fail_msg("CLIENT LIST: \"%s\" lacks %s and db=1", line, want_addr);
    free(line);
    EXPECT_CMD(&f->own, "(nil)", "HGET ihc:stats u"); /* db 0 is untouched */

    /* db 0 through the same socket (no ?db=) */
    snprintf(url, sizeof(url), "unix://:%s@%s", enc, f->own.sock);
    f->st2 = open_store(url, 1000, NULL);
    int64_t v = -1;
    TH_PASS(ihc_store_stats_get(f->st2, "u", &v));
    assert_int_equal(v, 0);
    ihc_store_close(f->st2);

    /* "user:password" form with an ACL user holding the same odd password */
    EXPECT_CMD(&f->own, "OK", "ACL SETUSER %s on %s ~* &* +@all", "ihc", ">" ODD_PASSWORD);
    snprintf(url, sizeof(url), "unix://ihc:%s@%s?db=1", enc, f->own.sock);
    f->st2 = open_store(url, 1000, "ihc-unix-acl");
    assert_true(ihc_store_connected(f->st2));
    TH_PASS(ihc_store_stats_get(f->st2, "u", &v));
    assert_int_equal(v, 3);
    line = client_line(&f->own, "ihc-unix-acl");
    bool as_ihc = strstr(line, " user=ihc ") != NULL;
    free(line);
    assert_true(as_ihc);
    ihc_store_close(f->st2);

    /* a wrong password is refused by Redis and said so; the message names the socket */
    snprintf(url, sizeof(url), "unix://ihc:wrong@%s?db=1", f->own.sock);
    f->st2 = open_store(url, 1000, NULL);
    assert_false(ihc_store_connected(f->st2));
    assert_non_null(strstr(ihc_store_errstr(f->st2), "WRONGPASS"));
    assert_non_null(strstr(ihc_store_errstr(f->st2), f->own.sock));
    assert_null(strstr(ihc_store_errstr(f->st2), "wrong"));
}

/* Both user info forms over TCP with a password that needs escapes, for the default user
 * (requirepass) and an ACL user. */
static void test_store_auth_escaped_password(void **state)
{
    fixture *f = *state;
    f->own.password = ODD_PASSWORD;
    assert_int_equal(th_redis_start(&f->own), 0);
    /* the harness' URL: ":password" form, percent-encoded */
    assert_non_null(strstr(f->own.url, "redis://:p%40ss%3Aw%2Frd%25@"));
    f->st = open_store(f->own.url, 1000, "ihc-default");
    assert_true(ihc_store_connected(f->st));
    TH_PASS(ihc_store_stats_incr(f->st, "x", 2));
    EXPECT_CMD(&f->own, "2", "HGET ihc:stats x");

    EXPECT_CMD(&f->own, "OK", "ACL SETUSER %s on %s ~* &* +@all", "carol", ">" ODD_PASSWORD);
    char enc[64], url[256];
    snprintf(url, sizeof(url), "redis://carol:%s@127.0.0.1:%d/0",
             th_pct_encode(ODD_PASSWORD, enc, sizeof(enc)), f->own.port);
    f->st2 = open_store(url, 1000, "ihc-carol");
    assert_true(ihc_store_connected(f->st2));
    int64_t v = 0;
    TH_PASS(ihc_store_stats_get(f->st2, "x", &v));
    assert_int_equal(v, 2);
    char *line = client_line(&f->own, "ihc-carol");
    bool as_carol = strstr(line, " user=carol ") != NULL;
    free(line);
    assert_true(as_carol);
}

/* A refused URL: IHC_EINVAL, and the log line carries the parser's reason, never the
 * password. */
static void test_store_bad_url_messages(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        /* the password written without escapes: its '/' ends the authority */
        {"unix://:p@ss:w/rd%@/run/redis.sock", "unix:// takes no host"},
        {"redis://:p@ss:w/rd%@127.0.0.1:6379/0", "port must be a number"},
        {"redis://:secret@127.0.0.1:70000/0", "port must be a number in [1, 65535]"},
        {"unix://:secret@/run/redis.sock?db=one", "db must be a number"},
        {"redis://:secret%zz@127.0.0.1", "bad %-escape in the password"},
        {"rediss://:secret@127.0.0.1", "hiredis 0.14 has no TLS"},
    };
    char path[] = "/tmp/ihc-store-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(ftruncate(fd, 0), 0);
        assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
        ihc_log_setup(&(ihc_log_opts){.level = IHC_LOG_DEBUG, .fd = fd});
        ihc_store_opts o = {.url = cases[i][0]};
        ihc_store *st = NULL;
        int rc = ihc_store_open(&st, &o);
        ihc_log_setup(NULL);
        char log[1024] = "";
        ssize_t n = pread(fd, log, sizeof(log) - 1, 0);
        log[n > 0 ? n : 0] = '\0';
        if (rc != IHC_EINVAL || st)
            fail_msg("\"%s\": got %s, want IHC_EINVAL", cases[i][0], ihc_err_name(rc));
        if (!strstr(log, "bad redis url reason=") || !strstr(log, cases[i][1]))
            fail_msg("\"%s\": log \"%s\" lacks \"%s\"", cases[i][0], log, cases[i][1]);
        if (strstr(log, "secret") || strstr(log, "ss:w"))
            fail_msg("\"%s\": log \"%s\" shows the password", cases[i][0], log);
    }
    close(fd);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_store_bad_urls),
        T(test_store_down_then_up),
        T(test_store_sessions),
        T(test_store_sessions_created),
        T(test_store_session_expiry),
        T(test_store_sessions_many_hws),
        T(test_store_epochs),
        T(test_store_flags),
        T(test_store_agents),
        T(test_store_agent_expiry),
        T(test_store_log),
        T(test_store_stats_seq),
        T(test_store_pipeline),
        T(test_store_script_flush),
        T(test_store_auth),
        T(test_store_select_db),
        T(test_store_redis_killed_and_restarted),
        T(test_store_redis_killed_mid_pipeline),
        T(test_store_redis_hung),
        T(test_store_unix_socket),
        T(test_store_auth_escaped_password),
        T(test_store_bad_url_messages),
#undef T
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
