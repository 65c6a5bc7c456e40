/* The session owner of churn.h: bursts of sessions begun as the agent takes a hello. */
#include "churn.h"

#include "harness.h"

#include "agent_int.h"
#include "err.h"

#include <sched.h>
#include <stdio.h>

/* Waits until the agent's need_hello is as given (or the test stops); false when stopped. */
static bool wait_hello(th_churn *c, bool asked)
{
    while (atomic_load(&c->a->need_hello) != asked)
        if (atomic_load(&c->stop))
            return false;
        else
            sched_yield();
    return true;
}

static void begin(th_churn *c, const char *sid)
{
    ihc_token *t = NULL;
    ihc_session_opts so = {.session_id = sid, .hw = "dev-churn", .module = c->module};
    TH_PASS(ihc_agent_session_begin(c->a, &so, &t, NULL, 0));
    ihc_token_release(t); /* the session lives on in the agent */
}

static void *churn_main(void *arg)
{
    th_churn *c = arg;
    char sid[32];
    do {
        if (!wait_hello(c, true) || !wait_hello(c, false))
            break;
        for (unsigned k = 0; k < c->burst; k++) {
            unsigned long n = atomic_load(&c->n);
            snprintf(sid, sizeof(sid), "c-%lu", n);
            begin(c, sid);
            if (n >= c->live) {
                snprintf(sid, sizeof(sid), "c-%lu", n - c->live);
                TH_PASS(ihc_agent_session_end(c->a, sid));
            }
            atomic_store(&c->n, n + 1);
        }
        atomic_fetch_add(&c->bursts, 1);
    } while (c->repeat);
    return NULL;
}

void th_churn_start(th_churn *c)
{
    atomic_init(&c->stop, false);
    atomic_init(&c->bursts, 0);
    atomic_init(&c->n, 0);
    assert_int_equal(pthread_create(&c->th, NULL, churn_main, c), 0);
}

void th_churn_stop(th_churn *c)
{
    atomic_store(&c->stop, true);
    pthread_join(c->th, NULL);
}
