/* Thread helpers over pthreads and setpriority. */
#include "thread.h"

#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int ihc_cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t at;
    int rv = pthread_condattr_init(&at);
    if (rv != 0)
        return rv;
    pthread_condattr_setclock(&at, CLOCK_MONOTONIC);
    rv = pthread_cond_init(cv, &at);
    pthread_condattr_destroy(&at);
    return rv;
}

void ihc_thread_name(const char *name)
{
    char n[16];
    snprintf(n, sizeof(n), "%s", name);
    pthread_setname_np(pthread_self(), n);
}

void ihc_thread_priority(bool high)
{
    if (!high)
        return;
    /* per-thread nice on Linux (the tid, not the process) */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), -10) != 0)
        ihc_log(IHC_LOG_DEBUG, "thread", "thread priority not raised err=\"%s\"", strerror(errno));
}

void ihc_thread_background(void)
{
    id_t tid = (id_t)syscall(SYS_gettid);
    errno = 0;
    int level = getpriority(PRIO_PROCESS, tid); /* -1 is a valid value: errno tells */
    if (errno != 0)
        level = 0;
    level = level + 10 > 19 ? 19 : level + 10;
    if (setpriority(PRIO_PROCESS, tid, level) != 0)
        ihc_log(IHC_LOG_DEBUG, "thread", "thread priority not lowered err=\"%s\"", strerror(errno));
}
