/* The JSON (and Prometheus text) documents of the coordinator's state: sessions, agents,
 * flags, stats, metrics, health and errors, in the shapes api.h shows. Pure formatting: the
 * loop passes in what it owns (the registry, a view of its counters), so this module knows
 * nothing of the coordinator and runs wherever the caller does. Every function returns a
 * malloc'd NUL-terminated string the caller frees, or NULL when out of memory. */
#ifndef IHC_COORD_DOCS_H
#define IHC_COORD_DOCS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hist.h"
#include "inflight.h"
#include "leader.h"
#include "registry.h"
#include "wire.h"

/* The interrupt flag as the coordinator holds it. */
typedef struct {
    bool set;
    const char *hw;     /* when set */
    const char *reason; /* when set */
    int64_t set_ms;
} ihc_flags_view;

/* The counters behind /v1/stats and /metrics. */
typedef struct {
    uint64_t total, succeeded, failed;
    uint64_t timed;       /* interrupts finished by this process (sum_ms covers them) */
    double sum_ms;        /* sum of their total_time_ms */
    const double *window; /* the most recent total_time_ms values, in any order */
    size_t win_n;
    uint64_t sessions_created, rejected;
    size_t active_sessions, registered_modules, agents, inflight;
    size_t persist_backlog;
    uint64_t persist_dropped;
    bool redis_up;
    double uptime_s;
    const ihc_hist *latency;               /* interrupts' total_time_ms, in seconds */
    const ihc_hist_family *module_latency; /* modules' time_ms by module name, seconds */
} ihc_stats_view;

/* The HTTP server's own counters, for the end of /metrics. */
typedef struct {
    size_t conns;                /* connections open, streams included */
    size_t streams;              /* event streams open */
    uint64_t refused_max_conns;  /* connections refused: IHC_HTTP_MAX_CONNS reached */
    uint64_t refused_per_ip;     /* refused: the client address at IHC_HTTP_MAX_CONNS_PER_IP */
    uint64_t refused_streams;    /* GET /v1/events refused: IHC_HTTP_MAX_STREAMS reached */
    uint64_t deadline_closed;    /* closed for not sending a whole request in time */
    uint64_t streams_overflowed; /* stream clients dropped for falling behind */
    uint64_t events_emitted;
    size_t events_held;
} ihc_http_stats_view;

/* {"error": msg}. */
char *ihc_doc_error(const char *msg);

/* {"count":…, "sessions":[…]} of r's active sessions, of hw only when hw is not NULL. */
char *ihc_doc_sessions(const ihc_registry *r, const char *hw);

/* {"count":…, "agents":[…]}: r's live agents with their hardware_ids and modules. */
char *ihc_doc_agents(const ihc_registry *r);

char *ihc_doc_flags(const ihc_flags_view *f);
char *ihc_doc_stats(const ihc_stats_view *s);
char *ihc_doc_metrics(const ihc_stats_view *s);
/* The HTTP server's part of /metrics (appended to ihc_doc_metrics). */
char *ihc_doc_metrics_http(const ihc_http_stats_view *h);
char *ihc_doc_health(bool redis_up);

/* The data of the live events (GET /v1/events); "result" is the interrupt's result itself.
 * interrupt: {interrupt_id, hardware_id, epoch, reason, expected:[agent…], ts_ms}
 * session_begin: {session_id, hardware_id, agent_id, module, epoch, created_ms}
 * session_end: {session_id, hardware_id, agent_id, state, ts_ms}
 * agent_up / agent_down: {agent_id, node, pid, sessions, ts_ms}
 * redis_up / redis_down: {backlog, ts_ms} */
char *ihc_doc_interrupt_event(const ihc_inflight *f, int64_t ts_ms);
char *ihc_doc_session_event(const ihc_reg_session *s, bool begin);
char *ihc_doc_agent_event(const ihc_reg_agent *a, int64_t ts_ms);
char *ihc_doc_redis_event(size_t backlog, int64_t ts_ms);

/* [{name, methods, timeout_ms, enabled}…]: as a JSON value (caller owns the reference) and as
 * text (for the agent hash in Redis). */
json_t *ihc_doc_modules_json(const ihc_module_info *m, size_t n);
char *ihc_doc_modules_text(const ihc_module_info *m, size_t n);

/* GET /healthz with the leadership: {"status":"ok","redis":…,"version":…,"id":self,
 * "role":"leader"|"standby","leader":id|null,"term":N}. */
char *ihc_doc_health_role(bool redis_up, const char *self, const ihc_leader_view *v);

/* The 503 of a standby (api.h): {"error":…,"code":"IHC_ENOTLEADER","role":"standby","id":self,
 * "leader":id|null,"leader_control":url|null,"leader_http":url|null,"term":N}. */
char *ihc_doc_not_leader(const char *self, const ihc_leader_view *v);

#endif
