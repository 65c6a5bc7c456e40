/* Configuration: one declarative table (config.c) of every setting in DESIGN.md — env var,
 * flag, type, default, bounds, help, which programs use it — that drives parsing,
 * validation, --help and --print-config. Precedence: default < environment < flag. */
#ifndef IHC_CONFIG_H
#define IHC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Which program a setting belongs to (a setting may belong to several). */
typedef enum {
    IHC_ROLE_COORDINATOR = 1 << 0,
    IHC_ROLE_AGENT = 1 << 1,
    IHC_ROLE_CLI = 1 << 2,
} ihc_role;

typedef enum { IHC_PRIORITY_LOW = 0, IHC_PRIORITY_NORMAL, IHC_PRIORITY_HIGH } ihc_priority;
typedef enum { IHC_LOGFMT_TEXT = 0, IHC_LOGFMT_JSON } ihc_log_format;

/* Effective configuration. Strings are owned (malloc'd) and released by ihc_config_fini;
 * durations are seconds as in the original module's settings. */
typedef struct ihc_config {
    /* endpoints */
    char *pub_url;                 /* IHC_PUB_URL --pub (coordinator listens, agent dials) */
    char *report_url;              /* IHC_REPORT_URL --report */
    char *control_url;             /* IHC_CONTROL_URL --control (coordinator listens, CLI dials) */
    char *http_addr;               /* IHC_HTTP_ADDR --http, "host:port" */
    char *redis_url;               /* IHC_REDIS_URL --redis */
    char *local_url;               /* IHC_LOCAL_URL --local (agent local API) */
    int local_max_conns;           /* IHC_LOCAL_MAX_CONNS --local-max-conns */
    double local_idle_timeout;     /* IHC_LOCAL_IDLE_TIMEOUT --local-idle-timeout, s */
    double local_request_deadline; /* IHC_LOCAL_REQUEST_DEADLINE, s: a whole request */
    char *agent_id;                /* IHC_AGENT_ID --id, default "<hostname>:<pid>" */
    char *simulate;                /* --simulate HW[,HW...] (agent), NULL when off */
    char *agent_config; /* IHC_AGENT_CONFIG --config: module overrides file, NULL = none */
    char *state_dir;    /* IHC_STATE_DIR --state-dir: coordinator's local state, NULL = none */
    /* secrets: contents, not paths; NULL when unset */
    uint8_t *secret; /* IHC_SECRET, or IHC_SECRET_FILE / --secret-file */
    size_t secret_len;
    char *http_token; /* IHC_HTTP_TOKEN or IHC_HTTP_TOKEN_FILE */
    /* TLS (tls+tcp:// URLs; HTTPS for the coordinator's API): the files as given, and what they
     * hold, loaded and checked (tls.h) when any of them is set or a URL is tls+tcp:// */
    char *tls_cert;        /* IHC_TLS_CERT --tls-cert */
    char *tls_key;         /* IHC_TLS_KEY --tls-key */
    char *tls_ca;          /* IHC_TLS_CA --tls-ca */
    char *tls_server_name; /* IHC_TLS_SERVER_NAME --tls-server-name (agent, CLI) */
    struct ihc_tls *tls;   /* NULL when TLS is not configured */
    char tls_warning[512]; /* what the programs log at start-up (an expired certificate…) */
    /* the original module's settings */
    bool global_interrupt_enabled;   /* GLOBAL_INTERRUPT_ENABLED */
    double interrupt_check_interval; /* INTERRUPT_CHECK_INTERVAL, s */
    double interrupt_timeout;        /* INTERRUPT_TIMEOUT, s */
    double session_cleanup_delay;    /* SESSION_CLEANUP_DELAY, s */
    int max_active_sessions;         /* MAX_ACTIVE_SESSIONS, per agent */
    double session_timeout;          /* SESSION_TIMEOUT, s */
    bool log_interrupts;             /* LOG_INTERRUPTS */
    bool log_timing;                 /* LOG_TIMING */
    ihc_priority interrupt_priority; /* INTERRUPT_PRIORITY low|normal|high */
    bool cleanup_on_interrupt;       /* CLEANUP_ON_INTERRUPT */
    bool force_cleanup;              /* FORCE_CLEANUP */
    /* ihc's own tuning */
    double module_timeout;     /* IHC_MODULE_TIMEOUT --module-timeout, s: default per module */
    double kill_grace;         /* IHC_KILL_GRACE --kill-grace, s: SIGTERM -> SIGKILL */
    double heartbeat_interval; /* IHC_HEARTBEAT_INTERVAL --heartbeat, s */
    double agent_ttl;          /* IHC_AGENT_TTL --agent-ttl, s: agent considered gone */
    char *coordinator_id;      /* IHC_COORDINATOR_ID --coordinator-id, default "<hostname>:<pid>" */
    double lease_ttl;          /* IHC_LEASE_TTL --lease-ttl, s: the leader's Redis lease */
    double resend_interval;    /* IHC_RESEND_INTERVAL --resend-interval, s: first re-send */
    int redis_timeout_ms;      /* IHC_REDIS_TIMEOUT_MS --redis-timeout */
    int interrupt_log_max;     /* IHC_INTERRUPT_LOG_MAX --log-max: stream MAXLEN ~ */
    int http_max_body;         /* IHC_HTTP_MAX_BODY --http-max-body, bytes */
    int http_max_conns;        /* IHC_HTTP_MAX_CONNS --http-max-conns */
    int max_inflight;          /* IHC_MAX_INFLIGHT --max-inflight */
    ihc_log_format log_format; /* IHC_LOG_FORMAT --log-format text|json */
    int log_level;             /* IHC_LOG_LEVEL --log-level debug|info|warn|error */

    /* the coordinator's HTTP connections and event stream */
    int http_max_conns_per_ip;    /* IHC_HTTP_MAX_CONNS_PER_IP, 0: http_max_conns / 8 */
    double http_request_deadline; /* IHC_HTTP_REQUEST_DEADLINE, s: a whole request */
    int http_max_streams;         /* IHC_HTTP_MAX_STREAMS: GET /v1/events at once */
    int events_history;           /* IHC_EVENTS_HISTORY: events kept for resume */
    /* actions requested on the command line */
    bool want_help;         /* --help / -h */
    bool want_print_config; /* --print-config */
    bool want_version;      /* --version */
    /* where each setting's value came from (default/env/flag), for ihc_config_dump;
     * private to config.c */
    unsigned char ihc__source[64];
} ihc_config;

/* Fills cfg with defaults for role, then applies the environment, then argv[1..argc-1].
 * Arguments that are not settings of role are errors, except that positional arguments
 * (not starting with '-') and everything after "--" are left for the caller: their
 * indexes are returned through rest/n_rest (rest may be NULL when the role takes none).
 * On error returns IHC_ECONFIG and writes into err a message naming the setting and what
 * it accepts, e.g. "INTERRUPT_TIMEOUT=abc: expected a number of seconds in [0.01, 3600]".
 * cfg must be released with ihc_config_fini in every case. */
int ihc_config_load(ihc_config *cfg, unsigned role, int argc, char **argv, int *rest, int *n_rest,
                    char *err, size_t err_len);

/* Sets the process's logging from cfg: IHC_LOG_LEVEL, IHC_LOG_FORMAT, LOG_INTERRUPTS and
 * LOG_TIMING, lines to stderr. */
void ihc_config_apply_logging(const ihc_config *cfg);

/* Releases the strings and secrets held by cfg (secrets are zeroed first). */
void ihc_config_fini(ihc_config *cfg);

/* The socket path of a local API URL (IHC_LOCAL_URL): "unix:///p" and the old "ipc:///p" give
 * "/p", pointing into url; *legacy (may be NULL) says it was ipc://. NULL for anything else
 * (a relative path, another scheme, "off"). */
const char *ihc_config_local_path(const char *url, bool *legacy);
#define IHC_LOCAL_PATH_MAX 108 /* sizeof(sockaddr_un.sun_path) */

/* Prints usage for role: every setting with its flag, env var, default, bounds and help. */
void ihc_config_usage(FILE *out, unsigned role, const char *prog);

/* Prints the effective configuration, one "NAME=value (source)" line per setting; secrets
 * are shown as "(set)". */
void ihc_config_dump(FILE *out, const ihc_config *cfg, unsigned role);

#endif
