/* The leadership thread of leader.h: takes, renews and gives up the Redis lease, keeps the
 * term and the reserved interrupt ids, and publishes a view other threads read. */
#include "leader.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "err.h"
#include "log.h"
#include "thread.h"

#define COMPONENT "leader"

struct ihc_leader {
    ihc_leader_opts o;
    char *url, *id, *control, *http, *pub, *report;
    uint64_t ttl_ns, ttl_ms;
    ihc_store *st;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping, kick;
    bool tried; /* the first attempt at the lease is done (under mu) */
    pthread_cond_t tried_cv;
    ihc_leader_view view;              /* under mu */
    uint64_t seen_term;                /* highest term seen (leader thread) */
    atomic_uint_fast64_t term;         /* view.term while leading, else 0 */
    atomic_uint_fast64_t lease_end_ns; /* by this process' monotonic clock */
    atomic_bool solo;
    atomic_uint_fast64_t ids_hi, next_id;
    atomic_uint_fast64_t kicked_hi; /* ids_hi when the loop last asked for more ids */
    bool lost_logged, solo_logged, refused_logged;
};

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static ihc_store_lease_req lease_req(const ihc_leader *l)
{
    return (ihc_store_lease_req){.id = l->id,
                                 .ttl_ms = l->ttl_ms,
                                 .min_term = l->seen_term,
                                 .id_block = IHC_LEADER_ID_BLOCK,
                                 .min_next_id = atomic_load(&l->next_id),
                                 .control = l->control,
                                 .http = l->http,
                                 .pub = l->pub,
                                 .report = l->report};
}

static void changed(ihc_leader *l)
{
    if (l->o.on_change)
        l->o.on_change(l->o.arg);
}

/* Leader thread or any thread (fenced): stop leading. */
static void step_down(ihc_leader *l, uint64_t term, const char *why, const char *holder,
                      uint64_t new_term)
{
    pthread_mutex_lock(&l->mu);
    bool was = l->view.leader && l->view.term == term;
    if (was) {
        l->view.leader = false;
        l->view.solo = false;
        l->view.provisional = false;
        if (holder) {
            snprintf(l->view.leader_id, sizeof(l->view.leader_id), "%s", holder);
            l->view.leader_control[0] = l->view.leader_http[0] = l->view.leader_pub[0] = '\0';
        } else {
            l->view.leader_id[0] = '\0';
        }
        if (new_term > l->view.term)
            l->view.term = new_term;
        atomic_store(&l->term, 0);
        atomic_store(&l->lease_end_ns, 0);
        atomic_store(&l->solo, false);
    }
    pthread_mutex_unlock(&l->mu);
    if (!was)
        return;
    ihc_log(IHC_LOG_WARN, COMPONENT, "stepped down id=%s term=%" PRIu64 " reason=\"%s\"%s%s", l->id,
            term, why, holder && *holder ? " leader=" : "", holder ? holder : "");
    changed(l);
}

static void on_acquired(ihc_leader *l, const ihc_store_lease *s, uint64_t sent_ns)
{
    l->seen_term = max_u64(l->seen_term, s->term);
    pthread_mutex_lock(&l->mu);
    l->view.provisional = false;
    pthread_mutex_unlock(&l->mu);
    atomic_store(&l->ids_hi, s->ids_hi);
    if (l->o.on_elected)
        l->o.on_elected(l->o.arg, l->st, s->term, s->ids_hi);
    pthread_mutex_lock(&l->mu);
    l->view.leader = true;
    l->view.solo = s->standbys == 0;
    l->view.term = s->term;
    snprintf(l->view.leader_id, sizeof(l->view.leader_id), "%s", l->id);
    snprintf(l->view.leader_control, sizeof(l->view.leader_control), "%s", l->control);
    snprintf(l->view.leader_http, sizeof(l->view.leader_http), "%s", l->http);
    atomic_store(&l->solo, s->standbys == 0);
    atomic_store(&l->lease_end_ns, sent_ns + l->ttl_ns - l->ttl_ns / 20);
    atomic_store(&l->term, s->term);
    pthread_mutex_unlock(&l->mu);
    l->lost_logged = l->solo_logged = false;
    ihc_log(IHC_LOG_INFO, COMPONENT,
            "elected leader id=%s term=%" PRIu64 " standbys=%" PRIu64 " ids_hi=%" PRIu64, l->id,
            s->term, s->standbys, s->ids_hi);
    changed(l);
}

/* Redis unreachable at start: lead alone, provisionally, as a coordinator always could. */
static void lead_provisionally(ihc_leader *l)
{
    uint64_t term = l->seen_term + 1;
    pthread_mutex_lock(&l->mu);
    l->view.leader = l->view.solo = l->view.provisional = true;
    l->view.term = term;
    snprintf(l->view.leader_id, sizeof(l->view.leader_id), "%s", l->id);
    snprintf(l->view.leader_control, sizeof(l->view.leader_control), "%s", l->control);
    snprintf(l->view.leader_http, sizeof(l->view.leader_http), "%s", l->http);
    atomic_store(&l->solo, true);
    atomic_store(&l->term, term);
    pthread_mutex_unlock(&l->mu);
    ihc_log(IHC_LOG_WARN, COMPONENT,
            "redis unreachable at start: leading alone without a lease id=%s term=%" PRIu64
            " until redis answers",
            l->id, term);
    changed(l);
}

/* A standby's poll (and a provisional leader's): take the lease when it is free, else learn
 * who holds it. */
static void try_acquire(ihc_leader *l, bool first)
{
    ihc_store_lease_req q = lease_req(l);
    ihc_store_lease s;
    uint64_t sent = ihc_mono_ns();
    int rc = ihc_store_lease_acquire(l->st, &q, &s);
    if (rc == IHC_ENOTCONN || rc == IHC_ETIMEDOUT) {
        if (first)
            lead_provisionally(l);
        return; /* Redis away: nothing to learn; the view keeps the last leader seen */
    }
    if (rc != IHC_OK) {
        /* Redis refused the script (an ACL without the lease's commands?): say why, once */
        if (!l->refused_logged)
            ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot take the lease id=%s: %s (%s)", l->id,
                    ihc_store_errstr(l->st), ihc_err_name(rc));
        l->refused_logged = true;
        return;
    }
    l->refused_logged = false;
    uint64_t provisional = 0;
    pthread_mutex_lock(&l->mu);
    if (l->view.provisional) {
        provisional = l->view.term;
        l->view.provisional = false;
    }
    pthread_mutex_unlock(&l->mu);
    if (s.held) {
        on_acquired(l, &s, sent);
        return;
    }
    if (provisional)
        step_down(l, provisional, "redis answers and another coordinator leads", s.holder, s.term);
    l->seen_term = max_u64(l->seen_term, s.term);
    pthread_mutex_lock(&l->mu);
    bool moved = strcmp(l->view.leader_id, s.holder) != 0 || l->view.term != s.term;
    l->view.term = s.term;
    snprintf(l->view.leader_id, sizeof(l->view.leader_id), "%s", s.holder);
    snprintf(l->view.leader_control, sizeof(l->view.leader_control), "%s", s.holder_control);
    snprintf(l->view.leader_http, sizeof(l->view.leader_http), "%s", s.holder_http);
    snprintf(l->view.leader_pub, sizeof(l->view.leader_pub), "%s", s.holder_pub);
    pthread_mutex_unlock(&l->mu);
    if (moved)
        ihc_log(IHC_LOG_INFO, COMPONENT, "standby id=%s leader=%s term=%" PRIu64, l->id,
                s.holder[0] ? s.holder : "(none)", s.term);
}

/* The leader's renew, and its id reservations. */
static void renew(ihc_leader *l, uint64_t term)
{
    ihc_store_lease_req q = lease_req(l);
    ihc_store_lease s;
    uint64_t sent = ihc_mono_ns();
    int rc = ihc_store_lease_renew(l->st, &q, term, &s);
    if (rc == IHC_OK && s.held) {
        atomic_store(&l->lease_end_ns, sent + l->ttl_ns - l->ttl_ns / 20);
        atomic_store(&l->solo, s.standbys == 0);
        pthread_mutex_lock(&l->mu);
        l->view.solo = s.standbys == 0;
        pthread_mutex_unlock(&l->mu);
        if (l->lost_logged)
            ihc_log(IHC_LOG_INFO, COMPONENT, "lease renewed again id=%s term=%" PRIu64, l->id,
                    term);
        l->lost_logged = l->solo_logged = false;
    } else if (rc == IHC_OK) {
        l->seen_term = max_u64(l->seen_term, s.term);
        step_down(l, term, "lease taken by another coordinator", s.holder, s.term);
        return;
    } else if (ihc_mono_ns() >= atomic_load(&l->lease_end_ns)) {
        if (!atomic_load(&l->solo)) {
            step_down(l, term, "lease not renewed in time (redis unreachable)", NULL, 0);
            return;
        }
        if (!l->solo_logged)
            ihc_log(IHC_LOG_WARN, COMPONENT,
                    "lease not renewed (redis unreachable) id=%s term=%" PRIu64
                    ": no standby known, serving alone",
                    l->id, term);
        l->solo_logged = true;
    } else if (!l->lost_logged) {
        ihc_log(IHC_LOG_WARN, COMPONENT, "lease renew failed id=%s term=%" PRIu64 ": %s", l->id,
                term, ihc_store_errstr(l->st));
        l->lost_logged = true;
    }
    uint64_t hi = atomic_load(&l->ids_hi), next = atomic_load(&l->next_id);
    if (hi >= next + IHC_LEADER_ID_BLOCK / 2)
        return;
    uint64_t nhi = 0;
    rc = ihc_store_ids_reserve(l->st, term, IHC_LEADER_ID_BLOCK, next, &nhi);
    if (rc == IHC_OK && nhi > hi) {
        atomic_store(&l->ids_hi, nhi);
        changed(l);
    } else if (rc == IHC_ENOTLEADER) {
        step_down(l, term, "id reservation refused by the fence", NULL, 0);
    }
}

static void *leader_main(void *arg)
{
    ihc_leader *l = arg;
    ihc_thread_name("ihc:leader");
    uint64_t renew_ns = l->ttl_ns / 3, poll_ns = l->ttl_ns / 5;
    if (poll_ns < 20000000ull)
        poll_ns = 20000000ull;
    for (;;) {
        uint64_t term = atomic_load(&l->term);
        pthread_mutex_lock(&l->mu);
        bool provisional = l->view.provisional, first = !l->tried;
        pthread_mutex_unlock(&l->mu);
        if (term && !provisional)
            renew(l, term);
        else
            try_acquire(l, first);
        uint64_t wait = atomic_load(&l->term) && !provisional ? renew_ns : poll_ns;
        pthread_mutex_lock(&l->mu);
        if (!l->tried) {
            l->tried = true;
            pthread_cond_broadcast(&l->tried_cv);
        }
        if (!l->stopping && !l->kick) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t ns = (uint64_t)ts.tv_nsec + wait;
            ts.tv_sec += (time_t)(ns / 1000000000ull);
            ts.tv_nsec = (long)(ns % 1000000000ull);
            pthread_cond_timedwait(&l->cv, &l->mu, &ts);
        }
        l->kick = false;
        bool stop = l->stopping;
        pthread_mutex_unlock(&l->mu);
        if (stop)
            break;
    }
    return NULL;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

int ihc_leader_open(ihc_leader **out, const ihc_leader_opts *o)
{
    if (!out || !o || !o->id || !*o->id || !(o->ttl_s >= 0.5))
        return IHC_EINVAL;
    ihc_leader *l = calloc(1, sizeof(*l));
    if (!l)
        return IHC_ENOMEM;
    l->o = *o;
    l->url = dup_or_empty(o->store.url);
    l->id = dup_or_empty(o->id);
    l->control = dup_or_empty(o->control);
    l->http = dup_or_empty(o->http);
    l->pub = dup_or_empty(o->pub);
    l->report = dup_or_empty(o->report);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    pthread_cond_init(&l->tried_cv, NULL);
    atomic_init(&l->term, 0);
    atomic_init(&l->lease_end_ns, 0);
    atomic_init(&l->solo, false);
    atomic_init(&l->ids_hi, 0);
    atomic_init(&l->next_id, o->first_id ? o->first_id : 1);
    atomic_init(&l->kicked_hi, 0);
    int rc = IHC_ENOMEM;
    if (!l->url || !l->id || !l->control || !l->http || !l->pub || !l->report)
        goto fail;
    l->ttl_ms = (uint64_t)(o->ttl_s * 1000.0 + 0.5);
    l->ttl_ns = l->ttl_ms * 1000000ull;
    ihc_store_opts so = o->store;
    so.url = l->url;
    if (!so.client_name)
        so.client_name = "ihc-coordinator-lease";
    if ((rc = ihc_store_open(&l->st, &so)) != IHC_OK)
        goto fail;
    if (pthread_create(&l->thread, NULL, leader_main, l) != 0) {
        rc = IHC_EINTERNAL;
        goto fail;
    }
    l->started = true;
    *out = l;
    return IHC_OK;
fail:
    ihc_leader_close(l);
    return rc;
}

void ihc_leader_close(ihc_leader *l)
{
    if (!l)
        return;
    if (l->started) {
        pthread_mutex_lock(&l->mu);
        l->stopping = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    uint64_t term = atomic_load(&l->term);
    if (l->st && term && ihc_store_lease_resign(l->st, l->id) == IHC_OK)
        ihc_log(IHC_LOG_INFO, COMPONENT, "lease given up id=%s term=%" PRIu64, l->id, term);
    ihc_store_close(l->st);
    pthread_cond_destroy(&l->cv);
    pthread_cond_destroy(&l->tried_cv);
    pthread_mutex_destroy(&l->mu);
    free(l->url);
    free(l->id);
    free(l->control);
    free(l->http);
    free(l->pub);
    free(l->report);
    free(l);
}

void ihc_leader_view_get(ihc_leader *l, ihc_leader_view *v)
{
    if (!l) {
        memset(v, 0, sizeof(*v));
        return;
    }
    pthread_mutex_lock(&l->mu);
    *v = l->view;
    pthread_mutex_unlock(&l->mu);
}

uint64_t ihc_leader_term(ihc_leader *l)
{
    if (!l)
        return 0;
    uint64_t term = atomic_load(&l->term);
    if (!term)
        return 0;
    if (atomic_load(&l->solo) || ihc_mono_ns() < atomic_load(&l->lease_end_ns))
        return term;
    return 0;
}

void ihc_leader_fenced(ihc_leader *l, uint64_t term)
{
    if (!l)
        return;
    step_down(l, term, "a write was refused by the fence (ihc:term moved)", NULL, 0);
}

uint64_t ihc_leader_ids_hi(ihc_leader *l)
{
    if (!l)
        return 0;
    return atomic_load(&l->ids_hi);
}

void ihc_leader_ids_next(ihc_leader *l, uint64_t next_id)
{
    atomic_store(&l->next_id, next_id);
    uint64_t hi = atomic_load(&l->ids_hi);
    /* one wake-up per block: while Redis is away the thread retries at its own pace */
    if (hi < next_id + IHC_LEADER_ID_BLOCK / 2 && atomic_load(&l->term) &&
        atomic_exchange(&l->kicked_hi, hi) != hi) {
        pthread_mutex_lock(&l->mu);
        l->kick = true;
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
}

void ihc_leader_wait_first(ihc_leader *l, uint32_t timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)timeout_ms * 1000000ull;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    pthread_mutex_lock(&l->mu);
    while (!l->tried && pthread_cond_timedwait(&l->tried_cv, &l->mu, &ts) == 0)
        ;
    pthread_mutex_unlock(&l->mu);
}
