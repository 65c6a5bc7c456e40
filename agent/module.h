/* Modules (private): registered modules with their interrupt methods, config-file overrides,
 * and the persistent per-module worker threads that run methods under a timeout. */
#ifndef IHC_AGENT_MODULE_H
#define IHC_AGENT_MODULE_H

#include "ihc/agent.h"
#include "wire.h"

#include <pthread.h>

typedef struct ihc__worker ihc__worker;

typedef struct {
    char name[IHC_ID_MAX + 1];
    ihc_method_fn fn;
} ihc__method;

/* One override section of the config file. */
typedef struct {
    char name[IHC_ID_MAX + 1];
    int line;
    bool has_enabled, enabled;
    bool has_timeout;
    double timeout;
    char (*methods)[IHC_ID_MAX + 1]; /* NULL when not overridden */
    size_t n_methods;
} ihc__override;

/* A registered module. Immutable after registration except w and the per-run fields, which
 * only the receive thread touches. */
typedef struct ihc__module {
    char name[IHC_ID_MAX + 1];
    ihc__method *run; /* effective methods, in order */
    size_t n_run;
    double timeout; /* s */
    bool enabled;
    void *arg;
    ihc__worker *w;
    /* per run */
    bool pending;
    uint64_t deadline_ns;
    ihc_mod_status st;
    double time_ms;
    char err[IHC_REASON_MAX + 1];
    struct ihc__module *next;
} ihc__module;

typedef struct {
    pthread_mutex_t mu; /* guards the list and the overrides */
    ihc__module *head, *tail;
    size_t n;
    ihc__override *ovr;
    size_t n_ovr;
    pthread_mutex_t run_mu; /* workers signal completion on run_cv */
    pthread_cond_t run_cv;
    /* under run_mu: the current run, and its jobs not finished yet; the last one to finish
     * wakes the runner (once per run, not once per module) */
    uint64_t run_gen;
    size_t unfinished;
    bool high_priority;
} ihc__modules;

int ihc__modules_init(ihc__modules *ms, bool high_priority);
/* Joins live workers and frees everything; abandoned workers free themselves. */
void ihc__modules_fini(ihc__modules *ms);

/* Parses the config file into ms->ovr. On error returns IHC_ECONFIG and writes a message
 * naming the file, line and key into err. */
int ihc__modules_load_config(ihc__modules *ms, const char *path, char *err, size_t err_len);

/* The first module and the count registered so far: later registrations only append. */
ihc__module *ihc__modules_snapshot(ihc__modules *ms, size_t *n);

/* Runs every enabled module of the snapshot (head, n) in parallel for hw and waits until each
 * finished or timed out; results in each module's per-run fields. A timed-out module's worker
 * is abandoned (m->w NULL). Receive thread only. */
void ihc__modules_run(ihc__modules *ms, ihc__module *head, size_t n, const char *hw);
/* Starts fresh workers for modules whose worker was abandoned (off the report's path). */
void ihc__modules_respawn(ihc__modules *ms, ihc__module *head, size_t n);

/* Timeout in seconds of module name, or dflt when unknown. */
double ihc__modules_timeout(ihc__modules *ms, const char *name, double dflt);

/* Worker threads abandoned (timed out) that are still running a method, process-wide. */
int ihc__workers_abandoned(void);

#endif
