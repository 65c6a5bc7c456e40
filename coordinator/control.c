/* Control socket: a fixed set of nng REP contexts, each a small state machine (receive,
 * wait for the API's answer, send). Nothing here blocks inside an aio callback: interrupts
 * and queries are handed to the coordinator loop, which calls back with the answer. */
#include "control.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "clock.h"
#include "api.h"
#include "docs.h"
#include "err.h"
#include "log.h"
#include "sockclose.h"
#include "tls.h"
#include "wire.h"

#define COMPONENT   "control"
#define N_WORKERS   64 /* contexts to start with, and to add when all are busy */
#define MAX_REQUEST (64 * 1024)

typedef enum { W_RECV, W_WAIT, W_SEND } wstate;

static void on_aio(void *arg);

typedef struct worker {
    struct ihc_control *ctl;
    nng_ctx ctx;
    nng_aio *aio;
    wstate state;
} worker;

struct ihc_control {
    ihc_coord *c;
    const ihc_config *cfg;
    ihc_wire_auth *auth;
    nng_socket sock;
    pthread_mutex_t grow_mu; /* guards w, n_workers, max_workers and closing transitions */
    worker **w;
    atomic_size_t n_workers;
    size_t max_workers; /* an interrupt waits in its context: as many as may be in flight */
    atomic_int busy;    /* workers waiting for an answer or sending it */
    atomic_bool closing;
};

static void start_recv(worker *w)
{
    w->state = W_RECV;
    nng_ctx_recv(w->ctx, w->aio);
}

/* Opens up to n more contexts and starts them receiving. Interrupts hold their context
 * until the coordinator answers, so when every context waits the pool grows instead of
 * leaving other clients queued behind slow interrupts. */
static int add_workers(ihc_control *ctl, size_t n)
{
    int rc = IHC_OK;
    pthread_mutex_lock(&ctl->grow_mu);
    size_t have = atomic_load(&ctl->n_workers), want = have + n;
    if (want > ctl->max_workers)
        want = ctl->max_workers;
    if (atomic_load(&ctl->closing) || want <= have)
        goto out;
    worker **nw = realloc(ctl->w, want * sizeof(*nw));
    if (!nw) {
        rc = IHC_ENOMEM;
        goto out;
    }
    ctl->w = nw;
    for (size_t i = have; i < want; i++) {
        worker *w = calloc(1, sizeof(*w));
        int rv;
        if (!w) {
            rc = IHC_ENOMEM;
            break;
        }
        w->ctl = ctl;
        if ((rv = nng_aio_alloc(&w->aio, on_aio, w)) != 0 ||
            (rv = nng_ctx_open(&w->ctx, ctl->sock)) != 0) {
            nng_aio_free(w->aio);
            free(w);
            rc = ihc_err_from_nng(rv);
            break;
        }
        ctl->w[i] = w;
        atomic_store(&ctl->n_workers, i + 1);
        start_recv(w);
    }
out:
    pthread_mutex_unlock(&ctl->grow_mu);
    return rc;
}

/* Sends status + json (owned, freed here) as a control_response. */
static void reply(worker *w, int status, char *json)
{
    ihc_msg m = {.type = IHC_MSG_CONTROL_RESPONSE};
    m.u.control_response.status = status;
    m.u.control_response.json = json ? json : "{\"error\":\"out of memory\"}";
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = ihc_wire_encode(&m, w->ctl->auth, &buf, &len);
    if (rc != IHC_OK) {
        ihc_log(IHC_LOG_WARN, COMPONENT, "cannot encode the answer status=%d: %s", status,
                ihc_strerror(rc));
        m.u.control_response.status = 500;
        m.u.control_response.json = rc == IHC_ETOOBIG
                                        ? "{\"error\":\"answer too large for the control socket\"}"
                                        : "{\"error\":\"cannot encode the answer\"}";
        rc = ihc_wire_encode(&m, w->ctl->auth, &buf, &len);
    }
    free(json);
    nng_msg *msg = NULL;
    if (rc != IHC_OK || nng_msg_alloc(&msg, len) != 0) {
        free(buf);
        atomic_fetch_sub(&w->ctl->busy, 1);
        start_recv(w); /* the client times out; nothing better to do without memory */
        return;
    }
    memcpy(nng_msg_body(msg), buf, len);
    free(buf);
    w->state = W_SEND;
    nng_aio_set_msg(w->aio, msg);
    nng_ctx_send(w->ctx, w->aio);
}

static void on_answer(int status, char *json, void *arg)
{
    reply(arg, status, json);
}

static void handle(worker *w, nng_msg *msg)
{
    ihc_control *ctl = w->ctl;
    ihc_msg *m = NULL;
    char detail[160] = "";
    int rc =
        ihc_wire_decode(nng_msg_body(msg), nng_msg_len(msg), ctl->auth, &m, detail, sizeof(detail));
    nng_msg_free(msg);
    w->state = W_WAIT;
    size_t busy = (size_t)atomic_fetch_add(&ctl->busy, 1) + 1;
    if (busy >= atomic_load(&ctl->n_workers) && add_workers(ctl, N_WORKERS) != IHC_OK)
        ihc_log(IHC_LOG_WARN, COMPONENT, "cannot add control contexts busy=%zu", busy);
    if (rc == IHC_OK && m->type != IHC_MSG_CONTROL_REQUEST) {
        rc = IHC_ETYPE;
        snprintf(detail, sizeof(detail), "expected a control_request, got %s",
                 ihc_msg_type_name(m->type));
    }
    if (rc != IHC_OK) {
        ihc_api_count_rejected(ctl->c);
        char text[256];
        bool auth = rc == IHC_EBADSIG || rc == IHC_EREPLAY;
        snprintf(text, sizeof(text), "%s%s%s", ihc_strerror(rc), detail[0] ? ": " : "", detail);
        ihc_log(IHC_LOG_WARN, COMPONENT, "request rejected err=%s detail=\"%s\"", ihc_err_name(rc),
                detail);
        ihc_msg_free(m);
        reply(w, auth ? 401 : 400, ihc_doc_error(text));
        return;
    }
    const ihc_control_request *r = &m->u.control_request;
    if (strcmp(r->op, "interrupt") == 0) {
        if (!r->hw) {
            ihc_api_count_rejected(ctl->c);
            reply(w, 400, ihc_doc_error("hardware_id: missing"));
        } else {
            ihc_api_interrupt(ctl->c, r->hw, r->reason, r->timeout_ms, on_answer, w);
        }
    } else {
        ihc_api_query_async(ctl->c, r->op, r->hw, on_answer, w);
    }
    ihc_msg_free(m);
}

static void on_aio(void *arg)
{
    worker *w = arg;
    int rv = nng_aio_result(w->aio);
    switch (w->state) {
    case W_RECV:
        if (rv != 0) {
            if (rv == NNG_ECLOSED || rv == NNG_ECANCELED || atomic_load(&w->ctl->closing))
                return;
            start_recv(w);
            return;
        }
        handle(w, nng_aio_get_msg(w->aio));
        return;
    case W_SEND:
        if (rv != 0)
            nng_msg_free(nng_aio_get_msg(w->aio));
        atomic_fetch_sub(&w->ctl->busy, 1);
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED || atomic_load(&w->ctl->closing))
            return;
        start_recv(w);
        return;
    case W_WAIT:
        return;
    }
}

int ihc_control_open(ihc_control **out, ihc_coord *c, const ihc_config *cfg)
{
    ihc_control *ctl = calloc(1, sizeof(*ctl));
    if (!ctl)
        return IHC_ENOMEM;
    ctl->c = c;
    ctl->cfg = cfg;
    atomic_init(&ctl->busy, 0);
    atomic_init(&ctl->closing, false);
    atomic_init(&ctl->n_workers, 0);
    pthread_mutex_init(&ctl->grow_mu, NULL);
    ctl->max_workers = (size_t)cfg->max_inflight + N_WORKERS;
    int rc = IHC_OK, rv;
    if (cfg->secret && cfg->secret_len &&
        (rc = ihc_wire_auth_new(&ctl->auth, cfg->secret, cfg->secret_len, 0)) != IHC_OK)
        goto fail;
    if ((rv = nng_rep0_open(&ctl->sock)) != 0) {
        rc = ihc_err_from_nng(rv);
        goto fail;
    }
    /* a larger frame closes the pipe instead of being buffered (nng's default is no limit) */
    if ((rv = nng_socket_set_size(ctl->sock, NNG_OPT_RECVMAXSZ, MAX_REQUEST)) != 0) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot set socket options: %s", nng_strerror(rv));
        rc = ihc_err_from_nng(rv);
        goto fail;
    }
    if ((rv = ihc_tls_listen(ctl->sock, cfg->control_url, cfg->tls, NULL)) != 0) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot listen control url=%s: %s", cfg->control_url,
                nng_strerror(rv));
        rc = IHC_ETRANSPORT;
        goto fail;
    }
    if ((rc = add_workers(ctl, N_WORKERS)) != IHC_OK)
        goto fail;
    *out = ctl;
    return IHC_OK;
fail:
    ihc_control_close(ctl);
    return rc;
}

void ihc_control_close(ihc_control *ctl)
{
    if (!ctl)
        return;
    /* answers of the interrupts the coordinator just finished are on their way out */
    uint64_t end = ihc_mono_ns() + 500ull * 1000000ull;
    while (atomic_load(&ctl->busy) > 0 && ihc_mono_ns() < end)
        ihc_sleep_ms(2);
    pthread_mutex_lock(&ctl->grow_mu); /* no context is added from here on */
    atomic_store(&ctl->closing, true);
    pthread_mutex_unlock(&ctl->grow_mu);
    size_t n = atomic_load(&ctl->n_workers);
    for (size_t i = 0; i < n; i++)
        nng_aio_stop(ctl->w[i]->aio);
    if (ihc_sock_close(ctl->sock, IHC_SOCK_CLOSE_MS, COMPONENT, "control") != IHC_OK) {
        ihc_sock_keep(ctl);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        nng_aio_free(ctl->w[i]->aio);
        free(ctl->w[i]);
    }
    free(ctl->w);
    pthread_mutex_destroy(&ctl->grow_mu);
    ihc_wire_auth_free(ctl->auth);
    free(ctl);
}
