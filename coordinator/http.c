/* The coordinator's HTTP/JSON API on libmicrohttpd: routing, authentication, request limits
 * and parsing; interrupts are answered asynchronously from suspended connections. */
#include "http.h"

#include "clock.h"
#include "docs.h"
#include "err.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
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

#define CT_JSON    "application/json"
#define CT_METRICS "text/plain; version=0.0.4; charset=utf-8"

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
} route_id;

typedef struct {
    const char *path;
    bool post; /* POST, else GET (and HEAD) */
    route_id id;
    const char *op; /* ihc_api_query op; NULL for the interrupt */
    bool takes_hw;  /* accepts ?hardware_id= */
    bool public_;   /* served without the bearer token */
} route;

static const route routes[] = {
    {"/v1/interrupt", true, ROUTE_INTERRUPT, NULL, false, false},
    {"/v1/sessions", false, ROUTE_SESSIONS, "sessions", true, false},
    {"/v1/agents", false, ROUTE_AGENTS, "agents", false, false},
    {"/v1/flags", false, ROUTE_FLAGS, "flags", false, false},
    {"/v1/flags/reset", true, ROUTE_FLAGS_RESET, "flags_reset", false, false},
    {"/v1/stats", false, ROUTE_STATS, "stats", false, false},
    {"/metrics", false, ROUTE_METRICS, "metrics", false, false},
    {"/healthz", false, ROUTE_HEALTH, "health", false, true},
};

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
    char *token;
    size_t token_len;
    size_t max_body;
    int port;
    pthread_mutex_t mu;     /* guards pending and closing */
    pthread_cond_t drained; /* signalled when a pending request completes */
    pending *pending;
    bool closing;
    char mhd_error[256]; /* last message from libmicrohttpd, for start-up failures */
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
    char *hw; /* sessions filter */
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

static bool authorized(const ihc_http *h, struct MHD_Connection *conn)
{
    const char *v =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
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

typedef struct {
    bool takes_hw;
    const char *hw;
    bool hw_nul; /* "%00" decoded inside the value: the C string would be cut short */
    int n_hw;
    char bad[HTTP_NAME_MAX + 1];
    bool has_bad;
} query_scan;

static enum MHD_Result scan_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    query_scan *q = cls;
    if (q->takes_hw && key != NULL && key_size == strlen("hardware_id") &&
        strcmp(key, "hardware_id") == 0) {
        q->n_hw++;
        q->hw = value;
        q->hw_nul = value != NULL && strlen(value) != value_size;
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
    const route *rt = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(url, routes[i].path) == 0) {
            rt = &routes[i];
            break;
        }
    }
    if (h->token != NULL && (rt == NULL || !rt->public_) && !authorized(h, conn)) {
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
    query_scan q = {.takes_hw = rt->takes_hw};
    MHD_get_connection_values_n(conn, MHD_GET_ARGUMENT_KIND, scan_arg, &q);
    if (q.has_bad) {
        *ret = refuse(h, conn, r, MHD_HTTP_BAD_REQUEST, NULL, "unknown query parameter '%s'%s",
                      q.bad, rt->takes_hw ? " (accepted: hardware_id)" : "");
        return false;
    }
    if (q.n_hw > 1) {
        *ret = refuse(h, conn, r, MHD_HTTP_BAD_REQUEST, NULL,
                      "query parameter 'hardware_id' given more than once");
        return false;
    }
    if (q.n_hw == 1) {
        if (q.hw == NULL || q.hw[0] == '\0' || q.hw_nul) {
            *ret = refuse(h, conn, r, MHD_HTTP_BAD_REQUEST, NULL,
                          q.hw_nul ? "query parameter 'hardware_id' contains a NUL byte (%%00)"
                                   : "query parameter 'hardware_id' is empty");
            return false;
        }
        r->hw = strdup(q.hw);
        if (r->hw == NULL) {
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

/* Validates the interrupt body. On success fills hw/reason/timeout (pointing into o). */
static bool parse_interrupt(json_t *o, const char **hw, const char **reason, int64_t *timeout,
                            char *err, size_t err_len)
{
    if (!json_is_object(o)) {
        snprintf(err, err_len, "request body must be a JSON object");
        return false;
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        if (strcmp(key, "hardware_id") != 0 && strcmp(key, "reason") != 0 &&
            strcmp(key, "timeout_ms") != 0) {
            char name[HTTP_NAME_MAX + 1];
            sanitize_name(name, sizeof name, key);
            snprintf(err, err_len, "unknown field '%s' (accepted: hardware_id, reason, timeout_ms)",
                     name);
            return false;
        }
    }
    json_t *jhw = json_object_get(o, "hardware_id");
    if (jhw == NULL) {
        snprintf(err, err_len, "hardware_id: required field missing");
        return false;
    }
    if (!json_is_string(jhw)) {
        snprintf(err, err_len, "hardware_id: must be a string");
        return false;
    }
    *hw = json_string_value(jhw);
    json_t *jr = json_object_get(o, "reason");
    *reason = NULL;
    if (jr != NULL && !json_is_null(jr)) {
        if (!json_is_string(jr)) {
            snprintf(err, err_len, "reason: must be a string");
            return false;
        }
        *reason = json_string_value(jr);
    }
    json_t *jt = json_object_get(o, "timeout_ms");
    *timeout = 0;
    if (jt != NULL && !json_is_null(jt)) {
        if (!json_is_integer(jt) || json_integer_value(jt) < 0) {
            snprintf(err, err_len,
                     "timeout_ms: must be a non-negative integer (milliseconds; 0 = default)");
            return false;
        }
        *timeout = json_integer_value(jt);
    }
    return true;
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
    if (r->len == 0)
        return refuse(h, conn, r, MHD_HTTP_BAD_REQUEST, NULL,
                      "request body is empty; expected a JSON object with hardware_id");
    json_error_t jerr;
    json_t *o = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (o == NULL)
        return refuse(h, conn, r, MHD_HTTP_BAD_REQUEST, NULL,
                      "malformed JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    const char *hw, *reason;
    int64_t timeout;
    char err[256];
    if (!parse_interrupt(o, &hw, &reason, &timeout, err, sizeof err)) {
        json_decref(o);
        return refuse(h, conn, r, MHD_HTTP_BAD_REQUEST, NULL, "%s", err);
    }

    pending *p = calloc(1, sizeof *p);
    if (p == NULL) {
        json_decref(o);
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
        json_decref(o);
        return respond(conn, r, MHD_HTTP_SERVICE_UNAVAILABLE, CT_JSON, error_doc("shutting down"),
                       NULL);
    }

    ihc_api_interrupt(h->coord, hw, reason, timeout, on_interrupt_done, p);
    json_decref(o);

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
    if (r->too_big)
        return refuse(h, conn, r, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
                      "request body exceeds the limit of %zu bytes", h->max_body);
    if (r->rt->id == ROUTE_INTERRUPT)
        return start_interrupt(h, conn, r);
    return run_query(h, conn, r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    ihc_http *h = cls;
    http_req *r = *con_cls;
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
    h->max_body = cfg->http_max_body > 0 ? (size_t)cfg->http_max_body : 64 * 1024;
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
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->drained, &ca);
    pthread_condattr_destroy(&ca);
    unsigned conns = cfg->http_max_conns > 0 ? (unsigned)cfg->http_max_conns : 256;
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
                     (v6 ? MHD_USE_IPv6 : 0);
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)lfd, MHD_OPTION_CONNECTION_LIMIT, conns,
        MHD_OPTION_CONNECTION_TIMEOUT, HTTP_IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HTTP_CONN_MEMORY, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
    if (h->daemon == NULL) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot serve HTTP on %s: %s", cfg->http_addr,
                h->mhd_error[0] ? h->mhd_error : "libmicrohttpd failed to start");
        close(lfd);
        pthread_cond_destroy(&h->drained);
        pthread_mutex_destroy(&h->mu);
        free(h->token);
        free(h);
        return IHC_EIO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info != NULL ? info->port : 0;
    ihc_log(IHC_LOG_INFO, COMPONENT, "listening addr=%s port=%d auth=%s max_conns=%u",
            cfg->http_addr, h->port, h->token != NULL ? "bearer" : "none", conns);
    *out = h;
    return IHC_OK;
}

int ihc_http_port(const ihc_http *h)
{
    return h != NULL ? h->port : 0;
}

void ihc_http_close(ihc_http *h)
{
    if (h == NULL)
        return;
    MHD_socket lfd = MHD_quiesce_daemon(h->daemon);
    if (lfd != MHD_INVALID_SOCKET)
        close(lfd);
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
    while (h->pending != NULL && pthread_cond_timedwait(&h->drained, &h->mu, &until) == 0)
        ;
    pthread_mutex_unlock(&h->mu);
    MHD_stop_daemon(h->daemon);
    pthread_cond_destroy(&h->drained);
    pthread_mutex_destroy(&h->mu);
    free(h->token);
    free(h);
}
