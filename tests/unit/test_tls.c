/* common/tls: loading and checking the files, the URL rules, real nng tls+tcp:// connections
 * (verified, refused), the probe's explanation of each failure, the doctor's and the refusal
 * counter's log lines, and a TLS listener that still accepts after a burst of probes. The
 * certificates come from deploy/make-certs.sh. */
#include "harness.h"

#include "clock.h"
#include "err.h"
#include "log.h"
#include "tls.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/supplemental/tls/tls.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char *dir;          /* CA 1: coordinator, agent-1, client, old (expired) */
static char other[4200];   /* CA 2: its own coordinator and agent-1 */
static char logpath[4200]; /* what ihc_log wrote */
static int log_fd = -1;

static char *path(const char *base, const char *name)
{
    static __thread char bufs[8][4300];
    static __thread int k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", base, name);
    return b;
}

static int setup(void **state)
{
    (void)state;
    dir = th_tmpdir("tls");
    assert_non_null(dir);
    assert_int_equal(th_make_certs(dir, NULL), 0);
    assert_int_equal(
        th_make_certs(dir, "--expired --agents old --clients '' --coordinator-names ''"), 0);
    snprintf(other, sizeof other, "%s/other", dir);
    assert_int_equal(th_make_certs(other, "--ca-name 'another CA' --clients ''"), 0);
    /* an encrypted key, a key of another pair, a file that is not PEM */
    char cmd[9000];
    snprintf(cmd, sizeof cmd,
             "openssl pkey -in '%s/agent-1.key' -aes256 -passout pass:secret -out '%s/enc.key' && "
             "printf 'hello' >'%s/notpem' && : >'%s/empty.pem'",
             dir, dir, dir, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(logpath, sizeof logpath, "%s/log.txt", dir);
    log_fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    assert_true(log_fd >= 0);
    ihc_log_opts lo = {.level = IHC_LOG_DEBUG, .fd = log_fd};
    ihc_log_setup(&lo);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ihc_log_setup(NULL);
    if (log_fd >= 0)
        close(log_fd);
    th_tmpdir_remove(dir);
    free(dir);
    return 0;
}

static ihc_tls *load(const char *base, const char *cert, const char *ca, const char *name)
{
    ihc_tls_files f = {.cert = cert ? path(base, cert) : NULL,
                       .ca = ca == NULL || ca[0] == '/' ? ca : path(dir, ca),
                       .server_name = name};
    char key[64];
    if (cert) {
        snprintf(key, sizeof key, "%.*s.key", (int)(strlen(cert) - 4), cert);
        f.key = path(base, key);
    }
    ihc_tls *t = NULL;
    char err[512] = "", warn[512] = "";
    int rc = ihc_tls_load(&t, &f, NULL, err, sizeof err, warn, sizeof warn);
    if (rc != IHC_OK)
        fail_msg("ihc_tls_load: %s", err);
    return t;
}

/* ---- loading ---- */

static void expect_load_error(ihc_tls_files f, const char *needle)
{
    static const ihc_tls_names names = {"IHC_TLS_CERT", "IHC_TLS_KEY", "IHC_TLS_CA",
                                        "IHC_TLS_SERVER_NAME"};
    ihc_tls *t = NULL;
    char err[512] = "";
    TH_FAIL(ihc_tls_load(&t, &f, &names, err, sizeof err, NULL, 0), IHC_ECONFIG);
    assert_null(t);
    if (strstr(err, needle) == NULL)
        fail_msg("error \"%s\" does not say \"%s\"", err, needle);
}

static void test_tls_load_errors(void **state)
{
    (void)state;
    char *cert = path(dir, "coordinator.pem"), *key = path(dir, "coordinator.key");
    expect_load_error((ihc_tls_files){.cert = cert}, "IHC_TLS_CERT is set without IHC_TLS_KEY");
    expect_load_error((ihc_tls_files){.key = key}, "IHC_TLS_KEY is set without IHC_TLS_CERT");
    expect_load_error((ihc_tls_files){.cert = path(dir, "nope.pem"), .key = key}, "IHC_TLS_CERT=");
    expect_load_error((ihc_tls_files){.cert = path(dir, "nope.pem"), .key = key},
                      "cannot read the file: No such file or directory");
    expect_load_error((ihc_tls_files){.cert = path(dir, "notpem"), .key = key}, "not a PEM file");
    expect_load_error((ihc_tls_files){.cert = path(dir, "empty.pem"), .key = key},
                      "not a PEM file");
    expect_load_error((ihc_tls_files){.cert = key, .key = key}, "not a PEM certificate");
    expect_load_error((ihc_tls_files){.cert = cert, .key = cert}, "not a PEM private key");
    expect_load_error((ihc_tls_files){.cert = cert, .key = path(dir, "agent-1.key")},
                      "does not match the certificate in IHC_TLS_CERT=");
    expect_load_error((ihc_tls_files){.cert = cert, .key = path(dir, "agent-1.key")},
                      "subject \"CN=coordinator\"");
    expect_load_error(
        (ihc_tls_files){.cert = path(dir, "agent-1.pem"), .key = path(dir, "enc.key")},
        "the private key is encrypted");
    expect_load_error((ihc_tls_files){.ca = path(dir, "nope.pem")}, "IHC_TLS_CA=");
    expect_load_error((ihc_tls_files){.ca = key}, "not a PEM certificate");
    expect_load_error((ihc_tls_files){.ca = path(dir, "ca.pem"), .server_name = "a b"},
                      "IHC_TLS_SERVER_NAME=a b: expected a host name");
    if (geteuid() != 0) { /* root reads anything */
        char cmd[4400];
        snprintf(cmd, sizeof cmd, "cp '%s' '%s/noread.pem' && chmod 000 '%s/noread.pem'", cert, dir,
                 dir);
        assert_int_equal(system(cmd), 0);
        expect_load_error((ihc_tls_files){.cert = path(dir, "noread.pem"), .key = key},
                          "Permission denied");
    }
}

static void test_tls_load_ok_and_warnings(void **state)
{
    (void)state;
    ihc_tls *t = NULL;
    char err[512] = "", warn[512] = "x";
    ihc_tls_files f = {.cert = path(dir, "coordinator.pem"),
                       .key = path(dir, "coordinator.key"),
                       .ca = path(dir, "ca.pem")};
    TH_PASS(ihc_tls_load(&t, &f, NULL, err, sizeof err, warn, sizeof warn));
    assert_string_equal(warn, "");
    assert_non_null(strstr(ihc_tls_describe(t), "CN=coordinator, expires "));
    assert_non_null(strstr(ihc_tls_cert_pem(t), "-----BEGIN CERTIFICATE-----"));
    assert_non_null(strstr(ihc_tls_key_pem(t), "PRIVATE KEY-----"));
    assert_true(ihc_tls_mutual(t));
    ihc_tls_free(t);

    /* an expired certificate loads (the peer decides) but is named in the warning */
    f = (ihc_tls_files){
        .cert = path(dir, "old.pem"), .key = path(dir, "old.key"), .ca = path(dir, "ca.pem")};
    TH_PASS(ihc_tls_load(&t, &f, NULL, err, sizeof err, warn, sizeof warn));
    assert_non_null(strstr(warn, "tls_cert="));
    assert_non_null(strstr(warn, "has expired"));
    assert_non_null(strstr(warn, "CN=old"));
    ihc_tls_free(t);

    /* a CA file that holds only a leaf certificate */
    f = (ihc_tls_files){.ca = path(dir, "agent-1.pem")};
    TH_PASS(ihc_tls_load(&t, &f, NULL, err, sizeof err, warn, sizeof warn));
    assert_non_null(strstr(warn, "holds no CA certificate"));
    assert_false(ihc_tls_mutual(NULL));
    ihc_tls_free(t);
    ihc_tls_free(NULL);
}

static void test_tls_urls(void **state)
{
    (void)state;
    char err[512];
    const char *tls[] = {"tcp://127.0.0.1:1", "tls+tcp://127.0.0.1:2", NULL};
    const char *plain[] = {"tcp://127.0.0.1:1", "ipc:///tmp/x"};
    ihc_tls_files none = {0}, ca = {.ca = "ca.pem"}, cert = {.cert = "c", .key = "k"};
    assert_true(ihc_tls_url("tls+tcp://h:1"));
    assert_false(ihc_tls_url("tcp://h:1"));
    assert_false(ihc_tls_url(NULL));
    assert_true(ihc_tls_urls_ok(&none, NULL, true, plain, 2, err, sizeof err));
    assert_true(ihc_tls_urls_ok(&none, NULL, false, plain, 2, err, sizeof err));
    assert_false(ihc_tls_urls_ok(&none, NULL, false, tls, 3, err, sizeof err));
    assert_non_null(strstr(err, "tls+tcp://127.0.0.1:2 is a tls+tcp:// URL but tls_ca is not set"));
    assert_true(ihc_tls_urls_ok(&ca, NULL, false, tls, 3, err, sizeof err));
    assert_false(ihc_tls_urls_ok(&none, NULL, true, tls, 3, err, sizeof err));
    assert_non_null(strstr(err, "tls_cert and tls_key are not set"));
    assert_false(ihc_tls_urls_ok(&ca, NULL, true, plain, 2, err, sizeof err));
    assert_non_null(strstr(err, "tls_ca is set but tls_cert is not: mutual TLS needs"));
    assert_true(ihc_tls_urls_ok(&cert, NULL, true, tls, 3, err, sizeof err));
    ihc_tls_files half = {.key = "k"};
    assert_false(ihc_tls_urls_ok(&half, NULL, false, plain, 2, err, sizeof err));
    assert_non_null(strstr(err, "tls_key is set without tls_cert"));
}

/* ---- real connections ---- */

typedef struct {
    nng_socket pull;
    char url[64];
    ihc_tls *t;
} server;

static void server_start(server *s, const char *certbase, bool mutual, bool plain)
{
    memset(s, 0, sizeof *s);
    TH_PASS(nng_pull0_open(&s->pull));
    if (!plain)
        s->t = load(certbase, "coordinator.pem", mutual ? path(certbase, "ca.pem") : NULL, NULL);
    int rv = -1;
    for (int i = 0; i < 20 && rv != 0; i++) {
        snprintf(s->url, sizeof s->url, "%s://127.0.0.1:%d", plain ? "tcp" : "tls+tcp",
                 th_free_port());
        rv = ihc_tls_listen(s->pull, s->url, s->t, NULL);
    }
    assert_int_equal(rv, 0);
}

static void server_stop(server *s)
{
    nng_close(s->pull);
    ihc_tls_free(s->t);
}

/* Dials s with t (NULL: plain) synchronously; returns nng's code. On success one message
 * goes through and the listener's pipe says it is verified (mutual) or not. */
static int dial_once(server *s, const ihc_tls *t, const char *url)
{
    nng_socket push;
    TH_PASS(nng_push0_open(&push));
    int rv = ihc_tls_dial(push, url ? url : s->url, t, NULL, 0);
    if (rv == 0) {
        assert_int_equal(nng_send(push, "hi", 2, 0), 0);
        nng_msg *m = NULL;
        nng_socket_set_ms(s->pull, NNG_OPT_RECVTIMEO, 5000);
        assert_int_equal(nng_recvmsg(s->pull, &m, 0), 0);
        bool verified = false;
        if (ihc_tls_mutual(s->t)) {
            assert_int_equal(
                nng_pipe_get_bool(nng_msg_get_pipe(m), NNG_OPT_TLS_VERIFIED, &verified), 0);
            assert_true(verified);
        }
        nng_msg_free(m);
    }
    nng_close(push);
    return rv;
}

/* Deadline of a probe in these tests: generous for valgrind (it ends at once otherwise). */
#define PROBE_MS 30000

static int probe(const ihc_tls *t, const server *s, char *why, size_t len)
{
    int rc = ihc_tls_probe(t, s->url, IHC_SP_PUSH, IHC_SP_PULL, PROBE_MS, why, len);
    print_message("probe: %s -> %s\n", ihc_err_name(rc), why);
    return rc;
}

static void expect_why(const char *why, const char *needle)
{
    if (strstr(why, needle) == NULL)
        fail_msg("probe said \"%s\", not \"%s\"", why, needle);
}

static void test_tls_server_only(void **state)
{
    (void)state;
    server s;
    server_start(&s, dir, false, false);
    char why[512];
    ihc_tls *ok = load(dir, NULL, "ca.pem", NULL);
    ihc_tls *wrong_ca = load(dir, NULL, path(other, "ca.pem"), NULL);
    ihc_tls *wrong_name = load(dir, NULL, "ca.pem", "coordinator.example");

    assert_int_equal(dial_once(&s, ok, NULL), 0);
    TH_PASS(probe(ok, &s, why, sizeof why));
    expect_why(why, "TLS handshake and SP negotiation succeeded");
    expect_why(why, "CN=coordinator");

    assert_int_equal(dial_once(&s, wrong_ca, NULL), NNG_ECRYPTO);
    TH_FAIL(probe(wrong_ca, &s, why, sizeof why), IHC_ETRANSPORT);
    expect_why(why, "the coordinator's certificate failed verification");
    expect_why(why, "not correctly signed by the trusted CA");
    expect_why(why, "subject \"CN=coordinator\"");
    expect_why(why, "issuer \"CN=ihc test CA\"");
    expect_why(why, "trusted CA \"CN=another CA\")");

    assert_int_equal(dial_once(&s, wrong_name, NULL), NNG_ECRYPTO);
    TH_FAIL(probe(wrong_name, &s, why, sizeof why), IHC_ETRANSPORT);
    expect_why(why, "does not match");
    expect_why(why, "expected name \"coordinator.example\"");

    /* a plain tcp:// dialer against the TLS listener is refused */
    char plain[96];
    snprintf(plain, sizeof plain, "tcp://%s", s.url + strlen("tls+tcp://"));
    assert_int_not_equal(dial_once(&s, NULL, plain), 0);
    /* and a tls+tcp:// dial without settings is refused before any connection */
    assert_int_equal(dial_once(&s, NULL, NULL), NNG_EINVAL);

    /* the listener still takes a good client after all of that */
    assert_int_equal(dial_once(&s, ok, NULL), 0);
    ihc_tls_free(ok);
    ihc_tls_free(wrong_ca);
    ihc_tls_free(wrong_name);
    server_stop(&s);
}

static void test_tls_mutual(void **state)
{
    (void)state;
    server s;
    server_start(&s, dir, true, false);
    char why[512];
    ihc_tls *agent = load(dir, "agent-1.pem", "ca.pem", NULL);
    ihc_tls *anon = load(dir, NULL, "ca.pem", NULL);
    ihc_tls *stranger = load(other, "agent-1.pem", path(dir, "ca.pem"), NULL);
    ihc_tls *old = load(dir, "old.pem", "ca.pem", NULL);

    assert_int_equal(dial_once(&s, agent, NULL), 0);
    TH_PASS(probe(agent, &s, why, sizeof why));

    assert_int_not_equal(dial_once(&s, anon, NULL), 0);
    TH_FAIL(probe(anon, &s, why, sizeof why), IHC_ETRANSPORT);
    expect_why(why, "requires a client certificate (mutual TLS) and none is configured");

    assert_int_not_equal(dial_once(&s, stranger, NULL), 0);
    TH_FAIL(probe(stranger, &s, why, sizeof why), IHC_ETRANSPORT);
    expect_why(why, "it refused this side's certificate");
    expect_why(why, "CN=agent-1");
    expect_why(why, "issuer \"CN=another CA\"), which is not issued by the CA this side trusts");

    assert_int_not_equal(dial_once(&s, old, NULL), 0);
    TH_FAIL(probe(old, &s, why, sizeof why), IHC_ETRANSPORT);
    expect_why(why, "which has expired (CN=old, expires 2020-01-02");

    assert_int_equal(dial_once(&s, agent, NULL), 0);
    ihc_tls_free(agent);
    ihc_tls_free(anon);
    ihc_tls_free(stranger);
    ihc_tls_free(old);
    server_stop(&s);
}

static void test_tls_probe_not_tls(void **state)
{
    (void)state;
    server s;
    server_start(&s, dir, false, true);
    ihc_tls *ok = load(dir, NULL, "ca.pem", NULL);
    char why[512], url[96];
    snprintf(url, sizeof url, "tls+tcp://%s", s.url + strlen("tcp://"));
    TH_FAIL(ihc_tls_probe(ok, url, IHC_SP_PUSH, IHC_SP_PULL, PROBE_MS, why, sizeof why),
            IHC_ETRANSPORT);
    expect_why(why, "does not speak TLS");
    expect_why(why, "tcp://, not tls+tcp://");

    /* nothing listening: not a TLS finding */
    snprintf(url, sizeof url, "tls+tcp://127.0.0.1:%d", th_free_port());
    TH_FAIL(ihc_tls_probe(ok, url, IHC_SP_PUSH, IHC_SP_PULL, PROBE_MS, why, sizeof why),
            IHC_ENOTCONN);
    expect_why(why, "cannot connect to 127.0.0.1");
    ihc_tls_free(ok);
    server_stop(&s);
}

/* The probe's SP header must be the one the listener expects, or it says so. */
static void test_tls_probe_wrong_protocol(void **state)
{
    (void)state;
    server s;
    server_start(&s, dir, false, false);
    ihc_tls *ok = load(dir, NULL, "ca.pem", NULL);
    char why[512];
    TH_FAIL(ihc_tls_probe(ok, s.url, IHC_SP_SUB, IHC_SP_PUB, PROBE_MS, why, sizeof why),
            IHC_ETRANSPORT);
    expect_why(why, "speaks SP protocol 81, not 32");
    ihc_tls_free(ok);
    server_stop(&s);
}

/* nng#1518: a listener may stop accepting after a peer leaves mid-handshake. Probes of every
 * kind, then a real client still gets in. */
static void test_tls_listener_survives_probes(void **state)
{
    (void)state;
    server s;
    server_start(&s, dir, true, false);
    ihc_tls *agent = load(dir, "agent-1.pem", "ca.pem", NULL);
    ihc_tls *anon = load(dir, NULL, "ca.pem", NULL);
    ihc_tls *wrong_ca = load(dir, "agent-1.pem", path(other, "ca.pem"), NULL);
    char why[512];
    for (int i = 0; i < 10; i++) {
        assert_int_equal(probe(agent, &s, why, sizeof why), IHC_OK);
        assert_int_equal(probe(anon, &s, why, sizeof why), IHC_ETRANSPORT);
        assert_int_equal(probe(wrong_ca, &s, why, sizeof why), IHC_ETRANSPORT);
    }
    assert_int_equal(dial_once(&s, agent, NULL), 0);
    ihc_tls_free(agent);
    ihc_tls_free(anon);
    ihc_tls_free(wrong_ca);
    server_stop(&s);
}

/* ---- the watchers ---- */

static atomic_int links_up;

static bool link_up(void *arg, size_t i)
{
    (void)arg;
    (void)i;
    return atomic_load(&links_up) != 0;
}

static void test_tls_doctor_logs_why(void **state)
{
    (void)state;
    server s;
    server_start(&s, dir, true, false);
    ihc_tls *anon = load(dir, NULL, "ca.pem", NULL);
    size_t from = th_file_size(logpath);
    ihc_tls_link l = {
        .name = "report", .url = s.url, .sp_self = IHC_SP_PUSH, .sp_peer = IHC_SP_PULL};
    atomic_store(&links_up, 0);
    ihc_tls_doctor *d = NULL;
    uint64_t t0 = ihc_mono_ns();
    TH_PASS(ihc_tls_doctor_start(&d, anon, &l, 1, link_up, NULL, "agent"));
    bool said = TH_WAIT(th_log_has(logpath, "requires a client certificate", from), 10000);
    print_message("doctor: first line after %.0f ms\n", (double)(ihc_mono_ns() - t0) / 1e6);
    if (!said)
        th_log_tail(logpath, 10);
    assert_true(said);
    assert_true(th_log_has(logpath, "TLS connection to the coordinator failed link=report", from));
    assert_true(th_log_has(logpath, "still retrying", from));
    /* the link comes up: said once */
    atomic_store(&links_up, 1);
    assert_true(TH_WAIT(th_log_has(logpath, "TLS connection up link=report", from), 5000));
    ihc_tls_doctor_stop(d);
    ihc_tls_doctor_stop(NULL);

    /* a doctor stops at once even while a probe waits for an answer: a listener that takes
     * the TCP connection and never says a word */
    int bh = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = th_free_port();
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(bh, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(bh, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(bh, 4), 0);
    char bh_url[64];
    snprintf(bh_url, sizeof bh_url, "tls+tcp://127.0.0.1:%d", port);
    ihc_tls_link quiet = {
        .name = "pub", .url = bh_url, .sp_self = IHC_SP_SUB, .sp_peer = IHC_SP_PUB};
    atomic_store(&links_up, 0);
    TH_PASS(ihc_tls_doctor_start(&d, anon, &quiet, 1, link_up, NULL, "agent"));
    struct pollfd pfd = {.fd = bh, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 20000), 1); /* the probe is connected and waiting */
    int conn = accept(bh, NULL, NULL);
    assert_true(conn >= 0);
    pfd.fd = conn; /* its ClientHello came: it waits for an answer now */
    assert_int_equal(poll(&pfd, 1, 20000), 1);
    t0 = ihc_mono_ns();
    ihc_tls_doctor_stop(d);
    uint64_t took_ms = (ihc_mono_ns() - t0) / 1000000u;
    print_message("doctor: stopped in %llu ms during a probe\n", (unsigned long long)took_ms);
    assert_true(took_ms < 1500); /* a probe alone would wait 2 s */
    close(conn);
    close(bh);
    ihc_tls_free(anon);
    server_stop(&s);
}

static void test_tls_refusals_logged(void **state)
{
    (void)state;
    server s;
    server_start(&s, dir, true, false);
    ihc_tls *anon = load(dir, NULL, "ca.pem", NULL);
    size_t from = th_file_size(logpath);
    ihc_tls_refusals *r = NULL;
    TH_PASS(ihc_tls_refusals_start(&r, 100, "coordinator"));
    for (int i = 0; i < 3; i++)
        assert_int_not_equal(dial_once(&s, anon, NULL), 0);
    char needle[128];
    snprintf(needle, sizeof needle, "TLS handshakes refused url=%s count=", s.url);
    assert_true(TH_WAIT(th_log_has(logpath, needle, from), 10000));
    snprintf(needle, sizeof needle, "total=3: a client certificate missing");
    bool said = TH_WAIT(th_log_has(logpath, needle, from), 10000);
    if (!said)
        th_log_tail(logpath, 10);
    assert_true(said);
    ihc_tls_refusals_stop(r);
    ihc_tls_refusals_stop(NULL);
    ihc_tls_free(anon);
    server_stop(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_load_errors),
        cmocka_unit_test(test_tls_load_ok_and_warnings),
        cmocka_unit_test(test_tls_urls),
        cmocka_unit_test(test_tls_server_only),
        cmocka_unit_test(test_tls_mutual),
        cmocka_unit_test(test_tls_probe_not_tls),
        cmocka_unit_test(test_tls_probe_wrong_protocol),
        cmocka_unit_test(test_tls_listener_survives_probes),
        cmocka_unit_test(test_tls_doctor_logs_why),
        cmocka_unit_test(test_tls_refusals_logged),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
