/* Redis behind a password, with the least-privilege user of deploy/redis/ihc-user.acl (the ACL
 * file made by deploy/redis/acl.sh, as the compose file's Redis uses it): a real coordinator
 * and agents run as user ihc — sessions, interrupts over HTTP and over the ihc:requests
 * channel, flags, a restart that loads everything back — and Redis' own ACL LOG shows nothing
 * was denied; commands, keys and channels outside the rules are refused to that user; a wrong
 * password is a clear error and "persisted":false, never a crash. */
#include "harness.h"

#include "err.h"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define ADMIN_PW "admin-pw-4b1d"
#define IHC_PW   "ihc-pw-9f3e"

static struct {
    th_redis redis;
    char *dir;
    char aclfile[4200];
    int pub, rep, ctl, http;
    char pub_url[64], rep_url[64], ctl_url[64], http_addr[64];
    pid_t agent;
    char agent_log[4300];
} w;

static int setup(void **state)
{
    (void)state;
    w.dir = th_tmpdir("redis-acl");
    assert_non_null(w.dir);
    snprintf(w.aclfile, sizeof w.aclfile, "%s/users.acl", w.dir);
    char cmd[9000];
    snprintf(cmd, sizeof cmd,
             "REDIS_PASSWORD='" ADMIN_PW "' IHC_REDIS_PASSWORD='" IHC_PW
             "' sh '%s/deploy/redis/acl.sh' >'%s'",
             IHC_SOURCE_DIR, w.aclfile);
    assert_int_equal(system(cmd), 0);
    w.redis.aclfile = w.aclfile;
    w.redis.password = ADMIN_PW; /* the harness' own commands: the default user */
    assert_int_equal(th_redis_start(&w.redis), 0);
    w.pub = th_free_port();
    w.rep = th_free_port();
    w.ctl = th_free_port();
    w.http = th_free_port();
    snprintf(w.pub_url, sizeof w.pub_url, "tcp://127.0.0.1:%d", w.pub);
    snprintf(w.rep_url, sizeof w.rep_url, "tcp://127.0.0.1:%d", w.rep);
    snprintf(w.ctl_url, sizeof w.ctl_url, "tcp://127.0.0.1:%d", w.ctl);
    snprintf(w.http_addr, sizeof w.http_addr, "127.0.0.1:%d", w.http);
    snprintf(w.agent_log, sizeof w.agent_log, "%s/agent.log", w.dir);
    char local[4300];
    snprintf(local, sizeof local, "unix://%s/agent.sock", w.dir);
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    w.pub_url,
                    "--report",
                    w.rep_url,
                    "--id",
                    "acl-agent",
                    "--simulate",
                    "dev-1,dev-2",
                    "--local",
                    local,
                    NULL};
    char *env[] = {"IHC_HEARTBEAT_INTERVAL=0.2", "IHC_MODULE_TIMEOUT=0.5", NULL};
    w.agent = th_spawn(argv, w.agent_log, env);
    assert_true(w.agent > 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (w.agent > 0)
        th_stop(w.agent, SIGTERM, 5000);
    th_redis_stop(&w.redis);
    th_tmpdir_remove(w.dir);
    free(w.dir);
    return 0;
}

static pid_t start_coordinator(const char *redis_url, const char *log)
{
    char *argv[] = {(char *)th_bin("ihc-coordinator"),
                    "--pub",
                    w.pub_url,
                    "--report",
                    w.rep_url,
                    "--control",
                    w.ctl_url,
                    "--http",
                    w.http_addr,
                    "--redis",
                    (char *)redis_url,
                    NULL};
    char *env[] = {"INTERRUPT_TIMEOUT=2.0", "IHC_AGENT_TTL=3", "SESSION_CLEANUP_DELAY=0.5", NULL};
    pid_t pid = th_spawn(argv, log, env);
    assert_true(pid > 0);
    if (!TH_WAIT(th_http(w.http, "GET", "/healthz", NULL, NULL, NULL) == 200, 10000)) {
        th_log_tail(log, 30);
        fail_msg("coordinator did not answer GET /healthz (log %s)", log);
    }
    return pid;
}

/* One command as user ihc (own connection); the reply as text ("(nil)", integers in decimal,
 * errors as Redis wrote them). Caller frees. */
static char *as_ihc(const char *fmt, ...)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", w.redis.port, tv);
    assert_true(c != NULL && !c->err);
    redisReply *a = redisCommand(c, "AUTH ihc %s", IHC_PW);
    assert_non_null(a);
    assert_int_equal(a->type, REDIS_REPLY_STATUS);
    freeReplyObject(a);
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    char *out = NULL;
    if (r == NULL)
        out = strdup(c->errstr);
    else if (r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS ||
             r->type == REDIS_REPLY_STRING)
        out = strdup(r->str);
    else if (r->type == REDIS_REPLY_INTEGER && asprintf(&out, "%lld", r->integer) < 0)
        out = NULL;
    else if (r->type == REDIS_REPLY_NIL)
        out = strdup("(nil)");
    else if (r->type == REDIS_REPLY_ARRAY)
        out = strdup("(array)");
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return out ? out : strdup("");
}

static void expect_denied(char *reply, const char *what)
{
    if (strncmp(reply, "NOPERM", 6) != 0 && strstr(reply, "can't access") == NULL)
        fail_msg("%s as user ihc: '%s', want a refusal", what, reply);
    free(reply);
}

static bool has_active_session(const char *hw)
{
    char path[64], *body = NULL;
    snprintf(path, sizeof path, "/v1/sessions?hardware_id=%s", hw);
    bool ok = th_http(w.http, "GET", path, NULL, NULL, &body) == 200 && body &&
              strstr(body, "\"state\":\"active\"") != NULL;
    free(body);
    return ok;
}

static bool interrupts_logged(int n)
{
    char *r = th_redis_cmd(&w.redis, "XLEN ihc:interrupts");
    bool ok = r != NULL && atoi(r) >= n;
    free(r);
    return ok;
}

static void test_redis_acl_coordinator_as_ihc(void **state)
{
    (void)state;
    char url[160], log[4300];
    snprintf(url, sizeof url, "redis://ihc:" IHC_PW "@127.0.0.1:%d/0", w.redis.port);
    snprintf(log, sizeof log, "%s/coordinator.log", w.dir);
    char *r = th_redis_cmd(&w.redis, "ACL LOG RESET");
    free(r);
    pid_t coord = start_coordinator(url, log);
    assert_true(TH_WAIT(has_active_session("dev-1"), 15000));

    /* an interrupt over HTTP: written to Redis */
    char *body = NULL;
    int st = th_http(w.http, "POST", "/v1/interrupt", "Content-Type: application/json\r\n",
                     "{\"hardware_id\":\"dev-1\",\"reason\":\"acl\"}", &body);
    if (st != 200 || !strstr(body, "\"success\":true"))
        fail_msg("interrupt: %d %s", st, body ? body : "");
    free(body);
    /* one through the Redis channel (published by the administrator) */
    r = th_redis_cmd(&w.redis, "PUBLISH ihc:requests %s", "{\"hardware_id\":\"dev-2\"}");
    assert_non_null(r);
    assert_string_equal(r, "1"); /* the coordinator's subscription, as user ihc */
    free(r);
    assert_true(TH_WAIT(interrupts_logged(2), 10000));
    /* flags reset, and a restart that loads everything back (SCAN, SMEMBERS, HGETALL…) */
    assert_int_equal(th_http(w.http, "POST", "/v1/flags/reset", NULL, NULL, NULL), 200);
    assert_true(TH_WAIT(has_active_session("dev-1"), 15000));
    int status = th_stop(coord, SIGTERM, 10000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    coord = start_coordinator(url, log);
    assert_true(TH_WAIT(has_active_session("dev-2"), 15000));
    st = th_http(w.http, "POST", "/v1/interrupt", "Content-Type: application/json\r\n",
                 "{\"hardware_id\":\"dev-2\"}", &body);
    if (st != 200 || !strstr(body, "\"success\":true") || !strstr(body, "\"persisted\":true"))
        fail_msg("interrupt after restart: %d %s", st, body ? body : "");
    free(body);
    th_stop(coord, SIGTERM, 10000);

    /* Redis denied the coordinator nothing, and it never said so either */
    r = th_redis_cmd(&w.redis, "ACL LOG");
    assert_non_null(r);
    if (r[0] != '\0')
        fail_msg("ACL LOG is not empty: the coordinator was denied something:\n%s", r);
    free(r);
    assert_false(th_log_has(log, "NOPERM", 0));
    assert_false(th_log_has(log, "redis unavailable", 0));
    assert_false(th_log_has(log, "ERROR", 0));
    r = th_redis_cmd(&w.redis, "HGET ihc:seq interrupt_id"); /* the ids handed out */
    assert_non_null(r);
    assert_true(atoi(r) >= 3);
    free(r);
}

static void test_redis_acl_refuses_the_rest(void **state)
{
    (void)state;
    char *r = as_ihc("HSET ihc:acl-test f v"); /* inside the rules */
    assert_string_equal(r, "1");
    free(r);
    expect_denied(as_ihc("FLUSHALL"), "FLUSHALL");
    expect_denied(as_ihc("KEYS *"), "KEYS");
    expect_denied(as_ihc("CONFIG GET maxmemory"), "CONFIG GET");
    expect_denied(as_ihc("SET other:key 1"), "SET outside ihc:*");
    expect_denied(as_ihc("GET other:key"), "GET outside ihc:*");
    expect_denied(as_ihc("PUBLISH ihc:requests x"), "PUBLISH");
    expect_denied(as_ihc("SUBSCRIBE other-channel"), "SUBSCRIBE outside ihc:requests");
    expect_denied(as_ihc("EVAL %s 0", "return redis.call('SET','other:key','1')"),
                  "a script writing outside ihc:*");
    expect_denied(as_ihc("LPUSH ihc:list x"), "LPUSH (not used by ihc)");
    expect_denied(as_ihc("ACL WHOAMI"), "ACL");
    r = th_redis_cmd(&w.redis, "ACL LOG RESET");
    free(r);
}

static void test_redis_acl_wrong_password(void **state)
{
    (void)state;
    char url[160], log[4300];
    snprintf(url, sizeof url, "redis://ihc:not-the-password@127.0.0.1:%d/0", w.redis.port);
    snprintf(log, sizeof log, "%s/coordinator-wrongpw.log", w.dir);
    pid_t coord = start_coordinator(url, log);
    assert_true(TH_WAIT(has_active_session("dev-1"), 15000));
    char *body = NULL;
    int st = th_http(w.http, "POST", "/v1/interrupt", "Content-Type: application/json\r\n",
                     "{\"hardware_id\":\"dev-1\"}", &body);
    if (st != 200 || !strstr(body, "\"success\":true") || !strstr(body, "\"persisted\":false"))
        fail_msg("interrupt with a wrong Redis password: %d %s", st, body ? body : "");
    free(body);
    assert_int_equal(th_http(w.http, "GET", "/healthz", NULL, NULL, &body), 200);
    assert_non_null(strstr(body, "\"redis\":\"unreachable\""));
    free(body);
    /* the reason, in clear words, from the store and from the request channel */
    assert_true(TH_WAIT(th_log_has(log, "AUTH: WRONGPASS", 0), 5000));
    assert_true(TH_WAIT(th_log_has(log, "cannot subscribe to ihc:requests", 0), 5000));
    assert_false(th_log_has(log, IHC_PW, 0));
    assert_false(th_log_has(log, "not-the-password", 0)); /* never shown */
    assert_int_equal(kill(coord, 0), 0);                  /* still serving */
    int status = th_stop(coord, SIGTERM, 10000);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_acl_coordinator_as_ihc),
        cmocka_unit_test(test_redis_acl_refuses_the_rest),
        cmocka_unit_test(test_redis_acl_wrong_password),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
