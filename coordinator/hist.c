/* Latency histograms (hist.h). */
#include "hist.h"

#include <stdlib.h>
#include <string.h>

/* 0.5 ms to 5 s: an interrupt answered on loopback takes about a millisecond, one that waits
 * for a missing agent runs into INTERRUPT_TIMEOUT (5 s by default). */
const double ihc_hist_bounds[IHC_HIST_N] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1,    0.25,  0.5,    1,     2.5,  5};

#define FAMILY_MAX_DEFAULT 32

void ihc_hist_observe(ihc_hist *h, double s)
{
    if (!(s > 0))
        s = 0; /* also NaN */
    size_t i = 0;
    while (i < IHC_HIST_N && s > ihc_hist_bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += s;
}

void ihc_hist_family_init(ihc_hist_family *f, size_t max)
{
    memset(f, 0, sizeof(*f));
    f->max = max ? max : FAMILY_MAX_DEFAULT;
}

void ihc_hist_family_fini(ihc_hist_family *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->s[i].label);
    free(f->s);
    memset(f, 0, sizeof(*f));
}

void ihc_hist_family_observe(ihc_hist_family *f, const char *label, double s)
{
    if (label && strcmp(label, IHC_HIST_OTHER) != 0) {
        for (size_t i = 0; i < f->n; i++)
            if (strcmp(f->s[i].label, label) == 0) {
                ihc_hist_observe(&f->s[i].h, s);
                return;
            }
        if (f->n < f->max) {
            if (f->n == f->cap) {
                size_t cap = f->cap ? f->cap * 2 : 8;
                ihc_hist_series *ns = realloc(f->s, cap * sizeof(*ns));
                if (ns) {
                    f->s = ns;
                    f->cap = cap;
                }
            }
            char *l = f->n < f->cap ? strdup(label) : NULL;
            if (l) {
                f->s[f->n] = (ihc_hist_series){.label = l};
                ihc_hist_observe(&f->s[f->n++].h, s);
                return;
            }
        }
    }
    f->other_used = true;
    ihc_hist_observe(&f->other, s);
}
