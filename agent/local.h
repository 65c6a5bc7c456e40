/* The ihc-agent local endpoint: processes on the node (any language, `ihc run`) register
 * sessions with their pid over nng REP (default ipc:///tmp/ihc-agent.sock) and wait there
 * to be told to stop. MessagePack local_request / local_response of common/wire.h. */
#ifndef IHC_LOCAL_H
#define IHC_LOCAL_H

#include <stddef.h>

#include "ihc/agent.h"

typedef struct ihc_local ihc_local;

/* Listens on url and serves begin/wait/end/ping for agent a. For ipc:// a stale socket file
 * (nothing listening) is removed first; if another process listens there, IHC_EEXIST.
 * max_active is MAX_ACTIVE_SESSIONS, named in the error a refused "begin" gets.
 * check_ms is INTERRUPT_CHECK_INTERVAL: how often the sessions' processes are checked for
 * having exited without ending their session.
 * On error, err receives a message naming the problem. Caller owns *out: ihc_local_shutdown,
 * then (after ihc_agent_close) ihc_local_close.
 * Errors: IHC_EINVAL, IHC_EEXIST, IHC_ETRANSPORT, IHC_ENOMEM, IHC_EINTERNAL. */
int ihc_local_open(ihc_local **out, ihc_agent *a, const char *url, int max_active, int check_ms,
                   char *err, size_t err_len);

/* Stops serving: closes the socket (pending waits get no answer), stops the worker and ends
 * the endpoint's sessions in the agent. Accepts NULL. */
void ihc_local_shutdown(ihc_local *l);

/* Frees l (after ihc_agent_close: session callbacks may refer to it until then) and removes
 * the socket file. Accepts NULL. */
void ihc_local_close(ihc_local *l);

/* Tells the processes of the endpoint's sessions of hw ("*": all) whose token is cancelled
 * that they must stop (answers their pending "wait"); idempotent. l may be NULL: IHC_OK. */
int ihc_local_notify(ihc_local *l, const char *hw);

/* Number of sessions registered through the endpoint. */
size_t ihc_local_session_count(ihc_local *l);

#endif
