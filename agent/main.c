/* ihc-agent: the per-node daemon. Runs libihc-agent with the built-in modules, the local
 * endpoint for processes on the node and, with --simulate, a demo workload. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "defaults.h"
#include "err.h"
#include "ihc/agent.h"
#include "local.h"
#include "log.h"
#include "simulate.h"
#include "version.h"
#include "wire.h"

#define PROG             "ihc-agent"
#define COMP             "agent"
#define SIM_RESTART_MS   1000 /* pause between an interrupted simulated session and the next */
#define METHOD_WAIT_MS   5000 /* bound for methods waiting on generators (modules time out first) */
#define SIMULATE_MAX_HWS 1024

/* What the built-in modules act on; filled in while the agent may already receive
 * interrupts, hence atomic. A method that outlived its module's timeout keeps running after
 * ihc_agent_close, so the daemon counts the methods inside sim or local and frees them only
 * when none is (see the end of main). */
typedef struct {
    _Atomic(ihc_simulate *) sim;
    _Atomic(ihc_local *) local;
    atomic_int in_methods;
} daemon_ctx;

static daemon_ctx g_daemon;

/* ---- built-in modules ---- */

/* Each method counts itself in before it loads sim or local, and out after its last use. */
static daemon_ctx *method_in(void *arg)
{
    daemon_ctx *d = arg;
    atomic_fetch_add(&d->in_methods, 1);
    return d;
}

static int method_out(daemon_ctx *d, int rc)
{
    atomic_fetch_sub(&d->in_methods, 1);
    return rc;
}

static int stop_kind(const char *hw, void *arg, ihc_sim_kind kind)
{
    daemon_ctx *d = method_in(arg);
    /* processes on the node learn it too (idempotent: on_cancel has usually told them) */
    ihc_local_notify(atomic_load(&d->local), hw);
    return method_out(d, ihc_simulate_stop_module(atomic_load(&d->sim), hw, kind, METHOD_WAIT_MS));
}

static int clear_kind(const char *hw, void *arg, ihc_sim_kind kind)
{
    daemon_ctx *d = method_in(arg);
    return method_out(d, ihc_simulate_clear_buffers(atomic_load(&d->sim), hw, kind));
}

static int text_cancel_generation(const char *hw, void *arg)
{
    return stop_kind(hw, arg, IHC_SIM_TEXT);
}

static int text_clear_buffers(const char *hw, void *arg)
{
    return clear_kind(hw, arg, IHC_SIM_TEXT);
}

static int audio_stop_generation(const char *hw, void *arg)
{
    return stop_kind(hw, arg, IHC_SIM_AUDIO);
}

static int audio_clear_buffers(const char *hw, void *arg)
{
    return clear_kind(hw, arg, IHC_SIM_AUDIO);
}

static int state_stop_generation(const char *hw, void *arg)
{
    return stop_kind(hw, arg, IHC_SIM_STATE);
}

static int state_cleanup_sessions(const char *hw, void *arg)
{
    daemon_ctx *d = method_in(arg);
    return method_out(d, ihc_simulate_cleanup(atomic_load(&d->sim), hw));
}

static const ihc_method text_methods[] = {
    {"cancel_generation", text_cancel_generation},
    {"clear_buffers", text_clear_buffers},
};
static const ihc_method audio_methods[] = {
    {"stop_generation", audio_stop_generation},
    {"clear_buffers", audio_clear_buffers},
};
static const ihc_method state_methods[] = {
    {"stop_generation", state_stop_generation},
    {"cleanup_sessions", state_cleanup_sessions},
};

#define N_OF(x) (sizeof(x) / sizeof((x)[0]))

static int register_modules(ihc_agent *a, char *names, size_t names_len)
{
    /* timeout 0: IHC_MODULE_TIMEOUT, unless the agent config file overrides it */
    const ihc_module_def defs[] = {
        {IHC_MODULE_TEXT, text_methods, N_OF(text_methods), 0, true, &g_daemon},
        {IHC_MODULE_AUDIO, audio_methods, N_OF(audio_methods), 0, true, &g_daemon},
        {IHC_MODULE_STATE, state_methods, N_OF(state_methods), 0, true, &g_daemon},
    };
    names[0] = '\0';
    for (size_t i = 0; i < N_OF(defs); i++) {
        int rc = ihc_agent_register_module(a, &defs[i]);
        if (rc != IHC_OK) {
            fprintf(stderr, PROG ": cannot register module %s: %s\n", defs[i].name,
                    ihc_strerror(rc));
            return rc;
        }
        size_t used = strlen(names);
        snprintf(names + used, names_len - used, "%s%s", i ? "," : "", defs[i].name);
    }
    return IHC_OK;
}

/* ---- --simulate HW[,HW…] ---- */

/* Splits and validates the list; *list is one malloc'd block (free it), *hws point into it. */
static int parse_simulate(const char *arg, char **list, const char ***hws, size_t *n_hws)
{
    *list = NULL;
    *hws = NULL;
    *n_hws = 0;
    char *copy = strdup(arg);
    const char **v = calloc(SIMULATE_MAX_HWS, sizeof(*v));
    if (!copy || !v) {
        fprintf(stderr, PROG ": out of memory\n");
        goto fail;
    }
    size_t n = 0;
    for (char *p = copy;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (!ihc_hw_valid(p, strlen(p), false)) {
            fprintf(stderr,
                    PROG ": --simulate '%s': invalid hardware_id '%s' (expected a comma-separated "
                         "list of hardware_ids, each 1-128 bytes of [A-Za-z0-9._:@-])\n",
                    arg, p);
            goto fail;
        }
        for (size_t i = 0; i < n; i++) {
            if (strcmp(v[i], p) == 0) {
                fprintf(stderr, PROG ": --simulate '%s': hardware_id '%s' is listed twice\n", arg,
                        p);
                goto fail;
            }
        }
        if (n == SIMULATE_MAX_HWS) {
            fprintf(stderr, PROG ": --simulate: at most %d hardware_ids\n", SIMULATE_MAX_HWS);
            goto fail;
        }
        v[n++] = p;
        if (!comma)
            break;
        p = comma + 1;
    }
    *list = copy;
    *hws = v;
    *n_hws = n;
    return IHC_OK;
fail:
    free(copy);
    free(v);
    return IHC_ECONFIG;
}

/* ---- main ---- */

static void opts_from_config(ihc_agent_opts *o, const ihc_config *cfg)
{
    ihc_agent_opts_init(o);
    o->agent_id = cfg->agent_id;
    o->pub_url = cfg->pub_url;
    o->report_url = cfg->report_url;
    o->secret = cfg->secret;
    o->secret_len = cfg->secret_len;
    o->max_active_sessions = cfg->max_active_sessions;
    o->session_timeout = cfg->session_timeout;
    o->session_cleanup_delay = cfg->session_cleanup_delay;
    o->heartbeat_interval = cfg->heartbeat_interval;
    o->default_module_timeout = cfg->module_timeout;
    o->kill_grace = cfg->kill_grace;
    o->cleanup_on_interrupt = cfg->cleanup_on_interrupt;
    o->force_cleanup = cfg->force_cleanup;
    o->high_priority = cfg->interrupt_priority == IHC_PRIORITY_HIGH;
    o->config_file = cfg->agent_config;
    o->tls_ca = cfg->tls_ca;
    o->tls_cert = cfg->tls_cert;
    o->tls_key = cfg->tls_key;
    o->tls_server_name = cfg->tls_server_name;
}

/* How long a signalled shutdown may take before the process exits anyway. nng 1.5.2's
 * nng_close was seen to wait forever for a pipe that never finished closing (2 agents of
 * 128 being stopped at once); a supervisor then gets an exit instead of a hung process. */
#define SHUTDOWN_GRACE_S 10

static void *shutdown_watchdog(void *arg)
{
    (void)arg;
    sleep(SHUTDOWN_GRACE_S);
    ihc_log(IHC_LOG_ERROR, COMP,
            "shutdown did not finish in %d s (stuck closing the transport): "
            "exiting now",
            SHUTDOWN_GRACE_S);
    _exit(1);
    return NULL;
}

/* IHC_LOCAL_URL="" (or off/none) runs the agent without its local API. */
static bool local_disabled(const char *url)
{
    return url && (!url[0] || strcmp(url, "off") == 0 || strcmp(url, "none") == 0);
}

int main(int argc, char **argv)
{
    int status = 1;
    ihc_config cfg;
    char err[1024] = "";
    int *rest = calloc((size_t)argc + 1, sizeof(*rest));
    int n_rest = 0;
    char *sim_list = NULL;
    const char **sim_hws = NULL;
    size_t n_sim = 0;
    ihc_agent *a = NULL;
    ihc_local *local = NULL;
    ihc_simulate *sim = NULL;

    if (!rest) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    int rc = ihc_config_load(&cfg, IHC_ROLE_AGENT, argc, argv, rest, &n_rest, err, sizeof(err));
    if (rc != IHC_OK) {
        fprintf(stderr, PROG ": %s\n", err[0] ? err : ihc_strerror(rc));
        fprintf(stderr, "Try '" PROG " --help'.\n");
        status = 2;
        goto out;
    }
    if (cfg.want_help) {
        ihc_config_usage(stdout, IHC_ROLE_AGENT, PROG);
        status = 0;
        goto out;
    }
    if (cfg.want_version) {
        printf(PROG " %s\n", IHC_VERSION);
        status = 0;
        goto out;
    }
    if (n_rest > 0) {
        fprintf(stderr, PROG ": unexpected argument '%s'\nTry '" PROG " --help'.\n", argv[rest[0]]);
        status = 2;
        goto out;
    }
    if (cfg.simulate && parse_simulate(cfg.simulate, &sim_list, &sim_hws, &n_sim) != IHC_OK) {
        status = 2;
        goto out;
    }
    if (cfg.want_print_config) {
        ihc_config_dump(stdout, &cfg, IHC_ROLE_AGENT);
        status = 0;
        goto out;
    }

    ihc_config_apply_logging(&cfg);

    /* Signals are taken synchronously by this thread; every thread started from here on
     * (ours, nng's, libihc-agent's) inherits the blocked mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    ihc_agent_opts o;
    opts_from_config(&o, &cfg);
    rc = ihc_agent_open(&a, &o);
    if (rc != IHC_OK) {
        if (rc == IHC_ECONFIG && cfg.agent_config) {
            fprintf(stderr, PROG ": IHC_AGENT_CONFIG=%s: %s (see the log above)\n",
                    cfg.agent_config, ihc_strerror(rc));
            status = 2;
        } else if (rc == IHC_ECONFIG || rc == IHC_EINVAL) {
            fprintf(stderr, PROG ": invalid configuration: %s\n", ihc_strerror(rc));
            status = 2;
        } else {
            fprintf(stderr, PROG ": cannot start the agent: %s\n", ihc_strerror(rc));
        }
        goto out;
    }
    char modules[256];
    if (register_modules(a, modules, sizeof(modules)) != IHC_OK)
        goto out;

    const char *local_url = cfg.local_url ? cfg.local_url : IHC_DEFAULT_LOCAL_URL;
    if (!local_disabled(cfg.local_url)) {
        ihc_local_opts lo = {.url = local_url,
                             .max_active = cfg.max_active_sessions,
                             .check_ms = (int)(cfg.interrupt_check_interval * 1000),
                             .max_conns = cfg.local_max_conns,
                             .idle_timeout_s = (int)cfg.local_idle_timeout,
                             .request_deadline_s = cfg.local_request_deadline,
                             .deadline_ms = (int)(cfg.module_timeout * 1000)};
        rc = ihc_local_open(&local, a, &lo, err, sizeof(err));
        if (rc != IHC_OK) {
            fprintf(stderr, PROG ": %s\n", err);
            ihc_log(IHC_LOG_ERROR, COMP, "cannot open the local API url=%s error=\"%s\"", local_url,
                    err);
            goto out;
        }
        atomic_store(&g_daemon.local, local);
    } else {
        local_url = "off";
    }
    if (n_sim > 0) {
        rc = ihc_simulate_open(&sim, a, sim_hws, n_sim, SIM_RESTART_MS);
        if (rc != IHC_OK) {
            fprintf(stderr, PROG ": cannot start the simulation: %s\n", ihc_strerror(rc));
            goto out;
        }
        atomic_store(&g_daemon.sim, sim);
    }

    ihc_log(IHC_LOG_INFO, COMP,
            "daemon started id=%s pub=%s report=%s local=%s modules=%s simulate=%s version=%s",
            ihc_agent_id(a), cfg.pub_url, cfg.report_url, local_url, modules,
            cfg.simulate ? cfg.simulate : "off", IHC_VERSION);

    int sig;
    for (;;) {
        sig = sigwaitinfo(&sigs, NULL);
        if (sig > 0)
            break;
        if (errno != EINTR) {
            ihc_log(IHC_LOG_ERROR, COMP, "sigwaitinfo failed error=\"%s\"", strerror(errno));
            break;
        }
    }
    ihc_log(IHC_LOG_INFO, COMP, "daemon stopping id=%s signal=%s", ihc_agent_id(a),
            sig == SIGINT    ? "SIGINT"
            : sig == SIGTERM ? "SIGTERM"
                             : "?");
    status = 0;
    pthread_t wd;
    if (pthread_create(&wd, NULL, shutdown_watchdog, NULL) == 0)
        pthread_detach(wd);

out:
    /* order: stop the work, stop serving processes, close the agent (no callbacks or methods
     * after that), then free what they referred to */
    ihc_simulate_stop(sim);
    ihc_local_shutdown(local);
    if (a) {
        char id[IHC_AGENT_ID_MAX + 1];
        snprintf(id, sizeof(id), "%s", ihc_agent_id(a));
        ihc_agent_close(a);
        if (status == 0)
            ihc_log(IHC_LOG_INFO, COMP, "daemon stopped id=%s", id);
    }
    atomic_store(&g_daemon.sim, NULL);
    atomic_store(&g_daemon.local, NULL);
    /* a method abandoned at its timeout may still be inside sim or local; stopped work lets it
     * return within METHOD_WAIT_MS. Past that they are left allocated: the process ends. */
    uint64_t until = ihc_mono_ns() + (METHOD_WAIT_MS + 1000) * 1000000ull;
    while (atomic_load(&g_daemon.in_methods) > 0 && ihc_mono_ns() < until)
        ihc_sleep_ms(5);
    if (atomic_load(&g_daemon.in_methods) > 0) {
        ihc_log(IHC_LOG_WARN, COMP, "module methods still running at exit count=%d",
                atomic_load(&g_daemon.in_methods));
        sim = NULL;
        local = NULL;
    }
    ihc_simulate_free(sim);
    ihc_local_close(local);
    free(sim_hws);
    free(sim_list);
    free(rest);
    ihc_config_fini(&cfg);
    return status;
}
