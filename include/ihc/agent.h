/* libihc-agent: the cancel path of ihc as a C library a service embeds.
 *
 * An agent dials the coordinator (SUB on its PUB, PUSH to its PULL), keeps dialing while it
 * is away, and on every interrupt for a hardware_id it holds sessions of:
 *   1. cancels the tokens of exactly the sessions that began before the interrupt (epochs),
 *   2. runs each enabled module's interrupt methods in order under the module's timeout, on
 *      the agent's own threads, so a hanging method is reported timed_out and never holds
 *      the report back past its timeout (the promise is stated at ihc_module_def),
 *   3. runs the registered callbacks, stops the sessions' generators, cleans the sessions up
 *      (CLEANUP_ON_INTERRUPT), escalates to SIGTERM/SIGKILL for sessions with a pid
 *      (FORCE_CLEANUP),
 *   4. reports per module ok / timed_out / failed with the time taken.
 * It acts once per interrupt id, however often the broadcast is repeated, and on every
 * (re)connection it sends its full session list, learns the current epochs and cancels what
 * a missed interrupt should have cancelled.
 *
 * Thread-safety: every function may be called from any thread. Callbacks and interrupt
 * methods run on the agent's threads and must not call ihc_agent_close. */
#ifndef IHC_AGENT_H
#define IHC_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Return codes: IHC_OK (0) or one of the IHC_E* codes of err.h, installed beside this
 * header; ihc_strerror(rc) and ihc_err_name(rc) give their text and name. */
#include "ihc/err.h"
#include "ihc/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ihc_agent ihc_agent;
typedef struct ihc_token ihc_token;
typedef struct ihc_generator ihc_generator;

/* ---- options ---- */
/* Start from ihc_agent_opts_init: every value is then taken as given. */
typedef struct {
    const char *agent_id; /* NULL: "<hostname>:<pid>" */
    /* Coordinator PUB and PULL to dial. With standby coordinators: comma-separated lists of
     * the same length, one item per coordinator in the same order ("tcp://a:7450,tcp://b:7450"
     * and "tcp://a:7451,tcp://b:7451"); the agent talks to every one of them and answers each
     * interrupt to the coordinator that sent it. NULL: tcp://127.0.0.1:7450 and :7451. */
    const char *pub_url;
    const char *report_url;
    const void *secret; /* HMAC secret, NULL: unsigned messages */
    size_t secret_len;
    int max_active_sessions;       /* MAX_ACTIVE_SESSIONS (>= 1; default 100) */
    double session_timeout;        /* SESSION_TIMEOUT s (> 0; default 300) */
    double session_cleanup_delay;  /* SESSION_CLEANUP_DELAY s (should_interrupt flag; 2) */
    double heartbeat_interval;     /* s (> 0; default 1.0) */
    double default_module_timeout; /* s, for modules registered with timeout 0 (> 0; 1.0) */
    double kill_grace;             /* s between SIGTERM and SIGKILL (0: at once; 2.0) */
    bool cleanup_on_interrupt;     /* CLEANUP_ON_INTERRUPT */
    bool force_cleanup;            /* FORCE_CLEANUP */
    bool high_priority;            /* INTERRUPT_PRIORITY=high: interrupt threads first */
    const char *config_file; /* module overrides (see ihc_agent_register_module); NULL: none */
    /* TLS, for tls+tcp:// URLs (the coordinator listening with IHC_TLS_CERT). PEM files, read
     * and checked by ihc_agent_open. */
    const char *tls_ca;          /* CA that issued the coordinator's certificate: needed with a
                                    tls+tcp:// URL (the coordinator is always verified) */
    const char *tls_cert;        /* this agent's certificate, for a coordinator that requires
                                    them (mutual TLS: its IHC_TLS_CA); NULL: none */
    const char *tls_key;         /* its private key (unencrypted); with tls_cert */
    const char *tls_server_name; /* name the coordinator's certificate must carry; NULL: the
                                    host of each URL */
} ihc_agent_opts;

/* Fills o with the defaults above (all the original module's defaults: cleanup and force
 * cleanup on). */
IHC_API void ihc_agent_opts_init(ihc_agent_opts *o);

/* libihc-agent writes one log line per event (connections, sessions, interrupts handled)
 * to stderr at level info by default. This changes it for the whole process: level 0 debug,
 * 1 info, 2 warn, 3 error; json for JSON lines; interrupts for a line per interrupt
 * (LOG_INTERRUPTS); fd where lines go (2: stderr). Call before ihc_agent_open. */
IHC_API void ihc_agent_log_setup(int level, bool json, bool interrupts, int fd);

/* Opens an agent and starts dialing. Options are copied. Returns IHC_EINVAL for bad options,
 * IHC_ECONFIG for an unreadable or invalid config_file or TLS file (a tls+tcp:// URL without
 * tls_ca, a key that does not match its certificate…; the reason is logged), IHC_ETRANSPORT
 * when nng cannot create sockets. The coordinator need not be up. While a TLS connection
 * cannot be made, the agent logs why (the coordinator's certificate failed verification, with
 * its subject; the coordinator refused this agent's certificate…) and keeps dialing. Caller
 * owns *out: ihc_agent_close. */
IHC_API int ihc_agent_open(ihc_agent **out, const ihc_agent_opts *o);

/* Stops all generators (with a short deadline), sends session_end for live sessions, and
 * frees everything. Accepts NULL. */
IHC_API void ihc_agent_close(ihc_agent *a);

/* The agent's id; valid until close. */
IHC_API const char *ihc_agent_id(const ihc_agent *a);

/* True while both connections to the coordinator are up and the last hello was answered. */
IHC_API bool ihc_agent_connected(const ihc_agent *a);

/* ---- modules ---- */
/* An interrupt method: called with the hardware_id being interrupted. Returns 0 on success
 * or an ihc error code. It may block; if it outlives the module timeout it is reported
 * timed_out and its thread is abandoned until it returns. Methods run one at a time per agent
 * unless one outruns 1 ms (see the timing promise below); do not rely on the thread. */
typedef int (*ihc_method_fn)(const char *hw, void *arg);

typedef struct {
    const char *name; /* e.g. "cancel_generation" */
    ihc_method_fn fn;
} ihc_method;

typedef struct {
    const char *name;          /* e.g. "text_processing" */
    const ihc_method *methods; /* called in this order */
    size_t n_methods;
    double timeout; /* seconds for all methods together; 0: default_module_timeout */
    bool enabled;
    void *arg; /* passed to every method */
} ihc_module_def;

/* Timing promise. When an interrupt arrives, the enabled modules run in registration order on
 * the agent's receive thread itself (no thread is woken for them). A module whose methods are
 * still running 1 ms after it started has the modules after it moved to one of the agent's
 * worker threads (started ahead of need), and receiving moves to another thread, so no module
 * and no later interrupt waits behind a slow one for longer than that. Each module is given until
 * the interrupt's arrival + its timeout: a module still running then is reported timed_out (its
 * thread is left to finish on its own), one that could not start by then is reported
 * timed_out too. The report is sent as soon as every module finished or timed out: never
 * later than the largest timeout of the enabled modules after the interrupt arrived (plus
 * the time to encode it), whatever a method does.
 *
 * Registers a module (copied). The config file may override, per module name: enabled,
 * timeout and interrupt_methods (a subset/reordering of the registered method names):
 *     [text_processing]
 *     enabled = true
 *     timeout = 0.5
 *     interrupt_methods = cancel_generation, clear_buffers
 * Errors: IHC_EINVAL (bad name, no methods), IHC_EEXIST, IHC_ECONFIG (a config-file
 * override names a method the module does not have), IHC_ENOMEM. */
IHC_API int ihc_agent_register_module(ihc_agent *a, const ihc_module_def *m);

/* ---- callbacks ---- */
/* Called on the agent's thread for every interrupt that concerns this agent, after the
 * tokens were cancelled. hw is "*" for a global interrupt. */
typedef void (*ihc_interrupt_fn)(const char *hw, uint64_t interrupt_id, void *arg);
IHC_API int ihc_agent_register_callback(ihc_agent *a, ihc_interrupt_fn fn, void *arg);

/* True while an interrupt for hw (or a global one) is recent: set on every interrupt,
 * cleared after SESSION_CLEANUP_DELAY — the original module's should_interrupt(hw). */
IHC_API bool ihc_agent_should_interrupt(ihc_agent *a, const char *hw);

/* ---- sessions and their cancellation tokens ---- */
typedef void (*ihc_session_cancel_fn)(const char *session_id, void *arg);

typedef struct {
    const char *session_id; /* NULL: generated, "<hw>-<8 hex, random per agent>-<n>" */
    const char *hw;
    const char *module;              /* owning module, may be NULL */
    const char *data;                /* JSON text kept with the session, may be NULL */
    pid_t pid;                       /* >0: a process to escalate against (FORCE_CLEANUP) */
    ihc_session_cancel_fn on_cancel; /* called once when cancelled, may be NULL */
    void *arg;
} ihc_session_opts;

/* Begins a session. Returns its token in *tok (caller owns one reference:
 * ihc_token_release) and, when sid is not NULL, its id in sid (sid_len ≥ 129). Called from an
 * on_cancel callback, the coordinator hears of the session in that interrupt's report rather
 * than in a message of its own (README, "Wire protocol": report.begun).
 * Errors: IHC_EBADHW, IHC_EBADID, IHC_EEXIST (id in use), IHC_ELIMIT (MAX_ACTIVE_SESSIONS
 * reached), IHC_ENOMEM. */
IHC_API int ihc_agent_session_begin(ihc_agent *a, const ihc_session_opts *o, ihc_token **tok,
                                    char *sid, size_t sid_len);

/* Ends a session normally ("done"): its generators are expected to have finished. Returns
 * IHC_ENOENT for an unknown (or already cleaned up) session. */
IHC_API int ihc_agent_session_end(ihc_agent *a, const char *session_id);

/* Number of live sessions. */
IHC_API size_t ihc_agent_session_count(ihc_agent *a);

/* The token check on the hot path: one relaxed atomic load, no syscall, no lock. */
/* The flag is a plain int read with the compiler's atomic builtin, so that this header is
 * the same in C and C++ (C++ before C++23 has no <stdatomic.h>). */
struct ihc_token_head {
    int cancelled; /* first member of every ihc_token; written atomically only */
};
static inline bool ihc_token_cancelled(const ihc_token *t)
{
    return __atomic_load_n(&((const struct ihc_token_head *)(const void *)t)->cancelled,
                           __ATOMIC_RELAXED) != 0;
}

/* For generator loops: IHC_CHECKPOINT(tok, break); runs the statement when cancelled. Not
 * wrapped in do/while so that break, continue, return and goto act on the caller's loop. */
#define IHC_CHECKPOINT(tok, on_cancel)                                                             \
    if (__builtin_expect(ihc_token_cancelled(tok), 0)) {                                           \
        on_cancel;                                                                                 \
    } else                                                                                         \
        (void)0

/* A file descriptor that becomes readable when the token is cancelled (for poll/epoll);
 * owned by the token, made by the first call (a token nobody asks costs no descriptor), the
 * same one afterwards. -1 when none could be made (the process is out of descriptors; logged):
 * check ihc_token_cancelled instead. */
IHC_API int ihc_token_fd(const ihc_token *t);

/* Waits until cancelled (IHC_OK) or timeout_ms passes (IHC_ETIMEDOUT); -1 waits forever. */
IHC_API int ihc_token_wait(const ihc_token *t, int timeout_ms);

/* Cancels the token (also done by interrupts); idempotent. */
IHC_API void ihc_token_cancel(ihc_token *t);

/* The session id the token belongs to; valid while a reference is held. */
IHC_API const char *ihc_token_session(const ihc_token *t);

IHC_API void ihc_token_retain(ihc_token *t);
IHC_API void ihc_token_release(ihc_token *t); /* accepts NULL */

/* ---- generators: running work under a session ---- */
/* Asks the work to stop; called once, on the agent's thread, when the session is cancelled
 * (the token is already cancelled then). May be NULL when the work checks its token. */
typedef void (*ihc_generator_stop_fn)(void *arg);

/* Registers running work of session_id / module. Caller owns *g until it calls
 * ihc_generator_done (exactly once, when the work has finished). Errors: IHC_ENOENT. */
IHC_API int ihc_agent_generator_add(ihc_agent *a, const char *session_id, const char *module,
                                    ihc_generator_stop_fn stop, void *arg, ihc_generator **g);
IHC_API void ihc_generator_done(ihc_generator *g);

/* Runs fn(tok, arg) on a new thread as a generator of session_id / module; the generator is
 * done when fn returns. Errors: IHC_ENOENT, IHC_ENOMEM. */
typedef void (*ihc_work_fn)(ihc_token *tok, void *arg);
IHC_API int ihc_agent_spawn(ihc_agent *a, const char *session_id, const char *module,
                            ihc_work_fn fn, void *arg);

/* Cancels and stops the generators of one session (session_id) or of every session of hw
 * (hw), then waits until they are done or timeout_ms passes. *still_running (may be NULL)
 * receives how many did not finish. Returns IHC_OK or IHC_ETIMEDOUT. */
IHC_API int ihc_agent_generators_stop(ihc_agent *a, const char *session_id, const char *hw,
                                      int timeout_ms, size_t *still_running);

#ifdef __cplusplus
}
#endif
#endif
