/* The Redis writer: a thread with its own ihc_store that drains a bounded in-memory queue of
 * write operations in order, pipelined, off the request path. While Redis is down the
 * operations wait in the queue (the backlog) and are written when it returns. */
#ifndef IHC_COORD_PERSIST_H
#define IHC_COORD_PERSIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct ihc_persist ihc_persist;

#define IHC_PERSIST_HOLD UINT64_MAX

typedef struct {
    ihc_store_opts store; /* copied (url too) */
    size_t max_queue;     /* 0 = 1000000 operations */
    size_t batch;         /* operations per pipeline, 0 = 512 */
    /* Called on the writer thread each time Redis answers again after being unreachable
     * (it may have restarted empty); st may be used for reads during the call. May be
     * NULL. */
    void (*on_reconnect)(void *arg, ihc_store *st);
    /* Called on the writer thread when Redis becomes reachable (up) or unreachable, with
     * the backlog then. May be NULL. */
    void (*on_state)(void *arg, bool up, size_t backlog);
    /* Fencing (may be NULL: writes unfenced). term(arg) gives the term to fence each batch
     * with (ihc_store_pipeline_begin_fenced); 0 means this coordinator does not lead: the
     * batch is dropped unwritten; IHC_PERSIST_HOLD that it leads without a lease yet: the
     * batch waits (as while Redis is away). on_fenced(arg, term) is called when Redis refused a
     * batch because ihc:term moved; the batch is dropped. */
    uint64_t (*term)(void *arg);
    void (*on_fenced)(void *arg, uint64_t term);
    void *arg;
} ihc_persist_opts;

/* Starts the writer thread. Redis need not be up. Caller owns *out (ihc_persist_close).
 * Errors: IHC_EINVAL (bad URL), IHC_ENOMEM, IHC_EINTERNAL (thread). */
int ihc_persist_open(ihc_persist **out, const ihc_persist_opts *o);

/* Writes what is queued for up to flush_ms (while Redis answers), then stops the thread and
 * frees everything; operations still queued are dropped and logged. Accepts NULL. */
void ihc_persist_close(ihc_persist *p, uint32_t flush_ms);

/* Batching: after ihc_persist_defer, queued writes do not wake the writer thread (it still
 * writes them when it wakes for another reason, at the latest after its idle period) until
 * ihc_persist_kick, which wakes it if anything was queued meanwhile and ends the deferral.
 * Lets the coordinator keep the writer (and Redis) off the CPU while an interrupt is in
 * flight. Thread-safe. */
void ihc_persist_defer(ihc_persist *p);
void ihc_persist_kick(ihc_persist *p);
/* True when writes queued since ihc_persist_defer wait for ihc_persist_kick. */
bool ihc_persist_deferred(ihc_persist *p);

/* Drops every queued write (a coordinator that stopped leading: what it queued must not
 * land under a later term). Returns how many. Thread-safe. */
size_t ihc_persist_drop(ihc_persist *p);

/* The writer's view of Redis: true when its last command succeeded. Thread-safe. */
bool ihc_persist_connected(const ihc_persist *p);

/* Operations queued and not yet written; operations dropped because the queue was full. */
size_t ihc_persist_backlog(ihc_persist *p);
uint64_t ihc_persist_dropped(const ihc_persist *p);

/* Queue one write each. The arguments are copied; every call is thread-safe and never
 * blocks on Redis. When the queue is full the oldest non-essential operation (agent
 * refreshes) is dropped, else the oldest one, with a counter and a warning. */
void ihc_persist_session_put(ihc_persist *p, const ihc_store_session *s);
void ihc_persist_session_state(ihc_persist *p, const char *hw, const char *session_id,
                               const char *state, int64_t updated_ms);
void ihc_persist_epoch_raise(ihc_persist *p, const char *hw, uint64_t epoch);
void ihc_persist_flags_set(ihc_persist *p, const ihc_store_flags *f);
void ihc_persist_flags_reset(ihc_persist *p);
void ihc_persist_agent_put(ihc_persist *p, const ihc_store_agent *a);
void ihc_persist_agent_touch(ihc_persist *p, const char *agent_id, int64_t last_seen_ms);
void ihc_persist_log_append(ihc_persist *p, const ihc_store_log_entry *e);
void ihc_persist_stats_incr(ihc_persist *p, const char *field, int64_t by);
void ihc_persist_seq_raise(ihc_persist *p, uint64_t v);
void ihc_persist_stats_set(ihc_persist *p, const ihc_store_stats *v);

#endif
