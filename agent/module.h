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

/* Running: the receive thread runs an interrupt's modules itself, in order, with no thread
 * woken (waking one cost a quarter of an agent's CPU per interrupt). A rescue thread, started
 * ahead of need, sleeps on a timerfd armed for the run: when a module is still running
 * IHC__MODULE_SLICE_NS after it started, the rescue takes the run over. It puts the modules
 * still to run on workers (threads started ahead of need, taking modules in order), watches
 * the deadlines as below, and when the run has ended calls on_taken, which finishes the
 * interrupt and makes the rescue the new receive thread; the old one, displaced, is left to its
 * method and exits when it returns. Runs on workers (a catch-up, or no rescue ready) are
 * watched by the receive thread: one more worker whenever every busy worker has spent a slice
 * in one module, and a worker whose module passed its deadline is abandoned (it frees itself
 * when its method returns). */
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
    size_t run_listed; /* modules listed at the start (run_n may shrink) */
    size_t run_coming; /* workers given the run that have not taken a module yet */
    uint64_t run_t0;
    const char *run_hw;
    bool high_priority;
    /* under run_mu: inline runs and their rescue */
    int tfd; /* the rescue's timerfd (CLOCK_MONOTONIC), -1 before the first */
    /* the receive thread's record for inline runs (NULL from a takeover until the next
     * rescue starts); its busy_since is non-zero exactly while it is inside a module */
    ihc__worker *rxw;
    bool rescue_live, rescue_quit;
    pthread_t rescue;
    void (*on_taken)(void *arg); /* on the rescue thread, after a run it took over ended */
    void *taken_arg;
} ihc__modules;

/* on_taken(arg) is called on the rescue thread when a run it took over has ended: it must
 * finish the interrupt and carry on as the receive thread (see above). */
int ihc__modules_init(ihc__modules *ms, bool high_priority, void (*on_taken)(void *arg), void *arg);
/* Joins live workers and the rescue and frees everything; abandoned workers and displaced
 * receive threads free themselves. */
void ihc__modules_fini(ihc__modules *ms);

/* Parses the config file into ms->ovr. On error returns IHC_ECONFIG and writes a message
 * naming the file, line and key into err. */
int ihc__modules_load_config(ihc__modules *ms, const char *path, char *err, size_t err_len);

/* The first module and the count registered so far: later registrations only append. */
ihc__module *ihc__modules_snapshot(ihc__modules *ms, size_t *n);

/* Runs every enabled module of the snapshot (head, n) for hw, in order, and waits until each
 * finished or passed its deadline (run start + its timeout): the wait ends no later than the
 * largest timeout after the start. Results in each module's per-run fields. Receive thread
 * only; hw must stay valid until the run has ended, also on another thread. With inline (an
 * interrupt; a catch-up passes false) the modules run on the calling thread while a rescue is
 * ready (see above). Returns false when the rescue took the run over: the calling thread has
 * lost the receive role and must return at once touching nothing of the agent (it may come
 * back from a hung method long after the agent was closed); the run's results are then read
 * on the rescue thread, in on_taken. */
bool ihc__modules_run(ihc__modules *ms, ihc__module *head, size_t n, const char *hw,
                      bool inline_ok);
/* After a run, off the report's path: logs the modules that timed out and starts a fresh
 * worker when none is left idle and a fresh rescue when the last one took a run over, so that
 * the next run needs no thread creation. */
void ihc__modules_respawn(ihc__modules *ms, ihc__module *head, size_t n);

/* Timeout in seconds of module name, or dflt when unknown. */
double ihc__modules_timeout(ihc__modules *ms, const char *name, double dflt);

/* Worker threads abandoned (timed out) that are still running a method, process-wide. */
int ihc__workers_abandoned(void);

#endif
