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

#define COMPONENT      "reqchan"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

struct ihc_reqchan {
    ihc_coord *c;
    const ihc_config *cfg;
    char host[256];
    int port;
    char user[256];
    char pass[512];
    int stop_pipe[2];
    pthread_t thread;
    bool started;
};

/* redis://[user:password@|:password@]host[:port][/db] -> host, port, user, pass. */
static int parse_url(ihc_reqchan *rq, const char *url)
{
    static const char prefix[] = "redis://";
    if (!url || strncmp(url, prefix, sizeof(prefix) - 1) != 0)
        return IHC_EINVAL;
    const char *p = url + sizeof(prefix) - 1;
    const char *end = p + strcspn(p, "/");
    const char *at = NULL;
    for (const char *q = p; q < end; q++)
        if (*q == '@')
            at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t ulen = colon ? (size_t)(colon - p) : 0;
        const char *pw = colon ? colon + 1 : p;
        size_t plen = (size_t)(at - pw);
        if (ulen >= sizeof(rq->user) || plen >= sizeof(rq->pass))
            return IHC_EINVAL;
        memcpy(rq->user, p, ulen);
        rq->user[ulen] = '\0';
        memcpy(rq->pass, pw, plen);
        rq->pass[plen] = '\0';
        p = at + 1;
    }
    const char *hend;
    const char *portp = NULL;
    if (*p == '[') {
        p++;
        hend = memchr(p, ']', (size_t)(end - p));
        if (!hend)
            return IHC_EINVAL;
        if (hend + 1 < end && hend[1] == ':')
            portp = hend + 2;
    } else {
        hend = memchr(p, ':', (size_t)(end - p));
        if (hend)
            portp = hend + 1;
        else
            hend = end;
    }
    size_t hlen = (size_t)(hend - p);
    if (hlen == 0 || hlen >= sizeof(rq->host))
        return IHC_EINVAL;
    memcpy(rq->host, p, hlen);
    rq->host[hlen] = '\0';
    rq->port = 6379;
    if (portp) {
        int port = 0;
        for (const char *q = portp; q < end; q++) {
            if (*q < '0' || *q > '9')
                return IHC_EINVAL;
            port = port * 10 + (*q - '0');
            if (port > 65535)
                return IHC_EINVAL;
        }
        if (port == 0)
            return IHC_EINVAL;
        rq->port = port;
    }
    return IHC_OK;
}

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

static void handle_payload(ihc_reqchan *rq, const char *payload, size_t len)
{
    json_error_t jerr;
    json_t *o = json_loadb(payload, len, 0, &jerr);
    if (!json_is_object(o)) {
        char why[200];
        snprintf(why, sizeof(why), "%s", o ? "expected a JSON object" : jerr.text);
        json_decref(o);
        rejected(rq, why);
        return;
    }
    json_t *hw = json_object_get(o, "hardware_id");
    json_t *reason = json_object_get(o, "reason");
    json_t *timeout = json_object_get(o, "timeout_ms");
    if (!json_is_string(hw))
        rejected(rq, "hardware_id: expected a string");
    else if (reason && !json_is_null(reason) && !json_is_string(reason))
        rejected(rq, "reason: expected a string");
    else if (timeout && !json_is_null(timeout) && !json_is_integer(timeout))
        rejected(rq, "timeout_ms: expected an integer");
    else
        ihc_api_interrupt(
            rq->c, json_string_value(hw), json_is_string(reason) ? json_string_value(reason) : NULL,
            json_is_integer(timeout) ? (int64_t)json_integer_value(timeout) : 0, on_done, NULL);
    json_decref(o);
}

static redisContext *connect_and_subscribe(ihc_reqchan *rq)
{
    int tmo = rq->cfg->redis_timeout_ms > 0 ? rq->cfg->redis_timeout_ms : 500;
    struct timeval tv = {.tv_sec = tmo / 1000, .tv_usec = (tmo % 1000) * 1000};
    redisContext *ctx = redisConnectWithTimeout(rq->host, rq->port, tv);
    if (!ctx || ctx->err)
        goto fail;
    redisSetTimeout(ctx, tv);
    redisEnableKeepAlive(ctx);
    redisReply *r;
    if (rq->pass[0]) {
        r = rq->user[0] ? redisCommand(ctx, "AUTH %s %s", rq->user, rq->pass)
                        : redisCommand(ctx, "AUTH %s", rq->pass);
        bool ok = r && r->type != REDIS_REPLY_ERROR;
        if (r)
            freeReplyObject(r);
        if (!ok)
            goto fail;
    }
    r = redisCommand(ctx, "SUBSCRIBE %s", IHC_REQUESTS_CHANNEL);
    bool ok = r && r->type == REDIS_REPLY_ARRAY;
    if (r)
        freeReplyObject(r);
    if (!ok)
        goto fail;
    return ctx;
fail:
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
    int backoff = BACKOFF_MIN_MS;
    bool warned = false;
    for (;;) {
        redisContext *ctx = connect_and_subscribe(rq);
        if (!ctx) {
            if (!warned)
                ihc_log(IHC_LOG_WARN, COMPONENT, "cannot subscribe to %s on %s:%d; retrying",
                        IHC_REQUESTS_CHANNEL, rq->host, rq->port);
            warned = true;
            if (wait_stop(rq, backoff))
                return NULL;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        ihc_log(IHC_LOG_INFO, COMPONENT, "subscribed channel=%s redis=%s:%d", IHC_REQUESTS_CHANNEL,
                rq->host, rq->port);
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
    int rc = parse_url(rq, cfg->redis_url);
    if (rc != IHC_OK) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "bad redis url for the request channel");
        goto fail;
    }
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
    memset(rq->pass, 0, sizeof(rq->pass));
    free(rq);
}
