/* The agent's transport: the SUB and PUSH sockets, their pipe notifications, the receive
 * thread (batches of messages, then the owner's timers) and the send queue.
 *
 * Receiving: the thread sleeps in poll() on SUB's receive fd and an eventfd (wake-ups), with
 * the next timer as poll's timeout, and takes what arrived without blocking. A timed nng
 * receive instead wakes nng's expiry thread for every message (a sixth of an agent's CPU per
 * interrupt, measured), and waking it needs the aio cancelled.
 *
 * Sending: PUSH runs unbuffered (NNG_OPT_SENDBUF 0) and one nng_aio carries one message at a
 * time; the others wait in the transport's own queue. nng 1.5.2 leaks a message that push0
 * hands to a pipe whose send aio was closed (fixed upstream after 1.5.2: "SP pipe_send leaks
 * message if aio is canceled"), which happens when the socket closes while push0 still holds
 * queued messages for a live pipe. Kept here instead, nothing is left inside nng at close:
 * the queue is drained (bounded), the aio cancelled, its message taken back and freed. */
#include "transport.h"

#include "clock.h"
#include "err.h"
#include "log.h"
#include "thread.h"
#include "tls.h"
#include "wire.h"

#include <errno.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/sub.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define LOG_COMP         "agent"
#define RX_RETRY_MS      20   /* pause after a failed receive */
#define RX_IDLE_MAX_MS   1000 /* longest sleep of the receive thread */
#define RX_BATCH         64
#define RECONNECT_MIN_MS 50
#define RECONNECT_MAX_MS 1000
#define RECV_QUEUE       1024

struct ihc__txq {
    nng_msg *msg;
    bool report;
    struct ihc__txq *next;
};

/* ---- pipes ---- */

static void on_pipe(ihc__transport *t, bool sub, nng_pipe_ev ev)
{
    atomic_int *n = sub ? &t->sub_pipes : &t->push_pipes;
    bool up = ev == NNG_PIPE_EV_ADD_POST;
    atomic_fetch_add(n, up ? 1 : -1);
    /* not while closing: the owner is going away and the pipes go with it */
    if (!atomic_load(&t->stopping))
        t->ops.on_link(t->ops.ctx, sub, up);
}

/* Keeps the SUB connections' local endpoints, before the owner hears of the link (its hello
 * names them). */
static void note_sub_addr(ihc__transport *t, nng_pipe p, bool up)
{
    uint32_t id = (uint32_t)nng_pipe_id(p);
    char addr[IHC_SOCKADDR_STR_MAX];
    size_t n = up ? ihc_pipe_addr_str(p, true, addr, sizeof(addr)) : 0;
    pthread_mutex_lock(&t->addr_mu);
    for (size_t i = 0; i < t->n_sub_addr; i++)
        if (t->sub_addr[i].pipe == id) {
            t->sub_addr[i] = t->sub_addr[--t->n_sub_addr];
            break;
        }
    if (n > 0 && t->n_sub_addr < IHC__SUB_ADDRS_MAX) {
        t->sub_addr[t->n_sub_addr].pipe = id;
        memcpy(t->sub_addr[t->n_sub_addr].addr, addr, n + 1);
        t->n_sub_addr++;
    }
    pthread_mutex_unlock(&t->addr_mu);
}

void ihc__transport_subscribe(ihc__transport *t, const char *hw, bool on)
{
    char topic[IHC_TOPIC_MAX + 1];
    size_t tl = ihc_wire_topic_hw(topic, sizeof(topic), hw);
    if (!t->sub_open || tl == 0 || strcmp(hw, "*") == 0)
        return;
    int rv =
        nng_socket_set(t->sub, on ? NNG_OPT_SUB_SUBSCRIBE : NNG_OPT_SUB_UNSUBSCRIBE, topic, tl);
    if (rv != 0 && on)
        ihc_log(IHC_LOG_WARN, LOG_COMP, "cannot subscribe hw=%s err=\"%s\"", hw, nng_strerror(rv));
}

size_t ihc__transport_sub_addrs(ihc__transport *t, char (*out)[IHC_SOCKADDR_STR_MAX], size_t max)
{
    pthread_mutex_lock(&t->addr_mu);
    size_t n = t->n_sub_addr < max ? t->n_sub_addr : max;
    for (size_t i = 0; i < n; i++)
        memcpy(out[i], t->sub_addr[i].addr, sizeof(out[i]));
    pthread_mutex_unlock(&t->addr_mu);
    return n;
}

static void on_sub_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    note_sub_addr(arg, p, ev == NNG_PIPE_EV_ADD_POST);
    on_pipe(arg, true, ev);
}

static void on_push_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    on_pipe(arg, false, ev);
}

void ihc__transport_links(ihc__transport *t, int *sub, int *push)
{
    if (sub)
        *sub = atomic_load(&t->sub_pipes);
    if (push)
        *push = atomic_load(&t->push_pipes);
}

uint64_t ihc__transport_drops(ihc__transport *t)
{
    return atomic_load(&t->n_drops);
}

/* ---- sending ---- */

static void drop(ihc__transport *t, nng_msg *m)
{
    nng_msg_free(m);
    atomic_fetch_add(&t->n_drops, 1);
}

/* tx_mu held, aio idle: hands the next queued message to nng. */
static void tx_start_locked(ihc__transport *t)
{
    ihc__txq *q = t->tx_head;
    if (!q || t->tx_busy || t->tx_stop)
        return;
    t->tx_head = q->next;
    if (!t->tx_head)
        t->tx_tail = NULL;
    t->tx_n--;
    if (q->report)
        t->tx_reports--;
    t->tx_busy = true;
    nng_aio_set_msg(t->tx_aio, q->msg);
    free(q);
    /* completes at once when a pipe is idle, else when one becomes idle (or on cancel) */
    nng_send_aio(t->push, t->tx_aio);
}

static void tx_done(void *arg)
{
    ihc__transport *t = arg;
    int rv = nng_aio_result(t->tx_aio);
    if (rv != 0) {
        /* not sent: the message is ours again */
        nng_msg *m = nng_aio_get_msg(t->tx_aio);
        nng_aio_set_msg(t->tx_aio, NULL);
        if (m)
            drop(t, m);
        if (rv != NNG_ECANCELED && rv != NNG_ECLOSED)
            ihc_log(IHC_LOG_WARN, LOG_COMP, "send failed err=\"%s\"", nng_strerror(rv));
    }
    pthread_mutex_lock(&t->tx_mu);
    t->tx_busy = false;
    tx_start_locked(t);
    if (!t->tx_busy)
        pthread_cond_broadcast(&t->tx_cv);
    pthread_mutex_unlock(&t->tx_mu);
}

/* Queues m (the transport's from here on) and starts sending when idle. */
static void enqueue(ihc__transport *t, nng_msg *m, bool report, const char *what)
{
    ihc__txq *q = malloc(sizeof(*q));
    if (!q) {
        drop(t, m);
        ihc_log(IHC_LOG_ERROR, LOG_COMP, "%s dropped: out of memory", what);
        return;
    }
    q->msg = m;
    q->report = report;
    q->next = NULL;
    nng_msg *old = NULL;
    bool full = false;
    pthread_mutex_lock(&t->tx_mu);
    if (t->tx_stop) {
        full = true; /* closing: nothing more goes out */
    } else if (!report && t->tx_n >= IHC__TX_QUEUE_MAX) {
        full = true;
    } else if (report && t->tx_reports >= IHC__PENDING_MAX) {
        /* reports are what the coordinator waits for: the newest are worth more */
        for (ihc__txq **pp = &t->tx_head; *pp; pp = &(*pp)->next) {
            if ((*pp)->report) {
                ihc__txq *o = *pp;
                *pp = o->next;
                if (t->tx_tail == o) {
                    t->tx_tail = NULL;
                    for (ihc__txq *e = t->tx_head; e; e = e->next)
                        t->tx_tail = e;
                }
                old = o->msg;
                free(o);
                t->tx_n--;
                t->tx_reports--;
                break;
            }
        }
    }
    if (!full) {
        if (t->tx_tail)
            t->tx_tail->next = q;
        else
            t->tx_head = q;
        t->tx_tail = q;
        t->tx_n++;
        if (report)
            t->tx_reports++;
        tx_start_locked(t);
    }
    size_t queued = t->tx_n;
    pthread_mutex_unlock(&t->tx_mu);
    if (old) {
        drop(t, old);
        ihc_log(IHC_LOG_WARN, LOG_COMP, "report queue full: oldest report dropped max=%d",
                IHC__PENDING_MAX);
    }
    if (full) {
        free(q);
        drop(t, m);
        ihc_log(IHC_LOG_DEBUG, LOG_COMP, "message dropped type=%s queued=%zu", what, queued);
    } else if (queued > 0 && report) {
        ihc_log(IHC_LOG_DEBUG, LOG_COMP, "report queued pending=%zu", queued);
    }
}

static nng_msg *new_msg(ihc__transport *t, const uint8_t *buf, size_t len, const char *what)
{
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, len) != 0) {
        atomic_fetch_add(&t->n_drops, 1);
        ihc_log(IHC_LOG_ERROR, LOG_COMP, "%s dropped: out of memory", what);
        return NULL;
    }
    memcpy(nng_msg_body(m), buf, len);
    return m;
}

void ihc__transport_send(ihc__transport *t, uint8_t *buf, size_t len, const char *what)
{
    nng_msg *m = new_msg(t, buf, len, what);
    free(buf);
    if (m)
        enqueue(t, m, false, what);
}

void ihc__transport_send_report(ihc__transport *t, const uint8_t *buf, size_t len)
{
    nng_msg *m = new_msg(t, buf, len, "report");
    if (m)
        enqueue(t, m, true, "report");
}

/* ---- receiving ---- */

static bool is_interrupt_frame(nng_msg *msg)
{
    return nng_msg_len(msg) >= 3 && memcmp(nng_msg_body(msg), "hw:", 3) == 0;
}

static void deliver(ihc__transport *t, nng_msg *m, uint64_t t0)
{
    t->ops.on_frame(t->ops.ctx, nng_msg_body(m), nng_msg_len(m), t0);
    nng_msg_free(m);
}

static int wait_ms(uint64_t now, uint64_t due)
{
    if (due <= now)
        return 1;
    uint64_t ms = (due - now + 999999ull) / 1000000ull;
    return ms > RX_IDLE_MAX_MS ? RX_IDLE_MAX_MS : (int)ms;
}

static void *rx_main(void *arg)
{
    ihc__transport *t = arg;
    ihc_thread_priority(t->high_priority);
    nng_msg *batch[RX_BATCH];
    bool more = false; /* the last batch was full: look again before waiting */
    while (!atomic_load(&t->stopping)) {
        uint64_t now = ihc_mono_ns();
        uint64_t due = t->ops.on_timers(t->ops.ctx, now);
        if (!more) {
            struct pollfd pfd[2] = {{.fd = t->recv_fd, .events = POLLIN},
                                    {.fd = t->wake_fd, .events = POLLIN}};
            int rv = poll(pfd, 2, wait_ms(now, due));
            if (rv < 0 && errno != EINTR) {
                ihc_log(IHC_LOG_WARN, LOG_COMP, "poll failed err=\"%s\"", strerror(errno));
                ihc_sleep_ms(RX_RETRY_MS);
                continue;
            }
            if (rv > 0 && (pfd[1].revents & POLLIN)) {
                uint64_t v;
                ssize_t n = read(t->wake_fd, &v, sizeof(v));
                (void)n; /* a wake-up: the timers run at the top of the loop */
            }
            if (rv <= 0 || !(pfd[0].revents & POLLIN))
                continue;
        }
        uint64_t t0 = ihc_mono_ns();
        size_t n = 0;
        nng_msg *msg;
        int rv = 0;
        while (n < RX_BATCH && (rv = nng_recvmsg(t->sub, &msg, NNG_FLAG_NONBLOCK)) == 0)
            batch[n++] = msg;
        more = n == RX_BATCH;
        if (rv == NNG_ECLOSED)
            break;
        if (t->interrupts_first) {
            for (size_t i = 0; i < n; i++) {
                if (is_interrupt_frame(batch[i])) {
                    deliver(t, batch[i], t0);
                    batch[i] = NULL;
                }
            }
        }
        for (size_t i = 0; i < n; i++)
            if (batch[i])
                deliver(t, batch[i], t0);
    }
    return NULL;
}

void ihc__transport_wake(ihc__transport *t)
{
    /* not while closing: the receive thread is gone or going; the lock keeps the fd open for
     * the length of the write (fini closes it under the lock) */
    pthread_mutex_lock(&t->wake_mu);
    if (t->wake_fd >= 0 && !atomic_load(&t->stopping)) {
        uint64_t one = 1;
        ssize_t n = write(t->wake_fd, &one, sizeof(one));
        (void)n; /* EAGAIN: the counter is already non-zero, the thread will wake */
    }
    pthread_mutex_unlock(&t->wake_mu);
}

int ihc__transport_start(ihc__transport *t)
{
    if (pthread_create(&t->rx, NULL, rx_main, t) != 0)
        return IHC_ENOMEM;
    t->rx_started = true;
    return IHC_OK;
}

void ihc__transport_stop_rx(ihc__transport *t)
{
    if (!t->tx_init)
        return; /* never opened */
    pthread_mutex_lock(&t->wake_mu);
    atomic_store(&t->stopping, true);
    if (t->wake_fd >= 0) { /* the receive thread sees stopping now */
        uint64_t one = 1;
        ssize_t n = write(t->wake_fd, &one, sizeof(one));
        (void)n;
    }
    pthread_mutex_unlock(&t->wake_mu);
    if (t->rx_started)
        pthread_join(t->rx, NULL);
    t->rx_started = false;
}

/* ---- lifecycle ---- */

int ihc__transport_open(ihc__transport *t, const char *pub_url, const char *report_url,
                        const char *topic, size_t tlen)
{
    atomic_init(&t->sub_pipes, 0);
    atomic_init(&t->push_pipes, 0);
    atomic_init(&t->stopping, false);
    t->recv_fd = t->wake_fd = -1;
    atomic_init(&t->n_drops, 0);
    if (pthread_mutex_init(&t->tx_mu, NULL) != 0)
        return IHC_ENOMEM;
    if (pthread_mutex_init(&t->wake_mu, NULL) != 0) {
        pthread_mutex_destroy(&t->tx_mu);
        return IHC_ENOMEM;
    }
    if (pthread_mutex_init(&t->addr_mu, NULL) != 0) {
        pthread_mutex_destroy(&t->wake_mu);
        pthread_mutex_destroy(&t->tx_mu);
        return IHC_ENOMEM;
    }
    if (ihc_cond_init_mono(&t->tx_cv) != 0) {
        pthread_mutex_destroy(&t->addr_mu);
        pthread_mutex_destroy(&t->wake_mu);
        pthread_mutex_destroy(&t->tx_mu);
        return IHC_ENOMEM;
    }
    t->tx_init = true;
    int rv;
    if ((rv = nng_sub0_open(&t->sub)) != 0)
        goto fail;
    t->sub_open = true;
    if ((rv = nng_push0_open(&t->push)) != 0)
        goto fail;
    t->push_open = true;
    if ((rv = nng_socket_set_ms(t->sub, NNG_OPT_RECONNMINT, RECONNECT_MIN_MS)) != 0 ||
        (rv = nng_socket_set_ms(t->sub, NNG_OPT_RECONNMAXT, RECONNECT_MAX_MS)) != 0 ||
        (rv = nng_socket_set_ms(t->push, NNG_OPT_RECONNMINT, RECONNECT_MIN_MS)) != 0 ||
        (rv = nng_socket_set_ms(t->push, NNG_OPT_RECONNMAXT, RECONNECT_MAX_MS)) != 0 ||
        (rv = nng_socket_set_size(t->sub, NNG_OPT_RECVMAXSZ, IHC_WIRE_MAX_MSG + IHC_TOPIC_MAX)) !=
            0 ||
        (rv = nng_socket_set_int(t->sub, NNG_OPT_RECVBUF, RECV_QUEUE)) != 0 ||
        /* unbuffered: what waits, waits in txq (see the top of this file) */
        (rv = nng_socket_set_int(t->push, NNG_OPT_SENDBUF, 0)) != 0 ||
        /* global interrupts; each hardware_id the agent holds sessions of is added as it
         * comes (ihc__transport_subscribe), and re-sends addressed to the agent come on its
         * own topic, so nng drops everyone else's interrupts before the receive thread */
        (rv = nng_socket_set(t->sub, NNG_OPT_SUB_SUBSCRIBE, "hw:*", 5)) != 0 ||
        (rv = nng_socket_set(t->sub, NNG_OPT_SUB_SUBSCRIBE, topic, tlen)) != 0)
        goto fail;
    if ((rv = nng_aio_alloc(&t->tx_aio, tx_done, t)) != 0 ||
        (rv = nng_socket_get_int(t->sub, NNG_OPT_RECVFD, &t->recv_fd)) != 0)
        goto fail;
    if ((t->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        ihc_log(IHC_LOG_ERROR, LOG_COMP, "cannot create an eventfd err=\"%s\"", strerror(errno));
        return IHC_ENOMEM;
    }
    nng_aio_set_timeout(t->tx_aio, NNG_DURATION_INFINITE);
    if ((rv = nng_pipe_notify(t->sub, NNG_PIPE_EV_ADD_POST, on_sub_pipe, t)) != 0 ||
        (rv = nng_pipe_notify(t->sub, NNG_PIPE_EV_REM_POST, on_sub_pipe, t)) != 0 ||
        (rv = nng_pipe_notify(t->push, NNG_PIPE_EV_ADD_POST, on_push_pipe, t)) != 0 ||
        (rv = nng_pipe_notify(t->push, NNG_PIPE_EV_REM_POST, on_push_pipe, t)) != 0)
        goto fail;
    if ((rv = ihc_tls_dial(t->sub, pub_url, t->tls, NULL, NNG_FLAG_NONBLOCK)) != 0) {
        ihc_log(IHC_LOG_ERROR, LOG_COMP, "cannot dial pub_url=%s err=\"%s\"", pub_url,
                nng_strerror(rv));
        goto fail_url;
    }
    if ((rv = ihc_tls_dial(t->push, report_url, t->tls, NULL, NNG_FLAG_NONBLOCK)) != 0) {
        ihc_log(IHC_LOG_ERROR, LOG_COMP, "cannot dial report_url=%s err=\"%s\"", report_url,
                nng_strerror(rv));
        goto fail_url;
    }
    return IHC_OK;
fail_url:
    return rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP || rv == NNG_EINVAL ? IHC_EINVAL
                                                                         : IHC_ETRANSPORT;
fail:
    ihc_log(IHC_LOG_ERROR, LOG_COMP, "cannot set up sockets err=\"%s\"", nng_strerror(rv));
    return rv == NNG_ENOMEM ? IHC_ENOMEM : IHC_ETRANSPORT;
}

/* Waits up to timeout_ms for the queue to go out while the PUSH connection is up. */
static void drain(ihc__transport *t, int timeout_ms)
{
    uint64_t end = ihc_mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
    pthread_mutex_lock(&t->tx_mu);
    while ((t->tx_busy || t->tx_head) && atomic_load(&t->push_pipes) > 0 && ihc_mono_ns() < end) {
        /* bounded slices: a connection lost meanwhile ends the wait early */
        uint64_t slice = ihc_mono_ns() + 20000000ull;
        struct timespec ts = ihc_mono_abstime(slice < end ? slice : end);
        pthread_cond_timedwait(&t->tx_cv, &t->tx_mu, &ts);
    }
    pthread_mutex_unlock(&t->tx_mu);
}

void ihc__transport_fini(ihc__transport *t, int timeout_ms)
{
    if (!t->tx_init)
        return;
    ihc__transport_stop_rx(t);
    /* The receive side holds no aio (non-blocking receives, with no timeout for nng's expiry
     * thread to keep): nothing to free before the SUB socket closes. */
    pthread_mutex_lock(&t->wake_mu);
    if (t->wake_fd >= 0)
        close(t->wake_fd);
    t->wake_fd = -1;
    pthread_mutex_unlock(&t->wake_mu);
    if (t->tx_aio) {
        drain(t, timeout_ms);
        pthread_mutex_lock(&t->tx_mu);
        t->tx_stop = true;
        pthread_mutex_unlock(&t->tx_mu);
        /* a message still waiting for a pipe comes back to tx_done, which frees it */
        nng_aio_cancel(t->tx_aio);
        nng_aio_wait(t->tx_aio);
        nng_aio_free(t->tx_aio); /* before the PUSH socket, as above */
        t->tx_aio = NULL;
    }
    if (t->sub_open)
        nng_close(t->sub);
    if (t->push_open)
        nng_close(t->push);
    t->sub_open = t->push_open = false;
    while (t->tx_head) {
        ihc__txq *q = t->tx_head;
        t->tx_head = q->next;
        drop(t, q->msg);
        free(q);
    }
    t->tx_tail = NULL;
    t->tx_n = t->tx_reports = 0;
    pthread_cond_destroy(&t->tx_cv);
    pthread_mutex_destroy(&t->tx_mu);
    pthread_mutex_destroy(&t->wake_mu);
    pthread_mutex_destroy(&t->addr_mu);
    t->tx_init = false; /* a second call does nothing */
}
