/* The coordinator's HTTP/JSON API on libmicrohttpd: routing, authentication, request limits
 * and parsing; interrupts are answered asynchronously from suspended connections; the live
 * event stream (Server-Sent Events) and the dashboard's static files; connection limits and
 * the request deadline, enforced by a watch thread that also wakes idle event streams. */
#include "http.h"

#include "clock.h"
#include "dashboard.h"
#include "defaults.h"
#include "docs.h"
#include "err.h"
#include "events.h"
#include "fdlimit.h"
#include "log.h"
#include "request.h"
#include "thread.h"
#include "tls.h"

#include <arpa/inet.h>
#include <stddef.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <jansson.h>
#include <linux/tcp.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define COMPONENT "http"
/* Idle connections are closed after this long (slow or stalled clients). */
#define HTTP_IDLE_TIMEOUT_S 30u
#define HTTP_BACKLOG        512 /* pending connections the kernel keeps for accept */
/* Per-connection memory for the request line, headers and the read buffer. */
#define HTTP_CONN_MEMORY (64u * 1024u)
/* A chunked body that overflows the limit is swallowed up to this much more, so the client
 * still gets its 413; beyond that the connection is dropped. */
#define HTTP_DISCARD_MAX (1024u * 1024u)
/* How long closing waits for answers to interrupts still in flight to be written. */
#define HTTP_DRAIN_S      2
#define HTTP_PATH_LOG_MAX 128
#define HTTP_NAME_MAX     64 /* longest field or parameter name quoted in an error */
/* The watch thread's period: request deadlines are enforced to within this. */
#define HTTP_WATCH_MS 100
/* Limit refusals and deadline closures are logged at most this often (with a count). */
#define HTTP_LOG_EVERY_NS 1000000000ull
/* An idle event stream gets a comment this often, so that a client that went away is
 * noticed (a suspended connection does not see a disconnect) and proxies keep it open. */
#define STREAM_PING_NS (15ull * 1000000000ull)
/* A stream that fell behind the history and has not been able to take a byte for this long
 * is cut off without its overflow event (it is not reading). */
#define STREAM_STALL_NS (1000000000ull)
#define STREAM_BLOCK    (32u * 1024u) /* bytes asked of the stream reader at a time */
/* A stream's socket send buffer. Fixed (the kernel would grow it to megabytes for a client
 * that does not read): past it a client's backlog is the event history, which is bounded
 * and shared, not kernel memory per client. */
#define STREAM_SNDBUF (64 * 1024)
/* The EventSource reconnect delay sent to clients, ms. */
#define STREAM_RETRY_MS 2000
/* Seconds a client refused at a limit is told to wait (Retry-After). */
#define HTTP_RETRY_AFTER "1"

#define CT_JSON    "application/json"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"
#define CT_SSE     "text/event-stream; charset=utf-8"
/* The dashboard loads only its own files and talks only to this server. */
#define DASHBOARD_CSP                                                                              \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "                \
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

typedef enum {
    ROUTE_NONE = 0,
    ROUTE_INTERRUPT,
    ROUTE_SESSIONS,
    ROUTE_AGENTS,
    ROUTE_FLAGS,
    ROUTE_FLAGS_RESET,
    ROUTE_STATS,
    ROUTE_METRICS,
    ROUTE_HEALTH,
    ROUTE_EVENTS,
    ROUTE_ASSET,
} route_id;

/* Query parameters a route accepts. */
enum { Q_HW = 1 << 0, Q_TOKEN = 1 << 1, Q_LAST_ID = 1 << 2 };

typedef struct {
    const char *path;
    bool post; /* POST, else GET (and HEAD) */
    route_id id;
    const char *op;  /* ihc_api_query op; NULL for the others */
    unsigned params; /* Q_* accepted */
    bool public_;    /* served without the bearer token */
} route;

static const route routes[] = {
    {"/v1/interrupt", true, ROUTE_INTERRUPT, NULL, 0, false},
    {"/v1/sessions", false, ROUTE_SESSIONS, "sessions", Q_HW, false},
    {"/v1/agents", false, ROUTE_AGENTS, "agents", 0, false},
    {"/v1/flags", false, ROUTE_FLAGS, "flags", 0, false},
    {"/v1/flags/reset", true, ROUTE_FLAGS_RESET, "flags_reset", 0, false},
    {"/v1/stats", false, ROUTE_STATS, "stats", 0, false},
    {"/metrics", false, ROUTE_METRICS, "metrics", 0, false},
    {"/healthz", false, ROUTE_HEALTH, "health", 0, true},
    /* EventSource cannot send headers: the token may come as ?token= here (only here) */
    {"/v1/events", false, ROUTE_EVENTS, NULL, Q_TOKEN | Q_LAST_ID, false},
};
/* The dashboard's files (dashboard.h) are public: they hold no data, the page asks for the
 * token when the API wants one. */
static const route asset_route = {NULL, false, ROUTE_ASSET, NULL, 0, true};

/* What the watch thread knows of a connection (libmicrohttpd's socket context), under
 * ihc_http.conn_mu. A request must arrive whole by its deadline: from the accept, or, on a
 * kept-alive connection, from the first byte after the previous answer. */
typedef enum {
    CONN_RECEIVING, /* a request is arriving: deadline_ns applies */
    CONN_BUSY,      /* the request is in, its answer is being made or sent */
    CONN_IDLE,      /* kept alive after an answer: waiting for bytes beyond idle_bytes */
    CONN_STREAM,    /* an event stream */
} conn_state;

typedef struct conn_ctx {
    int fd;
    conn_state state;
    uint64_t deadline_ns;
    uint64_t idle_bytes;   /* tcpi_bytes_received when the last answer was sent */
    bool shut;             /* shut down by the watch thread; libmicrohttpd closes it next */
    struct stream *stream; /* the event stream it carries, NULL when none */
    struct conn_ctx *prev, *next;
} conn_ctx;

/* One event stream, from its response's creation to its destruction (libmicrohttpd frees
 * the response when the connection is done with it). conn stays valid until then. */
typedef struct stream {
    pthread_mutex_t mu; /* the fields below but cc; taken after ihc_http.conn_mu */
    struct ihc_http *h;
    struct MHD_Connection *conn;
    /* under conn_mu: libmicrohttpd reports the connection closed (freeing cc) before it
     * frees the response (stream_done), so each side clears the other's pointer */
    conn_ctx *cc;
    ihc_events_cursor cur;
    char *out; /* control text to send before more events (retry, gap, overflow) */
    size_t out_len, out_off;
    bool end_after_out; /* the overflow event: the stream ends once out is sent */
    bool suspended;     /* waiting for events; only the watch thread resumes it */
    bool want_ping;
    bool closing; /* the server is stopping */
    uint64_t last_write_ns, last_call_ns;
    struct stream *prev, *next; /* in ihc_http.streams, under conn_mu */
} stream;

/* An interrupt in flight, shared by the suspended connection and the coordinator's done
 * callback; freed when both have let go. conn is only valid while the connection holds it. */
typedef struct pending {
    pthread_mutex_t mu;
    int refs;
    bool done; /* status/json hold the answer */
    bool suspended;
    bool resumed;
    int status;
    char *json;
    struct MHD_Connection *conn;
    struct pending *prev, *next; /* in ihc_http.pending, guarded by ihc_http.mu */
} pending;

struct ihc_http {
    struct MHD_Daemon *daemon;
    ihc_coord *coord;
    ihc_events *events;
    char *token;
    size_t token_len;
    size_t max_body;
    int port;
    bool mutual;            /* HTTPS with client certificates from IHC_TLS_CA required */
    pthread_mutex_t mu;     /* guards pending and closing */
    pthread_cond_t drained; /* signalled when a pending request completes or a stream ends */
    pending *pending;
    bool closing;
    char mhd_error[256]; /* last message from libmicrohttpd, for start-up failures */

    /* limits */
    size_t max_conns, max_streams, per_ip;
    uint64_t deadline_ns;
    /* connections and streams, under conn_mu */
    pthread_mutex_t conn_mu;
    conn_ctx *conns;
    stream *streams;
    size_t n_conns, n_streams;
    ihc_log_limit refused_log, deadline_log, overflow_log, per_ip_log;
    /* counters for /metrics */
    atomic_uint_fast64_t refused_max_conns, refused_per_ip, refused_streams, deadline_closed,
        streams_overflowed;
    /* the watch thread */
    pthread_t watch;
    bool watch_started;
    atomic_bool stop;
    pthread_cond_t watch_cv; /* with mu: wakes the watch thread while no stream is open */
};

/* One request, from the first call of the access handler to the completion callback. */
typedef struct {
    const route *rt;
    uint64_t t0_ns;
    char method[8];
    char path[HTTP_PATH_LOG_MAX];
    int status; /* answered status, 0 while none */
    char *body;
    size_t len, cap;
    size_t discarded;
    bool too_big;
    char *hw;      /* sessions filter */
    char *last_id; /* events: ?last_event_id= */
    const ihc_dash_asset *asset;
    conn_ctx *cc;
    pending *p;
} http_req;

static void pending_unref(pending *p)
{
    pthread_mutex_lock(&p->mu);
    int left = --p->refs;
    pthread_mutex_unlock(&p->mu);
    if (left > 0)
        return;
    pthread_mutex_destroy(&p->mu);
    free(p->json);
    free(p);
}

/* Queues body (malloc'd, taken) with status and content type; adds the newline every JSON
 * answer ends with. */
static enum MHD_Result respond(struct MHD_Connection *conn, http_req *r, int status,
                               const char *ctype, char *body, const char *allow)
{
    size_t len = body != NULL ? strlen(body) : 0;
    if (len == 0 || body[len - 1] != '\n') {
        char *nb = realloc(body, len + 2);
        if (nb == NULL) {
            free(body);
            return MHD_NO;
        }
        body = nb;
        body[len++] = '\n';
        body[len] = '\0';
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (status == MHD_HTTP_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"ihc\"");
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, HTTP_RETRY_AFTER);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES)
        r->status = status;
    return ret;
}

/* {"error": msg}, JSON-escaped. */
static char *error_doc(const char *msg)
{
    char *s = ihc_doc_error(msg);
    return s ? s : strdup("{\"error\":\"internal error\"}");
}

/* Refuses the request with status and a message naming the problem; counted as rejected. */
static enum MHD_Result refuse(ihc_http *h, struct MHD_Connection *conn, http_req *r, int status,
                              const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static enum MHD_Result refuse(ihc_http *h, struct MHD_Connection *conn, http_req *r, int status,
                              const char *allow, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ihc_api_count_rejected(h->coord);
    return respond(conn, r, status, CT_JSON, error_doc(msg), allow);
}

/* Names from the network are quoted in errors; keep them short and printable. */
static void sanitize_name(char *out, size_t cap, const char *in)
{
    size_t n = 0;
    for (const char *s = in; s != NULL && *s != '\0' && n + 1 < cap; s++)
        out[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
    out[n] = '\0';
    if (in != NULL && strlen(in) >= cap && cap > 4)
        memcpy(out + cap - 4, "...", 4);
}

/* Compares in time that depends only on the expected token's length. */
static bool token_equal(const char *got, size_t got_len, const char *want, size_t want_len)
{
    unsigned char diff = (unsigned char)(got_len != want_len);
    for (size_t i = 0; i < want_len; i++) {
        unsigned char g = i < got_len ? (unsigned char)got[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)want[i]);
    }
    return diff == 0;
}

/* The bearer token from the Authorization header, or from ?token= on routes that take it
 * (a browser's EventSource cannot set headers). */
static bool authorized(const ihc_http *h, struct MHD_Connection *conn, const route *rt)
{
    const char *v =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (v == NULL && rt != NULL && (rt->params & Q_TOKEN)) {
        const char *q = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "token");
        return q != NULL && token_equal(q, strlen(q), h->token, h->token_len);
    }
    if (v == NULL || strncasecmp(v, "Bearer ", 7) != 0)
        return false;
    v += 7;
    while (*v == ' ')
        v++;
    size_t n = strlen(v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return token_equal(v, n, h->token, h->token_len);
}

/* Mutual TLS: the client's certificate verified against IHC_TLS_CA (libmicrohttpd asks for one
 * but leaves the verdict to us). On failure writes why into why. */
static bool client_cert_ok(struct MHD_Connection *conn, char *why, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    gnutls_session_t sess = ci != NULL ? (gnutls_session_t)ci->tls_session : NULL;
    unsigned status = 0;
    int rv =
        sess != NULL ? gnutls_certificate_verify_peers2(sess, &status) : GNUTLS_E_INTERNAL_ERROR;
    if (rv == GNUTLS_E_NO_CERTIFICATE_FOUND) {
        snprintf(why, len, "no client certificate was sent");
        return false;
    }
    if (rv != 0) {
        snprintf(why, len, "%s", gnutls_strerror(rv));
        return false;
    }
    if (status == 0)
        return true;
    gnutls_datum_t text = {NULL, 0};
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) == 0) {
        snprintf(why, len, "%.*s", (int)text.size, (const char *)text.data);
        gnutls_free(text.data);
    } else {
        snprintf(why, len, "verification status 0x%x", status);
    }
    return false;
}

/* Missing Content-Type is accepted as JSON (for minimal clients); any other media type
 * than application/json is refused. */
static bool content_type_ok(struct MHD_Connection *conn)
{
    const char *ct =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct == NULL)
        return true;
    while (*ct == ' ')
        ct++;
    size_t n = strcspn(ct, "; \t");
    return n == strlen(CT_JSON) && strncasecmp(ct, CT_JSON, n) == 0;
}

/* The query parameters routes take, by Q_* bit. */
static const struct {
    unsigned bit;
    const char *name;
} params[] = {{Q_HW, "hardware_id"}, {Q_TOKEN, "token"}, {Q_LAST_ID, "last_event_id"}};
#define N_PARAMS (sizeof params / sizeof params[0])

typedef struct {
    unsigned accepted; /* Q_* */
    const char *value[N_PARAMS];
    bool nul[N_PARAMS]; /* "%00" decoded inside the value: the C string would be cut short */
    int n[N_PARAMS];
    char bad[HTTP_NAME_MAX + 1];
    bool has_bad;
} query_scan;

static enum MHD_Result scan_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    query_scan *q = cls;
    for (size_t i = 0; key != NULL && i < N_PARAMS; i++) {
        if (!(q->accepted & params[i].bit) || key_size != strlen(params[i].name) ||
            strcmp(key, params[i].name) != 0)
            continue;
        q->n[i]++;
        q->value[i] = value;
        q->nul[i] = value != NULL && strlen(value) != value_size;
        return MHD_YES;
    }
    if (!q->has_bad) {
        q->has_bad = true;
        sanitize_name(q->bad, sizeof q->bad, key != NULL ? key : "");
    }
    return MHD_YES;
}

/* Checks what can be checked before the body: auth, route, method, query, media type and
 * declared length. Returns true when the request may go on; otherwise a refusal is queued
 * (or the connection is to be dropped: *ret MHD_NO). */
static bool admit(ihc_http *h, struct MHD_Connection *conn, http_req *r, const char *url,
                  const char *method, enum MHD_Result *ret)
{
    char why[256];
    if (h->mutual && !client_cert_ok(conn, why, sizeof why)) {
        *ret = refuse(h, conn, r, MHD_HTTP_FORBIDDEN, NULL,
                      "a client certificate issued by the coordinator's IHC_TLS_CA is required: %s",
                      why);
        return false;
    }
    const route *rt = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].path) == 0) {
            rt = &routes[i];
            break;
        }
    }
    if (rt == NULL && (r->asset = ihc_dash_asset_find(url)) != NULL)
        rt = &asset_route;
    if (h->token != NULL && (rt == NULL || !rt->public_) && !authorized(h, conn, rt)) {
        *ret = refuse(h, conn, r, MHD_HTTP_UNAUTHORIZED, NULL,
                      "missing or wrong bearer token (Authorization: Bearer <token>)");
        return false;
    }
    if (rt == NULL) {
        *ret = refuse(h, conn, r, MHD_HTTP_NOT_FOUND, NULL, "no such endpoint: %s", r->path);
        return false;
    }
    bool is_get =
        strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    bool is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    if (rt->post ? !is_post : !is_get) {
        *ret = refuse(h, conn, r, MHD_HTTP_METHOD_NOT_ALLOWED, rt->post ? "POST" : "GET, HEAD",
                      "method %s not allowed on %s (use %s)", r->method, rt->path,
                      rt->post ? "POST" : "GET");
        return false;
    }
    query_scan q = {.accepted = rt->params};
    MHD_get_connection_values_n(conn, MHD_GET_ARGUMENT_KIND, scan_arg, &q);
    if (q.has_bad) {
        char acc[64] = "";
        for (size_t i = 0; i < N_PARAMS; i++)
            if (rt->params & params[i].bit)
                snprintf(acc + strlen(acc), sizeof acc - strlen(acc), "%s%s", acc[0] ? ", " : "",
                         params[i].name);
        *ret = refuse(h, conn, r, MHD_HTTP_BAD_REQUEST, NULL, "unknown query parameter '%s'%s%s%s",
                      q.bad, acc[0] ? " (accepted: " : "", acc, acc[0] ? ")" : "");
        return false;
    }
    for (size_t i = 0; i < N_PARAMS; i++) {
        if (q.n[i] == 0)
            continue;
        if (q.n[i] > 1) {
            *ret = refuse(h, conn, r, MHD_HTTP_BAD_REQUEST, NULL,
                          "query parameter '%s' given more than once", params[i].name);
            return false;
        }
        if (q.value[i] == NULL || q.value[i][0] == '\0' || q.nul[i]) {
            *ret = refuse(h, conn, r, MHD_HTTP_BAD_REQUEST, NULL,
                          q.nul[i] ? "query parameter '%s' contains a NUL byte (%%00)"
                                   : "query parameter '%s' is empty",
                          params[i].name);
            return false;
        }
        char **dst = params[i].bit == Q_HW        ? &r->hw
                     : params[i].bit == Q_LAST_ID ? &r->last_id
                                                  : NULL;
        if (dst != NULL && (*dst = strdup(q.value[i])) == NULL) {
            *ret = MHD_NO;
            return false;
        }
    }
    if (rt->id == ROUTE_INTERRUPT && !content_type_ok(conn)) {
        char ct[HTTP_NAME_MAX + 1];
        sanitize_name(
            ct, sizeof ct,
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE));
        *ret = refuse(h, conn, r, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, NULL,
                      "Content-Type '%s' not supported; send application/json", ct);
        return false;
    }
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL) {
        char *end = NULL;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end != cl && n > h->max_body) {
            *ret =
                refuse(h, conn, r, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                       "request body of %llu bytes exceeds the limit of %zu bytes", n, h->max_body);
            return false;
        }
    }
    r->rt = rt;
    return true;
}

/* Appends upload data up to max_body; past it only counts (see HTTP_DISCARD_MAX). */
static bool take_body(ihc_http *h, http_req *r, const char *data, size_t n)
{
    if (r->too_big || r->len + n > h->max_body) {
        r->too_big = true;
        r->discarded += n;
        return r->discarded <= HTTP_DISCARD_MAX;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;
        while (cap < r->len + n + 1)
            cap *= 2;
        if (cap > h->max_body + 1)
            cap = h->max_body + 1;
        char *nb = realloc(r->body, cap);
        if (nb == NULL)
            return false;
        r->body = nb;
        r->cap = cap;
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    r->body[r->len] = '\0';
    return true;
}

static void on_interrupt_done(int status, char *json, void *arg)
{
    pending *p = arg;
    pthread_mutex_lock(&p->mu);
    if (p->done) {
        free(json); /* already answered (shutting down) */
    } else {
        p->done = true;
        p->status = status;
        p->json = json;
        if (p->suspended && !p->resumed && p->conn != NULL) {
            p->resumed = true;
            MHD_resume_connection(p->conn);
        }
    }
    pthread_mutex_unlock(&p->mu);
    pending_unref(p);
}

static enum MHD_Result answer_pending(struct MHD_Connection *conn, http_req *r)
{
    pending *p = r->p;
    pthread_mutex_lock(&p->mu);
    int status = p->status;
    char *json = p->json;
    p->json = NULL;
    pthread_mutex_unlock(&p->mu);
    if (json == NULL)
        json = error_doc("internal error: empty answer");
    return respond(conn, r, status, CT_JSON, json, NULL);
}

static void pending_list_remove(ihc_http *h, pending *p)
{
    pthread_mutex_lock(&h->mu);
    if (p->prev != NULL)
        p->prev->next = p->next;
    else if (h->pending == p)
        h->pending = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    pthread_cond_broadcast(&h->drained);
    pthread_mutex_unlock(&h->mu);
}

static enum MHD_Result start_interrupt(ihc_http *h, struct MHD_Connection *conn, http_req *r)
{
    ihc_request q;
    char err[256];
    if (ihc_request_parse(&q, r->body, r->len, err, sizeof err) != IHC_OK)
        return refuse(h, conn, r, MHD_HTTP_BAD_REQUEST, NULL, "%s", err);

    pending *p = calloc(1, sizeof *p);
    if (p == NULL) {
        ihc_request_fini(&q);
        return MHD_NO;
    }
    pthread_mutex_init(&p->mu, NULL);
    p->refs = 2; /* this connection + the done callback */
    p->conn = conn;
    r->p = p;
    pthread_mutex_lock(&h->mu);
    bool closing = h->closing;
    if (!closing) {
        p->next = h->pending;
        if (h->pending != NULL)
            h->pending->prev = p;
        h->pending = p;
    }
    pthread_mutex_unlock(&h->mu);
    if (closing) {
        p->refs = 1;
        ihc_request_fini(&q);
        return respond(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE, CT_JSON, error_doc("shutting down"),
                       NULL);
    }

    ihc_api_interrupt(h->coord, q.hw, q.reason, q.timeout_ms, on_interrupt_done, p);
    ihc_request_fini(&q);

    pthread_mutex_lock(&p->mu);
    bool done = p->done;
    if (!done) {
        /* The done callback resumes us; under p->mu so it cannot run in between. */
        p->suspended = true;
        MHD_suspend_connection(conn);
    }
    pthread_mutex_unlock(&p->mu);
    if (done)
        return answer_pending(conn, r);
    return MHD_YES;
}

/* ---- connections: limits and the request deadline ---- */

static conn_ctx *conn_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci != NULL ? ci->socket_context : NULL;
}

/* Bytes the kernel has received on fd so far (Linux TCP_INFO); false when unknown. */
static bool tcp_bytes_received(int fd, uint64_t *out)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received)
        return false;
    *out = ti.tcpi_bytes_received;
    return true;
}

static void conn_set(ihc_http *h, conn_ctx *cc, conn_state st)
{
    if (cc == NULL)
        return;
    uint64_t bytes = 0;
    bool known = st == CONN_IDLE && tcp_bytes_received(cc->fd, &bytes);
    pthread_mutex_lock(&h->conn_mu);
    cc->state = st;
    cc->deadline_ns = 0;
    if (st == CONN_IDLE) {
        if (known) {
            cc->idle_bytes = bytes;
        } else { /* cannot tell when the next request starts: give it the deadline now */
            cc->state = CONN_RECEIVING;
            cc->deadline_ns = ihc_mono_ns() + h->deadline_ns;
        }
    }
    pthread_mutex_unlock(&h->conn_mu);
}

/* A warning at most once per HTTP_LOG_EVERY_NS for one kind of event. Under conn_mu. */
static bool log_due(ihc_log_limit *lim, uint64_t *folded)
{
    return ihc_log_limit_due(lim, ihc_mono_ns(), HTTP_LOG_EVERY_NS, folded);
}

/* libmicrohttpd's accept policy, called before a new connection is set up: a request
 * connection over IHC_HTTP_MAX_CONNS is closed at once (the daemon's own limit sits above
 * ours, so it never stops accepting and leaves clients hanging in the listen queue). */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addr;
    (void)addrlen;
    ihc_http *h = cls;
    pthread_mutex_lock(&h->conn_mu);
    bool full = h->n_conns - h->n_streams >= h->max_conns;
    uint64_t folded = 0;
    bool log = full && log_due(&h->refused_log, &folded);
    size_t open = h->n_conns;
    pthread_mutex_unlock(&h->conn_mu);
    if (!full)
        return MHD_YES;
    atomic_fetch_add(&h->refused_max_conns, 1);
    if (log)
        ihc_log(IHC_LOG_WARN, COMPONENT,
                "connection refused: IHC_HTTP_MAX_CONNS=%zu request connections open "
                "(open=%zu, refused since the last line=%" PRIu64 ")",
                h->max_conns, open, folded);
    return MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    ihc_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_ctx *cc = calloc(1, sizeof *cc);
        if (cc == NULL || ci == NULL) { /* untracked: libmicrohttpd's idle timeout still holds */
            free(cc);
            *socket_context = NULL;
            return;
        }
        cc->fd = ci->connect_fd;
        cc->state = CONN_RECEIVING;
        cc->deadline_ns = ihc_mono_ns() + h->deadline_ns;
        pthread_mutex_lock(&h->conn_mu);
        cc->next = h->conns;
        if (h->conns != NULL)
            h->conns->prev = cc;
        h->conns = cc;
        h->n_conns++;
        pthread_mutex_unlock(&h->conn_mu);
        *socket_context = cc;
        return;
    }
    /* closed: called before libmicrohttpd closes the socket, so while cc is listed the
     * watch thread may shut its fd down */
    conn_ctx *cc = *socket_context;
    if (cc == NULL)
        return;
    pthread_mutex_lock(&h->conn_mu);
    if (cc->stream != NULL)
        cc->stream->cc = NULL;
    if (cc->prev != NULL)
        cc->prev->next = cc->next;
    else
        h->conns = cc->next;
    if (cc->next != NULL)
        cc->next->prev = cc->prev;
    h->n_conns--;
    pthread_mutex_unlock(&h->conn_mu);
    *socket_context = NULL;
    free(cc);
}

/* Watch thread, under conn_mu: connections whose request is not in by its deadline are
 * shut down (libmicrohttpd then sees the socket end and closes it); a kept-alive connection
 * whose next request has begun gets its deadline. */
static void sweep_deadlines(ihc_http *h, uint64_t now)
{
    size_t closed = 0;
    for (conn_ctx *cc = h->conns; cc != NULL; cc = cc->next) {
        if (cc->shut)
            continue;
        if (cc->state == CONN_IDLE) {
            uint64_t bytes;
            if (tcp_bytes_received(cc->fd, &bytes) && bytes != cc->idle_bytes) {
                cc->state = CONN_RECEIVING;
                cc->deadline_ns = now + h->deadline_ns;
            }
            continue;
        }
        if (cc->state != CONN_RECEIVING || now < cc->deadline_ns)
            continue;
        shutdown(cc->fd, SHUT_RDWR);
        cc->shut = true;
        closed++;
    }
    if (closed == 0)
        return;
    atomic_fetch_add(&h->deadline_closed, closed);
    uint64_t folded = 0;
    h->deadline_log.unlogged += closed - 1;
    if (log_due(&h->deadline_log, &folded))
        ihc_log(IHC_LOG_WARN, COMPONENT,
                "connection closed: no whole request within IHC_HTTP_REQUEST_DEADLINE=%.3gs "
                "(closed=%" PRIu64 " since the last line, total=%" PRIu64 ")",
                (double)h->deadline_ns / 1e9, folded + 1,
                (uint64_t)atomic_load(&h->deadline_closed));
}

/* ---- the event stream (GET /v1/events) ---- */

/* Appends text to the stream's control output. Under s->mu. */
static bool stream_out(stream *s, const char *text)
{
    size_t n = strlen(text);
    char *o = realloc(s->out, s->out_len + n + 1);
    if (o == NULL)
        return false;
    memcpy(o + s->out_len, text, n + 1);
    s->out = o;
    s->out_len += n;
    return true;
}

/* libmicrohttpd's content reader: control text first, then events from the history. With
 * nothing to send the connection is suspended until the watch thread sees something. */
static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    stream *s = cls;
    ihc_http *h = s->h;
    uint64_t now = ihc_mono_ns();
    pthread_mutex_lock(&s->mu);
    s->last_call_ns = now;
    if (s->closing) {
        pthread_mutex_unlock(&s->mu);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = 0;
    for (;;) {
        if (s->out_off < s->out_len) {
            size_t k = s->out_len - s->out_off;
            if (k > max - n)
                k = max - n;
            memcpy(buf + n, s->out + s->out_off, k);
            s->out_off += k;
            n += k;
            if (s->out_off < s->out_len)
                break; /* buf is full */
            free(s->out);
            s->out = NULL;
            s->out_len = s->out_off = 0;
        }
        if (s->end_after_out || n == max)
            break;
        ssize_t k = ihc_events_read(h->events, &s->cur, buf + n, max - n);
        if (k >= 0) {
            n += (size_t)k;
            break;
        }
        /* fell out of the history: say so, then end (EventSource reconnects and resumes
         * from what is still held, with a gap event) */
        char id[IHC_EVENTS_ID_MAX], text[256];
        snprintf(text, sizeof text,
                 "event: overflow\ndata: {\"error\":\"this client fell more than "
                 "IHC_EVENTS_HISTORY events behind\",\"next_id\":\"%s\"}\n\n",
                 ihc_events_id(h->events, s->cur.next, id));
        s->end_after_out = true;
        atomic_fetch_add(&h->streams_overflowed, 1);
        if (!stream_out(s, text))
            break;
    }
    if (n == 0 && s->want_ping) {
        static const char ping[] = ": ping\n\n";
        if (max >= sizeof ping - 1) {
            memcpy(buf, ping, sizeof ping - 1);
            n = sizeof ping - 1;
        }
    }
    s->want_ping = false;
    if (n > 0) {
        s->last_write_ns = now;
        pthread_mutex_unlock(&s->mu);
        return (ssize_t)n;
    }
    if (s->end_after_out) {
        pthread_mutex_unlock(&s->mu);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    s->suspended = true;
    MHD_suspend_connection(s->conn);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* libmicrohttpd frees the stream's response: the connection is done with it. */
static void stream_done(void *cls)
{
    stream *s = cls;
    ihc_http *h = s->h;
    pthread_mutex_lock(&h->conn_mu);
    if (s->cc != NULL)
        s->cc->stream = NULL;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        h->streams = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    h->n_streams--;
    pthread_mutex_unlock(&h->conn_mu);
    pthread_mutex_lock(&h->mu);
    pthread_cond_broadcast(&h->drained);
    pthread_mutex_unlock(&h->mu);
    ihc_events_cursor_fini(h->events, &s->cur);
    ihc_log(IHC_LOG_DEBUG, COMPONENT, "event stream closed next_seq=%" PRIu64, s->cur.next);
    pthread_mutex_destroy(&s->mu);
    free(s->out);
    free(s);
}

/* Releases a stream that never reached libmicrohttpd. */
static void stream_discard(ihc_http *h, stream *s)
{
    pthread_mutex_lock(&h->conn_mu);
    h->n_streams--;
    pthread_mutex_unlock(&h->conn_mu);
    if (s == NULL)
        return;
    ihc_events_cursor_fini(h->events, &s->cur);
    pthread_mutex_destroy(&s->mu);
    free(s->out);
    free(s);
}

static enum MHD_Result start_stream(ihc_http *h, struct MHD_Connection *conn, http_req *r)
{
    pthread_mutex_lock(&h->conn_mu);
    bool full = h->n_streams >= h->max_streams;
    if (!full)
        h->n_streams++; /* this one's place, until stream_done */
    pthread_mutex_unlock(&h->conn_mu);
    if (full) {
        atomic_fetch_add(&h->refused_streams, 1);
        return refuse(h, conn, r, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
                      "too many event streams (IHC_HTTP_MAX_STREAMS=%zu)", h->max_streams);
    }
    const char *last = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Last-Event-ID");
    if (last == NULL || last[0] == '\0')
        last = r->last_id;
    stream *s = calloc(1, sizeof *s);
    if (s == NULL) {
        stream_discard(h, NULL);
        return MHD_NO;
    }
    pthread_mutex_init(&s->mu, NULL);
    bool gap = false;
    if (ihc_events_cursor_init(h->events, last, &s->cur, &gap) != IHC_OK) {
        stream_discard(h, s);
        char shown[HTTP_NAME_MAX + 1];
        sanitize_name(shown, sizeof shown, last);
        return refuse(h, conn, r, MHD_HTTP_BAD_REQUEST, NULL,
                      "Last-Event-ID '%s' is not an event id (<boot>-<seq>, or 0 for every "
                      "event held)",
                      shown);
    }
    s->h = h;
    s->conn = conn;
    s->last_write_ns = s->last_call_ns = ihc_mono_ns();
    char text[320];
    snprintf(text, sizeof text, "retry: %d\n\n", STREAM_RETRY_MS);
    bool ok = stream_out(s, text);
    if (gap) {
        char from[IHC_EVENTS_ID_MAX], first[IHC_EVENTS_ID_MAX];
        ihc_events_stats st;
        ihc_events_stats_get(h->events, &st);
        sanitize_name(from, sizeof from, last != NULL ? last : "");
        snprintf(text, sizeof text,
                 "event: gap\ndata: {\"last_event_id\":\"%s\",\"first_id\":\"%s\"}\n\n", from,
                 ihc_events_id(h->events, st.oldest ? st.oldest : st.newest + 1, first));
        ok = ok && stream_out(s, text);
    }
    struct MHD_Response *resp =
        ok ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_read, s,
                                               stream_done)
           : NULL;
    if (resp == NULL) {
        stream_discard(h, s);
        return MHD_NO;
    }
    /* from here on stream_done frees s, whatever happens to the response */
    pthread_mutex_lock(&h->conn_mu);
    s->next = h->streams;
    if (h->streams != NULL)
        h->streams->prev = s;
    h->streams = s;
    if (r->cc != NULL) {
        s->cc = r->cc;
        r->cc->stream = s;
        r->cc->state = CONN_STREAM;
        int sndbuf = STREAM_SNDBUF;
        setsockopt(r->cc->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    }
    pthread_mutex_unlock(&h->conn_mu);
    pthread_mutex_lock(&h->mu);
    pthread_cond_broadcast(&h->watch_cv); /* the watch thread now waits on events */
    pthread_mutex_unlock(&h->mu);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, CT_SSE);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* proxies: do not buffer */
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES)
        r->status = MHD_HTTP_OK;
    ihc_log(IHC_LOG_DEBUG, COMPONENT, "event stream opened gap=%s", gap ? "true" : "false");
    return ret;
}

/* Watch thread, under conn_mu: wakes suspended streams that have something to send (or are
 * due a ping, or must end), and cuts off streams that fell out of the history and are not
 * reading. */
static void watch_streams(ihc_http *h, uint64_t now, bool closing)
{
    size_t cut = 0;
    for (stream *s = h->streams; s != NULL; s = s->next) {
        pthread_mutex_lock(&s->mu);
        if (closing)
            s->closing = true;
        if (s->suspended) {
            if (now - s->last_write_ns >= STREAM_PING_NS)
                s->want_ping = true;
            if (s->closing || s->want_ping || ihc_events_pending(h->events, &s->cur)) {
                s->suspended = false;
                MHD_resume_connection(s->conn);
            }
        } else if (closing && s->cc != NULL && !s->cc->shut) {
            shutdown(s->cc->fd, SHUT_RDWR); /* a client not reading must not hold the stop */
            s->cc->shut = true;
        } else if (!s->end_after_out && now - s->last_call_ns >= STREAM_STALL_NS && s->cc != NULL &&
                   !s->cc->shut && ihc_events_behind(h->events, &s->cur)) {
            shutdown(s->cc->fd, SHUT_RDWR);
            s->cc->shut = true;
            s->end_after_out = true;
            atomic_fetch_add(&h->streams_overflowed, 1);
            cut++;
        }
        pthread_mutex_unlock(&s->mu);
    }
    uint64_t folded = 0;
    if (cut > 0) {
        h->overflow_log.unlogged += cut - 1;
        if (log_due(&h->overflow_log, &folded))
            ihc_log(IHC_LOG_WARN, COMPONENT,
                    "event stream client dropped: not reading, fell more than "
                    "IHC_EVENTS_HISTORY events behind (dropped=%" PRIu64 " since the last line)",
                    folded + 1);
    }
}

static void *watch_main(void *arg)
{
    ihc_http *h = arg;
    ihc_thread_name("ihc:http-watch");
    uint64_t seen = 0, next_sweep = 0;
    while (!atomic_load(&h->stop)) {
        pthread_mutex_lock(&h->conn_mu);
        bool streams = h->n_streams > 0;
        pthread_mutex_unlock(&h->conn_mu);
        if (streams) {
            ihc_events_wait(h->events, &seen, HTTP_WATCH_MS);
        } else { /* nothing to wake: the emitter need not signal anyone */
            pthread_mutex_lock(&h->mu);
            if (!atomic_load(&h->stop)) {
                struct timespec until =
                    ihc_mono_abstime(ihc_mono_ns() + HTTP_WATCH_MS * 1000000ull);
                pthread_cond_timedwait(&h->watch_cv, &h->mu, &until);
            }
            pthread_mutex_unlock(&h->mu);
        }
        uint64_t now = ihc_mono_ns();
        pthread_mutex_lock(&h->conn_mu);
        watch_streams(h, now, false);
        if (now >= next_sweep) {
            sweep_deadlines(h, now);
            next_sweep = now + HTTP_WATCH_MS * 1000000ull;
        }
        pthread_mutex_unlock(&h->conn_mu);
    }
    return NULL;
}

/* ---- the dashboard's files ---- */

static enum MHD_Result serve_asset(struct MHD_Connection *conn, http_req *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        r->asset->len, (void *)r->asset->data, MHD_RESPMEM_PERSISTENT);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->asset->content_type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "Content-Security-Policy", DASHBOARD_CSP);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    if (ret == MHD_YES)
        r->status = MHD_HTTP_OK;
    return ret;
}

/* The HTTP server's own lines of /metrics. */
static char *http_metrics(ihc_http *h)
{
    ihc_http_stats_view v = {0};
    pthread_mutex_lock(&h->conn_mu);
    v.conns = h->n_conns;
    v.streams = h->n_streams;
    pthread_mutex_unlock(&h->conn_mu);
    v.refused_max_conns = atomic_load(&h->refused_max_conns);
    v.refused_per_ip = atomic_load(&h->refused_per_ip);
    v.refused_streams = atomic_load(&h->refused_streams);
    v.deadline_closed = atomic_load(&h->deadline_closed);
    v.streams_overflowed = atomic_load(&h->streams_overflowed);
    ihc_events_stats st;
    ihc_events_stats_get(h->events, &st);
    v.events_emitted = st.emitted;
    v.events_held = st.held;
    return ihc_doc_metrics_http(&v);
}

static enum MHD_Result run_query(ihc_http *h, struct MHD_Connection *conn, http_req *r)
{
    char *body = NULL;
    int status = ihc_api_query(h->coord, r->rt->op, r->hw, &body);
    if (body == NULL) {
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        body = error_doc("internal error");
    }
    if (status < 100 || status > 599)
        status = MHD_HTTP_INTERNAL_SERVER_ERROR;
    bool text = r->rt->id == ROUTE_METRICS && status == MHD_HTTP_OK;
    if (text) {
        char *more = http_metrics(h);
        char *all = more != NULL ? malloc(strlen(body) + strlen(more) + 1) : NULL;
        if (all != NULL) {
            strcpy(all, body);
            strcat(all, more);
            free(body);
            body = all;
        }
        free(more);
    }
    return respond(conn, r, status, text ? CT_METRICS : CT_JSON, body, NULL);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    ihc_http *h = cls;
    http_req *r = *con_cls;
    if (r == NULL) {
        r = calloc(1, sizeof *r);
        if (r == NULL)
            return MHD_NO;
        *con_cls = r;
        r->t0_ns = ihc_mono_ns();
        r->cc = conn_of(conn);
        sanitize_name(r->method, sizeof r->method, method);
        sanitize_name(r->path, sizeof r->path, url);
        enum MHD_Result ret = MHD_YES;
        if (!admit(h, conn, r, url, method, &ret))
            return ret;
        return MHD_YES;
    }
    if (r->rt == NULL || r->status != 0) { /* already answered: ignore the rest */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        bool ok = take_body(h, r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        if (!ok) {
            ihc_api_count_rejected(h->coord);
            ihc_log(IHC_LOG_WARN, COMPONENT,
                    "dropping connection: body far over the limit path=%s max_body=%zu", r->path,
                    h->max_body);
        }
        return ok ? MHD_YES : MHD_NO;
    }
    if (r->p != NULL) /* resumed: the interrupt is done */
        return answer_pending(conn, r);
    conn_set(h, r->cc, CONN_BUSY); /* the whole request is in */
    if (r->too_big)
        return refuse(h, conn, r, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                      "request body exceeds the limit of %zu bytes", h->max_body);
    switch (r->rt->id) {
    case ROUTE_INTERRUPT:
        return start_interrupt(h, conn, r);
    case ROUTE_EVENTS:
        return start_stream(h, conn, r);
    case ROUTE_ASSET:
        return serve_asset(conn, r);
    default:
        return run_query(h, conn, r);
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    ihc_http *h = cls;
    http_req *r = *con_cls;
    /* answered: a kept-alive connection waits for its next request */
    conn_set(h, r != NULL ? r->cc : conn_of(conn), CONN_IDLE);
    if (r == NULL)
        return;
    *con_cls = NULL;
    if (ihc_log_enabled(IHC_LOG_DEBUG)) {
        double ms = (double)(ihc_mono_ns() - r->t0_ns) / 1e6;
        ihc_log(IHC_LOG_DEBUG, COMPONENT, "request method=%s path=%s status=%d time_ms=%.3f%s",
                r->method, r->path, r->status, ms,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted=true");
    }
    if (r->p != NULL) {
        pending *p = r->p;
        pending_list_remove(h, p);
        pthread_mutex_lock(&p->mu);
        p->conn = NULL;
        pthread_mutex_unlock(&p->mu);
        pending_unref(p);
    }
    free(r->body);
    free(r->hw);
    free(r->last_id);
    free(r);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    ihc_http *h = cls;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    snprintf(h->mhd_error, sizeof h->mhd_error, "%s", msg);
    /* Our accept policy refuses at IHC_HTTP_MAX_CONNS below the daemon's own limit, so this
     * message (the daemon closing a new connection) means the client address holds
     * IHC_HTTP_MAX_CONNS_PER_IP connections; it is the only sign libmicrohttpd gives. */
    if (strstr(msg, "reached connection limit") != NULL) {
        atomic_fetch_add(&h->refused_per_ip, 1);
        pthread_mutex_lock(&h->conn_mu);
        uint64_t folded = 0;
        bool log = log_due(&h->per_ip_log, &folded);
        pthread_mutex_unlock(&h->conn_mu);
        if (log)
            ihc_log(IHC_LOG_WARN, COMPONENT,
                    "connection refused: the client address holds IHC_HTTP_MAX_CONNS_PER_IP=%zu "
                    "connections (refused since the last line=%" PRIu64 ")",
                    h->per_ip, folded);
        return;
    }
    ihc_log(IHC_LOG_DEBUG, COMPONENT, "libmicrohttpd: %s", msg);
}

/* "host:port", "[v6]:port" or ":port" (all interfaces). */
static int parse_addr(const char *addr, struct sockaddr_storage *ss, bool *v6)
{
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon[1] == '\0')
        return IHC_EINVAL;
    char *end = NULL;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || port > 65535 || colon[1] == '-' || colon[1] == '+')
        return IHC_EINVAL;
    char host[256];
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host)
        return IHC_EINVAL;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    memset(ss, 0, sizeof *ss);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return IHC_EINVAL;
        *v6 = true;
        return IHC_OK;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *v6 = false;
    if (hl == 0 || strcmp(host, "*") == 0) {
        s4->sin_addr.s_addr = htonl(INADDR_ANY);
        return IHC_OK;
    }
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1)
        return IHC_OK;
    if (strspn(host, "0123456789.") == hl)
        return IHC_EINVAL; /* looks numeric but is not an address: no name lookup */
    /* a host name: its first address */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
        return IHC_EINVAL;
    if (res->ai_addrlen <= sizeof *ss)
        memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET6) {
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
        *v6 = true;
    } else {
        s4->sin_port = htons((uint16_t)port);
    }
    return IHC_OK;
}

/* Binds and listens on ss ourselves, so that a failure names the address and the reason
 * (libmicrohttpd reports a busy port as "Failed to bind to port 0"). Returns the socket or
 * -1 after logging. */
static int listen_socket(const struct sockaddr_storage *ss, bool v6, const char *addr)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot listen on %s: socket: %s", addr, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, HTTP_BACKLOG) != 0) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int ihc_http_open(ihc_http **out, ihc_coord *c, const ihc_config *cfg)
{
    if (out == NULL || cfg == NULL || cfg->http_addr == NULL)
        return IHC_EINVAL;
    *out = NULL;
    struct sockaddr_storage ss;
    bool v6 = false;
    if (parse_addr(cfg->http_addr, &ss, &v6) != IHC_OK) {
        ihc_log(IHC_LOG_ERROR, COMPONENT,
                "invalid HTTP address addr=\"%s\" (expected host:port, [v6addr]:port or :port)",
                cfg->http_addr);
        return IHC_EINVAL;
    }
    int lfd = listen_socket(&ss, v6, cfg->http_addr);
    if (lfd < 0)
        return IHC_EIO;
    ihc_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        close(lfd);
        return IHC_ENOMEM;
    }
    h->coord = c;
    h->events = ihc_api_events(c);
    h->max_body = cfg->http_max_body > 0 ? (size_t)cfg->http_max_body : 64 * 1024;
    h->max_conns =
        cfg->http_max_conns > 0 ? (size_t)cfg->http_max_conns : (size_t)IHC_DEFAULT_HTTP_MAX_CONNS;
    h->max_streams = cfg->http_max_streams >= 0 ? (size_t)cfg->http_max_streams : 0;
    h->per_ip = cfg->http_max_conns_per_ip > 0 ? (size_t)cfg->http_max_conns_per_ip
                                               : h->max_conns / IHC_HTTP_PER_IP_DIVISOR;
    if (h->per_ip == 0)
        h->per_ip = 1;
    h->deadline_ns =
        ihc_s_to_ns(cfg->http_request_deadline > 0 ? cfg->http_request_deadline
                                                   : IHC_DEFAULT_HTTP_REQUEST_DEADLINE_S);
    if (cfg->http_token != NULL && cfg->http_token[0] != '\0') {
        h->token = strdup(cfg->http_token);
        if (h->token == NULL) {
            close(lfd);
            free(h);
            return IHC_ENOMEM;
        }
        h->token_len = strlen(h->token);
    }
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->conn_mu, NULL);
    ihc_cond_init_mono(&h->drained);
    ihc_cond_init_mono(&h->watch_cv);
    atomic_init(&h->stop, false);
    ihc_fd_limit_raise(h->max_conns + h->max_streams, COMPONENT, "IHC_HTTP_MAX_CONNS");
    /* The daemon's own limit stays above ours (on_accept): at its limit libmicrohttpd stops
     * accepting and new clients would hang in the listen queue instead of being refused. */
    unsigned hard = (unsigned)(h->max_conns + h->max_streams + 1);
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     (v6 ? MHD_USE_IPv6 : 0);
    /* HTTPS with the coordinator's certificate (IHC_TLS_CERT); with IHC_TLS_CA, clients are
     * asked for theirs (checked in admit) */
    const char *cert = ihc_tls_cert_pem(cfg->tls), *trust = ihc_tls_ca_pem(cfg->tls);
    struct MHD_OptionItem tls_opts[] = {
        {MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)ihc_tls_key_pem(cfg->tls)},
        {MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cert},
        {trust ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, (void *)trust},
        {MHD_OPTION_END, 0, NULL},
    };
    if (cert != NULL) {
        flags |= MHD_USE_TLS;
        h->mutual = trust != NULL;
    } else {
        tls_opts[0].option = MHD_OPTION_END;
    }
    h->daemon = MHD_start_daemon(
        flags, 0, on_accept, h, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)lfd, MHD_OPTION_CONNECTION_LIMIT, hard,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)h->per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
        HTTP_IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection,
        h, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
    if (h->daemon == NULL) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot serve HTTP on %s: %s", cfg->http_addr,
                h->mhd_error[0] ? h->mhd_error : "libmicrohttpd failed to start");
        close(lfd);
        goto fail;
    }
    if (pthread_create(&h->watch, NULL, watch_main, h) != 0) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot start the HTTP watch thread");
        MHD_stop_daemon(h->daemon);
        goto fail;
    }
    h->watch_started = true;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info != NULL ? info->port : 0;
    ihc_log(IHC_LOG_INFO, COMPONENT,
            "listening addr=%s port=%d auth=%s max_conns=%zu max_conns_per_ip=%zu "
            "max_streams=%zu request_deadline_s=%.3g idle_timeout_s=%u https=%s",
            cfg->http_addr, h->port, h->token != NULL ? "bearer" : "none", h->max_conns, h->per_ip,
            h->max_streams, (double)h->deadline_ns / 1e9, HTTP_IDLE_TIMEOUT_S,
            cert == NULL ? "off"
            : h->mutual  ? "client-certificates"
                         : "on");
    *out = h;
    return IHC_OK;
fail:
    pthread_cond_destroy(&h->watch_cv);
    pthread_cond_destroy(&h->drained);
    pthread_mutex_destroy(&h->conn_mu);
    pthread_mutex_destroy(&h->mu);
    free(h->token);
    free(h);
    return IHC_EIO;
}

int ihc_http_port(const ihc_http *h)
{
    return h != NULL ? h->port : 0;
}

static bool streams_open(ihc_http *h)
{
    pthread_mutex_lock(&h->conn_mu);
    bool open = h->streams != NULL;
    pthread_mutex_unlock(&h->conn_mu);
    return open;
}

void ihc_http_close(ihc_http *h)
{
    if (h == NULL)
        return;
    MHD_socket lfd = MHD_quiesce_daemon(h->daemon);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
    /* the watch thread resumes connections and shuts sockets down: it goes first */
    atomic_store(&h->stop, true);
    pthread_mutex_lock(&h->mu);
    pthread_cond_broadcast(&h->watch_cv);
    pthread_mutex_unlock(&h->mu);
    ihc_events_kick(h->events);
    if (h->watch_started)
        pthread_join(h->watch, NULL);
    /* event streams end (none may stay suspended when the daemon stops) */
    pthread_mutex_lock(&h->conn_mu);
    watch_streams(h, ihc_mono_ns(), true);
    pthread_mutex_unlock(&h->conn_mu);
    /* Answer every interrupt still waiting, so that no connection stays suspended (MHD
     * refuses to stop with one) and late done callbacks find nothing to resume. The list is
     * copied (with references) so that no MHD call is made under h->mu. */
    pthread_mutex_lock(&h->mu);
    h->closing = true;
    size_t n = 0;
    for (pending *p = h->pending; p != NULL; p = p->next)
        n++;
    pending **all = n > 0 ? calloc(n, sizeof *all) : NULL;
    size_t k = 0;
    for (pending *p = h->pending; p != NULL && all != NULL; p = p->next) {
        pthread_mutex_lock(&p->mu);
        p->refs++;
        pthread_mutex_unlock(&p->mu);
        all[k++] = p;
    }
    pthread_mutex_unlock(&h->mu);
    if (n > 0 && all == NULL)
        ihc_log(IHC_LOG_ERROR, COMPONENT, "out of memory answering pending interrupts n=%zu", n);
    for (size_t i = 0; i < k; i++) {
        pending *p = all[i];
        pthread_mutex_lock(&p->mu);
        if (!p->done) {
            p->done = true;
            p->status = MHD_HTTP_SERVICE_UNAVAILABLE;
            p->json = error_doc("shutting down");
            if (p->suspended && !p->resumed && p->conn != NULL) {
                p->resumed = true;
                MHD_resume_connection(p->conn);
            }
        }
        pthread_mutex_unlock(&p->mu);
        pending_unref(p);
    }
    free(all);
    /* Stopping closes connections without writing what is queued: give the resumed ones a
     * moment to send their 503 first. */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += HTTP_DRAIN_S;
    pthread_mutex_lock(&h->mu);
    while ((h->pending != NULL || streams_open(h)) &&
           pthread_cond_timedwait(&h->drained, &h->mu, &until) == 0)
        ;
    pthread_mutex_unlock(&h->mu);
    MHD_stop_daemon(h->daemon);
    pthread_cond_destroy(&h->watch_cv);
    pthread_cond_destroy(&h->drained);
    pthread_mutex_destroy(&h->conn_mu);
    pthread_mutex_destroy(&h->mu);
    free(h->token);
    free(h);
}
