/* Thread helpers: condition variables that wait on the monotonic clock (timeouts immune to
 * wall-clock jumps), and raising or lowering a thread's scheduling priority. */
#ifndef IHC_THREAD_H
#define IHC_THREAD_H

#include <pthread.h>
#include <stdbool.h>

/* Initialises cv to time its waits on CLOCK_MONOTONIC: pass ihc_mono_abstime() deadlines to
 * pthread_cond_timedwait. Returns 0 or the pthread error. */
int ihc_cond_init_mono(pthread_cond_t *cv);

/* When high, lowers the calling thread's nice value so that the interrupt path is scheduled
 * ahead of the work it stops; without CAP_SYS_NICE this fails, which is logged at debug level
 * and otherwise ignored. */
void ihc_thread_priority(bool high);

/* Lowers the calling thread's priority (its nice value + 10, at most 19; no privilege
 * needed), for background work
 * that must not take a core from the interrupt path when both want it: the coordinator's Redis
 * writer, whose batches otherwise land on interrupts in flight on a small machine. */
void ihc_thread_background(void);

/* Names the calling thread (at most 15 characters shown) as top -H, perf and gdb show it. */
void ihc_thread_name(const char *name);

#endif
