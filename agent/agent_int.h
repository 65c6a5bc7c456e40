/* libihc-agent internals shared by its source files: the agent object. */
#ifndef IHC_AGENT_INT_H
#define IHC_AGENT_INT_H

#include "ihc/agent.h"

#include "cancel.h"
#include "err.h"
#include "log.h"
#include "module.h"
#include "session.h"
#include "tls.h"
#include "token.h"
#include "transport.h"
#include "wire.h"

#include <pthread.h>
#include <stdatomic.h>

#define IHC__LOG "agent"

typedef struct ihc__callback {
    ihc_interrupt_fn fn;
    void *arg;
    struct ihc__callback *next;
} ihc__callback;

struct ihc_agent {
    ihc_agent_opts o; /* copied; the string members point into the fields below */
    char id[IHC_AGENT_ID_MAX + 1];
    char node[256];
    char *pub_url, *report_url, *config_file;
    ihc_wire_auth *auth;
    ihc_tls *tls;               /* tls+tcp:// URLs; NULL: none */
    ihc_tls_doctor *tls_doctor; /* says why a TLS connection fails; NULL without TLS */
    int64_t started_ms;

    /* the connection to the coordinator; the rest of this block is the receive thread's
     * unless atomic */
    ihc__transport tp;
    atomic_bool synced;
    bool ever_synced; /* a sync was handled since open */
    atomic_bool need_hello;
    uint64_t next_hello_ns, next_hb_ns, next_tick_ns;
    uint64_t hello_due_ns; /* need_hello seen, hello goes out then */
    uint64_t opened_ns;    /* monotonic, for the warning when no connection comes */
    bool told_unreachable;
    _Atomic uint64_t lost_ns; /* when the connection was lost (0: it was not) */
    uint64_t max_term;        /* the newest leader term seen: older ones are a deposed leader's */
    atomic_bool term_forget;  /* every PUB connection went down: max_term starts over */

    /* Taken before lock by whoever changes the sessions and sends about it (session_begin,
     * session_end) and by the hello, which lists them, held until the message is queued on
     * every coordinator's link: each coordinator then gets the events in the order of the
     * changes. A hello is a snapshot that replaces the coordinator's list; queued after a
     * session_begin it did not see, it would wipe that session (after a session_end, bring
     * it back) until the next hello. */
    pthread_mutex_t send_lock;

    /* sessions, epochs, flags, escalation: guarded by lock */
    pthread_mutex_t lock;
    /* oldest first (created_ns is taken under lock as a session is linked), so that the
     * reaper stops at the first session too young to expire */
    ihc__session *sessions, *sessions_tail;
    size_t n_sessions;
    ihc__session *by_id[IHC__ID_BUCKETS];
    ihc__hwent *hws[IHC__HW_BUCKETS];
    size_t n_hws, n_hws_idle; /* idle: holding no session (may be pruned past HW_KEEP) */
    uint64_t gepoch;
    uint64_t gflag_until_ns;
    uint64_t id_counter;
    uint32_t id_tag; /* random per agent run: keeps generated session ids apart */
    ihc__session *esc;
    pthread_cond_t esc_cv;
    pthread_cond_t report_cv; /* an owner reported its module results (report_in) */
    pthread_t esc_thread;
    bool esc_started, esc_stop;

    ihc__genset *gs;
    ihc__modules mods;

    pthread_mutex_t cb_lock;
    ihc__callback *cb_head, *cb_tail;
    size_t n_cbs;

    ihc__cancel cx;

    /* counters (dropped sends: ihc__transport_drops) */
    atomic_uint_fast64_t n_bad, n_interrupts, n_stale_term;
};

/* Sends session_end for s (lock NOT held; s must stay referenced). */
void ihc__send_session_end(ihc_agent *a, ihc__session *s, const char *state);
/* Lock held: s's session_begin, encoded (caller frees); NULL when encoding failed (logged). */
uint8_t *ihc__session_encode_begin(ihc_agent *a, ihc__session *s, size_t *len);

#endif
