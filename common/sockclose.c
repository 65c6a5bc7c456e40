/* Bounded nng_close: see sockclose.h. The closing thread and the caller share a small
 * reference-counted record, so whichever finishes last frees it. */
#include "sockclose.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "clock.h"
#include "err.h"
#include "log.h"
#include "thread.h"

typedef struct {
    nng_socket s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int refs; /* the caller and the closing thread */
} closing;

static void closing_unref(closing *k)
{
    pthread_mutex_lock(&k->mu);
    bool last = --k->refs == 0;
    pthread_mutex_unlock(&k->mu);
    if (!last)
        return;
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

static void *closer_main(void *arg)
{
    closing *k = arg;
    nng_close(k->s);
    pthread_mutex_lock(&k->mu);
    k->done = true;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    closing_unref(k);
    return NULL;
}

static pthread_mutex_t kept_mu = PTHREAD_MUTEX_INITIALIZER;
static void *kept[16];

void ihc_sock_keep(void *owner)
{
    pthread_mutex_lock(&kept_mu);
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        if (kept[i] == NULL) {
            kept[i] = owner;
            break;
        }
    }
    pthread_mutex_unlock(&kept_mu);
}

int ihc_sock_close(nng_socket s, uint32_t within_ms, const char *comp, const char *name)
{
    if (nng_socket_id(s) <= 0)
        return IHC_OK; /* never opened */
    closing *k = calloc(1, sizeof *k);
    if (k == NULL)
        goto inline_close;
    k->s = s;
    k->refs = 2;
    pthread_mutex_init(&k->mu, NULL);
    if (ihc_cond_init_mono(&k->cv) != 0)
        goto fail_cv;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rv = pthread_create(&t, &attr, closer_main, k);
    pthread_attr_destroy(&attr);
    if (rv != 0)
        goto fail_thread;
    uint64_t t0 = ihc_mono_ns();
    struct timespec until = ihc_mono_abstime(t0 + (uint64_t)within_ms * 1000000u);
    pthread_mutex_lock(&k->mu);
    while (!k->done && pthread_cond_timedwait(&k->cv, &k->mu, &until) == 0)
        ;
    bool done = k->done;
    pthread_mutex_unlock(&k->mu);
    closing_unref(k);
    if (done)
        return IHC_OK;
    ihc_log(IHC_LOG_WARN, comp,
            "closing the %s socket did not finish within %u ms (an nng 1.5.2 close deadlock); "
            "going on without it",
            name, within_ms);
    return IHC_ETIMEDOUT;

fail_thread:
    pthread_cond_destroy(&k->cv);
fail_cv:
    pthread_mutex_destroy(&k->mu);
    free(k);
inline_close:
    nng_close(s);
    return IHC_OK;
}
