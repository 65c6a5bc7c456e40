/* Non-blocking nng receive and send on a kept aio, and the pending receive of a thread that
 * polls its own fd (see nbio.h for why). */
#include "nbio.h"

#include <stddef.h>

/* A zero timeout makes the socket finish the aio at once, with NNG_ETIMEDOUT when it would
 * have to wait; without a callback the completion runs in this thread (nng dispatches no
 * task for it), so nng_aio_wait returns without a wake-up. */
static int nb_wait(nng_aio *aio)
{
    nng_aio_wait(aio);
    int rv = nng_aio_result(aio);
    return rv == NNG_ETIMEDOUT ? NNG_EAGAIN : rv;
}

int ihc_nb_recv(nng_socket s, nng_aio *aio, nng_msg **out)
{
    nng_aio_set_timeout(aio, NNG_DURATION_ZERO);
    nng_recv_aio(s, aio);
    int rv = nb_wait(aio);
    if (rv == 0)
        *out = nng_aio_get_msg(aio);
    nng_aio_set_msg(aio, NULL);
    return rv;
}

int ihc_nb_send(nng_socket s, nng_aio *aio, nng_msg *m)
{
    nng_aio_set_timeout(aio, NNG_DURATION_ZERO);
    nng_aio_set_msg(aio, m);
    nng_send_aio(s, aio);
    int rv = nb_wait(aio);
    nng_aio_set_msg(aio, NULL); /* on failure m is the caller's again */
    return rv;
}

static void waiter_done(void *arg)
{
    ihc_nb_waiter *w = arg;
    atomic_store(&w->done, true);
    w->wake(w->arg);
}

int ihc_nb_waiter_init(ihc_nb_waiter *w, void (*wake)(void *arg), void *arg)
{
    w->wake = wake;
    w->arg = arg;
    w->armed = false;
    atomic_init(&w->done, false);
    return nng_aio_alloc(&w->aio, waiter_done, w);
}

void ihc_nb_waiter_fini(ihc_nb_waiter *w)
{
    if (!w->aio)
        return;
    nng_aio_stop(w->aio);
    if (nng_aio_result(w->aio) == 0)
        nng_msg_free(nng_aio_get_msg(w->aio));
    nng_aio_free(w->aio);
    w->aio = NULL;
}

void ihc_nb_waiter_arm(ihc_nb_waiter *w, nng_socket s)
{
    if (w->armed)
        return;
    w->armed = true;
    nng_recv_aio(s, w->aio);
}

bool ihc_nb_waiter_armed(const ihc_nb_waiter *w)
{
    return w->armed;
}

bool ihc_nb_waiter_pending(const ihc_nb_waiter *w)
{
    return w->armed && !atomic_load(&w->done);
}

int ihc_nb_waiter_take(ihc_nb_waiter *w, nng_msg **out)
{
    if (!w->armed || !atomic_exchange(&w->done, false))
        return NNG_EAGAIN;
    w->armed = false;
    int rv = nng_aio_result(w->aio);
    if (rv == 0)
        *out = nng_aio_get_msg(w->aio);
    nng_aio_set_msg(w->aio, NULL);
    return rv;
}
