/* ihc-coordinator core: lifecycle, the PUB/PULL sockets and the one loop thread that owns
 * the registry, the interrupts in flight, the flags and the statistics. Other threads
 * (HTTP, control, request channel) reach it only through api.h, which validates requests
 * and hands them to the loop through the queue below; answers come back through callbacks.
 * The handle is opaque: nothing outside coordinator.c reads the loop's state. */
#ifndef IHC_COORD_COORDINATOR_H
#define IHC_COORD_COORDINATOR_H

#include <stdbool.h>
#include <stdint.h>

#include "api.h"
#include "config.h"

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

/* ---- for api.c: the way into the loop (any thread) ---- */

/* Queues an interrupt for the loop (t0_ns: monotonic time the request was accepted).
 * Errors: IHC_ELIMIT (max_inflight reached), IHC_ECLOSED (shutting down), IHC_ENOMEM. On
 * error done is not called. */
int ihc__coord_submit_interrupt(ihc_coord *c, const char *hw, const char *reason,
                                int64_t timeout_ms, uint64_t t0_ns, ihc_api_done_fn done,
                                void *arg);

/* Queues a query (op and hw already validated); done(status, body, arg) runs on the loop
 * thread. Errors: IHC_EINVAL (unknown op), IHC_ECLOSED, IHC_ENOMEM. On error done is not
 * called. */
int ihc__coord_submit_query(ihc_coord *c, const char *op, const char *hw, ihc_api_done_fn done,
                            void *arg);

/* The configuration the coordinator runs with. */
const ihc_config *ihc__coord_config(const ihc_coord *c);

/* Counts a bad message or a refused request (stats' rejected_messages). */
void ihc__coord_count_rejected(ihc_coord *c);

/* The live events the loop emits (thread-safe; lives as long as c). */
struct ihc_events *ihc__coord_events(ihc_coord *c);

/* The Redis writer's view: true when its last command succeeded. */
bool ihc__coord_redis_up(const ihc_coord *c);

/* GET /healthz's document: status, redis, version, and the leadership: role, leader, term,
 * id (api.h). Any thread. Caller frees. */
char *ihc__coord_health(ihc_coord *c);

/* True when this coordinator leads now (its lease backs it). Any thread. */
bool ihc__coord_leading(ihc_coord *c);

/* The 503 body of a coordinator that does not lead (api.h). Any thread. Caller frees. */
char *ihc__coord_not_leader(ihc_coord *c);

#endif
