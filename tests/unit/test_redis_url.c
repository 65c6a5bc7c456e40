/* Unit tests of common/redis_url: every accepted form, every refusal with its message, the
 * percent-decoding of user info, the display forms (where, redact) and the password wipe. */
#include "harness.h"

#include "err.h"
#include "redis_url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_redis_url_tcp_forms(void **state)
{
    (void)state;
    static const struct {
        const char *url, *host;
        int port, db;
        const char *user, *password;
    } good[] = {
        {"redis://127.0.0.1:6379/0", "127.0.0.1", 6379, 0, NULL, NULL},
        {"redis://localhost", "localhost", 6379, 0, NULL, NULL},
        {"redis://localhost/", "localhost", 6379, 0, NULL, NULL},
        {"redis://db.example-1.internal:7000/15", "db.example-1.internal", 7000, 15, NULL, NULL},
        {"redis://h:65535/2147483647", "h", 65535, 2147483647, NULL, NULL},
        {"redis://[::1]:6380/1", "::1", 6380, 1, NULL, NULL},
        {"redis://[fe80::1:2]", "fe80::1:2", 6379, 0, NULL, NULL},
        {"redis://:pw@h:1/2", "h", 1, 2, NULL, "pw"},
        {"redis://pw@h", "h", 6379, 0, NULL, "pw"}, /* redis-cli reads a lone word as password */
        {"redis://bob:pw@h", "h", 6379, 0, "bob", "pw"},
        /* decoded: p@ss:w/rd% */
        {"redis://bob:p%40ss%3Aw%2Frd%25@h:6380/3", "h", 6380, 3, "bob", "p@ss:w/rd%"},
        /* the user info ends at the last '@' of the authority; ':' after the first is kept */
        {"redis://:p@ss:w@h", "h", 6379, 0, NULL, "p@ss:w"},
        {"redis://b%6Fb:%2f@[::1]", "::1", 6379, 0, "bob", "/"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ihc_redis_url u;
        char why[256] = "unset";
        int rc = ihc_redis_url_parse(good[i].url, &u, why, sizeof(why));
        if (rc != IHC_OK)
            fail_msg("%s: %s (%s)", good[i].url, ihc_err_name(rc), why);
        assert_string_equal(why, "");
        assert_string_equal(u.host, good[i].host);
        assert_null(u.path);
        assert_int_equal(u.port, good[i].port);
        assert_int_equal(u.db, good[i].db);
        if (good[i].user)
            assert_string_equal(u.user, good[i].user);
        else
            assert_null(u.user);
        if (good[i].password)
            assert_string_equal(u.password, good[i].password);
        else
            assert_null(u.password);
        ihc_redis_url_fini(&u);
    }
}

static void test_redis_url_unix_forms(void **state)
{
    (void)state;
    static const struct {
        const char *url, *path;
        int db;
        const char *user, *password;
    } good[] = {
        {"unix:///var/run/redis/redis-server.sock", "/var/run/redis/redis-server.sock", 0, NULL,
         NULL},
        {"unix:///tmp/r.sock?db=2", "/tmp/r.sock", 2, NULL, NULL},
        {"unix://:pw@/tmp/r.sock?db=0", "/tmp/r.sock", 0, NULL, "pw"},
        {"unix://ihc:p%40ss%3Aw%2Frd%25@/run/r.sock?db=9", "/run/r.sock", 9, "ihc", "p@ss:w/rd%"},
        {"unix:///tmp/a@b.sock", "/tmp/a@b.sock", 0, NULL, NULL}, /* '@' in the path */
        {"unix:///tmp/%41.sock", "/tmp/%41.sock", 0, NULL, NULL}, /* the path is as written */
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ihc_redis_url u;
        char why[256];
        int rc = ihc_redis_url_parse(good[i].url, &u, why, sizeof(why));
        if (rc != IHC_OK)
            fail_msg("%s: %s (%s)", good[i].url, ihc_err_name(rc), why);
        assert_null(u.host);
        assert_int_equal(u.port, 0);
        assert_string_equal(u.path, good[i].path);
        assert_int_equal(u.db, good[i].db);
        if (good[i].user)
            assert_string_equal(u.user, good[i].user);
        else
            assert_null(u.user);
        if (good[i].password)
            assert_string_equal(u.password, good[i].password);
        else
            assert_null(u.password);
        ihc_redis_url_fini(&u);
    }
    /* the longest path that fits a socket address, and one byte more */
    char url[300], path[200];
    memset(path, 'a', sizeof(path));
    path[0] = '/';
    path[IHC_REDIS_URL_PATH_MAX] = '\0';
    snprintf(url, sizeof(url), "unix://%s", path);
    ihc_redis_url u;
    char why[256];
    TH_PASS(ihc_redis_url_parse(url, &u, why, sizeof(why)));
    assert_int_equal(strlen(u.path), IHC_REDIS_URL_PATH_MAX);
    ihc_redis_url_fini(&u);
    path[IHC_REDIS_URL_PATH_MAX] = 'a';
    path[IHC_REDIS_URL_PATH_MAX + 1] = '\0';
    snprintf(url, sizeof(url), "unix://%s", path);
    TH_FAIL(ihc_redis_url_parse(url, &u, why, sizeof(why)), IHC_EINVAL);
    assert_non_null(strstr(why, "at most 107"));
}

static void test_redis_url_sentinel_forms(void **state)
{
    (void)state;
    ihc_redis_url u;
    char why[256] = "unset";
    TH_PASS(ihc_redis_url_parse("redis-sentinel://h1:26380,10.0.0.2,[::1]:5000/mymaster/3", &u, why,
                                sizeof(why)));
    assert_string_equal(why, "");
    assert_null(u.host);
    assert_null(u.path);
    assert_int_equal(u.port, 0);
    assert_string_equal(u.master, "mymaster");
    assert_int_equal(u.db, 3);
    assert_int_equal(u.n_sentinels, 3);
    assert_string_equal(u.sentinels[0].host, "h1");
    assert_int_equal(u.sentinels[0].port, 26380);
    assert_string_equal(u.sentinels[1].host, "10.0.0.2");
    assert_int_equal(u.sentinels[1].port, 26379);
    assert_string_equal(u.sentinels[2].host, "::1");
    assert_int_equal(u.sentinels[2].port, 5000);
    assert_null(u.password);
    ihc_redis_url_fini(&u);
    assert_null(u.master);
    assert_int_equal(u.n_sentinels, 0);

    /* the db is optional; the password (and user) are the master's */
    TH_PASS(ihc_redis_url_parse("redis-sentinel://p%40ss@s1/ihc-master.1", &u, NULL, 0));
    assert_string_equal(u.master, "ihc-master.1");
    assert_int_equal(u.db, 0);
    assert_int_equal(u.n_sentinels, 1);
    assert_string_equal(u.password, "p@ss");
    assert_null(u.user);
    ihc_redis_url_fini(&u);
    TH_PASS(ihc_redis_url_parse("redis-sentinel://bob:pw@s1:1,s2:2/m/", &u, NULL, 0));
    assert_string_equal(u.user, "bob");
    assert_string_equal(u.password, "pw");
    assert_int_equal(u.n_sentinels, 2);
    assert_int_equal(u.db, 0);
    ihc_redis_url_fini(&u);
}

static void test_redis_url_bad(void **state)
{
    (void)state;
    static const char *const bad[][2] = {
        {"", "empty"},
        {"http://127.0.0.1:6379", "expected redis://"},
        {"tcp://127.0.0.1:6379", "unix://"},
        {"rediss://127.0.0.1:6379", "TLS"},
        {"sentinel://h:26379/m/0", "expected redis://"},
        {"redis-sentinel://", "no sentinel"},
        {"redis-sentinel:///m", "no sentinel"},
        {"redis-sentinel://h1:26379", "missing master name"},
        {"redis-sentinel://h1:26379/", "master name must be"},
        {"redis-sentinel://h1:26379//0", "master name must be"},
        {"redis-sentinel://h1:26379/my$master", "bad master name"},
        {"redis-sentinel://h1:26379/m/x", "db must be a number"},
        {"redis-sentinel://h1:26379/m/0/1", "db must be a number"},
        {"redis-sentinel://h1:26379,,h2/m", "empty sentinel 2"},
        {"redis-sentinel://h1:26379,/m", "empty sentinel 2"},
        {"redis-sentinel://h1:0/m", "sentinel 1 'h1:0': port"},
        {"redis-sentinel://h1,h$2/m", "sentinel 2 'h$2': bad host"},
        {"redis-sentinel://h1,[::1/m", "unterminated"},
        {"redis-sentinel://:@h1/m", "empty password"},
        {"redis-sentinel://a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q/m", "more than 16 sentinels"},
        {"redis://", "missing host"},
        {"redis:///0", "missing host"},
        {"redis://:6379", "missing host"},
        {"redis://127.0.0.1:0", "port"},
        {"redis://127.0.0.1:65536", "port"},
        {"redis://127.0.0.1:12ab", "port"},
        {"redis://127.0.0.1:", "port"},
        {"redis://127.0.0.1:-1", "port"},
        {"redis://127.0.0.1/abc", "db must be a number"},
        {"redis://127.0.0.1/1/2", "db must be a number"},
        {"redis://127.0.0.1/-1", "db must be a number"},
        {"redis://127.0.0.1/2147483648", "db must be a number"},
        {"redis://127.0.0.1?db=1", "the db goes in the path"},
        {"redis://127.0.0.1#x", "unexpected '#'"},
        {"redis://[::1", "unterminated"},
        {"redis://[::1]x", "after the [IPv6] host"},
        {"redis://[]", "bad [IPv6] host"},
        {"redis://[g::1]", "bad [IPv6] host"},
        {"redis://ho$t:1", "bad host"},
        {"redis://h st", "spaces and control characters"},
        {"redis://h\tst", "spaces and control characters"},
        {"redis://:@127.0.0.1", "empty password"},
        {"redis://@127.0.0.1", "empty password"},
        {"redis://user:@127.0.0.1", "empty password"},
        {"redis://:p%zzw@127.0.0.1", "bad %-escape in the password"},
        {"redis://:pw%4@127.0.0.1", "bad %-escape in the password"},
        {"redis://:pw%@127.0.0.1", "bad %-escape in the password"},
        {"redis://:pw%00x@127.0.0.1", "not %00"},
        {"redis://u%0:pw@127.0.0.1", "bad %-escape in the user"},
        {"unix://", "missing unix socket path"},
        {"unix://?db=1", "missing unix socket path"},
        {"unix://relative.sock", "takes no host"},
        {"unix://localhost/tmp/r.sock", "takes no host"},
        {"unix://:pw@host/tmp/r.sock", "takes no host"},
        {"unix:///", "must name a file"},
        {"unix:///tmp/", "must name a file"},
        {"unix:///tmp/x.sock?db=x", "db must be a number"},
        {"unix:///tmp/x.sock?db=", "db must be a number"},
        {"unix:///tmp/x.sock?foo=1", "only query"},
        {"unix:///tmp/x.sock#frag", "fragment"},
        {"unix://:@/tmp/x.sock", "empty password"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ihc_redis_url u;
        memset(&u, 0x5a, sizeof(u)); /* must come back empty */
        char why[256] = "";
        int rc = ihc_redis_url_parse(bad[i][0], &u, why, sizeof(why));
        if (rc != IHC_EINVAL)
            fail_msg("\"%s\": got %s, want IHC_EINVAL", bad[i][0], ihc_err_name(rc));
        if (!strstr(why, bad[i][1]))
            fail_msg("\"%s\": message \"%s\" lacks \"%s\"", bad[i][0], why, bad[i][1]);
        assert_null(u.host);
        assert_null(u.path);
        assert_null(u.user);
        assert_null(u.password);
        ihc_redis_url_fini(&u);
    }
    ihc_redis_url u;
    TH_FAIL(ihc_redis_url_parse(NULL, &u, NULL, 0), IHC_EINVAL); /* why may be NULL */
    TH_FAIL(ihc_redis_url_parse("redis://h", NULL, NULL, 0), IHC_EINVAL);
}

/* A message about a bad URL never quotes its password, whatever part is wrong. */
static void test_redis_url_message_hides_password(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "redis://:hunter2@h:99999",
        "redis://:hunter2@h/x",
        "redis://bob:hunter2@",
        "redis://:hunter2%zz@h",
        "unix://:hunter2@h/s",
        "unix://:hunter2@/s?db=q",
        "unix://bob:hunter2@/s?x=hunter2",
        "redis-sentinel://:hunter2@s1,/m",
        "redis-sentinel://hunter2@s1:0/m",
        "redis-sentinel://:hunter2@s1/m$",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ihc_redis_url u;
        char why[256];
        TH_FAIL(ihc_redis_url_parse(bad[i], &u, why, sizeof(why)), IHC_EINVAL);
        if (strstr(why, "hunter2"))
            fail_msg("\"%s\": message \"%s\" shows the password", bad[i], why);
    }
}

static void test_redis_url_where(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"redis://:secret@10.0.0.1:7000/3", "10.0.0.1:7000/3"},
        {"redis://[::1]", "[::1]:6379/0"},
        {"unix://u:secret@/run/redis.sock?db=4", "unix:/run/redis.sock/4"},
        {"redis-sentinel://:secret@s1,[::1]:26380/mymaster/2",
         "sentinel:s1:26379,[::1]:26380/mymaster/2"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ihc_redis_url u;
        TH_PASS(ihc_redis_url_parse(cases[i][0], &u, NULL, 0));
        char where[96];
        ihc_redis_url_where(&u, where, sizeof(where));
        assert_string_equal(where, cases[i][1]);
        ihc_redis_url_fini(&u);
    }
}

static void test_redis_url_redact(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
        {"redis://user:hunter2@db:6379/1", "redis://***@db:6379/1"},
        {"redis://:hunter2@db", "redis://***@db"},
        {"redis://hunter2@db", "redis://***@db"},
        {"redis://:p@ss@db/2", "redis://***@db/2"},
        {"unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"},
        {"unix://:hunter2@/run/redis.sock?db=1", "unix://***@/run/redis.sock?db=1"},
        {"unix://ihc:p%40ss@/run/a@b.sock", "unix://***@/run/a@b.sock"},
        /* not parsable: everything from "://" to the last '@' */
        {"redis://:hun/ter2@db", "redis://***@db"},
        {"redis://:hunter2@db:0", "redis://***@db:0"},
        {"unix://:hunter2@host/s", "unix://***@host/s"},
        {"bogus:hunter2@x", "***@x"},
        {"redis://db:0", "redis://db:0"},
        {"redis-sentinel://:hunter2@s1,s2/m/1", "redis-sentinel://***@s1,s2/m/1"},
        {"redis-sentinel://s1,s2/m", "redis-sentinel://s1,s2/m"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[128];
        ihc_redis_url_redact(cases[i][0], out, sizeof(out));
        if (strcmp(out, cases[i][1]) != 0)
            fail_msg("redact \"%s\": got \"%s\", want \"%s\"", cases[i][0], out, cases[i][1]);
    }
    /* strlen + 4 always suffices; shorter buffers cut, never overflow */
    char small[8];
    ihc_redis_url_redact("redis://@db", small, sizeof(small));
    assert_string_equal(small, "redis:/");
    char exact[sizeof("redis://@db") + 3];
    ihc_redis_url_redact("redis://@db", exact, sizeof(exact));
    assert_string_equal(exact, "redis://***@db");
}

static void test_redis_url_fini_wipes(void **state)
{
    (void)state;
    ihc_redis_url u;
    TH_PASS(ihc_redis_url_parse("redis://bob:hunter2@h", &u, NULL, 0));
    ihc_redis_url_fini(&u);
    assert_null(u.password);
    assert_null(u.user);
    assert_null(u.host);
    ihc_redis_url_fini(&u); /* twice is harmless */
    ihc_redis_url_fini(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_url_tcp_forms),
        cmocka_unit_test(test_redis_url_unix_forms),
        cmocka_unit_test(test_redis_url_sentinel_forms),
        cmocka_unit_test(test_redis_url_bad),
        cmocka_unit_test(test_redis_url_message_hides_password),
        cmocka_unit_test(test_redis_url_where),
        cmocka_unit_test(test_redis_url_redact),
        cmocka_unit_test(test_redis_url_fini_wipes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
