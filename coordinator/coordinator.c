/* The coordinator loop: one thread that owns the registry and the interrupts in flight,
 * receives agents' messages on PULL, takes requests from a queue, publishes interrupts,
 * re-sends, finishes them, and hands every Redis write to the persist thread. */
#include "coordinator.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>

#include "clock.h"
#include "defaults.h"
#include "docs.h"
#include "err.h"
#include "events.h"
#include "hist.h"
#include "inflight.h"
#include "leader.h"
#include "log.h"
#include "nbio.h"
#include "persist.h"
#include "redis_url.h"
#include "registry.h"
#include "sockaddr.h"
#include "sockclose.h"
#include "tls.h"
#include "wire.h"
#include "thread.h"

#define COMPONENT     "coordinator"
#define RESEND_MAX_NS (500ull * 1000000ull)
/* Re-sends to this many missing agents or fewer go to each one's own topic; more share one
 * broadcast naming them. nng's PUB writes every message to every connection (subscribers
 * filter), so K addressed messages cost K sends per agent connected against one. */
#define RESEND_DIRECT_MAX 2
#define SWEEP_NS          (100ull * 1000000ull)
#define MAX_MSGS_PER_TURN 1024
/* Messages each agent's pipe may queue on PUB before nng drops the oldest (default 16): a
 * burst of interrupts and syncs must not push an interrupt out. */
#define PUB_SENDBUF 1024
/* Agents' messages PULL keeps while the loop is busy: a fleet's reports to one interrupt
 * arrive together. */
#define PULL_RECVBUF 1024
/* Redis writes queued while interrupts are in flight wait at most this long for the writer
 * thread: on a small machine it would otherwise take the CPU from the interrupt path. */
#define PERSIST_DEFER_NS (2ull * 1000000ull)

#define IHC__STATS_WINDOW 10000 /* interrupts kept for avg/p50/p99 */
#define IHC__ID_BLOCK     1000  /* interrupt ids reserved per persisted high-water mark */
/* How long the loop waits for the watch socket to close when it stops watching (a standby
 * taking over): nng 1.5.2 may hang closing a SUB whose dialer retries a dead leader, and the
 * new leader must not stop publishing meanwhile (seen: 2 s without interrupts after a
 * takeover, tests/cluster failover). At shutdown it waits IHC_SOCK_CLOSE_MS. */
#define WATCH_CLOSE_MS 200

typedef struct ihc__cmd ihc__cmd;

/* What Redis holds of the state a leader takes over: read at start and on every election
 * (by the lease's thread), applied by the loop. */
typedef struct {
    bool read;    /* everything below was read */
    uint64_t seq; /* ihc:seq interrupt_id */
    ihc_store_epoch_rec *ep;
    size_t n_ep;
    ihc_store_agent_rec *ag;
    size_t n_ag;
    ihc_store_session_rec *ss;
    size_t n_ss;
    int64_t total, succeeded, failed, sessions_created;
    ihc_store_flags flags;
} snapshot;

struct ihc_coord {
    const ihc_config *cfg;
    ihc_wire_auth *auth;
    nng_socket pub, pull;
    nng_aio *pub_aio, *pull_aio; /* the loop's, for non-blocking sends and receives (nbio.h) */
    /* agents' messages wake the loop through a receive kept pending on PULL (common/nbio.h:
     * its callback writes wake_fd) */
    ihc_nb_waiter waiter;
    nng_msg *held; /* taken while arming, handled first in the turn (loop only) */
    int wake_fd;   /* eventfd: the queue has work or the loop must stop */
    pthread_t loop;
    bool loop_started;
    uint64_t start_ns;

    /* shared with request threads, under mu */
    pthread_mutex_t mu;
    ihc__cmd *q_head, *q_tail;
    bool stopping;
    atomic_bool loop_stop;
    atomic_int pending;            /* interrupts accepted and not yet answered */
    atomic_uint_fast64_t rejected; /* bad messages and refused requests */
    ihc_persist *persist;          /* thread-safe */
    /* Redis answered again after an outage (set by the persist thread, under mu): what it
     * holds, for the loop to reconcile and rewrite */
    bool resync;
    uint64_t resync_seq;
    ihc_store_epoch_rec *resync_epochs;
    size_t resync_n;
    /* elected (set by the lease's thread, under mu): the term, its ids and what Redis held */
    bool elect_due;
    uint64_t elect_term, elect_ids_hi;
    snapshot elect_snap;

    ihc_leader *leader;              /* thread-safe */
    atomic_uint_fast64_t write_term; /* the term Redis writes are fenced with (0: none) */

    /* owned by the loop thread */
    uint64_t lead_term; /* the term this loop leads in (0: standby) */
    /* a standby's SUB on the leader's PUB: the epochs and ids the leader hands out, so that
     * a take-over never goes back even when the leader died before Redis had them */
    nng_socket watch;
    bool watch_open;
    int watch_fd;
    char watch_url[512];
    atomic_bool lead_provisional; /* lead_term is a provisional one (leader.h) */
    ihc_registry *reg;
    ihc_inflight **fl;
    size_t n_fl, cap_fl;
    uint64_t next_id, reserved_hi;
    uint64_t first_id;      /* next_id at start: ids below were handed out by earlier runs */
    char redis_shown[1024]; /* IHC_REDIS_URL for log lines: user and password masked */
    bool flag;
    char flag_hw[IHC_HW_MAX + 1];
    char flag_reason[IHC_REASON_MAX + 1];
    int64_t flag_set_ms;
    uint64_t flag_reset_ns;
    uint64_t total, succeeded, failed, sessions_created;
    uint64_t timed; /* interrupts finished by this process (sum_ms covers them) */
    double sum_ms;
    double *window; /* IHC__STATS_WINDOW most recent total_time_ms */
    size_t win_n, win_pos;
    ihc_hist latency;               /* total_time_ms of interrupts, for /metrics */
    ihc_hist_family module_latency; /* modules' time_ms by name */
    ihc_events *events;             /* live events (thread-safe) */
    uint64_t next_sweep_ns;
    uint64_t last_reject_log_ns;
    uint64_t persist_due_ns; /* deferred Redis writes are handed over by then (0: none) */
    uint64_t srtt_ns;        /* smoothed time of complete interrupts (first re-send) */
    /* PUB connections, for whether anyone but the agents may want the results (each result
     * is written to every connection, agents' included, and grows with the fleet): the
     * connections (nng's threads add and remove them, under pipes_mu), and the loop's last
     * answer with what it was computed from */
    pthread_mutex_t pipes_mu;
    struct pub_pipe {
        uint32_t id;
        char addr[IHC_SOCKADDR_STR_MAX]; /* "" when it names no single connection */
    } * pipes;
    size_t n_pipes, cap_pipes;
    bool pipes_lost;
    atomic_uint_fast64_t pipes_gen;
    uint64_t claims_gen; /* bumped when an agent's claimed endpoints may have changed */
    uint64_t seen_pipes_gen, seen_claims_gen;
    bool results_known, results_wanted;
};

typedef enum { CMD_INTERRUPT, CMD_QUERY } cmd_kind;

struct ihc__cmd {
    ihc__cmd *next;
    cmd_kind kind;
    char hw[IHC_HW_MAX + 1];
    bool has_hw;
    char *reason;
    int64_t timeout_ms;
    uint64_t t0_ns;
    int query; /* index in queries[] */
    ihc_api_done_fn done;
    void *arg;
};

static int query_index(const char *op);
static void leadership(ihc_coord *c);
static void watch_drain(ihc_coord *c);

static void cmd_free(ihc__cmd *k)
{
    if (!k)
        return;
    free(k->reason);
    free(k);
}

static uint64_t ns_of_s(double s)
{
    return s <= 0 ? 0 : (uint64_t)(s * 1e9);
}

static void answer(ihc_api_done_fn done, void *arg, int status, const char *error)
{
    char *s = ihc_doc_error(error);
    done(status, s ? s : strdup("{\"error\":\"out of memory\"}"), arg);
}

/* ---- request queue (any thread) ---- */

static void wake(ihc_coord *c)
{
    uint64_t one = 1;
    ssize_t n = write(c->wake_fd, &one, sizeof(one));
    (void)n; /* EAGAIN means the counter is already non-zero: the loop will wake */
}

static int enqueue(ihc_coord *c, ihc__cmd *k)
{
    pthread_mutex_lock(&c->mu);
    if (c->stopping) {
        pthread_mutex_unlock(&c->mu);
        return IHC_ECLOSED;
    }
    bool was_empty = c->q_head == NULL;
    k->next = NULL;
    if (c->q_tail)
        c->q_tail->next = k;
    else
        c->q_head = k;
    c->q_tail = k;
    pthread_mutex_unlock(&c->mu);
    if (was_empty)
        wake(c);
    return IHC_OK;
}

int ihc__coord_submit_interrupt(ihc_coord *c, const char *hw, const char *reason,
                                int64_t timeout_ms, uint64_t t0_ns, ihc_api_done_fn done, void *arg)
{
    if (atomic_fetch_add(&c->pending, 1) >= c->cfg->max_inflight) {
        atomic_fetch_sub(&c->pending, 1);
        return IHC_ELIMIT;
    }
    ihc__cmd *k = calloc(1, sizeof(*k));
    if (!k || (reason && !(k->reason = strdup(reason)))) {
        free(k);
        atomic_fetch_sub(&c->pending, 1);
        return IHC_ENOMEM;
    }
    k->kind = CMD_INTERRUPT;
    snprintf(k->hw, sizeof(k->hw), "%s", hw);
    k->timeout_ms = timeout_ms;
    k->t0_ns = t0_ns;
    k->done = done;
    k->arg = arg;
    int rc = enqueue(c, k);
    if (rc != IHC_OK) {
        cmd_free(k);
        atomic_fetch_sub(&c->pending, 1);
    }
    return rc;
}

int ihc__coord_submit_query(ihc_coord *c, const char *op, const char *hw, ihc_api_done_fn done,
                            void *arg)
{
    int q = query_index(op);
    if (q < 0 || (hw && strlen(hw) > IHC_HW_MAX))
        return IHC_EINVAL;
    ihc__cmd *k = calloc(1, sizeof(*k));
    if (!k)
        return IHC_ENOMEM;
    k->kind = CMD_QUERY;
    k->query = q;
    if (hw) {
        snprintf(k->hw, sizeof(k->hw), "%s", hw);
        k->has_hw = true;
    }
    k->done = done;
    k->arg = arg;
    int rc = enqueue(c, k);
    if (rc != IHC_OK)
        free(k);
    return rc;
}

/* ---- publishing ---- */

/* Sends an encoded frame on PUB (takes buf). PUB never waits: a connection whose queue is
 * full drops the message. */
static void publish_frame(ihc_coord *c, uint8_t *buf, size_t len, ihc_msg_type type)
{
    nng_msg *nm = NULL;
    int nrv = nng_msg_alloc(&nm, 0);
    if (nrv == 0 && (nrv = nng_msg_append(nm, buf, len)) == 0 &&
        (nrv = ihc_nb_send(c->pub, c->pub_aio, nm)) == 0)
        nm = NULL;
    nng_msg_free(nm);
    if (nrv != 0)
        ihc_log(IHC_LOG_WARN, COMPONENT, "publish %s failed: %s", ihc_msg_type_name(type),
                nng_strerror(nrv));
    free(buf);
}

static void publish(ihc_coord *c, const ihc_msg *m)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = ihc_wire_encode_framed(m, c->auth, &buf, &len);
    if (rc != IHC_OK) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot encode %s: %s", ihc_msg_type_name(m->type),
                ihc_strerror(rc));
        return;
    }
    publish_frame(c, buf, len, m->type);
}

/* The term messages carry: none (0) while leading provisionally, without a lease (agents
 * take term 0 from anyone; the provisional number may be below terms they have seen). */
static uint64_t wire_term(const ihc_coord *c)
{
    return atomic_load(&c->lead_provisional) ? 0 : c->lead_term;
}

static void interrupt_msg(const ihc_coord *c, ihc_msg *m, const ihc_inflight *f)
{
    *m = (ihc_msg){.type = IHC_MSG_INTERRUPT};
    m->u.interrupt.term = wire_term(c);
    m->u.interrupt.id = f->id;
    m->u.interrupt.hw = f->hw;
    m->u.interrupt.epoch = f->epoch;
    m->u.interrupt.reason = f->reason;
    m->u.interrupt.deadline_ms = f->deadline_ms;
    m->u.interrupt.attempt = f->attempt;
}

/* The first send: on the hw's topic, naming nobody (the agents holding a session of hw
 * answer), so its size does not grow with the fleet. */
static void publish_interrupt(ihc_coord *c, const ihc_inflight *f)
{
    ihc_msg m;
    interrupt_msg(c, &m, f);
    publish(c, &m);
}

/* A re-send to one agent that has not answered, on its own topic: the others never see it. */
static void publish_interrupt_to(ihc_coord *c, const ihc_inflight *f, const char *agent)
{
    ihc_msg m;
    interrupt_msg(c, &m, f);
    char *agents[1] = {(char *)agent};
    m.u.interrupt.agents = agents;
    m.u.interrupt.n_agents = 1;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = ihc_wire_encode_to(&m, c->auth, agent, &buf, &len);
    if (rc != IHC_OK) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot encode interrupt id=%" PRIu64 " to agent=%s: %s",
                f->id, agent, ihc_strerror(rc));
        return;
    }
    publish_frame(c, buf, len, m.type);
}

/* ---- who listens to results ---- */

/* nng's thread: a PUB connection is about to start (ADD_PRE: before PUB can write to it) or
 * is gone. */
static void on_pub_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    ihc_coord *c = arg;
    uint32_t id = (uint32_t)nng_pipe_id(p);
    struct pub_pipe e = {.id = id};
    if (ev == NNG_PIPE_EV_ADD_PRE)
        ihc_pipe_addr_str(p, false, e.addr, sizeof(e.addr));
    pthread_mutex_lock(&c->pipes_mu);
    for (size_t i = 0; i < c->n_pipes; i++)
        if (c->pipes[i].id == id) {
            c->pipes[i] = c->pipes[--c->n_pipes];
            break;
        }
    if (ev == NNG_PIPE_EV_ADD_PRE) {
        if (c->n_pipes == c->cap_pipes) {
            size_t cap = c->cap_pipes ? c->cap_pipes * 2 : 64;
            struct pub_pipe *np = realloc(c->pipes, cap * sizeof(*np));
            if (np) {
                c->pipes = np;
                c->cap_pipes = cap;
            }
        }
        if (c->n_pipes < c->cap_pipes)
            c->pipes[c->n_pipes++] = e;
        else
            c->pipes_lost = true; /* one not kept: results are published from now on */
    }
    atomic_fetch_add(&c->pipes_gen, 1);
    pthread_mutex_unlock(&c->pipes_mu);
}

typedef struct {
    const char **v;
    size_t n, cap;
    bool oom;
} claims;

static void collect_claims(void *arg, const ihc_reg_agent *a)
{
    claims *cl = arg;
    if (a->state == IHC_AGENT_GONE)
        return;
    for (size_t i = 0; i < a->n_sub_addrs && !cl->oom; i++) {
        if (cl->n == cl->cap) {
            size_t cap = cl->cap ? cl->cap * 2 : 64;
            const char **nv = realloc(cl->v, cap * sizeof(*nv));
            if (!nv) {
                cl->oom = true;
                return;
            }
            cl->v = nv;
            cl->cap = cap;
        }
        cl->v[cl->n++] = a->sub_addrs[i];
    }
}

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Whether a result is worth publishing: when some PUB connection is not one an agent named as
 * its own in its hello (a watcher, a dashboard, an agent of an older version, an ipc link).
 * Recomputed only when connections or agents' claims changed. Loop thread. */
static bool results_wanted(ihc_coord *c)
{
    uint64_t pg = atomic_load(&c->pipes_gen);
    if (c->results_known && pg == c->seen_pipes_gen && c->claims_gen == c->seen_claims_gen)
        return c->results_wanted;
    claims cl = {0};
    ihc_registry_foreach_agent(c->reg, collect_claims, &cl);
    if (cl.oom) {
        free(cl.v);
        return true;
    }
    if (cl.n)
        qsort(cl.v, cl.n, sizeof(*cl.v), cmp_strp);
    pthread_mutex_lock(&c->pipes_mu);
    bool want = c->pipes_lost;
    for (size_t i = 0; i < c->n_pipes && !want; i++) {
        const char *key = c->pipes[i].addr;
        want = !key[0] || !cl.n || !bsearch(&key, cl.v, cl.n, sizeof(*cl.v), cmp_strp);
    }
    pthread_mutex_unlock(&c->pipes_mu);
    free(cl.v);
    c->results_known = true;
    c->seen_pipes_gen = pg;
    c->seen_claims_gen = c->claims_gen;
    if (want != c->results_wanted)
        ihc_log(IHC_LOG_DEBUG, COMPONENT, "results %s",
                want ? "published"
                     : "not published: "
                       "only agents listen");
    c->results_wanted = want;
    return want;
}

/* ---- Redis-facing helpers (queued to the persist thread) ---- */

/* An agent's sessions, as persist_agent (their ids) or send_sync (their hardware_ids, each
 * once) needs them. */
typedef struct {
    const char *agent_id;
    json_t *ids; /* NULL: not wanted */
    bool want_hws;
    const char **hws;
    size_t n_hws, cap_hws;
    bool oom;
} agent_scan;

static void scan_agent_session(void *arg, const ihc_reg_session *s)
{
    agent_scan *sc = arg;
    if (sc->ids)
        json_array_append_new(sc->ids, json_string(s->session_id));
    if (!sc->want_hws || sc->oom)
        return;
    if (sc->n_hws == sc->cap_hws) {
        size_t cap = sc->cap_hws ? sc->cap_hws * 2 : 8;
        const char **nh = realloc(sc->hws, cap * sizeof(*nh));
        if (!nh) {
            sc->oom = true;
            return;
        }
        sc->hws = nh;
        sc->cap_hws = cap;
    }
    sc->hws[sc->n_hws++] = s->hw;
}

/* Each hardware_id of sc once (sorted): an agent may hold 100,000 sessions, and a check of
 * every one against those kept was quadratic (49 s of a coordinator's start, measured). */
static void scan_unique_hws(agent_scan *sc)
{
    if (sc->n_hws < 2)
        return;
    qsort(sc->hws, sc->n_hws, sizeof(*sc->hws), cmp_strp);
    size_t n = 1;
    for (size_t i = 1; i < sc->n_hws; i++)
        if (strcmp(sc->hws[i], sc->hws[n - 1]) != 0)
            sc->hws[n++] = sc->hws[i];
    sc->n_hws = n;
}

static void persist_agent(ihc_coord *c, const ihc_reg_agent *a)
{
    agent_scan sc = {.agent_id = a->agent_id, .ids = json_array()};
    ihc_registry_foreach_agent_session(c->reg, a->agent_id, scan_agent_session, &sc);
    char *sessions = sc.ids ? json_dumps(sc.ids, JSON_COMPACT) : NULL;
    char *modules = ihc_doc_modules_text(a->modules, a->n_modules);
    ihc_store_agent sa = {.agent_id = a->agent_id,
                          .node = a->node,
                          .pid = a->pid,
                          .modules = modules ? modules : "[]",
                          .sessions = sessions ? sessions : "[]",
                          .started_ms = a->started_ms,
                          .last_seen_ms = a->last_seen_ms};
    ihc_persist_agent_put(c->persist, &sa);
    free(sessions);
    free(modules);
    json_decref(sc.ids);
    free(sc.hws);
}

static void on_registry_event(void *arg, ihc_reg_event ev, const ihc_reg_session *s)
{
    ihc_coord *c = arg;
    if (ev == IHC_REG_SESSION_ENDED) {
        ihc_persist_session_state(c->persist, s->hw, s->session_id, s->state, s->updated_ms);
        ihc_events_emit_take(c->events, "session_end", ihc_doc_session_event(s, false));
        return;
    }
    if (ev == IHC_REG_EPOCH_RAISED) { /* an agent knew a newer epoch (e.g. after an outage) */
        ihc_persist_epoch_raise(c->persist, s->hw, ihc_registry_epoch(c->reg, s->hw, NULL));
        return;
    }
    ihc_store_session ss = {.session_id = s->session_id,
                            .hw = s->hw,
                            .agent_id = s->agent_id,
                            .state = "active",
                            .epoch = s->epoch,
                            .created_ms = s->created_ms,
                            .updated_ms = s->updated_ms,
                            .data = s->data,
                            .is_new = ev == IHC_REG_SESSION_ADDED};
    ihc_persist_session_put(c->persist, &ss);
    if (ev == IHC_REG_SESSION_ADDED) {
        c->sessions_created++;
        ihc_events_emit_take(c->events, "session_begin", ihc_doc_session_event(s, true));
    }
}

static void on_agent_state(void *arg, const ihc_reg_agent *a, bool up)
{
    ihc_coord *c = arg;
    ihc_events_emit_take(c->events, up ? "agent_up" : "agent_down",
                         ihc_doc_agent_event(a, ihc_now_ms()));
}

/* Persist thread: Redis became reachable or unreachable. */
static void on_redis_state(void *arg, bool up, size_t backlog)
{
    ihc_coord *c = arg;
    ihc_events_emit_take(c->events, up ? "redis_up" : "redis_down",
                         ihc_doc_redis_event(backlog, ihc_now_ms()));
}

/* ---- interrupt ids ---- */

static int seq_file_path(const ihc_coord *c, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s/seq", c->cfg->state_dir);
    return (n < 0 || (size_t)n >= cap) ? IHC_EINVAL : IHC_OK;
}

static int seq_file_read(const ihc_coord *c, uint64_t *v)
{
    *v = 0;
    char path[4096];
    if (!c->cfg->state_dir || seq_file_path(c, path, sizeof(path)) != IHC_OK)
        return IHC_OK;
    FILE *fp = fopen(path, "r");
    if (!fp)
        return errno == ENOENT ? IHC_OK : IHC_EIO;
    unsigned long long x = 0;
    int ok = fscanf(fp, "%llu", &x);
    fclose(fp);
    if (ok != 1) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "state file unreadable path=%s", path);
        return IHC_EIO;
    }
    *v = x;
    return IHC_OK;
}

/* Writes the high-water mark durably (temp file, fsync, rename). */
static int seq_file_write(const ihc_coord *c, uint64_t v)
{
    char path[4096], tmp[4200];
    if (!c->cfg->state_dir || seq_file_path(c, path, sizeof(path)) != IHC_OK)
        return IHC_OK;
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return IHC_EIO;
    char line[32];
    int n = snprintf(line, sizeof(line), "%" PRIu64 "\n", v);
    bool ok = write(fd, line, (size_t)n) == n && fsync(fd) == 0;
    ok = (close(fd) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return IHC_EIO;
    }
    return IHC_OK;
}

/* Hands out the next interrupt id (0: none may be handed out). Ids come from the blocks the
 * lease's thread reserves in Redis under the term, so they stay unique and growing across
 * leaders. A leader alone whose Redis is away goes on past its block as a single
 * coordinator always did: persisting a new high-water mark (state file, then Redis) whenever
 * a block of its own is used up, so that a restart resumes above every id ever handed out.
 * With standbys it refuses instead: a successor could hand out the same ids. */
static uint64_t next_interrupt_id(ihc_coord *c)
{
    uint64_t granted = ihc_leader_ids_hi(c->leader);
    if (granted > c->reserved_hi) {
        if (seq_file_write(c, granted) != IHC_OK)
            ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot write state file state_dir=%s: %s",
                    c->cfg->state_dir, strerror(errno));
        c->reserved_hi = granted;
    }
    ihc_leader_ids_next(c->leader, c->next_id + 1);
    if (c->next_id > c->reserved_hi) {
        ihc_leader_view v;
        ihc_leader_view_get(c->leader, &v);
        if (!v.solo)
            return 0;
        uint64_t hi = c->next_id + IHC__ID_BLOCK - 1;
        int rc = seq_file_write(c, hi);
        if (rc != IHC_OK)
            ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot write state file state_dir=%s: %s",
                    c->cfg->state_dir, strerror(errno));
        ihc_persist_seq_raise(c->persist, hi);
        c->reserved_hi = hi;
    }
    return c->next_id++;
}

/* Whether this loop may publish and write now: it took over a term that the lease still
 * backs (leader.h: by this process' clock). */
static bool leading(const ihc_coord *c)
{
    return c->lead_term && ihc_leader_term(c->leader) == c->lead_term;
}

/* The 503 of a coordinator that does not lead: who does and where (api.h). */
static char *not_leader_doc(ihc_coord *c)
{
    ihc_leader_view v;
    ihc_leader_view_get(c->leader, &v);
    return ihc_doc_not_leader(c->cfg->coordinator_id, &v);
}

static void answer_not_leader(ihc_coord *c, ihc_api_done_fn done, void *arg)
{
    char *s = not_leader_doc(c);
    done(503, s ? s : strdup("{\"error\":\"out of memory\"}"), arg);
}

/* ---- interrupts ---- */

static void stats_record(ihc_coord *c, const ihc_inflight *f)
{
    if (ihc_inflight_complete(f)) { /* an interrupt that lacked an answer says nothing of it */
        uint64_t t = (uint64_t)(f->total_time_ms * 1e6);
        c->srtt_ns = c->srtt_ns ? c->srtt_ns - c->srtt_ns / 8 + t / 8 : t;
    }
    c->total++;
    if (f->success)
        c->succeeded++;
    else
        c->failed++;
    c->timed++;
    c->sum_ms += f->total_time_ms;
    c->window[c->win_pos] = f->total_time_ms;
    c->win_pos = (c->win_pos + 1) % IHC__STATS_WINDOW;
    if (c->win_n < IHC__STATS_WINDOW)
        c->win_n++;
    ihc_hist_observe(&c->latency, f->total_time_ms / 1e3);
    for (size_t k = 0; k < f->n_expected + f->n_extra; k++) {
        const ihc_report_msg *r = ihc_inflight_report_at(f, k);
        for (size_t i = 0; r && i < r->n_modules; i++)
            ihc_hist_family_observe(&c->module_latency, r->modules[i].name,
                                    r->modules[i].time_ms / 1e3);
    }
}

static void flags_set(ihc_coord *c, const ihc_inflight *f, int64_t now_ms, uint64_t now_ns)
{
    c->flag = true;
    snprintf(c->flag_hw, sizeof(c->flag_hw), "%s", f->hw);
    snprintf(c->flag_reason, sizeof(c->flag_reason), "%s", f->reason);
    c->flag_set_ms = now_ms;
    c->flag_reset_ns = now_ns + ns_of_s(c->cfg->session_cleanup_delay);
    ihc_store_flags sf = {.global_interrupt_flag = true, .set_ms = now_ms};
    snprintf(sf.interrupt_hardware_id, sizeof(sf.interrupt_hardware_id), "%s", f->hw);
    snprintf(sf.reason, sizeof(sf.reason), "%s", f->reason);
    ihc_persist_flags_set(c->persist, &sf);
}

static void flags_reset(ihc_coord *c)
{
    c->flag = false;
    c->flag_hw[0] = '\0';
    c->flag_reason[0] = '\0';
    c->flag_set_ms = 0;
    c->flag_reset_ns = 0;
    ihc_persist_flags_reset(c->persist);
}

/* The interrupt log entry, its arrays taken from the result document in place. */
static void log_result(ihc_coord *c, const ihc_inflight *f, ihc_ifl_result *r, int64_t now_ms)
{
    /* each array is followed by one more character of the document: a NUL there for the
     * copy the writer queue makes, then put back */
    char *ends[3] = {r->json + r->modules.off + r->modules.len,
                     r->json + r->sessions.off + r->sessions.len,
                     r->json + r->missing.off + r->missing.len};
    char saved[3];
    for (int i = 0; i < 3; i++) {
        saved[i] = *ends[i];
        *ends[i] = '\0';
    }
    ihc_store_log_entry e = {.id = f->id,
                             .hw = f->hw,
                             .success = f->success,
                             .total_time_ms = f->total_time_ms,
                             .modules = r->json + r->modules.off,
                             .sessions = r->json + r->sessions.off,
                             .agents_missing = r->json + r->missing.off,
                             .reason = f->reason,
                             .ts_ms = now_ms};
    ihc_persist_log_append(c->persist, &e);
    for (int i = 0; i < 3; i++)
        *ends[i] = saved[i];
}

/* Ends f: result (built once), answer, then the event, flags, Redis, stats, log line. Frees
 * f. The sessions its reports named were ended as each report came. The caller is answered
 * first: the rest is bookkeeping on this thread, done before the loop takes its next command,
 * so no later request can see the state from before f ended. */
static void finish(ihc_coord *c, ihc_inflight *f)
{
    uint64_t now_ns = ihc_mono_ns();
    int64_t now_ms = ihc_now_ms();
    ihc_inflight_finish(f, now_ns, ihc_persist_connected(c->persist));
    ihc_ifl_result r;
    uint8_t *event = NULL;
    size_t event_len = 0;
    if (ihc_inflight_result(f, &r) == IHC_OK) {
        ihc_msg m = {.type = IHC_MSG_RESULT};
        m.u.result.json = r.json;
        if (results_wanted(c) && ihc_wire_encode_framed(&m, c->auth, &event, &event_len) != IHC_OK)
            event = NULL;
        log_result(c, f, &r, now_ms);
        ihc_events_emit(c->events, "result", r.json); /* a copy for the live events */
        f->done(200, r.json, f->arg);                 /* takes the document */
    } else {
        answer(f->done, f->arg, 500, "out of memory building the result");
    }
    atomic_fetch_sub(&c->pending, 1);
    if (event)
        publish_frame(c, event, event_len, IHC_MSG_RESULT);

    flags_set(c, f, now_ms, now_ns); /* Redis' statistics move with the log entry, once */
    stats_record(c, f);

    size_t n_ans = f->n_answered + f->n_extra;
    if (ihc_log_timing())
        ihc_log_interrupt(COMPONENT,
                          "interrupt done id=%" PRIu64 " hw=%s success=%s answered=%zu/%zu "
                          "attempts=%u time_ms=%.3f",
                          f->id, f->hw, f->success ? "true" : "false", n_ans, f->n_expected,
                          f->attempt + 1, f->total_time_ms);
    else
        ihc_log_interrupt(COMPONENT,
                          "interrupt done id=%" PRIu64 " hw=%s success=%s answered=%zu/%zu", f->id,
                          f->hw, f->success ? "true" : "false", n_ans, f->n_expected);
    if (!f->success)
        ihc_log(IHC_LOG_WARN, COMPONENT, "interrupt incomplete id=%" PRIu64 " hw=%s error=\"%s\"",
                f->id, f->hw, f->error ? f->error : "");
    ihc_inflight_free(f);
}

/* The table stays sorted by id: ids grow and are appended in order, removal keeps order. */
static void table_remove(ihc_coord *c, size_t i)
{
    memmove(&c->fl[i], &c->fl[i + 1], (c->n_fl - i - 1) * sizeof(c->fl[0]));
    c->n_fl--;
}

static ssize_t table_find(const ihc_coord *c, uint64_t id)
{
    size_t lo = 0, hi = c->n_fl;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->fl[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < c->n_fl && c->fl[lo]->id == id) ? (ssize_t)lo : -1;
}

/* When the first re-send is due: IHC_RESEND_INTERVAL, or twice the recent time an interrupt
 * takes when that is longer. A re-send is for a broadcast that was lost; one sent while the
 * answers are merely slow only adds work to every agent and slows them further. */
static uint64_t resend_after(const ihc_coord *c)
{
    uint64_t base = ns_of_s(c->cfg->resend_interval);
    uint64_t adaptive = 2 * c->srtt_ns;
    if (adaptive > RESEND_MAX_NS)
        adaptive = RESEND_MAX_NS;
    return adaptive > base ? adaptive : base;
}

/* While warming up (agents known from Redis that have not said hello yet, and have not passed
 * IHC_AGENT_TTL): those agents are expected too, and sent the interrupt on their own topics
 * (they may hold sessions begun while no coordinator knew), so no answer says success before
 * each of them answered. Returns the merged sorted list in *expected (takes the old one). */
static int expect_warming(ihc_coord *c, char ***expected, size_t *n, char ***pending,
                          size_t *n_pending)
{
    *pending = NULL;
    *n_pending = 0;
    int rc = ihc_registry_pending(c->reg, pending, n_pending);
    if (rc != IHC_OK || *n_pending == 0)
        return rc;
    char **all = calloc(*n + *n_pending, sizeof(*all));
    if (!all)
        return IHC_ENOMEM;
    size_t i = 0, j = 0, k = 0;
    while (i < *n || j < *n_pending) {
        int cmp = i == *n ? 1 : j == *n_pending ? -1 : strcmp((*expected)[i], (*pending)[j]);
        const char *src = cmp <= 0 ? (*expected)[i] : (*pending)[j];
        if (!(all[k] = strdup(src))) {
            ihc_registry_strv_free(all, k);
            return IHC_ENOMEM;
        }
        k++;
        if (cmp <= 0)
            i++;
        if (cmp >= 0)
            j++;
    }
    ihc_registry_strv_free(*expected, *n);
    *expected = all;
    *n = k;
    return IHC_OK;
}

static void start_interrupt(ihc_coord *c, ihc__cmd *k)
{
    if (!leading(c)) {
        answer_not_leader(c, k->done, k->arg);
        atomic_fetch_sub(&c->pending, 1);
        return;
    }
    uint64_t now_ns = ihc_mono_ns();
    int64_t now_ms = ihc_now_ms();
    int64_t timeout_ms =
        k->timeout_ms > 0 ? k->timeout_ms : (int64_t)(c->cfg->interrupt_timeout * 1000.0);
    if (timeout_ms < 1)
        timeout_ms = 1;
    if (c->n_fl == c->cap_fl) {
        size_t cap = c->cap_fl ? c->cap_fl * 2 : 64;
        ihc_inflight **nf = realloc(c->fl, cap * sizeof(*nf));
        if (!nf)
            goto nomem;
        c->fl = nf;
        c->cap_fl = cap;
    }
    uint64_t id = next_interrupt_id(c);
    if (id == 0) {
        ihc_log(IHC_LOG_WARN, COMPONENT,
                "interrupt refused hw=%s: no interrupt id reserved (redis unreachable)", k->hw);
        answer(k->done, k->arg, 503, "no interrupt id reserved: redis unreachable");
        atomic_fetch_sub(&c->pending, 1);
        return;
    }
    char **expected = NULL, **warming = NULL;
    size_t n_expected = 0, n_warming = 0;
    if (ihc_registry_expected(c->reg, k->hw, &expected, &n_expected) != IHC_OK)
        goto nomem;
    if (expect_warming(c, &expected, &n_expected, &warming, &n_warming) != IHC_OK) {
        ihc_registry_strv_free(expected, n_expected);
        ihc_registry_strv_free(warming, n_warming);
        goto nomem;
    }
    uint64_t epoch = ihc_registry_epoch_bump(c->reg, k->hw, now_ms);
    if (epoch == 0) {
        ihc_registry_strv_free(expected, n_expected);
        ihc_registry_strv_free(warming, n_warming);
        goto nomem;
    }
    uint64_t elapsed_ms = (now_ns - k->t0_ns) / 1000000ull;
    ihc_inflight_params p = {
        .id = id,
        .hw = k->hw,
        .epoch = epoch,
        .reason = k->reason,
        .expected = expected,
        .n_expected = n_expected,
        .t0_ns = k->t0_ns,
        .timeout_ns = (uint64_t)timeout_ms * 1000000ull,
        .resend_ns = resend_after(c),
        .resend_max_ns = RESEND_MAX_NS,
        .deadline_ms = now_ms + timeout_ms - (int64_t)elapsed_ms,
    };
    ihc_inflight *f = NULL;
    int rc = ihc_inflight_new(&f, &p);
    ihc_registry_strv_free(expected, n_expected);
    if (rc != IHC_OK) {
        ihc_registry_strv_free(warming, n_warming);
        ihc_persist_epoch_raise(c->persist, k->hw, epoch); /* the bump is already done */
        goto nomem;
    }
    f->done = k->done;
    f->arg = k->arg;
    /* the broadcast first: everything else here can wait for it */
    publish_interrupt(c, f);
    for (size_t i = 0; i < n_warming; i++)
        publish_interrupt_to(c, f, warming[i]);
    ihc_registry_strv_free(warming, n_warming);
    ihc_persist_epoch_raise(c->persist, k->hw, epoch);
    ihc_events_emit_take(c->events, "interrupt", ihc_doc_interrupt_event(f, now_ms));
    if (ihc_inflight_complete(f)) { /* nobody holds a session of hw: nothing to wait for */
        finish(c, f);
        return;
    }
    c->fl[c->n_fl++] = f;
    return;
nomem:
    ihc_log(IHC_LOG_ERROR, COMPONENT, "interrupt refused: out of memory hw=%s", k->hw);
    answer(k->done, k->arg, 503, "out of memory");
    atomic_fetch_sub(&c->pending, 1);
}

static void resend(ihc_coord *c, ihc_inflight *f, uint64_t now_ns)
{
    if (!leading(c))
        return; /* a coordinator whose lease ended publishes nothing */
    const char **missing = NULL;
    size_t n = 0;
    if (ihc_inflight_missing(f, &missing, &n) != IHC_OK)
        return;
    ihc_inflight_resent(f, now_ns);
    if (n <= RESEND_DIRECT_MAX) {
        for (size_t i = 0; i < n; i++)
            publish_interrupt_to(c, f, missing[i]);
    } else {
        ihc_msg m;
        interrupt_msg(c, &m, f);
        m.u.interrupt.agents = (char **)missing;
        m.u.interrupt.n_agents = n;
        publish(c, &m);
    }
    ihc_log(IHC_LOG_DEBUG, COMPONENT, "interrupt re-sent id=%" PRIu64 " attempt=%u missing=%zu",
            f->id, f->attempt, n);
    free(missing);
}

/* ---- agents' messages ---- */

static void count_rejected(ihc_coord *c, const char *what, int rc, const char *detail)
{
    uint64_t n = atomic_fetch_add(&c->rejected, 1) + 1;
    uint64_t now = ihc_mono_ns();
    /* at most one line per second, so a flood of garbage cannot flood the log */
    if (now - c->last_reject_log_ns >= 1000000000ull || c->last_reject_log_ns == 0) {
        c->last_reject_log_ns = now;
        ihc_log(IHC_LOG_WARN, COMPONENT,
                "message rejected what=%s err=%s detail=\"%s\" total=%" PRIu64, what,
                ihc_err_name(rc), detail ? detail : "", n);
    }
}

/* The sessions a report names are over: the report is the agent's only message about them
 * (no session_end follows). O(sessions named). */
static void end_reported_sessions(ihc_coord *c, const ihc_report_msg *r)
{
    if (r->n_sessions == 0)
        return;
    int64_t now_ms = ihc_now_ms();
    bool global = strcmp(r->hw, "*") == 0;
    for (size_t k = 0; k < r->n_sessions; k++) {
        int rc = ihc_registry_session_end(c->reg, r->agent, r->sessions[k], "interrupted", now_ms);
        /* not known here (e.g. begun while Redis held it only): Redis is idempotent */
        if (rc == IHC_ENOENT && !global)
            ihc_persist_session_state(c->persist, r->hw, r->sessions[k], "interrupted", now_ms);
    }
}

static void ask_hello(ihc_coord *c, const char *agent_id, const char *why);

/* One session an agent began (a session_begin, or an entry of a report's begun). */
static void begin_session(ihc_coord *c, const char *agent, const ihc_session_info *si,
                          uint64_t now_ns, int64_t now_ms)
{
    int rc = ihc_registry_session_begin(c->reg, agent, si, now_ns, now_ms);
    if (rc != IHC_OK)
        ihc_log(IHC_LOG_WARN, COMPONENT, "session refused agent=%s session=%s: %s", agent,
                si->session_id ? si->session_id : "", ihc_strerror(rc));
}

/* The sessions the agent began while it handled the interrupt (report.begun), as if each had
 * come in a session_begin just before the report. */
static void begin_reported_sessions(ihc_coord *c, const ihc_report_msg *r)
{
    uint64_t now_ns = ihc_mono_ns();
    int64_t now_ms = ihc_now_ms();
    for (size_t k = 0; k < r->n_begun; k++)
        begin_session(c, r->agent, &r->begun[k], now_ns, now_ms);
}

static void on_report(ihc_coord *c, ihc_msg **mp)
{
    const ihc_report_msg *r = &(*mp)->u.report;
    if (r->id == 0 || r->id >= c->next_id) {
        /* never handed out: forged or garbled; acting on it would end live sessions below */
        count_rejected(c, "report", IHC_ENOENT, "report for an interrupt id never issued");
        return;
    }
    const ihc_reg_agent *before = ihc_registry_agent(c->reg, r->agent);
    bool pending = before && before->state == IHC_AGENT_PENDING;
    ihc_registry_touch(c->reg, r->agent, ihc_mono_ns(), ihc_now_ms());
    if (pending) /* known from Redis only: its hello lists the sessions Redis never saw */
        ask_hello(c, r->agent, "pending");
    begin_reported_sessions(c, r);
    ssize_t i = table_find(c, r->id);
    if (i < 0) {
        /* the interrupt is over, but what the agent cleaned is no longer active */
        ihc_log(IHC_LOG_DEBUG, COMPONENT, "late report id=%" PRIu64 " agent=%s sessions=%zu", r->id,
                r->agent, r->n_sessions);
        end_reported_sessions(c, r);
        return;
    }
    ihc_inflight *f = c->fl[i];
    if (ihc_inflight_report_of(f, r->agent)) {
        ihc_log(IHC_LOG_DEBUG, COMPONENT, "repeated report id=%" PRIu64 " agent=%s", r->id,
                r->agent);
        return;
    }
    end_reported_sessions(c, r);
    if (ihc_inflight_report_take(f, mp) == IHC_OK && ihc_inflight_complete(f)) {
        table_remove(c, (size_t)i);
        finish(c, f);
    }
}

/* The answer to a hello (and, on taking over, to every agent): its sessions' epochs, with
 * the term. A standby sends none: its epochs may be behind the leader's. */
static void send_sync(ihc_coord *c, const char *agent_id)
{
    if (!leading(c))
        return;
    agent_scan sc = {.agent_id = agent_id, .want_hws = true};
    ihc_registry_foreach_agent_session(c->reg, agent_id, scan_agent_session, &sc);
    scan_unique_hws(&sc);
    ihc_epoch_info *ep = calloc(sc.n_hws + 1, sizeof(*ep));
    if (!ep) {
        free(sc.hws);
        return;
    }
    for (size_t i = 0; i < sc.n_hws; i++) {
        ep[i].hw = (char *)sc.hws[i]; /* the message only reads it */
        ep[i].epoch = ihc_registry_epoch(c->reg, sc.hws[i], &ep[i].set_ms);
    }
    ep[sc.n_hws].hw = "*";
    ep[sc.n_hws].epoch = ihc_registry_epoch(c->reg, "*", &ep[sc.n_hws].set_ms);
    ihc_msg m = {.type = IHC_MSG_SYNC};
    m.u.sync.term = wire_term(c);
    m.u.sync.agent = (char *)agent_id;
    m.u.sync.report_begun = true;
    m.u.sync.epochs = ep;
    m.u.sync.n_epochs = sc.n_hws + 1;
    publish(c, &m);
    free(ep);
    free(sc.hws);
}

static void on_hello(ihc_coord *c, ihc_msg **mp)
{
    const ihc_msg *m = *mp;
    const ihc_hello_msg *h = &m->u.hello;
    int rc = ihc_registry_hello(c->reg, h, ihc_mono_ns(), ihc_now_ms());
    if (rc != IHC_OK)
        ihc_log(IHC_LOG_ERROR, COMPONENT, "hello not fully applied agent=%s: %s", h->agent,
                ihc_strerror(rc));
    c->claims_gen++;
    const ihc_reg_agent *a = ihc_registry_agent(c->reg, h->agent);
    if (a)
        persist_agent(c, a);
    send_sync(c, h->agent);
    ihc_log(IHC_LOG_INFO, COMPONENT, "agent hello agent=%s node=%s modules=%zu sessions=%zu",
            h->agent, h->node ? h->node : "", h->n_modules, h->n_sessions);
}

/* An agent given up (silent past IHC_AGENT_TTL, its sessions expired) or forgotten speaks
 * again on a link that never dropped: ask it for a hello, which lists its sessions. */
static void ask_hello(ihc_coord *c, const char *agent_id, const char *why)
{
    ihc_msg m = {.type = IHC_MSG_SYNC};
    m.u.sync.term = wire_term(c);
    m.u.sync.agent = (char *)agent_id;
    m.u.sync.report_begun = true;
    m.u.sync.hello = true;
    publish(c, &m);
    ihc_log(IHC_LOG_WARN, COMPONENT, "agent back agent=%s was=%s: asking it for a hello", agent_id,
            why);
}

static void on_heartbeat(ihc_coord *c, ihc_msg **mp)
{
    const ihc_msg *m = *mp;
    const ihc_heartbeat_msg *hb = &m->u.heartbeat;
    const ihc_reg_agent *before = ihc_registry_agent(c->reg, hb->agent);
    bool was_connected = before && before->state == IHC_AGENT_CONNECTED;
    const char *lost = !before                              ? "unknown"
                       : before->state == IHC_AGENT_GONE    ? "gone"
                       : before->state == IHC_AGENT_PENDING ? "pending"
                                                            : NULL;
    ihc_reg_agent *a = ihc_registry_touch(c->reg, hb->agent, ihc_mono_ns(), ihc_now_ms());
    if (!a)
        return;
    if (lost) {
        ask_hello(c, a->agent_id, lost);
        c->claims_gen++; /* a gone agent's claims count again */
    }
    /* a refresh is enough while connected and its sessions are as last written (the hash's
     * session list is rewritten at most once per heartbeat); after a silence the hash may
     * have expired */
    if (was_connected && a->sessions_written == a->session_changes) {
        ihc_persist_agent_touch(c->persist, a->agent_id, a->last_seen_ms);
    } else {
        persist_agent(c, a);
        a->sessions_written = a->session_changes;
    }
}

static void on_session_begin(ihc_coord *c, ihc_msg **mp)
{
    const ihc_session_begin_msg *b = &(*mp)->u.session_begin;
    begin_session(c, b->agent, &b->session, ihc_mono_ns(), ihc_now_ms());
}

static void on_session_end(ihc_coord *c, ihc_msg **mp)
{
    const ihc_msg *m = *mp;
    const ihc_session_end_msg *e = &m->u.session_end;
    int64_t now_ms = ihc_now_ms();
    ihc_registry_touch(c->reg, e->agent, ihc_mono_ns(), now_ms);
    int rc = ihc_registry_session_end(c->reg, e->agent, e->session_id, e->state, now_ms);
    if (rc == IHC_ENOENT && e->hw) /* already ended here (e.g. interrupted): Redis is idempotent */
        ihc_persist_session_state(c->persist, e->hw, e->session_id, e->state ? e->state : "done",
                                  now_ms);
}

/* A handler may keep the message (it then sets *m to NULL). */
typedef void (*msg_handler)(ihc_coord *c, ihc_msg **m);
static const msg_handler handlers[IHC__MSG_COUNT] = {
    [IHC_MSG_REPORT] = on_report,           [IHC_MSG_HELLO] = on_hello,
    [IHC_MSG_HEARTBEAT] = on_heartbeat,     [IHC_MSG_SESSION_BEGIN] = on_session_begin,
    [IHC_MSG_SESSION_END] = on_session_end,
};

static void on_message(ihc_coord *c, nng_msg *nm)
{
    ihc_msg *m = NULL;
    char detail[160] = "";
    int rc =
        ihc_wire_decode(nng_msg_body(nm), nng_msg_len(nm), c->auth, &m, detail, sizeof(detail));
    if (rc != IHC_OK) {
        count_rejected(c, "report socket", rc, detail);
        return;
    }
    if ((unsigned)m->type >= IHC__MSG_COUNT || !handlers[m->type]) {
        count_rejected(c, ihc_msg_type_name(m->type), IHC_EPROTO, "unexpected type on PULL");
        ihc_msg_free(m);
        return;
    }
    handlers[m->type](c, &m);
    ihc_msg_free(m);
}

/* ---- Redis came back: reconcile and rewrite the state it may have lost ---- */

/* Persist thread: reads what Redis holds now and hands it to the loop. */
static void on_redis_back(void *arg, ihc_store *st)
{
    ihc_coord *c = arg;
    uint64_t seq = 0;
    ihc_store_epoch_rec *ep = NULL;
    size_t n = 0;
    if (ihc_store_seq_get(st, &seq) != IHC_OK)
        seq = 0;
    if (ihc_store_epochs_list(st, &ep, &n) != IHC_OK) {
        ep = NULL;
        n = 0;
    }
    pthread_mutex_lock(&c->mu);
    ihc_store_epochs_free(c->resync_epochs, c->resync_n);
    c->resync = true;
    c->resync_seq = seq;
    c->resync_epochs = ep;
    c->resync_n = n;
    bool stopping = c->stopping;
    pthread_mutex_unlock(&c->mu);
    if (!stopping)
        wake(c);
}

/* ihc:stats from memory, queued after every write before it: the log entries still queued
 * count themselves first (on an emptied Redis), then these totals, which include them,
 * replace the counters. */
static void stats_rewrite(ihc_coord *c)
{
    ihc_store_stats v = {.total = c->total,
                         .succeeded = c->succeeded,
                         .failed = c->failed,
                         .sessions_created = c->sessions_created};
    ihc_persist_stats_set(c->persist, &v);
}

static void resync_epoch(void *arg, const char *hw, uint64_t epoch, int64_t set_ms)
{
    ihc_coord *c = arg;
    (void)set_ms;
    ihc_persist_epoch_raise(c->persist, hw, epoch);
}

static void resync_session(void *arg, const ihc_reg_session *s)
{
    on_registry_event(arg, IHC_REG_SESSION_UPDATED, s);
}

static void resync_agent(void *arg, const ihc_reg_agent *a)
{
    if (a->state != IHC_AGENT_GONE)
        persist_agent(arg, a);
}

/* Loop thread: ids and epochs move above what Redis knew, then the whole live state is
 * written again (every write is idempotent), since a restarted Redis may have lost it. */
static void resync(ihc_coord *c)
{
    pthread_mutex_lock(&c->mu);
    bool due = c->resync;
    uint64_t seq = c->resync_seq;
    ihc_store_epoch_rec *ep = c->resync_epochs;
    size_t n = c->resync_n;
    c->resync = false;
    c->resync_epochs = NULL;
    c->resync_n = 0;
    pthread_mutex_unlock(&c->mu);
    if (!due)
        return;
    if (seq >= c->next_id) {
        /* ids were handed out that this process never knew of (it started without Redis) */
        c->next_id = seq + 1;
        c->reserved_hi = seq;
    }
    for (size_t i = 0; i < n; i++)
        ihc_registry_epoch_raise(c->reg, ep[i].hw, ep[i].epoch, 0);
    ihc_store_epochs_free(ep, n);
    if (c->reserved_hi > 0)
        ihc_persist_seq_raise(c->persist, c->reserved_hi);
    ihc_registry_foreach_epoch(c->reg, resync_epoch, c);
    ihc_registry_foreach_session(c->reg, NULL, resync_session, c);
    ihc_registry_foreach_agent(c->reg, resync_agent, c);
    if (c->flag) {
        ihc_store_flags sf = {.global_interrupt_flag = true, .set_ms = c->flag_set_ms};
        snprintf(sf.interrupt_hardware_id, sizeof(sf.interrupt_hardware_id), "%s", c->flag_hw);
        snprintf(sf.reason, sizeof(sf.reason), "%s", c->flag_reason);
        ihc_persist_flags_set(c->persist, &sf);
    }
    stats_rewrite(c);
    ihc_log(IHC_LOG_INFO, COMPONENT,
            "redis state rewritten after reconnect sessions=%zu next_id=%" PRIu64,
            ihc_registry_session_count(c->reg), c->next_id);
}

/* ---- the loop ---- */

/* ---- queries (loop thread) ---- */

static void stats_view(const ihc_coord *c, ihc_stats_view *s)
{
    *s = (ihc_stats_view){.total = c->total,
                          .succeeded = c->succeeded,
                          .failed = c->failed,
                          .timed = c->timed,
                          .sum_ms = c->sum_ms,
                          .window = c->window,
                          .win_n = c->win_n,
                          .sessions_created = c->sessions_created,
                          .rejected = atomic_load(&c->rejected),
                          .active_sessions = ihc_registry_session_count(c->reg),
                          .registered_modules = ihc_registry_module_count(c->reg),
                          .agents = ihc_registry_live_agents(c->reg),
                          .inflight = c->n_fl,
                          .persist_backlog = ihc_persist_backlog(c->persist),
                          .persist_dropped = ihc_persist_dropped(c->persist),
                          .redis_up = ihc_persist_connected(c->persist),
                          .uptime_s = (double)(ihc_mono_ns() - c->start_ns) / 1e9,
                          .latency = &c->latency,
                          .module_latency = &c->module_latency};
}

static char *q_sessions(ihc_coord *c, const char *hw)
{
    return ihc_doc_sessions(c->reg, hw);
}

static char *q_agents(ihc_coord *c, const char *hw)
{
    (void)hw;
    return ihc_doc_agents(c->reg);
}

static char *q_flags(ihc_coord *c, const char *hw)
{
    (void)hw;
    ihc_flags_view f = {
        .set = c->flag, .hw = c->flag_hw, .reason = c->flag_reason, .set_ms = c->flag_set_ms};
    return ihc_doc_flags(&f);
}

static char *q_flags_reset(ihc_coord *c, const char *hw)
{
    if (!leading(c))
        return NULL; /* run_cmd answers 503 */
    flags_reset(c);
    ihc_log(IHC_LOG_INFO, COMPONENT, "flags reset on request");
    return q_flags(c, hw);
}

static char *q_stats(ihc_coord *c, const char *hw)
{
    (void)hw;
    ihc_stats_view s;
    stats_view(c, &s);
    return ihc_doc_stats(&s);
}

static char *q_metrics(ihc_coord *c, const char *hw)
{
    (void)hw;
    ihc_stats_view s;
    stats_view(c, &s);
    return ihc_doc_metrics(&s);
}

static char *q_health(ihc_coord *c, const char *hw)
{
    (void)hw;
    return ihc__coord_health(c);
}

/* The queries of api.h, by op. */
static const struct {
    const char *op;
    char *(*run)(ihc_coord *c, const char *hw);
} queries[] = {
    {"sessions", q_sessions},       {"agents", q_agents}, {"flags", q_flags},
    {"flags_reset", q_flags_reset}, {"stats", q_stats},   {"metrics", q_metrics},
    {"health", q_health},
};

static int query_index(const char *op)
{
    for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++)
        if (strcmp(queries[i].op, op) == 0)
            return (int)i;
    return -1;
}

static void run_cmd(ihc_coord *c, ihc__cmd *k)
{
    if (k->kind == CMD_INTERRUPT) {
        start_interrupt(c, k);
        return;
    }
    if (queries[k->query].run == q_flags_reset && !leading(c)) {
        answer_not_leader(c, k->done, k->arg);
        return;
    }
    char *body = queries[k->query].run(c, k->has_hw ? k->hw : NULL);
    if (!body)
        answer(k->done, k->arg, 500, "out of memory");
    else
        k->done(200, body, k->arg);
}

static ihc__cmd *take_queue(ihc_coord *c)
{
    pthread_mutex_lock(&c->mu);
    ihc__cmd *k = c->q_head;
    c->q_head = c->q_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    return k;
}

static void run_timers(ihc_coord *c, uint64_t now_ns)
{
    for (size_t i = 0; i < c->n_fl;) {
        ihc_inflight *f = c->fl[i];
        if (ihc_inflight_complete(f) || ihc_inflight_expired(f, now_ns)) {
            table_remove(c, i);
            finish(c, f);
            continue;
        }
        if (ihc_inflight_resend_due(f, now_ns))
            resend(c, f, now_ns);
        i++;
    }
    if (c->flag && c->flag_reset_ns && now_ns >= c->flag_reset_ns) {
        flags_reset(c);
        ihc_log(IHC_LOG_DEBUG, COMPONENT, "flags reset after SESSION_CLEANUP_DELAY");
    }
    if (now_ns >= c->next_sweep_ns) {
        size_t gone = ihc_registry_expire(c->reg, now_ns);
        c->claims_gen += gone;
        if (gone)
            ihc_log(IHC_LOG_INFO, COMPONENT, "agents gone (silent for IHC_AGENT_TTL) count=%zu",
                    gone);
        c->next_sweep_ns = now_ns + SWEEP_NS;
    }
}

static int poll_timeout_ms(const ihc_coord *c, uint64_t now_ns)
{
    uint64_t next = c->next_sweep_ns;
    for (size_t i = 0; i < c->n_fl; i++) {
        uint64_t t = ihc_inflight_next_ns(c->fl[i]);
        if (t < next)
            next = t;
    }
    if (c->flag && c->flag_reset_ns && c->flag_reset_ns < next)
        next = c->flag_reset_ns;
    if (c->persist_due_ns && c->persist_due_ns < next)
        next = c->persist_due_ns;
    if (next <= now_ns)
        return 0;
    uint64_t ms = (next - now_ns + 999999ull) / 1000000ull;
    return ms > 1000 ? 1000 : (int)ms;
}

/* nng's thread: the pending receive is done. */
static void on_arrival(void *arg)
{
    wake(arg);
}

/* Before the loop sleeps: agents' messages wake it through a receive pending on PULL
 * (common/nbio.h says why not through PULL's receive fd: measured, 0.66 sleeps of the loop per
 * interrupt at N = 8, a quarter of all). Arms unless PULL holds a message already (false then:
 * it is held for the turn, which begins without sleeping). */
static bool arm_pull(ihc_coord *c)
{
    if (ihc_nb_recv(c->pull, c->pull_aio, &c->held) == 0)
        return false; /* came after the last turn's look */
    ihc_nb_waiter_arm(&c->waiter, c->pull);
    return true;
}

/* What the agents sent since the last turn: the pending receive's message (or the one held)
 * first — a connection reads its next message only once its last was taken, so PULL holds
 * nothing older from that agent — then what PULL holds, up to MAX_MSGS_PER_TURN. */
static void take_agent_msgs(ihc_coord *c)
{
    if (ihc_nb_waiter_pending(&c->waiter))
        return; /* nothing yet: the pending receive gets the next message */
    nng_msg *nm = NULL;
    if (ihc_nb_waiter_take(&c->waiter, &nm) == 0)
        c->held = nm; /* nothing is held while the waiter is armed (arm_pull) */
    if (c->held) {
        on_message(c, c->held);
        nng_msg_free(c->held);
        c->held = NULL;
    }
    for (int i = 0; i < MAX_MSGS_PER_TURN; i++) {
        if (ihc_nb_recv(c->pull, c->pull_aio, &nm) != 0)
            break;
        on_message(c, nm);
        nng_msg_free(nm);
    }
}

static void *loop_main(void *arg)
{
    ihc_coord *c = arg;
    ihc_thread_name("ihc:loop");
    while (!atomic_load(&c->loop_stop)) {
        bool more = !ihc_nb_waiter_armed(&c->waiter) && !arm_pull(c);
        struct pollfd pfd[2] = {{.fd = c->wake_fd, .events = POLLIN},
                                {.fd = c->watch_open ? c->watch_fd : -1, .events = POLLIN}};
        int rv = poll(pfd, 2, more ? 0 : poll_timeout_ms(c, ihc_mono_ns()));
        if (rv < 0 && errno != EINTR) {
            ihc_log(IHC_LOG_ERROR, COMPONENT, "poll failed: %s", strerror(errno));
            ihc_sleep_ms(10);
        }
        if (rv > 0 && (pfd[0].revents & POLLIN)) {
            uint64_t v;
            ssize_t n = read(c->wake_fd, &v, sizeof(v));
            (void)n;
        }
        ihc_persist_defer(c->persist);
        watch_drain(c); /* before taking over: the old leader's last interrupts count */
        leadership(c);
        /* agents' messages first: a session begun before a request must be expected by it */
        take_agent_msgs(c);
        for (ihc__cmd *k = take_queue(c); k;) {
            ihc__cmd *next = k->next;
            run_cmd(c, k);
            cmd_free(k);
            k = next;
        }
        resync(c);
        uint64_t now_ns = ihc_mono_ns();
        run_timers(c, now_ns);
        if (c->n_fl == 0 || (c->persist_due_ns && now_ns >= c->persist_due_ns)) {
            ihc_persist_kick(c->persist);
            c->persist_due_ns = 0;
        } else if (!c->persist_due_ns && ihc_persist_deferred(c->persist)) {
            c->persist_due_ns = now_ns + PERSIST_DEFER_NS;
        }
    }
    /* shutting down: answer what is in flight with what it has, then what is queued */
    while (c->n_fl > 0) {
        ihc_inflight *f = c->fl[--c->n_fl];
        finish(c, f);
    }
    ihc_persist_kick(c->persist);
    for (ihc__cmd *k = take_queue(c); k;) {
        ihc__cmd *next = k->next;
        if (k->kind == CMD_INTERRUPT) {
            answer(k->done, k->arg, 503, "coordinator shutting down");
            atomic_fetch_sub(&c->pending, 1);
        } else {
            run_cmd(c, k);
        }
        cmd_free(k);
        k = next;
    }
    return NULL;
}

/* ---- state from Redis: at start-up and when taking over ---- */

static void snap_free(snapshot *sn)
{
    ihc_store_epochs_free(sn->ep, sn->n_ep);
    ihc_store_agents_free(sn->ag, sn->n_ag);
    ihc_store_sessions_free(sn->ss, sn->n_ss);
    memset(sn, 0, sizeof(*sn));
}

/* Any thread, with its own store: what Redis holds. */
static int snap_read(ihc_store *st, snapshot *sn)
{
    memset(sn, 0, sizeof(*sn));
    int rc = ihc_store_seq_get(st, &sn->seq);
    if (rc == IHC_OK)
        rc = ihc_store_epochs_list(st, &sn->ep, &sn->n_ep);
    if (rc == IHC_OK)
        rc = ihc_store_agents_list(st, &sn->ag, &sn->n_ag);
    if (rc == IHC_OK)
        rc = ihc_store_sessions_list(st, NULL, &sn->ss, &sn->n_ss);
    if (rc == IHC_OK)
        rc = ihc_store_stats_get(st, "total_interrupts", &sn->total);
    if (rc == IHC_OK)
        rc = ihc_store_stats_get(st, "successful_interrupts", &sn->succeeded);
    if (rc == IHC_OK)
        rc = ihc_store_stats_get(st, "failed_interrupts", &sn->failed);
    if (rc == IHC_OK)
        rc = ihc_store_stats_get(st, "sessions_created", &sn->sessions_created);
    if (rc == IHC_OK)
        rc = ihc_store_flags_get(st, &sn->flags);
    sn->read = rc == IHC_OK;
    return rc;
}

/* An agent as Redis keeps it, PENDING until it says hello. */
static void snap_agent(ihc_coord *c, const ihc_store_agent_rec *ag, uint64_t now_ns)
{
    json_t *mods = ag->modules ? json_loads(ag->modules, 0, NULL) : NULL;
    size_t nm = json_array_size(mods), k = 0;
    ihc_module_info *mi = nm ? calloc(nm, sizeof(*mi)) : NULL;
    for (size_t j = 0; mi && j < nm; j++) {
        json_t *v = json_array_get(mods, j);
        const char *name = json_string_value(json_object_get(v, "name"));
        if (!name)
            continue;
        mi[k].name = (char *)name;
        mi[k].timeout_ms = (uint32_t)json_integer_value(json_object_get(v, "timeout_ms"));
        mi[k].enabled = !json_is_false(json_object_get(v, "enabled"));
        json_t *meths = json_object_get(v, "methods");
        size_t nme = json_array_size(meths);
        mi[k].methods = nme ? calloc(nme, sizeof(char *)) : NULL;
        for (size_t q = 0; mi[k].methods && q < nme; q++) {
            const char *ms = json_string_value(json_array_get(meths, q));
            if (ms)
                mi[k].methods[mi[k].n_methods++] = (char *)ms;
        }
        k++;
    }
    ihc_registry_agent_load(c->reg, ag->agent_id, ag->node, ag->pid, ag->started_ms,
                            ag->last_seen_ms, mi, k, now_ns);
    for (size_t j = 0; j < k; j++)
        free(mi[j].methods);
    free(mi);
    json_decref(mods);
}

/* Loop thread (or before it starts): merges what Redis holds into what this coordinator
 * knows. Epochs only go up; an agent this coordinator already heard from (a standby's warm
 * registry: agents talk to every coordinator) keeps what it said, and only agents not heard
 * from come from Redis, PENDING until their hello; counters take the larger value. */
static void snap_apply(ihc_coord *c, const snapshot *sn)
{
    uint64_t now_ns = ihc_mono_ns();
    for (size_t i = 0; i < sn->n_ep; i++)
        ihc_registry_epoch_raise(c->reg, sn->ep[i].hw, sn->ep[i].epoch, 0);
    for (size_t i = 0; i < sn->n_ag; i++)
        if (!ihc_registry_agent(c->reg, sn->ag[i].agent_id))
            snap_agent(c, &sn->ag[i], now_ns);
    for (size_t i = 0; i < sn->n_ss; i++) {
        const ihc_reg_agent *a = ihc_registry_agent(c->reg, sn->ss[i].agent_id);
        if (!a || a->state == IHC_AGENT_PENDING)
            ihc_registry_session_load(c->reg, &sn->ss[i], now_ns);
    }
    if ((uint64_t)sn->total > c->total) {
        c->total = (uint64_t)sn->total;
        c->succeeded = (uint64_t)sn->succeeded;
        c->failed = (uint64_t)sn->failed;
    }
    if ((uint64_t)sn->sessions_created > c->sessions_created)
        c->sessions_created = (uint64_t)sn->sessions_created;
    if (sn->flags.global_interrupt_flag && sn->flags.set_ms >= c->flag_set_ms) {
        c->flag = true;
        snprintf(c->flag_hw, sizeof(c->flag_hw), "%s", sn->flags.interrupt_hardware_id);
        snprintf(c->flag_reason, sizeof(c->flag_reason), "%s", sn->flags.reason);
        c->flag_set_ms = sn->flags.set_ms;
        c->flag_reset_ns = now_ns + ns_of_s(c->cfg->session_cleanup_delay);
    }
    if (sn->seq >= c->next_id)
        c->next_id = sn->seq + 1;
}

static void load_state(ihc_coord *c)
{
    uint64_t file_seq = 0;
    if (seq_file_read(c, &file_seq) != IHC_OK)
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot read state file in state_dir=%s",
                c->cfg->state_dir);
    c->next_id = file_seq + 1;
    ihc_store_opts so = {.url = c->cfg->redis_url,
                         .timeout_ms = (uint32_t)c->cfg->redis_timeout_ms,
                         .client_name = "ihc-coordinator-load"};
    ihc_store *st = NULL;
    snapshot sn;
    memset(&sn, 0, sizeof(sn));
    if (ihc_store_open(&st, &so) == IHC_OK && ihc_store_ping(st) == IHC_OK) {
        int rc = snap_read(st, &sn);
        snap_apply(c, &sn);
        if (rc == IHC_OK)
            ihc_log(IHC_LOG_INFO, COMPONENT,
                    "state loaded from redis epochs=%zu agents=%zu sessions=%zu seq=%" PRIu64,
                    sn.n_ep, sn.n_ag, sn.n_ss, sn.seq);
        else
            ihc_log(IHC_LOG_WARN, COMPONENT, "state only partly loaded from redis: %s",
                    ihc_strerror(rc));
    } else {
        ihc_log(IHC_LOG_WARN, COMPONENT,
                "redis unreachable at start url=%s: starting without stored state", c->redis_shown);
    }
    ihc_store_close(st);
    if (c->next_id == 1 && !sn.read && !c->cfg->state_dir)
        ihc_log(IHC_LOG_WARN, COMPONENT,
                "interrupt ids start at 1: no redis and no IHC_STATE_DIR to resume from");
    snap_free(&sn);
    c->reserved_hi = c->next_id - 1;
    c->first_id = c->next_id;
}

/* ---- leadership ---- */

/* Lease thread, just elected: what Redis holds, for the loop to take over with. */
static void on_elected(void *arg, ihc_store *st, uint64_t term, uint64_t ids_hi)
{
    ihc_coord *c = arg;
    snapshot sn;
    if (snap_read(st, &sn) != IHC_OK)
        ihc_log(IHC_LOG_WARN, COMPONENT, "taking over term=%" PRIu64 " with part of redis: %s",
                term, ihc_store_errstr(st));
    pthread_mutex_lock(&c->mu);
    snap_free(&c->elect_snap);
    c->elect_snap = sn;
    c->elect_due = true;
    c->elect_term = term;
    c->elect_ids_hi = ids_hi;
    pthread_mutex_unlock(&c->mu);
}

/* Lease thread: the view changed; the loop looks at it. */
static void on_lease_change(void *arg)
{
    wake(arg);
}

/* Persist thread: the term to fence writes with, 0 when this coordinator may not write. */
static uint64_t write_term(void *arg)
{
    ihc_coord *c = arg;
    uint64_t t = atomic_load(&c->write_term);
    if (!t || ihc_leader_term(c->leader) != t)
        return 0;
    return atomic_load(&c->lead_provisional) ? IHC_PERSIST_HOLD : t;
}

static void on_fenced(void *arg, uint64_t term)
{
    ihc_coord *c = arg;
    ihc_leader_fenced(c->leader, term);
}

static void rewrite_all(ihc_coord *c)
{
    ihc_persist_seq_raise(c->persist, c->reserved_hi);
    ihc_registry_foreach_epoch(c->reg, resync_epoch, c);
    ihc_registry_foreach_session(c->reg, NULL, resync_session, c);
    ihc_registry_foreach_agent(c->reg, resync_agent, c);
    if (c->flag) {
        ihc_store_flags sf = {.global_interrupt_flag = true, .set_ms = c->flag_set_ms};
        snprintf(sf.interrupt_hardware_id, sizeof(sf.interrupt_hardware_id), "%s", c->flag_hw);
        snprintf(sf.reason, sizeof(sf.reason), "%s", c->flag_reason);
        ihc_persist_flags_set(c->persist, &sf);
    }
    stats_rewrite(c);
}

static void sync_agent(void *arg, const ihc_reg_agent *a)
{
    if (a->state == IHC_AGENT_CONNECTED)
        send_sync(arg, a->agent_id);
}

/* Loop thread: this coordinator now leads with term: Redis' state merged in, ids from the
 * block the lease reserved, the whole state written under the new term, every agent told
 * the term and its epochs. */
static void take_lead(ihc_coord *c, uint64_t term, uint64_t ids_hi, const snapshot *sn)
{
    snap_apply(c, sn);
    ihc_leader_ids_next(c->leader, c->next_id);
    if (ids_hi >= IHC_LEADER_ID_BLOCK && ids_hi - IHC_LEADER_ID_BLOCK + 1 > c->next_id)
        c->next_id = ids_hi - IHC_LEADER_ID_BLOCK + 1;
    if (ids_hi > c->reserved_hi) {
        c->reserved_hi = ids_hi;
        if (seq_file_write(c, ids_hi) != IHC_OK)
            ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot write state file state_dir=%s",
                    c->cfg->state_dir);
    }
    c->lead_term = term;
    atomic_store(&c->write_term, term);
    rewrite_all(c);
    ihc_registry_foreach_agent(c->reg, sync_agent, c);
    char **pending = NULL;
    size_t n_pending = 0;
    ihc_registry_pending(c->reg, &pending, &n_pending);
    ihc_registry_strv_free(pending, n_pending);
    ihc_log(IHC_LOG_INFO, COMPONENT,
            "leading term=%" PRIu64 " next_id=%" PRIu64 " agents=%zu warming_up=%zu sessions=%zu",
            term, c->next_id, ihc_registry_live_agents(c->reg), n_pending,
            ihc_registry_session_count(c->reg));
}

/* Loop thread: the lease ended. Interrupts in flight are answered with what they have (they
 * cannot be re-sent), and nothing queued for Redis is written under a later term. */
static void lose_lead(ihc_coord *c)
{
    uint64_t term = c->lead_term;
    c->lead_term = 0;
    atomic_store(&c->write_term, 0);
    size_t inflight = c->n_fl;
    while (c->n_fl > 0) {
        ihc_inflight *f = c->fl[--c->n_fl];
        finish(c, f);
    }
    size_t dropped = ihc_persist_drop(c->persist);
    ihc_log(IHC_LOG_WARN, COMPONENT,
            "not leading any more term=%" PRIu64 " answered_inflight=%zu writes_dropped=%zu", term,
            inflight, dropped);
}

static void watch_close(ihc_coord *c, uint32_t within_ms)
{
    if (!c->watch_open)
        return;
    /* bounded: no callback of this socket refers to c, so one still closing can be left */
    ihc_sock_close(c->watch, within_ms, COMPONENT, "watch");
    c->watch_open = false;
    c->watch_fd = -1;
    c->watch_url[0] = '\0';
}

/* Loop thread: a standby watches the PUB of the leader it knows of (redialled when another
 * leads); a leader watches nothing. */
static void watch_follow(ihc_coord *c)
{
    if (c->lead_term) {
        watch_close(c, WATCH_CLOSE_MS);
        return;
    }
    ihc_leader_view v;
    ihc_leader_view_get(c->leader, &v);
    if (!v.leader_pub[0] || v.leader) {
        watch_close(c, WATCH_CLOSE_MS);
        return;
    }
    if (c->watch_open && strcmp(c->watch_url, v.leader_pub) == 0)
        return;
    watch_close(c, WATCH_CLOSE_MS);
    int rv = nng_sub0_open(&c->watch);
    if (rv != 0)
        return;
    c->watch_open = true;
    snprintf(c->watch_url, sizeof(c->watch_url), "%s", v.leader_pub);
    if ((rv = nng_socket_set(c->watch, NNG_OPT_SUB_SUBSCRIBE, "hw:", 3)) != 0 ||
        (rv = nng_socket_set_size(c->watch, NNG_OPT_RECVMAXSZ, IHC_WIRE_MAX_MSG)) != 0 ||
        (rv = nng_socket_set_int(c->watch, NNG_OPT_RECVBUF, PULL_RECVBUF)) != 0 ||
        (rv = ihc_tls_dial(c->watch, v.leader_pub, c->cfg->tls, NULL, NNG_FLAG_NONBLOCK)) != 0 ||
        (rv = nng_socket_get_int(c->watch, NNG_OPT_RECVFD, &c->watch_fd)) != 0) {
        ihc_log(IHC_LOG_WARN, COMPONENT, "cannot watch the leader's broadcasts url=%s: %s",
                v.leader_pub, nng_strerror(rv));
        watch_close(c, WATCH_CLOSE_MS);
        return;
    }
    ihc_log(IHC_LOG_INFO, COMPONENT, "standby watching the leader's broadcasts leader=%s url=%s",
            v.leader_id, v.leader_pub);
}

/* Loop thread: the leader's interrupts seen by a standby raise its epochs and ids. */
static void watch_drain(ihc_coord *c)
{
    for (int i = 0; c->watch_open && i < MAX_MSGS_PER_TURN; i++) {
        nng_msg *nm = NULL;
        if (nng_recvmsg(c->watch, &nm, NNG_FLAG_NONBLOCK) != 0)
            break;
        const char *topic;
        size_t tlen, blen;
        const uint8_t *body;
        ihc_msg *m = NULL;
        if (ihc_wire_split(nng_msg_body(nm), nng_msg_len(nm), &topic, &tlen, &body, &blen) ==
                IHC_OK &&
            ihc_wire_decode(body, blen, c->auth, &m, NULL, 0) == IHC_OK &&
            m->type == IHC_MSG_INTERRUPT) {
            const ihc_interrupt_msg *in = &m->u.interrupt;
            ihc_registry_epoch_raise(c->reg, in->hw, in->epoch, ihc_now_ms());
            if (in->id >= c->next_id)
                c->next_id = in->id + 1;
        }
        ihc_msg_free(m);
        nng_msg_free(nm);
    }
}

/* Loop thread: follows the lease. A provisional term (leader.h: Redis unreachable at start)
 * is led at once with what was loaded; its promotion to a leased term keeps what it queued
 * for Redis (nobody else led meanwhile: the lease was free). */
static void leadership(ihc_coord *c)
{
    uint64_t term = ihc_leader_term(c->leader);
    pthread_mutex_lock(&c->mu);
    bool due = c->elect_due && term && term >= c->elect_term;
    uint64_t et = c->elect_term, hi = c->elect_ids_hi;
    snapshot sn = c->elect_snap;
    if (due) {
        c->elect_due = false;
        memset(&c->elect_snap, 0, sizeof(c->elect_snap));
    }
    pthread_mutex_unlock(&c->mu);
    bool promote = due && et == term && c->lead_term && atomic_load(&c->lead_provisional);
    if (c->lead_term && term != c->lead_term && !promote)
        lose_lead(c);
    if (due && et == term && (!c->lead_term || promote)) {
        atomic_store(&c->lead_provisional, false);
        take_lead(c, et, hi, &sn);
    } else if (!due && term && !c->lead_term) {
        ihc_leader_view v;
        ihc_leader_view_get(c->leader, &v);
        if (v.provisional && v.term == term) {
            atomic_store(&c->lead_provisional, true);
            c->lead_term = term;
            atomic_store(&c->write_term, term);
            ihc_log(IHC_LOG_WARN, COMPONENT,
                    "leading provisionally term=%" PRIu64 " next_id=%" PRIu64, term, c->next_id);
        }
    }
    if (due)
        snap_free(&sn);
    watch_follow(c);
}

/* ---- lifecycle ---- */

/* A listen URL as others reach it: a wildcard host becomes this host's name. */
static void advertised(const char *url, bool http, char *out, size_t cap)
{
    char host[256];
    if (gethostname(host, sizeof(host)) != 0 || !host[0])
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    const char *p = strstr(url, "://");
    size_t scheme = p ? (size_t)(p - url) + 3 : 0;
    const char *rest = url + scheme;
    const char *wild[] = {"0.0.0.0:", "*:", "[::]:", ":"};
    for (size_t i = 0; i < sizeof(wild) / sizeof(wild[0]); i++)
        if (strncmp(rest, wild[i], strlen(wild[i])) == 0) {
            snprintf(out, cap, "%s%.*s%s:%s", http ? "http://" : "", (int)scheme, url, host,
                     rest + strlen(wild[i]));
            return;
        }
    snprintf(out, cap, "%s%s", http ? "http://" : "", url);
}

static int open_leader(ihc_coord *c)
{
    const ihc_config *cfg = c->cfg;
    char control[512], http[512], pub[512], report[512];
    advertised(cfg->control_url, false, control, sizeof(control));
    advertised(cfg->http_addr, true, http, sizeof(http));
    advertised(cfg->pub_url, false, pub, sizeof(pub));
    advertised(cfg->report_url, false, report, sizeof(report));
    ihc_leader_opts lo = {.store = {.url = cfg->redis_url,
                                    .timeout_ms = (uint32_t)cfg->redis_timeout_ms,
                                    .client_name = "ihc-coordinator-lease"},
                          .id = cfg->coordinator_id,
                          .ttl_s = cfg->lease_ttl,
                          .first_id = c->next_id,
                          .control = control,
                          .http = http,
                          .pub = pub,
                          .report = report,
                          .on_elected = on_elected,
                          .on_change = on_lease_change,
                          .arg = c};
    int rc = ihc_leader_open(&c->leader, &lo);
    if (rc != IHC_OK)
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot start the lease: %s", ihc_strerror(rc));
    return rc;
}

static int listen_on(nng_socket s, const char *url, const ihc_tls *tls, const char *what)
{
    int rv = ihc_tls_listen(s, url, tls, NULL); /* tls+tcp:// with the TLS settings */
    if (rv != 0) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot listen %s url=%s: %s", what, url,
                nng_strerror(rv));
        return IHC_ETRANSPORT;
    }
    return IHC_OK;
}

int ihc_coord_open(ihc_coord **out, const ihc_config *cfg)
{
    ihc_coord *c = calloc(1, sizeof(*c));
    if (!c)
        return IHC_ENOMEM;
    int rc = IHC_ENOMEM;
    c->cfg = cfg;
    ihc_redis_url_redact(cfg->redis_url, c->redis_shown, sizeof(c->redis_shown));
    c->wake_fd = -1;
    c->watch_fd = -1;
    c->start_ns = ihc_mono_ns();
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->pipes_mu, NULL);
    atomic_init(&c->pipes_gen, 0);
    atomic_init(&c->loop_stop, false);
    atomic_init(&c->pending, 0);
    atomic_init(&c->rejected, 0);
    if (!(c->window = calloc(IHC__STATS_WINDOW, sizeof(double))))
        goto fail;
    ihc_hist_family_init(&c->module_latency, 0);
    size_t history =
        cfg->events_history > 0 ? (size_t)cfg->events_history : (size_t)IHC_DEFAULT_EVENTS_HISTORY;
    if ((rc = ihc_events_new(&c->events, history, 0)) != IHC_OK)
        goto fail;
    if (cfg->secret && cfg->secret_len &&
        (rc = ihc_wire_auth_new(&c->auth, cfg->secret, cfg->secret_len, 0)) != IHC_OK)
        goto fail;
    ihc_registry_opts ro = {
        .agent_ttl_ns = ns_of_s(cfg->agent_ttl),
        .max_sessions_per_agent =
            cfg->max_active_sessions > 0 ? (size_t)cfg->max_active_sessions * 10 : 0,
        .on_event = on_registry_event,
        .on_agent = on_agent_state,
        .arg = c,
    };
    if (ro.max_sessions_per_agent && ro.max_sessions_per_agent < 1000)
        ro.max_sessions_per_agent = 1000;
    if ((rc = ihc_registry_new(&c->reg, &ro)) != IHC_OK)
        goto fail;

    ihc_persist_opts po = {.store = {.url = cfg->redis_url,
                                     .timeout_ms = (uint32_t)cfg->redis_timeout_ms,
                                     .session_ttl_s = (uint32_t)(cfg->session_timeout + 0.5),
                                     .agent_ttl_s = (uint32_t)(cfg->agent_ttl + 0.999),
                                     .log_max = (uint32_t)cfg->interrupt_log_max,
                                     .client_name = "ihc-coordinator"},
                           .on_reconnect = on_redis_back,
                           .on_state = on_redis_state,
                           .term = write_term,
                           .on_fenced = on_fenced,
                           .arg = c};
    if (po.store.agent_ttl_s == 0)
        po.store.agent_ttl_s = 1;
    if ((rc = ihc_persist_open(&c->persist, &po)) != IHC_OK) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot start the redis writer url=%s: %s",
                c->redis_shown, ihc_strerror(rc));
        goto fail;
    }
    load_state(c);
    if ((rc = open_leader(c)) != IHC_OK)
        goto fail;

    int rv;
    if ((rv = nng_pub0_open(&c->pub)) != 0 || (rv = nng_pull0_open(&c->pull)) != 0 ||
        (rv = nng_aio_alloc(&c->pub_aio, NULL, NULL)) != 0 ||
        (rv = nng_aio_alloc(&c->pull_aio, NULL, NULL)) != 0 ||
        (rv = ihc_nb_waiter_init(&c->waiter, on_arrival, c)) != 0) {
        rc = ihc_err_from_nng(rv);
        goto fail;
    }
    if ((rv = nng_socket_set_int(c->pub, NNG_OPT_SENDBUF, PUB_SENDBUF)) != 0 ||
        (rv = nng_socket_set_int(c->pull, NNG_OPT_RECVBUF, PULL_RECVBUF)) != 0 ||
        (rv = nng_socket_set_size(c->pull, NNG_OPT_RECVMAXSZ, IHC_WIRE_MAX_MSG)) != 0) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot set socket options: %s", nng_strerror(rv));
        rc = ihc_err_from_nng(rv);
        goto fail;
    }
    if ((rv = nng_pipe_notify(c->pub, NNG_PIPE_EV_ADD_PRE, on_pub_pipe, c)) != 0 ||
        (rv = nng_pipe_notify(c->pub, NNG_PIPE_EV_REM_POST, on_pub_pipe, c)) != 0) {
        rc = ihc_err_from_nng(rv);
        goto fail;
    }
    if ((rc = listen_on(c->pub, cfg->pub_url, cfg->tls, "pub")) != IHC_OK ||
        (rc = listen_on(c->pull, cfg->report_url, cfg->tls, "report")) != IHC_OK)
        goto fail;
    if ((c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        rc = IHC_EIO;
        goto fail;
    }
    c->next_sweep_ns = ihc_mono_ns() + SWEEP_NS;
    /* alone, or the first of several: lead from the first request on */
    ihc_leader_wait_first(c->leader, 2u * (uint32_t)cfg->redis_timeout_ms + 500u);
    leadership(c);
    if (pthread_create(&c->loop, NULL, loop_main, c) != 0) {
        rc = IHC_EINTERNAL;
        goto fail;
    }
    c->loop_started = true;
    *out = c;
    return IHC_OK;
fail:
    ihc_coord_close(c, 0);
    return rc;
}

void ihc_coord_stop(ihc_coord *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stopping = true;
    pthread_mutex_unlock(&c->mu);
    if (c->loop_started) {
        atomic_store(&c->loop_stop, true);
        wake(c);
        pthread_join(c->loop, NULL);
        c->loop_started = false;
    }
}

void ihc_coord_close(ihc_coord *c, uint32_t flush_ms)
{
    if (!c)
        return;
    ihc_coord_stop(c);
    /* nothing can reach the queue any more: free what a failed open may have left */
    for (ihc__cmd *k = take_queue(c); k;) {
        ihc__cmd *next = k->next;
        cmd_free(k);
        k = next;
    }
    for (size_t i = 0; i < c->n_fl; i++)
        ihc_inflight_free(c->fl[i]);
    free(c->fl);
    if (c->persist && c->reg && c->next_id > c->first_id) {
        /* Redis may have come back after the loop's last turn: rewrite what it lost now,
         * and record the id block once more (raise-only), so that a coordinator started
         * after this one never hands out these ids again. A coordinator that handed out no
         * id (e.g. it failed to start) has nothing to record. */
        resync(c);
        ihc_persist_seq_raise(c->persist, c->reserved_hi);
    }
    /* the writer first: its reconnect hook uses the mutex and the wake-up fd; its flush is
     * fenced by the lease, given up after it */
    ihc_persist_close(c->persist, flush_ms);
    ihc_leader_close(c->leader);
    watch_close(c, IHC_SOCK_CLOSE_MS);
    ihc_store_epochs_free(c->resync_epochs, c->resync_n);
    snap_free(&c->elect_snap);
    /* only the loop used them, and it has ended; the pending receive is cancelled (its
     * callback writes wake_fd, still open) */
    ihc_nb_waiter_fini(&c->waiter);
    nng_aio_free(c->pub_aio);
    nng_aio_free(c->pull_aio);
    c->pub_aio = c->pull_aio = NULL;
    nng_msg_free(c->held); /* a message taken as the loop stopped */
    c->held = NULL;
    int pub_rc = ihc_sock_close(c->pub, IHC_SOCK_CLOSE_MS, COMPONENT, "publish");
    int pull_rc = ihc_sock_close(c->pull, IHC_SOCK_CLOSE_MS, COMPONENT, "report");
    if (pub_rc != IHC_OK || pull_rc != IHC_OK) {
        /* A socket still closing may call on_pub_pipe: keep c (reachable, so that leak
         * checkers see no leak) and let the process exit. */
        ihc_sock_keep(c);
        return;
    }
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    ihc_registry_free(c->reg);
    ihc_wire_auth_free(c->auth);
    free(c->window);
    ihc_hist_family_fini(&c->module_latency);
    ihc_events_free(c->events);
    free(c->pipes); /* after nng_close(pub): no more pipe notifications */
    pthread_mutex_destroy(&c->pipes_mu);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

const ihc_config *ihc__coord_config(const ihc_coord *c)
{
    return c->cfg;
}

void ihc__coord_count_rejected(ihc_coord *c)
{
    atomic_fetch_add(&c->rejected, 1);
}

ihc_events *ihc__coord_events(ihc_coord *c)
{
    return c->events;
}

bool ihc__coord_redis_up(const ihc_coord *c)
{
    return ihc_persist_connected(c->persist);
}

char *ihc__coord_health(ihc_coord *c)
{
    ihc_leader_view v;
    ihc_leader_view_get(c->leader, &v);
    v.leader = v.leader && ihc_leader_term(c->leader) == v.term;
    return ihc_doc_health_role(ihc_persist_connected(c->persist), c->cfg->coordinator_id, &v);
}

bool ihc__coord_leading(ihc_coord *c)
{
    return ihc_leader_term(c->leader) != 0;
}

char *ihc__coord_not_leader(ihc_coord *c)
{
    return not_leader_doc(c);
}
