/* libihc: the client side of the coordinators' control sockets (nng REQ, one context per
 * call so that one client serves many threads; one socket per coordinator of the list, tried
 * in turn while a request provably was not handled), the watch on their broadcast sockets
 * (nng SUB, topic "ev:"), and parsing of interrupt results. */
#include "ihc/client.h"

#include "clock.h"
#include "defaults.h"
#include "err.h"
#include "tls.h"
#include "urllist.h"
#include "wire.h"

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert(IHC_CLIENT_INTERRUPT_TIMEOUT_MAX_MS == IHC_INTERRUPT_TIMEOUT_MAX_MS,
               "the public limit is the coordinator's");

/* Added to an interrupt's own timeout: the coordinator answers when it gives up, and the
 * answer needs time to travel. */
#define CLIENT_MARGIN_MS 2000
#define CLIENT_ERR_MAX   512

/* ---- nng tunables: each socket option ihc sets, with why its value ---- */
/* REQ never re-sends a request on its own timer: the coordinator would run a re-sent
 * interrupt twice. Each call's own deadline bounds the wait instead. */
#define CLIENT_REQ_RESEND_MS NNG_DURATION_INFINITE
/* First redial 50 ms after a drop: a call waits only connect_timeout_ms (1 s by default). */
#define CLIENT_RECONNECT_MIN_MS 50
/* Backoff capped at 1 s, so a coordinator that comes back is found within one default
 * connect wait. */
#define CLIENT_RECONNECT_MAX_MS 1000
/* A watch waits for the coordinator as long as it takes: first redial after 100 ms... */
#define WATCH_RECONNECT_MIN_MS 100
/* ...then at least every 2 s, so a restarted coordinator's results show within 2 s. */
#define WATCH_RECONNECT_MAX_MS 2000
/* Results queued between two ihc_watch_next calls (SUB's default is 128): a burst of
 * interrupts finishing while the caller prints is kept, not dropped. */
#define WATCH_RECVBUF 1024
/* Both sockets: the wire's own cap (a frame over NNG_OPT_RECVMAXSZ closes the pipe). */
#define SOCK_RECV_MAX IHC_WIRE_MAX_MSG
/* A call that found no TLS connection asks why, for at most this long (ihc_tls_probe). */
#define TLS_PROBE_MAX_MS 2000

/* The public codes are the internal ones; keep them in step. */
_Static_assert(IHC_CLIENT_EINVAL == IHC_EINVAL, "code");
_Static_assert(IHC_CLIENT_ENOMEM == IHC_ENOMEM, "code");
_Static_assert(IHC_CLIENT_EPROTO == IHC_EPROTO, "code");
_Static_assert(IHC_CLIENT_ETOOBIG == IHC_ETOOBIG, "code");
_Static_assert(IHC_CLIENT_EBADHW == IHC_EBADHW, "code");
_Static_assert(IHC_CLIENT_EBADSIG == IHC_EBADSIG, "code");
_Static_assert(IHC_CLIENT_ENOTCONN == IHC_ENOTCONN, "code");
_Static_assert(IHC_CLIENT_ETIMEDOUT == IHC_ETIMEDOUT, "code");
_Static_assert(IHC_CLIENT_ELIMIT == IHC_ELIMIT, "code");
_Static_assert(IHC_CLIENT_ENOENT == IHC_ENOENT, "code");
_Static_assert(IHC_CLIENT_ETRANSPORT == IHC_ETRANSPORT, "code");
_Static_assert(IHC_CLIENT_ECLOSED == IHC_ECLOSED, "code");
_Static_assert(IHC_CLIENT_EDISABLED == IHC_EDISABLED, "code");
_Static_assert(IHC_CLIENT_EINTERNAL == IHC_EINTERNAL, "code");
_Static_assert(IHC_CLIENT_ENOTLEADER == IHC_ENOTLEADER, "code");

/* A call in progress on a socket: its aio, so that closing can cancel it. */
typedef struct call {
    nng_aio *aio;
    struct call *next;
} call;

/* A socket's connection, kept by nng's pipe callbacks (one dialer: at most one pipe), and
 * the calls in progress on it. */
typedef struct {
    pthread_mutex_t mu; /* guards everything below */
    pthread_cond_t cv;  /* on connect, and when the last call leaves a closing socket */
    bool connected;     /* pipes > 0 */
    int pipes;          /* a watch may dial several coordinators */
    call *calls;        /* in progress */
    bool closing;
} conn_state;

/* One coordinator of the control URL list. */
typedef struct {
    nng_socket sock;
    bool open;
    const char *url; /* into the client's list */
    conn_state conn;
} endpoint;

struct ihc_client {
    char *url; /* the list as given */
    ihc_url_list urls;
    endpoint ep[IHC_URL_LIST_MAX];
    size_t n_ep;
    atomic_size_t preferred; /* the last coordinator that answered: tried first */
    ihc_wire_auth *auth;
    ihc_tls *tls; /* tls+tcp:// */
    int timeout_ms;
    int connect_timeout_ms;
};

struct ihc_watch {
    nng_socket sock;
    char *url; /* the list as given: one SUB socket dials every coordinator of it */
    ihc_url_list urls;
    ihc_wire_auth *auth;
    ihc_tls *tls;
    conn_state conn;
    atomic_uint_least64_t dropped;
};

/* A socket option and the value ihc gives it (one of the tunables above). */
typedef enum { OPT_MS, OPT_SIZE, OPT_INT } opt_kind;
typedef struct {
    const char *name; /* NNG_OPT_* */
    opt_kind kind;
    int64_t value;
} sock_opt;

static const sock_opt client_opts[] = {
    {NNG_OPT_REQ_RESENDTIME, OPT_MS, CLIENT_REQ_RESEND_MS},
    {NNG_OPT_RECVMAXSZ, OPT_SIZE, SOCK_RECV_MAX},
    {NNG_OPT_RECONNMINT, OPT_MS, CLIENT_RECONNECT_MIN_MS},
    {NNG_OPT_RECONNMAXT, OPT_MS, CLIENT_RECONNECT_MAX_MS},
};

static const sock_opt watch_opts[] = {
    {NNG_OPT_RECVMAXSZ, OPT_SIZE, SOCK_RECV_MAX},
    {NNG_OPT_RECVBUF, OPT_INT, WATCH_RECVBUF},
    {NNG_OPT_RECONNMINT, OPT_MS, WATCH_RECONNECT_MIN_MS},
    {NNG_OPT_RECONNMAXT, OPT_MS, WATCH_RECONNECT_MAX_MS},
};

typedef struct {
    ihc_result pub; /* first: ihc_result * is a result_priv * */
    char *json;
    json_t *doc;
    const char **lists[5];
    ihc_module_outcome *mods;
} result_priv;

/* The calling thread's last error text and the client or watch it is about (NULL: an
 * open that failed). */
static _Thread_local const void *tl_owner;
static _Thread_local char tl_err[CLIENT_ERR_MAX];

static void set_err(const void *owner, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(const void *owner, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_err, sizeof tl_err, fmt, ap);
    va_end(ap);
    tl_owner = owner;
}

static void clear_err(const void *owner)
{
    tl_err[0] = '\0';
    tl_owner = owner;
}

static const char *last_error(const void *owner)
{
    return tl_owner == owner ? tl_err : "";
}

const char *ihc_client_last_error(const ihc_client *c)
{
    return last_error(c);
}

const char *ihc_watch_last_error(const ihc_watch *w)
{
    return last_error(w);
}

const char *ihc_client_strerror(int rc)
{
    return ihc_strerror(rc);
}

const char *ihc_client_url(const ihc_client *c)
{
    return c != NULL ? c->url : "";
}

static void conn_init(conn_state *cs)
{
    pthread_mutex_init(&cs->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cs->cv, &ca);
    pthread_condattr_destroy(&ca);
}

static void conn_fini(conn_state *cs)
{
    pthread_cond_destroy(&cs->cv);
    pthread_mutex_destroy(&cs->mu);
}

/* Registers a call and its aio; false once the socket is closing (the call must not start). */
static bool call_enter(conn_state *cs, call *k, nng_aio *aio)
{
    pthread_mutex_lock(&cs->mu);
    bool ok = !cs->closing;
    if (ok) {
        k->aio = aio;
        k->next = cs->calls;
        cs->calls = k;
    }
    pthread_mutex_unlock(&cs->mu);
    return ok;
}

/* After the call's aio (and context) are freed. */
static void call_leave(conn_state *cs, call *k)
{
    pthread_mutex_lock(&cs->mu);
    call **pp = &cs->calls;
    while (*pp != k)
        pp = &(*pp)->next;
    *pp = k->next;
    if (cs->calls == NULL && cs->closing)
        pthread_cond_broadcast(&cs->cv);
    pthread_mutex_unlock(&cs->mu);
}

/* Before the socket closes: no call starts any more, those in progress are cancelled and have
 * left. nng 1.5.2's expiry thread may run a timed aio's cancel function — which locks the
 * socket — after the aio completed; nng_aio_free waits for that, nng_close does not, so no
 * aio with a timeout may be alive when its socket closes. */
static void calls_end(conn_state *cs)
{
    pthread_mutex_lock(&cs->mu);
    cs->closing = true;
    for (call *k = cs->calls; k != NULL; k = k->next)
        nng_aio_cancel(k->aio);
    while (cs->calls != NULL)
        pthread_cond_wait(&cs->cv, &cs->mu);
    pthread_mutex_unlock(&cs->mu);
}

typedef enum { START_CTX_SEND, START_CTX_RECV, START_RECV } start_op;

/* Starts an operation of a registered call unless the socket is closing (then false). Under
 * the lock, so that calls_end's cancel cannot fall between the check and the start and leave
 * the operation waiting forever. The aios have no callback: nothing of ours runs inside. */
static bool call_start(conn_state *cs, start_op op, nng_ctx ctx, nng_socket sock, nng_aio *aio)
{
    pthread_mutex_lock(&cs->mu);
    bool ok = !cs->closing;
    if (ok && op == START_CTX_SEND)
        nng_ctx_send(ctx, aio);
    else if (ok && op == START_CTX_RECV)
        nng_ctx_recv(ctx, aio);
    else if (ok)
        nng_recv_aio(sock, aio);
    pthread_mutex_unlock(&cs->mu);
    return ok;
}

static bool conn_closing(conn_state *cs)
{
    pthread_mutex_lock(&cs->mu);
    bool closing = cs->closing;
    pthread_mutex_unlock(&cs->mu);
    return closing;
}

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    conn_state *cs = arg;
    pthread_mutex_lock(&cs->mu);
    (void)p;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        cs->pipes++;
        cs->connected = true;
        pthread_cond_broadcast(&cs->cv);
    } else if (ev == NNG_PIPE_EV_REM_POST && cs->pipes > 0) {
        cs->connected = --cs->pipes > 0;
    }
    pthread_mutex_unlock(&cs->mu);
}

static bool conn_is_up(const conn_state *cs)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&cs->mu; /* locking does not change the state */
    pthread_mutex_lock(mu);
    bool ok = cs->connected;
    pthread_mutex_unlock(mu);
    return ok;
}

/* Sets opts on s. On failure the caller's open fails: the text (ihc_client_last_error(NULL))
 * names the option. */
static int set_opts(nng_socket s, const sock_opt *opts, size_t n, const char *url)
{
    for (size_t i = 0; i < n; i++) {
        int rv;
        if (opts[i].kind == OPT_MS)
            rv = nng_socket_set_ms(s, opts[i].name, (nng_duration)opts[i].value);
        else if (opts[i].kind == OPT_SIZE)
            rv = nng_socket_set_size(s, opts[i].name, (size_t)opts[i].value);
        else
            rv = nng_socket_set_int(s, opts[i].name, (int)opts[i].value);
        if (rv != 0) {
            set_err(NULL, "socket for %s: cannot set option %s to %lld: %s", url, opts[i].name,
                    (long long)opts[i].value, nng_strerror(rv));
            return rv == NNG_ENOMEM ? IHC_ENOMEM : IHC_ETRANSPORT;
        }
    }
    return IHC_OK;
}

/* The TLS files for url, checked and loaded (*tls NULL when url is not tls+tcp:// and no file
 * is given). */
static int tls_for(const char *const *urls, size_t n, const char *ca, const char *cert,
                   const char *key, const char *name, ihc_tls **tls)
{
    *tls = NULL;
    ihc_tls_files f = {.cert = cert, .key = key, .ca = ca, .server_name = name};
    char err[CLIENT_ERR_MAX];
    if (!ihc_tls_urls_ok(&f, NULL, false, (const char **)urls, n, err, sizeof err)) {
        set_err(NULL, "%s", err);
        return IHC_EINVAL;
    }
    bool any = false;
    for (size_t i = 0; i < n; i++)
        any = any || ihc_tls_url(urls[i]);
    if (!any && !ca && !cert && !name)
        return IHC_OK;
    int rc = ihc_tls_load(tls, &f, NULL, err, sizeof err, NULL, 0);
    if (rc != IHC_OK)
        set_err(NULL, "%s", err);
    return rc == IHC_ECONFIG ? IHC_EINVAL : rc;
}

/* Follows s's connection in cs and starts dialling url in the background (with TLS for
 * tls+tcp://). */
static int dial(nng_socket s, const char *url, const ihc_tls *tls, conn_state *cs)
{
    int rv = nng_pipe_notify(s, NNG_PIPE_EV_ADD_POST, on_pipe, cs);
    if (rv == 0)
        rv = nng_pipe_notify(s, NNG_PIPE_EV_REM_POST, on_pipe, cs);
    if (rv != 0) {
        set_err(NULL, "socket for %s: cannot follow its connection: %s", url, nng_strerror(rv));
        return rv == NNG_ENOMEM ? IHC_ENOMEM : IHC_ETRANSPORT;
    }
    rv = ihc_tls_dial(s, url, tls, NULL, NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        set_err(NULL, "cannot dial '%s': %s", url, nng_strerror(rv));
        return (rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP || rv == NNG_EINVAL)
                   ? IHC_ETRANSPORT
                   : ihc_err_from_nng(rv);
    }
    return IHC_OK;
}

/* The auth context for an optional secret (*auth NULL without one). */
static int auth_for(const void *secret, size_t len, ihc_wire_auth **auth)
{
    *auth = NULL;
    if (secret == NULL || len == 0)
        return IHC_OK;
    int rc = ihc_wire_auth_new(auth, secret, len, 0);
    if (rc != IHC_OK)
        set_err(NULL, "cannot use the secret: %s", ihc_strerror(rc));
    return rc;
}

/* Splits list into l; on error the text names the problem (and the list). */
static int split_urls(const char *list, const char *what, ihc_url_list *l)
{
    char why[128];
    int rc = ihc_url_list_parse(l, list, why, sizeof why);
    if (rc == IHC_EINVAL)
        set_err(NULL, "%s '%.200s': %s", what, list, why);
    else if (rc != IHC_OK)
        set_err(NULL, "out of memory");
    return rc;
}

/* One coordinator's REQ socket, dialing in the background. */
static int endpoint_open(endpoint *e, const char *url, const ihc_tls *tls)
{
    e->url = url;
    conn_init(&e->conn);
    int rv = nng_req0_open(&e->sock);
    if (rv != 0) {
        set_err(NULL, "cannot open a REQ socket: %s", nng_strerror(rv));
        conn_fini(&e->conn);
        return ihc_err_from_nng(rv);
    }
    e->open = true;
    int rc = set_opts(e->sock, client_opts, sizeof client_opts / sizeof client_opts[0], url);
    if (rc == IHC_OK)
        rc = dial(e->sock, url, tls, &e->conn);
    return rc;
}

static void endpoint_close(endpoint *e)
{
    if (!e->open)
        return;
    calls_end(&e->conn); /* calls in progress fail with IHC_CLIENT_ECLOSED */
    nng_close(e->sock);
    conn_fini(&e->conn);
    e->open = false;
}

static void client_free(ihc_client *c)
{
    for (size_t i = 0; i < c->n_ep; i++)
        endpoint_close(&c->ep[i]);
    ihc_wire_auth_free(c->auth);
    ihc_tls_free(c->tls);
    ihc_url_list_fini(&c->urls);
    free(c->url);
    free(c);
}

int ihc_client_open(ihc_client **out, const ihc_client_opts *o)
{
    clear_err(NULL);
    if (out == NULL) {
        set_err(NULL, "out is NULL");
        return IHC_EINVAL;
    }
    *out = NULL;
    ihc_client_opts d = {0};
    if (o != NULL)
        d = *o;
    if (d.timeout_ms < 0 || d.connect_timeout_ms < 0) {
        set_err(NULL, "timeout_ms and connect_timeout_ms must not be negative");
        return IHC_EINVAL;
    }
    if (d.secret == NULL && d.secret_len > 0) {
        set_err(NULL, "secret_len is %zu but secret is NULL", d.secret_len);
        return IHC_EINVAL;
    }
    ihc_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        set_err(NULL, "out of memory");
        return IHC_ENOMEM;
    }
    atomic_init(&c->preferred, 0);
    c->url = strdup(d.control_url != NULL && d.control_url[0] != '\0' ? d.control_url
                                                                      : IHC_DEFAULT_CONTROL_URL);
    if (c->url == NULL) {
        free(c);
        set_err(NULL, "out of memory");
        return IHC_ENOMEM;
    }
    c->timeout_ms = d.timeout_ms > 0 ? d.timeout_ms : IHC_CLIENT_DEFAULT_TIMEOUT_MS;
    c->connect_timeout_ms =
        d.connect_timeout_ms > 0 ? d.connect_timeout_ms : IHC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS;
    int rc = split_urls(c->url, "control_url", &c->urls);
    if (rc == IHC_OK)
        rc = auth_for(d.secret, d.secret_len, &c->auth);
    if (rc == IHC_OK)
        rc = tls_for((const char *const *)c->urls.v, c->urls.n, d.tls_ca, d.tls_cert, d.tls_key,
                     d.tls_server_name, &c->tls);
    for (size_t i = 0; rc == IHC_OK && i < c->urls.n; i++) {
        rc = endpoint_open(&c->ep[i], c->urls.v[i], c->tls);
        if (c->ep[i].open)
            c->n_ep = i + 1;
    }
    if (rc != IHC_OK) {
        client_free(c);
        return rc;
    }
    *out = c;
    return IHC_OK;
}

void ihc_client_close(ihc_client *c)
{
    if (c == NULL)
        return;
    client_free(c);
}

static bool wait_connected(endpoint *e, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    conn_state *cs = &e->conn;
    pthread_mutex_lock(&cs->mu);
    while (!cs->connected) {
        if (pthread_cond_timedwait(&cs->cv, &cs->mu, &ts) != 0 && !cs->connected)
            break;
    }
    bool ok = cs->connected;
    pthread_mutex_unlock(&cs->mu);
    return ok;
}

static int from_status(int status)
{
    switch (status) {
    case 400:
        return IHC_EINVAL;
    case 401:
        return IHC_EBADSIG; /* the coordinator could not verify our signature */
    case 403:
        return IHC_EDISABLED;
    case 404:
        return IHC_ENOENT;
    case 413:
        return IHC_ETOOBIG;
    case 429:
    case 503:
        return IHC_ELIMIT;
    default:
        return status >= 500 ? IHC_EINTERNAL : IHC_EINVAL;
    }
}

/* Turns a non-2xx answer into a code and the coordinator's error text. */
static int refused(const ihc_client *c, int status, const char *json)
{
    const char *msg = NULL;
    json_t *doc = json != NULL ? json_loads(json, 0, NULL) : NULL;
    if (doc != NULL && json_is_string(json_object_get(doc, "error")))
        msg = json_string_value(json_object_get(doc, "error"));
    set_err(c, "coordinator refused the request (status %d): %s", status,
            msg != NULL ? msg : "no error text");
    json_decref(doc);
    return from_status(status);
}

/* Sends req to coordinator e and waits up to wait_ms for the control response; on success
 * *resp is the decoded message (caller frees with ihc_msg_free). *sent says whether the
 * request may have reached the coordinator (false: provably not handled, another may be
 * asked). connect_ms: how long to wait for a connection. */
static int roundtrip_one(ihc_client *c, endpoint *e, const ihc_msg *req, int wait_ms,
                         int connect_ms, ihc_msg **resp, bool *sent)
{
    *resp = NULL;
    *sent = false;
    uint64_t t0 = ihc_mono_ns();
    if (!wait_connected(e, connect_ms)) {
        set_err(c, "coordinator unreachable at %s (no connection within %d ms)", e->url,
                c->connect_timeout_ms);
        if (ihc_tls_url(e->url)) { /* nng only knows "Cryptographic error": ask why */
            char why[CLIENT_ERR_MAX - 128];
            int ms =
                c->connect_timeout_ms < TLS_PROBE_MAX_MS ? c->connect_timeout_ms : TLS_PROBE_MAX_MS;
            if (ihc_tls_probe(c->tls, e->url, IHC_SP_REQ, IHC_SP_REP, ms, why, sizeof why) ==
                IHC_ETRANSPORT)
                set_err(c, "coordinator unreachable at %s: TLS: %s", e->url, why);
        }
        return IHC_ENOTCONN;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = ihc_wire_encode(req, c->auth, &buf, &len);
    if (rc != IHC_OK) {
        set_err(c, "cannot encode the request: %s", ihc_strerror(rc));
        return rc;
    }
    nng_ctx ctx;
    nng_aio *aio = NULL;
    nng_msg *msg = NULL;
    call k;
    int rv = nng_aio_alloc(&aio, NULL, NULL);
    if (rv != 0) {
        free(buf);
        set_err(c, "%s", nng_strerror(rv));
        return ihc_err_from_nng(rv);
    }
    if (!call_enter(&e->conn, &k, aio)) {
        free(buf);
        nng_aio_free(aio);
        set_err(c, "the client is closed");
        return IHC_ECLOSED;
    }
    if ((rv = nng_ctx_open(&ctx, e->sock)) != 0) {
        free(buf);
        set_err(c, "cannot use the socket: %s", nng_strerror(rv));
        nng_aio_free(aio);
        call_leave(&e->conn, &k);
        return ihc_err_from_nng(rv);
    }
    if ((rv = nng_msg_alloc(&msg, 0)) != 0 || (rv = nng_msg_append(msg, buf, len)) != 0) {
        free(buf);
        rc = ihc_err_from_nng(rv);
        set_err(c, "%s", nng_strerror(rv));
        goto out;
    }
    free(buf);
    nng_aio_set_msg(aio, msg);
    nng_aio_set_timeout(aio, wait_ms);
    if (!call_start(&e->conn, START_CTX_SEND, ctx, e->sock, aio))
        goto closed; /* msg is still ours */
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0)
        goto nng_fail; /* msg is still ours: not sent */
    msg = NULL;
    *sent = true;
    int64_t left = (int64_t)wait_ms - (int64_t)((ihc_mono_ns() - t0) / 1000000u);
    nng_aio_set_timeout(aio, left > 1 ? (nng_duration)left : 1);
    if (!call_start(&e->conn, START_CTX_RECV, ctx, e->sock, aio))
        goto closed;
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0)
        goto nng_fail;
    msg = nng_aio_get_msg(aio);
    char detail[128] = "";
    ihc_msg *m = NULL;
    rc = ihc_wire_decode(nng_msg_body(msg), nng_msg_len(msg), c->auth, &m, detail, sizeof detail);
    if (rc != IHC_OK) {
        set_err(c, "bad answer from %s: %s%s%s", e->url, ihc_strerror(rc), detail[0] ? ": " : "",
                detail);
        if (rc == IHC_EREPLAY)
            rc = IHC_EBADSIG;
        else if (rc != IHC_EBADSIG && rc != IHC_ENOMEM)
            rc = IHC_EPROTO;
        goto out;
    }
    if (m->type != IHC_MSG_CONTROL_RESPONSE) {
        set_err(c, "bad answer from %s: a '%s' message instead of control_response", e->url,
                ihc_msg_type_name(m->type));
        ihc_msg_free(m);
        rc = IHC_EPROTO;
        goto out;
    }
    *resp = m;
    rc = IHC_OK;
    goto out;
nng_fail:
    if (rv == NNG_ETIMEDOUT) {
        if (conn_is_up(&e->conn)) {
            rc = IHC_ETIMEDOUT;
            set_err(c, "no answer from the coordinator at %s within %d ms", e->url, wait_ms);
        } else {
            rc = IHC_ENOTCONN;
            set_err(c, "connection to the coordinator at %s lost", e->url);
        }
    } else if (rv == NNG_ECANCELED && conn_closing(&e->conn)) {
        goto closed;
    } else {
        rc = ihc_err_from_nng(rv);
        set_err(c, "request to %s failed: %s", e->url, nng_strerror(rv));
    }
    goto out;
closed:
    rc = IHC_ECLOSED;
    set_err(c, "the client was closed during the request");
out:
    nng_msg_free(msg);
    nng_aio_free(aio); /* before the context and the socket: see calls_end */
    nng_ctx_close(ctx);
    call_leave(&e->conn, &k);
    return rc;
}

/* A standby's answer: status 503 with the JSON body {"code": "IHC_ENOTLEADER", "error": "...",
 * "leader": ..., ...} (the coordinator's ihc_doc_not_leader). Nothing was run: the next
 * coordinator may be asked. A 503 without that code (busy, shutting down) is not this. */
static bool is_not_leader(const ihc_msg *m)
{
    if (m->u.control_response.status != 503 || m->u.control_response.json == NULL)
        return false;
    json_t *doc = json_loads(m->u.control_response.json, 0, NULL);
    const char *code = json_string_value(json_object_get(doc, "code"));
    bool yes = code != NULL && strcmp(code, ihc_err_name(IHC_ENOTLEADER)) == 0;
    json_decref(doc);
    return yes;
}

/* The next coordinator to ask: from the preferred one on, the first untried one connected;
 * when none is, waits for one to connect until connect_end (monotonic ns), then gives the
 * first untried one (its call fails at once, saying why). -1: none left. */
static int next_endpoint(ihc_client *c, const bool *tried, uint64_t connect_end)
{
    size_t start = atomic_load(&c->preferred) % c->n_ep;
    for (;;) {
        int first = -1;
        for (size_t k = 0; k < c->n_ep; k++) {
            size_t i = (start + k) % c->n_ep;
            if (tried[i])
                continue;
            if (conn_is_up(&c->ep[i].conn))
                return (int)i;
            if (first < 0)
                first = (int)i;
        }
        if (first < 0 || c->n_ep == 1 || ihc_mono_ns() >= connect_end)
            return first; /* one coordinator: its call waits on its own connection */
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 2000000};
        nanosleep(&ts, NULL);
    }
}

/* Sends req to the coordinators of the list in turn until one handles it: the next is asked
 * only when the request provably was not handled (no connection, not sent, or a standby's
 * not-leader answer), or for a read-only query (retry) whatever happened. */
static int roundtrip(ihc_client *c, const ihc_msg *req, int wait_ms, bool retry, ihc_msg **resp)
{
    bool tried[IHC_URL_LIST_MAX] = {false};
    int rc = IHC_ENOTCONN, standbys = 0;
    char first_err[CLIENT_ERR_MAX] = "";
    uint64_t connect_end = ihc_mono_ns() + (uint64_t)c->connect_timeout_ms * 1000000u;
    for (;;) {
        int i = next_endpoint(c, tried, connect_end);
        if (i < 0)
            break;
        tried[i] = true;
        bool sent = false;
        int connect_ms = c->n_ep == 1 ? c->connect_timeout_ms : 0;
        rc = roundtrip_one(c, &c->ep[i], req, wait_ms, connect_ms, resp, &sent);
        if (rc == IHC_OK && is_not_leader(*resp)) {
            ihc_msg_free(*resp);
            *resp = NULL;
            standbys++;
            set_err(c, "coordinator at %s is a standby (not the leader)", c->ep[i].url);
            rc = IHC_ENOTLEADER;
        } else if (rc == IHC_OK) {
            atomic_store(&c->preferred, (size_t)i);
            return IHC_OK;
        } else if (rc == IHC_ECLOSED || rc == IHC_ENOMEM || (sent && !retry) ||
                   (rc != IHC_ENOTCONN && rc != IHC_ETIMEDOUT && rc != IHC_ETRANSPORT)) {
            return rc; /* may have been handled, or would fail anywhere */
        }
        if (c->n_ep > 1 && !first_err[0])
            snprintf(first_err, sizeof first_err, "%s", ihc_client_last_error(c));
    }
    if (c->n_ep > 1) {
        rc = standbys > 0 && rc != IHC_OK ? IHC_ENOTLEADER : rc;
        set_err(c, "no leader coordinator among the %zu of %s (%d standby): %s", c->n_ep, c->url,
                standbys, first_err);
    } else if (standbys > 0) {
        rc = IHC_ENOTLEADER;
    }
    return rc;
}

/* The response's JSON as a malloc'd string (decoded messages live in one arena). */
static char *copy_body(const ihc_msg *m)
{
    const char *j = m->u.control_response.json;
    return strdup(j != NULL ? j : "");
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static double jnum(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : 0.0;
}

static uint64_t juint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* A JSON array of strings as a const char * array pointing into the document. */
static int str_list(json_t *arr, const char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (arr == NULL || json_is_null(arr))
        return IHC_OK;
    if (!json_is_array(arr))
        return IHC_EPROTO;
    size_t cnt = json_array_size(arr);
    if (cnt == 0)
        return IHC_OK;
    const char **v = calloc(cnt, sizeof *v);
    if (v == NULL)
        return IHC_ENOMEM;
    for (size_t i = 0; i < cnt; i++) {
        json_t *e = json_array_get(arr, i);
        if (!json_is_string(e)) {
            free(v);
            return IHC_EPROTO;
        }
        v[i] = json_string_value(e);
    }
    *out = v;
    *n = cnt;
    return IHC_OK;
}

/* Parses an interrupt document; takes json. sent_ms: the message's timestamp. */
static int parse_result(char *json, int status, int64_t sent_ms, result_priv **out)
{
    *out = NULL;
    result_priv *r = calloc(1, sizeof *r);
    if (r == NULL) {
        free(json);
        return IHC_ENOMEM;
    }
    r->json = json;
    int rc = IHC_EPROTO;
    r->doc = json_loads(json, JSON_REJECT_DUPLICATES, NULL);
    if (r->doc == NULL || !json_is_object(r->doc) ||
        !json_is_boolean(json_object_get(r->doc, "success")))
        goto fail;
    ihc_result *p = &r->pub;
    json_t *d = r->doc;
    p->status = status;
    p->success = json_is_true(json_object_get(d, "success"));
    p->interrupt_id = juint(d, "interrupt_id");
    p->hardware_id = jstr(d, "hardware_id");
    p->epoch = juint(d, "epoch");
    p->reason = jstr(d, "reason");
    p->total_time_ms = jnum(d, "total_time_ms");
    p->persisted = json_is_true(json_object_get(d, "persisted"));
    p->error = jstr(d, "error");
    p->sent_ms = sent_ms;
    json_t *agents = json_object_get(d, "agents");
    if (agents != NULL && !json_is_object(agents))
        goto fail;
    struct {
        json_t *arr;
        const char *const **dst;
        size_t *n;
    } lists[5] = {
        {json_object_get(d, "interrupted_modules"), &p->interrupted_modules,
         &p->n_interrupted_modules},
        {json_object_get(d, "cleaned_sessions"), &p->cleaned_sessions, &p->n_cleaned_sessions},
        {json_object_get(agents, "expected"), &p->agents_expected, &p->n_agents_expected},
        {json_object_get(agents, "answered"), &p->agents_answered, &p->n_agents_answered},
        {json_object_get(agents, "missing"), &p->agents_missing, &p->n_agents_missing},
    };
    for (int i = 0; i < 5; i++) {
        if ((rc = str_list(lists[i].arr, &r->lists[i], lists[i].n)) != IHC_OK)
            goto fail;
        *lists[i].dst = (const char *const *)r->lists[i];
    }
    json_t *mods = json_object_get(d, "modules");
    if (json_is_array(mods) && json_array_size(mods) > 0) {
        size_t n = json_array_size(mods);
        r->mods = calloc(n, sizeof *r->mods);
        if (r->mods == NULL) {
            rc = IHC_ENOMEM;
            goto fail;
        }
        for (size_t i = 0; i < n; i++) {
            json_t *m = json_array_get(mods, i);
            if (!json_is_object(m)) {
                rc = IHC_EPROTO;
                goto fail;
            }
            r->mods[i].agent = jstr(m, "agent");
            r->mods[i].name = jstr(m, "name");
            r->mods[i].status = jstr(m, "status");
            r->mods[i].time_ms = jnum(m, "time_ms");
            r->mods[i].error = jstr(m, "error");
        }
        p->modules = r->mods;
        p->n_modules = n;
    }
    *out = r;
    return IHC_OK;
fail:
    ihc_result_free(&r->pub);
    return rc;
}

void ihc_result_free(ihc_result *res)
{
    if (res == NULL)
        return;
    result_priv *r = (result_priv *)res;
    for (int i = 0; i < 5; i++)
        free(r->lists[i]);
    free(r->mods);
    json_decref(r->doc);
    free(r->json);
    free(r);
}

const char *ihc_result_json(const ihc_result *res)
{
    return res != NULL ? ((const result_priv *)res)->json : "";
}

int ihc_client_interrupt(ihc_client *c, const char *hw, const char *reason, int timeout_ms,
                         ihc_result **out)
{
    if (out != NULL)
        *out = NULL;
    if (c == NULL || out == NULL || hw == NULL)
        return IHC_EINVAL;
    clear_err(c);
    if (!ihc_hw_valid(hw, strlen(hw), true)) {
        set_err(c, "invalid hardware_id (1-128 bytes of [A-Za-z0-9._:@-], or * for all)");
        return IHC_EBADHW;
    }
    if (reason != NULL && strlen(reason) > IHC_REASON_MAX) {
        set_err(c, "reason longer than %u bytes", IHC_REASON_MAX);
        return IHC_EINVAL;
    }
    if (timeout_ms < 0) {
        set_err(c, "timeout_ms must not be negative");
        return IHC_EINVAL;
    }
    ihc_msg req = {.type = IHC_MSG_CONTROL_REQUEST};
    req.u.control_request.op = "interrupt";
    req.u.control_request.hw = (char *)hw;
    req.u.control_request.reason = (char *)reason;
    req.u.control_request.timeout_ms = timeout_ms;
    int wait = (timeout_ms > 0 ? timeout_ms : c->timeout_ms) + CLIENT_MARGIN_MS;
    ihc_msg *m = NULL;
    int rc = roundtrip(c, &req, wait, false, &m);
    if (rc != IHC_OK)
        return rc;
    int status = m->u.control_response.status;
    int64_t sent_ms = m->ts_ms;
    char *json = copy_body(m);
    ihc_msg_free(m);
    if (json == NULL)
        return IHC_ENOMEM;
    if (status < 200 || status > 299) {
        rc = refused(c, status, json);
        free(json);
        return rc;
    }
    result_priv *r = NULL;
    rc = parse_result(json, status, sent_ms, &r);
    if (rc != IHC_OK) {
        set_err(c, "bad answer from %s: interrupt result is not the expected JSON document",
                c->url);
        return rc;
    }
    *out = &r->pub;
    return IHC_OK;
}

int ihc_client_query(ihc_client *c, const char *op, const char *hw, char **json)
{
    static const char *const ops[] = {"sessions", "agents", "flags", "flags_reset", "stats"};
    if (json != NULL)
        *json = NULL;
    if (c == NULL || op == NULL || json == NULL)
        return IHC_EINVAL;
    clear_err(c);
    bool known = false;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        known = known || strcmp(op, ops[i]) == 0;
    if (!known) {
        set_err(c, "unknown query '%.64s' (sessions, agents, flags, flags_reset, stats)", op);
        return IHC_EINVAL;
    }
    if (hw != NULL && strcmp(op, "sessions") != 0) {
        set_err(c, "query '%s' takes no hardware_id", op);
        return IHC_EINVAL;
    }
    if (hw != NULL && !ihc_hw_valid(hw, strlen(hw), false)) {
        set_err(c, "invalid hardware_id (1-128 bytes of [A-Za-z0-9._:@-])");
        return IHC_EBADHW;
    }
    ihc_msg req = {.type = IHC_MSG_CONTROL_REQUEST};
    req.u.control_request.op = (char *)op;
    req.u.control_request.hw = (char *)hw;
    ihc_msg *m = NULL;
    int rc = roundtrip(c, &req, c->timeout_ms, true, &m);
    if (rc != IHC_OK)
        return rc;
    int status = m->u.control_response.status;
    char *body = copy_body(m);
    ihc_msg_free(m);
    if (body == NULL)
        return IHC_ENOMEM;
    if (status < 200 || status > 299) {
        rc = refused(c, status, body);
        free(body);
        return rc;
    }
    if (body[0] == '\0') {
        free(body);
        set_err(c, "bad answer from %s: empty document", c->url);
        return IHC_EPROTO;
    }
    *json = body;
    return IHC_OK;
}

/* ---- watch ---------------------------------------------------------------------------------- */

int ihc_watch_open(ihc_watch **out, const ihc_watch_opts *o)
{
    clear_err(NULL);
    if (out == NULL) {
        set_err(NULL, "out is NULL");
        return IHC_EINVAL;
    }
    *out = NULL;
    ihc_watch_opts d = {0};
    if (o != NULL)
        d = *o;
    if (d.secret == NULL && d.secret_len > 0) {
        set_err(NULL, "secret_len is %zu but secret is NULL", d.secret_len);
        return IHC_EINVAL;
    }
    ihc_watch *w = calloc(1, sizeof *w);
    if (w == NULL) {
        set_err(NULL, "out of memory");
        return IHC_ENOMEM;
    }
    w->url = strdup(d.pub_url != NULL && d.pub_url[0] != '\0' ? d.pub_url : IHC_DEFAULT_PUB_URL);
    if (w->url == NULL) {
        free(w);
        set_err(NULL, "out of memory");
        return IHC_ENOMEM;
    }
    conn_init(&w->conn);
    atomic_init(&w->dropped, 0);
    int rc = split_urls(w->url, "pub_url", &w->urls);
    if (rc == IHC_OK)
        rc = auth_for(d.secret, d.secret_len, &w->auth);
    if (rc == IHC_OK)
        rc = tls_for((const char *const *)w->urls.v, w->urls.n, d.tls_ca, d.tls_cert, d.tls_key,
                     d.tls_server_name, &w->tls);
    if (rc != IHC_OK)
        goto fail;
    int rv = nng_sub0_open(&w->sock);
    if (rv != 0) {
        set_err(NULL, "cannot open a SUB socket: %s", nng_strerror(rv));
        rc = ihc_err_from_nng(rv);
        goto fail;
    }
    /* the topic with its NUL: "ev:" must not also match a longer topic */
    rv = nng_socket_set(w->sock, NNG_OPT_SUB_SUBSCRIBE, IHC_TOPIC_EVENTS, sizeof IHC_TOPIC_EVENTS);
    if (rv != 0) {
        set_err(NULL, "socket for %s: cannot subscribe to the event topic: %s", w->url,
                nng_strerror(rv));
        rc = rv == NNG_ENOMEM ? IHC_ENOMEM : IHC_ETRANSPORT;
    } else {
        rc = set_opts(w->sock, watch_opts, sizeof watch_opts / sizeof watch_opts[0], w->url);
    }
    for (size_t i = 0; rc == IHC_OK && i < w->urls.n; i++)
        rc = dial(w->sock, w->urls.v[i], w->tls, &w->conn);
    if (rc != IHC_OK) {
        nng_close(w->sock);
        goto fail;
    }
    *out = w;
    return IHC_OK;
fail:
    ihc_url_list_fini(&w->urls);
    ihc_wire_auth_free(w->auth);
    ihc_tls_free(w->tls);
    conn_fini(&w->conn);
    free(w->url);
    free(w);
    return rc;
}

void ihc_watch_close(ihc_watch *w)
{
    if (w == NULL)
        return;
    calls_end(&w->conn); /* the waits in ihc_watch_next end with IHC_CLIENT_ECLOSED */
    nng_close(w->sock);
    ihc_url_list_fini(&w->urls);
    ihc_wire_auth_free(w->auth);
    ihc_tls_free(w->tls);
    conn_fini(&w->conn);
    free(w->url);
    free(w);
}

bool ihc_watch_connected(const ihc_watch *w)
{
    return w != NULL && conn_is_up(&w->conn);
}

uint64_t ihc_watch_dropped(const ihc_watch *w)
{
    return w != NULL ? atomic_load(&((ihc_watch *)w)->dropped) : 0;
}

const char *ihc_watch_url(const ihc_watch *w)
{
    return w != NULL ? w->url : "";
}

/* One message from the topic as a result: IHC_OK and *out; IHC_EPROTO when it is not a valid
 * result (counted, the text says why; the caller goes on waiting); IHC_ENOMEM. Frees msg. */
static int watch_take(ihc_watch *w, nng_msg *msg, ihc_result **out)
{
    const char *topic;
    size_t tlen, blen;
    const uint8_t *body;
    ihc_msg *ev = NULL;
    char detail[128] = "";
    int rc = ihc_wire_split(nng_msg_body(msg), nng_msg_len(msg), &topic, &tlen, &body, &blen);
    if (rc != IHC_OK || tlen != sizeof IHC_TOPIC_EVENTS - 1 ||
        memcmp(topic, IHC_TOPIC_EVENTS, tlen) != 0) {
        set_err(w, "%s: not a message framed with the event topic", ihc_strerror(IHC_EPROTO));
        goto drop;
    }
    rc = ihc_wire_decode(body, blen, w->auth, &ev, detail, sizeof detail);
    if (rc == IHC_ENOMEM)
        goto out;
    if (rc != IHC_OK) {
        set_err(w, "%s%s%s", ihc_strerror(rc), detail[0] ? ": " : "", detail);
        goto drop;
    }
    if (ev->type != IHC_MSG_RESULT || ev->u.result.json == NULL) {
        set_err(w, "a '%s' message on the event topic, not a result", ihc_msg_type_name(ev->type));
        goto drop;
    }
    char *json = strdup(ev->u.result.json);
    if (json == NULL) {
        rc = IHC_ENOMEM;
        goto out;
    }
    result_priv *r = NULL;
    rc = parse_result(json, 200, ev->ts_ms, &r);
    if (rc == IHC_ENOMEM)
        goto out;
    if (rc != IHC_OK) {
        set_err(w, "a result that is not an interrupt document");
        goto drop;
    }
    *out = &r->pub;
    rc = IHC_OK;
    goto out;
drop:
    atomic_fetch_add(&w->dropped, 1);
    rc = IHC_EPROTO;
out:
    ihc_msg_free(ev);
    nng_msg_free(msg);
    return rc;
}

int ihc_watch_next(ihc_watch *w, int timeout_ms, ihc_result **out)
{
    if (out != NULL)
        *out = NULL;
    if (w == NULL || out == NULL)
        return IHC_EINVAL;
    clear_err(w);
    uint64_t end = ihc_mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000u;
    nng_aio *aio = NULL;
    int rv = nng_aio_alloc(&aio, NULL, NULL);
    if (rv != 0) {
        set_err(w, "out of memory");
        return ihc_err_from_nng(rv);
    }
    call k;
    if (!call_enter(&w->conn, &k, aio)) {
        nng_aio_free(aio);
        set_err(w, "the watch is closed");
        return IHC_ECLOSED;
    }
    int rc = IHC_EPROTO; /* stays IHC_EPROTO while messages are dropped */
    while (rc == IHC_EPROTO) {
        nng_duration left = NNG_DURATION_INFINITE;
        if (timeout_ms >= 0) {
            uint64_t now = ihc_mono_ns();
            /* 0: only what has already arrived (nng completes a zero timeout at once) */
            left = now < end ? (nng_duration)((end - now + 999999u) / 1000000u) : 0;
        }
        nng_aio_set_timeout(aio, left);
        rv = NNG_ECLOSED;
        if (call_start(&w->conn, START_RECV, (nng_ctx)NNG_CTX_INITIALIZER, w->sock, aio)) {
            nng_aio_wait(aio);
            rv = nng_aio_result(aio);
        }
        if (rv == 0) {
            rc = watch_take(w, nng_aio_get_msg(aio), out);
            nng_aio_set_msg(aio, NULL);
        } else if (rv == NNG_ETIMEDOUT) {
            rc = IHC_ETIMEDOUT;
            if (tl_err[0] == '\0')
                set_err(w, "no finished interrupt within %d ms", timeout_ms);
        } else if (rv == NNG_ECLOSED || (rv == NNG_ECANCELED && conn_closing(&w->conn))) {
            rc = IHC_ECLOSED;
            set_err(w, "the watch is closed");
        } else {
            rc = ihc_err_from_nng(rv);
            set_err(w, "receiving from %s failed: %s", w->url, nng_strerror(rv));
        }
    }
    if (rc == IHC_ENOMEM)
        set_err(w, "out of memory");
    nng_aio_free(aio); /* before the socket closes: see calls_end */
    call_leave(&w->conn, &k);
    return rc;
}
