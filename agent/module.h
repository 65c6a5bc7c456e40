/* Modules (private): registered modules with their interrupt methods, config-file overrides,
 * and the worker threads, started ahead of need, that run methods under a timeout. */
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

/* A registered module. Immutable after registration except the per-run fields, which the
 * receive thread and the workers touch under ihc__modules.run_mu. */
typedef struct ihc__module {
    char name[IHC_ID_MAX + 1];
    ihc__method *run; /* effective methods, in order */
    size_t n_run;
    double timeout; /* s */
    bool enabled;
    void *arg;
    /* per run */
    bool done;           /* finished, failed or timed out */
    ihc__worker *runner; /* the worker running it, NULL before it starts */
    uint64_t deadline_ns;
    ihc_mod_status st;
    double time_ms;
    char err[IHC_REASON_MAX + 1];
    struct ihc__module *next;
} ihc__module;

/* Workers: threads started ahead of need that run modules' methods. A run goes to one worker,
 * which runs the modules one after another; the receive thread watches it (a watchdog, no
 * thread of its own) and puts one more worker on the remaining modules whenever every busy
 * worker has spent IHC__MODULE_SLICE_NS in one module, and abandons a worker whose module
 * passed its deadline (it frees itself when its method returns). */
#define IHC__MODULE_SLICE_NS 1000000ull

typedef struct {
    pthread_mutex_t mu; /* guards the list and the overrides */
    ihc__module *head, *tail;
    size_t n;
    ihc__override *ovr;
    size_t n_ovr;
    /* under run_mu: the workers, the current run and its progress */
    pthread_mutex_t run_mu;
    pthread_cond_t run_cv; /* the run's last module is done */
    ihc__worker *workers;  /* every worker not abandoned */
    ihc__worker *idle;     /* those waiting for a run */
    uint64_t run_gen;
    ihc__module **run_mods; /* the modules of the run, in order */
    size_t run_cap, run_n, run_next, run_done;
    size_t run_coming; /* workers given the run that have not taken a module yet */
    uint64_t run_t0;
    const char *run_hw;
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

/* Runs every enabled module of the snapshot (head, n) for hw, in order, on the workers (see
 * above), and waits until each finished or passed its deadline (run start + its timeout):
 * the wait ends no later than the largest timeout after the start. Results in each module's
 * per-run fields. Receive thread only. */
void ihc__modules_run(ihc__modules *ms, ihc__module *head, size_t n, const char *hw);
/* After a run, off the report's path: logs the modules that timed out and starts a fresh
 * worker when none is left idle, so that the next run needs no thread creation. */
void ihc__modules_respawn(ihc__modules *ms, ihc__module *head, size_t n);

/* Timeout in seconds of module name, or dflt when unknown. */
double ihc__modules_timeout(ihc__modules *ms, const char *name, double dflt);

/* Worker threads abandoned (timed out) that are still running a method, process-wide. */
int ihc__workers_abandoned(void);

#endif
