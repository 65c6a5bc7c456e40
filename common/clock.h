/* Clocks: wall time for timestamps that cross hosts, monotonic time for durations. */
#ifndef IHC_CLOCK_H
#define IHC_CLOCK_H

#include <stdint.h>

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t ihc_now_ms(void);

/* Monotonic nanoseconds (CLOCK_MONOTONIC); only differences are meaningful. */
uint64_t ihc_mono_ns(void);

/* Monotonic milliseconds as a double, for durations reported in results. */
double ihc_mono_ms(void);

/* Sleeps ms milliseconds, resuming after signals. */
void ihc_sleep_ms(uint32_t ms);

#endif
