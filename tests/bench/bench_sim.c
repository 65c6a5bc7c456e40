/* Many lightweight agents in one process, for measuring the coordinator's cost per agent at
 * N up to 128 without 128 processes drowning 2 cores: each simulated agent has its own SUB
 * and PUSH sockets (so the coordinator sees N real connections) and speaks the same wire as
 * libihc-agent (hello until synced, heartbeats, session_begin, reports with three modules
 * and, to a coordinator whose sync says report_begun, the session begun during the interrupt),
 * but all of them run on nng's shared task threads, in receive callbacks, with no module
 * threads. What they cost themselves is not what a real agent costs (bench_agent is).
 *   churn:  each agent holds one session of HW and begins a new one after every interrupt
 *   steady: --steady R: each agent holds one session of each of HW-0 … HW-(R-1) from the
 *           start (sent in its hello) and begins nothing during the run
 * Usage: bench_sim --pub URL --report URL --agents N [--hw HW] [--prefix ID] [--steady R]
 * Runs until SIGTERM or SIGINT. */
#include "bench_util.h"

#include "clock.h"
#include "sockaddr.h"
#include "wire.h"

#include <nng/nng.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/sub.h>
#include <pthread.h>
#include <stdbool.h>

#define RING 64 /* interrupts remembered per agent (re-sends get the same report) */

typedef struct {
    uint64_t id;
    uint8_t *report;
    size_t len;
} handled;

typedef struct {
    char id[64];
    nng_socket sub, push;
    nng_aio *rx;
    pthread_mutex_t mu;
    bool synced;
    bool report_begun; /* the coordinator's sync said it reads report.begun */
    uint64_t epoch;    /* of the churn hw */
    char sid[96];      /* churn: the current session */
    uint64_t n_begun;  /* churn: sessions begun */
    bool *cancelled;   /* steady: per round hw */
    handled ring[RING];
    size_t pos;
    char sub_addr[IHC_SOCKADDR_STR_MAX]; /* named in the hello, as libihc-agent does */
} sim_agent;

static sim_agent *agents;
static int n_agents = 8, steady;
static const char *hw = "bench";
static const char *prefix = "sim-";
static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

/* Sends len bytes of buf (a copy) on a's PUSH socket, without waiting; dropped when nng
 * cannot take them. */
static void send_bytes(sim_agent *a, const uint8_t *buf, size_t len)
{
    nng_msg *nm;
    if (nng_msg_alloc(&nm, len) != 0)
        return;
    memcpy(nng_msg_body(nm), buf, len);
    if (nng_sendmsg(a->push, nm, NNG_FLAG_NONBLOCK) != 0)
        nng_msg_free(nm);
}

static void send_msg(sim_agent *a, const ihc_msg *m)
{
    uint8_t *buf;
    size_t len;
    if (ihc_wire_encode(m, NULL, &buf, &len) != 0) {
        fprintf(stderr, "bench_sim: cannot encode %s\n", ihc_msg_type_name(m->type));
        return;
    }
    send_bytes(a, buf, len);
    free(buf);
}

static const ihc_module_result mods[3] = {
    {.name = "text_processing"}, {.name = "audio_generation"}, {.name = "session_management"}};

static void session_info(sim_agent *a, int round, ihc_session_info *si, char *sid, size_t cap)
{
    if (steady) {
        static __thread char h[96];
        snprintf(h, sizeof(h), "%s-%d", hw, round);
        snprintf(sid, cap, "%s-%s-%d", a->id, hw, round);
        *si = (ihc_session_info){.session_id = sid, .hw = h, .created_ms = ihc_now_ms()};
    } else {
        *si = (ihc_session_info){
            .session_id = a->sid, .hw = (char *)hw, .epoch = a->epoch, .created_ms = ihc_now_ms()};
    }
}

static void send_hello(sim_agent *a)
{
    static char *methods[] = {"cancel_generation", "clear_buffers"};
    ihc_module_info mi[3];
    for (int i = 0; i < 3; i++)
        mi[i] = (ihc_module_info){.name = mods[i].name,
                                  .methods = methods,
                                  .n_methods = 2,
                                  .timeout_ms = 500,
                                  .enabled = true};
    size_t ns = steady ? (size_t)steady : 1;
    ihc_session_info *si = calloc(ns, sizeof(*si));
    char(*sids)[96] = calloc(ns, sizeof(*sids));
    char(*hws)[96] = calloc(ns, sizeof(*hws));
    size_t k = 0;
    for (size_t i = 0; i < ns; i++) {
        if (steady && a->cancelled[i])
            continue;
        session_info(a, (int)i, &si[k], sids[i], sizeof(sids[i]));
        if (steady) {
            snprintf(hws[i], sizeof(hws[i]), "%s-%zu", hw, i);
            si[k].hw = hws[i];
        }
        k++;
    }
    char *addr = a->sub_addr;
    ihc_msg m = {.type = IHC_MSG_HELLO};
    m.u.hello = (ihc_hello_msg){.sub_addrs = a->sub_addr[0] ? &addr : NULL,
                                .n_sub_addrs = a->sub_addr[0] ? 1 : 0,
                                .agent = a->id,
                                .node = "bench-sim",
                                .pid = (int32_t)getpid(),
                                .started_ms = ihc_now_ms(),
                                .modules = mi,
                                .n_modules = 3,
                                .sessions = si,
                                .n_sessions = k};
    send_msg(a, &m);
    free(si);
    free(sids);
    free(hws);
}

static void send_heartbeat(sim_agent *a)
{
    char *mn[3] = {mods[0].name, mods[1].name, mods[2].name};
    char *h = (char *)hw;
    ihc_msg m = {.type = IHC_MSG_HEARTBEAT};
    m.u.heartbeat = (ihc_heartbeat_msg){.agent = a->id,
                                        .n_sessions = steady ? (uint32_t)steady : 1,
                                        .hws = steady ? NULL : &h,
                                        .n_hws = steady ? 0 : 1,
                                        .modules = mn,
                                        .n_modules = 3};
    send_msg(a, &m);
}

/* A new churn session; announced at once, or (announce false) in the report being built. */
static void begin_session(sim_agent *a, bool announce)
{
    snprintf(a->sid, sizeof(a->sid), "%s-%s-%llu", a->id, hw, (unsigned long long)++a->n_begun);
    if (!announce)
        return;
    ihc_msg m = {.type = IHC_MSG_SESSION_BEGIN};
    m.u.session_begin.agent = a->id;
    session_info(a, 0, &m.u.session_begin.session, NULL, 0);
    send_msg(a, &m);
}

static handled *find_handled(sim_agent *a, uint64_t id)
{
    for (size_t i = 0; i < RING; i++)
        if (a->ring[i].report && a->ring[i].id == id)
            return &a->ring[i];
    return NULL;
}

/* An interrupt: answered when this agent holds a session of its hw, or when it is addressed
 * to this agent (listed in it, or sent on its own topic). */
static void on_interrupt(sim_agent *a, const ihc_interrupt_msg *im, bool direct)
{
    bool listed = direct;
    for (size_t i = 0; i < im->n_agents && !listed; i++)
        listed = strcmp(im->agents[i], a->id) == 0;
    handled *h = find_handled(a, im->id);
    if (h) {
        if (listed)
            send_bytes(a, h->report, h->len);
        return;
    }
    char sid[96], *sids[1];
    size_t n_sids = 0;
    ihc_session_info begun;
    size_t n_begun = 0;
    bool concerned = listed;
    int round = -1;
    if (steady) {
        size_t hl = strlen(hw);
        if (strncmp(im->hw, hw, hl) == 0 && im->hw[hl] == '-') {
            round = atoi(im->hw + hl + 1);
            if (round >= 0 && round < steady && !a->cancelled[round]) {
                concerned = true;
                a->cancelled[round] = true;
                snprintf(sid, sizeof(sid), "%s-%s-%d", a->id, hw, round);
                sids[n_sids++] = sid;
            }
        }
    } else if (strcmp(im->hw, hw) == 0 || strcmp(im->hw, "*") == 0) {
        concerned = true;
        if (a->epoch < im->epoch) {
            snprintf(sid, sizeof(sid), "%s", a->sid);
            sids[n_sids++] = sid;
            a->epoch = im->epoch;
            /* as bench_agent does: begun while the interrupt is handled, in the report */
            begin_session(a, !a->report_begun);
            if (a->report_begun) {
                session_info(a, 0, &begun, NULL, 0);
                n_begun = 1;
            }
        }
    }
    if (!concerned)
        return;
    ihc_msg m = {.type = IHC_MSG_REPORT};
    m.u.report = (ihc_report_msg){.id = im->id,
                                  .agent = a->id,
                                  .hw = im->hw,
                                  .modules = (ihc_module_result *)mods,
                                  .n_modules = 3,
                                  .sessions = sids,
                                  .n_sessions = n_sids,
                                  .time_ms = 0.01,
                                  .begun = &begun,
                                  .n_begun = n_begun};
    uint8_t *buf, *keep;
    size_t len, keep_len;
    if (ihc_wire_encode(&m, NULL, &buf, &len) != 0)
        return;
    m.u.report.n_begun = 0; /* a re-send announces nothing again */
    if (ihc_wire_encode(&m, NULL, &keep, &keep_len) != 0) {
        free(buf);
        return;
    }
    handled *slot = &a->ring[a->pos++ % RING];
    free(slot->report);
    *slot = (handled){.id = im->id, .report = keep, .len = keep_len};
    send_bytes(a, buf, len);
    free(buf);
}

static void on_recv(void *arg)
{
    sim_agent *a = arg;
    if (nng_aio_result(a->rx) != 0) {
        if (!stop)
            nng_recv_aio(a->sub, a->rx);
        return;
    }
    nng_msg *nm = nng_aio_get_msg(a->rx);
    const char *topic;
    const uint8_t *body;
    size_t tl, bl;
    ihc_msg *m = NULL;
    if (ihc_wire_split(nng_msg_body(nm), nng_msg_len(nm), &topic, &tl, &body, &bl) == 0 &&
        ihc_wire_decode(body, bl, NULL, &m, NULL, 0) == 0) {
        pthread_mutex_lock(&a->mu);
        if (m->type == IHC_MSG_INTERRUPT) {
            on_interrupt(a, &m->u.interrupt, strncmp(topic, "ag:", 3) == 0);
        } else if (m->type == IHC_MSG_SYNC && strcmp(m->u.sync.agent, a->id) == 0) {
            a->report_begun = m->u.sync.report_begun;
            if (m->u.sync.hello) {
                send_hello(a);
            } else {
                a->synced = true;
                for (size_t i = 0; i < m->u.sync.n_epochs; i++)
                    if (strcmp(m->u.sync.epochs[i].hw, hw) == 0 &&
                        m->u.sync.epochs[i].epoch > a->epoch && !steady) {
                        /* an interrupt went by before we were known: start afresh */
                        a->epoch = m->u.sync.epochs[i].epoch;
                        begin_session(a, true);
                    }
            }
        }
        pthread_mutex_unlock(&a->mu);
    }
    ihc_msg_free(m);
    nng_msg_free(nm);
    nng_recv_aio(a->sub, a->rx);
}

static void on_sub_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    sim_agent *a = arg;
    pthread_mutex_lock(&a->mu);
    if (ev == NNG_PIPE_EV_ADD_POST)
        ihc_pipe_addr_str(p, true, a->sub_addr, sizeof(a->sub_addr));
    else
        a->sub_addr[0] = '\0';
    a->synced = false; /* a hello with the new endpoint */
    pthread_mutex_unlock(&a->mu);
}

static void die(const char *what, int rv)
{
    fprintf(stderr, "bench_sim: %s: %s\n", what, nng_strerror(rv));
    exit(1);
}

int main(int argc, char **argv)
{
    const char *pub = NULL, *rep = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--pub"))
            pub = argv[i + 1];
        else if (!strcmp(argv[i], "--report"))
            rep = argv[i + 1];
        else if (!strcmp(argv[i], "--agents"))
            n_agents = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--hw"))
            hw = argv[i + 1];
        else if (!strcmp(argv[i], "--prefix"))
            prefix = argv[i + 1];
        else if (!strcmp(argv[i], "--steady"))
            steady = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_sim: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!pub || !rep || n_agents < 1 || steady < 0) {
        fprintf(stderr, "usage: bench_sim --pub URL --report URL --agents N [--hw HW] "
                        "[--prefix ID] [--steady R]\n");
        return 2;
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    agents = calloc((size_t)n_agents, sizeof(*agents));
    for (int i = 0; i < n_agents; i++) {
        sim_agent *a = &agents[i];
        int rv;
        snprintf(a->id, sizeof(a->id), "%s%d", prefix, i);
        pthread_mutex_init(&a->mu, NULL);
        if (steady)
            a->cancelled = calloc((size_t)steady, sizeof(bool));
        else
            snprintf(a->sid, sizeof(a->sid), "%s-%s-0", a->id, hw);
        char topic[IHC_TOPIC_MAX + 1];
        size_t tl = ihc_wire_topic_agent(topic, sizeof(topic), a->id);
        if ((rv = nng_sub0_open(&a->sub)) || (rv = nng_push0_open(&a->push)) ||
            (rv = nng_socket_set(a->sub, NNG_OPT_SUB_SUBSCRIBE, "hw:", 3)) ||
            (rv = nng_socket_set(a->sub, NNG_OPT_SUB_SUBSCRIBE, topic, tl)) ||
            (rv = nng_socket_set_int(a->sub, NNG_OPT_RECVBUF, 1024)) ||
            (rv = nng_socket_set_int(a->push, NNG_OPT_SENDBUF, 1024)) ||
            (rv = nng_socket_set_size(a->sub, NNG_OPT_RECVMAXSZ, 0)) ||
            (rv = nng_socket_set_ms(a->sub, NNG_OPT_RECONNMINT, 50)) ||
            (rv = nng_socket_set_ms(a->push, NNG_OPT_RECONNMINT, 50)) ||
            (rv = nng_aio_alloc(&a->rx, on_recv, a)) ||
            (rv = nng_pipe_notify(a->sub, NNG_PIPE_EV_ADD_POST, on_sub_pipe, a)) ||
            (rv = nng_pipe_notify(a->sub, NNG_PIPE_EV_REM_POST, on_sub_pipe, a)) ||
            (rv = nng_dial(a->sub, pub, NULL, NNG_FLAG_NONBLOCK)) ||
            (rv = nng_dial(a->push, rep, NULL, NNG_FLAG_NONBLOCK)))
            die("socket", rv);
        nng_recv_aio(a->sub, a->rx);
    }
    /* hello until synced, heartbeats every second (the coordinator's IHC_AGENT_TTL is 5 s) */
    usleep(100000);
    while (!stop) {
        for (int i = 0; i < n_agents; i++) {
            sim_agent *a = &agents[i];
            pthread_mutex_lock(&a->mu);
            if (!a->synced)
                send_hello(a);
            else
                send_heartbeat(a);
            pthread_mutex_unlock(&a->mu);
        }
        for (int t = 0; t < 10 && !stop; t++)
            usleep(100000);
    }
    for (int i = 0; i < n_agents; i++) {
        nng_aio_stop(agents[i].rx);
        nng_aio_free(agents[i].rx);
    }
    for (int i = 0; i < n_agents; i++) {
        nng_close(agents[i].sub);
        nng_close(agents[i].push);
        for (size_t k = 0; k < RING; k++)
            free(agents[i].ring[k].report);
        free(agents[i].cancelled);
        pthread_mutex_destroy(&agents[i].mu);
    }
    free(agents);
    return 0;
}
