/* The coordinator's Redis write batches, pipelined (one command after another) against fenced
 * (the leader's: one Lua script checking ihc:term, then applying every operation): rounds of
 * batches of the writer's mix (interrupt log entries with their statistics, new sessions,
 * session ends, epoch raises), time per batch and operations per second.
 * Usage: bench_store REDIS_URL [OPS_PER_BATCH (512)] [ROUNDS (200)] — it writes ihc:* keys:
 * use a Redis of its own. */
#include "clock.h"
#include "err.h"
#include "store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* One batch of n operations, ids from base; term 0: a plain pipeline. */
static int batch(ihc_store *st, uint64_t term, uint64_t base, int n)
{
    int rc = term ? ihc_store_pipeline_begin_fenced(st, term) : ihc_store_pipeline_begin(st);
    if (rc != IHC_OK)
        return rc;
    char sid[32];
    for (int i = 0; i < n; i++) {
        uint64_t id = base + (uint64_t)i;
        snprintf(sid, sizeof(sid), "s-%" PRIu64, id - (uint64_t)(i % 4 == 2));
        if (i % 4 == 0) {
            ihc_store_log_entry e = {.id = id,
                                     .hw = "dev-1",
                                     .success = true,
                                     .total_time_ms = 0.5,
                                     .modules = "[\"text_processing\"]",
                                     .sessions = "[\"s\"]",
                                     .agents_missing = "[]",
                                     .reason = "bench"};
            ihc_store_log_append(st, &e);
        } else if (i % 4 == 1) {
            ihc_store_session s = {.session_id = sid,
                                   .hw = "dev-1",
                                   .agent_id = "a",
                                   .state = "active",
                                   .epoch = 1,
                                   .is_new = true};
            ihc_store_session_put(st, &s);
        } else if (i % 4 == 2) {
            ihc_store_session_state(st, "dev-1", sid, "interrupted", 5);
        } else {
            ihc_store_epoch_raise(st, "dev-1", id);
        }
    }
    return ihc_store_pipeline_exec(st);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_store REDIS_URL [OPS_PER_BATCH] [ROUNDS]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 512, rounds = argc > 3 ? atoi(argv[3]) : 200;
    ihc_store_opts o = {.url = argv[1], .timeout_ms = 5000};
    ihc_store *st = NULL;
    if (n <= 0 || rounds <= 0 || ihc_store_open(&st, &o) != IHC_OK || ihc_store_ping(st)) {
        fprintf(stderr, "bench_store: bad arguments or no redis at %s\n", argv[1]);
        ihc_store_close(st);
        return 1;
    }
    ihc_store_lease_req q = {.id = "bench_store", .ttl_ms = 600000, .id_block = 1};
    ihc_store_lease lease;
    if (ihc_store_lease_acquire(st, &q, &lease) != IHC_OK || !lease.held) {
        fprintf(stderr, "bench_store: cannot take the lease: %s\n", ihc_store_errstr(st));
        ihc_store_close(st);
        return 1;
    }
    for (int fenced = 0; fenced < 2; fenced++) {
        uint64_t t0 = ihc_mono_ns();
        for (int r = 0; r < rounds; r++) {
            uint64_t base = (uint64_t)fenced * 100000000u + (uint64_t)r * (uint64_t)n + 1;
            int rc = batch(st, fenced ? lease.term : 0, base, n);
            if (rc != IHC_OK) {
                fprintf(stderr, "bench_store: %s: %s\n", ihc_err_name(rc), ihc_store_errstr(st));
                ihc_store_close(st);
                return 1;
            }
        }
        double s = (double)(ihc_mono_ns() - t0) / 1e9;
        printf("%-9s %d batches of %d operations: %.2f ms per batch, %.0f operations/s\n",
               fenced ? "fenced" : "pipelined", rounds, n, s * 1e3 / rounds, rounds * n / s);
    }
    ihc_store_lease_resign(st, "bench_store");
    ihc_store_close(st);
    return 0;
}
