/* Configuration: one declarative table of every setting (env var, flag, type, default,
 * bounds, help, roles, field) that drives defaults, parsing, validation, usage and dump. */
#include "config.h"

#include "defaults.h"
#include "err.h"
#include "log.h"
#include "redis_url.h"
#include "urllist.h"
#include "tls.h"
#include "wire.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SECRET_FILE_MAX (64 * 1024)

typedef enum {
    T_URL,         /* nng URL: tcp://, tls+tcp://, ipc://, inproc:// */
    T_LOCAL_URL,   /* unix:///PATH (ipc:///PATH taken as unix://), or "", "off", "none" */
    T_REDIS_URL,   /* redis://, unix:// or redis-sentinel:// (redis_url.h) */
    T_ADDR,        /* host:port */
    T_AGENT_ID,    /* ihc_agent_id_valid; default "<hostname>:<pid>" */
    T_HW_LIST,     /* HW[,HW...] */
    T_PATH,        /* non-empty path */
    T_HOST,        /* a host name: 1-255 characters, no spaces */
    T_BOOL,        /* true/false/1/0/yes/no/on/off */
    T_SECONDS,     /* double within [min, max] */
    T_INT,         /* int within [min, max] */
    T_ENUM,        /* one of choices; stored as its index in an int-sized field */
    T_SECRET,      /* bytes from the environment -> secret/secret_len */
    T_SECRET_FILE, /* bytes from a file -> secret/secret_len */
    T_TOKEN,       /* visible ASCII from the environment -> char * */
    T_TOKEN_FILE,  /* visible ASCII from a file -> char * */
} setting_type;

typedef struct {
    const char *env;            /* environment variable; NULL for flag-only settings */
    const char *flag;           /* long flag without "--"; NULL for environment-only settings */
    setting_type type;          /* how the value is parsed and stored */
    const char *def;            /* default as text; NULL = none */
    const char *def_coord;      /* the coordinator's default when it differs (listen addresses) */
    double min, max;            /* bounds for T_SECONDS and T_INT */
    const char *const *choices; /* NULL-terminated, for T_ENUM */
    unsigned roles;             /* ihc_role mask */
    size_t off;                 /* field in ihc_config */
    const char *help;
} setting;

#define C      IHC_ROLE_COORDINATOR
#define A      IHC_ROLE_AGENT
#define L      IHC_ROLE_CLI
#define OFF(f) offsetof(ihc_config, f)

static const char *const priority_choices[] = {"low", "normal", "high", NULL};
static const char *const format_choices[] = {"text", "json", NULL};
static const char *const level_choices[] = {"debug", "info", "warn", "error", NULL};

_Static_assert(sizeof(ihc_priority) == sizeof(int), "enum fields are stored as int");
_Static_assert(sizeof(ihc_log_format) == sizeof(int), "enum fields are stored as int");
_Static_assert(IHC_PRIORITY_HIGH == 2 && IHC_LOGFMT_JSON == 1, "choices follow the enums");

static const setting settings[] = {
    /* endpoints */
    {"IHC_PUB_URL", "pub", T_URL, IHC_DEFAULT_PUB_URL, IHC_DEFAULT_PUB_LISTEN, 0, 0, NULL,
     C | A | L, OFF(pub_url),
     "broadcast endpoint: the coordinator listens (PUB), agents and `ihc watch` dial (SUB); "
     "agents and `ihc watch` take a comma-separated list, one URL per coordinator"},
    {"IHC_REPORT_URL", "report", T_URL, IHC_DEFAULT_REPORT_URL, IHC_DEFAULT_REPORT_LISTEN, 0, 0,
     NULL, C | A, OFF(report_url),
     "report endpoint: the coordinator listens (PULL), agents dial (PUSH); agents take a "
     "comma-separated list in the order of IHC_PUB_URL's"},
    {"IHC_CONTROL_URL", "control", T_URL, IHC_DEFAULT_CONTROL_URL, IHC_DEFAULT_CONTROL_LISTEN, 0, 0,
     NULL, C | L, OFF(control_url),
     "control endpoint: the coordinator listens (REP), the CLI and libihc dial (REQ); the CLI "
     "takes a comma-separated list and asks the next when one is down or a standby"},
    {"IHC_HTTP_ADDR", "http", T_ADDR, IHC_DEFAULT_HTTP_ADDR, NULL, 0, 0, NULL, C, OFF(http_addr),
     "HTTP API listen address"},
    {"IHC_REDIS_URL", "redis", T_REDIS_URL, IHC_DEFAULT_REDIS_URL, NULL, 0, 0, NULL, C,
     OFF(redis_url),
     "Redis holding sessions, flags, epochs, the interrupt log and stats: redis://, unix:// or "
     "redis-sentinel://[PASSWORD@]HOST:PORT,HOST:PORT/MASTER/DB"},
    {"IHC_LOCAL_URL", "local", T_LOCAL_URL, IHC_DEFAULT_LOCAL_URL, NULL, 0, 0, NULL, A | L,
     OFF(local_url),
     "the agent's local API (HTTP on a Unix socket, mode 0660) for processes on this node; "
     "`ihc run` uses it; the old ipc:///PATH means unix:///PATH; off disables"},
    {"IHC_LOCAL_MAX_CONNS", "local-max-conns", T_INT, IHC_STR(IHC_DEFAULT_LOCAL_MAX_CONNS), NULL, 1,
     1000000, NULL, A, OFF(local_max_conns),
     "most connections to the local API at once (event streams included); more get 503"},
    {"IHC_LOCAL_IDLE_TIMEOUT", "local-idle-timeout", T_SECONDS,
     IHC_STR(IHC_DEFAULT_LOCAL_IDLE_TIMEOUT_S), NULL, 1, 86400, NULL, A, OFF(local_idle_timeout),
     "a local API connection idle this long is closed, unless it holds a session or streams "
     "events"},
    {"IHC_LOCAL_REQUEST_DEADLINE", "local-request-deadline", T_SECONDS,
     IHC_STR(IHC_DEFAULT_LOCAL_REQUEST_DEADLINE_S), NULL, 0.1, 600, NULL, A,
     OFF(local_request_deadline),
     "time a local API client has to send a whole request (headers and body), however it "
     "trickles it; the connection is closed past it"},
    {"IHC_AGENT_ID", "id", T_AGENT_ID, NULL, NULL, 0, 0, NULL, A, OFF(agent_id),
     "this agent's id: 1-255 printable ASCII characters without spaces"},
    {NULL, "simulate", T_HW_LIST, NULL, NULL, 0, 0, NULL, A, OFF(simulate),
     "run the built-in simulated workload: one session per listed hardware_id"},
    {"IHC_AGENT_CONFIG", "config", T_PATH, NULL, NULL, 0, 0, NULL, A, OFF(agent_config),
     "file with per-module overrides (enabled, interrupt_methods, timeout)"},
    {"IHC_STATE_DIR", "state-dir", T_PATH, NULL, NULL, 0, 0, NULL, C, OFF(state_dir),
     "directory for the coordinator's local state: the interrupt id high-water mark, so ids are "
     "never reused even when Redis lost its data"},
    /* secrets: the two sources of one secret may not both be given */
    {"IHC_SECRET", NULL, T_SECRET, NULL, NULL, 0, 0, NULL, C | A | L, OFF(secret),
     "shared secret signing every message (HMAC-SHA256); prefer IHC_SECRET_FILE"},
    {"IHC_SECRET_FILE", "secret-file", T_SECRET_FILE, NULL, NULL, 0, 0, NULL, C | A | L,
     OFF(secret), "file holding the shared secret (at most 64 KiB; one trailing newline dropped)"},
    {"IHC_HTTP_TOKEN", NULL, T_TOKEN, NULL, NULL, 0, 0, NULL, C, OFF(http_token),
     "bearer token required by the HTTP API; prefer IHC_HTTP_TOKEN_FILE"},
    {"IHC_HTTP_TOKEN_FILE", NULL, T_TOKEN_FILE, NULL, NULL, 0, 0, NULL, C, OFF(http_token),
     "file holding the HTTP bearer token (one trailing newline dropped)"},
    /* TLS: files read and checked at start-up (tls.h) */
    {"IHC_TLS_CERT", "tls-cert", T_PATH, NULL, NULL, 0, 0, NULL, C | A | L, OFF(tls_cert),
     "PEM certificate of this side: the coordinator's for its tls+tcp:// listeners and HTTPS, an "
     "agent's or client's for mutual TLS"},
    {"IHC_TLS_KEY", "tls-key", T_PATH, NULL, NULL, 0, 0, NULL, C | A | L, OFF(tls_key),
     "PEM private key of IHC_TLS_CERT (unencrypted: protect the file instead)"},
    {"IHC_TLS_CA", "tls-ca", T_PATH, NULL, NULL, 0, 0, NULL, C | A | L, OFF(tls_ca),
     "PEM CA certificates: agents and clients verify the coordinator against them (needed with "
     "tls+tcp:// URLs); on the coordinator they turn on mutual TLS (client certificates from "
     "this CA required)"},
    {"IHC_TLS_SERVER_NAME", "tls-server-name", T_HOST, NULL, NULL, 0, 0, NULL, A | L,
     OFF(tls_server_name),
     "name the coordinator's certificate must carry; default: the host of each tls+tcp:// URL"},
    /* the original module's settings */
    {"GLOBAL_INTERRUPT_ENABLED", "global-interrupt-enabled", T_BOOL, "true", NULL, 0, 0, NULL,
     C | A, OFF(global_interrupt_enabled), "allow the global interrupt (hardware_id \"*\")"},
    {"INTERRUPT_CHECK_INTERVAL", "interrupt-check-interval", T_SECONDS,
     IHC_STR(IHC_DEFAULT_INTERRUPT_CHECK_S), NULL, 0.001, 60, NULL, A,
     OFF(interrupt_check_interval),
     "agent: how often processes of local-endpoint sessions are checked for having exited"},
    {"INTERRUPT_TIMEOUT", "interrupt-timeout", T_SECONDS, IHC_STR(IHC_DEFAULT_INTERRUPT_TIMEOUT_S),
     NULL, 0.01, 3600, NULL, C | A | L, OFF(interrupt_timeout),
     "longest wait for every agent's report (the interrupt is re-sent meanwhile)"},
    {"SESSION_CLEANUP_DELAY", "session-cleanup-delay", T_SECONDS,
     IHC_STR(IHC_DEFAULT_SESSION_CLEANUP_DELAY_S), NULL, 0, 3600, NULL, C | A,
     OFF(session_cleanup_delay), "after an interrupt, when its flag is reset"},
    {"MAX_ACTIVE_SESSIONS", "max-active-sessions", T_INT, IHC_STR(IHC_DEFAULT_MAX_ACTIVE_SESSIONS),
     NULL, 1, 1000000, NULL, C | A, OFF(max_active_sessions), "active sessions allowed per agent"},
    {"SESSION_TIMEOUT", "session-timeout", T_SECONDS, IHC_STR(IHC_DEFAULT_SESSION_TIMEOUT_S), NULL,
     1, 604800, NULL, C | A, OFF(session_timeout),
     "a session not ended or renewed within this expires"},
    {"LOG_INTERRUPTS", "log-interrupts", T_BOOL, "true", NULL, 0, 0, NULL, C | A,
     OFF(log_interrupts), "log a line for every interrupt handled"},
    {"LOG_TIMING", "log-timing", T_BOOL, "true", NULL, 0, 0, NULL, C | A, OFF(log_timing),
     "add timings (time_ms=...) to log lines"},
    {"INTERRUPT_PRIORITY", "interrupt-priority", T_ENUM, "high", NULL, 0, 0, priority_choices,
     C | A, OFF(interrupt_priority), "scheduling priority of interrupt handling"},
    {"CLEANUP_ON_INTERRUPT", "cleanup-on-interrupt", T_BOOL, "true", NULL, 0, 0, NULL, A,
     OFF(cleanup_on_interrupt), "clean up interrupted sessions at once"},
    {"FORCE_CLEANUP", "force-cleanup", T_BOOL, "true", NULL, 0, 0, NULL, A, OFF(force_cleanup),
     "SIGTERM, then SIGKILL, local processes that do not stop within their module's timeout"},
    /* ihc's own tuning */
    {"IHC_MODULE_TIMEOUT", "module-timeout", T_SECONDS, IHC_STR(IHC_DEFAULT_MODULE_TIMEOUT_S), NULL,
     0.001, 3600, NULL, A, OFF(module_timeout),
     "default time a module's interrupt methods may take"},
    {"IHC_KILL_GRACE", "kill-grace", T_SECONDS, IHC_STR(IHC_DEFAULT_KILL_GRACE_S), NULL, 0, 300,
     NULL, A, OFF(kill_grace), "time between SIGTERM and SIGKILL for a process that does not stop"},
    {"IHC_HEARTBEAT_INTERVAL", "heartbeat", T_SECONDS, IHC_STR(IHC_DEFAULT_HEARTBEAT_INTERVAL_S),
     NULL, 0.05, 60, NULL, C | A, OFF(heartbeat_interval), "how often agents send heartbeats"},
    {"IHC_AGENT_TTL", "agent-ttl", T_SECONDS, "5.0", NULL, 0.1, 3600, NULL, C, OFF(agent_ttl),
     "an agent silent for this long is considered gone (must exceed the heartbeat interval)"},
    {"IHC_COORDINATOR_ID", "coordinator-id", T_AGENT_ID, NULL, NULL, 0, 0, NULL, C,
     OFF(coordinator_id),
     "this coordinator's id among those sharing one Redis (the lease holder's name): 1-255 "
     "printable ASCII characters without spaces"},
    {"IHC_LEASE_TTL", "lease-ttl", T_SECONDS, "2.0", NULL, 0.5, 60, NULL, C, OFF(lease_ttl),
     "the leader's Redis lease (ihc:leader), renewed every third of it; a standby takes over "
     "within about this long after the leader dies"},
    {"IHC_RESEND_INTERVAL", "resend-interval", T_SECONDS, "0.02", NULL, 0.001, 60, NULL, C,
     OFF(resend_interval), "first re-send of an unanswered interrupt (then backing off)"},
    {"IHC_REDIS_TIMEOUT_MS", "redis-timeout", T_INT, "500", NULL, 1, 60000, NULL, C,
     OFF(redis_timeout_ms), "timeout of one Redis command, in milliseconds"},
    {"IHC_INTERRUPT_LOG_MAX", "log-max", T_INT, "100000", NULL, 1, 100000000, NULL, C,
     OFF(interrupt_log_max), "approximate length cap of the ihc:interrupts stream"},
    {"IHC_HTTP_MAX_BODY", "http-max-body", T_INT, "65536", NULL, 256, 16777216, NULL, C,
     OFF(http_max_body), "largest HTTP request body accepted, in bytes"},
    {"IHC_HTTP_MAX_CONNS", "http-max-conns", T_INT, IHC_STR(IHC_DEFAULT_HTTP_MAX_CONNS), NULL, 1,
     65536, NULL, C, OFF(http_max_conns),
     "most simultaneous HTTP request connections (event streams are counted apart); more are "
     "refused at once"},
    {"IHC_HTTP_MAX_CONNS_PER_IP", "http-max-conns-per-ip", T_INT, "0", NULL, 0, 65536, NULL, C,
     OFF(http_max_conns_per_ip),
     "most HTTP connections one client address may hold, streams included; more are refused at "
     "once (0: IHC_HTTP_MAX_CONNS/" IHC_STR(IHC_HTTP_PER_IP_DIVISOR) ", at least 1)"},
    {"IHC_HTTP_REQUEST_DEADLINE", "http-request-deadline", T_SECONDS,
     IHC_STR(IHC_DEFAULT_HTTP_REQUEST_DEADLINE_S), NULL, 0.1, 600, NULL, C,
     OFF(http_request_deadline),
     "time a client has to send a whole HTTP request (headers and body), however it trickles "
     "it; the connection is closed past it"},
    {"IHC_HTTP_MAX_STREAMS", "http-max-streams", T_INT, IHC_STR(IHC_DEFAULT_HTTP_MAX_STREAMS), NULL,
     0, 10000, NULL, C, OFF(http_max_streams),
     "most event streams (GET /v1/events) at once, apart from IHC_HTTP_MAX_CONNS; more get 503"},
    {"IHC_EVENTS_HISTORY", "events-history", T_INT, IHC_STR(IHC_DEFAULT_EVENTS_HISTORY), NULL, 16,
     1000000, NULL, C, OFF(events_history),
     "events kept in memory for Last-Event-ID resume; a stream client further behind is "
     "dropped"},
    {"IHC_MAX_INFLIGHT", "max-inflight", T_INT, "10000", NULL, 1, 1000000, NULL, C,
     OFF(max_inflight), "most interrupts in progress at once; more are refused"},
    {"IHC_LOG_FORMAT", "log-format", T_ENUM, "text", NULL, 0, 0, format_choices, C | A | L,
     OFF(log_format), "log lines as text or JSON lines"},
    {"IHC_LOG_LEVEL", "log-level", T_ENUM, "info", NULL, 0, 0, level_choices, C | A | L,
     OFF(log_level), "lowest level logged"},
};

#define N_SETTINGS (sizeof settings / sizeof *settings)
_Static_assert(N_SETTINGS <= sizeof(((ihc_config *)0)->ihc__source), "source table too small");

enum { SRC_DEFAULT = 0, SRC_ENV, SRC_FLAG };
static const char *const source_names[] = {"default", "env", "flag"};

static bool is_secret(const setting *s)
{
    return s->type == T_SECRET || s->type == T_SECRET_FILE || s->type == T_TOKEN ||
           s->type == T_TOKEN_FILE;
}

static const char *default_for(const setting *s, unsigned role)
{
    return (role & IHC_ROLE_COORDINATOR) && s->def_coord ? s->def_coord : s->def;
}

static const char *metavar(const setting *s)
{
    switch (s->type) {
    case T_URL:
    case T_LOCAL_URL:
    case T_REDIS_URL:
        return "URL";
    case T_ADDR:
        return "HOST:PORT";
    case T_AGENT_ID:
        return "ID";
    case T_HW_LIST:
        return "HW[,HW...]";
    case T_PATH:
        return "PATH";
    case T_HOST:
        return "NAME";
    case T_BOOL:
        return "BOOL";
    case T_SECONDS:
        return "SECONDS";
    case T_INT:
        return "N";
    case T_ENUM:
        return "CHOICE";
    case T_SECRET:
    case T_TOKEN:
        return "SECRET";
    case T_SECRET_FILE:
    case T_TOKEN_FILE:
        return "FILE";
    }
    return "VALUE";
}

static void set_err(char *err, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t len, const char *fmt, ...)
{
    if (err == NULL || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/* A value as it may appear in a message: control and non-ASCII bytes as '?', cut at 64. */
static void show(char *out, size_t len, const char *v)
{
    size_t i = 0, o = 0;
    for (; v[i] != '\0' && i < 64 && o + 1 < len; i++) {
        unsigned char c = (unsigned char)v[i];
        out[o++] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    if (v[i] != '\0' && o + 4 < len) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* ---- value parsers: return true, or false with "expected ..." in why ------------------ */

static bool has_ctl_or_space(const char *v)
{
    for (; *v; v++)
        if ((unsigned char)*v <= 0x20 || (unsigned char)*v == 0x7f)
            return true;
    return false;
}

static bool port_ok(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 5 || strspn(p, "0123456789") != n)
        return false;
    return atol(p) <= 65535;
}

static bool hostport_ok(const char *v, bool allow_empty_host)
{
    const char *colon = strrchr(v, ':');
    if (colon == NULL || (!allow_empty_host && colon == v) || !port_ok(colon + 1))
        return false;
    if (v[0] == '[' && (colon == v || colon[-1] != ']'))
        return false;
    return true;
}

static bool url_ok(const char *v)
{
    static const struct {
        const char *scheme;
        bool hostport;
    } schemes[] = {{"tcp://", true}, {"tls+tcp://", true}, {"ipc://", false}, {"inproc://", false}};
    if (has_ctl_or_space(v))
        return false;
    for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++) {
        size_t n = strlen(schemes[i].scheme);
        if (strncmp(v, schemes[i].scheme, n) != 0)
            continue;
        if (v[n] == '\0')
            return false;
        return !schemes[i].hostport || hostport_ok(v + n, true);
    }
    return false;
}

/* A comma-separated list of nng URLs (one per coordinator); why names the bad item. */
static bool url_list_ok(const char *v, char *why, size_t wlen)
{
    ihc_url_list l;
    int rc = ihc_url_list_parse(&l, v, why, wlen);
    for (size_t i = 0; rc == IHC_OK && i < l.n; i++) {
        if (!url_ok(l.v[i])) {
            int k = snprintf(why, wlen, "item %zu '%.80s' of the list", i + 1, l.v[i]);
            if (k > 0 && (size_t)k < wlen)
                snprintf(why + k, wlen - (size_t)k,
                         " is not an nng URL: tcp://HOST:PORT, tls+tcp://HOST:PORT, ipc://PATH "
                         "or inproc://NAME");
            rc = IHC_EINVAL;
        }
    }
    ihc_url_list_fini(&l);
    if (rc == IHC_ENOMEM)
        snprintf(why, wlen, "out of memory");
    return rc == IHC_OK;
}

const char *ihc_config_local_path(const char *url, bool *legacy)
{
    if (!url)
        return NULL;
    bool old = strncmp(url, "ipc://", 6) == 0;
    if (!old && strncmp(url, "unix://", 7) != 0)
        return NULL;
    const char *path = url + (old ? 6 : 7);
    if (path[0] != '/' || path[1] == '\0')
        return NULL;
    if (legacy)
        *legacy = old;
    return path;
}

static bool bool_parse(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool number_parse(const char *v, double *out)
{
    if (*v == '\0' || isspace((unsigned char)*v))
        return false;
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (*end != '\0' || errno == ERANGE || !isfinite(d))
        return false;
    *out = d;
    return true;
}

static bool int_parse(const char *v, long long *out)
{
    if (*v == '\0' || isspace((unsigned char)*v))
        return false;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (*end != '\0' || errno == ERANGE)
        return false;
    *out = x;
    return true;
}

/* Reads a whole secret file (at most SECRET_FILE_MAX bytes), dropping one trailing "\n" or
 * "\r\n". The buffer is wiped on every path that does not hand it to the caller. */
static bool read_secret_file(const char *path, uint8_t **out, size_t *out_len, char *why,
                             size_t wlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, wlen, "cannot read '%s': %s", path, strerror(errno));
        return false;
    }
    uint8_t *buf = malloc(SECRET_FILE_MAX + 1);
    size_t n = 0;
    bool ok = false;
    if (buf == NULL) {
        snprintf(why, wlen, "cannot read '%s': out of memory", path);
        goto out;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, SECRET_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(why, wlen, "cannot read '%s': %s", path, strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > SECRET_FILE_MAX) {
            snprintf(why, wlen, "'%s' is larger than %d bytes", path, SECRET_FILE_MAX);
            goto out;
        }
    }
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
    }
    if (n == 0) {
        snprintf(why, wlen, "'%s' is empty: expected a non-empty secret", path);
        goto out;
    }
    *out = malloc(n + 1);
    if (*out == NULL) {
        snprintf(why, wlen, "cannot read '%s': out of memory", path);
        goto out;
    }
    memcpy(*out, buf, n);
    (*out)[n] = '\0';
    *out_len = n;
    ok = true;
out:
    if (buf != NULL) {
        explicit_bzero(buf, SECRET_FILE_MAX + 1);
        free(buf);
    }
    close(fd);
    return ok;
}

static bool token_ok(const uint8_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (t[i] <= 0x20 || t[i] >= 0x7f)
            return false;
    return n > 0;
}

static void free_secret(uint8_t **p, size_t len)
{
    if (*p != NULL) {
        explicit_bzero(*p, len);
        free(*p);
        *p = NULL;
    }
}

static void free_token(char **p)
{
    if (*p != NULL) {
        explicit_bzero(*p, strlen(*p));
        free(*p);
        *p = NULL;
    }
}

static bool set_string(char **field, const char *v, char *why, size_t wlen)
{
    char *copy = strdup(v);
    if (copy == NULL) {
        snprintf(why, wlen, "out of memory");
        return false;
    }
    free(*field);
    *field = copy;
    return true;
}

static bool default_agent_id(char **field, char *why, size_t wlen)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0 || host[0] == '\0')
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++) /* an odd hostname must not make the default invalid */
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            *p = '_';
    char id[300];
    snprintf(id, sizeof id, "%.200s:%ld", host, (long)getpid());
    return set_string(field, id, why, wlen);
}

/* Parses v for s into cfg. On failure writes into why what the setting accepts. */
static bool parse_value(const setting *s, const char *v, ihc_config *cfg, char *why, size_t wlen)
{
    char *field = (char *)cfg + s->off;
    switch (s->type) {
    case T_URL:
    case T_LOCAL_URL:
        if (s->type == T_LOCAL_URL) {
            if (!v[0] || !strcmp(v, "off") || !strcmp(v, "none"))
                return set_string((char **)field, v, why, wlen);
            const char *path = ihc_config_local_path(v, NULL);
            if (!path || has_ctl_or_space(v) || strlen(path) >= IHC_LOCAL_PATH_MAX) {
                snprintf(why, wlen,
                         "expected unix:///ABSOLUTE/PATH (at most %d bytes of path; the old "
                         "ipc:///PATH is read as unix:///PATH), or off",
                         IHC_LOCAL_PATH_MAX - 1);
                return false;
            }
            return set_string((char **)field, v, why, wlen);
        }
        if (s->type == T_URL && strchr(v, ',')) /* several coordinators: each item checked */
            return url_list_ok(v, why, wlen) && set_string((char **)field, v, why, wlen);
        if (!url_ok(v)) {
            snprintf(why, wlen,
                     "expected an nng URL: tcp://HOST:PORT, tls+tcp://HOST:PORT, ipc://PATH or "
                     "inproc://NAME (port in [0, 65535])");
            return false;
        }
        return set_string((char **)field, v, why, wlen);
    case T_REDIS_URL: {
        /* the parser of the store and the request channel, so that what passes here
         * connects there; its message says what is wrong */
        ihc_redis_url u;
        int rc = ihc_redis_url_parse(v, &u, why, wlen);
        ihc_redis_url_fini(&u);
        if (rc == IHC_ENOMEM)
            snprintf(why, wlen, "out of memory");
        if (rc != IHC_OK)
            return false;
        return set_string((char **)field, v, why, wlen);
    }
    case T_ADDR:
        if (has_ctl_or_space(v) || !hostport_ok(v, false)) {
            snprintf(why, wlen, "expected HOST:PORT with a port in [0, 65535]");
            return false;
        }
        return set_string((char **)field, v, why, wlen);
    case T_AGENT_ID:
        if (!ihc_agent_id_valid(v, strlen(v))) {
            snprintf(why, wlen, "expected 1-255 printable ASCII characters without spaces");
            return false;
        }
        return set_string((char **)field, v, why, wlen);
    case T_HW_LIST: {
        const char *p = v;
        for (;;) {
            size_t n = strcspn(p, ",");
            if (!ihc_hw_valid(p, n, false)) {
                char bad[80];
                char one[130];
                snprintf(one, sizeof one, "%.*s", (int)(n < 129 ? n : 129), p);
                show(bad, sizeof bad, one);
                snprintf(why, wlen,
                         "'%s' is not a valid hardware_id: expected HW[,HW...], each 1-128 "
                         "characters of [A-Za-z0-9._:@-]",
                         bad);
                return false;
            }
            if (p[n] == '\0')
                break;
            p += n + 1;
        }
        return set_string((char **)field, v, why, wlen);
    }
    case T_PATH:
        if (v[0] == '\0' || strlen(v) >= 4096) {
            snprintf(why, wlen, "expected a non-empty path (shorter than 4096 bytes)");
            return false;
        }
        return set_string((char **)field, v, why, wlen);
    case T_HOST:
        if (v[0] == '\0' || strlen(v) > 255 || has_ctl_or_space(v) || strchr(v, '/') != NULL) {
            snprintf(why, wlen, "expected a host name (1-255 characters, no spaces)");
            return false;
        }
        return set_string((char **)field, v, why, wlen);
    case T_BOOL:
        if (!bool_parse(v, (bool *)field)) {
            snprintf(why, wlen, "expected a boolean: true/false, yes/no, on/off or 1/0");
            return false;
        }
        return true;
    case T_SECONDS: {
        double d;
        if (!number_parse(v, &d) || d < s->min || d > s->max) {
            snprintf(why, wlen, "expected a number of seconds in [%g, %g]", s->min, s->max);
            return false;
        }
        memcpy(field, &d, sizeof d);
        return true;
    }
    case T_INT: {
        long long x;
        if (!int_parse(v, &x) || (double)x < s->min || (double)x > s->max) {
            snprintf(why, wlen, "expected an integer in [%.0f, %.0f]", s->min, s->max);
            return false;
        }
        int i = (int)x;
        memcpy(field, &i, sizeof i);
        return true;
    }
    case T_ENUM:
        for (int i = 0; s->choices[i] != NULL; i++) {
            if (strcasecmp(v, s->choices[i]) == 0) {
                memcpy(field, &i, sizeof i);
                return true;
            }
        }
        {
            size_t o = (size_t)snprintf(why, wlen, "expected one of ");
            for (int i = 0; s->choices[i] != NULL && o < wlen; i++)
                o += (size_t)snprintf(why + o, wlen - o, "%s%s", i ? "|" : "", s->choices[i]);
        }
        return false;
    case T_SECRET:
    case T_TOKEN: {
        size_t n = strlen(v);
        if (n == 0) {
            snprintf(why, wlen, "expected a non-empty secret");
            return false;
        }
        if (s->type == T_TOKEN && !token_ok((const uint8_t *)v, n)) {
            snprintf(why, wlen, "expected a token of visible ASCII characters");
            return false;
        }
        uint8_t *copy = malloc(n + 1);
        if (copy == NULL) {
            snprintf(why, wlen, "out of memory");
            return false;
        }
        memcpy(copy, v, n + 1);
        if (s->type == T_TOKEN) {
            free_token(&cfg->http_token);
            cfg->http_token = (char *)copy;
        } else {
            free_secret(&cfg->secret, cfg->secret_len);
            cfg->secret = copy;
            cfg->secret_len = n;
        }
        return true;
    }
    case T_SECRET_FILE:
    case T_TOKEN_FILE: {
        uint8_t *data = NULL;
        size_t n = 0;
        if (v[0] == '\0') {
            snprintf(why, wlen, "expected the path of a file holding the secret");
            return false;
        }
        if (!read_secret_file(v, &data, &n, why, wlen))
            return false;
        if (s->type == T_TOKEN_FILE) {
            if (!token_ok(data, n) || strlen((char *)data) != n) {
                free_secret(&data, n);
                snprintf(why, wlen, "'%s' must hold a token of visible ASCII characters", v);
                return false;
            }
            free_token(&cfg->http_token);
            cfg->http_token = (char *)data;
        } else {
            free_secret(&cfg->secret, cfg->secret_len);
            cfg->secret = data;
            cfg->secret_len = n;
        }
        return true;
    }
    }
    snprintf(why, wlen, "unsupported setting type");
    return false;
}

/* ---- load ----------------------------------------------------------------------------- */

static const setting *find_flag(const char *name, size_t n, unsigned role)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        if ((s->roles & role) && s->flag && strlen(s->flag) == n && memcmp(s->flag, name, n) == 0)
            return s;
    }
    return NULL;
}

/* How a setting is named in a message, depending on where its value came from. */
static void label(char *out, size_t len, const setting *s, int src)
{
    if (src == SRC_FLAG || s->env == NULL)
        snprintf(out, len, "--%s", s->flag);
    else
        snprintf(out, len, "%s", s->env);
}

static bool add_rest(int *rest, int *n_rest, int idx, char **argv, char *err, size_t err_len)
{
    if (rest == NULL) {
        char v[80];
        show(v, sizeof v, argv[idx]);
        set_err(err, err_len, "unexpected argument '%s'", v);
        return false;
    }
    rest[(*n_rest)++] = idx;
    return true;
}

/* Collects argv into raw/src (last occurrence wins) and the action flags into cfg. */
static int parse_args(ihc_config *cfg, unsigned role, int argc, char **argv, const char **raw,
                      unsigned char *src, int *rest, int *n_rest, char *err, size_t err_len)
{
    for (int i = 1; i < argc && argv[i] != NULL; i++) {
        const char *a = argv[i];
        char shown[80];
        if (strcmp(a, "--") == 0) {
            for (int j = i + 1; j < argc && argv[j] != NULL; j++)
                if (!add_rest(rest, n_rest, j, argv, err, err_len))
                    return IHC_ECONFIG;
            break;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (!add_rest(rest, n_rest, i, argv, err, err_len))
                return IHC_ECONFIG;
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t n = eq ? (size_t)(eq - name) : strlen(name);
        bool *action = NULL;
        if (strcmp(a, "-h") == 0 || (n == 4 && strncmp(name, "help", 4) == 0 && a[1] == '-'))
            action = &cfg->want_help;
        else if (a[1] == '-' && n == 7 && strncmp(name, "version", 7) == 0)
            action = &cfg->want_version;
        else if (a[1] == '-' && n == 12 && strncmp(name, "print-config", 12) == 0)
            action = &cfg->want_print_config;
        if (action != NULL) {
            if (eq != NULL) {
                show(shown, sizeof shown, a);
                set_err(err, err_len, "option '%.*s' takes no value", (int)(eq - a), shown);
                return IHC_ECONFIG;
            }
            *action = true;
            continue;
        }
        const setting *s = a[1] == '-' ? find_flag(name, n, role) : NULL;
        if (s == NULL) {
            char opt[80];
            snprintf(opt, sizeof opt, "%.*s", (int)(n + 2 < 70 ? n + 2 : 70), a);
            show(shown, sizeof shown, opt);
            set_err(err, err_len, "unknown option '%s'", shown);
            return IHC_ECONFIG;
        }
        const char *v;
        if (eq != NULL) {
            v = eq + 1;
        } else if (i + 1 < argc && argv[i + 1] != NULL && strncmp(argv[i + 1], "--", 2) != 0) {
            v = argv[++i];
        } else {
            set_err(err, err_len, "option '--%s' requires a value (%s)", s->flag, metavar(s));
            return IHC_ECONFIG;
        }
        raw[s - settings] = v;
        src[s - settings] = SRC_FLAG;
    }
    return IHC_OK;
}

static const setting *find_env(const char *env)
{
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (settings[i].env != NULL && strcmp(settings[i].env, env) == 0)
            return &settings[i];
    return NULL;
}

/* Lists of URLs are for dialers (agents and clients reaching several coordinators): a
 * coordinator listens on one URL each, and an agent's two lists name the same coordinators in
 * the same order (the report of an interrupt goes back to the coordinator that sent it). */
static int check_url_lists(const ihc_config *cfg, unsigned role, char *err, size_t err_len)
{
    static const struct {
        const char *env;
        size_t off;
    } eps[] = {{"IHC_PUB_URL (--pub)", OFF(pub_url)},
               {"IHC_REPORT_URL (--report)", OFF(report_url)},
               {"IHC_CONTROL_URL (--control)", OFF(control_url)}};
    if (role & IHC_ROLE_COORDINATOR) {
        for (size_t i = 0; i < sizeof eps / sizeof eps[0]; i++) {
            const char *v = *(char *const *)((const char *)cfg + eps[i].off);
            if (v && strchr(v, ',')) {
                set_err(err, err_len,
                        "%s: a coordinator listens on one URL, not a list (lists are for agents "
                        "and clients that dial several coordinators)",
                        eps[i].env);
                return IHC_ECONFIG;
            }
        }
    }
    if ((role & IHC_ROLE_AGENT) &&
        ihc_url_list_count(cfg->pub_url) != ihc_url_list_count(cfg->report_url)) {
        set_err(err, err_len,
                "IHC_PUB_URL names %zu coordinators but IHC_REPORT_URL names %zu: give one PUB "
                "and one REPORT URL per coordinator, in the same order",
                ihc_url_list_count(cfg->pub_url), ihc_url_list_count(cfg->report_url));
        return IHC_ECONFIG;
    }
    return IHC_OK;
}

/* The TLS settings against the URLs this role uses (a listener on a tls+tcp:// URL needs the
 * coordinator's certificate, a dialer the CA), then the files themselves, loaded into cfg->tls
 * once for the whole program. */
static int load_tls(ihc_config *cfg, unsigned role, const unsigned char *src, char *err,
                    size_t err_len)
{
    char names[4][64];
    static const char *const envs[4] = {"IHC_TLS_CERT", "IHC_TLS_KEY", "IHC_TLS_CA",
                                        "IHC_TLS_SERVER_NAME"};
    for (int i = 0; i < 4; i++) {
        const setting *s = find_env(envs[i]);
        label(names[i], sizeof names[i], s, src[s - settings]);
    }
    ihc_tls_names nm = {names[0], names[1], names[2], names[3]};
    ihc_tls_files f = {.cert = cfg->tls_cert,
                       .key = cfg->tls_key,
                       .ca = cfg->tls_ca,
                       .server_name =
                           (role & (IHC_ROLE_AGENT | IHC_ROLE_CLI)) ? cfg->tls_server_name : NULL};
    bool server = (role & IHC_ROLE_COORDINATOR) != 0;
    const char *lists[3] = {NULL, NULL, NULL};
    if (server || (role & IHC_ROLE_AGENT) || (role & IHC_ROLE_CLI))
        lists[0] = cfg->pub_url;
    if (server || (role & IHC_ROLE_AGENT))
        lists[1] = cfg->report_url;
    if (server || (role & IHC_ROLE_CLI))
        lists[2] = cfg->control_url;
    /* every URL of every list (agents and clients may name several coordinators) */
    ihc_url_list split[3];
    const char *urls[3 * IHC_URL_LIST_MAX];
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        if (ihc_url_list_parse(&split[i], lists[i], NULL, 0) != IHC_OK && lists[i])
            urls[n++] = lists[i];
        for (size_t j = 0; j < split[i].n; j++)
            urls[n++] = split[i].v[j];
    }
    bool ok = ihc_tls_urls_ok(&f, &nm, server, urls, n, err, err_len);
    bool any_url = false;
    for (size_t i = 0; i < n; i++)
        any_url = any_url || ihc_tls_url(urls[i]);
    for (int i = 0; i < 3; i++)
        ihc_url_list_fini(&split[i]);
    if (!ok)
        return IHC_ECONFIG;
    if (!any_url && !f.cert && !f.ca && !f.server_name)
        return IHC_OK;
    return ihc_tls_load(&cfg->tls, &f, &nm, err, err_len, cfg->tls_warning,
                        sizeof cfg->tls_warning);
}

/* The coordinator's nng listeners refuse ipc://: with nng 1.5.2 one plain connect + close on
 * an ipc listener (a health check, a port scanner, a client killed at the wrong moment) stops
 * it accepting for good (nng#1518, fixed in nng 1.6.0); tcp:// was not wedged in the same
 * test (tests/integration/test_local_api.c). */
static int coord_listen_check(const ihc_config *cfg, char *err, size_t err_len)
{
    const struct {
        const char *env;
        const char *url;
    } urls[] = {{"IHC_PUB_URL", cfg->pub_url},
                {"IHC_REPORT_URL", cfg->report_url},
                {"IHC_CONTROL_URL", cfg->control_url}};
    for (size_t i = 0; i < sizeof urls / sizeof *urls; i++) {
        if (!urls[i].url || strncmp(urls[i].url, "ipc://", 6) != 0)
            continue;
        char v[80];
        show(v, sizeof v, urls[i].url);
        set_err(err, err_len,
                "%s=%s: the coordinator does not listen on ipc://: with nng 1.5.2 a single "
                "connect + close on an ipc listener stops it accepting (nng#1518, fixed in nng "
                "1.6.0); listen on tcp://127.0.0.1:PORT (or tls+tcp://) instead",
                urls[i].env, v);
        return IHC_ECONFIG;
    }
    return IHC_OK;
}

int ihc_config_load(ihc_config *cfg, unsigned role, int argc, char **argv, int *rest, int *n_rest,
                    char *err, size_t err_len)
{
    const char *raw[N_SETTINGS];
    unsigned char src[N_SETTINGS];
    int dummy_n = 0;
    int rc;

    memset(cfg, 0, sizeof *cfg);
    if (err != NULL && err_len > 0)
        err[0] = '\0';
    if (n_rest == NULL)
        n_rest = &dummy_n;
    *n_rest = 0;

    for (size_t i = 0; i < N_SETTINGS; i++) {
        raw[i] = default_for(&settings[i], role);
        src[i] = SRC_DEFAULT;
        if ((settings[i].roles & role) && settings[i].env != NULL) {
            const char *e = getenv(settings[i].env);
            if (e != NULL) {
                raw[i] = e;
                src[i] = SRC_ENV;
            }
        }
    }
    rc = parse_args(cfg, role, argc, argv, raw, src, rest, n_rest, err, err_len);
    if (rc != IHC_OK)
        return rc;

    /* --help and --version must work even when the environment holds a bad value. */
    if (cfg->want_help || cfg->want_version) {
        for (size_t i = 0; i < N_SETTINGS; i++) {
            raw[i] = default_for(&settings[i], role);
            src[i] = SRC_DEFAULT;
        }
    }

    /* Two settings that fill the same field (a secret and its file) may not both be given. */
    for (size_t i = 0; i < N_SETTINGS; i++) {
        for (size_t j = i + 1; j < N_SETTINGS; j++) {
            if (!(settings[i].roles & role) || !(settings[j].roles & role) ||
                settings[i].off != settings[j].off || src[i] == SRC_DEFAULT ||
                src[j] == SRC_DEFAULT)
                continue;
            char li[64], lj[64];
            label(li, sizeof li, &settings[i], src[i]);
            label(lj, sizeof lj, &settings[j], src[j]);
            set_err(err, err_len, "%s and %s are both set: give the secret only one way", li, lj);
            return IHC_ECONFIG;
        }
    }

    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        char why[256];
        why[0] = '\0';
        if (!(s->roles & role))
            continue;
        cfg->ihc__source[i] = src[i];
        bool ok;
        if (raw[i] != NULL)
            ok = parse_value(s, raw[i], cfg, why, sizeof why);
        else if (s->type == T_AGENT_ID)
            ok = default_agent_id((char **)((char *)cfg + s->off), why, sizeof why);
        else
            continue;
        if (ok)
            continue;
        char lab[64];
        label(lab, sizeof lab, s, src[i]);
        if (s->type == T_SECRET || s->type == T_TOKEN) { /* never echo a secret */
            set_err(err, err_len, "%s: %s", lab, why);
        } else {
            char v[80], masked[512];
            const char *raw_v = raw[i] ? raw[i] : "";
            if (s->type == T_REDIS_URL) { /* never echo a password held in the URL */
                ihc_redis_url_redact(raw_v, masked, sizeof masked);
                raw_v = masked;
            }
            show(v, sizeof v, raw_v);
            set_err(err, err_len, "%s=%s: %s", lab, v, why);
        }
        return IHC_ECONFIG;
    }

    if ((rc = check_url_lists(cfg, role, err, err_len)) != IHC_OK)
        return rc;
    if ((rc = load_tls(cfg, role, src, err, err_len)) != IHC_OK)
        return rc;

    if ((role & IHC_ROLE_COORDINATOR) && cfg->http_max_conns_per_ip > cfg->http_max_conns) {
        set_err(err, err_len,
                "IHC_HTTP_MAX_CONNS_PER_IP=%d must not exceed IHC_HTTP_MAX_CONNS=%d (one client "
                "address could take every connection)",
                cfg->http_max_conns_per_ip, cfg->http_max_conns);
        return IHC_ECONFIG;
    }
    if ((role & IHC_ROLE_COORDINATOR) && (rc = coord_listen_check(cfg, err, err_len)) != IHC_OK)
        return rc;
    if ((role & IHC_ROLE_COORDINATOR) && cfg->agent_ttl <= cfg->heartbeat_interval) {
        set_err(err, err_len,
                "IHC_AGENT_TTL=%g must be greater than IHC_HEARTBEAT_INTERVAL=%g, or every "
                "agent would be considered gone between two heartbeats",
                cfg->agent_ttl, cfg->heartbeat_interval);
        return IHC_ECONFIG;
    }
    return IHC_OK;
}

void ihc_config_fini(ihc_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        char **field = (char **)((char *)cfg + s->off);
        switch (s->type) {
        case T_URL:
        case T_LOCAL_URL:
        case T_REDIS_URL:
        case T_ADDR:
        case T_AGENT_ID:
        case T_HW_LIST:
        case T_PATH:
        case T_HOST:
            free(*field);
            *field = NULL;
            break;
        default:
            break;
        }
    }
    free_secret(&cfg->secret, cfg->secret_len);
    cfg->secret_len = 0;
    free_token(&cfg->http_token);
    ihc_tls_free(cfg->tls);
    cfg->tls = NULL;
}

/* ---- usage and dump ------------------------------------------------------------------- */

static void print_default(FILE *out, const setting *s, unsigned role)
{
    const char *d = default_for(s, role);
    if (s->type == T_AGENT_ID && d == NULL)
        fputs("default <hostname>:<pid>", out);
    else if (d == NULL)
        fputs("default none", out);
    else
        fprintf(out, "default %s", d);
    if (s->type == T_SECONDS)
        fprintf(out, ", range [%g, %g] s", s->min, s->max);
    else if (s->type == T_INT)
        fprintf(out, ", range [%.0f, %.0f]", s->min, s->max);
    else if (s->type == T_ENUM) {
        fputs(", one of ", out);
        for (int i = 0; s->choices[i] != NULL; i++)
            fprintf(out, "%s%s", i ? "|" : "", s->choices[i]);
    } else if (s->type == T_BOOL) {
        fputs(", true|false", out);
    }
}

void ihc_config_usage(FILE *out, unsigned role, const char *prog)
{
    fprintf(out, "Usage: %s [OPTIONS]%s\n\n", prog ? prog : "ihc",
            (role & IHC_ROLE_CLI) ? " COMMAND [ARGS...]" : "");
    fputs("Options (each also set by the environment variable shown; a flag wins over the\n"
          "environment, which wins over the default; --flag VALUE or --flag=VALUE):\n"
          "  -h, --help\n        show this help and exit\n"
          "  --version\n        show the version and exit\n"
          "  --print-config\n        print the effective configuration and exit\n",
          out);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        if (!(s->roles & role))
            continue;
        if (s->flag)
            fprintf(out, "  --%s %s", s->flag, metavar(s));
        else
            fprintf(out, "  (no flag)");
        fputs("  (", out);
        if (s->env)
            fprintf(out, "env %s; ", s->env);
        print_default(out, s, role);
        fprintf(out, ")\n        %s\n", s->help);
    }
}

/* Redis URLs may carry a password (redis:// and unix:// alike): their user info is masked. */
static void print_string(FILE *out, const setting *s, const char *v)
{
    if (v == NULL) {
        fputs("(none)", out);
        return;
    }
    if (s->type == T_REDIS_URL) {
        size_t n = strlen(v) + 4; /* "***" may stand for less than it hides */
        char *masked = malloc(n);
        if (masked)
            ihc_redis_url_redact(v, masked, n);
        fputs(masked ? masked : "(not shown)", out);
        free(masked);
        return;
    }
    fputs(v, out);
}

void ihc_config_dump(FILE *out, const ihc_config *cfg, unsigned role)
{
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const setting *s = &settings[i];
        if (!(s->roles & role))
            continue;
        const char *field = (const char *)cfg + s->off;
        int src = cfg->ihc__source[i] <= SRC_FLAG ? cfg->ihc__source[i] : SRC_DEFAULT;
        if (s->env)
            fprintf(out, "%s=", s->env);
        else
            fprintf(out, "--%s=", s->flag);
        if (is_secret(s)) {
            fputs(src != SRC_DEFAULT ? "(set)" : "(none)", out);
        } else {
            switch (s->type) {
            case T_BOOL: {
                bool b;
                memcpy(&b, field, sizeof b);
                fputs(b ? "true" : "false", out);
                break;
            }
            case T_SECONDS: {
                double d;
                memcpy(&d, field, sizeof d);
                fprintf(out, "%g", d);
                break;
            }
            case T_INT: {
                int x;
                memcpy(&x, field, sizeof x);
                fprintf(out, "%d", x);
                break;
            }
            case T_ENUM: {
                int x, n = 0;
                memcpy(&x, field, sizeof x);
                while (s->choices[n] != NULL)
                    n++;
                fputs(x >= 0 && x < n ? s->choices[x] : "?", out);
                break;
            }
            default: {
                const char *str;
                memcpy(&str, field, sizeof str);
                print_string(out, s, str);
                break;
            }
            }
        }
        fprintf(out, " (%s)\n", source_names[src]);
    }
}

void ihc_config_apply_logging(const ihc_config *cfg)
{
    ihc_log_opts lo = {.level = (ihc_log_level)cfg->log_level,
                       .json = cfg->log_format == IHC_LOGFMT_JSON,
                       .interrupts = cfg->log_interrupts,
                       .timing = cfg->log_timing,
                       .fd = 2};
    ihc_log_setup(&lo);
}
