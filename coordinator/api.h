/* The coordinator's request API: what the HTTP server, the control socket and the Redis
 * request channel call. Every answer is an HTTP-like status and a JSON body, so all entry
 * points return the same documents:
 *
 *  interrupt   {"success":true,"interrupt_id":17,"hardware_id":"dev-1","epoch":4,
 *               "interrupted_modules":["text_processing"],"cleaned_sessions":["s-1"],
 *               "modules":[{"agent":"n1:42","name":"text_processing","status":"ok",
 *                           "time_ms":0.2,"error":null}],
 *               "agents":{"expected":["n1:42"],"answered":["n1:42"],"missing":[]},
 *               "reason":"user stop","total_time_ms":0.9,"persisted":true}
 *              on failure also "error":"…" (status 200 when the interrupt ran but was
 *              incomplete; 4xx when it was refused and nothing was done)
 *  sessions    {"count":1,"sessions":[{"session_id":"s-1","hardware_id":"dev-1",
 *               "agent_id":"n1:42","state":"active","epoch":3,"created_ms":…,
 *               "updated_ms":…,"module":"text_processing","pid":0,"data":{…}|null}]}
 *  agents      {"count":1,"agents":[{"agent_id":"n1:42","node":"n1","pid":42,
 *               "connected":true,"started_ms":…,"last_seen_ms":…,"sessions":2,
 *               "hardware_ids":["dev-1"],"modules":[{"name":…,"methods":[…],
 *               "timeout_ms":500,"enabled":true}]}]}
 *  flags       {"global_interrupt_flag":true,"interrupt_hardware_id":"dev-1",
 *               "set_ms":…,"reason":"user stop"}   (after reset: false, null, 0, null)
 *  stats       {"total_interrupts":…,"successful_interrupts":…,"failed_interrupts":…,
 *               "success_rate":1.0,"avg_time_ms":…,"p50_time_ms":…,"p99_time_ms":…,
 *               "active_sessions":…,"registered_modules":…,"agents":…,
 *               "inflight":…,"rejected_messages":…,"sessions_created":…,
 *               "persist_backlog":…,"redis_connected":true,"uptime_s":…}
 *  health      {"status":"ok","redis":"reachable"|"unreachable","version":"0.1.0",
 *               "id":"host:42","role":"leader"|"standby","leader":"host:42"|null,"term":3}
 *  not leader  503 to an interrupt or a flags reset sent to a standby (nothing is done):
 *              {"error":"not the leader: …","code":"IHC_ENOTLEADER","role":"standby",
 *               "id":"host:43","leader":"host:42"|null,"leader_control":"tcp://…"|null,
 *               "leader_http":"http://…"|null,"term":3}
 *  errors      {"error":"hardware_id: invalid hardware_id 'a b' (1-128 bytes of
 *               [A-Za-z0-9._:@-])"}
 */
#ifndef IHC_COORD_API_H
#define IHC_COORD_API_H

#include <stdint.h>

typedef struct ihc_coord ihc_coord;

/* Called exactly once per ihc_api_interrupt with the status and the JSON body. Takes
 * ownership of json (free()). Runs on a coordinator thread, or synchronously inside
 * ihc_api_interrupt when the request is refused up front. Must not block. */
typedef void (*ihc_api_done_fn)(int status, char *json, void *arg);

/* Starts an interrupt of hw ("*" = global). reason may be NULL; timeout_ms 0 means
 * INTERRUPT_TIMEOUT. Validation failures (invalid hardware_id, global disabled, reason too
 * long, timeout out of bounds, too many interrupts in flight, shutting down) are answered
 * at once with 4xx/503 and nothing is done. */
void ihc_api_interrupt(ihc_coord *c, const char *hw, const char *reason, int64_t timeout_ms,
                       ihc_api_done_fn done, void *arg);

/* Queries. op: "sessions" (hw may filter, NULL = all), "agents", "flags", "flags_reset",
 * "stats", "health", "metrics" (Prometheus text, not JSON); hw is accepted by "sessions"
 * only (400 otherwise), unknown op: 404. done is called exactly once, as for
 * ihc_api_interrupt; "health" and refusals are answered inside the call. */
void ihc_api_query_async(ihc_coord *c, const char *op, const char *hw, ihc_api_done_fn done,
                         void *arg);

/* ihc_api_query_async, waiting for the answer. Returns the status; *body is malloc'd,
 * caller frees. */
int ihc_api_query(ihc_coord *c, const char *op, const char *hw, char **body);

/* The coordinator's live events (events.h), for GET /v1/events. */
struct ihc_events *ihc_api_events(ihc_coord *c);

/* Counts a request refused before it reached the API (bad JSON, oversized body…), so that
 * stats' rejected_messages covers every entry point. */
void ihc_api_count_rejected(ihc_coord *c);

#endif
