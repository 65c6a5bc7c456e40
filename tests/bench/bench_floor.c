/* The floor of ihc's transport: a bare nng PUB → N SUB processes → PUSH acks → PULL
 * round, with nothing else (no encoding, no Redis, no agent logic). ihc end to end is
 * compared against this.
 * Usage: bench_floor [--agents N] [--iterations K] [--samples F]
 *        bench_floor [--agents N] --throughput SECONDS [--window W]
 *        bench_floor --reqrep [--iterations K]
 * The throughput mode keeps W broadcasts in flight, each addressed to one subscriber's
 * topic in turn (every subscriber still receives every broadcast: nng filters in SUB),
 * and counts the acks per second: the most a PUB/SUB fan-out with acks carries here.
 * The reqrep mode times the hop every request to a coordinator pays on top: a REQ → REP
 * echo round trip between two processes, nothing else. */
#include "bench_util.h"

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <sys/resource.h>

static char pub_url[64], pull_url[64];
static const char topic[] = "hw:bench"; /* with its NUL, as ihc frames it */

/* CPU time (user + system) of this process so far, in microseconds. */
static double self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* CPU time of another process so far, in microseconds (0 when unreadable). */
static double pid_cpu_us(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

static void die(const char *what, int rv)
{
    fprintf(stderr, "bench_floor: %s: %s\n", what, nng_strerror(rv));
    exit(1);
}

/* A subscriber process: every broadcast is answered with one ack carrying its payload. */
static void subscriber(int idx)
{
    nng_socket sub, push;
    int rv;
    if ((rv = nng_sub0_open(&sub)) || (rv = nng_push0_open(&push)))
        die("open", rv);
    char own[32];
    int own_len = snprintf(own, sizeof(own), "hw:tp-%d", idx) + 1;
    nng_socket_set(sub, NNG_OPT_SUB_SUBSCRIBE, topic, sizeof(topic));
    nng_socket_set(sub, NNG_OPT_SUB_SUBSCRIBE, own, (size_t)own_len);
    nng_socket_set_ms(sub, NNG_OPT_RECONNMINT, 10);
    nng_socket_set_ms(push, NNG_OPT_RECONNMINT, 10);
    if ((rv = nng_dial(sub, pub_url, NULL, NNG_FLAG_NONBLOCK)) ||
        (rv = nng_dial(push, pull_url, NULL, NNG_FLAG_NONBLOCK)))
        die("dial", rv);
    for (;;) {
        nng_msg *m;
        if (nng_recvmsg(sub, &m, 0) != 0)
            break;
        uint64_t seq = 0;
        size_t tl = strnlen(nng_msg_body(m), nng_msg_len(m)) + 1;
        if (nng_msg_len(m) >= tl + 8)
            memcpy(&seq, (char *)nng_msg_body(m) + tl, 8);
        nng_msg_free(m);
        uint64_t ack[2] = {seq, (uint64_t)idx};
        nng_send(push, ack, sizeof(ack), 0);
    }
}

static void publish(nng_socket pub, uint64_t seq)
{
    char buf[sizeof(topic) + 8];
    memcpy(buf, topic, sizeof(topic));
    memcpy(buf + sizeof(topic), &seq, 8);
    nng_send(pub, buf, sizeof(buf), 0);
}

/* Throughput mode: one broadcast to subscriber idx's own topic. */
static void publish_to(nng_socket pub, int idx, uint64_t seq)
{
    char buf[48];
    int tl = snprintf(buf, sizeof(buf) - 8, "hw:tp-%d", idx) + 1;
    memcpy(buf + tl, &seq, 8);
    nng_send(pub, buf, (size_t)tl + 8, 0);
}

/* Keeps window broadcasts in flight for seconds; prints acks per second. */
static void throughput(nng_socket pub, nng_socket pull, int agents, int seconds, int window,
                       uint64_t seq)
{
    nng_socket_set_ms(pull, NNG_OPT_RECVTIMEO, 1000);
    for (int w = 0; w < window; w++, seq++)
        publish_to(pub, (int)(seq % (uint64_t)agents), seq);
    long acks = 0, timeouts = 0;
    uint64_t t0 = bench_ns(), end = t0 + (uint64_t)seconds * 1000000000u;
    while (bench_ns() < end) {
        uint64_t ack[2];
        size_t len = sizeof(ack);
        if (nng_recv(pull, ack, &len, 0) == 0)
            acks++;
        else
            timeouts++; /* a broadcast lost: put another in flight */
        publish_to(pub, (int)(seq % (uint64_t)agents), seq);
        seq++;
    }
    double secs = (double)(bench_ns() - t0) / 1e9;
    printf("{\"name\":\"nng_floor_throughput\",\"agents\":%d,\"window\":%d,\"seconds\":%d,"
           "\"acks\":%ld,\"lost\":%ld,\"per_second\":%.0f}\n",
           agents, window, seconds, acks, timeouts, (double)acks / secs);
}

/* Waits for n acks of seq (older ones are discarded); returns how many arrived. */
static int collect(nng_socket pull, uint64_t seq, int n, char *seen)
{
    int got = 0;
    memset(seen, 0, (size_t)n);
    while (got < n) {
        uint64_t ack[2];
        size_t len = sizeof(ack);
        if (nng_recv(pull, ack, &len, 0) != 0)
            break; /* timeout */
        if (len == sizeof(ack) && ack[0] == seq && ack[1] < (uint64_t)n && !seen[ack[1]]) {
            seen[ack[1]] = 1;
            got++;
        }
    }
    return got;
}

/* The echo process of the reqrep mode. */
static void echo_server(const char *url)
{
    nng_socket rep;
    int rv;
    if ((rv = nng_rep0_open(&rep)) || (rv = nng_dial(rep, url, NULL, NNG_FLAG_NONBLOCK)))
        die("rep", rv);
    for (;;) {
        nng_msg *m;
        if (nng_recvmsg(rep, &m, 0) != 0 || nng_sendmsg(rep, m, 0) != 0)
            break;
    }
}

/* REQ → REP echo round trips to another process; prints the latency distribution. */
static int reqrep(int iters)
{
    nng_socket req;
    nng_listener l;
    int rv, port;
    if ((rv = nng_req0_open(&req)) || (rv = nng_listen(req, "tcp://127.0.0.1:0", &l, 0)))
        die("req", rv);
    nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port);
    char url[64];
    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/proc/self/exe", "bench_floor", "--echo", url, (char *)NULL);
        _exit(127);
    }
    nng_socket_set_ms(req, NNG_OPT_RECVTIMEO, 5000);
    char body[64] = "interrupt";
    bench_samples s = {0};
    for (int k = -100; k < iters; k++) { /* 100 rounds of warm-up */
        size_t len = sizeof(body);
        uint64_t t0 = bench_ns();
        if (nng_send(req, body, sizeof(body), 0) != 0 || nng_recv(req, body, &len, 0) != 0) {
            fprintf(stderr, "bench_floor: echo process did not answer\n");
            bench_reap(&pid, 1);
            return 1;
        }
        if (k >= 0)
            bench_add(&s, (double)(bench_ns() - t0) / 1e3);
    }
    bench_report(stdout, "nng_reqrep", 0, &s, NULL);
    bench_reap(&pid, 1);
    nng_close(req);
    free(s.v);
    return 0;
}

/* nng is not fork-safe once initialised, so subscribers are fresh processes (re-exec). */
static pid_t spawn_subscriber(int idx)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char num[16];
        snprintf(num, sizeof(num), "%d", idx);
        execl("/proc/self/exe", "bench_floor", "--sub", num, pub_url, pull_url, (char *)NULL);
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "--sub")) {
        snprintf(pub_url, sizeof(pub_url), "%s", argv[3]);
        snprintf(pull_url, sizeof(pull_url), "%s", argv[4]);
        subscriber(atoi(argv[2]));
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "--echo")) {
        echo_server(argv[2]);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "--reqrep"))
        return reqrep(argc == 4 && !strcmp(argv[2], "--iterations") ? atoi(argv[3]) : 2000);
    int agents = 8, iters = 2000, tp_seconds = 0, window = 8;
    const char *samples = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--agents"))
            agents = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--iterations"))
            iters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--samples"))
            samples = argv[i + 1];
        else if (!strcmp(argv[i], "--throughput"))
            tp_seconds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--window"))
            window = atoi(argv[i + 1]);
    }
    if (agents < 1 || iters < 1 || tp_seconds < 0 || window < 1) {
        fprintf(stderr, "usage: bench_floor [--agents N] [--iterations K] [--samples F]\n"
                        "       bench_floor [--agents N] --throughput SECONDS [--window W]\n");
        return 2;
    }
    nng_socket pub, pull;
    nng_listener lp, ll;
    int rv;
    if ((rv = nng_pub0_open(&pub)) || (rv = nng_pull0_open(&pull)))
        die("open", rv);
    if ((rv = nng_listen(pub, "tcp://127.0.0.1:0", &lp, 0)) ||
        (rv = nng_listen(pull, "tcp://127.0.0.1:0", &ll, 0)))
        die("listen", rv);
    int p1, p2;
    nng_listener_get_int(lp, NNG_OPT_TCP_BOUND_PORT, &p1);
    nng_listener_get_int(ll, NNG_OPT_TCP_BOUND_PORT, &p2);
    snprintf(pub_url, sizeof(pub_url), "tcp://127.0.0.1:%d", p1);
    snprintf(pull_url, sizeof(pull_url), "tcp://127.0.0.1:%d", p2);
    nng_socket_set_int(pub, NNG_OPT_SENDBUF, 1024);
    nng_socket_set_int(pull, NNG_OPT_RECVBUF, 1024);

    pid_t *pids = calloc((size_t)agents, sizeof(pid_t));
    char *seen = calloc((size_t)agents, 1);
    for (int i = 0; i < agents; i++)
        pids[i] = spawn_subscriber(i);

    /* Warm up until every subscriber answers (the slow-joiner problem). */
    nng_socket_set_ms(pull, NNG_OPT_RECVTIMEO, 50);
    uint64_t seq = 1;
    uint64_t until = bench_ns() + 30ull * 1000000000u;
    for (;; seq++) {
        publish(pub, seq);
        if (collect(pull, seq, agents, seen) == agents)
            break;
        if (bench_ns() > until) {
            fprintf(stderr, "bench_floor: subscribers did not connect\n");
            bench_reap(pids, agents);
            return 1;
        }
    }
    if (tp_seconds > 0) {
        throughput(pub, pull, agents, tp_seconds, window, seq + 1);
        goto out;
    }
    nng_socket_set_ms(pull, NNG_OPT_RECVTIMEO, 1000);
    bench_samples s = {0};
    int lost = 0;
    double c0 = self_cpu_us(), a0 = 0;
    for (int i = 0; i < agents; i++)
        a0 += pid_cpu_us(pids[i]);
    for (int k = 0; k < iters; k++) {
        seq++;
        uint64_t t0 = bench_ns();
        publish(pub, seq);
        if (collect(pull, seq, agents, seen) == agents)
            bench_add(&s, (double)(bench_ns() - t0) / 1e3);
        else
            lost++;
        bench_progress("nng floor", (size_t)k + 1, (size_t)iters);
    }
    double c1 = self_cpu_us(), a1 = 0;
    for (int i = 0; i < agents; i++)
        a1 += pid_cpu_us(pids[i]);
    if (lost)
        fprintf(stderr, "bench_floor: %d rounds incomplete (pub/sub drops)\n", lost);
    /* the publisher's CPU per round and per subscriber: the coordinator's counterpart */
    char extra[256];
    snprintf(extra, sizeof(extra),
             ",\"lost\":%d,\"coord_cpu_us\":%.1f,\"coord_cpu_us_per_agent\":%.2f,"
             "\"agent_cpu_us\":%.1f",
             lost, (c1 - c0) / iters, (c1 - c0) / iters / agents, (a1 - a0) / iters / agents);
    bench_report_ex(stdout, "nng_floor", agents, &s, samples, extra);
    free(s.v);
out:
    bench_reap(pids, agents);
    nng_close(pub);
    nng_close(pull);
    free(pids);
    free(seen);
    return 0;
}
