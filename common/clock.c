/* Clock helpers over clock_gettime. */
#include "clock.h"

#include <errno.h>
#include <time.h>

int64_t ihc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t ihc_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

double ihc_mono_ms(void)
{
    return (double)ihc_mono_ns() / 1e6;
}

void ihc_sleep_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

struct timespec ihc_mono_abstime(uint64_t mono_ns)
{
    if (mono_ns > (uint64_t)INT64_MAX / 2)
        mono_ns = (uint64_t)INT64_MAX / 2;
    struct timespec ts = {.tv_sec = (time_t)(mono_ns / 1000000000ull),
                          .tv_nsec = (long)(mono_ns % 1000000000ull)};
    return ts;
}
