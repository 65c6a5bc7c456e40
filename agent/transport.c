/* The agent's transport: the SUB socket (one dialer per coordinator) and the PUSH sockets (one
 * per coordinator), their pipe notifications, the receive thread (batches of messages, then
 * the owner's timers) and the send queues.
 *
 * Receiving: the thread sleeps in poll() on an eventfd, with the next timer as poll's
 * timeout, while a receive without a timeout is pending on SUB; the aio's callback (on nng's
 * thread that delivers the message, after SUB's lock is let go) writes the eventfd, and what
 * came meanwhile is then taken without blocking. A timed nng receive instead wakes nng's
 * expiry thread for every message (a sixth of an agent's CPU per interrupt, measured), and
 * SUB's pollable receive fd is raised under SUB's lock, which the woken thread then waits for.
 *
 * Several coordinators (a leader and standbys): every event goes to each of them, so that
 * standbys keep a warm registry; a report goes to the coordinator whose PUB connection
 * brought the interrupt (the SUB pipe's dialer names it).
 *
 * Sending: PUSH runs unbuffered (NNG_OPT_SENDBUF 0). A message goes to an idle pipe at once
 * with a non-blocking send when nothing of its coordinator waits or is in flight (no
 * completion for nng's task threads); otherwise one nng_aio per coordinator carries one
 * message at a time and the others wait in the transport's own queue. nng 1.5.2 leaks a message
 * that push0 hands to a pipe whose send aio was closed (fixed upstream after 1.5.2: "SP pipe_send
 * leaks message if aio is canceled"), which happens when the socket closes while push0 still holds
 * queued messages for a live pipe. Kept here instead, nothing is left inside nng at close:
 * the queue is drained (bounded), the aio cancelled, its message taken back and freed. */
#include "transport.h"

#include "clock.h"
#include "err.h"
#include "log.h"
#include "nbio.h"
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
#define RECONNECT_MIN_MS 50
#define RECONNECT_MAX_MS 1000
#define RECV_QUEUE       1024

struct ihc__txq {
    nng_msg *msg;
    bool report;
    struct ihc__txq *next;
};

/* ---- pipes ---- */

static void on_pipe(ihc__transport *t, atomic_int *link_n, bool sub, nng_pipe_ev ev)
{
    atomic_int *n = sub ? &t->sub_pipes : &t->push_pipes;
    bool up = ev == NNG_PIPE_EV_ADD_POST;
    if (link_n)
        atomic_fetch_add(link_n, up ? 1 : -1);
    atomic_fetch_add(n, up ? 1 : -1);
    /* not while closing: the owner is going away and the pipes go with it */
    if (!atomic_load(&t->stopping))
        t->ops.on_link(t->ops.ctx, sub, up);
}

/* The link whose dialer made SUB pipe p (ADD_POST only: the dialer is still there). */
static int link_of_dialer(ihc__transport *t, nng_pipe p)
{
    if (t->n_links == 1)
        return 0;
    int did = nng_dialer_id(nng_pipe_dialer(p));
    for (size_t i = 0; i < t->n_links; i++)
        if (nng_dialer_id(t->links[i].sub_dialer) == did)
            return (int)i;
    return -1;
}

/* Keeps each SUB connection's link and local endpoint, before the owner hears of the link
 * (its hello names the endpoints; the receive thread finds a message's link here). Returns
 * the pipe's link (-1: unknown). */
static int note_sub_pipe(ihc__transport *t, nng_pipe p, bool up)
{
    uint32_t id = (uint32_t)nng_pipe_id(p);
    char addr[IHC_SOCKADDR_STR_MAX] = "";
    int link = up ? link_of_dialer(t, p) : -1;
    if (up && ihc_pipe_addr_str(p, true, addr, sizeof(addr)) == 0)
        addr[0] = '\0';
    pthread_mutex_lock(&t->addr_mu);
    for (size_t i = 0; i < t->n_sub_addr; i++)
        if (t->sub_addr[i].pipe == id) {
            link = t->sub_addr[i].link;
            t->sub_addr[i] = t->sub_addr[--t->n_sub_addr];
            break;
        }
    if (up && t->n_sub_addr < IHC__SUB_ADDRS_MAX) {
        t->sub_addr[t->n_sub_addr].pipe = id;
        t->sub_addr[t->n_sub_addr].link = link;
        memcpy(t->sub_addr[t->n_sub_addr].addr, addr, sizeof(addr));
        t->n_sub_addr++;
    }
    pthread_mutex_unlock(&t->addr_mu);
    return link;
}

/* Receive thread: the link a message came from (0 with one coordinator). */
static int link_of_msg(ihc__transport *t, nng_msg *m)
{
    if (t->n_links == 1)
        return 0;
    uint32_t id = (uint32_t)nng_pipe_id(nng_msg_get_pipe(m));
    int link = -1;
    pthread_mutex_lock(&t->addr_mu);
    for (size_t i = 0; i < t->n_sub_addr; i++)
        if (t->sub_addr[i].pipe == id)
            link = t->sub_addr[i].link;
    pthread_mutex_unlock(&t->addr_mu);
    return link;
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
    size_t n = 0;
    for (size_t i = 0; i < t->n_sub_addr && n < max; i++)
        if (t->sub_addr[i].addr[0])
            memcpy(out[n++], t->sub_addr[i].addr, sizeof(out[0]));
    pthread_mutex_unlock(&t->addr_mu);
    return n;
}

static void on_sub_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    ihc__transport *t = arg;
    int link = note_sub_pipe(t, p, ev == NNG_PIPE_EV_ADD_POST);
    if (link >= 0 && ev == NNG_PIPE_EV_REM_POST)
        atomic_store(&t->links[link].report_begun, false);
    on_pipe(t, link >= 0 ? &t->links[link].sub_pipes : NULL, true, ev);
}

static void on_push_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    ihc__txlink *l = arg;
    if (ev == NNG_PIPE_EV_REM_POST)
        atomic_store(&l->report_begun, false);
    on_pipe(l->t, &l->push_pipes, false, ev);
}

bool ihc__transport_report_begun(ihc__transport *t, int link)
{
    return link >= 0 && (size_t)link < t->n_links && atomic_load(&t->links[link].report_begun);
}

void ihc__transport_set_report_begun(ihc__transport *t, int link, bool on)
{
    if (link >= 0 && (size_t)link < t->n_links)
        atomic_store(&t->links[link].report_begun, on);
}

void ihc__transport_links(ihc__transport *t, int *sub, int *push)
{
    if (sub)
        *sub = atomic_load(&t->sub_pipes);
    if (push)
        *push = atomic_load(&t->push_pipes);
}

void ihc__transport_link(ihc__transport *t, size_t link, int *sub, int *push)
{
    bool ok = link < t->n_links;
    if (sub)
        *sub = ok ? atomic_load(&t->links[link].sub_pipes) : 0;
    if (push)
        *push = ok ? atomic_load(&t->links[link].push_pipes) : 0;
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

/* tx_mu held, the link's aio idle: hands its next queued message to nng. */
static void tx_start_locked(ihc__txlink *l)
{
    ihc__txq *q = l->head;
    if (!q || l->busy || l->t->tx_stop)
        return;
    l->head = q->next;
    if (!l->head)
        l->tail = NULL;
    l->n--;
    if (q->report)
        l->reports--;
    l->busy = true;
    nng_aio_set_msg(l->aio, q->msg);
    free(q);
    /* completes at once when a pipe is idle, else when one becomes idle (or on cancel) */
    nng_send_aio(l->push, l->aio);
}

static void tx_done(void *arg)
{
    ihc__txlink *l = arg;
    ihc__transport *t = l->t;
    int rv = nng_aio_result(l->aio);
    if (rv != 0) {
        /* not sent: the message is ours again */
        nng_msg *m = nng_aio_get_msg(l->aio);
        nng_aio_set_msg(l->aio, NULL);
        if (m)
            drop(t, m);
        if (rv != NNG_ECANCELED && rv != NNG_ECLOSED)
            ihc_log(IHC_LOG_WARN, LOG_COMP, "send failed coordinator=%d err=\"%s\"", l->index,
                    nng_strerror(rv));
    }
    pthread_mutex_lock(&t->tx_mu);
    l->busy = false;
    tx_start_locked(l);
    if (!l->busy)
        pthread_cond_broadcast(&t->tx_cv);
    pthread_mutex_unlock(&t->tx_mu);
}

/* tx_mu held: takes the oldest queued report out of l's queue; returns its message. */
static nng_msg *take_oldest_report(ihc__txlink *l)
{
    for (ihc__txq **pp = &l->head; *pp; pp = &(*pp)->next) {
        if (!(*pp)->report)
            continue;
        ihc__txq *o = *pp;
        *pp = o->next;
        if (l->tail == o) {
            l->tail = NULL;
            for (ihc__txq *e = l->head; e; e = e->next)
                l->tail = e;
        }
        nng_msg *m = o->msg;
        free(o);
        l->n--;
        l->reports--;
        return m;
    }
    return NULL;
}

/* When nothing of l is queued or in flight, hands m to a PUSH pipe that is idle, at once and
 * in the calling thread: true when it took it (m is nng's then). An aio with a callback would
 * hand its completion to one of nng's task threads, a wake-up per message. */
static bool send_now(ihc__txlink *l, nng_msg *m)
{
    ihc__transport *t = l->t;
    pthread_mutex_lock(&t->tx_mu);
    bool sent = !t->tx_stop && !l->busy && !l->head && ihc_nb_send(l->push, t->now_aio, m) == 0;
    pthread_mutex_unlock(&t->tx_mu);
    return sent;
}

/* Queues m (the transport's from here on) on link l and starts sending when idle. */
static void enqueue(ihc__txlink *l, nng_msg *m, bool report, const char *what)
{
    ihc__transport *t = l->t;
    if (send_now(l, m))
        return;
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
    if (t->tx_stop)
        full = true; /* closing: nothing more goes out */
    else if (!report && l->n >= IHC__TX_QUEUE_MAX)
        full = true;
    else if (report && l->reports >= IHC__PENDING_MAX)
        old = take_oldest_report(l); /* reports are awaited: the newest are worth more */
    if (!full) {
        if (l->tail)
            l->tail->next = q;
        else
            l->head = q;
        l->tail = q;
        l->n++;
        if (report)
            l->reports++;
        tx_start_locked(l);
    }
    size_t queued = l->n;
    pthread_mutex_unlock(&t->tx_mu);
    if (old) {
        drop(t, old);
        ihc_log(IHC_LOG_WARN, LOG_COMP,
                "report queue full: oldest report dropped coordinator=%d max=%d", l->index,
                IHC__PENDING_MAX);
    }
    if (full) {
        free(q);
        drop(t, m);
        ihc_log(IHC_LOG_DEBUG, LOG_COMP, "message dropped type=%s coordinator=%d queued=%zu", what,
                l->index, queued);
    } else if (queued > 0 && report) {
        ihc_log(IHC_LOG_DEBUG, LOG_COMP, "report queued coordinator=%d pending=%zu", l->index,
                queued);
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

void ihc__transport_send_except(ihc__transport *t, uint8_t *buf, size_t len, const char *what,
                                int except)
{
    /* every coordinator hears every event: standbys keep a warm registry */
    for (size_t i = 0; i < t->n_links; i++) {
        if ((int)i == except)
            continue;
        nng_msg *m = new_msg(t, buf, len, what);
        if (m)
            enqueue(&t->links[i], m, false, what);
    }
    free(buf);
}

void ihc__transport_send(ihc__transport *t, uint8_t *buf, size_t len, const char *what)
{
    ihc__transport_send_except(t, buf, len, what, -1);
}

void ihc__transport_send_report(ihc__transport *t, const uint8_t *buf, size_t len, int link)
{
    /* the link is unknown only if a pipe outran its dialer's bookkeeping: then every
     * coordinator gets it (one that did not send the interrupt ignores the report) */
    size_t from = link >= 0 && (size_t)link < t->n_links ? (size_t)link : 0;
    size_t to = link >= 0 && (size_t)link < t->n_links ? from + 1 : t->n_links;
    for (size_t i = from; i < to; i++) {
        nng_msg *m = new_msg(t, buf, len, "report");
        if (m)
            enqueue(&t->links[i], m, true, "report");
    }
}

/* ---- receiving ---- */

static bool is_interrupt_frame(nng_msg *msg)
{
    return nng_msg_len(msg) >= 3 && memcmp(nng_msg_body(msg), "hw:", 3) == 0;
}

/* False when this thread lost the receive role during the call: t is not touched then. */
static bool deliver(ihc__transport *t, nng_msg *m, uint64_t t0)
{
    bool still_rx =
        t->ops.on_frame(t->ops.ctx, nng_msg_body(m), nng_msg_len(m), t0, link_of_msg(t, m));
    nng_msg_free(m);
    return still_rx;
}

static int wait_ms(uint64_t now, uint64_t due)
{
    if (due <= now)
        return 1;
    uint64_t ms = (due - now + 999999ull) / 1000000ull;
    return ms > RX_IDLE_MAX_MS ? RX_IDLE_MAX_MS : (int)ms;
}

/* nng's thread: the pending receive is done. */
static void on_arrival(void *arg)
{
    ihc__transport_wake(arg);
}

/* Takes what SUB holds into t->batch (interrupts first when asked: a stable partition): first
 * the pending receive's message, the oldest, if it came. False when the socket is closed. */
static bool take_batch(ihc__transport *t)
{
    nng_msg *got[IHC__RX_BATCH];
    size_t n = 0;
    nng_msg *msg;
    int rv = ihc_nb_waiter_take(&t->waiter, &msg);
    if (rv == NNG_ECLOSED)
        return false;
    if (rv == 0)
        got[n++] = msg;
    while (n < IHC__RX_BATCH && (rv = ihc_nb_recv(t->sub, t->rx_aio, &msg)) == 0)
        got[n++] = msg;
    t->more = n == IHC__RX_BATCH;
    t->bt0 = ihc_mono_ns();
    t->bi = t->bn = 0;
    for (size_t i = 0; i < n; i++)
        if (!t->interrupts_first || is_interrupt_frame(got[i]))
            t->batch[t->bn++] = got[i];
    if (t->interrupts_first)
        for (size_t i = 0; i < n; i++)
            if (!is_interrupt_frame(got[i]))
                t->batch[t->bn++] = got[i];
    return rv != NNG_ECLOSED;
}

/* Delivers the rest of the batch. False when this thread lost the receive role. */
static bool rx_deliver(ihc__transport *t)
{
    while (t->bi < t->bn) {
        nng_msg *m = t->batch[t->bi];
        t->batch[t->bi++] = NULL;
        if (!deliver(t, m, t->bt0))
            return false;
    }
    return true;
}

/* The receive loop, on whichever thread has the receive role; it begins with what a displaced
 * thread left of its batch. False when this thread lost the role (inside on_frame): it returns
 * at once, touching nothing. */
static bool rx_loop(ihc__transport *t)
{
    if (!rx_deliver(t))
        return false;
    while (!atomic_load(&t->stopping)) {
        uint64_t now = ihc_mono_ns();
        uint64_t due = t->ops.on_timers(t->ops.ctx, now);
        if (!t->more) {
            ihc_nb_waiter_arm(&t->waiter, t->sub);
            struct pollfd pfd = {.fd = t->wake_fd, .events = POLLIN};
            int rv = poll(&pfd, 1, wait_ms(now, due));
            if (rv < 0 && errno != EINTR) {
                ihc_log(IHC_LOG_WARN, LOG_COMP, "poll failed err=\"%s\"", strerror(errno));
                ihc_sleep_ms(RX_RETRY_MS);
                continue;
            }
            if (rv > 0) {
                uint64_t v;
                ssize_t n = read(t->wake_fd, &v, sizeof(v));
                (void)n; /* a wake-up or an arrival; the timers run at the top of the loop */
            }
            if (ihc_nb_waiter_pending(&t->waiter))
                continue;
        }
        if (!take_batch(t))
            break;
        if (!rx_deliver(t))
            return false;
    }
    return true;
}

/* The receive thread has ended its loop: ihc__transport_stop_rx may join it. */
static void rx_end(ihc__transport *t)
{
    pthread_mutex_lock(&t->wake_mu);
    t->rx_done = true;
    pthread_cond_broadcast(&t->rx_cv);
    pthread_mutex_unlock(&t->wake_mu);
}

static void *rx_main(void *arg)
{
    ihc__transport *t = arg;
    ihc_thread_name("ihc:rx");
    ihc_thread_priority(t->high_priority);
    if (rx_loop(t))
        rx_end(t);
    return NULL;
}

void ihc__transport_rx_resume(ihc__transport *t)
{
    ihc_thread_name("ihc:rx");
    pthread_mutex_lock(&t->wake_mu);
    pthread_detach(t->rx); /* displaced: it returns on its own, maybe much later */
    t->rx = pthread_self();
    bool stop = atomic_load(&t->stopping);
    pthread_mutex_unlock(&t->wake_mu);
    if (stop || rx_loop(t))
        rx_end(t);
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
    /* the thread that has the receive role when the loop ends says so; one that loses the
     * role meanwhile hands it on (rx_resume), so no join waits for a method that hangs */
    while (t->rx_started && !t->rx_done)
        pthread_cond_wait(&t->rx_cv, &t->wake_mu);
    pthread_t rx = t->rx;
    pthread_mutex_unlock(&t->wake_mu);
    if (t->rx_started)
        pthread_join(rx, NULL);
    t->rx_started = false;
}

/* ---- lifecycle ---- */

static int sock_fail(int rv)
{
    ihc_log(IHC_LOG_ERROR, LOG_COMP, "cannot set up sockets err=\"%s\"", nng_strerror(rv));
    return rv == NNG_ENOMEM ? IHC_ENOMEM : IHC_ETRANSPORT;
}

static int url_fail(const char *what, const char *url, int rv)
{
    ihc_log(IHC_LOG_ERROR, LOG_COMP, "cannot dial %s=%s err=\"%s\"", what, url, nng_strerror(rv));
    return rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP || rv == NNG_EINVAL ? IHC_EINVAL
                                                                         : IHC_ETRANSPORT;
}

/* The SUB socket: options, subscriptions, receive fd, pipe notifications. */
static int open_sub(ihc__transport *t, const char *topic, size_t tlen)
{
    int rv;
    if ((rv = nng_sub0_open(&t->sub)) != 0)
        return sock_fail(rv);
    t->sub_open = true;
    if ((rv = nng_socket_set_ms(t->sub, NNG_OPT_RECONNMINT, RECONNECT_MIN_MS)) != 0 ||
        (rv = nng_socket_set_ms(t->sub, NNG_OPT_RECONNMAXT, RECONNECT_MAX_MS)) != 0 ||
        (rv = nng_socket_set_size(t->sub, NNG_OPT_RECVMAXSZ, IHC_WIRE_MAX_MSG + IHC_TOPIC_MAX)) !=
            0 ||
        (rv = nng_socket_set_int(t->sub, NNG_OPT_RECVBUF, RECV_QUEUE)) != 0 ||
        /* global interrupts; each hardware_id the agent holds sessions of is added as it
         * comes (ihc__transport_subscribe), and re-sends addressed to the agent come on its
         * own topic, so nng drops everyone else's interrupts before the receive thread */
        (rv = nng_socket_set(t->sub, NNG_OPT_SUB_SUBSCRIBE, "hw:*", 5)) != 0 ||
        (rv = nng_socket_set(t->sub, NNG_OPT_SUB_SUBSCRIBE, topic, tlen)) != 0 ||
        (rv = nng_aio_alloc(&t->rx_aio, NULL, NULL)) != 0 ||
        (rv = ihc_nb_waiter_init(&t->waiter, on_arrival, t)) != 0 ||
        (rv = nng_pipe_notify(t->sub, NNG_PIPE_EV_ADD_POST, on_sub_pipe, t)) != 0 ||
        (rv = nng_pipe_notify(t->sub, NNG_PIPE_EV_REM_POST, on_sub_pipe, t)) != 0)
        return sock_fail(rv);
    return IHC_OK;
}

/* One coordinator's PUSH socket and its send aio. */
static int open_push(ihc__transport *t, ihc__txlink *l, int index)
{
    int rv;
    l->t = t;
    l->index = index;
    atomic_init(&l->sub_pipes, 0);
    atomic_init(&l->push_pipes, 0);
    if ((rv = nng_push0_open(&l->push)) != 0)
        return sock_fail(rv);
    l->push_open = true;
    if ((rv = nng_socket_set_ms(l->push, NNG_OPT_RECONNMINT, RECONNECT_MIN_MS)) != 0 ||
        (rv = nng_socket_set_ms(l->push, NNG_OPT_RECONNMAXT, RECONNECT_MAX_MS)) != 0 ||
        /* unbuffered: what waits, waits in the link's queue (see the top of this file) */
        (rv = nng_socket_set_int(l->push, NNG_OPT_SENDBUF, 0)) != 0 ||
        (rv = nng_aio_alloc(&l->aio, tx_done, l)) != 0 ||
        (rv = nng_pipe_notify(l->push, NNG_PIPE_EV_ADD_POST, on_push_pipe, l)) != 0 ||
        (rv = nng_pipe_notify(l->push, NNG_PIPE_EV_REM_POST, on_push_pipe, l)) != 0)
        return sock_fail(rv);
    nng_aio_set_timeout(l->aio, NNG_DURATION_INFINITE);
    return IHC_OK;
}

static int init_sync(ihc__transport *t)
{
    if (pthread_mutex_init(&t->tx_mu, NULL) != 0)
        return IHC_ENOMEM;
    if (pthread_mutex_init(&t->wake_mu, NULL) != 0)
        goto fail_wake;
    if (pthread_mutex_init(&t->addr_mu, NULL) != 0)
        goto fail_addr;
    if (ihc_cond_init_mono(&t->tx_cv) != 0)
        goto fail_cv;
    if (pthread_cond_init(&t->rx_cv, NULL) != 0)
        goto fail_rx_cv;
    t->tx_init = true;
    return IHC_OK;
fail_rx_cv:
    pthread_cond_destroy(&t->tx_cv);
fail_cv:
    pthread_mutex_destroy(&t->addr_mu);
fail_addr:
    pthread_mutex_destroy(&t->wake_mu);
fail_wake:
    pthread_mutex_destroy(&t->tx_mu);
    return IHC_ENOMEM;
}

int ihc__transport_open(ihc__transport *t, const char *pub_url, const char *report_url,
                        const char *topic, size_t tlen)
{
    atomic_init(&t->sub_pipes, 0);
    atomic_init(&t->push_pipes, 0);
    atomic_init(&t->stopping, false);
    t->wake_fd = -1;
    atomic_init(&t->n_drops, 0);
    ihc_url_list pubs, reports;
    char why[128];
    int rc = ihc_url_list_parse(&pubs, pub_url, why, sizeof(why));
    if (rc == IHC_OK && (rc = ihc_url_list_parse(&reports, report_url, why, sizeof(why))) != IHC_OK)
        ihc_url_list_fini(&pubs);
    if (rc != IHC_OK) {
        ihc_log(IHC_LOG_ERROR, LOG_COMP, "bad coordinator URL list pub=%s report=%s err=\"%s\"",
                pub_url, report_url, why);
        return rc;
    }
    if (pubs.n != reports.n) {
        ihc_log(IHC_LOG_ERROR, LOG_COMP,
                "pub_url names %zu coordinators but report_url names %zu: one of each per "
                "coordinator, in the same order",
                pubs.n, reports.n);
        rc = IHC_EINVAL;
        goto out;
    }
    if ((rc = init_sync(t)) != IHC_OK)
        goto out;
    if (nng_aio_alloc(&t->now_aio, NULL, NULL) != 0) {
        rc = IHC_ENOMEM;
        goto out;
    }
    if ((rc = open_sub(t, topic, tlen)) != IHC_OK)
        goto out;
    for (size_t i = 0; i < pubs.n; i++) {
        if ((rc = open_push(t, &t->links[i], (int)i)) != IHC_OK)
            goto out;
        t->n_links = i + 1;
    }
    if ((t->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        ihc_log(IHC_LOG_ERROR, LOG_COMP, "cannot create an eventfd err=\"%s\"", strerror(errno));
        rc = IHC_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < pubs.n; i++) {
        ihc__txlink *l = &t->links[i];
        int rv = ihc_tls_dial(t->sub, pubs.v[i], t->tls, &l->sub_dialer, NNG_FLAG_NONBLOCK);
        if (rv != 0) {
            rc = url_fail("pub_url", pubs.v[i], rv);
            goto out;
        }
        if ((rv = ihc_tls_dial(l->push, reports.v[i], t->tls, NULL, NNG_FLAG_NONBLOCK)) != 0) {
            rc = url_fail("report_url", reports.v[i], rv);
            goto out;
        }
    }
out:
    ihc_url_list_fini(&pubs);
    ihc_url_list_fini(&reports);
    return rc;
}

/* Waits up to timeout_ms for every queue to go out while its PUSH connection is up. */
static void drain(ihc__transport *t, int timeout_ms)
{
    uint64_t end = ihc_mono_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
    pthread_mutex_lock(&t->tx_mu);
    for (;;) {
        bool waiting = false;
        for (size_t i = 0; i < t->n_links; i++) {
            ihc__txlink *l = &t->links[i];
            waiting = waiting || ((l->busy || l->head) && atomic_load(&l->push_pipes) > 0);
        }
        if (!waiting || ihc_mono_ns() >= end)
            break;
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
    /* the receive role has ended: no thread uses the aios; the pending receive is cancelled
     * (its callback sees stopping and writes nothing) */
    ihc_nb_waiter_fini(&t->waiter);
    nng_aio_free(t->rx_aio);
    t->rx_aio = NULL;
    pthread_mutex_lock(&t->wake_mu);
    if (t->wake_fd >= 0)
        close(t->wake_fd);
    t->wake_fd = -1;
    pthread_mutex_unlock(&t->wake_mu);
    drain(t, timeout_ms);
    pthread_mutex_lock(&t->tx_mu);
    t->tx_stop = true;
    pthread_mutex_unlock(&t->tx_mu);
    for (size_t i = 0; i < IHC_URL_LIST_MAX; i++) {
        ihc__txlink *l = &t->links[i];
        if (!l->aio)
            continue;
        /* a message still waiting for a pipe comes back to tx_done, which frees it */
        nng_aio_cancel(l->aio);
        nng_aio_wait(l->aio);
        nng_aio_free(l->aio); /* before the PUSH socket, as above */
        l->aio = NULL;
    }
    nng_aio_free(t->now_aio); /* idle: tx_stop is set, so send_now no longer uses it */
    t->now_aio = NULL;
    if (t->sub_open)
        nng_close(t->sub);
    t->sub_open = false;
    for (size_t i = 0; i < IHC_URL_LIST_MAX; i++) {
        ihc__txlink *l = &t->links[i];
        if (l->push_open)
            nng_close(l->push);
        l->push_open = false;
        while (l->head) {
            ihc__txq *q = l->head;
            l->head = q->next;
            drop(t, q->msg);
            free(q);
        }
        l->tail = NULL;
        l->n = l->reports = 0;
    }
    while (t->bi < t->bn) /* left by a receive thread displaced as the transport stopped */
        nng_msg_free(t->batch[t->bi++]);
    pthread_cond_destroy(&t->rx_cv);
    pthread_cond_destroy(&t->tx_cv);
    pthread_mutex_destroy(&t->tx_mu);
    pthread_mutex_destroy(&t->wake_mu);
    pthread_mutex_destroy(&t->addr_mu);
    t->tx_init = false; /* a second call does nothing */
}
