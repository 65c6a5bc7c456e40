/* The one way the coordinator opens a Redis connection: directly for redis:// and unix://
 * URLs, through Redis Sentinel for redis-sentinel:// (hiredis 0.14 has no sentinel support, so
 * this is the small layer of Redis' documented sentinel client protocol on top of it). */
#ifndef IHC_COORD_REDIS_CONN_H
#define IHC_COORD_REDIS_CONN_H

#include "redis_url.h"

#include <hiredis.h>
#include <stddef.h>
#include <sys/time.h>

/* Connects to the Redis u names. With sentinels: asks each in turn (in the URL's order)
 * `SENTINEL get-master-addr-by-name <master>` (authenticating with the URL's user and password
 * when a sentinel asks for it), connects to the address the first one that knows gives,
 * authenticates there and confirms with `ROLE` that it is a master; a sentinel whose master is
 * unreachable or not (yet) a master is passed over for the next. Call it on every (re)connect:
 * after a failover it finds the promoted replica. tv bounds every connect and command; the
 * context returned keeps tv as its command timeout and, over TCP, TCP keepalive. AUTH for
 * direct URLs, SELECT and CLIENT SETNAME stay the caller's. On IHC_OK *out is connected (caller
 * frees it with redisFree); otherwise *out is NULL and why says what failed, naming the
 * addresses (never the password): IHC_ENOTCONN, IHC_ETIMEDOUT, IHC_ENOMEM. */
int ihc_redis_connect(const ihc_redis_url *u, struct timeval tv, redisContext **out, char *why,
                      size_t wlen);

#endif
