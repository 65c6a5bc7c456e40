/* The interrupt path (private): fencing by epochs, dedupe by (term, interrupt id), modules,
 * callbacks, generator stop, cleanup, escalation and the report; also the catch-up on sync. */
#ifndef IHC_AGENT_CANCEL_H
#define IHC_AGENT_CANCEL_H

#include "ihc/agent.h"
#include "wire.h"

#define IHC__DEDUPE_SIZE    4096 /* interrupt ids remembered */
#define IHC__DEDUPE_BUCKETS 4096

typedef struct {
    uint64_t id;
    uint64_t term; /* the leader's term it came with (0: none); handled once per (term, id) */
    uint64_t epoch;
    char hw[IHC_HW_MAX + 1];
    uint8_t *report; /* encoded report, NULL when none could be encoded */
    size_t report_len;
    int next; /* bucket chain, -1 ends */
    bool used;
} ihc__handled;

/* The interrupt (or catch-up) being handled, from its fencing to its report: kept here, not
 * on the stack, because a run of modules taken over by the rescue thread is finished there
 * (module.h). */
typedef struct {
    char hw[IHC_HW_MAX + 1];
    uint64_t id, term; /* id 0: a catch-up, no report */
    int link;          /* the coordinator it came from (the report goes back there) */
    uint64_t epoch, t0;
    size_t n; /* sessions claimed, in victims */
    struct ihc__module *head;
    size_t nm; /* modules of the run */
} ihc__cancel_run;

/* Sessions begun inside an on_cancel callback have their session_begin held back and go in
 * the interrupt's report (report.begun), one message where there were two; a session_begin is
 * encoded only for the other coordinators, or when it cannot go in the report. */
#define IHC__HELD_BEGINS_MAX 64 /* beyond it a session_begin goes out at once */

/* State of the interrupt path; only the receive thread touches it (held and n_held: under
 * the agent's lock). */
typedef struct {
    ihc__handled *ring;
    int *buckets;
    size_t pos;
    struct ihc__session **victims; /* max_active_sessions entries */
    size_t victims_cap;
    ihc_module_result *res;
    size_t res_cap;
    char **sids;
    uint64_t current_id; /* the interrupt being handled while on_cancel runs (0: a catch-up) */
    const char *current_reason; /* its reason, while on_cancel runs; NULL otherwise */
    ihc__cancel_run run;
    struct ihc__session *held[IHC__HELD_BEGINS_MAX]; /* a reference held on each */
    size_t n_held;
    const char *hold_hw; /* while on_cancel runs: the hw whose new sessions are held */
    ihc_session_info begun[IHC__HELD_BEGINS_MAX]; /* the report's, filled from held */
} ihc__cancel;

int ihc__cancel_init(ihc_agent *a);
void ihc__cancel_fini(ihc_agent *a);

/* Handles one decoded interrupt; t0_ns is when it was received (monotonic); direct when it
 * came on the agent's own topic (a re-send addressed to it: answered even without a session
 * of its hardware_id); link is the coordinator it came from (the report goes back there).
 * Returns false when the calling thread lost the receive role while it ran the modules (see
 * ihc__modules_run): it must return at once touching nothing of the agent. */
bool ihc__cancel_on_interrupt(ihc_agent *a, const ihc_interrupt_msg *m, uint64_t t0_ns, bool direct,
                              int link);

/* The id of the interrupt whose on_cancel callbacks are running (0: a catch-up after a sync,
 * or called elsewhere). Only meaningful inside an on_cancel callback. */
uint64_t ihc__cancel_current_id(ihc_agent *a);
/* Its reason ("" when none was given; "missed interrupt" for a catch-up). */
const char *ihc__cancel_current_reason(ihc_agent *a);

/* Agent's lock held, in ihc_agent_session_begin: when called inside an on_cancel callback of
 * an interrupt of one hardware_id whose coordinator reads a report's begun sessions, for a
 * session of that hardware_id, keeps s (a reference) for the report and returns true; false
 * otherwise (the caller sends its session_begin). Only that hardware_id: until the report
 * arrives the coordinator still counts the agent's interrupted session of it, so the agent
 * stays expected there; of another hardware_id it would know nothing meanwhile. */
bool ihc__cancel_hold_begin(ihc_agent *a, struct ihc__session *s);

/* Agent's lock held: s ends before the report that was to announce it went out; its
 * session_begin goes out now, ahead of its end. */
void ihc__cancel_release_begin(ihc_agent *a, struct ihc__session *s);

/* At close (nothing runs any more): drops the held session_begins. */
void ihc__cancel_drop_begins(ihc_agent *a);

/* On the rescue thread that took a run of modules over, when the run has ended: the rest of
 * the interrupt (report, callbacks, cleanup), as the displaced receive thread would have. */
void ihc__cancel_resume(ihc_agent *a);

/* Handles a sync: raises the known epochs and cancels what missed interrupts should have
 * (its modules run on workers: a catch-up is never taken over). */
void ihc__cancel_on_sync(ihc_agent *a, const ihc_sync_msg *m);

#endif
