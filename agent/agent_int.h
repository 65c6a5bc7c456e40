/* libihc-agent internals shared by its source files: the agent object and the transport
 * helpers of agent.c. */
#ifndef IHC_AGENT_INT_H
#define IHC_AGENT_INT_H

#include "ihc/agent.h"

#include "cancel.h"
#include "err.h"
#include "log.h"
#include "module.h"
#include "session.h"
#include "token.h"
#include "wire.h"

#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>

#define IHC__LOG "agent"

typedef struct ihc__callback {
    ihc_interrupt_fn fn;
    void *arg;
    struct ihc__callback *next;
} ihc__callback;

/* A report that could not be sent yet. */
typedef struct ihc__pending {
    uint8_t *buf;
    size_t len;
    struct ihc__pending *next;
} ihc__pending;

#define IHC__PENDING_MAX 1024

struct ihc_agent {
    ihc_agent_opts o; /* copied; the string members point into the fields below */
    char id[IHC_AGENT_ID_MAX + 1];
    char node[256];
    char *pub_url, *report_url, *config_file;
    ihc_wire_auth *auth;
    int64_t started_ms;

    /* transport */
    nng_socket sub, push;
    bool sub_open, push_open;
    atomic_int sub_pipes, push_pipes;
    atomic_bool synced;
    bool ever_synced; /* receive thread only: a sync was handled since open */
    atomic_bool need_hello;
    nng_aio *rx_aio; /* the receive thread's; cancelled to wake it (ihc__rx_wake) */
    pthread_t rx;
    bool rx_started;
    atomic_bool stopping;
    uint64_t next_hello_ns, next_hb_ns, next_tick_ns;
    uint64_t hello_due_ns; /* receive thread only: need_hello seen, hello goes out then */
    ihc__pending *pend_head, *pend_tail; /* receive thread only */
    size_t n_pending;

    /* sessions, epochs, flags, escalation: guarded by lock */
    pthread_mutex_t lock;
    ihc__session *sessions;
    size_t n_sessions;
    ihc__session *by_id[IHC__ID_BUCKETS];
    ihc__hwent *hws[IHC__HW_BUCKETS];
    size_t n_hws;
    uint64_t gepoch;
    uint64_t gflag_until_ns;
    uint64_t id_counter;
    uint32_t id_tag; /* random per agent run: keeps generated session ids apart */
    ihc__session *esc;
    pthread_cond_t esc_cv;
    pthread_t esc_thread;
    bool esc_started, esc_stop;

    ihc__genset *gs;
    ihc__modules mods;

    pthread_mutex_t cb_lock;
    ihc__callback *cb_head, *cb_tail;
    size_t n_cbs;

    ihc__cancel cx;

    /* counters */
    atomic_uint_fast64_t n_bad, n_drops, n_interrupts;
};

/* Sends buf (a non-report message for `what`) without blocking; drops and counts it when it
 * cannot go now. Takes ownership of buf. */
void ihc__send_encoded(ihc_agent *a, uint8_t *buf, size_t len, const char *what);
/* Any thread: the receive thread looks at need_hello and stopping now, not when its wait
 * for a message ends (it sleeps until its next timer when idle). */
void ihc__rx_wake(ihc_agent *a);
/* Sends an already encoded report, queueing a copy when it cannot go now. */
void ihc__send_report_buf(ihc_agent *a, const uint8_t *buf, size_t len);
/* Sends session_end for s (lock NOT held; s must stay referenced). */
void ihc__send_session_end(ihc_agent *a, const ihc__session *s, const char *state);

/* Monotonic ns / seconds -> ns. */
uint64_t ihc__now_ns(void);
static inline uint64_t ihc__s_to_ns(double s)
{
    return s <= 0 ? 0 : (uint64_t)(s * 1e9);
}
/* Absolute CLOCK_MONOTONIC timespec for cond waits. */
struct timespec ihc__abstime(uint64_t mono_ns);
int ihc__cond_init_mono(pthread_cond_t *cv);
/* Lowers the calling thread's nice value when opts.high_priority (errors ignored). */
void ihc__thread_priority(bool high);

#endif
