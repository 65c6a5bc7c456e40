/* Hot path of libihc-agent: the cost of one cancellation-token check, as a generator loop
 * does it (IHC_CHECKPOINT), and of the fd/wait paths for comparison.
 * Usage: bench_token [--checks N] */
#include "bench_util.h"

#include <ihc/agent.h>

int main(int argc, char **argv)
{
    long long checks = 200000000LL;
    if (argc == 3 && !strcmp(argv[1], "--checks"))
        checks = atoll(argv[2]);
    ihc_agent_opts o;
    ihc_agent_opts_init(&o);
    o.pub_url = "tcp://127.0.0.1:1"; /* nobody there: the agent keeps dialing, harmless */
    o.report_url = "tcp://127.0.0.1:1";
    ihc_agent *a;
    if (ihc_agent_open(&a, &o) != 0) {
        fprintf(stderr, "bench_token: cannot open agent\n");
        return 1;
    }
    ihc_session_opts so = {.hw = "bench-hw"};
    ihc_token *tok;
    if (ihc_agent_session_begin(a, &so, &tok, NULL, 0) != 0) {
        fprintf(stderr, "bench_token: cannot begin session\n");
        return 1;
    }
    volatile long long work = 0;
    uint64_t t0 = bench_ns();
    for (long long i = 0; i < checks; i++) {
        IHC_CHECKPOINT(tok, break);
        work = work + 1;
    }
    double loop_ns = (double)(bench_ns() - t0) / (double)checks;
    /* The same loop without the check: what the check itself adds. */
    t0 = bench_ns();
    for (long long i = 0; i < checks; i++)
        work = work + 1;
    double base_ns = (double)(bench_ns() - t0) / (double)checks;
    printf("{\"name\":\"token_check\",\"checks\":%lld,\"loop_ns\":%.3f,\"baseline_ns\":%.3f,"
           "\"check_ns\":%.3f}\n",
           checks, loop_ns, base_ns, loop_ns > base_ns ? loop_ns - base_ns : 0.0);
    ihc_token_release(tok);
    ihc_agent_close(a);
    return 0;
}
