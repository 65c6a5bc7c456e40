/* Sessions of an agent: live tables with epochs stamped under the agent lock, should_interrupt
 * flags, generators (registered or spawned threads), reaping of expired sessions, and the
 * escalation thread that signals session processes that do not stop in time. */
#include "agent_int.h"

#include "clock.h"
#include "thread.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* ---- generators ---- */

struct ihc_generator {
    ihc__genset *gs;
    char sid[IHC_ID_MAX + 1];
    char hw[IHC_HW_MAX + 1];
    char module[IHC_ID_MAX + 1];
    ihc_token *tok; /* the session's token, one reference */
    ihc_generator_stop_fn stop;
    void *arg;
    bool stop_called, in_stop;
    pthread_t stopper;
    bool spawned, detached;
    pthread_t thread;
    ihc_work_fn fn;
    void *warg;
    struct ihc_generator *prev, *next;
};

struct ihc__genset {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a generator finished or a stop call returned */
    int refs;          /* the agent's, plus one per live generator */
    ihc_generator *live;
    size_t n_live;
    ihc_generator *finished; /* spawned generators whose thread must be joined */
};

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strnlen(src, cap - 1) : 0;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- tables ---- */

int ihc__sessions_init(ihc_agent *a)
{
    if (pthread_mutex_init(&a->send_lock, NULL) != 0)
        return IHC_ENOMEM;
    if (pthread_mutex_init(&a->lock, NULL) != 0) {
        pthread_mutex_destroy(&a->send_lock);
        return IHC_ENOMEM;
    }
    if (ihc_cond_init_mono(&a->esc_cv) != 0) {
        pthread_mutex_destroy(&a->lock);
        pthread_mutex_destroy(&a->send_lock);
        return IHC_ENOMEM;
    }
    if (ihc_cond_init_mono(&a->report_cv) != 0) {
        pthread_cond_destroy(&a->esc_cv);
        pthread_mutex_destroy(&a->lock);
        pthread_mutex_destroy(&a->send_lock);
        return IHC_ENOMEM;
    }
    return IHC_OK;
}

static void ext_free(ihc__session *s)
{
    for (size_t i = 0; i < s->n_ext; i++) {
        free(s->ext[i].name);
        free(s->ext[i].error);
    }
    free(s->ext);
    s->ext = NULL;
    s->n_ext = 0;
}

static void session_free(ihc__session *s)
{
    ext_free(s);
    ihc_token_release(s->tok);
    free(s->module);
    free(s->data);
    free(s);
}

void ihc__session_put(ihc__session *s)
{
    if (--s->refs == 0)
        session_free(s);
}

void ihc__sessions_fini(ihc_agent *a)
{
    while (a->esc) {
        ihc__session *s = a->esc;
        a->esc = s->esc_next;
        s->escalating = false;
        ihc__session_put(s);
    }
    ihc__cancel_drop_begins(a);
    while (a->sessions)
        ihc__session_unlink(a, a->sessions);
    for (size_t i = 0; i < IHC__HW_BUCKETS; i++) {
        while (a->hws[i]) {
            ihc__hwent *e = a->hws[i];
            a->hws[i] = e->next;
            free(e);
        }
    }
    a->n_hws = a->n_hws_idle = 0;
    pthread_cond_destroy(&a->report_cv);
    pthread_cond_destroy(&a->esc_cv);
    pthread_mutex_destroy(&a->lock);
    pthread_mutex_destroy(&a->send_lock);
}

ihc__hwent *ihc__hw_get(ihc_agent *a, const char *hw, bool create)
{
    uint32_t b = hash_str(hw) % IHC__HW_BUCKETS;
    for (ihc__hwent *e = a->hws[b]; e; e = e->next)
        if (strcmp(e->hw, hw) == 0)
            return e;
    if (!create)
        return NULL;
    ihc__hwent *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    copy_str(e->hw, sizeof(e->hw), hw);
    /* its broadcasts from now on, before any session of it is announced */
    ihc__transport_subscribe(&a->tp, hw, true);
    e->next = a->hws[b];
    a->hws[b] = e;
    a->n_hws++;
    a->n_hws_idle++;
    return e;
}

static ihc__session *find_live(ihc_agent *a, const char *sid)
{
    for (ihc__session *s = a->by_id[hash_str(sid) % IHC__ID_BUCKETS]; s; s = s->id_next)
        if (strcmp(s->id, sid) == 0)
            return s;
    return NULL;
}

/* a->lock held. The session is created now: the list stays in creation order. */
static void link_session(ihc_agent *a, ihc__session *s, ihc__hwent *e)
{
    s->created_ms = ihc_now_ms();
    s->created_ns = ihc_mono_ns();
    s->prev = a->sessions_tail;
    if (a->sessions_tail)
        a->sessions_tail->next = s;
    else
        a->sessions = s;
    a->sessions_tail = s;
    s->hwe = e;
    s->hw_next = e->sessions;
    if (e->sessions)
        e->sessions->hw_prev = s;
    e->sessions = s;
    if (e->n_sessions++ == 0)
        a->n_hws_idle--;
    uint32_t b = hash_str(s->id) % IHC__ID_BUCKETS;
    s->id_next = a->by_id[b];
    a->by_id[b] = s;
    a->n_sessions++;
    s->live = true;
    s->refs++;
}

void ihc__session_unlink(ihc_agent *a, ihc__session *s)
{
    if (!s->live)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        a->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        a->sessions_tail = s->prev;
    ihc__hwent *e = s->hwe;
    if (s->hw_prev)
        s->hw_prev->hw_next = s->hw_next;
    else
        e->sessions = s->hw_next;
    if (s->hw_next)
        s->hw_next->hw_prev = s->hw_prev;
    if (--e->n_sessions == 0)
        a->n_hws_idle++;
    ihc__session **pp = &a->by_id[hash_str(s->id) % IHC__ID_BUCKETS];
    while (*pp != s)
        pp = &(*pp)->id_next;
    *pp = s->id_next;
    s->prev = s->next = s->hw_prev = s->hw_next = s->id_next = NULL;
    a->n_sessions--;
    s->live = false;
    ihc__session_put(s);
}

bool ihc__session_claim(ihc__session *s)
{
    if (s->cancelled)
        return false;
    s->cancelled = true;
    ihc_token_cancel(s->tok);
    s->refs++;
    return true;
}

ihc_session_info ihc__session_describe(const ihc__session *s)
{
    return (ihc_session_info){.session_id = (char *)s->id, /* the message only reads them */
                              .hw = (char *)s->hw,
                              .epoch = s->epoch,
                              .gepoch = s->gepoch,
                              .created_ms = s->created_ms,
                              .module = s->module,
                              .pid = (int32_t)s->pid,
                              .data = s->data};
}

/* Encodes a session event about s (lock held). NULL when encoding failed (logged). An end of
 * a session whose begin waits for a report sends that begin first. */
static uint8_t *encode_event(ihc_agent *a, ihc__session *s, const char *state, size_t *len)
{
    ihc_msg m = {0};
    if (state) {
        ihc__cancel_release_begin(a, s);
        m.type = IHC_MSG_SESSION_END;
        m.u.session_end.agent = a->id;
        m.u.session_end.session_id = (char *)s->id;
        m.u.session_end.hw = (char *)s->hw;
        m.u.session_end.state = (char *)state;
    } else {
        m.type = IHC_MSG_SESSION_BEGIN;
        m.u.session_begin.agent = a->id;
        m.u.session_begin.session = ihc__session_describe(s);
    }
    uint8_t *buf = NULL;
    int rc = ihc_wire_encode(&m, a->auth, &buf, len);
    if (rc != IHC_OK) {
        ihc_log(IHC_LOG_WARN, IHC__LOG, "cannot encode %s session=%s err=\"%s\"",
                ihc_msg_type_name(m.type), s->id, ihc_strerror(rc));
        return NULL;
    }
    return buf;
}

uint8_t *ihc__session_encode_begin(ihc_agent *a, ihc__session *s, size_t *len)
{
    return encode_event(a, s, NULL, len);
}

void ihc__send_session_end(ihc_agent *a, ihc__session *s, const char *state)
{
    size_t len = 0;
    uint8_t *buf = encode_event(a, s, state, &len);
    if (buf)
        ihc__transport_send(&a->tp, buf, len, "session_end");
}

/* ---- public session API ---- */

int ihc_agent_session_begin(ihc_agent *a, const ihc_session_opts *o, ihc_token **tok, char *sid,
                            size_t sid_len)
{
    if (!a || !o || !tok)
        return IHC_EINVAL;
    *tok = NULL;
    if (!o->hw || !ihc_hw_valid(o->hw, strlen(o->hw), false)) {
        ihc_log(IHC_LOG_DEBUG, IHC__LOG, "session refused: invalid hardware_id");
        return IHC_EBADHW;
    }
    if (o->session_id && !ihc_id_valid(o->session_id, strlen(o->session_id)))
        return IHC_EBADID;
    if (o->module && !ihc_id_valid(o->module, strlen(o->module)))
        return IHC_EBADID;
    if (o->data && strlen(o->data) > IHC_DATA_MAX)
        return IHC_ETOOBIG;
    if (sid && sid_len < IHC_ID_MAX + 1)
        return IHC_EINVAL;

    ihc__session *s = calloc(1, sizeof(*s));
    if (!s)
        return IHC_ENOMEM;
    int rc = IHC_ENOMEM;
    if ((o->module && !(s->module = strdup(o->module))) ||
        (o->data && !(s->data = strdup(o->data))))
        goto fail;
    if ((rc = ihc__token_new(&s->tok, NULL)) != IHC_OK)
        goto fail;
    copy_str(s->hw, sizeof(s->hw), o->hw);
    s->pid = o->pid > 0 ? o->pid : 0;
    s->on_cancel = o->on_cancel;
    s->arg = o->arg;

    pthread_mutex_lock(&a->send_lock); /* the session_begin goes out in order with hellos */
    pthread_mutex_lock(&a->lock);
    if (a->n_sessions >= (size_t)a->o.max_active_sessions) {
        pthread_mutex_unlock(&a->lock);
        pthread_mutex_unlock(&a->send_lock);
        ihc_log(IHC_LOG_WARN, IHC__LOG,
                "session refused: MAX_ACTIVE_SESSIONS reached hw=%s max_active_sessions=%d", o->hw,
                a->o.max_active_sessions);
        rc = IHC_ELIMIT;
        goto fail;
    }
    if (o->session_id) {
        if (find_live(a, o->session_id)) {
            pthread_mutex_unlock(&a->lock);
            pthread_mutex_unlock(&a->send_lock);
            rc = IHC_EEXIST;
            goto fail;
        }
        copy_str(s->id, sizeof(s->id), o->session_id);
    } else {
        /* "<hw>-<tag>-<n>": the tag (random, drawn at open) keeps ids
         * of different agents, and of this agent's earlier runs, apart — session keys in
         * Redis and the coordinator's registry are per hardware_id, not per agent. The hw
         * is cut so the id stays within IHC_ID_MAX. */
        do {
            char num[40];
            int nl = snprintf(num, sizeof(num), "-%08x-%llu", a->id_tag,
                              (unsigned long long)++a->id_counter);
            size_t hl = strlen(s->hw);
            if (hl + (size_t)nl > IHC_ID_MAX)
                hl = IHC_ID_MAX - (size_t)nl;
            memcpy(s->id, s->hw, hl);
            memcpy(s->id + hl, num, (size_t)nl + 1);
        } while (find_live(a, s->id));
    }
    ihc__hwent *e = ihc__hw_get(a, s->hw, true);
    if (!e) {
        pthread_mutex_unlock(&a->lock);
        pthread_mutex_unlock(&a->send_lock);
        rc = IHC_ENOMEM;
        goto fail;
    }
    /* stamped under the same lock interrupts fence with: linearizable against them */
    s->epoch = e->epoch;
    s->gepoch = a->gepoch;
    copy_str(s->tok->sid, sizeof(s->tok->sid), s->id);
    link_session(a, s, e);
    ihc_token_retain(s->tok);
    *tok = s->tok;
    if (sid)
        memcpy(sid, s->id, strlen(s->id) + 1);
    size_t len = 0;
    /* held for the report of the interrupt being handled, or sent now */
    uint8_t *buf = ihc__cancel_hold_begin(a, s) ? NULL : encode_event(a, s, NULL, &len);
    pthread_mutex_unlock(&a->lock);
    if (buf)
        ihc__transport_send(&a->tp, buf, len, "session_begin");
    pthread_mutex_unlock(&a->send_lock);
    return IHC_OK;
fail:
    if (s->tok)
        ihc_token_release(s->tok);
    free(s->module);
    free(s->data);
    free(s);
    return rc;
}

int ihc_agent_session_end(ihc_agent *a, const char *session_id)
{
    if (!a || !session_id)
        return IHC_EINVAL;
    pthread_mutex_lock(&a->send_lock); /* the session_end goes out in order with hellos */
    pthread_mutex_lock(&a->lock);
    ihc__session *s = find_live(a, session_id);
    if (s) {
        s->ended = true;
        s->report_in = true; /* nothing more comes from an owner that ended it */
        pthread_cond_broadcast(&a->report_cv);
        size_t len = 0;
        uint8_t *buf = encode_event(a, s, s->cancelled ? "interrupted" : "done", &len);
        if (s->escalating)
            pthread_cond_signal(&a->esc_cv);
        ihc__session_unlink(a, s);
        pthread_mutex_unlock(&a->lock);
        if (buf)
            ihc__transport_send(&a->tp, buf, len, "session_end");
        pthread_mutex_unlock(&a->send_lock);
        return IHC_OK;
    }
    /* cleaned up by an interrupt but still watched: the owner ending it stops escalation */
    for (ihc__session *e = a->esc; e; e = e->esc_next) {
        if (!e->ended && strcmp(e->id, session_id) == 0) {
            e->ended = true;
            pthread_cond_signal(&a->esc_cv);
            pthread_mutex_unlock(&a->lock);
            pthread_mutex_unlock(&a->send_lock);
            return IHC_OK;
        }
    }
    pthread_mutex_unlock(&a->lock);
    pthread_mutex_unlock(&a->send_lock);
    return IHC_ENOENT;
}

size_t ihc_agent_session_count(ihc_agent *a)
{
    if (!a)
        return 0;
    pthread_mutex_lock(&a->lock);
    size_t n = a->n_sessions;
    pthread_mutex_unlock(&a->lock);
    return n;
}

bool ihc_agent_should_interrupt(ihc_agent *a, const char *hw)
{
    if (!a || !hw || !ihc_hw_valid(hw, strlen(hw), true))
        return false;
    uint64_t now = ihc_mono_ns();
    pthread_mutex_lock(&a->lock);
    bool r = now < a->gflag_until_ns;
    if (!r && strcmp(hw, "*") != 0) {
        ihc__hwent *e = ihc__hw_get(a, hw, false);
        r = e && now < e->flag_until_ns;
    }
    pthread_mutex_unlock(&a->lock);
    return r;
}

/* ---- after a cancel ---- */

void ihc__sessions_notify(ihc_agent *a, ihc__session **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i]->on_cancel)
            v[i]->on_cancel(v[i]->id, v[i]->arg);
    ihc__gens_stop_cancelled(a);
}

void ihc__sessions_cleanup(ihc_agent *a, ihc__session **v, size_t n, const char *state,
                           int reported_to)
{
    bool send_end = reported_to == IHC__REPORTED_NONE || (reported_to >= 0 && a->tp.n_links > 1);
    for (size_t i = 0; i < n; i++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        pthread_mutex_lock(&a->send_lock); /* in order with hellos, as in session_end */
        pthread_mutex_lock(&a->lock);
        if (v[i]->live) {
            if (send_end)
                buf = encode_event(a, v[i], state, &len);
            ihc__session_unlink(a, v[i]);
        }
        pthread_mutex_unlock(&a->lock);
        if (buf)
            ihc__transport_send_except(&a->tp, buf, len, "session_end", reported_to);
        pthread_mutex_unlock(&a->send_lock);
    }
}

void ihc__sessions_escalate(ihc_agent *a, ihc__session **v, size_t n)
{
    if (!a->o.force_cleanup)
        return;
    for (size_t i = 0; i < n; i++) {
        ihc__session *s = v[i];
        if (s->pid <= 0)
            continue;
        double t = ihc__modules_timeout(&a->mods, s->module, a->o.default_module_timeout);
        pthread_mutex_lock(&a->lock);
        if (!s->escalating && !s->ended && a->esc_started) {
            s->escalating = true;
            s->esc_stage = 0;
            s->esc_at_ns = ihc_mono_ns() + ihc_s_to_ns(t);
            s->refs++;
            s->esc_next = a->esc;
            a->esc = s;
            pthread_cond_signal(&a->esc_cv);
            ihc_log(IHC_LOG_INFO, IHC__LOG, "escalation armed session=%s pid=%d timeout_ms=%.0f",
                    s->id, (int)s->pid, t * 1000.0);
        }
        pthread_mutex_unlock(&a->lock);
    }
}

void ihc__sessions_release(ihc_agent *a, ihc__session **v, size_t n)
{
    if (!n)
        return;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < n; i++)
        ihc__session_put(v[i]);
    pthread_mutex_unlock(&a->lock);
}

/* ---- escalation ---- */

/* True when pid has exited. A child is checked with WNOWAIT so its owner can still reap it. */
static bool process_gone(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0)
        return si.si_pid == pid;
    if (errno != ECHILD)
        return false;
    return kill(pid, 0) != 0 && errno == ESRCH;
}

static void *escalator_main(void *arg)
{
    ihc_agent *a = arg;
    ihc_thread_name("ihc:escalator");
    pthread_mutex_lock(&a->lock);
    while (!a->esc_stop) {
        uint64_t now = ihc_mono_ns();
        uint64_t next = UINT64_MAX;
        ihc__session **pp = &a->esc;
        while (*pp) {
            ihc__session *s = *pp;
            bool done = false;
            if (s->ended) {
                ihc_log(IHC_LOG_INFO, IHC__LOG,
                        "escalation done: session ended by its owner "
                        "session=%s pid=%d",
                        s->id, (int)s->pid);
                done = true;
            } else if (process_gone(s->pid)) {
                ihc_log(IHC_LOG_INFO, IHC__LOG,
                        "escalation done: process exited session=%s "
                        "pid=%d",
                        s->id, (int)s->pid);
                done = true;
            } else if (now >= s->esc_at_ns) {
                if (s->esc_stage == 0) {
                    int rv = kill(s->pid, SIGTERM);
                    ihc_log(IHC_LOG_WARN, IHC__LOG,
                            "session did not stop in time: SIGTERM session=%s pid=%d%s", s->id,
                            (int)s->pid, rv == 0 ? "" : " err=\"kill failed\"");
                    s->esc_stage = 1;
                    s->esc_at_ns = now + ihc_s_to_ns(a->o.kill_grace);
                } else {
                    int rv = kill(s->pid, SIGKILL);
                    ihc_log(IHC_LOG_WARN, IHC__LOG,
                            "session still running after SIGTERM: SIGKILL session=%s pid=%d%s",
                            s->id, (int)s->pid, rv == 0 ? "" : " err=\"kill failed\"");
                    done = true;
                }
            }
            if (done) {
                *pp = s->esc_next;
                s->escalating = false;
                ihc__session_put(s);
                continue;
            }
            if (s->esc_at_ns < next)
                next = s->esc_at_ns;
            pp = &s->esc_next;
        }
        if (!a->esc) {
            pthread_cond_wait(&a->esc_cv, &a->lock);
            continue;
        }
        /* exits are noticed by polling */
        uint64_t poll_at = now + 10 * 1000000ull;
        if (poll_at < next)
            next = poll_at;
        struct timespec ts = ihc_mono_abstime(next);
        pthread_cond_timedwait(&a->esc_cv, &a->lock, &ts);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

int ihc__escalator_start(ihc_agent *a)
{
    if (pthread_create(&a->esc_thread, NULL, escalator_main, a) != 0)
        return IHC_ENOMEM;
    a->esc_started = true;
    return IHC_OK;
}

void ihc__escalator_stop(ihc_agent *a)
{
    if (!a->esc_started)
        return;
    pthread_mutex_lock(&a->lock);
    a->esc_stop = true;
    a->esc_started = false;
    for (ihc__session *s = a->esc; s; s = s->esc_next)
        ihc_log(IHC_LOG_WARN, IHC__LOG, "agent closing: escalation abandoned session=%s pid=%d",
                s->id, (int)s->pid);
    pthread_cond_signal(&a->esc_cv);
    pthread_mutex_unlock(&a->lock);
    pthread_join(a->esc_thread, NULL);
}

/* ---- periodic work ---- */

static void gens_reap(ihc__genset *gs);

void ihc__sessions_tick(ihc_agent *a)
{
    ihc__session **v = a->cx.victims;
    size_t n = 0;
    uint64_t ttl = ihc_s_to_ns(a->o.session_timeout);
    pthread_mutex_lock(&a->lock);
    /* read under the lock: a session begun while we waited for it must not look created in
     * the future (now - created_ns would wrap and expire it at once). Oldest first: the walk
     * ends at the first session too young, so a tick costs what expires, not every session. */
    uint64_t now = ihc_mono_ns();
    for (ihc__session *s = a->sessions; s && n < a->cx.victims_cap; s = s->next) {
        if (now - s->created_ns < ttl)
            break;
        if (!s->cancelled && ihc__session_claim(s))
            v[n++] = s;
    }
    if (a->n_hws > IHC__HW_KEEP && a->n_hws_idle > 0) {
        /* forgetting an idle hw's epoch is safe: sync compares creation times and interrupt
         * ids are deduplicated */
        for (size_t b = 0; b < IHC__HW_BUCKETS; b++) {
            ihc__hwent **pp = &a->hws[b];
            while (*pp) {
                ihc__hwent *e = *pp;
                if (e->n_sessions == 0 && now >= e->flag_until_ns) {
                    *pp = e->next;
                    ihc__transport_subscribe(&a->tp, e->hw, false);
                    free(e);
                    a->n_hws--;
                    a->n_hws_idle--;
                } else {
                    pp = &e->next;
                }
            }
        }
    }
    pthread_mutex_unlock(&a->lock);
    for (size_t i = 0; i < n; i++)
        ihc_log(IHC_LOG_INFO, IHC__LOG, "session expired session=%s hw=%s session_timeout=%g",
                v[i]->id, v[i]->hw, a->o.session_timeout);
    if (n) {
        ihc__sessions_notify(a, v, n);
        ihc__sessions_cleanup(a, v, n, "expired", IHC__REPORTED_NONE);
        ihc__sessions_release(a, v, n);
    }
    gens_reap(a->gs);
}

/* ---- generator set ---- */

int ihc__gens_new(ihc_agent *a)
{
    ihc__genset *gs = calloc(1, sizeof(*gs));
    if (!gs)
        return IHC_ENOMEM;
    if (pthread_mutex_init(&gs->mu, NULL) != 0) {
        free(gs);
        return IHC_ENOMEM;
    }
    if (ihc_cond_init_mono(&gs->cv) != 0) {
        pthread_mutex_destroy(&gs->mu);
        free(gs);
        return IHC_ENOMEM;
    }
    gs->refs = 1;
    a->gs = gs;
    return IHC_OK;
}

static void gs_free(ihc__genset *gs)
{
    while (gs->finished) {
        ihc_generator *g = gs->finished;
        gs->finished = g->next;
        free(g);
    }
    pthread_cond_destroy(&gs->cv);
    pthread_mutex_destroy(&gs->mu);
    free(gs);
}

static void gens_reap(ihc__genset *gs)
{
    pthread_mutex_lock(&gs->mu);
    ihc_generator *list = gs->finished;
    gs->finished = NULL;
    pthread_mutex_unlock(&gs->mu);
    while (list) {
        ihc_generator *g = list;
        list = g->next;
        pthread_join(g->thread, NULL);
        free(g);
    }
}

static bool gen_match(const ihc_generator *g, const char *sid, const char *hw)
{
    return (!sid || strcmp(g->sid, sid) == 0) && (!hw || strcmp(g->hw, hw) == 0);
}

void ihc__gens_stop_cancelled(ihc_agent *a)
{
    ihc__genset *gs = a->gs;
    pthread_mutex_lock(&gs->mu);
again:
    for (ihc_generator *g = gs->live; g; g = g->next) {
        if (g->stop_called || !ihc_token_cancelled(g->tok))
            continue;
        g->stop_called = true;
        if (!g->stop)
            continue;
        /* the call runs unlocked; done() waits for it, so g and its arg stay valid */
        g->in_stop = true;
        g->stopper = pthread_self();
        pthread_mutex_unlock(&gs->mu);
        g->stop(g->arg);
        pthread_mutex_lock(&gs->mu);
        g->in_stop = false;
        pthread_cond_broadcast(&gs->cv);
        goto again;
    }
    pthread_mutex_unlock(&gs->mu);
}

static int gen_new(ihc_agent *a, const char *sid, const char *module, ihc_generator **out)
{
    if (!a || !sid || !out)
        return IHC_EINVAL;
    if (module && !ihc_id_valid(module, strlen(module)))
        return IHC_EBADID;
    ihc_generator *g = calloc(1, sizeof(*g));
    if (!g)
        return IHC_ENOMEM;
    pthread_mutex_lock(&a->lock);
    ihc__session *s = find_live(a, sid);
    if (!s) {
        pthread_mutex_unlock(&a->lock);
        free(g);
        return IHC_ENOENT;
    }
    ihc_token_retain(s->tok);
    g->tok = s->tok;
    copy_str(g->sid, sizeof(g->sid), s->id);
    copy_str(g->hw, sizeof(g->hw), s->hw);
    pthread_mutex_unlock(&a->lock);
    copy_str(g->module, sizeof(g->module), module);
    g->gs = a->gs;
    *out = g;
    return IHC_OK;
}

/* gs->mu held. */
static void gen_link(ihc__genset *gs, ihc_generator *g)
{
    g->prev = NULL;
    g->next = gs->live;
    if (gs->live)
        gs->live->prev = g;
    gs->live = g;
    gs->n_live++;
    gs->refs++;
}

int ihc_agent_generator_add(ihc_agent *a, const char *session_id, const char *module,
                            ihc_generator_stop_fn stop, void *arg, ihc_generator **g)
{
    ihc_generator *n = NULL;
    int rc = gen_new(a, session_id, module, &n);
    if (rc != IHC_OK)
        return rc;
    n->stop = stop;
    n->arg = arg;
    pthread_mutex_lock(&a->gs->mu);
    gen_link(a->gs, n);
    pthread_mutex_unlock(&a->gs->mu);
    *g = n;
    return IHC_OK;
}

void ihc_generator_done(ihc_generator *g)
{
    if (!g)
        return;
    ihc__genset *gs = g->gs;
    pthread_mutex_lock(&gs->mu);
    while (g->in_stop && !pthread_equal(g->stopper, pthread_self()))
        pthread_cond_wait(&gs->cv, &gs->mu);
    if (g->prev)
        g->prev->next = g->next;
    else
        gs->live = g->next;
    if (g->next)
        g->next->prev = g->prev;
    gs->n_live--;
    ihc_token *tok = g->tok;
    g->tok = NULL;
    bool keep = g->spawned && !g->detached; /* joined, then freed, by the reaper */
    if (keep) {
        g->prev = NULL;
        g->next = gs->finished;
        gs->finished = g;
    }
    pthread_cond_broadcast(&gs->cv);
    bool last = --gs->refs == 0;
    pthread_mutex_unlock(&gs->mu);
    ihc_token_release(tok);
    if (!keep)
        free(g);
    if (last)
        gs_free(gs);
}

static void *spawn_main(void *arg)
{
    ihc_generator *g = arg;
    g->fn(g->tok, g->warg);
    ihc_generator_done(g); /* g belongs to the reaper (or is freed) after this */
    return NULL;
}

int ihc_agent_spawn(ihc_agent *a, const char *session_id, const char *module, ihc_work_fn fn,
                    void *arg)
{
    if (!fn)
        return IHC_EINVAL;
    ihc_generator *g = NULL;
    int rc = gen_new(a, session_id, module, &g);
    if (rc != IHC_OK)
        return rc;
    g->spawned = true;
    g->fn = fn;
    g->warg = arg;
    ihc__genset *gs = a->gs;
    /* created under gs->mu so g->thread is stored before the thread can finish */
    pthread_mutex_lock(&gs->mu);
    gen_link(gs, g);
    int err = pthread_create(&g->thread, NULL, spawn_main, g);
    if (err != 0) {
        gs->live = g->next;
        if (g->next)
            g->next->prev = NULL;
        gs->n_live--;
        gs->refs--;
    }
    pthread_mutex_unlock(&gs->mu);
    if (err != 0) {
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "cannot start generator thread session=%s err=\"%s\"",
                session_id, strerror(err));
        ihc_token_release(g->tok);
        free(g);
        return IHC_ENOMEM;
    }
    return IHC_OK;
}

static size_t gens_count(ihc__genset *gs, const char *sid, const char *hw)
{
    size_t n = 0;
    for (ihc_generator *g = gs->live; g; g = g->next)
        n += gen_match(g, sid, hw);
    return n;
}

/* Cancels matching generators, calls their stop functions, waits until none is left or the
 * deadline (0: none) passes; returns how many are left. */
static size_t gens_stop_wait(ihc_agent *a, const char *sid, const char *hw, int timeout_ms)
{
    ihc__genset *gs = a->gs;
    uint64_t end = timeout_ms >= 0 ? ihc_mono_ns() + (uint64_t)timeout_ms * 1000000ull : 0;
    pthread_mutex_lock(&gs->mu);
    for (ihc_generator *g = gs->live; g; g = g->next)
        if (gen_match(g, sid, hw))
            ihc_token_cancel(g->tok);
    pthread_mutex_unlock(&gs->mu);
    ihc__gens_stop_cancelled(a);
    pthread_mutex_lock(&gs->mu);
    size_t left;
    while ((left = gens_count(gs, sid, hw)) > 0) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&gs->cv, &gs->mu);
            continue;
        }
        if (ihc_mono_ns() >= end)
            break;
        struct timespec ts = ihc_mono_abstime(end);
        pthread_cond_timedwait(&gs->cv, &gs->mu, &ts);
    }
    pthread_mutex_unlock(&gs->mu);
    return left;
}

int ihc_agent_generators_stop(ihc_agent *a, const char *session_id, const char *hw, int timeout_ms,
                              size_t *still_running)
{
    if (!a)
        return IHC_EINVAL;
    /* neither session_id nor hw: every generator of the agent */
    size_t left = gens_stop_wait(a, session_id, hw, timeout_ms);
    if (still_running)
        *still_running = left;
    return left ? IHC_ETIMEDOUT : IHC_OK;
}

void ihc__gens_close(ihc_agent *a, int timeout_ms)
{
    ihc__genset *gs = a->gs;
    if (!gs)
        return;
    size_t left = gens_stop_wait(a, NULL, NULL, timeout_ms);
    gens_reap(gs);
    pthread_mutex_lock(&gs->mu);
    for (ihc_generator *g = gs->live; g; g = g->next) {
        ihc_log(IHC_LOG_WARN, IHC__LOG,
                "agent closing: generator still running session=%s module=%s%s", g->sid,
                g->module[0] ? g->module : "-", g->spawned ? " (thread detached)" : "");
        if (g->spawned && !g->detached) {
            g->detached = true;
            pthread_detach(g->thread);
        }
    }
    (void)left;
    bool last = --gs->refs == 0;
    pthread_mutex_unlock(&gs->mu);
    a->gs = NULL;
    if (last)
        gs_free(gs);
}

/* ---- owners that run their own interrupt methods ---- */

int ihc__session_hold_report(ihc_agent *a, const char *session_id)
{
    if (!a || !session_id)
        return IHC_EINVAL;
    pthread_mutex_lock(&a->lock);
    ihc__session *s = find_live(a, session_id);
    if (s && !s->ended)
        s->report_held = true;
    pthread_mutex_unlock(&a->lock);
    return s ? IHC_OK : IHC_ENOENT;
}

int ihc__session_report(ihc_agent *a, const char *session_id, const ihc_module_result *mods,
                        size_t n)
{
    if (!a || !session_id || (n && !mods))
        return IHC_EINVAL;
    ihc_module_result *copy = n ? calloc(n, sizeof(*copy)) : NULL;
    if (n && !copy)
        return IHC_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        copy[i].status = mods[i].status;
        copy[i].time_ms = mods[i].time_ms;
        copy[i].name = strdup(mods[i].name ? mods[i].name : "");
        copy[i].error = mods[i].error ? strdup(mods[i].error) : NULL;
        if (!copy[i].name || (mods[i].error && !copy[i].error)) {
            for (size_t k = 0; k <= i; k++) {
                free(copy[k].name);
                free(copy[k].error);
            }
            free(copy);
            return IHC_ENOMEM;
        }
    }
    pthread_mutex_lock(&a->lock);
    ihc__session *s = find_live(a, session_id);
    if (s && !s->report_taken) {
        ext_free(s);
        s->ext = copy;
        s->n_ext = n;
        copy = NULL;
        s->report_in = true;
        pthread_cond_broadcast(&a->report_cv);
    }
    pthread_mutex_unlock(&a->lock);
    if (copy) {
        for (size_t k = 0; k < n; k++) {
            free(copy[k].name);
            free(copy[k].error);
        }
        free(copy);
    }
    return s ? IHC_OK : IHC_ENOENT;
}

int ihc__session_info(ihc_agent *a, const char *session_id, uint64_t *epoch, int64_t *created_ms)
{
    if (!a || !session_id)
        return IHC_EINVAL;
    pthread_mutex_lock(&a->lock);
    ihc__session *s = find_live(a, session_id);
    if (s) {
        *epoch = s->epoch;
        *created_ms = s->created_ms;
    }
    pthread_mutex_unlock(&a->lock);
    return s ? IHC_OK : IHC_ENOENT;
}

size_t ihc__sessions_await_reports(ihc_agent *a, ihc__session **v, size_t n, uint64_t until_ns)
{
    size_t results = 0;
    pthread_mutex_lock(&a->lock);
    for (;;) {
        bool waiting = false;
        results = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i]->report_held && !v[i]->report_in)
                waiting = true;
            results += v[i]->n_ext;
        }
        if (!waiting || ihc_mono_ns() >= until_ns)
            break;
        struct timespec ts = ihc_mono_abstime(until_ns);
        pthread_cond_timedwait(&a->report_cv, &a->lock, &ts);
    }
    for (size_t i = 0; i < n; i++)
        v[i]->report_taken = true; /* ext stays as it is until the session is freed */
    pthread_mutex_unlock(&a->lock);
    return results;
}
