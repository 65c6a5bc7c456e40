/* The cancel path: an interrupt (or a sync that shows one was missed) is fenced by epochs under
 * the session lock, then modules run, the report goes out, callbacks run, generators are
 * stopped, sessions cleaned up and escalation armed. Runs on the agent's receive thread. */
#include "agent_int.h"

#include "clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int ihc__cancel_init(ihc_agent *a)
{
    ihc__cancel *cx = &a->cx;
    memset(cx, 0, sizeof(*cx));
    cx->ring = calloc(IHC__DEDUPE_SIZE, sizeof(*cx->ring));
    cx->buckets = malloc(IHC__DEDUPE_BUCKETS * sizeof(*cx->buckets));
    cx->victims_cap = (size_t)a->o.max_active_sessions;
    cx->victims = calloc(cx->victims_cap, sizeof(*cx->victims));
    cx->sids = calloc(cx->victims_cap, sizeof(*cx->sids));
    if (!cx->ring || !cx->buckets || !cx->victims || !cx->sids)
        return IHC_ENOMEM;
    for (size_t i = 0; i < IHC__DEDUPE_BUCKETS; i++)
        cx->buckets[i] = -1;
    return IHC_OK;
}

void ihc__cancel_fini(ihc_agent *a)
{
    ihc__cancel *cx = &a->cx;
    if (cx->ring)
        for (size_t i = 0; i < IHC__DEDUPE_SIZE; i++)
            free(cx->ring[i].report);
    free(cx->ring);
    free(cx->buckets);
    free(cx->victims);
    free(cx->sids);
    free(cx->res);
    memset(cx, 0, sizeof(*cx));
}

/* ---- dedupe by (term, interrupt id) ----
 * With several coordinators the same interrupt may arrive more than once (from each, or
 * re-sent); a new leader's ids are its own, so the pair names one interrupt. */

static size_t bucket_of(uint64_t term, uint64_t id)
{
    return (size_t)(((id ^ (term * 0xC2B2AE3D27D4EB4Full)) * 0x9E3779B97F4A7C15ull) >> 52) %
           IHC__DEDUPE_BUCKETS;
}

static ihc__handled *dedupe_find(ihc__cancel *cx, uint64_t term, uint64_t id)
{
    for (int i = cx->buckets[bucket_of(term, id)]; i >= 0; i = cx->ring[i].next)
        if (cx->ring[i].id == id && cx->ring[i].term == term)
            return &cx->ring[i];
    return NULL;
}

/* Remembers that (term, id) was handled; takes ownership of report (may be NULL). */
static void dedupe_put(ihc__cancel *cx, uint64_t term, uint64_t id, uint64_t epoch, const char *hw,
                       uint8_t *report, size_t len)
{
    ihc__handled *h = dedupe_find(cx, term, id);
    if (!h) {
        int slot = (int)cx->pos;
        cx->pos = (cx->pos + 1) % IHC__DEDUPE_SIZE;
        h = &cx->ring[slot];
        if (h->used) { /* evict the oldest */
            int *pp = &cx->buckets[bucket_of(h->term, h->id)];
            while (*pp != slot)
                pp = &cx->ring[*pp].next;
            *pp = h->next;
            free(h->report);
        }
        size_t b = bucket_of(term, id);
        h->next = cx->buckets[b];
        cx->buckets[b] = slot;
        h->used = true;
    } else {
        free(h->report);
    }
    h->id = id;
    h->term = term;
    h->epoch = epoch;
    snprintf(h->hw, sizeof(h->hw), "%s", hw);
    h->report = report;
    h->report_len = len;
}

/* ---- session_begins held for the report ----
 * A session begun inside an on_cancel callback (a service starting the next piece of work as
 * it stops the last) is announced in the interrupt's report: one message to the coordinator
 * where there were two. Only to a coordinator that said it reads them (sync.report_begun);
 * the others get the session_begin. Until the report goes out, the coordinator still counts
 * the interrupted session, so the agent is expected for the hardware_id all along. */

/* The agent whose on_cancel callbacks run on this thread, while they may hold begins. */
static _Thread_local ihc_agent *holding;

bool ihc__cancel_hold_begin(ihc_agent *a, ihc__session *s)
{
    ihc__cancel *cx = &a->cx;
    if (holding != a || cx->n_held == IHC__HELD_BEGINS_MAX || strcmp(s->hw, cx->hold_hw) != 0)
        return false;
    s->refs++;
    s->begin_held = true;
    cx->held[cx->n_held++] = s;
    return true;
}

/* Lock held: removes held[i], keeping the order; returns it (with its reference). */
static ihc__session *held_take(ihc__cancel *cx, size_t i)
{
    ihc__session *s = cx->held[i];
    memmove(&cx->held[i], &cx->held[i + 1], (cx->n_held - i - 1) * sizeof(cx->held[0]));
    cx->n_held--;
    s->begin_held = false;
    return s;
}

void ihc__cancel_release_begin(ihc_agent *a, ihc__session *s)
{
    ihc__cancel *cx = &a->cx;
    if (!s->begin_held)
        return;
    for (size_t i = 0; i < cx->n_held; i++)
        if (cx->held[i] == s) {
            held_take(cx, i);
            size_t len = 0;
            uint8_t *msg = ihc__session_encode_begin(a, s, &len);
            if (msg)
                ihc__transport_send(&a->tp, msg, len, "session_begin");
            ihc__session_put(s); /* the caller holds its own */
            return;
        }
}

void ihc__cancel_drop_begins(ihc_agent *a)
{
    ihc__cancel *cx = &a->cx;
    while (cx->n_held)
        ihc__session_put(held_take(cx, 0));
}

/* send_lock held: takes the held begins into v (with their references) and describes them
 * in cx->begun for the report. Returns how many. */
static size_t begins_take(ihc_agent *a, ihc__session **v)
{
    ihc__cancel *cx = &a->cx;
    pthread_mutex_lock(&a->lock);
    size_t n = cx->n_held;
    for (size_t i = 0; i < n; i++) {
        v[i] = cx->held[i];
        v[i]->begin_held = false;
        cx->begun[i] = ihc__session_describe(v[i]);
    }
    cx->n_held = 0;
    pthread_mutex_unlock(&a->lock);
    return n;
}

/* send_lock held: after the report (which announced them when in_report), the held
 * sessions' session_begins go to the coordinators that did not hear of them (none, with one
 * coordinator that read the report). */
static void begins_send(ihc_agent *a, ihc__session **v, size_t n, bool in_report, int link)
{
    bool others = !in_report || a->tp.n_links > 1;
    pthread_mutex_lock(&a->lock);
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        uint8_t *msg = others ? ihc__session_encode_begin(a, v[i], &len) : NULL;
        if (msg) /* under the lock: the reference held is dropped here */
            ihc__transport_send_except(&a->tp, msg, len, "session_begin", in_report ? link : -1);
        ihc__session_put(v[i]);
    }
    pthread_mutex_unlock(&a->lock);
}

/* ---- the common part of interrupts and catch-ups ---- */

/* Everything after fencing: cx->victims holds n claimed sessions. False when the calling thread
 * was displaced while it ran the modules (the rescue finishes the interrupt). */
static bool cancel_run(ihc_agent *a, const char *hw, uint64_t id, uint64_t term, int link,
                       uint64_t epoch, size_t n, uint64_t t0)
{
    ihc__cancel *cx = &a->cx;
    ihc__session **v = cx->victims;
    /* owners hear first: they may be waiting on something other than the token */
    cx->current_id = id;
    if (id != 0 && strcmp(hw, "*") != 0 && ihc__transport_report_begun(&a->tp, link)) {
        cx->hold_hw = hw;
        holding = a;
    }
    for (size_t i = 0; i < n; i++)
        if (v[i]->on_cancel)
            v[i]->on_cancel(v[i]->id, v[i]->arg);
    holding = NULL;
    cx->hold_hw = NULL;
    cx->current_id = 0;
    cx->current_reason = NULL;

    ihc__cancel_run *r = &cx->run;
    snprintf(r->hw, sizeof(r->hw), "%s", hw);
    r->id = id;
    r->term = term;
    r->link = link;
    r->epoch = epoch;
    r->t0 = t0;
    r->n = n;
    r->head = ihc__modules_snapshot(&a->mods, &r->nm);
    if (!ihc__modules_run(&a->mods, r->head, r->nm, r->hw, id != 0))
        return false;
    ihc__cancel_resume(a);
    return true;
}

/* The report of the interrupt in cx->run, with nr module results in cx->res and the sessions
 * begun meanwhile; kept for re-sends. False when it could not be encoded (logged). */
static bool report_send(ihc_agent *a, size_t nr, double time_ms)
{
    ihc__cancel *cx = &a->cx;
    const ihc__cancel_run *r = &cx->run;
    for (size_t i = 0; i < r->n; i++)
        cx->sids[i] = cx->victims[i]->id;
    ihc_msg msg = {.type = IHC_MSG_REPORT};
    msg.u.report = (ihc_report_msg){.id = r->id,
                                    .agent = a->id,
                                    .hw = (char *)r->hw,
                                    .modules = cx->res,
                                    .n_modules = nr,
                                    .sessions = cx->sids,
                                    .n_sessions = r->n,
                                    .time_ms = time_ms,
                                    .term = r->term};
    /* a session that ends from now on has its end sent after the message announcing it */
    pthread_mutex_lock(&a->send_lock);
    ihc__session *held[IHC__HELD_BEGINS_MAX];
    size_t nh = begins_take(a, held);
    uint8_t *buf = NULL, *keep = NULL;
    size_t len = 0, keep_len = 0;
    int rc = IHC_OK;
    bool in_report = nh > 0 && ihc__transport_report_begun(&a->tp, r->link);
    if (in_report) {
        msg.u.report.begun = cx->begun;
        msg.u.report.n_begun = nh;
        if ((rc = ihc_wire_encode(&msg, a->auth, &buf, &len)) != IHC_OK) {
            ihc_log(IHC_LOG_WARN, IHC__LOG,
                    "report cannot carry its begun sessions: sent on their own id=%llu hw=%s "
                    "sessions=%zu err=\"%s\"",
                    (unsigned long long)r->id, r->hw, nh, ihc_strerror(rc));
            in_report = false;
        }
        msg.u.report.n_begun = 0;
    }
    /* not in the report: ahead of it, as when they were begun */
    if (!in_report)
        begins_send(a, held, nh, false, r->link);
    /* a re-send must not announce a session again that may have ended since: the copy kept
     * for re-sends has no begun (a report that never arrived is followed by a hello on
     * reconnection, which lists the live sessions) */
    int krc = ihc_wire_encode(&msg, a->auth, &keep, &keep_len);
    if (!in_report) {
        buf = keep;
        len = keep_len;
        rc = krc;
    }
    if (rc == IHC_OK)
        ihc__transport_send_report(&a->tp, buf, len, r->link);
    else
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "cannot encode report id=%llu hw=%s err=\"%s\"",
                (unsigned long long)r->id, r->hw, ihc_strerror(rc));
    if (in_report)
        begins_send(a, held, nh, true, r->link);
    pthread_mutex_unlock(&a->send_lock);
    if (buf != keep)
        free(buf);
    if (krc != IHC_OK) {
        free(keep);
        keep = NULL;
        keep_len = 0;
    }
    dedupe_put(cx, r->term, r->id, r->epoch, r->hw, keep, keep_len);
    return rc == IHC_OK;
}

/* After the modules (on the receive thread, or on the rescue that took the run over): the
 * report, callbacks, generators, escalation, cleanup of the interrupt in cx->run. */
void ihc__cancel_resume(ihc_agent *a)
{
    ihc__cancel *cx = &a->cx;
    const ihc__cancel_run *r = &cx->run;
    ihc__session **v = cx->victims;
    const char *hw = r->hw;
    uint64_t id = r->id, epoch = r->epoch, t0 = r->t0;
    size_t n = r->n, nm = r->nm;
    ihc__module *head = r->head;

    /* owners that run their own interrupt methods report them before the report goes out,
     * within the module timeout (counted from the interrupt's arrival) */
    size_t n_ext = 0;
    if (id != 0)
        n_ext = ihc__sessions_await_reports(a, v, n, t0 + ihc_s_to_ns(a->o.default_module_timeout));
    uint64_t t_done = ihc_mono_ns();
    double time_ms = (double)(t_done - t0) / 1e6;

    size_t n_failed = 0;
    if (nm + n_ext > cx->res_cap) {
        ihc_module_result *res = realloc(cx->res, (nm + n_ext) * sizeof(*res));
        if (res) {
            cx->res = res;
            cx->res_cap = nm + n_ext;
        }
    }
    size_t nr = nm <= cx->res_cap ? nm : cx->res_cap;
    ihc__module *m = head;
    for (size_t i = 0; i < nm; m = ++i < nm ? m->next : NULL) {
        if (m->st == IHC_MOD_TIMED_OUT || m->st == IHC_MOD_FAILED)
            n_failed++;
        if (i < nr)
            cx->res[i] = (ihc_module_result){.name = m->name,
                                             .status = m->st,
                                             .time_ms = m->time_ms,
                                             .error = m->err[0] ? m->err : NULL};
    }

    for (size_t i = 0; i < n && n_ext; i++) {
        for (size_t k = 0; k < v[i]->n_ext && nr < cx->res_cap; k++) {
            const ihc_module_result *e = &v[i]->ext[k];
            if (e->status == IHC_MOD_TIMED_OUT || e->status == IHC_MOD_FAILED)
                n_failed++;
            cx->res[nr++] = *e;
        }
    }

    bool reported = false; /* the report names the sessions: no session_end for them */
    if (id != 0)
        reported = report_send(a, nr, time_ms);
    pthread_mutex_lock(&a->cb_lock);
    ihc__callback *cb = a->cb_head;
    size_t ncb = a->n_cbs;
    pthread_mutex_unlock(&a->cb_lock);
    for (size_t i = 0; i < ncb; cb = ++i < ncb ? cb->next : NULL)
        cb->fn(hw, id, cb->arg);

    ihc__gens_stop_cancelled(a);
    /* armed before cleanup, so an owner ending its session at any moment finds it live or
     * watched (never "not found") and is never signalled */
    ihc__sessions_escalate(a, v, n);
    if (a->o.cleanup_on_interrupt)
        ihc__sessions_cleanup(a, v, n, "interrupted",
                              !reported      ? IHC__REPORTED_NONE
                              : r->link >= 0 ? r->link
                                             : IHC__REPORTED_ALL);
    ihc__modules_respawn(&a->mods, head, nm);

    char timing[48] = "";
    if (ihc_log_interrupts() && ihc_log_timing())
        snprintf(timing, sizeof(timing), " time_ms=%.3f", time_ms);
    if (id != 0)
        ihc_log_interrupt(IHC__LOG,
                          "interrupt handled id=%llu hw=%s epoch=%llu sessions=%zu modules=%zu "
                          "modules_failed=%zu%s",
                          (unsigned long long)id, hw, (unsigned long long)epoch, n, nm, n_failed,
                          timing);
    else
        ihc_log_interrupt(IHC__LOG,
                          "missed interrupt caught up hw=%s epoch=%llu sessions=%zu modules=%zu "
                          "modules_failed=%zu%s",
                          hw, (unsigned long long)epoch, n, nm, n_failed, timing);
    ihc__sessions_release(a, v, n);
}

uint64_t ihc__cancel_current_id(ihc_agent *a)
{
    return a->cx.current_id;
}

const char *ihc__cancel_current_reason(ihc_agent *a)
{
    return a->cx.current_reason ? a->cx.current_reason : a->cx.current_id ? "" : "missed interrupt";
}

/* Lock held. Sets should_interrupt for hw (entry e, NULL for global). */
static void set_flag(ihc_agent *a, ihc__hwent *e, bool global)
{
    uint64_t until = ihc_mono_ns() + ihc_s_to_ns(a->o.session_cleanup_delay);
    if (global)
        a->gflag_until_ns = until;
    else if (e)
        e->flag_until_ns = until;
}

static bool is_listed(const ihc_agent *a, const ihc_interrupt_msg *m, bool direct)
{
    if (direct) /* sent on this agent's own topic: a re-send meant for it */
        return true;
    for (size_t i = 0; i < m->n_agents; i++)
        if (m->agents[i] && strcmp(m->agents[i], a->id) == 0)
            return true;
    return false;
}

bool ihc__cancel_on_interrupt(ihc_agent *a, const ihc_interrupt_msg *m, uint64_t t0, bool direct,
                              int link)
{
    ihc__cancel *cx = &a->cx;
    if (!m->hw || !ihc_hw_valid(m->hw, strlen(m->hw), true))
        return true;
    bool global = strcmp(m->hw, "*") == 0;
    bool listed = is_listed(a, m, direct);
    ihc__handled *h = dedupe_find(cx, m->term, m->id);
    if (h && h->epoch == m->epoch && strcmp(h->hw, m->hw) == 0) {
        /* act once per (term, id); the coordinator re-sends to those it has no report from,
         * and answers go to the one that asks */
        if (listed && h->report) {
            ihc__transport_send_report(&a->tp, h->report, h->report_len, link);
            ihc_log(IHC_LOG_DEBUG, IHC__LOG, "report re-sent id=%llu hw=%s attempt=%u",
                    (unsigned long long)m->id, m->hw, m->attempt);
        }
        return true;
    }

    ihc__session **v = cx->victims;
    size_t n = 0;
    pthread_mutex_lock(&a->lock);
    ihc__hwent *e = NULL;
    bool concerned = global || listed;
    if (global) {
        if (m->epoch > a->gepoch)
            a->gepoch = m->epoch;
        for (ihc__session *s = a->sessions; s && n < cx->victims_cap; s = s->next)
            if (s->gepoch < m->epoch && ihc__session_claim(s))
                v[n++] = s;
    } else {
        /* the epoch is learnt even when no session is concerned: sessions that begin later
         * must not be cancelled by a re-send of this interrupt */
        e = ihc__hw_get(a, m->hw, true);
        if (e) {
            if (m->epoch > e->epoch)
                e->epoch = m->epoch;
            concerned = concerned || e->n_sessions > 0;
            for (ihc__session *s = e->sessions; s && n < cx->victims_cap; s = s->hw_next)
                if (s->epoch < m->epoch && ihc__session_claim(s))
                    v[n++] = s;
        }
    }
    if (concerned)
        set_flag(a, e, global);
    pthread_mutex_unlock(&a->lock);
    if (!concerned) {
        ihc_log(IHC_LOG_DEBUG, IHC__LOG, "interrupt not for this agent id=%llu hw=%s",
                (unsigned long long)m->id, m->hw);
        return true;
    }
    atomic_fetch_add(&a->n_interrupts, 1);
    cx->current_reason = m->reason ? m->reason : "";
    return cancel_run(a, m->hw, m->id, m->term, link, m->epoch, n, t0);
}

void ihc__cancel_on_sync(ihc_agent *a, const ihc_sync_msg *m)
{
    ihc__cancel *cx = &a->cx;
    for (size_t k = 0; k < m->n_epochs; k++) {
        const ihc_epoch_info *ep = &m->epochs[k];
        if (!ep->hw || !ihc_hw_valid(ep->hw, strlen(ep->hw), true))
            continue;
        bool global = strcmp(ep->hw, "*") == 0;
        ihc__session **v = cx->victims;
        size_t n = 0;
        uint64_t t0 = ihc_mono_ns();
        pthread_mutex_lock(&a->lock);
        ihc__hwent *e = NULL;
        ihc__session *s;
        if (global) {
            if (ep->epoch > a->gepoch)
                a->gepoch = ep->epoch;
            s = a->sessions;
        } else {
            e = ihc__hw_get(a, ep->hw, a->n_hws < IHC__HW_KEEP);
            if (e && ep->epoch > e->epoch)
                e->epoch = ep->epoch;
            s = e ? e->sessions : NULL;
        }
        for (; s && n < cx->victims_cap; s = global ? s->next : s->hw_next) {
            uint64_t *se = global ? &s->gepoch : &s->epoch;
            if (*se >= ep->epoch || s->cancelled)
                continue;
            /* Stale when it began before that interrupt. When the coordinator does not know
             * when the epoch moved (set_ms 0: it restarted since), only an agent that was
             * synced before can hold stale work: a fresh agent's sessions all began with no
             * knowledge of older interrupts, after them. */
            bool stale = ep->set_ms ? s->created_ms <= ep->set_ms : a->ever_synced;
            if (stale) {
                if (ihc__session_claim(s))
                    v[n++] = s;
            } else {
                *se = ep->epoch; /* began after that interrupt: it was not meant for it */
            }
        }
        if (n)
            set_flag(a, e, global);
        pthread_mutex_unlock(&a->lock);
        if (n) {
            ihc_log(IHC_LOG_WARN, IHC__LOG,
                    "sync: cancelling sessions a missed interrupt should have hw=%s epoch=%llu "
                    "sessions=%zu",
                    ep->hw, (unsigned long long)ep->epoch, n);
            cancel_run(a, ep->hw, 0, m->term, -1, ep->epoch, n, t0);
        }
    }
}
