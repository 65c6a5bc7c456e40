/* Closing an nng socket within a deadline. nng 1.5.2's nng_close can wait forever for a pipe
 * that never finishes closing (seen here on the coordinator's report socket after heavy HTTP
 * load, about one shutdown in five under AddressSanitizer; several close deadlocks were fixed
 * upstream after 1.5.2, e.g. nng#1543). A daemon that must stop on SIGTERM bounds that wait. */
#ifndef IHC_SOCKCLOSE_H
#define IHC_SOCKCLOSE_H

#include <nng/nng.h>
#include <stdint.h>

/* What the daemons allow each socket at shutdown: long enough for a normal close under load,
 * short enough that SIGTERM still means a prompt exit. */
#define IHC_SOCK_CLOSE_MS 2000

/* Closes s, waiting at most within_ms for nng_close to return. On IHC_OK the socket is
 * closed and nothing of it runs any more. On IHC_ETIMEDOUT a warning naming comp and name is
 * logged and nng_close goes on in a detached thread: the caller must then not free anything
 * that the socket's callbacks (pipe notifications, aio callbacks) may still touch, and should
 * leave the process soon. If no thread can be started, it closes in the calling thread,
 * unbounded. Errors: IHC_ETIMEDOUT. */
int ihc_sock_close(nng_socket s, uint32_t within_ms, const char *comp, const char *name);

/* Keeps owner (the state a socket that is still closing may touch) for the rest of the process
 * instead of freeing it, reachable from here so that LeakSanitizer does not report it. */
void ihc_sock_keep(void *owner);

#endif
