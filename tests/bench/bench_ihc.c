/* ihc end to end: a request → the coordinator → every one of N agents has stopped its
 * session and answered → the result returned. Real ihc-coordinator, real agent processes
 * (bench_agent, embedding libihc-agent), real redis-server (started by tests/bench/run.sh).
 *   latency:    bench_ihc --bin DIR --redis-port P --agents N --iterations K
 *                         --via control|http [--samples F]
 *   throughput: bench_ihc … --agents 8 --throughput SECONDS --clients C
 *               (each agent holds one hardware_id per client, "tp-<agent>-<client>", as a
 *               device's work lives on one node; client c interrupts tp-*-c round robin,
 *               so each interrupt stops one agent's session and no two clients race on
 *               one hardware_id)
 *   sessions:   bench_ihc … --preload-sessions 100000   (latency with a big Redis state)
 *   TLS:        bench_ihc … --tls CERTDIR   (every socket on tls+tcp:// with mutual TLS;
 *               CERTDIR from deploy/make-certs.sh; reported as ihc_control_tls)
 *   steady:     bench_ihc … --steady   (every agent holds a session of each round's hardware_id,
 *               "bench-<k>", from the start: nothing is begun during the run; the churn
 *               default begins a new session of "bench" in every agent after each interrupt)
 *   simulated:  bench_ihc … --sim   (the N agents are bench_sim's lightweight ones, in one
 *               process: the coordinator's cost per agent at N up to 128)
 * Every latency run also prints the CPU time per interrupt of the coordinator and of the agents
 * (from /proc/PID/stat over the measured rounds). --coord / --agent choose other binaries
 * (e.g. an older build, for before/after numbers). */
#include "bench_util.h"

#include "tls.h"
#include "wire.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

static const char *bindir = "build/bin";
static const char *coord_path, *agent_path;
static int redis_port = 6379;
static int pub_port, rep_port, ctl_port, http_port;
static char ctl_url[64];
static const char *tls_dir; /* --tls: certificates of deploy/make-certs.sh */
static ihc_tls *tls;        /* the control client's (client.pem) */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

static pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* ---- control socket client: one REQ socket per thread ---- */
typedef struct {
    nng_socket s;
} ctl_client;

static int ctl_open(ctl_client *c)
{
    if (nng_req0_open(&c->s) != 0)
        return -1;
    nng_socket_set_ms(c->s, NNG_OPT_RECVTIMEO, 10000);
    nng_socket_set_ms(c->s, NNG_OPT_REQ_RESENDTIME, 0);
    return ihc_tls_dial(c->s, ctl_url, tls, NULL, NNG_FLAG_NONBLOCK) == 0 ? 0 : -1;
}

/* Sends one control request; returns the response status, the expected and answered counts
 * parsed from the JSON (cheap string search: benchmark, not production). */
static int ctl_call(ctl_client *c, const char *op, const char *hw, int *expected, int *answered)
{
    ihc_msg req = {.type = IHC_MSG_CONTROL_REQUEST};
    req.u.control_request.op = (char *)op;
    req.u.control_request.hw = (char *)hw;
    req.u.control_request.timeout_ms = 5000;
    uint8_t *buf;
    size_t len;
    if (ihc_wire_encode(&req, NULL, &buf, &len) != 0)
        return -1;
    int rv = nng_send(c->s, buf, len, 0);
    free(buf);
    if (rv != 0)
        return -1;
    void *rb;
    size_t rl;
    if (nng_recv(c->s, &rb, &rl, NNG_FLAG_ALLOC) != 0)
        return -1;
    ihc_msg *m = NULL;
    int status = -1;
    if (ihc_wire_decode(rb, rl, NULL, &m, NULL, 0) == 0 && m->type == IHC_MSG_CONTROL_RESPONSE) {
        status = m->u.control_response.status;
        const char *j = m->u.control_response.json;
        if (expected && answered) {
            /* "agents":{"expected":[…],"answered":[…] — count the quoted ids. */
            *expected = *answered = 0;
            const char *e = strstr(j, "\"expected\":["), *a = strstr(j, "\"answered\":[");
            for (const char *p = e ? e + 12 : ""; *p && *p != ']'; p++)
                *expected += *p == ',' || (p[-1] == '[' && *p == '"');
            for (const char *p = a ? a + 12 : ""; *p && *p != ']'; p++)
                *answered += *p == ',' || (p[-1] == '[' && *p == '"');
        }
    }
    ihc_msg_free(m);
    nng_free(rb, rl);
    return status;
}

/* A query ("sessions", "agents", …); *json is the document (caller frees). Returns the
 * status, or -1. */
static int ctl_query(ctl_client *c, const char *op, const char *hw, char **json)
{
    *json = NULL;
    ihc_msg req = {.type = IHC_MSG_CONTROL_REQUEST};
    req.u.control_request.op = (char *)op;
    req.u.control_request.hw = (char *)hw;
    uint8_t *buf;
    size_t len;
    if (ihc_wire_encode(&req, NULL, &buf, &len) != 0)
        return -1;
    int rv = nng_send(c->s, buf, len, 0);
    free(buf);
    void *rb;
    size_t rl;
    if (rv != 0 || nng_recv(c->s, &rb, &rl, NNG_FLAG_ALLOC) != 0)
        return -1;
    ihc_msg *m = NULL;
    int status = -1;
    if (ihc_wire_decode(rb, rl, NULL, &m, NULL, 0) == 0 && m->type == IHC_MSG_CONTROL_RESPONSE) {
        status = m->u.control_response.status;
        *json = strdup(m->u.control_response.json);
    }
    ihc_msg_free(m);
    nng_free(rb, rl);
    return status;
}

/* ---- HTTP client: one keep-alive connection ---- */
static int http_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)http_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int http_interrupt(int fd, const char *hw, int *expected, int *answered)
{
    char body[128], req[512];
    int bl = snprintf(body, sizeof(body), "{\"hardware_id\":\"%s\",\"timeout_ms\":5000}", hw);
    int rl = snprintf(req, sizeof(req),
                      "POST /v1/interrupt HTTP/1.1\r\nHost: b\r\nContent-Type: "
                      "application/json\r\nContent-Length: %d\r\n\r\n%s",
                      bl, body);
    if (write(fd, req, (size_t)rl) != rl)
        return -1;
    static __thread char buf[65536];
    size_t len = 0;
    long clen = -1;
    char *hdr_end = NULL;
    for (;;) {
        ssize_t r = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (r <= 0)
            return -1;
        len += (size_t)r;
        buf[len] = '\0';
        if (!hdr_end && (hdr_end = strstr(buf, "\r\n\r\n"))) {
            char *cl = strcasestr(buf, "Content-Length:");
            clen = cl ? atol(cl + 15) : -1;
        }
        if (hdr_end && clen >= 0 && (size_t)(hdr_end + 4 - buf) + (size_t)clen <= len)
            break;
    }
    int status = atoi(buf + 9);
    *expected = *answered = 0;
    const char *e = strstr(hdr_end, "\"expected\":["), *a = strstr(hdr_end, "\"answered\":[");
    for (const char *p = e ? e + 12 : ""; *p && *p != ']'; p++)
        *expected += *p == ',' || (p[-1] == '[' && *p == '"');
    for (const char *p = a ? a + 12 : ""; *p && *p != ']'; p++)
        *answered += *p == ',' || (p[-1] == '[' && *p == '"');
    return status;
}

/* ---- throughput ---- */
static atomic_long done_ok, done_bad;
static atomic_int running;
static int n_agents;

static void *tp_client(void *arg)
{
    int client = (int)(intptr_t)arg;
    ctl_client c;
    if (ctl_open(&c) != 0)
        return NULL;
    for (unsigned k = 0; atomic_load(&running); k++) {
        int e, a;
        char hw[32];
        snprintf(hw, sizeof(hw), "tp-%d-%d", (int)((k + (unsigned)client) % (unsigned)n_agents),
                 client);
        int st = ctl_call(&c, "interrupt", hw, &e, &a);
        if (st == 200 && e == 1 && a == 1)
            atomic_fetch_add(&done_ok, 1);
        else
            atomic_fetch_add(&done_bad, 1);
    }
    nng_close(c.s);
    return NULL;
}

static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6))
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

/* --tls: the environment the coordinator (who == NULL) or an agent is started with, and the
 * control client's files. */
static void tls_env(const char *who)
{
    char p[600];
    snprintf(p, sizeof(p), "%s/ca.pem", tls_dir);
    setenv("IHC_TLS_CA", p, 1);
    snprintf(p, sizeof(p), "%s/%s.pem", tls_dir, who ? who : "coordinator");
    setenv("IHC_TLS_CERT", p, 1);
    snprintf(p, sizeof(p), "%s/%s.key", tls_dir, who ? who : "coordinator");
    setenv("IHC_TLS_KEY", p, 1);
}

static int tls_client(void)
{
    char ca[600], cert[600], key[600], err[512];
    snprintf(ca, sizeof(ca), "%s/ca.pem", tls_dir);
    snprintf(cert, sizeof(cert), "%s/client.pem", tls_dir);
    snprintf(key, sizeof(key), "%s/client.key", tls_dir);
    ihc_tls_files f = {.cert = cert, .key = key, .ca = ca};
    if (ihc_tls_load(&tls, &f, NULL, err, sizeof(err), NULL, 0) != 0) {
        fprintf(stderr, "bench_ihc: --tls: %s\n", err);
        return -1;
    }
    return 0;
}

/* CPU time (user + system) of pid so far, in microseconds; threads that ended included. */
static double cpu_us(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

static double cpu_sum_us(const pid_t *pids, int n)
{
    double t = 0;
    for (int i = 0; i < n; i++)
        t += cpu_us(pids[i]);
    return t;
}

/* Counts the session ids of a "sessions" document (cheap string search). */
static int count_sessions(const char *json)
{
    int n = 0;
    for (const char *p = json; (p = strstr(p, "\"session_id\"")); p++)
        n++;
    return n;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_ihc --bin DIR --redis-port P [--agents N] [--iterations K]\n"
            "                 [--via control|http] [--samples F] [--steady] [--sim]\n"
            "                 [--preload-sessions S] [--throughput SECONDS --clients C]\n"
            "                 [--logdir DIR] [--coord BIN] [--agent BIN] [--tls CERTDIR]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int iters = 1000, tp_seconds = 0, clients = 4;
    bool sim = false, steady = false;
    long preload = 0;
    const char *via = "control", *samples = NULL, *logdir = "/tmp";
    n_agents = 8;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--sim")) {
            sim = true;
            continue;
        }
        if (!strcmp(k, "--steady")) {
            steady = true;
            continue;
        }
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(k, "--bin"))
            bindir = v;
        else if (!strcmp(k, "--redis-port"))
            redis_port = atoi(v);
        else if (!strcmp(k, "--agents"))
            n_agents = atoi(v);
        else if (!strcmp(k, "--iterations"))
            iters = atoi(v);
        else if (!strcmp(k, "--via"))
            via = v;
        else if (!strcmp(k, "--samples"))
            samples = v;
        else if (!strcmp(k, "--throughput"))
            tp_seconds = atoi(v);
        else if (!strcmp(k, "--clients"))
            clients = atoi(v);
        else if (!strcmp(k, "--preload-sessions"))
            preload = atol(v);
        else if (!strcmp(k, "--logdir"))
            logdir = v;
        else if (!strcmp(k, "--coord"))
            coord_path = v;
        else if (!strcmp(k, "--agent"))
            agent_path = v;
        else if (!strcmp(k, "--tls"))
            tls_dir = v;
        else
            usage();
    }
    /* bench_sim's agents speak plain tcp:// only */
    if (n_agents < 1 || iters < 1 || (steady && tp_seconds) || (sim && (tp_seconds || tls_dir)))
        usage();
    const char *scheme = tls_dir ? "tls+tcp" : "tcp";
    if (tls_dir && tls_client() != 0)
        return 1;
    pub_port = free_port();
    rep_port = free_port();
    ctl_port = free_port();
    http_port = free_port();
    char pub_url[64], rep_url[64], http_addr[64], redis_url[64], coord_bin[512], agent_bin[512],
        log[512], steady_arg[16];
    snprintf(pub_url, sizeof(pub_url), "%s://127.0.0.1:%d", scheme, pub_port);
    snprintf(rep_url, sizeof(rep_url), "%s://127.0.0.1:%d", scheme, rep_port);
    snprintf(ctl_url, sizeof(ctl_url), "%s://127.0.0.1:%d", scheme, ctl_port);
    snprintf(http_addr, sizeof(http_addr), "127.0.0.1:%d", http_port);
    snprintf(redis_url, sizeof(redis_url), "redis://127.0.0.1:%d/0", redis_port);
    snprintf(steady_arg, sizeof(steady_arg), "%d", iters);
    if (coord_path)
        snprintf(coord_bin, sizeof(coord_bin), "%s", coord_path);
    else
        snprintf(coord_bin, sizeof(coord_bin), "%s/ihc-coordinator", bindir);
    if (agent_path)
        snprintf(agent_bin, sizeof(agent_bin), "%s", agent_path);
    else
        snprintf(agent_bin, sizeof(agent_bin), "%s/%s", bindir, sim ? "bench_sim" : "bench_agent");

    if (preload > 0) {
        /* 100k sessions of other hardware_ids, as a busy fleet would leave in Redis. */
        char cmd[512];
        snprintf(cmd, sizeof(cmd),
                 "for i in $(seq 1 %ld); do printf 'HSET ihc:session:{load-%%d}:s-%%d "
                 "session_id s-%%d hardware_id load-%%d agent_id gone:1 state active epoch 0 "
                 "created_ms 1 updated_ms 1\\nSADD ihc:hw:{load-%%d}:sessions s-%%d\\n' $i $i $i "
                 "$i $i $i; done | redis-cli -p %d --pipe >/dev/null",
                 preload, redis_port);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_ihc: preload failed\n");
    }
    setenv("LOG_INTERRUPTS", "false", 1);
    setenv("IHC_LOG_LEVEL", "warn", 1);
    setenv("IHC_MAX_INFLIGHT", "100000", 1);
    if (steady) /* every agent holds one session per round */
        setenv("MAX_ACTIVE_SESSIONS", steady_arg, 1);
    snprintf(log, sizeof(log), "%s/bench-coordinator.log", logdir);
    char *cargv[] = {coord_bin, "--pub",  pub_url,   "--report", rep_url,   "--control",
                     ctl_url,   "--http", http_addr, "--redis",  redis_url, NULL};
    if (tls_dir)
        tls_env(NULL);
    pid_t coord = spawn(cargv, log);
    if (tls_dir)
        tls_env("agent-1"); /* every agent presents the same enrolled certificate */
    int n_procs = sim ? 1 : n_agents;
    pid_t *agents = calloc((size_t)n_procs, sizeof(pid_t));
    if (sim) {
        char nbuf[16];
        snprintf(nbuf, sizeof(nbuf), "%d", n_agents);
        snprintf(log, sizeof(log), "%s/bench-sim.log", logdir);
        char *sargv[] = {agent_bin,  "--pub", pub_url,    "--report", rep_url,
                         "--agents", nbuf,    "--steady", steady_arg, NULL};
        if (!steady)
            sargv[7] = NULL;
        agents[0] = spawn(sargv, log);
    }
    for (int i = 0; !sim && i < n_agents; i++) {
        char id[32];
        snprintf(id, sizeof(id), "bench-%d", i);
        snprintf(log, sizeof(log), "%s/bench-agent-%d.log", logdir, i);
        char hwlist[1024] = "bench";
        if (tp_seconds > 0) {
            size_t off = 0;
            for (int k = 0; k < clients && off < sizeof(hwlist) - 32; k++)
                off += (size_t)snprintf(hwlist + off, sizeof(hwlist) - off, "%stp-%d-%d",
                                        k ? "," : "", i, k);
        }
        char *aargv[] = {agent_bin,  "--pub", pub_url, "--report", rep_url,
                         "--id",     id,      "--hw",  hwlist,     steady ? "--steady" : NULL,
                         steady_arg, NULL};
        agents[i] = spawn(aargv, log);
    }
    ctl_client c;
    if (ctl_open(&c) != 0) {
        fprintf(stderr, "bench_ihc: cannot open control client\n");
        return 1;
    }
    /* Wait until every agent is known: an interrupt reaches all of them (throughput: each
     * agent's last hw; steady: the last round's hw holds N sessions, none spent). */
    /* steady: every agent begins all its sessions at once; on a loaded machine that takes */
    uint64_t until = bench_ns() + (steady ? 180ull : 60ull) * 1000000000u;
    for (int ready = 0; ready < (tp_seconds > 0 ? n_agents : 1);) {
        int e = 0, a = 0, want = tp_seconds > 0 ? 1 : n_agents;
        char hw[32] = "bench";
        if (tp_seconds > 0)
            snprintf(hw, sizeof(hw), "tp-%d-%d", ready, clients - 1);
        if (steady) {
            snprintf(hw, sizeof(hw), "bench-%d", iters - 1);
            char *doc = NULL;
            if (ctl_query(&c, "sessions", hw, &doc) == 200 && count_sessions(doc) == n_agents)
                ready++;
            e = doc ? count_sessions(doc) : 0;
            free(doc);
        } else if (ctl_call(&c, "interrupt", hw, &e, &a) == 200 && e == want && a == want) {
            ready++;
        }
        if (ready)
            continue;
        if (bench_ns() > until) {
            fprintf(stderr, "bench_ihc: agents did not all register (expected %d, last %d)\n",
                    n_agents, e);
            bench_reap(agents, n_procs);
            bench_reap(&coord, 1);
            return 1;
        }
        usleep(20000);
    }
    if (tp_seconds > 0) {
        atomic_store(&running, 1);
        pthread_t *t = calloc((size_t)clients, sizeof(pthread_t));
        for (int i = 0; i < clients; i++)
            pthread_create(&t[i], NULL, tp_client, (void *)(intptr_t)i);
        for (int s = 0; s < tp_seconds; s++) {
            sleep(1);
            fprintf(stderr, "\rthroughput: %ds %ld ok", s + 1, atomic_load(&done_ok));
        }
        atomic_store(&running, 0);
        for (int i = 0; i < clients; i++)
            pthread_join(t[i], NULL);
        fprintf(stderr, "\n");
        printf("{\"name\":\"ihc_throughput\",\"agents\":%d,\"clients\":%d,\"seconds\":%d,"
               "\"interrupts_ok\":%ld,\"interrupts_incomplete\":%ld,\"per_second\":%.0f,"
               "\"coordinator_rss_kb\":%ld}\n",
               n_agents, clients, tp_seconds, atomic_load(&done_ok), atomic_load(&done_bad),
               (double)atomic_load(&done_ok) / tp_seconds, rss_kb(coord));
        free(t);
    } else {
        bench_samples s = {0};
        int incomplete = 0, fd = -1;
        bool http = !strcmp(via, "http");
        if (http && (fd = http_connect()) < 0) {
            fprintf(stderr, "bench_ihc: cannot connect HTTP\n");
            return 1;
        }
        double c0 = cpu_us(coord), a0 = cpu_sum_us(agents, n_procs);
        uint64_t w0 = bench_ns();
        for (int k = 0; k < iters; k++) {
            int e = 0, a = 0;
            char hw[32] = "bench";
            if (steady)
                snprintf(hw, sizeof(hw), "bench-%d", k);
            uint64_t t0 = bench_ns();
            int st = http ? http_interrupt(fd, hw, &e, &a) : ctl_call(&c, "interrupt", hw, &e, &a);
            double us = (double)(bench_ns() - t0) / 1e3;
            if (st == 200 && e == n_agents && a == n_agents)
                bench_add(&s, us);
            else
                incomplete++;
            bench_progress(http ? "ihc http" : "ihc control", (size_t)k + 1, (size_t)iters);
        }
        double wall = (double)(bench_ns() - w0) / 1e3;
        double c1 = cpu_us(coord), a1 = cpu_sum_us(agents, n_procs);
        if (incomplete)
            fprintf(stderr, "bench_ihc: %d rounds did not reach all %d agents\n", incomplete,
                    n_agents);
        char name[64];
        snprintf(name, sizeof(name), "ihc_%s%s%s", via, preload ? "_100k_sessions" : "",
                 tls_dir ? "_tls" : "");
        char extra[512];
        snprintf(extra, sizeof(extra),
                 ",\"variant\":\"%s\",\"sim\":%s,\"incomplete\":%d,"
                 "\"wall_us_per_interrupt\":%.1f,\"coord_cpu_us\":%.1f,"
                 "\"coord_cpu_us_per_agent\":%.2f,\"agent_cpu_us\":%.1f,"
                 "\"coordinator_rss_kb\":%ld",
                 steady ? "steady" : "churn", sim ? "true" : "false", incomplete, wall / iters,
                 (c1 - c0) / iters, (c1 - c0) / iters / n_agents, (a1 - a0) / iters / n_agents,
                 rss_kb(coord));
        bench_report_ex(stdout, name, n_agents, &s, samples, extra);
        if (fd >= 0)
            close(fd);
        free(s.v);
    }
    nng_close(c.s);
    bench_reap(agents, n_procs);
    bench_reap(&coord, 1);
    free(agents);
    ihc_tls_free(tls);
    return 0;
}
