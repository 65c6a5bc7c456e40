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
 *   ihc:seq                 hash    interrupt_id: high-water mark of interrupt ids
 *   ihc:logged:<id/2^20>    bitmap  one bit per interrupt id whose log entry and statistics
 *                                   were written (so a repeated batch adds nothing); EXPIRE
 *                                   one week
 *   ihc:leader              string  the leader coordinator's id; PX = IHC_LEASE_TTL
 *   ihc:term                string  the leader's term: the fencing token of every write
 *   ihc:leader:info         hash    id term control http pub report since_ms: the leader's
 *                                   advertised addresses
 *   ihc:standbys            zset    standby coordinator ids, scored by when they lapse (ms of
 *                                   Redis' clock) */
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

/* A fenced pipeline: the writes between begin and exec are sent as one Lua script that
 * applies them only while ihc:term equals term (a leader's writes, refused once another
 * coordinator took a later term), atomically. exec returns IHC_OK, IHC_EREDIS (some
 * operations were refused by Redis, the rest applied), IHC_ENOTLEADER (ihc:term holds
 * another term: nothing applied), IHC_ENOENT (ihc:term is missing, Redis lost its data:
 * nothing applied, retry once the lease restored it) or a connection error. Not for Redis
 * Cluster (the script names keys it is not given). */
int ihc_store_pipeline_begin_fenced(ihc_store *st, uint64_t term);

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
    bool is_new;      /* a session begun now: counted in ihc:stats sessions_created, once */
} ihc_store_session;

/* Writes the session hash (with expiry) and, when state is "active", adds it to the hw's
 * set; otherwise removes it from the set. With is_new, sessions_created grows by one unless
 * the hash already existed (a repeated write counts nothing). */
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

/* XADD ihc:interrupts MAXLEN ~ log_max * … and HINCRBY ihc:stats total_interrupts and
 * successful_ or failed_interrupts, once per interrupt id (a repeated call adds nothing). */
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

typedef struct {
    uint64_t total, succeeded, failed, sessions_created;
} ihc_store_stats;
/* Sets the counters of ihc:stats (after Redis lost them, from the coordinator's memory). */
int ihc_store_stats_set(ihc_store *st, const ihc_store_stats *v);

/* ---- leadership (coordinator/leader.c) ---- */
typedef struct {
    const char *id;       /* this coordinator's IHC_COORDINATOR_ID */
    uint64_t ttl_ms;      /* the lease */
    uint64_t min_term;    /* acquire: the new term is above this (the highest term seen) */
    uint64_t id_block;    /* acquire: interrupt ids reserved with the lease */
    uint64_t min_next_id; /* acquire: the block starts at or above this id */
    const char *control, *http, *pub, *report; /* advertised addresses, may be NULL */
} ihc_store_lease_req;

typedef struct {
    bool held;         /* the caller holds the lease */
    uint64_t term;     /* held: the caller's term; else the current one (0: none yet) */
    char holder[256];  /* the holder's id ("" when nobody holds it) */
    uint64_t standbys; /* held: standbys that polled within 3 TTLs */
    uint64_t ids_hi;   /* acquire, held: the reserved block ends here (ids_hi - id_block, ids_hi] */
    char holder_control[512], holder_http[512], holder_pub[512]; /* not held: its addresses */
} ihc_store_lease;

/* Takes ihc:leader when free (SET NX PX) with a new term (INCR ihc:term, kept above
 * min_term), the addresses in ihc:leader:info and a block of interrupt ids, in one script;
 * otherwise records the caller in ihc:standbys and says who holds it. */
int ihc_store_lease_acquire(ihc_store *st, const ihc_store_lease_req *q, ihc_store_lease *out);
/* Extends the lease held with term (compare-and-extend); takes it back with the same term
 * when it lapsed and no later term was taken. out->held false: lost. */
int ihc_store_lease_renew(ihc_store *st, const ihc_store_lease_req *q, uint64_t term,
                          ihc_store_lease *out);
/* Deletes ihc:leader when it is id's (a clean shutdown hands over at once). */
int ihc_store_lease_resign(ihc_store *st, const char *id);
/* Reserves block more interrupt ids above max(ihc:seq, min_next_id - 1), fenced by term;
 * *hi receives the new high-water mark. IHC_ENOTLEADER when the term moved. */
int ihc_store_ids_reserve(ihc_store *st, uint64_t term, uint64_t block, uint64_t min_next_id,
                          uint64_t *hi);
/* GET ihc:term (missing: 0). */
int ihc_store_term_get(ihc_store *st, uint64_t *term);

#endif
