/* libihc: request interrupts from the ihc coordinator over its control socket (nng REQ/REP,
 * MessagePack), read its sessions, agents, flags and stats, and follow finished interrupts on
 * its broadcast socket (nng SUB). Self-contained public header; link with -lihc (pkg-config
 * ihc). */
#ifndef IHC_CLIENT_H
#define IHC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ihc/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes: 0 on success, else one of these (the same values as ihc's internal error
 * table; ihc_client_strerror gives the text of any code). */
#define IHC_CLIENT_OK         0
#define IHC_CLIENT_EINVAL     1  /* bad argument, or the coordinator refused the request (4xx) */
#define IHC_CLIENT_ENOMEM     2  /* out of memory */
#define IHC_CLIENT_EPROTO     3  /* malformed answer */
#define IHC_CLIENT_ETOOBIG    4  /* request or answer too large (413) */
#define IHC_CLIENT_EBADHW     6  /* invalid hardware_id (checked before sending) */
#define IHC_CLIENT_EBADSIG    10 /* a signature was refused, either way (secret mismatch) */
#define IHC_CLIENT_ENOTCONN   14 /* coordinator unreachable: no connection within connect timeout */
#define IHC_CLIENT_ETIMEDOUT  15 /* connected, but no answer in time (watch: no result in time) */
#define IHC_CLIENT_ELIMIT     16 /* coordinator busy: too many requests in flight (429/503) */
#define IHC_CLIENT_ENOENT     17 /* unknown operation (404) */
#define IHC_CLIENT_ETRANSPORT 19 /* transport error (bad URL, socket error) */
#define IHC_CLIENT_ECLOSED    20 /* the watch was closed while the call waited */
#define IHC_CLIENT_EDISABLED  22 /* refused by the coordinator's configuration (403) */
#define IHC_CLIENT_EINTERNAL  24 /* coordinator error (5xx) */
#define IHC_CLIENT_ENOTLEADER                                                                      \
    25 /* every coordinator reached is a standby (a failover is under                              \
          way): nothing was run, the request may be sent again */

typedef struct ihc_client ihc_client;

/* Defaults of ihc_client_opts' timeouts (ms). */
#define IHC_CLIENT_DEFAULT_TIMEOUT_MS         10000
#define IHC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 1000

typedef struct ihc_client_opts {
    /* NULL: "tcp://127.0.0.1:7452". With standby coordinators, a comma-separated list: a call
     * goes to the coordinator that answered last (the leader), and to the next of the list
     * only when the request provably was not handled (no connection within
     * connect_timeout_ms, not sent, or a standby's "not the leader" answer). An interrupt
     * that may have reached a coordinator is never sent again; queries are. */
    const char *control_url;
    const void *secret; /* shared secret for message signing; NULL: unsigned */
    size_t secret_len;
    int timeout_ms;         /* wait for queries and for interrupts sent with timeout 0;
                               0: IHC_CLIENT_DEFAULT_TIMEOUT_MS */
    int connect_timeout_ms; /* how long a call waits for a connection;
                               0: IHC_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS */
    /* TLS, for a tls+tcp:// control_url (PEM files, read and checked by ihc_client_open) */
    const char *tls_ca;          /* CA that issued the coordinator's certificate: needed with a
                                    tls+tcp:// URL (the coordinator is always verified) */
    const char *tls_cert;        /* this client's certificate, for a coordinator that requires
                                    them (mutual TLS); NULL: none */
    const char *tls_key;         /* its private key (unencrypted); with tls_cert */
    const char *tls_server_name; /* name the coordinator's certificate must carry; NULL: the
                                    URL's host */
} ihc_client_opts;

/* One agent's module outcome in an interrupt. */
typedef struct ihc_module_outcome {
    const char *agent;
    const char *name;
    const char *status; /* "ok", "timed_out", "failed", "disabled" */
    double time_ms;
    const char *error; /* NULL when none */
} ihc_module_outcome;

/* A finished interrupt: the answer to ihc_client_interrupt, or one that ihc_watch_next saw
 * (the coordinator's JSON document, parsed). Every pointer is owned by the result and valid
 * until ihc_result_free. */
typedef struct ihc_result {
    int status;   /* HTTP-like status the coordinator answered (200; 200 from a watch too) */
    bool success; /* every expected agent answered and every module stopped in time */
    uint64_t interrupt_id;
    const char *hardware_id;
    uint64_t epoch;
    const char *const *interrupted_modules;
    size_t n_interrupted_modules;
    const char *const *cleaned_sessions;
    size_t n_cleaned_sessions;
    const char *const *agents_expected;
    size_t n_agents_expected;
    const char *const *agents_answered;
    size_t n_agents_answered;
    const char *const *agents_missing;
    size_t n_agents_missing;
    const ihc_module_outcome *modules;
    size_t n_modules;
    const char *reason; /* NULL when none */
    double total_time_ms;
    bool persisted;    /* written to Redis (false while Redis is down; written later) */
    const char *error; /* why success is false; NULL when none */
    int64_t sent_ms;   /* when the coordinator sent it: its wall clock, ms since the Unix
                          epoch; 0 when it did not say */
} ihc_result;

/* Creates a client (options are copied; o may be NULL). Connecting happens in the background
 * and is retried; calls wait up to connect_timeout_ms for it. Errors: IHC_CLIENT_EINVAL (also
 * a TLS file that cannot be used, or a tls+tcp:// URL without tls_ca), IHC_CLIENT_ETRANSPORT
 * (bad URL, or the socket refused an option), IHC_CLIENT_ENOMEM; ihc_client_last_error(NULL)
 * then says which. Over TLS, a call that gets no connection (IHC_CLIENT_ENOTCONN) says in
 * ihc_client_last_error why the handshake failed, when it did: the coordinator's certificate
 * failed verification (with its subject and the reason), the coordinator refused this
 * client's certificate or requires one, the coordinator does not speak TLS. Caller owns *out:
 * ihc_client_close. A client may be used from many threads at once (each call uses its own nng
 * context). */
IHC_API int ihc_client_open(ihc_client **out, const ihc_client_opts *o);

/* Closes the client; calls in progress fail. Accepts NULL. */
IHC_API void ihc_client_close(ihc_client *c);

/* The longest timeout an interrupt may ask for (ms); the coordinator refuses more (400). */
#define IHC_CLIENT_INTERRUPT_TIMEOUT_MAX_MS 600000

/* Interrupts hw ("*" = global). reason may be NULL; timeout_ms 0 = the coordinator's
 * INTERRUPT_TIMEOUT, at most IHC_CLIENT_INTERRUPT_TIMEOUT_MAX_MS. Returns 0 when the coordinator
 * ran the interrupt: *out is then the result (check (*out)->success: false when an agent was
 * missing or a module timed out); caller frees it with ihc_result_free. Otherwise *out is NULL and
 * the code says why: IHC_CLIENT_EBADHW / EINVAL (bad argument or refused: ihc_client_last_error has
 * the coordinator's text), ENOTCONN, ETIMEDOUT, ELIMIT, EDISABLED, EPROTO, EBADSIG,
 * ENOTLEADER (only standby coordinators answered). */
IHC_API int ihc_client_interrupt(ihc_client *c, const char *hw, const char *reason, int timeout_ms,
                                 ihc_result **out);

/* The coordinator's JSON document for an interrupt result (NUL-terminated). */
IHC_API const char *ihc_result_json(const ihc_result *r);

/* Frees a result; accepts NULL. */
IHC_API void ihc_result_free(ihc_result *r);

/* Runs a query: op is "sessions" (hw filters, may be NULL), "agents", "flags",
 * "flags_reset" or "stats"; hw must be NULL for ops other than sessions. On 0, *json is the
 * coordinator's JSON document (malloc'd; caller frees with free()). Errors as for
 * ihc_client_interrupt. */
IHC_API int ihc_client_query(ihc_client *c, const char *op, const char *hw, char **json);

/* Text explaining the calling thread's last failed call on c: the coordinator's error
 * message for refused requests, else a description of the failure; "" when none. With c
 * NULL: why the calling thread's last ihc_client_open or ihc_watch_open failed. Valid until
 * the thread's next call on any client or watch. */
IHC_API const char *ihc_client_last_error(const ihc_client *c);

/* The control URL (or list) the client dials (for messages). */
IHC_API const char *ihc_client_url(const ihc_client *c);

/* Text for a return code; never NULL. */
IHC_API const char *ihc_client_strerror(int rc);

/* ---- watch: finished interrupts as they happen ----------------------------------------------
 * The coordinator publishes each finished interrupt's result on its broadcast socket (topic
 * "ev:"); a watch subscribes to it. Results published while a watch is not connected are not
 * seen (publish/subscribe keeps no history), and a watch that reads too slowly loses the
 * oldest: use it to follow and display, not to account. Messages on the topic that are not a
 * valid result (garbage, another message type, unsigned or forged when a secret is set) are
 * dropped and counted (ihc_watch_dropped), never returned.
 *
 * Threads: ihc_watch_connected, ihc_watch_dropped, ihc_watch_url and ihc_watch_next may be
 * called from any thread at any time (with several threads in ihc_watch_next, each result goes
 * to one of them). ihc_watch_close may be called while other threads wait in ihc_watch_next:
 * they return IHC_CLIENT_ECLOSED, and close returns once they have; no call on the watch may
 * start after close has begun. */

typedef struct ihc_watch ihc_watch;

typedef struct ihc_watch_opts {
    const char *pub_url; /* the coordinator's broadcast socket; NULL: "tcp://127.0.0.1:7450";
                            a comma-separated list dials every coordinator of it */
    const void *secret;  /* shared secret: only results signed with it are returned;
                            NULL: signatures are not checked */
    size_t secret_len;
    /* TLS, for a tls+tcp:// pub_url: as in ihc_client_opts */
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
    const char *tls_server_name;
} ihc_watch_opts;

/* Creates a watch (options are copied; o may be NULL). Connecting happens in the background
 * and is retried for as long as the watch is open. Errors: IHC_CLIENT_EINVAL (also TLS files,
 * as for ihc_client_open),
 * IHC_CLIENT_ETRANSPORT (bad URL, or the socket refused an option), IHC_CLIENT_ENOMEM;
 * ihc_client_last_error(NULL) then says which. Caller owns *out: ihc_watch_close. */
IHC_API int ihc_watch_open(ihc_watch **out, const ihc_watch_opts *o);

/* Closes the watch; waits in ihc_watch_next return IHC_CLIENT_ECLOSED. Accepts NULL. */
IHC_API void ihc_watch_close(ihc_watch *w);

/* Waits for the next finished interrupt: timeout_ms > 0 waits that long, 0 takes only what
 * has already arrived, < 0 waits until one comes or the watch is closed. On 0, *out is the
 * result (ihc_result_json gives the coordinator's document unchanged); caller frees it with
 * ihc_result_free. Otherwise *out is NULL: IHC_CLIENT_ETIMEDOUT (none in time, connected or
 * not: see ihc_watch_connected), IHC_CLIENT_ECLOSED, IHC_CLIENT_EINVAL, IHC_CLIENT_ENOMEM,
 * IHC_CLIENT_ETRANSPORT (socket error).
 * Bad messages met while waiting are dropped, counted, and the wait goes on; the text of the
 * last one this thread dropped is ihc_watch_last_error(w). */
IHC_API int ihc_watch_next(ihc_watch *w, int timeout_ms, ihc_result **out);

/* True while the watch has a connection to the coordinator. */
IHC_API bool ihc_watch_connected(const ihc_watch *w);

/* How many messages the watch has dropped since it was opened: not decodable, not signed
 * with the secret (or replayed), not a result, or a result that is not an interrupt
 * document. A count that grows with a secret set usually means the secrets differ. */
IHC_API uint64_t ihc_watch_dropped(const ihc_watch *w);

/* About the calling thread's last ihc_watch_next on w: why it failed, or, when it dropped
 * messages and then timed out or returned a result, why the last of them was dropped; "" when
 * neither. Valid until the thread's next call on any client or watch. */
IHC_API const char *ihc_watch_last_error(const ihc_watch *w);

/* The broadcast URL the watch dials (for messages). */
IHC_API const char *ihc_watch_url(const ihc_watch *w);

#ifdef __cplusplus
}
#endif

#endif
