/* Modules of an agent: registration with config-file overrides, and the running of their
 * interrupt methods. The receive thread runs an interrupt's modules itself; a rescue thread,
 * asleep on a timer armed for the run, takes the run over when a module overruns a slice,
 * so a slow module does not hold the next one back and a method that hangs is reported timed
 * out on time (module.h). Workers, started ahead of need, run what the rescue hands on and
 * the catch-ups' runs. */
#include "agent_int.h"

#include "clock.h"
#include "thread.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

struct ihc__worker {
    pthread_mutex_t mu; /* job, quit, abandoned, the method running: its own, so that an
                           abandoned worker never touches the modules again */
    pthread_cond_t cv;
    pthread_t thread;
    ihc__modules *ms;
    bool job, quit, abandoned, high;
    bool is_rx;             /* the receive thread's record (inline runs): no thread of its own */
    bool displaced;         /* under ms->run_mu: is_rx, and the rescue took its run over */
    const ihc__module *cur; /* under mu: the module running (its methods may be read) */
    size_t cur_method;
    /* under ms->run_mu */
    uint64_t busy_since; /* start of the module it runs, 0 when between modules or idle */
    bool coming;         /* given the run, has not taken a module yet */
    struct ihc__worker *next_all, *next_idle;
};

static atomic_int workers_abandoned;

int ihc__workers_abandoned(void)
{
    return atomic_load(&workers_abandoned);
}

static void worker_free(ihc__worker *w)
{
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* run_mu held: w joins the idle list. */
static void worker_idle(ihc__modules *ms, ihc__worker *w)
{
    if (w->coming)
        ms->run_coming--;
    w->coming = false;
    w->busy_since = 0;
    w->next_idle = ms->idle;
    ms->idle = w;
}

/* Runs m's methods; *rc is the first non-zero result (a method may return any int). False when
 * w was abandoned meanwhile (then w->mu is NOT held; otherwise it is). Called with w->mu held
 * and w->cur == m, set before run_mu was let go: the watchdog never sees a runner that has
 * not entered its module yet as one that is leaving it. */
static bool run_methods(ihc__worker *w, const ihc__module *m, const char *hw, size_t *failed_at,
                        int *rc)
{
    *rc = 0;
    for (size_t i = 0; i < m->n_run && *rc == 0; i++) {
        w->cur_method = i;
        *failed_at = i;
        /* read while w cannot be abandoned: once it is, m may be freed (agent closed) */
        ihc_method_fn fn = m->run[i].fn;
        void *arg = m->arg;
        pthread_mutex_unlock(&w->mu);
        *rc = fn(hw, arg);
        pthread_mutex_lock(&w->mu);
        if (w->abandoned) {
            pthread_mutex_unlock(&w->mu);
            return false;
        }
    }
    return true;
}

/* w->mu held, w out of m's methods (returned rc, the failing one at index at): records the
 * result unless the run moved on or m timed out meanwhile. Returns with run_mu held instead:
 * the watchdog no longer abandons w, and the run waits for this result, so the modules
 * outlive the gap between the two locks. */
static void record(ihc__worker *w, ihc__module *m, uint64_t gen, int rc, size_t at)
{
    ihc__modules *ms = w->ms;
    w->cur = NULL;
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_lock(&ms->run_mu);
    if (ms->run_gen != gen || m->done)
        return;
    m->time_ms = (double)(ihc_mono_ns() - ms->run_t0) / 1e6;
    if (rc == 0) {
        m->st = IHC_MOD_OK;
    } else {
        m->st = IHC_MOD_FAILED;
        snprintf(m->err, sizeof(m->err), "%s failed: %s (%s)", m->run[at].name, ihc_strerror(rc),
                 ihc_err_name(rc));
    }
    m->done = true;
    if (++ms->run_done == ms->run_n)
        pthread_cond_signal(&ms->run_cv);
}

/* Takes modules of the current run, in order, until none is left. */
static void *worker_main(void *arg)
{
    ihc__worker *w = arg;
    ihc__modules *ms = w->ms;
    ihc_thread_name("ihc:worker");
    ihc_thread_priority(w->high);
    char hw[IHC_HW_MAX + 1];
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->job && !w->quit)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->job)
            break;
        w->job = false;
        pthread_mutex_unlock(&w->mu);
        pthread_mutex_lock(&ms->run_mu);
        for (;;) {
            while (ms->run_next < ms->run_n && ms->run_mods[ms->run_next]->done)
                ms->run_next++; /* timed out before it could start */
            if (ms->run_next >= ms->run_n) {
                worker_idle(ms, w);
                break;
            }
            ihc__module *m = ms->run_mods[ms->run_next++];
            uint64_t gen = ms->run_gen;
            if (w->coming)
                ms->run_coming--;
            w->coming = false;
            m->runner = w;
            w->busy_since = ihc_mono_ns();
            memcpy(hw, ms->run_hw, strlen(ms->run_hw) + 1);
            pthread_mutex_lock(&w->mu);
            w->cur = m;
            pthread_mutex_unlock(&ms->run_mu);

            size_t at = 0;
            int rc = 0;
            if (!run_methods(w, m, hw, &at, &rc))
                goto abandoned;
            record(w, m, gen, rc, at);
            w->busy_since = 0;
        }
        pthread_mutex_unlock(&ms->run_mu);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
abandoned:
    /* nobody waits for this worker any more: it owns itself */
    worker_free(w);
    atomic_fetch_sub(&workers_abandoned, 1);
    return NULL;
}

/* A worker's record, without its thread, or NULL. */
static ihc__worker *worker_alloc(ihc__modules *ms)
{
    ihc__worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->ms = ms;
    w->high = ms->high_priority;
    if (pthread_mutex_init(&w->mu, NULL) != 0)
        goto fail_mu;
    if (pthread_cond_init(&w->cv, NULL) != 0)
        goto fail_cv;
    return w;
fail_cv:
    pthread_mutex_destroy(&w->mu);
fail_mu:
    free(w);
    return NULL;
}

/* run_mu held. A new worker, listed (not idle), or NULL. */
static ihc__worker *worker_new(ihc__modules *ms)
{
    ihc__worker *w = worker_alloc(ms);
    if (!w)
        return NULL;
    int err = pthread_create(&w->thread, NULL, worker_main, w);
    if (err != 0) {
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "cannot start module worker err=\"%s\"", strerror(err));
        worker_free(w);
        return NULL;
    }
    w->next_all = ms->workers;
    ms->workers = w;
    return w;
}

/* run_mu held: an idle worker (started when none is), given the current run. */
static bool worker_assign(ihc__modules *ms)
{
    ihc__worker *w = ms->idle;
    if (w)
        ms->idle = w->next_idle;
    else if (!(w = worker_new(ms)))
        return false;
    w->busy_since = 0;
    w->coming = true;
    ms->run_coming++;
    pthread_mutex_lock(&w->mu);
    w->job = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return true;
}

/* run_mu held; w->mu held. w is left to its method: it frees itself when it returns. */
static void worker_abandon(ihc__modules *ms, ihc__worker *w)
{
    w->abandoned = true;
    for (ihc__worker **pp = &ms->workers; *pp; pp = &(*pp)->next_all)
        if (*pp == w) {
            *pp = w->next_all;
            break;
        }
    /* detached while its mutex is held: the worker cannot have freed itself (a displaced
     * receive thread was detached when it lost the receive role) */
    if (!w->is_rx)
        pthread_detach(w->thread);
    atomic_fetch_add(&workers_abandoned, 1);
}

static void worker_stop(ihc__worker *w)
{
    pthread_mutex_lock(&w->mu);
    w->quit = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    worker_free(w);
}

static void timer_arm(ihc__modules *ms, uint64_t at_ns);
static bool rescue_start(ihc__modules *ms);

int ihc__modules_init(ihc__modules *ms, bool high_priority, void (*on_taken)(void *arg), void *arg)
{
    memset(ms, 0, sizeof(*ms));
    ms->high_priority = high_priority;
    ms->tfd = -1;
    ms->on_taken = on_taken;
    ms->taken_arg = arg;
    if (pthread_mutex_init(&ms->mu, NULL) != 0)
        return IHC_ENOMEM;
    if (pthread_mutex_init(&ms->run_mu, NULL) != 0)
        goto fail_run;
    if (ihc_cond_init_mono(&ms->run_cv) != 0)
        goto fail_cv;
    return IHC_OK;
fail_cv:
    pthread_mutex_destroy(&ms->run_mu);
fail_run:
    pthread_mutex_destroy(&ms->mu);
    return IHC_ENOMEM;
}

void ihc__modules_fini(ihc__modules *ms)
{
    /* no run is in progress (the receive thread was stopped, and with it any rescue that took
     * a run over): the rescue sleeps and every listed worker is idle; all can be joined */
    pthread_mutex_lock(&ms->run_mu);
    bool rescue = ms->rescue_live;
    ms->rescue_quit = true;
    if (rescue)
        timer_arm(ms, 1); /* wakes it at once */
    pthread_mutex_unlock(&ms->run_mu);
    if (rescue)
        pthread_join(ms->rescue, NULL);
    if (ms->tfd >= 0)
        close(ms->tfd);
    if (ms->rxw)
        worker_free(ms->rxw);
    while (ms->workers) {
        ihc__worker *w = ms->workers;
        ms->workers = w->next_all;
        worker_stop(w);
    }
    ms->idle = NULL;
    free(ms->run_mods);
    while (ms->head) {
        ihc__module *m = ms->head;
        ms->head = m->next;
        free(m->run);
        free(m);
    }
    for (size_t i = 0; i < ms->n_ovr; i++)
        free(ms->ovr[i].methods);
    free(ms->ovr);
    pthread_cond_destroy(&ms->run_cv);
    pthread_mutex_destroy(&ms->run_mu);
    pthread_mutex_destroy(&ms->mu);
}

/* ---- config file ---- */

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static int parse_methods(char *v, ihc__override *o, char *why, size_t why_len)
{
    size_t n = 1;
    for (const char *p = v; *p; p++)
        n += *p == ',';
    o->methods = calloc(n, sizeof(*o->methods));
    if (!o->methods) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    o->n_methods = 0;
    char *save = NULL;
    char *tok = strtok_r(v, ",", &save);
    for (size_t i = 0; i < n; i++) {
        char *name = tok ? trim(tok) : (char *)"";
        if (!ihc_id_valid(name, strlen(name))) {
            snprintf(why, why_len, "invalid method name '%.*s' (1-128 of [A-Za-z0-9._:@-])",
                     IHC_ID_MAX, name);
            return -1;
        }
        for (size_t j = 0; j < o->n_methods; j++) {
            if (strcmp(o->methods[j], name) == 0) {
                snprintf(why, why_len, "method '%s' listed twice", name);
                return -1;
            }
        }
        memcpy(o->methods[o->n_methods++], name, strlen(name) + 1);
        tok = strtok_r(NULL, ",", &save);
    }
    return 0;
}

int ihc__modules_load_config(ihc__modules *ms, const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, err_len, "cannot read module config %s: %s", path, strerror(errno));
        return IHC_ECONFIG;
    }
    char line[4096];
    char why[512];
    int lineno = 0;
    ihc__override *cur = NULL;
    int rc = IHC_OK;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n' && !feof(f)) {
            snprintf(err, err_len, "%s:%d: line too long (max %zu bytes)", path, lineno,
                     sizeof(line) - 2);
            rc = IHC_ECONFIG;
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            if (!end || *trim(end + 1)) {
                snprintf(err, err_len, "%s:%d: malformed section header (expected [module_name])",
                         path, lineno);
                rc = IHC_ECONFIG;
                break;
            }
            *end = '\0';
            char *name = trim(s + 1);
            if (!ihc_id_valid(name, strlen(name))) {
                snprintf(err, err_len,
                         "%s:%d: invalid module name '%.*s' (1-128 of [A-Za-z0-9._:@-])", path,
                         lineno, IHC_ID_MAX, name);
                rc = IHC_ECONFIG;
                break;
            }
            for (size_t i = 0; i < ms->n_ovr; i++) {
                if (strcmp(ms->ovr[i].name, name) == 0) {
                    snprintf(err, err_len, "%s:%d: module [%s] already configured on line %d", path,
                             lineno, name, ms->ovr[i].line);
                    rc = IHC_ECONFIG;
                    goto out;
                }
            }
            ihc__override *nv = realloc(ms->ovr, (ms->n_ovr + 1) * sizeof(*nv));
            if (!nv) {
                snprintf(err, err_len, "%s:%d: out of memory", path, lineno);
                rc = IHC_ECONFIG;
                break;
            }
            ms->ovr = nv;
            cur = &ms->ovr[ms->n_ovr++];
            memset(cur, 0, sizeof(*cur));
            memcpy(cur->name, name, strlen(name) + 1);
            cur->line = lineno;
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, err_len, "%s:%d: expected 'key = value' or '[module]'", path, lineno);
            rc = IHC_ECONFIG;
            break;
        }
        *eq = '\0';
        char *key = trim(s);
        char *val = trim(eq + 1);
        if (!cur) {
            snprintf(err, err_len, "%s:%d: key '%s' outside of a [module] section", path, lineno,
                     key);
            rc = IHC_ECONFIG;
            break;
        }
        if (strcmp(key, "enabled") == 0) {
            if (cur->has_enabled || parse_bool(val, &cur->enabled) != 0) {
                snprintf(err, err_len, "%s:%d: key 'enabled' in [%s]: %s", path, lineno, cur->name,
                         cur->has_enabled ? "given twice" : "expected true or false");
                rc = IHC_ECONFIG;
                break;
            }
            cur->has_enabled = true;
        } else if (strcmp(key, "timeout") == 0) {
            char *end = NULL;
            errno = 0;
            double t = strtod(val, &end);
            if (cur->has_timeout || !*val || *end || errno || !isfinite(t) || t <= 0 || t > 3600) {
                snprintf(err, err_len, "%s:%d: key 'timeout' in [%s]: %s", path, lineno, cur->name,
                         cur->has_timeout ? "given twice"
                                          : "expected a number of seconds in (0, 3600]");
                rc = IHC_ECONFIG;
                break;
            }
            cur->timeout = t;
            cur->has_timeout = true;
        } else if (strcmp(key, "interrupt_methods") == 0) {
            if (cur->methods) {
                snprintf(err, err_len, "%s:%d: key 'interrupt_methods' in [%s]: given twice", path,
                         lineno, cur->name);
                rc = IHC_ECONFIG;
                break;
            }
            if (parse_methods(val, cur, why, sizeof(why)) != 0) {
                snprintf(err, err_len, "%s:%d: key 'interrupt_methods' in [%s]: %s", path, lineno,
                         cur->name, why);
                rc = IHC_ECONFIG;
                break;
            }
        } else {
            snprintf(err, err_len,
                     "%s:%d: unknown key '%.64s' in [%s] (expected enabled, timeout or "
                     "interrupt_methods)",
                     path, lineno, key, cur->name);
            rc = IHC_ECONFIG;
            break;
        }
    }
    if (rc == IHC_OK && ferror(f)) {
        snprintf(err, err_len, "cannot read module config %s: %s", path, strerror(errno));
        rc = IHC_ECONFIG;
    }
out:
    fclose(f);
    return rc;
}

/* ---- registration ---- */

static ihc__module *find_module(ihc__modules *ms, const char *name)
{
    for (ihc__module *m = ms->head; m; m = m->next)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

int ihc_agent_register_module(ihc_agent *a, const ihc_module_def *d)
{
    if (!a || !d || !d->name || !ihc_id_valid(d->name, strlen(d->name)) || !d->methods ||
        d->n_methods == 0 || d->n_methods > 1024 || !isfinite(d->timeout) || d->timeout < 0 ||
        d->timeout > 3600)
        return IHC_EINVAL;
    for (size_t i = 0; i < d->n_methods; i++) {
        const ihc_method *mt = &d->methods[i];
        if (!mt->fn || !mt->name || !ihc_id_valid(mt->name, strlen(mt->name)))
            return IHC_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(d->methods[j].name, mt->name) == 0)
                return IHC_EINVAL;
    }
    ihc__modules *ms = &a->mods;
    ihc__module *m = calloc(1, sizeof(*m));
    if (!m)
        return IHC_ENOMEM;
    memcpy(m->name, d->name, strlen(d->name) + 1);
    m->enabled = d->enabled;
    m->timeout = d->timeout > 0 ? d->timeout : a->o.default_module_timeout;
    m->arg = d->arg;
    int rc = IHC_OK;
    pthread_mutex_lock(&ms->mu);
    if (find_module(ms, d->name)) {
        rc = IHC_EEXIST;
        goto out;
    }
    const ihc__override *o = NULL;
    for (size_t i = 0; i < ms->n_ovr && !o; i++)
        if (strcmp(ms->ovr[i].name, d->name) == 0)
            o = &ms->ovr[i];
    size_t n = o && o->methods ? o->n_methods : d->n_methods;
    m->run = calloc(n, sizeof(*m->run));
    if (!m->run) {
        rc = IHC_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const char *want = o && o->methods ? o->methods[i] : d->methods[i].name;
        const ihc_method *mt = NULL;
        for (size_t j = 0; j < d->n_methods && !mt; j++)
            if (strcmp(d->methods[j].name, want) == 0)
                mt = &d->methods[j];
        if (!mt) {
            ihc_log(IHC_LOG_ERROR, IHC__LOG,
                    "module config %s line %d: module %s has no method '%s'",
                    a->config_file ? a->config_file : "-", o->line, d->name, want);
            rc = IHC_ECONFIG;
            goto out;
        }
        memcpy(m->run[i].name, mt->name, strlen(mt->name) + 1);
        m->run[i].fn = mt->fn;
    }
    m->n_run = n;
    if (o && o->has_enabled)
        m->enabled = o->enabled;
    if (o && o->has_timeout)
        m->timeout = o->timeout;
    /* one worker ready before the first interrupt: a run starts without creating a thread */
    pthread_mutex_lock(&ms->run_mu);
    bool ready = ms->workers != NULL;
    ihc__worker *w = ready ? NULL : worker_new(ms);
    if (w)
        worker_idle(ms, w);
    rescue_start(ms); /* without one, modules run on the workers */
    pthread_mutex_unlock(&ms->run_mu);
    if (!ready && !w) {
        rc = IHC_ENOMEM;
        goto out;
    }
    if (ms->tail)
        ms->tail->next = m;
    else
        ms->head = m;
    ms->tail = m;
    ms->n++;
    pthread_mutex_unlock(&ms->mu);
    ihc_log(IHC_LOG_INFO, IHC__LOG,
            "module registered module=%s methods=%zu timeout_ms=%.0f "
            "enabled=%s%s",
            m->name, m->n_run, m->timeout * 1000.0, m->enabled ? "true" : "false",
            o ? " config=override" : "");
    atomic_store(&a->need_hello, true); /* the coordinator learns the new module */
    ihc__transport_wake(&a->tp);
    return IHC_OK;
out:
    pthread_mutex_unlock(&ms->mu);
    free(m->run);
    free(m);
    return rc;
}

ihc__module *ihc__modules_snapshot(ihc__modules *ms, size_t *n)
{
    pthread_mutex_lock(&ms->mu);
    ihc__module *h = ms->head;
    *n = ms->n;
    pthread_mutex_unlock(&ms->mu);
    return h;
}

double ihc__modules_timeout(ihc__modules *ms, const char *name, double dflt)
{
    if (!name)
        return dflt;
    pthread_mutex_lock(&ms->mu);
    ihc__module *m = find_module(ms, name);
    double t = m ? m->timeout : dflt;
    pthread_mutex_unlock(&ms->mu);
    return t;
}

/* ---- running ---- */

/* run_mu held: the rescue's timer goes off at the monotonic time at_ns (0: disarmed). */
static void timer_arm(ihc__modules *ms, uint64_t at_ns)
{
    struct itimerspec it = {.it_value = {.tv_sec = (time_t)(at_ns / 1000000000ull),
                                         .tv_nsec = (long)(at_ns % 1000000000ull)}};
    if (timerfd_settime(ms->tfd, TFD_TIMER_ABSTIME, &it, NULL) != 0)
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "cannot arm the module rescue timer err=\"%s\"",
                strerror(errno));
}

static uint64_t watch(ihc__modules *ms, uint64_t now);
static void time_out(ihc__modules *ms, ihc__module *m, uint64_t now, const char *where);
static void run_wait(ihc__modules *ms);
static void run_end(ihc__modules *ms, size_t listed);

/* run_mu held, during an inline run: when the rescue must look at it, the earlier of the end of
 * the running module's slice (from since) and the earliest deadline of a module not done. */
static uint64_t inline_due(const ihc__modules *ms, uint64_t since)
{
    uint64_t due = since + IHC__MODULE_SLICE_NS;
    for (size_t i = 0; i < ms->run_n; i++)
        if (!ms->run_mods[i]->done && ms->run_mods[i]->deadline_ns < due)
            due = ms->run_mods[i]->deadline_ns;
    return due;
}

/* run_mu held, on the rescue thread woken by its timer: true when it has taken the current
 * run over, that is, when the receive thread is inside a module of an inline run (its record's
 * busy_since is set; the receive thread holds run_mu between modules) and has been for a
 * slice, or a module not done passed its deadline (the watchdog then times it out). A wake-up
 * meant for an earlier module (or run) re-arms the timer instead. */
static bool take_over(ihc__modules *ms)
{
    ihc__worker *w = ms->rxw;
    if (!w || !w->busy_since)
        return false;
    uint64_t due = inline_due(ms, w->busy_since);
    if (ihc_mono_ns() < due) {
        timer_arm(ms, due);
        return false;
    }
    w->displaced = true;
    pthread_mutex_lock(&w->mu); /* w->cur is read under it */
    ihc_log(IHC_LOG_INFO, IHC__LOG,
            "module outran its slice on the receive thread: run taken over, receiving moves to "
            "another thread module=%s hw=%s",
            w->cur ? w->cur->name : "-", ms->run_hw ? ms->run_hw : "-");
    pthread_mutex_unlock(&w->mu);
    ms->rxw = NULL; /* the displaced thread owns its record now; the next rescue brings another */
    ms->rescue_live = false; /* this thread leaves the rescue role: respawn starts another */
    return true;
}

/* The rescue thread: sleeps until its timer goes off; takes a run over when it must (see
 * module.h), watches it to its end, then hands itself to on_taken: it is the receive thread
 * from then on, and its handle is the transport's, not ours. */
static void *rescue_main(void *arg)
{
    ihc__modules *ms = arg;
    ihc_thread_name("ihc:rescue");
    ihc_thread_priority(ms->high_priority);
    for (;;) {
        uint64_t ticks;
        if (read(ms->tfd, &ticks, sizeof(ticks)) < 0 && errno != EINTR && errno != EAGAIN) {
            ihc_log(IHC_LOG_ERROR, IHC__LOG, "module rescue timer failed err=\"%s\"",
                    strerror(errno));
            ihc_sleep_ms(10);
        }
        pthread_mutex_lock(&ms->run_mu);
        if (ms->rescue_quit) {
            pthread_mutex_unlock(&ms->run_mu);
            return NULL;
        }
        if (take_over(ms))
            break;
        pthread_mutex_unlock(&ms->run_mu);
    }
    run_wait(ms);
    run_end(ms, ms->run_listed);
    pthread_mutex_unlock(&ms->run_mu);
    ms->on_taken(ms->taken_arg); /* the transport joins this thread from now on */
    return NULL;
}

/* run_mu held: starts a rescue (and its timer, the first time). False when it cannot. */
static bool rescue_start(ihc__modules *ms)
{
    if (ms->rescue_live)
        return true;
    if (ms->rescue_quit)
        return false;
    if (ms->tfd < 0 && (ms->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC)) < 0) {
        ihc_log(IHC_LOG_WARN, IHC__LOG,
                "no module rescue timer: modules run on worker threads err=\"%s\"",
                strerror(errno));
        return false;
    }
    if (!ms->rxw && !(ms->rxw = worker_alloc(ms)))
        return false;
    ms->rxw->is_rx = true;
    int err = pthread_create(&ms->rescue, NULL, rescue_main, ms);
    if (err != 0) {
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "cannot start module rescue thread err=\"%s\"",
                strerror(err));
        return false;
    }
    ms->rescue_live = true;
    return true;
}

/* run_mu held, on the receive thread: runs the run's modules on this thread, in order, the
 * rescue's timer armed. False when the rescue took the run over (run_mu NOT held then): the
 * caller is displaced. */
static bool run_inline(ihc__modules *ms, const char *hw_in)
{
    /* the methods get this thread's own copy: once displaced, it may outlive the agent's */
    char hw[IHC_HW_MAX + 1];
    snprintf(hw, sizeof(hw), "%s", hw_in);
    ihc__worker *w = ms->rxw;
    timer_arm(ms, inline_due(ms, ms->run_t0));
    while (ms->run_next < ms->run_n) {
        ihc__module *m = ms->run_mods[ms->run_next++];
        uint64_t now = ihc_mono_ns(), gen = ms->run_gen;
        if (now >= m->deadline_ns) { /* the modules before it took its whole time */
            time_out(ms, m, now, "before it started");
            continue;
        }
        m->runner = w;
        w->busy_since = now;
        pthread_mutex_lock(&w->mu);
        w->cur = m;
        pthread_mutex_unlock(&ms->run_mu);
        size_t at = 0;
        int rc = 0;
        if (!run_methods(w, m, hw, &at, &rc)) { /* timed out, abandoned: w is ours */
            worker_free(w);
            atomic_fetch_sub(&workers_abandoned, 1);
            return false;
        }
        record(w, m, gen, rc, at);
        w->busy_since = 0;
        if (w->displaced) { /* the run is the rescue's; our result is in it */
            pthread_mutex_unlock(&ms->run_mu);
            worker_free(w);
            return false;
        }
    }
    timer_arm(ms, 0);
    return true;
}

/* run_mu held: m passed its deadline (where: "before it started" or "in <method>"). */
static void time_out(ihc__modules *ms, ihc__module *m, uint64_t now, const char *where)
{
    m->st = IHC_MOD_TIMED_OUT;
    m->time_ms = (double)(now - ms->run_t0) / 1e6;
    snprintf(m->err, sizeof(m->err), "timed out after %.0f ms %s", m->timeout * 1000.0, where);
    m->done = true;
    ms->run_done++;
}

/* run_mu held: the watchdog's look at the run at now. Times out the modules past their
 * deadline (abandoning the worker of one still in its methods), puts one more worker on the
 * run when modules wait and every busy worker has been in its module for a slice, and
 * returns when it must look again (UINT64_MAX: only when woken). */
static uint64_t watch(ihc__modules *ms, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    size_t busy = 0, stuck = 0;
    for (size_t i = 0; i < ms->run_n; i++) {
        ihc__module *m = ms->run_mods[i];
        if (m->done)
            continue;
        ihc__worker *w = m->runner;
        if (now < m->deadline_ns) {
            if (m->deadline_ns < next)
                next = m->deadline_ns;
            if (w) {
                busy++;
                stuck += now >= w->busy_since + IHC__MODULE_SLICE_NS;
            }
            continue;
        }
        const char *where = "before it started";
        char in[IHC_ID_MAX + 8];
        if (w) {
            pthread_mutex_lock(&w->mu);
            if (w->cur != m) { /* out of its methods: it records its result now */
                pthread_mutex_unlock(&w->mu);
                continue;
            }
            snprintf(in, sizeof(in), "in %s", m->n_run ? m->run[w->cur_method].name : "-");
            where = in;
            worker_abandon(ms, w);
            pthread_mutex_unlock(&w->mu);
        }
        time_out(ms, m, now, where);
    }
    if (ms->run_next < ms->run_n && ms->run_done < ms->run_n) {
        /* modules wait: one more worker when every busy one is stuck in a module (or a
         * timeout took the last one away) and none is on its way; look again in a slice */
        if (ms->run_coming == 0 && stuck == busy && !worker_assign(ms) && busy == 0)
            ms->run_n = ms->run_next; /* nobody can run the rest: reported failed */
        if (now + IHC__MODULE_SLICE_NS < next)
            next = now + IHC__MODULE_SLICE_NS;
    }
    return next;
}

bool ihc__modules_run(ihc__modules *ms, ihc__module *head, size_t n, const char *hw, bool inline_ok)
{
    uint64_t t0 = ihc_mono_ns();
    pthread_mutex_lock(&ms->run_mu);
    if (n > ms->run_cap) {
        ihc__module **v = realloc(ms->run_mods, n * sizeof(*v));
        if (v) {
            ms->run_mods = v;
            ms->run_cap = n;
        }
    }
    ms->run_gen++;
    ms->run_t0 = t0;
    ms->run_hw = hw;
    ms->run_n = ms->run_next = ms->run_done = 0;
    ihc__module *m = head;
    for (size_t i = 0; i < n; m = ++i < n ? m->next : NULL) {
        m->done = false;
        m->runner = NULL;
        m->err[0] = '\0';
        m->time_ms = 0;
        if (!m->enabled) {
            m->st = IHC_MOD_DISABLED;
            m->done = true;
            continue;
        }
        if (ms->run_n == ms->run_cap) {
            m->st = IHC_MOD_FAILED;
            snprintf(m->err, sizeof(m->err), "out of memory");
            m->done = true;
            continue;
        }
        m->deadline_ns = t0 + ihc_s_to_ns(m->timeout);
        ms->run_mods[ms->run_n++] = m;
    }
    size_t listed = ms->run_listed = ms->run_n;
    if (ms->run_n > 0 && inline_ok && ms->rescue_live) {
        if (!run_inline(ms, hw))
            return false;
    } else if (ms->run_n > 0) {
        if (!worker_assign(ms))
            ms->run_n = 0;
        run_wait(ms);
    }
    run_end(ms, listed);
    pthread_mutex_unlock(&ms->run_mu);
    return true;
}

/* run_mu held: watches the run (workers, deadlines) until every module is done. */
static void run_wait(ihc__modules *ms)
{
    while (ms->run_done < ms->run_n) {
        uint64_t due = watch(ms, ihc_mono_ns());
        if (ms->run_done == ms->run_n)
            break;
        if (due == UINT64_MAX) {
            pthread_cond_wait(&ms->run_cv, &ms->run_mu);
        } else {
            struct timespec ts = ihc_mono_abstime(due);
            pthread_cond_timedwait(&ms->run_cv, &ms->run_mu, &ts);
        }
    }
}

/* run_mu held: the end of a run of listed modules. */
static void run_end(ihc__modules *ms, size_t listed)
{
    /* modules that never started (no worker could be had) */
    for (size_t i = 0; i < listed; i++)
        if (!ms->run_mods[i]->done) {
            ms->run_mods[i]->st = IHC_MOD_FAILED;
            snprintf(ms->run_mods[i]->err, sizeof(ms->run_mods[i]->err),
                     "no worker thread for the module");
            ms->run_mods[i]->done = true;
        }
    ms->run_n = ms->run_next = 0; /* late workers find nothing left */
    ms->run_hw = NULL;
}

void ihc__modules_respawn(ihc__modules *ms, ihc__module *head, size_t n)
{
    ihc__module *m = head;
    for (size_t i = 0; i < n; m = ++i < n ? m->next : NULL)
        if (m->st == IHC_MOD_TIMED_OUT)
            ihc_log(IHC_LOG_WARN, IHC__LOG,
                    "module timed out: worker abandoned module=%s err=\"%s\"", m->name, m->err);
    pthread_mutex_lock(&ms->run_mu);
    if (!ms->idle && n > 0) {
        ihc__worker *w = worker_new(ms);
        if (w)
            worker_idle(ms, w);
    }
    if (n > 0)
        rescue_start(ms);
    pthread_mutex_unlock(&ms->run_mu);
}
