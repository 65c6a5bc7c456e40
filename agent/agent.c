/* The agent object: options, lifecycle, what the agent says to the coordinator (hello until
 * synced, heartbeats), the dispatch of decoded messages, and the connection's state as the
 * agent sees it (logged when it is lost, regained, or never comes). The sockets and the
 * receive thread are transport.c's, which calls back into the functions given to it here. */
#include "agent_int.h"

#include "clock.h"
#include "defaults.h"
#include "urllist.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define HELLO_DELAY_NS         20000000ull /* a hello asked for goes out this much later */
#define HELLO_RETRY_NS         1000000000ull
#define TICK_NS                50000000ull
#define CLOSE_GEN_DEADLINE_MS  500
#define CLOSE_SEND_DEADLINE_MS 250 /* for the last session_end and reports to go out */
/* How long an agent may go without a first connection before it says so: dialing a wrong URL
 * looks exactly like a coordinator that is not up yet, so after this it is worth a warning. */
#define UNREACHABLE_WARN_NS 3000000000ull

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
    char addrs[IHC__SUB_ADDRS_MAX][IHC_SOCKADDR_STR_MAX];
    char *addr_v[IHC__SUB_ADDRS_MAX];
    h->n_sub_addrs = ihc__transport_sub_addrs(&a->tp, addrs, IHC__SUB_ADDRS_MAX);
    for (size_t i = 0; i < h->n_sub_addrs; i++)
        addr_v[i] = addrs[i];
    h->sub_addrs = addr_v;

    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = IHC_ENOMEM;
    /* held until the hello is queued on every link: no session event overtakes the
     * snapshot below (see send_lock). The "hello sent" line is logged inside, between
     * snapshot and send, where the test of this order holds the hello. */
    pthread_mutex_lock(&a->send_lock);
    pthread_mutex_lock(&a->lock);
    ihc_session_info *si = a->n_sessions ? calloc(a->n_sessions, sizeof(*si)) : NULL;
    if (!a->n_sessions || si) {
        size_t n = 0;
        for (ihc__session *s = a->sessions; s; s = s->next, n++)
            si[n] = ihc__session_describe(s);
        h->sessions = si;
        h->n_sessions = n;
        rc = ihc_wire_encode(&m, a->auth, &buf, &len);
    }
    pthread_mutex_unlock(&a->lock);
    free(si);
    free(mi);
    free(names);
    if (rc != IHC_OK) {
        pthread_mutex_unlock(&a->send_lock);
        ihc_log(IHC_LOG_WARN, IHC__LOG, "hello not sent err=\"%s\"", ihc_strerror(rc));
        return;
    }
    ihc_log(IHC_LOG_DEBUG, IHC__LOG, "hello sent sessions=%zu modules=%zu", h->n_sessions, nm);
    ihc__transport_send(&a->tp, buf, len, "hello");
    pthread_mutex_unlock(&a->send_lock);
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
    ihc__transport_send(&a->tp, buf, len, "heartbeat");
}

/* ---- the connection ---- */

/* Receive thread: a sync answered our hello. */
static void connected(ihc_agent *a, bool first, size_t n_epochs)
{
    uint64_t lost = atomic_exchange(&a->lost_ns, 0);
    if (first)
        ihc_log(IHC_LOG_INFO, IHC__LOG, "connected to coordinator pub=%s report=%s epochs=%zu",
                a->pub_url, a->report_url, n_epochs);
    else
        ihc_log(IHC_LOG_INFO, IHC__LOG,
                "connection to coordinator regained after %.1f s pub=%s report=%s epochs=%zu",
                lost ? (double)(ihc_mono_ns() - lost) / 1e9 : 0.0, a->pub_url, a->report_url,
                n_epochs);
}

/* nng's thread: a SUB or PUSH connection came or went. Either way a hello is due: the
 * coordinator learns of us (again) and answers with a sync. */
static void on_link(void *ctx, bool sub, bool up)
{
    ihc_agent *a = ctx;
    int subs = 0;
    ihc__transport_links(&a->tp, &subs, NULL);
    if (sub && !up && subs == 0)
        atomic_store(&a->term_forget, true);
    if (!up && atomic_exchange(&a->synced, false)) {
        atomic_store(&a->lost_ns, ihc_mono_ns());
        ihc_log(IHC_LOG_WARN, IHC__LOG,
                "connection to coordinator lost (%s closed) pub=%s report=%s: reconnecting",
                sub ? "pub" : "report", a->pub_url, a->report_url);
    }
    atomic_store(&a->need_hello, true);
    ihc__transport_wake(&a->tp);
}

/* Receive thread: once, when no sync came UNREACHABLE_WARN_NS after open, says what to
 * check; which connections are up tells a wrong URL from a refused hello. */
static void warn_unreachable(ihc_agent *a)
{
    int sub = 0, push = 0;
    ihc__transport_links(&a->tp, &sub, &push);
    double s = (double)UNREACHABLE_WARN_NS / 1e9;
    if (sub > 0 && push > 0)
        ihc_log(IHC_LOG_WARN, IHC__LOG,
                "coordinator not answering after %.0f s: connected to pub=%s and report=%s but "
                "no sync came back; check that IHC_SECRET (or IHC_SECRET_FILE) matches the "
                "coordinator's and that these are a coordinator's ports",
                s, a->pub_url, a->report_url);
    else
        ihc_log(IHC_LOG_WARN, IHC__LOG,
                "no connection to the coordinator after %.0f s: pub=%s (%s) report=%s (%s); check "
                "that ihc-coordinator is running and listening there (IHC_PUB_URL/--pub, "
                "IHC_REPORT_URL/--report: host, port, not swapped) and that no firewall is in "
                "between; still trying",
                s, a->pub_url, sub > 0 ? "connected" : "not connected", a->report_url,
                push > 0 ? "connected" : "not connected");
}

/* ---- receiving and timers ---- */

/* Receive thread: false when term is older than the newest seen, a deposed leader's message
 * (a paused old leader must not make this agent act). Term 0 comes from a coordinator
 * without standbys, which fences nothing: always taken. The newest term is forgotten when
 * every PUB connection was lost (see on_link). */
static bool term_current(ihc_agent *a, uint64_t term, const char *what, int link)
{
    if (atomic_exchange(&a->term_forget, false) && a->max_term) {
        /* no coordinator was connected: none is the leader this agent follows, and a lone
         * coordinator that starts without Redis leads with the term it had */
        ihc_log(IHC_LOG_INFO, IHC__LOG,
                "every coordinator connection was lost: the next leader's term is taken as it "
                "comes (was %llu)",
                (unsigned long long)a->max_term);
        a->max_term = 0;
    }
    if (term == 0 || term == a->max_term)
        return true;
    if (term < a->max_term) {
        uint64_t n = atomic_fetch_add(&a->n_stale_term, 1) + 1;
        ihc_log(n <= 10 || n % 1000 == 0 ? IHC_LOG_WARN : IHC_LOG_DEBUG, IHC__LOG,
                "%s from a deposed leader ignored term=%llu current_term=%llu coordinator=%d "
                "ignored=%llu",
                what, (unsigned long long)term, (unsigned long long)a->max_term, link,
                (unsigned long long)n);
        return false;
    }
    ihc_log(IHC_LOG_INFO, IHC__LOG, "leader term now %llu (was %llu) coordinator=%d",
            (unsigned long long)term, (unsigned long long)a->max_term, link);
    a->max_term = term;
    return true;
}

static bool on_frame(void *ctx, const uint8_t *frame, size_t len, uint64_t t0, int link)
{
    ihc_agent *a = ctx;
    const char *topic = NULL;
    const uint8_t *body = NULL;
    size_t tlen = 0, blen = 0;
    char detail[160] = "";
    ihc_msg *m = NULL;
    int rc = ihc_wire_split(frame, len, &topic, &tlen, &body, &blen);
    if (rc == IHC_OK)
        rc = ihc_wire_decode(body, blen, a->auth, &m, detail, sizeof(detail));
    if (rc != IHC_OK) {
        uint64_t n = atomic_fetch_add(&a->n_bad, 1) + 1;
        /* loud for the first few, then quieter: a flood must not flood the log */
        ihc_log(n <= 10 || n % 1000 == 0 ? IHC_LOG_WARN : IHC_LOG_DEBUG, IHC__LOG,
                "bad message dropped err=\"%s\" detail=\"%s\" dropped=%llu", ihc_strerror(rc),
                detail, (unsigned long long)n);
        return true;
    }
    bool still_rx = true;
    switch (m->type) {
    case IHC_MSG_INTERRUPT:
        if (term_current(a, m->u.interrupt.term, "interrupt", link))
            still_rx = ihc__cancel_on_interrupt(a, &m->u.interrupt, t0,
                                                tlen >= 3 && memcmp(topic, "ag:", 3) == 0, link);
        break;
    case IHC_MSG_SYNC:
        if (!term_current(a, m->u.sync.term, "sync", link))
            break;
        if (m->u.sync.agent && strcmp(m->u.sync.agent, a->id) == 0)
            ihc__transport_set_report_begun(&a->tp, link, m->u.sync.report_begun);
        if (m->u.sync.agent && strcmp(m->u.sync.agent, a->id) == 0 && m->u.sync.hello) {
            /* the coordinator gave us up while we were silent (stopped, starved) */
            ihc_log(IHC_LOG_WARN, IHC__LOG, "coordinator asks for a hello: it had lost this agent");
            atomic_store(&a->need_hello, true);
        } else if (m->u.sync.agent && strcmp(m->u.sync.agent, a->id) == 0) {
            ihc__cancel_on_sync(a, &m->u.sync);
            bool first = !a->ever_synced;
            a->ever_synced = true;
            if (!atomic_exchange(&a->synced, true))
                connected(a, first, m->u.sync.n_epochs);
        }
        break;
    default:
        atomic_fetch_add(&a->n_bad, 1);
        ihc_log(IHC_LOG_DEBUG, IHC__LOG, "unexpected message dropped type=%s",
                ihc_msg_type_name(m->type));
        break;
    }
    ihc_msg_free(m); /* ours even when displaced: a is not touched */
    return still_rx;
}

/* The rescue thread, after it took a run of modules over and the run ended: the interrupt's
 * rest, then the receive loop, on this thread (module.h). */
static void on_taken(void *arg)
{
    ihc_agent *a = arg;
    ihc__cancel_resume(a);
    ihc__transport_rx_resume(&a->tp);
}

/* Receive thread: the timers (hello until synced, heartbeats, reaping) and when the next
 * one is due. The 50 ms tick only counts while there is something for it to do (sessions to
 * expire). A hello asked for goes out HELLO_DELAY_NS later, with whatever else (modules
 * registered right after open, sessions) came meanwhile. */
static uint64_t on_timers(void *ctx, uint64_t now)
{
    ihc_agent *a = ctx;
    if (!a->hello_due_ns && atomic_load(&a->need_hello))
        a->hello_due_ns = now + HELLO_DELAY_NS;
    if ((a->hello_due_ns && now >= a->hello_due_ns) ||
        (!atomic_load(&a->synced) && now >= a->next_hello_ns)) {
        atomic_store(&a->need_hello, false);
        a->hello_due_ns = 0;
        send_hello(a);
        a->next_hello_ns = now + HELLO_RETRY_NS;
    }
    if (now >= a->next_hb_ns) {
        send_heartbeat(a);
        a->next_hb_ns = now + ihc_s_to_ns(a->o.heartbeat_interval);
    }
    pthread_mutex_lock(&a->lock);
    bool ticking = a->n_sessions > 0 || a->n_hws > IHC__HW_KEEP;
    pthread_mutex_unlock(&a->lock);
    if (now >= a->next_tick_ns) {
        ihc__sessions_tick(a);
        a->next_tick_ns = now + TICK_NS;
    }
    bool waiting = !a->ever_synced && !a->told_unreachable;
    if (waiting && now - a->opened_ns >= UNREACHABLE_WARN_NS) {
        a->told_unreachable = true;
        waiting = false;
        warn_unreachable(a);
    }

    uint64_t next = a->next_hb_ns;
    if (a->hello_due_ns && a->hello_due_ns < next)
        next = a->hello_due_ns;
    if (!atomic_load(&a->synced) && a->next_hello_ns < next)
        next = a->next_hello_ns;
    if (ticking && a->next_tick_ns < next)
        next = a->next_tick_ns;
    if (waiting && a->opened_ns + UNREACHABLE_WARN_NS < next)
        next = a->opened_ns + UNREACHABLE_WARN_NS;
    return next;
}

/* ---- lifecycle ---- */

static int open_transport(ihc_agent *a)
{
    char topic[IHC_TOPIC_MAX + 1];
    size_t tl = ihc_wire_topic_agent(topic, sizeof(topic), a->id);
    if (tl == 0)
        return IHC_EINVAL;
    a->tp.ops = (ihc__transport_ops){
        .on_frame = on_frame, .on_timers = on_timers, .on_link = on_link, .ctx = a};
    a->tp.interrupts_first = a->o.high_priority; /* INTERRUPT_PRIORITY=high */
    a->tp.high_priority = a->o.high_priority;
    a->tp.tls = a->tls;
    return ihc__transport_open(&a->tp, a->pub_url, a->report_url, topic, tl);
}

/* The doctor's view of the links: 2i is coordinator i's pub (its SUB dialer), 2i+1 its
 * report (its PUSH socket). */
static bool link_up(void *arg, size_t i)
{
    ihc_agent *a = arg;
    int sub = 0, push = 0;
    ihc__transport_link(&a->tp, i / 2, &sub, &push);
    return i % 2 == 0 ? sub > 0 : push > 0;
}

static int start_tls_doctor(ihc_agent *a)
{
    ihc_url_list pubs, reports;
    if (!a->tls || ihc_url_list_parse(&pubs, a->pub_url, NULL, 0) != IHC_OK)
        return IHC_OK;
    if (ihc_url_list_parse(&reports, a->report_url, NULL, 0) != IHC_OK) {
        ihc_url_list_fini(&pubs);
        return IHC_OK;
    }
    ihc_tls_link links[2 * IHC_URL_LIST_MAX];
    size_t n = 0;
    bool any = false;
    for (size_t i = 0; i < pubs.n && i < reports.n; i++) {
        links[n++] = (ihc_tls_link){
            .name = "pub", .url = pubs.v[i], .sp_self = IHC_SP_SUB, .sp_peer = IHC_SP_PUB};
        links[n++] = (ihc_tls_link){
            .name = "report", .url = reports.v[i], .sp_self = IHC_SP_PUSH, .sp_peer = IHC_SP_PULL};
        any = any || ihc_tls_url(pubs.v[i]) || ihc_tls_url(reports.v[i]);
    }
    int rc =
        any ? ihc_tls_doctor_start(&a->tls_doctor, a->tls, links, n, link_up, a, IHC__LOG) : IHC_OK;
    ihc_url_list_fini(&pubs);
    ihc_url_list_fini(&reports);
    return rc;
}

/* The TLS settings against the URLs, then the files (the daemon's settings check runs the
 * same). On error logs why and returns IHC_ECONFIG (or IHC_ENOMEM). */
static int load_tls(const ihc_agent_opts *o, ihc_tls **out)
{
    *out = NULL;
    ihc_url_list lists[2];
    const char *given[2] = {o->pub_url ? o->pub_url : IHC_DEFAULT_PUB_URL,
                            o->report_url ? o->report_url : IHC_DEFAULT_REPORT_URL};
    const char *urls[2 * IHC_URL_LIST_MAX];
    size_t n = 0;
    char err[512], warn[512] = "";
    for (int i = 0; i < 2; i++) {
        int rc = ihc_url_list_parse(&lists[i], given[i], err, sizeof(err));
        if (rc != IHC_OK) {
            if (i == 1)
                ihc_url_list_fini(&lists[0]);
            ihc_log(IHC_LOG_ERROR, IHC__LOG, "invalid agent option: %s_url '%s': %s",
                    i ? "report" : "pub", given[i], err);
            return rc == IHC_ENOMEM ? rc : IHC_EINVAL;
        }
        for (size_t j = 0; j < lists[i].n; j++)
            urls[n++] = lists[i].v[j];
    }
    ihc_tls_files f = {
        .cert = o->tls_cert, .key = o->tls_key, .ca = o->tls_ca, .server_name = o->tls_server_name};
    bool ok = ihc_tls_urls_ok(&f, NULL, false, urls, n, err, sizeof(err));
    bool any_url = false;
    for (size_t i = 0; i < n; i++)
        any_url = any_url || ihc_tls_url(urls[i]);
    ihc_url_list_fini(&lists[0]);
    ihc_url_list_fini(&lists[1]);
    if (!ok) {
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "invalid agent option: %s", err);
        return IHC_ECONFIG;
    }
    if (!any_url && !f.cert && !f.ca && !f.server_name)
        return IHC_OK;
    int rc = ihc_tls_load(out, &f, NULL, err, sizeof(err), warn, sizeof(warn));
    if (rc != IHC_OK)
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "invalid agent option: %s", err);
    else if (warn[0])
        ihc_log(IHC_LOG_WARN, IHC__LOG, "TLS: %s", warn);
    return rc;
}

static void free_agent(ihc_agent *a)
{
    ihc_tls_doctor_stop(a->tls_doctor);
    ihc__transport_fini(&a->tp, 0); /* nothing to wait for when close did it first */
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
    ihc_wire_auth_free(a->auth);
    ihc_tls_free(a->tls);
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

    ihc_tls *tls = NULL;
    int rc = load_tls(&o, &tls);
    if (rc != IHC_OK)
        return rc;
    ihc_agent *a = calloc(1, sizeof(*a));
    if (!a) {
        ihc_tls_free(tls);
        return IHC_ENOMEM;
    }
    a->tls = tls;
    rc = IHC_ENOMEM;
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
    o.secret = NULL;                                              /* kept only inside auth */
    o.tls_cert = o.tls_key = o.tls_ca = o.tls_server_name = NULL; /* read into tls */
    a->o = o;
    a->started_ms = ihc_now_ms();
    if (getrandom(&a->id_tag, sizeof(a->id_tag), 0) != sizeof(a->id_tag))
        a->id_tag = (uint32_t)(a->started_ms ^ ((uint64_t)getpid() << 16));
    atomic_init(&a->synced, false);
    atomic_init(&a->need_hello, true);
    atomic_init(&a->lost_ns, 0);

    rc = IHC_ENOMEM;
    if (ihc__sessions_init(a) != IHC_OK)
        goto fail;
    have_lock = true;
    if (ihc__modules_init(&a->mods, o.high_priority, on_taken, a) != IHC_OK)
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
    if ((rc = open_transport(a)) != IHC_OK)
        goto fail;
    rc = IHC_ENOMEM;
    if (ihc__escalator_start(a) != IHC_OK)
        goto fail;
    /* the first hello and heartbeat go out HELLO_DELAY_NS after open, with what the caller
     * set up meanwhile (modules, sessions) */
    a->opened_ns = ihc_mono_ns();
    a->next_hello_ns = a->next_hb_ns = a->next_tick_ns = a->opened_ns + HELLO_DELAY_NS;
    if ((rc = ihc__transport_start(&a->tp)) != IHC_OK || (rc = start_tls_doctor(a)) != IHC_OK)
        goto fail;
    ihc_log(IHC_LOG_INFO, IHC__LOG, "agent started agent=%s pub=%s report=%s tls=%s", a->id,
            a->pub_url, a->report_url, a->tls ? ihc_tls_describe(a->tls) : "off");
    *out = a;
    return IHC_OK;
fail:
    if (!have_lock) {
        ihc_wire_auth_free(a->auth);
        ihc_tls_free(a->tls);
        free(a->pub_url);
        free(a->report_url);
        free(a->config_file);
        free(a);
        return rc;
    }
    if (!have_mods) {
        ihc__sessions_fini(a);
        ihc_tls_free(a->tls);
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
        ihc_tls_free(a->tls);
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
    ihc__transport_stop_rx(&a->tp);
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
    char id[IHC_AGENT_ID_MAX + 1];
    memcpy(id, a->id, sizeof(id));
    uint64_t interrupts = atomic_load(&a->n_interrupts), bad = atomic_load(&a->n_bad);
    /* the doctor reads the transport's links: it stops first */
    ihc_tls_doctor_stop(a->tls_doctor);
    a->tls_doctor = NULL;
    /* the transport goes first: what is still queued goes out (bounded) or is counted */
    ihc__transport_fini(&a->tp, CLOSE_SEND_DEADLINE_MS);
    uint64_t drops = ihc__transport_drops(&a->tp);
    free_agent(a);
    ihc_log(IHC_LOG_INFO, IHC__LOG,
            "agent closed agent=%s sessions_ended=%zu interrupts=%llu "
            "bad_messages=%llu dropped_sends=%llu",
            id, n, (unsigned long long)interrupts, (unsigned long long)bad,
            (unsigned long long)drops);
}

const char *ihc_agent_id(const ihc_agent *a)
{
    return a ? a->id : NULL;
}

bool ihc_agent_connected(const ihc_agent *a)
{
    if (!a)
        return false;
    ihc_agent *m = (ihc_agent *)a; /* atomics are read through non-const pointers */
    int sub = 0, push = 0;
    ihc__transport_links(&m->tp, &sub, &push);
    return atomic_load(&m->synced) && sub > 0 && push > 0;
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
