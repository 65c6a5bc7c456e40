/* Cancellation tokens: cancel sets an atomic flag (the inline hot-path check) and makes the
 * token's eventfd readable, so poll/epoll users and ihc_token_wait wake up too. The eventfd is
 * made by the first caller that asks for it: a session whose owner only checks the flag costs
 * no descriptor and none of the three syscalls (make, write, close) it took per session. */
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
    t->efd = -1;
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

static void efd_signal(int fd)
{
    uint64_t one = 1;
    ssize_t n;
    do {
        n = write(fd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
}

/* The token's eventfd, made now if nobody asked before; -1 when none can be made. Cancel and
 * this each store (the flag, the fd) then load the other, all sequentially consistent: at
 * least one of them sees both and writes the fd, so a cancel is never missed. */
static int token_efd(ihc_token *t)
{
    int fd = __atomic_load_n(&t->efd, __ATOMIC_SEQ_CST);
    if (fd >= 0)
        return fd;
    int nf = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (nf < 0) {
        int e = errno;
        if (!__atomic_exchange_n(&t->efd_failed, 1, __ATOMIC_RELAXED)) /* waiters retry often */
            ihc_log(IHC_LOG_ERROR, "agent", "cannot create token eventfd session=%s err=\"%s\"",
                    t->sid, strerror(e));
        return -1;
    }
    int none = -1;
    if (!__atomic_compare_exchange_n(&t->efd, &none, nf, false, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST)) {
        close(nf); /* another caller made it first */
        return none;
    }
    if (__atomic_load_n(&t->head.cancelled, __ATOMIC_SEQ_CST))
        efd_signal(nf);
    return nf;
}

void ihc_token_cancel(ihc_token *t)
{
    if (!t)
        return;
    /* exchange, so only the first canceller writes the eventfd (when there is one yet) */
    if (__atomic_exchange_n(&t->head.cancelled, 1, __ATOMIC_SEQ_CST) == 0) {
        int fd = __atomic_load_n(&t->efd, __ATOMIC_SEQ_CST);
        if (fd >= 0)
            efd_signal(fd);
    }
}

int ihc_token_fd(const ihc_token *t)
{
    /* the fd is the token's own, made on demand: not a change the caller can see */
    return t ? token_efd((ihc_token *)t) : -1;
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
        struct pollfd p = {.fd = token_efd((ihc_token *)t), .events = POLLIN};
        if (p.fd < 0 && (wait < 0 || wait > 10))
            wait = 10; /* no fd to be woken by (out of descriptors): look at the flag often */
        int rv = poll(p.fd >= 0 ? &p : NULL, p.fd >= 0 ? 1 : 0, wait);
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
        if (t->efd >= 0)
            close(t->efd);
        free(t);
    }
}
