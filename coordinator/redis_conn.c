/* Redis connections for the coordinator (redis_conn.h): direct, or through Sentinel
 * (https://redis.io/docs/reference/sentinel-clients/: ask the sentinels in turn for the
 * master's address, connect, verify with ROLE, and resolve again on every reconnect). */
#include "redis_conn.h"

#include "err.h"
#include "log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG_COMP "redis"

static bool timed_out(const redisContext *c, int saved_errno)
{
    return c->err == REDIS_ERR_IO &&
           (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == ETIMEDOUT ||
            strstr(c->errstr, "temporarily unavailable") || strstr(c->errstr, "timed out"));
}

/* A TCP or unix connection with tv as connect and command timeout. */
static int open_ctx(const char *host, int port, const char *path, struct timeval tv,
                    redisContext **out, char *why, size_t wlen)
{
    *out = NULL;
    errno = 0;
    redisContext *c =
        path ? redisConnectUnixWithTimeout(path, tv) : redisConnectWithTimeout(host, port, tv);
    if (!c) {
        snprintf(why, wlen, "out of memory");
        return IHC_ENOMEM;
    }
    int rc = IHC_OK;
    if (c->err) {
        rc = timed_out(c, errno) ? IHC_ETIMEDOUT : IHC_ENOTCONN;
        snprintf(why, wlen, "%s", c->errstr);
    } else if (redisSetTimeout(c, tv) != REDIS_OK ||
               (!path && redisEnableKeepAlive(c) != REDIS_OK)) {
        rc = IHC_ENOTCONN;
        snprintf(why, wlen, "socket options: %s", c->errstr);
    }
    if (rc != IHC_OK) {
        redisFree(c);
        return rc;
    }
    *out = c;
    return IHC_OK;
}

/* AUTH with the URL's credentials; false with why filled when refused or failed. */
static bool auth(redisContext *c, const ihc_redis_url *u, char *why, size_t wlen)
{
    const char *argv[3] = {"AUTH"};
    int argc = 1;
    if (u->user)
        argv[argc++] = u->user;
    argv[argc++] = u->password;
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    bool ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok)
        snprintf(why, wlen, "AUTH: %s", r ? r->str : c->errstr);
    if (r)
        freeReplyObject(r);
    return ok;
}

/* Asks one sentinel where the master is: IHC_OK with host (malloc'd) and port, IHC_ENOENT when
 * it does not know the master, else a connection error; why says what. */
static int ask_sentinel(const ihc_redis_url *u, const ihc_redis_sentinel *sn, struct timeval tv,
                        char **host, int *port, char *why, size_t wlen)
{
    redisContext *c = NULL;
    int rc = open_ctx(sn->host, sn->port, NULL, tv, &c, why, wlen);
    if (rc != IHC_OK)
        return rc;
    redisReply *r = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", u->master);
        /* a sentinel with requirepass: the URL's credentials, then once more */
        bool noauth = r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOAUTH", 6) == 0;
        if (!noauth || attempt == 1 || !u->password)
            break;
        freeReplyObject(r);
        r = NULL;
        if (!auth(c, u, why, wlen)) {
            redisFree(c);
            return IHC_ENOTCONN;
        }
    }
    rc = IHC_ENOTCONN;
    if (!r) {
        snprintf(why, wlen, "%s", c->errstr);
    } else if (r->type == REDIS_REPLY_NIL) {
        snprintf(why, wlen, "it knows no master named '%s'", u->master);
        rc = IHC_ENOENT;
    } else if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, wlen, "%s", r->str);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_STRING) {
        snprintf(why, wlen, "unexpected answer to SENTINEL get-master-addr-by-name");
    } else {
        long p = strtol(r->element[1]->str, NULL, 10);
        if (p <= 0 || p > 65535) {
            snprintf(why, wlen, "bad master port '%s'", r->element[1]->str);
        } else if (!(*host = strdup(r->element[0]->str))) {
            snprintf(why, wlen, "out of memory");
            rc = IHC_ENOMEM;
        } else {
            *port = (int)p;
            rc = IHC_OK;
        }
    }
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return rc;
}

/* Connects to the address a sentinel gave and checks that it is a master (a sentinel's view
 * lags a failover: the old master may still be named for a moment). */
static int connect_master(const ihc_redis_url *u, const char *host, int port, struct timeval tv,
                          redisContext **out, char *why, size_t wlen)
{
    redisContext *c = NULL;
    int rc = open_ctx(host, port, NULL, tv, &c, why, wlen);
    if (rc != IHC_OK)
        return rc;
    if (u->password && !auth(c, u, why, wlen)) {
        redisFree(c);
        return IHC_ENOTCONN;
    }
    redisReply *r = redisCommand(c, "ROLE");
    bool master = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                  r->element[0]->type == REDIS_REPLY_STRING &&
                  strcmp(r->element[0]->str, "master") == 0;
    if (!master)
        snprintf(why, wlen, "ROLE: %s",
                 !r                             ? c->errstr
                 : r->type == REDIS_REPLY_ERROR ? r->str
                 : r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                         r->element[0]->type == REDIS_REPLY_STRING
                     ? r->element[0]->str
                     : "unexpected answer");
    if (r)
        freeReplyObject(r);
    if (!master) {
        redisFree(c);
        return IHC_ENOTCONN;
    }
    *out = c;
    return IHC_OK;
}

static int via_sentinels(const ihc_redis_url *u, struct timeval tv, redisContext **out, char *why,
                         size_t wlen)
{
    char all[640] = ""; /* what each sentinel said */
    int rc = IHC_ENOTCONN;
    for (size_t i = 0; i < u->n_sentinels; i++) {
        const ihc_redis_sentinel *sn = &u->sentinels[i];
        char err[256], *host = NULL;
        int port = 0;
        rc = ask_sentinel(u, sn, tv, &host, &port, err, sizeof(err));
        if (rc == IHC_OK) {
            rc = connect_master(u, host, port, tv, out, err, sizeof(err));
            if (rc == IHC_OK)
                ihc_log(IHC_LOG_INFO, LOG_COMP,
                        "master found through sentinel master=%s addr=%s:%d sentinel=%s:%d",
                        u->master, host, port, sn->host, sn->port);
            else
                snprintf(err + strlen(err), sizeof(err) - strlen(err), " (master %s:%d)", host,
                         port);
        }
        free(host);
        if (rc == IHC_OK)
            return IHC_OK;
        if (rc == IHC_ENOMEM) {
            snprintf(why, wlen, "out of memory");
            return rc;
        }
        ihc_log(IHC_LOG_DEBUG, LOG_COMP, "sentinel passed over sentinel=%s:%d master=%s err=\"%s\"",
                sn->host, sn->port, u->master, err);
        size_t k = strlen(all);
        if (k + 1 < sizeof(all))
            snprintf(all + k, sizeof(all) - k, "%s%s:%d: %s", k ? "; " : "", sn->host, sn->port,
                     err);
    }
    snprintf(why, wlen, "no sentinel of %zu gave a reachable master '%s' (%s)", u->n_sentinels,
             u->master, all);
    return rc == IHC_ETIMEDOUT ? IHC_ETIMEDOUT : IHC_ENOTCONN;
}

int ihc_redis_connect(const ihc_redis_url *u, struct timeval tv, redisContext **out, char *why,
                      size_t wlen)
{
    *out = NULL;
    if (u->master)
        return via_sentinels(u, tv, out, why, wlen);
    return open_ctx(u->host, u->port, u->path, tv, out, why, wlen);
}
