/* The Redis store: the key layout of DESIGN.md through hiredis. One ihc_store is one
 * connection and is not thread-safe (use one per thread). Every call is bounded by the
 * command timeout; when Redis is away calls fail fast with IHC_ENOTCONN and the store
 * reconnects with backoff on later calls, re-applying timeout, keepalive, AUTH, SELECT and
 * CLIENT SETNAME. Writes are idempotent so a command that timed out can be repeated.
 *
 * Keys (hw is wrapped in a {hash tag}):
 *   ihc:session:{hw}:<sid>  hash    session_id hardware_id agent_id state epoch created_ms
 *                                   updated_ms data; EXPIRE session_ttl
 *   ihc:hw:{hw}:sessions    set     active session ids of hw
 *   ihc:hw:{hw}:epoch       string  hw's interrupt epoch (only ever raised)
 *   ihc:flags               hash    global_interrupt_flag interrupt_hardware_id set_ms reason
 *   ihc:agent:<agent_id>    hash    node pid modules sessions started_ms last_seen_ms; EXPIRE
 *   ihc:agents              set     agent ids seen (index for listing; pruned when stale)
 *   ihc:interrupts          stream  id hardware_id success total_time_ms modules sessions
 *                                   agents_missing reason (MAXLEN ~ log_max)
 *   ihc:stats               hash    total_interrupts successful_interrupts
 *                                   failed_interrupts sessions_created …
 *   ihc:seq                 hash    interrupt_id: high-water mark of interrupt ids */
#ifndef IHC_STORE_H
#define IHC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ihc_store ihc_store;

typedef struct {
    const char *url;         /* redis:// or unix:// URL (common/redis_url.h) */
    uint32_t timeout_ms;     /* connect and per-command timeout (0 = 500) */
    uint32_t session_ttl_s;  /* session hash expiry (0 = 300) */
    uint32_t agent_ttl_s;    /* agent hash expiry (0 = 10) */
    uint32_t log_max;        /* ihc:interrupts MAXLEN ~ (0 = 100000) */
    const char *client_name; /* CLIENT SETNAME, may be NULL */
} ihc_store_opts;

/* Opens a store. Does not require Redis to be up: a failed first connection returns IHC_OK
 * with the store disconnected (ihc_store_connected false) and retried on later calls.
 * Errors: IHC_EINVAL (bad URL), IHC_ENOMEM. Caller owns *out (ihc_store_close). */
int ihc_store_open(ihc_store **out, const ihc_store_opts *o);
void ihc_store_close(ihc_store *st);

/* True when the last command succeeded on a live connection. */
bool ihc_store_connected(const ihc_store *st);

/* Last error text from Redis or the connection ("" when none); valid until the next call. */
const char *ihc_store_errstr(const ihc_store *st);

/* PING. IHC_OK, IHC_ENOTCONN, IHC_ETIMEDOUT. */
int ihc_store_ping(ihc_store *st);

/* Pipelining: between begin and exec, write calls below only queue their commands and
 * return IHC_OK; exec sends them in one round trip and returns the first error (IHC_OK,
 * IHC_ENOTCONN, IHC_EREDIS). Reads are not allowed inside a pipeline (IHC_EINVAL). */
int ihc_store_pipeline_begin(ihc_store *st);
int ihc_store_pipeline_exec(ihc_store *st);

/* ---- sessions ---- */
typedef struct {
    const char *session_id;
    const char *hw;
    const char *agent_id;
    const char *state; /* "active", "interrupted", "done", "expired" */
    uint64_t epoch;
    int64_t created_ms;
    int64_t updated_ms;
    const char *data; /* JSON or NULL */
} ihc_store_session;

/* Writes the session hash (with expiry) and, when state is "active", adds it to the hw's
 * set; otherwise removes it from the set. */
int ihc_store_session_put(ihc_store *st, const ihc_store_session *s);

/* Sets state and updated_ms of an existing session and removes it from the active set
 * (for "interrupted", "done", "expired"). Missing session: IHC_OK (idempotent). */
int ihc_store_session_state(ihc_store *st, const char *hw, const char *session_id,
                            const char *state, int64_t updated_ms);

/* A session read back from Redis; strings owned by the list. */
typedef struct {
    char *session_id, *hw, *agent_id, *state, *data;
    uint64_t epoch;
    int64_t created_ms, updated_ms;
} ihc_store_session_rec;

/* Lists active sessions of hw, or of every hw when hw is NULL (SCAN over the sets; entries
 * whose hash expired are removed from their set). Caller owns *out:
 * ihc_store_sessions_free(*out, *n). */
int ihc_store_sessions_list(ihc_store *st, const char *hw, ihc_store_session_rec **out, size_t *n);
void ihc_store_sessions_free(ihc_store_session_rec *recs, size_t n);

/* ---- epochs ---- */
/* Raises ihc:hw:{hw}:epoch to epoch if it is lower (never lowers it). */
int ihc_store_epoch_raise(ihc_store *st, const char *hw, uint64_t epoch);
/* Reads one epoch; a missing key gives 0. */
int ihc_store_epoch_get(ihc_store *st, const char *hw, uint64_t *epoch);

typedef struct {
    char *hw;
    uint64_t epoch;
} ihc_store_epoch_rec;
/* Every stored epoch (SCAN ihc:hw:*:epoch). Caller owns *out: ihc_store_epochs_free. */
int ihc_store_epochs_list(ihc_store *st, ihc_store_epoch_rec **out, size_t *n);
void ihc_store_epochs_free(ihc_store_epoch_rec *recs, size_t n);

/* ---- flags ---- */
typedef struct {
    bool global_interrupt_flag;
    char interrupt_hardware_id[129]; /* "" when none */
    int64_t set_ms;
    char reason[1025];
} ihc_store_flags;

int ihc_store_flags_set(ihc_store *st, const ihc_store_flags *f);
int ihc_store_flags_get(ihc_store *st, ihc_store_flags *f); /* missing: all zero */
int ihc_store_flags_reset(ihc_store *st);

/* ---- agents ---- */
typedef struct {
    const char *agent_id;
    const char *node;
    int32_t pid;
    const char *modules;  /* JSON array text */
    const char *sessions; /* JSON array of session ids */
    int64_t started_ms;
    int64_t last_seen_ms;
} ihc_store_agent;

/* Writes the agent hash, renews its expiry, adds it to ihc:agents. */
int ihc_store_agent_put(ihc_store *st, const ihc_store_agent *a);
/* Renews last_seen_ms and expiry only. */
int ihc_store_agent_touch(ihc_store *st, const char *agent_id, int64_t last_seen_ms);
int ihc_store_agent_del(ihc_store *st, const char *agent_id);

typedef struct {
    char *agent_id, *node, *modules, *sessions;
    int32_t pid;
    int64_t started_ms, last_seen_ms;
} ihc_store_agent_rec;
/* Agents whose hash has not expired (stale ids are pruned from ihc:agents). Caller owns
 * *out: ihc_store_agents_free. */
int ihc_store_agents_list(ihc_store *st, ihc_store_agent_rec **out, size_t *n);
void ihc_store_agents_free(ihc_store_agent_rec *recs, size_t n);

/* ---- interrupt log ---- */
typedef struct {
    uint64_t id;
    const char *hw;
    bool success;
    double total_time_ms;
    const char *modules;        /* JSON array text */
    const char *sessions;       /* JSON array text */
    const char *agents_missing; /* JSON array text */
    const char *reason;
    int64_t ts_ms;
} ihc_store_log_entry;

/* XADD ihc:interrupts MAXLEN ~ log_max * … */
int ihc_store_log_append(ihc_store *st, const ihc_store_log_entry *e);
/* Number of entries (XLEN). */
int ihc_store_log_len(ihc_store *st, uint64_t *n);

/* ---- stats and sequence ---- */
/* HINCRBY ihc:stats field by. */
int ihc_store_stats_incr(ihc_store *st, const char *field, int64_t by);
/* HGET ihc:stats field; missing gives 0. */
int ihc_store_stats_get(ihc_store *st, const char *field, int64_t *value);

/* Raises ihc:seq interrupt_id to at least v (never lowers). */
int ihc_store_seq_raise(ihc_store *st, uint64_t v);
int ihc_store_seq_get(ihc_store *st, uint64_t *v); /* missing: 0 */

#endif
