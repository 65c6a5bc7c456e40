/* libihc: the client side of the coordinator's control socket (nng REQ, one context per
 * call so that one client serves many threads), and parsing of interrupt results. */
#include "ihc/client.h"

#include "clock.h"
#include "defaults.h"
#include "err.h"
#include "wire.h"

#include <jansson.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Static_assert(IHC_CLIENT_INTERRUPT_TIMEOUT_MAX_MS == IHC_INTERRUPT_TIMEOUT_MAX_MS,
               "the public limit is the coordinator's");

#define CLIENT_DEFAULT_TIMEOUT_MS 10000
#define CLIENT_DEFAULT_CONNECT_MS 1000
/* Added to an interrupt's own timeout: the coordinator answers when it gives up, and the
 * answer needs time to travel. */
#define CLIENT_MARGIN_MS 2000
#define CLIENT_ERR_MAX   512

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
_Static_assert(IHC_CLIENT_EDISABLED == IHC_EDISABLED, "code");
_Static_assert(IHC_CLIENT_EINTERNAL == IHC_EINTERNAL, "code");

struct ihc_client {
    nng_socket sock;
    char *url;
    ihc_wire_auth *auth;
    int timeout_ms;
    int connect_timeout_ms;
    pthread_mutex_t mu; /* guards connected, pipe_id */
    pthread_cond_t cv;
    bool connected;
    uint32_t pipe_id;
};

typedef struct {
    ihc_result pub; /* first: ihc_result * is a result_priv * */
    char *json;
    json_t *doc;
    const char **lists[5];
    ihc_module_outcome *mods;
} result_priv;

static _Thread_local const ihc_client *tl_client;
static _Thread_local char tl_err[CLIENT_ERR_MAX];

static void set_err(const ihc_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_err(const ihc_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_err, sizeof tl_err, fmt, ap);
    va_end(ap);
    tl_client = c;
}

static void clear_err(const ihc_client *c)
{
    tl_err[0] = '\0';
    tl_client = c;
}

const char *ihc_client_last_error(const ihc_client *c)
{
    return (c != NULL && tl_client == c) ? tl_err : "";
}

const char *ihc_client_strerror(int rc)
{
    return ihc_strerror(rc);
}

const char *ihc_client_url(const ihc_client *c)
{
    return c != NULL ? c->url : "";
}

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    ihc_client *c = arg;
    pthread_mutex_lock(&c->mu);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        c->connected = true;
        c->pipe_id = nng_pipe_id(p);
        pthread_cond_broadcast(&c->cv);
    } else if (ev == NNG_PIPE_EV_REM_POST && c->pipe_id == (uint32_t)nng_pipe_id(p)) {
        c->connected = false;
    }
    pthread_mutex_unlock(&c->mu);
}

int ihc_client_open(ihc_client **out, const ihc_client_opts *o)
{
    if (out == NULL)
        return IHC_EINVAL;
    *out = NULL;
    ihc_client_opts d = {0};
    if (o != NULL)
        d = *o;
    if (d.timeout_ms < 0 || d.connect_timeout_ms < 0 || (d.secret == NULL && d.secret_len > 0))
        return IHC_EINVAL;
    ihc_client *c = calloc(1, sizeof *c);
    if (c == NULL)
        return IHC_ENOMEM;
    int rc = IHC_OK;
    c->url = strdup(d.control_url != NULL && d.control_url[0] != '\0' ? d.control_url
                                                                      : IHC_DEFAULT_CONTROL_URL);
    if (c->url == NULL) {
        free(c);
        return IHC_ENOMEM;
    }
    c->timeout_ms = d.timeout_ms > 0 ? d.timeout_ms : CLIENT_DEFAULT_TIMEOUT_MS;
    c->connect_timeout_ms =
        d.connect_timeout_ms > 0 ? d.connect_timeout_ms : CLIENT_DEFAULT_CONNECT_MS;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (d.secret != NULL && d.secret_len > 0) {
        rc = ihc_wire_auth_new(&c->auth, d.secret, d.secret_len, 0);
        if (rc != IHC_OK)
            goto fail_sync;
    }
    int rv = nng_req0_open(&c->sock);
    if (rv != 0) {
        rc = ihc_err_from_nng(rv);
        goto fail_sync;
    }
    /* One send per call: a request is never re-sent by REQ's timer (an interrupt would run
     * twice); the call's own deadline bounds the wait instead. */
    nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, IHC_WIRE_MAX_MSG);
    nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 50);
    nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 1000);
    nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, on_pipe, c);
    nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, on_pipe, c);
    rv = nng_dial(c->sock, c->url, NULL, NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        rc = (rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP || rv == NNG_EINVAL) ? IHC_ETRANSPORT
                                                                             : ihc_err_from_nng(rv);
        nng_close(c->sock);
        goto fail_sync;
    }
    *out = c;
    return IHC_OK;
fail_sync:
    ihc_wire_auth_free(c->auth);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c->url);
    free(c);
    return rc;
}

void ihc_client_close(ihc_client *c)
{
    if (c == NULL)
        return;
    nng_close(c->sock);
    ihc_wire_auth_free(c->auth);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c->url);
    free(c);
}

static bool wait_connected(ihc_client *c, int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->connected) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) != 0 && !c->connected)
            break;
    }
    bool ok = c->connected;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

static bool is_connected(ihc_client *c)
{
    pthread_mutex_lock(&c->mu);
    bool ok = c->connected;
    pthread_mutex_unlock(&c->mu);
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

/* Sends req and waits up to wait_ms for the control response; on success *resp is the
 * decoded message (caller frees with ihc_msg_free). */
static int roundtrip(ihc_client *c, const ihc_msg *req, int wait_ms, ihc_msg **resp)
{
    *resp = NULL;
    uint64_t t0 = ihc_mono_ns();
    if (!wait_connected(c, c->connect_timeout_ms)) {
        set_err(c, "coordinator unreachable at %s (no connection within %d ms)", c->url,
                c->connect_timeout_ms);
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
    int rv = nng_ctx_open(&ctx, c->sock);
    if (rv != 0) {
        free(buf);
        set_err(c, "cannot use the socket: %s", nng_strerror(rv));
        return ihc_err_from_nng(rv);
    }
    if ((rv = nng_aio_alloc(&aio, NULL, NULL)) != 0 || (rv = nng_msg_alloc(&msg, 0)) != 0 ||
        (rv = nng_msg_append(msg, buf, len)) != 0) {
        free(buf);
        rc = ihc_err_from_nng(rv);
        set_err(c, "%s", nng_strerror(rv));
        goto out;
    }
    free(buf);
    nng_aio_set_msg(aio, msg);
    nng_aio_set_timeout(aio, wait_ms);
    nng_ctx_send(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0)
        goto nng_fail; /* msg is still ours */
    msg = NULL;
    int64_t left = (int64_t)wait_ms - (int64_t)((ihc_mono_ns() - t0) / 1000000u);
    nng_aio_set_timeout(aio, left > 1 ? (nng_duration)left : 1);
    nng_ctx_recv(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0)
        goto nng_fail;
    msg = nng_aio_get_msg(aio);
    char detail[128] = "";
    ihc_msg *m = NULL;
    rc = ihc_wire_decode(nng_msg_body(msg), nng_msg_len(msg), c->auth, &m, detail, sizeof detail);
    if (rc != IHC_OK) {
        set_err(c, "bad answer from %s: %s%s%s", c->url, ihc_strerror(rc), detail[0] ? ": " : "",
                detail);
        if (rc == IHC_EREPLAY)
            rc = IHC_EBADSIG;
        else if (rc != IHC_EBADSIG && rc != IHC_ENOMEM)
            rc = IHC_EPROTO;
        goto out;
    }
    if (m->type != IHC_MSG_CONTROL_RESPONSE) {
        set_err(c, "bad answer from %s: a '%s' message instead of control_response", c->url,
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
        if (is_connected(c)) {
            rc = IHC_ETIMEDOUT;
            set_err(c, "no answer from the coordinator at %s within %d ms", c->url, wait_ms);
        } else {
            rc = IHC_ENOTCONN;
            set_err(c, "connection to the coordinator at %s lost", c->url);
        }
    } else {
        rc = ihc_err_from_nng(rv);
        set_err(c, "request to %s failed: %s", c->url, nng_strerror(rv));
    }
out:
    nng_msg_free(msg);
    nng_aio_free(aio);
    nng_ctx_close(ctx);
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

/* Parses an interrupt document; takes json. */
static int parse_result(char *json, int status, result_priv **out)
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
    int rc = roundtrip(c, &req, wait, &m);
    if (rc != IHC_OK)
        return rc;
    int status = m->u.control_response.status;
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
    rc = parse_result(json, status, &r);
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
    int rc = roundtrip(c, &req, c->timeout_ms, &m);
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
