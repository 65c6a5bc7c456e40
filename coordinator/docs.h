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
} ihc_stats_view;

/* {"error": msg}. */
char *ihc_doc_error(const char *msg);

/* {"count":…, "sessions":[…]} of r's active sessions, of hw only when hw is not NULL. */
char *ihc_doc_sessions(const ihc_registry *r, const char *hw);

/* {"count":…, "agents":[…]}: r's live agents with their hardware_ids and modules. */
char *ihc_doc_agents(const ihc_registry *r);

char *ihc_doc_flags(const ihc_flags_view *f);
char *ihc_doc_stats(const ihc_stats_view *s);
char *ihc_doc_metrics(const ihc_stats_view *s);
char *ihc_doc_health(bool redis_up);

/* [{name, methods, timeout_ms, enabled}…]: as a JSON value (caller owns the reference) and as
 * text (for the agent hash in Redis). */
json_t *ihc_doc_modules_json(const ihc_module_info *m, size_t n);
char *ihc_doc_modules_text(const ihc_module_info *m, size_t n);

#endif
