/* Interrupt requests published on the Redis channel ihc:requests (redis-cli PUBLISH): one
 * thread with its own hiredis connection, polling the socket and a stop pipe, so that it
 * can be stopped at once and reconnects with backoff when Redis goes away. */
#include "reqchan.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "redis_conn.h"
#include "redis_url.h"
#include "coordinator.h"
#include "request.h"
#include "thread.h"

#define COMPONENT      "reqchan"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

struct ihc_reqchan {
    ihc_coord *c;
    const ihc_config *cfg;
    ihc_redis_url url;
    char where[300]; /* for messages: never the password */
    int stop_pipe[2];
    pthread_t thread;
    bool started;
};

/* Waits up to ms for the stop pipe; true when stopping. */
static bool wait_stop(ihc_reqchan *rq, int ms)
{
    struct pollfd pfd = {.fd = rq->stop_pipe[0], .events = POLLIN};
    return poll(&pfd, 1, ms) > 0;
}

static void on_done(int status, char *json, void *arg)
{
    (void)arg;
    if (status != 200)
        ihc_log(IHC_LOG_WARN, COMPONENT, "request from %s refused status=%d body=%s",
                IHC_REQUESTS_CHANNEL, status, json ? json : "");
    free(json);
}

static void rejected(ihc_reqchan *rq, const char *why)
{
    ihc_api_count_rejected(rq->c);
    ihc_log(IHC_LOG_WARN, COMPONENT, "malformed request on %s: %s", IHC_REQUESTS_CHANNEL, why);
}

/* The body is the HTTP API's (request.h). */
static void handle_payload(ihc_reqchan *rq, const char *payload, size_t len)
{
    if (!ihc__coord_leading(rq->c))
        return; /* every coordinator hears the channel; the leader alone acts on it */
    ihc_request q;
    char why[256];
    if (ihc_request_parse(&q, payload, len, why, sizeof(why)) != IHC_OK) {
        rejected(rq, why);
        return;
    }
    ihc_api_interrupt(rq->c, q.hw, q.reason, q.timeout_ms, on_done, NULL);
    ihc_request_fini(&q);
}

/* Connects, authenticates and subscribes; NULL with why filled on failure. No SELECT:
 * pub/sub channels are shared by every database of a server, so the URL's db does not
 * matter here (it does for the store). */
static redisContext *connect_and_subscribe(ihc_reqchan *rq, char *why, size_t wlen)
{
    int tmo = rq->cfg->redis_timeout_ms > 0 ? rq->cfg->redis_timeout_ms : 500;
    struct timeval tv = {.tv_sec = tmo / 1000, .tv_usec = (tmo % 1000) * 1000};
    /* direct or through the sentinels (the master of the moment), with tv and keepalive */
    redisContext *ctx = NULL;
    redisReply *r = NULL;
    if (ihc_redis_connect(&rq->url, tv, &ctx, why, wlen) != IHC_OK)
        goto fail;
    if (rq->url.password) {
        const char *argv[3] = {"AUTH"};
        int argc = 1;
        if (rq->url.user)
            argv[argc++] = rq->url.user;
        argv[argc++] = rq->url.password;
        r = redisCommandArgv(ctx, argc, argv, NULL);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            snprintf(why, wlen, "AUTH: %s%s", r ? r->str : ctx->errstr,
                     r ? " (check the user and password in the URL)" : "");
            goto fail;
        }
        freeReplyObject(r);
    }
    r = redisCommand(ctx, "SUBSCRIBE %s", IHC_REQUESTS_CHANNEL);
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        snprintf(why, wlen, "SUBSCRIBE: %s",
                 !r                             ? ctx->errstr
                 : r->type == REDIS_REPLY_ERROR ? r->str
                                                : "unexpected reply");
        goto fail;
    }
    freeReplyObject(r);
    return ctx;
fail:
    if (r)
        freeReplyObject(r);
    if (ctx)
        redisFree(ctx);
    return NULL;
}

static void handle_reply(ihc_reqchan *rq, redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || !r->element[0]->str ||
        strcmp(r->element[0]->str, "message") != 0 || r->element[2]->type != REDIS_REPLY_STRING)
        return;
    handle_payload(rq, r->element[2]->str, r->element[2]->len);
}

static void *reqchan_main(void *arg)
{
    ihc_reqchan *rq = arg;
    ihc_thread_name("ihc:reqchan");
    int backoff = BACKOFF_MIN_MS;
    bool warned = false;
    for (;;) {
        char why[256];
        redisContext *ctx = connect_and_subscribe(rq, why, sizeof(why));
        if (!ctx) {
            if (!warned)
                ihc_log(IHC_LOG_WARN, COMPONENT,
                        "cannot subscribe to %s redis=%s err=\"%s\"; retrying",
                        IHC_REQUESTS_CHANNEL, rq->where, why);
            warned = true;
            if (wait_stop(rq, backoff))
                return NULL;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        ihc_log(IHC_LOG_INFO, COMPONENT, "subscribed channel=%s redis=%s", IHC_REQUESTS_CHANNEL,
                rq->where);
        warned = false;
        backoff = BACKOFF_MIN_MS;
        bool stop = false;
        for (;;) {
            void *reply = NULL;
            if (redisGetReplyFromReader(ctx, &reply) != REDIS_OK)
                break;
            if (reply) {
                handle_reply(rq, reply);
                freeReplyObject(reply);
                continue;
            }
            struct pollfd pfd[2] = {{.fd = ctx->fd, .events = POLLIN},
                                    {.fd = rq->stop_pipe[0], .events = POLLIN}};
            if (poll(pfd, 2, -1) < 0)
                continue;
            if (pfd[1].revents) {
                stop = true;
                break;
            }
            if (pfd[0].revents && redisBufferRead(ctx) != REDIS_OK)
                break;
        }
        redisFree(ctx);
        if (stop)
            return NULL;
        ihc_log(IHC_LOG_WARN, COMPONENT, "lost the subscription to %s; reconnecting",
                IHC_REQUESTS_CHANNEL);
        if (wait_stop(rq, backoff))
            return NULL;
    }
}

int ihc_reqchan_open(ihc_reqchan **out, ihc_coord *c, const ihc_config *cfg)
{
    ihc_reqchan *rq = calloc(1, sizeof(*rq));
    if (!rq)
        return IHC_ENOMEM;
    rq->c = c;
    rq->cfg = cfg;
    rq->stop_pipe[0] = rq->stop_pipe[1] = -1;
    char why[256];
    int rc = ihc_redis_url_parse(cfg->redis_url, &rq->url, why, sizeof(why));
    if (rc != IHC_OK) {
        if (rc == IHC_EINVAL) /* the reason only: the URL may hold a password */
            ihc_log(IHC_LOG_ERROR, COMPONENT, "bad redis url for the request channel reason=\"%s\"",
                    why);
        goto fail;
    }
    ihc_redis_url_where(&rq->url, rq->where, sizeof(rq->where));
    if (pipe2(rq->stop_pipe, O_CLOEXEC) != 0) {
        rc = IHC_EIO;
        goto fail;
    }
    if (pthread_create(&rq->thread, NULL, reqchan_main, rq) != 0) {
        rc = IHC_EINTERNAL;
        goto fail;
    }
    rq->started = true;
    *out = rq;
    return IHC_OK;
fail:
    ihc_reqchan_close(rq);
    return rc;
}

void ihc_reqchan_close(ihc_reqchan *rq)
{
    if (!rq)
        return;
    if (rq->started) {
        ssize_t n = write(rq->stop_pipe[1], "x", 1);
        (void)n;
        pthread_join(rq->thread, NULL);
    }
    if (rq->stop_pipe[0] >= 0)
        close(rq->stop_pipe[0]);
    if (rq->stop_pipe[1] >= 0)
        close(rq->stop_pipe[1]);
    ihc_redis_url_fini(&rq->url); /* wipes the password */
    free(rq);
}
