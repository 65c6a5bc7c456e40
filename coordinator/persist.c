/* The Redis writer thread: a bounded FIFO of write operations, drained in pipelined batches
 * by one thread with its own store connection; a batch that fails for lack of Redis goes
 * back to the front of the queue, so writes land in order once Redis returns. */
#include "persist.h"
#include "redis_url.h"

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

#define COMPONENT    "persist"
#define RETRY_MS     100
#define IDLE_PING_MS 250

typedef enum {
    OP_SESSION_PUT,
    OP_SESSION_STATE,
    OP_EPOCH,
    OP_FLAGS_SET,
    OP_FLAGS_RESET,
    OP_AGENT_PUT,
    OP_AGENT_TOUCH,
    OP_LOG,
    OP_STATS,
    OP_SEQ,
    OP_STATS_SET
} op_kind;

#define OP_NSTR 5

/* One queued write; the meaning of s[], i[], u, d and b depends on kind (see op_apply). */
typedef struct op {
    struct op *next;
    op_kind kind;
    char *s[OP_NSTR];
    int64_t i[3];
    uint64_t u;
    double d;
    bool b;
} op;

struct ihc_persist {
    ihc_persist_opts o;
    char *url;
    char url_shown[1024]; /* url for log lines, user and password masked */
    char *client_name;
    ihc_store *st;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* ops queued or stopping */
    pthread_cond_t stop_cv; /* stopping only (retry waits) */
    op *head, *tail;
    size_t n;              /* queued */
    size_t n_nonessential; /* queued agent refreshes */
    size_t n_writing;      /* taken by the thread, not yet written */
    bool stopping;
    bool deferred; /* queued writes do not wake the thread (ihc_persist_defer) */
    bool kick_due; /* writes were queued while deferred */
    uint64_t flush_deadline_ns;
    atomic_bool connected;
    atomic_uint_fast64_t dropped;
};

static bool op_nonessential(const op *o)
{
    return o->kind == OP_AGENT_PUT || o->kind == OP_AGENT_TOUCH;
}

static void op_free(op *o)
{
    if (!o)
        return;
    for (int i = 0; i < OP_NSTR; i++)
        free(o->s[i]);
    free(o);
}

static op *op_new(op_kind kind)
{
    op *o = calloc(1, sizeof(*o));
    if (o)
        o->kind = kind;
    return o;
}

/* Copies the strings (NULL stays NULL); false on ENOMEM. */
static bool op_strs(op *o, const char *const *v, int n)
{
    for (int i = 0; i < n; i++)
        if (v[i] && !(o->s[i] = strdup(v[i])))
            return false;
    return true;
}

/* Enqueues o (takes ownership); NULL means an allocation failed before. */
static void push(ihc_persist *p, op *o, bool strs_ok)
{
    if (!o || !strs_ok) {
        op_free(o);
        atomic_fetch_add(&p->dropped, 1);
        ihc_log(IHC_LOG_WARN, COMPONENT, "write dropped: out of memory");
        return;
    }
    op *victim = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->n >= p->o.max_queue) {
        op *prev = NULL, *cur = p->head;
        if (p->n_nonessential > 0)
            while (cur && !op_nonessential(cur)) {
                prev = cur;
                cur = cur->next;
            }
        if (!cur) {
            prev = NULL;
            cur = p->head;
        }
        if (cur) {
            if (prev)
                prev->next = cur->next;
            else
                p->head = cur->next;
            if (p->tail == cur)
                p->tail = prev;
            p->n--;
            if (op_nonessential(cur))
                p->n_nonessential--;
            victim = cur;
        }
    }
    o->next = NULL;
    if (p->tail)
        p->tail->next = o;
    else
        p->head = o;
    p->tail = o;
    p->n++;
    if (op_nonessential(o))
        p->n_nonessential++;
    if (p->deferred)
        p->kick_due = true;
    else
        pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    if (victim) {
        uint64_t d = atomic_fetch_add(&p->dropped, 1) + 1;
        if (d == 1 || d % 10000 == 0)
            ihc_log(IHC_LOG_WARN, COMPONENT,
                    "backlog full, oldest writes dropped dropped=%llu max_queue=%zu",
                    (unsigned long long)d, p->o.max_queue);
        op_free(victim);
    }
}

/* Queues one op's command on the store (inside a pipeline). */
static int op_apply(ihc_store *st, const op *o)
{
    switch (o->kind) {
    case OP_SESSION_PUT: {
        ihc_store_session s = {.session_id = o->s[0],
                               .hw = o->s[1],
                               .agent_id = o->s[2],
                               .state = o->s[3],
                               .data = o->s[4],
                               .epoch = o->u,
                               .created_ms = o->i[0],
                               .updated_ms = o->i[1],
                               .is_new = o->b};
        return ihc_store_session_put(st, &s);
    }
    case OP_SESSION_STATE:
        return ihc_store_session_state(st, o->s[0], o->s[1], o->s[2], o->i[0]);
    case OP_EPOCH:
        return ihc_store_epoch_raise(st, o->s[0], o->u);
    case OP_FLAGS_SET: {
        ihc_store_flags f = {.global_interrupt_flag = o->b, .set_ms = o->i[0]};
        snprintf(f.interrupt_hardware_id, sizeof(f.interrupt_hardware_id), "%s",
                 o->s[0] ? o->s[0] : "");
        snprintf(f.reason, sizeof(f.reason), "%s", o->s[1] ? o->s[1] : "");
        return ihc_store_flags_set(st, &f);
    }
    case OP_FLAGS_RESET:
        return ihc_store_flags_reset(st);
    case OP_AGENT_PUT: {
        ihc_store_agent a = {.agent_id = o->s[0],
                             .node = o->s[1],
                             .modules = o->s[2],
                             .sessions = o->s[3],
                             .pid = (int32_t)o->i[0],
                             .started_ms = o->i[1],
                             .last_seen_ms = o->i[2]};
        return ihc_store_agent_put(st, &a);
    }
    case OP_AGENT_TOUCH:
        return ihc_store_agent_touch(st, o->s[0], o->i[0]);
    case OP_LOG: {
        ihc_store_log_entry e = {.id = o->u,
                                 .hw = o->s[0],
                                 .success = o->b,
                                 .total_time_ms = o->d,
                                 .modules = o->s[1],
                                 .sessions = o->s[2],
                                 .agents_missing = o->s[3],
                                 .reason = o->s[4],
                                 .ts_ms = o->i[0]};
        return ihc_store_log_append(st, &e);
    }
    case OP_STATS:
        return ihc_store_stats_incr(st, o->s[0], o->i[0]);
    case OP_SEQ:
        return ihc_store_seq_raise(st, o->u);
    case OP_STATS_SET: {
        ihc_store_stats v = {.total = (uint64_t)o->i[0],
                             .succeeded = (uint64_t)o->i[1],
                             .failed = (uint64_t)o->i[2],
                             .sessions_created = o->u};
        return ihc_store_stats_set(st, &v);
    }
    }
    return IHC_EINVAL;
}

/* Writes a batch in one pipeline (fenced by term when not 0). IHC_OK or IHC_EREDIS (Redis
 * answered, the batch is done), IHC_ENOTLEADER (refused by the fence), IHC_ENOENT (no term in
 * Redis yet), or a connection error (nothing can be assumed written). */
static int write_batch(ihc_store *st, op *batch, uint64_t term)
{
    int rc = term ? ihc_store_pipeline_begin_fenced(st, term) : ihc_store_pipeline_begin(st);
    if (rc != IHC_OK)
        return rc == IHC_EINVAL ? IHC_EREDIS : rc;
    for (op *o = batch; o; o = o->next) {
        int orc = op_apply(st, o);
        if (orc != IHC_OK)
            ihc_log(IHC_LOG_WARN, COMPONENT, "write refused kind=%d err=%s", (int)o->kind,
                    ihc_err_name(orc));
    }
    return ihc_store_pipeline_exec(st);
}

static void wait_ms(ihc_persist *p, pthread_cond_t *cv, uint32_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    ts.tv_sec += ms / 1000 + ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cv, &p->mu, &ts);
}

static void set_connected(ihc_persist *p, bool up)
{
    bool was = atomic_exchange(&p->connected, up);
    if (was != up)
        ihc_log(up ? IHC_LOG_INFO : IHC_LOG_WARN, COMPONENT, "redis %s url=%s backlog=%zu",
                up ? "reachable" : "unreachable", p->url_shown, ihc_persist_backlog(p));
    if (was != up && p->o.on_state)
        p->o.on_state(p->o.arg, up, ihc_persist_backlog(p));
    if (!was && up && p->o.on_reconnect)
        p->o.on_reconnect(p->o.arg, p->st);
}

static void *persist_main(void *arg)
{
    ihc_persist *p = arg;
    ihc_thread_name("ihc:persist");
    ihc_thread_background();
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (!p->stopping && p->n == 0)
            wait_ms(p, &p->cv, IDLE_PING_MS);
        if (p->stopping && (p->n == 0 || ihc_mono_ns() >= p->flush_deadline_ns)) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        op *batch = p->head, *last = NULL;
        size_t k = 0;
        for (op *o = p->head; o && k < p->o.batch; o = o->next, k++) {
            last = o;
            if (op_nonessential(o))
                p->n_nonessential--;
        }
        if (last) {
            p->head = last->next;
            if (!p->head)
                p->tail = NULL;
            last->next = NULL;
            p->n -= k;
        } else {
            batch = NULL;
        }
        p->n_writing = k;
        pthread_mutex_unlock(&p->mu);

        if (!batch) {
            set_connected(p, ihc_store_ping(p->st) == IHC_OK);
            continue;
        }
        uint64_t term = p->o.term ? p->o.term(p->o.arg) : 0;
        int rc = p->o.term && !term         ? IHC_ENOTLEADER
                 : term == IHC_PERSIST_HOLD ? IHC_ENOENT
                                            : write_batch(p->st, batch, term);
        if (rc == IHC_ENOTLEADER && term && term != IHC_PERSIST_HOLD) {
            ihc_log(IHC_LOG_WARN, COMPONENT,
                    "writes refused by the fence term=%" PRIu64 " ops=%zu: %s", term, k,
                    ihc_store_errstr(p->st));
            if (p->o.on_fenced)
                p->o.on_fenced(p->o.arg, term);
        }
        if (rc == IHC_OK || rc == IHC_EREDIS || rc == IHC_ENOTLEADER) {
            if (rc == IHC_EREDIS)
                ihc_log(IHC_LOG_WARN, COMPONENT, "redis refused a write: %s",
                        ihc_store_errstr(p->st));
            while (batch) {
                op *next = batch->next;
                op_free(batch);
                batch = next;
            }
            pthread_mutex_lock(&p->mu);
            p->n_writing = 0;
            pthread_mutex_unlock(&p->mu);
            if (term || !p->o.term)
                set_connected(p, true);
            continue;
        }
        bool noterm = rc == IHC_ENOENT; /* Redis lost its data: the lease puts the term back */
        /* Redis away: the batch goes back to the front, in order */
        pthread_mutex_lock(&p->mu);
        for (op *o = batch; o; o = o->next)
            if (op_nonessential(o))
                p->n_nonessential++;
        last->next = p->head;
        p->head = batch;
        if (!p->tail)
            p->tail = last;
        p->n += k;
        p->n_writing = 0;
        pthread_mutex_unlock(&p->mu);
        if (!noterm)
            set_connected(p, false);
        pthread_mutex_lock(&p->mu);
        if (!p->stopping)
            wait_ms(p, &p->stop_cv, RETRY_MS);
        pthread_mutex_unlock(&p->mu);
        if (p->stopping)
            ihc_sleep_ms(20);
    }
    return NULL;
}

int ihc_persist_open(ihc_persist **out, const ihc_persist_opts *o)
{
    ihc_persist *p = calloc(1, sizeof(*p));
    if (!p)
        return IHC_ENOMEM;
    p->o = *o;
    if (p->o.max_queue == 0)
        p->o.max_queue = 1000000;
    if (p->o.batch == 0)
        p->o.batch = 512;
    p->url = strdup(o->store.url ? o->store.url : "");
    ihc_redis_url_redact(o->store.url ? o->store.url : "", p->url_shown, sizeof(p->url_shown));
    p->client_name = o->store.client_name ? strdup(o->store.client_name) : NULL;
    if (!p->url || (o->store.client_name && !p->client_name)) {
        free(p->url);
        free(p->client_name);
        free(p);
        return IHC_ENOMEM;
    }
    p->o.store.url = p->url;
    p->o.store.client_name = p->client_name;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->stop_cv, NULL);
    atomic_init(&p->connected, false);
    atomic_init(&p->dropped, 0);
    int rc = ihc_store_open(&p->st, &p->o.store);
    if (rc != IHC_OK)
        goto fail;
    atomic_store(&p->connected, ihc_store_connected(p->st));
    if (pthread_create(&p->thread, NULL, persist_main, p) != 0) {
        rc = IHC_EINTERNAL;
        goto fail;
    }
    p->started = true;
    *out = p;
    return IHC_OK;
fail:
    ihc_persist_close(p, 0);
    return rc;
}

void ihc_persist_close(ihc_persist *p, uint32_t flush_ms)
{
    if (!p)
        return;
    if (p->started) {
        pthread_mutex_lock(&p->mu);
        p->stopping = true;
        p->flush_deadline_ns = ihc_mono_ns() + (uint64_t)flush_ms * 1000000ull;
        pthread_cond_broadcast(&p->cv);
        pthread_cond_broadcast(&p->stop_cv);
        pthread_mutex_unlock(&p->mu);
        pthread_join(p->thread, NULL);
    }
    if (p->n)
        ihc_log(IHC_LOG_WARN, COMPONENT, "stopped with unwritten redis writes backlog=%zu", p->n);
    while (p->head) {
        op *next = p->head->next;
        op_free(p->head);
        p->head = next;
    }
    ihc_store_close(p->st);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->stop_cv);
    pthread_mutex_destroy(&p->mu);
    free(p->url);
    free(p->client_name);
    free(p);
}

size_t ihc_persist_drop(ihc_persist *p)
{
    pthread_mutex_lock(&p->mu);
    op *o = p->head;
    size_t n = p->n;
    p->head = p->tail = NULL;
    p->n = p->n_nonessential = 0;
    p->kick_due = false;
    pthread_mutex_unlock(&p->mu);
    while (o) {
        op *next = o->next;
        op_free(o);
        o = next;
    }
    return n;
}

void ihc_persist_defer(ihc_persist *p)
{
    pthread_mutex_lock(&p->mu);
    p->deferred = true;
    pthread_mutex_unlock(&p->mu);
}

bool ihc_persist_deferred(ihc_persist *p)
{
    pthread_mutex_lock(&p->mu);
    bool due = p->kick_due;
    pthread_mutex_unlock(&p->mu);
    return due;
}

void ihc_persist_kick(ihc_persist *p)
{
    pthread_mutex_lock(&p->mu);
    p->deferred = false;
    if (p->kick_due)
        pthread_cond_signal(&p->cv);
    p->kick_due = false;
    pthread_mutex_unlock(&p->mu);
}

bool ihc_persist_connected(const ihc_persist *p)
{
    return atomic_load(&p->connected);
}

size_t ihc_persist_backlog(ihc_persist *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->n + p->n_writing;
    pthread_mutex_unlock(&p->mu);
    return n;
}

uint64_t ihc_persist_dropped(const ihc_persist *p)
{
    return atomic_load(&p->dropped);
}

void ihc_persist_session_put(ihc_persist *p, const ihc_store_session *s)
{
    op *o = op_new(OP_SESSION_PUT);
    const char *v[] = {s->session_id, s->hw, s->agent_id, s->state, s->data};
    bool ok = o && op_strs(o, v, 5);
    if (o) {
        o->b = s->is_new;
        o->u = s->epoch;
        o->i[0] = s->created_ms;
        o->i[1] = s->updated_ms;
    }
    push(p, o, ok);
}

void ihc_persist_session_state(ihc_persist *p, const char *hw, const char *session_id,
                               const char *state, int64_t updated_ms)
{
    op *o = op_new(OP_SESSION_STATE);
    const char *v[] = {hw, session_id, state};
    bool ok = o && op_strs(o, v, 3);
    if (o)
        o->i[0] = updated_ms;
    push(p, o, ok);
}

void ihc_persist_epoch_raise(ihc_persist *p, const char *hw, uint64_t epoch)
{
    op *o = op_new(OP_EPOCH);
    const char *v[] = {hw};
    bool ok = o && op_strs(o, v, 1);
    if (o)
        o->u = epoch;
    push(p, o, ok);
}

void ihc_persist_flags_set(ihc_persist *p, const ihc_store_flags *f)
{
    op *o = op_new(OP_FLAGS_SET);
    const char *v[] = {f->interrupt_hardware_id, f->reason};
    bool ok = o && op_strs(o, v, 2);
    if (o) {
        o->b = f->global_interrupt_flag;
        o->i[0] = f->set_ms;
    }
    push(p, o, ok);
}

void ihc_persist_flags_reset(ihc_persist *p)
{
    op *o = op_new(OP_FLAGS_RESET);
    push(p, o, true);
}

void ihc_persist_agent_put(ihc_persist *p, const ihc_store_agent *a)
{
    op *o = op_new(OP_AGENT_PUT);
    const char *v[] = {a->agent_id, a->node, a->modules, a->sessions};
    bool ok = o && op_strs(o, v, 4);
    if (o) {
        o->i[0] = a->pid;
        o->i[1] = a->started_ms;
        o->i[2] = a->last_seen_ms;
    }
    push(p, o, ok);
}

void ihc_persist_agent_touch(ihc_persist *p, const char *agent_id, int64_t last_seen_ms)
{
    op *o = op_new(OP_AGENT_TOUCH);
    const char *v[] = {agent_id};
    bool ok = o && op_strs(o, v, 1);
    if (o)
        o->i[0] = last_seen_ms;
    push(p, o, ok);
}

void ihc_persist_log_append(ihc_persist *p, const ihc_store_log_entry *e)
{
    op *o = op_new(OP_LOG);
    const char *v[] = {e->hw, e->modules, e->sessions, e->agents_missing, e->reason};
    bool ok = o && op_strs(o, v, 5);
    if (o) {
        o->u = e->id;
        o->b = e->success;
        o->d = e->total_time_ms;
        o->i[0] = e->ts_ms;
    }
    push(p, o, ok);
}

void ihc_persist_stats_incr(ihc_persist *p, const char *field, int64_t by)
{
    op *o = op_new(OP_STATS);
    const char *v[] = {field};
    bool ok = o && op_strs(o, v, 1);
    if (o)
        o->i[0] = by;
    push(p, o, ok);
}

void ihc_persist_seq_raise(ihc_persist *p, uint64_t v)
{
    op *o = op_new(OP_SEQ);
    if (o)
        o->u = v;
    push(p, o, true);
}

void ihc_persist_stats_set(ihc_persist *p, const ihc_store_stats *v)
{
    op *o = op_new(OP_STATS_SET);
    if (o) {
        o->i[0] = (int64_t)v->total;
        o->i[1] = (int64_t)v->succeeded;
        o->i[2] = (int64_t)v->failed;
        o->u = v->sessions_created;
    }
    push(p, o, true);
}
