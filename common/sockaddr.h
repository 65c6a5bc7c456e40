/* One text form of a connection's TCP endpoint ("127.0.0.1:50312", "[2001:db8::1]:50312"),
 * so that two processes can name the same connection: an agent says which local endpoints its
 * SUB connections have, and the coordinator recognises them among its PUB connections. */
#ifndef IHC_SOCKADDR_H
#define IHC_SOCKADDR_H

#include <nng/nng.h>
#include <stdbool.h>
#include <stddef.h>

#define IHC_SOCKADDR_STR_MAX 64 /* with the NUL */

/* Writes sa's text form into out; returns its length, or 0 when sa is not an IPv4 or IPv6
 * address (ipc, inproc: such endpoints name no single connection) or cap is too small. An
 * IPv4 address mapped into IPv6 ("::ffff:a.b.c.d") is written as IPv4, the way the other
 * end of a dual-stack listener sees it. */
size_t ihc_sockaddr_str(const nng_sockaddr *sa, char *out, size_t cap);

/* The same for a pipe's local (local true) or remote end; 0 when nng cannot say. */
size_t ihc_pipe_addr_str(nng_pipe p, bool local, char *out, size_t cap);

#endif
