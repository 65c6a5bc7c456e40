/* Non-blocking nng receive and send on an aio the caller keeps, and a receive kept pending for
 * a thread that polls its own fd. nng 1.5.2's nng_recvmsg and
 * nng_sendmsg allocate, initialise and free an aio on every call (with a getrandom system call
 * to place it on an expiry queue, and a lock of that queue to free it): about 0.8 µs each on
 * the project's 2-core VM, paid per message on the coordinator's and the agents' hot paths. */
#ifndef IHC_NBIO_H
#define IHC_NBIO_H

#include <nng/nng.h>
#include <stdatomic.h>
#include <stdbool.h>

/* Takes the next message s holds without waiting. aio: allocated without a callback
 * (nng_aio_alloc(&aio, NULL, NULL)), used by one thread at a time, idle between calls.
 * Returns 0 with *out set (the caller owns it), NNG_EAGAIN when s holds nothing, or nng's
 * error (NNG_ECLOSED once s is closed). */
int ihc_nb_recv(nng_socket s, nng_aio *aio, nng_msg **out);

/* Hands m to s if it can take it without waiting. aio: as for ihc_nb_recv. Returns 0 when s
 * took m (nng owns it then), or nng's error (NNG_EAGAIN: no room now) and the caller keeps
 * m. */
int ihc_nb_send(nng_socket s, nng_aio *aio, nng_msg *m);

/* A receive kept pending on a socket, for a thread that sleeps in poll() on a fd of its own
 * rather than on the socket's NNG_OPT_RECVFD: nng 1.5.2's SUB and PULL raise that fd while
 * holding the socket's lock, and the woken thread's receive then waits for the lock (half a
 * sleep and a wake-up more per message, measured). The aio's callback runs once nng has let
 * the lock go; it calls wake, which must only signal the thread (e.g. write its eventfd).
 * The pending receive has no timeout, so nng's expiry thread never wakes for it. Used by one
 * thread at a time (the owner); wake is called from nng's threads. */
typedef struct {
    nng_aio *aio;
    atomic_bool done; /* the receive completed; set before wake is called */
    bool armed;       /* a receive was started and not taken yet (owner only) */
    void (*wake)(void *arg);
    void *arg;
} ihc_nb_waiter;

/* Allocates the aio. Returns 0 or nng's error. */
int ihc_nb_waiter_init(ihc_nb_waiter *w, void (*wake)(void *arg), void *arg);

/* Cancels a pending receive (wake may be called meanwhile), frees a message that came after
 * the owner stopped taking, and the aio. Accepts a waiter never initialised (zeroed). */
void ihc_nb_waiter_fini(ihc_nb_waiter *w);

/* Before the owner sleeps: starts a receive on s unless one was started and not taken. A
 * socket that holds a message already completes it at once (wake follows). */
void ihc_nb_waiter_arm(ihc_nb_waiter *w, nng_socket s);

/* True from ihc_nb_waiter_arm until ihc_nb_waiter_take took what it received. */
bool ihc_nb_waiter_armed(const ihc_nb_waiter *w);

/* True while the receive started by ihc_nb_waiter_arm has not completed: the socket holds
 * nothing older than what it will bring, so the owner takes nothing else meanwhile (a
 * connection's messages stay in order). */
bool ihc_nb_waiter_pending(const ihc_nb_waiter *w);

/* The completed receive's message: 0 with *out set (the caller owns it), nng's error when it
 * failed (NNG_ECLOSED: the socket closed), NNG_EAGAIN when none was started or it is still
 * pending. After it, what else came is taken with ihc_nb_recv. */
int ihc_nb_waiter_take(ihc_nb_waiter *w, nng_msg **out);

#endif
