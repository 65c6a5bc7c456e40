/* The ihc-agent local API: HTTP/1.1 + JSON on a Unix socket, served by libmicrohttpd's own
 * epoll thread. Sessions registered without a pid are held by connections (the registering
 * keep-alive connection and any event stream of the session) and end ("gone") as soon as no
 * holder is left; sessions with a pid are checked in /proc every INTERRUPT_CHECK_INTERVAL by
 * the watch thread, which also notices event-stream clients that went away (a suspended
 * connection does not see its peer close), sends keepalive comments and closes connections
 * whose request has not arrived whole within IHC_LOCAL_REQUEST_DEADLINE (libmicrohttpd's
 * idle timeout starts again with every byte, so a client trickling one would keep it). */
#include "local.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent_int.h"
#include "clock.h"
#include "config.h"
#include "defaults.h"
#include "err.h"
#include "fdlimit.h"
#include "local_body.h"
#include "log.h"
#include "thread.h"
#include "wire.h"

#define COMP "local"
/* Request bodies: session data plus room for the rest of the JSON. */
#define BODY_MAX    (IHC_DATA_MAX + 16u * 1024u)
#define CONN_MEMORY (32u * 1024u) /* per connection: request line, headers, read buffer */
#define BACKLOG     1024
/* Connections past IHC_LOCAL_MAX_CONNS still get a 503 up to this many more; beyond, they
 * are closed at accept (logged). */
#define OVER_SLACK   64
#define PING_NS      (15ull * 1000000000ull) /* ": keepalive" on an idle stream */
#define STREAM_BLOCK 4096
#define DRAIN_MS     1000          /* shutdown: streams given this long to end */
#define LOG_EVERY_NS 1000000000ull /* refusals and closures: one line at most this often */
/* A kept-alive connection's next request is seen (the request line) only once it is partly
 * in: one silent for IHC_LOCAL_IDLE_TIMEOUT is closed by libmicrohttpd, so one still open
 * this long after that plus the deadline is trickling its request. The slack keeps
 * libmicrohttpd's own idle close (checked to about a second) ahead of ours. */
#define IDLE_SLACK_NS    1000000000ull
#define SESSION_HOLD_MAX 16 /* sessions one connection may hold (POSTs without pid) */
#define CT_JSON          "application/json"
#define CT_SSE           "text/event-stream; charset=utf-8"

typedef struct lsession lsession;
typedef struct lstream lstream;

/* Where a connection is, for the request deadline. */
typedef enum {
    LC_RECEIVING, /* a request is arriving: closed past deadline_ns */
    LC_BUSY,      /* the request is in; its answer is being made or sent */
    LC_IDLE,      /* kept alive after an answer: closed past deadline_ns unless it holds a
                     session (its next request then has the deadline from its request line) */
    LC_STREAM,    /* an event stream: no deadline */
} lconn_state;

/* A connection (libmicrohttpd's socket context), under ihc_local.mtx. */
typedef struct lconn {
    int fd;
    lconn_state state;
    uint64_t deadline_ns;
    bool shut; /* shut down by the watch thread; libmicrohttpd closes it next */
    /* libmicrohttpd's idle timeout is off: it held a session or a stream */
    bool no_idle_timeout;
    bool has_cred;
    pid_t peer_pid;
    uid_t peer_uid;
    bool over; /* opened past IHC_LOCAL_MAX_CONNS: answered 503 */
    lstream *stream;
    lsession *held[SESSION_HOLD_MAX]; /* sessions this connection registered without pid */
    size_t n_held;
    struct lconn *prev, *next;
} lconn;

typedef enum { LS_ACTIVE, LS_INTERRUPTED } ls_state;

struct lsession {
    lsession *next;
    char sid[IHC_ID_MAX + 1];
    char hw[IHC_HW_MAX + 1];
    char module[IHC_ID_MAX + 1];   /* "" when none */
    pid_t pid;                     /* 0: held by connections */
    unsigned long long start_time; /* /proc start time, to notice pid reuse; 0 unknown */
    uid_t uid;                     /* of the process that registered it */
    bool has_uid;
    uint64_t epoch;
    int64_t created_ms;
    ihc_token *tok;
    ls_state state;
    uint64_t interrupt_id;           /* of the stop, when known */
    char reason[IHC_REASON_MAX + 1]; /* of the stop */
    int holders;                     /* connections and streams holding a pid-less session */
    lstream *streams;
};

/* An event stream, from its response's creation to its destruction (stream_done). */
struct lstream {
    ihc_local *l;
    struct MHD_Connection *conn;
    lconn *cc;      /* NULL once the connection closed */
    lsession *sess; /* NULL once the session ended */
    lstream *s_next;
    lstream *prev, *next; /* ihc_local.streams */
    char *out;
    size_t out_len, out_off;
    bool suspended, ended, dead, want_ping;
    uint64_t last_write_ns;
};

struct ihc_local {
    ihc_agent *a;
    char *path;
    int max_active;
    int check_ms;
    size_t max_conns;
    unsigned idle_s;
    uint64_t request_deadline_ns; /* IHC_LOCAL_REQUEST_DEADLINE */
    int deadline_ms;
    struct MHD_Daemon *daemon;
    bool listened; /* the socket file is ours to remove */
    char mhd_error[256];
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    lsession *sessions;
    size_t n_sessions;
    lconn *conns;
    size_t n_conns;
    lstream *streams;
    size_t n_streams;
    ihc_log_limit refused_log, deadline_log;
    uint64_t deadline_closed; /* connections closed past the request deadline, for /healthz */
    bool stopping;
    bool worker_started;
    pthread_t worker;
};

/* One request, from the first call of the access handler to the completion callback. */
typedef struct {
    char *body;
    size_t len;
    bool too_big;
    bool answered;
    bool in; /* the connection was told the request is in (conn_answering) */
} lreq;

/* The usual cause of an endpoint in use is a second agent on the host: say how to run one. */
#define IN_USE_HINT                                                                                \
    "; a second ihc-agent on this host needs its own local API socket: start it with "             \
    "--local unix:///PATH/TO/OTHER.sock (or IHC_LOCAL_URL=unix:///PATH/TO/OTHER.sock), and "       \
    "point the processes that should use it at the same URL (IHC_LOCAL_URL), or --local off "      \
    "when nothing on the node registers sessions with it"

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

/* ---- answers ---- */

/* Queues a JSON document (taken; NULL: out of memory) with status. */
static enum MHD_Result respond_json(struct MHD_Connection *conn, lreq *r, unsigned status,
                                    json_t *doc, bool close_after)
{
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text)
        return MHD_NO;
    size_t n = strlen(text);
    char *body = realloc(text, n + 2);
    if (!body) {
        free(text);
        return MHD_NO;
    }
    body[n++] = '\n';
    body[n] = '\0';
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, CT_JSON);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE || status == MHD_HTTP_TOO_MANY_REQUESTS)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (close_after)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    if (r)
        r->answered = true;
    return ret;
}

static enum MHD_Result refuse(struct MHD_Connection *conn, lreq *r, unsigned status,
                              const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result refuse(struct MHD_Connection *conn, lreq *r, unsigned status,
                              const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ihc_log(IHC_LOG_DEBUG, COMP, "request refused status=%u error=\"%s\"", status, msg);
    return respond_json(conn, r, status, json_pack("{s:s}", "error", msg),
                        status == MHD_HTTP_SERVICE_UNAVAILABLE);
}

/* ---- sessions and streams (under l->mtx) ---- */

static lsession *session_find(ihc_local *l, const char *sid)
{
    for (lsession *s = l->sessions; s; s = s->next)
        if (strcmp(s->sid, sid) == 0)
            return s;
    return NULL;
}

/* A process may act on its own sessions; root on all. */
static bool peer_may(const lconn *cc, const lsession *s)
{
    return !cc || !cc->has_cred || cc->peer_uid == 0 || !s->has_uid || s->uid == cc->peer_uid;
}

/* Appends text to the stream's output and wakes it. */
static void stream_push(lstream *st, const char *text)
{
    size_t n = strlen(text);
    char *o = realloc(st->out, st->out_len + n + 1);
    if (!o) {
        st->dead = true; /* cannot tell it: end the stream, its client sees the close */
    } else {
        memcpy(o + st->out_len, text, n + 1);
        st->out = o;
        st->out_len += n;
    }
    if (st->suspended) {
        st->suspended = false;
        MHD_resume_connection(st->conn);
    }
}

static void stop_event(const ihc_local *l, const lsession *s, char *buf, size_t cap)
{
    const char *reason = s->reason;
    json_t *d = json_pack("{s:I,s:s,s:s,s:i}", "interrupt_id", (json_int_t)s->interrupt_id,
                          "hardware_id", s->hw, "reason", reason, "deadline_ms", l->deadline_ms);
    char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    snprintf(buf, cap, "event: stop\ndata: %s\n\n", text ? text : "{}");
    free(text);
}

/* Tells every stream of s to stop. */
static void session_tell_locked(ihc_local *l, lsession *s)
{
    char ev[IHC_REASON_MAX * 6 + 512];
    stop_event(l, s, ev, sizeof ev);
    for (lstream *st = s->streams; st; st = st->s_next)
        stream_push(st, ev);
}

/* Unlinks s from the table (and its streams from it, which end after an "end" event). The
 * caller ends it in the agent and frees it. */
static void session_unlink_locked(ihc_local *l, lsession *s, const char *state)
{
    lsession **pp = &l->sessions;
    while (*pp && *pp != s)
        pp = &(*pp)->next;
    if (*pp)
        *pp = s->next;
    l->n_sessions--;
    char ev[256];
    snprintf(ev, sizeof ev, "event: end\ndata: {\"session_id\":\"%s\",\"state\":\"%s\"}\n\n",
             s->sid, state);
    while (s->streams) {
        lstream *st = s->streams;
        s->streams = st->s_next;
        st->s_next = NULL;
        st->sess = NULL;
        st->ended = true;
        stream_push(st, ev);
    }
    for (lconn *cc = l->conns; cc; cc = cc->next) {
        for (size_t i = 0; i < cc->n_held; i++) {
            if (cc->held[i] == s) {
                cc->held[i] = cc->held[--cc->n_held];
                break;
            }
        }
    }
}

/* Ends s in the agent (lock NOT held; s already unlinked) and frees it. */
static void session_finish(ihc_local *l, lsession *s, const char *state, const char *why)
{
    int rc = ihc_agent_session_end(l->a, s->sid);
    /* ENOENT: the agent already cleaned it up after an interrupt */
    if (rc != IHC_OK && rc != IHC_ENOENT)
        ihc_log(IHC_LOG_WARN, COMP, "cannot end session=%s error=\"%s\"", s->sid, ihc_strerror(rc));
    ihc_log(IHC_LOG_INFO, COMP, "session ended session=%s hw=%s pid=%d state=%s by=%s", s->sid,
            s->hw, (int)s->pid, state, why);
    ihc_token_release(s->tok);
    free(s);
}

/* Drops one holder of a pid-less session; the last one gone ends it ("gone"). Returns the
 * session to finish (unlinked) or NULL. */
static lsession *session_unhold_locked(ihc_local *l, lsession *s)
{
    if (s->pid != 0 || --s->holders > 0)
        return NULL;
    session_unlink_locked(l, s, "gone");
    return s;
}

/* libihc-agent's on_cancel for the API's sessions (on the agent's receive thread, before the
 * modules run). A session held by connections with a stream open is expected to run its own
 * interrupt methods: the report waits for its DELETE (with module results). */
static void on_session_cancel(const char *session_id, void *arg)
{
    ihc_local *l = arg;
    pthread_mutex_lock(&l->mtx);
    lsession *s = session_find(l, session_id);
    if (!s || s->state != LS_ACTIVE) {
        /* not registered yet: the POST handler checks the token after inserting */
        pthread_mutex_unlock(&l->mtx);
        return;
    }
    s->state = LS_INTERRUPTED;
    s->interrupt_id = ihc__cancel_current_id(l->a); /* we are inside on_cancel */
    snprintf(s->reason, sizeof s->reason, "%s", ihc__cancel_current_reason(l->a));
    bool hold = s->pid == 0 && s->streams != NULL;
    size_t n = 0;
    for (lstream *st = s->streams; st; st = st->s_next)
        n++;
    session_tell_locked(l, s);
    char sid[IHC_ID_MAX + 1], hw[IHC_HW_MAX + 1];
    snprintf(sid, sizeof sid, "%s", s->sid);
    snprintf(hw, sizeof hw, "%s", s->hw);
    pid_t pid = s->pid;
    pthread_mutex_unlock(&l->mtx);
    if (hold)
        ihc__session_hold_report(l->a, sid);
    ihc_log(IHC_LOG_INFO, COMP, "session told to stop session=%s hw=%s pid=%d streams=%zu%s", sid,
            hw, (int)pid, n, hold ? " report=awaited" : "");
}

int ihc_local_notify(ihc_local *l, const char *hw)
{
    if (!l)
        return IHC_OK;
    if (!hw)
        return IHC_EINVAL;
    pthread_mutex_lock(&l->mtx);
    for (lsession *s = l->sessions; s; s = s->next) {
        if (s->state == LS_ACTIVE && ihc_token_cancelled(s->tok) &&
            (strcmp(hw, "*") == 0 || strcmp(hw, s->hw) == 0)) {
            s->state = LS_INTERRUPTED;
            snprintf(s->reason, sizeof s->reason, "stopped by a module");
            session_tell_locked(l, s);
            ihc_log(IHC_LOG_INFO, COMP, "session told to stop session=%s hw=%s pid=%d by=module",
                    s->sid, s->hw, (int)s->pid);
        }
    }
    pthread_mutex_unlock(&l->mtx);
    return IHC_OK;
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

/* ---- routes ---- */

static lconn *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* A connection holding a session or a stream is not an idle one: libmicrohttpd's idle
 * timeout is off for it, and on again once it holds nothing. On libmicrohttpd's thread. */
static void idle_timeout_set(ihc_local *l, struct MHD_Connection *conn, lconn *cc, bool on)
{
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, on ? l->idle_s : 0u);
    if (!cc)
        return;
    pthread_mutex_lock(&l->mtx);
    cc->no_idle_timeout = !on;
    pthread_mutex_unlock(&l->mtx);
}

/* Checks the pid a POST names against the caller's credentials. */
static bool pid_allowed(struct MHD_Connection *conn, lreq *r, const lconn *cc, pid_t pid,
                        unsigned long long *start, enum MHD_Result *ret)
{
    char st;
    if (!proc_stat(pid, &st, start) || st == 'Z' || st == 'X') {
        *ret =
            refuse(conn, r, MHD_HTTP_BAD_REQUEST, "field 'pid': no running process %d", (int)pid);
        return false;
    }
    /* a session may only name the caller itself or its children */
    if (!cc || !cc->has_cred || !pid_descends_from(pid, cc->peer_pid)) {
        *ret = refuse(conn, r, MHD_HTTP_BAD_REQUEST,
                      "field 'pid': process %d is not the caller or one of its child processes",
                      (int)pid);
        return false;
    }
    uid_t owner;
    if (cc->peer_uid != 0 && pid_owner(pid, &owner) && owner != cc->peer_uid) {
        *ret = refuse(conn, r, MHD_HTTP_BAD_REQUEST,
                      "field 'pid': process %d belongs to another user", (int)pid);
        return false;
    }
    return true;
}

static enum MHD_Result begin_refused(struct MHD_Connection *conn, lreq *r, ihc_local *l, int rc,
                                     const ihc_local_begin *b)
{
    switch (rc) {
    case IHC_ELIMIT:
        return refuse(conn, r, MHD_HTTP_TOO_MANY_REQUESTS, "MAX_ACTIVE_SESSIONS (%d) reached",
                      l->max_active);
    case IHC_EEXIST:
        return refuse(conn, r, MHD_HTTP_CONFLICT, "session '%s' already exists",
                      b->session_id ? b->session_id : "");
    default:
        return refuse(conn, r, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot begin session: %s",
                      ihc_strerror(rc));
    }
}

static enum MHD_Result route_begin(ihc_local *l, struct MHD_Connection *conn, lreq *r)
{
    ihc_local_begin b;
    char err[512];
    if (ihc_local_begin_parse(&b, r->body ? r->body : "", r->len, err, sizeof err) != IHC_OK)
        return refuse(conn, r, MHD_HTTP_BAD_REQUEST, "%s", err);
    lconn *cc = conn_of(conn);
    enum MHD_Result ret = MHD_NO;
    unsigned long long start = 0;
    if (b.pid > 0 && !pid_allowed(conn, r, cc, b.pid, &start, &ret))
        goto out;
    if (b.pid == 0 && !cc) { /* nothing could hold it (out of memory at accept) */
        ret = refuse(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory: try again");
        goto out;
    }
    pthread_mutex_lock(&l->mtx);
    bool full = b.pid == 0 && cc && cc->n_held >= SESSION_HOLD_MAX;
    bool stopping = l->stopping;
    pthread_mutex_unlock(&l->mtx);
    if (stopping) {
        ret = refuse(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE, "the agent is shutting down");
        goto out;
    }
    if (full) {
        ret = refuse(conn, r, MHD_HTTP_TOO_MANY_REQUESTS,
                     "this connection already holds %d sessions without pid; open another",
                     SESSION_HOLD_MAX);
        goto out;
    }
    lsession *s = calloc(1, sizeof(*s));
    if (!s)
        goto out;
    ihc_session_opts o = {.session_id = b.session_id,
                          .hw = b.hw,
                          .module = b.module,
                          .data = b.data,
                          .pid = b.pid,
                          .on_cancel = on_session_cancel,
                          .arg = l};
    int rc = ihc_agent_session_begin(l->a, &o, &s->tok, s->sid, sizeof(s->sid));
    if (rc != IHC_OK) {
        free(s);
        ret = begin_refused(conn, r, l, rc, &b);
        goto out;
    }
    snprintf(s->hw, sizeof(s->hw), "%s", b.hw);
    snprintf(s->module, sizeof(s->module), "%s", b.module ? b.module : "");
    s->pid = b.pid;
    s->start_time = start;
    s->has_uid = cc && cc->has_cred;
    s->uid = s->has_uid ? cc->peer_uid : 0;
    s->state = LS_ACTIVE;
    ihc__session_info(l->a, s->sid, &s->epoch, &s->created_ms);

    pthread_mutex_lock(&l->mtx);
    s->next = l->sessions;
    l->sessions = s;
    l->n_sessions++;
    if (s->pid == 0 && cc) {
        cc->held[cc->n_held++] = s;
        s->holders = 1;
    }
    /* an interrupt may have cancelled it before it was in the table */
    if (s->state == LS_ACTIVE && ihc_token_cancelled(s->tok)) {
        s->state = LS_INTERRUPTED;
        snprintf(s->reason, sizeof s->reason, "interrupted while it was being registered");
    }
    json_t *doc =
        json_pack("{s:s,s:I,s:s,s:s}", "session_id", s->sid, "epoch", (json_int_t)s->epoch,
                  "hardware_id", s->hw, "state", s->state == LS_ACTIVE ? "active" : "interrupted");
    pthread_mutex_unlock(&l->mtx);
    if (b.pid == 0)
        idle_timeout_set(l, conn, cc, false);
    ihc_log(IHC_LOG_INFO, COMP, "session begun session=%s hw=%s pid=%d module=%s held_by=%s",
            s->sid, b.hw, (int)b.pid, b.module ? b.module : "-", b.pid ? "pid" : "connection");
    ret = respond_json(conn, r, MHD_HTTP_CREATED, doc, false);
out:
    ihc_local_begin_fini(&b);
    return ret;
}

static enum MHD_Result route_end(ihc_local *l, struct MHD_Connection *conn, lreq *r,
                                 const char *sid)
{
    ihc_local_end e;
    char err[512];
    if (ihc_local_end_parse(&e, r->body ? r->body : "", r->len, err, sizeof err) != IHC_OK)
        return refuse(conn, r, MHD_HTTP_BAD_REQUEST, "%s", err);
    lconn *cc = conn_of(conn);
    pthread_mutex_lock(&l->mtx);
    lsession *s = session_find(l, sid);
    if (!s || !peer_may(cc, s)) {
        pthread_mutex_unlock(&l->mtx);
        ihc_local_end_fini(&e);
        return refuse(conn, r, MHD_HTTP_NOT_FOUND, "unknown session '%s'", sid);
    }
    session_unlink_locked(l, s, e.state);
    bool idle_again = cc && cc->n_held == 0 && !cc->stream;
    pthread_mutex_unlock(&l->mtx);
    if (idle_again)
        idle_timeout_set(l, conn, cc, true);
    /* the results go into the interrupt's report (which may be waiting for them) before the
     * session ends */
    int rc = ihc__session_report(l->a, s->sid, e.modules, e.n_modules);
    if (rc != IHC_OK && rc != IHC_ENOENT)
        ihc_log(IHC_LOG_WARN, COMP, "cannot take module results session=%s error=\"%s\"", s->sid,
                ihc_strerror(rc));
    json_t *doc = json_pack("{s:s,s:s}", "session_id", s->sid, "state", e.state);
    ihc_log(IHC_LOG_DEBUG, COMP, "session reported session=%s state=%s modules=%zu", s->sid,
            e.state, e.n_modules);
    session_finish(l, s, e.state, "request");
    ihc_local_end_fini(&e);
    return respond_json(conn, r, MHD_HTTP_OK, doc, false);
}

static enum MHD_Result route_list(ihc_local *l, struct MHD_Connection *conn, lreq *r)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&l->mtx);
    for (lsession *s = l->sessions; s && arr; s = s->next) {
        json_t *o = json_pack("{s:s,s:s,s:I,s:s,s:I}", "session_id", s->sid, "hardware_id", s->hw,
                              "epoch", (json_int_t)s->epoch, "state",
                              s->state == LS_ACTIVE ? "active" : "interrupted", "created_ms",
                              (json_int_t)s->created_ms);
        if (o && s->pid)
            json_object_set_new(o, "pid", json_integer(s->pid));
        if (o && s->module[0])
            json_object_set_new(o, "module", json_string(s->module));
        json_array_append_new(arr, o);
    }
    pthread_mutex_unlock(&l->mtx);
    return respond_json(conn, r, MHD_HTTP_OK, arr ? json_pack("{s:o}", "sessions", arr) : NULL,
                        false);
}

static enum MHD_Result route_health(ihc_local *l, struct MHD_Connection *conn, lreq *r)
{
    pthread_mutex_lock(&l->mtx);
    size_t n = l->n_sessions;
    uint64_t closed = l->deadline_closed;
    pthread_mutex_unlock(&l->mtx);
    return respond_json(conn, r, MHD_HTTP_OK,
                        json_pack("{s:s,s:s,s:I,s:b,s:I}", "status", "ok", "agent",
                                  ihc_agent_id(l->a), "sessions", (json_int_t)n,
                                  "coordinator_connected", ihc_agent_connected(l->a),
                                  "deadline_closed", (json_int_t)closed),
                        false);
}

/* ---- event streams ---- */

/* libmicrohttpd's content reader: what is queued, else a keepalive when due, else the
 * connection is suspended until the session has news (stream_push) or the watch thread
 * resumes it. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    lstream *st = cls;
    ihc_local *l = st->l;
    pthread_mutex_lock(&l->mtx);
    if (st->dead || l->stopping) {
        pthread_mutex_unlock(&l->mtx);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = 0;
    if (st->out_off < st->out_len) {
        n = st->out_len - st->out_off;
        if (n > max)
            n = max;
        memcpy(buf, st->out + st->out_off, n);
        st->out_off += n;
        if (st->out_off == st->out_len) {
            free(st->out);
            st->out = NULL;
            st->out_len = st->out_off = 0;
        }
    } else if (st->ended) {
        pthread_mutex_unlock(&l->mtx);
        return MHD_CONTENT_READER_END_OF_STREAM;
    } else if (st->want_ping) {
        static const char ping[] = ": keepalive\n\n";
        n = sizeof ping - 1 < max ? sizeof ping - 1 : max;
        memcpy(buf, ping, n);
    }
    st->want_ping = false;
    if (n > 0) {
        st->last_write_ns = ihc_mono_ns();
        pthread_mutex_unlock(&l->mtx);
        return (ssize_t)n;
    }
    st->suspended = true;
    MHD_suspend_connection(st->conn);
    pthread_mutex_unlock(&l->mtx);
    return 0;
}

/* libmicrohttpd frees the stream's response: the connection is done with it. */
static void stream_done(void *cls)
{
    lstream *st = cls;
    ihc_local *l = st->l;
    pthread_mutex_lock(&l->mtx);
    if (st->cc)
        st->cc->stream = NULL;
    if (st->prev)
        st->prev->next = st->next;
    else
        l->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    l->n_streams--;
    lsession *gone = NULL;
    if (st->sess) {
        lsession *s = st->sess;
        for (lstream **pp = &s->streams; *pp; pp = &(*pp)->s_next) {
            if (*pp == st) {
                *pp = st->s_next;
                break;
            }
        }
        gone = session_unhold_locked(l, s);
    }
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->mtx);
    if (gone)
        session_finish(l, gone, "gone", "stream_closed");
    free(st->out);
    free(st);
}

static enum MHD_Result route_events(ihc_local *l, struct MHD_Connection *conn, lreq *r,
                                    const char *sid)
{
    lconn *cc = conn_of(conn);
    lstream *st = calloc(1, sizeof(*st));
    if (!st)
        return MHD_NO;
    st->l = l;
    st->conn = conn;
    st->last_write_ns = ihc_mono_ns();
    pthread_mutex_lock(&l->mtx);
    lsession *s = session_find(l, sid);
    if (!s || !peer_may(cc, s) || l->stopping) {
        bool stopping = l->stopping;
        pthread_mutex_unlock(&l->mtx);
        free(st);
        if (stopping)
            return refuse(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE, "the agent is shutting down");
        return refuse(conn, r, MHD_HTTP_NOT_FOUND, "unknown session '%s'", sid);
    }
    char ev[1024];
    json_t *d =
        json_pack("{s:s,s:s,s:I,s:s}", "session_id", s->sid, "hardware_id", s->hw, "epoch",
                  (json_int_t)s->epoch, "state", s->state == LS_ACTIVE ? "active" : "interrupted");
    char *text = d ? json_dumps(d, JSON_COMPACT) : NULL;
    json_decref(d);
    snprintf(ev, sizeof ev, "event: session\ndata: %s\n\n", text ? text : "{}");
    free(text);
    stream_push(st, ev);
    if (s->state == LS_INTERRUPTED) {
        char sev[IHC_REASON_MAX * 6 + 512];
        stop_event(l, s, sev, sizeof sev);
        stream_push(st, sev);
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK,
                                                                  stream_read, st, stream_done);
    if (!resp) {
        pthread_mutex_unlock(&l->mtx);
        free(st->out);
        free(st);
        return MHD_NO;
    }
    /* from here on stream_done frees st */
    st->sess = s;
    st->s_next = s->streams;
    s->streams = st;
    if (s->pid == 0)
        s->holders++;
    st->next = l->streams;
    if (l->streams)
        l->streams->prev = st;
    l->streams = st;
    l->n_streams++;
    if (cc) {
        st->cc = cc;
        cc->stream = st;
        cc->state = LC_STREAM;
    }
    pthread_mutex_unlock(&l->mtx);
    idle_timeout_set(l, conn, cc, false);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, CT_SSE);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    r->answered = true;
    return ret;
}

/* ---- dispatch ---- */

#define SESSIONS_PREFIX "/v1/sessions/"

/* "/v1/sessions/{id}" and "/v1/sessions/{id}/events": the id (copied into sid) and whether
 * it is the events route. False when url is neither or the id is not an id. */
static bool session_path(const char *url, char *sid, size_t cap, bool *events)
{
    if (strncmp(url, SESSIONS_PREFIX, strlen(SESSIONS_PREFIX)) != 0)
        return false;
    const char *id = url + strlen(SESSIONS_PREFIX);
    const char *slash = strchr(id, '/');
    size_t n = slash ? (size_t)(slash - id) : strlen(id);
    *events = slash != NULL;
    if (slash && strcmp(slash, "/events") != 0)
        return false;
    if (n == 0 || n >= cap || !ihc_id_valid(id, n))
        return false;
    memcpy(sid, id, n);
    sid[n] = '\0';
    return true;
}

static enum MHD_Result not_allowed(struct MHD_Connection *conn, lreq *r, const char *method,
                                   const char *url, const char *allow)
{
    char shown_m[16], shown_u[96];
    snprintf(shown_m, sizeof shown_m, "%s", method);
    snprintf(shown_u, sizeof shown_u, "%s", url);
    return refuse(conn, r, MHD_HTTP_METHOD_NOT_ALLOWED, "method %s not allowed on %s (use %s)",
                  shown_m, shown_u, allow);
}

static enum MHD_Result dispatch(ihc_local *l, struct MHD_Connection *conn, lreq *r, const char *url,
                                const char *method)
{
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
    bool post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    bool del = strcmp(method, MHD_HTTP_METHOD_DELETE) == 0;
    if (strcmp(url, "/healthz") == 0)
        return get ? route_health(l, conn, r) : not_allowed(conn, r, method, url, "GET");
    if (strcmp(url, "/v1/sessions") == 0) {
        if (get)
            return route_list(l, conn, r);
        return post ? route_begin(l, conn, r) : not_allowed(conn, r, method, url, "GET, POST");
    }
    char sid[IHC_ID_MAX + 1];
    bool events = false;
    if (session_path(url, sid, sizeof sid, &events)) {
        if (events)
            return get ? route_events(l, conn, r, sid) : not_allowed(conn, r, method, url, "GET");
        return del ? route_end(l, conn, r, sid) : not_allowed(conn, r, method, url, "DELETE");
    }
    char shown[96];
    snprintf(shown, sizeof shown, "%s", url);
    for (char *p = shown; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    return refuse(conn, r, MHD_HTTP_NOT_FOUND,
                  "no such endpoint: %s (routes: GET /healthz, GET|POST /v1/sessions, "
                  "GET /v1/sessions/{id}/events, DELETE /v1/sessions/{id})",
                  shown);
}

static enum MHD_Result handle_request(ihc_local *l, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *upload, size_t *upload_size,
                                      void **con_cls)
{
    lreq *r = *con_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof(*r))))
            return MHD_NO;
        *con_cls = r;
        lconn *cc = conn_of(conn);
        if (cc && cc->over)
            return refuse(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "too many connections to the local API (IHC_LOCAL_MAX_CONNS=%zu)",
                          l->max_conns);
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > BODY_MAX)
            return refuse(conn, r, MHD_HTTP_CONTENT_TOO_LARGE,
                          "request body exceeds the limit of %u bytes", BODY_MAX);
        return MHD_YES;
    }
    if (r->answered) { /* refused early: the rest of the body is ignored */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->too_big || r->len + n > BODY_MAX) {
            r->too_big = true;
            return MHD_YES;
        }
        char *nb = realloc(r->body, r->len + n + 1);
        if (!nb)
            return MHD_NO;
        memcpy(nb + r->len, upload, n);
        r->body = nb;
        r->len += n;
        r->body[r->len] = '\0';
        return MHD_YES;
    }
    if (r->too_big)
        return refuse(conn, r, MHD_HTTP_CONTENT_TOO_LARGE,
                      "request body exceeds the limit of %u bytes", BODY_MAX);
    return dispatch(l, conn, r, url, method);
}

/* ---- the request deadline ---- */

/* The request is in (answered): no deadline while its answer is made and sent. */
static void conn_answering(ihc_local *l, struct MHD_Connection *conn)
{
    lconn *cc = conn_of(conn);
    if (!cc)
        return;
    pthread_mutex_lock(&l->mtx);
    if (cc->state == LC_RECEIVING)
        cc->state = LC_BUSY;
    pthread_mutex_unlock(&l->mtx);
}

/* libmicrohttpd's URI logger, called once a request line is in: on a kept-alive connection
 * the next request has begun and gets the deadline (from now, or sooner when its idle
 * deadline comes first). Returns the request's initial context: none. */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)uri;
    ihc_local *l = cls;
    lconn *cc = conn_of(conn);
    if (!cc)
        return NULL;
    uint64_t due = ihc_mono_ns() + l->request_deadline_ns;
    pthread_mutex_lock(&l->mtx);
    if (cc->state == LC_IDLE) {
        cc->state = LC_RECEIVING;
        if (cc->n_held > 0 || cc->deadline_ns > due)
            cc->deadline_ns = due;
    }
    pthread_mutex_unlock(&l->mtx);
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    ihc_local *l = cls;
    enum MHD_Result ret = handle_request(l, conn, url, method, upload, upload_size, con_cls);
    lreq *r = *con_cls;
    if (r && r->answered && !r->in) {
        r->in = true;
        conn_answering(l, conn);
    }
    return ret;
}

/* The answer is sent: a kept-alive connection waits for its next request (one whose event
 * stream ended and that holds nothing is an idle one again). */
static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    ihc_local *l = cls;
    lconn *cc = conn_of(conn);
    if (cc) {
        uint64_t due = ihc_mono_ns() + (uint64_t)l->idle_s * 1000000000ull + IDLE_SLACK_NS +
                       l->request_deadline_ns;
        pthread_mutex_lock(&l->mtx);
        cc->state = LC_IDLE;
        cc->deadline_ns = due;
        bool idle_again = cc->no_idle_timeout && cc->n_held == 0;
        pthread_mutex_unlock(&l->mtx);
        /* only while the connection lives on (it is not closing) */
        if (idle_again && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
            idle_timeout_set(l, conn, cc, true);
    }
    lreq *r = *con_cls;
    *con_cls = NULL;
    if (r) {
        free(r->body);
        free(r);
    }
}

/* ---- connections ---- */

/* A warning at most once per LOG_EVERY_NS for one kind of event. Under l->mtx. */
static bool log_due(ihc_log_limit *lim, uint64_t *folded)
{
    return ihc_log_limit_due(lim, ihc_mono_ns(), LOG_EVERY_NS, folded);
}

/* Accept policy: past IHC_LOCAL_MAX_CONNS + OVER_SLACK a connection is closed at once. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addr;
    (void)addrlen;
    ihc_local *l = cls;
    pthread_mutex_lock(&l->mtx);
    bool full = l->n_conns >= l->max_conns + OVER_SLACK;
    uint64_t folded = 0;
    bool log = full && log_due(&l->refused_log, &folded);
    size_t open = l->n_conns;
    pthread_mutex_unlock(&l->mtx);
    if (log)
        ihc_log(IHC_LOG_WARN, COMP,
                "connection refused: IHC_LOCAL_MAX_CONNS=%zu connections open (open=%zu, "
                "refused since the last line=%" PRIu64 ")",
                l->max_conns, open, folded);
    return full ? MHD_NO : MHD_YES;
}

static void conn_closed(ihc_local *l, lconn *cc)
{
    lsession *gone[SESSION_HOLD_MAX];
    size_t n_gone = 0;
    pthread_mutex_lock(&l->mtx);
    if (cc->stream)
        cc->stream->cc = NULL;
    while (cc->n_held > 0) {
        lsession *s = cc->held[--cc->n_held];
        lsession *g = session_unhold_locked(l, s);
        if (g)
            gone[n_gone++] = g;
    }
    if (cc->prev)
        cc->prev->next = cc->next;
    else
        l->conns = cc->next;
    if (cc->next)
        cc->next->prev = cc->prev;
    l->n_conns--;
    pthread_mutex_unlock(&l->mtx);
    for (size_t i = 0; i < n_gone; i++)
        session_finish(l, gone[i], "gone", "connection_closed");
    free(cc);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    ihc_local *l = cls;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        lconn *cc = *socket_context;
        *socket_context = NULL;
        if (cc)
            conn_closed(l, cc);
        return;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    lconn *cc = calloc(1, sizeof(*cc));
    if (!cc || !ci) {
        free(cc);
        *socket_context = NULL;
        return;
    }
    cc->fd = ci->connect_fd;
    cc->state = LC_RECEIVING;
    cc->deadline_ns = ihc_mono_ns() + l->request_deadline_ns;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(cc->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && len == sizeof cred &&
        cred.pid > 0) {
        cc->has_cred = true;
        cc->peer_pid = cred.pid;
        cc->peer_uid = cred.uid;
    }
    pthread_mutex_lock(&l->mtx);
    cc->over = l->n_conns >= l->max_conns;
    uint64_t folded = 0;
    bool log = cc->over && log_due(&l->refused_log, &folded);
    cc->next = l->conns;
    if (l->conns)
        l->conns->prev = cc;
    l->conns = cc;
    l->n_conns++;
    size_t open = l->n_conns;
    pthread_mutex_unlock(&l->mtx);
    *socket_context = cc;
    if (log)
        ihc_log(IHC_LOG_WARN, COMP,
                "connection answered 503: IHC_LOCAL_MAX_CONNS=%zu connections open (open=%zu, "
                "refused since the last line=%" PRIu64 ")",
                l->max_conns, open, folded);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    ihc_local *l = cls;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    snprintf(l->mhd_error, sizeof l->mhd_error, "%s", msg);
    ihc_log(IHC_LOG_DEBUG, COMP, "libmicrohttpd: %s", msg);
}

/* ---- the watch thread ---- */

/* Streams whose client went away (a suspended connection does not see it), or that are due a
 * keepalive, are resumed: the reader then ends or pings them. Under l->mtx. */
static void watch_streams(ihc_local *l, uint64_t now)
{
    for (lstream *st = l->streams; st; st = st->next) {
        if (!st->suspended)
            continue;
        bool wake = false;
        if (st->cc) {
            struct pollfd pf = {.fd = st->cc->fd, .events = POLLIN | POLLRDHUP};
            if (poll(&pf, 1, 0) == 1 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
                st->dead = true;
                wake = true;
            }
        }
        if (now - st->last_write_ns >= PING_NS) {
            st->want_ping = true;
            wake = true;
        }
        if (wake) {
            st->suspended = false;
            MHD_resume_connection(st->conn);
        }
    }
}

/* Connections whose request is not in by its deadline are shut down (libmicrohttpd then
 * sees the socket end and closes it; it has not closed the fd while cc is listed). An idle
 * connection that holds a session is left alone: its holder may wait for hours. One whose
 * session another connection ended has no idle timeout left: it is closed as an idle one
 * (not counted). Under l->mtx. */
static void sweep_deadlines(ihc_local *l, uint64_t now)
{
    uint64_t closed = 0;
    for (lconn *cc = l->conns; cc; cc = cc->next) {
        bool subject = cc->state == LC_RECEIVING || (cc->state == LC_IDLE && cc->n_held == 0);
        if (cc->shut || !subject || now < cc->deadline_ns)
            continue;
        shutdown(cc->fd, SHUT_RDWR);
        cc->shut = true;
        if (cc->state == LC_IDLE && cc->no_idle_timeout)
            ihc_log(IHC_LOG_DEBUG, COMP, "idle connection closed: its sessions ended elsewhere");
        else
            closed++;
    }
    if (closed == 0)
        return;
    l->deadline_closed += closed;
    l->deadline_log.unlogged += closed - 1;
    uint64_t folded = 0;
    if (log_due(&l->deadline_log, &folded))
        ihc_log(IHC_LOG_WARN, COMP,
                "connection closed: no whole request within IHC_LOCAL_REQUEST_DEADLINE=%.3gs "
                "(closed=%" PRIu64 " since the last line, total=%" PRIu64 ")",
                (double)l->request_deadline_ns / 1e9, folded + 1, l->deadline_closed);
}

/* Ends the pid sessions whose process is gone. */
static void check_pids(ihc_local *l)
{
    for (;;) {
        lsession *gone = NULL;
        pthread_mutex_lock(&l->mtx);
        for (lsession *s = l->sessions; s && !gone; s = s->next)
            if (s->pid != 0 && !pid_alive(s->pid, s->start_time))
                gone = s;
        if (gone)
            session_unlink_locked(l, gone, "done");
        pthread_mutex_unlock(&l->mtx);
        if (!gone)
            return;
        session_finish(l, gone, "done", "process_exit");
    }
}

/* Stream hang-ups and request deadlines are looked at this often (well under the 0.5 s a
 * held session may outlive its holder), pids every INTERRUPT_CHECK_INTERVAL. */
#define WATCH_STREAMS_MS 50

static void *watch_main(void *arg)
{
    ihc_local *l = arg;
    ihc_thread_name("ihc:local");
    uint64_t next_check = ihc_mono_ns() + (uint64_t)l->check_ms * 1000000ull;
    pthread_mutex_lock(&l->mtx);
    while (!l->stopping) {
        uint64_t now = ihc_mono_ns();
        watch_streams(l, now);
        sweep_deadlines(l, now);
        if (now >= next_check) {
            pthread_mutex_unlock(&l->mtx);
            check_pids(l);
            next_check = ihc_mono_ns() + (uint64_t)l->check_ms * 1000000ull;
            pthread_mutex_lock(&l->mtx);
            continue;
        }
        uint64_t until = now + WATCH_STREAMS_MS * 1000000ull;
        if (until > next_check)
            until = next_check;
        struct timespec ts = ihc_mono_abstime(until);
        pthread_cond_timedwait(&l->cond, &l->mtx, &ts);
    }
    pthread_mutex_unlock(&l->mtx);
    return NULL;
}

/* ---- lifecycle ---- */

/* Probes the socket at path: 1 when a process listens there, 0 when nobody does (a stale
 * file), -1 on another error (errno set). */
static int sock_probe(const char *path)
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

/* Refuses when someone listens on the path, removes a stale socket file. */
static int sock_prepare(const char *path, char *err, size_t err_len)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return IHC_OK; /* nothing there */
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, err_len, "local API unix://%s: the file exists and is not a socket", path);
        return IHC_EEXIST;
    }
    switch (sock_probe(path)) {
    case 1:
        snprintf(err, err_len,
                 "local API unix://%s: another process (an ihc-agent?) is listening "
                 "there" IN_USE_HINT,
                 path);
        return IHC_EEXIST;
    case 0:
        break;
    default:
        snprintf(err, err_len, "local API unix://%s: %s", path, strerror(errno));
        return IHC_ETRANSPORT;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        snprintf(err, err_len, "local API unix://%s: cannot remove the stale socket: %s", path,
                 strerror(errno));
        return IHC_ETRANSPORT;
    }
    ihc_log(IHC_LOG_INFO, COMP, "removed stale socket path=%s", path);
    return IHC_OK;
}

/* Binds and listens on path, mode 0660 (the directory's group decides who may connect).
 * Returns the socket or -1 with err set. */
static int sock_listen(const char *path, char *err, size_t err_len, int *rc)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, err_len, "local API unix://%s: socket: %s", path, strerror(errno));
        *rc = IHC_ETRANSPORT;
        return -1;
    }
    /* created with 0660 at once, so that no one else can connect in between */
    mode_t old = umask(0117);
    int brv = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    int e = errno;
    umask(old);
    if (brv != 0 || listen(fd, BACKLOG) != 0) {
        if (brv == 0)
            e = errno;
        snprintf(err, err_len, "local API unix://%s: cannot listen: %s%s", path, strerror(e),
                 e == EADDRINUSE ? " (another ihc-agent running?)" IN_USE_HINT : "");
        *rc = e == EADDRINUSE ? IHC_EEXIST : IHC_ETRANSPORT;
        close(fd);
        return -1;
    }
    chmod(path, 0660);
    return fd;
}

static int start_daemon(ihc_local *l, int lfd, char *err, size_t err_len)
{
    unsigned hard = (unsigned)(l->max_conns + OVER_SLACK + 1);
    l->daemon = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, on_accept,
        l, on_request, l, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, l, MHD_OPTION_LISTEN_SOCKET,
        (MHD_socket)lfd, MHD_OPTION_CONNECTION_LIMIT, hard, MHD_OPTION_CONNECTION_TIMEOUT,
        l->idle_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, l, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        l, MHD_OPTION_URI_LOG_CALLBACK, on_request_line, l, MHD_OPTION_END);
    if (!l->daemon) {
        snprintf(err, err_len, "local API unix://%s: cannot serve HTTP: %s", l->path,
                 l->mhd_error[0] ? l->mhd_error : "libmicrohttpd failed to start");
        return IHC_EINTERNAL;
    }
    return IHC_OK;
}

int ihc_local_open(ihc_local **out, ihc_agent *a, const ihc_local_opts *o, char *err,
                   size_t err_len)
{
    *out = NULL;
    if (err_len)
        err[0] = '\0';
    bool legacy = false;
    const char *path = o && o->url ? ihc_config_local_path(o->url, &legacy) : NULL;
    if (!a || !path || strlen(path) >= IHC_LOCAL_PATH_MAX) {
        snprintf(err, err_len, "local API '%s': expected unix:///ABSOLUTE/PATH (at most %d bytes)",
                 o && o->url ? o->url : "", IHC_LOCAL_PATH_MAX - 1);
        return IHC_EINVAL;
    }
    if (legacy)
        ihc_log(IHC_LOG_WARN, COMP,
                "IHC_LOCAL_URL=%s: the local API is HTTP on a Unix socket now; ipc:// is read as "
                "unix://%s (write it so)",
                o->url, path);
    int rc = IHC_OK;
    ihc_local *l = calloc(1, sizeof(*l));
    if (!l || !(l->path = strdup(path))) {
        free(l);
        snprintf(err, err_len, "local API: out of memory");
        return IHC_ENOMEM;
    }
    l->a = a;
    l->max_active = o->max_active > 0 ? o->max_active : 100;
    l->check_ms = o->check_ms > 0 ? o->check_ms : 100;
    l->max_conns = o->max_conns > 0 ? (size_t)o->max_conns : IHC_DEFAULT_LOCAL_MAX_CONNS;
    l->idle_s =
        o->idle_timeout_s > 0 ? (unsigned)o->idle_timeout_s : IHC_DEFAULT_LOCAL_IDLE_TIMEOUT_S;
    l->request_deadline_ns = ihc_s_to_ns(
        o->request_deadline_s > 0 ? o->request_deadline_s : IHC_DEFAULT_LOCAL_REQUEST_DEADLINE_S);
    l->deadline_ms = o->deadline_ms > 0 ? o->deadline_ms : 1000;
    pthread_mutex_init(&l->mtx, NULL);
    ihc_cond_init_mono(&l->cond);

    if ((rc = sock_prepare(l->path, err, err_len)) != IHC_OK)
        goto fail;
    int lfd = sock_listen(l->path, err, err_len, &rc);
    if (lfd < 0)
        goto fail;
    l->listened = true;
    ihc_fd_limit_raise(l->max_conns + OVER_SLACK, COMP, "IHC_LOCAL_MAX_CONNS");
    if ((rc = start_daemon(l, lfd, err, err_len)) != IHC_OK) {
        close(lfd);
        goto fail;
    }
    if (pthread_create(&l->worker, NULL, watch_main, l) != 0) {
        snprintf(err, err_len, "local API: cannot start its thread");
        rc = IHC_EINTERNAL;
        goto fail;
    }
    l->worker_started = true;
    ihc_log(IHC_LOG_INFO, COMP,
            "listening url=unix://%s mode=0660 max_conns=%zu idle_timeout_s=%u "
            "request_deadline_s=%.3g deadline_ms=%d",
            l->path, l->max_conns, l->idle_s, (double)l->request_deadline_ns / 1e9, l->deadline_ms);
    *out = l;
    return IHC_OK;

fail:
    ihc_local_shutdown(l);
    ihc_local_close(l);
    return rc;
}

static bool streams_open(ihc_local *l)
{
    pthread_mutex_lock(&l->mtx);
    bool open = l->streams != NULL;
    pthread_mutex_unlock(&l->mtx);
    return open;
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
    if (l->daemon) {
        MHD_socket lfd = MHD_quiesce_daemon(l->daemon);
        if (lfd != MHD_INVALID_SOCKET)
            close(lfd);
        /* streams end: none may stay suspended when the daemon stops */
        pthread_mutex_lock(&l->mtx);
        for (lstream *st = l->streams; st; st = st->next) {
            st->dead = true;
            if (st->suspended) {
                st->suspended = false;
                MHD_resume_connection(st->conn);
            }
        }
        pthread_mutex_unlock(&l->mtx);
        uint64_t until = ihc_mono_ns() + DRAIN_MS * 1000000ull;
        while (streams_open(l) && ihc_mono_ns() < until)
            ihc_sleep_ms(5);
        MHD_stop_daemon(l->daemon);
        l->daemon = NULL;
    }
    /* the API's sessions end with it: nobody could be told to stop any more */
    for (;;) {
        pthread_mutex_lock(&l->mtx);
        lsession *s = l->sessions;
        if (s)
            session_unlink_locked(l, s, "done");
        pthread_mutex_unlock(&l->mtx);
        if (!s)
            break;
        session_finish(l, s, "done", "shutdown");
    }
}

void ihc_local_close(ihc_local *l)
{
    if (!l)
        return;
    ihc_local_shutdown(l);
    if (l->listened) {
        /* remove our socket file unless another agent has bound the path since */
        struct stat st;
        if (lstat(l->path, &st) == 0 && S_ISSOCK(st.st_mode) && sock_probe(l->path) == 0)
            unlink(l->path);
    }
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->mtx);
    free(l->path);
    free(l);
}
