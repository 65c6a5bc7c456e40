/* ihc-coordinator: loads the configuration, starts the coordinator, its HTTP API, control
 * socket and Redis request channel, and shuts everything down cleanly on SIGTERM/SIGINT. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "control.h"
#include "coordinator.h"
#include "err.h"
#include "http.h"
#include "log.h"
#include "redis_url.h"
#include "reqchan.h"
#include "tls.h"
#include "version.h"

#define COMPONENT "coordinator"
#define FLUSH_MS  1000
/* How often the TLS listeners' refused handshakes are counted (logged at most every 10 s). */
#define TLS_REFUSALS_MS 1000

int main(int argc, char **argv)
{
    ihc_config cfg;
    char err[512] = "";
    int rc = ihc_config_load(&cfg, IHC_ROLE_COORDINATOR, argc, argv, NULL, NULL, err, sizeof(err));
    if (rc != IHC_OK) {
        fprintf(stderr, "ihc-coordinator: %s\n", err[0] ? err : ihc_strerror(rc));
        fprintf(stderr, "Try 'ihc-coordinator --help'.\n");
        ihc_config_fini(&cfg);
        return 2;
    }
    if (cfg.want_help) {
        ihc_config_usage(stdout, IHC_ROLE_COORDINATOR, "ihc-coordinator");
        ihc_config_fini(&cfg);
        return 0;
    }
    if (cfg.want_version) {
        printf("ihc-coordinator %s\n", IHC_VERSION);
        ihc_config_fini(&cfg);
        return 0;
    }
    if (cfg.want_print_config) {
        ihc_config_dump(stdout, &cfg, IHC_ROLE_COORDINATOR);
        ihc_config_fini(&cfg);
        return 0;
    }
    ihc_config_apply_logging(&cfg);
    if (cfg.tls_warning[0])
        ihc_log(IHC_LOG_WARN, COMPONENT, "TLS: %s", cfg.tls_warning);

    /* every thread inherits this mask; only main receives the signals, with sigwait */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    ihc_coord *c = NULL;
    ihc_http *http = NULL;
    ihc_control *ctl = NULL;
    ihc_reqchan *rq = NULL;
    ihc_tls_refusals *refusals = NULL;
    if ((rc = ihc_coord_open(&c, &cfg)) != IHC_OK) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot start: %s", ihc_strerror(rc));
        goto out;
    }
    if ((rc = ihc_control_open(&ctl, c, &cfg)) != IHC_OK) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot open the control socket url=%s: %s",
                cfg.control_url, ihc_strerror(rc));
        goto out;
    }
    if ((rc = ihc_http_open(&http, c, &cfg)) != IHC_OK) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot open the HTTP API addr=%s: %s", cfg.http_addr,
                ihc_strerror(rc));
        goto out;
    }
    if ((rc = ihc_reqchan_open(&rq, c, &cfg)) != IHC_OK) {
        ihc_log(IHC_LOG_ERROR, COMPONENT, "cannot start the request channel: %s", ihc_strerror(rc));
        goto out;
    }
    /* nng says nothing about the handshakes its TLS listeners refuse: count them */
    if (cfg.tls && (rc = ihc_tls_refusals_start(&refusals, TLS_REFUSALS_MS, COMPONENT)) != IHC_OK)
        goto out;
    char redis[1024];
    ihc_redis_url_redact(cfg.redis_url, redis, sizeof(redis));
    ihc_log(IHC_LOG_INFO, COMPONENT,
            "started version=%s pub=%s report=%s control=%s http=%s http_port=%d redis=%s "
            "global_interrupt=%s signed=%s tls=%s",
            IHC_VERSION, cfg.pub_url, cfg.report_url, cfg.control_url, cfg.http_addr,
            ihc_http_port(http), redis, cfg.global_interrupt_enabled ? "on" : "off",
            cfg.secret ? "yes" : "no",
            !cfg.tls                  ? "off"
            : ihc_tls_mutual(cfg.tls) ? "mutual"
                                      : "server");

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    ihc_log(IHC_LOG_INFO, COMPONENT, "stopping signal=%s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    status = 0;
out:
    /* answer what is in flight first, then close the doors, then flush Redis */
    ihc_coord_stop(c);
    ihc_tls_refusals_stop(refusals);
    ihc_http_close(http);
    ihc_control_close(ctl);
    ihc_reqchan_close(rq);
    ihc_coord_close(c, FLUSH_MS);
    if (status == 0)
        ihc_log(IHC_LOG_INFO, COMPONENT, "stopped");
    ihc_config_fini(&cfg);
    return status;
}
