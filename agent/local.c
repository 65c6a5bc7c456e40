/* The ihc-agent local endpoint: an nng REP socket served by several contexts. aio callbacks
 * only hand requests to a worker thread, which decodes them, talks to libihc-agent, parks
 * "wait" requests on their session and checks every INTERRUPT_CHECK_INTERVAL that the
 * sessions' processes are still alive. */
#include "local.h"

#include <errno.h>
#include <inttypes.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "err.h"
#include "log.h"
#include "thread.h"
#include "wire.h"

#define COMP        "local"
#define N_RECEIVERS 4    /* contexts kept receiving */
#define MAX_CTX     1024 /* receiving + parked "wait" requests */
#define RECV_MAX    (IHC_DATA_MAX + 16u * 1024u)
#define ERR_MAX     (IHC_REASON_MAX)

typedef enum { LR_RECV, LR_WORK, LR_PARKED, LR_SEND, LR_DEAD } lr_state;

typedef struct lreq lreq;
struct lreq {
    ihc_local *l;
    nng_ctx ctx;
    nng_aio *aio;
    lr_state state; /* ihc_local.mtx */
    int recv_rv;
    nng_msg *msg; /* the received request while LR_WORK */
    uint64_t peer_uid;
    bool has_uid;
    uint64_t peer_pid; /* the connected process (ipc), to check the pid a "begin" names */
    bool has_pid;
    uint32_t pipe_id; /* connection the request came on */
    lreq *next_all;
    lreq *next_q;
    lreq *next_wait;
};

typedef enum { LS_ACTIVE, LS_INTERRUPTED } ls_state;

typedef struct lsession lsession;
struct lsession {
    lsession *next;
    char sid[IHC_ID_MAX + 1];
    char hw[IHC_HW_MAX + 1];
    pid_t pid;
    unsigned long long start_time; /* /proc start time, to notice pid reuse; 0 unknown */
    uint64_t uid;                  /* of the process that registered it */
    bool has_uid;
    ihc_token *tok;
    ls_state state;
    lreq *waiters; /* parked "wait" requests */
};

struct ihc_local {
    ihc_agent *a;
    char *url;
    char *path; /* ipc socket file, NULL for other transports */
    int max_active;
    int check_ms; /* INTERRUPT_CHECK_INTERVAL: process liveness checks */
    nng_socket sock;
    bool sock_open;
    bool listened; /* the socket file is ours to remove */
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    lreq *all;
    size_t n_all, n_recv;
    lreq *q_head, *q_tail;
    lsession *sessions;
    size_t n_sessions;
    bool stopping;
    bool worker_started;
    pthread_t worker;
};

/* The usual cause of an endpoint in use is a second agent on the host: say how to run one. */
#define IN_USE_HINT                                                                                \
    "; a second ihc-agent on this host needs its own local endpoint: start it with "               \
    "--local ipc:///PATH/TO/OTHER.sock (or IHC_LOCAL_URL=ipc:///PATH/TO/OTHER.sock), and point "   \
    "the processes that should use it at the same URL (IHC_LOCAL_URL), or --local off when "       \
    "nothing on the node registers sessions with it"

/* ---- process liveness ---- */

/* Reads /proc/<pid>/stat into buf and returns what follows the command name (" <state>
 * <ppid> …"), or NULL. The name may contain spaces and parentheses, hence the last ')'. */
static char *proc_stat_fields(pid_t pid, char *buf, size_t cap)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return NULL;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    return p ? p + 1 : NULL;
}

/* Reads state and start time (field 22) of /proc/<pid>/stat. */
static bool proc_stat(pid_t pid, char *state, unsigned long long *start)
{
    char buf[1024];
    char *p = proc_stat_fields(pid, buf, sizeof(buf));
    if (!p)
        return false;
    char *save = NULL, *tok = strtok_r(p, " ", &save);
    if (!tok)
        return false;
    *state = tok[0];
    for (int field = 4; field <= 22; field++) {
        tok = strtok_r(NULL, " ", &save);
        if (!tok)
            return false;
    }
    *start = strtoull(tok, NULL, 10);
    return true;
}

static bool pid_alive(pid_t pid, unsigned long long start)
{
    char st;
    unsigned long long now_start;
    if (proc_stat(pid, &st, &now_start))
        return st != 'Z' && st != 'X' && (start == 0 || now_start == start);
    return kill(pid, 0) == 0 || errno == EPERM;
}

static bool pid_owner(pid_t pid, uid_t *uid)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof(path), "/proc/%d", (int)pid);
    if (stat(path, &st) != 0)
        return false;
    *uid = st.st_uid;
    return true;
}

/* True when pid is ancestor or one of its descendants (follows the parent chain). */
static bool pid_descends_from(pid_t pid, pid_t ancestor)
{
    for (int depth = 0; depth < 256 && pid > 1; depth++) {
        if (pid == ancestor)
            return true;
        char buf[512];
        char *p = proc_stat_fields(pid, buf, sizeof(buf));
        int ppid = 0;
        if (!p || sscanf(p, " %*c %d", &ppid) != 1)
            return false;
        pid = (pid_t)ppid;
    }
    return pid == ancestor;
}

/* ---- replies ---- */

static void lreq_recv(lreq *r)
{
    ihc_local *l = r->l;
    pthread_mutex_lock(&l->mtx);
    if (l->stopping) {
        r->state = LR_DEAD;
        pthread_mutex_unlock(&l->mtx);
        return;
    }
    r->state = LR_RECV;
    l->n_recv++;
    pthread_mutex_unlock(&l->mtx);
    nng_ctx_recv(r->ctx, r->aio);
}

/* Sends a response on r's context; r then goes back to receiving. Never blocks. */
static void reply(lreq *r, int status, const char *sid, const char *state, const char *error)
{
    ihc_msg m = {.type = IHC_MSG_LOCAL_RESPONSE};
    m.u.local_response.status = status;
    m.u.local_response.session_id = (char *)sid;
    m.u.local_response.state = (char *)state;
    m.u.local_response.error = (char *)error;
    uint8_t *buf = NULL;
    size_t len = 0;
    nng_msg *msg = NULL;
    int rc = ihc_wire_encode(&m, NULL, &buf, &len);
    if (rc != IHC_OK) {
        ihc_log(IHC_LOG_ERROR, COMP, "cannot encode response error=\"%s\"", ihc_strerror(rc));
        m.u.local_response = (ihc_local_response){.status = IHC_EINTERNAL};
        if (ihc_wire_encode(&m, NULL, &buf, &len) != IHC_OK)
            goto fail;
    }
    if (nng_msg_alloc(&msg, 0) != 0 || nng_msg_append(msg, buf, len) != 0)
        goto fail;
    free(buf);
    pthread_mutex_lock(&r->l->mtx);
    r->state = LR_SEND;
    pthread_mutex_unlock(&r->l->mtx);
    nng_aio_set_msg(r->aio, msg);
    nng_ctx_send(r->ctx, r->aio);
    return;
fail:
    /* without memory for an answer, the client's request times out; keep serving */
    free(buf);
    nng_msg_free(msg);
    lreq_recv(r);
}

static void reply_list(lreq *list, int status, const char *sid, const char *state)
{
    while (list) {
        lreq *r = list;
        list = r->next_wait;
        r->next_wait = NULL;
        reply(r, status, sid, state, NULL);
    }
}

/* ---- aio callback: on nng's threads, so it only queues work ---- */

static void lreq_cb(void *arg)
{
    lreq *r = arg;
    ihc_local *l = r->l;
    int rv = nng_aio_result(r->aio);
    pthread_mutex_lock(&l->mtx);
    if (r->state == LR_RECV) {
        l->n_recv--;
        r->recv_rv = rv;
        r->msg = rv == 0 ? nng_aio_get_msg(r->aio) : NULL;
        r->state = LR_WORK;
        r->next_q = NULL;
        if (l->q_tail)
            l->q_tail->next_q = r;
        else
            l->q_head = r;
        l->q_tail = r;
        pthread_cond_signal(&l->cond);
        pthread_mutex_unlock(&l->mtx);
        return;
    }
    /* a reply was sent (or failed: the client went away) */
    if (rv != 0)
        nng_msg_free(nng_aio_get_msg(r->aio));
    if (l->stopping) {
        r->state = LR_DEAD;
        pthread_mutex_unlock(&l->mtx);
        return;
    }
    r->state = LR_RECV;
    l->n_recv++;
    pthread_mutex_unlock(&l->mtx);
    nng_ctx_recv(r->ctx, r->aio);
}

/* Adds a receiving context. Returns false when out of resources. */
static bool lreq_add(ihc_local *l)
{
    lreq *r = calloc(1, sizeof(*r));
    if (!r)
        return false;
    r->l = l;
    if (nng_aio_alloc(&r->aio, lreq_cb, r) != 0) {
        free(r);
        return false;
    }
    if (nng_ctx_open(&r->ctx, l->sock) != 0) {
        nng_aio_free(r->aio);
        free(r);
        return false;
    }
    pthread_mutex_lock(&l->mtx);
    r->next_all = l->all;
    l->all = r;
    l->n_all++;
    r->state = LR_DEAD;
    pthread_mutex_unlock(&l->mtx);
    lreq_recv(r);
    return true;
}

/* ---- sessions ---- */

static lsession *session_find(ihc_local *l, const char *sid)
{
    for (lsession *s = l->sessions; s; s = s->next)
        if (strcmp(s->sid, sid) == 0)
            return s;
    return NULL;
}

static void session_free(lsession *s)
{
    ihc_token_release(s->tok);
    free(s);
}

/* A process may act on its own sessions; root on all; without credentials (a non-ipc
 * transport) nobody can be told apart. */
static bool peer_may(const lreq *r, const lsession *s)
{
    return !r->has_uid || r->peer_uid == 0 || !s->has_uid || s->uid == r->peer_uid;
}

/* Marks s interrupted and takes its waiters (under l->mtx); the caller answers them. */
static lreq *session_interrupt_locked(lsession *s)
{
    s->state = LS_INTERRUPTED;
    lreq *w = s->waiters;
    s->waiters = NULL;
    return w;
}

static void tell(ihc_local *l, const char *sid, const char *hw, pid_t pid, lreq *waiters,
                 const char *why)
{
    size_t n = 0;
    for (lreq *w = waiters; w; w = w->next_wait)
        n++;
    ihc_log(IHC_LOG_INFO, COMP, "session told to stop session=%s hw=%s pid=%d waiters=%zu by=%s",
            sid, hw, (int)pid, n, why);
    (void)l;
    reply_list(waiters, IHC_OK, sid, "interrupted");
}

/* libihc-agent's on_cancel for local sessions (on the agent's thread). */
static void on_session_cancel(const char *session_id, void *arg)
{
    ihc_local *l = arg;
    pthread_mutex_lock(&l->mtx);
    lsession *s = session_find(l, session_id);
    if (!s || s->state != LS_ACTIVE) {
        /* not registered yet: the begin handler checks the token after inserting */
        pthread_mutex_unlock(&l->mtx);
        return;
    }
    char sid[IHC_ID_MAX + 1], hw[IHC_HW_MAX + 1];
    snprintf(sid, sizeof(sid), "%s", s->sid);
    snprintf(hw, sizeof(hw), "%s", s->hw);
    pid_t pid = s->pid;
    lreq *w = session_interrupt_locked(s);
    pthread_mutex_unlock(&l->mtx);
    tell(l, sid, hw, pid, w, "cancel");
}

int ihc_local_notify(ihc_local *l, const char *hw)
{
    if (!l)
        return IHC_OK;
    if (!hw)
        return IHC_EINVAL;
    for (;;) {
        char sid[IHC_ID_MAX + 1], shw[IHC_HW_MAX + 1];
        pid_t pid = 0;
        lreq *w = NULL;
        bool found = false;
        pthread_mutex_lock(&l->mtx);
        for (lsession *s = l->sessions; s; s = s->next) {
            if (s->state == LS_ACTIVE && ihc_token_cancelled(s->tok) &&
                (strcmp(hw, "*") == 0 || strcmp(hw, s->hw) == 0)) {
                snprintf(sid, sizeof(sid), "%s", s->sid);
                snprintf(shw, sizeof(shw), "%s", s->hw);
                pid = s->pid;
                w = session_interrupt_locked(s);
                found = true;
                break;
            }
        }
        pthread_mutex_unlock(&l->mtx);
        if (!found)
            return IHC_OK;
        tell(l, sid, shw, pid, w, "module");
    }
}

size_t ihc_local_session_count(ihc_local *l)
{
    if (!l)
        return 0;
    pthread_mutex_lock(&l->mtx);
    size_t n = l->n_sessions;
    pthread_mutex_unlock(&l->mtx);
    return n;
}

/* Ends session sid (state "done"): in the agent, and answers its waiters. Returns false when
 * the endpoint does not know it. */
static bool session_finish(ihc_local *l, const char *sid, const char *why)
{
    pthread_mutex_lock(&l->mtx);
    lsession **pp = &l->sessions;
    while (*pp && strcmp((*pp)->sid, sid) != 0)
        pp = &(*pp)->next;
    lsession *s = *pp;
    if (!s) {
        pthread_mutex_unlock(&l->mtx);
        return false;
    }
    *pp = s->next;
    l->n_sessions--;
    lreq *w = s->waiters;
    s->waiters = NULL;
    pthread_mutex_unlock(&l->mtx);

    int rc = ihc_agent_session_end(l->a, s->sid);
    /* ENOENT: the agent already cleaned it up after an interrupt */
    if (rc != IHC_OK && rc != IHC_ENOENT)
        ihc_log(IHC_LOG_WARN, COMP, "cannot end session=%s error=\"%s\"", s->sid, ihc_strerror(rc));
    ihc_log(IHC_LOG_INFO, COMP, "session ended session=%s hw=%s pid=%d by=%s", s->sid, s->hw,
            (int)s->pid, why);
    reply_list(w, IHC_OK, s->sid, "done");
    session_free(s);
    return true;
}

/* ---- operations ---- */

typedef struct {
    int status;
    const char *state;
    char sid[IHC_ID_MAX + 1];
    char error[ERR_MAX];
    bool parked; /* answered later */
} op_result;

static void op_fail(op_result *res, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void op_fail(op_result *res, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->error, sizeof(res->error), fmt, ap);
    va_end(ap);
    res->status = status;
    res->state = NULL;
}

static void op_begin(ihc_local *l, lreq *r, const ihc_local_request *q, op_result *res)
{
    if (q->pid <= 0) {
        op_fail(res, IHC_EINVAL, "field 'pid': expected the pid of the process (> 0), got %d",
                (int)q->pid);
        return;
    }
    if (!q->hw) {
        op_fail(res, IHC_EMISSING, "field 'hw' is required");
        return;
    }
    if (!ihc_hw_valid(q->hw, strlen(q->hw), false)) {
        op_fail(res, IHC_EBADHW,
                "field 'hw': invalid hardware_id '%.128s' (1-128 bytes of [A-Za-z0-9._:@-])",
                q->hw);
        return;
    }
    if (q->session_id && !ihc_id_valid(q->session_id, strlen(q->session_id))) {
        op_fail(res, IHC_EBADID,
                "field 'session_id': invalid id '%.128s' (1-128 bytes of [A-Za-z0-9._:@-])",
                q->session_id);
        return;
    }
    if (q->module && !ihc_id_valid(q->module, strlen(q->module))) {
        op_fail(res, IHC_EBADID,
                "field 'module': invalid name '%.128s' (1-128 bytes of [A-Za-z0-9._:@-])",
                q->module);
        return;
    }
    char st;
    unsigned long long start = 0;
    if (!proc_stat(q->pid, &st, &start))
        start = 0;
    if (!pid_alive(q->pid, 0)) {
        op_fail(res, IHC_EINVAL, "field 'pid': no such process %d", (int)q->pid);
        return;
    }
    /* the agent may signal this process later: only the caller itself or its children */
    if (!r->has_pid || !pid_descends_from(q->pid, (pid_t)r->peer_pid)) {
        op_fail(res, IHC_EINVAL,
                "field 'pid': process %d is not the caller or one of its child processes%s",
                (int)q->pid,
                r->has_pid ? "" : " (cannot be checked on this transport; use ipc://)");
        return;
    }
    uid_t owner;
    if (r->has_uid && r->peer_uid != 0 && pid_owner(q->pid, &owner) && owner != r->peer_uid) {
        op_fail(res, IHC_EINVAL, "field 'pid': process %d belongs to another user", (int)q->pid);
        return;
    }

    lsession *s = calloc(1, sizeof(*s));
    if (!s) {
        op_fail(res, IHC_ENOMEM, "out of memory");
        return;
    }
    ihc_session_opts o = {.session_id = q->session_id,
                          .hw = q->hw,
                          .module = q->module,
                          .data = q->data,
                          .pid = q->pid,
                          .on_cancel = on_session_cancel,
                          .arg = l};
    int rc = ihc_agent_session_begin(l->a, &o, &s->tok, s->sid, sizeof(s->sid));
    if (rc != IHC_OK) {
        free(s);
        switch (rc) {
        case IHC_ELIMIT:
            op_fail(res, rc, "MAX_ACTIVE_SESSIONS (%d) reached", l->max_active);
            break;
        case IHC_EEXIST:
            op_fail(res, rc, "session '%s' already exists", q->session_id ? q->session_id : "");
            break;
        default:
            op_fail(res, rc, "cannot begin session: %s", ihc_strerror(rc));
            break;
        }
        return;
    }
    snprintf(s->hw, sizeof(s->hw), "%s", q->hw);
    s->pid = q->pid;
    s->start_time = start;
    s->uid = r->peer_uid;
    s->has_uid = r->has_uid;
    s->state = LS_ACTIVE;

    pthread_mutex_lock(&l->mtx);
    s->next = l->sessions;
    l->sessions = s;
    l->n_sessions++;
    /* an interrupt may have cancelled it before it was in the table */
    if (ihc_token_cancelled(s->tok))
        s->state = LS_INTERRUPTED;
    res->state = s->state == LS_ACTIVE ? "active" : "interrupted";
    pthread_mutex_unlock(&l->mtx);

    snprintf(res->sid, sizeof(res->sid), "%s", s->sid);
    res->status = IHC_OK;
    ihc_log(IHC_LOG_INFO, COMP, "session begun session=%s hw=%s pid=%d module=%s", res->sid, q->hw,
            (int)q->pid, q->module ? q->module : "-");
}

static void op_wait(ihc_local *l, lreq *r, const ihc_local_request *q, op_result *res)
{
    if (!q->session_id) {
        op_fail(res, IHC_EMISSING, "field 'session_id' is required");
        return;
    }
    snprintf(res->sid, sizeof(res->sid), "%s", q->session_id);
    bool add_receiver = false;
    pthread_mutex_lock(&l->mtx);
    lsession *s = session_find(l, q->session_id);
    if (!s || !peer_may(r, s)) {
        pthread_mutex_unlock(&l->mtx);
        op_fail(res, IHC_ENOENT, "unknown session '%.128s'", q->session_id);
        return;
    }
    if (s->state == LS_INTERRUPTED) {
        pthread_mutex_unlock(&l->mtx);
        res->status = IHC_OK;
        res->state = "interrupted";
        return;
    }
    if (l->n_all - l->n_recv >= MAX_CTX) {
        pthread_mutex_unlock(&l->mtx);
        op_fail(res, IHC_ELIMIT, "too many pending waits (%d)", MAX_CTX);
        return;
    }
    /* a REQ client re-sends a request it has no answer to (NNG_OPT_REQ_RESENDTIME): the
     * older copy from the same connection is dropped, so a long wait holds one context */
    lreq *stale = NULL;
    for (lreq **pp = &s->waiters; *pp; pp = &(*pp)->next_wait) {
        if (r->pipe_id != 0 && (*pp)->pipe_id == r->pipe_id) {
            stale = *pp;
            *pp = stale->next_wait;
            stale->next_wait = NULL;
            break;
        }
    }
    r->state = LR_PARKED;
    r->next_wait = s->waiters;
    s->waiters = r;
    res->parked = true;
    /* this context is held until the session stops; keep enough others receiving */
    add_receiver = !stale && l->n_recv < N_RECEIVERS && l->n_all < MAX_CTX + N_RECEIVERS;
    pthread_mutex_unlock(&l->mtx);
    if (stale) {
        ihc_log(IHC_LOG_DEBUG, COMP, "wait re-sent session=%s: older copy dropped", res->sid);
        lreq_recv(stale); /* a new receive discards the unanswered request */
    }
    if (add_receiver && !lreq_add(l))
        ihc_log(IHC_LOG_WARN, COMP, "cannot add a receiving context: out of memory");
}

static void op_end(ihc_local *l, lreq *r, const ihc_local_request *q, op_result *res)
{
    if (!q->session_id) {
        op_fail(res, IHC_EMISSING, "field 'session_id' is required");
        return;
    }
    pthread_mutex_lock(&l->mtx);
    lsession *s = session_find(l, q->session_id);
    bool ok = s && peer_may(r, s);
    pthread_mutex_unlock(&l->mtx);
    if (!ok || !session_finish(l, q->session_id, "request")) {
        op_fail(res, IHC_ENOENT, "unknown session '%.128s'", q->session_id);
        return;
    }
    snprintf(res->sid, sizeof(res->sid), "%s", q->session_id);
    res->status = IHC_OK;
    res->state = "done";
}

static void handle(ihc_local *l, lreq *r)
{
    if (r->recv_rv != 0) {
        bool stopping;
        pthread_mutex_lock(&l->mtx);
        stopping = l->stopping;
        pthread_mutex_unlock(&l->mtx);
        if (stopping || r->recv_rv == NNG_ECLOSED) {
            pthread_mutex_lock(&l->mtx);
            r->state = LR_DEAD;
            pthread_mutex_unlock(&l->mtx);
            return;
        }
        ihc_log(IHC_LOG_WARN, COMP, "receive failed error=\"%s\"", nng_strerror(r->recv_rv));
        ihc_sleep_ms(10); /* never spin on a failing socket */
        lreq_recv(r);
        return;
    }

    nng_msg *msg = r->msg;
    r->msg = NULL;
    uint64_t uid = 0;
    nng_pipe pipe = nng_msg_get_pipe(msg);
    r->pipe_id = (uint32_t)nng_pipe_id(pipe);
    r->has_uid = nng_pipe_get_uint64(pipe, NNG_OPT_IPC_PEER_UID, &uid) == 0;
    r->peer_uid = uid;
    uint64_t peer_pid = 0;
    r->has_pid = nng_pipe_get_uint64(pipe, NNG_OPT_IPC_PEER_PID, &peer_pid) == 0 && peer_pid > 0;
    r->peer_pid = peer_pid;

    op_result res = {.status = IHC_OK};
    ihc_msg *m = NULL;
    char detail[256] = "";
    int rc = ihc_wire_decode(nng_msg_body(msg), nng_msg_len(msg), NULL, &m, detail, sizeof(detail));
    nng_msg_free(msg);
    if (rc != IHC_OK) {
        op_fail(&res, rc, "bad request: %s", detail[0] ? detail : ihc_strerror(rc));
    } else if (m->type != IHC_MSG_LOCAL_REQUEST) {
        op_fail(&res, IHC_EINVAL, "bad request: expected a local_request message, got '%s'",
                ihc_msg_type_name(m->type));
    } else {
        const ihc_local_request *q = &m->u.local_request;
        const char *op = q->op ? q->op : "";
        if (strcmp(op, "ping") == 0)
            res.state = "ok";
        else if (strcmp(op, "begin") == 0)
            op_begin(l, r, q, &res);
        else if (strcmp(op, "wait") == 0)
            op_wait(l, r, q, &res);
        else if (strcmp(op, "end") == 0)
            op_end(l, r, q, &res);
        else
            op_fail(&res, IHC_EINVAL,
                    "field 'op': unknown op '%.64s' (expected ping, begin, wait, end)", op);
    }
    ihc_msg_free(m);
    if (res.parked)
        return;
    if (res.status != IHC_OK)
        ihc_log(IHC_LOG_DEBUG, COMP, "request refused status=%s error=\"%s\"",
                ihc_err_name(res.status), res.error);
    reply(r, res.status, res.sid[0] ? res.sid : NULL, res.state,
          res.status != IHC_OK ? res.error : NULL);
}

/* Ends the sessions whose process is gone. */
static void check_pids(ihc_local *l)
{
    for (;;) {
        char sid[IHC_ID_MAX + 1] = "";
        pthread_mutex_lock(&l->mtx);
        for (lsession *s = l->sessions; s && !sid[0]; s = s->next)
            if (!pid_alive(s->pid, s->start_time))
                snprintf(sid, sizeof(sid), "%s", s->sid);
        pthread_mutex_unlock(&l->mtx);
        if (!sid[0])
            return;
        session_finish(l, sid, "process_exit");
    }
}

static void *worker_main(void *arg)
{
    ihc_local *l = arg;
    uint64_t next_check = ihc_mono_ns() + (uint64_t)l->check_ms * 1000000ull;
    pthread_mutex_lock(&l->mtx);
    while (!l->stopping) {
        lreq *r = l->q_head;
        if (r) {
            l->q_head = r->next_q;
            if (!l->q_head)
                l->q_tail = NULL;
            pthread_mutex_unlock(&l->mtx);
            handle(l, r);
            pthread_mutex_lock(&l->mtx);
            continue;
        }
        uint64_t now = ihc_mono_ns();
        if (now >= next_check) {
            pthread_mutex_unlock(&l->mtx);
            check_pids(l);
            next_check = ihc_mono_ns() + (uint64_t)l->check_ms * 1000000ull;
            pthread_mutex_lock(&l->mtx);
            continue;
        }
        struct timespec ts = {.tv_sec = (time_t)(next_check / 1000000000ull),
                              .tv_nsec = (long)(next_check % 1000000000ull)};
        pthread_cond_timedwait(&l->cond, &l->mtx, &ts);
    }
    pthread_mutex_unlock(&l->mtx);
    return NULL;
}

/* ---- lifecycle ---- */

/* Probes the ipc socket at path: 1 when a process listens there, 0 when nobody does (a stale
 * file), -1 on another error (errno set). */
static int ipc_probe(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int rv = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    close(fd);
    if (rv == 0)
        return 1;
    errno = e;
    return e == ECONNREFUSED ? 0 : -1;
}

/* For ipc://: refuses when someone listens on the path, removes a stale socket file. */
static int ipc_prepare(const char *path, char *err, size_t err_len)
{
    struct sockaddr_un sa;
    if (path[0] == '\0' || strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, err_len, "local endpoint ipc://%s: path empty or longer than %zu bytes", path,
                 sizeof(sa.sun_path) - 1);
        return IHC_EINVAL;
    }
    struct stat st;
    if (lstat(path, &st) != 0)
        return IHC_OK; /* nothing there */
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, err_len, "local endpoint ipc://%s: the file exists and is not a socket",
                 path);
        return IHC_EEXIST;
    }
    switch (ipc_probe(path)) {
    case 1:
        snprintf(err, err_len,
                 "local endpoint ipc://%s: another process (an ihc-agent?) is listening "
                 "there" IN_USE_HINT,
                 path);
        return IHC_EEXIST;
    case 0:
        break;
    default:
        snprintf(err, err_len, "local endpoint ipc://%s: %s", path, strerror(errno));
        return IHC_ETRANSPORT;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        snprintf(err, err_len, "local endpoint ipc://%s: cannot remove the stale socket: %s", path,
                 strerror(errno));
        return IHC_ETRANSPORT;
    }
    ihc_log(IHC_LOG_INFO, COMP, "removed stale socket path=%s", path);
    return IHC_OK;
}

int ihc_local_open(ihc_local **out, ihc_agent *a, const char *url, int max_active, int check_ms,
                   char *err, size_t err_len)
{
    *out = NULL;
    if (err_len)
        err[0] = '\0';
    if (!a || !url || !url[0]) {
        snprintf(err, err_len, "local endpoint: no url");
        return IHC_EINVAL;
    }
    int rc = IHC_OK, rv;
    ihc_local *l = calloc(1, sizeof(*l));
    if (!l || !(l->url = strdup(url))) {
        free(l);
        snprintf(err, err_len, "local endpoint: out of memory");
        return IHC_ENOMEM;
    }
    l->a = a;
    l->max_active = max_active > 0 ? max_active : 100;
    l->check_ms = check_ms > 0 ? check_ms : 100;
    pthread_mutex_init(&l->mtx, NULL);
    ihc_cond_init_mono(&l->cond);

    if (strncmp(url, "ipc://", 6) == 0) {
        if (!(l->path = strdup(url + 6))) {
            snprintf(err, err_len, "local endpoint: out of memory");
            rc = IHC_ENOMEM;
            goto fail;
        }
        if ((rc = ipc_prepare(l->path, err, err_len)) != IHC_OK)
            goto fail;
    } else {
        ihc_log(IHC_LOG_WARN, COMP,
                "local endpoint on a non-ipc transport url=%s: callers cannot be authenticated",
                url);
    }

    if ((rv = nng_rep0_open(&l->sock)) != 0) {
        snprintf(err, err_len, "local endpoint: %s", nng_strerror(rv));
        rc = IHC_ETRANSPORT;
        goto fail;
    }
    l->sock_open = true;
    nng_socket_set_size(l->sock, NNG_OPT_RECVMAXSZ, RECV_MAX);
    if ((rv = nng_listen(l->sock, url, NULL, 0)) != 0) {
        snprintf(err, err_len, "local endpoint %s: cannot listen: %s%s", url, nng_strerror(rv),
                 rv == NNG_EADDRINUSE ? " (another ihc-agent running?)" IN_USE_HINT : "");
        rc = rv == NNG_EADDRINUSE ? IHC_EEXIST : IHC_ETRANSPORT;
        goto fail;
    }
    l->listened = true;
    for (int i = 0; i < N_RECEIVERS; i++) {
        if (!lreq_add(l)) {
            snprintf(err, err_len, "local endpoint: out of memory");
            rc = IHC_ENOMEM;
            goto fail;
        }
    }
    if (pthread_create(&l->worker, NULL, worker_main, l) != 0) {
        snprintf(err, err_len, "local endpoint: cannot start its thread");
        rc = IHC_EINTERNAL;
        goto fail;
    }
    l->worker_started = true;
    *out = l;
    return IHC_OK;

fail:
    ihc_local_shutdown(l);
    ihc_local_close(l);
    return rc;
}

void ihc_local_shutdown(ihc_local *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->mtx);
    bool already = l->stopping;
    l->stopping = true;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mtx);
    if (already)
        return;
    if (l->worker_started)
        pthread_join(l->worker, NULL);
    if (l->sock_open) {
        nng_close(l->sock); /* aborts every receive; parked waits stay unanswered */
        l->sock_open = false;
    }
    /* the endpoint's sessions end with it: nobody could be told to stop any more */
    for (;;) {
        char sid[IHC_ID_MAX + 1] = "";
        pthread_mutex_lock(&l->mtx);
        if (l->sessions)
            snprintf(sid, sizeof(sid), "%s", l->sessions->sid);
        pthread_mutex_unlock(&l->mtx);
        if (!sid[0])
            break;
        session_finish(l, sid, "shutdown");
    }
}

void ihc_local_close(ihc_local *l)
{
    if (!l)
        return;
    ihc_local_shutdown(l);
    for (lreq *r = l->all, *next; r; r = next) {
        next = r->next_all;
        nng_aio_free(r->aio); /* waits for a callback in progress */
        nng_msg_free(r->msg);
        free(r);
    }
    if (l->path && l->listened) {
        /* remove our socket file unless another agent has bound the path since */
        struct stat st;
        if (lstat(l->path, &st) == 0 && S_ISSOCK(st.st_mode) && ipc_probe(l->path) == 0)
            unlink(l->path);
    }
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->mtx);
    free(l->path);
    free(l->url);
    free(l);
}
