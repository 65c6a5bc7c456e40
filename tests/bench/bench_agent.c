/* A service embedding libihc-agent, as the benchmark's agents: three modules with
 * instant interrupt methods and one session of each given hardware_id, replaced by a
 * fresh one on every interrupt. The new session is begun in the old one's on_cancel,
 * which runs before the modules and the report, so it is announced in the report
 * (report.begun; in a session_begin ahead of the report to a coordinator that does not read
 * them) and the requester's next interrupt always finds it.
 * With --steady R it instead holds one session of each of HW-0 … HW-(R-1) from the start and
 * begins nothing afterwards (bench_ihc --steady interrupts one of them per round).
 * Usage: bench_agent [--pub URL] [--report URL] [--id ID] [--hw HW[,HW…]] [--steady R]
 * (bench_agent --help).
 * TLS files (tls+tcp:// URLs) come from IHC_TLS_CA, IHC_TLS_CERT and IHC_TLS_KEY. */
#include <ihc/agent.h>
#include <pthread.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_HWS 64
static ihc_agent *agent;
static char *hws[MAX_HWS];
static ihc_token *current[MAX_HWS];
static int n_hws, steady;
static pthread_mutex_t current_mu = PTHREAD_MUTEX_INITIALIZER;

static int instant(const char *h, void *arg)
{
    (void)h;
    (void)arg;
    return 0;
}

static void on_session_cancel(const char *session_id, void *arg);

static void begin_session(int i)
{
    ihc_session_opts so = {.hw = hws[i],
                           .module = "text_processing",
                           .on_cancel = on_session_cancel,
                           .arg = (void *)(intptr_t)i};
    ihc_token *tok = NULL;
    int rc = ihc_agent_session_begin(agent, &so, &tok, NULL, 0);
    if (rc != 0) {
        fprintf(stderr, "bench_agent: session_begin: error %d\n", rc);
        return;
    }
    pthread_mutex_lock(&current_mu); /* on_cancel of concurrent interrupts may race */
    ihc_token_release(current[i]);
    current[i] = tok;
    pthread_mutex_unlock(&current_mu);
}

static void on_session_cancel(const char *session_id, void *arg)
{
    (void)session_id;
    if (!steady)
        begin_session((int)(intptr_t)arg);
}

/* --steady: one session of each round's hardware_id, up front. */
static void begin_steady(void)
{
    for (int k = 0; k < steady; k++) {
        char hw[160];
        snprintf(hw, sizeof(hw), "%s-%d", hws[0], k);
        ihc_session_opts so = {.hw = hw, .module = "text_processing"};
        ihc_token *tok = NULL;
        int rc = ihc_agent_session_begin(agent, &so, &tok, NULL, 0);
        if (rc != 0) {
            fprintf(stderr, "bench_agent: session_begin %s: error %d\n", hw, rc);
            return;
        }
        ihc_token_release(tok);
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: bench_agent [--pub URL] [--report URL] [--id ID] [--hw HW[,HW...]]\n"
            "A libihc-agent service for the benchmark (tests/bench/bench_ihc.c starts it):\n"
            "three modules with instant methods and one session per hardware_id, begun\n"
            "again on every interrupt. Runs until SIGTERM or SIGINT.\n"
            "  --pub URL       the coordinator's PUB socket (default: libihc-agent's)\n"
            "  --report URL    the coordinator's PULL socket (default: libihc-agent's)\n"
            "  --id ID         agent id (default: <hostname>:<pid>)\n"
            "  --hw HW[,HW...] hardware_ids, at most %d (default: bench)\n"
            "  --steady R      hold a session of each of HW-0 ... HW-(R-1) instead\n"
            "  -h, --help      this help\n",
            MAX_HWS);
}

/* Takes the value of option name at argv[*i] ("--name VALUE" or "--name=VALUE"); NULL when
 * argv[*i] is another option. Exits 2 when the value is missing. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        fprintf(stderr, "bench_agent: %s needs a value\nTry 'bench_agent --help'.\n", name);
        exit(2);
    }
    return argv[++*i];
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
    /* TLS as the daemon takes it (bench_ihc --tls sets these) */
    o.tls_ca = getenv("IHC_TLS_CA");
    o.tls_cert = getenv("IHC_TLS_CERT");
    o.tls_key = getenv("IHC_TLS_KEY");
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if ((v = opt_value(argc, argv, &i, "--pub"))) {
            o.pub_url = v;
        } else if ((v = opt_value(argc, argv, &i, "--report"))) {
            o.report_url = v;
        } else if ((v = opt_value(argc, argv, &i, "--id"))) {
            o.agent_id = v;
        } else if ((v = opt_value(argc, argv, &i, "--steady"))) {
            steady = atoi(v);
            if (steady < 1) {
                fprintf(stderr, "bench_agent: --steady: expected a number of rounds >= 1\n");
                return 2;
            }
            o.max_active_sessions = steady + 10;
        } else if ((v = opt_value(argc, argv, &i, "--hw"))) {
            for (char *t = strtok((char *)v, ","); t; t = strtok(NULL, ",")) {
                if (n_hws == MAX_HWS) {
                    fprintf(stderr, "bench_agent: --hw: at most %d hardware_ids\n", MAX_HWS);
                    return 2;
                }
                hws[n_hws++] = t;
            }
        } else {
            fprintf(stderr, "bench_agent: %s '%s'\nTry 'bench_agent --help'.\n",
                    argv[i][0] == '-' ? "unknown option" : "unexpected argument", argv[i]);
            return 2;
        }
    }
    if (n_hws == 0)
        hws[n_hws++] = "bench";
    ihc_agent_log_setup(2, false, false, 2); /* warnings only, like the coordinator here */
    if (ihc_agent_open(&agent, &o) != 0) {
        fprintf(stderr, "bench_agent: cannot open agent\n");
        return 1;
    }
    static const ihc_method methods[] = {{"cancel_generation", instant},
                                         {"clear_buffers", instant}};
    static const char *names[] = {"text_processing", "audio_generation", "session_management"};
    for (int i = 0; i < 3; i++) {
        ihc_module_def m = {
            .name = names[i], .methods = methods, .n_methods = 2, .timeout = 0.5, .enabled = true};
        ihc_agent_register_module(agent, &m);
    }
    if (steady)
        begin_steady();
    else
        for (int i = 0; i < n_hws; i++)
            begin_session(i);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    while (!stop)
        pause();
    for (int i = 0; i < n_hws; i++)
        ihc_token_release(current[i]);
    ihc_agent_close(agent);
    return 0;
}
