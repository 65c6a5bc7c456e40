/* A log pipe a test fills to hold the logging thread at a known line: see logpipe.h. */
#include "logpipe.h"

#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void th_logpipe_open(th_logpipe *lp, int size)
{
    int fds[2];
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    lp->rd = fds[0];
    lp->wr = fds[1];
    if (size > 0)
        fcntl(lp->wr, F_SETPIPE_SZ, size); /* the default is kept if refused */
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", lp->wr);
    lp->fill = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    assert_true(lp->fill >= 0);
    lp->n_tail = 0;
}

bool th_logpipe_until(th_logpipe *lp, const char *needle, int timeout_ms)
{
    uint64_t end = th_now_ms_() + (uint64_t)timeout_ms;
    char buf[65536 + sizeof(lp->tail)];
    for (;;) {
        memcpy(buf, lp->tail, lp->n_tail);
        size_t n = lp->n_tail;
        struct pollfd pfd = {.fd = lp->rd, .events = POLLIN};
        uint64_t now = th_now_ms_();
        if (now >= end)
            return false;
        if (poll(&pfd, 1, (int)(end - now)) <= 0)
            continue;
        ssize_t r = read(lp->rd, buf + n, sizeof(buf) - n - 1);
        if (r <= 0)
            return false;
        n += (size_t)r;
        for (size_t i = 0; i < n; i++) /* the filler's NULs would end the string */
            if (buf[i] == '\0')
                buf[i] = ' ';
        buf[n] = '\0';
        if (strstr(buf, needle)) {
            lp->n_tail = 0;
            return true;
        }
        lp->n_tail = n < sizeof(lp->tail) ? n : sizeof(lp->tail);
        memcpy(lp->tail, buf + n - lp->n_tail, lp->n_tail);
    }
}

void th_logpipe_skip(th_logpipe *lp)
{
    char buf[4096];
    int fl = fcntl(lp->rd, F_GETFL);
    fcntl(lp->rd, F_SETFL, fl | O_NONBLOCK);
    while (read(lp->rd, buf, sizeof(buf)) > 0)
        ;
    fcntl(lp->rd, F_SETFL, fl);
    lp->n_tail = 0;
}

void th_logpipe_fill(th_logpipe *lp)
{
    static const char x[512] = {0};
    while (write(lp->fill, x, sizeof(x)) > 0)
        ;
    while (write(lp->fill, x, 1) > 0)
        ;
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

static void *drain_main(void *arg)
{
    th_logpipe *lp = arg;
    char buf[4096];
    while (read(lp->rd, buf, sizeof(buf)) > 0)
        ;
    return NULL;
}

void th_logpipe_start_drain(th_logpipe *lp)
{
    assert_int_equal(pthread_create(&lp->drainer, NULL, drain_main, lp), 0);
}

void th_logpipe_close(th_logpipe *lp)
{
    close(lp->fill);
    close(lp->wr);
    pthread_join(lp->drainer, NULL); /* the pipe's end: every writer closed */
    close(lp->rd);
}
