/* Cancellation tokens (private): an atomic flag checked inline by hot loops plus an eventfd
 * for blocked waits, made the first time one is asked for (most owners only check the flag:
 * a session then costs no descriptor and no syscalls), shared by the agent, the session owner
 * and its generators. */
#ifndef IHC_AGENT_TOKEN_H
#define IHC_AGENT_TOKEN_H

#include "ihc/agent.h"

#include <stdatomic.h>
#include "wire.h"

struct ihc_token {
    struct ihc_token_head head; /* must stay first: ihc_token_cancelled reads it */
    atomic_int refs;
    /* readable once cancelled; never read, so every poller wakes. -1 until asked for
     * (ihc_token_fd, ihc_token_wait); set once, atomically (__atomic builtins) */
    int efd;
    char efd_failed; /* making it failed once (logged once per token; __atomic builtins) */
    char sid[IHC_ID_MAX + 1];
};

/* Creates a token with one reference for session sid (truncated to IHC_ID_MAX). Caller owns
 * *out (ihc_token_release). Errors: IHC_ENOMEM. */
int ihc__token_new(ihc_token **out, const char *sid);

#endif
