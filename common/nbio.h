/* Non-blocking nng receive and send on an aio the caller keeps. nng 1.5.2's nng_recvmsg and
 * nng_sendmsg allocate, initialise and free an aio on every call (with a getrandom system call
 * to place it on an expiry queue, and a lock of that queue to free it): about 0.8 µs each on
 * the project's 2-core VM, paid per message on the coordinator's and the agents' hot paths. */
#ifndef IHC_NBIO_H
#define IHC_NBIO_H

#include <nng/nng.h>

/* Takes the next message s holds without waiting. aio: allocated without a callback
 * (nng_aio_alloc(&aio, NULL, NULL)), used by one thread at a time, idle between calls.
 * Returns 0 with *out set (the caller owns it), NNG_EAGAIN when s holds nothing, or nng's
 * error (NNG_ECLOSED once s is closed). */
int ihc_nb_recv(nng_socket s, nng_aio *aio, nng_msg **out);

/* Hands m to s if it can take it without waiting. aio: as for ihc_nb_recv. Returns 0 when s
 * took m (nng owns it then), or nng's error (NNG_EAGAIN: no room now) and the caller keeps
 * m. */
int ihc_nb_send(nng_socket s, nng_aio *aio, nng_msg *m);

#endif
