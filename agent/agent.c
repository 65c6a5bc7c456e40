/* The agent object: options, the two nng connections to the coordinator (SUB for broadcasts,
 * PUSH for reports and events), the receive thread that dispatches messages and runs the
 * timers (hello until synced, heartbeats, reaping), and the non-blocking send helpers. */
#include "agent_int.h"

#include "clock.h"
#include "defaults.h"

#include <errno.h>
#include <math.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/pubsub0/sub.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RX_TIMEOUT_MS         20   /* hello delay, pause after a failed receive */
#define RX_IDLE_MAX_MS        1000 /* longest sleep of the receive thread */
#define HELLO_RETRY_NS        1000000000ull
#define TICK_NS               50000000ull
#define RX_BATCH              64
#define CLOSE_GEN_DEADLINE_MS 500

/* ---- small shared helpers ---- */

uint64_t ihc__now_ns(void)
{
    return ihc_mono_ns();
}

struct timespec ihc__abstime(uint64_t mono_ns)
{
    if (mono_ns > (uint64_t)INT64_MAX / 2)
        mono_ns = (uint64_t)INT64_MAX / 2;
    struct timespec ts = {.tv_sec = (time_t)(mono_ns / 1000000000ull),
                          .tv_nsec = (long)(mono_ns % 1000000000ull)};
    return ts;
}

int ihc__cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t at;
    if (pthread_condattr_init(&at) != 0)
        return -1;
    pthread_condattr_setclock(&at, CLOCK_MONOTONIC);
    int rv = pthread_cond_init(cv, &at);
    pthread_condattr_destroy(&at);
    return rv;
}

void ihc__thread_priority(bool high)
{
    if (!high)
        return;
    /* per-thread nice on Linux; without CAP_SYS_NICE this fails and is fine to ignore */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), -10) != 0)
        ihc_log(IHC_LOG_DEBUG, IHC__LOG, "thread priority not raised err=\"%s\"", strerror(errno));
}

/* ---- options ---- */

void ihc_agent_opts_init(ihc_agent_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->max_active_sessions = IHC_DEFAULT_MAX_ACTIVE_SESSIONS;
    o->session_timeout = IHC_DEFAULT_SESSION_TIMEOUT_S;
    o->session_cleanup_delay = IHC_DEFAULT_SESSION_CLEANUP_DELAY_S;
    o->heartbeat_interval = IHC_DEFAULT_HEARTBEAT_INTERVAL_S;
    o->default_module_timeout = IHC_DEFAULT_MODULE_TIMEOUT_S;
    o->kill_grace = IHC_DEFAULT_KILL_GRACE_S;
    o->cleanup_on_interrupt = true;
    o->force_cleanup = true;
    o->high_priority = true;
}

static bool bad_seconds(double v)
{
    return !isfinite(v) || v < 0 || v > 86400.0 * 365;
}

/* A duration that must be positive: 0 would make a timer spin or expire everything. */
static bool bad_positive_seconds(double v)
{
    return bad_seconds(v) || v == 0;
}

/* ---- sending ---- */

void ihc__send_encoded(ihc_agent *a, uint8_t *buf, size_t len, const char *what)
{
    int rv = nng_send(a->push, buf, len, NNG_FLAG_NONBLOCK);
    if (rv != 0) {
        atomic_fetch_add(&a->n_drops, 1);
        ihc_log(IHC_LOG_DEBUG, IHC__LOG, "message dropped type=%s err=\"%s\"", what,
                nng_strerror(rv));
    }
    free(buf);
}

/* Sends queued reports in order until one cannot go. Receive thread only. */
static void flush_pending(ihc_agent *a)
{
    while (a->pend_head) {
        ihc__pending *p = a->pend_head;
        if (nng_send(a->push, p->buf, p->len, NNG_FLAG_NONBLOCK) != 0)
            return;
        a->pend_head = p->next;
        if (!a->pend_head)
            a->pend_tail = NULL;
        a->n_pending--;
        free(p->buf);
        free(p);
    }
}

void ihc__send_report_buf(ihc_agent *a, const uint8_t *buf, size_t len)
{
    flush_pending(a);
    if (!a->pend_head && nng_send(a->push, (void *)buf, len, NNG_FLAG_NONBLOCK) == 0)
        return;
    /* kept and retried: reports are what the coordinator waits for */
    ihc__pending *p = malloc(sizeof(*p));
    uint8_t *copy = malloc(len);
    if (!p || !copy) {
        free(p);
        free(copy);
        atomic_fetch_add(&a->n_drops, 1);
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "report dropped: out of memory");
        return;
    }
    memcpy(copy, buf, len);
    p->buf = copy;
    p->len = len;
    p->next = NULL;
    if (a->n_pending >= IHC__PENDING_MAX) {
        ihc__pending *old = a->pend_head;
        a->pend_head = old->next;
        if (!a->pend_head)
            a->pend_tail = NULL;
        a->n_pending--;
        free(old->buf);
        free(old);
        atomic_fetch_add(&a->n_drops, 1);
        ihc_log(IHC_LOG_WARN, IHC__LOG, "report queue full: oldest report dropped max=%d",
                IHC__PENDING_MAX);
    }
    if (a->pend_tail)
        a->pend_tail->next = p;
    else
        a->pend_head = p;
    a->pend_tail = p;
    a->n_pending++;
    ihc_log(IHC_LOG_DEBUG, IHC__LOG, "report queued for retry pending=%zu", a->n_pending);
}

/* ---- hello and heartbeat ---- */

static void send_hello(ihc_agent *a)
{
    ihc_msg m = {.type = IHC_MSG_HELLO};
    ihc_hello_msg *h = &m.u.hello;
    h->agent = a->id;
    h->node = a->node;
    h->pid = (int32_t)getpid();
    h->started_ms = a->started_ms;
    size_t nm = 0;
    ihc__module *head = ihc__modules_snapshot(&a->mods, &nm);
    ihc_module_info *mi = nm ? calloc(nm, sizeof(*mi)) : NULL;
    char **names = NULL;
    size_t total = 0;
    ihc__module *mod = head;
    for (size_t i = 0; i < nm; mod = ++i < nm ? mod->next : NULL)
        total += mod->n_run;
    names = total ? calloc(total, sizeof(*names)) : NULL;
    if ((nm && !mi) || (total && !names)) {
        free(mi);
        free(names);
        ihc_log(IHC_LOG_WARN, IHC__LOG, "hello not sent: out of memory");
        return;
    }
    size_t k = 0;
    mod = head;
    for (size_t i = 0; i < nm; mod = ++i < nm ? mod->next : NULL) {
        mi[i].name = mod->name;
        mi[i].methods = names + k;
        mi[i].n_methods = mod->n_run;
        for (size_t j = 0; j < mod->n_run; j++)
            names[k++] = mod->run[j].name;
        mi[i].timeout_ms = (uint32_t)(mod->timeout * 1000.0 + 0.5);
        mi[i].enabled = mod->enabled;
    }
    h->modules = mi;
    h->n_modules = nm;

    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = IHC_ENOMEM;
    pthread_mutex_lock(&a->lock);
    ihc_session_info *si = a->n_sessions ? calloc(a->n_sessions, sizeof(*si)) : NULL;
    if (!a->n_sessions || si) {
        size_t n = 0;
        for (ihc__session *s = a->sessions; s; s = s->next, n++) {
            si[n] = (ihc_session_info){.session_id = s->id,
                                       .hw = s->hw,
                                       .epoch = s->epoch,
                                       .gepoch = s->gepoch,
                                       .created_ms = s->created_ms,
                                       .module = s->module,
                                       .pid = (int32_t)s->pid,
                                       .data = s->data};
        }
        h->sessions = si;
        h->n_sessions = n;
        rc = ihc_wire_encode(&m, a->auth, &buf, &len);
    }
    pthread_mutex_unlock(&a->lock);
    free(si);
    free(mi);
    free(names);
    if (rc != IHC_OK) {
        ihc_log(IHC_LOG_WARN, IHC__LOG, "hello not sent err=\"%s\"", ihc_strerror(rc));
        return;
    }
    ihc_log(IHC_LOG_DEBUG, IHC__LOG, "hello sent sessions=%zu modules=%zu", h->n_sessions, nm);
    ihc__send_encoded(a, buf, len, "hello");
}

static void send_heartbeat(ihc_agent *a)
{
    ihc_msg m = {.type = IHC_MSG_HEARTBEAT};
    ihc_heartbeat_msg *hb = &m.u.heartbeat;
    hb->agent = a->id;
    size_t nm = 0;
    ihc__module *head = ihc__modules_snapshot(&a->mods, &nm);
    char **mods = nm ? calloc(nm, sizeof(*mods)) : NULL;
    if (nm && !mods)
        return;
    ihc__module *mod = head;
    for (size_t i = 0; i < nm; mod = ++i < nm ? mod->next : NULL)
        mods[i] = mod->name;
    hb->modules = mods;
    hb->n_modules = nm;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = IHC_ENOMEM;
    pthread_mutex_lock(&a->lock);
    size_t cap = a->n_sessions < a->n_hws ? a->n_sessions : a->n_hws;
    char **hws = cap ? calloc(cap, sizeof(*hws)) : NULL;
    if (!cap || hws) {
        size_t n = 0;
        for (size_t b = 0; b < IHC__HW_BUCKETS && n < cap; b++)
            for (ihc__hwent *e = a->hws[b]; e && n < cap; e = e->next)
                if (e->n_sessions)
                    hws[n++] = e->hw;
        hb->n_sessions = (uint32_t)a->n_sessions;
        hb->hws = hws;
        hb->n_hws = n;
        rc = ihc_wire_encode(&m, a->auth, &buf, &len);
    }
    pthread_mutex_unlock(&a->lock);
    free(hws);
    free(mods);
    if (rc != IHC_OK) {
        ihc_log(IHC_LOG_WARN, IHC__LOG, "heartbeat not sent err=\"%s\"", ihc_strerror(rc));
        return;
    }
    ihc__send_encoded(a, buf, len, "heartbeat");
}

/* ---- receiving ---- */

static void on_sub_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    ihc_agent *a = arg;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        atomic_fetch_add(&a->sub_pipes, 1);
    } else {
        atomic_fetch_sub(&a->sub_pipes, 1);
        atomic_store(&a->synced, false);
    }
    atomic_store(&a->need_hello, true);
    ihc__rx_wake(a);
}

static void on_push_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    ihc_agent *a = arg;
    if (ev == NNG_PIPE_EV_ADD_POST) {
        atomic_fetch_add(&a->push_pipes, 1);
    } else {
        atomic_fetch_sub(&a->push_pipes, 1);
        atomic_store(&a->synced, false);
    }
    atomic_store(&a->need_hello, true);
    ihc__rx_wake(a);
}

static bool is_interrupt_frame(nng_msg *msg)
{
    return nng_msg_len(msg) >= 3 && memcmp(nng_msg_body(msg), "hw:", 3) == 0;
}

static void handle(ihc_agent *a, nng_msg *nm, uint64_t t0)
{
    const char *topic = NULL;
    const uint8_t *body = NULL;
    size_t tlen = 0, blen = 0;
    char detail[160] = "";
    ihc_msg *m = NULL;
    int rc = ihc_wire_split(nng_msg_body(nm), nng_msg_len(nm), &topic, &tlen, &body, &blen);
    if (rc == IHC_OK)
        rc = ihc_wire_decode(body, blen, a->auth, &m, detail, sizeof(detail));
    if (rc != IHC_OK) {
        uint64_t n = atomic_fetch_add(&a->n_bad, 1) + 1;
        /* loud for the first few, then quieter: a flood must not flood the log */
        ihc_log(n <= 10 || n % 1000 == 0 ? IHC_LOG_WARN : IHC_LOG_DEBUG, IHC__LOG,
                "bad message dropped err=\"%s\" detail=\"%s\" dropped=%llu", ihc_strerror(rc),
                detail, (unsigned long long)n);
        return;
    }
    switch (m->type) {
    case IHC_MSG_INTERRUPT:
        ihc__cancel_on_interrupt(a, &m->u.interrupt, t0);
        break;
    case IHC_MSG_SYNC:
        if (m->u.sync.agent && strcmp(m->u.sync.agent, a->id) == 0 && m->u.sync.hello) {
            /* the coordinator gave us up while we were silent (stopped, starved) */
            ihc_log(IHC_LOG_WARN, IHC__LOG, "coordinator asks for a hello: it had lost this agent");
            atomic_store(&a->need_hello, true);
        } else if (m->u.sync.agent && strcmp(m->u.sync.agent, a->id) == 0) {
            ihc__cancel_on_sync(a, &m->u.sync);
            a->ever_synced = true;
            if (!atomic_exchange(&a->synced, true))
                ihc_log(IHC_LOG_INFO, IHC__LOG, "connected to coordinator epochs=%zu",
                        m->u.sync.n_epochs);
        }
        break;
    default:
        atomic_fetch_add(&a->n_bad, 1);
        ihc_log(IHC_LOG_DEBUG, IHC__LOG, "unexpected message dropped type=%s",
                ihc_msg_type_name(m->type));
        break;
    }
    ihc_msg_free(m);
}

static void timers(ihc_agent *a)
{
    uint64_t now = ihc__now_ns();
    if ((a->hello_due_ns && now >= a->hello_due_ns) ||
        (!atomic_load(&a->synced) && now >= a->next_hello_ns)) {
        atomic_store(&a->need_hello, false);
        a->hello_due_ns = 0;
        send_hello(a);
        a->next_hello_ns = now + HELLO_RETRY_NS;
    }
    if (now >= a->next_hb_ns) {
        send_heartbeat(a);
        a->next_hb_ns = now + ihc__s_to_ns(a->o.heartbeat_interval);
    }
    if (now >= a->next_tick_ns) {
        ihc__sessions_tick(a);
        a->next_tick_ns = now + TICK_NS;
    }
    if (a->pend_head)
        flush_pending(a);
}

void ihc__rx_wake(ihc_agent *a)
{
    /* not while closing: the receive thread is gone or going, and the sockets' pipe
     * callbacks (run by nng_close) must not touch the aio */
    if (a->rx_aio && !atomic_load(&a->stopping))
        nng_aio_cancel(a->rx_aio);
}

/* How long the receive thread may sleep: until its next timer. The 50 ms tick only counts
 * while there is something for it to do (sessions to expire, reports to retry). A hello
 * asked for goes out RX_TIMEOUT_MS later, with whatever else (modules registered right
 * after open, sessions) came meanwhile. */
static nng_duration rx_wait_ms(ihc_agent *a)
{
    uint64_t now = ihc__now_ns();
    if (!a->hello_due_ns && atomic_load(&a->need_hello))
        a->hello_due_ns = now + (uint64_t)RX_TIMEOUT_MS * 1000000ull;
    uint64_t next = a->next_hb_ns;
    if (a->hello_due_ns && a->hello_due_ns < next)
        next = a->hello_due_ns;
    if (!atomic_load(&a->synced) && a->next_hello_ns < next)
        next = a->next_hello_ns;
    pthread_mutex_lock(&a->lock);
    bool ticking = a->n_sessions > 0 || a->n_hws > IHC__HW_KEEP;
    pthread_mutex_unlock(&a->lock);
    if ((ticking || a->pend_head) && a->next_tick_ns < next)
        next = a->next_tick_ns;
    if (next <= now)
        return 1;
    uint64_t ms = (next - now + 999999ull) / 1000000ull;
    return ms > RX_IDLE_MAX_MS ? RX_IDLE_MAX_MS : (nng_duration)ms;
}

static void *rx_main(void *arg)
{
    ihc_agent *a = arg;
    ihc__thread_priority(a->o.high_priority);
    nng_msg *batch[RX_BATCH];
    /* the first hello and heartbeat go out RX_TIMEOUT_MS after open, with what the caller
     * set up meanwhile (modules, sessions) */
    uint64_t first = ihc__now_ns() + (uint64_t)RX_TIMEOUT_MS * 1000000ull;
    a->next_hello_ns = a->next_hb_ns = a->next_tick_ns = first;
    while (!atomic_load(&a->stopping)) {
        nng_msg *msg = NULL;
        nng_aio_set_timeout(a->rx_aio, rx_wait_ms(a));
        nng_recv_aio(a->sub, a->rx_aio);
        /* a wake-up that came before the receive started must not wait for the timeout */
        if ((!a->hello_due_ns && atomic_load(&a->need_hello)) || atomic_load(&a->stopping))
            nng_aio_cancel(a->rx_aio);
        nng_aio_wait(a->rx_aio);
        int rv = nng_aio_result(a->rx_aio);
        if (rv == 0)
            msg = nng_aio_get_msg(a->rx_aio);
        if (rv == 0) {
            uint64_t t0 = ihc__now_ns();
            size_t n = 0;
            batch[n++] = msg;
            while (n < RX_BATCH && nng_recvmsg(a->sub, &msg, NNG_FLAG_NONBLOCK) == 0)
                batch[n++] = msg;
            if (a->o.high_priority) { /* INTERRUPT_PRIORITY=high: interrupts first */
                for (size_t i = 0; i < n; i++) {
                    if (is_interrupt_frame(batch[i])) {
                        handle(a, batch[i], t0);
                        nng_msg_free(batch[i]);
                        batch[i] = NULL;
                    }
                }
            }
            for (size_t i = 0; i < n; i++) {
                if (batch[i]) {
                    handle(a, batch[i], t0);
                    nng_msg_free(batch[i]);
                }
            }
        } else if (rv == NNG_ECLOSED) {
            break;
        } else if (rv != NNG_ETIMEDOUT && rv != NNG_ECANCELED) {
            ihc_log(IHC_LOG_WARN, IHC__LOG, "receive failed err=\"%s\"", nng_strerror(rv));
            ihc_sleep_ms(RX_TIMEOUT_MS);
        }
        timers(a);
    }
    return NULL;
}

/* ---- lifecycle ---- */

static int open_sockets(ihc_agent *a)
{
    int rv;
    char topic[IHC_TOPIC_MAX + 1];
    size_t tl = ihc_wire_topic_agent(topic, sizeof(topic), a->id);
    if (tl == 0)
        return IHC_EINVAL;
    if ((rv = nng_sub0_open(&a->sub)) != 0)
        goto fail;
    a->sub_open = true;
    if ((rv = nng_push0_open(&a->push)) != 0)
        goto fail;
    a->push_open = true;
    if ((rv = nng_socket_set_ms(a->sub, NNG_OPT_RECONNMINT, 50)) != 0 ||
        (rv = nng_socket_set_ms(a->sub, NNG_OPT_RECONNMAXT, 1000)) != 0 ||
        (rv = nng_socket_set_ms(a->push, NNG_OPT_RECONNMINT, 50)) != 0 ||
        (rv = nng_socket_set_ms(a->push, NNG_OPT_RECONNMAXT, 1000)) != 0 ||
        (rv = nng_socket_set_ms(a->sub, NNG_OPT_RECVTIMEO, RX_TIMEOUT_MS)) != 0 ||
        (rv = nng_socket_set_size(a->sub, NNG_OPT_RECVMAXSZ, IHC_WIRE_MAX_MSG + IHC_TOPIC_MAX)) !=
            0 ||
        (rv = nng_socket_set_int(a->sub, NNG_OPT_RECVBUF, 1024)) != 0 ||
        (rv = nng_socket_set_int(a->push, NNG_OPT_SENDBUF, 1024)) != 0 ||
        /* every hardware_id: an agent listed in an interrupt must get it even without a
         * session of that hw (filtering is local in nng anyway) */
        (rv = nng_socket_set(a->sub, NNG_OPT_SUB_SUBSCRIBE, "hw:", 3)) != 0 ||
        (rv = nng_socket_set(a->sub, NNG_OPT_SUB_SUBSCRIBE, topic, tl)) != 0)
        goto fail;
    if ((rv = nng_aio_alloc(&a->rx_aio, NULL, NULL)) != 0)
        goto fail;
    if ((rv = nng_pipe_notify(a->sub, NNG_PIPE_EV_ADD_POST, on_sub_pipe, a)) != 0 ||
        (rv = nng_pipe_notify(a->sub, NNG_PIPE_EV_REM_POST, on_sub_pipe, a)) != 0 ||
        (rv = nng_pipe_notify(a->push, NNG_PIPE_EV_ADD_POST, on_push_pipe, a)) != 0 ||
        (rv = nng_pipe_notify(a->push, NNG_PIPE_EV_REM_POST, on_push_pipe, a)) != 0)
        goto fail;
    if ((rv = nng_dial(a->sub, a->pub_url, NULL, NNG_FLAG_NONBLOCK)) != 0) {
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "cannot dial pub_url=%s err=\"%s\"", a->pub_url,
                nng_strerror(rv));
        goto fail_url;
    }
    if ((rv = nng_dial(a->push, a->report_url, NULL, NNG_FLAG_NONBLOCK)) != 0) {
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "cannot dial report_url=%s err=\"%s\"", a->report_url,
                nng_strerror(rv));
        goto fail_url;
    }
    return IHC_OK;
fail_url:
    return rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP || rv == NNG_EINVAL ? IHC_EINVAL
                                                                         : IHC_ETRANSPORT;
fail:
    ihc_log(IHC_LOG_ERROR, IHC__LOG, "cannot set up sockets err=\"%s\"", nng_strerror(rv));
    return IHC_ETRANSPORT;
}

static void free_agent(ihc_agent *a)
{
    if (a->sub_open)
        nng_close(a->sub);
    if (a->push_open)
        nng_close(a->push);
    a->sub_open = a->push_open = false;
    if (a->rx_aio) /* after the sockets: their pipe callbacks use it */
        nng_aio_free(a->rx_aio);
    a->rx_aio = NULL;
    ihc__escalator_stop(a);
    ihc__modules_fini(&a->mods);
    ihc__gens_close(a, 0);
    ihc__sessions_fini(a);
    ihc__cancel_fini(a);
    while (a->cb_head) {
        ihc__callback *c = a->cb_head;
        a->cb_head = c->next;
        free(c);
    }
    pthread_mutex_destroy(&a->cb_lock);
    while (a->pend_head) {
        ihc__pending *p = a->pend_head;
        a->pend_head = p->next;
        free(p->buf);
        free(p);
    }
    ihc_wire_auth_free(a->auth);
    free(a->pub_url);
    free(a->report_url);
    free(a->config_file);
    free(a);
}

int ihc_agent_open(ihc_agent **out, const ihc_agent_opts *opts)
{
    if (!out)
        return IHC_EINVAL;
    *out = NULL;
    ihc_agent_opts o;
    if (opts)
        o = *opts;
    else
        ihc_agent_opts_init(&o);
    /* Every value is taken as given (ihc_agent_opts_init holds the defaults): kill_grace 0
     * means SIGKILL right after SIGTERM, not "the default". */
    const char *bad = o.max_active_sessions < 1                 ? "max_active_sessions (>= 1)"
                      : bad_positive_seconds(o.session_timeout) ? "session_timeout (s, > 0)"
                      : bad_seconds(o.session_cleanup_delay)    ? "session_cleanup_delay (s, >= 0)"
                      : bad_positive_seconds(o.heartbeat_interval) ? "heartbeat_interval (s, > 0)"
                      : bad_positive_seconds(o.default_module_timeout)
                          ? "default_module_timeout (s, > 0)"
                      : bad_seconds(o.kill_grace) ? "kill_grace (s, >= 0)"
                      : o.secret_len && !o.secret ? "secret (NULL with a length)"
                      : o.agent_id && !ihc_agent_id_valid(o.agent_id, strlen(o.agent_id))
                          ? "agent_id (1-255 printable bytes, no spaces)"
                          : NULL;
    if (bad) {
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "invalid agent option: %s", bad);
        return IHC_EINVAL;
    }

    ihc_agent *a = calloc(1, sizeof(*a));
    if (!a)
        return IHC_ENOMEM;
    int rc = IHC_ENOMEM;
    bool have_lock = false, have_mods = false, have_cb = false;
    if (o.agent_id) {
        snprintf(a->id, sizeof(a->id), "%s", o.agent_id);
    } else {
        char host[200] = "localhost";
        if (gethostname(host, sizeof(host) - 1) != 0 || !host[0])
            snprintf(host, sizeof(host), "localhost");
        host[sizeof(host) - 1] = '\0';
        snprintf(a->id, sizeof(a->id), "%s:%d", host, (int)getpid());
        if (!ihc_agent_id_valid(a->id, strlen(a->id)))
            snprintf(a->id, sizeof(a->id), "agent:%d", (int)getpid());
    }
    if (gethostname(a->node, sizeof(a->node) - 1) != 0 || !a->node[0])
        snprintf(a->node, sizeof(a->node), "localhost");
    a->pub_url = strdup(o.pub_url ? o.pub_url : IHC_DEFAULT_PUB_URL);
    a->report_url = strdup(o.report_url ? o.report_url : IHC_DEFAULT_REPORT_URL);
    if (!a->pub_url || !a->report_url)
        goto fail;
    if (o.config_file && !(a->config_file = strdup(o.config_file)))
        goto fail;
    if (o.secret_len && (rc = ihc_wire_auth_new(&a->auth, o.secret, o.secret_len, 0)) != IHC_OK)
        goto fail;
    o.agent_id = a->id;
    o.pub_url = a->pub_url;
    o.report_url = a->report_url;
    o.config_file = a->config_file;
    o.secret = NULL; /* kept only inside auth */
    a->o = o;
    a->started_ms = ihc_now_ms();
    if (getrandom(&a->id_tag, sizeof(a->id_tag), 0) != sizeof(a->id_tag))
        a->id_tag = (uint32_t)(a->started_ms ^ ((uint64_t)getpid() << 16));
    atomic_init(&a->sub_pipes, 0);
    atomic_init(&a->push_pipes, 0);
    atomic_init(&a->synced, false);
    atomic_init(&a->need_hello, true);
    atomic_init(&a->stopping, false);

    rc = IHC_ENOMEM;
    if (ihc__sessions_init(a) != IHC_OK)
        goto fail;
    have_lock = true;
    if (ihc__modules_init(&a->mods, o.high_priority) != IHC_OK)
        goto fail;
    have_mods = true;
    if (pthread_mutex_init(&a->cb_lock, NULL) != 0)
        goto fail;
    have_cb = true;
    if (ihc__gens_new(a) != IHC_OK || ihc__cancel_init(a) != IHC_OK)
        goto fail;
    if (a->config_file) {
        char err[512];
        rc = ihc__modules_load_config(&a->mods, a->config_file, err, sizeof(err));
        if (rc != IHC_OK) {
            ihc_log(IHC_LOG_ERROR, IHC__LOG, "%s", err);
            goto fail;
        }
    }
    if ((rc = open_sockets(a)) != IHC_OK)
        goto fail;
    rc = IHC_ENOMEM;
    if (ihc__escalator_start(a) != IHC_OK)
        goto fail;
    if (pthread_create(&a->rx, NULL, rx_main, a) != 0)
        goto fail;
    a->rx_started = true;
    ihc_log(IHC_LOG_INFO, IHC__LOG, "agent started agent=%s pub=%s report=%s", a->id, a->pub_url,
            a->report_url);
    *out = a;
    return IHC_OK;
fail:
    if (!have_lock) {
        ihc_wire_auth_free(a->auth);
        free(a->pub_url);
        free(a->report_url);
        free(a->config_file);
        free(a);
        return rc;
    }
    if (!have_mods) {
        ihc__sessions_fini(a);
        free(a->pub_url);
        free(a->report_url);
        free(a->config_file);
        ihc_wire_auth_free(a->auth);
        free(a);
        return rc;
    }
    if (!have_cb) {
        ihc__modules_fini(&a->mods);
        ihc__sessions_fini(a);
        free(a->pub_url);
        free(a->report_url);
        free(a->config_file);
        ihc_wire_auth_free(a->auth);
        free(a);
        return rc;
    }
    free_agent(a);
    return rc;
}

void ihc_agent_close(ihc_agent *a)
{
    if (!a)
        return;
    atomic_store(&a->stopping, true);
    if (a->rx_aio) /* the receive thread sees stopping now */
        nng_aio_cancel(a->rx_aio);
    if (a->rx_started)
        pthread_join(a->rx, NULL);
    a->rx_started = false;
    ihc__gens_close(a, CLOSE_GEN_DEADLINE_MS);
    /* best effort: tell the coordinator the sessions are gone */
    size_t n = 0;
    pthread_mutex_lock(&a->lock);
    while (a->sessions) {
        ihc__session *s = a->sessions;
        s->refs++;
        ihc__session_unlink(a, s);
        pthread_mutex_unlock(&a->lock);
        ihc__send_session_end(a, s, s->cancelled ? "interrupted" : "done");
        pthread_mutex_lock(&a->lock);
        ihc__session_put(s);
        n++;
    }
    pthread_mutex_unlock(&a->lock);
    flush_pending(a);
    ihc_log(IHC_LOG_INFO, IHC__LOG,
            "agent closed agent=%s sessions_ended=%zu interrupts=%llu "
            "bad_messages=%llu dropped_sends=%llu",
            a->id, n, (unsigned long long)atomic_load(&a->n_interrupts),
            (unsigned long long)atomic_load(&a->n_bad),
            (unsigned long long)atomic_load(&a->n_drops));
    free_agent(a);
}

const char *ihc_agent_id(const ihc_agent *a)
{
    return a ? a->id : NULL;
}

bool ihc_agent_connected(const ihc_agent *a)
{
    if (!a)
        return false;
    return atomic_load(&((ihc_agent *)a)->synced) &&
           atomic_load(&((ihc_agent *)a)->sub_pipes) > 0 &&
           atomic_load(&((ihc_agent *)a)->push_pipes) > 0;
}

int ihc_agent_register_callback(ihc_agent *a, ihc_interrupt_fn fn, void *arg)
{
    if (!a || !fn)
        return IHC_EINVAL;
    ihc__callback *c = calloc(1, sizeof(*c));
    if (!c)
        return IHC_ENOMEM;
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_lock(&a->cb_lock);
    if (a->cb_tail)
        a->cb_tail->next = c;
    else
        a->cb_head = c;
    a->cb_tail = c;
    a->n_cbs++;
    pthread_mutex_unlock(&a->cb_lock);
    return IHC_OK;
}

void ihc_agent_log_setup(int level, bool json, bool interrupts, int fd)
{
    ihc_log_opts o = {.level = (ihc_log_level)level,
                      .json = json,
                      .interrupts = interrupts,
                      .timing = true,
                      .fd = fd};
    ihc_log_setup(&o);
}
