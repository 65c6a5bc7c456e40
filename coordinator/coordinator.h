/* ihc-coordinator core: lifecycle, the PUB/PULL sockets and the one loop thread that owns
 * the registry and the interrupts in flight. Other threads (HTTP, control, request
 * channel) reach it only through api.h, which hands requests to the loop through a queue.
 * The struct is shared by the coordinator's own files (api.c reads it on the loop thread);
 * everything else uses the opaque handle. */
#ifndef IHC_COORD_COORDINATOR_H
#define IHC_COORD_COORDINATOR_H

#include <jansson.h>
#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "config.h"
#include "inflight.h"
#include "persist.h"
#include "registry.h"
#include "wire.h"

/* Opens the PUB and PULL sockets, the Redis writer, loads the state kept in Redis and in
 * cfg->state_dir (bounded by the Redis timeout; starts without it when Redis is down) and
 * starts the loop thread. cfg must outlive the coordinator. Errors: IHC_ETRANSPORT
 * (cannot listen; logged with the URL), IHC_EINVAL, IHC_ENOMEM, IHC_EIO (state file).
 * Caller owns *out: ihc_coord_stop then ihc_coord_close. */
int ihc_coord_open(ihc_coord **out, const ihc_config *cfg);

/* Stops taking requests (they are answered 503), answers every interrupt in flight with
 * what it has, and stops the loop thread. Idempotent. */
void ihc_coord_stop(ihc_coord *c);

/* Stops if needed, writes the Redis backlog for up to flush_ms, frees. Accepts NULL. */
void ihc_coord_close(ihc_coord *c, uint32_t flush_ms);

/* ---- internal to coordinator/: api.c <-> coordinator.c ---- */

#define IHC__STATS_WINDOW 10000 /* interrupts kept for avg/p50/p99 */
#define IHC__ID_BLOCK     1000  /* interrupt ids reserved per persisted high-water mark */

typedef struct ihc__cmd ihc__cmd;

struct ihc_coord {
    const ihc_config *cfg;
    ihc_wire_auth *auth;
    nng_socket pub, pull;
    int pull_fd; /* NNG_OPT_RECVFD */
    int wake_fd; /* eventfd: the queue has work or the loop must stop */
    pthread_t loop;
    bool loop_started;
    uint64_t start_ns;

    /* shared with request threads, under mu */
    pthread_mutex_t mu;
    ihc__cmd *q_head, *q_tail;
    bool stopping;
    atomic_bool loop_stop;
    atomic_int pending;            /* interrupts accepted and not yet answered */
    atomic_uint_fast64_t rejected; /* bad messages and refused requests */
    ihc_persist *persist;          /* thread-safe */
    /* Redis answered again after an outage (set by the persist thread, under mu): what it
     * holds, for the loop to reconcile and rewrite */
    bool resync;
    uint64_t resync_seq;
    ihc_store_epoch_rec *resync_epochs;
    size_t resync_n;

    /* owned by the loop thread */
    ihc_registry *reg;
    ihc_inflight **fl;
    size_t n_fl, cap_fl;
    uint64_t next_id, reserved_hi;
    bool flag;
    char flag_hw[IHC_HW_MAX + 1];
    char flag_reason[IHC_REASON_MAX + 1];
    int64_t flag_set_ms;
    uint64_t flag_reset_ns;
    uint64_t total, succeeded, failed, sessions_created;
    uint64_t timed; /* interrupts finished by this process (sum_ms covers them) */
    double sum_ms;
    double *window; /* IHC__STATS_WINDOW most recent total_time_ms */
    size_t win_n, win_pos;
    uint64_t next_sweep_ns;
    uint64_t last_reject_log_ns;
    uint64_t persist_due_ns; /* deferred Redis writes are handed over by then (0: none) */
};

/* Queues an interrupt for the loop (t0_ns: monotonic time the request was accepted).
 * Errors: IHC_ELIMIT (max_inflight reached), IHC_ECLOSED (shutting down), IHC_ENOMEM. On
 * error done is not called. */
int ihc__coord_submit_interrupt(ihc_coord *c, const char *hw, const char *reason,
                                int64_t timeout_ms, uint64_t t0_ns, ihc_api_done_fn done,
                                void *arg);

/* Queues a query; done(status, body, arg) runs on the loop thread. Errors: IHC_ECLOSED,
 * IHC_ENOMEM, IHC_EINVAL (op too long). On error done is not called. */
int ihc__coord_submit_query(ihc_coord *c, const char *op, const char *hw, ihc_api_done_fn done,
                            void *arg);

/* Loop thread: resets the flags in memory and Redis. */
void ihc__coord_flags_reset(ihc_coord *c);

/* Loop thread (api.c): builds the body of a query; returns the status. */
int ihc__api_build(ihc_coord *c, const char *op, const char *hw, char **body);

/* JSON array of module descriptions [{name, methods, timeout_ms, enabled}] (api.c). */
json_t *ihc__api_modules_json(const ihc_module_info *m, size_t n);

#endif
