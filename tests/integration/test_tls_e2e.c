/* TLS end to end with real processes: a coordinator on tls+tcp:// with mutual TLS and HTTPS,
 * two agents and the CLI with certificates from deploy/make-certs.sh. An interrupt over TLS
 * (CLI, `ihc watch`, HTTPS); agents that trust another CA, carry a certificate from another CA
 * or an expired one are never admitted and log why; a client without a certificate and a
 * plain tcp:// client are refused; bad TLS settings stop the programs at start-up. */
#include "harness.h"

#include "err.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static struct {
    th_redis redis;
    char *dir;
    char certs[4200], other[4200];
    int pub, rep, ctl, http;
    char pub_url[64], rep_url[64], ctl_url[64], http_addr[64];
    char coord_log[4300];
    pid_t coord;
    pid_t agent[2];
    char agent_log[2][4300];
    /* environment entries */
    char e_cert[4400], e_key[4400], e_ca[4400], e_ccert[4400], e_ckey[4400];
} w;

static const char *cert(const char *base, const char *name)
{
    static __thread char bufs[8][4400];
    static __thread int k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", base, name);
    return b;
}

typedef struct {
    int status;
    char *out, *err;
} run_result;

static void done(run_result *r)
{
    free(r->out);
    free(r->err);
}

/* Runs prog args… with extra env ("K=V", NULL-terminated) and stdout/stderr in files; waits up
 * to timeout_ms. */
static run_result run(const char *prog, char *const *env, const char *const *args, int timeout_ms)
{
    char *argv[48];
    int n = 0;
    argv[n++] = "/bin/sh";
    argv[n++] = "-c";
    argv[n++] = "exec \"$0\" \"$@\" >\"$RUN_OUT\" 2>\"$RUN_ERR\"";
    argv[n++] = (char *)prog;
    for (int i = 0; args[i] != NULL && n < 46; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    char out_env[4400], err_env[4400], out[4300], err[4300];
    snprintf(out, sizeof out, "%s/run.out", w.dir);
    snprintf(err, sizeof err, "%s/run.err", w.dir);
    snprintf(out_env, sizeof out_env, "RUN_OUT=%s", out);
    snprintf(err_env, sizeof err_env, "RUN_ERR=%s", err);
    char *envs[12] = {out_env, err_env};
    int k = 2;
    for (int i = 0; env != NULL && env[i] != NULL && k < 11; i++)
        envs[k++] = env[i];
    envs[k] = NULL;
    pid_t pid = th_spawn(argv, NULL, envs);
    assert_true(pid > 0);
    run_result r = {.status = -1};
    int st = th_wait_exit(pid, timeout_ms);
    if (st == -1)
        th_stop(pid, SIGKILL, 1000);
    else if (WIFEXITED(st))
        r.status = WEXITSTATUS(st);
    r.out = th_slurp(out);
    r.err = th_slurp(err);
    return r;
}

static void expect(run_result *r, int status, const char *in_out, const char *in_err)
{
    if (r->status != status || (in_out && strstr(r->out, in_out) == NULL) ||
        (in_err && strstr(r->err, in_err) == NULL))
        fail_msg("want exit %d, out~'%s', err~'%s'; got exit %d\n--- out:\n%s--- err:\n%s", status,
                 in_out ? in_out : "", in_err ? in_err : "", r->status, r->out, r->err);
}

/* curl over HTTPS to the coordinator: the status (0 when none) and the body. with_cert: the
 * client's certificate is presented. */
static int https(const char *method, const char *path, const char *body, bool with_cert,
                 char **resp)
{
    char url[128];
    snprintf(url, sizeof url, "https://localhost:%d%s", w.http, path);
    const char *args[24];
    int n = 0;
    args[n++] = "-sS";
    args[n++] = "--max-time";
    args[n++] = "10";
    args[n++] = "--cacert";
    args[n++] = cert(w.certs, "ca.pem");
    if (with_cert) {
        args[n++] = "--cert";
        args[n++] = cert(w.certs, "client.pem");
        args[n++] = "--key";
        args[n++] = cert(w.certs, "client.key");
    }
    args[n++] = "-X";
    args[n++] = method;
    if (body) {
        args[n++] = "-H";
        args[n++] = "Content-Type: application/json";
        args[n++] = "-d";
        args[n++] = body;
    }
    args[n++] = "-w";
    args[n++] = "\n%{http_code}";
    args[n++] = url;
    args[n] = NULL;
    run_result r = run("curl", NULL, args, 15000);
    int status = 0;
    char *nl = strrchr(r.out, '\n');
    if (nl != NULL) {
        status = atoi(nl + 1);
        *nl = '\0';
    }
    if (resp != NULL)
        *resp = strdup(r.out);
    done(&r);
    return status;
}

static bool agents_listed(const char *a, const char *b)
{
    char *body = NULL;
    bool ok = https("GET", "/v1/agents", NULL, true, &body) == 200 && strstr(body, a) &&
              (b == NULL || strstr(body, b));
    free(body);
    return ok;
}

static bool agent_listed(const char *id)
{
    char *body = NULL;
    char q[80];
    snprintf(q, sizeof q, "\"agent_id\":\"%s\"", id);
    bool listed = https("GET", "/v1/agents", NULL, true, &body) == 200 && strstr(body, q);
    free(body);
    return listed;
}

static pid_t start_agent(const char *id, const char *hws, const char *certdir, const char *name,
                         const char *ca, char *logpath, size_t loglen)
{
    snprintf(logpath, loglen, "%s/%s.log", w.dir, id);
    char local[4400];
    snprintf(local, sizeof local, "unix://%s/%s.sock", w.dir, id);
    char *argv[] = {(char *)th_bin("ihc-agent"),
                    "--pub",
                    w.pub_url,
                    "--report",
                    w.rep_url,
                    "--id",
                    (char *)id,
                    "--simulate",
                    (char *)hws,
                    "--local",
                    local,
                    NULL};
    static __thread char e_ca[4400], e_cert[4400], e_key[4400];
    snprintf(e_ca, sizeof e_ca, "IHC_TLS_CA=%s", ca);
    snprintf(e_cert, sizeof e_cert, "IHC_TLS_CERT=%s/%s.pem", certdir, name);
    snprintf(e_key, sizeof e_key, "IHC_TLS_KEY=%s/%s.key", certdir, name);
    char *env[] = {e_ca, e_cert, e_key, "IHC_HEARTBEAT_INTERVAL=0.2", "IHC_MODULE_TIMEOUT=0.5",
                   NULL};
    pid_t pid = th_spawn(argv, logpath, env);
    assert_true(pid > 0);
    return pid;
}

static int setup(void **state)
{
    (void)state;
    w.dir = th_tmpdir("tls-e2e");
    assert_non_null(w.dir);
    snprintf(w.certs, sizeof w.certs, "%s/certs", w.dir);
    snprintf(w.other, sizeof w.other, "%s/other", w.dir);
    assert_int_equal(th_make_certs(w.certs, NULL), 0);
    assert_int_equal(
        th_make_certs(w.certs, "--expired --agents old --clients '' --coordinator-names ''"), 0);
    assert_int_equal(th_make_certs(w.other, "--ca-name 'another CA' --agents agent-9"), 0);
    assert_int_equal(th_redis_start(&w.redis), 0);
    w.pub = th_free_port();
    w.rep = th_free_port();
    w.ctl = th_free_port();
    w.http = th_free_port();
    snprintf(w.pub_url, sizeof w.pub_url, "tls+tcp://127.0.0.1:%d", w.pub);
    snprintf(w.rep_url, sizeof w.rep_url, "tls+tcp://127.0.0.1:%d", w.rep);
    snprintf(w.ctl_url, sizeof w.ctl_url, "tls+tcp://127.0.0.1:%d", w.ctl);
    snprintf(w.http_addr, sizeof w.http_addr, "127.0.0.1:%d", w.http);
    snprintf(w.e_cert, sizeof w.e_cert, "IHC_TLS_CERT=%s", cert(w.certs, "coordinator.pem"));
    snprintf(w.e_key, sizeof w.e_key, "IHC_TLS_KEY=%s", cert(w.certs, "coordinator.key"));
    snprintf(w.e_ca, sizeof w.e_ca, "IHC_TLS_CA=%s", cert(w.certs, "ca.pem"));
    snprintf(w.e_ccert, sizeof w.e_ccert, "IHC_TLS_CERT=%s", cert(w.certs, "client.pem"));
    snprintf(w.e_ckey, sizeof w.e_ckey, "IHC_TLS_KEY=%s", cert(w.certs, "client.key"));

    snprintf(w.coord_log, sizeof w.coord_log, "%s/coordinator.log", w.dir);
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
                    w.redis.url,
                    NULL};
    char *env[] = {w.e_cert, w.e_key, w.e_ca, "INTERRUPT_TIMEOUT=3.0", "IHC_AGENT_TTL=3", NULL};
    w.coord = th_spawn(argv, w.coord_log, env);
    assert_true(w.coord > 0);
    if (!TH_WAIT(https("GET", "/healthz", NULL, true, NULL) == 200, 15000)) {
        th_log_tail(w.coord_log, 30);
        fail_msg("coordinator did not answer GET /healthz over HTTPS (log %s)", w.coord_log);
    }
    w.agent[0] = start_agent("agent-1", "dev-1", w.certs, "agent-1", cert(w.certs, "ca.pem"),
                             w.agent_log[0], sizeof w.agent_log[0]);
    w.agent[1] = start_agent("agent-2", "dev-1,dev-2", w.certs, "agent-2", cert(w.certs, "ca.pem"),
                             w.agent_log[1], sizeof w.agent_log[1]);
    if (!TH_WAIT(agents_listed("\"agent-1\"", "\"agent-2\""), 20000)) {
        th_log_tail(w.agent_log[0], 20);
        th_log_tail(w.coord_log, 20);
        fail_msg("agents did not register over TLS");
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++)
        if (w.agent[i] > 0)
            th_stop(w.agent[i], SIGTERM, 5000);
    if (w.coord > 0)
        th_stop(w.coord, SIGTERM, 10000);
    th_redis_stop(&w.redis);
    th_tmpdir_remove(w.dir);
    free(w.dir);
    return 0;
}

/* ---- the interrupt over TLS ---- */

static bool file_has(const char *path, const char *needle)
{
    return th_log_has(path, needle, 0);
}

static void test_tls_interrupt_end_to_end(void **state)
{
    (void)state;
    char wout[4300], werr[4300];
    snprintf(wout, sizeof wout, "%s/watch.out", w.dir);
    snprintf(werr, sizeof werr, "%s/watch.err", w.dir);
    /* `ihc watch` over TLS, with the client's certificate */
    char e_out[4400], e_err[4400];
    snprintf(e_out, sizeof e_out, "W_OUT=%s", wout);
    snprintf(e_err, sizeof e_err, "W_ERR=%s", werr);
    char *wargv[] = {"/bin/sh",
                     "-c",
                     "exec \"$0\" \"$@\" >\"$W_OUT\" 2>\"$W_ERR\"",
                     (char *)th_bin("ihc"),
                     "--pub",
                     w.pub_url,
                     "watch",
                     "--json",
                     NULL};
    char *wenv[] = {e_out, e_err, w.e_ccert, w.e_ckey, w.e_ca, NULL};
    pid_t watch = th_spawn(wargv, NULL, wenv);
    assert_true(watch > 0);

    /* the CLI, over tls+tcp:// with its certificate */
    char *env[] = {w.e_ccert, w.e_ckey, w.e_ca, NULL};
    run_result r = run(
        th_bin("ihc"), env,
        (const char *const[]){"--control", w.ctl_url, "interrupt", "dev-1", "--json", NULL}, 20000);
    expect(&r, 0, "\"success\":true", NULL);
    json_t *doc = json_loads(r.out, 0, NULL);
    assert_non_null(doc);
    json_t *answered = json_object_get(json_object_get(doc, "agents"), "answered");
    assert_int_equal(json_array_size(answered), 2);
    json_int_t id = json_integer_value(json_object_get(doc, "interrupt_id"));
    assert_true(id > 0);
    json_decref(doc);
    done(&r);

    /* the watch saw it; the watch's subscription may have come after the first interrupt, so
     * interrupt again until it shows one */
    char want[64];
    bool seen = false;
    for (int i = 0; i < 10 && !seen; i++) {
        snprintf(want, sizeof want, "\"hardware_id\":\"dev-1\"");
        seen = TH_WAIT(file_has(wout, want), 1000);
        if (!seen) {
            r = run(th_bin("ihc"), env,
                    (const char *const[]){"--control", w.ctl_url, "interrupt", "dev-1", NULL},
                    20000);
            done(&r);
        }
    }
    kill(watch, SIGTERM);
    th_wait_exit(watch, 5000);
    if (!seen)
        th_log_tail(werr, 10);
    assert_true(seen);

    /* HTTPS: dev-2 is agent-2's only */
    char *body = NULL;
    int st = https("POST", "/v1/interrupt", "{\"hardware_id\":\"dev-2\",\"reason\":\"tls test\"}",
                   true, &body);
    if (st != 200 || strstr(body, "\"success\":true") == NULL ||
        strstr(body, "\"answered\":[\"agent-2\"]") == NULL)
        fail_msg("HTTPS interrupt: %d %s", st, body);
    free(body);
}

/* ---- refused agents ---- */

/* An agent that must never be admitted: it logs want (why) and keeps dialing. */
static void expect_never_admitted(const char *id, const char *certdir, const char *name,
                                  const char *ca, const char *want1, const char *want2)
{
    char log[4300];
    pid_t pid = start_agent(id, "dev-7", certdir, name, ca, log, sizeof log);
    bool said = TH_WAIT(th_log_has(log, want1, 0) && (!want2 || th_log_has(log, want2, 0)), 15000);
    if (!said)
        th_log_tail(log, 15);
    assert_true(said);
    assert_true(th_log_has(log, "still retrying", 0));
    /* and it stays out while it keeps trying */
    for (int i = 0; i < 6; i++) {
        assert_false(agent_listed(id));
        th_sleep_ms_(500);
    }
    assert_int_equal(kill(pid, 0), 0); /* still running, still dialing */
    assert_false(th_log_has(log, "connected to coordinator", 0));
    th_stop(pid, SIGTERM, 5000);
}

static void test_tls_agent_trusting_another_ca(void **state)
{
    (void)state;
    expect_never_admitted("stranger-1", w.other, "agent-9", cert(w.other, "ca.pem"),
                          "the coordinator's certificate failed verification",
                          "subject \"CN=coordinator\"");
}

static void test_tls_agent_with_another_cas_certificate(void **state)
{
    (void)state;
    expect_never_admitted("stranger-2", w.other, "agent-9", cert(w.certs, "ca.pem"),
                          "it refused this side's certificate", "issuer \"CN=another CA\"");
}

static void test_tls_agent_with_expired_certificate(void **state)
{
    (void)state;
    char log[4300];
    snprintf(log, sizeof log, "%s/old-agent.log", w.dir);
    expect_never_admitted("old-agent", w.certs, "old", cert(w.certs, "ca.pem"),
                          "it refused this side's certificate, which has expired",
                          "CN=old, expires 2020-01-02");
    /* said at start-up too */
    assert_true(th_log_has(log, "has expired", 0));
}

/* ---- refused clients ---- */

static void test_tls_client_without_certificate(void **state)
{
    (void)state;
    char *env[] = {w.e_ca, NULL};
    run_result r = run(th_bin("ihc"), env,
                       (const char *const[]){"--control", w.ctl_url, "stats", NULL}, 20000);
    expect(&r, 3, NULL, "requires a client certificate (mutual TLS) and none is configured");
    done(&r);
    char *body = NULL;
    assert_int_equal(https("GET", "/v1/stats", NULL, false, &body), 403);
    assert_non_null(strstr(body, "client certificate issued by the coordinator's IHC_TLS_CA"));
    free(body);
}

static void test_tls_plain_client_refused(void **state)
{
    (void)state;
    size_t from = th_file_size(w.coord_log);
    char plain[64];
    snprintf(plain, sizeof plain, "tcp://127.0.0.1:%d", w.ctl);
    run_result r =
        run(th_bin("ihc"), NULL, (const char *const[]){"--control", plain, "stats", NULL}, 20000);
    expect(&r, 3, NULL, "coordinator unreachable");
    done(&r);
    char want[128];
    snprintf(want, sizeof want, "TLS handshakes refused url=%s", w.ctl_url);
    bool logged = TH_WAIT(th_log_has(w.coord_log, want, from), 15000);
    if (!logged)
        th_log_tail(w.coord_log, 10);
    assert_true(logged);
    /* plain HTTP to the HTTPS port gets no answer */
    char *body = NULL;
    assert_true(th_http(w.http, "GET", "/healthz", NULL, NULL, &body) != 200);
    free(body);
    /* after all the refusals, a good client still gets in (no wedged listener) */
    char *env[] = {w.e_ccert, w.e_ckey, w.e_ca, NULL};
    r = run(th_bin("ihc"), env, (const char *const[]){"--control", w.ctl_url, "stats", NULL},
            20000);
    expect(&r, 0, "total_interrupts", NULL);
    done(&r);
}

/* ---- start-up errors ---- */

static void test_tls_startup_errors(void **state)
{
    (void)state;
    char key_env[4400];
    snprintf(key_env, sizeof key_env, "IHC_TLS_KEY=%s", cert(w.certs, "agent-1.key"));
    /* a tls+tcp:// URL without the coordinator's certificate */
    run_result r =
        run(th_bin("ihc-coordinator"), NULL,
            (const char *const[]){"--pub", "tls+tcp://127.0.0.1:1", "--print-config", NULL}, 10000);
    expect(&r, 2, NULL, "IHC_TLS_CERT and IHC_TLS_KEY are not set");
    done(&r);
    /* a key that is not the certificate's */
    char *env[] = {w.e_cert, key_env, NULL};
    r = run(th_bin("ihc-coordinator"), env, (const char *const[]){"--print-config", NULL}, 10000);
    expect(&r, 2, NULL, "does not match the certificate in IHC_TLS_CERT=");
    done(&r);
    /* an agent without the CA */
    r = run(th_bin("ihc-agent"), NULL,
            (const char *const[]){"--pub", w.pub_url, "--report", w.rep_url, NULL}, 10000);
    expect(&r, 2, NULL, "IHC_TLS_CA is not set");
    done(&r);
    /* an unreadable CA file for the CLI */
    char *env2[] = {"IHC_TLS_CA=/nonexistent/ca.pem", NULL};
    r = run(th_bin("ihc"), env2, (const char *const[]){"--control", w.ctl_url, "stats", NULL},
            10000);
    expect(&r, 2, NULL, "IHC_TLS_CA=/nonexistent/ca.pem: cannot read the file");
    done(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_interrupt_end_to_end),
        cmocka_unit_test(test_tls_agent_trusting_another_ca),
        cmocka_unit_test(test_tls_agent_with_another_cas_certificate),
        cmocka_unit_test(test_tls_agent_with_expired_certificate),
        cmocka_unit_test(test_tls_client_without_certificate),
        cmocka_unit_test(test_tls_plain_client_refused),
        cmocka_unit_test(test_tls_startup_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
