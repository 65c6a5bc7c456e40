/* Clocks: wall time for timestamps that cross hosts, monotonic time for durations. */
#ifndef IHC_CLOCK_H
#define IHC_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t ihc_now_ms(void);

/* Monotonic nanoseconds (CLOCK_MONOTONIC); only differences are meaningful. */
uint64_t ihc_mono_ns(void);

/* Monotonic milliseconds as a double, for durations reported in results. */
double ihc_mono_ms(void);

/* Seconds (a configured duration) as nanoseconds; 0 for s <= 0. */
static inline uint64_t ihc_s_to_ns(double s)
{
    return s <= 0 ? 0 : (uint64_t)(s * 1e9);
}

/* A monotonic time (ihc_mono_ns) as the absolute timespec that pthread_cond_timedwait takes
 * on a condition variable made by ihc_cond_init_mono (common/thread.h); far-future values are
 * clamped so that they do not overflow time_t. */
struct timespec ihc_mono_abstime(uint64_t mono_ns);

/* Sleeps ms milliseconds, resuming after signals. */
void ihc_sleep_ms(uint32_t ms);

#endif
