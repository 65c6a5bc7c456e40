/* Cancellation tokens: cancel sets an atomic flag (the inline hot-path check) and makes an
 * eventfd readable once, so poll/epoll users and ihc_token_wait wake up too. */
#include "token.h"

#include "err.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

int ihc__token_new(ihc_token **out, const char *sid)
{
    ihc_token *t = calloc(1, sizeof(*t));
    if (!t)
        return IHC_ENOMEM;
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->efd < 0) {
        int e = errno;
        free(t);
        ihc_log(IHC_LOG_ERROR, "agent", "cannot create token eventfd err=\"%s\"", strerror(e));
        return e == ENOMEM ? IHC_ENOMEM : IHC_EIO;
    }
    __atomic_store_n(&t->head.cancelled, 0, __ATOMIC_RELAXED);
    atomic_init(&t->refs, 1);
    if (sid) {
        size_t n = strnlen(sid, IHC_ID_MAX);
        memcpy(t->sid, sid, n);
        t->sid[n] = '\0';
    }
    *out = t;
    return IHC_OK;
}

void ihc_token_cancel(ihc_token *t)
{
    if (!t)
        return;
    /* exchange, so only the first canceller writes the eventfd */
    if (__atomic_exchange_n(&t->head.cancelled, 1, __ATOMIC_ACQ_REL) == 0) {
        uint64_t one = 1;
        ssize_t n;
        do {
            n = write(t->efd, &one, sizeof(one));
        } while (n < 0 && errno == EINTR);
    }
}

int ihc_token_fd(const ihc_token *t)
{
    return t ? t->efd : -1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ihc_token_wait(const ihc_token *t, int timeout_ms)
{
    if (!t)
        return IHC_EINVAL;
    int64_t end = timeout_ms >= 0 ? mono_ms() + timeout_ms : 0;
    for (;;) {
        if (__atomic_load_n(&t->head.cancelled, __ATOMIC_ACQUIRE))
            return IHC_OK;
        int wait = -1;
        if (timeout_ms >= 0) {
            int64_t left = end - mono_ms();
            if (left <= 0)
                return IHC_ETIMEDOUT;
            wait = left > 1000000 ? 1000000 : (int)left;
        }
        struct pollfd p = {.fd = t->efd, .events = POLLIN};
        int rv = poll(&p, 1, wait);
        if (rv < 0 && errno != EINTR)
            return IHC_EIO;
    }
}

const char *ihc_token_session(const ihc_token *t)
{
    return t ? t->sid : NULL;
}

void ihc_token_retain(ihc_token *t)
{
    if (t)
        atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void ihc_token_release(ihc_token *t)
{
    if (!t)
        return;
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) {
        close(t->efd);
        free(t);
    }
}
