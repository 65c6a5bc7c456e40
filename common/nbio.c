/* Non-blocking nng receive and send on a kept aio (see nbio.h for why). */
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
