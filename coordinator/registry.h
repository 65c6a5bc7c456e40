/* The coordinator's memory of the fleet: agents (liveness, modules), their active sessions
 * and the interrupt epoch of every hardware_id. Owned by the coordinator loop thread; not
 * thread-safe. Time is passed in so the logic is testable without clocks or sockets. */
#ifndef IHC_COORD_REGISTRY_H
#define IHC_COORD_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "wire.h"

typedef struct ihc_registry ihc_registry;

typedef enum {
    IHC_AGENT_PENDING = 0, /* known from Redis after a restart, not heard from yet */
    IHC_AGENT_CONNECTED,   /* heard from within agent_ttl */
    IHC_AGENT_GONE         /* not heard from for agent_ttl: not expected any more */
} ihc_agent_state;

/* An agent as the registry keeps it; every pointer is owned by the registry. */
typedef struct {
    char *agent_id;
    char *node; /* "" when unknown */
    int32_t pid;
    int64_t started_ms;
    int64_t last_seen_ms;  /* wall clock */
    uint64_t last_seen_ns; /* monotonic, drives expiry */
    ihc_agent_state state;
    ihc_module_info *modules;
    size_t n_modules;
    size_t n_sessions;                /* active sessions */
    uint64_t session_changes;         /* bumped on every session added or ended */
    uint64_t sessions_written;        /* session_changes when the agent hash was last written */
    struct ihc_reg_session *sessions; /* its active sessions (ihc_registry_foreach_agent_session) */
    char **sub_addrs; /* its SUB connections' local endpoints, from its last hello */
    size_t n_sub_addrs;
} ihc_reg_agent;

/* An active session; every pointer is owned by the registry. */
typedef struct ihc_reg_session {
    char *session_id;
    char *hw;
    char *agent_id;
    char *module;      /* NULL when none */
    char *data;        /* JSON text or NULL */
    const char *state; /* static string: "active", then the end state in ENDED events */
    uint64_t epoch;
    uint64_t gepoch;
    int64_t created_ms;
    int64_t updated_ms;
    int32_t pid;
    struct ihc_reg_session *a_prev, *a_next; /* the agent's sessions */
} ihc_reg_session;

typedef enum {
    IHC_REG_SESSION_ADDED,   /* a session the registry did not know */
    IHC_REG_SESSION_UPDATED, /* a known session re-announced (hello) */
    IHC_REG_SESSION_ENDED,   /* left the active set; s->state says how */
    IHC_REG_EPOCH_RAISED     /* s carried a newer epoch of s->hw than the registry knew */
} ihc_reg_event;

/* Called synchronously on every session change (the coordinator persists from here). s is
 * valid only during the call. */
typedef void (*ihc_reg_event_fn)(void *arg, ihc_reg_event ev, const ihc_reg_session *s);

/* Called synchronously when an agent becomes CONNECTED (up: first heard of, or heard from
 * again after PENDING or GONE) or GONE (!up). a is valid only during the call. */
typedef void (*ihc_reg_agent_fn)(void *arg, const ihc_reg_agent *a, bool up);

typedef struct {
    uint64_t agent_ttl_ns;         /* silence after which an agent is gone */
    size_t max_sessions_per_agent; /* 0 = 100000; beyond it session_begin is refused */
    ihc_reg_event_fn on_event;     /* may be NULL */
    ihc_reg_agent_fn on_agent;     /* may be NULL */
    void *arg;
} ihc_registry_opts;

/* Caller owns *out (ihc_registry_free). Errors: IHC_ENOMEM. */
int ihc_registry_new(ihc_registry **out, const ihc_registry_opts *o);
void ihc_registry_free(ihc_registry *r);

/* ---- agents ---- */

/* Full state from an agent: the agent becomes CONNECTED with the hello's node, pid and
 * modules, and its sessions are replaced by the hello's list (sessions the registry had
 * for it and the hello lacks end as "done"). Epochs are raised to those the sessions carry.
 * Errors: IHC_ENOMEM. */
int ihc_registry_hello(ihc_registry *r, const ihc_hello_msg *h, uint64_t now_ns, int64_t now_ms);

/* Any sign of life from agent (heartbeat, report, session event): CONNECTED, last_seen
 * renewed. Creates a minimal record for an agent not known yet. Returns the record (owned
 * by the registry) or NULL on ENOMEM. */
ihc_reg_agent *ihc_registry_touch(ihc_registry *r, const char *agent_id, uint64_t now_ns,
                                  int64_t now_ms);

/* Adds an agent read back from Redis at start-up as PENDING, last seen at now_ns (so it is
 * expected until agent_ttl passes without a hello). modules may be NULL. */
int ihc_registry_agent_load(ihc_registry *r, const char *agent_id, const char *node, int32_t pid,
                            int64_t started_ms, int64_t last_seen_ms, const ihc_module_info *mods,
                            size_t n_mods, uint64_t now_ns);

/* NULL when unknown. */
const ihc_reg_agent *ihc_registry_agent(const ihc_registry *r, const char *agent_id);

/* Agents silent for agent_ttl become GONE and their sessions end as "expired"; GONE agents
 * silent for 3 * agent_ttl are forgotten. Returns how many agents became GONE. */
size_t ihc_registry_expire(ihc_registry *r, uint64_t now_ns);

/* Visits every agent (in no particular order). The callback must not change r. */
void ihc_registry_foreach_agent(const ihc_registry *r,
                                void (*fn)(void *arg, const ihc_reg_agent *a), void *arg);

/* Agents that are not GONE. */
size_t ihc_registry_live_agents(const ihc_registry *r);

/* Distinct module names across agents that are not GONE. */
size_t ihc_registry_module_count(const ihc_registry *r);

/* ---- sessions ---- */

/* A session began on agent_id (touches the agent). Errors: IHC_ELIMIT (agent holds too many
 * sessions), IHC_ENOMEM. */
int ihc_registry_session_begin(ihc_registry *r, const char *agent_id, const ihc_session_info *s,
                               uint64_t now_ns, int64_t now_ms);

/* The session left the active set with state ("done", "interrupted", "expired"; the
 * registry keeps its own static copy of known states, others become "done"). Errors:
 * IHC_ENOENT when the registry did not know it. */
int ihc_registry_session_end(ihc_registry *r, const char *agent_id, const char *session_id,
                             const char *state, int64_t now_ms);

/* Adds a session read back from Redis at start-up (no event); its agent, when unknown,
 * is added as PENDING, last seen at now_ns. */
int ihc_registry_session_load(ihc_registry *r, const ihc_store_session_rec *s, uint64_t now_ns);

size_t ihc_registry_session_count(const ihc_registry *r);

/* Visits active sessions, of hw only when hw is not NULL. */
void ihc_registry_foreach_session(const ihc_registry *r, const char *hw,
                                  void (*fn)(void *arg, const ihc_reg_session *s), void *arg);

/* Visits the active sessions of one agent: O(its sessions). */
void ihc_registry_foreach_agent_session(const ihc_registry *r, const char *agent_id,
                                        void (*fn)(void *arg, const ihc_reg_session *s), void *arg);

/* Visits every (hw, agent) pair where agent holds an active session of hw. */
void ihc_registry_foreach_hw_agent(const ihc_registry *r,
                                   void (*fn)(void *arg, const char *hw, const char *agent_id),
                                   void *arg);

/* ---- epochs and interrupts ---- */

/* Current epoch of hw ("*" = global), 0 when never interrupted; *set_ms (may be NULL)
 * receives the wall ms of the last bump, 0 when unknown. */
uint64_t ihc_registry_epoch(const ihc_registry *r, const char *hw, int64_t *set_ms);

/* Visits every known epoch (hw "*" included). */
void ihc_registry_foreach_epoch(const ihc_registry *r,
                                void (*fn)(void *arg, const char *hw, uint64_t epoch,
                                           int64_t set_ms),
                                void *arg);

/* Bumps hw's epoch by one and returns the new value (0 on ENOMEM). */
uint64_t ihc_registry_epoch_bump(ihc_registry *r, const char *hw, int64_t now_ms);

/* Raises hw's epoch to epoch when lower (never lowers it). Errors: IHC_ENOMEM. */
int ihc_registry_epoch_raise(ihc_registry *r, const char *hw, uint64_t epoch, int64_t set_ms);

/* The agents an interrupt of hw waits for: agents not GONE that hold an active session of
 * hw, or every agent not GONE for "*". Sorted. Caller owns *out: free each and the array
 * (ihc_registry_strv_free). */
int ihc_registry_expected(const ihc_registry *r, const char *hw, char ***out, size_t *n);
void ihc_registry_strv_free(char **v, size_t n);

/* The agents known from Redis that have not said hello yet (PENDING, not past agent_ttl):
 * while there are any, the coordinator is warming up. Sorted; caller owns *out
 * (ihc_registry_strv_free). Errors: IHC_ENOMEM. */
int ihc_registry_pending(const ihc_registry *r, char ***out, size_t *n);

#endif
