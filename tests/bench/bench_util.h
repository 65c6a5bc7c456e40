/* Shared helpers for the benchmark programs: latency samples, percentiles, JSON output,
 * child processes. Header-only so each benchmark is one source file. */
#ifndef IHC_BENCH_UTIL_H
#define IHC_BENCH_UTIL_H

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t bench_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

typedef struct {
    double *v; /* microseconds */
    size_t n, cap;
} bench_samples;

static inline void bench_add(bench_samples *s, double us)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 1024;
        double *p = realloc(s->v, s->cap * sizeof(*p));
        if (!p) {
            fprintf(stderr, "bench: out of memory\n");
            exit(1);
        }
        s->v = p;
    }
    s->v[s->n++] = us;
}

static int bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Percentile p in [0,100] of the samples (sorts them). */
static inline double bench_pct(bench_samples *s, double p)
{
    if (!s->n)
        return 0;
    qsort(s->v, s->n, sizeof(double), bench_cmp);
    size_t i = (size_t)((p / 100.0) * (double)(s->n - 1) + 0.5);
    return s->v[i];
}

/* Writes {"name":…,"n":…,"p50_us":…,"p99_us":…,"max_us":…,"mean_us":…<extra>} to f (extra:
 * more members, each starting with a comma, or "") and the raw samples, one per line, to
 * samples_path (for the plot) when not NULL. */
static inline void bench_report_ex(FILE *f, const char *name, int agents, bench_samples *s,
                                   const char *samples_path, const char *extra)
{
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
    double p50 = bench_pct(s, 50), p99 = bench_pct(s, 99), mx = s->n ? s->v[s->n - 1] : 0;
    fprintf(f,
            "{\"name\":\"%s\",\"agents\":%d,\"n\":%zu,\"p50_us\":%.1f,\"p99_us\":%.1f,"
            "\"max_us\":%.1f,\"mean_us\":%.1f%s}\n",
            name, agents, s->n, p50, p99, mx, s->n ? sum / (double)s->n : 0, extra);
    if (samples_path) {
        FILE *o = fopen(samples_path, "w");
        if (o) {
            for (size_t i = 0; i < s->n; i++)
                fprintf(o, "%.1f\n", s->v[i]);
            fclose(o);
        }
    }
}

static inline void bench_report(FILE *f, const char *name, int agents, bench_samples *s,
                                const char *samples_path)
{
    bench_report_ex(f, name, agents, s, samples_path, "");
}

/* Forks a child running fn(arg); the child dies with the parent. */
static inline pid_t bench_fork(void (*fn)(void *), void *arg)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        fn(arg);
        _exit(0);
    }
    return pid;
}

/* SIGTERM, then SIGKILL for whatever has not exited 15 s later: a run never hangs on one
 * process that does not stop (a stuck nng_close was seen once among 128 agents). */
static inline void bench_reap(pid_t *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    uint64_t until = bench_ns() + 15ull * 1000000000u;
    for (int i = 0; i < n; i++) {
        if (pids[i] <= 0)
            continue;
        while (waitpid(pids[i], NULL, WNOHANG) == 0) {
            if (bench_ns() > until) {
                fprintf(stderr, "bench: pid %d did not stop on SIGTERM: killed\n", (int)pids[i]);
                kill(pids[i], SIGKILL);
                waitpid(pids[i], NULL, 0);
                break;
            }
            usleep(10000);
        }
    }
}

static inline void bench_progress(const char *what, size_t done, size_t total)
{
    if (total >= 10 && done % (total / 10) == 0)
        fprintf(stderr, "\r%s: %zu/%zu", what, done, total);
    if (done == total)
        fprintf(stderr, "\r%s: %zu/%zu done\n", what, done, total);
}

#endif
