/* A service embedding libihc-agent, as the benchmark's agents: three modules with
 * instant interrupt methods and one session of the benchmark hardware_id, replaced by a
 * fresh one on every interrupt (begun in the interrupt callback, so its session_begin
 * reaches the coordinator before this agent's report and the next interrupt expects it).
 * Usage: bench_agent --pub URL --report URL --id ID --hw HW */
#include <ihc/agent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ihc_agent *agent;
static const char *hw = "bench";
static ihc_token *current;
static pthread_mutex_t current_mu = PTHREAD_MUTEX_INITIALIZER;

static int instant(const char *h, void *arg)
{
    (void)h;
    (void)arg;
    return 0;
}

static void begin_session(void)
{
    ihc_session_opts so = {.hw = hw, .module = "text_processing"};
    ihc_token *tok = NULL;
    int rc = ihc_agent_session_begin(agent, &so, &tok, NULL, 0);
    if (rc != 0) {
        fprintf(stderr, "bench_agent: session_begin: error %d\n", rc);
        return;
    }
    pthread_mutex_lock(&current_mu); /* callbacks of concurrent interrupts may race */
    ihc_token_release(current);
    current = tok;
    pthread_mutex_unlock(&current_mu);
}

static void on_interrupt(const char *h, uint64_t id, void *arg)
{
    (void)id;
    (void)arg;
    if (strcmp(h, hw) == 0 || strcmp(h, "*") == 0)
        begin_session();
}

static volatile sig_atomic_t stop;
static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    ihc_agent_opts o;
    ihc_agent_opts_init(&o);
    o.cleanup_on_interrupt = true;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--pub"))
            o.pub_url = argv[i + 1];
        else if (!strcmp(argv[i], "--report"))
            o.report_url = argv[i + 1];
        else if (!strcmp(argv[i], "--id"))
            o.agent_id = argv[i + 1];
        else if (!strcmp(argv[i], "--hw"))
            hw = argv[i + 1];
    }
    ihc_agent_log_setup(2, false, false, 2); /* warnings only, like the coordinator here */
    if (ihc_agent_open(&agent, &o) != 0) {
        fprintf(stderr, "bench_agent: cannot open agent\n");
        return 1;
    }
    static const ihc_method methods[] = {{"cancel_generation", instant},
                                         {"clear_buffers", instant}};
    static const char *names[] = {"text_processing", "audio_generation", "session_management"};
    for (int i = 0; i < 3; i++) {
        ihc_module_def m = {.name = names[i], .methods = methods, .n_methods = 2,
                            .timeout = 0.5, .enabled = true};
        ihc_agent_register_module(agent, &m);
    }
    ihc_agent_register_callback(agent, on_interrupt, NULL);
    begin_session();
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    while (!stop)
        pause();
    ihc_token_release(current);
    ihc_agent_close(agent);
    return 0;
}
