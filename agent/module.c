/* Modules of an agent: registration with config-file overrides, and one persistent worker
 * thread per module that runs its interrupt methods, so modules run in parallel and a method
 * that hangs is reported timed out (its worker is abandoned and replaced). */
#include "agent_int.h"

#include "clock.h"
#include "thread.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ihc__worker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    ihc__modules *ms; /* touched only while not abandoned */
    ihc__method *methods;
    size_t n;
    void *arg;
    char hw[IHC_HW_MAX + 1];
    bool job, finished, abandoned, quit, high;
    size_t cur;   /* method running (or about to) */
    int rc;       /* first non-zero method result */
    uint64_t gen; /* the run the job belongs to (ihc__modules.run_gen) */
    uint64_t t_end_ns;
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
    free(w->methods);
    free(w);
}

static void *worker_main(void *arg)
{
    ihc__worker *w = arg;
    ihc_thread_priority(w->high);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->job && !w->quit)
            pthread_cond_wait(&w->cv, &w->mu);
        if (!w->job)
            break;
        w->job = false;
        uint64_t gen = w->gen;
        int rc = 0;
        for (size_t i = 0; i < w->n && rc == 0; i++) {
            if (w->abandoned)
                goto abandoned;
            w->cur = i;
            pthread_mutex_unlock(&w->mu);
            rc = w->methods[i].fn(w->hw, w->arg);
            pthread_mutex_lock(&w->mu);
        }
        if (w->abandoned)
            goto abandoned;
        w->rc = rc;
        w->t_end_ns = ihc_mono_ns();
        w->finished = true;
        ihc__modules *ms = w->ms;
        pthread_mutex_unlock(&w->mu);
        /* the runner checks finished under w->mu while holding run_mu: no lost wakeup. A
         * finish of an earlier run (the runner saw the flag and moved on) counts for nothing */
        pthread_mutex_lock(&ms->run_mu);
        if (ms->run_gen == gen && ms->unfinished > 0 && --ms->unfinished == 0)
            pthread_cond_broadcast(&ms->run_cv);
        pthread_mutex_unlock(&ms->run_mu);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
abandoned:
    /* nobody waits for this worker any more: it owns itself */
    pthread_mutex_unlock(&w->mu);
    worker_free(w);
    atomic_fetch_sub(&workers_abandoned, 1);
    return NULL;
}

static ihc__worker *worker_new(ihc__modules *ms, const ihc__module *m)
{
    ihc__worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->methods = calloc(m->n_run ? m->n_run : 1, sizeof(*w->methods));
    if (!w->methods) {
        free(w);
        return NULL;
    }
    memcpy(w->methods, m->run, m->n_run * sizeof(*w->methods));
    w->n = m->n_run;
    w->arg = m->arg;
    w->ms = ms;
    w->high = ms->high_priority;
    if (pthread_mutex_init(&w->mu, NULL) != 0)
        goto fail_mu;
    if (pthread_cond_init(&w->cv, NULL) != 0)
        goto fail_cv;
    int err = pthread_create(&w->thread, NULL, worker_main, w);
    if (err != 0) {
        ihc_log(IHC_LOG_ERROR, IHC__LOG, "cannot start module worker module=%s err=\"%s\"", m->name,
                strerror(err));
        goto fail_thread;
    }
    return w;
fail_thread:
    pthread_cond_destroy(&w->cv);
fail_cv:
    pthread_mutex_destroy(&w->mu);
fail_mu:
    free(w->methods);
    free(w);
    return NULL;
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

int ihc__modules_init(ihc__modules *ms, bool high_priority)
{
    memset(ms, 0, sizeof(*ms));
    ms->high_priority = high_priority;
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
    while (ms->head) {
        ihc__module *m = ms->head;
        ms->head = m->next;
        if (m->w)
            worker_stop(m->w);
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
    if (!(m->w = worker_new(ms, m))) {
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

void ihc__modules_run(ihc__modules *ms, ihc__module *head, size_t n, const char *hw)
{
    uint64_t t0 = ihc_mono_ns();
    size_t pending = 0;
    pthread_mutex_lock(&ms->run_mu);
    uint64_t gen = ++ms->run_gen;
    ms->unfinished = 0;
    pthread_mutex_unlock(&ms->run_mu);
    ihc__module *m = head;
    for (size_t i = 0; i < n; m = ++i < n ? m->next : NULL) {
        m->pending = false;
        m->err[0] = '\0';
        m->time_ms = 0;
        if (!m->enabled) {
            m->st = IHC_MOD_DISABLED;
            continue;
        }
        if (!m->w && !(m->w = worker_new(ms, m))) {
            m->st = IHC_MOD_FAILED;
            snprintf(m->err, sizeof(m->err), "no worker thread for the module");
            continue;
        }
        ihc__worker *w = m->w;
        m->deadline_ns = t0 + ihc_s_to_ns(m->timeout);
        /* counted before the job starts: a count reaching 0 while jobs are still being
         * handed out only wakes a runner that is not waiting yet */
        pthread_mutex_lock(&ms->run_mu);
        ms->unfinished++;
        pthread_mutex_unlock(&ms->run_mu);
        pthread_mutex_lock(&w->mu);
        memcpy(w->hw, hw, strlen(hw) + 1);
        w->finished = false;
        w->rc = 0;
        w->cur = 0;
        w->gen = gen;
        w->job = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        m->pending = true;
        pending++;
    }
    if (!pending)
        return;
    pthread_mutex_lock(&ms->run_mu);
    while (pending) {
        uint64_t now = ihc_mono_ns();
        uint64_t next = UINT64_MAX;
        m = head;
        for (size_t i = 0; i < n; m = ++i < n ? m->next : NULL) {
            if (!m->pending)
                continue;
            ihc__worker *w = m->w;
            pthread_mutex_lock(&w->mu);
            if (w->finished) {
                m->time_ms = (double)(w->t_end_ns - t0) / 1e6;
                if (w->rc == 0) {
                    m->st = IHC_MOD_OK;
                } else {
                    m->st = IHC_MOD_FAILED;
                    snprintf(m->err, sizeof(m->err), "%s failed: %s (%s)", w->methods[w->cur].name,
                             ihc_strerror(w->rc), ihc_err_name(w->rc));
                }
                m->pending = false;
                pending--;
            } else if (now >= m->deadline_ns) {
                w->abandoned = true;
                ms->unfinished--; /* it will never finish: the others' count must reach 0 */
                m->st = IHC_MOD_TIMED_OUT;
                m->time_ms = (double)(now - t0) / 1e6;
                snprintf(m->err, sizeof(m->err), "timed out after %.0f ms in %s",
                         m->timeout * 1000.0, w->n ? w->methods[w->cur].name : "-");
                m->pending = false;
                pending--;
                /* detached while its mutex is held: the worker cannot have freed itself */
                pthread_detach(w->thread);
                atomic_fetch_add(&workers_abandoned, 1);
                m->w = NULL;
            } else if (m->deadline_ns < next) {
                next = m->deadline_ns;
            }
            pthread_mutex_unlock(&w->mu);
        }
        if (pending) {
            struct timespec ts = ihc_mono_abstime(next);
            pthread_cond_timedwait(&ms->run_cv, &ms->run_mu, &ts);
        }
    }
    pthread_mutex_unlock(&ms->run_mu);
}

void ihc__modules_respawn(ihc__modules *ms, ihc__module *head, size_t n)
{
    ihc__module *m = head;
    for (size_t i = 0; i < n; m = ++i < n ? m->next : NULL) {
        if (m->enabled && !m->w) {
            ihc_log(IHC_LOG_WARN, IHC__LOG,
                    "module timed out: worker abandoned module=%s "
                    "err=\"%s\"",
                    m->name, m->err);
            m->w = worker_new(ms, m);
        }
    }
}
