/* The ihc-agent local API: HTTP/1.1 + JSON on a Unix socket (libmicrohttpd), for processes on
 * the node in any language and `ihc run`. Routes, bodies and limits: README "Local API". */
#ifndef IHC_LOCAL_H
#define IHC_LOCAL_H

#include <stddef.h>

#include "ihc/agent.h"

typedef struct ihc_local ihc_local;

typedef struct {
    const char *url;    /* unix:///PATH (ipc:///PATH is taken as unix:///PATH, with a warning) */
    int max_active;     /* MAX_ACTIVE_SESSIONS, named in the 429 a refused POST gets */
    int check_ms;       /* INTERRUPT_CHECK_INTERVAL: pid sessions' processes checked this often */
    int max_conns;      /* IHC_LOCAL_MAX_CONNS: past it a 503 (then refusal at accept) */
    int idle_timeout_s; /* IHC_LOCAL_IDLE_TIMEOUT: idle connections that hold nothing close */
    /* IHC_LOCAL_REQUEST_DEADLINE, s: a request must arrive whole within it (0: default) */
    double request_deadline_s;
    int deadline_ms; /* the module timeout, sent with every stop (deadline_ms) */
} ihc_local_opts;

/* Listens on o->url and serves the local API for agent a. A stale socket file (nothing
 * listening) is removed first; if another process listens there, IHC_EEXIST with a message
 * naming the fix (--local / IHC_LOCAL_URL). The socket file gets mode 0660.
 * On error, err receives a message naming the problem. Caller owns *out: ihc_local_shutdown,
 * then (after ihc_agent_close) ihc_local_close.
 * Errors: IHC_EINVAL, IHC_EEXIST, IHC_ETRANSPORT, IHC_ENOMEM, IHC_EINTERNAL. */
int ihc_local_open(ihc_local **out, ihc_agent *a, const ihc_local_opts *o, char *err,
                   size_t err_len);

/* Stops serving: no new connections, event streams end, the API's sessions end in the agent.
 * Accepts NULL. */
void ihc_local_shutdown(ihc_local *l);

/* Frees l (after ihc_agent_close: session callbacks may refer to it until then) and removes
 * the socket file. Accepts NULL. */
void ihc_local_close(ihc_local *l);

/* Tells the processes of the API's sessions of hw ("*": all) whose token is cancelled that
 * they must stop (event: stop on their streams); idempotent. l may be NULL: IHC_OK. */
int ihc_local_notify(ihc_local *l, const char *hw);

/* Number of sessions registered through the API. */
size_t ihc_local_session_count(ihc_local *l);

#endif
