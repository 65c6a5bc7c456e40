/* The one home of every default and shared limit: the settings table (config.c), the
 * libraries' option initialisers and the programs all take them from here, so a default can
 * never differ between --help, --print-config and what the code does. Numbers are written
 * as literals so that IHC_STR() gives the text the settings table shows. */
#ifndef IHC_DEFAULTS_H
#define IHC_DEFAULTS_H

#define IHC_STR_(x) #x
#define IHC_STR(x)  IHC_STR_(x)

/* ---- endpoints (DESIGN.md, "Names and defaults") ---- */
#define IHC_DEFAULT_PUB_URL        "tcp://127.0.0.1:7450" /* agents and `ihc watch` dial */
#define IHC_DEFAULT_REPORT_URL     "tcp://127.0.0.1:7451" /* agents dial */
#define IHC_DEFAULT_CONTROL_URL    "tcp://127.0.0.1:7452" /* libihc and the CLI dial */
#define IHC_DEFAULT_PUB_LISTEN     "tcp://0.0.0.0:7450"   /* the coordinator listens */
#define IHC_DEFAULT_REPORT_LISTEN  "tcp://0.0.0.0:7451"
#define IHC_DEFAULT_CONTROL_LISTEN "tcp://0.0.0.0:7452"
#define IHC_DEFAULT_HTTP_ADDR      "0.0.0.0:7480"
#define IHC_DEFAULT_REDIS_URL      "redis://127.0.0.1:6379/0"
#define IHC_DEFAULT_REDIS_PORT     6379
#define IHC_DEFAULT_LOCAL_URL      "unix:///tmp/ihc-agent.sock" /* the agent's local API */

/* ---- the original module's settings ---- */
#define IHC_DEFAULT_INTERRUPT_TIMEOUT_S     5.0
#define IHC_DEFAULT_SESSION_CLEANUP_DELAY_S 2.0
#define IHC_DEFAULT_MAX_ACTIVE_SESSIONS     100
#define IHC_DEFAULT_SESSION_TIMEOUT_S       300
#define IHC_DEFAULT_INTERRUPT_CHECK_S       0.1

/* ---- agent tuning ---- */
#define IHC_DEFAULT_MODULE_TIMEOUT_S     1.0
#define IHC_DEFAULT_KILL_GRACE_S         2.0
#define IHC_DEFAULT_HEARTBEAT_INTERVAL_S 1.0

/* ---- limits ---- */
/* The coordinator's HTTP API (issue: slow or idle clients must not take it down). */
#define IHC_DEFAULT_HTTP_MAX_CONNS          512
#define IHC_DEFAULT_HTTP_REQUEST_DEADLINE_S 5.0
#define IHC_DEFAULT_HTTP_MAX_STREAMS        64
/* With IHC_HTTP_MAX_CONNS_PER_IP=0 one client address may hold this fraction (1/N) of
 * IHC_HTTP_MAX_CONNS. */
#define IHC_HTTP_PER_IP_DIVISOR 8
/* The agent's local API (HTTP on a Unix socket). */
#define IHC_DEFAULT_LOCAL_MAX_CONNS          4096
#define IHC_DEFAULT_LOCAL_IDLE_TIMEOUT_S     30
#define IHC_DEFAULT_LOCAL_REQUEST_DEADLINE_S 5.0
/* Events kept for Last-Event-ID resume of GET /v1/events. */
#define IHC_DEFAULT_EVENTS_HISTORY 10000
/* The longest timeout an interrupt may ask for (ms), in every entry point; libihc's public
 * IHC_CLIENT_INTERRUPT_TIMEOUT_MAX_MS is checked against it at compile time. */
#define IHC_INTERRUPT_TIMEOUT_MAX_MS 600000

#endif
