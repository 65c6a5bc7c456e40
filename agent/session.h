/* Sessions (private): the live session tables, per-hardware_id epochs and flags, generators,
 * reaping of expired sessions and escalation to signals for sessions with a pid. */
#ifndef IHC_AGENT_SESSION_H
#define IHC_AGENT_SESSION_H

#include "ihc/agent.h"
#include "wire.h"

#include <pthread.h>

typedef struct ihc__hwent ihc__hwent;

/* A session. Fields are guarded by the agent lock; refs counts the live tables, the
 * escalation list, every cancel in progress that holds it and a session_begin held for a
 * report (cancel.h). */
typedef struct ihc__session {
    char id[IHC_ID_MAX + 1];
    char hw[IHC_HW_MAX + 1];
    char *module; /* NULL when none */
    char *data;   /* NULL when none */
    pid_t pid;
    uint64_t epoch;  /* hw epoch known when it began */
    uint64_t gepoch; /* global epoch known when it began */
    int64_t created_ms;
    uint64_t created_ns; /* monotonic, for SESSION_TIMEOUT */
    ihc_token *tok;      /* one reference held by the session */
    ihc_session_cancel_fn on_cancel;
    void *arg;
    int refs;
    bool live;       /* in the live tables */
    bool cancelled;  /* claimed by an interrupt, a catch-up or expiry */
    bool ended;      /* its owner called ihc_agent_session_end */
    bool escalating; /* in the escalation list */
    bool begin_held; /* its session_begin waits for the report it goes in (cancel.h) */
    /* its owner runs its own interrupt methods and reports them (ihc__session_report): the
     * interrupt's report waits for them up to the module timeout */
    bool report_held;
    bool report_in;         /* the owner reported (or ended the session) */
    bool report_taken;      /* the report was sent: later results are ignored */
    ihc_module_result *ext; /* the owner's module results, owned; n_ext of them */
    size_t n_ext;
    int esc_stage; /* 0 waiting, 1 SIGTERM sent */
    uint64_t esc_at_ns;
    ihc__hwent *hwe;
    struct ihc__session *prev, *next;       /* all live sessions */
    struct ihc__session *hw_prev, *hw_next; /* live sessions of the same hw */
    struct ihc__session *id_next;           /* id hash chain */
    struct ihc__session *esc_next;          /* escalation list */
} ihc__session;

/* What the agent knows about one hardware_id. */
struct ihc__hwent {
    char hw[IHC_HW_MAX + 1];
    uint64_t epoch;
    uint64_t flag_until_ns; /* should_interrupt(hw) until then (monotonic) */
    size_t n_sessions;
    ihc__session *sessions;
    struct ihc__hwent *next;
};

#define IHC__ID_BUCKETS 256
#define IHC__HW_BUCKETS 256
#define IHC__HW_KEEP    4096 /* hw entries kept before idle ones are pruned */

/* Generators of all sessions; its own lock, and outlives the agent while abandoned
 * generator threads still hold it. */
typedef struct ihc__genset ihc__genset;

int ihc__sessions_init(ihc_agent *a);
/* Frees every session, hw entry and escalation (threads must be stopped). */
void ihc__sessions_fini(ihc_agent *a);

/* Lock held. The entry of hw, created when create is set (NULL on ENOMEM or absent); a new
 * entry subscribes the agent to hw's broadcasts for as long as it is kept. */
ihc__hwent *ihc__hw_get(ihc_agent *a, const char *hw, bool create);
/* Lock held. Removes s from the live tables (drops their reference). */
void ihc__session_unlink(ihc_agent *a, ihc__session *s);
/* Lock held. Drops one reference; frees s at zero. */
void ihc__session_put(ihc__session *s);
/* Lock held. Claims s for a cancel: marks it cancelled, cancels its token, takes a
 * reference for the caller. Returns false when it was already claimed. */
bool ihc__session_claim(ihc__session *s);

/* Agent's lock held: s as the wire describes a session (session_begin, hello, report.begun);
 * its strings are s's own, valid while s is. */
ihc_session_info ihc__session_describe(const ihc__session *s);

/* Ends the claimed sessions' work after a cancel (lock NOT held): calls on_cancel, then the
 * generators' stop functions. */
void ihc__sessions_notify(ihc_agent *a, ihc__session **v, size_t n);
/* Lock NOT held. Removes still-live claimed sessions and sends session_end(state) for each
 * to every coordinator but reported_to, the one whose report already names the sessions
 * (IHC__REPORTED_NONE: to all; IHC__REPORTED_ALL: the report went to every one, nothing to
 * send). Standbys learn the ends this way. */
#define IHC__REPORTED_NONE (-1)
#define IHC__REPORTED_ALL  (-2)
void ihc__sessions_cleanup(ihc_agent *a, ihc__session **v, size_t n, const char *state,
                           int reported_to);
/* Lock NOT held. Queues escalation (SIGTERM, SIGKILL) for the claimed sessions with a pid. */
void ihc__sessions_escalate(ihc_agent *a, ihc__session **v, size_t n);
/* Lock NOT held. Drops the caller's references. */
void ihc__sessions_release(ihc_agent *a, ihc__session **v, size_t n);

/* ---- owners that run their own interrupt methods (ihc-agent's local API) ---- */
/* Called from the session's on_cancel: the interrupt's report is to wait (up to
 * wait_ms) for the owner's ihc__session_report, so that its module results are in it.
 * Errors: IHC_ENOENT (no such live session), IHC_EINVAL. */
int ihc__session_hold_report(ihc_agent *a, const char *session_id);
/* The owner's module results for the interrupt that stopped session_id (copied); with n 0
 * it only says that nothing more is coming. Ending the session says so too. Errors:
 * IHC_ENOENT, IHC_ENOMEM, IHC_EINVAL. */
int ihc__session_report(ihc_agent *a, const char *session_id, const ihc_module_result *mods,
                        size_t n);
/* The session's hw epoch and creation time (agent wall clock, ms). Errors: IHC_ENOENT. */
int ihc__session_info(ihc_agent *a, const char *session_id, uint64_t *epoch, int64_t *created_ms);
/* Lock NOT held. Waits until every held session of v reported or until_ns (monotonic)
 * passes; returns how many results the reported sessions carry. */
size_t ihc__sessions_await_reports(ihc_agent *a, ihc__session **v, size_t n, uint64_t until_ns);

/* Periodic work on the receive thread: expires sessions past SESSION_TIMEOUT, prunes idle
 * hw entries, joins finished generator threads. */
void ihc__sessions_tick(ihc_agent *a);

/* Escalation thread. */
int ihc__escalator_start(ihc_agent *a);
void ihc__escalator_stop(ihc_agent *a);

/* Generators. */
int ihc__gens_new(ihc_agent *a);
/* Calls the stop function of every generator whose token is cancelled and not stopped yet. */
void ihc__gens_stop_cancelled(ihc_agent *a);
/* At close: stops every generator, waits up to timeout_ms, joins finished threads, detaches
 * the rest and drops the agent's reference to the set. */
void ihc__gens_close(ihc_agent *a, int timeout_ms);

#endif
