/* An owner of sessions on an in-process agent that begins and ends them around the agent's
 * hellos: the load that shows whether session events and hellos reach a coordinator in the
 * order of the changes (ihc.agent_ha, it.session_events). */
#ifndef IHC_TEST_CHURN_H
#define IHC_TEST_CHURN_H

#include "ihc/agent.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

typedef struct {
    /* set before th_churn_start */
    ihc_agent *a;
    const char *module; /* of every session (NULL: none) */
    unsigned long live; /* sessions kept open: the oldest beyond it is ended */
    unsigned burst;     /* sessions begun per burst */
    bool repeat;        /* a burst at every hello, not only the first */
    /* read by the test */
    atomic_ulong bursts; /* bursts done */
    atomic_ulong n;      /* sessions begun ("c-0", "c-1", … of hardware_id "dev-churn") */
    /* the owner's */
    atomic_bool stop;
    pthread_t th;
} th_churn;

/* Starts the owner: it waits until the agent takes a hello (need_hello set, then cleared
 * right before the snapshot) and begins a burst then, so that sessions are begun and ended
 * between the hello's snapshot and its send. */
void th_churn_start(th_churn *c);
/* Stops the owner (a burst under way is finished) and joins it. */
void th_churn_stop(th_churn *c);

#endif
