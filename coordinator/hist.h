/* Latency histograms for /metrics in Prometheus' conventions (seconds, cumulative buckets):
 * one histogram, and a family of them keyed by one label whose values are capped, so that
 * names coming from agents cannot grow the page without bound. Not thread-safe: the
 * coordinator loop records and formats them. */
#ifndef IHC_COORD_HIST_H
#define IHC_COORD_HIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Upper bounds of the buckets, seconds (+Inf is implied). */
#define IHC_HIST_N 13
extern const double ihc_hist_bounds[IHC_HIST_N];

typedef struct {
    uint64_t counts[IHC_HIST_N + 1]; /* per bucket, not cumulative; the last is +Inf */
    uint64_t count;
    double sum; /* seconds */
} ihc_hist;

/* Records one observation of s seconds (negative values count as 0). */
void ihc_hist_observe(ihc_hist *h, double s);

/* Histograms by label value; at most max values get their own series, later ones are
 * recorded under IHC_HIST_OTHER. */
#define IHC_HIST_OTHER "other"
typedef struct {
    char *label;
    ihc_hist h;
} ihc_hist_series;

typedef struct {
    ihc_hist_series *s;
    size_t n, cap, max;
    ihc_hist other;
    bool other_used;
} ihc_hist_family;

/* max: distinct label values kept (0: 32). */
void ihc_hist_family_init(ihc_hist_family *f, size_t max);
void ihc_hist_family_fini(ihc_hist_family *f);
/* Records s seconds under label (NULL or out of memory: IHC_HIST_OTHER). */
void ihc_hist_family_observe(ihc_hist_family *f, const char *label, double s);

#endif
