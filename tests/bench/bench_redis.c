/* What a user might use instead of ihc, measured the same way as bench_floor:
 *   --mode pubsub : Redis PUBLISH → N subscriber processes → acks through a Redis list
 *   --mode poll   : the original module's design — N workers poll a Redis flag every
 *                   --interval ms (INTERRUPT_CHECK_INTERVAL, 100) and ack through a list
 * Usage: bench_redis --port P [--mode pubsub|poll] [--agents N] [--iterations K]
 *                    [--interval MS] [--samples F] */
#include "bench_util.h"

#include <hiredis.h>
#include <inttypes.h>
#include <stdbool.h>

static int port = 6379, interval_ms = 100;
static const char *mode = "pubsub";

static redisContext *conn(void)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        fprintf(stderr, "bench_redis: cannot connect to 127.0.0.1:%d\n", port);
        exit(1);
    }
    return c;
}

static void ack(redisContext *c, const char *seq, int idx)
{
    redisReply *r = redisCommand(c, "LPUSH ihc:bench:acks %s:%d", seq, idx);
    if (r)
        freeReplyObject(r);
}

static void subscriber(void *arg)
{
    int idx = (int)(intptr_t)arg;
    redisContext *sub = conn(), *out = conn();
    redisReply *r = redisCommand(sub, "SUBSCRIBE ihc:bench");
    if (r)
        freeReplyObject(r);
    ack(out, "ready", idx);
    while (redisGetReply(sub, (void **)&r) == REDIS_OK) {
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[2]->str)
            ack(out, r->element[2]->str, idx);
        freeReplyObject(r);
    }
}

static void poller(void *arg)
{
    int idx = (int)(intptr_t)arg;
    redisContext *c = conn();
    char last[32] = "";
    ack(c, "ready", idx);
    for (;;) {
        redisReply *r = redisCommand(c, "GET ihc:bench:flag");
        if (!r)
            break;
        if (r->type == REDIS_REPLY_STRING && strcmp(r->str, last) != 0) {
            snprintf(last, sizeof(last), "%s", r->str);
            ack(c, last, idx);
        }
        freeReplyObject(r);
        usleep((useconds_t)interval_ms * 1000);
    }
}

/* Pops acks until n distinct agents acknowledged tag; returns how many did. */
static int collect(redisContext *c, const char *tag, int n, char *seen)
{
    int got = 0;
    memset(seen, 0, (size_t)n);
    size_t tl = strlen(tag);
    while (got < n) {
        redisReply *r = redisCommand(c, "BRPOP ihc:bench:acks 5");
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            if (r)
                freeReplyObject(r);
            break;
        }
        const char *v = r->element[1]->str;
        if (strncmp(v, tag, tl) == 0 && v[tl] == ':') {
            int idx = atoi(v + tl + 1);
            if (idx >= 0 && idx < n && !seen[idx]) {
                seen[idx] = 1;
                got++;
            }
        }
        freeReplyObject(r);
    }
    return got;
}

int main(int argc, char **argv)
{
    int agents = 8, iters = 2000;
    const char *samples = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--agents"))
            agents = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--iterations"))
            iters = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--port"))
            port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--mode"))
            mode = argv[i + 1];
        else if (!strcmp(argv[i], "--interval"))
            interval_ms = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--samples"))
            samples = argv[i + 1];
    }
    bool poll = !strcmp(mode, "poll");
    if (agents < 1 || iters < 1 || (!poll && strcmp(mode, "pubsub"))) {
        fprintf(stderr, "usage: bench_redis --port P [--mode pubsub|poll] [--agents N] "
                        "[--iterations K] [--interval MS] [--samples F]\n");
        return 2;
    }
    redisContext *c = conn();
    freeReplyObject(redisCommand(c, "DEL ihc:bench:acks ihc:bench:flag"));
    pid_t *pids = calloc((size_t)agents, sizeof(pid_t));
    char *seen = calloc((size_t)agents, 1);
    for (int i = 0; i < agents; i++)
        pids[i] = bench_fork(poll ? poller : subscriber, (void *)(intptr_t)i);
    if (collect(c, "ready", agents, seen) != agents) {
        fprintf(stderr, "bench_redis: workers did not start\n");
        bench_reap(pids, agents);
        return 1;
    }
    bench_samples s = {0};
    int lost = 0;
    for (int k = 0; k < iters; k++) {
        char tag[32];
        snprintf(tag, sizeof(tag), "%d", k);
        /* Pollers wake at random phases relative to the flag, as they would in production. */
        if (poll)
            usleep((useconds_t)(rand() % (interval_ms * 1000)));
        uint64_t t0 = bench_ns();
        redisReply *r = poll ? redisCommand(c, "SET ihc:bench:flag %s", tag)
                             : redisCommand(c, "PUBLISH ihc:bench %s", tag);
        if (r)
            freeReplyObject(r);
        if (collect(c, tag, agents, seen) == agents)
            bench_add(&s, (double)(bench_ns() - t0) / 1e3);
        else
            lost++;
        bench_progress(poll ? "redis poll" : "redis pubsub", (size_t)k + 1, (size_t)iters);
    }
    if (lost)
        fprintf(stderr, "bench_redis: %d rounds incomplete\n", lost);
    bench_report(stdout, poll ? "redis_poll" : "redis_pubsub", agents, &s, samples);
    bench_reap(pids, agents);
    redisFree(c);
    free(pids);
    free(seen);
    free(s.v);
    return 0;
}
